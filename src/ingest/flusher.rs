//! [`Flusher`]: turns the write buffer into chunk files and commits them.
//!
//! One flush: snapshot the buffer (and the offset it covers); sort the
//! points by (hour, series_id, time) and write one chunk per hour
//! partition, each named with the writer's epoch and created, never
//! overwritten (durable once written); commit a manifest version covering
//! the offset (through the [`CommitPath`], whose catalog snapshot is taken
//! after the buffer's, so it defines every flushed series); finally let the
//! log delete the segments the manifest now covers. A failure at any step
//! before the commit leaves the buffer and log as they were (orphaned files
//! are garbage); the background loop retries with backoff, and stops for
//! good once the writer lease is lost.
//!
//! Flush policy lives in [`Flusher::due`]: add a new threshold there.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use object_store::path::Path;

use super::buffer::{Logged, Snapshot, WriteBuffer};
use super::commit::CommitPath;
use super::config::BufferSection;
use super::error::EngineError;
use super::sort::partition_by_hour;
use crate::runtime::{Clock, CrashPoint, Tasks};
use crate::storage::{encode_chunk, ChunkMeta, ChunkReader, Manifest, StorageError, Store};
use crate::stream::{Log, Offset, Retention};

const TICK: Duration = Duration::from_millis(50);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What a [`Flusher`] works with.
pub(crate) struct FlusherArgs {
    pub buffer: Arc<WriteBuffer>,
    pub commit: Arc<CommitPath>,
    pub store: Store,
    pub reader: Arc<ChunkReader>,
    pub log: Arc<Log<Logged>>,
    pub limits: BufferSection,
    pub stream_retention: Retention,
    /// `--retention`: producers idle for longer are forgotten at a flush.
    pub retention: Option<Duration>,
    pub clock: Clock,
}

pub(crate) struct Flusher {
    args: FlusherArgs,
    /// One flush at a time (the loop's, and `Engine::flush` from tests and
    /// shutdown); commits of other parts may still land in between.
    one_at_a_time: tokio::sync::Mutex<()>,
}

/// A flush's encoded chunks, each with a compact copy for the cache.
type Encoded = Vec<((bytes::Bytes, ChunkMeta), Option<RecordBatch>)>;

impl Flusher {
    pub fn new(args: FlusherArgs) -> Self {
        Self {
            args,
            one_at_a_time: tokio::sync::Mutex::new(()),
        }
    }

