//! The store facade: open a store, prepare a manifest, inspect it.
//!
//! A prepare first stats every asset and reads every record in one read transaction. Assets
//! whose record vouches for their live stamp are `cached`, and if that is all of them the
//! prepare ends there, having written nothing. The rest go to a pool of `jobs` workers; each
//! takes the asset's lock, looks again (another process may have done the work), hashes or
//! fetches, places atomically, then records the result in a short write transaction.

use crate::digest::Sha256Digest;
use crate::error::{Error, IoContext, Result};
use crate::fetch::{FetchOptions, Fetcher};
use crate::judge::{Expected, Verdict, judge};
use crate::ledger::{Event, Ledger, LedgerState, Method, Record};
use crate::lock::FileLock;
use crate::manifest::{Asset, Manifest, Policy};
use crate::place;
use crate::stamp::{self, FileKind, Stamp};
use serde::Serialize;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How an asset became ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The record matched the live stamp; no content byte was read.
    Cached,
    /// The file on disk was re-hashed and matched.
    Verified,
    /// The file was absent and was fetched, hashed as it was written.
    Downloaded,
    /// The file was wrong and was replaced by a fetched, verified copy.
    Repaired,
}

impl Outcome {
    /// The contract spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Cached => "cached",
            Outcome::Verified => "verified",
            Outcome::Downloaded => "downloaded",
            Outcome::Repaired => "repaired",
        }
    }
}

