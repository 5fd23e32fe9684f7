//! Durable stream append throughput: payloads of several sizes, written by
//! 1 and 8 concurrent writers (group commit shares each fsync), fsync on.
//!
//! cargo bench --bench stream_append

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use streamdb::stream::{Log, LogConfig};

const RECORDS: usize = 64;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("stream_append");
    group.sample_size(10);
    for size in [4 << 10, 256 << 10, 2 << 20] {
        for writers in [1usize, 8] {
            group.throughput(Throughput::Bytes((size * RECORDS) as u64));
            group.bench_with_input(
                BenchmarkId::new(format!("{writers}_writers"), size),
                &size,
                |b, &size| {
                    let dir = tempfile::tempdir().unwrap();
                    let log: Arc<Log<()>> =
                        Arc::new(Log::open(LogConfig::new(dir.path()), Arc::new(())).unwrap());
                    b.to_async(&rt).iter(|| {
                        let log = log.clone();
                        async move {
                            let tasks: Vec<_> = (0..writers)
                                .map(|_| {
                                    let log = log.clone();
                                    tokio::spawn(async move {
                                        for _ in 0..RECORDS / writers {
                                            log.append(vec![7u8; size], ()).await.unwrap();
                                        }
                                    })
                                })
                                .collect();
                            for t in tasks {
                                t.await.unwrap();
                            }
                        }
                    });
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
