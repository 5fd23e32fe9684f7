//! The process's runtime services that every layer is handed rather than
//! reaching for globals: the [`Clock`] (wall and monotonic time) and the
//! shutdown tree ([`Tasks`]: named, cancellable background tasks drained on
//! shutdown).
//!
//! A foundation module: every module may use it; it uses no other module
//! of the crate. Only `clock.rs` may read the system's time (enforced by
//! `clippy.toml` and `tests/layering.rs`).

mod clock;
mod tasks;

pub use clock::Clock;
pub use tasks::{CancellationToken, Tasks};
