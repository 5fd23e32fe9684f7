//! HTTP routes served beside gRPC on the same port.

use std::sync::Arc;

use axum::extract::rejection::{QueryRejection, StringRejection};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use futures::TryStreamExt;
use serde::Deserialize;

use super::error::{error, error_response};
use super::streams::{self, StreamsState};
use crate::ingest::Engine;
use crate::query::{QueryEngine, QueryError};

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub query: Arc<QueryEngine>,
}

pub fn router(state: AppState, streams: StreamsState) -> Router {
    let body_limit = streams.config.max_body_bytes;
    let stream_routes = Router::new()
        .route("/v1/stream/{*name}", any(streams::handle))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(streams);
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/v1/status", get(status))
        .route(
            "/v1/query",
            get(query_get)
                .post(query_post)
                .layer(DefaultBodyLimit::max(MAX_SQL_BYTES)),
        )
        .with_state(state)
        .merge(stream_routes)
        .layer(axum::middleware::map_response(
            |mut r: Response| async move {
                streams::security_headers(r.headers_mut());
                r
            },
        ))
}

async fn status(State(s): State<AppState>) -> Json<crate::ingest::Status> {
    Json(s.engine.status())
}

#[derive(Deserialize)]
struct QueryParams {
    sql: Option<String>,
    format: Option<String>,
}

/// The largest SQL text `POST /v1/query` takes. Generated queries (long
/// IN lists) run to kilobytes; a megabyte is a mistake, answered with 413.
const MAX_SQL_BYTES: usize = 1 << 20;

async fn query_get(
    State(s): State<AppState>,
    p: Result<Query<QueryParams>, QueryRejection>,
) -> Response {
    match p {
        Ok(Query(p)) => run_query(&s, p.sql, p.format).await,
        Err(e) => error(e.status(), e.body_text()),
    }
}

async fn query_post(
    State(s): State<AppState>,
    p: Result<Query<QueryParams>, QueryRejection>,
    body: Result<String, StringRejection>,
) -> Response {
    let p = match p {
        Ok(Query(p)) => p,
        Err(e) => return error(e.status(), e.body_text()),
    };
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("SQL text is larger than {MAX_SQL_BYTES} bytes"),
            )
        }
        Err(e) => return error(e.status(), e.body_text()),
    };
    let sql = p.sql.or((!body.trim().is_empty()).then_some(body));
    run_query(&s, sql, p.format).await
}

async fn run_query(s: &AppState, sql: Option<String>, format: Option<String>) -> Response {
    let Some(sql) = sql else {
        return error(
            StatusCode::BAD_REQUEST,
            "missing SQL: pass ?sql=... or a request body",
        );
    };
    let format = format.unwrap_or_else(|| "json".into());
    if !matches!(format.as_str(), "json" | "csv" | "arrow") {
        return error(
            StatusCode::BAD_REQUEST,
            format!("unknown format {format:?}: use json, csv or arrow"),
        );
    }
    let admission = match s.query.admit("http", &sql) {
        Ok(a) => a,
        Err(e) => return error_response(&e),
    };
    let df = match s
        .query
        .sql(&sql)
        .await
        .and_then(|df| crate::query::check_bound(&df).map(|_| df))
    {
        Ok(df) => df,
        Err(e) => return error_response(&e),
    };
    let schema = std::sync::Arc::new(df.schema().as_arrow().clone());
    let batches: Vec<_> = match tokio::time::timeout(s.query.config().timeout, async {
        df.execute_stream().await?.try_collect().await
    })
    .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return error_response(&QueryError::from_datafusion(e)),
        Err(_) => return error_response(&QueryError::Timeout(s.query.config().timeout)),
    };
    admission.sent(batches.iter().map(|b| b.num_rows()).sum());
    let schema = batches.first().map(|b| b.schema()).unwrap_or(schema);
    match encode(&format, &schema, &batches) {
        Ok((ctype, body)) => ([(header::CONTENT_TYPE, ctype)], body).into_response(),
        // e.g. a map column asked for as CSV: the request, not the server.
        Err(e) => error(
            StatusCode::BAD_REQUEST,
            format!("cannot encode the result as {format}: {e}"),
        ),
    }
}

fn encode(
    format: &str,
    schema: &arrow::datatypes::SchemaRef,
    batches: &[arrow::array::RecordBatch],
) -> Result<(&'static str, Vec<u8>), arrow::error::ArrowError> {
    let mut out = Vec::new();
    match format {
        "csv" => {
            let mut w = arrow::csv::Writer::new(&mut out);
            if batches.is_empty() {
                // Still write the header line.
                w.write(&arrow::array::RecordBatch::new_empty(schema.clone()))?;
            }
            for b in batches {
                w.write(b)?;
            }
            drop(w);
            Ok(("text/csv", out))
        }
        "arrow" => {
            let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut out, schema)?;
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
            drop(w);
            Ok(("application/vnd.apache.arrow.stream", out))
        }
        _ => {
            let mut w = arrow::json::ArrayWriter::new(&mut out);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
            if out.is_empty() {
                out.extend_from_slice(b"[]");
            }
            Ok(("application/json", out))
        }
    }
}
