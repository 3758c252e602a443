//! `oci://` sources, `publish` and signed manifests against a real CNCF distribution registry
//! (Debian's `docker-registry`, started per test on a free loopback port; `.ci/run` installs it).

mod common;

use bootvault_testkit::origin::Origin;
use bootvault_testkit::proxy::Proxy;
use bootvault_testkit::registry::{Registry, RegistryAuth};
use common::{
    Env, KIB, MIB, Run, asset, asset_with_urls, bootvault_cmd, data, outcomes, run_cmd, sha,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const USER: &str = "fleet";
const PASSWORD: &str = "s3cret-pass";

fn registry(auth: RegistryAuth) -> Registry {
    assert!(
        Registry::available(),
        "docker-registry is not installed: apt-get install -y docker-registry (see .ci/run)"
    );
    Registry::start(auth).expect("start docker-registry")
}

fn basic() -> RegistryAuth {
    RegistryAuth::Basic {
        user: USER.into(),
        password: PASSWORD.into(),
    }
}

/// A docker config dir: empty (no credentials), or with `auths` for `host`.
fn docker_config(env: &Env, host: Option<&str>) -> PathBuf {
    let dir = env.outside(if host.is_some() {
        "docker"
    } else {
        "docker-empty"
    });
    std::fs::create_dir_all(&dir).unwrap();
    let auths = match host {
        Some(h) => {
            use base64::Engine as _;
            let auth =
                base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
            serde_json::json!({ h: {"auth": auth} })
        }
        None => serde_json::json!({}),
    };
    std::fs::write(
        dir.join("config.json"),
        serde_json::json!({ "auths": auths }).to_string(),
    )
    .unwrap();
    dir
}

/// Runs the binary with an isolated credential environment (never the user's ~/.docker).
fn bv(docker: &Path, args: &[&str]) -> Run {
    let mut cmd = bootvault_cmd();
    cmd.args(args)
        .env("DOCKER_CONFIG", docker)
        .env_remove("REGISTRY_AUTH_FILE");
    run_cmd(cmd)
}

fn prepare(env: &Env, docker: &Path, manifest: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "prepare",
        "--dir",
        env.root.to_str().unwrap(),
        "--manifest",
        manifest,
        "--json",
    ];
    // Few retries: several tests expect a failure and need not wait for the backoff.
    if !extra.contains(&"--retries") {
        args.extend_from_slice(&["--retries", "1"]);
    }
    args.extend_from_slice(extra);
    bv(docker, &args)
}

/// `n` assets with deterministic bodies, written under `dir` at their paths.
fn assets(dir: &Path, n: usize, len: usize) -> Vec<(String, String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let name = format!("asset{i:02}");
            let path = format!("boot/{name}.img");
            let body = data(1000 + i as u64, len + i * 7);
            let p = dir.join(&path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, &body).unwrap();
            (name, path, body)
        })
        .collect()
}

/// A native manifest (at `file` beside ROOT) listing `set` with `urls` each.
fn manifest_for(
    env: &Env,
    file: &str,
    set: &[(String, String, Vec<u8>)],
    urls: &[String],
) -> PathBuf {
    let list = set
        .iter()
        .map(|(n, p, b)| {
            if urls.is_empty() {
                asset(n, p, b)
            } else {
                asset_with_urls(n, p, b, urls)
            }
        })
        .collect();
    env.write_manifest(file, "fleet-1", list)
}

/// Publishes `set` (files under `src`) with `manifest` to `target`; must succeed.
fn publish(docker: &Path, manifest: &Path, src: &Path, target: &str) -> Value {
    publish_with(docker, manifest, src, target, &[])
}

/// [`publish`] with extra arguments (`--trusted-key` to check a signature, ...).
fn publish_with(docker: &Path, manifest: &Path, src: &Path, target: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "publish",
        "--manifest",
        manifest.to_str().unwrap(),
        "--dir",
        src.to_str().unwrap(),
        "--json",
        target,
    ];
    args.extend_from_slice(extra);
    let r = bv(docker, &args);
    r.assert_code(0).json()
}

fn assert_placed(env: &Env, set: &[(String, String, Vec<u8>)]) {
    for (_, path, body) in set {
        assert!(env.read(path) == *body, "{path} has the published bytes");
    }
}

/// Publishes `set` anonymously to `reg` under REPO=`fleet/boot`; returns the source URL.
fn seed(reg: &Registry, env: &Env, set_dir: &Path, set: &[(String, String, Vec<u8>)]) -> String {
    let docker = docker_config(env, None);
    let m = manifest_for(env, "seed.json", set, &[]);
    publish(
        &docker,
        &m,
        set_dir,
        &format!("oci://{}/fleet/boot:seed", reg.host()),
    );
    format!("oci://{}/fleet/boot", reg.host())
}

#[test]
fn anonymous_pull_by_digest() {
    let reg = registry(RegistryAuth::Anonymous);
    let env = Env::new();
    let src = env.outside("src");
    let set = assets(&src, 3, 300 * KIB);
    let source = seed(&reg, &env, &src, &set);
    let m = manifest_for(&env, "m.json", &set, std::slice::from_ref(&source));
    let docker = docker_config(&env, None);
    let report = prepare(&env, &docker, m.to_str().unwrap(), &[]).report_ok();
    for (name, outcome) in outcomes(&report) {
        assert_eq!(outcome, "downloaded", "{name}");
    }
    assert_placed(&env, &set);
    // Warm: nothing is fetched again.
    let again = prepare(&env, &docker, m.to_str().unwrap(), &[]).report_ok();
    assert!(outcomes(&again).values().all(|o| o == "cached"), "{again}");
}

#[test]
fn basic_auth_with_docker_config_and_registry_auth_file() {
    let reg = registry(basic());
    let env = Env::new();
    let src = env.outside("src");
    let set = assets(&src, 2, 200 * KIB);
    let docker = docker_config(&env, Some(&reg.host()));
    let m = manifest_for(&env, "m.json", &set, &[]);
    publish(
        &docker,
        &m,
        &src,
        &format!("oci://{}/fleet/boot:v1", reg.host()),
    );
    let source = format!("oci://{}/fleet/boot", reg.host());
    let pull = manifest_for(&env, "pull.json", &set, std::slice::from_ref(&source));

    // Without credentials the registry refuses: exit 1, nothing placed, the reason named.
    let empty = docker_config(&env, None);
    let denied = prepare(&env, &empty, pull.to_str().unwrap(), &[]);
    denied.assert_code(1);
    assert!(
        denied.stderr.contains("no credentials"),
        "{}",
        denied.describe()
    );
    assert!(
        !denied.stderr.contains("(try"),
        "missing credentials are not retried: {}",
        denied.describe()
    );
    assert!(!env.path(&set[0].1).exists());

    // REGISTRY_AUTH_FILE (containers-auth.json has the same `auths` shape).
    let auth_file = docker.join("config.json");
    let mut cmd = bootvault_cmd();
    cmd.args([
        "prepare",
        "--dir",
        env.root.to_str().unwrap(),
        "--manifest",
        pull.to_str().unwrap(),
        "--json",
    ])
    .env("DOCKER_CONFIG", &empty)
    .env("REGISTRY_AUTH_FILE", &auth_file);
    let report = run_cmd(cmd).report_ok();
    assert!(
        outcomes(&report).values().all(|o| o == "downloaded"),
        "{report}"
    );
    assert_placed(&env, &set);
}

