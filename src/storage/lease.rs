//! The single-writer lease on a shared object-store prefix.
//!
//! Any number of servers may read a prefix's chunks, manifests and catalog,
//! but one at a time may write them. The writer holds `writer.json`
//! (`{node, epoch, heartbeat_at}`) and renews it every [`HEARTBEAT`] with a
//! conditional update on the object's ETag, so a renewal fails if anyone
//! else wrote it meanwhile. A server starting on the prefix refuses to run
//! while another's heartbeat is younger than [`TIMEOUT`], with an error that
//! names the holder; a holder that loses the lease (its renewal is refused,
//! or it could not renew for [`TIMEOUT`]) stops committing. Manifest commits
//! are conditional creates as well, so even two writers that both believe
//! they hold the lease cannot both commit one version.
//!
//! The local file system needs none of this: a data directory is one
//! server's.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::naming::WriterEpoch;
use super::store::{StorageError, Store};
use crate::runtime::fs::write_synced;
use crate::runtime::Clock;

pub const HEARTBEAT: Duration = Duration::from_secs(5);
pub const TIMEOUT: Duration = Duration::from_secs(20);
const OBJECT: &str = "writer.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Holder {
    node: String,
    epoch: u64,
    /// Unix micros of the last renewal.
    heartbeat_at: i64,
}

pub struct Lease {
    store: Store,
    holder: Mutex<(Holder, UpdateVersion)>,
    /// When the newest renewal that succeeded was sent (not answered: the
    /// holder's heartbeat says that moment, and others count from it).
    last_renewed: Mutex<Instant>,
    lost: AtomicBool,
    clock: Clock,
}

impl Lease {
    /// Takes the lease for `node`, or fails if another server renewed it
    /// within [`TIMEOUT`].
    pub async fn acquire(
        store: &Store,
        node: &str,
        clock: Clock,
    ) -> Result<Arc<Self>, StorageError> {
        let path = Path::from(OBJECT);
        let sent = clock.instant();
        let (epoch, mode) = match store.inner().get(&path).await {
            Ok(got) => {
                let version = UpdateVersion {
                    e_tag: got.meta.e_tag.clone(),
                    version: got.meta.version.clone(),
                };
                let bytes = got.bytes().await?;
                let held: Holder =
                    serde_json::from_slice(&bytes).map_err(|e| StorageError::Corrupt {
                        path: OBJECT.into(),
                        why: e.to_string(),
                    })?;
                let age =
                    Duration::from_micros((clock.now_micros() - held.heartbeat_at).max(0) as u64);
                if held.node != node && age < TIMEOUT {
                    return Err(StorageError::Fenced(format!(
                        "another StreamDB (node {}) is writing to this object-store prefix; its last heartbeat was {:.1} s ago. Stop it first, or start this one {} s after it stopped",
                        held.node,
                        age.as_secs_f64(),
                        TIMEOUT.as_secs()
                    )));
                }
                (held.epoch + 1, PutMode::Update(version))
            }
            Err(object_store::Error::NotFound { .. }) => (1, PutMode::Create),
            Err(e) => return Err(e.into()),
        };
        let holder = Holder {
            node: node.to_string(),
            epoch,
            heartbeat_at: clock.now_micros(),
        };
        let version = put(store, &holder, mode).await.map_err(|e| match e {
            StorageError::Fenced(_) => StorageError::Fenced(
                "another StreamDB took the object-store prefix at the same moment; start again once it is stopped".into(),
            ),
            e => e,
        })?;
        Ok(Arc::new(Self {
            store: store.clone(),
            holder: Mutex::new((holder, version)),
            last_renewed: Mutex::new(sent),
            lost: AtomicBool::new(false),
            clock,
        }))
    }

