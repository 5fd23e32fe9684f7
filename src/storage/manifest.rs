//! The manifest: the single source of truth for what is in storage.
//!
//! Every change writes a new object `manifest/<version:020>.json` with a
//! conditional create, so two writers can never both commit version N: the
//! loser gets [`StorageError::AlreadyExists`]. Objects are never
//! overwritten. Each version carries the [`CommitId`] of the attempt that
//! wrote it, so a writer whose create was answered ambiguously (an error
//! after the object was written, or "already exists" for its own retried
//! create) can read the version back and tell whether it is its own.
//!
//! The newest version that decodes wins at load ([`Loaded`]): a newer one
//! that does not (empty or cut short by a power loss, a flipped bit) is
//! skipped and reported. That is safe because the log segments a version
//! covers are deleted only after its commit returned, durable: the
//! version below it plus the log replayed from its offset hold everything.
//! Older versions are deleted after a while.
//!
//! File format: `{"format": "streamdb.manifest/1", "crc32": C, "body": "..."}`
//! where `body` is the manifest's JSON as a string and `C` its CRC-32.

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use super::chunk_meta::ChunkMeta;
use super::naming::CommitId;
use super::store::{StorageError, Store};
use crate::model::{DeletePredicate, Writers};

const FORMAT: &str = "streamdb.manifest/1";
const DIR: &str = "manifest";
/// Old manifest versions kept around for debugging and point-in-time reads.
const KEEP_VERSIONS: u64 = 10;

/// How far a `--source` consumer has read its remote stream: the remote's
/// next offset after the last batch ingested from it. Logged with the batch
/// itself and carried into the manifest once the batch is flushed, so the
/// position is exactly as durable as the data.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SourceCheckpoint {
    pub source: String,
    pub offset: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub version: u64,
    /// Every stream record before this offset is in `chunks`.
    pub stream_offset: u64,
    pub next_chunk_id: u64,
    pub chunks: Vec<ChunkMeta>,
    /// The series catalog snapshot covering every series in `chunks`.
    pub catalog: Option<String>,
    pub catalog_series: u64,
    /// Unix micros of the commit.
    pub committed_at: i64,
    /// The `--source` position covered by `chunks` (see [`SourceCheckpoint`]).
    #[serde(default)]
    pub source_checkpoint: Option<SourceCheckpoint>,
    /// The `metrics` stream's exactly-once writers (idempotent producers,
    /// `Stream-Seq`) as of `stream_offset`; the log records after it carry
    /// the rest.
    #[serde(default, skip_serializing_if = "is_default")]
    pub writers: Writers,
    /// Files this manifest no longer references (merged by compaction or
    /// expired by retention), kept until queries that started on an older
    /// version are done, then deleted.
    #[serde(default)]
    pub garbage: Vec<Garbage>,
    /// The node that committed this version, on a shared object store:
    /// `stream_offset` counts records of that node's local stream log.
    #[serde(default)]
    pub writer: Option<String>,
    /// The commit attempt that wrote this version (absent in versions
    /// written before commit ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<CommitId>,
    /// Deletes logged before `stream_offset` that some chunk may still
    /// hold points of (see [`LoggedDelete`]), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deletes: Vec<LoggedDelete>,
}

/// A `DELETE` carried from the log into the manifest: it removes the
/// points it matches from every chunk whose rows were all logged before
/// it (`ChunkMeta::last_offset < offset`) and that was not rewritten with
/// it applied (`ChunkMeta::deletes_applied < offset`). Compaction applies
/// it physically; once no chunk is left that it applies to, it goes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LoggedDelete {
    /// The delete's own log offset.
    pub offset: u64,
    pub predicate: DeletePredicate,
}

fn is_default(w: &Writers) -> bool {
    *w == Writers::default()
}

/// A file dropped from the manifest, and when (Unix micros).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Garbage {
    pub path: String,
    pub since: i64,
}

impl Manifest {
    pub fn rows(&self) -> u64 {
        self.chunks.iter().map(|c| c.rows).sum()
    }

    pub fn bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.bytes).sum()
    }

    /// The chunks of each hour partition, oldest partition first.
    pub fn partitions(&self) -> std::collections::BTreeMap<i64, Vec<&ChunkMeta>> {
        let mut parts: std::collections::BTreeMap<i64, Vec<&ChunkMeta>> = Default::default();
        for c in &self.chunks {
            parts.entry(c.partition()).or_default().push(c);
        }
        parts
    }
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    format: String,
    crc32: u32,
    body: String,
}

