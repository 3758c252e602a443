//! The first stage of a prepare, and the warm check: what is on disk and in the ledger now,
//! read without writing anything.

use super::judge::{Expected, judge};
use super::plan::Observed;
use crate::context::Context;
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::ledger::LedgerState;
use crate::manifest::{Manifest, Policy};
use crate::stamp::Stamp;
use std::collections::HashMap;
use std::path::PathBuf;

/// Reads what planning needs, writing nothing: one `lstat` per asset relative to a
/// descriptor of ROOT, every record in one read transaction, and the fs-verity measurement
/// of files whose record holds one.
pub(crate) fn observe(ctx: &Context, manifest: &Manifest) -> (Vec<Observed>, LedgerState) {
    let root_fd = crate::sys::open_dir_for_stat(&ctx.root).ok();
    let lives: Vec<Option<Stamp>> = manifest
        .assets
        .iter()
        .map(|a| match &root_fd {
            Some(fd) => Stamp::of_path_at(fd, &a.path),
            None => Stamp::of_path(&ctx.root.join(&a.path)).ok().flatten(),
        })
        .collect();
    let keys: Vec<&str> = manifest.assets.iter().map(|a| a.path.as_str()).collect();
    let (records, state) = ctx.ledger.read_many(&keys);
    let observed = manifest
        .assets
        .iter()
        .zip(lives)
        .zip(records)
        .map(|((asset, live), record)| {
            // Only a record with a verity digest needs a measurement (and the path).
            let verity = if record.as_ref().is_some_and(|r| r.verity.is_some()) {
                super::execute::live_verity(
                    &ctx.root.join(&asset.path),
                    record.as_ref(),
                    live.as_ref(),
                )
            } else {
                None
            };
            Observed {
                record,
                live,
                verity,
            }
        })
        .collect();
    (observed, state)
}

/// No asset may live inside the state dir, wherever it is (with `--state-dir ROOT`, an
/// asset `ledger.redb` would replace the ledger). Lexical, against where the state dir
/// lies under ROOT (worked out once, at open), so the warm path pays no syscall for it.
pub(crate) fn refuse_state_paths(ctx: &Context, manifest: &Manifest) -> Result<()> {
    let Some(rel) = &ctx.state_rel else {
        return Ok(());
    };
    for a in &manifest.assets {
        let inside = rel.is_empty()
            || a.path == *rel
            || a.path.starts_with(&format!("{rel}/"))
            || rel.starts_with(&format!("{}/", a.path));
        if inside {
            return Err(Error::Manifest {
                origin: "<store>".into(),
                message: format!(
                    "asset {}: path {:?} lies inside the state dir {} (or holds it)",
                    a.name,
                    a.path,
                    ctx.state.path().display()
                ),
            });
        }
    }
    Ok(())
}

/// Verified files in the store that could donate their bytes to an absent asset: every
/// record whose file still matches it, keyed by digest. Only read when something is absent.
pub(crate) fn donors(ctx: &Context, wanted: &[Sha256Digest]) -> HashMap<Sha256Digest, PathBuf> {
    let mut out = HashMap::new();
    if wanted.is_empty() {
        return out;
    }
    let (records, _) = ctx.ledger.all();
    for (key, record) in records {
        if !wanted.contains(&record.sha256) || out.contains_key(&record.sha256) {
            continue;
        }
        if crate::asset_path::validate_path(&key).is_err() {
            continue;
        }
        let path = ctx.root.join(&key);
        let Ok(Some(live)) = Stamp::of_path(&path) else {
            continue;
        };
        let expected = Expected {
            sha256: record.sha256,
            size: None,
            mode: live.perm,
        };
        // Cached policy: the copy re-hashes every byte, so the record only has to say
        // which file is worth trying.
        if judge(Some(&record), Some(&live), &expected, Policy::Cached, None).is_trusted()
            || record.verity.is_some()
        {
            out.insert(record.sha256, path);
        }
    }
    out
}

/// [`Store::is_fresh`], with the live stamp of every asset (in manifest order) when all are
/// vouched for. A file whose `lstat` still equals its stamp here is the file that was
/// judged: its inode, size, mtime and ctime (which user space cannot set back) are
/// unchanged, so a host may keep trusting it on that one `lstat` alone.
pub(crate) fn fresh_stamps(ctx: &Context, manifest: &Manifest) -> Option<Vec<Stamp>> {
    let (observed, _) = observe(ctx, manifest);
    let mut out = Vec::with_capacity(observed.len());
    for (asset, o) in manifest.assets.iter().zip(observed) {
        let fresh = judge(
            o.record.as_ref(),
            o.live.as_ref(),
            &Expected::of(asset),
            ctx.policy(asset),
            o.verity.as_ref(),
        )
        .is_trusted();
        match (fresh, o.live) {
            (true, Some(live)) => out.push(live),
            _ => return None,
        }
    }
    Some(out)
}
