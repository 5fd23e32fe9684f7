//! The in-memory write buffer ([`WriteBuffer`]): every durable batch not yet
//! in a chunk, in offset order, together with the manifest it sits on top
//! of, the series catalog, and the feed of applied batches.
//!
//! The buffer and the manifest are swapped under one lock, so a reader's
//! [`Snapshot`] sees every row exactly once: either still buffered or
//! already in a committed chunk, never both or neither. Deletes not yet
//! applied physically travel with it ([`Deletes`]).

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{TimestampMicrosecondType, UInt64Type};
use parking_lot::RwLock;
use tokio::sync::{broadcast, Notify};
use tokio::time::Instant;

use super::deletes::{Deletes, Tombstone};
use super::last_values::{LastValues, DEFAULT_LAST_VALUE_SERIES};
use super::normalize::{Origin, PointBatch};
use super::record::Record;
use crate::model::{DeletePredicate, Writers};
use crate::runtime::Clock;
use crate::storage::{Manifest, SeriesCatalog};
use crate::stream::{DurableSink, Offset};

/// One durable batch of points (`point_schema`) and its log offset.
#[derive(Debug)]
pub struct BufferedBatch {
    pub offset: Offset,
    pub points: RecordBatch,
    pub min_time: i64,
    pub max_time: i64,
    pub bytes: usize,
    pub origin: Origin,
}

impl BufferedBatch {
    /// A batch that holds one (series, time) twice keeps only its later
    /// row, so no unit a reader sees holds two values for one key.
    pub fn new(offset: Offset, points: RecordBatch, origin: Origin) -> Self {
        let points = keep_last_per_key(points);
        let times = points.column(1).as_primitive::<TimestampMicrosecondType>();
        let min_time = arrow::compute::min(times).unwrap_or(i64::MAX);
        let max_time = arrow::compute::max(times).unwrap_or(i64::MIN);
        let bytes = points.get_array_memory_size();
        Self {
            offset,
            points,
            min_time,
            max_time,
            bytes,
            origin,
        }
    }
}

/// `points` without the rows a later row of the same (series, time)
/// overwrites; the batch itself when there are none (the usual case).
fn keep_last_per_key(points: RecordBatch) -> RecordBatch {
    if points.num_rows() < 2 {
        return points;
    }
    let ids = points.column(0).as_primitive::<UInt64Type>().values();
    let times = points
        .column(1)
        .as_primitive::<TimestampMicrosecondType>()
        .values();
    let mut seen: HashSet<(u64, i64)> = HashSet::with_capacity(ids.len());
    // Walking from the end, the first sighting of a key is its last row.
    let mut keep = vec![false; ids.len()];
    for i in (0..ids.len()).rev() {
        keep[i] = seen.insert((ids[i], times[i]));
    }
    if keep.iter().all(|k| *k) {
        return points;
    }
    filter_record_batch(&points, &BooleanArray::from(keep)).expect("same length as the batch")
}

/// A consistent view for readers: committed chunks plus buffered batches,
/// and the deletes they are read with.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub manifest: Arc<Manifest>,
    pub buffered: Vec<Arc<BufferedBatch>>,
    /// Every record before this offset is in the snapshot, none after.
    pub applied: Offset,
    /// The manifest's deletes and those logged since, oldest first.
    pub deletes: Deletes,
    /// The offset of the newest delete ever applied since start (it stays
    /// when compaction retires the delete): what continuous queries
    /// compare to tell a delete happened.
    pub last_delete: Option<u64>,
}

/// What the log hands the buffer once a record is durable.
pub enum Logged {
    Points(PointBatch),
    /// A delete, and where its writer wants the snapshot taken just
    /// before it applied (what it deleted from); `None` in replay.
    Delete(
        DeletePredicate,
        Option<tokio::sync::oneshot::Sender<Snapshot>>,
    ),
}

impl From<Record> for Logged {
    fn from(r: Record) -> Self {
        match r {
            Record::Points(p) => Logged::Points(p),
            Record::Delete(p) => Logged::Delete(p, None),
        }
    }
}

