//! The fixed cost of a query inside the server, step by step: a session,
//! SQL to a logical plan, the physical plan, and running it, for
//! `SELECT 1`, TSBS q1 (one host, one metric, 12 one-minute buckets) and
//! q4 (lastpoint). The round trips a client adds are measured end to end
//! by `benches/fixed_cost.py`.
//!
//! cargo bench --bench query_fixed_cost

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema};
use criterion::{criterion_group, criterion_main, Criterion};
use datafusion::physical_plan::collect;
use streamdb::ingest::{Engine, EngineConfig};
use streamdb::query::{QueryConfig, QueryEngine};

const T0: i64 = 1_705_276_800_000_000;

/// 10 hosts × 10 metrics, one point every 10 s for two hours.
fn batch() -> RecordBatch {
    let (hosts, metrics, steps) = (10, 10, 720);
    let n = hosts * metrics * steps;
    let time: Vec<i64> = (0..n).map(|i| T0 + (i / 100) as i64 * 10_000_000).collect();
    let metric: Vec<String> = (0..n).map(|i| format!("cpu.usage_{}", i % 10)).collect();
    let host: Vec<String> = (0..n).map(|i| format!("host_{}", (i / 10) % 10)).collect();
    let value: Vec<f64> = (0..n).map(|i| (i % 997) as f64 * 0.1).collect();
    let schema = Schema::new(vec![
        Field::new("time", streamdb::model::time_type(), false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("hostname", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ]);
    let cols: Vec<ArrayRef> = vec![
        Arc::new(TimestampMicrosecondArray::from(time).with_timezone("UTC")),
        Arc::new(StringArray::from(metric)),
        Arc::new(StringArray::from(host)),
        Arc::new(Float64Array::from(value)),
    ];
    RecordBatch::try_new(Arc::new(schema), cols).unwrap()
}

/// Name, SQL, and the rows it must answer (checked once before timing,
/// so a query that matched nothing cannot pass for a fast one).
const QUERIES: [(&str, &str, usize); 3] = [
    ("select_1", "SELECT 1", 1),
    (
        "q1",
        "SELECT time_bucket('1m', time) AS b, max(value) AS v FROM metrics \
         WHERE metric = 'cpu.usage_1' AND tags['hostname'] = 'host_3' \
         AND time >= '2024-01-15T00:00:00Z' AND time < '2024-01-15T00:12:00Z' \
         GROUP BY b ORDER BY b",
        12,
    ),
    (
        "q4",
        "SELECT tags['hostname'] AS h, metric, last_value(value ORDER BY time) AS v \
         FROM metrics GROUP BY h, metric",
        100,
    ),
];

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let engine = rt
        .block_on(Engine::open(EngineConfig::new(dir.path())))
        .unwrap();
    rt.block_on(async {
        engine.write(&batch()).await.unwrap();
        engine.flush().await.unwrap();
    });
    let q = Arc::new(QueryEngine::new(engine.clone(), QueryConfig::default()));
    let mut group = c.benchmark_group("query_fixed_cost");
    group.bench_function("session", |b| b.iter(|| q.session().unwrap()));
    for (name, sql, rows) in QUERIES {
        let answered: usize = rt.block_on(async {
            let batches = q.sql(sql).await.unwrap().collect().await.unwrap();
            batches.iter().map(|b| b.num_rows()).sum()
        });
        assert_eq!(
            answered, rows,
            "{name} answers {answered} rows, expected {rows}"
        );
        group.bench_function(format!("{name}/logical"), |b| {
            b.to_async(&rt).iter(|| async { q.sql(sql).await.unwrap() })
        });
        group.bench_function(format!("{name}/physical"), |b| {
            b.to_async(&rt).iter(|| async {
                q.sql(sql)
                    .await
                    .unwrap()
                    .create_physical_plan()
                    .await
                    .unwrap()
            })
        });
        group.bench_function(format!("{name}/run"), |b| {
            b.to_async(&rt).iter(|| async {
                let df = q.sql(sql).await.unwrap();
                let task = Arc::new(df.task_ctx());
                let plan = df.create_physical_plan().await.unwrap();
                collect(plan, task).await.unwrap()
            })
        });
    }
    group.finish();
    rt.block_on(engine.shutdown()).unwrap();
}

criterion_group!(benches, bench);
criterion_main!(benches);
