//! Opening a data directory: its lock, the store and writer lease (or the
//! local writer epoch), the newest manifest that decodes and its catalog,
//! the log (retired if another node wrote the prefix since), and the
//! replay of what the manifest does not cover.

use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;

use crate::ingest::buffer::Logged;
use crate::ingest::buffer::WriteBuffer;
use crate::ingest::commit::committed_marker;
use crate::ingest::config::EngineConfig;
use crate::ingest::error::EngineError;
use crate::ingest::record;
use crate::runtime::fs::create_dir_all_synced;
use crate::storage::{
    local_epoch, ChunkMeta, DamagedVersion, Lease, Loaded, Manifest, ManifestStore, SeriesCatalog,
    StorageError, Store, WriterEpoch,
};
use crate::stream::{DurableSink, Log, LogConfig, LogError, Offset};

/// What recovery hands the engine.
pub(super) struct Opened {
    pub dir_lock: std::fs::File,
    pub store: Store,
    pub lease: Option<Arc<Lease>>,
    /// The epoch this writer's objects carry: the lease's, or the data
    /// directory's counter on a store no one else reaches.
    pub epoch: WriterEpoch,
    pub buffer: Arc<WriteBuffer>,
    pub log: Arc<Log<Logged>>,
    /// The catalog generation the manifest's snapshot holds (before replay
    /// added the series of unflushed records).
    pub catalog_persisted: u64,
    /// Newer manifest versions that did not decode (newest first).
    pub skipped: Vec<DamagedVersion>,
}

pub(super) async fn open(config: &EngineConfig) -> Result<Opened, EngineError> {
    let dir_lock = lock_data_dir(&config.data_dir)?;
    let store = match &config.store {
        Some(s) => s.clone(),
        None => Store::local(&config.data_dir)?,
    };
    // Before reading anything: the lease decides whether we may write.
    let lease = acquire_lease(config, &store).await?;
    let (loaded, catalog) = load_manifest(&store).await?;
    if lease.is_some() && loaded.manifest.version == 0 && !loaded.skipped.is_empty() {
        // Another node's log may be what version 1 covered: starting empty
        // here would orphan its chunks.
        let d = &loaded.skipped[0];
        return Err(StorageError::Corrupt {
            path: d.path.clone(),
            why: format!("{} (the only manifest version; on a shared store this node cannot tell whether its log holds what it covered: restore manifest/ from a backup)", d.error),
        }
        .into());
    }
    let manifest = Arc::new(loaded.manifest);
    let epoch = match &lease {
        Some(lease) => lease.writer_epoch(),
        None => {
            let seen = manifest.commit.map(|c| c.epoch).unwrap_or_default();
            local_epoch(&config.data_dir, seen)?
        }
    };
    let catalog_persisted = catalog.generation();
    let mut buffer = WriteBuffer::new(manifest.clone(), catalog, config.clock.clone());
    buffer.set_last_value_limit(config.cache.last_value_series);
    let buffer = Arc::new(buffer);
    let log_dir = config.data_dir.join("stream").join("metrics");
    if let (Some(lease), Some(writer)) = (&lease, &manifest.writer) {
        if *writer != lease.node() {
            retire_stale_log(&log_dir, &manifest, writer)?;
        }
    }
    let mut log_config = LogConfig::new(&log_dir);
    log_config.segment_bytes = config.log.segment_bytes;
    log_config.fsync = config.log.fsync;
    log_config.clock = config.clock.clone();
    log_config.crash = config.crash.clone();
    log_config.initial_offset = Offset(manifest.stream_offset);
    let log = Arc::new(Log::open(log_config, buffer.clone())?);
    replay(&log, &buffer, Offset(manifest.stream_offset))
        .map_err(|e| fallback_incomplete(e, &manifest, &loaded.skipped, &log_dir))?;
    Ok(Opened {
        dir_lock,
        store,
        lease,
        epoch,
        buffer,
        log,
        catalog_persisted,
        skipped: loaded.skipped,
    })
}

/// The writer lease, on a store other servers can reach.
async fn acquire_lease(
    config: &EngineConfig,
    store: &Store,
) -> Result<Option<Arc<Lease>>, EngineError> {
    if !store.is_shared() {
        return Ok(None);
    }
    let node = crate::storage::node_id(&config.data_dir)?;
    let lease = Lease::acquire(store, &node, config.clock.clone()).await?;
    tracing::info!(
        store = store.location(),
        node,
        epoch = lease.epoch(),
        "holding the writer lease"
    );
    Ok(Some(lease))
}

/// The newest manifest that decodes (with each chunk's series list) and
/// its catalog. Newer versions that do not decode are skipped, and said
/// so: a power loss can leave the newest one empty.
async fn load_manifest(store: &Store) -> Result<(Loaded, SeriesCatalog), EngineError> {
    let mut loaded = ManifestStore::new(store.clone()).load_latest().await?;
    for d in &loaded.skipped {
        tracing::warn!(
            damaged = d.version,
            path = %d.path,
            error = %d.error,
            loaded = loaded.manifest.version,
            "the newest manifest version does not decode; starting from the newest that does and replaying the stream log from there"
        );
    }
    let manifest = &mut loaded.manifest;
    let catalog = match &manifest.catalog {
        Some(path) => {
            let bytes = store.get(&path.as_str().into()).await?;
            SeriesCatalog::decode_snapshot(path, &bytes)?
        }
        None => SeriesCatalog::default(),
    };
    load_chunk_series(store, &mut manifest.chunks).await?;
    Ok((loaded, catalog))
}