/// Progress of a prepare, per asset (phases as in arcbox-boot).
#[derive(Clone, Debug)]
pub enum Progress<'a> {
    /// The asset is being looked at.
    Checking { name: &'a str },
    /// Another process holds the asset's lock; waiting for it.
    Waiting { name: &'a str },
    /// Bytes arriving.
    Downloading {
        name: &'a str,
        done: u64,
        total: Option<u64>,
    },
    /// Bytes being hashed.
    Verifying {
        name: &'a str,
        done: u64,
        total: u64,
    },
    /// Done.
    Ready { name: &'a str, outcome: Outcome },
    /// Failed.
    Failed { name: &'a str, error: &'a str },
}

/// A progress callback.
pub type ProgressFn = Arc<dyn Fn(&Progress<'_>) + Send + Sync>;

/// The result for one asset.
#[derive(Clone, Debug)]
pub struct AssetReport {
    /// Asset name.
    pub name: String,
    /// Absolute path under ROOT.
    pub path: PathBuf,
    /// Expected digest.
    pub sha256: Sha256Digest,
    /// Size of the file (or the manifest size when it failed).
    pub size: Option<u64>,
    /// The outcome, or `None` when it failed.
    pub outcome: Option<Outcome>,
    /// Content bytes read by hashing.
    pub bytes_hashed: u64,
    /// Bytes fetched.
    pub bytes_downloaded: u64,
    /// The error, when it failed.
    pub error: Option<String>,
    /// Why the asset was not cached (the verdict), for humans; empty when cached.
    pub reason: String,
    /// Time spent on this asset.
    pub elapsed: Duration,
}

/// The result of a prepare.
#[derive(Clone, Debug)]
pub struct Report {
    /// Manifest version.
    pub manifest_version: String,
    /// Wall time of the prepare.
    pub elapsed: Duration,
    /// Per asset, in manifest order.
    pub assets: Vec<AssetReport>,
    /// What the ledger read found.
    pub ledger: LedgerState,
}

impl Report {
    /// Whether any asset failed.
    pub fn failed(&self) -> bool {
        self.assets.iter().any(|a| a.outcome.is_none())
    }

    /// Whether every asset was `cached` (a warm prepare).
    pub fn all_cached(&self) -> bool {
        self.assets
            .iter()
            .all(|a| a.outcome == Some(Outcome::Cached))
    }
}

/// Options of a store; see [`StoreBuilder`].
#[derive(Clone)]
struct Options {
    /// `None`: the number of cores, looked up only when there is work (it reads cgroup files).
    jobs: Option<usize>,
    offline: bool,
    verify: Option<Policy>,
    fetch: FetchOptions,
    progress: Option<ProgressFn>,
}

/// Builds a [`Store`].
pub struct StoreBuilder {
    root: PathBuf,
    state_dir: Option<PathBuf>,
    opts: Options,
    write_deadline: Duration,
}

impl StoreBuilder {
    /// Where state lives (default `ROOT/.bootvault`). Keep it where untrusted parties cannot write.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }
    /// Parallel workers for hashing and fetching (default: number of cores).
    pub fn jobs(mut self, jobs: usize) -> Self {
        self.opts.jobs = Some(jobs.max(1));
        self
    }
    /// Never touch the network (`file://` sources still work).
    pub fn offline(mut self, offline: bool) -> Self {
        self.opts.offline = offline;
        self
    }
    /// Overrides every asset's `verify` policy.
    pub fn verify(mut self, policy: Option<Policy>) -> Self {
        self.opts.verify = policy;
        self
    }
    /// Network options (retries, timeouts, backoff).
    pub fn fetch_options(mut self, fetch: FetchOptions) -> Self {
        self.opts.fetch = fetch;
        self
    }
    /// Progress callback.
    pub fn progress(mut self, f: ProgressFn) -> Self {
        self.opts.progress = Some(f);
        self
    }
    /// How long a ledger write waits for other writers.
    pub fn write_deadline(mut self, d: Duration) -> Self {
        self.write_deadline = d;
        self
    }
    /// Opens the store. Touches nothing on disk: state is created on the first write.
    pub fn open(self) -> Result<Store> {
        let root = std::path::absolute(&self.root).at(&self.root, "resolve ROOT")?;
        let state = match self.state_dir {
            Some(s) => std::path::absolute(&s).at(&s, "resolve state dir")?,
            None => root.join(crate::STATE_DIR_NAME),
        };
        let mut ledger = Ledger::new(state.join("ledger.redb"), root.clone(), state.join("locks"));
        ledger.set_write_deadline(self.write_deadline);
        Ok(Store {
            root,
            state,
            ledger,
            fetcher: OnceLock::new(),
            verity: OnceLock::new(),
            opts: self.opts,
        })
    }
}

/// A store of verified assets under one ROOT.
pub struct Store {
    root: PathBuf,
    state: PathBuf,
    ledger: Ledger,
    fetcher: OnceLock<std::result::Result<Fetcher, String>>,
    /// Whether ROOT's filesystem supports fs-verity (probed on the first placement).
    verity: OnceLock<bool>,
    opts: Options,
}

/// An open, read-only descriptor of exactly the inode that was verified.
#[derive(Debug)]
pub struct VerifiedFile {
    /// The descriptor (positioned at 0).
    pub file: std::fs::File,
    /// Where it was opened.
    pub path: PathBuf,
    /// Its `fstat` at verification.
    pub stamp: Stamp,
    /// Its digest.
    pub sha256: Sha256Digest,
    /// Whether its content was hashed through this descriptor (else a record vouched).
    pub rehashed: bool,
}

/// One asset's live view: where it is, its stamp, its record, the verdict.
#[derive(Clone, Debug)]
pub struct Inspection {
    /// The manifest asset.
    pub asset: Asset,
    /// Absolute path.
    pub path: PathBuf,
    /// `lstat` of the path.
    pub live: Option<Stamp>,
    /// The ledger record.
    pub record: Option<Record>,
    /// What [`judge`] says (with the asset's policy, or `cached` for `check`).
    pub verdict: Verdict,
}

/// What was wrong with the file at an asset path.
enum Wrong {
    /// Its content hashed to another digest.
    Digest(Sha256Digest),
    /// Its size contradicts the manifest (not hashed).
    Size { expected: u64, actual: u64 },
    /// It is not a regular file.
    Kind(FileKind),
}

impl Wrong {
    fn describe(&self) -> String {
        match self {
            Wrong::Digest(d) => format!("sha256 {d}"),
            Wrong::Size { expected, actual } => format!("size {actual}, expected {expected}"),
            Wrong::Kind(kind) => format!("a {kind:?} is at the asset path"),
        }
    }
}

struct Work {
    index: usize,
    verdict: Verdict,
}

impl Store {
    /// A builder for the store rooted at `root`.
    pub fn builder(root: impl Into<PathBuf>) -> StoreBuilder {
        StoreBuilder {
            root: root.into(),
            state_dir: None,
            opts: Options {
                jobs: None,
                offline: false,
                verify: None,
                fetch: FetchOptions::default(),
                progress: None,
            },
            write_deadline: Duration::from_secs(10),
        }
    }

    /// Opens the store at `root` with default options.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        Self::builder(root).open()
    }

    /// ROOT.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// The state dir.
    pub fn state_dir(&self) -> &Path {
        &self.state
    }
    /// The ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    fn emit(&self, p: Progress<'_>) {
        if let Some(f) = &self.opts.progress {
            f(&p);
        }
    }

    fn policy(&self, asset: &Asset) -> Policy {
        self.opts.verify.unwrap_or(asset.verify)
    }

    /// Stats every asset and reads every record in one read transaction; judges each with
    /// `policy` (or the asset's own). Reads only.
    pub fn inspect(
        &self,
        manifest: &Manifest,
        policy: Option<Policy>,
    ) -> (Vec<Inspection>, LedgerState) {
        let (judged, state) = self.judge_all(manifest, policy);
        let out = manifest
            .assets
            .iter()
            .zip(judged)
            .map(|(asset, (live, record, verdict))| Inspection {
                asset: asset.clone(),
                path: self.root.join(&asset.path),
                live,
                record,
                verdict,
            })
            .collect();
        (out, state)
    }

    /// The warm path: one `lstat` per asset (relative to a descriptor of ROOT, so the ROOT
    /// prefix is resolved once), one read transaction for every record, and [`judge`].
    #[allow(clippy::type_complexity)]
    fn judge_all(
        &self,
        manifest: &Manifest,
        policy: Option<Policy>,
    ) -> (Vec<(Option<Stamp>, Option<Record>, Verdict)>, LedgerState) {
        let root_fd = rustix::fs::open(
            &self.root,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .ok();
        let lives: Vec<Option<Stamp>> = manifest
            .assets
            .iter()
            .map(|a| match &root_fd {
                Some(fd) => Stamp::of_path_at(fd, &a.path),
                None => Stamp::of_path(&self.root.join(&a.path)).ok().flatten(),
            })
            .collect();
        let keys: Vec<&str> = manifest.assets.iter().map(|a| a.path.as_str()).collect();
        let (records, state) = self.ledger.read_many(&keys);
        let out = manifest
            .assets
            .iter()
            .zip(lives)
            .zip(records)
            .map(|((asset, live), record)| {
                let expected = Expected {
                    sha256: asset.sha256,
                    size: asset.size,
                };
                let p = policy.unwrap_or_else(|| self.policy(asset));
                let mut verdict = judge(record.as_ref(), live.as_ref(), &expected, p);
                if record.as_ref().is_some_and(|r| r.verity.is_some()) {
                    verdict =
                        verity_verdict(&self.root.join(&asset.path), record.as_ref(), verdict);
                }
                (live, record, verdict)
            })
            .collect();
        (out, state)
    }

    /// Makes every asset of `manifest` present and verified. Per-asset failures are in the
    /// report; `Err` only when the store itself cannot be used.
    pub fn prepare(&self, manifest: &Manifest) -> Result<Report> {
        let start = Instant::now();
        let (mut judged, mut state) = self.judge_all(manifest, None);
        // First use of a store that holds an arcbox-boot cache: import it, then judge again.
        if state == LedgerState::Absent
            && self
                .root
                .join(crate::migrations::legacy::FILE_NAME)
                .exists()
        {
            let _ = self.ledger.write(|_| Ok(()));
            (judged, state) = self.judge_all(manifest, None);
        }
        let mut reports: Vec<Option<AssetReport>> = vec![None; manifest.assets.len()];
        let mut queue = VecDeque::new();
        for (i, (asset, (live, _, verdict))) in manifest.assets.iter().zip(judged).enumerate() {
            self.emit(Progress::Checking { name: &asset.name });
            if verdict.is_trusted() {
                self.emit(Progress::Ready {
                    name: &asset.name,
                    outcome: Outcome::Cached,
                });
                reports[i] = Some(self.cached_report(asset, live.map(|l| l.size), Duration::ZERO));
            } else {
                queue.push_back(Work { index: i, verdict });
            }
        }
        if !queue.is_empty() {
            let probe = self.fs_clock();
            let queue = Mutex::new(queue);
            let results = Mutex::new(Vec::new());
            let workers = self
                .opts
                .jobs
                .unwrap_or_else(|| {
                    std::thread::available_parallelism()
                        .map(|n| n.get())
                        .unwrap_or(2)
                })
                .min(queue.lock().map(|q| q.len()).unwrap_or(1))
                .max(1);
            std::thread::scope(|scope| {
                for _ in 0..workers {
                    scope.spawn(|| {
                        loop {
                            let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                            let Some(work) = next else { break };
                            let asset = &manifest.assets[work.index];
                            let t = Instant::now();
                            let report =
                                self.prepare_one(asset, &manifest.version, work.verdict, probe, t);
                            results
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push((work.index, report));
                        }
                    });
                }
            });
            for (i, r) in results.into_inner().unwrap_or_else(|p| p.into_inner()) {
                reports[i] = Some(r);
            }
        }
        Ok(Report {
            manifest_version: manifest.version.clone(),
            elapsed: start.elapsed(),
            assets: reports.into_iter().flatten().collect(),
            ledger: state,
        })
    }

    /// Runs [`Store::prepare`] on tokio's blocking pool, so a host's runtime is never blocked.
    pub async fn prepare_async(self: Arc<Self>, manifest: Arc<Manifest>) -> Result<Report> {
        tokio::task::spawn_blocking(move || self.prepare(&manifest))
            .await
            .map_err(|e| Error::io("prepare", "join worker", std::io::Error::other(e)))?
    }

    fn fs_clock(&self) -> i64 {
        // Taken before any content is read: a file changed at or after this moment is racy.
        stamp::fs_now(&self.root).unwrap_or_else(|_| stamp::wall_now_ns())
    }

    fn cached_report(&self, asset: &Asset, size: Option<u64>, elapsed: Duration) -> AssetReport {
        AssetReport {
            name: asset.name.clone(),
            path: self.root.join(&asset.path),
            sha256: asset.sha256,
            size,
            outcome: Some(Outcome::Cached),
            bytes_hashed: 0,
            bytes_downloaded: 0,
            error: None,
            reason: String::new(),
            elapsed,
        }
    }

    fn prepare_one(
        &self,
        asset: &Asset,
        version: &str,
        verdict: Verdict,
        probe: i64,
        t: Instant,
    ) -> AssetReport {
        let mut counters = (0u64, 0u64);
        let reason = verdict.reason();
        let result = self.prepare_locked(asset, version, verdict, probe, &mut counters);
        let (bytes_hashed, bytes_downloaded) = counters;
        match result {
            Ok((outcome, size)) => {
                self.emit(Progress::Ready {
                    name: &asset.name,
                    outcome,
                });
                AssetReport {
                    name: asset.name.clone(),
                    path: self.root.join(&asset.path),
                    sha256: asset.sha256,
                    size: Some(size),
                    outcome: Some(outcome),
                    bytes_hashed,
                    bytes_downloaded,
                    error: None,
                    reason,
                    elapsed: t.elapsed(),
                }
            }
            Err(e) => {
                let msg = e.to_string();
                self.emit(Progress::Failed {
                    name: &asset.name,
                    error: &msg,
                });
                let _ = self
                    .ledger
                    .log(&[self.event(asset, version, "failed", &msg)]);
                AssetReport {
                    name: asset.name.clone(),
                    path: self.root.join(&asset.path),
                    sha256: asset.sha256,
                    size: asset.size,
                    outcome: None,
                    bytes_hashed,
                    bytes_downloaded,
                    error: Some(msg),
                    reason,
                    elapsed: t.elapsed(),
                }
            }
        }
    }

    fn event(&self, asset: &Asset, version: &str, outcome: &str, reason: &str) -> Event {
        Event {
            at_ns: stamp::wall_now_ns(),
            path: asset.path.clone(),
            name: asset.name.clone(),
            outcome: outcome.into(),
            reason: reason.into(),
            manifest_version: version.into(),
            pid: std::process::id(),
        }
    }

    /// The slow path of one asset, under its lock.
    fn prepare_locked(
        &self,
        asset: &Asset,
        version: &str,
        verdict: Verdict,
        probe: i64,
        counters: &mut (u64, u64),
    ) -> Result<(Outcome, u64)> {
        let locks = self.state.join("locks");
        let key = asset.path.as_str();
        let _lock = match FileLock::try_exclusive(&locks, key)? {
            Some(l) => l,
            None => {
                self.emit(Progress::Waiting { name: &asset.name });
                FileLock::exclusive(&locks, key)?
            }
        };
        let path = place::resolve(&self.root, &asset.path, &asset.name)?;
        let expected = Expected {
            sha256: asset.sha256,
            size: asset.size,
        };
        let policy = self.policy(asset);
        // Look again under the lock: another process may have verified or placed it.
        let live = Stamp::of_path(&path).at(&path, "stat")?;
        let record = self.ledger.read_many(&[key]).0.pop().flatten();
        let verdict_now = judge(record.as_ref(), live.as_ref(), &expected, policy);
        let verdict_now = verity_verdict(&path, record.as_ref(), verdict_now);
        if verdict_now.is_trusted() {
            return Ok((Outcome::Cached, live.map(|l| l.size).unwrap_or(0)));
        }
        let reason = if verdict_now == verdict {
            verdict.reason()
        } else {
            verdict_now.reason()
        };
        let mut wrong: Option<Wrong> = None;
        match live.map(|l| l.kind) {
            Some(FileKind::Regular) => {
                if let Verdict::WrongSize { expected, actual } = verdict_now {
                    wrong = Some(Wrong::Size { expected, actual });
                } else {
                    let hashed = self.hash_settled(asset, &path, probe, counters)?;
                    let unchanged = record.as_ref().is_some_and(|r| {
                        r.sha256 == hashed.0.digest
                            && !r.racy
                            && Stamp::from_record(r, hashed.0.stamp.kind) == hashed.0.stamp
                    });
                    if hashed.0.digest == asset.sha256 && unchanged {
                        // `verify: always` on an unchanged file: nothing new to remember, so
                        // no write transaction and no fsync on every boot.
                        return Ok((Outcome::Verified, hashed.0.stamp.size));
                    }
                    if hashed.0.digest == asset.sha256 {
                        let rec = Record::new(
                            hashed.0.digest,
                            &hashed.0.stamp,
                            version,
                            hashed.1,
                            Method::Hashed,
                            hashed.2,
                        );
                        self.record(asset, &rec, version, "verified", &reason);
                        return Ok((Outcome::Verified, hashed.0.stamp.size));
                    }
                    wrong = Some(Wrong::Digest(hashed.0.digest));
                }
            }
            Some(kind) => wrong = Some(Wrong::Kind(kind)),
            None => {}
        }
        // Offline, only local (`file://`) sources may be used.
        let usable: Vec<String> = asset
            .urls
            .iter()
            .filter(|u| !self.opts.offline || u.starts_with("file:"))
            .cloned()
            .collect();
        if usable.is_empty() {
            let why = if asset.urls.is_empty() {
                "no URL to fetch from"
            } else {
                "offline"
            };
            let mismatch = |actual: String| Error::Mismatch {
                name: asset.name.clone(),
                path: path.clone(),
                expected: asset.sha256.to_hex(),
                actual,
            };
            return Err(match wrong {
                None => Error::Missing {
                    name: asset.name.clone(),
                    path,
                    why: why.into(),
                },
                Some(Wrong::Kind(FileKind::Symlink)) => Error::UnsafePath {
                    name: asset.name.clone(),
                    path,
                    why: format!("a symlink is at the asset path; never trusted ({why})"),
                },
                Some(Wrong::Kind(kind)) => mismatch(format!("a {kind:?} is at the asset path")),
                Some(Wrong::Digest(actual)) => mismatch(actual.to_hex()),
                // Not hashed yet (the size alone proved it wrong): hash it for the report.
                Some(Wrong::Size { expected, actual }) => {
                    let digest = crate::digest::hash_path(&path)
                        .map(|(d, _)| d.to_hex())
                        .unwrap_or_else(|_| "unreadable".into());
                    mismatch(format!(
                        "{digest} (size {actual} bytes, expected {expected})"
                    ))
                }
            });
        }
        let outcome = if live.is_some() {
            Outcome::Repaired
        } else {
            Outcome::Downloaded
        };
        let (rec, size) = self.fetch_and_place(asset, &usable, &path, version, counters)?;
        let label = outcome.as_str();
        let why = match &wrong {
            Some(w) => format!("{reason}; file was wrong ({})", w.describe()),
            None => reason,
        };
        if let Some(rec) = rec {
            self.record(asset, &rec, version, label, &why);
        } else {
            let _ = self.ledger.log(&[self.event(
                asset,
                version,
                label,
                &format!("{why}; changed right after placement, not recorded"),
            )]);
        }
        Ok((outcome, size))
    }

    /// Hashes in place; a racy result is hashed once more after the filesystem clock has
    /// moved on, so the record it leaves is clean. Returns (hash, verified_at, racy).
    fn hash_settled(
        &self,
        asset: &Asset,
        path: &Path,
        probe: i64,
        counters: &mut (u64, u64),
    ) -> Result<(place::Hashed, i64, bool)> {
        let total = asset.size.unwrap_or(0);
        let mut progress = |done: u64| {
            self.emit(Progress::Verifying {
                name: &asset.name,
                done,
                total: total.max(done),
            })
        };
        let first = place::hash_in_place(path, &asset.name, &mut progress)?;
        counters.0 += first.bytes;
        if !first.stamp.is_racy(probe) || first.digest != asset.sha256 {
            return Ok((first, probe, false));
        }
        let dir = path.parent().unwrap_or(&self.root);
        let Some(now) = stamp::settle(
            dir,
            first.stamp.ctime_ns.max(first.stamp.mtime_ns),
            Duration::from_millis(50),
        )
        .ok()
        .flatten() else {
            return Ok((first, probe, true));
        };
        let second = place::hash_in_place(path, &asset.name, &mut progress)?;
        counters.0 += second.bytes;
        let racy = second.stamp.is_racy(now);
        Ok((second, now, racy))
    }

    fn fetcher(&self) -> Result<&Fetcher> {
        let f = self
            .fetcher
            .get_or_init(|| Fetcher::new(self.opts.fetch.clone()).map_err(|e| e.to_string()));
        f.as_ref().map_err(|e| Error::Fetch {
            name: "-".into(),
            attempts: vec![e.clone()],
        })
    }

    fn fetch_and_place(
        &self,
        asset: &Asset,
        urls: &[String],
        path: &Path,
        version: &str,
        counters: &mut (u64, u64),
    ) -> Result<(Option<Record>, u64)> {
        let tmp = self.state.join("tmp");
        let key = crate::lock::file_key(&asset.path);
        let name = asset.name.as_str();
        let progress =
            |done: u64, total: Option<u64>| self.emit(Progress::Downloading { name, done, total });
        let req = crate::fetch::Request {
            name,
            urls,
            size: asset.size,
            sha256: asset.sha256,
            tmp_dir: &tmp,
            key: &key,
            progress: &progress,
        };
        let fetched = self.fetcher()?.fetch(&req)?;
        counters.1 += fetched.bytes_downloaded;
        counters.0 += fetched.size - fetched.bytes_resumed;
        let mode = place::effective_mode(asset.mode);
        let placed = place::place(
            &fetched.path,
            &fetched.file,
            &self.root,
            &asset.path,
            mode,
            &asset.sha256,
            name,
        );
        if placed.is_err() {
            let _ = std::fs::remove_file(&fetched.path);
        }
        let (stamp_placed, rehashed) = placed?;
        counters.0 += rehashed;
        // The verity tier: enable it on the placed file where the filesystem supports it
        // (this needs no writer open, so the download's handle is closed first).
        drop(fetched.file);
        let verity = if *self
            .verity
            .get_or_init(|| crate::verity::probe(&self.root) == crate::verity::Support::Available)
        {
            enable_verity(path)
        } else {
            None
        };
        let stamp_placed = match verity {
            Some(_) => Stamp::of_path(path)
                .at(path, "stat")?
                .unwrap_or(stamp_placed),
            None => stamp_placed,
        };
        let method = if verity.is_some() {
            Method::Verity
        } else {
            Method::Downloaded
        };
        // Settle: wait for the filesystem clock to pass the placement, then check the inode
        // is unchanged, so the record is not racy.
        let dir = path.parent().unwrap_or(&self.root);
        let settled = stamp::settle(
            dir,
            stamp_placed.ctime_ns.max(stamp_placed.mtime_ns),
            Duration::from_millis(50),
        )
        .ok()
        .flatten();
        let now = Stamp::of_path(path).ok().flatten();
        let rec = match (settled, now) {
            (Some(at), Some(s)) if s == stamp_placed => {
                Some(Record::new(asset.sha256, &s, version, at, method, false))
            }
            (None, Some(s)) if s == stamp_placed => Some(Record::new(
                asset.sha256,
                &s,
                version,
                stamp::wall_now_ns(),
                method,
                true,
            )),
            _ => None,
        };
        let rec = rec.map(|r| Record { verity, ..r });
        Ok((rec, fetched.size))
    }

    fn record(&self, asset: &Asset, rec: &Record, version: &str, outcome: &str, reason: &str) {
        let ev = self.event(asset, version, outcome, reason);
        if let Err(e) = self.ledger.put(&asset.path, rec, Some(&ev)) {
            // The asset is verified all the same; only the memory of it is lost.
            tracing::warn!("asset {}: not recorded: {e}", asset.name);
        }
    }

    /// Opens `asset` read-only and proves that this descriptor is the verified file: its
    /// `fstat` must match a record that vouches for it, or (for `verify: always`, or without
    /// a fresh record) its content is hashed through this same descriptor. A host hands the
    /// descriptor to the VMM, so nothing can swap the file between the check and the use.
    /// Reads only; call [`Store::prepare`] first to fetch or repair.
    pub fn open_verified(&self, asset: &Asset) -> Result<VerifiedFile> {
        use std::io::Seek;
        let path = place::resolve(&self.root, &asset.path, &asset.name)?;
        let mut file = place::open_nofollow(&path).map_err(|e| match e.raw_os_error() {
            Some(code) if code == rustix::io::Errno::LOOP.raw_os_error() => Error::UnsafePath {
                name: asset.name.clone(),
                path: path.clone(),
                why: "a symlink is at the asset path; never trusted".into(),
            },
            _ => Error::io(&path, "open", e),
        })?;
        let stamp = Stamp::of_file(&file).at(&path, "fstat")?;
        let record = self
            .ledger
            .read_many(&[asset.path.as_str()])
            .0
            .pop()
            .flatten();
        let expected = Expected {
            sha256: asset.sha256,
            size: asset.size,
        };
        let verdict = judge(record.as_ref(), Some(&stamp), &expected, self.policy(asset));
        if verdict.is_trusted() {
            return Ok(VerifiedFile {
                file,
                path,
                stamp,
                sha256: asset.sha256,
                rehashed: false,
            });
        }
        if stamp.kind != FileKind::Regular {
            return Err(Error::UnsafePath {
                name: asset.name.clone(),
                path,
                why: verdict.reason(),
            });
        }
        let (digest, bytes) =
            crate::digest::hash_reader(&file, crate::digest::HASH_BUF, |_| {}).at(&path, "read")?;
        let after = Stamp::of_file(&file).at(&path, "fstat")?;
        if after != stamp || bytes != stamp.size {
            return Err(Error::Unstable {
                name: asset.name.clone(),
                path,
            });
        }
        if digest != asset.sha256 {
            return Err(Error::Mismatch {
                name: asset.name.clone(),
                path,
                expected: asset.sha256.to_hex(),
                actual: digest.to_hex(),
            });
        }
        file.rewind().at(&path, "rewind")?;
        Ok(VerifiedFile {
            file,
            path,
            stamp,
            sha256: digest,
            rehashed: true,
        })
    }

    /// `debug verify`: re-hashes every asset, reading content, writing nothing.
    pub fn verify_all(
        &self,
        manifest: &Manifest,
    ) -> Vec<(Asset, PathBuf, std::result::Result<Sha256Digest, String>)> {
        manifest
            .assets
            .iter()
            .map(|a| {
                let p = self.root.join(&a.path);
                let r = match std::fs::symlink_metadata(&p) {
                    Err(_) => Err("missing".to_string()),
                    Ok(m) if !m.is_file() => Err("not a regular file".to_string()),
                    Ok(_) => place::hash_in_place(&p, &a.name, &mut |_| {})
                        .map(|h| h.digest)
                        .map_err(|e| e.to_string()),
                };
                (a.clone(), p, r)
            })
            .collect()
    }

    /// `gc`: files and records not in `manifest`. Returns (files removed, records removed).
    pub fn gc(&self, manifest: &Manifest, dry_run: bool) -> Result<(Vec<String>, Vec<String>)> {
        let keep: std::collections::HashSet<&str> =
            manifest.assets.iter().map(|a| a.path.as_str()).collect();
        let (records, _) = self.ledger.all();
        let stale_records: Vec<String> = records
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| !keep.contains(k.as_str()))
            .collect();
        let mut files = Vec::new();
        let canon_state = std::fs::canonicalize(&self.state).unwrap_or_else(|_| self.state.clone());
        walk(&self.root, &self.root, &canon_state, &mut files)?;
        let stale_files: Vec<String> = files
            .into_iter()
            .filter(|f| !keep.contains(f.as_str()))
            .collect();
        if !dry_run {
            for f in &stale_files {
                let p = self.root.join(f);
                std::fs::remove_file(&p).at(&p, "remove")?;
            }
            if !stale_records.is_empty() {
                self.ledger.remove(&stale_records)?;
            }
        }
        Ok((stale_files, stale_records))
    }

    /// Partial downloads in `STATE/tmp` that nobody will adopt: left by a process that is gone,
    /// for an asset `manifest` does not name. (A partial of a manifest asset is kept: the next
    /// prepare of that asset resumes it.) Removed unless `dry_run`; returns their file names.
    pub fn gc_partials(&self, manifest: &Manifest, dry_run: bool) -> Result<Vec<String>> {
        let tmp = self.state.join("tmp");
        let wanted: std::collections::HashSet<String> = manifest
            .assets
            .iter()
            .map(|a| crate::lock::file_key(&a.path))
            .collect();
        let entries = match std::fs::read_dir(&tmp) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&tmp, "list", e)),
        };
        let mut removed = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let mut parts = name.split('.');
            let (Some(key), Some(pid)) = (parts.next(), parts.next()) else {
                continue;
            };
            let alive = pid
                .parse::<i32>()
                .ok()
                .and_then(rustix::process::Pid::from_raw)
                .is_some_and(|p| {
                    !matches!(
                        rustix::process::test_kill_process(p),
                        Err(rustix::io::Errno::SRCH)
                    )
                });
            if alive || wanted.contains(key) {
                continue;
            }
            if !dry_run {
                let p = entry.path();
                std::fs::remove_file(&p).at(&p, "remove partial")?;
            }
            removed.push(name);
        }
        removed.sort();
        Ok(removed)
    }
}

