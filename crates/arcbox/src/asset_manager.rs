//! arcbox-boot's `asset_manager` module over bootvault stores.
//!
//! [`AssetManager`] takes the same [`AssetManagerConfig`] as arcbox-boot 0.8 and keeps its
//! paths on disk exactly: `cache_dir/VERSION/{kernel, rootfs.erofs, manifest.json}`, binaries
//! at `dest_dir/NAME` (0755) and binaries with `install_dir` as siblings of `dest_dir`
//! (`dest_dir=/arcbox/bin`, `install_dir="kernel"` → `/arcbox/kernel/vmlinux`). The manifest
//! is fetched once from `cdn_base_url/asset/vVERSION/manifest.json` into the version dir, by
//! the boot store's own fetcher (retries, timeouts, CA certificates).
//!
//! Two roots, two stores: the boot cache (ROOT = `cache_dir`, so every version shares one
//! ledger and an upgrade copies an unchanged kernel from the previous version dir, `linked`)
//! and the share (ROOT = the parent of `dest_dir`, which the host shares with the guest).
//! Their state (ledgers, locks, partials) lives outside both, in a per-user state dir:
//! `$XDG_STATE_HOME/bootvault/arcbox` or `~/.local/state/bootvault/arcbox` (or
//! [`AssetManager::with_state_dir`]). A state dir inside the share is refused.
//!
//! **Nothing the guest can write vouches.** arcbox-boot's `.verified.json` files are never
//! read by a prepare: the first prepare of a switched install hashes each file once (about
//! 0.15 s for arcbox's 230 MB), unless the operator trusts them explicitly with
//! [`AssetManager::migrate`]. The cached `manifest.json` is used only while its bytes hash to
//! the digest this state dir recorded when it fetched (or migrated) it; a rewritten one is
//! fetched again, or refused offline.
//!
//! **Async-safe.** The async entry points await on the caller's runtime: the manifest fetch is
//! awaited there, the warm path runs inline (one `lstat` per asset, one read transaction), and
//! anything that hashes or downloads runs on tokio's blocking pool. Nothing calls `block_on`.

use crate::download::ProgressCallback;
use crate::engine::{self, Parsed, Root, Share};
use crate::error::{Error, Result};
use crate::layout::{self, Base};
use crate::manifest::{Manifest, schema_version_for};
use crate::util::{cdn_url, current_arch, manifest_object_path};
use bootvault::Sha256Digest;
pub use engine::AssetStatus;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// arcbox-boot's default CDN.
const DEFAULT_CDN_BASE_URL: &str = "https://boot.arcboxcdn.com";

/// Largest manifest accepted (arcbox's are about 10 KB).
const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// Configuration for the asset manager (arcbox-boot's, field for field).
#[derive(Debug, Clone)]
pub struct AssetManagerConfig {
    /// CDN base URL (default: `https://boot.arcboxcdn.com`).
    pub cdn_base_url: String,
    /// Boot asset version (e.g. `0.2.0`).
    pub version: String,
    /// Target architecture (`arm64` or `x86_64`). Auto-detected if empty.
    pub arch: String,
    /// Local cache directory (e.g. `~/.arcbox/boot`).
    pub cache_dir: PathBuf,
    /// Override kernel path (skip download).
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
            arch: current_arch().to_string(),
            cache_dir: home.join(".arcbox").join("boot"),
            custom_kernel: None,
        }
    }
}

/// Resolved boot assets ready for VM startup.
#[derive(Debug, Clone)]
pub struct PreparedAssets {
    /// Path to the kernel image.
    pub kernel: PathBuf,
    /// Path to the EROFS rootfs image.
    pub rootfs: PathBuf,
    /// Kernel command line from the manifest.
    pub kernel_cmdline: String,
    /// Boot asset version.
    pub version: String,
    /// Parsed manifest.
    pub manifest: Manifest,
}

