//! `streamdb start`: the server's flags, and running it until a signal.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use super::units::{parse_bytes, parse_duration};
use crate::ingest::EngineConfig;
use crate::query::subscribe::SubscribeConfig;
use crate::query::QueryConfig;
use crate::server::{self, ServerConfig, StreamsConfig};
use crate::stream::client::RemoteStream;

#[derive(clap::Args, Debug)]
pub struct StartArgs {
    /// Where the stream log, chunks and manifest live.
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Address to listen on (0.0.0.0 for every interface).
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Flush the write buffer once its oldest data is this old.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    flush_interval: Duration,
    /// Flush the write buffer once it holds this much.
    #[arg(long, default_value = "128MiB", value_parser = parse_bytes)]
    flush_bytes: usize,
    /// Writes wait, then fail with RESOURCE_EXHAUSTED, above this buffer size.
    #[arg(long, default_value = "1GiB", value_parser = parse_bytes)]
    max_buffer_bytes: usize,
    /// How long a write waits for buffer space.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    write_timeout: Duration,
    /// Size at which a stream log segment is sealed.
    #[arg(long, default_value = "64MiB", value_parser = parse_bytes)]
    segment_bytes: usize,
    /// How long the metrics stream stays readable (GET /v1/stream/metrics
    /// from an older offset, --source followers) after its points are
    /// flushed; older offsets answer 410 Gone. The points stay queryable.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    stream_retention: Duration,
    /// The most bytes of flushed log segments kept for --stream-retention
    /// (the oldest go first when over).
    #[arg(long, default_value = "1GiB", value_parser = parse_bytes)]
    stream_retention_bytes: usize,
    /// How long a Durable Streams long-poll read waits for new data.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    long_poll_timeout: Duration,
    /// How long one Durable Streams SSE connection stays open before the
    /// server closes it (clients reconnect from their last offset).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    sse_max_duration: Duration,
    /// Ingest JSON points from a remote Durable Streams stream (for example
    /// another StreamDB's http://host:8080/v1/stream/metrics), exactly once:
    /// the position read is committed with the data. A `user:password@` in
    /// the URL is sent as HTTP Basic; it is never logged, shown by `status`
    /// or persisted (the source is known by its URL without it).
    #[arg(long)]
    source: Option<String>,
    /// Bearer token for a --source server started with --auth-token. Prefer
    /// the environment variable: a flag shows in the process list.
    #[arg(
        long,
        env = "STREAMDB_SOURCE_TOKEN",
        hide_env_values = true,
        requires = "source"
    )]
    source_token: Option<String>,
    /// Require this bearer token on every call but health checks
    /// (repeatable; comma-separated in STREAMDB_AUTH_TOKEN).
    #[arg(
        long,
        env = "STREAMDB_AUTH_TOKEN",
        value_delimiter = ',',
        hide_env_values = true
    )]
    auth_token: Vec<String>,
    /// Read accepted tokens from a file, one per line (# comments allowed).
    #[arg(long)]
    auth_token_file: Option<PathBuf>,
    /// Accept this bearer token for queries, subscriptions and stream
    /// reads only: writes and deletes are refused (PERMISSION_DENIED, HTTP
    /// 403). Repeatable; comma-separated in STREAMDB_READ_ONLY_TOKEN.
    #[arg(
        long,
        env = "STREAMDB_READ_ONLY_TOKEN",
        value_delimiter = ',',
        hide_env_values = true
    )]
    read_only_token: Vec<String>,
    /// Read read-only tokens from a file, one per line (# comments allowed).
    #[arg(long)]
    read_only_token_file: Option<PathBuf>,
    /// PEM certificate chain: serve gRPC and HTTPS with TLS on the port.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Log queries slower than this (target streamdb::slow_query); 0 turns
    /// the slow-query log off.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    slow_query_threshold: Duration,
    #[command(flatten)]
    storage: StorageArgs,
    #[command(flatten)]
    limits: LimitArgs,
}

/// Where chunks live and how they are maintained.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Storage")]
struct StorageArgs {
    /// Keep chunks, the manifest and the series catalog in an S3-compatible
    /// bucket (s3://bucket/prefix) instead of --data-dir; the stream log
    /// stays on local disk. Configured from the environment: AWS_ENDPOINT,
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ALLOW_HTTP.
    /// One server writes a prefix at a time.
    #[arg(long, value_name = "URL")]
    object_store: Option<String>,
    /// Drop data older than this (whole hour chunks, e.g. 30d); kept
    /// forever if unset.
    #[arg(long, value_parser = parse_duration)]
    retention: Option<Duration>,
    /// How often compaction, retention and garbage collection run; 0 turns
    /// them off.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    compaction_interval: Duration,
    /// How long files dropped by compaction or retention stay readable for
    /// queries that started before (at least --query-timeout is used).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    gc_grace: Duration,
    /// Memory for decoded chunks, so repeated queries skip fetch and decode.
    #[arg(long, default_value = "1GiB", value_parser = parse_bytes)]
    chunk_cache_bytes: usize,
}

