//! The rollup kernel: folds point rows (`series_id, time, value`) into one
//! partial aggregate per series and time bucket.
//!
//! Chunks are sorted by (series, time), so consecutive rows nearly always
//! land in the same group: the current group is checked first and the hash
//! map is consulted only when the series or bucket changes. Unsorted input
//! (the write buffer) gives the same answer, only slower.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, TimestampMicrosecondArray, UInt64Array,
};

/// What one group has seen so far.
#[derive(Debug, Clone, Copy)]
struct Acc {
    count: i64,
    sum: f64,
    min: f64,
    max: f64,
    first_time: i64,
    first_value: f64,
    last_time: i64,
    last_value: f64,
}

impl Acc {
    fn new(t: i64, v: f64) -> Self {
        Self {
            count: 1,
            sum: v,
            min: v,
            max: v,
            first_time: t,
            first_value: v,
            last_time: t,
            last_value: v,
        }
    }

    fn add(&mut self, t: i64, v: f64) {
        self.count += 1;
        self.sum += v;
        // Total order, as DataFusion's MIN and MAX compare floats.
        if v.total_cmp(&self.min).is_lt() {
            self.min = v;
        }
        if v.total_cmp(&self.max).is_gt() {
            self.max = v;
        }
        if t < self.first_time {
            (self.first_time, self.first_value) = (t, v);
        }
        if t >= self.last_time {
            (self.last_time, self.last_value) = (t, v);
        }
    }
}

/// Partial aggregates per (series, bucket), in first-seen order.
#[derive(Debug)]
pub struct Partials {
    /// Bucket width in microseconds; `None` folds all of a series' time
    /// into one group (bucket start 0).
    width: Option<i64>,
    index: HashMap<(u64, i64), usize, foldhash::fast::RandomState>,
    keys: Vec<(u64, i64)>,
    accs: Vec<Acc>,
}

/// The columns [`Partials::finish`] returns, in order.
pub const PARTIAL_COLUMNS: [&str; 10] = [
    "series_id",
    "bucket",
    "count",
    "sum",
    "min",
    "max",
    "first_time",
    "first_value",
    "last_time",
    "last_value",
];

