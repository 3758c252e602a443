//! Ledger schema upgrades and the arcbox-boot `.verified.json` import, against frozen fixtures.
//!
//! `tests/fixtures/ledger-v1.redb` is a ledger at schema 1 holding one record (`bin/runc`);
//! `tests/fixtures/ledger-v2.redb` is one at schema 2 holding that record and one event;
//! `tests/fixtures/verified-0.5.2.json` is an arcbox-boot 0.5.2 cache whose keys start with
//! `@ROOT@`, rewritten to the temp ROOT before use. Both were written once by
//! `regenerate_fixtures` (ignored) and must never be regenerated after a release: they stand
//! for files that exist on users' disks.

mod common;

use bootvault::Sha256Digest;
use bootvault::ledger::{Method, Record};
use bootvault::stamp::Stamp;
use common::{
    Env, RECORDS, Run, asset_with_urls, file_url, name_of, outcomes, redb_builder, run,
    schema_version, sha,
};
use redb::{ReadableDatabase, TableHandle};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const FIXTURE_V1: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/ledger-v1.redb"
);
const FIXTURE_V2: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/ledger-v2.redb"
);
const FIXTURE_LEGACY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/verified-0.5.2.json"
);
const ROOT_PLACEHOLDER: &str = "@ROOT@";

/// Content of an asset as arcbox-boot 0.5.2 installed it.
fn content(name: &str) -> Vec<u8> {
    format!("{name} as shipped with arcbox-boot 0.5.2\n")
        .repeat(100)
        .into_bytes()
}

/// The one record of the v1 fixture.
fn v1_record() -> Record {
    let stamp = Stamp::regular(
        content("runc").len() as u64,
        1_700_000_000_123_456_789,
        1_700_000_000_223_456_789,
        4242,
        2049,
        0o444,
    );
    Record::new(
        Sha256Digest::of(&content("runc")),
        &stamp,
        "2026.10.0",
        1_700_000_100_000_000_000,
        Method::Hashed,
        false,
    )
}

/// (relative path, size recorded, mtime secs, mtime nanos) of the legacy entries inside ROOT.
const LEGACY: [(&str, i64, i64); 5] = [
    ("kernel", 1_700_000_000, 111_111_111),
    ("rootfs.erofs", 1_700_000_001, 222_222_222),
    ("bin/runc", 1_700_000_002, 333_333_333),
    ("bin/crun", 1_700_000_003, 444_444_444),
    ("bin/gvproxy", 1_700_000_004, 555_555_555),
];

#[test]
#[ignore = "regenerates fixtures"]
fn regenerate_fixtures() {
    let dir = Path::new(FIXTURE_V1).parent().unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let _ = std::fs::remove_file(FIXTURE_V1);
    let db = redb_builder().create(FIXTURE_V1).unwrap();
    let txn = db.begin_write().unwrap();
    bootvault::migrations::apply_upto(&txn, 1).unwrap();
    txn.open_table(RECORDS)
        .unwrap()
        .insert("bin/runc", v1_record().encode().as_slice())
        .unwrap();
    txn.commit().unwrap();
    drop(db);

    let mut entries = serde_json::Map::new();
    for (rel, secs, nanos) in LEGACY {
        let data = content(name_of(rel));
        entries.insert(
            format!("{ROOT_PLACEHOLDER}/{rel}"),
            json!({"sha256": sha(&data), "size": data.len(), "mtime_secs": secs, "mtime_nanos": nanos}),
        );
    }
    // An entry for a file outside ROOT (another data dir): never imported.
    let data = content("kernel");
    entries.insert(
        "/var/lib/elsewhere/0.5.2/kernel".into(),
        json!({"sha256": sha(&data), "size": data.len(), "mtime_secs": 1_700_000_000, "mtime_nanos": 0}),
    );
    let text = serde_json::to_string_pretty(&json!({ "entries": entries })).unwrap();
    std::fs::write(FIXTURE_LEGACY, text + "\n").unwrap();
}

