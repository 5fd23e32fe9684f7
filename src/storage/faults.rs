//! A fault-injecting object store for tests: wraps a real store and, on
//! the writes a test picks, does what a real store or network can do
//! wrong, so tests can show what the engine does then (retry,
//! backpressure, fencing, recovery; nothing lost, nothing twice).
//!
//! Two switches:
//! - [`FaultyStore::fail_writes`] refuses every write while on (the store
//!   is unreachable);
//! - [`FaultyStore::inject`] arms one [`Fault`] for the write number
//!   `after` (0: the next one) among those whose path starts with a
//!   prefix. Tests loop over both numbers to cover every call a fault can
//!   hit.
//!
//! [`FaultyStore::dies_with`] ties the store to an engine's crash points:
//! once the engine crashed, every write and delete is refused, as nothing
//! reaches the store from a dead process.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::runtime::CrashPoints;

/// What goes wrong with the write a test picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Refused: nothing is written, the caller gets an error.
    Fail,
    /// Written, but the answer is lost: the caller gets an error (a
    /// timeout; locally, a failing fsync after the file got its name).
    Lost,
    /// Written, and the caller is told the object already exists: S3's
    /// answer to a client that retried a create whose first attempt
    /// succeeded but returned a 5xx (412 Precondition Failed).
    LostAsExists,
    /// Written only as its first `keep` bytes (with `flip`, one bit of the
    /// kept bytes flipped too), and the caller gets an error: what a power
    /// loss leaves of a file whose contents were never fsynced.
    Torn { keep: usize, flip: Option<usize> },
    /// The network is cut: this write and every later one wait until
    /// [`FaultyStore::reconnect`], then go through.
    Cut,
}

#[derive(Debug)]
struct Armed {
    prefix: String,
    after: usize,
    fault: Fault,
}

#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    fail_writes: AtomicBool,
    armed: Mutex<Option<Armed>>,
    /// True while the network is cut ([`Fault::Cut`]).
    cut: watch::Sender<bool>,
    /// Writes waiting for the network to come back.
    waiting: AtomicUsize,
    /// The crash points of the engine writing here, once tied to it.
    crash: Mutex<Option<CrashPoints>>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            fail_writes: AtomicBool::new(false),
            armed: Mutex::new(None),
            cut: watch::Sender::new(false),
            waiting: AtomicUsize::new(0),
            crash: Mutex::new(None),
        }
    }

    /// Refuses every write and delete once `crash` has crashed.
    pub fn dies_with(&self, crash: &CrashPoints) {
        *self.crash.lock() = Some(crash.clone());
    }

    fn dead(&self) -> bool {
        self.crash
            .lock()
            .as_ref()
            .is_some_and(|c| c.crashed().is_some())
    }

    pub fn fail_writes(&self, on: bool) {
        self.fail_writes.store(on, Ordering::SeqCst);
    }

    /// Arms `fault` for the write number `after` (counting from 0) among
    /// the writes to paths starting with `prefix` from now on. One fault
    /// at a time; it fires once.
    pub fn inject(&self, prefix: &str, after: usize, fault: Fault) {
        *self.armed.lock() = Some(Armed {
            prefix: prefix.to_string(),
            after,
            fault,
        });
    }

    /// True once the armed fault has fired (or none is armed).
    pub fn fired(&self) -> bool {
        self.armed.lock().is_none()
    }

    /// Ends a [`Fault::Cut`]: the waiting writes go through.
    pub fn reconnect(&self) {
        self.cut.send_replace(false);
    }

    /// Writes waiting for a cut network to come back.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// The fault for a write to `location`, if this is the one armed.
    fn take_fault(&self, location: &Path) -> Option<Fault> {
        let mut armed = self.armed.lock();
        let a = armed.as_mut()?;
        if !location.as_ref().starts_with(&a.prefix) {
            return None;
        }
        if a.after > 0 {
            a.after -= 1;
            return None;
        }
        armed.take().map(|a| a.fault)
    }

    /// Waits while the network is cut.
    async fn wait_for_network(&self) {
        let mut rx = self.cut.subscribe();
        if !*rx.borrow() {
            return;
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _ = rx.wait_for(|cut| !cut).await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
    }

    fn check(&self) -> Result<()> {
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(injected("injected write failure"));
        }
        if self.dead() {
            return Err(injected("the process crashed"));
        }
        Ok(())
    }

    /// A put with `fault` applied.
    async fn faulty_put(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
        fault: Fault,
    ) -> Result<PutResult> {
        match fault {
            Fault::Fail => Err(injected("injected: write refused")),
            Fault::Lost => {
                self.inner.put_opts(location, payload, opts).await?;
                Err(injected(
                    "injected: the write went through, its answer was lost",
                ))
            }
            Fault::LostAsExists => {
                let create = matches!(opts.mode, PutMode::Create);
                self.inner.put_opts(location, payload, opts).await?;
                if !create {
                    return Err(injected(
                        "injected: the write went through, its answer was lost",
                    ));
                }
                Err(object_store::Error::AlreadyExists {
                    path: location.to_string(),
                    source: "injected: a retried create found its own first attempt".into(),
                })
            }
            Fault::Torn { keep, flip } => {
                let mut bytes: Vec<u8> = Bytes::from(payload).to_vec();
                bytes.truncate(keep);
                if let Some(bit) = flip.filter(|b| b / 8 < bytes.len()) {
                    bytes[bit / 8] ^= 1 << (bit % 8);
                }
                self.inner
                    .put_opts(location, PutPayload::from(bytes), opts)
                    .await?;
                Err(injected(
                    "injected: power lost before the write was durable",
                ))
            }
            Fault::Cut => {
                self.cut.send_replace(true);
                self.wait_for_network().await;
                self.inner.put_opts(location, payload, opts).await
            }
        }
    }
}

fn injected(what: &'static str) -> object_store::Error {
    object_store::Error::Generic {
        store: "faulty",
        source: what.into(),
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.check()?;
        self.wait_for_network().await;
        match self.take_fault(location) {
            Some(fault) => self.faulty_put(location, payload, opts, fault).await,
            None => self.inner.put_opts(location, payload, opts).await,
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.check()?;
        self.wait_for_network().await;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        if self.dead() {
            use futures::StreamExt;
            return futures::stream::once(async { Err(injected("the process crashed")) }).boxed();
        }
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.check()?;
        self.wait_for_network().await;
        self.inner.copy_opts(from, to, options).await
    }
}
