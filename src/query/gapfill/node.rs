//! [`GapFill`], the logical plan node the rule puts above a gap-filled
//! aggregate: which input column is the bucket, which are the other group
//! keys, how each aggregate column is filled, and the range's bounds as
//! expressions (evaluated once, when the physical plan is made).

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use arrow::datatypes::Field;
use datafusion::common::{DFSchema, DFSchemaRef, Result};
use datafusion::logical_expr::{Expr, LogicalPlan, UserDefinedLogicalNodeCore};

/// How a bucket without a row (or with a NULL) gets its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd)]
pub enum Fill {
    /// NULL, for plain aggregates (count too).
    Null,
    /// The group's last non-null value before it (`locf`).
    Locf,
    /// Linear between the group's neighbouring non-null buckets (`interpolate`).
    Interpolate,
}

impl fmt::Display for Fill {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Fill::Null => "null",
            Fill::Locf => "locf",
            Fill::Interpolate => "interpolate",
        })
    }
}

/// An aggregate column of the input and how it is filled. The input's
/// aggregate columns are filled with NULL and keep their place; each
/// `locf(...)` or `interpolate(...)` of the query is a further column,
/// named after its call, so one aggregate may be shown several ways.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub struct AggFill {
    pub column: usize,
    pub fill: Fill,
    /// `locf`'s value before the group's first observation.
    pub prev: Option<Expr>,
    /// The added column's name; `None` for the input's own columns.
    pub name: Option<String>,
}

/// The range of buckets: the start is the greatest of `starts`, the
/// finish the least of `finishes` (each exclusive unless flagged
/// inclusive, as `time <= x` is).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub struct Range {
    pub starts: Vec<Expr>,
    pub finishes: Vec<(Expr, bool)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GapFill {
    pub input: Arc<LogicalPlan>,
    pub bucket: usize,
    pub groups: Vec<usize>,
    pub aggs: Vec<AggFill>,
    pub width: Expr,
    pub range: Range,
    schema: DFSchemaRef,
}

impl PartialOrd for GapFill {
    // Plans are compared for equality only; DataFusion asks for an order
    // it never relies on for extension nodes.
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        (self == other).then_some(Ordering::Equal)
    }
}

impl GapFill {
    pub fn try_new(
        input: Arc<LogicalPlan>,
        bucket: usize,
        groups: Vec<usize>,
        aggs: Vec<AggFill>,
        width: Expr,
        range: Range,
    ) -> Result<Self> {
        let schema = Arc::new(output_schema(input.schema(), &aggs)?);
        Ok(Self {
            input,
            bucket,
            groups,
            aggs,
            width,
            range,
            schema,
        })
    }

    pub fn schema_of_input(&self) -> &DFSchema {
        self.input.schema()
    }

    fn column_name(&self, i: usize) -> String {
        self.input.schema().field(i).name().clone()
    }
}

/// The input's schema with the aggregate columns nullable (filled buckets
/// may have no value), then the added `locf`/`interpolate` columns.
fn output_schema(input: &DFSchema, aggs: &[AggFill]) -> Result<DFSchema> {
    let mut fields: Vec<_> = input
        .iter()
        .enumerate()
        .map(|(i, (q, f))| {
            let f = if aggs.iter().any(|a| a.column == i) {
                Arc::new(f.as_ref().clone().with_nullable(true))
            } else {
                f.clone()
            };
            (q.cloned(), f)
        })
        .collect();
    for a in aggs {
        if let Some(name) = &a.name {
            let ty = input.field(a.column).data_type().clone();
            fields.push((None, Arc::new(Field::new(name, ty, true))));
        }
    }
    DFSchema::new_with_metadata(fields, input.metadata().clone())
}

impl UserDefinedLogicalNodeCore for GapFill {
    fn name(&self) -> &str {
        "GapFill"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![self.input.as_ref()]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    /// Width, starts, finishes, then each `locf` prev, in that order.
    fn expressions(&self) -> Vec<Expr> {
        let mut out = vec![self.width.clone()];
        out.extend(self.range.starts.iter().cloned());
        out.extend(self.range.finishes.iter().map(|(e, _)| e.clone()));
        out.extend(self.aggs.iter().filter_map(|a| a.prev.clone()));
        out
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let names = |ix: &[usize]| ix.iter().map(|&i| self.column_name(i)).collect::<Vec<_>>();
        let starts: Vec<String> = self.range.starts.iter().map(|e| e.to_string()).collect();
        let finishes: Vec<String> = self
            .range
            .finishes
            .iter()
            .map(|(e, incl)| {
                if *incl {
                    format!("{e} inclusive")
                } else {
                    e.to_string()
                }
            })
            .collect();
        let fills: Vec<String> = self
            .aggs
            .iter()
            .map(|a| match &a.name {
                Some(n) => format!("{n}: {} of {}", a.fill, self.column_name(a.column)),
                None => format!("{}: {}", self.column_name(a.column), a.fill),
            })
            .collect();
        write!(
            f,
            "GapFill: bucket={}, width={}, groups=[{}], start=max({}), finish=min({}), fill=[{}]",
            self.column_name(self.bucket),
            self.width,
            names(&self.groups).join(", "),
            starts.join(", "),
            finishes.join(", "),
            fills.join(", ")
        )
    }

    fn with_exprs_and_inputs(
        &self,
        exprs: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> Result<Self> {
        let mut exprs = exprs.into_iter();
        let mut next = || {
            exprs
                .next()
                .expect("as many expressions as expressions() gave")
        };
        let width = next();
        let starts = self.range.starts.iter().map(|_| next()).collect();
        let finishes = self
            .range
            .finishes
            .iter()
            .map(|(_, incl)| (next(), *incl))
            .collect();
        let aggs = self
            .aggs
            .iter()
            .map(|a| AggFill {
                prev: a.prev.as_ref().map(|_| next()),
                ..a.clone()
            })
            .collect();
        let input = inputs.pop().expect("GapFill has one input");
        GapFill::try_new(
            Arc::new(input),
            self.bucket,
            self.groups.clone(),
            aggs,
            width,
            Range { starts, finishes },
        )
    }
}
