//! Writes to the `metrics` stream: JSON or NDJSON point messages through the
//! same validation and durable path as DoPut. The stream always exists, is
//! JSON, never expires, and cannot be closed or deleted. Idempotent
//! producers and `Stream-Seq` work as on named streams; their state is
//! logged with the points (see `ingest::exactly_once`).

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::params::{self, STREAM_NEXT_OFFSET};
use super::response::{error, set, stream_error};
use super::source::METRICS_CONTENT_TYPE;
use super::state::StreamsState;
use crate::ingest::Once;
use crate::server::error::error_response;
use crate::stream::registry::{accepts, media_type};

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
    let (producer, stream_seq) = match (
        params::producer(headers),
        params::header(headers, params::STREAM_SEQ),
    ) {
        (Ok(p), Ok(seq)) => (p, seq.map(str::to_string)),
        (Err(why), _) | (_, Err(why)) => return error(StatusCode::BAD_REQUEST, why),
    };
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
    let written = s
        .engine
        .write_json(body, ndjson, producer.clone(), stream_seq.clone())
        .await;
    // A new producer batch is 200 with its tuple; a retry is 204 with the
    // highest sequence accepted (§5.2.1); plain appends are 204.
    let (status, next, seq) = match written {
        Ok(Once::Written(receipt)) => {
            let status = if producer.is_some() {
                StatusCode::OK
            } else {
                StatusCode::NO_CONTENT
            };
            (
                status,
                receipt.offset.next(),
                producer.as_ref().map(|p| p.seq),
            )
        }
        Ok(Once::NotWritten(verdict)) => {
            match accepts(verdict, producer.as_ref(), stream_seq.as_deref()) {
                Ok(last_seq) => (
                    StatusCode::NO_CONTENT,
                    s.engine.log().next_offset(),
                    last_seq,
                ),
                Err(e) => return stream_error(e),
            }
        }
        Err(e) => return error_response(&e),
    };
    let mut r = status.into_response();
    let h = r.headers_mut();
    set(h, STREAM_NEXT_OFFSET, next.to_string());
    if let (Some(p), Some(seq)) = (&producer, seq) {
        set(h, params::PRODUCER_EPOCH, p.epoch.to_string());
        set(h, params::PRODUCER_SEQ, seq.to_string());
    }
    r
}
