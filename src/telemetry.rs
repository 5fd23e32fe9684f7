//! The server's own metrics, served at `/metrics` in the Prometheus text
//! format.
//!
//! One registry per process: counters and histograms are bumped where the
//! event happens (the log's fsync, the flusher, query admission, the error
//! mappers), and gauges that mirror engine state (buffer, chunks, streams)
//! are set from a status snapshot when `/metrics` is scraped, so they are
//! never stale and cost nothing between scrapes.
//!
//! Every module may use this one; it uses none of them.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// All of StreamDB's self-metrics.
pub struct Metrics {
    registry: Registry,
    /// Rows accepted by durable writes (DoPut, HTTP, `--source`).
    pub ingest_rows: IntCounter,
    /// Acknowledged write batches.
    pub ingest_batches: IntCounter,
    /// Bytes appended to stream logs (the metrics stream and named
    /// streams, framing included).
    pub log_bytes: IntCounter,
    /// Latency of one group-commit fsync of a stream log.
    pub log_fsync: Histogram,
    /// Flushes of the write buffer that committed a manifest version.
    pub flushes: IntCounter,
    /// Flush attempts that failed (they are retried).
    pub flush_failures: IntCounter,
    /// Wall time of one successful flush.
    pub flush_seconds: Histogram,
    /// Queries executed, by protocol (`flight`, `http`).
    pub queries: IntCounterVec,
    /// Wall time of one query from admission to its last batch.
    pub query_seconds: HistogramVec,
    /// Queries slower than `--slow-query-threshold`.
    pub slow_queries: IntCounter,
    /// Queries running now.
    pub queries_running: IntGauge,
    /// Update messages sent to subscribers.
    pub subscription_updates: IntCounter,
    /// Errors answered to clients, by protocol and kind.
    pub errors: IntCounterVec,
    /// Requests refused by a limit, by which limit.
    pub limited: IntCounterVec,
    // Gauges set at scrape time from the engine's status.
    pub buffer_rows: IntGauge,
    pub buffer_bytes: IntGauge,
    pub chunks: IntGauge,
    pub chunk_bytes: IntGauge,
    pub stored_rows: IntGauge,
    pub series: IntGauge,
    /// Series in the last-value cache, and 1 while it answers queries.
    pub last_value_series: IntGauge,
    pub last_value_complete: IntGauge,
    pub compaction_backlog: IntGauge,
    pub compactions: IntGauge,
    pub garbage_pending: IntGauge,
    /// 1 while a `--source` consumer follows its stream; 0 when it is
    /// retrying, finished or stopped, or there is none.
    pub source_following: IntGauge,
    pub expired_chunks: IntGauge,
    pub cache_bytes: IntGauge,
    pub cache_hits: IntGauge,
    pub cache_misses: IntGauge,
    pub stream_log_bytes: IntGauge,
    pub subscriptions: IntGauge,
    pub named_streams: IntGauge,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

/// Seconds, from 100 µs to ~100 s: fsyncs sit at the low end, queries and
/// flushes anywhere.
fn latency_buckets() -> Vec<f64> {
    exponential_buckets(0.0001, 2.5, 16).expect("valid buckets")
}

fn histogram(r: &Registry, name: &str, help: &str) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(latency_buckets()))
        .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