fn parse_handshake_timeout(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(
            "--tls-handshake-timeout 0 would close every connection before its handshake".into(),
        ),
        d => Ok(d),
    }
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.replace('_', "").parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s:?} is not a positive whole number")),
    }
}

/// What one client may ask of the server. Each limit answers a clear
/// error when exceeded (gRPC RESOURCE_EXHAUSTED, HTTP 413 or 429) and the
/// server keeps serving everyone else.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Limits")]
struct LimitArgs {
    /// Largest gRPC message (one DoPut batch, one parameter set).
    #[arg(long, default_value = "256MiB", value_parser = parse_bytes)]
    max_message_bytes: usize,
    /// Largest HTTP request body.
    #[arg(long, default_value = "64MiB", value_parser = parse_bytes)]
    max_body_bytes: usize,
    /// Most rows one write batch may carry (DoPut batch or HTTP body).
    #[arg(long, default_value_t = 4 << 20, value_parser = at_least_one)]
    max_batch_rows: usize,
    /// Most series the catalog may hold. A write bringing series past it is
    /// refused whole (gRPC RESOURCE_EXHAUSTED, HTTP 429); writes to known
    /// series go on.
    #[arg(long, default_value_t = 1_000_000, value_parser = at_least_one)]
    max_series: usize,
    /// Most idempotent producers (Producer-Id) the metrics stream tracks. A
    /// new one past it is refused with HTTP 429; known producers go on,
    /// and none is evicted (idle ones are forgotten with --retention).
    #[arg(long, default_value_t = 10_000, value_parser = at_least_one)]
    max_producers: usize,
    /// Most series the last-value cache keeps (the newest point of each, in
    /// memory, for "latest value per series" queries). Past it the cache
    /// empties and queries scan until restart; 0 turns it off.
    #[arg(long, default_value_t = crate::ingest::DEFAULT_LAST_VALUE_SERIES)]
    last_value_cache_series: usize,
    /// Queries that may run at once; more are refused, not queued.
    #[arg(long, default_value_t = 64, value_parser = at_least_one)]
    max_concurrent_queries: usize,
    /// Memory one query may use.
    #[arg(long, default_value = "2GiB", value_parser = parse_bytes)]
    query_memory_limit: usize,
    /// Largest answer of HTTP /v1/query (encoded JSON, CSV or Arrow); a
    /// larger one is refused with 429. Flight SQL streams and is not capped.
    #[arg(long, default_value = "256MiB", value_parser = parse_bytes)]
    max_query_result_bytes: usize,
    /// Time one query may take.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    query_timeout: Duration,
    /// Continuous queries (SUBSCRIBE) that may run at once.
    #[arg(long, default_value_t = 256, value_parser = at_least_one)]
    max_subscriptions: usize,
    /// How long a subscriber may leave an update unread (its 16-message
    /// outbox full) before it is dropped with RESOURCE_EXHAUSTED.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    subscriber_timeout: Duration,
    /// Bytes of new data one subscription may hold until its next emit (a
    /// long emit_interval over busy ingest). Past it the subscription ends
    /// with RESOURCE_EXHAUSTED naming this flag.
    #[arg(long, default_value = "256MiB", value_parser = parse_bytes)]
    subscribe_max_pending_bytes: usize,
    /// Groups one aggregate subscription may keep (e.g. GROUP BY
    /// time_bucket grows a group per bucket). Past it the subscription ends,
    /// or is refused, with RESOURCE_EXHAUSTED naming this flag; groups are
    /// never evicted.
    #[arg(long, default_value_t = 100_000, value_parser = at_least_one)]
    subscribe_max_groups: usize,
    /// Durable Streams streams that may exist at once (each keeps an open
    /// log and a writer thread).
    #[arg(long, default_value_t = 10_000, value_parser = at_least_one)]
    max_streams: usize,
    /// How long a client has to finish its TLS handshake; a connection
    /// still silent then is closed.
    #[arg(long, default_value = "5s", value_parser = parse_handshake_timeout)]
    tls_handshake_timeout: Duration,
    /// TLS handshakes in progress at once; further connections wait in the
    /// listen backlog.
    #[arg(long, default_value_t = 4096, value_parser = at_least_one)]
    tls_max_handshakes: usize,
    /// TLS handshakes in progress from one IP address; its further
    /// connections are closed at once (what keeps idle connections from
    /// one address from locking everyone else out).
    #[arg(long, default_value_t = 128, value_parser = at_least_one)]
    tls_max_handshakes_per_ip: usize,
}

