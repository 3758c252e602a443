//! A missing, corrupt or newer-schema ledger never fails a prepare and never yields trust:
//! it degrades to re-hashing, and the ledger is rebuilt (or, if newer, left untouched).

mod common;

use bootvault::Sha256Digest;
use bootvault::ledger::{Method, Record};
use bootvault::stamp::Stamp;
use common::{
    Env, META, RECORDS, asset, blob, insert_records, name_of, prepare_cmd, redb_builder, run_cmd,
    schema_version,
};
use redb::ReadableDatabase;
use std::path::{Path, PathBuf};

/// Keys chosen so that the records leaf page holds them back to back ("alphabravocharlie").
const NAMES: [&str; 3] = ["assets/alpha", "assets/bravo", "assets/charlie"];

/// What only these tests need of `common::Env`: a store with three assets in ROOT, at
/// `NAMES`, and a manifest of them.
impl Env {
    /// ROOT with three assets in place and a manifest (no URLs: verify in place).
    fn with_assets() -> Env {
        let env = Env::new();
        let mut assets = Vec::new();
        for (i, rel) in NAMES.iter().enumerate() {
            let data = blob(i as u64 + 1, 8192 + i * 1000);
            env.put(rel, &data);
            assets.push(asset(name_of(rel), rel, &data));
        }
        env.write_manifest("m.json", "2026.11.0", assets);
        env
    }

    fn manifest(&self) -> PathBuf {
        self.outside("m.json")
    }

    /// Runs `prepare --json` on the manifest; returns (exit code, outcomes in manifest order,
    /// stderr).
    fn prepare_all(&self) -> (i32, Vec<String>, String) {
        let mut cmd = prepare_cmd(&self.root, &self.manifest(), &[]);
        cmd.env("RUST_BACKTRACE", "0");
        let r = run_cmd(cmd);
        let v = r.json();
        let outcomes = v["assets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["outcome"].as_str().unwrap().to_string())
            .collect();
        (r.code, outcomes, r.stderr)
    }

    fn prepare_all_ok(&self) -> Vec<String> {
        let (code, outcomes, stderr) = self.prepare_all();
        assert_eq!(code, 0, "prepare failed: {stderr}");
        outcomes
    }

    /// A store whose ledger holds a trusted record of every asset.
    fn warmed(self) -> Env {
        assert_eq!(self.prepare_all_ok(), vec!["verified"; 3]);
        assert_eq!(self.prepare_all_ok(), vec!["cached"; 3]);
        self
    }

    fn corrupt_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.state())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("ledger.redb.corrupt-")
            })
            .collect()
    }

    fn stamp(&self, rel: &str) -> Stamp {
        Stamp::of_path(&self.path(rel)).unwrap().unwrap()
    }

    /// A record that vouches for the live file at `rel` (as a prepare would have left it).
    fn vouching_record(&self, rel: &str) -> Record {
        let data = self.read(rel);
        Record::new(
            Sha256Digest::of(&data),
            &self.stamp(rel),
            "2026.11.0",
            bootvault::stamp::wall_now_ns(),
            Method::Hashed,
            false,
        )
    }
}

/// After damaging the ledger: the prepare succeeds, trusts nothing, moves the damaged file
/// aside, and leaves a ledger that the next prepare trusts.
fn assert_recovers(env: &Env, what: &str) {
    let (code, outcomes, stderr) = env.prepare_all();
    assert_eq!(code, 0, "{what}: prepare failed: {stderr}");
    assert_eq!(outcomes, vec!["verified"; 3], "{what}: {stderr}");
    assert_eq!(
        env.corrupt_files().len(),
        1,
        "{what}: the damaged ledger was not moved aside; stderr: {stderr}"
    );
    assert!(env.ledger().is_file(), "{what}: no new ledger");
    let (code, outcomes, stderr) = env.prepare_all();
    assert_eq!(code, 0, "{what}: {stderr}");
    assert_eq!(
        outcomes,
        vec!["cached"; 3],
        "{what}: the ledger was not rebuilt: {stderr}"
    );
}

