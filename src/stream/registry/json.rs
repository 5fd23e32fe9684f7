//! JSON mode (§9.1 of the protocol): every append is validated as JSON and
//! a top-level array is flattened one level into separate messages.
//! Messages are kept as the client wrote them (no re-serialisation).

use serde_json::value::RawValue;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum JsonError {
    #[error("invalid JSON: {0}")]
    Invalid(String),
    #[error("empty JSON array: an append must carry at least one message")]
    EmptyArray,
}

/// Splits a body into messages. `[]` is an error unless `allow_empty`
/// (stream creation may start empty; an append of nothing is a client bug).
pub fn split(body: &[u8], allow_empty: bool) -> Result<Vec<Vec<u8>>, JsonError> {
    let text =
        std::str::from_utf8(body).map_err(|e| JsonError::Invalid(format!("not UTF-8: {e}")))?;
    let value: &RawValue =
        serde_json::from_str(text).map_err(|e| JsonError::Invalid(e.to_string()))?;
    let raw = value.get();
    if !raw.starts_with('[') {
        return Ok(vec![raw.as_bytes().to_vec()]);
    }
    let items: Vec<&RawValue> =
        serde_json::from_str(raw).map_err(|e| JsonError::Invalid(e.to_string()))?;
    if items.is_empty() && !allow_empty {
        return Err(JsonError::EmptyArray);
    }
    Ok(items
        .into_iter()
        .map(|m| m.get().as_bytes().to_vec())
        .collect())
}

/// Renders messages as one JSON array.
pub fn render<'a>(messages: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = vec![b'['];
    for (i, m) in messages.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(m);
    }
    out.push(b']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(body: &str) -> Vec<String> {
        split(body.as_bytes(), false)
            .unwrap()
            .into_iter()
            .map(|m| String::from_utf8(m).unwrap())
            .collect()
    }

    #[test]
    fn flattens_exactly_one_level() {
        assert_eq!(
            texts(r#"{"event": "created"}"#),
            [r#"{"event": "created"}"#]
        );
        assert_eq!(texts(r#"[{"a":1}, {"b":2}]"#), [r#"{"a":1}"#, r#"{"b":2}"#]);
        assert_eq!(texts("[[1,2], [3,4]]"), ["[1,2]", "[3,4]"]);
        assert_eq!(texts("[[[1,2,3]]]"), ["[[1,2,3]]"]);
        assert_eq!(texts(" 42 "), ["42"]);
    }

    #[test]
    fn rejects_invalid_and_empty() {
        assert!(matches!(
            split(b"{ invalid json }", false),
            Err(JsonError::Invalid(_))
        ));
        assert!(matches!(split(b"", false), Err(JsonError::Invalid(_))));
        assert_eq!(split(b" [ ] ", false), Err(JsonError::EmptyArray));
        assert_eq!(split(b"[]", true), Ok(vec![]));
    }

    #[test]
    fn renders_an_array() {
        let r = render([b"1".as_slice(), br#"{"a":[2]}"#]);
        assert_eq!(r, br#"[1,{"a":[2]}]"#);
        assert_eq!(render([]), b"[]");
    }
}
