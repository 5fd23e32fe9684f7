//! Background maintenance of storage: compaction, retention and garbage
//! collection, one pass every `--compaction-interval`.
//!
//! - **Compaction** rewrites the chunks of an hour partition as one Parquet
//!   chunk sorted by (series_id, time). A partition is merged whole once it
//!   is cold (its hour ended `cold_after` ago) and has more than one chunk
//!   or a chunk still in the flush format. While hot, once [`HOT_MERGE`]
//!   flushed chunks pile up, just those are merged, and once as many
//!   merged chunks pile up, the whole partition: a busy hour is rewritten
//!   a few times, not on every flush.
//! - **Deletes** are applied physically: a partition holding rows a
//!   delete removes is rewritten whole without them (cold or hot), and a
//!   delete that no chunk holds rows for any more leaves the manifest.
//!   Series left with no data leave the catalog, as after retention.
//! - **Retention** drops whole chunks whose newest point is older than
//!   `--retention`, then removes from the series catalog the series with no
//!   data left.
//! - **Garbage collection** deletes files the manifest stopped referencing
//!   once `gc_grace` has passed (queries that started on an older manifest
//!   may still read them), and files no manifest ever referenced (left by a
//!   crash between writing a chunk and committing it).
//!
//! Crash safety: new files (named with the writer's epoch, created, never
//! overwritten) are durable before the one manifest commit that swaps
//! them in; inputs become garbage in that same commit. A crash before the
//! commit leaves an orphan, after it leaves garbage; both are deleted
//! later, and no row is ever in two referenced chunks or in none. Every
//! change commits through the [`CommitPath`], whose closure checks the
//! inputs are all still referenced.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::UInt64Type;
use object_store::path::Path;
use serde::Serialize;

use super::buffer::{Logged, WriteBuffer};
use super::commit::CommitPath;
use super::config::MaintenanceSection;
use super::deletes::{remove_deleted, Deletes};
use super::error::EngineError;
use super::sort::sorted_points;
use crate::model::format_micros;
use crate::runtime::{Clock, CrashPoint, Tasks};
use crate::storage::{
    catalog_version_of_path, encode_compacted, ChunkMeta, ChunkReader, Garbage, Manifest,
    StorageError, Store, PARTITION_MICROS,
};
use crate::stream::{Log, Offset, Retention};

/// Flushed chunks a hot partition may hold before they are merged.
pub const HOT_MERGE: usize = 8;
/// Every this many passes, also look for orphans (it lists the bucket).
const ORPHAN_SWEEP_EVERY: u64 = 20;

/// What maintenance has done, for `streamdb status` and `/metrics`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MaintenanceStatus {
    /// Partitions waiting to be compacted, and their chunks.
    pub backlog_partitions: usize,
    pub backlog_chunks: usize,
    /// The partition being compacted now (its hour).
    pub compacting: Option<String>,
    pub compactions: u64,
    pub chunks_merged: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub expired_chunks: u64,
    pub series_removed: u64,
    pub files_deleted: u64,
    /// Files dropped from the manifest, waiting out the grace period.
    pub garbage_pending: usize,
    pub last_pass: Option<String>,
    pub last_error: Option<String>,
}

/// One partition's merge.
#[derive(Debug, Clone)]
pub struct Job {
    pub partition: i64,
    pub inputs: Vec<ChunkMeta>,
}

/// The merges a manifest calls for at `now` (Unix micros).
pub fn plan(m: &Manifest, now: i64, cold_after: Duration) -> Vec<Job> {
    let cold_after = cold_after.as_micros() as i64;
    m.partitions()
        .into_iter()
        .filter_map(|(partition, chunks)| {
            let cold = (partition + 1) * PARTITION_MICROS + cold_after <= now;
            let flushed: Vec<ChunkMeta> = chunks
                .iter()
                .filter(|c| !c.is_compacted())
                .map(|c| (*c).clone())
                .collect();
            let merged = chunks.len() - flushed.len();
            let inputs = if cold && (chunks.len() > 1 || !flushed.is_empty()) {
                chunks.into_iter().cloned().collect()
            } else if !cold && flushed.len() >= HOT_MERGE {
                flushed
            } else if !cold && merged >= HOT_MERGE {
                // A second tier: merges pile up too over a long hour.
                chunks.into_iter().cloned().collect()
            } else {
                return None;
            };
            Some(Job { partition, inputs })
        })
        .collect()
}

