//! Fetching assets: HTTP(S) with reqwest (rustls), and `file://` copies.
//!
//! The body streams into a per-process partial file in the state dir and is hashed in the
//! same pass. There is a connect timeout and an idle timeout on every read, but no
//! whole-request timeout: a large rootfs lives as long as bytes flow. Failures are retried
//! with exponential backoff and jitter (connect errors, 5xx, 408, 429 with Retry-After,
//! truncated bodies; never other 4xx), and a cut download resumes with `Range`/`If-Range`.
//! The SHA-256 state is checkpointed next to the partial, so a resume after a crash does not
//! re-read the prefix.

use crate::state::{StateDir, TmpKind};
use crate::digest::Sha256Digest;
pub use crate::http::FetchOptions;
pub(crate) use crate::http::build_client;
pub(crate) use crate::fsutil::open_regular;
use crate::cancel::CancelToken;
use crate::error::{Error, FetchAttempt, IoContext, Result};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use sha2::Sha256;
use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often the partial is synced and its hash state checkpointed.
const CHECKPOINT_EVERY: u64 = 64 * 1024 * 1024;

/// What to fetch.
pub(crate) struct Request<'a> {
    /// Asset name (for errors).
    pub name: &'a str,
    /// Sources, in order.
    pub urls: &'a [String],
    /// Expected size, enforced.
    pub size: Option<u64>,
    /// Expected digest.
    pub sha256: Sha256Digest,
    /// Where partial files go (the state dir's `tmp/`).
    pub state: &'a StateDir,
    /// Stable key of the asset (from its path), prefix of its partial files.
    pub key: &'a str,
    /// Called with (bytes done, total if known).
    pub progress: &'a (dyn Fn(u64, Option<u64>) + Sync),
    /// Stops the download between chunks, keeping a resumable partial.
    pub cancel: &'a CancelToken,
}

/// A verified download, still in the state dir.
#[derive(Debug)]
pub struct Fetched {
    /// The partial file, complete and verified.
    pub path: PathBuf,
    /// Open read-write handle on it.
    pub file: File,
    /// Its size.
    pub size: u64,
    /// Body bytes received over the network (or copied) by this call.
    pub bytes_downloaded: u64,
    /// Bytes of a previous partial that were adopted instead of fetched again.
    pub bytes_resumed: u64,
}

#[derive(Serialize, Deserialize)]
struct Checkpoint {
    url: String,
    validator: Option<String>,
    sha256: String,
    offset: u64,
    state: String,
}

/// The partial being written: file, running hash, and where the bytes came from.
struct Partial {
    path: PathBuf,
    file: File,
    hasher: Sha256,
    offset: u64,
    url: Option<String>,
    validator: Option<String>,
    since_checkpoint: u64,
    resumed: u64,
    /// Bytes appended by this process, across tries and resets.
    received: u64,
    /// When the hash state was last checkpointed.
    last_checkpoint: std::time::Instant,
}

impl Partial {
    fn meta_path(&self) -> PathBuf {
        StateDir::checkpoint_of(&self.path)
    }

    fn reset(&mut self) -> Result<()> {
        self.file.set_len(0).at(&self.path, "truncate partial")?;
        self.file.seek(SeekFrom::Start(0)).at(&self.path, "seek")?;
        self.hasher = Sha256::new();
        self.offset = 0;
        self.validator = None;
        self.resumed = 0;
        let _ = std::fs::remove_file(self.meta_path());
        Ok(())
    }

    fn append(&mut self, bytes: &[u8]) -> Result<()> {
        self.file.write_all(bytes).at(&self.path, "write partial")?;
        self.hasher.update(bytes);
        self.offset += bytes.len() as u64;
        self.since_checkpoint += bytes.len() as u64;
        self.received += bytes.len() as u64;
        Ok(())
    }

