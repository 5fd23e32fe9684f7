//! Little-endian, length-prefixed binary encoding shared by the persisted
//! formats that carry series definitions (log records, catalog snapshots).

use std::collections::BTreeMap;

use super::series::{SeriesId, SeriesKey};

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("truncated or malformed data at byte {at}: {why}")]
pub struct WireError {
    pub at: usize,
    pub why: &'static str,
}

#[derive(Default)]
pub struct WireWriter {
    pub buf: Vec<u8>,
}

impl WireWriter {
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.buf.extend_from_slice(s.as_bytes());
    }
    pub fn series(&mut self, id: SeriesId, key: &SeriesKey) {
        self.u64(id.0);
        self.str(&key.metric);
        self.u32(key.tags.len() as u32);
        for (k, v) in &key.tags {
            self.str(k);
            self.str(v);
        }
    }
}

pub struct WireReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> WireReader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    fn take(&mut self, n: usize, why: &'static str) -> Result<&'a [u8], WireError> {
        if self.remaining() < n {
            return Err(WireError { at: self.pos, why });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1, "u8")?[0])
    }
    pub fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(
            self.take(4, "u32")?.try_into().expect("4 bytes"),
        ))
    }
    pub fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(
            self.take(8, "u64")?.try_into().expect("8 bytes"),
        ))
    }
    pub fn str(&mut self) -> Result<&'a str, WireError> {
        let n = self.u32()? as usize;
        let at = self.pos;
        std::str::from_utf8(self.take(n, "string")?).map_err(|_| WireError {
            at,
            why: "invalid UTF-8",
        })
    }
    /// A count that must fit in what is left, given each item's minimum size.
    pub fn count(&mut self, min_item: usize) -> Result<usize, WireError> {
        let at = self.pos;
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item) > self.remaining() {
            return Err(WireError {
                at,
                why: "count larger than the data",
            });
        }
        Ok(n)
    }
    pub fn series(&mut self) -> Result<(SeriesId, SeriesKey), WireError> {
        let id = SeriesId(self.u64()?);
        let metric = self.str()?.to_string();
        let n = self.count(8)?;
        let mut tags = BTreeMap::new();
        for _ in 0..n {
            let k = self.str()?.to_string();
            let v = self.str()?.to_string();
            tags.insert(k, v);
        }
        Ok((id, SeriesKey { metric, tags }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_round_trip_and_truncation_is_an_error() {
        let key = SeriesKey::new("cpu", [("host".to_string(), "a".to_string())].into());
        let mut w = WireWriter::default();
        w.series(key.id(), &key);
        let (id, back) = WireReader::new(&w.buf).series().unwrap();
        assert_eq!((id, &back), (key.id(), &key));
        for cut in 0..w.buf.len() {
            assert!(
                WireReader::new(&w.buf[..cut]).series().is_err(),
                "cut at {cut}"
            );
        }
    }
}

/// Decompresses a size-prefixed LZ4 block (`lz4_flex`'s format). LZ4 never
/// expands data more than 255 to 1, so a block whose prefix claims more (a
/// damaged record) is refused before anything is allocated; `lz4_flex`
/// would allocate whatever the prefix says (the fuzzer's find).
pub fn lz4_decompress(block: &[u8]) -> Result<Vec<u8>, String> {
    let (size, data) = block
        .split_first_chunk::<4>()
        .ok_or("LZ4 block shorter than its size prefix")?;
    let size = u32::from_le_bytes(*size) as usize;
    let most = data.len().saturating_mul(255).saturating_add(16);
    if size > most {
        return Err(format!(
            "LZ4 block claims {size} bytes from {} compressed (at most {most} are possible)",
            data.len()
        ));
    }
    lz4_flex::decompress_size_prepended(block).map_err(|e| e.to_string())
}

#[cfg(test)]
mod lz4_tests {
    use super::lz4_decompress;

    #[test]
    fn round_trips_and_refuses_impossible_sizes() {
        let data = vec![7u8; 100_000];
        let block = lz4_flex::compress_prepend_size(&data);
        assert_eq!(lz4_decompress(&block).unwrap(), data);
        let mut lying = block.clone();
        lying[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(lz4_decompress(&lying).unwrap_err().contains("claims"));
        assert!(lz4_decompress(&[1, 2]).is_err());
    }
}
