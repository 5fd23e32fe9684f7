//! The durable stream: an append-only, segmented, checksummed log with
//! group-commit fsync. It is StreamDB's write-ahead log (the `metrics`
//! stream) and the storage of every other durable stream.
//!
//! The log knows nothing about points: it stores opaque payloads and tells a
//! [`DurableSink`] about each record, in offset order, once it is on disk.
//! The ingest layer implements the sink; the log never depends on it.
//!
//! # Layout
//! - `offset`: the [`Offset`] and [`Position`] newtypes and their text form.
//! - `segment`: the on-disk format of one segment file (header, framing,
//!   recovery scan).
//! - `log`: [`Log`], the writer thread, reads and truncation.
//! - [`repair`]: `streamdb repair` for one log (damage set aside, lost
//!   offsets marked, never reused).
//! - [`client`]: an HTTP reader of remote Durable Streams (for `--source`).
//! - [`registry`]: named streams (the Durable Streams protocol's streams
//!   besides `metrics`): metadata, idempotent producers, forks, expiry.
//!
//! May depend on `model` only.

pub mod client;
mod log;
mod offset;
pub mod registry;
pub mod repair;
pub(crate) mod segment;

pub use log::{DurableSink, Log, LogConfig, LogError, LogStats, Retention, Submitted};
pub use offset::{Offset, OffsetParseError, Position};
