//! The arcbox drop-in, against arcbox-boot 0.8's own code: its `Manifest` type writes the
//! manifests, its `AssetManager` makes real installs from the loopback origin, and bootvault's
//! adapter then takes over those installs in place.

mod common;

use arcbox_boot::asset_manager::{
    AssetManager as UpstreamManager, AssetManagerConfig as UpstreamConfig,
};
use arcbox_boot::manifest as upstream;
use bootvault::{Manifest, Outcome};
use bootvault_arcbox::asset_manager::{AssetManager, AssetManagerConfig, AssetStatus};
use bootvault_testkit::arcbox_set::{self, Kind, SetFile};
use bootvault_testkit::origin::Origin;
use common::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const V: &str = "0.6.0";
const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/arcbox/manifest-0.6.0.json"
);

use arcbox_set::upstream_manifest;

/// The small test set (22 x86_64 files + FEX), its manifest text, published on `origin`.
fn publish(origin: &Origin, version: &str, changed: &[&str]) -> (Vec<SetFile>, String) {
    let files = arcbox_set::files(version, 256 * KIB, 512 * KIB, 2 * MIB as u64, changed);
    for f in &files {
        origin.add(&f.cdn_path, f.bytes.clone());
    }
    let text = serde_json::to_string_pretty(&upstream_manifest(version, &files)).unwrap();
    origin.add(
        &format!("asset/v{version}/manifest.json"),
        text.clone().into(),
    );
    (files, text)
}

/// A host's directories: arcbox-boot's cache dir, the shared data dir with its bin dir, and a
/// state dir outside both.
struct Host {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    cache: PathBuf,
    bin: PathBuf,
    state: PathBuf,
}

impl Host {
    fn new() -> Host {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        Host {
            cache: dir.join("boot"),
            bin: dir.join("share").join("bin"),
            state: dir.join("state"),
            dir,
            _tmp: tmp,
        }
    }

    fn share(&self) -> PathBuf {
        self.bin.parent().unwrap().to_path_buf()
    }

    /// Where arcbox-boot (and so bootvault) puts `f`.
    fn path_of(&self, version: &str, f: &SetFile) -> PathBuf {
        match (f.kind, &f.install_dir) {
            (Kind::Kernel, _) => self.cache.join(version).join("kernel"),
            (Kind::Rootfs, _) => self.cache.join(version).join("rootfs.erofs"),
            (Kind::Binary, None) => self.bin.join(&f.name),
            (Kind::Binary, Some(dir)) => self.share().join(dir).join(&f.name),
        }
    }

    /// `bootvault arcbox SUB` on this host's layout (version `V`, x86_64).
    fn arcbox_cmd(&self, sub: &str) -> std::process::Command {
        let mut c = bootvault_cmd();
        c.args(["arcbox", sub, "--version", V, "--arch", "x86_64"])
            .arg("--cache-dir")
            .arg(&self.cache)
            .arg("--bin-dir")
            .arg(&self.bin)
            .arg("--state-dir")
            .arg(&self.state);
        c
    }

    /// bootvault's adapter for this host.
    fn bootvault(&self, origin: &Origin, version: &str) -> AssetManager {
        AssetManager::new(AssetManagerConfig {
            cdn_base_url: origin.base_url(),
            version: version.into(),
            arch: "x86_64".into(),
            cache_dir: self.cache.clone(),
            custom_kernel: None,
        })
        .unwrap()
        .with_state_dir(&self.state)
    }

