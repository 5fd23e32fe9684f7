//! [`Engine`]: the write path end to end, and the state readers snapshot.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use parking_lot::RwLock;
use serde::Serialize;
use tokio::sync::{broadcast, watch, Notify};
use tokio::time::Instant;

use super::buffer::{BufferedBatch, Snapshot, State};
use super::flusher;
use super::normalize::{normalize, BatchError, PointBatch};
use super::record;
use crate::model::format_micros;
use crate::storage::{ChunkMeta, ManifestStore, SeriesCatalog, StorageError, Store};
use crate::stream::{DurableSink, Log, LogConfig, LogError, Offset};

/// Batches a continuous query may fall behind ingest before it is dropped.
const FANOUT_BATCHES: usize = 1024;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    /// Flush once the oldest buffered batch is this old.
    pub flush_interval: Duration,
    /// Flush once the buffer holds this many bytes.
    pub flush_bytes: usize,
    /// Writes wait (then fail) while the buffer holds this many bytes.
    pub max_buffer_bytes: usize,
    /// How long a write waits for buffer space before RESOURCE_EXHAUSTED.
    pub write_timeout: Duration,
    pub segment_bytes: u64,
    pub fsync: bool,
    /// Largest batch one write may carry, in rows.
    pub max_batch_rows: usize,
    /// Where chunks, manifests and catalogs live; local `data_dir` if `None`.
    pub store: Option<Store>,
}

impl EngineConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            flush_interval: Duration::from_secs(10),
            flush_bytes: 128 << 20,
            max_buffer_bytes: 1 << 30,
            write_timeout: Duration::from_secs(10),
            segment_bytes: 64 << 20,
            fsync: true,
            max_batch_rows: 4 << 20,
            store: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] BatchError),
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
    #[error("stream log record {offset} cannot be decoded: {why}")]
    BadRecord { offset: Offset, why: String },
    #[error("engine is shutting down")]
    ShuttingDown,
    #[error("batch of {rows} rows is larger than the limit of {limit} rows per batch (--max-batch-rows); split it")]
    BatchTooLarge { rows: usize, limit: usize },
}

/// What a durable write returns.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WriteReceipt {
    pub rows: usize,
    pub offset: Offset,
}

/// The part of the engine the log's writer thread calls into.
pub(crate) struct Shared {
    pub state: RwLock<State>,
    pub catalog: Arc<SeriesCatalog>,
    /// Bytes of writes admitted but not yet in the buffer.
    pub reserved: AtomicUsize,
    /// Every applied batch, for continuous queries. A broadcast never
    /// blocks the log's writer: a receiver that falls behind by more than
    /// its capacity is told it lagged.
    pub fanout: broadcast::Sender<Arc<BufferedBatch>>,
}

impl DurableSink<PointBatch> for Shared {
    fn on_durable(&self, offset: Offset, batch: PointBatch) {
        self.apply(offset, batch);
    }
}

impl Shared {
    fn apply(&self, offset: Offset, batch: PointBatch) {
        for (id, key) in batch.new_series {
            self.catalog.insert(id, key);
        }
        let batch = Arc::new(BufferedBatch::new(offset, batch.points, batch.checkpoint));
        self.state.write().push(batch.clone());
        // No receivers is the normal case; nothing to do then.
        let _ = self.fanout.send(batch);
    }
}

pub struct Engine {
    pub(crate) config: EngineConfig,
    pub(crate) store: Store,
    pub(crate) manifests: ManifestStore,
    pub(crate) shared: Arc<Shared>,
    pub(crate) log: Log<PointBatch>,
    /// Signalled whenever a flush frees buffer space.
    pub(crate) space: Notify,
    pub(crate) flush_lock: tokio::sync::Mutex<()>,
    pub(crate) shutdown: watch::Sender<bool>,
    flusher: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Engine({})", self.config.data_dir.display())
    }
}