/// The one event of the v2 fixture.
fn v2_event() -> bootvault::ledger::Event {
    bootvault::ledger::Event {
        at_ns: 1_700_000_200_000_000_000,
        path: "bin/runc".into(),
        name: "runc".into(),
        outcome: "verified".into(),
        reason: "no ledger record".into(),
        manifest_version: "2026.10.0".into(),
        pid: 4242,
    }
}

/// Written once, when schema 3 was added; never run again: the file stands for ledgers at
/// schema 2 on users' disks.
#[test]
#[ignore = "wrote the frozen schema-2 fixture once; never regenerate"]
fn generate_fixture_v2() {
    assert!(!Path::new(FIXTURE_V2).exists(), "the v2 fixture is frozen");
    let db = redb_builder().create(FIXTURE_V2).unwrap();
    let txn = db.begin_write().unwrap();
    bootvault::migrations::apply_upto(&txn, 2).unwrap();
    txn.open_table(RECORDS)
        .unwrap()
        .insert("bin/runc", v1_record().encode().as_slice())
        .unwrap();
    txn.open_table(redb::TableDefinition::<(u64, u64), &[u8]>::new("events_v1"))
        .unwrap()
        .insert(
            (1_700_000_200_000_000_000u64, 7u64),
            v2_event().encode().as_slice(),
        )
        .unwrap();
    txn.commit().unwrap();
}

// ---- helpers --------------------------------------------------------------------------------

/// What only these tests need of `common::Env`: the fixtures, manifests at 0.6.0, `migrate`.
impl Env {
    /// Installs the v1 fixture as this store's ledger.
    fn install_v1(&self) {
        std::fs::create_dir_all(self.state()).unwrap();
        std::fs::copy(FIXTURE_V1, self.ledger()).unwrap();
    }

    /// Lays out ROOT as arcbox-boot 0.5.2 left it, then changes two files behind the cache's
    /// back: `bin/crun` grew (size differs), `bin/gvproxy` was touched (mtime differs).
    /// Writes the cache, keys rewritten to ROOT, at `legacy` (default ROOT/.verified.json).
    fn install_legacy(&self, legacy: Option<&Path>) -> PathBuf {
        for (rel, secs, nanos) in LEGACY {
            let mut data = content(name_of(rel));
            if rel == "bin/crun" {
                data.extend_from_slice(b"grown\n");
            }
            let p = self.put(rel, &data);
            let secs = if rel == "bin/gvproxy" { secs + 1 } else { secs };
            filetime::set_file_mtime(&p, filetime::FileTime::from_unix_time(secs, nanos as u32))
                .unwrap();
        }
        let text = std::fs::read_to_string(FIXTURE_LEGACY).unwrap();
        let root = self.root.to_str().unwrap();
        let text = text.replace(ROOT_PLACEHOLDER, root);
        let path = legacy
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.path(".verified.json"));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn manifest(&self, file: &str, assets: Vec<Value>) -> PathBuf {
        self.write_manifest(file, "0.6.0", assets)
    }

    /// `bootvault migrate --dir ROOT EXTRA...`
    fn migrate(&self, extra: &[&str]) -> Run {
        let mut args = vec!["migrate", "--dir", self.root.to_str().unwrap()];
        args.extend_from_slice(extra);
        run(&args)
    }

    /// `prepare --json`; returns name → outcome, asserting exit `code`.
    fn prepare_outcomes(&self, manifest: &Path, code: i32) -> BTreeMap<String, String> {
        let r = self.prepare(manifest, &[]);
        assert_eq!(r.code, code, "prepare: {}", r.stderr);
        outcomes(&r.json())
    }
}

/// A manifest asset for `bytes` at `rel`, named after its last component.
fn asset(rel: &str, bytes: &[u8]) -> Value {
    common::asset(name_of(rel), rel, bytes)
}

