//! Gap filling end to end over an in-memory view: seeded random points,
//! random missing buckets and ranges, against a naive computation from
//! the same points written here.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType};
use arrow::util::pretty::pretty_format_batches;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::ingest::MemoryView;
use crate::query::tests::batch;
use crate::query::{QueryConfig, QueryEngine};

const T0: i64 = 1_705_276_800_000_000; // 2024-01-15T00:00:00Z
const SEC: i64 = 1_000_000;
const MIN: i64 = 60 * SEC;

fn engine() -> (Arc<MemoryView>, QueryEngine) {
    let view = MemoryView::new();
    let q = QueryEngine::new(view.clone(), QueryConfig::default());
    (view, q)
}

async fn collect(q: &QueryEngine, sql: &str) -> Vec<RecordBatch> {
    q.sql(sql).await.unwrap().collect().await.unwrap()
}

async fn error(q: &QueryEngine, sql: &str) -> String {
    let df = match q.sql(sql).await {
        Ok(df) => df,
        Err(e) => return e.to_string(),
    };
    match df.collect().await {
        Ok(b) => panic!(
            "expected an error from {sql}, got\n{}",
            pretty_format_batches(&b).unwrap()
        ),
        Err(e) => crate::query::QueryError::from_datafusion(e).to_string(),
    }
}

fn iso(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// One result row: bucket, host, avg, count, locf, interpolate.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    t: i64,
    host: String,
    avg: Option<f64>,
    n: Option<i64>,
    locf: Option<f64>,
    interp: Option<f64>,
}

fn rows(batches: &[RecordBatch]) -> Vec<Row> {
    let mut out = vec![];
    for b in batches {
        let t = cast(
            b.column(0),
            &DataType::Timestamp(TimeUnit::Microsecond, None),
        )
        .unwrap();
        let t = t.as_primitive::<TimestampMicrosecondType>();
        let host = cast(b.column(1), &DataType::Utf8).unwrap();
        let host = host.as_string::<i32>();
        let f = |c: usize| b.column(c).as_primitive::<Float64Type>().clone();
        let (avg, locf, interp) = (f(2), f(4), f(5));
        let n = b.column(3).as_primitive::<Int64Type>();
        let opt = |a: &arrow::array::Float64Array, i: usize| a.is_valid(i).then(|| a.value(i));
        for i in 0..b.num_rows() {
            out.push(Row {
                t: t.value(i),
                host: host.value(i).to_string(),
                avg: opt(&avg, i),
                n: n.is_valid(i).then(|| n.value(i)),
                locf: opt(&locf, i),
                interp: opt(&interp, i),
            });
        }
    }
    out
}

/// A random query shape: width, range, and whether the range comes from
/// the arguments (with a wider WHERE) or from WHERE alone.
struct Case {
    width: i64,
    start: i64,
    finish: i64,
    in_args: bool,
    prev: Option<f64>,
}

/// What the query should return, computed point by point.
fn naive(points: &[(i64, String, f64)], c: &Case, where_range: (i64, i64)) -> Vec<Row> {
    let w = c.width;
    let first = c.start.div_euclid(w) * w;
    let buckets: Vec<i64> = (0..)
        .map(|k| first + k * w)
        .take_while(|&b| b < c.finish)
        .collect();
    let mut cells: BTreeMap<(String, i64), Vec<f64>> = BTreeMap::new();
    for (t, h, v) in points {
        let b = t.div_euclid(w) * w;
        if (where_range.0..where_range.1).contains(t) && b >= first && b < c.finish {
            cells.entry((h.clone(), b)).or_default().push(*v);
        }
    }
    let hosts: BTreeSet<String> = cells.keys().map(|(h, _)| h.clone()).collect();
    let avg = |h: &str, b: i64| {
        cells
            .get(&(h.to_string(), b))
            .map(|v| v.iter().sum::<f64>() / v.len() as f64)
    };
    let mut out = vec![];
    for h in &hosts {
        for &b in &buckets {
            let before = buckets
                .iter()
                .rev()
                .filter(|&&x| x <= b)
                .find_map(|&x| avg(h, x).map(|v| (x, v)));
            let after = buckets
                .iter()
                .filter(|&&x| x >= b)
                .find_map(|&x| avg(h, x).map(|v| (x, v)));
            let interp = match (before, after) {
                (Some((x0, v0)), Some((x1, _))) if x0 == x1 => Some(v0),
                (Some((x0, v0)), Some((x1, v1))) => {
                    Some(v0 + (v1 - v0) * (b - x0) as f64 / (x1 - x0) as f64)
                }
                _ => None,
            };
            out.push(Row {
                t: b,
                host: h.clone(),
                avg: avg(h, b),
                n: cells.get(&(h.clone(), b)).map(|v| v.len() as i64),
                locf: before.map(|(_, v)| v).or(c.prev),
                interp,
            });
        }
    }
    out
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(1.0),
        (None, None) => true,
        _ => false,
    }
}

