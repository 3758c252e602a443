//! Looking at a store without changing it (`debug ls/show/check/verify/why`), and collecting
//! what it no longer needs (`gc`).

use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::judge::{Expected, Verdict, judge};
use crate::ledger::{Event, LedgerState, Record};
use crate::manifest::{Asset, Manifest, Policy};
use crate::place;
use crate::plan::{Observed, Step};
use crate::stamp::Stamp;
use crate::store::{PrepareOptions, Store};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// One asset's live view: where it is, its stamp, its record, the verdict.
#[derive(Clone, Debug)]
pub struct Inspection {
    /// The manifest asset.
    pub asset: Asset,
    /// Absolute path.
    pub path: PathBuf,
    /// `lstat` of the path.
    pub live: Option<Stamp>,
    /// The ledger record.
    pub record: Option<Record>,
    /// What `judge` says (with the asset's policy, or the one asked for).
    pub verdict: Verdict,
}

/// Why an asset is (not) trusted: `debug show` and `debug why`.
#[derive(Clone, Debug)]
pub struct Explanation {
    /// The asset, when a manifest named it.
    pub asset: Option<Asset>,
    /// Path relative to ROOT.
    pub rel: String,
    /// Absolute path.
    pub path: PathBuf,
    /// The policy that applies.
    pub policy: Policy,
    /// The trust decision (the same `judge` a prepare uses).
    pub verdict: Verdict,
    /// The step a prepare would take now, when a manifest named the asset.
    pub step: Option<Step>,
    /// The ledger record.
    pub record: Option<Record>,
    /// The live stamp.
    pub live: Option<Stamp>,
    /// Recent events for the path, newest first.
    pub events: Vec<Event>,
}

/// What `debug verify` found for one asset.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyState {
    /// The content hashes to the expected digest.
    Ok(Sha256Digest),
    /// The content hashes to another digest.
    Mismatch(Sha256Digest),
    /// Nothing is at the path.
    Missing,
    /// The path holds something that is not a regular file, or could not be read.
    Unreadable(String),
}

/// What `gc` removed (or would remove), and what it kept because bootvault does not own it.
#[derive(Clone, Debug, Default)]
pub struct GcReport {
    /// Files bootvault recorded that the manifest no longer names (relative to ROOT).
    pub files: Vec<String>,
    /// Records of paths the manifest no longer names.
    pub records: Vec<String>,
    /// Files under ROOT that bootvault neither placed nor recorded: kept.
    pub foreign: Vec<String>,
    /// Recorded files that changed since they were recorded (someone else wrote them): kept.
    pub changed: Vec<String>,
    /// Partial downloads nobody owns and no manifest asset will resume.
    pub partials: Vec<String>,
}

/// Sizes of the store's parts: `bootvault status`.
#[derive(Clone, Debug, Default)]
pub struct Usage {
    /// Records in the ledger.
    pub records: usize,
    /// Bytes of the recorded files that are present.
    pub recorded_bytes: u64,
    /// Size of the ledger file.
    pub ledger_bytes: u64,
    /// Partial downloads in the state dir, and their bytes.
    pub partials: usize,
    /// Bytes of the partial downloads.
    pub partial_bytes: u64,
    /// What the ledger read found.
    pub ledger: LedgerState,
}

impl Store {
    /// Every record, sorted by path, and what the read found.
    pub fn records(&self) -> (Vec<(String, Record)>, LedgerState) {
        self.ledger().all()
    }

    /// Where each manifest version came from and which key vouched for it.
    pub fn manifests(&self) -> Vec<(String, crate::ledger::Provenance)> {
        self.ledger().manifests()
    }

    /// Recent events, newest first, optionally for one path.
    pub fn events(&self, path: Option<&str>, limit: usize) -> Vec<Event> {
        self.ledger().events(path, limit)
    }

    /// The ledger's schema version on disk (0 when absent or unreadable).
    pub fn schema_version(&self) -> u64 {
        self.ledger().schema_version()
    }

    /// Imports an arcbox-boot `.verified.json` into the ledger (see [`crate::migrations`]).
    pub fn import_legacy(&self, legacy: &Path) -> Result<crate::migrations::legacy::ImportReport> {
        self.ledger().import_legacy(legacy)
    }

    /// Stats every asset and reads every record in one read transaction; judges each with
    /// `policy` (or the asset's own). Reads only.
    pub fn inspect(
        &self,
        manifest: &Manifest,
        policy: Option<Policy>,
    ) -> (Vec<Inspection>, LedgerState) {
        let (observed, state) = self.observe(manifest);
        let out = manifest
            .assets
            .iter()
            .zip(observed)
            .map(
                |(
                    asset,
                    Observed {
                        record,
                        live,
                        verity,
                    },
                )| {
                    let p = policy.unwrap_or(asset.verify);
                    let verdict = judge(
                        record.as_ref(),
                        live.as_ref(),
                        &Expected::of(asset),
                        p,
                        verity.as_ref(),
                    );
                    Inspection {
                        asset: asset.clone(),
                        path: self.root().join(&asset.path),
                        live,
                        record,
                        verdict,
                    }
                },
            )
            .collect();
        (out, state)
    }

