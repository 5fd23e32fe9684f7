//! TLS for the whole port (`--tls-cert`, `--tls-key`): gRPC and HTTPS side
//! by side. The handshake is done here rather than by tonic because tonic
//! only offers ALPN `h2`, which HTTP/1.1 clients (curl --http1.1, browsers'
//! fetch on some stacks, Python's urllib) cannot negotiate; this acceptor
//! offers `h2` and `http/1.1`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Loads a PEM certificate chain and private key into an acceptor.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("reading certificates from {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("reading the private key from {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key do not form a usable identity: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A TLS connection tonic can serve.
pub struct TlsConn(TlsStream<TcpStream>);

impl Connected for TlsConn {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        self.0.get_ref().0.connect_info()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

/// How handshakes are bounded. A pending handshake costs a socket and a
/// few KiB, so many may wait at once; what keeps idle or slow handshakers
/// from locking everyone else out is the short timeout and the cap per
/// address (an address over it has its new connections closed at once).
#[derive(Clone, Debug)]
pub struct HandshakeLimits {
    /// How long a client has to finish its handshake (`--tls-handshake-timeout`).
    pub timeout: Duration,
    /// Handshakes in progress at once; more wait in the listen backlog
    /// (`--tls-max-handshakes`).
    pub max_pending: usize,
    /// Handshakes in progress from one IP address at once
    /// (`--tls-max-handshakes-per-ip`).
    pub max_pending_per_ip: usize,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            max_pending: 4096,
            max_pending_per_ip: 128,
        }
    }
}

/// Handshakes in progress, by peer address.
#[derive(Default)]
struct PerIp(Mutex<HashMap<IpAddr, usize>>);

/// One handshake's place in [`PerIp`], given back on drop.
struct Slot(Arc<PerIp>, IpAddr);

impl PerIp {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<Slot> {
        let mut m = self.0.lock().expect("per-ip map poisoned");
        let n = m.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot(self.clone(), ip))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = self.0 .0.lock().expect("per-ip map poisoned");
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

/// Accepted TCP connections after their TLS handshake. A failed handshake
/// (a plain-HTTP client, an untrusted certificate), one past its timeout
/// and one over its address's cap drop that connection only; many
/// handshakes run at once so a slow one blocks no one.
pub fn incoming(
    tcp: impl Stream<Item = std::io::Result<TcpStream>> + Send + 'static,
    acceptor: TlsAcceptor,
    limits: HandshakeLimits,
) -> impl Stream<Item = std::io::Result<TlsConn>> + Send + 'static {
    let per_ip = Arc::new(PerIp::default());
    let pending = limits.max_pending;
    tcp.filter_map(|s| async move { s.ok() })
        .map(move |s| handshake(s, acceptor.clone(), per_ip.clone(), limits.clone()))
        .buffer_unordered(pending)
        .filter_map(|c| async move { c.map(Ok) })
}

async fn handshake(
    s: TcpStream,
    acceptor: TlsAcceptor,
    per_ip: Arc<PerIp>,
    limits: HandshakeLimits,
) -> Option<TlsConn> {
    let peer = s.peer_addr().ok()?;
    let Some(_slot) = per_ip.take(peer.ip(), limits.max_pending_per_ip) else {
        crate::telemetry::metrics().limited("tls_handshakes_per_ip");
        tracing::debug!(%peer, "TLS handshakes from this address at --tls-max-handshakes-per-ip; connection closed");
        return None;
    };
    match tokio::time::timeout(limits.timeout, acceptor.accept(s)).await {
        Ok(Ok(tls)) => Some(TlsConn(tls)),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            crate::telemetry::metrics().limited("tls_handshake_timeout");
            tracing::debug!(%peer, "TLS handshake timed out (--tls-handshake-timeout)");
            None
        }
    }
}
