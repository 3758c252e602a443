//! `bootvault arcbox prepare|migrate`: arcbox-boot's layout (boot cache + bin dir), switched in
//! place through the arcbox crate (`bootvault-arcbox`, arcbox-boot's API).

use super::{CmdResult, EXIT_FAILED, EXIT_USAGE, Failure, finish_output, out, out_json};
use bootvault::Verdict;
use bootvault_arcbox::Error;
use bootvault_arcbox::asset_manager::{AssetManager, AssetManagerConfig, AssetStatus};
use clap::{Args, Subcommand};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Subcommand, Debug)]
pub enum ArcboxCommand {
    /// Fetch the manifest if needed, then make kernel, rootfs and binaries ready where
    /// arcbox-boot puts them (a switched install is hashed once: nothing in the share vouches).
    Prepare(PrepareArgs),
    /// Trust what arcbox-boot left: import its .verified.json files (version dir and bin dir)
    /// and adopt the cached manifest.json, without fetching or hashing. This trusts whoever
    /// could write those files (the guest can write the share): run it only on an install you
    /// trust. Reports what a prepare will trust.
    Migrate(LayoutArgs),
}

/// The arcbox-boot layout.
#[derive(Args, Debug, Clone)]
pub struct LayoutArgs {
    /// arcbox-boot's cache_dir (holds VERSION/{kernel, rootfs.erofs, manifest.json}).
    #[arg(long, value_name = "DIR", env = "BOOTVAULT_ARCBOX_CACHE_DIR")]
    cache_dir: PathBuf,
    /// The bin dir (prepare_binaries' dest_dir); install_dir entries go to its siblings.
    #[arg(long, value_name = "DIR", env = "BOOTVAULT_ARCBOX_BIN_DIR")]
    bin_dir: PathBuf,
    /// Boot asset version.
    #[arg(long, value_name = "V", env = "BOOTVAULT_ARCBOX_VERSION")]
    version: String,
    /// Architecture (x86_64 or arm64); default: the host's.
    #[arg(long, value_name = "A", env = "BOOTVAULT_ARCH")]
    arch: Option<String>,
    /// Base of the state dirs (default: $XDG_STATE_HOME/bootvault/arcbox or
    /// ~/.local/state/bootvault/arcbox); never inside the share.
    #[arg(long, value_name = "DIR", env = "BOOTVAULT_ARCBOX_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Print exactly one JSON object on stdout.
    #[arg(long, env = "BOOTVAULT_JSON", value_parser = clap::builder::BoolishValueParser::new())]
    json: bool,
}

#[derive(Args, Debug)]
pub struct PrepareArgs {
    #[command(flatten)]
    layout: LayoutArgs,
    /// CDN base URL (the manifest is at URL/asset/vVERSION/manifest.json).
    #[arg(long, value_name = "URL", env = "BOOTVAULT_ARCBOX_CDN")]
    cdn: String,
    /// Never touch the network.
    #[arg(long, env = "BOOTVAULT_OFFLINE", value_parser = clap::builder::BoolishValueParser::new())]
    offline: bool,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let code = match &e {
            Error::InvalidConfig(_)
            | Error::StateInShare { .. }
            | Error::ArchNotFound(_)
            | Error::UnsupportedSchema { .. } => EXIT_USAGE,
            Error::Store(inner) => super::exit_code(inner),
            _ => EXIT_FAILED,
        };
        Failure {
            code,
            message: e.to_string(),
        }
    }
}

fn manager(l: &LayoutArgs, cdn: Option<&str>, offline: bool) -> Result<AssetManager, Failure> {
    let mut config = AssetManagerConfig {
        version: l.version.clone(),
        cache_dir: l.cache_dir.clone(),
        ..AssetManagerConfig::default()
    };
    if let Some(cdn) = cdn {
        config.cdn_base_url = cdn.to_string();
    }
    if let Some(a) = &l.arch {
        config.arch = a.clone();
    }
    let mut m = AssetManager::new(config)?.offline(offline);
    if let Some(s) = &l.state_dir {
        m = m.with_state_dir(s);
    }
    Ok(m)
}

