//! `streamdb start --source URL`: follows a remote Durable Streams stream of
//! JSON point messages (another StreamDB's `metrics`, or any server's JSON
//! stream) and ingests it exactly once.
//!
//! Each batch read is logged together with the remote offset that follows
//! it (a [`SourceCheckpoint`] in the same log record), so after a crash the
//! consumer resumes from exactly the position its durable data reached:
//! nothing read twice, nothing skipped. Flushes carry the checkpoint into
//! the manifest before the log segment holding it is deleted.
//!
//! The source is known by its URL without credentials
//! ([`RemoteStream::name`]): that is what logs, `status` and checkpoints
//! carry. Checkpoints written before credentials were stripped are found
//! under the URL as given, so an upgrade resumes where it was.

use std::sync::Arc;
use std::time::Duration;

use super::engine::{Engine, SourceStatus};
use super::error::EngineError;
use super::json;
use crate::storage::SourceCheckpoint;
use crate::stream::client::{Poll, RemoteStream, StreamReader};

/// Starts following `remote` under the engine's node of the shutdown tree;
/// the task ends when the engine shuts down.
pub fn spawn(engine: &Arc<Engine>, remote: RemoteStream, long_poll: Duration) {
    let tasks = engine.tasks().clone();
    let stop = tasks.clone();
    let engine = engine.clone();
    tasks.spawn("source consumer", async move {
        tokio::select! {
            _ = follow(&engine, remote, long_poll) => {}
            _ = stop.cancelled() => {}
        }
    });
}

/// Records what the consumer is doing where `/v1/status` shows it.
fn report(engine: &Engine, url: &str, state: &'static str, offset: &str, error: Option<String>) {
    engine.set_source_status(SourceStatus {
        url: url.to_string(),
        state,
        offset: offset.to_string(),
        error,
    });
}

/// Where an earlier run left off, under the name used now or the one
/// earlier versions persisted.
fn resume_offset(engine: &Engine, remote: &RemoteStream) -> String {
    engine
        .source_checkpoint(remote.name())
        .or_else(|| {
            remote
                .legacy_name()
                .and_then(|n| engine.source_checkpoint(n))
        })
        .unwrap_or_else(|| "-1".into())
}

async fn follow(engine: &Engine, remote: RemoteStream, long_poll: Duration) {
    let url = remote.name().to_string();
    let mut offset = resume_offset(engine, &remote);
    tracing::info!(source = %url, credentials = remote.credentials(), offset = %offset, "following source stream");
    let reader = StreamReader::new(remote, long_poll);
    report(engine, &url, "following", &offset, None);
    let stop = |offset: &str, why: String| {
        tracing::error!(source = %url, offset = %offset, error = %why, "source consumer stopped");
        report(engine, &url, "stopped", offset, Some(why));
    };
    let mut backoff = Duration::from_millis(200);
    loop {
        let poll = match reader.poll(&offset).await {
            Ok(p) => p,
            Err(e) if e.is_transient() => {
                tracing::warn!(source = %url, error = %e, retry_in = ?backoff, "source unavailable; retrying");
                report(engine, &url, "retrying", &offset, Some(e.to_string()));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
            // 410: the source no longer holds our position. Continuing
            // from its oldest offset would silently skip points, so stop
            // and say so.
            Err(e) => return stop(&offset, e.to_string()),
        };
        if backoff > Duration::from_millis(200) {
            report(engine, &url, "following", &offset, None);
        }
        backoff = Duration::from_millis(200);
        let (body, next) = match poll {
            Poll::Data { body, next } => (body, next),
            // Nothing was read, so there is nothing to make durable: the
            // next poll simply starts at the same place.
            Poll::Idle { .. } => continue,
            Poll::Closed { next } => {
                tracing::info!(source = %url, offset = %next, "source stream closed; consumer finished");
                report(engine, &url, "finished", &next, None);
                return;
            }
        };
        let checkpoint = SourceCheckpoint {
            source: url.clone(),
            offset: next.clone(),
        };
        loop {
            let written = engine
                .write_with(|catalog| {
                    let mut points = json::parse(&body, false, catalog)?;
                    points.origin.source = Some(checkpoint.clone());
                    Ok(points)
                })
                .await;
            match written {
                Ok(_) => break,
                Err(EngineError::Backpressure { .. }) => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(EngineError::ShuttingDown) => return,
                // Skipping would silently drop data and retrying cannot
                // succeed: stop, loudly, at the offending position.
                Err(EngineError::InvalidJson(err)) => {
                    return stop(&offset, format!("source data is not valid points: {err}"))
                }
                Err(err) => return stop(&offset, format!("ingesting from source failed: {err}")),
            }
        }
        offset = next;
        report(engine, &url, "following", &offset, None);
    }
}
