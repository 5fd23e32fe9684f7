//! Many seeded runs, spread over threads (each run has its own runtime
//! and directory), and the summary the script prints: seeds run, faults
//! by kind (fired or not), failures by kind, each failure with its seed.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::plan::Family;
use super::run::{run, Outcome};

/// What a set of runs found.
#[derive(Debug, Default)]
pub struct Summary {
    pub seeds: u64,
    /// Fault kind → (runs, runs where it fired).
    pub faults: BTreeMap<String, (u64, u64)>,
    /// Fault kind → failed runs.
    pub failed: BTreeMap<String, u64>,
    /// (seed, fault, what went wrong), by seed.
    pub failures: Vec<(u64, String, String)>,
}

impl Summary {
    fn add(&mut self, o: Outcome) {
        self.seeds += 1;
        let kind = o.fault.kind();
        let entry = self.faults.entry(kind.clone()).or_default();
        entry.0 += 1;
        entry.1 += u64::from(o.fired);
        if let Some(why) = o.failure {
            *self.failed.entry(kind).or_default() += 1;
            self.failures.push((o.seed, o.fault.to_string(), why));
        }
    }
}

/// Runs `count` seeds from `start` with faults from `families`, on
/// `threads` threads.
pub fn run_seeds(start: u64, count: u64, families: &[Family], threads: usize) -> Summary {
    let next = AtomicU64::new(start);
    let summary = Mutex::new(Summary::default());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= start + count {
                    return;
                }
                let outcome = run(seed, families);
                summary.lock().expect("summary").add(outcome);
            });
        }
    });
    let mut summary = summary.into_inner().expect("summary");
    summary.failures.sort();
    summary
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "seeds run: {}", self.seeds)?;
        writeln!(f, "faults by kind (runs, fired, failed):")?;
        for (kind, (runs, fired)) in &self.faults {
            let failed = self.failed.get(kind).copied().unwrap_or(0);
            writeln!(f, "  {kind:<50} {runs:>5} {fired:>5} {failed:>5}")?;
        }
        let failed: u64 = self.failed.values().sum();
        writeln!(f, "failures: {failed}")?;
        for (seed, fault, why) in &self.failures {
            writeln!(f, "  seed {seed}: {fault}: {why}")?;
        }
        Ok(())
    }
}
