//! Many real `bootvault` processes on one store: single flight, no lost record, and warm
//! prepares that never wait behind a download.

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

fn write_manifest(path: &Path, version: &str, assets: Vec<Value>) -> PathBuf {
    std::fs::write(
        path,
        json!({ "version": version, "assets": assets }).to_string(),
    )
    .unwrap();
    path.to_path_buf()
}

fn bootvault() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bootvault"))
}

fn spawn_prepare(root: &Path, manifest: &Path, extra: &[&str]) -> Child {
    bootvault()
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

/// name -> outcome of a successful `prepare --json`.
fn outcomes(out: &Output) -> BTreeMap<String, String> {
    assert_eq!(out.status.code(), Some(0), "{}", describe(out));
    let v: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(out)));
    v["assets"]
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

/// path -> sha256 of every ledger record, from `debug ls --json`.
fn ledger_records(root: &Path) -> BTreeMap<String, String> {
    let out = bootvault()
        .args(["debug", "ls", "--json", "--dir"])
        .arg(root)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
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
fn cold_prepares_in_many_processes_download_each_asset_once() {
    const PROCS: usize = 16;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let origin = Origin::start().unwrap();
    let names = ["kernel", "initrd", "runc"];
    let bodies: Vec<Vec<u8>> = (0..names.len())
        .map(|i| data(i as u64 + 1, 512 * KIB))
        .collect();
    let mut assets = Vec::new();
    for (name, body) in names.iter().zip(&bodies) {
        origin.add(name, body.clone().into());
        // Slow enough (about 250 ms each) that the processes overlap on every asset.
        origin.set_fault(
            name,
            Fault {
                bytes_per_sec: Some(2 * MIB as u64),
                ..Fault::default()
            },
        );
        assets.push(asset(
            name,
            &format!("boot/{name}"),
            body,
            &[origin.url(name)],
        ));
    }
    let manifest = write_manifest(&tmp.path().join("m.json"), "mp-1", assets);
    let children: Vec<Child> = (0..PROCS)
        .map(|_| spawn_prepare(&root, &manifest, &["--retries", "2"]))
        .collect();
    let mut downloads: BTreeMap<String, usize> = BTreeMap::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        for (name, outcome) in outcomes(&out) {
            assert!(
                ["downloaded", "cached", "verified"].contains(&outcome.as_str()),
                "{name}: {outcome}"
            );
            if outcome == "downloaded" {
                *downloads.entry(name).or_default() += 1;
            }
        }
    }
    for (name, body) in names.iter().zip(&bodies) {
        assert_eq!(
            origin.requests(name),
            1,
            "{name} fetched once across {PROCS} processes"
        );
        assert_eq!(
            downloads.get(*name),
            Some(&1),
            "one process reports {name} downloaded"
        );
        assert_eq!(std::fs::read(root.join("boot").join(name)).unwrap(), *body);
    }
    let records = ledger_records(&root);
    for (name, body) in names.iter().zip(&bodies) {
        assert_eq!(
            records.get(&format!("boot/{name}")),
            Some(&Sha256Digest::of(body).to_hex()),
            "record of {name} in {records:?}"
        );
    }
}

#[test]
fn regression_last_writer_wins_loses_no_record() {
    const PROCS: usize = 20;
    const PER: usize = 3;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    let mut expected = BTreeMap::new();
    let mut all_assets = Vec::new();
    let mut manifests = Vec::new();
    for p in 0..PROCS {
        let mut assets = Vec::new();
        for i in 0..PER {
            let name = format!("tool-{p}-{i}");
            let path = format!("bin/{name}");
            let body = data((p * PER + i) as u64 + 1000, 8 * KIB + p * 100 + i);
            std::fs::write(root.join(&path), &body).unwrap();
            expected.insert(path.clone(), Sha256Digest::of(&body).to_hex());
            // No URL: verified in place.
            assets.push(asset(&name, &path, &body, &[]));
        }
        all_assets.extend(assets.iter().cloned());
        manifests.push(write_manifest(
            &tmp.path().join(format!("m{p}.json")),
            &format!("v{p}"),
            assets,
        ));
    }
    let children: Vec<Child> = manifests
        .iter()
        .map(|m| spawn_prepare(&root, m, &[]))
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        for (name, outcome) in outcomes(&out) {
            assert_eq!(outcome, "verified", "{name}");
        }
    }
    let records = ledger_records(&root);
    let missing: Vec<&String> = expected
        .keys()
        .filter(|k| !records.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} records lost: {missing:?}",
        missing.len(),
        expected.len()
    );
    assert_eq!(records, expected);
    // Every record is usable: one warm prepare over everything trusts it all.
    let everything = write_manifest(&tmp.path().join("all.json"), "all", all_assets);
    let out = spawn_prepare(&root, &everything, &[])
        .wait_with_output()
        .unwrap();
    let warm = outcomes(&out);
    assert_eq!(warm.len(), PROCS * PER);
    assert!(warm.values().all(|o| o == "cached"), "{warm:?}");
}

