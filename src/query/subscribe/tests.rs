use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::util::display::array_value_to_string;
use proptest::prelude::*;

use super::*;
use crate::ingest::{MemoryView, ReadView};
use crate::query::QueryConfig;
use crate::runtime::{Clock, Tasks};

pub(super) const T0: i64 = 1_705_276_800_000_000; // 2024-01-15T00:00:00Z
const GROUPED: &str = "SELECT time_bucket('10s', time) AS bucket, tags['host'] AS host, sum(value), count(*), \
                       avg(value), min(value), max(value) FROM metrics WHERE metric = 'cpu' GROUP BY 1, 2";

/// `(time, host, value)` rows of metric `cpu`.
pub(super) fn batch(rows: &[(i64, &str, f64)]) -> RecordBatch {
    let rows: Vec<(i64, &str, &str, f64)> =
        rows.iter().map(|(t, h, v)| (*t, "cpu", *h, *v)).collect();
    crate::query::tests::batch(&rows)
}

/// A subscription over an in-memory view: no data directory, no log.
async fn setup() -> (Arc<MemoryView>, Arc<QueryEngine>, Arc<Subscriptions>) {
    let view = MemoryView::new();
    let q = Arc::new(QueryEngine::new(view.clone(), QueryConfig::default()));
    (view, q, subscriptions(SubscribeConfig::default()))
}

pub(super) fn subscriptions(config: SubscribeConfig) -> Arc<Subscriptions> {
    Subscriptions::new(config, Tasks::new())
}

fn request(sql: &str) -> SubscribeRequest {
    SubscribeRequest {
        emit_interval: Duration::from_millis(10),
        ..SubscribeRequest::new(sql)
    }
}

pub(super) fn rows(b: &RecordBatch) -> Vec<Vec<String>> {
    (0..b.num_rows())
        .map(|r| {
            b.columns()
                .iter()
                .map(|c| array_value_to_string(c, r).unwrap())
                .collect()
        })
        .collect()
}

/// Applies a subscription's messages the way a client would: a group's row
/// replaces the previous one with the same key (the first `keys` columns).
/// Returns once a message covers `until`.
async fn apply_until(
    rx: &mut Updates,
    keys: usize,
    view: &mut BTreeMap<Vec<String>, Vec<String>>,
    until: Offset,
) {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a message within 5 s")
            .expect("subscription open")
            .expect("no error");
        if let Some(b) = &m.batch {
            for row in rows(b) {
                view.insert(row[..keys].to_vec(), row);
            }
        }
        if m.offset >= until && !m.more {
            return;
        }
    }
}

async fn select(q: &QueryEngine, sql: &str) -> BTreeMap<Vec<String>, Vec<String>> {
    let batches = q.sql(sql).await.unwrap().collect().await.unwrap();
    batches
        .iter()
        .flat_map(rows)
        .map(|r| (r[..2].to_vec(), r))
        .collect()
}

/// Generated `(second, host index, quarters)` as `batch` rows. Quarter
/// values keep every sum exact, so AVG compares exactly.
fn to_rows(v: &[(i64, usize, u32)]) -> Vec<(i64, &'static str, f64)> {
    const HOSTS: [&str; 3] = ["a", "b", "c"];
    v.iter()
        .map(|(s, h, x)| (T0 + s * 1_000_000, HOSTS[*h], *x as f64 / 4.0))
        .collect()
}