#[test]
fn bearer_token_flow() {
    let reg = registry(RegistryAuth::Token {
        user: USER.into(),
        password: PASSWORD.into(),
    });
    let env = Env::new();
    let src = env.outside("src");
    let set = assets(&src, 2, 150 * KIB);
    let docker = docker_config(&env, Some(&reg.host()));
    let m = manifest_for(&env, "m.json", &set, &[]);
    publish(
        &docker,
        &m,
        &src,
        &format!("oci://{}/fleet/boot:v1", reg.host()),
    );
    let issued_for_push = reg.tokens_issued();
    assert!(
        issued_for_push >= 1,
        "the push went through the token server"
    );
    let source = format!("oci://{}/fleet/boot", reg.host());
    let pull = manifest_for(&env, "pull.json", &set, std::slice::from_ref(&source));
    let report = prepare(&env, &docker, pull.to_str().unwrap(), &[]).report_ok();
    assert!(
        outcomes(&report).values().all(|o| o == "downloaded"),
        "{report}"
    );
    assert_placed(&env, &set);
    assert!(
        reg.tokens_issued() > issued_for_push,
        "the pull asked the token server for a pull token"
    );

    // Wrong password: the token server refuses, prepare fails and names it.
    let other = Env::new();
    let bad = other.outside("bad-docker");
    std::fs::create_dir_all(&bad).unwrap();
    {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:wrong"));
        std::fs::write(
            bad.join("config.json"),
            serde_json::json!({"auths": {reg.host(): {"auth": auth}}}).to_string(),
        )
        .unwrap();
    }
    let r = prepare(&other, &bad, pull.to_str().unwrap(), &[]);
    r.assert_code(1);
    assert!(r.stderr.contains("token server"), "{}", r.describe());
}

#[test]
fn mirror_serves_while_the_registry_is_down() {
    let mut origin = registry(RegistryAuth::Anonymous);
    let env = Env::new();
    let src = env.outside("src");
    let set = assets(&src, 2, 256 * KIB);
    let source = seed(&origin, &env, &src, &set);
    let mirror = Registry::start_mirror(&origin.url()).expect("start the pull-through mirror");
    let flag = format!("{}={}", origin.host(), mirror.host());
    let m = manifest_for(&env, "m.json", &set, std::slice::from_ref(&source));
    let docker = docker_config(&env, None);

    // Host 1 pulls through the mirror, which fills its cache from the registry.
    let report = prepare(
        &env,
        &docker,
        m.to_str().unwrap(),
        &["--registry-mirror", &flag],
    )
    .report_ok();
    assert!(
        outcomes(&report).values().all(|o| o == "downloaded"),
        "{report}"
    );

    origin.stop();
    // Host 2, registry down: without the mirror it fails...
    let host2 = Env::new();
    let r = prepare(&host2, &docker, m.to_str().unwrap(), &[]);
    r.assert_code(1);
    assert!(!host2.path(&set[0].1).exists());
    // ...with the mirror tried first it succeeds.
    let report = prepare(
        &host2,
        &docker,
        m.to_str().unwrap(),
        &["--registry-mirror", &flag],
    )
    .report_ok();
    assert!(
        outcomes(&report).values().all(|o| o == "downloaded"),
        "{report}"
    );
    assert_placed(&host2, &set);
}

#[test]
fn a_cut_blob_download_resumes_with_range() {
    let reg = registry(RegistryAuth::Anonymous);
    let env = Env::new();
    let src = env.outside("src");
    let set = assets(&src, 1, 4 * MIB);
    seed(&reg, &env, &src, &set);
    let proxy = Proxy::start(reg.addr()).unwrap();
    // The first connection dies after 1 MiB of the answer.
    proxy.cut_after(MIB as u64, 1);
    let source = format!("oci://{}/fleet/boot", proxy.host());
    let m = manifest_for(&env, "m.json", &set, std::slice::from_ref(&source));
    let docker = docker_config(&env, None);
    let report = prepare(&env, &docker, m.to_str().unwrap(), &["--retries", "3"]).report_ok();
    assert_eq!(proxy.cuts(), 1, "the download was cut once");
    let size = set[0].2.len() as u64;
    let a = &report["assets"][0];
    assert_eq!(a["outcome"], "downloaded");
    // A restart would have received the first MiB twice.
    assert_eq!(
        a["bytes_downloaded"].as_u64(),
        Some(size),
        "resumed, not restarted: {report}"
    );
    assert!(
        proxy.bytes_down() < size + 256 * KIB as u64,
        "registry sent {} bytes for a {size}-byte blob",
        proxy.bytes_down()
    );
    assert_placed(&env, &set);
}

#[test]
fn a_registry_serving_a_wrong_blob_places_nothing() {
    let reg = registry(RegistryAuth::Anonymous);
    let env = Env::new();
    let src = env.outside("src");
    let set = assets(&src, 1, 512 * KIB);
    let source = seed(&reg, &env, &src, &set);
    // Same length, different bytes, behind the registry's back.
    let data_path = reg.blob_data_path(&sha(&set[0].2));
    let mut bytes = std::fs::read(&data_path).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&data_path, bytes).unwrap();
    let m = manifest_for(&env, "m.json", &set, std::slice::from_ref(&source));
    let docker = docker_config(&env, None);
    let r = prepare(&env, &docker, m.to_str().unwrap(), &[]);
    r.assert_code(1);
    assert!(r.stderr.contains("sha256 mismatch"), "{}", r.describe());
    assert!(
        r.stderr.contains(&set[0].0),
        "names the asset: {}",
        r.describe()
    );
    assert!(!env.path(&set[0].1).exists(), "nothing placed");
    assert!(
        env.leftovers().is_empty(),
        "no partial kept: {:?}",
        env.leftovers()
    );
}

