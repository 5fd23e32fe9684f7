//! The flusher: turns the write buffer into chunk files and commits them.
//!
//! One flush: snapshot the buffer (and the offset it covers); sort the
//! points by (hour, series_id, time) and write one chunk per hour
//! partition; make the chunks durable; commit a manifest version covering
//! the offset (with a catalog snapshot taken after the buffer's, so it
//! defines every flushed series); swap it in and drop the flushed batches;
//! finally let the log delete the segments the manifest now covers. A
//! failure at any step before the commit leaves the buffer and log as they
//! were (orphaned files are garbage); the flush is retried with backoff.

use std::collections::HashMap;
use std::sync::Weak;
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::datatypes::{TimestampMicrosecondType, UInt64Type};
use object_store::path::Path;
use tokio::sync::watch;

use super::engine::{Engine, EngineError};
use crate::model::{point_schema, IdHashBuilder};
use crate::storage::{encode_chunk, StorageError};

const TICK: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const HOUR_US: i64 = crate::storage::PARTITION_MICROS;

/// The background loop: flushes when the buffer is big or old enough.
pub(super) async fn run(engine: Weak<Engine>, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(TICK) => {}
        }
        let Some(e) = engine.upgrade() else { return };
        if !due(&e) {
            continue;
        }
        match flush_once(&e).await {
            Ok(_) => backoff = Duration::from_millis(100),
            Err(err) => {
                tracing::warn!(error = %err, retry_in = ?backoff, "flush failed; data stays in the stream log");
                drop(e);
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

fn due(e: &Engine) -> bool {
    let st = e.shared.state.read();
    st.bytes >= e.config.flush_bytes
        || st
            .oldest
            .is_some_and(|t| t.elapsed() >= e.config.flush_interval)
}

/// Flushes everything buffered now. Returns the number of rows flushed.
pub(super) async fn flush_once(e: &Engine) -> Result<u64, EngineError> {
    let started = std::time::Instant::now();
    let result = write_buffer(e).await;
    let m = crate::telemetry::metrics();
    match &result {
        Ok(0) => {}
        Ok(_) => {
            m.flushes.inc();
            m.flush_seconds.observe(started.elapsed().as_secs_f64());
        }
        Err(_) => m.flush_failures.inc(),
    }
    result
}

async fn write_buffer(e: &Engine) -> Result<u64, EngineError> {
    let _one_at_a_time = e.flush_lock.lock().await;
    let (snap, upto) = {
        let st = e.shared.state.read();
        (st.snapshot(), st.applied)
    };
    if snap.buffered.is_empty() {
        return Ok(0);
    }
    let batches: Vec<RecordBatch> = snap.buffered.iter().map(|b| b.points.clone()).collect();
    let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    let parts = tokio::task::spawn_blocking(move || partition_by_hour(&batches))
        .await
        .map_err(|e| StorageError::Other(format!("flush task failed: {e}")))??;
    // Ids are never handed out twice, even if this flush fails.
    let first_id = e.allocate_chunk_ids(parts.len() as u64);
    let cache = e.reader.enabled();
    let encoded = tokio::task::spawn_blocking(move || -> Result<_, StorageError> {
        parts
            .into_iter()
            .enumerate()
            .map(|(i, part)| {
                let encoded = encode_chunk(first_id + i as u64, &part)?;
                // Cached as a compact copy: the part is a slice of the
                // whole flush, and a cached slice would keep (and be
                // charged for) all of it.
                let copy = cache
                    .then(|| {
                        let all = UInt32Array::from_iter_values(0..part.num_rows() as u32);
                        take_record_batch(&part, &all)
                    })
                    .transpose()?;
                Ok((encoded, copy))
            })
            .collect::<Result<Vec<_>, StorageError>>()
    })
    .await
    .map_err(|e| StorageError::Other(format!("flush task failed: {e}")))??;

    let mut written = Vec::new();
    let mut chunks = Vec::with_capacity(encoded.len());
    let mut decoded = Vec::with_capacity(encoded.len());
    for ((bytes, meta), part) in encoded {
        let path = Path::from(meta.path.as_str());
        e.store.put(&path, bytes).await?;
        written.push(path);
        decoded.push((meta.path.clone(), part));
        chunks.push(meta);
    }
    let mut next = (*snap.manifest).clone();
    next.chunks.extend(chunks);
    next.stream_offset = upto.0;
    // Producer state is kept as long as the data it vouches for: with
    // `--retention`, a producer idle for longer has nothing left to be a
    // duplicate of (the protocol's §5.2.1 clean-up rule).
    let idle_before = e
        .config
        .retention
        .map(|r| chrono::Utc::now().timestamp() - r.as_secs() as i64);
    if let Some(before) = idle_before {
        next.writers.producers.forget_idle(before);
    }
    for b in &snap.buffered {
        let o = &b.origin;
        if o.source.is_some() {
            next.source_checkpoint = o.source.clone();
        }
        next.writers
            .record(o.producer.as_ref(), o.stream_seq.as_deref());
    }
    // Files must be durable before a manifest references them.
    e.store.sync(&written)?;
    let committed = e.commit_manifest(&snap.manifest, next).await?;
    if let Some(before) = idle_before {
        e.shared.state.write().writers.producers.forget_idle(before);
    }
    for (path, part) in decoded {
        if let Some(part) = part {
            e.reader.insert(&path, std::sync::Arc::new(vec![part]));
        }
    }
    e.space.notify_waiters();
    e.log.seal_covered(upto).await?;
    e.log.remove_before(upto, e.config.stream_retention)?;
    tracing::debug!(rows, upto = %upto, version = committed.version, "flushed");
    Ok(rows)
}

/// Concatenates point batches sorted by (hour, series_id, time): within
/// one hour partition, by (series_id, time) as chunks are.
pub(super) fn sorted_points(batches: &[RecordBatch]) -> Result<RecordBatch, StorageError> {
    let all = concat_batches(&point_schema(), batches)?;
    let ids = all.column(0).as_primitive::<UInt64Type>().values();
    let times = all
        .column(1)
        .as_primitive::<TimestampMicrosecondType>()
        .values();
    Ok(take_record_batch(
        &all,
        &UInt32Array::from(sort_order(ids, times)),
    )?)
}

/// Concatenates point batches and splits them into hour partitions, each
/// sorted by (series_id, time).
fn partition_by_hour(batches: &[RecordBatch]) -> Result<Vec<RecordBatch>, StorageError> {
    let sorted = sorted_points(batches)?;
    let times = sorted
        .column(1)
        .as_primitive::<TimestampMicrosecondType>()
        .values();
    let mut parts = Vec::new();
    let mut start = 0;
    while start < sorted.num_rows() {
        let hour = times[start].div_euclid(HOUR_US);
        let len = times[start..].partition_point(|t| t.div_euclid(HOUR_US) == hour);
        parts.push(sorted.slice(start, len));
        start += len;
    }
    Ok(parts)
}

/// Row order by (hour, series_id, time). A buffer holds few hours and few
/// series compared with its rows, so rows are counting-sorted into
/// (hour, series) groups in O(n); only a group whose rows arrived out of
/// time order (late points) is sorted by time.
fn sort_order(ids: &[u64], times: &[i64]) -> Vec<u32> {
    let n = ids.len();
    if n == 0 {
        return Vec::new();
    }
    let first_hour = times
        .iter()
        .map(|t| t.div_euclid(HOUR_US))
        .min()
        .expect("non-empty");
    let hours = times
        .iter()
        .map(|t| t.div_euclid(HOUR_US))
        .max()
        .expect("non-empty")
        - first_hour
        + 1;
    // Dense series index, numbered in series_id order.
    let mut dense: HashMap<u64, u32, IdHashBuilder> = HashMap::default();
    for id in ids {
        let next = dense.len() as u32;
        dense.entry(*id).or_insert(next);
    }
    let mut distinct: Vec<u64> = dense.keys().copied().collect();
    distinct.sort_unstable();
    for (rank, id) in distinct.iter().enumerate() {
        dense.insert(*id, rank as u32);
    }
    let series = distinct.len();
    let groups = hours as usize * series;
    if hours > 1 << 16 || groups > n.max(1 << 20) {
        // Data spread over a very wide time range: fall back to a sort.
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_unstable_by_key(|&i| {
            (
                times[i as usize].div_euclid(HOUR_US),
                ids[i as usize],
                times[i as usize],
            )
        });
        return order;
    }
    let group_of = |i: usize| {
        (times[i].div_euclid(HOUR_US) - first_hour) as usize * series + dense[&ids[i]] as usize
    };
    let keys: Vec<u32> = (0..n).map(|i| group_of(i) as u32).collect();
    let mut starts = vec![0u32; groups + 1];
    for k in &keys {
        starts[*k as usize + 1] += 1;
    }
    for g in 0..groups {
        starts[g + 1] += starts[g];
    }
    let mut fill = starts.clone();
    let mut order = vec![0u32; n];
    for (i, k) in keys.iter().enumerate() {
        order[fill[*k as usize] as usize] = i as u32;
        fill[*k as usize] += 1;
    }
    for g in 0..groups {
        let group = &mut order[starts[g] as usize..starts[g + 1] as usize];
        if !group
            .windows(2)
            .all(|w| times[w[0] as usize] <= times[w[1] as usize])
        {
            group.sort_by_key(|&i| times[i as usize]);
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, TimestampMicrosecondArray, UInt64Array};

    use super::*;

    #[test]
    fn partitions_are_hour_aligned_and_sorted() {
        let b = RecordBatch::try_new(
            point_schema(),
            vec![
                Arc::new(UInt64Array::from(vec![2, 1, 2, 1, 9])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![HOUR_US + 5, HOUR_US + 9, 3, 7, -1])
                        .with_timezone("UTC"),
                ),
                Arc::new(Float64Array::from(vec![0.0, 1.0, 2.0, 3.0, 4.0])),
            ],
        )
        .unwrap();
        let parts = partition_by_hour(&[b.slice(0, 2), b.slice(2, 3)]).unwrap();
        let flat: Vec<Vec<(u64, i64)>> = parts
            .iter()
            .map(|p| {
                let ids = p.column(0).as_primitive::<UInt64Type>();
                let ts = p.column(1).as_primitive::<TimestampMicrosecondType>();
                (0..p.num_rows())
                    .map(|i| (ids.value(i), ts.value(i)))
                    .collect()
            })
            .collect();
        assert_eq!(
            flat,
            vec![
                vec![(9, -1)],
                vec![(1, 7), (2, 3)],
                vec![(1, HOUR_US + 9), (2, HOUR_US + 5)]
            ]
        );
    }

    proptest::proptest! {
        #[test]
        fn sort_order_matches_a_plain_sort(rows in proptest::collection::vec((0u64..20, -3 * HOUR_US..3 * HOUR_US), 0..400)) {
            let ids: Vec<u64> = rows.iter().map(|r| r.0).collect();
            let times: Vec<i64> = rows.iter().map(|r| r.1).collect();
            let key = |i: u32| (times[i as usize].div_euclid(HOUR_US), ids[i as usize], times[i as usize]);
            let got: Vec<_> = sort_order(&ids, &times).into_iter().map(key).collect();
            let mut want: Vec<_> = (0..rows.len() as u32).map(key).collect();
            want.sort_unstable();
            proptest::prop_assert_eq!(got, want);
        }
    }
}