/// What an explicit migration trusted in one root.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ImportStatus {
    /// The legacy file.
    pub legacy: PathBuf,
    /// Paths (under the root) whose records were imported.
    pub imported: Vec<String>,
    /// Keys skipped, with why (they are hashed when needed).
    pub skipped: Vec<(String, String)>,
}

/// Identity and change stamp of a file (device, inode, size, mtime, ctime): equal stamps mean
/// the bytes that were hashed are still the bytes there.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FileId(u64, u64, u64, i64, i64, i64, i64);

fn file_id(path: &Path) -> Option<FileId> {
    let m = std::fs::symlink_metadata(path).ok()?;
    m.file_type().is_file().then(|| {
        FileId(
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
        )
    })
}

struct Inner {
    config: AssetManagerConfig,
    /// Where each root's state dir is made (one subdirectory per root).
    state_base: PathBuf,
    offline: bool,
    boot: OnceLock<Arc<Root>>,
    shares: Mutex<HashMap<PathBuf, Arc<Share>>>,
    /// The manifest last parsed, and the stamp of the `manifest.json` it was read from.
    manifest: Mutex<Option<(FileId, Arc<Parsed>)>>,
    /// Legacy `runtime.erofs` files are removed once per manager (arcbox-boot 0.8 does it on
    /// every prepare; once is enough, and keeps a `read_dir` off the warm path).
    legacy_swept: OnceLock<()>,
}

/// Manages downloading, caching and verifying boot assets, over bootvault stores. Cheap to
/// clone (shared state).
#[derive(Clone)]
pub struct AssetManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AssetManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssetManager")
            .field("config", &self.inner.config)
            .field("state_base", &self.inner.state_base)
            .field("offline", &self.inner.offline)
            .finish_non_exhaustive()
    }
}

