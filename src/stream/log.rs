//! [`Log`]: appends with group commit, recovery, reads and truncation.
//!
//! One writer thread owns the active segment. Appenders send it their
//! payloads over a channel; it takes everything that is waiting (up to a
//! byte budget), writes it with one `write`, makes it durable with one
//! `fdatasync`, hands each record to the [`DurableSink`] in offset order and
//! only then answers the appenders. Concurrent writers therefore share one
//! fsync, and a record is visible downstream before its writer hears "ok".
//!
//! Readers never block the writer: they look up a record's file position
//! under a short lock and read with `pread` from their own handle.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};

use super::offset::Offset;
use super::segment::{self, Format, Scanned, SegmentError};
use crate::error::{ErrorKind, HasKind};
use crate::runtime::fs::{create_dir_all_synced, sync_data};
use crate::runtime::{Clock, CrashPoint, CrashPoints};

/// Receives every record once it is durable, in offset order, on the log's
/// writer thread. Implementations must be quick (no I/O).
pub trait DurableSink<A>: Send + Sync + 'static {
    fn on_durable(&self, offset: Offset, attachment: A);
}

impl<A> DurableSink<A> for () {
    fn on_durable(&self, _: Offset, _: A) {}
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub dir: PathBuf,
    /// A segment is sealed once it holds this many bytes.
    pub segment_bytes: u64,
    /// `false` skips fsync (tests and benchmarks of the non-durable cost only).
    pub fsync: bool,
    /// Most bytes written under one fsync.
    pub group_bytes: usize,
    /// The first offset of a log created from nothing (a new node taking
    /// over storage whose manifest already covers earlier offsets).
    pub initial_offset: Offset,
    /// Times the fsyncs (telemetry).
    pub clock: Clock,
    /// Where the fault harness may crash the log (nothing outside tests).
    pub crash: CrashPoints,
}

impl LogConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            segment_bytes: 64 << 20,
            fsync: true,
            group_bytes: 16 << 20,
            initial_offset: Offset::ZERO,
            clock: Clock::system(),
            crash: CrashPoints::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Segment(#[from] SegmentError),
    #[error("stream log {dir}: {source}")]
    Io { dir: PathBuf, source: io::Error },
    #[error("stream log segment {path} is damaged at bytes {start}..{end}: {detail}; refusing to start rather than lose or renumber acknowledged records. Stop the server and run `streamdb repair --data-dir <data dir>`: it moves the damaged bytes aside, keeps every readable record at its offset and prints the offsets lost")]
    Damaged {
        path: PathBuf,
        start: u64,
        end: u64,
        detail: String,
    },
    #[error("stream log {dir}: segments are not contiguous at {id} (expected base {expected}, found {found})")]
    Gap {
        dir: PathBuf,
        id: u64,
        expected: u64,
        found: u64,
    },
    #[error("offset {requested} is before the oldest retained offset {first}")]
    Truncated { requested: Offset, first: Offset },
    #[error("offset {requested} is beyond the end of the stream ({next})")]
    BeyondEnd { requested: Offset, next: Offset },
    #[error("stream log is unavailable after an earlier write failure: {0}")]
    Failed(String),
    #[error("stream log is closed")]
    Closed,
}

impl HasKind for LogError {
    fn kind(&self) -> ErrorKind {
        match self {
            LogError::Segment(e) => e.kind(),
            LogError::Io { .. } | LogError::Failed(_) => ErrorKind::Internal,
            LogError::Damaged { .. } | LogError::Gap { .. } => ErrorKind::Corrupt,
            LogError::Truncated { .. } => ErrorKind::Gone,
            LogError::BeyondEnd { .. } => ErrorKind::InvalidInput,
            // The log closes when the server stops.
            LogError::Closed => ErrorKind::Unavailable,
        }
    }
}

/// A record handed to the log's writer: [`Submitted::durable`] waits
/// until it is durable and applied.
pub struct Submitted {
    answer: oneshot::Receiver<Result<Offset, LogError>>,
    clock: Clock,
}

impl Submitted {
    pub async fn durable(self) -> Result<Offset, LogError> {
        self.clock
            .answer_from_thread(self.answer)
            .await
            .ok_or(LogError::Closed)?
    }
}

