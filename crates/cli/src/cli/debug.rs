//! `bootvault debug ls|show|check|verify|why`: read-only views of the store.

use super::ui::{human_bytes, local_time, local_time_ns};
use super::{
    Access, CmdResult, EXIT_FAILED, ManifestArgs, StoreArgs, finish_output, out, out_json,
};
use bootvault::{Event, Manifest, Policy, Record, Stamp, VerifyState};
use clap::builder::BoolishValueParser;
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum DebugCommand {
    /// List every ledger record.
    Ls(LsArgs),
    /// One asset: its record, live stamp and recent events.
    Show(OneArgs),
    /// Stat every asset against its record (reads no content); exit 1 unless all are fresh.
    Check(ManifestOptArgs),
    /// Re-hash every asset (full read).
    Verify(ManifestOptArgs),
    /// Why an asset is (not) trusted: recent events and the live stamp diff.
    Why(OneArgs),
}

#[derive(Args, Debug)]
pub struct LsArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// JSON output.
    #[arg(long, env = "BOOTVAULT_JSON", value_parser = BoolishValueParser::new())]
    json: bool,
}

#[derive(Args, Debug)]
pub struct OneArgs {
    /// Asset name (with --manifest) or path relative to ROOT.
    #[arg(value_name = "NAME|PATH")]
    target: String,
    #[command(flatten)]
    opts: ManifestOptArgs,
}

#[derive(Args, Debug)]
pub struct ManifestOptArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Manifest (names and expected digests); without it, each ledger record is the reference.
    #[arg(long, value_name = "FILE", env = "BOOTVAULT_MANIFEST")]
    manifest: Option<PathBuf>,
    #[command(flatten)]
    manifest_args: ManifestArgs,
    /// JSON output.
    #[arg(long, env = "BOOTVAULT_JSON", value_parser = BoolishValueParser::new())]
    json: bool,
}

pub fn run(cmd: DebugCommand) -> CmdResult {
    match cmd {
        DebugCommand::Ls(a) => ls(a),
        DebugCommand::Show(a) => one(a, false),
        DebugCommand::Why(a) => one(a, true),
        DebugCommand::Check(a) => check(a),
        DebugCommand::Verify(a) => verify(a),
    }
}

pub fn record_json(path: &str, r: &Record) -> Value {
    json!({
        "path": path,
        "sha256": r.sha256.to_hex(),
        "size": r.size,
        "mtime_ns": r.mtime_ns,
        "ctime_ns": r.ctime_ns,
        "ino": r.ino,
        "dev": r.dev,
        "manifest_version": r.manifest_version,
        "verified_at_ns": r.verified_at_ns,
        "verified_at": local_time(r.verified_at_ns),
        "method": r.method.as_str(),
        "racy": r.racy,
    })
}

fn stamp_json(s: &Stamp) -> Value {
    json!({
        "size": s.size, "mtime_ns": s.mtime_ns, "ctime_ns": s.ctime_ns,
        "ino": s.ino, "dev": s.dev, "type": format!("{:?}", s.kind).to_lowercase(),
    })
}

fn event_json(e: &Event) -> Value {
    json!({
        "at_ns": e.at_ns, "at": local_time(e.at_ns), "path": e.path, "name": e.name, "outcome": e.outcome,
        "reason": e.reason, "manifest_version": e.manifest_version, "pid": e.pid,
    })
}

fn load(path: &Option<PathBuf>, args: &ManifestArgs) -> Result<Option<Manifest>, bootvault::Error> {
    path.as_ref().map(|p| args.load(p)).transpose()
}

