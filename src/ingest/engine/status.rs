//! What `streamdb status` and `/v1/status` report: the engine's parts,
//! read at one instant.

use serde::Serialize;

use crate::ingest::buffer::Logged;
use crate::ingest::buffer::WriteBuffer;
use crate::ingest::commit::CommitPath;
use crate::ingest::compactor::{Maintenance, MaintenanceStatus};
use crate::ingest::config::EngineConfig;
use crate::ingest::last_values::LastValueStatus;
use crate::model::format_micros;
use crate::storage::{CacheStats, ChunkReader, DamagedVersion, Store};
use crate::stream::{Log, Offset};

/// The parts a status is read from.
pub(super) struct Parts<'a> {
    pub config: &'a EngineConfig,
    pub store: &'a Store,
    pub buffer: &'a WriteBuffer,
    pub commit: &'a CommitPath,
    pub maintenance: &'a Maintenance,
    pub reader: &'a ChunkReader,
    pub log: &'a Log<Logged>,
    pub source: Option<SourceStatus>,
}

pub(super) fn read(p: Parts<'_>) -> Status {
    let log = p.log.stats();
    let manifest = p.buffer.manifest();
    let maintenance = p.maintenance.status(&manifest);
    p.buffer.with_state(|st| {
        let m = &st.manifest;
        let mut min = m.chunks.iter().map(|c| c.min_time).min();
        let mut max = m.chunks.iter().map(|c| c.max_time).max();
        for b in &st.batches {
            min = Some(min.map_or(b.min_time, |m| m.min(b.min_time)));
            max = Some(max.map_or(b.max_time, |m| m.max(b.max_time)));
        }
        Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            data_dir: p.config.data_dir.display().to_string(),
            stream: StreamStatus {
                first_offset: log.first_offset.to_string(),
                next_offset: log.next_offset.to_string(),
                segments: log.segments,
                bytes: log.bytes,
                producers: st.writers.producers.len(),
            },
            last_value_cache: p.buffer.last_values().status(),
            buffer: BufferStatus {
                rows: st.rows as u64,
                bytes: st.bytes as u64,
            },
            storage: StorageStatus {
                location: p.store.location().to_string(),
                manifest_version: m.version,
                covered_offset: Offset(m.stream_offset).to_string(),
                chunks: m.chunks.len(),
                compacted_chunks: m.chunks.iter().filter(|c| c.is_compacted()).count(),
                compaction_backlog: maintenance.backlog_chunks,
                rows: m.rows(),
                bytes: m.bytes(),
                retention_seconds: p.config.maintenance.retention.map(|r| r.as_secs()),
                maintenance,
                cache: p.reader.stats(),
                writer: p.commit.lease().map(|l| WriterStatus {
                    node: l.node(),
                    epoch: l.epoch(),
                    lease_held: !l.is_lost(),
                }),
                writer_epoch: p.commit.epoch().0,
                skipped_manifests: p.commit.skipped(),
                deletes: st.deletes.0.len(),
                pending_deletes: st.pending_deletes(),
            },
            series: p.buffer.catalog().len(),
            rows: m.rows() + st.rows as u64,
            time_range: TimeRange {
                min: min.map(format_micros),
                max: max.map(format_micros),
            },
            source: p.source,
        }
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub version: String,
    pub data_dir: String,
    pub stream: StreamStatus,
    pub buffer: BufferStatus,
    pub storage: StorageStatus,
    pub series: usize,
    pub rows: u64,
    pub time_range: TimeRange,
    /// Whether "latest value per series" queries are answered from memory
    /// (`state: complete`) or scan (`unbuilt`, `building`, `over_limit`, `off`).
    pub last_value_cache: LastValueStatus,
    /// The `--source` consumer, when the server follows a remote stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceStatus>,
}

/// What a `--source` consumer is doing.
#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    pub url: String,
    /// `following`, `retrying` (the source is unreachable or missing; it
    /// keeps trying), `finished` (the source stream was closed and fully
    /// read) or `stopped` (it cannot continue without an operator: `error`
    /// says why).
    pub state: &'static str,
    /// The next remote offset to read.
    pub offset: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StreamStatus {
    pub first_offset: String,
    pub next_offset: String,
    pub segments: usize,
    pub bytes: u64,
    /// Idempotent producers whose state is kept (see `exactly_once`).
    pub producers: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct BufferStatus {
    pub rows: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StorageStatus {
    /// The data directory, or `s3://bucket/prefix`.
    pub location: String,
    pub manifest_version: u64,
    pub covered_offset: String,
    pub chunks: usize,
    /// Chunks in the compacted (Parquet) format.
    pub compacted_chunks: usize,
    /// Chunks the compactor would merge now.
    pub compaction_backlog: usize,
    /// Rows in chunks, counting points deletes have removed until
    /// compaction rewrites them.
    pub rows: u64,
    pub bytes: u64,
    /// Deletes not yet applied to every chunk they touch (compaction
    /// applies them); `pending_deletes` of them not yet in the manifest.
    pub deletes: usize,
    pub pending_deletes: usize,
    /// `--retention`, if set.
    pub retention_seconds: Option<u64>,
    pub maintenance: MaintenanceStatus,
    pub cache: CacheStats,
    /// This server's writer lease on a shared object store.
    pub writer: Option<WriterStatus>,
    /// The epoch the objects this server writes are named with.
    pub writer_epoch: u64,
    /// Manifest versions newer than the one in effect that did not decode
    /// and were skipped (at start, after a power loss, or by a commit),
    /// newest first. Empty normally.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped_manifests: Vec<DamagedVersion>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WriterStatus {
    pub node: String,
    pub epoch: u64,
    pub lease_held: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimeRange {
    pub min: Option<String>,
    pub max: Option<String>,
}