    fn checkpoint(&mut self, expected: &Sha256Digest) -> Result<()> {
        self.since_checkpoint = 0;
        self.last_checkpoint = std::time::Instant::now();
        // The data must be durable before a checkpoint vouches for it.
        self.file.sync_data().at(&self.path, "fsync partial")?;
        let state = self.hasher.serialize();
        let cp = Checkpoint {
            url: self.url.clone().unwrap_or_default(),
            validator: self.validator.clone(),
            sha256: expected.to_hex(),
            offset: self.offset,
            state: hex::encode(state.as_slice()),
        };
        let meta = self.meta_path();
        let tmp = meta.with_extension("meta.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&cp).unwrap_or_default())
            .at(&tmp, "write checkpoint")?;
        std::fs::rename(&tmp, &meta).at(&meta, "rename checkpoint")?;
        Ok(())
    }
}

/// Fails when writing `need` more bytes next to `partial` would leave less than `reserve`
/// bytes free on its filesystem.
fn check_space(partial: &Path, need: u64, reserve: u64) -> Result<()> {
    let dir = partial.parent().unwrap_or(partial);
    let Ok(st) = rustix::fs::statvfs(dir) else {
        return Ok(()); // unknown: the write itself reports ENOSPC
    };
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    if free < need.saturating_add(reserve) {
        return Err(Error::io(
            partial,
            "reserve space",
            std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!(
                    "{need} more bytes needed, {free} free, {reserve} kept in reserve"
                ),
            ),
        ));
    }
    Ok(())
}

/// Hashes the rest of `file` into `hasher`; returns the bytes read.
fn hash_tail(file: &mut File, hasher: &mut Sha256) -> std::io::Result<u64> {
    use std::io::Read;
    crate::digest::advise_sequential(file);
    crate::digest::with_buf(|buf| {
        let mut n = 0u64;
        loop {
            match file.read(buf)? {
                0 => return Ok(n),
                k => {
                    hasher.update(&buf[..k]);
                    n += k as u64;
                }
            }
        }
    })
}


/// Removes the partials of `key` left by processes that are gone (the asset is ready: nobody
/// will resume them). Called with the asset's lock held.
pub(crate) fn drop_dead_partials(state: &StateDir, key: &str) {
    let tmp_dir = state.tmp();
    if std::fs::symlink_metadata(&tmp_dir).is_ok_and(|m| !m.is_dir()) {
        return; // a symlinked tmp/ is never followed
    }
    let Ok(entries) = std::fs::read_dir(&tmp_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Some(tmp) = crate::state::parse_tmp(&name).filter(|t| t.key == key) else {
            continue;
        };
        if !crate::fsutil::pid_alive(tmp.pid) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Opens this process's partial for `key`, adopting one left by a dead process (the caller
/// holds the asset lock, so any other partial of this key is abandoned).
fn open_partial(state: &StateDir, key: &str, expected: &Sha256Digest) -> Result<Partial> {
    let tmp_dir = state.tmp();
    crate::lock::state_subdir(&tmp_dir)?;
    let ours = state.tmp_file(key, TmpKind::Part);
    let mut adopted: Option<(PathBuf, Checkpoint)> = None;
    if let Ok(entries) = std::fs::read_dir(&tmp_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let ours_to_adopt = crate::state::parse_tmp(&name)
                .is_some_and(|t| t.key == key && t.kind == TmpKind::Part);
            if !ours_to_adopt {
                continue;
            }
            let path = entry.path();
            let cp = std::fs::read(StateDir::checkpoint_of(&path))
                .ok()
                .and_then(|b| serde_json::from_slice::<Checkpoint>(&b).ok())
                .filter(|cp| cp.sha256 == expected.to_hex());
            match (cp, &adopted) {
                (Some(cp), None) => adopted = Some((path, cp)),
                _ => {
                    let _ = std::fs::remove_file(&path);
                    let _ = std::fs::remove_file(StateDir::checkpoint_of(&path));
                }
            }
        }
    }
    if let Some((path, cp)) = adopted {
        if path != ours {
            std::fs::rename(&path, &ours).at(&ours, "adopt partial")?;
            let _ = std::fs::rename(StateDir::checkpoint_of(&path), StateDir::checkpoint_of(&ours));
        }
        let state = hex::decode(&cp.state).ok().and_then(|b| {
            let arr = SerializedState::<Sha256>::try_from(b.as_slice()).ok()?;
            Sha256::deserialize(&arr).ok()
        });
        let file = open_regular(OpenOptions::new().read(true).write(true), &ours)
            .at(&ours, "open partial")?;
        let meta = file.metadata().at(&ours, "fstat")?;
        let len = meta.len();
        if let Some(mut hasher) = state.filter(|_| meta.is_file() && len >= cp.offset) {
            // The bytes written after the last checkpoint are on disk (a killed process loses
            // nothing from the page cache): hash them from the file instead of fetching them
            // again. Hashing runs at ~1.5 GB/s; the network does not. Should they be damaged
            // (a power loss), the digest check at the end fails and the download restarts.
            let mut file = file;
            file.seek(SeekFrom::Start(cp.offset)).at(&ours, "seek")?;
            let tail = hash_tail(&mut file, &mut hasher).at(&ours, "read partial")?;
            let offset = cp.offset + tail;
            file.set_len(offset).at(&ours, "truncate partial")?;
            file.seek(SeekFrom::Start(offset)).at(&ours, "seek")?;
            tracing::info!(
                "resuming {} at {offset} bytes ({tail} re-hashed from disk)",
                ours.display()
            );
            return Ok(Partial {
                path: ours,
                file,
                hasher,
                offset,
                url: Some(cp.url),
                validator: cp.validator,
                since_checkpoint: tail,
                resumed: offset,
                received: 0,
                last_checkpoint: std::time::Instant::now(),
            });
        }
    }
    let file = open_regular(
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true),
        &ours,
    )
    .at(&ours, "create partial")?;
    let _ = std::fs::remove_file(StateDir::checkpoint_of(&ours));
    Ok(Partial {
        path: ours,
        file,
        hasher: Sha256::new(),
        offset: 0,
        url: None,
        validator: None,
        since_checkpoint: 0,
        resumed: 0,
        received: 0,
        last_checkpoint: std::time::Instant::now(),
    })
}

