//! A loopback TCP proxy that counts, cuts and throttles what the upstream sends back.
//!
//! It sits in front of a real server (a `docker-registry`, say) that has no fault injection of
//! its own: the tests cut a blob download mid-body to exercise Range resume, and the benches
//! read how many bytes the upstream served. It works on bytes, so HTTP keep-alive, ranges and
//! redirects pass through untouched.

use crate::serve::Server;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Default)]
struct Shared {
    /// Bytes sent from upstream to clients, over all connections.
    down: AtomicU64,
    /// Connections accepted.
    connections: AtomicU32,
    /// Cut the next `cut_times` connections after `cut_after` bytes downstream.
    cut_after: AtomicU64,
    cut_times: AtomicU32,
    /// Connections cut so far.
    cuts: AtomicU32,
    /// Downstream bytes per second per connection (0 = unlimited).
    throttle: AtomicU64,
}

/// A running proxy; dropping it stops it.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Stops and joins the proxy when dropped.
    _server: Server,
}

impl Proxy {
    /// Listens on 127.0.0.1:0 and forwards every connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> io::Result<Proxy> {
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        let server = Server::start("bootvault-proxy", 2, move |listener| async move {
            let accept = async move {
                while let Ok((conn, _)) = listener.accept().await {
                    let s = Arc::clone(&s);
                    tokio::spawn(async move {
                        let _ = serve(conn, upstream, s).await;
                    });
                }
            };
            let _ = tokio::spawn(accept).await;
        })?;
        Ok(Proxy {
            addr: server.addr(),
            shared,
            _server: server,
        })
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cuts the next `times` connections that reach `bytes` sent downstream.
    pub fn cut_after(&self, bytes: u64, times: u32) {
        self.shared.cut_after.store(bytes, Relaxed);
        self.shared.cut_times.store(times, Relaxed);
    }

    /// Limits each connection to `bytes_per_sec` downstream (0: no limit).
    pub fn throttle(&self, bytes_per_sec: u64) {
        self.shared.throttle.store(bytes_per_sec, Relaxed);
    }

    /// Bytes the upstream sent to clients through this proxy.
    pub fn bytes_down(&self) -> u64 {
        self.shared.down.load(Relaxed)
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> u32 {
        self.shared.cuts.load(Relaxed)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u32 {
        self.shared.connections.load(Relaxed)
    }
}

async fn serve(
    client: tokio::net::TcpStream,
    upstream: SocketAddr,
    s: Arc<Shared>,
) -> io::Result<()> {
    s.connections.fetch_add(1, Relaxed);
    let server = tokio::net::TcpStream::connect(upstream).await?;
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut cr, &mut sw).await;
        let _ = sw.shutdown().await;
    });
    let mut sent = 0u64;
    let mut buf = vec![0u8; 16 * 1024];
    let started = tokio::time::Instant::now();
    loop {
        let n = sr.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        let mut n = n;
        // A connection is cut when it reaches the limit while cuts remain (so short exchanges,
        // like a registry ping on its own connection, do not use up a cut).
        let limit = s.cut_after.load(Relaxed);
        if sent + n as u64 >= limit
            && s.cut_times
                .fetch_update(Relaxed, Relaxed, |t| t.checked_sub(1))
                .is_ok()
        {
            n = limit.saturating_sub(sent) as usize;
            cw.write_all(&buf[..n]).await?;
            s.down.fetch_add(n as u64, Relaxed);
            s.cuts.fetch_add(1, Relaxed);
            // Drop both halves: the client sees the body end early.
            up.abort();
            return Ok(());
        }
        cw.write_all(&buf[..n]).await?;
        sent += n as u64;
        s.down.fetch_add(n as u64, Relaxed);
        let rate = s.throttle.load(Relaxed);
        if rate > 0 {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            tokio::time::sleep_until(started + due).await;
        }
    }
    let _ = cw.shutdown().await;
    let _ = up.await;
    Ok(())
}
