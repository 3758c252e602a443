//! A real HTTP/1.1 origin server on loopback.
//!
//! It exists so that the demo and the test suite exercise the fetch path against real sockets
//! (ranges, validators, truncated bodies, stalls, throttling) instead of mocks. The server runs
//! on its own thread with its own tokio runtime, so it works from plain synchronous code and from
//! any test, independent of whatever runtime the caller uses.

use crate::serve::Server;
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;

/// Body chunk size: small enough that cut/stall/throttle act mid-body.
const CHUNK: usize = 64 * 1024;
/// Source of `extra_bytes` padding, so appending garbage allocates nothing.
static FILLER: [u8; CHUNK] = [b'X'; CHUNK];
/// Process-wide so that ETags stay unique across origins and re-added paths.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// A loopback HTTP server; dropping it stops the server and joins its thread.
pub struct Origin {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Stops and joins the server when the origin is dropped.
    _server: Server,
}

/// Misbehaviour injected into GET responses for one path (HEAD only reflects the headers).
#[derive(Clone, Debug, Default)]
pub struct Fault {
    /// The first N GET requests for this path answer `fail_status` (503 when 0).
    pub fail_first: u32,
    pub fail_status: u16,
    /// Sent as `Retry-After` on the injected failures.
    pub retry_after_secs: Option<u64>,
    /// For the first `cut_times` GETs: full Content-Length, then only this many body bytes, then abort.
    pub cut_after: Option<u64>,
    /// How many GETs are cut (1 when `cut_after` is set and this is 0).
    pub cut_times: u32,
    /// Answer 200 with the whole body even when a Range header is sent.
    pub ignore_range: bool,
    /// Flip one byte in the middle of the served span (same length, different bytes).
    pub corrupt: bool,
    /// Append this many filler bytes to the served span (and to Content-Length).
    pub extra_bytes: u64,
    /// Stream with chunked transfer encoding and no Content-Length.
    pub omit_content_length: bool,
    /// After sending N body bytes, pause for the duration, then continue.
    pub stall: Option<(u64, Duration)>,
    /// Throttle the body to roughly this many bytes per second.
    pub bytes_per_sec: Option<u64>,
}

struct Entry {
    body: Bytes,
    etag: String,
    last_modified: String,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU32,
    range_requests: AtomicU32,
    bytes_served: AtomicU64,
}

/// A fault plus how much of it has been consumed since it was set.
struct FaultState {
    fault: Fault,
    failed: u32,
    cut: u32,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    faults: HashMap<String, FaultState>,
    counters: HashMap<String, Arc<Counters>>,
}

#[derive(Default)]
struct Shared {
    inner: Mutex<Inner>,
    total: AtomicU32,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn counters(&self, path: &str) -> Arc<Counters> {
        Arc::clone(self.lock().counters.entry(path.to_owned()).or_default())
    }
}

impl Origin {
    /// Binds 127.0.0.1:0 and serves from a dedicated thread and runtime.
    pub fn start() -> io::Result<Origin> {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let server = Server::axum("bootvault-origin", 2, app)?;
        Ok(Origin {
            addr: server.addr(),
            shared,
            _server: server,
        })
    }

    /// Stores (or replaces, with a new ETag) the body served at `path` (no leading slash).
    pub fn add(&self, path: &str, body: Bytes) {
        let generation = GENERATION.fetch_add(1, Relaxed) + 1;
        let secs = generation % 86_400;
        let entry = Entry {
            etag: format!("\"bv{generation:08x}-{:x}\"", body.len()),
            // A distinct Last-Modified per generation, so If-Range by date also detects replacement.
            last_modified: format!(
                "Wed, 01 Jan 2025 {:02}:{:02}:{:02} GMT",
                secs / 3600,
                secs / 60 % 60,
                secs % 60
            ),
            body,
        };
        self.shared.lock().entries.insert(path.to_owned(), entry);
    }

    /// Installs a fault for `path`, resetting its fail/cut consumption.
    pub fn set_fault(&self, path: &str, fault: Fault) {
        let state = FaultState {
            fault,
            failed: 0,
            cut: 0,
        };
        self.shared.lock().faults.insert(path.to_owned(), state);
    }

