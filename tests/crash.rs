//! SIGKILL in the middle of real `bootvault prepare` processes: the next prepare recovers, no
//! partial ever shows at an asset path, no stale partials pile up, the ledger stays usable.

use bootvault::Sha256Digest;
use bootvault::origin::{Fault, Origin};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

fn data(seed: u64, len: usize) -> Vec<u8> {
    bootvault::demo::pseudo_random(seed, len)
}

fn asset(name: &str, path: &str, bytes: &[u8], urls: &[String]) -> Value {
    json!({
        "name": name,
        "path": path,
        "sha256": Sha256Digest::of(bytes).to_hex(),
        "size": bytes.len(),
        "urls": urls,
    })
}

fn write_manifest(path: &Path, assets: Vec<Value>) -> PathBuf {
    std::fs::write(
        path,
        json!({ "version": "crash-1", "assets": assets }).to_string(),
    )
    .unwrap();
    path.to_path_buf()
}

fn spawn_prepare(root: &Path, manifest: &Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_bootvault"))
        .arg("prepare")
        .arg("--dir")
        .arg(root)
        .arg("--manifest")
        .arg(manifest)
        .arg("--json")
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The parsed report of a successful `prepare --json`.
fn report(out: &Output) -> Value {
    assert_eq!(out.status.code(), Some(0), "{}", describe(out));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{}",
        describe(out)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(out)))
}