fn ls(a: LsArgs) -> CmdResult {
    let store = a.store.open(Access::ReadLedger)?;
    let (records, _) = store.records();
    let manifests: Vec<Value> = store
        .manifests()
        .into_iter()
        .map(|(version, p)| {
            json!({"version": version, "source": p.source, "signed_by": p.signed_by,
                   "oci_digest": p.oci_digest, "recorded_at_ns": p.recorded_at_ns})
        })
        .collect();
    let printed = if a.json {
        out_json(&json!({
            "records": records.iter().map(|(p, r)| record_json(p, r)).collect::<Vec<_>>(),
            "manifests": manifests,
        }))
    } else {
        let mut s = format!(
            "{:<40} {:<14} {:>10} {:<12} {:<29} {}\n",
            "PATH", "METHOD", "SIZE", "SHA256", "VERIFIED AT", "MANIFEST"
        );
        for (p, r) in &records {
            s.push_str(&format!(
                "{:<40} {:<14} {:>10} {:<12} {:<29} {}{}\n",
                p,
                r.method.as_str(),
                human_bytes(r.size),
                &r.sha256.to_hex()[..12],
                local_time(r.verified_at_ns),
                r.manifest_version,
                if r.racy { " (racy)" } else { "" }
            ));
        }
        s.push_str(&format!(
            "{} records in {}",
            records.len(),
            store.ledger_path().display()
        ));
        out(&s)
    };
    finish_output(printed, 0)
}

fn check(a: ManifestOptArgs) -> CmdResult {
    let manifest = load(&a.manifest, &a.manifest_args)?;
    let store = a.store.open(Access::ReadLedger)?;
    // Stat only: judge by stamp under the `cached` policy, whatever the asset's own. Without a
    // manifest, each record is judged as `debug why` judges it (the library's one rule).
    let (inspections, _) = match &manifest {
        Some(m) => store.inspect(m, Some(Policy::Cached)),
        None => store.inspect_records(Policy::Cached),
    };
    let rows: Vec<Value> = inspections
        .iter()
        .map(|i| {
            json!({
                "name": i.asset.name, "path": i.asset.path,
                "state": i.verdict.state(), "changed": i.verdict.changed(),
            })
        })
        .collect();
    let printed = if a.json {
        out_json(&json!({ "assets": rows }))
    } else {
        let mut s = String::new();
        for i in &inspections {
            s.push_str(&format!(
                "{:<24} {:<11} {}\n",
                i.asset.name,
                i.verdict.state(),
                i.verdict.changed().join(",")
            ));
        }
        out(s.trim_end())
    };
    // Anything not fresh (stale, missing, unrecorded) would be re-hashed or fetched by the
    // next prepare: exit 1 so that a boot script can gate on it.
    let all_fresh = inspections.iter().all(|i| i.verdict.state() == "fresh");
    finish_output(printed, if all_fresh { 0 } else { EXIT_FAILED })
}

fn verify(a: ManifestOptArgs) -> CmdResult {
    let manifest = load(&a.manifest, &a.manifest_args)?;
    let store = a.store.open(Access::ReadLedger)?;
    // The manifest's assets, or one pseudo-asset per ledger record.
    let results = match &manifest {
        Some(m) => store.verify_all(m),
        None => store.verify_records(),
    };
    let mut bad = false;
    let rows: Vec<Value> = results
        .iter()
        .map(|(asset, _, r)| {
            let (state, actual) = match r {
                VerifyState::Ok(d) => ("ok", Some(d.to_hex())),
                VerifyState::Mismatch(d) => ("mismatch", Some(d.to_hex())),
                VerifyState::Missing => ("missing", None),
                _ => ("mismatch", None),
            };
            bad |= state != "ok";
            json!({ "name": asset.name, "path": asset.path, "state": state,
                    "expected": asset.sha256.to_hex(), "actual": actual })
        })
        .collect();
    let printed = if a.json {
        out_json(&json!({ "assets": rows }))
    } else {
        let mut s = String::new();
        for r in &rows {
            s.push_str(&format!(
                "{:<24} {:<9} {}\n",
                r["name"].as_str().unwrap_or(""),
                r["state"].as_str().unwrap_or(""),
                r["actual"].as_str().unwrap_or("-")
            ));
        }
        out(s.trim_end())
    };
    for r in rows.iter().filter(|r| r["state"] != "ok") {
        eprintln!(
            "bootvault: error: asset {}: {} at {}: expected {}, actual {}",
            r["name"].as_str().unwrap_or(""),
            r["state"].as_str().unwrap_or(""),
            r["path"].as_str().unwrap_or(""),
            r["expected"].as_str().unwrap_or(""),
            r["actual"].as_str().unwrap_or("none")
        );
    }
    finish_output(printed, if bad { EXIT_FAILED } else { 0 })
}

