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
use crate::ingest::{remove_deleted, BufferedBatch, Deletes};
use crate::model::TimeRanges;
use crate::storage::{ChunkMeta, ChunkReader, SeriesCatalog};

/// One unit of scan work.
#[derive(Debug, Clone)]
pub enum Work {
    Chunk(ChunkMeta),
    Buffered(Arc<BufferedBatch>),
    /// The rows of a unit outside `contested`: the times no other unit
    /// of the scan covers, so no other value of their keys exists.
    Uncontested {
        unit: Box<Work>,
        contested: Arc<TimeRanges>,
    },
    /// The rows inside `contested` of units whose time ranges overlap
    /// there, oldest first: merged so each (series, time) yields only its
    /// newest value. Each unit alone holds one value per key already
    /// (flush, compaction and the write buffer see to that), so only the
    /// times two units share pay for the merge.
    Merge {
        units: Vec<Work>,
        contested: Arc<TimeRanges>,
    },
}

impl Work {
    /// The unit's time range.
    pub(super) fn time_range(&self) -> (i64, i64) {
        match self {
            Work::Chunk(c) => (c.min_time, c.max_time),
            Work::Buffered(b) => (b.min_time, b.max_time),
            Work::Uncontested { unit, .. } => unit.time_range(),
            Work::Merge { contested, .. } => (
                contested.first().map_or(i64::MAX, |r| r.0),
                contested.last().map_or(i64::MIN, |r| r.1),
            ),
        }
    }

    /// How recent the unit's rows are: a later write ranks higher. A
    /// buffered batch is newer than every chunk (flushes take the oldest
    /// batches), and among chunks `ChunkMeta::recency` orders them.
    fn rank(&self) -> (u64, u64) {
        match self {
            Work::Chunk(c) => c.recency(),
            Work::Buffered(b) => (b.offset.0, u64::MAX),
            Work::Uncontested { unit, .. } => unit.rank(),
            Work::Merge { units, .. } => units.iter().map(Work::rank).max().unwrap_or((0, 0)),
        }
    }

    /// Rows in the unit, roughly (for spreading work over partitions):
    /// a part of a unit counts its share of the unit's time range.
    pub(super) fn rows(&self) -> u64 {
        match self {
            Work::Chunk(c) => c.rows,
            Work::Buffered(b) => b.points.num_rows() as u64,
            Work::Uncontested { unit, contested } => {
                let (whole, shared) = unit.shares(contested);
                ((unit.rows() as f64) * (1.0 - shared / whole)) as u64
            }
            Work::Merge { units, contested } => units
                .iter()
                .map(|u| {
                    let (whole, shared) = u.shares(contested);
                    ((u.rows() as f64) * shared / whole) as u64
                })
                .sum(),
        }
    }

    /// The length of the unit's time range, and how much of it `ranges`
    /// cover (as floats: the ends of time do not fit an i64 difference).
    fn shares(&self, ranges: &TimeRanges) -> (f64, f64) {
        let (lo, hi) = self.time_range();
        let len = |a: i64, b: i64| (b as f64 - a as f64) + 1.0;
        let shared = ranges
            .iter()
            .filter(|r| r.0 <= hi && lo <= r.1)
            .map(|r| len(r.0.max(lo), r.1.min(hi)))
            .sum();
        (len(lo, hi), shared)
    }
}

/// The times covered by at least two of `units` (sorted, disjoint,
/// inclusive ranges).
fn contested(units: &[Work]) -> TimeRanges {
    // +1 where a unit starts, -1 just after it ends; at one instant ends
    // come first, so units that only touch do not overlap.
    let mut events: Vec<(i64, i32)> = Vec::with_capacity(units.len() * 2);
    for u in units {
        let (lo, hi) = u.time_range();
        events.push((lo, 1));
        if let Some(after) = hi.checked_add(1) {
            events.push((after, -1));
        }
    }
    events.sort_unstable();
    let (mut out, mut depth, mut start) = (TimeRanges::new(), 0, i64::MIN);
    for (t, step) in events {
        let before = depth;
        depth += step;
        if before < 2 && depth >= 2 {
            start = t;
        } else if before >= 2 && depth < 2 {
            out.push((start, t - 1));
        }
    }
    if depth >= 2 {
        out.push((start, i64::MAX));
    }
    out
}

