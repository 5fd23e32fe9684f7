//! End to end through the real Flight service: an in-process server on
//! port 0 with a temp dir, the bundled Rust client, whole-table comparisons,
//! and a restart that must keep every row.

#[path = "server_roundtrip/auth.rs"]
mod auth;
mod common;
#[path = "server_roundtrip/read_only.rs"]
mod read_only;

use arrow::array::RecordBatch;
use arrow::util::pretty::pretty_format_batches;
use common::config;
use streamdb::query::QueryConfig;
use streamdb::server;
use streamdb_client::Client;

/// One second apart, as the expected tables below show.
fn batch(hosts: &[&str], values: &[f64]) -> RecordBatch {
    common::cpu_batch(hosts, values, 1_000_000)
}

async fn table(client: &mut Client, sql: &str) -> String {
    let (_, batches) = client.query(sql).await.unwrap();
    pretty_format_batches(&batches).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_query_status_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server::start(config(dir.path())).await.unwrap();
    let url = format!("http://{}", srv.addr);
    let mut client = Client::connect(&url).await.unwrap();

    // Host a again, two seconds in (at the first batch's time it would
    // replace that point: one value per series and time).
    let a_at_two_seconds = common::cpu_batch(&["-", "a"], &[0.0, 3.5], 2_000_000).slice(1, 1);
    let written = client
        .write(vec![batch(&["a", "b"], &[1.0, 2.0]), a_at_two_seconds])
        .await
        .unwrap();
    assert_eq!(written.rows, 3);
    assert_eq!(
        written.last_offset.as_deref(),
        Some("0000000000000001_0000000000000000")
    );

    let sql = "SELECT tags['host'] AS host, count(*) AS n, sum(value) AS total FROM metrics GROUP BY 1 ORDER BY 1";
    let expected = [
        "+------+---+-------+",
        "| host | n | total |",
        "+------+---+-------+",
        "| a    | 2 | 4.5   |",
        "| b    | 1 | 2.0   |",
        "+------+---+-------+",
    ]
    .join("\n");
    assert_eq!(table(&mut client, sql).await, expected);

    let status = client.status().await.unwrap();
    assert_eq!(
        (status["rows"].as_u64(), status["series"].as_u64()),
        (Some(3), Some(2))
    );

    // A bad batch is refused whole and changes nothing.
    let bad = batch(&["c"], &[f64::NAN]).project(&[0, 2, 3]).unwrap(); // no metric column
    let err = client.write(vec![bad]).await.unwrap_err().to_string();
    assert!(
        err.contains("invalid argument") && err.contains("`metric`"),
        "{err}"
    );
    assert_eq!(client.status().await.unwrap()["rows"].as_u64(), Some(3));

    // Graceful stop flushes; a restart serves the same rows from chunks.
    srv.stop().await.unwrap();
    let srv = server::start(config(dir.path())).await.unwrap();
    let mut client = Client::connect(&format!("http://{}", srv.addr))
        .await
        .unwrap();
    let status = client.status().await.unwrap();
    assert_eq!(status["storage"]["rows"].as_u64(), Some(3), "{status}");
    assert_eq!(status["buffer"]["rows"].as_u64(), Some(0), "{status}");
    assert_eq!(table(&mut client, sql).await, expected);
    srv.stop().await.unwrap();
}

#[tokio::test]
async fn sql_errors_are_invalid_argument_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server::start(config(dir.path())).await.unwrap();
    let mut client = Client::connect(&format!("http://{}", srv.addr))
        .await
        .unwrap();
    // A row, so that time_bucket runs (its width is checked as it runs).
    client.write(vec![batch(&["a"], &[1.0])]).await.unwrap();
    let cases = [
        ("SELEC 1", "SELEC"),
        ("SELECT nope FROM metrics", "nope"),
        ("SELECT * FROM nope", "nope"),
        (
            "SELECT time_bucket('5 parsecs', time) FROM metrics",
            "time_bucket: invalid width",
        ),
    ];
    for (sql, needle) in cases {
        let err = client.query(sql).await.unwrap_err().to_string();
        assert!(
            err.starts_with("invalid argument") && err.contains(needle),
            "{sql}: {err}"
        );
    }
    // The same errors over HTTP are 400 with the same message.
    for (sql, needle) in cases {
        let (status, message) = http_query(&srv, sql).await;
        assert_eq!(status, 400, "{sql}: {message}");
        assert!(message.contains(needle), "{sql}: {message}");
    }
    assert!(table(&mut client, "SELECT count(*) AS n FROM metrics")
        .await
        .contains("| 1 |"));
    srv.stop().await.unwrap();
}

/// `GET /v1/query?sql=...`: the status and the `error` of a failure.
async fn http_query(srv: &server::RunningServer, sql: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .get(format!("http://{}/v1/query", srv.addr))
        .query(&[("sql", sql)])
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    (
        status,
        body["error"].as_str().unwrap_or_default().to_string(),
    )
}

