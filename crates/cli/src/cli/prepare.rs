//! `bootvault prepare`.

use super::events::MessageFormat;
use super::progress::Reporter;
pub use super::ui::human_bytes;
use super::{Access, CmdResult, EXIT_FAILED, ManifestArgs, StoreArgs, finish_output, out, ui};
use bootvault::{Policy, Report};
use clap::Args;
use clap::builder::BoolishValueParser;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct PrepareArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The manifest (native JSON, or arcbox-boot's): a file, an http(s):// URL, or a registry
    /// artifact oci://HOST/REPO:TAG or oci://HOST/REPO@sha256:DIGEST.
    #[arg(long, value_name = "FILE|URL", env = "BOOTVAULT_MANIFEST")]
    pub manifest: String,
    /// Never touch the network; `file://` sources still work.
    ///
    /// A missing or wrong asset whose only sources are remote fails, and so does a manifest
    /// that would have to be fetched. `file://` sources still work, on purpose: they are local
    /// copies (a mounted release directory, a USB stick), and their bytes are hashed like any
    /// download.
    #[arg(long, env = "BOOTVAULT_OFFLINE", value_parser = BoolishValueParser::new())]
    pub offline: bool,
    /// Parallel workers (default: number of cores) [config: jobs].
    #[arg(long, value_name = "N", env = "BOOTVAULT_JOBS",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: Option<u16>,
    /// Print exactly one JSON object on stdout, at the end.
    #[arg(long, env = "BOOTVAULT_JSON", value_parser = BoolishValueParser::new(),
          conflicts_with = "message_format")]
    pub json: bool,
    /// `json`: one JSON object per line on stdout as things happen.
    ///
    /// Then a summary line with the `--json` report in it; the shapes are in docs/events.md.
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = MessageFormat::Human,
          env = "BOOTVAULT_MESSAGE_FORMAT")]
    pub message_format: MessageFormat,
    /// Override every asset's verify policy.
    #[arg(long, value_name = "POLICY", value_parser = ["always", "cached"],
          env = "BOOTVAULT_VERIFY")]
    pub verify: Option<String>,
    /// Download retries (rounds over the URL list after the first).
    #[arg(long, value_name = "N", env = "BOOTVAULT_RETRIES")]
    pub retries: Option<u32>,
    /// Seconds without a byte before a download is retried (at least 1).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..),
          env = "BOOTVAULT_IDLE_TIMEOUT")]
    pub idle_timeout: Option<u64>,
    /// Connect timeout in seconds (at least 1).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..),
          env = "BOOTVAULT_CONNECT_TIMEOUT")]
    pub connect_timeout: Option<u64>,
    /// Print what would be cached, hashed, linked, downloaded or repaired, with byte counts,
    /// and do nothing: no write, no lock, and no network beyond fetching a manifest given as
    /// a URL or registry reference.
    #[arg(long, env = "BOOTVAULT_DRY_RUN", value_parser = BoolishValueParser::new())]
    pub dry_run: bool,
    #[command(flatten)]
    pub manifest_args: ManifestArgs,
    #[command(flatten)]
    pub registry: super::remote::RegistryArgs,
    #[command(flatten)]
    pub trust: super::remote::TrustArgs,
}

