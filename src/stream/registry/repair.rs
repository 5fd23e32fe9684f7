//! `streamdb repair` for the named streams: a stream whose `meta.json`
//! cannot be read (and every fork reading through it) is renamed to
//! `<id>.damaged` (startup skips such names; nothing is deleted), every
//! other stream's log is repaired like the metrics log, with the stream
//! record decoder deciding what is readable, and the id counter is made
//! to lie past every id on disk.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{meta, next_id, record, StreamError};
use crate::runtime::fs::{parent_of, sync_dir};
use crate::stream::repair::{repair_log, SegmentRepair};

/// What repair did to one named stream.
#[derive(Debug)]
pub struct NamedRepair {
    pub dir: PathBuf,
    /// The stream's name, when its metadata could be read.
    pub name: Option<String>,
    /// Where the whole stream was moved, and why.
    pub set_aside: Option<(PathBuf, String)>,
    pub log: Vec<SegmentRepair>,
}

fn io(dir: &Path) -> impl Fn(std::io::Error) -> StreamError + '_ {
    move |e| StreamError::Io(format!("{}: {e}", dir.display()))
}

/// Repairs the named streams under `dir` (the registry's directory).
pub fn repair(dir: &Path) -> Result<Vec<NamedRepair>, StreamError> {
    let mut streams = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if path.is_dir() && u64::from_str_radix(name, 16).is_ok() {
            let id = u64::from_str_radix(name, 16).expect("checked");
            streams.push((id, path));
        }
    }
    // Sources before their forks (a fork's id is larger).
    streams.sort();
    let mut readable = HashSet::new();
    let mut done = Vec::new();
    for (id, path) in streams {
        let why = match meta::load(&path) {
            Err(e) => Err(format!("{} cannot be read: {e}", meta::FILE)),
            Ok(m) => match &m.config.fork {
                Some(f) if !readable.contains(&f.source_id) => Err(m.name.clone()).map_err(|n| {
                    format!(
                        "stream {n:?} is a fork of stream {:016x}, which is missing or set aside",
                        f.source_id
                    )
                }),
                _ => Ok(m),
            },
        };
        match why {
            Ok(m) => {
                readable.insert(id);
                let check = |p: &[u8]| record::decode(p).map(|_| ()).map_err(|e| e.to_string());
                let log = repair_log(&path, &check).map_err(|e| StreamError::Io(e.to_string()))?;
                if !log.is_empty() {
                    done.push(NamedRepair {
                        dir: path,
                        name: Some(m.name),
                        set_aside: None,
                        log,
                    });
                }
            }
            Err(why) => {
                let name = meta::load(&path).ok().map(|m| m.name);
                let aside = set_aside(&path)?;
                done.push(NamedRepair {
                    dir: path,
                    name,
                    set_aside: Some((aside, why)),
                    log: Vec::new(),
                });
            }
        }
    }
    let next = next_id::after_entries(dir).map_err(io(dir))?;
    let persisted = next_id::load(dir).ok().flatten().unwrap_or(0);
    if persisted < next {
        next_id::store(dir, next).map_err(io(dir))?;
    }
    Ok(done)
}

/// Renames `path` to `<path>.damaged` (or `.damaged-2`, ...), durably.
fn set_aside(path: &Path) -> Result<PathBuf, StreamError> {
    let mut n = 1;
    let aside = loop {
        let mut name = path.as_os_str().to_owned();
        name.push(if n == 1 {
            ".damaged".to_string()
        } else {
            format!(".damaged-{n}")
        });
        let aside = PathBuf::from(name);
        if !aside.exists() {
            break aside;
        }
        n += 1;
    };
    std::fs::rename(path, &aside).map_err(io(path))?;
    sync_dir(parent_of(path)).map_err(io(path))?;
    Ok(aside)
}