fn one(a: OneArgs, why: bool) -> CmdResult {
    let manifest = load(&a.opts.manifest, &a.opts.manifest_args)?;
    let store = a.opts.store.open(Access::ReadLedger)?;
    let Some(x) = store
        .explain(manifest.as_ref(), &a.target, if why { 20 } else { 10 })
        .map_err(|e| super::Failure::usage(e.to_string()))?
    else {
        return Err(super::Failure {
            code: super::EXIT_USAGE,
            message: format!(
                "{}: no such asset, record or file under {}",
                a.target,
                store.root().display()
            ),
        });
    };
    let (asset, rel, path, policy, verdict, record, live, events) = (
        x.asset, x.rel, x.path, x.policy, x.verdict, x.record, x.live, x.events,
    );
    let step = x.step;
    let diff: Vec<Value> = match (&record, &live) {
        (Some(r), Some(l)) => [
            ("size", json!(r.size), json!(l.size)),
            ("mtime_ns", json!(r.mtime_ns), json!(l.mtime_ns)),
            ("ctime_ns", json!(r.ctime_ns), json!(l.ctime_ns)),
            ("ino", json!(r.ino), json!(l.ino)),
            ("dev", json!(r.dev), json!(l.dev)),
        ]
        .into_iter()
        .filter(|(_, a, b)| a != b)
        .map(|(f, a, b)| json!({ "field": f, "recorded": a, "live": b }))
        .collect(),
        _ => Vec::new(),
    };
    let value = json!({
        "name": asset.as_ref().map(|x| x.name.clone()),
        "path": rel,
        "abs_path": path,
        "policy": policy.as_str(),
        "state": verdict.state(),
        "trusted": verdict.is_trusted(),
        "changed": verdict.changed(),
        "reason": verdict.reason(),
        "action": step.as_ref().map(|s| s.action.as_str()),
        "plan_reason": step.as_ref().map(|s| s.reason()),
        "record": record.as_ref().map(|r| record_json(&rel, r)),
        "live": live.as_ref().map(stamp_json),
        "diff": diff,
        "events": events.iter().map(event_json).collect::<Vec<_>>(),
    });
    let printed = if a.opts.json {
        out_json(&value)
    } else {
        let mut s = format!(
            "{} ({})\n  state:  {}\n  reason: {}\n",
            rel,
            path.display(),
            verdict.state(),
            verdict.reason()
        );
        if let Some(step) = &step {
            s.push_str(&format!(
                "  plan:   {} ({})\n",
                step.action.as_str(),
                step.reason()
            ));
        }
        match &record {
            Some(r) => s.push_str(&format!(
                "  record: sha256 {} size {} via {} at {} (manifest {}){}\n",
                r.sha256,
                human_bytes(r.size),
                r.method.as_str(),
                local_time(r.verified_at_ns),
                r.manifest_version,
                if r.racy { " racy" } else { "" }
            )),
            None => s.push_str("  record: none\n"),
        }
        for d in &diff {
            let field = d["field"].as_str().unwrap_or("");
            // Times read as times; the other fields as they are.
            let show = |v: &Value| match (field, v.as_i64()) {
                ("mtime_ns" | "ctime_ns", Some(ns)) => local_time_ns(ns),
                _ => v.to_string(),
            };
            s.push_str(&format!(
                "  diff:   {} recorded {} live {}\n",
                field.trim_end_matches("_ns"),
                show(&d["recorded"]),
                show(&d["live"])
            ));
        }
        for e in &events {
            s.push_str(&format!(
                "  event:  {} {} pid {}: {}\n",
                local_time(e.at_ns),
                e.outcome,
                e.pid,
                e.reason
            ));
        }
        out(s.trim_end())
    };
    finish_output(printed, 0)
}