impl Metrics {
    fn new() -> Self {
        let r = Registry::new();
        let query_seconds = HistogramVec::new(
            HistogramOpts::new(
                "streamdb_query_seconds",
                "Wall time of one query, admission to last batch",
            )
            .buckets(latency_buckets()),
            &["protocol"],
        )
        .expect("valid metric");
        r.register(Box::new(query_seconds.clone()))
            .expect("unique metric");
        Self {
            ingest_rows: counter(
                &r,
                "streamdb_ingest_rows_total",
                "Rows acknowledged by durable writes",
            ),
            ingest_batches: counter(
                &r,
                "streamdb_ingest_batches_total",
                "Write batches acknowledged",
            ),
            log_bytes: counter(
                &r,
                "streamdb_log_bytes_total",
                "Bytes appended to stream logs (metrics stream and named streams)",
            ),
            log_fsync: histogram(
                &r,
                "streamdb_log_fsync_seconds",
                "Latency of one group-commit fsync of a stream log",
            ),
            flushes: counter(
                &r,
                "streamdb_flushes_total",
                "Write-buffer flushes committed to the manifest",
            ),
            flush_failures: counter(
                &r,
                "streamdb_flush_failures_total",
                "Flush attempts that failed and will be retried",
            ),
            flush_seconds: histogram(
                &r,
                "streamdb_flush_seconds",
                "Wall time of one successful flush",
            ),
            queries: counter_vec(
                &r,
                "streamdb_queries_total",
                "Queries executed",
                &["protocol"],
            ),
            query_seconds,
            slow_queries: counter(
                &r,
                "streamdb_slow_queries_total",
                "Queries slower than --slow-query-threshold",
            ),
            queries_running: gauge(&r, "streamdb_queries_running", "Queries running now"),
            subscription_updates: counter(
                &r,
                "streamdb_subscription_updates_total",
                "Update messages sent to subscribers",
            ),
            errors: counter_vec(
                &r,
                "streamdb_errors_total",
                "Errors answered to clients",
                &["protocol", "kind"],
            ),
            limited: counter_vec(
                &r,
                "streamdb_limit_rejections_total",
                "Requests refused by a configured limit",
                &["limit"],
            ),
            buffer_rows: gauge(
                &r,
                "streamdb_buffer_rows",
                "Rows in the write buffer, not yet flushed",
            ),
            buffer_bytes: gauge(
                &r,
                "streamdb_buffer_bytes",
                "Bytes held by the write buffer",
            ),
            chunks: gauge(&r, "streamdb_chunks", "Chunk files in the current manifest"),
            chunk_bytes: gauge(
                &r,
                "streamdb_chunk_bytes",
                "Bytes of chunk files in the current manifest",
            ),
            stored_rows: gauge(&r, "streamdb_stored_rows", "Rows in chunk files"),
            series: gauge(&r, "streamdb_series", "Series in the catalog"),
            last_value_series: gauge(
                &r,
                "streamdb_last_value_cache_series",
                "Series in the last-value cache",
            ),
            last_value_complete: gauge(
                &r,
                "streamdb_last_value_cache_complete",
                "1 while latest-value queries are answered from the last-value cache",
            ),
            compaction_backlog: gauge(
                &r,
                "streamdb_compaction_backlog_chunks",
                "Chunks the compactor would merge now",
            ),
            compactions: gauge(
                &r,
                "streamdb_compactions",
                "Partitions compacted since start",
            ),
            source_following: gauge(
                &r,
                "streamdb_source_following",
                "1 while the --source consumer follows its stream; 0 when retrying, finished or stopped",
            ),
            garbage_pending: gauge(
                &r,
                "streamdb_garbage_files",
                "Files dropped from the manifest, awaiting deletion after the grace period",
            ),
            expired_chunks: gauge(
                &r,
                "streamdb_expired_chunks",
                "Chunks dropped by retention since start",
            ),
            cache_bytes: gauge(
                &r,
                "streamdb_chunk_cache_bytes",
                "Bytes of decoded chunks in the cache",
            ),
            cache_hits: gauge(
                &r,
                "streamdb_chunk_cache_hits",
                "Chunk reads served from the cache since start",
            ),
            cache_misses: gauge(
                &r,
                "streamdb_chunk_cache_misses",
                "Chunk reads that fetched from storage since start",
            ),
            stream_log_bytes: gauge(
                &r,
                "streamdb_stream_log_bytes",
                "Bytes of metrics stream log segments on disk",
            ),
            subscriptions: gauge(
                &r,
                "streamdb_subscriptions",
                "Continuous queries running now",
            ),
            named_streams: gauge(
                &r,
                "streamdb_named_streams",
                "Durable Streams streams that exist",
            ),
            registry: r,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding of gathered metrics");
        String::from_utf8(out).expect("the text format is UTF-8")
    }

    /// Counts one error answered to a client.
    pub fn error(&self, protocol: &str, kind: &str) {
        self.errors.with_label_values(&[protocol, kind]).inc();
    }

    /// Counts one request refused by `limit` (also an error of its protocol).
    pub fn limited(&self, limit: &str) {
        self.limited.with_label_values(&[limit]).inc();
    }

    pub fn observe_fsync(&self, took: Duration) {
        self.log_fsync.observe(took.as_secs_f64());
    }
}

/// The Content-Type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_labels_in_text_format() {
        let m = Metrics::new();
        m.ingest_rows.inc_by(7);
        m.error("http", "invalid_argument");
        let text = m.render();
        assert!(
            text.contains("# TYPE streamdb_ingest_rows_total counter"),
            "{text}"
        );
        assert!(text.contains("streamdb_ingest_rows_total 7\n"), "{text}");
        assert!(
            text.contains(r#"streamdb_errors_total{kind="invalid_argument",protocol="http"} 1"#),
            "{text}"
        );
    }
}
