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
use crate::storage::{ChunkMeta, ChunkReader, SeriesCatalog};

/// One unit of scan work.
#[derive(Debug, Clone)]
pub enum Work {
    Chunk(ChunkMeta),
    Buffered(Arc<BufferedBatch>),
    /// A unit whose time range overlaps newer units': its rows without
    /// the keys one of `newer` also holds (those have the later value).
    /// Each unit alone holds one value per key already (flush, compaction
    /// and the write buffer see to that), so units that overlap nothing
    /// are read as they are and pay nothing, and one that does pays a
    /// walk over its newer neighbours' keys, copying only if a key repeats.
    Shadowed {
        unit: Box<Work>,
        newer: Vec<Work>,
    },
    /// Overlapping units read together and merged by sorting, each key's
    /// newest value kept: for groups that are many units, or hold
    /// buffered batches (unsorted; many producers write the same seconds),
    /// where pairing every unit with its newer ones would be quadratic.
    Merged(Vec<Work>),
}

impl Work {
    /// The unit's time range.
    pub(super) fn time_range(&self) -> (i64, i64) {
        match self {
            Work::Chunk(c) => (c.min_time, c.max_time),
            Work::Buffered(b) => (b.min_time, b.max_time),
            Work::Shadowed { unit, .. } => unit.time_range(),
            Work::Merged(units) => units
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
            Work::Shadowed { unit, .. } => unit.rank(),
            Work::Merged(units) => units.iter().map(Work::rank).max().unwrap_or((0, 0)),
        }
    }

    /// Rows in the unit (for spreading work over partitions).
    pub(super) fn rows(&self) -> u64 {
        match self {
            Work::Chunk(c) => c.rows,
            Work::Buffered(b) => b.points.num_rows() as u64,
            Work::Shadowed { unit, .. } => unit.rows(),
            Work::Merged(units) => units.iter().map(Work::rows).sum(),
        }
    }

    fn overlaps(&self, other: &Work) -> bool {
        let ((a, b), (c, d)) = (self.time_range(), other.time_range());
        a <= d && c <= b
    }
}

/// Pairs every unit whose time range overlaps newer units' with those
/// ([`Work::Shadowed`]); a unit that overlaps no newer one is returned as
/// it is. Sorting the list of units is all that non-overlapping data pays.
pub(super) fn merge_overlapping(mut units: Vec<Work>) -> Vec<Work> {
    units.sort_by_key(|u| u.time_range());
    let mut out = Vec::with_capacity(units.len());
    let mut group: Vec<Work> = Vec::new();
    let mut group_end = i64::MIN;
    for u in units {
        let (lo, hi) = u.time_range();
        if !group.is_empty() && lo > group_end {
            out.extend(shadow(std::mem::take(&mut group)));
        }
        group_end = if group.is_empty() {
            hi
        } else {
            group_end.max(hi)
        };
        group.push(u);
    }
    if !group.is_empty() {
        out.extend(shadow(group));
    }
    out
}

/// Most units in a group paired with their newer neighbours; a larger
/// group is merged by sorting instead.
const SHADOWED_UNITS: usize = 16;

/// Within a group of units chained by overlapping times: each unit with
/// the newer units it overlaps.
fn shadow(mut group: Vec<Work>) -> Vec<Work> {
    if group.len() == 1 {
        return group;
    }
    if group.len() > SHADOWED_UNITS || group.iter().any(|u| matches!(u, Work::Buffered(_))) {
        group.sort_by_key(Work::rank);
        return vec![Work::Merged(group)];
    }
    group
        .iter()
        .map(|u| {
            let newer: Vec<Work> = group
                .iter()
                .filter(|n| n.rank() > u.rank() && n.overlaps(u))
                .cloned()
                .collect();
            if newer.is_empty() {
                u.clone()
            } else {
                Work::Shadowed {
                    unit: Box::new(u.clone()),
                    newer,
                }
            }
        })
        .collect()
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
            Work::Shadowed { unit, newer } => {
                let (mut kept, sorted) = self.load_wanted(*unit).await?;
                for n in newer {
                    let (mut theirs, their_sorted) = self.load_unit(n).await?;
                    // A few series are sliced out of a sorted unit cheaply,
                    // and the walk then covers only them.
                    if self.series.is_some() {
                        theirs = theirs
                            .iter()
                            .map(|b| {
                                filter_points(b, &self.time, self.series.as_deref(), their_sorted)
                            })
                            .collect::<Result<_>>()?;
                    }
                    kept = without_keys_of(kept, sorted, &theirs, their_sorted)?;
                }
                Ok(Loaded {
                    batches: kept,
                    sorted,
                    filtered: true,
                })
            }
            Work::Merged(units) => {
                let mut oldest_first = Vec::new();
                for u in units {
                    oldest_first.extend(self.load_wanted(u).await?.0);
                }
                let merged = crate::ingest::newest_per_key(&oldest_first)
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
                Ok(Loaded {
                    batches: vec![merged],
                    sorted: false,
                    filtered: true,
                })
            }
            unit => {
                let (batches, sorted) = self.load_unit(unit).await?;
                Ok(Loaded::read(batches, sorted))
            }
        }
    }

    /// One chunk or buffered batch cut to the scan's time range and
    /// series, and whether it is sorted.
    async fn load_wanted(&self, w: Work) -> Result<(Vec<RecordBatch>, bool)> {
        let (batches, sorted) = self.load_unit(w).await?;
        let wanted = batches
            .iter()
            .map(|b| filter_points(b, &self.time, self.series.as_deref(), sorted))
            .collect::<Result<_>>()?;
        Ok((wanted, sorted))
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
            Work::Shadowed { .. } | Work::Merged(_) => {
                return Err(DataFusionError::Internal(
                    "a shadowed or merged unit inside another".into(),
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

/// `ours` without the (series, time) keys `theirs` holds. Two sorted
/// sides are compared in one walk per pair of batches; otherwise the keys
/// of `theirs` go into a set. Batches come back as they were when no key
/// repeats.
fn without_keys_of(
    ours: Vec<RecordBatch>,
    ours_sorted: bool,
    theirs: &[RecordBatch],
    theirs_sorted: bool,
) -> Result<Vec<RecordBatch>> {
    let external = |e| DataFusionError::External(Box::new(e));
    if ours_sorted && theirs_sorted {
        return ours
            .iter()
            .map(|b| crate::ingest::without_keys_sorted(b, theirs).map_err(external))
            .collect();
    }
    let keys: std::collections::HashSet<(u64, i64)> = theirs
        .iter()
        .flat_map(|b| {
            let (ids, times, _) = crate::model::point_columns(b);
            ids.iter().copied().zip(times.iter().copied())
        })
        .collect();
    ours.iter()
        .map(|b| {
            let (ids, times, _) = crate::model::point_columns(b);
            let keep: Vec<bool> = ids
                .iter()
                .zip(times)
                .map(|(i, t)| !keys.contains(&(*i, *t)))
                .collect();
            if keep.iter().all(|k| *k) {
                return Ok(b.clone());
            }
            Ok(arrow::compute::filter_record_batch(
                b,
                &arrow::array::BooleanArray::from(keep),
            )?)
        })
        .collect()
}
