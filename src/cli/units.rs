//! Human units for flags and output: `10s`, `64MiB`, `1.2 M`.

use std::time::Duration;

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    // A bare zero needs no unit (`--compaction-interval 0` turns it off).
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    crate::query::parse_duration_micros(s)
        .filter(|us| *us >= 0)
        .map(|us| Duration::from_micros(us as u64))
        .ok_or_else(|| format!("invalid duration {s:?}: use e.g. 500ms, 10s, 5m, 1h"))
}

pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: use e.g. 64MiB, 1GiB, 500000"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(format!(
                "invalid size unit in {s:?}: use B, KiB, MiB, GiB (or KB, MB, GB)"
            ))
        }
    };
    Ok((n * mult) as usize)
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// Whole seconds in the largest unit that divides them: `30d`, `90m`, `45s`.
pub fn duration(secs: u64) -> String {
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs >= size && secs.is_multiple_of(size) {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

pub fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_units() {
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("500000"), Ok(500_000));
        assert!(parse_bytes("12 parsecs").is_err());
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(
            parse_duration("5").is_err(),
            "a unit is needed for anything else"
        );
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(duration(30 * 86_400), "30d");
        assert_eq!(duration(5400), "90m");
        assert_eq!(duration(61), "61s");
    }
}
