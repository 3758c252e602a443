//! arcbox-boot's vocabulary over bootvault stores, so that arcbox switches by swapping one type.
//!
//! [`AssetManager`] takes the same [`AssetManagerConfig`] as arcbox-boot 0.8 and keeps its paths
//! on disk exactly: `cache_dir/VERSION/{kernel, rootfs.erofs, manifest.json}`, binaries at
//! `dest_dir/NAME` (0755) and binaries with `install_dir` as siblings of `dest_dir`
//! (`dest_dir=/arcbox/bin`, `install_dir="kernel"` -> `/arcbox/kernel/vmlinux`). The manifest is
//! fetched once from `cdn_base_url/asset/vVERSION/manifest.json` into the version dir.
//!
//! Two roots, two [`Store`]s: the boot cache (ROOT = `cache_dir`, assets `VERSION/kernel` and
//! `VERSION/rootfs.erofs`, so every version shares one ledger and an upgrade copies an
//! unchanged kernel or rootfs from the previous version dir by digest, `linked`, instead of
//! fetching it again) and the share (ROOT = the parent
//! of `dest_dir`, which the host shares with the guest). Their state (ledger, locks, partials)
//! lives outside both, in a per-user state dir: `$XDG_STATE_HOME/bootvault/arcbox` or
//! `~/.local/state/bootvault/arcbox` (or [`AssetManager::with_state_dir`]), one subdirectory per
//! root named after a hash of its path. A guest that can write the share can therefore never
//! write the records that vouch for it; a state dir inside the share is refused.
//!
//! The first use of a root imports arcbox-boot's `.verified.json` there (the version dir's for
//! the boot cache, `dest_dir`'s for the share), so a switched install re-hashes and
//! re-downloads nothing that is unchanged; the legacy files are left in place, and arcbox-boot
//! keeps working on the same files (the paths are the same).
//!
//! The warm path (every asset vouched for by its record) runs inline: one `lstat` per asset and
//! one ledger read, about as long as a single tokio blocking hand-off. Anything that hashes or
//! downloads runs on tokio's blocking pool.

use crate::manifest::{ARCBOX_KERNEL, ARCBOX_ROOTFS, Asset, Manifest, ParseOptions};
use crate::report::{Outcome, Progress, ProgressFn};
use crate::stamp::Stamp;
use crate::store::{PrepareOptions, Store};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// arcbox-boot's default CDN.
pub const DEFAULT_CDN_BASE_URL: &str = "https://boot.arcboxcdn.com";

/// The legacy cache file arcbox-boot keeps next to its files.
const LEGACY: &str = crate::migrations::legacy::FILE_NAME;

/// Configuration, field for field arcbox-boot's `AssetManagerConfig`.
#[derive(Debug, Clone)]
pub struct AssetManagerConfig {
    /// CDN base URL (default `https://boot.arcboxcdn.com`).
    pub cdn_base_url: String,
    /// Boot asset version (e.g. `0.6.0`).
    pub version: String,
    /// Target architecture (`arm64` or `x86_64`); the host's when empty.
    pub arch: String,
    /// Local cache directory (default `~/.arcbox/boot`).
    pub cache_dir: PathBuf,
    /// A kernel to boot instead of the manifest's (not downloaded, not verified).
    pub custom_kernel: Option<PathBuf>,
}

impl Default for AssetManagerConfig {
    fn default() -> Self {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        AssetManagerConfig {
            cdn_base_url: DEFAULT_CDN_BASE_URL.to_string(),
            version: String::new(),
            arch: crate::manifest::host_arch().to_string(),
            cache_dir: home.join(".arcbox").join("boot"),
            custom_kernel: None,
        }
    }
}

/// Resolved boot assets ready for VM startup (arcbox-boot's `PreparedAssets`).
#[derive(Debug, Clone)]
pub struct PreparedAssets {
    /// The kernel image.
    pub kernel: PathBuf,
    /// The EROFS rootfs image.
    pub rootfs: PathBuf,
    /// The kernel command line of the selected target.
    pub kernel_cmdline: String,
    /// The boot asset version.
    pub version: String,
    /// The parsed manifest; [`Manifest::arcbox`] holds `built_at`, `source_*` and versions.
    /// Shared, not copied: a warm prepare allocates no manifest.
    pub manifest: Arc<Manifest>,
}

