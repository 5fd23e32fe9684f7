//! Exactly-once writes to the `metrics` stream: the Durable Streams
//! protocol's idempotent producers and `Stream-Seq` on the database's own
//! log.
//!
//! The check and the durable append happen under one gate, so two retries
//! of the same batch can never both pass the check. The accepted tuple
//! travels inside the log record ([`super::Origin`]) and from there into the
//! manifest at flush, exactly like a `--source` checkpoint: after a crash
//! the table is rebuilt from the very records it describes, so a retried
//! batch is either present and known, or neither. Plain writes (DoPut, HTTP
//! without producer headers) never take the gate.

use super::engine::{Engine, EngineError, WriteReceipt};
use super::normalize::PointBatch;
use crate::model::{ProducerTuple, Verdict};

/// Producers with no append for this long are forgotten at the next flush
/// (see [`crate::model::Producers::forget_idle`]), so producer ids minted
/// per process cannot grow the manifest without bound.
pub(super) const PRODUCER_IDLE_SECS: i64 = 7 * 24 * 3600;

/// What an exactly-once write did.
#[derive(Debug, Clone, PartialEq)]
pub enum Once {
    /// New data, now durable.
    Written(WriteReceipt),
    /// Nothing appended: a producer's retry ([`Verdict::Duplicate`]) or a
    /// refusal (stale epoch, sequence gap, `Stream-Seq` regression).
    NotWritten(Verdict),
}

impl Engine {
    /// Writes `points` unless the producer tuple or `Stream-Seq` says it
    /// must not be.
    pub async fn write_once(
        &self,
        mut points: PointBatch,
        producer: Option<ProducerTuple>,
        stream_seq: Option<String>,
    ) -> Result<Once, EngineError> {
        let _one_at_a_time = self.writers_gate.lock().await;
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
        // before answering, so the next check under the gate sees it.
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

    async fn write(e: &Engine, id: &str, epoch: u64, seq: u64, stream_seq: &str) -> Once {
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
