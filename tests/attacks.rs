//! Each test attempts one attack from SECURITY.md against the real store and shows it fails.

use bootvault::ledger::{Ledger, Method, Record};
use bootvault::stamp::Stamp;
use bootvault::{Error, Manifest, Outcome, Policy, Store};
use bootvault_testkit::demo::{DemoAsset, manifest, pseudo_random, write_all};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

fn asset(name: &str, path: &str, seed: u64) -> DemoAsset {
    DemoAsset {
        name: name.into(),
        path: path.into(),
        bytes: pseudo_random(seed, 64 * 1024).into(),
        verify: Policy::Cached,
        mode: None,
    }
}

fn file_url(p: &Path) -> String {
    url::Url::from_file_path(p).unwrap().to_string()
}

/// Rewrites `path` with other bytes of the same size and puts its mtime back.
fn rewrite_keeping_mtime(path: &Path) {
    let meta = std::fs::metadata(path).unwrap();
    let mut bytes = std::fs::read(path).unwrap();
    bytes[100] ^= 0x55;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(path, &bytes).unwrap();
    filetime::set_file_mtime(path, filetime::FileTime::from_last_modification_time(&meta)).unwrap();
    let after = std::fs::metadata(path).unwrap();
    assert_eq!(after.mtime_nsec(), meta.mtime_nsec());
    assert_eq!(after.size(), meta.size());
}

fn offline(root: &Path) -> Store {
    Store::builder(root).offline(true).open().unwrap()
}

#[test]
fn content_rewritten_with_mtime_restored_is_never_cached() {
    let dir = tempfile::tempdir().unwrap();
    let set = [asset("runc", "bin/runc", 1)];
    write_all(dir.path(), &set).unwrap();
    let m = manifest(&set, "v1", |_| None);
    let store = offline(dir.path());
    store.prepare(&m).unwrap();
    assert!(store.prepare(&m).unwrap().all_cached());
    rewrite_keeping_mtime(&dir.path().join("bin/runc"));
    let report = store.prepare(&m).unwrap();
    assert_eq!(report.assets[0].outcome(), None, "{report:?}");
    let err = report.assets[0].error().map(|e| e.to_string()).unwrap();
    assert!(
        err.contains("runc") && err.contains("sha256 mismatch"),
        "{err}"
    );
}

#[test]
fn same_size_inode_swap_is_never_cached() {
    let dir = tempfile::tempdir().unwrap();
    let set = [asset("kernel", "kernel", 2)];
    write_all(dir.path(), &set).unwrap();
    let m = manifest(&set, "v1", |_| None);
    let store = offline(dir.path());
    store.prepare(&m).unwrap();
    let path = dir.path().join("kernel");
    let meta = std::fs::metadata(&path).unwrap();
    let evil = dir.path().join("evil");
    std::fs::write(&evil, pseudo_random(99, 64 * 1024)).unwrap();
    filetime::set_file_mtime(
        &evil,
        filetime::FileTime::from_last_modification_time(&meta),
    )
    .unwrap();
    std::fs::rename(&evil, &path).unwrap();
    let report = store.prepare(&m).unwrap();
    assert_ne!(report.assets[0].outcome(), Some(Outcome::Cached));
    assert!(
        report.failed(),
        "the swapped content must fail offline: {report:?}"
    );
}

#[test]
fn hard_linked_asset_modified_through_its_other_name_is_never_cached() {
    let dir = tempfile::tempdir().unwrap();
    let set = [asset("rootfs", "rootfs.erofs", 3)];
    write_all(dir.path(), &set).unwrap();
    let m = manifest(&set, "v1", |_| None);
    let store = offline(dir.path());
    store.prepare(&m).unwrap();
    let other = dir.path().join("other-name");
    std::fs::hard_link(dir.path().join("rootfs.erofs"), &other).unwrap();
    rewrite_keeping_mtime(&other);
    let report = store.prepare(&m).unwrap();
    assert!(report.failed(), "{report:?}");
}

#[test]
fn symlink_at_asset_path_is_never_trusted_offline() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let set = [asset("kernel", "kernel", 4)];
    // The symlink points at a file with exactly the right content: still never trusted.
    write_all(outside.path(), &set).unwrap();
    std::os::unix::fs::symlink(outside.path().join("kernel"), dir.path().join("kernel")).unwrap();
    let m = manifest(&set, "v1", |_| None);
    let report = offline(dir.path()).prepare(&m).unwrap();
    let err = report.assets[0]
        .error()
        .map(|e| e.to_string())
        .expect("must fail");
    assert!(err.contains("symlink"), "{err}");
}

#[test]
fn symlink_at_asset_path_is_replaced_atomically_online_and_its_target_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let set = [asset("kernel", "kernel", 5)];
    write_all(src.path(), &set).unwrap();
    let victim = outside.path().join("precious");
    std::fs::write(&victim, b"do not touch").unwrap();
    std::os::unix::fs::symlink(&victim, dir.path().join("kernel")).unwrap();
    let m = manifest(&set, "v1", |a| Some(file_url(&src.path().join(&a.path))));
    let report = Store::open(dir.path()).unwrap().prepare(&m).unwrap();
    assert_eq!(
        report.assets[0].outcome(),
        Some(Outcome::Repaired),
        "{report:?}"
    );
    let placed = std::fs::symlink_metadata(dir.path().join("kernel")).unwrap();
    assert!(placed.file_type().is_file());
    assert_eq!(std::fs::read(&victim).unwrap(), b"do not touch");
}

