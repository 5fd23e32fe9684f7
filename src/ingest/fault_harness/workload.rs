//! A run's node (its files, clock and store) and its seeded workload:
//! random writes (random series, times and batch sizes; some through
//! idempotent producers, some of those sent twice), flushes, maintenance
//! passes and clock jumps, in an order the seed picks.
//!
//! Every operation runs as a task of its own, so a crash point's panic
//! ends that task only and the harness sees it as the process dying.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema};
use rand::rngs::StdRng;
use rand::Rng;

use super::ledger::{Answer, Ledger};
use crate::ingest::testing::{rows, Row, T0};
use crate::ingest::{normalize, Engine, EngineConfig, EngineError, Once};
use crate::model::{ProducerTuple, Verdict};
use crate::runtime::power_loss::PowerLoss;
use crate::runtime::{Clock, CrashPoints};
use crate::storage::faults::FaultyStore;
use crate::storage::{Store, PARTITION_MICROS};
use crate::stream::Retention;

/// Hours the points of a run fall into, from [`T0`].
const HOURS: i64 = 3;

/// One node: a data directory and a local object store under one root,
/// watched for power losses, on a simulated clock.
pub struct Node {
    pub root: tempfile::TempDir,
    pub clock: Clock,
    pub loss: PowerLoss,
    segment_bytes: u64,
    /// Keep flushed segments a while (so sealed ones stay to be damaged),
    /// or delete them at once.
    keep_segments: bool,
}

impl Node {
    pub fn new(rng: &mut StdRng) -> std::io::Result<Self> {
        let root = tempfile::tempdir()?;
        crate::runtime::fs::create_dir_all_synced(&root.path().join("objects"))?;
        let loss = PowerLoss::watch(root.path())?;
        Ok(Self {
            clock: Clock::simulated(T0 + HOURS * PARTITION_MICROS),
            loss,
            segment_bytes: rng.random_range(512..4_096),
            keep_segments: rng.random_bool(0.5),
            root,
        })
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// The stream log's directory.
    pub fn log_dir(&self) -> PathBuf {
        self.data_dir().join("stream").join("metrics")
    }

    /// One life of the node: its config, with the store reached through a
    /// [`FaultyStore`] that dies with `crash`.
    pub fn life(&self, crash: &CrashPoints) -> (EngineConfig, Arc<FaultyStore>) {
        let disk = Store::local(&self.root.path().join("objects"))
            .expect("local store")
            .inner()
            .clone();
        let faulty = Arc::new(FaultyStore::new(disk));
        faulty.dies_with(crash);
        let mut cfg = EngineConfig::for_tests(self.data_dir());
        cfg.store = Some(Store::new(faulty.clone()).exclusive());
        cfg.clock = self.clock.clone();
        cfg.crash = crash.clone();
        cfg.log.fsync = true;
        cfg.log.segment_bytes = self.segment_bytes;
        if self.keep_segments {
            cfg.log.stream_retention = Retention {
                age: Duration::from_secs(3600),
                bytes: 256 << 10,
            };
        }
        cfg.maintenance.gc_grace = Duration::from_secs(60);
        (cfg, faulty)
    }
}

/// How one operation ended.
#[derive(Debug)]
pub enum Ended {
    Ok,
    Failed(String),
    /// A crash point stopped the process.
    Crashed,
}

/// A producer batch whose answer was lost, to retry after the restart.
pub struct Retry {
    pub batch_no: usize,
    pub batch: RecordBatch,
    pub tuple: ProducerTuple,
}

/// The seeded workload and what it wrote.
pub struct Workload {
    pub rng: StdRng,
    pub ledger: Ledger,
    pub retries: Vec<Retry>,
    next_value: u64,
    new_series: u64,
    /// Next sequence number of each producer.
    producers: Vec<u64>,
    /// The last producer batch acknowledged, to send again.
    last_sent: Option<(RecordBatch, ProducerTuple)>,
}

impl Workload {
    pub fn new(rng: StdRng) -> Self {
        Self {
            rng,
            ledger: Ledger::default(),
            retries: Vec::new(),
            next_value: 0,
            new_series: 0,
            producers: vec![0; 3],
            last_sent: None,
        }
    }

    /// Runs one operation the seed picks; the label says which.
    pub async fn step(&mut self, e: &Arc<Engine>, store: &FaultyStore) -> (&'static str, Ended) {
        match self.rng.random_range(0..100) {
            0..40 => ("write", self.write(e, store).await),
            40..55 => ("producer write", self.producer_write(e, store).await),
            55..60 => ("duplicate", self.duplicate(e, store).await),
            60..78 => {
                let e = e.clone();
                ("flush", settle(store, async move { e.flush().await }).await)
            }
            78..88 => {
                let e = e.clone();
                (
                    "maintain",
                    settle(store, async move { e.maintain().await }).await,
                )
            }
            _ => {
                let minutes = self.rng.random_range(1..30);
                tokio::time::advance(Duration::from_secs(60 * minutes)).await;
                ("advance", Ended::Ok)
            }
        }
    }

    /// A plain write of a random batch.
    pub async fn write(&mut self, e: &Arc<Engine>, store: &FaultyStore) -> Ended {
        let batch = self.batch();
        let rows = normalized(e, &batch);
        let engine = e.clone();
        let ended = settle(store, async move { engine.write(&batch).await }).await;
        let answer = match ended {
            Ended::Ok => Answer::Acked,
            _ => Answer::Unknown,
        };
        self.ledger.record(rows, answer);
        ended
    }

