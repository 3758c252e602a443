//! The library as a host links it: unsafe paths through every public way of building an asset,
//! cancellation of a prepare mid-download and its resume, copies by digest (`linked`), modes
//! put back, trust moved onto a fresh inode, and typed per-asset errors.

#[path = "common/shared.rs"]
mod common;

use bootvault::{
    Action, Asset, AssetPath, CancelToken, Error, Manifest, Outcome, ParseOptions, Policy,
    PrepareOptions, Progress, Sha256Digest, Store,
};
use bootvault_testkit::origin::Origin;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

fn code_asset(name: &str, path: &str, bytes: &[u8], urls: Vec<String>) -> Asset {
    Asset::new(name, AssetPath::new(path).unwrap(), Sha256Digest::of(bytes))
        .unwrap()
        .size(bytes.len() as u64)
        .urls(urls)
        .verify(Policy::Cached)
}

fn code_manifest(assets: Vec<Asset>) -> Manifest {
    Manifest::new("v1", assets).unwrap()
}

/// Every file under `dir`, recursively (to show nothing was written there).
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

#[test]
fn unsafe_paths_are_refused_through_every_constructor_and_nothing_escapes_root() {
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("root");
    let outside = base.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let src = tempfile::tempdir().unwrap();
    let bytes = blob(1, 4096);
    std::fs::write(src.path().join("k"), &bytes).unwrap();
    let url = file_url(&src.path().join("k"));
    let escapes = [
        "../outside/escaped",
        "/tmp/abs-escaped",
        "a/../../outside/x",
        "./k",
    ];

    // 1. Parsed manifests (native JSON, by string and by file): refused as bad input.
    for p in escapes {
        let text = serde_json::json!({"version": "v1", "assets": [
            {"name": "k", "path": p, "sha256": sha(&bytes), "urls": [url]}]})
        .to_string();
        let err = Manifest::from_json_str(&text).unwrap_err();
        assert!(matches!(err, Error::Manifest { .. }), "{p}: {err}");
        let f = base.path().join("m.json");
        std::fs::write(&f, &text).unwrap();
        assert!(
            Manifest::from_file(&f, &ParseOptions::default()).is_err(),
            "{p}"
        );
    }

    // 2. Assets built in code: an unsafe path cannot be built (an asset's path is an
    //    `AssetPath`, refused as `validate_path` refuses it, by hand or deserialized); a
    //    manifest made inconsistent through its public fields (two assets at one path, a path
    //    inside another's) is revalidated by the store before any file operation.
    let store = Store::open(&root).unwrap();
    for p in escapes {
        let why = AssetPath::new(p).unwrap_err();
        assert!(
            matches!(&why, Error::InvalidPath { path, .. } if path == p),
            "{p}: {why:?}"
        );
        let why = why.to_string();
        assert_eq!(
            why,
            bootvault::validate_path(p).unwrap_err().to_string(),
            "{p}"
        );
        let err = serde_json::from_value::<AssetPath>(serde_json::json!(p)).unwrap_err();
        assert!(err.to_string().contains(&why), "{p}: {err}");
    }
    let mut m = code_manifest(vec![code_asset("k", "k", &bytes, vec![url.clone()])]);
    m.assets.push(m.assets[0].clone());
    m.assets[1].name = "k2".into();
    for p in ["k", "k/inside"] {
        m.assets[1].path = AssetPath::new(p).unwrap();
        let err = store.prepare(&m).unwrap_err();
        assert!(matches!(err, Error::Manifest { .. }), "{p}: {err}");
        assert!(err.to_string().contains("asset k2"), "{err}");
    }

    // 3. A valid path through a symlinked parent that leads outside ROOT: the asset fails.
    std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
    let m = code_manifest(vec![code_asset("k", "link/k", &bytes, vec![url.clone()])]);
    let report = store.prepare(&m).unwrap();
    let err = report.assets[0].error().expect("must fail");
    assert!(matches!(err, Error::UnsafePath { .. }), "{err}");
    assert!(err.to_string().contains("outside ROOT"), "{err}");

    assert!(
        files_under(&outside).is_empty(),
        "{:?}",
        files_under(&outside)
    );
    assert!(!Path::new("/tmp/abs-escaped").exists());
}

