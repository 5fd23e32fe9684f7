//! GET (catch-up and long-poll; SSE is in `sse`) and HEAD.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::params::{self, Live, Start, *};
use super::response::{error, set, stream_error};
use super::source::{Source, METRICS};
use super::state::StreamsState;
use super::{cursor, sse};
use crate::stream::registry::{Expiry, ReadBatch, StreamError};
use crate::stream::Position;

/// Looks a stream up by name (`metrics` is the engine's log).
pub(super) async fn source(s: &StreamsState, name: &str) -> Result<Source, StreamError> {
    if name == METRICS {
        return Ok(Source::Metrics(s.engine.clone()));
    }
    s.registry.get(name).await.map(Source::Named)
}

pub(super) async fn head(s: &StreamsState, name: &str) -> Response {
    let src = match source(s, name).await {
        Ok(src) => src,
        Err(e) => return stream_error(e),
    };
    let mut r = StatusCode::OK.into_response();
    let h = r.headers_mut();
    set(h, "content-type", src.content_type());
    set(h, STREAM_NEXT_OFFSET, src.tail().to_string());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if src.is_closed() {
        h.insert(STREAM_CLOSED, HeaderValue::from_static("true"));
    }
    if let Source::Named(n) = &src {
        match n.config().expiry {
            Some(Expiry::TtlSecs(t)) => set(h, STREAM_TTL, t.to_string()),
            Some(Expiry::At(ms)) => {
                if let Some(t) = chrono::DateTime::from_timestamp_millis(ms) {
                    set(
                        h,
                        STREAM_EXPIRES_AT,
                        t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    );
                }
            }
            None => {}
        }
    }
    r
}

pub(super) async fn get(
    s: &StreamsState,
    name: &str,
    query: &[(String, String)],
    headers: &HeaderMap,
) -> Response {
    let p = match params::read_params(query) {
        Ok(p) => p,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let src = match source(s, name).await {
        Ok(src) => src,
        Err(e) => return stream_error(e),
    };
    // Every read renews a sliding TTL, live ones when they start.
    if let Source::Named(n) = &src {
        n.touch();
    }
    let from = match p.start {
        Start::Beginning => src.beginning().into(),
        Start::Now => src.tail().into(),
        Start::At(o) => o,
    };
    match p.live {
        Live::Sse => sse::respond(s, src, from, p.cursor),
        Live::LongPoll => long_poll(s, &src, from, p.cursor.as_deref()).await,
        Live::No if p.start == Start::Now => now(&src),
        Live::No => catch_up(s, &src, from, headers),
    }
}

/// `offset=now` without `live`: no data, just the tail.
fn now(src: &Source) -> Response {
    let closed = src.is_closed();
    let tail = src.tail();
    let mut r = (StatusCode::OK, empty_body(src)).into_response();
    let h = r.headers_mut();
    set(h, "content-type", src.content_type());
    set(h, STREAM_NEXT_OFFSET, tail.to_string());
    h.insert(STREAM_UP_TO_DATE, HeaderValue::from_static("true"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if closed {
        h.insert(STREAM_CLOSED, HeaderValue::from_static("true"));
    }
    r
}

fn empty_body(src: &Source) -> Vec<u8> {
    if src.is_json() {
        b"[]".to_vec()
    } else {
        Vec::new()
    }
}

fn catch_up(s: &StreamsState, src: &Source, from: Position, headers: &HeaderMap) -> Response {
    let batch = match src.read(from, s.config.max_read_bytes) {
        Ok(b) => b,
        Err(e) => return stream_error(e),
    };
    let etag = format!(
        "\"{}:{}:{}{}\"",
        src.etag_id(),
        from,
        batch.next,
        if batch.closed { ":c" } else { "" }
    );
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut r = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, src.render(&batch.bodies)).into_response()
    };
    let h = r.headers_mut();
    set(h, header::ETAG.as_str(), etag);
    // Data never changes once written, so a chunk may be cached; a response
    // that is only "nothing new yet" must be revalidated.
    let cache = if batch.bodies.is_empty() {
        HeaderValue::from_static("no-cache")
    } else {
        s.data_cache_control()
    };
    h.insert(header::CACHE_CONTROL, cache);
    data_headers(h, src, &batch);
    r
}

/// Headers shared by catch-up and long-poll data responses.
fn data_headers(h: &mut HeaderMap, src: &Source, batch: &ReadBatch) {
    set(h, "content-type", src.content_type());
    set(h, STREAM_NEXT_OFFSET, batch.next.to_string());
    if batch.up_to_date {
        h.insert(STREAM_UP_TO_DATE, HeaderValue::from_static("true"));
    }
    if batch.closed {
        h.insert(STREAM_CLOSED, HeaderValue::from_static("true"));
    }
}

async fn long_poll(
    s: &StreamsState,
    src: &Source,
    from: Position,
    client_cursor: Option<&str>,
) -> Response {
    let deadline = s.clock().instant() + s.config.long_poll_timeout;
    let mut waiter = src.waiter();
    let closing = &s.sessions;
    loop {
        if let Some(e) = src.removed() {
            return stream_error(e);
        }
        let batch = match src.read(from, s.config.max_read_bytes) {
            Ok(b) => b,
            Err(e) => return stream_error(e),
        };
        if !batch.bodies.is_empty() {
            let mut r = (StatusCode::OK, src.render(&batch.bodies)).into_response();
            let h = r.headers_mut();
            data_headers(h, src, &batch);
            set(h, STREAM_CURSOR, cursor::next(s.clock(), client_cursor));
            h.insert(header::CACHE_CONTROL, s.data_cache_control());
            return r;
        }
        // At the tail of a closed stream there is nothing to wait for.
        let timed_out = if batch.closed {
            true
        } else {
            tokio::select! {
                changed = tokio::time::timeout_at(deadline, waiter.changed()) => match changed {
                    Err(_) => true,
                    Ok(true) => false,
                    Ok(false) => return error(StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down"),
                },
                // Stopping: answer "nothing new" now; the client polls again.
                _ = closing.cancelled() => true,
            }
        };
        if timed_out {
            let mut r = StatusCode::NO_CONTENT.into_response();
            let h = r.headers_mut();
            set(h, STREAM_NEXT_OFFSET, batch.next.to_string());
            h.insert(STREAM_UP_TO_DATE, HeaderValue::from_static("true"));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            if batch.closed {
                h.insert(STREAM_CLOSED, HeaderValue::from_static("true"));
            } else {
                set(h, STREAM_CURSOR, cursor::next(s.clock(), client_cursor));
            }
            return r;
        }
    }
}