/// Sizes and offsets, for status pages.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LogStats {
    pub first_offset: Offset,
    pub next_offset: Offset,
    pub segments: usize,
    pub bytes: u64,
}

struct SegmentInfo {
    id: u64,
    base_seq: u64,
    format: Format,
    positions: Vec<u64>,
    len: u64,
    reader: Arc<File>,
}

struct State {
    segments: VecDeque<SegmentInfo>,
    failed: Option<String>,
}

impl State {
    fn next_seq(&self) -> u64 {
        let s = self.segments.back().expect("a log always has a segment");
        s.base_seq + s.positions.len() as u64
    }
}

struct Append<A> {
    payload: Vec<u8>,
    attachment: A,
    reply: oneshot::Sender<Result<Offset, LogError>>,
}

/// What the writer thread is asked to do.
enum Msg<A> {
    Append(Append<A>),
    /// Seal the active segment (if it holds records) and start the next.
    Seal(oneshot::Sender<Result<(), LogError>>),
}

/// An active segment smaller than this is not sealed early: sealing tiny
/// segments would only multiply files.
const MIN_SEAL_BYTES: u64 = 1 << 20;

/// A durable, segmented log. Cheap to share behind an `Arc`.
pub struct Log<A: Send + 'static> {
    dir: PathBuf,
    state: Arc<Mutex<State>>,
    tx: mpsc::Sender<Msg<A>>,
    next: watch::Receiver<Offset>,
    clock: Clock,
    crash: CrashPoints,
}

