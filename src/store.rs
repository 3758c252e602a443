//! The facade: [`Store`] opens things (ROOT, the state dir, the ledger) and hands them to the
//! per-call types that do the work: [`crate::prepare::Prepare`] (observe → plan → execute →
//! commit) and the read-only views of [`crate::inspect`]. Every public method of a store is
//! here, in this one `impl Store`.

use crate::cancel::CancelToken;
use crate::context::{Context, Options};
use crate::digest::Sha256Digest;
use crate::error::{Error, IoContext, Result};
use crate::fetch::FetchOptions;
use crate::inspect::{Explanation, GcReport, Inspection, Usage, VerifyState};
use crate::ledger::{Event, Ledger, LedgerState, Record};
use crate::manifest::{Asset, Manifest, Policy};
use crate::place;
use crate::prepare::judge::{Expected, judge};
use crate::prepare::plan::Plan;
use crate::prepare::{Prepare, PrepareOptions};
use crate::report::{ProgressFn, Report};
use crate::stamp::{FileKind, Stamp};
use crate::state::StateDir;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

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
        // The default state dir, when `lstat` shows a directory (not a symlink), is the entry
        // `.bootvault` of ROOT itself: inside ROOT by construction (its canonical path is
        // ROOT's plus that name), so nothing more is resolved or checked. Anything else there
        // (a symlink, which may point anywhere) takes the full checks below.
        let plain_default =
            !explicit_state && std::fs::symlink_metadata(&state).is_ok_and(|m| m.is_dir());
        // ROOT and the state dir are canonicalized at most once each, and only when needed.
        let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let root_canon = std::cell::OnceCell::new();
        let state_canon = std::cell::OnceCell::new();
        let canon_root = || root_canon.get_or_init(|| canon(&root));
        let canon_state = || state_canon.get_or_init(|| canon(&state));
        if !plain_default {
            // The state dir is created on the first write (a read-only command creates
            // nothing); a missing one is fine, anything else there must be a directory.
            let exists = match std::fs::metadata(&state) {
                Ok(m) if m.is_dir() => true,
                Ok(_) => {
                    return Err(Error::Store {
                        path: state.clone(),
                        why: "not a directory".into(),
                    });
                }
                Err(_) => false,
            };
            // A state dir outside ROOT belongs to one ROOT: another sharing it would see every
            // record as stale and re-hash everything, silently.
            if exists && !canon_state().starts_with(canon_root()) {
                check_root_marker(canon_root(), &state)?;
            }
        }
        let mut ledger = Ledger::new(state.clone(), root.clone());
        ledger.set_write_deadline(self.write_deadline);
        // The default state dir is a reserved name no asset path may start with; only an
        // explicit one needs working out (once, here, not on every prepare).
        let state_rel = if explicit_state {
            state_under_root(canon_root(), canon_state())
        } else {
            None
        };
        Ok(Store {
            inner: Arc::new(Context {
                state_rel,
                root,
                state: StateDir::new(state),
                ledger,
                fetcher: OnceLock::new(),
                verity: OnceLock::new(),
                opts: self.opts,
                client: self.client,
            }),
        })
    }
}

/// Refuses a state dir whose `root` marker names another ROOT (`canon`: ROOT canonicalized).
fn check_root_marker(canon: &Path, state: &Path) -> Result<()> {
    let marker = StateDir::new(state).root_marker();
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

/// The state dir relative to ROOT, when it lies inside ROOT (both canonicalized: symlinks
/// resolved where they exist).
fn state_under_root(root: &Path, state: &Path) -> Option<String> {
    let rel = state.strip_prefix(root).ok()?;
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
    inner: Arc<Context>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.inner.root)
            .field("state_dir", &self.inner.state.path())
            .field("jobs", &self.inner.opts.jobs)
            .field("offline", &self.inner.opts.offline)
            .field("verify", &self.inner.opts.verify)
            .finish_non_exhaustive()
    }
}

