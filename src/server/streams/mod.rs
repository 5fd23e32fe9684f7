//! The Durable Streams protocol over HTTP at `/v1/stream/{name}`: create,
//! append, close, delete, HEAD, catch-up reads, long-poll, SSE, JSON mode,
//! idempotent producers, forks, expiry and caching, as PROTOCOL.md
//! specifies. `metrics` is always present: it is the database's own log,
//! written and read as JSON point messages (see `metrics`).
//!
//! # Layout
//! - `params`: strict header and query parsing.
//! - `source`: what reads read (a named stream or the metrics log).
//! - `read`: GET (catch-up, long-poll) and HEAD.
//! - `sse`: GET with `live=sse`.
//! - `write`: PUT, POST, DELETE on named streams.
//! - `metrics`: writes to the metrics stream.
//! - `cursor`: `Stream-Cursor` values.

mod cursor;
mod metrics;
pub(crate) mod params;
mod read;
mod source;
mod sse;
mod write;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

pub(crate) use super::error::{error, error_response};
use crate::ingest::Engine;
use crate::stream::registry::{Registry, StreamError};

pub use source::METRICS;

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
    /// Becomes `true` when the server stops: live reads (long-poll, SSE)
    /// answer at once so a graceful shutdown is not held open by them.
    pub closing: tokio::sync::watch::Receiver<bool>,
    /// Requests are authenticated (`--auth-token`): data responses may be
    /// cached by the reader only, never by a shared cache that would hand
    /// them to anyone asking for the URL (§8, §10).
    pub private: bool,
}

impl StreamsState {
    /// `Cache-Control` of a response that carries data.
    fn data_cache_control(&self) -> HeaderValue {
        HeaderValue::from_static(if self.private {
            "private, max-age=60, stale-while-revalidate=300"
        } else {
            "public, max-age=60, stale-while-revalidate=300"
        })
    }
}

/// Headers every response of the HTTP side carries, errors included: no
/// MIME sniffing, cross-origin reads allowed, and the protocol's headers
/// visible to browser code.
pub fn security_headers(headers: &mut HeaderMap) {
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("cross-origin"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(
            "stream-next-offset, stream-cursor, stream-up-to-date, stream-closed, stream-ttl, \
             stream-expires-at, stream-sse-data-encoding, producer-epoch, producer-seq, \
             producer-expected-seq, producer-received-seq, etag, location, content-type",
        ),
    );
}

/// The single handler for `/v1/stream/{*name}`: dispatches on the method.
pub async fn handle(
    State(s): State<StreamsState>,
    Path(name): Path<String>,
    method: Method,
    uri: Uri,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(why) = check_name(&name) {
        return error(StatusCode::BAD_REQUEST, why);
    }
    if name == "__ds" || name.starts_with("__ds/") {
        return error(
            StatusCode::NOT_FOUND,
            "the __ds control namespace (subscriptions) is not implemented by this server",
        );
    }
    let metrics = name == METRICS;
    match method {
        Method::OPTIONS => preflight(&headers),
        Method::GET => read::get(&s, &name, &query, &headers).await,
        Method::HEAD => read::head(&s, &name).await,
        Method::PUT if metrics => metrics::put(&headers, &body),
        Method::POST if metrics => metrics::post(&s, &headers, body).await,
        Method::DELETE if metrics => metrics::delete(),
        Method::PUT => write::put(&s, &name, &uri, &headers, body).await,
        Method::POST => write::post(&s, &name, &headers, body).await,
        Method::DELETE => write::delete(&s, &name).await,
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not a stream operation"),
        ),
    }
}

/// Stream names are the URL path after `/v1/stream/`: non-empty, at most
/// 1024 bytes, no empty, `.` or `..` segments, no control characters.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 1024 {
        return Err("stream name must be 1 to 1024 bytes".into());
    }
    if name
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(format!(
            "stream name {name:?} has an empty, . or .. path segment"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("stream name contains control characters".into());
    }
    Ok(())
}

/// CORS preflight: every method and header the protocol uses.
fn preflight(headers: &HeaderMap) -> Response {
    let requested = headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let allow = format!(
        "content-type, if-none-match, authorization, stream-seq, stream-ttl, stream-expires-at, \
         stream-closed, stream-forked-from, stream-fork-offset, stream-fork-sub-offset, producer-id, \
         producer-epoch, producer-seq{}{}",
        if requested.is_empty() { "" } else { ", " },
        requested
    );
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, PUT, POST, DELETE, OPTIONS"),
    );
    if let Ok(v) = HeaderValue::from_str(&allow) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    r
}

/// A stream error's response (its kind's status) with the headers §5 adds.
fn stream_error(e: StreamError) -> Response {
    use params::*;
    let mut r = error_response(&e);
    let h = r.headers_mut();
    match e {
        StreamError::Closed { next } => {
            h.insert(STREAM_CLOSED, HeaderValue::from_static("true"));
            set(h, STREAM_NEXT_OFFSET, next.to_string());
        }
        StreamError::StaleEpoch { current } => set(h, PRODUCER_EPOCH, current.to_string()),
        StreamError::SequenceGap { expected, received } => {
            set(h, PRODUCER_EXPECTED_SEQ, expected.to_string());
            set(h, PRODUCER_RECEIVED_SEQ, received.to_string());
        }
        _ => {}
    }
    r
}

/// Sets a header from text that is known to be a valid header value
/// (offsets, integers, content types the client sent us).
fn set(h: &mut HeaderMap, name: &'static str, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        h.insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::check_name;

    #[test]
    fn names_are_checked() {
        for ok in ["a", "events/abc", "x-1.2_3"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a//b", "../x", "a/./b", "a/", "a\nb"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
