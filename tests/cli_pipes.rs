//! The command-line tools and broken connections: a server that drops the
//! connection mid-write is an error the command reports (and its retries
//! see), never death by SIGPIPE; a standard output closed by its reader
//! (`streamdb status | head -1`) ends the command quietly.

#[allow(dead_code)]
mod common;

use std::process::{Command, Stdio};

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

fn streamdb() -> Command {
    Command::new(env!("CARGO_BIN_EXE_streamdb"))
}

/// Accepts connections and drops each after reading `read` bytes (0:
/// at once), the way a crashing server or a cutting proxy does.
async fn dropping_server(read: usize) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = vec![0u8; read];
            let _ = s.read_exact(&mut buf).await;
            drop(s);
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_mid_ingest_is_an_error_not_sigpipe() {
    let dir = tempfile::tempdir().unwrap();
    let file = common::ndjson_points(dir.path(), 20_000);
    for read in [0, 1, 24, 100, 1_000, 10_000] {
        let addr = dropping_server(read).await;
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_streamdb"))
            .args(["ingest", "--batch-size", "5000", "--retries", "2"])
            .arg("--server")
            .arg(format!("http://{addr}"))
            .arg("--file")
            .arg(&file)
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "dropped after {read} bytes: {:?} (a signal, if no code), stderr {stderr}",
            out.status
        );
        assert!(
            stderr.contains("error:"),
            "dropped after {read} bytes: {stderr}"
        );
    }
}

/// Runs `cmd` with its standard output a pipe whose reader has already
/// gone: it must exit 0 with nothing on stderr.
fn assert_quiet_on_closed_stdout(mut cmd: Command, what: &str) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{what}: {:?}, stderr {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_each_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let srv = streamdb::server::start(common::config(dir.path()))
        .await
        .unwrap();
    let server = format!("http://{}", srv.addr);
    let file = common::ndjson_points(dir.path(), 100);
    let mut ingest = streamdb();
    ingest
        .args(["ingest", "--server", &server, "--file"])
        .arg(&file);
    let mut cases = vec![("ingest", ingest)];
    let mut completions = streamdb();
    completions.args(["completions", "bash"]);
    cases.push(("completions", completions));
    let mut status = streamdb();
    status.args(["status", "--server", &server]);
    cases.push(("status", status));
    for format in ["table", "csv", "json", "arrow"] {
        let mut query = streamdb();
        query.args([
            "query",
            "--server",
            &server,
            "--format",
            format,
            "SELECT * FROM metrics",
        ]);
        cases.push(("query", query));
    }
    for (what, cmd) in cases {
        // The commands block on their own runtime; keep ours free.
        tokio::task::spawn_blocking(move || assert_quiet_on_closed_stdout(cmd, what))
            .await
            .unwrap();
    }
    srv.stop().await.unwrap();
}
