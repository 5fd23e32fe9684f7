//! StreamDB: a time-series database on Arrow.
//!
//! **Write path.** A client's Arrow batch (Flight DoPut, ADBC ingest, or JSON
//! over HTTP) is validated and normalised into points (`series_id, time,
//! value`), appended to the durable stream (the write-ahead log) and
//! acknowledged once fsynced. The log hands each durable record to the
//! write buffer, where queries see it at once; the flusher writes the buffer
//! as Arrow chunk files to object storage and commits a manifest version
//! that covers the stream up to that point, after which the log's old
//! segments are deleted.
//!
//! **Read path.** SQL arrives over Flight SQL (or HTTP) and runs on
//! DataFusion. The `metrics` table prunes chunks by time range and by the
//! series that `metric`/`tags[...]` predicates resolve to through the tag
//! index, then reads the surviving chunks plus the write buffer.
//!
//! # Layout
//! Modules follow the data flow; imports only go down this list.
//! - [`model`]: points, series ids, schemas.
//! - [`stream`]: the durable log.
//! - [`storage`]: chunk files, manifest, series catalog, object store.
//! - [`ingest`]: validation, write buffer, flusher, the [`ingest::Engine`].
//! - [`query`]: DataFusion table, functions and SQL dialect.
//! - [`flight`]: the Arrow Flight / Flight SQL service.
//! - [`server`]: one port for gRPC and HTTP, startup and shutdown.
//! - [`cli`]: the `streamdb` command line, through the client crate.
//!
//! [`telemetry`] (the server's own Prometheus metrics) sits beside this
//! list: every module may record into it, and it uses none of them.
//! [`error`] sits below the list the same way: every module's error enum
//! names its [`error::ErrorKind`], from which `flight` and `server` each
//! choose a status in one place.

pub mod cli;
pub mod error;
pub mod flight;
pub mod ingest;
pub mod model;
pub mod query;
pub mod runtime;
pub mod server;
pub mod storage;
pub mod stream;
pub mod telemetry;

/// Decoder entry points for the fuzz targets in `fuzz/`.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
