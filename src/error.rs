//! Error types of the library. Every variant names the asset, path or URL it is about.

use std::path::PathBuf;

/// Result alias for the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in bootvault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The manifest is malformed; the message names the asset and the field.
    #[error("invalid manifest {origin}: {message}")]
    Manifest { origin: String, message: String },

    /// A file or directory could not be read, written or placed.
    #[error("{path}: {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// The bytes on disk or from every source do not hash to the manifest digest.
    #[error("asset {name}: sha256 mismatch at {path}: expected {expected}, actual {actual}")]
    Mismatch {
        name: String,
        path: PathBuf,
        expected: String,
        actual: String,
    },

    /// The asset has the wrong size (a body ran past the manifest `size`, or the file is short).
    #[error("asset {name}: size mismatch at {path}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        name: String,
        path: PathBuf,
        expected: u64,
        actual: u64,
    },

    /// The asset is absent and may not be fetched (offline, or it has no URL).
    #[error("asset {name}: missing at {path} ({why})")]
    Missing {
        name: String,
        path: PathBuf,
        why: String,
    },

    /// The asset path resolves outside ROOT or through a symlink that may not be trusted.
    #[error("asset {name}: unsafe path {path}: {why}")]
    UnsafePath {
        name: String,
        path: PathBuf,
        why: String,
    },

    /// Every source of the asset failed; each URL is listed with its reason.
    #[error("asset {name}: download failed: {}", .attempts.join("; "))]
    Fetch { name: String, attempts: Vec<String> },

    /// The file changed while it was being hashed or placed.
    #[error("asset {name}: {path} changed while it was being verified")]
    Unstable { name: String, path: PathBuf },

    /// The ledger could not be opened or written (the prepare itself degrades to re-hashing).
    #[error("ledger {path}: {message}")]
    Ledger { path: PathBuf, message: String },

    /// The legacy `.verified.json` could not be read.
    #[error("legacy cache {path}: {message}")]
    Legacy { path: PathBuf, message: String },
}

impl Error {
    /// Builds an [`Error::Io`] from a path, what was being done, and the source error.
    pub fn io(path: impl Into<PathBuf>, action: &'static str, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            action,
            source,
        }
    }

    /// Whether this error means bad input (exit code 2) rather than a failed asset (exit 1).
    pub fn is_usage(&self) -> bool {
        matches!(self, Error::Manifest { .. } | Error::Legacy { .. })
    }
}

/// Adds path context to `std::io::Result`.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>, action: &'static str) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>, action: &'static str) -> Result<T> {
        self.map_err(|e| Error::io(path, action, e))
    }
}
