//! Fetch behaviour end to end: the real `bootvault` binary (or the library where a knob is
//! needed that the CLI does not expose) against the real loopback `Origin` with injected faults.

use bootvault::origin::{Fault, Origin};
use bootvault::{Manifest, Outcome, Sha256Digest, Store};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const MIB: usize = 1024 * 1024;

fn data(seed: u64, len: usize) -> Vec<u8> {
    bootvault::demo::pseudo_random(seed, len)
}

fn sha_hex(bytes: &[u8]) -> String {
    Sha256Digest::of(bytes).to_hex()
}

/// A native manifest entry for `bytes`, fetched from `urls`.
fn asset(name: &str, path: &str, bytes: &[u8], urls: &[String]) -> Value {
    json!({
        "name": name,
        "path": path,
        "sha256": sha_hex(bytes),
        "size": bytes.len(),
        "urls": urls,
    })
}

fn write_manifest(dir: &Path, assets: Vec<Value>) -> PathBuf {
    let path = dir.join("manifest.json");
    let text = json!({ "version": "test-1", "assets": assets }).to_string();
    std::fs::write(&path, text).unwrap();
    path
}

/// A fresh ROOT (inside a temp dir that also holds the manifest, outside ROOT).
struct Env {
    tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir(&root).unwrap();
        Env { tmp, root }
    }

    fn manifest(&self, assets: Vec<Value>) -> PathBuf {
        write_manifest(self.tmp.path(), assets)
    }

    fn state(&self) -> PathBuf {
        self.root.join(".bootvault")
    }

    fn prepare(&self, manifest: &Path, extra: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_bootvault"))
            .arg("prepare")
            .arg("--dir")
            .arg(&self.root)
            .arg("--manifest")
            .arg(manifest)
            .arg("--json")
            .args(extra)
            .output()
            .unwrap()
    }

    /// Every file under ROOT outside the state dir, relative, sorted.
    fn files(&self) -> Vec<String> {
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
    fn leftovers(&self) -> Vec<String> {
        match std::fs::read_dir(self.state().join("tmp")) {
            Ok(rd) => rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited normally")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn report(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            stderr(out)
        )
    })
}

