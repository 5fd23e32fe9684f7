//! What the read paths (catch-up, long-poll, SSE) read from: a named stream
//! of the registry, or the `metrics` stream, which is the engine's log
//! rendered as JSON point messages; and how what they read becomes a
//! response body.

use std::sync::Arc;

use tokio::sync::watch;

use crate::ingest::{Engine, ViewError};
use crate::stream::registry::{render_json, Body, NamedStream, ReadBatch, StreamError};
use crate::stream::{LogError, Offset, Position};

pub const METRICS: &str = "metrics";
pub const METRICS_CONTENT_TYPE: &str = "application/json";

#[derive(Clone)]
pub enum Source {
    Named(Arc<NamedStream>),
    Metrics(Arc<Engine>),
}

/// Wakes a live reader after the source changes.
pub enum Waiter {
    Named(watch::Receiver<u64>),
    Metrics(watch::Receiver<Offset>),
}

impl Waiter {
    /// Waits for the next change; `false` once the source is gone.
    pub async fn changed(&mut self) -> bool {
        match self {
            Waiter::Named(rx) => rx.changed().await.is_ok(),
            Waiter::Metrics(rx) => rx.changed().await.is_ok(),
        }
    }
}

impl Source {
    pub fn content_type(&self) -> String {
        match self {
            Source::Named(s) => s.config().content_type.clone(),
            Source::Metrics(_) => METRICS_CONTENT_TYPE.into(),
        }
    }

    pub fn is_json(&self) -> bool {
        match self {
            Source::Named(s) => s.is_json(),
            Source::Metrics(_) => true,
        }
    }

    /// Text streams (`text/*`, JSON) go into SSE as text; others as base64.
    pub fn is_text(&self) -> bool {
        self.is_json()
            || crate::stream::registry::media_type(&self.content_type()).starts_with("text/")
    }

    /// Distinguishes streams in ETags: a stream re-created under the same
    /// name gets a new id, so old cached responses never match it.
    pub fn etag_id(&self) -> String {
        match self {
            Source::Named(s) => format!("{:x}", s.id),
            Source::Metrics(_) => METRICS.into(),
        }
    }

    pub fn tail(&self) -> Offset {
        match self {
            Source::Named(s) => s.tail(),
            Source::Metrics(e) => e.log().next_offset(),
        }
    }

    pub fn is_closed(&self) -> bool {
        match self {
            Source::Named(s) => s.is_closed(),
            Source::Metrics(_) => false,
        }
    }

    /// Where `offset=-1` starts: the oldest data still kept.
    pub fn beginning(&self) -> Offset {
        match self {
            Source::Named(_) => Offset::ZERO,
            Source::Metrics(e) => e.log().first_offset(),
        }
    }

    /// Deleted (or soft-deleted) since this handle was taken.
    pub fn removed(&self) -> Option<StreamError> {
        match self {
            Source::Named(s) if s.is_removed() => Some(StreamError::NotFound),
            Source::Named(s) if s.is_soft_deleted() => Some(StreamError::Gone),
            _ => None,
        }
    }

    /// Subscribes to changes; take it *before* reading so no change between
    /// the read and the wait is missed.
    pub fn waiter(&self) -> Waiter {
        match self {
            Source::Named(s) => Waiter::Named(s.subscribe()),
            Source::Metrics(e) => {
                let mut rx = e.log().watch_next();
                rx.borrow_and_update();
                Waiter::Metrics(rx)
            }
        }
    }

    /// A response body: JSON streams as one array of every message, others as
    /// the concatenated bytes.
    pub fn render(&self, bodies: &[Body]) -> Vec<u8> {
        if self.is_json() {
            render_json(bodies.iter().flat_map(|b| match b {
                Body::Json(m) => m.iter().map(Vec::as_slice).collect::<Vec<_>>(),
                Body::Bytes(b) => vec![b.as_slice()],
            }))
        } else {
            let mut out = Vec::new();
            for b in bodies {
                if let Body::Bytes(b) = b {
                    out.extend_from_slice(b);
                }
            }
            out
        }
    }

    /// Reads about `max_bytes` from `from`. Named streams hand out record
    /// boundaries only; the metrics stream may stop inside a record.
    pub fn read(&self, from: Position, max_bytes: usize) -> Result<ReadBatch, StreamError> {
        match self {
            Source::Named(_) if !from.is_boundary() => Err(StreamError::BadRequest(format!(
                "invalid offset {from}: this stream's offsets end in 16 zeros (as returned in Stream-Next-Offset)"
            ))),
            Source::Named(s) => s.read(from.record, max_bytes),
            Source::Metrics(e) => read_metrics(e, from, max_bytes),
        }
    }
}

fn read_metrics(
    engine: &Engine,
    from: Position,
    max_bytes: usize,
) -> Result<ReadBatch, StreamError> {
    let page = engine.read_json(from, max_bytes).map_err(|e| match e {
        ViewError::Log(LogError::Truncated { first, .. }) => StreamError::Truncated { first },
        ViewError::Log(LogError::BeyondEnd { requested, next }) => StreamError::BadRequest(
            format!("offset {requested} is beyond the end of the stream ({next})"),
        ),
        e @ ViewError::NotMinted { .. } => StreamError::BadRequest(e.to_string()),
        other => StreamError::Io(other.to_string()),
    })?;
    let bodies = if page.messages.is_empty() {
        Vec::new()
    } else {
        vec![Body::Json(page.messages)]
    };
    // The tail after the read: a record appended meanwhile and read in
    // part puts the tail past `next`, so a partial page is never "up to
    // date".
    let tail = Position::from(engine.log().next_offset());
    Ok(ReadBatch {
        bodies,
        next: page.next,
        up_to_date: page.next >= tail,
        closed: false,
    })
}
