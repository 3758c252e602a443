//! A prepare, top to bottom: **observe** (one `lstat` per asset relative to a descriptor of
//! ROOT, every record in one read transaction) → **plan** (the pure [`plan::plan`] over
//! [`judge::judge`]: per asset cached / chmod / hash / link / fetch / patch / repair, with the
//! reason) → **execute** (the other steps on a pool of workers, [`execute`]: each takes the
//! asset's lock, looks again, hashes, copies or fetches, and places atomically) → **commit**
//! (one committer, [`commit`], writes the results in short batched write transactions, then
//! releases the assets' locks). If every step is `cached` the prepare ends after the plan,
//! having written nothing. No write transaction is ever held across a download or a hash.
//!
//! [`Prepare`] owns one call: the opened store's [`Context`], the manifest, the call's options,
//! progress and cancel token. `Store::prepare_with` and `Store::plan` (for `--dry-run` and
//! `debug why`) each build one and run it.

pub(crate) mod commit;
pub(crate) mod execute;
pub mod judge;
pub(crate) mod observe;
mod patch;
pub mod plan;

use crate::cancel::CancelToken;
use crate::context::Context;
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::ledger::LedgerState;
use crate::manifest::{Asset, Manifest, Policy};
use crate::place;
use crate::report::{AssetReport, Outcome, Progress, ProgressFn, Report};
use commit::Committer;
use execute::Done;
use plan::{Action, Observed, Plan, plan};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Options of one prepare call (arcbox-boot passes progress per call, too).
#[derive(Clone, Default)]
pub struct PrepareOptions {
    provenance: Option<crate::ledger::Provenance>,
    progress: Option<ProgressFn>,
    only: Option<Vec<String>>,
    verify: Option<Policy>,
    cancel: Option<CancelToken>,
}

impl std::fmt::Debug for PrepareOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrepareOptions")
            .field("progress", &self.progress.is_some())
            .field("only", &self.only)
            .field("verify", &self.verify)
            .field("cancel", &self.cancel)
            .field("provenance", &self.provenance)
            .finish()
    }
}

impl PrepareOptions {
    /// Default options: every asset, each with its own policy, the store's progress callback.
    pub fn new() -> PrepareOptions {
        PrepareOptions::default()
    }
    /// Progress callback for this call (instead of the store's).
    pub fn progress(mut self, f: ProgressFn) -> Self {
        self.progress = Some(f);
        self
    }
    /// Prepares only the assets with these names (as arcbox-boot's `prepare_binaries`).
    pub fn only<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.only = Some(names.into_iter().map(Into::into).collect());
        self
    }
    /// Overrides every asset's `verify` policy for this call.
    pub fn verify(mut self, policy: Policy) -> Self {
        self.verify = Some(policy);
        self
    }
    /// A token that cancels this prepare.
    pub fn cancel(mut self, token: CancelToken) -> Self {
        self.cancel = Some(token);
        self
    }
    pub(crate) fn cancel_token(&self) -> Option<CancelToken> {
        self.cancel.clone()
    }
    /// Where the manifest came from and which trusted key vouched for it: recorded in the
    /// ledger with the first records of its version (never on a warm prepare, which writes
    /// nothing).
    pub fn provenance(mut self, p: crate::ledger::Provenance) -> Self {
        self.provenance = Some(p);
        self
    }
}

/// One prepare (or its plan alone): the per-call context every stage shares.
pub(crate) struct Prepare<'a> {
    pub(crate) ctx: &'a Context,
    pub(crate) manifest: &'a Manifest,
    opts: &'a PrepareOptions,
    pub(crate) progress: Option<&'a ProgressFn>,
    pub(crate) cancel: CancelToken,
    /// The filesystem clock read before any content was read (the racy rule's moment); taken
    /// when execution starts.
    pub(crate) probe: i64,
}

impl<'a> Prepare<'a> {
    pub(crate) fn new(ctx: &'a Context, manifest: &'a Manifest, opts: &'a PrepareOptions) -> Self {
        Prepare {
            ctx,
            manifest,
            opts,
            progress: opts.progress.as_ref().or(ctx.opts.progress.as_ref()),
            cancel: opts.cancel.clone().unwrap_or_default(),
            probe: 0,
        }
    }

    pub(crate) fn emit(&self, p: Progress<'_>) {
        if let Some(f) = self.progress {
            f(&p);
        }
    }

    /// The plan a prepare would follow now: reads only (no lock, no write, no network).
    pub(crate) fn plan(&self) -> Result<Plan> {
        let only = self.indexes()?;
        let (observed, state) = observe::observe(self.ctx, self.manifest);
        Ok(self.plan_from(&observed, state, only.as_deref(), false))
    }

