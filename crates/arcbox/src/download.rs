//! arcbox-boot's `download` module: progress types, and the binary methods of [`Manifest`] and
//! [`Binary`], here over a bootvault store of the share (state outside it).

use crate::error::{Error, Result};
use crate::manifest::{Binary, BinaryTarget, Manifest, Target};
use crate::util::current_arch;
use std::path::Path;

/// Progress information for a prepare.
#[derive(Debug, Clone)]
pub struct PrepareProgress {
    /// The asset (`kernel`, `rootfs` or a binary name).
    pub name: String,
    /// 1-based index of the asset in this call.
    pub current: usize,
    /// Assets in this call.
    pub total: usize,
    /// What is happening.
    pub phase: PreparePhase,
}

/// Phases, as arcbox-boot names them.
#[derive(Debug, Clone)]
pub enum PreparePhase {
    /// Looking at the file.
    Checking,
    /// Bytes arriving.
    Downloading {
        /// Bytes so far.
        downloaded: u64,
        /// Total, when known.
        total: Option<u64>,
    },
    /// Hashing.
    Verifying,
    /// Placed (downloaded, repaired or re-hashed into place).
    Ready,
    /// Trusted from its record, or re-hashed and unchanged.
    Cached,
}

/// Progress callback type.
pub type ProgressCallback = Box<dyn Fn(PrepareProgress) + Send + Sync>;

impl Manifest {
    /// The target entry for the host architecture, if present.
    pub fn target_for_current_arch(&self) -> Option<(&str, &Target)> {
        let arch = current_arch();
        self.targets.get(arch).map(|t| (arch, t))
    }

    /// Makes every binary for `arch` ready under `dest_dir` (`install_dir` entries as its
    /// siblings), downloading from `cdn_base_url`. The share's ledger lives in the per-user
    /// state dir (see [`crate::asset_manager`]), never in the share.
    pub async fn prepare_binaries(
        &self,
        arch: &str,
        cdn_base_url: &str,
        dest_dir: &Path,
        progress: Option<ProgressCallback>,
    ) -> Result<()> {
        let share = crate::engine::Share::open_default(dest_dir)?;
        share
            .prepare_async(self, arch, cdn_base_url, dest_dir, progress)
            .await
            .map(|_| ())
    }

    /// Checks that every binary for `arch` exists under `dest_dir` with its digest, writing
    /// and downloading nothing: a ledger record vouches, or the file is hashed. Binaries
    /// without an entry for `arch` are skipped.
    pub async fn validate_binaries(&self, arch: &str, dest_dir: &Path) -> Result<()> {
        let share = crate::engine::Share::open_default(dest_dir)?;
        share.validate_async(self, arch).await
    }
}

impl Binary {
    /// The entry for `arch`.
    pub fn target_for_arch(&self, arch: &str) -> Result<&BinaryTarget> {
        self.targets
            .get(arch)
            .ok_or_else(|| Error::BinaryArchNotFound {
                name: self.name.clone(),
                arch: arch.to_string(),
            })
    }
}
