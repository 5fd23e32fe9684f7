//! `--auth-token` at the edge, generated rather than hand-picked: every
//! gRPC method the server reflects (plus unknown and mangled paths) and
//! every HTTP route, under every HTTP method, over HTTP/2 and HTTP/1.1,
//! with and without the token. Each case states what must come back; all
//! mismatches are reported at once.

use std::collections::BTreeSet;

use axum::http::{self, HeaderMap, Method, StatusCode};
use bytes::Bytes;
use prost::Message;
use tonic::transport::Channel;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tower::ServiceExt;

use super::common::config;
use streamdb::server;

const TOKEN: &str = "s3cr3t-token-for-tests";
const HANDSHAKE: &str = "/arrow.flight.protocol.FlightService/Handshake";
const HEALTH: &str = "/grpc.health.v1.Health/";
/// An empty gRPC message: no compression, length 0.
const EMPTY_FRAME: [u8; 5] = [0; 5];
const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW",
];

/// What a request got back, as far as these tests care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// An HTTP status other than 200 (a refusal before any gRPC handler).
    Http(u16),
    /// HTTP 200 with `grpc-status` in the headers (a trailers-only reply).
    Grpc(i32),
    /// HTTP 200 with no `grpc-status` yet: a handler is streaming a reply.
    Streaming,
}

fn outcome(status: StatusCode, headers: &HeaderMap) -> Outcome {
    if status != StatusCode::OK {
        return Outcome::Http(status.as_u16());
    }
    match headers.get("grpc-status").and_then(|v| v.to_str().ok()) {
        Some(code) => Outcome::Grpc(code.parse().unwrap_or(-1)),
        None => Outcome::Streaming,
    }
}

const UNAUTHENTICATED: i32 = tonic::Code::Unauthenticated as i32;
const UNIMPLEMENTED: i32 = tonic::Code::Unimplemented as i32;

async fn secured() -> (tempfile::TempDir, server::RunningServer) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.auth_tokens = vec![TOKEN.into()];
    let srv = server::start(cfg).await.unwrap();
    (dir, srv)
}

async fn channel(srv: &server::RunningServer) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{}", srv.addr))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// One request over HTTP/2 (the channel speaks h2 with prior knowledge).
async fn h2(
    channel: &Channel,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    authorization: Option<&str>,
) -> Outcome {
    let mut req = http::Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(format!("http://streamdb{path}"))
        .header("te", "trailers");
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let body = tonic::body::Body::new(http_body_full(Bytes::from_static(&EMPTY_FRAME)));
    let response = channel.clone().oneshot(req.body(body).unwrap()).await;
    let response = response.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    // The body is never read: a streaming handler (health Watch) would
    // not end, and the headers already tell whether a handler answered.
    outcome(response.status(), response.headers())
}

/// A body of one chunk (what `http_body_util::Full` is, without the crate).
fn http_body_full(
    bytes: Bytes,
) -> impl http_body::Body<Data = Bytes, Error = std::convert::Infallible> {
    struct Once(Option<Bytes>);
    impl http_body::Body for Once {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Ready(self.0.take().map(|b| Ok(http_body::Frame::data(b))))
        }
    }
    Once(Some(bytes))
}

/// One request over HTTP/1.1.
async fn h1(
    srv: &server::RunningServer,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    authorization: Option<&str>,
) -> Outcome {
    let mut req = reqwest::Client::new()
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("http://{}{path}", srv.addr),
        )
        .body(EMPTY_FRAME.to_vec());
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let r = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    outcome(r.status(), r.headers())
}

/// Every `/<service>/<method>` path the server's reflection lists, read
/// with the token (reflection itself needs it).
async fn reflected_paths(channel: &Channel) -> BTreeSet<String> {
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {TOKEN}").parse().unwrap();
    let mut client = ServerReflectionClient::with_interceptor(
        channel.clone(),
        move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", bearer.clone());
            Ok(r)
        },
    );
    let ask = |m: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(m),
    };
    let services = match reflect(
        &mut client,
        ask(MessageRequest::ListServices(String::new())),
    )
    .await
    {
        MessageResponse::ListServicesResponse(l) => l.service,
        other => panic!("list services: {other:?}"),
    };
    let mut paths = BTreeSet::new();
    for service in services {
        let files = match reflect(
            &mut client,
            ask(MessageRequest::FileContainingSymbol(service.name.clone())),
        )
        .await
        {
            MessageResponse::FileDescriptorResponse(f) => f.file_descriptor_proto,
            other => panic!("describe {}: {other:?}", service.name),
        };
        for bytes in files {
            let file = prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap();
            for s in &file.service {
                let full = format!("{}.{}", file.package(), s.name());
                if full == service.name {
                    paths.extend(s.method.iter().map(|m| format!("/{full}/{}", m.name())));
                }
            }
        }
    }
    paths
}

