//! StreamDB's additions to DataFusion's SQL, applied to the parsed AST:
//! a duration string added to or subtracted from an expression
//! (`now() - '1m'`) becomes an `INTERVAL`, and `?` parameters (what ADBC and
//! JDBC users write) become DataFusion's positional `$1, $2, ...`.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, BinaryOperator, Expr, Interval, Value,
};

use super::duration::parse_duration_micros;

/// Rewrites `x ± 'duration'` into `x ± INTERVAL '<n> microseconds'` and
/// numbers `?` placeholders in the order they appear.
pub fn rewrite<V: datafusion::sql::sqlparser::ast::VisitMut>(stmt: &mut V) {
    let mut placeholders = 0;
    let _ = visit_expressions_mut(stmt, |e| {
        if let Expr::Value(v) = e {
            if matches!(&v.value, Value::Placeholder(p) if p == "?") {
                placeholders += 1;
                v.value = Value::Placeholder(format!("${placeholders}"));
            }
        }
        if let Expr::BinaryOp {
            op: BinaryOperator::Plus | BinaryOperator::Minus,
            right,
            ..
        } = e
        {
            if let Expr::Value(v) = right.as_ref() {
                if let Value::SingleQuotedString(s) = &v.value {
                    if let Some(us) = parse_duration_micros(s) {
                        **right = Expr::Interval(Interval {
                            value: Box::new(Expr::value(Value::SingleQuotedString(format!(
                                "{us} microseconds"
                            )))),
                            leading_field: None,
                            leading_precision: None,
                            last_field: None,
                            fractional_seconds_precision: None,
                        });
                    }
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
}
