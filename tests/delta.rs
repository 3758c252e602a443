//! Delta upgrades end to end: `bootvault index` writes the indexes, the real binary prepares
//! v1 then patches v2 from it, against the real loopback origin (Range, faults, counters).

mod common;

use bootvault::Sha256Digest;
use bootvault_testkit::origin::{Fault, Origin};
use common::{Env, KIB, MIB, bootvault_cmd, data, insert_records, run_cmd, sha, throttled};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const ASSET: &str = "rootfs.img";

/// v2 of a v1 image: a few regions rewritten, one insertion (which shifts everything after it,
/// as a changed file in a filesystem image does).
fn upgrade(v1: &[u8], regions: &[(usize, usize)], seed: u64) -> Vec<u8> {
    let mut v2 = v1.to_vec();
    for (i, &(at, len)) in regions.iter().enumerate() {
        v2[at..at + len].copy_from_slice(&data(seed + i as u64, len));
    }
    let mid = v2.len() / 2;
    v2.splice(mid..mid, data(seed + 99, 3000));
    v2
}

/// One release on the origin: `bytes` at `vN/rootfs.img` and, when `indexed`, its index
/// beside it, written by `bootvault index`. Returns the manifest path.
fn release(env: &Env, origin: &Origin, version: &str, bytes: &[u8], indexed: bool) -> PathBuf {
    release_at(env, origin, version, ASSET, bytes, indexed)
}

/// As `release`, the asset at `path` under ROOT.
fn release_at(
    env: &Env,
    origin: &Origin,
    version: &str,
    path: &str,
    bytes: &[u8],
    indexed: bool,
) -> PathBuf {
    let src = env.outside(&format!("cdn-{version}"));
    std::fs::create_dir_all(src.join(path).parent().unwrap()).unwrap();
    std::fs::write(src.join(path), bytes).unwrap();
    let plain = env.outside(&format!("plain-{version}.json"));
    let m = json!({
        "version": version,
        "base_url": origin.base_url(),
        "assets": [{
            "name": "rootfs", "path": path, "sha256": sha(bytes), "size": bytes.len(),
            "urls": [format!("{version}/{ASSET}")],
        }],
    });
    std::fs::write(&plain, m.to_string()).unwrap();
    origin.add(&format!("{version}/{ASSET}"), bytes.to_vec().into());
    if !indexed {
        return plain;
    }
    let out = env.outside(&format!("manifest-{version}.json"));
    let mut cmd = bootvault_cmd();
    cmd.arg("index")
        .arg("--manifest")
        .arg(&plain)
        .arg("--dir")
        .arg(&src)
        .arg("--out")
        .arg(&out);
    let r = run_cmd(cmd);
    r.assert_code(0);
    let index = std::fs::read(src.join(format!("{path}.cidx"))).unwrap();
    let written: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(
        written["assets"][0]["index"],
        json!({"urls": [format!("{version}/{ASSET}.cidx")], "sha256": sha(&index)}),
        "OUT is IN plus the index reference"
    );
    origin.add(&format!("{version}/{ASSET}.cidx"), index.into());
    out
}

/// `prepare --dry-run` (human, or `--message-format json` parsed).
fn dry_run(env: &Env, manifest: &Path, json: bool) -> (String, Value) {
    let mut cmd = bootvault_cmd();
    cmd.args(["prepare", "--dry-run", "--dir"])
        .arg(&env.root)
        .arg("--manifest")
        .arg(manifest);
    if json {
        cmd.args(["--message-format", "json"]);
    }
    let r = run_cmd(cmd);
    r.assert_code(0);
    let v = if json {
        serde_json::from_str(r.stdout.trim()).unwrap()
    } else {
        Value::Null
    };
    (r.stdout, v)
}

fn served(origin: &Origin, version: &str) -> u64 {
    origin.bytes_served(&format!("{version}/{ASSET}"))
        + origin.bytes_served(&format!("{version}/{ASSET}.cidx"))
}

/// The asset's object in a prepare report.
fn rootfs(report: &Value) -> &Value {
    &report["assets"][0]
}