/// Progress of a prepare (arcbox-boot's `PrepareProgress`).
#[derive(Debug, Clone)]
pub struct PrepareProgress {
    /// The asset (`kernel`, `rootfs` or a binary name).
    pub name: String,
    /// 1-based index of the asset in this call.
    pub current: usize,
    /// Assets in this call.
    pub total: usize,
    /// What is happening.
    pub phase: PreparePhase,
}

/// Phases, as arcbox-boot names them.
#[derive(Debug, Clone)]
pub enum PreparePhase {
    /// Looking at the file.
    Checking,
    /// Bytes arriving.
    Downloading {
        /// Bytes so far.
        downloaded: u64,
        /// Total, when known.
        total: Option<u64>,
    },
    /// Hashing.
    Verifying,
    /// Placed (downloaded, repaired or re-hashed).
    Ready,
    /// Trusted from its record, or re-hashed and unchanged.
    Cached,
}

/// Progress callback (arcbox-boot's type).
pub type ProgressCallback = Box<dyn Fn(PrepareProgress) + Send + Sync>;

/// What went wrong; each variant names the asset or path and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration cannot be used.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The manifest could not be fetched or read.
    #[error("manifest {source_url}: {message}")]
    Manifest {
        /// Where it was fetched from (or the cached file).
        source_url: String,
        /// Why it failed.
        message: String,
    },
    /// The store could not be used (ledger, state dir, manifest validation).
    #[error(transparent)]
    Store(#[from] crate::Error),
    /// Some assets could not be made ready.
    #[error("{}", .0.iter().map(|(n, why)| format!("{n}: {why}")).collect::<Vec<_>>().join("; "))]
    Assets(Vec<(String, String)>),
    /// The custom kernel is not a regular file.
    #[error("custom kernel is not a regular file: {}", .0.display())]
    CustomKernel(PathBuf),
    /// The state dir would be writable by the guest.
    #[error(
        "state dir {} lies inside the guest-visible share {}; choose one outside it",
        state.display(),
        share.display()
    )]
    StateInShare {
        /// The state dir.
        state: PathBuf,
        /// The share root (the parent of the bin dir).
        share: PathBuf,
    },
    /// A blocking task panicked or was cancelled.
    #[error("background task failed: {0}")]
    Task(String),
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, Error>;

/// How one asset of a root ended up in a call.
#[derive(Clone, Debug)]
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

/// What the legacy import of one root did.
#[derive(Clone, Debug, Default)]
pub struct ImportStatus {
    /// The legacy file.
    pub legacy: PathBuf,
    /// Paths (under the root) that were imported.
    pub imported: Vec<String>,
    /// Keys skipped, with why (they are re-hashed when needed).
    pub skipped: Vec<(String, String)>,
}

/// One root (boot cache or share): its store, and the manifest derived for it.
struct Root {
    store: Store,
    /// The manifest derived for this root from the last parsed arcbox manifest.
    derived: Mutex<Option<(Arc<Manifest>, Arc<Manifest>)>>,
}

impl Root {
    fn open(root: &Path, state: &Path, offline: bool) -> Result<Root> {
        let store = Store::builder(root)
            .state_dir(state)
            .offline(offline)
            .open()?;
        Ok(Root {
            store,
            derived: Mutex::new(None),
        })
    }

