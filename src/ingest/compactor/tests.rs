//! Compaction, retention and garbage collection against a real engine on
//! a temporary directory.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::{TimestampMicrosecondType, UInt64Type};
use object_store::path::Path;

use crate::ingest::testing::{contents, points, T0};
use crate::ingest::{Engine, EngineConfig, ReadView};
use crate::storage::PARTITION_MICROS;

fn config(dir: &std::path::Path) -> EngineConfig {
    let mut cfg = EngineConfig::new(dir);
    // Passes run when the test says so; data from 2024 is long cold.
    cfg.maintenance.compaction_interval = Duration::ZERO;
    cfg.buffer.flush_interval = Duration::from_secs(3600);
    cfg.maintenance.gc_grace = Duration::from_secs(3600);
    cfg
}

/// Chunk files with extension `ext` under the data directory.
fn files(dir: &std::path::Path, ext: &str) -> usize {
    fn walk(d: &std::path::Path, ext: &str, n: &mut usize) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, ext, n);
            } else if p.extension().is_some_and(|x| x == ext) {
                *n += 1;
            }
        }
    }
    let mut n = 0;
    walk(&dir.join("chunks"), ext, &mut n);
    n
}

#[tokio::test]
async fn compaction_merges_each_partition_once_and_keeps_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(config(dir.path())).await.unwrap();
    // Six flushes, each spanning two hour partitions: 12 flushed chunks.
    for k in 0..6 {
        let base = T0 + PARTITION_MICROS - 200_000_000 + k * 13_000;
        e.write(&points(5, 400, base)).await.unwrap();
        e.flush().await.unwrap();
    }
    let before = contents(&e).await;
    assert_eq!(before.values().sum::<usize>(), 6 * 5 * 400);
    let old = e.snapshot();
    assert_eq!(
        (old.manifest.chunks.len(), files(dir.path(), "arrow")),
        (12, 12)
    );
    assert_eq!(e.status().storage.compaction_backlog, 12);

    e.maintain().await.unwrap();
    let st = e.status();
    assert_eq!((st.storage.chunks, st.storage.compacted_chunks), (2, 2));
    assert_eq!(st.storage.compaction_backlog, 0);
    assert_eq!(st.storage.maintenance.garbage_pending, 12);
    assert_eq!(contents(&e).await, before, "same rows, each once");
    for c in &e.snapshot().manifest.chunks {
        let decoded = e.chunk_reader().read(c, None).await.unwrap();
        let b =
            arrow::compute::concat_batches(&crate::model::point_schema(), decoded.iter()).unwrap();
        let ids = b.column(0).as_primitive::<UInt64Type>().values();
        let ts = b
            .column(1)
            .as_primitive::<TimestampMicrosecondType>()
            .values();
        assert!(
            (1..b.num_rows()).all(|i| (ids[i - 1], ts[i - 1]) <= (ids[i], ts[i])),
            "sorted by (series, time)"
        );
    }
    // A query that started before compaction still reads its chunks
    // during the grace period.
    for c in &old.manifest.chunks {
        e.store()
            .get(&Path::from(c.path.as_str()))
            .await
            .expect("kept during the grace period");
    }
    // Nothing more to do: a second pass commits nothing.
    let version = e.status().storage.manifest_version;
    e.maintain().await.unwrap();
    assert_eq!(e.status().storage.manifest_version, version);
    e.shutdown().await.unwrap();
    drop(e);

    // Past the grace period the merged inputs are deleted.
    let mut cfg = config(dir.path());
    cfg.maintenance.gc_grace = Duration::ZERO;
    let e = Engine::open(cfg).await.unwrap();
    assert_eq!(contents(&e).await, before, "after a restart too");
    e.maintain().await.unwrap();
    assert_eq!(e.status().storage.maintenance.garbage_pending, 0);
    assert_eq!(
        (files(dir.path(), "arrow"), files(dir.path(), "parquet")),
        (0, 2)
    );
    assert_eq!(contents(&e).await, before);
}