/// Why one try failed, and whether trying again can help.
#[derive(Debug)]
enum TryError {
    /// Worth another try later (connect error, 5xx, 408, 429, cut body); with a server hint.
    Transient(String, Option<Duration>),
    /// This URL will not work (other 4xx, size exceeded, wrong digest): move on.
    Permanent(String),
    /// Local failure (disk): stop everything.
    Local(Error),
    /// The prepare was cancelled.
    Cancelled,
}

/// One HTTP client per store, so connections are reused across assets. Blocking calls run on
/// the process-wide runtime of [`crate::http::block_on`]; the async ones on the caller's.
pub struct Fetcher {
    client: reqwest::Client,
    opts: FetchOptions,
    /// Resolves `oci://` sources to blob URLs and their `Authorization`.
    oci: crate::oci::Registry,
}

impl Fetcher {
    /// Builds the client (unless `client` is given: a host's own, with its proxies and CAs).
    /// Starts no runtime: an async host's calls await on its own.
    pub fn new(opts: FetchOptions, client: Option<reqwest::Client>) -> Result<Fetcher> {
        let client = match client {
            Some(c) => c,
            None => build_client(&opts).map_err(|e| Error::Downloader {
                why: format!("cannot build HTTP client: {e}"),
            })?,
        };
        Ok(Fetcher {
            client,
            oci: crate::oci::Registry::from_options(&opts.oci),
            opts,
        })
    }

    /// How long to wait before try `round + 1`: exponential backoff with full jitter, or the
    /// server's `Retry-After` when it asks for longer, both capped at `max_backoff`.
    fn pause(&self, round: u32, hint: Option<Duration>) -> Duration {
        let exp = self.opts.backoff.saturating_mul(1 << round.min(16));
        let jittered = exp
            .mul_f64(rand::random::<f64>())
            .min(self.opts.max_backoff);
        hint.map(|h| h.min(self.opts.max_backoff))
            .unwrap_or(jittered)
            .max(jittered)
    }

    /// The client, for the delta module's Range requests.
    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The registry client, to turn `oci://` sources into blob URLs with authorization.
    pub(crate) fn registry(&self) -> &crate::oci::Registry {
        &self.oci
    }

