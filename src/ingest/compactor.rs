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
//! - **Retention** drops whole chunks whose newest point is older than
//!   `--retention`, then removes from the series catalog the series with no
//!   data left.
//! - **Garbage collection** deletes files the manifest stopped referencing
//!   once `gc_grace` has passed (queries that started on an older manifest
//!   may still read them), and files no manifest ever referenced (left by a
//!   crash between writing a chunk and committing it).
//!
//! Crash safety: new files are written and made durable before the one
//! manifest commit that swaps them in; inputs become garbage in that same
//! commit. A crash before the commit leaves an orphan, after it leaves
//! garbage; both are deleted later, and no row is ever in two referenced
//! chunks or in none. The commit itself runs under the flush lock, after
//! checking its inputs are all still referenced.

use std::collections::HashSet;
use std::sync::Weak;
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::UInt64Type;
use object_store::path::Path;
use serde::Serialize;
use tokio::sync::watch;

use super::engine::{Engine, EngineError};
use super::flusher::sorted_points;
use crate::model::format_micros;
use crate::storage::{
    encode_compacted, ChunkMeta, Garbage, Manifest, StorageError, PARTITION_MICROS,
};

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

/// The background loop.
pub(super) async fn run(engine: Weak<Engine>, mut shutdown: watch::Receiver<bool>) {
    let mut passes = 0u64;
    loop {
        let Some(interval) = engine.upgrade().map(|e| e.config.compaction_interval) else {
            return;
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let Some(e) = engine.upgrade() else { return };
        let sweep = passes.is_multiple_of(ORPHAN_SWEEP_EVERY);
        passes += 1;
        let result = pass(&e, sweep).await;
        let mut st = e.maintenance.lock();
        st.last_pass = Some(format_micros(chrono::Utc::now().timestamp_micros()));
        st.compacting = None;
        match result {
            Ok(()) => st.last_error = None,
            Err(err) => {
                tracing::warn!(error = %err, "storage maintenance failed; retrying next pass");
                st.last_error = Some(err.to_string());
            }
        }
    }
}

/// One maintenance pass: retention, compaction, garbage collection. With
/// `thorough` (the first pass, then every few), also look for orphaned
/// files and for series left without data by an earlier run.
pub async fn pass(e: &Engine, thorough: bool) -> Result<(), EngineError> {
    // The stream's history ages out even when nothing is flushed.
    let covered = crate::stream::Offset(e.shared.state.read().manifest.stream_offset);
    e.log().remove_before(covered, e.config.stream_retention)?;
    if let Some(keep) = e.config.retention {
        expire(e, keep, thorough).await?;
    }
    let jobs = plan(
        &e.snapshot().manifest,
        now(),
        e.config.compaction_cold_after,
    );
    for job in jobs {
        if *e.shutdown.borrow() {
            return Ok(());
        }
        compact(e, job).await?;
    }
    collect_garbage(e, thorough).await
}

fn now() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

fn storage<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> EngineError + '_ {
    move |err| EngineError::Storage(StorageError::Other(format!("{what}: {err}")))
}

/// Merges one partition's chunks into one compacted chunk.
async fn compact(e: &Engine, job: Job) -> Result<(), EngineError> {
    e.maintenance.lock().compacting = Some(format_micros(job.partition * PARTITION_MICROS));
    let mut batches: Vec<RecordBatch> = Vec::new();
    for c in &job.inputs {
        batches.extend(e.reader.read(c, None).await?.iter().cloned());
    }
    let id = e.allocate_chunk_ids(1);
    let (bytes, meta, merged) = tokio::task::spawn_blocking(move || -> Result<_, StorageError> {
        let merged = sorted_points(&batches)?;
        let (bytes, meta) = encode_compacted(id, &merged)?;
        Ok((bytes, meta, merged))
    })
    .await
    .map_err(storage("merge task"))??;
    let path = Path::from(meta.path.as_str());
    e.store.put(&path, bytes).await?;
    e.store.sync(std::slice::from_ref(&path))?;

    let inputs: HashSet<u64> = job.inputs.iter().map(|c| c.id).collect();
    let _commit = e.flush_lock.lock().await;
    let current = e.shared.state.read().manifest.clone();
    if current
        .chunks
        .iter()
        .filter(|c| inputs.contains(&c.id))
        .count()
        != inputs.len()
    {
        // Retention dropped an input meanwhile; the output is an orphan.
        tracing::info!(
            partition = job.partition,
            "compaction inputs changed; skipped"
        );
        return Ok(());
    }
    let mut next = (*current).clone();
    next.chunks.retain(|c| !inputs.contains(&c.id));
    let (rows, after) = (meta.rows, meta.bytes);
    next.chunks.push(meta);
    let since = now();
    next.garbage.extend(job.inputs.iter().map(|c| Garbage {
        path: c.path.clone(),
        since,
    }));
    let new_path = next.chunks.last().expect("just pushed").path.clone();
    e.commit_manifest(&current, next).await?;
    for c in &job.inputs {
        e.reader.forget(&c.path);
    }
    e.reader
        .insert(&new_path, std::sync::Arc::new(vec![merged]));
    let before: u64 = job.inputs.iter().map(|c| c.bytes).sum();
    tracing::debug!(
        partition = job.partition,
        chunks = inputs.len(),
        rows,
        before,
        after,
        "compacted"
    );
    let mut st = e.maintenance.lock();
    st.compactions += 1;
    st.chunks_merged += inputs.len() as u64;
    st.bytes_before += before;
    st.bytes_after += after;
    Ok(())
}

