//! What a query's filters tell the scan before it reads anything: a time
//! range and series predicates (`metric`, `tags['k']`) to resolve through
//! the tag index. Everything is conservative: an expression not understood
//! here restricts nothing. A filter this module captures completely
//! ([`is_exact`]) is applied by the scan alone; DataFusion re-applies the
//! rest.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};

use crate::storage::TagPredicate;

/// Half-open range `[min, max)` of Unix micros.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeRange {
    pub min: i64,
    pub max: i64,
}

impl Default for TimeRange {
    fn default() -> Self {
        Self {
            min: i64::MIN,
            max: i64::MAX,
        }
    }
}

impl TimeRange {
    /// Whether `[lo, hi]` (inclusive, as stored in chunk stats) overlaps.
    pub fn overlaps(&self, lo: i64, hi: i64) -> bool {
        self.before_end(lo) && hi >= self.min
    }

    pub fn contains(&self, t: i64) -> bool {
        t >= self.min && self.before_end(t)
    }

    /// Whether `t` is below the end. `i64::MAX` as the end means none, so
    /// a point stamped with the last representable instant is not lost to
    /// a range that only bounds the start.
    pub fn before_end(&self, t: i64) -> bool {
        self.max == i64::MAX || t < self.max
    }

    pub fn is_all(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct ScanFilters {
    pub time: TimeRange,
    pub series: Vec<TagPredicate>,
}

pub fn analyze(filters: &[Expr]) -> ScanFilters {
    let mut out = ScanFilters::default();
    for f in filters {
        collect(f, &mut out);
    }
    out
}

fn collect(e: &Expr, out: &mut ScanFilters) {
    match e {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => {
            collect(left, out);
            collect(right, out);
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            if let (Some(col), Some(lit)) = (column_of(left), literal(right)) {
                compare(&col, *op, lit, out);
            } else if let (Some(lit), Some(col)) = (literal(left), column_of(right)) {
                if let Some(op) = op.swap() {
                    compare(&col, op, lit, out);
                }
            }
        }
        Expr::Between(b) if !b.negated => {
            if let (Some(Target::Time), Some(lo), Some(hi)) = (
                column_of(&b.expr),
                literal(&b.low).and_then(micros),
                literal(&b.high).and_then(micros),
            ) {
                out.time.min = out.time.min.max(lo);
                out.time.max = out.time.max.min(hi.saturating_add(1));
            }
        }
        Expr::InList(l) if !l.negated => {
            let Some(target) = column_of(&l.expr) else {
                return;
            };
            let values: Option<Vec<String>> =
                l.list.iter().map(|v| literal(v).and_then(string)).collect();
            if let Some(values) = values {
                push_series(target, values, out);
            }
        }
        _ => {}
    }
}

/// What a filter's column side refers to.
enum Target {
    Time,
    Metric,
    Tag(String),
}

fn column_of(e: &Expr) -> Option<Target> {
    match e {
        Expr::Column(c) if c.name == "time" => Some(Target::Time),
        Expr::Column(c) if c.name == "metric" => Some(Target::Metric),
        Expr::Cast(c) => column_of(&c.expr),
        Expr::ScalarFunction(f) if f.name() == "get_field" && f.args.len() == 2 => {
            match (&f.args[0], literal(&f.args[1]).and_then(string)) {
                (Expr::Column(c), Some(key)) if c.name == "tags" => Some(Target::Tag(key)),
                _ => None,
            }
        }
        _ => None,
    }
}

fn literal(e: &Expr) -> Option<&ScalarValue> {
    match e {
        Expr::Literal(v, _) => Some(v),
        _ => None,
    }
}

fn string(v: &ScalarValue) -> Option<String> {
    v.try_as_str().flatten().map(str::to_string)
}

fn micros(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::TimestampSecond(Some(t), _) => t.checked_mul(1_000_000),
        ScalarValue::TimestampMillisecond(Some(t), _) => t.checked_mul(1_000),
        ScalarValue::TimestampMicrosecond(Some(t), _) => Some(*t),
        // Round outward so the range never excludes a matching row.
        ScalarValue::TimestampNanosecond(Some(t), _) => Some(t.div_euclid(1_000)),
        _ => None,
    }
}

fn compare(target: &Target, op: Operator, v: &ScalarValue, out: &mut ScanFilters) {
    match target {
        Target::Time => {
            let Some(t) = micros(v) else { return };
            let nanos_rem = matches!(v, ScalarValue::TimestampNanosecond(Some(n), _) if n.rem_euclid(1_000) != 0);
            match op {
                // `time > t` on whole micros starts at t + 1, so the scan
                // applies it exactly (a nanosecond literal stays inclusive).
                Operator::Gt if !nanos(v) => out.time.min = out.time.min.max(t.saturating_add(1)),
                Operator::Gt | Operator::GtEq => out.time.min = out.time.min.max(t),
                Operator::Lt => out.time.max = out.time.max.min(if nanos_rem { t + 1 } else { t }),
                Operator::LtEq => out.time.max = out.time.max.min(t.saturating_add(1)),
                Operator::Eq => {
                    out.time.min = out.time.min.max(t);
                    out.time.max = out.time.max.min(t.saturating_add(1));
                }
                _ => {}
            }
        }
        _ if op == Operator::Eq => {
            if let Some(s) = string(v) {
                push_series(clone_target(target), vec![s], out);
            }
        }
        _ => {}
    }
}

fn nanos(v: &ScalarValue) -> bool {
    matches!(v, ScalarValue::TimestampNanosecond(..))
}

/// Whether [`analyze`] captures `e` completely, so the scan's time range
/// and series set apply it with no further filtering: `time` compared
/// with a timestamp in whole microseconds or coarser, `BETWEEN` such
/// timestamps, and `metric` or `tags['k']` equal to or `IN` a list of
/// strings, joined by AND. Casts, nanosecond literals, `OR`, `NOT` and
/// everything else are inexact.
pub fn is_exact(e: &Expr) -> bool {
    match e {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => is_exact(left) && is_exact(right),
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (col, lit, op) = match (bare_target(left), literal(right)) {
                (Some(c), Some(l)) => (c, l, *op),
                _ => match (literal(left), bare_target(right), op.swap()) {
                    (Some(l), Some(c), Some(op)) => (c, l, op),
                    _ => return false,
                },
            };
            match col {
                Target::Time => {
                    exact_time(lit)
                        && matches!(
                            op,
                            Operator::Gt
                                | Operator::GtEq
                                | Operator::Lt
                                | Operator::LtEq
                                | Operator::Eq
                        )
                }
                _ => op == Operator::Eq && string(lit).is_some(),
            }
        }
        Expr::Between(b) => {
            !b.negated
                && matches!(bare_target(&b.expr), Some(Target::Time))
                && literal(&b.low).is_some_and(exact_time)
                && literal(&b.high).is_some_and(exact_time)
        }
        Expr::InList(l) => {
            !l.negated
                && matches!(bare_target(&l.expr), Some(Target::Metric | Target::Tag(_)))
                && l.list.iter().all(|v| literal(v).and_then(string).is_some())
        }
        _ => false,
    }
}

