//! `streamdb repair --data-dir DIR`: makes a data directory that startup
//! refuses open again without deleting anything. The metrics log and each
//! named stream's log get [`crate::stream::repair`]: damaged bytes and
//! records that do not decode are copied next to their segment as
//! `<segment>.damaged-<start>-<end>` and their offsets marked lost (never
//! handed out again); unreadable named streams are renamed `<id>.damaged`.
//! It prints exactly which offsets were lost.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::ingest::record;
use crate::stream::registry::repair::{repair as repair_named, NamedRepair};
use crate::stream::repair::{repair_log, SegmentRepair};

#[derive(clap::Args, Debug)]
pub struct RepairArgs {
    /// The data directory of a stopped server.
    #[arg(long)]
    pub data_dir: PathBuf,
}

pub fn run(args: RepairArgs) -> Result<()> {
    let dir = &args.data_dir;
    if !dir.is_dir() {
        bail!("--data-dir {}: no such directory", dir.display());
    }
    let _lock = lock(dir)?;
    let mut lines = Vec::new();
    let metrics = dir.join("stream").join("metrics");
    if metrics.is_dir() {
        let check = |p: &[u8]| {
            record::decode_record(p)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let done = repair_log(&metrics, &check)?;
        for r in &done {
            lines.extend(segment_lines("metrics", r));
        }
    }
    let named = dir.join("stream").join("named");
    if named.is_dir() {
        for r in repair_named(&named)? {
            lines.extend(named_lines(&r));
        }
    }
    if lines.is_empty() {
        outln!(
            "nothing to repair: every log segment and named stream in {} reads cleanly",
            dir.display()
        )?;
    } else {
        for l in &lines {
            outln!("{l}")?;
        }
        outln!("repaired; nothing was deleted (damaged data is kept in the files named above)")?;
    }
    Ok(())
}

/// The data directory's lock: repairing under a running server would race
/// its writer.
fn lock(dir: &Path) -> Result<std::fs::File> {
    match crate::ingest::lock_data_dir(dir) {
        Err(crate::ingest::EngineError::DataDirInUse { .. }) => bail!(
            "{} is in use by a running server: stop it before `streamdb repair`",
            dir.display()
        ),
        other => Ok(other?),
    }
}

fn segment_lines(stream: &str, r: &SegmentRepair) -> Vec<String> {
    let mut out = vec![format!("{stream}: {}", r.segment.display())];
    out.extend(r.describe().into_iter().map(|l| format!("  {l}")));
    out
}

fn named_lines(r: &NamedRepair) -> Vec<String> {
    let stream = match &r.name {
        Some(n) => format!("named stream {n:?}"),
        None => format!("named stream in {}", r.dir.display()),
    };
    let mut out = Vec::new();
    if let Some((aside, why)) = &r.set_aside {
        out.push(format!("{stream}: {why}"));
        out.push(format!(
            "  set aside as {} (the whole stream is lost to readers)",
            aside.display()
        ));
    }
    for s in &r.log {
        out.extend(segment_lines(&stream, s));
    }
    out
}
