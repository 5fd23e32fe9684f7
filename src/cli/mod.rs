//! The `streamdb` command line. `start` runs the server; every other
//! command talks to a server through the bundled client. Output goes
//! through `outln!`, which turns a closed standard output into
//! [`StdoutClosed`] rather than a panic.

/// `println!` that returns the write's error (see [`stdout_error`]).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*).map_err($crate::cli::stdout_error)
    }};
}

mod connection;
mod ingest;
mod repair;
mod sample;
mod start;
mod units;

use anyhow::Result;
use arrow::array::RecordBatch;
use clap::{Parser, Subcommand, ValueEnum};

use connection::Connection;

/// Standard output was closed by its reader (`streamdb status | head -1`):
/// the command stops quietly, with exit status 0.
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed")]
pub struct StdoutClosed;

/// A write to standard output failed: [`StdoutClosed`] when the reader has
/// gone, the I/O error otherwise.
pub(crate) fn stdout_error(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        StdoutClosed.into()
    } else {
        e.into()
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "streamdb",
    version,
    about = "StreamDB: a time-series database on Arrow Flight, durable streams and object storage"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as text or one JSON object each; RUST_LOG sets levels and
    /// targets (e.g. RUST_LOG=info,streamdb::slow_query=warn).
    #[arg(long, global = true, value_enum, env = "STREAMDB_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

impl Cli {
    /// Installs the process's log subscriber: stderr, level `info` unless
    /// RUST_LOG says otherwise.
    pub fn init_logging(&self) {
        let filter =
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
        // Colours only for a person at a terminal: a log file or a
        // journal would keep the escape codes as text.
        let fmt = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr);
        match self.log_format {
            LogFormat::Text => fmt.init(),
            LogFormat::Json => fmt.json().flatten_event(true).init(),
        }
    }
}

// Parsed once per process: the size of `start`'s flags does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Start the server (gRPC and HTTP on one port).
    #[command(after_help = "Example:\n  streamdb start --data-dir ./data --port 8080")]
    Start(start::StartArgs),
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
    /// Repair a data directory that startup refuses (damaged log segments,
    /// records that do not decode, unreadable named streams): damaged bytes
    /// are set aside, never deleted, and the lost offsets are printed.
    #[command(after_help = "Example:\n  streamdb repair --data-dir ./data")]
    Repair(repair::RepairArgs),
    /// Show the server's stream, buffer and storage status.
    #[command(after_help = "Example:\n  streamdb status --json")]
    Status {
        #[command(flatten)]
        conn: Connection,
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
        #[command(flatten)]
        conn: Connection,
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
        #[command(flatten)]
        conn: Connection,
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

pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Start(args) => start::run(args).await,
        Command::Ingest(args) => ingest::run(args).await,
        Command::Repair(args) => repair::run(args),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "streamdb", &mut script);
            write_stdout(&script)
        }
        Command::Status { conn, json } => status(&conn, json).await,
        Command::Query { sql, conn, format } => query(&conn, &sql, format).await,
        Command::Subscribe {
            sql,
            conn,
            no_snapshot,
        } => subscribe(&conn, &sql, no_snapshot).await,
    }
}

async fn status(conn: &Connection, json: bool) -> Result<()> {
    let mut client = conn.connect().await?;
    let s = client.status().await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&s)?)?;
        return Ok(());
    }
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    outln!(
        "StreamDB {} at {}",
        s["version"].as_str().unwrap_or("?"),
        conn.server
    )?;
    outln!(
        "  data dir        {}",
        s["data_dir"].as_str().unwrap_or("?")
    )?;
    outln!("  rows            {}", units::count(n(&s["rows"])))?;
    outln!("  series          {}", units::count(n(&s["series"])))?;
    outln!(
        "  time range      {} .. {}",
        s["time_range"]["min"].as_str().unwrap_or("-"),
        s["time_range"]["max"].as_str().unwrap_or("-")
    )?;
    outln!(
        "  stream          offsets {} .. {}, {} segment(s), {}",
        s["stream"]["first_offset"].as_str().unwrap_or("?"),
        s["stream"]["next_offset"].as_str().unwrap_or("?"),
        n(&s["stream"]["segments"]),
        units::bytes(n(&s["stream"]["bytes"]))
    )?;
    outln!(
        "  write buffer    {} rows, {}",
        units::count(n(&s["buffer"]["rows"])),
        units::bytes(n(&s["buffer"]["bytes"]))
    )?;
    let st = &s["storage"];
    outln!(
        "  storage         {} chunk(s) ({} compacted), {} rows, {}, manifest v{}",
        n(&st["chunks"]),
        n(&st["compacted_chunks"]),
        units::count(n(&st["rows"])),
        units::bytes(n(&st["bytes"])),
        n(&st["manifest_version"])
    )?;
    for d in st["skipped_manifests"].as_array().into_iter().flatten() {
        outln!(
            "  skipped         manifest v{} ({}) does not decode: {}",
            n(&d["version"]),
            d["path"].as_str().unwrap_or("?"),
            d["error"].as_str().unwrap_or("?")
        )?;
    }
    outln!(
        "  location        {}",
        st["location"].as_str().unwrap_or("?")
    )?;
    if let Some(w) = st["writer"].as_object() {
        outln!(
            "  writer lease    node {}, epoch {}{}",
            w["node"].as_str().unwrap_or("?"),
            w["epoch"],
            if w["lease_held"].as_bool() == Some(true) {
                ""
            } else {
                " (LOST: not writing to storage)"
            }
        )?;
    }
    let m = &st["maintenance"];
    let running = m["compacting"]
        .as_str()
        .map(|h| format!(", compacting the hour of {h}"))
        .unwrap_or_default();
    outln!(
        "  compaction      backlog {} chunk(s) in {} partition(s){running}; done {} merge(s) of {} chunk(s), {} -> {}",
        n(&m["backlog_chunks"]),
        n(&m["backlog_partitions"]),
        n(&m["compactions"]),
        n(&m["chunks_merged"]),
        units::bytes(n(&m["bytes_before"])),
        units::bytes(n(&m["bytes_after"]))
    )?;
    let retention = match st["retention_seconds"].as_u64() {
        Some(secs) => format!("keep {}", units::duration(secs)),
        None => "keep forever".to_string(),
    };
    outln!(
        "  retention       {retention}; oldest data kept {}; {} chunk(s) expired, {} series removed",
        s["time_range"]["min"].as_str().unwrap_or("-"),
        n(&m["expired_chunks"]),
        n(&m["series_removed"])
    )?;
    outln!(
        "  garbage         {} file(s) awaiting deletion, {} deleted",
        n(&m["garbage_pending"]),
        n(&m["files_deleted"])
    )?;
    if let Some(err) = m["last_error"].as_str() {
        outln!("  last error      {err}")?;
    }
    let c = &st["cache"];
    outln!(
        "  chunk cache     {} of {} in {} chunk(s); {} hit(s), {} miss(es), {} ranged read(s)",
        units::bytes(n(&c["bytes"])),
        units::bytes(n(&c["capacity_bytes"])),
        n(&c["chunks"]),
        n(&c["hits"]),
        n(&c["misses"]),
        n(&c["ranged_reads"])
    )?;
    Ok(())
}

