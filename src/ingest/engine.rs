//! [`Engine`]: the write path end to end, and the state readers snapshot.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use parking_lot::RwLock;
use serde::Serialize;
use tokio::sync::{broadcast, watch, Notify};
use tokio::time::Instant;

use super::buffer::{BufferedBatch, Snapshot, State};
use super::compactor::{self, MaintenanceStatus};
use super::flusher;
use super::normalize::{normalize, BatchError, PointBatch};
use super::record;
use crate::model::format_micros;
use crate::storage::{
    CacheStats, ChunkMeta, ChunkReader, Lease, Manifest, ManifestStore, SeriesCatalog,
    StorageError, Store,
};
use crate::stream::{DurableSink, Log, LogConfig, LogError, Offset, Retention};

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
    /// How long the metrics stream stays readable from older offsets after
    /// its records are flushed (the log is trimmed past this).
    pub stream_retention: Retention,
    pub fsync: bool,
    /// Largest batch one write may carry, in rows.
    pub max_batch_rows: usize,
    /// Where chunks, manifests and catalogs live; local `data_dir` if `None`.
    pub store: Option<Store>,
    /// Drop chunks whose newest point is older than this.
    pub retention: Option<Duration>,
    /// How often compaction, retention and garbage collection run (zero:
    /// never).
    pub compaction_interval: Duration,
    /// A partition is merged whole once its hour ended this long ago.
    pub compaction_cold_after: Duration,
    /// How long files dropped from the manifest are kept for queries that
    /// started before, and how old an unreferenced file must be to count
    /// as an orphan.
    pub gc_grace: Duration,
    /// Bytes of decoded chunks kept for queries.
    pub chunk_cache_bytes: usize,
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
            stream_retention: Retention::NONE,
            fsync: true,
            max_batch_rows: 4 << 20,
            store: None,
            retention: None,
            compaction_interval: Duration::from_secs(30),
            compaction_cold_after: Duration::from_secs(600),
            gc_grace: Duration::from_secs(600),
            chunk_cache_bytes: 1 << 30,
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

