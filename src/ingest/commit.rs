//! [`CommitPath`]: the one way the manifest changes.
//!
//! It owns what every commit touches: the manifest versions (through
//! [`ManifestStore`]), the writer lease, chunk-id allocation, the catalog
//! snapshot and the lock that serialises commits. A change is a closure
//! from the version in effect to the next one (or to nothing, when the
//! change no longer applies), run under that lock, in the manner of
//! SlateDB's manifest store: the flusher, the compactor, retention and
//! garbage collection all commit through [`CommitPath::commit`], so none of
//! them can forget the lease check, the catalog snapshot or the install.
//!
//! May depend on the write buffer (it installs what it commits), `storage`
//! and `runtime`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use object_store::path::Path;

use super::buffer::WriteBuffer;
use super::error::EngineError;
use crate::runtime::Clock;
use crate::storage::{Lease, Manifest, ManifestStore, StorageError, Store};

/// What a [`CommitPath`] is built from.
pub(crate) struct CommitArgs {
    pub store: Store,
    pub lease: Option<Arc<Lease>>,
    pub buffer: Arc<WriteBuffer>,
    /// The catalog generation the current manifest's snapshot holds.
    pub catalog_persisted: u64,
    /// The data directory: where a node on a shared store records the
    /// stream offset its last commit covered.
    pub data_dir: PathBuf,
    pub clock: Clock,
}

pub(crate) struct CommitPath {
    store: Store,
    manifests: ManifestStore,
    lease: Option<Arc<Lease>>,
    buffer: Arc<WriteBuffer>,
    data_dir: PathBuf,
    clock: Clock,
    /// The next chunk id to hand out; never reused, even for chunks whose
    /// commit failed.
    next_chunk_id: AtomicU64,
    /// The catalog generation the newest committed snapshot holds.
    catalog_persisted: AtomicU64,
    /// Held for the whole of a commit, so commits never race.
    lock: tokio::sync::Mutex<()>,
}

impl CommitPath {
    pub fn new(args: CommitArgs) -> Self {
        let current = args.buffer.manifest();
        Self {
            manifests: ManifestStore::new(args.store.clone()),
            next_chunk_id: AtomicU64::new(current.next_chunk_id.max(1)),
            catalog_persisted: AtomicU64::new(args.catalog_persisted),
            store: args.store,
            lease: args.lease,
            buffer: args.buffer,
            data_dir: args.data_dir,
            clock: args.clock,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Hands out `n` consecutive chunk ids and returns the first.
    pub fn allocate_chunk_ids(&self, n: u64) -> u64 {
        self.next_chunk_id.fetch_add(n, Ordering::AcqRel)
    }

    /// The writer lease, on a store other servers can reach.
    pub fn lease(&self) -> Option<&Arc<Lease>> {
        self.lease.as_ref()
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
    /// effect; `None` commits nothing (and returns `None`).
    pub async fn commit<F>(&self, change: F) -> Result<Option<Arc<Manifest>>, EngineError>
    where
        F: FnOnce(&Manifest) -> Option<Manifest>,
    {
        let _one_at_a_time = self.lock.lock().await;
        self.check_writer()?;
        let current = self.buffer.manifest();
        let Some(mut next) = change(&current) else {
            return Ok(None);
        };
        let generation = self.buffer.catalog().generation();
        let old_catalog = next.catalog.clone();
        if generation != self.catalog_persisted.load(Ordering::Acquire) {
            next.catalog = Some(self.write_catalog(current.version + 1).await?);
            next.catalog_series = self.buffer.catalog().len() as u64;
        }
        next.next_chunk_id = next
            .next_chunk_id
            .max(self.next_chunk_id.load(Ordering::Acquire));
        next.writer = self.lease.as_ref().map(|l| l.node());
        next.committed_at = self.clock.now_micros();
        let committed = match self.manifests.commit(&current, next).await {
            Ok(m) => m,
            Err(StorageError::AlreadyExists { .. }) => {
                return Err(EngineError::CommittedElsewhere {
                    version: current.version + 1,
                })
            }
            Err(e) => return Err(e.into()),
        };
        self.store
            .sync(&[ManifestStore::path_of(committed.version)])?;
        self.buffer.install(committed.clone());
        self.catalog_persisted.store(generation, Ordering::Release);
        if self.lease.is_some() && committed.stream_offset != current.stream_offset {
            self.record_committed_offset(committed.stream_offset);
        }
        if let Some(old) = old_catalog.filter(|o| committed.catalog.as_ref() != Some(o)) {
            // Best effort: a leftover is swept as an orphan later.
            let _ = self.store.delete(&old.as_str().into()).await;
        }
        Ok(Some(committed))
    }

    /// Writes and syncs the catalog snapshot for manifest `version`.
    async fn write_catalog(&self, version: u64) -> Result<String, EngineError> {
        let path = Path::from(format!("catalog/series_{version:020}.bin"));
        self.store
            .put(&path, self.buffer.catalog().encode_snapshot())
            .await?;
        self.store.sync(std::slice::from_ref(&path))?;
        Ok(path.to_string())
    }

    fn record_committed_offset(&self, offset: u64) {
        let marker = committed_marker(&self.data_dir);
        if let Err(e) = std::fs::write(&marker, offset.to_string()) {
            tracing::warn!(error = %e, path = %marker.display(), "recording the committed offset failed");
        }
    }
}

/// Where a node on a shared store records the stream offset its last
/// manifest commit covered: how it tells, after another node wrote the
/// manifest, whether its own log holds writes never flushed.
pub(crate) fn committed_marker(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("stream").join("metrics.committed")
}