/// Drops every point whose (time, host) an earlier one has (in any batch),
/// keeping the batches (an emptied one stays, empty).
fn written_once(batches: &[Vec<(i64, usize, u32)>]) -> Vec<Vec<(i64, usize, u32)>> {
    let mut seen = std::collections::HashSet::new();
    batches
        .iter()
        .map(|b| {
            b.iter()
                .filter(|p| seen.insert((p.0, p.1)))
                .copied()
                .collect()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Over random ingest (late points into old buckets and rewrites of
    /// existing (series, time) included, a flush in the middle), the state a
    /// client builds from the snapshot and updates equals the SELECT at the
    /// watermark.
    #[test]
    fn state_equals_the_select_at_the_watermark(
        before in prop::collection::vec((0i64..60, 0usize..3, 0u32..40), 0..20),
        batches in prop::collection::vec(prop::collection::vec((0i64..60, 0usize..3, 0u32..40), 1..15), 1..8),
        flush_at in 0usize..8,
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let (engine, q, subs) = setup().await;
            if !before.is_empty() {
                engine.write(&batch(&to_rows(&before))).await.unwrap();
            }
            let (_, mut rx) = subscribe(q.clone(), &subs, request(GROUPED)).await.unwrap();
            let mut view = BTreeMap::new();
            apply_until(&mut rx, 2, &mut view, engine.snapshot().applied).await;
            for (i, b) in batches.iter().enumerate() {
                if !b.is_empty() {
                    engine.write(&batch(&to_rows(b))).await.unwrap();
                }
                if i == flush_at {
                    engine.flush().await.unwrap();
                }
            }
            apply_until(&mut rx, 2, &mut view, engine.snapshot().applied).await;
            prop_assert_eq!(view, select(&q, GROUPED).await);
            Ok(())
        })?;
    }
}

/// Rows of a query as a sorted multiset, for comparing answers whose order
/// is not defined.
async fn select_rows(q: &QueryEngine, sql: &str) -> Vec<Vec<String>> {
    let batches = q.sql(sql).await.unwrap().collect().await.unwrap();
    let mut all: Vec<Vec<String>> = batches.iter().flat_map(rows).collect();
    all.sort();
    all
}

const ROWS: &str = "SELECT time, tags['host'] AS host, value FROM metrics WHERE value > 3";
const TOTALS: &str = "SELECT count(*), sum(value), min(value), max(value), avg(value) FROM metrics";

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Subscriptions that start while a writer is running (so batches land
    /// between the fan-out subscription and the snapshot) still end equal
    /// to the SELECT: a plain SELECT's snapshot plus new rows, and a
    /// whole-table aggregate without GROUP BY. Every (series, time) is
    /// written once: a row subscription streams a rewrite as a new row,
    /// and one filtering on `value` cannot take back a row whose new value
    /// no longer matches (docs/SQL.md, `SUBSCRIBE TO`).
    #[test]
    fn rows_and_totals_equal_the_select_under_concurrent_writes(
        batches in prop::collection::vec(prop::collection::vec((0i64..60, 0usize..3, 0u32..40), 1..15), 1..10),
        flush_at in 0usize..10,
        start_after in 0usize..10,
    ) {
        let batches = written_once(&batches);
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let (engine, q, subs) = setup().await;
            let (early, late) = batches.split_at(start_after.min(batches.len()));
            for b in early.iter().filter(|b| !b.is_empty()) {
                engine.write(&batch(&to_rows(b))).await.unwrap();
            }
            let writer = {
                let engine = engine.clone();
                let late: Vec<_> = late.iter().map(|b| to_rows(b)).collect();
                tokio::spawn(async move {
                    for (i, b) in late.iter().enumerate() {
                        if !b.is_empty() {
                            engine.write(&batch(b)).await.unwrap();
                        }
                        if i == flush_at {
                            engine.flush().await.unwrap();
                        }
                        tokio::task::yield_now().await;
                    }
                })
            };
            let (_, mut rows_rx) = subscribe(q.clone(), &subs, request(ROWS)).await.unwrap();
            let (_, mut totals_rx) = subscribe(q.clone(), &subs, request(TOTALS)).await.unwrap();
            writer.await.unwrap();
            let until = engine.snapshot().applied;

            let mut got_rows = BTreeMap::new();
            let mut n = 0usize;
            loop {
                let m = tokio::time::timeout(Duration::from_secs(5), rows_rx.recv())
                    .await.expect("a message within 5 s").expect("open").expect("no error");
                for row in m.batch.as_ref().map(rows).unwrap_or_default() {
                    // Keyed by arrival so duplicates stay distinct.
                    got_rows.insert((row.clone(), n), ());
                    n += 1;
                }
                if m.offset >= until && !m.more { break; }
            }
            let mut got: Vec<Vec<String>> = got_rows.into_keys().map(|(r, _)| r).collect();
            got.sort();
            prop_assert_eq!(got, select_rows(&q, ROWS).await);

            let mut totals = BTreeMap::new();
            apply_until(&mut totals_rx, 0, &mut totals, until).await;
            let want = select_rows(&q, TOTALS).await;
            prop_assert_eq!(totals.into_values().collect::<Vec<_>>(), want);
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn aggregates_it_cannot_maintain_are_refused_from_the_plan() {
    let (_engine, q, subs) = setup().await;
    // Not in the syntactic list of aggregates, and no GROUP BY: only the
    // plan shows these aggregate.
    for sql in [
        "SELECT approx_median(value) FROM metrics",
        "SELECT var(value) FROM metrics",
    ] {
        let err = subscribe(q.clone(), &subs, request(sql))
            .await
            .err()
            .unwrap_or_else(|| panic!("{sql} was accepted"));
        assert!(
            err.to_string()
                .contains("aggregates with a function other than"),
            "{sql}: {err}"
        );
    }
    assert_eq!(subs.active(), 0);
}

/// The cadence, in paused time: with a 5 s emit interval, progress still
/// comes every second and never covers the pending write; the update comes
/// at the emit interval.
#[tokio::test(start_paused = true)]
async fn progress_comes_every_second_even_with_a_long_emit_interval() {
    let clock = Clock::simulated(T0);
    let view = MemoryView::with_clock(clock.clone());
    let q = Arc::new(QueryEngine::new(view.clone(), QueryConfig::default()));
    let subs = subscriptions(SubscribeConfig::default());
    let req = SubscribeRequest {
        emit_interval: Duration::from_secs(5),
        ..SubscribeRequest::new("SELECT count(*) FROM metrics")
    };
    let (_, mut rx) = subscribe(q, &subs, req).await.unwrap();
    let snap = rx.recv().await.unwrap().unwrap();
    assert_eq!(snap.kind, Kind::Snapshot);
    let subscribed = clock.instant();
    let before = view.snapshot().applied;
    view.write(&batch(&[(T0, "a", 1.0)])).await.unwrap();
    let mut progress = Vec::new();
    let update_at = loop {
        let m = rx.recv().await.unwrap().unwrap();
        let at = clock.since(subscribed);
        match m.kind {
            Kind::Progress => {
                assert_eq!(
                    m.offset, before,
                    "progress does not cover the pending write"
                );
                progress.push(at);
            }
            Kind::Update => {
                assert_eq!(rows(m.batch.as_ref().unwrap()), [["1"]]);
                assert!(m.offset > before);
                break at;
            }
            Kind::Snapshot => panic!("a second snapshot"),
        }
    };
    assert_eq!(
        progress,
        (1..=4).map(Duration::from_secs).collect::<Vec<_>>(),
        "progress every second until the update"
    );
    assert_eq!(
        update_at,
        Duration::from_secs(5),
        "the update at the emit interval"
    );
    // Idle again: progress every second, covering the write now.
    for second in 6..9 {
        let m = rx.recv().await.unwrap().unwrap();
        assert_eq!(
            (m.kind, clock.since(subscribed)),
            (Kind::Progress, Duration::from_secs(second))
        );
        assert!(m.offset > before);
    }
}

#[tokio::test]
async fn plain_selects_stream_new_matching_rows() {
    let (engine, q, subs) = setup().await;
    engine.write(&batch(&[(T0, "a", 1.0)])).await.unwrap();
    let req = SubscribeRequest {
        snapshot: false,
        ..request("SELECT tags['host'] AS host, value FROM metrics WHERE value > 1")
    };
    let (schema, mut rx) = subscribe(q, &subs, req).await.unwrap();
    assert_eq!(schema.fields().len(), 2);
    let first = rx.recv().await.unwrap().unwrap();
    assert_eq!((first.kind, first.batch.is_none()), (Kind::Progress, true));
    engine
        .write(&batch(&[(T0 + 1, "b", 0.5), (T0 + 2, "c", 2.5)]))
        .await
        .unwrap();
    let m = rx.recv().await.unwrap().unwrap();
    assert_eq!(m.kind, Kind::Update);
    assert_eq!(rows(m.batch.as_ref().unwrap()), [["c", "2.5"]]);
    assert_eq!(m.offset, Offset(2));
    assert!(m.metadata().contains(r#""kind":"update""#));
}

#[tokio::test(start_paused = true)]
async fn idle_subscriptions_report_progress() {
    let clock = Clock::simulated(T0);
    let view = MemoryView::with_clock(clock.clone());
    let q = Arc::new(QueryEngine::new(view, QueryConfig::default()));
    let subs = subscriptions(SubscribeConfig::default());
    let (_, mut rx) = subscribe(q, &subs, request("SELECT count(*) FROM metrics"))
        .await
        .unwrap();
    let snap = rx.recv().await.unwrap().unwrap();
    assert_eq!(
        (snap.kind, rows(snap.batch.as_ref().unwrap())),
        (Kind::Snapshot, vec![vec!["0".to_string()]])
    );
    let started = clock.instant();
    for n in 1..=3 {
        let p = rx.recv().await.unwrap().unwrap();
        assert_eq!(p.kind, Kind::Progress);
        assert_eq!(clock.since(started), PROGRESS_EVERY * n);
    }
}

#[tokio::test]
async fn ended_subscriptions_free_their_task_and_slot() {
    let (engine, q, _) = setup().await;
    let subs = subscriptions(SubscribeConfig {
        max_subscriptions: 2,
        ..SubscribeConfig::default()
    });
    let (_, rx1) = subscribe(q.clone(), &subs, request("SELECT count(*) FROM metrics"))
        .await
        .unwrap();
    let (_, rx2) = subscribe(q.clone(), &subs, request("SELECT value FROM metrics"))
        .await
        .unwrap();
    assert_eq!(subs.active(), 2);
    let err = subscribe(q.clone(), &subs, request("SELECT value FROM metrics"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("too many subscriptions"), "{err}");
    assert_eq!(subs.active(), 2);
    assert_eq!(engine.subscribers(), 2);
    drop((rx1, rx2));
    for _ in 0..100 {
        if subs.active() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        subs.active(),
        0,
        "cancelled subscriptions must end their tasks"
    );
    // The task's state went with it, and so did its place in the fan-out
    // (which would otherwise keep batches queued for it).
    assert_eq!(engine.subscribers(), 0);
    // Bad SQL is an error at subscribe time and takes no slot.
    let err = subscribe(q, &subs, request("SELECT nope FROM metrics"))
        .await
        .unwrap_err();
    assert!(matches!(err, QueryError::Invalid(_)), "{err}");
    assert_eq!(subs.active(), 0);
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_dropped() {
    let (engine, q, _) = setup().await;
    let subs = subscriptions(SubscribeConfig {
        send_timeout: Duration::from_millis(200),
        ..SubscribeConfig::default()
    });
    let (_, mut rx) = subscribe(q, &subs, request("SELECT value FROM metrics"))
        .await
        .unwrap();
    // Updates pile up: the outbox fills, the send times out, the
    // subscription ends; ingest never waits for it.
    for i in 0..(OUTBOX as i64 + 8) {
        engine.write(&batch(&[(T0 + i, "a", 1.0)])).await.unwrap();
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(subs.active(), 0);
    let mut received = 0;
    let mut ended_with = None;
    while let Some(m) = rx.recv().await {
        match m {
            Ok(_) => received += 1,
            Err(e) => ended_with = Some(e),
        }
    }
    assert!(
        received <= OUTBOX + 1,
        "at most the outbox was buffered ({received})"
    );
    // The client is told why, after what was queued.
    let err = ended_with.expect("a dropped subscriber gets an error");
    assert!(
        matches!(&err, QueryError::Limit(m) if m.contains("did not take an update")),
        "{err}"
    );
}

#[derive(Debug, Clone)]
enum Op {
    Write(Vec<(i64, usize, u32)>),
    /// Host index, first second deleted.
    Delete(usize, i64),
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => prop::collection::vec((0i64..60, 0usize..3, 0u32..40), 1..10).prop_map(Op::Write),
        1 => (0usize..3, 0i64..60).prop_map(|(h, s)| Op::Delete(h, s)),
        1 => Just(Op::Flush),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]

    /// Over the real engine: writes that rewrite and arrive late, DELETEs
    /// by host and time, flushes. A client applying the updates (a group
    /// sent with count 0 is gone) holds what the SELECT says.
    #[test]
    fn aggregates_follow_rewrites_and_deletes(ops in prop::collection::vec(op(), 1..10)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let engine = crate::ingest::Engine::open(crate::ingest::EngineConfig::for_tests(dir.path()))
                .await
                .unwrap();
            let q = Arc::new(QueryEngine::new(engine.clone(), QueryConfig::default()));
            let subs = subscriptions(SubscribeConfig::default());
            let (_, mut rx) = subscribe(q.clone(), &subs, request(GROUPED)).await.unwrap();
            let mut view = BTreeMap::new();
            apply_until(&mut rx, 2, &mut view, engine.snapshot().applied).await;
            for op in &ops {
                match op {
                    Op::Write(b) => {
                        engine.write(&batch(&to_rows(b))).await.unwrap();
                    }
                    Op::Delete(h, s) => {
                        let sql = format!(
                            "DELETE FROM metrics WHERE tags['host'] = '{}' AND time >= '{}'",
                            ["a", "b", "c"][*h],
                            crate::model::format_micros(T0 + s * 1_000_000)
                        );
                        let plan = q.plan_delete(&sql, None).await.unwrap();
                        engine.delete(plan.predicate).await.unwrap();
                    }
                    Op::Flush => {
                        engine.flush().await.unwrap();
                    }
                }
            }
            apply_until(&mut rx, 2, &mut view, engine.snapshot().applied).await;
            view.retain(|_, row| row[3] != "0");
            prop_assert_eq!(view, select(&q, GROUPED).await);
            engine.shutdown().await.unwrap();
            Ok(())
        })?;
    }
}
