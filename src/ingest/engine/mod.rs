//! [`Engine`]: the storage engine as parts, each with one job, wired
//! together here and nothing more.
//!
//! - [`WriteBuffer`] (`buffer`): the buffer over its manifest, the series
//!   catalog, the feed of applied batches; the log's durable sink.
//! - [`Admission`] (`admission`): batch size, memory reservation, the
//!   series gate, the durable append.
//! - [`ExactlyOnce`] (`exactly_once`): idempotent producers and
//!   `Stream-Seq` over admission.
//! - [`CommitPath`] (`commit`): the only way the manifest changes.
//! - [`Flusher`] and [`Maintenance`] (`flusher`, `compactor`): background
//!   parts that hold the commit path, the store and the chunk reader.
//! - [`LogView`] (`view`): the log read back as JSON pages.
//!
//! Opening and recovery are in `open`, the status report in `status`.
//! Background loops run under the engine's node of the shutdown tree.

mod open;
mod status;

use std::sync::Arc;

use arrow::array::RecordBatch;
use bytes::Bytes;
use tokio::sync::broadcast;

pub use open::lock_data_dir;
pub use status::{
    BufferStatus, SourceStatus, Status, StorageStatus, StreamStatus, TimeRange, WriterStatus,
};

use super::admission::{Admission, WriteReceipt};
use super::buffer::{BufferedBatch, Logged, Snapshot, WriteBuffer};
use super::commit::{CommitArgs, CommitPath};
use super::compactor::{Maintenance, MaintenanceArgs};
use super::config::EngineConfig;
use super::error::EngineError;
use super::exactly_once::{ExactlyOnce, Once};
use super::flusher::{Flusher, FlusherArgs};
use super::json;
use super::last_values::LastValues;
use super::normalize::PointBatch;
use super::read::ReadView;
use super::view::{JsonPage, LogView, ViewError};
use crate::model::ProducerTuple;
use crate::runtime::{Clock, Tasks};
use crate::storage::{ChunkReader, Lease, SeriesCatalog, Store};
use crate::stream::{Log, Offset, Position};

pub struct Engine {
    config: EngineConfig,
    store: Store,
    buffer: Arc<WriteBuffer>,
    log: Arc<Log<Logged>>,
    admission: Arc<Admission>,
    exactly_once: Arc<ExactlyOnce>,
    commit: Arc<CommitPath>,
    flusher: Arc<Flusher>,
    maintenance: Arc<Maintenance>,
    view: LogView,
    reader: Arc<ChunkReader>,
    /// The `--source` consumer's state, if one runs.
    source: parking_lot::Mutex<Option<SourceStatus>>,
    /// The engine's node of the shutdown tree: its background loops.
    tasks: Tasks,
    /// Held for the engine's life: one process per data directory (its
    /// stream log and buffer are this process's alone). The OS releases it
    /// when the process dies, kill -9 included.
    _dir_lock: std::fs::File,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Engine({})", self.config.data_dir.display())
    }
}

impl Drop for Engine {
    /// An engine dropped without [`Engine::shutdown`] (a crash in tests)
    /// still stops its loops.
    fn drop(&mut self) {
        self.tasks.token().cancel();
    }
}

impl Engine {
    /// Opens the data directory: loads the manifest and catalog, recovers the
    /// stream log, replays what the manifest does not cover, and starts the
    /// background flusher and maintenance.
    pub async fn open(config: EngineConfig) -> Result<Arc<Self>, EngineError> {
        Self::open_under(config, &Tasks::new()).await
    }