/// What a manifest lookup found.
enum Cached {
    /// Trusted: the bytes hash to the recorded digest.
    Trusted(Arc<Parsed>),
    /// Not usable as is (absent, never recorded, or changed); why.
    Fetch(&'static str),
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
            config.arch = current_arch().to_string();
        }
        config.cache_dir = std::path::absolute(&config.cache_dir).map_err(|e| {
            Error::InvalidConfig(format!("cache_dir {}: {e}", config.cache_dir.display()))
        })?;
        let state_base = engine::default_state_base()
            .unwrap_or_else(|| config.cache_dir.join(bootvault::STATE_DIR_NAME));
        Ok(Self::build(config, state_base, false))
    }

    fn build(config: AssetManagerConfig, state_base: PathBuf, offline: bool) -> Self {
        AssetManager {
            inner: Arc::new(Inner {
                config,
                state_base,
                offline,
                boot: OnceLock::new(),
                shares: Mutex::new(HashMap::new()),
                manifest: Mutex::new(None),
                legacy_swept: OnceLock::new(),
            }),
        }
    }

    /// Access the configuration.
    pub fn config(&self) -> &AssetManagerConfig {
        &self.inner.config
    }

    /// Puts the state dirs under `dir` instead of the per-user default.
    pub fn with_state_dir(self, dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        Self::build(self.inner.config.clone(), dir, self.inner.offline)
    }

    /// Never touches the network: a missing or untrusted manifest and missing or wrong files
    /// fail instead of being fetched.
    pub fn offline(self, offline: bool) -> Self {
        Self::build(
            self.inner.config.clone(),
            self.inner.state_base.clone(),
            offline,
        )
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
        engine::state_for(&self.inner.state_base, "boot", &self.inner.config.cache_dir)
    }

    /// The share root of `dest_dir` (its parent) and the state dir of its store.
    pub fn share_of(&self, dest_dir: &Path) -> Result<(PathBuf, PathBuf)> {
        let (root, _) = engine::share_root(dest_dir)?;
        let state = engine::state_for(&self.inner.state_base, "share", &root);
        Ok((root, state))
    }

    /// Download manifest + kernel + rootfs if not cached. Does not download binaries: use
    /// [`AssetManager::prepare_binaries`].
    pub async fn prepare(&self, progress: Option<ProgressCallback>) -> Result<PreparedAssets> {
        let inner = &self.inner;
        inner.sweep_legacy()?;
        let parsed = inner.manifest_async().await?;
        let (boot, bm) = inner.boot_set(&parsed)?;
        engine::run_async(&boot, bm, None, progress).await?;
        inner.prepared(&parsed)
    }

    /// Blocking [`AssetManager::prepare`], with each asset's outcome.
    pub fn prepare_blocking(
        &self,
        progress: Option<ProgressCallback>,
    ) -> Result<(PreparedAssets, Vec<AssetStatus>)> {
        let inner = &self.inner;
        inner.sweep_legacy()?;
        let parsed = inner.manifest_blocking()?;
        let (boot, bm) = inner.boot_set(&parsed)?;
        let statuses = engine::run_blocking(&boot, &bm, None, progress)?;
        Ok((inner.prepared(&parsed)?, statuses))
    }

    /// Prepare guest binaries into `dest_dir` (their `install_dir` as siblings), mode 0755.
    pub async fn prepare_binaries(
        &self,
        dest_dir: &Path,
        progress: Option<ProgressCallback>,
    ) -> Result<()> {
        let inner = &self.inner;
        // The share first: a state dir inside it is refused before anything is written.
        let share = inner.share(dest_dir)?;
        let parsed = inner.manifest_async().await?;
        let sm = inner.share_set(&share, &parsed)?;
        engine::run_async(&share.root, sm, Some(dest_dir), progress).await?;
        Ok(())
    }

    /// Blocking [`AssetManager::prepare_binaries`], with each asset's outcome.
    pub fn prepare_binaries_blocking(
        &self,
        dest_dir: &Path,
        progress: Option<ProgressCallback>,
    ) -> Result<Vec<AssetStatus>> {
        let inner = &self.inner;
        let share = inner.share(dest_dir)?;
        let parsed = inner.manifest_blocking()?;
        let sm = inner.share_set(&share, &parsed)?;
        engine::run_blocking(&share.root, &sm, Some(dest_dir), progress)
    }

    /// Checks that every binary is present under `dest_dir` with its digest, downloading and
    /// writing nothing: a record vouches, or the file is hashed.
    pub async fn validate_binaries(&self, dest_dir: &Path) -> Result<()> {
        let share = self.inner.share(dest_dir)?;
        let parsed = self.inner.manifest_async().await?;
        let sm = self.inner.share_set(&share, &parsed)?;
        engine::blocking(move || share.root.validate(&sm)).await
    }

    /// Blocking [`AssetManager::validate_binaries`].
    pub fn validate_binaries_blocking(&self, dest_dir: &Path) -> Result<()> {
        let share = self.inner.share(dest_dir)?;
        let parsed = self.inner.manifest_blocking()?;
        let sm = self.inner.share_set(&share, &parsed)?;
        share.root.validate(&sm)
    }

    /// The operator's explicit act of trusting what arcbox-boot left: imports both
    /// `.verified.json` files (the version dir's and `dest_dir`'s) into the ledgers and adopts
    /// the cached `manifest.json` as this state dir's own. This trusts whoever could write
    /// those files (the guest can write the share): run it only on an install you trust.
    /// Fetches and hashes nothing.
    pub fn migrate(&self, dest_dir: &Path) -> Result<Vec<ImportStatus>> {
        let inner = &self.inner;
        let path = inner.manifest_path();
        if let Ok(bytes) = bootvault_read(&path) {
            let parsed = inner.parse(&bytes, &path.display().to_string())?;
            inner.record_digest(&parsed.digest)?;
        }
        let boot = inner.boot_root()?;
        let share = inner.share(dest_dir)?;
        let dest = std::path::absolute(dest_dir).unwrap_or_else(|_| dest_dir.to_path_buf());
        Ok(vec![
            import(&boot.store, &inner.version_dir().join(LEGACY))?,
            import(&share.root.store, &dest.join(LEGACY))?,
        ])
    }

    /// The manifest as a prepare would read it (fetched if not cached or not trusted).
    pub fn manifest(&self) -> Result<Manifest> {
        Ok(self.inner.manifest_blocking()?.manifest.clone())
    }

    /// What a prepare would decide for each asset of the boot cache and `dest_dir` now, reading
    /// no asset content and writing nothing (the manifest must be cached and trusted).
    pub fn check(&self, dest_dir: &Path) -> Result<Vec<(String, PathBuf, bootvault::Verdict)>> {
        let inner = &self.inner;
        let parsed = match inner.cached()? {
            Cached::Trusted(p) => p,
            Cached::Fetch(why) => {
                return Err(Error::Manifest {
                    source_url: inner.manifest_path().display().to_string(),
                    message: why.into(),
                });
            }
        };
        let (boot, bm) = inner.boot_set(&parsed)?;
        let share = inner.share(dest_dir)?;
        let sm = inner.share_set(&share, &parsed)?;
        let mut out = Vec::new();
        for (root, m) in [(&*boot, &bm), (&*share.root, &sm)] {
            let (insp, _) = root.store.inspect(m, None);
            out.extend(insp.into_iter().map(|i| (i.asset.name, i.path, i.verdict)));
        }
        Ok(out)
    }
}

