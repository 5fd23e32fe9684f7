//! Write path costs per batch size: normalising a TSBS-shaped batch (11
//! string columns) and flushing a buffer of it into chunk files.
//!
//! cargo bench --bench flush

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use streamdb::ingest::{normalize, Engine, EngineConfig};
use streamdb::storage::SeriesCatalog;

/// `rows` points: 100 hosts × 10 metrics per timestamp, 10 s apart.
fn tsbs_batch(rows: usize) -> RecordBatch {
    let mut fields = vec![Field::new("time", streamdb::model::time_type(), false)];
    let mut cols: Vec<ArrayRef> = vec![Arc::new(
        TimestampMicrosecondArray::from(
            (0..rows)
                .map(|i| 1_705_276_800_000_000 + (i / 1000) as i64 * 10_000_000)
                .collect::<Vec<_>>(),
        )
        .with_timezone("UTC"),
    )];
    fields.push(Field::new("metric", DataType::Utf8, false));
    cols.push(Arc::new(StringArray::from(
        (0..rows)
            .map(|i| format!("cpu.usage_{}", i % 10))
            .collect::<Vec<_>>(),
    )));
    for (t, card) in [
        ("hostname", 100),
        ("region", 9),
        ("datacenter", 20),
        ("rack", 100),
        ("os", 3),
        ("arch", 2),
        ("team", 4),
        ("service", 20),
        ("service_version", 2),
        ("service_environment", 3),
    ] {
        fields.push(Field::new(t, DataType::Utf8, false));
        cols.push(Arc::new(StringArray::from(
            (0..rows)
                .map(|i| format!("{t}_{}", (i / 10) % 100 % card))
                .collect::<Vec<_>>(),
        )));
    }
    fields.push(Field::new("value", DataType::Float64, false));
    cols.push(Arc::new(Float64Array::from(
        (0..rows)
            .map(|i| (i % 997) as f64 * 0.1)
            .collect::<Vec<_>>(),
    )));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("write_path");
    group.sample_size(10);
    for rows in [10_000usize, 100_000] {
        let batch = tsbs_batch(rows);
        group.throughput(Throughput::Elements(rows as u64));
        let catalog = SeriesCatalog::default();
        group.bench_with_input(BenchmarkId::new("normalize", rows), &batch, |b, batch| {
            b.iter(|| normalize(batch, &catalog).unwrap());
        });
        group.bench_with_input(
            BenchmarkId::new("write_and_flush", rows),
            &batch,
            |b, batch| {
                let dir = tempfile::tempdir().unwrap();
                let engine = rt
                    .block_on(Engine::open(EngineConfig::new(dir.path())))
                    .unwrap();
                b.to_async(&rt).iter(|| {
                    let engine = engine.clone();
                    async move {
                        engine.write(batch).await.unwrap();
                        engine.flush().await.unwrap();
                    }
                });
                rt.block_on(engine.shutdown()).unwrap();
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
