//! The harness's entry points: a fixed set of seeds in every
//! `cargo test` run, one seed from `FAULT_SEED`, and many seeds for
//! `scripts/fault-harness.sh` (`FAULT_SEEDS`, `FAULT_START`).

use super::plan::Family;
use super::run::run;
use super::summary::run_seeds;

/// Seeds every test run tries, split over a few tests so they go in
/// parallel.
const CI_SEEDS: u64 = 48;
const CI_SHARDS: u64 = 4;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
    })
}

fn ci_shard(shard: u64) {
    let per = CI_SEEDS / CI_SHARDS;
    let summary = run_seeds(shard * per, per, Family::CI, 1);
    assert!(
        summary.failures.is_empty(),
        "{summary}\nrerun one with FAULT_SEED=<seed> cargo test --lib fault_harness::tests::one_seed -- --nocapture"
    );
}

#[test]
fn seeded_faults_lose_and_duplicate_nothing_0() {
    ci_shard(0);
}

#[test]
fn seeded_faults_lose_and_duplicate_nothing_1() {
    ci_shard(1);
}

#[test]
fn seeded_faults_lose_and_duplicate_nothing_2() {
    ci_shard(2);
}

#[test]
fn seeded_faults_lose_and_duplicate_nothing_3() {
    ci_shard(3);
}

/// `FAULT_SEED=1234`: reruns that one seed (every fault family, as the
/// script draws them), printing what it did.
#[test]
fn one_seed() {
    let Some(seed) = env_u64("FAULT_SEED") else {
        return;
    };
    let outcome = run(seed, Family::ALL);
    println!("{outcome:?}");
    if let Some(why) = outcome.failure {
        panic!("seed {seed}: {}: {why}", outcome.fault);
    }
}

/// What `scripts/fault-harness.sh` runs: `FAULT_SEEDS` seeds (default
/// 1000) from `FAULT_START` (default 0), every fault family, on every
/// core; prints the summary, fails if any seed failed.
#[test]
#[ignore = "many seeds: run through scripts/fault-harness.sh"]
fn many_seeds() {
    let count = env_u64("FAULT_SEEDS").unwrap_or(1000);
    let start = env_u64("FAULT_START").unwrap_or(0);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let summary = run_seeds(start, count, Family::ALL, threads);
    println!("{summary}");
    assert!(
        summary.failures.is_empty(),
        "{} seeds failed",
        summary.failures.len()
    );
}

/// Issue 18 item 8: a bit flipped mid-newest-segment made recovery cut
/// the log there, silently dropping the acknowledged records after it.
/// Now the restart refuses (damage with valid records after it) or cuts
/// only a torn tail; never a silent loss.
#[test]
fn a_bit_flip_in_the_newest_segment_loses_no_acknowledged_write() {
    let summary = run_seeds(0, 24, &[Family::FlipNewest], 2);
    assert!(summary.failures.is_empty(), "{summary}");
}
