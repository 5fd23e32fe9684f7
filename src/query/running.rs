//! Admission of running queries: the concurrency slot a query holds, its
//! latency metrics, and the slow-query log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::runtime::Clock;

/// SQL longer than this is cut in the slow-query log.
const LOGGED_SQL_CHARS: usize = 2000;

/// One running query. Dropping it (when the result stream ends, fails or
/// is abandoned by the client) frees the slot and records the query.
pub struct Admission {
    _slot: OwnedSemaphorePermit,
    protocol: &'static str,
    sql: String,
    started: Instant,
    clock: Clock,
    slow_threshold: Option<Duration>,
    rows: AtomicU64,
}

impl Admission {
    pub(super) fn new(
        slot: OwnedSemaphorePermit,
        protocol: &'static str,
        sql: &str,
        slow_threshold: Option<Duration>,
        clock: Clock,
    ) -> Self {
        crate::telemetry::metrics().queries_running.inc();
        Self {
            _slot: slot,
            protocol,
            sql: sql.to_string(),
            started: clock.instant(),
            clock,
            slow_threshold,
            rows: AtomicU64::new(0),
        }
    }

    /// Counts rows sent to the client (for the slow-query log).
    pub fn sent(&self, rows: usize) {
        self.rows.fetch_add(rows as u64, Ordering::Relaxed);
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let took = self.clock.since(self.started);
        let m = crate::telemetry::metrics();
        m.queries_running.dec();
        m.queries.with_label_values(&[self.protocol]).inc();
        m.query_seconds
            .with_label_values(&[self.protocol])
            .observe(took.as_secs_f64());
        if self.slow_threshold.is_some_and(|t| took >= t) {
            m.slow_queries.inc();
            let sql: String = self.sql.chars().take(LOGGED_SQL_CHARS).collect();
            tracing::warn!(
                target: "streamdb::slow_query",
                protocol = self.protocol,
                elapsed_ms = took.as_millis() as u64,
                rows = self.rows.load(Ordering::Relaxed),
                sql = %sql,
                "slow query"
            );
        }
    }
}
