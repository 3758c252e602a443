//! arcbox-boot's `util` helpers that a host can reach.

use crate::error::{Error, Result};
use std::path::Path;

/// The architecture string of arcbox manifests for this host (`arm64`, `x86_64`).
pub fn current_arch() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "arm64"
    } else if cfg!(target_arch = "x86_64") {
        "x86_64"
    } else {
        "unknown"
    }
}

/// A version usable in object keys and local paths (`+` becomes `-`: some CDNs read an
/// unescaped `+` as a space).
pub fn path_safe_version(version: &str) -> String {
    version.replace('+', "-")
}

/// The CDN object path of a runtime binary: `bin/NAME/VERSION/ARCH/NAME`.
pub fn binary_object_path(name: &str, version: &str, arch: &str) -> String {
    format!("bin/{name}/{version}/{arch}/{name}")
}

/// The CDN object path of a boot asset file: `asset/vVERSION/ARCH/FILENAME`.
pub fn asset_object_path(version: &str, arch: &str, filename: &str) -> String {
    format!("asset/v{version}/{arch}/{filename}")
}

/// The CDN object path of a release's manifest: `asset/vVERSION/manifest.json`.
pub fn manifest_object_path(version: &str) -> String {
    format!("asset/v{version}/manifest.json")
}

/// Joins a relative object path onto the CDN base URL.
pub fn cdn_url(base: &str, path: &str) -> Result<String> {
    let mut base = base.to_string();
    if !base.ends_with('/') {
        base.push('/');
    }
    url::Url::parse(&base)
        .map_err(|e| Error::InvalidConfig(format!("invalid CDN base URL '{base}': {e}")))?
        .join(path)
        .map(|u| u.to_string())
        .map_err(|e| Error::InvalidConfig(format!("invalid CDN path '{path}': {e}")))
}

/// SHA-256 of a file, lower-case hex, on tokio's blocking pool.
pub async fn sha256_file_async(path: &Path) -> Result<String> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> Result<String> {
        use sha2::Digest as _;
        use std::io::Read;
        let mut file = std::fs::File::open(&path)?;
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0; 1 << 20];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(hex::encode(hasher.finalize()))
    })
    .await
    .map_err(|e| Error::Task(e.to_string()))?
}

/// Reads and parses a JSON file.
pub async fn read_json_file_async<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = tokio::fs::read(path).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::Other(format!("failed to parse {}: {e}", path.display())))
}

/// Marks a file executable (0755).
pub async fn set_executable_async(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).await?;
    Ok(())
}
