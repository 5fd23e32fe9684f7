//! `streamdb ingest`: sample data at a steady rate, or files (Parquet, Arrow
//! IPC, CSV, NDJSON; `-` or a pipe for NDJSON on stdin), written with DoPut
//! through the client. A progress bar on a terminal, periodic lines
//! otherwise, and a one-line summary at the end.

use std::fs::File;
use std::io::{BufReader, IsTerminal, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema};
use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use streamdb_client::{Client, Producer, RetryPolicy};
use tokio::time::Instant;

use super::connection::Connection;
use super::sample::Sample;
use super::units::{self, parse_duration};
use crate::runtime::Clock;

#[derive(clap::Args, Debug)]
pub struct IngestArgs {
    /// Generate realistic sample metrics: hosts in three regions reporting
    /// CPU, memory, disk and network.
    #[arg(long)]
    generate_sample: bool,
    /// Points per second for --generate-sample (1000/s, 50k/s, 2M/s).
    #[arg(long, default_value = "1000/s", value_parser = parse_rate, conflicts_with = "files")]
    rate: f64,
    /// How long to generate (60s, 5m); until Ctrl-C if neither this nor --count.
    #[arg(long, value_parser = parse_duration, conflicts_with = "files")]
    duration: Option<Duration>,
    /// Stop after this many points.
    #[arg(long, conflicts_with_all = ["duration", "files"])]
    count: Option<u64>,
    /// Machines in the sample fleet (each reports 6 metrics).
    #[arg(long, default_value_t = 10, conflicts_with = "files")]
    hosts: usize,
    /// A file to ingest (repeatable): Parquet, Arrow IPC, CSV or NDJSON,
    /// told apart by content and extension; `-` reads NDJSON from stdin.
    #[arg(long = "file", conflicts_with = "generate_sample")]
    files: Vec<PathBuf>,
    /// Rows per DoPut batch.
    #[arg(long, default_value_t = 10_000)]
    batch_size: usize,
    /// Times a batch is resent after a lost connection (UNAVAILABLE,
    /// CANCELLED), with backoff from 100 ms to 5 s; resent batches carry
    /// the same producer sequence numbers, so none is stored twice.
    #[arg(long, default_value_t = 10)]
    retries: u32,
    /// Print the producer id of this run and every retry.
    #[arg(long, short)]
    verbose: bool,
    #[command(flatten)]
    conn: Connection,
}

/// `1000/s`, `50k/s`, `2M/s`, or a bare number of points per second.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let t = s.trim().trim_end_matches("/s").trim();
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1e3),
        Some('m' | 'M') => (&t[..t.len() - 1], 1e6),
        _ => (t, 1.0),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid rate {s:?}: use e.g. 1000/s, 50k/s"))?;
    if !(v > 0.0 && v.is_finite()) {
        return Err(format!("rate must be positive (got {s:?})"));
    }
    Ok(v * mult)
}

/// Counts what was written and shows it.
struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
    last_line: Instant,
    points: u64,
    batches: u64,
    last_offset: Option<String>,
}

impl Progress {
    fn new(total: Option<u64>) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = match total {
                Some(n) => ProgressBar::new(n),
                None => ProgressBar::new_spinner(),
            };
            let template = if total.is_some() {
                "{spinner} [{elapsed_precise}] {bar:30.cyan/blue} {human_pos}/{human_len} points ({rate}) {msg}"
            } else {
                "{spinner} [{elapsed_precise}] {human_pos} points ({rate}) {msg}"
            };
            // indicatif's own {per_sec} prints four decimals.
            let style = ProgressStyle::with_template(template)
                .expect("valid template")
                .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{}/s", units::count(s.per_sec().round() as u64));
                });
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self {
            bar,
            started: Clock::system().instant(),
            last_line: Clock::system().instant(),
            points: 0,
            batches: 0,
            last_offset: None,
        }
    }

    fn add(&mut self, rows: u64, offset: Option<String>) {
        self.points += rows;
        self.batches += 1;
        if offset.is_some() {
            self.last_offset = offset;
        }
        match &self.bar {
            Some(bar) => bar.set_position(self.points),
            None if Clock::system().since(self.last_line) >= Duration::from_secs(5) => {
                self.last_line = Clock::system().instant();
                eprintln!(
                    "ingest: {} points, {}/s",
                    units::count(self.points),
                    units::count(self.rate() as u64)
                );
            }
            None => {}
        }
    }

    fn rate(&self) -> f64 {
        self.points as f64 / Clock::system().since(self.started).as_secs_f64().max(1e-9)
    }

    fn finish(self) -> Result<()> {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        outln!(
            "ingested {} points in {} batch(es) in {:.1}s ({}/s), last offset {}",
            units::count(self.points),
            units::count(self.batches),
            Clock::system().since(self.started).as_secs_f64(),
            units::count(self.rate().round() as u64),
            self.last_offset.as_deref().unwrap_or("-")
        )?;
        Ok(())
    }
}