    /// Fetches `req` into a verified partial file. Blocking; call from a worker thread.
    pub(crate) fn fetch(&self, req: &Request<'_>) -> Result<Fetched> {
        if req.urls.is_empty() {
            return Err(Error::Fetch {
                name: req.name.into(),
                attempts: vec![FetchAttempt {
                    url: None,
                    reason: "no URL to fetch from".into(),
                }],
            });
        }
        let mut partial = open_partial(req.state, req.key, &req.sha256)?;
        let mut attempts: Vec<FetchAttempt> = Vec::new();
        let attempt = |url: &str, reason: String| FetchAttempt {
            url: Some(url.to_string()),
            reason,
        };
        // Registry mirrors go before their registry.
        let urls = self.oci.expand(req.urls);
        let mut dead = vec![false; urls.len()];
        for round in 0..=self.opts.retries {
            let mut hint: Option<Duration> = None;
            for (i, url) in urls.iter().enumerate() {
                if dead[i] {
                    continue;
                }
                // A partial from another URL is not resumed against this one; it is dropped
                // only once this URL answers with a body (see `try_http`, `copy_file`).
                if partial.offset > 0 && partial.url.as_deref() == Some(url.as_str()) {
                    tracing::info!("{}: resuming {url} at {} bytes", req.name, partial.offset);
                } else {
                    tracing::info!("{}: fetching {url}", req.name);
                }
                let result = if url.starts_with("file:") {
                    copy_file(
                        url,
                        &mut partial,
                        req,
                        self.opts.max_size,
                        self.opts.min_free_bytes,
                    )
                } else {
                    match crate::http::block_on(self.try_http(url, &mut partial, req)) {
                        Ok(result) => result,
                        Err(why) => {
                            // No runtime to drive it (or refused inside an async task): the
                            // partial is kept for the next prepare.
                            let _ = partial.checkpoint(&req.sha256);
                            return Err(Error::Downloader { why });
                        }
                    }
                };
                match result {
                    Ok(()) => match self.finish(partial, req) {
                        Ok(done) => return Ok(done),
                        Err((p, why)) => {
                            partial = p;
                            dead[i] = true;
                            attempts.push(attempt(url, why));
                        }
                    },
                    Err(TryError::Cancelled) => {
                        let _ = partial.checkpoint(&req.sha256);
                        return Err(Error::Cancelled {
                            name: req.name.into(),
                        });
                    }
                    Err(TryError::Local(e)) => {
                        let _ = std::fs::remove_file(&partial.path);
                        let _ = std::fs::remove_file(partial.meta_path());
                        return Err(e);
                    }
                    Err(TryError::Permanent(why)) => {
                        dead[i] = true;
                        if partial.url.as_deref() == Some(url.as_str()) {
                            partial.reset()?;
                        }
                        attempts.push(attempt(url, why));
                    }
                    Err(TryError::Transient(why, retry_after)) => {
                        hint = hint.max(retry_after);
                        attempts.push(attempt(url, format!("{why} (try {})", round + 1)));
                        let _ = partial.checkpoint(&req.sha256);
                    }
                }
            }
            if dead.iter().all(|d| *d) || round == self.opts.retries {
                break;
            }
            if req.cancel.is_cancelled() {
                let _ = partial.checkpoint(&req.sha256);
                return Err(Error::Cancelled {
                    name: req.name.into(),
                });
            }
            let pause = self.pause(round, hint);
            // As cargo does for spurious network errors: a warning, since it may still succeed.
            tracing::warn!(
                "{}: {}; retrying in {:.1} s ({} of {} retries left)",
                req.name,
                attempts
                    .last()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| "failed".into()),
                pause.as_secs_f64(),
                self.opts.retries - round,
                self.opts.retries
            );
            std::thread::sleep(pause);
        }
        // Keep a resumable partial (and its checkpoint) for the next prepare.
        if partial.offset > 0 && partial.checkpoint(&req.sha256).is_ok() {
            tracing::debug!(
                "kept partial {} at {} bytes",
                partial.path.display(),
                partial.offset
            );
        } else {
            let _ = std::fs::remove_file(&partial.path);
            let _ = std::fs::remove_file(partial.meta_path());
        }
        Err(Error::Fetch {
            name: req.name.into(),
            attempts,
        })
    }

    /// Checks digest and size of a complete partial.
    #[allow(clippy::result_large_err)]
    fn finish(
        &self,
        mut p: Partial,
        req: &Request<'_>,
    ) -> std::result::Result<Fetched, (Partial, String)> {
        let hasher = std::mem::replace(&mut p.hasher, Sha256::new());
        let digest = Sha256Digest::from_hasher(hasher);
        if let Some(size) = req.size
            && p.offset != size
        {
            let why = format!("got {} bytes, expected {size}", p.offset);
            let _ = p.reset();
            return Err((p, why));
        }
        if digest != req.sha256 {
            let why = format!(
                "sha256 mismatch: expected {}, actual {}",
                req.sha256, digest
            );
            let _ = p.reset();
            return Err((p, why));
        }
        let _ = std::fs::remove_file(p.meta_path());
        Ok(Fetched {
            path: p.path,
            file: p.file,
            size: p.offset,
            bytes_downloaded: p.received,
            bytes_resumed: p.resumed,
        })
    }

    async fn try_http(
        &self,
        url: &str,
        p: &mut Partial,
        req: &Request<'_>,
    ) -> std::result::Result<(), TryError> {
        // An `oci://` source is a blob URL plus an Authorization (only sent to that host).
        let (target, auth, oci) = if url.starts_with("oci:") {
            let (target, host, repo) = self
                .oci
                .blob_url(url, &req.sha256)
                .map_err(TryError::Permanent)?;
            let auth = self
                .oci
                .authorization(&self.client, &host, &repo, false)
                .await
                .map_err(|e| match e.retry {
                    true => TryError::Transient(e.message, None),
                    false => TryError::Permanent(e.message),
                })?;
            (target, auth, Some((host, repo)))
        } else {
            (url.to_string(), None, None)
        };
        let mut rb = self.client.get(&target);
        if let Some(a) = auth {
            rb = rb.header(reqwest::header::AUTHORIZATION, a);
        }
        let resuming = p.offset > 0 && p.url.as_deref() == Some(url);
        if resuming {
            rb = rb.header(reqwest::header::RANGE, format!("bytes={}-", p.offset));
            if let Some(v) = &p.validator {
                rb = rb.header(reqwest::header::IF_RANGE, v.as_str());
            }
        }
        let resp = rb
            .send()
            .await
            .map_err(|e| TryError::Transient(describe(e), None))?;
        let status = resp.status();
        let retry_after = retry_after(&resp);
        match status.as_u16() {
            200 => {
                if p.offset > 0 {
                    // The server ignored Range, the resource changed, or the partial came from
                    // another URL: start over cleanly.
                    p.reset().map_err(TryError::Local)?;
                }
            }
            206 if resuming => {
                let start = resp
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| s.strip_prefix("bytes "))
                    .and_then(|s| s.split('-').next())
                    .and_then(|s| s.parse::<u64>().ok());
                if start != Some(p.offset) {
                    p.reset().map_err(TryError::Local)?;
                    return Err(TryError::Transient(
                        "server answered another range".into(),
                        None,
                    ));
                }
            }
            416 => {
                p.reset().map_err(TryError::Local)?;
                return Err(TryError::Transient(
                    "range not satisfiable; restarting".into(),
                    None,
                ));
            }
            401 if oci.is_some() => {
                // The token expired or the cached answer is stale: ask again next try.
                if let Some((host, repo)) = &oci {
                    self.oci.forget(host, repo);
                }
                return Err(TryError::Transient(format!("HTTP {status}"), None));
            }
            408 | 429 => return Err(TryError::Transient(format!("HTTP {status}"), retry_after)),
            s if s >= 500 => {
                return Err(TryError::Transient(format!("HTTP {status}"), retry_after));
            }
            _ => return Err(TryError::Permanent(format!("HTTP {status}"))),
        }
        p.url = Some(url.to_string());
        let validator = resp
            .headers()
            .get(reqwest::header::ETAG)
            .filter(|v| !v.as_bytes().starts_with(b"W/"))
            .or_else(|| resp.headers().get(reqwest::header::LAST_MODIFIED))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if !resuming || p.offset == 0 {
            p.validator = validator;
        }
        let total = resp.content_length().map(|len| p.offset + len);
        if let (Some(size), Some(total)) = (req.size, total)
            && total != size
        {
            return Err(TryError::Permanent(format!(
                "Content-Length says {total} bytes, manifest size is {size}"
            )));
        }
        let total_hint = req.size.or(total);
        if let Some(need) = total.map(|t| t.saturating_sub(p.offset)) {
            check_space(&p.path, need, self.opts.min_free_bytes).map_err(TryError::Local)?;
        }
        if req.size.is_none()
            && let Some(t) = total
            && t > self.opts.max_size
        {
            return Err(TryError::Permanent(format!(
                "Content-Length says {t} bytes, more than the {} byte limit for an asset \
                 without a manifest size",
                self.opts.max_size
            )));
        }
        // A checkpoint as soon as the source is known, so that a kill at any point leaves a
        // partial the next prepare adopts (the tail is re-hashed from disk).
        p.checkpoint(&req.sha256).map_err(TryError::Local)?;
        let mut stream = resp.bytes_stream();
        loop {
            // Cancellation wins over a stalled stream: the partial is checkpointed by the caller.
            let next = tokio::select! {
                biased;
                _ = req.cancel.cancelled() => return Err(TryError::Cancelled),
                next = stream.next() => next,
            };
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(|e| {
                TryError::Transient(
                    format!("body cut at {} bytes: {}", p.offset, describe(e)),
                    None,
                )
            })?;
            if let Some(size) = req.size
                && p.offset + chunk.len() as u64 > size
            {
                return Err(TryError::Permanent(format!(
                    "body runs past the manifest size {size}"
                )));
            }
            if req.size.is_none() && p.offset + chunk.len() as u64 > self.opts.max_size {
                return Err(TryError::Permanent(format!(
                    "body runs past the {} byte limit for an asset without a manifest size",
                    self.opts.max_size
                )));
            }
            p.append(&chunk).map_err(TryError::Local)?;
            (req.progress)(p.offset, total_hint);
            if p.since_checkpoint >= CHECKPOINT_EVERY {
                check_space(&p.path, 0, self.opts.min_free_bytes).map_err(TryError::Local)?;
                p.checkpoint(&req.sha256).map_err(TryError::Local)?;
            }
        }
        if let Some(total) = total.or(req.size)
            && p.offset < total
        {
            return Err(TryError::Transient(
                format!("body ended at {} of {total} bytes", p.offset),
                None,
            ));
        }
        Ok(())
    }
}