/// The reasons of the asset's logged events, newest first (`debug why --json`).
fn event_reasons(env: &Env, manifest: &Path) -> Vec<String> {
    let r = env.debug("why", &["rootfs", "--manifest", manifest.to_str().unwrap()]);
    r.assert_code(0);
    r.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn upgrade_patches_from_the_previous_version_fetching_only_changed_chunks() {
    let env = Env::new();
    let origin = Origin::start().unwrap();
    let v1 = data(1, 8 * MIB);
    let v2 = upgrade(&v1, &[(MIB, 64 * KIB), (5 * MIB, 100 * KIB)], 10);
    let m1 = release(&env, &origin, "v1", &v1, true);
    let m2 = release(&env, &origin, "v2", &v2, true);
    assert_eq!(rootfs(&env.prepare_ok(&m1, &[]))["outcome"], "downloaded");

    // The plan says patch, with its seed and figures, in every view of it.
    let (human, _) = dry_run(&env, &m2, false);
    let line = human.lines().nth(1).unwrap();
    assert!(line.contains("patch") && line.contains("reused"), "{human}");
    let (_, plan) = dry_run(&env, &m2, true);
    let step = &plan["assets"][0];
    assert_eq!(step["action"], "patch", "{plan}");
    assert_eq!(step["patch_from"], json!(env.path(ASSET)));
    let reused = step["bytes_reused"].as_u64().unwrap();
    let to_fetch = step["bytes_to_fetch"].as_u64().unwrap();
    assert_eq!(reused + to_fetch, v2.len() as u64);
    assert!(to_fetch < v2.len() as u64 / 10, "{step}");
    let why = env.debug("why", &["rootfs", "--manifest", m2.to_str().unwrap()]);
    assert_eq!(why.json()["action"], "patch", "{}", why.stdout);

    let before = served(&origin, "v2");
    let report = env.prepare_ok(&m2, &[]);
    let a = rootfs(&report);
    assert_eq!(a["outcome"], "patched", "{report}");
    assert_eq!(env.read(ASSET), v2);
    let fetched = served(&origin, "v2") - before;
    assert!(
        fetched < v2.len() as u64 / 10,
        "the origin served {fetched} bytes of a {} byte image",
        v2.len()
    );
    // The plan counts whole chunks; unchanged cells of changed chunks are copied too.
    let downloaded = a["bytes_downloaded"].as_u64().unwrap();
    assert!(downloaded <= to_fetch, "{downloaded} > {to_fetch}");
    assert_eq!(
        a["bytes_reused"].as_u64().unwrap() + downloaded,
        v2.len() as u64
    );
    assert_eq!(report["bytes_reused"], a["bytes_reused"]);
    assert!(origin.range_requests(&format!("v2/{ASSET}")) >= 1);
    assert_eq!(env.record_digests()[ASSET], sha(&v2));
    assert_eq!(env.leftovers(), Vec::<String>::new());

    // Warm: cached, and no index is read (nor fetched).
    let index_requests = origin.requests(&format!("v2/{ASSET}.cidx"));
    let warm = env.prepare_ok(&m2, &[]);
    assert_eq!(rootfs(&warm)["outcome"], "cached");
    assert_eq!(rootfs(&warm)["bytes_reused"], 0);
    assert_eq!(origin.requests(&format!("v2/{ASSET}.cidx")), index_requests);
}

#[test]
fn a_new_versioned_path_is_patched_from_the_same_file_name_under_the_old_one() {
    let env = Env::new();
    let origin = Origin::start().unwrap();
    let v1 = data(6, 4 * MIB);
    let v2 = upgrade(&v1, &[(2 * MIB, 32 * KIB)], 70);
    let m1 = release_at(&env, &origin, "v1", "v1/rootfs.img", &v1, true);
    let m2 = release_at(&env, &origin, "v2", "v2/rootfs.img", &v2, true);
    env.prepare_ok(&m1, &[]);
    let (_, plan) = dry_run(&env, &m2, true);
    assert_eq!(plan["assets"][0]["action"], "patch", "{plan}");
    assert_eq!(
        plan["assets"][0]["patch_from"],
        json!(env.path("v1/rootfs.img"))
    );
    // The streaming events: `ready` with `patched`, and the summary's `bytes_reused`.
    let mut cmd = bootvault_cmd();
    cmd.args(["prepare", "--message-format", "json", "--dir"])
        .arg(&env.root)
        .arg("--manifest")
        .arg(&m2);
    let r = run_cmd(cmd);
    r.assert_code(0);
    let lines: Vec<Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .any(|e| e["event"] == "ready" && e["outcome"] == "patched"),
        "{}",
        r.stdout
    );
    let report = lines.last().unwrap();
    assert_eq!(report["event"], "summary");
    assert_eq!(rootfs(report)["outcome"], "patched", "{report}");
    assert!(report["bytes_reused"].as_u64().unwrap() > v2.len() as u64 / 2);
    assert!(rootfs(report)["bytes_downloaded"].as_u64().unwrap() < v2.len() as u64 / 10);
    assert_eq!(env.read("v2/rootfs.img"), v2);
    assert_eq!(env.read("v1/rootfs.img"), v1, "the seed is only read");
}

