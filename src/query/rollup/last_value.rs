//! Answers "latest value of every series" from the last-value cache
//! (`ingest::LastValues`) instead of scanning.
//!
//! The series rollup rule hands its rollup scan here ([`source`]). When
//! the outer aggregate reads only the series columns and the latest
//! point (`last_value(value ORDER BY time)`), without time buckets, and
//! the filters are on `metric`/`tags` plus at most a lower time bound,
//! the scan is wrapped in a [`LastValueTable`]. At physical planning that
//! table asks the cache: complete, it emits one partial row per series
//! ([`LastValueCacheExec`]), the very rows the rollup scan would have
//! folded to; otherwise it plans the rollup scan it wraps. The cache is
//! built over the stored data on first use, in the background; queries
//! scan until it is done.
//!
//! May depend on `rollup`'s `partial` and `schema`, and on `query`'s
//! `convert`, `filters` and `table`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, SchemaRef, TimestampMicrosecondType, UInt64Type};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::Result;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use datafusion::prelude::SessionContext;
use futures::StreamExt;

use super::partial::Partials;
use super::schema::{index_of, rollup_schema};
use crate::ingest::{CacheState, LastValues, ReadView};
use crate::model::points_of;
use crate::query::convert::to_rollup_batch;
use crate::query::filters::analyze;
use crate::query::table::MetricsTable;

/// The rollup columns the cache can produce.
const CACHED: [&str; 5] = ["series_id", "metric", "tags", "last_time", "last_value"];

/// What the rollup rule scans: `rollup` itself, or `rollup` behind the
/// cache when the shape fits (see the module documentation). `needed` are
/// the rollup columns read, `width` the bucket width.
pub(super) fn source(
    table: &MetricsTable,
    rollup: MetricsTable,
    width: Option<i64>,
    needed: &[usize],
    filters: &[Expr],
) -> Arc<dyn TableProvider> {
    let fits = width.is_none()
        && needed.iter().all(|i| CACHED.iter().any(|c| index_of(c) == *i))
        // An upper time bound would need the newest point below it.
        && analyze(filters).time.max == i64::MAX;
    let view = table.live_view().filter(|_| fits);
    let Some((view, cache)) = view.and_then(|v| Some((v, v.last_values()?.clone()))) else {
        return Arc::new(rollup);
    };
    if matches!(cache.state(), CacheState::Off | CacheState::OverLimit) {
        return Arc::new(rollup);
    }
    start_build(view);
    Arc::new(LastValueTable {
        rollup,
        view: view.clone(),
        cache,
        filters: filters.to_vec(),
    })
}

/// Builds the cache over the stored data in the background, if due.
fn start_build(view: &Arc<dyn ReadView>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if view
        .last_values()
        .is_some_and(|c| c.state() == CacheState::Unbuilt)
    {
        let view = view.clone();
        rt.spawn(async move {
            if let Err(e) = build(&view).await {
                tracing::warn!(error = %e, "building the last-value cache failed; queries scan");
            }
        });
    }
}

/// Builds the cache over the data stored now, if a build is due. Returns
/// whether the cache is complete afterwards.
pub async fn build(view: &Arc<dyn ReadView>) -> Result<bool> {
    let Some(cache) = view.last_values() else {
        return Ok(false);
    };
    let Some(ticket) = cache.begin_build() else {
        return Ok(cache.state() == CacheState::Complete);
    };
    // After `begin_build`: every batch applied from here on is folded in
    // directly, every earlier one is in this snapshot.
    let snap = view.snapshot();
    let applied = snap.applied.0;
    match newest_per_series(MetricsTable::at(view.clone(), snap)).await {
        Ok(rows) => Ok(cache.finish_build(ticket, applied, rows)),
        Err(e) => {
            cache.abandon_build(ticket);
            Err(e)
        }
    }
}

/// The rollup scan of `table`'s newest point per series.
async fn newest_per_series(table: MetricsTable) -> Result<Vec<(u64, i64, f64)>> {
    let rollup = MetricsTable::rollup_of(&table, None, Vec::new());
    let ctx = SessionContext::new();
    let projection = vec![
        index_of("series_id"),
        index_of("last_time"),
        index_of("last_value"),
    ];
    let plan = rollup
        .scan(&ctx.state(), Some(&projection), &[], None)
        .await?;
    let mut batches = datafusion::physical_plan::execute_stream(plan, ctx.task_ctx())?;
    // One partial per series and unit of the scan, folded as they come
    // (memory: one entry per series): keep each series' newest. Two units
    // cannot tie on one series and time: units whose times overlap are
    // read merged, newest value per key (one value per series and time).
    let mut newest: HashMap<u64, (i64, f64), crate::model::IdHashBuilder> = HashMap::default();
    while let Some(b) = batches.next().await {
        let b = b?;
        let ids = b.column(0).as_primitive::<UInt64Type>().values();
        let times = b
            .column(1)
            .as_primitive::<TimestampMicrosecondType>()
            .values();
        let values = b.column(2).as_primitive::<Float64Type>().values();
        for ((&id, &t), &v) in ids.iter().zip(times).zip(values) {
            let e = newest.entry(id).or_insert((t, v));
            if t >= e.0 {
                *e = (t, v);
            }
        }
    }
    Ok(newest.into_iter().map(|(id, (t, v))| (id, t, v)).collect())
}

/// The rollup table, answered from the cache when it is complete.
#[derive(Debug)]
pub struct LastValueTable {
    rollup: MetricsTable,
    view: Arc<dyn ReadView>,
    cache: Arc<LastValues>,
    /// The rollup's filters (exact, on series and a lower time bound).
    filters: Vec<Expr>,
}

#[async_trait]
impl TableProvider for LastValueTable {
    fn schema(&self) -> SchemaRef {
        rollup_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let f = analyze(&self.filters);
        let catalog = self.view.catalog();
        let series = catalog.resolve(&f.series);
        let Some(rows) = self.cache.answer(series.as_ref(), f.time.min) else {
            return self.rollup.scan(state, projection, filters, limit).await;
        };
        // The rows the rollup scan would fold: one point per series (a
        // series retention removed from the catalog has no rows left).
        let points: Vec<(u64, i64, f64)> = rows
            .into_iter()
            .filter(|(id, _)| catalog.contains(crate::model::SeriesId(*id)))
            .map(|(id, p)| (id, p.time, p.value))
            .collect();
        let series_count = points.len();
        let mut partials = Partials::new(None);
        partials.add(&points_of(&points));
        let projection: Vec<usize> = projection
            .cloned()
            .unwrap_or_else(|| (0..rollup_schema().fields().len()).collect());
        let schema = Arc::new(rollup_schema().project(&projection)?);
        let batch = to_rollup_batch(partials, catalog, &projection, &schema)?;
        Ok(Arc::new(LastValueCacheExec::new(batch, series_count)))
    }
}

/// The latest point of each series, from the last-value cache.
#[derive(Debug)]
pub struct LastValueCacheExec {
    batch: RecordBatch,
    series: usize,
    properties: Arc<PlanProperties>,
}

impl LastValueCacheExec {
    fn new(batch: RecordBatch, series: usize) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(batch.schema()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self {
            batch,
            series,
            properties,
        }
    }
}

impl DisplayAs for LastValueCacheExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "LastValueCacheExec: series={}", self.series)
    }
}

impl ExecutionPlan for LastValueCacheExec {
    fn name(&self) -> &'static str {
        "LastValueCacheExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        _partition: usize,
        _ctx: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let batch = self.batch.clone();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            batch.schema(),
            futures::stream::iter([Ok(batch)]),
        )))
    }
}

#[cfg(test)]
mod tests;