#[test]
fn concurrent_processes_pull_each_blob_once() {
    const PROCS: usize = 8;
    let reg = registry(RegistryAuth::Anonymous);
    let env = Env::new();
    let src = env.outside("src");
    let set = assets(&src, 2, MIB);
    seed(&reg, &env, &src, &set);
    let proxy = Proxy::start(reg.addr()).unwrap();
    // About half a second per blob, so that every process overlaps the download.
    proxy.throttle(4 * MIB as u64);
    let source = format!("oci://{}/fleet/boot", proxy.host());
    let m = manifest_for(&env, "m.json", &set, std::slice::from_ref(&source));
    let docker = docker_config(&env, None);
    let children: Vec<_> = (0..PROCS)
        .map(|_| {
            let mut cmd = bootvault_cmd();
            cmd.args([
                "prepare",
                "--dir",
                env.root.to_str().unwrap(),
                "--manifest",
                m.to_str().unwrap(),
                "--json",
            ])
            .env("DOCKER_CONFIG", &docker)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    let mut downloaded = 0;
    for child in children {
        let run: Run = child.wait_with_output().unwrap().into();
        for (_, o) in outcomes(&run.report_ok()) {
            assert!(
                ["downloaded", "cached", "verified"].contains(&o.as_str()),
                "{o}"
            );
            downloaded += usize::from(o == "downloaded");
        }
    }
    assert_eq!(downloaded, set.len(), "one process downloads each asset");
    let total: u64 = set.iter().map(|(_, _, b)| b.len() as u64).sum();
    assert!(
        proxy.bytes_down() < total + 256 * KIB as u64,
        "registry served {} bytes for {total} bytes of blobs across {PROCS} processes",
        proxy.bytes_down()
    );
    assert_placed(&env, &set);
}

#[test]
fn publish_never_uploads_a_file_that_does_not_match() {
    let reg = registry(RegistryAuth::Anonymous);
    let env = Env::new();
    let src = env.outside("src");
    let set = assets(&src, 2, 64 * KIB);
    let m = manifest_for(&env, "m.json", &set, &[]);
    // The second file changed after the manifest was written.
    std::fs::write(src.join(&set[1].1), b"not what the manifest says").unwrap();
    let docker = docker_config(&env, None);
    let r = bv(
        &docker,
        &[
            "publish",
            "--manifest",
            m.to_str().unwrap(),
            "--dir",
            src.to_str().unwrap(),
            &format!("oci://{}/fleet/boot:v1", reg.host()),
        ],
    );
    r.assert_code(1);
    assert!(
        r.stderr.contains(&set[1].0),
        "names the asset: {}",
        r.describe()
    );
    assert!(r.stderr.contains("not uploaded"), "{}", r.describe());
    for (_, _, body) in &set {
        assert!(
            !reg.blob_data_path(&sha(body)).exists(),
            "no blob was uploaded"
        );
    }
    // And the tag does not exist: resolving it is refused as bad input.
    let r = prepare(
        &env,
        &docker,
        &format!("oci://{}/fleet/boot:v1", reg.host()),
        &[],
    );
    r.assert_code(2);
}

// ---- publish → prepare with signatures ---------------------------------------------------------

fn minisign(args: &[&str]) {
    let out = Command::new("minisign")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("minisign is not installed: apt-get install -y minisign (see .ci/run)");
    assert!(
        out.status.success(),
        "minisign {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A key pair made by the minisign CLI, without a password: (public, secret).
fn keypair(env: &Env, name: &str) -> (PathBuf, PathBuf) {
    let public = env.outside(&format!("{name}.pub"));
    let secret = env.outside(&format!("{name}.key"));
    minisign(&[
        "-G",
        "-W",
        "-p",
        public.to_str().unwrap(),
        "-s",
        secret.to_str().unwrap(),
    ]);
    (public, secret)
}

#[test]
fn publish_prepare_round_trip_twenty_assets_basic_auth_signed() {
    let reg = registry(basic());
    let env = Env::new();
    let src = env.outside("src");
    let set = assets(&src, 20, 48 * KIB);
    let docker = docker_config(&env, Some(&reg.host()));
    let m = manifest_for(&env, "set.json", &set, &[]);
    let (public, secret) = keypair(&env, "release");
    let (other_public, other_secret) = keypair(&env, "other");
    bv(
        &docker,
        &[
            "sign",
            m.to_str().unwrap(),
            "--key",
            secret.to_str().unwrap(),
        ],
    )
    .assert_code(0);
    // The signature is the minisign CLI's format: the CLI accepts it.
    minisign(&[
        "-V",
        "-p",
        public.to_str().unwrap(),
        "-m",
        m.to_str().unwrap(),
    ]);
    let tag = format!("oci://{}/fleet/boot:2026.11", reg.host());
    // publish checks the signature it attaches against the release key.
    let check = ["--trusted-key", public.to_str().unwrap()];
    let pushed = publish_with(&docker, &m, &src, &tag, &check);
    assert_eq!(pushed["uploaded"].as_array().unwrap().len(), 20, "{pushed}");
    assert_eq!(pushed["signed"], true);
    // Publishing again uploads nothing (HEAD first).
    let again = publish_with(&docker, &m, &src, &tag, &check);
    assert_eq!(again["uploaded"].as_array().unwrap().len(), 0, "{again}");
    assert_eq!(again["skipped"].as_array().unwrap().len(), 20, "{again}");

    let trusted = ["--trusted-key", public.to_str().unwrap()];
    let fresh = Env::new();
    let report = prepare(&fresh, &docker, &tag, &trusted).report_ok();
    assert_eq!(report["manifest_version"], "fleet-1");
    assert_eq!(outcomes(&report).len(), 20);
    assert!(
        outcomes(&report).values().all(|o| o == "downloaded"),
        "{report}"
    );
    assert_placed(&fresh, &set);

    // The library call a host makes: which key vouched, the minisign CLI's key ID.
    let key = bootvault::sign::TrustedKey::from_file(&public).unwrap();
    let pub_comment = std::fs::read_to_string(&public).unwrap();
    assert!(
        pub_comment.contains(&key.id),
        "{pub_comment} names {}",
        key.id
    );
    // The ledger records which key vouched for the manifest version, and where it came from.
    let ls = fresh.debug("ls", &[]).json();
    let entry = &ls["manifests"][0];
    assert_eq!(entry["version"], "fleet-1", "{ls}");
    assert_eq!(entry["signed_by"], key.id.as_str(), "{ls}");
    assert_eq!(entry["source"], tag.as_str(), "{ls}");
    assert!(
        entry["oci_digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")),
        "{ls}"
    );
    let mut opts = bootvault::FetchOptions::default();
    opts.oci = bootvault::oci::OciOptions {
        credentials: vec![(
            reg.host(),
            bootvault::oci::Credential {
                username: USER.into(),
                password: PASSWORD.into(),
            },
        )],
        ..Default::default()
    };
    let parse = |text: &str, origin: &str| {
        bootvault::Manifest::parse(text, origin, &bootvault::ParseOptions::default())
    };
    let loaded =
        bootvault::oci::load_manifest(&tag, &opts, std::slice::from_ref(&key), &parse).unwrap();
    assert_eq!(loaded.signed_by.as_deref(), Some(key.id.as_str()));
    assert_eq!(loaded.manifest.assets.len(), 20);
    assert_eq!(
        loaded.manifest.assets[0].urls,
        [format!("oci://{}/fleet/boot", reg.host())]
    );

    // A tampered manifest under the original signature is refused (exit 2, named).
    let tampered = env.outside("tampered.json");
    let mut text = std::fs::read_to_string(&m).unwrap();
    text = text.replacen("fleet-1", "fleet-2", 1);
    std::fs::write(&tampered, &text).unwrap();
    std::fs::copy(
        env.outside("set.json.minisig"),
        env.outside("tampered.json.minisig"),
    )
    .unwrap();
    let bad_tag = format!("oci://{}/fleet/boot:tampered", reg.host());
    // Deliberately: publish would refuse it (it checks what it attaches).
    publish_with(
        &docker,
        &tampered,
        &src,
        &bad_tag,
        &["--no-verify-signature"],
    );
    let r = prepare(&Env::new(), &docker, &bad_tag, &trusted);
    r.assert_code(2);
    assert!(
        r.stderr.contains(&bad_tag),
        "names the manifest: {}",
        r.describe()
    );
    assert!(r.stderr.contains("signature refused"), "{}", r.describe());

    // A tampered signature is refused.
    let forged = env.outside("forged.minisig");
    let sig = std::fs::read_to_string(env.outside("set.json.minisig")).unwrap();
    let mut lines: Vec<String> = sig.lines().map(str::to_string).collect();
    lines[2] = format!("{}x", lines[2]); // the trusted comment, covered by the global signature
    std::fs::write(&forged, lines.join("\n") + "\n").unwrap();
    let forged_tag = format!("oci://{}/fleet/boot:forged", reg.host());
    bv(
        &docker,
        &[
            "publish",
            "--manifest",
            m.to_str().unwrap(),
            "--dir",
            src.to_str().unwrap(),
            "--signature",
            forged.to_str().unwrap(),
            "--no-verify-signature",
            &forged_tag,
        ],
    )
    .assert_code(0);
    let r = prepare(&Env::new(), &docker, &forged_tag, &trusted);
    r.assert_code(2);
    assert!(r.stderr.contains("signature refused"), "{}", r.describe());

    // Signed by a key that is not trusted.
    let other_sig = env.outside("other.minisig");
    bv(
        &docker,
        &[
            "sign",
            m.to_str().unwrap(),
            "--key",
            other_secret.to_str().unwrap(),
            "--output",
            other_sig.to_str().unwrap(),
        ],
    )
    .assert_code(0);
    let other_tag = format!("oci://{}/fleet/boot:other", reg.host());
    bv(
        &docker,
        &[
            "publish",
            "--manifest",
            m.to_str().unwrap(),
            "--dir",
            src.to_str().unwrap(),
            "--signature",
            other_sig.to_str().unwrap(),
            "--no-verify-signature",
            &other_tag,
        ],
    )
    .assert_code(0);
    let r = prepare(&Env::new(), &docker, &other_tag, &trusted);
    r.assert_code(2);
    assert!(r.stderr.contains("not trusted"), "{}", r.describe());
    // ...but accepted when that key is trusted too.
    prepare(
        &Env::new(),
        &docker,
        &other_tag,
        &[
            &trusted[..],
            &["--trusted-key", other_public.to_str().unwrap()],
        ]
        .concat(),
    )
    .report_ok();

    // An unsigned tag is refused; the same content pinned by digest needs no signature.
    let plain = env.outside("plain.json");
    std::fs::copy(&m, &plain).unwrap();
    let plain_tag = format!("oci://{}/fleet/boot:unsigned", reg.host());
    let pushed = publish(&docker, &plain, &src, &plain_tag);
    assert_eq!(pushed["signed"], false);
    let r = prepare(&Env::new(), &docker, &plain_tag, &trusted);
    r.assert_code(2);
    assert!(r.stderr.contains("not signed"), "{}", r.describe());
    let pinned = pushed["pinned"].as_str().unwrap();
    prepare(&Env::new(), &docker, pinned, &trusted).report_ok();
    // A pin that does not match what the registry holds is refused (it names nothing there:
    // bad input).
    let wrong_pin = format!("oci://{}/fleet/boot@sha256:{}", reg.host(), "ab".repeat(32));
    prepare(&Env::new(), &docker, &wrong_pin, &trusted).assert_code(2);
}

#[test]
fn manifest_from_https_url_with_minisig_beside_it() {
    let env = Env::new();
    let origin = Origin::start().unwrap();
    let body = data(7, 100 * KIB);
    origin.add("kernel", body.clone().into());
    let m = env.write_manifest(
        "m.json",
        "url-1",
        vec![asset_with_urls(
            "kernel",
            "boot/kernel",
            &body,
            &[origin.url("kernel")],
        )],
    );
    let (public, secret) = keypair(&env, "k");
    // Signed by the minisign CLI itself this time.
    minisign(&[
        "-S",
        "-s",
        secret.to_str().unwrap(),
        "-m",
        m.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&m).unwrap();
    origin.add("m.json", bytes.clone().into());
    let url = origin.url("m.json");
    let docker = docker_config(&env, None);
    let trusted = ["--trusted-key", public.to_str().unwrap()];
    // No signature published yet.
    let r = prepare(&env, &docker, &url, &trusted);
    r.assert_code(2);
    assert!(r.stderr.contains(&url), "{}", r.describe());
    let sig = std::fs::read(env.outside("m.json.minisig")).unwrap();
    origin.add("m.json.minisig", sig.into());
    let report = prepare(&env, &docker, &url, &trusted).report_ok();
    assert_eq!(report["manifest_version"], "url-1");
    assert_eq!(env.read("boot/kernel"), body);
    // The manifest changes on the server, the signature does not: refused.
    let changed = String::from_utf8(bytes).unwrap().replace("url-1", "url-2");
    origin.add("m.json", changed.into_bytes().into());
    let r = prepare(&Env::new(), &docker, &url, &trusted);
    r.assert_code(2);
    assert!(r.stderr.contains("signature refused"), "{}", r.describe());
    // Without a trusted key, a URL manifest is used as is.
    prepare(&Env::new(), &docker, &url, &[]).report_ok();
    // A busy server (503 twice) gets more tries.
    origin.add("busy.json", std::fs::read(&m).unwrap().into());
    origin.set_fault(
        "busy.json",
        bootvault_testkit::origin::Fault {
            fail_first: 2,
            fail_status: 503,
            ..Default::default()
        },
    );
    prepare(&Env::new(), &docker, &origin.url("busy.json"), &[]).report_ok();
    assert_eq!(origin.requests("busy.json"), 3);
    // A manifest is read into memory only up to a bound.
    origin.add("huge.json", vec![b' '; 9 * MIB].into());
    let r = prepare(&Env::new(), &docker, &origin.url("huge.json"), &[]);
    r.assert_code(1);
    assert!(r.stderr.contains("larger than"), "{}", r.describe());
    // --offline never fetches a manifest.
    let r = prepare(&Env::new(), &docker, &url, &["--offline"]);
    r.assert_code(2);
    assert!(r.stderr.contains("--offline"), "{}", r.describe());
}

#[test]
fn credentials_from_a_docker_credential_helper() {
    let reg = registry(basic());
    let env = Env::new();
    let src = env.outside("src");
    let set = assets(&src, 1, 64 * KIB);
    // A helper speaking the docker-credential protocol: host on stdin, JSON on stdout.
    let bin = env.outside("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-bvtest");
    let log = env.outside("helper.log");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread host\necho \"$host\" >> {}\n\
             printf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}' \"$host\"\n",
            log.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let docker = env.outside("docker-helper");
    std::fs::create_dir_all(&docker).unwrap();
    std::fs::write(
        docker.join("config.json"),
        serde_json::json!({"auths": {}, "credHelpers": {reg.host(): "bvtest"}}).to_string(),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let m = manifest_for(&env, "m.json", &set, &[]);
    let mut cmd = bootvault_cmd();
    cmd.args([
        "publish",
        "--manifest",
        m.to_str().unwrap(),
        "--dir",
        src.to_str().unwrap(),
        &format!("oci://{}/fleet/boot:v1", reg.host()),
    ])
    .env("DOCKER_CONFIG", &docker)
    .env("PATH", &path);
    run_cmd(cmd).assert_code(0);
    let mut cmd = bootvault_cmd();
    cmd.args([
        "prepare",
        "--dir",
        env.root.to_str().unwrap(),
        "--manifest",
        &format!("oci://{}/fleet/boot:v1", reg.host()),
        "--json",
    ])
    .env("DOCKER_CONFIG", &docker)
    .env("PATH", &path);
    let report = run_cmd(cmd).report_ok();
    assert!(
        outcomes(&report).values().all(|o| o == "downloaded"),
        "{report}"
    );
    assert_placed(&env, &set);
    let asked = std::fs::read_to_string(&log).unwrap();
    assert!(
        asked.lines().all(|l| l == reg.host()) && !asked.is_empty(),
        "the helper was asked for the registry host: {asked:?}"
    );
}

/// One request seen by `RedirectingRegistry`: Host header, path, and its Authorization.
#[derive(Clone, Debug)]
struct Seen {
    host: String,
    path: String,
    authorization: Option<String>,
}

/// A minimal registry front on 127.0.0.1 that wants Basic auth and redirects blob GETs to
/// `localhost` on the same port (another host, as blob storage is): records every request.
fn redirecting_registry(body: Vec<u8>) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<Seen>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { break };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let (mut host, mut auth) = (String::new(), None);
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
                let (k, v) = h.split_once(':').unwrap_or((&h, ""));
                match k.trim().to_ascii_lowercase().as_str() {
                    "host" => host = v.trim().to_string(),
                    "authorization" => auth = Some(v.trim().to_string()),
                    _ => {}
                }
            }
            log.lock().unwrap().push(Seen {
                host: host.clone(),
                path: path.clone(),
                authorization: auth.clone(),
            });
            let head = |status: &str, extra: &str, len: usize| {
                format!(
                    "HTTP/1.1 {status}\r\n{extra}Content-Length: {len}\r\nConnection: close\r\n\r\n"
                )
            };
            let authorized = auth.is_some();
            let reply = if path.starts_with("/storage/") {
                let mut r = head("200 OK", "", body.len()).into_bytes();
                r.extend_from_slice(&body);
                r
            } else if !authorized {
                head(
                    "401 Unauthorized",
                    "WWW-Authenticate: Basic realm=\"test\"\r\n",
                    0,
                )
                .into_bytes()
            } else if path == "/v2/" {
                head("200 OK", "", 0).into_bytes()
            } else if path.contains("/blobs/") {
                head(
                    "307 Temporary Redirect",
                    &format!("Location: http://localhost:{port}/storage/blob\r\n"),
                    0,
                )
                .into_bytes()
            } else {
                head("404 Not Found", "", 0).into_bytes()
            };
            let _ = conn.write_all(&reply);
        }
    });
    (port, seen)
}

