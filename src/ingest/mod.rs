//! The write path above the log: validation, the log record format, the
//! in-memory write buffer, the flusher that turns the buffer into chunk
//! files committed to the manifest, and storage maintenance.
//!
//! # Data flow
//! `Engine::write` normalises a batch ([`normalize`]) and hands it to
//! admission (`admission`), which reserves buffer space, appends it to the
//! durable stream and waits for the fsync. The log's writer thread hands
//! every durable record to the write buffer (`buffer`, the log's
//! `DurableSink`), which adds new series to the catalog and the points to
//! the buffer before the writer is answered, so an acknowledged write is
//! visible to the next query. The flusher (`flusher`) writes the buffer out
//! as chunks and commits a manifest that covers the stream up to the
//! flushed offset through the commit path (`commit`, the only way the
//! manifest changes), and only then lets the log delete the segments below
//! it. Maintenance (`compactor`) merges an hour's chunks into one Parquet
//! chunk, drops expired chunks and deletes files no manifest references
//! any more, through the same commit path. Readers see the engine through
//! [`ReadView`] (`read`).
//!
//! The `metrics` stream's HTTP side also lives here because it reads and
//! writes through the engine: `json` (point messages), `view` (the log
//! read back as pages of messages), `exactly_once` (idempotent producers
//! and `Stream-Seq`) and `consumer` (`--source`).
//!
//! May depend on `model`, `stream`, `storage` and `runtime`.

mod admission;
mod buffer;
mod commit;
pub mod compactor;
mod config;
pub mod consumer;
mod deletes;
mod engine;
mod error;
mod error_kind;
mod exactly_once;
#[cfg(test)]
mod fault_harness;
mod flusher;
pub mod json;
mod last_values;
mod memory;
mod new_series;
mod normalize;
mod read;
pub(crate) mod record;
mod sort;
#[cfg(test)]
mod testing;
mod view;

pub use admission::WriteReceipt;
pub use buffer::{BufferedBatch, Logged, Snapshot};
pub use config::{BufferSection, CacheSection, EngineConfig, LogSection, MaintenanceSection};
pub use deletes::{remove_deleted, Deletes, Tombstone};
pub use engine::{
    lock_data_dir, BufferStatus, Engine, SourceStatus, Status, StorageStatus, StreamStatus,
    TimeRange, WriterStatus,
};
pub use error::EngineError;
pub use exactly_once::Once;
pub use last_values::{
    BuildTicket, CacheState, LastPoint, LastValueStatus, LastValues, DEFAULT_LAST_VALUE_SERIES,
};
pub use memory::MemoryView;
pub use normalize::{normalize, BatchError, Origin, PointBatch};
pub use read::ReadView;
pub use sort::{newest_per_key, without_keys_sorted};
pub use view::{JsonPage, ViewError};
