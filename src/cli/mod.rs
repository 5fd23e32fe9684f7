//! The `streamdb` command line. `start` runs the server; every other
//! command talks to a server through the bundled client.

mod ingest;
mod sample;
mod units;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use streamdb_client::{Client, ConnectOptions};

use crate::ingest::EngineConfig;
use crate::query::subscribe::SubscribeConfig;
use crate::query::QueryConfig;
use crate::server::{self, ServerConfig, StreamsConfig};
use units::{parse_bytes, parse_duration};

#[derive(Parser, Debug)]
#[command(
    name = "streamdb",
    version,
    about = "StreamDB: a time-series database on Arrow Flight, durable streams and object storage"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Bearer token for servers started with --auth-token.
    #[arg(long, global = true, env = "STREAMDB_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM CA certificate to trust for https:// servers (private CA or
    /// self-signed).
    #[arg(long, global = true, env = "STREAMDB_CA_FILE")]
    ca_file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start the server (gRPC and HTTP on one port).
    #[command(after_help = "Example:\n  streamdb start --data-dir ./data --port 8080")]
    Start(StartArgs),
    /// Write points: realistic sample data at a steady rate, or files.
    #[command(
        after_help = "Examples:\n  streamdb ingest --generate-sample --rate 1000/s --duration 60s\n  streamdb ingest --generate-sample --rate 200k/s --count 10000000 --hosts 500\n  streamdb ingest --file metrics.parquet --file more.csv\n  cat points.ndjson | streamdb ingest"
    )]
    Ingest(ingest::IngestArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "Example:\n  streamdb completions bash > /etc/bash_completion.d/streamdb"
    )]
    Completions { shell: clap_complete::Shell },
    /// Show the server's stream, buffer and storage status.
    #[command(after_help = "Example:\n  streamdb status --json")]
    Status {
        #[arg(long, env = "STREAMDB_SERVER", default_value = "http://127.0.0.1:8080")]
        server: String,
        /// Print the raw JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Run a SQL query.
    #[command(
        after_help = "Example:\n  streamdb query \"SELECT time_bucket('10s', time), AVG(value) FROM metrics WHERE time > now() - '1m' GROUP BY 1\""
    )]
    Query {
        sql: String,
        #[arg(long, env = "STREAMDB_SERVER", default_value = "http://127.0.0.1:8080")]
        server: String,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Run a continuous query: print the current result, then every change
    /// as it arrives, until Ctrl-C.
    #[command(
        after_help = "Examples:\n  streamdb subscribe \"SELECT time_bucket('5s', time), AVG(value) FROM metrics GROUP BY 1\"\n  streamdb subscribe \"SELECT time, value FROM metrics WHERE tags['host'] = 'web-1'\" --no-snapshot"
    )]
    Subscribe {
        /// A SELECT (or `SUBSCRIBE TO SELECT ... WITH (...)`).
        sql: String,
        #[arg(long, env = "STREAMDB_SERVER", default_value = "http://127.0.0.1:8080")]
        server: String,
        /// Start with changes only, without the current result.
        #[arg(long)]
        no_snapshot: bool,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
    /// Arrow IPC stream (for `pyarrow.ipc.open_stream`).
    Arrow,
}

#[derive(clap::Args, Debug)]
struct StartArgs {
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
    /// Memory one query may use.
    #[arg(long, default_value = "2GiB", value_parser = parse_bytes)]
    query_memory_limit: usize,
    /// Time one query may take.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    query_timeout: Duration,
    /// How long a Durable Streams long-poll read waits for new data.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    long_poll_timeout: Duration,
    /// How long one Durable Streams SSE connection stays open before the
    /// server closes it (clients reconnect from their last offset).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    sse_max_duration: Duration,
    /// Ingest JSON points from a remote Durable Streams stream (for example
    /// another StreamDB's http://host:8080/v1/stream/metrics), exactly once:
    /// the position read is committed with the data.
    #[arg(long)]
    source: Option<String>,
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
    /// PEM certificate chain: serve gRPC and HTTPS with TLS on the port.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Continuous queries (SUBSCRIBE) that may run at once.
    #[arg(long, default_value_t = 256)]
    max_subscriptions: usize,
    /// Largest HTTP request body (413 above it).
    #[arg(long, default_value = "64MiB", value_parser = parse_bytes)]
    max_body_bytes: usize,
}

