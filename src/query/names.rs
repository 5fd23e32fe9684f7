//! Output column names people expect. DataFusion names an unaliased
//! expression by its full text (`avg(metrics.value)`,
//! `time_bucket(Utf8("10s"),metrics.time)`); like PostgreSQL, StreamDB
//! names a function call's column by the function (`avg`, `time_bucket`),
//! unless that would give two columns one name. `AS` always wins.

use std::collections::HashMap;

use datafusion::common::Column;
use datafusion::logical_expr::{col, LogicalPlan, LogicalPlanBuilder};

use super::QueryError;

/// `fname(...)` → `fname`; anything else keeps its name.
fn short_name(name: &str) -> Option<&str> {
    let open = name.find('(')?;
    let fname = &name[..open];
    let valid = !fname.is_empty()
        && name.ends_with(')')
        && fname.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then_some(fname)
}

/// Renames the result columns of a query plan; other plans (EXPLAIN,
/// SHOW, ...) are returned as they are.
pub fn friendly(plan: LogicalPlan) -> Result<LogicalPlan, QueryError> {
    if matches!(
        plan,
        LogicalPlan::Explain(_)
            | LogicalPlan::Analyze(_)
            | LogicalPlan::DescribeTable(_)
            | LogicalPlan::Statement(_)
            | LogicalPlan::Ddl(_)
            | LogicalPlan::Dml(_)
            | LogicalPlan::Copy(_)
    ) {
        return Ok(plan);
    }
    let fields: Vec<(Option<String>, String)> = plan
        .schema()
        .iter()
        .map(|(q, f)| (q.map(|q| q.to_string()), f.name().clone()))
        .collect();
    let wanted: Vec<String> = fields
        .iter()
        .map(|(_, name)| short_name(name).unwrap_or(name).to_string())
        .collect();
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for w in &wanted {
        *uses.entry(w.as_str()).or_default() += 1;
    }
    let renamed: Vec<String> = fields
        .iter()
        .zip(&wanted)
        .map(|((_, name), w)| {
            if uses[w.as_str()] == 1 {
                w.clone()
            } else {
                name.clone()
            }
        })
        .collect();
    if renamed.iter().zip(&fields).all(|(r, (_, name))| r == name) {
        return Ok(plan);
    }
    let exprs = fields.iter().zip(&renamed).map(|((q, name), new)| {
        let c = col(Column::new(q.clone(), name));
        if new == name {
            c
        } else {
            c.alias(new)
        }
    });
    LogicalPlanBuilder::from(plan)
        .project(exprs)
        .and_then(|b| b.build())
        .map_err(QueryError::from_datafusion)
}

#[cfg(test)]
mod tests {
    use super::short_name;

    #[test]
    fn function_columns_are_named_by_the_function() {
        assert_eq!(short_name("avg(metrics.value)"), Some("avg"));
        assert_eq!(
            short_name(r#"time_bucket(Utf8("10s"),metrics.time)"#),
            Some("time_bucket")
        );
        assert_eq!(short_name("count(*)"), Some("count"));
        assert_eq!(short_name("value"), None);
        assert_eq!(short_name("metrics.value + Int64(1)"), None);
        assert_eq!(short_name("(a)"), None);
    }
}
