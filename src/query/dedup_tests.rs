//! One value per (series, time) and DELETE, end to end over the real
//! engine: random writes that rewrite a small key space, deletes by host
//! and time range, flushes, compactions, clean restarts and crashes;
//! after every step the table equals a model map from key to its last
//! value, by rows and by `count(*)`, and each delete reports the rows the
//! model lost.

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
    Delete(Delete),
    Flush,
    Compact,
    Restart,
    Crash,
}

/// `DELETE FROM metrics WHERE (hosts AND from <= slot < to) OR host = or_host`,
/// each part optional.
#[derive(Debug, Clone)]
struct Delete {
    hosts: Option<(Vec<usize>, bool)>,
    from: Option<i64>,
    to: Option<i64>,
    or_host: Option<usize>,
}

impl Delete {
    fn sql(&self) -> String {
        let quoted = |h: &[usize]| {
            h.iter()
                .map(|&i| format!("'{}'", HOSTS[i]))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let at = |slot: i64| format!("'{}'", crate::model::format_micros(T0 + slot * SLOT));
        let mut conds = Vec::new();
        if let Some((hosts, negated)) = &self.hosts {
            let not = if *negated { "NOT " } else { "" };
            conds.push(format!("tags['host'] {not}IN ({})", quoted(hosts)));
        }
        if let Some(from) = self.from {
            conds.push(format!("time >= {}", at(from)));
        }
        if let Some(to) = self.to {
            conds.push(format!("time < {}", at(to)));
        }
        let mut cond = if conds.is_empty() {
            "true".to_string()
        } else {
            conds.join(" AND ")
        };
        if let Some(h) = self.or_host {
            cond = format!("({cond}) OR tags['host'] = '{}'", HOSTS[h]);
        }
        format!("DELETE FROM metrics WHERE {cond}")
    }

    fn matches(&self, host: &str, time: i64) -> bool {
        let i = HOSTS.iter().position(|h| *h == host).expect("a known host");
        let in_hosts = self
            .hosts
            .as_ref()
            .is_none_or(|(hs, negated)| hs.contains(&i) != *negated);
        let slot_ok = self.from.is_none_or(|f| time >= T0 + f * SLOT)
            && self.to.is_none_or(|t| time < T0 + t * SLOT);
        (in_hosts && slot_ok) || self.or_host == Some(i)
    }
}

fn delete() -> impl Strategy<Value = Delete> {
    let hosts = prop::collection::vec(0..HOSTS.len(), 1..3);
    (
        prop::option::of((hosts, any::<bool>())),
        prop::option::of(0i64..7),
        prop::option::of(0i64..7),
        prop::option::weighted(0.2, 0..HOSTS.len()),
    )
        .prop_map(|(hosts, from, to, or_host)| Delete {
            hosts,
            from,
            to,
            or_host,
        })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => prop::collection::vec((0..HOSTS.len(), 0i64..6), 1..8).prop_map(Step::Write),
        1 => delete().prop_map(Step::Delete),
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

/// A DELETE as the servers run it (`flight::delete::run`): planned,
/// logged, counted.
async fn run_delete(engine: &Engine, q: &QueryEngine, sql: &str) -> u64 {
    let plan = q.plan_delete(sql, None).await.unwrap();
    if plan.predicate == crate::model::DeletePredicate::Const(false) {
        return 0;
    }
    let (_, before) = engine.delete(plan.predicate.clone()).await.unwrap();
    q.count_deleted(&plan, before).await.unwrap()
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
            Step::Delete(d) => {
                let before = model.len();
                model.retain(|(h, t), _| !d.matches(h, *t));
                let deleted = run_delete(&engine, &q, &d.sql()).await;
                assert_eq!(
                    deleted,
                    (before - model.len()) as u64,
                    "rows deleted by step {i} ({})",
                    d.sql()
                );
            }
            Step::Flush => {
                engine.flush().await.unwrap();
            }
            Step::Compact => engine.maintain().await.unwrap(),
            Step::Restart | Step::Crash => {
                if matches!(s, Step::Restart) {
                    engine.shutdown().await.unwrap();
                }
                // A crash: the loops stop without flushing (as the process
                // dying would end them), then the engine goes.
                engine.tasks().shutdown().await;
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

/// The named cases of DELETE: wherever the points sit, and whatever
/// happens after, they stay gone; a point written after the delete stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_removes_points_wherever_they_sit_and_they_stay_gone() {
    use Step::*;
    let w = |slot| Write(vec![(0, slot), (1, slot)]);
    let host_a = || {
        Delete(self::Delete {
            hosts: Some((vec![0], false)),
            from: None,
            to: None,
            or_host: None,
        })
    };
    for (name, steps) in [
        ("buffered", vec![w(1), host_a()]),
        ("flushed", vec![w(1), Flush, host_a()]),
        ("compacted", vec![w(1), Flush, Compact, host_a(), Compact]),
        ("then flushed", vec![w(1), host_a(), Flush, Compact]),
        ("then restarted", vec![w(1), Flush, host_a(), Restart]),
        ("then crashed", vec![w(1), Flush, host_a(), Crash]),
        ("crash before its flush", vec![w(1), host_a(), Crash, Flush]),
        (
            "written again after",
            vec![w(1), Flush, host_a(), w(1), Compact, Restart],
        ),
        (
            "everything",
            vec![
                w(1),
                w(2),
                Flush,
                Delete(self::Delete {
                    hosts: None,
                    from: None,
                    to: None,
                    or_host: None,
                }),
                Compact,
                Crash,
            ],
        ),
    ] {
        eprintln!("case: {name}");
        run(steps).await;
    }
}
