//! The first stage of a prepare: a pure decision, per asset, of what to do and why.
//!
//! [`plan`] takes what was read (the manifest, each asset's ledger record, live stamp and
//! fs-verity measurement, and the verified files that could donate their bytes) and returns a
//! [`Plan`]: one [`Step`] per asset with its [`Action`] and the [`Verdict`] behind it. It does
//! no I/O, so `prepare`, `prepare --dry-run` and `debug why` all print the same decision.

use crate::digest::Sha256Digest;
use crate::ledger::Record;
use crate::manifest::{Asset, Manifest, Policy};
use crate::prepare::judge::{Expected, Verdict, judge};
use crate::stamp::Stamp;
use std::collections::HashMap;
use std::path::PathBuf;

/// What a prepare does for one asset.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Trust the record: read nothing, write nothing.
    Cached,
    /// The content is vouched for but the permission bits drifted: put them back through the
    /// file's descriptor and re-stamp the record. Reads no content.
    Chmod,
    /// Hash the file on disk (no record, a stale record, or `verify: always`); a file that
    /// bootvault did not place is copied onto a fresh inode while hashing, so trust never rests
    /// on an inode another process may hold open or mapped.
    Hash,
    /// The file is absent, and a verified file with the same digest exists: copy it, hashing
    /// on the way, instead of downloading.
    Link {
        /// The donor file.
        from: PathBuf,
    },
    /// The file is absent: download it.
    Fetch,
    /// The file must be fetched, and its chunk index shows that verified local files hold some
    /// of its chunks: copy those (each checked) and fetch only the rest with HTTP Range.
    Patch {
        /// The best seed (the previous version of the asset, when the store has it).
        from: PathBuf,
        /// Bytes the seeds hold.
        bytes_reused: u64,
    },
    /// The file is certainly wrong (wrong size, not a regular file): download a good copy.
    Repair,
}

impl Action {
    /// One word, as `--dry-run` and `debug why` print it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Cached => "cached",
            Action::Chmod => "chmod",
            Action::Hash => "hash",
            Action::Link { .. } => "link",
            Action::Fetch => "fetch",
            Action::Patch { .. } => "patch",
            Action::Repair => "repair",
        }
    }
}

/// The plan for one asset.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Step {
    /// Index of the asset in the manifest.
    pub index: usize,
    /// Asset name.
    pub name: String,
    /// What to do.
    pub action: Action,
    /// Why: the trust decision of `judge`.
    pub verdict: Verdict,
    /// The policy that applied.
    pub policy: Policy,
    /// The live stamp (`lstat`) when the plan was made.
    pub live: Option<Stamp>,
    /// Content bytes the step will read at most (hash, copy, or re-hash of a download).
    pub bytes_to_hash: u64,
    /// Bytes the step will download at most (`None`: unknown, the manifest has no size).
    pub bytes_to_fetch: Option<u64>,
    /// Why an asset that names a chunk index is fetched whole although seeds exist (the index
    /// could not be downloaded, did not hash to the manifest's digest, or did not decode).
    pub no_patch: Option<String>,
}

impl Step {
    /// The reason, for humans.
    pub fn reason(&self) -> String {
        match &self.action {
            Action::Link { from } => {
                format!(
                    "{}; same digest at {}",
                    self.verdict.reason(),
                    from.display()
                )
            }
            Action::Patch { from, bytes_reused } => format!(
                "{}; patch from seed {}: {bytes_reused} bytes reused, {} to fetch",
                self.verdict.reason(),
                from.display(),
                self.bytes_to_fetch.unwrap_or(0)
            ),
            // A file bootvault did not place (or no longer vouches for): how it will be adopted
            // depends on what the kernel grants at run time; the event says which way was taken.
            Action::Hash if self.verdict != crate::prepare::judge::Verdict::Always => format!(
                "{}; to adopt: in place under a read lease if no writer holds it, else a reflink \
                 or a copy onto a fresh inode",
                self.verdict.reason()
            ),
            _ => match &self.no_patch {
                Some(why) => format!("{}; no patch: {why}", self.verdict.reason()),
                None => self.verdict.reason(),
            },
        }
    }
}

