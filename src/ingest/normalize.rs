//! Validation and normalisation of incoming Arrow batches into point
//! batches (`series_id, time, value`) plus the definitions of series the
//! catalog has not seen.
//!
//! Accepted shapes (DESIGN.md §2):
//! - **long with a `tags` map**: `time, metric, value, tags: map<string,string>`;
//! - **long with tag columns**: `time, metric, value` and string columns,
//!   each one a tag (a null cell means the row lacks that tag);
//! - **wide**: `time`, string tag columns and numeric columns without
//!   `metric`/`value`: one point per non-null numeric cell, the column name
//!   as the metric.
//!
//! `time` may be any timestamp unit or Int64 microseconds; values of any
//! numeric type are cast to f64. A `series_id` column (as a query returns
//! it) is ignored: ids are always recomputed. Anything else is rejected as
//! a whole with a [`BatchError`] that names the column and the first bad row.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, MapArray, RecordBatch, StringArray,
    TimestampMicrosecondArray, UInt64Array,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, TimeUnit, TimestampMicrosecondType};

use crate::model::{
    point_schema, series_hash, IdHashBuilder, ProducerTuple, SeriesHasher, SeriesId, SeriesKey,
};
use crate::storage::{SeriesCatalog, SourceCheckpoint};

/// Why a batch was rejected: the column, the first bad row, the problem.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct BatchError {
    pub column: String,
    pub row: Option<usize>,
    pub problem: String,
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column `{}`", self.column)?;
        if let Some(row) = self.row {
            write!(f, " at row {row}")?;
        }
        write!(f, ": {}", self.problem)
    }
}

fn bad(column: &str, row: Option<usize>, problem: impl Into<String>) -> BatchError {
    BatchError {
        column: column.to_string(),
        row,
        problem: problem.into(),
    }
}

/// A validated batch ready for the log: points plus new series definitions.
#[derive(Debug, Clone, PartialEq)]
pub struct PointBatch {
    /// `point_schema()`: series_id, time, value.
    pub points: RecordBatch,
    pub new_series: Vec<(SeriesId, SeriesKey)>,
    /// Who wrote the batch, logged atomically with its points.
    pub origin: Origin,
}

/// The writer state a batch carries into the log with it, so that a
/// position or an exactly-once token is exactly as durable as the data.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Origin {
    /// Set by the `--source` consumer: the remote position this batch
    /// brings the consumer to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceCheckpoint>,
    /// An HTTP idempotent producer's tuple.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer: Option<ProducerTuple>,
    /// An HTTP writer's `Stream-Seq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_seq: Option<String>,
}

impl Origin {
    pub fn is_empty(&self) -> bool {
        *self == Origin::default()
    }
}

impl PointBatch {
    pub fn rows(&self) -> usize {
        self.points.num_rows()
    }

    /// No points, no series, no origin.
    pub fn empty() -> Self {
        Self {
            points: RecordBatch::new_empty(crate::model::point_schema()),
            new_series: Vec::new(),
            origin: Origin::default(),
        }
    }
}

/// Read access to a string-like column (Utf8, LargeUtf8, Utf8View or a
/// dictionary of those), reduced to one shape so the per-row lookup is a
/// null check and an offset read: large and view strings are cast to Utf8
/// once per batch, dictionaries keep their keys.
struct StrCol {
    values: StringArray,
    keys: Option<Vec<usize>>,
    nulls: Option<arrow::buffer::NullBuffer>,
}

impl StrCol {
    fn new(a: &ArrayRef) -> Option<Self> {
        match a.data_type() {
            DataType::Utf8 => Some(Self {
                values: a.as_string::<i32>().clone(),
                keys: None,
                nulls: a.logical_nulls(),
            }),
            DataType::LargeUtf8 | DataType::Utf8View => {
                let values = cast(a, &DataType::Utf8).ok()?.as_string::<i32>().clone();
                Some(Self {
                    nulls: values.logical_nulls(),
                    values,
                    keys: None,
                })
            }
            DataType::Dictionary(_, v)
                if matches!(
                    **v,
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                ) =>
            {
                let d = a.as_any_dictionary();
                let values = cast(d.values(), &DataType::Utf8)
                    .ok()?
                    .as_string::<i32>()
                    .clone();
                Some(Self {
                    values,
                    keys: Some(d.normalized_keys()),
                    nulls: a.logical_nulls(),
                })
            }
            _ => None,
        }
    }

    #[inline]
    fn get(&self, i: usize) -> Option<&str> {
        if self.nulls.as_ref().is_some_and(|n| n.is_null(i)) {
            return None;
        }
        Some(self.values.value(self.keys.as_ref().map_or(i, |k| k[i])))
    }
}

fn is_string_type(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, v) => is_string_type(v),
        _ => false,
    }
}

