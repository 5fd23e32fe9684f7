//! `SUBSCRIBE TO <select> [WITH (snapshot = false, emit_interval = '1s')]`:
//! the text form of a subscription and its options.

use std::time::Duration;

use super::super::{parse_duration_micros, QueryError};

#[derive(Debug, Clone, PartialEq)]
pub struct SubscribeRequest {
    pub select: String,
    /// Send the current result first (default); `false` starts with changes.
    pub snapshot: bool,
    /// How often changes are gathered into one update.
    pub emit_interval: Duration,
}

pub const DEFAULT_EMIT_INTERVAL: Duration = Duration::from_millis(100);
const MIN_EMIT_INTERVAL: Duration = Duration::from_millis(10);

impl SubscribeRequest {
    pub fn new(select: impl Into<String>) -> Self {
        Self {
            select: select.into(),
            snapshot: true,
            emit_interval: DEFAULT_EMIT_INTERVAL,
        }
    }
}

fn invalid(msg: impl Into<String>) -> QueryError {
    QueryError::Invalid(msg.into())
}

/// True if `text` looks like a subscription (so a DoExchange command can
/// be told apart from a protobuf message).
pub fn is_subscribe(text: &str) -> bool {
    strip_keywords(text).is_some()
}

fn strip_keywords(text: &str) -> Option<&str> {
    let t = text.trim_start();
    let rest = strip_word(t, "SUBSCRIBE")?;
    strip_word(rest.trim_start(), "TO")
}

fn strip_word<'a>(s: &'a str, word: &str) -> Option<&'a str> {
    let head = s.get(..word.len())?;
    let rest = &s[word.len()..];
    (head.eq_ignore_ascii_case(word) && rest.starts_with(char::is_whitespace)).then_some(rest)
}

pub fn parse(text: &str) -> Result<SubscribeRequest, QueryError> {
    let body = strip_keywords(text)
        .ok_or_else(|| invalid("expected `SUBSCRIBE TO SELECT ...`"))?
        .trim()
        .trim_end_matches(';')
        .trim_end();
    let (select, options) = split_options(body);
    if select.is_empty() {
        return Err(invalid("SUBSCRIBE TO needs a SELECT"));
    }
    let mut req = SubscribeRequest::new(select);
    if let Some(opts) = options {
        apply_options(&mut req, opts)?;
    }
    Ok(req)
}

/// Splits a trailing `WITH (...)` off the SELECT. Only a `WITH` directly
/// followed by `(` counts, which a CTE (`WITH name AS (...)`) never is.
fn split_options(body: &str) -> (&str, Option<&str>) {
    if !body.ends_with(')') {
        return (body, None);
    }
    let bytes = body.as_bytes();
    let mut depth = 0i32;
    for i in (0..bytes.len()).rev() {
        match bytes[i] {
            b')' => depth += 1,
            b'(' => {
                depth -= 1;
                if depth == 0 {
                    let before = body[..i].trim_end();
                    let is_with = before.len() >= 4
                        && before[before.len() - 4..].eq_ignore_ascii_case("WITH")
                        && before[..before.len() - 4]
                            .ends_with(|c: char| c.is_whitespace() || c == ')');
                    if is_with {
                        let select = before[..before.len() - 4].trim_end();
                        return (select, Some(&body[i + 1..body.len() - 1]));
                    }
                    return (body, None);
                }
            }
            _ => {}
        }
    }
    (body, None)
}

fn apply_options(req: &mut SubscribeRequest, opts: &str) -> Result<(), QueryError> {
    for item in opts.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| invalid(format!("SUBSCRIBE option {item:?} must be `name = value`")))?;
        let key = k.trim().to_ascii_lowercase();
        let value = v.trim().trim_matches('\'').trim();
        match key.as_str() {
            "snapshot" => {
                req.snapshot = match value.to_ascii_lowercase().as_str() {
                    "true" | "on" => true,
                    "false" | "off" => false,
                    _ => {
                        return Err(invalid(format!(
                            "snapshot must be true or false, not {value:?}"
                        )))
                    }
                }
            }
            "emit_interval" | "interval" => {
                let us = parse_duration_micros(value)
                    .filter(|us| *us > 0)
                    .ok_or_else(|| {
                        invalid(format!(
                            "emit_interval {value:?} is not a duration like '100ms'"
                        ))
                    })?;
                req.emit_interval = Duration::from_micros(us as u64).max(MIN_EMIT_INTERVAL);
            }
            other => {
                return Err(invalid(format!(
                    "unknown SUBSCRIBE option {other:?} (known: snapshot, emit_interval)"
                )))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_text_and_options() {
        let r = parse("subscribe to SELECT avg(value) FROM metrics;").unwrap();
        assert_eq!(r, SubscribeRequest::new("SELECT avg(value) FROM metrics"));
        let r = parse(
            "SUBSCRIBE TO SELECT * FROM metrics WHERE tags['h'] IN ('a') WITH (snapshot = false, emit_interval = '1s')",
        )
        .unwrap();
        assert_eq!(r.select, "SELECT * FROM metrics WHERE tags['h'] IN ('a')");
        assert!(!r.snapshot);
        assert_eq!(r.emit_interval, Duration::from_secs(1));
        // A CTE is part of the SELECT, not options.
        let cte = "SUBSCRIBE TO WITH x AS (SELECT value FROM metrics) SELECT * FROM x";
        assert_eq!(
            parse(cte).unwrap().select,
            "WITH x AS (SELECT value FROM metrics) SELECT * FROM x"
        );
    }

    #[test]
    fn rejects_bad_text() {
        for bad in [
            "SELECT 1",
            "SUBSCRIBE SELECT 1",
            "SUBSCRIBE TO ",
            "SUBSCRIBE TO SELECT 1 WITH (snapshot = maybe)",
            "SUBSCRIBE TO SELECT 1 WITH (speed = 3)",
            "SUBSCRIBE TO SELECT 1 WITH (emit_interval = 'soon')",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(is_subscribe("  Subscribe\nto select 1"));
        assert!(!is_subscribe("SUBSCRIBED TO x"));
    }
}
