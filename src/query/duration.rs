//! Duration strings as users write them: `5m`, `10s`, `1h`, `500ms`,
//! `2 days`, `1.5h`, `1h30m`.

/// Parses a duration into microseconds; `None` if it is not one.
pub fn parse_duration_micros(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = rest[num_len..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = unit_micros(&rest[..unit_len].to_ascii_lowercase())?;
        total += n * unit;
        rest = rest[unit_len..].trim_start();
    }
    (total.is_finite() && total.abs() < 9.2e18).then_some(total.round() as i64)
}

fn unit_micros(u: &str) -> Option<f64> {
    Some(match u {
        "us" | "µs" | "usec" | "microsecond" | "microseconds" => 1.0,
        "ms" | "msec" | "millisecond" | "milliseconds" => 1e3,
        "s" | "sec" | "secs" | "second" | "seconds" => 1e6,
        "m" | "min" | "mins" | "minute" | "minutes" => 60e6,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600e6,
        "d" | "day" | "days" => 86_400e6,
        "w" | "week" | "weeks" => 604_800e6,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse_duration_micros("5m"), Some(300_000_000));
        assert_eq!(parse_duration_micros("10 seconds"), Some(10_000_000));
        assert_eq!(parse_duration_micros("1h30m"), Some(5_400_000_000));
        assert_eq!(parse_duration_micros("1.5h"), Some(5_400_000_000));
        assert_eq!(parse_duration_micros("500ms"), Some(500_000));
        assert_eq!(parse_duration_micros("1 DAY"), Some(86_400_000_000));
        for bad in ["", "5", "m", "5 parsecs", "1h 2", "-5m", "five minutes"] {
            assert_eq!(parse_duration_micros(bad), None, "{bad}");
        }
    }
}
