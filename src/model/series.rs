//! Series identity: a metric name plus a sorted tag map, and its stable id.
//!
//! # The series id hash (a persisted format: never change it)
//!
//! `series_id = xxh3_64(canonical bytes, seed 0)` where the canonical bytes
//! are, in order, each string as its UTF-8 length (u32 little-endian)
//! followed by its bytes:
//!
//! 1. the metric name;
//! 2. for every tag, sorted by key (byte order): the key, then the value.
//!
//! Length prefixes make the encoding unambiguous (`a=bc` and `ab=c` differ)
//! whatever bytes names hold. A tag with an empty key is not allowed; a tag
//! whose value is absent (null) is simply not part of the series. The id
//! is pinned by `tests::pinned_ids`, so a change that would move existing data
//! to new series fails the build.

use std::collections::BTreeMap;
use std::fmt;

use xxhash_rust::xxh3::xxh3_64;

/// Stable 64-bit id of a series (see the module docs for the hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesId(pub u64);

impl fmt::Display for SeriesId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A series: metric name plus tags, kept sorted by key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub metric: String,
    pub tags: BTreeMap<String, String>,
}

impl SeriesKey {
    pub fn new(metric: impl Into<String>, tags: BTreeMap<String, String>) -> Self {
        Self {
            metric: metric.into(),
            tags,
        }
    }

    pub fn id(&self) -> SeriesId {
        self.hasher().finish()
    }

    /// The canonical bytes the id hashes (module docs): equal bytes, equal
    /// keys, so comparing them tells a hash collision from the same series.
    pub fn canonical(&self) -> Vec<u8> {
        self.hasher().buf
    }

    fn hasher(&self) -> SeriesHasher {
        let mut h = SeriesHasher::new(&self.metric);
        for (k, v) in &self.tags {
            h.tag(k, v);
        }
        h
    }
}

/// `metric{key=value,...}`, as errors name a series.
impl fmt::Display for SeriesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{{", self.metric)?;
        for (i, (k, v)) in self.tags.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(f, "{sep}{k}={v:?}")?;
        }
        write!(f, "}}")
    }
}

/// The series id of canonical bytes: the one hash function of the format.
/// Ingest takes it as a parameter (`fn(&[u8]) -> SeriesId`) so tests can
/// force collisions with a weaker one.
pub fn series_hash(canonical: &[u8]) -> SeriesId {
    SeriesId(xxh3_64(canonical))
}

/// Incremental form of the series hash, so ingest can hash a row straight
/// from its Arrow columns without building a `SeriesKey`. Tags must be fed
/// in key order. It collects the canonical bytes in a buffer and hashes
/// them in one call (far cheaper per row than a streaming hasher); reuse one
/// hasher across rows with [`SeriesHasher::reset`] to reuse the buffer.
#[derive(Default)]
pub struct SeriesHasher {
    buf: Vec<u8>,
}

impl SeriesHasher {
    pub fn new(metric: &str) -> Self {
        let mut h = Self::default();
        h.reset(metric);
        h
    }

    /// Starts a new series with `metric`.
    pub fn reset(&mut self, metric: &str) {
        self.buf.clear();
        write_str(&mut self.buf, metric);
    }

    pub fn tag(&mut self, key: &str, value: &str) {
        Self::encode_tag(&mut self.buf, key, value);
    }

    /// Appends tags already encoded with [`SeriesHasher::encode_tag`], so a
    /// caller can reuse the encoding of tags shared by many rows.
    pub fn encoded_tags(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The canonical encoding of one tag (appended to `out`).
    pub fn encode_tag(out: &mut Vec<u8>, key: &str, value: &str) {
        write_str(out, key);
        write_str(out, value);
    }

    pub fn finish(&self) -> SeriesId {
        series_hash(&self.buf)
    }

    /// The canonical bytes fed so far.
    pub fn canonical(&self) -> &[u8] {
        &self.buf
    }
}

fn write_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

/// A `Hasher` for maps keyed by series ids, which are already well-mixed
/// hashes: hashing them again would only cost time.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | *b as u64;
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// `BuildHasher` for [`IdHasher`].
pub type IdHashBuilder = std::hash::BuildHasherDefault<IdHasher>;

#[cfg(test)]
mod tests {
    use super::*;

    fn key(metric: &str, tags: &[(&str, &str)]) -> SeriesKey {
        let tags = tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        SeriesKey::new(metric, tags)
    }

    /// These values are persisted in every chunk, catalog and log record.
    /// If this test fails, the change breaks existing data directories.
    /// The expected ids were computed independently with the reference
    /// `xxhash` Python package over the documented canonical bytes.
    #[test]
    fn pinned_ids() {
        let cases = [
            (key("cpu_usage", &[]), 0x85d9_5349_0ced_a1dau64),
            (
                key("cpu_usage", &[("host", "web-1")]),
                0x0f5d_d4f6_6bd9_3e7b,
            ),
            (
                key(
                    "cpu.usage_user",
                    &[("hostname", "host_0"), ("region", "us-east-1")],
                ),
                0x6e2b_f13c_b396_2118,
            ),
            (key("", &[]), 0x48b2_c926_16fc_193d),
        ];
        let got: Vec<String> = cases
            .iter()
            .map(|(k, _)| format!("{:#018x}", k.id().0))
            .collect();
        let want: Vec<String> = cases.iter().map(|(_, id)| format!("{id:#018x}")).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn tag_order_does_not_matter_but_boundaries_do() {
        let a = key("m", &[("a", "1"), ("b", "2")]);
        let b = key("m", &[("b", "2"), ("a", "1")]);
        assert_eq!(a.id(), b.id());
        assert_ne!(key("m", &[("a", "bc")]).id(), key("m", &[("ab", "c")]).id());
        assert_ne!(key("ma", &[]).id(), key("m", &[("a", "")]).id());
    }

    #[test]
    fn incremental_hasher_matches_key() {
        let k = key("disk", &[("dev", "sda"), ("host", "h1")]);
        let mut h = SeriesHasher::new("disk");
        h.tag("dev", "sda");
        h.tag("host", "h1");
        assert_eq!(h.finish(), k.id());
    }
}
