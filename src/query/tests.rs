use std::sync::Arc;

use arrow::array::{Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::util::pretty::pretty_format_batches;

use super::*;
use crate::ingest::{MemoryView, ReadView};

const T0: i64 = 1_705_276_800_000_000; // 2024-01-15T00:00:00Z

pub(crate) fn batch(rows: &[(i64, &str, &str, f64)]) -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("time", crate::model::time_type(), false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("host", DataType::Utf8, true),
        Field::new("value", DataType::Float64, false),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(
                TimestampMicrosecondArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.2).collect::<Vec<_>>(),
            )),
            Arc::new(Float64Array::from(
                rows.iter().map(|r| r.3).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap()
}

/// A query engine over an in-memory view: no data directory, no log.
/// The temporary directory is for tests that write files.
async fn setup() -> (tempfile::TempDir, Arc<MemoryView>, QueryEngine) {
    let dir = tempfile::tempdir().unwrap();
    let view = MemoryView::new();
    let q = QueryEngine::new(view.clone(), QueryConfig::default());
    (dir, view, q)
}

async fn run(q: &QueryEngine, sql: &str) -> String {
    let batches = q.sql(sql).await.unwrap().collect().await.unwrap();
    pretty_format_batches(&batches).unwrap().to_string()
}

fn sample() -> RecordBatch {
    batch(&[
        (T0, "cpu", "a", 1.0),
        (T0 + 1_000_000, "cpu", "b", 2.0),
        (T0 + 61_000_000, "cpu", "a", 3.0),
        (T0 + 3_600_000_000, "cpu", "a", 4.0),
        (T0 + 3_600_000_000, "mem", "a", 50.0),
    ])
}

#[tokio::test]
async fn buffered_and_flushed_rows_answer_the_same() {
    let (_d, engine, q) = setup().await;
    engine.write(&sample()).await.unwrap();
    let sql = "SELECT time_bucket('1m', time) AS b, tags['host'] AS h, SUM(value) AS s FROM metrics WHERE metric = 'cpu' GROUP BY 1, 2 ORDER BY 1, 2";
    let expected = [
        "+----------------------+---+-----+",
        "| b                    | h | s   |",
        "+----------------------+---+-----+",
        "| 2024-01-15T00:00:00Z | a | 1.0 |",
        "| 2024-01-15T00:00:00Z | b | 2.0 |",
        "| 2024-01-15T00:01:00Z | a | 3.0 |",
        "| 2024-01-15T01:00:00Z | a | 4.0 |",
        "+----------------------+---+-----+",
    ]
    .join("\n");
    assert_eq!(run(&q, sql).await, expected);
    assert_eq!(engine.flush().await.unwrap(), 5);
    assert_eq!(
        engine.snapshot().manifest.chunks.len(),
        2,
        "two hour partitions"
    );
    assert_eq!(run(&q, sql).await, expected);
}

#[tokio::test]
async fn dialect_iso_strings_intervals_and_missing_tags() {
    let (_d, engine, q) = setup().await;
    engine.write(&sample()).await.unwrap();
    engine.flush().await.unwrap();
    let got = run(&q, "SELECT count(*) AS n FROM metrics WHERE time BETWEEN '2024-01-15T00:00:00Z' AND '2024-01-15T00:01:00Z'").await;
    assert!(got.contains("| 2 |"), "{got}");
    let got = run(
        &q,
        "SELECT count(*) AS n FROM metrics WHERE time >= TIMESTAMP '2024-01-15T01:00:00Z' - '1m'",
    )
    .await;
    assert!(got.contains("| 2 |"), "{got}");
    let got = run(
        &q,
        "SELECT count(*) AS n FROM metrics WHERE time > now() - '1m'",
    )
    .await;
    assert!(got.contains("| 0 |"), "{got}");
    let got = run(
        &q,
        "SELECT count(*) AS n FROM metrics WHERE time > now() - interval '100000 days'",
    )
    .await;
    assert!(got.contains("| 5 |"), "{got}");
    let got = run(&q, "SELECT time_bucket(INTERVAL '1 hour', time) AS b, count(*) AS n FROM metrics GROUP BY 1 ORDER BY 1").await;
    assert!(
        got.contains("| 2024-01-15T00:00:00Z | 3 |")
            && got.contains("| 2024-01-15T01:00:00Z | 2 |"),
        "{got}"
    );
    let got = run(
        &q,
        "SELECT count(*) AS n FROM metrics WHERE tags['region'] IS NULL",
    )
    .await;
    assert!(got.contains("| 5 |"), "{got}");
}

#[tokio::test]
async fn explain_shows_pruning() {
    let (_d, engine, q) = setup().await;
    engine.write(&sample()).await.unwrap();
    engine.flush().await.unwrap();
    let got = run(
        &q,
        "EXPLAIN SELECT * FROM metrics WHERE time >= '2024-01-15T01:00:00Z'",
    )
    .await;
    assert!(got.contains("chunks_scanned=1, chunks_pruned=1"), "{got}");
    let got = run(
        &q,
        "EXPLAIN SELECT * FROM metrics WHERE tags['host'] = 'zzz'",
    )
    .await;
    assert!(
        got.contains("chunks_scanned=0, chunks_pruned=2") && got.contains("series=0"),
        "{got}"
    );
}

#[tokio::test]
async fn explain_shows_the_series_rollup() {
    let (_d, engine, q) = setup().await;
    engine.write(&sample()).await.unwrap();
    engine.flush().await.unwrap();
    let got = run(
        &q,
        "EXPLAIN SELECT tags['host'] AS h, time_bucket('1h', time) AS b, avg(value) \
         FROM metrics WHERE metric = 'cpu' AND time >= '2024-01-15T00:00:00Z' GROUP BY h, b",
    )
    .await;
    assert!(got.contains("rollup=series,bucket(3600000000us)"), "{got}");
    assert!(got.contains("series=2"), "{got}");
    // A filter on `value` needs the rows; so does an aggregate of `time`.
    for sql in [
        "EXPLAIN SELECT metric, sum(value) FROM metrics WHERE value > 1 GROUP BY metric",
        "EXPLAIN SELECT metric, max(time) FROM metrics GROUP BY metric",
        "EXPLAIN SELECT value, count(*) FROM metrics GROUP BY value",
    ] {
        let got = run(&q, sql).await;
        assert!(!got.contains("rollup="), "{sql}: {got}");
    }
}

#[tokio::test]
async fn rollup_answers_equal_row_answers() {
    let (_d, engine, q) = setup().await;
    engine.write(&sample()).await.unwrap();
    engine.flush().await.unwrap();
    // Buffered rows too: the rollup reads both.
    engine
        .write(&batch(&[(T0 + 3_660_000_000, "cpu", "b", 7.0)]))
        .await
        .unwrap();
    let got = run(
        &q,
        "SELECT metric, tags['host'] AS h, time_bucket('1h', time) AS b, count(*) AS n, \
         sum(value) AS s, avg(value) AS a, min(value) AS lo, max(value) AS hi, \
         last_value(value ORDER BY time) AS last \
         FROM metrics GROUP BY metric, h, b ORDER BY metric, h, b",
    )
    .await;
    let want = "\
+--------+---+----------------------+---+------+------+------+------+------+
| metric | h | b                    | n | s    | a    | lo   | hi   | last |
+--------+---+----------------------+---+------+------+------+------+------+
| cpu    | a | 2024-01-15T00:00:00Z | 2 | 4.0  | 2.0  | 1.0  | 3.0  | 3.0  |
| cpu    | a | 2024-01-15T01:00:00Z | 1 | 4.0  | 4.0  | 4.0  | 4.0  | 4.0  |
| cpu    | b | 2024-01-15T00:00:00Z | 1 | 2.0  | 2.0  | 2.0  | 2.0  | 2.0  |
| cpu    | b | 2024-01-15T01:00:00Z | 1 | 7.0  | 7.0  | 7.0  | 7.0  | 7.0  |
| mem    | a | 2024-01-15T01:00:00Z | 1 | 50.0 | 50.0 | 50.0 | 50.0 | 50.0 |
+--------+---+----------------------+---+------+------+------+------+------+";
    assert_eq!(got, want);
}

#[tokio::test]
async fn bad_sql_is_an_invalid_argument_error() {
    let (_d, engine, q) = setup().await;
    for sql in [
        "SELEC 1",
        "SELECT nope FROM metrics",
        "SELECT * FROM nope",
        "SELECT 1; SELECT 2",
    ] {
        match q.sql(sql).await {
            Err(QueryError::Invalid(_)) => {}
            other => panic!("{sql}: {:?}", other.map(|_| ())),
        }
    }
    engine.write(&sample()).await.unwrap();
    // time_bucket finds these only as it runs: recognised by the error's
    // type (they were once told apart by their text).
    for (width, needle) in [
        ("'5 parsecs'", "invalid width"),
        ("'0s'", "must be positive"),
        ("INTERVAL '1 month'", "months or years"),
        ("metric", "not a column"),
    ] {
        let sql = format!("SELECT time_bucket({width}, time) FROM metrics");
        let err = q.sql(&sql).await.unwrap().collect().await.unwrap_err();
        match QueryError::from_datafusion(err) {
            QueryError::Invalid(m) => {
                assert!(
                    m.starts_with("time_bucket") && m.contains(needle),
                    "{sql}: {m}"
                )
            }
            other => panic!("{sql}: {other:?}"),
        }
    }
    // An execution failure that is not the query's fault stays one.
    let other = datafusion::common::DataFusionError::Execution("time_bucket: disk on fire".into());
    assert!(matches!(
        QueryError::from_datafusion(other),
        QueryError::Execution(_)
    ));
}

#[tokio::test]
async fn only_read_only_statements_run() {
    let (dir, _view, q) = setup().await;
    let target = dir.path().join("copied.csv");
    let refused = [
        format!("COPY (SELECT 1) TO '{}'", target.display()),
        "CREATE EXTERNAL TABLE passwd (line VARCHAR) STORED AS CSV LOCATION '/etc/passwd'".into(),
        "CREATE TABLE t AS SELECT 1".into(),
        "INSERT INTO metrics (value) VALUES (1.0)".into(),
        "DROP TABLE metrics".into(),
        "SET datafusion.execution.batch_size = 1".into(),
    ];
    for sql in &refused {
        match q.sql(sql).await {
            Err(QueryError::Invalid(m)) => assert!(m.contains("read-only"), "{sql}: {m}"),
            other => panic!("{sql} was not refused: {:?}", other.map(|_| ())),
        }
    }
    assert!(!target.exists(), "COPY wrote a file");
    for sql in ["EXPLAIN SELECT * FROM metrics", "SHOW TABLES"] {
        q.sql(sql).await.unwrap().collect().await.unwrap();
    }
}

mod pruning_property {
    use datafusion::datasource::MemTable;
    use proptest::prelude::*;

    use super::*;

    /// Sorted text rows of a query, for comparing two tables' answers.
    async fn rows(ctx: &datafusion::prelude::SessionContext, sql: &str) -> Vec<String> {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let text = pretty_format_batches(&batches).unwrap().to_string();
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with('|'))
            .skip(1)
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    }

    fn filter_sql(f: &(u8, i64, i64, u8)) -> String {
        let (kind, a, b, n) = *f;
        let t = |x: i64| format!("'{}'", crate::model::format_micros(T0 + x * 1_000_000));
        let (lo, hi) = (a.min(b), a.max(b));
        match kind % 6 {
            0 => format!("time >= {} AND time < {}", t(lo), t(hi)),
            1 => format!("time BETWEEN {} AND {}", t(lo), t(hi)),
            2 => format!("metric = 'm{}'", n % 4),
            3 => format!("tags['host'] = 'h{}' AND time > {}", n % 5, t(lo)),
            4 => format!(
                "tags['host'] IN ('h{}', 'h{}') AND metric IN ('m{}')",
                n % 5,
                (u32::from(n) + 1) % 5,
                n % 4
            ),
            _ => format!(
                "time <= {} AND metric = 'm{}' AND tags['host'] = 'h{}'",
                t(hi),
                n % 4,
                n % 5
            ),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
        #[test]
        fn pruning_never_changes_an_answer(
            points in prop::collection::vec((0i64..7_200, 0u8..4, 0u8..5, -100i32..100), 1..300),
            flush_every in 20usize..150,
            filters in prop::collection::vec((any::<u8>(), 0i64..7_200, 0i64..7_200, any::<u8>()), 1..6),
        ) {
            // One value per metric and instant, so first/last_value grouped
            // by metric (across hosts) have a single right answer.
            let mut seen = std::collections::HashSet::new();
            let points: Vec<_> = points.into_iter().filter(|p| seen.insert((p.0, p.1))).collect();
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let (_d, engine, q) = setup().await;
                // Several writes with flushes in between: chunks in two hour
                // partitions with different series, plus a buffered tail.
                for (i, part) in points.chunks(flush_every).enumerate() {
                    let metrics: Vec<String> = part.iter().map(|p| format!("m{}", p.1)).collect();
                    let hosts: Vec<String> = part.iter().map(|p| format!("h{}", p.2)).collect();
                    let rows: Vec<(i64, &str, &str, f64)> = part
                        .iter()
                        .zip(metrics.iter().zip(&hosts))
                        .map(|(p, (m, h))| (T0 + p.0 * 1_000_000, m.as_str(), h.as_str(), p.3 as f64))
                        .collect();
                    engine.write(&batch(&rows)).await.unwrap();
                    if i % 2 == 0 {
                        engine.flush().await.unwrap();
                    }
                }
                let pruned = q.session().unwrap();
                let full = pruned.sql("SELECT * FROM metrics").await.unwrap().collect().await.unwrap();
                let reference = datafusion::prelude::SessionContext::new();
                let mem = MemTable::try_new(crate::model::sql_schema(), vec![full]).unwrap();
                reference.register_table("metrics", Arc::new(mem)).unwrap();
                reference.register_udf(crate::query::functions::time_bucket());
                for f in &filters {
                    let w = filter_sql(f);
                    // Rows, then aggregates the series rollup computes in
                    // the scan (values are whole numbers, so sums are exact
                    // in any order).
                    for sql in [
                        format!("SELECT time, metric, tags['host'] AS host, value FROM metrics WHERE {w}"),
                        format!("SELECT tags['host'] AS h, metric, time_bucket('10m', time) AS b, sum(value), \
                                 count(*), count(value), min(value), max(value), avg(value) \
                                 FROM metrics WHERE {w} GROUP BY h, metric, b"),
                        format!("SELECT metric, last_value(value ORDER BY time) AS l, \
                                 first_value(value ORDER BY time) AS f, \
                                 last_value(value ORDER BY time DESC) AS fd, count(1) \
                                 FROM metrics WHERE {w} GROUP BY metric"),
                        format!("SELECT time_bucket(INTERVAL '1 hour', time) AS b, max(value) - min(value) AS spread \
                                 FROM metrics WHERE {w} GROUP BY 1"),
                    ] {
                        assert_eq!(rows(&pruned, &sql).await, rows(&reference, &sql).await, "{sql}");
                    }
                }
                        });
        }
    }
}