    async fn producer_write(&mut self, e: &Arc<Engine>, store: &FaultyStore) -> Ended {
        let k = self.rng.random_range(0..self.producers.len());
        let tuple = ProducerTuple {
            id: format!("p{k}"),
            epoch: 0,
            seq: self.producers[k],
        };
        self.producers[k] += 1;
        let batch = self.batch();
        let rows = normalized(e, &batch);
        let verdict = send(e, store, &batch, &tuple).await;
        match verdict {
            Ok(None) => {
                self.ledger.record(rows, Answer::Acked);
                self.last_sent = Some((batch, tuple));
                Ended::Ok
            }
            Ok(Some(v)) => {
                self.ledger.record(rows, Answer::Unknown);
                Ended::Failed(format!("a new producer batch was refused: {v:?}"))
            }
            Err(ended) => {
                let batch_no = self.ledger.record(rows, Answer::Unknown);
                self.retries.push(Retry {
                    batch_no,
                    batch,
                    tuple,
                });
                ended
            }
        }
    }

    /// Sends the last acknowledged producer batch again: a retry whose
    /// first answer the client did not see. It must not be written twice.
    async fn duplicate(&mut self, e: &Arc<Engine>, store: &FaultyStore) -> Ended {
        let Some((batch, tuple)) = self.last_sent.clone() else {
            return Ended::Ok;
        };
        match send(e, store, &batch, &tuple).await {
            Ok(Some(Verdict::Duplicate { .. })) => Ended::Ok,
            Ok(other) => Ended::Failed(format!("a producer's retry was answered {other:?}")),
            Err(ended) => ended,
        }
    }

    /// 1 to 4 series (some new), 1 to 60 points each, at random times of
    /// the run's hours; every value new.
    fn batch(&mut self) -> RecordBatch {
        let series = self.rng.random_range(1..=4);
        let rows = series * self.rng.random_range(1..=60);
        let mut names = Vec::with_capacity(series);
        for _ in 0..series {
            if self.rng.random_bool(0.1) {
                self.new_series += 1;
                names.push(format!("new{}", self.new_series));
            } else {
                names.push(format!("m{}", self.rng.random_range(0..6)));
            }
        }
        let span = HOURS * PARTITION_MICROS;
        let times: Vec<i64> = (0..rows)
            .map(|_| T0 + self.rng.random_range(0..span))
            .collect();
        let metrics: Vec<String> = (0..rows).map(|i| names[i % series].clone()).collect();
        let values: Vec<f64> = (0..rows)
            .map(|_| {
                self.next_value += 1;
                self.next_value as f64
            })
            .collect();
        let schema = Schema::new(vec![
            Field::new("time", crate::model::time_type(), false),
            Field::new("metric", DataType::Utf8, false),
            Field::new("value", DataType::Float64, false),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(TimestampMicrosecondArray::from(times).with_timezone("UTC")),
                Arc::new(StringArray::from(metrics)),
                Arc::new(Float64Array::from(values)),
            ],
        )
        .expect("a valid batch")
    }
}

/// The rows `batch` becomes once written to `e`.
pub fn normalized(e: &Engine, batch: &RecordBatch) -> Vec<Row> {
    use crate::ingest::ReadView;
    rows(&normalize(batch, e.catalog()).expect("a valid batch").points)
}

/// Writes `batch` as `tuple`: `Ok(None)` if written, `Ok(Some(verdict))`
/// if not, `Err` if the write failed or crashed.
pub async fn send(
    e: &Arc<Engine>,
    store: &FaultyStore,
    batch: &RecordBatch,
    tuple: &ProducerTuple,
) -> Result<Option<Verdict>, Ended> {
    let (engine, batch, tuple) = (e.clone(), batch.clone(), tuple.clone());
    run(store, async move {
        let once = engine
            .write_once(move |c| Ok(normalize(&batch, c)?), Some(tuple), None)
            .await?;
        Ok(match once {
            Once::Written(_) => None,
            Once::NotWritten(v) => Some(v),
        })
    })
    .await
}

/// [`run`], keeping only how it ended.
pub async fn settle<T, F>(store: &FaultyStore, op: F) -> Ended
where
    F: Future<Output = Result<T, EngineError>> + Send + 'static,
    T: Send + 'static,
{
    match run(store, op).await {
        Ok(_) => Ended::Ok,
        Err(ended) => ended,
    }
}

/// Runs `op` as a task of its own until it ends. A network cut by a store
/// fault comes back once the operation waits on it; a crash point's panic
/// is [`Ended::Crashed`].
pub async fn run<T, F>(store: &FaultyStore, op: F) -> Result<T, Ended>
where
    F: Future<Output = Result<T, EngineError>> + Send + 'static,
    T: Send + 'static,
{
    let mut task = tokio::spawn(op);
    let joined = loop {
        tokio::select! {
            joined = &mut task => break joined,
            _ = tokio::time::sleep(Duration::from_millis(1)) => {
                if store.waiting() > 0 {
                    store.reconnect();
                }
            }
        }
    };
    match joined {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(Ended::Failed(e.to_string())),
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            if CrashPoints::is_crash(&*payload) {
                Err(Ended::Crashed)
            } else {
                std::panic::resume_unwind(payload)
            }
        }
        Err(e) => Err(Ended::Failed(format!("operation cancelled: {e}"))),
    }
}
