//! One segment file: `NNNNNN.log`.
//!
//! ```text
//! header v2 (28 bytes): magic "SDBSEG" | version u16 LE = 2 | base_seq u64 LE | salt u64 LE | crc32 u32 LE of the previous 24 bytes
//! frame  v2 (16 + len): word u32 LE | crc32 u32 LE | seq u64 LE | payload
//! ```
//!
//! `word` is the payload length, with bit 31 set on a *lost* marker: a
//! frame [`repair`](crate::stream::repair) writes in place of records it
//! could not keep, whose 8-byte payload is how many offsets from `seq` on
//! it stands for. The checksum covers the segment's random `salt`, `word`,
//! `seq` and the payload, so a frame is valid only at its own offset in its
//! own segment: payload bytes that happen to (or are made to) look like a
//! frame fail it, which is what lets a scan resynchronise after damage.
//!
//! Version 1 (20-byte header without salt, 8-byte frames `len | crc32 of
//! payload` without seq) is still read: the writer never appends to one,
//! it starts a version 2 segment instead.
//!
//! A scan keeps every frame it can place. Damage followed by a valid frame
//! is reported as [`Damage`] (the frames after it are kept and placed by
//! their `seq`); bytes after the last valid frame with no valid frame
//! after them are the torn `trailing` tail of a crash mid-write.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::error::{ErrorKind, HasKind};
use crate::runtime::fs::{sync_dir, sync_file};

pub const MAGIC: &[u8; 6] = b"SDBSEG";
pub const VERSION: u16 = 2;
pub const VERSION_1: u16 = 1;
pub const HEADER_LEN: u64 = 28;
pub const HEADER_LEN_V1: u64 = 20;
pub const FRAME_LEN: u64 = 16;
pub const FRAME_LEN_V1: u64 = 8;
/// Upper bound on one payload; a larger length field is garbage.
pub const MAX_RECORD: u32 = 512 << 20;
/// Bit 31 of a v2 frame's length word: a lost marker.
const LOST: u32 = 1 << 31;

pub fn file_name(id: u64) -> String {
    format!("{id:06}.log")
}

/// Parses `000123.log` into 123.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".log")?;
    (!stem.is_empty() && stem.bytes().all(|b| b.is_ascii_digit())).then(|| stem.parse().ok())?
}

/// The ids of the segment files in `dir`, oldest first.
pub fn list(dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids = Vec::new();
    for e in std::fs::read_dir(dir)? {
        if let Some(id) = e?.file_name().to_str().and_then(parse_file_name) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// How a segment frames its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    pub version: u16,
    /// Mixed into every v2 frame's checksum (0 in v1).
    pub salt: u64,
}

impl Format {
    /// A fresh v2 format with a random salt.
    pub fn new() -> Self {
        Self {
            version: VERSION,
            salt: rand::random(),
        }
    }

    pub fn header_len(self) -> u64 {
        if self.version == VERSION_1 {
            HEADER_LEN_V1
        } else {
            HEADER_LEN
        }
    }

    fn frame_len(self) -> u64 {
        if self.version == VERSION_1 {
            FRAME_LEN_V1
        } else {
            FRAME_LEN
        }
    }
}

impl Default for Format {
    fn default() -> Self {
        Self::new()
    }
}

pub fn encode_header(base_seq: u64, format: Format) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN as usize);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&VERSION.to_le_bytes());
    h.extend_from_slice(&base_seq.to_le_bytes());
    h.extend_from_slice(&format.salt.to_le_bytes());
    let crc = crc32fast::hash(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h
}

/// A version 1 header, as older releases wrote it (tests of reading them).
#[cfg(test)]
pub fn encode_header_v1(base_seq: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN_V1 as usize);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&VERSION_1.to_le_bytes());
    h.extend_from_slice(&base_seq.to_le_bytes());
    let crc = crc32fast::hash(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h
}