/// Table names and the schema version of a ledger file, read with redb directly.
fn inspect_file(path: &Path) -> (Vec<String>, u64) {
    let db = redb_builder().open_read_only(path).unwrap();
    let txn = db.begin_read().unwrap();
    let tables = txn
        .list_tables()
        .unwrap()
        .map(|t| t.name().to_string())
        .collect();
    (tables, schema_version(&txn))
}

// ---- schema upgrades --------------------------------------------------------------------------

#[test]
fn v1_fixture_is_as_frozen() {
    let (tables, version) = inspect_file(Path::new(FIXTURE_V1));
    assert_eq!(version, 1);
    assert!(tables.contains(&"records_v1".to_string()), "{tables:?}");
    assert!(!tables.contains(&"events_v1".to_string()), "{tables:?}");
}

#[test]
fn v1_ledger_is_upgraded_to_current_and_keeps_its_record() {
    let env = Env::new();
    env.install_v1();
    let kernel = content("kernel");
    env.put("kernel", &kernel);
    let ledger_path = env.ledger();

    let store = bootvault::Store::open(&env.root).unwrap();
    // Reading neither upgrades nor loses the old record: its bytes still decode.
    assert_eq!(store.ledger().schema_version(), 1);
    let (records, state) = store.ledger().read_many(&["bin/runc"]);
    assert_eq!(state, bootvault::ledger::LedgerState::Ok);
    assert_eq!(records, vec![Some(v1_record())]);
    assert_eq!(inspect_file(&ledger_path).1, 1, "a read upgraded the file");

    // The first write upgrades.
    let manifest = bootvault::Manifest::from_json_str(
        &json!({"version": "0.6.0", "assets": [asset("kernel", &kernel)]}).to_string(),
    )
    .unwrap();
    let report = store.prepare(&manifest).unwrap();
    assert_eq!(
        report.assets[0].outcome(),
        Some(bootvault::Outcome::Verified),
        "{report:?}"
    );
    assert_eq!(
        store.ledger().schema_version(),
        bootvault::migrations::CURRENT
    );
    let (records, _) = store.ledger().read_many(&["bin/runc", "kernel"]);
    assert_eq!(records[0], Some(v1_record()), "the v1 record was lost");
    assert_eq!(records[1].as_ref().unwrap().method, Method::Hashed);
    let events = store.ledger().events(Some("kernel"), 10);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].outcome, "verified");
    drop(store);

    let (tables, version) = inspect_file(&ledger_path);
    assert_eq!(version, bootvault::migrations::CURRENT);
    for t in ["meta", "records_v1", "events_v1"] {
        assert!(tables.contains(&t.to_string()), "{t} missing: {tables:?}");
    }
    // The fixture in the tree is untouched.
    assert_eq!(inspect_file(Path::new(FIXTURE_V1)).1, 1);
}

#[test]
fn v2_fixture_is_as_frozen() {
    let (tables, version) = inspect_file(Path::new(FIXTURE_V2));
    assert_eq!(version, 2);
    assert!(tables.contains(&"events_v1".to_string()), "{tables:?}");
    assert!(!tables.contains(&"manifests_v1".to_string()), "{tables:?}");
}

