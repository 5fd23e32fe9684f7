//! Running a `DELETE`: planned by the query engine, logged and applied by
//! the engine, counted over the snapshot it applied to. Flight SQL and
//! HTTP (`POST /v1/query`) both run it through [`run`]; the caller has
//! checked the caller may write.
//!
//! Over Flight SQL a DELETE arrives three ways, all answered with the
//! count: `CommandStatementUpdate` and `CommandPreparedStatementUpdate`
//! (DoPut, the count in the update result), and as a query
//! (GetFlightInfo of `CommandStatementQuery` or a prepared statement,
//! which is what ADBC's `cursor.execute` sends): the delete runs when the
//! FlightInfo is asked for, and its ticket carries the count, so DoGet
//! streams one row (`rows_deleted`) and `total_records` says the count
//! (ADBC reports it as the cursor's `rowcount`).

use std::fmt;

use arrow::array::RecordBatch;
use datafusion::common::{ParamValues, ScalarValue};
use tonic::Status;

use crate::error::{ErrorKind, HasKind};
use crate::ingest::{Engine, EngineError};
use crate::model::DeletePredicate;
use crate::query::{QueryEngine, QueryError};

/// Why a delete was not done.
#[derive(Debug)]
pub enum DeleteError {
    Query(QueryError),
    Engine(EngineError),
}

impl fmt::Display for DeleteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeleteError::Query(e) => e.fmt(f),
            DeleteError::Engine(e) => e.fmt(f),
        }
    }
}

impl HasKind for DeleteError {
    fn kind(&self) -> ErrorKind {
        match self {
            DeleteError::Query(e) => e.kind(),
            DeleteError::Engine(e) => e.kind(),
        }
    }
}

impl From<QueryError> for DeleteError {
    fn from(e: QueryError) -> Self {
        DeleteError::Query(e)
    }
}

impl From<EngineError> for DeleteError {
    fn from(e: EngineError) -> Self {
        DeleteError::Engine(e)
    }
}

/// Plans, logs, applies and counts one DELETE. Durable and visible to the
/// next query when it returns.
pub async fn run(
    engine: &Engine,
    query: &QueryEngine,
    sql: &str,
    params: Option<ParamValues>,
) -> Result<u64, DeleteError> {
    let plan = query.plan_delete(sql, params).await?;
    if plan.predicate == DeletePredicate::Const(false) {
        return Ok(0); // nothing can match: nothing to log
    }
    let (offset, before) = engine.delete(plan.predicate.clone()).await?;
    // The delete is durable and applied by now: a failure to count must
    // not read as a failure to delete.
    let rows = query.count_deleted(&plan, before).await.map_err(|e| {
        QueryError::Execution(format!(
            "the DELETE was applied (log offset {offset}), but counting the points it removed failed: {e}"
        ))
    })?;
    tracing::info!(rows, offset = %offset, sql, "DELETE applied");
    Ok(rows)
}

/// Runs a DELETE once per row of `params` (none: once without), as a
/// Flight SQL update with bound parameters does; the rows deleted in all.
pub async fn run_per_row(
    engine: &Engine,
    query: &QueryEngine,
    sql: &str,
    params: Option<&RecordBatch>,
) -> Result<u64, Status> {
    let Some(batch) = params.filter(|b| b.num_rows() > 0) else {
        return run(engine, query, sql, None)
            .await
            .map_err(super::error::status);
    };
    let mut total = 0;
    for row in 0..batch.num_rows() {
        let values = batch
            .columns()
            .iter()
            .map(|c| ScalarValue::try_from_array(c, row))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Status::invalid_argument(format!("unsupported parameter: {e}")))?;
        total += run(engine, query, sql, Some(ParamValues::from(values)))
            .await
            .map_err(super::error::status)?;
    }
    Ok(total)
}

/// A ticket that answers with a DELETE's count (never valid UTF-8, so it
/// cannot be mistaken for a SQL ticket).
const RESULT_TICKET: &[u8; 5] = b"\xffSDBD";

pub fn result_ticket(rows: u64) -> Vec<u8> {
    let mut t = RESULT_TICKET.to_vec();
    t.extend_from_slice(&rows.to_le_bytes());
    t
}

/// The count a [`result_ticket`] carries, if `handle` is one.
pub fn parse_result_ticket(handle: &[u8]) -> Option<u64> {
    let rest = handle.strip_prefix(RESULT_TICKET.as_slice())?;
    Some(u64::from_le_bytes(rest.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_tickets_round_trip_and_sql_is_never_one() {
        assert_eq!(parse_result_ticket(&result_ticket(42)), Some(42));
        assert_eq!(parse_result_ticket(b"SELECT 1"), None);
        assert_eq!(parse_result_ticket(&result_ticket(1)[..8]), None);
    }
}
