//! Wiring: one TCP port serving gRPC (Flight, health, reflection) and HTTP
//! side by side, startup, and graceful shutdown that flushes the buffer.
//! `auth` and `observe` (error counting, `/metrics`) wrap every route;
//! `error` turns errors into HTTP responses.
//!
//! May depend on every layer below it.

mod auth;
mod error;
mod http;
mod observe;
pub(crate) mod streams;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::flight;
use crate::ingest::{Engine, EngineConfig, EngineError};
use crate::query::subscribe::{SubscribeConfig, Subscriptions};
use crate::query::{QueryConfig, QueryEngine};
use crate::stream::registry::{Registry, RegistryConfig, StreamError};

pub use streams::StreamsConfig;

/// The descriptor set compiled from `proto/` by build.rs.
const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/streamdb_descriptor.bin"));

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    pub engine: EngineConfig,
    pub query: QueryConfig,
    pub streams: StreamsConfig,
    /// A remote Durable Streams URL of JSON points to ingest (`--source`).
    pub source: Option<String>,
    pub subscribe: SubscribeConfig,
    /// Bearer tokens; empty means no authentication.
    pub auth_tokens: Vec<String>,
    /// PEM certificate chain and private key: serve TLS (gRPC and HTTPS).
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
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
    shutdown: tokio::sync::oneshot::Sender<()>,
    closing: tokio::sync::watch::Sender<bool>,
    subscriptions: Arc<Subscriptions>,
    task: tokio::task::JoinHandle<Result<(), ServerError>>,
}

impl RunningServer {
    /// Stops accepting requests, drains them, flushes the buffer.
    pub async fn stop(self) -> Result<(), ServerError> {
        // Long-lived calls (subscriptions, SSE, long-polls) end first, or
        // the graceful shutdown would wait for them indefinitely.
        self.closing.send_replace(true);
        self.subscriptions.close_all();
        let _ = self.shutdown.send(());
        self.task
            .await
            .map_err(|e| ServerError::Serve(e.to_string()))?
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
/// for streams nobody touches again. Ends when the registry is dropped.
fn spawn_expiry_sweeper(registry: &Arc<Registry>) {
    let weak = Arc::downgrade(registry);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let Some(registry) = weak.upgrade() else {
                return;
            };
            if let Err(e) = registry.sweep_expired().await {
                tracing::warn!(error = %e, "removing expired streams failed");
            }
        }
    });
}

/// Opens the engine and starts serving on `config.addr` (port 0 picks one).
pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    let engine = Engine::open(config.engine.clone()).await?;
    let query = Arc::new(QueryEngine::new(engine.clone(), config.query.clone()));
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
        fsync: config.engine.fsync,
        max_streams: config.streams.max_streams,
    })?;
    spawn_expiry_sweeper(&registry);
    let (closing, closing_rx) = tokio::sync::watch::channel(false);
    let tokens = crate::flight::auth::Tokens::new(config.auth_tokens.clone());
    let subscriptions = Subscriptions::new(config.subscribe.clone());
    if let Some(url) = &config.source {
        crate::ingest::consumer::spawn(&engine, url.clone(), Duration::from_secs(20));
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
            closing: closing_rx,
            private: !config.auth_tokens.is_empty(),
        },
    )
    .merge(observed);
    let routes = tonic::service::Routes::from(app)
        .add_service(flight::service(
            engine.clone(),
            query,
            subscriptions.clone(),
            tokens.clone(),
            config.max_message_bytes,
        ))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    // One check in front of gRPC and HTTP alike; errors are counted
    // outside it, so refusals count too.
    let routes = tonic::service::Routes::from(
        routes
            .into_axum_router()
            .layer(axum::middleware::from_fn_with_state(
                tokens,
                auth::require_token,
            ))
            .layer(axum::middleware::from_fn(observe::count_errors)),
    );

    let acceptor = match &config.tls {
        Some((cert, key)) => Some(tls::acceptor(cert, key).map_err(ServerError::Tls)?),
        None => None,
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let serve_engine = engine.clone();
    let task = tokio::spawn(async move {
        let builder = || {
            tonic::transport::Server::builder()
                .accept_http1(true)
                .http2_keepalive_interval(Some(Duration::from_secs(30)))
                .add_routes(routes)
        };
        let stop = async {
            let _ = rx.await;
        };
        let served = match acceptor {
            Some(a) => {
                builder()
                    .serve_with_incoming_shutdown(tls::incoming(incoming(listener), a), stop)
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
        shutdown: tx,
        closing,
        subscriptions,
        task,
    })
}
