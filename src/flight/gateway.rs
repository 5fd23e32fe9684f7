//! The `FlightService` tonic serves: StreamDB's Flight SQL service behind a
//! check of the opaque bytes clients send in descriptors and tickets.
//!
//! arrow-flight's generic Flight SQL dispatch decodes `FlightDescriptor.cmd`
//! and `Ticket.ticket` as protobuf `Any` and answers a bare prost
//! `DecodeError` when they are not. Here:
//! - a GetFlightInfo / GetSchema command that is UTF-8 text and not a Flight
//!   SQL message runs as SQL (what a plain pyarrow user sends:
//!   `FlightDescriptor.for_command("SELECT ...")`);
//! - any other undecodable command or ticket gets an INVALID_ARGUMENT that
//!   says what was expected.
//!
//! Everything else passes through unchanged. [`service`] builds the tonic
//! server around it.
//!
//! May depend on the Flight SQL service in `flight`'s `mod.rs` (which only
//! re-exports this file), `ingest` and `query`.

use std::sync::Arc;

use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::{Any, CommandStatementQuery, ProstMessageExt};
use arrow_flight::{
    Action, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest, PollInfo,
    SchemaResult, Ticket,
};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use super::{auth, StreamDbFlight};
use crate::ingest::Engine;
use crate::query::subscribe::Subscriptions;
use crate::query::QueryEngine;

/// Flight SQL messages are `Any`s whose type URL names this package.
const FLIGHT_SQL_TYPE_PREFIX: &str = "type.googleapis.com/arrow.flight.protocol.sql.";

pub struct Gateway(pub StreamDbFlight);

/// The `DoAction` types with a handler (see `StreamDbFlight`).
const SUPPORTED_ACTIONS: [&str; 3] = [
    "CreatePreparedStatement",
    "ClosePreparedStatement",
    "status",
];

/// What a descriptor's command turned out to be.
enum Cmd {
    FlightSql,
    SqlText(String),
}

/// `None` when `cmd` is neither a Flight SQL message nor SQL text.
fn classify(cmd: &[u8]) -> Option<Cmd> {
    match Any::decode(cmd) {
        Ok(any) if any.type_url.starts_with(FLIGHT_SQL_TYPE_PREFIX) => return Some(Cmd::FlightSql),
        _ => {}
    }
    match std::str::from_utf8(cmd) {
        Ok(text) if !text.trim().is_empty() => Some(Cmd::SqlText(text.to_string())),
        _ => None,
    }
}

/// A descriptor whose SQL text is wrapped as `CommandStatementQuery`.
fn as_statement(mut request: Request<FlightDescriptor>, sql: String) -> Request<FlightDescriptor> {
    let cmd = CommandStatementQuery {
        query: sql,
        transaction_id: None,
    };
    request.get_mut().cmd = cmd.as_any().encode_to_vec().into();
    request
}

/// Checks a descriptor's command, rewriting SQL text into Flight SQL.
fn descriptor(request: Request<FlightDescriptor>) -> Result<Request<FlightDescriptor>, Status> {
    let d = request.get_ref();
    if d.r#type == DescriptorType::Path as i32 {
        return Err(Status::invalid_argument(format!(
            "queries take a command descriptor, not the path {:?}: use FlightDescriptor.for_command(\"SELECT ...\")",
            d.path
        )));
    }
    match classify(&d.cmd) {
        Some(Cmd::FlightSql) => Ok(request),
        Some(Cmd::SqlText(sql)) => Ok(as_statement(request, sql)),
        None => Err(Status::invalid_argument(
            "the FlightDescriptor command is neither a Flight SQL command (a protobuf Any such as CommandStatementQuery) nor UTF-8 SQL text",
        )),
    }
}

