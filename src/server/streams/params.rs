//! Strict parsing of the protocol's headers and query parameters. Anything
//! malformed is a 400 whose message names the header or parameter.

use axum::http::HeaderMap;

use crate::stream::registry::{Expiry, ProducerTuple};
use crate::stream::Position;

pub const STREAM_NEXT_OFFSET: &str = "stream-next-offset";
pub const STREAM_UP_TO_DATE: &str = "stream-up-to-date";
pub const STREAM_CLOSED: &str = "stream-closed";
pub const STREAM_CURSOR: &str = "stream-cursor";
pub const STREAM_SEQ: &str = "stream-seq";
pub const STREAM_TTL: &str = "stream-ttl";
pub const STREAM_EXPIRES_AT: &str = "stream-expires-at";
pub const STREAM_FORKED_FROM: &str = "stream-forked-from";
pub const STREAM_FORK_OFFSET: &str = "stream-fork-offset";
pub const STREAM_FORK_SUB_OFFSET: &str = "stream-fork-sub-offset";
pub const STREAM_SSE_DATA_ENCODING: &str = "stream-sse-data-encoding";
pub const PRODUCER_ID: &str = "producer-id";
pub const PRODUCER_EPOCH: &str = "producer-epoch";
pub const PRODUCER_SEQ: &str = "producer-seq";
pub const PRODUCER_EXPECTED_SEQ: &str = "producer-expected-seq";
pub const PRODUCER_RECEIVED_SEQ: &str = "producer-received-seq";

/// Largest integer the protocol allows in producer headers (JavaScript's
/// safe integer range).
const MAX_SAFE: u64 = (1 << 53) - 1;

pub type ParamResult<T> = Result<T, String>;

pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> ParamResult<Option<&'a str>> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| format!("header {name} is not visible ASCII")),
    }
}

