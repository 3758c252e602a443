//! Ledger schema migrations.
//!
//! NEVER REORDER, NEVER EDIT A SHIPPED STEP. Add a new numbered file and append it to `STEPS`.
//!
//! Each step is a function over one write transaction. [`apply`] runs the pending steps and
//! bumps `meta.schema_version` in that same transaction, so a ledger is always at exactly one
//! version. A ledger whose version is above [`CURRENT`] was written by a newer bootvault: it is
//! left untouched and the store re-hashes (see `Ledger::migrate`).

pub mod legacy;
#[path = "0001_records.rs"]
mod m0001_records;
#[path = "0002_events.rs"]
mod m0002_events;
#[path = "0003_manifests.rs"]
mod m0003_manifests;

use redb::WriteTransaction;

/// One migration step.
pub type Step = fn(&WriteTransaction) -> Result<(), redb::Error>;

/// The steps, in order; step `i` brings the schema from version `i` to `i + 1`.
pub const STEPS: &[(&str, Step)] = &[
    ("0001_records", m0001_records::up),
    ("0002_events", m0002_events::up),
    ("0003_manifests", m0003_manifests::up),
];

/// The schema version this binary writes.
pub const CURRENT: u64 = STEPS.len() as u64;

/// Applies every step after `from` and records the new version, inside `txn`.
pub fn apply(txn: &WriteTransaction, from: u64) -> Result<(), redb::Error> {
    for (_, step) in STEPS.iter().skip(from as usize) {
        step(txn)?;
    }
    let mut meta = txn.open_table(crate::ledger::META)?;
    meta.insert(crate::ledger::SCHEMA_KEY, CURRENT)?;
    Ok(())
}

/// Applies only the first `upto` steps (for building frozen fixtures of past versions).
#[doc(hidden)]
#[cfg_attr(not(feature = "__internals"), allow(dead_code))]
pub fn apply_upto(txn: &WriteTransaction, upto: u64) -> Result<(), redb::Error> {
    for (_, step) in STEPS.iter().take(upto as usize) {
        step(txn)?;
    }
    let mut meta = txn.open_table(crate::ledger::META)?;
    meta.insert(crate::ledger::SCHEMA_KEY, upto)?;
    Ok(())
}