/// An open, read-only descriptor of exactly the inode that was verified.
#[derive(Debug)]
#[non_exhaustive]
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
        self.inner.state.path()
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

    /// Every record, sorted by path, and what the read found.
    pub fn records(&self) -> (Vec<(String, Record)>, LedgerState) {
        self.inner.records()
    }

    /// Where each manifest version came from and which key vouched for it.
    pub fn manifests(&self) -> Vec<(String, crate::ledger::Provenance)> {
        self.inner.manifests()
    }

    /// Recent events, newest first, optionally for one path.
    pub fn events(&self, path: Option<&str>, limit: usize) -> Vec<Event> {
        self.inner.events(path, limit)
    }

    /// The ledger's schema version on disk (0 when absent or unreadable).
    pub fn schema_version(&self) -> u64 {
        self.inner.schema_version()
    }

    /// Imports an arcbox-boot `.verified.json` ([`crate::LEGACY_FILE_NAME`]) into the ledger.
    pub fn import_legacy(
        &self,
        legacy: &Path,
    ) -> Result<crate::ledger::migrations::legacy::ImportReport> {
        self.inner.import_legacy(legacy)
    }

    /// Stats every asset and reads every record in one read transaction; judges each with
    /// `policy` (or the asset's own). Reads only.
    pub fn inspect(
        &self,
        manifest: &Manifest,
        policy: Option<Policy>,
    ) -> (Vec<Inspection>, LedgerState) {
        self.inner.inspect(manifest, policy)
    }

    /// Why the asset named `target` (a manifest asset name or path, or a path relative to
    /// ROOT) is (not) trusted, and what a prepare would do. `None` when nothing is known of it.
    pub fn explain(
        &self,
        manifest: Option<&Manifest>,
        target: &str,
        events: usize,
    ) -> Result<Option<Explanation>> {
        self.inner.explain(manifest, target, events)
    }

    /// Every ledger record judged without a manifest (`debug check` with no `--manifest`), by
    /// the same rule as [`Store::explain`] (`debug why`): the record's digest is expected, and
    /// no size or mode (nothing says what they should be). A record whose key is not a valid
    /// asset path (only a damaged or forged ledger has one) names no file bootvault placed and
    /// is left out. Reads only.
    pub fn inspect_records(&self, policy: Policy) -> (Vec<Inspection>, LedgerState) {
        self.inner.inspect_records(policy)
    }

    /// `debug verify`: re-hashes every asset, reading content, writing nothing.
    pub fn verify_all(&self, manifest: &Manifest) -> Vec<(Asset, PathBuf, VerifyState)> {
        self.inner.verify_all(manifest)
    }

    /// `debug verify` without a manifest: re-hashes the file of every ledger record, each as a
    /// pseudo-asset named by its path (as [`Store::inspect_records`] judges them), reading
    /// content, writing nothing.
    pub fn verify_records(&self) -> Vec<(Asset, PathBuf, VerifyState)> {
        self.inner.verify_records()
    }

    /// `gc`: removes the files and records of paths that `manifest` no longer names, but only
    /// files bootvault recorded and that still match their record; anything else under ROOT
    /// is foreign and kept. Partial downloads nobody owns are removed too. Removes nothing
    /// when `dry_run`.
    ///
    /// gc stays in its store: ROOT is resolved once (as a prepare does) and every name below it
    /// is reached from that descriptor one component at a time with `O_NOFOLLOW`, so a
    /// symlinked directory under ROOT or in the state dir is never followed; a path that cannot
    /// be checked that way is skipped and reported ([`GcReport::skipped`]) and keeps its
    /// record. Temp names of dead placements are removed only in directories the store places
    /// into (parents of manifest assets and recorded paths); elsewhere they are foreign.
    pub fn gc(&self, manifest: &Manifest, dry_run: bool) -> Result<GcReport> {
        self.inner.gc(manifest, dry_run)
    }

    /// Partial downloads in `STATE/tmp` that nobody will adopt: left by a process that is gone,
    /// for an asset `manifest` does not name. (A partial of a manifest asset is kept: the next
    /// prepare of that asset resumes it.) Removed unless `dry_run`; returns their file names.
    /// A `tmp` that is a symlink is not followed (nothing is listed or removed through it).
    pub fn gc_partials(&self, manifest: &Manifest, dry_run: bool) -> Result<Vec<String>> {
        self.inner.gc_partials(manifest, dry_run)
    }

    /// Sizes of the store's parts. Reads only.
    pub fn usage(&self) -> Usage {
        self.inner.usage()
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
        crate::prepare::observe::fresh_stamps(&self.inner, manifest)
    }

    /// The plan a prepare with `opts` would follow now: reads only (no lock, no write, no
    /// network). `prepare --dry-run` and `debug why` print it.
    pub fn plan(&self, manifest: &Manifest, opts: &PrepareOptions) -> Result<Plan> {
        Prepare::new(&self.inner, manifest, opts).plan()
    }

    /// Makes every asset of `manifest` present and verified. Per-asset failures are in the
    /// report; `Err` only when the call itself is wrong (an unknown asset in
    /// [`PrepareOptions::only`]).
    pub fn prepare(&self, manifest: &Manifest) -> Result<Report> {
        self.prepare_with(manifest, &PrepareOptions::default())
    }

    /// [`Store::prepare`] with per-call options.
    pub fn prepare_with(&self, manifest: &Manifest, opts: &PrepareOptions) -> Result<Report> {
        Prepare::new(&self.inner, manifest, opts).run()
    }

    /// [`Store::prepare_with`] for a tokio host: runs on the blocking pool, so the host's
    /// runtime is never blocked. Dropping the future cancels the prepare (a download in flight
    /// keeps a resumable partial; finished assets are still recorded).
    pub async fn prepare_async(&self, manifest: &Manifest, opts: PrepareOptions) -> Result<Report> {
        let token = opts.cancel_token().unwrap_or_default();
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
            .map_err(|e| Error::Worker {
                message: format!("prepare worker: {e}"),
            })?;
        // Finished normally: nothing to cancel.
        guard.disarm();
        result
    }

    /// Fetches a small document whose digest is not known in advance (a manifest), at most
    /// `max_bytes`, with this store's client and retry policy (`http(s)://` and `file://`).
    /// Blocking; a tokio host awaits [`Store::fetch_document_async`] instead.
    pub fn fetch_document(&self, url: &str, max_bytes: u64) -> Result<Vec<u8>> {
        self.inner.document_allowed(url)?;
        self.inner
            .fetcher()?
            .document_blocking(url, max_bytes, &CancelToken::new())
    }

    /// [`Store::fetch_document`] for a tokio host: awaits on the caller's runtime (no
    /// `block_on`, no blocking hand-off). Dropping the future stops the fetch.
    pub async fn fetch_document_async(&self, url: &str, max_bytes: u64) -> Result<Vec<u8>> {
        self.inner.document_allowed(url)?;
        self.inner
            .fetcher()?
            .document(url, max_bytes, &CancelToken::new())
            .await
    }

    /// Opens `asset` read-only and proves that this descriptor is the verified file: its
    /// `fstat` must match a record that vouches for it, or (for `verify: always`, or without
    /// a fresh record) its content is hashed through this same descriptor. A host hands the
    /// descriptor to the VMM, so nothing can swap the file between the check and the use.
    /// Reads only; call [`Store::prepare`] first to fetch or repair.
    pub fn open_verified(&self, asset: &Asset) -> Result<VerifiedFile> {
        use std::io::Seek;
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
        let record = self.inner.record_of(asset);
        let verity = record
            .as_ref()
            .filter(|r| r.verity.is_some())
            .and_then(|_| crate::verity::measure(&file));
        let policy = self.inner.policy(asset);
        let verdict = judge(
            record.as_ref(),
            Some(&stamp),
            &Expected::of(asset),
            policy,
            verity.as_ref(),
        );
        // A drifted mode does not make the content untrustworthy.
        if verdict.is_trusted() || matches!(verdict, crate::prepare::judge::Verdict::Mode { .. }) {
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
