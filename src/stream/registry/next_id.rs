//! The next stream id, kept in `<dir>/next-id`. Ids are never reused: an
//! id names a stream's directory and is in its ETags, so a stream created
//! after the newest one was deleted must not get the deleted one's id (a
//! cache would answer the new stream's reads with the old one's data).
//! The directories left on disk cannot tell, so the counter is persisted
//! (a synced temporary file renamed into place) before an id is used.
//!
//! A leaf of `registry`.

use std::path::Path;

use crate::runtime::fs::write_synced;

pub(super) const FILE: &str = "next-id";

/// The persisted next id (`None` before the first create).
pub(super) fn load(dir: &Path) -> Result<Option<u64>, String> {
    let path = dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map(Some).map_err(|_| {
            format!(
                "{} does not hold a stream id ({text:?}); run `streamdb repair --data-dir <data dir>` to rebuild it",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

pub(super) fn store(dir: &Path, next: u64) -> std::io::Result<()> {
    write_synced(&dir.join(FILE), format!("{next}\n").as_bytes())
}

/// One past the largest id any entry of `dir` is named after, set-aside
/// and deleted ones included (`<id:016x>` and `<id:016x>.<anything>`).
pub(super) fn after_entries(dir: &Path) -> std::io::Result<u64> {
    let mut next = 1;
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name().to_string_lossy().into_owned();
        let hex = name.split('.').next().unwrap_or_default();
        if hex.len() == 16 {
            if let Ok(id) = u64::from_str_radix(hex, 16) {
                next = next.max(id.saturating_add(1));
            }
        }
    }
    Ok(next)
}