#[tokio::test]
async fn a_hot_partition_merges_only_piled_up_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.maintenance.compaction_cold_after = Duration::from_secs(100 * 365 * 86_400);
    let e = Engine::open(cfg).await.unwrap();
    for k in 0..(super::HOT_MERGE as i64 - 1) {
        e.write(&points(2, 10, T0 + k * 100_000_000)).await.unwrap();
        e.flush().await.unwrap();
    }
    e.maintain().await.unwrap();
    assert_eq!(
        e.status().storage.compacted_chunks,
        0,
        "not enough to merge yet"
    );
    e.write(&points(2, 10, T0 + 1_000_000_000)).await.unwrap();
    e.flush().await.unwrap();
    e.maintain().await.unwrap();
    let st = e.status().storage;
    assert_eq!((st.chunks, st.compacted_chunks), (1, 1));
    e.write(&points(2, 10, T0 + 2_000_000_000)).await.unwrap();
    e.flush().await.unwrap();
    e.maintain().await.unwrap();
    let st = e.status().storage;
    assert_eq!(
        (st.chunks, st.compacted_chunks),
        (2, 1),
        "the hot hour is not rewritten on every flush"
    );
}

#[tokio::test]
async fn retention_drops_expired_chunks_and_their_series_and_a_returning_series_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let now = crate::runtime::Clock::system().now_micros();
    let mut cfg = config(dir.path());
    cfg.maintenance.retention = Some(Duration::from_secs(7 * 86_400));
    let e = Engine::open(cfg.clone()).await.unwrap();
    e.write(&points(3, 50, T0)).await.unwrap(); // m0..m2, long expired
    e.write(&points(1, 50, now - 3_600_000_000)).await.unwrap(); // m0, recent
    e.flush().await.unwrap();
    assert_eq!(e.catalog().len(), 3);
    e.maintain().await.unwrap();
    let st = e.status();
    assert_eq!(st.rows, 50, "only the recent points are left");
    assert_eq!(st.storage.maintenance.expired_chunks, 1);
    assert_eq!(st.series, 1, "m1 and m2 have no data left");
    assert_eq!(st.storage.maintenance.series_removed, 2);
    assert!(st.time_range.min.unwrap() > crate::model::format_micros(T0));

    // m1 comes back after its removal: its key is logged again, so a
    // crash before the next flush still knows it.
    e.write(&points(2, 5, now)).await.unwrap();
    assert_eq!(e.catalog().len(), 2);
    drop(e); // no shutdown: the new points are only in the log
    let e = Engine::open(cfg).await.unwrap();
    assert_eq!(e.catalog().len(), 2);
    let st = e.status();
    assert_eq!((st.rows, st.buffer.rows), (60, 10));
    e.flush().await.unwrap();
    drop(e);
    let e = Engine::open(config(dir.path())).await.unwrap();
    assert_eq!((e.catalog().len(), e.status().rows), (2, 60));
}

#[tokio::test]
async fn orphans_from_a_crash_are_deleted_and_files_being_written_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.maintenance.gc_grace = Duration::ZERO;
    let e = Engine::open(cfg).await.unwrap();
    e.write(&points(2, 10, T0)).await.unwrap();
    e.flush().await.unwrap();
    // What a crash between writing and committing leaves: a chunk whose id
    // was handed out (below next_chunk_id) but never committed, and a
    // catalog snapshot of an old version.
    let orphan = Path::from("chunks/2024/01/15/00/chunk_0000000000000000.arrow");
    let stale_catalog = Path::from("catalog/series_00000000000000000000.bin");
    // And what a flush running right now may have written: ids ahead.
    let in_flight = Path::from("chunks/2024/01/15/00/chunk_0000000000009999.arrow");
    for p in [&orphan, &stale_catalog, &in_flight] {
        e.store()
            .put(p, bytes::Bytes::from_static(b"x"))
            .await
            .unwrap();
    }
    let before = contents(&e).await;
    e.maintain().await.unwrap();
    assert!(e.store().get(&orphan).await.is_err());
    assert!(e.store().get(&stale_catalog).await.is_err());
    assert!(e.store().get(&in_flight).await.is_ok());
    assert_eq!(contents(&e).await, before);
    // The two orphans, and the flushed chunk the pass compacted (no grace).
    assert_eq!(e.status().storage.maintenance.files_deleted, 3);
    assert_eq!(files(dir.path(), "parquet"), 1);
}

