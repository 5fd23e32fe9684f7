//! Wiring: one TCP port serving gRPC (Flight, health, reflection) and HTTP
//! side by side, startup, and graceful shutdown that flushes the buffer.
//! `auth` (the gate: gRPC shape and tokens) and `observe` (error
//! counting, `/metrics`) wrap every route;
//! `error` turns errors into HTTP responses.
//!
//! May depend on every layer below it.

mod auth;
mod error;
mod http;
mod observe;
mod result_body;
pub(crate) mod streams;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::flight;
use crate::ingest::{Engine, EngineConfig, EngineError, ReadView};
use crate::query::subscribe::{SubscribeConfig, Subscriptions};
use crate::query::{QueryConfig, QueryEngine};
use crate::runtime::Tasks;
use crate::stream::client::RemoteStream;
use crate::stream::registry::{Registry, RegistryConfig, StreamError};

pub use streams::StreamsConfig;
pub use tls::HandshakeLimits;

/// The descriptor set compiled from `proto/` by build.rs.
const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/streamdb_descriptor.bin"));

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    pub engine: EngineConfig,
    pub query: QueryConfig,
    pub streams: StreamsConfig,
    /// A remote Durable Streams stream of JSON points to ingest
    /// (`--source`, `--source-token`).
    pub source: Option<RemoteStream>,
    pub subscribe: SubscribeConfig,
    /// Bearer tokens that read and write; empty (with no read-only ones)
    /// means no authentication.
    pub auth_tokens: Vec<String>,
    /// Bearer tokens that may query, subscribe and read streams, but
    /// neither write nor delete (`--read-only-token`).
    pub read_only_tokens: Vec<String>,
    /// PEM certificate chain and private key: serve TLS (gRPC and HTTPS).
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// How TLS handshakes are bounded (`--tls-handshake-timeout`).
    pub tls_handshake: HandshakeLimits,
    /// Largest gRPC message the server decodes (RESOURCE_EXHAUSTED above).
    pub max_message_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("durable streams: {0}")]
    Streams(#[from] StreamError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("server failed: {0}")]
    Serve(String),
}

/// A started server: its address, the engine, and a handle to stop it.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub engine: Arc<Engine>,
    /// The root of the shutdown tree; see [`RunningServer::stop`].
    tree: ShutdownTree,
    task: tokio::task::JoinHandle<Result<(), ServerError>>,
}

/// The server's nodes of the shutdown tree, in the order they stop.
struct ShutdownTree {
    root: Tasks,
    /// SSE sessions and long-polls.
    sessions: Tasks,
    subscriptions: Tasks,
    /// Cancelled to stop accepting and drain the connections.
    listener: Tasks,
}

impl ShutdownTree {
    fn new() -> Self {
        let root = Tasks::new();
        Self {
            sessions: root.child(),
            subscriptions: root.child(),
            listener: root.child(),
            root,
        }
    }
}

impl RunningServer {
    /// Stops accepting requests, drains them, flushes the buffer.
    pub async fn stop(self) -> Result<(), ServerError> {
        // Long-lived calls (subscriptions, SSE, long-polls) end first, or
        // the graceful shutdown would wait for them indefinitely.
        let t = &self.tree;
        t.sessions.token().cancel();
        t.subscriptions.token().cancel();
        t.listener.token().cancel();
        // The serve task drains the connections, then shuts the engine
        // down (its loops are a child of the root).
        let served = self
            .task
            .await
            .map_err(|e| ServerError::Serve(e.to_string()))?;
        t.sessions.shutdown().await;
        t.subscriptions.shutdown().await;
        t.root.shutdown().await;
        served
    }
}

/// Accepted connections with TCP_NODELAY. tonic's own `tcp_nodelay` only
/// applies to listeners it binds itself; without it every small reply waits
/// for the peer's delayed ACK (~40 ms per Flight SQL round trip).
fn incoming(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::TryStreamExt;
    TcpListenerStream::new(listener).map_ok(|s| {
        if let Err(e) = s.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY on a connection");
        }
        s
    })
}

/// Deletes expired streams once a second, so that expiry frees disk even
/// for streams nobody touches again, until `tasks` is cancelled.
fn spawn_expiry_sweeper(registry: &Arc<Registry>, tasks: &Tasks) {
    let registry = registry.clone();
    let stop = tasks.clone();
    tasks.spawn("stream expiry sweeper", async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = registry.sweep_expired().await {
                tracing::warn!(error = %e, "removing expired streams failed");
            }
        }
    });
}