/// `Stream-Closed` counts only when it is exactly `true` (any case); other
/// values are ignored, as the protocol says.
pub fn closed_flag(headers: &HeaderMap) -> bool {
    headers
        .get(STREAM_CLOSED)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// A non-negative decimal integer without sign, leading zeros, fraction or
/// exponent (`0`, `3600`; not `+1`, `05`, `1.5`, `1e3`).
pub fn plain_integer(name: &str, s: &str, max: u64) -> ParamResult<u64> {
    let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let canonical = s == "0" || !s.starts_with('0');
    let bad = || {
        format!("{name} must be a non-negative integer without sign or leading zeros (got {s:?})")
    };
    if !digits || !canonical {
        return Err(bad());
    }
    let v: u64 = s.parse().map_err(|_| bad())?;
    if v > max {
        return Err(format!("{name} {v} is larger than {max}"));
    }
    Ok(v)
}

/// `Stream-TTL` / `Stream-Expires-At` (both at once is a 400).
pub fn expiry(headers: &HeaderMap) -> ParamResult<Option<Expiry>> {
    let ttl = header(headers, STREAM_TTL)?;
    let at = header(headers, STREAM_EXPIRES_AT)?;
    match (ttl, at) {
        (Some(_), Some(_)) => Err("Stream-TTL and Stream-Expires-At cannot both be set".into()),
        (Some(t), None) => Ok(Some(Expiry::TtlSecs(plain_integer(
            "Stream-TTL",
            t.trim(),
            u64::MAX,
        )?))),
        (None, Some(a)) => chrono::DateTime::parse_from_rfc3339(a.trim())
            .map(|t| Some(Expiry::At(t.timestamp_millis())))
            .map_err(|e| format!("Stream-Expires-At {a:?} is not an RFC 3339 timestamp: {e}")),
        (None, None) => Ok(None),
    }
}

/// Longest `Producer-Id`: the id is kept for every producer (in memory and
/// in each manifest), so it stays small.
pub const MAX_PRODUCER_ID_BYTES: usize = 256;

/// The three producer headers, all or none.
pub fn producer(headers: &HeaderMap) -> ParamResult<Option<ProducerTuple>> {
    let id = header(headers, PRODUCER_ID)?;
    let epoch = header(headers, PRODUCER_EPOCH)?;
    let seq = header(headers, PRODUCER_SEQ)?;
    match (id, epoch, seq) {
        (None, None, None) => Ok(None),
        (Some(id), Some(epoch), Some(seq)) => {
            if id.is_empty() {
                return Err("Producer-Id must not be empty".into());
            }
            if id.len() > MAX_PRODUCER_ID_BYTES {
                return Err(format!(
                    "Producer-Id is {} bytes, over the limit of {MAX_PRODUCER_ID_BYTES}",
                    id.len()
                ));
            }
            Ok(Some(ProducerTuple {
                id: id.to_string(),
                epoch: plain_integer("Producer-Epoch", epoch, MAX_SAFE)?,
                seq: plain_integer("Producer-Seq", seq, MAX_SAFE)?,
            }))
        }
        _ => Err("Producer-Id, Producer-Epoch and Producer-Seq must be sent together".into()),
    }
}

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// `-1` or no `offset`: the beginning.
    Beginning,
    /// `now`: the current tail.
    Now,
    At(Position),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Live {
    No,
    LongPoll,
    Sse,
}

#[derive(Debug)]
pub struct ReadParams {
    pub start: Start,
    pub live: Live,
    pub cursor: Option<String>,
}

/// Parses the query string strictly: one `offset` at most, never empty;
/// live modes need an explicit offset; unknown parameters are ignored.
pub fn read_params(pairs: &[(String, String)]) -> ParamResult<ReadParams> {
    let mut offset = None;
    let mut live = Live::No;
    let mut cursor = None;
    for (k, v) in pairs {
        match k.as_str() {
            "offset" => {
                if offset.is_some() {
                    return Err("offset may be given only once".into());
                }
                offset = Some(match v.as_str() {
                    "" => {
                        return Err(
                            "offset is empty (use -1 for the beginning, now for the tail)".into(),
                        )
                    }
                    "-1" => Start::Beginning,
                    "now" => Start::Now,
                    other => Start::At(other.parse::<Position>().map_err(|e| e.to_string())?),
                });
            }
            "live" => {
                live = match v.as_str() {
                    "long-poll" => Live::LongPoll,
                    "sse" => Live::Sse,
                    "" | "false" => Live::No,
                    other => return Err(format!("live must be long-poll or sse (got {other:?})")),
                }
            }
            "cursor" => cursor = Some(v.clone()),
            _ => {}
        }
    }
    if live != Live::No && offset.is_none() {
        return Err("live reads need an offset (-1 for the beginning, now for the tail)".into());
    }
    Ok(ReadParams {
        start: offset.unwrap_or(Start::Beginning),
        live,
        cursor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_strict() {
        for ok in ["0", "1", "3600"] {
            assert!(plain_integer("x", ok, u64::MAX).is_ok(), "{ok}");
        }
        for bad in ["", "-1", "+1", "05", "1.5", "1e3", "abc", "1abc", " 1"] {
            assert!(plain_integer("x", bad, u64::MAX).is_err(), "{bad}");
        }
        assert!(plain_integer("x", "9007199254740992", MAX_SAFE).is_err());
    }

    fn q(pairs: &[(&str, &str)]) -> ParamResult<ReadParams> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        read_params(&owned)
    }

    #[test]
    fn offsets_are_strict() {
        assert_eq!(q(&[]).unwrap().start, Start::Beginning);
        assert_eq!(
            q(&[("offset", "now"), ("foo", "bar")]).unwrap().start,
            Start::Now
        );
        for bad in ["", "0,1", "0 1", "../x", "a/b", "1\n"] {
            assert!(q(&[("offset", bad)]).is_err(), "{bad:?}");
        }
        assert!(q(&[("offset", "-1"), ("offset", "-1")]).is_err());
        assert!(q(&[("live", "sse")]).is_err());
        assert!(q(&[("offset", "-1"), ("live", "poll")]).is_err());
    }
}

#[cfg(test)]
mod producer_id_tests {
    use super::*;

    /// Every id length around the limit: up to it accepted, past it
    /// refused with a message giving both lengths.
    #[test]
    fn a_producer_id_past_256_bytes_is_refused() {
        for len in [1, 2, 100, 255, 256, 257, 300, 4096] {
            let mut h = HeaderMap::new();
            h.insert(PRODUCER_ID, "p".repeat(len).parse().unwrap());
            h.insert(PRODUCER_EPOCH, "0".parse().unwrap());
            h.insert(PRODUCER_SEQ, "0".parse().unwrap());
            match producer(&h) {
                Ok(Some(t)) => assert!(len <= MAX_PRODUCER_ID_BYTES && t.id.len() == len),
                Ok(None) => panic!("headers were sent"),
                Err(e) => {
                    assert!(len > MAX_PRODUCER_ID_BYTES, "{len}: {e}");
                    assert!(e.contains(&len.to_string()) && e.contains("256"), "{e}");
                }
            }
        }
    }
}