#[test]
fn a_redirect_to_blob_storage_does_not_carry_the_credentials() {
    let env = Env::new();
    let body = data(42, 200 * KIB);
    let (port, seen) = redirecting_registry(body.clone());
    let host = format!("127.0.0.1:{port}");
    let docker = docker_config(&env, Some(&host));
    let m = env.write_manifest(
        "m.json",
        "redirect-1",
        vec![asset_with_urls(
            "kernel",
            "boot/kernel",
            &body,
            &[format!("oci://{host}/fleet/boot")],
        )],
    );
    let report = prepare(&env, &docker, m.to_str().unwrap(), &[]).report_ok();
    assert_eq!(outcomes(&report)["kernel"], "downloaded");
    assert_eq!(env.read("boot/kernel"), body);
    let seen = seen.lock().unwrap().clone();
    let blob = seen
        .iter()
        .find(|s| s.path.contains("/blobs/sha256:"))
        .unwrap_or_else(|| panic!("no blob request in {seen:?}"));
    assert!(
        blob.authorization
            .as_deref()
            .is_some_and(|a| a.starts_with("Basic ")),
        "the registry got the credentials: {seen:?}"
    );
    let storage = seen
        .iter()
        .find(|s| s.path.starts_with("/storage/"))
        .unwrap_or_else(|| panic!("the redirect was not followed: {seen:?}"));
    assert!(storage.host.starts_with("localhost"), "{storage:?}");
    assert_eq!(
        storage.authorization, None,
        "credentials leaked to the storage host: {seen:?}"
    );
}