#[test]
fn symlinked_parent_leading_outside_root_is_refused_and_nothing_is_written_there() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let set = [asset("runc", "bin/runc", 6)];
    write_all(src.path(), &set).unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("bin")).unwrap();
    let m = manifest(&set, "v1", |a| Some(file_url(&src.path().join(&a.path))));
    let report = Store::open(dir.path()).unwrap().prepare(&m).unwrap();
    let err = report.assets[0]
        .error()
        .map(|e| e.to_string())
        .expect("must fail");
    assert!(err.contains("outside ROOT"), "{err}");
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
}

#[test]
fn dot_dot_and_absolute_paths_are_rejected_by_the_manifest() {
    for path in [
        "../etc/passwd",
        "/etc/passwd",
        "bin/../../x",
        "a//b",
        "./a",
        "a\\b",
    ] {
        let text = format!(
            r#"{{"version":"1","assets":[{{"name":"x","path":{path:?},"sha256":"{}"}}]}}"#,
            "0".repeat(64)
        );
        let err = Manifest::from_json_str(&text).unwrap_err();
        assert!(matches!(err, Error::Manifest { .. }), "{path}: {err}");
        assert!(err.to_string().contains("\"path\""), "{path}: {err}");
    }
}

#[test]
fn ledger_forged_inside_root_changes_nothing_when_the_state_dir_is_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let set = [asset("kernel", "kernel", 7)];
    let m = manifest(&set, "v1", |_| None);
    // The guest writes a wrong kernel and forges a ledger inside ROOT vouching for it.
    std::fs::write(dir.path().join("kernel"), pseudo_random(666, 64 * 1024)).unwrap();
    let live = Stamp::of_path(&dir.path().join("kernel")).unwrap().unwrap();
    let forged = Ledger::new(dir.path().join(".bootvault"), dir.path().into());
    let record = Record::new(
        m.assets[0].sha256,
        &live,
        "v1",
        live.ctime_ns + 1_000_000_000,
        Method::Hashed,
        false,
    );
    forged.put("kernel", &record, None).unwrap();
    drop(forged);
    let store = Store::builder(dir.path())
        .state_dir(state.path())
        .offline(true)
        .open()
        .unwrap();
    let report = store.prepare(&m).unwrap();
    assert_ne!(report.assets[0].outcome(), Some(Outcome::Cached));
    assert!(
        report.failed(),
        "the forged kernel must be caught: {report:?}"
    );
    // Why the state dir must be elsewhere: a store that keeps its state inside ROOT would
    // believe the forgery.
    let naive = offline(dir.path()).prepare(&m).unwrap();
    assert_eq!(naive.assets[0].outcome(), Some(Outcome::Cached));
}

#[test]
fn placed_files_are_read_only_and_never_group_or_other_writable() {
    let dir = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let mut set = vec![asset("kernel", "kernel", 8), asset("tool", "bin/tool", 9)];
    set[1].mode = Some(0o777);
    write_all(src.path(), &set).unwrap();
    let m = manifest(&set, "v1", |a| Some(file_url(&src.path().join(&a.path))));
    let report = Store::open(dir.path()).unwrap().prepare(&m).unwrap();
    assert!(!report.failed(), "{report:?}");
    let mode = |p: &str| {
        std::fs::metadata(dir.path().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("kernel"), 0o444);
    assert_eq!(mode("bin/tool"), 0o755);
}

#[test]
fn verified_handle_reads_the_verified_inode_even_after_a_swap() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let mut set = [asset("kernel", "kernel", 10)];
    set[0].verify = Policy::Always;
    write_all(dir.path(), &set).unwrap();
    let m = manifest(&set, "v1", |_| None);
    let store = offline(dir.path());
    store.prepare(&m).unwrap();
    let mut handle = store.open_verified(&m.assets[0]).unwrap();
    assert!(
        handle.rehashed,
        "verify: always hashes through the descriptor"
    );
    std::fs::remove_file(dir.path().join("kernel")).unwrap();
    std::fs::write(dir.path().join("kernel"), b"evil").unwrap();
    let mut bytes = Vec::new();
    handle.file.read_to_end(&mut bytes).unwrap();
    assert_eq!(bytes.as_slice(), &set[0].bytes[..]);
    // And a tampered file is refused outright.
    let err = store.open_verified(&m.assets[0]).unwrap_err();
    assert!(err.to_string().contains("mismatch"), "{err}");
}

#[test]
fn parent_swapped_for_a_symlink_after_the_check_cannot_redirect_placement() {
    // The race: the path is checked, then a parent directory is replaced by a symlink leading
    // out of ROOT before the verified file is renamed in. Placement walks the parents again
    // with O_NOFOLLOW and renames against the directory it opened, so the write is refused.
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir_in(dir.path()).unwrap();
    std::fs::create_dir(dir.path().join("bin")).unwrap();
    bootvault::place::resolve(dir.path(), "bin/runc", "runc").expect("the check passes");
    std::fs::remove_dir(dir.path().join("bin")).unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("bin")).unwrap();
    let bytes = pseudo_random(11, 4096);
    let src = state.path().join("runc.part");
    std::fs::write(&src, &bytes).unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&src)
        .unwrap();
    let digest = bootvault::Sha256Digest::of(&bytes);
    let err = bootvault::place::place(&src, &file, dir.path(), "bin/runc", 0o444, &digest, "runc")
        .expect_err("placement through an escaping parent must fail");
    assert!(matches!(err, Error::UnsafePath { .. }), "{err}");
    assert_eq!(
        std::fs::read_dir(outside.path()).unwrap().count(),
        0,
        "nothing written outside ROOT"
    );
}
