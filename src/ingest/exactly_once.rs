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

use super::engine::{Engine, EngineError, WriteReceipt};
use super::normalize::PointBatch;
use crate::model::{ProducerTuple, Verdict};

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
pub(crate) struct WriterLocks {
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

impl Engine {
    /// Writes `points` unless the producer tuple or `Stream-Seq` says it
    /// must not be.
    pub async fn write_once(
        self: &Arc<Self>,
        points: PointBatch,
        producer: Option<ProducerTuple>,
        stream_seq: Option<String>,
    ) -> Result<Once, EngineError> {
        let engine = self.clone();
        let task =
            tokio::spawn(
                async move { engine.write_once_locked(points, producer, stream_seq).await },
            );
        match task.await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only a runtime shutting down cancels a spawned task.
            Err(_) => Err(EngineError::ShuttingDown),
        }
    }

    async fn write_once_locked(
        &self,
        mut points: PointBatch,
        producer: Option<ProducerTuple>,
        stream_seq: Option<String>,
    ) -> Result<Once, EngineError> {
        // Always producer, then Stream-Seq: one order, no deadlock.
        let producer_lock = producer.as_ref().map(|p| self.writer_locks.producer(&p.id));
        let _producer_guard = match &producer_lock {
            Some(l) => Some(l.lock().await),
            None => None,
        };
        let _seq_guard = match &stream_seq {
            Some(_) => Some(self.writer_locks.stream_seq.lock().await),
            None => None,
        };
        let verdict = self
            .shared
            .state
            .read()
            .writers
            .check(producer.as_ref(), stream_seq.as_deref());
        if verdict != Verdict::Accept {
            return Ok(Once::NotWritten(verdict));
        }
        points.origin.producer = producer;
        points.origin.stream_seq = stream_seq;
        // The log's writer applies the record (and its tuple) to the state
        // before answering, so the next check under the lock sees it.
        self.write_points(points).await.map(Once::Written)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::ingest::{json, EngineConfig};

    async fn open(dir: &std::path::Path) -> Arc<Engine> {
        let mut cfg = EngineConfig::new(dir);
        // Only explicit flushes: the test decides what is in the manifest
        // and what only in the log.
        cfg.flush_interval = Duration::from_secs(3600);
        Engine::open(cfg).await.unwrap()
    }

    async fn write(e: &Arc<Engine>, id: &str, epoch: u64, seq: u64, stream_seq: &str) -> Once {
        let body =
            format!(r#"{{"time":{seq},"metric":"cpu","tags":{{"p":"{id}"}},"value":{epoch}}}"#);
        let points = json::parse(body.as_bytes(), false, e.catalog()).unwrap();
        let tuple = ProducerTuple {
            id: id.into(),
            epoch,
            seq,
        };
        let stream_seq = (!stream_seq.is_empty()).then(|| stream_seq.to_string());
        e.write_once(points, Some(tuple), stream_seq).await.unwrap()
    }

    fn dup(last_seq: u64) -> Once {
        Once::NotWritten(Verdict::Duplicate { last_seq })
    }

    /// A client that disconnects mid-write drops the request's future; its
    /// retry must still find the first write recorded, not write again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_abandoned_by_its_client_still_fences_its_retry() {
        let dir = tempfile::tempdir().unwrap();
        let e = open(dir.path()).await;
        for seq in 0..20 {
            let body = format!(r#"{{"time":{seq},"metric":"cpu","value":1}}"#);
            let points = || json::parse(body.as_bytes(), false, e.catalog()).unwrap();
            let tuple = || {
                Some(ProducerTuple {
                    id: "p".into(),
                    epoch: 0,
                    seq,
                })
            };
            // Polled once, then dropped: the write is under way.
            let first = e.write_once(points(), tuple(), None);
            let _ = tokio::time::timeout(Duration::ZERO, first).await;
            let retry = e.write_once(points(), tuple(), None).await.unwrap();
            assert_eq!(retry, dup(seq), "seq {seq}");
        }
        assert_eq!(e.status().rows, 20);
        e.shutdown().await.unwrap();
    }

    /// Producers have locks of their own: one producer's write in flight
    /// does not hold up another's, and each still gets its own verdicts.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn producers_write_concurrently_each_once() {
        let dir = tempfile::tempdir().unwrap();
        let e = open(dir.path()).await;
        let mut tasks = Vec::new();
        for p in 0..8 {
            let e = e.clone();
            tasks.push(tokio::spawn(async move {
                for seq in 0..25 {
                    let id = format!("p{p}");
                    for _attempt in 0..2 {
                        let got = write(&e, &id, 0, seq, "").await;
                        assert!(
                            matches!(got, Once::Written(_)) || got == dup(seq),
                            "{got:?}"
                        );
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(e.status().rows, 8 * 25);
        e.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn each_batch_is_taken_once_across_crashes_and_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let e = open(dir.path()).await;
        assert!(matches!(write(&e, "p", 0, 0, "a").await, Once::Written(_)));
        assert_eq!(write(&e, "p", 0, 0, "a").await, dup(0));
        assert_eq!(
            write(&e, "p", 0, 2, "").await,
            Once::NotWritten(Verdict::Gap {
                expected: 1,
                received: 2
            })
        );
        assert_eq!(
            write(&e, "p", 0, 1, "a").await,
            Once::NotWritten(Verdict::SeqRegression { last: "a".into() })
        );

        // A crash: the tuple comes back from the log record it rode in.
        drop(e);
        let e = open(dir.path()).await;
        assert_eq!(write(&e, "p", 0, 0, "a").await, dup(0));
        assert!(matches!(write(&e, "p", 0, 1, "b").await, Once::Written(_)));

        // A flush moves the records into chunks (and, without stream
        // retention, deletes their log segments): the manifest carries the
        // table from then on.
        e.flush().await.unwrap();
        drop(e);
        let e = open(dir.path()).await;
        assert_eq!(
            e.snapshot().manifest.writers.last_stream_seq.as_deref(),
            Some("b")
        );
        assert_eq!(write(&e, "p", 0, 1, "b").await, dup(1));
        assert_eq!(write(&e, "p", 0, 0, "").await, dup(1));
        assert_eq!(
            write(&e, "q", 0, 0, "b").await,
            Once::NotWritten(Verdict::SeqRegression { last: "b".into() })
        );

        // A new epoch fences the old one, durably.
        assert!(matches!(write(&e, "p", 1, 0, "").await, Once::Written(_)));
        drop(e);
        let e = open(dir.path()).await;
        assert_eq!(
            write(&e, "p", 0, 2, "").await,
            Once::NotWritten(Verdict::StaleEpoch { current: 1 })
        );
        assert_eq!(e.status().rows, 3, "three batches accepted, each once");
        e.shutdown().await.unwrap();
    }
}