#[test]
fn sign_with_a_password_protected_key() {
    let env = Env::new();
    let public = env.outside("enc.pub");
    let secret = env.outside("enc.key");
    // The minisign CLI reads the new password twice from stdin when it is not a terminal.
    let mut child = Command::new("minisign")
        .args([
            "-G",
            "-p",
            public.to_str().unwrap(),
            "-s",
            secret.to_str().unwrap(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("minisign is not installed: apt-get install -y minisign (see .ci/run)");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"correct horse\ncorrect horse\n")
            .unwrap();
    }
    assert!(child.wait().unwrap().success());
    let m = env.write_manifest("m.json", "enc-1", vec![]);
    let sign = |password: Option<&str>| {
        let mut cmd = bootvault_cmd();
        cmd.args([
            "sign",
            m.to_str().unwrap(),
            "--key",
            secret.to_str().unwrap(),
        ]);
        match password {
            Some(p) => cmd.env("BOOTVAULT_KEY_PASSWORD", p),
            None => cmd.env_remove("BOOTVAULT_KEY_PASSWORD"),
        };
        run_cmd(cmd)
    };
    let r = sign(None);
    r.assert_code(2);
    assert!(
        r.stderr.contains("BOOTVAULT_KEY_PASSWORD"),
        "{}",
        r.describe()
    );
    let r = sign(Some("wrong"));
    r.assert_code(2);
    assert!(!env.outside("m.json.minisig").exists());
    sign(Some("correct horse")).assert_code(0);
    minisign(&[
        "-V",
        "-p",
        public.to_str().unwrap(),
        "-m",
        m.to_str().unwrap(),
    ]);
}

#[test]
fn publish_mounts_blobs_from_another_repository_of_the_registry() {
    let reg = registry(RegistryAuth::Token {
        user: USER.into(),
        password: PASSWORD.into(),
    });
    let env = Env::new();
    let src = env.outside("src");
    let set = assets(&src, 3, 128 * KIB);
    let docker = docker_config(&env, Some(&reg.host()));
    let first = manifest_for(&env, "first.json", &set, &[]);
    publish(
        &docker,
        &first,
        &src,
        &format!("oci://{}/fleet/boot:v1", reg.host()),
    );
    // The next set names the repository its assets already live in.
    let source = format!("oci://{}/fleet/boot", reg.host());
    let next = manifest_for(&env, "next.json", &set, std::slice::from_ref(&source));
    let tag = format!("oci://{}/fleet/other:v1", reg.host());
    let pushed = publish(&docker, &next, &src, &tag);
    assert_eq!(pushed["mounted"].as_array().unwrap().len(), 3, "{pushed}");
    assert_eq!(pushed["bytes_uploaded"], 0, "{pushed}");
    // The artifact in the new repository resolves and its assets come from there.
    let fresh = Env::new();
    let report = prepare(&fresh, &docker, &tag, &[]).report_ok();
    assert!(
        outcomes(&report).values().all(|o| o == "downloaded"),
        "{report}"
    );
    assert_placed(&fresh, &set);
}

/// One request seen by a `recording_server`: method, Host header, path, Authorization.
#[derive(Clone, Debug)]
struct Request {
    method: String,
    host: String,
    path: String,
    authorization: Option<String>,
}

type Seen2 = std::sync::Arc<std::sync::Mutex<Vec<Request>>>;

/// A loopback HTTP/1.1 server on 127.0.0.1 (one request per connection) that records every
/// request and answers with `reply(request, port)` = (status line, extra headers, body).
fn recording_server(
    reply: impl Fn(&Request, u16) -> (String, String, Vec<u8>) + Send + 'static,
) -> (u16, Seen2) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen2 = Default::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { break };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut words = line.split_whitespace();
            let method = words.next().unwrap_or("").to_string();
            let path = words.next().unwrap_or("").to_string();
            let (mut host, mut authorization, mut len) = (String::new(), None, 0usize);
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
                let (k, v) = h.split_once(':').unwrap_or((&h, ""));
                match k.trim().to_ascii_lowercase().as_str() {
                    "host" => host = v.trim().to_string(),
                    "authorization" => authorization = Some(v.trim().to_string()),
                    "content-length" => len = v.trim().parse().unwrap_or(0),
                    _ => {}
                }
            }
            let mut body = vec![0u8; len];
            let _ = reader.read_exact(&mut body);
            let req = Request {
                method,
                host,
                path,
                authorization,
            };
            let (status, extra, body) = reply(&req, port);
            log.lock().unwrap().push(req);
            let mut out = format!(
                "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            out.extend_from_slice(&body);
            let _ = conn.write_all(&out);
        }
    });
    (port, seen)
}

fn ok(body: Vec<u8>) -> (String, String, Vec<u8>) {
    ("200 OK".into(), String::new(), body)
}