#[test]
fn ledger_overwritten_with_garbage_is_moved_aside_and_rebuilt() {
    let env = Env::with_assets().warmed();
    let len = std::fs::metadata(env.ledger()).unwrap().len() as usize;
    std::fs::write(env.ledger(), blob(99, len)).unwrap();
    assert_recovers(&env, "garbage");
}

#[test]
fn ledger_overwritten_with_zeros_is_moved_aside_and_rebuilt() {
    let env = Env::with_assets().warmed();
    let len = std::fs::metadata(env.ledger()).unwrap().len() as usize;
    std::fs::write(env.ledger(), vec![0u8; len]).unwrap();
    assert_recovers(&env, "zeros");
}

#[test]
fn ledger_truncated_to_half_is_moved_aside_and_rebuilt() {
    let env = Env::with_assets().warmed();
    let len = std::fs::metadata(env.ledger()).unwrap().len();
    truncate(&env.ledger(), len / 2);
    assert_recovers(&env, "truncated to half");
}

#[test]
fn regression_ledger_truncated_inside_its_header_is_rebuilt() {
    // A file shorter than redb's header fails to open with UnexpectedEof; that is damage,
    // not a transient I/O problem, so it must be moved aside like any other corruption.
    let env = Env::with_assets().warmed();
    truncate(&env.ledger(), 100);
    assert_recovers(&env, "truncated to 100 bytes");
}

#[test]
fn empty_ledger_file_degrades_to_rehash_and_is_rebuilt() {
    let env = Env::with_assets().warmed();
    std::fs::write(env.ledger(), b"").unwrap();
    let (code, outcomes, stderr) = env.prepare_all();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(outcomes, vec!["verified"; 3]);
    assert_eq!(env.prepare_all_ok(), vec!["cached"; 3]);
}

/// Offset of the live `records_v1` leaf page: the one page that holds every key back to back.
fn records_page(ledger: &Path) -> usize {
    let bytes = std::fs::read(ledger).unwrap();
    let needle = NAMES.concat();
    let hits: Vec<usize> = bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle.as_bytes())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(hits.len(), 1, "records page not found uniquely: {hits:?}");
    hits[0] / 4096 * 4096
}

/// Cuts the file at `path` down to `len` bytes.
fn truncate(path: &Path, len: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(len).unwrap();
}

fn flip(path: &Path, range: std::ops::Range<usize>) {
    let mut bytes = std::fs::read(path).unwrap();
    for b in &mut bytes[range] {
        *b ^= 0xFF;
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn regression_flipped_bytes_in_the_records_page_are_moved_aside_and_rebuilt() {
    // Damage in the middle of the file, in the page every prepare reads. The file header is
    // intact, so the ledger opens; the damage shows only when the records are read or written.
    for (what, at) in [
        ("page type", 0..1),
        ("entry count", 2..4),
        ("page header", 1..16),
    ] {
        let env = Env::with_assets().warmed();
        let page = records_page(&env.ledger());
        flip(&env.ledger(), page + at.start..page + at.end);
        assert_recovers(&env, what);
    }
}

#[test]
fn flipped_bytes_in_a_record_value_are_a_miss_never_trust() {
    let env = Env::with_assets().warmed();
    let bytes = std::fs::read(env.ledger()).unwrap();
    let page = records_page(&env.ledger());
    let keys_end = page
        + bytes[page..page + 4096]
            .windows(NAMES.concat().len())
            .position(|w| w == NAMES.concat().as_bytes())
            .unwrap()
        + NAMES.concat().len();
    // The first value follows the keys: tag byte, then the digest.
    assert_eq!(bytes[keys_end], 1, "expected the record format tag");
    flip(&env.ledger(), keys_end + 1..keys_end + 9);
    let (code, outcomes, stderr) = env.prepare_all();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        outcomes[0], "verified",
        "a damaged record vouched for its file: {stderr}"
    );
    assert_eq!(env.prepare_all_ok(), vec!["cached"; 3]);
}

#[test]
fn missing_ledger_is_recreated() {
    let env = Env::with_assets().warmed();
    std::fs::remove_file(env.ledger()).unwrap();
    assert_eq!(env.prepare_all_ok(), vec!["verified"; 3]);
    assert!(env.corrupt_files().is_empty());
    assert_eq!(env.prepare_all_ok(), vec!["cached"; 3]);
}

/// Writes a ledger with redb directly: `meta.schema_version = version`, and a record that
/// vouches for every asset's live file.
fn hand_made_ledger(env: &Env, version: u64) {
    std::fs::create_dir_all(env.state()).unwrap();
    let db = redb_builder().create(env.ledger()).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut meta = txn.open_table(META).unwrap();
        meta.insert("schema_version", version).unwrap();
        let mut records = txn.open_table(RECORDS).unwrap();
        for rel in NAMES {
            records
                .insert(rel, env.vouching_record(rel).encode().as_slice())
                .unwrap();
        }
    }
    txn.commit().unwrap();
}

