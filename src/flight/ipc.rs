//! Decoding Arrow IPC from clients, which arrow-ipc does not do defensively.
//!
//! arrow-ipc trusts a batch header's buffer offsets and lengths, its field
//! lengths, and, for compressed batches, the decompressed size each buffer
//! declares. The fuzzer (`fuzz/fuzz_targets/flight_data.rs`) found a buffer
//! past the message body (a panic in `Buffer::slice_with_length`) and a
//! field longer than its validity buffer (a panic in `BooleanBuffer::new`);
//! a huge declared decompressed size would make it allocate that much.
//! So every message a client sends, in a DoPut stream or inside a
//! prepared-statement handle, is first checked by [`check_message`]
//! (buffers within the body, decompressed sizes capped), and decoding then
//! runs with any remaining panic contained and answered as invalid data
//! ([`decode`], [`contain`]).

use std::panic::AssertUnwindSafe;

use arrow::array::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::FlightData;
use futures::{Stream, StreamExt, TryStreamExt};

use arrow::ipc::{root_as_message, MessageHeader};

/// The most a message's compressed buffers may declare they decompress to.
pub const MAX_DECOMPRESSED_BYTES: u64 = 1 << 30;

const CONTINUATION: [u8; 4] = [0xff; 4];

/// A client's FlightData as record batches: each message checked, then
/// decoded with decoder panics turned into errors (the stream ends there).
pub fn decode<S>(input: S) -> impl Stream<Item = Result<RecordBatch, FlightError>> + Send
where
    S: Stream<Item = Result<FlightData, FlightError>> + Send + 'static,
{
    let checked = input.and_then(|data| {
        futures::future::ready(
            check_message(&data.data_header, &data.data_body)
                .map(|_| data)
                .map_err(FlightError::DecodeError),
        )
    });
    AssertUnwindSafe(FlightRecordBatchStream::new_from_flight_data(checked))
        .catch_unwind()
        .map(|polled| {
            polled.unwrap_or_else(|panic| Err(FlightError::DecodeError(malformed(&panic))))
        })
}

/// Runs a synchronous decode with its panics turned into errors.
pub fn contain<T>(decode: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(AssertUnwindSafe(decode))
        .unwrap_or_else(|panic| Err(malformed(&panic)))
}

fn malformed(panic: &Box<dyn std::any::Any + Send>) -> String {
    let why = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown");
    format!("malformed Arrow IPC data (the decoder failed: {why})")
}

/// Checks one message: its flatbuffer header and its body.
pub fn check_message(header: &[u8], body: &[u8]) -> Result<(), String> {
    if header.is_empty() {
        // No IPC message (e.g. a FlightData carrying only a descriptor).
        return Ok(());
    }
    let message =
        root_as_message(header).map_err(|e| format!("invalid IPC message header: {e}"))?;
    let batch = match message.header_type() {
        MessageHeader::RecordBatch => message.header_as_record_batch(),
        MessageHeader::DictionaryBatch => {
            message.header_as_dictionary_batch().and_then(|d| d.data())
        }
        _ => return Ok(()),
    };
    let batch = batch.ok_or("IPC batch message without its batch header")?;
    let compressed = batch.compression().is_some();
    let mut declared: u64 = 0;
    for (i, buffer) in batch.buffers().into_iter().flatten().enumerate() {
        let (offset, length) = (buffer.offset(), buffer.length());
        let end = u64::try_from(offset)
            .ok()
            .zip(u64::try_from(length).ok())
            .and_then(|(o, l)| o.checked_add(l));
        if end.is_none_or(|e| e > body.len() as u64) {
            return Err(format!(
                "IPC buffer {i} (offset {offset}, length {length}) lies outside the message body of {} bytes",
                body.len()
            ));
        }
        if compressed && length >= 8 {
            let start = offset as usize;
            let prefix: [u8; 8] = body[start..start + 8].try_into().expect("8 bytes");
            // -1 marks a buffer stored uncompressed.
            declared =
                declared.saturating_add(u64::try_from(i64::from_le_bytes(prefix)).unwrap_or(0));
        }
    }
    if declared > MAX_DECOMPRESSED_BYTES {
        return Err(format!(
            "IPC batch declares {declared} bytes once decompressed, more than the {MAX_DECOMPRESSED_BYTES} allowed"
        ));
    }
    Ok(())
}

/// Checks every message of an IPC stream (`[0xFFFFFFFF] len metadata body`,
/// repeated, as `StreamWriter` writes it).
pub fn check_stream(mut bytes: &[u8]) -> Result<(), String> {
    let truncated = || "IPC stream is truncated".to_string();
    while !bytes.is_empty() {
        let (mut word, mut rest) = bytes.split_first_chunk::<4>().ok_or_else(truncated)?;
        if *word == CONTINUATION {
            (word, rest) = rest.split_first_chunk::<4>().ok_or_else(truncated)?;
        }
        let len = u32::from_le_bytes(*word) as usize;
        if len == 0 {
            return Ok(()); // end-of-stream marker
        }
        let header = rest.get(..len).ok_or_else(truncated)?;
        let message =
            root_as_message(header).map_err(|e| format!("invalid IPC message header: {e}"))?;
        let body_len = usize::try_from(message.bodyLength())
            .map_err(|_| "IPC message with a negative body length".to_string())?;
        let body = rest
            .get(len..)
            .and_then(|r| r.get(..body_len))
            .ok_or_else(truncated)?;
        check_message(header, body)?;
        bytes = &rest[len + body_len..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::ipc::writer::StreamWriter;

    use super::*;

    fn stream() -> Vec<u8> {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(vec![1, 2, 3]))],
        )
        .unwrap();
        let mut out = Vec::new();
        let mut w = StreamWriter::try_new(&mut out, &schema).unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
        out
    }

    #[test]
    fn a_valid_stream_passes_and_a_cut_one_does_not() {
        let s = stream();
        assert_eq!(check_stream(&s), Ok(()));
        assert_eq!(check_stream(&[]), Ok(()));
        let cut = &s[..s.len() - 20];
        assert!(check_stream(cut).is_err());
    }

    #[test]
    fn a_buffer_past_the_body_is_refused() {
        let s = stream();
        // The batch message is the second; give it a body shorter than its
        // buffers claim by cutting the body in the check.
        let (_, rest) = s.split_at(4);
        let schema_len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        let batch_msg = &s[8 + schema_len..];
        let len = u32::from_le_bytes(batch_msg[4..8].try_into().unwrap()) as usize;
        let header = &batch_msg[8..8 + len];
        let err = check_message(header, &[0u8; 4]).unwrap_err();
        assert!(err.contains("lies outside the message body"), "{err}");
    }
}