async fn reflect<F>(
    client: &mut ServerReflectionClient<
        tonic::service::interceptor::InterceptedService<Channel, F>,
    >,
    request: ServerReflectionRequest,
) -> MessageResponse
where
    F: tonic::service::Interceptor,
{
    let mut replies = client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    replies
        .message()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap()
}

/// What a well-formed gRPC POST to `path` must get, by whether it carries
/// the token: a handler's reply, UNAUTHENTICATED, or UNIMPLEMENTED.
fn expected_grpc(path: &str, registered: &BTreeSet<String>, token: bool) -> Outcome {
    let open = path == HANDSHAKE || path.starts_with(HEALTH);
    if !token && !open {
        return Outcome::Grpc(UNAUTHENTICATED);
    }
    if !registered.contains(path) {
        return Outcome::Grpc(UNIMPLEMENTED);
    }
    // Any reply of the handler: only the gate's codes are ruled out below.
    Outcome::Streaming
}

/// A handler answered when it streamed, or when its trailers-only reply is
/// not UNAUTHENTICATED (a handler may well answer UNIMPLEMENTED: the
/// gate's UNIMPLEMENTED is only for paths that are not registered methods,
/// which expect exactly that).
fn matches(got: Outcome, want: Outcome, path: &str, token: bool) -> bool {
    match (want, got) {
        (Outcome::Streaming, Outcome::Streaming) => true,
        // The handshake checks credentials itself: without any it says
        // UNAUTHENTICATED too, after running.
        (Outcome::Streaming, Outcome::Grpc(code)) => {
            code != UNAUTHENTICATED || (path == HANDSHAKE && !token)
        }
        _ => got == want,
    }
}

