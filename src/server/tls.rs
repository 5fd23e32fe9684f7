//! TLS for the whole port (`--tls-cert`, `--tls-key`): gRPC and HTTPS side
//! by side. The handshake is done here rather than by tonic because tonic
//! only offers ALPN `h2`, which HTTP/1.1 clients (curl --http1.1, browsers'
//! fetch on some stacks, Python's urllib) cannot negotiate; this acceptor
//! offers `h2` and `http/1.1`.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Handshakes in progress at once; more wait their turn in the backlog.
const CONCURRENT_HANDSHAKES: usize = 128;

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

/// Accepted TCP connections after their TLS handshake. A failed handshake
/// (a plain-HTTP client, an untrusted certificate) drops that connection
/// only; several handshakes run at once so a slow one blocks no one.
pub fn incoming(
    tcp: impl Stream<Item = std::io::Result<TcpStream>> + Send + 'static,
    acceptor: TlsAcceptor,
) -> impl Stream<Item = std::io::Result<TlsConn>> + Send + 'static {
    tcp.filter_map(|s| async move { s.ok() })
        .map(move |s| {
            let acceptor = acceptor.clone();
            async move {
                let peer = s.peer_addr().ok();
                match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(s))
                    .await
                {
                    Ok(Ok(tls)) => Some(TlsConn(tls)),
                    Ok(Err(e)) => {
                        tracing::debug!(?peer, error = %e, "TLS handshake failed");
                        None
                    }
                    Err(_) => {
                        tracing::debug!(?peer, "TLS handshake timed out");
                        None
                    }
                }
            }
        })
        .buffer_unordered(CONCURRENT_HANDSHAKES)
        .filter_map(|c| async move { c.map(Ok) })
}