/// Bytes of a write admitted to the buffer but not yet applied; given back
/// when dropped.
struct Reserved<'a>(&'a AtomicUsize, usize);

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::AcqRel);
    }
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
        let batch = Arc::new(BufferedBatch::new(offset, batch.points, batch.origin));
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
    /// Held by whoever commits a manifest version (flusher, compactor,
    /// retention), so commits never race.
    pub(crate) flush_lock: tokio::sync::Mutex<()>,
    /// Writers hold it shared from normalising a batch until it is applied;
    /// retention takes it to remove series (see `compactor`).
    pub(crate) series_gate: tokio::sync::RwLock<()>,
    /// Held by exactly-once writes from their check to their durable
    /// append (see `exactly_once`).
    pub(crate) writer_locks: super::exactly_once::WriterLocks,
    /// Large records recently decoded for the JSON view of the log.
    pub(crate) decoded: super::view::DecodedRecords,
    /// The next chunk id to hand out; never reused, even for chunks whose
    /// commit failed.
    next_chunk_id: AtomicU64,
    /// The catalog generation the newest committed snapshot holds.
    catalog_persisted: AtomicU64,
    pub(crate) reader: Arc<ChunkReader>,
    pub(crate) maintenance: parking_lot::Mutex<MaintenanceStatus>,
    /// The `--source` consumer's state, if one runs.
    pub(crate) source: parking_lot::Mutex<Option<SourceStatus>>,
    /// Held for the engine's life: one process per data directory (its
    /// stream log and buffer are this process's alone). The OS releases it
    /// when the process dies, kill -9 included.
    _dir_lock: std::fs::File,
    /// The writer lease, on a store other servers can reach.
    lease: Option<Arc<Lease>>,
    pub(crate) shutdown: watch::Sender<bool>,
    tasks: parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>,
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
        let dir_lock = lock_data_dir(&config.data_dir)?;
        let store = match &config.store {
            Some(s) => s.clone(),
            None => Store::local(&config.data_dir)?,
        };
        // Before reading anything: the lease decides whether we may write.
        let lease = if store.is_shared() {
            let node = crate::storage::node_id(&config.data_dir)?;
            let lease = Lease::acquire(&store, &node).await?;
            tracing::info!(
                store = store.location(),
                node,
                epoch = lease.epoch(),
                "holding the writer lease"
            );
            Some(lease)
        } else {
            None
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
        let catalog_persisted = AtomicU64::new(catalog.generation());

        let shared = Arc::new(Shared {
            state: RwLock::new(State::new(manifest.clone())),
            catalog: Arc::new(catalog),
            reserved: AtomicUsize::new(0),
            fanout: broadcast::channel(FANOUT_BATCHES).0,
        });
        let log_dir = config.data_dir.join("stream").join("metrics");
        if let (Some(lease), Some(writer)) = (&lease, &manifest.writer) {
            if *writer != lease.node() {
                retire_stale_log(&log_dir, &manifest, writer)?;
            }
        }
        let mut log_config = LogConfig::new(&log_dir);
        log_config.segment_bytes = config.segment_bytes;
        log_config.fsync = config.fsync;
        log_config.initial_offset = Offset(manifest.stream_offset);
        let log = Log::open(log_config, shared.clone())?;
        replay(&log, &shared, Offset(manifest.stream_offset))?;

        let (shutdown, _) = watch::channel(false);
        let engine = Arc::new(Self {
            reader: Arc::new(ChunkReader::new(store.clone(), config.chunk_cache_bytes)),
            next_chunk_id: AtomicU64::new(manifest.next_chunk_id.max(1)),
            config,
            store,
            manifests,
            shared,
            log,
            space: Notify::new(),
            flush_lock: tokio::sync::Mutex::new(()),
            series_gate: tokio::sync::RwLock::new(()),
            writer_locks: Default::default(),
            decoded: Default::default(),
            catalog_persisted,
            maintenance: Default::default(),
            source: Default::default(),
            _dir_lock: dir_lock,
            lease,
            shutdown,
            tasks: Default::default(),
        });
        let weak = Arc::downgrade(&engine);
        let mut tasks = vec![tokio::spawn(flusher::run(
            weak.clone(),
            engine.shutdown.subscribe(),
        ))];
        if !engine.config.compaction_interval.is_zero() {
            tasks.push(tokio::spawn(compactor::run(
                weak,
                engine.shutdown.subscribe(),
            )));
        }
        if let Some(lease) = &engine.lease {
            tasks.push(tokio::spawn(heartbeat(
                lease.clone(),
                engine.shutdown.subscribe(),
            )));
        }
        *engine.tasks.lock() = tasks;
        Ok(engine)
    }

    /// Hands out `n` consecutive chunk ids and returns the first.
    pub(crate) fn allocate_chunk_ids(&self, n: u64) -> u64 {
        self.next_chunk_id.fetch_add(n, Ordering::AcqRel)
    }

    /// Commits `next` on top of `current` (the manifest in effect; the
    /// caller holds `flush_lock`), with a new catalog snapshot if the
    /// catalog changed, and installs it for readers.
    pub(crate) async fn commit_manifest(
        &self,
        current: &Manifest,
        mut next: Manifest,
    ) -> Result<Arc<Manifest>, EngineError> {
        if let Some(lease) = self.lease.as_ref().filter(|l| l.is_lost()) {
            return Err(lease.lost_error().into());
        }
        let generation = self.catalog().generation();
        let old_catalog = next.catalog.clone();
        if generation != self.catalog_persisted.load(Ordering::Acquire) {
            let path = object_store::path::Path::from(format!(
                "catalog/series_{:020}.bin",
                current.version + 1
            ));
            next.catalog_series = self.catalog().len() as u64;
            self.store
                .put(&path, self.catalog().encode_snapshot())
                .await?;
            self.store.sync(std::slice::from_ref(&path))?;
            next.catalog = Some(path.to_string());
        }
        next.next_chunk_id = next
            .next_chunk_id
            .max(self.next_chunk_id.load(Ordering::Acquire));
        next.writer = self.lease.as_ref().map(|l| l.node());
        let committed = match self.manifests.commit(current, next).await {
            Ok(m) => m,
            Err(StorageError::AlreadyExists { path }) => {
                return Err(StorageError::Fenced(format!(
                    "manifest {path} was committed by another server: this one is fenced out of the object-store prefix and stops writing to it; stop the other server and restart this one"
                ))
                .into())
            }
            Err(e) => return Err(e.into()),
        };
        self.store
            .sync(&[ManifestStore::path_of(committed.version)])?;
        self.shared.state.write().commit(committed.clone());
        self.catalog_persisted.store(generation, Ordering::Release);
        if self.lease.is_some() && committed.stream_offset != current.stream_offset {
            let marker = committed_marker(&self.config.data_dir);
            if let Err(e) = std::fs::write(&marker, committed.stream_offset.to_string()) {
                tracing::warn!(error = %e, path = %marker.display(), "recording the committed offset failed");
            }
        }
        if let Some(old) = old_catalog.filter(|o| committed.catalog.as_ref() != Some(o)) {
            // Best effort: a leftover is swept as an orphan later.
            let _ = self.store.delete(&old.as_str().into()).await;
        }
        Ok(committed)
    }

    /// Held from normalising a batch against the catalog until the batch is
    /// written, by every write path that normalises outside
    /// [`Engine::write`] (JSON); see `compactor` for why.
    pub async fn series_guard(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.series_gate.read().await
    }

    /// Reads chunks for queries, through the decoded-chunk cache.
    pub fn chunk_reader(&self) -> &Arc<ChunkReader> {
        &self.reader
    }

    /// Runs one compaction, retention and garbage-collection pass now
    /// (tests; the background loop does this every interval).
    pub async fn maintain(&self) -> Result<(), EngineError> {
        let result = compactor::pass(self, true).await;
        self.maintenance.lock().compacting = None;
        result
    }

    /// Where a `--source` consumer of `source` left off: the newest
    /// checkpoint logged (still buffered) or flushed (in the manifest).
    pub fn source_checkpoint(&self, source: &str) -> Option<String> {
        let st = self.shared.state.read();
        st.batches
            .iter()
            .rev()
            .find_map(|b| b.origin.source.as_ref())
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
        let _gate = self.series_guard().await;
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
        // Released however this ends, a client that went away mid-write
        // included (the record is still written and applied).
        let _reserved = Reserved(&self.shared.reserved, bytes);
        let payload = record::encode(&points);
        let offset = self.log.append(payload, points).await?;
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

    /// Stops the background tasks, flushes the buffer, refuses further
    /// writes and gives up the writer lease.
    pub async fn shutdown(&self) -> Result<(), EngineError> {
        self.shutdown.send_replace(true);
        let tasks = std::mem::take(&mut *self.tasks.lock());
        for t in tasks {
            let _ = t.await;
        }
        self.flush().await?;
        if let Some(lease) = &self.lease {
            lease.release().await?;
        }
        Ok(())
    }

    pub fn status(&self) -> Status {
        let mut maintenance = self.maintenance.lock().clone();
        let st = self.shared.state.read();
        let backlog = compactor::plan(
            &st.manifest,
            chrono::Utc::now().timestamp_micros(),
            self.config.compaction_cold_after,
        );
        maintenance.backlog_partitions = backlog.len();
        maintenance.backlog_chunks = backlog.iter().map(|j| j.inputs.len()).sum();
        maintenance.garbage_pending = st.manifest.garbage.len();
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
                producers: st.writers.producers.len(),
            },
            buffer: BufferStatus {
                rows: st.rows as u64,
                bytes: st.bytes as u64,
            },
            storage: StorageStatus {
                location: self.store.location().to_string(),
                manifest_version: m.version,
                covered_offset: Offset(m.stream_offset).to_string(),
                chunks: m.chunks.len(),
                compacted_chunks: m.chunks.iter().filter(|c| c.is_compacted()).count(),
                compaction_backlog: maintenance.backlog_chunks,
                rows: m.rows(),
                bytes: m.bytes(),
                retention_seconds: self.config.retention.map(|r| r.as_secs()),
                maintenance,
                cache: self.reader.stats(),
                writer: self.lease.as_ref().map(|l| WriterStatus {
                    node: l.node(),
                    epoch: l.epoch(),
                    lease_held: !l.is_lost(),
                }),
            },
            series: self.shared.catalog.len(),
            rows: m.rows() + st.rows as u64,
            time_range: TimeRange {
                min: min.map(format_micros),
                max: max.map(format_micros),
            },
            source: self.source.lock().clone(),
        }
    }
}

