//! `--read-only-token`: such a token queries, subscribes and reads streams
//! through every client path, and every way of writing (DoPut to the
//! metrics path, Flight SQL ingest and update commands, each HTTP write
//! method on every route) is refused with PERMISSION_DENIED / 403 naming
//! the flag, with nothing written.

use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::CommandStatementIngest;
use futures::TryStreamExt;
use tonic::transport::Channel;

use super::common::{config, cpu_batch};
use streamdb::server;
use streamdb_client::{Client, ConnectOptions};

const WRITER: &str = "writer-token-for-tests";
const READER: &str = "reader-token-for-tests";

async fn start() -> (tempfile::TempDir, server::RunningServer) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.auth_tokens = vec![WRITER.into()];
    cfg.read_only_tokens = vec![READER.into()];
    let srv = server::start(cfg).await.unwrap();
    (dir, srv)
}

async fn client(srv: &server::RunningServer, token: &str) -> Client {
    let options = ConnectOptions {
        token: Some(token.into()),
        ..ConnectOptions::default()
    };
    Client::connect_with(&format!("http://{}", srv.addr), options)
        .await
        .unwrap()
}

async fn rows(client: &mut Client) -> i64 {
    let (_, b) = client
        .query("SELECT count(*) AS n FROM metrics")
        .await
        .unwrap();
    b[0].column(0)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap()
        .value(0)
}

async fn sql_client(srv: &server::RunningServer, token: &str) -> FlightSqlServiceClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", srv.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = FlightSqlServiceClient::new(channel);
    c.set_token(token.into());
    c
}

fn is_read_only_refusal(e: &impl std::fmt::Display) -> bool {
    e.to_string().contains("--read-only-token")
}

/// A raw DoPut to the metrics path with `token`: its gRPC status.
async fn raw_put_status(srv: &server::RunningServer, token: &str) -> tonic::Code {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", srv.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = arrow_flight::FlightClient::new(channel);
    c.add_header("authorization", &format!("Bearer {token}"))
        .unwrap();
    let data = arrow_flight::encode::FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(arrow_flight::FlightDescriptor::new_path(vec![
            "metrics".into(),
        ])))
        .build(futures::stream::iter([Ok(cpu_batch(
            &["r"],
            &[9.0],
            1_000,
        ))]));
    let put = async { c.do_put(data).await?.try_collect::<Vec<_>>().await };
    match put.await {
        Ok(_) => tonic::Code::Ok,
        Err(arrow_flight::error::FlightError::Tonic(s)) => s.code(),
        Err(e) => panic!("not a gRPC status: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_token_queries_but_cannot_write() {
    let (_dir, srv) = start().await;
    let mut writer = client(&srv, WRITER).await;
    writer
        .write(vec![cpu_batch(&["a", "b"], &[1.0, 2.0], 1_000)])
        .await
        .unwrap();
    let mut reader = client(&srv, READER).await;
    assert_eq!(rows(&mut reader).await, 2, "a read-only token queries");
    reader.status().await.expect("status is a read");

    // DoPut to the metrics path.
    let err = reader
        .write(vec![cpu_batch(&["c"], &[3.0], 1_000)])
        .await
        .expect_err("a read-only DoPut");
    assert!(is_read_only_refusal(&err), "{err}");
    assert_eq!(
        raw_put_status(&srv, READER).await,
        tonic::Code::PermissionDenied
    );

    // Flight SQL: queries and prepared statements go; ingest and update
    // commands do not.
    let mut sql = sql_client(&srv, READER).await;
    let info = sql
        .execute("SELECT count(*) FROM metrics".into(), None)
        .await
        .unwrap();
    assert_eq!(info.endpoint.len(), 1);
    let mut prepared = sql
        .prepare("SELECT 1".into(), None)
        .await
        .expect("prepare is a read");
    prepared.execute().await.expect("a prepared query runs");
    let ingest = CommandStatementIngest {
        table: "metrics".into(),
        ..Default::default()
    };
    let batches = futures::stream::iter([Ok(cpu_batch(&["d"], &[4.0], 1_000))]);
    let err = sql
        .execute_ingest(ingest, batches)
        .await
        .expect_err("read-only ingest");
    assert!(is_read_only_refusal(&err), "ingest: {err}");
    let err = sql
        .execute_update("DELETE FROM metrics WHERE true".into(), None)
        .await
        .expect_err("read-only update");
    assert!(is_read_only_refusal(&err), "update: {err}");

    // SUBSCRIBE is a read.
    let mut sub = reader
        .subscribe("SUBSCRIBE TO SELECT count(*) FROM metrics")
        .await
        .unwrap();
    let first = sub.next().await.expect("a snapshot").expect("no error");
    assert_eq!(first.kind, "snapshot");

    // A writer still writes; nothing the reader sent landed.
    writer
        .write(vec![cpu_batch(&["e"], &[5.0], 1_000)])
        .await
        .unwrap();
    assert_eq!(rows(&mut writer).await, 3);
    srv.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_token_cannot_write_over_http_by_any_method() {
    let (_dir, srv) = start().await;
    let base = format!("http://{}", srv.addr);
    let http = reqwest::Client::new();
    let send = |method: &str, path: &str, token: &str| {
        http.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{base}{path}"),
        )
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(r#"{"time":1705276800000000,"metric":"cpu","tags":{"host":"h"},"value":1}"#)
        .send()
    };
    // The writer makes a named stream to read.
    let made = send("PUT", "/v1/stream/readable", WRITER).await.unwrap();
    assert!(made.status().is_success(), "{}", made.status());
    for path in [
        "/v1/stream/metrics",
        "/v1/stream/readable",
        "/v1/stream/new-one",
        "/v1/query",
        "/v1/status",
        "/nowhere",
    ] {
        for method in ["POST", "PUT", "DELETE", "PATCH", "BREW"] {
            if method == "POST" && path == "/v1/query" {
                continue;
            }
            let r = send(method, path, READER).await.unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            assert_eq!(status, 403, "{method} {path}: {text}");
            assert!(
                text.contains("--read-only-token"),
                "{method} {path}: {text}"
            );
        }
    }
    // Reads: SQL by GET and POST, the status, a stream.
    for (method, path) in [
        ("GET", "/v1/query?sql=SELECT%201"),
        ("POST", "/v1/query?sql=SELECT%201"),
        ("GET", "/v1/status"),
        ("GET", "/v1/stream/readable?offset=-1"),
        ("HEAD", "/v1/stream/readable"),
    ] {
        let r = http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{base}{path}"),
            )
            .bearer_auth(READER)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{method} {path}: {}", r.status());
    }
    // Nothing the reader sent was written or created.
    let mut writer = client(&srv, WRITER).await;
    assert_eq!(rows(&mut writer).await, 0);
    let gone = send("GET", "/v1/stream/new-one", WRITER).await.unwrap();
    assert_eq!(gone.status().as_u16(), 404);
    srv.stop().await.unwrap();
}
