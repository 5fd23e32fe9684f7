//! Test support shared by the engine's and maintenance's tests: point
//! batches, what an engine holds, and the ledger of acknowledged points
//! every storage-fault test ends by checking (each readable exactly once).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{AsArray, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{
    DataType, Field, Float64Type, Schema, TimestampMicrosecondType, UInt64Type,
};

use super::{Engine, EngineConfig, ReadView};
use crate::runtime::Clock;
use crate::storage::faults::FaultyStore;
use crate::storage::Store;

/// 2024-01-15T00:00:00Z.
pub const T0: i64 = 1_705_276_800_000_000;

/// A stored row: (series, time, value bits).
pub type Row = (u64, i64, u64);

/// `n` points of metric `m<k>` for k in 0..series, one per second from `base`.
pub fn points(series: usize, n: usize, base: i64) -> RecordBatch {
    named_points("m", series, n, base)
}

/// [`points`] of metrics `<prefix><k>`: a new prefix brings new series (and
/// so a new catalog snapshot at the next commit).
pub fn named_points(prefix: &str, series: usize, n: usize, base: i64) -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("time", crate::model::time_type(), false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ]);
    let rows = series * n;
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(
                TimestampMicrosecondArray::from(
                    (0..rows)
                        .map(|i| base + (i / series) as i64 * 1_000_000)
                        .collect::<Vec<_>>(),
                )
                .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from(
                (0..rows)
                    .map(|i| format!("{prefix}{}", i % series))
                    .collect::<Vec<_>>(),
            )),
            Arc::new(Float64Array::from(
                (0..rows)
                    .map(|i| (base + i as i64) as f64)
                    .collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap()
}

/// Every stored row → copies, read through the engine's snapshot: chunks
/// and buffer.
pub async fn contents(e: &Engine) -> BTreeMap<Row, usize> {
    let snap = e.snapshot();
    let mut batches = Vec::new();
    for c in &snap.manifest.chunks {
        batches.extend(
            e.chunk_reader()
                .read(c, None)
                .await
                .unwrap()
                .iter()
                .cloned(),
        );
    }
    batches.extend(snap.buffered.iter().map(|b| b.points.clone()));
    let mut out = BTreeMap::new();
    for b in batches {
        for row in rows(&b) {
            *out.entry(row).or_default() += 1;
        }
    }
    out
}

/// The rows of a point batch (`point_schema`).
pub fn rows(b: &RecordBatch) -> Vec<Row> {
    let ids = b.column(0).as_primitive::<UInt64Type>();
    let ts = b.column(1).as_primitive::<TimestampMicrosecondType>();
    let vs = b.column(2).as_primitive::<Float64Type>();
    (0..b.num_rows())
        .map(|i| (ids.value(i), ts.value(i), vs.value(i).to_bits()))
        .collect()
}

/// The points an engine acknowledged, as the rows it must hold.
#[derive(Default, Debug)]
pub struct Acked(BTreeMap<Row, usize>);

impl Acked {
    /// Writes `batch` to `e` and, once acknowledged, records its points.
    pub async fn write(&mut self, e: &Engine, batch: &RecordBatch) {
        e.write(batch).await.expect("write acknowledged");
        let normalized = super::normalize(batch, e.catalog()).unwrap();
        for row in rows(&normalized.points) {
            *self.0.entry(row).or_default() += 1;
        }
    }

    /// Fails unless `e` holds every acknowledged point exactly once, and
    /// nothing else.
    pub async fn assert_each_once(&self, e: &Engine, when: &str) {
        let held = contents(e).await;
        let twice: Vec<_> = held.iter().filter(|(_, n)| **n > 1).take(3).collect();
        assert!(twice.is_empty(), "{when}: rows held twice: {twice:?}");
        let missing = self.0.keys().filter(|r| !held.contains_key(r)).count();
        assert_eq!(
            missing, 0,
            "{when}: {missing} acknowledged rows are missing"
        );
        assert_eq!(held, self.0, "{when}: rows nobody wrote");
    }
}

/// Every object in `store` with its bytes.
pub async fn objects(store: &Store) -> BTreeMap<String, bytes::Bytes> {
    let mut all = BTreeMap::new();
    for meta in store
        .list_meta(&object_store::path::Path::from(""))
        .await
        .unwrap()
    {
        let bytes = store.get(&meta.location).await.unwrap();
        all.insert(meta.location.to_string(), bytes);
    }
    all
}

/// Nodes sharing one in-memory bucket, on one simulated clock (call in a
/// paused runtime): each node's data directory is under `dir`, and
/// [`SharedBucket::through_cut`] reaches the bucket through a network a
/// test can cut.
pub struct SharedBucket {
    pub dir: tempfile::TempDir,
    pub clock: Clock,
    pub bucket: Arc<dyn object_store::ObjectStore>,
    pub cut: Arc<FaultyStore>,
}

impl SharedBucket {
    /// Starts the clock at `wall` (Unix micros).
    pub fn new(wall: i64) -> Self {
        let bucket: Arc<dyn object_store::ObjectStore> =
            Arc::new(object_store::memory::InMemory::new());
        Self {
            dir: tempfile::tempdir().unwrap(),
            clock: Clock::simulated(wall),
            cut: Arc::new(FaultyStore::new(bucket.clone())),
            bucket,
        }
    }

    /// The bucket, reached directly.
    pub fn direct(&self) -> Store {
        Store::new(self.bucket.clone())
    }

    /// The bucket, reached through the network `cut` controls.
    pub fn through_cut(&self) -> Store {
        Store::new(self.cut.clone())
    }

    /// The test config of node `name` on `store`.
    pub fn node(&self, name: &str, store: Store) -> EngineConfig {
        let mut cfg = EngineConfig::for_tests(self.dir.path().join(name));
        cfg.store = Some(store);
        cfg.clock = self.clock.clone();
        cfg
    }
}