/// The outcome of asset `name` in a `prepare --json` report.
fn outcome(out: &Output, name: &str) -> String {
    let r = report(out);
    let a = r["assets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("asset {name} not in report: {r}"));
    a["outcome"].as_str().unwrap().to_string()
}

fn assert_ok(out: &Output) {
    assert_eq!(
        code(out),
        0,
        "prepare failed\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        stderr(out)
    );
}

#[test]
fn server_errors_then_success_is_downloaded_after_retries() {
    let env = Env::new();
    let origin = Origin::start().unwrap();
    let body = data(1, MIB);
    origin.add("k", body.clone().into());
    origin.set_fault(
        "k",
        Fault {
            fail_first: 2,
            fail_status: 502,
            ..Fault::default()
        },
    );
    let m = env.manifest(vec![asset("kernel", "kernel", &body, &[origin.url("k")])]);
    let out = env.prepare(&m, &["--retries", "3"]);
    assert_ok(&out);
    assert_eq!(outcome(&out, "kernel"), "downloaded");
    assert_eq!(origin.requests("k"), 3, "two 502s, then the 200");
    assert_eq!(std::fs::read(env.root.join("kernel")).unwrap(), body);
    assert_eq!(env.leftovers(), Vec::<String>::new());
}

#[test]
fn too_many_requests_with_retry_after_is_honoured() {
    let env = Env::new();
    let origin = Origin::start().unwrap();
    let body = data(2, 256 * 1024);
    origin.add("k", body.clone().into());
    origin.set_fault(
        "k",
        Fault {
            fail_first: 1,
            fail_status: 429,
            retry_after_secs: Some(1),
            ..Fault::default()
        },
    );
    let manifest = Manifest::from_json_str(
        &json!({"version": "v", "assets": [asset("k", "k", &body, &[origin.url("k")])]})
            .to_string(),
    )
    .unwrap();
    // A 1 ms backoff: any wait of a second or more can only come from Retry-After.
    let opts = bootvault::fetch::FetchOptions {
        retries: 2,
        backoff: Duration::from_millis(1),
        max_backoff: Duration::from_secs(10),
        ..Default::default()
    };
    let store = Store::builder(&env.root)
        .fetch_options(opts)
        .jobs(1)
        .open()
        .unwrap();
    let t = Instant::now();
    let report = store.prepare(&manifest).unwrap();
    let took = t.elapsed();
    let a = &report.assets[0];
    assert_eq!(a.outcome, Some(Outcome::Downloaded), "{:?}", a.error);
    assert_eq!(origin.requests("k"), 2, "one 429, then the 200");
    assert!(
        took >= Duration::from_secs(1),
        "retried after {took:?}, before the 1 s Retry-After"
    );
    assert_eq!(std::fs::read(env.root.join("k")).unwrap(), body);
}

#[test]
fn not_found_is_not_retried_and_the_next_mirror_is_used() {
    let env = Env::new();
    let origin = Origin::start().unwrap();
    let body = data(3, 300 * 1024);
    origin.add("mirror/k", body.clone().into());
    let urls = [origin.url("gone/k"), origin.url("mirror/k")];
    let m = env.manifest(vec![asset("k", "boot/k", &body, &urls)]);
    let out = env.prepare(&m, &["--retries", "3"]);
    assert_ok(&out);
    assert_eq!(outcome(&out, "k"), "downloaded");
    assert_eq!(origin.requests("gone/k"), 1, "a 404 is never retried");
    assert_eq!(origin.requests("mirror/k"), 1);
    assert_eq!(std::fs::read(env.root.join("boot/k")).unwrap(), body);
}

#[test]
fn every_mirror_failing_exits_1_and_names_each_url_with_its_reason() {
    let env = Env::new();
    let origin = Origin::start().unwrap();
    let body = data(4, 100 * 1024);
    origin.add("broken/k", body.clone().into());
    origin.set_fault(
        "broken/k",
        Fault {
            fail_first: 1000,
            fail_status: 500,
            ..Fault::default()
        },
    );
    let urls = [origin.url("gone/k"), origin.url("broken/k")];
    let m = env.manifest(vec![asset("vmlinuz", "k", &body, &urls)]);
    let out = env.prepare(&m, &["--retries", "1"]);
    assert_eq!(code(&out), 1, "stderr: {}", stderr(&out));
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.contains(&urls[0]))
        .unwrap_or_else(|| panic!("no error line names {}: {err}", urls[0]));
    assert!(line.contains("vmlinuz"), "the asset is named: {line}");
    assert!(line.contains("404"), "the 404 is the reason: {line}");
    assert!(line.contains(&urls[1]), "the second URL is named: {line}");
    assert!(line.contains("500"), "the 500 is the reason: {line}");
    assert_eq!(outcome(&out, "vmlinuz"), "failed");
    assert_eq!(origin.requests("gone/k"), 1);
    assert_eq!(origin.requests("broken/k"), 2, "first try plus one retry");
    assert_eq!(env.files(), Vec::<String>::new(), "nothing placed");
    assert_eq!(env.leftovers(), Vec::<String>::new());
}

#[test]
fn body_cut_mid_way_resumes_with_range() {
    let env = Env::new();
    let origin = Origin::start().unwrap();
    let size = 4 * MIB;
    let body = data(5, size);
    origin.add("rootfs", body.clone().into());
    origin.set_fault(
        "rootfs",
        Fault {
            cut_after: Some(3 * MIB as u64 / 2),
            ..Fault::default()
        },
    );
    let m = env.manifest(vec![asset(
        "rootfs",
        "rootfs.img",
        &body,
        &[origin.url("rootfs")],
    )]);
    let out = env.prepare(&m, &["--retries", "2"]);
    assert_ok(&out);
    assert_eq!(outcome(&out, "rootfs"), "downloaded");
    assert_eq!(origin.requests("rootfs"), 2);
    assert!(
        origin.range_requests("rootfs") >= 1,
        "the retry asked for a range"
    );
    let served = origin.bytes_served("rootfs");
    assert!(
        served < size as u64 * 5 / 4,
        "served {served} bytes for a {size}-byte asset: the prefix was fetched again"
    );
    assert_eq!(std::fs::read(env.root.join("rootfs.img")).unwrap(), body);
    assert_eq!(env.leftovers(), Vec::<String>::new());
}