    pub fn clear_fault(&self, path: &str) {
        self.shared.lock().faults.remove(path);
    }

    /// `http://127.0.0.1:PORT/`, with the trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// GET requests received for `path` (HEAD is not counted).
    pub fn requests(&self, path: &str) -> u32 {
        self.shared.counters(path).requests.load(Relaxed)
    }

    /// GET requests for `path` that carried a Range header (honoured or not).
    pub fn range_requests(&self, path: &str) -> u32 {
        self.shared.counters(path).range_requests.load(Relaxed)
    }

    /// Body bytes handed to the connection for `path` (may exceed what a peer that hung up read).
    pub fn bytes_served(&self, path: &str) -> u64 {
        self.shared.counters(path).bytes_served.load(Relaxed)
    }

    /// All requests of any method and path.
    pub fn total_requests(&self) -> u32 {
        self.shared.total.load(Relaxed)
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Origin")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// What part of the body a request gets.
enum Span {
    Full,
    Part(u64, u64),
    Unsatisfiable,
}

/// Interprets Range / If-Range; malformed or multi-range headers fall back to the full body.
fn pick_span(headers: &HeaderMap, len: u64, etag: &str, last_modified: &str) -> Span {
    let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Span::Full;
    };
    if let Some(validator) = headers.get(header::IF_RANGE)
        && validator != etag
        && validator != last_modified
    {
        return Span::Full;
    }
    let Some((first, last)) = range
        .trim()
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
    else {
        return Span::Full;
    };
    if last.contains(',') {
        return Span::Full;
    }
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        return match last.parse::<u64>() {
            Ok(0) => Span::Unsatisfiable,
            Ok(_) if len == 0 => Span::Unsatisfiable,
            Ok(n) => Span::Part(len.saturating_sub(n), len - 1),
            Err(_) => Span::Full,
        };
    }
    let Ok(start) = first.parse::<u64>() else {
        return Span::Full;
    };
    let end = match last {
        "" => u64::MAX,
        s => match s.parse::<u64>() {
            Ok(end) if end >= start => end,
            _ => return Span::Full,
        },
    };
    if start >= len {
        Span::Unsatisfiable
    } else {
        Span::Part(start, end.min(len - 1))
    }
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    shared.total.fetch_add(1, Relaxed);
    let builder = Response::builder();
    let is_get = req.method() == Method::GET;
    if !is_get && req.method() != Method::HEAD {
        let builder = builder
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .header(header::ALLOW, "GET, HEAD");
        return builder.body(Body::empty()).expect("static response");
    }
    let path = req.uri().path().trim_start_matches('/').to_owned();
    let headers = req.headers();
    let counters = shared.counters(&path);
    if is_get {
        counters.requests.fetch_add(1, Relaxed);
        if headers.contains_key(header::RANGE) {
            counters.range_requests.fetch_add(1, Relaxed);
        }
    }
    // Decided under one lock so that concurrent requests consume a fault exactly once.
    let mut inner = shared.lock();
    let Inner {
        entries, faults, ..
    } = &mut *inner;
    let mut state = faults.get_mut(&path);
    if let Some(fs) = state
        .as_deref_mut()
        .filter(|fs| is_get && fs.failed < fs.fault.fail_first)
    {
        fs.failed += 1;
        let status =
            StatusCode::from_u16(fs.fault.fail_status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let mut builder = builder.status(status).header(header::CONTENT_LENGTH, 0);
        if let Some(secs) = fs.fault.retry_after_secs {
            builder = builder.header(header::RETRY_AFTER, secs);
        }
        return builder.body(Body::empty()).expect("static response");
    }
    let Some(entry) = entries.get(&path) else {
        return builder
            .status(StatusCode::NOT_FOUND)
            .body(Body::from("not found\n"))
            .expect("static response");
    };
    let fault = state
        .as_ref()
        .map(|fs| fs.fault.clone())
        .unwrap_or_default();
    let len = entry.body.len() as u64;
    let builder = builder
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, &entry.etag)
        .header(header::LAST_MODIFIED, &entry.last_modified)
        .header(header::CONTENT_TYPE, "application/octet-stream");
    let span = if fault.ignore_range {
        Span::Full
    } else {
        pick_span(headers, len, &entry.etag, &entry.last_modified)
    };
    let (builder, start, end) = match span {
        Span::Full => (builder.status(StatusCode::OK), 0, len),
        Span::Part(first, last) => {
            let builder = builder.status(StatusCode::PARTIAL_CONTENT);
            (
                builder.header(header::CONTENT_RANGE, format!("bytes {first}-{last}/{len}")),
                first,
                last + 1,
            )
        }
        Span::Unsatisfiable => {
            let builder = builder
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_LENGTH, 0);
            let builder = builder.header(header::CONTENT_RANGE, format!("bytes */{len}"));
            return builder.body(Body::empty()).expect("static response");
        }
    };
    let data = entry.body.slice(start as usize..end as usize);
    let mut cut_at = None;
    if let (true, Some(fs), Some(n)) = (is_get, state, fault.cut_after)
        && fs.cut < fs.fault.cut_times.max(1)
    {
        fs.cut += 1;
        cut_at = Some(n);
    }
    drop(inner);
    let builder = match fault.omit_content_length {
        true => builder,
        false => builder.header(
            header::CONTENT_LENGTH,
            data.len() as u64 + fault.extra_bytes,
        ),
    };
    if !is_get {
        return builder.body(Body::empty()).expect("valid headers");
    }
    let feed = Feed {
        flip: fault
            .corrupt
            .then_some(data.len() / 2)
            .filter(|_| !data.is_empty()),
        data,
        extra: fault.extra_bytes,
        sent: 0,
        cut_at,
        stall: fault.stall,
        rate: fault.bytes_per_sec.map(|r| r.max(1)),
        counters,
        done: false,
    };
    let stream = futures_util::stream::unfold(feed, Feed::step);
    builder
        .body(Body::from_stream(stream))
        .expect("valid headers")
}

