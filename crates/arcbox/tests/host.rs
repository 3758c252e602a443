//! The arcbox daemon's own flow, as it runs it: a tokio multi-thread runtime awaiting
//! `AssetManager::prepare` and `prepare_binaries`, on a fresh store (manifest not cached),
//! then an upgrade, a CDN that fails once, and a prepare cancelled by dropping its future.
//!
//! The host's code is written once ([`host_code!`]) and compiled twice: against arcbox-boot 0.8
//! itself and against `bootvault-arcbox`. That is the one-line switch
//! (`arcbox-boot = { package = "bootvault-arcbox", … }`): the same paths, types, fields,
//! methods and error variants, checked by the compiler, and the same results, checked below.

use bootvault_testkit::arcbox_set::{self, Kind, SetFile};
use bootvault_testkit::origin::{Fault, Origin};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the host's code saw, for comparing the two crates.
#[derive(Debug, PartialEq)]
pub struct Seen {
    kernel: PathBuf,
    rootfs: PathBuf,
    kernel_cmdline: String,
    version: String,
    built_at: String,
    source_repo: Option<String>,
    kernel_sha: String,
    first_binary: (String, String, Option<String>, String),
    binaries: usize,
    current_arch_target: bool,
    cached_manifest_version: String,
    phases: Vec<String>,
    schema: u32,
    object_path: String,
    cdn: String,
    missing_binary: String,
}