impl<A: Send + 'static> Log<A> {
    /// Opens (or creates) the log in `config.dir`, cutting off a torn tail,
    /// and starts its writer thread.
    pub fn open(config: LogConfig, sink: Arc<dyn DurableSink<A>>) -> Result<Self, LogError> {
        let dir = config.dir.clone();
        create_dir_all_synced(&dir).map_err(|source| LogError::Io {
            dir: dir.clone(),
            source,
        })?;
        let (segments, active) = recover(&dir, config.initial_offset)?;
        let state = Arc::new(Mutex::new(State {
            segments,
            failed: None,
        }));
        let next_seq = state.lock().next_seq();
        let (next_tx, next_rx) = watch::channel(Offset(next_seq));
        let (tx, rx) = mpsc::channel(1024);
        let clock = config.clock.clone();
        let crash = config.crash.clone();
        let writer = Writer {
            config,
            state: state.clone(),
            file: active,
            sink,
            next: next_tx,
        };
        std::thread::Builder::new()
            .name("stream-log-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|source| LogError::Io {
                dir: dir.clone(),
                source,
            })?;
        Ok(Self {
            dir,
            state,
            tx,
            next: next_rx,
            clock,
            crash,
        })
    }

    /// Appends one record and waits until it is durable. Returns its offset.
    pub async fn append(&self, payload: Vec<u8>, attachment: A) -> Result<Offset, LogError> {
        self.submit(payload, attachment).await?.durable().await
    }

    /// Hands one record to the writer; once this returns it will be
    /// written (or the log fail), whatever the caller does next. Records
    /// are written in the order their submits returned.
    pub async fn submit(&self, payload: Vec<u8>, attachment: A) -> Result<Submitted, LogError> {
        if payload.len() > segment::MAX_RECORD as usize {
            return Err(LogError::Failed(format!(
                "record of {} bytes exceeds the limit",
                payload.len()
            )));
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Append(Append {
                payload,
                attachment,
                reply,
            }))
            .await
            .map_err(|_| LogError::Closed)?;
        Ok(Submitted {
            answer: rx,
            clock: self.clock.clone(),
        })
    }

    /// The offset the next record will get; changes after every commit.
    pub fn watch_next(&self) -> watch::Receiver<Offset> {
        self.next.clone()
    }

    pub fn next_offset(&self) -> Offset {
        Offset(self.state.lock().next_seq())
    }

    pub fn first_offset(&self) -> Offset {
        Offset(self.state.lock().segments.front().map_or(0, |s| s.base_seq))
    }

    pub fn stats(&self) -> LogStats {
        let st = self.state.lock();
        LogStats {
            first_offset: Offset(st.segments.front().map_or(0, |s| s.base_seq)),
            next_offset: Offset(st.next_seq()),
            segments: st.segments.len(),
            bytes: st.segments.iter().map(|s| s.len).sum(),
        }
    }

    /// Reads committed records starting at `from`, stopping after
    /// `max_bytes` of payload (at least one record is returned if any).
    pub fn read(&self, from: Offset, max_bytes: usize) -> Result<Vec<(Offset, Vec<u8>)>, LogError> {
        let mut out = Vec::new();
        let mut seq = from.0;
        let mut bytes = 0usize;
        loop {
            let Some((file, pos, format)) = self.locate(seq, seq == from.0)? else {
                break;
            };
            let record =
                segment::read_record(&file, pos, format).map_err(|source| LogError::Io {
                    dir: self.dir.clone(),
                    source,
                })?;
            seq += 1;
            // A lost marker left by `streamdb repair`: that offset has no
            // record any more (repair said so), readers skip it.
            let Some(payload) = record else { continue };
            bytes += payload.len();
            out.push((Offset(seq - 1), payload));
            if bytes >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    /// Finds record `seq`: `None` at the end of the stream.
    fn locate(&self, seq: u64, first: bool) -> Result<Option<(Arc<File>, u64, Format)>, LogError> {
        let st = self.state.lock();
        let next = st.next_seq();
        let oldest = st.segments.front().map_or(0, |s| s.base_seq);
        if seq < oldest {
            return Err(LogError::Truncated {
                requested: Offset(seq),
                first: Offset(oldest),
            });
        }
        if seq >= next {
            if first && seq > next {
                return Err(LogError::BeyondEnd {
                    requested: Offset(seq),
                    next: Offset(next),
                });
            }
            return Ok(None);
        }
        let idx = st.segments.partition_point(|s| s.base_seq <= seq) - 1;
        let s = &st.segments[idx];
        Ok(Some((
            s.reader.clone(),
            s.positions[(seq - s.base_seq) as usize],
            s.format,
        )))
    }

    /// Seals the active segment if every record in it lies before `before`
    /// and it is big enough to matter, so that [`Log::remove_before`] can
    /// delete it: otherwise a quiet log would keep up to a whole segment of
    /// records the manifest already covers.
    pub async fn seal_covered(&self, before: Offset) -> Result<(), LogError> {
        let covered = {
            let st = self.state.lock();
            let active = st.segments.back().expect("active");
            !active.positions.is_empty()
                && st.next_seq() <= before.0
                && active.len >= MIN_SEAL_BYTES
        };
        if !covered {
            return Ok(());
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Seal(reply))
            .await
            .map_err(|_| LogError::Closed)?;
        self.clock
            .answer_from_thread(rx)
            .await
            .ok_or(LogError::Closed)?
    }

    /// Deletes whole sealed segments whose records all lie before `before`
    /// (the manifest covers them) and that `keep` no longer holds: older
    /// than `keep.age` (by when they were sealed) or beyond `keep.bytes` of
    /// sealed segments, oldest first. Returns segments removed.
    pub fn remove_before(&self, before: Offset, keep: Retention) -> Result<usize, LogError> {
        let mut removed = Vec::new();
        let now = self.clock.now_micros();
        {
            let mut st = self.state.lock();
            let sealed = st.segments.len().saturating_sub(1);
            let mut sealed_bytes: u64 = st.segments.iter().take(sealed).map(|s| s.len).sum();
            while st.segments.len() > 1 && st.segments[1].base_seq <= before.0 {
                let front = &st.segments[0];
                // A sealed segment is never written again: its mtime is when
                // it was sealed. Unknown age counts as old.
                let aged = front
                    .reader
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| age_at(now, t))
                    .is_none_or(|age| age >= keep.age);
                if !aged && sealed_bytes <= keep.bytes {
                    break;
                }
                sealed_bytes -= front.len;
                removed.push(st.segments.pop_front().expect("len > 1").id);
            }
        }
        for (i, id) in removed.iter().enumerate() {
            if i > 0 {
                self.crash.reached(CrashPoint::MidLogTrim);
            }
            let path = self.dir.join(segment::file_name(*id));
            fs::remove_file(&path).map_err(|source| LogError::Io {
                dir: self.dir.clone(),
                source,
            })?;
        }
        Ok(removed.len())
    }
}

