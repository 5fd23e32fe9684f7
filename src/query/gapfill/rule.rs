//! [`GapFillRule`], the analyzer rule that turns
//!
//! ```text
//! Projection(..., locf(agg_a), interpolate(agg_b), agg_c)
//!   Aggregate(group: time_bucket_gapfill(w, time [, start, finish]), keys...; aggs)
//! ```
//!
//! into
//!
//! ```text
//! Projection(..., agg_a, agg_b, agg_c)          -- same output names
//!   GapFill(bucket, keys, fills: a locf, b interpolate, c null; range)
//!     Projection(time_bucket(...) AS <the gapfill column's name>, ...)
//!       Aggregate(group: time_bucket(w, time), keys...; aggs)
//! ```
//!
//! The aggregate below is a plain `time_bucket` aggregate, so the series
//! rollup still applies to it. A missing start or finish is taken from the
//! `WHERE` conjuncts on the time column right under the aggregate. It runs
//! after DataFusion's type coercion, so `time >= '2024-...'` already
//! compares timestamps.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{plan_err, Column, Result};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{
    Aggregate, Between, BinaryExpr, Expr, Extension, LogicalPlan, Operator, Projection,
};
use datafusion::optimizer::AnalyzerRule;

use super::super::functions::time_bucket;
use super::node::{AggFill, Fill, GapFill, Range};
use super::udfs::{INTERPOLATE, LOCF, TIME_BUCKET_GAPFILL};

#[derive(Debug, Default)]
pub struct GapFillRule;

impl AnalyzerRule for GapFillRule {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        let plan = plan.transform_up_with_subqueries(rewrite)?.data;
        refuse_leftover_markers(&plan)?;
        Ok(plan)
    }

    fn name(&self) -> &str {
        "gap_fill"
    }
}

fn rewrite(plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    match plan {
        LogicalPlan::Aggregate(agg) => match gapfill_key(&agg)? {
            Some(i) => insert_gapfill(agg, i).map(Transformed::yes),
            None => Ok(Transformed::no(LogicalPlan::Aggregate(agg))),
        },
        LogicalPlan::Projection(p) if gapfill_input(&p.input).is_some() => {
            apply_fills(p).map(Transformed::yes)
        }
        other => Ok(Transformed::no(other)),
    }
}

/// `f(...)` (maybe aliased) when `f` is named `name`.
fn call_named<'a>(e: &'a Expr, name: &str) -> Option<&'a ScalarFunction> {
    match e {
        Expr::Alias(a) => call_named(&a.expr, name),
        Expr::ScalarFunction(f) if f.func.name() == name => Some(f),
        _ => None,
    }
}

/// The index of the aggregate's `time_bucket_gapfill` key, if it has one.
fn gapfill_key(agg: &Aggregate) -> Result<Option<usize>> {
    let keys: Vec<usize> = agg
        .group_expr
        .iter()
        .enumerate()
        .filter(|(_, e)| call_named(e, TIME_BUCKET_GAPFILL).is_some())
        .map(|(i, _)| i)
        .collect();
    match keys.as_slice() {
        [] => Ok(None),
        [i] => Ok(Some(*i)),
        _ => plan_err!("a query may group by only one time_bucket_gapfill"),
    }
}

fn gapfill_input(plan: &LogicalPlan) -> Option<&GapFill> {
    match plan {
        LogicalPlan::Extension(e) => e.node.as_any().downcast_ref::<GapFill>(),
        _ => None,
    }
}

fn strip_casts(e: &Expr) -> &Expr {
    match e {
        Expr::Cast(c) => strip_casts(&c.expr),
        Expr::TryCast(c) => strip_casts(&c.expr),
        _ => e,
    }
}

