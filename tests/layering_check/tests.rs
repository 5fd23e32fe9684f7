//! The checker on small fake trees: each rule can fail, and a clean tree
//! passes.

use std::fs;

use super::parse::{tokenize, use_tree};
use super::{check, time_reads, Report, Rules};

/// The layering of DESIGN.md §8, as `tests/layering.rs` has it.
const RULES: Rules = Rules {
    foundation: &["telemetry", "error", "runtime"],
    layers: &[
        &["model"],
        &["stream", "storage"],
        &["ingest"],
        &["query"],
        &["flight"],
        &["server"],
        &["cli"],
    ],
    exempt: &["lib.rs", "main.rs", "fuzzing.rs"],
};

/// A temp dir holding `src/` with `files` (path, contents).
fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, code) in files {
        let p = dir.path().join("src").join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, code).unwrap();
    }
    dir
}

fn report(files: &[(&str, &str)]) -> Report {
    let dir = tree(files);
    check(&dir.path().join("src"), &RULES).unwrap()
}

const LIB: (&str, &str) = (
    "lib.rs",
    "pub mod ingest; pub mod model; pub mod query; pub mod storage; pub mod telemetry;",
);
const INGEST: [(&str, &str); 2] = [
    ("ingest/mod.rs", "mod engine;\npub use engine::Engine;\n"),
    (
        "ingest/engine.rs",
        "use crate::storage::Chunk;\npub struct Engine(Chunk);\n",
    ),
];

#[test]
fn an_upward_import_is_reported_with_the_defining_file() {
    let r = report(&[
        LIB,
        INGEST[0],
        INGEST[1],
        ("storage/mod.rs", "mod chunk;\npub use chunk::Chunk;\n"),
        (
            "storage/chunk.rs",
            "use crate::ingest::Engine;\npub struct Chunk;\nfn f(_: &Engine) {}\n",
        ),
    ]);
    assert_eq!(
        r.upward,
        [
            "src/storage/chunk.rs imports ingest::Engine (defined in src/ingest/engine.rs): \
          storage may not depend on ingest"
        ]
    );
}

#[test]
fn a_foundation_module_imports_nothing_and_siblings_not_each_other() {
    let r = report(&[
        LIB,
        ("telemetry.rs", "pub fn record(_: crate::model::Point) {}\n"),
        ("model.rs", "pub struct Point;\n"),
        ("stream.rs", "use super::storage::Store;\n"),
        ("storage.rs", "pub struct Store;\n"),
    ]);
    assert_eq!(
        r.upward,
        [
            "src/stream.rs imports storage::Store (defined in src/storage.rs): \
             stream may not depend on storage",
            "src/telemetry.rs imports model::Point (defined in src/model.rs): \
             telemetry is a foundation module and may not depend on model",
        ]
    );
}

#[test]
fn a_module_outside_the_layers_is_reported() {
    let r = report(&[LIB, ("shiny.rs", "pub struct New;\n")]);
    assert_eq!(r.upward.len(), 1, "{:?}", r.upward);
    assert!(r.upward[0].starts_with("module `shiny` has no layer"));
}

#[test]
fn two_files_that_import_each_other_are_a_cycle() {
    let r = report(&[
        LIB,
        ("storage/mod.rs", "mod chunk;\nmod compacted;\n"),
        (
            "storage/chunk.rs",
            "pub struct Meta;\npub fn decode() { super::compacted::decode() }\n",
        ),
        (
            "storage/compacted.rs",
            "use super::chunk::Meta;\npub fn decode() {}\n",
        ),
    ]);
    assert!(r.upward.is_empty(), "{:?}", r.upward);
    assert_eq!(r.cycles.len(), 1);
    assert_eq!(
        r.cycles[0].to_string(),
        "import cycle between src/storage/chunk.rs, src/storage/compacted.rs:\n  \
         src/storage/chunk.rs imports storage::compacted::decode (defined in src/storage/compacted.rs)\n  \
         src/storage/compacted.rs imports storage::chunk::Meta (defined in src/storage/chunk.rs)"
    );
}

#[test]
fn a_cycle_through_a_mod_rs_re_export_is_found() {
    // `table` takes `Scan` from the facade, which re-exports `scan`.
    let r = report(&[
        LIB,
        (
            "query/mod.rs",
            "mod scan;\nmod table;\npub use scan::Scan;\npub use table::Table;\n",
        ),
        ("query/table.rs", "use super::Scan;\npub struct Table;\n"),
        (
            "query/scan.rs",
            "use super::table::Table;\npub struct Scan(Table);\n",
        ),
    ]);
    let files: Vec<_> = r.cycles.iter().map(|c| c.files.clone()).collect();
    assert_eq!(files, [["src/query/scan.rs", "src/query/table.rs"]]);
}

