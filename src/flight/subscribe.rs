//! DoExchange: continuous queries. The first message's descriptor command is
//! either the text `SUBSCRIBE TO <select> [WITH (...)]` (what a pyarrow user
//! writes with `FlightDescriptor.for_command(...)`) or a `CommandSubscribe`
//! protobuf (`proto/streamdb.proto`), bare or wrapped in `Any`.
//!
//! The reply is an Arrow IPC stream: the schema, then one message per
//! snapshot or update batch, each with JSON `app_metadata`
//! (`{"kind":"snapshot"|"update"|"progress","offset":...,"max_time":...}`);
//! progress messages carry metadata only. The subscription ends when the
//! client closes its side of the call (half-close), cancels, or disconnects;
//! its server task ends with it.

use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions};
use arrow_flight::{FlightData, SchemaAsIpc};
use futures::StreamExt;
use prost::Message as _;
use tonic::{Request, Response, Status, Streaming};

use super::error::status;
use super::{BoxStream, StreamDbFlight};
use crate::query::subscribe::{self, Message, SubscribeRequest};

/// The `CommandSubscribe` message of `proto/streamdb.proto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CommandSubscribe {
    #[prost(string, tag = "1")]
    pub sql: String,
    #[prost(bool, optional, tag = "2")]
    pub snapshot: Option<bool>,
    #[prost(uint32, optional, tag = "3")]
    pub emit_interval_ms: Option<u32>,
}

const TYPE_URL: &str = "type.googleapis.com/streamdb.v1.CommandSubscribe";

/// Reads the request out of a descriptor command.
fn parse_command(cmd: &[u8]) -> Result<SubscribeRequest, Status> {
    if let Ok(text) = std::str::from_utf8(cmd) {
        if subscribe::is_subscribe(text) {
            return subscribe::parse(text).map_err(status);
        }
    }
    let proto = match prost_types::Any::decode(cmd) {
        Ok(any) if any.type_url == TYPE_URL => CommandSubscribe::decode(any.value.as_slice()).ok(),
        _ => CommandSubscribe::decode(cmd).ok(),
    }
    .filter(|c| !c.sql.trim().is_empty())
    .ok_or_else(|| {
        Status::invalid_argument(
            "DoExchange expects a descriptor command `SUBSCRIBE TO SELECT ...` or a streamdb.v1.CommandSubscribe",
        )
    })?;
    // The SQL may be the SELECT alone or a whole SUBSCRIBE statement.
    let mut req = if subscribe::is_subscribe(&proto.sql) {
        subscribe::parse(&proto.sql).map_err(status)?
    } else {
        SubscribeRequest::new(proto.sql.trim().trim_end_matches(';'))
    };
    if let Some(s) = proto.snapshot {
        req.snapshot = s;
    }
    if let Some(ms) = proto.emit_interval_ms {
        req.emit_interval = Duration::from_millis(ms.max(10) as u64);
    }
    Ok(req)
}

impl StreamDbFlight {
    pub(super) async fn subscribe(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        let mut input = request.into_inner();
        let first = input.message().await?.ok_or_else(|| {
            Status::invalid_argument("empty DoExchange stream: send a descriptor first")
        })?;
        let cmd = first.flight_descriptor.map(|d| d.cmd).ok_or_else(|| {
            Status::invalid_argument("the first DoExchange message has no descriptor")
        })?;
        let req = parse_command(&cmd)?;
        let (schema, updates) = subscribe::subscribe(self.query.clone(), &self.subscriptions, req)
            .await
            .map_err(status)?;
        // The client closing its side (pyarrow's `writer.close()` or
        // `done_writing()`) ends the subscription; other client messages
        // are ignored.
        let client_done = async move { while let Ok(Some(_)) = input.message().await {} };
        let head = futures::stream::once(async move { Ok(schema_message(&schema)) });
        let body = updates
            .into_stream()
            .flat_map(|m| {
                futures::stream::iter(match m {
                    Ok(m) => encode(m),
                    Err(e) => vec![Err(status(e))],
                })
            })
            .take_until(client_done);
        Ok(Response::new(Box::pin(head.chain(body))))
    }
}

fn schema_message(schema: &SchemaRef) -> FlightData {
    SchemaAsIpc::new(schema, &IpcWriteOptions::default()).into()
}

fn encode(m: Message) -> Vec<Result<FlightData, Status>> {
    let metadata = m.metadata();
    let Some(batch) = m.batch else {
        return vec![Ok(FlightData {
            app_metadata: metadata.into_bytes().into(),
            ..FlightData::default()
        })];
    };
    let mut tracker = DictionaryTracker::new(false);
    let mut context = IpcWriteContext::default();
    match IpcDataGenerator::default().encode(
        &batch,
        &mut tracker,
        &IpcWriteOptions::default(),
        &mut context,
    ) {
        Ok((dictionaries, data)) => {
            let mut out: Vec<Result<FlightData, Status>> = dictionaries
                .into_iter()
                .map(|d| Ok(FlightData::from(d)))
                .collect();
            let mut fd = FlightData::from(data);
            fd.app_metadata = metadata.into_bytes().into();
            out.push(Ok(fd));
            out
        }
        Err(e) => vec![Err(Status::internal(format!(
            "encoding an update failed: {e}"
        )))],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_text_and_protobuf_commands() {
        let r = parse_command(b"SUBSCRIBE TO SELECT count(*) FROM metrics WITH (snapshot = false)")
            .unwrap();
        assert_eq!(
            (r.select.as_str(), r.snapshot),
            ("SELECT count(*) FROM metrics", false)
        );
        let cmd = CommandSubscribe {
            sql: "SELECT value FROM metrics".into(),
            snapshot: None,
            emit_interval_ms: Some(250),
        };
        let r = parse_command(&cmd.encode_to_vec()).unwrap();
        assert_eq!(
            (r.select.as_str(), r.emit_interval),
            ("SELECT value FROM metrics", Duration::from_millis(250))
        );
        let any = prost_types::Any {
            type_url: TYPE_URL.into(),
            value: cmd.encode_to_vec(),
        };
        assert_eq!(
            parse_command(&any.encode_to_vec()).unwrap().select,
            "SELECT value FROM metrics"
        );
        let err = parse_command(b"SELECT 1").unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }
}
