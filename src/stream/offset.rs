//! Stream offsets: the sequence number of a record within its stream.
//!
//! The text form is the number zero-padded to 20 digits, so offsets sort
//! lexicographically in numeric order and never contain `, & = ? /`
//! (what the Durable Streams protocol asks of them). An offset names the
//! position *before* a record: reading "from" offset `n` starts with record
//! `n`, and the "next offset" after reading record `n` is `n + 1`.

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
        write!(f, "{:020}", self.0)
    }
}

impl serde::Serialize for Offset {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid offset {0:?}: expected up to 20 decimal digits")]
pub struct OffsetParseError(pub String);

impl FromStr for Offset {
    type Err = OffsetParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
        if !ok {
            return Err(OffsetParseError(s.to_string()));
        }
        s.parse::<u64>()
            .map(Offset)
            .map_err(|_| OffsetParseError(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_sorts_numerically() {
        let a = Offset(9).to_string();
        let b = Offset(10).to_string();
        assert_eq!(a, "00000000000000000009");
        assert!(a < b);
        assert_eq!(b.parse::<Offset>(), Ok(Offset(10)));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "-1", "now", "12a", "1_2", "999999999999999999999", "+5"] {
            assert!(bad.parse::<Offset>().is_err(), "{bad}");
        }
    }
}