/// Where a node on a shared store records the stream offset its last
/// manifest commit covered: how it tells, after another node wrote the
/// manifest, whether its own log holds writes never flushed.
fn committed_marker(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("stream").join("metrics.committed")
}

/// Discards what the manifest says nothing about.
struct Discard;

impl DurableSink<PointBatch> for Discard {
    fn on_durable(&self, _: Offset, _: PointBatch) {}
}

/// Takes the data directory's lock file, so a second server started on the
/// same directory refuses instead of interleaving writes to one log.
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, EngineError> {
    let fail = |why: String| EngineError::from(StorageError::Other(why));
    std::fs::create_dir_all(dir).map_err(|e| fail(format!("creating {}: {e}", dir.display())))?;
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| fail(format!("opening {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(fail(format!(
            "data directory {} is in use by another StreamDB process; stop it or choose another --data-dir",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(fail(format!("locking {}: {e}", path.display())))
        }
    }
}

/// Another node (`writer`) committed the manifest last, so its
/// `stream_offset` counts that node's log, not ours. Our log may go if
/// every record in it was flushed by us before we let go of the prefix
/// (a clean stop, or a failover after one); if it holds writes we never
/// flushed, starting would lose or misnumber them, so refuse with what to
/// do.
fn retire_stale_log(
    dir: &std::path::Path,
    manifest: &Manifest,
    writer: &str,
) -> Result<(), EngineError> {
    if !dir.exists() {
        return Ok(());
    }
    let (first, next) = {
        let mut cfg = LogConfig::new(dir);
        cfg.initial_offset = Offset(manifest.stream_offset);
        let log: Log<PointBatch> = Log::open(cfg, Arc::new(Discard))?;
        (log.first_offset(), log.next_offset())
    };
    let data_dir = dir.parent().and_then(|p| p.parent()).unwrap_or(dir);
    let committed = std::fs::read_to_string(committed_marker(data_dir))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let flushed = first == next || committed.is_some_and(|c| next.0 <= c);
    if !flushed {
        return Err(StorageError::Other(format!(
            "{} holds acknowledged writes (stream offsets {} to {}) this node never flushed to the object store, and node {writer} has written to the prefix since, so they can no longer be replayed into it. Move {} aside to start without them (keep the copy: the points are in it), or leave this node stopped",
            dir.display(),
            Offset(committed.unwrap_or(first.0).max(first.0)),
            next,
            dir.display()
        ))
        .into());
    }
    if first != next || next.0 != manifest.stream_offset {
        tracing::info!(dir = %dir.display(), writer, "another node wrote the object store since this node's last flush; starting a fresh stream log at its offset");
        std::fs::remove_dir_all(dir)
            .map_err(|e| StorageError::Other(format!("removing {}: {e}", dir.display())))?;
    }
    Ok(())
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
    /// The `--source` consumer, when the server follows a remote stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceStatus>,
}

