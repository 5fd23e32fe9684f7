//! The one fault a seeded run puts the storage through, chosen by its
//! seed: a crash at a named point (maybe followed by a power loss), a
//! power loss at a random moment, a store that misbehaves on one write, or
//! a bit flip in a log segment.

use std::fmt;

use rand::rngs::StdRng;
use rand::Rng;

use crate::runtime::CrashPoint;
use crate::storage::faults::Fault as StoreFault;

/// What happens to the files a power loss finds unsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// Cut back to their synced length.
    Clean,
    /// Cut to any length between synced and written.
    Torn,
}

/// Which log segment a bit flip hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    /// One that is no longer appended to.
    Sealed,
    /// The one being appended to.
    Newest,
}

/// A run's fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The process dies at the `nth` hit of `point`; `loss` then takes
    /// what was not synced.
    Crash {
        point: CrashPoint,
        nth: usize,
        loss: Option<Loss>,
    },
    /// The process dies before operation `at` of the workload, and the
    /// power goes with it.
    PowerLoss { at: usize, loss: Loss },
    /// The store does `fault` to the `nth` write under `prefix`.
    Store {
        prefix: &'static str,
        nth: usize,
        fault: StoreFault,
    },
    /// The process dies at the end of the workload and one bit of a log
    /// segment flips before it starts again.
    BitFlip { segment: Segment },
}

/// The families of faults a run may draw from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Crash,
    PowerLoss,
    Store,
    FlipSealed,
    FlipNewest,
}

impl Family {
    /// What CI runs: every family whose check passes today. A flip in the
    /// newest segment is issue 18 item 8 (fixed on branch `log`).
    pub const CI: &'static [Family] = &[
        Family::Crash,
        Family::PowerLoss,
        Family::Store,
        Family::FlipSealed,
    ];
    pub const ALL: &'static [Family] = &[
        Family::Crash,
        Family::PowerLoss,
        Family::Store,
        Family::FlipSealed,
        Family::FlipNewest,
    ];
}

/// Store prefixes a store fault may hit.
const PREFIXES: [&str; 3] = ["chunks/", "catalog/", "manifest/"];

/// Draws the fault of a run from `families`.
pub fn choose(rng: &mut StdRng, families: &[Family]) -> Fault {
    let loss = |rng: &mut StdRng| match rng.random_bool(0.5) {
        true => Loss::Clean,
        false => Loss::Torn,
    };
    match families[rng.random_range(0..families.len())] {
        Family::Crash => Fault::Crash {
            point: CrashPoint::ALL[rng.random_range(0..CrashPoint::ALL.len())],
            nth: rng.random_range(0..4),
            loss: rng.random_bool(0.5).then(|| loss(rng)),
        },
        Family::PowerLoss => Fault::PowerLoss {
            at: rng.random_range(1..30),
            loss: loss(rng),
        },
        Family::Store => Fault::Store {
            prefix: PREFIXES[rng.random_range(0..PREFIXES.len())],
            nth: rng.random_range(0..4),
            fault: store_fault(rng),
        },
        Family::FlipSealed => Fault::BitFlip {
            segment: Segment::Sealed,
        },
        Family::FlipNewest => Fault::BitFlip {
            segment: Segment::Newest,
        },
    }
}

fn store_fault(rng: &mut StdRng) -> StoreFault {
    match rng.random_range(0..5) {
        0 => StoreFault::Fail,
        1 => StoreFault::Lost,
        2 => StoreFault::LostAsExists,
        3 => StoreFault::Torn {
            keep: rng.random_range(0..400),
            flip: rng.random_bool(0.5).then(|| rng.random_range(0..3200)),
        },
        _ => StoreFault::Cut,
    }
}

impl Fault {
    /// The fault's kind, for the summary: its family and variant, without
    /// the numbers.
    pub fn kind(&self) -> String {
        match self {
            Fault::Crash {
                point, loss: None, ..
            } => format!("crash {point:?}"),
            Fault::Crash {
                point,
                loss: Some(l),
                ..
            } => format!("crash {point:?} + power loss {l:?}"),
            Fault::PowerLoss { loss, .. } => format!("power loss {loss:?}"),
            Fault::Store { prefix, fault, .. } => {
                let name = format!("{fault:?}");
                let name = name.split([' ', '{']).next().unwrap_or_default();
                format!("store {name} on {prefix}")
            }
            Fault::BitFlip { segment } => format!("bit flip {segment:?} segment"),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}
