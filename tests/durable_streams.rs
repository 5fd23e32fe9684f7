//! The Durable Streams endpoint against an in-process server: the metrics
//! stream (HTTP append then SQL, DoPut then HTTP read, resuming from an
//! offset across a restart), named streams across restarts, and bad input
//! that must change nothing. The protocol's own conformance suite runs in
//! scripts/test.sh; these cover what it cannot see (restarts, SQL, DoPut).

mod common;

use arrow::array::StringArray;
use reqwest::StatusCode;
use streamdb::server::{self, RunningServer, ServerConfig, StreamsConfig};
use streamdb_client::Client;

const TAIL: &str = "stream-next-offset";

async fn start(dir: &std::path::Path) -> RunningServer {
    let config = ServerConfig {
        streams: StreamsConfig {
            max_body_bytes: 64 << 10,
            ..StreamsConfig::default()
        },
        ..common::config(dir)
    };
    server::start(config).await.unwrap()
}

fn url(srv: &RunningServer, stream: &str) -> String {
    format!("http://{}/v1/stream/{stream}", srv.addr)
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()[name].to_str().unwrap().to_string()
}

/// POSTs a JSON body to a stream.
async fn post_json(
    http: &reqwest::Client,
    url: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    http.post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// A POST from idempotent producer `id`.
fn producer_post(
    http: &reqwest::Client,
    url: &str,
    (id, epoch, seq): (&str, u64, u64),
    content_type: &str,
    body: String,
) -> reqwest::RequestBuilder {
    http.post(url)
        .header("content-type", content_type.to_string())
        .header("producer-id", id.to_string())
        .header("producer-epoch", epoch.to_string())
        .header("producer-seq", seq.to_string())
        .body(body)
}

async fn json_messages(http: &reqwest::Client, url: &str, offset: &str) -> Vec<serde_json::Value> {
    let r = http
        .get(url)
        .query(&[("offset", offset)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_stream_joins_http_doput_and_sql() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path()).await;
    let http = reqwest::Client::new();
    let metrics = url(&srv, "metrics");

    // HTTP append, then SQL sees it.
    let r = post_json(
        &http,
        &metrics,
        r#"{"time":"2024-01-15T00:00:00Z","metric":"cpu_usage","tags":{"host":"web-1"},"value":0.5}"#,
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let after_http = header(&r, TAIL);
    let mut client = Client::connect(&format!("http://{}", srv.addr))
        .await
        .unwrap();
    let (_, batches) = client
        .query("SELECT tags['host'] AS host, value FROM metrics")
        .await
        .unwrap();
    let hosts = batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    assert_eq!((batches[0].num_rows(), hosts.value(0)), (1, "web-1"));

    // DoPut lands at the HTTP tail and reads back over HTTP as JSON points.
    let written = client
        .write(vec![common::cpu_batch(&["db-1", "db-1"], &[1.0, 2.5], 1)])
        .await
        .unwrap();
    assert_eq!(written.last_offset.as_deref(), Some(after_http.as_str()));
    let got = json_messages(&http, &metrics, &after_http).await;
    assert_eq!(
        got,
        serde_json::json!([
            {"time": "2024-01-15T00:00:00Z", "metric": "cpu_usage", "tags": {"host": "db-1"}, "value": 1.0},
            {"time": "2024-01-15T00:00:00.000001Z", "metric": "cpu_usage", "tags": {"host": "db-1"}, "value": 2.5},
        ])
        .as_array()
        .unwrap()
        .clone()
    );
    let head = http.head(&metrics).send().await.unwrap();
    let tail = header(&head, TAIL);

    // Resume from an offset across a restart: the same data from the old
    // position, then only what came after.
    srv.stop().await.unwrap();
    let srv = start(dir.path()).await;
    let metrics = url(&srv, "metrics");
    assert_eq!(json_messages(&http, &metrics, &after_http).await, got);
    let r = http
        .post(&metrics)
        .header("content-type", "application/x-ndjson")
        .body("{\"time\":1705276900000000,\"metric\":\"mem\",\"value\":7}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let newer = json_messages(&http, &metrics, &tail).await;
    assert_eq!(newer.len(), 1);
    assert_eq!(newer[0]["metric"], "mem");
    srv.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_streams_keep_data_producers_and_closure_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path()).await;
    let http = reqwest::Client::new();
    let events = url(&srv, "app/events");
    let r = http
        .put(&events)
        .header("content-type", "text/plain")
        .header("stream-ttl", "3600")
        .body("a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let produce = |http: &reqwest::Client, events: &str, seq: u64| {
        producer_post(
            http,
            events,
            ("writer-1", 0, seq),
            "text/plain",
            format!("[{seq}]"),
        )
    };
    for seq in [0, 1] {
        let r = produce(&http, &events, seq).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }

    // After a restart the producer table is rebuilt from the log: a retried
    // batch is a duplicate (204, highest seq 1), not a second copy.
    srv.stop().await.unwrap();
    let srv = start(dir.path()).await;
    let events = url(&srv, "app/events");
    let retry = produce(&http, &events, 1).send().await.unwrap();
    assert_eq!(retry.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&retry, "producer-seq"), "1");
    let gap = produce(&http, &events, 3).send().await.unwrap();
    assert_eq!(gap.status(), StatusCode::CONFLICT);
    assert_eq!(header(&gap, "producer-expected-seq"), "2");
    let close = http
        .post(&events)
        .header("stream-closed", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(close.status(), StatusCode::NO_CONTENT);

    // Closure is durable too; data and TTL are unchanged.
    srv.stop().await.unwrap();
    let srv = start(dir.path()).await;
    let events = url(&srv, "app/events");
    let r = http.get(&events).send().await.unwrap();
    assert_eq!(header(&r, "stream-closed"), "true");
    assert_eq!(r.text().await.unwrap(), "a[0][1]");
    let head = http.head(&events).send().await.unwrap();
    assert_eq!(header(&head, "stream-ttl"), "3600");
    let late = produce(&http, &events, 2).send().await.unwrap();
    assert_eq!(late.status(), StatusCode::CONFLICT);
    assert_eq!(header(&late, "stream-closed"), "true");
    srv.stop().await.unwrap();
}

/// One DoPut of many rows is one log record; reads of the metrics stream
/// still come in pages of about `max_read_bytes`, catch-up and SSE alike,
/// resuming inside the record at the offsets they hand out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_doput_reads_back_in_bounded_pages() {
    const PAGE: usize = 64 << 10;
    const ROWS: usize = 5_000;
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.streams.max_read_bytes = PAGE;
    let srv = server::start(config).await.unwrap();
    let http = reqwest::Client::new();
    let metrics = url(&srv, "metrics");
    let hosts: Vec<String> = (0..ROWS).map(|i| format!("h{}", i % 7)).collect();
    let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let values: Vec<f64> = (0..ROWS).map(|i| i as f64).collect();
    let mut client = Client::connect(&format!("http://{}", srv.addr))
        .await
        .unwrap();
    client
        .write(vec![common::cpu_batch(&hosts, &values, 1)])
        .await
        .unwrap();
    // About 100 bytes a message: the page may pass the limit by one.
    let bound = PAGE + 200;

    let (mut got, mut offset, mut pages) = (Vec::new(), "-1".to_string(), 0);
    loop {
        let r = http
            .get(&metrics)
            .query(&[("offset", offset.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        // No authentication: shared caches may keep data (test_auth.py
        // checks `private` with it).
        assert!(header(&r, "cache-control").starts_with("public, max-age=60"));
        let done = r.headers().contains_key("stream-up-to-date");
        offset = header(&r, TAIL);
        let body = r.bytes().await.unwrap();
        assert!(body.len() <= bound, "page of {} bytes", body.len());
        let page: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
        got.extend(page.iter().map(|m| m["value"].as_f64().unwrap()));
        pages += 1;
        if done {
            break;
        }
        assert!(
            !offset.ends_with("_0000000000000000"),
            "inside the record: {offset}"
        );
    }
    assert_eq!(got, values, "every point once, in order");
    assert!(pages > 4, "{pages} pages");

    // SSE: every data event within the bound, together every point once.
    let mut r = http
        .get(&metrics)
        .query(&[("offset", "-1"), ("live", "sse")])
        .send()
        .await
        .unwrap();
    let (mut text, mut sse_values) = (String::new(), Vec::new());
    'events: while let Some(chunk) = r.chunk().await.unwrap() {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            let data: String = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .collect();
            if event.starts_with("event: data") {
                assert!(data.len() <= bound, "SSE data of {} bytes", data.len());
                let page: Vec<serde_json::Value> = serde_json::from_str(&data).unwrap();
                sse_values.extend(page.iter().map(|m| m["value"].as_f64().unwrap()));
            } else if event.starts_with("event: control") && data.contains("upToDate") {
                break 'events;
            }
        }
    }
    assert_eq!(sse_values, values);
    drop(r);
    srv.stop().await.unwrap();
}

/// Idempotent producers and `Stream-Seq` on the metrics stream: a retried
/// batch is answered as a duplicate and never counted twice, before and
/// after a restart; fenced, gapped and regressing writes change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_stream_producers_write_each_batch_once() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path()).await;
    let http = reqwest::Client::new();
    let metrics = url(&srv, "metrics");
    // Each batch's points have times of their own: a point at the same
    // series and time as an earlier one would replace it (one value per
    // series and time), and the count below is of batches kept once.
    let produce = |metrics: &str, epoch: u64, seq: u64| {
        let time = epoch * 100 + seq;
        let body = format!(
            r#"[{{"time":{time},"metric":"up","value":1}},{{"time":{time},"metric":"up","tags":{{"e":"{epoch}"}},"value":2}}]"#
        );
        producer_post(
            &http,
            metrics,
            ("collector-7", epoch, seq),
            "application/json",
            body,
        )
    };
    async fn count(addr: std::net::SocketAddr) -> i64 {
        let mut c = Client::connect(&format!("http://{addr}")).await.unwrap();
        let (_, b) = c.query("SELECT count(*) FROM metrics").await.unwrap();
        let n = b[0]
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>();
        n.unwrap().value(0)
    }

    let first = produce(&metrics, 0, 0).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(header(&first, "producer-epoch"), "0");
    assert_eq!(header(&first, "producer-seq"), "0");
    let retry = produce(&metrics, 0, 0).send().await.unwrap();
    assert_eq!(retry.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&retry, "producer-seq"), "0");
    assert_eq!(header(&retry, TAIL), header(&first, TAIL));
    assert_eq!(
        produce(&metrics, 0, 1).send().await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(count(srv.addr).await, 4);

    // Stopping flushes: after the restart the manifest holds the table.
    srv.stop().await.unwrap();
    let srv = start(dir.path()).await;
    let metrics = url(&srv, "metrics");
    let retry = produce(&metrics, 0, 1).send().await.unwrap();
    assert_eq!(retry.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&retry, "producer-seq"), "1");
    let gap = produce(&metrics, 0, 3).send().await.unwrap();
    assert_eq!(gap.status(), StatusCode::CONFLICT);
    assert_eq!(header(&gap, "producer-expected-seq"), "2");
    assert_eq!(header(&gap, "producer-received-seq"), "3");
    assert_eq!(
        produce(&metrics, 1, 0).send().await.unwrap().status(),
        StatusCode::OK
    );
    let zombie = produce(&metrics, 0, 2).send().await.unwrap();
    assert_eq!(zombie.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&zombie, "producer-epoch"), "1");
    let seq = |s: &str| {
        http.post(&metrics)
            .header("content-type", "application/json")
            .header("stream-seq", s.to_string())
            .body(r#"{"time":9,"metric":"seq","value":1}"#)
    };
    assert_eq!(
        seq("0002").send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let stale = seq("0001").send().await.unwrap();
    assert_eq!(stale.status(), StatusCode::CONFLICT);
    assert!(stale.text().await.unwrap().contains("Stream-Seq"));
    let half = http
        .post(&metrics)
        .header("content-type", "application/json")
        .header("producer-id", "x")
        .body(r#"{"time":9,"metric":"seq","value":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(half.status(), StatusCode::BAD_REQUEST);
    assert_eq!(count(srv.addr).await, 7, "2 + 2 + 2 + 1: every batch once");
    srv.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path()).await;
    let http = reqwest::Client::new();
    let s = url(&srv, "j");
    let r = http
        .put(&s)
        .header("content-type", "application/json")
        .body("[1]")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let tail = header(&r, TAIL);
    let post = |ct: &str, body: Vec<u8>| {
        http.post(&s)
            .header("content-type", ct.to_string())
            .body(body)
    };
    let cases = [
        (
            post("application/json", vec![b'1'; 100 << 10]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "",
        ),
        (
            post("application/json", b"{nope".to_vec()),
            StatusCode::BAD_REQUEST,
            "invalid JSON",
        ),
        (
            post("application/json", b"[]".to_vec()),
            StatusCode::BAD_REQUEST,
            "empty JSON array",
        ),
        (
            post("text/plain", b"x".to_vec()),
            StatusCode::CONFLICT,
            "does not match",
        ),
        (
            http.get(&s).query(&[("offset", "12")]),
            StatusCode::BAD_REQUEST,
            "invalid offset",
        ),
        (
            http.get(&s)
                .query(&[("offset", "9999999999999999_0000000000000000")]),
            StatusCode::BAD_REQUEST,
            "beyond the end",
        ),
        (
            http.get(&s).query(&[
                ("offset", "9999999999999999_0000000000000000"),
                ("live", "sse"),
            ]),
            StatusCode::BAD_REQUEST,
            "beyond the end",
        ),
        (
            http.get(url(&srv, "metrics")).query(&[
                ("offset", "9999999999999999_0000000000000000"),
                ("live", "sse"),
            ]),
            StatusCode::BAD_REQUEST,
            "beyond the end",
        ),
        (
            http.delete(url(&srv, "metrics")),
            StatusCode::METHOD_NOT_ALLOWED,
            "cannot be deleted",
        ),
        (
            http.post(url(&srv, "metrics"))
                .header("content-type", "application/json")
                .body(r#"{"time": 1, "metric": "m", "value": "high"}"#),
            StatusCode::BAD_REQUEST,
            "point 0",
        ),
    ];
    for (req, status, text) in cases {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), status);
        assert_eq!(header(&r, "x-content-type-options"), "nosniff");
        let body = r.text().await.unwrap();
        assert!(body.contains(text), "{body:?} should mention {text:?}");
    }
    let r = http.get(&s).send().await.unwrap();
    assert_eq!(header(&r, TAIL), tail);
    assert_eq!(r.text().await.unwrap(), "[1]");
    srv.stop().await.unwrap();
}

/// Flushing puts the metrics stream's points in chunks; the log keeps the
/// flushed records readable for `stream_retention`, so a reader from the
/// start still gets everything. Without retention the flushed segments go,
/// and their offsets answer 410 Gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_stream_stays_readable_after_a_flush_within_retention() {
    for keep in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = common::config(dir.path());
        config.engine.log.segment_bytes = 512;
        config.engine.log.stream_retention = if keep {
            streamdb::stream::Retention {
                age: std::time::Duration::from_secs(3600),
                bytes: 1 << 30,
            }
        } else {
            streamdb::stream::Retention::NONE
        };
        let srv = server::start(config).await.unwrap();
        let http = reqwest::Client::new();
        let metrics = url(&srv, "metrics");
        let mut first = None;
        for i in 0..20 {
            let body = format!(
                r#"{{"time":{},"metric":"m","tags":{{"host":"h{i}"}},"value":{i}}}"#,
                common::T0 + i
            );
            let r = post_json(&http, &metrics, body).await;
            assert_eq!(r.status(), StatusCode::NO_CONTENT);
            first.get_or_insert(header(&r, TAIL));
        }
        srv.engine.flush().await.unwrap();
        let mut values = Vec::new();
        let mut offset = "-1".to_string();
        loop {
            let r = http
                .get(&metrics)
                .query(&[("offset", offset.as_str())])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            offset = header(&r, TAIL);
            let done = header(&r, "stream-up-to-date") == "true";
            let got: Vec<serde_json::Value> =
                serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
            values.extend(got.iter().map(|p| p["value"].as_f64().unwrap()));
            if done {
                break;
            }
        }
        let old = http
            .get(&metrics)
            .query(&[("offset", first.as_deref().unwrap())])
            .send()
            .await
            .unwrap()
            .status();
        let old_sse = http
            .get(&metrics)
            .query(&[("offset", first.as_deref().unwrap()), ("live", "sse")])
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(
            old_sse, old,
            "SSE answers a bad offset like a catch-up read"
        );
        if keep {
            let want: Vec<f64> = (0..20).map(|i| i as f64).collect();
            assert_eq!(values, want, "every point from the start");
            assert_eq!(old, StatusCode::OK);
        } else {
            assert!(values.len() < 20, "flushed segments were removed");
            assert_eq!(old, StatusCode::GONE);
        }
        srv.stop().await.unwrap();
    }
}

