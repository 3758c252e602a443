//! Error types of the library. Every variant names the asset, path or URL it is about.
//!
//! Every public fallible function returns [`Result`], so `?` carries any failure into one
//! [`Error`] (only the plain I/O helpers return `std::io::Result`). The subsystems with several kinds of failure (registry, signatures, rollback
//! marks, digests, chunk indexes) keep a typed kind enum, carried by one `Error` variant
//! ([`Error::Registry`], [`Error::Signature`], [`Error::Rollback`], [`Error::Digest`],
//! [`Error::Index`]) whose text and `source()` are the kind's own. The kinds live here, at
//! the bottom of the layering, so that `Error` can name them; their modules re-export them
//! (`oci::OciError`, `sign::SignError`, `rollback::RollbackError`).

use crate::digest::{DigestError, Sha256Digest};
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
    /// An asset path is not one [`crate::validate_path`] accepts (the text is the path and
    /// what is wrong with it).
    #[error("{}", quoted(.path, .why))]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        why: String,
    },

    /// An asset name is not one [`crate::validate_name`] accepts (the text is the name and
    /// what is wrong with it).
    #[error("{}", quoted(.name, .why))]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        why: String,
    },

    /// Text that is not a SHA-256 digest; match [`DigestError`] for the kind.
    #[error(transparent)]
    Digest {
        /// What is wrong with the text.
        #[from]
        source: DigestError,
    },

    /// A registry operation or a remote manifest failed; match [`OciError`] for the kind
    /// (a bad reference and "not a set" are bad input, the others failures to fetch).
    #[error(transparent)]
    Registry {
        /// What failed.
        #[from]
        source: OciError,
    },

    /// A key could not be used, or a manifest's signature is missing or refused; match
    /// [`SignError`] for the kind.
    #[error(transparent)]
    Signature {
        /// What failed.
        #[from]
        source: SignError,
    },

    /// A signed manifest is older than the one accepted before, or the rollback marks could
    /// not be read or written; match [`RollbackError`] for the kind.
    #[error(transparent)]
    Rollback {
        /// What failed.
        #[from]
        source: RollbackError,
    },

    /// Bytes that are not a valid chunk index; match [`IndexError`] for the kind.
    #[error(transparent)]
    Index {
        /// What is wrong with them.
        #[from]
        source: IndexError,
    },
}

/// Errors of registry operations (publish, manifest resolution). Blob downloads report through
/// the fetcher's per-URL attempts instead. Carried by [`Error::Registry`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OciError {
    /// The reference is not `oci://HOST[:PORT]/REPO[:TAG|@sha256:DIGEST]`.
    #[error("invalid registry reference {reference:?}: {why}")]
    Reference {
        /// The reference as given.
        reference: String,
        /// What is wrong with it.
        why: String,
    },
    /// A request to the registry failed or was refused.
    #[error("{}: {}", crate::redact::text(.what), crate::redact::text(.why))]
    Registry {
        /// The request (or the manifest being resolved).
        what: String,
        /// What the registry answered, or why it could not be reached.
        why: String,
    },
    /// A file to publish does not match its manifest entry; nothing of it was uploaded.
    #[error("asset {name}: {path} does not match the manifest: {why}; not uploaded")]
    Mismatch {
        /// The asset.
        name: String,
        /// The file that was to be uploaded.
        path: PathBuf,
        /// Digest or size, found and expected.
        why: String,
    },
    /// The file of an asset to publish is missing or unreadable; nothing was uploaded.
    #[error("asset {name}: {path}: {source}; nothing uploaded")]
    AssetFile {
        /// The asset.
        name: String,
        /// The file that was to be uploaded.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The registry answered, but holds no bootvault set under the reference: no such tag (or
    /// repository), or an artifact of another kind (its config media type is not
    /// `application/vnd.bootvault.set.v1+json`). Bad input, as a wrong reference is, not a failure to fetch.
    #[error("{}: {}", crate::redact::text(.what), crate::redact::text(.why))]
    NotASet {
        /// The manifest being resolved.
        what: String,
        /// What each registry or mirror answered.
        why: String,
    },
    /// A local file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Why a key could not be used or a manifest's signature was refused. Carried by
/// [`Error::Signature`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The text of a public key ([`crate::sign::TrustedKey::parse`]) is not a minisign key.
    #[error("key: {why}")]
    KeyText {
        /// What is wrong with it.
        why: String,
    },
    /// A key file could not be read or is not a minisign key.
    #[error("key {path}: {why}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The manifest carries no signature.
    #[error("manifest {}: not signed ({why})", crate::redact::url(.origin))]
    Missing {
        /// The manifest reference or URL.
        origin: String,
        /// Why a signature was required.
        why: String,
    },
    /// The signature is malformed, by an untrusted key, or does not match the bytes.
    #[error("manifest {}: signature refused: {why}", crate::redact::url(.origin))]
    Invalid {
        /// The manifest reference or URL.
        origin: String,
        /// Malformed, untrusted key, or not matching the bytes.
        why: String,
    },
    /// Signing failed.
    #[error("cannot sign {origin}: {why}")]
    Sign {
        /// The manifest being signed.
        origin: String,
        /// What failed (key, password).
        why: String,
    },
}

