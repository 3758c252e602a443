//! The command line's operator conventions, each checked by running the real binary: quiet,
//! verbose, log env vars, colour, env vars for flags, the config file, completions, man pages,
//! `--version`, `--message-format json`, `status`, and bad roots.

mod common;

use bootvault_testkit::origin::Fault;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The binary with none of the conventions' variables inherited from the caller's environment,
/// and a config dir of its own (so no user config file is read).
fn cmd(config_home: &Path) -> Command {
    let mut c = bootvault_cmd();
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("BOOTVAULT_")
            || ["NO_COLOR", "CLICOLOR_FORCE", "RUST_LOG"].contains(&k.as_str())
        {
            c.env_remove(&k);
        }
    }
    c.env("XDG_CONFIG_HOME", config_home)
        .env("HOME", config_home);
    c
}

fn go(mut c: Command) -> Run {
    run_cmd({
        c.stdin(std::process::Stdio::null());
        c
    })
}

/// An Env with one asset served by `origin` at `k` (with `fault`), and its manifest.
struct Served {
    env: Env,
    origin: bootvault_testkit::origin::Origin,
    manifest: std::path::PathBuf,
}

fn served(len: usize, fault: Fault) -> Served {
    let env = Env::new();
    let body = data(7, len);
    let origin = origin_serving("k", &body, fault);
    let manifest = env.write_manifest(
        "m.json",
        "v1",
        vec![asset_with_urls(
            "kernel",
            "kernel",
            &body,
            &[origin.url("k")],
        )],
    );
    Served {
        env,
        origin,
        manifest,
    }
}

impl Served {
    fn prepare(&self, extra: &[&str]) -> Command {
        let mut c = cmd(&self.env.outside("config"));
        c.arg("prepare")
            .arg("--dir")
            .arg(&self.env.root)
            .arg("--manifest")
            .arg(&self.manifest)
            .args(extra);
        c
    }
}

/// A fault that makes the first GET answer 503: a retry, so a warning, then success.
fn one_503() -> Fault {
    Fault {
        fail_first: 1,
        fail_status: 503,
        ..Fault::default()
    }
}

const ESC: char = '\x1b';

#[test]
fn quiet_leaves_stderr_empty_on_success_even_with_a_retry_warning() {
    let s = served(10_000, one_503());
    let loud = go(s.prepare(&[]));
    assert_eq!(loud.code, 0, "{}", loud.describe());
    assert!(loud.stderr.contains("retrying"), "{}", loud.describe());

    let s = served(10_000, one_503());
    let quiet = go(s.prepare(&["-q"]));
    assert_eq!(quiet.code, 0, "{}", quiet.describe());
    assert_eq!(quiet.stderr, "", "-q printed on stderr");
    assert!(quiet.stdout.contains("downloaded"), "{}", quiet.stdout);
    assert_eq!(s.origin.requests("k"), 2, "the retry did happen");
}

#[test]
fn quiet_still_prints_errors() {
    let env = Env::new();
    let m = env.write_manifest("m.json", "v1", vec![asset("k", "k", b"absent")]);
    let mut c = cmd(&env.outside("config"));
    c.args(["prepare", "-q", "--dir"])
        .arg(&env.root)
        .arg("--manifest")
        .arg(&m);
    let r = go(c);
    assert_eq!(r.code, 1, "{}", r.describe());
    assert!(r.stderr.contains("asset k"), "{}", r.describe());
}

