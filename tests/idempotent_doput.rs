//! Idempotent DoPut (issue 18 item 13): a producer's batches are stored
//! once however often they are sent, through restarts, and through a
//! network that cuts connections mid-stream.

#[allow(dead_code)]
mod common;
#[path = "idempotent_doput/proxy.rs"]
mod proxy;

use std::time::Duration;

use arrow::array::{Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{FlightClient, FlightDescriptor};
use futures::TryStreamExt;
use streamdb::server;
use streamdb_client::{Client, Producer, RetryPolicy};

/// Batch `b` of `rows` points, each value unique across batches.
fn batch(b: usize, rows: usize) -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("time", streamdb::model::time_type(), false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("host", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ]);
    let first = b * rows;
    let times: Vec<i64> = (first..first + rows)
        .map(|i| common::T0 + i as i64 * 1_000)
        .collect();
    RecordBatch::try_new(
        std::sync::Arc::new(schema),
        vec![
            std::sync::Arc::new(TimestampMicrosecondArray::from(times).with_timezone("UTC")),
            std::sync::Arc::new(StringArray::from(vec!["cpu"; rows])),
            std::sync::Arc::new(StringArray::from(vec!["h"; rows])),
            std::sync::Arc::new(Float64Array::from(
                (first..first + rows).map(|i| i as f64).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap()
}

/// One raw DoPut with `headers`: the PutResults' metadata, or the error.
async fn put(
    addr: std::net::SocketAddr,
    headers: &[(&str, &str)],
    batches: Vec<RecordBatch>,
) -> Result<Vec<serde_json::Value>, FlightError> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightClient::new(channel);
    for (k, v) in headers {
        client.add_header(k, v).unwrap();
    }
    let data = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_path(vec!["metrics".into()])))
        .build(futures::stream::iter(batches.into_iter().map(Ok)));
    let results: Vec<_> = client.do_put(data).await?.try_collect().await?;
    Ok(results
        .iter()
        .map(|r| serde_json::from_slice(&r.app_metadata).unwrap())
        .collect())
}

/// Records the metrics log holds: one per write batch applied. With one
/// value per series and time a batch applied twice leaves the table as it
/// was (its points replace themselves), so this is what shows a retry
/// that was applied again.
async fn records(client: &mut Client) -> u64 {
    let s = client.status().await.unwrap();
    let next = s["stream"]["next_offset"].as_str().unwrap();
    next.split('_').next().unwrap().parse().unwrap()
}

/// (rows, distinct values) in the table: equal to the points written when
/// each is stored exactly once.
async fn stored(client: &mut Client) -> (i64, i64) {
    let (_, b) = client
        .query("SELECT count(*) AS n, count(DISTINCT value) AS d FROM metrics")
        .await
        .unwrap();
    let col = |i: usize| {
        b[0].column(i)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap()
            .value(0)
    };
    (col(0), col(1))
}

fn producer_headers<'a>(id: &'a str, epoch: &'a str, seq: &'a str) -> [(&'a str, &'a str); 3] {
    [
        ("producer-id", id),
        ("producer-epoch", epoch),
        ("producer-seq", seq),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_doput_sent_again_with_the_same_producer_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server::start(common::config(dir.path())).await.unwrap();
    let batches: Vec<_> = (0..3).map(|b| batch(b, 10)).collect();
    let h = producer_headers("p1", "0", "0");
    let first = put(srv.addr, &h, batches.clone()).await.unwrap();
    assert_eq!(first.len(), 3);
    for (i, m) in first.iter().enumerate() {
        assert_eq!(m["rows"], 10);
        assert_eq!(m["seq"], i);
        assert!(m["offset"].is_string(), "{m}");
        assert!(m.get("duplicate").is_none(), "{m}");
    }
    let again = put(srv.addr, &h, batches.clone()).await.unwrap();
    for (i, m) in again.iter().enumerate() {
        assert_eq!(m["duplicate"], true, "batch {i}: {m}");
        assert_eq!(
            (m["rows"].as_u64(), m["seq"].as_u64()),
            (Some(10), Some(i as u64))
        );
    }
    // Resent from batch 2 with one more: 2 is a duplicate, 3 is new.
    let tail = put(
        srv.addr,
        &producer_headers("p1", "0", "2"),
        vec![batch(2, 10), batch(3, 10)],
    )
    .await
    .unwrap();
    assert_eq!(tail[0]["duplicate"], true);
    assert!(tail[1].get("duplicate").is_none(), "{}", tail[1]);
    let mut client = Client::connect(&format!("http://{}", srv.addr))
        .await
        .unwrap();
    assert_eq!(stored(&mut client).await, (40, 40));

    // Kept across a restart (the tuple rides in the log) and a flush.
    let addr = srv.addr;
    srv.stop().await.unwrap();
    let mut cfg = common::config(dir.path());
    cfg.addr = addr;
    let srv = server::start(cfg).await.unwrap();
    let again = put(
        srv.addr,
        &producer_headers("p1", "0", "3"),
        vec![batch(3, 10)],
    )
    .await
    .unwrap();
    assert_eq!(again[0]["duplicate"], true, "after a restart");
    srv.engine.flush().await.unwrap();
    let again = put(
        srv.addr,
        &producer_headers("p1", "0", "0"),
        vec![batch(0, 10)],
    )
    .await
    .unwrap();
    assert_eq!(again[0]["duplicate"], true, "after a flush");

    // The protocol's other rules: a gap, a new epoch, the old one fenced.
    let gap = put(
        srv.addr,
        &producer_headers("p1", "0", "9"),
        vec![batch(9, 10)],
    )
    .await;
    assert!(
        matches!(&gap, Err(FlightError::Tonic(s)) if s.code() == tonic::Code::FailedPrecondition || s.code() == tonic::Code::Aborted || s.message().contains("expected")),
        "{gap:?}"
    );
    put(
        srv.addr,
        &producer_headers("p1", "1", "0"),
        vec![batch(4, 10)],
    )
    .await
    .unwrap();
    let stale = put(
        srv.addr,
        &producer_headers("p1", "0", "4"),
        vec![batch(5, 10)],
    )
    .await;
    let Err(FlightError::Tonic(s)) = &stale else {
        panic!("{stale:?}")
    };
    assert!(s.message().contains("epoch"), "{s:?}");
    let mut client = Client::connect(&format!("http://{}", srv.addr))
        .await
        .unwrap();
    assert_eq!(stored(&mut client).await, (50, 50));
    srv.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_producer_metadata_is_refused_naming_the_header_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server::start(common::config(dir.path())).await.unwrap();
    let long = "x".repeat(300);
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("producer-id", "p")], "producer-epoch"),
        (
            vec![("producer-id", "p"), ("producer-epoch", "0")],
            "producer-seq",
        ),
        (
            vec![("producer-seq", "0"), ("producer-epoch", "0")],
            "producer-id",
        ),
        (
            producer_headers("p", "zero", "0").to_vec(),
            "producer-epoch",
        ),
        (producer_headers("p", "0", "-1").to_vec(), "producer-seq"),
        (producer_headers("p", "0", "1.5").to_vec(), "producer-seq"),
        (producer_headers(&long, "0", "0").to_vec(), "producer-id"),
        (producer_headers("", "0", "0").to_vec(), "producer-id"),
    ];
    for (headers, names) in cases {
        let got = put(srv.addr, &headers, vec![batch(0, 5)]).await;
        let Err(FlightError::Tonic(s)) = &got else {
            panic!("{headers:?}: {got:?}")
        };
        assert_eq!(s.code(), tonic::Code::InvalidArgument, "{headers:?}: {s:?}");
        assert!(s.message().contains(names), "{headers:?}: {}", s.message());
    }
    let mut client = Client::connect(&format!("http://{}", srv.addr))
        .await
        .unwrap();
    assert_eq!(stored(&mut client).await, (0, 0));
    srv.stop().await.unwrap();
}