pub fn run(a: PrepareArgs) -> CmdResult {
    let oci = a.registry.options()?;
    if a.offline && super::remote::is_remote(&a.manifest) {
        return Err(super::Failure::usage(format!(
            "--offline: cannot fetch the manifest {}",
            a.manifest
        )));
    }
    let mut fetch = bootvault::FetchOptions::default();
    fetch.oci = oci;
    if let Some(r) = a.retries {
        fetch.retries = r;
    }
    if let Some(s) = a.idle_timeout {
        fetch.idle_timeout = Duration::from_secs(s);
    }
    if let Some(s) = a.connect_timeout {
        fetch.connect_timeout = Duration::from_secs(s);
    }
    let (manifest, provenance, signed) =
        super::remote::load(&a.manifest, &a.manifest_args, &fetch, &a.trust)?;
    // Rollback protection: checked before anything is read or written for this manifest; the
    // mark moves once the store is open for a real run (a dry run writes nothing).
    if let Some(signed) = &signed {
        signed.guard(&a.manifest, &a.store.state_path()?, &a.trust, false)?;
    }
    if a.dry_run {
        // A plan is one document: `--message-format json` prints it as one JSON line.
        let line = a.message_format == MessageFormat::Json;
        return super::plan::dry_run(
            &a.store,
            &manifest,
            a.verify.as_deref(),
            a.json || line,
            line,
        );
    }
    let mut b = a
        .store
        .builder()?
        .offline(a.offline)
        .verify(a.verify.as_deref().and_then(Policy::parse))
        .fetch_options(fetch);
    if let Some(j) = a.jobs.or(ui().config.jobs) {
        b = b.jobs(j as usize);
    }
    let events = a.message_format == MessageFormat::Json;
    let reporter = Reporter::new(&manifest, events);
    let token = bootvault::CancelToken::new();
    let interrupts = Arc::new(super::signals::Interrupts::new(token.clone()));
    let report_progress = reporter.callback();
    let arm = interrupts.clone();
    b = b.progress(Arc::new(move |p: &bootvault::Progress<'_>| {
        if super::signals::Interrupts::is_work(p) {
            arm.arm();
        }
        report_progress(p)
    }));
    let store = match a.store.open_builder(b, Access::Write) {
        Ok(s) => s,
        Err(e) => {
            reporter.finish(None);
            return Err(e);
        }
    };
    if let Some(signed) = &signed {
        signed.guard(&a.manifest, store.state_dir(), &a.trust, true)?;
    }
    let opts = bootvault::PrepareOptions::new()
        .cancel(token)
        .provenance(provenance);
    let report = match store.prepare_with(&manifest, &opts) {
        Ok(r) => r,
        Err(e) => {
            reporter.finish(None);
            return Err(e.into());
        }
    };
    reporter.finish(Some(&report));
    if let Some(code) = interrupts.exit_code() {
        let done = report.assets.iter().filter(|a| a.result.is_ok()).count();
        super::ui::write_stderr(
            format!(
                "bootvault: interrupted: {done} of {} assets ready; partial downloads resume on \
                 the next prepare\n",
                report.assets.len()
            )
            .as_bytes(),
        );
        return Ok(code);
    }
    for asset in &report.assets {
        if let Err(err) = &asset.result {
            super::ui::print_error(&err.to_string());
        }
    }
    let code = if report.failed() { EXIT_FAILED } else { 0 };
    let printed = if events {
        Ok(())
    } else if a.json {
        // The report carries the manifest's kernel_cmdline (arcbox-boot manifests) itself.
        // Serialized straight to text: the same object as `report_json`, without building
        // the `Value` tree first.
        out(&serde_json::to_string_pretty(&report).unwrap_or_default())
    } else if std::io::stdout().is_terminal() && ui().verbose == 0 {
        out(&report_brief(&report))
    } else {
        out(&report_table(&report))
    };
    finish_output(printed, code)
}

/// For a person at a terminal: a row for each asset that was not `cached` (what changed, what
/// failed) and one summary line, so a prepare of thousands of assets fits on the screen.
/// Pipes and `--verbose` get every row ([`report_table`]), `--json` the whole report.
pub fn report_brief(report: &Report) -> String {
    let listed: Vec<&bootvault::AssetReport> = report
        .assets
        .iter()
        .filter(|a| a.outcome() != Some(bootvault::Outcome::Cached))
        .collect();
    let mut s = String::new();
    if !listed.is_empty() {
        let w = listed
            .iter()
            .map(|a| a.name.len())
            .max()
            .unwrap_or(0)
            .max(24);
        s.push_str(&format!(
            "{:<w$} {:<11} {:>14} {:>14} {:>10}\n",
            "ASSET", "OUTCOME", "HASHED", "DOWNLOADED", "TIME"
        ));
        let zero = Zero::new();
        for a in &listed {
            push_row(&mut s, a, w, &zero);
        }
    }
    // Counts per outcome, in the order outcomes are first met.
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for a in &report.assets {
        let o = a.outcome().map(|o| o.as_str()).unwrap_or("failed");
        match counts.iter_mut().find(|(k, _)| *k == o) {
            Some((_, n)) => *n += 1,
            None => counts.push((o, 1)),
        }
    }
    let counts: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    s.push_str(&format!(
        "{} assets, manifest {} ({}): {} hashed, {} downloaded in {:.2} ms",
        report.assets.len(),
        report.manifest_version,
        counts.join(", "),
        human_bytes(report.assets.iter().map(|a| a.bytes_hashed).sum()),
        human_bytes(report.assets.iter().map(|a| a.bytes_downloaded).sum()),
        report.elapsed.as_secs_f64() * 1e3
    ));
    if listed.len() < report.assets.len() {
        s.push_str("\n(the cached ones are not listed: --verbose or --json lists every asset)");
    }
    s
}

