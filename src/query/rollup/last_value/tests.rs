//! The cache's answers against the rollup scan's over the same data, and
//! EXPLAIN showing which one answered.

use std::sync::Arc;
use std::time::Duration;

use arrow::util::pretty::pretty_format_batches;
use proptest::prelude::*;

use super::*;
use crate::ingest::{Engine, EngineConfig};
use crate::query::tests::batch;
use crate::query::{QueryConfig, QueryEngine};

const LASTPOINT: &str = "SELECT tags['host'] AS h, metric, last_value(value ORDER BY time) AS v FROM metrics GROUP BY h, metric ORDER BY h, metric";

const HOUR: i64 = 3_600_000_000;

fn config(dir: &std::path::Path, limit: usize) -> EngineConfig {
    let mut cfg = EngineConfig::for_tests(dir);
    cfg.cache.last_value_series = limit;
    cfg.maintenance.compaction_cold_after = Duration::ZERO;
    cfg.maintenance.retention = Some(Duration::from_secs(3 * 86_400));
    cfg
}

fn query(e: &Arc<Engine>) -> QueryEngine {
    QueryEngine::new(e.clone(), QueryConfig::default())
}

async fn text(q: &QueryEngine, ctx: &SessionContext, sql: &str) -> String {
    let plan = q.plan(ctx, sql).await.unwrap();
    let batches = ctx
        .execute_logical_plan(plan)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    pretty_format_batches(&batches).unwrap().to_string()
}

/// The live answer (from the cache when it can) and whether it came from
/// the cache.
async fn live(q: &QueryEngine, sql: &str) -> (String, bool) {
    let ctx = q.session().unwrap();
    let plan = text(q, &ctx, &format!("EXPLAIN {sql}")).await;
    (
        text(q, &ctx, sql).await,
        plan.contains("LastValueCacheExec"),
    )
}

/// The same query over a fixed snapshot, which the cache never answers.
async fn scanned(q: &QueryEngine, sql: &str) -> String {
    let view = q.engine().clone();
    let table = MetricsTable::at(view.clone(), view.snapshot());
    let ctx = q.session_over(Arc::new(table)).unwrap();
    let plan = text(q, &ctx, &format!("EXPLAIN {sql}")).await;
    assert!(!plan.contains("LastValueCacheExec"), "{plan}");
    text(q, &ctx, sql).await
}

fn state(e: &Engine) -> &'static str {
    e.status().last_value_cache.state
}

/// Points at `now - minutes_ago`; each call's values differ from every
/// other call's, so a rewrite at an equal time changes the value and the
/// cache must keep the later write, as the scan does (one value per series
/// and time).
fn points(now: i64, rows: &[(usize, i64)]) -> arrow::array::RecordBatch {
    static CALLS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let owned: Vec<(i64, String, String, f64)> = rows
        .iter()
        .map(|&(s, minutes_ago)| {
            let t = now - minutes_ago * 60_000_000;
            let metric = if s % 2 == 0 { "cpu" } else { "mem" };
            (
                t,
                metric.to_string(),
                format!("h{s}"),
                (call * 1_000_000_000 + s as i64 * 100_000 + minutes_ago) as f64,
            )
        })
        .collect();
    let rows: Vec<(i64, &str, &str, f64)> = owned
        .iter()
        .map(|(t, m, h, v)| (*t, m.as_str(), h.as_str(), *v))
        .collect();
    batch(&rows)
}

#[derive(Debug, Clone)]
enum Op {
    Write(Vec<(usize, i64)>),
    Flush,
    /// Compaction and retention.
    Maintain,
    /// Reopen, after a clean shutdown or not.
    Restart(bool),
    Build,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        // Up to five days back, in minutes: out of order, late (past
        // retention even), and repeats of one instant.
        4 => prop::collection::vec((0usize..6, 0i64..(5 * 24 * 60)), 1..12).prop_map(Op::Write),
        1 => Just(Op::Flush),
        1 => Just(Op::Maintain),
        1 => any::<bool>().prop_map(Op::Restart),
        2 => Just(Op::Build),
    ]
}