    /// bootvault's adapter: prepare + prepare_binaries, every asset's status by name.
    fn bootvault_prepare(
        &self,
        origin: &Origin,
        version: &str,
    ) -> (
        bootvault_arcbox::asset_manager::PreparedAssets,
        BTreeMap<String, AssetStatus>,
    ) {
        let m = self.bootvault(origin, version);
        let (prepared, mut all) = m.prepare_blocking(None).unwrap();
        all.extend(m.prepare_binaries_blocking(&self.bin, None).unwrap());
        let by_name = all.into_iter().map(|s| (s.name.clone(), s)).collect();
        (prepared, by_name)
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// arcbox-boot 0.8 itself: prepare + prepare_binaries, as arcbox calls them.
fn arcbox_boot(origin: &Origin, version: &str, cache: &Path, bin: &Path) {
    runtime().block_on(async {
        let m = UpstreamManager::new(UpstreamConfig {
            cdn_base_url: origin.base_url(),
            version: version.into(),
            arch: "x86_64".into(),
            cache_dir: cache.to_path_buf(),
            custom_kernel: None,
        })
        .unwrap();
        m.prepare(None).await.unwrap();
        m.prepare_binaries(bin, None).await.unwrap();
    });
}

fn x86_files(files: &[SetFile]) -> Vec<&SetFile> {
    files.iter().filter(|f| f.arch == "x86_64").collect()
}

fn totals(s: &BTreeMap<String, AssetStatus>) -> (u64, u64) {
    (
        s.values().map(|a| a.bytes_hashed).sum(),
        s.values().map(|a| a.bytes_downloaded).sum(),
    )
}

fn file_state(p: &Path) -> (Vec<u8>, std::time::SystemTime) {
    (
        std::fs::read(p).unwrap(),
        std::fs::metadata(p).unwrap().modified().unwrap(),
    )
}

// ---- the switch ---------------------------------------------------------------------------------

#[test]
fn a_migrated_arcbox_boot_install_switches_with_nothing_read_or_downloaded() {
    let origin = Origin::start().unwrap();
    let (files, _) = publish(&origin, V, &[]);
    let host = Host::new();
    arcbox_boot(&origin, V, &host.cache, &host.bin);
    let legacy = [
        host.cache.join(V).join(".verified.json"),
        host.bin.join(".verified.json"),
    ];
    let legacy_before: Vec<_> = legacy.iter().map(|p| file_state(p)).collect();
    let requests_before = origin.total_requests();
    // The operator's explicit act: trust what arcbox-boot left (caches and manifest.json).
    host.bootvault(&origin, V).migrate(&host.bin).unwrap();

    let (prepared, status) = host.bootvault_prepare(&origin, V);
    let x86 = x86_files(&files);
    assert_eq!(status.len(), x86.len(), "{status:?}");
    for f in &x86 {
        let s = &status[&f.name];
        assert_eq!(s.outcome, Outcome::Cached, "{}: {s:?}", f.name);
        assert_eq!(s.path, host.path_of(V, f), "{}", f.name);
    }
    assert_eq!(totals(&status), (0, 0), "{status:?}");
    // arcbox-boot left kernel and rootfs 0644; they are put back to 0444 without being read.
    for p in [
        host.cache.join(V).join("kernel"),
        host.cache.join(V).join("rootfs.erofs"),
    ] {
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o444, "{}", p.display());
    }
    assert_eq!(
        origin.total_requests(),
        requests_before,
        "no request at all"
    );
    // The host's vocabulary: the same paths arcbox-boot returned, and the command line.
    assert_eq!(prepared.kernel, host.cache.join(V).join("kernel"));
    assert_eq!(prepared.rootfs, host.cache.join(V).join("rootfs.erofs"));
    assert_eq!(prepared.version, V);
    assert_eq!(
        prepared.kernel_cmdline,
        "console=ttyS0 root=/dev/vda ro rootfstype=erofs earlycon"
    );
    assert_eq!(prepared.manifest.built_at, "2026-11-25T04:09:17Z");
    // The legacy caches are left exactly as they were.
    for (p, before) in legacy.iter().zip(&legacy_before) {
        assert_eq!(&file_state(p), before, "{}", p.display());
    }
    // State lives outside the share (and outside the boot cache).
    assert!(host.state.join(".").exists());
    let in_share = walk(&host.share());
    assert!(
        !in_share
            .iter()
            .any(|p| p.contains(".bootvault") || p.ends_with(".redb")),
        "{in_share:?}"
    );

    // Warm, through the async API a host awaits: still nothing read.
    let m = host.bootvault(&origin, V);
    runtime().block_on(async {
        let p = m.prepare(None).await.unwrap();
        assert_eq!(p.kernel, prepared.kernel);
        m.prepare_binaries(&host.bin, None).await.unwrap();
        m.validate_binaries(&host.bin).await.unwrap();
    });
    assert_eq!(origin.total_requests(), requests_before);

    // arcbox-boot still works on the same files afterwards, and trusts them from its cache.
    arcbox_boot(&origin, V, &host.cache, &host.bin);
    assert_eq!(origin.total_requests(), requests_before);
    for f in &x86 {
        assert_eq!(
            std::fs::read(host.path_of(V, f)).unwrap(),
            f.bytes,
            "{}",
            f.name
        );
    }
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
        }
    }
    out
}

