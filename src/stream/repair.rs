//! `streamdb repair` for one stream log: what startup refuses to open
//! (damage that is not a torn tail, a record whose checksum holds but that
//! does not decode) is rewritten so the log opens again, and nothing is
//! deleted: the damaged bytes are copied to `<segment>.damaged-<start>-<end>`
//! first, every readable record keeps its offset, and each offset that no
//! longer has a record gets a lost marker, so it is never handed out again.
//!
//! May depend on `segment` and `log` (its error and offset text).

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::log::{range_text, LogError};
use super::segment::{self, Format, Piece, Scanned, SegmentError};
use crate::runtime::fs::write_synced;

/// Decides whether a record's payload can be used (its decoder, for the
/// stream the log belongs to); the error says why not.
pub type Check<'a> = &'a dyn Fn(&[u8]) -> Result<(), String>;

/// What repair did to one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRepair {
    pub segment: PathBuf,
    /// Files holding the bytes taken out, in file order.
    pub set_aside: Vec<PathBuf>,
    /// Offsets whose records are gone, in order.
    pub lost: Vec<Range<u64>>,
    /// Records whose checksum held but that did not decode, with why
    /// (their offsets are also in `lost`).
    pub undecodable: Vec<(u64, String)>,
    /// Bytes of the newest segment's torn tail (a write that never
    /// finished, so never acknowledged), also set aside.
    pub torn_tail: u64,
}

impl SegmentRepair {
    /// One line per finding, for the command's output.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        for f in &self.set_aside {
            out.push(format!("damaged bytes kept in {}", f.display()));
        }
        for (offset, why) in &self.undecodable {
            out.push(format!(
                "offset {offset}: checksum holds but the record does not decode ({why})"
            ));
        }
        for r in &self.lost {
            out.push(format!(
                "lost offsets {} ({} record(s))",
                range_text(r),
                r.end - r.start
            ));
        }
        if self.torn_tail > 0 {
            out.push(format!(
                "torn tail of {} byte(s) (a write that never finished, never acknowledged)",
                self.torn_tail
            ));
        }
        out
    }
}

/// Repairs every segment of the log in `dir` that needs it; returns what
/// was done (empty: the log was fine).
pub fn repair_log(dir: &Path, check: Check<'_>) -> Result<Vec<SegmentRepair>, LogError> {
    let io = |source| LogError::Io {
        dir: dir.to_path_buf(),
        source,
    };
    let ids = segment::list(dir).map_err(io)?;
    let paths: Vec<PathBuf> = ids
        .iter()
        .map(|&id| dir.join(segment::file_name(id)))
        .collect();
    let mut done = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let bytes = std::fs::read(path).map_err(io)?;
        let scanned = segment::scan_bytes(&bytes).map_err(|why| bad_header(path, why))?;
        let next_base = match paths.get(i + 1) {
            Some(next) => Some(segment::scan(next)?.base_seq),
            None => None,
        };
        if let Some(r) = repair_segment(path, &bytes, &scanned, next_base, check)? {
            done.push(r);
        }
    }
    Ok(done)
}

fn bad_header(path: &Path, why: &'static str) -> LogError {
    LogError::Segment(SegmentError::BadHeader {
        path: path.to_path_buf(),
        why,
    })
}

/// The segment rewritten, and what was taken out of it.
struct Rewrite {
    out: Vec<u8>,
    format: Format,
    aside: Vec<Range<u64>>,
    report: SegmentRepair,
}

impl Rewrite {
    fn lose(&mut self, lost: Range<u64>) {
        if lost.is_empty() {
            return;
        }
        segment::encode_lost(
            &mut self.out,
            self.format,
            lost.start,
            lost.end - lost.start,
        );
        self.report.lost.push(lost);
    }
}

fn repair_segment(
    path: &Path,
    bytes: &[u8],
    s: &Scanned,
    next_base: Option<u64>,
    check: Check<'_>,
) -> Result<Option<SegmentRepair>, LogError> {
    // A v1 segment is rewritten in the current format: lost markers need it.
    let format = if s.format.version == segment::VERSION {
        s.format
    } else {
        Format::new()
    };
    let mut w = Rewrite {
        out: segment::encode_header(s.base_seq, format),
        format,
        aside: Vec::new(),
        report: SegmentRepair {
            segment: path.to_path_buf(),
            set_aside: Vec::new(),
            lost: Vec::new(),
            undecodable: Vec::new(),
            torn_tail: 0,
        },
    };
    for piece in &s.pieces {
        match piece {
            Piece::Frame(f) if f.lost => w.lose(f.seq..f.seq + f.count),
            Piece::Frame(f) => {
                let payload = &bytes[f.payload(s.format)];
                match check(payload) {
                    Ok(()) => segment::encode_record(&mut w.out, format, f.seq, payload),
                    Err(why) => {
                        w.aside.push(f.pos..f.end);
                        w.report.undecodable.push((f.seq, why));
                        w.lose(f.seq..f.seq + 1);
                    }
                }
            }
            Piece::Damage(d) => {
                w.aside.push(d.start..d.end);
                // A v1 segment's damage runs to its end: the next segment
                // says exactly where its offsets stop.
                let end = match next_base {
                    Some(next) if s.format.version == segment::VERSION_1 => next,
                    _ => d.lost.end,
                };
                w.lose(d.lost.start..end);
            }
        }
    }
    if s.trailing > 0 {
        w.aside.push(s.valid_len..s.valid_len + s.trailing);
        match next_base {
            // The end of a sealed segment is no torn write.
            Some(next) => w.lose(s.next_seq()..next),
            None => w.report.torn_tail = s.trailing,
        }
    }
    if w.aside.is_empty() {
        return Ok(None);
    }
    write_out(path, bytes, w).map(Some)
}

/// Copies the damaged bytes aside, then replaces the segment: in that order,
/// so a crash in between loses nothing.
fn write_out(path: &Path, bytes: &[u8], w: Rewrite) -> Result<SegmentRepair, LogError> {
    let io = |source| LogError::Io {
        dir: crate::runtime::fs::parent_of(path).to_path_buf(),
        source,
    };
    let mut report = w.report;
    for r in &w.aside {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".damaged-{}-{}", r.start, r.end));
        let aside = PathBuf::from(name);
        write_synced(&aside, &bytes[r.start as usize..r.end as usize]).map_err(io)?;
        report.set_aside.push(aside);
    }
    write_synced(path, &w.out).map_err(io)?;
    Ok(report)
}

#[cfg(test)]
mod tests;