    /// Observe, plan, execute, commit. Per-asset failures are in the report; `Err` only when
    /// the call itself is wrong.
    pub(crate) fn run(mut self) -> Result<Report> {
        let start = Instant::now();
        let only = self.indexes()?;
        let (observed, state) = observe::observe(self.ctx, self.manifest);
        let plan = self.plan_from(&observed, state, only.as_deref(), true);
        let manifest = self.manifest;
        let mut reports: Vec<Option<AssetReport>> = Vec::with_capacity(plan.steps.len());
        let mut queue = VecDeque::new();
        for (slot, step) in plan.steps.into_iter().enumerate() {
            let asset = &manifest.assets[step.index];
            self.emit(Progress::Checking { name: &asset.name });
            if step.action == Action::Cached {
                self.emit(Progress::Ready {
                    name: &asset.name,
                    outcome: Outcome::Cached,
                });
                reports.push(Some(self.cached_report(asset, step.live.map(|l| l.size))));
            } else {
                reports.push(None);
                queue.push_back((slot, step));
            }
        }
        if !queue.is_empty() {
            // Before anything is written under ROOT: the manifest may have been built or changed
            // in code. (The warm path needs no check: it only reads, and a record can only exist
            // for a path that passed this check when it was written.)
            crate::manifest::revalidate(manifest)?;
            observe::refuse_state_paths(self.ctx, manifest)?;
            self.probe = self.ctx.fs_clock();
            let provenance = self
                .opts
                .provenance
                .clone()
                .map(|p| (manifest.version.clone(), p));
            for (slot, report) in self.execute(queue, provenance) {
                reports[slot] = Some(report);
            }
        }
        Ok(Report {
            manifest_version: manifest.version.clone(),
            elapsed: start.elapsed(),
            assets: reports.into_iter().flatten().collect(),
            ledger: state,
            kernel_cmdline: manifest.kernel_cmdline.clone(),
        })
    }

