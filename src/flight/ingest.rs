//! DoPut: Arrow batches in, one PutResult per durable batch out.
//!
//! A DoPut may carry an idempotent producer in its request metadata
//! (`producer-id`, `producer-epoch`, `producer-seq`: the sequence number of
//! the stream's first batch, each further batch the next one), checked as
//! the HTTP side checks `Producer-*` headers (`ingest::exactly_once`). A
//! batch the producer already wrote is answered `"duplicate": true` and not
//! written again, so a client whose acknowledgements were lost resends from
//! its first unacknowledged batch with the same numbers and stores every
//! point once.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow_flight::error::FlightError;
use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::PutResult;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use tonic::metadata::MetadataMap;
use tonic::Status;

use super::error::{status, with_kind};
use crate::error::ErrorKind;
use crate::ingest::{normalize, Engine, Once, WriteReceipt};
use crate::model::{ProducerTuple, MAX_PRODUCER_NUMBER};
use crate::storage::SeriesCatalog;
use crate::stream::registry::accepts;
use crate::stream::Offset;

/// Batches of one DoPut stream written concurrently (their results still
/// go back in order); lets a single connection fill a group commit. A
/// producer's batches go one at a time: each one's sequence number is
/// checked against the one before.
const PIPELINE: usize = 4;

/// The request metadata naming a DoPut's producer.
pub const PRODUCER_HEADERS: [&str; 3] = ["producer-id", "producer-epoch", "producer-seq"];

/// What one batch of a DoPut did.
#[derive(Debug, Clone, PartialEq)]
pub struct Ack {
    pub rows: usize,
    /// Where the batch was written; `None` for a duplicate (its first
    /// write's offset is not kept).
    pub offset: Option<Offset>,
    /// The batch's producer sequence number, with producer metadata.
    pub seq: Option<u64>,
    /// The producer had written this batch before: not written again.
    pub duplicate: bool,
}

impl From<WriteReceipt> for Ack {
    fn from(r: WriteReceipt) -> Self {
        Ack {
            rows: r.rows,
            offset: Some(r.offset),
            seq: None,
            duplicate: false,
        }
    }
}

/// The DoPut's producer from its metadata, all three or none.
pub fn producer(metadata: &MetadataMap) -> Result<Option<ProducerTuple>, Status> {
    let mut values = [None; 3];
    for (value, name) in values.iter_mut().zip(PRODUCER_HEADERS) {
        *value =
            match metadata.get(name) {
                None => None,
                Some(v) => Some(v.to_str().map_err(|_| {
                    Status::invalid_argument(format!("{name} must be visible ASCII"))
                })?),
            };
    }
    ProducerTuple::from_headers(values, PRODUCER_HEADERS).map_err(Status::invalid_argument)
}

/// Decodes the stream's batches and writes each one durably (exactly once
/// per producer sequence number, with a producer).
pub fn write_stream(
    engine: Arc<Engine>,
    input: PeekableFlightDataStream,
    producer: Option<ProducerTuple>,
) -> BoxStream<'static, Result<Ack, Status>> {
    let batches = super::ipc::decode(input.map_err(FlightError::from)).map_err(|e| match e {
        // The transport's own error (a message over the size limit, a
        // cancelled call) is not the client's Arrow data being wrong.
        FlightError::Tonic(s) => transport_status(*s),
        e => Status::invalid_argument(format!("invalid Arrow IPC data: {e}")),
    });
    match producer {
        None => batches
            .map_ok(move |batch| {
                let engine = engine.clone();
                async move { engine.write(&batch).await.map(Ack::from).map_err(status) }
            })
            .try_buffered(PIPELINE)
            .boxed(),
        Some(first) => numbered(batches, first)
            .map_ok(move |(batch, tuple)| write_once(engine.clone(), batch, tuple))
            .try_buffered(1)
            .boxed(),
    }
}

/// Each batch with its producer tuple: the first's sequence number, then
/// one more per batch.
fn numbered(
    batches: impl Stream<Item = Result<RecordBatch, Status>> + Send + 'static,
    first: ProducerTuple,
) -> impl Stream<Item = Result<(RecordBatch, ProducerTuple), Status>> + Send + 'static {
    batches.enumerate().map(move |(i, batch)| {
        let seq = first
            .seq
            .checked_add(i as u64)
            .filter(|s| *s <= MAX_PRODUCER_NUMBER)
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "batch {i} of this DoPut would be producer-seq {} + {i}, beyond {MAX_PRODUCER_NUMBER}",
                    first.seq
                ))
            })?;
        Ok((batch?, ProducerTuple { seq, ..first.clone() }))
    })
}

async fn write_once(
    engine: Arc<Engine>,
    batch: RecordBatch,
    tuple: ProducerTuple,
) -> Result<Ack, Status> {
    let rows = batch.num_rows();
    let seq = tuple.seq;
    let make = move |catalog: &SeriesCatalog| Ok(normalize(&batch, catalog)?);
    let once = engine
        .write_once(make, Some(tuple.clone()), None)
        .await
        .map_err(status)?;
    match once {
        Once::Written(r) => Ok(Ack {
            seq: Some(seq),
            ..Ack::from(r)
        }),
        Once::NotWritten(verdict) => {
            accepts(verdict, Some(&tuple), None).map_err(status)?;
            Ok(Ack {
                rows,
                offset: None,
                seq: Some(seq),
                duplicate: true,
            })
        }
    }
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

/// PutResult metadata: `{"rows": N, "offset": "..."}`, plus `"seq"` with a
/// producer and `"duplicate": true` (no offset) for a batch written before.
pub fn put_result(a: &Ack) -> PutResult {
    let mut meta = serde_json::json!({ "rows": a.rows });
    if let Some(o) = a.offset {
        meta["offset"] = o.to_string().into();
    }
    if let Some(seq) = a.seq {
        meta["seq"] = seq.into();
    }
    if a.duplicate {
        meta["duplicate"] = true.into();
    }
    PutResult {
        app_metadata: serde_json::to_vec(&meta).expect("json").into(),
    }
}