#[test]
fn per_asset_errors_are_typed() {
    let root = tempfile::tempdir().unwrap();
    let good = blob(2, 2048);
    let bad = blob(3, 2048);
    std::fs::write(root.path().join("wrong"), &bad).unwrap();
    let m = code_manifest(vec![
        code_asset("absent", "absent", &good, vec![]),
        code_asset("wrong", "wrong", &good, vec![]),
        code_asset(
            "unreachable",
            "unreachable",
            &good,
            vec!["http://127.0.0.1:9/x".into()],
        ),
    ]);
    let store = Store::builder(root.path())
        .fetch_options({
            let mut o = bootvault::FetchOptions::default();
            o.retries = 0;
            o
        })
        .open()
        .unwrap();
    let report = store.prepare(&m).unwrap();
    assert!(matches!(
        report.asset("absent").unwrap().error(),
        Some(Error::Missing { .. })
    ));
    match report.asset("wrong").unwrap().error() {
        Some(Error::Mismatch {
            expected, actual, ..
        }) => {
            assert_eq!(*expected, Sha256Digest::of(&good));
            assert_eq!(*actual, Sha256Digest::of(&bad));
        }
        other => panic!("{other:?}"),
    }
    match report.asset("unreachable").unwrap().error() {
        Some(Error::Fetch { name, attempts }) => {
            assert_eq!(name, "unreachable");
            assert_eq!(attempts.len(), 1);
            assert_eq!(attempts[0].url.as_deref(), Some("http://127.0.0.1:9/x"));
            // The URL is named once, by the attempt, not again by its reason.
            assert!(
                !attempts[0].reason.contains("127.0.0.1:9/x"),
                "{attempts:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    // The report serializes in the contract's shape.
    let v = serde_json::to_value(&report).unwrap();
    assert_eq!(v["assets"][1]["outcome"], "failed");
    assert_eq!(v["assets"][1]["error_kind"], "mismatch");
}

#[test]
fn a_missing_root_is_created_and_a_file_root_is_refused_at_open() {
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("new/root");
    Store::open(&root).unwrap();
    assert!(root.is_dir());
    let file = base.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let err = Store::open(&file).unwrap_err();
    assert!(matches!(err, Error::Store { .. }), "{err}");
    let err = Store::builder(base.path().join("absent"))
        .create(false)
        .open()
        .unwrap_err();
    assert!(matches!(err, Error::Store { .. }), "{err}");
    assert!(!base.path().join("absent").exists());
}

/// A tokio host about to download one asset `name` of `bytes`, served at `rate` bytes/s:
/// the origin, ROOT, the manifest, the store and the host's runtime.
fn slow_download(
    name: &str,
    bytes: &[u8],
    rate: usize,
) -> (
    Origin,
    tempfile::TempDir,
    Manifest,
    Store,
    tokio::runtime::Runtime,
) {
    let origin = Origin::start().unwrap();
    serve_faulty(&origin, name, bytes, throttled(rate));
    let root = tempfile::tempdir().unwrap();
    let m = code_manifest(vec![code_asset(name, name, bytes, vec![origin.url(name)])]);
    let store = Store::open(root.path()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    (origin, root, m, store, rt)
}

#[test]
fn cancelling_a_prepare_mid_download_keeps_a_partial_that_the_next_prepare_resumes() {
    let bytes = blob(4, 4 << 20);
    let (origin, root, m, store, rt) = slow_download("rootfs", &bytes, 2 << 20);
    let token = CancelToken::new();
    let seen = Arc::new(AtomicU64::new(0));
    let (seen2, token2) = (seen.clone(), token.clone());
    let progress: bootvault::ProgressFn = Arc::new(move |p: &Progress<'_>| {
        if let Progress::Downloading { done, .. } = p {
            seen2.store(*done, Ordering::SeqCst);
            if *done >= 1 << 20 {
                token2.cancel();
            }
        }
    });
    let opts = PrepareOptions::new().progress(progress).cancel(token);
    let report = rt.block_on(store.prepare_async(&m, opts)).unwrap();
    let err = report.assets[0].error().expect("cancelled");
    assert!(matches!(err, Error::Cancelled { .. }), "{err}");
    let cut = seen.load(Ordering::SeqCst);
    assert!(cut >= 1 << 20 && cut < bytes.len() as u64, "cut at {cut}");
    assert!(!root.path().join("rootfs").exists(), "a partial was placed");

    // The next prepare resumes: it downloads only what is left.
    origin.clear_fault("rootfs");
    let again = rt
        .block_on(store.prepare_async(&m, PrepareOptions::new()))
        .unwrap();
    let a = &again.assets[0];
    assert_eq!(a.outcome(), Some(Outcome::Downloaded), "{:?}", a.error());
    assert!(
        a.bytes_downloaded < bytes.len() as u64 - (1 << 19),
        "downloaded {} of {} again",
        a.bytes_downloaded,
        bytes.len()
    );
    assert_eq!(
        Sha256Digest::of(&std::fs::read(root.path().join("rootfs")).unwrap()),
        Sha256Digest::of(&bytes)
    );
    assert!(origin.range_requests("rootfs") >= 1);
}

#[test]
fn dropping_the_prepare_future_cancels_the_download() {
    let bytes = blob(5, 8 << 20);
    let (origin, root, m, store, rt) = slow_download("big", &bytes, 1 << 20);
    rt.block_on(async {
        let r = tokio::time::timeout(
            std::time::Duration::from_millis(700),
            store.prepare_async(&m, PrepareOptions::new()),
        )
        .await;
        assert!(r.is_err(), "an 8 MiB download at 1 MiB/s finished in 0.7 s");
    });
    // The worker stops promptly: the served byte count stops growing.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let a = origin.bytes_served("big");
    std::thread::sleep(std::time::Duration::from_millis(600));
    let b = origin.bytes_served("big");
    assert_eq!(a, b, "the download went on after the future was dropped");
    assert!(b < bytes.len() as u64);
    assert!(!root.path().join("big").exists());
}

#[test]
fn an_absent_asset_is_copied_from_a_verified_file_with_the_same_digest() {
    let root = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let kernel = blob(6, 64 << 10);
    std::fs::write(src.path().join("kernel"), &kernel).unwrap();
    let v1 = code_manifest(vec![code_asset(
        "kernel",
        "0.6.0/kernel",
        &kernel,
        vec![file_url(&src.path().join("kernel"))],
    )]);
    let store = Store::open(root.path()).unwrap();
    assert_eq!(
        store.prepare(&v1).unwrap().assets[0].outcome(),
        Some(Outcome::Downloaded)
    );
    // The next version moves the same kernel; its only URL does not answer.
    let mut v2 = code_manifest(vec![code_asset(
        "kernel",
        "0.7.0/kernel",
        &kernel,
        vec!["http://127.0.0.1:9/kernel".into()],
    )]);
    v2.version = "v2".into();
    let plan = store.plan(&v2, &PrepareOptions::new()).unwrap();
    assert!(
        matches!(&plan.steps[0].action, Action::Link { from } if from.ends_with("0.6.0/kernel")),
        "{plan:?}"
    );
    let report = store.prepare(&v2).unwrap();
    let a = &report.assets[0];
    assert_eq!(a.outcome(), Some(Outcome::Linked), "{:?}", a.error());
    assert_eq!(a.bytes_downloaded, 0);
    assert_eq!(a.bytes_copied, kernel.len() as u64);
    assert!(std::fs::read(root.path().join("0.7.0/kernel")).unwrap() == kernel);
    // Its own inode, recorded: the next prepare trusts it without reading.
    assert!(store.prepare(&v2).unwrap().all_cached());
    let (records, _) = store.records();
    let copied = records.iter().find(|(k, _)| k == "0.7.0/kernel").unwrap();
    assert_eq!(copied.1.method.as_str(), "copied");
}

#[test]
fn a_drifted_mode_is_put_back_without_reading_the_content() {
    let root = tempfile::tempdir().unwrap();
    let bytes = blob(7, 8192);
    let path = root.path().join("kernel");
    std::fs::write(&path, &bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    // An arcbox-boot cache vouches for the file as it is (0644), as its importer records it.
    let mtime = std::fs::metadata(&path).unwrap();
    let legacy = serde_json::json!({"entries": {path.display().to_string(): {
        "sha256": sha(&bytes), "size": bytes.len(),
        "mtime_secs": std::os::unix::fs::MetadataExt::mtime(&mtime),
        "mtime_nanos": std::os::unix::fs::MetadataExt::mtime_nsec(&mtime)}}});
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(root.path().join(".verified.json"), legacy.to_string()).unwrap();
    let m = code_manifest(vec![code_asset("kernel", "kernel", &bytes, vec![])]);
    let store = Store::open(root.path()).unwrap();
    // The operator trusts that cache explicitly (nothing in ROOT is imported on its own).
    store
        .import_legacy(&root.path().join(".verified.json"))
        .unwrap();
    let report = store.prepare(&m).unwrap();
    let a = &report.assets[0];
    assert_eq!(a.outcome(), Some(Outcome::Cached), "{:?}", a.error());
    assert_eq!(a.bytes_hashed, 0, "the content was read");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o444, "mode not put back");
    // The record was re-stamped after the chmod (which moved ctime): still trusted.
    let again = store.prepare(&m).unwrap();
    assert!(again.all_cached(), "{again:?}");
    assert_eq!(again.assets[0].bytes_hashed, 0);
}

/// The mmap attack: a shared writable mapping dirtied before verification, written through
/// again after it (no new fault, so no mtime/ctime change). Run on each way of adopting: with
/// leases allowed (the mapping keeps the file open for writing, so the lease is refused and
/// the file is reflinked or copied) and with the copy forced.
fn mapping_attack(by_copy: bool) -> String {
    use rustix::mm::{MapFlags, ProtFlags, mmap, munmap};
    let root = tempfile::tempdir().unwrap();
    let bytes = blob(8, 16384);
    let path = root.path().join("rootfs");
    std::fs::write(&path, &bytes).unwrap();
    let m = code_manifest(vec![code_asset("rootfs", "rootfs", &bytes, vec![])]);
    // The attacker maps the file shared and dirties a page (same content) before verification.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let len = bytes.len();
    // SAFETY: a fresh shared mapping of a file we own, unmapped below.
    let map = unsafe {
        mmap(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED,
            &f,
            0,
        )
        .unwrap()
    };
    let page = map as *mut u8;
    // SAFETY: within the mapping.
    unsafe { *page = bytes[0] };
    let store = Store::builder(root.path())
        .adopt_by_copy(by_copy)
        .open()
        .unwrap();
    let first = store.prepare(&m).unwrap();
    assert_eq!(first.assets[0].outcome(), Some(Outcome::Verified));
    // Now write through the same mapping: no new fault, so no mtime/ctime change on that inode.
    // SAFETY: within the mapping.
    unsafe { *page = bytes[0] ^ 0xff };
    // SAFETY: unmapping what was mapped above.
    unsafe { munmap(map, len).unwrap() };
    drop(f);
    // The trusted file is a fresh inode bootvault made: the write went to the old one.
    assert_eq!(
        Sha256Digest::of(&std::fs::read(&path).unwrap()),
        Sha256Digest::of(&bytes),
        "the write through the old mapping changed the trusted file"
    );
    let again = store.prepare(&m).unwrap();
    assert_eq!(again.assets[0].outcome(), Some(Outcome::Cached));
    let verify = store.verify_all(&m);
    assert!(
        matches!(verify[0].2, bootvault::VerifyState::Ok(_)),
        "{:?}",
        verify[0].2
    );
    first.assets[0].reason.clone()
}

#[test]
fn a_write_through_a_mapping_taken_before_verification_never_reaches_the_trusted_file() {
    let reason = mapping_attack(false);
    assert!(!reason.contains("adopted in place"), "{reason}");
    if bootvault::PLATFORM_FAMILY == "linux" {
        // The writable mapping is a writer: the lease is refused for that reason.
        assert!(reason.contains("open for writing elsewhere"), "{reason}");
    }
}

#[test]
fn the_mapping_attack_also_fails_on_the_forced_copy_path() {
    let reason = mapping_attack(true);
    assert!(reason.contains("leases not used"), "{reason}");
    assert!(reason.contains("onto a fresh inode"), "{reason}");
}

/// Leases are a Linux family feature, granted only where enabled and to the file's owner (or
/// CAP_LEASE): the tests that need one say so when the machine cannot give it.
fn leases_work(dir: &Path) -> bool {
    let probe = dir.join("lease-probe");
    std::fs::write(&probe, b"x").unwrap();
    let f = std::fs::File::open(&probe).unwrap();
    // SAFETY: fcntl on a descriptor we own; F_SETLEASE = 1024, F_UNLCK = 2, F_RDLCK = 0.
    let ok = unsafe { libc_fcntl(&f, 1024, 0) == 0 };
    // SAFETY: as above.
    unsafe { libc_fcntl(&f, 1024, 2) };
    std::fs::remove_file(&probe).unwrap();
    ok
}

unsafe extern "C" {
    fn fcntl(fd: i32, cmd: i32, ...) -> i32;
}

unsafe fn libc_fcntl(f: &std::fs::File, cmd: i32, arg: i32) -> i32 {
    use std::os::fd::AsRawFd;
    // SAFETY: the caller passes a command whose argument is an int.
    unsafe { fcntl(f.as_raw_fd(), cmd, arg) }
}

#[test]
fn a_file_nobody_holds_for_writing_is_adopted_in_place_under_a_lease() {
    let root = tempfile::tempdir().unwrap();
    if bootvault::PLATFORM_FAMILY != "linux" || !leases_work(root.path()) {
        eprintln!("no read leases here: the copy path is covered by the mapping attack tests");
        return;
    }
    let bytes = blob(21, 300_000);
    let path = root.path().join("kernel");
    std::fs::write(&path, &bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap());
    let m = code_manifest(vec![code_asset("kernel", "kernel", &bytes, vec![])]);
    let store = Store::open(root.path()).unwrap();
    // The plan (`prepare --dry-run`, `debug why`) says how an unrecorded file will be adopted.
    let plan = store.plan(&m, &PrepareOptions::new()).unwrap();
    assert!(
        plan.steps[0].reason().contains("read lease"),
        "{}",
        plan.steps[0].reason()
    );
    let first = store.prepare(&m).unwrap();
    let a = &first.assets[0];
    assert_eq!(a.outcome(), Some(Outcome::Verified), "{:?}", a.error());
    assert!(a.reason.contains("adopted in place"), "{}", a.reason);
    // And the event `debug why` prints says which way was taken.
    let events = store.ledger().events(Some("kernel"), 5);
    assert!(
        events[0].reason.contains("adopted in place: a read lease"),
        "{:?}",
        events[0]
    );
    assert_eq!(a.bytes_copied, 0);
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&meta),
        ino,
        "the file was replaced"
    );
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o444,
        "manifest mode not applied"
    );
    let again = store.prepare(&m).unwrap();
    assert!(again.all_cached(), "{again:?}");
    // A writer after adoption moves the stamp: the next look hashes again and repairs nothing
    // it cannot (no URL) but never trusts the changed bytes.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut w = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::io::Write::write_all(&mut w, b"evil").unwrap();
    drop(w);
    let after = store.prepare(&m).unwrap();
    assert!(after.assets[0].result.is_err(), "{after:?}");
}

