//! Chunk files: point batches (`series_id, time, value`) sorted by
//! `(series_id, time)`, one hour partition each, at
//! `chunks/YYYY/MM/DD/HH/chunk_<id>_e<epoch>.<ext>` (see `naming`), in one
//! of two formats:
//!
//! - `.arrow`: Arrow IPC with LZ4, what the flusher writes (cheap to write,
//!   since flushing competes with ingest);
//! - `.parquet`: what the compactor writes (`compacted`), about a third of
//!   the bytes. See docs/STORAGE.md for the measurements behind the choice.
//!
//! Either file's footer carries what pruning needs without reading the body
//! (format version, time range, value range, rows, the series covered), so
//! a reader can fetch just the file's tail.
//!
//! This file owns the Arrow format and the reads that dispatch on a chunk's
//! format; what both formats share (`ChunkMeta`, paths, footer entries)
//! lives in `chunk_meta`, so `compacted` need not import this file. May
//! depend on `chunk_meta`, `compacted`, `naming`, `store` and `model`.

use std::collections::HashMap;
use std::io::Cursor;

use arrow::array::RecordBatch;
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::{FileWriter, IpcWriteOptions};
use arrow::ipc::CompressionType;
use bytes::Bytes;
use object_store::path::Path;

use super::chunk_meta::{check_format, describe, parse_series, ChunkMeta, Described};
use super::compacted;
use super::naming::WriterEpoch;
use super::store::{StorageError, Store};
use crate::model::point_schema;

/// Rows per IPC record batch inside a chunk: the unit a reader decodes.
const ROWS_PER_BATCH: usize = 64 * 1024;

/// Encodes one sorted point batch as Arrow IPC chunk `id` of writer
/// `epoch` (the flush format). `batch` must use [`point_schema`] and be
/// sorted by `(series_id, time)`.
pub fn encode_chunk(
    id: u64,
    epoch: WriterEpoch,
    batch: &RecordBatch,
) -> Result<(Bytes, ChunkMeta), StorageError> {
    let Described { mut meta, footer } = describe(id, epoch, batch, "arrow")?;
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

/// Decodes a whole chunk file, of either format, into its record batches
/// (point schema).
pub fn decode_chunk(path: &str, bytes: Bytes) -> Result<Vec<RecordBatch>, StorageError> {
    if path.ends_with(".parquet") {
        return compacted::decode(path, bytes);
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
        return compacted::read_series(store, chunk).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::chunk_meta::test_points as batch;

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
        let (bytes, meta) = encode_chunk(42, WriterEpoch(7), &b).unwrap();
        assert_eq!(
            meta.path,
            "chunks/2024/01/14/23/chunk_0000000000000042_e0000000007.arrow"
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
        let (bytes, _) = encode_chunk(1, WriterEpoch(1), &b).unwrap();
        let cut = bytes.slice(..bytes.len() - 20);
        assert!(matches!(
            decode_chunk("x", cut.clone()),
            Err(StorageError::Corrupt { .. })
        ));
        assert!(decode_footer_series("x", &cut).is_err());
        assert!(decode_footer_series("x", b"short").is_err());
    }
}