    /// The root's manifest for `source`, derived once per parsed manifest.
    fn derive(
        &self,
        source: &Arc<Manifest>,
        make: impl FnOnce() -> Result<Manifest>,
    ) -> Result<Arc<Manifest>> {
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
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The store's progress events in arcbox-boot's phases, for one call.
fn bridge(f: ProgressCallback, m: &Manifest) -> ProgressFn {
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

struct Inner {
    config: AssetManagerConfig,
    /// Where each root's state dir is made (one subdirectory per root).
    state_base: PathBuf,
    offline: bool,
    boot: OnceLock<Arc<Root>>,
    shares: Mutex<HashMap<PathBuf, Arc<Root>>>,
    /// The parsed manifest and the stamp of `manifest.json` it was parsed from.
    manifest: Mutex<Option<(Stamp, Arc<Manifest>)>>,
}

/// arcbox-boot's `AssetManager`, over bootvault stores. Cheap to clone (shared state).
#[derive(Clone)]
pub struct AssetManager {
    inner: Arc<Inner>,
}

/// The default base of the state dirs: `$XDG_STATE_HOME/bootvault/arcbox`, else
/// `~/.local/state/bootvault/arcbox`, else `cache_dir/.bootvault`.
pub fn default_state_dir(cache_dir: &Path) -> PathBuf {
    let home = |v: &str| {
        std::env::var_os(v)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    home("XDG_STATE_HOME")
        .or_else(|| home("HOME").map(|h| h.join(".local").join("state")))
        .map(|s| s.join("bootvault").join("arcbox"))
        .unwrap_or_else(|| cache_dir.join(crate::STATE_DIR_NAME))
}

/// The state dir of one root under `base`: `KIND-` and the 64-bit FNV-1a hash of the root's
/// absolute path in hex (a moved root starts afresh, and re-hashes once). A name, not a
/// security boundary: FNV keeps SHA-256's CPU feature probe (a trapped `cpuid` in a VM) off
/// the warm path, which hashes nothing else.
fn state_for(base: &Path, kind: &str, root: &Path) -> PathBuf {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in root.as_os_str().as_encoded_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    base.join(format!("{kind}-{h:016x}"))
}

impl AssetManager {
    /// Validates the configuration (the version must be one safe path component, as in
    /// arcbox-boot). Touches nothing on disk.
    pub fn new(mut config: AssetManagerConfig) -> Result<Self> {
        let v = &config.version;
        let valid = !v.is_empty()
            && v != "."
            && v != ".."
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'+'));
        if !valid {
            return Err(Error::InvalidConfig(
                "version must be non-empty, not '.' or '..', and contain only ASCII letters, \
                 digits, '.', '-', '_', or '+'"
                    .into(),
            ));
        }
        if config.arch.is_empty() {
            config.arch = crate::manifest::host_arch().to_string();
        }
        config.cache_dir = std::path::absolute(&config.cache_dir).map_err(|e| {
            Error::InvalidConfig(format!("cache_dir {}: {e}", config.cache_dir.display()))
        })?;
        let state_base = default_state_dir(&config.cache_dir);
        Ok(AssetManager {
            inner: Arc::new(Inner {
                config,
                state_base,
                offline: false,
                boot: OnceLock::new(),
                shares: Mutex::new(HashMap::new()),
                manifest: Mutex::new(None),
            }),
        })
    }

    fn rebuild(self, f: impl FnOnce(&mut PathBuf, &mut bool)) -> Self {
        let mut state_base = self.inner.state_base.clone();
        let mut offline = self.inner.offline;
        f(&mut state_base, &mut offline);
        AssetManager {
            inner: Arc::new(Inner {
                config: self.inner.config.clone(),
                state_base,
                offline,
                boot: OnceLock::new(),
                shares: Mutex::new(HashMap::new()),
                manifest: Mutex::new(None),
            }),
        }
    }

    /// Puts the state dirs under `dir` instead of the per-user default (see the module docs).
    pub fn with_state_dir(self, dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        self.rebuild(|s, _| *s = dir)
    }

    /// Never touches the network: missing or wrong files fail instead of being fetched.
    pub fn offline(self, offline: bool) -> Self {
        self.rebuild(|_, o| *o = offline)
    }

    /// The configuration.
    pub fn config(&self) -> &AssetManagerConfig {
        &self.inner.config
    }

    /// Where the state dirs are made.
    pub fn state_base(&self) -> &Path {
        &self.inner.state_base
    }

    /// `cache_dir/VERSION`.
    pub fn version_dir(&self) -> PathBuf {
        self.inner.version_dir()
    }

    /// The state dir of the boot cache's store.
    pub fn boot_state_dir(&self) -> PathBuf {
        state_for(&self.inner.state_base, "boot", &self.inner.config.cache_dir)
    }

    /// The share root of `dest_dir` (its parent) and the state dir of its store.
    pub fn share_of(&self, dest_dir: &Path) -> Result<(PathBuf, PathBuf)> {
        let (root, _) = share_root(dest_dir)?;
        let state = state_for(&self.inner.state_base, "share", &root);
        Ok((root, state))
    }

    /// Fetches the manifest if it is not cached, then makes the kernel (unless
    /// `custom_kernel`) and the rootfs ready in `cache_dir/VERSION`. Does not touch binaries.
    pub async fn prepare(&self, progress: Option<ProgressCallback>) -> Result<PreparedAssets> {
        let inner = self.inner.clone();
        inner.ensure_manifest_async().await?;
        match inner.prepare_warm(progress)? {
            Warm::Done(p) => Ok(p.0),
            Warm::Work(work) => spawn(move || inner.finish_boot(*work).map(|p| p.0)).await,
        }
    }

    /// Blocking [`AssetManager::prepare`], with each asset's outcome.
    pub fn prepare_blocking(
        &self,
        progress: Option<ProgressCallback>,
    ) -> Result<(PreparedAssets, Vec<AssetStatus>)> {
        match self.inner.prepare_warm(progress)? {
            Warm::Done(p) => Ok(*p),
            Warm::Work(work) => self.inner.finish_boot(*work),
        }
    }

    /// Makes every binary for the configured arch ready under `dest_dir` (and its siblings for
    /// `install_dir` entries), mode 0755.
    pub async fn prepare_binaries(
        &self,
        dest_dir: &Path,
        progress: Option<ProgressCallback>,
    ) -> Result<()> {
        let inner = self.inner.clone();
        inner.ensure_manifest_async().await?;
        match inner.binaries_warm(dest_dir, progress)? {
            Warm::Done(_) => Ok(()),
            Warm::Work(work) => spawn(move || inner.finish(*work).map(|_| ())).await,
        }
    }

    /// Blocking [`AssetManager::prepare_binaries`], with each asset's outcome.
    pub fn prepare_binaries_blocking(
        &self,
        dest_dir: &Path,
        progress: Option<ProgressCallback>,
    ) -> Result<Vec<AssetStatus>> {
        match self.inner.binaries_warm(dest_dir, progress)? {
            Warm::Done(s) => Ok(*s),
            Warm::Work(work) => self.inner.finish(*work),
        }
    }

    /// Checks that every binary is present and has its digest, downloading and writing
    /// nothing: a record vouches, or the file is hashed.
    pub async fn validate_binaries(&self, dest_dir: &Path) -> Result<()> {
        let inner = self.inner.clone();
        inner.ensure_manifest_async().await?;
        let dest = dest_dir.to_path_buf();
        spawn(move || inner.validate_binaries(&dest)).await
    }

    /// Blocking [`AssetManager::validate_binaries`].
    pub fn validate_binaries_blocking(&self, dest_dir: &Path) -> Result<()> {
        self.inner.validate_binaries(dest_dir)
    }

    /// Imports both legacy caches (the version dir's and `dest_dir`'s) without fetching or
    /// hashing anything; entries for paths that already have a record are left alone.
    pub fn migrate(&self, dest_dir: &Path) -> Result<Vec<ImportStatus>> {
        let boot = self.inner.boot_root()?;
        let (share, _) = self.inner.share_root_for(dest_dir)?;
        let dest = std::path::absolute(dest_dir).unwrap_or_else(|_| dest_dir.to_path_buf());
        Ok(vec![
            import_legacy(&boot, &self.inner.version_dir().join(LEGACY))?,
            import_legacy(&share, &dest.join(LEGACY))?,
        ])
    }

    /// The manifest, as [`AssetManager::prepare`] would read it (fetched if not cached).
    pub fn manifest(&self) -> Result<Arc<Manifest>> {
        self.inner.manifest()
    }

    /// The manifest cached in the version dir; never fetches.
    pub fn cached_manifest(&self) -> Result<Arc<Manifest>> {
        self.inner.cached_manifest()
    }

    /// What a prepare would decide for each asset of the boot cache and `dest_dir` now, reading
    /// no content and writing nothing: [`Verdict::Fresh`](crate::Verdict::Fresh) is `cached`;
    /// [`Verdict::Mode`](crate::Verdict::Mode) is `cached` once the mode is put back (arcbox-boot
    /// left kernel and rootfs `0644`); anything else is hashed or fetched.
    pub fn check(&self, dest_dir: &Path) -> Result<Vec<(String, PathBuf, crate::Verdict)>> {
        let manifest = self.inner.cached_manifest()?;
        let boot = self.inner.boot_root()?;
        let bm = boot.derive(&manifest, || self.inner.boot_manifest(&manifest))?;
        let (share, bin) = self.inner.share_root_for(dest_dir)?;
        let sm = share.derive(&manifest, || share_manifest(&manifest, &bin))?;
        let mut out = Vec::new();
        for (root, m) in [(&boot, &bm), (&share, &sm)] {
            let (insp, _) = root.store.inspect(m, None);
            out.extend(insp.into_iter().map(|i| (i.asset.name, i.path, i.verdict)));
        }
        Ok(out)
    }
}

async fn spawn<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}

/// The absolute share root of `dest_dir` (its parent, or itself at `/`) and `dest_dir`'s path
/// under it.
fn share_root(dest_dir: &Path) -> Result<(PathBuf, Option<String>)> {
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

/// The share's manifest: each binary at `BIN/NAME` (`BIN` = `dest_dir`'s name) or
/// `INSTALL_DIR/NAME`, exactly where arcbox-boot puts it.
fn share_manifest(source: &Manifest, bin: &Option<String>) -> Result<Manifest> {
    let meta = source
        .arcbox()
        .ok_or_else(|| Error::InvalidConfig("not an arcbox-boot manifest".into()))?;
    let mut assets = Vec::with_capacity(meta.binaries.len());
    for b in &meta.binaries {
        let Some(a) = source.assets.iter().find(|a| a.name == b.name) else {
            continue;
        };
        let path = match (b.install_dir.as_deref(), bin) {
            (Some("") | None, None) => b.name.clone(),
            (None, Some(bin)) => format!("{bin}/{}", b.name),
            (Some(dir), _) => format!("{dir}/{}", b.name),
        };
        crate::manifest::validate_path(&path)
            .map_err(|why| Error::InvalidConfig(format!("binary {}: {why}", b.name)))?;
        assets.push(Asset { path, ..a.clone() });
    }
    let mut seen = std::collections::HashSet::new();
    for a in &assets {
        if !seen.insert(a.path.as_str()) {
            return Err(Error::InvalidConfig(format!(
                "binary {}: two binaries install to {}",
                a.name, a.path
            )));
        }
    }
    Ok(Manifest {
        version: source.version.clone(),
        base_url: source.base_url.clone(),
        assets,
        arcbox: None,
    })
}

/// Imports `legacy` into `root`'s ledger for paths that have no record yet.
fn import_legacy(root: &Root, legacy: &Path) -> Result<ImportStatus> {
    let mut status = ImportStatus {
        legacy: legacy.to_path_buf(),
        ..Default::default()
    };
    if !legacy.exists() {
        return Ok(status);
    }
    let store = &root.store;
    let (records, report) = crate::migrations::legacy::plan(store.root(), legacy)?;
    let keys: Vec<&str> = records.iter().map(|(k, _)| k.as_str()).collect();
    let (existing, _) = store.ledger().read_many(&keys);
    let fresh: Vec<_> = records
        .iter()
        .zip(existing)
        .filter(|(_, e)| e.is_none())
        .map(|(r, _)| r)
        .collect();
    if !fresh.is_empty() {
        store.ledger().write(|txn| {
            let mut t = txn.open_table(crate::ledger::RECORDS)?;
            for (rel, r) in &fresh {
                t.insert(rel.as_str(), r.encode().as_slice())?;
            }
            Ok(())
        })?;
    }
    status.imported = fresh.iter().map(|(k, _)| k.clone()).collect();
    status.skipped = report.skipped;
    Ok(status)
}

type BootDone = (PreparedAssets, Vec<AssetStatus>);

enum Warm<T> {
    Done(Box<T>),
    Work(Box<Work>),
}

/// What is left once the warm path found an asset it cannot trust.
struct Work {
    root: Arc<Root>,
    manifest: Arc<Manifest>,
    legacy: PathBuf,
    progress: Option<ProgressCallback>,
    boot: Option<(Arc<Manifest>, PathBuf)>,
}

impl Inner {
    fn version_dir(&self) -> PathBuf {
        self.config.cache_dir.join(&self.config.version)
    }

    fn boot_root(&self) -> Result<Arc<Root>> {
        if let Some(r) = self.boot.get() {
            return Ok(r.clone());
        }
        let state = state_for(&self.state_base, "boot", &self.config.cache_dir);
        let root = Arc::new(Root::open(&self.config.cache_dir, &state, self.offline)?);
        Ok(self.boot.get_or_init(|| root).clone())
    }

    fn share_root_for(&self, dest_dir: &Path) -> Result<(Arc<Root>, Option<String>)> {
        let (root_path, bin) = share_root(dest_dir)?;
        let mut shares = lock(&self.shares);
        if let Some(r) = shares.get(&root_path) {
            return Ok((r.clone(), bin));
        }
        let state = state_for(&self.state_base, "share", &root_path);
        if state.starts_with(&root_path) || self.state_base.starts_with(&root_path) {
            return Err(Error::StateInShare {
                state,
                share: root_path,
            });
        }
        let root = Arc::new(Root::open(&root_path, &state, self.offline)?);
        shares.insert(root_path, root.clone());
        Ok((root, bin))
    }

    fn manifest_url(&self) -> String {
        let mut base = self.config.cdn_base_url.clone();
        if !base.ends_with('/') {
            base.push('/');
        }
        format!("{base}asset/v{}/manifest.json", self.config.version)
    }

    /// The cached manifest, re-parsed only when `manifest.json`'s stamp changed.
    fn cached_manifest(&self) -> Result<Arc<Manifest>> {
        let path = self.version_dir().join("manifest.json");
        match Stamp::of_path(&path).ok().flatten() {
            Some(stamp) => self.manifest_at(&path, stamp),
            None => Err(Error::Manifest {
                source_url: path.display().to_string(),
                message: "not cached (run a prepare first)".into(),
            }),
        }
    }

    fn manifest_at(&self, path: &Path, stamp: Stamp) -> Result<Arc<Manifest>> {
        let mut cached = lock(&self.manifest);
        if let Some((s, m)) = cached.as_ref()
            && *s == stamp
        {
            return Ok(m.clone());
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::Manifest {
            source_url: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        let m = Arc::new(self.parse(&text, &path.display().to_string())?);
        *cached = Some((stamp, m.clone()));
        Ok(m)
    }

    fn parse(&self, text: &str, origin: &str) -> Result<Manifest> {
        let m = Manifest::parse(
            text,
            origin,
            &ParseOptions {
                arch: Some(self.config.arch.clone()),
                base_url: Some(self.config.cdn_base_url.clone()),
            },
        )?;
        let Some(meta) = m.arcbox() else {
            return Err(Error::Manifest {
                source_url: origin.into(),
                message: "not an arcbox-boot manifest".into(),
            });
        };
        // arcbox-boot checks the schema against the configured version, not the manifest's.
        let expected = self
            .config
            .version
            .split('.')
            .next()
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0);
        if meta.schema_version != expected {
            return Err(Error::Manifest {
                source_url: origin.into(),
                message: format!(
                    "unsupported schema version {}, expected {expected}",
                    meta.schema_version
                ),
            });
        }
        Ok(m)
    }

    /// The manifest: the cached copy, else fetched into the version dir first.
    fn manifest(&self) -> Result<Arc<Manifest>> {
        let path = self.version_dir().join("manifest.json");
        match Stamp::of_path(&path).ok().flatten() {
            Some(stamp) => self.manifest_at(&path, stamp),
            None => {
                self.fetch_manifest(&path)?;
                self.cached_manifest()
            }
        }
    }

    /// Downloads the manifest (no digest is known for it) with the boot store's fetcher and
    /// renames it into place only once it parses, so a truncated download never sticks.
    fn fetch_manifest(&self, dest: &Path) -> Result<()> {
        let url = self.manifest_url();
        let body = self
            .boot_root()?
            .store
            .fetch_document(&url, crate::manifest::MAX_MANIFEST_BYTES)
            .map_err(|e| self.manifest_error(&url, e))?;
        self.store_manifest(&url, dest, body)
    }

    /// [`Inner::fetch_manifest`] for an async caller: awaits the fetch on its runtime.
    async fn fetch_manifest_async(&self, dest: &Path) -> Result<()> {
        let url = self.manifest_url();
        let store = self.boot_root()?.store.clone();
        let body = store
            .fetch_document_async(&url, crate::manifest::MAX_MANIFEST_BYTES)
            .await
            .map_err(|e| self.manifest_error(&url, e))?;
        self.store_manifest(&url, dest, body)
    }

    fn manifest_error(&self, url: &str, e: crate::Error) -> Error {
        let message = match e {
            crate::Error::Document { attempts, .. } if self.offline => {
                let _ = attempts;
                "not cached, and offline".to_string()
            }
            crate::Error::Document { attempts, .. } => attempts
                .iter()
                .map(|a| a.reason.clone())
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        };
        Error::Manifest {
            source_url: url.to_string(),
            message,
        }
    }

    /// Checks that `body` is a manifest for this version, then writes it `0644` (as
    /// arcbox-boot leaves it) at `dest` by rename.
    fn store_manifest(&self, url: &str, dest: &Path, body: Vec<u8>) -> Result<()> {
        let fail = |message: String| Error::Manifest {
            source_url: url.to_string(),
            message,
        };
        let text = String::from_utf8(body).map_err(|_| fail("not UTF-8".into()))?;
        self.parse(&text, url)?;
        let dir = dest.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| fail(format!("{}: {e}", dir.display())))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".bootvault-manifest-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .tempfile_in(dir)
            .map_err(|e| fail(format!("{}: {e}", dir.display())))?;
        use std::io::Write;
        tmp.write_all(text.as_bytes())
            .and_then(|_| tmp.as_file().sync_all())
            .map_err(|e| fail(format!("{}: {e}", dest.display())))?;
        tmp.persist(dest)
            .map_err(|e| fail(format!("{}: {e}", dest.display())))?;
        Ok(())
    }

    /// Makes sure the manifest is cached, fetching it on the caller's runtime if it is not.
    async fn ensure_manifest_async(&self) -> Result<()> {
        let path = self.version_dir().join("manifest.json");
        if Stamp::of_path(&path).ok().flatten().is_none() {
            self.fetch_manifest_async(&path).await?;
        }
        Ok(())
    }

    /// The boot cache's manifest: `VERSION/kernel` (unless a custom kernel is configured) and
    /// `VERSION/rootfs.erofs` under `cache_dir`.
    fn boot_manifest(&self, source: &Manifest) -> Result<Manifest> {
        let v = &self.config.version;
        let mut assets = Vec::new();
        for (name, file) in [(ARCBOX_KERNEL, "kernel"), (ARCBOX_ROOTFS, "rootfs.erofs")] {
            if name == ARCBOX_KERNEL && self.config.custom_kernel.is_some() {
                continue;
            }
            let a = source
                .assets
                .iter()
                .find(|a| a.name == name)
                .ok_or_else(|| {
                    Error::InvalidConfig(format!(
                        "the manifest has no {name} for {}",
                        self.config.arch
                    ))
                })?;
            assets.push(Asset {
                path: format!("{v}/{file}"),
                ..a.clone()
            });
        }
        Ok(Manifest {
            version: source.version.clone(),
            base_url: source.base_url.clone(),
            assets,
            arcbox: None,
        })
    }

    fn prepared(&self, manifest: &Arc<Manifest>) -> Result<PreparedAssets> {
        let vdir = self.version_dir();
        let kernel = match &self.config.custom_kernel {
            Some(k) => {
                if !k.is_file() {
                    return Err(Error::CustomKernel(k.clone()));
                }
                k.clone()
            }
            None => vdir.join("kernel"),
        };
        Ok(PreparedAssets {
            kernel,
            rootfs: vdir.join("rootfs.erofs"),
            kernel_cmdline: manifest.kernel_cmdline().unwrap_or_default().to_string(),
            version: self.config.version.clone(),
            manifest: Arc::clone(manifest),
        })
    }

    fn prepare_warm(&self, progress: Option<ProgressCallback>) -> Result<Warm<BootDone>> {
        let manifest = self.manifest()?;
        let boot = self.boot_root()?;
        let bm = boot.derive(&manifest, || self.boot_manifest(&manifest))?;
        let legacy = self.version_dir().join(LEGACY);
        match warm(&boot, &bm, progress)? {
            Ok(statuses) => Ok(Warm::Done(Box::new((self.prepared(&manifest)?, statuses)))),
            Err(progress) => Ok(Warm::Work(Box::new(Work {
                root: boot,
                manifest: bm,
                legacy,
                progress,
                boot: Some((manifest, self.version_dir())),
            }))),
        }
    }

    fn finish_boot(&self, work: Work) -> Result<BootDone> {
        let source = work.boot.as_ref().map(|(m, _)| m.clone());
        let statuses = self.finish(work)?;
        let source = source.ok_or_else(|| Error::Task("boot work without a manifest".into()))?;
        Ok((self.prepared(&source)?, statuses))
    }

    fn binaries_warm(
        &self,
        dest_dir: &Path,
        progress: Option<ProgressCallback>,
    ) -> Result<Warm<Vec<AssetStatus>>> {
        let manifest = self.manifest()?;
        let (share, bin) = self.share_root_for(dest_dir)?;
        let sm = share.derive(&manifest, || share_manifest(&manifest, &bin))?;
        let legacy = std::path::absolute(dest_dir)
            .unwrap_or_else(|_| dest_dir.to_path_buf())
            .join(LEGACY);
        match warm(&share, &sm, progress)? {
            Ok(statuses) => Ok(Warm::Done(Box::new(statuses))),
            Err(progress) => {
                // As arcbox-boot does: the bin dir (and so the share root) is made on first
                // use; only off the warm path, where every file was found.
                std::fs::create_dir_all(dest_dir).map_err(|e| {
                    Error::Store(crate::Error::io(dest_dir, "create the bin dir", e))
                })?;
                Ok(Warm::Work(Box::new(Work {
                    root: share,
                    manifest: sm,
                    legacy,
                    progress,
                    boot: None,
                })))
            }
        }
    }

    /// Imports the legacy cache when a path has no record yet, then runs the store's prepare.
    fn finish(&self, work: Work) -> Result<Vec<AssetStatus>> {
        let root = &work.root;
        let (insp, _) = root.store.inspect(&work.manifest, None);
        if insp.iter().any(|i| i.record.is_none() && i.live.is_some()) {
            import_legacy(root, &work.legacy)?;
        }
        let mut opts = PrepareOptions::new();
        if let Some(f) = work.progress {
            opts = opts.progress(bridge(f, &work.manifest));
        }
        let report = root.store.prepare_with(&work.manifest, &opts)?;
        let mut failed = Vec::new();
        let mut out = Vec::with_capacity(report.assets.len());
        for a in &report.assets {
            match &a.result {
                Ok(outcome) => out.push(AssetStatus {
                    name: a.name.clone(),
                    path: a.path.clone(),
                    outcome: *outcome,
                    bytes_hashed: a.bytes_hashed,
                    bytes_downloaded: a.bytes_downloaded,
                    bytes_copied: a.bytes_copied,
                }),
                Err(e) => failed.push((a.name.clone(), e.to_string())),
            }
        }
        if !failed.is_empty() {
            return Err(Error::Assets(failed));
        }
        Ok(out)
    }

    fn validate_binaries(&self, dest_dir: &Path) -> Result<()> {
        let manifest = self.manifest()?;
        let (share, bin) = self.share_root_for(dest_dir)?;
        let sm = share.derive(&manifest, || share_manifest(&manifest, &bin))?;
        let mut failed = Vec::new();
        for a in &sm.assets {
            let path = share.store.root().join(&a.path);
            if std::fs::symlink_metadata(&path).is_err() {
                failed.push((a.name.clone(), format!("not found at {}", path.display())));
                continue;
            }
            if let Err(e) = share.store.open_verified(a) {
                failed.push((a.name.clone(), e.to_string()));
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(Error::Assets(failed))
        }
    }
}

/// The warm path: every asset vouched for by its record. `Err` hands the callback back when
/// something must be hashed or fetched.
#[allow(clippy::type_complexity)]
fn warm(
    root: &Root,
    m: &Manifest,
    progress: Option<ProgressCallback>,
) -> Result<std::result::Result<Vec<AssetStatus>, Option<ProgressCallback>>> {
    let (insp, _) = root.store.inspect(m, None);
    if !insp.iter().all(|i| i.verdict.is_trusted()) {
        return Ok(Err(progress));
    }
    let total = insp.len();
    let mut out = Vec::with_capacity(total);
    for (idx, i) in insp.into_iter().enumerate() {
        if let Some(f) = &progress {
            for phase in [PreparePhase::Checking, PreparePhase::Cached] {
                f(PrepareProgress {
                    name: i.asset.name.clone(),
                    current: idx + 1,
                    total,
                    phase,
                });
            }
        }
        out.push(AssetStatus {
            name: i.asset.name,
            path: i.path,
            outcome: Outcome::Cached,
            bytes_hashed: 0,
            bytes_downloaded: 0,
            bytes_copied: 0,
        });
    }
    Ok(Ok(out))
}
