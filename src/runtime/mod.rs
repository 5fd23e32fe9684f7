//! The process's runtime services that every layer is handed rather than
//! reaching for globals: the [`Clock`] (wall and monotonic time), the
//! shutdown tree ([`Tasks`]: named, cancellable background tasks drained on
//! shutdown), and the durable file-system steps (`fs`: fsync a file or a
//! directory, create directories that survive a power loss), and the
//! fault harness's hooks: named crash points (`crash`, empty outside
//! tests) and, in tests, a simulated power loss (`power_loss`).
//!
//! A foundation module: every module may use it; it uses no other module
//! of the crate. Only `clock.rs` may read the system's time (enforced by
//! `clippy.toml` and `tests/layering.rs`).

mod clock;
pub mod crash;
pub mod fs;
#[cfg(test)]
pub mod power_loss;
mod tasks;

pub use clock::Clock;
pub use crash::{CrashPoint, CrashPoints};
pub use tasks::{CancellationToken, Tasks};
