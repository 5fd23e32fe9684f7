//! SQL statements for Flight SQL: planning for FlightInfo, streaming for
//! DoGet, and the stateless prepared-statement handle.
//!
//! A prepared statement handle carries everything needed to run it (the
//! SQL and, once bound, the parameter batch as Arrow IPC), so the server
//! keeps no per-statement state and any node can answer it.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::FlightData;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::physical_plan::{execute_stream, ExecutionPlan};
use datafusion::prelude::DataFrame;
use futures::{Stream, StreamExt, TryStreamExt};
use parking_lot::Mutex;
use tonic::Status;

use super::error::status;
use crate::query::{QueryEngine, QueryError};

const HANDLE_MAGIC: &[u8; 4] = b"SDB1";

/// SQL plus optional bound parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub sql: String,
    pub params: Option<RecordBatch>,
}

impl Prepared {
    pub fn encode(&self) -> Result<Vec<u8>, Status> {
        let mut out = HANDLE_MAGIC.to_vec();
        out.extend_from_slice(&(self.sql.len() as u32).to_le_bytes());
        out.extend_from_slice(self.sql.as_bytes());
        if let Some(p) = &self.params {
            let mut w = StreamWriter::try_new(&mut out, &p.schema())
                .map_err(|e| Status::internal(e.to_string()))?;
            w.write(p).map_err(|e| Status::internal(e.to_string()))?;
            w.finish().map_err(|e| Status::internal(e.to_string()))?;
        }
        Ok(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, Status> {
        let bad = |why: &str| {
            Status::invalid_argument(format!("invalid prepared statement handle: {why}"))
        };
        if bytes.len() < 8 || &bytes[..4] != HANDLE_MAGIC {
            return Err(bad("not issued by this server"));
        }
        let n = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")) as usize;
        let sql = bytes.get(8..8 + n).ok_or_else(|| bad("truncated"))?;
        let sql = String::from_utf8(sql.to_vec()).map_err(|_| bad("SQL is not UTF-8"))?;
        let rest = &bytes[8 + n..];
        let params = if rest.is_empty() {
            None
        } else {
            // Handles come back from clients: checked, and read defensively.
            super::ipc::check_stream(rest).map_err(|e| bad(&e))?;
            super::ipc::contain(|| {
                let mut r = StreamReader::try_new(rest, None).map_err(|e| e.to_string())?;
                r.next().transpose().map_err(|e| e.to_string())
            })
            .map_err(|e| bad(&e))?
        };
        Ok(Self { sql, params })
    }
}

/// The first row of a parameter batch as positional parameters.
fn param_values(batch: &RecordBatch) -> Result<ParamValues, Status> {
    if batch.num_rows() != 1 {
        return Err(Status::invalid_argument(format!(
            "expected one row of parameters, got {}",
            batch.num_rows()
        )));
    }
    let values = batch
        .columns()
        .iter()
        .map(|c| ScalarValue::try_from_array(c, 0))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Status::invalid_argument(format!("unsupported parameter: {e}")))?;
    Ok(ParamValues::from(values))
}

async fn dataframe(q: &QueryEngine, p: &Prepared) -> Result<DataFrame, Status> {
    let mut df = q.sql(&p.sql).await.map_err(status)?;
    if let Some(params) = &p.params {
        df = df
            .with_param_values(param_values(params)?)
            .map_err(|e| status(QueryError::from_datafusion(e)))?;
    }
    // Whatever is still unbound is the client's mistake, not a server fault.
    crate::query::check_bound(&df).map_err(status)?;
    Ok(df)
}

/// Plans `p` down to its physical plan; its schema is what DoGet streams.
pub async fn physical_plan(
    q: &QueryEngine,
    p: &Prepared,
) -> Result<
    (
        Arc<dyn ExecutionPlan>,
        Arc<datafusion::execution::TaskContext>,
    ),
    Status,
> {
    let df = dataframe(q, p).await?;
    let task = Arc::new(df.task_ctx());
    let plan = df
        .create_physical_plan()
        .await
        .map_err(|e| status(QueryError::from_datafusion(e)))?;
    Ok((plan, task))
}

/// Schemas of recently planned statements without bound parameters.
///
/// A Flight SQL client asks for a statement's schema before it runs it
/// (ADBC: CreatePreparedStatement, then GetFlightInfo, then DoGet), and
/// each answer used to cost a full plan. The schema depends on the SQL
/// text alone (the `metrics` table's schema is fixed and nothing else in
/// a plan changes its output types), so it is remembered by text.
#[derive(Debug, Default)]
pub struct SchemaCache {
    entries: Mutex<HashMap<String, SchemaRef>>,
}

impl SchemaCache {
    /// Entries kept; the cache starts over when full (dashboards repeat a
    /// small set of statements, so a full reset is rare and cheap).
    const CAPACITY: usize = 1024;
    /// Longer statements are planned every time rather than kept.
    const MAX_SQL_BYTES: usize = 4096;