/// What one prepare will do, asset by asset.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Plan {
    /// One step per planned asset, in manifest order.
    pub steps: Vec<Step>,
    /// What the ledger read found.
    pub ledger: crate::ledger::LedgerState,
}

impl Plan {
    /// Whether nothing needs doing (every asset `cached`): the prepare then writes nothing.
    pub fn is_warm(&self) -> bool {
        self.steps.iter().all(|s| s.action == Action::Cached)
    }

    /// Total bytes that would be hashed.
    pub fn bytes_to_hash(&self) -> u64 {
        self.steps.iter().map(|s| s.bytes_to_hash).sum()
    }

    /// Total bytes that would be downloaded, when every size is known.
    pub fn bytes_to_fetch(&self) -> Option<u64> {
        self.steps
            .iter()
            .map(|s| s.bytes_to_fetch)
            .try_fold(0u64, |acc, b| b.map(|b| acc + b))
    }
}

/// What was read for one asset before planning.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The ledger record at the asset's path.
    pub record: Option<Record>,
    /// The live `lstat` of the asset path.
    pub live: Option<Stamp>,
    /// The live fs-verity measurement (only taken when the record holds a verity digest).
    pub verity: Option<Sha256Digest>,
}

/// Decides every asset's step. `policy` overrides each asset's own `verify`; `donors` maps a
/// digest to a verified file with that content (only consulted for absent assets); `only`
/// restricts the plan to the assets at those manifest indexes (all when `None`).
pub fn plan(
    manifest: &Manifest,
    observed: &[Observed],
    policy: Option<Policy>,
    donors: &HashMap<Sha256Digest, PathBuf>,
    only: Option<&[usize]>,
    ledger: crate::ledger::LedgerState,
) -> Plan {
    let none = Observed::default();
    let one = |i: usize| {
        let asset = manifest.assets.get(i)?;
        let seen = observed.get(i).unwrap_or(&none);
        Some(step(i, asset, seen, policy, donors))
    };
    let steps = match only {
        Some(list) => list.iter().filter_map(|&i| one(i)).collect(),
        None => (0..manifest.assets.len()).filter_map(one).collect(),
    };
    Plan { steps, ledger }
}

