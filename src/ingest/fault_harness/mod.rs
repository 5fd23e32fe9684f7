//! The fault harness (issue 18 item 14): seeded runs that put the storage
//! through faults on purpose, in the manner of SlateDB's failpoints and
//! FoundationDB's simulation. How to run it, reproduce a seed and read
//! its summary: docs/FAULTS.md.
//!
//! - `plan`: the one fault a seed picks (a crash at a named point of
//!   `runtime::crash`, perhaps with a power loss of `runtime::power_loss`;
//!   a power loss at a random moment; a `storage::faults` store fault; a
//!   bit flip in a log segment);
//! - `workload`: the node and its seeded writes, flushes, maintenance and
//!   clock jumps;
//! - `ledger`: what was written and acknowledged, and the final check;
//! - `run`: one run, from the seed to its outcome;
//! - `summary`: many runs, counted by fault kind and failure kind.

mod ledger;
mod plan;
mod run;
mod summary;
mod workload;

#[cfg(test)]
mod tests;
