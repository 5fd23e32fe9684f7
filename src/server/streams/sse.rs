//! GET with `live=sse` (§5.8): catch-up, then live data, as `data` events
//! each followed by a `control` event with the next offset.
//!
//! A task produces events into a channel of a few frames that the response
//! body drains. It reads the stream only when the previous frame was taken,
//! so a slow client holds at most those frames (each bounded by the read
//! size) in memory, never a backlog. The connection ends after
//! `sse_max_duration` (clients reconnect from the last offset, which lets
//! CDNs collapse readers), when the stream is closed and drained, deleted,
//! or when the client goes away.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body as HttpBody, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::cursor;
use super::params::STREAM_SSE_DATA_ENCODING;
use super::response::stream_error;
use super::source::Source;
use super::state::StreamsState;
use crate::stream::Position;

/// Frames buffered per connection.
const FRAMES: usize = 4;
/// An idle connection sends a comment this often (keeps proxies from
/// timing it out and notices a departed client).
const KEEPALIVE: Duration = Duration::from_secs(15);

pub(super) fn respond(
    s: &StreamsState,
    src: Source,
    from: Position,
    client_cursor: Option<String>,
) -> Response {
    // A bad offset (past the end: 400, out of retention: 410) must be the
    // answer's status, not a 200 stream that ends at once: EventSource
    // would reconnect to it forever. So the first read happens before the
    // response starts (its one record is read again by the session).
    if let Err(e) = src.read(from, 1) {
        return stream_error(e);
    }
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(FRAMES);
    let text = src.is_text();
    let cursor = cursor::next(s.clock(), client_cursor.as_deref());
    let max_read = s.config.max_read_bytes;
    let deadline = s.clock().instant() + s.config.sse_max_duration;
    let closing = s.sessions.clone();
    s.sessions.spawn("sse session", async move {
        let session = Session {
            src,
            tx,
            text,
            cursor,
            max_read,
        };
        // Ending the session ends the response; the client reconnects from
        // its last offset.
        tokio::select! {
            _ = session.run(from, deadline) => {}
            _ = closing.cancelled() => {}
        }
    });
    let mut r = (
        StatusCode::OK,
        HttpBody::from_stream(ReceiverStream::new(rx)),
    )
        .into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if !text {
        h.insert(STREAM_SSE_DATA_ENCODING, HeaderValue::from_static("base64"));
    }
    r
}

struct Session {
    src: Source,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
    text: bool,
    cursor: String,
    max_read: usize,
}

impl Session {
    async fn run(self, mut pos: Position, deadline: tokio::time::Instant) {
        let mut waiter = self.src.waiter();
        let mut sent_control = false;
        loop {
            if self.src.removed().is_some() {
                return;
            }
            let Ok(batch) = self.src.read(pos, self.max_read) else {
                return;
            };
            if !batch.bodies.is_empty() || !sent_control || batch.closed {
                if !batch.bodies.is_empty() {
                    let payload = self.src.render(&batch.bodies);
                    if !self.send(self.data_event(&payload)).await {
                        return;
                    }
                }
                let control = self.control_event(batch.next, batch.up_to_date, batch.closed);
                if !self.send(control).await {
                    return;
                }
                sent_control = true;
                pos = batch.next;
                if batch.closed {
                    return;
                }
                if !batch.up_to_date {
                    continue;
                }
            }
            // Caught up: wait for a change, the end of the connection's
            // life, or the client leaving.
            loop {
                tokio::select! {
                    changed = waiter.changed() => {
                        if !changed { return; }
                        break;
                    }
                    _ = tokio::time::sleep_until(deadline) => return,
                    _ = self.tx.closed() => return,
                    _ = tokio::time::sleep(KEEPALIVE) => {
                        if !self.send(Bytes::from_static(b": keepalive\n\n")).await { return; }
                    }
                }
            }
        }
    }

    async fn send(&self, frame: Bytes) -> bool {
        self.tx.send(Ok(frame)).await.is_ok()
    }