/// A `Retry-After` in seconds, when the server sent one.
fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// The error and its causes on one line, without the URL (the attempt already names it).
fn describe(e: reqwest::Error) -> String {
    use std::error::Error as _;
    let e = e.without_url();
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// `file://` source: a local copy, hashed in the same pass.
fn copy_file(
    url: &str,
    p: &mut Partial,
    req: &Request<'_>,
    max_size: u64,
    reserve: u64,
) -> std::result::Result<(), TryError> {
    use std::io::Read;
    let path = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.to_file_path().ok())
        .ok_or_else(|| TryError::Permanent("not a local file URL".into()))?;
    let mut src =
        File::open(&path).map_err(|e| TryError::Permanent(format!("{}: {e}", path.display())))?;
    let meta = src
        .metadata()
        .map_err(|e| TryError::Permanent(format!("{}: {e}", path.display())))?;
    if !meta.is_file() {
        // A device or fifo (`file:///dev/zero`) would never end.
        return Err(TryError::Permanent(format!(
            "{}: not a regular file",
            path.display()
        )));
    }
    if req.size.is_none() && meta.len() > max_size {
        return Err(TryError::Permanent(format!(
            "{}: {} bytes, more than the {max_size} byte limit for an asset without a manifest size",
            path.display(),
            meta.len()
        )));
    }
    check_space(&p.path, meta.len(), reserve).map_err(TryError::Local)?;
    p.reset().map_err(TryError::Local)?;
    p.url = Some(url.to_string());
    crate::digest::advise_sequential(&src);
    crate::digest::with_buf(|buf| loop {
        if req.cancel.is_cancelled() {
            return Err(TryError::Cancelled);
        }
        let n = src
            .read(buf)
            .map_err(|e| TryError::Permanent(format!("{}: {e}", path.display())))?;
        if n == 0 {
            return Ok(());
        }
        if let Some(size) = req.size
            && p.offset + n as u64 > size
        {
            return Err(TryError::Permanent(format!(
                "file is larger than the manifest size {size}"
            )));
        }
        p.append(&buf[..n]).map_err(TryError::Local)?;
        (req.progress)(p.offset, req.size);
    })
}

