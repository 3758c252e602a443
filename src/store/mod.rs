//! The store facade: open a store, and prepare a manifest as a pipeline.
//!
//! A prepare is three stages. **Observe + plan**: one `lstat` per asset (relative to a
//! descriptor of ROOT), every record in one read transaction, then the pure [`plan`]: per asset
//! cached / chmod / hash / link / fetch / repair, with the reason. If every step is `cached`
//! the prepare ends there, having written nothing. **Execute**: the other steps go to a pool of
//! workers ([`crate::store::execute`]); each takes the asset's lock, looks again (another process may
//! have done the work), and hashes, copies or fetches, then places atomically. **Commit**:
//! finished results go to one committer ([`crate::store::commit`]) that writes them in short batched
//! write transactions and only then releases the assets' locks. No write transaction is ever
//! held across a download or a hash.

pub(crate) mod commit;
pub(crate) mod execute;
pub(crate) mod inspect;

use crate::cancel::CancelToken;
use crate::digest::Sha256Digest;
use crate::error::{Error, IoContext, Result};
use crate::fetch::{FetchOptions, Fetcher};
use crate::judge::{Expected, judge};
use crate::ledger::{Ledger, LedgerState};
use crate::manifest::{Asset, Manifest, Policy};
use crate::place;
use crate::plan::{Action, Observed, Plan, plan};
use crate::report::{AssetReport, Outcome, Progress, ProgressFn, Report};
use crate::stamp::{self, FileKind, Stamp};
use crate::state::ROOT_MARKER;
use crate::store::commit::Committer;
use crate::store::execute::Done;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Options of a store; see [`StoreBuilder`].
#[derive(Clone)]
pub(crate) struct Options {
    /// `None`: the number of cores, looked up only when there is work (it reads cgroup files).
    pub(crate) jobs: Option<usize>,
    pub(crate) offline: bool,
    pub(crate) verify: Option<Policy>,
    pub(crate) fetch: FetchOptions,
    pub(crate) progress: Option<ProgressFn>,
    /// Adopt a file only onto a fresh inode (reflink or copy), never in place under a read
    /// lease: the tests run the mmap attack through both ways.
    pub(crate) adopt_by_copy: bool,
}

/// Options of one prepare call (arcbox-boot passes progress per call, too).
#[derive(Clone, Default)]
pub struct PrepareOptions {
    provenance: Option<crate::ledger::Provenance>,
    progress: Option<ProgressFn>,
    only: Option<Vec<String>>,
    verify: Option<Policy>,
    cancel: Option<CancelToken>,
}

impl std::fmt::Debug for PrepareOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrepareOptions")
            .field("progress", &self.progress.is_some())
            .field("only", &self.only)
            .field("verify", &self.verify)
            .field("cancel", &self.cancel)
            .field("provenance", &self.provenance)
            .finish()
    }
}

impl PrepareOptions {
    /// Default options: every asset, each with its own policy, the store's progress callback.
    pub fn new() -> PrepareOptions {
        PrepareOptions::default()
    }
    /// Progress callback for this call (instead of the store's).
    pub fn progress(mut self, f: ProgressFn) -> Self {
        self.progress = Some(f);
        self
    }
    /// Prepares only the assets with these names (as arcbox-boot's `prepare_binaries`).
    pub fn only<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.only = Some(names.into_iter().map(Into::into).collect());
        self
    }
    /// Overrides every asset's `verify` policy for this call.
    pub fn verify(mut self, policy: Policy) -> Self {
        self.verify = Some(policy);
        self
    }
    /// A token that cancels this prepare.
    pub fn cancel(mut self, token: CancelToken) -> Self {
        self.cancel = Some(token);
        self
    }
    /// Where the manifest came from and which trusted key vouched for it: recorded in the
    /// ledger with the first records of its version (never on a warm prepare, which writes
    /// nothing).
    pub fn provenance(mut self, p: crate::ledger::Provenance) -> Self {
        self.provenance = Some(p);
        self
    }
}

/// Builds a [`Store`].
pub struct StoreBuilder {
    root: PathBuf,
    state_dir: Option<PathBuf>,
    opts: Options,
    write_deadline: Duration,
    client: Option<reqwest::Client>,
    create: bool,
    absent_root_ok: bool,
}