/// A host's wrapper around arcbox-boot, written against the crate named `$krate`.
macro_rules! host_code {
    ($krate:ident) => {
        pub mod $krate {
            use super::Seen;
            use std::path::Path;
            use std::sync::{Arc, Mutex};
            use $krate::asset_manager::{AssetManager, AssetManagerConfig, PreparedAssets};
            use $krate::download::{PreparePhase, PrepareProgress, ProgressCallback};
            use $krate::error::{Error, Result};
            use $krate::manifest::{
                Binary, BinaryTarget, FileEntry, Manifest, Target, schema_version_for,
            };
            use $krate::util::{cdn_url, current_arch, manifest_object_path, path_safe_version};

            pub fn manager(cdn: &str, version: &str, cache: &Path) -> Result<AssetManager> {
                let config = AssetManagerConfig {
                    cdn_base_url: cdn.to_string(),
                    version: version.to_string(),
                    arch: "x86_64".to_string(),
                    cache_dir: cache.to_path_buf(),
                    ..AssetManagerConfig::default()
                };
                AssetManager::new(config)
            }

            /// The daemon's boot: prepare, prepare_binaries, then its status command reads the
            /// cached manifest.json with serde_json.
            pub async fn boot(cdn: &str, version: &str, cache: &Path, bin: &Path) -> Result<Seen> {
                let m = manager(cdn, version, cache)?;
                assert_eq!(m.config().version, version);
                let phases = Arc::new(Mutex::new(Vec::new()));
                let sink = phases.clone();
                let progress: ProgressCallback = Box::new(move |p: PrepareProgress| {
                    let phase = match p.phase {
                        PreparePhase::Checking => "checking",
                        PreparePhase::Downloading { downloaded, total } => {
                            assert!(total.is_none_or(|t| downloaded <= t));
                            "downloading"
                        }
                        PreparePhase::Verifying => "verifying",
                        PreparePhase::Ready => "ready",
                        PreparePhase::Cached => "cached",
                    };
                    assert!(p.current <= p.total);
                    sink.lock().unwrap().push(format!("{} {phase}", p.name));
                });
                let prepared: PreparedAssets = m.prepare(Some(progress)).await?;
                m.prepare_binaries(bin, None).await?;

                let text = std::fs::read_to_string(cache.join(version).join("manifest.json"))?;
                let cached: Manifest =
                    serde_json::from_str(&text).map_err(|e| Error::Other(e.to_string()))?;
                let manifest: &Manifest = &prepared.manifest;
                let target: &Target = &manifest.targets["x86_64"];
                let kernel: &FileEntry = &target.kernel;
                let first: &Binary = &manifest.binaries[0];
                let bt: &BinaryTarget = first.target_for_arch("x86_64")?;
                manifest.validate_binaries("x86_64", bin).await?;
                // A binary that is gone: arcbox-boot's error, with the name.
                std::fs::remove_file(bin.join(&first.name))?;
                let missing = match manifest.validate_binaries("x86_64", bin).await {
                    // The message names the binary, then its path (which differs per host).
                    Err(Error::Other(msg)) => msg.split(" at ").next().unwrap_or("").to_string(),
                    Err(Error::ChecksumMismatch { name, .. }) => format!("mismatch {name}"),
                    Err(e) => format!("other error: {e}"),
                    Ok(()) => "ok".to_string(),
                };
                m.prepare_binaries(bin, None).await?;
                // The arm64-only binary.
                let fex = manifest.binaries.iter().find(|b| b.name == "FEX").unwrap();
                match fex.target_for_arch("x86_64") {
                    Err(Error::BinaryArchNotFound { name, arch }) => {
                        assert_eq!((name.as_str(), arch.as_str()), ("FEX", "x86_64"))
                    }
                    other => panic!("FEX on x86_64: {other:?}"),
                }
                let mut phases = phases.lock().unwrap().clone();
                phases.sort();
                phases.dedup();
                Ok(Seen {
                    kernel: prepared.kernel.clone(),
                    rootfs: prepared.rootfs.clone(),
                    kernel_cmdline: prepared.kernel_cmdline.clone(),
                    version: prepared.version.clone(),
                    built_at: manifest.built_at.clone(),
                    source_repo: manifest.source_repo.clone(),
                    kernel_sha: kernel.sha256.clone(),
                    first_binary: (
                        first.name.clone(),
                        first.version.clone(),
                        first.install_dir.clone(),
                        bt.sha256.clone(),
                    ),
                    binaries: manifest.binaries.len(),
                    current_arch_target: manifest.target_for_current_arch().is_some()
                        == (current_arch() == "x86_64"),
                    cached_manifest_version: cached.asset_version,
                    phases,
                    schema: schema_version_for(&manifest.asset_version),
                    object_path: manifest_object_path(&path_safe_version(version)),
                    cdn: cdn_url(cdn, "asset/x")?,
                    missing_binary: missing,
                })
            }

            /// An architecture the manifest does not have.
            pub async fn wrong_arch(cdn: &str, version: &str, cache: &Path) -> String {
                let m = AssetManager::new(AssetManagerConfig {
                    cdn_base_url: cdn.to_string(),
                    version: version.to_string(),
                    arch: "riscv64".to_string(),
                    cache_dir: cache.to_path_buf(),
                    custom_kernel: None,
                })
                .unwrap();
                match m.prepare(None).await {
                    Err(Error::ArchNotFound(arch)) => format!("arch {arch}"),
                    Err(e) => format!("other error: {e}"),
                    Ok(_) => "ok".to_string(),
                }
            }

            /// A schema that is not the configured version's major.
            pub async fn wrong_schema(cdn: &str, version: &str, cache: &Path) -> String {
                match manager(cdn, version, cache).unwrap().prepare(None).await {
                    Err(Error::UnsupportedSchema { version, expected }) => {
                        format!("schema {version} expected {expected}")
                    }
                    Err(e) => format!("other error: {e}"),
                    Ok(_) => "ok".to_string(),
                }
            }
        }
    };
}

host_code!(arcbox_boot);
host_code!(bootvault_arcbox);

const V: &str = "0.6.0";

