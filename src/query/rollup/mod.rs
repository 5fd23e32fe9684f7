//! Series rollup: aggregates over the `metrics` table computed per series
//! first, inside the scan, then merged by DataFusion.
//!
//! `metric` and `tags` are functions of `series_id`, so a `GROUP BY` over
//! them (and over `time_bucket(w, time)`) can group by series and bucket
//! first and by the user's keys second. The first step runs in the scan
//! ([`partial`]) on the raw `series_id, time, value` columns, without
//! building a `tags` map or a `metric` string per row; the second is an
//! ordinary DataFusion aggregate over one partial row per series and
//! bucket in each chunk.
//!
//! [`SeriesRollup`] is a logical optimizer rule that rewrites
//!
//! ```text
//! Aggregate(group: G(metric, tags, series_id)..., time_bucket(w, time)?;
//!           aggs: sum|count|min|max|avg(value), first|last_value(value ORDER BY time))
//!   [SubqueryAlias]
//!     TableScan(metrics, exact filters only)
//! ```
//!
//! into
//!
//! ```text
//! Projection(the original names and types)
//!   Aggregate(group: G..., bucket; aggs: merged partials)
//!     [SubqueryAlias]
//!       TableScan(metrics rollup: series_id, metric, tags, bucket, partials)
//! ```
//!
//! Anything else (a `WHERE` the scan cannot apply alone, other aggregates,
//! `DISTINCT`, grouping sets, `value` in a key) is left to DataFusion as
//! it was. The rule matches DataFusion's built-in aggregates by name:
//! StreamDB registers no function under those names.
//!
//! # Layout
//! - this file: the optimizer rule; it builds the rollup scan through
//!   `table`, so `table` imports none of it.
//! - `partial`: the kernel the scan runs, and the partial columns.
//! - `schema`: the rollup table's columns (what `table` needs to know).
//! - `last_value`: the rollup scan answered from the last-value cache
//!   when the query asks only for each series' latest point.
//!
//! May depend on `query`'s `filters`, `functions` and `table`.

mod last_value;
mod partial;
mod schema;

use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, Result, TableReference};
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::functions_aggregate::first_last::{first_value_udaf, last_value_udaf};
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::logical_expr::expr::{AggregateFunction, NullTreatment};
use datafusion::logical_expr::{
    cast, Aggregate, AggregateUDF, Expr, LogicalPlan, Projection, SortExpr, SubqueryAlias,
    TableScanBuilder,
};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};

pub use last_value::{build as build_last_values, LastValueCacheExec};
pub use partial::Partials;
pub use schema::rollup_schema;

use self::schema::{index_of, internal};
use super::filters::is_exact;
use super::functions::width_micros;
use super::table::MetricsTable;

/// The optimizer rule; see the module documentation.
#[derive(Debug, Default)]
pub struct SeriesRollup;

impl OptimizerRule for SeriesRollup {
    fn name(&self) -> &str {
        "streamdb_series_rollup"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(agg) = &plan else {
            return Ok(Transformed::no(plan));
        };
        match rewrite(agg)? {
            Some(p) => Ok(Transformed::yes(p)),
            None => Ok(Transformed::no(plan)),
        }
    }
}

/// How one original aggregate is computed from the merged partials.
enum Merge {
    /// The outer aggregate at this position.
    Direct(usize),
    /// `avg`: outer sum of sums over outer sum of counts.
    Ratio(usize, usize),
}

/// Outer aggregates under construction, and the rollup columns they read.
struct Outer {
    qualifier: TableReference,
    exprs: Vec<Expr>,
    columns: Vec<&'static str>,
}

impl Outer {
    /// Adds `func(column ORDER BY order)` over the rollup's partials and
    /// returns its position.
    fn push(
        &mut self,
        func: Arc<AggregateUDF>,
        column: &'static str,
        order: Option<&'static str>,
    ) -> usize {
        let col =
            |name: &str| Expr::Column(Column::new(Some(self.qualifier.clone()), internal(name)));
        let order_by: Vec<SortExpr> = order
            .map(|o| vec![col(o).sort(true, false)])
            .unwrap_or_default();
        let arg = col(column);
        self.columns.push(column);
        self.columns.extend(order);
        let i = self.exprs.len();
        self.exprs.push(
            Expr::AggregateFunction(AggregateFunction::new_udf(
                func,
                vec![arg],
                false,
                None,
                order_by,
                None,
            ))
            // Unique names: `avg` and `sum` may both sum the same column.
            .alias(format!("__rollup_agg_{i}")),
        );
        i
    }
}

