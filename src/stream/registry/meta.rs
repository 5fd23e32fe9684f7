//! A named stream's configuration and lifecycle flags, persisted as
//! `meta.json` beside its log and replaced atomically (write, fsync,
//! rename, fsync the directory).

use std::fs;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::record::ProducerTuple;
use crate::stream::Offset;

pub const FILE: &str = "meta.json";

/// Where a fork's inherited data comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkOrigin {
    pub source_name: String,
    pub source_id: u64,
    /// Records before this offset are read from the source.
    pub offset: u64,
    /// Units (bytes or JSON messages) of the source's record at `offset`
    /// copied into the fork as its first record.
    pub sub_offset: u64,
}

/// How a stream expires. A sliding TTL restarts on every read and write; an
/// absolute time does not move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expiry {
    TtlSecs(u64),
    /// Unix milliseconds.
    At(i64),
}

/// Everything `PUT` sets, compared for idempotent re-creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamConfig {
    /// As the creator sent it (echoed in `Content-Type`).
    pub content_type: String,
    pub expiry: Option<Expiry>,
    pub fork: Option<ForkOrigin>,
}

impl StreamConfig {
    /// `application/json` streams keep message boundaries (JSON mode).
    pub fn is_json(&self) -> bool {
        media_type(&self.content_type) == "application/json"
    }
}

/// The media type without parameters, lower-cased: how content types are
/// compared (`Application/JSON; charset=utf-8` matches `application/json`).
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub id: u64,
    pub name: String,
    pub config: StreamConfig,
    /// Closed without a final append (a close-only request); closes that
    /// carry data are recorded in the log itself.
    #[serde(default)]
    pub closed: bool,
    /// The producer tuple of a close-only request, which advances that
    /// producer's sequence without a record.
    #[serde(default)]
    pub closed_by: Option<ProducerTuple>,
    /// Deleted while forks still read from it: hidden, kept for the forks.
    #[serde(default)]
    pub soft_deleted: bool,
}

impl Meta {
    pub fn first_offset(&self) -> Offset {
        Offset(self.config.fork.as_ref().map_or(0, |f| f.offset))
    }
}

pub fn load(dir: &Path) -> std::io::Result<Meta> {
    let bytes = fs::read(dir.join(FILE))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

pub fn store(dir: &Path, meta: &Meta, fsync: bool) -> std::io::Result<()> {
    let tmp = dir.join("meta.json.tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(meta).expect("meta serializes"))?;
    if fsync {
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(FILE))?;
    if fsync {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_compare_without_case_or_parameters() {
        assert_eq!(
            media_type("Application/JSON; charset=utf-8"),
            "application/json"
        );
        assert_eq!(media_type(" text/plain "), "text/plain");
        let c = StreamConfig {
            content_type: "APPLICATION/json;charset=UTF-8".into(),
            expiry: None,
            fork: None,
        };
        assert!(c.is_json());
    }
}