#[test]
fn warm_prepare_is_not_blocked_behind_a_download() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let origin = Origin::start().unwrap();

    // The warm manifest: two assets, fetched once and verified once, then cached.
    let kernel = data(1, 256 * KIB);
    origin.add("kernel", kernel.clone().into());
    let tool = data(2, 16 * KIB);
    std::fs::create_dir(root.join("bin")).unwrap();
    std::fs::write(root.join("bin/tool"), &tool).unwrap();
    let warm_manifest = write_manifest(
        &tmp.path().join("warm.json"),
        "warm",
        vec![
            asset("kernel", "kernel", &kernel, &[origin.url("kernel")]),
            asset("tool", "bin/tool", &tool, &[]),
        ],
    );
    let first = outcomes(
        &spawn_prepare(&root, &warm_manifest, &[])
            .wait_with_output()
            .unwrap(),
    );
    assert_eq!(first["kernel"], "downloaded");
    assert_eq!(first["tool"], "verified");
    let second = outcomes(
        &spawn_prepare(&root, &warm_manifest, &[])
            .wait_with_output()
            .unwrap(),
    );
    assert!(
        second.values().all(|o| o == "cached"),
        "precondition: {second:?}"
    );

    // The download: 4 MiB at 1 MiB/s, next to a small asset that this process verifies and
    // records first, so it holds the ledger open for writing while it downloads.
    let size = 4 * MIB;
    let big = data(3, size);
    origin.add("rootfs", big.clone().into());
    origin.set_fault(
        "rootfs",
        Fault {
            bytes_per_sec: Some(MIB as u64),
            ..Fault::default()
        },
    );
    let side = data(4, 8 * KIB);
    std::fs::write(root.join("bin/side"), &side).unwrap();
    let cold_manifest = write_manifest(
        &tmp.path().join("cold.json"),
        "cold",
        vec![
            asset("rootfs", "rootfs.img", &big, &[origin.url("rootfs")]),
            asset("side", "bin/side", &side, &[]),
        ],
    );
    let mut downloader = spawn_prepare(&root, &cold_manifest, &["--jobs", "2", "--retries", "0"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while origin.bytes_served("rootfs") < 256 * KIB as u64 {
        assert!(Instant::now() < deadline, "the download never started");
        assert!(
            downloader.try_wait().unwrap().is_none(),
            "downloader exited early"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    let warm = spawn_prepare(&root, &warm_manifest, &[])
        .wait_with_output()
        .unwrap();
    let served_when_warm_done = origin.bytes_served("rootfs");
    let downloader_running = downloader.try_wait().unwrap().is_none();
    let warm = outcomes(&warm);
    assert!(warm.values().all(|o| o == "cached"), "{warm:?}");
    assert!(
        downloader_running && served_when_warm_done < size as u64,
        "the warm prepare finished only after the download ({served_when_warm_done} of {size} bytes served)"
    );

    let cold = outcomes(&downloader.wait_with_output().unwrap());
    assert_eq!(cold["rootfs"], "downloaded");
    assert_eq!(cold["side"], "verified");
    assert_eq!(std::fs::read(root.join("rootfs.img")).unwrap(), big);
    assert_eq!(origin.requests("rootfs"), 1);
}