#[tokio::test]
async fn function_columns_are_named_by_the_function_unless_names_collide() {
    let (_dir, _engine, q) = setup().await;
    let names = |sql: &'static str| {
        let q = &q;
        async move {
            let df = q.sql(sql).await.unwrap();
            df.schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        names("SELECT time_bucket('10s', time), avg(value), count(*) AS n FROM metrics GROUP BY 1")
            .await,
        ["time_bucket", "avg", "n"]
    );
    assert_eq!(
        names("SELECT min(value), min(time), value + 1 FROM metrics GROUP BY value").await,
        [
            "min(metrics.value)",
            "min(metrics.time)",
            "metrics.value + Int64(1)"
        ]
    );
}

#[tokio::test]
async fn a_point_written_twice_reads_back_once_with_its_later_value() {
    let (_d, engine, q) = setup().await;
    let sql = "SELECT value FROM metrics ORDER BY time";
    // One batch holding the key twice: the later row wins in the buffer.
    engine
        .write(&batch(&[(T0, "cpu", "a", 1.0), (T0, "cpu", "a", 2.0)]))
        .await
        .unwrap();
    assert_eq!(
        run(&q, "SELECT count(*) AS n FROM metrics")
            .await
            .lines()
            .nth(3)
            .unwrap(),
        "| 1 |"
    );
    // A second batch rewrites it; the flush keeps the later batch's value.
    engine
        .write(&batch(&[(T0, "cpu", "a", 3.0)]))
        .await
        .unwrap();
    engine.flush().await.unwrap();
    let got = run(&q, sql).await;
    assert_eq!(
        got.lines().filter(|l| l.contains(".0")).collect::<Vec<_>>(),
        vec!["| 3.0   |"]
    );
}
