//! [`MetricsScanExec`]: reads the chunks and buffered batches that survived
//! pruning and emits `metrics` rows. Planning decided what to read; this
//! node only does the I/O, one stream per partition, chunk by chunk.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use super::convert::{filter_points, to_rollup_batch, to_table_batch};
use super::filters::TimeRange;
use super::rollup::Partials;
use crate::ingest::BufferedBatch;
use crate::storage::{ChunkMeta, ChunkReader, SeriesCatalog};

/// One unit of scan work.
#[derive(Debug, Clone)]
pub enum Work {
    Chunk(ChunkMeta),
    Buffered(Arc<BufferedBatch>),
}

/// How much pruning kept, for EXPLAIN and tests.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PruneStats {
    pub chunks_total: usize,
    pub chunks_scanned: usize,
    pub buffered_total: usize,
    pub buffered_scanned: usize,
}

#[derive(Debug)]
pub struct MetricsScanExec {
    pub(super) reader: Arc<ChunkReader>,
    pub(super) catalog: Arc<SeriesCatalog>,
    pub(super) partitions: Vec<Vec<Work>>,
    pub(super) time: TimeRange,
    pub(super) series: Option<Arc<BTreeSet<u64>>>,
    /// Indexes into the full `metrics` schema.
    pub(super) projection: Vec<usize>,
    pub(super) schema: SchemaRef,
    pub(super) stats: PruneStats,
    pub(super) properties: Arc<PlanProperties>,
    /// `Some(width)`: emit partial aggregates per series and bucket (the
    /// rollup table, see [`super::rollup`]) instead of rows.
    pub(super) rollup: Option<Option<i64>>,
}

impl MetricsScanExec {
    pub(super) fn properties_for(schema: &SchemaRef, partitions: usize) -> Arc<PlanProperties> {
        Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(partitions.max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ))
    }

    pub fn prune_stats(&self) -> PruneStats {
        self.stats
    }
}

impl DisplayAs for MetricsScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let s = &self.stats;
        write!(
            f,
            "MetricsScanExec: chunks_scanned={}, chunks_pruned={}, buffered_scanned={}, buffered_pruned={}, series={}",
            s.chunks_scanned,
            s.chunks_total - s.chunks_scanned,
            s.buffered_scanned,
            s.buffered_total - s.buffered_scanned,
            self.series.as_ref().map_or("all".to_string(), |s| s.len().to_string()),
        )?;
        match self.rollup {
            Some(Some(w)) => write!(f, ", rollup=series,bucket({w}us)")?,
            Some(None) => write!(f, ", rollup=series")?,
            None => {}
        }
        if !self.time.is_all() {
            write!(
                f,
                ", time=[{}, {})",
                fmt_time(self.time.min),
                fmt_time(self.time.max)
            )?;
        }
        Ok(())
    }
}

fn fmt_time(t: i64) -> String {
    match t {
        i64::MIN => "-inf".into(),
        i64::MAX => "+inf".into(),
        t => crate::model::format_micros(t),
    }
}

impl ExecutionPlan for MetricsScanExec {
    fn name(&self) -> &'static str {
        "MetricsScanExec"
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
        partition: usize,
        _ctx: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let work = self.partitions.get(partition).cloned().unwrap_or_default();
        let (reader, catalog, time, series) = (
            self.reader.clone(),
            self.catalog.clone(),
            self.time,
            self.series.clone(),
        );
        let (projection, schema) = (self.projection.clone(), self.schema.clone());
        let wanted = series.clone();
        let loaded = futures::stream::iter(work)
            .map(move |w| load(reader.clone(), w, wanted.clone()))
            .buffered(2);
        let stream: BoxStream<'static, Result<RecordBatch>> = match self.rollup {
            // One batch of partials per unit of work.
            Some(width) => loaded
                .try_filter_map(move |batches| {
                    let out = (|| {
                        let mut partials = Partials::new(width);
                        let (batches, sorted) = batches;
                        for points in batches.iter() {
                            partials.add(&filter_points(points, &time, series.as_deref(), sorted)?);
                        }
                        if partials.is_empty() {
                            return Ok(None);
                        }
                        to_rollup_batch(partials, &catalog, &projection, &schema).map(Some)
                    })();
                    futures::future::ready(out)
                })
                .boxed(),
            None => loaded
                .map_ok(move |(batches, sorted)| {
                    futures::stream::iter(
                        batches
                            .into_iter()
                            .map(move |b| Ok::<_, DataFusionError>((b, sorted))),
                    )
                })
                .try_flatten()
                .try_filter_map(move |(points, sorted)| {
                    let out = (|| {
                        let kept = filter_points(&points, &time, series.as_deref(), sorted)?;
                        if kept.num_rows() == 0 {
                            return Ok(None);
                        }
                        to_table_batch(&kept, &catalog, &projection, &schema).map(Some)
                    })();
                    futures::future::ready(out)
                })
                .boxed(),
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }
}

/// Fetches and decodes one unit of work into point batches, and whether
/// they are sorted by `(series_id, time)` (chunk bodies are; the write
/// buffer holds batches in arrival order).
async fn load(
    reader: Arc<ChunkReader>,
    w: Work,
    series: Option<Arc<BTreeSet<u64>>>,
) -> Result<(Vec<RecordBatch>, bool)> {
    match w {
        Work::Buffered(b) => Ok((vec![b.points.clone()], false)),
        Work::Chunk(c) => Ok((
            reader
                .read(&c, series.as_deref())
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?
                .as_ref()
                .clone(),
            true,
        )),
    }
}
