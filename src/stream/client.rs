//! A reader of a remote Durable Streams stream over HTTP: catch-up reads
//! and long-poll tailing from an offset the caller tracks. It never skips or
//! repeats: each [`Poll`] says exactly which offset comes next, and the
//! caller decides when that position is durable (see `ingest::consumer`).
//!
//! Credentials ride along but are never shown: a [`RemoteStream`] names
//! itself by its URL without userinfo, and that name is all that errors,
//! logs, `status` and persisted checkpoints ever see.

use std::time::Duration;

/// The result of one read.
#[derive(Debug, PartialEq)]
pub enum Poll {
    /// Data from the requested offset; continue at `next`.
    Data { body: Vec<u8>, next: String },
    /// Nothing new before the long-poll timed out; `next` is the tail.
    Idle { next: String },
    /// The stream is closed and everything has been read.
    Closed { next: String },
}

/// A remote stream to follow and how to authenticate to it: the URL's
/// `user:password` (sent as HTTP Basic) or a bearer token, never both.
#[derive(Clone)]
pub struct RemoteStream {
    /// As given, userinfo included: only requests use it.
    url: String,
    /// The URL without userinfo: what everything else sees.
    name: String,
    token: Option<String>,
}

impl std::fmt::Debug for RemoteStream {
    // Never print the credentials themselves.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RemoteStream({}, credentials: {})",
            self.name,
            self.credentials()
        )
    }
}

/// Why a remote stream cannot be followed as configured. The messages
/// never repeat the URL or the token: either may hold a secret.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RemoteError {
    #[error("the source URL is not valid: {0}")]
    Url(String),
    #[error("the source URL must be http:// or https://, not {0}://")]
    Scheme(String),
    #[error("the source token is empty")]
    EmptyToken,
    #[error("the source token holds characters an HTTP header cannot carry")]
    TokenNotAHeader,
    #[error("the source URL carries user:password and a source token is set too: give credentials one way")]
    TwoCredentials,
}

impl RemoteStream {
    /// Checks `url` and `token` (trimmed) before anything is sent.
    pub fn new(url: &str, token: Option<&str>) -> Result<Self, RemoteError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| RemoteError::Url(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(RemoteError::Scheme(parsed.scheme().to_string()));
        }
        let token = token.map(str::trim).map(str::to_string);
        match token.as_deref() {
            Some("") => return Err(RemoteError::EmptyToken),
            Some(t) if reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")).is_err() => {
                return Err(RemoteError::TokenNotAHeader)
            }
            _ => {}
        }
        let has_userinfo = !parsed.username().is_empty() || parsed.password().is_some();
        if has_userinfo && token.is_some() {
            return Err(RemoteError::TwoCredentials);
        }
        let name = if has_userinfo {
            let mut bare = parsed;
            // Infallible for http(s) URLs, which always have a host.
            let _ = bare.set_username("");
            let _ = bare.set_password(None);
            bare.to_string()
        } else {
            // Unchanged, not re-serialised: it keys the checkpoints that
            // earlier runs persisted.
            url.to_string()
        };
        Ok(Self {
            url: url.to_string(),
            name,
            token,
        })
    }

    /// The URL without credentials: safe to log, show and persist.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name earlier versions persisted checkpoints under (the URL as
    /// given), when it differs from [`RemoteStream::name`].
    pub fn legacy_name(&self) -> Option<&str> {
        (self.url != self.name).then_some(&self.url)
    }

    /// Which credentials are sent, in words safe to log.
    pub fn credentials(&self) -> &'static str {
        match (&self.token, self.has_userinfo()) {
            (Some(_), _) => "bearer token",
            (None, true) => "user:password from the URL",
            (None, false) => "none",
        }
    }

    fn has_userinfo(&self) -> bool {
        self.url != self.name
    }

    /// What a 401 or 403 means for the credentials this stream sends.
    fn refusal_hint(&self) -> &'static str {
        match (&self.token, self.has_userinfo()) {
            (Some(_), _) => "the source token is not accepted",
            (None, true) => "the user:password in the source URL are not accepted",
            (None, false) => {
                "no credentials were sent: set --source-token (or STREAMDB_SOURCE_TOKEN)"
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{url}: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("{url}: HTTP {status}: {hint}: {body}")]
    Refused {
        url: String,
        status: u16,
        hint: &'static str,
        body: String,
    },
    #[error("{url}: stream not found (404)")]
    NotFound { url: String },
    #[error("{url}: offset {offset} is no longer retained by the source (410)")]
    Gone { url: String, offset: String },
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url}: response has no Stream-Next-Offset header")]
    NoOffset { url: String },
}