fn assert_same(got: &[Row], want: &[Row], sql: &str) {
    assert_eq!(
        got.len(),
        want.len(),
        "row count of {sql}\ngot {got:#?}\nwant {want:#?}"
    );
    for (g, w) in got.iter().zip(want) {
        let same = g.t == w.t
            && g.host == w.host
            && g.n == w.n
            && close(g.avg, w.avg)
            && close(g.locf, w.locf)
            && close(g.interp, w.interp);
        assert!(same, "{sql}\ngot  {g:?}\nwant {w:?}");
    }
}

async fn random_case(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (view, q) = engine();
    let hosts: Vec<String> = (0..rng.random_range(1..=4))
        .map(|i| format!("h{i}"))
        .collect();
    let mut points: Vec<(i64, String, f64)> = vec![];
    for h in &hosts {
        // Each host has a random subset of 40 minutes, some with several points.
        let density = rng.random_range(0.05..0.8);
        for m in 0..40 {
            if rng.random_bool(density) {
                for _ in 0..rng.random_range(1..=3) {
                    let t = T0 + m * MIN + rng.random_range(0..MIN);
                    points.push((t, h.clone(), rng.random_range(-50..50) as f64 / 4.0));
                }
            }
        }
    }
    if !points.is_empty() {
        let rows: Vec<(i64, &str, &str, f64)> = points
            .iter()
            .map(|(t, h, v)| (*t, "cpu", h.as_str(), *v))
            .collect();
        view.write(&batch(&rows)).await.unwrap();
    }
    let width = [MIN, 2 * MIN, 90 * SEC, 5 * MIN][rng.random_range(0..4)];
    // Unaligned bounds, sometimes wider than the data.
    let start = T0 + rng.random_range(-5 * MIN..20 * MIN) + rng.random_range(0..SEC);
    let finish = start + rng.random_range(1..30) * MIN + rng.random_range(0..SEC);
    let case = Case {
        width,
        start,
        finish,
        in_args: rng.random_bool(0.5),
        prev: rng
            .random_bool(0.5)
            .then(|| rng.random_range(-10..10) as f64),
    };
    let width_sql = if rng.random_bool(0.5) {
        format!("'{}s'", width / SEC)
    } else {
        format!("INTERVAL '{} seconds'", width / SEC)
    };
    let (gapfill, where_range) = if case.in_args {
        // WHERE wider than the range: points outside [start, finish) must go.
        let wr = (start - 7 * MIN, finish + 7 * MIN);
        (
            format!(
                "time_bucket_gapfill({width_sql}, time, '{}', '{}')",
                iso(start),
                iso(finish)
            ),
            wr,
        )
    } else {
        (
            format!("time_bucket_gapfill({width_sql}, time)"),
            (start, finish),
        )
    };
    let locf = match case.prev {
        Some(p) => format!("locf(avg(value), {p:.1})"),
        None => "locf(avg(value))".to_string(),
    };
    let sql = format!(
        "SELECT {gapfill} AS t, tags['host'] AS host, avg(value) AS v, count(*) AS n, {locf} AS l, interpolate(avg(value)) AS i \
         FROM metrics WHERE metric = 'cpu' AND time >= '{}' AND time < '{}' GROUP BY 1, 2 ORDER BY 2, 1",
        iso(where_range.0),
        iso(where_range.1)
    );
    let got = rows(&collect(&q, &sql).await);
    assert_same(&got, &naive(&points, &case, where_range), &sql);
}

#[tokio::test]
async fn random_groups_gaps_and_ranges_match_a_naive_fill() {
    for seed in 0..40 {
        random_case(seed).await;
    }
}

fn points(rows: &[(i64, &str, f64)]) -> RecordBatch {
    let rows: Vec<(i64, &str, &str, f64)> =
        rows.iter().map(|(t, h, v)| (*t, "cpu", *h, *v)).collect();
    batch(&rows)
}