    /// The background loop: flushes when the buffer is big or old enough,
    /// until `tasks` is cancelled.
    pub async fn run(self: Arc<Self>, tasks: Tasks) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            tokio::select! {
                _ = tasks.cancelled() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
            if !self.due() {
                continue;
            }
            match self.flush_once().await {
                Ok(_) => backoff = FIRST_BACKOFF,
                Err(err) if self.args.commit.check_writer().is_err() => {
                    tracing::error!(error = %err, "lost the writer lease: flushing stops; writes stay in the local stream log");
                    return;
                }
                Err(err) => {
                    tracing::warn!(error = %err, retry_in = ?backoff, "flush failed; data stays in the stream log");
                    tokio::select! {
                        _ = tasks.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// The flush policy: big enough (`--flush-bytes`, or half the memory
    /// limit so waiting writers are freed) or old enough
    /// (`--flush-interval`), or holding a delete the manifest lacks.
    fn due(&self) -> bool {
        let limits = &self.args.limits;
        let (bytes, oldest, deletes) = self
            .args
            .buffer
            .with_state(|st| (st.bytes, st.oldest, st.pending_deletes()));
        bytes >= limits.flush_bytes.min(limits.max_buffer_bytes / 2).max(1)
            || oldest.is_some_and(|t| self.args.clock.since(t) >= limits.flush_interval)
            // A delete reaches the manifest (where compaction can retire
            // it) at once, with whatever is buffered.
            || deletes > 0
    }

    /// Flushes everything buffered now. Returns the number of rows flushed.
    pub async fn flush_once(&self) -> Result<u64, EngineError> {
        let started = self.args.clock.instant();
        let result = self.write_buffer().await;
        let m = crate::telemetry::metrics();
        match &result {
            Ok(0) => {}
            Ok(_) => {
                m.flushes.inc();
                m.flush_seconds
                    .observe(self.args.clock.since(started).as_secs_f64());
            }
            Err(_) => m.flush_failures.inc(),
        }
        result
    }

    async fn write_buffer(&self) -> Result<u64, EngineError> {
        let _one_at_a_time = self.one_at_a_time.lock().await;
        loop {
            if let Some(rows) = self.write_snapshot(self.args.buffer.snapshot()).await? {
                return Ok(rows);
            }
            // An earlier attempt of this flush was committed after all
            // (its answer was an error) and adopted meanwhile: the buffer
            // no longer holds what it covered, so flush what is left.
            tracing::info!("an earlier flush turned out committed; flushing the rest");
        }
    }

    /// Writes `snap`'s batches as chunks and commits them. `None` if the
    /// manifest in effect already covers some of them (see above).
    async fn write_snapshot(&self, snap: Snapshot) -> Result<Option<u64>, EngineError> {
        let a = &self.args;
        // Deletes logged since the manifest are carried into it even when
        // no point came after them.
        let pending_delete = snap
            .deletes
            .newest()
            .is_some_and(|d| d >= snap.manifest.stream_offset);
        if snap.buffered.is_empty() && !pending_delete {
            return Ok(Some(0));
        }
        // A writer that lost its lease writes nothing more to the store.
        a.commit.check_writer()?;
        let batches = self.without_deleted(&snap);
        let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        let encoded = if rows == 0 {
            Vec::new()
        } else {
            self.encode(batches).await?
        };
        let mut chunks = Vec::with_capacity(encoded.len());
        let mut decoded = Vec::with_capacity(encoded.len());
        let last_offset = snap.buffered.last().map(|b| b.offset.0);
        for ((bytes, mut meta), part) in encoded {
            meta.last_offset = last_offset;
            // Every delete of the snapshot was applied just above.
            meta.deletes_applied = snap.deletes.newest();
            a.commit.check_writer()?;
            // Durable once written; a manifest may reference it then.
            a.store
                .put_new(&Path::from(meta.path.as_str()), bytes)
                .await?;
            a.commit.reached(CrashPoint::AfterChunkPut);
            decoded.push((meta.path.clone(), part));
            chunks.push(meta);
        }
        let idle_before = a.retention.map(|r| a.clock.now_secs() - r.as_secs() as i64);
        let upto = snap.applied;
        let covered = snap.manifest.stream_offset;
        let committed = a
            .commit
            .commit(|current| {
                // Only this flusher moves the covered offset, one flush at
                // a time: if it moved, an earlier attempt was adopted.
                (current.stream_offset == covered).then(|| {
                    let now = a.clock.now_secs();
                    next_manifest(current, &snap, chunks.clone(), idle_before, now)
                })
            })
            .await?;
        let Some(committed) = committed else {
            return Ok(None);
        };
        if let Some(before) = idle_before {
            a.buffer
                .update_state(|st| st.writers.producers.forget_idle(before));
        }
        for (path, part) in decoded {
            if let Some(part) = part {
                a.reader.insert(&path, Arc::new(vec![part]));
            }
        }
        self.trim_log(upto).await?;
        tracing::debug!(rows, upto = %upto, version = committed.version, "flushed");
        Ok(Some(rows))
    }

    /// The snapshot's batches without what its deletes remove.
    fn without_deleted(&self, snap: &Snapshot) -> Vec<RecordBatch> {
        let catalog = self.args.buffer.catalog();
        snap.buffered
            .iter()
            .map(|b| {
                let deletes = snap.deletes.for_batch(b.offset.0, b.min_time, b.max_time);
                super::deletes::remove_deleted(&b.points, &deletes, catalog)
            })
            .filter(|b| b.num_rows() > 0)
            .collect()
    }

    /// Sorts and encodes the buffer's points, one chunk per hour.
    async fn encode(&self, batches: Vec<RecordBatch>) -> Result<Encoded, EngineError> {
        let parts = tokio::task::spawn_blocking(move || partition_by_hour(&batches))
            .await
            .map_err(EngineError::task("flush sort"))??;
        // Ids are never handed out twice, even if this flush fails.
        let first_id = self.args.commit.allocate_chunk_ids(parts.len() as u64);
        let epoch = self.args.commit.epoch();
        let cache = self.args.reader.enabled();
        let encoded = tokio::task::spawn_blocking(move || -> Result<_, StorageError> {
            parts
                .into_iter()
                .enumerate()
                .map(|(i, part)| {
                    let encoded = encode_chunk(first_id + i as u64, epoch, &part)?;
                    // Cached as a compact copy: the part is a slice of the
                    // whole flush, and a cached slice would keep (and be
                    // charged for) all of it.
                    let copy = cache
                        .then(|| {
                            let all = UInt32Array::from_iter_values(0..part.num_rows() as u32);
                            take_record_batch(&part, &all)
                        })
                        .transpose()?;
                    Ok((encoded, copy))
                })
                .collect::<Result<Vec<_>, StorageError>>()
        })
        .await
        .map_err(EngineError::task("flush encode"))??;
        Ok(encoded)
    }

    /// Lets the log delete what the manifest now covers (subject to
    /// `--stream-retention`).
    async fn trim_log(&self, upto: Offset) -> Result<(), EngineError> {
        self.args.log.seal_covered(upto).await?;
        self.args
            .log
            .remove_before(upto, self.args.stream_retention)?;
        Ok(())
    }
}

/// The manifest after flushing `snap`: `current` plus the new chunks,
/// covering the snapshot's offset, with its writers' state.
fn next_manifest(
    current: &Manifest,
    snap: &Snapshot,
    chunks: Vec<ChunkMeta>,
    idle_before: Option<i64>,
    now_secs: i64,
) -> Manifest {
    let mut next = current.clone();
    next.chunks.extend(chunks);
    // The deletes logged between the manifest and the snapshot's end.
    let listed = next.deletes.last().map_or(0, |d| d.offset + 1);
    next.deletes.extend(
        snap.deletes
            .iter()
            .filter(|d| d.offset() >= listed.max(current.stream_offset))
            .map(|d| d.logged.clone()),
    );
    next.stream_offset = next.stream_offset.max(snap.applied.0);
    // Producer state is kept as long as the data it vouches for: with
    // `--retention`, a producer idle for longer has nothing left to be a
    // duplicate of (the protocol's §5.2.1 clean-up rule).
    if let Some(before) = idle_before {
        next.writers.producers.forget_idle(before);
    }
    for b in &snap.buffered {
        let o = &b.origin;
        if o.source.is_some() {
            next.source_checkpoint = o.source.clone();
        }
        next.writers
            .record(o.producer.as_ref(), o.stream_seq.as_deref(), now_secs);
    }
    next
}