/// The tag sources of a batch: tag columns (sorted by name) and an optional
/// `tags` map column.
struct Tags<'a> {
    columns: Vec<(&'a str, StrCol)>,
    map: Option<(&'a MapArray, StrCol, StrCol)>,
}

impl<'a> Tags<'a> {
    /// Puts row `i`'s canonical tag bytes in `cache.bytes`. Consecutive
    /// rows usually carry the same tags: when every tag column holds the
    /// same values as in the previous row, the previous encoding is kept.
    fn encode_row<'t>(&'t self, i: usize, cache: &mut TagCache<'t>) -> Result<(), BatchError> {
        if self.map.is_some() {
            cache.bytes.clear();
            for (k, v) in self.row_pairs(i)? {
                SeriesHasher::encode_tag(&mut cache.bytes, k, v);
            }
            return Ok(());
        }
        let same = cache.valid
            && self
                .columns
                .iter()
                .zip(&cache.values)
                .all(|((_, col), prev)| col.get(i) == *prev);
        if !same {
            cache.values.clear();
            cache.bytes.clear();
            for (name, col) in &self.columns {
                let v = col.get(i);
                cache.values.push(v);
                if let Some(v) = v {
                    SeriesHasher::encode_tag(&mut cache.bytes, name, v);
                }
            }
            cache.valid = true;
        }
        Ok(())
    }

    /// Row `i`'s tags as sorted pairs (the slow path, with a map column).
    fn row_pairs(&self, i: usize) -> Result<Vec<(&str, &str)>, BatchError> {
        let mut pairs: Vec<(&str, &str)> = self
            .columns
            .iter()
            .filter_map(|(n, c)| c.get(i).map(|v| (*n, v)))
            .collect();
        if let Some((map, keys, values)) = &self.map {
            if map.is_valid(i) {
                let offsets = map.value_offsets();
                for j in offsets[i] as usize..offsets[i + 1] as usize {
                    let k = keys
                        .get(j)
                        .ok_or_else(|| bad("tags", Some(i), "null tag key"))?;
                    if k.is_empty() {
                        return Err(bad("tags", Some(i), "empty tag key"));
                    }
                    if let Some(v) = values.get(j) {
                        pairs.push((k, v));
                    }
                }
            }
        }
        pairs.sort_unstable_by(|a, b| a.0.cmp(b.0));
        if let Some(w) = pairs.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(bad(
                "tags",
                Some(i),
                format!("tag `{}` given twice", w[0].0),
            ));
        }
        Ok(pairs)
    }

    fn key(&self, metric: &str, i: usize) -> Result<SeriesKey, BatchError> {
        let tags = self
            .row_pairs(i)?
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok(SeriesKey::new(metric, tags))
    }
}

/// The encoded tags of the last row and the column values they came from.
#[derive(Default)]
struct TagCache<'t> {
    values: Vec<Option<&'t str>>,
    bytes: Vec<u8>,
    valid: bool,
}

/// Validates `batch` and turns it into a [`PointBatch`].
pub fn normalize(batch: &RecordBatch, catalog: &SeriesCatalog) -> Result<PointBatch, BatchError> {
    normalize_with(batch, catalog, series_hash)
}

/// The hash series ids are computed with (`model::series_hash`, or a
/// weaker one in tests that need collisions).
pub(crate) type IdHash = fn(&[u8]) -> SeriesId;

/// [`normalize`] with the id hash given.
pub(crate) fn normalize_with(
    batch: &RecordBatch,
    catalog: &SeriesCatalog,
    hash: IdHash,
) -> Result<PointBatch, BatchError> {
    // A problem with a whole column (missing, wrong type) is a problem
    // from the first row on.
    normalize_rows(batch, catalog, hash).map_err(|mut e| {
        if e.row.is_none() && batch.num_rows() > 0 {
            e.row = Some(0);
        }
        e
    })
}

