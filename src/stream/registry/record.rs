//! The payload of one record in a named stream's log: the appended body plus
//! the writer state that must change atomically with it (producer tuple,
//! `Stream-Seq`, closure).
//!
//! Keeping that state in the same record as the data is what makes an
//! idempotent producer exactly-once across a crash: after recovery the
//! producer table is rebuilt from the very records whose presence it
//! describes, so a retried batch is either present *and* known, or neither.
//!
//! ```text
//! u8   version (1)
//! u8   flags: 1 = closes the stream, 2 = producer, 4 = stream-seq, 8 = JSON
//! [producer]   u16 id length, id, u64 epoch, u64 seq
//! [stream-seq] u16 length, bytes
//! body         JSON: u32 count, then count × (u32 length, message bytes)
//!              otherwise: the remaining bytes
//! ```

const VERSION: u8 = 1;
const CLOSES: u8 = 1;
const PRODUCER: u8 = 2;
const STREAM_SEQ: u8 = 4;
const JSON: u8 = 8;

pub use crate::model::ProducerTuple;

/// What one append carries. For JSON streams `messages` holds each message's
/// text; for every other content type `bytes` holds the body.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Entry {
    pub closes: bool,
    pub producer: Option<ProducerTuple>,
    pub stream_seq: Option<String>,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Bytes(Vec<u8>),
    Json(Vec<Vec<u8>>),
}

impl Default for Body {
    fn default() -> Self {
        Body::Bytes(Vec::new())
    }
}

impl Body {
    /// Bytes for binary streams, messages for JSON ones: the unit that a
    /// fork's sub-offset counts.
    pub fn units(&self) -> usize {
        match self {
            Body::Bytes(b) => b.len(),
            Body::Json(m) => m.len(),
        }
    }

    /// The first `n` units (see [`Body::units`]).
    pub fn prefix(&self, n: usize) -> Body {
        match self {
            Body::Bytes(b) => Body::Bytes(b[..n.min(b.len())].to_vec()),
            Body::Json(m) => Body::Json(m[..n.min(m.len())].to_vec()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.units() == 0
    }
}

#[derive(Debug, thiserror::Error)]
#[error("damaged stream record: {0}")]
pub struct RecordError(&'static str);

pub fn encode(entry: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + body_len(&entry.body));
    let mut flags = 0;
    if entry.closes {
        flags |= CLOSES;
    }
    if entry.producer.is_some() {
        flags |= PRODUCER;
    }
    if entry.stream_seq.is_some() {
        flags |= STREAM_SEQ;
    }
    if matches!(entry.body, Body::Json(_)) {
        flags |= JSON;
    }
    out.push(VERSION);
    out.push(flags);
    if let Some(p) = &entry.producer {
        put_short(&mut out, p.id.as_bytes());
        out.extend_from_slice(&p.epoch.to_le_bytes());
        out.extend_from_slice(&p.seq.to_le_bytes());
    }
    if let Some(s) = &entry.stream_seq {
        put_short(&mut out, s.as_bytes());
    }
    match &entry.body {
        Body::Bytes(b) => out.extend_from_slice(b),
        Body::Json(messages) => {
            out.extend_from_slice(&(messages.len() as u32).to_le_bytes());
            for m in messages {
                out.extend_from_slice(&(m.len() as u32).to_le_bytes());
                out.extend_from_slice(m);
            }
        }
    }
    out
}

fn body_len(body: &Body) -> usize {
    match body {
        Body::Bytes(b) => b.len(),
        Body::Json(m) => m.iter().map(|m| m.len() + 4).sum::<usize>() + 4,
    }
}

fn put_short(out: &mut Vec<u8>, bytes: &[u8]) {
    // Ids and Stream-Seq values come from HTTP headers, which the server
    // caps far below 64 KiB; truncation here would be a bug upstream.
    let len = u16::try_from(bytes.len()).expect("header value under 64 KiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

pub fn decode(payload: &[u8]) -> Result<Entry, RecordError> {
    let mut r = Reader(payload);
    if r.u8()? != VERSION {
        return Err(RecordError("unknown version"));
    }
    let flags = r.u8()?;
    let producer = if flags & PRODUCER != 0 {
        let id = String::from_utf8(r.short()?.to_vec()).map_err(|_| RecordError("producer id"))?;
        Some(ProducerTuple {
            id,
            epoch: r.u64()?,
            seq: r.u64()?,
        })
    } else {
        None
    };
    let stream_seq = if flags & STREAM_SEQ != 0 {
        Some(String::from_utf8(r.short()?.to_vec()).map_err(|_| RecordError("stream-seq"))?)
    } else {
        None
    };
    let body = if flags & JSON != 0 {
        let n = r.u32()? as usize;
        let mut messages = Vec::with_capacity(n.min(1 << 16));
        for _ in 0..n {
            let len = r.u32()? as usize;
            messages.push(r.take(len)?.to_vec());
        }
        Body::Json(messages)
    } else {
        Body::Bytes(r.0.to_vec())
    };
    Ok(Entry {
        closes: flags & CLOSES != 0,
        producer,
        stream_seq,
        body,
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, RecordError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn short(&mut self) -> Result<&'a [u8], RecordError> {
        let n = u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")) as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_shape() {
        let entries = [
            Entry::default(),
            Entry {
                closes: true,
                producer: Some(ProducerTuple {
                    id: "p-1".into(),
                    epoch: 3,
                    seq: u64::MAX >> 11,
                }),
                stream_seq: Some("0009".into()),
                body: Body::Bytes(vec![0, 10, 13, 255]),
            },
            Entry {
                body: Body::Json(vec![b"{\"a\":1}".to_vec(), b"[1,2]".to_vec(), Vec::new()]),
                ..Entry::default()
            },
        ];
        for e in entries {
            assert_eq!(decode(&encode(&e)).unwrap(), e);
        }
    }

    #[test]
    fn truncated_records_are_errors_not_panics() {
        let full = encode(&Entry {
            producer: Some(ProducerTuple {
                id: "x".into(),
                epoch: 1,
                seq: 2,
            }),
            body: Body::Json(vec![b"1".to_vec()]),
            ..Entry::default()
        });
        for cut in 0..full.len() {
            assert!(decode(&full[..cut]).is_err(), "cut at {cut}");
        }
    }
}
