//! Time as the engine keeps it: `i64` Unix microseconds, UTC.

use chrono::{DateTime, SecondsFormat, Utc};

/// RFC 3339 text of a Unix-micros instant, e.g. `2024-01-15T00:00:00Z`.
pub fn format_micros(us: i64) -> String {
    match DateTime::<Utc>::from_timestamp_micros(us) {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        None => us.to_string(),
    }
}

/// Parses an RFC 3339 timestamp (`2024-01-15T00:00:00Z`, offsets allowed)
/// into Unix micros; `None` if it is not one.
pub fn parse_iso_micros(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let us = parse_iso_micros("2024-01-15T00:00:01.5Z").unwrap();
        assert_eq!(us, 1_705_276_801_500_000);
        assert_eq!(format_micros(us), "2024-01-15T00:00:01.500Z");
        assert_eq!(
            parse_iso_micros("2024-01-15T01:00:00+01:00"),
            Some(1_705_276_800_000_000)
        );
        assert_eq!(parse_iso_micros("yesterday"), None);
    }
}