#[test]
fn verbose_logs_downloads_and_outcomes_and_log_env_vars_do_too() {
    let s = served(10_000, Fault::default());
    let plain = go(s.prepare(&[]));
    assert_eq!(plain.code, 0, "{}", plain.describe());
    assert_eq!(plain.stderr, "", "no log lines without -v");

    let s = served(10_000, Fault::default());
    let v = go(s.prepare(&["-v"]));
    assert_eq!(v.code, 0, "{}", v.describe());
    assert!(
        v.stderr
            .contains(&format!("kernel: fetching {}", s.origin.url("k"))),
        "{}",
        v.stderr
    );
    assert!(v.stderr.contains("kernel: downloaded"), "{}", v.stderr);
    assert!(
        !v.stderr.contains("checking"),
        "-v is not -vv: {}",
        v.stderr
    );

    let s = served(10_000, Fault::default());
    let vv = go(s.prepare(&["-vv"]));
    assert!(vv.stderr.contains("kernel: checking"), "{}", vv.stderr);

    for (var, value) in [
        ("BOOTVAULT_LOG", "bootvault=info"),
        ("RUST_LOG", "bootvault=info"),
        ("BOOTVAULT_VERBOSE", "1"),
    ] {
        let s = served(10_000, Fault::default());
        let mut c = s.prepare(&[]);
        c.env(var, value);
        let r = go(c);
        assert_eq!(r.code, 0, "{}", r.describe());
        assert!(r.stderr.contains("kernel: fetching"), "{var}: {}", r.stderr);
    }
}

#[test]
fn a_resumed_download_is_logged_with_its_offset() {
    // The body is cut once after 64 KiB: the retry resumes from there.
    let s = served(
        256 * KIB,
        Fault {
            cut_after: Some(64 * KIB as u64),
            ..Fault::default()
        },
    );
    let r = go(s.prepare(&["-v"]));
    assert_eq!(r.code, 0, "{}", r.describe());
    assert!(r.stderr.contains("kernel: resuming"), "{}", r.stderr);
    assert!(r.stderr.contains("retrying"), "{}", r.stderr);
}

