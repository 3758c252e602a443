//! `bootvault gc`: drop files and records that the manifest does not name.

use super::{Access, CmdResult, ManifestArgs, StoreArgs, finish_output, out, out_json};
use clap::Args;
use clap::builder::BoolishValueParser;
use serde_json::json;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct GcArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The manifest whose assets are kept.
    #[arg(long, value_name = "FILE", env = "BOOTVAULT_MANIFEST")]
    manifest: PathBuf,
    #[command(flatten)]
    manifest_args: ManifestArgs,
    /// Only say what would be removed.
    #[arg(long, env = "BOOTVAULT_DRY_RUN", value_parser = BoolishValueParser::new())]
    dry_run: bool,
    /// JSON output.
    #[arg(long, env = "BOOTVAULT_JSON", value_parser = BoolishValueParser::new())]
    json: bool,
}

pub fn run(a: GcArgs) -> CmdResult {
    let manifest = a.manifest_args.load(&a.manifest)?;
    let access = if a.dry_run {
        Access::Read
    } else {
        Access::Write
    };
    let store = a.store.open(access)?;
    let report = store.gc(&manifest, a.dry_run)?;
    let printed = if a.json {
        out_json(&json!({
            "dry_run": a.dry_run, "files": report.files, "records": report.records,
            "partials": report.partials, "foreign": report.foreign, "changed": report.changed,
            "skipped": report.skipped.iter()
                .map(|(path, why)| json!({"path": path, "why": why}))
                .collect::<Vec<_>>(),
        }))
    } else {
        let verb = if a.dry_run { "would remove" } else { "removed" };
        let mut s = String::new();
        for f in &report.files {
            s.push_str(&format!("{verb} file {f}\n"));
        }
        for r in &report.records {
            s.push_str(&format!("{verb} record {r}\n"));
        }
        for p in &report.partials {
            s.push_str(&format!("{verb} abandoned partial download {p}\n"));
        }
        for f in &report.foreign {
            s.push_str(&format!(
                "kept foreign file {f} (not placed by bootvault)\n"
            ));
        }
        for f in &report.changed {
            s.push_str(&format!(
                "kept changed file {f} (modified since bootvault recorded it)\n"
            ));
        }
        for (p, why) in &report.skipped {
            s.push_str(&format!("skipped {p}: {why}\n"));
        }
        s.push_str(&format!(
            "{verb} {} files and {} records; kept {} foreign files",
            report.files.len(),
            report.records.len(),
            report.foreign.len() + report.changed.len()
        ));
        out(&s)
    };
    finish_output(printed, 0)
}
