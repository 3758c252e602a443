//! Import of arcbox-boot's `.verified.json` (format of arcbox-boot 0.5.2):
//! `{"entries": {"<path string>": {"sha256", "size", "mtime_secs", "mtime_nanos"}}}`.
//!
//! Keys are the path strings the host passed: absolute in practice, relative to the host's
//! working directory when it was given a relative `cache_dir` (see [`resolve_key`]). An entry is
//! imported only when it names a file inside ROOT whose current size and mtime still match and
//! whose ctime is not newer than the cache file's mtime; the record then takes the file's
//! current ctime, inode and device, and method `legacy-import`. Trust still requires the
//! manifest to expect that same digest (`judge` compares it). The legacy file is left in place.
//!
//! The ctime rule: arcbox-boot rewrites its cache after every call that verified or downloaded
//! something, and a download's rename or chmod happens before that save. A file whose ctime is
//! newer than the cache's mtime was therefore touched after arcbox-boot last vouched for it (a
//! same-size rewrite with the mtime put back is exactly that): it is re-hashed, not imported.
//! The rule cannot see a change made before a later save of the same cache file (arcbox-boot
//! rewrites the whole file, so its mtime moves for every entry); that is arcbox-boot's own
//! size + mtime trust, and no weaker.

use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::ledger::{Method, Record};
use crate::stamp::{FileKind, Stamp};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Component, Path};

/// The legacy cache's file name, next to the assets.
pub const FILE_NAME: &str = ".verified.json";

#[derive(Deserialize)]
struct LegacyFile {
    entries: BTreeMap<String, LegacyEntry>,
}

#[derive(Deserialize)]
struct LegacyEntry {
    sha256: String,
    size: u64,
    mtime_secs: i64,
    #[serde(default)]
    mtime_nanos: i64,
}

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// Entries turned into records.
    pub imported: Vec<String>,
    /// Entries skipped, with why.
    pub skipped: Vec<(String, String)>,
}

/// Reads `legacy` and decides, per entry, what to import. Does not write.
pub fn plan(root: &Path, legacy: &Path) -> Result<(Vec<(String, Record)>, ImportReport)> {
    let text =
        crate::manifest::read_text(legacy, crate::manifest::MAX_MANIFEST_BYTES).map_err(|e| {
            Error::Legacy {
                path: legacy.to_path_buf(),
                message: format!("cannot read: {e}"),
            }
        })?;
    let file: LegacyFile = serde_json::from_str(&text).map_err(|e| Error::Legacy {
        path: legacy.to_path_buf(),
        message: format!("not an arcbox-boot .verified.json: {e}"),
    })?;
    let canon_root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let legacy_dir = legacy.parent().unwrap_or(root);
    let cache_mtime = Stamp::of_path(legacy)
        .ok()
        .flatten()
        .map(|s| s.mtime_ns)
        .ok_or_else(|| Error::Legacy {
            path: legacy.to_path_buf(),
            message: "cannot stat the cache file".into(),
        })?;
    let cwd = std::env::current_dir().ok();
    let now = crate::stamp::wall_now_ns();
    let mut records = Vec::new();
    let mut report = ImportReport::default();
    for (key, entry) in file.entries {
        let rel = match resolve_key(&key, root, &canon_root, legacy_dir, cwd.as_deref()) {
            Some(r) => r,
            None => {
                report.skipped.push((key, "outside ROOT".into()));
                continue;
            }
        };
        // A path through a symlinked parent that leaves ROOT is one a prepare refuses as
        // unsafe: it is never imported (it would vouch for a file outside the store).
        if crate::place::resolve(root, &rel, &rel).is_err() {
            report.skipped.push((
                key,
                "unsafe path: a parent is a symlink leading outside ROOT".into(),
            ));
            continue;
        }
        let digest = match Sha256Digest::from_hex(&entry.sha256) {
            Ok(d) => d,
            Err(why) => {
                report.skipped.push((key, why.to_string()));
                continue;
            }
        };
        let stamp = match Stamp::of_path(&root.join(&rel)) {
            Ok(Some(s)) if s.kind == FileKind::Regular => s,
            _ => {
                report.skipped.push((key, "no regular file there".into()));
                continue;
            }
        };
        let mtime = entry.mtime_secs.saturating_mul(1_000_000_000) + entry.mtime_nanos;
        if stamp.size != entry.size || stamp.mtime_ns != mtime {
            report
                .skipped
                .push((key, "size or mtime changed since it was cached".into()));
            continue;
        }
        if stamp.ctime_ns > cache_mtime {
            report.skipped.push((
                key,
                "changed after the cache was written (ctime newer than the cache file): re-hashed"
                    .into(),
            ));
            continue;
        }
        let record = Record::new(digest, &stamp, "legacy", now, Method::LegacyImport, false);
        report.imported.push(rel.clone());
        records.push((rel, record));
    }
    Ok((records, report))
}

/// The path under ROOT (`/`-separated) that a cache key names, if it names a regular file there.
///
/// An absolute key is taken as is (against ROOT and its canonical form). A relative key is what
/// arcbox-boot was given joined with the file name: relative to the host's working directory,
/// which bootvault may not share. So it is tried, in order: (1) as the tail of a path that ends
/// inside ROOT, its leading components matching ROOT's last components (`boot/0.6.0/kernel`
/// with ROOT `/home/u/boot`); (2) against the current directory; (3) against the directory
/// holding the cache. The first candidate that is a regular file inside ROOT wins; the size,
/// mtime and ctime checks then apply as for any key.
pub fn resolve_key(
    key: &str,
    root: &Path,
    canon_root: &Path,
    legacy_dir: &Path,
    cwd: Option<&Path>,
) -> Option<String> {
    let p = Path::new(key);
    if p.is_absolute() {
        return relative_to(p, root).or_else(|| relative_to(p, canon_root));
    }
    let exists = |rel: &String| {
        matches!(
            Stamp::of_path(&root.join(rel)),
            Ok(Some(s)) if s.kind == FileKind::Regular
        )
    };
    let key_parts: Vec<&str> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect();
    let plain = p
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if plain {
        for base in [root, canon_root] {
            let root_parts: Vec<&str> = base
                .components()
                .filter_map(|c| match c {
                    Component::Normal(s) => s.to_str(),
                    _ => None,
                })
                .collect();
            // Split the key into a prefix (ROOT's tail) and the path under ROOT.
            for split in (0..key_parts.len()).rev() {
                let (prefix, rest) = key_parts.split_at(split);
                if root_parts.ends_with(prefix) {
                    let rel = rest.join("/");
                    if exists(&rel) {
                        return Some(rel);
                    }
                }
            }
        }
    }
    for dir in cwd.into_iter().chain([legacy_dir]) {
        let abs = normalize(&dir.join(p));
        if let Some(rel) = relative_to(&abs, root).or_else(|| relative_to(&abs, canon_root))
            && exists(&rel)
        {
            return Some(rel);
        }
    }
    None
}

/// Removes `.` and folds `..` lexically (the key is a path string, not a walk of the disk).
fn normalize(p: &Path) -> std::path::PathBuf {
    let mut out = std::path::PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// `abs` relative to `root` as a `/`-separated string, if it lies strictly inside.
fn relative_to(abs: &Path, root: &Path) -> Option<String> {
    let rel = abs.strip_prefix(root).ok()?;
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str()?.to_string()),
            _ => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}