/// A prepare whose download fails once (a warning) and then succeeds, with colour settings.
fn coloured(args: &[&str], env: &[(&str, &str)]) -> Run {
    let s = served(10_000, one_503());
    let mut c = s.prepare(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let r = go(c);
    assert_eq!(r.code, 0, "{}", r.describe());
    assert!(r.stderr.contains("retrying"), "{}", r.describe());
    r
}

#[test]
fn no_color_leaves_no_escape_byte_and_clicolor_force_or_always_colours() {
    // Colour can be forced when stderr is a pipe: so the checks below can fail.
    let forced = coloured(&[], &[("CLICOLOR_FORCE", "1")]);
    assert!(forced.stderr.contains(ESC), "{}", forced.stderr);
    let always = coloured(&["--color", "always"], &[]);
    assert!(always.stderr.contains(ESC), "{}", always.stderr);
    let env_always = coloured(&[], &[("BOOTVAULT_COLOR", "always")]);
    assert!(env_always.stderr.contains(ESC), "{}", env_always.stderr);

    let no_color = coloured(&[], &[("NO_COLOR", "1"), ("CLICOLOR_FORCE", "1")]);
    assert!(!no_color.stderr.contains(ESC), "{:?}", no_color.stderr);
    let never = coloured(&["--color", "never"], &[("CLICOLOR_FORCE", "1")]);
    assert!(!never.stderr.contains(ESC), "{:?}", never.stderr);
    let piped = coloured(&[], &[]);
    assert!(!piped.stderr.contains(ESC), "{:?}", piped.stderr);
}

#[test]
fn environment_variables_stand_in_for_flags() {
    let s = served(10_000, Fault::default());
    let state = s.env.outside("state");
    let mut c = cmd(&s.env.outside("config"));
    c.arg("prepare")
        .env("BOOTVAULT_DIR", &s.env.root)
        .env("BOOTVAULT_STATE_DIR", &state)
        .env("BOOTVAULT_MANIFEST", &s.manifest)
        .env("BOOTVAULT_JSON", "1")
        .env("BOOTVAULT_JOBS", "2");
    let r = go(c);
    assert_eq!(r.code, 0, "{}", r.describe());
    assert_eq!(r.json()["assets"][0]["outcome"], "downloaded");
    assert!(state.join("ledger.redb").is_file());
    assert!(!s.env.state().exists(), "BOOTVAULT_STATE_DIR was ignored");

    // A bad value in a variable is refused like a bad flag: it was read.
    let mut c = s.prepare(&[]);
    c.env("BOOTVAULT_JOBS", "0");
    assert_eq!(go(c).code, 2);

    // BOOTVAULT_OFFLINE: the missing asset is not fetched.
    let s = served(10_000, Fault::default());
    let mut c = s.prepare(&[]);
    c.env("BOOTVAULT_OFFLINE", "true");
    let r = go(c);
    assert_eq!(r.code, 1, "{}", r.describe());
    assert_eq!(s.origin.requests("k"), 0);

    // BOOTVAULT_NO_PROGRESS and BOOTVAULT_QUIET parse as booleans.
    let s = served(10_000, one_503());
    let mut c = s.prepare(&[]);
    c.env("BOOTVAULT_QUIET", "yes")
        .env("BOOTVAULT_NO_PROGRESS", "1");
    let r = go(c);
    assert_eq!(r.code, 0, "{}", r.describe());
    assert_eq!(r.stderr, "");
}

#[test]
fn the_config_file_is_read_from_the_platform_dir_and_from_config() {
    let s = served(10_000, Fault::default());
    let home = s.env.outside("config");
    let state = s.env.outside("state-from-config");
    std::fs::create_dir_all(home.join("bootvault")).unwrap();
    std::fs::write(
        home.join("bootvault/config.toml"),
        format!(
            "dir = {:?}\nstate_dir = {:?}\njobs = 1\n[registry_mirrors]\n\"ghcr.io\" = \"mirror.internal:5000\"\n",
            s.env.root, state
        ),
    )
    .unwrap();
    // No --dir, no --state-dir: both come from $XDG_CONFIG_HOME/bootvault/config.toml.
    let mut c = cmd(&home);
    c.args(["prepare", "--json", "--manifest"]).arg(&s.manifest);
    let r = go(c);
    assert_eq!(r.code, 0, "{}", r.describe());
    assert_eq!(r.json()["assets"][0]["outcome"], "downloaded");
    assert!(state.join("ledger.redb").is_file(), "state_dir from config");

    let mut c = cmd(&home);
    c.args(["status", "--json"]);
    let st = go(c);
    assert_eq!(st.code, 0, "{}", st.describe());
    let v = st.json();
    assert_eq!(v["records"], 1);
    assert_eq!(
        v["config"]["registry_mirrors"]["ghcr.io"],
        "mirror.internal:5000"
    );

    // A flag beats the config file.
    let other = Env::new();
    let mut c = cmd(&home);
    c.args(["status", "--json", "--dir"]).arg(&other.root);
    let v = go(c).json();
    assert_eq!(v["records"], 0);
    assert_eq!(v["root"], other.root.to_str().unwrap());
    // The config's state_dir goes with the config's dir, not with another root.
    assert_eq!(v["state_dir"], other.state().to_str().unwrap());

    // --config FILE: relative paths in it are relative to the file.
    let file = s.env.outside("explicit.toml");
    std::fs::write(&file, "dir = \"root\"\nstate_dir = \"state-from-config\"\n").unwrap();
    let mut c = cmd(&s.env.outside("empty-config-home"));
    c.args(["status", "--json", "--config"]).arg(&file);
    let r = go(c);
    assert_eq!(r.code, 0, "{}", r.describe());
    assert_eq!(r.json()["records"], 1);

    // Unknown keys and missing explicit files are errors, on one line naming the file.
    std::fs::write(&file, "dir = \"root\"\nstate-dir = \"x\"\n").unwrap();
    let mut c = cmd(&home);
    c.args(["status", "--config"]).arg(&file);
    let r = go(c);
    assert_eq!(r.code, 2, "{}", r.describe());
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("explicit.toml: line 2"), "{}", r.stderr);
    let mut c = cmd(&home);
    c.args(["status", "--config"])
        .arg(s.env.outside("nope.toml"));
    let r = go(c);
    assert_eq!(r.code, 2, "{}", r.describe());
    assert!(r.stderr.contains("nope.toml"), "{}", r.stderr);
}

