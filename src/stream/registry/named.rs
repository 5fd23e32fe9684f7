//! [`NamedStream`]: one durable stream of the Durable Streams protocol, its
//! log, its writer state, appends, closure and reads stitched across forks.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use parking_lot::Mutex;
use tokio::sync::watch;

use super::error::{accepts, StreamError};
use super::json;
use super::meta::{self, Expiry, Meta};
use super::record::{self, Body, Entry, ProducerTuple};
use crate::model::{Verdict, Writers};
use crate::runtime::Clock;
use crate::stream::{Log, LogConfig, Offset, Position};

/// One append request, as parsed from HTTP.
#[derive(Debug, Default)]
pub struct AppendRequest {
    /// `None` when the request had no `Content-Type`.
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    pub close: bool,
    pub producer: Option<ProducerTuple>,
    pub stream_seq: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Data appended (and the stream closed if asked).
    Appended { next: Offset, closed: bool },
    /// The stream was closed without appending (close-only request), or was
    /// already closed and the request was an idempotent retry.
    Closed { next: Offset },
    /// A retried producer batch: nothing appended. `last_seq` is the highest
    /// sequence accepted in the producer's epoch.
    Duplicate {
        next: Offset,
        closed: bool,
        last_seq: u64,
    },
}

/// Records read from a stream, with what a reader needs to continue.
#[derive(Debug)]
pub struct ReadBatch {
    pub bodies: Vec<Body>,
    pub next: Position,
    /// Everything written so far has been returned.
    pub up_to_date: bool,
    /// Up to date *and* closed: no more data will ever come.
    pub closed: bool,
}

struct WriterState {
    meta: Meta,
    writers: Writers,
    /// Closed by a final append in the log (close-only closes are in meta).
    closed_in_log: Option<Option<ProducerTuple>>,
}

impl WriterState {
    fn closed(&self) -> bool {
        self.meta.closed || self.closed_in_log.is_some()
    }

    fn closed_by(&self) -> Option<&ProducerTuple> {
        match &self.closed_in_log {
            Some(by) => by.as_ref(),
            None => self.meta.closed_by.as_ref(),
        }
    }
}

pub struct NamedStream {
    pub id: u64,
    pub name: String,
    dir: PathBuf,
    config: meta::StreamConfig,
    fsync: bool,
    log: Log<()>,
    source: Option<Arc<NamedStream>>,
    state: Mutex<WriterState>,
    /// Serializes validation and append, as the protocol requires per
    /// producer; holding it across the durable append keeps a duplicate's
    /// 204 from overtaking the original's fsync.
    write: tokio::sync::Mutex<()>,
    /// Bumped after every append, close and delete; live readers wait on it.
    changed: watch::Sender<u64>,
    last_access: Mutex<Instant>,
    removed: AtomicBool,
    clock: Clock,
}

pub(super) fn log_config(dir: &Path, first: Offset, fsync: bool) -> LogConfig {
    let mut c = LogConfig::new(dir);
    c.segment_bytes = 16 << 20;
    c.group_bytes = 4 << 20;
    c.fsync = fsync;
    c.initial_offset = first;
    c
}

impl NamedStream {
    /// Opens a stream directory and rebuilds its writer state from the log.
    pub(super) fn open(
        dir: PathBuf,
        meta: Meta,
        source: Option<Arc<NamedStream>>,
        fsync: bool,
        clock: Clock,
    ) -> Result<Self, StreamError> {
        let log = Log::open(log_config(&dir, meta.first_offset(), fsync), Arc::new(()))
            .map_err(|e| StreamError::Io(e.to_string()))?;
        let mut writers = Writers::default();
        let mut closed_in_log = None;
        let mut at = log.first_offset();
        loop {
            let records = log
                .read(at, 4 << 20)
                .map_err(|e| StreamError::Io(e.to_string()))?;
            let Some((last, _)) = records.last() else {
                break;
            };
            at = last.next();
            for (offset, payload) in &records {
                let e = record::decode(payload).map_err(|e| {
                    StreamError::Io(format!(
                        "{}: record {offset} does not decode: {e}; run `streamdb repair --data-dir <data dir>` to set it aside",
                        dir.display()
                    ))
                })?;
                writers.record(
                    e.producer.as_ref(),
                    e.stream_seq.as_deref(),
                    clock.now_secs(),
                );
                if e.closes {
                    closed_in_log = Some(e.producer);
                }
            }
        }
        writers.record(meta.closed_by.as_ref(), None, clock.now_secs());
        let config = meta.config.clone();
        Ok(Self {
            id: meta.id,
            name: meta.name.clone(),
            dir,
            config,
            fsync,
            log,
            source,
            state: Mutex::new(WriterState {
                meta,
                writers,
                closed_in_log,
            }),
            write: tokio::sync::Mutex::new(()),
            changed: watch::channel(0).0,
            last_access: Mutex::new(clock.instant()),
            removed: AtomicBool::new(false),
            clock,
        })
    }

