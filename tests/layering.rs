//! The layering of `src/` (DESIGN.md §8), checked on every test run:
//!
//! - imports go down the layers, never up: [`FOUNDATION`] modules import no
//!   other top-level module, and each of [`LAYERS`] imports only from the
//!   layers below it (modules that share a layer, `stream` and `storage`,
//!   import neither each other);
//! - no import cycle between files, not even between a `mod.rs` and its
//!   children;
//! - only `runtime/clock.rs` reads the system's clock.
//!
//! The checker is in `layering_check/`, with tests on fake trees that show
//! each rule can fail.

mod layering_check;

use std::path::{Path, PathBuf};

use layering_check::{check, time_reads, Cycle, Report, Rules};

/// Top-level modules at the bottom of the layering: every module may use
/// them, and they use no other top-level module.
const FOUNDATION: &[&str] = &["telemetry", "error", "runtime"];

/// The layers above the foundation, bottom first. A module may import from
/// the layers below its own only.
const LAYERS: &[&[&str]] = &[
    &["model"],
    &["stream", "storage"],
    &["ingest"],
    &["query"],
    &["flight"],
    &["server"],
    &["cli"],
];

/// Files outside the layering: the crate roots and test-only support.
const EXEMPT: &[&str] = &["lib.rs", "main.rs", "fuzzing.rs"];

const RULES: Rules = Rules {
    foundation: FOUNDATION,
    layers: LAYERS,
    exempt: EXEMPT,
};

#[test]
fn imports_go_down_the_layers() {
    let report = real_tree();
    println!("{}", report.summary());
    assert!(
        report.upward.is_empty(),
        "imports that go up the layers (DESIGN.md §8):\n{}",
        report.upward.join("\n")
    );
}

#[test]
fn no_import_cycles_between_files() {
    let report = real_tree();
    let cycles: Vec<String> = report.cycles.iter().map(Cycle::to_string).collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

/// Time comes from `runtime::Clock` (so tests can pause it); only its file
/// reads the system's clock. `clippy.toml` says the same to `cargo clippy`.
#[test]
fn only_the_clock_reads_the_time() {
    let src: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = time_reads(&src, &["runtime/clock.rs"]).expect("read src/");
    assert!(
        found.is_empty(),
        "read the time through runtime::Clock instead:\n{}",
        found.join("\n")
    );
}

/// The checker reads what it should: a tree it can parse, with imports
/// between files and the facade re-exports resolved.
#[test]
fn the_checker_sees_the_real_tree() {
    let report = real_tree();
    assert!(report.files > 50, "{}", report.summary());
    assert!(report.imports > 200, "{}", report.summary());
}

fn real_tree() -> Report {
    let src: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    check(&src, &RULES).expect("read src/")
}
