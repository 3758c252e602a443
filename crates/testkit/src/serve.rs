//! The one server start-up of the kit: a listener on 127.0.0.1:0, served on its own thread
//! with its own tokio runtime (so a server works from plain synchronous code and from any
//! test, whatever runtime the caller uses), stopped and joined when its handle is dropped.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::oneshot;

/// A running server; dropping it stops the server and joins its thread.
pub(crate) struct Server {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds 127.0.0.1:0 and runs `serve(listener)` on a thread named `name` with a runtime of
    /// `workers` threads (`NAME-worker`), until the server ends or the handle is dropped.
    pub(crate) fn start<F, Fut>(name: &str, workers: usize, serve: F) -> io::Result<Server>
    where
        F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name(format!("{name}-worker"))
            .enable_all()
            .build()?;
        let listener = {
            let _guard = rt.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let (tx, rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                rt.block_on(async move {
                    tokio::select! {
                        _ = serve(listener) => {}
                        _ = rx => {}
                    }
                });
                // Not graceful on purpose: stalled or throttled connections must not block Drop.
                rt.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(Server {
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// [`Server::start`] serving an axum router.
    pub(crate) fn axum(name: &str, workers: usize, app: axum::Router) -> io::Result<Server> {
        Server::start(name, workers, move |listener| async move {
            let _ = axum::serve(listener, app).await;
        })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
