//! Black-box tests of the `bootvault` binary against the external contract (CONTRACT.md).
//!
//! Every test builds a fresh store in its own temp dir, uses only `file://` sources (or none:
//! verify in place) and runs the real binary.

mod common;

use common::{
    Env, Run, asset, asset_report, asset_with_urls, blob, file_url, native, outcomes, run, sha,
    with,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

// ---- helpers ------------------------------------------------------------------------------

/// What only these tests need of `common::Env`: a source dir for `file://` URLs, manifests
/// that may be any JSON (valid or not), and `gc`.
impl Env {
    /// The source dir beside ROOT (created on first use).
    fn src(&self) -> PathBuf {
        let p = self.outside("src");
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// Writes a source file and returns its `file://` URL.
    fn source(&self, name: &str, bytes: &[u8]) -> String {
        let p = self.src().join(name);
        std::fs::write(&p, bytes).unwrap();
        file_url(&p)
    }

    /// Writes a manifest file (any JSON, valid or not) next to ROOT.
    fn manifest(&self, file: &str, value: &Value) -> PathBuf {
        let p = self.outside(file);
        std::fs::write(&p, serde_json::to_vec_pretty(value).unwrap()).unwrap();
        p
    }

    /// `bootvault gc --dir ROOT --manifest M EXTRA... --json`
    fn gc(&self, manifest: &Path, extra: &[&str]) -> Run {
        let mut args = vec![
            "gc",
            "--dir",
            self.root.to_str().unwrap(),
            "--manifest",
            manifest.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.push("--json");
        run(&args)
    }

    /// Writes `m.json`, a native manifest of `assets` at version `v1`.
    fn manifest_v1(&self, assets: Vec<Value>) -> PathBuf {
        self.manifest("m.json", &native("v1", assets))
    }
}

/// name → row of a `debug check` / `debug verify` report.
fn rows_by_name(report: &Value) -> BTreeMap<&str, &Value> {
    report["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["name"].as_str().unwrap(), a))
        .collect()
}

fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

// ---- prepare --------------------------------------------------------------------------------

#[test]
fn verify_in_place_then_cached_without_reading() {
    let env = Env::new();
    let data = blob(1, 64 * 1024);
    env.put("kernel/vmlinux", &data);
    let m = env.manifest(
        "m.json",
        &native("2026.11.0", vec![asset("kernel", "kernel/vmlinux", &data)]),
    );

    let first = env.prepare_ok(&m, &[]);
    let a = asset_report(&first, "kernel");
    assert_eq!(a["outcome"], "verified");
    assert_eq!(a["bytes_hashed"].as_u64(), Some(data.len() as u64));
    assert_eq!(a["bytes_downloaded"].as_u64(), Some(0));

    let second = env.prepare_ok(&m, &[]);
    let a = asset_report(&second, "kernel");
    assert_eq!(a["outcome"], "cached");
    assert_eq!(a["bytes_hashed"].as_u64(), Some(0));
    assert_eq!(a["bytes_downloaded"].as_u64(), Some(0));
    assert_eq!(std::fs::read(env.path("kernel/vmlinux")).unwrap(), data);
}

#[test]
fn prepare_json_is_exactly_one_object_with_the_contract_fields() {
    let env = Env::new();
    let k = blob(2, 10_000);
    let r = blob(3, 20_000);
    env.put("kernel/vmlinux", &k);
    let r_url = env.source("rootfs", &r);
    // Upper-case digest is accepted and reported in lower case.
    let kernel = with(
        asset("kernel", "kernel/vmlinux", &k),
        "sha256",
        json!(sha(&k).to_uppercase()),
    );
    let rootfs = asset_with_urls("rootfs", "rootfs.img", &r, &[r_url]);
    let m = env.manifest("m.json", &native("2026.11.0", vec![kernel, rootfs]));

    let run = env.prepare(&m, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v = run.json();
    let top: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    for key in ["manifest_version", "elapsed_ms", "assets"] {
        assert!(top.contains(&key), "missing top-level {key} in {v}");
    }
    assert_eq!(v["manifest_version"], "2026.11.0");
    assert!(v["elapsed_ms"].is_number(), "{v}");
    assert!(v["elapsed_ms"].as_f64().unwrap() >= 0.0);
    let assets = v["assets"].as_array().unwrap();
    assert_eq!(assets.len(), 2);
    // Manifest order.
    assert_eq!(assets[0]["name"], "kernel");
    assert_eq!(assets[1]["name"], "rootfs");
    for (a, rel, bytes) in [
        (&assets[0], "kernel/vmlinux", &k),
        (&assets[1], "rootfs.img", &r),
    ] {
        let path = a["path"].as_str().unwrap();
        assert!(Path::new(path).is_absolute(), "path not absolute: {path}");
        assert_eq!(
            std::fs::canonicalize(path).unwrap(),
            std::fs::canonicalize(env.path(rel)).unwrap()
        );
        assert_eq!(a["sha256"].as_str().unwrap(), sha(bytes));
        assert_eq!(a["size"].as_u64(), Some(bytes.len() as u64));
        assert!(a["bytes_hashed"].is_u64(), "{a}");
        assert!(a["bytes_downloaded"].is_u64(), "{a}");
        assert!(a["outcome"].is_string(), "{a}");
    }
    assert_eq!(assets[0]["outcome"], "verified");
    assert_eq!(assets[1]["outcome"], "downloaded");
    assert_eq!(assets[1]["bytes_downloaded"].as_u64(), Some(r.len() as u64));
}

#[test]
fn file_url_downloads_a_missing_asset_read_only_by_default() {
    let env = Env::new();
    let data = blob(4, 300_000);
    let url = env.source("vmlinux", &data);
    let m = env.manifest_v1(vec![asset_with_urls(
        "kernel",
        "boot/kernel/vmlinux",
        &data,
        &[url],
    )]);

    let v = env.prepare_ok(&m, &[]);
    let a = asset_report(&v, "kernel");
    assert_eq!(a["outcome"], "downloaded");
    assert_eq!(a["bytes_downloaded"].as_u64(), Some(data.len() as u64));
    let placed = env.path("boot/kernel/vmlinux");
    assert_eq!(std::fs::read(&placed).unwrap(), data);
    assert_eq!(mode_of(&placed), 0o444, "default mode without `mode`");
    // Nothing left behind in ROOT next to the asset.
    let names: Vec<_> = std::fs::read_dir(placed.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("vmlinux")]);

    let again = env.prepare_ok(&m, &[]);
    assert_eq!(asset_report(&again, "kernel")["outcome"], "cached");
}

#[test]
fn manifest_mode_0755_is_applied_when_placed() {
    let env = Env::new();
    let data = blob(5, 4096);
    let url = env.source("runc", &data);
    let a = asset_with_urls("runc", "bin/runc", &data, &[url]);
    let m = env.manifest_v1(vec![with(a, "mode", json!("0755"))]);
    let v = env.prepare_ok(&m, &[]);
    assert_eq!(asset_report(&v, "runc")["outcome"], "downloaded");
    assert_eq!(mode_of(&env.path("bin/runc")), 0o755);
}

#[test]
fn wrong_file_with_file_url_is_repaired() {
    let env = Env::new();
    let good = blob(6, 50_000);
    let url = env.source("good", &good);
    // Same size, wrong content; and a file of the wrong size.
    env.put("same-size", &blob(7, good.len()));
    env.put("short", &good[..1000]);
    let m = env.manifest_v1(vec![
        asset_with_urls("same-size", "same-size", &good, &[&url]),
        asset_with_urls("short", "short", &good, &[&url]),
    ]);
    let v = env.prepare_ok(&m, &[]);
    let o = outcomes(&v);
    assert_eq!(o["same-size"], "repaired");
    assert_eq!(o["short"], "repaired");
    for rel in ["same-size", "short"] {
        assert_eq!(std::fs::read(env.path(rel)).unwrap(), good, "{rel}");
        assert_eq!(
            asset_report(&v, rel)["bytes_downloaded"].as_u64(),
            Some(good.len() as u64)
        );
    }
    let again = env.prepare_ok(&m, &[]);
    assert!(outcomes(&again).values().all(|o| o == "cached"), "{again}");
}

#[test]
fn offline_missing_asset_exits_1_and_names_it() {
    let env = Env::new();
    let data = blob(8, 1000);
    // A URL that must never be contacted under --offline.
    let a = asset_with_urls(
        "initramfs",
        "initramfs.img",
        &data,
        &["http://127.0.0.1:9/initramfs.img"],
    );
    let m = env.manifest_v1(vec![a]);
    let r = env.prepare(&m, &["--offline"]);
    assert_eq!(r.code, 1, "stdout {} stderr {}", r.stdout, r.stderr);
    assert!(r.stderr.contains("initramfs"), "stderr: {}", r.stderr);
    assert!(!env.path("initramfs.img").exists());
    assert_ne!(
        asset_report(&r.json(), "initramfs")["outcome"],
        "downloaded"
    );
}

#[test]
fn missing_asset_without_url_exits_1_and_names_it() {
    let env = Env::new();
    let data = blob(9, 1000);
    let m = env.manifest_v1(vec![asset("rootfs", "rootfs", &data)]);
    let r = env.prepare(&m, &[]);
    assert_eq!(r.code, 1, "stderr {}", r.stderr);
    assert!(r.stderr.contains("rootfs"), "stderr: {}", r.stderr);
}

#[test]
fn offline_wrong_content_exits_1_with_expected_and_actual_digests() {
    let env = Env::new();
    let good = blob(10, 8192);
    let bad_same = blob(11, 8192);
    let bad_short = blob(12, 100);
    env.put("same", &bad_same);
    env.put("short", &bad_short);
    let url = "http://127.0.0.1:9/never".to_string();
    let m = env.manifest_v1(vec![
        asset_with_urls("same", "same", &good, &[&url]),
        asset_with_urls("short", "short", &good, &[&url]),
    ]);
    let r = env.prepare(&m, &["--offline"]);
    assert_eq!(r.code, 1, "stderr {}", r.stderr);
    for (name, bad) in [("same", &bad_same), ("short", &bad_short)] {
        let line = r
            .stderr
            .lines()
            .find(|l| l.contains(&format!("asset {name}")))
            .unwrap_or_else(|| panic!("no stderr line names {name}: {}", r.stderr));
        assert!(
            line.contains(&sha(&good)),
            "expected digest missing: {line}"
        );
        assert!(line.contains(&sha(bad)), "actual digest missing: {line}");
        // Never replaced, never trusted.
        assert_eq!(std::fs::read(env.path(name)).unwrap(), *bad);
    }
}

#[test]
fn offline_still_uses_file_sources() {
    // `--offline` means "no network"; a file:// source is not the network.
    let env = Env::new();
    let data = blob(13, 5000);
    let url = env.source("a", &data);
    let m = env.manifest_v1(vec![asset_with_urls("a", "a", &data, &[url])]);
    let r = env.prepare(&m, &["--offline"]);
    assert_eq!(r.code, 0, "stderr {}", r.stderr);
    assert_eq!(asset_report(&r.json(), "a")["outcome"], "downloaded");
    assert_eq!(std::fs::read(env.path("a")).unwrap(), data);
}

#[test]
fn verify_always_asset_is_rehashed_on_every_prepare() {
    let env = Env::new();
    let data = blob(14, 40_000);
    let other = blob(15, 1000);
    env.put("kernel", &data);
    env.put("other", &other);
    let m = env.manifest_v1(vec![
        with(asset("kernel", "kernel", &data), "verify", json!("always")),
        asset("other", "other", &other),
    ]);
    for i in 0..3 {
        let v = env.prepare_ok(&m, &[]);
        let k = asset_report(&v, "kernel");
        assert_eq!(k["outcome"], "verified", "run {i}");
        assert_eq!(
            k["bytes_hashed"].as_u64(),
            Some(data.len() as u64),
            "run {i}"
        );
        if i > 0 {
            assert_eq!(asset_report(&v, "other")["outcome"], "cached", "run {i}");
        }
    }
}

#[test]
fn regression_mtime_restored_rewrite_is_not_cached() {
    let env = Env::new();
    let good = blob(16, 32 * 1024);
    let url = env.source("runc", &good);
    let p = env.put("bin/runc", &good);
    let with_url = env.manifest_v1(vec![asset_with_urls("runc", "bin/runc", &good, &[url])]);
    let no_url = env.manifest(
        "m2.json",
        &native("v1", vec![asset("runc", "bin/runc", &good)]),
    );
    assert_eq!(
        asset_report(&env.prepare_ok(&with_url, &[]), "runc")["outcome"],
        "verified"
    );
    assert_eq!(
        asset_report(&env.prepare_ok(&with_url, &[]), "runc")["outcome"],
        "cached"
    );

    // Rewrite the content in place, same size, and put mtime (and atime) back.
    let tamper = |p: &Path| {
        let before = std::fs::metadata(p).unwrap();
        let mut evil = good.clone();
        evil[100] ^= 0xFF;
        // Placed files are read-only; the attacker may own the file anyway.
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(p, &evil).unwrap();
        std::fs::set_permissions(p, before.permissions()).unwrap();
        filetime::set_file_times(
            p,
            filetime::FileTime::from_last_access_time(&before),
            filetime::FileTime::from_last_modification_time(&before),
        )
        .unwrap();
        let after = std::fs::metadata(p).unwrap();
        assert_eq!(after.len(), before.len());
        assert_eq!(after.mtime(), before.mtime());
        assert_eq!(after.mtime_nsec(), before.mtime_nsec());
        assert_eq!(after.ino(), before.ino());
        evil
    };

    // Without a source: never cached, exit 1, the tampered file is reported.
    let evil = tamper(&p);
    let r = env.prepare(&no_url, &["--offline"]);
    assert_eq!(r.code, 1, "tampered file was accepted: {}", r.stdout);
    assert_ne!(asset_report(&r.json(), "runc")["outcome"], "cached");
    assert!(r.stderr.contains(&sha(&evil)), "{}", r.stderr);

    // With a source: repaired, never cached.
    let v = env.prepare_ok(&with_url, &[]);
    assert_eq!(asset_report(&v, "runc")["outcome"], "repaired");
    assert_eq!(std::fs::read(&p).unwrap(), good);

    // Once more, on a freshly recorded file.
    assert_eq!(
        asset_report(&env.prepare_ok(&with_url, &[]), "runc")["outcome"],
        "cached"
    );
    tamper(&p);
    let v = env.prepare_ok(&with_url, &[]);
    assert_eq!(asset_report(&v, "runc")["outcome"], "repaired");
}

// ---- manifest validation ----------------------------------------------------------------------

/// Runs prepare on `manifest` and asserts exit 2 with every `needles` in stderr, and that
/// nothing was created in ROOT.
fn assert_invalid(manifest: Value, needles: &[&str]) {
    let env = Env::new();
    let m = env.manifest("m.json", &manifest);
    let r = env.prepare(&m, &[]);
    assert_eq!(
        r.code, 2,
        "manifest {manifest} was accepted (stdout {}, stderr {})",
        r.stdout, r.stderr
    );
    for n in needles {
        assert!(
            r.stderr.contains(n),
            "stderr does not name {n:?}: {}",
            r.stderr
        );
    }
    assert_eq!(
        r.stderr.trim_end().lines().count(),
        1,
        "one line per error: {}",
        r.stderr
    );
    assert!(r.stdout.trim().is_empty(), "stdout: {}", r.stdout);
    assert_eq!(
        std::fs::read_dir(&env.root).unwrap().count(),
        0,
        "an invalid manifest created something in ROOT"
    );
}

fn good_asset(name: &str) -> Value {
    json!({"name": name, "sha256": sha(name.as_bytes())})
}

/// What the binary adds to the parser's refusals (each case is in tests/manifest.rs, through the
/// library): exit 2, one line on stderr that names the field, nothing created in ROOT.
#[test]
fn invalid_manifest_exits_2_in_one_line() {
    let bad_path = with(good_asset("kernel"), "path", json!("boot/../../etc/passwd"));
    assert_invalid(native("v1", vec![bad_path]), &["kernel", "path"]);
    assert_invalid(
        json!({"version": "v1", "assets": [good_asset("kernel")], "colour": "red"}),
        &["colour"],
    );
    assert_invalid(json!({"assets": [good_asset("kernel")]}), &["version"]);
}

#[test]
fn relative_url_resolves_against_base_url() {
    // The valid counterpart of `invalid_relative_url_without_base_url` (tests/manifest.rs).
    let env = Env::new();
    let data = blob(17, 2000);
    std::fs::create_dir_all(env.src().join("v1")).unwrap();
    std::fs::write(env.src().join("v1/kernel.bin"), &data).unwrap();
    let base = file_url(&env.src().join("v1"));
    let m = env.manifest(
        "m.json",
        &json!({"version": "v1", "base_url": base, "assets": [
            asset_with_urls("kernel", "kernel", &data, &["kernel.bin"])
        ]}),
    );
    let v = env.prepare_ok(&m, &[]);
    assert_eq!(asset_report(&v, "kernel")["outcome"], "downloaded");
    assert_eq!(std::fs::read(env.path("kernel")).unwrap(), data);
}

#[test]
fn unknown_cli_flag_exits_2() {
    let env = Env::new();
    let m = env.manifest_v1(vec![good_asset("kernel")]);
    let r = env.prepare(&m, &["--frobnicate"]);
    assert_eq!(r.code, 2, "stderr {}", r.stderr);
    assert!(r.stderr.contains("--frobnicate"), "{}", r.stderr);
    let r = run(&["debug", "ls", "--dir", env.root.to_str().unwrap(), "--nope"]);
    assert_eq!(r.code, 2, "stderr {}", r.stderr);
    let r = run(&["no-such-subcommand"]);
    assert_eq!(r.code, 2, "stderr {}", r.stderr);
}

#[test]
fn unreadable_manifest_exits_2_and_names_the_file() {
    let env = Env::new();
    let missing = env.outside("nope.json");
    let r = env.prepare(&missing, &[]);
    assert_eq!(r.code, 2, "stderr {}", r.stderr);
    assert!(r.stderr.contains("nope.json"), "{}", r.stderr);

    // A directory is not a readable manifest either.
    let r = env.prepare(&env.src(), &[]);
    assert_eq!(r.code, 2, "stderr {}", r.stderr);

    // Not JSON.
    let garbage = env.outside("garbage.json");
    std::fs::write(&garbage, b"{\"version\": \"v1\", \"assets\": [").unwrap();
    let r = env.prepare(&garbage, &[]);
    assert_eq!(r.code, 2, "stderr {}", r.stderr);
    assert!(r.stderr.contains("garbage.json"), "{}", r.stderr);
    assert_eq!(std::fs::read_dir(&env.root).unwrap().count(), 0);
}

// ---- debug ------------------------------------------------------------------------------------

#[test]
fn debug_ls_json_lists_records_relative_to_root_with_method() {
    let env = Env::new();
    let k = blob(20, 5000);
    let r = blob(21, 7000);
    env.put("boot/kernel", &k);
    let url = env.source("runc", &r);
    let m = env.manifest(
        "m.json",
        &native(
            "2026.11.0",
            vec![
                asset("kernel", "boot/kernel", &k),
                asset_with_urls("runc", "bin/runc", &r, &[url]),
            ],
        ),
    );
    env.prepare_ok(&m, &[]);
    let run = env.debug("ls", &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v = run.json();
    let records = v["records"].as_array().unwrap();
    assert_eq!(records.len(), 2, "{v}");
    let by_path: BTreeMap<&str, &Value> = records
        .iter()
        .map(|r| (r["path"].as_str().unwrap(), r))
        .collect();
    let kr = by_path["boot/kernel"];
    let rr = by_path["bin/runc"];
    assert_eq!(kr["method"], "hashed");
    assert_eq!(rr["method"], "downloaded");
    assert_eq!(kr["sha256"].as_str().unwrap(), sha(&k));
    assert_eq!(rr["sha256"].as_str().unwrap(), sha(&r));
    assert_eq!(kr["size"].as_u64(), Some(k.len() as u64));
    let meta = std::fs::metadata(env.path("boot/kernel")).unwrap();
    assert_eq!(kr["ino"].as_u64(), Some(meta.ino()));
    assert_eq!(kr["dev"].as_u64(), Some(meta.dev()));
    assert_eq!(
        kr["mtime_ns"].as_i64(),
        Some(meta.mtime() * 1_000_000_000 + meta.mtime_nsec())
    );
    assert_eq!(
        kr["ctime_ns"].as_i64(),
        Some(meta.ctime() * 1_000_000_000 + meta.ctime_nsec())
    );
    for r in records {
        for key in [
            "path",
            "sha256",
            "size",
            "mtime_ns",
            "ctime_ns",
            "ino",
            "dev",
            "manifest_version",
            "verified_at_ns",
            "method",
        ] {
            assert!(r.get(key).is_some(), "record lacks {key}: {r}");
        }
        assert_eq!(r["manifest_version"], "2026.11.0");
        assert!(r["verified_at_ns"].as_i64().unwrap() > 0);
    }
}

#[test]
fn debug_ls_on_a_root_without_ledger_says_so_exits_2_and_creates_nothing() {
    let env = Env::new();
    let run = env.debug("ls", &[]);
    assert_eq!(run.code, 2, "{}", run.describe());
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("no ledger"), "{}", run.stderr);
    assert!(
        !env.state().exists(),
        "a read-only command created the state dir"
    );
}

#[test]
fn debug_check_json_reports_fresh_stale_missing_unrecorded() {
    let env = Env::new();
    let files: Vec<(&str, Vec<u8>)> = ["fresh", "touched", "chmodded", "gone", "new"]
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, blob(30 + i as u64, 3000)))
        .collect();
    for (n, b) in &files {
        env.put(n, b);
    }
    let all: Vec<Value> = files.iter().map(|(n, b)| asset(n, n, b)).collect();
    let first: Vec<Value> = all[..4].to_vec();
    let m1 = env.manifest("m1.json", &native("v1", first));
    let m_all = env.manifest_v1(all);
    env.prepare_ok(&m1, &[]);
    let before = env.debug("check", &["--manifest", m_all.to_str().unwrap()]);
    // "new" is unrecorded: not everything is fresh, so exit 1 (a boot script gates on it).
    assert_eq!(before.code, 1, "{}", before.stderr);
    let prepared = env.debug("check", &["--manifest", m1.to_str().unwrap()]);
    assert_eq!(prepared.code, 0, "{}", prepared.describe());

    filetime::set_file_mtime(env.path("touched"), filetime::FileTime::now()).unwrap();
    std::fs::set_permissions(env.path("chmodded"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(env.path("gone")).unwrap();

    let run = env.debug("check", &["--manifest", m_all.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let v = run.json();
    let rows = rows_by_name(&v);
    assert_eq!(rows.len(), 5);
    for row in rows.values() {
        for key in ["name", "path", "state", "changed"] {
            assert!(row.get(key).is_some(), "row lacks {key}: {row}");
        }
        assert!(row["changed"].is_array());
    }
    assert_eq!(rows["fresh"]["state"], "fresh");
    assert_eq!(rows["fresh"]["changed"], json!([]));
    assert_eq!(rows["touched"]["state"], "stale");
    let changed: Vec<&str> = rows["touched"]["changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(changed.contains(&"ctime"), "{changed:?}");
    assert!(changed.contains(&"mtime"), "{changed:?}");
    assert_eq!(rows["chmodded"]["state"], "stale");
    assert_eq!(rows["chmodded"]["changed"], json!(["ctime"]));
    assert_eq!(rows["gone"]["state"], "missing");
    assert_eq!(rows["new"]["state"], "unrecorded");

    // The earlier check saw every prepared asset fresh.
    let v = before.json();
    for a in v["assets"].as_array().unwrap() {
        let want = if a["name"] == "new" {
            "unrecorded"
        } else {
            "fresh"
        };
        assert_eq!(a["state"], want, "{a}");
    }
}

#[test]
fn debug_check_reads_no_content() {
    // A FIFO at an asset path: reading it would block forever; a stat does not.
    let env = Env::new();
    let data = blob(40, 100);
    let fifo = env.path("fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let m = env.manifest_v1(vec![asset("fifo", "fifo", &data)]);
    // A ledger must exist for `debug` to look at: prepare another asset first.
    let other = blob(41, 100);
    env.put("other", &other);
    let first = env.manifest(
        "other.json",
        &native("v0", vec![asset("other", "other", &other)]),
    );
    env.prepare_ok(&first, &[]);
    let run = env.debug("check", &["--manifest", m.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let v = run.json();
    assert_ne!(v["assets"][0]["state"], "fresh");
}

#[test]
fn debug_verify_json_reports_ok_mismatch_missing_and_exits_1() {
    let env = Env::new();
    let ok = blob(50, 4000);
    let bad = blob(51, 4000);
    let gone = blob(52, 4000);
    env.put("ok", &ok);
    env.put("bad", &bad);
    env.put("gone", &gone);
    let m = env.manifest_v1(vec![
        asset("ok", "ok", &ok),
        asset("bad", "bad", &bad),
        asset("gone", "gone", &gone),
    ]);
    env.prepare_ok(&m, &[]);
    let ms = m.to_str().unwrap();
    let all_ok = env.debug("verify", &["--manifest", ms]);
    assert_eq!(all_ok.code, 0, "{}", all_ok.stderr);
    assert!(
        all_ok.json()["assets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["state"] == "ok")
    );

    // Tamper without changing size or mtime: only a full re-hash can see it.
    let p = env.path("bad");
    let meta = std::fs::metadata(&p).unwrap();
    let mut evil = bad.clone();
    evil[0] ^= 1;
    std::fs::write(&p, &evil).unwrap();
    filetime::set_file_mtime(&p, filetime::FileTime::from_last_modification_time(&meta)).unwrap();
    std::fs::remove_file(env.path("gone")).unwrap();

    let run = env.debug("verify", &["--manifest", ms]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    let v = run.json();
    let rows = rows_by_name(&v);
    for row in rows.values() {
        for key in ["name", "path", "state", "expected", "actual"] {
            assert!(row.get(key).is_some(), "row lacks {key}: {row}");
        }
    }
    assert_eq!(rows["ok"]["state"], "ok");
    assert_eq!(rows["ok"]["actual"].as_str(), Some(sha(&ok).as_str()));
    assert_eq!(rows["bad"]["state"], "mismatch");
    assert_eq!(rows["bad"]["expected"].as_str(), Some(sha(&bad).as_str()));
    assert_eq!(rows["bad"]["actual"].as_str(), Some(sha(&evil).as_str()));
    assert_eq!(rows["gone"]["state"], "missing");
    assert!(run.stderr.contains("bad"), "{}", run.stderr);
    assert!(run.stderr.contains("gone"), "{}", run.stderr);

    // Without a manifest, every record is checked against its own digest.
    let run = env.debug("verify", &[]);
    assert_eq!(run.code, 1, "{}", run.stdout);
}

#[test]
fn debug_show_and_why_json_return_record_live_and_events_newest_first() {
    let env = Env::new();
    let good = blob(60, 6000);
    let url = env.source("runc", &good);
    let m = env.manifest_v1(vec![asset_with_urls("runc", "bin/runc", &good, &[url])]);
    env.prepare_ok(&m, &[]); // downloaded
    // Break it (wrong size), then let prepare repair it.
    let p = env.path("bin/runc");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&p, b"oops").unwrap();
    let v = env.prepare_ok(&m, &[]);
    assert_eq!(asset_report(&v, "runc")["outcome"], "repaired");

    let ms = m.to_str().unwrap();
    for (sub, target, extra) in [
        ("show", "runc", vec!["--manifest", ms]),
        ("show", "bin/runc", vec![]),
        ("why", "bin/runc", vec![]),
        ("why", "runc", vec!["--manifest", ms]),
    ] {
        let mut args = vec![target];
        args.extend(extra.iter().copied());
        let run = env.debug(sub, &args);
        assert_eq!(run.code, 0, "debug {sub} {target}: {}", run.stderr);
        let v = run.json();
        let rec = &v["record"];
        assert!(rec.is_object(), "debug {sub} {target}: record {v}");
        assert_eq!(rec["path"], "bin/runc");
        assert_eq!(rec["sha256"].as_str(), Some(sha(&good).as_str()));
        assert_eq!(rec["method"], "downloaded");
        let live = &v["live"];
        assert!(live.is_object(), "debug {sub} {target}: live {v}");
        assert_eq!(live["size"].as_u64(), Some(good.len() as u64));
        assert_eq!(
            live["ino"].as_u64(),
            Some(std::fs::metadata(&p).unwrap().ino())
        );
        let events = v["events"].as_array().unwrap();
        assert!(events.len() >= 2, "debug {sub} {target}: events {v}");
        assert_eq!(events[0]["outcome"], "repaired", "newest first: {v}");
        assert_eq!(events[1]["outcome"], "downloaded", "newest first: {v}");
        let times: Vec<i64> = events
            .iter()
            .map(|e| e["at_ns"].as_i64().unwrap())
            .collect();
        assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    }

    // An unknown target is an error, not an empty object.
    let run = env.debug("show", &["bin/nothing-here"]);
    assert_ne!(run.code, 0);
}

// ---- gc ---------------------------------------------------------------------------------------

#[test]
fn gc_dry_run_removes_nothing_then_gc_removes_extra_file_and_record() {
    let env = Env::new();
    let keep = blob(70, 3000);
    let extra = blob(71, 3000);
    let stray = blob(72, 100);
    env.put("boot/kernel", &keep);
    env.put("old/initrd", &extra);
    env.put("stray.txt", &stray);
    let both = env.manifest(
        "both.json",
        &native(
            "v1",
            vec![
                asset("kernel", "boot/kernel", &keep),
                asset("initrd", "old/initrd", &extra),
            ],
        ),
    );
    let only = env.manifest(
        "only.json",
        &native("v2", vec![asset("kernel", "boot/kernel", &keep)]),
    );
    env.prepare_ok(&both, &[]);

    let dry = env.gc(&only, &["--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    let dv = dry.json();
    let files: Vec<&str> = dv["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(files.contains(&"old/initrd"), "{dv}");
    // A file bootvault never placed nor recorded is foreign: listed, never removed.
    assert!(!files.contains(&"stray.txt"), "{dv}");
    assert_eq!(dv["foreign"], json!(["stray.txt"]), "{dv}");
    assert!(!files.contains(&"boot/kernel"), "{dv}");
    assert!(!files.iter().any(|f| f.contains(".bootvault")), "{dv}");
    assert_eq!(dv["records"], json!(["old/initrd"]));
    assert!(env.path("old/initrd").exists());
    assert!(env.path("stray.txt").exists());
    let ls = env.debug("ls", &[]).json();
    assert_eq!(
        ls["records"].as_array().unwrap().len(),
        2,
        "dry run dropped a record"
    );

    let real = env.gc(&only, &[]);
    assert_eq!(real.code, 0, "{}", real.stderr);
    assert!(!env.path("old/initrd").exists());
    assert!(env.path("stray.txt").exists(), "gc removed a foreign file");
    assert_eq!(std::fs::read(env.path("boot/kernel")).unwrap(), keep);
    assert!(env.ledger().exists());
    let ls = env.debug("ls", &[]).json();
    let paths: Vec<&str> = ls["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, vec!["boot/kernel"]);
    // The kept asset is still trusted.
    let v = env.prepare_ok(&only, &[]);
    assert_eq!(asset_report(&v, "kernel")["outcome"], "cached");
}

/// The pid of a process that has exited.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

/// A manifest naming `old/a` and `sub/b` as well as the kernel, prepared; and one naming only
/// the kernel, which gc keeps.
fn gc_setup(env: &Env) -> PathBuf {
    let (k, a, b) = (blob(73, 1000), blob(74, 1000), blob(75, 1000));
    env.put("boot/kernel", &k);
    env.put("old/a", &a);
    env.put("sub/b", &b);
    let all = env.manifest(
        "all.json",
        &native(
            "v1",
            vec![
                asset("kernel", "boot/kernel", &k),
                asset("a", "old/a", &a),
                asset("b", "sub/b", &b),
            ],
        ),
    );
    env.prepare_ok(&all, &[]);
    env.manifest(
        "only.json",
        &native("v2", vec![asset("kernel", "boot/kernel", &k)]),
    )
}

/// `STATE/tmp` replaced by a symlink to a host directory (the default state dir is inside
/// ROOT, so a guest can plant it): gc must not remove what lies there. Before: every
/// `X.<dead pid>...` file in the target was deleted.
#[test]
fn regression_gc_never_follows_a_symlinked_state_tmp() {
    let env = Env::new();
    let only = gc_setup(&env);
    let host = env.outside("host-files");
    std::fs::create_dir_all(&host).unwrap();
    let victim = host.join(format!("important.{}.part", dead_pid()));
    std::fs::write(&victim, b"host data").unwrap();
    let tmp = env.state().join("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::os::unix::fs::symlink(&host, &tmp).unwrap();
    let run = env.gc(&only, &[]);
    run.assert_code(0);
    assert!(
        victim.exists(),
        "gc deleted a file outside the store: {}",
        run.describe()
    );
    let v = run.json();
    assert!(
        v["skipped"].to_string().contains("not followed"),
        "the symlinked tmp is reported: {v}"
    );
}

/// ROOT given through a symlink: the real run removes what the dry run lists. Before: the
/// dry run listed the files, the real run failed (`open ROOT: Not a directory`, exit 1).
#[test]
fn regression_gc_with_root_given_through_a_symlink_removes_what_the_dry_run_lists() {
    let env = Env::new();
    let only = gc_setup(&env);
    let link = env.outside("root-link");
    std::os::unix::fs::symlink(&env.root, &link).unwrap();
    let gc = |extra: &[&str]| {
        let mut args = vec![
            "gc",
            "--dir",
            link.to_str().unwrap(),
            "--manifest",
            only.to_str().unwrap(),
            "--json",
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    let dry = gc(&["--dry-run"]);
    dry.assert_code(0);
    assert_eq!(
        dry.json()["files"],
        json!(["old/a", "sub/b"]),
        "{}",
        dry.describe()
    );
    let real = gc(&[]);
    real.assert_code(0);
    assert_eq!(
        real.json()["files"],
        json!(["old/a", "sub/b"]),
        "{}",
        real.describe()
    );
    assert!(!env.path("old/a").exists() && !env.path("sub/b").exists());
    assert!(env.path("boot/kernel").exists());
}

/// A recorded path whose parent became a symlink (any writer of ROOT can do that) is skipped
/// and reported; the rest of gc goes on and the file behind the link is untouched. Before: gc
/// aborted (exit 1) after deleting `old/a`, and no record was removed.
#[test]
fn regression_gc_skips_a_path_behind_a_symlinked_parent_and_goes_on() {
    let env = Env::new();
    let only = gc_setup(&env);
    let elsewhere = env.outside("elsewhere");
    std::fs::rename(env.path("sub"), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, env.path("sub")).unwrap();
    let run = env.gc(&only, &[]);
    run.assert_code(0);
    let v = run.json();
    assert_eq!(v["files"], json!(["old/a"]), "{v}");
    assert_eq!(v["records"], json!(["old/a"]), "{v}");
    assert_eq!(v["skipped"][0]["path"], "sub/b", "{v}");
    assert!(!env.path("old/a").exists());
    assert!(
        elsewhere.join("b").exists(),
        "gc followed the symlinked parent"
    );
    let ls = env.debug("ls", &[]).json();
    let paths: Vec<&str> = ls["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        vec!["boot/kernel", "sub/b"],
        "the skipped path keeps its record"
    );
}

/// A user's file that merely looks like a temp name (`.bootvault-<dead pid>-x.tmp`), or a
/// real-looking one in a directory the store never places into, is someone else's: kept.
/// Before: gc removed both.
#[test]
fn regression_gc_keeps_temp_like_names_outside_the_stores_directories() {
    let env = Env::new();
    let only = gc_setup(&env);
    let pid = dead_pid();
    let user = env.put(&format!("notes/.bootvault-{pid}-x.tmp"), b"mine");
    let lookalike = env.put(
        &format!("notes/.bootvault-{pid}-00000000000000aa.tmp"),
        b"mine",
    );
    let in_boot = env.put(
        &format!("boot/.bootvault-{pid}-00000000000000bb.tmp"),
        b"ours",
    );
    let run = env.gc(&only, &[]);
    run.assert_code(0);
    assert!(user.exists(), "{}", run.describe());
    assert!(lookalike.exists(), "{}", run.describe());
    assert!(
        !in_boot.exists(),
        "a dead placement's temp beside an asset is collected"
    );
}

// ---- state dir and the warm path ----------------------------------------------------------------

#[test]
fn state_dir_elsewhere_leaves_root_with_assets_only() {
    let env = Env::new();
    let data = blob(80, 4000);
    let url = env.source("k", &data);
    let state = env.outside("state");
    let m = env.manifest_v1(vec![asset_with_urls(
        "kernel",
        "boot/kernel",
        &data,
        &[url],
    )]);
    let s = state.to_str().unwrap();
    let v = env.prepare_ok(&m, &["--state-dir", s]);
    assert_eq!(asset_report(&v, "kernel")["outcome"], "downloaded");
    assert!(state.join("ledger.redb").is_file());
    assert!(!env.state().exists(), "ROOT/.bootvault was created");
    let mut in_root: Vec<PathBuf> = Vec::new();
    walk(&env.root, &mut in_root);
    assert_eq!(
        in_root,
        vec![env.path("boot/kernel")],
        "only the asset is in ROOT"
    );

    let v = env.prepare_ok(&m, &["--state-dir", s]);
    assert_eq!(asset_report(&v, "kernel")["outcome"], "cached");
    let root = env.root.to_str().unwrap();
    let ls = run(&["debug", "ls", "--dir", root, "--state-dir", s, "--json"]);
    assert_eq!(ls.json()["records"].as_array().unwrap().len(), 1);
    // Without --state-dir, the default location has no ledger: said so, exit 2, not created.
    let ls = run(&["debug", "ls", "--dir", root, "--json"]);
    assert_eq!(ls.code, 2, "{}", ls.describe());
    assert!(ls.stderr.contains("no ledger"), "{}", ls.stderr);
    assert!(!env.state().exists());
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// What a write would change about one file or directory.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    len: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
    /// Content digest of a regular file.
    digest: Option<String>,
}

impl Seen {
    fn of(p: &Path) -> Seen {
        let m = std::fs::symlink_metadata(p).unwrap();
        Seen {
            len: if m.is_dir() { 0 } else { m.len() },
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
            ino: m.ino(),
            digest: m.is_file().then(|| sha(&std::fs::read(p).unwrap())),
        }
    }
}

/// Every file and directory under `dir` (and `dir` itself), as seen now.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Seen> {
    fn rec(dir: &Path, out: &mut BTreeMap<PathBuf, Seen>) {
        out.insert(dir.to_path_buf(), Seen::of(dir));
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                rec(&p, out);
            } else {
                out.insert(p.clone(), Seen::of(&p));
            }
        }
    }
    let mut out = BTreeMap::new();
    rec(dir, &mut out);
    out
}

#[test]
fn warm_prepare_writes_nothing() {
    let env = Env::new();
    let a = blob(90, 20_000);
    let b = blob(91, 30_000);
    env.put("a", &a);
    let url = env.source("b", &b);
    let m = env.manifest_v1(vec![
        asset("a", "a", &a),
        asset_with_urls("b", "bin/b", &b, &[url]),
    ]);
    env.prepare_ok(&m, &[]);
    let state_before = snapshot(&env.state());
    let root_before = snapshot(&env.root);
    assert!(state_before.contains_key(&env.ledger()));
    // Make any write visible in the timestamps.
    std::thread::sleep(std::time::Duration::from_millis(20));

    for _ in 0..2 {
        let v = env.prepare_ok(&m, &[]);
        assert!(outcomes(&v).values().all(|o| o == "cached"), "{v}");
        let state_after = snapshot(&env.state());
        assert_eq!(
            state_before, state_after,
            "a warm prepare changed the state dir"
        );
        assert_eq!(
            root_before,
            snapshot(&env.root),
            "a warm prepare changed ROOT"
        );
    }
}

// ---- broken pipe ---------------------------------------------------------------------------------

/// Fills the ledger of a store at `root` with `n` records in one transaction.
fn many_records(root: &Path, n: usize) {
    let stamp = bootvault::stamp::Stamp::regular(
        4096,
        1_700_000_000_000_000_000,
        1_700_000_000_000_000_000,
        1,
        1,
        0o444,
    );
    let rec = bootvault::ledger::Record::new(
        bootvault::Sha256Digest::of(b"x"),
        &stamp,
        "v1",
        1_700_000_000_000_000_001,
        bootvault::ledger::Method::Hashed,
        false,
    )
    .encode();
    common::insert_records(
        root,
        (0..n).map(|i| (format!("assets/file-{i:06}.bin"), rec.clone())),
    );
}

#[test]
fn regression_debug_ls_into_a_closed_pipe_exits_0() {
    let env = Env::new();
    many_records(&env.root, 2000);
    let root = env.root.to_str().unwrap();
    for json in [false, true] {
        for read_first in [false, true] {
            let mut cmd = common::bootvault_cmd();
            cmd.args(["debug", "ls", "--dir", root]);
            if json {
                cmd.arg("--json");
            }
            let mut child = cmd
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut stdout = child.stdout.take().unwrap();
            if read_first {
                // `| head -c1`
                let mut one = [0u8; 1];
                stdout.read_exact(&mut one).unwrap();
            }
            drop(stdout);
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            let status = child.wait().unwrap();
            assert_eq!(
                status.code(),
                Some(0),
                "json={json} read_first={read_first}: {status:?}, stderr {err}"
            );
            assert!(!err.contains("panicked"), "{err}");
        }
    }
    // Sanity: the full listing is far larger than a pipe buffer.
    let full = run(&["debug", "ls", "--dir", root]);
    assert_eq!(full.code, 0);
    assert!(full.stdout.len() > 128 * 1024, "{}", full.stdout.len());
}

// ---- arcbox-boot manifests ----------------------------------------------------------------------

/// An arcbox-boot manifest written by arcbox-boot's own `Manifest` type: two targets, binaries
/// with and without `install_dir` (`vmlinux` into `kernel`, `crun` into `runtime/bin`) and an
/// arm64-only binary. The CDN is a directory reached through `file://`.
fn arcbox_fixture(env: &Env) -> (PathBuf, String, BTreeMap<&'static str, Vec<u8>>) {
    use arcbox_boot::manifest as up;
    let cdn = env.outside("cdn");
    let files: BTreeMap<&str, Vec<u8>> = [
        ("asset/v0.5.5/x86_64/kernel", blob(100, 50_000)),
        ("asset/v0.5.5/x86_64/rootfs.erofs", blob(101, 80_000)),
        ("asset/v0.5.5/arm64/kernel", blob(102, 1000)),
        ("asset/v0.5.5/arm64/rootfs.erofs", blob(103, 1000)),
        ("bin/runc/1.2.0/x86_64/runc", blob(104, 20_000)),
        ("bin/crun/1.19/x86_64/crun", blob(105, 10_000)),
        ("bin/vmlinux/6.1.155/x86_64/vmlinux", blob(106, 10_000)),
        ("bin/FEX/FEX-2605/arm64/FEX", blob(107, 1000)),
    ]
    .into_iter()
    .collect();
    for (rel, b) in &files {
        let p = cdn.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b).unwrap();
    }
    let e = |rel: &str| up::FileEntry {
        path: rel.into(),
        sha256: sha(&files[rel]),
        version: None,
    };
    let target = |arch: &str, cmdline: &str| up::Target {
        kernel: up::FileEntry {
            version: Some("6.12.40".into()),
            ..e(&format!("asset/v0.5.5/{arch}/kernel"))
        },
        rootfs: e(&format!("asset/v0.5.5/{arch}/rootfs.erofs")),
        kernel_cmdline: cmdline.into(),
        runtime: None,
    };
    let bin = |name: &str, version: &str, arch: &str, dir: Option<&str>| up::Binary {
        name: name.into(),
        version: version.into(),
        targets: [(
            arch.to_string(),
            up::BinaryTarget {
                path: format!("bin/{name}/{version}/{arch}/{name}"),
                sha256: sha(&files[format!("bin/{name}/{version}/{arch}/{name}").as_str()]),
            },
        )]
        .into_iter()
        .collect(),
        install_dir: dir.map(str::to_string),
    };
    let manifest = up::Manifest {
        schema_version: 0,
        asset_version: "0.5.5".into(),
        built_at: "2026-11-25T04:09:17Z".into(),
        source_repo: Some("arcboxlabs/boot-assets".into()),
        source_ref: None,
        source_sha: None,
        targets: [
            (
                "x86_64".to_string(),
                target("x86_64", "console=ttyS0 root=/dev/vda ro"),
            ),
            (
                "arm64".to_string(),
                target("arm64", "console=hvc0 root=/dev/vda ro"),
            ),
        ]
        .into_iter()
        .collect(),
        binaries: vec![
            bin("runc", "1.2.0", "x86_64", None),
            bin("crun", "1.19", "x86_64", Some("runtime/bin")),
            bin("vmlinux", "6.1.155", "x86_64", Some("kernel")),
            bin("FEX", "FEX-2605", "arm64", Some("runtime/bin")),
        ],
    };
    let m = env.outside("arcbox.json");
    std::fs::write(&m, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
    (m, format!("{}/", file_url(&cdn)), files)
}

#[test]
fn arcbox_manifest_with_arch_and_file_base_url() {
    let env = Env::new();
    let (m, base, files) = arcbox_fixture(&env);
    let args = ["--arch", "x86_64", "--base-url", base.as_str()];
    let v = env.prepare_ok(&m, &args);
    assert_eq!(v["manifest_version"], "0.5.5");
    assert_eq!(v["kernel_cmdline"], "console=ttyS0 root=/dev/vda ro");
    let o = outcomes(&v);
    assert_eq!(
        o.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
        vec!["crun", "kernel", "rootfs", "runc", "vmlinux"],
        "{v}"
    );
    assert!(o.values().all(|x| x == "downloaded"), "{v}");
    // The boot files under boot/VERSION (arcbox-boot's cache_dir/VERSION with ROOT as the data
    // dir), the binaries where arcbox-boot puts them: the boot kernel and kernel/vmlinux coexist.
    for (rel, src, mode) in [
        ("boot/0.5.5/kernel", "asset/v0.5.5/x86_64/kernel", 0o444),
        (
            "boot/0.5.5/rootfs.erofs",
            "asset/v0.5.5/x86_64/rootfs.erofs",
            0o444,
        ),
        ("bin/runc", "bin/runc/1.2.0/x86_64/runc", 0o755),
        ("runtime/bin/crun", "bin/crun/1.19/x86_64/crun", 0o755),
        (
            "kernel/vmlinux",
            "bin/vmlinux/6.1.155/x86_64/vmlinux",
            0o755,
        ),
    ] {
        let p = env.path(rel);
        assert_eq!(std::fs::read(&p).unwrap(), files[src], "{rel}");
        assert_eq!(mode_of(&p), mode, "{rel}");
    }
    assert!(!env.path("runtime/bin/FEX").exists());
    assert_eq!(
        std::fs::canonicalize(asset_report(&v, "kernel")["path"].as_str().unwrap()).unwrap(),
        std::fs::canonicalize(env.path("boot/0.5.5/kernel")).unwrap()
    );

    // Warm: every asset, kernel and rootfs included (verify: cached), trusted from the ledger.
    let v = env.prepare_ok(&m, &args);
    assert!(outcomes(&v).values().all(|x| x == "cached"), "{v}");

    // The other arch: its own kernel command line and the arm64-only binary.
    let v = env.prepare_ok(&m, &["--arch", "arm64", "--base-url", base.as_str()]);
    assert_eq!(v["kernel_cmdline"], "console=hvc0 root=/dev/vda ro");
    assert_eq!(outcomes(&v)["FEX"], "downloaded", "{v}");
}

#[test]
fn arcbox_manifest_ignores_unknown_fields_but_requires_built_at() {
    let env = Env::new();
    let (m, base, _) = arcbox_fixture(&env);
    let mut v: Value = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
    v["signed_by"] = json!("release-bot");
    v["binaries"][0]["sbom"] = json!({"format": "spdx"});
    v["targets"]["x86_64"]["kernel"]["size"] = json!(50_000);
    std::fs::write(&m, v.to_string()).unwrap();
    let args = ["--arch", "x86_64", "--base-url", base.as_str()];
    env.prepare_ok(&m, &args);

    v.as_object_mut().unwrap().remove("built_at");
    std::fs::write(&m, v.to_string()).unwrap();
    let r = env.prepare(&m, &args);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("built_at"), "{}", r.stderr);
}

#[test]
fn regression_log_lines_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    // A damaged ledger makes prepare warn; piped, the warning must be plain text.
    let env = Env::new();
    let data = blob(110, 2000);
    env.put("a", &data);
    let m = env.manifest_v1(vec![asset("a", "a", &data)]);
    env.prepare_ok(&m, &[]);
    std::fs::write(env.ledger(), blob(111, 8192)).unwrap();
    let r = env.prepare(&m, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("ledger"),
        "expected a warning: {}",
        r.stderr
    );
    assert!(
        !r.stderr.contains('\u{1b}'),
        "ANSI escapes on a non-terminal stderr: {:?}",
        r.stderr
    );
}

// ---- sources, sizes and failures ------------------------------------------------------------------

#[test]
fn urls_are_tried_in_order_until_one_works() {
    let env = Env::new();
    let data = blob(120, 9000);
    let good = env.source("good", &data);
    let bad = env.source("bad", &blob(121, 9000));
    let missing = file_url(&env.src().join("missing"));
    let m = env.manifest_v1(vec![asset_with_urls(
        "kernel",
        "kernel",
        &data,
        &[missing, bad, good],
    )]);
    let v = env.prepare_ok(&m, &["--retries", "0"]);
    assert_eq!(asset_report(&v, "kernel")["outcome"], "downloaded");
    assert_eq!(std::fs::read(env.path("kernel")).unwrap(), data);
}

#[test]
fn source_with_wrong_digest_fails_and_leaves_the_old_file() {
    let env = Env::new();
    let want = blob(122, 5000);
    let old = blob(123, 5000);
    env.put("kernel", &old);
    env.put("absent-dir/keep", b"x");
    let evil = env.source("evil", &blob(124, 5000));
    let m = env.manifest_v1(vec![
        asset_with_urls("kernel", "kernel", &want, &[&evil]),
        asset_with_urls("initrd", "boot/initrd", &want, &[&evil]),
    ]);
    let r = env.prepare(&m, &["--retries", "0"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("kernel"), "{}", r.stderr);
    assert!(r.stderr.contains("initrd"), "{}", r.stderr);
    assert!(r.stderr.contains(&evil), "the URL is named: {}", r.stderr);
    // Whatever was there before, never unverified bytes.
    assert_eq!(std::fs::read(env.path("kernel")).unwrap(), old);
    assert!(!env.path("boot/initrd").exists());
    let mut in_root = Vec::new();
    walk(&env.root, &mut in_root);
    let stray: Vec<_> = in_root
        .iter()
        .filter(|p| !p.starts_with(env.state()))
        .filter(|p| **p != env.path("kernel") && **p != env.path("absent-dir/keep"))
        .collect();
    assert!(stray.is_empty(), "left behind in ROOT: {stray:?}");
    for o in outcomes(&r.json()).values() {
        assert_ne!(o, "downloaded");
        assert_ne!(o, "repaired");
    }
}

#[test]
fn source_larger_than_manifest_size_is_cut_off_and_fails() {
    let env = Env::new();
    let data = blob(125, 4000);
    let mut longer = data.clone();
    longer.extend_from_slice(&blob(126, 100_000));
    let src = env.source("long", &longer);
    // The digest is of the long file: only the size says it must be 4000 bytes.
    let a = json!({"name": "k", "path": "k", "sha256": sha(&longer), "size": data.len(), "urls": [src]});
    let m = env.manifest_v1(vec![a]);
    let r = env.prepare(&m, &["--retries", "0"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("k"), "{}", r.stderr);
    assert!(!env.path("k").exists());
    let v = r.json();
    assert!(
        asset_report(&v, "k")["bytes_downloaded"].as_u64().unwrap() <= data.len() as u64 + 65536,
        "the download was not cut off: {v}"
    );
}

#[test]
fn jobs_zero_is_a_usage_error() {
    let env = Env::new();
    let m = env.manifest_v1(vec![good_asset("kernel")]);
    let r = env.prepare(&m, &["--jobs", "0"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}

#[test]
fn many_assets_with_few_jobs() {
    let env = Env::new();
    let mut assets = Vec::new();
    for i in 0..24u64 {
        let data = blob(200 + i, 1000 + i as usize * 37);
        let rel = format!("d{}/f{i}.bin", i % 3);
        if i.is_multiple_of(2) {
            env.put(&rel, &data);
            assets.push(asset(&format!("f{i}"), &rel, &data));
        } else {
            let url = env.source(&format!("f{i}"), &data);
            assets.push(asset_with_urls(&format!("f{i}"), &rel, &data, &[url]));
        }
    }
    let m = env.manifest_v1(assets);
    let v = env.prepare_ok(&m, &["--jobs", "2"]);
    for (name, o) in outcomes(&v) {
        let i: u64 = name[1..].parse().unwrap();
        let want = if i.is_multiple_of(2) {
            "verified"
        } else {
            "downloaded"
        };
        assert_eq!(o, want, "{name}");
    }
    let ls = env.debug("ls", &[]).json();
    assert_eq!(
        ls["records"].as_array().unwrap().len(),
        24,
        "a record was lost"
    );
    let v = env.prepare_ok(&m, &["--jobs", "2"]);
    assert!(outcomes(&v).values().all(|o| o == "cached"), "{v}");
}

// ---- state dir for every subcommand, read-only views ------------------------------------------------

#[test]
fn every_subcommand_takes_state_dir() {
    let env = Env::new();
    let data = blob(130, 3000);
    env.put("kernel", &data);
    env.put("extra", b"extra");
    let state = env.outside("elsewhere");
    let s = state.to_str().unwrap();
    let root = env.root.to_str().unwrap();
    let m = env.manifest_v1(vec![asset("kernel", "kernel", &data)]);
    let ms = m.to_str().unwrap();
    env.prepare_ok(&m, &["--state-dir", s]);

    let run = env.debug("show", &["kernel", "--manifest", ms, "--state-dir", s]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.json()["record"].is_object(),
        "show did not use --state-dir"
    );
    let run = env.debug("why", &["kernel", "--state-dir", s]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.json()["events"].as_array().unwrap().is_empty());
    let run = env.debug("check", &["--manifest", ms, "--state-dir", s]);
    assert_eq!(run.json()["assets"][0]["state"], "fresh", "{}", run.stdout);
    let run = env.debug("verify", &["--state-dir", s]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["assets"].as_array().unwrap().len(), 1);
    let run = env.gc(&m, &["--state-dir", s, "--dry-run"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["files"], json!([]));
    assert_eq!(run.json()["foreign"], json!(["extra"]));
    std::fs::write(env.root.join(".verified.json"), b"{\"entries\": {}}").unwrap();
    let run = common::run(&["migrate", "--dir", root, "--state-dir", s]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!env.state().exists(), "ROOT/.bootvault was created");
}

#[test]
fn read_only_debug_commands_write_nothing() {
    let env = Env::new();
    let data = blob(140, 3000);
    env.put("kernel", &data);
    let m = env.manifest_v1(vec![asset("kernel", "kernel", &data)]);
    let ms = m.to_str().unwrap();
    env.prepare_ok(&m, &[]);
    let before = snapshot(&env.root);
    std::thread::sleep(std::time::Duration::from_millis(20));
    for (sub, args) in [
        ("ls", vec![]),
        ("check", vec!["--manifest", ms]),
        ("check", vec![]),
        ("verify", vec!["--manifest", ms]),
        ("show", vec!["kernel", "--manifest", ms]),
        ("why", vec!["kernel"]),
    ] {
        let run = env.debug(sub, &args);
        assert_eq!(run.code, 0, "debug {sub}: {}", run.stderr);
        assert_eq!(before, snapshot(&env.root), "debug {sub} wrote something");
    }
}

/// A build without the `demo` feature (`cargo test -p bootvault-cli --no-default-features`):
/// the subcommand parses but refuses to run, in one line and exit 2.
#[cfg(not(feature = "demo"))]
#[test]
fn demo_without_the_feature_is_one_line_and_exit_2() {
    let r = run(&["demo", "--binaries-mb", "4"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("without the cargo feature `demo`")
            && r.stderr.contains("cargo run --release -- demo"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.is_empty(), "{}", r.stdout);
}

#[cfg(feature = "demo")]
#[test]
fn demo_runs_end_to_end_offline_and_checks_itself() {
    // Small data: the demo's own checks (cold downloaded, warm cached, tamper repaired, upgrade
    // patched) decide its exit code.
    let dir = tempfile::tempdir().unwrap();
    let out = assert_cmd::Command::cargo_bin("bootvault")
        .unwrap()
        .args(["demo", "--binaries-mb", "4", "--dir"])
        .arg(dir.path().join("store"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One labelled block per step; runc's outcome in each, in order.
    let header = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("ASSET"))
        .expect("a labelled header row");
    let labels: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(
        labels,
        ["ASSET", "OUTCOME", "HASHED", "DOWNLOADED", "TIME"],
        "{header}"
    );
    let runc: Vec<Vec<&str>> = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("runc "))
        .map(|l| l.split_whitespace().collect())
        .collect();
    let outcomes: Vec<&str> = runc.iter().map(|cells| cells[1]).collect();
    assert_eq!(
        outcomes,
        ["downloaded", "cached", "repaired", "cached", "cached"],
        "{stdout}"
    );
    // The last step upgrades the rootfs by a patch from the old one.
    let rootfs: Vec<&str> = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("rootfs "))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(rootfs.last(), Some(&"patched"), "{stdout}");
    // Every row ends with the time spent on that asset.
    for cells in &runc {
        assert!(
            ["µs", "ms", "s"].contains(cells.last().unwrap()),
            "{cells:?}"
        );
        assert!(cells[cells.len() - 2].parse::<f64>().is_ok(), "{cells:?}");
    }
    assert!(!stdout.contains("UNEXPECTED"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "store kept at {}",
            dir.path().join("store").display()
        )),
        "{stdout}"
    );
}

#[test]
fn prepare_dry_run_prints_the_plan_and_changes_nothing() {
    let env = Env::new();
    let origin = bootvault_testkit::origin::Origin::start().unwrap();
    let kept = blob(40, 4096);
    let absent = blob(41, 8192);
    let wrong = blob(42, 2048);
    origin.add("absent", absent.clone().into());
    origin.add("wrong", wrong.clone().into());
    env.put("kept", &kept);
    let m = env.write_manifest(
        "m.json",
        "v1",
        vec![
            asset("kept", "kept", &kept),
            asset_with_urls("absent", "absent", &absent, &[origin.url("absent")]),
            asset_with_urls("wrong", "wrong", &wrong, &[origin.url("wrong")]),
        ],
    );
    env.prepare_ok(&m, &[]);
    std::fs::remove_file(env.path("absent")).unwrap();
    let p = env.path("wrong");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&p, b"short").unwrap();
    let requests = origin.total_requests();
    let ledger_before = std::fs::read(env.ledger()).unwrap();

    let run = env.prepare(&m, &["--dry-run"]);
    assert_eq!(run.code, 0, "{}", run.describe());
    let v = run.json();
    assert_eq!(v["dry_run"], true);
    let action = |name: &str| {
        v["assets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {v}"))
            .clone()
    };
    assert_eq!(action("kept")["action"], "cached", "{v}");
    assert_eq!(action("absent")["action"], "fetch", "{v}");
    assert_eq!(action("absent")["bytes_to_fetch"], 8192, "{v}");
    assert_eq!(action("wrong")["action"], "repair", "{v}");
    assert_eq!(v["bytes_to_fetch"], 8192 + 2048, "{v}");

    // Nothing was touched: no request, the ledger and ROOT as they were.
    assert_eq!(origin.total_requests(), requests);
    assert!(std::fs::read(env.ledger()).unwrap() == ledger_before);
    assert!(!env.path("absent").exists());
    assert_eq!(env.read("wrong"), b"short");

    // The human form names each action and says nothing changed.
    let mut cmd = common::bootvault_cmd();
    cmd.args(["prepare", "--dry-run", "--dir"])
        .arg(&env.root)
        .arg("--manifest")
        .arg(&m);
    let human = common::run_cmd(cmd);
    assert_eq!(human.code, 0, "{}", human.describe());
    assert!(
        human.stdout.contains("fetch") && human.stdout.contains("repair"),
        "{}",
        human.stdout
    );
    assert!(
        human.stdout.contains("nothing was changed"),
        "{}",
        human.stdout
    );

    // With --message-format json the plan is one JSON line.
    let mut cmd = common::bootvault_cmd();
    cmd.args(["prepare", "--dry-run", "--message-format", "json", "--dir"])
        .arg(&env.root)
        .arg("--manifest")
        .arg(&m);
    let lines = common::run_cmd(cmd);
    assert_eq!(lines.code, 0, "{}", lines.describe());
    assert_eq!(lines.stdout.lines().count(), 1, "{}", lines.stdout);
    let v: Value = serde_json::from_str(lines.stdout.trim()).unwrap();
    assert_eq!(v["dry_run"], true);
}

// ---- secrets in URLs ----------------------------------------------------------------------------

/// A password in the manifest URL or a source URL (`http://user:pass@…`) appears nowhere:
/// not in errors, `-v` logs, JSON output, `debug` output or the ledger file. Before: in all
/// of them.
#[test]
fn regression_passwords_in_urls_are_never_printed_or_stored() {
    use bootvault_testkit::origin::Origin;
    const SECRET: &str = "s3cr3t-pw";
    let env = Env::new();
    let origin = Origin::start().unwrap();
    let with_secret = |path: &str| {
        origin
            .url(path)
            .replacen("http://", &format!("http://alice:{SECRET}@"), 1)
    };
    let k = blob(90, 2000);
    let i = blob(91, 2000);
    origin.add("k", k.clone().into());
    let m = native(
        "secret-1",
        vec![
            asset_with_urls("kernel", "boot/kernel", &k, &[with_secret("k")]),
            asset_with_urls("initrd", "boot/initrd", &i, &[with_secret("missing")]),
        ],
    );
    origin.add("m.json", serde_json::to_vec(&m).unwrap().into());
    let r = run(&[
        "prepare",
        "-v",
        "--dir",
        env.root.to_str().unwrap(),
        "--manifest",
        &with_secret("m.json"),
        "--retries",
        "0",
        "--json",
    ]);
    r.assert_code(1);
    assert!(
        r.stderr.contains("missing"),
        "the failure is reported: {}",
        r.describe()
    );
    let mut seen = vec![("prepare", format!("{}{}", r.stdout, r.stderr))];
    for (sub, args) in [
        ("ls", vec![]),
        ("why", vec!["initrd"]),
        ("show", vec!["boot/kernel"]),
    ] {
        let d = env.debug(sub, &args);
        seen.push((sub, format!("{}{}", d.stdout, d.stderr)));
    }
    for (what, text) in &seen {
        assert!(
            !text.contains(SECRET),
            "{what} printed the password: {text}"
        );
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(env.state()).unwrap().flatten() {
        if entry.path().is_file() {
            let bytes = std::fs::read(entry.path()).unwrap();
            if bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()) {
                found.push(entry.path());
            }
        }
    }
    assert!(found.is_empty(), "stored in {found:?}");
}

/// `STATE/locks` or `STATE/tmp` replaced by a symlink (the default state dir is inside ROOT,
/// where a guest can plant one) is refused: no lock file or partial download is created
/// through it. Before: lock files were created in the link's target and the download went
/// through it, exit 0.
#[test]
fn regression_symlinked_locks_and_tmp_in_the_state_dir_are_refused() {
    for sub in ["locks", "tmp"] {
        let env = Env::new();
        let data = blob(92, 3000);
        let url = env.source("k", &data);
        let m = env.manifest_v1(vec![asset_with_urls(
            "kernel",
            "boot/kernel",
            &data,
            &[url],
        )]);
        let elsewhere = env.outside("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::create_dir_all(env.state()).unwrap();
        std::os::unix::fs::symlink(&elsewhere, env.state().join(sub)).unwrap();
        let r = env.prepare(&m, &[]);
        assert_ne!(r.code, 0, "{sub}: {}", r.describe());
        assert!(
            r.stderr.contains(sub) && r.stderr.contains("symlink"),
            "{sub}: {}",
            r.describe()
        );
        let created: Vec<_> = std::fs::read_dir(&elsewhere).unwrap().flatten().collect();
        assert!(
            created.is_empty(),
            "{sub}: created through the link: {created:?}"
        );
        assert!(!env.path("boot/kernel").exists(), "{sub}: placed anyway");
    }
}

/// Two ROOTs sharing one state dir: the second is refused with one line naming both (exit 2)
/// instead of silently re-hashing everything on every prepare. Before: exit 0, every asset
/// `verified` again each time.
#[test]
fn regression_two_roots_sharing_one_state_dir_are_refused() {
    let env = Env::new();
    let other = Env::new();
    let state = env.outside("shared-state");
    let s = state.to_str().unwrap();
    let data = blob(93, 3000);
    env.put("kernel", &data);
    other.put("kernel", &data);
    let m = env.manifest_v1(vec![asset("kernel", "kernel", &data)]);
    env.prepare_ok(&m, &["--state-dir", s]);
    let r = other.prepare(&m, &["--state-dir", s]);
    r.assert_code(2);
    let first = std::fs::canonicalize(&env.root).unwrap();
    let second = std::fs::canonicalize(&other.root).unwrap();
    assert!(
        r.stderr.contains(first.to_str().unwrap()) && r.stderr.contains(second.to_str().unwrap()),
        "{}",
        r.describe()
    );
    // The store it belongs to is untouched and still warm.
    let v = env.prepare_ok(&m, &["--state-dir", s]);
    assert_eq!(asset_report(&v, "kernel")["outcome"], "cached");
}

/// The default state dir is checked by one `lstat` when it is a plain directory; a
/// `ROOT/.bootvault` planted as a symlink to another store's state dir must still be seen for
/// what it is (a state dir outside ROOT, whose marker names the other ROOT) and refused.
#[test]
fn regression_a_symlinked_default_state_dir_of_another_root_is_refused() {
    let env = Env::new();
    let other = Env::new();
    let data = blob(95, 3000);
    env.put("kernel", &data);
    other.put("kernel", &data);
    let m = env.manifest_v1(vec![asset("kernel", "kernel", &data)]);
    env.prepare_ok(&m, &[]);
    std::os::unix::fs::symlink(env.root.join(".bootvault"), other.root.join(".bootvault")).unwrap();
    let r = other.prepare(&m, &[]);
    r.assert_code(2);
    let first = std::fs::canonicalize(&env.root).unwrap();
    assert!(
        r.stderr.contains(first.to_str().unwrap()) && r.stderr.contains("cannot share"),
        "{}",
        r.describe()
    );
    let v = env.prepare_ok(&m, &[]);
    assert_eq!(asset_report(&v, "kernel")["outcome"], "cached");
}

/// `debug check` without `--manifest` and `debug why` make the one trust decision: a `0755`
/// asset (as its manifest asked) is fresh in both. Before: `debug check` said `stale (mode)`
/// and exited 1 while `debug why` said `fresh`.
#[test]
fn regression_debug_check_without_a_manifest_agrees_with_debug_why() {
    let env = Env::new();
    let data = blob(94, 3000);
    env.put("bin/runc", &data);
    let m = env.manifest_v1(vec![with(
        asset("runc", "bin/runc", &data),
        "mode",
        json!("0755"),
    )]);
    env.prepare_ok(&m, &[]);
    let mode = std::fs::metadata(env.path("bin/runc"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    let check = env.debug("check", &[]);
    check.assert_code(0);
    let rows = check.json();
    assert_eq!(rows["assets"][0]["state"], "fresh", "{rows}");
    let why = env.debug("why", &["bin/runc"]);
    why.assert_code(0);
    assert!(why.stdout.contains("fresh"), "{}", why.describe());
}

/// Issue: `prepare --dry-run` on a ROOT that does not exist yet exited 2 ("no such directory"),
/// though prepare would create it. It shows the plan (every asset fetched) and creates nothing.
#[test]
fn prepare_dry_run_on_a_root_that_does_not_exist_yet_shows_the_plan() {
    let env = Env::new();
    let body = blob(43, 5000);
    let url = env.source("kernel", &body);
    let m = env.write_manifest(
        "m.json",
        "v1",
        vec![asset_with_urls("kernel", "boot/kernel", &body, &[url])],
    );
    let root = env.outside("new-root");
    let mut cmd = common::bootvault_cmd();
    cmd.args(["prepare", "--dry-run", "--json", "--dir"])
        .arg(&root)
        .arg("--manifest")
        .arg(&m);
    let run = common::run_cmd(cmd);
    assert_eq!(run.code, 0, "{}", run.describe());
    let v = run.json();
    assert_eq!(v["root_exists"], false, "{v}");
    assert_eq!(v["assets"][0]["action"], "fetch", "{v}");
    assert_eq!(v["bytes_to_fetch"], 5000, "{v}");
    assert!(!root.exists(), "the dry run created ROOT");

    let mut cmd = common::bootvault_cmd();
    cmd.args(["prepare", "--dry-run", "--dir"])
        .arg(&root)
        .arg("--manifest")
        .arg(&m);
    let human = common::run_cmd(cmd);
    assert_eq!(human.code, 0, "{}", human.describe());
    assert!(
        human.stdout.contains("does not exist yet"),
        "{}",
        human.stdout
    );
    assert!(!root.exists(), "the dry run created ROOT");
}

/// Issue: `debug why NAME` without `--manifest` said "no such asset" for a name the ledger
/// knows (records are keyed by path); the events carry the name.
#[test]
fn debug_why_finds_an_asset_by_name_without_the_manifest() {
    let env = Env::new();
    let good = blob(44, 3000);
    let url = env.source("containerd", &good);
    let m = env.manifest_v1(vec![asset_with_urls(
        "containerd",
        "bin/containerd-1.7",
        &good,
        &[url],
    )]);
    env.prepare_ok(&m, &[]);
    let run = env.debug("why", &["containerd"]);
    assert_eq!(run.code, 0, "{}", run.describe());
    let v = run.json();
    assert_eq!(v["record"]["path"], "bin/containerd-1.7", "{v}");
    assert_eq!(v["record"]["sha256"].as_str(), Some(sha(&good).as_str()));
    // A name nobody knows is still an error.
    let unknown = env.debug("why", &["nope"]);
    assert_ne!(unknown.code, 0, "{}", unknown.describe());
}