#[tokio::test]
async fn single_observation_and_descending_order() {
    let (view, q) = engine();
    view.write(&points(&[(T0 + 2 * MIN + 5 * SEC, "a", 7.0)]))
        .await
        .unwrap();
    let sql = "SELECT time_bucket_gapfill('1m', time) AS t, tags['host'] AS host, avg(value) AS v, count(*) AS n, locf(avg(value)) AS l, interpolate(avg(value)) AS i \
               FROM metrics WHERE time >= '2024-01-15T00:00:00Z' AND time <= '2024-01-15T00:04:00Z' GROUP BY 1, 2 ORDER BY 1 DESC";
    let got = rows(&collect(&q, sql).await);
    let ts: Vec<i64> = got.iter().map(|r| r.t).collect();
    // `time <= 00:04` includes the 00:04 bucket.
    assert_eq!(ts, (0..5).rev().map(|k| T0 + k * MIN).collect::<Vec<_>>());
    let l: Vec<Option<f64>> = got.iter().map(|r| r.locf).collect();
    assert_eq!(l, [Some(7.0), Some(7.0), Some(7.0), None, None]);
    let i: Vec<Option<f64>> = got.iter().map(|r| r.interp).collect();
    assert_eq!(i, [None, None, Some(7.0), None, None]);
    let n: Vec<Option<i64>> = got.iter().map(|r| r.n).collect();
    assert_eq!(n, [None, None, Some(1), None, None]);
}

#[tokio::test]
async fn without_other_keys_an_empty_range_still_has_its_buckets() {
    let (_view, q) = engine();
    // No data at all, bounds from now(): one group, every bucket NULL.
    let sql = "SELECT time_bucket_gapfill('1m', time) AS t, count(*) AS n, locf(avg(value), 3) AS l FROM metrics WHERE time >= now() - '10m' AND time < now() GROUP BY 1 ORDER BY 1";
    let b = collect(&q, sql).await;
    let n: usize = b.iter().map(|b| b.num_rows()).sum();
    assert!(
        n == 10 || n == 11,
        "10 minutes in 1m buckets, aligned or not: {n}"
    );
    for b in &b {
        assert_eq!(b.column(1).null_count(), b.num_rows());
        let l = b.column(2).as_primitive::<Float64Type>();
        assert!(
            l.iter().all(|v| v == Some(3.0)),
            "prev before any observation"
        );
    }
    // With a group key and no data there are no groups, so no rows.
    let sql = "SELECT time_bucket_gapfill('1m', time) AS t, tags['host'] AS h, count(*) AS n FROM metrics WHERE time >= now() - '10m' AND time < now() GROUP BY 1, 2";
    assert!(collect(&q, sql).await.iter().all(|b| b.num_rows() == 0));
}

#[tokio::test]
async fn explain_shows_the_gapfill_node_and_operator() {
    let (view, q) = engine();
    view.write(&points(&[(T0, "a", 1.0)])).await.unwrap();
    let sql = "EXPLAIN SELECT time_bucket_gapfill('1m', time), locf(avg(value)) FROM metrics WHERE time >= '2024-01-15T00:00:00Z' AND time < '2024-01-15T01:00:00Z' GROUP BY 1";
    let got = pretty_format_batches(&collect(&q, sql).await)
        .unwrap()
        .to_string();
    assert!(got.contains("GapFill: bucket="), "{got}");
    assert!(got.contains("GapFillExec: bucket="), "{got}");
    assert!(got.contains("buckets=60"), "{got}");
    // The aggregate under it is a plain time_bucket one, so the series rollup applies.
    assert!(got.contains("rollup=series,bucket(60000000us)"), "{got}");
}

#[tokio::test]
async fn column_names_follow_the_functions() {
    let (view, q) = engine();
    view.write(&points(&[(T0, "a", 1.0)])).await.unwrap();
    let sql = "SELECT time_bucket_gapfill('1m', time), locf(avg(value)), interpolate(avg(value)), avg(value) FROM metrics WHERE time >= '2024-01-15T00:00:00Z' AND time < '2024-01-15T00:02:00Z' GROUP BY 1";
    let b = collect(&q, sql).await;
    let names: Vec<String> = b[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["time_bucket_gapfill", "locf", "interpolate", "avg"]);
}

