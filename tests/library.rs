//! Library-level tests: threads sharing a store, the async entry point, the racy rule on
//! freshly written files, and the warm path leaving the ledger untouched.

use bootvault::{Outcome, Policy, Store};
use bootvault_testkit::demo::{DemoAsset, manifest, pseudo_random, write_all};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

fn small_set(n: usize, prefix: &str) -> Vec<DemoAsset> {
    (0..n)
        .map(|i| DemoAsset {
            name: format!("{prefix}{i}"),
            path: format!("{prefix}/{i}.bin"),
            bytes: pseudo_random(i as u64 + 7, 4096 + i * 1000).into(),
            verify: Policy::Cached,
            mode: None,
        })
        .collect()
}

#[test]
fn threads_with_their_own_store_handles_lose_no_record() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let sets: Vec<_> = (0..8).map(|t| small_set(5, &format!("t{t}"))).collect();
    for set in &sets {
        write_all(&root, set).unwrap();
    }
    std::thread::scope(|s| {
        for set in &sets {
            let root = root.clone();
            s.spawn(move || {
                let store = Store::builder(&root).jobs(2).open().unwrap();
                let report = store.prepare(&manifest(set, "v1", |_| None)).unwrap();
                assert!(!report.failed(), "{report:?}");
            });
        }
    });
    let store = Store::open(&root).unwrap();
    let (records, _) = store.ledger().all();
    assert_eq!(records.len(), 40, "every thread's records survive");
    // And a second pass over everything is warm.
    for set in &sets {
        let report = store.prepare(&manifest(set, "v1", |_| None)).unwrap();
        assert!(report.all_cached(), "{report:?}");
    }
}

#[test]
fn one_store_shared_by_threads() {
    let dir = tempfile::tempdir().unwrap();
    let set = small_set(6, "s");
    write_all(dir.path(), &set).unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let m = manifest(&set, "v1", |_| None);
    std::thread::scope(|s| {
        for _ in 0..4 {
            let store = store.clone();
            let m = &m;
            s.spawn(move || assert!(!store.prepare(m).unwrap().failed()));
        }
    });
    assert!(store.prepare(&m).unwrap().all_cached());
}

#[test]
fn prepare_async_runs_inside_a_tokio_host_and_the_store_drops_there() {
    let dir = tempfile::tempdir().unwrap();
    let set = small_set(3, "a");
    let src = tempfile::tempdir().unwrap();
    write_all(src.path(), &set).unwrap();
    // file:// sources make the store start its fetch runtime, which must not panic when the
    // store is dropped inside the host's runtime.
    let m = Arc::new(manifest(&set, "v1", |a| {
        Some(
            url::Url::from_file_path(src.path().join(&a.path))
                .unwrap()
                .to_string(),
        )
    }));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let report = store.prepare_async(&m, Default::default()).await.unwrap();
        assert!(
            report
                .assets
                .iter()
                .all(|a| a.outcome() == Some(Outcome::Downloaded)),
            "{report:?}"
        );
        let again = store.prepare_async(&m, Default::default()).await.unwrap();
        assert!(again.all_cached(), "{again:?}");
        drop(store);
    });
}

#[test]
fn a_file_written_just_before_prepare_leaves_a_clean_record() {
    // Written and verified within the same instant: the first stamp is racy, so bootvault
    // hashes again once the filesystem clock has moved on; the next prepare is cached.
    let dir = tempfile::tempdir().unwrap();
    let set = small_set(1, "r");
    write_all(dir.path(), &set).unwrap();
    let store = Store::open(dir.path()).unwrap();
    let m = manifest(&set, "v1", |_| None);
    let first = store.prepare(&m).unwrap();
    assert_eq!(first.assets[0].outcome(), Some(Outcome::Verified));
    let (records, _) = store.ledger().all();
    assert!(!records[0].1.racy, "the record left behind must be clean");
    assert!(store.prepare(&m).unwrap().all_cached());
}

#[test]
fn warm_prepare_leaves_the_ledger_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let set = small_set(5, "w");
    write_all(dir.path(), &set).unwrap();
    let m = manifest(&set, "v1", |_| None);
    Store::open(dir.path()).unwrap().prepare(&m).unwrap();
    let ledger = dir.path().join(".bootvault/ledger.redb");
    let before = std::fs::metadata(&ledger).unwrap();
    let before_bytes = std::fs::read(&ledger).unwrap();
    for _ in 0..3 {
        let report = Store::open(dir.path()).unwrap().prepare(&m).unwrap();
        assert!(report.all_cached());
    }
    let after = std::fs::metadata(&ledger).unwrap();
    assert_eq!(
        (before.mtime_nsec(), before.ctime_nsec(), before.size()),
        (after.mtime_nsec(), after.ctime_nsec(), after.size())
    );
    assert_eq!(before_bytes, std::fs::read(&ledger).unwrap());
}