#[test]
fn a_writer_opening_the_file_during_the_hash_breaks_the_lease_and_the_file_is_copied() {
    let root = tempfile::tempdir().unwrap();
    if bootvault::PLATFORM_FAMILY != "linux" || !leases_work(root.path()) {
        eprintln!("no read leases here: the copy path is covered by the mapping attack tests");
        return;
    }
    let bytes = blob(22, 8 << 20);
    let path = root.path().join("rootfs");
    std::fs::write(&path, &bytes).unwrap();
    let m = code_manifest(vec![code_asset("rootfs", "rootfs", &bytes, vec![])]);
    // On the first progress of the hash, a writer opens the file: its open starts the lease
    // break and waits for the lease to go. It writes only after the prepare (through the
    // descriptor it got), so the fallback copy is deterministic.
    let started = Arc::new(std::sync::Once::new());
    type Writer = Option<(std::thread::JoinHandle<()>, std::sync::mpsc::Sender<()>)>;
    let writer: Arc<std::sync::Mutex<Writer>> = Arc::default();
    let (p, s, w) = (path.clone(), started.clone(), writer.clone());
    let progress: bootvault::ProgressFn = Arc::new(move |ev: &bootvault::Progress<'_>| {
        if matches!(ev, bootvault::Progress::Verifying { .. }) {
            s.call_once(|| {
                let p = p.clone();
                let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
                let handle = std::thread::spawn(move || {
                    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
                    go_rx.recv().unwrap();
                    std::os::unix::fs::FileExt::write_at(&f, b"evil", 0).unwrap();
                });
                *w.lock().unwrap() = Some((handle, go_tx));
                // Give the writer time to reach its open and start the lease break.
                std::thread::sleep(std::time::Duration::from_millis(200));
            });
        }
    });
    let store = Store::open(root.path()).unwrap();
    let report = store
        .prepare_with(&m, &PrepareOptions::new().progress(progress))
        .unwrap();
    let (handle, go) = writer.lock().unwrap().take().unwrap();
    go.send(()).unwrap();
    handle.join().unwrap();
    let a = &report.assets[0];
    assert_eq!(a.outcome(), Some(Outcome::Verified), "{:?}", a.error());
    assert!(
        a.reason.contains("a writer opened the file"),
        "{}",
        a.reason
    );
    assert!(a.reason.contains("onto a fresh inode"), "{}", a.reason);
    assert_eq!(
        Sha256Digest::of(&std::fs::read(&path).unwrap()),
        Sha256Digest::of(&bytes),
        "the writer's bytes reached the trusted file"
    );
}