impl Partials {
    pub fn new(width: Option<i64>) -> Self {
        Self {
            width,
            index: HashMap::default(),
            keys: Vec::new(),
            accs: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Folds in a point batch (`series_id, time, value`, already filtered).
    pub fn add(&mut self, points: &RecordBatch) {
        let (ids, times, values) = crate::model::point_columns(points);
        // The current group: its series, bucket [start, end) and slot.
        let mut cur: Option<(u64, i64, i64, usize)> = None;
        for ((&id, &t), &v) in ids.iter().zip(times.iter()).zip(values.iter()) {
            match cur {
                Some((cid, start, end, slot)) if cid == id && t >= start && t < end => {
                    self.accs[slot].add(t, v);
                }
                _ => {
                    let (start, end) = self.bucket(t);
                    let slot = match self.index.get(&(id, start)) {
                        Some(&slot) => {
                            self.accs[slot].add(t, v);
                            slot
                        }
                        None => {
                            self.index.insert((id, start), self.keys.len());
                            self.keys.push((id, start));
                            self.accs.push(Acc::new(t, v));
                            self.keys.len() - 1
                        }
                    };
                    cur = Some((id, start, end, slot));
                }
            }
        }
    }

    /// The bucket holding `t`, as `[start, end)`.
    fn bucket(&self, t: i64) -> (i64, i64) {
        match self.width {
            None => (0, i64::MAX),
            Some(w) => {
                let start = t.div_euclid(w) * w;
                (start, start.saturating_add(w))
            }
        }
    }

    /// The groups as columns named by [`PARTIAL_COLUMNS`].
    pub fn finish(self) -> Vec<ArrayRef> {
        let ts = |f: fn(&Acc) -> i64| -> ArrayRef {
            Arc::new(
                TimestampMicrosecondArray::from(self.accs.iter().map(f).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            )
        };
        let float = |f: fn(&Acc) -> f64| -> ArrayRef {
            Arc::new(Float64Array::from(
                self.accs.iter().map(f).collect::<Vec<_>>(),
            ))
        };
        vec![
            Arc::new(UInt64Array::from(
                self.keys.iter().map(|k| k.0).collect::<Vec<_>>(),
            )),
            Arc::new(
                TimestampMicrosecondArray::from(self.keys.iter().map(|k| k.1).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ),
            Arc::new(Int64Array::from(
                self.accs.iter().map(|a| a.count).collect::<Vec<_>>(),
            )),
            float(|a| a.sum),
            float(|a| a.min),
            float(|a| a.max),
            ts(|a| a.first_time),
            float(|a| a.first_value),
            ts(|a| a.last_time),
            float(|a| a.last_value),
        ]
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, TimestampMicrosecondType};

    use super::*;
    use crate::model::points_of as points;

    #[test]
    fn groups_by_series_and_bucket_whatever_the_row_order() {
        let mut p = Partials::new(Some(10));
        // Series 1 in buckets 0 and 10, interleaved with series 2; a
        // negative time falls in bucket -10.
        p.add(&points(&[
            (1, 3, 1.0),
            (1, 12, 5.0),
            (2, 4, 7.0),
            (1, 1, 2.0),
            (1, -1, 9.0),
        ]));
        p.add(&points(&[(1, 9, -4.0)]));
        let cols = p.finish();
        let batch =
            RecordBatch::try_from_iter(PARTIAL_COLUMNS.iter().zip(cols).map(|(n, c)| (*n, c)))
                .unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&[batch])
            .unwrap()
            .to_string();
        let want = "\
+-----------+-----------------------------+-------+------+------+-----+-----------------------------+-------------+-----------------------------+------------+
| series_id | bucket                      | count | sum  | min  | max | first_time                  | first_value | last_time                   | last_value |
+-----------+-----------------------------+-------+------+------+-----+-----------------------------+-------------+-----------------------------+------------+
| 1         | 1970-01-01T00:00:00Z        | 3     | -1.0 | -4.0 | 2.0 | 1970-01-01T00:00:00.000001Z | 2.0         | 1970-01-01T00:00:00.000009Z | -4.0       |
| 1         | 1970-01-01T00:00:00.000010Z | 1     | 5.0  | 5.0  | 5.0 | 1970-01-01T00:00:00.000012Z | 5.0         | 1970-01-01T00:00:00.000012Z | 5.0        |
| 2         | 1970-01-01T00:00:00Z        | 1     | 7.0  | 7.0  | 7.0 | 1970-01-01T00:00:00.000004Z | 7.0         | 1970-01-01T00:00:00.000004Z | 7.0        |
| 1         | 1969-12-31T23:59:59.999990Z | 1     | 9.0  | 9.0  | 9.0 | 1969-12-31T23:59:59.999999Z | 9.0         | 1969-12-31T23:59:59.999999Z | 9.0        |
+-----------+-----------------------------+-------+------+------+-----+-----------------------------+-------------+-----------------------------+------------+";
        assert_eq!(text, want);
    }

    #[test]
    fn without_a_width_each_series_is_one_group() {
        let mut p = Partials::new(None);
        p.add(&points(&[
            (1, 3, 1.0),
            (1, i64::MAX - 1, 2.0),
            (1, i64::MIN, 3.0),
        ]));
        let cols = p.finish();
        assert_eq!(
            cols[2]
                .as_primitive::<arrow::datatypes::Int64Type>()
                .values(),
            &[3]
        );
        assert_eq!(
            cols[8].as_primitive::<TimestampMicrosecondType>().values(),
            &[i64::MAX - 1]
        );
        assert_eq!(cols[7].as_primitive::<Float64Type>().values(), &[3.0]);
    }
}
