//! Point batches (`series_id, time, value`) to rows of the `metrics` table
//! (`time, metric, tags, value, series_id`), filtered to the scan's time
//! range and series, with only the projected columns built.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, BooleanArray, MapBuilder, MapFieldNames, RecordBatch, RecordBatchOptions,
    StringArray, StringBuilder, UInt32Array,
};
use arrow::compute::{concat_batches, filter_record_batch, take};
use arrow::datatypes::{SchemaRef, TimestampMicrosecondType, UInt64Type};
use datafusion::common::{internal_err, Result};

use super::filters::TimeRange;
use super::rollup::Partials;
use crate::storage::SeriesCatalog;

/// Keeps the rows inside `time` whose series is in `series` (if given).
/// `sorted` says the batch is sorted by `(series_id, time)`, as chunk
/// bodies are: each wanted series' rows are then found by binary search
/// instead of testing every row.
pub fn filter_points(
    points: &RecordBatch,
    time: &TimeRange,
    series: Option<&BTreeSet<u64>>,
    sorted: bool,
) -> Result<RecordBatch> {
    if time.is_all() && series.is_none() {
        return Ok(points.clone());
    }
    if let (true, Some(series)) = (sorted, series) {
        return filter_sorted(points, time, series);
    }
    let ids = points.column(0).as_primitive::<UInt64Type>().values();
    let times = points
        .column(1)
        .as_primitive::<TimestampMicrosecondType>()
        .values();
    let mut last: Option<(u64, bool)> = None;
    let keep: BooleanArray = ids
        .iter()
        .zip(times.iter())
        .map(|(id, t)| {
            let in_series = match (series, last) {
                (None, _) => true,
                (Some(_), Some((lid, ok))) if lid == *id => ok,
                (Some(s), _) => {
                    let ok = s.contains(id);
                    last = Some((*id, ok));
                    ok
                }
            };
            Some(in_series && time.contains(*t))
        })
        .collect();
    if keep.true_count() == points.num_rows() {
        return Ok(points.clone());
    }
    Ok(filter_record_batch(points, &keep)?)
}

/// [`filter_points`] over a batch sorted by `(series_id, time)`: two
/// searches per wanted series, then one copy of the kept runs (none when a
/// single run is kept: a slice shares the buffers).
fn filter_sorted(
    points: &RecordBatch,
    time: &TimeRange,
    series: &BTreeSet<u64>,
) -> Result<RecordBatch> {
    let ids = points.column(0).as_primitive::<UInt64Type>().values();
    let times = points
        .column(1)
        .as_primitive::<TimestampMicrosecondType>()
        .values();
    let (Some(first), Some(last)) = (ids.first(), ids.last()) else {
        return Ok(points.clone());
    };
    let mut runs = Vec::new();
    let mut from = 0;
    for &id in series.range(*first..=*last) {
        let start = from + gallop(&ids[from..], |x| *x < id);
        let end = start + gallop(&ids[start..], |x| *x == id);
        from = end;
        if start == end {
            continue;
        }
        // Usually the range covers the whole run: its two ends say so
        // without searching (each search step is a likely cache miss).
        let run = &times[start..end];
        let lo = match run[0] >= time.min {
            true => start,
            false => start + run.partition_point(|t| *t < time.min),
        };
        let hi = match time.before_end(run[run.len() - 1]) {
            true => end,
            false => start + run.partition_point(|t| time.before_end(*t)),
        };
        if lo < hi {
            runs.push(points.slice(lo, hi - lo));
        }
    }
    match runs.len() {
        0 => Ok(points.slice(0, 0)),
        1 => Ok(runs.pop().expect("one run")),
        _ => Ok(concat_batches(&points.schema(), &runs)?),
    }
}

/// The length of the prefix of `xs` on which `keep` holds (`keep` holds on
/// a prefix and fails after it). Probes at doubling distances from the
/// start, then bisects the last gap: the wanted series come in id order,
/// so each search starts where the last ended and its first probes touch
/// memory already in cache, where a plain binary search over the whole
/// batch misses the cache at nearly every step.
fn gallop<T>(xs: &[T], keep: impl Fn(&T) -> bool) -> usize {
    // Everything before `lo` keeps.
    let (mut lo, mut step) = (0, 1);
    while lo + step <= xs.len() && keep(&xs[lo + step - 1]) {
        lo += step;
        step *= 2;
    }
    let hi = (lo + step).min(xs.len());
    lo + xs[lo..hi].partition_point(keep)
}

/// Builds the projected `metrics` columns (`projection` indexes the full
/// table schema) for a point batch.
pub fn to_table_batch(
    points: &RecordBatch,
    catalog: &SeriesCatalog,
    projection: &[usize],
    schema: &SchemaRef,
) -> Result<RecordBatch> {
    let ids = points.column(0).as_primitive::<UInt64Type>();
    let series = SeriesColumns::new(ids.values(), catalog, projection, &[1, 2]);
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(projection.len());
    for &i in projection {
        columns.push(match i {
            0 => points.column(1).clone(),
            1 => series.metric()?,
            2 => series.tags()?,
            3 => points.column(2).clone(),
            4 => points.column(0).clone(),
            _ => return internal_err!("metrics table has no column {i}"),
        });
    }
    batch(schema, columns, points.num_rows())
}