#[test]
fn verify_always_on_an_unchanged_file_rehashes_but_does_not_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut set = small_set(2, "k");
    set[0].verify = Policy::Always;
    write_all(dir.path(), &set).unwrap();
    let m = manifest(&set, "v1", |_| None);
    let store = Store::open(dir.path()).unwrap();
    store.prepare(&m).unwrap();
    let ledger = dir.path().join(".bootvault/ledger.redb");
    let before = std::fs::metadata(&ledger).unwrap();
    let report = store.prepare(&m).unwrap();
    assert_eq!(report.assets[0].outcome(), Some(Outcome::Verified));
    assert_eq!(report.assets[0].bytes_hashed, set[0].bytes.len() as u64);
    assert_eq!(report.assets[1].outcome(), Some(Outcome::Cached));
    let after = std::fs::metadata(&ledger).unwrap();
    assert_eq!(before.mtime_nsec(), after.mtime_nsec());
}

#[test]
fn verity_tier_is_used_where_available_and_falls_back_elsewhere() {
    use bootvault::ledger::Method;
    use bootvault::verity::{Support, probe};
    let dir = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let mut set = small_set(1, "v");
    set[0].verify = Policy::Always;
    write_all(src.path(), &set).unwrap();
    let m = manifest(&set, "v1", |a| {
        Some(
            url::Url::from_file_path(src.path().join(&a.path))
                .unwrap()
                .to_string(),
        )
    });
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.prepare(&m).unwrap().assets[0].outcome(),
        Some(Outcome::Downloaded)
    );
    let (records, _) = store.ledger().all();
    let second = store.prepare(&m).unwrap();
    match probe(dir.path()) {
        Support::Available => {
            assert_eq!(records[0].1.method, Method::Verity);
            assert!(records[0].1.verity.is_some());
            // The kernel checks every read: `always` is satisfied in O(1).
            assert_eq!(second.assets[0].outcome(), Some(Outcome::Cached));
        }
        Support::Unsupported(why) => {
            eprintln!("fs-verity unavailable here ({why}): checking the fallback");
            assert_eq!(records[0].1.method, Method::Downloaded);
            assert_eq!(records[0].1.verity, None);
            assert_eq!(second.assets[0].outcome(), Some(Outcome::Verified));
            assert_eq!(second.assets[0].bytes_hashed, set[0].bytes.len() as u64);
        }
    }
}

#[test]
fn state_dir_on_another_filesystem_copies_into_root_hashing_again() {
    // /dev/shm is tmpfs: a different filesystem from the temp dir, where the machine has one.
    let Ok(state) = tempfile::tempdir_in("/dev/shm") else {
        eprintln!("no /dev/shm here; nothing to check");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dev = |p: &std::path::Path| std::fs::metadata(p).unwrap().dev();
    if dev(state.path()) == dev(dir.path()) {
        eprintln!("/dev/shm is on the same filesystem here; nothing to check");
        return;
    }
    let src = tempfile::tempdir().unwrap();
    let set = small_set(2, "x");
    write_all(src.path(), &set).unwrap();
    let m = manifest(&set, "v1", |a| {
        Some(
            url::Url::from_file_path(src.path().join(&a.path))
                .unwrap()
                .to_string(),
        )
    });
    let store = Store::builder(dir.path())
        .state_dir(state.path())
        .open()
        .unwrap();
    let report = store.prepare(&m).unwrap();
    for (a, r) in set.iter().zip(&report.assets) {
        assert_eq!(r.outcome(), Some(Outcome::Downloaded), "{r:?}");
        // Hashed once as it arrived and once more on the copy into ROOT.
        assert_eq!(r.bytes_hashed, 2 * a.bytes.len() as u64);
        assert_eq!(
            std::fs::read(dir.path().join(&a.path)).unwrap(),
            &a.bytes[..]
        );
    }
    // No temp name is left beside the assets, and nothing of the state is in ROOT.
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir.path().join("x")).unwrap() {
        names.push(entry.unwrap().file_name().to_string_lossy().to_string());
    }
    names.sort();
    assert_eq!(names, vec!["0.bin", "1.bin"]);
    assert!(!dir.path().join(".bootvault").exists());
    assert!(store.prepare(&m).unwrap().all_cached());
}

#[test]
fn gc_removes_partials_of_dead_processes_for_assets_no_longer_wanted() {
    let dir = tempfile::tempdir().unwrap();
    let set = small_set(1, "g");
    write_all(dir.path(), &set).unwrap();
    let m = manifest(&set, "v1", |_| None);
    let key = bootvault::lock::file_key;
    // A pid that certainly belongs to no live process: a child that has been reaped.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let tmp = dir.path().join(".bootvault/tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let abandoned = format!("{}.{dead}.part", key("old/asset"));
    let resumable = format!("{}.{dead}.part", key(&set[0].path));
    let in_flight = format!("{}.{}.part", key("old/asset"), std::process::id());
    for name in [&abandoned, &resumable, &in_flight] {
        std::fs::write(tmp.join(name), b"partial").unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.gc_partials(&m, true).unwrap(),
        vec![abandoned.clone()]
    );
    assert!(tmp.join(&abandoned).exists(), "a dry run removes nothing");
    assert_eq!(
        store.gc_partials(&m, false).unwrap(),
        vec![abandoned.clone()]
    );
    assert!(!tmp.join(&abandoned).exists());
    assert!(
        tmp.join(&resumable).exists(),
        "the next prepare of that asset resumes it"
    );
    assert!(tmp.join(&in_flight).exists(), "its process is alive");
}
