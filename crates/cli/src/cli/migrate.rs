//! `bootvault migrate`: the operator's explicit trust of an arcbox-boot `.verified.json` (a
//! prepare never imports it: whoever can write ROOT can write it).

use super::{Access, CmdResult, StoreArgs, finish_output, out, out_json};
use clap::Args;
use clap::builder::BoolishValueParser;
use serde_json::json;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct MigrateArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The legacy cache (default ROOT/.verified.json). It is left in place.
    #[arg(long, value_name = "FILE", env = "BOOTVAULT_LEGACY")]
    legacy: Option<PathBuf>,
    /// JSON output.
    #[arg(long, env = "BOOTVAULT_JSON", value_parser = BoolishValueParser::new())]
    json: bool,
}

pub fn run(a: MigrateArgs) -> CmdResult {
    let store = a.store.open(Access::Write)?;
    let file = a
        .legacy
        .clone()
        .unwrap_or_else(|| store.root().join(bootvault::LEGACY_FILE_NAME));
    let report = store.import_legacy(&file)?;
    let printed = if a.json {
        out_json(&json!({
            "legacy": file,
            "imported": report.imported,
            "skipped": report.skipped.iter().map(|(k, why)| json!({"key": k, "reason": why})).collect::<Vec<_>>(),
        }))
    } else {
        let mut s = format!(
            "imported {} entries from {} (trusted as whoever wrote that file)",
            report.imported.len(),
            file.display()
        );
        for (k, why) in &report.skipped {
            s.push_str(&format!("\nskipped {k}: {why}"));
        }
        out(&s)
    };
    finish_output(printed, 0)
}
