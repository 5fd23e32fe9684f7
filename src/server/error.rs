//! The one place where errors become HTTP responses: the status from the
//! error's [`ErrorKind`] (through [`ErrorKind::http_status`]), the body
//! `{"error": "<message>"}`. Every HTTP route's errors, axum's own
//! rejections included, have that body.

use std::fmt::Display;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::error::{ErrorKind, HasKind};

/// The response a client gets for `e`. Server faults are logged here, once.
pub fn error_response<E: HasKind + Display>(e: &E) -> Response {
    let kind: ErrorKind = e.kind();
    if kind.is_fault() {
        tracing::error!(error = %e, "HTTP request failed");
    }
    error(kind.http_status(), e.to_string())
}

/// A JSON error body `{"error": "..."}` with `status`, for refusals that
/// the protocol words at the edge (a missing parameter, a method a stream
/// does not take).
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": message.into() }).to_string();
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::EngineError;
    use crate::query::QueryError;
    use crate::stream::registry::StreamError;

    /// An error of each layer keeps its message and gets its kind's status.
    #[tokio::test]
    async fn errors_of_every_layer_become_their_kinds_status() {
        let cases = [
            (
                error_response(&QueryError::Timeout(std::time::Duration::from_secs(3))),
                StatusCode::GATEWAY_TIMEOUT,
            ),
            (
                error_response(&QueryError::ResourcesExhausted("256 KiB".into())),
                StatusCode::TOO_MANY_REQUESTS,
            ),
            (
                error_response(&EngineError::BatchTooLarge { rows: 2, limit: 1 }),
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
            (
                error_response(&EngineError::ShuttingDown),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                error_response(&StreamError::StaleEpoch { current: 3 }),
                StatusCode::FORBIDDEN,
            ),
        ];
        for (r, status) in cases {
            assert_eq!(r.status(), status);
            assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        }
        let r = error_response(&StreamError::Gone);
        assert_eq!(r.status(), StatusCode::GONE);
        let body = axum::body::to_bytes(r.into_body(), 1 << 10).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], StreamError::Gone.to_string());
    }
}