/// What a `--source` consumer is doing.
#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    pub url: String,
    /// `following`, `retrying` (the source is unreachable or missing; it
    /// keeps trying), `finished` (the source stream was closed and fully
    /// read) or `stopped` (it cannot continue without an operator: `error`
    /// says why).
    pub state: &'static str,
    /// The next remote offset to read.
    pub offset: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StreamStatus {
    pub first_offset: String,
    pub next_offset: String,
    pub segments: usize,
    pub bytes: u64,
    /// Idempotent producers whose state is kept (see `exactly_once`).
    pub producers: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct BufferStatus {
    pub rows: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StorageStatus {
    /// The data directory, or `s3://bucket/prefix`.
    pub location: String,
    pub manifest_version: u64,
    pub covered_offset: String,
    pub chunks: usize,
    /// Chunks in the compacted (Parquet) format.
    pub compacted_chunks: usize,
    /// Chunks the compactor would merge now.
    pub compaction_backlog: usize,
    pub rows: u64,
    pub bytes: u64,
    /// `--retention`, if set.
    pub retention_seconds: Option<u64>,
    pub maintenance: MaintenanceStatus,
    pub cache: CacheStats,
    /// This server's writer lease on a shared object store.
    pub writer: Option<WriterStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WriterStatus {
    pub node: String,
    pub epoch: u64,
    pub lease_held: bool,
}

/// Renews the writer lease until shutdown, or until it is lost.
async fn heartbeat(lease: Arc<Lease>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(crate::storage::LEASE_HEARTBEAT) => {}
        }
        match lease.renew().await {
            Ok(()) => {}
            Err(e) if lease.is_lost() => {
                tracing::error!(error = %e, "lost the writer lease: no more flushes or compactions; writes stay in the local stream log");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "renewing the writer lease failed; retrying"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TimeRange {
    pub min: Option<String>,
    pub max: Option<String>,
}

#[cfg(test)]
mod tests;