/// How much of a log's history stays readable after the manifest covers it,
/// so readers of the stream (Durable Streams clients, `--source` followers)
/// can still catch up from older offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Sealed segments younger than this are kept...
    pub age: std::time::Duration,
    /// ...unless the sealed segments add up to more than this.
    pub bytes: u64,
}

impl Retention {
    /// Delete covered segments at once: the log is a write-ahead log only.
    pub const NONE: Retention = Retention {
        age: std::time::Duration::ZERO,
        bytes: 0,
    };
}

/// Scans every segment, cuts a torn tail off the newest one and returns the
/// segment index plus the active segment opened for appending. Damage
/// anywhere else (bytes that frame nothing with valid frames after them,
/// or the end of a sealed segment) is refused: cutting there would drop
/// acknowledged records and hand their offsets out again.
fn recover(dir: &Path, initial: Offset) -> Result<(VecDeque<SegmentInfo>, File), LogError> {
    let io_err = |source| LogError::Io {
        dir: dir.to_path_buf(),
        source,
    };
    let mut ids = segment::list(dir).map_err(io_err)?;
    drop_torn_header(dir, &mut ids)?;
    if ids.is_empty() {
        let (file, format) = segment::create(dir, 1, initial.0)?;
        let info = segment_info(dir, 1, initial.0, format, Vec::new(), segment::HEADER_LEN)?;
        return Ok((VecDeque::from([info]), file));
    }

    let mut segments = VecDeque::new();
    let mut expected: Option<u64> = None;
    let mut scans = Vec::with_capacity(ids.len());
    for &id in &ids {
        scans.push((id, segment::scan(&dir.join(segment::file_name(id)))?));
    }
    for (i, (id, scanned)) in scans.iter().enumerate() {
        let path = dir.join(segment::file_name(*id));
        let next_base = scans.get(i + 1).map(|(_, s)| s.base_seq);
        check_damage(&path, scanned, next_base)?;
        if scanned.trailing > 0 {
            tracing::warn!(path = %path.display(), at = scanned.valid_len, bytes = scanned.trailing, "cutting off torn tail of the stream log");
        }
        if let Some(exp) = expected {
            if scanned.base_seq != exp {
                return Err(LogError::Gap {
                    dir: dir.into(),
                    id: *id,
                    expected: exp,
                    found: scanned.base_seq,
                });
            }
        }
        expected = Some(scanned.next_seq());
        segments.push_back(segment_info(
            dir,
            *id,
            scanned.base_seq,
            scanned.format,
            scanned.positions(),
            scanned.valid_len,
        )?);
    }
    let active = segments.back().expect("non-empty");
    let path = dir.join(segment::file_name(active.id));
    let file = segment::open_for_append(&path, active.len)?;
    if active.format.version == segment::VERSION {
        return Ok((segments, file));
    }
    // Written by an older release: appends go to a new segment in the
    // current format.
    let (id, next) = (active.id + 1, expected.expect("non-empty"));
    let (file, format) = segment::create(dir, id, next)?;
    segments.push_back(segment_info(
        dir,
        id,
        next,
        format,
        Vec::new(),
        segment::HEADER_LEN,
    )?);
    Ok((segments, file))
}

/// A newest segment whose header never reached the disk holds nothing that
/// was acknowledged (records follow a synced header): drop it.
fn drop_torn_header(dir: &Path, ids: &mut Vec<u64>) -> Result<(), LogError> {
    let io_err = |source| LogError::Io {
        dir: dir.to_path_buf(),
        source,
    };
    let Some(&last) = ids.last() else {
        return Ok(());
    };
    let path = dir.join(segment::file_name(last));
    let len = fs::metadata(&path).map_err(io_err)?.len();
    let torn = len < segment::HEADER_LEN
        && matches!(segment::scan(&path), Err(SegmentError::BadHeader { .. }));
    if torn {
        tracing::warn!(path = %path.display(), "removing segment with a torn header");
        fs::remove_file(&path).map_err(io_err)?;
        ids.pop();
    }
    Ok(())
}

