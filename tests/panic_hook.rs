//! The panic hook the library installs (see the crate docs, "The panic hook"): it keeps the
//! panics redb raises on a damaged ledger (caught, and turned into a rebuild) off the host's
//! hook, passes every other panic to the hook that was there before it, and a hook the host
//! sets later replaces it. Panic hooks are process-wide, hence one test alone in its binary.

use bootvault::{Policy, Store};
use bootvault_testkit::demo::{DemoAsset, manifest, pseudo_random, write_all};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// A hook that records where each panic it sees was raised (`file:line`) and its message.
fn recording_hook() -> Arc<Mutex<Vec<String>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::panic::set_hook(Box::new(move |info| {
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        log.lock().unwrap().push(format!("{at}: {message}"));
    }));
    seen
}

/// A store under `root` with three recorded assets, then its ledger's second half inverted (the
/// damage that made redb panic in tests/ledger_recovery.rs), then a prepare that must rebuild
/// the ledger and succeed.
fn prepare_over_a_damaged_ledger(root: &Path) {
    let set: Vec<DemoAsset> = (0..3)
        .map(|i| DemoAsset {
            name: format!("a{i}"),
            path: format!("assets/a{i}"),
            bytes: pseudo_random(i + 1, 8192).into(),
            verify: Policy::Cached,
            mode: None,
        })
        .collect();
    write_all(root, &set).unwrap();
    let m = manifest(&set, "v1", |_| None);
    {
        let store = Store::open(root).unwrap();
        assert!(!store.prepare(&m).unwrap().failed());
        assert!(store.prepare(&m).unwrap().all_cached());
    }
    let ledger = root.join(".bootvault/ledger.redb");
    let mut bytes = std::fs::read(&ledger).unwrap();
    let half = bytes.len() / 2;
    for b in &mut bytes[half..] {
        *b ^= 0xFF;
    }
    std::fs::write(&ledger, bytes).unwrap();
    let report = Store::open(root).unwrap().prepare(&m).unwrap();
    assert!(!report.failed(), "{report:?}");
}

fn host_panic(message: &'static str) {
    let joined = std::thread::spawn(move || panic!("{message}")).join();
    assert!(joined.is_err());
}

#[test]
fn the_hook_hides_only_caught_redb_panics_and_a_later_host_hook_replaces_it() {
    // A host's hook, set before the library's first ledger call.
    let before = recording_hook();
    let dir = tempfile::tempdir().unwrap();
    prepare_over_a_damaged_ledger(&dir.path().join("one"));
    assert_eq!(
        *before.lock().unwrap(),
        Vec::<String>::new(),
        "redb's caught panics reached the host's hook"
    );
    // The host's own panics still reach it, through the library's hook.
    host_panic("host panic one");
    let seen = before.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].ends_with("host panic one"), "{seen:?}");

    // A hook set afterwards replaces the library's (which is installed once, not again): the
    // same damage now shows it redb's panics, so the quiet above was the library's doing.
    let after = recording_hook();
    prepare_over_a_damaged_ledger(&dir.path().join("two"));
    host_panic("host panic two");
    let seen = after.lock().unwrap().clone();
    assert!(
        seen.iter().any(|s| s.contains("redb")),
        "no panic inside redb: {seen:?}"
    );
    assert!(seen.last().unwrap().ends_with("host panic two"), "{seen:?}");
    assert_eq!(
        before.lock().unwrap().len(),
        1,
        "the replaced hook ran again"
    );
}