fn version_path(version: u64) -> Path {
    Path::from(format!("{DIR}/{version:020}.json"))
}

fn parse_version(path: &Path) -> Option<u64> {
    let name = path.filename()?.strip_suffix(".json")?;
    (name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit())).then(|| name.parse().ok())?
}

pub fn encode(m: &Manifest) -> Result<Bytes, StorageError> {
    let json = |what| move |source| StorageError::Json { what, source };
    let body = serde_json::to_string(m).map_err(json("manifest"))?;
    let env = Envelope {
        format: FORMAT.into(),
        crc32: crc32fast::hash(body.as_bytes()),
        body,
    };
    Ok(Bytes::from(
        serde_json::to_vec(&env).map_err(json("manifest envelope"))?,
    ))
}

pub fn decode(path: &str, bytes: &[u8]) -> Result<Manifest, StorageError> {
    let corrupt = |why: String| StorageError::Corrupt {
        path: path.into(),
        why,
    };
    let env: Envelope = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    if env.format != FORMAT {
        return Err(corrupt(format!("unknown manifest format {:?}", env.format)));
    }
    if crc32fast::hash(env.body.as_bytes()) != env.crc32 {
        return Err(corrupt("checksum mismatch".into()));
    }
    serde_json::from_str(&env.body).map_err(|e| corrupt(e.to_string()))
}

/// A manifest version that exists but does not decode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DamagedVersion {
    pub version: u64,
    pub path: String,
    /// What is wrong with it.
    pub error: String,
}

/// What [`ManifestStore::load_latest`] found: the newest version that
/// decodes, and the newer ones that did not (newest first).
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub manifest: Manifest,
    pub skipped: Vec<DamagedVersion>,
}

impl Loaded {
    /// The newest version present, damaged or not: the next commit must
    /// create a version above it.
    pub fn newest_present(&self) -> u64 {
        self.skipped
            .iter()
            .map(|d| d.version)
            .fold(self.manifest.version, u64::max)
    }
}

/// Loads and commits manifest versions.
pub struct ManifestStore {
    store: Store,
}

impl ManifestStore {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    pub fn path_of(version: u64) -> Path {
        version_path(version)
    }

    /// The newest committed manifest that decodes, or an empty version 0
    /// if there is none at all. Fails, naming them, if versions exist but
    /// none decodes: starting empty would hide every row.
    pub async fn load_latest(&self) -> Result<Loaded, StorageError> {
        let listed = self.store.list(&Path::from(DIR)).await?;
        let mut versions: Vec<u64> = listed
            .iter()
            .filter_map(|(p, _)| parse_version(p))
            .collect();
        versions.sort_unstable_by(|a, b| b.cmp(a));
        let mut skipped = Vec::new();
        for version in versions {
            match self.load(version).await {
                Ok(manifest) => return Ok(Loaded { manifest, skipped }),
                Err(StorageError::Corrupt { path, why }) => skipped.push(DamagedVersion {
                    version,
                    path,
                    error: why,
                }),
                Err(e) => return Err(e),
            }
        }
        // The only version is the first one ever written, damaged: a
        // create that never became durable (a power loss), with no commit
        // after it. What is left is the empty start (version 0), which the
        // stream log replays from its beginning; startup still refuses if
        // the log no longer reaches back that far, or if another node may
        // have written it (a shared store). More damaged versions than
        // that were durable once: refused below, never an empty start.
        if skipped.len() == 1 && skipped[0].version == 1 {
            return Ok(Loaded {
                manifest: Manifest::default(),
                skipped,
            });
        }
        match skipped.first() {
            None => Ok(Loaded::default()),
            Some(newest) => Err(StorageError::Corrupt {
                path: newest.path.clone(),
                why: format!(
                    "{} (and the {} older manifest version(s) kept do not decode either: restore manifest/ from a backup)",
                    newest.error,
                    skipped.len() - 1
                ),
            }),
        }
    }

    /// Reads and decodes manifest `version`.
    pub async fn load(&self, version: u64) -> Result<Manifest, StorageError> {
        let path = version_path(version);
        let m = decode(path.as_ref(), &self.store.get(&path).await?)?;
        if m.version != version {
            return Err(StorageError::Corrupt {
                path: path.to_string(),
                why: format!("holds version {}", m.version),
            });
        }
        Ok(m)
    }

