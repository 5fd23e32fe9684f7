//! [`EngineConfig`]: everything the engine is opened with, in one section
//! per part (log, buffer, maintenance, cache). `EngineConfig::new` holds the
//! production defaults; [`EngineConfig::for_tests`] the preset tests start
//! from (no fsync, no background maintenance, flushes only when asked).

use std::path::PathBuf;
use std::time::Duration;

use crate::runtime::{Clock, CrashPoints};
use crate::storage::Store;
use crate::stream::Retention;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    /// Where chunks, manifests and catalogs live; local `data_dir` if `None`.
    pub store: Option<Store>,
    pub log: LogSection,
    pub buffer: BufferSection,
    pub maintenance: MaintenanceSection,
    pub cache: CacheSection,
    /// The time every part reads (simulated in tests).
    pub clock: Clock,
    /// Where the fault harness may crash the engine (nothing outside
    /// tests; see `runtime::crash`).
    pub crash: CrashPoints,
}

/// The `metrics` stream's log.
#[derive(Debug, Clone)]
pub struct LogSection {
    pub segment_bytes: u64,
    pub fsync: bool,
    /// How long the metrics stream stays readable from older offsets after
    /// its records are flushed (the log is trimmed past this).
    pub stream_retention: Retention,
}

/// The write buffer: admission and flush thresholds.
#[derive(Debug, Clone)]
pub struct BufferSection {
    /// Flush once the oldest buffered batch is this old.
    pub flush_interval: Duration,
    /// Flush once the buffer holds this many bytes.
    pub flush_bytes: usize,
    /// Writes wait (then fail) while the buffer holds this many bytes.
    pub max_buffer_bytes: usize,
    /// How long a write waits for buffer space before RESOURCE_EXHAUSTED.
    pub write_timeout: Duration,
    /// Largest batch one write may carry, in rows.
    pub max_batch_rows: usize,
    /// Most series the catalog may hold; a batch bringing more is refused
    /// whole.
    pub max_series: usize,
    /// Most idempotent producers the `metrics` stream tracks; a new one
    /// past it is refused (known ones go on; idle ones are forgotten with
    /// `--retention`).
    pub max_producers: usize,
}

/// Compaction, retention and garbage collection.
#[derive(Debug, Clone)]
pub struct MaintenanceSection {
    /// Drop chunks whose newest point is older than this.
    pub retention: Option<Duration>,
    /// How often compaction, retention and garbage collection run (zero:
    /// never in the background; `Engine::maintain` still runs a pass).
    pub compaction_interval: Duration,
    /// A partition is merged whole once its hour ended this long ago.
    pub compaction_cold_after: Duration,
    /// How long files dropped from the manifest are kept for queries that
    /// started before, and how old an unreferenced file must be to count
    /// as an orphan.
    pub gc_grace: Duration,
}

/// Caches for queries.
#[derive(Debug, Clone)]
pub struct CacheSection {
    /// Bytes of decoded chunks kept for queries.
    pub chunk_cache_bytes: usize,
    /// Most series the last-value cache holds (0: no cache); past it the
    /// cache stops answering and queries scan.
    pub last_value_series: usize,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            fsync: true,
            stream_retention: Retention::NONE,
        }
    }
}

impl Default for BufferSection {
    fn default() -> Self {
        Self {
            flush_interval: Duration::from_secs(10),
            flush_bytes: 128 << 20,
            max_buffer_bytes: 1 << 30,
            write_timeout: Duration::from_secs(10),
            max_batch_rows: 4 << 20,
            max_series: 1_000_000,
            max_producers: 10_000,
        }
    }
}

impl Default for MaintenanceSection {
    fn default() -> Self {
        Self {
            retention: None,
            compaction_interval: Duration::from_secs(30),
            compaction_cold_after: Duration::from_secs(600),
            gc_grace: Duration::from_secs(600),
        }
    }
}

impl Default for CacheSection {
    fn default() -> Self {
        Self {
            chunk_cache_bytes: 1 << 30,
            last_value_series: super::last_values::DEFAULT_LAST_VALUE_SERIES,
        }
    }
}

impl EngineConfig {
    /// The production defaults, on the local `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            store: None,
            log: LogSection::default(),
            buffer: BufferSection::default(),
            maintenance: MaintenanceSection::default(),
            cache: CacheSection::default(),
            clock: Clock::system(),
            crash: CrashPoints::default(),
        }
    }

    /// What tests start from: no fsync, no background maintenance, no
    /// flush unless asked (an hour's interval), GC grace of an hour.
    pub fn for_tests(data_dir: impl Into<PathBuf>) -> Self {
        let mut c = Self::new(data_dir);
        c.log.fsync = false;
        c.buffer.flush_interval = Duration::from_secs(3600);
        c.maintenance.compaction_interval = Duration::ZERO;
        c.maintenance.gc_grace = Duration::from_secs(3600);
        c
    }
}
