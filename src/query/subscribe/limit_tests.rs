//! The memory limits of a subscription: pending bytes between emits
//! (`--subscribe-max-pending-bytes`) and groups held
//! (`--subscribe-max-groups`), each hit over a range of limits.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::Schema;

use super::tests::{batch, rows, subscriptions, T0};
use super::*;
use crate::error::HasKind;
use crate::ingest::{MemoryView, ReadView};
use crate::query::QueryConfig;
use crate::runtime::Clock;

const BUCKETS: &str = "SELECT time_bucket('1s', time) AS bucket, count(*) FROM metrics GROUP BY 1";

fn engine() -> (Arc<MemoryView>, Arc<QueryEngine>) {
    let view = MemoryView::with_clock(Clock::simulated(T0));
    let q = Arc::new(QueryEngine::new(view.clone(), QueryConfig::default()));
    (view, q)
}

fn limited(max_pending_bytes: usize, max_groups: usize) -> Arc<Subscriptions> {
    subscriptions(SubscribeConfig {
        max_pending_bytes,
        max_groups,
        ..SubscribeConfig::default()
    })
}

/// The next message that is not progress (an update or the error),
/// within 100 messages (100 s of progress in paused time).
async fn next_change(rx: &mut Updates) -> Result<Message, QueryError> {
    for _ in 0..100 {
        match rx
            .recv()
            .await
            .expect("the subscription ends with an error")
        {
            Ok(m) if m.kind == Kind::Progress => continue,
            other => return other,
        }
    }
    panic!("only progress for 100 messages: the subscription kept running");
}

fn fake(bytes: usize) -> Arc<BufferedBatch> {
    Arc::new(BufferedBatch {
        offset: Offset(0),
        points: RecordBatch::new_empty(Arc::new(Schema::empty())),
        min_time: 0,
        max_time: 0,
        bytes,
        origin: Default::default(),
    })
}

/// Over seeded random batch sizes and limits: pending never holds more
/// than the limit (or one batch alone), and a refusal names the flag and
/// leaves what was held unchanged.
#[test]
fn pending_bytes_never_pass_the_limit() {
    let mut seed = 0x5eed_u64;
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    for _ in 0..500 {
        let max = 1 + next(10_000) as usize;
        let mut p = Pending::default();
        loop {
            let size = next(3_000) as usize;
            let before = (p.batches.len(), p.bytes);
            match p.push(fake(size), max, Duration::from_secs(86_400)) {
                Ok(()) => assert!(p.bytes <= max || p.batches.len() == 1),
                Err(e) => {
                    assert!(
                        matches!(&e, QueryError::Limit(m) if m.contains("--subscribe-max-pending-bytes")),
                        "{e}"
                    );
                    assert_eq!(
                        (p.batches.len(), p.bytes),
                        before,
                        "a refusal holds nothing more"
                    );
                    assert!(before.1 + size > max);
                    break;
                }
            }
        }
    }
}

/// `emit_interval = '24h'` over ingest: the subscription holds `k` batches
/// under a limit of `k` batches' bytes, and ends with RESOURCE_EXHAUSTED
/// naming the flag on the next one, having sent no update.
#[tokio::test(start_paused = true)]
async fn a_long_emit_interval_ends_at_the_pending_bytes_limit() {
    let (view, q) = engine();
    let point = |i: i64| batch(&[(T0 + i, "a", 1.0)]);
    view.write(&point(0)).await.unwrap();
    let one = view.snapshot().buffered.last().unwrap().bytes;
    for k in 1..=4usize {
        let subs = limited(k * one, 100);
        let req = SubscribeRequest {
            emit_interval: Duration::from_secs(86_400),
            snapshot: false,
            ..SubscribeRequest::new("SELECT value FROM metrics")
        };
        let (_, mut rx) = subscribe(q.clone(), &subs, req).await.unwrap();
        for i in 0..k as i64 {
            view.write(&point(i + 1)).await.unwrap();
        }
        // Seconds pass (progress only): still held, still running.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(subs.active(), 1, "k = {k}: {k} batches fit");
        view.write(&point(100)).await.unwrap();
        let err = next_change(&mut rx)
            .await
            .expect_err("no update before the error");
        assert!(
            matches!(&err, QueryError::Limit(m) if m.contains("--subscribe-max-pending-bytes")),
            "k = {k}: {err}"
        );
        assert_eq!(err.kind().grpc_code(), tonic::Code::ResourceExhausted);
    }
}

fn in_bucket(seconds: &[i64]) -> RecordBatch {
    let points: Vec<(i64, &str, f64)> = seconds
        .iter()
        .map(|s| (T0 + s * 1_000_000, "a", 1.0))
        .collect();
    batch(&points)
}

