//! The operator conventions shared by every subcommand: quiet/verbose, colour, progress, the
//! config file, log lines printed through the progress bars, root checks, time and size
//! formatting.

use super::config::Config;
use super::{Access, Failure};
use clap::builder::BoolishValueParser;
use indicatif::MultiProgress;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

/// When to colour stderr.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorChoice {
    /// When stderr is a terminal, unless NO_COLOR is set (CLICOLOR_FORCE forces it).
    Auto,
    Always,
    Never,
}

/// Options every subcommand takes.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Print nothing on stderr but errors: no progress, no warnings.
    #[arg(short, long, global = true, env = "BOOTVAULT_QUIET",
          value_parser = BoolishValueParser::new(), conflicts_with = "verbose")]
    pub quiet: bool,
    /// More log lines on stderr (-v, -vv).
    ///
    /// -v: downloads, retries, resumes, lock waits, ledger repairs and outcomes; -vv:
    /// everything the library logs. BOOTVAULT_LOG or RUST_LOG (a tracing filter such as
    /// `bootvault=debug`) override -q and -v.
    #[arg(short, long, global = true, action = clap::ArgAction::Count,
          env = "BOOTVAULT_VERBOSE")]
    pub verbose: u8,
    /// Colour on stderr. `auto` honours NO_COLOR and CLICOLOR_FORCE.
    #[arg(long, global = true, value_enum, value_name = "WHEN",
          default_value_t = ColorChoice::Auto, env = "BOOTVAULT_COLOR")]
    pub color: ColorChoice,
    /// No progress bars (they are only ever drawn when stderr is a terminal).
    #[arg(long, global = true, env = "BOOTVAULT_NO_PROGRESS",
          value_parser = BoolishValueParser::new())]
    pub no_progress: bool,
    /// Config file (TOML) [default: config.toml in the platform's config dir].
    ///
    /// The platform's config dir is $XDG_CONFIG_HOME/bootvault or ~/.config/bootvault on
    /// Linux, ~/Library/Application Support/bootvault on macOS. A missing default file is not
    /// an error, a missing --config file is. Keys: dir, state_dir, jobs, registry_mirrors,
    /// trusted_keys, manifest_timeout (see docs/cli.md).
    #[arg(long, global = true, value_name = "FILE", env = "BOOTVAULT_CONFIG")]
    pub config: Option<PathBuf>,
}

/// The resolved conventions of this run.
#[derive(Debug, Default)]
pub struct Ui {
    /// Colour on stderr.
    pub color: bool,
    /// Progress bars on stderr.
    pub progress: bool,
    /// `-v` count: with any, a prepare on a terminal lists every asset.
    pub verbose: u8,
    pub config: Config,
    /// The config file that was read, if any.
    pub config_path: Option<PathBuf>,
}

static UI: OnceLock<Ui> = OnceLock::new();

/// The conventions of this run (defaults until [`init`] ran).
pub fn ui() -> &'static Ui {
    UI.get_or_init(Ui::default)
}

/// Resolves the global options, reads the config file, installs the logger.
pub fn init(g: &GlobalArgs) -> Result<(), Failure> {
    // Whether stderr is a terminal: asked at most once (colour and progress both need it).
    let tty = std::cell::OnceCell::new();
    let stderr_tty = || *tty.get_or_init(|| std::io::stderr().is_terminal());
    let color = decide_color(g.color, stderr_tty);
    let (config, config_path) = super::config::load(g.config.as_deref())
        .map_err(|e| Failure::usage(format!("config {e}")))?;
    let ui = Ui {
        color,
        progress: !g.no_progress && !g.quiet && stderr_tty(),
        verbose: g.verbose,
        config,
        config_path,
    };
    let _ = UI.set(ui);
    init_tracing(g.quiet, g.verbose, color);
    Ok(())
}

fn decide_color(choice: ColorChoice, stderr_tty: impl FnOnce() -> bool) -> bool {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        // no-color.org: a non-empty NO_COLOR turns colour off; CLICOLOR_FORCE (not "0") turns
        // it on when stderr is no terminal. NO_COLOR wins when both are set.
        ColorChoice::Auto if set("NO_COLOR") => false,
        ColorChoice::Auto
            if set("CLICOLOR_FORCE")
                && std::env::var_os("CLICOLOR_FORCE").as_deref() != Some("0".as_ref()) =>
        {
            true
        }
        ColorChoice::Auto => stderr_tty(),
    }
}

