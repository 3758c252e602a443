//! bootvault: a store of verified VM boot assets.
//!
//! Given a [`Manifest`] (name, path, SHA-256, size, URLs and policy per asset), a [`Store`]
//! makes every asset present and verified under its ROOT, and remembers each verification in a
//! redb ledger so that a warm prepare trusts unchanged files without reading them. The modules,
//! one per concept: [`manifest`] parses and validates both manifest formats; [`digest`] hashes
//! streams with SHA-256; [`stamp`] is the stat signature and the racy-clean rule; [`judge`] is
//! the pure trust decision behind `prepare`, `debug check` and `debug why`; [`ledger`] holds the
//! redb tables and value encodings, upgraded by the steps in [`migrations`]; [`lock`] gives
//! single-flight per asset across processes; [`fetch`] downloads with retries and resume;
//! [`place`] keeps paths inside ROOT and places files atomically; [`store`] is the facade;
//! (the loopback origin and the demo data live in the `bootvault-testkit` member);
//! [`verity`] is the fs-verity tier where the filesystem has it.
//!
//! ```
//! let manifest = bootvault::Manifest::from_json_str(&format!(
//!     r#"{{"version": "2026.11.0", "assets": [{{"name": "kernel", "sha256": "{}"}}]}}"#,
//!     "ab".repeat(32)
//! ))?;
//! assert_eq!(manifest.assets[0].path, "kernel"); // the path defaults to the name
//!
//! let root = tempfile::tempdir()?;
//! let store = bootvault::Store::builder(root.path()).offline(true).open()?;
//! let report = store.prepare(&manifest)?;
//! assert!(report.failed()); // missing, and offline: exit code 1 in the CLI
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod digest;
pub mod error;
pub mod fetch;
pub mod judge;
pub mod ledger;
pub mod lock;
pub mod manifest;
#[path = "../migrations/mod.rs"]
pub mod migrations;
pub mod place;
pub mod stamp;
pub mod store;
pub mod verity;

pub use digest::Sha256Digest;
pub use error::{Error, Result};
pub use manifest::{Asset, Manifest, ParseOptions, Policy};
pub use store::{AssetReport, Outcome, Progress, Report, Store, StoreBuilder, VerifiedFile};

/// Name of the default state directory inside ROOT.
pub const STATE_DIR_NAME: &str = ".bootvault";
