//! bootvault: a store of verified VM boot assets.
//!
//! Given a [`Manifest`] (name, path, SHA-256, size, URLs and policy per asset), a [`Store`]
//! makes every asset present and verified under its ROOT, and remembers each verification in a
//! redb ledger so that a warm prepare trusts unchanged files without reading them.
//!
//! The common case: open a store, prepare a manifest, hand the kernel to the VMM.
//!
//! ```no_run
//! use bootvault::{Manifest, ParseOptions, Store};
//!
//! let manifest = Manifest::from_file("boot.json".as_ref(), &ParseOptions::default())?;
//! let store = Store::open("/var/lib/vm/boot")?; // creates ROOT if it is missing
//! let report = store.prepare(&manifest)?;
//! for asset in &report.assets {
//!     if let Err(e) = &asset.result {
//!         eprintln!("{e}"); // names the asset and the reason; match on it for the kind
//!     }
//! }
//! let kernel = report.asset("kernel").expect("in the manifest");
//! println!("boot {}", kernel.path.display());
//! # Ok::<(), bootvault::Error>(())
//! ```
//!
//! A tokio host calls [`Store::prepare_async`] (dropping its future cancels the prepare);
//! per-call options (progress, a subset of assets, a policy override, a [`CancelToken`]) are
//! in [`PrepareOptions`]; [`Store::open_verified`] hands out a descriptor of exactly the
//! verified inode.
//!
//! # The panic hook
//!
//! redb may panic on a damaged ledger file; bootvault catches that and rebuilds the ledger by
//! re-hashing, so it is not a crash, and its "thread panicked" text must not reach a host's
//! users. To keep it off stderr, the first ledger call of the process installs a panic hook
//! ([`std::panic::set_hook`]) that wraps the hook in place then (the host's, or the default):
//! it stays silent for a panic raised inside a ledger call that bootvault is catching on that
//! thread, and passes every other panic, of any thread, to the wrapped hook unchanged. It is
//! installed once and never removed. A host that sets its own hook after that replaces it: the
//! store works the same, and the host's hook also sees redb's caught panics
//! (`tests/panic_hook.rs` holds the library to this).
//!
//! The modules, one per concept (most are private), in layers that only import downwards (no
//! import cycle; `.ci/run` checks it):
//!
//! - at the bottom, plain data and helpers that know no store: `digest` (SHA-256),
//!   `asset_path` (paths under ROOT that are safe by construction), `error`,
//!   `cancel`, `fsutil` (regular-file opens, modes, pid liveness), `sys` (per platform),
//!   `reference` (`oci://` references), `oci_options` and `http` (network settings and the one
//!   client builder), `state` (`StateDir`: every name under the state dir, built and parsed in
//!   one place);
//! - `stamp` (the stat signature and the racy-clean rule), `manifest` (the native format),
//!   `lock` (single flight across processes), `place` (paths kept inside ROOT, atomic
//!   placement), `verity` (the fs-verity tier);
//! - `ledger` (the redb tables, upgraded by the steps of its submodule `migrations`);
//! - `sign`, `rollback`, `oci` (the registry client) and `fetch` (downloads with retries and
//!   resume), `chunk_index` and `delta` (delta upgrades: the index format and the patch
//!   mechanics);
//! - `context` (an opened store's parts: ROOT, state dir, ledger, options, fetcher);
//! - `prepare` (one call, top to bottom: `observe` → `plan` over `judge`, the one pure trust
//!   decision behind prepare, `open_verified` and `debug` → `execute` on workers → `commit` in
//!   batched write transactions; `patch` for delta steps);
//! - `inspect` (the read-only views and `gc`);
//! - at the top `store`, the facade: [`Store`] opens things and hands them to a `Prepare` or
//!   a view; every public method of a store is in its one `impl Store`.

#![warn(missing_docs)]

/// Declares a module that is public only with the `__internals` feature (the workspace's own
/// tests, benches and fuzz targets); hosts see just the re-exports below.
macro_rules! internal {
    ($($name:ident),* $(,)?) => {$(
        #[cfg(feature = "__internals")]
        #[doc(hidden)]
        pub mod $name;
        #[cfg(not(feature = "__internals"))]
        mod $name;
    )*};
}

/// Declares methods that are public only with the `__internals` feature (the workspace's own
/// tests and fuzz targets call them) and crate-private otherwise: a host never sees them.
macro_rules! internal_fn {
    ($(#[$meta:meta])* fn $($rest:tt)*) => {
        #[cfg(feature = "__internals")]
        #[doc(hidden)]
        $(#[$meta])* pub fn $($rest)*
        #[cfg(not(feature = "__internals"))]
        $(#[$meta])* pub(crate) fn $($rest)*
    };
}

internal!(
    digest, fetch, ledger, lock, manifest, place, report, stamp, verity
);
// The pure decisions of a prepare, inside `prepare/`; public for the workspace's own tests.
#[cfg(feature = "__internals")]
#[doc(hidden)]
pub use prepare::{judge, plan};
// Delta upgrades: the chunk index format, and seeds + patch steps.
internal!(chunk_index, delta);
mod asset_path;
mod cancel;
mod context;
mod error;
mod fsutil;
mod http;
mod inspect;
mod oci_options;
mod prepare;
mod reference;
mod state;
// The ledger's schema steps (redb transactions): the workspace's own tests only.
#[cfg(feature = "__internals")]
#[doc(hidden)]
pub use ledger::migrations;
pub mod oci;
pub mod redact;
pub mod rollback;
pub mod sign;
mod store;
pub(crate) mod sys;

pub use cancel::CancelToken;
pub use chunk_index::IndexRef;
pub use delta::write_index;
pub use digest::{DigestError, Sha256Digest};
pub use error::{Error, FetchAttempt, IndexError, Result};
pub use fetch::FetchOptions;
pub use inspect::{Explanation, GcReport, Inspection, Usage, VerifyState};
pub use ledger::migrations::legacy::{FILE_NAME as LEGACY_FILE_NAME, ImportReport};
pub use ledger::{Event, LedgerState, Method, Provenance, Record};
pub use manifest::{
    Asset, AssetPath, Manifest, ParseOptions, Policy, read_manifest_text, validate_name,
    validate_path,
};
pub use prepare::PrepareOptions;
pub use prepare::judge::{Field, Verdict};
pub use prepare::plan::{Action, Plan, Step};
pub use report::{AssetReport, Outcome, Progress, ProgressFn, Report};
pub use stamp::{FileKind, Stamp};
pub use store::{Store, StoreBuilder, VerifiedFile};
pub use sys::FAMILY as PLATFORM_FAMILY;

pub use manifest::read_local;

/// Name of the default state directory inside ROOT.
pub const STATE_DIR_NAME: &str = ".bootvault";
