//! Error responses of the protocol endpoint: a stream error's status (its
//! kind's, from `server::error`) plus the headers §5 adds to it.
//!
//! A leaf of `streams`: may depend on `params`, `server::error` and
//! `stream` only.

use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;

pub(super) use crate::server::error::error;
use crate::server::error::error_response;
use crate::stream::registry::StreamError;

/// A stream error's response (its kind's status) with the headers §5 adds.
pub(super) fn stream_error(e: StreamError) -> Response {
    use super::params::*;
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
pub(super) fn set(h: &mut HeaderMap, name: &'static str, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        h.insert(name, v);
    }
}
