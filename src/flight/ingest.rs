//! DoPut: Arrow batches in, one PutResult per durable batch out.

use std::sync::Arc;

use arrow_flight::error::FlightError;
use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::PutResult;
use futures::{Stream, TryStreamExt};
use tonic::Status;

use super::error::engine_status;
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
            FlightError::Tonic(status) => transport_status(*status),
            e => Status::invalid_argument(format!("invalid Arrow IPC data: {e}")),
        })
        .map_ok(move |batch| {
            let engine = engine.clone();
            async move { engine.write(&batch).await.map_err(engine_status) }
        })
        .try_buffered(PIPELINE)
}

/// tonic refuses an oversized message with OUT_OF_RANGE; to clients it is
/// a resource limit, named as such.
fn transport_status(status: Status) -> Status {
    if status.code() == tonic::Code::OutOfRange && status.message().contains("too large") {
        crate::telemetry::metrics().limited("message_bytes");
        return Status::resource_exhausted(format!(
            "{} (--max-message-bytes); send smaller batches",
            status.message()
        ));
    }
    status
}

/// PutResult metadata: `{"rows": N, "offset": "..."}`.
pub fn put_result(r: &WriteReceipt) -> PutResult {
    let meta = serde_json::json!({ "rows": r.rows, "offset": r.offset.to_string() });
    PutResult {
        app_metadata: serde_json::to_vec(&meta).expect("json").into(),
    }
}
