//! The gate in front of the whole port: it decides what a request is from
//! its path, refuses malformed gRPC, and with `--auth-token` requires
//! `authorization: Bearer <token>` before any handler runs, so a refused
//! call reads and writes nothing.
//!
//! A request is gRPC when its path is under a registered service
//! (`/<package.Service>/`) or merely looks like one (its first segment has
//! a dot; no HTTP route's does). tonic dispatches on the path alone, so
//! every such request must look like gRPC before it goes on: POST, over
//! HTTP/2, with `application/grpc` (or `+proto`); anything else is an
//! HTTP refusal (405, 505, 415), never a call. Paths of that shape that
//! name no registered method get UNIMPLEMENTED here, so nothing but a
//! registered method reaches tonic.
//!
//! Open without a token: HTTP `GET`/`HEAD /health`, gRPC health (load
//! balancers), Flight's `Handshake` (it checks credentials itself: it is
//! how Basic credentials become a token), and CORS preflights (`OPTIONS`)
//! of the Durable Streams routes, which browsers send without credentials
//! by design. Everything else, unknown paths included, needs the token:
//! the open set is a list, the rest fails closed.
//!
//! The gate puts the caller's [`Role`] in the request's extensions (every
//! caller is `ReadWrite` with authentication off). A read-only token
//! (`--read-only-token`) reaches the HTTP side only through `GET`, `HEAD`
//! and `POST /v1/query`; on gRPC every method is open to it but the
//! writing `DoPut` commands, which the Flight service refuses from the
//! role (PERMISSION_DENIED): which command a DoPut carries is known only
//! once its first message is read.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Version};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::error;
use crate::flight::auth::{Role, Tokens, READ_ONLY_REFUSAL};

const HANDSHAKE: &str = "/arrow.flight.protocol.FlightService/Handshake";
const HEALTH: &str = "/grpc.health.v1.Health/";
/// The routes browsers call cross-origin (and so preflight).
const PREFLIGHT_ROUTES: &str = "/v1/stream/";

/// What the gate knows: the accepted tokens and the gRPC services served.
#[derive(Clone, Debug)]
pub struct Gate {
    tokens: Tokens,
    services: Arc<[&'static str]>,
}

impl Gate {
    /// `services` are the registered gRPC service names (`NamedService::NAME`).
    pub fn new(tokens: Tokens, services: Vec<&'static str>) -> Self {
        Self {
            tokens,
            services: services.into(),
        }
    }
}

/// The reply to a refused request (boxed: a `Response` is large for an
/// `Err` that the admitted path only passes through).
type Refusal = Box<Response>;

/// The middleware: admits the request or answers the refusal.
pub async fn guard(State(gate): State<Gate>, mut request: Request, next: Next) -> Response {
    let admitted = if is_grpc_path(request.uri().path(), &gate.services) {
        admit_grpc(&gate, &request)
    } else {
        admit_http(&gate, &request)
    };
    match admitted {
        Ok(role) => {
            request.extensions_mut().insert(role);
            next.run(request).await
        }
        Err(refusal) => {
            drain(request.into_body()).await;
            *refusal
        }
    }
}

/// A client still sending its body when a refusal goes out sees its
/// stream reset instead of the refusal (curl: "Stream error in the HTTP/2
/// framing layer"), so a small body is read first. Bounded in bytes and
/// time: a refused client cannot hold the server, and a gRPC stream that
/// never ends costs its caller only the wait.
async fn drain(body: axum::body::Body) {
    const MAX_BYTES: usize = 64 << 10;
    const MAX_WAIT: std::time::Duration = std::time::Duration::from_millis(250);
    let _ = tokio::time::timeout(MAX_WAIT, axum::body::to_bytes(body, MAX_BYTES)).await;
}

/// gRPC-shaped: under a registered service, or a first segment with a dot
/// (leading slashes skipped, so `//pkg.Svc/M` is gRPC-shaped too).
fn is_grpc_path(path: &str, services: &[&str]) -> bool {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    first.contains('.') || services.iter().any(|s| under_service(path, s))
}

fn under_service(path: &str, service: &str) -> bool {
    path.strip_prefix('/')
        .and_then(|p| p.strip_prefix(service))
        .is_some_and(|rest| rest.starts_with('/'))
}

/// Exactly `/<registered service>/<method>`: what tonic may be handed.
fn is_method_path(path: &str, services: &[&str]) -> bool {
    let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
        return false;
    };
    services.contains(&service) && !method.is_empty() && !method.contains('/')
}

fn admit_grpc(gate: &Gate, request: &Request) -> Result<Role, Refusal> {
    check_grpc_shape(request)?;
    let path = request.uri().path();
    let open = path == HANDSHAKE || path.starts_with(HEALTH);
    let mut role = Role::ReadWrite;
    if gate.tokens.enabled() && !open {
        let presented = request.headers().get(header::AUTHORIZATION);
        role = gate
            .tokens
            .check_header(presented.map(HeaderValue::as_bytes))
            .map_err(|why| grpc_refusal(tonic::Status::unauthenticated(why.to_string())))?;
    }
    if !is_method_path(path, &gate.services) {
        let why = format!(
            "no gRPC method at {path:?}: this server serves {}",
            gate.services.join(", ")
        );
        return Err(grpc_refusal(tonic::Status::unimplemented(why)));
    }
    Ok(role)
}

