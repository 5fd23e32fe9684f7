//! HTTP routes served beside gRPC on the same port.

use std::sync::Arc;

use axum::extract::rejection::{QueryRejection, StringRejection};
use axum::extract::{DefaultBodyLimit, Extension, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use futures::TryStreamExt;
use serde::Deserialize;

use super::error::{error, error_response};
use super::result_body::{BodyError, Format, ResultBody};
use super::streams::{self, StreamsState};
use crate::flight::auth::{Role, READ_ONLY_REFUSAL};
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
        Ok(Query(p))
            if p.sql
                .as_deref()
                .is_some_and(crate::query::delete::is_delete) =>
        {
            let mut r = error(
                StatusCode::METHOD_NOT_ALLOWED,
                "DELETE changes data: send it with POST /v1/query",
            );
            r.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
            r
        }
        Ok(Query(p)) => run_query(&s, p.sql, p.format).await,
        Err(e) => error(e.status(), e.body_text()),
    }
}

async fn query_post(
    State(s): State<AppState>,
    role: Option<Extension<Role>>,
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
    match sql {
        Some(sql) if crate::query::delete::is_delete(&sql) => {
            if role.is_some_and(|Extension(r)| r == Role::ReadOnly) {
                return error(StatusCode::FORBIDDEN, READ_ONLY_REFUSAL);
            }
            run_delete(&s, &sql, p.format).await
        }
        sql => run_query(&s, sql, p.format).await,
    }
}

/// Runs a DELETE and answers with its count, one row `rows_deleted`, in
/// the format asked for.
async fn run_delete(s: &AppState, sql: &str, format: Option<String>) -> Response {
    let name = format.unwrap_or_else(|| "json".into());
    let Some(format) = Format::parse(&name) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("unknown format {name:?}: use json, csv or arrow"),
        );
    };
    let rows = match crate::flight::delete::run(&s.engine, &s.query, sql, None).await {
        Ok(rows) => rows,
        Err(e) => return error_response(&e),
    };
    let batch = crate::query::delete::result_batch(rows);
    let mut body = ResultBody::new(format, usize::MAX);
    match body.push(&batch).and_then(|_| body.finish(&batch.schema())) {
        Ok(bytes) => ([(header::CONTENT_TYPE, format.content_type())], bytes).into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the answer: {e:?}"),
        ),
    }
}

async fn run_query(s: &AppState, sql: Option<String>, format: Option<String>) -> Response {
    let Some(sql) = sql else {
        return error(
            StatusCode::BAD_REQUEST,
            "missing SQL: pass ?sql=... or a request body",
        );
    };
    let name = format.unwrap_or_else(|| "json".into());
    let Some(format) = Format::parse(&name) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("unknown format {name:?}: use json, csv or arrow"),
        );
    };
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
    let config = s.query.config();
    let body =
        tokio::time::timeout(config.timeout, encode(df, format, config.max_result_bytes)).await;
    match body {
        Ok(Ok((rows, body))) => {
            admission.sent(rows);
            ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
        }
        Ok(Err(Failed::Query(e))) => error_response(&e),
        // e.g. a map column asked for as CSV: the request, not the server.
        Ok(Err(Failed::Encode(e))) => error(
            StatusCode::BAD_REQUEST,
            format!("cannot encode the result as {name}: {e}"),
        ),
        Err(_) => error_response(&QueryError::Timeout(config.timeout)),
    }
}

enum Failed {
    Query(QueryError),
    Encode(arrow::error::ArrowError),
}

/// Runs the plan and encodes its batches as they come, so the answer never
/// holds more than `limit` encoded bytes plus the batch at hand.
async fn encode(
    df: datafusion::dataframe::DataFrame,
    format: Format,
    limit: usize,
) -> Result<(usize, Vec<u8>), Failed> {
    let query = |e| Failed::Query(QueryError::from_datafusion(e));
    let schema = Arc::new(df.schema().as_arrow().clone());
    let mut batches = df.execute_stream().await.map_err(query)?;
    let mut body = ResultBody::new(format, limit);
    while let Some(batch) = batches.try_next().await.map_err(query)? {
        body.push(&batch).map_err(refused)?;
    }
    let rows = body.rows();
    Ok((rows, body.finish(&schema).map_err(refused)?))
}

fn refused(e: BodyError) -> Failed {
    match e {
        BodyError::TooLarge(limit) => Failed::Query(QueryError::Limit(format!(
            "the query result is larger than {limit} bytes (--max-query-result-bytes); \
             narrow it (WHERE, LIMIT, time_bucket) or read it over Flight SQL, which streams"
        ))),
        BodyError::Encode(e) => Failed::Encode(e),
    }
}