    /// The schema `p` will produce, planned at most once per SQL text.
    pub async fn schema(&self, q: &QueryEngine, p: &Prepared) -> Result<SchemaRef, Status> {
        let cacheable = p.params.is_none() && p.sql.len() <= Self::MAX_SQL_BYTES;
        if cacheable {
            if let Some(s) = self.entries.lock().get(&p.sql) {
                return Ok(s.clone());
            }
        }
        let schema = schema(q, p).await?;
        if cacheable {
            let mut entries = self.entries.lock();
            if entries.len() >= Self::CAPACITY {
                entries.clear();
            }
            entries.insert(p.sql.clone(), schema.clone());
        }
        Ok(schema)
    }
}

/// The schema a statement will produce. Statements with unbound
/// parameters cannot be planned physically yet: their logical schema is
/// announced instead.
async fn schema(q: &QueryEngine, p: &Prepared) -> Result<SchemaRef, Status> {
    match physical_plan(q, p).await {
        Ok((plan, _)) => Ok(plan.schema()),
        Err(e) if p.params.is_none() => {
            let df = q.sql(&p.sql).await.map_err(status)?;
            if df
                .logical_plan()
                .get_parameter_types()
                .map(|t| t.is_empty())
                .unwrap_or(true)
            {
                return Err(e);
            }
            Ok(Arc::new(df.schema().as_arrow().clone()))
        }
        Err(e) => Err(e),
    }
}

/// Runs `p` and streams its batches as Flight data, with a deadline.
pub async fn execute(
    q: &QueryEngine,
    p: &Prepared,
) -> Result<impl Stream<Item = Result<FlightData, Status>> + Send + 'static, Status> {
    // Admitted before planning: the slot covers the whole query.
    let admission = q.admit("flight", &p.sql).map_err(status)?;
    let (plan, task) = physical_plan(q, p).await?;
    let schema = plan.schema();
    let timeout = q.config().timeout;
    let batches = execute_stream(plan, task).map_err(|e| status(QueryError::from_datafusion(e)))?;
    let clock = q.engine().clock().clone();
    let deadline = clock.instant() + timeout;
    let limited = batches
        // The admission lives as long as the stream: its drop records
        // the query and frees the slot.
        .inspect_ok(move |b| admission.sent(b.num_rows()))
        .map_err(|e| arrow_flight::error::FlightError::from(status(QueryError::from_datafusion(e))))
        .take_until(tokio::time::sleep_until(deadline))
        // If the deadline cut the stream short, end it with an error rather
        // than a silently truncated result.
        .chain(
            futures::stream::once(async move { clock.instant() >= deadline }).filter_map(
                move |late| {
                    let err = arrow_flight::error::FlightError::from(status(QueryError::Timeout(
                        timeout,
                    )));
                    futures::future::ready(late.then_some(Err(err)))
                },
            ),
        );
    Ok(FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(limited)
        .map_err(Status::from))
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::DataType;

    use super::*;
    use crate::ingest::{Engine, EngineConfig};
    use crate::query::QueryConfig;

    fn sql(text: &str) -> Prepared {
        Prepared {
            sql: text.to_string(),
            params: None,
        }
    }

    #[tokio::test]
    async fn schemas_are_remembered_by_text_and_errors_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(EngineConfig::new(dir.path())).await.unwrap();
        let q = QueryEngine::new(engine.clone(), QueryConfig::default());
        let cache = SchemaCache::default();

        let a = "SELECT metric, count(*) AS n FROM metrics GROUP BY metric";
        let first = cache.schema(&q, &sql(a)).await.unwrap();
        assert_eq!(first.field(1).data_type(), &DataType::Int64);
        // The second answer is the remembered one, and equals a fresh plan.
        let again = cache.schema(&q, &sql(a)).await.unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(again, schema(&q, &sql(a)).await.unwrap());

        let bad = "SELECT nope FROM metrics";
        for _ in 0..2 {
            let e = cache.schema(&q, &sql(bad)).await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        }
        assert_eq!(cache.entries.lock().len(), 1);
        engine.shutdown().await.unwrap();
    }
}
