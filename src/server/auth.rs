//! With `--auth-token`, every gRPC call and HTTP route needs
//! `authorization: Bearer <token>`; health checks (HTTP `/health`, gRPC
//! health) stay open for load balancers, and Flight's `Handshake` does its
//! own credential check (it is how Basic credentials become a token).
//! Refusals are gRPC UNAUTHENTICATED or HTTP 401, before any handler runs,
//! so nothing is read or written.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::flight::auth::Tokens;

const OPEN_PATHS: [&str; 2] = ["/health", "/arrow.flight.protocol.FlightService/Handshake"];

pub async fn require_token(State(tokens): State<Tokens>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let open = !tokens.enabled()
        || OPEN_PATHS.contains(&path)
        || path.starts_with("/grpc.health.v1.Health/")
        // CORS preflights carry no credentials by design.
        || request.method() == axum::http::Method::OPTIONS;
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    if open || tokens.accepts_header(presented) {
        return next.run(request).await;
    }
    let why = if presented.is_some() {
        "invalid token"
    } else {
        "authentication required: send `authorization: Bearer <token>`"
    };
    let is_grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    if is_grpc {
        return tonic::Status::unauthenticated(why)
            .into_http::<axum::body::Body>()
            .into_response();
    }
    let mut r = (
        StatusCode::UNAUTHORIZED,
        serde_json::json!({ "error": why }).to_string(),
    )
        .into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    // The check runs outside the router that adds these; without CORS
    // headers a browser could not even read that the status is 401.
    super::streams::security_headers(r.headers_mut());
    r
}
