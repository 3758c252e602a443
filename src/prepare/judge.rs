//! The trust decision, as one pure function.
//!
//! `judge` compares a ledger record with the file's live stamp and the manifest's
//! expectation, and says *why* in its [`Verdict`]. `prepare`, `debug check` and `debug why` all
//! use it, so what the operator sees is exactly what the store decided.

use crate::digest::Sha256Digest;
use crate::ledger::Record;
use crate::manifest::Policy;
use crate::stamp::{FileKind, Stamp};
use serde::Serialize;

/// What the manifest expects of one asset.
#[derive(Clone, Copy, Debug)]
pub struct Expected {
    /// The manifest digest.
    pub sha256: Sha256Digest,
    /// The manifest size, when given.
    pub size: Option<u64>,
    /// The permission bits the file must have (the manifest mode, or the read-only default).
    pub mode: u32,
}

impl Expected {
    /// What `asset` expects.
    pub fn of(asset: &crate::manifest::Asset) -> Expected {
        Expected {
            sha256: asset.sha256,
            size: asset.size,
            mode: crate::fsutil::effective_mode(asset.mode),
        }
    }
}

/// One reason a record no longer vouches for a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Field {
    /// The file size differs from the record.
    Size,
    /// The modification time differs.
    Mtime,
    /// The inode change time differs (content or metadata was touched).
    Ctime,
    /// The inode differs (the file was replaced).
    Ino,
    /// The device differs (the file moved to another filesystem).
    Dev,
    /// The record vouches for another digest than the manifest expects.
    Digest,
    /// The record was taken in the same clock tick as the file's last change.
    Racy,
    /// The file's fs-verity digest differs from the record's (or can no longer be measured).
    Verity,
}

impl Field {
    /// The name used in JSON and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Size => "size",
            Field::Mtime => "mtime",
            Field::Ctime => "ctime",
            Field::Ino => "ino",
            Field::Dev => "dev",
            Field::Digest => "digest",
            Field::Racy => "racy",
            Field::Verity => "verity",
        }
    }
}

/// The outcome of `judge`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// The record matches the expectation and the live stamp: trust without reading.
    Fresh,
    /// The record would vouch, but the policy demands a full hash every time.
    Always,
    /// Nothing is at the path.
    Missing,
    /// The path holds a symlink, directory or other non-regular file: never trusted.
    NotRegular(FileKind),
    /// The file's size contradicts the manifest: it is certainly wrong.
    WrongSize {
        /// The manifest size.
        expected: u64,
        /// The live size.
        actual: u64,
    },
    /// The ledger has no record for the path.
    Unrecorded,
    /// The record vouches for the content, but the permission bits drifted from the manifest
    /// mode (a record imported from another tool, or an older bootvault): put back without
    /// reading the content.
    Mode {
        /// The manifest mode.
        expected: u32,
        /// The live permission bits.
        actual: u32,
    },
    /// The record no longer vouches; the fields say why (never empty).
    Stale(Vec<Field>),
}

impl Verdict {
    /// Whether the verdict lets a prepare skip reading the file.
    pub fn is_trusted(&self) -> bool {
        matches!(self, Verdict::Fresh)
    }

    /// The `debug check` state: `fresh`, `stale`, `missing` or `unrecorded`.
    pub fn state(&self) -> &'static str {
        match self {
            Verdict::Fresh | Verdict::Always => "fresh",
            Verdict::Missing => "missing",
            Verdict::Unrecorded => "unrecorded",
            Verdict::NotRegular(_)
            | Verdict::WrongSize { .. }
            | Verdict::Stale(_)
            | Verdict::Mode { .. } => "stale",
        }
    }

    /// The fields that differ, as `debug check` lists them.
    pub fn changed(&self) -> Vec<&'static str> {
        match self {
            Verdict::Stale(fields) => fields.iter().map(|f| f.as_str()).collect(),
            Verdict::NotRegular(_) => vec!["type"],
            Verdict::WrongSize { .. } => vec!["size"],
            Verdict::Mode { .. } => vec!["mode"],
            _ => Vec::new(),
        }
    }

    /// One line for humans and the events table.
    pub fn reason(&self) -> String {
        match self {
            Verdict::Fresh => "record matches the live stamp".into(),
            Verdict::Always => "policy is verify: always".into(),
            Verdict::Missing => "no file at the asset path".into(),
            Verdict::NotRegular(kind) => format!("path holds a {kind:?}, not a regular file"),
            Verdict::WrongSize { expected, actual } => {
                format!("size {actual} differs from the manifest size {expected}")
            }
            Verdict::Unrecorded => "no ledger record".into(),
            Verdict::Mode { expected, actual } => {
                format!("mode {actual:04o} differs from the manifest mode {expected:04o}")
            }
            Verdict::Stale(fields) => {
                let names: Vec<_> = fields.iter().map(|f| f.as_str()).collect();
                format!("stale record: {} changed", names.join(", "))
            }
        }
    }
}

