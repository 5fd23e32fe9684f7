//! Named crash points: the places where the fault harness
//! (`ingest/fault_harness/`) lets the process "die", in the manner of
//! SlateDB's failpoints and FoundationDB's simulation.
//!
//! A part that reaches a point calls [`CrashPoints::reached`]. In a build
//! that is not a test, [`CrashPoints`] holds nothing and `reached` is an
//! empty inline function: no lookup, no branch on the hot path. Under
//! `cfg(test)` a harness can [`CrashPoints::arm`] one point for its n-th
//! hit: that hit panics with a [`Crash`] payload, which unwinds the task or
//! thread that reached it, so nothing after the point runs; from then on
//! every point reached panics too (a dead process runs nothing). The
//! harness then drops the engine without a shutdown and opens a new one on
//! the same files.
//!
//! Why not the `fail` crate: its registry is one per process, named by
//! strings, so two tests arming failpoints at once see each other's (it
//! serialises them behind a global lock), and compiling it in takes a
//! feature flag. A handle carried in the engine's config is scoped to one
//! engine, so many seeded runs go in parallel, and it compiles to nothing
//! outside tests.

/// Where a crash can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CrashPoint {
    /// A group of log records is fsynced, not yet applied nor acknowledged.
    AfterLogFsync,
    /// A flush wrote one of its chunks.
    AfterChunkPut,
    /// A commit wrote its catalog snapshot, not yet its manifest.
    AfterCatalogPut,
    /// A commit is about to create its manifest version.
    BeforeManifestCommit,
    /// A manifest version is created, not yet installed for readers.
    AfterManifestCommit,
    /// A compaction wrote its merged chunk, not yet committed it.
    MidCompaction,
    /// Garbage collection deleted a file, not yet committed the deletion.
    MidGarbageCollection,
    /// The log deleted one covered segment of several.
    MidLogTrim,
}

impl CrashPoint {
    pub const ALL: [CrashPoint; 8] = [
        CrashPoint::AfterLogFsync,
        CrashPoint::AfterChunkPut,
        CrashPoint::AfterCatalogPut,
        CrashPoint::BeforeManifestCommit,
        CrashPoint::AfterManifestCommit,
        CrashPoint::MidCompaction,
        CrashPoint::MidGarbageCollection,
        CrashPoint::MidLogTrim,
    ];
}

/// The crash points of one engine (nothing outside tests).
#[derive(Clone, Default)]
pub struct CrashPoints {
    #[cfg(test)]
    armed: Option<std::sync::Arc<armed::Armed>>,
}

impl std::fmt::Debug for CrashPoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CrashPoints")
    }
}

impl CrashPoints {
    /// Called by a part at `point`; panics there if the harness says so.
    #[inline(always)]
    pub fn reached(&self, point: CrashPoint) {
        #[cfg(test)]
        if let Some(armed) = &self.armed {
            armed.reached(point);
        }
        #[cfg(not(test))]
        let _ = point;
    }
}

/// The payload of a crash point's panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crash(pub CrashPoint);

#[cfg(test)]
impl CrashPoints {
    /// Points that crash at the `nth` hit (counting from 0) of `point`.
    pub fn arm(point: CrashPoint, nth: usize) -> Self {
        armed::quiet_crash_panics();
        Self {
            armed: Some(std::sync::Arc::new(armed::Armed::new(point, nth))),
        }
    }

    /// The point this engine crashed at, once it has.
    pub fn crashed(&self) -> Option<CrashPoint> {
        self.armed.as_ref().and_then(|a| a.crashed())
    }

    /// True if `payload` (of a caught panic) is a crash point's.
    pub fn is_crash(payload: &(dyn std::any::Any + Send)) -> bool {
        payload.downcast_ref::<Crash>().is_some()
    }
}

#[cfg(test)]
mod armed {
    use super::{Crash, CrashPoint};
    use parking_lot::Mutex;

    pub(super) struct Armed {
        point: CrashPoint,
        state: Mutex<State>,
    }

    struct State {
        /// Hits of `point` still to pass before the crash.
        left: usize,
        crashed: Option<CrashPoint>,
    }

    impl Armed {
        pub(super) fn new(point: CrashPoint, nth: usize) -> Self {
            Self {
                point,
                state: Mutex::new(State {
                    left: nth,
                    crashed: None,
                }),
            }
        }

        pub(super) fn crashed(&self) -> Option<CrashPoint> {
            self.state.lock().crashed
        }

        pub(super) fn reached(&self, point: CrashPoint) {
            let crash = {
                let mut st = self.state.lock();
                match st.crashed {
                    Some(dead) => Some(dead),
                    None if point != self.point => None,
                    None if st.left > 0 => {
                        st.left -= 1;
                        None
                    }
                    None => {
                        st.crashed = Some(point);
                        Some(point)
                    }
                }
            };
            if let Some(at) = crash {
                std::panic::panic_any(Crash(at));
            }
        }
    }

    /// A crash point's panic is the harness's doing: keep it off stderr
    /// (a thousand seeded runs would print a thousand backtraces); every
    /// other panic still goes to the hook that was there before.
    pub(super) fn quiet_crash_panics() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if info.payload().downcast_ref::<Crash>().is_none() {
                    previous(info);
                }
            }));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_armed_point_crashes_at_its_nth_hit_and_every_point_after() {
        for nth in 0..4 {
            let points = CrashPoints::arm(CrashPoint::AfterChunkPut, nth);
            let hit = |p| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| points.reached(p)))
                    .is_err()
            };
            for _ in 0..nth {
                assert!(!hit(CrashPoint::AfterChunkPut), "nth {nth}");
                assert!(!hit(CrashPoint::MidLogTrim), "nth {nth}: another point");
            }
            assert_eq!(points.crashed(), None);
            assert!(hit(CrashPoint::AfterChunkPut), "nth {nth}");
            assert_eq!(points.crashed(), Some(CrashPoint::AfterChunkPut));
            for p in CrashPoint::ALL {
                assert!(hit(p), "nth {nth}: {p:?} after the crash");
            }
        }
        // Unarmed points never crash.
        let none = CrashPoints::default();
        for p in CrashPoint::ALL {
            none.reached(p);
        }
    }
}