pub async fn run(cli: Cli) -> Result<()> {
    // `--token` (anywhere on the line) or STREAMDB_TOKEN, for every command
    // that connects.
    let ca_pem = match &cli.ca_file {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    let opts = ConnectOptions {
        token: cli.token,
        ca_pem,
    };
    match cli.command {
        Command::Start(args) => start(args).await,
        Command::Ingest(args) => ingest::run(args, opts).await,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "streamdb",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Status { server, json } => status(&server, json, opts).await,
        Command::Query {
            sql,
            server,
            format,
        } => query(&server, &sql, format, opts).await,
        Command::Subscribe {
            sql,
            server,
            no_snapshot,
        } => subscribe(&server, &sql, no_snapshot, opts).await,
    }
}

async fn start(a: StartArgs) -> Result<()> {
    let mut engine = EngineConfig::new(&a.data_dir);
    engine.flush_interval = a.flush_interval;
    engine.flush_bytes = a.flush_bytes;
    engine.max_buffer_bytes = a.max_buffer_bytes;
    engine.write_timeout = a.write_timeout;
    engine.segment_bytes = a.segment_bytes as u64;
    let config = ServerConfig {
        addr: SocketAddr::new(a.host, a.port),
        engine,
        query: QueryConfig {
            memory_limit: a.query_memory_limit,
            timeout: a.query_timeout,
        },
        streams: StreamsConfig {
            long_poll_timeout: a.long_poll_timeout,
            sse_max_duration: a.sse_max_duration,
            max_body_bytes: a.max_body_bytes,
            ..StreamsConfig::default()
        },
        source: a.source,
        subscribe: SubscribeConfig {
            max_subscriptions: a.max_subscriptions,
            ..SubscribeConfig::default()
        },
        auth_tokens: auth_tokens(&a.auth_token, a.auth_token_file.as_deref())?,
        tls: match (a.tls_cert, a.tls_key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => anyhow::bail!("--tls-cert and --tls-key go together"),
        },
    };
    let srv = server::start(config).await.context("starting the server")?;
    let data_dir = a.data_dir.canonicalize().unwrap_or(a.data_dir.clone());
    tracing::info!(addr = %srv.addr, data_dir = %data_dir.display(), "StreamDB listening (gRPC Flight SQL and HTTP on one port)");
    eprintln!(
        "StreamDB {} listening on {} (Flight SQL: grpc://{}, HTTP: http://{}), data in {}",
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

/// Tokens from flags and the token file. Never logged.
fn auth_tokens(flags: &[String], file: Option<&std::path::Path>) -> Result<Vec<String>> {
    let mut tokens: Vec<String> = flags
        .iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
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

async fn status(server: &str, json: bool, opts: ConnectOptions) -> Result<()> {
    let mut client = Client::connect_with(server, opts).await?;
    let s = client.status().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    println!(
        "StreamDB {} at {}",
        s["version"].as_str().unwrap_or("?"),
        server
    );
    println!(
        "  data dir        {}",
        s["data_dir"].as_str().unwrap_or("?")
    );
    println!("  rows            {}", units::count(n(&s["rows"])));
    println!("  series          {}", units::count(n(&s["series"])));
    println!(
        "  time range      {} .. {}",
        s["time_range"]["min"].as_str().unwrap_or("-"),
        s["time_range"]["max"].as_str().unwrap_or("-")
    );
    println!(
        "  stream          offsets {} .. {}, {} segment(s), {}",
        s["stream"]["first_offset"].as_str().unwrap_or("?"),
        s["stream"]["next_offset"].as_str().unwrap_or("?"),
        n(&s["stream"]["segments"]),
        units::bytes(n(&s["stream"]["bytes"]))
    );
    println!(
        "  write buffer    {} rows, {}",
        units::count(n(&s["buffer"]["rows"])),
        units::bytes(n(&s["buffer"]["bytes"]))
    );
    println!(
        "  storage         {} chunk(s), {} rows, {}, manifest v{}",
        n(&s["storage"]["chunks"]),
        units::count(n(&s["storage"]["rows"])),
        units::bytes(n(&s["storage"]["bytes"])),
        n(&s["storage"]["manifest_version"])
    );
    Ok(())
}

async fn subscribe(server: &str, sql: &str, no_snapshot: bool, opts: ConnectOptions) -> Result<()> {
    let mut client = Client::connect_with(server, opts).await?;
    let statement = if no_snapshot {
        let select = sql.trim().trim_end_matches(';');
        format!("SUBSCRIBE TO {select} WITH (snapshot = false)")
    } else {
        sql.to_string()
    };
    let mut sub = client.subscribe(&statement).await?;
    let schema = sub.schema.clone();
    // One listener for the whole run, so a Ctrl-C between two updates is
    // not missed.
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let update = tokio::select! {
            u = sub.next() => u,
            _ = &mut ctrl_c => return Ok(()),
        };
        let Some(update) = update else {
            anyhow::bail!("the server ended the subscription");
        };
        let update = update?;
        let Some(batch) = update.batch else { continue };
        if update.kind != "snapshot" && batch.num_rows() == 0 {
            continue;
        }
        let when = update.max_time.as_deref().unwrap_or("-");
        println!(
            "-- {} at offset {} (data up to {when}): {} row(s)",
            update.kind,
            update.offset,
            batch.num_rows()
        );
        let table =
            arrow::util::pretty::pretty_format_batches_with_schema(schema.clone(), &[batch])?;
        println!("{table}");
    }
}

async fn query(server: &str, sql: &str, format: Format, opts: ConnectOptions) -> Result<()> {
    let mut client = Client::connect_with(server, opts).await?;
    let (schema, batches) = client.query(sql).await?;
    let mut out = Vec::new();
    match format {
        Format::Table => {
            let table = arrow::util::pretty::pretty_format_batches_with_schema(schema, &batches)?;
            out.extend_from_slice(table.to_string().as_bytes());
            out.push(b'\n');
        }
        Format::Csv => {
            let mut w = arrow::csv::Writer::new(&mut out);
            for b in &batches {
                w.write(b)?;
            }
        }
        Format::Json => {
            let mut w = arrow::json::LineDelimitedWriter::new(&mut out);
            for b in &batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        Format::Arrow => {
            let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut out, &schema)?;
            for b in &batches {
                w.write(b)?;
            }
            w.finish()?;
        }
    }
    use std::io::Write;
    std::io::stdout().write_all(&out)?;
    Ok(())
}