#[test]
fn no_root_anywhere_is_a_usage_error() {
    let env = Env::new();
    let mut c = cmd(&env.outside("config"));
    c.args(["debug", "ls"]);
    let r = go(c);
    assert_eq!(r.code, 2, "{}", r.describe());
    assert!(r.stderr.contains("BOOTVAULT_DIR"), "{}", r.stderr);
}

#[test]
fn completions_bash_is_a_script_bash_accepts() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish"] {
        let mut c = cmd(&env.outside("config"));
        c.args(["completions", shell]);
        let r = go(c);
        assert_eq!(r.code, 0, "{}", r.describe());
        assert!(r.stdout.contains("prepare"), "{shell}: {}", r.stdout);
        assert!(r.stdout.contains("message-format"), "{shell}");
        if shell == "bash" {
            let script = env.outside("bootvault.bash");
            std::fs::write(&script, &r.stdout).unwrap();
            let check = Command::new("bash")
                .arg("-n")
                .arg(&script)
                .output()
                .unwrap();
            assert!(
                check.status.success(),
                "bash -n: {}",
                String::from_utf8_lossy(&check.stderr)
            );
            // And it registers itself for the command.
            assert!(r.stdout.contains("complete -F"), "{}", r.stdout);
        }
    }
    let mut c = cmd(&env.outside("config"));
    c.args(["completions", "tcsh"]);
    assert_eq!(go(c).code, 2);
}

#[test]
fn man_pages_are_roff_one_per_subcommand() {
    let env = Env::new();
    let mut c = cmd(&env.outside("config"));
    c.arg("man");
    let r = go(c);
    assert_eq!(r.code, 0, "{}", r.describe());
    assert!(
        r.stdout.starts_with(".ie") || r.stdout.contains(".TH bootvault"),
        "{}",
        &r.stdout[..200.min(r.stdout.len())]
    );
    assert!(r.stdout.contains("prepare"));

    let out = env.outside("man1");
    let mut c = cmd(&env.outside("config"));
    c.args(["man", "--out-dir"]).arg(&out);
    let r = go(c);
    assert_eq!(r.code, 0, "{}", r.describe());
    for page in [
        "bootvault.1",
        "bootvault-prepare.1",
        "bootvault-debug-check.1",
        "bootvault-status.1",
    ] {
        let text =
            std::fs::read_to_string(out.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page}");
    }
    let prepare = std::fs::read_to_string(out.join("bootvault-prepare.1")).unwrap();
    assert!(
        prepare.contains("BOOTVAULT_OFFLINE"),
        "env vars in the man page"
    );
}

