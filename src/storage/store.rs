//! [`Store`]: the one door to object storage. A put that returns is
//! durable on every store: S3 and its kin by contract, the local disk
//! because `LocalDisk` (`storage/local.rs`) fsyncs before it answers.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig};

use super::local::LocalDisk;
use crate::error::{ErrorKind, HasKind};
use crate::runtime::fs::create_dir_all_synced;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("object {path} already exists (another writer committed first?)")]
    AlreadyExists { path: String },
    #[error("object {path} is damaged: {why}")]
    Corrupt { path: String, why: String },
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("encoding {what} as JSON: {source}")]
    Json {
        what: &'static str,
        source: serde_json::Error,
    },
    /// A file of the data directory (not an object) could not be used.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A blocking task (decoding, encoding) panicked or was cancelled.
    #[error("{task} task failed: {source}")]
    Join {
        task: &'static str,
        source: tokio::task::JoinError,
    },
    /// A setting names no store this server can use; the message says
    /// which setting and what was expected.
    #[error("{0}")]
    Config(String),
    /// The object-store client could not be built from its URL and the
    /// environment.
    #[error("--object-store {url:?}: {source}")]
    Open {
        url: String,
        source: object_store::Error,
    },
    /// A chunk the server itself asked to write is not one (a bug).
    #[error("refusing to write chunk {id}: {why}")]
    BadChunk { id: u64, why: &'static str },
    #[error("{0}")]
    Fenced(String),
}

impl StorageError {
    /// A failed operation `op` on the local file `path`.
    pub fn io<'a>(op: &'static str, path: &'a FsPath) -> impl FnOnce(std::io::Error) -> Self + 'a {
        move |source| StorageError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

impl HasKind for StorageError {
    fn kind(&self) -> ErrorKind {
        match self {
            StorageError::AlreadyExists { .. } => ErrorKind::Conflict,
            StorageError::Corrupt { .. } => ErrorKind::Corrupt,
            StorageError::Fenced(_) => ErrorKind::Fenced,
            // The server's own objects and files: whatever fails with them
            // is not the client's doing (a missing object included).
            StorageError::ObjectStore(_)
            | StorageError::Arrow(_)
            | StorageError::Parquet(_)
            | StorageError::Json { .. }
            | StorageError::Io { .. }
            | StorageError::Join { .. }
            | StorageError::Config(_)
            | StorageError::Open { .. }
            | StorageError::BadChunk { .. } => ErrorKind::Internal,
        }
    }
}

/// A cheap-to-clone handle on the object store that holds chunks, manifests
/// and catalogs.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    /// Where the objects live, for status and errors (never credentials).
    location: String,
    /// No other server can reach these objects (so no lease is needed).
    exclusive: bool,
}

impl Store {
    /// A store shared with other servers (so writers need the lease).
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        let location = inner.to_string();
        Self {
            inner,
            location,
            exclusive: false,
        }
    }

    /// Declares that only this server will ever open these objects (a
    /// test's wrapper around a private directory), so no lease is taken.
    pub fn exclusive(mut self) -> Self {
        self.exclusive = true;
        self
    }

    /// `s3://bucket[/prefix]`, configured from the environment the way
    /// `object_store`'s S3 builder reads it (`AWS_ENDPOINT`,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
    /// `AWS_ALLOW_HTTP`, ...): AWS S3, Cloudflare R2, MinIO. Manifest
    /// commits rely on S3 conditional writes (`If-None-Match`/`If-Match`),
    /// which all three support.
    pub fn from_url(url: &str) -> Result<Self, StorageError> {
        let bad = |why: &str| {
            StorageError::Config(format!(
                "--object-store {url:?}: {why} (expected s3://bucket or s3://bucket/prefix)"
            ))
        };
        let open = |source: object_store::Error| StorageError::Open {
            url: url.to_string(),
            source,
        };
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            bad("only s3:// URLs are supported; leave the flag out to store chunks in --data-dir")
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("the bucket name is missing"));
        }
        let prefix = prefix.trim_matches('/');
        // Fail a request within seconds rather than the crate's minutes: the
        // flusher retries a failed flush with its own backoff anyway, and a
        // prompt failure shows up in logs, status and metrics.
        let retry = RetryConfig {
            max_retries: 4,
            retry_timeout: std::time::Duration::from_secs(15),
            ..RetryConfig::default()
        };
        let s3 = AmazonS3Builder::from_env()
            .with_url(format!("s3://{bucket}"))
            .with_retry(retry)
            .build()
            .map_err(open)?;
        let inner: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(PrefixStore::new(
                s3,
                Path::parse(prefix).map_err(|e| open(e.into()))?,
            ))
        };
        Ok(Self {
            inner,
            location: format!("s3://{bucket}/{prefix}")
                .trim_end_matches('/')
                .to_string(),
            exclusive: false,
        })
    }

    /// True for a store other servers could open too (anything but the
    /// data directory's own disk): writers must hold the lease.
    pub fn is_shared(&self) -> bool {
        !self.exclusive
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    /// Local file system rooted at `dir` (created if missing), whose puts
    /// are durable when they return (`LocalDisk`).
    pub fn local(dir: &FsPath) -> Result<Self, StorageError> {
        create_dir_all_synced(dir).map_err(StorageError::io("creating", dir))?;
        let root = dir
            .canonicalize()
            .map_err(StorageError::io("resolving", dir))?;
        Ok(Self {
            inner: Arc::new(LocalDisk::new(&root)?),
            location: root.display().to_string(),
            exclusive: true,
        })
    }

    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// Writes `path`, replacing what is there. The server's own objects
    /// are written with [`Store::put_new`]; this is for tests and tools.
    pub async fn put(&self, path: &Path, bytes: Bytes) -> Result<(), StorageError> {
        self.inner.put(path, PutPayload::from_bytes(bytes)).await?;
        Ok(())
    }

    /// Writes `path` only if nothing is there yet: how every chunk, catalog
    /// and manifest is written, so none is ever overwritten.
    pub async fn put_new(&self, path: &Path, bytes: Bytes) -> Result<(), StorageError> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .inner
            .put_opts(path, PutPayload::from_bytes(bytes), opts)
            .await
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => Err(StorageError::AlreadyExists {
                path: path.to_string(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn get(&self, path: &Path) -> Result<Bytes, StorageError> {
        Ok(self.inner.get(path).await?.bytes().await?)
    }

    pub async fn get_range(
        &self,
        path: &Path,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes, StorageError> {
        Ok(self.inner.get_range(path, range).await?)
    }

    pub async fn delete(&self, path: &Path) -> Result<(), StorageError> {
        match self.inner.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every object under `prefix`, as (path, size).
    pub async fn list(&self, prefix: &Path) -> Result<Vec<(Path, u64)>, StorageError> {
        Ok(self
            .list_meta(prefix)
            .await?
            .into_iter()
            .map(|m| (m.location, m.size))
            .collect())
    }

    /// Every object under `prefix`, with its size and modification time.
    pub async fn list_meta(
        &self,
        prefix: &Path,
    ) -> Result<Vec<object_store::ObjectMeta>, StorageError> {
        Ok(self.inner.list(Some(prefix)).try_collect().await?)
    }
}
