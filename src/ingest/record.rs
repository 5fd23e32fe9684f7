//! The payload of a `metrics` log record: one normalised batch, or one
//! `DELETE` ([`Record`]).
//!
//! ```text
//! kind u8 (1 = points v1, 2 = points v1 with a source checkpoint,
//!          3 = points v1 with an origin, 4 = delete)
//! [kind 2] u16 length, source checkpoint JSON (written before origins)
//! [kind 3] u32 length, origin JSON (source, producer, Stream-Seq)
//! [kind 1-3] lz4 block with prepended size of:
//!   new series: count u32, then each (model::wire)
//!   points:     n u32, series_id u64 × n, time i64 × n, value f64 bits × n
//! [kind 4] u32 length, the DeletePredicate as JSON
//! ```
//! Only what the engine needs is stored (ids, times, values and new series
//! definitions), never the client's raw rows.

use std::sync::Arc;

use arrow::array::{AsArray, Float64Array, RecordBatch, TimestampMicrosecondArray, UInt64Array};
use arrow::datatypes::{Float64Type, TimestampMicrosecondType, UInt64Type};

use super::normalize::{Origin, PointBatch};
use crate::model::wire::{WireError, WireReader, WireWriter};
use crate::model::{point_schema, DeletePredicate};

const POINTS_V1: u8 = 1;
const POINTS_V1_CHECKPOINT: u8 = 2;
const POINTS_V1_ORIGIN: u8 = 3;
const DELETE: u8 = 4;

/// One record of the `metrics` log.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Points(PointBatch),
    /// Removes the points the predicate matches among those logged before
    /// this record; points logged after it are untouched.
    Delete(DeletePredicate),
}

pub fn encode_delete(predicate: &DeletePredicate) -> Vec<u8> {
    let json = serde_json::to_vec(predicate).expect("a predicate serializes");
    let mut out = Vec::with_capacity(json.len() + 5);
    out.push(DELETE);
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    out
}

pub fn encode(batch: &PointBatch) -> Vec<u8> {
    let n = batch.rows();
    let mut w = WireWriter {
        buf: Vec::with_capacity(8 + n * 24),
    };
    w.u32(batch.new_series.len() as u32);
    for (id, key) in &batch.new_series {
        w.series(*id, key);
    }
    w.u32(n as u32);
    let p = &batch.points;
    for v in p.column(0).as_primitive::<UInt64Type>().values() {
        w.u64(*v);
    }
    for v in p
        .column(1)
        .as_primitive::<TimestampMicrosecondType>()
        .values()
    {
        w.u64(*v as u64);
    }
    for v in p.column(2).as_primitive::<Float64Type>().values() {
        w.u64(v.to_bits());
    }
    let body = lz4_flex::compress_prepend_size(&w.buf);
    let mut out = Vec::with_capacity(body.len() + 1);
    if batch.origin.is_empty() {
        out.push(POINTS_V1);
    } else {
        out.push(POINTS_V1_ORIGIN);
        let json = serde_json::to_vec(&batch.origin).expect("origin serializes");
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(&json);
    }
    out.extend_from_slice(&body);
    out
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("unknown record kind {0}")]
    Kind(u8),
    #[error("damaged origin (source checkpoint or writer)")]
    Origin,
    #[error("damaged delete predicate")]
    Delete,
    #[error("empty record")]
    Empty,
    #[error("decompression failed: {0}")]
    Lz4(String),
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// Decodes any record.
pub fn decode_record(payload: &[u8]) -> Result<Record, RecordError> {
    match payload.first() {
        Some(&DELETE) => {
            let body = &payload[1..];
            let len = body.get(..4).ok_or(RecordError::Delete)?;
            let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
            let json = body.get(4..4 + len).ok_or(RecordError::Delete)?;
            if body.len() != 4 + len {
                return Err(RecordError::Delete);
            }
            let p = serde_json::from_slice(json).map_err(|_| RecordError::Delete)?;
            Ok(Record::Delete(p))
        }
        _ => decode(payload).map(Record::Points),
    }
}

