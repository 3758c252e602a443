//! Argument parsing, exit codes and output helpers shared by the subcommands.

mod arcbox;
mod debug;
mod demo;
mod gc;
mod migrate;
mod plan;
mod prepare;
mod progress;
mod publish;
mod remote;
mod sign;
mod signals;

use anyhow::Context as _;
use bootvault::{Manifest, ParseOptions, Store};
use clap::{Args, Parser, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Exit code: an asset failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: bad input or usage.
pub const EXIT_USAGE: u8 = 2;

#[derive(Parser)]
#[command(
    name = "bootvault",
    version,
    about = "A store of verified VM boot assets"
)]
struct Cli {
    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make every asset of a manifest present and verified under ROOT.
    Prepare(prepare::PrepareArgs),
    /// Inspect the store.
    #[command(subcommand)]
    Debug(debug::DebugCommand),
    /// Import an arcbox-boot .verified.json into the ledger.
    Migrate(migrate::MigrateArgs),
    /// Drop files and records that the manifest does not name.
    Gc(gc::GcArgs),
    /// arcbox-boot's layout (boot cache and bin dir), switched in place.
    #[command(subcommand)]
    Arcbox(arcbox::ArcboxCommand),
    /// End-to-end demo on built-in data, served from a loopback origin (no network).
    Demo(demo::DemoArgs),
    /// Push a manifest's assets and the manifest to an OCI registry (oci://HOST/REPO:TAG).
    Publish(publish::PublishArgs),
    /// Sign a manifest with a minisign secret key (writes MANIFEST.minisig).
    Sign(sign::SignArgs),
}

/// Where the store is: shared by every subcommand.
#[derive(Args, Clone, Debug)]
pub struct StoreArgs {
    /// Store root: assets live at their manifest paths under it.
    #[arg(long, value_name = "ROOT")]
    pub dir: PathBuf,
    /// State directory (ledger, locks, partial downloads); default ROOT/.bootvault.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

impl StoreArgs {
    pub fn builder(&self) -> bootvault::StoreBuilder {
        let mut b = Store::builder(&self.dir);
        if let Some(s) = &self.state_dir {
            b = b.state_dir(s);
        }
        b
    }
    pub fn open(&self) -> anyhow::Result<Store> {
        self.builder()
            .open()
            .with_context(|| format!("cannot open store at {}", self.dir.display()))
    }
}

/// Manifest options (format detection, arcbox-boot arch and base URL).
#[derive(Args, Clone, Debug, Default)]
pub struct ManifestArgs {
    /// Architecture for arcbox-boot manifests (x86_64 or arm64); default: the host's.
    #[arg(long)]
    pub arch: Option<String>,
    /// Base URL for arcbox-boot manifest paths (overrides a native manifest's base_url).
    #[arg(long)]
    pub base_url: Option<String>,
}

impl ManifestArgs {
    pub fn load(&self, path: &Path) -> Result<Manifest, bootvault::Error> {
        Manifest::from_file(
            path,
            &ParseOptions {
                arch: self.arch.clone(),
                base_url: self.base_url.clone(),
            },
        )
    }
}

/// A failure with its exit code, printed as one line on stderr.
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: EXIT_USAGE,
            message: message.into(),
        }
    }
}

impl From<bootvault::Error> for Failure {
    fn from(e: bootvault::Error) -> Failure {
        let code = if e.is_usage() {
            EXIT_USAGE
        } else {
            EXIT_FAILED
        };
        Failure {
            code,
            message: e.to_string(),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        let code = match e.downcast_ref::<bootvault::Error>() {
            Some(inner) if inner.is_usage() => EXIT_USAGE,
            Some(_) => EXIT_FAILED,
            None if e.downcast_ref::<std::io::Error>().is_some() => EXIT_FAILED,
            None => EXIT_USAGE,
        };
        Failure {
            code,
            message: format!("{e:#}"),
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        Failure {
            code: EXIT_FAILED,
            message: e.to_string(),
        }
    }
}

/// What a subcommand returns: the exit code to use (0 or 1), or a failure.
pub type CmdResult = Result<u8, Failure>;

/// Writes to stdout; a closed pipe is not an error (`bootvault debug ls | head`).
pub fn out(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        stdout.write_all(b"\n")?;
    }
    stdout.flush()
}

/// Prints one JSON value on stdout.
pub fn out_json(value: &serde_json::Value) -> std::io::Result<()> {
    out(&serde_json::to_string_pretty(value).unwrap_or_default())
}

/// Whether stderr is a terminal (progress and colour only then).
pub fn stderr_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("BOOTVAULT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("bootvault={default}")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(stderr_is_terminal())
        .with_target(false)
        .without_time()
        .try_init();
}

/// Entry point of the binary.
pub fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_tracing(cli.verbose);
    let result = match cli.command {
        Command::Prepare(a) => prepare::run(a),
        Command::Debug(d) => debug::run(d),
        Command::Migrate(a) => migrate::run(a),
        Command::Gc(a) => gc::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Publish(a) => publish::run(a),
        Command::Sign(a) => sign::run(a),
        Command::Arcbox(c) => arcbox::run(c),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) if f.code == EXIT_FAILED && f.message.contains("Broken pipe") => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("bootvault: error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// Maps a stdout write result: a closed pipe counts as success.
pub fn finish_output(r: std::io::Result<()>, code: u8) -> CmdResult {
    match r {
        Ok(()) => Ok(code),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(code),
        Err(e) => Err(e.into()),
    }
}
