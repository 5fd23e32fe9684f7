//! Compacted chunks: the Parquet format the compactor writes.
//!
//! Same rows and footer entries (`chunk_meta`) as a flushed Arrow chunk
//! (`chunk`), in fewer bytes: ZSTD over per-column encodings chosen for
//! time series, dictionary-coded series ids (a partition holds few series,
//! each in one sorted run), delta-coded times (regular intervals become a
//! few bits per point) and byte-stream-split values (the exponent bytes of
//! neighbouring floats compress together). docs/STORAGE.md has the
//! measurements.
//!
//! Row groups carry series-id statistics, so a reader that wants a few
//! series fetches only their row groups with range requests.
//!
//! May depend on `chunk_meta`, `naming`, `store` and `model` (not on
//! `chunk`, which dispatches reads here).

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::UInt64Type;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, TryStreamExt};
use object_store::path::Path;
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::arrow::{ArrowWriter, ParquetRecordBatchStreamBuilder};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::{KeyValue, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use super::chunk_meta::{check_format, describe, parse_series, ChunkMeta, Described};
use super::naming::WriterEpoch;
use super::store::{StorageError, Store};
use crate::model::{point_schema, POINT_SERIES_ID, POINT_TIME, POINT_VALUE};

/// Rows per row group: the unit a ranged read fetches. Small enough that a
/// few-series query skips most of a large partition, large enough that each
/// group's series dictionary stays a small share of it.
pub(super) const ROWS_PER_GROUP: usize = 256 * 1024;
/// Rows per decoded batch.
const BATCH_ROWS: usize = 64 * 1024;
const ZSTD_LEVEL: i32 = 3;

fn properties(footer: Vec<(&'static str, String)>) -> Result<WriterProperties, StorageError> {
    let zstd = ZstdLevel::try_new(ZSTD_LEVEL)?;
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(zstd))
        .set_max_row_group_row_count(Some(ROWS_PER_GROUP))
        .set_dictionary_enabled(false)
        .set_column_dictionary_enabled(ColumnPath::from(POINT_SERIES_ID), true)
        .set_column_encoding(ColumnPath::from(POINT_TIME), Encoding::DELTA_BINARY_PACKED)
        .set_column_encoding(ColumnPath::from(POINT_VALUE), Encoding::BYTE_STREAM_SPLIT)
        .set_key_value_metadata(Some(
            footer
                .into_iter()
                .map(|(k, v)| KeyValue::new(k.to_string(), v))
                .collect(),
        ))
        .build())
}

/// Encodes one sorted point batch as compacted chunk `id` of writer
/// `epoch`. `batch` must use [`point_schema`] and be sorted by
/// `(series_id, time)`.
pub fn encode(
    id: u64,
    epoch: WriterEpoch,
    batch: &RecordBatch,
) -> Result<(Bytes, ChunkMeta), StorageError> {
    let Described { mut meta, footer } = describe(id, epoch, batch, "parquet")?;
    let mut buf = Vec::with_capacity(batch.get_array_memory_size() / 8);
    let mut w = ArrowWriter::try_new(&mut buf, point_schema(), Some(properties(footer)?))?;
    w.write(batch)?;
    w.close()?;
    meta.bytes = buf.len() as u64;
    Ok((Bytes::from(buf), meta))
}

fn corrupt(path: &str) -> impl Fn(String) -> StorageError + '_ {
    move |why| StorageError::Corrupt {
        path: path.to_string(),
        why,
    }
}

fn footer_map(meta: &ParquetMetaData) -> HashMap<String, String> {
    meta.file_metadata()
        .key_value_metadata()
        .map(|kvs| {
            kvs.iter()
                .filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// Re-labels decoded batches with the exact point schema (the reader adds
/// the file's footer entries as schema metadata), checking the columns.
fn relabel(path: &str, batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>, StorageError> {
    let schema = point_schema();
    batches
        .into_iter()
        .map(|b| {
            RecordBatch::try_new(schema.clone(), b.columns().to_vec())
                .map_err(|e| corrupt(path)(format!("unexpected columns: {e}")))
        })
        .collect()
}

/// Decodes a whole compacted chunk.
pub fn decode(path: &str, bytes: Bytes) -> Result<Vec<RecordBatch>, StorageError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| corrupt(path)(e.to_string()))?;
    check_format(path, &footer_map(builder.metadata()))?;
    let reader = builder
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| corrupt(path)(e.to_string()))?;
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| corrupt(path)(e.to_string()))?;
    relabel(path, batches)
}

/// Range requests on one chunk file, for the async Parquet reader.
struct RangeReader {
    store: Store,
    path: Path,
    size: u64,
}

/// Bytes fetched with the first footer request: enough for the footer of
/// a chunk with thousands of series in one round trip.
const FOOTER_HINT: usize = 256 * 1024;

impl AsyncFileReader for RangeReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let meta = ParquetMetaDataReader::new()
                .with_prefetch_hint(Some(FOOTER_HINT))
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(meta))
        }
        .boxed()
    }
}

fn object_reader(store: &Store, chunk: &ChunkMeta) -> RangeReader {
    RangeReader {
        store: store.clone(),
        path: Path::from(chunk.path.as_str()),
        size: chunk.bytes,
    }
}