fn normalize_rows(
    batch: &RecordBatch,
    catalog: &SeriesCatalog,
    hash: IdHash,
) -> Result<PointBatch, BatchError> {
    let schema = batch.schema();
    let col = |name: &str| schema.index_of(name).ok().map(|i| batch.column(i));
    let times = time_column(col("time").ok_or_else(|| {
        bad(
            "time",
            None,
            "missing: every batch needs a timestamp column named `time`",
        )
    })?)?;

    let (metric, value) = (col("metric"), col("value"));
    let long = match (metric, value) {
        (Some(_), Some(_)) => true,
        (None, None) => false,
        (Some(_), None) => {
            return Err(bad(
                "value",
                None,
                "missing: a batch with a `metric` column needs a `value` column",
            ))
        }
        (None, Some(_)) => {
            return Err(bad(
                "metric",
                None,
                "missing: a batch with a `value` column needs a `metric` column",
            ))
        }
    };

    let mut tag_cols = Vec::new();
    let mut map = None;
    let mut numeric = Vec::new();
    for (f, a) in schema.fields().iter().zip(batch.columns()) {
        let name = f.name().as_str();
        match name {
            "time" | "series_id" => continue,
            "metric" | "value" if long => continue,
            "tags" => {
                map = Some(map_column(a)?);
                continue;
            }
            _ => {}
        }
        if name.is_empty() {
            return Err(bad(
                name,
                None,
                "column names become tag keys or metrics and cannot be empty",
            ));
        }
        if is_string_type(a.data_type()) {
            tag_cols.push((
                name,
                StrCol::new(a).ok_or_else(|| bad(name, None, "unreadable string column"))?,
            ));
        } else if !long && a.data_type().is_numeric() {
            numeric.push((name, a));
        } else if long {
            return Err(bad(
                name,
                None,
                format!(
                    "has type {}; extra columns of a long batch must be strings (tags)",
                    a.data_type()
                ),
            ));
        } else {
            return Err(bad(
                name,
                None,
                format!(
                    "has type {}; wide batches take string tag columns and numeric metric columns",
                    a.data_type()
                ),
            ));
        }
    }
    tag_cols.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let tags = Tags {
        columns: tag_cols,
        map,
    };

    let mut out = Builder::with_capacity(batch.num_rows());
    if long {
        let metric = metric.expect("long");
        let metrics = StrCol::new(metric).ok_or_else(|| {
            bad(
                "metric",
                None,
                format!("has type {}; expected a string", metric.data_type()),
            )
        })?;
        let values = value_column(value.expect("long"))?;
        let mut h = SeriesHasher::default();
        let mut cache = TagCache::default();
        for i in 0..batch.num_rows() {
            let m = match metrics.get(i) {
                None => return Err(bad("metric", Some(i), "null metric")),
                Some("") => return Err(bad("metric", Some(i), "empty metric name")),
                Some(m) => m,
            };
            tags.encode_row(i, &mut cache)?;
            h.reset(m);
            h.encoded_tags(&cache.bytes);
            let point = (m, i, times.value(i), values.value(i));
            out.push(hash(h.canonical()), h.canonical(), point, &tags)?;
        }
    } else {
        if numeric.is_empty() {
            return Err(bad(
                "value",
                None,
                "missing: no `metric`/`value` columns and no numeric columns to read as metrics",
            ));
        }
        let columns: Vec<(&str, Float64Array)> = numeric
            .into_iter()
            .map(|(n, a)| Ok((n, to_f64(n, a)?)))
            .collect::<Result<_, BatchError>>()?;
        let mut h = SeriesHasher::default();
        let mut cache = TagCache::default();
        for i in 0..batch.num_rows() {
            tags.encode_row(i, &mut cache)?;
            for (name, values) in &columns {
                if values.is_valid(i) {
                    h.reset(name);
                    h.encoded_tags(&cache.bytes);
                    let point = (*name, i, times.value(i), values.value(i));
                    out.push(hash(h.canonical()), h.canonical(), point, &tags)?;
                }
            }
        }
    }
    out.finish(catalog, &tags)
}

/// Accumulates points and the first row of every distinct series, with
/// the canonical bytes its id was hashed from: a later row with the same
/// id and other bytes is a hash collision, refused rather than merged.
struct Builder {
    ids: Vec<u64>,
    times: Vec<i64>,
    values: Vec<f64>,
    first_row: HashMap<u64, FirstRow, IdHashBuilder>,
    /// The canonical bytes of the last row: rows of one series usually
    /// follow each other, and then one comparison checks them.
    last: Vec<u8>,
}

struct FirstRow {
    metric: String,
    row: usize,
    canonical: Vec<u8>,
}

impl Builder {
    fn with_capacity(n: usize) -> Self {
        Self {
            ids: Vec::with_capacity(n),
            times: Vec::with_capacity(n),
            values: Vec::with_capacity(n),
            first_row: HashMap::default(),
            last: Vec::new(),
        }
    }

    /// Adds a point of the series hashed from `canonical`.
    fn push(
        &mut self,
        id: SeriesId,
        canonical: &[u8],
        point: (&str, usize, i64, f64),
        tags: &Tags,
    ) -> Result<(), BatchError> {
        let (metric, row, time, value) = point;
        if self.ids.last() != Some(&id.0) || self.last != canonical {
            self.check_first_row(id, canonical, metric, row, tags)?;
            self.last.clear();
            self.last.extend_from_slice(canonical);
        }
        self.ids.push(id.0);
        self.times.push(time);
        self.values.push(value);
        Ok(())
    }