#[test]
fn a_tampered_index_is_refused_and_the_asset_downloaded_whole() {
    let env = Env::new();
    let origin = Origin::start().unwrap();
    let v1 = data(2, 4 * MIB);
    let v2 = upgrade(&v1, &[(MIB, 32 * KIB)], 20);
    let m1 = release(&env, &origin, "v1", &v1, true);
    let m2 = release(&env, &origin, "v2", &v2, true);
    env.prepare_ok(&m1, &[]);
    // The origin now serves another index than the one the manifest names.
    let path = format!("v2/{ASSET}.cidx");
    let mut bad = std::fs::read(env.outside("cdn-v2").join(format!("{ASSET}.cidx"))).unwrap();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    origin.add(&path, bad.into());
    let (_, plan) = dry_run(&env, &m2, true);
    assert_ne!(plan["assets"][0]["action"], "patch", "{plan}");
    assert!(
        plan["assets"][0]["no_patch"]
            .as_str()
            .unwrap()
            .contains("the manifest says"),
        "{plan}"
    );
    let report = env.prepare_ok(&m2, &[]);
    assert_ne!(rootfs(&report)["outcome"], "patched");
    let why = rootfs(&report)["patch_fallback"].as_str().unwrap();
    assert!(why.contains("index hashes to"), "{report}");
    assert!(
        event_reasons(&env, &m2)
            .iter()
            .any(|r| r.contains("no patch: ") && r.contains("index hashes to")),
        "the event log says why"
    );
    assert!(origin.requests(&path) >= 1, "the index was tried");
    assert_eq!(env.read(ASSET), v2);
    assert_eq!(env.record_digests()[ASSET], sha(&v2));
}

#[test]
fn a_seed_changed_behind_a_lying_ledger_costs_a_fetch_never_trust() {
    let env = Env::new();
    let origin = Origin::start().unwrap();
    let v1 = data(3, 4 * MIB);
    let v2 = upgrade(&v1, &[(MIB, 32 * KIB)], 30);
    let v3 = upgrade(&v2, &[(3 * MIB, 32 * KIB)], 40);
    let m1 = release(&env, &origin, "v1", &v1, true);
    let m2 = release(&env, &origin, "v2", &v2, true);
    let m3 = release(&env, &origin, "v3", &v3, true);
    env.prepare_ok(&m1, &[]);
    // Patched: v2's index is now remembered, so v3's plan will not re-read the seed.
    assert_eq!(rootfs(&env.prepare_ok(&m2, &[]))["outcome"], "patched");
    // Change the seed's bytes, and make the ledger vouch for the changed file as v2.
    let p = env.path(ASSET);
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[100..200].fill(0xAA);
    std::fs::write(&p, &bytes).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let live = bootvault::Stamp::of_path(&p).unwrap().unwrap();
    let rec = bootvault::Record::new(
        Sha256Digest::of(&v2),
        &live,
        "v2",
        bootvault::stamp::wall_now_ns(),
        bootvault::Method::Downloaded,
        false,
    );
    insert_records(&env.root, [(ASSET.to_string(), rec.encode())]);

    let report = env.prepare_ok(&m3, &[]);
    assert_eq!(rootfs(&report)["outcome"], "patched", "{report}");
    assert_eq!(
        env.read(ASSET),
        v3,
        "the changed seed chunk was fetched, not copied"
    );
    let reasons = event_reasons(&env, &m3);
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("seed chunks had changed")),
        "{reasons:?}"
    );
}