#[test]
fn version_names_the_commit_and_its_date_in_a_git_checkout() {
    let env = Env::new();
    let mut c = cmd(&env.outside("config"));
    c.arg("--version");
    let r = go(c);
    assert_eq!(r.code, 0, "{}", r.describe());
    let line = r.stdout.trim();
    let in_git = Command::new("git")
        .args(["rev-parse", "--short=9", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let version = env!("CARGO_PKG_VERSION");
    match in_git {
        // Built from this checkout (the binary may predate an uncommitted HEAD move: the
        // commit is compared by shape, the date by format).
        Some(_) => {
            let rest = line
                .strip_prefix(&format!("bootvault {version} ("))
                .and_then(|r| r.strip_suffix(')'))
                .unwrap_or_else(|| panic!("{line}"));
            let (commit, date) = rest.split_once(' ').unwrap_or_else(|| panic!("{line}"));
            assert_eq!(commit.len(), 9, "{line}");
            assert!(commit.chars().all(|c| c.is_ascii_hexdigit()), "{line}");
            assert!(jiff_like_date(date), "{line}");
        }
        None => assert_eq!(line, format!("bootvault {version}")),
    }
}

fn jiff_like_date(d: &str) -> bool {
    let b = d.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && d.chars().filter(|c| c.is_ascii_digit()).count() == 8
}

#[test]
fn message_format_json_streams_one_object_per_line_then_a_summary() {
    // Two assets: one downloaded slowly (progress lines), one verified in place.
    let env = Env::new();
    let body = data(9, 384 * KIB);
    let origin = origin_serving("k", &body, throttled(512 * KIB));
    let local = blob(10, 5000);
    env.put("local", &local);
    let m = env.write_manifest(
        "m.json",
        "v1",
        vec![
            asset_with_urls("kernel", "kernel", &body, &[origin.url("k")]),
            asset("local", "local", &local),
        ],
    );
    let mut c = cmd(&env.outside("config"));
    c.args(["prepare", "--message-format", "json", "--dir"])
        .arg(&env.root)
        .arg("--manifest")
        .arg(&m);
    let r = go(c);
    assert_eq!(r.code, 0, "{}", r.describe());
    let events: Vec<Value> = r
        .stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"));
            assert!(v.is_object(), "{l}");
            assert!(v["event"].is_string(), "{l}");
            assert!(v["t_ms"].is_number(), "{l}");
            v
        })
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    let of = |name: &str, kind: &str| {
        events
            .iter()
            .filter(|e| e["name"] == name && e["event"] == kind)
            .collect::<Vec<_>>()
    };
    assert_eq!(kinds.last(), Some(&"summary"), "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "summary").count(), 1);
    let summary = events.last().unwrap();
    assert_eq!(summary["ok"], true);
    assert_eq!(summary["manifest_version"], "v1");
    assert_eq!(summary["assets"].as_array().unwrap().len(), 2);

    for name in ["kernel", "local"] {
        let pos = |kind: &str| {
            events
                .iter()
                .position(|e| e["name"] == name && e["event"] == kind)
                .unwrap_or_else(|| panic!("no {kind} for {name}: {kinds:?}"))
        };
        assert!(pos("checking") < pos("ready"), "{name}: {kinds:?}");
    }
    assert_eq!(of("kernel", "ready")[0]["outcome"], "downloaded");
    assert_eq!(of("local", "ready")[0]["outcome"], "verified");

    // Download progress: several lines, at a bounded rate, the last one complete.
    let downloads = of("kernel", "download");
    assert!(downloads.len() >= 2, "{kinds:?}");
    let last = downloads.last().unwrap();
    assert_eq!(last["done"], body.len());
    assert_eq!(last["total"], body.len());
    let span_ms = last["t_ms"].as_f64().unwrap() - downloads[0]["t_ms"].as_f64().unwrap();
    // One per 250 ms at most, plus the first and the final chunk.
    assert!(
        downloads.len() as f64 <= span_ms / 250.0 + 2.0,
        "{} download lines in {span_ms} ms",
        downloads.len()
    );
    for w in downloads.windows(2) {
        assert!(w[0]["done"].as_u64() <= w[1]["done"].as_u64());
    }
    assert!(r.stderr.is_empty(), "{}", r.stderr);
}

#[test]
fn message_format_json_reports_failures_as_events_and_in_the_summary() {
    let env = Env::new();
    let m = env.write_manifest("m.json", "v1", vec![asset("gone", "gone", b"absent")]);
    let mut c = cmd(&env.outside("config"));
    c.args(["prepare", "--message-format=json", "--dir"])
        .arg(&env.root)
        .arg("--manifest")
        .arg(&m);
    let r = go(c);
    assert_eq!(r.code, 1, "{}", r.describe());
    let events: Vec<Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let failed = events
        .iter()
        .find(|e| e["event"] == "failed")
        .unwrap_or_else(|| panic!("{}", r.stdout));
    assert_eq!(failed["name"], "gone");
    assert!(
        failed["error"].as_str().unwrap().contains("gone"),
        "{failed}"
    );
    let summary = events.last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["ok"], false);
    assert_eq!(summary["assets"][0]["outcome"], "failed");
    // And --json with it is a usage error (two shapes on one stdout).
    let mut c = cmd(&env.outside("config"));
    c.args(["prepare", "--json", "--message-format", "json", "--dir"])
        .arg(&env.root)
        .arg("--manifest")
        .arg(&m);
    assert_eq!(go(c).code, 2);
}