fn rewrite(agg: &Aggregate) -> Result<Option<LogicalPlan>> {
    // DataFusion may compute `tags['k']` in a projection under the
    // aggregate: read through it to the scan's columns.
    let (input, agg) = match agg.input.as_ref() {
        LogicalPlan::Projection(p) => {
            let group = agg
                .group_expr
                .iter()
                .map(|e| inline(e, p))
                .collect::<Result<_>>()?;
            let aggr = agg
                .aggr_expr
                .iter()
                .map(|e| inline(e, p))
                .collect::<Result<_>>()?;
            (p.input.as_ref(), (group, aggr, &agg.schema))
        }
        input => (
            input,
            (agg.group_expr.clone(), agg.aggr_expr.clone(), &agg.schema),
        ),
    };
    let (group_expr, aggr_expr, schema) = agg;
    let (scan, alias) = match input {
        LogicalPlan::TableScan(s) => (s, None),
        LogicalPlan::SubqueryAlias(a) => match a.input.as_ref() {
            LogicalPlan::TableScan(s) => (s, Some(a.alias.clone())),
            _ => return Ok(None),
        },
        _ => return Ok(None),
    };
    let Ok(provider) = source_as_provider(&scan.source) else {
        return Ok(None);
    };
    let Some(table) = (provider.as_ref() as &dyn std::any::Any).downcast_ref::<MetricsTable>()
    else {
        return Ok(None);
    };
    if table.is_rollup()
        || scan.fetch.is_some()
        || !scan.filters.iter().all(is_exact)
        || group_expr.is_empty()
    {
        return Ok(None);
    }
    let qualifier = alias.clone().unwrap_or_else(|| scan.table_name.clone());

    // Group keys: series-level expressions as they are, one bucket width.
    let mut width: Option<i64> = None;
    let mut series_columns: Vec<&'static str> = Vec::new();
    let mut group = Vec::with_capacity(group_expr.len());
    for g in &group_expr {
        if let Some(w) = bucket_width(g) {
            if width.is_some_and(|have| have != w) {
                return Ok(None);
            }
            width = Some(w);
            group.push(Expr::Column(Column::new(
                Some(qualifier.clone()),
                internal("bucket"),
            )));
            continue;
        }
        if matches!(g, Expr::GroupingSet(_)) || g.is_volatile() {
            return Ok(None);
        }
        for c in g.column_refs() {
            match c.name.as_str() {
                "metric" => series_columns.push("metric"),
                "tags" => series_columns.push("tags"),
                "series_id" => series_columns.push("series_id"),
                _ => return Ok(None),
            }
        }
        group.push(g.clone());
    }

    let mut outer = Outer {
        qualifier: qualifier.clone(),
        exprs: Vec::new(),
        columns: Vec::new(),
    };
    let mut merges = Vec::with_capacity(aggr_expr.len());
    for a in &aggr_expr {
        let Some(m) = merge(unalias(a), &mut outer) else {
            return Ok(None);
        };
        merges.push(m);
    }

    // Only the columns the outer aggregate reads are built.
    let mut needed: Vec<usize> = series_columns
        .iter()
        .chain(&outer.columns)
        .map(|c| index_of(c))
        .collect();
    if width.is_some() {
        needed.push(index_of("bucket"));
    }
    needed.sort_unstable();
    needed.dedup();
    let rollup = MetricsTable::rollup_of(table, width, scan.filters.clone());
    let mut input = LogicalPlan::TableScan(
        TableScanBuilder::new(
            scan.table_name.clone(),
            // The last-value cache stands in when it can answer.
            provider_as_source(last_value::source(
                table,
                rollup,
                width,
                &needed,
                &scan.filters,
            )),
        )
        .with_projection(Some(needed))
        .build()?,
    );
    if let Some(alias) = alias {
        input = LogicalPlan::SubqueryAlias(SubqueryAlias::try_new(Arc::new(input), alias)?);
    }
    let n_group = group.len();
    let inner = Aggregate::try_new(Arc::new(input), group, outer.exprs)?;
    let field = |i: usize| Expr::Column(Column::from(inner.schema.qualified_field(i)));
    let mut exprs: Vec<Expr> = (0..n_group).map(field).collect();
    for m in merges {
        exprs.push(match m {
            Merge::Direct(i) => field(n_group + i),
            Merge::Ratio(s, c) => {
                cast(field(n_group + s), DataType::Float64)
                    / cast(field(n_group + c), DataType::Float64)
            }
        });
    }
    let exprs = exprs
        .into_iter()
        .zip(schema.iter())
        .map(|(e, (q, f))| e.alias_qualified(q.cloned(), f.name()))
        .collect();
    Ok(Some(LogicalPlan::Projection(
        Projection::try_new_with_schema(
            exprs,
            Arc::new(LogicalPlan::Aggregate(inner)),
            schema.clone(),
        )?,
    )))
}

