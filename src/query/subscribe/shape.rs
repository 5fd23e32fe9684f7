//! What kind of SELECT a subscription is, and how to maintain it from new
//! rows only.
//!
//! - **Rows**: no aggregation. Each batch of new rows is run through the
//!   SELECT as is; the matching rows are the update.
//! - **Aggregate**: `GROUP BY` (or whole-table aggregates) whose outputs are
//!   group expressions and `SUM`, `COUNT`, `AVG`, `MIN`, `MAX`. A *partial*
//!   query computes, per group of the new rows, `sum`, `count`, `min` and
//!   `max` of every aggregate's argument; those merge into the kept state
//!   and give every final value (`AVG = sum / count`). The cost of an update
//!   depends on the new rows and the groups they touch, not on history.
//!
//! Everything else (ORDER BY, LIMIT, HAVING, DISTINCT, joins, window
//! functions, other aggregates, `now()`) is refused with the reason:
//! maintaining it would need history or retractions.

use std::ops::ControlFlow;

use datafusion::common::tree_node::TreeNode;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::{
    visit_expressions, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Query,
    Select, SelectItem, SetExpr, Statement, TableFactor, Value,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::super::QueryError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggKind {
    Sum,
    Count,
    Avg,
    Min,
    Max,
}

/// One output column of an aggregate subscription.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// The j-th group expression.
    Group(usize),
    /// The i-th aggregate.
    Agg(usize, AggKind),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    Rows,
    Aggregate {
        /// Columns `__g0..`, then per aggregate `__s, __c, __n, __x`.
        partial_sql: String,
        groups: usize,
        aggs: usize,
        outputs: Vec<Output>,
    },
}

fn refuse(why: impl std::fmt::Display) -> QueryError {
    QueryError::Invalid(format!(
        "SUBSCRIBE cannot maintain this query incrementally: {why}"
    ))
}

pub fn analyze(select: &str) -> Result<Shape, QueryError> {
    crate::query::check_complexity(select)?;
    let mut stmts = Parser::parse_sql(&GenericDialect {}, select)
        .map_err(|e| QueryError::Invalid(e.to_string()))?;
    if stmts.len() != 1 {
        return Err(QueryError::Invalid(
            "SUBSCRIBE takes exactly one SELECT".into(),
        ));
    }
    let Statement::Query(q) = stmts.remove(0) else {
        return Err(QueryError::Invalid("SUBSCRIBE TO needs a SELECT".into()));
    };
    let sel = plain_select(&q)?;
    reject_clock(&q)?;
    let groups = group_exprs(sel)?;
    let has_aggs = sel
        .projection
        .iter()
        .any(|item| item_expr(item).is_some_and(contains_aggregate));
    if groups.is_empty() && !has_aggs {
        return Ok(Shape::Rows);
    }
    let mut outputs = Vec::new();
    let mut aggs: Vec<(AggKind, String)> = Vec::new();
    for item in &sel.projection {
        let expr = item_expr(item).ok_or_else(|| refuse("`*` cannot be combined with GROUP BY"))?;
        if let Some(j) = groups.iter().position(|g| g == expr) {
            outputs.push(Output::Group(j));
        } else if let Some((kind, arg)) = aggregate_call(expr)? {
            outputs.push(Output::Agg(aggs.len(), kind));
            aggs.push((kind, arg));
        } else {
            return Err(refuse(format!(
                "`{expr}` is neither a GROUP BY expression nor SUM, COUNT, AVG, MIN or MAX of one"
            )));
        }
    }
    // Updates replace rows by their group key, which the client can only
    // see if every group expression is an output column.
    if let Some(hidden) = (0..groups.len()).find(|j| !outputs.contains(&Output::Group(*j))) {
        return Err(refuse(format!(
            "GROUP BY `{}` is not a column of the SELECT, so updates could not be matched \
             to rows; add it to the SELECT list",
            groups[hidden]
        )));
    }
    let mut cols: Vec<String> = groups
        .iter()
        .enumerate()
        .map(|(j, g)| format!("{g} AS __g{j}"))
        .collect();
    for (i, (kind, arg)) in aggs.iter().enumerate() {
        let count = if *kind == AggKind::Count && arg == "*" {
            "count(*)".to_string()
        } else {
            format!("count({arg})")
        };
        let arg = if arg == "*" { "1" } else { arg.as_str() };
        cols.push(format!("sum({arg}) AS __s{i}"));
        cols.push(format!("{count} AS __c{i}"));
        cols.push(format!("min({arg}) AS __n{i}"));
        cols.push(format!("max({arg}) AS __x{i}"));
    }
    let mut partial_sql = format!("SELECT {} FROM {}", cols.join(", "), sel.from[0]);
    if let Some(w) = &sel.selection {
        partial_sql.push_str(&format!(" WHERE {w}"));
    }
    if !groups.is_empty() {
        let list: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        partial_sql.push_str(&format!(" GROUP BY {}", list.join(", ")));
    }
    Ok(Shape::Aggregate {
        partial_sql,
        groups: groups.len(),
        aggs: aggs.len(),
        outputs,
    })
}