#[test]
fn a_subset_of_assets_is_prepared_alone() {
    let root = tempfile::tempdir().unwrap();
    let a = blob(9, 1000);
    let b = blob(10, 1000);
    std::fs::write(root.path().join("a"), &a).unwrap();
    let m = code_manifest(vec![
        code_asset("a", "a", &a, vec![]),
        code_asset("b", "b", &b, vec![]),
    ]);
    let store = Store::open(root.path()).unwrap();
    let report = store
        .prepare_with(&m, &PrepareOptions::new().only(["a"]))
        .unwrap();
    assert_eq!(report.assets.len(), 1);
    assert_eq!(report.assets[0].outcome(), Some(Outcome::Verified));
    let err = store
        .prepare_with(&m, &PrepareOptions::new().only(["nope"]))
        .unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn store_is_clone_send_sync_and_debug() {
    fn assert_traits<T: Clone + Send + Sync + std::fmt::Debug>() {}
    assert_traits::<Store>();
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let text = format!("{store:?}");
    assert!(text.contains("Store") && text.contains("root"), "{text}");
}

/// A pid that belonged to a process that has exited.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

/// Issue: partials of killed processes survived later prepares and `gc --dry-run` reported
/// none (their asset was still in the manifest). A partial of an asset that is ready will
/// never be resumed: gc reports it, and the prepare that makes the asset ready drops it.
#[test]
fn regression_orphaned_partials_of_ready_assets_are_collected() {
    let root = tempfile::tempdir().unwrap();
    let bytes = blob(11, 4096);
    std::fs::write(root.path().join("kernel"), &bytes).unwrap();
    let m = code_manifest(vec![code_asset("kernel", "kernel", &bytes, vec![])]);
    let tmp = root.path().join(".bootvault/tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let key = bootvault::lock::file_key("kernel");
    let orphan = tmp.join(format!("{key}.{}.part", dead_pid()));
    std::fs::write(&orphan, &bytes[..1000]).unwrap();
    let store = Store::open(root.path()).unwrap();

    // The prepare that verifies the asset drops the orphan.
    assert_eq!(
        store.prepare(&m).unwrap().assets[0].outcome(),
        Some(Outcome::Verified)
    );
    assert!(!orphan.exists(), "the orphan survived the prepare");

    // One left behind for an asset that is ready: gc reports it and removes it.
    std::fs::write(&orphan, &bytes[..1000]).unwrap();
    let dry = store.gc(&m, true).unwrap();
    assert_eq!(dry.partials.len(), 1, "{dry:?}");
    assert!(orphan.exists());
    store.gc(&m, false).unwrap();
    assert!(!orphan.exists());
}

/// Issue: with `--state-dir` equal to ROOT, an asset at `ledger.redb` replaced the ledger and
/// one at `tmp/x` landed in the state's tmp. No asset may live inside the state dir, wherever
/// it is; nothing is written.
#[test]
fn regression_no_asset_may_live_inside_the_state_dir() {
    let root = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let bytes = blob(12, 1000);
    std::fs::write(src.path().join("x"), &bytes).unwrap();
    let url = file_url(&src.path().join("x"));
    for (state, path) in [
        (root.path().to_path_buf(), "ledger.redb"),
        (root.path().to_path_buf(), "tmp/x"),
        (root.path().join("var/state"), "var/state/ledger.redb"),
        (root.path().join("var/state"), "var"),
    ] {
        let store = Store::builder(root.path())
            .state_dir(&state)
            .open()
            .unwrap();
        let m = code_manifest(vec![code_asset("x", path, &bytes, vec![url.clone()])]);
        let err = store.prepare(&m).unwrap_err();
        assert!(
            matches!(err, Error::Store { .. } | Error::Manifest { .. })
                && err.to_string().contains("state dir"),
            "{path}: {err}"
        );
        assert!(!root.path().join(path).exists(), "{path} was written");
    }
}

/// A process killed between linking a placement's temp name and the rename leaves
/// `.bootvault-<pid>-<random>.tmp` beside the asset: the next prepare that places into that
/// directory removes it, and `gc` removes any left in the directories the store places into.
/// Elsewhere in the tree such a name is someone else's file: kept (issue 15). A live
/// process's temp stays.
#[test]
fn temp_names_of_killed_placements_are_swept() {
    let root = tempfile::tempdir().unwrap();
    let lib = root.path().join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    let a = blob(13, 2000);
    std::fs::write(lib.join("a"), &a).unwrap();
    let dead = lib.join(format!(".bootvault-{}-00000000000000aa.tmp", dead_pid()));
    let live = lib.join(format!(
        ".bootvault-{}-00000000000000bb.tmp",
        std::process::id()
    ));
    std::fs::write(&dead, b"x").unwrap();
    std::fs::write(&live, b"x").unwrap();
    let store = Store::open(root.path()).unwrap();
    let m = code_manifest(vec![code_asset("a", "lib/a", &a, vec![])]);
    assert_eq!(
        store.prepare(&m).unwrap().assets[0].outcome(),
        Some(Outcome::Verified)
    );
    assert!(!dead.exists(), "the dead placement's temp survived");
    assert!(live.exists(), "a live process's temp was removed");

    // gc, in the asset's directory, and elsewhere in the tree.
    let dead2 = lib.join(format!(".bootvault-{}-00000000000000cc.tmp", dead_pid()));
    std::fs::write(&dead2, b"x").unwrap();
    let other = root.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let foreign = other.join(format!(".bootvault-{}-00000000000000dd.tmp", dead_pid()));
    std::fs::write(&foreign, b"x").unwrap();
    let report = store.gc(&m, false).unwrap();
    assert!(!dead2.exists(), "{report:?}");
    assert!(
        report.partials.iter().any(|p| p.ends_with("cc.tmp")),
        "{report:?}"
    );
    assert!(foreign.exists(), "{report:?}");
    assert!(
        report.foreign.iter().any(|p| p.ends_with("dd.tmp")),
        "{report:?}"
    );
    std::fs::remove_file(&live).unwrap();
}

/// CI's second pass selects the portable family with the `__portable` feature; this proves the
/// feature reaches the library (a pass that silently ran the Linux paths twice would fail here).
#[test]
fn the_platform_family_is_the_one_the_build_selected() {
    let expected = if cfg!(all(
        target_os = "linux",
        not(any(bootvault_portable, feature = "__portable"))
    )) {
        "linux"
    } else {
        "portable"
    };
    assert_eq!(bootvault::PLATFORM_FAMILY, expected);
}

/// The blocking entry points that run a future on the library's runtime, called from an async
/// task (current-thread and multi-thread hosts): an error that names the reason, never a panic
/// (tokio's "Cannot start a runtime from within a runtime"). From `spawn_blocking` they work.
#[test]
fn blocking_calls_inside_an_async_task_are_refused_and_work_from_spawn_blocking() {
    let origin = Origin::start().unwrap();
    origin.add("doc", b"hello".to_vec().into());
    let url = origin.url("doc");
    let root = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(root.path()).unwrap());
    const WHY: &str = "blocking call inside an async task";
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for rt in [&multi, &current] {
        // In the runtime's block_on future, and in a spawned task.
        let refused = move |store: &Store, url: &str| {
            let err = store.fetch_document(url, 1 << 10).unwrap_err();
            assert!(err.to_string().contains(WHY), "{err}");
            let opts = bootvault::FetchOptions::default();
            let parse = |t: &str, o: &str| Manifest::parse(t, o, &ParseOptions::default());
            let err = bootvault::oci::load_manifest(url, &opts, &[], &parse).unwrap_err();
            assert!(err.to_string().contains(WHY), "{err}");
        };
        rt.block_on(async { refused(&store, &url) });
        let (s, u) = (store.clone(), url.clone());
        rt.block_on(rt.spawn(async move { refused(&s, &u) }))
            .unwrap();
        // The async API and the blocking pool are the ways in.
        let got = rt
            .block_on(store.fetch_document_async(&url, 1 << 10))
            .unwrap();
        assert_eq!(got, b"hello");
        let (s, u) = (store.clone(), url.clone());
        let got = rt
            .block_on(rt.spawn_blocking(move || s.fetch_document(&u, 1 << 10)))
            .unwrap()
            .unwrap();
        assert_eq!(got, b"hello");
    }
    // `block_in_place` (multi-thread runtimes only) is a host's other documented way to call
    // blocking code from a task: it must work too, not be refused as an async context.
    let (s, u) = (store.clone(), url.clone());
    let got =
        multi
            .block_on(multi.spawn(async move {
                tokio::task::block_in_place(|| s.fetch_document(&u, 1 << 10))
            }))
            .unwrap()
            .unwrap();
    assert_eq!(got, b"hello");
    // And on a plain thread, as before.
    assert_eq!(store.fetch_document(&url, 1 << 10).unwrap(), b"hello");
}