    fn indexes(&self) -> Result<Option<Vec<usize>>> {
        let Some(names) = &self.opts.only else {
            return Ok(None);
        };
        names
            .iter()
            .map(|n| {
                self.manifest
                    .assets
                    .iter()
                    .position(|a| &a.name == n)
                    .ok_or_else(|| Error::Manifest {
                        origin: "<prepare options>".into(),
                        message: format!("asset {n}: not in the manifest"),
                    })
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    fn plan_from(
        &self,
        observed: &[Observed],
        state: LedgerState,
        only: Option<&[usize]>,
        cache: bool,
    ) -> Plan {
        let policy = self.opts.verify.or(self.ctx.opts.verify);
        let mut out = self.plan_with_donors(observed, state, policy, only);
        // After donors (a local copy of the same digest beats a patch). Only an indexed asset
        // that must still be fetched reads an index, so a warm prepare never does.
        self.plan_patches(self.manifest, observed, &mut out, cache);
        out
    }

    fn plan_with_donors(
        &self,
        observed: &[Observed],
        state: LedgerState,
        policy: Option<Policy>,
        only: Option<&[usize]>,
    ) -> Plan {
        let first = plan(
            self.manifest,
            observed,
            policy,
            &HashMap::new(),
            only,
            state,
        );
        if !first.steps.iter().any(|s| s.action == Action::Fetch) {
            return first;
        }
        let absent: Vec<Sha256Digest> = first
            .steps
            .iter()
            .filter(|s| s.action == Action::Fetch)
            .map(|s| self.manifest.assets[s.index].sha256)
            .collect();
        let donors = observe::donors(self.ctx, &absent);
        if donors.is_empty() {
            return first;
        }
        plan(self.manifest, observed, policy, &donors, only, state)
    }

    /// Runs the steps on a pool of workers, with one committer writing their results.
    fn execute(
        &self,
        queue: VecDeque<(usize, crate::prepare::plan::Step)>,
        provenance: Option<(String, crate::ledger::Provenance)>,
    ) -> Vec<(usize, AssetReport)> {
        let jobs = self.ctx.opts.jobs.unwrap_or_else(|| {
            // Small assets are I/O-bound (fsyncs, renames): more workers than cores help.
            let cores = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2);
            let small = queue.iter().all(|(_, s)| {
                self.manifest.assets[s.index]
                    .size
                    .is_some_and(|n| n < 1 << 20)
            });
            if small { cores * 4 } else { cores }
        });
        let workers = jobs.min(queue.len()).max(1);
        let queue = Mutex::new(queue);
        let results = Mutex::new(Vec::new());
        // The committer's thread borrows the ledger; the workers borrow the committer, so they
        // run in a scope of their own that ends (all joined) before the committer finishes.
        std::thread::scope(|outer| {
            let committer = Committer::start(outer, &self.ctx.ledger, provenance);
            std::thread::scope(|scope| {
                for _ in 0..workers {
                    scope.spawn(|| {
                        loop {
                            let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                            let Some((slot, step)) = next else { break };
                            let asset = &self.manifest.assets[step.index];
                            let t = Instant::now();
                            // What the step will do, as the plan says it; a hash step's plan
                            // text lists the ways to adopt, and its note says which was taken, so
                            // the verdict alone goes before that note.
                            let reason = match step.action {
                                Action::Hash => step.verdict.reason(),
                                _ => step.reason(),
                            };
                            let done = if self.cancel.is_cancelled() {
                                Err(Error::Cancelled {
                                    name: asset.name.clone(),
                                })
                            } else {
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    self.run_step(asset, &step)
                                }))
                                .unwrap_or_else(|panic| {
                                    Err(Error::Internal {
                                        name: asset.name.clone(),
                                        message: panic_message(&panic),
                                    })
                                })
                            };
                            // An index that could not be used: the whole download says why.
                            let done = done.map(|mut d| {
                                if d.patch_fallback.is_none() && d.bytes_downloaded > 0 {
                                    d.patch_fallback = step.no_patch.clone();
                                }
                                d
                            });
                            let report = self.finish_step(asset, &reason, done, t, &committer);
                            results
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push((slot, report));
                        }
                    });
                }
            });
            committer.finish();
        });
        let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
        self.sweep_dead_temps(&results);
        results
    }

    /// A process killed between linking a placement's temp name and renaming it over the
    /// asset leaves `.bootvault-<pid>-<random>.tmp` beside it. The directories this prepare
    /// placed into are swept of those of dead processes (`gc` sweeps the whole tree).
    fn sweep_dead_temps(&self, results: &[(usize, AssetReport)]) {
        let dirs: std::collections::BTreeSet<&str> = results
            .iter()
            .filter_map(|(_, r)| self.manifest.assets.iter().find(|a| a.name == r.name))
            .map(|a| a.path.rsplit_once('/').map(|(d, _)| d).unwrap_or(""))
            .collect();
        for dir in dirs {
            let abs = self.ctx.root.join(dir);
            let Ok(entries) = std::fs::read_dir(&abs) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if crate::place::is_dead_temp(&name) {
                    let _ = place::unlink_temp(&self.ctx.root, dir, &name);
                }
            }
        }
    }

    fn finish_step(
        &self,
        asset: &Asset,
        reason: &str,
        done: Result<Done>,
        t: Instant,
        committer: &Committer,
    ) -> AssetReport {
        let version = &self.manifest.version;
        match done {
            Ok(done) => {
                // Partials of this asset left by killed processes will never be resumed now.
                crate::fetch::drop_dead_partials(
                    &self.ctx.state,
                    &crate::state::file_key(&asset.path),
                );
                self.emit(Progress::Ready {
                    name: &asset.name,
                    outcome: done.outcome,
                });
                // The step's note (how a file was adopted, what was wrong) goes with the plan's
                // reason into the report and the event, so `debug why` says which way was taken.
                let why = match &done.note {
                    Some(n) => format!("{reason}; {n}"),
                    None => reason.to_string(),
                };
                let report = AssetReport {
                    name: asset.name.clone(),
                    path: self.ctx.root.join(&asset.path),
                    sha256: asset.sha256,
                    size: Some(done.size),
                    result: Ok(done.outcome),
                    bytes_hashed: done.bytes_hashed,
                    bytes_downloaded: done.bytes_downloaded,
                    bytes_copied: done.bytes_copied,
                    bytes_reused: done.bytes_reused,
                    patch_fallback: done.patch_fallback.clone(),
                    reason: why.clone(),
                    elapsed: t.elapsed(),
                };
                // Nothing new to remember (`verify: always` on an unchanged file, a read-only
                // store): no write transaction, no fsync.
                if done.record.is_some() || done.note.is_some() {
                    let event =
                        crate::prepare::execute::event(asset, version, done.outcome.as_str(), &why);
                    committer.send(&asset.path, done.record, event, done.lock);
                }
                report
            }
            Err(e) => {
                let e = e.for_asset(&asset.name);
                self.emit(Progress::Failed {
                    name: &asset.name,
                    error: &e,
                });
                let event =
                    crate::prepare::execute::event(asset, version, "failed", &e.to_string());
                committer.send(&asset.path, None, event, None);
                AssetReport {
                    name: asset.name.clone(),
                    path: self.ctx.root.join(&asset.path),
                    sha256: asset.sha256,
                    size: asset.size,
                    result: Err(e),
                    bytes_hashed: 0,
                    bytes_downloaded: 0,
                    bytes_copied: 0,
                    bytes_reused: 0,
                    patch_fallback: None,
                    reason: reason.to_string(),
                    elapsed: t.elapsed(),
                }
            }
        }
    }

    fn cached_report(&self, asset: &Asset, size: Option<u64>) -> AssetReport {
        AssetReport {
            name: asset.name.clone(),
            path: self.ctx.root.join(&asset.path),
            sha256: asset.sha256,
            size,
            result: Ok(Outcome::Cached),
            bytes_hashed: 0,
            bytes_downloaded: 0,
            bytes_copied: 0,
            bytes_reused: 0,
            patch_fallback: None,
            reason: String::new(),
            elapsed: Duration::ZERO,
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "worker panicked".into())
}
