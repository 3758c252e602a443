//! `bootvault status`: how big the store is and what its state holds.

use super::ui::{human_bytes, ui};
use super::{Access, CmdResult, StoreArgs, finish_output, out, out_json};
use clap::Args;
use clap::builder::BoolishValueParser;
use serde_json::json;

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// JSON output.
    #[arg(long, env = "BOOTVAULT_JSON", value_parser = BoolishValueParser::new())]
    json: bool,
}

pub fn run(a: StatusArgs) -> CmdResult {
    let store = a.store.open(Access::Read)?;
    let ledger_path = store.ledger_path().to_path_buf();
    let ledger_bytes = std::fs::metadata(&ledger_path).ok().map(|m| m.len());
    // Records, and how many of their files are still there with the recorded size.
    let records = if ledger_bytes.is_some() {
        store.records().0
    } else {
        Vec::new()
    };
    let recorded_bytes: u64 = records.iter().map(|(_, r)| r.size).sum();
    let present: Vec<u64> = records
        .iter()
        .filter_map(|(p, r)| {
            let m = std::fs::symlink_metadata(store.root().join(p)).ok()?;
            (m.is_file() && m.len() == r.size).then_some(m.len())
        })
        .collect();
    // Partial downloads live in STATE/tmp (their hash checkpoints are not counted).
    let usage = store.usage();
    let (partials, partial_bytes) = (usage.partials, usage.partial_bytes);
    let locks = usage.locks;
    let config = &ui().config;
    let value = json!({
        "root": store.root(),
        "state_dir": store.state_dir(),
        "ledger": ledger_bytes.map(|b| json!({
            "path": ledger_path,
            "bytes": b,
            "schema_version": store.schema_version(),
        })),
        "records": records.len(),
        "recorded_bytes": recorded_bytes,
        "present": present.len(),
        "present_bytes": present.iter().sum::<u64>(),
        "partials": partials,
        "partial_bytes": partial_bytes,
        "locks": locks,
        "config": {
            "path": ui().config_path,
            "registry_mirrors": config.registry_mirrors,
            "trusted_keys": config.trusted_keys,
        },
    });
    let printed = if a.json {
        out_json(&value)
    } else {
        let mut s = format!(
            "root:      {}\nstate dir: {}\n",
            store.root().display(),
            store.state_dir().display()
        );
        match ledger_bytes {
            Some(b) => s.push_str(&format!(
                "ledger:    {} ({}, schema {})\n",
                ledger_path.display(),
                human_bytes(b),
                store.schema_version()
            )),
            None => s.push_str("ledger:    none (nothing prepared here yet)\n"),
        }
        s.push_str(&format!(
            "records:   {} ({})\npresent:   {} files ({}) match their record's size\npartials:  {} files ({}) in {}\nconfig:    {}",
            records.len(),
            human_bytes(recorded_bytes),
            present.len(),
            human_bytes(present.iter().sum()),
            partials,
            human_bytes(partial_bytes),
            usage.tmp_dir.display(),
            ui().config_path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "none".into()),
        ));
        out(&s)
    };
    finish_output(printed, 0)
}