#[test]
fn a_lock_wait_is_an_event_and_a_log_line() {
    // A first prepare holds the asset's lock while it downloads slowly; the second waits.
    let env = Env::new();
    let body = data(11, 256 * KIB);
    let origin = origin_serving("k", &body, throttled(256 * KIB));
    let m = env.write_manifest(
        "m.json",
        "v1",
        vec![asset_with_urls(
            "kernel",
            "kernel",
            &body,
            &[origin.url("k")],
        )],
    );
    let first = env.spawn_prepare(&m, &[]);
    // Wait until the first download is under way (the partial shows up in STATE/tmp).
    let tmp = env.state().join("tmp");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "first prepare never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut c = cmd(&env.outside("config"));
    c.args(["prepare", "-v", "--message-format", "json", "--dir"])
        .arg(&env.root)
        .arg("--manifest")
        .arg(&m);
    let second = go(c);
    let first = wait(first);
    assert_eq!(first.code, 0, "{}", first.describe());
    assert_eq!(second.code, 0, "{}", second.describe());
    assert!(
        second
            .stdout
            .lines()
            .any(|l| l.contains("\"event\":\"waiting\"")),
        "{}",
        second.stdout
    );
    assert!(
        second.stderr.contains("asset kernel: waiting"),
        "{}",
        second.stderr
    );
    assert_eq!(origin.requests("k"), 1, "downloaded once");
}

#[test]
fn status_reports_records_partials_and_ledger_size() {
    let s = served(10_000, Fault::default());
    assert_eq!(go(s.prepare(&["-q"])).code, 0);
    let mut c = cmd(&s.env.outside("config"));
    c.args(["status", "--json", "--dir"]).arg(&s.env.root);
    let r = go(c);
    assert_eq!(r.code, 0, "{}", r.describe());
    let v = r.json();
    assert_eq!(v["records"], 1);
    assert_eq!(v["recorded_bytes"], 10_000);
    assert_eq!(v["present"], 1);
    assert_eq!(v["partials"], 0);
    assert!(v["ledger"]["bytes"].as_u64().unwrap() > 0, "{v}");

    // A partial left in STATE/tmp is counted.
    std::fs::create_dir_all(s.env.state().join("tmp")).unwrap();
    std::fs::write(s.env.state().join("tmp/abandoned.part"), vec![0u8; 1234]).unwrap();
    std::fs::remove_file(s.env.path("kernel")).unwrap();
    let mut c = cmd(&s.env.outside("config"));
    c.args(["status", "--json", "--dir"]).arg(&s.env.root);
    let v = go(c).json();
    assert_eq!(v["partials"], 1);
    assert_eq!(v["partial_bytes"], 1234);
    assert_eq!(v["present"], 0);

    // Human form: sizes in binary units.
    let mut c = cmd(&s.env.outside("config"));
    c.args(["status", "--dir"]).arg(&s.env.root);
    let r = go(c);
    assert!(r.stdout.contains("records:   1 (9.8 KiB)"), "{}", r.stdout);

    // A root that does not exist is a typo: exit 2.
    let mut c = cmd(&s.env.outside("config"));
    c.args(["status", "--dir"]).arg(s.env.outside("typo"));
    let r = go(c);
    assert_eq!(r.code, 2, "{}", r.describe());
}

/// A manifest of three assets with file:// sources, so a per-asset failure would show 3 times.
fn three_assets(env: &Env) -> std::path::PathBuf {
    let assets = (0..3)
        .map(|i| {
            let body = blob(50 + i, 100);
            let src = env.outside(&format!("src{i}"));
            std::fs::write(&src, &body).unwrap();
            asset_with_urls(&format!("a{i}"), &format!("a{i}"), &body, &[file_url(&src)])
        })
        .collect();
    env.write_manifest("three.json", "v1", assets)
}