/// Regular files and symlinks under `dir`, relative to `root`, skipping the state dir and
/// the legacy cache.
fn walk(root: &Path, dir: &Path, state: &Path, out: &mut Vec<String>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir, "list", e)),
    };
    for entry in entries {
        let entry = entry.at(dir, "list")?;
        let p = entry.path();
        let ft = entry.file_type().at(&p, "stat")?;
        if ft.is_dir() {
            if p == state
                || p.file_name() == Some(std::ffi::OsStr::new(crate::STATE_DIR_NAME))
                || std::fs::canonicalize(&p).is_ok_and(|c| c == state)
            {
                continue;
            }
            walk(root, &p, state, out)?;
        } else if let Ok(rel) = p.strip_prefix(root) {
            let rel = rel.to_string_lossy().to_string();
            if rel != crate::migrations::legacy::FILE_NAME {
                out.push(rel);
            }
        }
    }
    Ok(())
}

/// A record with a verity digest vouches only while the file still measures to it; then it
/// vouches even under `verify: always`, since the kernel checks every read against it.
fn verity_verdict(path: &Path, record: Option<&Record>, verdict: Verdict) -> Verdict {
    let Some(expected) = record.and_then(|r| r.verity) else {
        return verdict;
    };
    if !matches!(verdict, Verdict::Fresh | Verdict::Always) {
        return verdict;
    }
    let measured = place::open_nofollow(path)
        .ok()
        .and_then(|f| crate::verity::measure(&f));
    if measured == Some(expected) {
        Verdict::Fresh
    } else {
        Verdict::Stale(vec![crate::judge::Field::Verity])
    }
}

/// Enables fs-verity on a placed file and returns its verity digest.
fn enable_verity(path: &Path) -> Option<Sha256Digest> {
    let file = place::open_nofollow(path).ok()?;
    if let Err(e) = crate::verity::enable(&file) {
        tracing::debug!("{}: fs-verity not enabled: {e}", path.display());
        return None;
    }
    crate::verity::measure(&file)
}