#[test]
fn hand_made_current_schema_ledger_is_trusted() {
    // The control for the newer-schema test below: the same file at CURRENT is trusted.
    let env = Env::with_assets();
    hand_made_ledger(&env, bootvault::migrations::CURRENT);
    assert_eq!(env.prepare_all_ok(), vec!["cached"; 3]);
}

/// Asserts the file at `path` still holds exactly `before`, reporting the first difference.
fn assert_same_bytes(path: &Path, before: &[u8], what: &str) {
    let now = std::fs::read(path).unwrap();
    if now != before {
        let at = now
            .iter()
            .zip(before)
            .position(|(a, b)| a != b)
            .unwrap_or(now.len().min(before.len()));
        panic!(
            "{what}: a newer ledger was modified: {} -> {} bytes, first difference at offset {at}",
            before.len(),
            now.len()
        );
    }
}

#[test]
fn newer_schema_ledger_is_never_trusted_and_left_byte_identical() {
    let env = Env::with_assets();
    hand_made_ledger(&env, bootvault::migrations::CURRENT + 1);
    let before = std::fs::read(env.ledger()).unwrap();
    for run in 0..2 {
        let (code, outcomes, stderr) = env.prepare_all();
        assert_eq!(code, 0, "run {run}: {stderr}");
        assert_eq!(outcomes, vec!["verified"; 3], "run {run}: {stderr}");
        assert_same_bytes(&env.ledger(), &before, &format!("run {run}"));
        assert!(
            env.corrupt_files().is_empty(),
            "a newer ledger was moved aside"
        );
    }
    // Read-only views work on it too, and leave it alone.
    let out = env.debug("ls", &[]);
    assert_eq!(out.code, 0);
    assert_same_bytes(&env.ledger(), &before, "debug ls");
    // Its schema version is as written.
    let db = redb_builder().open_read_only(env.ledger()).unwrap();
    let v = schema_version(&db.begin_read().unwrap());
    assert_eq!(v, bootvault::migrations::CURRENT + 1);
}