/// Paths that are not methods of a registered service but look like gRPC
/// (or could be taken for it by a router): each must still be refused
/// without the token and never reach a handler.
fn odd_grpc_paths() -> Vec<String> {
    [
        "/arrow.flight.protocol.FlightService/ListActions/",
        "/arrow.flight.protocol.FlightService//ListActions",
        "//arrow.flight.protocol.FlightService/ListActions",
        "/arrow.flight.protocol.FlightService/NoSuchMethod",
        "/arrow.flight.protocol.FlightService/",
        "/no.such.Service/Method",
        "/grpc.health.v1.Health/NoSuchMethod",
    ]
    .map(String::from)
    .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_without_token_through_non_post_method() {
    let (_dir, srv) = secured().await;
    let channel = channel(&srv).await;
    let mut registered = reflected_paths(&channel).await;
    // Each reflection service lists itself, not its sibling version.
    registered.insert("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo".into());
    for must in [
        "/arrow.flight.protocol.FlightService/GetFlightInfo",
        "/arrow.flight.protocol.FlightService/DoPut",
        "/arrow.flight.protocol.FlightService/DoExchange",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.health.v1.Health/Check",
    ] {
        assert!(
            registered.contains(must),
            "reflection lacks {must}: {registered:?}"
        );
    }
    let bearer = format!("Bearer {TOKEN}");
    let mut failures = Vec::new();
    let paths: Vec<String> = registered.iter().cloned().chain(odd_grpc_paths()).collect();
    for path in &paths {
        for method in METHODS {
            for token in [false, true] {
                let auth = token.then_some(bearer.as_str());
                let got = h2(&channel, method, path, Some("application/grpc"), auth).await;
                let want = if method == "POST" {
                    expected_grpc(path, &registered, token)
                } else {
                    Outcome::Http(405)
                };
                if !matches(got, want, path, token) {
                    failures.push(format!(
                        "h2 {method} {path} token={token}: got {got:?}, want {want:?}"
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        paths.len() * METHODS.len() * 2,
        failures.join("\n")
    );
    srv.stop().await.unwrap();
}

/// The HTTP routes, as a browser, curl or a scraper would call them.
const HTTP_PATHS: [&str; 7] = [
    "/health",
    "/metrics",
    "/v1/status",
    "/v1/query?sql=SELECT%201",
    "/v1/stream/metrics",
    "/v1/stream/other",
    "/no/such/route",
];

/// Without the token only `/health` (GET, HEAD) and CORS preflights of
/// the Durable Streams routes are answered; with it, nothing is 401.
fn expected_http(path: &str, method: &str, token: bool) -> Option<u16> {
    let health = path == "/health" && matches!(method, "GET" | "HEAD");
    let preflight = method == "OPTIONS" && path.starts_with("/v1/stream/");
    (!token && !health && !preflight).then_some(401)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_routes_without_token_answer_only_health_and_preflight() {
    let (_dir, srv) = secured().await;
    let channel = channel(&srv).await;
    let bearer = format!("Bearer {TOKEN}");
    let mut failures = Vec::new();
    for path in HTTP_PATHS {
        for method in METHODS {
            for token in [false, true] {
                let auth = token.then_some(bearer.as_str());
                let over_h1 = h1(&srv, method, path, Some("application/json"), auth).await;
                let over_h2 = h2(&channel, method, path, Some("application/json"), auth).await;
                for (version, got) in [("h1", over_h1), ("h2", over_h2)] {
                    let refused = got == Outcome::Http(401);
                    let ok = match expected_http(path, method, token) {
                        Some(code) => got == Outcome::Http(code),
                        None => !refused,
                    };
                    if !ok {
                        failures.push(format!(
                            "{version} {method} {path} token={token}: got {got:?}"
                        ));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    srv.stop().await.unwrap();
}

/// gRPC is POST over HTTP/2 with `application/grpc` (or `+proto`); any
/// other shape is refused before the token is even looked at, and a
/// well-shaped call still needs the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_requests_of_other_shapes_are_refused() {
    let (_dir, srv) = secured().await;
    let channel = channel(&srv).await;
    let path = "/arrow.flight.protocol.FlightService/ListActions";
    let bearer = format!("Bearer {TOKEN}");
    let cases: [(Option<&str>, Option<Outcome>); 11] = [
        (Some("application/grpc"), None),
        (Some("application/grpc+proto"), None),
        (Some("Application/GRPC"), None),
        (Some("application/grpc; charset=utf-8"), None),
        (Some("application/grpc-web"), Some(Outcome::Http(415))),
        (Some("application/grpc-web+proto"), Some(Outcome::Http(415))),
        (Some("application/grpc+json"), Some(Outcome::Http(415))),
        (Some("application/grpcx"), Some(Outcome::Http(415))),
        (Some("application/json"), Some(Outcome::Http(415))),
        (Some(""), Some(Outcome::Http(415))),
        (None, Some(Outcome::Http(415))),
    ];
    let mut failures = Vec::new();
    for (ct, refusal) in cases {
        for token in [false, true] {
            let got = h2(&channel, "POST", path, ct, token.then_some(bearer.as_str())).await;
            let want = refusal.unwrap_or(if token {
                Outcome::Streaming
            } else {
                Outcome::Grpc(UNAUTHENTICATED)
            });
            if got != want {
                failures.push(format!(
                    "h2 content-type {ct:?} token={token}: got {got:?}, want {want:?}"
                ));
            }
            // gRPC needs HTTP/2: over HTTP/1.1 nothing is dispatched.
            let got = h1(&srv, "POST", path, ct, token.then_some(bearer.as_str())).await;
            if !matches!(got, Outcome::Http(505 | 415)) {
                failures.push(format!("h1 content-type {ct:?} token={token}: got {got:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    srv.stop().await.unwrap();
}

/// How a stranger might write the header, and whether it must pass.
fn authorization_cases() -> Vec<(String, bool)> {
    let basic = |creds: &str| {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(creds)
        )
    };
    vec![
        (format!("Bearer {TOKEN}"), true),
        (format!("bearer {TOKEN}"), true),
        (format!("BEARER {TOKEN}"), true),
        (format!("Bearer   {TOKEN}  "), true),
        (format!("Bearer {TOKEN}x"), false),
        (format!("Bearer {}", &TOKEN[1..]), false),
        (format!("Bearer{TOKEN}"), false),
        (format!("Token {TOKEN}"), false),
        (TOKEN.to_string(), false),
        ("Bearer".into(), false),
        ("Bearer ".into(), false),
        ("".into(), false),
        (basic(&format!("me:{TOKEN}")), false),
        (basic("me:wrong"), false),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_header_forms() {
    let (_dir, srv) = secured().await;
    let channel = channel(&srv).await;
    let grpc_path = "/arrow.flight.protocol.FlightService/ListActions";
    let mut failures = Vec::new();
    for (header, pass) in authorization_cases() {
        let got = h2(
            &channel,
            "POST",
            grpc_path,
            Some("application/grpc"),
            Some(&header),
        )
        .await;
        if (got == Outcome::Grpc(UNAUTHENTICATED)) == pass {
            failures.push(format!("gRPC {header:?}: got {got:?}, pass={pass}"));
        }
        let got = h1(&srv, "GET", "/v1/status", None, Some(&header)).await;
        if (got == Outcome::Http(401)) == pass {
            failures.push(format!("HTTP {header:?}: got {got:?}, pass={pass}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    srv.stop().await.unwrap();
}

/// A refusal says what was wrong: no header, a header that is not a
/// bearer token, or a token that is not accepted.
#[tokio::test]
async fn refusals_name_the_problem() {
    let (_dir, srv) = secured().await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/status", srv.addr);
    let cases = [
        (None, "authentication required"),
        (Some("Basic bWU6eA=="), "Bearer"),
        (Some("Bearer "), "Bearer"),
        (Some("Bearer wrong"), "not accepted"),
    ];
    for (header, needle) in cases {
        let mut req = http.get(&url);
        if let Some(h) = header {
            req = req.header("authorization", h);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{header:?}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer", "{header:?}");
        let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        let message = body["error"].as_str().unwrap();
        assert!(message.contains(needle), "{header:?}: {message}");
    }
    let r = http
        .request(
            reqwest::Method::OPTIONS,
            format!(
                "http://{}/arrow.flight.protocol.FlightService/ListActions",
                srv.addr
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    srv.stop().await.unwrap();
}