/// Merges that apply `deletes` physically: every partition with a chunk
/// holding rows one of them removes, rewritten whole, unless `planned`
/// merges it already.
pub fn delete_jobs(
    m: &Manifest,
    deletes: &Deletes,
    catalog: &crate::storage::SeriesCatalog,
    planned: &[Job],
) -> Vec<Job> {
    if deletes.is_empty() {
        return Vec::new();
    }
    m.partitions()
        .into_iter()
        .filter(|(partition, _)| !planned.iter().any(|j| j.partition == *partition))
        .filter(|(_, chunks)| {
            chunks
                .iter()
                .any(|c| deletes.iter().any(|d| d.affects_chunk(c, catalog)))
        })
        .map(|(partition, chunks)| Job {
            partition,
            inputs: chunks.into_iter().cloned().collect(),
        })
        .collect()
}

/// What [`Maintenance`] works with.
pub(crate) struct MaintenanceArgs {
    pub buffer: Arc<WriteBuffer>,
    pub commit: Arc<CommitPath>,
    pub store: Store,
    pub reader: Arc<ChunkReader>,
    pub log: Arc<Log<Logged>>,
    pub config: MaintenanceSection,
    pub stream_retention: Retention,
    pub clock: Clock,
}

/// Compaction, retention and garbage collection, as one part.
pub(crate) struct Maintenance {
    args: MaintenanceArgs,
    status: parking_lot::Mutex<MaintenanceStatus>,
}

impl Maintenance {
    pub fn new(args: MaintenanceArgs) -> Self {
        Self {
            args,
            status: Default::default(),
        }
    }

    /// What maintenance has done so far, with the backlog as of `now`.
    pub fn status(&self, manifest: &Manifest) -> MaintenanceStatus {
        let mut status = self.status.lock().clone();
        let backlog = plan(manifest, self.now(), self.args.config.compaction_cold_after);
        status.backlog_partitions = backlog.len();
        status.backlog_chunks = backlog.iter().map(|j| j.inputs.len()).sum();
        status.garbage_pending = manifest.garbage.len();
        status
    }

    /// The background loop: one pass every `--compaction-interval` until
    /// `tasks` is cancelled (a pass in progress finishes its current job).
    pub async fn run(self: Arc<Self>, tasks: Tasks) {
        let mut passes = 0u64;
        loop {
            tokio::select! {
                _ = tasks.cancelled() => return,
                _ = tokio::time::sleep(self.args.config.compaction_interval) => {}
            }
            let sweep = passes.is_multiple_of(ORPHAN_SWEEP_EVERY);
            passes += 1;
            let result = self.pass(sweep, &tasks).await;
            if let Err(lost) = self.args.commit.check_writer() {
                tracing::error!(error = %lost, "lost the writer lease: compaction, retention and garbage collection stop");
                self.status.lock().last_error = Some(lost.to_string());
                return;
            }
            let mut st = self.status.lock();
            st.last_pass = Some(format_micros(self.now()));
            match result {
                Ok(()) => st.last_error = None,
                Err(err) => {
                    tracing::warn!(error = %err, "storage maintenance failed; retrying next pass");
                    st.last_error = Some(err.to_string());
                }
            }
        }
    }

    /// One maintenance pass: retention, compaction, garbage collection.
    /// With `thorough` (the first pass, then every few), also look for
    /// orphaned files and for series left without data by an earlier run.
    /// Stops between jobs once `tasks` is cancelled.
    pub async fn pass(&self, thorough: bool, tasks: &Tasks) -> Result<(), EngineError> {
        let result = self.pass_inner(thorough, tasks).await;
        self.status.lock().compacting = None;
        result
    }

