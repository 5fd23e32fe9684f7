//! [`Admission`]: the write path from a normalised batch to a durable,
//! applied record. It checks the batch's size, reserves its bytes against
//! the buffer's memory limit (waiting, bounded, for a flush to free space),
//! appends it to the log and returns once the log's writer has fsynced it
//! and applied it to the [`WriteBuffer`].
//!
//! Normalising and writing happen under the buffer's series gate, taken
//! here, so no caller can forget it (see `WriteBuffer::share_series`).
//! Once a record is handed to the log it will be applied whatever happens
//! to the caller, so from then on the gate belongs to a task of its own
//! that waits for the record: a client that disconnects cannot release it
//! early and let retention remove a series the record needs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arrow::array::RecordBatch;
use serde::Serialize;

use super::buffer::{Logged, SeriesShare, Snapshot, WriteBuffer};
use super::config::BufferSection;
use super::error::EngineError;
use super::new_series::NewSeries;
use super::normalize::{normalize, PointBatch};
use super::record;
use crate::model::DeletePredicate;
use crate::runtime::{CancellationToken, Clock};
use crate::storage::SeriesCatalog;
use crate::stream::{Log, Offset};

/// Deletes held at once, waiting for compaction to apply them: each
/// costs every read of the chunks it applies to a filter until then.
pub const MAX_DELETES: usize = 256;

/// What a durable write returns.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WriteReceipt {
    pub rows: usize,
    pub offset: Offset,
}

pub(crate) struct Admission {
    buffer: Arc<WriteBuffer>,
    log: Arc<Log<Logged>>,
    limits: BufferSection,
    clock: Clock,
    /// Bytes of writes admitted but not yet in the buffer.
    reserved: Arc<AtomicUsize>,
    /// Cancelled when the engine shuts down: writes are refused from then.
    closed: CancellationToken,
    /// New series of batches in flight (`--max-series`, id collisions).
    series: NewSeries,
}

/// Bytes of a write admitted to the buffer but not yet applied; given back
/// when dropped.
struct Reserved(Arc<AtomicUsize>, usize);

impl Drop for Reserved {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::AcqRel);
    }
}

impl Admission {
    pub fn new(
        buffer: Arc<WriteBuffer>,
        log: Arc<Log<Logged>>,
        limits: BufferSection,
        clock: Clock,
        closed: CancellationToken,
    ) -> Self {
        let series = NewSeries::new(buffer.catalog().clone(), limits.max_series);
        Self {
            series,
            buffer,
            log,
            limits,
            clock,
            reserved: Arc::default(),
            closed,
        }
    }

    /// Validates, logs durably and buffers one Arrow batch.
    pub async fn write(self: &Arc<Self>, batch: &RecordBatch) -> Result<WriteReceipt, EngineError> {
        // Checked before normalising: an oversized batch costs nothing more.
        self.check_rows(batch.num_rows())?;
        self.write_with(|catalog| Ok(normalize(batch, catalog)?))
            .await
    }

    /// Normalises with `make` against the catalog and writes the result,
    /// all under the series gate. `make` may refuse with any error.
    pub async fn write_with<F>(self: &Arc<Self>, make: F) -> Result<WriteReceipt, EngineError>
    where
        F: FnOnce(&SeriesCatalog) -> Result<PointBatch, EngineError>,
    {
        let gate = self.buffer.share_series().await;
        let points = make(self.buffer.catalog())?;
        self.write_points(points, gate).await
    }

