//! `DELETE FROM metrics WHERE ...`, the query side: DataFusion plans and
//! type-checks the statement (so its WHERE clause is the dialect of a
//! SELECT's) and simplifies the condition (`now()`, duration strings,
//! casts and parameters folded to constants); the result becomes the
//! [`DeletePredicate`] the write-ahead log records, and the rows deleted
//! are counted over the snapshot the delete applied to. Logging it is the
//! caller's (the engine's) part.

use std::sync::Arc;

use arrow::array::{RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, ParamValues, ScalarValue};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::utils::{conjunction, split_binary, split_conjunction};
use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, Operator};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;

use super::{dialect, MetricsTable, QueryEngine, QueryError};
use crate::ingest::Snapshot;
use crate::model::{DeletePredicate, StringTest, TimeOp};

/// The one column a DELETE answers with.
pub const ROWS_DELETED: &str = "rows_deleted";

pub fn result_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        ROWS_DELETED,
        DataType::UInt64,
        false,
    )]))
}

/// The answer to a DELETE: one row, the number of points it removed.
pub fn result_batch(rows: u64) -> RecordBatch {
    RecordBatch::try_new(
        result_schema(),
        vec![Arc::new(UInt64Array::from(vec![rows]))],
    )
    .expect("one UInt64 column")
}

/// Whether `sql` is a DELETE (its first keyword, after comments).
pub fn is_delete(sql: &str) -> bool {
    let mut rest = sql;
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, r)| r);
        } else {
            break;
        }
    }
    rest.get(..6)
        .is_some_and(|w| w.eq_ignore_ascii_case("delete"))
        && !rest[6..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
}

/// A planned DELETE.
#[derive(Debug, Clone)]
pub struct DeletePlan {
    pub predicate: DeletePredicate,
    /// The same condition as a filter over `metrics`, for counting.
    filter: Option<Expr>,
}