    /// [`Engine::open`], with the engine's loops a child of `parent` in the
    /// shutdown tree.
    pub async fn open_under(
        config: EngineConfig,
        parent: &Tasks,
    ) -> Result<Arc<Self>, EngineError> {
        let opened = open::open(&config).await?;
        let clock = config.clock.clone();
        let tasks = parent.child();
        let reader = Arc::new(ChunkReader::new(
            opened.store.clone(),
            config.cache.chunk_cache_bytes,
        ));
        let commit = Arc::new(CommitPath::new(CommitArgs {
            store: opened.store.clone(),
            lease: opened.lease.clone(),
            epoch: opened.epoch,
            buffer: opened.buffer.clone(),
            catalog_persisted: opened.catalog_persisted,
            skipped: opened.skipped,
            data_dir: config.data_dir.clone(),
            clock: clock.clone(),
            crash: config.crash.clone(),
        }));
        let admission = Arc::new(Admission::new(
            opened.buffer.clone(),
            opened.log.clone(),
            config.buffer.clone(),
            clock.clone(),
            tasks.token().clone(),
        ));
        let flusher = Arc::new(Flusher::new(FlusherArgs {
            buffer: opened.buffer.clone(),
            commit: commit.clone(),
            store: opened.store.clone(),
            reader: reader.clone(),
            log: opened.log.clone(),
            limits: config.buffer.clone(),
            stream_retention: config.log.stream_retention,
            retention: config.maintenance.retention,
            clock: clock.clone(),
        }));
        let maintenance = Arc::new(Maintenance::new(MaintenanceArgs {
            buffer: opened.buffer.clone(),
            commit: commit.clone(),
            store: opened.store.clone(),
            reader: reader.clone(),
            log: opened.log.clone(),
            config: config.maintenance.clone(),
            stream_retention: config.log.stream_retention,
            clock: clock.clone(),
        }));
        let engine = Arc::new(Self {
            exactly_once: Arc::new(ExactlyOnce::new(
                admission.clone(),
                opened.buffer.clone(),
                config.buffer.max_producers,
            )),
            view: LogView::new(opened.log.clone(), opened.buffer.catalog().clone()),
            store: opened.store,
            buffer: opened.buffer,
            log: opened.log,
            admission,
            commit,
            flusher,
            maintenance,
            reader,
            source: Default::default(),
            tasks,
            _dir_lock: opened.dir_lock,
            config,
        });
        engine.start_loops(opened.lease);
        Ok(engine)
    }

    fn start_loops(&self, lease: Option<Arc<Lease>>) {
        let t = &self.tasks;
        t.spawn("flusher", self.flusher.clone().run(t.clone()));
        if !self.config.maintenance.compaction_interval.is_zero() {
            t.spawn("maintenance", self.maintenance.clone().run(t.clone()));
        }
        if let Some(lease) = lease {
            t.spawn("lease heartbeat", heartbeat(lease, t.clone()));
        }
    }

    /// Validates, logs durably and buffers one Arrow batch.
    pub async fn write(&self, batch: &RecordBatch) -> Result<WriteReceipt, EngineError> {
        self.admission.write(batch).await
    }

    /// Logs a delete durably and applies it (see `Admission::delete`):
    /// its offset and the snapshot it deleted from.
    pub async fn delete(
        &self,
        predicate: crate::model::DeletePredicate,
    ) -> Result<(Offset, Snapshot), EngineError> {
        self.admission.delete(predicate).await
    }

    /// Normalises with `make` against the catalog and writes the result,
    /// holding the series gate from one to the other.
    pub async fn write_with<F>(&self, make: F) -> Result<WriteReceipt, EngineError>
    where
        F: FnOnce(&SeriesCatalog) -> Result<PointBatch, EngineError>,
    {
        self.admission.write_with(make).await
    }

    /// Writes JSON (or NDJSON) point messages: exactly once when a producer
    /// tuple or `Stream-Seq` comes with them.
    pub async fn write_json(
        &self,
        body: Bytes,
        ndjson: bool,
        producer: Option<ProducerTuple>,
        stream_seq: Option<String>,
    ) -> Result<Once, EngineError> {
        let make = move |catalog: &SeriesCatalog| Ok(json::parse(&body, ndjson, catalog)?);
        if producer.is_none() && stream_seq.is_none() {
            return self.write_with(make).await.map(Once::Written);
        }
        self.write_once(make, producer, stream_seq).await
    }

