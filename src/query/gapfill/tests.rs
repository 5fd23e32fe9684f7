//! Gap filling end to end over an in-memory view, against a naive
//! computation from the same points.

use std::sync::Arc;

use arrow::util::pretty::pretty_format_batches;

use crate::ingest::MemoryView;
use crate::query::tests::batch;
use crate::query::{QueryConfig, QueryEngine};

const T0: i64 = 1_705_276_800_000_000; // 2024-01-15T00:00:00Z
const MIN: i64 = 60_000_000;

fn engine() -> (Arc<MemoryView>, QueryEngine) {
    let view = MemoryView::new();
    let q = QueryEngine::new(view.clone(), QueryConfig::default());
    (view, q)
}

async fn text(q: &QueryEngine, sql: &str) -> String {
    let batches = q.sql(sql).await.unwrap().collect().await.unwrap();
    pretty_format_batches(&batches).unwrap().to_string()
}

#[tokio::test]
async fn smoke() {
    let (view, q) = engine();
    view.write(&batch(&[
        (T0, "cpu", "a", 1.0),
        (T0 + 3 * MIN, "cpu", "a", 4.0),
        (T0 + MIN, "cpu", "b", 2.0),
    ]))
    .await
    .unwrap();
    let sql = "SELECT time_bucket_gapfill('1m', time) AS t, tags['host'] AS h, avg(value) AS v, locf(avg(value)) AS l, interpolate(avg(value)) AS i, count(*) FROM metrics WHERE time >= '2024-01-15T00:00:00Z' AND time < '2024-01-15T00:05:00Z' GROUP BY 1, 2 ORDER BY 2, 1";
    println!("{}", text(&q, sql).await);
    println!("{}", text(&q, &format!("EXPLAIN {sql}")).await);
    panic!();
}