#[test]
fn a_fresh_install_has_arcbox_boots_layout_and_modes() {
    let origin = Origin::start().unwrap();
    let (files, _) = publish(&origin, V, &[]);
    let host = Host::new();
    let (_, status) = host.bootvault_prepare(&origin, V);
    for f in x86_files(&files) {
        let p = host.path_of(V, f);
        assert_eq!(status[&f.name].outcome, Outcome::Downloaded, "{}", f.name);
        assert_eq!(std::fs::read(&p).unwrap(), f.bytes, "{}", p.display());
        if f.kind == Kind::Binary {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o755, "{}", p.display());
        }
    }
    // vmlinux (install_dir "kernel") is a sibling of the bin dir; the boot kernel is in the
    // version dir: no collision.
    assert!(host.share().join("kernel/vmlinux").is_file());
    assert!(host.cache.join(V).join("kernel").is_file());
    assert!(!host.share().join("runtime/bin/FEX").exists(), "arm64 only");
    // The manifest was fetched where arcbox-boot caches it, byte for byte.
    let cached = std::fs::read_to_string(host.cache.join(V).join("manifest.json")).unwrap();
    let served: upstream::Manifest = serde_json::from_str(&cached).unwrap();
    assert_eq!(served.asset_version, V);

    // arcbox-boot, run on the bootvault install, finds every file correct (it hashes them,
    // having no cache of its own) and downloads nothing.
    let before = origin.total_requests();
    arcbox_boot(&origin, V, &host.cache, &host.bin);
    assert_eq!(origin.total_requests(), before);
}

// ---- import trust -------------------------------------------------------------------------------

/// The trust boundary: an install switched without `migrate` trusts nothing arcbox-boot (or a
/// guest) left in the share. It is hashed once (nothing downloaded), and the manifest is
/// fetched again rather than read from the share.
#[test]
fn regression_a_switched_install_is_hashed_once_not_trusted_from_its_legacy_caches() {
    let origin = Origin::start().unwrap();
    let (files, _) = publish(&origin, V, &[]);
    let host = Host::new();
    arcbox_boot(&origin, V, &host.cache, &host.bin);
    let before = origin.total_requests();
    let (_, status) = host.bootvault_prepare(&origin, V);
    for f in x86_files(&files) {
        let s = &status[&f.name];
        assert_eq!(s.outcome, Outcome::Verified, "{}: {s:?}", f.name);
        assert_eq!(s.bytes_hashed, f.bytes.len() as u64, "{}", f.name);
        assert_eq!(s.bytes_downloaded, 0, "{}", f.name);
    }
    // Only the manifest, once.
    assert_eq!(origin.total_requests(), before + 1);
    assert_eq!(origin.requests(&format!("asset/v{V}/manifest.json")), 2);
    // And now it is warm.
    let (_, status) = host.bootvault_prepare(&origin, V);
    assert_eq!(totals(&status), (0, 0));
    assert_eq!(origin.total_requests(), before + 1);
}

/// The attack of the trust-boundary review: before the host upgrades, a guest plants the new
/// version's wrong kernel (the right size) and an arcbox-boot cache vouching for it with its
/// mtime. The adapter used to import that cache on the upgrade and report the kernel
/// `cached` with 0 bytes hashed.
#[test]
fn regression_a_verified_json_planted_by_the_guest_vouches_for_nothing() {
    let origin = Origin::start().unwrap();
    publish(&origin, V, &[]);
    let host = Host::new();
    host.bootvault_prepare(&origin, V);
    let (files, _) = publish(&origin, "0.6.1", &["kernel"]);
    let kernel = files.iter().find(|f| f.kind == Kind::Kernel).unwrap();
    let vdir = host.cache.join("0.6.1");
    std::fs::create_dir_all(&vdir).unwrap();
    let evil = vec![0x90u8; kernel.bytes.len()];
    std::fs::write(vdir.join("kernel"), &evil).unwrap();
    let meta = std::fs::metadata(vdir.join("kernel")).unwrap();
    let mtime = filetime::FileTime::from_last_modification_time(&meta);
    let key = vdir.join("kernel").display().to_string();
    std::fs::write(
        vdir.join(".verified.json"),
        json!({"entries": {key: {
            "sha256": sha(&kernel.bytes),
            "size": kernel.bytes.len(),
            "mtime_secs": mtime.unix_seconds(),
            "mtime_nanos": mtime.nanoseconds(),
        }}})
        .to_string(),
    )
    .unwrap();
    let (prepared, status) = host.bootvault_prepare(&origin, "0.6.1");
    let s = &status["kernel"];
    assert_eq!(s.outcome, Outcome::Repaired, "{s:?}");
    assert_eq!(std::fs::read(&prepared.kernel).unwrap(), kernel.bytes);
}

