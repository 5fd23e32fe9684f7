//! Writes to the `metrics` stream: JSON or NDJSON point messages through the
//! same validation and durable path as DoPut. The stream always exists, is
//! JSON, never expires, and cannot be closed or deleted.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::params::{self, STREAM_NEXT_OFFSET};
use super::source::METRICS_CONTENT_TYPE;
use super::{error, set, StreamsState};
use crate::ingest::{json, EngineError};
use crate::stream::registry::media_type;

/// `PUT /v1/stream/metrics` succeeds (200) when it asks for what the stream
/// is; any other configuration conflicts.
pub(super) fn put(headers: &HeaderMap, body: &Bytes) -> Response {
    let ct = headers.get("content-type").and_then(|v| v.to_str().ok());
    let same = ct.is_none_or(|ct| media_type(ct) == METRICS_CONTENT_TYPE)
        && headers.get(params::STREAM_TTL).is_none()
        && headers.get(params::STREAM_EXPIRES_AT).is_none()
        && headers.get(params::STREAM_FORKED_FROM).is_none()
        && !params::closed_flag(headers)
        && body.is_empty();
    if !same {
        return error(
            StatusCode::CONFLICT,
            "the metrics stream is built in (application/json, no expiry, never closed); it cannot be re-created differently",
        );
    }
    let mut r = StatusCode::OK.into_response();
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static(METRICS_CONTENT_TYPE),
    );
    r
}

pub(super) fn delete() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "the metrics stream is the database's write-ahead log and cannot be deleted (use retention for old data)",
    )
}

pub(super) async fn post(s: &StreamsState, headers: &HeaderMap, body: Bytes) -> Response {
    if params::closed_flag(headers) {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "the metrics stream cannot be closed: it is the database's write-ahead log",
        );
    }
    if headers.get(params::PRODUCER_ID).is_some() || headers.get(params::STREAM_SEQ).is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            "Producer-* and Stream-Seq headers are not supported on the metrics stream (see docs/DURABLE_STREAMS.md)",
        );
    }
    let ndjson = match headers.get("content-type").and_then(|v| v.to_str().ok()).map(media_type) {
        None => return error(StatusCode::BAD_REQUEST, "missing Content-Type: use application/json or application/x-ndjson"),
        Some(ct) if ct == METRICS_CONTENT_TYPE => false,
        Some(ct) if ct == "application/x-ndjson" || ct == "application/ndjson" => true,
        Some(ct) => {
            return error(
                StatusCode::CONFLICT,
                format!("content type {ct:?} does not match the metrics stream: use application/json or application/x-ndjson"),
            )
        }
    };
    if body.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "empty body: send one point, an array of points, or NDJSON",
        );
    }
    let _gate = s.engine.series_guard().await;
    let points = match json::parse(&body, ndjson, s.engine.catalog()) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match s.engine.write_points(points).await {
        Ok(receipt) => {
            let mut r = StatusCode::NO_CONTENT.into_response();
            set(
                r.headers_mut(),
                STREAM_NEXT_OFFSET,
                receipt.offset.next().to_string(),
            );
            r
        }
        Err(e) => {
            let status = match &e {
                EngineError::InvalidBatch(_) => StatusCode::BAD_REQUEST,
                EngineError::Backpressure { .. } => StatusCode::TOO_MANY_REQUESTS,
                EngineError::BatchTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                EngineError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(status, e.to_string())
        }
    }
}