/// [`column_of`] without looking through casts: a cast can change what
/// compares equal.
fn bare_target(e: &Expr) -> Option<Target> {
    match e {
        Expr::Cast(_) => None,
        e => column_of(e),
    }
}

/// A time literal the scan's range captures exactly: whole microseconds
/// or coarser, and far enough from the end of time that no bound derived
/// from it becomes `i64::MAX` (which [`TimeRange`] reads as no end).
fn exact_time(v: &ScalarValue) -> bool {
    micros(v).is_some_and(|t| t < i64::MAX - 1) && !nanos(v)
}

fn clone_target(t: &Target) -> Target {
    match t {
        Target::Time => Target::Time,
        Target::Metric => Target::Metric,
        Target::Tag(k) => Target::Tag(k.clone()),
    }
}

fn push_series(target: Target, values: Vec<String>, out: &mut ScanFilters) {
    match target {
        Target::Metric => out.series.push(TagPredicate::Metric(values)),
        Target::Tag(key) => out.series.push(TagPredicate::Tag { key, values }),
        Target::Time => {}
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::{col, lit};

    use super::*;

    fn at(t: i64) -> Expr {
        lit(ScalarValue::TimestampMicrosecond(
            Some(t),
            Some("UTC".into()),
        ))
    }

    #[test]
    fn the_last_instant_is_kept_and_never_filtered_exactly() {
        let after = analyze(&[col("time").gt_eq(at(0))]);
        assert!(after.time.contains(i64::MAX) && after.time.overlaps(i64::MAX, i64::MAX));
        // `time < MAX` ends the range at MAX, which reads as no end: the
        // scan keeps the row at MAX and DataFusion must drop it.
        for e in [
            col("time").lt(at(i64::MAX)),
            col("time").lt_eq(at(i64::MAX - 1)),
            col("time").eq(at(i64::MAX - 1)),
        ] {
            assert!(!is_exact(&e), "{e}");
        }
        assert!(is_exact(&col("time").lt(at(i64::MAX - 2))));
        let r = analyze(&[col("time").lt(at(i64::MAX - 2))]);
        assert!(r.time.contains(i64::MAX - 3) && !r.time.contains(i64::MAX - 2));
    }
}