/// The guest rewrites the cached `manifest.json` in the share (other digests, an evil
/// command line). The adapter used to re-read and enforce it.
#[test]
fn regression_a_rewritten_manifest_json_is_fetched_again_or_refused_offline() {
    let origin = Origin::start().unwrap();
    let (_, text) = publish(&origin, V, &[]);
    let host = Host::new();
    host.bootvault_prepare(&origin, V);
    let path = host.cache.join(V).join("manifest.json");
    let evil = text.replace("earlycon", "earlycon init=/bin/evil");
    assert_ne!(evil, text);
    std::fs::write(&path, &evil).unwrap();
    // Offline: refused, naming the manifest and why.
    let err = host
        .bootvault(&origin, V)
        .offline(true)
        .prepare_blocking(None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("manifest.json") && err.contains("changed"),
        "{err}"
    );
    // Online: fetched again from the CDN, and the share's copy put back.
    let (prepared, _) = host.bootvault_prepare(&origin, V);
    assert!(
        !prepared.kernel_cmdline.contains("evil"),
        "{}",
        prepared.kernel_cmdline
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    // A manager that already trusts the good one keeps enforcing it, whatever the share says
    // now; a new one re-checks the file and refuses it offline.
    let m = host.bootvault(&origin, V).offline(true);
    m.prepare_blocking(None).unwrap();
    std::fs::write(&path, &evil).unwrap();
    let (p, _) = m.prepare_blocking(None).unwrap();
    assert!(!p.kernel_cmdline.contains("evil"), "{}", p.kernel_cmdline);
    assert!(!p.manifest.targets["x86_64"].kernel_cmdline.contains("evil"));
    assert!(
        host.bootvault(&origin, V)
            .offline(true)
            .prepare_blocking(None)
            .is_err()
    );
}

#[test]
fn a_same_size_rewrite_with_mtime_restored_after_the_cache_is_rehashed() {
    let origin = Origin::start().unwrap();
    let (files, _) = publish(&origin, V, &[]);
    let host = Host::new();
    arcbox_boot(&origin, V, &host.cache, &host.bin);
    // A guest rewrites two files through the share, same size, and puts the mtime back; the
    // ctime moves past the legacy caches' mtimes. arcbox-boot would trust both.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let targets = ["runc", "kernel"];
    for name in targets {
        let f = files.iter().find(|f| f.name == name).unwrap();
        let p = host.path_of(V, f);
        let meta = std::fs::metadata(&p).unwrap();
        let mut evil = f.bytes.to_vec();
        evil[7] ^= 0x5a;
        std::fs::write(&p, &evil).unwrap();
        filetime::set_file_mtime(&p, filetime::FileTime::from_last_modification_time(&meta))
            .unwrap();
    }
    // The operator trusts arcbox-boot's caches explicitly; the ctime rule still catches both.
    host.bootvault(&origin, V).migrate(&host.bin).unwrap();
    let (_, status) = host.bootvault_prepare(&origin, V);
    for f in x86_files(&files) {
        let s = &status[&f.name];
        if targets.contains(&f.name.as_str()) {
            assert_eq!(s.outcome, Outcome::Repaired, "{}: {s:?}", f.name);
            // Hashed in place (the mismatch), then the download as it was written.
            assert_eq!(s.bytes_hashed, 2 * f.bytes.len() as u64, "{}", f.name);
            assert_eq!(
                std::fs::read(host.path_of(V, f)).unwrap(),
                f.bytes,
                "{}",
                f.name
            );
        } else {
            assert_eq!(s.outcome, Outcome::Cached, "{}: {s:?}", f.name);
            assert_eq!(s.bytes_hashed, 0, "{}", f.name);
        }
    }
}

#[test]
fn migrate_imports_both_caches_and_names_what_it_skipped() {
    let origin = Origin::start().unwrap();
    let (files, _) = publish(&origin, V, &[]);
    let host = Host::new();
    arcbox_boot(&origin, V, &host.cache, &host.bin);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let crun = files.iter().find(|f| f.name == "crun").unwrap();
    let p = host.path_of(V, crun);
    let meta = std::fs::metadata(&p).unwrap();
    std::fs::write(&p, crun.bytes.iter().map(|b| !b).collect::<Vec<_>>()).unwrap();
    filetime::set_file_mtime(&p, filetime::FileTime::from_last_modification_time(&meta)).unwrap();

    let r = run_cmd({
        let mut c = host.arcbox_cmd("migrate");
        c.arg("--json");
        c
    });
    assert_eq!(r.code, 0, "{}", r.describe());
    let v = r.json();
    assert_eq!(
        v["kernel_cmdline"],
        "console=ttyS0 root=/dev/vda ro rootfstype=erofs earlycon"
    );
    let imports = v["imports"].as_array().unwrap();
    assert_eq!(imports.len(), 2, "{v}");
    let boot: Vec<&str> = imports[0]["imported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert_eq!(boot, [format!("{V}/kernel"), format!("{V}/rootfs.erofs")]);
    let share = &imports[1];
    assert_eq!(share["imported"].as_array().unwrap().len(), 19, "{v}");
    let skipped = share["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{v}");
    assert!(skipped[0]["key"].as_str().unwrap().ends_with("/bin/crun"));
    assert!(
        skipped[0]["reason"].as_str().unwrap().contains("ctime"),
        "{v}"
    );
    let states: BTreeMap<&str, &str> = v["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["name"].as_str().unwrap(), a["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states.len(), 22);
    for (name, state) in &states {
        let want = match *name {
            // Re-hashed: the import skipped it.
            "crun" => "unrecorded",
            // Trusted; arcbox-boot left them 0644, a prepare puts 0444 back without reading.
            "kernel" | "rootfs" => "mode",
            _ => "cached",
        };
        assert_eq!(state, &want, "{name}");
    }
    // Migrate fetched nothing (it is offline) and wrote nothing into the share.
    assert_eq!(origin.requests("bin/crun/1.21/x86_64/crun"), 1);
}

#[test]
fn relative_keys_of_a_relative_cache_dir_resolve() {
    // arcbox-boot given relative dirs writes keys relative to its working directory; bootvault,
    // run from elsewhere with absolute dirs, still finds them.
    let origin = Origin::start().unwrap();
    let (files, _) = publish(&origin, V, &[]);
    let host = Host::new();
    // arcbox-boot runs in a child process with its own working directory: this test binary,
    // re-entered through the helper below.
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "arcbox_boot_child",
            "--nocapture",
            "--include-ignored",
        ])
        .env("ARCBOX_CHILD_CDN", origin.base_url())
        .current_dir(&host.dir)
        .status()
        .unwrap();
    assert!(status.success());
    let keys = std::fs::read_to_string(host.cache.join(V).join(".verified.json")).unwrap();
    assert!(keys.contains(&format!("\"boot/{V}/kernel\"")), "{keys}");
    let keys = std::fs::read_to_string(host.bin.join(".verified.json")).unwrap();
    assert!(keys.contains("\"share/kernel/vmlinux\""), "{keys}");

    let migrate = run_cmd({
        let mut c = host.arcbox_cmd("migrate");
        c.current_dir("/");
        c
    });
    assert_eq!(migrate.code, 0, "{}", migrate.describe());
    let before = origin.total_requests();
    let r = run_cmd({
        let mut c = host.arcbox_cmd("prepare");
        c.args(["--json", "--cdn", &origin.base_url()])
            .current_dir("/");
        c
    });
    assert_eq!(r.code, 0, "{}", r.describe());
    let v = r.json();
    let assets = v["assets"].as_array().unwrap();
    assert_eq!(assets.len(), x86_files(&files).len());
    for a in assets {
        assert_eq!(a["outcome"], "cached", "{a}");
        assert_eq!(a["bytes_hashed"], 0, "{a}");
        assert_eq!(a["bytes_downloaded"], 0, "{a}");
    }
    assert_eq!(
        v["kernel_cmdline"],
        "console=ttyS0 root=/dev/vda ro rootfstype=erofs earlycon"
    );
    assert_eq!(origin.total_requests(), before);
}

