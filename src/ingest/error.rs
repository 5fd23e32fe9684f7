//! [`EngineError`]: what the engine's operations fail with.

use std::path::PathBuf;
use std::time::Duration;

use super::json::JsonPointError;
use super::normalize::BatchError;
use crate::storage::StorageError;
use crate::stream::{LogError, Offset};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] BatchError),
    #[error(transparent)]
    InvalidJson(#[from] JsonPointError),
    #[error("write buffer full ({bytes} of {limit} bytes) for {waited:?}: flushing cannot keep up; retry later")]
    Backpressure {
        bytes: usize,
        limit: usize,
        waited: Duration,
    },
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("stream log record {offset} cannot be decoded: {why}; stop the server and run `streamdb repair --data-dir <data dir>` to set it aside (its points are lost, the rest are kept)")]
    BadRecord { offset: Offset, why: String },
    #[error("engine is shutting down")]
    ShuttingDown,
    #[error("{limit} deletes are waiting for compaction to apply them; retry after the next compaction pass (--compaction-interval), or delete with fewer, wider statements")]
    TooManyDeletes { limit: usize },
    #[error("batch of {rows} rows is larger than the limit of {limit} rows per batch (--max-batch-rows); split it")]
    BatchTooLarge { rows: usize, limit: usize },
    #[error("the batch would bring the catalog to {} series ({series} held, {new} new), over the limit of {limit} (--max-series); write to existing series, or raise --max-series", series + new)]
    TooManySeries {
        series: usize,
        new: usize,
        limit: usize,
    },
    #[error("this server already tracks {limit} idempotent producers (--max-producers): a new Producer-Id is refused until idle ones are forgotten with --retention; reuse a producer id, or raise --max-producers")]
    TooManyProducers { limit: usize },
    #[error("series {key} hashes to series id {id}, which {held} already has (a 64-bit hash collision); the batch is refused so neither series takes the other's points: rename the metric or change a tag of one of them")]
    SeriesIdCollision {
        id: crate::model::SeriesId,
        key: String,
        held: String,
    },
    #[error("data directory {} is in use by another StreamDB process; stop it or choose another --data-dir", .dir.display())]
    DataDirInUse { dir: PathBuf },
    #[error("{what} {}: {source}", .path.display())]
    DataDir {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{dir} holds acknowledged writes (stream offsets {from} to {to}) this node never flushed to the object store, and node {writer} has written to the prefix since, so they can no longer be replayed into it. Move {dir} aside to start without them (keep the copy: the points are in it), or leave this node stopped", dir = .dir.display())]
    StaleLog {
        dir: PathBuf,
        from: Offset,
        to: Offset,
        writer: String,
    },
    #[error("manifest version {version} was committed by another server ({by}): this one is fenced out of the object-store prefix and stops writing to it; stop the other server and restart this one")]
    CommittedElsewhere { version: u64, by: String },
    #[error("manifest version {damaged} ({path}) is damaged ({why}), and version {loaded}, the newest that decodes, covers the stream log only up to {covered} while the log now starts at {first}: the writes in between are only in what version {damaged} referenced. Restore {path} from a backup, or move {log} aside to start from version {loaded} without them", log = .log.display())]
    FallbackIncomplete {
        damaged: u64,
        path: String,
        why: String,
        loaded: u64,
        covered: Offset,
        first: Offset,
        log: PathBuf,
    },
    #[error("{task} task failed: {source}")]
    Task {
        task: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

impl EngineError {
    /// A failed `spawn_blocking` or spawned task.
    pub(crate) fn task(task: &'static str) -> impl Fn(tokio::task::JoinError) -> Self {
        move |source| Self::Task { task, source }
    }
}