impl Engine {
    /// Opens the data directory: loads the manifest and catalog, recovers the
    /// stream log, replays what the manifest does not cover, and starts the
    /// background flusher.
    pub async fn open(config: EngineConfig) -> Result<Arc<Self>, EngineError> {
        let store = match &config.store {
            Some(s) => s.clone(),
            None => Store::local(&config.data_dir)?,
        };
        let manifests = ManifestStore::new(store.clone());
        let mut manifest = manifests.load_latest().await?;
        let catalog = match &manifest.catalog {
            Some(path) => {
                let bytes = store.get(&path.as_str().into()).await?;
                SeriesCatalog::decode_snapshot(path, &bytes)?
            }
            None => SeriesCatalog::default(),
        };
        load_chunk_series(&store, &mut manifest.chunks).await?;
        let manifest = Arc::new(manifest);

        let shared = Arc::new(Shared {
            state: RwLock::new(State::new(manifest.clone())),
            catalog: Arc::new(catalog),
            reserved: AtomicUsize::new(0),
            fanout: broadcast::channel(FANOUT_BATCHES).0,
        });
        let mut log_config = LogConfig::new(config.data_dir.join("stream").join("metrics"));
        log_config.segment_bytes = config.segment_bytes;
        log_config.fsync = config.fsync;
        log_config.initial_offset = Offset(manifest.stream_offset);
        let log = Log::open(log_config, shared.clone())?;
        replay(&log, &shared, Offset(manifest.stream_offset))?;

        let (shutdown, _) = watch::channel(false);
        let engine = Arc::new(Self {
            config,
            store,
            manifests,
            shared,
            log,
            space: Notify::new(),
            flush_lock: tokio::sync::Mutex::new(()),
            shutdown,
            flusher: parking_lot::Mutex::new(None),
        });
        *engine.flusher.lock() = Some(tokio::spawn(flusher::run(
            Arc::downgrade(&engine),
            engine.shutdown.subscribe(),
        )));
        Ok(engine)
    }

    /// Where a `--source` consumer of `source` left off: the newest
    /// checkpoint logged (still buffered) or flushed (in the manifest).
    pub fn source_checkpoint(&self, source: &str) -> Option<String> {
        let st = self.shared.state.read();
        st.batches
            .iter()
            .rev()
            .find_map(|b| b.checkpoint.as_ref())
            .or(st.manifest.source_checkpoint.as_ref())
            .filter(|c| c.source == source)
            .map(|c| c.offset.clone())
    }

    pub fn catalog(&self) -> &Arc<SeriesCatalog> {
        &self.shared.catalog
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn log(&self) -> &Log<PointBatch> {
        &self.log
    }

    /// Batches applied from now on, in offset order (continuous queries).
    /// Subscribe before taking the [`Snapshot`] the results start from.
    pub fn subscribe_batches(&self) -> broadcast::Receiver<Arc<BufferedBatch>> {
        self.shared.fanout.subscribe()
    }

    /// Everything a query should see: committed chunks plus the buffer.
    pub fn snapshot(&self) -> Snapshot {
        self.shared.state.read().snapshot()
    }

    /// Validates, logs durably and buffers one Arrow batch.
    pub async fn write(&self, batch: &RecordBatch) -> Result<WriteReceipt, EngineError> {
        // Checked before normalising: an oversized batch costs nothing more.
        self.check_rows(batch.num_rows())?;
        let points = normalize(batch, &self.shared.catalog)?;
        self.write_points(points).await
    }

    /// Logs durably and buffers an already normalised batch. Returns once
    /// the batch is on disk and visible to queries.
    pub async fn write_points(&self, points: PointBatch) -> Result<WriteReceipt, EngineError> {
        if *self.shutdown.borrow() {
            return Err(EngineError::ShuttingDown);
        }
        let rows = points.rows();
        self.check_rows(rows)?;
        if rows == 0 {
            return Ok(WriteReceipt {
                rows,
                offset: self.log.next_offset(),
            });
        }
        let bytes = points.points.get_array_memory_size();
        self.reserve(bytes).await?;
        let payload = record::encode(&points);
        let result = self.log.append(payload, points).await;
        self.shared.reserved.fetch_sub(bytes, Ordering::AcqRel);
        let offset = result?;
        let m = crate::telemetry::metrics();
        m.ingest_rows.inc_by(rows as u64);
        m.ingest_batches.inc();
        Ok(WriteReceipt { rows, offset })
    }

    fn check_rows(&self, rows: usize) -> Result<(), EngineError> {
        let limit = self.config.max_batch_rows;
        if rows > limit {
            crate::telemetry::metrics().limited("batch_rows");
            return Err(EngineError::BatchTooLarge { rows, limit });
        }
        Ok(())
    }

    /// Waits until the buffer has room for `bytes`, then reserves it.
    async fn reserve(&self, bytes: usize) -> Result<(), EngineError> {
        let limit = self.config.max_buffer_bytes;
        let start = Instant::now();
        let deadline = start + self.config.write_timeout;
        loop {
            let space = self.space.notified();
            let used =
                self.shared.state.read().bytes + self.shared.reserved.load(Ordering::Acquire);
            // A batch larger than the whole limit is still admitted into an
            // empty buffer, or it could never be written.
            if used + bytes <= limit || used == 0 {
                self.shared.reserved.fetch_add(bytes, Ordering::AcqRel);
                return Ok(());
            }
            // The flusher (which polls every few ms) frees space.
            if tokio::time::timeout_at(deadline, space).await.is_err() {
                crate::telemetry::metrics().limited("write_buffer");
                return Err(EngineError::Backpressure {
                    bytes: used,
                    limit,
                    waited: start.elapsed(),
                });
            }
        }
    }

    /// Flushes everything buffered now (tests, shutdown). Returns rows flushed.
    pub async fn flush(&self) -> Result<u64, EngineError> {
        flusher::flush_once(self).await
    }

    /// Stops the flusher, flushes the buffer and refuses further writes.
    pub async fn shutdown(&self) -> Result<(), EngineError> {
        self.shutdown.send_replace(true);
        let handle = self.flusher.lock().take();
        if let Some(h) = handle {
            let _ = h.await;
        }
        self.flush().await.map(|_| ())
    }

    pub fn status(&self) -> Status {
        let st = self.shared.state.read();
        let log = self.log.stats();
        let m = &st.manifest;
        let mut min = m.chunks.iter().map(|c| c.min_time).min();
        let mut max = m.chunks.iter().map(|c| c.max_time).max();
        for b in &st.batches {
            min = Some(min.map_or(b.min_time, |m| m.min(b.min_time)));
            max = Some(max.map_or(b.max_time, |m| m.max(b.max_time)));
        }
        Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            data_dir: self.config.data_dir.display().to_string(),
            stream: StreamStatus {
                first_offset: log.first_offset.to_string(),
                next_offset: log.next_offset.to_string(),
                segments: log.segments,
                bytes: log.bytes,
            },
            buffer: BufferStatus {
                rows: st.rows as u64,
                bytes: st.bytes as u64,
            },
            storage: StorageStatus {
                manifest_version: m.version,
                covered_offset: Offset(m.stream_offset).to_string(),
                chunks: m.chunks.len(),
                compaction_backlog: m.compaction_backlog(),
                rows: m.rows(),
                bytes: m.bytes(),
            },
            series: self.shared.catalog.len(),
            rows: m.rows() + st.rows as u64,
            time_range: TimeRange {
                min: min.map(format_micros),
                max: max.map(format_micros),
            },
        }
    }
}

