//! Error types of the library. Every variant names the asset, path or URL it is about.

use crate::digest::Sha256Digest;
use std::path::PathBuf;

/// Result alias for the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in bootvault.
///
/// Per-asset failures of a prepare are in [`crate::AssetReport::result`]; a host matches on the
/// variant to tell a missing asset from a mismatch from a network failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The manifest is malformed; the message names the asset and the field.
    #[error("invalid manifest {origin}: {message}")]
    Manifest {
        /// Where the manifest came from (a path, or `<memory>`).
        origin: String,
        /// What is wrong, naming the asset and the field.
        message: String,
    },

    /// A file or directory could not be read, written or placed.
    #[error("{path}: {action}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },

    /// An I/O failure while preparing one asset: the asset first, then the path.
    #[error("asset {name}: {path}: {action}: {source}")]
    AssetIo {
        /// The asset.
        name: String,
        /// The file or directory (possibly a partial download or a lock file).
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },

    /// The bytes on disk or from every source do not hash to the manifest digest.
    #[error("asset {name}: sha256 mismatch at {path}: expected {expected}, actual {actual}")]
    Mismatch {
        /// The asset.
        name: String,
        /// Where the bytes were.
        path: PathBuf,
        /// The manifest digest.
        expected: Sha256Digest,
        /// What the bytes hashed to.
        actual: Sha256Digest,
    },

    /// The asset has the wrong size (a body ran past the manifest `size`, or the file is short).
    #[error("asset {name}: size mismatch at {path}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The asset.
        name: String,
        /// Where the bytes were.
        path: PathBuf,
        /// The manifest size.
        expected: u64,
        /// The size found.
        actual: u64,
    },

    /// The asset is absent and may not be fetched (offline, or it has no URL).
    #[error("asset {name}: missing at {path} ({why})")]
    Missing {
        /// The asset.
        name: String,
        /// Where it should be.
        path: PathBuf,
        /// Why it could not be fetched.
        why: String,
    },

    /// The asset path resolves outside ROOT or through a symlink that may not be trusted.
    #[error("asset {name}: unsafe path {path}: {why}")]
    UnsafePath {
        /// The asset.
        name: String,
        /// The offending path.
        path: PathBuf,
        /// Why it is refused.
        why: String,
    },

    /// Every source of the asset failed; each URL is listed with its reason.
    #[error("asset {name}: download failed: {}", join_attempts(.attempts))]
    Fetch {
        /// The asset.
        name: String,
        /// One entry per source tried, in order.
        attempts: Vec<FetchAttempt>,
    },

    /// The file changed while it was being hashed or placed.
    #[error("asset {name}: {path} changed while it was being verified")]
    Unstable {
        /// The asset.
        name: String,
        /// The file.
        path: PathBuf,
    },

    /// The prepare was cancelled (a token, a dropped future, or a signal). Partial downloads
    /// are kept and resume on the next prepare.
    #[error("asset {name}: cancelled; a partial download resumes on the next prepare")]
    Cancelled {
        /// The asset that was in progress.
        name: String,
    },

    /// ROOT or the state directory cannot be used (not a directory, unreadable, ...). Reported
    /// by [`crate::StoreBuilder::open`] before any per-asset work.
    #[error("store {path}: {why}")]
    Store {
        /// ROOT or the state dir.
        path: PathBuf,
        /// Why it cannot be used.
        why: String,
    },

    /// Preparing the asset failed in an unexpected way (a worker panicked).
    #[error("asset {name}: internal error: {message}")]
    Internal {
        /// The asset.
        name: String,
        /// What happened.
        message: String,
    },

    /// The ledger could not be opened or written (the prepare itself degrades to re-hashing).
    #[error("ledger {path}: {message}")]
    Ledger {
        /// The ledger file.
        path: PathBuf,
        /// What failed.
        message: String,
    },

    /// A document without a known digest (a manifest) could not be fetched; each try is
    /// listed with its reason.
    #[error("fetch {url}: {}", join_attempts(.attempts))]
    Document {
        /// The document's URL.
        url: String,
        /// One entry per try, in order.
        attempts: Vec<FetchAttempt>,
    },

    /// Downloads cannot start: the store's HTTP client (or the runtime that drives it) could
    /// not be set up from its network options (an unreadable or invalid CA certificate, for
    /// one). Not about one asset: a prepare reports it per asset as an [`Error::Fetch`].
    #[error("{why}")]
    Downloader {
        /// What failed.
        why: String,
    },

    /// A store operation failed in an unexpected way outside any one asset (the worker thread
    /// of [`crate::Store::prepare_async`] panicked).
    #[error("internal error: {message}")]
    Worker {
        /// What happened.
        message: String,
    },

    /// The legacy `.verified.json` could not be read.
    #[error("legacy cache {path}: {message}")]
    Legacy {
        /// The legacy file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// One source tried by a download, and why it failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FetchAttempt {
    /// The URL; `None` when the failure came before any URL was tried (no URL to fetch from,
    /// no HTTP client).
    pub url: Option<String>,
    /// Why it failed (HTTP status, connection error, digest mismatch, ...).
    pub reason: String,
}

