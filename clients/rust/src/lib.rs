//! The StreamDB Rust client: ingest with Flight DoPut, SQL with Flight SQL,
//! continuous queries with DoExchange, and the server's status.
//!
//! ```no_run
//! # async fn demo() -> Result<(), streamdb_client::ClientError> {
//! let mut client = streamdb_client::Client::connect("http://127.0.0.1:8080").await?;
//! let (_schema, batches) = client.query("SELECT count(*) FROM metrics").await?;
//! println!("{}", arrow::util::pretty::pretty_format_batches(&batches).unwrap());
//! # Ok(()) }
//! ```
//!
//! A continuous query: the snapshot, then every change as it happens.
//!
//! ```no_run
//! # async fn demo() -> Result<(), streamdb_client::ClientError> {
//! let mut client = streamdb_client::Client::connect("http://127.0.0.1:8080").await?;
//! let mut sub = client
//!     .subscribe("SELECT time_bucket('5s', time) AS bucket, avg(value) FROM metrics GROUP BY 1")
//!     .await?;
//! while let Some(update) = sub.next().await {
//!     let update = update?;
//!     if let Some(batch) = &update.batch {
//!         println!("{} at {}: {} rows", update.kind, update.offset, batch.num_rows());
//!     }
//! }
//! # Ok(()) }
//! ```

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use std::collections::HashMap;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::utils::flight_data_to_arrow_batch;
use arrow_flight::{Action, FlightClient, FlightData, FlightDescriptor};
use futures::stream::BoxStream;
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
    /// Batches the server had already stored (answered `"duplicate":
    /// true`): resent after a lost acknowledgement, not stored again.
    pub duplicates: u64,
}

/// An idempotent producer (`producer-id`, `producer-epoch`,
/// `producer-seq` on every DoPut): the server stores each of its batches
/// once, however often a lost acknowledgement makes the client send it.
/// One producer id must be used by one writer at a time; it numbers its
/// batches 0, 1, 2, ... across all of its writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Producer {
    pub id: String,
    /// Raise it (and restart `next_seq` at 0) to fence off an older
    /// writer of the same id.
    pub epoch: u64,
    /// The sequence number the next batch gets.
    pub next_seq: u64,
}

impl Producer {
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            epoch: 0,
            next_seq: 0,
        }
    }
}

/// How [`Client::write_once`] retries when the connection fails.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts after the first; 0 never retries.
    pub retries: u32,
    /// The wait before the first retry; doubled each time up to `max_backoff`.
    pub backoff: std::time::Duration,
    pub max_backoff: std::time::Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            retries: 10,
            backoff: std::time::Duration::from_millis(100),
            max_backoff: std::time::Duration::from_secs(5),
        }
    }
}

/// Failures worth sending the same batches again for: the connection or
/// the server went away (`UNAVAILABLE`, `CANCELLED`, or a transport error
/// tonic reports as `UNKNOWN`). Anything the server decided is final.
fn retryable(e: &FlightError) -> bool {
    match e {
        FlightError::Tonic(s) => matches!(
            s.code(),
            tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown
        ),
        _ => false,
    }
}

/// One message of a subscription.
#[derive(Debug, Clone)]
pub struct Update {
    /// `snapshot`, `update` or `progress`.
    pub kind: String,
    /// Rows of the result (changed groups, or new rows); `None` for progress.
    pub batch: Option<RecordBatch>,
    /// Every stream record before this offset is reflected.
    pub offset: String,
    /// The largest point time seen so far (RFC 3339).
    pub max_time: Option<String>,
    /// A snapshot part with more parts to follow: the result at `offset`
    /// is complete only after the part where this is `false`.
    pub more: bool,
}

/// A running continuous query; dropping it ends the subscription.
pub struct Subscription {
    pub schema: SchemaRef,
    stream: tonic::Streaming<FlightData>,
}

