//! Everything that lives in object storage: chunk files, the manifest that
//! catalogues them, and the series catalog. All I/O goes through the
//! `object_store` crate ([`Store`]), local disk by default.
//!
//! # Layout
//! - `store`: the object store handle and error type.
//! - `local`: the data directory as an object store whose puts are durable.
//! - `naming`: the names of the objects a writer creates, unique to its
//!   epoch, and the commit ids manifests carry.
//! - `chunk_meta`: what every chunk carries whatever its format: metadata,
//!   path, partition and footer entries.
//! - `chunk`: the flush format (Arrow IPC), and reads of either format.
//! - `compacted`: the compacted chunk format (Parquet) and ranged reads.
//! - `cache`: the decoded-chunk cache queries read through.
//! - `manifest`: versioned manifest objects committed by conditional create.
//! - `lease`: the single-writer lease on a shared object-store prefix.
//! - `catalog`: the series catalog (id → metric and tags) and tag index.
//!
//! May depend on `model` only.

mod cache;
mod catalog;
mod chunk;
mod chunk_meta;
#[cfg(test)]
pub(crate) use chunk_meta::test_points;
mod compacted;
#[cfg(test)]
pub(crate) mod faults;
mod lease;
mod local;
mod manifest;
mod naming;
mod store;

pub use cache::{CacheStats, ChunkReader};
pub use catalog::{SeriesCatalog, TagPredicate};
pub use chunk::{decode_chunk, encode_chunk, read_footer_series};
pub use chunk_meta::{ChunkMeta, PARTITION_MICROS};
pub use compacted::encode as encode_compacted;
pub use lease::{
    local_epoch, node_id, Lease, HEARTBEAT as LEASE_HEARTBEAT, TIMEOUT as LEASE_TIMEOUT,
};
pub use manifest::{
    DamagedVersion, Garbage, Loaded, LoggedDelete, Manifest, ManifestStore, SourceCheckpoint,
};
pub use naming::{catalog_path, catalog_version_of_path, chunk_path, CommitId, WriterEpoch};
pub use store::{StorageError, Store};
