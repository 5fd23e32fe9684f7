//! A reader of a remote Durable Streams stream over HTTP: catch-up reads
//! and long-poll tailing from an offset the caller tracks. It never skips or
//! repeats: each [`Poll`] says exactly which offset comes next, and the
//! caller decides when that position is durable (see `ingest::consumer`).

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

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{url}: {source}")]
    Http { url: String, source: reqwest::Error },
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
    url: String,
    /// The last `Stream-Cursor` the server sent, echoed on the next live
    /// read as the protocol requires (it keeps CDN caches from serving a
    /// stale long-poll answer).
    cursor: std::sync::Mutex<Option<String>>,
}

impl StreamReader {
    /// `url` is the stream's full URL, e.g. `http://host:8080/v1/stream/metrics`.
    pub fn new(url: impl Into<String>, long_poll: Duration) -> Self {
        let http = reqwest::Client::builder()
            // The server answers a long-poll within its own timeout; allow
            // generously more before giving up on the connection.
            .timeout(long_poll + Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client builds");
        Self {
            http,
            url: url.into(),
            cursor: Default::default(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Reads from `offset` (`-1` for the beginning): returns what is there
    /// at once, or waits (long-poll) for the next append.
    pub async fn poll(&self, offset: &str) -> Result<Poll, ClientError> {
        let http_err = |source| ClientError::Http {
            url: self.url.clone(),
            source,
        };
        let mut query = vec![("offset", offset.to_string()), ("live", "long-poll".into())];
        if let Some(c) = self.cursor.lock().ok().and_then(|c| c.clone()) {
            query.push(("cursor", c));
        }
        let resp = self
            .http
            .get(&self.url)
            .query(&query)
            .send()
            .await
            .map_err(http_err)?;
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
                    url: self.url.clone(),
                })?;
                let body = resp.bytes().await.map_err(http_err)?.to_vec();
                let empty = body.is_empty() || body.as_slice() == b"[]";
                Ok(match (empty, closed && up_to_date) {
                    (false, _) => Poll::Data { body, next },
                    (true, true) => Poll::Closed { next },
                    (true, false) => Poll::Idle { next },
                })
            }
            404 => Err(ClientError::NotFound {
                url: self.url.clone(),
            }),
            410 => Err(ClientError::Gone {
                url: self.url.clone(),
                offset: offset.to_string(),
            }),
            _ => Err(ClientError::Status {
                url: self.url.clone(),
                status,
                body: resp.text().await.unwrap_or_default(),
            }),
        }
    }
}