impl std::fmt::Debug for StoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreBuilder")
            .field("root", &self.root)
            .field("state_dir", &self.state_dir)
            .field("jobs", &self.opts.jobs)
            .field("offline", &self.opts.offline)
            .field("verify", &self.opts.verify)
            .field("fetch", &self.opts.fetch)
            .field("create", &self.create)
            .finish_non_exhaustive()
    }
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
    /// Never touch the network (`file://` sources are local copies and still work).
    pub fn offline(mut self, offline: bool) -> Self {
        self.opts.offline = offline;
        self
    }
    /// Overrides every asset's `verify` policy.
    pub fn verify(mut self, policy: Option<Policy>) -> Self {
        self.opts.verify = policy;
        self
    }
    /// Network options (retries, timeouts, backoff, extra CA certificates).
    pub fn fetch_options(mut self, fetch: FetchOptions) -> Self {
        self.opts.fetch = fetch;
        self
    }
    /// Uses the host's own HTTP client (its proxies, CAs, connection pool) for downloads.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }
    /// Default progress callback (a call's [`PrepareOptions::progress`] replaces it).
    pub fn progress(mut self, f: ProgressFn) -> Self {
        self.opts.progress = Some(f);
        self
    }
    /// Adopts files bootvault did not place only by reflink or copy, never in place under a
    /// read lease (the workspace's tests take both ways; not for hosts).
    #[cfg(feature = "__internals")]
    #[doc(hidden)]
    pub fn adopt_by_copy(mut self, copy: bool) -> Self {
        self.opts.adopt_by_copy = copy;
        self
    }
    /// How long a ledger write waits for other writers.
    pub fn write_deadline(mut self, d: Duration) -> Self {
        self.write_deadline = d;
        self
    }
    /// Whether [`StoreBuilder::open`] creates a missing ROOT (default `true`); with `false` a
    /// missing ROOT is an [`Error::Store`] (inspection never creates anything).
    pub fn create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }
    /// With `create(false)`, opens a store whose ROOT does not exist yet instead of failing:
    /// it reads as empty (every asset absent, no ledger), so a plan shows what a prepare would
    /// do there (`prepare --dry-run` on a new ROOT). Nothing is created.
    pub fn absent_root_ok(mut self, ok: bool) -> Self {
        self.absent_root_ok = ok;
        self
    }
    /// Opens the store: checks that ROOT (created when missing, see [`StoreBuilder::create`])
    /// and the state dir are usable directories, so a bad root fails here, once, and not once
    /// per asset. Creates no state: that happens on the first write.
    pub fn open(self) -> Result<Store> {
        let root = std::path::absolute(&self.root).at(&self.root, "resolve ROOT")?;
        let absent =
            self.absent_root_ok && !self.create && std::fs::symlink_metadata(&root).is_err();
        if !absent {
            check_dir(&root, self.create)?;
        }
        let explicit_state = self.state_dir.is_some();
        let state = match self.state_dir {
            Some(s) => std::path::absolute(&s).at(&s, "resolve state dir")?,
            None => root.join(crate::STATE_DIR_NAME),
        };
        // The state dir is created on the first write (a read-only command creates nothing);
        // a missing one is fine, anything else there must be a directory.
        if state.exists() {
            check_dir(&state, false)?;
        }
        // A state dir outside ROOT belongs to one ROOT: another sharing it would see every
        // record as stale and re-hash everything, silently.
        if state.exists() && !state_inside(&root, &state) {
            check_root_marker(&root, &state)?;
        }
        let mut ledger = Ledger::new(state.join("ledger.redb"), root.clone(), state.join("locks"));
        ledger.set_write_deadline(self.write_deadline);
        // The default state dir is a reserved name no asset path may start with; only an
        // explicit one needs working out (once, here, not on every prepare).
        let state_rel = if explicit_state {
            state_under_root(&root, &state)
        } else {
            None
        };
        Ok(Store {
            inner: Arc::new(Inner {
                state_rel,
                root,
                state,
                ledger,
                fetcher: OnceLock::new(),
                verity: OnceLock::new(),
                opts: self.opts,
                client: self.client,
            }),
        })
    }
}

/// Whether `state` lies inside `root` (then it moves with ROOT, and cannot be shared).
fn state_inside(root: &Path, state: &Path) -> bool {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canon(state).starts_with(canon(root))
}

