//! The series catalog (series id → metric and tags) and the tag index built
//! from it (metric → ids, tag key → value → ids).
//!
//! The catalog is persisted as a snapshot object that the manifest points
//! to; the index is rebuilt from it at load (it is derived data, and
//! rebuilding costs one pass over the series). Snapshot format:
//!
//! ```text
//! magic "SDBCAT" | version u16 LE | crc32 u32 LE of the rest | lz4(count u32, series...)
//! ```
//! with each series encoded by `model::wire`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;

use super::store::StorageError;
use crate::model::wire::{WireReader, WireWriter};
use crate::model::{SeriesId, SeriesKey};

const MAGIC: &[u8; 6] = b"SDBCAT";
const VERSION: u16 = 1;

/// A predicate on series, resolved through the index.
#[derive(Debug, Clone, PartialEq)]
pub enum TagPredicate {
    /// `metric IN (...)` (one value for `=`).
    Metric(Vec<String>),
    /// `tags[key] IN (...)`.
    Tag { key: String, values: Vec<String> },
}

#[derive(Default)]
struct Inner {
    series: HashMap<u64, Arc<SeriesKey>>,
    by_metric: HashMap<String, Vec<u64>>,
    by_tag: HashMap<String, HashMap<String, Vec<u64>>>,
}

/// Thread-safe catalog of the series the database holds data for. Series
/// are added by writes and removed only by retention, once no data of
/// theirs is left.
#[derive(Default)]
pub struct SeriesCatalog {
    inner: RwLock<Inner>,
    /// Bumped by every change, so the flusher knows when to persist it.
    generation: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for SeriesCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SeriesCatalog({} series)", self.len())
    }
}

impl SeriesCatalog {
    pub fn len(&self) -> usize {
        self.inner.read().series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, id: SeriesId) -> bool {
        self.inner.read().series.contains_key(&id.0)
    }

    pub fn get(&self, id: SeriesId) -> Option<Arc<SeriesKey>> {
        self.inner.read().series.get(&id.0).cloned()
    }

    /// The key held under each of `ids` (`None`: not in the catalog), under
    /// one read of the lock.
    pub fn lookup(&self, ids: impl IntoIterator<Item = SeriesId>) -> Vec<Option<Arc<SeriesKey>>> {
        let inner = self.inner.read();
        ids.into_iter()
            .map(|id| inner.series.get(&id.0).cloned())
            .collect()
    }

    /// Changes so far: equal generations mean equal contents.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Adds a series; a no-op if the id is already known.
    pub fn insert(&self, id: SeriesId, key: SeriesKey) {
        let mut inner = self.inner.write();
        if inner.series.contains_key(&id.0) {
            return;
        }
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Self::index(&mut inner, id, key);
    }

    /// Removes every series `keep` says no to, and returns how many went.
    pub fn retain(&self, keep: impl Fn(u64) -> bool) -> usize {
        let mut inner = self.inner.write();
        let before = inner.series.len();
        let kept: Vec<(u64, Arc<SeriesKey>)> = inner
            .series
            .iter()
            .filter(|(id, _)| keep(**id))
            .map(|(id, k)| (*id, k.clone()))
            .collect();
        let removed = before - kept.len();
        if removed == 0 {
            return 0;
        }
        // Rebuilt rather than edited: removal is rare, the index is derived.
        *inner = Inner::default();
        for (id, key) in kept {
            Self::index(&mut inner, SeriesId(id), Arc::unwrap_or_clone(key));
        }
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        removed
    }

    fn index(inner: &mut Inner, id: SeriesId, key: SeriesKey) {
        inner
            .by_metric
            .entry(key.metric.clone())
            .or_default()
            .push(id.0);
        for (k, v) in &key.tags {
            inner
                .by_tag
                .entry(k.clone())
                .or_default()
                .entry(v.clone())
                .or_default()
                .push(id.0);
        }
        inner.series.insert(id.0, Arc::new(key));
    }

    /// The ids matching every predicate (an empty list matches all: `None`).
    pub fn resolve(&self, preds: &[TagPredicate]) -> Option<BTreeSet<u64>> {
        let inner = self.inner.read();
        let mut result: Option<BTreeSet<u64>> = None;
        for p in preds {
            let ids: BTreeSet<u64> = match p {
                TagPredicate::Metric(ms) => ms
                    .iter()
                    .filter_map(|m| inner.by_metric.get(m))
                    .flatten()
                    .copied()
                    .collect(),
                TagPredicate::Tag { key, values } => match inner.by_tag.get(key) {
                    Some(vals) => values
                        .iter()
                        .filter_map(|v| vals.get(v))
                        .flatten()
                        .copied()
                        .collect(),
                    None => BTreeSet::new(),
                },
            };
            result = Some(match result {
                None => ids,
                Some(r) => r.intersection(&ids).copied().collect(),
            });
        }
        result
    }

    /// Every (id, key), in id order.
    pub fn entries(&self) -> Vec<(SeriesId, Arc<SeriesKey>)> {
        let inner = self.inner.read();
        let mut out: Vec<_> = inner
            .series
            .iter()
            .map(|(id, k)| (SeriesId(*id), k.clone()))
            .collect();
        out.sort_unstable_by_key(|(id, _)| *id);
        out
    }

