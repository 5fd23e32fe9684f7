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
//! can check that what a power loss could take was made durable, and told
//! to `runtime::power_loss`, which can then play the power loss itself.
//! Names given to synced files ([`hard_link`], and the rename inside
//! [`write_synced`]) go through here for the same reason.

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
    record::note_file(file, path);
    Ok(())
}

/// Fsyncs the contents of `file`, opened at `path`, not its metadata
/// (`fdatasync`: the stream log's group commit; its length is data).
pub fn sync_data(file: &File, path: &Path) -> io::Result<()> {
    file.sync_data()?;
    record::note_file(file, path);
    Ok(())
}

/// Gives the file at `from` the further name `to` (a hard link).
pub fn hard_link(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::hard_link(from, to)?;
    record::note_linked(from, to);
    Ok(())
}

/// Renames `from` to `to`, replacing what `to` named.
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::rename(from, to)?;
    record::note_linked(from, to);
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
    rename(&tmp, path)?;
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
    use crate::runtime::power_loss;
    use std::path::{Path, PathBuf};

    pub(super) static LOG: parking_lot::Mutex<Vec<Synced>> = parking_lot::Mutex::new(Vec::new());

    fn real(p: &Path) -> PathBuf {
        std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
    }

    /// `path` made absolute and free of symlinks in its directory, its
    /// name kept (a file may be renamed right after its fsync).
    fn real_file(p: &Path) -> PathBuf {
        let name = p.file_name().map(|n| n.to_owned()).unwrap_or_default();
        real(super::parent_of(p)).join(name)
    }

    pub(super) fn note(s: Synced) {
        let s = match s {
            Synced::Dir(p) => {
                let p = real(&p);
                power_loss::dir_synced(&p);
                Synced::Dir(p)
            }
            Synced::File(p) => Synced::File(real_file(&p)),
        };
        LOG.lock().push(s);
    }

    pub(super) fn note_file(file: &std::fs::File, path: &Path) {
        let real = real_file(path);
        if let Ok(meta) = file.metadata() {
            power_loss::file_synced(&real, meta.len());
        }
        LOG.lock().push(Synced::File(real));
    }

    pub(super) fn note_linked(from: &Path, to: &Path) {
        power_loss::linked(&real_file(from), &real_file(to));
    }
}

#[cfg(not(test))]
mod record {
    use std::path::Path;

    #[inline(always)]
    pub(super) fn note(_: super::Synced) {}

    #[inline(always)]
    pub(super) fn note_file(_: &std::fs::File, _: &Path) {}

    #[inline(always)]
    pub(super) fn note_linked(_: &Path, _: &Path) {}
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

    #[test]
    fn a_power_loss_keeps_only_what_was_synced() {
        use crate::runtime::power_loss::PowerLoss;
        use std::io::Write;
        let root = tempfile::tempdir().unwrap();
        let loss = PowerLoss::watch(root.path()).unwrap();
        let root = root.path().canonicalize().unwrap();
        // Named durably, 3 of its 6 bytes synced.
        create_dir_all_synced(&root.join("a")).unwrap();
        let path = root.join("a/log");
        let append = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap()
        };
        let mut f = append();
        f.write_all(b"abc").unwrap();
        sync_data(&f, &path).unwrap();
        sync_dir(&root.join("a")).unwrap();
        f.write_all(b"def").unwrap();
        // A synced file renamed to a name synced in its directory; then a
        // file its directory never synced, a directory its parent never
        // synced.
        write_synced(&root.join("a/epoch"), b"7").unwrap();
        std::fs::write(root.join("a/new"), b"x").unwrap();
        std::fs::create_dir(root.join("b")).unwrap();

        let cut = loss.cut(&mut |_, synced, _| synced).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"abc");
        assert_eq!(std::fs::read(root.join("a/epoch")).unwrap(), b"7");
        assert!(!root.join("a/new").exists());
        assert!(!root.join("b").exists());
        assert_eq!(cut.removed.len(), 2, "{cut:?}");
        // What a cut leaves is durable: a second one changes nothing.
        let again = loss.cut(&mut |_, synced, _| synced).unwrap();
        assert!(again.removed.is_empty() && again.truncated.is_empty());

        // Torn: a length between synced and written.
        let mut f = append();
        f.write_all(b"ghij").unwrap();
        let cut = loss.cut(&mut |_, synced, _| synced + 2).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"abcgh");
        assert_eq!(cut.truncated, vec![(path.clone(), 7, 5)]);
    }
}