    /// Renews the lease; an error other than a transient store failure
    /// means it is lost for good.
    pub async fn renew(&self) -> Result<(), StorageError> {
        if self.is_lost() {
            return Err(self.lost_error());
        }
        let (mut holder, version) = self.holder.lock().clone();
        let sent = self.clock.instant();
        holder.heartbeat_at = self.clock.now_micros();
        match put(&self.store, &holder, PutMode::Update(version)).await {
            Ok(version) => {
                *self.holder.lock() = (holder, version);
                *self.last_renewed.lock() = sent;
                Ok(())
            }
            Err(e @ StorageError::Fenced(_)) => {
                self.lost.store(true, Ordering::Release);
                Err(e)
            }
            Err(e) => {
                // Unrenewed for TIMEOUT: another server may take over now.
                if self.clock.since(*self.last_renewed.lock()) >= TIMEOUT {
                    self.lost.store(true, Ordering::Release);
                }
                Err(e)
            }
        }
    }

    /// Gives the lease up on a clean stop, so the next server (this one
    /// restarted, or another node) need not wait out [`TIMEOUT`].
    pub async fn release(&self) -> Result<(), StorageError> {
        if self.is_lost() {
            return Ok(());
        }
        let (mut holder, version) = self.holder.lock().clone();
        holder.heartbeat_at = 0;
        put(&self.store, &holder, PutMode::Update(version)).await?;
        self.lost.store(true, Ordering::Release);
        Ok(())
    }

    pub fn epoch(&self) -> u64 {
        self.holder.lock().0.epoch
    }

    /// The epoch as the names of this holder's objects carry it.
    pub fn writer_epoch(&self) -> WriterEpoch {
        WriterEpoch(self.epoch())
    }

    pub fn node(&self) -> String {
        self.holder.lock().0.node.clone()
    }

    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire) || self.clock.since(*self.last_renewed.lock()) >= TIMEOUT
    }

    pub fn lost_error(&self) -> StorageError {
        let (node, epoch) = {
            let h = self.holder.lock();
            (h.0.node.clone(), h.0.epoch)
        };
        StorageError::Fenced(format!(
            "this server no longer holds the writer lease on the object-store prefix (node {node}, epoch {epoch}): it was stopped, another server took over, or the store was unreachable for {} s; restart it to retake the lease",
            TIMEOUT.as_secs()
        ))
    }
}

async fn put(store: &Store, holder: &Holder, mode: PutMode) -> Result<UpdateVersion, StorageError> {
    let body = serde_json::to_vec(holder).expect("json");
    let opts = PutOptions {
        mode,
        ..Default::default()
    };
    match store
        .inner()
        .put_opts(&Path::from(OBJECT), PutPayload::from(body), opts)
        .await
    {
        Ok(r) => Ok(UpdateVersion {
            e_tag: r.e_tag,
            version: r.version,
        }),
        Err(
            object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. },
        ) => Err(StorageError::Fenced("writer.json changed under us".into())),
        Err(e) => Err(e.into()),
    }
}

/// This server's node id: generated once and kept in the data directory,
/// so a restarted server retakes its own lease at once.
pub fn node_id(data_dir: &std::path::Path) -> Result<String, StorageError> {
    let file = data_dir.join("node-id");
    match std::fs::read_to_string(&file) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StorageError::io("reading", &file)(e)),
    }
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "node".into());
    let id = format!("{host}-{}", uuid::Uuid::new_v4().simple());
    write_synced(&file, id.as_bytes()).map_err(StorageError::io("writing", &file))?;
    Ok(id)
}