#[test]
fn a_server_that_ignores_range_gets_a_whole_download_with_the_reason_logged() {
    let env = Env::new();
    let origin = Origin::start().unwrap();
    let v1 = data(4, 4 * MIB);
    let v2 = upgrade(&v1, &[(MIB, 32 * KIB)], 50);
    let m1 = release(&env, &origin, "v1", &v1, true);
    let m2 = release(&env, &origin, "v2", &v2, true);
    env.prepare_ok(&m1, &[]);
    origin.set_fault(
        &format!("v2/{ASSET}"),
        Fault {
            ignore_range: true,
            ..Fault::default()
        },
    );
    let report = env.prepare_ok(&m2, &[]);
    let a = rootfs(&report);
    assert!(
        ["downloaded", "repaired"].contains(&a["outcome"].as_str().unwrap()),
        "{report}"
    );
    assert_eq!(a["bytes_reused"], 0);
    assert!(
        a["patch_fallback"]
            .as_str()
            .unwrap()
            .contains("ignored Range"),
        "{report}"
    );
    assert_eq!(env.read(ASSET), v2);
    let reasons = event_reasons(&env, &m2);
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("patch abandoned") && r.contains("ignored Range")),
        "{reasons:?}"
    );
    // The index it downloaded is remembered as the new file's: the next upgrade seeds from
    // it without chunking it.
    let remembered: Vec<String> = std::fs::read_dir(env.state().join("chunks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        remembered.iter().any(|n| n.starts_with(&sha(&v2))),
        "{remembered:?}"
    );
}