/// Refuses a segment holding damage that is not a torn tail of the newest
/// segment (`next_base` is the base of the segment after it, if any).
fn check_damage(path: &Path, s: &Scanned, next_base: Option<u64>) -> Result<(), LogError> {
    let damaged = |start, end, detail| LogError::Damaged {
        path: path.to_path_buf(),
        start,
        end,
        detail,
    };
    if let Some(d) = s.damage().next() {
        let more = s.damage().count() - 1;
        let mut detail = if s.format.version == segment::VERSION_1 {
            format!("a valid record follows, but this version 1 segment's frames carry no offsets, so the records from offset {} on cannot be placed", d.lost.start)
        } else {
            format!(
                "they held offsets {} and valid records follow (offsets {} to {}), so this is not a torn tail",
                range_text(&d.lost),
                d.lost.end,
                s.next_seq().saturating_sub(1)
            )
        };
        if more > 0 {
            detail.push_str(&format!(" ({more} more damaged range(s) after it)"));
        }
        return Err(damaged(d.start, d.end, detail));
    }
    if let (Some(next), true) = (next_base, s.trailing > 0) {
        let lost = s.next_seq()..next;
        let detail = format!(
            "it is the end of a sealed segment, so offsets {} were in it and later segments follow",
            range_text(&lost)
        );
        return Err(damaged(s.valid_len, s.valid_len + s.trailing, detail));
    }
    Ok(())
}

/// `5`, `5 to 9`, or `none` for offsets `range`.
pub(crate) fn range_text(range: &std::ops::Range<u64>) -> String {
    match range.end.saturating_sub(range.start) {
        0 => "none".into(),
        1 => range.start.to_string(),
        _ => format!("{} to {}", range.start, range.end - 1),
    }
}

fn segment_info(
    dir: &Path,
    id: u64,
    base_seq: u64,
    format: Format,
    positions: Vec<u64>,
    len: u64,
) -> Result<SegmentInfo, LogError> {
    let path = dir.join(segment::file_name(id));
    let reader = File::open(&path).map_err(|source| LogError::Io {
        dir: dir.into(),
        source,
    })?;
    Ok(SegmentInfo {
        id,
        base_seq,
        format,
        positions,
        len,
        reader: Arc::new(reader),
    })
}

struct Writer<A> {
    config: LogConfig,
    state: Arc<Mutex<State>>,
    file: File,
    sink: Arc<dyn DurableSink<A>>,
    next: watch::Sender<Offset>,
}

