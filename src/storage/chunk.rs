//! Chunk files: point batches (`series_id, time, value`) sorted by
//! `(series_id, time)`, one hour partition each, at
//! `chunks/YYYY/MM/DD/HH/chunk_<id>.<ext>`, in one of two formats:
//!
//! - `.arrow`: Arrow IPC with LZ4, what the flusher writes (cheap to write,
//!   since flushing competes with ingest);
//! - `.parquet`: what the compactor writes (`compacted`), about a third of
//!   the bytes. See docs/STORAGE.md for the measurements behind the choice.
//!
//! Either file's footer carries what pruning needs without reading the body
//! (format version, time range, value range, rows, the series covered), so
//! a reader can fetch just the file's tail.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::Arc;

use arrow::array::{Array, Float64Array, RecordBatch, TimestampMicrosecondArray, UInt64Array};
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::{FileWriter, IpcWriteOptions};
use arrow::ipc::CompressionType;
use bytes::Bytes;
use chrono::{DateTime, Datelike, Timelike, Utc};
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use super::store::{StorageError, Store};
use crate::model::point_schema;

const FORMAT: &str = "streamdb.chunk/1";
/// A chunk never spans an hour boundary: the flusher cuts partitions here.
pub const PARTITION_MICROS: i64 = 3_600_000_000;
/// Rows per IPC record batch inside a chunk: the unit a reader decodes.
const ROWS_PER_BATCH: usize = 64 * 1024;

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

    /// True for a file the compactor wrote (Parquet).
    pub fn is_compacted(&self) -> bool {
        self.path.ends_with(".parquet")
    }

    /// The hour partition the chunk belongs to.
    pub fn partition(&self) -> i64 {
        self.min_time.div_euclid(PARTITION_MICROS)
    }

    /// The chunk's id as written in its file name, for any path this module
    /// produced (garbage collection reads it off listed objects).
    pub fn id_of_path(path: &str) -> Option<u64> {
        let name = path.rsplit('/').next()?.strip_prefix("chunk_")?;
        let digits = name.split('.').next()?;
        (digits.len() == 16).then(|| digits.parse().ok())?
    }
}

/// `chunks/YYYY/MM/DD/HH/chunk_<id>.<ext>` for the hour holding `time`.
pub fn chunk_path(id: u64, time: i64, ext: &str) -> Path {
    let t = DateTime::<Utc>::from_timestamp_micros(time).unwrap_or_default();
    Path::from(format!(
        "chunks/{:04}/{:02}/{:02}/{:02}/chunk_{id:016}.{ext}",
        t.year(),
        t.month(),
        t.day(),
        t.hour()
    ))
}

/// What every chunk's footer records about its rows, and the manifest entry
/// built from it.
pub(super) struct Described {
    pub meta: ChunkMeta,
    pub footer: Vec<(&'static str, String)>,
}

/// Checks `batch` is a non-empty point batch and describes it for a chunk
/// of id `id` in the format with extension `ext`.
pub(super) fn describe(id: u64, batch: &RecordBatch, ext: &str) -> Result<Described, StorageError> {
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
        path: chunk_path(id, min_time, ext).to_string(),
        min_time,
        max_time,
        rows: batch.num_rows() as u64,
        bytes: 0,
        min_series: ids[0],
        max_series: *ids.last().expect("non-empty"),
        series_count: ids.len() as u64,
        series: Arc::new(ids),
    };
    Ok(Described { meta, footer })
}

