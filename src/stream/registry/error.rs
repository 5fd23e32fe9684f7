//! Why a stream operation was refused ([`StreamError`]), and what a
//! producer check's verdict means for an append.
//!
//! A leaf of `registry`: may depend on `record`, `model`, `error` and
//! `stream`'s offsets only.

use super::record::ProducerTuple;
use crate::error::{ErrorKind, HasKind};
use crate::model::Verdict;
use crate::stream::Offset;

/// Why a stream operation was refused. Its [`ErrorKind`] gives the status
/// code (§5); every message names the problem.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("stream not found")]
    NotFound,
    #[error("stream was deleted (its data is kept only for the forks that read it)")]
    Gone,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("stream is closed: no further appends are accepted")]
    Closed { next: Offset },
    #[error("content type {request:?} does not match the stream's {stream:?}")]
    ContentTypeMismatch { stream: String, request: String },
    #[error("Stream-Seq {received:?} is not greater than the last one, {last:?}")]
    SeqRegression { last: String, received: String },
    #[error("Producer-Epoch is stale: the producer has moved on to epoch {current}")]
    StaleEpoch { current: u64 },
    #[error("Producer-Seq gap: expected {expected}, received {received}")]
    SequenceGap { expected: u64, received: u64 },
    #[error("offset is before the oldest data kept ({first}); older data was flushed to chunks (query it with SQL)")]
    Truncated { first: Offset },
    #[error("storage error: {0}")]
    Io(String),
    #[error("too many streams: {limit} exist (--max-streams); delete some or raise the limit")]
    TooMany { limit: usize },
}

impl HasKind for StreamError {
    fn kind(&self) -> ErrorKind {
        match self {
            StreamError::NotFound => ErrorKind::NotFound,
            StreamError::Gone | StreamError::Truncated { .. } => ErrorKind::Gone,
            StreamError::BadRequest(_) => ErrorKind::InvalidInput,
            StreamError::Conflict(_)
            | StreamError::Closed { .. }
            | StreamError::ContentTypeMismatch { .. }
            | StreamError::SeqRegression { .. }
            | StreamError::SequenceGap { .. } => ErrorKind::Conflict,
            StreamError::StaleEpoch { .. } => ErrorKind::Fenced,
            StreamError::Io(_) => ErrorKind::Internal,
            StreamError::TooMany { .. } => ErrorKind::Busy,
        }
    }
}

/// What a writer check means for an append: `Ok(None)` to append,
/// `Ok(Some(last_seq))` for a producer's retry (answer success, append
/// nothing), or the refusal.
pub fn accepts(
    verdict: Verdict,
    producer: Option<&ProducerTuple>,
    stream_seq: Option<&str>,
) -> Result<Option<u64>, StreamError> {
    match verdict {
        Verdict::Accept => Ok(None),
        Verdict::Duplicate { last_seq } => Ok(Some(last_seq)),
        Verdict::StaleEpoch { current } => Err(StreamError::StaleEpoch { current }),
        Verdict::EpochNeedsSeqZero => {
            let (epoch, seq) = producer.map_or((0, 0), |p| (p.epoch, p.seq));
            Err(StreamError::BadRequest(format!(
                "Producer-Epoch {epoch} is new, so Producer-Seq must start at 0 (got {seq})"
            )))
        }
        Verdict::Gap { expected, received } => Err(StreamError::SequenceGap { expected, received }),
        Verdict::SeqRegression { last } => Err(StreamError::SeqRegression {
            last,
            received: stream_seq.unwrap_or_default().to_string(),
        }),
    }
}