/// Builds the projected columns of the rollup table
/// ([`super::rollup::rollup_schema`]) from finished partials.
pub fn to_rollup_batch(
    partials: Partials,
    catalog: &SeriesCatalog,
    projection: &[usize],
    schema: &SchemaRef,
) -> Result<RecordBatch> {
    let cols = partials.finish();
    let rows = cols[0].len();
    let ids = cols[0].as_primitive::<UInt64Type>();
    let series = SeriesColumns::new(ids.values(), catalog, projection, &[1, 2]);
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(projection.len());
    for &i in projection {
        columns.push(match i {
            0 => cols[0].clone(),
            1 => series.metric()?,
            2 => series.tags()?,
            i if i - 2 < cols.len() => cols[i - 2].clone(),
            _ => return internal_err!("rollup table has no column {i}"),
        });
    }
    batch(schema, columns, rows)
}

fn batch(schema: &SchemaRef, columns: Vec<ArrayRef>, rows: usize) -> Result<RecordBatch> {
    let opts = RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &opts,
    )?)
}

/// The `metric` and `tags` columns for rows of the given series: built
/// once per distinct series, then taken per row.
struct SeriesColumns<'a> {
    keys: UInt32Array,
    distinct: Vec<u64>,
    catalog: &'a SeriesCatalog,
}

impl<'a> SeriesColumns<'a> {
    /// `series_at` are the projection indexes of the series columns: the
    /// row mapping is only computed when one of them is projected.
    fn new(
        ids: &[u64],
        catalog: &'a SeriesCatalog,
        projection: &[usize],
        series_at: &[usize],
    ) -> Self {
        let (keys, distinct) = if projection.iter().any(|i| series_at.contains(i)) {
            distinct_series(ids)
        } else {
            (Vec::new(), Vec::new())
        };
        Self {
            keys: UInt32Array::from(keys),
            distinct,
            catalog,
        }
    }

    fn metric(&self) -> Result<ArrayRef> {
        Ok(take(
            &metric_array(&self.distinct, self.catalog)?,
            &self.keys,
            None,
        )?)
    }

    fn tags(&self) -> Result<ArrayRef> {
        Ok(take(
            &tags_array(&self.distinct, self.catalog)?,
            &self.keys,
            None,
        )?)
    }
}

/// Maps each row to an index into the batch's distinct series.
fn distinct_series(ids: &[u64]) -> (Vec<u32>, Vec<u64>) {
    let mut index: HashMap<u64, u32, crate::model::IdHashBuilder> = HashMap::default();
    let mut distinct = Vec::new();
    let mut last: Option<(u64, u32)> = None;
    let keys = ids
        .iter()
        .map(|id| match last {
            Some((l, k)) if l == *id => k,
            _ => {
                let k = *index.entry(*id).or_insert_with(|| {
                    distinct.push(*id);
                    (distinct.len() - 1) as u32
                });
                last = Some((*id, k));
                k
            }
        })
        .collect();
    (keys, distinct)
}

fn metric_array(distinct: &[u64], catalog: &SeriesCatalog) -> Result<ArrayRef> {
    let mut out = Vec::with_capacity(distinct.len());
    for id in distinct {
        match catalog.get(crate::model::SeriesId(*id)) {
            Some(k) => out.push(k.metric.clone()),
            None => return internal_err!("series {id:016x} is missing from the series catalog"),
        }
    }
    Ok(Arc::new(StringArray::from(out)))
}

fn tags_array(distinct: &[u64], catalog: &SeriesCatalog) -> Result<ArrayRef> {
    let names = MapFieldNames {
        entry: "entries".into(),
        key: "keys".into(),
        value: "values".into(),
    };
    let mut b = MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new());
    for id in distinct {
        let Some(k) = catalog.get(crate::model::SeriesId(*id)) else {
            return internal_err!("series {id:016x} is missing from the series catalog");
        };
        for (tk, tv) in &k.tags {
            b.keys().append_value(tk);
            b.values().append_value(tv);
        }
        b.append(true)?;
    }
    Ok(Arc::new(b.finish()))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::model::points_of as points;

    proptest! {
        /// The search path keeps exactly the rows the row-by-row
        /// path keeps.
        #[test]
        fn sorted_filter_equals_row_filter(
            mut rows in prop::collection::vec((0u64..12, 0i64..100, -5.0f64..5.0), 0..200),
            wanted in prop::collection::btree_set(0u64..14, 0..6),
            (a, b) in (0i64..110, 0i64..110),
        ) {
            rows.sort_by_key(|r| (r.0, r.1));
            let batch = points(&rows);
            let time = TimeRange { min: a.min(b), max: a.max(b) };
            let fast = filter_points(&batch, &time, Some(&wanted), true).unwrap();
            let slow = filter_points(&batch, &time, Some(&wanted), false).unwrap();
            prop_assert_eq!(fast, slow);
        }

        #[test]
        fn gallop_finds_the_prefix(mut xs in prop::collection::vec(0u32..50, 0..300), cut in 0u32..52) {
            xs.sort();
            prop_assert_eq!(gallop(&xs, |x| *x < cut), xs.partition_point(|x| *x < cut));
        }
    }
}