    /// Why the asset named `target` (a manifest asset name or path, or a path relative to
    /// ROOT) is (not) trusted, and what a prepare would do. `None` when nothing is known of it.
    pub fn explain(
        &self,
        manifest: Option<&Manifest>,
        target: &str,
        events: usize,
    ) -> Result<Option<Explanation>> {
        let asset = manifest.and_then(|m| m.find(target)).cloned();
        let mut rel = asset
            .as_ref()
            .map(|x| x.path.clone())
            .unwrap_or_else(|| target.trim_start_matches("./").to_string());
        // Not a manifest asset, and nothing recorded or present at it as a path: an asset name
        // the ledger's events know.
        if asset.is_none()
            && Stamp::of_path(&self.root().join(&rel))
                .ok()
                .flatten()
                .is_none()
            && self
                .ledger()
                .read_many(&[rel.as_str()])
                .0
                .pop()
                .flatten()
                .is_none()
            && let Some(p) = self.ledger().path_of_name(target)
        {
            rel = p;
        }
        crate::manifest::validate_path(&rel).map_err(|why| Error::Manifest {
            origin: "<debug>".into(),
            message: format!("{target}: {why}"),
        })?;
        let path = self.root().join(&rel);
        let live = Stamp::of_path(&path).ok().flatten();
        let record = self.ledger().read_many(&[rel.as_str()]).0.pop().flatten();
        if asset.is_none() && record.is_none() && live.is_none() {
            return Ok(None);
        }
        let step = match (&asset, manifest) {
            (Some(a), Some(m)) => {
                let plan = self.plan(m, &PrepareOptions::new().only([a.name.clone()]))?;
                plan.steps.into_iter().next()
            }
            _ => None,
        };
        let policy = asset.as_ref().map(|x| x.verify).unwrap_or(Policy::Cached);
        let verdict = match &step {
            Some(s) => s.verdict.clone(),
            None => match (&record, &live) {
                (Some(r), _) => {
                    let verity = r
                        .verity
                        .and_then(|_| place::open_nofollow(&path).ok())
                        .and_then(|f| crate::verity::measure(&f));
                    let mode = live.map(|l| l.perm).unwrap_or(0);
                    let expected = Expected {
                        sha256: r.sha256,
                        size: None,
                        mode,
                    };
                    judge(Some(r), live.as_ref(), &expected, policy, verity.as_ref())
                }
                (None, Some(_)) => Verdict::Unrecorded,
                (None, None) => Verdict::Missing,
            },
        };
        Ok(Some(Explanation {
            asset,
            events: self.ledger().events(Some(&rel), events),
            rel,
            path,
            policy,
            verdict,
            step,
            record,
            live,
        }))
    }

    /// `debug verify`: re-hashes every asset, reading content, writing nothing.
    pub fn verify_all(&self, manifest: &Manifest) -> Vec<(Asset, PathBuf, VerifyState)> {
        manifest
            .assets
            .iter()
            .map(|a| {
                let p = self.root().join(&a.path);
                let r = match std::fs::symlink_metadata(&p) {
                    Err(_) => VerifyState::Missing,
                    Ok(m) if !m.is_file() => VerifyState::Unreadable("not a regular file".into()),
                    Ok(_) => match place::hash_in_place(&p, &a.name, &mut |_| {}) {
                        Ok(h) if h.digest == a.sha256 => VerifyState::Ok(h.digest),
                        Ok(h) => VerifyState::Mismatch(h.digest),
                        Err(e) => VerifyState::Unreadable(e.to_string()),
                    },
                };
                (a.clone(), p, r)
            })
            .collect()
    }

    /// `gc`: removes the files and records of paths that `manifest` no longer names, but only
    /// files bootvault recorded and that still match their record; anything else under ROOT
    /// is foreign and kept. Partial downloads nobody owns are removed too. Removes nothing
    /// when `dry_run`.
    pub fn gc(&self, manifest: &Manifest, dry_run: bool) -> Result<GcReport> {
        let keep: HashSet<&str> = manifest.assets.iter().map(|a| a.path.as_str()).collect();
        let (records, _) = self.ledger().all();
        let recorded: HashSet<&str> = records.iter().map(|(k, _)| k.as_str()).collect();
        let mut report = GcReport::default();
        for (key, record) in &records {
            if keep.contains(key.as_str()) {
                continue;
            }
            report.records.push(key.clone());
            if crate::manifest::validate_path(key).is_err() {
                continue;
            }
            let path = self.root().join(key);
            match Stamp::of_path(&path).ok().flatten() {
                None => {}
                Some(live) => {
                    let expected = Expected {
                        sha256: record.sha256,
                        size: None,
                        mode: live.perm,
                    };
                    let ours = judge(Some(record), Some(&live), &expected, Policy::Cached, None)
                        .is_trusted()
                        || record.verity.is_some();
                    if ours {
                        report.files.push(key.clone());
                    } else {
                        report.changed.push(key.clone());
                    }
                }
            }
        }
        let mut files = Vec::new();
        let canon_state = std::fs::canonicalize(self.state_dir())
            .unwrap_or_else(|_| self.state_dir().to_path_buf());
        walk(self.root(), self.root(), &canon_state, &mut files)?;
        // Temp names of placements by processes that died before the rename are ours.
        let (stale_temps, files): (Vec<String>, Vec<String>) =
            files.into_iter().partition(|f| is_dead_temp(f));
        report.foreign = files
            .into_iter()
            .filter(|f| !keep.contains(f.as_str()) && !recorded.contains(f.as_str()))
            .collect();
        if !dry_run {
            for f in &report.files {
                place::unlink(self.root(), f, f)?;
            }
            if !report.records.is_empty() {
                self.ledger().remove(&report.records)?;
            }
        }
        if !dry_run {
            for t in &stale_temps {
                let (dir, name) = t.rsplit_once('/').unwrap_or(("", t.as_str()));
                place::unlink_temp(self.root(), dir, name)?;
            }
        }
        report.partials = self.gc_partials(manifest, dry_run)?;
        report.partials.extend(stale_temps);
        Ok(report)
    }