pub async fn run(a: StartArgs) -> Result<()> {
    let mut engine = EngineConfig::new(&a.data_dir);
    engine.buffer.flush_interval = a.flush_interval;
    engine.buffer.flush_bytes = a.flush_bytes;
    engine.buffer.max_buffer_bytes = a.max_buffer_bytes;
    engine.buffer.write_timeout = a.write_timeout;
    engine.log.segment_bytes = a.segment_bytes as u64;
    engine.log.stream_retention = crate::stream::Retention {
        age: a.stream_retention,
        bytes: a.stream_retention_bytes as u64,
    };
    let limits = a.limits;
    engine.buffer.max_batch_rows = limits.max_batch_rows;
    engine.buffer.max_series = limits.max_series;
    engine.buffer.max_producers = limits.max_producers;
    engine.cache.last_value_series = limits.last_value_cache_series;
    let storage = a.storage;
    if let Some(url) = &storage.object_store {
        engine.store = Some(crate::storage::Store::from_url(url)?);
    }
    if storage.retention.is_some_and(|r| r.is_zero()) {
        anyhow::bail!("--retention 0 would drop every chunk as it is written; leave it out to keep data forever");
    }
    engine.maintenance.retention = storage.retention;
    engine.maintenance.compaction_interval = storage.compaction_interval;
    engine.maintenance.gc_grace = storage.gc_grace.max(limits.query_timeout);
    engine.cache.chunk_cache_bytes = storage.chunk_cache_bytes;
    let auth_tokens = tokens("--auth-token", &a.auth_token, a.auth_token_file.as_deref())?;
    let read_only_tokens = tokens(
        "--read-only-token",
        &a.read_only_token,
        a.read_only_token_file.as_deref(),
    )?;
    if auth_tokens.iter().any(|t| read_only_tokens.contains(t)) {
        anyhow::bail!("a token is given both as --auth-token and as --read-only-token: each token has one role");
    }
    let config = ServerConfig {
        addr: SocketAddr::new(a.host, a.port),
        engine,
        query: QueryConfig {
            memory_limit: limits.query_memory_limit,
            timeout: limits.query_timeout,
            max_concurrent: limits.max_concurrent_queries,
            slow_threshold: (!a.slow_query_threshold.is_zero()).then_some(a.slow_query_threshold),
            max_result_bytes: limits.max_query_result_bytes,
        },
        streams: StreamsConfig {
            long_poll_timeout: a.long_poll_timeout,
            sse_max_duration: a.sse_max_duration,
            max_body_bytes: limits.max_body_bytes,
            max_streams: limits.max_streams,
            ..StreamsConfig::default()
        },
        source: match &a.source {
            Some(url) => {
                Some(RemoteStream::new(url, a.source_token.as_deref()).context("--source")?)
            }
            None => None,
        },
        subscribe: SubscribeConfig {
            max_subscriptions: limits.max_subscriptions,
            send_timeout: limits.subscriber_timeout,
            max_pending_bytes: limits.subscribe_max_pending_bytes,
            max_groups: limits.subscribe_max_groups,
        },
        max_message_bytes: limits.max_message_bytes,
        auth_tokens,
        read_only_tokens,
        tls_handshake: server::HandshakeLimits {
            timeout: limits.tls_handshake_timeout,
            max_pending: limits.tls_max_handshakes,
            max_pending_per_ip: limits.tls_max_handshakes_per_ip,
        },
        tls: match (a.tls_cert, a.tls_key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => anyhow::bail!("--tls-cert and --tls-key go together"),
        },
    };
    let tls = config.tls.is_some();
    let srv = server::start(config).await.context("starting the server")?;
    let data_dir = a.data_dir.canonicalize().unwrap_or(a.data_dir.clone());
    let chunks = match &storage.object_store {
        Some(url) => format!(", chunks in {url}"),
        None => String::new(),
    };
    tracing::info!(addr = %srv.addr, data_dir = %data_dir.display(), object_store = storage.object_store.as_deref().unwrap_or("-"), "StreamDB listening (gRPC Flight SQL and HTTP on one port)");
    let (grpc, http) = if tls {
        ("grpc+tls", "https")
    } else {
        ("grpc", "http")
    };
    eprintln!(
        "StreamDB {} listening on {} (Flight SQL: {grpc}://{}, HTTP: {http}://{}), data in {}{chunks}",
        env!("CARGO_PKG_VERSION"),
        srv.addr,
        srv.addr,
        srv.addr,
        data_dir.display()
    );
    shutdown_signal().await;
    tracing::info!("shutting down: draining requests and flushing the write buffer");
    srv.stop().await.context("shutting down")?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Tokens from `flag` (and its env variable) and its token file. Never
/// logged. An empty one is an error, not skipped: `--auth-token ""` must
/// not quietly turn authentication off.
fn tokens(flag: &str, flags: &[String], file: Option<&std::path::Path>) -> Result<Vec<String>> {
    let mut tokens: Vec<String> = flags.iter().map(|t| t.trim().to_string()).collect();
    if let Some(n) = tokens.iter().position(String::is_empty) {
        let env = format!(
            "STREAMDB_{}",
            flag.trim_start_matches('-')
                .replace('-', "_")
                .to_uppercase()
        );
        anyhow::bail!(
            "{flag} (or {env}) value {} of {} is empty",
            n + 1,
            tokens.len()
        );
    }
    if let Some(path) = file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        tokens.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string),
        );
        if tokens.is_empty() {
            anyhow::bail!("{} holds no tokens", path.display());
        }
    }
    Ok(tokens)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
