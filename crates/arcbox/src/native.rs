//! arcbox-format manifests for `bootvault prepare`: detected by their fields and mapped onto
//! bootvault's native form under one ROOT (see [`crate::layout::one_root_path`]).

use crate::layout::{self, Base};
use crate::manifest::Manifest;

/// Whether a JSON document is an arcbox-boot manifest: it names one of arcbox-boot's
/// top-level fields (a native manifest has none of them).
pub fn is_arcbox_format(doc: &serde_json::Value) -> bool {
    doc.as_object().is_some_and(|o| {
        ["schema_version", "asset_version", "targets", "binaries"]
            .iter()
            .any(|k| o.contains_key(*k))
    })
}

/// Parses an arcbox-format manifest for `arch` (default: the host's) into bootvault's native
/// form, with sources joined onto `base_url` when given (otherwise only absolute sources are
/// usable). Unknown fields are ignored, as arcbox-boot ignores them. Every error is a
/// [`bootvault::Error::Manifest`] naming `origin`, the entry and the field.
pub fn to_native(
    text: &str,
    origin: &str,
    arch: Option<&str>,
    base_url: Option<&str>,
) -> Result<bootvault::Manifest, bootvault::Error> {
    let err = |message: String| bootvault::Error::Manifest {
        origin: origin.to_string(),
        message,
    };
    let m: Manifest = serde_json::from_str(text).map_err(|e| err(e.to_string()))?;
    from_manifest(&m, arch, base_url).map_err(err)
}

/// [`to_native`] of a parsed manifest; the error names the entry and the field.
pub fn from_manifest(
    m: &Manifest,
    arch: Option<&str>,
    base_url: Option<&str>,
) -> Result<bootvault::Manifest, String> {
    let version = &m.asset_version;
    if version.is_empty() {
        return Err("field \"asset_version\": must not be empty".into());
    }
    if let Some(major) = version
        .split('.')
        .next()
        .and_then(|v| v.parse::<u64>().ok())
        && major != u64::from(m.schema_version)
    {
        return Err(format!(
            "field \"schema_version\": {} does not match the major of asset_version {version:?}",
            m.schema_version
        ));
    }
    bootvault::validate_path(version).map_err(|why| format!("field \"asset_version\": {why}"))?;
    let arch = arch.unwrap_or(crate::util::current_arch());
    let parsed_base = base_url
        .map(|b| layout::parse_base(b).map_err(|why| format!("--base-url: {why}")))
        .transpose()?;
    let base = match &parsed_base {
        Some(b) => Base::Cdn(b),
        None => Base::None,
    };
    let Some(t) = m.targets.get(arch) else {
        let known: Vec<&str> = m.targets.keys().map(String::as_str).collect();
        return Err(format!(
            "field \"targets\": no entry for arch {arch:?} (the manifest has: {})",
            known.join(", ")
        ));
    };
    let mut assets = Vec::with_capacity(2 + m.binaries.len());
    for (name, e) in [(layout::KERNEL, &t.kernel), (layout::ROOTFS, &t.rootfs)] {
        assets.push(layout::asset(
            &format!("targets.{arch}.{name}"),
            name,
            layout::one_root_path(version, name, None),
            &e.path,
            &e.sha256,
            &base,
            0o444,
        )?);
    }
    for (i, b) in m.binaries.iter().enumerate() {
        let Some(bt) = b.targets.get(arch) else {
            continue;
        };
        let dir = b.install_dir.as_deref().map(|d| d.trim_end_matches('/'));
        assets.push(layout::asset(
            &format!("binaries[{i}].targets.{arch}"),
            &b.name,
            layout::one_root_path(version, &b.name, dir),
            &bt.path,
            &bt.sha256,
            &base,
            0o755,
        )?);
    }
    let mut names = std::collections::HashSet::new();
    let mut paths = std::collections::HashSet::new();
    for a in &assets {
        if !names.insert(a.name.as_str()) {
            return Err(format!("asset {:?}: field \"name\": duplicate", a.name));
        }
        if !paths.insert(a.path.as_str()) {
            return Err(format!(
                "asset {:?}: installs to {}, as another asset does",
                a.name, a.path
            ));
        }
    }
    Ok(bootvault::Manifest::new(version.clone(), assets)
        .map_err(layout::manifest_message)?
        .base_url(base_url.map(str::to_string))
        .kernel_cmdline(t.kernel_cmdline.clone()))
}