/// arcbox-boot's legacy verification cache, next to its files.
const LEGACY: &str = ".verified.json";

fn bootvault_read(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut out = Vec::new();
    f.take(MAX_MANIFEST_BYTES + 1).read_to_end(&mut out)?;
    if out.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_MANIFEST_BYTES} bytes"
        )));
    }
    Ok(out)
}

fn import(store: &bootvault::Store, legacy: &Path) -> Result<ImportStatus> {
    let mut status = ImportStatus {
        legacy: legacy.to_path_buf(),
        ..Default::default()
    };
    if std::fs::symlink_metadata(legacy).is_err() {
        return Ok(status);
    }
    let report = store.import_legacy(legacy)?;
    status.imported = report.imported;
    status.skipped = report.skipped;
    Ok(status)
}

impl Inner {
    fn version_dir(&self) -> PathBuf {
        self.config.cache_dir.join(&self.config.version)
    }

    fn manifest_path(&self) -> PathBuf {
        self.version_dir().join("manifest.json")
    }

    fn manifest_url(&self) -> Result<String> {
        cdn_url(
            &self.config.cdn_base_url,
            &manifest_object_path(&self.config.version),
        )
    }

    /// Where the digest of the trusted `manifest.json` is kept: the state base, outside the
    /// boot cache and the share.
    fn digest_path(&self) -> PathBuf {
        engine::state_for(&self.state_base, "manifest", &self.config.cache_dir)
            .join(format!("{}.sha256", self.config.version))
    }

    fn recorded_digest(&self) -> Option<Sha256Digest> {
        let text = std::fs::read_to_string(self.digest_path()).ok()?;
        Sha256Digest::from_hex(text.trim()).ok()
    }

    fn record_digest(&self, d: &Sha256Digest) -> Result<()> {
        let path = self.digest_path();
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        use std::io::Write;
        tmp.write_all(format!("{}\n", d.to_hex()).as_bytes())?;
        tmp.as_file().sync_all()?;
        tmp.persist(&path).map_err(|e| Error::Io(e.error))?;
        Ok(())
    }

    fn boot_root(&self) -> Result<Arc<Root>> {
        if let Some(r) = self.boot.get() {
            return Ok(r.clone());
        }
        let state = engine::state_for(&self.state_base, "boot", &self.config.cache_dir);
        let root = Arc::new(Root::open(&self.config.cache_dir, &state, self.offline)?);
        Ok(self.boot.get_or_init(|| root).clone())
    }

