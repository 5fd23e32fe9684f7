//! Observability at the server's edge: `/metrics` and the count of errors
//! answered, by protocol and kind.
//!
//! Errors are counted here, once, from what actually goes back on the wire:
//! HTTP status codes, and gRPC `grpc-status` whether it arrives in the
//! headers (errors before any data) or in the trailers (errors mid-stream).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::Frame;

use crate::ingest::Engine;
use crate::query::subscribe::Subscriptions;
use crate::runtime::Clock;
use crate::stream::registry::Registry;
use crate::telemetry::{metrics, CONTENT_TYPE};

/// What `/metrics` reads its gauges from.
#[derive(Clone)]
pub struct ObserveState {
    pub engine: Arc<Engine>,
    pub subscriptions: Arc<Subscriptions>,
    pub registry: Arc<Registry>,
}

/// `GET /metrics`: gauges refreshed from the engine, then every metric.
pub async fn scrape(State(s): State<ObserveState>) -> Response {
    let m = metrics();
    let st = s.engine.status();
    m.buffer_rows.set(st.buffer.rows as i64);
    m.buffer_bytes.set(st.buffer.bytes as i64);
    m.chunks.set(st.storage.chunks as i64);
    m.chunk_bytes.set(st.storage.bytes as i64);
    m.stored_rows.set(st.storage.rows as i64);
    m.compaction_backlog
        .set(st.storage.compaction_backlog as i64);
    let mt = &st.storage.maintenance;
    m.compactions.set(mt.compactions as i64);
    m.garbage_pending.set(mt.garbage_pending as i64);
    if let Some(source) = &st.source {
        m.source_following
            .set(i64::from(source.state == "following"));
    }
    m.expired_chunks.set(mt.expired_chunks as i64);
    let c = &st.storage.cache;
    m.cache_bytes.set(c.bytes as i64);
    m.cache_hits.set(c.hits as i64);
    m.cache_misses.set(c.misses as i64);
    m.series.set(st.series as i64);
    let lv = &st.last_value_cache;
    m.last_value_series.set(lv.series as i64);
    m.last_value_complete.set(i64::from(lv.state == "complete"));
    m.stream_log_bytes.set(st.stream.bytes as i64);
    m.subscriptions.set(s.subscriptions.active() as i64);
    m.named_streams.set(s.registry.len() as i64);
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], m.render()).into_response()
}

/// Middleware counting every error response.
pub async fn count_errors(request: Request, next: Next) -> Response {
    let grpc = is_grpc(request.headers());
    // Which calls a client makes, and how long each takes to answer its
    // headers (RUST_LOG=streamdb::requests=debug): how round trips per
    // query are found.
    let traced =
        tracing::enabled!(target: "streamdb::requests", tracing::Level::DEBUG).then(|| {
            (
                request.method().clone(),
                request.uri().path().to_owned(),
                clock_started(),
            )
        });
    let response = next.run(request).await;
    if let Some((method, path, (clock, started))) = traced {
        tracing::debug!(target: "streamdb::requests", %method, %path,
            status = response.status().as_u16(), micros = clock.instant().saturating_duration_since(started).as_micros() as u64, "answered");
    }
    // A gRPC-typed request refused in HTTP terms (the gate's 405, 415,
    // 505) carries no grpc-status: count its HTTP status.
    if !grpc || response.status() != axum::http::StatusCode::OK {
        if let Some(kind) = http_kind(response.status().as_u16()) {
            metrics().error("http", kind);
        }
        return response;
    }
    // A trailers-only reply carries its status in the headers.
    if let Some(code) = response.headers().get("grpc-status") {
        count_grpc(code);
        return response;
    }
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, Body::new(TrailerWatch { inner: body }))
}

/// The clock a traced request is timed with, and its start.
fn clock_started() -> (Clock, tokio::time::Instant) {
    let clock = Clock::system();
    let now = clock.instant();
    (clock, now)
}

fn is_grpc(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

fn count_grpc(code: &HeaderValue) {
    let code = tonic::Code::from_bytes(code.as_bytes());
    if code != tonic::Code::Ok {
        metrics().error("grpc", grpc_kind(code));
    }
}

/// A gRPC reply body that counts the status in its trailers.
struct TrailerWatch {
    inner: Body,
}

impl http_body::Body for TrailerWatch {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(code) = frame.trailers_ref().and_then(|t| t.get("grpc-status")) {
                count_grpc(code);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The error kind of an HTTP status, in gRPC's vocabulary so the two
/// protocols share one set of `kind` labels. `None` for success.
fn http_kind(status: u16) -> Option<&'static str> {
    Some(match status {
        0..=399 => return None,
        401 => "unauthenticated",
        403 => "permission_denied",
        404 | 410 => "not_found",
        409 | 412 => "conflict",
        413 | 429 => "resource_exhausted",
        503 => "unavailable",
        504 => "deadline_exceeded",
        // gRPC over HTTP/1.1: the client's mistake, not the server's.
        505 => "invalid_argument",
        400..=499 => "invalid_argument",
        _ => "internal",
    })
}

fn grpc_kind(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "ok",
        Cancelled => "cancelled",
        InvalidArgument | OutOfRange | FailedPrecondition => "invalid_argument",
        DeadlineExceeded => "deadline_exceeded",
        NotFound => "not_found",
        AlreadyExists | Aborted => "conflict",
        PermissionDenied => "permission_denied",
        ResourceExhausted => "resource_exhausted",
        Unimplemented => "unimplemented",
        Unavailable => "unavailable",
        Unauthenticated => "unauthenticated",
        Unknown | Internal | DataLoss => "internal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_map_to_shared_kinds() {
        assert_eq!(http_kind(204), None);
        assert_eq!(http_kind(304), None);
        assert_eq!(http_kind(400), Some("invalid_argument"));
        assert_eq!(http_kind(413), Some("resource_exhausted"));
        assert_eq!(http_kind(429), Some("resource_exhausted"));
        assert_eq!(http_kind(500), Some("internal"));
        assert_eq!(
            grpc_kind(tonic::Code::ResourceExhausted),
            "resource_exhausted"
        );
    }
}
