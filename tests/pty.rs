//! Progress bars on a real terminal: a prepare runs inside tmux (a pseudo-terminal, so the bars
//! are drawn) while a download is cut and retried, which logs a warning. The captured screen,
//! scrollback included, must hold the warning on a line of its own and no bar left behind.

mod common;

use bootvault_testkit::origin::Fault;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A tmux server on a socket of its own; killed on drop (it and its session only).
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&self.socket).args(["-f", "/dev/null"]);
        c
    }

    fn start(dir: &Path, width: u16, height: u16, shell_command: &str) -> Tmux {
        let t = Tmux {
            socket: dir.join("tmux.sock"),
        };
        let status = t
            .cmd()
            .args(["new-session", "-d", "-s", "bv", "-x", &width.to_string()])
            .args(["-y", &height.to_string(), shell_command])
            .status()
            .expect("tmux is installed (.ci/run installs it)");
        assert!(status.success(), "tmux new-session failed");
        // Keep everything that scrolls off, to look for stale bar lines there too.
        let _ = t
            .cmd()
            .args(["set-option", "-t", "bv", "history-limit", "10000"])
            .status();
        t
    }

    /// The pane's text, scrollback included, lines joined where the terminal wrapped them.
    fn capture(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-J", "-S", "-", "-t", "bv"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
    }
}

#[test]
fn a_warning_during_downloads_leaves_no_torn_bar_on_the_terminal() {
    let env = Env::new();
    // Two slow downloads, so bars are on screen the whole time; the second is cut once after
    // 96 KiB, which logs a retry warning while both bars are drawn.
    let slow = data(21, 768 * KIB);
    let flaky = data(22, 512 * KIB);
    let origin = origin_serving("slow", &slow, throttled(384 * KIB));
    serve_faulty(
        &origin,
        "flaky",
        &flaky,
        Fault {
            cut_after: Some(96 * KIB as u64),
            bytes_per_sec: Some(256 * KIB as u64),
            ..Fault::default()
        },
    );
    let m = env.write_manifest(
        "m.json",
        "v1",
        vec![
            asset_with_urls("slow", "slow", &slow, &[origin.url("slow")]),
            asset_with_urls("flaky", "flaky", &flaky, &[origin.url("flaky")]),
        ],
    );
    let done = env.outside("done");
    let script = format!(
        "env -u NO_COLOR -u CLICOLOR_FORCE -u RUST_LOG -u BOOTVAULT_LOG -u BOOTVAULT_QUIET \
         -u BOOTVAULT_NO_PROGRESS {bin} prepare --jobs 2 --dir {root} --manifest {m}; \
         echo \"EXIT=$?\"; touch {done}; sleep 60",
        bin = env!("CARGO_BIN_EXE_bootvault"),
        root = env.root.display(),
        m = m.display(),
        done = done.display(),
    );
    let tmux = Tmux::start(env.tmp.path(), 160, 40, &script);
    // Sample the screen while it runs: the bars must really be drawn (else this proves nothing).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut saw_bars = false;
    while !done.exists() {
        assert!(
            Instant::now() < deadline,
            "prepare did not finish:\n{}",
            tmux.capture()
        );
        saw_bars |= tmux.capture().contains(" eta ");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(100));
    let screen = tmux.capture();
    assert!(saw_bars, "no progress bar was ever drawn:\n{screen}");
    assert!(screen.contains("EXIT=0"), "{screen}");
    assert_eq!(
        origin.range_requests("flaky"),
        1,
        "the cut download resumed"
    );

    let warnings: Vec<&str> = screen.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "one retry warning:\n{screen}");
    let warning = warnings[0];
    // On a line of its own: it starts the line, and holds no piece of a bar.
    assert!(
        warning.trim_start().starts_with("WARN"),
        "torn: {warning:?}\n{screen}"
    );
    assert!(
        warning.contains("flaky:") && warning.contains("retrying"),
        "{warning:?}"
    );
    for bar_piece in [" eta ", "assets", "[=", "=>"] {
        assert!(!warning.contains(bar_piece), "torn: {warning:?}\n{screen}");
    }
    // Every bar was cleared: none is left in the screen or the scrollback.
    for line in screen.lines() {
        assert!(
            !line.contains(" eta ") && !line.contains(" assets "),
            "stale bar line {line:?}:\n{screen}"
        );
    }
    // And the result table follows, intact.
    assert!(screen.lines().any(|l| l.starts_with("ASSET")), "{screen}");
    assert!(
        screen
            .lines()
            .any(|l| l.starts_with("flaky ") && l.contains("downloaded")),
        "{screen}"
    );
}