/// Decodes a points record; a delete is an error here (see
/// [`decode_record`]).
pub fn decode(payload: &[u8]) -> Result<PointBatch, RecordError> {
    let (&kind, mut rest) = payload.split_first().ok_or(RecordError::Empty)?;
    let bad = || RecordError::Origin;
    let mut prefixed = |width: usize| -> Result<&[u8], RecordError> {
        let len = rest.get(..width).ok_or_else(bad)?;
        let len = len.iter().rev().fold(0usize, |n, b| n << 8 | *b as usize);
        let json = rest.get(width..width + len).ok_or_else(bad)?;
        rest = &rest[width + len..];
        Ok(json)
    };
    let origin = match kind {
        POINTS_V1 => Origin::default(),
        POINTS_V1_CHECKPOINT => Origin {
            source: Some(serde_json::from_slice(prefixed(2)?).map_err(|_| bad())?),
            ..Origin::default()
        },
        POINTS_V1_ORIGIN => serde_json::from_slice(prefixed(4)?).map_err(|_| bad())?,
        _ => return Err(RecordError::Kind(kind)),
    };
    let body = crate::model::wire::lz4_decompress(rest).map_err(RecordError::Lz4)?;
    let mut r = WireReader::new(&body);
    let ns = r.count(16)?;
    let mut new_series = Vec::with_capacity(ns);
    for _ in 0..ns {
        new_series.push(r.series()?);
    }
    let n = r.count(24)?;
    let read =
        |r: &mut WireReader| -> Result<Vec<u64>, WireError> { (0..n).map(|_| r.u64()).collect() };
    let ids = read(&mut r)?;
    let times: Vec<i64> = read(&mut r)?.into_iter().map(|v| v as i64).collect();
    let values: Vec<f64> = read(&mut r)?.into_iter().map(f64::from_bits).collect();
    let points = RecordBatch::try_new(
        point_schema(),
        vec![
            Arc::new(UInt64Array::from(ids)),
            Arc::new(TimestampMicrosecondArray::from(times).with_timezone("UTC")),
            Arc::new(Float64Array::from(values)),
        ],
    )
    .expect("point schema matches its columns");
    Ok(PointBatch {
        points,
        new_series,
        origin,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::model::{ProducerTuple, SeriesKey};
    use crate::storage::SourceCheckpoint;

    fn point_batch(points: &[(u64, i64, f64)], series: &[(&str, &str)]) -> PointBatch {
        let points = crate::model::points_of(points);
        let new_series = series
            .iter()
            .map(|(m, h)| {
                let k = SeriesKey::new(*m, [("host".to_string(), h.to_string())].into());
                (k.id(), k)
            })
            .collect();
        PointBatch {
            points,
            new_series,
            origin: Origin::default(),
        }
    }

    proptest! {
        #[test]
        fn round_trips(points in prop::collection::vec((any::<u64>(), any::<i64>(), any::<f64>()), 0..200),
                       series in prop::collection::vec(("[a-z.]{1,12}", "[a-z0-9-]{0,8}"), 0..5)) {
            let series: Vec<(&str, &str)> = series.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            let b = point_batch(&points, &series);
            let back = decode(&encode(&b)).unwrap();
            prop_assert_eq!(&back.new_series, &b.new_series);
            // Compare bit patterns so NaNs count as equal.
            let bits = |p: &PointBatch| p.points.column(2).as_primitive::<Float64Type>().values().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&back), bits(&b));
            prop_assert_eq!(back.points.column(0), b.points.column(0));
            prop_assert_eq!(back.points.column(1), b.points.column(1));
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_record(&bytes);
            let mut delete = vec![DELETE];
            delete.extend_from_slice(&bytes);
            let _ = decode_record(&delete);
        }
    }

    #[test]
    fn origins_round_trip_and_older_checkpoint_records_still_read() {
        let mut b = point_batch(&[(1, 2, 3.0)], &[("cpu", "a")]);
        b.origin = Origin {
            source: Some(SourceCheckpoint {
                source: "http://a/v1/stream/x".into(),
                offset: "0000000000000003_0000000000000000".into(),
            }),
            producer: Some(ProducerTuple {
                id: "p-1".into(),
                epoch: 2,
                seq: 7,
            }),
            stream_seq: Some("0042".into()),
        };
        let back = decode(&encode(&b)).unwrap();
        assert_eq!(back.origin, b.origin);
        assert_eq!(back.points, b.points);

        // Kind 2, as written before origins: u16 length, checkpoint JSON.
        let plain = encode(&point_batch(&[(1, 2, 3.0)], &[]));
        assert_eq!(plain[0], POINTS_V1);
        let json = br#"{"source":"s","offset":"o"}"#;
        let mut old = vec![POINTS_V1_CHECKPOINT];
        old.extend_from_slice(&(json.len() as u16).to_le_bytes());
        old.extend_from_slice(json);
        old.extend_from_slice(&plain[1..]);
        let back = decode(&old).unwrap();
        assert_eq!(
            back.origin.source,
            Some(SourceCheckpoint {
                source: "s".into(),
                offset: "o".into()
            })
        );
        assert_eq!(back.origin.producer, None);
        assert_eq!(back.points.num_rows(), 1);
    }

    #[test]
    fn deletes_round_trip_and_cut_ones_are_errors() {
        let p = crate::model::host_before("a", 5);
        let enc = encode_delete(&p);
        assert_eq!(decode_record(&enc).unwrap(), Record::Delete(p));
        assert!(matches!(decode(&enc), Err(RecordError::Kind(DELETE))));
        for cut in 1..enc.len() {
            assert!(decode_record(&enc[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = enc.clone();
        longer.push(0);
        assert!(decode_record(&longer).is_err());
        let points = point_batch(&[(1, 2, 3.0)], &[]);
        assert_eq!(
            decode_record(&encode(&points)).unwrap(),
            Record::Points(points)
        );
    }

    #[test]
    fn unknown_kind_and_truncation_are_errors() {
        let enc = encode(&point_batch(&[(1, 2, 3.0)], &[("cpu", "a")]));
        assert!(matches!(decode(&[9, 0, 0]), Err(RecordError::Kind(9))));
        assert!(matches!(decode(&[]), Err(RecordError::Empty)));
        assert!(decode(&enc[..enc.len() - 4]).is_err());
    }
}
