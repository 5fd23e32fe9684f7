//! The `metrics` table: plans a scan over a consistent snapshot of chunks
//! and write buffer, pruned by time and by series before any I/O.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::Result;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

use super::filters::{analyze, is_exact};
use super::rollup::rollup_schema;
use super::scan::{merge_overlapping, MetricsScanExec, PruneStats, Work};
use crate::ingest::{ReadView, Snapshot};
use crate::model::sql_schema;

#[derive(Debug)]
pub struct MetricsTable {
    engine: Arc<dyn ReadView>,
    schema: SchemaRef,
    /// Read this snapshot instead of the engine's current one (continuous
    /// queries start from a snapshot whose offset they know).
    fixed: Option<Snapshot>,
    /// Set on the table the series rollup rule scans instead (see
    /// [`super::rollup`]): partial aggregates, not rows.
    rollup: Option<RollupScan>,
}

#[derive(Debug, Clone)]
struct RollupScan {
    /// Bucket width in microseconds, or one bucket per series.
    width: Option<i64>,
    /// The original scan's filters, all exact.
    filters: Vec<Expr>,
}

impl MetricsTable {
    pub fn new(engine: Arc<dyn ReadView>) -> Self {
        Self {
            engine,
            schema: sql_schema(),
            fixed: None,
            rollup: None,
        }
    }

    /// The rollup of `table`'s rows per series and bucket, filtered by
    /// `filters` (which must all be exact).
    pub fn rollup_of(table: &MetricsTable, width: Option<i64>, filters: Vec<Expr>) -> Self {
        Self {
            engine: table.engine.clone(),
            schema: rollup_schema(),
            fixed: table.fixed.clone(),
            rollup: Some(RollupScan { width, filters }),
        }
    }

    pub fn is_rollup(&self) -> bool {
        self.rollup.is_some()
    }

    /// The engine this table reads live (not a fixed snapshot): what the
    /// last-value cache may stand in for (see `rollup::last_value`).
    pub fn live_view(&self) -> Option<&Arc<dyn ReadView>> {
        self.fixed.is_none().then_some(&self.engine)
    }

    pub fn at(engine: Arc<dyn ReadView>, snapshot: Snapshot) -> Self {
        Self {
            fixed: Some(snapshot),
            ..Self::new(engine)
        }
    }
}

#[async_trait]
impl TableProvider for MetricsTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Exact filters are applied by the scan alone, so DataFusion neither
        // re-evaluates them per row nor makes the scan build the `tags`
        // and `metric` columns just to test them.
        Ok(filters
            .iter()
            .map(|f| {
                if is_exact(f) {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Inexact
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let f = match &self.rollup {
            Some(r) => analyze(&r.filters),
            None => analyze(filters),
        };
        // Snapshot first: every series in it is in the catalog by then, so
        // the series set resolved next cannot miss one (exact filters rely
        // on the scan alone).
        let snap = match &self.fixed {
            Some(s) => s.clone(),
            None => self.engine.snapshot(),
        };
        let series = self.engine.catalog().resolve(&f.series).map(Arc::new);

        let chunks: Vec<_> = snap
            .manifest
            .chunks
            .iter()
            .filter(|c| f.time.overlaps(c.min_time, c.max_time))
            .filter(|c| {
                series
                    .as_ref()
                    .is_none_or(|s| s.iter().any(|id| c.covers_series(*id)))
            })
            .cloned()
            .collect();
        let buffered: Vec<_> = snap
            .buffered
            .iter()
            .filter(|b| f.time.overlaps(b.min_time, b.max_time))
            .cloned()
            .collect();
        let stats = PruneStats {
            chunks_total: snap.manifest.chunks.len(),
            chunks_scanned: chunks.len(),
            buffered_total: snap.buffered.len(),
            buffered_scanned: buffered.len(),
        };

        // Spread the work over the session's partitions, biggest first.
        let n = state.config().target_partitions().max(1);
        // Units whose times overlap are read as one (a rewrite of a point
        // may sit in any of them); the rest stay apart.
        let units: Vec<Work> = chunks
            .into_iter()
            .map(Work::Chunk)
            .chain(buffered.into_iter().map(Work::Buffered))
            .collect();
        let mut work: Vec<(u64, Work)> = merge_overlapping(units)
            .into_iter()
            .map(|w| (w.rows(), w))
            .collect();
        work.sort_by_key(|(rows, _)| std::cmp::Reverse(*rows));
        let mut partitions: Vec<(u64, Vec<Work>)> = vec![(0, Vec::new()); n.min(work.len()).max(1)];
        for (rows, w) in work {
            let p = partitions
                .iter_mut()
                .min_by_key(|(r, _)| *r)
                .expect("at least one partition");
            p.0 += rows;
            p.1.push(w);
        }
        let partitions: Vec<Vec<Work>> = partitions.into_iter().map(|(_, w)| w).collect();

        let projection: Vec<usize> = projection
            .cloned()
            .unwrap_or_else(|| (0..self.schema.fields().len()).collect());
        let schema = Arc::new(self.schema.project(&projection)?);
        Ok(Arc::new(MetricsScanExec {
            reader: self.engine.chunk_reader().clone(),
            catalog: self.engine.catalog().clone(),
            deletes: snap.deletes.clone(),
            properties: MetricsScanExec::properties_for(&schema, partitions.len()),
            partitions,
            time: f.time,
            series,
            projection,
            schema,
            stats,
            rollup: self.rollup.as_ref().map(|r| r.width),
        }))
    }
}