#[tonic::async_trait]
impl FlightService for Gateway {
    type HandshakeStream = <StreamDbFlight as FlightService>::HandshakeStream;
    type ListFlightsStream = <StreamDbFlight as FlightService>::ListFlightsStream;
    type DoGetStream = <StreamDbFlight as FlightService>::DoGetStream;
    type DoPutStream = <StreamDbFlight as FlightService>::DoPutStream;
    type DoActionStream = <StreamDbFlight as FlightService>::DoActionStream;
    type ListActionsStream = <StreamDbFlight as FlightService>::ListActionsStream;
    type DoExchangeStream = <StreamDbFlight as FlightService>::DoExchangeStream;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        self.0.handshake(request).await
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        self.0.list_flights(request).await
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.0.get_flight_info(descriptor(request)?).await
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        self.0.poll_flight_info(request).await
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        // arrow-flight's Flight SQL dispatch leaves GetSchema unimplemented.
        // The schema is the one GetFlightInfo plans (same IPC encoding, and
        // planning only: nothing runs).
        let info = self
            .0
            .get_flight_info(descriptor(request)?)
            .await?
            .into_inner();
        Ok(Response::new(SchemaResult {
            schema: info.schema,
        }))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        // Tickets come from this server's FlightInfo; anything else is not
        // run, even if it happens to be SQL text.
        match classify(&request.get_ref().ticket) {
            Some(Cmd::FlightSql) => self.0.do_get(request).await,
            _ => Err(Status::invalid_argument(
                "the ticket is not one this server issued: call GetFlightInfo first and pass its endpoint's ticket",
            )),
        }
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        self.0.do_put(request).await
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        self.0.do_exchange(request).await
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        self.0.do_action(request).await
    }

    /// Only the actions StreamDB answers: arrow-flight's list also names
    /// transactions, savepoints, Substrait plans and cancellation, which
    /// would fail as unknown actions if a client tried them.
    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        use futures::StreamExt;
        let all = self.0.list_actions(request).await?.into_inner();
        let supported = all.filter(|a| {
            let keep = a
                .as_ref()
                .map_or(true, |a| SUPPORTED_ACTIONS.contains(&a.r#type.as_str()));
            std::future::ready(keep)
        });
        Ok(Response::new(Box::pin(supported)))
    }
}

/// The gRPC service: the Flight SQL service behind the [`Gateway`].
pub fn service(
    engine: Arc<Engine>,
    query: Arc<QueryEngine>,
    subscriptions: Arc<Subscriptions>,
    tokens: auth::Tokens,
    max_message_bytes: usize,
) -> arrow_flight::flight_service_server::FlightServiceServer<Gateway> {
    arrow_flight::flight_service_server::FlightServiceServer::new(Gateway(StreamDbFlight::new(
        engine,
        query,
        subscriptions,
        tokens,
    )))
    .max_decoding_message_size(max_message_bytes)
    // Replies are bounded by the batch size queries produce, not by this.
    .max_encoding_message_size(usize::MAX >> 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_flight_sql_sql_text_or_neither() {
        let flight_sql = CommandStatementQuery {
            query: "SELECT 1".into(),
            transaction_id: None,
        }
        .as_any()
        .encode_to_vec();
        assert!(matches!(classify(&flight_sql), Some(Cmd::FlightSql)));
        for sql in [
            "SELECT 1",
            "EXPLAIN SELECT 1",
            "with t as (select 1) select * from t",
        ] {
            assert!(
                matches!(classify(sql.as_bytes()), Some(Cmd::SqlText(s)) if s == sql),
                "{sql}"
            );
        }
        for junk in [&b""[..], b"  ", b"\xff\xfe\x00garbage"] {
            assert!(classify(junk).is_none(), "{junk:?}");
        }
    }

    #[test]
    fn path_descriptors_are_refused_with_a_hint() {
        let err = descriptor(Request::new(FlightDescriptor::new_path(vec![
            "metrics".into()
        ])))
        .expect_err("refused");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("for_command"), "{}", err.message());
    }
}
