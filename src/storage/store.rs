//! [`Store`]: the one door to object storage.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

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
    #[error("{0}")]
    Other(String),
}

/// A cheap-to-clone handle on the object store that holds chunks, manifests
/// and catalogs.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    /// Set for the local file system, whose `put` does not fsync.
    local_root: Option<PathBuf>,
}

impl Store {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            local_root: None,
        }
    }

    /// Local file system rooted at `dir` (created if missing).
    pub fn local(dir: &FsPath) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StorageError::Other(format!("creating {}: {e}", dir.display())))?;
        let root = dir
            .canonicalize()
            .map_err(|e| StorageError::Other(format!("{}: {e}", dir.display())))?;
        Ok(Self {
            inner: Arc::new(LocalFileSystem::new_with_prefix(&root)?),
            local_root: Some(root),
        })
    }

    /// Makes written objects durable. Object stores are durable once a put
    /// returns; the local file system needs the files and their directories
    /// fsynced.
    pub fn sync(&self, paths: &[Path]) -> Result<(), StorageError> {
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        let mut dirs = std::collections::BTreeSet::new();
        for p in paths {
            let file = root.join(p.as_ref());
            let io =
                |e: std::io::Error| StorageError::Other(format!("fsync {}: {e}", file.display()));
            std::fs::File::open(&file)
                .and_then(|f| f.sync_all())
                .map_err(io)?;
            if let Some(parent) = file.parent() {
                dirs.insert(parent.to_path_buf());
            }
        }
        for d in dirs {
            std::fs::File::open(&d)
                .and_then(|f| f.sync_all())
                .map_err(|e| StorageError::Other(format!("fsync {}: {e}", d.display())))?;
        }
        Ok(())
    }

    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    pub async fn put(&self, path: &Path, bytes: Bytes) -> Result<(), StorageError> {
        self.inner.put(path, PutPayload::from_bytes(bytes)).await?;
        Ok(())
    }

    /// Writes `path` only if nothing is there yet: the commit primitive.
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
        let metas: Vec<_> = self.inner.list(Some(prefix)).try_collect().await?;
        Ok(metas.into_iter().map(|m| (m.location, m.size)).collect())
    }
}
