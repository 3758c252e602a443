//! Manifests from URLs and registries, registry options, and the signature check.

use super::{EXIT_FAILED, Failure, ManifestArgs};
use bootvault::Manifest;
use bootvault::oci::OciOptions;
use bootvault::sign::TrustedKey;
use clap::Args;
use std::path::{Path, PathBuf};

/// Registry options: mirrors and plain-HTTP hosts.
#[derive(Args, Clone, Debug, Default)]
pub struct RegistryArgs {
    /// Try MIRROR (host[:port], or http://host[:port]) before registry HOST (repeatable; in
    /// order). A pull-through cache or a P2P layer (Dragonfly, Spegel) works unchanged.
    /// Default: the config file's [registry_mirrors].
    #[arg(
        long = "registry-mirror",
        value_name = "HOST=MIRROR",
        env = "BOOTVAULT_REGISTRY_MIRROR",
        value_delimiter = ','
    )]
    pub mirrors: Vec<String>,
    /// Speak plain HTTP to this registry host (loopback registries always are).
    #[arg(
        long = "insecure-registry",
        value_name = "HOST",
        env = "BOOTVAULT_INSECURE_REGISTRY",
        value_delimiter = ','
    )]
    pub insecure: Vec<String>,
    /// Total seconds for fetching a manifest (every try and mirror), for one registry token
    /// request, and for one credential helper run (at least 1; default 60)
    /// [config: manifest_timeout].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..),
          env = "BOOTVAULT_MANIFEST_TIMEOUT")]
    pub manifest_timeout: Option<u64>,
}

impl RegistryArgs {
    pub fn options(&self) -> Result<OciOptions, Failure> {
        let mut opts = OciOptions {
            insecure: self.insecure.clone(),
            deadline: self
                .manifest_timeout
                .or(super::ui().config.manifest_timeout)
                .map(std::time::Duration::from_secs),
            ..Default::default()
        };
        // Flags (or their variable) replace the config file's mirrors, as for every setting.
        if self.mirrors.is_empty() {
            let config = &super::ui().config.registry_mirrors;
            opts.mirrors
                .extend(config.iter().map(|(h, m)| (h.clone(), m.clone())));
        }
        for m in &self.mirrors {
            let (host, mirror) = m
                .split_once('=')
                .filter(|(h, m)| !h.is_empty() && !m.is_empty())
                .ok_or_else(|| {
                    Failure::usage(format!("--registry-mirror {m:?}: expected HOST=MIRROR"))
                })?;
            opts.mirrors.push((host.to_string(), mirror.to_string()));
        }
        Ok(opts)
    }
}

/// Which keys may vouch for a manifest fetched from a URL or a registry tag.
#[derive(Args, Clone, Debug, Default)]
pub struct TrustArgs {
    /// A minisign public key (minisign.pub). With one, a manifest fetched from a URL or a
    /// registry tag must carry a valid signature by a trusted key (repeatable). Default: the
    /// config file's trusted_keys.
    #[arg(
        long = "trusted-key",
        value_name = "FILE",
        env = "BOOTVAULT_TRUSTED_KEY",
        value_delimiter = ','
    )]
    pub trusted_keys: Vec<PathBuf>,
    /// Accept a signed manifest older than the newest this store accepted from the same
    /// registry repository or URL (by the signature time); it becomes the new mark.
    #[arg(long, env = "BOOTVAULT_ALLOW_DOWNGRADE",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_downgrade: bool,
}

impl TrustArgs {
    pub fn keys(&self) -> Result<Vec<TrustedKey>, Failure> {
        let keys = if self.trusted_keys.is_empty() {
            &super::ui().config.trusted_keys
        } else {
            &self.trusted_keys
        };
        keys.iter()
            .map(|p| TrustedKey::from_file(p).map_err(|e| Failure::usage(e.to_string())))
            .collect()
    }
}

/// Whether `spec` names a manifest on the network (a URL or a registry artifact).
pub fn is_remote(spec: &str) -> bool {
    ["oci://", "https://", "http://"]
        .iter()
        .any(|p| spec.starts_with(p))
}

/// Loads `spec`: a local file, an `http(s)://` URL (signature at URL.minisig), or a registry
/// artifact `oci://HOST/REPO:TAG` / `@sha256:…` (whose assets are then also pulled from there).
/// Where the manifest came from and which trusted key vouched for it go with it, for the
/// ledger.
/// What rollback protection needs of a signed manifest: the source its mark is kept for,
/// and the manifest offered.
pub struct Signed {
    pub key: String,
    pub offered: bootvault::rollback::Offered,
}

impl Signed {
    /// Refuses a rollback (exit 2, naming both versions) unless `trust.allow_downgrade`;
    /// with `remember`, moves the mark of this source (a read-only state dir keeps the old
    /// mark, with a warning).
    pub fn guard(
        &self,
        spec: &str,
        state_dir: &Path,
        trust: &TrustArgs,
        remember: bool,
    ) -> Result<(), Failure> {
        use bootvault::rollback::{check, check_and_remember};
        let run = if remember { check_and_remember } else { check };
        match run(
            state_dir,
            spec,
            &self.key,
            &self.offered,
            trust.allow_downgrade,
        ) {
            Ok(()) => Ok(()),
            // A refused manifest is bad input; a marks file that cannot be used is a failure.
            Err(
                e @ bootvault::Error::Rollback {
                    source: bootvault::rollback::RollbackError::Downgrade { .. },
                },
            ) => Err(Failure::usage(e.to_string())),
            Err(e) if remember => {
                tracing::warn!("rollback mark not recorded: {e}");
                Ok(())
            }
            Err(e) => Err(Failure {
                code: EXIT_FAILED,
                message: e.to_string(),
            }),
        }
    }
}

pub fn load(
    spec: &str,
    margs: &ManifestArgs,
    fetch: &bootvault::FetchOptions,
    trust: &TrustArgs,
) -> Result<(Manifest, bootvault::Provenance, Option<Signed>), Failure> {
    let keys = trust.keys()?;
    let provenance =
        |signed_by: Option<String>, oci_digest: Option<String>| bootvault::Provenance {
            // Stored in the ledger: never a password from the URL.
            source: bootvault::redact::url(spec),
            signed_by,
            oci_digest,
            recorded_at_ns: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(0),
        };
    if !is_remote(spec) {
        return Ok((margs.load(Path::new(spec))?, provenance(None, None), None));
    }
    let parse = |text: &str, origin: &str| margs.parse(text, origin);
    let loaded =
        bootvault::oci::load_manifest(spec, fetch, &keys, &parse).map_err(|e| Failure {
            code: super::exit_code(&e),
            message: e.to_string(),
        })?;
    if let Some(id) = &loaded.signed_by {
        tracing::info!("manifest {spec}: signed by trusted key {id}");
    }
    let p = provenance(
        loaded.signed_by.clone(),
        loaded.digest.map(|d| format!("sha256:{d}")),
    );
    let signed = match (&loaded.signed_by, bootvault::rollback::key_for(spec)) {
        (Some(by), Some(key)) => Some(Signed {
            key,
            offered: bootvault::rollback::Offered {
                version: loaded.manifest.version.clone(),
                signed_at: loaded.signed_at,
                signed_by: by.clone(),
            },
        }),
        _ => None,
    };
    Ok((loaded.manifest, p, signed))
}