/// The release as arcbox-boot's own types write it, published on `origin`.
fn publish(origin: &Origin, version: &str, changed: &[&str]) -> Vec<SetFile> {
    let files = arcbox_set::files(version, 64 << 10, 256 << 10, 1 << 20, changed);
    let m = arcbox_set::upstream_manifest(version, &files);
    for f in &files {
        origin.add(&f.cdn_path, f.bytes.clone());
    }
    origin.add(
        &format!("asset/v{version}/manifest.json"),
        serde_json::to_vec_pretty(&m).unwrap().into(),
    );
    files
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// bootvault-arcbox keeps its ledgers in the per-user state dir: one of this test binary's
/// own under the target dir, set before any test reads the environment.
fn state_home() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("arcbox-host-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // SAFETY: inside `call_once`, which every test passes before it starts a thread or
        // reads the environment; no other code of this binary writes the environment.
        unsafe { std::env::set_var("XDG_STATE_HOME", dir) };
    });
}

struct Host {
    _tmp: tempfile::TempDir,
    cache: PathBuf,
    bin: PathBuf,
}

impl Host {
    fn new() -> Host {
        let tmp = tempfile::tempdir().unwrap();
        Host {
            cache: tmp.path().join("boot"),
            bin: tmp.path().join("share").join("bin"),
            _tmp: tmp,
        }
    }
    /// The same paths, relative to the host dir, for comparing two hosts.
    fn rel(&self, p: &Path) -> PathBuf {
        p.strip_prefix(self._tmp.path()).unwrap().to_path_buf()
    }
}

