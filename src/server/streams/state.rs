//! What every handler of `/v1/stream/...` is given: the registry, the
//! engine, the endpoint's tunables and the shutdown node of its live reads.
//!
//! A leaf of `streams`: may depend on `ingest` and `stream` only.

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderValue;

use crate::ingest::Engine;
use crate::stream::registry::Registry;

/// Tunables of the protocol endpoint.
#[derive(Debug, Clone)]
pub struct StreamsConfig {
    /// How long a long-poll waits for data before answering 204.
    pub long_poll_timeout: Duration,
    /// How long one SSE connection stays open (clients reconnect).
    pub sse_max_duration: Duration,
    /// Largest body one request may carry (413 above it).
    pub max_body_bytes: usize,
    /// Most bytes one catch-up response carries (clients page on).
    pub max_read_bytes: usize,
    /// Streams that may exist at once (429 on create above it).
    pub max_streams: usize,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        Self {
            long_poll_timeout: Duration::from_secs(20),
            sse_max_duration: Duration::from_secs(60),
            max_body_bytes: 64 << 20,
            max_read_bytes: 1 << 20,
            max_streams: 10_000,
        }
    }
}

#[derive(Clone)]
pub struct StreamsState {
    pub registry: Arc<Registry>,
    pub engine: Arc<Engine>,
    pub config: StreamsConfig,
    /// The shutdown tree's node for SSE sessions and long-polls: they end
    /// when it is cancelled, so a graceful stop is not held open by them.
    pub sessions: crate::runtime::Tasks,
    /// Requests are authenticated (`--auth-token`): data responses may be
    /// cached by the reader only, never by a shared cache that would hand
    /// them to anyone asking for the URL (§8, §10).
    pub private: bool,
}

impl StreamsState {
    /// The engine's clock: cursors, long-poll and SSE deadlines.
    pub(super) fn clock(&self) -> &crate::runtime::Clock {
        &self.engine.config().clock
    }

    /// `Cache-Control` of a response that carries data.
    pub(super) fn data_cache_control(&self) -> HeaderValue {
        HeaderValue::from_static(if self.private {
            "private, max-age=60, stale-while-revalidate=300"
        } else {
            "public, max-age=60, stale-while-revalidate=300"
        })
    }
}