/// `e` with references to `p`'s outputs replaced by their definitions.
fn inline(e: &Expr, p: &Projection) -> Result<Expr> {
    e.clone()
        .transform_up(|e| match &e {
            Expr::Column(c) => match p.schema.index_of_column(c) {
                Ok(i) => Ok(Transformed::yes(unalias(&p.expr[i]).clone())),
                Err(_) => Ok(Transformed::no(e)),
            },
            _ => Ok(Transformed::no(e)),
        })
        .map(|t| t.data)
}

fn unalias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => unalias(&a.expr),
        e => e,
    }
}

/// `time_bucket(<constant width>, time)`'s width in microseconds.
fn bucket_width(e: &Expr) -> Option<i64> {
    let Expr::ScalarFunction(f) = e else {
        return None;
    };
    match (f.name(), f.args.as_slice()) {
        ("time_bucket", [Expr::Literal(w, _), Expr::Column(c)]) if c.name == "time" => {
            width_micros(w).ok()
        }
        _ => None,
    }
}

fn is_column(e: &Expr, name: &str) -> bool {
    matches!(e, Expr::Column(c) if c.name == name)
}

/// The outer aggregates that recompute `e` from partials, or `None` when
/// `e` cannot be.
fn merge(e: &Expr, outer: &mut Outer) -> Option<Merge> {
    let Expr::AggregateFunction(AggregateFunction { func, params }) = e else {
        return None;
    };
    if params.distinct
        || params.filter.is_some()
        || matches!(params.null_treatment, Some(NullTreatment::IgnoreNulls))
        || params.args.len() != 1
    {
        return None;
    }
    let arg = &params.args[0];
    let on_value = is_column(arg, "value");
    let plain = params.order_by.is_empty();
    // The one ordering first/last_value can have here: by time.
    let by_time = match params.order_by.as_slice() {
        [s] if is_column(&s.expr, "time") => Some(s.asc),
        _ => None,
    };
    let sum = sum_udaf();
    Some(match func.name() {
        "sum" if on_value && plain => Merge::Direct(outer.push(func.clone(), "sum", None)),
        "min" if on_value && plain => Merge::Direct(outer.push(func.clone(), "min", None)),
        "max" if on_value && plain => Merge::Direct(outer.push(func.clone(), "max", None)),
        // Every `metrics` column is non-null: COUNT of any column or of a
        // constant counts rows.
        "count" if plain && counts_rows(arg) => Merge::Direct(outer.push(sum, "count", None)),
        "avg" if on_value && plain => Merge::Ratio(
            outer.push(sum.clone(), "sum", None),
            outer.push(sum, "count", None),
        ),
        "first_value" | "last_value" if on_value => {
            // `last_value(v ORDER BY time DESC)` is the first value in time.
            let last = (func.name() == "last_value") == by_time?;
            if last {
                Merge::Direct(outer.push(last_value_udaf(), "last_value", Some("last_time")))
            } else {
                Merge::Direct(outer.push(first_value_udaf(), "first_value", Some("first_time")))
            }
        }
        _ => return None,
    })
}

fn counts_rows(arg: &Expr) -> bool {
    match arg {
        Expr::Literal(v, _) => !v.is_null(),
        Expr::Column(_) => true,
        _ => false,
    }
}
