//! The manifest: the single source of truth for what is in storage.
//!
//! Every change writes a new object `manifest/<version:020>.json` with a
//! conditional create, so two writers can never both commit version N: the
//! loser gets [`StorageError::AlreadyExists`] and must stop (it is fenced
//! out). Objects are never overwritten. The newest version wins at load;
//! older ones are deleted after a while.
//!
//! File format: `{"format": "streamdb.manifest/1", "crc32": C, "body": "..."}`
//! where `body` is the manifest's JSON as a string and `C` its CRC-32.

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use super::chunk_meta::ChunkMeta;
use super::store::{StorageError, Store};
use crate::model::Writers;

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

    /// The newest committed manifest, or an empty version 0 if none exists.
    pub async fn load_latest(&self) -> Result<Manifest, StorageError> {
        let listed = self.store.list(&Path::from(DIR)).await?;
        let Some(latest) = listed.iter().filter_map(|(p, _)| parse_version(p)).max() else {
            return Ok(Manifest::default());
        };
        let path = version_path(latest);
        let m = decode(path.as_ref(), &self.store.get(&path).await?)?;
        if m.version != latest {
            return Err(StorageError::Corrupt {
                path: path.to_string(),
                why: format!("holds version {}", m.version),
            });
        }
        Ok(m)
    }

    /// Commits `next` as version `current.version + 1` (the caller sets
    /// `committed_at`). Fails with `AlreadyExists` if another writer got
    /// there first.
    pub async fn commit(
        &self,
        current: &Manifest,
        mut next: Manifest,
    ) -> Result<Arc<Manifest>, StorageError> {
        next.version = current.version + 1;
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
        assert_eq!(v0.version, 0);
        let v1 = ms
            .commit(
                &v0,
                Manifest {
                    stream_offset: 5,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(v1.version, 1);
        // A stale writer that also read v0 cannot commit over v1.
        let err = ms
            .commit(
                &v0,
                Manifest {
                    stream_offset: 9,
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::AlreadyExists { .. }), "{err}");
        let loaded = ms.load_latest().await.unwrap();
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
}