    pub fn config(&self) -> &meta::StreamConfig {
        &self.config
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(super) fn source(&self) -> Option<&Arc<NamedStream>> {
        self.source.as_ref()
    }

    pub fn is_json(&self) -> bool {
        self.config.is_json()
    }

    pub fn tail(&self) -> Offset {
        self.log.next_offset()
    }

    pub fn is_closed(&self) -> bool {
        self.state.lock().closed()
    }

    pub fn is_soft_deleted(&self) -> bool {
        self.state.lock().meta.soft_deleted
    }

    /// The offset of the first record this stream (not its source) stores.
    fn first_own(&self) -> Offset {
        Offset(self.config.fork.as_ref().map_or(0, |f| f.offset))
    }

    /// A receiver that changes after the next append, close or delete.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn notify(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// Restarts a sliding TTL: every read and write counts, HEAD does not.
    pub fn touch(&self) {
        *self.last_access.lock() = self.clock.instant();
    }

    pub fn expired(&self, now_unix_ms: i64) -> bool {
        match self.config.expiry {
            None => false,
            Some(Expiry::At(at)) => now_unix_ms >= at,
            Some(Expiry::TtlSecs(ttl)) => {
                self.clock.since(*self.last_access.lock()) >= Duration::from_secs(ttl)
            }
        }
    }

    pub(super) fn mark_soft_deleted(&self) -> Result<(), StreamError> {
        let mut st = self.state.lock();
        st.meta.soft_deleted = true;
        meta::store(&self.dir, &st.meta, self.fsync).map_err(|e| StreamError::Io(e.to_string()))?;
        drop(st);
        self.notify();
        Ok(())
    }

    pub(super) fn deleted(&self) {
        self.removed.store(true, Ordering::Release);
        self.notify();
    }

    /// Deleted for good (its directory is gone); readers holding it stop.
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    /// Parses a body by the stream's content type: JSON streams split a
    /// top-level array into messages (one level), everything else is bytes.
    pub fn parse_body(&self, bytes: Vec<u8>, allow_empty_array: bool) -> Result<Body, StreamError> {
        if self.is_json() {
            json::split(&bytes, allow_empty_array)
                .map(Body::Json)
                .map_err(|e| StreamError::BadRequest(e.to_string()))
        } else {
            Ok(Body::Bytes(bytes))
        }
    }

    /// Appends (and/or closes), applying the protocol's checks in its order
    /// of precedence: closed, content type, producer, `Stream-Seq`.
    ///
    /// Runs in a task of its own: a caller that goes away (a client that
    /// disconnects mid-append) cannot cut it between the durable append and
    /// recording its producer tuple, which would let a retry in twice.
    pub async fn append(
        self: &Arc<Self>,
        req: AppendRequest,
    ) -> Result<AppendOutcome, StreamError> {
        let stream = self.clone();
        match tokio::spawn(async move { stream.append_whole(req).await }).await {
            Ok(outcome) => outcome,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(StreamError::Io("the server is shutting down".into())),
        }
    }

    async fn append_whole(&self, req: AppendRequest) -> Result<AppendOutcome, StreamError> {
        let has_body = !req.body.is_empty();
        if !has_body && !req.close {
            return Err(StreamError::BadRequest(
                "empty body: an append needs data (only a close, with Stream-Closed: true, may be empty)".into(),
            ));
        }
        let _guard = self.write.lock().await;
        let next = self.tail();
        {
            let st = self.state.lock();
            if st.closed() {
                if let Some(p) = &req.producer {
                    if let Verdict::StaleEpoch { current } = st.writers.producers.check(p) {
                        return Err(StreamError::StaleEpoch { current });
                    }
                    if st.closed_by() == Some(p) {
                        return Ok(AppendOutcome::Duplicate {
                            next,
                            closed: true,
                            last_seq: p.seq,
                        });
                    }
                }
                if !has_body {
                    return Ok(AppendOutcome::Closed { next });
                }
                return Err(StreamError::Closed { next });
            }
        }
        let body = if has_body {
            let Some(ct) = &req.content_type else {
                return Err(StreamError::BadRequest(
                    "missing Content-Type: an append with a body must say its content type".into(),
                ));
            };
            if meta::media_type(ct) != meta::media_type(&self.config.content_type) {
                return Err(StreamError::ContentTypeMismatch {
                    stream: self.config.content_type.clone(),
                    request: ct.clone(),
                });
            }
            self.parse_body(req.body, false)?
        } else {
            Body::default()
        };
        {
            let st = self.state.lock();
            let verdict = st
                .writers
                .check(req.producer.as_ref(), req.stream_seq.as_deref());
            if let Some(last_seq) =
                accepts(verdict, req.producer.as_ref(), req.stream_seq.as_deref())?
            {
                return Ok(AppendOutcome::Duplicate {
                    next,
                    closed: false,
                    last_seq,
                });
            }
        }
        if !has_body {
            // Close-only: no record (the tail offset does not move); the
            // closure and the producer tuple that made it go to meta.json.
            let mut st = self.state.lock();
            st.meta.closed = true;
            st.meta.closed_by = req.producer.clone();
            meta::store(&self.dir, &st.meta, self.fsync)
                .map_err(|e| StreamError::Io(e.to_string()))?;
            st.writers
                .record(req.producer.as_ref(), None, self.clock.now_secs());
            drop(st);
            self.notify();
            return Ok(AppendOutcome::Closed { next });
        }
        let entry = Entry {
            closes: req.close,
            producer: req.producer,
            stream_seq: req.stream_seq,
            body,
        };
        let offset = self
            .log
            .append(record::encode(&entry), ())
            .await
            .map_err(|e| StreamError::Io(e.to_string()))?;
        {
            let mut st = self.state.lock();
            st.writers.record(
                entry.producer.as_ref(),
                entry.stream_seq.as_deref(),
                self.clock.now_secs(),
            );
            if entry.closes {
                st.closed_in_log = Some(entry.producer.clone());
            }
        }
        self.notify();
        Ok(AppendOutcome::Appended {
            next: offset.next(),
            closed: req.close,
        })
    }

    /// Appends an already-parsed body (stream creation: a fork's inherited
    /// prefix and the initial body). No checks: the stream is not yet visible.
    pub(super) async fn append_initial(&self, body: Body, closes: bool) -> Result<(), StreamError> {
        let entry = Entry {
            closes,
            body,
            ..Entry::default()
        };
        self.log
            .append(record::encode(&entry), ())
            .await
            .map_err(|e| StreamError::Io(e.to_string()))?;
        if closes {
            self.state.lock().closed_in_log = Some(None);
        }
        Ok(())
    }

    /// The body of the record at `offset`, read through the fork chain.
    pub(super) fn record_at(&self, offset: Offset) -> Result<Option<Body>, StreamError> {
        let batch = self.read_records(offset, Offset(offset.0 + 1), 1)?;
        Ok(batch.into_iter().next().map(|(_, e)| e.body))
    }

    /// Reads from `from`, at most about `max_bytes`, stitching inherited
    /// records from the source chain below each fork's offset.
    pub fn read(&self, from: Offset, max_bytes: usize) -> Result<ReadBatch, StreamError> {
        // Closure first: once closed the tail is final, so a close racing
        // this read can never be reported before data it appended.
        let closed_now = self.is_closed();
        let tail = self.tail();
        if from > tail {
            return Err(StreamError::BadRequest(format!(
                "offset {from} is beyond the end of the stream ({tail})"
            )));
        }
        let records = self.read_records(from, tail, max_bytes)?;
        let next = records.last().map_or(from, |(o, _)| o.next());
        let up_to_date = next >= tail;
        Ok(ReadBatch {
            bodies: records.into_iter().map(|(_, e)| e.body).collect(),
            next: next.into(),
            up_to_date,
            closed: up_to_date && closed_now,
        })
    }

    fn read_records(
        &self,
        from: Offset,
        limit: Offset,
        max_bytes: usize,
    ) -> Result<Vec<(Offset, Entry)>, StreamError> {
        let mut out = Vec::new();
        let mut pos = from;
        let mut bytes = 0usize;
        while pos < limit && bytes < max_bytes {
            // Find the stream in the chain that stores `pos`, and how far
            // its records are visible from here.
            let mut holder = self;
            let mut upper = limit;
            while pos < holder.first_own() {
                upper = upper.min(holder.first_own());
                holder = holder.source.as_deref().ok_or_else(|| {
                    StreamError::Io(format!("stream {} lost its fork source", holder.name))
                })?;
            }
            let records = holder
                .log
                .read(pos, max_bytes - bytes)
                .map_err(|e| StreamError::Io(e.to_string()))?;
            if records.is_empty() {
                break;
            }
            for (offset, payload) in records {
                if offset >= upper {
                    break;
                }
                bytes += payload.len();
                let entry = record::decode(&payload).map_err(|e| StreamError::Io(e.to_string()))?;
                out.push((offset, entry));
                pos = offset.next();
            }
        }
        Ok(out)
    }
}
