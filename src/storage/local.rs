//! [`LocalDisk`]: the data directory as an object store whose writes are
//! durable when they return, like a completed PUT on S3.
//!
//! `object_store`'s `LocalFileSystem` writes an object to a staging file
//! and links (or renames) it into place without an fsync: after a power
//! loss the name can survive while the bytes do not, leaving an empty
//! newest manifest. Here a put writes the staging file, fsyncs it, gives
//! it its name, then fsyncs the directory; new directories on the way are
//! fsynced in their parents. Everything but puts is `LocalFileSystem`'s.
//!
//! A put whose last fsync fails has already given the object its name: it
//! is the local form of an ambiguous answer, which the commit path
//! resolves by reading the object back.
//!
//! May depend on `runtime` only.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

use crate::runtime::fs::{
    create_dir_all_synced, hard_link, parent_of, rename, sync_dir, sync_file,
};

#[derive(Debug)]
pub(super) struct LocalDisk {
    inner: Arc<LocalFileSystem>,
}

impl LocalDisk {
    /// The store rooted at `root`, which must exist.
    pub fn new(root: &FsPath) -> Result<Self> {
        Ok(Self {
            inner: Arc::new(LocalFileSystem::new_with_prefix(root)?),
        })
    }
}

impl fmt::Display for LocalDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalDisk({})", self.inner)
    }
}

/// Writes `payload` as `path`, durably: see the module docs.
fn put_durably(path: &FsPath, payload: &PutPayload, mode: &PutMode) -> io::Result<()> {
    let dir = parent_of(path);
    create_dir_all_synced(dir)?;
    let (mut file, staging) = open_staging(path)?;
    let written = payload
        .iter()
        .try_for_each(|part| file.write_all(part))
        .and_then(|()| sync_file(&file, &staging));
    drop(file);
    let named = written.and_then(|()| match mode {
        PutMode::Create => hard_link(&staging, path),
        _ => rename(&staging, path),
    });
    // The staging name is left over after a link, or after any failure.
    let _ = std::fs::remove_file(&staging);
    named?;
    sync_dir(dir)
}

/// A new staging file next to `path`: `<name>#<n>`, a name the listing of
/// `LocalFileSystem` skips, so a crash's leftover is never an object.
fn open_staging(path: &FsPath) -> io::Result<(File, PathBuf)> {
    for n in 1u32.. {
        let mut name = path.as_os_str().to_owned();
        name.push(format!("#{n}"));
        let staging = PathBuf::from(name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&staging)
        {
            Ok(file) => return Ok((file, staging)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    unreachable!("u32 staging names run out")
}

/// `object_store`'s error for a failed put of `location`.
fn put_error(location: &Path, e: io::Error) -> object_store::Error {
    match e.kind() {
        io::ErrorKind::AlreadyExists => object_store::Error::AlreadyExists {
            path: location.to_string(),
            source: Box::new(e),
        },
        _ => object_store::Error::Generic {
            store: "LocalDisk",
            source: format!("writing {location}: {e}").into(),
        },
    }
}

#[async_trait]
impl ObjectStore for LocalDisk {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        if matches!(opts.mode, PutMode::Update(_)) || !opts.attributes.is_empty() {
            // Not supported on a local disk: let the inner store say so.
            return self.inner.put_opts(location, payload, opts).await;
        }
        let path = self.inner.path_to_filesystem(location)?;
        let mode = opts.mode;
        let done = tokio::task::spawn_blocking(move || put_durably(&path, &payload, &mode))
            .await
            .map_err(|e| object_store::Error::JoinError { source: e })?;
        done.map_err(|e| put_error(location, e))?;
        Ok(PutResult {
            e_tag: None,
            version: None,
        })
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
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
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fs::{synced, Synced};
    use object_store::ObjectStoreExt;

    #[tokio::test]
    async fn a_put_is_fsynced_under_its_staging_name_then_named_and_its_directory_synced() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path().canonicalize().unwrap();
        let disk = LocalDisk::new(&root).unwrap();
        let at = Path::from("manifest/00000000000000000001.json");
        let create = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        disk.put_opts(&at, PutPayload::from_static(b"one"), create.clone())
            .await
            .unwrap();
        let file = root.join("manifest/00000000000000000001.json");
        let ours: Vec<Synced> = synced()
            .into_iter()
            .filter(|s| matches!(s, Synced::Dir(p) | Synced::File(p) if p.starts_with(&root)))
            .collect();
        let staging = PathBuf::from(format!("{}#1", file.display()));
        assert_eq!(
            ours,
            vec![
                Synced::Dir(root.clone()),
                Synced::File(staging),
                Synced::Dir(root.join("manifest")),
            ]
        );
        let again = disk
            .put_opts(&at, PutPayload::from_static(b"two"), create)
            .await
            .unwrap_err();
        assert!(
            matches!(again, object_store::Error::AlreadyExists { .. }),
            "{again}"
        );
        assert_eq!(disk.get(&at).await.unwrap().bytes().await.unwrap(), "one");
        let listed: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(disk.list(None))
            .await
            .unwrap();
        assert_eq!(listed.len(), 1, "no staging leftovers listed: {listed:?}");
    }
}