/// Splits `units` whose time ranges overlap into the parts no other unit
/// shares ([`Work::Uncontested`]) and one [`Work::Merge`] of the shared
/// times; a unit that overlaps no other is returned as it is. Sorting the
/// list of units and testing each row's time against the shared ranges is
/// all that non-overlapping data pays.
pub(super) fn merge_overlapping(mut units: Vec<Work>) -> Vec<Work> {
    units.sort_by_key(|u| u.time_range());
    let mut out = Vec::with_capacity(units.len());
    let mut group: Vec<Work> = Vec::new();
    let mut group_end = i64::MIN;
    for u in units {
        let (lo, hi) = u.time_range();
        if !group.is_empty() && lo > group_end {
            out.extend(close_group(std::mem::take(&mut group)));
        }
        group_end = if group.is_empty() {
            hi
        } else {
            group_end.max(hi)
        };
        group.push(u);
    }
    if !group.is_empty() {
        out.extend(close_group(group));
    }
    out
}

fn close_group(mut group: Vec<Work>) -> Vec<Work> {
    if group.len() == 1 {
        return group;
    }
    group.sort_by_key(Work::rank);
    let contested = Arc::new(contested(&group));
    let mut out: Vec<Work> = group
        .iter()
        .filter(|u| {
            let (whole, shared) = u.shares(&contested);
            shared < whole
        })
        .map(|u| {
            // Only the shared ranges inside the unit: one or two, at its
            // edges, in the usual chain of flushes.
            let (lo, hi) = u.time_range();
            let inside: TimeRanges = contested
                .iter()
                .filter(|r| r.0 <= hi && lo <= r.1)
                .copied()
                .collect();
            Work::Uncontested {
                unit: Box::new(u.clone()),
                contested: Arc::new(inside),
            }
        })
        .collect();
    out.push(Work::Merge {
        units: group,
        contested,
    });
    out
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
    /// Deletes not yet applied physically, from the scan's snapshot.
    pub(super) deletes: Deletes,
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
        let (catalog, time, series) = (self.catalog.clone(), self.time, self.series.clone());
        let (projection, schema) = (self.projection.clone(), self.schema.clone());
        let loader = Arc::new(Loader {
            reader: self.reader.clone(),
            catalog: catalog.clone(),
            deletes: self.deletes.clone(),
            time,
            series: series.clone(),
        });
        let loaded = futures::stream::iter(work)
            .map(move |w| loader.clone().load(w))
            .buffered(2);
        let stream: BoxStream<'static, Result<RecordBatch>> = match self.rollup {
            // One batch of partials per unit of work.
            Some(width) => loaded
                .try_filter_map(move |loaded| {
                    let out = (|| {
                        let mut partials = Partials::new(width);
                        for points in loaded.batches.iter() {
                            partials.add(&loaded.wanted(points, &time, series.as_deref())?);
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
                .map_ok(move |loaded| {
                    let how = (loaded.sorted, loaded.filtered);
                    futures::stream::iter(
                        loaded
                            .batches
                            .into_iter()
                            .map(move |b| Ok::<_, DataFusionError>((b, how))),
                    )
                })
                .try_flatten()
                .try_filter_map(move |(points, (sorted, filtered))| {
                    let out = (|| {
                        let kept = if filtered {
                            points
                        } else {
                            filter_points(&points, &time, series.as_deref(), sorted)?
                        };
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

/// A unit's point batches as read: whether they are sorted by
/// `(series_id, time)` (chunk bodies are; the write buffer holds batches
/// in arrival order, and a merge is sorted by hour first, so it does not
/// count as sorted), and whether the scan's time range and series set
/// were applied already (parts of overlapping units are cut to them).
struct Loaded {
    batches: Vec<RecordBatch>,
    sorted: bool,
    filtered: bool,
}

impl Loaded {
    fn read(batches: Vec<RecordBatch>, sorted: bool) -> Self {
        Self {
            batches,
            sorted,
            filtered: false,
        }
    }

    /// The rows of `points` (one of the batches) the scan wants.
    fn wanted(
        &self,
        points: &RecordBatch,
        time: &TimeRange,
        series: Option<&BTreeSet<u64>>,
    ) -> Result<RecordBatch> {
        if self.filtered {
            return Ok(points.clone());
        }
        filter_points(points, time, series, self.sorted)
    }
}

/// Whether each of `times` is in `scan` and inside one of `ranges`
/// (`inside`) or outside all of them.
fn range_mask(
    times: &[i64],
    scan: &TimeRange,
    ranges: &TimeRanges,
    inside: bool,
) -> arrow::array::BooleanArray {
    let bits = arrow::buffer::BooleanBuffer::collect_bool(times.len(), |i| {
        let t = times[i];
        scan.contains(t) && ranges.iter().any(|&(lo, hi)| lo <= t && t <= hi) == inside
    });
    arrow::array::BooleanArray::new(bits, None)
}

/// What reading a unit needs besides the unit.
struct Loader {
    reader: Arc<ChunkReader>,
    catalog: Arc<SeriesCatalog>,
    deletes: Deletes,
    time: TimeRange,
    series: Option<Arc<BTreeSet<u64>>>,
}

impl Loader {
    /// Fetches and decodes one unit of work into point batches.
    async fn load(self: Arc<Self>, w: Work) -> Result<Loaded> {
        match w {
            Work::Uncontested { unit, contested } => {
                let (batches, sorted) = self.load_unit(*unit).await?;
                let kept = batches
                    .iter()
                    .map(|b| self.select(b, sorted, &contested, false))
                    .collect::<Result<_>>()?;
                Ok(Loaded {
                    batches: kept,
                    sorted,
                    filtered: true,
                })
            }
            Work::Merge { units, contested } => {
                let mut oldest_first = Vec::new();
                let mut all_sorted = true;
                for u in units {
                    let (batches, sorted) = self.load_unit(u).await?;
                    all_sorted &= sorted;
                    for b in &batches {
                        oldest_first.push(self.select(b, sorted, &contested, true)?);
                    }
                }
                // Parts of chunks are runs sorted by key: merged in one
                // pass. A buffered batch is not sorted: everything is.
                let merged = if all_sorted {
                    crate::ingest::merge_sorted_newest(&oldest_first)
                } else {
                    crate::ingest::newest_per_key(&oldest_first)
                }
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
                Ok(Loaded {
                    batches: vec![merged],
                    sorted: all_sorted,
                    filtered: true,
                })
            }
            unit => {
                let (batches, sorted) = self.load_unit(unit).await?;
                Ok(Loaded::read(batches, sorted))
            }
        }
    }

    /// The rows of `points` the scan wants (its time range and series)
    /// whose times are inside `ranges` (`inside`) or outside them.
    fn select(
        &self,
        points: &RecordBatch,
        sorted: bool,
        ranges: &TimeRanges,
        inside: bool,
    ) -> Result<RecordBatch> {
        // Without a series set one pass tests both the scan's range and
        // the shared ranges; with one, the sorted slicing goes first.
        let wanted = match self.series {
            None => points.clone(),
            Some(_) => filter_points(points, &self.time, self.series.as_deref(), sorted)?,
        };
        let (_, times, _) = crate::model::point_columns(&wanted);
        let keep = range_mask(times, &self.time, ranges, inside);
        if keep.true_count() == wanted.num_rows() {
            return Ok(wanted);
        }
        Ok(arrow::compute::filter_record_batch(&wanted, &keep)?)
    }

    /// One chunk or buffered batch, without what deletes removed.
    async fn load_unit(&self, w: Work) -> Result<(Vec<RecordBatch>, bool)> {
        let (batches, sorted, deletes) = match w {
            Work::Buffered(b) => {
                let d = self.deletes.for_batch(b.offset.0, b.min_time, b.max_time);
                (vec![b.points.clone()], false, d)
            }
            Work::Chunk(c) => {
                let batches = self
                    .reader
                    .read(&c, self.series.as_deref())
                    .await
                    .map_err(|e| DataFusionError::External(Box::new(e)))?
                    .as_ref()
                    .clone();
                (batches, true, self.deletes.for_chunk(&c))
            }
            Work::Uncontested { .. } | Work::Merge { .. } => {
                return Err(DataFusionError::Internal(
                    "a part of a unit inside a merge".into(),
                ))
            }
        };
        if deletes.is_empty() {
            return Ok((batches, sorted));
        }
        let kept = batches
            .iter()
            .map(|b| remove_deleted(b, &deletes, &self.catalog))
            .collect();
        Ok((kept, sorted))
    }
}