/// A registry on 127.0.0.1 (plain HTTP, like any loopback registry) whose Bearer challenge
/// names a token realm on another host (`localhost`, plain HTTP): the configured Basic
/// credentials must not go there. Before: the token request carried them.
#[test]
fn regression_basic_credentials_never_go_to_a_plain_http_token_realm_on_another_host() {
    let env = Env::new();
    let body = data(43, 64 * KIB);
    let served = body.clone();
    let (port, seen) = recording_server(move |r, port| {
        let bearer = r.authorization.as_deref() == Some("Bearer anon-token");
        if r.path.starts_with("/token") {
            ok(br#"{"token":"anon-token"}"#.to_vec())
        } else if !bearer {
            (
                "401 Unauthorized".into(),
                format!(
                    "WWW-Authenticate: Bearer realm=\"http://localhost:{port}/token\",service=\"t\"\r\n"
                ),
                Vec::new(),
            )
        } else if r.path == "/v2/" {
            ok(Vec::new())
        } else if r.path.contains("/blobs/") {
            ok(served.clone())
        } else {
            ("404 Not Found".into(), String::new(), Vec::new())
        }
    });
    let host = format!("127.0.0.1:{port}");
    let docker = docker_config(&env, Some(&host));
    let m = env.write_manifest(
        "m.json",
        "realm-1",
        vec![asset_with_urls(
            "kernel",
            "boot/kernel",
            &body,
            &[format!("oci://{host}/fleet/boot")],
        )],
    );
    let report = prepare(&env, &docker, m.to_str().unwrap(), &[]).report_ok();
    assert_eq!(outcomes(&report)["kernel"], "downloaded");
    let seen = seen.lock().unwrap().clone();
    let token = seen
        .iter()
        .find(|s| s.path.starts_with("/token"))
        .unwrap_or_else(|| panic!("no token request in {seen:?}"));
    assert!(token.host.starts_with("localhost"), "{token:?}");
    assert_eq!(
        token.authorization, None,
        "the registry's Basic credentials went to another host's plain-HTTP realm: {seen:?}"
    );
    // The token it got is spent on the registry that asked for it, and only there.
    assert!(
        seen.iter().any(|s| s.path.contains("/blobs/sha256:")
            && s.host.starts_with("127.0.0.1")
            && s.authorization.as_deref() == Some("Bearer anon-token")),
        "{seen:?}"
    );
}

/// `publish` to a registry whose upload `Location` points at another host: the blob PUT goes
/// there without the registry's credentials. Before: the PUT carried `Authorization: Basic`.
#[test]
fn regression_publish_sends_no_authorization_to_an_upload_location_on_another_host() {
    let env = Env::new();
    let src = env.outside("src");
    let set = assets(&src, 1, 32 * KIB);
    let (port, seen) = recording_server(|r, port| {
        let on_registry = r.host.starts_with("127.0.0.1");
        if on_registry && r.authorization.is_none() {
            return (
                "401 Unauthorized".into(),
                "WWW-Authenticate: Basic realm=\"test\"\r\n".into(),
                Vec::new(),
            );
        }
        match (r.method.as_str(), on_registry) {
            ("GET", true) if r.path == "/v2/" => ok(Vec::new()),
            ("HEAD", true) => ("404 Not Found".into(), String::new(), Vec::new()),
            ("POST", true) => (
                "202 Accepted".into(),
                format!("Location: http://localhost:{port}/upload/session-1\r\n"),
                Vec::new(),
            ),
            ("PUT", false) => ("201 Created".into(), String::new(), Vec::new()),
            ("PUT", true) => ("201 Created".into(), String::new(), Vec::new()),
            _ => ("404 Not Found".into(), String::new(), Vec::new()),
        }
    });
    let host = format!("127.0.0.1:{port}");
    let docker = docker_config(&env, Some(&host));
    let m = manifest_for(&env, "m.json", &set, &[]);
    publish(&docker, &m, &src, &format!("oci://{host}/fleet/boot:v1"));
    let seen = seen.lock().unwrap().clone();
    let uploads: Vec<_> = seen
        .iter()
        .filter(|s| s.method == "PUT" && s.path.starts_with("/upload/"))
        .collect();
    assert!(
        !uploads.is_empty(),
        "no upload reached the Location: {seen:?}"
    );
    for u in &uploads {
        assert!(u.host.starts_with("localhost"), "{u:?}");
        assert_eq!(
            u.authorization, None,
            "the registry's credentials went to the upload Location's host: {seen:?}"
        );
    }
    // The registry itself still got them (the manifest PUT).
    assert!(
        seen.iter().any(|s| s.method == "PUT"
            && s.path.contains("/manifests/")
            && s.authorization
                .as_deref()
                .is_some_and(|a| a.starts_with("Basic "))),
        "{seen:?}"
    );
}

/// A `file://` token realm is refused once, as a content error: not retried (and printed)
/// once per round. Before: three rounds, the realm named three times.
#[test]
fn regression_a_file_realm_is_refused_once_not_retried() {
    let env = Env::new();
    let (port, seen) = recording_server(|_, _| {
        (
            "401 Unauthorized".into(),
            "WWW-Authenticate: Bearer realm=\"file:///etc/hostname\",service=\"t\"\r\n".into(),
            Vec::new(),
        )
    });
    let docker = docker_config(&env, None);
    let r = prepare(
        &env,
        &docker,
        &format!("oci://127.0.0.1:{port}/fleet/boot:v1"),
        &[],
    );
    r.assert_code(1);
    assert_eq!(
        r.stderr.matches("file:///etc/hostname").count(),
        1,
        "{}",
        r.describe()
    );
    assert_eq!(seen.lock().unwrap().len(), 1, "one ping, no retries");
}

/// Signs `m` with the minisign CLI, with the trusted comment saying it was signed at `at`
/// (unix seconds), as `bootvault sign` and the CLI write it.
fn sign_at(m: &Path, secret: &Path, at: u64) {
    let name = m.file_name().unwrap().to_str().unwrap();
    minisign(&[
        "-S",
        "-s",
        secret.to_str().unwrap(),
        "-m",
        m.to_str().unwrap(),
        "-t",
        &format!("timestamp:{at}\tfile:{name}\thashed"),
    ]);
}

/// Rollback: a store that accepted the signed `fleet-2` from a repository refuses the signed,
/// older `fleet-1` retagged as `:v2` (exit 2, naming both versions) unless
/// `--allow-downgrade`; the same holds per manifest URL. Before: the old manifest was accepted
/// silently (exit 0, `manifest_version fleet-1`).
#[test]
fn regression_an_older_signed_manifest_is_refused_as_a_rollback() {
    let reg = registry(RegistryAuth::Anonymous);
    let env = Env::new();
    let src = env.outside("src");
    let set = assets(&src, 2, 16 * KIB);
    let docker = docker_config(&env, None);
    let (public, secret) = keypair(&env, "release");
    let list = || set.iter().map(|(n, p, b)| asset(n, p, b)).collect();
    let v1 = env.write_manifest("v1.json", "fleet-1", list());
    let v2 = env.write_manifest("v2.json", "fleet-2", list());
    sign_at(&v1, &secret, 1_700_000_000);
    sign_at(&v2, &secret, 1_700_086_400);
    let tag = format!("oci://{}/fleet/boot:v2", reg.host());
    let trusted = ["--trusted-key", public.to_str().unwrap()];
    let publish = |m: &Path, target: &str| publish_with(&docker, m, &src, target, &trusted);
    publish(&v2, &tag);
    let report = prepare(&env, &docker, &tag, &trusted).report_ok();
    assert_eq!(report["manifest_version"], "fleet-2");
    // The registry (or whoever can push the tag) moves :v2 back to the signed fleet-1.
    publish(&v1, &tag);
    let r = prepare(&env, &docker, &tag, &trusted);
    r.assert_code(2);
    assert!(
        r.stderr.contains("fleet-1") && r.stderr.contains("fleet-2"),
        "{}",
        r.describe()
    );
    // Any other tag of the repository is the same source.
    let other = format!("oci://{}/fleet/boot:old", reg.host());
    publish(&v1, &other);
    prepare(&env, &docker, &other, &trusted).assert_code(2);
    // A dry run refuses it as well.
    prepare(
        &env,
        &docker,
        &tag,
        &[&trusted[..], &["--dry-run"]].concat(),
    )
    .assert_code(2);
    // The operator may roll back on purpose; that becomes the mark.
    let allowed = [&trusted[..], &["--allow-downgrade"]].concat();
    let report = prepare(&env, &docker, &tag, &allowed).report_ok();
    assert_eq!(report["manifest_version"], "fleet-1");
    prepare(&env, &docker, &tag, &trusted).report_ok();
    // Pinned by digest: an explicit choice, not checked.
    let pushed = publish(&v2, &tag);
    prepare(&env, &docker, &tag, &trusted).report_ok();
    let pinned = pushed["pinned"].as_str().unwrap().to_string();
    prepare(&env, &docker, &pinned, &trusted).report_ok();

    // Per manifest URL.
    let origin = Origin::start().unwrap();
    let serve = |m: &Path| {
        origin.add("m.json", std::fs::read(m).unwrap().into());
        let mut sig = m.as_os_str().to_owned();
        sig.push(".minisig");
        origin.add("m.json.minisig", std::fs::read(sig).unwrap().into());
    };
    let url = origin.url("m.json");
    // The assets are in place already (the URL manifest names no sources).
    serve(&v2);
    prepare(&env, &docker, &url, &trusted).report_ok();
    serve(&v1);
    let r = prepare(&env, &docker, &url, &trusted);
    r.assert_code(2);
    assert!(
        r.stderr.contains("fleet-1") && r.stderr.contains("fleet-2"),
        "{}",
        r.describe()
    );
}

/// `prepare --json` of `manifest` with `BOOTVAULT_MANIFEST_TIMEOUT=2` (the variable of
/// `--manifest-timeout`), no retries, and `path_prefix` put in front of PATH; with its time.
fn prepare_with_deadline(
    env: &Env,
    docker: &Path,
    manifest: &str,
    path_prefix: Option<&Path>,
) -> (Run, std::time::Duration) {
    let mut cmd = bootvault_cmd();
    cmd.args([
        "prepare",
        "--dir",
        env.root.to_str().unwrap(),
        "--manifest",
        manifest,
    ])
    .args(["--json", "--retries", "0"])
    .env("DOCKER_CONFIG", docker)
    .env_remove("REGISTRY_AUTH_FILE")
    .env("BOOTVAULT_MANIFEST_TIMEOUT", "2");
    if let Some(bin) = path_prefix {
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        cmd.env("PATH", path);
    }
    let started = std::time::Instant::now();
    let run = run_cmd(cmd);
    (run, started.elapsed())
}

/// A manifest URL trickling 10 bytes a second never trips the idle timeout; the manifest
/// deadline ends it. Before: prepare waited as long as the server liked (here ~40 s).
#[test]
fn regression_a_trickling_manifest_hits_the_manifest_deadline() {
    let env = Env::new();
    let origin = Origin::start().unwrap();
    let m = env.write_manifest("m.json", "slow-1", vec![]);
    let mut bytes = std::fs::read(&m).unwrap();
    bytes.resize(400, b' ');
    origin.add("m.json", bytes.into());
    origin.set_fault("m.json", common::throttled(10));
    let docker = docker_config(&env, None);
    let (r, took) = prepare_with_deadline(&env, &docker, &origin.url("m.json"), None);
    r.assert_code(1);
    assert!(took < std::time::Duration::from_secs(15), "took {took:?}");
    assert!(r.stderr.contains("within 2 s"), "{}", r.describe());
}

/// A token realm trickling its answer is bounded by the same deadline. Before: the blob
/// download waited on the token as long as the server liked.
#[test]
fn regression_a_trickling_token_server_hits_the_deadline() {
    let env = Env::new();
    let origin = Origin::start().unwrap();
    let mut token = br#"{"token":"t"}"#.to_vec();
    token.resize(400, b' ');
    origin.add("token", token.into());
    origin.set_fault("token", common::throttled(10));
    let realm = origin.url("token");
    let (port, _) = recording_server(move |_, _| {
        (
            "401 Unauthorized".into(),
            format!("WWW-Authenticate: Bearer realm=\"{realm}\",service=\"t\"\r\n"),
            Vec::new(),
        )
    });
    let body = data(44, 4 * KIB);
    let m = env.write_manifest(
        "m.json",
        "slow-token-1",
        vec![asset_with_urls(
            "kernel",
            "boot/kernel",
            &body,
            &[format!("oci://127.0.0.1:{port}/fleet/boot")],
        )],
    );
    let docker = docker_config(&env, None);
    let (r, took) = prepare_with_deadline(&env, &docker, m.to_str().unwrap(), None);
    r.assert_code(1);
    assert!(took < std::time::Duration::from_secs(15), "took {took:?}");
    assert!(r.stderr.contains("within 2 s"), "{}", r.describe());
}

/// A credential helper that hangs is killed at the deadline and prepare goes on without its
/// credentials (here: the registry then refuses). Before: prepare hung with the helper.
#[test]
fn regression_a_hanging_credential_helper_hits_the_deadline() {
    let env = Env::new();
    let (port, _) = recording_server(|_, _| {
        (
            "401 Unauthorized".into(),
            "WWW-Authenticate: Basic realm=\"test\"\r\n".into(),
            Vec::new(),
        )
    });
    let host = format!("127.0.0.1:{port}");
    let bin = env.outside("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-bvhang");
    std::fs::write(&helper, "#!/bin/sh\nexec sleep 40\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let docker = env.outside("docker-hang");
    std::fs::create_dir_all(&docker).unwrap();
    std::fs::write(
        docker.join("config.json"),
        serde_json::json!({"auths": {}, "credHelpers": {host.clone(): "bvhang"}}).to_string(),
    )
    .unwrap();
    let (r, took) = prepare_with_deadline(
        &env,
        &docker,
        &format!("oci://{host}/fleet/boot:v1"),
        Some(&bin),
    );
    r.assert_code(1);
    assert!(took < std::time::Duration::from_secs(15), "took {took:?}");
    assert!(r.stderr.contains("no credentials"), "{}", r.describe());
}

/// Runs `cmd` (stdout and stderr captured) and kills it after 10 s: `None` then.
fn run_bounded(mut cmd: Command) -> Option<Run> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Some(common::wait(child))
}

/// Every local input is a bounded read of a regular file: `--trusted-key`, `sign --key`,
/// `publish --manifest` and `--signature`, `--config` and `REGISTRY_AUTH_FILE` naming
/// `/dev/zero` or a fifo fail at once, naming the file. Before: read until out of memory
/// (`/dev/zero`) or blocked forever (a fifo).
#[test]
fn regression_local_inputs_are_bounded_regular_file_reads() {
    let env = Env::new();
    let fifo = env.outside("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let body = data(45, 4 * KIB);
    env.put("boot/kernel", &body);
    let m = env.write_manifest(
        "m.json",
        "inputs-1",
        vec![asset("kernel", "boot/kernel", &body)],
    );
    let (m, root) = (m.to_str().unwrap(), env.root.to_str().unwrap());
    let docker = docker_config(&env, None);
    for bad in ["/dev/zero", fifo.to_str().unwrap()] {
        let cases: Vec<(&str, Vec<&str>)> = vec![
            (
                "--trusted-key",
                vec![
                    "prepare",
                    "--dir",
                    root,
                    "--manifest",
                    m,
                    "--trusted-key",
                    bad,
                ],
            ),
            (
                "sign --key",
                vec!["sign", m, "--key", bad, "--output", "/dev/null"],
            ),
            (
                "publish --manifest",
                vec![
                    "publish",
                    "--manifest",
                    bad,
                    "--dir",
                    root,
                    "oci://127.0.0.1:9/r:t",
                ],
            ),
            (
                "publish --signature",
                vec![
                    "publish",
                    "--manifest",
                    m,
                    "--signature",
                    bad,
                    "--dir",
                    root,
                    "oci://127.0.0.1:9/r:t",
                ],
            ),
            ("--config", vec!["--config", bad, "status", "--dir", root]),
        ];
        for (what, args) in cases {
            let mut cmd = bootvault_cmd();
            cmd.args(&args).env("DOCKER_CONFIG", &docker);
            let r = run_bounded(cmd)
                .unwrap_or_else(|| panic!("{what} {bad}: still reading after 10 s"));
            r.assert_code(2);
            assert!(
                r.stderr.contains(bad) && r.stderr.contains("not a regular file"),
                "{what} {bad}: {}",
                r.describe()
            );
        }
        // REGISTRY_AUTH_FILE: not used (with a warning naming it); the registry then refuses.
        let (port, _) = recording_server(|_, _| {
            (
                "401 Unauthorized".into(),
                "WWW-Authenticate: Basic realm=\"test\"\r\n".into(),
                Vec::new(),
            )
        });
        let mut cmd = bootvault_cmd();
        cmd.args(["prepare", "--dir", root, "--retries", "0", "--manifest"])
            .arg(format!("oci://127.0.0.1:{port}/fleet/boot:v1"))
            .env("DOCKER_CONFIG", &docker)
            .env("REGISTRY_AUTH_FILE", bad);
        let r =
            run_bounded(cmd).unwrap_or_else(|| panic!("REGISTRY_AUTH_FILE {bad}: still reading"));
        r.assert_code(1);
        assert!(r.stderr.contains(bad), "{}", r.describe());
    }
}

/// `publish` checks the signature it attaches: a stale one (the manifest changed after
/// signing) or garbage is refused (exit 2, naming the file) and nothing is pushed; a missing
/// asset file is named by its asset. Before: both signatures were published as "signed", and
/// every host then failed with exit 2; a missing file was named only by its path.
#[test]
fn regression_publish_refuses_a_stale_or_garbage_signature_and_names_a_missing_asset() {
    let reg = registry(RegistryAuth::Anonymous);
    let env = Env::new();
    let src = env.outside("src");
    let set = assets(&src, 2, 8 * KIB);
    let docker = docker_config(&env, None);
    let (public, secret) = keypair(&env, "release");
    let m = manifest_for(&env, "set.json", &set, &[]);
    sign_at(&m, &secret, 1_700_000_000);
    let sig = env.outside("set.json.minisig");
    let check = ["--trusted-key", public.to_str().unwrap()];
    let tag = |t: &str| format!("oci://{}/fleet/boot:{t}", reg.host());
    let try_publish = |target: &str, extra: &[&str]| {
        let mut args = vec![
            "publish",
            "--manifest",
            m.to_str().unwrap(),
            "--dir",
            src.to_str().unwrap(),
            target,
        ];
        args.extend_from_slice(extra);
        bv(&docker, &args)
    };
    // Stale: the manifest changed after it was signed.
    let text = std::fs::read_to_string(&m).unwrap();
    std::fs::write(&m, text.replacen("fleet-1", "fleet-1b", 1)).unwrap();
    let r = try_publish(&tag("stale"), &check);
    r.assert_code(2);
    assert!(r.stderr.contains("set.json.minisig"), "{}", r.describe());
    // Nothing was pushed: the tag does not resolve (bad input).
    prepare(&Env::new(), &docker, &tag("stale"), &[]).assert_code(2);
    // Without a key to check it against, a signature is not attached blindly either.
    let r = try_publish(&tag("unchecked"), &[]);
    r.assert_code(2);
    assert!(r.stderr.contains("--trusted-key"), "{}", r.describe());
    // Garbage, with or without a key.
    std::fs::write(&sig, "not a signature\n").unwrap();
    for extra in [&check[..], &["--no-verify-signature"]] {
        let r = try_publish(&tag("garbage"), extra);
        r.assert_code(2);
        assert!(
            r.stderr.contains("not a minisign signature"),
            "{}",
            r.describe()
        );
    }
    // Signed again: published.
    std::fs::write(&m, text).unwrap();
    sign_at(&m, &secret, 1_700_000_001);
    try_publish(&tag("good"), &check).assert_code(0);
    // A missing file is named by its asset.
    std::fs::remove_file(src.join(&set[1].1)).unwrap();
    let r = try_publish(&tag("missing"), &check);
    r.assert_code(1);
    assert!(
        r.stderr.contains(&format!("asset {}", set[1].0)),
        "{}",
        r.describe()
    );
}

/// A CONNECT proxy on loopback that tunnels every `CONNECT HOST:PORT` to `127.0.0.1:PORT`,
/// so a client reaches an HTTPS registry by a non-loopback name (`registry.test`).
fn connect_proxy() -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut client) = conn else { break };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(client.try_clone().unwrap());
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                }
                let port = target.rsplit(':').next().unwrap_or("");
                let Ok(upstream) = std::net::TcpStream::connect(format!("127.0.0.1:{port}")) else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
                    return;
                };
                let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
                let (mut up_r, mut up_w) = (upstream.try_clone().unwrap(), upstream);
                let mut down_w = client.try_clone().unwrap();
                let t = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut up_r, &mut down_w);
                });
                // Whatever the reader buffered beyond the headers is empty for CONNECT.
                let _ = std::io::copy(&mut client, &mut up_w);
                let _ = up_w.shutdown(std::net::Shutdown::Both);
                let _ = t.join();
            });
        }
    });
    port
}