impl QueryEngine {
    /// Plans a DELETE into the predicate to log, refusing what it cannot
    /// express (anything but `time`, `metric` and `tags['k']` compared
    /// with constants) and a DELETE without WHERE.
    pub async fn plan_delete(
        &self,
        sql: &str,
        params: Option<ParamValues>,
    ) -> Result<DeletePlan, QueryError> {
        let mut stmt = super::parse_one(sql)?;
        let Statement::Statement(s) = &mut stmt else {
            return Err(QueryError::Invalid("not a DELETE statement".into()));
        };
        check_shape(s)?;
        dialect::rewrite(s.as_mut());
        let ctx = self.session()?;
        let state = ctx.state();
        let mut plan = state
            .statement_to_plan(stmt)
            .await
            .map_err(QueryError::from_datafusion)?;
        if let Some(params) = params {
            plan = plan
                .with_param_values(params)
                .map_err(QueryError::from_datafusion)?;
        }
        let unbound = plan
            .get_parameter_types()
            .map_err(QueryError::from_datafusion)?;
        if !unbound.is_empty() {
            let mut names: Vec<&String> = unbound.keys().collect();
            names.sort();
            return Err(QueryError::Invalid(format!(
                "DELETE has parameters without values: {}",
                names
                    .iter()
                    .map(|n| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let analyzed = state
            .analyzer()
            .execute_and_check(plan, state.config_options(), |_, _| {})
            .map_err(QueryError::from_datafusion)?;
        let now = chrono::DateTime::from_timestamp_micros(self.engine().clock().now_micros());
        let filters = filters_of(&analyzed, |schema| {
            SimplifyContext::builder()
                .with_schema(schema)
                .with_query_execution_start_time(now)
                .with_config_options(state.config_options().clone())
                .build()
        })?;
        let parts = filters
            .iter()
            .map(to_predicate)
            .collect::<Result<Vec<_>, _>>()?;
        let predicate = match parts.len() {
            // The WHERE clause simplified to nothing but `true`.
            0 => DeletePredicate::Const(true),
            1 => parts.into_iter().next().expect("one"),
            _ => DeletePredicate::And(parts),
        };
        check_size(&predicate)?;
        let filter = conjunction(filters.into_iter().map(unqualified));
        Ok(DeletePlan { predicate, filter })
    }

    /// The points `plan` removed from `before` (the snapshot just before
    /// it applied): one per (series, time), as `count(*)` would say.
    pub async fn count_deleted(
        &self,
        plan: &DeletePlan,
        before: Snapshot,
    ) -> Result<u64, QueryError> {
        if plan.predicate == DeletePredicate::Const(false) {
            return Ok(0);
        }
        let table = MetricsTable::at(self.engine().clone(), before);
        let ctx = self.session_over(Arc::new(table))?;
        let mut df = ctx
            .table("metrics")
            .await
            .map_err(QueryError::from_datafusion)?;
        if let Some(f) = &plan.filter {
            df = df.filter(f.clone()).map_err(QueryError::from_datafusion)?;
        }
        let n = df.count().await.map_err(QueryError::from_datafusion)?;
        Ok(n as u64)
    }
}

/// Nesting a DELETE's condition may have (AND/OR chains count once): the
/// log and the manifest store it as JSON, whose readers stop at a depth.
const MAX_DEPTH: usize = 24;
/// Time constants a DELETE may compare with: each one adds to the work
/// of resolving the condition per series.
const MAX_TIME_CONSTANTS: usize = 256;

fn check_size(p: &DeletePredicate) -> Result<(), QueryError> {
    fn walk(p: &DeletePredicate, depth: usize, times: &mut usize) -> usize {
        match p {
            DeletePredicate::And(ps) | DeletePredicate::Or(ps) => ps
                .iter()
                .map(|q| walk(q, depth + 1, times))
                .max()
                .unwrap_or(depth),
            DeletePredicate::Not(q) => walk(q, depth + 1, times),
            DeletePredicate::Time { .. } => {
                *times += 1;
                depth
            }
            _ => depth,
        }
    }
    let mut times = 0;
    let depth = walk(p, 1, &mut times);
    if depth > MAX_DEPTH {
        return Err(QueryError::Invalid(format!(
            "DELETE condition nests {depth} levels deep, more than the {MAX_DEPTH} allowed; flatten it (IN lists, one OR chain)"
        )));
    }
    if times > MAX_TIME_CONSTANTS {
        return Err(QueryError::Invalid(format!(
            "DELETE condition compares time with {times} constants, more than the {MAX_TIME_CONSTANTS} allowed; delete by time ranges, in several statements if need be"
        )));
    }
    Ok(())
}

/// Refuses the parts of DELETE syntax StreamDB does not take, and a
/// DELETE with no WHERE clause (unless `WHERE true`, said on purpose).
fn check_shape(s: &SqlStatement) -> Result<(), QueryError> {
    let SqlStatement::Delete(d) = s else {
        return Err(QueryError::Invalid("not a DELETE statement".into()));
    };
    let refuse = |what: &str| {
        Err(QueryError::Invalid(format!(
            "DELETE does not take {what}; write DELETE FROM metrics WHERE <condition>"
        )))
    };
    if d.using.is_some() {
        return refuse("USING");
    }
    if d.returning.is_some() {
        return refuse("RETURNING");
    }
    if !d.order_by.is_empty() || d.limit.is_some() {
        return refuse("ORDER BY or LIMIT");
    }
    if d.selection.is_none() {
        return Err(QueryError::Invalid(
            "DELETE without WHERE would remove every point; to do that on purpose, write DELETE FROM metrics WHERE true".into(),
        ));
    }
    Ok(())
}

/// The conjuncts of an analysed DELETE plan's condition, each simplified
/// in the context `simplify` makes for its schema.
fn filters_of(
    plan: &LogicalPlan,
    simplify: impl Fn(datafusion::common::DFSchemaRef) -> SimplifyContext,
) -> Result<Vec<Expr>, QueryError> {
    let LogicalPlan::Dml(dml) = plan else {
        return Err(QueryError::Invalid("not a DELETE statement".into()));
    };
    if !dml.table_name.table().eq_ignore_ascii_case("metrics") {
        return Err(QueryError::Invalid(format!(
            "DELETE FROM {}: only the metrics table can be deleted from",
            dml.table_name
        )));
    }
    let mut found = Vec::new();
    dml.input
        .apply(|node| {
            if let LogicalPlan::Filter(f) = node {
                found.push((f.predicate.clone(), f.input.schema().clone()));
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .map_err(QueryError::from_datafusion)?;
    if found.is_empty() {
        // The WHERE clause is there (checked before planning): a plan
        // without its filter would delete everything.
        return Err(QueryError::Execution(
            "DELETE planned without its WHERE filter; nothing was deleted".into(),
        ));
    }
    let mut filters = Vec::new();
    for (predicate, schema) in found {
        let simplified = ExprSimplifier::new(simplify(schema))
            .simplify(predicate)
            .map_err(QueryError::from_datafusion)?;
        filters.extend(split_conjunction(&simplified).into_iter().cloned());
    }
    Ok(filters)
}

fn unqualified(e: Expr) -> Expr {
    e.transform(|e| {
        Ok(match e {
            Expr::Column(c) => Transformed::yes(Expr::Column(Column::new_unqualified(c.name))),
            e => Transformed::no(e),
        })
    })
    .map(|t| t.data)
    .expect("renaming columns cannot fail")
}

fn unsupported(e: &Expr) -> QueryError {
    QueryError::Invalid(format!(
        "DELETE can only test time, metric and tags['key'] against constants \
         (=, !=, <, <=, >, >=, IN, BETWEEN, IS NULL, AND, OR, NOT); cannot delete by {e}"
    ))
}

/// What a filter's column side is.
enum Target {
    /// `time`, possibly cast to a finer timestamp (no precision lost).
    Time,
    Metric,
    Tag(String),
}

fn target(e: &Expr) -> Option<Target> {
    match e {
        Expr::Column(c) if c.name == "time" => Some(Target::Time),
        Expr::Column(c) if c.name == "metric" => Some(Target::Metric),
        Expr::Cast(c) if is_lossless_time_cast(&c.expr, c.field.data_type()) => Some(Target::Time),
        Expr::TryCast(c) if is_lossless_time_cast(&c.expr, c.field.data_type()) => {
            Some(Target::Time)
        }
        Expr::ScalarFunction(f) if f.name() == "get_field" && f.args.len() == 2 => {
            match (&f.args[0], &f.args[1]) {
                (Expr::Column(c), Expr::Literal(k, _)) if c.name == "tags" => {
                    k.try_as_str().flatten().map(|k| Target::Tag(k.to_string()))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

fn is_lossless_time_cast(inner: &Expr, to: &DataType) -> bool {
    matches!(inner, Expr::Column(c) if c.name == "time")
        && matches!(
            to,
            DataType::Timestamp(TimeUnit::Microsecond | TimeUnit::Nanosecond, _)
        )
}

fn string_lit(e: &Expr) -> Option<String> {
    match e {
        Expr::Literal(v, _) => v.try_as_str().flatten().map(str::to_string),
        _ => None,
    }
}

fn to_predicate(e: &Expr) -> Result<DeletePredicate, QueryError> {
    match e {
        Expr::Literal(ScalarValue::Boolean(Some(b)), _) => Ok(DeletePredicate::Const(*b)),
        // A chain of one operator becomes one node, however long: the
        // predicate's depth is what the log and the manifest decode.
        Expr::BinaryExpr(BinaryExpr { op, .. }) if matches!(op, Operator::And | Operator::Or) => {
            let parts = split_binary(e, *op)
                .into_iter()
                .map(to_predicate)
                .collect::<Result<Vec<_>, _>>()?;
            Ok(match op {
                Operator::And => DeletePredicate::And(parts),
                _ => DeletePredicate::Or(parts),
            })
        }
        Expr::Not(inner) => Ok(DeletePredicate::Not(Box::new(to_predicate(inner)?))),
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            if let (Some(t), Expr::Literal(v, _)) = (target(left), right.as_ref()) {
                return compare(t, *op, v).ok_or_else(|| unsupported(e));
            }
            if let (Expr::Literal(v, _), Some(t), Some(op)) =
                (left.as_ref(), target(right), op.swap())
            {
                return compare(t, op, v).ok_or_else(|| unsupported(e));
            }
            Err(unsupported(e))
        }
        Expr::InList(l) => {
            let t = target(&l.expr).ok_or_else(|| unsupported(e))?;
            let values: Option<Vec<String>> = l.list.iter().map(string_lit).collect();
            match (t, values) {
                (Target::Metric, Some(values)) => Ok(DeletePredicate::Metric(StringTest {
                    values,
                    negated: l.negated,
                })),
                (Target::Tag(key), Some(values)) => Ok(DeletePredicate::Tag {
                    key,
                    test: StringTest {
                        values,
                        negated: l.negated,
                    },
                }),
                (Target::Time, _) => {
                    let any = l
                        .list
                        .iter()
                        .map(|v| match v {
                            Expr::Literal(v, _) => compare(Target::Time, Operator::Eq, v),
                            _ => None,
                        })
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| unsupported(e))?;
                    let or = DeletePredicate::Or(any);
                    Ok(if l.negated {
                        DeletePredicate::Not(Box::new(or))
                    } else {
                        or
                    })
                }
                _ => Err(unsupported(e)),
            }
        }
        Expr::Between(b) => {
            let (Some(Target::Time), Expr::Literal(lo, _), Expr::Literal(hi, _)) =
                (target(&b.expr), b.low.as_ref(), b.high.as_ref())
            else {
                return Err(unsupported(e));
            };
            let range = DeletePredicate::And(vec![
                compare(Target::Time, Operator::GtEq, lo).ok_or_else(|| unsupported(e))?,
                compare(Target::Time, Operator::LtEq, hi).ok_or_else(|| unsupported(e))?,
            ]);
            Ok(if b.negated {
                DeletePredicate::Not(Box::new(range))
            } else {
                range
            })
        }
        Expr::IsNull(inner) | Expr::IsNotNull(inner) => {
            let negated = matches!(e, Expr::IsNotNull(_));
            match target(inner) {
                Some(Target::Tag(key)) => Ok(DeletePredicate::TagIsNull { key, negated }),
                // Never null.
                Some(Target::Time | Target::Metric) => Ok(DeletePredicate::Const(negated)),
                None => Err(unsupported(e)),
            }
        }
        _ => Err(unsupported(e)),
    }
}

/// `target op literal`, or `None` if StreamDB cannot delete by it.
fn compare(t: Target, op: Operator, v: &ScalarValue) -> Option<DeletePredicate> {
    match t {
        Target::Time => compare_time(op, v),
        Target::Metric | Target::Tag(_) => {
            let negated = match op {
                Operator::Eq => false,
                Operator::NotEq => true,
                _ => return None,
            };
            let test = StringTest {
                values: vec![v.try_as_str().flatten()?.to_string()],
                negated,
            };
            Some(match t {
                Target::Tag(key) => DeletePredicate::Tag { key, test },
                _ => DeletePredicate::Metric(test),
            })
        }
    }
}

/// `time op v` on the stored microseconds, exact for every literal unit:
/// a nanosecond literal between two microseconds rounds the way the
/// comparison needs.
fn compare_time(op: Operator, v: &ScalarValue) -> Option<DeletePredicate> {
    let (floor, exact) = match v {
        ScalarValue::TimestampSecond(Some(t), _) => (t.checked_mul(1_000_000)?, true),
        ScalarValue::TimestampMillisecond(Some(t), _) => (t.checked_mul(1_000)?, true),
        ScalarValue::TimestampMicrosecond(Some(t), _) => (*t, true),
        ScalarValue::TimestampNanosecond(Some(t), _) => {
            (t.div_euclid(1_000), t.rem_euclid(1_000) == 0)
        }
        _ => return None,
    };
    let ceil = if exact { floor } else { floor + 1 };
    let time = |op, micros| DeletePredicate::Time { op, micros };
    Some(match op {
        Operator::Lt => time(TimeOp::Lt, ceil),
        Operator::LtEq => time(TimeOp::LtEq, floor),
        Operator::Gt => time(TimeOp::Gt, floor),
        Operator::GtEq => time(TimeOp::GtEq, ceil),
        Operator::Eq if exact => time(TimeOp::Eq, floor),
        Operator::Eq => DeletePredicate::Const(false),
        Operator::NotEq if exact => time(TimeOp::NotEq, floor),
        Operator::NotEq => DeletePredicate::Const(true),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_a_delete_after_comments_and_in_any_case() {
        for sql in [
            "DELETE FROM metrics WHERE true",
            "  delete from metrics",
            "-- why\nDelete FROM metrics",
            "/* a */ DELETE\nFROM metrics",
        ] {
            assert!(is_delete(sql), "{sql}");
        }
        for sql in [
            "SELECT 1",
            "deleted",
            "delete_x",
            "",
            "-- DELETE",
            "/* DELETE */ SELECT 1",
        ] {
            assert!(!is_delete(sql), "{sql}");
        }
    }

    #[test]
    fn nanosecond_literals_round_the_way_each_comparison_needs() {
        let ns = |t| ScalarValue::TimestampNanosecond(Some(t), None);
        let p = |op, v| compare_time(op, &v).unwrap();
        // 1500 ns lies between 1 and 2 µs.
        for t in [0i64, 1, 2, 3] {
            let at = |pr: DeletePredicate| pr.eval(None, t) == Some(true);
            assert_eq!(at(p(Operator::Lt, ns(1500))), t * 1000 < 1500);
            assert_eq!(at(p(Operator::LtEq, ns(1500))), t * 1000 <= 1500);
            assert_eq!(at(p(Operator::Gt, ns(1500))), t * 1000 > 1500);
            assert_eq!(at(p(Operator::GtEq, ns(1500))), t * 1000 >= 1500);
            assert!(!at(p(Operator::Eq, ns(1500))));
            assert!(at(p(Operator::NotEq, ns(1500))));
            assert_eq!(at(p(Operator::Eq, ns(2000))), t == 2);
            assert_eq!(at(p(Operator::Lt, ns(-1500))), t * 1000 < -1500);
        }
    }
}