/// Reopens after the old engine (and any background build holding it)
/// has let go of the data directory.
async fn reopen(cfg: &EngineConfig) -> Arc<Engine> {
    for _ in 0..200 {
        match Engine::open(cfg.clone()).await {
            Ok(e) => return e,
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    Engine::open(cfg.clone()).await.unwrap()
}

async fn settle(e: &Engine) {
    while state(e) == "building" {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The shapes the cache answers, with a lower time bound between the
/// minutes points are written at (a literal: `now()` would move between
/// the two queries compared).
fn queries(now: i64) -> Vec<String> {
    let since = crate::model::format_micros(now - 2 * 86_400_000_000 - 30_000_000);
    vec![
        LASTPOINT.to_string(),
        "SELECT tags['host'] AS h, last_value(value ORDER BY time) AS v FROM metrics WHERE metric = 'cpu' GROUP BY h ORDER BY h".into(),
        "SELECT metric, tags['host'] AS h, first_value(value ORDER BY time DESC) AS v FROM metrics WHERE tags['host'] = 'h3' GROUP BY metric, h ORDER BY metric".into(),
        // Series whose newest point is older drop out.
        format!("SELECT tags['host'] AS h, metric, last_value(value ORDER BY time) AS v FROM metrics WHERE time > '{since}' GROUP BY h, metric ORDER BY h, metric"),
    ]
}

/// Runs `ops`, comparing after each; returns how often each query was
/// answered from the cache.
async fn run_ops(ops: Vec<Op>) -> Vec<usize> {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1_000);
    let now = crate::runtime::Clock::system().now_micros();
    let mut e = Engine::open(cfg.clone()).await.unwrap();
    let mut answered = vec![0; queries(now).len()];
    for op in ops {
        match op {
            Op::Write(rows) => {
                e.write(&points(now, &rows)).await.unwrap();
            }
            Op::Flush => {
                e.flush().await.unwrap();
            }
            Op::Maintain => e.maintain().await.unwrap(),
            Op::Restart(clean) => {
                settle(&e).await;
                if clean {
                    e.shutdown().await.unwrap();
                }
                drop(e);
                e = reopen(&cfg).await;
            }
            Op::Build => {
                build(&(e.clone() as Arc<dyn ReadView>)).await.unwrap();
            }
        }
        let q = query(&e);
        for (i, sql) in queries(now).iter().enumerate() {
            let sql = sql.as_str();
            // A background build may complete meanwhile (planning starts
            // one), so: complete before means cached, cached means
            // complete after.
            let complete_before = state(&e) == "complete";
            let (got, cached) = live(&q, sql).await;
            assert!(!complete_before || cached, "complete, yet scanned: {sql}");
            assert!(
                !cached || state(&e) == "complete",
                "cached while {}",
                state(&e)
            );
            answered[i] += cached as usize;
            assert_eq!(got, scanned(&q, sql).await, "{sql}");
        }
    }
    settle(&e).await;
    answered
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Over random writes, flushes, compactions, retention and restarts,
    /// every answer from the cache equals the rollup scan's.
    #[test]
    fn cached_answers_equal_the_scan(ops in prop::collection::vec(op(), 1..14)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(run_ops(ops));
    }
}

/// A fixed sequence through every kind of step, so the comparison above is
/// known to have compared cached answers at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_history_is_answered_from_the_cache() {
    use Op::*;
    let ops = vec![
        Write(vec![(0, 10), (1, 20), (2, 6000)]),
        Flush,
        Restart(true),
        Build,
        Write(vec![(0, 5), (0, 50), (3, 1)]),
        Flush,
        Write(vec![(0, 5), (1, 1), (2, 5000)]),
        Maintain,
        Build,
        Write(vec![(4, 0)]),
        Restart(false),
        Build,
    ];
    let answered = run_ops(ops).await;
    assert!(answered.iter().all(|n| *n >= 2), "{answered:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_names_the_cache_once_built() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(config(dir.path(), 100)).await.unwrap();
    let now = crate::runtime::Clock::system().now_micros();
    e.write(&points(now, &[(0, 1), (1, 2)])).await.unwrap();
    let q = query(&e);
    let ctx = q.session().unwrap();
    let explain = format!("EXPLAIN {LASTPOINT}");
    assert_eq!(state(&e), "unbuilt");
    // Planning starts the build in the background (whether this plan
    // already sees it finished is a race the property test covers).
    text(&q, &ctx, &explain).await;
    settle(&e).await;
    assert_eq!(state(&e), "complete");
    let after = text(&q, &ctx, &explain).await;
    assert!(after.contains("LastValueCacheExec: series=2"), "{after}");
    assert!(!after.contains("MetricsScanExec"), "{after}");
    // Shapes it does not answer: buckets, other aggregates, upper bounds.
    for sql in [
        "SELECT time_bucket('1h', time) AS b, metric, last_value(value ORDER BY time) FROM metrics GROUP BY b, metric",
        "SELECT metric, last_value(value ORDER BY time), count(*) FROM metrics GROUP BY metric",
        "SELECT metric, last_value(value ORDER BY time) FROM metrics WHERE time < now() GROUP BY metric",
    ] {
        let plan = text(&q, &ctx, &format!("EXPLAIN {sql}")).await;
        assert!(!plan.contains("LastValueCacheExec"), "{sql}: {plan}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_bound_queries_scan_and_stay_right() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(config(dir.path(), 3)).await.unwrap();
    let now = crate::runtime::Clock::system().now_micros();
    e.write(&points(now, &[(0, 1), (1, 2)])).await.unwrap();
    e.flush().await.unwrap();
    let view: Arc<dyn ReadView> = e.clone();
    assert!(build(&view).await.unwrap());
    let q = query(&e);
    let (got, cached) = live(&q, LASTPOINT).await;
    assert!(cached);
    assert_eq!(got, scanned(&q, LASTPOINT).await);
    // Two new series: four is past the bound of three.
    e.write(&points(now, &[(2, 0), (3, 0), (0, 0)]))
        .await
        .unwrap();
    assert_eq!(state(&e), "over_limit");
    assert_eq!(
        e.status().last_value_cache.series,
        0,
        "the entries are freed"
    );
    let (got, cached) = live(&q, LASTPOINT).await;
    assert!(!cached);
    assert_eq!(got, scanned(&q, LASTPOINT).await);
    assert_eq!(
        got.lines().count(),
        4 + 4,
        "four series, header and borders"
    );
    assert!(!build(&view).await.unwrap(), "no rebuild past the bound");
    // A restart with more series than the bound never completes.
    e.shutdown().await.unwrap();
    drop((q, view, e));
    let e = reopen(&config(dir.path(), 3)).await;
    let view: Arc<dyn ReadView> = e.clone();
    assert!(!build(&view).await.unwrap());
    assert_eq!(state(&e), "over_limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_turns_the_cache_off() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(config(dir.path(), 0)).await.unwrap();
    let now = crate::runtime::Clock::system().now_micros();
    e.write(&points(now, &[(0, 1)])).await.unwrap();
    let view: Arc<dyn ReadView> = e.clone();
    assert!(!build(&view).await.unwrap());
    let q = query(&e);
    let (_, cached) = live(&q, LASTPOINT).await;
    assert!(!cached);
    assert_eq!(state(&e), "off");
}

/// At equal times the cache keeps the later write, whatever value it
/// carries: checked against a model, not the scan (which picks either
/// until the read path deduplicates).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_equal_times_the_later_write_is_cached() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(config(dir.path(), 100)).await.unwrap();
    let now = crate::runtime::Clock::system().now_micros();
    e.write(&batch(&[
        (now, "cpu", "a", 1.0),
        (now - HOUR, "cpu", "b", 1.0),
    ]))
    .await
    .unwrap();
    e.flush().await.unwrap();
    let view: Arc<dyn ReadView> = e.clone();
    assert!(build(&view).await.unwrap());
    e.write(&batch(&[(now, "cpu", "a", 2.0)])).await.unwrap();
    e.write(&batch(&[
        (now - HOUR, "cpu", "b", 3.0),
        (now - 2 * HOUR, "cpu", "b", 9.0),
    ]))
    .await
    .unwrap();
    let q = query(&e);
    let (got, cached) = live(&q, LASTPOINT).await;
    assert!(cached);
    let want = [
        "+---+--------+-----+",
        "| h | metric | v   |",
        "+---+--------+-----+",
        "| a | cpu    | 2.0 |",
        "| b | cpu    | 3.0 |",
        "+---+--------+-----+",
    ]
    .join("\n");
    assert_eq!(got, want);
}