    async fn pass_inner(&self, thorough: bool, tasks: &Tasks) -> Result<(), EngineError> {
        let a = &self.args;
        // The stream's history ages out even when nothing is flushed.
        let covered = Offset(a.buffer.manifest().stream_offset);
        a.log.remove_before(covered, a.stream_retention)?;
        // A writer that lost its lease writes nothing more to the store.
        a.commit.check_writer()?;
        if let Some(keep) = a.config.retention {
            self.expire(keep, thorough).await?;
        }
        let manifest = a.buffer.manifest();
        let mut jobs = plan(&manifest, self.now(), a.config.compaction_cold_after);
        let deletes = a.buffer.snapshot().deletes;
        jobs.extend(delete_jobs(&manifest, &deletes, a.buffer.catalog(), &jobs));
        for job in jobs {
            if tasks.is_cancelled() {
                return Ok(());
            }
            self.compact(job).await?;
        }
        self.retire_deletes().await?;
        // Deletes (applied by these jobs or by ordinary merges) may have
        // left series without data.
        if !deletes.is_empty() && !dead_series(&a.buffer).is_empty() {
            self.remove_dead_series().await?;
        }
        self.collect_garbage(thorough).await
    }

    fn now(&self) -> i64 {
        self.args.clock.now_micros()
    }

    /// Merges one partition's chunks into one compacted chunk.
    async fn compact(&self, job: Job) -> Result<(), EngineError> {
        let a = &self.args;
        self.status.lock().compacting = Some(format_micros(job.partition * PARTITION_MICROS));
        // Oldest first, so the merge keeps the later of two values.
        let mut by_recency: Vec<&ChunkMeta> = job.inputs.iter().collect();
        by_recency.sort_by_key(|c| c.recency());
        let last_offset = job.inputs.iter().filter_map(|c| c.last_offset).max();
        // Deletes are applied as the inputs are read: the output holds
        // none of what they removed, and says so. Only those the manifest
        // lists: an offset past its `stream_offset` may be handed out again
        // by a writer that takes over from it (the log starts there), and
        // `deletes_applied` must not claim that writer's deletes.
        let snap = a.buffer.snapshot();
        let covered = snap.manifest.stream_offset;
        let deletes = Deletes(Arc::new(
            snap.deletes
                .iter()
                .filter(|d| d.offset() < covered)
                .cloned()
                .collect(),
        ));
        let mut batches: Vec<RecordBatch> = Vec::new();
        for c in by_recency {
            let removing = deletes.for_chunk(c);
            for b in a.reader.read(c, None).await?.iter() {
                batches.push(remove_deleted(b, &removing, a.buffer.catalog()));
            }
        }
        let id = a.commit.allocate_chunk_ids(1);
        let epoch = a.commit.epoch();
        let deletes_applied = deletes.newest();
        let encoded = tokio::task::spawn_blocking(move || -> Result<_, StorageError> {
            let merged = sorted_points(&batches)?;
            if merged.num_rows() == 0 {
                return Ok(None); // deleted whole
            }
            let (bytes, mut meta) = encode_compacted(id, epoch, &merged)?;
            meta.last_offset = last_offset;
            meta.deletes_applied = deletes_applied;
            Ok(Some((bytes, meta, merged)))
        })
        .await
        .map_err(EngineError::task("compaction merge"))??;
        a.commit.check_writer()?;
        let output = match encoded {
            Some((bytes, meta, merged)) => {
                // Named with the epoch and created, never overwritten:
                // durable once written.
                a.store
                    .put_new(&Path::from(meta.path.as_str()), bytes)
                    .await?;
                Some((meta, merged))
            }
            None => None,
        };
        a.commit.reached(CrashPoint::MidCompaction);

        let inputs: HashSet<u64> = job.inputs.iter().map(|c| c.id).collect();
        let meta = output.as_ref().map(|(m, _)| m.clone());
        let (rows, after) = meta.as_ref().map_or((0, 0), |m| (m.rows, m.bytes));
        let since = self.now();
        let committed = a
            .commit
            .commit(|current| {
                let present = current.chunks.iter().filter(|c| inputs.contains(&c.id));
                if present.count() != inputs.len() {
                    // Retention dropped an input meanwhile; the output is
                    // an orphan.
                    return None;
                }
                let mut next = current.clone();
                next.chunks.retain(|c| !inputs.contains(&c.id));
                next.chunks.extend(meta.clone());
                next.garbage.extend(job.inputs.iter().map(|c| Garbage {
                    path: c.path.clone(),
                    since,
                }));
                Some(next)
            })
            .await?;
        if committed.is_none() {
            tracing::info!(
                partition = job.partition,
                "compaction inputs changed; skipped"
            );
            return Ok(());
        }
        for c in &job.inputs {
            a.reader.forget(&c.path);
        }
        if let Some((meta, merged)) = output {
            a.reader.insert(&meta.path, Arc::new(vec![merged]));
        }
        let before: u64 = job.inputs.iter().map(|c| c.bytes).sum();
        tracing::debug!(
            partition = job.partition,
            chunks = inputs.len(),
            rows,
            before,
            after,
            "compacted"
        );
        let mut st = self.status.lock();
        st.compactions += 1;
        st.chunks_merged += inputs.len() as u64;
        st.bytes_before += before;
        st.bytes_after += after;
        Ok(())
    }

