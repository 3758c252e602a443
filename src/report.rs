//! What a prepare returns and what it says while it runs: [`Report`], [`AssetReport`],
//! [`Outcome`] and the [`Progress`] events.

use crate::digest::Sha256Digest;
use crate::error::Error;
use serde::Serialize;
use serde::ser::SerializeStruct;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How an asset became ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Outcome {
    /// The record matched the live stamp; no content byte was read.
    Cached,
    /// The file on disk was re-hashed and matched.
    Verified,
    /// The file was absent and was fetched, hashed as it was written.
    Downloaded,
    /// The file was wrong and was replaced by a fetched, verified copy.
    Repaired,
    /// The file was absent and its bytes came from another verified file in the store with the
    /// same digest (copied, hashing on the way), instead of the network.
    Linked,
    /// The file had to be fetched and was rebuilt from chunks of verified local files, only
    /// the missing chunks fetched (HTTP Range), the whole file hashed before placing.
    Patched,
}

impl Outcome {
    /// The contract spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Cached => "cached",
            Outcome::Verified => "verified",
            Outcome::Downloaded => "downloaded",
            Outcome::Repaired => "repaired",
            Outcome::Linked => "linked",
            Outcome::Patched => "patched",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Progress of a prepare, per asset.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Progress<'a> {
    /// The asset is being looked at.
    Checking {
        /// The asset.
        name: &'a str,
    },
    /// Another process holds the asset's lock; waiting for it.
    Waiting {
        /// The asset.
        name: &'a str,
    },
    /// Bytes arriving.
    Downloading {
        /// The asset.
        name: &'a str,
        /// Bytes of the file so far (a resumed prefix included).
        done: u64,
        /// The size, when known.
        total: Option<u64>,
    },
    /// Bytes being hashed.
    Verifying {
        /// The asset.
        name: &'a str,
        /// Bytes hashed so far.
        done: u64,
        /// The size.
        total: u64,
    },
    /// Done.
    Ready {
        /// The asset.
        name: &'a str,
        /// How.
        outcome: Outcome,
    },
    /// Failed.
    Failed {
        /// The asset.
        name: &'a str,
        /// Why.
        error: &'a Error,
    },
}

/// A progress callback.
pub type ProgressFn = Arc<dyn Fn(&Progress<'_>) + Send + Sync>;

/// The result for one asset.
#[derive(Debug)]
#[non_exhaustive]
pub struct AssetReport {
    /// Asset name.
    pub name: String,
    /// Absolute path under ROOT.
    pub path: PathBuf,
    /// Expected digest.
    pub sha256: Sha256Digest,
    /// Size of the file (or the manifest size when it failed).
    pub size: Option<u64>,
    /// How the asset became ready, or why it could not.
    pub result: Result<Outcome, Error>,
    /// Content bytes read by hashing.
    pub bytes_hashed: u64,
    /// Bytes fetched.
    pub bytes_downloaded: u64,
    /// Bytes copied from another verified file with the same digest (`linked`).
    pub bytes_copied: u64,
    /// Bytes taken from chunks of verified local files instead of the network (`patched`).
    pub bytes_reused: u64,
    /// Why a planned patch was abandoned for a whole download (the outcome is then
    /// `downloaded` or `repaired`).
    pub patch_fallback: Option<String>,
    /// Why the asset was not cached (the plan's reason), for humans; empty when cached.
    pub reason: String,
    /// Time spent on this asset.
    pub elapsed: Duration,
}

impl AssetReport {
    /// The outcome, or `None` when it failed.
    pub fn outcome(&self) -> Option<Outcome> {
        self.result.as_ref().ok().copied()
    }

    /// The error, when it failed.
    pub fn error(&self) -> Option<&Error> {
        self.result.as_ref().err()
    }
}

/// The contract's per-asset JSON object: `name`, `path`, `sha256`, `size`, `outcome`
/// (`failed` on error), `bytes_hashed`, `bytes_downloaded`, and on failure `error` (one line)
/// and `error_kind`; `bytes_copied` when some bytes came from another file.
impl Serialize for AssetReport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("AssetReport", 10)?;
        st.serialize_field("name", &self.name)?;
        st.serialize_field("path", &self.path)?;
        st.serialize_field("sha256", &self.sha256.to_hex())?;
        st.serialize_field("size", &self.size)?;
        st.serialize_field(
            "outcome",
            self.outcome().map(|o| o.as_str()).unwrap_or("failed"),
        )?;
        st.serialize_field("bytes_hashed", &self.bytes_hashed)?;
        st.serialize_field("bytes_downloaded", &self.bytes_downloaded)?;
        if self.bytes_copied > 0 {
            st.serialize_field("bytes_copied", &self.bytes_copied)?;
        }
        st.serialize_field("bytes_reused", &self.bytes_reused)?;
        if let Some(why) = &self.patch_fallback {
            st.serialize_field("patch_fallback", why)?;
        }
        if let Err(e) = &self.result {
            st.serialize_field("error", &e.to_string())?;
            st.serialize_field("error_kind", e.kind())?;
        }
        st.end()
    }
}

/// The result of a prepare.
#[derive(Debug)]
#[non_exhaustive]
pub struct Report {
    /// Manifest version.
    pub manifest_version: String,
    /// Wall time of the prepare.
    pub elapsed: Duration,
    /// Per asset, in manifest order (only the selected ones when a subset was asked for).
    pub assets: Vec<AssetReport>,
    /// What the ledger read found.
    pub ledger: crate::LedgerState,
    /// The kernel command line, for manifests that carry one.
    pub kernel_cmdline: Option<String>,
}

impl Report {
    /// Whether any asset failed.
    pub fn failed(&self) -> bool {
        self.assets.iter().any(|a| a.result.is_err())
    }

    /// Whether every asset was `cached` (a warm prepare).
    pub fn all_cached(&self) -> bool {
        self.assets
            .iter()
            .all(|a| a.outcome() == Some(Outcome::Cached))
    }

    /// The report of asset `name`.
    pub fn asset(&self, name: &str) -> Option<&AssetReport> {
        self.assets.iter().find(|a| a.name == name)
    }
}

/// The contract's `prepare --json` object: `manifest_version`, `elapsed_ms`, `assets`, and
/// `kernel_cmdline` when the manifest has one.
impl Serialize for Report {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Report", 4)?;
        st.serialize_field("manifest_version", &self.manifest_version)?;
        st.serialize_field(
            "elapsed_ms",
            &((self.elapsed.as_secs_f64() * 1e6).round() / 1e3),
        )?;
        if let Some(c) = &self.kernel_cmdline {
            st.serialize_field("kernel_cmdline", c)?;
        }
        let reused: u64 = self.assets.iter().map(|a| a.bytes_reused).sum();
        st.serialize_field("bytes_reused", &reused)?;
        st.serialize_field("assets", &self.assets)?;
        st.end()
    }
}