// ---- small documents (manifests) ---------------------------------------------------------------

impl Fetcher {
    /// Fetches a small document (a manifest, at most `max` bytes) whose digest is not known in
    /// advance, with the same client (timeouts, CA certificates, a host's injected client) and
    /// retry policy as the assets. Awaits on the caller's runtime: an async host reaches it
    /// without any `block_on`.
    pub async fn document(&self, url: &str, max: u64, cancel: &CancelToken) -> Result<Vec<u8>> {
        let mut attempts = Vec::new();
        let fail = |attempts: Vec<FetchAttempt>| Error::Document {
            url: url.to_string(),
            attempts,
        };
        if url.starts_with("file:") {
            let path = url::Url::parse(url)
                .ok()
                .and_then(|u| u.to_file_path().ok())
                .ok_or_else(|| {
                    fail(vec![FetchAttempt {
                        url: Some(url.into()),
                        reason: "not a local path".into(),
                    }])
                })?;
            return crate::manifest::read_text(&path, max)
                .map(String::into_bytes)
                .map_err(|e| {
                    fail(vec![FetchAttempt {
                        url: Some(url.into()),
                        reason: e.to_string(),
                    }])
                });
        }
        for round in 0..=self.opts.retries {
            if cancel.is_cancelled() {
                return Err(Error::Cancelled { name: url.into() });
            }
            let hint = match self.try_document(url, max).await {
                Ok(body) => return Ok(body),
                Err(TryError::Transient(why, hint)) => {
                    attempts.push(FetchAttempt {
                        url: Some(url.into()),
                        reason: format!("{why} (try {})", round + 1),
                    });
                    hint
                }
                Err(TryError::Permanent(why)) => {
                    attempts.push(FetchAttempt {
                        url: Some(url.into()),
                        reason: why,
                    });
                    break;
                }
                Err(TryError::Local(e)) => return Err(e),
                Err(TryError::Cancelled) => return Err(Error::Cancelled { name: url.into() }),
            };
            if round == self.opts.retries {
                break;
            }
            let pause = self.pause(round, hint);
            tracing::warn!(
                "{url}: {}; retrying in {:.1} s",
                attempts
                    .last()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                pause.as_secs_f64()
            );
            tokio::time::sleep(pause).await;
        }
        Err(fail(attempts))
    }

