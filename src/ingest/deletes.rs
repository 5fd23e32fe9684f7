//! Deletes between being logged and being applied physically: a
//! [`Tombstone`] per logged `DELETE`, and [`Deletes`], the set a reader's
//! snapshot carries, which filters the points of any unit it applies to.
//!
//! The rule is one comparison of log offsets. A delete at offset `d`
//! removes matching points from every unit whose rows were all logged
//! before `d`: a buffered batch with `offset < d`, a chunk for which
//! `ChunkMeta::precedes_delete(d)`. Every other unit holds only rows
//! logged after the delete (a flush or compaction that wrote rows from
//! before it applied it first and says so in `deletes_applied`), so a
//! point written after a delete always survives it, however the two
//! raced.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use parking_lot::RwLock;

use crate::model::{in_ranges, point_columns, DeletePredicate, SeriesId, TimeRanges};
use crate::storage::{ChunkMeta, LoggedDelete, SeriesCatalog};

/// Series whose resolved ranges one tombstone remembers (about 40 bytes
/// each; `MAX_DELETES` tombstones at most); past it they are resolved
/// again each time (a few comparisons per time constant).
const RESOLVED_SERIES: usize = 1 << 16;

/// The ranges of a series a delete does not touch, shared.
static NOTHING: std::sync::LazyLock<Arc<TimeRanges>> = std::sync::LazyLock::new(Arc::default);

/// A logged delete, with its predicate resolved per series as readers
/// meet them.
#[derive(Debug)]
pub struct Tombstone {
    pub logged: LoggedDelete,
    /// `[min, max]` of the times it may delete in any series; `None`
    /// when it deletes nothing.
    pub bounds: Option<(i64, i64)>,
    /// Whether the predicate names series fields (else every series has
    /// the same ranges, `all_series`).
    by_series: bool,
    all_series: Arc<TimeRanges>,
    resolved: RwLock<HashMap<u64, Arc<TimeRanges>>>,
}

impl Tombstone {
    pub fn new(offset: u64, predicate: DeletePredicate) -> Self {
        let bounds = predicate.time_bounds();
        let all_series = Arc::new(predicate.ranges_for(None));
        // A predicate without series leaves resolves the same for every
        // series, including the unknown one.
        let by_series = predicate_names_series(&predicate);
        Self {
            logged: LoggedDelete { offset, predicate },
            bounds,
            by_series,
            all_series,
            resolved: RwLock::default(),
        }
    }

    pub fn offset(&self) -> u64 {
        self.logged.offset
    }

    fn overlaps(&self, min_time: i64, max_time: i64) -> bool {
        self.bounds
            .is_some_and(|(lo, hi)| lo <= max_time && min_time <= hi)
    }

    /// Whether it may remove rows of `chunk` (offsets and time only).
    pub fn applies_to_chunk(&self, chunk: &ChunkMeta) -> bool {
        chunk.precedes_delete(self.offset()) && self.overlaps(chunk.min_time, chunk.max_time)
    }

    /// Whether it removes rows of `chunk` as far as its series list tells
    /// (an unknown list counts as yes): what compaction must rewrite.
    pub fn affects_chunk(&self, chunk: &ChunkMeta, catalog: &SeriesCatalog) -> bool {
        if !self.applies_to_chunk(chunk) {
            return false;
        }
        if !self.by_series || chunk.series.is_empty() {
            return true;
        }
        chunk.series.iter().any(|&s| {
            self.ranges(s, catalog)
                .iter()
                .any(|&(lo, hi)| lo <= chunk.max_time && chunk.min_time <= hi)
        })
    }

    /// The times it deletes in series `id`. A series the catalog does
    /// not know has nothing a reader could show: nothing is deleted.
    pub fn ranges(&self, id: u64, catalog: &SeriesCatalog) -> Arc<TimeRanges> {
        if !self.by_series {
            return self.all_series.clone();
        }
        if let Some(r) = self.resolved.read().get(&id) {
            return r.clone();
        }
        let ranges = match catalog.get(SeriesId(id)) {
            Some(key) => {
                let r = self.logged.predicate.ranges_for(Some(&key));
                if r.is_empty() {
                    NOTHING.clone()
                } else {
                    Arc::new(r)
                }
            }
            None => NOTHING.clone(),
        };
        let mut cache = self.resolved.write();
        if cache.len() < RESOLVED_SERIES {
            cache.insert(id, ranges.clone());
        }
        ranges
    }
}