fn insert_gapfill(agg: Aggregate, key: usize) -> Result<LogicalPlan> {
    let call = call_named(&agg.group_expr[key], TIME_BUCKET_GAPFILL).expect("found by gapfill_key");
    let args = call.args.clone();
    let (width, time) = (args[0].clone(), args[1].clone());
    let range = range_of(&agg.input, &time, args.get(2), args.get(3))?;
    let (key_qualifier, key_field) = agg.schema.qualified_field(key);
    let key_name = (key_qualifier.cloned(), key_field.name().clone());

    let mut group_expr = agg.group_expr.clone();
    group_expr[key] = time_bucket().call(vec![width.clone(), time]);
    let n_groups = group_expr.len();
    let plain = LogicalPlan::Aggregate(Aggregate::try_new(
        agg.input.clone(),
        group_expr,
        agg.aggr_expr.clone(),
    )?);
    // The bucket column keeps the name the query's upper nodes refer to.
    let renamed: Vec<Expr> = plain
        .schema()
        .iter()
        .enumerate()
        .map(|(i, (q, f))| {
            let c = Expr::Column(Column::new(q.cloned(), f.name()));
            if i == key {
                c.alias_qualified(key_name.0.clone(), key_name.1.clone())
            } else {
                c
            }
        })
        .collect();
    let renamed = LogicalPlan::Projection(Projection::try_new(renamed, Arc::new(plain))?);
    let n_fields = renamed.schema().fields().len();
    let aggs = (n_groups..n_fields)
        .map(|column| AggFill {
            column,
            fill: Fill::Null,
            prev: None,
            name: None,
        })
        .collect();
    let groups = (0..n_groups).filter(|&i| i != key).collect();
    let node = GapFill::try_new(Arc::new(renamed), key, groups, aggs, width, range)?;
    Ok(LogicalPlan::Extension(Extension {
        node: Arc::new(node),
    }))
}

/// The range from the arguments, and what they leave open from `WHERE`.
fn range_of(
    input: &LogicalPlan,
    time: &Expr,
    start: Option<&Expr>,
    finish: Option<&Expr>,
) -> Result<Range> {
    let (mut starts, mut finishes) = match (start, finish) {
        (Some(_), Some(_)) => (vec![], vec![]),
        _ => where_bounds(input, time),
    };
    if let Some(s) = start {
        starts = vec![s.clone()];
    }
    if let Some(f) = finish {
        finishes = vec![(f.clone(), false)];
    }
    let missing = match (starts.is_empty(), finishes.is_empty()) {
        (true, true) => Some("a start and a finish"),
        (true, false) => Some("a start"),
        (false, true) => Some("a finish"),
        (false, false) => None,
    };
    if let Some(missing) = missing {
        return plan_err!(
            "time_bucket_gapfill needs {missing} for its range: bound the time column in WHERE \
             (time >= '...' AND time < '...') or pass them: time_bucket_gapfill(width, time, start, finish)"
        );
    }
    Ok(Range { starts, finishes })
}

/// Lower and upper bounds on `time` in the filters right under the
/// aggregate: `time >= x`, `time > x`, `time < x`, `time <= x` (either
/// side) and `time BETWEEN x AND y`.
fn where_bounds(input: &LogicalPlan, time: &Expr) -> (Vec<Expr>, Vec<(Expr, bool)>) {
    let (mut starts, mut finishes) = (vec![], vec![]);
    let time = strip_casts(time);
    if !matches!(time, Expr::Column(_)) {
        return (starts, finishes);
    }
    let mut plan = input;
    while let LogicalPlan::Filter(f) = plan {
        for c in split_conjunction(&f.predicate) {
            match c {
                Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                    let (op, bound) = if strip_casts(left) == time {
                        (*op, right.as_ref())
                    } else if strip_casts(right) == time {
                        match op.swap() {
                            Some(op) => (op, left.as_ref()),
                            None => continue,
                        }
                    } else {
                        continue;
                    };
                    match op {
                        Operator::Gt | Operator::GtEq => starts.push(bound.clone()),
                        Operator::Lt => finishes.push((bound.clone(), false)),
                        Operator::LtEq => finishes.push((bound.clone(), true)),
                        _ => {}
                    }
                }
                Expr::Between(Between {
                    expr,
                    negated: false,
                    low,
                    high,
                }) if strip_casts(expr) == time => {
                    starts.push(low.as_ref().clone());
                    finishes.push((high.as_ref().clone(), true));
                }
                _ => {}
            }
        }
        plan = f.input.as_ref();
    }
    (starts, finishes)
}

