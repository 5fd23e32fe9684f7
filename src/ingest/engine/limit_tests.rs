//! The engine's limits on what writers bring: `--max-series`.

use std::collections::BTreeSet;

use super::*;
use crate::ingest::testing::{named_points, T0};

/// A small deterministic generator (no test depends on a seed's luck).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Batches of new and known series against `--max-series 10`: each is
/// written whole, or refused whole naming the flag with nothing logged,
/// buffered or catalogued.
#[tokio::test]
async fn a_batch_past_max_series_is_refused_whole() {
    for seed in 0..8 {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = EngineConfig::for_tests(dir.path());
        cfg.buffer.max_series = 10;
        let engine = Engine::open(cfg).await.unwrap();
        let mut rng = Lcg(seed);
        let mut held = BTreeSet::new();
        for round in 0..25 {
            let n = 1 + rng.next(5) as usize;
            let prefix = ["a", "b", "c", "d"][rng.next(4) as usize];
            let names: BTreeSet<String> = (0..n).map(|k| format!("{prefix}{k}")).collect();
            let fresh = names.difference(&held).count();
            let before = (engine.status().rows, engine.catalog().len());
            let got = engine.write(&named_points(prefix, n, 2, T0 + round)).await;
            if held.len() + fresh > 10 {
                let err = got.unwrap_err();
                assert!(matches!(err, EngineError::TooManySeries { .. }), "{err}");
                assert!(err.to_string().contains("--max-series"), "{err}");
                assert_eq!((engine.status().rows, engine.catalog().len()), before);
            } else {
                got.unwrap_or_else(|e| panic!("seed {seed} round {round}: {e}"));
                held.extend(names);
                assert_eq!(engine.catalog().len(), held.len());
            }
        }
        engine.shutdown().await.unwrap();
    }
}

/// Past `--max-producers` a new producer id is refused (nothing written)
/// while the known ones keep their exactly-once writes.
#[tokio::test]
async fn a_producer_past_max_producers_is_refused_and_known_ones_go_on() {
    use crate::ingest::{json, Once};
    use crate::model::ProducerTuple;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = EngineConfig::for_tests(dir.path());
    cfg.buffer.max_producers = 3;
    let engine = Engine::open(cfg).await.unwrap();
    let write = |id: String, seq: u64| {
        let body = format!(r#"{{"time":{seq},"metric":"cpu","value":1}}"#);
        let points = move |cat: &SeriesCatalog| Ok(json::parse(body.as_bytes(), false, cat)?);
        let tuple = ProducerTuple { id, epoch: 0, seq };
        engine.write_once(points, Some(tuple), None)
    };
    for seq in 0..4 {
        for p in 0..6 {
            // Refused producers never got past seq 0: they start over.
            let got = write(format!("p{p}"), if p < 3 { seq } else { 0 }).await;
            if p < 3 {
                assert!(
                    matches!(got, Ok(Once::Written(_))),
                    "p{p} seq {seq}: {got:?}"
                );
            } else {
                let err = got.unwrap_err();
                assert!(err.to_string().contains("--max-producers"), "{err}");
            }
        }
    }
    assert_eq!(engine.status().rows, 12);
    engine.shutdown().await.unwrap();
}
