//! `bootvault prepare --dry-run`: the plan a prepare would follow, printed as is.

use super::prepare::human_bytes;
use super::{CmdResult, StoreArgs, finish_output, out, out_json};
use bootvault::{Action, Manifest, Policy, PrepareOptions};
use serde_json::json;

pub fn dry_run(
    store: &StoreArgs,
    manifest: &Manifest,
    verify: Option<&str>,
    json: bool,
    one_line: bool,
) -> CmdResult {
    // Look only: a missing ROOT is not created, but a prepare would create it, so its plan is
    // shown as for an empty ROOT (every asset fetched).
    let root = store.root()?;
    let absent = std::fs::symlink_metadata(&root).is_err();
    let store = if absent {
        store.builder()?.create(false).absent_root_ok(true).open()?
    } else {
        store.open(super::Access::Read)?
    };
    let mut opts = PrepareOptions::new();
    if let Some(p) = verify.and_then(Policy::parse) {
        opts = opts.verify(p);
    }
    let plan = store.plan(manifest, &opts)?;
    let rows: Vec<_> = plan
        .steps
        .iter()
        .map(|s| {
            let a = &manifest.assets[s.index];
            let mut v = json!({
                "name": a.name,
                "path": store.root().join(&a.path),
                "action": s.action.as_str(),
                "state": s.verdict.state(),
                "reason": s.reason(),
                "bytes_to_hash": s.bytes_to_hash,
                "bytes_to_fetch": s.bytes_to_fetch,
            });
            if let Action::Link { from } = &s.action {
                v["link_from"] = json!(from);
            }
            if let Some(why) = &s.no_patch {
                v["no_patch"] = json!(why);
            }
            if let Action::Patch { from, bytes_reused } = &s.action {
                v["patch_from"] = json!(from);
                v["bytes_reused"] = json!(bytes_reused);
            }
            v
        })
        .collect();
    let printed = if json {
        let v = json!({
            "dry_run": true,
            "root_exists": !absent,
            "manifest_version": manifest.version,
            "bytes_to_hash": plan.bytes_to_hash(),
            "bytes_to_fetch": plan.bytes_to_fetch(),
            "assets": rows,
        });
        if one_line {
            out(&v.to_string())
        } else {
            out_json(&v)
        }
    } else {
        let mut s = format!(
            "{:<24} {:<7} {:>12} {:>12}  {}\n",
            "ASSET", "ACTION", "TO HASH", "TO FETCH", "WHY"
        );
        for (step, row) in plan.steps.iter().zip(&rows) {
            s.push_str(&format!(
                "{:<24} {:<7} {:>12} {:>12}  {}\n",
                row["name"].as_str().unwrap_or(""),
                step.action.as_str(),
                human_bytes(step.bytes_to_hash),
                step.bytes_to_fetch
                    .map(human_bytes)
                    .unwrap_or_else(|| "unknown".into()),
                if step.action == Action::Cached {
                    String::new()
                } else {
                    step.reason()
                }
            ));
        }
        s.push_str(&format!(
            "dry run, manifest {}: {} to hash, {} to download; nothing was changed",
            manifest.version,
            human_bytes(plan.bytes_to_hash()),
            plan.bytes_to_fetch()
                .map(human_bytes)
                .unwrap_or_else(|| "an unknown number of bytes".into())
        ));
        if absent {
            s.push_str(&format!(
                "\n{} does not exist yet: prepare would create it",
                root.display()
            ));
        }
        out(&s)
    };
    finish_output(printed, 0)
}