#[test]
fn v2_ledger_is_upgraded_to_current_and_keeps_its_record_and_event() {
    let env = Env::new();
    std::fs::create_dir_all(env.state()).unwrap();
    std::fs::copy(FIXTURE_V2, env.ledger()).unwrap();
    let kernel = content("kernel");
    env.put("kernel", &kernel);
    let store = bootvault::Store::open(&env.root).unwrap();
    assert_eq!(store.ledger().schema_version(), 2);
    // The first write upgrades, and records the manifest's provenance in the new table.
    let manifest = bootvault::Manifest::from_json_str(
        &json!({"version": "0.7.0", "assets": [asset("kernel", &kernel)]}).to_string(),
    )
    .unwrap();
    let provenance = bootvault::Provenance {
        source: "https://cdn.example/0.7.0/manifest.json".into(),
        signed_by: Some("66F7F9E5597EF09".into()),
        oci_digest: None,
        recorded_at_ns: 1,
    };
    let opts = bootvault::PrepareOptions::new().provenance(provenance.clone());
    let report = store.prepare_with(&manifest, &opts).unwrap();
    assert_eq!(
        report.assets[0].outcome(),
        Some(bootvault::Outcome::Verified)
    );
    assert_eq!(
        store.ledger().schema_version(),
        bootvault::migrations::CURRENT
    );
    let (records, _) = store.ledger().read_many(&["bin/runc"]);
    assert_eq!(records[0], Some(v1_record()), "the v2 record was lost");
    let events = store.ledger().events(Some("bin/runc"), 10);
    assert_eq!(events, vec![v2_event()], "the v2 event was lost");
    assert_eq!(
        store.manifests(),
        vec![("0.7.0".to_string(), provenance)],
        "provenance not recorded"
    );
    drop(store);
    let (tables, version) = inspect_file(&env.ledger());
    assert_eq!(version, bootvault::migrations::CURRENT);
    assert!(tables.contains(&"manifests_v1".to_string()), "{tables:?}");
    assert_eq!(inspect_file(Path::new(FIXTURE_V2)).1, 2);
}

#[test]
fn v1_record_with_a_foreign_stamp_is_shown_but_never_trusted() {
    let env = Env::new();
    env.install_v1();
    let runc = content("runc");
    env.put("bin/runc", &runc);
    let recs = env.records();
    let r = &recs["bin/runc"];
    assert_eq!(r["method"], "hashed");
    assert_eq!(r["sha256"].as_str(), Some(sha(&runc).as_str()));
    assert_eq!(r["manifest_version"], "2026.10.0");
    assert_eq!(r["ino"].as_u64(), Some(4242));

    // Same digest, but the stamp is another file's: re-hash, then trust.
    let m = env.manifest("m.json", vec![asset("bin/runc", &runc)]);
    assert_eq!(env.prepare_outcomes(&m, 0)["runc"], "verified");
    assert_eq!(env.prepare_outcomes(&m, 0)["runc"], "cached");
    let recs = env.records();
    assert_eq!(recs["bin/runc"]["manifest_version"], "0.6.0");
    assert_eq!(
        inspect_file(&env.ledger()).1,
        bootvault::migrations::CURRENT
    );
}

// ---- arcbox-boot .verified.json ---------------------------------------------------------------

