//! `Stream-Cursor` values for live reads (§10.1): the number of 20-second
//! intervals since 2024-10-09T00:00:00Z, never going backwards for a client
//! that echoes one. A CDN keying on the cursor therefore cannot serve the
//! same cached live response forever.

use rand::Rng;

use crate::runtime::Clock;

/// 2024-10-09T00:00:00Z in Unix seconds.
const EPOCH_SECS: i64 = 1_728_432_000;
const INTERVAL_SECS: i64 = 20;

/// The cursor for a live response at `clock`'s time, given the one the
/// client echoed.
pub fn next(clock: &Clock, client: Option<&str>) -> String {
    next_at(clock.now_secs(), client, rand::rng().random_range(1..=3600)).to_string()
}

fn next_at(now_secs: i64, client: Option<&str>, jitter_secs: i64) -> u64 {
    let current = ((now_secs - EPOCH_SECS) / INTERVAL_SECS).max(0) as u64;
    match client.and_then(|c| c.parse::<u64>().ok()) {
        // The client is at (or ahead of) the current interval: move it
        // strictly forward by a random 1 s to 1 h worth of intervals.
        Some(c) if c >= current => {
            let step = (jitter_secs / INTERVAL_SECS).max(1) as u64;
            c.saturating_add(step)
        }
        _ => current,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_never_go_backwards() {
        let now = EPOCH_SECS + 20 * 1000 + 5;
        assert_eq!(next_at(now, None, 1), 1000);
        assert_eq!(next_at(now, Some("990"), 1), 1000);
        assert_eq!(next_at(now, Some("1000"), 1), 1001);
        assert_eq!(next_at(now, Some("1000"), 3600), 1180);
        assert_eq!(next_at(now, Some("5000"), 30), 5001);
        assert_eq!(next_at(now, Some("junk"), 30), 1000);
    }
}
