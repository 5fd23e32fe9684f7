//! The kept state of an aggregate subscription: per group, the running
//! `sum`, `count`, `min` and `max` of every aggregate's argument, merged
//! from the partial query's output, and which groups changed since the last
//! update. The groups held are bounded (`--subscribe-max-groups`): a batch
//! bringing more is refused before any of it is folded in.

use std::collections::{HashMap, HashSet};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type, SchemaRef};
use datafusion::common::{Result, ScalarValue};

use super::super::QueryError;
use super::shape::{AggKind, Output};

#[derive(Debug, Clone, PartialEq)]
struct Partial {
    sum: ScalarValue,
    count: i64,
    min: ScalarValue,
    max: ScalarValue,
}

type Key = Vec<ScalarValue>;

#[derive(Debug)]
pub struct AggState {
    groups: usize,
    aggs: usize,
    /// Most groups the state may hold (`--subscribe-max-groups`).
    max_groups: usize,
    state: HashMap<Key, Vec<Partial>>,
    changed: HashSet<Key>,
}

impl AggState {
    pub fn new(groups: usize, aggs: usize, max_groups: usize) -> Self {
        Self {
            groups,
            aggs,
            max_groups,
            state: HashMap::new(),
            changed: HashSet::new(),
        }
    }

    pub fn has_changes(&self) -> bool {
        !self.changed.is_empty()
    }

    /// Folds one batch of the partial query (`__g*`, then `__s, __c, __n,
    /// __x` per aggregate) into the state; a batch that would take the
    /// state past `max_groups` is refused whole, nothing of it folded.
    pub fn fold(&mut self, batch: &RecordBatch) -> std::result::Result<(), QueryError> {
        let keys = self.keys(batch).map_err(QueryError::from_datafusion)?;
        self.check_groups(&keys)?;
        self.merge_rows(batch, keys)
            .map_err(QueryError::from_datafusion)
    }

    /// The group key of every row.
    fn keys(&self, batch: &RecordBatch) -> Result<Vec<Key>> {
        let cols = batch.columns();
        (0..batch.num_rows())
            .map(|row| {
                (0..self.groups)
                    .map(|j| ScalarValue::try_from_array(&cols[j], row))
                    .collect()
            })
            .collect()
    }

    /// Refuses keys that would bring the state past `max_groups`.
    fn check_groups(&self, keys: &[Key]) -> std::result::Result<(), QueryError> {
        let new: HashSet<&Key> = keys
            .iter()
            .filter(|k| !self.state.contains_key(*k))
            .collect();
        let held = self.state.len();
        if held + new.len() <= self.max_groups {
            return Ok(());
        }
        crate::telemetry::metrics().limited("subscribe_groups");
        Err(QueryError::Limit(format!(
            "the subscription would hold {} groups, over the limit of {} \
             (--subscribe-max-groups); groups are never evicted, since a late \
             point may still land in any of them: group more coarsely, filter \
             by time, or raise --subscribe-max-groups",
            held + new.len(),
            self.max_groups
        )))
    }

    fn merge_rows(&mut self, batch: &RecordBatch, keys: Vec<Key>) -> Result<()> {
        let cols = batch.columns();
        let counts: Vec<ArrayRef> = (0..self.aggs)
            .map(|i| cast(&cols[self.groups + 4 * i + 1], &DataType::Int64))
            .collect::<std::result::Result<_, _>>()?;
        for (row, key) in keys.into_iter().enumerate() {
            let mut parts = Vec::with_capacity(self.aggs);
            for (i, count) in counts.iter().enumerate() {
                let base = self.groups + 4 * i;
                let count = count.as_primitive::<Int64Type>();
                parts.push(Partial {
                    sum: ScalarValue::try_from_array(&cols[base], row)?,
                    count: if count.is_null(row) {
                        0
                    } else {
                        count.value(row)
                    },
                    min: ScalarValue::try_from_array(&cols[base + 2], row)?,
                    max: ScalarValue::try_from_array(&cols[base + 3], row)?,
                });
            }
            match self.state.get_mut(&key) {
                Some(existing) => {
                    for (e, p) in existing.iter_mut().zip(parts) {
                        merge(e, p)?;
                    }
                }
                None => {
                    self.state.insert(key.clone(), parts);
                }
            }
            self.changed.insert(key);
        }
        Ok(())
    }