#[tokio::test]
async fn mistakes_are_refused_naming_the_problem() {
    let (view, q) = engine();
    view.write(&points(&[(T0, "a", 1.0)])).await.unwrap();
    let cases = [
        (
            "SELECT time_bucket_gapfill('1m', time), avg(value) FROM metrics GROUP BY 1",
            "time_bucket_gapfill needs a start and a finish",
        ),
        (
            "SELECT time_bucket_gapfill('1m', time), avg(value) FROM metrics WHERE time >= '2024-01-15T00:00:00Z' GROUP BY 1",
            "time_bucket_gapfill needs a finish",
        ),
        (
            "SELECT time_bucket_gapfill('1m', time), avg(value) FROM metrics WHERE time < '2024-01-15T00:00:00Z' GROUP BY 1",
            "time_bucket_gapfill needs a start",
        ),
        (
            "SELECT time_bucket_gapfill('1s', time), avg(value) FROM metrics WHERE time >= '2024-01-01T00:00:00Z' AND time < '2024-02-01T00:00:00Z' GROUP BY 1",
            "more than the limit of 1000000 per query",
        ),
        (
            "SELECT locf(avg(value)) FROM metrics",
            "locf(...) applies only to an aggregate in the SELECT list of a query grouped by time_bucket_gapfill",
        ),
        (
            "SELECT time_bucket_gapfill('1m', time) FROM metrics",
            "time_bucket_gapfill must be a GROUP BY key",
        ),
        (
            "SELECT time_bucket_gapfill('1m', time, '2024-01-15T00:00:00Z', '2024-01-15T01:00:00Z') AS t, tags['host'] AS h, locf(tags['host']) FROM metrics GROUP BY 1, 2",
            "locf's argument must be an aggregate",
        ),
        (
            "SELECT time_bucket_gapfill('1 month', time, '2024-01-15T00:00:00Z', '2024-01-15T01:00:00Z'), avg(value) FROM metrics GROUP BY 1",
            "invalid width",
        ),
    ];
    for (sql, want) in cases {
        let got = error(&q, sql).await;
        assert!(
            got.contains(want),
            "{sql}\nwant an error with {want:?}, got {got:?}"
        );
    }
}

#[tokio::test]
async fn information_schema_lists_the_functions_like_time_bucket() {
    let (_view, q) = engine();
    let sql = "SELECT DISTINCT routine_name FROM information_schema.routines WHERE routine_name IN ('time_bucket', 'time_bucket_gapfill', 'locf', 'interpolate') ORDER BY 1";
    let b = collect(&q, sql).await;
    let names: Vec<String> = b
        .iter()
        .flat_map(|b| {
            let c = cast(b.column(0), &DataType::Utf8).unwrap();
            (0..c.len())
                .map(|i| c.as_string::<i32>().value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        names,
        ["interpolate", "locf", "time_bucket", "time_bucket_gapfill"]
    );
}

#[tokio::test]
async fn interpolated_counts_are_rounded_and_markers_nest_in_expressions() {
    let (view, q) = engine();
    // Counts 1 at 00:00 and 4 at 00:03: 2.0 and 3.0 between; then 2 × locf.
    let mut rows = vec![(T0, "a", 1.0)];
    rows.extend((0..4).map(|k| (T0 + 3 * MIN + k * SEC, "a", 5.0)));
    view.write(&points(&rows)).await.unwrap();
    let sql = "SELECT time_bucket_gapfill('1m', time) AS t, interpolate(count(*)) AS i, locf(avg(value)) * 2 AS l2 FROM metrics WHERE time >= '2024-01-15T00:00:00Z' AND time < '2024-01-15T00:05:00Z' GROUP BY 1 ORDER BY 1";
    let b = collect(&q, sql).await;
    let i: Vec<Option<i64>> = b
        .iter()
        .flat_map(|b| {
            b.column(1)
                .as_primitive::<Int64Type>()
                .iter()
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(i, [Some(1), Some(2), Some(3), Some(4), None]);
    let l2: Vec<Option<f64>> = b
        .iter()
        .flat_map(|b| {
            b.column(2)
                .as_primitive::<Float64Type>()
                .iter()
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        l2,
        [Some(2.0), Some(2.0), Some(2.0), Some(10.0), Some(10.0)]
    );
}

#[tokio::test]
async fn filled_rows_count_against_the_query_memory_limit() {
    let view = MemoryView::new();
    let config = QueryConfig {
        memory_limit: 1 << 20,
        ..QueryConfig::default()
    };
    let q = QueryEngine::new(view.clone(), config);
    let hosts: Vec<String> = (0..50).map(|i| format!("host-{i}")).collect();
    let rows: Vec<(i64, &str, f64)> = hosts.iter().map(|h| (T0, h.as_str(), 1.0)).collect();
    view.write(&points(&rows)).await.unwrap();
    // 50 groups × 2,880 buckets: 144,000 rows, several MiB.
    let sql = "SELECT time_bucket_gapfill('30s', time) AS t, tags['host'] AS h, avg(value) FROM metrics WHERE time >= '2024-01-15T00:00:00Z' AND time < '2024-01-16T00:00:00Z' GROUP BY 1, 2";
    let got = error(&q, sql).await;
    assert!(got.contains("memory limit"), "{got}");
    // The same query within the default limit answers every row.
    let (view, q) = engine();
    view.write(&points(&rows)).await.unwrap();
    let n: usize = collect(&q, sql).await.iter().map(|b| b.num_rows()).sum();
    assert_eq!(n, 50 * 2880);
}