    /// Partial downloads in `STATE/tmp` that nobody will adopt: left by a process that is gone,
    /// for an asset `manifest` does not name. (A partial of a manifest asset is kept: the next
    /// prepare of that asset resumes it.) Removed unless `dry_run`; returns their file names.
    pub fn gc_partials(&self, manifest: &Manifest, dry_run: bool) -> Result<Vec<String>> {
        let tmp = self.state_dir().join("tmp");
        // A partial is worth keeping only for an asset that still needs bytes: one that is
        // present and vouched for will never resume it.
        let (inspections, _) = self.inspect(manifest, Some(Policy::Cached));
        let wanted: HashSet<String> = inspections
            .iter()
            .filter(|i| !i.verdict.is_trusted())
            .map(|i| crate::lock::file_key(&i.asset.path))
            .collect();
        let entries = match std::fs::read_dir(&tmp) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&tmp, "list", e)),
        };
        let mut removed = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let mut parts = name.split('.');
            let (Some(key), Some(pid)) = (parts.next(), parts.next()) else {
                continue;
            };
            if pid_alive(pid) || wanted.contains(key) {
                continue;
            }
            if !dry_run {
                let p = entry.path();
                std::fs::remove_file(&p).map_err(|e| Error::io(&p, "remove partial", e))?;
            }
            removed.push(name);
        }
        removed.sort();
        Ok(removed)
    }

    /// Sizes of the store's parts. Reads only.
    pub fn usage(&self) -> Usage {
        let (records, ledger) = self.ledger().all();
        let recorded_bytes = records
            .iter()
            .filter_map(|(k, _)| Stamp::of_path(&self.root().join(k)).ok().flatten())
            .map(|s| s.size)
            .sum();
        let (partials, partial_bytes) = std::fs::read_dir(self.state_dir().join("tmp"))
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| !e.file_name().to_string_lossy().ends_with(".json"))
                    .filter_map(|e| e.metadata().ok())
                    .filter(|m| m.is_file())
                    .fold((0usize, 0u64), |(n, b), m| (n + 1, b + m.len()))
            })
            .unwrap_or((0, 0));
        Usage {
            records: records.len(),
            recorded_bytes,
            ledger_bytes: std::fs::metadata(self.ledger_path())
                .map(|m| m.len())
                .unwrap_or(0),
            partials,
            partial_bytes,
            ledger,
        }
    }
}

/// Whether the process `pid` (a decimal string) exists; an unparsable pid counts as alive.
pub(crate) fn pid_alive(pid: &str) -> bool {
    pid.parse::<i32>()
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .is_none_or(|p| {
            !matches!(
                rustix::process::test_kill_process(p),
                Err(rustix::io::Errno::SRCH)
            )
        })
}

/// `.bootvault-<pid>-<random>.tmp` (the temp name of a placement) of a process that is gone.
pub(crate) fn is_dead_temp(rel: &str) -> bool {
    let base = rel.rsplit('/').next().unwrap_or(rel);
    base.strip_prefix(".bootvault-")
        .and_then(|r| r.strip_suffix(".tmp"))
        .and_then(|r| r.split('-').next())
        .is_some_and(|pid| !pid_alive(pid))
}

/// Regular files and symlinks under `dir`, relative to `root`, skipping the state dir and
/// the legacy cache.
fn walk(root: &Path, dir: &Path, state: &Path, out: &mut Vec<String>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir, "list", e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, "list", e))?;
        let p = entry.path();
        let ft = entry.file_type().map_err(|e| Error::io(&p, "stat", e))?;
        if ft.is_dir() {
            if p == state
                || p.file_name() == Some(std::ffi::OsStr::new(crate::STATE_DIR_NAME))
                || std::fs::canonicalize(&p).is_ok_and(|c| c == state)
            {
                continue;
            }
            walk(root, &p, state, out)?;
        } else if let Ok(rel) = p.strip_prefix(root) {
            let rel = rel.to_string_lossy().to_string();
            if rel != crate::migrations::legacy::FILE_NAME {
                out.push(rel);
            }
        }
    }
    out.sort();
    Ok(())
}