/// Builds the last-value cache from the stored data and the replayed log
/// right after start, so the first "latest value" query is answered from
/// memory (a query that comes first scans, and would start it too).
fn spawn_last_value_build(view: &Arc<dyn ReadView>, tasks: &Tasks) {
    let (view, stop) = (view.clone(), tasks.clone());
    tasks.spawn("last-value cache build", async move {
        tokio::select! {
            _ = stop.cancelled() => {}
            built = crate::query::build_last_values(&view) => {
                if let Err(e) = built {
                    tracing::warn!(error = %e, "building the last-value cache failed; queries scan");
                }
            }
        }
    });
}

/// A service's `<package.Service>` name, under which tonic routes it
/// (`/<NAME>/...`).
fn service_name<S: tonic::server::NamedService>(_: &S) -> &'static str {
    S::NAME
}

/// Opens the engine and starts serving on `config.addr` (port 0 picks one).
pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    let tree = ShutdownTree::new();
    let engine = Engine::open_under(config.engine.clone(), &tree.root).await?;
    let view: Arc<dyn ReadView> = engine.clone();
    spawn_last_value_build(&view, &tree.root);
    let query = Arc::new(QueryEngine::new(view, config.query.clone()));
    let listener = TcpListener::bind(config.addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.addr,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: config.addr,
        source,
    })?;

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<arrow_flight::flight_service_server::FlightServiceServer<flight::Gateway>>()
        .await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(DESCRIPTORS)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| ServerError::Serve(e.to_string()))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| ServerError::Serve(e.to_string()))?;

    let registry = Registry::open(RegistryConfig {
        dir: config.engine.data_dir.join("stream").join("named"),
        fsync: config.engine.log.fsync,
        clock: config.engine.clock.clone(),
        max_streams: config.streams.max_streams,
    })?;
    spawn_expiry_sweeper(&registry, &tree.root);
    let tokens = crate::flight::auth::Tokens::with_read_only(
        config.auth_tokens.clone(),
        config.read_only_tokens.clone(),
    );
    let subscriptions = Subscriptions::new(config.subscribe.clone(), tree.subscriptions.clone());
    if let Some(remote) = &config.source {
        crate::ingest::consumer::spawn(&engine, remote.clone(), Duration::from_secs(20));
    }
    let observed = axum::Router::new()
        .route("/metrics", axum::routing::get(observe::scrape))
        .with_state(observe::ObserveState {
            engine: engine.clone(),
            subscriptions: subscriptions.clone(),
            registry: registry.clone(),
        });
    let app = http::router(
        http::AppState {
            engine: engine.clone(),
            query: query.clone(),
        },
        streams::StreamsState {
            registry,
            engine: engine.clone(),
            config: config.streams.clone(),
            sessions: tree.sessions.clone(),
            private: tokens.enabled(),
        },
    )
    .merge(observed);
    let flight_service = flight::service(
        engine.clone(),
        query,
        subscriptions.clone(),
        tokens.clone(),
        config.max_message_bytes,
    );
    // The gate must know every service added here: it hands tonic only
    // their exact method paths.
    let grpc_services = vec![
        service_name(&flight_service),
        service_name(&health_service),
        service_name(&reflection_v1),
        service_name(&reflection_v1alpha),
    ];
    let routes = tonic::service::Routes::from(app)
        .add_service(flight_service)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    // One gate in front of gRPC and HTTP alike; errors are counted
    // outside it, so refusals count too.
    let routes = tonic::service::Routes::from(
        routes
            .into_axum_router()
            .layer(axum::middleware::from_fn_with_state(
                auth::Gate::new(tokens, grpc_services),
                auth::guard,
            ))
            .layer(axum::middleware::from_fn(observe::count_errors)),
    );

    let acceptor = match &config.tls {
        Some((cert, key)) => Some(tls::acceptor(cert, key).map_err(ServerError::Tls)?),
        None => None,
    };
    let handshake = config.tls_handshake.clone();
    let listener_stop = tree.listener.clone();
    let serve_engine = engine.clone();
    let task = tokio::spawn(async move {
        let builder = || {
            tonic::transport::Server::builder()
                .accept_http1(true)
                .http2_keepalive_interval(Some(Duration::from_secs(30)))
                .add_routes(routes)
        };
        let stop = async move { listener_stop.cancelled().await };
        let served = match acceptor {
            Some(a) => {
                builder()
                    .serve_with_incoming_shutdown(
                        tls::incoming(incoming(listener), a, handshake),
                        stop,
                    )
                    .await
            }
            None => {
                builder()
                    .serve_with_incoming_shutdown(incoming(listener), stop)
                    .await
            }
        };
        let flushed = serve_engine.shutdown().await;
        served.map_err(|e| ServerError::Serve(e.to_string()))?;
        flushed.map_err(ServerError::from)
    });
    Ok(RunningServer {
        addr,
        engine,
        tree,
        task,
    })
}