/// The writer epoch of a store no other server reaches (the data
/// directory's own disk), where there is no lease to number writers: a
/// counter in `<data-dir>/writer-epoch`, bumped and made durable at every
/// start before anything is written under it, and above `seen` (the
/// newest manifest's, should the file have been lost in a restore). The
/// data directory's lock makes the starting process the only writer, so
/// no two processes ever write under one epoch.
pub fn local_epoch(
    data_dir: &std::path::Path,
    seen: WriterEpoch,
) -> Result<WriterEpoch, StorageError> {
    let file = data_dir.join("writer-epoch");
    let last = match std::fs::read_to_string(&file) {
        Ok(text) => text.trim().parse::<u64>().map_err(|e| StorageError::Corrupt {
            path: file.display().to_string(),
            why: format!("{e}: the file should hold one number; delete it to start from the epoch after the newest manifest's"),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(StorageError::io("reading", &file)(e)),
    };
    let epoch = last.max(seen.0) + 1;
    write_synced(&file, epoch.to_string().as_bytes())
        .map_err(StorageError::io("writing", &file))?;
    Ok(WriterEpoch(epoch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn a_second_writer_is_refused_until_the_first_releases() {
        let store = Store::new(Arc::new(InMemory::new()));
        let a = Lease::acquire(&store, "a", Clock::system()).await.unwrap();
        assert_eq!(a.epoch(), 1);
        let err = Lease::acquire(&store, "b", Clock::system())
            .await
            .err()
            .expect("refused");
        assert!(
            matches!(&err, StorageError::Fenced(m) if m.contains("node a")),
            "{err}"
        );
        a.renew().await.unwrap();
        // The same node restarting takes its lease back at once.
        let a2 = Lease::acquire(&store, "a", Clock::system()).await.unwrap();
        assert_eq!(a2.epoch(), 2);
        // The old incarnation's renewal is refused: the object changed.
        assert!(matches!(a.renew().await, Err(StorageError::Fenced(_))));
        assert!(a.is_lost());
        a2.release().await.unwrap();
        let b = Lease::acquire(&store, "b", Clock::system()).await.unwrap();
        assert_eq!((b.node(), b.epoch()), ("b".to_string(), 3));
    }

    /// Lease takeover, in paused time: a holder that stops renewing (cut
    /// off from the store) counts itself lost exactly when another node
    /// may take over, and its later renewal is refused.
    #[tokio::test(start_paused = true)]
    async fn a_silent_holder_is_taken_over_after_the_timeout() {
        let store = Store::new(Arc::new(InMemory::new()));
        let clock = Clock::simulated(1_700_000_000_000_000);
        let a = Lease::acquire(&store, "a", clock.clone()).await.unwrap();
        // Renewals keep it, however long.
        for _ in 0..10 {
            tokio::time::advance(HEARTBEAT).await;
            a.renew().await.unwrap();
        }
        tokio::time::advance(TIMEOUT - Duration::from_millis(1)).await;
        assert!(!a.is_lost());
        let early = Lease::acquire(&store, "b", clock.clone()).await;
        assert!(matches!(early, Err(StorageError::Fenced(_))));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(a.is_lost(), "unrenewed for the timeout: lost");
        let b = Lease::acquire(&store, "b", clock.clone()).await.unwrap();
        assert_eq!(b.epoch(), 2);
        assert!(matches!(a.renew().await, Err(StorageError::Fenced(_))));
        b.renew().await.unwrap();
    }

    #[test]
    fn each_start_on_a_local_disk_gets_a_new_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let none = WriterEpoch::default();
        assert_eq!(local_epoch(&data, none).unwrap(), WriterEpoch(1));
        assert_eq!(local_epoch(&data, none).unwrap(), WriterEpoch(2));
        // A manifest written under a later epoch (the file was lost).
        assert_eq!(local_epoch(&data, WriterEpoch(9)).unwrap(), WriterEpoch(10));
        std::fs::write(data.join("writer-epoch"), "x").unwrap();
        let err = local_epoch(&data, none).unwrap_err();
        assert!(err.to_string().contains("writer-epoch"), "{err}");
    }

    /// Heartbeats are wall-clock times, so a node whose clock runs ahead
    /// takes over early by its skew, while the old holder still counts
    /// itself the writer: the window the writer-unique object names close.
    #[tokio::test(start_paused = true)]
    async fn a_clock_ahead_takes_over_early_by_its_skew() {
        let store = Store::new(Arc::new(InMemory::new()));
        let clock_a = Clock::simulated(1_700_000_000_000_000);
        let clock_b = Clock::simulated(1_700_000_000_000_000);
        clock_b.skew(5_000_000); // b is 5 s ahead
        let _a = Lease::acquire(&store, "a", clock_a).await.unwrap();
        tokio::time::advance(TIMEOUT - Duration::from_secs(6)).await;
        assert!(Lease::acquire(&store, "b", clock_b.clone()).await.is_err());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(Lease::acquire(&store, "b", clock_b).await.is_ok());
    }
}