impl<A: Send + 'static> Writer<A> {
    fn run(mut self, mut rx: mpsc::Receiver<Msg<A>>) {
        let mut buf = Vec::with_capacity(self.config.group_bytes);
        let mut pending = None;
        loop {
            let msg = match pending.take() {
                Some(m) => m,
                None => match rx.blocking_recv() {
                    Some(m) => m,
                    None => return,
                },
            };
            let first = match msg {
                Msg::Append(a) => a,
                Msg::Seal(reply) => {
                    let _ = reply.send(self.seal());
                    continue;
                }
            };
            let mut group = vec![first];
            let mut bytes = group[0].payload.len();
            while bytes < self.config.group_bytes {
                match rx.try_recv() {
                    Ok(Msg::Append(next)) => {
                        bytes += next.payload.len();
                        group.push(next);
                    }
                    Ok(other) => {
                        pending = Some(other);
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.commit(group, &mut buf);
        }
    }

    /// Seals the active segment now, if it holds any record.
    fn seal(&mut self) -> Result<(), LogError> {
        if let Some(why) = self.state.lock().failed.clone() {
            return Err(LogError::Failed(why));
        }
        let empty = self
            .state
            .lock()
            .segments
            .back()
            .expect("active")
            .positions
            .is_empty();
        if empty {
            return Ok(());
        }
        self.roll()
    }

    /// Writes and syncs one group, then publishes it.
    fn commit(&mut self, group: Vec<Append<A>>, buf: &mut Vec<u8>) {
        if let Some(why) = self.state.lock().failed.clone() {
            for a in group {
                let _ = a.reply.send(Err(LogError::Failed(why.clone())));
            }
            return;
        }
        let result = self.write_group(&group, buf);
        match result {
            Ok(first_seq) => {
                self.config.crash.reached(CrashPoint::AfterLogFsync);
                let mut seq = first_seq;
                for a in group {
                    self.sink.on_durable(Offset(seq), a.attachment);
                    let _ = a.reply.send(Ok(Offset(seq)));
                    seq += 1;
                }
                self.next.send_replace(Offset(seq));
            }
            Err(e) => {
                // After a failed write or fsync the file's contents are
                // unknown (fsync errors are not retryable): refuse further
                // appends until a restart recovers from what is on disk.
                let why = e.to_string();
                tracing::error!(error = %why, "stream log write failed; appends disabled until restart");
                self.state.lock().failed = Some(why.clone());
                for a in group {
                    let _ = a.reply.send(Err(LogError::Failed(why.clone())));
                }
            }
        }
    }

    fn write_group(&mut self, group: &[Append<A>], buf: &mut Vec<u8>) -> Result<u64, LogError> {
        let dir = self.config.dir.clone();
        let io_err = |source| LogError::Io {
            dir: dir.clone(),
            source,
        };
        self.maybe_roll()?;
        buf.clear();
        let (start_len, format, first) = {
            let st = self.state.lock();
            let active = st.segments.back().expect("active");
            (active.len, active.format, st.next_seq())
        };
        let mut positions = Vec::with_capacity(group.len());
        for (seq, a) in (first..).zip(group) {
            positions.push(start_len + buf.len() as u64);
            segment::encode_record(buf, format, seq, &a.payload);
        }
        self.file.write_all(buf).map_err(io_err)?;
        let m = crate::telemetry::metrics();
        m.log_bytes.inc_by(buf.len() as u64);
        if self.config.fsync {
            let started = self.config.clock.instant();
            sync_data(&self.file, &self.active_path()).map_err(io_err)?;
            m.observe_fsync(self.config.clock.since(started));
        }
        let mut st = self.state.lock();
        let active = st.segments.back_mut().expect("active");
        let first_seq = active.base_seq + active.positions.len() as u64;
        active.positions.extend(positions);
        active.len += buf.len() as u64;
        Ok(first_seq)
    }

    /// The active segment's file.
    fn active_path(&self) -> PathBuf {
        let id = self.state.lock().segments.back().expect("active").id;
        self.config.dir.join(segment::file_name(id))
    }

    /// Seals the active segment and starts the next once it is full.
    fn maybe_roll(&mut self) -> Result<(), LogError> {
        let (id, len, next_seq) = {
            let st = self.state.lock();
            let a = st.segments.back().expect("active");
            (a.id, a.len, st.next_seq())
        };
        if len < self.config.segment_bytes {
            return Ok(());
        }
        self.roll_to(id + 1, next_seq)
    }

    /// Seals the active segment and starts the next one.
    fn roll(&mut self) -> Result<(), LogError> {
        let (id, next_seq) = {
            let st = self.state.lock();
            (st.segments.back().expect("active").id, st.next_seq())
        };
        self.roll_to(id + 1, next_seq)
    }

    fn roll_to(&mut self, id: u64, next_seq: u64) -> Result<(), LogError> {
        let (file, format) = segment::create(&self.config.dir, id, next_seq)?;
        let info = segment_info(
            &self.config.dir,
            id,
            next_seq,
            format,
            Vec::new(),
            segment::HEADER_LEN,
        )?;
        self.file = file;
        self.state.lock().segments.push_back(info);
        Ok(())
    }
}

/// How old a file modified at `modified` is at wall time `now` (Unix
/// microseconds, from the log's clock); `None` for a time in the future or
/// before 1970.
fn age_at(now: i64, modified: std::time::SystemTime) -> Option<std::time::Duration> {
    let at = modified.duration_since(std::time::UNIX_EPOCH).ok()?;
    let age = now.checked_sub(i64::try_from(at.as_micros()).ok()?)?;
    u64::try_from(age)
        .ok()
        .map(std::time::Duration::from_micros)
}

#[cfg(test)]
mod tests;