fn outcomes(report: &Value) -> BTreeMap<String, String> {
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

/// Files under ROOT outside the state dir, relative.
fn root_files(root: &Path) -> Vec<String> {
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
    walk(root, root, &mut out);
    out.sort();
    out
}

/// Entries of the state dir's tmp/.
fn tmp_entries(root: &Path) -> Vec<String> {
    match std::fs::read_dir(root.join(".bootvault/tmp")) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Polls until `origin` has served `at_least` bytes of `path`, checking on every poll that the
/// asset path holds nothing yet (a partial must never show there).
fn wait_for_bytes(origin: &Origin, path: &str, at_least: u64, child: &mut Child, asset: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while origin.bytes_served(path) < at_least {
        assert!(Instant::now() < deadline, "download of {path} stalled");
        assert!(child.try_wait().unwrap().is_none(), "prepare exited early");
        assert!(
            std::fs::symlink_metadata(asset).is_err(),
            "{} exists mid-download",
            asset.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn sigkill(child: &mut Child) {
    // `Child::kill` is SIGKILL on Unix.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "{status:?}"
    );
}

#[test]
fn sigkill_mid_download_then_prepare_again_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let origin = Origin::start().unwrap();
    let size = 4 * MIB;
    let body = data(1, size);
    origin.add("rootfs", body.clone().into());
    origin.set_fault(
        "rootfs",
        Fault {
            bytes_per_sec: Some(4 * MIB as u64),
            ..Fault::default()
        },
    );
    let dest = root.join("img/rootfs.img");
    let manifest = write_manifest(
        &tmp.path().join("m.json"),
        vec![asset(
            "rootfs",
            "img/rootfs.img",
            &body,
            &[origin.url("rootfs")],
        )],
    );
    // Two downloads killed part way, by two different processes.
    for round in 1..=2u64 {
        let mut child = spawn_prepare(&root, &manifest, &["--retries", "0"]);
        let already = origin.bytes_served("rootfs");
        wait_for_bytes(
            &origin,
            "rootfs",
            already + MIB as u64 * round / 2 + 1,
            &mut child,
            &dest,
        );
        sigkill(&mut child);
        assert!(
            std::fs::symlink_metadata(&dest).is_err(),
            "a partial is at the asset path"
        );
        assert_eq!(
            root_files(&root),
            Vec::<String>::new(),
            "no stray file in ROOT"
        );
    }
    assert_eq!(origin.requests("rootfs"), 2);
    origin.clear_fault("rootfs");
    let served_before = origin.bytes_served("rootfs");
    let out = spawn_prepare(&root, &manifest, &["--retries", "0"])
        .wait_with_output()
        .unwrap();
    let r = report(&out);
    assert_eq!(outcomes(&r)["rootfs"], "downloaded");
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(origin.requests("rootfs"), 3, "one request, no retry");
    let served = origin.bytes_served("rootfs") - served_before;
    assert!(
        served <= size as u64,
        "{served} bytes served for one {size}-byte asset"
    );
    assert_eq!(
        tmp_entries(&root),
        Vec::<String>::new(),
        "partials of the killed processes pile up"
    );
    assert_eq!(root_files(&root), vec!["img/rootfs.img".to_string()]);
}

#[test]
fn sigkill_after_a_checkpoint_resumes_with_range() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let origin = Origin::start().unwrap();
    let size = 4 * MIB;
    let body = data(2, size);
    origin.add("rootfs", body.clone().into());
    // The first GET is cut at 1 MiB (a transient error: the partial is checkpointed); the
    // retry resumes with Range and is killed part way.
    origin.set_fault(
        "rootfs",
        Fault {
            cut_after: Some(MIB as u64),
            bytes_per_sec: Some(4 * MIB as u64),
            ..Fault::default()
        },
    );
    let dest = root.join("rootfs.img");
    let manifest = write_manifest(
        &tmp.path().join("m.json"),
        vec![asset(
            "rootfs",
            "rootfs.img",
            &body,
            &[origin.url("rootfs")],
        )],
    );
    let mut child = spawn_prepare(&root, &manifest, &["--retries", "3"]);
    wait_for_bytes(&origin, "rootfs", (MIB + MIB / 2) as u64, &mut child, &dest);
    assert_eq!(origin.range_requests("rootfs"), 1, "the retry resumed");
    sigkill(&mut child);
    assert!(
        std::fs::symlink_metadata(&dest).is_err(),
        "a partial is at the asset path"
    );
    assert_eq!(root_files(&root), Vec::<String>::new());

    origin.clear_fault("rootfs");
    let served_before = origin.bytes_served("rootfs");
    let out = spawn_prepare(&root, &manifest, &["--retries", "0"])
        .wait_with_output()
        .unwrap();
    let r = report(&out);
    assert_eq!(outcomes(&r)["rootfs"], "downloaded");
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(
        origin.range_requests("rootfs"),
        2,
        "the next process resumed with Range"
    );
    let served = origin.bytes_served("rootfs") - served_before;
    assert!(
        served > 0 && served <= (size - MIB / 2) as u64,
        "{served} bytes served after the crash: the checkpointed prefix was fetched again"
    );
    let downloaded = r["assets"][0]["bytes_downloaded"].as_u64().unwrap();
    assert!(downloaded < size as u64, "bytes_downloaded {downloaded}");
    assert_eq!(tmp_entries(&root), Vec::<String>::new());
}

/// Rounds of three concurrent `--verify always` prepares (each re-hashes every asset and
/// writes one record per asset), SIGKILLed at staggered moments. Returns how many were killed
/// while still running.
fn kill_rounds(root: &Path, manifest: &Path, rounds: u64) -> usize {
    let mut killed = 0;
    for round in 0..rounds {
        let mut children: Vec<Child> = (0..3)
            .map(|j| {
                let jobs = (j + 1).to_string();
                spawn_prepare(root, manifest, &["--verify", "always", "--jobs", &jobs])
            })
            .collect();
        std::thread::sleep(Duration::from_millis(5 + 30 * round));
        for child in &mut children {
            if child.try_wait().unwrap().is_none() {
                sigkill(child);
                killed += 1;
            }
        }
    }
    killed
}

/// path -> sha256 of every ledger record, from `debug ls --json`.
fn ledger_records(root: &Path) -> BTreeMap<String, String> {
    let ls = Command::new(env!("CARGO_BIN_EXE_bootvault"))
        .args(["debug", "ls", "--json", "--dir"])
        .arg(root)
        .output()
        .unwrap();
    assert_eq!(ls.status.code(), Some(0), "{}", describe(&ls));
    let v: Value = serde_json::from_slice(&ls.stdout).unwrap();
    v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap().to_string(),
                r["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn sigkill_during_many_verifying_prepares_leaves_a_usable_ledger() {
    const FILES: usize = 400;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("lib")).unwrap();
    let mut assets = Vec::new();
    let mut expected = BTreeMap::new();
    for i in 0..FILES {
        let path = format!("lib/f{i:04}");
        let body = data(i as u64 + 10, 2 * KIB + i);
        std::fs::write(root.join(&path), &body).unwrap();
        expected.insert(path.clone(), Sha256Digest::of(&body).to_hex());
        assets.push(asset(&format!("f{i:04}"), &path, &body, &[]));
    }
    let manifest = write_manifest(&tmp.path().join("m.json"), assets);

    // Cold store: kills land while the ledger is created and first filled.
    let killed = kill_rounds(&root, &manifest, 6);
    assert!(
        killed > 0,
        "every prepare finished before its kill: the test proved nothing"
    );
    let out = spawn_prepare(&root, &manifest, &[])
        .wait_with_output()
        .unwrap();
    let got = outcomes(&report(&out));
    assert_eq!(got.len(), FILES);
    assert!(
        got.values().all(|o| o == "verified" || o == "cached"),
        "{got:?}"
    );
    assert_eq!(ledger_records(&root), expected);
    let out = spawn_prepare(&root, &manifest, &[])
        .wait_with_output()
        .unwrap();
    let warm = outcomes(&report(&out));
    assert!(warm.values().all(|o| o == "cached"), "{warm:?}");

    // Full ledger: kills land in the middle of record writes. Records committed before a
    // crash must survive it.
    let killed = kill_rounds(&root, &manifest, 6);
    assert!(
        killed > 0,
        "every prepare finished before its kill: the test proved nothing"
    );
    // One write of an unrelated asset (it repairs the ledger if the crash left it dirty);
    // if the ledger had been discarded, only this record would be left.
    let extra = data(7, 3000);
    std::fs::write(root.join("extra"), &extra).unwrap();
    let extra_manifest = write_manifest(
        &tmp.path().join("extra.json"),
        vec![asset("extra", "extra", &extra, &[])],
    );
    let out = spawn_prepare(&root, &extra_manifest, &[])
        .wait_with_output()
        .unwrap();
    assert_eq!(outcomes(&report(&out))["extra"], "verified");
    let mut with_extra = expected.clone();
    with_extra.insert("extra".into(), Sha256Digest::of(&extra).to_hex());
    let records = ledger_records(&root);
    let lost: Vec<&String> = with_extra
        .keys()
        .filter(|k| !records.contains_key(*k))
        .collect();
    assert!(
        lost.is_empty(),
        "{} records lost to a crash: {lost:?}",
        lost.len()
    );
    assert_eq!(records, with_extra);
    // And the ledger keeps working: the next prepare exits 0 and every record is usable
    // (records earned by hashing are trusted; nothing is re-hashed twice).
    let out = spawn_prepare(&root, &manifest, &[])
        .wait_with_output()
        .unwrap();
    let after = outcomes(&report(&out));
    assert!(after.values().all(|o| o == "cached"), "{after:?}");
    assert_eq!(
        root_files(&root).len(),
        FILES + 1,
        "nothing else added to ROOT"
    );
}

#[test]
fn sigkill_of_a_writer_between_transactions_keeps_the_ledger_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let origin = Origin::start().unwrap();
    // A warm store.
    let tool = data(20, 64 * KIB);
    std::fs::write(root.join("tool"), &tool).unwrap();
    let warm_manifest = write_manifest(
        &tmp.path().join("warm.json"),
        vec![asset("tool", "tool", &tool, &[])],
    );
    let out = spawn_prepare(&root, &warm_manifest, &[])
        .wait_with_output()
        .unwrap();
    assert_eq!(outcomes(&report(&out))["tool"], "verified");
    let out = spawn_prepare(&root, &warm_manifest, &[])
        .wait_with_output()
        .unwrap();
    assert_eq!(outcomes(&report(&out))["tool"], "cached", "precondition");

    // A prepare that records one asset, then is killed while downloading another: it dies
    // with the ledger open, but between transactions.
    let side = data(21, 8 * KIB);
    std::fs::write(root.join("side"), &side).unwrap();
    let size = 4 * MIB;
    let big = data(22, size);
    origin.add("rootfs", big.clone().into());
    origin.set_fault(
        "rootfs",
        Fault {
            bytes_per_sec: Some(2 * MIB as u64),
            ..Fault::default()
        },
    );
    let cold_manifest = write_manifest(
        &tmp.path().join("cold.json"),
        vec![
            asset("side", "side", &side, &[]),
            asset("rootfs", "rootfs.img", &big, &[origin.url("rootfs")]),
        ],
    );
    let mut child = spawn_prepare(&root, &cold_manifest, &["--jobs", "1"]);
    let dest = root.join("rootfs.img");
    // With one job, `side` is verified and recorded before the download starts.
    wait_for_bytes(&origin, "rootfs", MIB as u64, &mut child, &dest);
    sigkill(&mut child);

    // Read-only views still see every committed record (read first: the prepare below may
    // repair the file by writing to it)...
    let visible: Vec<String> = ledger_records(&root).into_keys().collect();
    // ...and a warm prepare still trusts them without reading content.
    let out = spawn_prepare(&root, &warm_manifest, &[])
        .wait_with_output()
        .unwrap();
    let r = report(&out);
    let warm = outcomes(&r)["tool"].clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        visible == ["side", "tool"] && warm == "cached",
        "after a SIGKILL of a process that held the ledger open (between transactions): \
         `debug ls` lists {visible:?} (expected [\"side\", \"tool\"]); the warm prepare says \
         {warm:?} (expected \"cached\"), stderr: {stderr}"
    );
}
