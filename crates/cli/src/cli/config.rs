//! The config file: defaults for flags, in TOML. Flags and their environment variables win
//! over it.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What the config file may set. Unknown keys are an error, so a typo never silently
/// switches something off (as in manifests).
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Store root (`--dir`).
    pub dir: Option<PathBuf>,
    /// State directory (`--state-dir`).
    pub state_dir: Option<PathBuf>,
    /// Parallel workers (`--jobs`).
    pub jobs: Option<u16>,
    /// Registry mirrors: registry host to mirror host (for `oci://` sources and manifests).
    #[serde(default)]
    pub registry_mirrors: BTreeMap<String, String>,
    /// Public keys trusted for signed manifests (paths to minisign key files).
    #[serde(default)]
    pub trusted_keys: Vec<PathBuf>,
    /// Deadline in seconds of a manifest fetch, a token request, a credential helper
    /// (`--manifest-timeout`).
    pub manifest_timeout: Option<u64>,
}

/// Where the config file is looked for when `--config` is not given.
pub fn default_path() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "bootvault").map(|d| d.config_dir().join("config.toml"))
}

/// Reads the config: `explicit` must exist; the default file may be absent. Relative paths in
/// the file are taken relative to the file's directory.
pub fn load(explicit: Option<&Path>) -> Result<(Config, Option<PathBuf>), String> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => match default_path() {
            // Not `Path::exists`: std's `statx` probes the syscall with a second, failing call
            // when its first one fails (as it does when there is no config file).
            Some(p) if rustix::fs::stat(&p).is_ok() => p,
            _ => return Ok((Config::default(), None)),
        },
    };
    let text = bootvault::read_local(&path, 1024 * 1024)
        .and_then(|b| {
            String::from_utf8(b)
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"))
        })
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // One line: the file, the line number and toml's message (its Display spans lines).
    let mut config: Config = toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|s| {
                format!(
                    " line {}",
                    text[..s.start.min(text.len())].matches('\n').count() + 1
                )
            })
            .unwrap_or_default();
        format!("{}:{line}: {}", path.display(), e.message().trim_end())
    })?;
    if config.jobs == Some(0) {
        return Err(format!("{}: jobs must be at least 1", path.display()));
    }
    if config.manifest_timeout == Some(0) {
        return Err(format!(
            "{}: manifest_timeout must be at least 1",
            path.display()
        ));
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let anchor = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    if let Some(d) = config.dir.as_mut() {
        anchor(d);
    }
    if let Some(d) = config.state_dir.as_mut() {
        anchor(d);
    }
    config.trusted_keys.iter_mut().for_each(anchor);
    Ok((config, Some(path)))
}
