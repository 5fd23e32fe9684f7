//! [`DeletePredicate`]: which points a `DELETE` removes, as a boolean
//! expression over a point's `time`, its series' `metric` and its
//! `tags['k']`, compared with constants. It is what the write-ahead log
//! and the manifest record, so it is plain data (serde) and evaluated here
//! alone, with SQL's three-valued logic: a tag a series does not have is
//! NULL, a comparison with NULL is unknown, and only points for which the
//! predicate is true are deleted.
//!
//! Because the series leaves are constant for one series and the time
//! leaves change truth only at their constants, the predicate is resolved
//! once per series into the half-open time ranges it deletes
//! ([`DeletePredicate::ranges_for`]), never evaluated point by point.

use serde::{Deserialize, Serialize};

use super::SeriesKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeOp {
    Lt,
    LtEq,
    Gt,
    GtEq,
    Eq,
    NotEq,
}

/// A series field compared with strings: equal to one of `values` (`=`,
/// `IN`), or with `negated`, equal to none of them (`!=`, `NOT IN`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StringTest {
    pub values: Vec<String>,
    #[serde(default)]
    pub negated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeletePredicate {
    Const(bool),
    And(Vec<DeletePredicate>),
    Or(Vec<DeletePredicate>),
    Not(Box<DeletePredicate>),
    /// `time <op> micros`.
    Time {
        op: TimeOp,
        micros: i64,
    },
    Metric(StringTest),
    Tag {
        key: String,
        test: StringTest,
    },
    /// `tags['key'] IS NULL` (or with `negated`, `IS NOT NULL`).
    TagIsNull {
        key: String,
        negated: bool,
    },
}

/// Sorted, disjoint, inclusive ranges `[first, last]` of Unix micros.
pub type TimeRanges = Vec<(i64, i64)>;

/// Three-valued truth: `None` is SQL's unknown.
type Truth = Option<bool>;

fn and(a: Truth, b: Truth) -> Truth {
    match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

fn or(a: Truth, b: Truth) -> Truth {
    match (a, b) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    }
}

impl StringTest {
    fn test(&self, v: Option<&str>) -> Truth {
        let v = v?;
        Some(self.values.iter().any(|x| x == v) != self.negated)
    }
}

impl TimeOp {
    fn test(self, t: i64, c: i64) -> bool {
        match self {
            TimeOp::Lt => t < c,
            TimeOp::LtEq => t <= c,
            TimeOp::Gt => t > c,
            TimeOp::GtEq => t >= c,
            TimeOp::Eq => t == c,
            TimeOp::NotEq => t != c,
        }
    }
}

impl DeletePredicate {
    /// The predicate's truth for one point. `series: None` stands for a
    /// series not known yet: its leaves are unknown, so the answer is
    /// whether the point may be deleted (`Some(true)` or `None`).
    // `fold`, not `try_fold`: unknown does not end an AND (a later false
    // makes it false), so stopping at the first `None` would be wrong.
    #[allow(clippy::manual_try_fold)]
    pub fn eval(&self, series: Option<&SeriesKey>, time: i64) -> Truth {
        match self {
            DeletePredicate::Const(b) => Some(*b),
            DeletePredicate::And(ps) => ps
                .iter()
                .fold(Some(true), |acc, p| and(acc, p.eval(series, time))),
            DeletePredicate::Or(ps) => ps
                .iter()
                .fold(Some(false), |acc, p| or(acc, p.eval(series, time))),
            DeletePredicate::Not(p) => p.eval(series, time).map(|b| !b),
            DeletePredicate::Time { op, micros } => Some(op.test(time, *micros)),
            DeletePredicate::Metric(test) => test.test(Some(series?.metric.as_str())),
            DeletePredicate::Tag { key, test } => {
                test.test(series?.tags.get(key).map(String::as_str))
            }
            DeletePredicate::TagIsNull { key, negated } => {
                Some(series?.tags.contains_key(key) == *negated)
            }
        }
    }

    /// The instants at which some time leaf may change its truth: every
    /// constant and the instant after it. Between two consecutive
    /// boundaries every leaf, and so the predicate, is constant.
    fn boundaries(&self) -> Vec<i64> {
        let mut out = vec![i64::MIN];
        self.collect_times(&mut out);
        out.sort_unstable();
        out.dedup();
        out
    }

    fn collect_times(&self, out: &mut Vec<i64>) {
        match self {
            DeletePredicate::And(ps) | DeletePredicate::Or(ps) => {
                ps.iter().for_each(|p| p.collect_times(out))
            }
            DeletePredicate::Not(p) => p.collect_times(out),
            DeletePredicate::Time { micros, .. } => {
                out.push(*micros);
                if let Some(next) = micros.checked_add(1) {
                    out.push(next);
                }
            }
            _ => {}
        }
    }

    /// The time ranges whose points of `series` are deleted (truth
    /// `Some(true)`), or with `series: None`, the ranges where a point of
    /// some series may be (for pruning).
    pub fn ranges_for(&self, series: Option<&SeriesKey>) -> TimeRanges {
        let bounds = self.boundaries();
        let mut out: TimeRanges = Vec::new();
        for (i, &start) in bounds.iter().enumerate() {
            let last = bounds.get(i + 1).map_or(i64::MAX, |next| next - 1);
            let hit = match self.eval(series, start) {
                Some(true) => true,
                None => series.is_none(),
                Some(false) => false,
            };
            if !hit {
                continue;
            }
            match out.last_mut() {
                Some(prev) if prev.1.checked_add(1) == Some(start) => prev.1 = last,
                _ => out.push((start, last)),
            }
        }
        out
    }

