//! The Arrow Flight / Flight SQL service. Thin: decode the request, call the
//! engine or the query engine, encode the reply.
//!
//! - DoPut with a PATH descriptor `["metrics"]` or `CommandStatementIngest`
//!   (ADBC `adbc_ingest`) writes batches.
//! - GetFlightInfo/DoGet run SQL, directly or as prepared statements
//!   (`gateway`: a plain UTF-8 SQL command works too).
//! - `DELETE` runs through the update commands and the query commands
//!   alike ([`delete`]).
//! - GetSqlInfo, GetCatalogs, GetDbSchemas, GetTables, GetTableTypes answer
//!   the metadata calls ADBC makes.
//! - DoAction `status` returns the engine status as JSON.
//! - DoExchange `SUBSCRIBE TO SELECT ...` streams a continuous query.
//!
//! Every DoPut that changes data (the metrics path, ingest, updates)
//! first calls [`auth::require_write`]: a read-only token may bind
//! prepared-statement parameters over DoPut, nothing else.
//!
//! Client Arrow IPC (DoPut batches, parameters, prepared handles) is decoded
//! through [`ipc`], which checks each message and contains decoder panics.
//!
//! May depend on every layer below it.

pub mod auth;
pub mod delete;
mod error;
mod gateway;
mod ingest;
pub mod ipc;
mod statement;
mod subscribe;

use std::pin::Pin;
use std::sync::{Arc, LazyLock};

use arrow::datatypes::Schema;
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementIngest, CommandStatementQuery,
    CommandStatementSubstraitPlan, CommandStatementUpdate, DoPutPreparedStatementResult,
    ProstMessageExt, SqlInfo, SqlSupportedTransaction, TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, FlightDescriptor, FlightEndpoint, FlightInfo, IpcMessage, SchemaAsIpc,
    Ticket,
};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status};

pub use gateway::{service, Gateway};
pub use statement::Prepared;

use crate::ingest::Engine;
use crate::model::sql_schema;
use crate::query::subscribe::Subscriptions;
use crate::query::QueryEngine;

const CATALOG: &str = "streamdb";
const DB_SCHEMA: &str = "public";
const TABLE: &str = "metrics";

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

static SQL_INFO: LazyLock<SqlInfoData> = LazyLock::new(|| {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "StreamDB");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "59");
    b.append(SqlInfo::FlightSqlServerReadOnly, false);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(SqlInfo::FlightSqlServerStatementTimeout, 0i32);
    b.append(SqlInfo::FlightSqlServerTransactionTimeout, 0i32);
    b.build().expect("static SqlInfo is well formed")
});

/// The Flight SQL service over one engine.
#[derive(Clone)]
pub struct StreamDbFlight {
    engine: Arc<Engine>,
    query: Arc<QueryEngine>,
    subscriptions: Arc<Subscriptions>,
    tokens: auth::Tokens,
    schemas: Arc<statement::SchemaCache>,
}

impl StreamDbFlight {
    pub fn new(
        engine: Arc<Engine>,
        query: Arc<QueryEngine>,
        subscriptions: Arc<Subscriptions>,
        tokens: auth::Tokens,
    ) -> Self {
        Self {
            engine,
            query,
            subscriptions,
            tokens,
            schemas: Arc::default(),
        }
    }