#[test]
fn a_patch_killed_with_sigkill_resumes_from_what_it_had_fetched() {
    let env = Env::new();
    let origin = Origin::start().unwrap();
    let v1 = data(5, 8 * MIB);
    // Three separate changed regions: three Range requests, one at a time with --jobs 1.
    let v2 = upgrade(
        &v1,
        &[(MIB, 256 * KIB), (3 * MIB, 256 * KIB), (6 * MIB, 256 * KIB)],
        60,
    );
    let m1 = release(&env, &origin, "v1", &v1, true);
    let m2 = release(&env, &origin, "v2", &v2, true);
    env.prepare_ok(&m1, &[]);
    let (_, plan) = dry_run(&env, &m2, true);
    let planned = plan["assets"][0]["bytes_to_fetch"].as_u64().unwrap();
    let path = format!("v2/{ASSET}");
    origin.set_fault(&path, throttled(256 * KIB));
    let mut child = env.spawn_prepare(&m2, &["--jobs", "1"]);
    // Kill once the first run has arrived (and been written) and the second is under way.
    let deadline = Instant::now() + Duration::from_secs(60);
    while origin.bytes_served(&path) < 400 * KIB as u64 {
        assert!(
            Instant::now() < deadline,
            "the patch never started fetching"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let first = origin.bytes_served(&path);
    assert!(
        env.leftovers().iter().any(|n| n.ends_with(".patch")),
        "{:?}",
        env.leftovers()
    );
    origin.clear_fault(&path);
    let report = env.prepare_ok(&m2, &["--jobs", "1"]);
    let a = rootfs(&report);
    assert_eq!(a["outcome"], "patched", "{report}");
    assert_eq!(env.read(ASSET), v2);
    let second = origin.bytes_served(&path) - first;
    assert_eq!(a["bytes_downloaded"].as_u64().unwrap(), second);
    // The run the killed process had written is reused from its .patch file, not fetched again.
    assert!(
        second + 200 * KIB as u64 <= planned,
        "{second} fetched, {planned} planned"
    );
    assert_eq!(env.leftovers(), Vec::<String>::new());
}

#[test]
fn index_validation_names_the_asset_and_field() {
    let env = Env::new();
    let m = env.write_manifest(
        "bad.json",
        "v",
        vec![json!({
            "name": "rootfs", "path": ASSET, "sha256": sha(b"x"),
            "urls": ["http://127.0.0.1:1/x"],
            "index": {"urls": ["http://127.0.0.1:1/x.cidx"], "sha256": "zz"},
        })],
    );
    let r = env.prepare(&m, &[]);
    r.assert_code(2);
    assert!(
        r.stderr.contains("\"rootfs\"") && r.stderr.contains("index.sha256"),
        "{}",
        r.stderr
    );
}

/// Runs the binary with the docker config at `docker` (never the user's ~/.docker).
fn bv(docker: &Path, args: &[&str]) -> common::Run {
    let mut cmd = bootvault_cmd();
    cmd.args(args)
        .env("DOCKER_CONFIG", docker)
        .env_remove("REGISTRY_AUTH_FILE");
    run_cmd(cmd)
}

#[test]
fn signed_publish_then_upgrade_over_a_registry_with_basic_auth_patches_from_the_old_version() {
    use bootvault_testkit::registry::{Registry, RegistryAuth};
    assert!(
        Registry::available(),
        "docker-registry is not installed: apt-get install -y docker-registry (see .ci/run)"
    );
    let (user, password) = ("fleet", "s3cret-pass");
    let reg = Registry::start(RegistryAuth::Basic {
        user: user.into(),
        password: password.into(),
    })
    .unwrap();
    let env = Env::new();
    let docker = env.outside("docker");
    std::fs::create_dir_all(&docker).unwrap();
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    std::fs::write(
        docker.join("config.json"),
        json!({"auths": {reg.host(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let source = format!("oci://{}/fleet/boot", reg.host());
    // Signed: the index digests are covered by the manifest's signature.
    let (public, secret) = (env.outside("release.pub"), env.outside("release.key"));
    let keygen = std::process::Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(&public)
        .arg("-s")
        .arg(&secret)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("minisign is not installed: apt-get install -y minisign (see .ci/run)");
    assert!(keygen.status.success());
    let v1 = data(7, 4 * MIB);
    let v2 = upgrade(&v1, &[(MIB, 48 * KIB)], 80);
    let mut manifests = Vec::new();
    for (version, bytes) in [("v1", &v1), ("v2", &v2)] {
        let src = env.outside(&format!("src-{version}"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join(ASSET), bytes).unwrap();
        let plain = env.outside(&format!("plain-{version}.json"));
        let m = json!({"version": version, "assets": [{
            "name": "rootfs", "path": ASSET, "sha256": sha(bytes), "size": bytes.len(),
            "urls": [source],
        }]});
        std::fs::write(&plain, m.to_string()).unwrap();
        let out = env.outside(&format!("manifest-{version}.json"));
        let (p, s, o) = (
            plain.to_str().unwrap(),
            src.to_str().unwrap(),
            out.to_str().unwrap(),
        );
        bv(&docker, &["index", "--manifest", p, "--dir", s, "--out", o]).assert_code(0);
        let written: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(written["assets"][0]["index"]["urls"], json!([source]));
        let key = secret.to_str().unwrap();
        bv(&docker, &["sign", o, "--key", key]).assert_code(0);
        let tag = format!("{source}:{version}");
        // publish checks the signature it attaches against the public key.
        let trusted = public.to_str().unwrap();
        let r = bv(
            &docker,
            &[
                "publish",
                "--manifest",
                o,
                "--dir",
                s,
                "--trusted-key",
                trusted,
                "--json",
                &tag,
            ],
        );
        r.assert_code(0);
        manifests.push(tag);
    }
    let prepare = |m: &str| {
        let root = env.root.to_str().unwrap();
        let trusted = public.to_str().unwrap();
        let args = [
            "prepare",
            "--dir",
            root,
            "--manifest",
            m,
            "--json",
            "--trusted-key",
            trusted,
        ];
        let r = bv(&docker, &args);
        r.assert_code(0);
        r.json()
    };
    assert_eq!(rootfs(&prepare(&manifests[0]))["outcome"], "downloaded");
    let report = prepare(&manifests[1]);
    let a = rootfs(&report);
    assert_eq!(a["outcome"], "patched", "{report}");
    assert!(
        a["bytes_downloaded"].as_u64().unwrap() < v2.len() as u64 / 10,
        "{report}"
    );
    assert_eq!(env.read(ASSET), v2);
}

#[test]
fn two_processes_patching_the_same_asset_fetch_it_once() {
    let env = Env::new();
    let origin = Origin::start().unwrap();
    let v1 = data(8, 4 * MIB);
    let v2 = upgrade(&v1, &[(MIB, 256 * KIB), (3 * MIB, 256 * KIB)], 90);
    let m1 = release(&env, &origin, "v1", &v1, true);
    let m2 = release(&env, &origin, "v2", &v2, true);
    env.prepare_ok(&m1, &[]);
    let path = format!("v2/{ASSET}");
    // Slow enough that the second process arrives while the first holds the lock.
    origin.set_fault(&path, throttled(512 * KIB));
    let a = env.spawn_prepare(&m2, &[]);
    let b = env.spawn_prepare(&m2, &[]);
    let (a, b) = (common::wait(a), common::wait(b));
    let mut outcomes = vec![a.outcome("rootfs"), b.outcome("rootfs")];
    outcomes.sort();
    assert_eq!(
        outcomes,
        ["cached", "patched"],
        "{}\n{}",
        a.stdout,
        b.stdout
    );
    let patched = if a.outcome("rootfs") == "patched" {
        &a
    } else {
        &b
    };
    let fetched = rootfs(&patched.json())["bytes_downloaded"]
        .as_u64()
        .unwrap();
    assert_eq!(
        origin.bytes_served(&path),
        fetched,
        "one fetch of the changed bytes"
    );
    assert_eq!(env.read(ASSET), v2);
}