    /// Takes the groups of `fresh` (the partial query run again over all
    /// the data) and marks as changed every group whose value differs; a
    /// group `fresh` no longer has (its points were deleted) stays, empty:
    /// count 0, the other aggregates NULL.
    pub fn replace_with(&mut self, mut fresh: AggState) {
        let old = std::mem::take(&mut self.state);
        for (key, parts) in &fresh.state {
            if old.get(key) != Some(parts) {
                self.changed.insert(key.clone());
            }
        }
        for (key, parts) in old {
            if !fresh.state.contains_key(&key) {
                fresh
                    .state
                    .insert(key.clone(), parts.iter().map(Partial::empty).collect());
                self.changed.insert(key);
            }
        }
        self.state = fresh.state;
    }

    /// The current value of every group (`all`) or of those changed since
    /// the last call, as rows of `schema`; clears the change set.
    pub fn emit(
        &mut self,
        outputs: &[Output],
        schema: &SchemaRef,
        all: bool,
    ) -> Result<RecordBatch> {
        let mut keys: Vec<Key> = if all {
            self.state.keys().cloned().collect()
        } else {
            self.changed.iter().cloned().collect()
        };
        self.changed.clear();
        keys.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        let mut columns = Vec::with_capacity(outputs.len());
        for (out, field) in outputs.iter().zip(schema.fields()) {
            let values: Vec<ScalarValue> = keys
                .iter()
                .map(|k| match out {
                    Output::Group(j) => Ok(k[*j].clone()),
                    Output::Agg(i, kind) => finish(&self.state[k][*i], *kind),
                })
                .collect::<Result<_>>()?;
            let array = if values.is_empty() {
                arrow::array::new_empty_array(field.data_type())
            } else {
                ScalarValue::iter_to_array(values)?
            };
            columns.push(cast(&array, field.data_type())?);
        }
        Ok(RecordBatch::try_new_with_options(
            schema.clone(),
            columns,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(keys.len())),
        )?)
    }
}

impl Partial {
    /// No rows: count 0, the rest NULL of the same types.
    fn empty(&self) -> Partial {
        let null =
            |v: &ScalarValue| ScalarValue::try_from(v.data_type()).unwrap_or(ScalarValue::Null);
        Partial {
            sum: null(&self.sum),
            count: 0,
            min: null(&self.min),
            max: null(&self.max),
        }
    }
}

fn merge(into: &mut Partial, p: Partial) -> Result<()> {
    into.count += p.count;
    into.sum = match (into.sum.is_null(), p.sum.is_null()) {
        (true, _) => p.sum,
        (false, true) => into.sum.clone(),
        (false, false) => into.sum.add(&p.sum)?,
    };
    if !p.min.is_null() && (into.min.is_null() || p.min < into.min) {
        into.min = p.min;
    }
    if !p.max.is_null() && (into.max.is_null() || p.max > into.max) {
        into.max = p.max;
    }
    Ok(())
}

fn finish(p: &Partial, kind: AggKind) -> Result<ScalarValue> {
    Ok(match kind {
        AggKind::Sum => p.sum.clone(),
        AggKind::Count => ScalarValue::Int64(Some(p.count)),
        AggKind::Min => p.min.clone(),
        AggKind::Max => p.max.clone(),
        AggKind::Avg => {
            if p.count == 0 || p.sum.is_null() {
                ScalarValue::Float64(None)
            } else {
                let sum = p.sum.cast_to(&DataType::Float64)?;
                match sum {
                    ScalarValue::Float64(Some(s)) => ScalarValue::Float64(Some(s / p.count as f64)),
                    _ => ScalarValue::Float64(None),
                }
            }
        }
    })
}
