//! The read path: a DataFusion session over the `metrics` table, with
//! StreamDB's time-series functions and SQL dialect.
//!
//! # Layout
//! - `table`: the `metrics` TableProvider (pruning, planning).
//! - `scan`: the ExecutionPlan that reads chunks and the buffer.
//! - `rollup`: aggregates computed per series inside the scan, merged by
//!   DataFusion (an optimizer rule and its kernel), and the last-value
//!   cache standing in for that scan when only latest points are asked.
//! - `filters`: time range and series predicates from query filters.
//! - `convert`: point batches to `metrics` rows.
//! - `functions`, `duration`, `dialect`: `time_bucket`, duration strings.
//! - `gapfill`: `time_bucket_gapfill`, `locf`, `interpolate` (a rule, a
//!   plan node and its operator).
//! - `names`: result column names (`avg`, not `avg(metrics.value)`).
//! - [`subscribe`]: continuous queries (`SUBSCRIBE TO SELECT ...`).
//! - `complexity`: the bound on operator chains, checked before parsing.
//! - [`delete`]: `DELETE` planned into the predicate the log records,
//!   and the rows it removed counted.
//! - `running`: [`Admission`], a running query's slot, metrics and
//!   slow-query log line.
//! - `error`: [`QueryError`], which every file here may return.
//!
//! Plans are read-only: DDL, DML and `SET` are refused in
//! [`QueryEngine::plan`]; a DELETE is planned by
//! [`QueryEngine::plan_delete`] and logged by the engine's owner.
//!
//! May depend on `model`, `storage` and `ingest` (read only).

mod complexity;
mod convert;
pub mod delete;
mod dialect;
mod duration;
mod error;
mod filters;
mod functions;
mod gapfill;
mod names;
mod rollup;
mod running;
mod scan;
pub mod subscribe;
mod table;

use std::sync::Arc;
use std::time::Duration;

use datafusion::execution::context::SQLOptions;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement};

pub use complexity::check as check_complexity;
pub use duration::parse_duration_micros;
pub use error::QueryError;
pub use rollup::{build_last_values, LastValueCacheExec};
pub use running::Admission;
pub use scan::{MetricsScanExec, PruneStats};
pub use table::MetricsTable;

use crate::ingest::ReadView;

#[derive(Debug, Clone)]
pub struct QueryConfig {
    /// Memory one query may use before it fails.
    pub memory_limit: usize,
    /// Wall time one query may take.
    pub timeout: Duration,
    /// Queries that may run at once; more are refused, not queued, so a
    /// burst cannot pile up memory behind the ones running.
    pub max_concurrent: usize,
    /// Queries slower than this are logged (target `streamdb::slow_query`).
    pub slow_threshold: Option<Duration>,
    /// The largest answer `/v1/query` encodes (JSON, CSV or Arrow bytes);
    /// past it the query is refused with 429. Flight SQL streams and is
    /// not capped.
    pub max_result_bytes: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            memory_limit: 2 << 30,
            timeout: Duration::from_secs(300),
            max_concurrent: 64,
            slow_threshold: Some(Duration::from_secs(1)),
            max_result_bytes: 256 << 20,
        }
    }
}

/// Refuses a plan that still has parameters without values: the client
/// forgot to bind them.
pub fn check_bound(df: &DataFrame) -> Result<(), QueryError> {
    let types = df
        .logical_plan()
        .get_parameter_types()
        .map_err(QueryError::from_datafusion)?;
    if types.is_empty() {
        return Ok(());
    }
    let mut names: Vec<&String> = types.keys().collect();
    names.sort();
    let names: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
    Err(QueryError::Invalid(format!(
        "query has parameters without values: {}",
        names.join(", ")
    )))
}

/// The one statement `sql` holds, within the complexity bound.
fn parse_one(sql: &str) -> Result<Statement, QueryError> {
    complexity::check(sql)?;
    let mut stmts = DFParser::parse_sql(sql).map_err(QueryError::from_datafusion)?;
    if stmts.len() != 1 {
        return Err(QueryError::Invalid(format!(
            "expected exactly one SQL statement, got {}",
            stmts.len()
        )));
    }
    Ok(stmts.pop_front().expect("one statement"))
}