/// Why a manifest was refused as a rollback, or the marks could not be read or written.
/// Carried by [`Error::Rollback`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RollbackError {
    /// The offered manifest is older than (or cannot be ordered after) the one accepted.
    #[error(
        "manifest {origin}: version {offered} is older than version {accepted} that this store \
         already accepted from {key} ({times}); refusing a rollback (pass --allow-downgrade to \
         accept it)"
    )]
    Downgrade {
        /// The manifest reference or URL.
        origin: String,
        /// The source the mark is kept for.
        key: String,
        /// Version offered.
        offered: String,
        /// Version accepted before.
        accepted: String,
        /// Both signature times, as text.
        times: String,
    },
    /// The marks file could not be read or written.
    #[error("{path}: {why}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        why: String,
    },
}

/// Why bytes are not a valid chunk index. Carried by [`Error::Index`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum IndexError {
    /// Too short for the header.
    #[error("chunk index truncated: {len} bytes, header needs {needs}")]
    Truncated {
        /// The length of the bytes.
        len: usize,
        /// The length of the header.
        needs: usize,
    },
    /// The magic is not `BVCINDEX`.
    #[error("not a bootvault chunk index (bad magic)")]
    Magic,
    /// A version this code does not read.
    #[error("chunk index version {found} is not supported (this bootvault reads {reads})")]
    Version {
        /// The version in the header.
        found: u16,
        /// The version this code reads.
        reads: u16,
    },
    /// The header is inconsistent (sizes, count, total).
    #[error("chunk index header: {0}")]
    Header(&'static str),
    /// A chunk entry is invalid.
    #[error("chunk index entry {index}: {why}")]
    Entry {
        /// The entry number.
        index: u64,
        /// What is wrong.
        why: &'static str,
    },
}

/// The text of [`Error::InvalidPath`] and [`Error::InvalidName`]: the quoted input, then what
/// is wrong with it (just that for an empty input).
fn quoted(input: &str, why: &str) -> String {
    if input.is_empty() {
        why.to_string()
    } else {
        format!("{input:?}: {why}")
    }
}

impl crate::digest::Sha256Digest {
    /// Parses 64 hex digits (either case); anything else is an [`Error::Digest`].
    //
    // Here rather than in `digest`: `error` names `Sha256Digest` (in `Mismatch`), so `digest`
    // sits below it and cannot name `Error`.
    pub fn from_hex(s: &str) -> Result<Self> {
        Ok(crate::digest::parse_hex(s)?)
    }
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

    /// The kind of failure in one word, for JSON (`missing`, `mismatch`, `fetch`, `io`,
    /// `registry`, `signature`, ...).
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
            Error::InvalidPath { .. } => "invalid-path",
            Error::InvalidName { .. } => "invalid-name",
            Error::Digest { .. } => "digest",
            Error::Registry { .. } => "registry",
            Error::Signature { .. } => "signature",
            Error::Rollback { .. } => "rollback",
            Error::Index { .. } => "index",
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
    fn every_failure_is_one_error_whose_kind_a_caller_can_match() {
        let e = crate::validate_path("a/../x").unwrap_err();
        assert!(
            matches!(&e, Error::InvalidPath { path, .. } if path == "a/../x"),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "\"a/../x\": '..' component");
        assert_eq!(e.kind(), "invalid-path");
        let e = crate::validate_path("").unwrap_err();
        assert_eq!(e.to_string(), "must not be empty");
        let e = crate::validate_name("a b").unwrap_err();
        assert!(
            matches!(&e, Error::InvalidName { name, .. } if name == "a b"),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "\"a b\": character ' ' is not allowed (use [A-Za-z0-9._+-])"
        );
        let e = crate::Sha256Digest::from_hex("abc").unwrap_err();
        assert!(
            matches!(
                &e,
                Error::Digest {
                    source: DigestError::Length { len: 3, .. }
                }
            ),
            "{e:?}"
        );
        let e = crate::oci::Reference::parse("docker://x").unwrap_err();
        assert!(
            matches!(
                &e,
                Error::Registry {
                    source: OciError::Reference { .. }
                }
            ),
            "{e:?}"
        );
        let e = crate::sign::TrustedKey::parse("").unwrap_err();
        assert!(
            matches!(
                &e,
                Error::Signature {
                    source: SignError::KeyText { .. }
                }
            ),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "key: no key in the file");
        // A kind's text and its source chain are its own.
        let e = Error::from(OciError::AssetFile {
            name: "k".into(),
            path: "f".into(),
            source: std::io::Error::other("gone"),
        });
        assert_eq!(e.to_string(), "asset k: f: gone; nothing uploaded");
        let source = std::error::Error::source(&e).map(|s| s.to_string());
        assert_eq!(source.as_deref(), Some("gone"));
    }

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