    fn info(
        &self,
        schema: &Schema,
        ticket: Ticket,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(format!("encoding schema: {e}")))?
            .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
            .with_descriptor(descriptor)
            .with_total_records(-1)
            .with_total_bytes(-1);
        Ok(Response::new(info))
    }

    /// FlightInfo whose ticket is the command itself (metadata calls).
    fn command_info(
        &self,
        schema: &Schema,
        cmd: &impl ProstMessageExt,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.info(
            schema,
            Ticket::new(cmd.as_any().encode_to_vec()),
            request.into_inner(),
        )
    }

    fn one_batch(
        schema: arrow::datatypes::SchemaRef,
        batch: Result<arrow::array::RecordBatch, arrow_flight::error::FlightError>,
    ) -> Response<BoxStream<arrow_flight::FlightData>> {
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(futures::stream::once(async move { batch }))
            .map_err(Status::from);
        Response::new(Box::pin(stream))
    }

    /// Runs a DELETE asked for as a query: its FlightInfo's ticket
    /// answers with the count, which `total_records` also says.
    async fn delete_info(
        &self,
        p: &Prepared,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        auth::require_write(&request)?;
        let rows =
            delete::run_per_row(&self.engine, &self.query, &p.sql, p.params.as_ref()).await?;
        let ticket = TicketStatementQuery {
            statement_handle: delete::result_ticket(rows).into(),
        };
        let mut info = self.info(
            &crate::query::delete::result_schema(),
            Ticket::new(ticket.as_any().encode_to_vec()),
            request.into_inner(),
        )?;
        let rows = i64::try_from(rows).unwrap_or(i64::MAX);
        *info.get_mut() = info.get_ref().clone().with_total_records(rows);
        Ok(info)
    }

    /// Writes a DoPut's batches, as its producer metadata (if any) says.
    fn acks(
        &self,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<BoxStream<ingest::Ack>, Status> {
        let producer = ingest::producer(request.metadata())?;
        Ok(ingest::write_stream(
            self.engine.clone(),
            request.into_inner(),
            producer,
        ))
    }
}

fn schema_bytes(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
    Ok(bytes)
}

/// The Flight SQL reference schema of GetTableTypes.
fn table_types_schema() -> arrow::datatypes::SchemaRef {
    Arc::new(Schema::new(vec![arrow::datatypes::Field::new(
        "table_type",
        arrow::datatypes::DataType::Utf8,
        false,
    )]))
}

fn check_table(name: &str) -> Result<(), Status> {
    if name == TABLE {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "unknown table {name:?}: StreamDB ingests into the table `metrics`"
        )))
    }
}

/// Refuses an update that is not a DELETE (the only one served).
fn check_delete(sql: &str) -> Result<(), Status> {
    if crate::query::delete::is_delete(sql) {
        return Ok(());
    }
    Err(Status::invalid_argument(
        "only DELETE changes data over SQL: write points with DoPut (the path [\"metrics\"] or CommandStatementIngest); run queries with CommandStatementQuery",
    ))
}

/// The parameter rows a DoPut carries (`None` when it carries none).
async fn read_params(
    request: Request<PeekableFlightDataStream>,
) -> Result<Option<arrow::array::RecordBatch>, Status> {
    let input = request
        .into_inner()
        .map_err(arrow_flight::error::FlightError::from);
    let batches: Vec<_> = ipc::decode(input)
        .try_collect()
        .await
        .map_err(|e| Status::invalid_argument(format!("invalid parameter batch: {e}")))?;
    let batches: Vec<_> = batches.into_iter().filter(|b| b.num_rows() > 0).collect();
    match batches.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        _ => arrow::compute::concat_batches(&batches[0].schema(), &batches)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("invalid parameter batches: {e}"))),
    }
}

/// An update command StreamDB does not serve: a read-only caller is told
/// that first (the command would change data), anyone else `why`.
fn refuse_update<T>(request: &Request<T>, why: &str) -> Result<i64, Status> {
    auth::require_write(request)?;
    Err(Status::unimplemented(why.to_string()))
}

#[tonic::async_trait]
impl FlightSqlService for StreamDbFlight {
    type FlightService = StreamDbFlight;

    async fn do_put_fallback(
        &self,
        mut request: Request<PeekableFlightDataStream>,
        message: Any,
    ) -> Result<Response<BoxStream<arrow_flight::PutResult>>, Status> {
        auth::require_write(&request)?;
        let first = request.get_mut().peek().await.cloned();
        let descriptor = match first {
            Some(Ok(d)) => d.flight_descriptor,
            Some(Err(e)) => return Err(e),
            None => return Err(Status::invalid_argument("empty DoPut stream")),
        };
        let path = descriptor.map(|d| d.path).unwrap_or_default();
        if path != [TABLE] {
            let what = if path.is_empty() {
                format!("command {:?}", message.type_url)
            } else {
                format!("path {path:?}")
            };
            return Err(Status::invalid_argument(format!("unknown DoPut descriptor {what}: use the path [\"metrics\"] or CommandStatementIngest")));
        }
        let results = self.acks(request)?.map_ok(|a| ingest::put_result(&a));
        Ok(Response::new(Box::pin(results)))
    }

