//! Helpers shared by the integration tests (each test file has `mod common;`): test data,
//! native manifests, running the real `bootvault` binary and reading its `--json` output, a
//! store in a temp dir, the loopback `Origin`, and the ledger file seen through redb.

// Every test binary compiles this whole module but calls only some of it; without this each
// binary would warn about the helpers that it does not use.
#![allow(dead_code)]

use bootvault::Sha256Digest;
use bootvault_testkit::origin::{Fault, Origin};
use redb::TableDefinition;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;
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

// ---- the binary -------------------------------------------------------------------------------

/// A command for the `bootvault` binary under test.
pub fn bootvault_cmd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bootvault"))
}

/// `bootvault prepare --dir ROOT --manifest M --json EXTRA...`, not started yet.
pub fn prepare_cmd(root: &Path, manifest: &Path, extra: &[&str]) -> Command {
    let mut cmd = bootvault_cmd();
    cmd.arg("prepare")
        .arg("--dir")
        .arg(root)
        .arg("--manifest")
        .arg(manifest)
        .arg("--json")
        .args(extra);
    cmd
}

/// The result of one run of the binary.
pub struct Run {
    /// The exit code; -1 when killed by a signal.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    /// stdout parsed as exactly one JSON value (and that value is an object).
    pub fn json(&self) -> Value {
        let mut values = serde_json::Deserializer::from_str(&self.stdout).into_iter::<Value>();
        let first = values
            .next()
            .unwrap_or_else(|| panic!("no JSON on stdout; stderr: {}", self.stderr))
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", self.stdout));
        assert!(
            values.next().is_none(),
            "stdout holds more than one JSON value: {:?}",
            self.stdout
        );
        assert!(first.is_object(), "stdout JSON is not an object: {first}");
        first
    }

    /// Exit code, stdout and stderr, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "exit code {}\nstdout: {}\nstderr: {}",
            self.code, self.stdout, self.stderr
        )
    }

    /// Asserts the exit code (the message shows the whole run).
    pub fn assert_code(&self, code: i32) -> &Run {
        assert_eq!(self.code, code, "{}", self.describe());
        self
    }

    /// The JSON report of a run that must have exited 0.
    pub fn report_ok(&self) -> Value {
        self.assert_code(0).json()
    }

    /// The outcome of asset `name` in this `prepare --json` report.
    pub fn outcome(&self, name: &str) -> String {
        asset_report(&self.json(), name)["outcome"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

/// Runs `cmd` to completion, killing it after 60 s.
pub fn run_cmd(cmd: Command) -> Run {
    assert_cmd::Command::from_std(cmd)
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap()
        .into()
}

/// `bootvault ARGS...`, run to completion.
pub fn run(args: &[&str]) -> Run {
    let mut cmd = bootvault_cmd();
    cmd.args(args);
    run_cmd(cmd)
}

/// Waits for a run started with `Env::spawn_prepare`.
pub fn wait(child: Child) -> Run {
    child.wait_with_output().unwrap().into()
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

    /// `bootvault prepare --dir ROOT --manifest M --json EXTRA...`
    pub fn prepare(&self, manifest: &Path, extra: &[&str]) -> Run {
        run_cmd(prepare_cmd(&self.root, manifest, extra))
    }

    /// A prepare that must succeed; returns its JSON report.
    pub fn prepare_ok(&self, manifest: &Path, extra: &[&str]) -> Value {
        let r = self.prepare(manifest, extra);
        assert_eq!(r.code, 0, "prepare failed: stderr {}", r.stderr);
        r.json()
    }

    /// Starts a prepare in the background (stdout and stderr piped; see `wait`).
    pub fn spawn_prepare(&self, manifest: &Path, extra: &[&str]) -> Child {
        prepare_cmd(&self.root, manifest, extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// `bootvault debug SUB --dir ROOT ARGS... --json`
    pub fn debug(&self, sub: &str, args: &[&str]) -> Run {
        let mut all = vec!["debug", sub];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--dir", self.root.to_str().unwrap(), "--json"]);
        run(&all)
    }

    /// The ledger's records by path, from `debug ls --json` (which must exit 0).
    pub fn records(&self) -> BTreeMap<String, Value> {
        let ls = self.debug("ls", &[]);
        assert_eq!(ls.code, 0, "{}", ls.describe());
        ls.json()["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["path"].as_str().unwrap().to_string(), r.clone()))
            .collect()
    }

    /// path → sha256 of every ledger record, from `debug ls --json`.
    pub fn record_digests(&self) -> BTreeMap<String, String> {
        self.records()
            .into_iter()
            .map(|(path, r)| (path, r["sha256"].as_str().unwrap().to_string()))
            .collect()
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
