//! Import of arcbox-boot's `.verified.json` (format of arcbox-boot 0.5.2):
//! `{"entries": {"<path string>": {"sha256", "size", "mtime_secs", "mtime_nanos"}}}`.
//!
//! Keys are the path strings the host passed, absolute in practice. An entry is imported only
//! when it names a file inside ROOT whose current size and mtime still match; the record then
//! takes the file's current ctime, inode and device, and method `legacy-import`. Trust still
//! requires the manifest to expect that same digest (`judge` compares it). The legacy file is
//! left in place.

use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::ledger::{Method, RECORDS, Record};
use crate::stamp::{FileKind, Stamp};
use redb::WriteTransaction;
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
    let now = crate::stamp::wall_now_ns();
    let mut records = Vec::new();
    let mut report = ImportReport::default();
    for (key, entry) in file.entries {
        let p = Path::new(&key);
        // Relative keys were relative to the directory that held the cache.
        let abs = if p.is_absolute() {
            p.to_path_buf()
        } else {
            legacy_dir.join(p)
        };
        let rel = match relative_to(&abs, root).or_else(|| relative_to(&abs, &canon_root)) {
            Some(r) => r,
            None => {
                report.skipped.push((key, "outside ROOT".into()));
                continue;
            }
        };
        let digest = match Sha256Digest::from_hex(&entry.sha256) {
            Ok(d) => d,
            Err(why) => {
                report.skipped.push((key, why));
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
        let record = Record::new(digest, &stamp, "legacy", now, Method::LegacyImport, false);
        report.imported.push(rel.clone());
        records.push((rel, record));
    }
    Ok((records, report))
}

/// Imports `legacy` into the ledger inside `txn`; returns the number imported.
pub fn import(txn: &WriteTransaction, root: &Path, legacy: &Path) -> Result<usize> {
    let (records, _) = plan(root, legacy)?;
    let mut table = txn.open_table(RECORDS).map_err(|e| Error::Legacy {
        path: legacy.to_path_buf(),
        message: e.to_string(),
    })?;
    for (rel, record) in &records {
        table
            .insert(rel.as_str(), record.encode().as_slice())
            .map_err(|e| Error::Legacy {
                path: legacy.to_path_buf(),
                message: e.to_string(),
            })?;
    }
    Ok(records.len())
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
