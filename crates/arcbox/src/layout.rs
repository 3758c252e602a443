//! Where arcbox-boot puts each file, as bootvault assets.
//!
//! Two layouts. arcbox-boot's own, over two roots: the boot cache (ROOT = `cache_dir`, assets
//! `VERSION/kernel` and `VERSION/rootfs.erofs`) and the share (ROOT = the parent of the bin
//! dir, binaries at `BIN/NAME` or `INSTALL_DIR/NAME`). And the one-root layout of
//! `bootvault prepare` on an arcbox-format manifest ([`one_root_path`]): ROOT is the data dir,
//! `boot/VERSION/{kernel,rootfs.erofs}`, `bin/NAME`, `INSTALL_DIR/NAME`.
//!
//! Kernel and rootfs are `verify: cached` and read-only (0444): the full stamp (ctime
//! included) sees every write a guest can make through the share, and the ledger lives outside
//! it. Binaries are 0755, as arcbox-boot leaves them.

use crate::manifest::{FileEntry, Manifest};
use bootvault::{Asset, AssetPath, Policy, Sha256Digest};

/// Asset name of the boot kernel.
pub const KERNEL: &str = "kernel";
/// Asset name of the boot rootfs.
pub const ROOTFS: &str = "rootfs";

/// Why a manifest cannot be mapped: the asset and the field, as one message.
pub(crate) type MapError = String;

/// How an entry's source path becomes a URL.
pub(crate) enum Base<'a> {
    /// Joined onto this CDN base (arcbox-boot's `cdn_url`).
    Cdn(&'a url::Url),
    /// No base: only an absolute `http(s)://` or `file://` source is usable; otherwise the
    /// asset can only be verified in place.
    None,
}

pub(crate) fn parse_base(base: &str) -> Result<url::Url, MapError> {
    let mut b = base.to_string();
    if !b.ends_with('/') {
        b.push('/');
    }
    let url = url::Url::parse(&b).map_err(|e| format!("invalid CDN base URL '{base}': {e}"))?;
    match url.scheme() {
        "http" | "https" | "file" => Ok(url),
        s => Err(format!(
            "invalid CDN base URL '{base}': unsupported scheme {s:?}"
        )),
    }
}

fn urls(src: &str, base: &Base<'_>) -> Result<Vec<String>, MapError> {
    match base {
        // `join` returns an absolute source as it is, whatever its scheme: only what a store
        // can fetch is accepted (the native form of the manifest must parse again).
        Base::Cdn(b) => match b.join(src) {
            Ok(u) if matches!(u.scheme(), "http" | "https" | "file") => Ok(vec![u.to_string()]),
            Ok(u) => Err(format!(
                "path {src:?}: unsupported scheme {:?} (http, https or file)",
                u.scheme()
            )),
            Err(e) => Err(format!("path {src:?}: {e}")),
        },
        Base::None => Ok(url::Url::parse(src)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https" | "file"))
            .map(|u| vec![u.to_string()])
            .unwrap_or_default()),
    }
}

/// One asset: `label` names the manifest entry in errors.
pub(crate) fn asset(
    label: &str,
    name: &str,
    path: String,
    src: &str,
    sha256: &str,
    base: &Base<'_>,
    mode: u32,
) -> Result<Asset, MapError> {
    bootvault::validate_name(name).map_err(|why| format!("{label}: name {name:?}: {why}"))?;
    let path =
        AssetPath::new(&path).map_err(|why| format!("{label}: install path {path:?}: {why}"))?;
    let sha256 = Sha256Digest::from_hex(sha256).map_err(|why| format!("{label}.sha256: {why}"))?;
    // arcbox-boot manifests carry no sizes, and name no chunk index: upgrades copy unchanged
    // files whole.
    Ok(Asset::new(name, path, sha256)
        .map_err(|e| format!("{label}: {}", manifest_message(e)))?
        .urls(urls(src, base).map_err(|why| format!("{label}.{why}"))?)
        .verify(Policy::Cached)
        .mode(mode))
}

/// The message of a [`bootvault::Error::Manifest`] (what is wrong, without its origin), or
/// the error's text.
pub(crate) fn manifest_message(e: bootvault::Error) -> String {
    match e {
        bootvault::Error::Manifest { message, .. } => message,
        other => other.to_string(),
    }
}

/// The target for `arch`, or arcbox-boot's `ArchNotFound`.
pub(crate) fn target<'m>(
    m: &'m Manifest,
    arch: &str,
) -> Result<&'m crate::manifest::Target, crate::Error> {
    m.targets
        .get(arch)
        .ok_or_else(|| crate::Error::ArchNotFound(arch.to_string()))
}

