//! `streamdb start --source URL`: follows a remote Durable Streams stream of
//! JSON point messages (another StreamDB's `metrics`, or any server's JSON
//! stream) and ingests it exactly once.
//!
//! Each batch read is logged together with the remote offset that follows
//! it (a [`SourceCheckpoint`] in the same log record), so after a crash the
//! consumer resumes from exactly the position its durable data reached:
//! nothing read twice, nothing skipped. Flushes carry the checkpoint into
//! the manifest before the log segment holding it is deleted.

use std::sync::Arc;
use std::time::Duration;

use super::engine::{Engine, SourceStatus};
use super::error::EngineError;
use super::json;
use crate::storage::SourceCheckpoint;
use crate::stream::client::{Poll, StreamReader};

/// Starts following `url` under the engine's node of the shutdown tree;
/// the task ends when the engine shuts down.
pub fn spawn(engine: &Arc<Engine>, url: String, long_poll: Duration) {
    let tasks = engine.tasks().clone();
    let stop = tasks.clone();
    let engine = engine.clone();
    tasks.spawn("source consumer", async move {
        tokio::select! {
            _ = follow(&engine, url, long_poll) => {}
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

async fn follow(engine: &Engine, url: String, long_poll: Duration) {
    let reader = StreamReader::new(url.clone(), long_poll);
    let mut offset = engine
        .source_checkpoint(&url)
        .unwrap_or_else(|| "-1".into());
    tracing::info!(source = %url, offset = %offset, "following source stream");
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
