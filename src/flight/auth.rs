//! Bearer tokens: the set the server accepts, constant-time checks, and
//! the Flight handshake that trades HTTP Basic credentials (any user name,
//! a token as the password; what ADBC sends for `username`/`password`) for
//! a bearer token.

use std::sync::Arc;

use base64::Engine as _;
use subtle::ConstantTimeEq;

/// The accepted tokens; empty means authentication is off.
#[derive(Clone, Default)]
pub struct Tokens(Arc<Vec<Vec<u8>>>);

impl std::fmt::Debug for Tokens {
    // Never print the tokens themselves.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured)", self.0.len())
    }
}

impl Tokens {
    pub fn new(tokens: impl IntoIterator<Item = String>) -> Self {
        Self(Arc::new(
            tokens
                .into_iter()
                .map(|t| t.trim().as_bytes().to_vec())
                .filter(|t| !t.is_empty())
                .collect(),
        ))
    }

    pub fn enabled(&self) -> bool {
        !self.0.is_empty()
    }

    /// Compares against every token without an early exit, so timing does
    /// not reveal how much of a guess was right (nor which token matched).
    pub fn accepts(&self, candidate: &[u8]) -> bool {
        let mut ok = subtle::Choice::from(0);
        for t in self.0.iter() {
            ok |= t.as_slice().ct_eq(candidate);
        }
        ok.into()
    }

    /// Checks an `Authorization` header value: `Bearer <token>`.
    pub fn accepts_header(&self, value: Option<&[u8]>) -> bool {
        value.and_then(bearer).is_some_and(|t| self.accepts(t))
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive).
pub fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = split_scheme(value)?;
    scheme.eq_ignore_ascii_case(b"bearer").then_some(rest)
}

/// The password of `Basic base64(user:password)`.
pub fn basic_password(value: &[u8]) -> Option<Vec<u8>> {
    let (scheme, rest) = split_scheme(value)?;
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest)
        .ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    Some(decoded[colon + 1..].to_vec())
}

fn split_scheme(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let space = value.iter().position(|b| *b == b' ')?;
    let rest = value[space + 1..].trim_ascii();
    (!rest.is_empty()).then_some((&value[..space], rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_bearer_and_basic() {
        let t = Tokens::new(["s3cret".to_string(), "other".to_string()]);
        assert!(t.enabled());
        assert!(t.accepts_header(Some(b"Bearer s3cret")));
        assert!(t.accepts_header(Some(b"bearer other")));
        assert!(!t.accepts_header(Some(b"Bearer s3cre")));
        assert!(!t.accepts_header(Some(b"Basic s3cret")));
        assert!(!t.accepts_header(None));
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("anyone:s3cret")
        );
        assert_eq!(
            basic_password(basic.as_bytes()).as_deref(),
            Some(b"s3cret".as_slice())
        );
        assert!(!Tokens::default().enabled());
        assert!(!format!("{t:?}").contains("s3cret"));
    }
}