/// POST, HTTP/2, a gRPC content type: in that order, so the refusal names
/// the first thing a confused client got wrong.
fn check_grpc_shape(request: &Request) -> Result<(), Refusal> {
    let path = request.uri().path();
    if request.method() != Method::POST {
        let why = format!("{} {path}: gRPC calls are POST", request.method());
        let mut r = http_refusal(StatusCode::METHOD_NOT_ALLOWED, why);
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return Err(r);
    }
    if request.version() < Version::HTTP_2 {
        let why = format!(
            "{path}: gRPC needs HTTP/2 (this request is {:?})",
            request.version()
        );
        return Err(http_refusal(StatusCode::HTTP_VERSION_NOT_SUPPORTED, why));
    }
    let content_type = request.headers().get(header::CONTENT_TYPE);
    if !is_grpc_content_type(content_type) {
        let sent = content_type.map_or("none".into(), |v| {
            format!("{:?}", v.to_str().unwrap_or("?"))
        });
        let why = format!(
            "{path}: content-type {sent} is not gRPC: send application/grpc or application/grpc+proto (gRPC-Web is not served)"
        );
        return Err(http_refusal(StatusCode::UNSUPPORTED_MEDIA_TYPE, why));
    }
    Ok(())
}

/// `application/grpc` or `application/grpc+proto`, in any case, parameters
/// ignored; other codecs (`+json`) and gRPC-Web have no handler here.
fn is_grpc_content_type(value: Option<&HeaderValue>) -> bool {
    let Some(value) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let media = value.split(';').next().unwrap_or("").trim();
    ["application/grpc", "application/grpc+proto"]
        .iter()
        .any(|ok| media.eq_ignore_ascii_case(ok))
}

fn admit_http(gate: &Gate, request: &Request) -> Result<Role, Refusal> {
    let (path, method) = (request.uri().path(), request.method());
    let health = path == "/health" && (method == Method::GET || method == Method::HEAD);
    let preflight = method == Method::OPTIONS && path.starts_with(PREFLIGHT_ROUTES);
    if !gate.tokens.enabled() || health || preflight {
        return Ok(Role::ReadWrite);
    }
    let presented = request.headers().get(header::AUTHORIZATION);
    let role = gate
        .tokens
        .check_header(presented.map(HeaderValue::as_bytes))
        .map_err(|why| {
            let mut r = http_refusal(StatusCode::UNAUTHORIZED, why.to_string());
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        })?;
    if role == Role::ReadOnly && !reads_only(method, path) {
        let why = format!("{method} {path}: {READ_ONLY_REFUSAL}");
        return Err(http_refusal(StatusCode::FORBIDDEN, why));
    }
    Ok(role)
}

/// The HTTP requests a read-only token may make: reads of any route, and
/// SQL (whose statements check the role themselves when they change data).
fn reads_only(method: &Method, path: &str) -> bool {
    *method == Method::GET
        || *method == Method::HEAD
        || (*method == Method::POST && path == "/v1/query")
}

/// A trailers-only gRPC reply carrying `status`.
fn grpc_refusal(status: tonic::Status) -> Refusal {
    Box::new(status.into_http::<axum::body::Body>().into_response())
}

/// A JSON error with the HTTP side's usual headers: the gate runs outside
/// the router that adds them, and without CORS headers a browser could not
/// even read that the status is 401.
fn http_refusal(status: StatusCode, why: String) -> Refusal {
    let mut r = error(status, why);
    super::streams::security_headers(r.headers_mut());
    Box::new(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICES: [&str; 2] = [
        "arrow.flight.protocol.FlightService",
        "grpc.health.v1.Health",
    ];

    #[test]
    fn grpc_paths_are_recognised_by_shape_and_registration() {
        for grpc in [
            "/arrow.flight.protocol.FlightService/DoGet",
            "/arrow.flight.protocol.FlightService/",
            "//arrow.flight.protocol.FlightService/DoGet",
            "/no.such.Service/Method",
            "/grpc.health.v1.Health/Check",
        ] {
            assert!(is_grpc_path(grpc, &SERVICES), "{grpc}");
        }
        for http in [
            "/health",
            "/v1/stream/a.b",
            "/v1/query",
            "/metrics",
            "/",
            "",
        ] {
            assert!(!is_grpc_path(http, &SERVICES), "{http}");
        }
    }

    #[test]
    fn only_exact_method_paths_of_registered_services_reach_tonic() {
        assert!(is_method_path(
            "/arrow.flight.protocol.FlightService/DoGet",
            &SERVICES
        ));
        for not in [
            "/arrow.flight.protocol.FlightService/",
            "/arrow.flight.protocol.FlightService/DoGet/",
            "/arrow.flight.protocol.FlightService//DoGet",
            "//arrow.flight.protocol.FlightService/DoGet",
            "/arrow.flight.protocol.FlightServiceX/DoGet",
            "/no.such.Service/Method",
        ] {
            assert!(!is_method_path(not, &SERVICES), "{not}");
        }
    }

    #[test]
    fn grpc_content_types() {
        let ok = |v: &str| is_grpc_content_type(Some(&HeaderValue::from_str(v).unwrap()));
        assert!(ok("application/grpc") && ok("application/grpc+proto") && ok("Application/GRPC"));
        assert!(ok("application/grpc; charset=utf-8"));
        for bad in [
            "application/grpc-web",
            "application/grpc+json",
            "application/grpcx",
            "",
            "text/plain",
        ] {
            assert!(!ok(bad), "{bad}");
        }
        assert!(!is_grpc_content_type(None));
    }
}