/// Not a test on its own: the arcbox-boot run of `relative_keys_of_a_relative_cache_dir_resolve`
/// in a child process (relative dirs need a working directory of their own).
#[test]
#[ignore = "run by relative_keys_of_a_relative_cache_dir_resolve in a child process"]
fn arcbox_boot_child() {
    let cdn = std::env::var("ARCBOX_CHILD_CDN").unwrap();
    runtime().block_on(async {
        let m = UpstreamManager::new(UpstreamConfig {
            cdn_base_url: cdn,
            version: V.into(),
            arch: "x86_64".into(),
            cache_dir: PathBuf::from("boot"),
            custom_kernel: None,
        })
        .unwrap();
        m.prepare(None).await.unwrap();
        m.prepare_binaries(Path::new("share/bin"), None)
            .await
            .unwrap();
    });
}

// ---- upgrades -----------------------------------------------------------------------------------

#[test]
fn an_upgrade_keeps_unchanged_binaries_and_fetches_changed_ones() {
    let origin = Origin::start().unwrap();
    publish(&origin, V, &[]);
    let host = Host::new();
    host.bootvault_prepare(&origin, V);
    let changed = ["rootfs", "dockerd", "runc"];
    let (files, _) = publish(&origin, "0.6.1", &changed);
    let (prepared, status) = host.bootvault_prepare(&origin, "0.6.1");
    assert_eq!(prepared.kernel, host.cache.join("0.6.1").join("kernel"));
    for f in x86_files(&files) {
        let s = &status[&f.name];
        match f.kind {
            Kind::Binary if changed.contains(&f.name.as_str()) => {
                assert_eq!(s.outcome, Outcome::Repaired, "{}: {s:?}", f.name)
            }
            Kind::Binary => assert_eq!(s.outcome, Outcome::Cached, "{}: {s:?}", f.name),
            // The new version dir's rootfs changed: fetched.
            Kind::Rootfs => assert_eq!(s.outcome, Outcome::Downloaded, "{}: {s:?}", f.name),
            // Its kernel did not: copied from the previous version dir (one ledger for the
            // whole cache dir), not fetched.
            Kind::Kernel => {
                assert_eq!(s.outcome, Outcome::Linked, "{}: {s:?}", f.name);
                assert_eq!(s.bytes_downloaded, 0);
                assert_eq!(s.bytes_copied, f.bytes.len() as u64);
            }
        }
        assert_eq!(
            std::fs::read(host.path_of("0.6.1", f)).unwrap(),
            f.bytes,
            "{}",
            f.name
        );
    }
    // Only the changed bytes came over the network.
    let changed_bytes: u64 = files
        .iter()
        .filter(|f| changed.contains(&f.name.as_str()))
        .map(|f| f.bytes.len() as u64)
        .sum();
    assert_eq!(totals(&status).1, changed_bytes);
    // The previous version dir is left for the host to drop (as arcbox-boot leaves it).
    assert!(host.cache.join(V).join("kernel").is_file());
}