/// `n` rows over 100 hosts, one per millisecond.
fn many(n: usize) -> RecordBatch {
    let hosts: Vec<String> = (0..n).map(|i| format!("h{}", i % 100)).collect();
    let refs: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let values: Vec<f64> = (0..n).map(|i| i as f64).collect();
    batch(&refs, &values)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_queries_hit_their_limits_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.query = QueryConfig {
        memory_limit: 256 << 10,
        timeout: std::time::Duration::from_millis(300),
        ..QueryConfig::default()
    };
    let srv = server::start(cfg).await.unwrap();
    let mut client = Client::connect(&format!("http://{}", srv.addr))
        .await
        .unwrap();
    client.write(vec![many(20_000)]).await.unwrap();

    // A 400M-row cross join cannot finish in 300 ms. The server runs on
    // the system clock, so this client measures with it too.
    let started = streamdb::runtime::Clock::system().instant();
    let err = client
        .query("SELECT count(*) FROM metrics a, metrics b WHERE a.value + b.value > 0")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("deadline exceeded") && err.contains("timed out"),
        "{err}"
    );
    assert!(streamdb::runtime::Clock::system().since(started) < std::time::Duration::from_secs(10));

    // Collecting every value into one list needs far more than 256 KiB.
    let err = client
        .query("SELECT tags['host'], array_agg(value ORDER BY value) FROM metrics GROUP BY 1")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("resource exhausted") && err.contains("memory"),
        "{err}"
    );

    // Over HTTP: 504 for the timeout, 429 for the memory limit. (The
    // timeout is a query that yields between batches: HTTP answers a
    // result that arrives late, whereas Flight ends it with the timeout.)
    let (status, message) = http_query(
        &srv,
        "SELECT count(*) FROM generate_series(1, 100000000000)",
    )
    .await;
    assert_eq!(status, 504, "{message}");
    assert!(message.contains("timed out"), "{message}");
    let (status, message) = http_query(
        &srv,
        "SELECT tags['host'], array_agg(value ORDER BY value) FROM metrics GROUP BY 1",
    )
    .await;
    assert_eq!(status, 429, "{message}");
    assert!(message.contains("memory"), "{message}");

    assert!(table(&mut client, "SELECT count(*) AS n FROM metrics")
        .await
        .contains("| 20000 |"));
    srv.stop().await.unwrap();
}

/// The DoPut inputs the fuzzer found panicking arrow-ipc, sent over a real
/// connection: each refused with INVALID_ARGUMENT naming the problem, and
/// the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fuzzers_crashing_doput_is_refused_cleanly() {
    use arrow_flight::flight_service_client::FlightServiceClient;
    use arrow_flight::{FlightData, FlightDescriptor};
    use futures::StreamExt;

    let dir = tempfile::tempdir().unwrap();
    let srv = server::start(config(dir.path())).await.unwrap();
    let regressions =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/flight_data");
    for entry in std::fs::read_dir(regressions).unwrap() {
        // `[u32 len][header][u32 len][body]` repeated (streamdb::fuzzing).
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let mut rest = &bytes[..];
        let mut take = || {
            let len = u32::from_le_bytes(rest.get(..4)?.try_into().unwrap()) as usize;
            let len = len.min(rest.len() - 4);
            let part = bytes::Bytes::copy_from_slice(&rest[4..4 + len]);
            rest = &rest[4 + len..];
            Some(part)
        };
        let mut messages = Vec::new();
        while let Some(header) = take() {
            messages.push(FlightData {
                data_header: header,
                data_body: take().unwrap_or_default(),
                ..FlightData::default()
            });
        }
        messages[0].flight_descriptor = Some(FlightDescriptor::new_path(vec!["metrics".into()]));
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", srv.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut grpc = FlightServiceClient::new(channel);
        let status = match grpc.do_put(futures::stream::iter(messages)).await {
            Err(s) => s,
            Ok(r) => {
                let mut results = r.into_inner();
                loop {
                    match results.next().await {
                        Some(Err(s)) => break s,
                        Some(Ok(_)) => continue,
                        None => panic!("the DoPut stream ended without an error"),
                    }
                }
            }
        };
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
        // The header check refuses one; the other gets past it and is
        // contained when arrow-ipc's decoder panics on it.
        assert!(
            status.message().contains("lies outside the message body")
                || status.message().contains("malformed Arrow IPC data"),
            "{status}"
        );
    }
    let mut client = Client::connect(&format!("http://{}", srv.addr))
        .await
        .unwrap();
    client.write(vec![batch(&["a"], &[1.0])]).await.unwrap();
    assert_eq!(client.status().await.unwrap()["rows"], 1);
    srv.stop().await.unwrap();
}

/// `/v1/query` in `format`: the status and the body.
async fn http_query_as(srv: &server::RunningServer, sql: &str, format: &str) -> (u16, Vec<u8>) {
    let r = reqwest::Client::new()
        .get(format!("http://{}/v1/query", srv.addr))
        .query(&[("sql", sql), ("format", format)])
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_result_past_max_query_result_bytes_is_refused_with_429() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    let cap = 64 << 10;
    cfg.query.max_result_bytes = cap;
    let srv = server::start(cfg).await.unwrap();
    for format in ["json", "csv", "arrow"] {
        let mut refused = 0;
        for rows in [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000] {
            let sql =
                format!("SELECT value, 'row ' || value AS label FROM generate_series(1, {rows})");
            let (status, body) = http_query_as(&srv, &sql, format).await;
            let text = String::from_utf8_lossy(&body);
            match status {
                200 => {
                    assert!(body.len() <= cap, "{format} {rows}: {} bytes", body.len());
                    assert_eq!(
                        refused, 0,
                        "{format} {rows}: a larger result fit after a smaller was refused"
                    );
                }
                429 => {
                    assert!(
                        text.contains("--max-query-result-bytes"),
                        "{format} {rows}: {text}"
                    );
                    refused += 1;
                }
                s => panic!("{format} {rows}: status {s}: {text}"),
            }
        }
        // 1000 rows fit in 64 KiB, 10 000 do not, whatever the format.
        assert_eq!(refused, 3, "{format}: refused {refused} of 7");
    }
    // The server goes on answering.
    let (status, _) = http_query_as(&srv, "SELECT 1", "json").await;
    assert_eq!(status, 200);
    srv.stop().await.unwrap();
}
