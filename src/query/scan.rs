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
    /// Units whose time ranges overlap, oldest first: read together and
    /// merged so each (series, time) yields only its newest value. Each
    /// unit alone holds one value per key already (flush, compaction and
    /// the write buffer see to that), so units that overlap nothing are
    /// never merged and pay nothing.
    Merge(Vec<Work>),
}

impl Work {
    /// The unit's time range.
    pub(super) fn time_range(&self) -> (i64, i64) {
        match self {
            Work::Chunk(c) => (c.min_time, c.max_time),
            Work::Buffered(b) => (b.min_time, b.max_time),
            Work::Merge(units) => units
                .iter()
                .map(Work::time_range)
                .fold((i64::MAX, i64::MIN), |(lo, hi), (a, b)| {
                    (lo.min(a), hi.max(b))
                }),
        }
    }

    /// How recent the unit's rows are: a later write ranks higher. A
    /// buffered batch is newer than every chunk (flushes take the oldest
    /// batches), and among chunks `ChunkMeta::recency` orders them.
    fn rank(&self) -> (u64, u64) {
        match self {
            Work::Chunk(c) => c.recency(),
            Work::Buffered(b) => (b.offset.0, u64::MAX),
            Work::Merge(units) => units.iter().map(Work::rank).max().unwrap_or((0, 0)),
        }
    }

    /// Rows in the unit (for spreading work over partitions).
    pub(super) fn rows(&self) -> u64 {
        match self {
            Work::Chunk(c) => c.rows,
            Work::Buffered(b) => b.points.num_rows() as u64,
            Work::Merge(units) => units.iter().map(Work::rows).sum(),
        }
    }
}

/// Groups `units` whose time ranges overlap into [`Work::Merge`]s (units
/// in a group ordered oldest first); a unit that overlaps no other is
/// returned as it is. Sorting the list of units is all that
/// non-overlapping data pays.
pub(super) fn merge_overlapping(mut units: Vec<Work>) -> Vec<Work> {
    units.sort_by_key(|u| u.time_range());
    let mut out = Vec::with_capacity(units.len());
    let mut group: Vec<Work> = Vec::new();
    let mut group_end = i64::MIN;
    for u in units {
        let (lo, hi) = u.time_range();
        if !group.is_empty() && lo > group_end {
            out.push(close_group(std::mem::take(&mut group)));
        }
        group_end = if group.is_empty() {
            hi
        } else {
            group_end.max(hi)
        };
        group.push(u);
    }
    if !group.is_empty() {
        out.push(close_group(group));
    }
    out
}

fn close_group(mut group: Vec<Work>) -> Work {
    if group.len() == 1 {
        return group.pop().expect("one unit");
    }
    group.sort_by_key(Work::rank);
    Work::Merge(group)
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
/// buffer holds batches in arrival order, and a merged group is sorted by
/// hour first, so it does not count as sorted).
async fn load(
    reader: Arc<ChunkReader>,
    w: Work,
    series: Option<Arc<BTreeSet<u64>>>,
) -> Result<(Vec<RecordBatch>, bool)> {
    let Work::Merge(units) = w else {
        return load_unit(&reader, w, series.as_deref()).await;
    };
    let mut oldest_first = Vec::new();
    for u in units {
        oldest_first.extend(load_unit(&reader, u, series.as_deref()).await?.0);
    }
    let merged = crate::ingest::newest_per_key(&oldest_first)
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    Ok((vec![merged], false))
}

async fn load_unit(
    reader: &Arc<ChunkReader>,
    w: Work,
    series: Option<&BTreeSet<u64>>,
) -> Result<(Vec<RecordBatch>, bool)> {
    match w {
        Work::Buffered(b) => Ok((vec![b.points.clone()], false)),
        Work::Chunk(c) => Ok((
            reader
                .read(&c, series)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?
                .as_ref()
                .clone(),
            true,
        )),
        Work::Merge(_) => Err(DataFusionError::Internal(
            "a merge group inside a merge group".into(),
        )),
    }
}
