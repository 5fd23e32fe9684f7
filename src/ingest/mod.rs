//! The write path above the log: validation, the log record format, the
//! in-memory write buffer, the flusher that turns the buffer into chunk
//! files committed to the manifest, and storage maintenance.
//!
//! # Data flow
//! `Engine::write` normalises a batch ([`normalize`]), appends it to the
//! durable stream and waits for the fsync. The log's writer thread hands
//! every durable record to the engine (it is the log's `DurableSink`), which
//! adds new series to the catalog and the points to the buffer before the
//! writer is answered, so an acknowledged write is visible to the next query.
//! The flusher writes the buffer out as chunks, commits a manifest that
//! covers the stream up to the flushed offset, and only then lets the log
//! delete the segments below it. The compactor (`compactor`) then merges
//! an hour's chunks into one Parquet chunk, drops expired chunks and
//! deletes files no manifest references any more.
//!
//! The `metrics` stream's HTTP side also lives here because it reads and
//! writes through the engine: `json` (point messages), `view` (the log
//! read back as pages of messages), `exactly_once` (idempotent producers
//! and `Stream-Seq`) and `consumer` (`--source`).
//!
//! May depend on `model`, `stream` and `storage`.

mod buffer;
pub mod compactor;
pub mod consumer;
mod engine;
mod error_kind;
mod exactly_once;
mod flusher;
pub mod json;
mod normalize;
pub(crate) mod record;
mod view;

pub use buffer::{BufferedBatch, Snapshot};
pub use engine::{
    BufferStatus, Engine, EngineConfig, EngineError, SourceStatus, Status, StorageStatus,
    StreamStatus, TimeRange, WriteReceipt, WriterStatus,
};
pub use exactly_once::Once;
pub use normalize::{normalize, BatchError, Origin, PointBatch};
pub use view::{JsonPage, ViewError};