/// Plans and runs SQL against the engine's data.
pub struct QueryEngine {
    engine: Arc<dyn ReadView>,
    config: QueryConfig,
    slots: Arc<tokio::sync::Semaphore>,
}

impl QueryEngine {
    pub fn new(engine: Arc<dyn ReadView>, config: QueryConfig) -> Self {
        let slots = Arc::new(tokio::sync::Semaphore::new(config.max_concurrent));
        Self {
            engine,
            config,
            slots,
        }
    }

    /// Takes a slot for one query run over `protocol`, or refuses it when
    /// `max_concurrent` queries are already running. Hold the admission
    /// until the query's last batch is sent.
    pub fn admit(&self, protocol: &'static str, sql: &str) -> Result<Arc<Admission>, QueryError> {
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => Ok(Arc::new(Admission::new(
                permit,
                protocol,
                sql,
                self.config.slow_threshold,
                self.engine.clock().clone(),
            ))),
            Err(_) => {
                crate::telemetry::metrics().limited("concurrent_queries");
                Err(QueryError::Busy(self.config.max_concurrent))
            }
        }
    }

    pub fn engine(&self) -> &Arc<dyn ReadView> {
        &self.engine
    }

    pub fn config(&self) -> &QueryConfig {
        &self.config
    }

    /// A fresh session: the `metrics` table, time-series functions, and a
    /// per-query memory pool.
    pub fn session(&self) -> Result<SessionContext, QueryError> {
        self.session_over(Arc::new(MetricsTable::new(self.engine.clone())))
    }

    /// A session whose `metrics` table is `table` (a fixed snapshot, or the
    /// new rows a continuous query folds in).
    pub fn session_over(
        &self,
        table: Arc<dyn datafusion::datasource::TableProvider>,
    ) -> Result<SessionContext, QueryError> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(self.config.memory_limit)))
            .build_arc()
            .map_err(QueryError::from_datafusion)?;
        // The names Flight SQL metadata reports, so `streamdb.public.metrics` works.
        let mut cfg = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema("streamdb", "public");
        // Plain Utf8 strings: view types break some Flight SQL clients.
        cfg.options_mut().sql_parser.map_string_types_to_utf8view = false;
        cfg.options_mut().execution.parquet.schema_force_view_types = false;
        let state = SessionStateBuilder::new()
            .with_config(cfg)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_optimizer_rule(Arc::new(rollup::SeriesRollup))
            .with_analyzer_rule(gapfill::rule())
            .with_query_planner(gapfill::query_planner())
            .build();
        let ctx = SessionContext::new_with_state(state);
        ctx.register_table("metrics", table)
            .map_err(QueryError::from_datafusion)?;
        ctx.register_udf(functions::time_bucket());
        for f in gapfill::functions() {
            ctx.register_udf(f);
        }
        Ok(ctx)
    }

    /// Parses StreamDB SQL into a logical plan.
    pub async fn plan(&self, ctx: &SessionContext, sql: &str) -> Result<LogicalPlan, QueryError> {
        let mut stmt = parse_one(sql)?;
        match &mut stmt {
            Statement::Statement(s) => dialect::rewrite(s.as_mut()),
            Statement::Explain(e) => {
                if let Statement::Statement(s) = e.statement.as_mut() {
                    dialect::rewrite(s.as_mut())
                }
            }
            _ => {}
        }
        let plan = ctx
            .state()
            .statement_to_plan(stmt)
            .await
            .map_err(QueryError::from_datafusion)?;
        // Clients may only read: no CREATE EXTERNAL TABLE over server files,
        // no COPY ... TO a server path, no SET of session options.
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)
            .map_err(|e| {
                QueryError::Invalid(format!(
                    "StreamDB runs read-only queries (SELECT, EXPLAIN, SHOW): {}",
                    e.strip_backtrace()
                ))
            })?;
        names::friendly(plan)
    }

    /// Plans `sql` into a DataFrame ready to stream.
    pub async fn sql(&self, sql: &str) -> Result<DataFrame, QueryError> {
        let ctx = self.session()?;
        let plan = self.plan(&ctx, sql).await?;
        ctx.execute_logical_plan(plan)
            .await
            .map_err(QueryError::from_datafusion)
    }
}

#[cfg(test)]
mod dedup_tests;
#[cfg(test)]
pub(crate) mod tests;