    /// Drops from the manifest the deletes no chunk holds rows of any more
    /// (compaction applied them, or nothing matched).
    async fn retire_deletes(&self) -> Result<(), EngineError> {
        let buffer = &self.args.buffer;
        let catalog = buffer.catalog();
        let deletes = buffer.snapshot().deletes;
        let mut retired = 0;
        self.args
            .commit
            .commit(|current| {
                let live = |offset: u64| {
                    deletes
                        .iter()
                        .find(|d| d.offset() == offset)
                        .is_none_or(|d| current.chunks.iter().any(|c| d.affects_chunk(c, catalog)))
                };
                let mut next = current.clone();
                next.deletes.retain(|d| live(d.offset));
                retired = current.deletes.len() - next.deletes.len();
                (retired > 0).then_some(next)
            })
            .await?;
        if retired > 0 {
            tracing::info!(
                deletes = retired,
                "deletes applied to every chunk they touched"
            );
        }
        Ok(())
    }

    /// Drops chunks older than `keep`, then series with no data left (which
    /// only expiry makes: checked when chunks expired, or with `thorough`).
    async fn expire(&self, keep: Duration, thorough: bool) -> Result<(), EngineError> {
        let a = &self.args;
        let cutoff = self.now() - keep.as_micros() as i64;
        let since = self.now();
        let mut expired = Vec::new();
        let last_values = a.buffer.last_values();
        a.commit
            .commit(|current| {
                let (old, kept): (Vec<_>, Vec<_>) = current
                    .chunks
                    .iter()
                    .cloned()
                    .partition(|c| c.max_time < cutoff);
                if old.is_empty() {
                    return None;
                }
                // Points go: the last-value cache answers nothing until
                // rebuilt (again after the commit, see `invalidate`).
                last_values.invalidate();
                let mut next = current.clone();
                next.chunks = kept;
                next.garbage.extend(old.iter().map(|c| Garbage {
                    path: c.path.clone(),
                    since,
                }));
                expired = old;
                Some(next)
            })
            .await?;
        if !expired.is_empty() {
            last_values.invalidate();
            for c in &expired {
                a.reader.forget(&c.path);
            }
            self.status.lock().expired_chunks += expired.len() as u64;
            tracing::info!(chunks = expired.len(), cutoff = %format_micros(cutoff), "retention dropped expired chunks");
        }
        if (!expired.is_empty() || thorough) && !dead_series(&a.buffer).is_empty() {
            self.remove_dead_series().await?;
        }
        Ok(())
    }

    /// Removes series with no data left from the catalog, and commits the
    /// smaller catalog.
    async fn remove_dead_series(&self) -> Result<(), EngineError> {
        let buffer = &self.args.buffer;
        // No batch is between normalising and applied while series go (see
        // `WriteBuffer::exclude_writers`).
        let _gate = buffer.exclude_writers().await;
        let mut removed = 0;
        self.args
            .commit
            .commit(|current| {
                let dead: HashSet<u64> = dead_series(buffer).into_iter().collect();
                // `+=`: the closure runs again if an earlier commit of
                // ours is adopted meanwhile, and the catalog still differs.
                removed += buffer.catalog().retain(|id| !dead.contains(&id));
                (removed > 0).then(|| current.clone())
            })
            .await?;
        if removed > 0 {
            self.status.lock().series_removed += removed as u64;
            tracing::info!(
                series = removed,
                "removed series with no data left (retention or deletes)"
            );
        }
        Ok(())
    }

