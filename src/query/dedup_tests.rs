//! One value per (series, time), end to end over the real engine: random
//! writes that rewrite a small key space, flushes, compactions, clean
//! restarts and crashes; after every step the table equals a model map
//! from key to its last value, by rows and by `count(*)`.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::util::display::array_value_to_string;
use proptest::prelude::*;

use super::tests::batch;
use super::*;
use crate::ingest::{Engine, EngineConfig};

const T0: i64 = 1_705_276_800_000_000;
/// Twenty minutes: six slots span two hour partitions.
const SLOT: i64 = 1_200_000_000;
const HOSTS: [&str; 3] = ["a", "b", "c"];

#[derive(Debug, Clone)]
enum Step {
    /// `(host, slot)` points; each gets a fresh value.
    Write(Vec<(usize, i64)>),
    Flush,
    Compact,
    Restart,
    Crash,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => prop::collection::vec((0..HOSTS.len(), 0i64..6), 1..8).prop_map(Step::Write),
        1 => Just(Step::Flush),
        1 => Just(Step::Compact),
        1 => Just(Step::Restart),
        1 => Just(Step::Crash),
    ]
}

type Model = BTreeMap<(String, i64), f64>;

async fn table(q: &QueryEngine) -> (Model, i64) {
    let rows = q
        .sql("SELECT tags['host'] AS h, time, value FROM metrics")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut got = Model::new();
    let mut n = 0;
    for b in &rows {
        let times = b
            .column(1)
            .as_any()
            .downcast_ref::<arrow::array::TimestampMicrosecondArray>()
            .unwrap();
        let values = b
            .column(2)
            .as_any()
            .downcast_ref::<arrow::array::Float64Array>()
            .unwrap();
        for r in 0..b.num_rows() {
            let h = array_value_to_string(b.column(0), r).unwrap();
            assert!(
                got.insert((h, times.value(r)), values.value(r)).is_none(),
                "a key read back twice"
            );
            n += 1;
        }
    }
    assert_eq!(n, got.len() as i64);
    let counted = q
        .sql("SELECT count(*) FROM metrics")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let count = counted[0]
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap()
        .value(0);
    (got, count)
}

/// `(count, sum, newest value)` per host: an aggregate the series rollup
/// computes inside the scan.
type PerHost = BTreeMap<String, (i64, f64, f64)>;

async fn per_host(q: &QueryEngine) -> PerHost {
    let sql = "SELECT tags['host'] AS h, count(*) AS n, sum(value) AS s, \
               last_value(value ORDER BY time) AS l FROM metrics GROUP BY 1";
    let mut out = PerHost::new();
    for b in q.sql(sql).await.unwrap().collect().await.unwrap() {
        let col = |i: usize, r: usize| array_value_to_string(b.column(i), r).unwrap();
        for r in 0..b.num_rows() {
            out.insert(
                col(0, r),
                (
                    col(1, r).parse().unwrap(),
                    col(2, r).parse().unwrap(),
                    col(3, r).parse().unwrap(),
                ),
            );
        }
    }
    out
}

fn model_per_host(model: &Model) -> PerHost {
    let mut out = PerHost::new();
    for ((h, _), v) in model {
        let e = out.entry(h.clone()).or_insert((0, 0.0, 0.0));
        e.0 += 1;
        e.1 += v;
        e.2 = *v; // keys iterate in time order per host
    }
    out
}

async fn open(cfg: &EngineConfig) -> (Arc<Engine>, QueryEngine) {
    let engine = Engine::open(cfg.clone()).await.unwrap();
    let q = QueryEngine::new(engine.clone(), QueryConfig::default());
    (engine, q)
}

async fn run(steps: Vec<Step>) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = EngineConfig::for_tests(dir.path());
    let (mut engine, mut q) = open(&cfg).await;
    let mut model = Model::new();
    let mut value = 0.0;
    for (i, s) in steps.iter().enumerate() {
        match s {
            Step::Write(points) => {
                let rows: Vec<(i64, &str, &str, f64)> = points
                    .iter()
                    .map(|&(h, slot)| {
                        value += 1.0;
                        (T0 + slot * SLOT, "cpu", HOSTS[h], value)
                    })
                    .collect();
                for r in &rows {
                    model.insert((r.2.to_string(), r.0), r.3);
                }
                engine.write(&batch(&rows)).await.unwrap();
            }
            Step::Flush => {
                engine.flush().await.unwrap();
            }
            Step::Compact => engine.maintain().await.unwrap(),
            Step::Restart | Step::Crash => {
                if matches!(s, Step::Restart) {
                    engine.shutdown().await.unwrap();
                }
                drop(q);
                drop(engine);
                (engine, q) = open(&cfg).await;
            }
        }
        let (got, count) = table(&q).await;
        assert_eq!(got, model, "after step {i} ({s:?}) of {steps:?}");
        assert_eq!(count, model.len() as i64, "count(*) after step {i} ({s:?})");
        assert_eq!(
            per_host(&q).await,
            model_per_host(&model),
            "the series rollup after step {i} ({s:?})"
        );
    }
    engine.shutdown().await.unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn every_step_reads_one_value_per_series_and_time(steps in prop::collection::vec(step(), 1..14)) {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(run(steps));
    }
}

/// The named cases of the rule: the later write wins wherever the earlier
/// value sits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrite_wins_over_the_buffer_a_chunk_a_compacted_chunk_and_a_restart() {
    use Step::*;
    let w = |slot| Write(vec![(0, slot)]);
    for (name, steps) in [
        ("buffer over buffer", vec![w(1), w(1)]),
        ("buffer over chunk", vec![w(1), Flush, w(1)]),
        ("chunk over chunk", vec![w(1), Flush, w(1), Flush]),
        ("after compaction", vec![w(1), Flush, w(1), Flush, Compact]),
        (
            "compacted under a new chunk",
            vec![w(1), Flush, Compact, w(1), Flush],
        ),
        ("after restart", vec![w(1), Flush, w(1), Restart]),
        ("replayed log over a chunk", vec![w(1), Flush, w(1), Crash]),
    ] {
        eprintln!("case: {name}");
        run(steps).await;
    }
}
