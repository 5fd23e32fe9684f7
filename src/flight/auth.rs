//! Bearer tokens: the set the server accepts and what each may do (its
//! [`Role`]), constant-time checks, and the Flight handshake that trades
//! HTTP Basic credentials (any user name, a token as the password; what
//! ADBC sends for `username`/`password`) for a bearer token.

use std::sync::Arc;

use base64::Engine as _;
use subtle::ConstantTimeEq;

/// What a caller may do. Tokens from `--auth-token` read and write;
/// tokens from `--read-only-token` may query and subscribe but neither
/// write nor delete. With authentication off every caller is `ReadWrite`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    ReadWrite,
    ReadOnly,
}

/// What a read-only caller is told when it tries to write or delete.
pub const READ_ONLY_REFUSAL: &str = "this token is read-only (--read-only-token): it may query, subscribe and read streams, not write, create or delete; use a token from --auth-token";

/// Refuses a write or delete from a read-only caller (PERMISSION_DENIED).
/// The role is what the gate in front of the port put in the request's
/// extensions; a request that never passed the gate (in-process tests)
/// carries none and is treated as read-write.
pub fn require_write<T>(request: &tonic::Request<T>) -> Result<(), tonic::Status> {
    match request.extensions().get::<Role>() {
        Some(Role::ReadOnly) => Err(tonic::Status::permission_denied(READ_ONLY_REFUSAL)),
        _ => Ok(()),
    }
}

/// The accepted tokens and their roles; empty means authentication is off.
#[derive(Clone, Default)]
pub struct Tokens(Arc<Vec<(Vec<u8>, Role)>>);

impl std::fmt::Debug for Tokens {
    // Never print the tokens themselves.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured)", self.0.len())
    }
}

impl Tokens {
    /// Read-write tokens only.
    pub fn new(tokens: impl IntoIterator<Item = String>) -> Self {
        Self::with_read_only(tokens, [])
    }

    /// Read-write `tokens` and `read_only` ones (a token in both lists is
    /// refused at startup, see the CLI; here read-write wins).
    pub fn with_read_only(
        tokens: impl IntoIterator<Item = String>,
        read_only: impl IntoIterator<Item = String>,
    ) -> Self {
        let tagged = |role| move |t: String| (t.trim().as_bytes().to_vec(), role);
        Self(Arc::new(
            tokens
                .into_iter()
                .map(tagged(Role::ReadWrite))
                .chain(read_only.into_iter().map(tagged(Role::ReadOnly)))
                .filter(|(t, _)| !t.is_empty())
                .collect(),
        ))
    }

    pub fn enabled(&self) -> bool {
        !self.0.is_empty()
    }

    /// The role of `candidate`, if accepted. Compares against every token
    /// without an early exit, so timing does not reveal how much of a
    /// guess was right (nor which token matched).
    pub fn role_of(&self, candidate: &[u8]) -> Option<Role> {
        let mut write = subtle::Choice::from(0);
        let mut read = subtle::Choice::from(0);
        for (t, role) in self.0.iter() {
            let eq = t.as_slice().ct_eq(candidate);
            match role {
                Role::ReadWrite => write |= eq,
                Role::ReadOnly => read |= eq,
            }
        }
        if bool::from(write) {
            Some(Role::ReadWrite)
        } else if bool::from(read) {
            Some(Role::ReadOnly)
        } else {
            None
        }
    }

    pub fn accepts(&self, candidate: &[u8]) -> bool {
        self.role_of(candidate).is_some()
    }

    /// Checks an `Authorization` header value: `Bearer <token>`, the
    /// scheme in any case: the token's role. The error says which of the
    /// three ways it failed.
    pub fn check_header(&self, value: Option<&[u8]>) -> Result<Role, AuthError> {
        let value = value.ok_or(AuthError::Missing)?;
        let token = bearer(value).ok_or(AuthError::NotBearer)?;
        self.role_of(token).ok_or(AuthError::Rejected)
    }

    /// The Flight Handshake's check: Basic (any user name, a token as the
    /// password) or a bearer token. Returns the accepted token.
    pub fn check_handshake(&self, value: Option<&[u8]>) -> Result<Vec<u8>, AuthError> {
        let value = value.ok_or(AuthError::Missing)?;
        let token = basic_password(value)
            .or_else(|| bearer(value).map(<[u8]>::to_vec))
            .ok_or(AuthError::NotCredentials)?;
        if self.accepts(&token) {
            Ok(token)
        } else {
            Err(AuthError::Rejected)
        }
    }
}