/// The client and this run's idempotent producer: every batch is written
/// exactly once, retries included.
struct Writer {
    client: Client,
    producer: Producer,
    policy: RetryPolicy,
    verbose: bool,
}

impl Writer {
    fn new(client: Client, a: &IngestArgs) -> Self {
        let producer = Producer::new(producer_id());
        if a.verbose {
            eprintln!("ingest: producer id {}", producer.id);
        }
        let policy = RetryPolicy {
            retries: a.retries,
            ..RetryPolicy::default()
        };
        Self {
            client,
            producer,
            policy,
            verbose: a.verbose,
        }
    }

    async fn write(&mut self, batch: RecordBatch) -> Result<streamdb_client::WriteSummary> {
        let verbose = self.verbose;
        let retries = self.policy.retries;
        let summary = self
            .client
            .write_once(&mut self.producer, vec![batch], &self.policy, |n, e| {
                if verbose {
                    eprintln!("ingest: retry {n}/{retries} after: {e}");
                }
            })
            .await?;
        if verbose && summary.duplicates > 0 {
            eprintln!(
                "ingest: {} batch(es) were already stored (their acknowledgement was lost)",
                summary.duplicates
            );
        }
        Ok(summary)
    }
}

/// A producer id no other run shares: pid, the time and a random part.
fn producer_id() -> String {
    format!(
        "streamdb-ingest-{}-{}-{:08x}",
        std::process::id(),
        Clock::system().now_micros(),
        rand::random::<u32>()
    )
}

pub async fn run(a: IngestArgs) -> Result<()> {
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let stdin_piped = !std::io::stdin().is_terminal();
    if !a.generate_sample && a.files.is_empty() && !stdin_piped {
        bail!("nothing to ingest: use --generate-sample, --file PATH, or pipe NDJSON points into stdin");
    }
    let mut client = Writer::new(a.conn.connect().await?, &a);
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    if a.generate_sample {
        generate(&mut client, &a, &mut ctrl_c).await
    } else {
        let files = if a.files.is_empty() {
            vec![PathBuf::from("-")]
        } else {
            a.files.clone()
        };
        let stdin_only = a.files.is_empty();
        let mut progress = Progress::new(None);
        for f in &files {
            let batches =
                read_file(f, a.batch_size).with_context(|| format!("reading {}", f.display()))?;
            for batch in batches {
                let batch = batch.with_context(|| format!("reading {}", f.display()))?;
                let rows = batch.num_rows() as u64;
                let summary = client.write(batch).await?;
                progress.add(rows, summary.last_offset);
            }
        }
        if stdin_only && progress.points == 0 {
            bail!("nothing to ingest: stdin held no points (use --generate-sample, --file PATH, or pipe NDJSON points in)");
        }
        progress.finish()?;
        Ok(())
    }
}

async fn generate(
    client: &mut Writer,
    a: &IngestArgs,
    ctrl_c: &mut std::pin::Pin<&mut impl std::future::Future<Output = std::io::Result<()>>>,
) -> Result<()> {
    let total = a.count.or_else(|| {
        a.duration
            .map(|d| (d.as_secs_f64() * a.rate).round() as u64)
    });
    let mut sample = Sample::new(a.hosts, rand::random());
    let mut progress = Progress::new(total);
    // Send every 100 ms (or bigger batches at high rates) at the point
    // count the rate says should have been sent by then, so the rate holds
    // over the whole run instead of drifting with write latency.
    let per_tick = ((a.rate * 0.1).ceil() as usize).clamp(1, a.batch_size);
    // Points in a batch are stamped 1/rate apart, as they would be sampled.
    let spacing_us = ((1e6 / a.rate).round() as i64).max(1);
    let start = Clock::system().instant();
    let mut sent: u64 = 0;
    loop {
        // A duration is a point budget (rate × duration) sent on schedule;
        // if the server falls behind the run takes longer, never fewer points.
        if total.is_some_and(|t| sent >= t) {
            // The last batch stands for the tick after it: wait that out,
            // so a 60 s run takes 60 s and the summary shows the rate
            // asked for.
            let end = start + Duration::from_secs_f64(sent as f64 / a.rate);
            tokio::select! {
                _ = tokio::time::sleep_until(end) => {}
                _ = &mut *ctrl_c => {}
            }
            break;
        }
        let due = start + Duration::from_secs_f64(sent as f64 / a.rate);
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = &mut *ctrl_c => break,
        }
        let n = total.map_or(per_tick, |t| per_tick.min((t - sent) as usize));
        let now_us = Clock::system().now_micros();
        let summary = client.write(sample.batch(n, now_us, spacing_us)).await?;
        sent += n as u64;
        progress.add(n as u64, summary.last_offset);
    }
    progress.finish()?;
    Ok(())
}