/// Encodes one sorted point batch as an Arrow IPC chunk file (the flush
/// format). `batch` must use [`point_schema`] and be sorted by
/// `(series_id, time)`.
pub fn encode_chunk(id: u64, batch: &RecordBatch) -> Result<(Bytes, ChunkMeta), StorageError> {
    let Described { mut meta, footer } = describe(id, batch, "arrow")?;
    let opts = IpcWriteOptions::default().try_with_compression(Some(CompressionType::LZ4_FRAME))?;
    let mut buf = Vec::with_capacity(batch.get_array_memory_size() / 2);
    {
        let mut w = FileWriter::try_new_with_options(&mut buf, &point_schema(), opts)?;
        let mut start = 0;
        while start < batch.num_rows() {
            let len = ROWS_PER_BATCH.min(batch.num_rows() - start);
            w.write(&batch.slice(start, len))?;
            start += len;
        }
        for (k, v) in footer {
            w.write_metadata(k, v);
        }
        w.finish()?;
    }
    meta.bytes = buf.len() as u64;
    Ok((Bytes::from(buf), meta))
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

/// Decodes a whole chunk file, of either format, into its record batches
/// (point schema).
pub fn decode_chunk(path: &str, bytes: Bytes) -> Result<Vec<RecordBatch>, StorageError> {
    if path.ends_with(".parquet") {
        return super::compacted::decode(path, bytes);
    }
    let corrupt = |e: arrow::error::ArrowError| StorageError::Corrupt {
        path: path.to_string(),
        why: e.to_string(),
    };
    let reader = FileReader::try_new(Cursor::new(bytes), None).map_err(corrupt)?;
    check_format(path, reader.custom_metadata())?;
    if reader.schema() != point_schema() {
        return Err(StorageError::Corrupt {
            path: path.into(),
            why: format!("unexpected schema {:?}", reader.schema()),
        });
    }
    reader.map(|b| b.map_err(corrupt)).collect()
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

/// Reads the series list from an Arrow chunk's footer metadata (the file's
/// tail).
pub fn decode_footer_series(path: &str, tail: &[u8]) -> Result<Vec<u64>, StorageError> {
    let corrupt = |why: String| StorageError::Corrupt {
        path: path.to_string(),
        why,
    };
    let n = tail.len();
    if n < 10 || &tail[n - 6..] != b"ARROW1" {
        return Err(corrupt("missing Arrow IPC file trailer".into()));
    }
    let footer_len = i32::from_le_bytes(tail[n - 10..n - 6].try_into().expect("4 bytes"));
    let start = (n - 10).checked_sub(
        usize::try_from(footer_len).map_err(|_| corrupt("negative footer length".into()))?,
    );
    let start = start.ok_or_else(|| {
        corrupt(format!(
            "footer of {footer_len} bytes is longer than the tail read"
        ))
    })?;
    let footer =
        arrow::ipc::root_as_footer(&tail[start..n - 10]).map_err(|e| corrupt(e.to_string()))?;
    let meta: HashMap<String, String> = footer
        .custom_metadata()
        .map(|kv| {
            kv.iter()
                .filter_map(|e| Some((e.key()?.to_string(), e.value()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    parse_series(path, &meta)
}

/// Loads a chunk's series list with ranged reads of the file's tail.
pub async fn read_footer_series(
    store: &Store,
    chunk: &ChunkMeta,
) -> Result<Vec<u64>, StorageError> {
    if chunk.is_compacted() {
        return super::compacted::read_series(store, chunk).await;
    }
    let path = Path::from(chunk.path.as_str());
    let mut want = chunk.bytes.min(64 * 1024);
    loop {
        let tail = store
            .get_range(&path, chunk.bytes - want..chunk.bytes)
            .await?;
        match footer_len(&tail) {
            Some(need) if need + 10 > want && want < chunk.bytes => {
                want = (need + 10).min(chunk.bytes)
            }
            _ => return decode_footer_series(&chunk.path, &tail),
        }
    }
}

fn footer_len(tail: &[u8]) -> Option<u64> {
    let n = tail.len();
    (n >= 10)
        .then(|| i32::from_le_bytes(tail[n - 10..n - 6].try_into().expect("4 bytes")).max(0) as u64)
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

#[cfg(test)]
mod tests {
    use super::*;

    use super::test_points as batch;

    #[test]
    fn round_trip_with_footer() {
        let b = batch(
            vec![1, 1, 7],
            vec![
                1_705_276_800_000_000,
                1_705_276_801_000_000,
                1_705_276_799_000_000,
            ],
            vec![0.5, 1.5, -2.0],
        );
        let (bytes, meta) = encode_chunk(42, &b).unwrap();
        assert_eq!(
            meta.path,
            "chunks/2024/01/14/23/chunk_0000000000000042.arrow"
        );
        assert_eq!(
            (meta.min_time, meta.max_time, meta.rows),
            (1_705_276_799_000_000, 1_705_276_801_000_000, 3)
        );
        assert_eq!(
            (meta.min_series, meta.max_series, meta.series_count),
            (1, 7, 2)
        );
        assert_eq!(meta.bytes, bytes.len() as u64);
        let back = decode_chunk(&meta.path, bytes.clone()).unwrap();
        assert_eq!(
            arrow::compute::concat_batches(&point_schema(), &back).unwrap(),
            b
        );
        let tail = &bytes[bytes.len().saturating_sub(64 * 1024)..];
        assert_eq!(decode_footer_series(&meta.path, tail).unwrap(), vec![1, 7]);
        assert!(meta.covers_series(7) && !meta.covers_series(3) && !meta.covers_series(8));
    }

    #[test]
    fn damaged_files_are_errors() {
        let b = batch(vec![1], vec![0], vec![1.0]);
        let (bytes, _) = encode_chunk(1, &b).unwrap();
        let cut = bytes.slice(..bytes.len() - 20);
        assert!(matches!(
            decode_chunk("x", cut.clone()),
            Err(StorageError::Corrupt { .. })
        ));
        assert!(decode_footer_series("x", &cut).is_err());
        assert!(decode_footer_series("x", b"short").is_err());
    }
}