fn frame_crc(salt: u64, word: u32, seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&salt.to_le_bytes());
    h.update(&word.to_le_bytes());
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn encode_frame(buf: &mut Vec<u8>, salt: u64, word: u32, seq: u64, payload: &[u8]) {
    buf.extend_from_slice(&word.to_le_bytes());
    buf.extend_from_slice(&frame_crc(salt, word, seq, payload).to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// Appends record `seq` to `buf`, framed for a v2 segment.
pub fn encode_record(buf: &mut Vec<u8>, format: Format, seq: u64, payload: &[u8]) {
    encode_frame(buf, format.salt, payload.len() as u32, seq, payload);
}

/// Appends a marker saying offsets `seq..seq + count` were lost.
pub fn encode_lost(buf: &mut Vec<u8>, format: Format, seq: u64, count: u64) {
    encode_frame(buf, format.salt, LOST | 8, seq, &count.to_le_bytes());
}

/// A version 1 frame, as older releases wrote it.
#[cfg(test)]
pub fn encode_record_v1(buf: &mut Vec<u8>, payload: &[u8]) {
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    buf.extend_from_slice(payload);
}

/// One valid frame: a record, or a lost marker for `count` offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub pos: u64,
    pub end: u64,
    pub seq: u64,
    pub count: u64,
    pub lost: bool,
}

impl Frame {
    /// Where the payload sits in the file.
    pub fn payload(&self, format: Format) -> Range<usize> {
        (self.pos + format.frame_len()) as usize..self.end as usize
    }
}

/// Bytes `start..end` that frame nothing, with a valid frame after them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub start: u64,
    pub end: u64,
    /// The offsets whose records were in those bytes. In a v1 segment
    /// frames carry no offset, so everything from the damage to the end
    /// of the file counts as damaged and this is an upper bound (each
    /// record took at least a frame header).
    pub lost: Range<u64>,
}

/// A frame or damage, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Frame(Frame),
    Damage(Damage),
}

/// What a scan found in one segment file.
#[derive(Debug)]
pub struct Scanned {
    pub base_seq: u64,
    pub format: Format,
    pub pieces: Vec<Piece>,
    /// End of the last valid frame: where appends resume.
    pub valid_len: u64,
    /// Bytes after `valid_len` with no valid frame in them (a torn tail).
    pub trailing: u64,
}