pub(crate) struct State {
    pub manifest: Arc<Manifest>,
    pub batches: Vec<Arc<BufferedBatch>>,
    pub rows: usize,
    pub bytes: usize,
    /// When the oldest buffered batch arrived (drives the age threshold).
    pub oldest: Option<Instant>,
    /// The offset after the last applied record.
    pub applied: Offset,
    /// Exactly-once writer state of the `metrics` stream: the manifest's
    /// plus every applied batch's.
    pub writers: Writers,
    /// The manifest's deletes, then those applied since, oldest first.
    pub deletes: Deletes,
    /// See [`Snapshot::last_delete`].
    pub last_delete: Option<u64>,
}

impl State {
    pub fn new(manifest: Arc<Manifest>) -> Self {
        let applied = Offset(manifest.stream_offset);
        let writers = manifest.writers.clone();
        let deletes: Vec<Arc<Tombstone>> = manifest
            .deletes
            .iter()
            .map(|d| Arc::new(Tombstone::new(d.offset, d.predicate.clone())))
            .collect();
        Self {
            writers,
            manifest,
            batches: Vec::new(),
            rows: 0,
            bytes: 0,
            oldest: None,
            applied,
            last_delete: deletes.last().map(|d| d.offset()),
            deletes: Deletes(Arc::new(deletes)),
        }
    }

    /// Deletes applied and not yet in the manifest.
    pub fn pending_deletes(&self) -> usize {
        let covered = self.manifest.stream_offset;
        self.deletes
            .iter()
            .filter(|d| d.offset() >= covered)
            .count()
    }

    /// Applies the delete logged at `offset`; returns the snapshot just
    /// before it.
    fn delete(&mut self, offset: Offset, tombstone: Arc<Tombstone>) -> Snapshot {
        debug_assert!(
            offset >= self.applied,
            "records must arrive in offset order"
        );
        let before = self.snapshot();
        self.applied = offset.next();
        let mut deletes = self.deletes.0.as_ref().clone();
        deletes.push(tombstone);
        self.deletes = Deletes(Arc::new(deletes));
        self.last_delete = Some(offset.0);
        before
    }

    pub fn push(&mut self, batch: Arc<BufferedBatch>, now: Instant, now_secs: i64) {
        debug_assert!(
            batch.offset >= self.applied,
            "records must arrive in offset order"
        );
        self.applied = batch.offset.next();
        let o = &batch.origin;
        self.writers
            .record(o.producer.as_ref(), o.stream_seq.as_deref(), now_secs);
        if batch.points.num_rows() == 0 {
            return;
        }
        self.rows += batch.points.num_rows();
        self.bytes += batch.bytes;
        self.oldest.get_or_insert(now);
        self.batches.push(batch);
    }

    /// Installs a newly committed manifest and drops the batches it covers.
    pub fn commit(&mut self, manifest: Arc<Manifest>, now: Instant) {
        let covered = Offset(manifest.stream_offset);
        let keep = self.batches.partition_point(|b| b.offset < covered);
        for b in self.batches.drain(..keep) {
            self.rows -= b.points.num_rows();
            self.bytes -= b.bytes;
        }
        self.oldest = if self.batches.is_empty() {
            None
        } else {
            Some(now)
        };
        // Deletes the manifest covers are kept only while it lists them
        // (compaction retires them); those after it are still pending.
        let listed: HashSet<u64> = manifest.deletes.iter().map(|d| d.offset).collect();
        if self
            .deletes
            .iter()
            .any(|d| d.offset() < covered.0 && !listed.contains(&d.offset()))
        {
            let kept = self
                .deletes
                .iter()
                .filter(|d| d.offset() >= covered.0 || listed.contains(&d.offset()))
                .cloned()
                .collect();
            self.deletes = Deletes(Arc::new(kept));
        }
        self.manifest = manifest;
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            manifest: self.manifest.clone(),
            buffered: self.batches.clone(),
            applied: self.applied,
            deletes: self.deletes.clone(),
            last_delete: self.last_delete,
        }
    }
}