/// Loads a compacted chunk's series list from its footer (ranged reads).
pub async fn read_series(store: &Store, chunk: &ChunkMeta) -> Result<Vec<u64>, StorageError> {
    let meta = object_reader(store, chunk)
        .get_metadata(None)
        .await
        .map_err(|e| corrupt(&chunk.path)(e.to_string()))?;
    parse_series(&chunk.path, &footer_map(&meta))
}

/// Reads only the row groups that may hold one of `series`, with range
/// requests for the footer and those groups' column chunks.
pub async fn read_series_rows(
    store: &Store,
    chunk: &ChunkMeta,
    series: &BTreeSet<u64>,
) -> Result<Vec<RecordBatch>, StorageError> {
    let bad = corrupt(&chunk.path);
    let builder = ParquetRecordBatchStreamBuilder::new(object_reader(store, chunk))
        .await
        .map_err(|e| bad(e.to_string()))?;
    let meta = builder.metadata().clone();
    check_format(&chunk.path, &footer_map(&meta))?;
    let stats =
        StatisticsConverter::try_new(POINT_SERIES_ID, builder.schema(), builder.parquet_schema())
            .map_err(|e| bad(e.to_string()))?;
    let groups = meta.row_groups().iter();
    let mins = stats
        .row_group_mins(groups.clone())
        .map_err(|e| bad(e.to_string()))?;
    let maxs = stats
        .row_group_maxes(groups)
        .map_err(|e| bad(e.to_string()))?;
    let (mins, maxs) = (
        mins.as_primitive::<UInt64Type>(),
        maxs.as_primitive::<UInt64Type>(),
    );
    let wanted: Vec<usize> = (0..meta.num_row_groups())
        .filter(|&g| {
            // A group without statistics is read rather than guessed about.
            if mins.is_null(g) || maxs.is_null(g) {
                return true;
            }
            series.range(mins.value(g)..=maxs.value(g)).next().is_some()
        })
        .collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let batches: Vec<RecordBatch> = builder
        .with_row_groups(wanted)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| bad(e.to_string()))?
        .try_collect()
        .await
        .map_err(|e| bad(e.to_string()))?;
    relabel(&chunk.path, batches)
}

/// The row groups of a compacted chunk.
#[cfg(test)]
pub fn row_groups(bytes: Bytes) -> Result<usize, StorageError> {
    let b = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
    Ok(b.metadata().num_row_groups())
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;

    fn sorted_batch(series: u64, per_series: i64) -> RecordBatch {
        let mut ids = Vec::new();
        let mut times = Vec::new();
        let mut values = Vec::new();
        for s in 0..series {
            for i in 0..per_series {
                ids.push(s * 1000 + 7);
                times.push(1_705_276_800_000_000 + i * 10_000_000);
                values.push((s as f64) + (i as f64) / 100.0);
            }
        }
        crate::storage::chunk_meta::test_points(ids, times, values)
    }

    #[tokio::test]
    async fn round_trips_and_reads_only_the_wanted_row_groups() {
        // 8 series × 100k rows: 800k rows, so several row groups.
        let b = sorted_batch(8, 100_000);
        let (bytes, meta) = encode(9, WriterEpoch(2), &b).unwrap();
        assert_eq!(
            meta.path,
            "chunks/2024/01/15/00/chunk_0000000000000009_e0000000002.parquet"
        );
        assert!(meta.is_compacted());
        assert_eq!(meta.bytes, bytes.len() as u64);
        assert!(
            (meta.bytes as f64) < 0.25 * b.num_rows() as f64 * 24.0,
            "{} bytes for {} rows is no compression",
            meta.bytes,
            b.num_rows()
        );
        let all = decode(&meta.path, bytes.clone()).unwrap();
        assert_eq!(
            arrow::compute::concat_batches(&point_schema(), &all).unwrap(),
            b
        );
        let groups = row_groups(bytes.clone()).unwrap();
        assert_eq!(groups, 800_000usize.div_ceil(ROWS_PER_GROUP));

        let store = Store::new(Arc::new(InMemory::new()));
        store
            .put(&Path::from(meta.path.as_str()), bytes)
            .await
            .unwrap();
        assert_eq!(
            read_series(&store, &meta).await.unwrap(),
            (0..8).map(|s| s * 1000 + 7).collect::<Vec<_>>()
        );
        // Series 0 lives in the first row group only.
        let want: BTreeSet<u64> = [7].into();
        let got = read_series_rows(&store, &meta, &want).await.unwrap();
        let rows: usize = got.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, ROWS_PER_GROUP, "read just the first group");
        let ids = got[0].column(0).as_primitive::<UInt64Type>();
        assert_eq!(ids.value(0), 7);
        let none: BTreeSet<u64> = [3].into();
        assert!(read_series_rows(&store, &meta, &none)
            .await
            .unwrap()
            .is_empty());
    }

    #[test]
    fn damage_is_an_error() {
        let (bytes, meta) = encode(1, WriterEpoch(1), &sorted_batch(1, 10)).unwrap();
        let cut = bytes.slice(..bytes.len() - 9);
        assert!(matches!(
            decode(&meta.path, cut),
            Err(StorageError::Corrupt { .. })
        ));
    }
}