/// Drops chunks older than `keep`, then series with no data left (which
/// only expiry makes: checked when chunks expired, or with `thorough`).
async fn expire(e: &Engine, keep: Duration, thorough: bool) -> Result<(), EngineError> {
    let cutoff = now() - keep.as_micros() as i64;
    let mut dropped = false;
    {
        let _commit = e.flush_lock.lock().await;
        let current = e.shared.state.read().manifest.clone();
        let (expired, kept): (Vec<_>, Vec<_>) = current
            .chunks
            .iter()
            .cloned()
            .partition(|c| c.max_time < cutoff);
        if !expired.is_empty() {
            let mut next = (*current).clone();
            next.chunks = kept;
            let since = now();
            next.garbage.extend(expired.iter().map(|c| Garbage {
                path: c.path.clone(),
                since,
            }));
            e.commit_manifest(&current, next).await?;
            for c in &expired {
                e.reader.forget(&c.path);
            }
            e.maintenance.lock().expired_chunks += expired.len() as u64;
            dropped = true;
            tracing::info!(chunks = expired.len(), cutoff = %format_micros(cutoff), "retention dropped expired chunks");
        }
    }
    if !(dropped || thorough) || dead_series(e).is_empty() {
        return Ok(());
    }
    // Writers normalise against the catalog before their batch is applied;
    // holding the gate means no batch is between the two while series go,
    // so every later write logs the keys of the series it brings back.
    let gate = e.series_gate.write().await;
    let _commit = e.flush_lock.lock().await;
    let dead: HashSet<u64> = dead_series(e).into_iter().collect();
    let removed = e.catalog().retain(|id| !dead.contains(&id));
    drop(gate);
    if removed > 0 {
        let current = e.shared.state.read().manifest.clone();
        let next = (*current).clone();
        e.commit_manifest(&current, next).await?;
        e.maintenance.lock().series_removed += removed as u64;
        tracing::info!(
            series = removed,
            "retention removed series with no data left"
        );
    }
    Ok(())
}

/// Catalogued series with no row in any chunk or in the buffer.
fn dead_series(e: &Engine) -> Vec<u64> {
    let snap = e.snapshot();
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
    let mut candidates: Vec<u64> = e
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

/// Deletes garbage past its grace period, and (with `sweep_orphans`)
/// files under `chunks/` and `catalog/` that no manifest references.
async fn collect_garbage(e: &Engine, sweep_orphans: bool) -> Result<(), EngineError> {
    let grace = e.config.gc_grace.as_micros() as i64;
    let current = e.snapshot().manifest;
    let due: Vec<String> = current
        .garbage
        .iter()
        .filter(|g| g.since + grace <= now())
        .map(|g| g.path.clone())
        .collect();
    for path in &due {
        e.store.delete(&Path::from(path.as_str())).await?;
    }
    if !due.is_empty() {
        let _commit = e.flush_lock.lock().await;
        let current = e.shared.state.read().manifest.clone();
        let mut next = (*current).clone();
        next.garbage.retain(|g| !due.contains(&g.path));
        e.commit_manifest(&current, next).await?;
        e.maintenance.lock().files_deleted += due.len() as u64;
    }
    if sweep_orphans {
        let deleted = sweep(e, &e.snapshot().manifest, grace).await?;
        e.maintenance.lock().files_deleted += deleted;
    }
    Ok(())
}

/// Deletes files left by crashed flushes and compactions. A chunk is an
/// orphan when its id is below the manifest's next id (ids are never
/// handed out twice, so nothing will commit it any more) and no manifest
/// entry or garbage entry names it; a catalog snapshot when it is not the
/// current one and its version is at most the manifest's.
async fn sweep(e: &Engine, m: &Manifest, grace: i64) -> Result<u64, EngineError> {
    let known: HashSet<&str> = m
        .chunks
        .iter()
        .map(|c| c.path.as_str())
        .chain(m.garbage.iter().map(|g| g.path.as_str()))
        .chain(m.catalog.as_deref())
        .collect();
    let old =
        |meta: &object_store::ObjectMeta| meta.last_modified.timestamp_micros() + grace <= now();
    let mut deleted = 0;
    for meta in e.store.list_meta(&Path::from("chunks")).await? {
        let path = meta.location.to_string();
        let orphan = ChunkMeta::id_of_path(&path).is_some_and(|id| id < m.next_chunk_id)
            && !known.contains(path.as_str())
            && old(&meta);
        if orphan {
            e.store.delete(&meta.location).await?;
            deleted += 1;
        }
    }
    for meta in e.store.list_meta(&Path::from("catalog")).await? {
        let path = meta.location.to_string();
        let version = path
            .strip_prefix("catalog/series_")
            .and_then(|s| s.strip_suffix(".bin"))
            .and_then(|s| s.parse::<u64>().ok());
        if version.is_some_and(|v| v <= m.version) && !known.contains(path.as_str()) && old(&meta) {
            e.store.delete(&meta.location).await?;
            deleted += 1;
        }
    }
    if deleted > 0 {
        tracing::info!(files = deleted, "deleted orphaned files");
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests;