    /// Logs durably and buffers a batch normalised under `gate`. Returns
    /// once the batch is on disk and visible to queries. Cancelled before
    /// the append, nothing is written; after it, the append finishes in a
    /// task that holds `gate` until the record is applied.
    pub async fn write_points(
        self: &Arc<Self>,
        points: PointBatch,
        gate: SeriesShare,
    ) -> Result<WriteReceipt, EngineError> {
        if self.closed.is_cancelled() {
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
        // Refused whole before anything is logged; held until applied.
        let _series = self.series.admit(&points.new_series)?;
        let bytes = points.points.get_array_memory_size();
        self.reserve(bytes).await?;
        let reserved = Reserved(self.reserved.clone(), bytes);
        let payload = record::encode(&points);
        // Submitted in the caller, so a DoPut's pipelined batches keep
        // their order in the log.
        let submitted = self.log.submit(payload, Logged::Points(points)).await?;
        let offset = run_to_end(async move {
            // Both released once the record is applied (or refused).
            let _held = (gate, reserved);
            Ok(submitted.durable().await?)
        })
        .await?;
        let m = crate::telemetry::metrics();
        m.ingest_rows.inc_by(rows as u64);
        m.ingest_batches.inc();
        Ok(WriteReceipt { rows, offset })
    }

    /// Logs a delete durably and applies it. Returns its offset and the
    /// snapshot it deleted from (everything logged before it, none of
    /// what came after), once it is visible to queries. Like a write,
    /// once handed to the log it is applied whatever the caller does.
    pub async fn delete(
        self: &Arc<Self>,
        predicate: DeletePredicate,
    ) -> Result<(Offset, Snapshot), EngineError> {
        if self.closed.is_cancelled() {
            return Err(EngineError::ShuttingDown);
        }
        let held = self.buffer.with_state(|st| st.deletes.0.len());
        if held >= MAX_DELETES {
            crate::telemetry::metrics().limited("deletes");
            return Err(EngineError::TooManyDeletes { limit: MAX_DELETES });
        }
        let payload = record::encode_delete(&predicate);
        let (reply, before) = tokio::sync::oneshot::channel();
        let submitted = self
            .log
            .submit(payload, Logged::Delete(predicate, Some(reply)))
            .await?;
        run_to_end(async move {
            let offset = submitted.durable().await?;
            // Sent by the log's writer thread as it applies the record,
            // which happens before the durable answer.
            let before = before.await.map_err(|_| EngineError::ShuttingDown)?;
            Ok((offset, before))
        })
        .await
    }

    fn check_rows(&self, rows: usize) -> Result<(), EngineError> {
        let limit = self.limits.max_batch_rows;
        if rows > limit {
            crate::telemetry::metrics().limited("batch_rows");
            return Err(EngineError::BatchTooLarge { rows, limit });
        }
        Ok(())
    }

    /// Waits until the buffer has room for `bytes`, then reserves it.
    async fn reserve(&self, bytes: usize) -> Result<(), EngineError> {
        let limit = self.limits.max_buffer_bytes;
        let start = self.clock.instant();
        let deadline = start + self.limits.write_timeout;
        loop {
            let space = self.buffer.space_freed();
            let used =
                self.buffer.with_state(|st| st.bytes) + self.reserved.load(Ordering::Acquire);
            // A batch larger than the whole limit is still admitted into an
            // empty buffer, or it could never be written.
            if used + bytes <= limit || used == 0 {
                self.reserved.fetch_add(bytes, Ordering::AcqRel);
                return Ok(());
            }
            // The flusher frees space.
            if tokio::time::timeout_at(deadline, space).await.is_err() {
                crate::telemetry::metrics().limited("write_buffer");
                return Err(EngineError::Backpressure {
                    bytes: used,
                    limit,
                    waited: self.clock.since(start),
                });
            }
        }
    }
}

/// Runs `work` in a task of its own and waits for it: dropping the
/// caller's future does not stop it.
pub(crate) async fn run_to_end<T, F>(work: F) -> Result<T, EngineError>
where
    F: std::future::Future<Output = Result<T, EngineError>> + Send + 'static,
    T: Send + 'static,
{
    match tokio::spawn(work).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only a runtime shutting down cancels a spawned task.
        Err(_) => Err(EngineError::ShuttingDown),
    }
}

#[cfg(test)]
mod tests;
