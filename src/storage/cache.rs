//! [`ChunkReader`]: how queries read chunk files, through a bounded cache
//! of decoded chunks.
//!
//! Chunk files never change once written, so a decoded chunk can be kept
//! as long as memory allows: repeated queries over the same hours then
//! skip both the fetch from object storage and the decode. The cache is
//! bounded in bytes (`--chunk-cache-bytes`) and evicts the least recently
//! used chunk. A query that wants a few series of a compacted chunk not in
//! the cache fetches just their row groups with range requests, and the
//! whole chunk is loaded into the cache in the background for the queries
//! after it (a partial chunk could not serve them).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::RecordBatch;
use object_store::path::Path;
use parking_lot::Mutex;

use super::chunk::decode_chunk;
use super::chunk_meta::ChunkMeta;
use super::compacted;
use super::store::{StorageError, Store};

/// Decoded point batches of one chunk.
pub type Decoded = Arc<Vec<RecordBatch>>;

struct Entry {
    batches: Decoded,
    bytes: usize,
    used: u64,
}

#[derive(Default)]
struct Lru {
    entries: HashMap<String, Entry>,
    bytes: usize,
    tick: u64,
    /// Chunks being loaded in the background.
    loading: std::collections::HashSet<String>,
}

/// Cache counters, for status and `/metrics`.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct CacheStats {
    pub capacity_bytes: usize,
    pub bytes: usize,
    pub chunks: usize,
    pub hits: u64,
    pub misses: u64,
    pub ranged_reads: u64,
}

/// Reads chunks for queries.
pub struct ChunkReader {
    store: Store,
    capacity: usize,
    lru: Mutex<Lru>,
    hits: AtomicU64,
    misses: AtomicU64,
    ranged: AtomicU64,
}

impl std::fmt::Debug for ChunkReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChunkReader({:?})", self.stats())
    }
}

impl ChunkReader {
    /// A reader whose cache holds at most `capacity` bytes (0: no cache).
    pub fn new(store: Store, capacity: usize) -> Self {
        Self {
            store,
            capacity,
            lru: Mutex::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            ranged: AtomicU64::new(0),
        }
    }

    /// The chunk's point batches; with `series`, batches that hold at least
    /// those series' rows (callers still filter rows).
    pub async fn read(
        self: &Arc<Self>,
        chunk: &ChunkMeta,
        series: Option<&BTreeSet<u64>>,
    ) -> Result<Decoded, StorageError> {
        if let Some(hit) = self.lookup(&chunk.path) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(hit);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        if let Some(series) = series.filter(|s| narrow(chunk, s)) {
            self.ranged.fetch_add(1, Ordering::Relaxed);
            let rows = compacted::read_series_rows(&self.store, chunk, series).await?;
            self.load_in_background(chunk);
            return Ok(Arc::new(rows));
        }
        self.load(chunk).await
    }

    /// Starts loading the whole chunk into the cache, unless that is under
    /// way already or the cache is off.
    fn load_in_background(self: &Arc<Self>, chunk: &ChunkMeta) {
        if self.capacity == 0 || !self.lru.lock().loading.insert(chunk.path.clone()) {
            return;
        }
        let (reader, chunk) = (self.clone(), chunk.clone());
        tokio::spawn(async move {
            if let Err(e) = reader.load(&chunk).await {
                tracing::debug!(path = chunk.path, error = %e, "background chunk load failed");
            }
            reader.lru.lock().loading.remove(&chunk.path);
        });
    }

    /// Fetches and decodes the whole chunk, and caches it.
    async fn load(&self, chunk: &ChunkMeta) -> Result<Decoded, StorageError> {
        let bytes = self.store.get(&Path::from(chunk.path.as_str())).await?;
        let path = chunk.path.clone();
        let batches = tokio::task::spawn_blocking(move || decode_chunk(&path, bytes))
            .await
            .map_err(|source| StorageError::Join {
                task: "chunk decode",
                source,
            })??;
        let batches = Arc::new(batches);
        self.insert(&chunk.path, batches.clone());
        Ok(batches)
    }

    fn lookup(&self, path: &str) -> Option<Decoded> {
        let mut lru = self.lru.lock();
        lru.tick += 1;
        let tick = lru.tick;
        let e = lru.entries.get_mut(path)?;
        e.used = tick;
        Some(e.batches.clone())
    }