impl Subscription {
    /// The next message; `None` when the server ended the subscription.
    pub async fn next(&mut self) -> Option<Result<Update, ClientError>> {
        let data = match self.stream.next().await? {
            Ok(d) => d,
            Err(s) => return Some(Err(FlightError::Tonic(Box::new(s)).into())),
        };
        // Progress messages carry metadata only (no IPC message), which
        // arrow-flight's stream decoder does not accept: decode by hand.
        let batch = if data.data_header.is_empty() {
            None
        } else {
            match flight_data_to_arrow_batch(&data, self.schema.clone(), &HashMap::new()) {
                Ok(b) => Some(b),
                Err(e) => return Some(Err(e.into())),
            }
        };
        let meta: serde_json::Value = match serde_json::from_slice(&data.app_metadata) {
            Ok(m) => m,
            Err(e) => return Some(Err(ClientError::Protocol(format!("update metadata: {e}")))),
        };
        Some(Ok(Update {
            kind: meta["kind"].as_str().unwrap_or("update").to_string(),
            batch,
            offset: meta["offset"].as_str().unwrap_or_default().to_string(),
            max_time: meta["max_time"].as_str().map(str::to_string),
            more: meta["more"].as_bool().unwrap_or(false),
        }))
    }
}

/// How to connect beyond the URL.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Sent as `authorization: Bearer <token>` on every call (servers
    /// started with `--auth-token`).
    pub token: Option<String>,
    /// PEM CA certificate(s) to trust for `https://` URLs, in addition to
    /// the public web roots (a private CA or a self-signed server).
    pub ca_pem: Option<Vec<u8>>,
    /// PEM certificate and key presented to servers that require client
    /// certificates (mutual TLS, e.g. behind a proxy).
    pub identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// The name to verify the server's certificate against, when it differs
    /// from the URL's host (connecting by IP address).
    pub tls_domain: Option<String>,
    /// How long establishing the connection may take; `None` is 10 s.
    pub connect_timeout: Option<std::time::Duration>,
}

/// The connect timeout when `ConnectOptions::connect_timeout` is `None`: a
/// server that drops packets fails the call instead of hanging it.
pub const DEFAULT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A connection to one StreamDB server.
pub struct Client {
    channel: Channel,
    url: String,
    /// The `authorization` header value, if any.
    authorization: Option<String>,
}

impl Client {
    /// Connects to `url` (e.g. `http://127.0.0.1:8080`).
    pub async fn connect(url: &str) -> Result<Self, ClientError> {
        Self::connect_with(url, ConnectOptions::default()).await
    }