#[test]
fn unknown_record_format_tag_is_a_miss_not_a_panic() {
    let env = Env::with_assets();
    let write = |tag: u8| {
        let records = NAMES.map(|rel| {
            let mut bytes = env.vouching_record(rel).encode();
            bytes[0] = tag;
            (rel.to_string(), bytes)
        });
        insert_records(&env.root, records);
    };
    // Control: with the known tag the hand-made records are trusted.
    write(1);
    assert_eq!(env.prepare_all_ok(), vec!["cached"; 3]);
    // A format this build does not know.
    write(99);
    let (code, outcomes, stderr) = env.prepare_all();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(outcomes, vec!["verified"; 3], "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(env.prepare_all_ok(), vec!["cached"; 3]);

    // Debug views skip what they cannot decode, without failing.
    write(99);
    for (sub, args) in [("ls", &[][..]), ("check", &[]), ("show", &["assets/alpha"])] {
        let out = env.debug(sub, args);
        let stderr = &out.stderr;
        assert_eq!(out.code, 0, "debug {sub} {args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// Issue: a ledger with a damaged second half was rebuilt correctly (exit 0) but redb's panics
/// printed three "thread 'main' panicked at redb/.../btree.rs" blocks, read by users as a
/// crash. Caught panics are kept off stderr: at most one warning line names the ledger.
#[test]
fn regression_a_damaged_half_prints_no_panic_text() {
    for backtrace in ["0", "1"] {
        let env = Env::with_assets().warmed();
        let len = std::fs::metadata(env.ledger()).unwrap().len() as usize;
        flip(&env.ledger(), len / 2..len);
        let mut cmd = prepare_cmd(&env.root, &env.manifest(), &[]);
        cmd.env("RUST_BACKTRACE", backtrace);
        let r = run_cmd(cmd);
        assert_eq!(r.code, 0, "{}", r.describe());
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
        assert!(!r.stderr.contains("stack backtrace"), "{}", r.stderr);
        let lines: Vec<&str> = r.stderr.lines().collect();
        assert!(lines.len() <= 2, "{}", r.stderr);
        assert!(
            lines.iter().all(|l| l.contains("ledger")),
            "a line that does not name the ledger: {}",
            r.stderr
        );
        assert_eq!(env.prepare_all_ok(), vec!["cached"; 3]);
    }
}

/// Issue: a fifo at the ledger path blocked `prepare` forever in `open`. It is not a regular
/// file: never opened, the prepare degrades to re-hashing and finishes.
#[test]
fn regression_a_fifo_at_the_ledger_path_never_blocks() {
    let env = Env::with_assets();
    std::fs::create_dir_all(env.ledger().parent().unwrap()).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        env.ledger().as_path(),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let mut child = prepare_cmd(&env.root, &env.manifest(), &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("prepare blocked on a fifo at the ledger path");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let r = common::Run::from(child.wait_with_output().unwrap());
    assert_eq!(r.code, 0, "{}", r.describe());
    let v = r.json();
    for a in v["assets"].as_array().unwrap() {
        assert_eq!(a["outcome"], "verified", "{v}");
    }
    assert!(r.stderr.contains("not a regular file"), "{}", r.stderr);
}

// Found by fuzzing (fuzz/ ledger_record): a record value whose string length prefix claims
// 2^60 bytes made the decoder allocate that much, and the process aborted ("memory
// allocation of 1152921504606846976 bytes failed", SIGABRT) on every read of the ledger.
#[test]
fn fuzz_record_with_a_huge_string_length_is_a_miss_not_an_abort() {
    let env = Env::with_assets();
    let version = b"2026.11.0";
    let records = NAMES.map(|rel| {
        let bytes = env.vouching_record(rel).encode();
        // The manifest version is a one-byte length, then its bytes.
        let at = bytes
            .windows(version.len() + 1)
            .position(|w| w[0] as usize == version.len() && &w[1..] == version)
            .expect("the manifest version is in the record");
        let mut bad = bytes[..at].to_vec();
        bad.push(253); // bincode varint: a u64 length follows
        bad.extend_from_slice(&(1u64 << 60).to_le_bytes());
        bad.extend_from_slice(&bytes[at + 1..]);
        (rel.to_string(), bad)
    });
    insert_records(&env.root, records);
    let (code, outcomes, stderr) = env.prepare_all();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(outcomes, vec!["verified"; 3], "{stderr}");
    assert!(!stderr.contains("memory allocation"), "{stderr}");
    assert_eq!(env.prepare_all_ok(), vec!["cached"; 3]);
}

/// An asset whose path is `ledger` does not share its lock file with ledger recovery: the
/// prepare that holds the asset's lock while the committer finds the ledger damaged and moves
/// it aside finishes. Before: both used `locks/<hash of "ledger">`, so recovery could block on
/// the lock its own process held.
#[test]
fn regression_an_asset_named_ledger_does_not_share_the_ledger_lock() {
    let env = Env::new();
    let data = blob(7, 4096);
    env.put("ledger", &data);
    let m = env.write_manifest(
        "m.json",
        "2026.11.0",
        vec![asset("ledger", "ledger", &data)],
    );
    // A damaged ledger: the first write handle (the committer's) moves it aside.
    std::fs::create_dir_all(env.state()).unwrap();
    std::fs::write(env.ledger(), blob(98, 16384)).unwrap();
    let mut child = prepare_cmd(&env.root, &m, &[])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("prepare blocked on its own lock");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let r = common::wait(child);
    assert_eq!(r.code, 0, "{}", r.describe());
    assert_eq!(env.corrupt_files().len(), 1, "{}", r.describe());
    let locks: Vec<String> = std::fs::read_dir(env.state().join("locks"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(locks.contains(&"ledger.lock".to_string()), "{locks:?}");
}