#[test]
fn cut_mid_body_resumes_even_when_a_failing_mirror_is_tried_in_between() {
    let env = Env::new();
    let origin = Origin::start().unwrap();
    let size = 4 * MIB;
    let body = data(15, size);
    origin.add("primary", body.clone().into());
    // The primary cuts every one of its first three responses after 1 MiB; resuming makes
    // progress each time, restarting never gets past the first MiB.
    origin.set_fault(
        "primary",
        Fault {
            cut_after: Some(MIB as u64),
            cut_times: 3,
            ..Fault::default()
        },
    );
    // The mirror is down (a transient 503 each time).
    origin.add("mirror", body.clone().into());
    origin.set_fault(
        "mirror",
        Fault {
            fail_first: 1000,
            ..Fault::default()
        },
    );
    let urls = [origin.url("primary"), origin.url("mirror")];
    let m = env.manifest(vec![asset("rootfs", "rootfs.img", &body, &urls)]);
    let out = env.prepare(&m, &["--retries", "4"]);
    assert_ok(&out);
    assert_eq!(outcome(&out, "rootfs"), "downloaded");
    assert_eq!(std::fs::read(env.root.join("rootfs.img")).unwrap(), body);
    assert!(
        origin.range_requests("primary") >= 1,
        "the primary was never asked to resume"
    );
    let served = origin.bytes_served("primary");
    assert!(
        served < size as u64 * 5 / 4,
        "served {served} bytes for a {size}-byte asset: the partial was discarded when the \
         mirror was tried"
    );
}

#[test]
fn cut_primary_then_working_mirror_restarts_cleanly_from_the_mirror() {
    let env = Env::new();
    let origin = Origin::start().unwrap();
    let size = 2 * MIB;
    let body = data(16, size);
    origin.add("primary", body.clone().into());
    origin.add("mirror", body.clone().into());
    origin.set_fault(
        "primary",
        Fault {
            cut_after: Some(MIB as u64),
            ..Fault::default()
        },
    );
    let urls = [origin.url("primary"), origin.url("mirror")];
    let m = env.manifest(vec![asset("rootfs", "rootfs.img", &body, &urls)]);
    let out = env.prepare(&m, &["--retries", "2"]);
    assert_ok(&out);
    assert_eq!(outcome(&out, "rootfs"), "downloaded");
    assert_eq!(origin.requests("primary"), 1);
    assert_eq!(origin.requests("mirror"), 1);
    assert_eq!(
        origin.range_requests("mirror"),
        0,
        "a partial of the primary is never resumed against the mirror"
    );
    // The primary's prefix followed by the mirror's whole body would be the wrong bytes.
    assert_eq!(std::fs::read(env.root.join("rootfs.img")).unwrap(), body);
    assert_eq!(env.leftovers(), Vec::<String>::new());
}

#[test]
fn server_ignoring_range_after_a_cut_restarts_cleanly() {
    let env = Env::new();
    let origin = Origin::start().unwrap();
    let size = 2 * MIB;
    let body = data(6, size);
    origin.add("rootfs", body.clone().into());
    origin.set_fault(
        "rootfs",
        Fault {
            cut_after: Some(MIB as u64),
            ignore_range: true,
            ..Fault::default()
        },
    );
    let m = env.manifest(vec![asset(
        "rootfs",
        "rootfs.img",
        &body,
        &[origin.url("rootfs")],
    )]);
    let out = env.prepare(&m, &["--retries", "2"]);
    assert_ok(&out);
    assert_eq!(outcome(&out, "rootfs"), "downloaded");
    assert_eq!(
        origin.range_requests("rootfs"),
        1,
        "the retry asked for a range"
    );
    assert_eq!(
        origin.bytes_served("rootfs"),
        (size + MIB) as u64,
        "the cut prefix, then the whole body again"
    );
    // Both tries' bytes crossed the network: the restart counts the whole body again.
    let downloaded = report(&out)["assets"][0]["bytes_downloaded"]
        .as_u64()
        .unwrap();
    assert!(
        downloaded > size as u64,
        "bytes_downloaded {downloaded}: the bytes of the abandoned try are not counted"
    );
    // Appending the full 200 body to the kept prefix would give the wrong bytes here.
    assert_eq!(std::fs::read(env.root.join("rootfs.img")).unwrap(), body);
    assert_eq!(env.leftovers(), Vec::<String>::new());
}

