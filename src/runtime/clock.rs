//! [`Clock`]: the one source of time. Everything that ages, expires or
//! waits (buffer age, lease renewal and timeout, compaction, retention, GC
//! grace, producer expiry, stream TTL, cursors, subscription cadence) asks
//! a clock it was handed, so tests can run hours in paused time.
//!
//! Monotonic time is tokio's [`Instant`]: in a runtime started paused
//! (`#[tokio::test(start_paused = true)]`) it only moves when the test
//! advances it, or when every task is idle and tokio jumps to the next
//! timer. A [`Clock::simulated`] clock derives its wall time from that same
//! monotonic time, so advancing tokio's clock ages wall-clock state too,
//! and [`Clock::skew`] moves one node's wall clock against another's.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// Wall-clock and monotonic time; cheap to clone.
#[derive(Clone, Debug)]
pub struct Clock(Arc<Source>);

#[derive(Debug)]
enum Source {
    System,
    Simulated {
        /// Unix micros at `start`.
        wall_at_start: i64,
        start: Instant,
        /// Added to the wall time (clock skew between nodes).
        skew_micros: AtomicI64,
        /// The runtime whose (paused) time this clock reads, from any
        /// thread: the log's writer thread asks it too.
        runtime: tokio::runtime::Handle,
    },
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl Clock {
    /// The machine's clock.
    pub fn system() -> Self {
        Self(Arc::new(Source::System))
    }

    /// A clock whose wall time starts at `wall_micros` and then moves with
    /// the current tokio runtime's monotonic time (paused in tests). Call
    /// it inside that runtime.
    #[allow(clippy::disallowed_methods)] // the one place that reads it
    pub fn simulated(wall_micros: i64) -> Self {
        Self(Arc::new(Source::Simulated {
            wall_at_start: wall_micros,
            start: Instant::now(),
            skew_micros: AtomicI64::new(0),
            runtime: tokio::runtime::Handle::current(),
        }))
    }

    /// Wall time, Unix microseconds.
    #[allow(clippy::disallowed_methods)] // the one place that reads it
    pub fn now_micros(&self) -> i64 {
        match &*self.0 {
            Source::System => chrono::Utc::now().timestamp_micros(),
            Source::Simulated {
                wall_at_start,
                start,
                skew_micros,
                ..
            } => {
                let elapsed = self.instant().saturating_duration_since(*start);
                let elapsed = i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX);
                wall_at_start
                    .saturating_add(elapsed)
                    .saturating_add(skew_micros.load(Ordering::Relaxed))
            }
        }
    }

    /// Wall time, Unix seconds.
    pub fn now_secs(&self) -> i64 {
        self.now_micros().div_euclid(1_000_000)
    }

    /// Wall time, Unix milliseconds.
    pub fn now_millis(&self) -> i64 {
        self.now_micros().div_euclid(1_000)
    }

    /// Monotonic time (tokio's, so a paused test runtime controls it).
    #[allow(clippy::disallowed_methods)] // the one place that reads it
    pub fn instant(&self) -> Instant {
        match &*self.0 {
            Source::System => Instant::now(),
            Source::Simulated { runtime, .. } => {
                let _in_its_time = runtime.enter();
                Instant::now()
            }
        }
    }

    /// Moves a simulated clock's wall time by `by` (forward if positive);
    /// monotonic time is untouched. No effect on the system clock.
    pub fn skew(&self, by_micros: i64) {
        if let Source::Simulated { skew_micros, .. } = &*self.0 {
            skew_micros.fetch_add(by_micros, Ordering::Relaxed);
        }
    }

    /// Waits for an answer from a thread outside tokio (the log's writer).
    /// Under a simulated clock the wait counts as blocking work, so a
    /// paused runtime does not jump its time ahead while the other thread
    /// is busy (it would otherwise see itself idle and advance to the next
    /// timer); the system clock just awaits. `None` if the thread hung up.
    pub async fn answer_from_thread<T: Send + 'static>(
        &self,
        answer: tokio::sync::oneshot::Receiver<T>,
    ) -> Option<T> {
        match &*self.0 {
            Source::System => answer.await.ok(),
            Source::Simulated { .. } => {
                match tokio::task::spawn_blocking(move || answer.blocking_recv()).await {
                    Ok(got) => got.ok(),
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(_) => None,
                }
            }
        }
    }

    /// Monotonic time elapsed since `since`.
    pub fn since(&self, since: Instant) -> Duration {
        self.instant().saturating_duration_since(since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn simulated_wall_time_follows_paused_monotonic_time() {
        let clock = Clock::simulated(1_700_000_000_000_000);
        let t0 = clock.instant();
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(clock.now_micros(), 1_700_000_000_000_000 + 3_600_000_000);
        assert_eq!(clock.since(t0), Duration::from_secs(3600));
        clock.skew(-5_000_000);
        assert_eq!(clock.now_secs(), 1_700_000_000 + 3600 - 5);
        // A sleep in paused time returns at once, and the clock moved.
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(clock.since(t0), Duration::from_secs(3660));
    }

    #[test]
    fn the_system_clock_is_near_the_machines_time() {
        let clock = Clock::system();
        // 2024-01-01 and 2100-01-01: a sanity range, not a precise value.
        assert!((1_704_067_200..4_102_444_800).contains(&clock.now_secs()));
        clock.skew(1_000_000_000); // ignored for the system clock
        assert!(clock.now_secs() < 4_102_444_800);
    }
}