    /// [`Fetcher::document`] for a blocking caller, on the process-wide runtime. Refused
    /// inside an async task; await [`Fetcher::document`] there.
    pub fn document_blocking(&self, url: &str, max: u64, cancel: &CancelToken) -> Result<Vec<u8>> {
        crate::http::block_on(self.document(url, max, cancel)).unwrap_or_else(|why| {
            Err(Error::Document {
                url: url.into(),
                attempts: vec![FetchAttempt {
                    url: Some(url.into()),
                    reason: why,
                }],
            })
        })
    }

    async fn try_document(&self, url: &str, max: u64) -> std::result::Result<Vec<u8>, TryError> {
        let resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| TryError::Transient(describe(e), None))?;
        let status = resp.status();
        let retry_after = retry_after(&resp);
        match status.as_u16() {
            200 => {}
            408 | 429 => return Err(TryError::Transient(format!("HTTP {status}"), retry_after)),
            s if s >= 500 => return Err(TryError::Transient(format!("HTTP {status}"), retry_after)),
            _ => return Err(TryError::Permanent(format!("HTTP {status}"))),
        }
        if let Some(len) = resp.content_length()
            && len > max
        {
            return Err(TryError::Permanent(format!(
                "{len} bytes, more than the {max} allowed"
            )));
        }
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| TryError::Transient(describe(e), None))?;
            if body.len() as u64 + chunk.len() as u64 > max {
                return Err(TryError::Permanent(format!(
                    "more than the {max} bytes allowed"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}