    /// Connects with options (a token).
    pub async fn connect_with(url: &str, options: ConnectOptions) -> Result<Self, ClientError> {
        let err = |reason: String| ClientError::Connect {
            url: url.to_string(),
            reason,
        };
        let mut endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| err(e.to_string()))?
            .connect_timeout(options.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT));
        let tls_settings = options.ca_pem.is_some()
            || options.identity_pem.is_some()
            || options.tls_domain.is_some();
        if url.starts_with("https://") {
            let mut tls = tonic::transport::ClientTlsConfig::new().with_webpki_roots();
            if let Some(pem) = &options.ca_pem {
                tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
            }
            if let Some((cert, key)) = &options.identity_pem {
                tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
            }
            if let Some(domain) = &options.tls_domain {
                tls = tls.domain_name(domain.clone());
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| err(source_chain(&e)))?;
        } else if tls_settings {
            return Err(err(
                "TLS settings (CA, client certificate or domain) were given but the URL is not https://".into(),
            ));
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| err(source_chain(&e)))?;
        Ok(Self {
            channel,
            url: url.to_string(),
            authorization: options.token.map(|t| format!("Bearer {t}")),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn flight(&self) -> Result<FlightClient, ClientError> {
        let mut client = FlightClient::new_from_inner(
            arrow_flight::flight_service_client::FlightServiceClient::new(self.channel.clone())
                .max_decoding_message_size(256 << 20)
                .max_encoding_message_size(256 << 20),
        );
        if let Some(a) = &self.authorization {
            client.add_header("authorization", a)?;
        }
        Ok(client)
    }

    /// Writes batches to the `metrics` table; returns once all are durable.
    pub async fn write(&mut self, batches: Vec<RecordBatch>) -> Result<WriteSummary, ClientError> {
        let input = futures::stream::iter(batches.into_iter().map(Ok));
        let data = FlightDataEncoderBuilder::new()
            .with_flight_descriptor(Some(FlightDescriptor::new_path(vec!["metrics".into()])))
            .build(input);
        let mut results = self.flight()?.do_put(data).await?;
        let mut summary = WriteSummary::default();
        while let Some(r) = results.next().await {
            let meta: serde_json::Value = serde_json::from_slice(&r?.app_metadata)
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            summary.rows += meta["rows"].as_u64().unwrap_or(0);
            summary.last_offset = meta["offset"].as_str().map(str::to_string);
        }
        Ok(summary)
    }

    /// Writes batches as `producer`, retrying on a lost connection: each
    /// retry resends from the first unacknowledged batch with the same
    /// sequence numbers, so every batch is stored exactly once. `on_retry`
    /// hears each failure that is retried (attempt number, error). On
    /// success `producer.next_seq` has moved past the batches.
    pub async fn write_once(
        &mut self,
        producer: &mut Producer,
        batches: Vec<RecordBatch>,
        policy: &RetryPolicy,
        mut on_retry: impl FnMut(u32, &ClientError),
    ) -> Result<WriteSummary, ClientError> {
        let base = producer.next_seq;
        let mut summary = WriteSummary::default();
        let mut acked = 0usize;
        let mut attempt = 0u32;
        let mut backoff = policy.backoff;
        while acked < batches.len() {
            let tuple = Producer {
                next_seq: base + acked as u64,
                ..producer.clone()
            };
            let before = acked;
            match self
                .put_from(&tuple, &batches[acked..], &mut summary, &mut acked)
                .await
            {
                Ok(()) => {}
                Err(e) if retryable(&e) && attempt < policy.retries => {
                    attempt += 1;
                    on_retry(attempt, &ClientError::from(e));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(policy.max_backoff);
                }
                Err(e) => return Err(e.into()),
            }
            if acked > before {
                // Progress: the next failure starts its backoff afresh.
                backoff = policy.backoff;
            }
        }
        producer.next_seq = base + batches.len() as u64;
        Ok(summary)
    }

    /// One DoPut of `batches` numbered from `tuple.next_seq`, counting
    /// each acknowledgement into `summary` and `acked` as it arrives.
    async fn put_from(
        &mut self,
        tuple: &Producer,
        batches: &[RecordBatch],
        summary: &mut WriteSummary,
        acked: &mut usize,
    ) -> Result<(), FlightError> {
        let start = *acked;
        let mut flight = self
            .flight()
            .map_err(|e| FlightError::ExternalError(e.into()))?;
        flight.add_header("producer-id", &tuple.id)?;
        flight.add_header("producer-epoch", &tuple.epoch.to_string())?;
        flight.add_header("producer-seq", &tuple.next_seq.to_string())?;
        // Owned: the encoder's input outlives this borrow.
        let owned: Vec<RecordBatch> = batches.to_vec();
        let input = futures::stream::iter(owned.into_iter().map(Ok));
        let data = FlightDataEncoderBuilder::new()
            .with_flight_descriptor(Some(FlightDescriptor::new_path(vec!["metrics".into()])))
            .build(input);
        let mut results = flight.do_put(data).await?;
        while let Some(r) = results.next().await {
            let meta: serde_json::Value = serde_json::from_slice(&r?.app_metadata)
                .map_err(|e| FlightError::ProtocolError(e.to_string()))?;
            *acked += 1;
            summary.rows += meta["rows"].as_u64().unwrap_or(0);
            if meta["duplicate"].as_bool() == Some(true) {
                summary.duplicates += 1;
            }
            if let Some(o) = meta["offset"].as_str() {
                summary.last_offset = Some(o.to_string());
            }
        }
        if *acked - start < batches.len() {
            // Ended early without an error: the connection, not the server.
            return Err(FlightError::Tonic(Box::new(tonic::Status::unavailable(
                "the server ended the DoPut before acknowledging every batch",
            ))));
        }
        Ok(())
    }

    /// Runs SQL and collects the result.
    pub async fn query(&mut self, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>), ClientError> {
        let (schema, stream) = self.query_stream(sql).await?;
        Ok((schema, stream.try_collect().await?))
    }

    /// Runs SQL and returns the result's schema and its batches as the
    /// server streams them (nothing is collected in memory).
    pub async fn query_stream(
        &mut self,
        sql: &str,
    ) -> Result<
        (
            SchemaRef,
            BoxStream<'static, Result<RecordBatch, ClientError>>,
        ),
        ClientError,
    > {
        let mut sql_client = FlightSqlServiceClient::new(self.channel.clone());
        if let Some(a) = &self.authorization {
            sql_client.set_header("authorization", a);
        }
        let info = sql_client
            .execute(sql.to_string(), None)
            .await
            .map_err(ClientError::from)?;
        let schema: SchemaRef = std::sync::Arc::new(
            info.clone()
                .try_decode_schema()
                .map_err(ClientError::from)?,
        );
        let tickets = info
            .endpoint
            .into_iter()
            .map(|ep| {
                ep.ticket
                    .ok_or_else(|| ClientError::Protocol("endpoint without a ticket".into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Endpoints are read one after another, each as it streams.
        let batches = futures::stream::iter(tickets)
            .then(move |ticket| {
                let mut c = sql_client.clone();
                async move { c.do_get(ticket).await.map_err(ClientError::from) }
            })
            .map_ok(|s| s.map_err(ClientError::from))
            .try_flatten();
        Ok((schema, Box::pin(batches)))
    }

    /// Starts a continuous query. `statement` is a SELECT or a whole
    /// `SUBSCRIBE TO SELECT ... [WITH (snapshot = false, emit_interval = '1s')]`.
    pub async fn subscribe(&mut self, statement: &str) -> Result<Subscription, ClientError> {
        let text = if statement
            .trim_start()
            .to_ascii_uppercase()
            .starts_with("SUBSCRIBE")
        {
            statement.to_string()
        } else {
            format!("SUBSCRIBE TO {statement}")
        };
        let first = FlightData {
            flight_descriptor: Some(FlightDescriptor::new_cmd(text)),
            ..FlightData::default()
        };
        // The request stays open: closing it would end the subscription (the
        // server treats a half-close as "stop"); dropping `Subscription`
        // cancels the call.
        let request = futures::stream::once(async { first }).chain(futures::stream::pending());
        let mut raw =
            arrow_flight::flight_service_client::FlightServiceClient::new(self.channel.clone())
                .max_decoding_message_size(256 << 20);
        let mut request = tonic::Request::new(request);
        if let Some(a) = &self.authorization {
            let value = a.parse().map_err(|_| {
                ClientError::Protocol("the token is not a valid header value".into())
            })?;
            request.metadata_mut().insert("authorization", value);
        }
        let response = raw
            .do_exchange(request)
            .await
            .map_err(|s| ClientError::from(FlightError::Tonic(Box::new(s))))?;
        let mut stream = response.into_inner();
        let first = match stream.next().await {
            Some(Ok(d)) => d,
            Some(Err(s)) => return Err(FlightError::Tonic(Box::new(s)).into()),
            None => {
                return Err(ClientError::Protocol(
                    "subscription ended before its schema".into(),
                ))
            }
        };
        let schema = arrow::datatypes::Schema::try_from(&first).map_err(|e| {
            ClientError::Protocol(format!("subscription did not start with a schema: {e}"))
        })?;
        Ok(Subscription {
            schema: std::sync::Arc::new(schema),
            stream,
        })
    }

    /// The server's status document (as `streamdb status --json` prints it).
    pub async fn status(&mut self) -> Result<serde_json::Value, ClientError> {
        let mut results = self.flight()?.do_action(Action::new("status", "")).await?;
        let body = results
            .next()
            .await
            .ok_or_else(|| ClientError::Protocol("empty status reply".into()))??;
        serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(e.to_string()))
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut last = s.clone();
    let mut cur = e.source();
    while let Some(c) = cur {
        // Wrappers often repeat their source's text word for word.
        let text = c.to_string();
        if text != last && !last.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        last = text;
        cur = c.source();
    }
    s
}