impl ClientError {
    /// Worth retrying: the network or the server may recover, and a stream
    /// that is missing may yet be created (a follower started before its
    /// source). An offset that fell out of retention will not come back.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Http { .. } | ClientError::NotFound { .. } => true,
            ClientError::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

pub struct StreamReader {
    http: reqwest::Client,
    remote: RemoteStream,
    /// The last `Stream-Cursor` the server sent, echoed on the next live
    /// read as the protocol requires (it keeps CDN caches from serving a
    /// stale long-poll answer).
    cursor: std::sync::Mutex<Option<String>>,
}

impl StreamReader {
    /// `remote` is the stream's full URL, e.g.
    /// `http://host:8080/v1/stream/metrics`, and its credentials.
    pub fn new(remote: RemoteStream, long_poll: Duration) -> Self {
        let http = reqwest::Client::builder()
            // The server answers a long-poll within its own timeout; allow
            // generously more before giving up on the connection.
            .timeout(long_poll + Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client builds");
        Self {
            http,
            remote,
            cursor: Default::default(),
        }
    }

    /// The stream's URL without credentials.
    pub fn url(&self) -> &str {
        self.remote.name()
    }

    /// Reads from `offset` (`-1` for the beginning): returns what is there
    /// at once, or waits (long-poll) for the next append.
    pub async fn poll(&self, offset: &str) -> Result<Poll, ClientError> {
        // reqwest's errors name the URL they failed on; ours names it
        // already, without credentials.
        let http_err = |source: reqwest::Error| ClientError::Http {
            url: self.url().to_string(),
            source: source.without_url(),
        };
        let mut query = vec![("offset", offset.to_string()), ("live", "long-poll".into())];
        if let Some(c) = self.cursor.lock().ok().and_then(|c| c.clone()) {
            query.push(("cursor", c));
        }
        let mut request = self.http.get(&self.remote.url).query(&query);
        if let Some(token) = &self.remote.token {
            request = request.bearer_auth(token);
        }
        let resp = request.send().await.map_err(http_err)?;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let next = header("stream-next-offset");
        if let Some(c) = header("stream-cursor") {
            if let Ok(mut slot) = self.cursor.lock() {
                *slot = Some(c);
            }
        }
        let closed = header("stream-closed").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let up_to_date =
            header("stream-up-to-date").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        match status {
            200 | 204 => {
                let next = next.ok_or_else(|| ClientError::NoOffset {
                    url: self.url().to_string(),
                })?;
                let body = resp.bytes().await.map_err(http_err)?.to_vec();
                let empty = body.is_empty() || body.as_slice() == b"[]";
                Ok(match (empty, closed && up_to_date) {
                    (false, _) => Poll::Data { body, next },
                    (true, true) => Poll::Closed { next },
                    (true, false) => Poll::Idle { next },
                })
            }
            401 | 403 => Err(ClientError::Refused {
                url: self.url().to_string(),
                status,
                hint: self.remote.refusal_hint(),
                body: resp
                    .text()
                    .await
                    .unwrap_or_default()
                    .chars()
                    .take(200)
                    .collect(),
            }),
            404 => Err(ClientError::NotFound {
                url: self.url().to_string(),
            }),
            410 => Err(ClientError::Gone {
                url: self.url().to_string(),
                offset: offset.to_string(),
            }),
            _ => Err(ClientError::Status {
                url: self.url().to_string(),
                status,
                body: resp.text().await.unwrap_or_default(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_show_in_the_name() {
        let r = RemoteStream::new("http://reader:pa55@host:8080/v1/stream/metrics", None).unwrap();
        assert_eq!(r.name(), "http://host:8080/v1/stream/metrics");
        assert_eq!(
            r.legacy_name(),
            Some("http://reader:pa55@host:8080/v1/stream/metrics")
        );
        assert!(!format!("{r:?}").contains("pa55"));
        let r = RemoteStream::new("http://reader@host/v1/stream/m", None).unwrap();
        assert_eq!(r.name(), "http://host/v1/stream/m");
        // Without userinfo the name is the URL exactly as given.
        let r = RemoteStream::new("http://host:8080/v1/stream/metrics", Some(" t0k ")).unwrap();
        assert_eq!(
            (r.name(), r.legacy_name()),
            ("http://host:8080/v1/stream/metrics", None)
        );
        assert_eq!(r.token.as_deref(), Some("t0k"));
        assert!(!format!("{r:?}").contains("t0k"));
    }

    #[test]
    fn bad_sources_are_refused_without_echoing_them() {
        let cases = [
            ("not a url", None, "not valid"),
            ("ftp://u:secret@host/x", None, "ftp://"),
            ("http://host/x", Some("  "), "empty"),
            ("http://host/x", Some("a\nsecret"), "header"),
            ("http://u:secret@host/x", Some("secret"), "one way"),
        ];
        for (url, token, needle) in cases {
            let e = RemoteStream::new(url, token).unwrap_err().to_string();
            assert!(e.contains(needle) && !e.contains("secret"), "{url}: {e}");
        }
    }
}
