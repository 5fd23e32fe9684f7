//! [`CommitPath`]: the one way the manifest changes.
//!
//! It owns what every commit touches: the manifest versions (through
//! [`ManifestStore`]), the writer lease and epoch, chunk-id allocation, the
//! catalog snapshot and the lock that serialises commits. A change is a
//! closure from the version in effect to the next one (or to nothing, when
//! the change no longer applies), run under that lock, in the manner of
//! SlateDB's manifest store: the flusher, the compactor, retention and
//! garbage collection all commit through [`CommitPath::commit`], so none of
//! them can forget the lease check, the catalog snapshot or the install.
//!
//! Every object a writer creates is unique to its epoch (`storage::naming`)
//! and created, never overwritten. Every commit attempt carries a
//! [`CommitId`]; when the create of version N+1 is refused because N+1
//! exists, N+1 is read back:
//! - written by this very attempt (S3 answering a retried create with
//!   412): committed;
//! - written by an earlier attempt of this writer whose answer was an
//!   error (a timeout; a failing fsync after the file got its name): that
//!   version is adopted, and the change runs again on top of it (the
//!   closure sees the adopted version and decides what still applies);
//! - damaged: skipped, as startup would skip it, and the change runs again
//!   one version higher;
//! - anyone else's: this writer is fenced out.
//!
//! May depend on the write buffer (it installs what it commits), `storage`
//! and `runtime`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::buffer::WriteBuffer;
use super::error::EngineError;
use crate::runtime::{Clock, CrashPoint, CrashPoints};
use crate::storage::{
    catalog_path, read_footer_series, CommitId, DamagedVersion, Lease, Manifest, ManifestStore,
    StorageError, Store, WriterEpoch,
};

/// What a [`CommitPath`] is built from.
pub(crate) struct CommitArgs {
    pub store: Store,
    pub lease: Option<Arc<Lease>>,
    /// The epoch this writer's objects and commits carry.
    pub epoch: WriterEpoch,
    pub buffer: Arc<WriteBuffer>,
    /// The catalog generation the current manifest's snapshot holds.
    pub catalog_persisted: u64,
    /// Newer manifest versions that did not decode at open (newest
    /// first): commits go above them.
    pub skipped: Vec<DamagedVersion>,
    /// The data directory: where a node on a shared store records the
    /// stream offset its last commit covered.
    pub data_dir: PathBuf,
    pub clock: Clock,
    pub crash: CrashPoints,
}

pub(crate) struct CommitPath {
    store: Store,
    manifests: ManifestStore,
    lease: Option<Arc<Lease>>,
    epoch: WriterEpoch,
    buffer: Arc<WriteBuffer>,
    data_dir: PathBuf,
    clock: Clock,
    crash: CrashPoints,
    /// The next chunk id to hand out; never reused, even for chunks whose
    /// commit failed.
    next_chunk_id: AtomicU64,
    /// The catalog generation the newest committed snapshot holds.
    catalog_persisted: AtomicU64,
    /// Numbers this writer's commit attempts (the `seq` of their ids).
    attempts: AtomicU64,
    /// The newest manifest version known to exist (installed or skipped as
    /// damaged): the next commit creates one above it.
    newest: AtomicU64,
    /// Versions skipped because they did not decode, newest first.
    skipped: parking_lot::Mutex<Vec<DamagedVersion>>,
    /// Held for the whole of a commit, so commits never race.
    lock: tokio::sync::Mutex<()>,
}

/// How the create of a version that already exists turned out.
enum Existing {
    /// It is this attempt's own.
    Ours,
    /// It was adopted or skipped: run the change again.
    Retry,
}