    /// False when the cache is turned off (`--chunk-cache-bytes 0`).
    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// Caches a chunk this server just wrote (flushed or compacted), so
    /// the first queries over fresh data need not fetch it back.
    pub fn insert(&self, path: &str, batches: Decoded) {
        let bytes: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
        if bytes > self.capacity {
            return;
        }
        let mut lru = self.lru.lock();
        lru.tick += 1;
        let used = lru.tick;
        if let Some(old) = lru.entries.insert(
            path.to_string(),
            Entry {
                batches,
                bytes,
                used,
            },
        ) {
            lru.bytes -= old.bytes;
        }
        lru.bytes += bytes;
        while lru.bytes > self.capacity {
            let Some(victim) = lru
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            let gone = lru.entries.remove(&victim).expect("just found");
            lru.bytes -= gone.bytes;
        }
    }

    /// Drops a chunk that no manifest references any more.
    pub fn forget(&self, path: &str) {
        let mut lru = self.lru.lock();
        if let Some(gone) = lru.entries.remove(path) {
            lru.bytes -= gone.bytes;
        }
    }

    pub fn stats(&self) -> CacheStats {
        let lru = self.lru.lock();
        CacheStats {
            capacity_bytes: self.capacity,
            bytes: lru.bytes,
            chunks: lru.entries.len(),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            ranged_reads: self.ranged.load(Ordering::Relaxed),
        }
    }
}

/// Whether a ranged read of some row groups is worth it: a compacted chunk
/// larger than one row group, of which the query wants a small share of
/// the series.
fn narrow(chunk: &ChunkMeta, series: &BTreeSet<u64>) -> bool {
    chunk.is_compacted()
        && chunk.rows > compacted::ROWS_PER_GROUP as u64
        && (series.len() as u64) * 4 <= chunk.series_count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{encode_chunk, WriterEpoch};
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn repeated_reads_hit_the_cache_and_it_stays_within_its_bound() {
        let store = Store::new(Arc::new(InMemory::new()));
        let mut metas = Vec::new();
        for id in 0..4u64 {
            let b = crate::storage::chunk_meta::test_points(
                vec![id; 1000],
                (0..1000).collect(),
                vec![1.0; 1000],
            );
            let (bytes, meta) = encode_chunk(id + 1, WriterEpoch(1), &b).unwrap();
            store
                .put(&Path::from(meta.path.as_str()), bytes)
                .await
                .unwrap();
            metas.push(meta);
        }
        let one = {
            let r = Arc::new(ChunkReader::new(store.clone(), usize::MAX));
            r.read(&metas[0], None).await.unwrap();
            r.stats().bytes
        };
        // Room for two decoded chunks.
        let r = Arc::new(ChunkReader::new(store.clone(), one * 2 + one / 2));
        let first = r.read(&metas[0], None).await.unwrap();
        let again = r.read(&metas[0], None).await.unwrap();
        assert!(Arc::ptr_eq(&first, &again), "second read is the cached one");
        assert_eq!((r.stats().hits, r.stats().misses), (1, 1));
        for m in &metas[1..] {
            r.read(m, None).await.unwrap();
        }
        let st = r.stats();
        assert_eq!((st.chunks, st.bytes), (2, one * 2));
        // The least recently used (chunks 0 and 1) went first.
        r.read(&metas[3], None).await.unwrap();
        assert_eq!(r.stats().hits, 2);
        r.read(&metas[0], None).await.unwrap();
        assert_eq!(r.stats().misses, 5);
        r.forget(&metas[0].path);
        assert_eq!(r.stats().chunks, 1);
    }

    #[tokio::test]
    async fn a_narrow_read_fetches_row_groups_then_the_chunk_is_cached() {
        let store = Store::new(Arc::new(InMemory::new()));
        // 8 series × 40k rows: more than one row group.
        let n = 40_000usize;
        let ids: Vec<u64> = (0..8u64)
            .flat_map(|s| std::iter::repeat_n(s + 1, n))
            .collect();
        let times: Vec<i64> = (0..8).flat_map(|_| 0..n as i64).collect();
        let b = crate::storage::chunk_meta::test_points(ids, times, vec![0.5; 8 * n]);
        let (bytes, meta) = compacted::encode(1, WriterEpoch(1), &b).unwrap();
        store
            .put(&Path::from(meta.path.as_str()), bytes)
            .await
            .unwrap();
        let r = Arc::new(ChunkReader::new(store, usize::MAX));
        let one: BTreeSet<u64> = [1].into();
        let got = r.read(&meta, Some(&one)).await.unwrap();
        let rows: usize = got.iter().map(|b| b.num_rows()).sum();
        assert!(rows < 8 * n, "only some row groups were read ({rows} rows)");
        assert_eq!(r.stats().ranged_reads, 1);
        for _ in 0..200 {
            if r.stats().chunks == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(r.stats().chunks, 1, "loaded in the background");
        let all = r.read(&meta, Some(&one)).await.unwrap();
        assert_eq!(all.iter().map(|b| b.num_rows()).sum::<usize>(), 8 * n);
        assert_eq!((r.stats().hits, r.stats().ranged_reads), (1, 1));
    }
}