#[test]
fn a_child_that_imports_from_its_importing_parent_is_a_cycle() {
    let r = report(&[
        LIB,
        (
            "query/mod.rs",
            "mod run;\npub struct QueryError;\nfn go() { run::start() }\n",
        ),
        (
            "query/run.rs",
            "use super::QueryError;\npub fn start() -> QueryError { QueryError }\n",
        ),
    ]);
    let files: Vec<_> = r.cycles.iter().map(|c| c.files.clone()).collect();
    assert_eq!(files, [["src/query/mod.rs", "src/query/run.rs"]]);
}

/// Re-exports, inline test modules, aliases, globs, nested trees and
/// paths in comments or strings: none of them is an upward import or
/// a cycle.
#[test]
fn a_clean_tree_passes() {
    let r = report(&[
        LIB,
        INGEST[0],
        INGEST[1],
        (
            "telemetry.rs",
            "pub fn inc() {}\n#[cfg(test)]\nmod tests { use super::*; }\n",
        ),
        (
            "model.rs",
            "pub struct Point;\npub const NAME: &str = \"x\";\n",
        ),
        (
            "storage/mod.rs",
            "//! Uses nothing above: not `crate::ingest::Engine`.\n\
             mod chunk;\nmod meta;\npub use chunk::{decode, Chunk};\npub use meta::*;\n",
        ),
        (
            "storage/meta.rs",
            "use crate::{model::{self, Point as P}, telemetry};\n\
             pub struct Meta(P);\npub fn f() { telemetry::inc(); let _ = model::NAME; }\n\
             #[cfg(test)]\nmod tests {\n    use super::*;\n}\n",
        ),
        (
            "storage/chunk.rs",
            "use super::Meta;\npub struct Chunk(Meta);\n\
             /* a comment /* nested */ crate::ingest::Engine */\n\
             pub fn decode() -> &'static str { \"crate::ingest::Engine\" }\n\
             const Q: char = '\"';\nconst R: &str = r#\"super::super::ingest\"#;\n\
             #[cfg(test)]\nmod tests {\n    use super::*;\n    fn t() { decode(); }\n}\n",
        ),
        (
            "query/mod.rs",
            "mod table;\npub use table::Table;\nuse crate::ingest::Engine;\n\
             pub struct QueryError;\npub fn plan(_: Engine) -> Table { Table }\n",
        ),
        (
            "query/table.rs",
            "use crate::storage::{self as st, Meta};\npub struct Table;\n\
             fn f(_: Meta) { st::decode(); crate::telemetry::inc(); }\n",
        ),
    ]);
    assert!(r.upward.is_empty(), "{:?}", r.upward);
    assert!(r.cycles.is_empty(), "{:?}", r.cycles);
    // The imports it did see: none of them is lost either.
    assert!(r.imports >= 8, "{}", r.summary());
}

#[test]
fn use_trees_are_expanded() {
    let toks = tokenize("use a::{b, c::{self as d, *}, e::f as g};");
    let mut uses = Vec::new();
    use_tree(&toks, &mut 1, Vec::new(), false, &mut uses);
    let got: Vec<_> = uses
        .iter()
        .map(|u| (u.path.join("::"), u.name.clone()))
        .collect();
    let want = [
        ("a::b", Some("b")),
        ("a::c", Some("d")),
        ("a::c", None),
        ("a::e::f", Some("g")),
    ];
    let want: Vec<_> = want
        .iter()
        .map(|(p, n)| (p.to_string(), n.map(String::from)))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn time_read_outside_the_clock_is_reported_with_its_line() {
    let dir = tree(&[
        ("runtime/clock.rs", "fn now() -> Instant { Instant::now() }"),
        (
            "ingest/flusher.rs",
            "// Instant::now() in a comment is fine\nfn due(t: Instant) -> bool {\n    t.elapsed() > MAX || chrono::Utc :: now ().year() > 0\n}\nconst S: &str = \"SystemTime::now()\";\n",
        ),
    ]);
    let found = time_reads(&dir.path().join("src"), &["runtime/clock.rs"]).unwrap();
    assert_eq!(
        found,
        [
            "src/ingest/flusher.rs:3: Utc::now(..)",
            "src/ingest/flusher.rs:3: .elapsed(..)",
        ]
    );
}