    /// `event: data` with one `data:` line per payload line. Splitting on
    /// every CR, LF and CRLF is what keeps payload bytes from ever forming
    /// an event boundary (no injection); binary payloads are base64.
    fn data_event(&self, payload: &[u8]) -> Bytes {
        let mut out = String::with_capacity(payload.len() + 32);
        out.push_str("event: data\n");
        if self.text {
            let text = String::from_utf8_lossy(payload);
            for line in split_lines(&text) {
                out.push_str("data:");
                out.push_str(line);
                out.push('\n');
            }
        } else {
            out.push_str("data:");
            out.push_str(&base64::engine::general_purpose::STANDARD.encode(payload));
            out.push('\n');
        }
        out.push('\n');
        Bytes::from(out)
    }

    fn control_event(&self, next: Position, up_to_date: bool, closed: bool) -> Bytes {
        let mut c = serde_json::Map::new();
        c.insert("streamNextOffset".into(), next.to_string().into());
        if closed {
            c.insert("streamClosed".into(), true.into());
            c.insert("upToDate".into(), true.into());
        } else {
            c.insert("streamCursor".into(), self.cursor.clone().into());
            if up_to_date {
                c.insert("upToDate".into(), true.into());
            }
        }
        Bytes::from(format!(
            "event: control\ndata:{}\n\n",
            serde_json::Value::Object(c)
        ))
    }
}

/// Lines split on CRLF, CR or LF.
fn split_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let bytes = text.as_bytes();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'\r' => {
                lines.push(&text[start..i]);
                i += if bytes.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                start = i;
            }
            b'\n' => {
                lines.push(&text[start..i]);
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    lines.push(&text[start..]);
    lines
}

#[cfg(test)]
mod tests {
    use super::split_lines;

    #[test]
    fn splits_on_every_line_ending() {
        assert_eq!(split_lines("a\r\nb\rc\nd"), ["a", "b", "c", "d"]);
        assert_eq!(split_lines("a\r\r\nb"), ["a", "", "b"]);
        assert_eq!(split_lines(""), [""]);
        assert_eq!(split_lines("x\n"), ["x", ""]);
    }
}

#[cfg(test)]
mod backpressure_tests {
    use super::*;
    use crate::stream::registry::{AppendRequest, CreateRequest, Registry, RegistryConfig};

    /// A client that never reads holds the session at `FRAMES` queued frames:
    /// the session stops reading the stream instead of buffering it.
    #[tokio::test]
    async fn a_stalled_reader_bounds_what_the_server_holds() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(RegistryConfig {
            dir: dir.path().to_path_buf(),
            fsync: false,
            clock: crate::runtime::Clock::system(),
            max_streams: 8,
        })
        .unwrap();
        let create = CreateRequest {
            name: "big".into(),
            content_type: Some("application/octet-stream".into()),
            ..CreateRequest::default()
        };
        registry.create(create).await.unwrap();
        let stream = registry.get("big").await.unwrap();
        for _ in 0..40 {
            let append = AppendRequest {
                content_type: Some("application/octet-stream".into()),
                body: vec![7; 64 << 10],
                ..AppendRequest::default()
            };
            stream.append(append).await.unwrap();
        }
        let (tx, mut rx) = mpsc::channel(FRAMES);
        let session = Session {
            src: Source::Named(stream.clone()),
            tx,
            text: false,
            cursor: "1".into(),
            max_read: 64 << 10,
        };
        let deadline = crate::runtime::Clock::system().instant() + Duration::from_secs(60);
        let task = tokio::spawn(session.run(Position::default(), deadline));
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Full channel, task parked on the next send: 40 records exist, at
        // most FRAMES frames (two records' worth of data) are held.
        assert_eq!(rx.len(), FRAMES);
        assert!(!task.is_finished());
        // Draining lets it continue to the end of the data.
        let mut frames = 0;
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
            frames += 1;
        }
        assert_eq!(frames, 80, "one data and one control frame per record");
        task.abort();
    }
}
