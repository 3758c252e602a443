//! Looking at a store without changing it (`debug ls/show/check/verify/why`), and collecting
//! what it no longer needs (`gc`).

use crate::context::Context;
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::fsutil::pid_alive;
use crate::ledger::{Event, LedgerState, Record};
use crate::manifest::{Asset, AssetPath, Manifest, Policy};
use crate::place;
use crate::prepare::judge::{Expected, Verdict, judge};
use crate::prepare::plan::{Observed, Step};
use crate::prepare::{Prepare, PrepareOptions};
use crate::stamp::Stamp;
use crate::state::StateDir;
use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// One asset's live view: where it is, its stamp, its record, the verdict.
#[derive(Clone, Debug)]
#[non_exhaustive]
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
#[non_exhaustive]
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
#[non_exhaustive]
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
    /// Paths gc could not check without following a symlink, or could not remove: (path,
    /// why). Left alone, with their records.
    pub skipped: Vec<(String, String)>,
}

/// Sizes of the store's parts: `bootvault status`.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
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
    /// Where the partial downloads are (the state dir's `tmp/`).
    pub tmp_dir: PathBuf,
    /// Lock files in the state dir (one per asset path ever prepared; they are never removed,
    /// as removing a lock file another process holds would break single flight).
    pub locks: usize,
    /// What the ledger read found.
    pub ledger: LedgerState,
}

impl Context {
    /// Every record, sorted by path, and what the read found.
    pub(crate) fn records(&self) -> (Vec<(String, Record)>, LedgerState) {
        self.ledger().all()
    }

    /// Where each manifest version came from and which key vouched for it.
    pub(crate) fn manifests(&self) -> Vec<(String, crate::ledger::Provenance)> {
        self.ledger().manifests()
    }

    /// Recent events, newest first, optionally for one path.
    pub(crate) fn events(&self, path: Option<&str>, limit: usize) -> Vec<Event> {
        self.ledger().events(path, limit)
    }

    /// The ledger's schema version on disk (0 when absent or unreadable).
    pub(crate) fn schema_version(&self) -> u64 {
        self.ledger().schema_version()
    }

    /// Imports an arcbox-boot `.verified.json` into the ledger (see [`crate::migrations`]).
    pub(crate) fn import_legacy(
        &self,
        legacy: &Path,
    ) -> Result<crate::ledger::migrations::legacy::ImportReport> {
        self.ledger().import_legacy(legacy)
    }