fn assert_one_line_exit_2(r: &Run, needle: &str) {
    assert_eq!(r.code, 2, "{}", r.describe());
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains(needle), "{}", r.stderr);
    assert!(
        !r.stderr.contains("asset a"),
        "per-asset work began: {}",
        r.stderr
    );
}

#[test]
fn a_bad_root_gives_one_line_and_exit_2_before_any_asset() {
    let env = Env::new();
    let m = three_assets(&env);
    let prepare = |dir: &Path| {
        let mut c = cmd(&env.outside("config"));
        c.args(["prepare", "--dir"])
            .arg(dir)
            .arg("--manifest")
            .arg(&m);
        go(c)
    };
    let file = env.outside("a-file");
    std::fs::write(&file, b"x").unwrap();
    assert_one_line_exit_2(&prepare(&file), "not a directory");
    assert_one_line_exit_2(&prepare(Path::new("/proc")), "/proc");
    // A state dir that cannot be created (its parent is a file).
    let mut c = cmd(&env.outside("config"));
    c.args(["prepare", "--dir"])
        .arg(&env.root)
        .arg("--state-dir")
        .arg(file.join("state"))
        .arg("--manifest")
        .arg(&m);
    assert_one_line_exit_2(&go(c), "state dir");

    // Read-only commands on a typo'd root.
    for sub in [vec!["debug", "ls"], vec!["debug", "check"], vec!["status"]] {
        let mut c = cmd(&env.outside("config"));
        c.args(&sub).arg("--dir").arg(env.outside("typo"));
        assert_one_line_exit_2(&go(c), "typo");
    }
    // The same root, once fine, works.
    let r = prepare(&env.root);
    assert_eq!(r.code, 0, "{}", r.describe());
}

/// Issue 15 changed this: a read-only mount is a read-only store, not a bad `--dir` (exit 2
/// before any asset). An empty read-only ROOT whose three assets would all need writing fails
/// each of them, named, with exit 1; a correct store there verifies and exits 0
/// (`readonly::regression_a_correct_store_on_a_read_only_mount_verifies`).
#[test]
fn a_root_on_a_read_only_mount_fails_only_the_assets_that_need_writing() {
    // A private mount namespace (unshare -m, as root) with a read-only tmpfs at ROOT.
    let env = Env::new();
    let m = three_assets(&env);
    let script = format!(
        "mount -t tmpfs -o ro tmpfs {root} && exec {bin} prepare --dir {root} --manifest {m}",
        root = env.root.display(),
        bin = env!("CARGO_BIN_EXE_bootvault"),
        m = m.display()
    );
    let mut c = Command::new("unshare");
    c.args(["-m", "sh", "-c", &script]);
    for k in ["NO_COLOR", "CLICOLOR_FORCE", "RUST_LOG", "BOOTVAULT_LOG"] {
        c.env_remove(k);
    }
    let r = go(c);
    assert_eq!(r.code, 1, "{}", r.describe());
    for name in ["a0", "a1", "a2"] {
        assert!(
            r.stderr
                .lines()
                .any(|l| l.contains(&format!("asset {name}")) && l.contains("read-only")),
            "{name}: {}",
            r.stderr
        );
    }
}