/// Kernel (unless `custom_kernel`) and rootfs at `DIR/kernel` and `DIR/rootfs.erofs`.
pub(crate) fn boot_assets(
    m: &Manifest,
    arch: &str,
    dir: &str,
    base: &Base<'_>,
    custom_kernel: bool,
) -> Result<Vec<Asset>, crate::Error> {
    let t = target(m, arch)?;
    let mut out = Vec::with_capacity(2);
    let entries: [(&str, &FileEntry, &str); 2] = [
        (KERNEL, &t.kernel, "kernel"),
        (ROOTFS, &t.rootfs, "rootfs.erofs"),
    ];
    for (name, e, file) in entries {
        if name == KERNEL && custom_kernel {
            continue;
        }
        out.push(
            asset(
                &format!("targets.{arch}.{name}"),
                name,
                format!("{dir}/{file}"),
                &e.path,
                &e.sha256,
                base,
                0o444,
            )
            .map_err(|message| crate::Error::Manifest {
                source_url: "manifest.json".into(),
                message,
            })?,
        );
    }
    Ok(out)
}

/// Each binary built for `arch`, at `BIN/NAME` (`bin` = the bin dir's name under the root)
/// or `INSTALL_DIR/NAME`, exactly where arcbox-boot puts it. Binaries without an entry for
/// `arch` are not part of the set (FEX is arm64-only), as in arcbox-boot.
pub(crate) fn binary_assets(
    m: &Manifest,
    arch: &str,
    bin: Option<&str>,
    base: &Base<'_>,
) -> Result<Vec<Asset>, MapError> {
    let mut out = Vec::with_capacity(m.binaries.len());
    let mut seen = std::collections::HashSet::new();
    for (i, b) in m.binaries.iter().enumerate() {
        let Some(t) = b.targets.get(arch) else {
            continue;
        };
        let dir = b.install_dir.as_deref().map(|d| d.trim_end_matches('/'));
        let path = match (dir, bin) {
            (Some("") | None, None) => b.name.clone(),
            (None, Some(bin)) => format!("{bin}/{}", b.name),
            (Some(dir), _) => format!("{dir}/{}", b.name),
        };
        let a = asset(
            &format!("binaries[{i}].targets.{arch}"),
            &b.name,
            path,
            &t.path,
            &t.sha256,
            base,
            0o755,
        )?;
        if !seen.insert(a.path.clone()) {
            return Err(format!(
                "binaries[{i}]: binary {} installs to {}, as another one does",
                b.name, a.path
            ));
        }
        out.push(a);
    }
    Ok(out)
}

/// The one-root layout of an arcbox-format manifest for `bootvault prepare`: ROOT is the data
/// dir; `boot/VERSION/kernel`, `boot/VERSION/rootfs.erofs` (arcbox-boot's `cache_dir/VERSION`
/// with `cache_dir = ROOT/boot`), binaries at `bin/NAME` and `INSTALL_DIR/NAME` (siblings of
/// `bin`). So `vmlinux` with `install_dir: "kernel"` lands at `kernel/vmlinux`, and the boot
/// kernel, under `boot/`, never collides with it.
pub fn one_root_path(version: &str, asset: &str, install_dir: Option<&str>) -> String {
    match (asset, install_dir) {
        (KERNEL, None) => format!("boot/{version}/kernel"),
        (ROOTFS, None) => format!("boot/{version}/rootfs.erofs"),
        (name, None) => format!("bin/{name}"),
        (name, Some("")) => name.to_string(),
        (name, Some(dir)) => format!("{dir}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `manifest_arcbox` fuzz target: an absolute source of a scheme no store can
    /// fetch (`ashttps://…`) was accepted, and the native form of the manifest then did not
    /// parse.
    #[test]
    fn regression_an_absolute_source_of_another_scheme_is_refused() {
        let base = parse_base("https://cdn.example/boot/").unwrap();
        let err = urls("ashttps://.0/x86_64/kernel", &Base::Cdn(&base)).unwrap_err();
        assert!(err.contains("unsupported scheme"), "{err}");
        for ok in [
            "asset/v0.6.0/x86_64/kernel",
            "https://other.example/k",
            "file:///srv/k",
        ] {
            let got = urls(ok, &Base::Cdn(&base)).unwrap();
            assert_eq!(got.len(), 1, "{ok}");
        }
    }
}