/// Decides whether `record` still vouches for the file whose live stamp is `live`.
///
/// `verity` is the file's live fs-verity measurement, when the record holds one and the file
/// could be measured: a record with a verity digest vouches only while the file still measures
/// to it, and then even under `verify: always`, since the kernel checks every read against it.
pub fn judge(
    record: Option<&Record>,
    live: Option<&Stamp>,
    expected: &Expected,
    policy: Policy,
    verity: Option<&Sha256Digest>,
) -> Verdict {
    let Some(live) = live else {
        return Verdict::Missing;
    };
    if live.kind != FileKind::Regular {
        return Verdict::NotRegular(live.kind);
    }
    if let Some(size) = expected.size
        && live.size != size
    {
        return Verdict::WrongSize {
            expected: size,
            actual: live.size,
        };
    }
    let Some(record) = record else {
        return Verdict::Unrecorded;
    };
    let mut changed = Vec::new();
    if record.sha256 != expected.sha256 {
        changed.push(Field::Digest);
    }
    let checks = [
        (record.size == live.size, Field::Size),
        (record.mtime_ns == live.mtime_ns, Field::Mtime),
        (record.ctime_ns == live.ctime_ns, Field::Ctime),
        (record.ino == live.ino, Field::Ino),
        (record.dev == live.dev, Field::Dev),
    ];
    changed.extend(checks.iter().filter(|(same, _)| !same).map(|(_, f)| *f));
    if record.racy {
        changed.push(Field::Racy);
    }
    if record.verity.is_some() && record.verity.as_ref() != verity {
        changed.push(Field::Verity);
    }
    if !changed.is_empty() {
        return Verdict::Stale(changed);
    }
    if policy == Policy::Always && record.verity.is_none() {
        return Verdict::Always;
    }
    if live.perm != expected.mode {
        return Verdict::Mode {
            expected: expected.mode,
            actual: live.perm,
        };
    }
    Verdict::Fresh
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Method;

    const DIGEST: Sha256Digest = Sha256Digest([7; 32]);

    fn live() -> Stamp {
        Stamp {
            size: 4096,
            mtime_ns: 1_000_000_000,
            ctime_ns: 1_000_000_500,
            ino: 42,
            dev: 8,
            kind: FileKind::Regular,
            perm: 0o444,
        }
    }

    fn record_for(s: &Stamp) -> Record {
        Record::new(DIGEST, s, "v1", 2_000_000_000, Method::Hashed, false)
    }

    fn expected() -> Expected {
        Expected {
            mode: 0o444,
            sha256: DIGEST,
            size: Some(4096),
        }
    }

    #[test]
    fn matching_record_is_fresh_only_under_cached_policy() {
        let s = live();
        let r = record_for(&s);
        assert_eq!(
            judge(Some(&r), Some(&s), &expected(), Policy::Cached, None),
            Verdict::Fresh
        );
        assert_eq!(
            judge(Some(&r), Some(&s), &expected(), Policy::Always, None),
            Verdict::Always
        );
        assert!(!Verdict::Always.is_trusted());
    }

    #[test]
    fn every_stamp_field_is_checked_on_its_own() {
        type Mutate = fn(&mut Stamp);
        let cases: [(Mutate, Field); 5] = [
            (|s| s.size += 1, Field::Size),
            (|s| s.mtime_ns += 1, Field::Mtime),
            (|s| s.ctime_ns += 1, Field::Ctime),
            (|s| s.ino += 1, Field::Ino),
            (|s| s.dev += 1, Field::Dev),
        ];
        for (mutate, field) in cases {
            let s = live();
            let r = record_for(&s);
            let mut changed = s;
            mutate(&mut changed);
            // Size is also enforced against the manifest; judge the pure stamp change here.
            let exp = Expected {
                sha256: DIGEST,
                size: None,
                mode: 0o444,
            };
            let v = judge(Some(&r), Some(&changed), &exp, Policy::Cached, None);
            assert_eq!(v, Verdict::Stale(vec![field]), "{field:?}");
            assert_eq!(v.state(), "stale");
            assert_eq!(v.changed(), vec![field.as_str()]);
        }
    }

    #[test]
    fn content_rewritten_with_mtime_restored_is_caught_by_ctime() {
        let s = live();
        let r = record_for(&s);
        let mut tampered = s;
        tampered.ctime_ns += 3_000_000; // the kernel sets ctime on write and on utimensat
        let v = judge(Some(&r), Some(&tampered), &expected(), Policy::Cached, None);
        assert_eq!(v, Verdict::Stale(vec![Field::Ctime]));
    }

    #[test]
    fn same_tick_rewrite_is_never_trusted_when_the_record_is_racy() {
        // An injected same-tick stamp: the rewrite leaves every field identical.
        let s = live();
        let r = Record::new(
            DIGEST,
            &s,
            "v1",
            s.ctime_ns,
            Method::Hashed,
            s.is_racy(s.ctime_ns),
        );
        assert!(r.racy);
        let v = judge(Some(&r), Some(&s), &expected(), Policy::Cached, None);
        assert_eq!(v, Verdict::Stale(vec![Field::Racy]));
        // The same record taken one tick later would be clean.
        let later = Record::new(
            DIGEST,
            &s,
            "v1",
            s.ctime_ns + 1,
            Method::Hashed,
            s.is_racy(s.ctime_ns + 1),
        );
        assert_eq!(
            judge(Some(&later), Some(&s), &expected(), Policy::Cached, None),
            Verdict::Fresh
        );
    }

    #[test]
    fn a_record_for_another_digest_never_vouches() {
        let s = live();
        let mut r = record_for(&s);
        r.sha256 = Sha256Digest([9; 32]);
        assert_eq!(
            judge(Some(&r), Some(&s), &expected(), Policy::Cached, None),
            Verdict::Stale(vec![Field::Digest])
        );
    }

    #[test]
    fn several_changes_are_all_listed() {
        let s = live();
        let mut r = record_for(&s);
        r.racy = true;
        let mut other = s;
        other.ino = 99;
        other.ctime_ns += 1;
        let v = judge(Some(&r), Some(&other), &expected(), Policy::Cached, None);
        assert_eq!(
            v,
            Verdict::Stale(vec![Field::Ctime, Field::Ino, Field::Racy])
        );
    }

    #[test]
    fn missing_unrecorded_wrong_size_and_non_regular() {
        let s = live();
        let r = record_for(&s);
        assert_eq!(
            judge(Some(&r), None, &expected(), Policy::Cached, None),
            Verdict::Missing
        );
        assert_eq!(
            judge(None, Some(&s), &expected(), Policy::Cached, None),
            Verdict::Unrecorded
        );
        let mut short = s;
        short.size = 10;
        assert_eq!(
            judge(Some(&r), Some(&short), &expected(), Policy::Cached, None),
            Verdict::WrongSize {
                expected: 4096,
                actual: 10
            }
        );
        for kind in [FileKind::Symlink, FileKind::Directory, FileKind::Other] {
            let mut odd = s;
            odd.kind = kind;
            let v = judge(Some(&r), Some(&odd), &expected(), Policy::Cached, None);
            assert_eq!(v, Verdict::NotRegular(kind));
            assert!(!v.is_trusted());
        }
    }

    #[test]
    fn only_fresh_is_trusted() {
        let all = [
            Verdict::Fresh,
            Verdict::Always,
            Verdict::Missing,
            Verdict::NotRegular(FileKind::Symlink),
            Verdict::WrongSize {
                expected: 1,
                actual: 2,
            },
            Verdict::Unrecorded,
            Verdict::Stale(vec![Field::Racy]),
        ];
        let trusted: Vec<_> = all.iter().filter(|v| v.is_trusted()).collect();
        assert_eq!(trusted, vec![&Verdict::Fresh]);
        for v in &all {
            assert!(!v.reason().is_empty());
        }
    }

    #[test]
    fn a_verity_record_vouches_under_always_only_while_it_measures() {
        let s = live();
        let mut r = record_for(&s);
        let v = Sha256Digest([9; 32]);
        r.verity = Some(v);
        assert_eq!(
            judge(Some(&r), Some(&s), &expected(), Policy::Always, Some(&v)),
            Verdict::Fresh
        );
        let other = Sha256Digest([1; 32]);
        for measured in [None, Some(&other)] {
            assert_eq!(
                judge(Some(&r), Some(&s), &expected(), Policy::Always, measured),
                Verdict::Stale(vec![Field::Verity])
            );
            assert_eq!(
                judge(Some(&r), Some(&s), &expected(), Policy::Cached, measured),
                Verdict::Stale(vec![Field::Verity])
            );
        }
        // A record without verity ignores a measurement.
        let plain = record_for(&s);
        assert_eq!(
            judge(
                Some(&plain),
                Some(&s),
                &expected(),
                Policy::Always,
                Some(&v)
            ),
            Verdict::Always
        );
    }

    #[test]
    fn drifted_mode_is_its_own_verdict_and_never_trusted() {
        let mut s = live();
        s.perm = 0o644;
        let r = record_for(&s);
        let v = judge(Some(&r), Some(&s), &expected(), Policy::Cached, None);
        assert_eq!(
            v,
            Verdict::Mode {
                expected: 0o444,
                actual: 0o644
            }
        );
        assert!(!v.is_trusted());
        assert_eq!(v.changed(), vec!["mode"]);
        // Content first: a stale record is stale whatever the mode.
        let mut moved = s;
        moved.ino += 1;
        assert_eq!(
            judge(Some(&r), Some(&moved), &expected(), Policy::Cached, None),
            Verdict::Stale(vec![Field::Ino])
        );
    }
}
