//! The engine against an object store that fails: flush retries, data
//! stays queryable and durable, backpressure waits then refuses.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Float64Array, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema};
use object_store::local::LocalFileSystem;

use super::*;
use crate::ingest::testing::{objects, SharedBucket};
use crate::storage::faults::FaultyStore;

fn batch(n: usize, base: i64) -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("time", crate::model::time_type(), false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(
                TimestampMicrosecondArray::from(
                    (0..n as i64).map(|i| base + i).collect::<Vec<_>>(),
                )
                .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from(vec!["cpu"; n])),
            Arc::new(Float64Array::from(
                (0..n).map(|i| i as f64).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap()
}

fn faulty(dir: &std::path::Path) -> (Arc<FaultyStore>, EngineConfig) {
    let objects = dir.join("objects");
    std::fs::create_dir_all(&objects).unwrap();
    let faults = Arc::new(FaultyStore::new(Arc::new(
        LocalFileSystem::new_with_prefix(&objects).unwrap(),
    )));
    let mut cfg = EngineConfig::new(dir);
    cfg.store = Some(Store::new(faults.clone()).exclusive());
    cfg.buffer.flush_interval = Duration::from_millis(20);
    (faults, cfg)
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn failed_flushes_retry_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (faults, cfg) = faulty(dir.path());
    faults.fail_writes(true);
    let engine = Engine::open(cfg.clone()).await.unwrap();
    engine.write(&batch(100, 0)).await.unwrap();
    assert!(
        engine.flush().await.is_err(),
        "flush must fail while the store does"
    );
    // Still buffered, queryable, and writes keep being accepted.
    engine.write(&batch(50, 1_000)).await.unwrap();
    let s = engine.status();
    assert_eq!(
        (s.buffer.rows, s.storage.rows, s.storage.chunks),
        (150, 0, 0)
    );

    faults.fail_writes(false);
    eventually("the background flusher to retry", || {
        engine.status().storage.rows == 150
    })
    .await;
    assert_eq!(engine.status().buffer.rows, 0);
    engine.shutdown().await.unwrap();
    drop(engine);

    let engine = Engine::open(cfg).await.unwrap();
    let s = engine.status();
    assert_eq!(
        (s.rows, s.storage.rows, s.buffer.rows),
        (150, 150, 0),
        "no loss, no duplicate replay"
    );
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_full_buffer_makes_writes_wait_then_fail_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (faults, mut cfg) = faulty(dir.path());
    faults.fail_writes(true);
    cfg.buffer.max_buffer_bytes = 4096;
    cfg.buffer.write_timeout = Duration::from_millis(300);
    let engine = Engine::open(cfg).await.unwrap();

    // The first batch is admitted into the empty buffer, whatever its size.
    engine.write(&batch(1_000, 0)).await.unwrap();
    let before = engine.status();
    let clock = crate::runtime::Clock::system();
    let started = clock.instant();
    let err = engine.write(&batch(10, 5_000)).await.unwrap_err();
    assert!(matches!(err, EngineError::Backpressure { .. }), "{err}");
    assert!(
        clock.since(started) >= Duration::from_millis(300),
        "must wait before refusing"
    );
    let after = engine.status();
    assert_eq!(
        (after.rows, &after.stream.next_offset),
        (before.rows, &before.stream.next_offset)
    );

    // Once the store is back, the flush frees space and writes succeed.
    faults.fail_writes(false);
    engine.write(&batch(10, 5_000)).await.unwrap();
    eventually("everything flushed", || {
        engine.status().storage.rows == 1_010
    })
    .await;
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_data_directory_serves_one_process_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::new(dir.path());
    config.log.fsync = false;
    let first = Engine::open(config.clone()).await.unwrap();
    first.write(&batch(3, 0)).await.unwrap();
    let err = Engine::open(config.clone())
        .await
        .expect_err("second open refused");
    assert!(
        err.to_string()
            .contains("in use by another StreamDB process"),
        "{err}"
    );
    // Refused before touching anything: the first engine's data is intact.
    assert_eq!(first.status().rows, 3);
    first.shutdown().await.unwrap();
    drop(first);
    let again = Engine::open(config).await.unwrap();
    assert_eq!(again.status().rows, 3);
}

/// Lease takeover in paused time. Node A is cut off from the bucket; until
/// its lease times out node B is refused, then B takes over with A's
/// flushed data. A, though still accepting writes into its local log,
/// never writes to the bucket again, not even once it can reach it: every
/// object B committed keeps its bytes.
#[tokio::test(start_paused = true)]
async fn a_writer_cut_off_past_its_lease_is_taken_over_and_writes_nothing_more() {
    let shared = SharedBucket::new(1_705_276_800_000_000);
    let cut = &shared.cut;
    let a = Engine::open(shared.node("a", shared.through_cut()))
        .await
        .unwrap();
    a.write(&batch(100, 0)).await.unwrap();
    a.flush().await.unwrap();

    cut.fail_writes(true);
    let b_config = shared.node("b", shared.direct());
    let refused = Engine::open(b_config.clone()).await.unwrap_err();
    assert!(
        refused.to_string().contains("another StreamDB"),
        "{refused}"
    );
    tokio::time::advance(crate::storage::LEASE_TIMEOUT + Duration::from_secs(1)).await;
    assert!(!a.status().storage.writer.unwrap().lease_held);

    let b = Engine::open(b_config).await.unwrap();
    assert_eq!(b.status().storage.writer.as_ref().unwrap().epoch, 2);
    assert_eq!(b.status().rows, 100);
    b.write(&batch(50, 1_000)).await.unwrap();
    b.flush().await.unwrap();
    let committed = objects(&b.store().clone()).await;

    // A keeps taking writes locally, and reaches the bucket again.
    a.write(&batch(10, 5_000)).await.unwrap();
    cut.fail_writes(false);
    let err = a.flush().await.unwrap_err();
    assert!(
        err.to_string().contains("no longer holds the writer lease"),
        "{err}"
    );
    assert!(a.maintain().await.is_err());
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(objects(b.store()).await, committed, "A wrote to the bucket");
    assert_eq!(b.status().rows, 150);
    b.shutdown().await.unwrap();
}