    /// Stats every asset and reads every record in one read transaction; judges each with
    /// `policy` (or the asset's own). Reads only.
    pub(crate) fn inspect(
        &self,
        manifest: &Manifest,
        policy: Option<Policy>,
    ) -> (Vec<Inspection>, LedgerState) {
        let (observed, state) = crate::prepare::observe::observe(self, manifest);
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
    pub(crate) fn explain(
        &self,
        manifest: Option<&Manifest>,
        target: &str,
        events: usize,
    ) -> Result<Option<Explanation>> {
        let asset = manifest.and_then(|m| m.find(target)).cloned();
        let mut rel = asset
            .as_ref()
            .map(|x| x.path.to_string())
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
        crate::asset_path::validate_path(&rel).map_err(|why| Error::Manifest {
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
                let plan =
                    Prepare::new(self, m, &PrepareOptions::new().only([a.name.clone()])).plan()?;
                plan.steps.into_iter().next()
            }
            _ => None,
        };
        let policy = asset.as_ref().map(|x| x.verify).unwrap_or(Policy::Cached);
        let verdict = match &step {
            Some(s) => s.verdict.clone(),
            None => judge_without_manifest(&path, record.as_ref(), live.as_ref(), policy),
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

    /// Every ledger record judged without a manifest (`debug check` with no `--manifest`), by
    /// the same rule as [`Store::explain`] (`debug why`): the record's digest is expected, and
    /// no size or mode (nothing says what they should be). Reads only.
    pub(crate) fn inspect_records(&self, policy: Policy) -> (Vec<Inspection>, LedgerState) {
        let (records, state) = self.record_assets(policy);
        let out = records
            .into_iter()
            .map(|(asset, record)| {
                let path = self.root().join(&asset.path);
                let live = Stamp::of_path(&path).ok().flatten();
                let verdict = judge_without_manifest(&path, Some(&record), live.as_ref(), policy);
                Inspection {
                    asset,
                    path,
                    live,
                    record: Some(record),
                    verdict,
                }
            })
            .collect();
        (out, state)
    }

    /// One pseudo-asset per ledger record (named by its path, with the record's digest, no
    /// size, URL or mode, and `policy`), for the views without a manifest. A key that is not a
    /// valid asset path (only a damaged or forged ledger has one) names no file bootvault
    /// placed, and is left out.
    fn record_assets(&self, policy: Policy) -> (Vec<(Asset, Record)>, LedgerState) {
        let (records, state) = self.ledger().all();
        let out = records
            .into_iter()
            .filter_map(|(rel, record)| {
                let path = AssetPath::new(&rel).ok()?;
                let asset = Asset {
                    name: rel,
                    path,
                    sha256: record.sha256,
                    size: None,
                    urls: Vec::new(),
                    verify: policy,
                    mode: None,
                    index: None,
                };
                Some((asset, record))
            })
            .collect();
        (out, state)
    }

    /// `debug verify` without a manifest: re-hashes the file of every ledger record (a
    /// pseudo-asset as in [`Self::inspect_records`]), reading content, writing nothing.
    pub(crate) fn verify_records(&self) -> Vec<(Asset, PathBuf, VerifyState)> {
        let (records, _) = self.record_assets(Policy::Cached);
        let manifest = Manifest {
            version: "ledger".into(),
            base_url: None,
            assets: records.into_iter().map(|(asset, _)| asset).collect(),
            kernel_cmdline: None,
        };
        self.verify_all(&manifest)
    }

    /// `debug verify`: re-hashes every asset, reading content, writing nothing.
    pub(crate) fn verify_all(&self, manifest: &Manifest) -> Vec<(Asset, PathBuf, VerifyState)> {
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
    ///
    /// gc stays in its store: ROOT is resolved once (as a prepare does) and every name below it
    /// is reached from that descriptor one component at a time with `O_NOFOLLOW`, so a
    /// symlinked directory under ROOT or in the state dir is never followed; a path that cannot
    /// be checked that way is skipped and reported ([`GcReport::skipped`]) and keeps its
    /// record. Temp names of dead placements are removed only in directories the store places
    /// into (parents of manifest assets and recorded paths); elsewhere they are foreign.
    pub(crate) fn gc(&self, manifest: &Manifest, dry_run: bool) -> Result<GcReport> {
        use rustix::fs::{AtFlags, unlinkat};
        let keep: HashSet<&str> = manifest.assets.iter().map(|a| a.path.as_str()).collect();
        let (records, _) = self.ledger().all();
        let recorded: HashSet<&str> = records.iter().map(|(k, _)| k.as_str()).collect();
        let mut report = GcReport::default();
        let canon_root = std::fs::canonicalize(self.root())
            .map_err(|e| Error::io(self.root(), "resolve ROOT", e))?;
        let root_fd = open_dir_beneath(&canon_root, None, "")
            .map_err(|e| Error::io(&canon_root, "open ROOT", e))?;
        // (record key, its directory, its file name) of each file to remove.
        let mut doomed: Vec<(String, OwnedFd, String)> = Vec::new();
        let mut skipped_keys: HashSet<String> = HashSet::new();
        for (key, record) in &records {
            if keep.contains(key.as_str()) {
                continue;
            }
            if crate::asset_path::validate_path(key).is_err() {
                report.records.push(key.clone());
                continue;
            }
            let (dir, name) = key.rsplit_once('/').unwrap_or(("", key.as_str()));
            let fd = match open_dir_beneath(&canon_root, Some(&root_fd), dir) {
                Ok(fd) => fd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    report.records.push(key.clone());
                    continue;
                }
                Err(e) => {
                    report.skipped.push((key.clone(), not_followed(dir, &e)));
                    skipped_keys.insert(key.clone());
                    continue;
                }
            };
            report.records.push(key.clone());
            let Some(live) = Stamp::of_path_at(&fd, name) else {
                continue;
            };
            let expected = Expected {
                sha256: record.sha256,
                size: None,
                mode: live.perm,
            };
            let ours = judge(Some(record), Some(&live), &expected, Policy::Cached, None)
                .is_trusted()
                || (record.verity.is_some() && live.kind == crate::stamp::FileKind::Regular);
            if ours {
                report.files.push(key.clone());
                doomed.push((key.clone(), fd, name.to_string()));
            } else {
                report.changed.push(key.clone());
            }
        }
        let mut files = Vec::new();
        let canon_state = std::fs::canonicalize(self.state_dir())
            .unwrap_or_else(|_| self.state_dir().to_path_buf());
        walk(
            &canon_root,
            &canon_root,
            &canon_state,
            &mut files,
            &mut report.skipped,
        );
        files.sort();
        // Temp names of placements by processes that died before the rename are ours, in the
        // directories the store places into; anywhere else such a name is someone else's file.
        let owned: HashSet<&str> = keep
            .iter()
            .chain(recorded.iter())
            .map(|p| p.rsplit_once('/').map(|(d, _)| d).unwrap_or(""))
            .collect();
        let (stale_temps, files): (Vec<String>, Vec<String>) = files.into_iter().partition(|f| {
            let dir = f.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
            owned.contains(dir) && crate::place::is_dead_temp(f)
        });
        report.foreign = files
            .into_iter()
            .filter(|f| !keep.contains(f.as_str()) && !recorded.contains(f.as_str()))
            .collect();
        if !dry_run {
            for (key, fd, name) in &doomed {
                match unlinkat(fd, name.as_str(), AtFlags::empty()) {
                    Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                    Err(e) => {
                        report.skipped.push((
                            key.clone(),
                            format!("cannot remove: {}", std::io::Error::from(e)),
                        ));
                        skipped_keys.insert(key.clone());
                    }
                }
            }
            report.files.retain(|f| !skipped_keys.contains(f));
            report.records.retain(|r| !skipped_keys.contains(r));
            if !report.records.is_empty() {
                self.ledger().remove(&report.records)?;
            }
        }
        let mut temps = Vec::new();
        for t in stale_temps {
            let (dir, name) = t.rsplit_once('/').unwrap_or(("", t.as_str()));
            if !dry_run {
                let removed =
                    open_dir_beneath(&canon_root, Some(&root_fd), dir).and_then(
                        |fd| match unlinkat(&fd, name, AtFlags::empty()) {
                            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
                            Err(e) => Err(e.into()),
                        },
                    );
                if let Err(e) = removed {
                    report.skipped.push((t.clone(), not_followed(dir, &e)));
                    continue;
                }
            }
            temps.push(t);
        }
        let (partials, skipped) = self.collect_partials(manifest, dry_run)?;
        report.partials = partials;
        report.partials.extend(temps);
        report.skipped.extend(skipped);
        Ok(report)
    }

    /// Partial downloads in `STATE/tmp` that nobody will adopt: left by a process that is gone,
    /// for an asset `manifest` does not name. (A partial of a manifest asset is kept: the next
    /// prepare of that asset resumes it.) Removed unless `dry_run`; returns their file names.
    /// A `tmp` that is a symlink is not followed (nothing is listed or removed through it).
    pub(crate) fn gc_partials(&self, manifest: &Manifest, dry_run: bool) -> Result<Vec<String>> {
        Ok(self.collect_partials(manifest, dry_run)?.0)
    }

    fn collect_partials(
        &self,
        manifest: &Manifest,
        dry_run: bool,
    ) -> Result<(Vec<String>, Skipped)> {
        use rustix::fs::{AtFlags, FileType, Mode, OFlags, openat, statat, unlinkat};
        let tmp = self.state.tmp();
        // A partial is worth keeping only for an asset that still needs bytes: one that is
        // present and vouched for will never resume it.
        let (inspections, _) = self.inspect(manifest, Some(Policy::Cached));
        let wanted: HashSet<String> = inspections
            .iter()
            .filter(|i| !i.verdict.is_trusted())
            .map(|i| crate::state::file_key(&i.asset.path))
            .collect();
        let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let state_fd = match rustix::fs::open(self.state_dir(), dir_flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok((Vec::new(), Vec::new())),
            Err(e) => return Err(Error::io(self.state_dir(), "open state dir", e.into())),
        };
        let tmp_fd = match openat(
            &state_fd,
            StateDir::TMP,
            dir_flags | OFlags::NOFOLLOW,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok((Vec::new(), Vec::new())),
            Err(e) => {
                let why = not_followed(StateDir::TMP, &e.into());
                return Ok((Vec::new(), vec![(tmp.display().to_string(), why)]));
            }
        };
        let entries =
            rustix::fs::Dir::read_from(&tmp_fd).map_err(|e| Error::io(&tmp, "list", e.into()))?;
        let mut removed = Vec::new();
        let mut skipped = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name == "." || name == ".." {
                continue;
            }
            // Only names the store makes; anything else in tmp/ is left alone.
            let Some(ours) = crate::state::parse_tmp(&name) else {
                continue;
            };
            if pid_alive(ours.pid) || wanted.contains(ours.key) {
                continue;
            }
            // Only regular files the store wrote; a symlink or a directory there is not ours.
            let regular = statat(&tmp_fd, name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::RegularFile);
            if !regular {
                skipped.push((
                    tmp.join(&name).display().to_string(),
                    "not a regular file".into(),
                ));
                continue;
            }
            if !dry_run
                && let Err(e) = unlinkat(&tmp_fd, name.as_str(), AtFlags::empty())
                && e != rustix::io::Errno::NOENT
            {
                skipped.push((
                    tmp.join(&name).display().to_string(),
                    format!("cannot remove: {}", std::io::Error::from(e)),
                ));
                continue;
            }
            removed.push(name);
        }
        removed.sort();
        Ok((removed, skipped))
    }

    /// Sizes of the store's parts. Reads only.
    pub(crate) fn usage(&self) -> Usage {
        let (records, ledger) = self.ledger().all();
        let recorded_bytes = records
            .iter()
            .filter_map(|(k, _)| Stamp::of_path(&self.root().join(k)).ok().flatten())
            .map(|s| s.size)
            .sum();
        let (partials, partial_bytes) = std::fs::read_dir(self.state.tmp())
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| {
                        let name = e.file_name();
                        // Everything in tmp/ takes space but the hash checkpoints.
                        !crate::state::parse_tmp(&name.to_string_lossy())
                            .is_some_and(|t| t.kind == crate::state::TmpKind::PartMeta)
                    })
                    .filter_map(|e| e.metadata().ok())
                    .filter(|m| m.is_file())
                    .fold((0usize, 0u64), |(n, b), m| (n + 1, b + m.len()))
            })
            .unwrap_or((0, 0));
        Usage {
            records: records.len(),
            recorded_bytes,
            ledger_bytes: std::fs::metadata(self.ledger.path())
                .map(|m| m.len())
                .unwrap_or(0),
            partials,
            partial_bytes,
            tmp_dir: self.state.tmp(),
            locks: std::fs::read_dir(self.state.locks())
                .map(|entries| entries.flatten().count())
                .unwrap_or(0),
            ledger,
        }
    }
}