#[test]
fn migrate_imports_matching_entries_and_skips_changed_ones() {
    let env = Env::new();
    let legacy = env.install_legacy(None);
    let legacy_before = std::fs::read(&legacy).unwrap();

    let r = env.migrate(&["--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    let mut imported: Vec<&str> = v["imported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    imported.sort();
    assert_eq!(imported, vec!["bin/runc", "kernel", "rootfs.erofs"], "{v}");
    let skipped = v["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 3, "{v}");
    for key in ["bin/crun", "bin/gvproxy", "/var/lib/elsewhere/0.5.2/kernel"] {
        assert!(
            skipped
                .iter()
                .any(|s| s["key"].as_str().unwrap().ends_with(key)),
            "{key} not skipped: {v}"
        );
    }

    // The legacy cache stays where it was, unchanged.
    assert_eq!(std::fs::read(&legacy).unwrap(), legacy_before);

    let recs = env.records();
    assert_eq!(
        recs.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
        vec!["bin/runc", "kernel", "rootfs.erofs"]
    );
    for (rel, r) in &recs {
        assert_eq!(r["method"], "legacy-import", "{rel}");
        assert_eq!(
            r["sha256"].as_str(),
            Some(sha(&content(name_of(rel))).as_str())
        );
        let meta = std::fs::metadata(env.path(rel)).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(r["ino"].as_u64(), Some(meta.ino()), "{rel}");
    }

    // A prepare expecting the same digests trusts the imported records.
    let same: Vec<Value> = ["kernel", "rootfs.erofs", "bin/runc"]
        .iter()
        .map(|rel| asset(rel, &content(name_of(rel))))
        .collect();
    let m = env.manifest("same.json", same);
    let o = env.prepare_outcomes(&m, 0);
    assert!(o.values().all(|x| x == "cached"), "{o:?}");

    // One expecting another runc (an upgrade) does not: the file is wrong for it.
    let new_runc = content("runc 0.6.0");
    let src = env.outside("runc-0.6.0");
    std::fs::write(&src, &new_runc).unwrap();
    let upgraded = asset_with_urls("runc", "bin/runc", &new_runc, &[file_url(&src)]);
    let m = env.manifest(
        "upgrade.json",
        vec![asset("kernel", &content("kernel")), upgraded],
    );
    let o = env.prepare_outcomes(&m, 0);
    assert_eq!(o["kernel"], "cached");
    assert_eq!(o["runc"], "repaired", "{o:?}");
    assert_eq!(env.read("bin/runc"), new_runc);
}

#[test]
fn imported_record_for_another_digest_is_never_trusted() {
    // Same file, same stamp, but the manifest expects different content: verify, fail.
    let env = Env::new();
    env.install_legacy(None);
    assert_eq!(env.migrate(&[]).code, 0);
    let m = env.manifest("m.json", vec![asset("kernel", &content("kernel 0.6.0"))]);
    let o = env.prepare_outcomes(&m, 1);
    assert_eq!(o["kernel"], "failed", "{o:?}");
}

#[test]
fn skipped_legacy_entries_are_rehashed() {
    let env = Env::new();
    env.install_legacy(None);
    assert_eq!(env.migrate(&[]).code, 0);
    // gvproxy's content is what the cache says, but its mtime moved: no import, re-hash.
    let m = env.manifest("m.json", vec![asset("bin/gvproxy", &content("gvproxy"))]);
    assert_eq!(env.prepare_outcomes(&m, 0)["gvproxy"], "verified");
    assert_eq!(env.prepare_outcomes(&m, 0)["gvproxy"], "cached");
}

#[test]
fn migrate_from_a_legacy_file_elsewhere() {
    let env = Env::new();
    let legacy = env.outside("old-cache.json");
    env.install_legacy(Some(&legacy));
    let r = env.migrate(&["--legacy", legacy.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(legacy.exists());
    let recs = env.records();
    assert_eq!(recs.len(), 3, "{recs:?}");
    assert!(recs.values().all(|r| r["method"] == "legacy-import"));
}

#[test]
fn migrate_with_a_missing_or_malformed_legacy_file_exits_2() {
    let env = Env::new();
    let r = env.migrate(&[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains(".verified.json"), "{}", r.stderr);

    std::fs::write(env.path(".verified.json"), b"{\"entries\": [1, 2]}").unwrap();
    let r = env.migrate(&[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains(".verified.json"), "{}", r.stderr);
    // Nothing imported: no ledger at all, or an empty one.
    assert!(!env.ledger().exists() || env.records().is_empty());
}

/// The trust boundary: a `.verified.json` in ROOT (which a guest can write) is never imported
/// by a prepare. The attack of the review: the wrong kernel first (the manifest's size), then
/// a cache vouching for it with its mtime. The first prepare used to report it `cached` with
/// 0 bytes hashed.
#[test]
fn regression_a_verified_json_in_root_is_never_imported_by_a_prepare() {
    let env = Env::new();
    let legacy = env.install_legacy(None);
    let good = content("kernel");
    let evil = vec![b'!'; good.len()];
    std::fs::write(env.path("kernel"), &evil).unwrap();
    let meta = std::fs::metadata(env.path("kernel")).unwrap();
    let text = std::fs::read_to_string(&legacy).unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    for (key, e) in v["entries"].as_object_mut().unwrap() {
        if key.ends_with("/kernel") {
            e["mtime_secs"] = std::os::unix::fs::MetadataExt::mtime(&meta).into();
            e["mtime_nanos"] = std::os::unix::fs::MetadataExt::mtime_nsec(&meta).into();
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&legacy, v.to_string()).unwrap();
    let m = env.manifest(
        "m.json",
        vec![asset("kernel", &good), asset("bin/runc", &content("runc"))],
    );
    let o = env.prepare_outcomes(&m, 1);
    assert_eq!(o["kernel"], "failed", "{o:?}");
    // The correct file is hashed, not trusted from the cache.
    assert_eq!(o["runc"], "verified", "{o:?}");
    assert!(legacy.exists(), "the legacy cache was removed");
    let recs = env.records();
    assert_eq!(recs["bin/runc"]["method"], "hashed");
    assert!(!recs.contains_key("kernel"));
}

#[test]
fn an_explicit_import_never_trusts_a_file_rewritten_after_the_cache() {
    // arcbox-boot trusted size + mtime; bootvault imports on the same terms (only when the
    // operator asks) but records ctime, so a rewrite after the import (mtime restored) is
    // caught.
    let env = Env::new();
    env.install_legacy(None);
    assert_eq!(env.migrate(&[]).code, 0);
    let m = env.manifest("m.json", vec![asset("kernel", &content("kernel"))]);
    assert_eq!(env.prepare_outcomes(&m, 0)["kernel"], "cached");
    let p = env.path("kernel");
    let meta = std::fs::metadata(&p).unwrap();
    let mut evil = content("kernel");
    evil[0] ^= 1;
    std::fs::write(&p, &evil).unwrap();
    filetime::set_file_mtime(&p, filetime::FileTime::from_last_modification_time(&meta)).unwrap();
    let o = env.prepare_outcomes(&m, 1);
    assert_eq!(o["kernel"], "failed", "{o:?}");
}

/// The trust-boundary review: a legacy entry whose path runs through a symlinked parent that
/// leaves ROOT was imported, and `debug verify` then said `ok` for a path that prepare calls
/// unsafe. Now the import skips it, naming why.
#[test]
fn regression_legacy_import_never_follows_a_symlinked_parent_out_of_root() {
    let env = Env::new();
    env.install_legacy(None);
    // ROOT/bin becomes a symlink to a directory outside ROOT holding the same files.
    let outside = env.outside("elsewhere-bin");
    std::fs::create_dir_all(&outside).unwrap();
    for entry in std::fs::read_dir(env.path("bin")).unwrap() {
        let e = entry.unwrap();
        let meta = e.metadata().unwrap();
        let dst = outside.join(e.file_name());
        std::fs::copy(e.path(), &dst).unwrap();
        filetime::set_file_mtime(&dst, filetime::FileTime::from_last_modification_time(&meta))
            .unwrap();
    }
    std::fs::remove_dir_all(env.path("bin")).unwrap();
    std::os::unix::fs::symlink(&outside, env.path("bin")).unwrap();
    // The cache is written after the copies, so the ctime rule alone would accept them.
    let legacy = env.path(".verified.json");
    let text = std::fs::read(&legacy).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&legacy, text).unwrap();

    let r = env.migrate(&["--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    let imported: Vec<&str> = v["imported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(!imported.iter().any(|p| p.starts_with("bin/")), "{v}");
    let runc = v["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"].as_str().unwrap().ends_with("bin/runc"))
        .unwrap_or_else(|| panic!("bin/runc not skipped: {v}"));
    assert!(
        runc["reason"].as_str().unwrap().contains("symlink"),
        "{runc}"
    );
    assert!(!env.records().contains_key("bin/runc"));
}
