//! Point batches (`series_id, time, value`) to rows of the `metrics` table
//! (`time, metric, tags, value, series_id`), filtered to the scan's time
//! range and series, with only the projected columns built.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, BooleanArray, MapBuilder, MapFieldNames, RecordBatch, RecordBatchOptions,
    StringArray, StringBuilder, UInt32Array,
};
use arrow::compute::{filter_record_batch, take};
use arrow::datatypes::{SchemaRef, TimestampMicrosecondType, UInt64Type};
use datafusion::common::{internal_err, Result};

use super::filters::TimeRange;
use crate::storage::SeriesCatalog;

/// Keeps the rows inside `time` whose series is in `series` (if given).
pub fn filter_points(
    points: &RecordBatch,
    time: &TimeRange,
    series: Option<&BTreeSet<u64>>,
) -> Result<RecordBatch> {
    if time.is_all() && series.is_none() {
        return Ok(points.clone());
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

/// Builds the projected `metrics` columns (`projection` indexes the full
/// table schema) for a point batch.
pub fn to_table_batch(
    points: &RecordBatch,
    catalog: &SeriesCatalog,
    projection: &[usize],
    schema: &SchemaRef,
) -> Result<RecordBatch> {
    let ids = points.column(0).as_primitive::<UInt64Type>();
    let needs_series = projection.iter().any(|&i| i == 1 || i == 2);
    let (keys, distinct) = if needs_series {
        distinct_series(ids.values())
    } else {
        (Vec::new(), Vec::new())
    };
    let keys = UInt32Array::from(keys);
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(projection.len());
    for &i in projection {
        columns.push(match i {
            0 => points.column(1).clone(),
            1 => take(&metric_array(&distinct, catalog)?, &keys, None)?,
            2 => take(&tags_array(&distinct, catalog)?, &keys, None)?,
            3 => points.column(2).clone(),
            4 => points.column(0).clone(),
            _ => return internal_err!("metrics table has no column {i}"),
        });
    }
    let opts = RecordBatchOptions::new().with_row_count(Some(points.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &opts,
    )?)
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
