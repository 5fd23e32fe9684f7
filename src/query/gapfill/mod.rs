//! Gap filling in the TimescaleDB manner: `time_bucket_gapfill(width,
//! time [, start, finish])` as a GROUP BY key makes an aggregate return
//! every bucket of the range for each group, not only buckets with data.
//! In the filled buckets plain aggregates are NULL, `locf(agg [, prev])`
//! carries the group's last value forward and `interpolate(agg)` draws a
//! line between the group's neighbouring values.
//!
//! How it runs: the analyzer rule replaces `time_bucket_gapfill` by
//! `time_bucket` (so the aggregate is the ordinary one, series rollup
//! included) and puts a `GapFill` node above it; `locf` and `interpolate`
//! become plain column references plus a fill mode on that node. The
//! physical planner turns the node into `GapFillExec`, which evaluates the
//! range once and fills the aggregate's rows.
//!
//! # Layout
//! - `udfs`: the three SQL functions (bucketing and markers).
//! - `rule`: the analyzer rule.
//! - `node`: the `GapFill` logical node.
//! - `exec`: `GapFillExec` and the planners that make it.
//! - `fill`: the kernel (rows in, filled rows out).
//!
//! May depend on `query`'s `functions`.

mod exec;
mod fill;
mod node;
mod rule;
mod udfs;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::ScalarUDF;
use datafusion::optimizer::AnalyzerRule;

/// `time_bucket_gapfill`, `locf` and `interpolate`.
pub fn functions() -> Vec<ScalarUDF> {
    vec![
        udfs::time_bucket_gapfill(),
        udfs::locf(),
        udfs::interpolate(),
    ]
}

/// The analyzer rule that plans gap filling.
pub fn rule() -> Arc<dyn AnalyzerRule + Send + Sync> {
    Arc::new(rule::GapFillRule)
}

/// DataFusion's physical planner, able to plan `GapFill` nodes.
pub fn query_planner() -> Arc<dyn QueryPlanner + Send + Sync> {
    Arc::new(exec::GapFillQueryPlanner)
}