#[test]
fn no_progress_draws_no_bar_on_a_terminal() {
    // The same slow download on a terminal, with --no-progress: no bar at any moment.
    let env = Env::new();
    let body = data(23, 512 * KIB);
    let origin = origin_serving("slow", &body, throttled(512 * KIB));
    let m = env.write_manifest(
        "m.json",
        "v1",
        vec![asset_with_urls(
            "slow",
            "slow",
            &body,
            &[origin.url("slow")],
        )],
    );
    let done = env.outside("done");
    let script = format!(
        "env -u BOOTVAULT_QUIET -u BOOTVAULT_NO_PROGRESS {bin} prepare --no-progress \
         --dir {root} --manifest {m}; echo \"EXIT=$?\"; touch {done}; sleep 60",
        bin = env!("CARGO_BIN_EXE_bootvault"),
        root = env.root.display(),
        m = m.display(),
        done = done.display(),
    );
    let tmux = Tmux::start(env.tmp.path(), 160, 40, &script);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut samples = 0;
    while !done.exists() {
        assert!(
            Instant::now() < deadline,
            "prepare did not finish:\n{}",
            tmux.capture()
        );
        let screen = tmux.capture();
        assert!(!screen.contains(" eta "), "a bar was drawn:\n{screen}");
        samples += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    let screen = tmux.capture();
    assert!(screen.contains("EXIT=0"), "{screen}");
    // The download took about a second: the screen was looked at while it ran.
    assert!(samples >= 5, "{samples} samples");
}

/// Issue: on a terminal, a prepare of thousands of assets printed one row per asset. It prints
/// the assets that were not `cached` and a summary with the counts; `--verbose` lists them all.
#[test]
fn a_prepare_on_a_terminal_lists_only_what_was_not_cached() {
    let env = Env::new();
    let mut assets = Vec::new();
    for i in 0..300u64 {
        let bytes = data(1000 + i, 64);
        let name = format!("f{i:03}");
        env.put(&name, &bytes);
        assets.push(asset(&name, &name, &bytes));
    }
    let absent = data(2000, 64);
    let src = env.outside("absent-src");
    std::fs::write(&src, &absent).unwrap();
    let url = format!("file://{}", src.display());
    assets.push(asset_with_urls("absent", "absent", &absent, &[url]));
    let m = env.write_manifest("m.json", "v1", assets);
    // Files changed in the clock tick a prepare starts in are racy (re-hashed next time, as
    // git does); adopted in place, some of the 300 would be. Let the tick pass.
    std::thread::sleep(Duration::from_millis(50));
    // The first prepare adopts the 300 files; remove one so the second has one download.
    env.prepare_ok(&m, &[]);
    std::fs::remove_file(env.path("absent")).unwrap();
    let screen_of = |extra: &str, tag: &str| {
        let done = env.outside(&format!("done-{tag}"));
        let script = format!(
            "env -u BOOTVAULT_QUIET -u BOOTVAULT_VERBOSE {bin} prepare --no-progress {extra} \
             --dir {root} --manifest {m}; echo \"EXIT=$?\"; touch {done}; sleep 60",
            bin = env!("CARGO_BIN_EXE_bootvault"),
            root = env.root.display(),
            m = m.display(),
            done = done.display(),
        );
        let dir = tempfile::tempdir().unwrap();
        let tmux = Tmux::start(dir.path(), 160, 40, &script);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done.exists() {
            assert!(
                Instant::now() < deadline,
                "prepare did not finish:\n{}",
                tmux.capture()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(100));
        tmux.capture()
    };
    let brief = screen_of("", "brief");
    assert!(brief.contains("EXIT=0"), "{brief}");
    let rows: Vec<&str> = brief.lines().filter(|l| l.starts_with("f")).collect();
    assert!(rows.is_empty(), "cached assets listed:\n{brief}");
    assert!(
        brief
            .lines()
            .any(|l| l.starts_with("absent") && l.contains("downloaded")),
        "{brief}"
    );
    assert!(
        brief.contains("301 assets, manifest v1 (300 cached, 1 downloaded)"),
        "{brief}"
    );
    std::fs::remove_file(env.path("absent")).unwrap();
    let verbose = screen_of("--verbose", "verbose");
    assert!(verbose.contains("EXIT=0"), "{verbose}");
    let rows = verbose.lines().filter(|l| l.starts_with("f")).count();
    assert_eq!(rows, 300, "--verbose lists every asset:\n{verbose}");
}