/// An HTTPS registry (the real `docker-registry` with TLS, reached as `registry.test` through
/// a CONNECT proxy) whose Bearer challenge names a plain-HTTP token realm: the Basic
/// credentials must not go there in cleartext. Before: the token request carried them.
#[test]
fn regression_an_https_registry_never_sends_credentials_to_a_cleartext_realm() {
    assert!(Registry::available(), "docker-registry is not installed");
    let env = Env::new();
    let dir = env.outside("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // A CA, and a leaf for registry.test signed by it.
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=bv-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=registry.test",
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:registry.test\nbasicConstraints=critical,CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "leaf.crt",
    ]);
    // The cleartext realm: records what it is sent.
    let (realm_port, seen) =
        recording_server(|_, _| ("401 Unauthorized".into(), String::new(), Vec::new()));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::create_dir_all(dir.join("storage")).unwrap();
    let config = format!(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {d}/storage\n\
         http:\n  addr: 127.0.0.1:{port}\n  secret: s\n  tls:\n    certificate: {d}/leaf.crt\n    key: {d}/leaf.key\n\
         auth:\n  token:\n    realm: http://127.0.0.1:{realm_port}/token\n    service: t\n    issuer: t\n    rootcertbundle: {d}/ca.crt\n",
        d = dir.display()
    );
    std::fs::write(dir.join("config.yml"), config).unwrap();
    let mut registry = Command::new(bootvault_testkit::registry::REGISTRY_BIN)
        .arg("serve")
        .arg(dir.join("config.yml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "docker-registry did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let proxy = connect_proxy();
    let host = format!("registry.test:{port}");
    let docker = docker_config(&env, Some(&host));
    let mut cmd = bootvault_cmd();
    cmd.args([
        "prepare",
        "--dir",
        env.root.to_str().unwrap(),
        "--retries",
        "0",
    ])
    .arg("--manifest")
    .arg(format!("oci://{host}/fleet/boot:v1"))
    .env("DOCKER_CONFIG", &docker)
    .env_remove("REGISTRY_AUTH_FILE")
    .env("HTTPS_PROXY", format!("http://127.0.0.1:{proxy}"))
    .env("NO_PROXY", "127.0.0.1,localhost")
    .env("SSL_CERT_FILE", dir.join("ca.crt"));
    let r = run_cmd(cmd);
    let _ = registry.kill();
    let _ = registry.wait();
    r.assert_code(1);
    let seen = seen.lock().unwrap().clone();
    assert!(
        !seen.is_empty(),
        "the HTTPS registry was reached and named its realm: {}",
        r.describe()
    );
    for s in &seen {
        assert_eq!(
            s.authorization,
            None,
            "Basic credentials sent in cleartext to {}: {}",
            s.host,
            r.describe()
        );
    }
    assert!(r.stderr.contains("withheld"), "{}", r.describe());
}

/// One plain HTTP/1.1 request to a loopback registry, as another tool would push: the status
/// and the `Location` header of the answer.
fn raw_http(host: &str, method: &str, path: &str, kind: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {kind}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.split(' ').nth(1).unwrap().parse().unwrap();
    let location = answer
        .lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("location")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    (status, location)
}

/// Pushes an OCI artifact that is not a bootvault set (a container image's config, no
/// layers) to `repo:tag` of `reg`.
fn push_foreign_artifact(reg: &Registry, repo: &str, tag: &str) {
    let host = reg.host();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let (status, location) = raw_http(
        &host,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        "application/octet-stream",
        b"",
    );
    assert_eq!(status, 202, "start upload: {location}");
    // The registry may answer with an absolute URL: keep its path and query.
    let path = match location.strip_prefix(&reg.url()) {
        Some(rest) => rest.to_string(),
        None => location,
    };
    let sep = if path.contains('?') { '&' } else { '?' };
    let digest = format!("sha256:{}", sha(config));
    let (status, _) = raw_http(
        &host,
        "PUT",
        &format!("{path}{sep}digest={digest}"),
        "application/octet-stream",
        config,
    );
    assert_eq!(status, 201, "upload the config blob");
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digest,
            "size": config.len(),
        },
        "layers": [],
    });
    let (status, _) = raw_http(
        &host,
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        "application/vnd.oci.image.manifest.v1+json",
        manifest.to_string().as_bytes(),
    );
    assert_eq!(status, 201, "put the manifest");
}

