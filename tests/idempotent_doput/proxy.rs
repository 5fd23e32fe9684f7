//! A TCP proxy on 127.0.0.1 that cuts connections: each of the first
//! `cuts` connections is closed after a seeded random number of bytes
//! (both directions counted), later ones pass everything. What a flaky
//! network does to a DoPut: requests lost, acknowledgements lost.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct FlakyProxy {
    pub addr: SocketAddr,
    /// Connections cut so far.
    pub cut: Arc<AtomicUsize>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl FlakyProxy {
    /// Forwards to `target`, cutting the first `cuts` connections after
    /// 1..=`max_bytes` bytes each.
    pub async fn start(target: SocketAddr, seed: u64, cuts: usize, max_bytes: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicUsize::new(0));
        let counted = cut.clone();
        let accept = tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut opened = 0;
            while let Ok((client, _)) = listener.accept().await {
                let budget = if opened < cuts {
                    rng.random_range(1..=max_bytes) as isize
                } else {
                    isize::MAX
                };
                opened += 1;
                tokio::spawn(forward(client, target, budget, counted.clone()));
            }
        });
        Self { addr, cut, accept }
    }
}

async fn forward(client: TcpStream, target: SocketAddr, budget: isize, cut: Arc<AtomicUsize>) {
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let budget = Arc::new(AtomicIsize::new(budget));
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = tokio::spawn(pipe(cr, sw, budget.clone()));
    let down = tokio::spawn(pipe(sr, cw, budget.clone()));
    // Either direction ending (a cut, or a side closing) ends both: the
    // halves are dropped and the sockets closed.
    let (up_abort, down_abort) = (up.abort_handle(), down.abort_handle());
    let cut_now = tokio::select! {
        r = up => r.unwrap_or(false),
        r = down => r.unwrap_or(false),
    };
    up_abort.abort();
    down_abort.abort();
    if cut_now {
        cut.fetch_add(1, Ordering::Relaxed);
    }
}

/// Copies until EOF (false) or until the shared budget runs out (true:
/// the part of the read that fits is sent, the rest lost).
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    budget: Arc<AtomicIsize>,
) -> bool {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        let left = budget.fetch_sub(n as isize, Ordering::AcqRel);
        let send = n.min(left.max(0) as usize);
        if to.write_all(&buf[..send]).await.is_err() {
            return false;
        }
        if send < n {
            return true;
        }
    }
}