/// Batches a continuous query may fall behind ingest before it is dropped.
const FANOUT_BATCHES: usize = 1024;

/// The engine's in-memory state that readers and the log's writer thread
/// share: the buffer over its manifest, the series catalog, and the feed of
/// applied batches. It is the log's [`DurableSink`].
pub(crate) struct WriteBuffer {
    state: RwLock<State>,
    catalog: Arc<SeriesCatalog>,
    /// Every applied batch, for continuous queries. A broadcast never
    /// blocks the log's writer: a receiver that falls behind by more than
    /// its capacity is told it lagged.
    fanout: broadcast::Sender<Arc<BufferedBatch>>,
    /// Signalled whenever a commit drops flushed batches (frees space).
    space: Notify,
    /// Writers hold it shared from normalising a batch against the catalog
    /// until the batch is applied; retention takes it exclusively to
    /// remove series, so no batch is ever between the two while series go
    /// and every later write logs the keys of the series it brings back.
    series_gate: Arc<tokio::sync::RwLock<()>>,
    /// The newest point of every series, folded in as batches apply.
    last_values: Arc<LastValues>,
    clock: Clock,
    #[cfg(test)]
    pub hooks: hooks::Hooks,
}

/// A writer's share of the series gate, owned so the write can carry it
/// into the task that waits for its record to be applied.
pub(crate) type SeriesShare = tokio::sync::OwnedRwLockReadGuard<()>;

impl DurableSink<Logged> for WriteBuffer {
    fn on_durable(&self, offset: Offset, record: Logged) {
        self.apply(offset, record);
    }
}

impl WriteBuffer {
    pub fn new(manifest: Arc<Manifest>, catalog: SeriesCatalog, clock: Clock) -> Self {
        Self {
            state: RwLock::new(State::new(manifest)),
            catalog: Arc::new(catalog),
            fanout: broadcast::channel(FANOUT_BATCHES).0,
            space: Notify::new(),
            series_gate: Arc::default(),
            last_values: Arc::new(LastValues::new(DEFAULT_LAST_VALUE_SERIES)),
            clock,
            #[cfg(test)]
            hooks: Default::default(),
        }
    }

    /// Applies a durable record of either kind.
    pub fn apply(&self, offset: Offset, record: Logged) {
        match record {
            Logged::Points(batch) => self.apply_points(offset, batch),
            Logged::Delete(predicate, reply) => {
                let before = self.apply_delete(offset, predicate);
                if let Some(reply) = reply {
                    // A writer that went away no longer needs it.
                    let _ = reply.send(before);
                }
            }
        }
    }

    /// Adds a durable batch: its new series to the catalog, its points to
    /// the buffer, then to the feed.
    fn apply_points(&self, offset: Offset, batch: PointBatch) {
        #[cfg(test)]
        self.hooks.before_apply();
        for (id, key) in batch.new_series {
            self.catalog.insert(id, key);
        }
        // Before the batch is visible: a query that sees it in a snapshot
        // finds it in the cache too.
        self.last_values.observe(offset.0, &batch.points);
        let batch = Arc::new(BufferedBatch::new(offset, batch.points, batch.origin));
        let (now, now_secs) = (self.clock.instant(), self.clock.now_secs());
        self.state.write().push(batch.clone(), now, now_secs);
        // No receivers is the normal case; nothing to do then.
        let _ = self.fanout.send(batch);
    }

    /// Applies a durable delete: from now on every snapshot carries it.
    /// The last-value cache forgets everything (before, so no query
    /// answers from it with the points gone, and after, so no build over
    /// the old points completes). Returns the snapshot just before it.
    fn apply_delete(&self, offset: Offset, predicate: DeletePredicate) -> Snapshot {
        #[cfg(test)]
        self.hooks.before_apply();
        // Resolved outside the lock: readers and writers wait for nothing.
        let tombstone = Arc::new(Tombstone::new(offset.0, predicate));
        self.last_values.invalidate();
        let before = self.state.write().delete(offset, tombstone);
        self.last_values.invalidate();
        before
    }