    /// Commits `next` as version `next.version` (the caller sets it, with
    /// `committed_at` and `commit`). Fails with `AlreadyExists` if that
    /// version exists, whoever wrote it.
    pub async fn commit(&self, next: Manifest) -> Result<Arc<Manifest>, StorageError> {
        self.store
            .put_new(&version_path(next.version), encode(&next)?)
            .await?;
        if next.version > KEEP_VERSIONS {
            // Best effort: a leftover old version is harmless.
            let _ = self
                .store
                .delete(&version_path(next.version - KEEP_VERSIONS))
                .await;
        }
        Ok(Arc::new(next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn versions_commit_in_order_and_a_second_writer_is_fenced() {
        let dir = tempfile::tempdir().unwrap();
        let ms = ManifestStore::new(Store::local(dir.path()).unwrap());
        let v0 = ms.load_latest().await.unwrap();
        assert_eq!((v0.manifest.version, v0.skipped.len()), (0, 0));
        let v1 = ms
            .commit(Manifest {
                version: 1,
                stream_offset: 5,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(v1.version, 1);
        // A stale writer that also read v0 cannot commit over v1.
        let err = ms
            .commit(Manifest {
                version: 1,
                stream_offset: 9,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::AlreadyExists { .. }), "{err}");
        let loaded = ms.load_latest().await.unwrap().manifest;
        assert_eq!((loaded.version, loaded.stream_offset), (1, 5));
    }

    #[test]
    fn checksum_catches_edits() {
        let bytes = encode(&Manifest {
            version: 3,
            stream_offset: 7,
            ..Default::default()
        })
        .unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        assert_eq!(decode("m", text.as_bytes()).unwrap().stream_offset, 7);
        let edited = text.replace("stream_offset\\\":7", "stream_offset\\\":8");
        assert_ne!(edited, text);
        assert!(matches!(
            decode("m", edited.as_bytes()),
            Err(StorageError::Corrupt { .. })
        ));
    }

    #[test]
    fn reads_a_version_1_file_written_by_an_earlier_build() {
        // Written by the first release; must keep loading.
        let old = r#"{"format":"streamdb.manifest/1","crc32":CRC,"body":BODY}"#;
        let quoted = |b: &str| serde_json::to_string(b).unwrap();
        let body = r#"{"version":2,"stream_offset":10,"next_chunk_id":3,"chunks":[{"id":1,"path":"chunks/2024/01/15/00/chunk_0000000000000001.arrow","min_time":1,"max_time":2,"rows":3,"bytes":4,"min_series":5,"max_series":6,"series_count":2}],"catalog":"catalog/series_0000000000000002.arrow","catalog_series":2,"committed_at":0}"#;
        let text = old
            .replace("CRC", &crc32fast::hash(body.as_bytes()).to_string())
            .replace("BODY", &quoted(body));
        let m = decode("m", text.as_bytes()).unwrap();
        assert_eq!(
            (m.version, m.stream_offset, m.chunks.len(), m.chunks[0].rows),
            (2, 10, 1, 3)
        );
    }

    #[tokio::test]
    async fn a_damaged_newest_version_is_skipped_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::local(dir.path()).unwrap();
        let ms = ManifestStore::new(store.clone());
        for version in 1..=3 {
            ms.commit(Manifest {
                version,
                stream_offset: version * 10,
                ..Default::default()
            })
            .await
            .unwrap();
        }
        let torn = |v: u64, bytes: &'static [u8]| {
            std::fs::write(dir.path().join(version_path(v).as_ref()), bytes).unwrap()
        };
        torn(3, b"");
        torn(2, b"{\"format\":\"streamdb.manifest/1\",\"crc");
        let loaded = ms.load_latest().await.unwrap();
        assert_eq!(loaded.manifest.stream_offset, 10);
        let skipped: Vec<u64> = loaded.skipped.iter().map(|d| d.version).collect();
        assert_eq!(skipped, vec![3, 2]);
        assert_eq!(loaded.newest_present(), 3);
        assert!(
            loaded.skipped[0].error.contains("EOF"),
            "{:?}",
            loaded.skipped
        );
        // None decodes: an error naming the newest, never an empty start.
        torn(1, b"x");
        let err = ms.load_latest().await.unwrap_err();
        assert!(
            err.to_string()
                .contains("manifest/00000000000000000003.json"),
            "{err}"
        );
    }
}
