//! PUT (create, fork), POST (append, close) and DELETE on named streams.

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::params::{self, *};
use super::response::{error, set, stream_error};
use super::state::StreamsState;
use crate::stream::registry::{
    AppendOutcome, AppendRequest, CreateRequest, Created, ForkRequest, NamedStream,
};
use crate::stream::Offset;

/// The URL prefix of streams; `Stream-Forked-From` names a path under it.
const PREFIX: &str = "/v1/stream/";

pub(super) async fn put(
    s: &StreamsState,
    name: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let req = match create_request(name, headers, body) {
        Ok(r) => r,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let (stream, status) = match s.registry.create(req).await {
        Ok(Created::New(st)) => (st, StatusCode::CREATED),
        Ok(Created::Existing(st)) => (st, StatusCode::OK),
        Err(e) => return stream_error(e),
    };
    stream.touch();
    let mut r = status.into_response();
    let h = r.headers_mut();
    set(h, "content-type", stream.config().content_type.clone());
    set(h, STREAM_NEXT_OFFSET, stream.tail().to_string());
    if stream.is_closed() {
        h.insert(STREAM_CLOSED, HeaderValue::from_static("true"));
    }
    if status == StatusCode::CREATED {
        set(h, header::LOCATION.as_str(), location(uri, headers));
    }
    r
}

/// An absolute `Location` for the created stream, from the `Host` the
/// client used.
fn location(uri: &Uri, headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or("localhost");
    format!("http://{host}{}", uri.path())
}

fn create_request(
    name: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> params::ParamResult<CreateRequest> {
    let forked_from = header(headers, STREAM_FORKED_FROM)?;
    let fork_offset = header(headers, STREAM_FORK_OFFSET)?;
    let sub_offset = header(headers, STREAM_FORK_SUB_OFFSET)?;
    let fork = match forked_from {
        None => {
            if fork_offset.is_some() || sub_offset.is_some() {
                return Err(
                    "Stream-Fork-Offset and Stream-Fork-Sub-Offset need Stream-Forked-From".into(),
                );
            }
            None
        }
        Some(src) => {
            let source = src.trim().strip_prefix(PREFIX).ok_or_else(|| {
                format!(
                    "Stream-Forked-From must be a stream path starting with {PREFIX} (got {src:?})"
                )
            })?;
            let offset = fork_offset
                .map(|o| {
                    o.trim()
                        .parse::<Offset>()
                        .map_err(|e| format!("Stream-Fork-Offset: {e}"))
                })
                .transpose()?;
            let sub_offset = match sub_offset {
                Some(v) => plain_integer("Stream-Fork-Sub-Offset", v.trim(), u64::MAX)?,
                None => 0,
            };
            if sub_offset > 0 && offset.is_none() {
                return Err("Stream-Fork-Sub-Offset needs an explicit Stream-Fork-Offset".into());
            }
            Some(ForkRequest {
                source: source.to_string(),
                offset,
                sub_offset,
            })
        }
    };
    Ok(CreateRequest {
        name: name.to_string(),
        content_type: header(headers, "content-type")?.map(str::to_string),
        expiry: expiry(headers)?,
        closed: closed_flag(headers),
        fork,
        body: body.to_vec(),
    })
}

pub(super) async fn post(
    s: &StreamsState,
    name: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let stream = match s.registry.get(name).await {
        Ok(st) => st,
        Err(e) => return stream_error(e),
    };
    let req = match append_request(headers, body) {
        Ok(r) => r,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    stream.touch();
    let producer = req.producer.clone();
    let outcome = match stream.append(req).await {
        Ok(o) => o,
        Err(e) => return stream_error(e),
    };
    append_response(&stream, outcome, producer.as_ref())
}

fn append_request(headers: &HeaderMap, body: Bytes) -> params::ParamResult<AppendRequest> {
    Ok(AppendRequest {
        content_type: header(headers, "content-type")?
            .filter(|ct| !ct.trim().is_empty())
            .map(str::to_string),
        body: body.to_vec(),
        close: closed_flag(headers),
        producer: producer(headers)?,
        stream_seq: header(headers, STREAM_SEQ)?.map(str::to_string),
    })
}

/// 200 for new data from an idempotent producer, 204 otherwise (§5.2).
fn append_response(
    stream: &NamedStream,
    outcome: AppendOutcome,
    producer: Option<&crate::stream::registry::ProducerTuple>,
) -> Response {
    let (status, next, closed, seq) = match outcome {
        AppendOutcome::Appended { next, closed } => {
            let status = if producer.is_some() {
                StatusCode::OK
            } else {
                StatusCode::NO_CONTENT
            };
            (status, next, closed, producer.map(|p| p.seq))
        }
        AppendOutcome::Closed { next } => {
            (StatusCode::NO_CONTENT, next, true, producer.map(|p| p.seq))
        }
        AppendOutcome::Duplicate {
            next,
            closed,
            last_seq,
        } => (StatusCode::NO_CONTENT, next, closed, Some(last_seq)),
    };
    let mut r = status.into_response();
    let h = r.headers_mut();
    set(h, STREAM_NEXT_OFFSET, next.to_string());
    if closed || stream.is_closed() {
        h.insert(STREAM_CLOSED, HeaderValue::from_static("true"));
    }
    if let (Some(p), Some(seq)) = (producer, seq) {
        set(h, PRODUCER_EPOCH, p.epoch.to_string());
        set(h, PRODUCER_SEQ, seq.to_string());
    }
    r
}

pub(super) async fn delete(s: &StreamsState, name: &str) -> Response {
    match s.registry.delete(name).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => stream_error(e),
    }
}