    /// Installs a newly committed manifest, drops the batches it covers
    /// and wakes writers waiting for space.
    pub fn install(&self, manifest: Arc<Manifest>) {
        self.state.write().commit(manifest, self.clock.instant());
        self.space.notify_waiters();
    }

    pub fn snapshot(&self) -> Snapshot {
        self.state.read().snapshot()
    }

    pub fn manifest(&self) -> Arc<Manifest> {
        self.state.read().manifest.clone()
    }

    /// Reads the state under its lock (status, checks that need several
    /// fields at one instant).
    pub fn with_state<R>(&self, read: impl FnOnce(&State) -> R) -> R {
        read(&self.state.read())
    }

    /// Changes the state under its lock.
    pub fn update_state<R>(&self, change: impl FnOnce(&mut State) -> R) -> R {
        change(&mut self.state.write())
    }

    pub fn catalog(&self) -> &Arc<SeriesCatalog> {
        &self.catalog
    }

    pub fn last_values(&self) -> &Arc<LastValues> {
        &self.last_values
    }

    /// Replaces the last-value cache with one of `limit` series; call it
    /// before any batch is applied (at open, before replay).
    pub fn set_last_value_limit(&mut self, limit: usize) {
        self.last_values = Arc::new(LastValues::new(limit));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<BufferedBatch>> {
        self.fanout.subscribe()
    }

    /// Receivers of the feed (continuous queries following it).
    pub fn subscribers(&self) -> usize {
        self.fanout.receiver_count()
    }

    /// Resolves at the next [`WriteBuffer::install`] after the call.
    pub fn space_freed(&self) -> tokio::sync::futures::Notified<'_> {
        self.space.notified()
    }

    /// Held while a batch goes from normalising to applied, by the write
    /// itself: a caller that goes away does not release it early.
    pub async fn share_series(&self) -> SeriesShare {
        self.series_gate.clone().read_owned().await
    }

    /// Held while series are removed from the catalog.
    pub async fn exclude_writers(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        if let Ok(g) = self.series_gate.try_write() {
            return g;
        }
        #[cfg(test)]
        self.hooks.gate_contended.notify_one();
        self.series_gate.write().await
    }
}

#[cfg(test)]
pub(crate) mod hooks {
    //! Where tests hold the write path still: before a durable record is
    //! applied, and when retention finds a writer holding the series gate.

    use std::sync::Arc;

    type Hook = Arc<dyn Fn() + Send + Sync>;

    #[derive(Default)]
    pub struct Hooks {
        before_apply: parking_lot::Mutex<Option<Hook>>,
        /// Notified when `exclude_writers` has to wait for a writer.
        pub gate_contended: tokio::sync::Notify,
    }

    impl Hooks {
        /// Runs `hook` on the log's writer thread before each record is
        /// applied (`None` removes it).
        pub fn set_before_apply(&self, hook: Option<Hook>) {
            *self.before_apply.lock() = hook;
        }

        pub(super) fn before_apply(&self) {
            let hook = self.before_apply.lock().clone();
            if let Some(h) = hook {
                h();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_holding_a_key_twice_keeps_its_later_row() {
        let points = crate::storage::test_points(
            vec![1, 2, 1, 1],
            vec![5, 5, 5, 6],
            vec![1.0, 2.0, 3.0, 4.0],
        );
        let b = BufferedBatch::new(Offset(7), points, Origin::default());
        let ids = b
            .points
            .column(0)
            .as_primitive::<UInt64Type>()
            .values()
            .to_vec();
        let values = b
            .points
            .column(2)
            .as_primitive::<arrow::datatypes::Float64Type>()
            .values()
            .to_vec();
        assert_eq!(ids, vec![2, 1, 1]);
        assert_eq!(values, vec![2.0, 3.0, 4.0]);
    }
}