impl Scanned {
    pub fn frames(&self) -> impl Iterator<Item = &Frame> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Frame(f) => Some(f),
            Piece::Damage(_) => None,
        })
    }

    pub fn damage(&self) -> impl Iterator<Item = &Damage> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Damage(d) => Some(d),
            Piece::Frame(_) => None,
        })
    }

    /// The frame position of each offset from `base_seq` on (a lost
    /// marker's for each offset it stands for). Only meaningful without
    /// damage.
    pub fn positions(&self) -> Vec<u64> {
        let mut out = Vec::new();
        for f in self.frames() {
            out.extend(std::iter::repeat_n(f.pos, f.count as usize));
        }
        out
    }

    /// The offset after the last one this segment accounts for.
    pub fn next_seq(&self) -> u64 {
        match self.pieces.last() {
            Some(Piece::Frame(f)) => f.seq + f.count,
            Some(Piece::Damage(d)) => d.lost.end,
            None => self.base_seq,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("segment {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("segment {path}: bad header ({why}); move the file aside (nothing in it can be placed without its header)")]
    BadHeader { path: PathBuf, why: &'static str },
}

impl HasKind for SegmentError {
    fn kind(&self) -> ErrorKind {
        match self {
            SegmentError::Io { .. } => ErrorKind::Internal,
            SegmentError::BadHeader { .. } => ErrorKind::Corrupt,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SegmentError + '_ {
    move |source| SegmentError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a whole segment file and scans it (see [`scan_bytes`]).
pub fn scan(path: &Path) -> Result<Scanned, SegmentError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    scan_bytes(&bytes).map_err(|why| SegmentError::BadHeader {
        path: path.into(),
        why,
    })
}

/// Reads the header and every frame that can be placed. After a frame that
/// is short, oversized, fails its checksum or carries the wrong offset, it
/// looks for the next valid frame at a later byte with a later offset; if
/// there is none the rest is the torn tail.
pub fn scan_bytes(bytes: &[u8]) -> Result<Scanned, &'static str> {
    let (base_seq, format) = check_header(bytes)?;
    let len = bytes.len() as u64;
    let mut pieces = Vec::new();
    let mut pos = format.header_len();
    let mut expected = base_seq;
    while pos < len {
        if let Some(f) = frame_at(bytes, pos, format).and_then(|f| placed(f, expected, format)) {
            expected = f.seq + f.count;
            pos = f.end;
            pieces.push(Piece::Frame(f));
            continue;
        }
        match resync(bytes, pos, expected, format) {
            Some(next) => {
                let lost = expected..if format.version == VERSION_1 {
                    expected + (len - pos) / FRAME_LEN_V1
                } else {
                    next.seq
                };
                let end = if format.version == VERSION_1 {
                    len
                } else {
                    next.pos
                };
                pieces.push(Piece::Damage(Damage {
                    start: pos,
                    end,
                    lost,
                }));
                pos = end;
                expected = pieces_end(&pieces, expected);
            }
            None => break,
        }
    }
    Ok(Scanned {
        base_seq,
        format,
        pieces,
        valid_len: pos,
        trailing: len - pos,
    })
}

fn pieces_end(pieces: &[Piece], expected: u64) -> u64 {
    match pieces.last() {
        Some(Piece::Damage(d)) => d.lost.end,
        _ => expected,
    }
}

/// `f` if it can follow the frames before it. A v1 frame has no offset
/// (it gets `expected`) and must not be empty: zeroed bytes would
/// otherwise frame an endless run of empty records (`crc32("") == 0`).
fn placed(mut f: Frame, expected: u64, format: Format) -> Option<Frame> {
    if format.version == VERSION_1 {
        f.seq = expected;
        return (f.end > f.pos + FRAME_LEN_V1).then_some(f);
    }
    (f.seq == expected).then_some(f)
}

/// The first byte after `from` where a frame that could follow the frame
/// with offset `expected` (damaged at `from`) starts. In v1 (no offsets) any non-empty checksummed frame counts:
/// then the damage cannot be placed, only detected.
fn resync(bytes: &[u8], from: u64, expected: u64, format: Format) -> Option<Frame> {
    let len = bytes.len() as u64;
    let frame_len = format.frame_len();
    let mut q = from + 1;
    while q + frame_len <= len {
        // The frame at `from` had offset `expected`: one after it has a
        // later one (a payload copy of that frame does not count).
        let plausible = format.version == VERSION_1 || read_u64(bytes, q + 8) > expected;
        if plausible {
            if let Some(f) = frame_at(bytes, q, format) {
                if f.end > f.pos + frame_len || format.version != VERSION_1 {
                    return Some(f);
                }
            }
        }
        q += 1;
    }
    None
}

fn read_u32(bytes: &[u8], at: u64) -> u32 {
    let at = at as usize;
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn read_u64(bytes: &[u8], at: u64) -> u64 {
    let at = at as usize;
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// The valid frame at `pos`, if there is one. v1 frames get `seq`
/// `u64::MAX` (unknown) and count 1.
fn frame_at(bytes: &[u8], pos: u64, format: Format) -> Option<Frame> {
    let len = bytes.len() as u64;
    let frame_len = format.frame_len();
    if len - pos < frame_len {
        return None;
    }
    let word = read_u32(bytes, pos);
    let crc = read_u32(bytes, pos + 4);
    let lost = format.version != VERSION_1 && word & LOST != 0;
    let n = if lost { word & !LOST } else { word };
    if n > MAX_RECORD || u64::from(n) > len - pos - frame_len || (lost && n != 8) {
        return None;
    }
    let end = pos + frame_len + u64::from(n);
    let payload = &bytes[(pos + frame_len) as usize..end as usize];
    if format.version == VERSION_1 {
        return (crc32fast::hash(payload) == crc).then_some(Frame {
            pos,
            end,
            seq: u64::MAX,
            count: 1,
            lost: false,
        });
    }
    let seq = read_u64(bytes, pos + 8);
    if frame_crc(format.salt, word, seq, payload) != crc {
        return None;
    }
    let count = if lost { read_u64(payload, 0) } else { 1 };
    (count > 0 && seq.checked_add(count).is_some()).then_some(Frame {
        pos,
        end,
        seq,
        count,
        lost,
    })
}

/// The base offset and format a header declares.
fn check_header(bytes: &[u8]) -> Result<(u64, Format), &'static str> {
    if (bytes.len() as u64) < HEADER_LEN_V1 {
        return Err("short");
    }
    if &bytes[..6] != MAGIC {
        return Err("not a StreamDB segment");
    }
    let version = u16::from_le_bytes([bytes[6], bytes[7]]);
    let (salt, body) = match version {
        VERSION_1 => (0, 16),
        VERSION if bytes.len() as u64 >= HEADER_LEN => (read_u64(bytes, 16), 24),
        VERSION => return Err("short"),
        _ => return Err("unsupported version"),
    };
    if crc32fast::hash(&bytes[..body]) != read_u32(bytes, body as u64) {
        return Err("checksum mismatch");
    }
    Ok((read_u64(bytes, 8), Format { version, salt }))
}

/// Creates a new (v2) segment with its header, synced, and fsyncs the
/// directory so the file itself survives a crash.
pub fn create(dir: &Path, id: u64, base_seq: u64) -> Result<(File, Format), SegmentError> {
    let path = dir.join(file_name(id));
    let format = Format::new();
    let mut file = OpenOptions::new()
        .create_new(true)
        .read(true)
        .append(true)
        .open(&path)
        .map_err(io_err(&path))?;
    file.write_all(&encode_header(base_seq, format))
        .map_err(io_err(&path))?;
    sync_file(&file, &path).map_err(io_err(&path))?;
    sync_dir(dir).map_err(io_err(dir))?;
    Ok((file, format))
}

/// Opens an existing segment for appending after cutting it to `valid_len`.
pub fn open_for_append(path: &Path, valid_len: u64) -> Result<File, SegmentError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err(path))?;
    if file.metadata().map_err(io_err(path))?.len() != valid_len {
        file.set_len(valid_len).map_err(io_err(path))?;
        sync_file(&file, path).map_err(io_err(path))?;
    }
    file.seek(SeekFrom::End(0)).map_err(io_err(path))?;
    Ok(file)
}

/// Reads the payload of the frame at `pos`, checking its checksum; `None`
/// for a lost marker.
pub fn read_record(file: &File, pos: u64, format: Format) -> io::Result<Option<Vec<u8>>> {
    use std::os::unix::fs::FileExt;
    let frame_len = format.frame_len();
    let mut head = vec![0u8; frame_len as usize];
    file.read_exact_at(&mut head, pos)?;
    let word = read_u32(&head, 0);
    let n = if format.version == VERSION_1 {
        word
    } else {
        word & !LOST
    };
    if n > MAX_RECORD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("record at byte {pos}: length {n} too large"),
        ));
    }
    let mut bytes = head;
    bytes.resize((frame_len + u64::from(n)) as usize, 0);
    file.read_exact_at(&mut bytes[frame_len as usize..], pos + frame_len)?;
    let Some(f) = frame_at(&bytes, 0, format) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("record at byte {pos}: checksum mismatch"),
        ));
    };
    if f.lost {
        return Ok(None);
    }
    bytes.drain(..frame_len as usize);
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests;