/// The follower's reader against a real server: data, an idle long-poll,
/// a closed stream, a stream that does not exist yet (worth retrying) and
/// an offset past retention (not worth retrying).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_reader_tells_every_answer_apart() {
    use std::time::Duration;
    use streamdb::stream::client::{ClientError, Poll, RemoteStream, StreamReader};
    let reader_of = |url: &str| {
        StreamReader::new(
            RemoteStream::new(url, None).unwrap(),
            Duration::from_millis(200),
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.streams.long_poll_timeout = Duration::from_millis(200);
    config.engine.log.segment_bytes = 256;
    let srv = server::start(config).await.unwrap();
    let http = reqwest::Client::new();
    let events = url(&srv, "events");

    let missing = reader_of(&events);
    let err = missing.poll("-1").await.unwrap_err();
    assert!(matches!(err, ClientError::NotFound { .. }), "{err}");
    assert!(err.is_transient(), "a follower may start before its source");

    let created = http
        .put(&events)
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{}", created.status());
    let r = post_json(&http, &events, r#"{"a":1}"#).await;
    assert!(r.status().is_success());
    let reader = reader_of(&events);
    let Poll::Data { body, next } = reader.poll("-1").await.unwrap() else {
        panic!("data expected")
    };
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        serde_json::json!([{"a": 1}])
    );
    assert!(matches!(reader.poll(&next).await.unwrap(), Poll::Idle { next: n } if n == next));
    let closed = http
        .post(&events)
        .header("stream-closed", "true")
        .send()
        .await
        .unwrap();
    assert!(closed.status().is_success(), "{}", closed.status());
    assert!(matches!(
        reader.poll(&next).await.unwrap(),
        Poll::Closed { .. }
    ));

    // Flushed metrics records with no retention are gone: 410, final.
    let metrics = url(&srv, "metrics");
    let mut first = None;
    for i in 0..10 {
        let body = format!(r#"{{"time":{},"metric":"m","value":{i}}}"#, common::T0 + i);
        let r = post_json(&http, &metrics, body).await;
        first.get_or_insert(header(&r, TAIL));
    }
    srv.engine.flush().await.unwrap();
    let reader = reader_of(&metrics);
    let err = reader.poll(first.as_deref().unwrap()).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Gone { .. }) && !err.is_transient(),
        "{err}"
    );
    srv.stop().await.unwrap();
}