/// The same host code, compiled against both crates, sees the same thing on a fresh install.
#[test]
fn the_same_host_code_runs_against_arcbox_boot_and_bootvault_arcbox() {
    state_home();
    let origin = Origin::start().unwrap();
    publish(&origin, V, &[]);
    let rt = runtime();
    let (a, b) = (Host::new(), Host::new());
    let mut theirs = rt
        .block_on(arcbox_boot::boot(&origin.base_url(), V, &a.cache, &a.bin))
        .unwrap();
    let mut ours = rt
        .block_on(bootvault_arcbox::boot(
            &origin.base_url(),
            V,
            &b.cache,
            &b.bin,
        ))
        .unwrap();
    theirs.kernel = a.rel(&theirs.kernel);
    theirs.rootfs = a.rel(&theirs.rootfs);
    ours.kernel = b.rel(&ours.kernel);
    ours.rootfs = b.rel(&ours.rootfs);
    // arcbox-boot reports boot files only as cached with index 0 and no checking phase; the
    // phases each saw are compared for what a host keys on: every asset reached its end.
    let ends = |s: &Seen, name: &str| {
        s.phases
            .iter()
            .any(|p| p == &format!("{name} ready") || p == &format!("{name} cached"))
    };
    assert!(
        ends(&ours, "kernel") && ends(&ours, "rootfs"),
        "{:?}",
        ours.phases
    );
    theirs.phases.clear();
    ours.phases.clear();
    assert_eq!(ours.missing_binary, "binary 'dockerd' not found");
    assert_eq!(ours, theirs);
    // Every file is where arcbox-boot put it, with the same bytes.
    for rel in [
        "boot/0.6.0/kernel",
        "share/bin/dockerd",
        "share/kernel/vmlinux",
    ] {
        assert_eq!(
            std::fs::read(a._tmp.path().join(rel)).unwrap(),
            std::fs::read(b._tmp.path().join(rel)).unwrap(),
            "{rel}"
        );
    }
    // The manifest is cached 0644, as arcbox-boot writes it.
    use std::os::unix::fs::PermissionsExt;
    for h in [&a, &b] {
        let mode = std::fs::metadata(h.cache.join(V).join("manifest.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
    }
    // The same errors, by variant.
    let (c, d) = (Host::new(), Host::new());
    assert_eq!(
        rt.block_on(arcbox_boot::wrong_arch(&origin.base_url(), V, &c.cache)),
        rt.block_on(bootvault_arcbox::wrong_arch(
            &origin.base_url(),
            V,
            &d.cache
        )),
    );
    publish(&origin, "1.0.0", &[]);
    let served = origin.bytes_served("asset/v1.0.0/manifest.json");
    let body = std::str::from_utf8(&origin_body(&origin, "1.0.0"))
        .unwrap()
        .to_string();
    assert!(body.contains("\"schema_version\": 1"), "{served}");
    origin.add(
        "asset/v1.0.0/manifest.json",
        body.replace("\"schema_version\": 1", "\"schema_version\": 0")
            .into_bytes()
            .into(),
    );
    let (e, f) = (Host::new(), Host::new());
    assert_eq!(
        rt.block_on(arcbox_boot::wrong_schema(
            &origin.base_url(),
            "1.0.0",
            &e.cache
        )),
        "schema 0 expected 1"
    );
    assert_eq!(
        rt.block_on(bootvault_arcbox::wrong_schema(
            &origin.base_url(),
            "1.0.0",
            &f.cache
        )),
        "schema 0 expected 1"
    );
}

/// The manifest body served for `version` (fetched like any client would).
fn origin_body(origin: &Origin, version: &str) -> Vec<u8> {
    let url = origin.url(&format!("asset/v{version}/manifest.json"));
    let store_dir = tempfile::tempdir().unwrap();
    let store = bootvault::Store::open(store_dir.path()).unwrap();
    store.fetch_document(&url, 1 << 20).unwrap()
}

/// The daemon's flow through the async API only, on a fresh store: install over HTTP (the
/// manifest not cached), a version bump, a CDN that fails once, and a prepare cancelled by
/// dropping its future. On the old adapter the first `prepare().await` panicked ("Cannot start a
/// runtime from within a runtime").
#[test]
fn the_hosts_async_flow_on_a_fresh_store_an_upgrade_a_failing_cdn_and_a_drop() {
    state_home();
    let origin = Origin::start().unwrap();
    let files = publish(&origin, V, &[]);
    let host = Host::new();
    let cdn = origin.base_url();
    let rt = runtime();
    rt.block_on(async {
        use ::bootvault_arcbox::asset_manager::{AssetManager, AssetManagerConfig};
        let config = |version: &str| AssetManagerConfig {
            cdn_base_url: cdn.clone(),
            version: version.into(),
            arch: "x86_64".into(),
            cache_dir: host.cache.clone(),
            custom_kernel: None,
        };
        // Fresh install, binaries first (the manifest is fetched on that path too).
        let m = AssetManager::new(config(V)).unwrap();
        m.prepare_binaries(&host.bin, None).await.unwrap();
        let p = m.prepare(None).await.unwrap();
        let kernel = files.iter().find(|f| f.kind == Kind::Kernel).unwrap();
        assert_eq!(std::fs::read(&p.kernel).unwrap(), kernel.bytes);
        assert_eq!(origin.requests(&format!("asset/v{V}/manifest.json")), 1);

        // A version bump whose CDN fails once on the manifest and on the new rootfs: retried.
        let next = publish(&origin, "0.6.1", &["rootfs", "runc"]);
        let fail_once = Fault {
            fail_first: 1,
            fail_status: 503,
            ..Fault::default()
        };
        origin.set_fault("asset/v0.6.1/manifest.json", fail_once.clone());
        let rootfs = next.iter().find(|f| f.kind == Kind::Rootfs).unwrap();
        origin.set_fault(&rootfs.cdn_path, fail_once);
        let m2 = AssetManager::new(config("0.6.1")).unwrap();
        let p2 = m2.prepare(None).await.unwrap();
        m2.prepare_binaries(&host.bin, None).await.unwrap();
        assert_eq!(std::fs::read(&p2.rootfs).unwrap(), rootfs.bytes);
        assert_eq!(origin.requests("asset/v0.6.1/manifest.json"), 2);
        let runc = next.iter().find(|f| f.name == "runc").unwrap();
        assert_eq!(std::fs::read(host.bin.join("runc")).unwrap(), runc.bytes);
        // The unchanged kernel (at a new CDN path) was copied from the previous version dir,
        // not fetched.
        let k2 = next.iter().find(|f| f.kind == Kind::Kernel).unwrap();
        assert_eq!(origin.requests(&k2.cdn_path), 0);
        assert_eq!(std::fs::read(&p2.kernel).unwrap(), k2.bytes);

        // Warm: no request at all.
        let before = origin.total_requests();
        m2.prepare(None).await.unwrap();
        m2.prepare_binaries(&host.bin, None).await.unwrap();
        assert_eq!(origin.total_requests(), before);

        // The same manager, warm, then a guest rewrites a binary through the share (same
        // size, mtime put back): the next call sees it (ctime moved) and repairs it.
        let runc_path = host.bin.join("runc");
        let meta = std::fs::metadata(&runc_path).unwrap();
        let mut evil = runc.bytes.to_vec();
        evil[3] ^= 0xff;
        std::fs::set_permissions(
            &runc_path,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        std::fs::write(&runc_path, &evil).unwrap();
        let mtime = std::time::SystemTime::UNIX_EPOCH
            + Duration::from_nanos(
                std::os::unix::fs::MetadataExt::mtime(&meta) as u64 * 1_000_000_000
                    + std::os::unix::fs::MetadataExt::mtime_nsec(&meta) as u64,
            );
        std::fs::File::options()
            .write(true)
            .open(&runc_path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        m2.prepare_binaries(&host.bin, None).await.unwrap();
        assert_eq!(std::fs::read(&runc_path).unwrap(), runc.bytes);

        // A prepare dropped mid-download stops downloading; the next one finishes it.
        let slow = publish(&origin, "0.6.2", &["rootfs"]);
        let rootfs = slow.iter().find(|f| f.kind == Kind::Rootfs).unwrap();
        origin.set_fault(
            &rootfs.cdn_path,
            Fault {
                bytes_per_sec: Some(64 << 10),
                ..Fault::default()
            },
        );
        let m3 = AssetManager::new(config("0.6.2")).unwrap();
        let dropped = tokio::time::timeout(Duration::from_millis(700), m3.prepare(None)).await;
        assert!(dropped.is_err(), "finished before the drop");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let a = origin.bytes_served(&rootfs.cdn_path);
        tokio::time::sleep(Duration::from_millis(700)).await;
        let b = origin.bytes_served(&rootfs.cdn_path);
        assert_eq!(a, b, "the download went on after the future was dropped");
        assert!(a < rootfs.bytes.len() as u64);
        origin.clear_fault(&rootfs.cdn_path);
        let p3 = m3.prepare(None).await.unwrap();
        assert_eq!(std::fs::read(&p3.rootfs).unwrap(), rootfs.bytes);
    });
}

/// Shared by the host code above and a host's status command: nothing here may need a
/// runtime of its own.
#[test]
fn a_blocking_call_inside_spawn_blocking_of_a_host_runtime_works() {
    state_home();
    let origin = Origin::start().unwrap();
    publish(&origin, V, &[]);
    let host = Host::new();
    let cdn = origin.base_url();
    let cache = host.cache.clone();
    let bin = host.bin.clone();
    let seen = Arc::new(Mutex::new(None));
    let out = seen.clone();
    runtime().block_on(async move {
        tokio::task::spawn_blocking(move || {
            let m = ::bootvault_arcbox::asset_manager::AssetManager::new(
                ::bootvault_arcbox::asset_manager::AssetManagerConfig {
                    cdn_base_url: cdn,
                    version: V.into(),
                    arch: "x86_64".into(),
                    cache_dir: cache,
                    custom_kernel: None,
                },
            )
            .unwrap();
            let (p, _) = m.prepare_blocking(None).unwrap();
            m.prepare_binaries_blocking(&bin, None).unwrap();
            *out.lock().unwrap() = Some(p.version);
        })
        .await
        .unwrap();
    });
    assert_eq!(seen.lock().unwrap().as_deref(), Some(V));
}