/// Refuses a state dir whose `root` marker names another ROOT.
fn check_root_marker(root: &Path, state: &Path) -> Result<()> {
    let marker = state.join(ROOT_MARKER);
    let recorded =
        match crate::fsutil::open_regular(std::fs::OpenOptions::new().read(true), &marker) {
            Ok(f) => {
                use std::io::Read;
                let mut s = String::new();
                let _ = f.take(64 * 1024).read_to_string(&mut s);
                s.trim_end_matches('\n').to_string()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(Error::Store {
                    path: marker,
                    why: format!("cannot read which ROOT this state dir belongs to: {e}"),
                });
            }
        };
    let canon = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    if Path::new(&recorded) != canon {
        return Err(Error::Store {
            path: state.to_path_buf(),
            why: format!(
                "this state dir belongs to ROOT {recorded} (recorded in {}), not to {}: two \
                 ROOTs cannot share a state dir; give each its own --state-dir (or, if ROOT \
                 moved, remove {})",
                marker.display(),
                canon.display(),
                marker.display()
            ),
        });
    }
    Ok(())
}

/// The state dir relative to ROOT, when it lies inside ROOT (symlinks resolved where they
/// exist).
fn state_under_root(root: &Path, state: &Path) -> Option<String> {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (root, state) = (canon(root), canon(state));
    let rel = state.strip_prefix(&root).ok()?;
    Some(rel.to_string_lossy().trim_end_matches('/').to_string())
}

/// ROOT or state dir: a directory (created when missing and `create`), else [`Error::Store`].
fn check_dir(path: &Path, create: bool) -> Result<()> {
    let store_err = |why: String| Error::Store {
        path: path.to_path_buf(),
        why,
    };
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(store_err("not a directory".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            std::fs::create_dir_all(path).map_err(|e| store_err(format!("cannot create: {e}")))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(store_err("no such directory".into()))
        }
        Err(e) => Err(store_err(e.to_string())),
    }
}

/// A store of verified assets under one ROOT. Cheap to clone (an inner `Arc`), `Send + Sync`:
/// one store serves every thread and task of a host.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) root: PathBuf,
    /// Where the state dir lies under ROOT (`""`: it is ROOT), if it does.
    state_rel: Option<String>,
    pub(crate) state: PathBuf,
    pub(crate) ledger: Ledger,
    fetcher: OnceLock<std::result::Result<Fetcher, String>>,
    /// Whether ROOT's filesystem supports fs-verity (probed on the first placement).
    pub(crate) verity: OnceLock<bool>,
    pub(crate) opts: Options,
    client: Option<reqwest::Client>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.inner.root)
            .field("state_dir", &self.inner.state)
            .field("jobs", &self.inner.opts.jobs)
            .field("offline", &self.inner.opts.offline)
            .field("verify", &self.inner.opts.verify)
            .finish_non_exhaustive()
    }
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

/// The per-call context the workers share.
pub(crate) struct Call<'a> {
    pub(crate) manifest: &'a Manifest,
    pub(crate) progress: Option<&'a ProgressFn>,
    pub(crate) cancel: CancelToken,
    /// The filesystem clock read before any content was read (the racy rule's moment).
    pub(crate) probe: i64,
}

