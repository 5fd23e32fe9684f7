//! Stream offsets: the sequence number of a record within its stream, and
//! a reader's [`Position`], which may fall inside a record.
//!
//! An offset names the position *before* a record: reading "from" offset `n`
//! starts with record `n`, and the "next offset" after reading record `n` is
//! `n + 1`.
//!
//! The text form is `RRRRRRRRRRRRRRRR_SSSSSSSSSSSSSSSS`: the record number
//! and a position inside that record, each zero-padded to 16 digits. Offsets
//! therefore sort lexicographically in numeric order and never contain
//! `, & = ? /` (what the Durable Streams protocol asks of them), and it is
//! the shape other Durable Streams servers use (clients and tests write
//! `0000000000000000_0000000000000000` for "the beginning"). An [`Offset`]
//! is a record boundary (second half zero); a [`Position`] also counts
//! units inside a record, which is how a read of the `metrics` stream stops
//! in the middle of one large DoPut batch.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(pub u64);

impl Offset {
    pub const ZERO: Offset = Offset(0);

    pub fn next(self) -> Offset {
        Offset(self.0 + 1)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016}_{:016}", self.0, 0)
    }
}

impl serde::Serialize for Offset {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error(
    "invalid offset {0:?}: expected 16 digits, `_`, 16 digits (as returned in Stream-Next-Offset)"
)]
pub struct OffsetParseError(pub String);

impl FromStr for Offset {
    type Err = OffsetParseError;

    /// A record boundary: a position inside a record is not an `Offset`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse::<Position>()? {
            p if p.is_boundary() => Ok(p.record),
            _ => Err(OffsetParseError(s.to_string())),
        }
    }
}

/// Where a reader is: `within` units (points, for the `metrics` stream)
/// into record `record`. Orders like its text form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    pub record: Offset,
    pub within: u64,
}

impl Position {
    pub fn is_boundary(self) -> bool {
        self.within == 0
    }
}

impl From<Offset> for Position {
    fn from(record: Offset) -> Self {
        Position { record, within: 0 }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016}_{:016}", self.record.0, self.within)
    }
}

impl FromStr for Position {
    type Err = OffsetParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || OffsetParseError(s.to_string());
        let (record, within) = s.split_once('_').ok_or_else(err)?;
        let digits = |p: &str| p.len() == 16 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(record) || !digits(within) {
            return Err(err());
        }
        Ok(Position {
            record: Offset(record.parse().map_err(|_| err())?),
            within: within.parse().map_err(|_| err())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_sort_like_their_text_and_parse_back() {
        let ps = [
            Position::from(Offset(9)),
            Position {
                record: Offset(9),
                within: 12,
            },
            Position::from(Offset(10)),
        ];
        for w in ps.windows(2) {
            assert!(w[0] < w[1] && w[0].to_string() < w[1].to_string());
        }
        for p in ps {
            assert_eq!(p.to_string().parse::<Position>(), Ok(p));
        }
        assert_eq!(ps[0].to_string(), Offset(9).to_string());
        assert!("0000000000000009_000000000000001"
            .parse::<Position>()
            .is_err());
        assert!("0000000000000009-0000000000000001"
            .parse::<Position>()
            .is_err());
    }

    #[test]
    fn text_form_sorts_numerically() {
        let a = Offset(9).to_string();
        let b = Offset(10).to_string();
        assert_eq!(a, "0000000000000009_0000000000000000");
        assert!(a < b);
        assert_eq!(b.parse::<Offset>(), Ok(Offset(10)));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "-1",
            "now",
            "12a",
            "1_2",
            "00000000000000000009",
            "0000000000000009_0000000000000001",
            "0000000000000009_000000000000000",
            "+000000000000009_0000000000000000",
            "0000000000000009,0000000000000000",
        ] {
            assert!(bad.parse::<Offset>().is_err(), "{bad}");
        }
    }
}
