//! The names of the objects a writer creates, and the ids that make them
//! unique to their writer.
//!
//! Every writer runs under a [`WriterEpoch`]: on a shared store the
//! lease's epoch, which no two lease holders ever share; on the data
//! directory's own disk a counter bumped at every start. Chunk and catalog
//! names carry the epoch, so a writer that lost its lease (cut off, clock
//! skewed, or a copy of a data directory with the same node id) can never
//! produce the name of an object a newer writer committed, whatever its
//! chunk-id counter or manifest version says. They are also written
//! create-only, so not even a bug could overwrite one.
//!
//! ```text
//! chunks/YYYY/MM/DD/HH/chunk_<id:016>_e<epoch:010>.<arrow|parquet>
//! catalog/series_<version:020>_e<epoch:010>_c<seq:010>.bin
//! ```
//!
//! Names written before epochs (`chunk_<id:016>.<ext>`,
//! `catalog/series_<version:020>.bin`) stay readable: readers follow the
//! paths manifests list, and the parsers here, which garbage collection
//! uses on listed objects, accept both.
//!
//! A leaf of `storage`: depends on nothing else of the crate.

use chrono::{DateTime, Datelike, Timelike, Utc};
use object_store::path::Path;
use serde::{Deserialize, Serialize};

/// Which writer incarnation created an object (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WriterEpoch(pub u64);

impl std::fmt::Display for WriterEpoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The id every manifest commit carries: its writer's epoch and the
/// attempt's number within it. A writer told that the version it tried
/// to create already exists reads it back and knows from this id whether
/// it is its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitId {
    pub epoch: WriterEpoch,
    pub seq: u64,
}

impl std::fmt::Display for CommitId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "epoch {} attempt {}", self.epoch, self.seq)
    }
}

/// `chunks/YYYY/MM/DD/HH/chunk_<id>_e<epoch>.<ext>` for the hour holding
/// `time`.
pub fn chunk_path(id: u64, epoch: WriterEpoch, time: i64, ext: &str) -> Path {
    let t = DateTime::<Utc>::from_timestamp_micros(time).unwrap_or_default();
    Path::from(format!(
        "chunks/{:04}/{:02}/{:02}/{:02}/chunk_{id:016}_e{:010}.{ext}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        epoch.0
    ))
}

/// The chunk id in a chunk's path, with or without an epoch.
pub fn chunk_id_of_path(path: &str) -> Option<u64> {
    let name = path.rsplit('/').next()?.strip_prefix("chunk_")?;
    let (stem, _ext) = name.split_once('.')?;
    let id = match stem.split_once("_e") {
        Some((id, epoch)) => digits(epoch, 10).and(Some(id))?,
        None => stem,
    };
    digits(id, 16)
}

/// `catalog/series_<version>_e<epoch>_c<seq>.bin`: the snapshot written
/// by commit attempt `commit` of manifest `version`.
pub fn catalog_path(version: u64, commit: CommitId) -> Path {
    Path::from(format!(
        "catalog/series_{version:020}_e{:010}_c{:010}.bin",
        commit.epoch.0, commit.seq
    ))
}

/// The manifest version in a catalog snapshot's path, with or without the
/// commit that wrote it.
pub fn catalog_version_of_path(path: &str) -> Option<u64> {
    let stem = path.strip_prefix("catalog/series_")?.strip_suffix(".bin")?;
    let version = match stem.split_once("_e") {
        Some((version, rest)) => {
            let (epoch, seq) = rest.split_once("_c")?;
            digits(epoch, 10).and(digits(seq, 10)).and(Some(version))?
        }
        None => stem,
    };
    digits(version, 20)
}

/// `s` as a number if it is exactly `len` decimal digits.
fn digits(s: &str, len: usize) -> Option<u64> {
    (s.len() == len && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_epoch_and_parse_back() {
        let t = 1_705_276_800_000_000; // 2024-01-15T00:00:00Z
        let p = chunk_path(42, WriterEpoch(3), t, "arrow");
        assert_eq!(
            p.as_ref(),
            "chunks/2024/01/15/00/chunk_0000000000000042_e0000000003.arrow"
        );
        assert_eq!(chunk_id_of_path(p.as_ref()), Some(42));
        let c = catalog_path(
            7,
            CommitId {
                epoch: WriterEpoch(3),
                seq: 12,
            },
        );
        assert_eq!(
            c.as_ref(),
            "catalog/series_00000000000000000007_e0000000003_c0000000012.bin"
        );
        assert_eq!(catalog_version_of_path(c.as_ref()), Some(7));
    }

    #[test]
    fn names_written_before_epochs_still_parse() {
        let old = "chunks/2024/01/15/00/chunk_0000000000000042.parquet";
        assert_eq!(chunk_id_of_path(old), Some(42));
        let old = "catalog/series_00000000000000000009.bin";
        assert_eq!(catalog_version_of_path(old), Some(9));
    }

    #[test]
    fn other_names_are_not_ours() {
        for p in [
            "chunks/2024/01/15/00/chunk_42.arrow",
            "chunks/2024/01/15/00/chunk_0000000000000042_e3.arrow",
            "chunks/2024/01/15/00/chunk_0000000000000042",
            "chunks/2024/01/15/00/notes.txt",
        ] {
            assert_eq!(chunk_id_of_path(p), None, "{p}");
        }
        for p in [
            "catalog/series_7.bin",
            "catalog/series_00000000000000000007_e0000000003.bin",
            "catalog/other.bin",
        ] {
            assert_eq!(catalog_version_of_path(p), None, "{p}");
        }
    }
}
