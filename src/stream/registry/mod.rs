//! Named durable streams (the Durable Streams protocol's streams other than
//! `metrics`): creation with idempotent re-creation, forks, soft deletion
//! with cascading clean-up, and expiry.
//!
//! # On disk
//! `<dir>/<id:016x>/` holds `meta.json` (configuration and lifecycle flags,
//! see [`meta`]) and the stream's own segmented [`crate::stream::Log`]. Ids
//! are never reused, so a stream deleted and created again under the same
//! name starts from an empty directory and its ETags cannot collide with
//! the old one's. A stream is built in `<id>.tmp/` and renamed into place
//! once its initial content is durable; `*.tmp` and `*.deleted` directories
//! found at startup are leftovers of interrupted creates and deletes.
//!
//! # Layout
//! - `error`: [`StreamError`], and what a writer check means for an append.
//! - `meta`: configuration, persisted flags, content-type comparison.
//! - `record`: the record format (body plus writer state).
//! - `json`: JSON mode's validation and one-level flattening.
//! - `named`: [`NamedStream`], appends and stitched reads.

mod error;
pub(crate) mod json;
mod meta;
mod named;
mod next_id;
pub(crate) mod record;
pub mod repair;

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

pub use error::{accepts, StreamError};
pub use json::render as render_json;
pub use meta::{media_type, Expiry, ForkOrigin, StreamConfig};
pub use named::{AppendOutcome, AppendRequest, NamedStream, ReadBatch};
pub use record::{Body, ProducerTuple};

use crate::runtime::fs::create_dir_all_synced;
use crate::runtime::Clock;
use crate::stream::Offset;

#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub dir: PathBuf,
    pub fsync: bool,
    /// TTLs and expiry times are read on it.
    pub clock: Clock,
    /// Streams that may exist at once (each holds an open log and its
    /// writer thread).
    pub max_streams: usize,
}

/// What `PUT` asks for.
#[derive(Debug, Default)]
pub struct CreateRequest {
    pub name: String,
    pub content_type: Option<String>,
    pub expiry: Option<Expiry>,
    pub closed: bool,
    pub fork: Option<ForkRequest>,
    pub body: Vec<u8>,
}

#[derive(Debug)]
pub struct ForkRequest {
    pub source: String,
    /// `None`: the source's tail at creation.
    pub offset: Option<Offset>,
    pub sub_offset: u64,
}

pub enum Created {
    New(Arc<NamedStream>),
    /// The stream already existed with the same configuration.
    Existing(Arc<NamedStream>),
}

/// The content type a stream gets when `PUT` names none.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

pub struct Registry {
    config: RegistryConfig,
    /// Every stream with data on disk, soft-deleted ones included, by name.
    streams: Mutex<HashMap<String, Arc<NamedStream>>>,
    next_id: AtomicU64,
    /// Serializes creates and deletes (rare) so that name checks, fork
    /// reference counts and clean-up cascades see a stable set.
    admin: tokio::sync::Mutex<()>,
}