#[test]
fn debug_times_are_rfc3339_in_local_time_and_json_keeps_the_numbers() {
    let env = Env::new();
    let body = blob(60, 3000);
    env.put("k", &body);
    let m = env.write_manifest("m.json", "v1", vec![asset("k", "k", &body)]);
    env.prepare_ok(&m, &[]);
    let mut c = cmd(&env.outside("config"));
    c.args(["debug", "show", "k", "--dir"])
        .arg(&env.root)
        .env("TZ", "UTC");
    let r = go(c);
    assert_eq!(r.code, 0, "{}", r.describe());
    let event = r
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("event:"))
        .unwrap_or_else(|| panic!("{}", r.stdout));
    let stamp = event.split_whitespace().nth(1).unwrap();
    // 2026-11-25T06:12:01.123+00:00
    assert_eq!(stamp.len(), 29, "{event}");
    assert!(stamp.ends_with("+00:00"), "{event}");
    assert_eq!(&stamp[10..11], "T", "{event}");
    assert!(!r.stdout.contains("_ns"), "raw nanoseconds: {}", r.stdout);

    let mut c = cmd(&env.outside("config"));
    c.args(["debug", "show", "k", "--json", "--dir"])
        .arg(&env.root);
    let v = go(c).json();
    assert!(v["record"]["verified_at_ns"].is_i64(), "{v}");
    assert!(v["record"]["verified_at"].is_string(), "{v}");
    assert!(v["events"][0]["at_ns"].is_i64(), "{v}");
    assert!(v["events"][0]["at"].is_string(), "{v}");

    let mut c = cmd(&env.outside("config"));
    c.args(["debug", "ls", "--dir"])
        .arg(&env.root)
        .env("TZ", "UTC");
    let r = go(c);
    assert!(r.stdout.contains("VERIFIED AT"), "{}", r.stdout);
    assert!(r.stdout.contains("2.9 KiB"), "{}", r.stdout);
    assert!(r.stdout.contains("+00:00"), "{}", r.stdout);
}

#[test]
fn a_refused_connection_names_the_url_once_per_attempt() {
    let env = Env::new();
    // Bind then drop a listener: nothing listens on that port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/k");
    let m = env.write_manifest(
        "m.json",
        "v1",
        vec![asset_with_urls("k", "k", b"content", &[&url])],
    );
    let mut c = cmd(&env.outside("config"));
    c.args(["prepare", "--retries", "0", "--dir"])
        .arg(&env.root)
        .arg("--manifest")
        .arg(&m);
    let r = go(c);
    assert_eq!(r.code, 1, "{}", r.describe());
    assert_eq!(r.stderr.matches(&url).count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("Connection refused"), "{}", r.stderr);
}

#[test]
fn help_says_offline_still_uses_file_sources_and_names_env_vars() {
    let env = Env::new();
    let mut c = cmd(&env.outside("config"));
    c.args(["prepare", "--help"]);
    let r = go(c);
    assert_eq!(r.code, 0, "{}", r.describe());
    let offline = r
        .stdout
        .split("--offline")
        .nth(1)
        .unwrap_or_else(|| panic!("{}", r.stdout));
    let offline = &offline[..offline.find("--jobs").unwrap_or(offline.len())];
    assert!(offline.contains("file://"), "{offline}");
    assert!(offline.contains("on purpose"), "{offline}");
    for var in [
        "BOOTVAULT_DIR",
        "BOOTVAULT_STATE_DIR",
        "BOOTVAULT_OFFLINE",
        "BOOTVAULT_JOBS",
        "BOOTVAULT_MESSAGE_FORMAT",
        "BOOTVAULT_CONFIG",
    ] {
        assert!(r.stdout.contains(&format!("[env: {var}=")), "{var}");
    }
}

#[test]
fn config_trusted_keys_reach_prepare_and_the_variable_replaces_them() {
    // A trusted key named only in the config file is loaded by prepare (a missing one is a
    // usage error naming it); --trusted-key replaces the config's list.
    let s = served(10_000, Fault::default());
    let file = s.env.outside("bootvault.toml");
    std::fs::write(
        &file,
        "trusted_keys = [\"keys/missing.pub\"]\n[registry_mirrors]\n\"ghcr.io\" = \"mirror.internal:5000\"\n",
    )
    .unwrap();
    let mut c = s.prepare(&["--config"]);
    c.arg(&file);
    let r = go(c);
    assert_eq!(r.code, 2, "{}", r.describe());
    assert!(r.stderr.contains("missing.pub"), "{}", r.stderr);

    let key = s.env.outside("other.pub");
    let mut c = s.prepare(&["--config"]);
    c.arg(&file).env("BOOTVAULT_TRUSTED_KEY", &key);
    let r = go(c);
    assert_eq!(r.code, 2, "{}", r.describe());
    assert!(r.stderr.contains("other.pub"), "{}", r.stderr);
    assert!(!r.stderr.contains("missing.pub"), "{}", r.stderr);
}
