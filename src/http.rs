//! The store's HTTP settings, its one client builder and the one runtime helper of its blocking
//! calls, below the asset fetcher, the delta patcher and the registry client that all use them.

use std::path::PathBuf;
use std::time::Duration;

/// Network behaviour of a store.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct FetchOptions {
    /// Rounds over the URL list after the first (so `retries + 1` tries per URL at most).
    pub retries: u32,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Longest silence while reading a response.
    pub idle_timeout: Duration,
    /// First backoff delay; doubled each round, with full jitter.
    pub backoff: Duration,
    /// Largest backoff delay (and cap on Retry-After).
    pub max_backoff: Duration,
    /// Extra trusted CA certificates (PEM files), on top of the OS trust store and the
    /// bundled web roots: for a host behind a corporate CA or a private registry.
    pub ca_certificates: Vec<PathBuf>,
    /// Largest download of an asset whose manifest gives no size (a lying `Content-Length`
    /// or an endless body is cut off here).
    pub max_size: u64,
    /// Free space kept on the state dir's filesystem: a download that would leave less fails
    /// (checked before it starts, with the announced size, and every 64 MiB while it runs).
    pub min_free_bytes: u64,
    /// OCI registries (`oci://` sources): mirrors, plain-HTTP hosts, credentials.
    pub oci: crate::oci_options::OciOptions,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            retries: 4,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(10),
            ca_certificates: Vec::new(),
            max_size: 16 << 30,
            min_free_bytes: 64 << 20,
            oci: crate::oci_options::OciOptions::default(),
        }
    }
}

/// The default client: connect and idle timeouts, the OS trust store plus the bundled web
/// roots, and any extra CA of `opts`.
pub(crate) fn build_client(opts: &FetchOptions) -> std::result::Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(opts.connect_timeout)
        .read_timeout(opts.idle_timeout)
        .user_agent(concat!("bootvault/", env!("CARGO_PKG_VERSION")));
    for path in &opts.ca_certificates {
        let pem = crate::manifest::read_text(path, 1 << 20)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|e| format!("{}: not a PEM certificate bundle: {e}", path.display()))?;
        for cert in certs {
            b = b.add_root_certificate(cert);
        }
    }
    b.build().map_err(|e| e.to_string())
}

// ---- the one runtime ---------------------------------------------------------------------------

/// Worker threads of the runtime behind every blocking call. They only drive sockets and timers
/// (a blocking call polls its own future on the calling thread, hashing included), so two are
/// enough for every store of the process.
pub(crate) const RUNTIME_THREADS: usize = 2;

/// The process-wide runtime of the blocking calls (downloads, delta ranges, registry requests,
/// `Store::fetch_document`), started on first use and never dropped, so it cannot be dropped
/// inside an async context. The async entry points never start it: they await on the host's.
fn runtime() -> Result<&'static tokio::runtime::Runtime, String> {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(RUNTIME_THREADS)
        .thread_name("bootvault-http")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the HTTP runtime: {e}"))?;
    if let Err(lost) = RUNTIME.set(rt) {
        // Another thread started one first; this one never ran anything.
        lost.shutdown_background();
    }
    RUNTIME
        .get()
        .ok_or_else(|| "cannot start the HTTP runtime".to_string())
}

/// Why a blocking call is refused inside an async task.
pub(crate) const INSIDE_ASYNC: &str = "a blocking call inside an async task (it would stall the \
     caller's runtime): await the async API, or call it from tokio::task::spawn_blocking";

/// Whether the calling thread is polling a tokio task or a `block_on` future (it has a
/// cooperative budget), as opposed to a plain thread or a closure of tokio's blocking pool
/// (`spawn_blocking`, no budget). `Handle::try_current` cannot tell them apart: it answers
/// inside `spawn_blocking` too, where `Store::prepare_async` and the arcbox adapter block.
/// A constrained budget runs out within 128 units; this spends it (the task yields at its next
/// await), which only happens when the call is refused.
fn polled_by_tokio() -> bool {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    for _ in 0..=256 {
        match tokio::task::coop::poll_proceed(&mut cx) {
            std::task::Poll::Ready(restore) => restore.made_progress(),
            std::task::Poll::Pending => return true,
        }
    }
    false
}

/// Runs `fut` to completion for a blocking caller, on the process-wide runtime: the one
/// `block_on` of the library. Refused (an error, never a panic) inside an async task; works on
/// plain threads and inside `spawn_blocking`.
pub(crate) fn block_on<F: std::future::Future>(fut: F) -> Result<F::Output, String> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Ok(runtime()?.block_on(fut));
    }
    if polled_by_tokio() {
        return Err(INSIDE_ASYNC.into());
    }
    // A runtime context without a budget: tokio's blocking pool (or a task wrapped in
    // `tokio::task::unconstrained`). `Runtime::block_on` would panic in the latter, so the
    // future is polled right here with the process runtime entered (its workers drive the I/O).
    let rt = runtime()?;
    let _entered = rt.enter();
    Ok(park_on(fut))
}

/// Polls `fut` on this thread, parking between wake-ups.
fn park_on<F: std::future::Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let std::task::Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

// ---- the registry's client ---------------------------------------------------------------------

/// What [`build_client`] reads from the options: the timeouts and each extra CA file, with
/// its size and modification time (a replaced bundle builds a new client).
#[derive(PartialEq)]
struct ClientKey {
    connect_timeout: Duration,
    idle_timeout: Duration,
    ca_certificates: Vec<(PathBuf, Option<(u64, std::time::SystemTime)>)>,
}

/// A client for the options, shared by the blocking registry calls made with equal options
/// (one connection pool across `load_manifest`, `publish`, …). They all run on the one
/// runtime, so pooled connections stay usable between calls. At most 8 are kept.
pub(crate) fn shared_client(opts: &FetchOptions) -> Result<reqwest::Client, String> {
    static CLIENTS: std::sync::Mutex<Vec<(ClientKey, reqwest::Client)>> =
        std::sync::Mutex::new(Vec::new());
    let key = ClientKey {
        connect_timeout: opts.connect_timeout,
        idle_timeout: opts.idle_timeout,
        ca_certificates: opts
            .ca_certificates
            .iter()
            .map(|p| {
                let stamp = std::fs::metadata(p)
                    .ok()
                    .and_then(|m| Some((m.len(), m.modified().ok()?)));
                (p.clone(), stamp)
            })
            .collect(),
    };
    let mut clients = CLIENTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, client)) = clients.iter().find(|(k, _)| *k == key) {
        return Ok(client.clone());
    }
    let client = build_client(opts)?;
    if clients.len() >= 8 {
        clients.remove(0);
    }
    clients.push((key, client.clone()));
    Ok(client)
}