fn init_tracing(quiet: bool, verbose: u8, color: bool) {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (default, level) = match (quiet, verbose) {
        (true, _) => ("error", LevelFilter::ERROR),
        (false, 0) => ("warn", LevelFilter::WARN),
        (false, 1) => ("info", LevelFilter::INFO),
        (false, _) => ("debug", LevelFilter::DEBUG),
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(|| LogWriter)
        .with_ansi(color)
        .with_target(false)
        .without_time();
    let registry = tracing_subscriber::registry().with(fmt);
    // A filter from the environment needs the directive parser; the default one (`bootvault`
    // at one level: the same prefix match on targets) does not, so a run without one pays for
    // no parsing (nor the hash map keys it seeds from the OS).
    if std::env::var_os("BOOTVAULT_LOG").is_some() || std::env::var_os("RUST_LOG").is_some() {
        let filter = EnvFilter::try_from_env("BOOTVAULT_LOG")
            .or_else(|_| EnvFilter::try_from_default_env())
            .unwrap_or_else(|_| EnvFilter::new(format!("bootvault={default}")));
        let _ = registry.with(filter).try_init();
    } else {
        let _ = registry
            .with(Targets::new().with_target("bootvault", level))
            .try_init();
    }
}

/// The progress bars being drawn, if any: log lines are printed above them.
static BARS: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// Registers (or, with `None`, unregisters) the bars log lines must be printed through.
pub fn set_bars(bars: Option<MultiProgress>) {
    *BARS.lock().unwrap_or_else(PoisonError::into_inner) = bars;
}

/// Writes `bytes` to stderr; while bars are drawn, clears them, writes, and redraws them, so
/// a log line never lands in the middle of a bar (a torn line left in the scrollback).
pub fn write_stderr(bytes: &[u8]) {
    // No password in a URL (`https://user:pass@…`) reaches stderr: errors and log lines.
    let text = bootvault::redact::text(&String::from_utf8_lossy(bytes));
    let bytes = text.as_bytes();
    let bars = BARS.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let write = || {
        let mut e = std::io::stderr().lock();
        let _ = e.write_all(bytes);
        let _ = e.flush();
    };
    match bars {
        Some(m) => m.suspend(write),
        None => write(),
    }
}

/// stderr for the logger; the formatter writes each event in one call.
struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        write_stderr(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `bootvault: error: MESSAGE` on stderr, "error" in red when colour is on.
pub fn print_error(message: &str) {
    let label = if ui().color {
        "\x1b[1;31merror\x1b[0m"
    } else {
        "error"
    };
    write_stderr(format!("bootvault: {label}: {message}\n").as_bytes());
}

/// Checks ROOT and the state dir before any per-asset work, so that a typo or an unusable
/// directory gives one line and exit 2 instead of the same error once per asset.
pub fn check_root(store: &bootvault::Store, access: Access) -> Result<(), Failure> {
    let root = store.root();
    let state = store.state_dir();
    let bad = |p: &Path, why: String| Failure::usage(format!("{}: {why}", p.display()));
    // `StoreBuilder::open` has checked that ROOT (created for a writing command) and an
    // existing state dir are directories; what is left is whether they can be used.
    // Opened for reading as a directory and closed (what `read_dir` would do, without the
    // `fstat` of its buffer sizing).
    {
        use rustix::fs::{Mode, OFlags};
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NONBLOCK | OFlags::CLOEXEC;
        rustix::fs::open(root, flags, Mode::empty()).map_err(|e| {
            let e = std::io::Error::from(e);
            bad(root, format!("cannot read store root: {e}"))
        })?;
    }
    match access {
        // Only what can never work is refused here: a store that merely is not ours to write
        // (another user's) is still verified read-only by the library, recording nothing.
        // A read-only mount is a read-only store (an image or export of a verified store), not
        // a bad root: the library verifies it read-only and fails, naming them, only the
        // assets that would need writing.
        Access::Write => {
            if !state.exists()
                && let Err(e) = std::fs::create_dir_all(state)
                && !read_only_mount(root)
                && e.raw_os_error() != Some(rustix::io::Errno::ROFS.raw_os_error())
            {
                return Err(bad(state, format!("cannot create state dir: {e}")));
            }
        }
        Access::ReadLedger if !store.ledger_path().exists() => {
            return Err(bad(
                store.ledger_path(),
                format!(
                    "no ledger: nothing was prepared under {} with this state dir",
                    root.display()
                ),
            ));
        }
        Access::ReadLedger | Access::Read => {}
    }
    Ok(())
}

/// Whether `dir` is on a filesystem mounted read-only.
fn read_only_mount(dir: &Path) -> bool {
    use rustix::fs::{StatVfsMountFlags, statvfs};
    statvfs(dir).is_ok_and(|st| st.f_flag.contains(StatVfsMountFlags::RDONLY))
}

/// Nanoseconds since the epoch as RFC 3339 in the local time zone (millisecond precision).
pub fn local_time(ns: i64) -> String {
    format_time(ns, "%Y-%m-%dT%H:%M:%S%.3f%:z")
}

/// As [`local_time`] with all nine digits: for stamps, which may differ by less than a ms.
pub fn local_time_ns(ns: i64) -> String {
    format_time(ns, "%Y-%m-%dT%H:%M:%S%.9f%:z")
}

fn format_time(ns: i64, format: &str) -> String {
    match jiff::Timestamp::from_nanosecond(ns as i128) {
        Ok(t) => t
            .to_zoned_datetime(jiff::tz::TimeZone::system())
            .strftime(format)
            .to_string(),
        Err(_) => format!("{ns} ns"),
    }
}

/// Bytes in binary units (KiB, MiB, GiB, TiB).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A duration for humans: µs below a millisecond, ms below a second, then seconds.
pub fn human_duration(d: std::time::Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1e3 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}
