//! The StreamDB Rust client: ingest with Flight DoPut, SQL with Flight SQL,
//! and the server's status.
//!
//! ```no_run
//! # async fn demo() -> Result<(), streamdb_client::ClientError> {
//! let mut client = streamdb_client::Client::connect("http://127.0.0.1:8080").await?;
//! let (_schema, batches) = client.query("SELECT count(*) FROM metrics").await?;
//! println!("{}", arrow::util::pretty::pretty_format_batches(&batches).unwrap());
//! # Ok(()) }
//! ```

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::{Action, FlightClient, FlightDescriptor};
use futures::{StreamExt, TryStreamExt};
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("{0}")]
    Server(String),
    #[error("unexpected reply: {0}")]
    Protocol(String),
}

impl From<FlightError> for ClientError {
    fn from(e: FlightError) -> Self {
        match e {
            FlightError::Tonic(s) => {
                ClientError::Server(format!("{}: {}", code_name(s.code()), s.message()))
            }
            e => ClientError::Server(e.to_string()),
        }
    }
}

impl From<arrow::error::ArrowError> for ClientError {
    fn from(e: arrow::error::ArrowError) -> Self {
        ClientError::Server(e.to_string())
    }
}

fn code_name(c: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match c {
        InvalidArgument => "invalid argument",
        ResourceExhausted => "resource exhausted",
        Unavailable => "unavailable",
        DeadlineExceeded => "deadline exceeded",
        Unauthenticated => "unauthenticated",
        NotFound => "not found",
        _ => "error",
    }
}

/// What a write returned: rows acknowledged and the last stream offset.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteSummary {
    pub rows: u64,
    pub last_offset: Option<String>,
}

/// A connection to one StreamDB server.
pub struct Client {
    channel: Channel,
    url: String,
}

impl Client {
    /// Connects to `url` (e.g. `http://127.0.0.1:8080`).
    pub async fn connect(url: &str) -> Result<Self, ClientError> {
        let err = |reason: String| ClientError::Connect {
            url: url.to_string(),
            reason,
        };
        let endpoint = Endpoint::from_shared(url.to_string()).map_err(|e| err(e.to_string()))?;
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| err(source_chain(&e)))?;
        Ok(Self {
            channel,
            url: url.to_string(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn flight(&self) -> FlightClient {
        FlightClient::new_from_inner(
            arrow_flight::flight_service_client::FlightServiceClient::new(self.channel.clone())
                .max_decoding_message_size(256 << 20)
                .max_encoding_message_size(256 << 20),
        )
    }

    /// Writes batches to the `metrics` table; returns once all are durable.
    pub async fn write(&mut self, batches: Vec<RecordBatch>) -> Result<WriteSummary, ClientError> {
        let input = futures::stream::iter(batches.into_iter().map(Ok));
        let data = FlightDataEncoderBuilder::new()
            .with_flight_descriptor(Some(FlightDescriptor::new_path(vec!["metrics".into()])))
            .build(input);
        let mut results = self.flight().do_put(data).await?;
        let mut summary = WriteSummary::default();
        while let Some(r) = results.next().await {
            let meta: serde_json::Value = serde_json::from_slice(&r?.app_metadata)
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            summary.rows += meta["rows"].as_u64().unwrap_or(0);
            summary.last_offset = meta["offset"].as_str().map(str::to_string);
        }
        Ok(summary)
    }

    /// Runs SQL and collects the result.
    pub async fn query(&mut self, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>), ClientError> {
        let mut sql_client = FlightSqlServiceClient::new(self.channel.clone());
        let info = sql_client
            .execute(sql.to_string(), None)
            .await
            .map_err(ClientError::from)?;
        let schema: SchemaRef = std::sync::Arc::new(
            info.clone()
                .try_decode_schema()
                .map_err(ClientError::from)?,
        );
        let mut batches = Vec::new();
        for ep in info.endpoint {
            let ticket = ep
                .ticket
                .ok_or_else(|| ClientError::Protocol("endpoint without a ticket".into()))?;
            let stream = sql_client.do_get(ticket).await.map_err(ClientError::from)?;
            batches.extend(stream.try_collect::<Vec<_>>().await?);
        }
        Ok((schema, batches))
    }

    /// The server's status document (as `streamdb status --json` prints it).
    pub async fn status(&mut self) -> Result<serde_json::Value, ClientError> {
        let mut results = self.flight().do_action(Action::new("status", "")).await?;
        let body = results
            .next()
            .await
            .ok_or_else(|| ClientError::Protocol("empty status reply".into()))??;
        serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(e.to_string()))
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
