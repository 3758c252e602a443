//! arcbox-boot's `manifest` module: the manifest exactly as arcbox-boot's release tools write
//! it, as serde types with the same fields (unknown fields are ignored, as arcbox-boot ignores
//! them). A host deserializes the cached `manifest.json` into [`Manifest`] and reads its fields.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Returns the schema version for a given asset version: the major component
/// (`"0.2.3"` → 0, `"1.0.0"` → 1).
pub fn schema_version_for(asset_version: &str) -> u32 {
    asset_version
        .split('.')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Top-level boot asset manifest: per-architecture boot targets and host-side binaries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// The major of `asset_version`.
    pub schema_version: u32,
    /// The release (`0.6.0`).
    pub asset_version: String,
    /// When the release tools built it (RFC 3339).
    pub built_at: String,
    /// Source repository of the release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_repo: Option<String>,
    /// Source ref of the release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ref: Option<String>,
    /// Source commit of the release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_sha: Option<String>,
    /// Per-architecture boot targets (`arm64`, `x86_64`).
    pub targets: BTreeMap<String, Target>,
    /// Host-side binaries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub binaries: Vec<Binary>,
}

/// Boot target for a single architecture.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    /// The kernel image.
    pub kernel: FileEntry,
    /// The EROFS rootfs image.
    pub rootfs: FileEntry,
    /// The kernel command line.
    pub kernel_cmdline: String,
    /// Legacy read-only runtime image entry, kept so that older manifests round-trip; not
    /// downloaded (and the legacy `runtime.erofs` files are removed, as arcbox-boot does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<FileEntry>,
}

/// A file entry with path (relative to the CDN base URL) and checksum.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the CDN base URL.
    pub path: String,
    /// SHA-256, lower-case hex.
    pub sha256: String,
    /// The file's own version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Host-side binary with per-architecture variants.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Binary {
    /// File name (and asset name).
    pub name: String,
    /// Its version.
    pub version: String,
    /// Per-architecture file entries.
    pub targets: BTreeMap<String, BinaryTarget>,
    /// Subdirectory under the share root (`kernel` → `/arcbox/kernel/`); the bin dir when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_dir: Option<String>,
}

/// A single architecture variant of a binary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BinaryTarget {
    /// Path relative to the CDN base URL.
    pub path: String,
    /// SHA-256, lower-case hex.
    pub sha256: String,
}