type Batches = Box<dyn Iterator<Item = Result<RecordBatch, arrow::error::ArrowError>>>;

/// Opens a file by its content (magic bytes) or, failing that, extension.
fn read_file(path: &Path, batch_size: usize) -> Result<Batches> {
    if path == Path::new("-") {
        return ndjson(Box::new(BufReader::new(std::io::stdin())), batch_size);
    }
    let mut f = File::open(path)?;
    let mut magic = [0u8; 6];
    let n = f.read(&mut magic)?;
    f.rewind()?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if n >= 4 && &magic[..4] == b"PAR1" {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)?
            .with_batch_size(batch_size)
            .build()?;
        return Ok(Box::new(reader));
    }
    // Arrow IPC batches are whatever size the writer chose: re-sliced
    // (zero-copy) so no DoPut exceeds --batch-size.
    if n >= 6 && &magic == b"ARROW1" {
        let reader = arrow::ipc::reader::FileReader::try_new(f, None)?;
        return Ok(rechunk(Box::new(reader), batch_size));
    }
    if n >= 4 && magic[..4] == [0xff; 4] {
        let reader = arrow::ipc::reader::StreamReader::try_new(f, None)?;
        return Ok(rechunk(Box::new(reader), batch_size));
    }
    match ext.as_str() {
        "csv" => {
            let (schema, _) = arrow::csv::reader::Format::default()
                .with_header(true)
                .infer_schema(&mut f, Some(1000))?;
            f.rewind()?;
            let reader = arrow::csv::ReaderBuilder::new(Arc::new(schema))
                .with_header(true)
                .with_batch_size(batch_size)
                .build(f)?;
            Ok(Box::new(reader))
        }
        "ndjson" | "jsonl" | "json" => ndjson(Box::new(BufReader::new(f)), batch_size),
        _ => bail!(
            "{}: unknown format (expected Parquet or Arrow IPC content, or a .csv, .ndjson or .jsonl name)",
            path.display()
        ),
    }
}

/// Splits batches longer than `batch_size` into slices of at most that.
fn rechunk(batches: Batches, batch_size: usize) -> Batches {
    Box::new(batches.flat_map(move |b| {
        let parts: Vec<_> = match b {
            Ok(b) => (0..b.num_rows())
                .step_by(batch_size)
                .map(|at| Ok(b.slice(at, batch_size.min(b.num_rows() - at))))
                .collect(),
            Err(e) => vec![Err(e)],
        };
        parts
    }))
}

/// NDJSON point messages (`{"time", "metric", "tags", "value"}`; `time` an
/// RFC 3339 string or Unix microseconds). Unknown fields are errors.
fn ndjson(input: Box<dyn std::io::BufRead>, batch_size: usize) -> Result<Batches> {
    let schema = Schema::new(vec![
        Field::new("time", crate::model::time_type(), false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("tags", crate::model::tags_type(), true),
        Field::new("value", DataType::Float64, false),
    ]);
    let reader = arrow::json::ReaderBuilder::new(Arc::new(schema))
        .with_batch_size(batch_size)
        .with_strict_mode(true)
        .build(input)?;
    Ok(Box::new(reader))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("1000/s"), Ok(1000.0));
        assert_eq!(parse_rate("50k/s"), Ok(50_000.0));
        assert_eq!(parse_rate("2M"), Ok(2_000_000.0));
        for bad in ["", "fast", "-5/s", "0/s"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn arrow_ipc_batches_are_cut_to_the_batch_size() {
        let b = crate::model::points_of(&[(1, 0, 1.0); 25]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("points.arrow");
        let mut w =
            arrow::ipc::writer::FileWriter::try_new(File::create(&path).unwrap(), &b.schema())
                .unwrap();
        w.write(&b).unwrap();
        w.finish().unwrap();
        let sizes: Vec<usize> = read_file(&path, 10)
            .unwrap()
            .map(|b| b.unwrap().num_rows())
            .collect();
        assert_eq!(sizes, [10, 10, 5]);
    }

    #[test]
    fn ndjson_points_become_batches() {
        let text = "{\"time\":\"2024-01-15T00:00:00Z\",\"metric\":\"cpu\",\"tags\":{\"host\":\"a\"},\"value\":1.5}\n\
                    {\"time\":1705276800000001,\"metric\":\"cpu\",\"value\":2}\n";
        let batches: Vec<_> = ndjson(Box::new(text.as_bytes()), 100)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(batches[0].num_rows(), 2);
        let bad = "{\"time\":1,\"metric\":\"cpu\",\"value\":2,\"oops\":1}\n";
        assert!(ndjson(Box::new(bad.as_bytes()), 100)
            .unwrap()
            .next()
            .unwrap()
            .is_err());
    }
}
