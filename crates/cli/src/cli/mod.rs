//! Argument parsing, exit codes and output helpers shared by the subcommands.

mod arcbox;
mod completions;
mod config;
mod debug;
mod demo;
mod events;
mod gc;
mod index;
mod man;
mod migrate;
mod plan;
mod prepare;
mod progress;
mod publish;
mod remote;
mod sign;
mod signals;
mod status;
mod ui;

use bootvault::{Manifest, ParseOptions, Store};
use clap::{Args, Parser, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub use ui::ui;

/// Exit code: an asset failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: bad input or usage.
pub const EXIT_USAGE: u8 = 2;

/// The exit code of a library error (the policy is the CLI's, decided from the variant): bad
/// input (the manifest, a legacy file, ROOT or the state dir) is a usage error; every other
/// error (an asset, the network, the ledger) is a failure.
pub fn exit_code(e: &bootvault::Error) -> u8 {
    use bootvault::Error;
    use bootvault::oci::OciError;
    use bootvault::rollback::RollbackError;
    match e {
        Error::Manifest { .. } | Error::Legacy { .. } | Error::Store { .. } => EXIT_USAGE,
        // Bad input: a bad reference, no set under it, a missing or refused signature, a
        // manifest older than the one accepted, a bad path, name or digest.
        Error::Registry {
            source: OciError::Reference { .. } | OciError::NotASet { .. },
        }
        | Error::Signature { .. }
        | Error::Rollback {
            source: RollbackError::Downgrade { .. },
        }
        | Error::InvalidPath { .. }
        | Error::InvalidName { .. }
        | Error::Digest { .. } => EXIT_USAGE,
        _ => EXIT_FAILED,
    }
}

#[derive(Parser)]
#[command(
    name = "bootvault",
    version = env!("BOOTVAULT_VERSION"),
    about = "A store of verified VM boot assets",
    after_help = "Every flag can also be set from the environment variable shown with it; \
                  BOOTVAULT_LOG (or RUST_LOG) takes a tracing filter such as `bootvault=debug`."
)]
struct Cli {
    #[command(flatten)]
    global: ui::GlobalArgs,
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
    /// Store size, records, partial downloads and ledger size.
    Status(status::StatusArgs),
    /// Trust an arcbox-boot .verified.json: import its entries into the ledger.
    ///
    /// An explicit act: a prepare never reads that file, since whoever can write ROOT can
    /// write it. Run it only on a store you trust; it trusts whoever could write the file.
    Migrate(migrate::MigrateArgs),
    /// Drop files and records that the manifest does not name.
    Gc(gc::GcArgs),
    /// arcbox-boot's layout (boot cache and bin dir), switched in place.
    #[command(subcommand)]
    Arcbox(arcbox::ArcboxCommand),
    /// End-to-end demo on built-in data, served from a loopback origin (no network).
    Demo(demo::DemoArgs),
    /// Write a chunk index beside each asset in SRC and OUT = IN plus each index reference.
    Index(index::IndexArgs),
    /// Push a manifest's assets and the manifest to an OCI registry (oci://HOST/REPO:TAG).
    Publish(publish::PublishArgs),
    /// Sign a manifest with a minisign secret key (writes MANIFEST.minisig).
    Sign(sign::SignArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsArgs),
    /// Write man pages (roff): to stdout, or one page per subcommand into --out-dir.
    Man(man::ManArgs),
}

/// The clap command tree (for completions and man pages).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// Where the store is: shared by every subcommand.
#[derive(Args, Clone, Debug)]
pub struct StoreArgs {
    /// Store root: assets live at their manifest paths under it [config: dir].
    #[arg(long, value_name = "ROOT", env = "BOOTVAULT_DIR")]
    pub dir: Option<PathBuf>,
    /// State directory (ledger, locks, partial downloads); default ROOT/.bootvault
    /// [config: state_dir].
    #[arg(long, value_name = "DIR", env = "BOOTVAULT_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

/// What a command will do with the store, for the checks made before it is opened.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Access {
    /// Reads only: ROOT must be an existing directory and the ledger must exist.
    ReadLedger,
    /// Reads only; a missing ledger is reported, not an error.
    Read,
    /// Writes: ROOT and the state dir must be (or become) writable directories.
    Write,
}

impl StoreArgs {
    /// ROOT from the flag, the environment or the config file.
    pub fn root(&self) -> Result<PathBuf, Failure> {
        self.dir
            .clone()
            .or_else(|| ui().config.dir.clone())
            .ok_or_else(|| {
                Failure::usage(
                    "no store root: pass --dir ROOT, set BOOTVAULT_DIR, or set `dir` in the config file",
                )
            })
    }

    /// The state dir from the flag or the environment; else the config file's, but only
    /// when ROOT is the config file's too (its state_dir belongs to its dir) or the config
    /// names no dir.
    fn state(&self) -> Option<PathBuf> {
        let config = &ui().config;
        let root_from_config = self.dir.is_none() || config.dir.is_none();
        self.state_dir
            .clone()
            .or_else(|| config.state_dir.clone().filter(|_| root_from_config))
    }