    pub fn encode_snapshot(&self) -> Bytes {
        let entries = self.entries();
        let mut w = WireWriter::default();
        w.u32(entries.len() as u32);
        for (id, key) in &entries {
            w.series(*id, key);
        }
        let body = lz4_flex::compress_prepend_size(&w.buf);
        let mut out = Vec::with_capacity(body.len() + 12);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
        Bytes::from(out)
    }

    pub fn decode_snapshot(path: &str, bytes: &[u8]) -> Result<Self, StorageError> {
        let corrupt = |why: String| StorageError::Corrupt {
            path: path.into(),
            why,
        };
        if bytes.len() < 12 || &bytes[..6] != MAGIC {
            return Err(corrupt("not a series catalog".into()));
        }
        let version = u16::from_le_bytes([bytes[6], bytes[7]]);
        if version != VERSION {
            return Err(corrupt(format!("unsupported catalog version {version}")));
        }
        let crc = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if crc32fast::hash(&bytes[12..]) != crc {
            return Err(corrupt("checksum mismatch".into()));
        }
        let body = crate::model::wire::lz4_decompress(&bytes[12..]).map_err(corrupt)?;
        let mut r = WireReader::new(&body);
        let n = r.count(16).map_err(|e| corrupt(e.to_string()))?;
        let catalog = SeriesCatalog::default();
        for _ in 0..n {
            let (id, key) = r.series().map_err(|e| corrupt(e.to_string()))?;
            catalog.insert(id, key);
        }
        Ok(catalog)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(metric: &str, tags: &[(&str, &str)]) -> SeriesKey {
        SeriesKey::new(
            metric,
            tags.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn resolves_predicates_through_the_index() {
        let c = SeriesCatalog::default();
        let a = key("cpu", &[("host", "a"), ("region", "eu")]);
        let b = key("cpu", &[("host", "b"), ("region", "us")]);
        let m = key("mem", &[("host", "a")]);
        for k in [&a, &b, &m] {
            c.insert(k.id(), k.clone());
        }
        c.insert(a.id(), a.clone());
        assert_eq!(c.len(), 3);
        let ids = |ks: &[&SeriesKey]| ks.iter().map(|k| k.id().0).collect::<BTreeSet<_>>();
        assert_eq!(c.resolve(&[]), None);
        assert_eq!(
            c.resolve(&[TagPredicate::Metric(vec!["cpu".into()])]),
            Some(ids(&[&a, &b]))
        );
        let host_a = TagPredicate::Tag {
            key: "host".into(),
            values: vec!["a".into()],
        };
        assert_eq!(
            c.resolve(std::slice::from_ref(&host_a)),
            Some(ids(&[&a, &m]))
        );
        assert_eq!(
            c.resolve(&[TagPredicate::Metric(vec!["cpu".into()]), host_a]),
            Some(ids(&[&a]))
        );
        assert_eq!(
            c.resolve(&[TagPredicate::Tag {
                key: "nope".into(),
                values: vec!["x".into()]
            }]),
            Some(BTreeSet::new())
        );
    }

    #[test]
    fn snapshot_round_trips_and_detects_damage() {
        let c = SeriesCatalog::default();
        for i in 0..100 {
            let k = key("m", &[("i", &i.to_string())]);
            c.insert(k.id(), k);
        }
        let bytes = c.encode_snapshot();
        let back = SeriesCatalog::decode_snapshot("c", &bytes).unwrap();
        assert_eq!(back.entries().len(), 100);
        assert_eq!(
            back.entries()
                .iter()
                .map(|(i, k)| (*i, (**k).clone()))
                .collect::<Vec<_>>(),
            c.entries()
                .iter()
                .map(|(i, k)| (*i, (**k).clone()))
                .collect::<Vec<_>>()
        );
        let mut bad = bytes.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(SeriesCatalog::decode_snapshot("c", &bad).is_err());
    }

    #[test]
    fn retain_removes_series_from_the_index_too() {
        let c = SeriesCatalog::default();
        let a = key("cpu", &[("host", "a")]);
        let b = key("cpu", &[("host", "b")]);
        c.insert(a.id(), a.clone());
        c.insert(b.id(), b.clone());
        let g = c.generation();
        assert_eq!(c.retain(|id| id != a.id().0), 1);
        assert!(c.generation() > g);
        assert_eq!(c.retain(|_| true), 0);
        assert!(!c.contains(a.id()) && c.contains(b.id()));
        let host = |v: &str| TagPredicate::Tag {
            key: "host".into(),
            values: vec![v.into()],
        };
        assert_eq!(c.resolve(&[host("a")]), Some(BTreeSet::new()));
        assert_eq!(c.resolve(&[host("b")]), Some([b.id().0].into()));
        assert_eq!(
            c.resolve(&[TagPredicate::Metric(vec!["cpu".into()])]),
            Some([b.id().0].into())
        );
    }
}