    /// The overall `[min, max]` (inclusive) of times the predicate may
    /// delete in any series, or `None` if it deletes nothing anywhere.
    pub fn time_bounds(&self) -> Option<(i64, i64)> {
        let r = self.ranges_for(None);
        Some((r.first()?.0, r.last()?.1))
    }
}

/// `tags['host'] = host AND time < before`: the example tests use.
#[cfg(test)]
pub fn host_before(host: &str, before: i64) -> DeletePredicate {
    DeletePredicate::And(vec![
        DeletePredicate::Tag {
            key: "host".into(),
            test: StringTest {
                values: vec![host.into()],
                negated: false,
            },
        },
        DeletePredicate::Time {
            op: TimeOp::Lt,
            micros: before,
        },
    ])
}

/// Whether `t` falls in one of `ranges` (sorted, disjoint, inclusive).
pub fn in_ranges(ranges: &[(i64, i64)], t: i64) -> bool {
    let i = ranges.partition_point(|&(_, last)| last < t);
    ranges.get(i).is_some_and(|&(first, _)| first <= t)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn series(metric: &str, host: Option<&str>) -> SeriesKey {
        let tags: BTreeMap<String, String> = host
            .map(|h| [("host".to_string(), h.to_string())].into())
            .unwrap_or_default();
        SeriesKey::new(metric, tags)
    }

    fn leaf() -> impl Strategy<Value = DeletePredicate> {
        let op = prop_oneof![
            Just(TimeOp::Lt),
            Just(TimeOp::LtEq),
            Just(TimeOp::Gt),
            Just(TimeOp::GtEq),
            Just(TimeOp::Eq),
            Just(TimeOp::NotEq),
        ];
        let names = prop::collection::vec(prop_oneof![Just("a"), Just("b"), Just("c")], 1..3)
            .prop_map(|v| v.into_iter().map(String::from).collect::<Vec<_>>());
        prop_oneof![
            (op, -5i64..5).prop_map(|(op, micros)| DeletePredicate::Time { op, micros }),
            (names.clone(), any::<bool>()).prop_map(|(values, negated)| {
                DeletePredicate::Metric(StringTest { values, negated })
            }),
            (names, any::<bool>()).prop_map(|(values, negated)| DeletePredicate::Tag {
                key: "host".into(),
                test: StringTest { values, negated },
            }),
            any::<bool>().prop_map(|negated| DeletePredicate::TagIsNull {
                key: "host".into(),
                negated
            }),
            any::<bool>().prop_map(DeletePredicate::Const),
        ]
    }

    fn predicate() -> impl Strategy<Value = DeletePredicate> {
        leaf().prop_recursive(3, 16, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 1..3).prop_map(DeletePredicate::And),
                prop::collection::vec(inner.clone(), 1..3).prop_map(DeletePredicate::Or),
                inner.prop_map(|p| DeletePredicate::Not(Box::new(p))),
            ]
        })
    }

    proptest! {
        /// The resolved ranges say exactly what point-by-point evaluation
        /// says, for every series shape and every instant near the
        /// constants (and at the ends of time).
        #[test]
        fn ranges_agree_with_evaluation(p in predicate()) {
            let keys = [series("a", Some("a")), series("b", Some("c")), series("c", None)];
            let times: Vec<i64> = (-8..8).chain([i64::MIN, i64::MIN + 1, i64::MAX - 1, i64::MAX]).collect();
            for key in &keys {
                let ranges = p.ranges_for(Some(key));
                for &t in &times {
                    prop_assert_eq!(in_ranges(&ranges, t), p.eval(Some(key), t) == Some(true),
                        "{:?} at {} for {:?}: {:?}", p, t, key, ranges);
                }
            }
            // The unknown-series ranges cover every series' ranges.
            let any = p.ranges_for(None);
            for key in &keys {
                for &t in &times {
                    if p.eval(Some(key), t) == Some(true) {
                        prop_assert!(in_ranges(&any, t));
                    }
                }
            }
        }

        #[test]
        fn round_trips_through_json(p in predicate()) {
            let json = serde_json::to_string(&p).unwrap();
            prop_assert_eq!(serde_json::from_str::<DeletePredicate>(&json).unwrap(), p);
        }
    }

    #[test]
    fn a_missing_tag_is_unknown_not_unequal() {
        let p = DeletePredicate::Tag {
            key: "host".into(),
            test: StringTest {
                values: vec!["a".into()],
                negated: true,
            },
        };
        assert_eq!(p.eval(Some(&series("m", None)), 0), None);
        assert_eq!(p.eval(Some(&series("m", Some("b"))), 0), Some(true));
        // NOT of unknown stays unknown: deletes nothing either way.
        let not = DeletePredicate::Not(Box::new(p));
        assert!(not.ranges_for(Some(&series("m", None))).is_empty());
    }

    #[test]
    fn time_bounds_of_a_range() {
        let p = DeletePredicate::And(vec![
            DeletePredicate::Time {
                op: TimeOp::GtEq,
                micros: 10,
            },
            DeletePredicate::Time {
                op: TimeOp::Lt,
                micros: 20,
            },
        ]);
        assert_eq!(p.time_bounds(), Some((10, 19)));
        assert_eq!(DeletePredicate::Const(false).time_bounds(), None);
        assert_eq!(
            DeletePredicate::Const(true).time_bounds(),
            Some((i64::MIN, i64::MAX))
        );
    }
}
