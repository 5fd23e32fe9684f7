//! The in-memory write buffer: every durable batch not yet in a chunk, in
//! offset order, together with the manifest it sits on top of.
//!
//! The buffer and the manifest are swapped under one lock, so a reader's
//! [`Snapshot`] sees every row exactly once: either still buffered or
//! already in a committed chunk, never both or neither.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::TimestampMicrosecondType;

use super::normalize::Origin;
use crate::model::Writers;
use crate::storage::Manifest;
use crate::stream::Offset;

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
    pub fn new(offset: Offset, points: RecordBatch, origin: Origin) -> Self {
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

/// A consistent view for readers: committed chunks plus buffered batches.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub manifest: Arc<Manifest>,
    pub buffered: Vec<Arc<BufferedBatch>>,
    /// Every record before this offset is in the snapshot, none after.
    pub applied: Offset,
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
}

impl State {
    pub fn new(manifest: Arc<Manifest>) -> Self {
        let applied = Offset(manifest.stream_offset);
        let writers = manifest.writers.clone();
        Self {
            writers,
            manifest,
            batches: Vec::new(),
            rows: 0,
            bytes: 0,
            oldest: None,
            applied,
        }
    }

    pub fn push(&mut self, batch: Arc<BufferedBatch>) {
        debug_assert!(
            batch.offset >= self.applied,
            "records must arrive in offset order"
        );
        self.applied = batch.offset.next();
        let o = &batch.origin;
        self.writers
            .record(o.producer.as_ref(), o.stream_seq.as_deref());
        if batch.points.num_rows() == 0 {
            return;
        }
        self.rows += batch.points.num_rows();
        self.bytes += batch.bytes;
        self.oldest.get_or_insert_with(Instant::now);
        self.batches.push(batch);
    }

    /// Installs a newly committed manifest and drops the batches it covers.
    pub fn commit(&mut self, manifest: Arc<Manifest>) {
        let covered = Offset(manifest.stream_offset);
        let keep = self.batches.partition_point(|b| b.offset < covered);
        for b in self.batches.drain(..keep) {
            self.rows -= b.points.num_rows();
            self.bytes -= b.bytes;
        }
        self.oldest = if self.batches.is_empty() {
            None
        } else {
            Some(Instant::now())
        };
        self.manifest = manifest;
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            manifest: self.manifest.clone(),
            buffered: self.batches.clone(),
            applied: self.applied,
        }
    }
}