#[test]
fn wrong_bytes_fail_and_leave_nothing_behind() {
    let env = Env::new();
    let origin = Origin::start().unwrap();
    let body = data(7, MIB);
    origin.add("k", body.clone().into());
    origin.set_fault(
        "k",
        Fault {
            corrupt: true,
            ..Fault::default()
        },
    );
    let m = env.manifest(vec![asset(
        "kernel",
        "boot/kernel",
        &body,
        &[origin.url("k")],
    )]);
    let out = env.prepare(&m, &["--retries", "2"]);
    assert_eq!(code(&out), 1, "stderr: {}", stderr(&out));
    assert_eq!(outcome(&out, "kernel"), "failed");
    let err = stderr(&out);
    assert!(
        err.contains("kernel") && err.contains(&origin.url("k")),
        "{err}"
    );
    assert!(err.contains("sha256"), "the reason is the digest: {err}");
    assert_eq!(
        origin.requests("k"),
        1,
        "a URL serving wrong bytes is not retried"
    );
    assert!(!env.root.join("boot/kernel").exists());
    assert_eq!(env.files(), Vec::<String>::new(), "no stray file in ROOT");
    assert_eq!(
        env.leftovers(),
        Vec::<String>::new(),
        "a partial with the wrong digest is not kept"
    );
}

#[test]
fn body_longer_than_size_fails_and_places_nothing() {
    let env = Env::new();
    let origin = Origin::start().unwrap();
    let body = data(8, 512 * 1024);
    let other = data(9, 512 * 1024);
    origin.add("long", body.clone().into());
    origin.add("chunked", other.clone().into());
    // Announced in Content-Length...
    origin.set_fault(
        "long",
        Fault {
            extra_bytes: 4096,
            ..Fault::default()
        },
    );
    // ...and only found out while streaming (no Content-Length).
    origin.set_fault(
        "chunked",
        Fault {
            extra_bytes: 4096,
            omit_content_length: true,
            ..Fault::default()
        },
    );
    let m = env.manifest(vec![
        asset("long", "long", &body, &[origin.url("long")]),
        asset("chunked", "chunked", &other, &[origin.url("chunked")]),
    ]);
    let out = env.prepare(&m, &["--retries", "1"]);
    assert_eq!(code(&out), 1, "stderr: {}", stderr(&out));
    assert_eq!(outcome(&out, "long"), "failed");
    assert_eq!(outcome(&out, "chunked"), "failed");
    let err = stderr(&out);
    for name in ["long", "chunked"] {
        let line = err
            .lines()
            .find(|l| l.contains(&origin.url(name)))
            .unwrap_or_else(|| panic!("no error line names {}: {err}", origin.url(name)));
        assert!(line.contains("size"), "the reason is the size: {line}");
        assert_eq!(
            origin.requests(name),
            1,
            "a body past the size is not retried"
        );
    }
    assert_eq!(env.files(), Vec::<String>::new(), "nothing placed");
    assert_eq!(env.leftovers(), Vec::<String>::new());
}

#[test]
fn throttled_but_flowing_download_outlives_the_idle_timeout() {
    let env = Env::new();
    let origin = Origin::start().unwrap();
    let size = 2 * MIB;
    let body = data(10, size);
    origin.add("slow", body.clone().into());
    origin.set_fault(
        "slow",
        Fault {
            bytes_per_sec: Some(MIB as u64),
            ..Fault::default()
        },
    );
    let m = env.manifest(vec![asset("slow", "slow", &body, &[origin.url("slow")])]);
    let t = Instant::now();
    let out = env.prepare(&m, &["--retries", "0", "--idle-timeout", "1"]);
    let took = t.elapsed();
    assert_ok(&out);
    assert_eq!(outcome(&out, "slow"), "downloaded");
    assert!(
        took > Duration::from_millis(1500),
        "the download took {took:?}: it should outlast the 1 s idle timeout"
    );
    assert_eq!(origin.requests("slow"), 1, "never timed out, never retried");
    assert_eq!(std::fs::read(env.root.join("slow")).unwrap(), body);
}