/// Appends one asset's row (formatted in place, no string per row).
/// One row of [`report_table`]. Written by hand rather than through `format!` width specifiers
/// (the formatting machinery was a tenth of a warm prepare's instructions), and a row with
/// nothing hashed, downloaded or timed (every `cached` one) reuses the zero texts.
fn push_row(s: &mut String, a: &bootvault::AssetReport, w: usize, zero: &Zero) {
    fn text(n: u64, zero: &str) -> std::borrow::Cow<'_, str> {
        if n == 0 {
            std::borrow::Cow::Borrowed(zero)
        } else {
            std::borrow::Cow::Owned(human_bytes(n))
        }
    }
    pad_right(s, &a.name, w);
    s.push(' ');
    pad_right(s, a.outcome().map(|o| o.as_str()).unwrap_or("FAILED"), 11);
    s.push(' ');
    pad_left(s, &text(a.bytes_hashed, &zero.bytes), 14);
    s.push(' ');
    pad_left(s, &text(a.bytes_downloaded, &zero.bytes), 14);
    s.push(' ');
    if a.elapsed.is_zero() {
        pad_left(s, &zero.time, 10);
    } else {
        pad_left(s, &super::ui::human_duration(a.elapsed), 10);
    }
    s.push('\n');
}

/// The texts of a zero size and a zero duration, made once per table.
struct Zero {
    bytes: String,
    time: String,
}

impl Zero {
    fn new() -> Zero {
        Zero {
            bytes: human_bytes(0),
            time: super::ui::human_duration(Duration::ZERO),
        }
    }
}

/// `{:<width$}`: `text`, then spaces up to `width` characters (as `format!` counts them).
fn pad_right(s: &mut String, text: &str, width: usize) {
    s.push_str(text);
    for _ in text.chars().count()..width {
        s.push(' ');
    }
}

/// `{:>width$}`: spaces up to `width` characters, then `text`.
fn pad_left(s: &mut String, text: &str, width: usize) {
    for _ in text.chars().count()..width {
        s.push(' ');
    }
    s.push_str(text);
}

/// The contract's `prepare --json` object (the library's `Report` serialization).
pub fn report_json(report: &Report) -> serde_json::Value {
    serde_json::to_value(report).unwrap_or_default()
}

/// A plain table for humans.
pub fn report_table(report: &Report) -> String {
    let w = report
        .assets
        .iter()
        .map(|a| a.name.len())
        .max()
        .unwrap_or(0)
        .max(24);
    let mut s = format!(
        "{:<w$} {:<11} {:>14} {:>14} {:>10}\n",
        "ASSET", "OUTCOME", "HASHED", "DOWNLOADED", "TIME"
    );
    let zero = Zero::new();
    s.reserve(report.assets.len() * (w + 54));
    for a in &report.assets {
        push_row(&mut s, a, w, &zero);
    }
    for a in &report.assets {
        if let Some(why) = &a.patch_fallback {
            s.push_str(&format!(
                "{}: patch abandoned ({why}); downloaded whole\n",
                a.name
            ));
        }
    }
    let hashed: u64 = report.assets.iter().map(|a| a.bytes_hashed).sum();
    let down: u64 = report.assets.iter().map(|a| a.bytes_downloaded).sum();
    s.push_str(&format!(
        "{} assets, manifest {}: {} hashed, {} downloaded in {:.2} ms",
        report.assets.len(),
        report.manifest_version,
        human_bytes(hashed),
        human_bytes(down),
        report.elapsed.as_secs_f64() * 1e3
    ));
    s
}

#[cfg(test)]
mod table_tests {
    use super::{pad_left, pad_right};

    /// The hand-written padding is exactly `format!`'s, multi-byte characters included.
    #[test]
    fn padding_matches_format_widths() {
        for text in [
            "",
            "a",
            "kernel",
            "µs",
            "0 µs",
            "ünïcödé-name",
            "a-name-longer-than-24-chars!",
        ] {
            for width in [0, 1, 4, 10, 11, 14, 24, 30] {
                let mut r = String::new();
                pad_right(&mut r, text, width);
                assert_eq!(r, format!("{text:<width$}"), "{text:?} {width}");
                let mut l = String::new();
                pad_left(&mut l, text, width);
                assert_eq!(l, format!("{text:>width$}"), "{text:?} {width}");
            }
        }
    }
}