fn asset_json(a: &AssetStatus) -> serde_json::Value {
    json!({
        "name": a.name,
        "path": a.path,
        "outcome": a.outcome.as_str(),
        "bytes_hashed": a.bytes_hashed,
        "bytes_downloaded": a.bytes_downloaded,
        "bytes_copied": a.bytes_copied,
    })
}

pub fn run(c: ArcboxCommand) -> CmdResult {
    match c {
        ArcboxCommand::Prepare(a) => prepare(a),
        ArcboxCommand::Migrate(a) => migrate(a),
    }
}

fn prepare(a: PrepareArgs) -> CmdResult {
    let start = Instant::now();
    let m = manager(&a.layout, Some(&a.cdn), a.offline)?;
    let (prepared, mut assets) = m.prepare_blocking(None)?;
    assets.extend(m.prepare_binaries_blocking(&a.layout.bin_dir, None)?);
    let elapsed = start.elapsed();
    let printed = if a.layout.json {
        out_json(&json!({
            "version": prepared.version,
            "kernel": prepared.kernel,
            "rootfs": prepared.rootfs,
            "kernel_cmdline": prepared.kernel_cmdline,
            "built_at": prepared.manifest.built_at,
            "elapsed_ms": (elapsed.as_secs_f64() * 1e6).round() / 1e3,
            "assets": assets.iter().map(asset_json).collect::<Vec<_>>(),
        }))
    } else {
        let mut s = String::new();
        for x in &assets {
            s.push_str(&format!(
                "{:<24} {:<11} {:>14} {:>14}  {}\n",
                x.name,
                x.outcome.as_str(),
                super::prepare::human_bytes(x.bytes_hashed),
                super::prepare::human_bytes(x.bytes_downloaded),
                x.path.display()
            ));
        }
        s.push_str(&format!(
            "kernel_cmdline: {}\n{} assets, version {} in {:.2} ms",
            prepared.kernel_cmdline,
            assets.len(),
            prepared.version,
            elapsed.as_secs_f64() * 1e3
        ));
        out(&s)
    };
    finish_output(printed, 0)
}

fn migrate(a: LayoutArgs) -> CmdResult {
    let m = manager(&a, None, true)?;
    let imports = m.migrate(&a.bin_dir)?;
    // Offline: the manifest just adopted (a missing one fails here, naming it).
    let manifest = m.manifest()?;
    let checks = m.check(&a.bin_dir)?;
    let printed = if a.json {
        out_json(&json!({
            "version": a.version,
            "kernel_cmdline": manifest.targets.get(&m.config().arch).map(|t| t.kernel_cmdline.as_str()),
            "imports": imports.iter().map(|i| json!({
                "legacy": i.legacy,
                "imported": i.imported,
                "skipped": i.skipped.iter().map(|(k, why)| json!({"key": k, "reason": why})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "assets": checks.iter().map(|(name, path, v)| json!({
                "name": name,
                "path": path,
                "state": check_state(v),
                "reason": v.reason(),
            })).collect::<Vec<_>>(),
        }))
    } else {
        let mut s = String::new();
        for i in &imports {
            s.push_str(&format!(
                "imported {} entries from {}\n",
                i.imported.len(),
                i.legacy.display()
            ));
            for (k, why) in &i.skipped {
                s.push_str(&format!("  skipped {k}: {why}\n"));
            }
        }
        let trusted = checks
            .iter()
            .filter(|c| matches!(check_state(&c.2), "cached" | "mode"))
            .count();
        s.push_str(&format!(
            "{trusted} of {} assets will be trusted without reading them",
            checks.len()
        ));
        out(&s)
    };
    finish_output(printed, 0)
}

/// What a prepare will do with an asset: `cached` (nothing read), `mode` (nothing read, the
/// mode put back), or the verdict's state (`stale`, `missing`, `unrecorded`: hashed or fetched).
fn check_state(v: &Verdict) -> &'static str {
    match v {
        Verdict::Fresh => "cached",
        Verdict::Mode { .. } => "mode",
        other => other.state(),
    }
}