/// Produces the body chunk by chunk, applying the cut/stall/throttle/corrupt/extra faults.
struct Feed {
    data: Bytes,
    flip: Option<usize>,
    extra: u64,
    sent: u64,
    cut_at: Option<u64>,
    stall: Option<(u64, Duration)>,
    rate: Option<u64>,
    counters: Arc<Counters>,
    done: bool,
}

impl Feed {
    async fn step(mut self) -> Option<(io::Result<Bytes>, Feed)> {
        self.next_chunk().await.map(|item| (item, self))
    }

    async fn next_chunk(&mut self) -> Option<io::Result<Bytes>> {
        if self.done {
            return None;
        }
        if let Some((_, pause)) = self.stall.filter(|&(at, _)| self.sent >= at) {
            self.stall = None;
            tokio::time::sleep(pause).await;
        }
        if self.cut_at.is_some_and(|cut| self.sent >= cut) {
            self.done = true;
            // Give hyper a moment to flush what it already has; the error then aborts the connection.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Some(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "origin: injected cut",
            )));
        }
        let body_len = self.data.len() as u64;
        let mut n = if self.sent < body_len {
            body_len - self.sent
        } else {
            body_len + self.extra - self.sent
        };
        n = n.min(CHUNK as u64);
        if n == 0 {
            self.done = true;
            return None;
        }
        if let Some(cut) = self.cut_at {
            n = n.min(cut - self.sent);
        }
        if let Some((at, _)) = self.stall {
            n = n.min(at - self.sent);
        }
        if let Some(rate) = self.rate {
            n = n.min((rate / 10).max(1));
            tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
        }
        let from = self.sent as usize;
        let chunk = if self.sent >= body_len {
            Bytes::from_static(&FILLER[..n as usize])
        } else {
            match self.flip.filter(|f| (from..from + n as usize).contains(f)) {
                Some(flip) => {
                    let mut bytes = self.data[from..from + n as usize].to_vec();
                    bytes[flip - from] ^= 0xFF;
                    Bytes::from(bytes)
                }
                None => self.data.slice(from..from + n as usize),
            }
        };
        self.sent += n;
        self.counters.bytes_served.fetch_add(n, Relaxed);
        Some(Ok(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Instant;

    struct Reply {
        status: u16,
        headers: HashMap<String, String>,
        body: Vec<u8>,
    }

    /// One HTTP/1.1 request over a plain TcpStream; the body is whatever arrived before EOF/abort.
    fn request(origin: &Origin, method: &str, path: &str, extra: &[(&str, &str)]) -> Reply {
        let mut stream = std::net::TcpStream::connect(origin.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut req = format!(
            "{method} /{path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            origin.addr()
        );
        for (name, value) in extra {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        stream.write_all(format!("{req}\r\n").as_bytes()).unwrap();
        let mut raw = Vec::new();
        let mut buf = [0u8; 64 * 1024];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("header end");
        let head = String::from_utf8(raw[..split].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Reply {
            status,
            headers,
            body: raw[split + 4..].to_vec(),
        }
    }

    fn get(origin: &Origin, path: &str, extra: &[(&str, &str)]) -> Reply {
        request(origin, "GET", path, extra)
    }

    fn dechunk(mut raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let eol = raw.windows(2).position(|w| w == b"\r\n").unwrap();
            let size =
                usize::from_str_radix(std::str::from_utf8(&raw[..eol]).unwrap(), 16).unwrap();
            if size == 0 {
                return out;
            }
            out.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
            raw = &raw[eol + 4 + size..];
        }
    }

    fn sample(len: usize) -> Bytes {
        (0..len)
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<_>>()
            .into()
    }

    #[test]
    fn full_body_head_404_and_counters() {
        let origin = Origin::start().unwrap();
        let data = sample(200_000);
        origin.add("v1/kernel", data.clone());
        assert!(origin.url("v1/kernel").starts_with("http://127.0.0.1:"));
        let r = get(&origin, "v1/kernel", &[]);
        assert_eq!(r.status, 200);
        assert_eq!(r.body, data);
        assert_eq!(r.headers["content-length"], "200000");
        assert_eq!(r.headers["accept-ranges"], "bytes");
        assert!(r.headers["etag"].starts_with('"'));
        let h = request(&origin, "HEAD", "v1/kernel", &[]);
        assert_eq!((h.status, h.body.len()), (200, 0));
        assert_eq!(h.headers["content-length"], "200000");
        assert_eq!(get(&origin, "nope", &[]).status, 404);
        assert_eq!(origin.requests("v1/kernel"), 1);
        assert_eq!(origin.bytes_served("v1/kernel"), 200_000);
        assert_eq!(origin.total_requests(), 3);
    }

    #[test]
    fn ranges_and_if_range() {
        let origin = Origin::start().unwrap();
        let data = sample(100_000);
        origin.add("img", data.clone());
        let r = get(&origin, "img", &[("Range", "bytes=100-")]);
        assert_eq!(r.status, 206);
        assert_eq!(r.headers["content-range"], "bytes 100-99999/100000");
        assert_eq!(r.body, data[100..]);
        let r = get(&origin, "img", &[("Range", "bytes=10-19")]);
        assert_eq!((r.status, &r.body[..]), (206, &data[10..20]));
        let r = get(&origin, "img", &[("Range", "bytes=100000-")]);
        assert_eq!(
            (r.status, r.headers["content-range"].as_str()),
            (416, "bytes */100000")
        );
        let etag = r.headers["etag"].clone();
        let modified = r.headers["last-modified"].clone();
        let r = get(
            &origin,
            "img",
            &[("Range", "bytes=5-"), ("If-Range", "\"stale\"")],
        );
        assert_eq!((r.status, r.body.len()), (200, 100_000));
        assert_eq!(
            get(
                &origin,
                "img",
                &[("Range", "bytes=5-"), ("If-Range", &etag)]
            )
            .status,
            206
        );
        assert_eq!(
            get(
                &origin,
                "img",
                &[("Range", "bytes=5-"), ("If-Range", &modified)]
            )
            .status,
            206
        );
        origin.set_fault(
            "img",
            Fault {
                ignore_range: true,
                ..Fault::default()
            },
        );
        assert_eq!(get(&origin, "img", &[("Range", "bytes=5-")]).status, 200);
        assert_eq!(origin.range_requests("img"), 7);
        origin.add("img", sample(10));
        let r = get(
            &origin,
            "img",
            &[("Range", "bytes=5-"), ("If-Range", &etag)],
        );
        assert_ne!(r.headers["etag"], etag);
        assert_eq!((r.status, r.body.len()), (200, 10));
    }

    #[test]
    fn fail_first_then_success() {
        let origin = Origin::start().unwrap();
        origin.add("a", sample(1000));
        let fault = Fault {
            fail_first: 2,
            retry_after_secs: Some(3),
            ..Fault::default()
        };
        origin.set_fault("a", fault);
        for _ in 0..2 {
            let r = get(&origin, "a", &[]);
            assert_eq!((r.status, r.headers["retry-after"].as_str()), (503, "3"));
        }
        assert_eq!(get(&origin, "a", &[]).status, 200);
        origin.set_fault(
            "a",
            Fault {
                fail_first: 1,
                fail_status: 500,
                ..Fault::default()
            },
        );
        assert_eq!(get(&origin, "a", &[]).status, 500);
        origin.clear_fault("a");
        assert_eq!(get(&origin, "a", &[]).status, 200);
        assert_eq!(origin.requests("a"), 5);
    }

    #[test]
    fn cut_after_truncates_once() {
        let origin = Origin::start().unwrap();
        let data = sample(300_000);
        origin.add("big", data.clone());
        origin.set_fault(
            "big",
            Fault {
                cut_after: Some(1000),
                ..Fault::default()
            },
        );
        let r = get(&origin, "big", &[]);
        assert_eq!(
            (r.status, r.headers["content-length"].as_str()),
            (200, "300000")
        );
        assert_eq!(r.body, data[..1000]);
        assert_eq!(origin.bytes_served("big"), 1000);
        assert_eq!(get(&origin, "big", &[]).body, data);
    }

    #[test]
    fn corrupt_extra_and_chunked() {
        let origin = Origin::start().unwrap();
        let data = sample(150_000);
        origin.add("x", data.clone());
        origin.set_fault(
            "x",
            Fault {
                corrupt: true,
                ..Fault::default()
            },
        );
        let r = get(&origin, "x", &[]);
        assert_eq!(r.body.len(), data.len());
        assert_ne!(r.body, data);
        origin.set_fault(
            "x",
            Fault {
                extra_bytes: 7,
                ..Fault::default()
            },
        );
        let r = get(&origin, "x", &[]);
        assert_eq!(
            (r.headers["content-length"].as_str(), r.body.len()),
            ("150007", 150_007)
        );
        assert_eq!(r.body[..150_000], data);
        origin.set_fault(
            "x",
            Fault {
                omit_content_length: true,
                ..Fault::default()
            },
        );
        let r = get(&origin, "x", &[]);
        assert!(!r.headers.contains_key("content-length"));
        assert_eq!(r.headers["transfer-encoding"], "chunked");
        assert_eq!(dechunk(&r.body), data);
    }

    #[test]
    fn stall_throttle_and_drop_mid_stall() {
        let origin = Origin::start().unwrap();
        let data = sample(100_000);
        origin.add("s", data.clone());
        let fault = Fault {
            stall: Some((1000, Duration::from_millis(300))),
            ..Fault::default()
        };
        origin.set_fault("s", fault);
        let t = Instant::now();
        assert_eq!(get(&origin, "s", &[]).body, data);
        assert!(t.elapsed() >= Duration::from_millis(300));
        origin.set_fault(
            "s",
            Fault {
                bytes_per_sec: Some(1_000_000),
                ..Fault::default()
            },
        );
        let t = Instant::now();
        assert_eq!(get(&origin, "s", &[]).body, data);
        assert!(t.elapsed() >= Duration::from_millis(80));
        origin.set_fault(
            "s",
            Fault {
                stall: Some((10, Duration::from_secs(60))),
                ..Fault::default()
            },
        );
        let mut stream = std::net::TcpStream::connect(origin.addr()).unwrap();
        stream
            .write_all(b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 256];
        assert!(stream.read(&mut buf).unwrap() > 0);
        let t = Instant::now();
        drop(origin);
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn usable_and_droppable_inside_a_caller_runtime() {
        let origin = Origin::start().unwrap();
        origin.add("k", sample(5000));
        let origin = tokio::task::spawn_blocking(move || {
            assert_eq!(get(&origin, "k", &[]).body.len(), 5000);
            origin
        })
        .await
        .unwrap();
        drop(origin);
    }
}
