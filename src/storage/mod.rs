//! Everything that lives in object storage: chunk files, the manifest that
//! catalogues them, and the series catalog. All I/O goes through the
//! `object_store` crate ([`Store`]), local disk by default.
//!
//! # Layout
//! - `store`: the object store handle and error type.
//! - `chunk`: Arrow IPC chunk files with footer metadata.
//! - `manifest`: versioned manifest objects committed by conditional create.
//! - `catalog`: the series catalog (id → metric and tags) and tag index.
//!
//! May depend on `model` only.

mod catalog;
mod chunk;
#[cfg(test)]
pub(crate) mod faults;
mod manifest;
mod store;

pub use catalog::{SeriesCatalog, TagPredicate};
pub use chunk::{
    chunk_path, decode_chunk, encode_chunk, read_footer_series, ChunkMeta, PARTITION_MICROS,
};
pub use manifest::{Manifest, ManifestStore, SourceCheckpoint};
pub use store::{StorageError, Store};
