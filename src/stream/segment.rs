//! One segment file: `NNNNNN.log`.
//!
//! ```text
//! header  (20 bytes): magic "SDBSEG" | version u16 LE | base_seq u64 LE | crc32 u32 LE of the previous 16 bytes
//! record  (8 + len):  len u32 LE | crc32 u32 LE of payload | payload
//! ```
//!
//! Records are numbered from the header's `base_seq`. A record is valid
//! only if its whole frame is present and its checksum matches; recovery
//! keeps the longest valid prefix of the newest segment (a torn tail from
//! a crash mid-write) and treats damage anywhere else as corruption.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{ErrorKind, HasKind};
use crate::runtime::fs::{sync_dir, sync_file};

pub const MAGIC: &[u8; 6] = b"SDBSEG";
pub const VERSION: u16 = 1;
pub const HEADER_LEN: u64 = 20;
pub const FRAME_LEN: u64 = 8;
/// Upper bound on one payload; a larger length field is garbage.
pub const MAX_RECORD: u32 = 512 << 20;

pub fn file_name(id: u64) -> String {
    format!("{id:06}.log")
}

/// Parses `000123.log` into 123.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".log")?;
    (!stem.is_empty() && stem.bytes().all(|b| b.is_ascii_digit())).then(|| stem.parse().ok())?
}

pub fn encode_header(base_seq: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..6].copy_from_slice(MAGIC);
    h[6..8].copy_from_slice(&VERSION.to_le_bytes());
    h[8..16].copy_from_slice(&base_seq.to_le_bytes());
    let crc = crc32fast::hash(&h[..16]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Appends one framed record to `buf`.
pub fn encode_record(buf: &mut Vec<u8>, payload: &[u8]) {
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    buf.extend_from_slice(payload);
}

/// What recovery found in one segment file.
#[derive(Debug)]
pub struct Scanned {
    pub base_seq: u64,
    /// File position of each valid record's frame.
    pub positions: Vec<u64>,
    /// End of the last valid record.
    pub valid_len: u64,
    /// Bytes after `valid_len` (a torn tail, or damage).
    pub trailing: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("segment {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("segment {path}: bad header ({why})")]
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

/// Reads the header and every valid record frame of a segment. Stops at the
/// first frame that is short, oversized or fails its checksum.
pub fn scan(path: &Path) -> Result<Scanned, SegmentError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let len = file.metadata().map_err(io_err(path))?.len();
    let mut header = [0u8; HEADER_LEN as usize];
    if len < HEADER_LEN {
        return Err(SegmentError::BadHeader {
            path: path.into(),
            why: "short",
        });
    }
    file.read_exact(&mut header).map_err(io_err(path))?;
    let base_seq = check_header(&header).map_err(|why| SegmentError::BadHeader {
        path: path.into(),
        why,
    })?;

    let mut reader = io::BufReader::with_capacity(1 << 20, file);
    let mut positions = Vec::new();
    let mut pos = HEADER_LEN;
    let mut payload = Vec::new();
    loop {
        if len - pos < FRAME_LEN {
            break;
        }
        let mut frame = [0u8; FRAME_LEN as usize];
        reader.read_exact(&mut frame).map_err(io_err(path))?;
        let n = u32::from_le_bytes(frame[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(frame[4..].try_into().expect("4 bytes"));
        if n > MAX_RECORD || (n as u64) > len - pos - FRAME_LEN {
            break;
        }
        payload.resize(n as usize, 0);
        reader.read_exact(&mut payload).map_err(io_err(path))?;
        if crc32fast::hash(&payload) != crc {
            break;
        }
        positions.push(pos);
        pos += FRAME_LEN + n as u64;
    }
    Ok(Scanned {
        base_seq,
        positions,
        valid_len: pos,
        trailing: len - pos,
    })
}

fn check_header(h: &[u8; HEADER_LEN as usize]) -> Result<u64, &'static str> {
    if &h[..6] != MAGIC {
        return Err("not a StreamDB segment");
    }
    let crc = u32::from_le_bytes(h[16..20].try_into().expect("4 bytes"));
    if crc32fast::hash(&h[..16]) != crc {
        return Err("checksum mismatch");
    }
    let version = u16::from_le_bytes([h[6], h[7]]);
    if version != VERSION {
        return Err("unsupported version");
    }
    Ok(u64::from_le_bytes(h[8..16].try_into().expect("8 bytes")))
}

/// Creates a new segment with its header, synced, and fsyncs the directory
/// so the file itself survives a crash.
pub fn create(dir: &Path, id: u64, base_seq: u64) -> Result<File, SegmentError> {
    let path = dir.join(file_name(id));
    let mut file = OpenOptions::new()
        .create_new(true)
        .read(true)
        .append(true)
        .open(&path)
        .map_err(io_err(&path))?;
    file.write_all(&encode_header(base_seq))
        .map_err(io_err(&path))?;
    sync_file(&file, &path).map_err(io_err(&path))?;
    sync_dir(dir).map_err(io_err(dir))?;
    Ok(file)
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

/// Reads the payload of the record framed at `pos`, checking its checksum.
pub fn read_record(file: &File, pos: u64) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut frame = [0u8; FRAME_LEN as usize];
    file.read_exact_at(&mut frame, pos)?;
    let n = u32::from_le_bytes(frame[..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(frame[4..].try_into().expect("4 bytes"));
    if n > MAX_RECORD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("record at byte {pos}: length {n} too large"),
        ));
    }
    let mut payload = vec![0u8; n as usize];
    file.read_exact_at(&mut payload, pos + FRAME_LEN)?;
    if crc32fast::hash(&payload) != crc {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("record at byte {pos}: checksum mismatch"),
        ));
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(file_name(1), "000001.log");
        assert_eq!(parse_file_name("000001.log"), Some(1));
        assert_eq!(parse_file_name("1234567.log"), Some(1_234_567));
        assert_eq!(parse_file_name("x.log"), None);
        assert_eq!(parse_file_name(".log"), None);
        assert_eq!(parse_file_name("000001.tmp"), None);
    }

    #[test]
    fn scan_stops_at_a_torn_or_corrupt_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = create(dir.path(), 1, 7).unwrap();
        let mut buf = Vec::new();
        encode_record(&mut buf, b"first");
        encode_record(&mut buf, b"second");
        f.write_all(&buf).unwrap();
        let path = dir.path().join(file_name(1));
        let whole = scan(&path).unwrap();
        assert_eq!(
            (whole.base_seq, whole.positions.len(), whole.trailing),
            (7, 2, 0)
        );

        // A torn third record: only part of it reached the disk.
        let mut third = Vec::new();
        encode_record(&mut third, b"third record");
        f.write_all(&third[..10]).unwrap();
        let torn = scan(&path).unwrap();
        assert_eq!(
            (torn.positions.len(), torn.valid_len, torn.trailing),
            (2, whole.valid_len, 10)
        );

        // A flipped payload byte in the second record cuts it off too.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = whole.valid_len as usize - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(scan(&path).unwrap().positions.len(), 1);
    }

    #[test]
    fn rejects_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("000001.log");
        std::fs::write(&path, b"definitely not a segment header").unwrap();
        assert!(matches!(scan(&path), Err(SegmentError::BadHeader { .. })));
    }
}