/// Replaces `locf(agg)` / `interpolate(agg)` in the projection over a
/// GapFill by `agg`, and records the fill on the GapFill node.
fn apply_fills(p: Projection) -> Result<LogicalPlan> {
    let mut node = gapfill_input(&p.input)
        .expect("checked by the caller")
        .clone();
    let mut exprs = Vec::with_capacity(p.expr.len());
    for e in p.expr {
        let (name_q, name) = e.qualified_name();
        let (inner, alias) = match e {
            Expr::Alias(a) => (*a.expr, Some((a.relation, a.name))),
            e => (e, None),
        };
        let out = inner.transform_up(|e| replace_marker(e, &mut node))?;
        let expr = match (out.transformed, alias) {
            (_, Some((q, n))) => out.data.alias_qualified(q, n),
            (true, None) => out.data.alias_qualified(name_q, name),
            (false, None) => out.data,
        };
        exprs.push(expr);
    }
    let node = GapFill::try_new(
        node.input.clone(),
        node.bucket,
        node.groups.clone(),
        node.aggs.clone(),
        node.width.clone(),
        node.range.clone(),
    )?;
    let input = LogicalPlan::Extension(Extension {
        node: Arc::new(node),
    });
    Ok(LogicalPlan::Projection(Projection::try_new(
        exprs,
        Arc::new(input),
    )?))
}

fn replace_marker(e: Expr, node: &mut GapFill) -> Result<Transformed<Expr>> {
    let (fill, marker) = match &e {
        Expr::ScalarFunction(f) if f.func.name() == LOCF => (Fill::Locf, LOCF),
        Expr::ScalarFunction(f) if f.func.name() == INTERPOLATE => (Fill::Interpolate, INTERPOLATE),
        _ => return Ok(Transformed::no(e)),
    };
    let name = e.schema_name().to_string();
    let Expr::ScalarFunction(f) = e else {
        unreachable!("matched above")
    };
    let mut args = f.args.into_iter();
    // `count(*)` comes as `count(Int64(1)) AS count(*)`.
    let target = args
        .next()
        .expect("the signature asks for an argument")
        .unalias_nested()
        .data;
    let prev = args.next();
    let Expr::Column(c) = &target else {
        return plan_err!("{marker}'s argument must be an aggregate of the query, as in {marker}(avg(value)); got {target}");
    };
    let index = node.schema_of_input().index_of_column(c)?;
    let column_type = node.schema_of_input().field(index).data_type().clone();
    if !node
        .aggs
        .iter()
        .any(|a| a.column == index && a.name.is_none())
    {
        return plan_err!(
            "{marker}'s argument must be an aggregate, not a GROUP BY key; got {target}"
        );
    }
    if fill == Fill::Interpolate && !column_type.is_numeric() {
        return plan_err!("interpolate needs a numeric aggregate; {target} is {column_type}");
    }
    if !node
        .aggs
        .iter()
        .any(|a| a.name.as_deref() == Some(name.as_str()))
    {
        node.aggs.push(AggFill {
            column: index,
            fill,
            prev,
            name: Some(name.clone()),
        });
    }
    Ok(Transformed::yes(Expr::Column(Column::new_unqualified(
        name,
    ))))
}

/// Any `time_bucket_gapfill`, `locf` or `interpolate` the rule did not
/// consume is in a place gap filling cannot reach.
fn refuse_leftover_markers(plan: &LogicalPlan) -> Result<()> {
    let mut found: Option<&'static str> = None;
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                if let Expr::ScalarFunction(f) = e {
                    for name in [TIME_BUCKET_GAPFILL, LOCF, INTERPOLATE] {
                        if f.func.name() == name {
                            found = Some(name);
                            return Ok(TreeNodeRecursion::Stop);
                        }
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })?;
    match found {
        None => Ok(()),
        Some(TIME_BUCKET_GAPFILL) => plan_err!(
            "time_bucket_gapfill must be a GROUP BY key of an aggregate query (GROUP BY time_bucket_gapfill(...)), not used elsewhere"
        ),
        Some(name) => plan_err!(
            "{name}(...) applies only to an aggregate in the SELECT list of a query grouped by time_bucket_gapfill, as in SELECT time_bucket_gapfill('1m', time), {name}(avg(value)) ... GROUP BY 1"
        ),
    }
}
