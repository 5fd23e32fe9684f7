//! [`GapFillExec`], the physical operator, and the planners that make it
//! from a [`GapFill`] node: the range's expressions are evaluated here,
//! once, so a bad or too wide range is refused before anything runs.

use std::fmt;
use std::sync::Arc;

use arrow::array::{RecordBatch, RecordBatchOptions};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{plan_err, Result, ScalarValue};
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Expr, LogicalPlan, UserDefinedLogicalNode};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ColumnarValue, DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, Partitioning,
    PlanProperties,
};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use futures::{StreamExt, TryStreamExt};

use super::super::functions::width_micros;
use super::fill::{gap_fill, ColumnFill, Spec, MAX_ROWS};
use super::node::GapFill;

/// DataFusion's planner, plus [`GapFillPlanner`].
#[derive(Debug, Default)]
pub struct GapFillQueryPlanner;

#[async_trait]
impl QueryPlanner for GapFillQueryPlanner {
    async fn create_physical_plan(
        &self,
        plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(GapFillPlanner)])
            .create_physical_plan(plan, session)
            .await
    }
}

#[derive(Debug, Default)]
pub struct GapFillPlanner;

#[async_trait]
impl ExtensionPlanner for GapFillPlanner {
    async fn plan_extension(
        &self,
        planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        session: &dyn Session,
        planning_ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(node) = node.as_any().downcast_ref::<GapFill>() else {
            return Ok(None);
        };
        let schema = logical_inputs[0].schema();
        let eval = |e: &Expr, what: &str| -> Result<ScalarValue> {
            if !e.column_refs().is_empty() {
                return plan_err!("time_bucket_gapfill: the {what} must be a constant, not refer to a column: {e}");
            }
            let pe = planner.create_physical_expr(e, schema, session, planning_ctx)?;
            constant(pe.as_ref())
        };
        let width = width_micros(&eval(&node.width, "width")?)?;
        let mut start = None::<i64>;
        for e in &node.range.starts {
            let t = micros(eval(e, "start")?, "start")?;
            start = Some(start.map_or(t, |s| s.max(t)));
        }
        let mut finish = None::<i64>;
        for (e, inclusive) in &node.range.finishes {
            let t = micros(eval(e, "finish")?, "finish")?.saturating_add(*inclusive as i64);
            finish = Some(finish.map_or(t, |f| f.min(t)));
        }
        let (Some(start), Some(finish)) = (start, finish) else {
            return plan_err!("time_bucket_gapfill: the range has no start or no finish");
        };
        let aggs = node
            .aggs
            .iter()
            .map(|a| {
                let prev = a
                    .prev
                    .as_ref()
                    .map(|p| eval(p, "locf prev value"))
                    .transpose()?;
                Ok(ColumnFill {
                    column: a.column,
                    fill: a.fill,
                    prev,
                    added: a.name.is_some(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let spec = Spec {
            bucket: node.bucket,
            groups: node.groups.clone(),
            aggs,
            width,
            first: start.div_euclid(width) * width,
            finish,
            max_rows: MAX_ROWS,
        };
        let buckets = spec.buckets();
        if buckets > spec.max_rows {
            return plan_err!(
                "time_bucket_gapfill: the range from {} to {} has {buckets} buckets of {width} µs, more than the limit of {} per query; use a wider bucket or a shorter range",
                show_time(start),
                show_time(finish),
                spec.max_rows
            );
        }
        let out_schema = node.schema().inner().clone();
        Ok(Some(Arc::new(GapFillExec::new(
            physical_inputs[0].clone(),
            Arc::new(spec),
            out_schema,
        ))))
    }
}

/// The value of an expression over no columns.
fn constant(e: &dyn PhysicalExpr) -> Result<ScalarValue> {
    let one_row = RecordBatch::try_new_with_options(
        Arc::new(Schema::empty()),
        vec![],
        &RecordBatchOptions::new().with_row_count(Some(1)),
    )?;
    match e.evaluate(&one_row)? {
        ColumnarValue::Scalar(s) => Ok(s),
        ColumnarValue::Array(a) => ScalarValue::try_from_array(&a, 0),
    }
}

fn micros(v: ScalarValue, what: &str) -> Result<i64> {
    let ty = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    match v.cast_to(&ty)? {
        ScalarValue::TimestampMicrosecond(Some(t), _) => Ok(t),
        _ => plan_err!("time_bucket_gapfill: the {what} of the range is NULL"),
    }
}

fn show_time(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| format!("{us} µs"))
}

#[derive(Debug)]
pub struct GapFillExec {
    input: Arc<dyn ExecutionPlan>,
    spec: Arc<Spec>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl GapFillExec {
    pub fn new(input: Arc<dyn ExecutionPlan>, spec: Arc<Spec>, schema: SchemaRef) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Self {
            input,
            spec,
            schema,
            properties,
        }
    }
}

impl DisplayAs for GapFillExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let s = &self.spec;
        let name = |i: usize| self.schema.field(i).name().clone();
        let groups: Vec<String> = s.groups.iter().map(|&g| name(g)).collect();
        let mut added = self.input.schema().fields().len()..;
        let fills: Vec<String> = s
            .aggs
            .iter()
            .map(|a| match a.added {
                true => format!("{}: {}", name(added.next().expect("unbounded")), a.fill),
                false => format!("{}: {}", name(a.column), a.fill),
            })
            .collect();
        write!(
            f,
            "GapFillExec: bucket={}, width={}µs, range=[{}, {}), buckets={}, groups=[{}], fill=[{}]",
            name(s.bucket),
            s.width,
            show_time(s.first),
            show_time(s.finish),
            s.buckets(),
            groups.join(", "),
            fills.join(", ")
        )
    }
}

impl ExecutionPlan for GapFillExec {
    fn name(&self) -> &'static str {
        "GapFillExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        // Every group's rows must meet in one place.
        vec![Distribution::SinglePartition]
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
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = children.pop().expect("GapFillExec has one child");
        Ok(Arc::new(GapFillExec::new(
            input,
            self.spec.clone(),
            self.schema.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        ctx: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, ctx.clone())?;
        let in_schema = self.input.schema();
        let (spec, schema) = (self.spec.clone(), self.schema.clone());
        let batch_size = ctx.session_config().batch_size().max(1);
        // Counted against the query's memory limit: the input rows, their
        // concatenation and the filled rows, held until the last slice goes.
        let reservation = MemoryConsumer::new("GapFillExec").register(ctx.memory_pool());
        let filled = futures::stream::once(async move {
            let mut input = input;
            let mut batches = vec![];
            while let Some(b) = input.next().await {
                let b = b?;
                reservation.try_grow(b.get_array_memory_size())?;
                batches.push(b);
            }
            let all = concat_batches(&in_schema, &batches)?;
            drop(batches);
            reservation.try_grow(all.get_array_memory_size())?;
            let out = gap_fill(&spec, &all, schema)?;
            reservation.try_grow(out.get_array_memory_size())?;
            // Slices share the buffers; they keep batches of the usual size.
            let slices: Vec<Result<RecordBatch>> = (0..out.num_rows())
                .step_by(batch_size)
                .map(|at| Ok(out.slice(at, batch_size.min(out.num_rows() - at))))
                .collect();
            let held = futures::stream::iter(slices).map(move |b| {
                let _until_sent = &reservation;
                b
            });
            Ok::<_, datafusion::common::DataFusionError>(held)
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            filled.boxed(),
        )))
    }
}
