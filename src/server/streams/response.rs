//! Error responses of the protocol endpoint: a JSON `{"error": "..."}`
//! body, and the status and headers each stream error maps to (§5).
//!
//! A leaf of `streams`: may depend on `params` and `stream` only.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::stream::registry::StreamError;

/// A JSON error body `{"error": "..."}` with `status`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": message.into() }).to_string();
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Maps a stream error to its status and headers (§5).
pub(super) fn stream_error(e: StreamError) -> Response {
    use super::params::*;
    let status = match &e {
        StreamError::NotFound => StatusCode::NOT_FOUND,
        StreamError::Gone | StreamError::Truncated { .. } => StatusCode::GONE,
        StreamError::BadRequest(_) => StatusCode::BAD_REQUEST,
        StreamError::Conflict(_)
        | StreamError::Closed { .. }
        | StreamError::ContentTypeMismatch { .. }
        | StreamError::SeqRegression { .. }
        | StreamError::SequenceGap { .. } => StatusCode::CONFLICT,
        StreamError::StaleEpoch { .. } => StatusCode::FORBIDDEN,
        StreamError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        StreamError::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
    };
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(error = %e, "stream operation failed");
    }
    let mut r = error(status, e.to_string());
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
pub(super) fn set(h: &mut HeaderMap, name: &'static str, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        h.insert(name, v);
    }
}
