//! What every chunk file carries whatever its format: the [`ChunkMeta`]
//! the manifest and the planner keep, its path (named in `naming`), the
//! hour partition, and the footer entries (format version, time and value
//! ranges, rows, series covered) both `chunk` (Arrow IPC) and `compacted`
//! (Parquet) write and check.
//!
//! A leaf of `storage`: may depend on `storage::store`, `storage::naming`
//! and `model` only.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, Float64Array, RecordBatch, TimestampMicrosecondArray, UInt64Array};
use serde::{Deserialize, Serialize};

use super::naming::{chunk_id_of_path, chunk_path, WriterEpoch};
use super::store::StorageError;
#[cfg(test)]
use crate::model::point_schema;

const FORMAT: &str = "streamdb.chunk/1";
/// A chunk never spans an hour boundary: the flusher cuts partitions here.
pub const PARTITION_MICROS: i64 = 3_600_000_000;

/// What the manifest and the query planner know of a chunk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChunkMeta {
    pub id: u64,
    pub path: String,
    pub min_time: i64,
    pub max_time: i64,
    pub rows: u64,
    pub bytes: u64,
    pub min_series: u64,
    pub max_series: u64,
    pub series_count: u64,
    /// The highest log offset whose rows this chunk holds: which of two
    /// chunks holding one (series, time) has the later value. Absent in
    /// manifests written before it; such chunks rank below every chunk
    /// that has it, then by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_offset: Option<u64>,
    /// Every delete logged at or before this offset that applied to the
    /// chunk's rows was applied before it was written (see
    /// `LoggedDelete`). Absent: none was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletes_applied: Option<u64>,
    /// Sorted series ids covered; read from the footer, not kept in the
    /// manifest (it would grow with every chunk).
    #[serde(skip)]
    pub series: Arc<Vec<u64>>,
}

impl ChunkMeta {
    pub fn covers_series(&self, id: u64) -> bool {
        if id < self.min_series || id > self.max_series {
            return false;
        }
        self.series.is_empty() || self.series.binary_search(&id).is_ok()
    }

    /// Whether the delete logged at `offset` may still hold back rows of
    /// this chunk: every row is older than it and the chunk was not
    /// written with it applied.
    pub fn precedes_delete(&self, offset: u64) -> bool {
        self.last_offset.unwrap_or(0) < offset && self.deletes_applied.unwrap_or(0) < offset
    }

    /// Orders chunks by how recent their rows are (see `last_offset`).
    pub fn recency(&self) -> (u64, u64) {
        (self.last_offset.unwrap_or(0), self.id)
    }

    /// True for a file the compactor wrote (Parquet).
    pub fn is_compacted(&self) -> bool {
        self.path.ends_with(".parquet")
    }

    /// The hour partition the chunk belongs to.
    pub fn partition(&self) -> i64 {
        self.min_time.div_euclid(PARTITION_MICROS)
    }

    /// The chunk's id as written in its file name, for any path this crate
    /// produced, with or without its writer's epoch (garbage collection
    /// reads it off listed objects).
    pub fn id_of_path(path: &str) -> Option<u64> {
        chunk_id_of_path(path)
    }
}

/// What every chunk's footer records about its rows, and the manifest entry
/// built from it.
pub(super) struct Described {
    pub meta: ChunkMeta,
    pub footer: Vec<(&'static str, String)>,
}

/// Checks `batch` is a non-empty point batch and describes it for chunk
/// `id` of writer `epoch`, in the format with extension `ext`.
pub(super) fn describe(
    id: u64,
    epoch: WriterEpoch,
    batch: &RecordBatch,
    ext: &str,
) -> Result<Described, StorageError> {
    if batch.num_rows() == 0 {
        return Err(StorageError::BadChunk {
            id,
            why: "it is empty",
        });
    }
    let (series, times, values) = columns(batch).ok_or(StorageError::BadChunk {
        id,
        why: "the batch does not have the point schema",
    })?;
    let min_time = arrow::compute::min(times).expect("non-empty");
    let max_time = arrow::compute::max(times).expect("non-empty");
    let mut ids: Vec<u64> = series.values().to_vec();
    ids.dedup();
    let footer = vec![
        ("streamdb.format", FORMAT.to_string()),
        ("streamdb.min_time", min_time.to_string()),
        ("streamdb.max_time", max_time.to_string()),
        ("streamdb.rows", batch.num_rows().to_string()),
        ("streamdb.min_value", fmt_f64(arrow::compute::min(values))),
        ("streamdb.max_value", fmt_f64(arrow::compute::max(values))),
        (
            "streamdb.series",
            ids.iter()
                .map(|s| format!("{s:x}"))
                .collect::<Vec<_>>()
                .join(","),
        ),
    ];
    let meta = ChunkMeta {
        id,
        path: chunk_path(id, epoch, min_time, ext).to_string(),
        min_time,
        max_time,
        rows: batch.num_rows() as u64,
        bytes: 0,
        min_series: ids[0],
        max_series: *ids.last().expect("non-empty"),
        series_count: ids.len() as u64,
        last_offset: None,
        deletes_applied: None,
        series: Arc::new(ids),
    };
    Ok(Described { meta, footer })
}

fn fmt_f64(v: Option<f64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

fn columns(b: &RecordBatch) -> Option<(&UInt64Array, &TimestampMicrosecondArray, &Float64Array)> {
    Some((
        b.column(0).as_any().downcast_ref()?,
        b.column(1).as_any().downcast_ref()?,
        b.column(2).as_any().downcast_ref()?,
    ))
}

/// Parses the footer's `streamdb.series` entry.
pub(super) fn parse_series(
    path: &str,
    meta: &HashMap<String, String>,
) -> Result<Vec<u64>, StorageError> {
    let corrupt = |why: String| StorageError::Corrupt {
        path: path.to_string(),
        why,
    };
    check_format(path, meta)?;
    let list = meta
        .get("streamdb.series")
        .ok_or_else(|| corrupt("footer has no series list".into()))?;
    list.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| u64::from_str_radix(s, 16).map_err(|e| corrupt(format!("series id {s:?}: {e}"))))
        .collect()
}

pub(super) fn check_format(path: &str, meta: &HashMap<String, String>) -> Result<(), StorageError> {
    match meta.get("streamdb.format").map(String::as_str) {
        Some(FORMAT) => Ok(()),
        other => Err(StorageError::Corrupt {
            path: path.into(),
            why: format!("unknown chunk format {other:?}"),
        }),
    }
}

/// A point batch from its columns (tests of this module and its users).
#[cfg(test)]
pub(crate) fn test_points(series: Vec<u64>, times: Vec<i64>, values: Vec<f64>) -> RecordBatch {
    RecordBatch::try_new(
        point_schema(),
        vec![
            Arc::new(UInt64Array::from(series)),
            Arc::new(TimestampMicrosecondArray::from(times).with_timezone("UTC")),
            Arc::new(Float64Array::from(values)),
        ],
    )
    .unwrap()
}
