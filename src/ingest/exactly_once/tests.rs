//! Tests of `exactly_once` through the engine.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::ingest::{json, Engine, EngineConfig, ReadView};

async fn open(dir: &std::path::Path) -> Arc<Engine> {
    let mut cfg = EngineConfig::new(dir);
    // Only explicit flushes: the test decides what is in the manifest
    // and what only in the log.
    cfg.buffer.flush_interval = Duration::from_secs(3600);
    Engine::open(cfg).await.unwrap()
}

async fn write(e: &Arc<Engine>, id: &str, epoch: u64, seq: u64, stream_seq: &str) -> Once {
    let body = format!(r#"{{"time":{seq},"metric":"cpu","tags":{{"p":"{id}"}},"value":{epoch}}}"#);
    let points = move |cat: &SeriesCatalog| Ok(json::parse(body.as_bytes(), false, cat)?);
    let tuple = ProducerTuple {
        id: id.into(),
        epoch,
        seq,
    };
    let stream_seq = (!stream_seq.is_empty()).then(|| stream_seq.to_string());
    e.write_once(points, Some(tuple), stream_seq).await.unwrap()
}

fn dup(last_seq: u64) -> Once {
    Once::NotWritten(Verdict::Duplicate { last_seq })
}

/// A client that disconnects mid-write drops the request's future; its
/// retry must still find the first write recorded, not write again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_abandoned_by_its_client_still_fences_its_retry() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path()).await;
    for seq in 0..20 {
        let body = format!(r#"{{"time":{seq},"metric":"cpu","value":1}}"#);
        let points = || {
            let body = body.clone();
            move |cat: &SeriesCatalog| Ok(json::parse(body.as_bytes(), false, cat)?)
        };
        let tuple = || {
            Some(ProducerTuple {
                id: "p".into(),
                epoch: 0,
                seq,
            })
        };
        // Polled once, then dropped: the write is under way, or (when
        // that one poll waited on the producer's lock) never started.
        let first = e.write_once(points(), tuple(), None);
        let _ = tokio::time::timeout(Duration::ZERO, first).await;
        let retry = e.write_once(points(), tuple(), None).await.unwrap();
        assert!(
            retry == dup(seq) || matches!(retry, Once::Written(_)),
            "seq {seq}: {retry:?}"
        );
    }
    // Either way each point is stored once: never both the first and its retry.
    assert_eq!(e.status().rows, 20);
    e.shutdown().await.unwrap();
}

/// Producers have locks of their own: one producer's write in flight
/// does not hold up another's, and each still gets its own verdicts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_write_concurrently_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path()).await;
    let mut tasks = Vec::new();
    for p in 0..8 {
        let e = e.clone();
        tasks.push(tokio::spawn(async move {
            for seq in 0..25 {
                let id = format!("p{p}");
                for _attempt in 0..2 {
                    let got = write(&e, &id, 0, seq, "").await;
                    assert!(
                        matches!(got, Once::Written(_)) || got == dup(seq),
                        "{got:?}"
                    );
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(e.status().rows, 8 * 25);
    e.shutdown().await.unwrap();
}

#[tokio::test]
async fn each_batch_is_taken_once_across_crashes_and_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path()).await;
    assert!(matches!(write(&e, "p", 0, 0, "a").await, Once::Written(_)));
    assert_eq!(write(&e, "p", 0, 0, "a").await, dup(0));
    assert_eq!(
        write(&e, "p", 0, 2, "").await,
        Once::NotWritten(Verdict::Gap {
            expected: 1,
            received: 2
        })
    );
    assert_eq!(
        write(&e, "p", 0, 1, "a").await,
        Once::NotWritten(Verdict::SeqRegression { last: "a".into() })
    );

    // A crash: the tuple comes back from the log record it rode in.
    drop(e);
    let e = open(dir.path()).await;
    assert_eq!(write(&e, "p", 0, 0, "a").await, dup(0));
    assert!(matches!(write(&e, "p", 0, 1, "b").await, Once::Written(_)));

    // A flush moves the records into chunks (and, without stream
    // retention, deletes their log segments): the manifest carries the
    // table from then on.
    e.flush().await.unwrap();
    drop(e);
    let e = open(dir.path()).await;
    assert_eq!(
        e.snapshot().manifest.writers.last_stream_seq.as_deref(),
        Some("b")
    );
    assert_eq!(write(&e, "p", 0, 1, "b").await, dup(1));
    assert_eq!(write(&e, "p", 0, 0, "").await, dup(1));
    assert_eq!(
        write(&e, "q", 0, 0, "b").await,
        Once::NotWritten(Verdict::SeqRegression { last: "b".into() })
    );

    // A new epoch fences the old one, durably.
    assert!(matches!(write(&e, "p", 1, 0, "").await, Once::Written(_)));
    drop(e);
    let e = open(dir.path()).await;
    assert_eq!(
        write(&e, "p", 0, 2, "").await,
        Once::NotWritten(Verdict::StaleEpoch { current: 1 })
    );
    assert_eq!(e.status().rows, 3, "three batches accepted, each once");
    e.shutdown().await.unwrap();
}

/// Producer expiry in paused time: with `--retention`, a producer idle for
/// longer is forgotten at the next flush and must start over; one that
/// wrote within it is kept.
#[tokio::test(start_paused = true)]
async fn idle_producers_expire_with_retention_on_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = EngineConfig::for_tests(dir.path());
    cfg.clock = crate::runtime::Clock::simulated(1_705_276_800_000_000);
    cfg.maintenance.retention = Some(Duration::from_secs(3600));
    let e = Engine::open(cfg).await.unwrap();
    assert!(matches!(
        write(&e, "idle", 0, 0, "").await,
        Once::Written(_)
    ));
    tokio::time::advance(Duration::from_secs(1800)).await;
    assert!(matches!(
        write(&e, "busy", 0, 0, "").await,
        Once::Written(_)
    ));
    tokio::time::advance(Duration::from_secs(1801)).await;
    e.flush().await.unwrap();
    assert_eq!(e.status().stream.producers, 1, "only the busy one is kept");
    assert_eq!(write(&e, "busy", 0, 0, "").await, dup(0));
    assert_eq!(
        write(&e, "idle", 0, 1, "").await,
        Once::NotWritten(Verdict::Gap {
            expected: 0,
            received: 1
        }),
        "a forgotten producer starts over at 0"
    );
    e.shutdown().await.unwrap();
}
