//! arcbox-boot's `error` module: its variants, plus bootvault's own (the enum is
//! `#[non_exhaustive]`, so a host's `match` keeps a wildcard arm, as it must for arcbox-boot's).

use std::path::PathBuf;

/// Errors from boot-asset operations. Each names the asset, path or URL it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The manifest has no target for the configured architecture.
    #[error("architecture '{0}' not found in manifest")]
    ArchNotFound(String),

    /// A binary has no entry for the architecture.
    #[error("binary '{name}' has no target for architecture '{arch}'")]
    BinaryArchNotFound {
        /// The binary.
        name: String,
        /// The architecture asked for.
        arch: String,
    },

    /// A file does not hash to its manifest digest.
    #[error("sha256 mismatch for '{name}': expected {expected}, got {actual}")]
    ChecksumMismatch {
        /// The asset.
        name: String,
        /// The manifest digest.
        expected: String,
        /// What the bytes hashed to.
        actual: String,
    },

    /// The manifest's schema is not the configured version's major.
    #[error("unsupported manifest schema version {version}, expected {expected}")]
    UnsupportedSchema {
        /// The manifest's `schema_version`.
        version: u32,
        /// The major of the configured version.
        expected: u32,
    },

    /// The configuration cannot be used.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// Every source of an asset (or of the manifest) failed.
    #[error("download failed: {0}")]
    Download(String),

    /// A file or directory could not be read or written.
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),

    /// Anything else, with its reason.
    #[error("{0}")]
    Other(String),

    /// The manifest could not be fetched, read or trusted.
    #[error("manifest {source_url}: {message}")]
    Manifest {
        /// Where it came from (the CDN URL or the cached file).
        source_url: String,
        /// Why it failed.
        message: String,
    },

    /// The store could not be used (ledger, state dir, a bad path in the manifest).
    #[error(transparent)]
    Store(#[from] bootvault::Error),

    /// Several assets failed; each with its own error.
    #[error("{}", .0.iter().map(|(_, e)| e.to_string()).collect::<Vec<_>>().join("; "))]
    Assets(Vec<(String, bootvault::Error)>),

    /// The state dir would be writable by the guest.
    #[error(
        "state dir {} lies inside the guest-visible share {}; choose one outside it",
        state.display(),
        share.display()
    )]
    StateInShare {
        /// The state dir.
        state: PathBuf,
        /// The share root (the parent of the bin dir).
        share: PathBuf,
    },

    /// A blocking task panicked or was cancelled.
    #[error("background task failed: {0}")]
    Task(String),
}

/// Result of this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The error a host of arcbox-boot expects for the failed assets of one call: a single
    /// mismatch is [`Error::ChecksumMismatch`], failures that are all network failures are
    /// [`Error::Download`], anything else keeps each asset's typed error in [`Error::Assets`].
    pub(crate) fn from_assets(mut failed: Vec<(String, bootvault::Error)>) -> Error {
        if failed.len() == 1
            && let bootvault::Error::Mismatch {
                expected, actual, ..
            } = &failed[0].1
        {
            return Error::ChecksumMismatch {
                name: failed[0].0.clone(),
                expected: expected.to_hex(),
                actual: actual.to_hex(),
            };
        }
        if failed.iter().all(|(_, e)| {
            matches!(
                e,
                bootvault::Error::Fetch { .. } | bootvault::Error::Missing { .. }
            )
        }) {
            return Error::Download(
                failed
                    .drain(..)
                    .map(|(_, e)| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            );
        }
        Error::Assets(failed)
    }
}