#[test]
fn stall_longer_than_the_idle_timeout_is_retried_and_resumed() {
    let env = Env::new();
    let origin = Origin::start().unwrap();
    let size = MIB;
    let body = data(11, size);
    origin.add("stall", body.clone().into());
    // Every response stalls for 6 s after 512 KiB of its own body; the resumed request gets
    // the remaining 512 KiB before it would stall, so it completes.
    origin.set_fault(
        "stall",
        Fault {
            stall: Some((512 * 1024, Duration::from_secs(6))),
            ..Fault::default()
        },
    );
    let m = env.manifest(vec![asset("stall", "stall", &body, &[origin.url("stall")])]);
    let out = env.prepare(&m, &["--retries", "2", "--idle-timeout", "1"]);
    assert_ok(&out);
    assert_eq!(outcome(&out, "stall"), "downloaded");
    assert_eq!(origin.requests("stall"), 2, "the stalled try was abandoned");
    assert_eq!(origin.range_requests("stall"), 1, "and resumed");
    let served = origin.bytes_served("stall");
    assert!(
        served < size as u64 * 5 / 4,
        "served {served} bytes for {size}"
    );
    assert_eq!(std::fs::read(env.root.join("stall")).unwrap(), body);
}

#[test]
fn offline_with_a_missing_asset_never_contacts_the_origin() {
    let env = Env::new();
    let origin = Origin::start().unwrap();
    let body = data(12, 64 * 1024);
    let initrd = data(17, 64 * 1024);
    origin.add("k", body.clone().into());
    origin.add("i", initrd.clone().into());
    let m = env.manifest(vec![
        asset("kernel", "kernel", &body, &[origin.url("k")]),
        asset("initrd", "initrd", &initrd, &[origin.url("i")]),
    ]);
    // The initrd is present but wrong: offline, it can be neither trusted nor repaired.
    let wrong = data(18, initrd.len());
    std::fs::write(env.root.join("initrd"), &wrong).unwrap();
    let out = env.prepare(&m, &["--offline"]);
    assert_eq!(code(&out), 1, "stderr: {}", stderr(&out));
    assert_eq!(outcome(&out, "kernel"), "failed");
    assert_eq!(outcome(&out, "initrd"), "failed");
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.contains("kernel"))
        .unwrap_or_else(|| panic!("no error names the kernel: {err}"));
    assert!(line.contains("offline"), "{line}");
    assert!(err.contains("initrd"), "{err}");
    assert_eq!(origin.total_requests(), 0);
    assert_eq!(env.files(), vec!["initrd".to_string()]);
    assert_eq!(
        std::fs::read(env.root.join("initrd")).unwrap(),
        wrong,
        "left as it was"
    );
}

#[test]
fn wrong_local_files_are_repaired_by_download() {
    let env = Env::new();
    let origin = Origin::start().unwrap();
    let same_size = data(13, 256 * 1024);
    let other_size = data(14, 256 * 1024);
    origin.add("a", same_size.clone().into());
    origin.add("b", other_size.clone().into());
    let m = env.manifest(vec![
        asset("a", "a", &same_size, &[origin.url("a")]),
        asset("b", "bin/b", &other_size, &[origin.url("b")]),
    ]);
    std::fs::write(env.root.join("a"), data(99, same_size.len())).unwrap();
    std::fs::create_dir(env.root.join("bin")).unwrap();
    std::fs::write(env.root.join("bin/b"), b"short and wrong").unwrap();
    let out = env.prepare(&m, &[]);
    assert_ok(&out);
    assert_eq!(outcome(&out, "a"), "repaired");
    assert_eq!(outcome(&out, "b"), "repaired");
    assert_eq!(std::fs::read(env.root.join("a")).unwrap(), same_size);
    assert_eq!(std::fs::read(env.root.join("bin/b")).unwrap(), other_size);
    assert_eq!(origin.requests("a"), 1);
    assert_eq!(origin.requests("b"), 1);
    // The repair is remembered: the next prepare trusts both without reading or fetching.
    let again = env.prepare(&m, &[]);
    assert_ok(&again);
    assert_eq!(outcome(&again, "a"), "cached");
    assert_eq!(outcome(&again, "b"), "cached");
    assert_eq!(origin.total_requests(), 2);
}