    /// Writes what `make` normalises unless the producer tuple or
    /// `Stream-Seq` says it must not be (see `exactly_once`).
    pub async fn write_once<F>(
        &self,
        make: F,
        producer: Option<ProducerTuple>,
        stream_seq: Option<String>,
    ) -> Result<Once, EngineError>
    where
        F: FnOnce(&SeriesCatalog) -> Result<PointBatch, EngineError> + Send + 'static,
    {
        self.exactly_once
            .write_once(make, producer, stream_seq)
            .await
    }

    /// Reads the `metrics` stream from `from` as point messages, about
    /// `max_bytes` of them (at least one, if any is left).
    pub fn read_json(&self, from: Position, max_bytes: usize) -> Result<JsonPage, ViewError> {
        self.view.read_json(from, max_bytes)
    }

    /// Flushes everything buffered now (tests, shutdown). Returns rows flushed.
    pub async fn flush(&self) -> Result<u64, EngineError> {
        self.flusher.flush_once().await
    }

    /// Runs one compaction, retention and garbage-collection pass now
    /// (tests; the background loop does this every interval).
    pub async fn maintain(&self) -> Result<(), EngineError> {
        self.maintenance.pass(true, &self.tasks).await
    }

    /// Stops the background loops, refuses further writes, flushes the
    /// buffer and gives up the writer lease.
    pub async fn shutdown(&self) -> Result<(), EngineError> {
        self.tasks.shutdown().await;
        self.flush().await?;
        if let Some(lease) = self.commit.lease() {
            lease.release().await?;
        }
        Ok(())
    }

    /// Where a `--source` consumer of `source` left off: the newest
    /// checkpoint logged (still buffered) or flushed (in the manifest).
    pub fn source_checkpoint(&self, source: &str) -> Option<String> {
        self.buffer.with_state(|st| {
            st.batches
                .iter()
                .rev()
                .find_map(|b| b.origin.source.as_ref())
                .or(st.manifest.source_checkpoint.as_ref())
                .filter(|c| c.source == source)
                .map(|c| c.offset.clone())
        })
    }

    /// Records what the `--source` consumer is doing, for `status`.
    pub fn set_source_status(&self, status: SourceStatus) {
        *self.source.lock() = Some(status);
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn log(&self) -> &Log<Logged> {
        &self.log
    }

    /// The engine's node of the shutdown tree (children end with it).
    pub fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    pub fn status(&self) -> Status {
        status::read(status::Parts {
            config: &self.config,
            store: &self.store,
            buffer: &self.buffer,
            commit: &self.commit,
            maintenance: &self.maintenance,
            reader: &self.reader,
            log: &self.log,
            source: self.source.lock().clone(),
        })
    }

    #[cfg(test)]
    pub(crate) fn log_view(&self) -> &LogView {
        &self.view
    }

    #[cfg(test)]
    pub(crate) fn buffer(&self) -> &Arc<WriteBuffer> {
        &self.buffer
    }
}

impl ReadView for Engine {
    fn snapshot(&self) -> Snapshot {
        self.buffer.snapshot()
    }

    fn catalog(&self) -> &Arc<SeriesCatalog> {
        self.buffer.catalog()
    }

    fn chunk_reader(&self) -> &Arc<ChunkReader> {
        &self.reader
    }

    fn subscribe_batches(&self) -> broadcast::Receiver<Arc<BufferedBatch>> {
        self.buffer.subscribe()
    }

    fn last_values(&self) -> Option<&Arc<LastValues>> {
        Some(self.buffer.last_values())
    }

    fn clock(&self) -> &Clock {
        &self.config.clock
    }
}

/// Renews the writer lease until shutdown, or until it is lost.
async fn heartbeat(lease: Arc<Lease>, tasks: Tasks) {
    loop {
        tokio::select! {
            _ = tasks.cancelled() => return,
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

#[cfg(test)]
mod durability_tests;
#[cfg(test)]
mod limit_tests;
#[cfg(test)]
mod tests;