fn predicate_names_series(p: &DeletePredicate) -> bool {
    match p {
        DeletePredicate::Const(_) | DeletePredicate::Time { .. } => false,
        DeletePredicate::And(ps) | DeletePredicate::Or(ps) => ps.iter().any(predicate_names_series),
        DeletePredicate::Not(p) => predicate_names_series(p),
        DeletePredicate::Metric(_)
        | DeletePredicate::Tag { .. }
        | DeletePredicate::TagIsNull { .. } => true,
    }
}

/// The deletes a snapshot is read with, oldest first.
#[derive(Debug, Clone, Default)]
pub struct Deletes(pub Arc<Vec<Arc<Tombstone>>>);

impl Deletes {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Tombstone>> {
        self.0.iter()
    }

    /// The newest delete's offset (what a unit written with all of them
    /// applied records as `deletes_applied`).
    pub fn newest(&self) -> Option<u64> {
        self.0.last().map(|t| t.offset())
    }

    /// Those that apply to a buffered batch logged at `offset`.
    pub fn for_batch(&self, offset: u64, min_time: i64, max_time: i64) -> Vec<&Tombstone> {
        self.iter()
            .filter(|t| offset < t.offset() && t.overlaps(min_time, max_time))
            .map(Arc::as_ref)
            .collect()
    }

    pub fn for_chunk(&self, chunk: &ChunkMeta) -> Vec<&Tombstone> {
        self.iter()
            .filter(|t| t.applies_to_chunk(chunk))
            .map(Arc::as_ref)
            .collect()
    }
}

/// `points` without the rows any of `tombstones` deletes; the batch itself
/// when none goes.
pub fn remove_deleted(
    points: &RecordBatch,
    tombstones: &[&Tombstone],
    catalog: &SeriesCatalog,
) -> RecordBatch {
    if tombstones.is_empty() || points.num_rows() == 0 {
        return points.clone();
    }
    let (ids, times, _) = point_columns(points);
    let mut keep = Vec::with_capacity(ids.len());
    // Rows come in runs of one series (chunks are sorted by it): resolve
    // once per run.
    let mut current: Option<(u64, Vec<Arc<TimeRanges>>)> = None;
    for (&id, &t) in ids.iter().zip(times) {
        if current.as_ref().is_none_or(|(s, _)| *s != id) {
            let ranges = tombstones.iter().map(|d| d.ranges(id, catalog)).collect();
            current = Some((id, ranges));
        }
        let (_, ranges) = current.as_ref().expect("set above");
        keep.push(!ranges.iter().any(|r| in_ranges(r, t)));
    }
    if keep.iter().all(|k| *k) {
        return points.clone();
    }
    filter_record_batch(points, &BooleanArray::from(keep)).expect("same length as the batch")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SeriesKey;

    fn catalog() -> (SeriesCatalog, u64, u64) {
        let cat = SeriesCatalog::default();
        let key = |h: &str| SeriesKey::new("cpu", [("host".to_string(), h.to_string())].into());
        let (a, b) = (key("a"), key("b"));
        let (ia, ib) = (a.id(), b.id());
        cat.insert(ia, a);
        cat.insert(ib, b);
        (cat, ia.0, ib.0)
    }

    #[test]
    fn removes_only_matching_series_and_times() {
        let (cat, a, b) = catalog();
        let t = Tombstone::new(10, crate::model::host_before("a", 5));
        let points = crate::storage::test_points(
            vec![a, a, a, b, b],
            vec![1, 5, 9, 1, 9],
            vec![1.0, 2.0, 3.0, 4.0, 5.0],
        );
        let kept = remove_deleted(&points, &[&t], &cat);
        let (ids, times, _) = point_columns(&kept);
        assert_eq!(ids, &[a, a, b, b]);
        assert_eq!(times, &[5, 9, 1, 9]);
        // A batch logged after the delete is not the delete's to touch.
        let deletes = Deletes(Arc::new(vec![Arc::new(t)]));
        assert!(deletes.for_batch(10, 0, 100).is_empty());
        assert_eq!(deletes.for_batch(9, 0, 100).len(), 1);
        assert!(
            deletes.for_batch(9, 5, 100).is_empty(),
            "times out of range"
        );
    }
}