/// The trust decision for a path no manifest names (`debug why PATH`, `debug check` without
/// `--manifest`): `judge` with the record's digest and neither size nor mode expected, so both
/// views agree (a `0755` file is not "stale (mode)" for lack of a manifest mode).
fn judge_without_manifest(
    path: &Path,
    record: Option<&Record>,
    live: Option<&Stamp>,
    policy: Policy,
) -> Verdict {
    match (record, live) {
        (Some(r), _) => {
            let verity = r
                .verity
                .and_then(|_| place::open_nofollow(path).ok())
                .and_then(|f| crate::verity::measure(&f));
            let expected = Expected {
                sha256: r.sha256,
                size: None,
                mode: live.map(|l| l.perm).unwrap_or(0),
            };
            judge(Some(r), live, &expected, policy, verity.as_ref())
        }
        (None, Some(_)) => Verdict::Unrecorded,
        (None, None) => Verdict::Missing,
    }
}

/// Paths gc left alone, with why.
type Skipped = Vec<(String, String)>;

/// Why a directory under ROOT or the state dir was not entered.
fn not_followed(dir: &str, e: &std::io::Error) -> String {
    let dir = if dir.is_empty() { "ROOT" } else { dir };
    match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::ENOTDIR) => {
            format!("{dir}: a symlink or not a directory; not followed")
        }
        _ => format!("{dir}: {e}"),
    }
}