// ---- manifests ----------------------------------------------------------------------------------

fn parse(text: &str, arch: &str) -> Manifest {
    to_native(text, Some(arch), Some("https://boot.arcboxcdn.com")).unwrap()
}

/// `bootvault prepare`'s reading of an arcbox-format manifest (the arcbox crate's).
fn to_native(
    text: &str,
    arch: Option<&str>,
    base: Option<&str>,
) -> Result<Manifest, bootvault::Error> {
    bootvault_arcbox::native::to_native(text, "m.json", arch, base)
}

#[test]
fn the_real_sample_parses_field_for_field() {
    let text = std::fs::read_to_string(SAMPLE).unwrap();
    // It is arcbox-boot's format: its own type reads it.
    let theirs: upstream::Manifest = serde_json::from_str(&text).unwrap();
    let m = parse(&text, "x86_64");
    assert_eq!(m.version, "0.6.0");
    assert_eq!(m.assets.len(), 22);
    // The host reads the release's fields from the arcbox crate's own serde type.
    let ours: bootvault_arcbox::manifest::Manifest = serde_json::from_str(&text).unwrap();
    assert_eq!(ours.built_at, theirs.built_at);
    assert_eq!(ours.source_sha, theirs.source_sha);
    assert_eq!(ours.source_ref.as_deref(), Some("refs/tags/v0.6.0"));
    assert_eq!(
        ours.targets["x86_64"].kernel.version.as_deref(),
        Some("6.12.40")
    );
    assert_eq!(ours.targets["x86_64"].rootfs.version, None);
    assert_eq!(
        m.kernel_cmdline.as_deref(),
        Some(theirs.targets["x86_64"].kernel_cmdline.as_str())
    );
    let path = |name: &str| m.find(name).unwrap().path.clone();
    assert_eq!(path("kernel"), "boot/0.6.0/kernel");
    assert_eq!(path("rootfs"), "boot/0.6.0/rootfs.erofs");
    assert_eq!(path("vmlinux"), "kernel/vmlinux");
    assert_eq!(path("mkfs.ext4"), "runtime/bin/mkfs.ext4");
    assert_eq!(path("dockerd"), "bin/dockerd");
    assert!(m.find("FEX").is_none(), "arm64 only");
    let k3s = ours.binaries.iter().find(|b| b.name == "k3s").unwrap();
    assert_eq!(k3s.version, "v1.36.2+k3s1");
    for a in &m.assets {
        assert_eq!(a.verify, bootvault::Policy::Cached, "{}", a.name);
    }
    assert_eq!(
        m.find("kernel").unwrap().urls,
        ["https://boot.arcboxcdn.com/asset/v0.6.0/x86_64/kernel"]
    );
    assert_eq!(
        m.find("kernel").unwrap().sha256.to_hex(),
        theirs.targets["x86_64"].kernel.sha256
    );

    let arm = parse(&text, "arm64");
    assert_eq!(arm.assets.len(), 23);
    assert_eq!(arm.find("FEX").unwrap().path, "runtime/bin/FEX");
    assert_eq!(
        arm.kernel_cmdline.as_deref(),
        Some("console=hvc0 root=/dev/vda ro rootfstype=erofs earlycon")
    );
}