    async fn do_put_statement_ingest(
        &self,
        cmd: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        auth::require_write(&request)?;
        check_table(&cmd.table)?;
        // `metrics` always exists and is append-only: ADBC's create, append
        // and create_append modes all append; replace would drop history.
        let replace = arrow_flight::sql::TableExistsOption::Replace as i32;
        if cmd
            .table_definition_options
            .as_ref()
            .is_some_and(|o| o.if_exists == replace)
        {
            return Err(Status::invalid_argument("ingest mode replace is not supported: the metrics table is append-only (use append)"));
        }
        let mut rows = 0i64;
        let mut results = self.acks(request)?;
        while let Some(r) = results.next().await {
            rows += r?.rows as i64;
        }
        Ok(rows)
    }

    // Updates change data: a read-only token is refused before anything
    // else is said about them. DELETE is the one update served.
    async fn do_put_statement_update(
        &self,
        cmd: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        auth::require_write(&request)?;
        check_delete(&cmd.query)?;
        let rows = delete::run_per_row(&self.engine, &self.query, &cmd.query, None).await?;
        Ok(rows as i64)
    }

    async fn do_put_prepared_statement_update(
        &self,
        cmd: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        auth::require_write(&request)?;
        let mut p = Prepared::decode(&cmd.prepared_statement_handle)?;
        check_delete(&p.sql)?;
        // Parameters bound in this call come in the DoPut stream; without
        // any, those bound earlier (in the handle) apply.
        let sent = read_params(request).await?;
        if sent.is_some() {
            p.params = sent;
        }
        let rows =
            delete::run_per_row(&self.engine, &self.query, &p.sql, p.params.as_ref()).await?;
        Ok(rows as i64)
    }

    async fn do_put_substrait_plan(
        &self,
        _cmd: CommandStatementSubstraitPlan,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        refuse_update(
            &request,
            "CommandStatementSubstraitPlan: Substrait plans are not supported; send SQL",
        )
    }

    async fn get_flight_info_statement(
        &self,
        cmd: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let p = Prepared {
            sql: cmd.query.clone(),
            params: None,
        };
        if crate::query::delete::is_delete(&p.sql) {
            return self.delete_info(&p, request).await;
        }
        let schema = self.schemas.schema(&self.query, &p).await?;
        let ticket = TicketStatementQuery {
            statement_handle: cmd.query.into_bytes().into(),
        };
        self.info(
            &schema,
            Ticket::new(ticket.as_any().encode_to_vec()),
            request.into_inner(),
        )
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
        if let Some(rows) = delete::parse_result_ticket(&ticket.statement_handle) {
            let schema = crate::query::delete::result_schema();
            let batch = crate::query::delete::result_batch(rows);
            return Ok(Self::one_batch(schema, Ok(batch)));
        }
        let sql = String::from_utf8(ticket.statement_handle.to_vec())
            .map_err(|_| Status::invalid_argument("ticket is not UTF-8 SQL"))?;
        let stream = statement::execute(&self.query, &Prepared { sql, params: None }).await?;
        Ok(Response::new(Box::pin(stream)))
    }

    async fn do_action_create_prepared_statement(
        &self,
        req: ActionCreatePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let p = Prepared {
            sql: req.query,
            params: None,
        };
        let schema = if crate::query::delete::is_delete(&p.sql) {
            crate::query::delete::result_schema()
        } else {
            self.schemas.schema(&self.query, &p).await?
        };
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: p.encode()?.into(),
            dataset_schema: schema_bytes(&schema)?,
            parameter_schema: Default::default(),
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        _req: ActionClosePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        // Handles carry their own state: nothing to free.
        Ok(())
    }

    async fn do_put_prepared_statement_query(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let mut p = Prepared::decode(&cmd.prepared_statement_handle)?;
        p.params = read_params(request).await?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(p.encode()?.into()),
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let p = Prepared::decode(&cmd.prepared_statement_handle)?;
        if crate::query::delete::is_delete(&p.sql) {
            return self.delete_info(&p, request).await;
        }
        let schema = self.schemas.schema(&self.query, &p).await?;
        self.command_info(&schema, &cmd, request)
    }

