//! A write whose caller goes away keeps the series gate until its record
//! is applied: retention never removes a series a write in flight needs.

use std::sync::Arc;
use std::time::Duration;

use crate::ingest::testing::{contents, named_points, T0};
use crate::ingest::{Engine, EngineConfig, ReadView};
use crate::model::ProducerTuple;

/// The ways a write enters the engine.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// DoPut and `adbc_ingest`.
    Arrow,
    /// HTTP POST to the `metrics` stream.
    Json,
    /// HTTP POST with producer headers.
    Producer,
}

const KINDS: [Kind; 3] = [Kind::Arrow, Kind::Json, Kind::Producer];

async fn write(e: Arc<Engine>, kind: Kind, metric: String, at: i64) {
    let got = match kind {
        Kind::Arrow => e.write(&named_points(&metric, 1, 3, at)).await.map(drop),
        Kind::Json | Kind::Producer => {
            let body = format!(r#"{{"time":{at},"metric":"{metric}0","value":1}}"#);
            let producer = matches!(kind, Kind::Producer).then(|| ProducerTuple {
                id: metric.clone(),
                epoch: 0,
                seq: 0,
            });
            e.write_json(body.into(), false, producer, None)
                .await
                .map(drop)
        }
    };
    got.unwrap();
}

fn config(dir: &std::path::Path) -> EngineConfig {
    let mut cfg = EngineConfig::for_tests(dir);
    cfg.maintenance.retention = Some(Duration::from_secs(7 * 86_400));
    cfg
}

/// Stored rows whose series the catalog does not know: no metric or tag
/// query can ever find them.
async fn orphans(e: &Engine) -> Vec<u64> {
    let known: std::collections::HashSet<u64> = e
        .catalog()
        .entries()
        .into_iter()
        .map(|(id, _)| id.0)
        .collect();
    let mut lost: Vec<u64> = contents(e)
        .await
        .keys()
        .map(|r| r.0)
        .filter(|id| !known.contains(id))
        .collect();
    lost.dedup();
    lost
}

async fn settle(e: &Engine) {
    while e.snapshot().applied < e.log().next_offset() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Issue 18 item 9: a client that disconnects after its batch was
/// normalised and appended (but before it was applied) dropped the
/// request's future and with it the series gate; a retention pass then
/// removed the series, and the batch landed with points no query finds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_write_keeps_its_series() {
    let now = crate::runtime::Clock::system().now_micros();
    for (round, kind) in KINDS.iter().cycle().take(9).enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(config(dir.path())).await.unwrap();
        let metric = format!("s{round}_");
        // The series exists, but its only data is long expired.
        e.write(&named_points(&metric, 1, 3, T0)).await.unwrap();
        e.flush().await.unwrap();

        // Hold the log's writer just before it applies the next record.
        let (entered_tx, mut entered) = tokio::sync::mpsc::unbounded_channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = parking_lot::Mutex::new(release_rx);
        e.buffer().hooks.set_before_apply(Some(Arc::new(move || {
            let _ = entered_tx.send(());
            let _ = release_rx.lock().recv();
        })));
        // Boxed: dropping it drops the future itself.
        let mut w = Box::pin(write(e.clone(), *kind, metric.clone(), now - round as i64));
        tokio::select! {
            _ = &mut w => panic!("{kind:?}: the write finished while its record was held"),
            _ = entered.recv() => {}
        }
        drop(w); // the client went away

        let pass = e.maintain();
        tokio::pin!(pass);
        let finished = tokio::select! {
            r = &mut pass => { r.unwrap(); true }
            _ = e.buffer().hooks.gate_contended.notified() => false,
        };
        e.buffer().hooks.set_before_apply(None);
        release.send(()).unwrap();
        if !finished {
            pass.await.unwrap();
        }
        settle(&e).await;

        assert_eq!(
            orphans(&e).await,
            Vec::<u64>::new(),
            "{kind:?}: points stored without their series"
        );
        let rows = e.status().rows;
        assert!(
            rows == 3 || rows == 1,
            "{kind:?}: {rows} rows (the write, whole)"
        );
        e.shutdown().await.unwrap();
    }
}