/// Opens the directory `rel` below ROOT (`canon_root`, already resolved; its descriptor
/// `root_fd` when open) one component at a time with `O_NOFOLLOW | O_DIRECTORY`: the
/// directory reached is the one at that path, never one a symlink leads to.
fn open_dir_beneath(
    canon_root: &Path,
    root_fd: Option<&OwnedFd>,
    rel: &str,
) -> std::io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags, openat};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    let mut fd = match root_fd {
        Some(r) => openat(r, ".", flags, Mode::empty())?,
        None => rustix::fs::open(canon_root, flags, Mode::empty())?,
    };
    for comp in rel.split('/').filter(|c| !c.is_empty()) {
        fd = openat(&fd, comp, flags, Mode::empty())?;
    }
    Ok(fd)
}

/// Regular files and symlinks under `dir`, relative to `root`, skipping the state dir and
/// the legacy cache. Symlinks are listed, never entered; a directory that cannot be listed
/// is reported in `skipped` and the walk goes on.
fn walk(
    root: &Path,
    dir: &Path,
    state: &Path,
    out: &mut Vec<String>,
    skipped: &mut Vec<(String, String)>,
) {
    let rel_of = |p: &Path| {
        p.strip_prefix(root)
            .map(|r| r.to_string_lossy().to_string())
            .unwrap_or_else(|_| p.display().to_string())
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            skipped.push((rel_of(dir), format!("cannot list: {e}")));
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                skipped.push((rel_of(dir), format!("cannot list: {e}")));
                return;
            }
        };
        let p = entry.path();
        let Ok(ft) = entry.file_type() else {
            skipped.push((rel_of(&p), "cannot stat".into()));
            continue;
        };
        if ft.is_dir() {
            if p == state
                || p.file_name() == Some(std::ffi::OsStr::new(crate::STATE_DIR_NAME))
                || std::fs::canonicalize(&p).is_ok_and(|c| c == state)
            {
                continue;
            }
            walk(root, &p, state, out, skipped);
        } else if let Ok(rel) = p.strip_prefix(root) {
            let rel = rel.to_string_lossy().to_string();
            if rel != crate::ledger::migrations::legacy::FILE_NAME {
                out.push(rel);
            }
        }
    }
}