fn step(
    index: usize,
    asset: &Asset,
    seen: &Observed,
    policy: Option<Policy>,
    donors: &HashMap<Sha256Digest, PathBuf>,
) -> Step {
    let policy = policy.unwrap_or(asset.verify);
    let expected = Expected::of(asset);
    let verdict = judge(
        seen.record.as_ref(),
        seen.live.as_ref(),
        &expected,
        policy,
        seen.verity.as_ref(),
    );
    let live_size = seen.live.map(|l| l.size).unwrap_or(0);
    let fetch_size = asset.size;
    let (action, bytes_to_hash, bytes_to_fetch) = match &verdict {
        Verdict::Fresh => (Action::Cached, 0, Some(0)),
        Verdict::Mode { .. } => (Action::Chmod, 0, Some(0)),
        Verdict::Missing => match donors.get(&asset.sha256) {
            Some(from) => (
                Action::Link { from: from.clone() },
                asset.size.unwrap_or(0),
                Some(0),
            ),
            None => (Action::Fetch, 0, fetch_size),
        },
        Verdict::NotRegular(_) | Verdict::WrongSize { .. } => (Action::Repair, 0, fetch_size),
        Verdict::Always | Verdict::Unrecorded | Verdict::Stale(_) => {
            (Action::Hash, live_size, Some(0))
        }
    };
    Step {
        index,
        name: asset.name.clone(),
        action,
        verdict,
        policy,
        live: seen.live,
        bytes_to_hash,
        bytes_to_fetch,
        no_patch: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{LedgerState, Method};
    use crate::stamp::FileKind;

    fn manifest(size: Option<u64>) -> Manifest {
        let mut m = Manifest::from_json_str(&format!(
            r#"{{"version": "1", "assets": [{{"name": "kernel", "sha256": "{}"}}]}}"#,
            "ab".repeat(32)
        ))
        .unwrap();
        m.assets[0].size = size;
        m
    }

    fn stamp(size: u64, perm: u32) -> Stamp {
        Stamp {
            size,
            mtime_ns: 1_000,
            ctime_ns: 2_000,
            ino: 7,
            dev: 1,
            kind: FileKind::Regular,
            perm,
        }
    }

    fn one(m: &Manifest, seen: Observed, donors: &HashMap<Sha256Digest, PathBuf>) -> Step {
        plan(m, &[seen], None, donors, None, LedgerState::Ok)
            .steps
            .remove(0)
    }

    #[test]
    fn every_verdict_maps_to_one_action() {
        let m = manifest(Some(10));
        let digest = m.assets[0].sha256;
        let live = stamp(10, 0o444);
        let rec = Record::new(digest, &live, "1", 5_000, Method::Downloaded, false);
        let none = HashMap::new();
        let cases = [
            (
                Observed {
                    record: Some(rec.clone()),
                    live: Some(live),
                    verity: None,
                },
                Action::Cached,
            ),
            (
                Observed {
                    record: Some(rec.clone()),
                    live: Some(stamp(10, 0o644)),
                    verity: None,
                },
                // Records hold no mode: only the permission bits differ, so put them back.
                Action::Chmod,
            ),
            (
                Observed {
                    record: None,
                    live: Some(live),
                    verity: None,
                },
                Action::Hash,
            ),
            (Observed::default(), Action::Fetch),
            (
                Observed {
                    record: None,
                    live: Some(stamp(11, 0o444)),
                    verity: None,
                },
                Action::Repair,
            ),
            (
                Observed {
                    record: None,
                    live: Some(Stamp {
                        kind: FileKind::Symlink,
                        ..live
                    }),
                    verity: None,
                },
                Action::Repair,
            ),
        ];
        for (i, (seen, want)) in cases.into_iter().enumerate() {
            assert_eq!(one(&m, seen, &none).action, want, "case {i}");
        }
    }

    #[test]
    fn an_absent_asset_links_from_a_donor_with_its_digest() {
        let m = manifest(Some(10));
        let mut donors = HashMap::new();
        donors.insert(m.assets[0].sha256, PathBuf::from("/store/old/kernel"));
        let s = one(&m, Observed::default(), &donors);
        assert_eq!(
            s.action,
            Action::Link {
                from: "/store/old/kernel".into()
            }
        );
        assert_eq!(s.bytes_to_fetch, Some(0));
        assert_eq!(s.bytes_to_hash, 10);
        // A present but wrong file is repaired from the network, never linked over.
        let wrong = Observed {
            live: Some(stamp(3, 0o444)),
            ..Observed::default()
        };
        assert_eq!(one(&m, wrong, &donors).action, Action::Repair);
    }

    #[test]
    fn totals_and_subsets() {
        let m = manifest(None);
        let p = plan(
            &m,
            &[Observed::default()],
            None,
            &HashMap::new(),
            None,
            LedgerState::Absent,
        );
        assert!(!p.is_warm());
        assert_eq!(p.bytes_to_fetch(), None, "size unknown");
        let empty = plan(
            &m,
            &[Observed::default()],
            None,
            &HashMap::new(),
            Some(&[]),
            LedgerState::Absent,
        );
        assert!(empty.steps.is_empty() && empty.is_warm());
    }

    #[test]
    fn the_policy_override_applies() {
        let m = manifest(Some(10));
        let live = stamp(10, 0o444);
        let rec = Record::new(m.assets[0].sha256, &live, "1", 5_000, Method::Hashed, false);
        let seen = Observed {
            record: Some(rec),
            live: Some(live),
            verity: None,
        };
        let p = plan(
            &m,
            &[seen],
            Some(Policy::Always),
            &HashMap::new(),
            None,
            LedgerState::Ok,
        );
        assert_eq!(p.steps[0].action, Action::Hash);
        assert_eq!(p.steps[0].verdict, Verdict::Always);
    }
}
