//! DoPut: Arrow batches in, one PutResult per durable batch out.

use std::sync::Arc;

use arrow_flight::error::FlightError;
use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::PutResult;
use futures::{Stream, TryStreamExt};
use tonic::Status;

use super::error::{status, with_kind};
use crate::error::ErrorKind;
use crate::ingest::{Engine, WriteReceipt};

/// Batches of one DoPut stream written concurrently (their results still
/// go back in order); lets a single connection fill a group commit.
const PIPELINE: usize = 4;

/// Decodes the stream's batches and writes each one durably.
pub fn write_stream(
    engine: Arc<Engine>,
    input: PeekableFlightDataStream,
) -> impl Stream<Item = Result<WriteReceipt, Status>> + Send {
    let batches = super::ipc::decode(input.map_err(FlightError::from));
    batches
        .map_err(|e| match e {
            // The transport's own error (a message over the size limit, a
            // cancelled call) is not the client's Arrow data being wrong.
            FlightError::Tonic(s) => transport_status(*s),
            e => Status::invalid_argument(format!("invalid Arrow IPC data: {e}")),
        })
        .map_ok(move |batch| {
            let engine = engine.clone();
            async move { engine.write(&batch).await.map_err(status) }
        })
        .try_buffered(PIPELINE)
}

/// tonic refuses an oversized message with OUT_OF_RANGE (the only status
/// its decoder gives that code); to clients it is a size limit, named as
/// such.
fn transport_status(s: Status) -> Status {
    if s.code() == tonic::Code::OutOfRange {
        crate::telemetry::metrics().limited("message_bytes");
        return with_kind(
            ErrorKind::TooLarge,
            format!(
                "{} (--max-message-bytes); send smaller batches",
                s.message()
            ),
        );
    }
    s
}

/// PutResult metadata: `{"rows": N, "offset": "..."}`.
pub fn put_result(r: &WriteReceipt) -> PutResult {
    let meta = serde_json::json!({ "rows": r.rows, "offset": r.offset.to_string() });
    PutResult {
        app_metadata: serde_json::to_vec(&meta).expect("json").into(),
    }
}