/// Re-applies log records the manifest does not cover.
fn replay(log: &Log<PointBatch>, shared: &Shared, from: Offset) -> Result<(), EngineError> {
    // Records below `from` are in chunks; the log must still hold the rest.
    if from < log.first_offset() {
        return Err(EngineError::Log(LogError::Truncated {
            requested: from,
            first: log.first_offset(),
        }));
    }
    if from > log.next_offset() {
        return Err(EngineError::Log(LogError::BeyondEnd {
            requested: from,
            next: log.next_offset(),
        }));
    }
    let mut next = from;
    let mut records = 0usize;
    loop {
        let batch = log.read(next, 64 << 20)?;
        let Some((last, _)) = batch.last() else { break };
        next = last.next();
        for (offset, payload) in batch {
            let points = record::decode(&payload).map_err(|e| EngineError::BadRecord {
                offset,
                why: e.to_string(),
            })?;
            shared.apply(offset, points);
            records += 1;
        }
    }
    if records > 0 {
        tracing::info!(records, from = %from, "replayed stream log");
    }
    Ok(())
}

/// Reads each chunk's series list from its footer (a ranged read of the tail).
async fn load_chunk_series(store: &Store, chunks: &mut [ChunkMeta]) -> Result<(), StorageError> {
    use futures::StreamExt;
    let loaded: Vec<Result<Vec<u64>, StorageError>> = futures::stream::iter(chunks.iter())
        .map(|c| async move { crate::storage::read_footer_series(store, c).await })
        .buffered(16)
        .collect()
        .await;
    for (c, series) in chunks.iter_mut().zip(loaded) {
        c.series = Arc::new(series?);
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub version: String,
    pub data_dir: String,
    pub stream: StreamStatus,
    pub buffer: BufferStatus,
    pub storage: StorageStatus,
    pub series: usize,
    pub rows: u64,
    pub time_range: TimeRange,
}

#[derive(Debug, Clone, Serialize)]
pub struct StreamStatus {
    pub first_offset: String,
    pub next_offset: String,
    pub segments: usize,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BufferStatus {
    pub rows: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StorageStatus {
    pub manifest_version: u64,
    pub covered_offset: String,
    pub chunks: usize,
    /// Chunks that share an hour partition with another chunk: what a
    /// compaction pass would merge.
    pub compaction_backlog: usize,
    pub rows: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimeRange {
    pub min: Option<String>,
    pub max: Option<String>,
}

#[cfg(test)]
mod tests;
