//! Helpers shared by every integration test, the library's and the binary's: test data,
//! native manifests, prepare reports, a store in a temp dir, the loopback `Origin`, and the
//! ledger file seen through redb. Nothing here runs the binary, so the library package's
//! tests use this file alone (`#[path = "common/shared.rs"] mod common;`); the binary's tests
//! get it through `mod common;` (tests/common/mod.rs), with the helpers that run the binary.

// Every test binary compiles this whole module but calls only some of it; without this each
// binary would warn about the helpers that it does not use.
#![allow(dead_code)]

use bootvault::Sha256Digest;
use bootvault_testkit::origin::{Fault, Origin};
use redb::TableDefinition;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * KIB;

// ---- test data --------------------------------------------------------------------------------

/// Lower-case hex sha256 of `bytes`.
pub fn sha(bytes: &[u8]) -> String {
    Sha256Digest::of(bytes).to_hex()
}

/// Deterministic pseudo-random content, different per `seed` (one byte per xorshift step: not
/// the same bytes as `data`).
pub fn blob(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Deterministic pseudo-random content from the library's demo generator (fast for MiB-sized
/// bodies).
pub fn data(seed: u64, len: usize) -> Vec<u8> {
    bootvault_testkit::demo::pseudo_random(seed, len)
}

pub fn file_url(p: &Path) -> String {
    url::Url::from_file_path(p).unwrap().to_string()
}

/// The last component of a relative path (`bin/runc` → `runc`).
pub fn name_of(rel: &str) -> &str {
    rel.rsplit('/').next().unwrap()
}

// ---- native manifests -------------------------------------------------------------------------

/// A native manifest asset for `bytes` (no URL: verified in place).
pub fn asset(name: &str, path: &str, bytes: &[u8]) -> Value {
    json!({"name": name, "path": path, "sha256": sha(bytes), "size": bytes.len()})
}

/// A native manifest asset for `bytes`, fetched from `urls`.
pub fn asset_with_urls(name: &str, path: &str, bytes: &[u8], urls: &[impl AsRef<str>]) -> Value {
    let urls: Vec<&str> = urls.iter().map(|u| u.as_ref()).collect();
    with(asset(name, path, bytes), "urls", json!(urls))
}

/// `a` with `key` set to `v`.
pub fn with(mut a: Value, key: &str, v: Value) -> Value {
    a[key] = v;
    a
}

/// A native manifest: `version` and `assets`.
pub fn native(version: &str, assets: Vec<Value>) -> Value {
    json!({"version": version, "assets": assets})
}

// ---- prepare reports --------------------------------------------------------------------------

/// name → outcome of a prepare report.
pub fn outcomes(report: &Value) -> BTreeMap<String, String> {
    report["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_string(),
                a["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The entry of asset `name` in a prepare report.
pub fn asset_report<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["assets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no asset {name} in {report}"))
}

// ---- a store in a temp dir --------------------------------------------------------------------

/// A temp dir holding an empty ROOT, and beside it (outside ROOT) manifests and other files.
pub struct Env {
    pub tmp: TempDir,
    pub root: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        Env { tmp, root }
    }

    /// ROOT/`rel`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// A path in the temp dir, beside ROOT (never inside it).
    pub fn outside(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Writes `bytes` at ROOT/`rel` (creating its parents).
    pub fn put(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// The content of ROOT/`rel`.
    pub fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.path(rel)).unwrap()
    }

    pub fn state(&self) -> PathBuf {
        self.root.join(".bootvault")
    }

    pub fn ledger(&self) -> PathBuf {
        self.state().join("ledger.redb")
    }

    /// Writes a native manifest at `file` beside ROOT.
    pub fn write_manifest(&self, file: &str, version: &str, assets: Vec<Value>) -> PathBuf {
        let p = self.outside(file);
        std::fs::write(&p, native(version, assets).to_string()).unwrap();
        p
    }

    /// Every file under ROOT outside the state dir, relative, sorted.
    pub fn files(&self) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let e = e.unwrap();
                let p = e.path();
                if e.file_type().unwrap().is_dir() {
                    if p.file_name().unwrap() != ".bootvault" {
                        walk(root, &p, out);
                    }
                } else {
                    out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root, &self.root, &mut out);
        out.sort();
        out
    }

    /// Leftover partials / checkpoints / temp files in the state dir's tmp/.
    pub fn leftovers(&self) -> Vec<String> {
        match std::fs::read_dir(self.state().join("tmp")) {
            Ok(rd) => rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

// ---- the loopback origin ----------------------------------------------------------------------

/// A loopback origin serving `body` at `path`, with `fault` injected into its GET responses.
pub fn origin_serving(path: &str, body: &[u8], fault: Fault) -> Origin {
    let origin = Origin::start().unwrap();
    serve_faulty(&origin, path, body, fault);
    origin
}

/// Serves `body` at `path` of `origin`, with `fault` injected into its GET responses.
pub fn serve_faulty(origin: &Origin, path: &str, body: &[u8], fault: Fault) {
    origin.add(path, body.to_vec().into());
    origin.set_fault(path, fault);
}

/// A fault that only throttles the body to about `bytes_per_sec`.
pub fn throttled(bytes_per_sec: usize) -> Fault {
    Fault {
        bytes_per_sec: Some(bytes_per_sec as u64),
        ..Fault::default()
    }
}

// ---- the ledger: lost records, and the file through redb ----------------------------------------

/// The keys of `expected` that `records` lacks (records lost).
pub fn missing_keys<'a, V, W>(
    expected: &'a BTreeMap<String, V>,
    records: &BTreeMap<String, W>,
) -> Vec<&'a String> {
    expected
        .keys()
        .filter(|k| !records.contains_key(*k))
        .collect()
}

pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records_v1");

/// A redb builder that opens the ledger the way bootvault does.
pub fn redb_builder() -> redb::Builder {
    let mut b = redb::Builder::new();
    b.set_concurrency_mode(redb::ConcurrencyMode::MultiWriter);
    b
}

/// `meta.schema_version` as seen by `txn`.
pub fn schema_version(txn: &redb::ReadTransaction) -> u64 {
    txn.open_table(META)
        .unwrap()
        .get("schema_version")
        .unwrap()
        .unwrap()
        .value()
}

/// Writes raw `records_v1` entries (path, encoded record) into the ledger of the store at
/// `root`, in one write transaction of the library.
pub fn insert_records(root: &Path, entries: impl IntoIterator<Item = (String, Vec<u8>)>) {
    let store = bootvault::Store::open(root).unwrap();
    let wrote = store
        .ledger()
        .write(|txn| {
            let mut t = txn.open_table(RECORDS)?;
            for (path, bytes) in entries {
                t.insert(path.as_str(), bytes.as_slice())?;
            }
            Ok(())
        })
        .unwrap();
    assert!(wrote);
}