impl Call<'_> {
    pub(crate) fn emit(&self, p: Progress<'_>) {
        if let Some(f) = self.progress {
            f(&p);
        }
    }
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
                adopt_by_copy: false,
            },
            write_deadline: Duration::from_secs(10),
            client: None,
            create: true,
            absent_root_ok: false,
        }
    }

    /// Opens the store at `root` with default options.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        Self::builder(root).open()
    }

    /// ROOT.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }
    /// The state dir.
    pub fn state_dir(&self) -> &Path {
        &self.inner.state
    }
    /// The ledger file.
    pub fn ledger_path(&self) -> &Path {
        self.inner.ledger.path()
    }
    /// The ledger (internal; public only for the workspace's own tests).
    #[cfg(feature = "__internals")]
    #[doc(hidden)]
    pub fn ledger(&self) -> &Ledger {
        &self.inner.ledger
    }
    #[cfg(not(feature = "__internals"))]
    pub(crate) fn ledger(&self) -> &Ledger {
        &self.inner.ledger
    }

    fn indexes(&self, manifest: &Manifest, opts: &PrepareOptions) -> Result<Option<Vec<usize>>> {
        let Some(names) = &opts.only else {
            return Ok(None);
        };
        names
            .iter()
            .map(|n| {
                manifest
                    .assets
                    .iter()
                    .position(|a| &a.name == n)
                    .ok_or_else(|| Error::Manifest {
                        origin: "<prepare options>".into(),
                        message: format!("asset {n}: not in the manifest"),
                    })
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// Reads what planning needs, writing nothing: one `lstat` per asset relative to a
    /// descriptor of ROOT, every record in one read transaction, and the fs-verity measurement
    /// of files whose record holds one.
    pub(crate) fn observe(&self, manifest: &Manifest) -> (Vec<Observed>, LedgerState) {
        let root_fd = crate::sys::open_dir_for_stat(&self.inner.root).ok();
        let lives: Vec<Option<Stamp>> = manifest
            .assets
            .iter()
            .map(|a| match &root_fd {
                Some(fd) => Stamp::of_path_at(fd, &a.path),
                None => Stamp::of_path(&self.inner.root.join(&a.path))
                    .ok()
                    .flatten(),
            })
            .collect();
        let keys: Vec<&str> = manifest.assets.iter().map(|a| a.path.as_str()).collect();
        let (records, state) = self.inner.ledger.read_many(&keys);
        let observed = manifest
            .assets
            .iter()
            .zip(lives)
            .zip(records)
            .map(|((asset, live), record)| {
                // Only a record with a verity digest needs a measurement (and the path).
                let verity = if record.as_ref().is_some_and(|r| r.verity.is_some()) {
                    crate::store::execute::live_verity(
                        &self.inner.root.join(&asset.path),
                        record.as_ref(),
                        live.as_ref(),
                    )
                } else {
                    None
                };
                Observed {
                    record,
                    live,
                    verity,
                }
            })
            .collect();
        (observed, state)
    }

    /// No asset may live inside the state dir, wherever it is (with `--state-dir ROOT`, an
    /// asset `ledger.redb` would replace the ledger). Lexical, against where the state dir
    /// lies under ROOT (worked out once, at open), so the warm path pays no syscall for it.
    fn refuse_state_paths(&self, manifest: &Manifest) -> Result<()> {
        let Some(rel) = &self.inner.state_rel else {
            return Ok(());
        };
        for a in &manifest.assets {
            let inside = rel.is_empty()
                || a.path == *rel
                || a.path.starts_with(&format!("{rel}/"))
                || rel.starts_with(&format!("{}/", a.path));
            if inside {
                return Err(Error::Manifest {
                    origin: "<store>".into(),
                    message: format!(
                        "asset {}: path {:?} lies inside the state dir {} (or holds it)",
                        a.name,
                        a.path,
                        self.inner.state.display()
                    ),
                });
            }
        }
        Ok(())
    }

    /// Verified files in the store that could donate their bytes to an absent asset: every
    /// record whose file still matches it, keyed by digest. Only read when something is absent.
    fn donors(&self, wanted: &[Sha256Digest]) -> HashMap<Sha256Digest, PathBuf> {
        let mut out = HashMap::new();
        if wanted.is_empty() {
            return out;
        }
        let (records, _) = self.inner.ledger.all();
        for (key, record) in records {
            if !wanted.contains(&record.sha256) || out.contains_key(&record.sha256) {
                continue;
            }
            if crate::manifest::validate_path(&key).is_err() {
                continue;
            }
            let path = self.inner.root.join(&key);
            let Ok(Some(live)) = Stamp::of_path(&path) else {
                continue;
            };
            let expected = Expected {
                sha256: record.sha256,
                size: None,
                mode: live.perm,
            };
            // Cached policy: the copy re-hashes every byte, so the record only has to say
            // which file is worth trying.
            if judge(Some(&record), Some(&live), &expected, Policy::Cached, None).is_trusted()
                || record.verity.is_some()
            {
                out.insert(record.sha256, path);
            }
        }
        out
    }

    /// Whether every asset of `manifest` is vouched for by its record now (what a prepare
    /// would report all `cached`): one `lstat` per asset and one read transaction, nothing
    /// written, nothing copied. The cheapest warm check a host can make before a prepare.
    pub fn is_fresh(&self, manifest: &Manifest) -> bool {
        self.fresh_stamps(manifest).is_some()
    }

    /// [`Store::is_fresh`], with the live stamp of every asset (in manifest order) when all are
    /// vouched for. A file whose `lstat` still equals its stamp here is the file that was
    /// judged: its inode, size, mtime and ctime (which user space cannot set back) are
    /// unchanged, so a host may keep trusting it on that one `lstat` alone.
    pub fn fresh_stamps(&self, manifest: &Manifest) -> Option<Vec<Stamp>> {
        let (observed, _) = self.observe(manifest);
        let mut out = Vec::with_capacity(observed.len());
        for (asset, o) in manifest.assets.iter().zip(observed) {
            let fresh = judge(
                o.record.as_ref(),
                o.live.as_ref(),
                &Expected::of(asset),
                self.inner.opts.verify.unwrap_or(asset.verify),
                o.verity.as_ref(),
            )
            .is_trusted();
            match (fresh, o.live) {
                (true, Some(live)) => out.push(live),
                _ => return None,
            }
        }
        Some(out)
    }

    /// The plan a prepare with `opts` would follow now: reads only (no lock, no write, no
    /// network). `prepare --dry-run` and `debug why` print it.
    pub fn plan(&self, manifest: &Manifest, opts: &PrepareOptions) -> Result<Plan> {
        let only = self.indexes(manifest, opts)?;
        let (observed, state) = self.observe(manifest);
        Ok(self.plan_from(manifest, &observed, state, opts, only.as_deref(), false))
    }

    fn plan_from(
        &self,
        manifest: &Manifest,
        observed: &[Observed],
        state: LedgerState,
        opts: &PrepareOptions,
        only: Option<&[usize]>,
        cache: bool,
    ) -> Plan {
        let policy = opts.verify.or(self.inner.opts.verify);
        let mut out = self.plan_with_donors(manifest, observed, state, policy, only);
        // After donors (a local copy of the same digest beats a patch). Only an indexed asset
        // that must still be fetched reads an index, so a warm prepare never does.
        self.plan_patches(manifest, observed, &mut out, cache);
        out
    }

    fn plan_with_donors(
        &self,
        manifest: &Manifest,
        observed: &[Observed],
        state: LedgerState,
        policy: Option<Policy>,
        only: Option<&[usize]>,
    ) -> Plan {
        let first = plan(manifest, observed, policy, &HashMap::new(), only, state);
        if !first.steps.iter().any(|s| s.action == Action::Fetch) {
            return first;
        }
        let absent: Vec<Sha256Digest> = first
            .steps
            .iter()
            .filter(|s| s.action == Action::Fetch)
            .map(|s| manifest.assets[s.index].sha256)
            .collect();
        let donors = self.donors(&absent);
        if donors.is_empty() {
            return first;
        }
        plan(manifest, observed, policy, &donors, only, state)
    }

    /// Makes every asset of `manifest` present and verified. Per-asset failures are in the
    /// report; `Err` only when the call itself is wrong (an unknown asset in
    /// [`PrepareOptions::only`]).
    pub fn prepare(&self, manifest: &Manifest) -> Result<Report> {
        self.prepare_with(manifest, &PrepareOptions::default())
    }

    /// [`Store::prepare`] with per-call options.
    pub fn prepare_with(&self, manifest: &Manifest, opts: &PrepareOptions) -> Result<Report> {
        let start = Instant::now();
        let only = self.indexes(manifest, opts)?;
        let (observed, state) = self.observe(manifest);
        let plan = self.plan_from(manifest, &observed, state, opts, only.as_deref(), true);
        let call = Call {
            manifest,
            progress: opts.progress.as_ref().or(self.inner.opts.progress.as_ref()),
            cancel: opts.cancel.clone().unwrap_or_default(),
            probe: 0,
        };
        let mut reports: Vec<Option<AssetReport>> = Vec::with_capacity(plan.steps.len());
        let mut queue = VecDeque::new();
        for (slot, step) in plan.steps.into_iter().enumerate() {
            let asset = &manifest.assets[step.index];
            call.emit(Progress::Checking { name: &asset.name });
            if step.action == Action::Cached {
                call.emit(Progress::Ready {
                    name: &asset.name,
                    outcome: Outcome::Cached,
                });
                reports.push(Some(self.cached_report(asset, step.live.map(|l| l.size))));
            } else {
                reports.push(None);
                queue.push_back((slot, step));
            }
        }
        if !queue.is_empty() {
            // Before anything is written under ROOT: the manifest may have been built or changed
            // in code. (The warm path needs no check: it only reads, and a record can only exist
            // for a path that passed this check when it was written.)
            crate::manifest::revalidate(manifest)?;
            self.refuse_state_paths(manifest)?;
            let call = Call {
                probe: self.fs_clock(),
                ..call
            };
            let provenance = opts
                .provenance
                .clone()
                .map(|p| (manifest.version.clone(), p));
            for (slot, report) in self.execute(&call, queue, provenance) {
                reports[slot] = Some(report);
            }
        }
        Ok(Report {
            manifest_version: manifest.version.clone(),
            elapsed: start.elapsed(),
            assets: reports.into_iter().flatten().collect(),
            ledger: state,
            kernel_cmdline: manifest.kernel_cmdline.clone(),
        })
    }

    /// Runs the steps on a pool of workers, with one committer writing their results.
    fn execute(
        &self,
        call: &Call<'_>,
        queue: VecDeque<(usize, crate::plan::Step)>,
        provenance: Option<(String, crate::ledger::Provenance)>,
    ) -> Vec<(usize, AssetReport)> {
        let jobs = self.inner.opts.jobs.unwrap_or_else(|| {
            // Small assets are I/O-bound (fsyncs, renames): more workers than cores help.
            let cores = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2);
            let small = queue.iter().all(|(_, s)| {
                call.manifest.assets[s.index]
                    .size
                    .is_some_and(|n| n < 1 << 20)
            });
            if small { cores * 4 } else { cores }
        });
        let workers = jobs.min(queue.len()).max(1);
        let queue = Mutex::new(queue);
        let results = Mutex::new(Vec::new());
        let committer = Committer::start(self.clone(), provenance);
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    loop {
                        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                        let Some((slot, step)) = next else { break };
                        let asset = &call.manifest.assets[step.index];
                        let t = Instant::now();
                        // What the step will do, as the plan says it; a hash step's plan
                        // text lists the ways to adopt, and its note says which was taken, so
                        // the verdict alone goes before that note.
                        let reason = match step.action {
                            Action::Hash => step.verdict.reason(),
                            _ => step.reason(),
                        };
                        let done = if call.cancel.is_cancelled() {
                            Err(Error::Cancelled {
                                name: asset.name.clone(),
                            })
                        } else {
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                self.run_step(call, asset, &step)
                            }))
                            .unwrap_or_else(|panic| {
                                Err(Error::Internal {
                                    name: asset.name.clone(),
                                    message: panic_message(&panic),
                                })
                            })
                        };
                        // An index that could not be used: the whole download says why.
                        let done = done.map(|mut d| {
                            if d.patch_fallback.is_none() && d.bytes_downloaded > 0 {
                                d.patch_fallback = step.no_patch.clone();
                            }
                            d
                        });
                        let report = self.finish_step(call, asset, &reason, done, t, &committer);
                        results
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((slot, report));
                    }
                });
            }
        });
        committer.finish();
        let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
        self.sweep_dead_temps(call.manifest, &results);
        results
    }

    /// A process killed between linking a placement's temp name and renaming it over the
    /// asset leaves `.bootvault-<pid>-<random>.tmp` beside it. The directories this prepare
    /// placed into are swept of those of dead processes (`gc` sweeps the whole tree).
    fn sweep_dead_temps(&self, manifest: &Manifest, results: &[(usize, AssetReport)]) {
        let dirs: std::collections::BTreeSet<&str> = results
            .iter()
            .filter_map(|(_, r)| manifest.assets.iter().find(|a| a.name == r.name))
            .map(|a| a.path.rsplit_once('/').map(|(d, _)| d).unwrap_or(""))
            .collect();
        for dir in dirs {
            let abs = self.inner.root.join(dir);
            let Ok(entries) = std::fs::read_dir(&abs) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if crate::store::inspect::is_dead_temp(&name) {
                    let _ = place::unlink_temp(&self.inner.root, dir, &name);
                }
            }
        }
    }

    fn finish_step(
        &self,
        call: &Call<'_>,
        asset: &Asset,
        reason: &str,
        done: Result<Done>,
        t: Instant,
        committer: &Committer,
    ) -> AssetReport {
        let version = &call.manifest.version;
        match done {
            Ok(done) => {
                // Partials of this asset left by killed processes will never be resumed now.
                crate::fetch::drop_dead_partials(
                    &self.inner.state.join("tmp"),
                    &crate::lock::file_key(&asset.path),
                );
                call.emit(Progress::Ready {
                    name: &asset.name,
                    outcome: done.outcome,
                });
                // The step's note (how a file was adopted, what was wrong) goes with the plan's
                // reason into the report and the event, so `debug why` says which way was taken.
                let why = match &done.note {
                    Some(n) => format!("{reason}; {n}"),
                    None => reason.to_string(),
                };
                let report = AssetReport {
                    name: asset.name.clone(),
                    path: self.inner.root.join(&asset.path),
                    sha256: asset.sha256,
                    size: Some(done.size),
                    result: Ok(done.outcome),
                    bytes_hashed: done.bytes_hashed,
                    bytes_downloaded: done.bytes_downloaded,
                    bytes_copied: done.bytes_copied,
                    bytes_reused: done.bytes_reused,
                    patch_fallback: done.patch_fallback.clone(),
                    reason: why.clone(),
                    elapsed: t.elapsed(),
                };
                // Nothing new to remember (`verify: always` on an unchanged file, a read-only
                // store): no write transaction, no fsync.
                if done.record.is_some() || done.note.is_some() {
                    let event =
                        crate::store::execute::event(asset, version, done.outcome.as_str(), &why);
                    committer.send(&asset.path, done.record, event, done.lock);
                }
                report
            }
            Err(e) => {
                let e = e.for_asset(&asset.name);
                call.emit(Progress::Failed {
                    name: &asset.name,
                    error: &e,
                });
                let event = crate::store::execute::event(asset, version, "failed", &e.to_string());
                committer.send(&asset.path, None, event, None);
                AssetReport {
                    name: asset.name.clone(),
                    path: self.inner.root.join(&asset.path),
                    sha256: asset.sha256,
                    size: asset.size,
                    result: Err(e),
                    bytes_hashed: 0,
                    bytes_downloaded: 0,
                    bytes_copied: 0,
                    bytes_reused: 0,
                    patch_fallback: None,
                    reason: reason.to_string(),
                    elapsed: t.elapsed(),
                }
            }
        }
    }

    /// [`Store::prepare_with`] for a tokio host: runs on the blocking pool, so the host's
    /// runtime is never blocked. Dropping the future cancels the prepare (a download in flight
    /// keeps a resumable partial; finished assets are still recorded).
    pub async fn prepare_async(&self, manifest: &Manifest, opts: PrepareOptions) -> Result<Report> {
        let token = opts.cancel.clone().unwrap_or_default();
        let opts = opts.cancel(token.clone());
        struct CancelOnDrop(Option<CancelToken>);
        impl CancelOnDrop {
            fn disarm(mut self) {
                self.0 = None;
            }
        }
        impl Drop for CancelOnDrop {
            fn drop(&mut self) {
                if let Some(t) = self.0.take() {
                    t.cancel();
                }
            }
        }
        let guard = CancelOnDrop(Some(token));
        let store = self.clone();
        let manifest = manifest.clone();
        let result = tokio::task::spawn_blocking(move || store.prepare_with(&manifest, &opts))
            .await
            .map_err(|e| Error::Internal {
                name: "-".into(),
                message: format!("prepare worker: {e}"),
            })?;
        // Finished normally: nothing to cancel.
        guard.disarm();
        result
    }

    fn fs_clock(&self) -> i64 {
        // Taken before any content is read: a file changed at or after this moment is racy.
        stamp::fs_now(&self.inner.root).unwrap_or_else(|_| stamp::wall_now_ns())
    }

    fn cached_report(&self, asset: &Asset, size: Option<u64>) -> AssetReport {
        AssetReport {
            name: asset.name.clone(),
            path: self.inner.root.join(&asset.path),
            sha256: asset.sha256,
            size,
            result: Ok(Outcome::Cached),
            bytes_hashed: 0,
            bytes_downloaded: 0,
            bytes_copied: 0,
            bytes_reused: 0,
            patch_fallback: None,
            reason: String::new(),
            elapsed: Duration::ZERO,
        }
    }

    /// Fetches a small document whose digest is not known in advance (a manifest), at most
    /// `max_bytes`, with this store's client and retry policy (`http(s)://` and `file://`).
    /// Blocking; a tokio host awaits [`Store::fetch_document_async`] instead.
    pub fn fetch_document(&self, url: &str, max_bytes: u64) -> Result<Vec<u8>> {
        self.document_allowed(url)?;
        self.fetcher()?
            .document_blocking(url, max_bytes, &CancelToken::new())
    }

    /// [`Store::fetch_document`] for a tokio host: awaits on the caller's runtime (no
    /// `block_on`, no blocking hand-off). Dropping the future stops the fetch.
    pub async fn fetch_document_async(&self, url: &str, max_bytes: u64) -> Result<Vec<u8>> {
        self.document_allowed(url)?;
        self.fetcher()?
            .document(url, max_bytes, &CancelToken::new())
            .await
    }

    fn document_allowed(&self, url: &str) -> Result<()> {
        if self.inner.opts.offline && !url.starts_with("file:") {
            return Err(Error::Document {
                url: url.into(),
                attempts: vec![crate::error::FetchAttempt {
                    url: url.into(),
                    reason: "offline".into(),
                }],
            });
        }
        Ok(())
    }

    pub(crate) fn fetcher(&self) -> Result<&Fetcher> {
        let f = self.inner.fetcher.get_or_init(|| {
            Fetcher::new(self.inner.opts.fetch.clone(), self.inner.client.clone())
                .map_err(|e| e.to_string())
        });
        f.as_ref().map_err(|e| Error::Fetch {
            name: "-".into(),
            attempts: vec![crate::error::FetchAttempt {
                url: String::new(),
                reason: e.clone(),
            }],
        })
    }

    /// Opens `asset` read-only and proves that this descriptor is the verified file: its
    /// `fstat` must match a record that vouches for it, or (for `verify: always`, or without
    /// a fresh record) its content is hashed through this same descriptor. A host hands the
    /// descriptor to the VMM, so nothing can swap the file between the check and the use.
    /// Reads only; call [`Store::prepare`] first to fetch or repair.
    pub fn open_verified(&self, asset: &Asset) -> Result<VerifiedFile> {
        use std::io::Seek;
        crate::manifest::validate_path(&asset.path).map_err(|why| Error::UnsafePath {
            name: asset.name.clone(),
            path: PathBuf::from(&asset.path),
            why,
        })?;
        let path = place::resolve(&self.inner.root, &asset.path, &asset.name)?;
        let mut file = place::open_nofollow(&path).map_err(|e| match e.raw_os_error() {
            Some(code) if code == rustix::io::Errno::LOOP.raw_os_error() => Error::UnsafePath {
                name: asset.name.clone(),
                path: path.clone(),
                why: "a symlink is at the asset path; never trusted".into(),
            },
            _ => Error::io(&path, "open", e).for_asset(&asset.name),
        })?;
        let stamp = Stamp::of_file(&file)
            .at(&path, "fstat")
            .map_err(|e| e.for_asset(&asset.name))?;
        let record = self.record_of(asset);
        let verity = record
            .as_ref()
            .filter(|r| r.verity.is_some())
            .and_then(|_| crate::verity::measure(&file));
        let policy = self.inner.opts.verify.unwrap_or(asset.verify);
        let verdict = judge(
            record.as_ref(),
            Some(&stamp),
            &Expected::of(asset),
            policy,
            verity.as_ref(),
        );
        // A drifted mode does not make the content untrustworthy.
        if verdict.is_trusted() || matches!(verdict, crate::judge::Verdict::Mode { .. }) {
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
        let (digest, bytes) = crate::digest::hash_file(&file, |_| {})
            .at(&path, "read")
            .map_err(|e| e.for_asset(&asset.name))?;
        let after = Stamp::of_file(&file)
            .at(&path, "fstat")
            .map_err(|e| e.for_asset(&asset.name))?;
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
                expected: asset.sha256,
                actual: digest,
            });
        }
        file.rewind()
            .at(&path, "rewind")
            .map_err(|e| e.for_asset(&asset.name))?;
        Ok(VerifiedFile {
            file,
            path,
            stamp,
            sha256: digest,
            rehashed: true,
        })
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "worker panicked".into())
}