impl std::fmt::Display for FetchAttempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A password in a source URL (`https://user:pass@…`) is never printed.
        let reason = crate::redact::text(&self.reason);
        match &self.url {
            None => f.write_str(&reason),
            Some(url) => write!(f, "{}: {reason}", crate::redact::url(url)),
        }
    }
}

fn join_attempts(attempts: &[FetchAttempt]) -> String {
    attempts
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join("; ")
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

    /// The asset this error is about, when it is about one.
    pub fn asset(&self) -> Option<&str> {
        match self {
            Error::AssetIo { name, .. }
            | Error::Mismatch { name, .. }
            | Error::SizeMismatch { name, .. }
            | Error::Missing { name, .. }
            | Error::UnsafePath { name, .. }
            | Error::Fetch { name, .. }
            | Error::Unstable { name, .. }
            | Error::Cancelled { name }
            | Error::Internal { name, .. } => Some(name),
            _ => None,
        }
    }

    /// Names the asset in a plain I/O error, so every per-asset failure says which asset
    /// (a lock or partial path alone means nothing to an operator).
    pub(crate) fn for_asset(self, name: &str) -> Error {
        match self {
            Error::Io {
                path,
                action,
                source,
            } => Error::AssetIo {
                name: name.to_string(),
                path,
                action,
                source,
            },
            Error::Fetch { attempts, .. } => Error::Fetch {
                name: name.to_string(),
                attempts,
            },
            Error::Downloader { why } => Error::Fetch {
                name: name.to_string(),
                attempts: vec![FetchAttempt {
                    url: None,
                    reason: why,
                }],
            },
            other => other,
        }
    }

    /// The kind of failure in one word, for JSON (`missing`, `mismatch`, `fetch`, `io`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Manifest { .. } => "manifest",
            Error::Io { .. } | Error::AssetIo { .. } => "io",
            Error::Mismatch { .. } => "mismatch",
            Error::SizeMismatch { .. } => "size",
            Error::Missing { .. } => "missing",
            Error::UnsafePath { .. } => "unsafe-path",
            Error::Fetch { .. } | Error::Document { .. } | Error::Downloader { .. } => "fetch",
            Error::Unstable { .. } => "unstable",
            Error::Cancelled { .. } => "cancelled",
            Error::Store { .. } => "store",
            Error::Internal { .. } | Error::Worker { .. } => "internal",
            Error::Ledger { .. } => "ledger",
            Error::Legacy { .. } => "legacy",
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_downloader_failure_is_named_for_the_asset_it_stopped() {
        let e = Error::Downloader {
            why: "cannot build HTTP client: bad CA".into(),
        };
        assert_eq!(e.asset(), None);
        assert_eq!(e.kind(), "fetch");
        assert_eq!(e.to_string(), "cannot build HTTP client: bad CA");
        let e = e.for_asset("kernel");
        assert_eq!(e.asset(), Some("kernel"));
        assert_eq!(
            e.to_string(),
            "asset kernel: download failed: cannot build HTTP client: bad CA"
        );
    }
}
