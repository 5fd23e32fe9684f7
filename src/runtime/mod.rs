//! The process's runtime services that every layer is handed rather than
//! reaching for globals: the [`Clock`] (wall and monotonic time), the
//! shutdown tree ([`Tasks`]: named, cancellable background tasks drained on
//! shutdown), and the durable file-system steps (`fs`: fsync a file or a
//! directory, create directories that survive a power loss).
//!
//! A foundation module: every module may use it; it uses no other module
//! of the crate. Only `clock.rs` may read the system's time (enforced by
//! `clippy.toml` and `tests/layering.rs`).

mod clock;
pub mod fs;
mod tasks;

pub use clock::Clock;
pub use tasks::{CancellationToken, Tasks};