impl CommitPath {
    pub fn new(args: CommitArgs) -> Self {
        let current = args.buffer.manifest();
        let newest = args
            .skipped
            .iter()
            .map(|d| d.version)
            .fold(current.version, u64::max);
        Self {
            manifests: ManifestStore::new(args.store.clone()),
            next_chunk_id: AtomicU64::new(current.next_chunk_id.max(1)),
            catalog_persisted: AtomicU64::new(args.catalog_persisted),
            attempts: AtomicU64::new(1),
            newest: AtomicU64::new(newest),
            skipped: parking_lot::Mutex::new(args.skipped),
            store: args.store,
            lease: args.lease,
            epoch: args.epoch,
            buffer: args.buffer,
            data_dir: args.data_dir,
            clock: args.clock,
            crash: args.crash,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Hands out `n` consecutive chunk ids and returns the first.
    pub fn allocate_chunk_ids(&self, n: u64) -> u64 {
        self.next_chunk_id.fetch_add(n, Ordering::AcqRel)
    }

    /// The epoch every object this writer creates is named with.
    pub fn epoch(&self) -> WriterEpoch {
        self.epoch
    }

    /// Marks a crash point of the storage path (flush, compaction, commit):
    /// the fault harness may stop the process here (see `runtime::crash`).
    pub fn reached(&self, point: CrashPoint) {
        self.crash.reached(point);
    }

    /// The writer lease, on a store other servers can reach.
    pub fn lease(&self) -> Option<&Arc<Lease>> {
        self.lease.as_ref()
    }

    /// Manifest versions skipped because they did not decode, newest first.
    pub fn skipped(&self) -> Vec<DamagedVersion> {
        self.skipped.lock().clone()
    }

    /// Fails once this server may no longer write to the store.
    pub fn check_writer(&self) -> Result<(), EngineError> {
        match self.lease.as_ref().filter(|l| l.is_lost()) {
            Some(lease) => Err(lease.lost_error().into()),
            None => Ok(()),
        }
    }

    /// Commits `change(current)` as the next manifest version, with a new
    /// catalog snapshot if the catalog changed, and installs it for
    /// readers. `change` runs under the commit lock on the version in
    /// effect, again if a version of this writer's is adopted meanwhile;
    /// `None` commits nothing (and returns `None`).
    pub async fn commit<F>(&self, mut change: F) -> Result<Option<Arc<Manifest>>, EngineError>
    where
        F: FnMut(&Manifest) -> Option<Manifest>,
    {
        let _one_at_a_time = self.lock.lock().await;
        loop {
            self.check_writer()?;
            let current = self.buffer.manifest();
            let Some(next) = change(&current) else {
                return Ok(None);
            };
            if let Some(committed) = self.attempt(&current, next).await? {
                return Ok(Some(committed));
            }
        }
    }

    /// One attempt at committing `next` above `current`: `None` if the
    /// change must run again on a newly adopted or skipped version.
    async fn attempt(
        &self,
        current: &Arc<Manifest>,
        mut next: Manifest,
    ) -> Result<Option<Arc<Manifest>>, EngineError> {
        let id = CommitId {
            epoch: self.epoch,
            seq: self.attempts.fetch_add(1, Ordering::AcqRel),
        };
        next.version = current.version.max(self.newest.load(Ordering::Acquire)) + 1;
        let generation = self.buffer.catalog().generation();
        let old_catalog = next.catalog.clone();
        if generation != self.catalog_persisted.load(Ordering::Acquire) {
            next.catalog = Some(self.write_catalog(next.version, id).await?);
            next.catalog_series = self.buffer.catalog().len() as u64;
            self.reached(CrashPoint::AfterCatalogPut);
        }
        next.next_chunk_id = next
            .next_chunk_id
            .max(self.next_chunk_id.load(Ordering::Acquire));
        next.writer = self.lease.as_ref().map(|l| l.node());
        next.committed_at = self.clock.now_micros();
        next.commit = Some(id);
        let next = Arc::new(next);
        self.reached(CrashPoint::BeforeManifestCommit);
        match self.manifests.commit((*next).clone()).await {
            Ok(_) => self.reached(CrashPoint::AfterManifestCommit),
            Err(StorageError::AlreadyExists { .. }) => {
                match self.existing(current, next.version, id).await? {
                    Existing::Ours => {}
                    Existing::Retry => return Ok(None),
                }
            }
            Err(e) => return Err(e.into()),
        }
        self.install(current, &next);
        self.catalog_persisted.store(generation, Ordering::Release);
        if let Some(old) = old_catalog.filter(|o| next.catalog.as_ref() != Some(o)) {
            // Best effort: a leftover is swept as an orphan later.
            let _ = self.store.delete(&old.as_str().into()).await;
        }
        Ok(Some(next))
    }

    /// Reads back `version`, which exists although attempt `id` tried to
    /// create it, and settles what to do (see the module docs).
    async fn existing(
        &self,
        current: &Manifest,
        version: u64,
        id: CommitId,
    ) -> Result<Existing, EngineError> {
        let found = match self.manifests.load(version).await {
            Ok(found) => found,
            Err(StorageError::Corrupt { path, why }) => {
                tracing::warn!(version, %path, error = %why, "a manifest version in the way does not decode; committing above it");
                self.skip(DamagedVersion {
                    version,
                    path,
                    error: why,
                });
                return Ok(Existing::Retry);
            }
            Err(e) => return Err(e.into()),
        };
        match found.commit {
            Some(c) if c == id => Ok(Existing::Ours),
            Some(c) if c.epoch == self.epoch => {
                tracing::warn!(version, commit = %c, "an earlier commit of this writer went through although it was answered with an error; adopting it");
                let adopted = self.with_series(found, current).await?;
                self.install(current, &Arc::new(adopted));
                Ok(Existing::Retry)
            }
            c => Err(EngineError::CommittedElsewhere {
                version,
                by: describe_writer(found.writer.as_deref(), c),
            }),
        }
    }

    /// `adopted`, read back from the store, with each chunk's series list
    /// (not kept in the manifest): from `current` where it has the chunk,
    /// else from the chunk's footer.
    async fn with_series(
        &self,
        mut adopted: Manifest,
        current: &Manifest,
    ) -> Result<Manifest, StorageError> {
        for c in &mut adopted.chunks {
            match current.chunks.iter().find(|k| k.path == c.path) {
                Some(known) => c.series = known.series.clone(),
                None => c.series = Arc::new(read_footer_series(&self.store, c).await?),
            }
        }
        Ok(adopted)
    }

    /// Swaps `committed` in for readers and notes what it covers.
    fn install(&self, current: &Manifest, committed: &Arc<Manifest>) {
        self.buffer.install(committed.clone());
        self.newest.fetch_max(committed.version, Ordering::AcqRel);
        if self.lease.is_some() && committed.stream_offset != current.stream_offset {
            self.record_committed_offset(committed.stream_offset);
        }
    }

    fn skip(&self, damaged: DamagedVersion) {
        self.newest.fetch_max(damaged.version, Ordering::AcqRel);
        self.skipped.lock().insert(0, damaged);
    }

    /// Writes the catalog snapshot for manifest `version`, under a name
    /// unique to attempt `id`; durable once written.
    async fn write_catalog(&self, version: u64, id: CommitId) -> Result<String, EngineError> {
        let path = catalog_path(version, id);
        self.store
            .put_new(&path, self.buffer.catalog().encode_snapshot())
            .await?;
        Ok(path.to_string())
    }

    fn record_committed_offset(&self, offset: u64) {
        let marker = committed_marker(&self.data_dir);
        if let Err(e) = std::fs::write(&marker, offset.to_string()) {
            tracing::warn!(error = %e, path = %marker.display(), "recording the committed offset failed");
        }
    }
}

/// Who committed a version, for the fenced-out error.
fn describe_writer(node: Option<&str>, commit: Option<CommitId>) -> String {
    match (node, commit) {
        (Some(node), Some(c)) => format!("node {node}, {c}"),
        (Some(node), None) => format!("node {node}"),
        (None, Some(c)) => c.to_string(),
        (None, None) => "a writer that records no commit id".into(),
    }
}

/// Where a node on a shared store records the stream offset its last
/// manifest commit covered: how it tells, after another node wrote the
/// manifest, whether its own log holds writes never flushed.
pub(crate) fn committed_marker(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("stream").join("metrics.committed")
}