#[tokio::test]
async fn a_failing_store_fails_the_pass_and_changes_nothing_until_it_recovers() {
    use crate::storage::faults::FaultyStore;
    use crate::storage::Store;
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("objects");
    std::fs::create_dir_all(&objects).unwrap();
    let faults = Arc::new(FaultyStore::new(Arc::new(
        object_store::local::LocalFileSystem::new_with_prefix(&objects).unwrap(),
    )));
    let mut cfg = config(dir.path());
    cfg.store = Some(Store::new(faults.clone()).exclusive());
    let e = Engine::open(cfg).await.unwrap();
    for k in 0..3 {
        e.write(&points(3, 100, T0 + k * 1_000_000_000))
            .await
            .unwrap();
        e.flush().await.unwrap();
    }
    let before = contents(&e).await;
    let version = e.status().storage.manifest_version;
    faults.fail_writes(true);
    assert!(e.maintain().await.is_err());
    let st = e.status().storage;
    assert_eq!((st.manifest_version, st.chunks), (version, 3));
    assert_eq!(contents(&e).await, before);
    faults.fail_writes(false);
    e.maintain().await.unwrap();
    let st = e.status().storage;
    assert_eq!((st.chunks, st.compacted_chunks), (1, 1));
    assert_eq!(contents(&e).await, before);
}

/// Retention and the GC grace period in paused time: nothing expires a
/// microsecond early, a dropped chunk's file outlives the grace period's
/// queries, then goes.
#[tokio::test(start_paused = true)]
async fn retention_then_gc_grace_follow_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = crate::runtime::Clock::simulated(T0 + 30 * 86_400_000_000);
    let mut cfg = EngineConfig::for_tests(dir.path());
    cfg.clock = clock.clone();
    cfg.maintenance.retention = Some(Duration::from_secs(86_400));
    cfg.maintenance.gc_grace = Duration::from_secs(600);
    let e = Engine::open(cfg).await.unwrap();
    // 10 points ending now, in one hour partition.
    tokio::time::advance(Duration::from_secs(1800)).await;
    e.write(&points(1, 10, clock.now_micros() - 9_000_000))
        .await
        .unwrap();
    e.flush().await.unwrap();
    let path = e.snapshot().manifest.chunks[0].path.clone();
    // Paused time still moves a little while the engine waits on files;
    // measure from the newest point, not from the test's start.
    let newest = e.snapshot().manifest.chunks[0].max_time;
    let until_expiry = newest + 86_400_000_000 - clock.now_micros();
    tokio::time::advance(Duration::from_micros(until_expiry as u64 - 1_000_000)).await;
    e.maintain().await.unwrap();
    assert_eq!(e.status().storage.chunks, 1, "a second before its expiry");
    tokio::time::advance(Duration::from_secs(2)).await;
    e.maintain().await.unwrap();
    let st = e.status().storage;
    assert_eq!((st.chunks, st.maintenance.expired_chunks), (0, 1));
    // The flushed chunk (compacted at the first pass) and its compacted
    // successor (expired now).
    assert_eq!(st.maintenance.garbage_pending, 2);
    let file = Path::from(path.as_str());
    assert!(
        e.store().get(&file).await.is_ok(),
        "kept for the grace period"
    );
    tokio::time::advance(Duration::from_secs(590)).await;
    e.maintain().await.unwrap();
    assert_eq!(e.status().storage.maintenance.garbage_pending, 2);
    tokio::time::advance(Duration::from_secs(15)).await;
    e.maintain().await.unwrap();
    assert_eq!(e.status().storage.maintenance.garbage_pending, 0);
    assert!(
        e.store().get(&file).await.is_err(),
        "deleted after the grace period"
    );
    e.shutdown().await.unwrap();
}