    async fn do_get_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
        let p = Prepared::decode(&cmd.prepared_statement_handle)?;
        Ok(Response::new(Box::pin(
            statement::execute(&self.query, &p).await?,
        )))
    }

    async fn get_flight_info_sql_info(
        &self,
        cmd: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = cmd.clone().into_builder(&SQL_INFO).schema();
        self.command_info(&schema, &cmd, request)
    }

    async fn do_get_sql_info(
        &self,
        cmd: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
        let b = cmd.into_builder(&SQL_INFO);
        Ok(Self::one_batch(b.schema(), b.build()))
    }

    async fn get_flight_info_catalogs(
        &self,
        cmd: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = cmd.into_builder().schema();
        self.command_info(&schema, &cmd, request)
    }

    async fn do_get_catalogs(
        &self,
        cmd: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
        let mut b = cmd.into_builder();
        b.append(CATALOG);
        Ok(Self::one_batch(b.schema(), b.build()))
    }

    async fn get_flight_info_schemas(
        &self,
        cmd: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = cmd.clone().into_builder().schema();
        self.command_info(&schema, &cmd, request)
    }

    async fn do_get_schemas(
        &self,
        cmd: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
        let mut b = cmd.into_builder();
        b.append(CATALOG, DB_SCHEMA);
        Ok(Self::one_batch(b.schema(), b.build()))
    }

    async fn get_flight_info_tables(
        &self,
        cmd: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = cmd.clone().into_builder().schema();
        self.command_info(&schema, &cmd, request)
    }

    async fn do_get_tables(
        &self,
        cmd: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
        let mut b = cmd.into_builder();
        b.append(CATALOG, DB_SCHEMA, TABLE, "TABLE", &sql_schema())
            .map_err(Status::from)?;
        Ok(Self::one_batch(b.schema(), b.build()))
    }

    async fn get_flight_info_table_types(
        &self,
        cmd: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = table_types_schema();
        self.command_info(&schema, &cmd, request)
    }

    async fn do_get_table_types(
        &self,
        _cmd: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
        let schema = table_types_schema();
        let types: arrow::array::ArrayRef =
            Arc::new(arrow::array::StringArray::from(vec!["TABLE"]));
        let batch =
            arrow::array::RecordBatch::try_new(schema.clone(), vec![types]).map_err(Into::into);
        Ok(Self::one_batch(schema, batch))
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<BoxStream<arrow_flight::Result>>, Status> {
        let action = request.into_inner();
        if action.r#type != "status" {
            return Err(Status::invalid_argument(format!(
                "unknown action {:?}; supported: status",
                action.r#type
            )));
        }
        let body = serde_json::to_vec(&self.engine.status())
            .map_err(|e| Status::internal(e.to_string()))?;
        let result = arrow_flight::Result { body: body.into() };
        Ok(Response::new(Box::pin(futures::stream::once(async {
            Ok(result)
        }))))
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<ActionType, Status>>> {
        Some(vec![Ok(ActionType {
            r#type: "status".into(),
            description: "Engine status as JSON".into(),
        })])
    }

    /// Flight's handshake: with tokens configured, HTTP Basic (any user, a
    /// token as password) or a bearer token is answered with the bearer
    /// token in the `authorization` response header, which clients then
    /// send on every call.
    async fn do_handshake(
        &self,
        request: Request<tonic::Streaming<arrow_flight::HandshakeRequest>>,
    ) -> Result<Response<BoxStream<arrow_flight::HandshakeResponse>>, Status> {
        let token = if self.tokens.enabled() {
            let header = request
                .metadata()
                .get("authorization")
                .map(|v| v.as_bytes());
            let token = self
                .tokens
                .check_handshake(header)
                .map_err(|e| Status::unauthenticated(e.to_string()))?;
            Some(token)
        } else {
            None
        };
        let reply = arrow_flight::HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().unwrap_or_default().into(),
        };
        let mut response: Response<BoxStream<arrow_flight::HandshakeResponse>> =
            Response::new(Box::pin(futures::stream::once(async { Ok(reply) })));
        if let Some(t) = token {
            let value = format!("Bearer {}", String::from_utf8_lossy(&t));
            if let Ok(v) = value.parse() {
                response.metadata_mut().insert("authorization", v);
            }
        }
        Ok(response)
    }

    async fn do_exchange_fallback(
        &self,
        request: Request<tonic::Streaming<arrow_flight::FlightData>>,
    ) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
        self.subscribe(request).await
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