    /// The state dir this command uses (absolute; default ROOT/.bootvault).
    pub fn state_path(&self) -> Result<PathBuf, Failure> {
        let p = match self.state() {
            Some(s) => s,
            None => self.root()?.join(bootvault::STATE_DIR_NAME),
        };
        std::path::absolute(&p).map_err(|e| Failure::usage(format!("{}: {e}", p.display())))
    }

    pub fn builder(&self) -> Result<bootvault::StoreBuilder, Failure> {
        let mut b = Store::builder(self.root()?);
        if let Some(s) = self.state() {
            b = b.state_dir(s);
        }
        Ok(b)
    }

    /// Checks ROOT and the state dir (one line, exit 2, before any per-asset work), then
    /// opens the store.
    pub fn open(&self, access: Access) -> Result<Store, Failure> {
        let store = self.open_builder(self.builder()?, access)?;
        Ok(store)
    }

    /// As [`StoreArgs::open`], with a builder the caller has configured further.
    pub fn open_builder(
        &self,
        builder: bootvault::StoreBuilder,
        access: Access,
    ) -> Result<Store, Failure> {
        // Only a command that writes creates a missing ROOT; the library checks that ROOT and
        // the state dir are directories, `check_root` the rest (readable, writable, ledger).
        let store = builder.create(access == Access::Write).open()?;
        ui::check_root(&store, access)?;
        Ok(store)
    }
}

/// Manifest options (format detection, arcbox-boot arch and base URL).
#[derive(Args, Clone, Debug, Default)]
pub struct ManifestArgs {
    /// Architecture for arcbox-boot manifests (x86_64 or arm64); default: the host's.
    #[arg(long, env = "BOOTVAULT_ARCH")]
    pub arch: Option<String>,
    /// Base URL for arcbox-boot manifest paths (overrides a native manifest's base_url).
    #[arg(long, env = "BOOTVAULT_BASE_URL")]
    pub base_url: Option<String>,
}

impl ManifestArgs {
    /// Reads a manifest file (a regular file of at most 16 MiB) in either format.
    pub fn load(&self, path: &Path) -> Result<Manifest, bootvault::Error> {
        let origin = path.display().to_string();
        let text = bootvault::read_manifest_text(path).map_err(|e| bootvault::Error::Manifest {
            origin: origin.clone(),
            message: format!("cannot read: {e}"),
        })?;
        self.parse(&text, &origin)
    }

    /// Parses either format: arcbox-boot's (detected by its fields, mapped onto the one-root
    /// layout by the arcbox crate) or the native one.
    pub fn parse(&self, text: &str, origin: &str) -> Result<Manifest, bootvault::Error> {
        // Only a text that names one of arcbox-boot's fields is parsed twice.
        let maybe_arcbox = [
            "\"schema_version\"",
            "\"asset_version\"",
            "\"targets\"",
            "\"binaries\"",
        ]
        .iter()
        .any(|k| text.contains(k));
        if maybe_arcbox
            && let Ok(doc) = serde_json::from_str::<serde_json::Value>(text)
            && bootvault_arcbox::native::is_arcbox_format(&doc)
        {
            return bootvault_arcbox::native::to_native(
                text,
                origin,
                self.arch.as_deref(),
                self.base_url.as_deref(),
            );
        }
        Manifest::parse(
            text,
            origin,
            &ParseOptions::default().base_url(self.base_url.clone()),
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
        Failure {
            code: exit_code(&e),
            message: e.to_string(),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        let code = match e.downcast_ref::<bootvault::Error>() {
            Some(inner) => exit_code(inner),
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
    // No password in a URL (`https://user:pass@…`) reaches stdout (tables, JSON).
    let mut text = bootvault::redact::text(text);
    if !text.ends_with('\n') {
        text.push('\n');
    }
    // One write: the text ends with its newline, so the line-buffered stdout passes it on
    // whole.
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}

/// Prints one JSON value on stdout.
pub fn out_json(value: &serde_json::Value) -> std::io::Result<()> {
    out(&serde_json::to_string_pretty(value).unwrap_or_default())
}

/// `Cli::try_parse`, except that clap's command tree is never dropped: freeing it cost 7 % of
/// a warm prepare's instructions (about as much as building it), and the process ends soon
/// after anyway. Same arguments, same errors.
fn parse_args() -> Result<Cli, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let mut cmd = std::mem::ManuallyDrop::new(Cli::command());
    let mut matches = cmd.try_get_matches_from_mut(std::env::args_os())?;
    Cli::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut Cli::command()))
}

/// Entry point of the binary.
pub fn run() -> ExitCode {
    let cli = match parse_args() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if let Err(f) = ui::init(&cli.global) {
        ui::print_error(&f.message);
        return ExitCode::from(f.code);
    }
    let result = match cli.command {
        Command::Prepare(a) => prepare::run(a),
        Command::Debug(d) => debug::run(d),
        Command::Status(a) => status::run(a),
        Command::Migrate(a) => migrate::run(a),
        Command::Gc(a) => gc::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Index(a) => index::run(a),
        Command::Publish(a) => publish::run(a),
        Command::Sign(a) => sign::run(a),
        Command::Arcbox(c) => arcbox::run(c),
        Command::Completions(a) => completions::run(a),
        Command::Man(a) => man::run(a),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) if f.code == EXIT_FAILED && f.message.contains("Broken pipe") => ExitCode::SUCCESS,
        Err(f) => {
            ui::print_error(&f.message);
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
