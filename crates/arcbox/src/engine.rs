//! The machinery behind the public API: one bootvault [`Store`] per root (the boot cache and
//! each share), their state dirs outside both, the manifest and what vouches for it, the warm
//! path and the hand-off of real work to tokio's blocking pool.

use crate::download::{PreparePhase, PrepareProgress, ProgressCallback};
use crate::error::{Error, Result};
use crate::layout::{self, Base};
use crate::manifest::Manifest;
use bootvault::{CancelToken, Outcome, PrepareOptions, Progress, ProgressFn, Sha256Digest, Store};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// How one asset of a root ended up in a call.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AssetStatus {
    /// Asset name.
    pub name: String,
    /// Absolute path.
    pub path: PathBuf,
    /// The outcome.
    pub outcome: Outcome,
    /// Content bytes read by hashing.
    pub bytes_hashed: u64,
    /// Bytes fetched.
    pub bytes_downloaded: u64,
    /// Bytes copied from another verified file with the same digest (`linked`).
    pub bytes_copied: u64,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The default base of the state dirs: `$XDG_STATE_HOME/bootvault/arcbox`, else
/// `~/.local/state/bootvault/arcbox`.
pub(crate) fn default_state_base() -> Option<PathBuf> {
    let var = |v: &str| {
        std::env::var_os(v)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    var("XDG_STATE_HOME")
        .or_else(|| var("HOME").map(|h| h.join(".local").join("state")))
        .map(|s| s.join("bootvault").join("arcbox"))
}

/// `base/KIND-HASH`: the 64-bit FNV-1a hash of the root's absolute path in hex (a moved root
/// starts afresh and re-hashes once). A name, not a security boundary.
pub(crate) fn state_for(base: &Path, kind: &str, root: &Path) -> PathBuf {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in root.as_os_str().as_encoded_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    base.join(format!("{kind}-{h:016x}"))
}

/// The absolute share root of `dest_dir` (its parent, or itself at `/`) and the bin dir's name
/// under it.
pub(crate) fn share_root(dest_dir: &Path) -> Result<(PathBuf, Option<String>)> {
    let dest = std::path::absolute(dest_dir)
        .map_err(|e| Error::InvalidConfig(format!("dest_dir {}: {e}", dest_dir.display())))?;
    match (dest.parent(), dest.file_name()) {
        (Some(parent), Some(name)) => {
            let name = name.to_str().ok_or_else(|| {
                Error::InvalidConfig(format!("dest_dir {}: not UTF-8", dest.display()))
            })?;
            Ok((parent.to_path_buf(), Some(name.to_string())))
        }
        _ => Ok((dest, None)),
    }
}

/// A parsed manifest and the digest of the exact bytes it was parsed from.
pub(crate) struct Parsed {
    pub manifest: Manifest,
    pub digest: Sha256Digest,
}

/// One root: its store, and the bootvault manifest derived for it from the last parsed one.
pub(crate) struct Root {
    pub store: Store,
    derived: Mutex<Option<(Arc<Parsed>, Arc<bootvault::Manifest>)>>,
    /// What the last warm check found fresh: the manifest, each asset's absolute path and its
    /// live stamp then.
    memo: Mutex<Option<Arc<Memo>>>,
}

struct Memo {
    manifest: Arc<bootvault::Manifest>,
    paths: Vec<PathBuf>,
    stamps: Vec<bootvault::Stamp>,
}

impl Root {
    pub fn open(root: &Path, state: &Path, offline: bool) -> Result<Root> {
        let store = Store::builder(root)
            .state_dir(state)
            .offline(offline)
            .open()?;
        Ok(Root {
            store,
            derived: Mutex::new(None),
            memo: Mutex::new(None),
        })
    }

    /// The warm check: every asset vouched for by its record. A file whose `lstat` still
    /// equals the stamp it had when this handle last found it fresh is that same judged file
    /// (same inode, size, mtime and ctime, which user space cannot set back), so a repeat
    /// check is one `lstat` per asset and no ledger read; anything else asks the store.
    pub fn is_fresh(&self, m: &Arc<bootvault::Manifest>) -> bool {
        let memo = lock(&self.memo).clone();
        if let Some(memo) = memo
            && Arc::ptr_eq(&memo.manifest, m)
            && memo
                .paths
                .iter()
                .zip(&memo.stamps)
                .all(|(p, s)| bootvault::Stamp::of_path(p).ok().flatten().as_ref() == Some(s))
        {
            return true;
        }
        let fresh = self.store.fresh_stamps(m);
        let fresh_now = fresh.is_some();
        *lock(&self.memo) = fresh.map(|stamps| {
            Arc::new(Memo {
                manifest: m.clone(),
                paths: m
                    .assets
                    .iter()
                    .map(|a| self.store.root().join(&a.path))
                    .collect(),
                stamps,
            })
        });
        fresh_now
    }

    /// The root's manifest for `source`, derived once per parsed manifest.
    pub fn derive(
        &self,
        source: &Arc<Parsed>,
        make: impl FnOnce() -> Result<bootvault::Manifest>,
    ) -> Result<Arc<bootvault::Manifest>> {
        let mut d = lock(&self.derived);
        if let Some((src, m)) = d.as_ref()
            && Arc::ptr_eq(src, source)
        {
            return Ok(m.clone());
        }
        let m = Arc::new(make()?);
        *d = Some((source.clone(), m.clone()));
        Ok(m)
    }

    /// The warm path of a call: every asset fresh ([`Root::is_fresh`]), reported to the
    /// callback as arcbox-boot reports a cached file (`Checking`, then `Cached`).
    fn warm(&self, m: &Arc<bootvault::Manifest>, progress: Option<&ProgressCallback>) -> bool {
        if !self.is_fresh(m) {
            return false;
        }
        if let Some(f) = progress {
            let total = m.assets.len();
            for (i, a) in m.assets.iter().enumerate() {
                for phase in [PreparePhase::Checking, PreparePhase::Cached] {
                    f(PrepareProgress {
                        name: a.name.clone(),
                        current: i + 1,
                        total,
                        phase,
                    });
                }
            }
        }
        true
    }

    /// The store's prepare (hash, link, fetch, repair) of `m`. Blocking.
    pub fn finish(
        &self,
        m: &bootvault::Manifest,
        progress: Option<ProgressCallback>,
        cancel: CancelToken,
    ) -> Result<Vec<AssetStatus>> {
        let mut opts = PrepareOptions::new().cancel(cancel);
        if let Some(f) = progress {
            opts = opts.progress(bridge(f, m));
        }
        let report = self.store.prepare_with(m, &opts)?;
        let mut failed = Vec::new();
        let mut out = Vec::with_capacity(report.assets.len());
        for a in report.assets {
            match a.result {
                Ok(outcome) => out.push(AssetStatus {
                    name: a.name,
                    path: a.path,
                    outcome,
                    bytes_hashed: a.bytes_hashed,
                    bytes_downloaded: a.bytes_downloaded,
                    bytes_copied: a.bytes_copied,
                }),
                Err(e) => failed.push((a.name, e)),
            }
        }
        if !failed.is_empty() {
            return Err(Error::from_assets(failed));
        }
        Ok(out)
    }

    /// Checks every asset of `m` is present with its digest, writing nothing: a record
    /// vouches, or the file is hashed (as arcbox-boot's `validate_binaries`).
    pub fn validate(&self, m: &bootvault::Manifest) -> Result<()> {
        for a in &m.assets {
            let path = self.store.root().join(&a.path);
            if std::fs::symlink_metadata(&path).is_err() {
                return Err(Error::Other(format!(
                    "binary '{}' not found at {}",
                    a.name,
                    path.display()
                )));
            }
            match self.store.open_verified(a) {
                Ok(_) => {}
                Err(bootvault::Error::Mismatch {
                    expected, actual, ..
                }) => {
                    return Err(Error::ChecksumMismatch {
                        name: a.name.clone(),
                        expected: expected.to_hex(),
                        actual: actual.to_hex(),
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// The store's progress events in arcbox-boot's phases, for one call.
fn bridge(f: ProgressCallback, m: &bootvault::Manifest) -> ProgressFn {
    let index: HashMap<String, usize> = m
        .assets
        .iter()
        .enumerate()
        .map(|(i, a)| (a.name.clone(), i))
        .collect();
    Arc::new(move |p: &Progress<'_>| {
        let (name, phase) = match p {
            Progress::Checking { name } | Progress::Waiting { name } => {
                (*name, PreparePhase::Checking)
            }
            Progress::Downloading { name, done, total } => (
                *name,
                PreparePhase::Downloading {
                    downloaded: *done,
                    total: *total,
                },
            ),
            Progress::Verifying { name, .. } => (*name, PreparePhase::Verifying),
            Progress::Ready { name, outcome } => (
                *name,
                match outcome {
                    Outcome::Cached | Outcome::Verified => PreparePhase::Cached,
                    _ => PreparePhase::Ready,
                },
            ),
            // Failures are returned as the call's error.
            _ => return,
        };
        f(PrepareProgress {
            name: name.to_string(),
            current: index.get(name).map_or(0, |i| i + 1),
            total: index.len(),
            phase,
        });
    })
}

/// Runs blocking work (hashing, downloading) on tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}

/// The share of one bin dir, with its store.
pub(crate) struct Share {
    pub root: Arc<Root>,
    pub bin: Option<String>,
}

impl Share {
    /// Opens the share of `dest_dir` with its state under `state_base`; a state dir inside
    /// the share is refused (the guest could write what vouches for the share).
    pub fn open(state_base: &Path, dest_dir: &Path, offline: bool) -> Result<Share> {
        let (root_path, bin) = share_root(dest_dir)?;
        let state = state_for(state_base, "share", &root_path);
        if state.starts_with(&root_path) || state_base.starts_with(&root_path) {
            return Err(Error::StateInShare {
                state,
                share: root_path,
            });
        }
        Ok(Share {
            root: Arc::new(Root::open(&root_path, &state, offline)?),
            bin,
        })
    }

    /// [`Share::open`] with the per-user default state base.
    pub fn open_default(dest_dir: &Path) -> Result<Share> {
        let base = default_state_base().ok_or_else(|| {
            Error::InvalidConfig(
                "no per-user state dir (neither XDG_STATE_HOME nor HOME is set)".into(),
            )
        })?;
        Share::open(&base, dest_dir, false)
    }

    pub fn manifest(&self, m: &Manifest, arch: &str, cdn: &str) -> Result<bootvault::Manifest> {
        let base = layout::parse_base(cdn).map_err(Error::InvalidConfig)?;
        let assets = layout::binary_assets(m, arch, self.bin.as_deref(), &Base::Cdn(&base))
            .map_err(|message| Error::Manifest {
                source_url: "manifest.json".into(),
                message,
            })?;
        Ok(bootvault::Manifest::new(m.asset_version.clone(), assets)?.base_url(cdn.to_string()))
    }

    pub async fn prepare_async(
        &self,
        m: &Manifest,
        arch: &str,
        cdn: &str,
        dest_dir: &Path,
        progress: Option<ProgressCallback>,
    ) -> Result<Vec<AssetStatus>> {
        let sm = Arc::new(self.manifest(m, arch, cdn)?);
        run_async(&self.root, sm, Some(dest_dir), progress).await
    }

    pub async fn validate_async(&self, m: &Manifest, arch: &str) -> Result<()> {
        // Sources do not matter to a check that downloads nothing.
        let sm = self.manifest(m, arch, "http://localhost/")?;
        let root = self.root.clone();
        blocking(move || root.validate(&sm)).await
    }
}

/// Warm inline; otherwise the store's prepare on the blocking pool. `mkdir` is the bin dir,
/// made on first use as arcbox-boot makes it (off the warm path: there every file was found).
pub(crate) async fn run_async(
    root: &Arc<Root>,
    m: Arc<bootvault::Manifest>,
    mkdir: Option<&Path>,
    progress: Option<ProgressCallback>,
) -> Result<Vec<AssetStatus>> {
    // The async callers keep no per-asset status.
    if root.warm(&m, progress.as_ref()) {
        return Ok(Vec::new());
    }
    if let Some(d) = mkdir {
        tokio::fs::create_dir_all(d).await?;
    }
    // Dropping this future cancels the prepare: a download in flight stops and keeps a
    // resumable partial, as `Store::prepare_async` does.
    struct CancelOnDrop(Option<CancelToken>);
    impl Drop for CancelOnDrop {
        fn drop(&mut self) {
            if let Some(t) = self.0.take() {
                t.cancel();
            }
        }
    }
    let token = CancelToken::new();
    let mut guard = CancelOnDrop(Some(token.clone()));
    let root = root.clone();
    let result = blocking(move || root.finish(&m, progress, token)).await;
    guard.0 = None;
    result
}

/// [`run_async`] for a blocking caller, with each asset's outcome.
pub(crate) fn run_blocking(
    root: &Root,
    m: &Arc<bootvault::Manifest>,
    mkdir: Option<&Path>,
    progress: Option<ProgressCallback>,
) -> Result<Vec<AssetStatus>> {
    if root.warm(m, progress.as_ref()) {
        return Ok(m
            .assets
            .iter()
            .map(|a| AssetStatus {
                name: a.name.clone(),
                path: root.store.root().join(&a.path),
                outcome: Outcome::Cached,
                bytes_hashed: 0,
                bytes_downloaded: 0,
                bytes_copied: 0,
            })
            .collect());
    }
    if let Some(d) = mkdir {
        std::fs::create_dir_all(d)?;
    }
    root.finish(m, progress, CancelToken::new())
}