fn names_the_groups_flag(e: &QueryError) -> bool {
    matches!(e, QueryError::Limit(m) if m.contains("--subscribe-max-groups"))
}

/// `GROUP BY time_bucket('1s', time)` under `max_groups = n`: a snapshot
/// past it is refused at subscribe time (no slot taken); live, points
/// into held buckets and new ones up to `n` go out as updates, and the
/// batch bringing bucket `n + 1` ends the subscription with
/// RESOURCE_EXHAUSTED naming the flag, none of it sent.
#[tokio::test(start_paused = true)]
async fn group_by_time_bucket_ends_at_the_group_limit() {
    for n in 1..=5i64 {
        let subs = limited(usize::MAX, n as usize);
        let req = || SubscribeRequest {
            emit_interval: Duration::from_millis(10),
            ..SubscribeRequest::new(BUCKETS)
        };
        let (view, q) = engine();
        view.write(&in_bucket(&(0..=n).collect::<Vec<_>>()))
            .await
            .unwrap();
        let err = subscribe(q, &subs, req())
            .await
            .expect_err("n + 1 groups in the snapshot");
        assert!(names_the_groups_flag(&err), "n = {n}: {err}");
        assert_eq!(subs.active(), 0);

        let (view, q) = engine();
        view.write(&in_bucket(&(0..n - 1).collect::<Vec<_>>()))
            .await
            .unwrap();
        let (_, mut rx) = subscribe(q, &subs, req()).await.unwrap();
        let snap = rx.recv().await.unwrap().unwrap();
        assert_eq!(snap.batch.unwrap().num_rows(), (n - 1) as usize);
        // The n-th bucket, and a late point into the first (half a second
        // in, so it rewrites no point): both fit.
        view.write(&batch(&[
            (T0 + (n - 1) * 1_000_000, "a", 1.0),
            (T0 + 500_000, "a", 1.0),
        ]))
        .await
        .unwrap();
        let update = next_change(&mut rx).await.expect("n groups fit");
        let counts: Vec<String> = rows(update.batch.as_ref().unwrap())
            .into_iter()
            .map(|r| r[1].clone())
            .collect();
        let want: Vec<&str> = if n == 1 { vec!["2"] } else { vec!["2", "1"] };
        assert_eq!(counts, want, "n = {n}");
        // A held bucket and a new one in one batch: refused whole.
        view.write(&in_bucket(&[0, n])).await.unwrap();
        let err = next_change(&mut rx)
            .await
            .expect_err("no update with bucket n + 1");
        assert!(names_the_groups_flag(&err), "n = {n}: {err}");
        assert_eq!(err.kind().grpc_code(), tonic::Code::ResourceExhausted);
        assert!(rx.recv().await.is_none(), "the subscription ended");
    }
}

/// A refused batch folds nothing: the state emits what it held before.
#[test]
fn a_refused_batch_leaves_the_groups_as_they_were() {
    use arrow::array::{Float64Array, Int64Array};
    use arrow::datatypes::{DataType, Field};
    // One group column, one aggregate's `sum, count, min, max`.
    let schema = Arc::new(Schema::new(vec![
        Field::new("g", DataType::Int64, true),
        Field::new("s", DataType::Float64, true),
        Field::new("c", DataType::Int64, true),
        Field::new("n", DataType::Float64, true),
        Field::new("x", DataType::Float64, true),
    ]));
    let part = |keys: Vec<i64>| {
        let ones = || Arc::new(Float64Array::from(vec![1.0; keys.len()])) as _;
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(keys.clone())),
                ones(),
                Arc::new(Int64Array::from(vec![1; keys.len()])),
                ones(),
                ones(),
            ],
        )
        .unwrap()
    };
    let out_schema = Arc::new(Schema::new(vec![
        Field::new("g", DataType::Int64, true),
        Field::new("count", DataType::Int64, true),
    ]));
    let outputs = [
        shape::Output::Group(0),
        shape::Output::Agg(0, shape::AggKind::Count),
    ];
    for max in 1..8i64 {
        let mut st = AggState::new(1, 1, max as usize);
        st.fold(&part((0..max).collect())).unwrap();
        let before = rows(&st.emit(&outputs, &out_schema, true).unwrap());
        // Held groups again plus one new: refused, nothing counted.
        let err = st.fold(&part((0..=max).collect())).unwrap_err();
        assert!(names_the_groups_flag(&err), "{err}");
        assert!(!st.has_changes());
        assert_eq!(rows(&st.emit(&outputs, &out_schema, true).unwrap()), before);
        // Held groups alone still fold.
        st.fold(&part((0..max).collect())).unwrap();
        assert!(st.has_changes());
    }
}
