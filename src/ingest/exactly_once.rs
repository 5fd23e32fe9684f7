//! Exactly-once writes to the `metrics` stream: the Durable Streams
//! protocol's idempotent producers and `Stream-Seq` on the database's own
//! log.
//!
//! A write's check and its durable append happen under a lock, so two
//! retries of the same batch can never both pass the check: each producer
//! id has its own lock (different producers still share group commits),
//! and writes carrying `Stream-Seq` also take one lock for the stream. The
//! locked section runs in a task of its own, so a client that disconnects
//! mid-write cannot release the lock before the record is applied. The
//! accepted tuple travels inside the log record ([`super::Origin`]) and from
//! there into the manifest at flush, exactly like a `--source` checkpoint:
//! after a crash the table is rebuilt from the very records it describes,
//! so a retried batch is either present and known, or neither. Plain writes
//! (DoPut, HTTP without producer headers) take no lock.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use super::admission::{run_to_end, Admission, WriteReceipt};
use super::buffer::WriteBuffer;
use super::error::EngineError;
use super::normalize::PointBatch;
use crate::model::{ProducerTuple, Verdict};
use crate::storage::SeriesCatalog;

/// What an exactly-once write did.
#[derive(Debug, Clone, PartialEq)]
pub enum Once {
    /// New data, now durable.
    Written(WriteReceipt),
    /// Nothing appended: a producer's retry ([`Verdict::Duplicate`]) or a
    /// refusal (stale epoch, sequence gap, `Stream-Seq` regression).
    NotWritten(Verdict),
}

/// The locks exactly-once writes take.
#[derive(Default)]
struct WriterLocks {
    /// Per producer id; entries die with their last holder.
    producers: parking_lot::Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
    /// Writes that carry `Stream-Seq` (its order is the stream's).
    stream_seq: tokio::sync::Mutex<()>,
}

impl WriterLocks {
    fn producer(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.producers.lock();
        if let Some(lock) = map.get(id).and_then(Weak::upgrade) {
            return lock;
        }
        // Drop the entries of producers no write holds any more, now and
        // then, so the map stays as small as the writes in flight.
        if map.len() >= 64 {
            map.retain(|_, w| w.strong_count() > 0);
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(id.to_string(), Arc::downgrade(&lock));
        lock
    }
}

/// Exactly-once writes over the plain write path.
pub(crate) struct ExactlyOnce {
    admission: Arc<Admission>,
    buffer: Arc<WriteBuffer>,
    locks: WriterLocks,
    /// `--max-producers`: the table's bound.
    max_producers: usize,
}

impl ExactlyOnce {
    pub fn new(admission: Arc<Admission>, buffer: Arc<WriteBuffer>, max_producers: usize) -> Self {
        Self {
            admission,
            buffer,
            locks: WriterLocks::default(),
            max_producers,
        }
    }

    /// Writes what `make` normalises against the catalog unless the
    /// producer tuple or `Stream-Seq` says it must not be. Runs to the end
    /// in a task of its own, series gate and locks included, whatever
    /// happens to the caller.
    pub async fn write_once<F>(
        self: &Arc<Self>,
        make: F,
        producer: Option<ProducerTuple>,
        stream_seq: Option<String>,
    ) -> Result<Once, EngineError>
    where
        F: FnOnce(&SeriesCatalog) -> Result<PointBatch, EngineError> + Send + 'static,
    {
        let this = self.clone();
        run_to_end(async move { this.write_locked(make, producer, stream_seq).await }).await
    }

    async fn write_locked<F>(
        &self,
        make: F,
        producer: Option<ProducerTuple>,
        stream_seq: Option<String>,
    ) -> Result<Once, EngineError>
    where
        F: FnOnce(&SeriesCatalog) -> Result<PointBatch, EngineError>,
    {
        let gate = self.buffer.share_series().await;
        let mut points = make(self.buffer.catalog())?;
        // Always producer, then Stream-Seq: one order, no deadlock.
        let producer_lock = producer.as_ref().map(|p| self.locks.producer(&p.id));
        let _producer_guard = match &producer_lock {
            Some(l) => Some(l.lock().await),
            None => None,
        };
        let _seq_guard = match &stream_seq {
            Some(_) => Some(self.locks.stream_seq.lock().await),
            None => None,
        };
        let verdict = self
            .buffer
            .with_state(|st| st.writers.check(producer.as_ref(), stream_seq.as_deref()));
        if verdict != Verdict::Accept {
            return Ok(Once::NotWritten(verdict));
        }
        if let Some(p) = &producer {
            self.check_room_for(&p.id)?;
        }
        points.origin.producer = producer;
        points.origin.stream_seq = stream_seq;
        // The log's writer applies the record (and its tuple) to the state
        // before answering, so the next check under the lock sees it.
        self.admission
            .write_points(points, gate)
            .await
            .map(Once::Written)
    }
}

impl ExactlyOnce {
    /// A producer the table does not know yet needs room in it. Known
    /// producers are never refused, and none is evicted to make room:
    /// forgetting a live producer would let its retries write twice. Two
    /// new producers racing may pass together (each holds its own lock),
    /// so the table can exceed the limit by the writes in flight.
    fn check_room_for(&self, id: &str) -> Result<(), EngineError> {
        let limit = self.max_producers;
        let full = self.buffer.with_state(|st| {
            let p = &st.writers.producers;
            !p.contains(id) && p.len() >= limit
        });
        if full {
            crate::telemetry::metrics().limited("producers");
            return Err(EngineError::TooManyProducers { limit });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
