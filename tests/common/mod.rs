//! Helpers of the tests that run the `bootvault` binary (each such test file has
//! `mod common;`): everything in shared.rs, plus running the real binary and reading its
//! `--json` output. The binary is only known to the CLI package's tests
//! (`CARGO_BIN_EXE_bootvault`), hence the split: the library's tests include shared.rs alone.

// Every test binary compiles this whole module but calls only some of it; without this each
// binary would warn about the helpers that it does not use.
#![allow(dead_code)]

mod shared;

pub use shared::*;

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

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

// ---- a store in a temp dir, through the binary ------------------------------------------------

impl Env {
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
}