/// After a fallback to an older manifest, a log that no longer reaches
/// back to its offset means the skipped version held writes found nowhere
/// else: say that, rather than only that the log is short.
fn fallback_incomplete(
    err: EngineError,
    manifest: &Manifest,
    skipped: &[DamagedVersion],
    log_dir: &Path,
) -> EngineError {
    match (err, skipped.first()) {
        (EngineError::Log(LogError::Truncated { requested, first }), Some(d)) => {
            EngineError::FallbackIncomplete {
                damaged: d.version,
                path: d.path.clone(),
                why: d.error.clone(),
                loaded: manifest.version,
                covered: requested,
                first,
                log: log_dir.to_path_buf(),
            }
        }
        (err, _) => err,
    }
}

/// Takes the data directory's lock file, so a second server started on the
/// same directory refuses instead of interleaving writes to one log (and
/// `streamdb repair` refuses to run under a server).
pub fn lock_data_dir(dir: &Path) -> Result<std::fs::File, EngineError> {
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| EngineError::DataDir { what, path, source }
    };
    create_dir_all_synced(dir).map_err(io("creating", dir))?;
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io("opening", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(EngineError::DataDirInUse {
            dir: dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(io("locking", &path)(e)),
    }
}

/// Discards what the manifest says nothing about.
struct Discard;

impl DurableSink<Logged> for Discard {
    fn on_durable(&self, _: Offset, _: Logged) {}
}

/// Another node (`writer`) committed the manifest last, so its
/// `stream_offset` counts that node's log, not ours. Our log may go if
/// every record in it was flushed by us before we let go of the prefix
/// (a clean stop, or a failover after one); if it holds writes we never
/// flushed, starting would lose or misnumber them, so refuse with what to
/// do.
fn retire_stale_log(dir: &Path, manifest: &Manifest, writer: &str) -> Result<(), EngineError> {
    if !dir.exists() {
        return Ok(());
    }
    let (first, next) = {
        let mut cfg = LogConfig::new(dir);
        cfg.initial_offset = Offset(manifest.stream_offset);
        let log: Log<Logged> = Log::open(cfg, Arc::new(Discard))?;
        (log.first_offset(), log.next_offset())
    };
    let data_dir = dir.parent().and_then(|p| p.parent()).unwrap_or(dir);
    let committed = std::fs::read_to_string(committed_marker(data_dir))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let flushed = first == next || committed.is_some_and(|c| next.0 <= c);
    if !flushed {
        return Err(EngineError::StaleLog {
            dir: dir.to_path_buf(),
            from: Offset(committed.unwrap_or(first.0).max(first.0)),
            to: next,
            writer: writer.to_string(),
        });
    }
    if first != next || next.0 != manifest.stream_offset {
        tracing::info!(dir = %dir.display(), writer, "another node wrote the object store since this node's last flush; starting a fresh stream log at its offset");
        std::fs::remove_dir_all(dir).map_err(|source| EngineError::DataDir {
            what: "removing",
            path: dir.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// Re-applies log records the manifest does not cover.
fn replay(log: &Log<Logged>, buffer: &WriteBuffer, from: Offset) -> Result<(), EngineError> {
    // Records below `from` are in chunks; the log must still hold the rest.
    if from < log.first_offset() {
        return Err(EngineError::Log(LogError::Truncated {
            requested: from,
            first: log.first_offset(),
        }));
    }
    if from > log.next_offset() {
        return Err(EngineError::Log(LogError::BeyondEnd {
            requested: from,
            next: log.next_offset(),
        }));
    }
    let mut next = from;
    let mut records = 0usize;
    loop {
        let batch = log.read(next, 64 << 20)?;
        let Some((last, _)) = batch.last() else { break };
        next = last.next();
        for (offset, payload) in batch {
            let record = record::decode_record(&payload).map_err(|e| EngineError::BadRecord {
                offset,
                why: e.to_string(),
            })?;
            buffer.apply(offset, record.into());
            records += 1;
        }
    }
    if records > 0 {
        tracing::info!(records, from = %from, "replayed stream log");
    }
    Ok(())
}

/// Reads each chunk's series list from its footer (a ranged read of the tail).
async fn load_chunk_series(store: &Store, chunks: &mut [ChunkMeta]) -> Result<(), StorageError> {
    let loaded: Vec<Result<Vec<u64>, StorageError>> = futures::stream::iter(chunks.iter())
        .map(|c| async move { crate::storage::read_footer_series(store, c).await })
        .buffered(16)
        .collect()
        .await;
    for (c, series) in chunks.iter_mut().zip(loaded) {
        c.series = Arc::new(series?);
    }
    Ok(())
}
