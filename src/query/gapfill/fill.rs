//! The gap filling kernel: one batch of aggregate rows in, every bucket
//! of the range for every group out. Pure, so the tests drive it directly.

use arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, Float64Array, RecordBatch, TimestampMicrosecondArray,
    UInt32Array,
};
use arrow::compute::{cast, concat, take};
use arrow::datatypes::{DataType, Float64Type, SchemaRef, TimeUnit, TimestampMicrosecondType};
use arrow::row::{RowConverter, SortField};
use datafusion::common::{Result, ScalarValue};

use super::super::functions::argument_error;
use super::node::Fill;

/// At most this many rows (groups × buckets) per query, so a wide range
/// or many groups cannot exhaust memory.
pub const MAX_ROWS: usize = 1_000_000;

/// One aggregate column's fill, with `locf`'s prev evaluated.
#[derive(Debug, Clone)]
pub struct ColumnFill {
    pub column: usize,
    pub fill: Fill,
    pub prev: Option<ScalarValue>,
    /// An added column (after the input's), not the input's own.
    pub added: bool,
}

/// What to fill, with the range resolved to microseconds.
#[derive(Debug, Clone)]
pub struct Spec {
    pub bucket: usize,
    pub groups: Vec<usize>,
    pub aggs: Vec<ColumnFill>,
    pub width: i64,
    /// The first bucket's start (aligned to `width`).
    pub first: i64,
    /// Buckets start before this (exclusive).
    pub finish: i64,
    pub max_rows: usize,
}

impl Spec {
    /// How many buckets the range has.
    pub fn buckets(&self) -> usize {
        if self.finish <= self.first {
            return 0;
        }
        let span = self.finish as i128 - self.first as i128;
        let w = self.width as i128;
        ((span + w - 1) / w).min(usize::MAX as i128) as usize
    }
}