    fn share(&self, dest_dir: &Path) -> Result<Arc<Share>> {
        let (root_path, _) = engine::share_root(dest_dir)?;
        let mut shares = engine::lock(&self.shares);
        if let Some(s) = shares.get(&root_path) {
            return Ok(s.clone());
        }
        let s = Arc::new(Share::open(&self.state_base, dest_dir, self.offline)?);
        shares.insert(root_path, s.clone());
        Ok(s)
    }

    /// arcbox-boot 0.8 removes the legacy read-only `runtime.erofs` of every version dir.
    fn sweep_legacy(&self) -> Result<()> {
        if self.legacy_swept.get().is_some() {
            return Ok(());
        }
        if let Ok(dirs) = std::fs::read_dir(&self.config.cache_dir) {
            for entry in dirs.flatten() {
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                match std::fs::remove_file(entry.path().join("runtime.erofs")) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let _ = self.legacy_swept.set(());
        Ok(())
    }

    /// Parses `bytes` as arcbox-boot does and checks the schema against the configured
    /// version (not the manifest's own), as arcbox-boot does.
    fn parse(&self, bytes: &[u8], origin: &str) -> Result<Arc<Parsed>> {
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| Error::Manifest {
            source_url: origin.into(),
            message: e.to_string(),
        })?;
        let expected = schema_version_for(&self.config.version);
        if manifest.schema_version != expected {
            return Err(Error::UnsupportedSchema {
                version: manifest.schema_version,
                expected,
            });
        }
        Ok(Arc::new(Parsed {
            manifest,
            digest: Sha256Digest::of(bytes),
        }))
    }

    /// The manifest this manager already trusts (parsed from bytes that hashed to the recorded
    /// digest), else the cached one if its bytes are the ones this state dir recorded. Once
    /// trusted, the parsed copy in memory is used as is: a later rewrite of `manifest.json` in
    /// the share changes nothing this manager enforces (and the next manager re-checks it).
    fn cached(&self) -> Result<Cached> {
        if let Some((_, p)) = engine::lock(&self.manifest).as_ref() {
            return Ok(Cached::Trusted(p.clone()));
        }
        let path = self.manifest_path();
        let Some(id) = file_id(&path) else {
            return Ok(Cached::Fetch("not cached"));
        };
        let Some(recorded) = self.recorded_digest() else {
            return Ok(Cached::Fetch(
                "cached by another program, not by this state dir (run `arcbox migrate` to trust it)",
            ));
        };
        let Ok(bytes) = bootvault_read(&path) else {
            return Ok(Cached::Fetch("cannot be read"));
        };
        if Sha256Digest::of(&bytes) != recorded {
            return Ok(Cached::Fetch(
                "changed since it was fetched (the share is writable by the guest)",
            ));
        }
        let parsed = self.parse(&bytes, &path.display().to_string())?;
        // Only a stamp taken before the read may stand for these bytes.
        if file_id(&path) == Some(id) {
            *engine::lock(&self.manifest) = Some((id, parsed.clone()));
        }
        Ok(Cached::Trusted(parsed))
    }

    fn untrusted(&self, why: &str) -> Error {
        Error::Manifest {
            source_url: self.manifest_path().display().to_string(),
            message: format!("{why}, and offline"),
        }
    }

    async fn manifest_async(&self) -> Result<Arc<Parsed>> {
        match self.cached()? {
            Cached::Trusted(p) => Ok(p),
            Cached::Fetch(why) if self.offline => Err(self.untrusted(why)),
            Cached::Fetch(_) => {
                let url = self.manifest_url()?;
                let store = self.boot_root()?.store.clone();
                let bytes = store
                    .fetch_document_async(&url, MAX_MANIFEST_BYTES)
                    .await
                    .map_err(|e| download_error(&url, e))?;
                self.accept(&url, bytes)
            }
        }
    }

    fn manifest_blocking(&self) -> Result<Arc<Parsed>> {
        match self.cached()? {
            Cached::Trusted(p) => Ok(p),
            Cached::Fetch(why) if self.offline => Err(self.untrusted(why)),
            Cached::Fetch(_) => {
                let url = self.manifest_url()?;
                let bytes = self
                    .boot_root()?
                    .store
                    .fetch_document(&url, MAX_MANIFEST_BYTES)
                    .map_err(|e| download_error(&url, e))?;
                self.accept(&url, bytes)
            }
        }
    }

    /// A fetched manifest: parsed and checked, written `0644` (as arcbox-boot leaves it) into
    /// the version dir by rename, and its digest recorded in the state dir.
    fn accept(&self, url: &str, bytes: Vec<u8>) -> Result<Arc<Parsed>> {
        let parsed = self.parse(&bytes, url)?;
        let dir = self.version_dir();
        std::fs::create_dir_all(&dir)?;
        // A guest that swapped the version dir for a symlink must not make us write through it.
        if std::fs::symlink_metadata(&dir)?.file_type().is_symlink() {
            return Err(Error::Other(format!(
                "version dir {} is a symlink; refusing to write through it",
                dir.display()
            )));
        }
        self.record_digest(&parsed.digest)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".manifest.json.")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .tempfile_in(&dir)?;
        use std::io::Write;
        tmp.write_all(&bytes)?;
        tmp.as_file().sync_all()?;
        let path = self.manifest_path();
        tmp.persist(&path).map_err(|e| Error::Io(e.error))?;
        if let Some(id) = file_id(&path) {
            *engine::lock(&self.manifest) = Some((id, parsed.clone()));
        }
        Ok(parsed)
    }