    fn check_first_row(
        &mut self,
        id: SeriesId,
        canonical: &[u8],
        metric: &str,
        row: usize,
        tags: &Tags,
    ) -> Result<(), BatchError> {
        use std::collections::hash_map::Entry;
        match self.first_row.entry(id.0) {
            Entry::Vacant(v) => {
                v.insert(FirstRow {
                    metric: metric.to_string(),
                    row,
                    canonical: canonical.to_vec(),
                });
            }
            Entry::Occupied(o) if o.get().canonical != canonical => {
                let first = o.get();
                let theirs = tags.key(&first.metric, first.row)?;
                let held = format!("the series at row {} ({theirs})", first.row);
                return Err(collision(id, &tags.key(metric, row)?, row, &held));
            }
            Entry::Occupied(_) => {}
        }
        Ok(())
    }

    fn finish(self, catalog: &SeriesCatalog, tags: &Tags) -> Result<PointBatch, BatchError> {
        let mut firsts: Vec<(u64, &FirstRow)> =
            self.first_row.iter().map(|(id, f)| (*id, f)).collect();
        // Row order, so the error names the first colliding row.
        firsts.sort_unstable_by_key(|(_, f)| f.row);
        let known = catalog.lookup(firsts.iter().map(|(id, _)| SeriesId(*id)));
        let mut new_series = Vec::new();
        for ((id, first), held) in firsts.iter().zip(known) {
            let id = SeriesId(*id);
            match held {
                None => new_series.push((id, tags.key(&first.metric, first.row)?)),
                Some(held) if held.canonical() != first.canonical => {
                    let mine = tags.key(&first.metric, first.row)?;
                    let held = format!("{held}, already in the catalog");
                    return Err(collision(id, &mine, first.row, &held));
                }
                Some(_) => {}
            }
        }
        new_series.sort_unstable_by_key(|(id, _)| *id);
        let points = RecordBatch::try_new(
            point_schema(),
            vec![
                Arc::new(UInt64Array::from(self.ids)),
                Arc::new(TimestampMicrosecondArray::from(self.times).with_timezone("UTC")),
                Arc::new(Float64Array::from(self.values)),
            ],
        )
        .expect("point schema matches its columns");
        Ok(PointBatch {
            points,
            new_series,
            origin: Origin::default(),
        })
    }
}

/// Two keys hash to one series id. Refused whole: accepting either would
/// file its points under the other's key (see docs/STORAGE.md).
fn collision(id: SeriesId, mine: &SeriesKey, row: usize, held: &str) -> BatchError {
    bad(
        "metric",
        Some(row),
        format!(
            "series {mine} hashes to series id {id}, which {held} already has \
             (a 64-bit hash collision); the batch is refused so neither series takes \
             the other's points: rename the metric or change a tag of one of them"
        ),
    )
}

fn first_null(a: &dyn Array) -> Option<usize> {
    let nulls = a.logical_nulls()?;
    (0..a.len()).find(|&i| nulls.is_null(i))
}

fn time_column(a: &ArrayRef) -> Result<TimestampMicrosecondArray, BatchError> {
    match a.data_type() {
        DataType::Timestamp(_, _) | DataType::Int64 => {}
        t => {
            return Err(bad(
                "time",
                None,
                format!("has type {t}; expected a timestamp (any unit) or Int64 microseconds"),
            ))
        }
    }
    if let Some(i) = first_null(a.as_ref()) {
        return Err(bad("time", Some(i), "null time"));
    }
    let us = cast(a, &DataType::Timestamp(TimeUnit::Microsecond, None))
        .map_err(|e| bad("time", None, format!("cannot convert to microseconds: {e}")))?;
    Ok(us.as_primitive::<TimestampMicrosecondType>().clone())
}

fn value_column(a: &ArrayRef) -> Result<Float64Array, BatchError> {
    let v = to_f64("value", a)?;
    if let Some(i) = first_null(&v) {
        return Err(bad("value", Some(i), "null value"));
    }
    Ok(v)
}

fn to_f64(name: &str, a: &ArrayRef) -> Result<Float64Array, BatchError> {
    if !a.data_type().is_numeric() {
        return Err(bad(
            name,
            None,
            format!("has type {}; expected a number", a.data_type()),
        ));
    }
    let v = cast(a, &DataType::Float64)
        .map_err(|e| bad(name, None, format!("cannot convert to float64: {e}")))?;
    Ok(v.as_primitive::<Float64Type>().clone())
}

fn map_column(a: &ArrayRef) -> Result<(&MapArray, StrCol, StrCol), BatchError> {
    let problem = || {
        bad(
            "tags",
            None,
            format!("has type {}; expected map<string, string>", a.data_type()),
        )
    };
    let map = a.as_map_opt().ok_or_else(problem)?;
    let keys = StrCol::new(map.keys()).ok_or_else(problem)?;
    let values = StrCol::new(map.values()).ok_or_else(problem)?;
    Ok((map, keys, values))
}

#[cfg(test)]
mod collision_tests;
#[cfg(test)]
mod tests;
