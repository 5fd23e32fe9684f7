//! A simulated power loss of the local files under a directory (tests
//! only): what the disk would still hold after the power went out.
//!
//! [`PowerLoss::watch`] starts tracking a directory tree; everything in it
//! then counts as durable. From there `runtime::fs` reports every fsync:
//! a file's synced length (by path; a hard link or rename made through
//! `runtime::fs` carries it to the new name) and, for a directory, the
//! entries it held when fsynced. [`PowerLoss::cut`] then does to the tree
//! what a power loss may do under POSIX rules:
//! - an entry its directory never fsynced is gone (a new file, a new
//!   directory, with everything under it);
//! - a file keeps its synced length, or (torn) any length between that and
//!   what was written, as the caller's `tear` decides.
//!
//! Deleting is treated as durable at once (a deleted file does not come
//! back), and a rename over an existing name keeps the new file: both are
//! kinder than a real disk, and said so in docs/FAULTS.md.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

/// What one watched tree has made durable since it was watched.
#[derive(Debug)]
struct Watch {
    root: PathBuf,
    /// Synced length of each file, by path.
    files: HashMap<PathBuf, u64>,
    /// Entries of each directory at its last fsync.
    dirs: HashMap<PathBuf, BTreeSet<OsString>>,
}

static WATCHED: Mutex<Vec<Arc<Mutex<Watch>>>> = Mutex::new(Vec::new());

/// The tracker of one directory tree; stops watching when dropped.
pub struct PowerLoss(Arc<Mutex<Watch>>);

/// What a [`PowerLoss::cut`] did.
#[derive(Debug, Default, Clone)]
pub struct Cut {
    /// Files cut short: (path, length before, length after).
    pub truncated: Vec<(PathBuf, u64, u64)>,
    /// Entries removed because their directory never synced them.
    pub removed: Vec<PathBuf>,
}

impl PowerLoss {
    /// Watches `root` (which must exist): what it holds now is durable.
    pub fn watch(root: &Path) -> io::Result<Self> {
        let root = root.canonicalize()?;
        let mut watch = Watch {
            root: root.clone(),
            files: HashMap::new(),
            dirs: HashMap::new(),
        };
        baseline(&root, &mut watch)?;
        let watch = Arc::new(Mutex::new(watch));
        WATCHED.lock().push(watch.clone());
        Ok(Self(watch))
    }

    /// The power goes out: see the module docs. `tear(path, synced,
    /// written)` picks the length a file keeps, in `synced..=written`.
    /// Afterwards what is left is the new durable state.
    pub fn cut(&self, tear: &mut dyn FnMut(&Path, u64, u64) -> u64) -> io::Result<Cut> {
        let mut watch = self.0.lock();
        let mut cut = Cut::default();
        let root = watch.root.clone();
        cut_dir(&root, &watch, tear, &mut cut)?;
        watch.files.clear();
        watch.dirs.clear();
        baseline(&root, &mut watch)?;
        Ok(cut)
    }
}

impl Drop for PowerLoss {
    fn drop(&mut self) {
        WATCHED.lock().retain(|w| !Arc::ptr_eq(w, &self.0));
    }
}

/// Records everything under `dir` as durable.
fn baseline(dir: &Path, watch: &mut Watch) -> io::Result<()> {
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        names.insert(entry.file_name());
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            baseline(&path, watch)?;
        } else {
            watch.files.insert(path, entry.metadata()?.len());
        }
    }
    watch.dirs.insert(dir.to_path_buf(), names);
    Ok(())
}

fn cut_dir(
    dir: &Path,
    watch: &Watch,
    tear: &mut dyn FnMut(&Path, u64, u64) -> u64,
    cut: &mut Cut,
) -> io::Result<()> {
    let durable = watch.dirs.get(dir);
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let is_dir = entry.file_type()?.is_dir();
        if !durable.is_some_and(|names| names.contains(&entry.file_name())) {
            match is_dir {
                true => std::fs::remove_dir_all(&path)?,
                false => std::fs::remove_file(&path)?,
            }
            cut.removed.push(path);
        } else if is_dir {
            cut_dir(&path, watch, tear, cut)?;
        } else {
            let written = entry.metadata()?.len();
            let synced = watch.files.get(&path).copied().unwrap_or(0).min(written);
            let keep = tear(&path, synced, written).clamp(synced, written);
            if keep < written {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)?
                    .set_len(keep)?;
                cut.truncated.push((path, written, keep));
            }
        }
    }
    Ok(())
}

/// The watches `path` lies under.
fn watching(path: &Path) -> Vec<Arc<Mutex<Watch>>> {
    WATCHED
        .lock()
        .iter()
        .filter(|w| path.starts_with(&w.lock().root))
        .cloned()
        .collect()
}

/// `file` (absolute, free of symlinks) was fsynced at `len` bytes.
pub(super) fn file_synced(file: &Path, len: u64) {
    for w in watching(file) {
        w.lock().files.insert(file.to_path_buf(), len);
    }
}

/// `dir` (absolute, free of symlinks) was fsynced: its entries now are
/// durable.
pub(super) fn dir_synced(dir: &Path) {
    let watches = watching(dir);
    if watches.is_empty() {
        return;
    }
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    let names: BTreeSet<OsString> = read.flatten().map(|e| e.file_name()).collect();
    for w in watches {
        w.lock().dirs.insert(dir.to_path_buf(), names.clone());
    }
}

/// `to` now names the file `from` names (a hard link, or a rename): it
/// has the same synced contents.
pub(super) fn linked(from: &Path, to: &Path) {
    for w in watching(to) {
        let mut w = w.lock();
        if let Some(len) = w.files.get(from).copied() {
            w.files.insert(to.to_path_buf(), len);
        } else {
            w.files.remove(to);
        }
    }
}