    /// The boot cache's store and its manifest for `parsed` (derived once per manifest).
    fn boot_set(&self, parsed: &Arc<Parsed>) -> Result<(Arc<Root>, Arc<bootvault::Manifest>)> {
        let boot = self.boot_root()?;
        let m = boot.derive(parsed, || self.boot_manifest(&parsed.manifest))?;
        Ok((boot, m))
    }

    /// The share's manifest for `parsed` (derived once per manifest).
    fn share_set(&self, share: &Share, parsed: &Arc<Parsed>) -> Result<Arc<bootvault::Manifest>> {
        share.root.derive(parsed, || {
            share.manifest(
                &parsed.manifest,
                &self.config.arch,
                &self.config.cdn_base_url,
            )
        })
    }

    fn boot_manifest(&self, m: &Manifest) -> Result<bootvault::Manifest> {
        let base = layout::parse_base(&self.config.cdn_base_url).map_err(Error::InvalidConfig)?;
        let assets = layout::boot_assets(
            m,
            &self.config.arch,
            &self.config.version,
            &Base::Cdn(&base),
            self.config.custom_kernel.is_some(),
        )?;
        Ok(bootvault::Manifest::new(m.asset_version.clone(), assets)?
            .base_url(self.config.cdn_base_url.clone()))
    }

    fn prepared(&self, parsed: &Parsed) -> Result<PreparedAssets> {
        let target = layout::target(&parsed.manifest, &self.config.arch)?;
        let vdir = self.version_dir();
        let kernel = match &self.config.custom_kernel {
            Some(k) => {
                if !k.is_file() {
                    return Err(Error::Other(format!(
                        "custom kernel is not a regular file: {}",
                        k.display()
                    )));
                }
                k.clone()
            }
            None => vdir.join("kernel"),
        };
        Ok(PreparedAssets {
            kernel,
            rootfs: vdir.join("rootfs.erofs"),
            kernel_cmdline: target.kernel_cmdline.clone(),
            version: self.config.version.clone(),
            manifest: parsed.manifest.clone(),
        })
    }
}

fn download_error(url: &str, e: bootvault::Error) -> Error {
    match e {
        bootvault::Error::Document { .. } => Error::Download(e.to_string()),
        other => Error::Manifest {
            source_url: url.into(),
            message: other.to_string(),
        },
    }
}