/// The bundled client resends from its first unacknowledged batch after
/// the connection drops, mid-request or mid-acknowledgements, at seeded
/// random points: every point is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_doput_cut_off_mid_stream_and_resent_stores_every_point_once() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server::start(common::config(dir.path())).await.unwrap();
    let policy = RetryPolicy {
        retries: 100,
        backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
    };
    let (batches_per_write, rows) = (12, 40);
    let mut written = 0i64;
    let mut cuts = 0;
    for seed in 0..24u64 {
        let proxy = proxy::FlakyProxy::start(srv.addr, seed, 3, 40_000).await;
        let mut client = Client::connect(&format!("http://{}", proxy.addr))
            .await
            .unwrap();
        let mut producer = Producer::new(format!("seed-{seed}"));
        for w in 0..2 {
            let first = (seed as usize * 2 + w) * batches_per_write;
            let batches: Vec<_> = (first..first + batches_per_write)
                .map(|b| batch(b, rows))
                .collect();
            let summary = client
                .write_once(&mut producer, batches, &policy, |_, _| {})
                .await
                .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            assert_eq!(
                summary.rows,
                (batches_per_write * rows) as u64,
                "seed {seed}"
            );
            written += (batches_per_write * rows) as i64;
        }
        assert_eq!(producer.next_seq, 2 * batches_per_write as u64);
        cuts += proxy.cut.load(std::sync::atomic::Ordering::Relaxed);
    }
    assert!(cuts > 24, "the proxy cut only {cuts} connections");
    let mut client = Client::connect(&format!("http://{}", srv.addr))
        .await
        .unwrap();
    assert_eq!(stored(&mut client).await, (written, written));
    assert_eq!(
        records(&mut client).await,
        24 * 2 * batches_per_write as u64,
        "each batch applied once"
    );
    srv.stop().await.unwrap();
}

/// `streamdb ingest` through the connection-cutting proxy: its producer
/// and retries apply every batch of the file once, whatever the seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamdb_ingest_through_a_flaky_network_stores_every_point_once() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server::start(common::config(dir.path())).await.unwrap();
    let points = 3_000usize;
    let file = common::ndjson_points(dir.path(), points);
    let mut client = Client::connect(&format!("http://{}", srv.addr))
        .await
        .unwrap();
    for seed in 0..3u64 {
        let proxy = proxy::FlakyProxy::start(srv.addr, 100 + seed, 6, 6_000).await;
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_streamdb"))
            .args([
                "ingest",
                "--verbose",
                "--batch-size",
                "100",
                "--retries",
                "50",
            ])
            .arg("--server")
            .arg(format!("http://{}", proxy.addr))
            .arg("--file")
            .arg(&file)
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "seed {seed}: {:?} stdout {} stderr {stderr}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(stderr.contains("producer id streamdb-ingest-"), "{stderr}");
        // Every run writes the same points again: they replace themselves
        // (one value per series and time), and each run appends each of
        // its 30 batches once.
        let cuts = proxy.cut.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            stored(&mut client).await,
            (points as i64, points as i64),
            "seed {seed}: one row per point ({cuts} cuts)"
        );
        assert_eq!(
            records(&mut client).await,
            (points / 100 * (seed as usize + 1)) as u64,
            "seed {seed}: each batch applied once ({cuts} cuts)"
        );
    }
    srv.stop().await.unwrap();
}