/// Issue 18: an `oci://` reference to an artifact that is not a bootvault set, or to a tag that
/// does not exist, is bad input (exit 2, as docs/cli.md says), not a failure to fetch (exit 1);
/// the error names the config media type a set has. A registry that cannot be reached still
/// fails with 1.
#[test]
fn regression_a_foreign_artifact_or_a_missing_tag_is_bad_input() {
    let mut reg = registry(RegistryAuth::Anonymous);
    let env = Env::new();
    let docker = docker_config(&env, None);
    push_foreign_artifact(&reg, "fleet/image", "v1");

    let foreign = format!("oci://{}/fleet/image:v1", reg.host());
    let r = prepare(&env, &docker, &foreign, &[]);
    r.assert_code(2);
    for needle in [
        "fleet/image",
        "is not a bootvault set",
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.bootvault.set.v1+json",
    ] {
        assert!(r.stderr.contains(needle), "{needle:?}: {}", r.describe());
    }
    assert_eq!(r.stderr.trim_end().lines().count(), 1, "{}", r.describe());

    // A tag the repository does not have.
    let missing = format!("oci://{}/fleet/image:v2", reg.host());
    let r = prepare(&env, &docker, &missing, &[]);
    r.assert_code(2);
    assert!(r.stderr.contains("v2"), "{}", r.describe());
    assert!(r.stderr.contains("404"), "{}", r.describe());
    assert!(env.files().is_empty(), "{:?}", env.files());

    // Unreachable: the set may be there, so this is a failure to fetch, not bad input.
    reg.stop();
    let r = prepare(&env, &docker, &missing, &[]);
    r.assert_code(1);
}
