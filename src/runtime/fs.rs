//! Durable steps on local files, shared by every layer that writes to the
//! data directory (the stream log, the local object store, the node's
//! identity files).
//!
//! A file survives a power loss only once its contents are fsynced *and*
//! the directory entry naming it is: a new directory is itself an entry of
//! its parent, so creating `chunks/2024/01/15/00/` must fsync `chunks/2024/01/15/`,
//! `chunks/2024/01/` and so on up to the first directory that already
//! existed. [`create_dir_all_synced`] does that; [`sync_dir`] and
//! [`sync_file`] are the single fsync calls everything else goes through.
//!
//! Under `cfg(test)` every fsync is also recorded ([`synced`]), so tests
//! can check that what a power loss could take was made durable.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Fsyncs the directory `dir`: the entries created in it become durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()?;
    record::note(Synced::Dir(dir.to_path_buf()));
    Ok(())
}

/// Fsyncs `file`, opened at `path` (the path is what the test record
/// shows).
pub fn sync_file(file: &File, path: &Path) -> io::Result<()> {
    file.sync_all()?;
    record::note(Synced::File(path.to_path_buf()));
    Ok(())
}

/// Creates `dir` and its missing ancestors, fsyncing each new directory's
/// parent once the directory exists, from the top down.
pub fn create_dir_all_synced(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.as_os_str().is_empty() && !at.is_dir() {
        missing.push(at);
        match at.parent() {
            Some(parent) => at = parent,
            None => break,
        }
    }
    for new in missing.into_iter().rev() {
        match std::fs::create_dir(new) {
            Ok(()) => {}
            // Another thread created it meanwhile: its parent still needs
            // the fsync, which is harmless to repeat.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && new.is_dir() => {}
            Err(e) => return Err(e),
        }
        sync_dir(parent_of(new))?;
    }
    Ok(())
}

/// Writes `bytes` to `path` so that after a crash `path` holds either its
/// old contents or all of `bytes`: a synced temporary file renamed over
/// it, then the directory synced.
pub fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let dir = parent_of(path);
    create_dir_all_synced(dir)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    sync_file(&file, &tmp)?;
    std::fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// The directory holding `path` (`.` for a bare relative name).
pub fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// One fsync, as the test record keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Synced {
    Dir(PathBuf),
    File(PathBuf),
}

/// Every fsync made so far by this test process (all tests share it, so
/// look only for paths of your own temporary directory), paths made
/// absolute and free of symlinks.
#[cfg(test)]
pub fn synced() -> Vec<Synced> {
    record::LOG.lock().clone()
}

#[cfg(test)]
mod record {
    use super::Synced;

    pub(super) static LOG: parking_lot::Mutex<Vec<Synced>> = parking_lot::Mutex::new(Vec::new());

    pub(super) fn note(s: Synced) {
        let real = |p: std::path::PathBuf| std::fs::canonicalize(&p).unwrap_or(p);
        let s = match s {
            Synced::Dir(p) => Synced::Dir(real(p)),
            // A file may be renamed right after its fsync: resolve its
            // directory, keep its name.
            Synced::File(p) => {
                let name = p.file_name().map(|n| n.to_owned()).unwrap_or_default();
                Synced::File(real(super::parent_of(&p).to_path_buf()).join(name))
            }
        };
        LOG.lock().push(s);
    }
}

#[cfg(not(test))]
mod record {
    #[inline(always)]
    pub(super) fn note(_: super::Synced) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_directories_are_synced_in_their_parents_top_down() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path().canonicalize().unwrap();
        let deep = root.join("a/b/c");
        create_dir_all_synced(&deep).unwrap();
        assert!(deep.is_dir());
        let ours: Vec<Synced> = synced()
            .into_iter()
            .filter(|s| matches!(s, Synced::Dir(p) if p.starts_with(&root)))
            .collect();
        let want = [root.clone(), root.join("a"), root.join("a/b")];
        assert_eq!(ours, want.map(Synced::Dir).to_vec());
        // Nothing new: nothing synced.
        create_dir_all_synced(&deep).unwrap();
        let again = synced()
            .into_iter()
            .filter(|s| matches!(s, Synced::Dir(p) if p.starts_with(&root)))
            .count();
        assert_eq!(again, 3);
    }

    #[test]
    fn a_synced_write_replaces_the_file_whole() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("x/epoch");
        write_synced(&file, b"1").unwrap();
        write_synced(&file, b"22").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"22");
        assert!(!root.path().join("x/epoch.tmp").exists());
    }
}
