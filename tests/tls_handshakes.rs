//! TLS handshakes are bounded without locking clients out: idle TCP
//! connections (a port scanner, a slowloris) neither fill the handshake
//! slots for everyone nor outlive --tls-handshake-timeout, and one address
//! cannot hold more than its share. Certificates: tests/fixtures/tls (a
//! test CA and a localhost certificate, valid for a century).

#[allow(dead_code)]
mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

use streamdb::server::{self, HandshakeLimits, RunningServer};

/// Long enough for a handshake on a loaded CI machine many times over,
/// far shorter than a stalled one waits.
const PROMPTLY: Duration = Duration::from_secs(5);

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

async fn start(dir: &std::path::Path, limits: HandshakeLimits) -> RunningServer {
    let mut cfg = common::config(dir);
    cfg.tls = Some((fixture("cert.pem"), fixture("key.pem")));
    cfg.tls_handshake = limits;
    server::start(cfg).await.unwrap()
}

fn connector() -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(fixture("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new(IpAddr::V4(from), 0)).unwrap();
    s.connect(to).await.unwrap()
}

/// `GET /health` over HTTPS from `from`, within [`PROMPTLY`].
async fn https_health(from: Ipv4Addr, to: SocketAddr) -> Result<String, String> {
    let call = async {
        let tcp = connect_from(from, to).await;
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = connector()
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut out = String::new();
        tls.read_to_string(&mut out)
            .await
            .map_err(|e| e.to_string())?;
        Ok(out)
    };
    tokio::time::timeout(PROMPTLY, call)
        .await
        .map_err(|_| format!("no HTTPS answer within {PROMPTLY:?}"))?
}

/// Whether the server closed `s` (EOF or reset) within [`PROMPTLY`].
async fn closed(mut s: TcpStream) -> bool {
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(PROMPTLY, s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

const IDLER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const CLIENT: Ipv4Addr = Ipv4Addr::LOCALHOST;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tcp_connections_do_not_lock_tls_clients_out() {
    let dir = tempfile::tempdir().unwrap();
    // A long timeout: it is the slots, not the timeout, that must keep
    // the way open.
    let limits = HandshakeLimits {
        timeout: Duration::from_secs(60),
        ..HandshakeLimits::default()
    };
    let srv = start(dir.path(), limits).await;
    for idlers in [1, 100, 300] {
        let mut idle = Vec::new();
        for _ in 0..idlers {
            idle.push(connect_from(IDLER, srv.addr).await);
        }
        for attempt in 0..3 {
            let answer = https_health(CLIENT, srv.addr).await;
            assert!(
                answer.as_deref().is_ok_and(|a| a.ends_with("ok")),
                "with {idlers} idle connections, attempt {attempt}: {answer:?}"
            );
        }
    }
    srv.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_past_the_per_address_cap_are_closed_and_the_slots_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let limits = HandshakeLimits {
        timeout: Duration::from_secs(60),
        max_pending_per_ip: 4,
        ..HandshakeLimits::default()
    };
    let srv = start(dir.path(), limits).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect_from(IDLER, srv.addr).await);
    }
    // Let the server take the four before the ones over the cap arrive.
    let answer = https_health(CLIENT, srv.addr).await;
    assert!(answer.is_ok(), "{answer:?}");
    let mut over = Vec::new();
    for _ in 0..6 {
        over.push(connect_from(IDLER, srv.addr).await);
    }
    let closed_now = futures::future::join_all(over.into_iter().map(closed)).await;
    assert_eq!(closed_now, vec![true; 6], "connections over the cap of 4");
    // Another address is not affected; the idler's own slots come back
    // once its connections go.
    let answer = https_health(CLIENT, srv.addr).await;
    assert!(answer.is_ok(), "{answer:?}");
    drop(held);
    let mut answer = https_health(IDLER, srv.addr).await;
    for _ in 0..50 {
        if answer.is_ok() {
            break;
        }
        // The server notices the dropped connections when it next polls
        // them; give it a moment.
        tokio::time::sleep(Duration::from_millis(100)).await;
        answer = https_health(IDLER, srv.addr).await;
    }
    assert!(
        answer.is_ok(),
        "after its idle connections closed: {answer:?}"
    );
    srv.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_at_the_handshake_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let limits = HandshakeLimits {
        timeout: Duration::from_millis(200),
        ..HandshakeLimits::default()
    };
    let srv = start(dir.path(), limits).await;
    let silent: Vec<_> =
        futures::future::join_all((0..20).map(|_| connect_from(IDLER, srv.addr))).await;
    let closed_now = futures::future::join_all(silent.into_iter().map(closed)).await;
    assert_eq!(closed_now, vec![true; 20]);
    let answer = https_health(CLIENT, srv.addr).await;
    assert!(answer.is_ok(), "{answer:?}");
    srv.stop().await.unwrap();
}