/// Adds an unknown field to every object of the arcbox-boot manifest.
fn sprinkle(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (_, x) in o.iter_mut() {
                sprinkle(x);
            }
            o.insert("added_upstream_later".into(), json!({"any": [1, 2]}));
        }
        Value::Array(a) => a.iter_mut().for_each(sprinkle),
        _ => {}
    }
}

#[test]
fn unknown_fields_are_ignored_in_arcbox_format_only() {
    let text = std::fs::read_to_string(SAMPLE).unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    // Targets and binaries[].targets are maps of arch: sprinkling adds an "arch" that is not
    // an object, which arcbox-boot would reject; keep those maps as they are.
    let targets = v["targets"].clone();
    let bin_targets: Vec<Value> = v["binaries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["targets"].clone())
        .collect();
    sprinkle(&mut v);
    for (arch, t) in targets.as_object().unwrap() {
        let mut t = t.clone();
        sprinkle(&mut t);
        v["targets"] = json!({});
        v["targets"][arch] = t;
    }
    for (b, t) in v["binaries"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .zip(bin_targets)
    {
        let mut t = t;
        for (_, e) in t.as_object_mut().unwrap().iter_mut() {
            sprinkle(e);
        }
        b["targets"] = t;
    }
    let with_extra = serde_json::to_string(&v).unwrap();
    assert!(with_extra.matches("added_upstream_later").count() > 40);
    let a = parse(
        &text,
        v["targets"].as_object().unwrap().keys().next().unwrap(),
    );
    let b = parse(
        &with_extra,
        v["targets"].as_object().unwrap().keys().next().unwrap(),
    );
    assert_eq!(a, b);

    // The native format stays strict.
    let native = json!({"version": "1", "assets": [], "added_upstream_later": 1}).to_string();
    let err = Manifest::from_json_str(&native).unwrap_err().to_string();
    assert!(err.contains("added_upstream_later"), "{err}");
}

#[test]
fn required_arcbox_fields_are_required() {
    let text = std::fs::read_to_string(SAMPLE).unwrap();
    for (pointer, field) in [
        ("", "built_at"),
        ("", "asset_version"),
        ("/targets/x86_64", "kernel_cmdline"),
        ("/targets/x86_64", "rootfs"),
        ("/targets/x86_64/kernel", "sha256"),
        ("/binaries/0", "version"),
    ] {
        let mut v: Value = serde_json::from_str(&text).unwrap();
        v.pointer_mut(pointer)
            .unwrap()
            .as_object_mut()
            .unwrap()
            .remove(field);
        // arcbox-boot agrees that it is required.
        assert!(
            serde_json::from_value::<upstream::Manifest>(v.clone()).is_err(),
            "{pointer}/{field}"
        );
        let err = to_native(&v.to_string(), Some("x86_64"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{pointer}/{field}: {err}");
    }
}

#[test]
fn generated_manifests_parse_to_the_same_digests() {
    let files = arcbox_set::files(V, 1000, 2000, 100_000, &[]);
    let text = serde_json::to_string(&upstream_manifest(V, &files)).unwrap();
    let m = parse(&text, "x86_64");
    assert_eq!(m.assets.len(), 22);
    for f in x86_files(&files) {
        let a = m.find(&f.name).unwrap();
        assert_eq!(a.sha256.to_hex(), sha(&f.bytes), "{}", f.name);
        assert_eq!(
            a.urls,
            [format!("https://boot.arcboxcdn.com/{}", f.cdn_path)],
            "{}",
            f.name
        );
    }
}

#[test]
fn a_state_dir_inside_the_share_is_refused() {
    let origin = Origin::start().unwrap();
    publish(&origin, V, &[]);
    let host = Host::new();
    let m = AssetManager::new(AssetManagerConfig {
        cdn_base_url: origin.base_url(),
        version: V.into(),
        arch: "x86_64".into(),
        cache_dir: host.cache.clone(),
        custom_kernel: None,
    })
    .unwrap()
    .with_state_dir(host.share().join(".state"));
    let err = m.prepare_binaries_blocking(&host.bin, None).unwrap_err();
    assert!(
        matches!(err, bootvault_arcbox::Error::StateInShare { .. }),
        "{err}"
    );
    assert!(!host.share().join(".state").exists());
}

#[test]
fn a_custom_kernel_is_used_as_is_and_the_manifest_kernel_is_not_fetched() {
    let origin = Origin::start().unwrap();
    let (files, _) = publish(&origin, V, &[]);
    let host = Host::new();
    let custom = host.dir.join("my-vmlinuz");
    std::fs::write(&custom, b"a kernel of my own").unwrap();
    let config = |kernel: PathBuf| AssetManagerConfig {
        cdn_base_url: origin.base_url(),
        version: V.into(),
        arch: "x86_64".into(),
        cache_dir: host.cache.clone(),
        custom_kernel: Some(kernel),
    };
    let m = AssetManager::new(config(custom.clone()))
        .unwrap()
        .with_state_dir(&host.state);
    let (prepared, status) = m.prepare_blocking(None).unwrap();
    assert_eq!(prepared.kernel, custom);
    assert_eq!(
        status.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["rootfs"]
    );
    let kernel = files.iter().find(|f| f.kind == Kind::Kernel).unwrap();
    assert_eq!(origin.requests(&kernel.cdn_path), 0);
    assert!(!host.cache.join(V).join("kernel").exists());

    let m = AssetManager::new(config(host.dir.clone()))
        .unwrap()
        .with_state_dir(&host.state);
    let err = m.prepare_blocking(None).unwrap_err();
    assert!(
        matches!(&err, bootvault_arcbox::Error::Other(m) if m.contains("custom kernel")),
        "{err}"
    );
}

#[test]
fn an_unsafe_version_is_refused_before_touching_the_disk() {
    for bad in ["", "..", "0.6/0", "0.6.0 rc1"] {
        let err = AssetManager::new(AssetManagerConfig {
            version: bad.into(),
            ..AssetManagerConfig::default()
        })
        .err()
        .unwrap();
        assert!(
            matches!(err, bootvault_arcbox::Error::InvalidConfig(_)),
            "{bad:?}: {err}"
        );
    }
}

#[test]
fn what_arcbox_boot_accepts_is_accepted_and_what_it_rejects_is_rejected() {
    let text = std::fs::read_to_string(SAMPLE).unwrap();
    let base: Value = serde_json::from_str(&text).unwrap();
    type Edit = fn(&mut Value);
    let cases: [(&str, Edit); 12] = [
        ("binaries null", |v| v["binaries"] = Value::Null),
        ("binaries absent", |v| {
            v.as_object_mut().unwrap().remove("binaries");
        }),
        ("other arch without kernel", |v| {
            v["targets"]["arm64"]
                .as_object_mut()
                .unwrap()
                .remove("kernel");
        }),
        ("arm64-only binary without sha256", |v| {
            v["binaries"][20]["targets"]["arm64"]
                .as_object_mut()
                .unwrap()
                .remove("sha256");
        }),
        ("source_repo null", |v| v["source_repo"] = Value::Null),
        ("install_dir null", |v| {
            v["binaries"][16]["install_dir"] = Value::Null
        }),
        ("kernel version null", |v| {
            v["targets"]["x86_64"]["kernel"]["version"] = Value::Null
        }),
        ("negative schema_version", |v| {
            v["schema_version"] = json!(-1)
        }),
        ("built_at a number", |v| v["built_at"] = json!(5)),
        ("legacy runtime entry", |v| {
            v["targets"]["x86_64"]["runtime"] = json!({"path": "r", "sha256": "00"})
        }),
        ("binary targets an array", |v| {
            v["binaries"][3]["targets"] = json!([])
        }),
        ("an unknown top-level field", |v| {
            v["signature"] = json!({"alg": "ed25519"})
        }),
    ];
    for (what, edit) in cases {
        let mut v = base.clone();
        edit(&mut v);
        let upstream_ok = serde_json::from_value::<upstream::Manifest>(v.clone()).is_ok();
        let ours = to_native(&v.to_string(), Some("x86_64"), None);
        assert_eq!(ours.is_ok(), upstream_ok, "{what}: {:?}", ours.err());
    }
}

// ---- the host's own async flow ------------------------------------------------------------------

/// arcbox's daemon awaits `prepare` and `prepare_binaries` on its multi-thread runtime on a
/// fresh install: the manifest is not cached, so it is fetched on that path. It used to build
/// a runtime and `block_on` inside the caller's ("Cannot start a runtime from within a
/// runtime").
#[test]
fn regression_async_prepare_on_a_fresh_install_does_not_panic() {
    let origin = Origin::start().unwrap();
    publish(&origin, V, &[]);
    let host = Host::new();
    let m = host.bootvault(&origin, V);
    runtime().block_on(async {
        let p = m.prepare(None).await.unwrap();
        assert!(p.kernel.is_file());
        m.prepare_binaries(&host.bin, None).await.unwrap();
    });
}