async fn subscribe(conn: &Connection, sql: &str, no_snapshot: bool) -> Result<()> {
    let mut client = conn.connect().await?;
    let is_subscribe = sql
        .trim_start()
        .get(..9)
        .is_some_and(|w| w.eq_ignore_ascii_case("subscribe"));
    let statement = match (no_snapshot, is_subscribe) {
        (true, true) => anyhow::bail!(
            "--no-snapshot takes a plain SELECT; in SUBSCRIBE TO text write WITH (snapshot = false)"
        ),
        (true, false) => {
            let select = sql.trim().trim_end_matches(';');
            format!("SUBSCRIBE TO {select} WITH (snapshot = false)")
        }
        (false, _) => sql.to_string(),
    };
    let mut sub = client.subscribe(&statement).await?;
    let schema = sub.schema.clone();
    // One listener for the whole run, so a Ctrl-C between two updates is
    // not missed.
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    // A large snapshot arrives in parts; it is printed as one table.
    let mut snapshot_parts = Vec::new();
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
        let batches = if update.kind == "snapshot" {
            snapshot_parts.push(batch);
            if update.more {
                continue;
            }
            std::mem::take(&mut snapshot_parts)
        } else if batch.num_rows() == 0 {
            continue;
        } else {
            vec![batch]
        };
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        let when = update.max_time.as_deref().unwrap_or("-");
        outln!(
            "-- {} at offset {} (data up to {when}): {rows} row(s)",
            update.kind,
            update.offset,
        )?;
        let table =
            arrow::util::pretty::pretty_format_batches_with_schema(schema.clone(), &batches)?;
        outln!("{table}")?;
    }
}

/// CSV has no nested values: `tags` maps (and lists, structs) become their
/// display text, `{host: web-1}`, as in the table format.
fn flat_for_csv(b: &RecordBatch) -> Result<RecordBatch> {
    use arrow::array::{ArrayRef, StringArray};
    use arrow::datatypes::{Field, Schema};
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (f, c) in b.schema().fields().iter().zip(b.columns()) {
        if f.data_type().is_nested() {
            let fmt = ArrayFormatter::try_new(c.as_ref(), &FormatOptions::default())?;
            let text: StringArray = (0..c.len())
                .map(|i| c.is_valid(i).then(|| fmt.value(i).to_string()))
                .collect();
            fields.push(Field::new(f.name(), arrow::datatypes::DataType::Utf8, true));
            columns.push(std::sync::Arc::new(text));
        } else {
            fields.push(f.as_ref().clone());
            columns.push(c.clone());
        }
    }
    Ok(RecordBatch::try_new(
        std::sync::Arc::new(Schema::new(fields)),
        columns,
    )?)
}

async fn query(conn: &Connection, sql: &str, format: Format) -> Result<()> {
    let mut client = conn.connect().await?;
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
            // The header is written with the first batch: an empty result
            // still gets one.
            let empty = [RecordBatch::new_empty(schema.clone())];
            let batches = if batches.is_empty() {
                &empty[..]
            } else {
                &batches[..]
            };
            for b in batches {
                w.write(&flat_for_csv(b)?)?;
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
    write_stdout(&out)
}

/// Writes `bytes` to standard output and flushes it.
fn write_stdout(bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(bytes).map_err(stdout_error)?;
    out.flush().map_err(stdout_error)
}
