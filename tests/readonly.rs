//! Stores the running user cannot write: another user's store (state dir 0700 or a 0600
//! ledger), as `nobody` when the tests run as root, or a state dir made read-only otherwise.
//! Verification must still run (hash, report, no record) and a warm prepare must not fail.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The binary, copied where `nobody` can run it, and a command that runs it as that user
/// (as root) or as ourselves (otherwise).
fn foreign_cmd(env: &Env) -> Command {
    let bin = env.tmp.path().join("bootvault");
    if !bin.exists() {
        std::fs::copy(env!("CARGO_BIN_EXE_bootvault"), &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin);
        c
    } else {
        Command::new(&bin)
    }
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Issue: on a store whose state dir the user cannot write, `--verify always` failed every
/// asset (`open lock file: Read-only file system`) although `debug verify` passed, and with a
/// 0600 ledger even the warm prepare failed every asset instead of re-hashing.
#[test]
fn regression_a_store_the_user_cannot_write_is_still_verified() {
    let env = Env::new();
    let k = data(1, 64 * 1024);
    let r = data(2, 128 * 1024);
    env.put("kernel", &k);
    env.put("rootfs", &r);
    let m = env.write_manifest(
        "m.json",
        "v1",
        vec![asset("kernel", "kernel", &k), asset("rootfs", "rootfs", &r)],
    );
    // The owner prepares: the ledger and records exist.
    env.prepare_ok(&m, &[]);
    // Everyone may read the assets and traverse the tree, nobody else may write anything.
    for p in [env.tmp.path(), env.root.as_path()] {
        chmod(p, 0o755);
    }
    chmod(&m, 0o644);
    chmod(&env.ledger(), 0o600);
    let state = env.state();
    chmod(&state, if is_root() { 0o700 } else { 0o555 });
    for sub in ["locks", "tmp"] {
        if state.join(sub).exists() {
            chmod(&state.join(sub), 0o555);
        }
    }
    let before = std::fs::read(env.ledger()).unwrap();

    for extra in [&["--verify", "always"][..], &[][..]] {
        let mut cmd = foreign_cmd(&env);
        cmd.arg("prepare")
            .arg("--dir")
            .arg(&env.root)
            .arg("--manifest")
            .arg(&m)
            .arg("--json")
            .args(extra);
        let run = run_cmd(cmd);
        assert_eq!(run.code, 0, "{extra:?}: {}", run.describe());
        let v = run.json();
        for a in v["assets"].as_array().unwrap() {
            let outcome = a["outcome"].as_str().unwrap();
            assert!(
                outcome == "verified" || outcome == "cached",
                "{extra:?}: {v}"
            );
        }
    }
    // Nothing was written by the foreign runs.
    chmod(&state, 0o755);
    assert!(
        std::fs::read(env.ledger()).unwrap() == before,
        "the ledger changed"
    );
    // And a wrong file is still reported, not hidden.
    chmod(&env.root, 0o777);
    std::fs::set_permissions(env.path("kernel"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(env.path("kernel"), data(3, 64 * 1024)).unwrap();
    chmod(&state, if is_root() { 0o700 } else { 0o555 });
    let mut cmd = foreign_cmd(&env);
    cmd.arg("prepare")
        .arg("--dir")
        .arg(&env.root)
        .arg("--manifest")
        .arg(&m)
        .arg("--json")
        .arg("--offline");
    let run = run_cmd(cmd);
    assert_eq!(run.code, 1, "{}", run.describe());
    assert!(run.stderr.contains("asset kernel"), "{}", run.stderr);
    chmod(&state, 0o755);
}

/// Runs the binary with `args` in a private mount namespace (`unshare -m`, as root) where
/// `ro` is bind-mounted read-only onto itself.
fn on_read_only_mount(ro: &Path, args: &[&str]) -> Run {
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let script = format!(
        "mount --bind {ro} {ro} && mount -o remount,bind,ro {ro} && exec {bin} {args}",
        ro = ro.display(),
        bin = env!("CARGO_BIN_EXE_bootvault"),
        args = quoted.join(" ")
    );
    let mut c = Command::new("unshare");
    c.args(["-m", "sh", "-c", &script]);
    for k in ["NO_COLOR", "CLICOLOR_FORCE", "RUST_LOG", "BOOTVAULT_LOG"] {
        c.env_remove(k);
    }
    run_cmd(c)
}

/// Issue 15, item 7: a read-only mount is a read-only store, not a usage error. A correct,
/// verified store on a read-only filesystem (an image or an export of one) verifies, with
/// `--verify always` too, and exits 0; only an asset that would need writing fails, exit 1,
/// named. Before: every prepare on a read-only mount exited 2 (`store root is on a read-only
/// filesystem`) before looking at any asset.
#[test]
fn regression_a_correct_store_on_a_read_only_mount_verifies() {
    assert!(
        is_root(),
        "mount namespaces need root (the suite runs as root in CI)"
    );
    let env = Env::new();
    let k = data(4, 64 * 1024);
    let r = data(5, 96 * 1024);
    env.put("kernel", &k);
    env.put("rootfs", &r);
    let m = env.write_manifest(
        "m.json",
        "v1",
        vec![asset("kernel", "kernel", &k), asset("rootfs", "rootfs", &r)],
    );
    env.prepare_ok(&m, &[]);
    let before = std::fs::read(env.ledger()).unwrap();
    let (root, mp) = (env.root.to_str().unwrap(), m.to_str().unwrap());
    let prepare = ["prepare", "--dir", root, "--manifest", mp, "--json"];
    for (extra, want) in [
        (&[][..], "cached"),
        (&["--verify", "always"][..], "verified"),
    ] {
        let run = on_read_only_mount(&env.root, &[&prepare[..], extra].concat());
        assert_eq!(run.code, 0, "{extra:?}: {}", run.describe());
        for a in run.json()["assets"].as_array().unwrap() {
            assert_eq!(a["outcome"], want, "{extra:?}: {}", run.stdout);
        }
    }
    let check = on_read_only_mount(&env.root, &["debug", "check", "--dir", root, "--json"]);
    assert_eq!(check.code, 0, "{}", check.describe());
    // An asset that would need writing (absent, with a source) fails, named; the rest pass.
    let src = env.outside("initrd");
    let i = data(6, 4096);
    std::fs::write(&src, &i).unwrap();
    let m2 = env.write_manifest(
        "m2.json",
        "v1",
        vec![
            asset("kernel", "kernel", &k),
            asset_with_urls("initrd", "initrd", &i, &[file_url(&src)]),
        ],
    );
    let run = on_read_only_mount(
        &env.root,
        &[
            "prepare",
            "--dir",
            root,
            "--manifest",
            m2.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(run.code, 1, "{}", run.describe());
    assert!(
        run.stderr.contains("asset initrd") && run.stderr.contains("read-only"),
        "{}",
        run.describe()
    );
    assert_eq!(run.outcome("kernel"), "cached", "{}", run.describe());
    assert!(!env.path("initrd").exists());
    assert!(
        std::fs::read(env.ledger()).unwrap() == before,
        "the ledger changed"
    );
}
