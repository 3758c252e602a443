//! `oci://HOST[:PORT]/REPO[:TAG|@sha256:DIGEST]` references: parsed here, below both the
//! manifest (which checks `oci://` sources) and the registry client (which resolves them).

use crate::digest::Sha256Digest;

/// `oci://HOST[:PORT]/REPO[:TAG|@sha256:DIGEST]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]`.
    pub registry: String,
    /// Repository path, e.g. `boot/assets`.
    pub repository: String,
    /// Tag, when given.
    pub tag: Option<String>,
    /// Digest pin, when given (`@sha256:…`).
    pub digest: Option<Sha256Digest>,
}

/// Parses a reference; the `oci://` prefix is required. The error says what is wrong (the
/// registry module wraps it with the reference).
pub fn parse(s: &str) -> Result<Reference, String> {
    let bad = |why: &str| why.to_string();
    {
        let rest = s
            .strip_prefix("oci://")
            .ok_or_else(|| bad("must start with oci://"))?;
        let (registry, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("no repository after the host"))?;
        if registry.is_empty()
            || !registry
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        {
            return Err(bad("invalid registry host"));
        }
        let (path, digest) = match path.split_once('@') {
            Some((p, d)) => {
                let hex = d
                    .strip_prefix("sha256:")
                    .ok_or_else(|| bad("a digest must be sha256:<64 hex>"))?;
                let digest = Sha256Digest::from_hex(hex).map_err(|e| bad(&e.to_string()))?;
                (p, Some(digest))
            }
            None => (path, None),
        };
        // A tag follows the last ':' after the last '/'.
        let (repository, tag) = match path.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, Some(t.to_string())),
            _ => (path, None),
        };
        if repository.is_empty()
            || repository.split('/').any(|c| {
                c.is_empty()
                    || !c.chars().all(|ch| {
                        ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch)
                    })
            })
        {
            return Err(bad(
                "repository must be lower-case [a-z0-9._-] components separated by /",
            ));
        }
        if let Some(t) = &tag
            && (t.is_empty()
                || t.len() > 128
                || t.starts_with(['.', '-'])
                || !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)))
        {
            return Err(bad("tag must be [A-Za-z0-9_][A-Za-z0-9._-]{0,127}"));
        }
        Ok(Reference {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag,
            digest,
        })
    }
}

impl Reference {
    /// `oci://HOST/REPO` (no tag or digest): the asset source URL of this repository.
    pub fn repository_url(&self) -> String {
        format!("oci://{}/{}", self.registry, self.repository)
    }

    /// What to ask `/manifests/` for: the digest when pinned, else the tag, else `latest`.
    pub(crate) fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => format!("sha256:{}", d.to_hex()),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        }
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "oci://{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@sha256:{}", d.to_hex())?;
        }
        Ok(())
    }
}

/// The message of a reference that does not parse, as the registry client's error says it.
pub(crate) fn describe_error(reference: &str, why: &str) -> String {
    format!("invalid registry reference {reference:?}: {why}")
}