    /// Deletes garbage past its grace period, and (with `sweep_orphans`)
    /// files under `chunks/` and `catalog/` that no manifest references.
    async fn collect_garbage(&self, sweep_orphans: bool) -> Result<(), EngineError> {
        let a = &self.args;
        let grace = a.config.gc_grace.as_micros() as i64;
        let now = self.now();
        let due: Vec<String> = a
            .buffer
            .manifest()
            .garbage
            .iter()
            .filter(|g| g.since + grace <= now)
            .map(|g| g.path.clone())
            .collect();
        for path in &due {
            a.store.delete(&Path::from(path.as_str())).await?;
            a.commit.reached(CrashPoint::MidGarbageCollection);
        }
        if !due.is_empty() {
            a.commit
                .commit(|current| {
                    let mut next = current.clone();
                    next.garbage.retain(|g| !due.contains(&g.path));
                    Some(next)
                })
                .await?;
            self.status.lock().files_deleted += due.len() as u64;
        }
        if sweep_orphans {
            let deleted = self.sweep(&a.buffer.manifest(), grace).await?;
            self.status.lock().files_deleted += deleted;
        }
        Ok(())
    }

    /// Deletes files left by crashed flushes and compactions. A chunk is an
    /// orphan when its id is below the manifest's next id (ids are never
    /// handed out twice, so nothing will commit it any more) and no
    /// manifest entry or garbage entry names it; a catalog snapshot when it
    /// is not the current one and its version is at most the manifest's.
    async fn sweep(&self, m: &Manifest, grace: i64) -> Result<u64, EngineError> {
        let store = &self.args.store;
        let known: HashSet<&str> = m
            .chunks
            .iter()
            .map(|c| c.path.as_str())
            .chain(m.garbage.iter().map(|g| g.path.as_str()))
            .chain(m.catalog.as_deref())
            .collect();
        let now = self.now();
        let old =
            |meta: &object_store::ObjectMeta| meta.last_modified.timestamp_micros() + grace <= now;
        let mut deleted = 0;
        for meta in store.list_meta(&Path::from("chunks")).await? {
            let path = meta.location.to_string();
            let orphan = ChunkMeta::id_of_path(&path).is_some_and(|id| id < m.next_chunk_id)
                && !known.contains(path.as_str())
                && old(&meta);
            if orphan {
                store.delete(&meta.location).await?;
                deleted += 1;
            }
        }
        for meta in store.list_meta(&Path::from("catalog")).await? {
            let path = meta.location.to_string();
            let version = catalog_version_of_path(&path);
            if version.is_some_and(|v| v <= m.version)
                && !known.contains(path.as_str())
                && old(&meta)
            {
                store.delete(&meta.location).await?;
                deleted += 1;
            }
        }
        if deleted > 0 {
            tracing::info!(files = deleted, "deleted orphaned files");
        }
        Ok(deleted)
    }
}

/// Catalogued series with no row in any chunk or in the buffer.
fn dead_series(buffer: &WriteBuffer) -> Vec<u64> {
    let snap = buffer.snapshot();
    if snap
        .manifest
        .chunks
        .iter()
        .any(|c| c.series.is_empty() && c.rows > 0)
    {
        return Vec::new(); // series lists not loaded: cannot tell
    }
    let mut live: HashSet<u64> = snap
        .manifest
        .chunks
        .iter()
        .flat_map(|c| c.series.iter().copied())
        .collect();
    let mut candidates: Vec<u64> = buffer
        .catalog()
        .entries()
        .into_iter()
        .map(|(id, _)| id.0)
        .filter(|id| !live.contains(id))
        .collect();
    if candidates.is_empty() {
        return candidates;
    }
    for b in &snap.buffered {
        live.extend(b.points.column(0).as_primitive::<UInt64Type>().values());
    }
    candidates.retain(|id| !live.contains(id));
    candidates
}

#[cfg(test)]
mod tests;