/// Checks the planned SELECT against its shape. The syntactic analysis
/// knows only the aggregates it can maintain by name; DataFusion knows them
/// all, so a Rows-shaped query whose plan aggregates (`approx_median(value)`
/// without GROUP BY, a UDAF) is refused here instead of being answered per
/// batch.
pub fn check_plan(shape: &Shape, plan: &LogicalPlan) -> Result<(), QueryError> {
    if *shape != Shape::Rows {
        return Ok(());
    }
    let aggregates = plan
        .exists(|node| {
            Ok(matches!(
                node,
                LogicalPlan::Aggregate(_) | LogicalPlan::Window(_)
            ))
        })
        .map_err(QueryError::from_datafusion)?;
    if aggregates {
        return Err(refuse(
            "it aggregates with a function other than SUM, COUNT, AVG, MIN or MAX",
        ));
    }
    Ok(())
}

/// A single SELECT from `metrics` without the clauses that need history.
fn plain_select(q: &Query) -> Result<&Select, QueryError> {
    if q.with.is_some() {
        return Err(refuse("WITH (common table expressions) is not supported"));
    }
    if q.order_by.is_some() || q.limit_clause.is_some() || q.fetch.is_some() {
        return Err(refuse(
            "ORDER BY / LIMIT / FETCH describe a whole result, not changes; drop them",
        ));
    }
    let SetExpr::Select(sel) = q.body.as_ref() else {
        return Err(refuse(
            "only a single SELECT (no UNION, VALUES or nested query) is supported",
        ));
    };
    if sel.distinct.is_some() {
        return Err(refuse("DISTINCT is not supported"));
    }
    if sel.having.is_some() {
        return Err(refuse(
            "HAVING is not supported (a group could leave and re-enter the result)",
        ));
    }
    if sel.from.len() != 1 || !sel.from[0].joins.is_empty() {
        return Err(refuse(
            "the query must read the metrics table alone (no joins)",
        ));
    }
    match &sel.from[0].relation {
        TableFactor::Table { name, .. }
            if name.to_string().to_ascii_lowercase().rsplit('.').next() == Some("metrics") => {}
        other => {
            return Err(refuse(format!(
                "the query must read `metrics`, not `{other}`"
            )))
        }
    }
    let mut bad = None;
    let _ = visit_expressions(sel, |e| {
        match e {
            Expr::Function(f) if f.over.is_some() => {
                bad = Some("window functions are not supported")
            }
            Expr::Subquery(_) | Expr::InSubquery { .. } | Expr::Exists { .. } => {
                bad = Some("subqueries are not supported")
            }
            // A fill needs every bucket of a range; an update has only
            // the groups new rows touch.
            Expr::Function(f)
                if matches!(
                    f.name.to_string().to_ascii_lowercase().as_str(),
                    "time_bucket_gapfill" | "locf" | "interpolate"
                ) =>
            {
                bad = Some(
                    "gap filling (time_bucket_gapfill, locf, interpolate) is not supported; use time_bucket",
                )
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    match bad {
        Some(why) => Err(refuse(why)),
        None => Ok(sel),
    }
}

/// `now()` moves with the clock: rows would have to leave the result as
/// time passes, which new data alone cannot tell.
fn reject_clock(q: &Query) -> Result<(), QueryError> {
    let mut uses_clock = false;
    let _ = visit_expressions(q, |e| {
        if let Expr::Function(f) = e {
            let name = f.name.to_string().to_ascii_lowercase();
            if matches!(
                name.as_str(),
                "now" | "current_timestamp" | "current_date" | "current_time"
            ) {
                uses_clock = true;
            }
        }
        ControlFlow::<()>::Continue(())
    });
    if uses_clock {
        return Err(refuse(
            "now() moves with the clock, so rows would leave the result without new data; \
             filter on fixed times (time >= '2024-01-15T00:00:00Z') or drop the condition",
        ));
    }
    Ok(())
}

fn item_expr(item: &SelectItem) -> Option<&Expr> {
    match item {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => Some(e),
        _ => None,
    }
}

/// GROUP BY expressions, with ordinals (`GROUP BY 1`) and output aliases
/// resolved to the projected expressions they name.
fn group_exprs(sel: &Select) -> Result<Vec<Expr>, QueryError> {
    let exprs = match &sel.group_by {
        GroupByExpr::Expressions(e, modifiers) if modifiers.is_empty() => e,
        _ => {
            return Err(refuse(
                "GROUP BY ALL, ROLLUP, CUBE and GROUPING SETS are not supported",
            ))
        }
    };
    exprs
        .iter()
        .map(|g| {
            if let Expr::Value(v) = g {
                if let Value::Number(n, _) = &v.value {
                    let i: usize = n.parse().map_err(|_| refuse(format!("GROUP BY {n}")))?;
                    return sel
                        .projection
                        .get(i.wrapping_sub(1))
                        .and_then(item_expr)
                        .cloned()
                        .ok_or_else(|| {
                            QueryError::Invalid(format!(
                                "GROUP BY {i} is not a column of the SELECT"
                            ))
                        });
                }
            }
            if let Expr::Identifier(id) = g {
                let aliased = sel.projection.iter().find_map(|item| match item {
                    SelectItem::ExprWithAlias { expr, alias }
                        if alias.value.eq_ignore_ascii_case(&id.value) =>
                    {
                        Some(expr.clone())
                    }
                    _ => None,
                });
                if let Some(e) = aliased {
                    return Ok(e);
                }
            }
            Ok(g.clone())
        })
        .collect()
}

const AGGREGATES: &[&str] = &[
    "sum",
    "count",
    "avg",
    "mean",
    "min",
    "max",
    "median",
    "stddev",
    "variance",
    "first_value",
    "last_value",
    "array_agg",
    "string_agg",
    "approx_distinct",
    "approx_percentile_cont",
    "bit_and",
    "bit_or",
    "bool_and",
    "bool_or",
    "corr",
    "covar",
    "var_pop",
    "stddev_pop",
    "var_samp",
    "stddev_samp",
];

fn contains_aggregate(e: &Expr) -> bool {
    let mut found = false;
    let _ = visit_expressions(e, |x| {
        if let Expr::Function(f) = x {
            let name = f.name.to_string().to_ascii_lowercase();
            if AGGREGATES.contains(&name.as_str()) {
                found = true;
            }
        }
        ControlFlow::<()>::Continue(())
    });
    found
}

/// `SUM(x)`, `COUNT(x)`, `COUNT(*)`, `AVG(x)`, `MIN(x)`, `MAX(x)` at the top
/// of an output expression: the kind and the argument's SQL.
fn aggregate_call(e: &Expr) -> Result<Option<(AggKind, String)>, QueryError> {
    let Expr::Function(f) = e else {
        return Ok(None);
    };
    let name = f.name.to_string().to_ascii_lowercase();
    let kind = match name.as_str() {
        "sum" => AggKind::Sum,
        "count" => AggKind::Count,
        "avg" | "mean" => AggKind::Avg,
        "min" => AggKind::Min,
        "max" => AggKind::Max,
        _ => return Ok(None),
    };
    let FunctionArguments::List(list) = &f.args else {
        return Err(refuse(format!("`{e}` needs one argument")));
    };
    if list.duplicate_treatment.is_some()
        || !list.clauses.is_empty()
        || f.filter.is_some()
        || !f.within_group.is_empty()
    {
        return Err(refuse(format!(
            "`{e}`: DISTINCT, FILTER and ORDER BY inside aggregates are not supported"
        )));
    }
    match list.args.as_slice() {
        [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)] if kind == AggKind::Count => {
            Ok(Some((kind, "*".into())))
        }
        [FunctionArg::Unnamed(FunctionArgExpr::Expr(arg))] => Ok(Some((kind, arg.to_string()))),
        _ => Err(refuse(format!("`{e}` needs exactly one argument"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_aggregates() {
        assert_eq!(
            analyze("SELECT time, value FROM metrics WHERE value > 1").unwrap(),
            Shape::Rows
        );
        let Shape::Aggregate {
            partial_sql,
            groups,
            aggs,
            outputs,
        } = analyze("SELECT time_bucket('5s', time) AS b, avg(value), count(*) FROM metrics WHERE metric = 'cpu' GROUP BY 1")
            .unwrap()
        else {
            panic!("aggregate expected")
        };
        assert_eq!((groups, aggs), (1, 2));
        assert_eq!(
            outputs,
            [
                Output::Group(0),
                Output::Agg(0, AggKind::Avg),
                Output::Agg(1, AggKind::Count)
            ]
        );
        assert_eq!(
            partial_sql,
            "SELECT time_bucket('5s', time) AS __g0, sum(value) AS __s0, count(value) AS __c0, min(value) AS __n0, \
             max(value) AS __x0, sum(1) AS __s1, count(*) AS __c1, min(1) AS __n1, max(1) AS __x1 FROM metrics \
             WHERE metric = 'cpu' GROUP BY time_bucket('5s', time)"
        );
        // Aliases in GROUP BY and whole-table aggregates.
        assert!(matches!(
            analyze("SELECT tags['host'] AS host, max(value) FROM metrics GROUP BY host").unwrap(),
            Shape::Aggregate { groups: 1, .. }
        ));
        assert!(matches!(
            analyze("SELECT sum(value) FROM metrics").unwrap(),
            Shape::Aggregate {
                groups: 0,
                aggs: 1,
                ..
            }
        ));
    }

    #[test]
    fn refuses_what_needs_history_with_a_reason() {
        for (sql, why) in [
            (
                "SELECT avg(value) FROM metrics GROUP BY metric ORDER BY 1",
                "ORDER BY",
            ),
            ("SELECT value FROM metrics LIMIT 3", "LIMIT"),
            (
                "SELECT metric, avg(value) FROM metrics GROUP BY metric HAVING avg(value) > 1",
                "HAVING",
            ),
            (
                "SELECT metric, median(value) FROM metrics GROUP BY metric",
                "median",
            ),
            (
                "SELECT metric, avg(value) * 2 FROM metrics GROUP BY metric",
                "avg(value) * 2",
            ),
            (
                "SELECT value FROM metrics WHERE time > now() - INTERVAL '1 minute'",
                "now()",
            ),
            ("SELECT value, row_number() OVER () FROM metrics", "window"),
            (
                "SELECT time_bucket_gapfill('1m', time) AS b, avg(value) FROM metrics GROUP BY 1",
                "gap filling",
            ),
            ("SELECT count(DISTINCT metric) FROM metrics", "DISTINCT"),
            ("SELECT * FROM other", "metrics"),
            (
                "SELECT metric, avg(value) FROM metrics GROUP BY metric, tags['host']",
                "not a column of the SELECT",
            ),
        ] {
            let err = analyze(sql).unwrap_err().to_string();
            assert!(err.contains(why), "{sql}: {err}");
        }
    }
}