/// Why a call's credentials were refused. The messages never repeat what
/// was sent: it may be a secret that is merely misplaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("authentication required: send `authorization: Bearer <token>`")]
    Missing,
    #[error("malformed authorization header: expected `Bearer <token>` (Basic credentials are taken only by the Flight Handshake)")]
    NotBearer,
    #[error(
        "malformed authorization header: expected `Basic base64(user:token)` or `Bearer <token>`"
    )]
    NotCredentials,
    #[error("invalid token: the token (or Basic password) is not accepted by this server")]
    Rejected,
}

/// The token of `Bearer <token>` (scheme case-insensitive).
pub fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = split_scheme(value)?;
    scheme.eq_ignore_ascii_case(b"bearer").then_some(rest)
}

/// Base64 as Basic credentials arrive: padded (RFC 7617, pyarrow) or not
/// (the Go Flight client behind ADBC encodes without padding).
const BASIC_BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// The password of `Basic base64(user:password)`.
pub fn basic_password(value: &[u8]) -> Option<Vec<u8>> {
    let (scheme, rest) = split_scheme(value)?;
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = BASIC_BASE64.decode(rest).ok()?;
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
    fn read_only_tokens_have_their_role() {
        let t = Tokens::with_read_only(["rw".to_string()], ["ro".to_string(), "both".to_string()]);
        assert_eq!(t.check_header(Some(b"Bearer rw")), Ok(Role::ReadWrite));
        assert_eq!(t.check_header(Some(b"Bearer ro")), Ok(Role::ReadOnly));
        assert_eq!(t.check_header(Some(b"Bearer r")), Err(AuthError::Rejected));
        assert_eq!(
            t.check_header(Some(b"Bearer rox")),
            Err(AuthError::Rejected)
        );
        // The handshake hands a read-only password back as itself: the
        // bearer it yields is still read-only.
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode("me:ro")
        );
        let token = t.check_handshake(Some(basic.as_bytes())).unwrap();
        assert_eq!(t.role_of(&token), Some(Role::ReadOnly));
        let only_read = Tokens::with_read_only([], ["ro".to_string()]);
        assert!(
            only_read.enabled(),
            "read-only tokens alone still turn authentication on"
        );
        let both = Tokens::with_read_only(["x".to_string()], ["x".to_string()]);
        assert_eq!(both.role_of(b"x"), Some(Role::ReadWrite));
    }

    #[test]
    fn checks_bearer_and_basic() {
        let t = Tokens::new(["s3cret".to_string(), "other".to_string()]);
        assert!(t.enabled());
        assert_eq!(t.check_header(Some(b"Bearer s3cret")), Ok(Role::ReadWrite));
        assert_eq!(t.check_header(Some(b"bearer other")), Ok(Role::ReadWrite));
        assert_eq!(t.check_header(Some(b"BEARER  other ")), Ok(Role::ReadWrite));
        let rejected = Err(AuthError::Rejected);
        assert_eq!(t.check_header(Some(b"Bearer s3cre")), rejected);
        assert_eq!(t.check_header(Some(b"Bearer s3crett")), rejected);
        for malformed in [&b"Basic s3cret"[..], b"Bearer", b"Bearer ", b"s3cret", b""] {
            assert_eq!(t.check_header(Some(malformed)), Err(AuthError::NotBearer));
        }
        assert_eq!(t.check_header(None), Err(AuthError::Missing));
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

    /// Issue 18.2: the Go Flight client (ADBC) sends Basic credentials
    /// base64-encoded without padding, which a strict decoder refuses
    /// whenever `len(user:password)` is not a multiple of 3.
    #[test]
    fn basic_credentials_without_base64_padding() {
        use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
        let text = "abcdefghijklmnopqrstuvwxyz0123456789-_.~";
        let mut failures = Vec::new();
        for user_len in 1..=40 {
            for password_len in 1..=40 {
                let (user, password) = (&text[..user_len], &text[40 - password_len..]);
                let creds = format!("{user}:{password}");
                for encoded in [STANDARD.encode(&creds), STANDARD_NO_PAD.encode(&creds)] {
                    let header = format!("Basic {encoded}");
                    if basic_password(header.as_bytes()).as_deref() != Some(password.as_bytes()) {
                        failures.push(header);
                    }
                }
            }
        }
        assert!(
            failures.is_empty(),
            "{} refused, e.g. {:?}",
            failures.len(),
            &failures[..3.min(failures.len())]
        );
    }
}