/// Fills `input` (columns as the GapFill node's input) into `schema`.
pub fn gap_fill(spec: &Spec, input: &RecordBatch, schema: SchemaRef) -> Result<RecordBatch> {
    let n = spec.buckets();
    let times = cast(
        input.column(spec.bucket),
        &DataType::Timestamp(TimeUnit::Microsecond, None),
    )?;
    let times = times.as_primitive::<TimestampMicrosecondType>();
    let groups = groups(spec, input, times)?;
    let rows = groups.len().saturating_mul(n);
    if rows > spec.max_rows {
        return argument_error(format!(
            "gap filling would produce {rows} rows ({} groups × {n} buckets), more than the limit of {} per query; use a wider bucket, a shorter range or fewer groups",
            groups.len(),
            spec.max_rows
        ));
    }
    // For every output row, the input row of its bucket if it has one.
    let slots: Vec<Vec<Option<u32>>> = groups
        .iter()
        .map(|g| {
            let mut slot = vec![None; n];
            for &i in &g.rows {
                let k = ((times.value(i as usize) - spec.first) / spec.width) as usize;
                slot[k] = Some(i);
            }
            slot
        })
        .collect();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    let added: Vec<&ColumnFill> = spec.aggs.iter().filter(|a| a.added).collect();
    for (c, field) in schema.fields().iter().enumerate() {
        if c >= input.num_columns() {
            let a = added[c - input.num_columns()];
            columns.push(fill_column(a, input.column(a.column), &slots)?);
            continue;
        }
        let col = input.column(c);
        let out = if c == spec.bucket {
            let starts =
                (0..groups.len()).flat_map(|_| (0..n).map(|k| spec.first + k as i64 * spec.width));
            cast(
                &TimestampMicrosecondArray::from_iter_values(starts),
                field.data_type(),
            )?
        } else if spec.groups.contains(&c) {
            let ix = groups
                .iter()
                .flat_map(|grp| std::iter::repeat_n(grp.key_row, n));
            take(col, &UInt32Array::from_iter_values(ix), None)?
        } else if let Some(a) = spec.aggs.iter().find(|a| a.column == c && !a.added) {
            fill_column(a, col, &slots)?
        } else {
            new_null_array(field.data_type(), rows)
        };
        columns.push(out);
    }
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// One group: the input row whose keys it has, and its rows in range.
struct Group {
    key_row: u32,
    rows: Vec<u32>,
}

/// The rows in range, split by group key. With no keys but the bucket
/// there is exactly one group, data or not, as a global aggregate has
/// one row.
fn groups(
    spec: &Spec,
    input: &RecordBatch,
    times: &TimestampMicrosecondArray,
) -> Result<Vec<Group>> {
    let in_range =
        |i: usize| times.is_valid(i) && (spec.first..spec.finish).contains(&times.value(i));
    let kept: Vec<u32> = (0..input.num_rows())
        .filter(|&i| in_range(i))
        .map(|i| i as u32)
        .collect();
    if spec.groups.is_empty() {
        return Ok(vec![Group {
            key_row: 0,
            rows: kept,
        }]);
    }
    let keys: Vec<ArrayRef> = spec
        .groups
        .iter()
        .map(|&g| input.column(g).clone())
        .collect();
    let conv = RowConverter::new(
        keys.iter()
            .map(|k| SortField::new(k.data_type().clone()))
            .collect(),
    )?;
    let key_rows = conv.convert_columns(&keys)?;
    let mut kept = kept;
    kept.sort_by(|&a, &b| key_rows.row(a as usize).cmp(&key_rows.row(b as usize)));
    let mut out: Vec<Group> = vec![];
    for i in kept {
        match out.last_mut() {
            Some(g) if key_rows.row(g.key_row as usize) == key_rows.row(i as usize) => {
                g.rows.push(i)
            }
            _ => out.push(Group {
                key_row: i,
                rows: vec![i],
            }),
        }
    }
    Ok(out)
}

fn fill_column(a: &ColumnFill, col: &ArrayRef, slots: &[Vec<Option<u32>>]) -> Result<ArrayRef> {
    match a.fill {
        Fill::Null => {
            let ix: UInt32Array = slots.iter().flatten().copied().collect();
            Ok(take(col, &ix, None)?)
        }
        Fill::Locf => locf(col, slots, a.prev.as_ref()),
        Fill::Interpolate => interpolate(col, slots),
    }
}

/// Each bucket takes the group's last non-null value at or before it;
/// before the first, `prev` (or NULL).
fn locf(
    col: &ArrayRef,
    slots: &[Vec<Option<u32>>],
    prev: Option<&ScalarValue>,
) -> Result<ArrayRef> {
    let (values, before) = match prev {
        Some(p) => {
            let p = p.cast_to(col.data_type())?.to_array_of_size(1)?;
            (concat(&[col.as_ref(), p.as_ref()])?, Some(col.len() as u32))
        }
        None => (col.clone(), None),
    };
    let mut ix: Vec<Option<u32>> =
        Vec::with_capacity(slots.len() * slots.first().map_or(0, Vec::len));
    for slot in slots {
        let mut last = before;
        for s in slot {
            if let Some(i) = s.filter(|&i| col.is_valid(i as usize)) {
                last = Some(i);
            }
            ix.push(last);
        }
    }
    Ok(take(&values, &UInt32Array::from(ix), None)?)
}

/// Linear between the group's neighbouring non-null buckets; NULL before
/// the first and after the last. Integers are rounded to the nearest.
fn interpolate(col: &ArrayRef, slots: &[Vec<Option<u32>>]) -> Result<ArrayRef> {
    let f = cast(col, &DataType::Float64)?;
    let f = f.as_primitive::<Float64Type>();
    let mut out: Vec<Option<f64>> =
        Vec::with_capacity(slots.len() * slots.first().map_or(0, Vec::len));
    for slot in slots {
        let known: Vec<(usize, f64)> = slot
            .iter()
            .enumerate()
            .filter_map(|(k, s)| {
                s.filter(|&i| f.is_valid(i as usize))
                    .map(|i| (k, f.value(i as usize)))
            })
            .collect();
        let mut filled = vec![None; slot.len()];
        for &(k, v) in &known {
            filled[k] = Some(v);
        }
        for pair in known.windows(2) {
            let ((k0, v0), (k1, v1)) = (pair[0], pair[1]);
            for (k, cell) in filled.iter_mut().enumerate().take(k1).skip(k0 + 1) {
                *cell = Some(v0 + (v1 - v0) * (k - k0) as f64 / (k1 - k0) as f64);
            }
        }
        out.extend(filled);
    }
    let integer = col.data_type().is_integer();
    let out: Float64Array = out
        .into_iter()
        .map(|v| v.map(|v| if integer { v.round() } else { v }))
        .collect();
    Ok(cast(&out, col.data_type())?)
}
