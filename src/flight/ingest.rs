//! DoPut: Arrow batches in, one PutResult per durable batch out.

use std::sync::Arc;

use arrow_flight::decode::FlightRecordBatchStream;
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
    let batches = FlightRecordBatchStream::new_from_flight_data(input.map_err(FlightError::from));
    batches
        .map_err(|e| Status::invalid_argument(format!("invalid Arrow IPC data: {e}")))
        .map_ok(move |batch| {
            let engine = engine.clone();
            async move { engine.write(&batch).await.map_err(engine_status) }
        })
        .try_buffered(PIPELINE)
}

/// PutResult metadata: `{"rows": N, "offset": "..."}`.
pub fn put_result(r: &WriteReceipt) -> PutResult {
    let meta = serde_json::json!({ "rows": r.rows, "offset": r.offset.to_string() });
    PutResult {
        app_metadata: serde_json::to_vec(&meta).expect("json").into(),
    }
}