impl Registry {
    /// Loads every stream under `config.dir`.
    pub fn open(config: RegistryConfig) -> Result<Arc<Self>, StreamError> {
        let io = |e: std::io::Error| StreamError::Io(format!("{}: {e}", config.dir.display()));
        create_dir_all_synced(&config.dir).map_err(io)?;
        let mut metas = Vec::new();
        for entry in fs::read_dir(&config.dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") || name.ends_with(".deleted") {
                if entry.file_type().map_err(io)?.is_dir() {
                    fs::remove_dir_all(entry.path()).map_err(io)?;
                } else {
                    fs::remove_file(entry.path()).map_err(io)?;
                }
                continue;
            }
            if u64::from_str_radix(&name, 16).is_err() {
                continue;
            }
            let m = meta::load(&entry.path()).map_err(|e| {
                StreamError::Io(format!(
                    "named stream {}: {}: {e}; run `streamdb repair --data-dir <data dir>` to set it aside",
                    entry.path().display(),
                    meta::FILE
                ))
            })?;
            metas.push((entry.path(), m));
        }
        // A fork always has a larger id than its source: open sources first.
        metas.sort_by_key(|(_, m)| m.id);
        let mut by_id: HashMap<u64, Arc<NamedStream>> = HashMap::new();
        let mut by_name = HashMap::new();
        let persisted = next_id::load(&config.dir).map_err(StreamError::Io)?;
        let next_id = persisted
            .unwrap_or(0)
            .max(next_id::after_entries(&config.dir).map_err(io)?);
        for (dir, m) in metas {
            let source = match &m.config.fork {
                Some(f) => Some(by_id.get(&f.source_id).cloned().ok_or_else(|| {
                    StreamError::Io(format!(
                        "stream {:?} is a fork of a stream that is missing; run `streamdb repair --data-dir <data dir>` to set it aside",
                        m.name
                    ))
                })?),
                None => None,
            };
            let s = Arc::new(NamedStream::open(
                dir,
                m,
                source,
                config.fsync,
                config.clock.clone(),
            )?);
            by_id.insert(s.id, s.clone());
            by_name.insert(s.name.clone(), s);
        }
        Ok(Arc::new(Self {
            config,
            streams: Mutex::new(by_name),
            next_id: AtomicU64::new(next_id),
            admin: tokio::sync::Mutex::new(()),
        }))
    }

    pub fn len(&self) -> usize {
        self.streams.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A stream by name that is not soft-deleted (expiry not checked).
    fn lookup(&self, name: &str) -> Result<Arc<NamedStream>, StreamError> {
        let s = self
            .streams
            .lock()
            .get(name)
            .cloned()
            .ok_or(StreamError::NotFound)?;
        if s.is_soft_deleted() {
            return Err(StreamError::Gone);
        }
        Ok(s)
    }

    /// A live stream by name; expired streams are removed on the way.
    pub async fn get(&self, name: &str) -> Result<Arc<NamedStream>, StreamError> {
        let s = self.lookup(name)?;
        if s.expired(self.now_ms()) {
            let _admin = self.admin.lock().await;
            self.remove(&s)?;
            return Err(StreamError::NotFound);
        }
        Ok(s)
    }

    pub async fn create(&self, req: CreateRequest) -> Result<Created, StreamError> {
        let _admin = self.admin.lock().await;
        if let Some(existing) = self.streams.lock().get(&req.name).cloned() {
            if existing.is_soft_deleted() {
                return Err(StreamError::Conflict(
                    "a deleted stream with this name is still read by its forks; the name cannot be reused yet".into(),
                ));
            }
            if existing.expired(self.now_ms()) {
                self.remove(&existing)?;
            } else {
                return self.recreate(existing, &req);
            }
        }
        if self.len() >= self.config.max_streams {
            crate::telemetry::metrics().limited("streams");
            return Err(StreamError::TooMany {
                limit: self.config.max_streams,
            });
        }
        let (source, fork) = match &req.fork {
            Some(f) => {
                let (src, origin) = self.resolve_fork(f)?;
                (Some(src), Some(origin))
            }
            None => (None, None),
        };
        let content_type = match (&req.content_type, &source) {
            (Some(ct), Some(src)) if media_type(ct) != media_type(&src.config().content_type) => {
                return Err(StreamError::Conflict(format!(
                    "content type {ct:?} differs from the source stream's {:?}",
                    src.config().content_type
                )))
            }
            (Some(ct), _) => ct.clone(),
            (None, Some(src)) => src.config().content_type.clone(),
            (None, None) => DEFAULT_CONTENT_TYPE.to_string(),
        };
        let expiry = match (&req.expiry, &source) {
            (Some(e), _) => Some(*e),
            // A fork without its own expiry inherits the source's.
            (None, Some(src)) => src.config().expiry,
            (None, None) => None,
        };
        let config = StreamConfig {
            content_type,
            expiry,
            fork,
        };
        let inherited = match (&config.fork, &source) {
            (Some(f), Some(src)) if f.sub_offset > 0 => {
                let body = src.record_at(Offset(f.offset))?.ok_or_else(|| {
                    StreamError::BadRequest(
                        "Stream-Fork-Sub-Offset names data past the end of the source".into(),
                    )
                })?;
                if f.sub_offset as usize > body.units() {
                    return Err(StreamError::BadRequest(format!(
                        "Stream-Fork-Sub-Offset {} is past the end of the record at the fork offset ({} {})",
                        f.sub_offset,
                        body.units(),
                        if config.is_json() { "messages" } else { "bytes" }
                    )));
                }
                Some(body.prefix(f.sub_offset as usize))
            }
            _ => None,
        };
        let initial = if req.body.is_empty() {
            Body::default()
        } else if config.is_json() {
            Body::Json(
                json::split(&req.body, true).map_err(|e| StreamError::BadRequest(e.to_string()))?,
            )
        } else {
            Body::Bytes(req.body)
        };

        // Creates are serialized (`admin`): persist the counter past this
        // id before anything is named after it.
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        next_id::store(&self.config.dir, id + 1)
            .map_err(|e| StreamError::Io(format!("{}: {e}", self.config.dir.display())))?;
        let mut m = meta::Meta {
            id,
            name: req.name.clone(),
            config,
            closed: false,
            closed_by: None,
            soft_deleted: false,
        };
        let final_dir = self.config.dir.join(format!("{id:016x}"));
        let tmp = self.config.dir.join(format!("{id:016x}.tmp"));
        let io = |e: std::io::Error| StreamError::Io(format!("{}: {e}", tmp.display()));
        fs::create_dir_all(&tmp).map_err(io)?;
        // Build the initial content in the temporary directory, then make
        // the whole stream appear at once.
        {
            let building = NamedStream::open(
                tmp.clone(),
                m.clone(),
                source.clone(),
                self.config.fsync,
                self.config.clock.clone(),
            )?;
            if let Some(prefix) = inherited {
                building.append_initial(prefix, false).await?;
            }
            if !initial.is_empty() {
                building.append_initial(initial, req.closed).await?;
            } else if req.closed {
                m.closed = true;
            }
        }
        meta::store(&tmp, &m, self.config.fsync).map_err(io)?;
        fs::rename(&tmp, &final_dir).map_err(io)?;
        if self.config.fsync {
            fs::File::open(&self.config.dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        let stream = Arc::new(NamedStream::open(
            final_dir,
            m,
            source,
            self.config.fsync,
            self.config.clock.clone(),
        )?);
        self.streams.lock().insert(req.name, stream.clone());
        Ok(Created::New(stream))
    }

    /// `PUT` on an existing stream: 200 when nothing differs, else 409.
    fn recreate(
        &self,
        existing: Arc<NamedStream>,
        req: &CreateRequest,
    ) -> Result<Created, StreamError> {
        let c = existing.config();
        let mut differs = Vec::new();
        let wanted_ct = req.content_type.as_deref().unwrap_or(match &req.fork {
            Some(_) => &c.content_type,
            None => DEFAULT_CONTENT_TYPE,
        });
        if media_type(wanted_ct) != media_type(&c.content_type) {
            differs.push("content type");
        }
        let wanted_expiry = req
            .expiry
            .or(if req.fork.is_some() { c.expiry } else { None });
        if wanted_expiry != c.expiry {
            differs.push("expiry");
        }
        if req.closed != existing.is_closed() {
            differs.push("closure status");
        }
        match (&req.fork, &c.fork) {
            (None, None) => {}
            (Some(f), Some(o)) => {
                let same_offset = f.offset.is_none_or(|off| off.0 == o.offset);
                if f.source != o.source_name || !same_offset || f.sub_offset != o.sub_offset {
                    differs.push("fork origin");
                }
            }
            _ => differs.push("fork origin"),
        }
        if differs.is_empty() {
            Ok(Created::Existing(existing))
        } else {
            Err(StreamError::Conflict(format!(
                "stream already exists with a different {}",
                differs.join(", ")
            )))
        }
    }

    fn resolve_fork(&self, f: &ForkRequest) -> Result<(Arc<NamedStream>, ForkOrigin), StreamError> {
        let src = self
            .streams
            .lock()
            .get(&f.source)
            .cloned()
            .ok_or(StreamError::NotFound)?;
        if src.is_soft_deleted() {
            return Err(StreamError::Conflict("the fork source was deleted".into()));
        }
        if src.expired(self.now_ms()) {
            return Err(StreamError::NotFound);
        }
        let tail = src.tail();
        let offset = f.offset.unwrap_or(tail);
        if offset > tail {
            return Err(StreamError::BadRequest(format!(
                "Stream-Fork-Offset {offset} is beyond the source's tail {tail}"
            )));
        }
        if f.sub_offset > 0 && offset == tail {
            return Err(StreamError::BadRequest(
                "Stream-Fork-Sub-Offset needs data after Stream-Fork-Offset, and the source has none".into(),
            ));
        }
        let origin = ForkOrigin {
            source_name: f.source.clone(),
            source_id: src.id,
            offset: offset.0,
            sub_offset: f.sub_offset,
        };
        Ok((src, origin))
    }

    /// `DELETE`: soft when forks still read the stream, else a full removal
    /// that cascades to sources left without readers.
    pub async fn delete(&self, name: &str) -> Result<(), StreamError> {
        let _admin = self.admin.lock().await;
        let s = self.lookup(name)?;
        if s.expired(self.now_ms()) {
            self.remove(&s)?;
            return Err(StreamError::NotFound);
        }
        self.remove(&s)
    }

    /// Removes `s` (soft when forked), then sources that only it kept alive.
    /// Callers hold `admin`; a stream another caller removed meanwhile (the
    /// sweeper and a reader can both find it expired) is left alone.
    fn remove(&self, s: &Arc<NamedStream>) -> Result<(), StreamError> {
        if s.is_removed() {
            return Ok(());
        }
        if self.fork_count(s.id) > 0 {
            return s.mark_soft_deleted();
        }
        let mut current = Some(s.clone());
        while let Some(s) = current.take() {
            self.streams.lock().remove(&s.name);
            let dead = s.dir().with_extension("deleted");
            let io = |e: std::io::Error| StreamError::Io(format!("{}: {e}", s.dir().display()));
            fs::rename(s.dir(), &dead).map_err(io)?;
            fs::remove_dir_all(&dead).map_err(io)?;
            s.deleted();
            if let Some(src) = s.source() {
                if src.is_soft_deleted() && self.fork_count(src.id) == 0 {
                    current = Some(src.clone());
                }
            }
        }
        Ok(())
    }

    fn fork_count(&self, id: u64) -> usize {
        self.streams
            .lock()
            .values()
            .filter(|s| s.config().fork.as_ref().is_some_and(|f| f.source_id == id))
            .count()
    }

    fn now_ms(&self) -> i64 {
        self.config.clock.now_millis()
    }

    /// Removes every expired stream; called periodically.
    pub async fn sweep_expired(&self) -> Result<usize, StreamError> {
        let now = self.now_ms();
        let expired: Vec<_> = self
            .streams
            .lock()
            .values()
            .filter(|s| !s.is_soft_deleted() && s.expired(now))
            .cloned()
            .collect();
        if expired.is_empty() {
            return Ok(0);
        }
        let _admin = self.admin.lock().await;
        for s in &expired {
            self.remove(s)?;
        }
        Ok(expired.len())
    }
}

#[cfg(test)]
mod tests;
