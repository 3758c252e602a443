//! The manifest: which assets a store must hold, where, with which digest, and from where.
//!
//! Two formats are accepted: the native one of the contract, and arcbox-boot's, detected by
//! its fields and mapped onto the native form (see the README). Validation is done by hand over
//! a `serde_json::Value` so that every error names the asset and the field.

use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::HashSet;

/// How much proof an asset needs on each prepare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Trusted while its stamp matches the ledger record.
    Cached,
    /// Content re-hashed on every prepare.
    Always,
}

impl Policy {
    /// Parses `cached` or `always`.
    pub fn parse(s: &str) -> Option<Policy> {
        match s {
            "cached" => Some(Policy::Cached),
            "always" => Some(Policy::Always),
            _ => None,
        }
    }

    /// The manifest spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Cached => "cached",
            Policy::Always => "always",
        }
    }
}

/// One asset of a manifest, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Asset {
    /// Unique name, `[A-Za-z0-9._+-]+`.
    pub name: String,
    /// Relative, `/`-separated path under ROOT.
    pub path: String,
    /// Expected content digest.
    pub sha256: Sha256Digest,
    /// Expected size, enforced when given.
    pub size: Option<u64>,
    /// Absolute source URLs (`http`, `https`, `file`, `oci`), in the order they are tried.
    pub urls: Vec<String>,
    /// Verification policy.
    pub verify: Policy,
    /// Permission bits applied when placed (never group- or other-writable).
    pub mode: Option<u32>,
    /// Where the asset's chunk index is (native `index` field): lets a prepare patch the asset
    /// from verified local files instead of downloading it whole.
    pub index: Option<crate::chunk_index::IndexRef>,
}

/// A validated manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// The manifest version, recorded with every verification.
    pub version: String,
    /// The base URL relative `urls` were resolved against.
    pub base_url: Option<String>,
    /// The assets, in manifest order.
    pub assets: Vec<Asset>,
    /// What an arcbox-boot manifest carries beyond its assets (`None` for the native format).
    pub arcbox: Option<ArcboxMeta>,
}

/// Options for reading an arcbox-boot manifest.
#[derive(Clone, Debug, Default)]
pub struct ParseOptions {
    /// Architecture to select (`x86_64` or `arm64`); default: the host's.
    pub arch: Option<String>,
    /// Base URL for the arcbox-boot paths (or an override of the native `base_url`).
    pub base_url: Option<String>,
}

/// The host architecture in arcbox-boot's spelling.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        other => other,
    }
}

struct Ctx<'a> {
    origin: &'a str,
}

impl Ctx<'_> {
    fn err(&self, message: impl Into<String>) -> Error {
        Error::Manifest {
            origin: self.origin.to_string(),
            message: message.into(),
        }
    }
    fn asset_err(&self, asset: &str, field: &str, why: impl std::fmt::Display) -> Error {
        self.err(format!("asset {asset:?}: field \"{field}\": {why}"))
    }
}

impl Manifest {
    /// Reads and validates a manifest file.
    /// The file must be a regular file of at most 16 MiB.
    pub fn from_file(path: &std::path::Path, opts: &ParseOptions) -> Result<Manifest> {
        let text = read_text(path, MAX_MANIFEST_BYTES).map_err(|e| Error::Manifest {
            origin: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, &path.display().to_string(), opts)
    }

    /// Parses and validates a native manifest from JSON text.
    pub fn from_json_str(text: &str) -> Result<Manifest> {
        Self::parse(text, "<json>", &ParseOptions::default())
    }

    /// Parses either format; `origin` names the source in errors.
    pub fn parse(text: &str, origin: &str, opts: &ParseOptions) -> Result<Manifest> {
        let cx = Ctx { origin };
        if let Some(parsed) = parse_arcbox_fast(&cx, text, opts) {
            return parsed;
        }
        let value: Value =
            serde_json::from_str(text).map_err(|e| cx.err(format!("not valid JSON: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| cx.err("the top level must be a JSON object"))?;
        if is_arcbox(obj) {
            parse_arcbox(&cx, obj, opts)
        } else {
            parse_native(&cx, obj, opts)
        }
    }

    /// Finds an asset by name, or else by path.
    pub fn find(&self, name_or_path: &str) -> Option<&Asset> {
        let trimmed = name_or_path.trim_start_matches("./");
        self.assets
            .iter()
            .find(|a| a.name == name_or_path)
            .or_else(|| self.assets.iter().find(|a| a.path == trimmed))
    }

    /// The native JSON form of this manifest (round-trips through [`Manifest::from_json_str`];
    /// the arcbox-boot metadata is not part of it).
    pub fn to_json(&self) -> Value {
        let assets: Vec<Value> = self
            .assets
            .iter()
            .map(|a| {
                let mut m = Map::new();
                m.insert("name".into(), a.name.clone().into());
                m.insert("path".into(), a.path.clone().into());
                m.insert("sha256".into(), a.sha256.to_hex().into());
                if let Some(size) = a.size {
                    m.insert("size".into(), size.into());
                }
                m.insert(
                    "urls".into(),
                    Value::Array(a.urls.iter().map(|u| u.clone().into()).collect()),
                );
                m.insert("verify".into(), a.verify.as_str().into());
                if let Some(mode) = a.mode {
                    m.insert("mode".into(), format!("{mode:04o}").into());
                }
                if let Some(ix) = &a.index {
                    m.insert("index".into(), ix.to_json());
                }
                Value::Object(m)
            })
            .collect();
        let mut top = Map::new();
        top.insert("version".into(), self.version.clone().into());
        if let Some(b) = &self.base_url {
            top.insert("base_url".into(), b.clone().into());
        }
        top.insert("assets".into(), Value::Array(assets));
        Value::Object(top)
    }
}

fn is_arcbox(obj: &Map<String, Value>) -> bool {
    ["schema_version", "asset_version", "targets", "binaries"]
        .iter()
        .any(|k| obj.contains_key(*k))
}

fn check_fields(
    cx: &Ctx,
    obj: &Map<String, Value>,
    allowed: &[&str],
    what: impl Fn(&str) -> String,
) -> Result<()> {
    for key in obj.keys() {
        if !allowed.contains(&key.as_str()) {
            return Err(cx.err(format!(
                "{}: unknown field \"{key}\" (expected one of: {})",
                what(key),
                allowed.join(", ")
            )));
        }
    }
    Ok(())
}

fn parse_native(cx: &Ctx, obj: &Map<String, Value>, opts: &ParseOptions) -> Result<Manifest> {
    check_fields(cx, obj, &["version", "base_url", "assets"], |_| {
        "top level".to_string()
    })?;
    let version = match obj.get("version") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::String(_)) => return Err(cx.err("field \"version\": must not be empty")),
        Some(_) => return Err(cx.err("field \"version\": must be a string")),
        None => return Err(cx.err("field \"version\": required")),
    };
    let base_url = match (&opts.base_url, obj.get("base_url")) {
        (Some(over), _) => Some(over.clone()),
        (None, None | Some(Value::Null)) => None,
        (None, Some(Value::String(s))) => Some(s.clone()),
        (None, Some(_)) => return Err(cx.err("field \"base_url\": must be a string")),
    };
    let base = match &base_url {
        Some(b) => Some(parse_base(b).map_err(|why| cx.err(format!("field \"base_url\": {why}")))?),
        None => None,
    };
    let list = match obj.get("assets") {
        Some(Value::Array(a)) => a,
        Some(_) => return Err(cx.err("field \"assets\": must be an array")),
        None => return Err(cx.err("field \"assets\": required")),
    };
    let mut assets = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        assets.push(parse_native_asset(cx, i, item, base.as_ref())?);
    }
    let manifest = Manifest {
        version,
        base_url,
        assets,
        arcbox: None,
    };
    check_unique(cx, &manifest)?;
    Ok(manifest)
}

fn parse_native_asset(
    cx: &Ctx,
    index: usize,
    item: &Value,
    base: Option<&reqwest::Url>,
) -> Result<Asset> {
    let label = format!("#{index}");
    let obj = item
        .as_object()
        .ok_or_else(|| cx.err(format!("asset {label}: must be an object")))?;
    let name = match obj.get("name") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(cx.asset_err(&label, "name", "must be a string")),
        None => return Err(cx.asset_err(&label, "name", "required")),
    };
    check_fields(
        cx,
        obj,
        &["name", "path", "sha256", "size", "urls", "verify", "mode", "index"],
        |_| format!("asset {name:?}"),
    )?;
    validate_name(&name).map_err(|why| cx.asset_err(&name, "name", why))?;
    let path = match obj.get("path") {
        None | Some(Value::Null) => name.clone(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(cx.asset_err(&name, "path", "must be a string")),
    };
    validate_path(&path).map_err(|why| cx.asset_err(&name, "path", why))?;
    let sha256 = match obj.get("sha256") {
        Some(Value::String(s)) => {
            Sha256Digest::from_hex(s).map_err(|why| cx.asset_err(&name, "sha256", why))?
        }
        Some(_) => return Err(cx.asset_err(&name, "sha256", "must be a string")),
        None => return Err(cx.asset_err(&name, "sha256", "required")),
    };
    let size = match obj.get("size") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| cx.asset_err(&name, "size", "must be a non-negative integer"))?,
        ),
    };
    let urls = match obj.get("urls") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => {
            let mut urls = Vec::with_capacity(list.len());
            for u in list {
                let s = u
                    .as_str()
                    .ok_or_else(|| cx.asset_err(&name, "urls", "entries must be strings"))?;
                urls.push(resolve_url(s, base).map_err(|why| cx.asset_err(&name, "urls", why))?);
            }
            urls
        }
        Some(_) => return Err(cx.asset_err(&name, "urls", "must be an array of strings")),
    };
    let verify = match obj.get("verify") {
        None | Some(Value::Null) => Policy::Cached,
        Some(Value::String(s)) => Policy::parse(s).ok_or_else(|| {
            cx.asset_err(
                &name,
                "verify",
                format!("{s:?}: expected \"cached\" or \"always\""),
            )
        })?,
        Some(_) => return Err(cx.asset_err(&name, "verify", "must be a string")),
    };
    let mode = match obj.get("mode") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            Some(parse_mode(s).map_err(|why| cx.asset_err(&name, "mode", why))?)
        }
        Some(_) => {
            return Err(cx.asset_err(&name, "mode", "must be an octal string like \"0644\""));
        }
    };
    let index = match obj.get("index") {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_index_ref(cx, &name, v, base)?),
    };
    Ok(Asset {
        name,
        path,
        sha256,
        size,
        urls,
        verify,
        mode,
        index,
    })
}

/// The native `index` field: `{"urls": [...], "sha256": "..."}`, URLs resolved as `urls` are.
fn parse_index_ref(
    cx: &Ctx,
    name: &str,
    v: &Value,
    base: Option<&reqwest::Url>,
) -> Result<crate::chunk_index::IndexRef> {
    let shape = "must be an object {\"urls\": [...], \"sha256\": \"...\"}";
    let obj = v
        .as_object()
        .ok_or_else(|| cx.asset_err(name, "index", shape))?;
    if let Some(k) = obj.keys().find(|k| !["urls", "sha256"].contains(&k.as_str())) {
        return Err(cx.asset_err(name, "index", format!("unknown field \"{k}\"; {shape}")));
    }
    let list = match obj.get("urls") {
        Some(Value::Array(list)) if !list.is_empty() => list,
        Some(Value::Array(_)) => return Err(cx.asset_err(name, "index.urls", "must not be empty")),
        Some(_) => return Err(cx.asset_err(name, "index.urls", "must be an array of strings")),
        None => return Err(cx.asset_err(name, "index.urls", "required")),
    };
    let mut urls = Vec::with_capacity(list.len());
    for u in list {
        let s = u
            .as_str()
            .ok_or_else(|| cx.asset_err(name, "index.urls", "entries must be strings"))?;
        urls.push(resolve_url(s, base).map_err(|why| cx.asset_err(name, "index.urls", why))?);
    }
    let sha256 = match obj.get("sha256") {
        Some(Value::String(s)) => {
            Sha256Digest::from_hex(s).map_err(|why| cx.asset_err(name, "index.sha256", why))?
        }
        Some(_) => return Err(cx.asset_err(name, "index.sha256", "must be a string")),
        None => return Err(cx.asset_err(name, "index.sha256", "required")),
    };
    Ok(crate::chunk_index::IndexRef { urls, sha256 })
}

fn check_unique(cx: &Ctx, m: &Manifest) -> Result<()> {
    let mut names = HashSet::new();
    let mut paths = HashSet::new();
    for a in &m.assets {
        if !names.insert(a.name.as_str()) {
            return Err(cx.asset_err(&a.name, "name", "duplicate name"));
        }
        if !paths.insert(a.path.as_str()) {
            return Err(cx.asset_err(&a.name, "path", format!("duplicate path {:?}", a.path)));
        }
    }
    // A path may not be a directory of another asset's path.
    for a in &m.assets {
        let mut prefix = String::new();
        for comp in a.path.split('/') {
            if !prefix.is_empty() && paths.contains(prefix.as_str()) {
                return Err(cx.asset_err(
                    &a.name,
                    "path",
                    format!(
                        "{:?} lies inside the path of another asset ({prefix:?})",
                        a.path
                    ),
                ));
            }
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(comp);
        }
    }
    Ok(())
}

/// Largest manifest (or legacy cache file) read: far above any real set, far below a
/// `/dev/zero` read that never ends.
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// Reads a small text file: refused unless it is a regular file (a fifo would block, a device
/// never ends) of at most `cap` bytes.
pub(crate) fn read_text(path: &std::path::Path, cap: u64) -> std::io::Result<String> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if meta.len() > cap {
        return Err(std::io::Error::other(format!(
            "{} bytes, larger than the {cap} byte limit",
            meta.len()
        )));
    }
    let mut out = String::new();
    f.take(cap + 1).read_to_string(&mut out)?;
    if out.len() as u64 > cap {
        return Err(std::io::Error::other(format!(
            "larger than the {cap} byte limit"
        )));
    }
    Ok(out)
}

/// Checks a manifest that may have been built or changed in code (its fields are public):
/// every name and path valid, names and paths unique, no asset path inside another's. The
/// store runs it before every prepare, so no path that escapes ROOT reaches a file operation.
pub fn revalidate(manifest: &Manifest) -> Result<()> {
    let fail = |message: String| Error::Manifest {
        origin: "<in memory>".into(),
        message,
    };
    if manifest.version.is_empty() {
        return Err(fail("version: must not be empty".into()));
    }
    let mut names = std::collections::HashSet::new();
    let mut paths = std::collections::HashSet::new();
    for a in &manifest.assets {
        validate_name(&a.name).map_err(|why| fail(format!("asset {}: name: {why}", a.name)))?;
        validate_path(&a.path).map_err(|why| fail(format!("asset {}: path: {why}", a.name)))?;
        if !names.insert(a.name.as_str()) {
            return Err(fail(format!("asset {}: name: duplicate", a.name)));
        }
        if !paths.insert(a.path.as_str()) {
            return Err(fail(format!("asset {}: path: duplicate {:?}", a.name, a.path)));
        }
    }
    for a in &manifest.assets {
        // Every proper prefix ending before a '/' is a parent directory of the asset.
        for (i, _) in a.path.match_indices('/') {
            let prefix = &a.path[..i];
            if paths.contains(prefix) {
                return Err(fail(format!(
                    "asset {}: path: {:?} lies inside another asset's path {prefix:?}",
                    a.name, a.path
                )));
            }
        }
    }
    Ok(())
}

/// Checks an asset name: `[A-Za-z0-9._+-]+`.
pub fn validate_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-')))
    {
        return Err(format!(
            "{name:?}: character {c:?} is not allowed (use [A-Za-z0-9._+-])"
        ));
    }
    Ok(())
}

/// Checks an asset path: relative, `/`-separated, no `..`, `.` or empty component, no
/// backslash or NUL, and not inside the default state directory.
pub fn validate_path(path: &str) -> std::result::Result<(), String> {
    if path.is_empty() {
        return Err("must not be empty".into());
    }
    if path.starts_with('/') {
        return Err(format!("{path:?}: must be relative (no leading '/')"));
    }
    if path.contains('\\') {
        return Err(format!("{path:?}: backslash is not allowed; use '/'"));
    }
    if path.contains('\0') {
        return Err(format!("{path:?}: NUL is not allowed"));
    }
    for comp in path.split('/') {
        match comp {
            "" => return Err(format!("{path:?}: empty component")),
            "." => return Err(format!("{path:?}: '.' component")),
            ".." => return Err(format!("{path:?}: '..' component")),
            _ => {}
        }
    }
    if let Some(comp) = path.split('/').find(|c| c.starts_with(".bootvault-")) {
        return Err(format!(
            "{path:?}: {comp:?}: names starting with .bootvault- are bootvault's temp files"
        ));
    }
    if path.split('/').next() == Some(crate::STATE_DIR_NAME) {
        return Err(format!(
            "{path:?}: {} is reserved for bootvault's state",
            crate::STATE_DIR_NAME
        ));
    }
    Ok(())
}

fn parse_mode(s: &str) -> std::result::Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if digits.is_empty() || digits.len() > 4 || !digits.chars().all(|c| ('0'..='7').contains(&c)) {
        return Err(format!("{s:?}: expected an octal string like \"0644\""));
    }
    let mode = u32::from_str_radix(digits, 8).map_err(|e| format!("{s:?}: {e}"))?;
    if mode > 0o777 {
        return Err(format!(
            "{s:?}: only permission bits (at most 0777) are allowed"
        ));
    }
    Ok(mode)
}

fn parse_base(s: &str) -> std::result::Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(s).map_err(|e| format!("{s:?}: {e}"))?;
    match url.scheme() {
        "http" | "https" | "file" => Ok(url),
        other => Err(format!("{s:?}: unsupported scheme {other:?}")),
    }
}

fn resolve_url(s: &str, base: Option<&reqwest::Url>) -> std::result::Result<String, String> {
    match reqwest::Url::parse(s) {
        Ok(url) => match url.scheme() {
            "http" | "https" | "file" => Ok(url.to_string()),
            // A registry repository: the blob is the asset's digest (see `oci`).
            "oci" => match crate::oci::Reference::parse(s) {
                Ok(r) if r.tag.is_none() && r.digest.is_none() => Ok(r.repository_url()),
                Ok(_) => Err(format!(
                    "{s:?}: an oci:// source names a repository, without tag or digest"
                )),
                Err(e) => Err(e.to_string()),
            },
            other => Err(format!(
                "{s:?}: unsupported scheme {other:?} (http, https, file or oci)"
            )),
        },
        Err(url::ParseError::RelativeUrlWithoutBase) => {
            let base = base.ok_or_else(|| format!("{s:?} is relative but there is no base_url"))?;
            // A base without a trailing slash would drop its last segment; treat it as a folder.
            let mut base = base.clone();
            if !base.path().ends_with('/') {
                let p = format!("{}/", base.path());
                base.set_path(&p);
            }
            base.join(s)
                .map(|u| u.to_string())
                .map_err(|e| format!("{s:?}: {e}"))
        }
        Err(e) => Err(format!("{s:?}: {e}")),
    }
}

// ---- arcbox-boot manifests -----------------------------------------------------------------
//
// The format of arcbox-boot 0.8's `Manifest` (serde, unknown fields ignored), field for field:
// `schema_version`, `asset_version`, `built_at`, optional `source_repo`/`source_ref`/
// `source_sha`, `targets.<arch> = {kernel, rootfs, kernel_cmdline, runtime?}` and
// `binaries[] = {name, version, targets.<arch> = {path, sha256}, install_dir?}`. Upstream adds
// fields over time and arcbox-boot ignores what it does not know, so this foreign format does
// too (the native format stays strict).

/// What an arcbox-boot manifest says beyond the assets (the host needs it to boot).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArcboxMeta {
    /// `schema_version` (the major of `asset_version`).
    pub schema_version: u32,
    /// `asset_version`.
    pub asset_version: String,
    /// `built_at` (RFC 3339, as written by the release tools).
    pub built_at: String,
    /// `source_repo`.
    pub source_repo: Option<String>,
    /// `source_ref`.
    pub source_ref: Option<String>,
    /// `source_sha`.
    pub source_sha: Option<String>,
    /// The architecture that was selected.
    pub arch: String,
    /// `targets.<arch>.kernel_cmdline`.
    pub kernel_cmdline: String,
    /// `targets.<arch>.kernel.version`.
    pub kernel_version: Option<String>,
    /// `targets.<arch>.rootfs.version`.
    pub rootfs_version: Option<String>,
    /// The binaries built for the selected architecture, in manifest order.
    pub binaries: Vec<ArcboxBinary>,
}

/// One `binaries[]` entry of an arcbox-boot manifest, for the selected architecture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArcboxBinary {
    /// `name` (also the asset name and the file name).
    pub name: String,
    /// `version`.
    pub version: String,
    /// `install_dir`: `None` installs into the host's bin dir, `Some(dir)` into `dir` as a
    /// sibling of the bin dir.
    pub install_dir: Option<String>,
}

/// Asset name of the boot kernel in an arcbox-boot manifest.
pub const ARCBOX_KERNEL: &str = "kernel";
/// Asset name of the boot rootfs in an arcbox-boot manifest.
pub const ARCBOX_ROOTFS: &str = "rootfs";

impl Manifest {
    /// The arcbox-boot metadata, when the manifest was in arcbox-boot's format.
    pub fn arcbox(&self) -> Option<&ArcboxMeta> {
        self.arcbox.as_ref()
    }

    /// The kernel command line of an arcbox-boot manifest's selected target.
    pub fn kernel_cmdline(&self) -> Option<&str> {
        self.arcbox.as_ref().map(|m| m.kernel_cmdline.as_str())
    }
}

/// Where an arcbox-boot manifest puts its files under one ROOT. The layout mirrors arcbox's
/// own with ROOT = its data dir: `boot/VERSION/kernel` and `boot/VERSION/rootfs.erofs` (the
/// `cache_dir/VERSION` of arcbox-boot with `cache_dir = ROOT/boot`), binaries at `bin/NAME`
/// and those with `install_dir` at `INSTALL_DIR/NAME` (siblings of `bin`, as arcbox-boot puts
/// them). So `vmlinux` with `install_dir: "kernel"` lands at `kernel/vmlinux`, and the boot
/// kernel, under `boot/`, never collides with it.
pub fn arcbox_layout_path(version: &str, asset: &str, install_dir: Option<&str>) -> String {
    match (asset, install_dir) {
        (ARCBOX_KERNEL, None) => format!("boot/{version}/kernel"),
        (ARCBOX_ROOTFS, None) => format!("boot/{version}/rootfs.erofs"),
        (name, None) => format!("bin/{name}"),
        (name, Some("")) => name.to_string(),
        (name, Some(dir)) => format!("{dir}/{name}"),
    }
}

fn req_str<'v>(cx: &Ctx, obj: &'v Map<String, Value>, field: &str, at: &str) -> Result<&'v str> {
    match obj.get(field) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(cx.err(format!("{at}field \"{field}\": must be a string"))),
        None => Err(cx.err(format!("{at}field \"{field}\": required"))),
    }
}

fn opt_str(cx: &Ctx, obj: &Map<String, Value>, field: &str, at: &str) -> Result<Option<String>> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(cx.err(format!("{at}field \"{field}\": must be a string"))),
    }
}

fn req_obj<'v>(
    cx: &Ctx,
    obj: &'v Map<String, Value>,
    field: &str,
    at: &str,
) -> Result<&'v Map<String, Value>> {
    match obj.get(field) {
        Some(Value::Object(o)) => Ok(o),
        Some(_) => Err(cx.err(format!("{at}field \"{field}\": must be an object"))),
        None => Err(cx.err(format!("{at}field \"{field}\": required"))),
    }
}

/// arcbox-boot's manifest, typed as its own serde types are (unknown fields ignored). Parsed
/// straight from the text when it is well-formed, which is the common case and several times
/// cheaper than a `Value` tree; otherwise the `Value` walk below finds and names what is wrong.
#[derive(serde::Deserialize)]
struct Doc {
    schema_version: u32,
    asset_version: String,
    built_at: String,
    #[serde(default)]
    source_repo: Option<String>,
    #[serde(default)]
    source_ref: Option<String>,
    #[serde(default)]
    source_sha: Option<String>,
    targets: std::collections::BTreeMap<String, DocTarget>,
    #[serde(default)]
    binaries: Vec<DocBinary>,
}

#[derive(serde::Deserialize)]
struct DocTarget {
    kernel: DocEntry,
    rootfs: DocEntry,
    kernel_cmdline: String,
}

#[derive(serde::Deserialize)]
struct DocEntry {
    path: String,
    sha256: String,
    #[serde(default)]
    version: Option<String>,
}

#[derive(serde::Deserialize)]
struct DocBinary {
    name: String,
    version: String,
    targets: std::collections::BTreeMap<String, DocEntry>,
    #[serde(default)]
    install_dir: Option<String>,
}

/// The typed fast path: `None` when the text is not a well-formed arcbox-boot manifest.
fn parse_arcbox_fast(cx: &Ctx, text: &str, opts: &ParseOptions) -> Option<Result<Manifest>> {
    // Only a text that names arcbox-boot's fields is tried: a native manifest never pays.
    if !text.contains("\"asset_version\"") {
        return None;
    }
    let doc: Doc = serde_json::from_str(text).ok()?;
    Some(build_arcbox(cx, doc, opts))
}

/// The `Value` walk: every type error names its field.
fn parse_arcbox(cx: &Ctx, obj: &Map<String, Value>, opts: &ParseOptions) -> Result<Manifest> {
    let schema_version = match obj.get("schema_version") {
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| cx.err("field \"schema_version\": must be a non-negative integer"))?,
        None => return Err(cx.err("field \"schema_version\": required")),
    };
    let asset_version = req_str(cx, obj, "asset_version", "")?.to_string();
    let built_at = req_str(cx, obj, "built_at", "")?.to_string();
    let source_repo = opt_str(cx, obj, "source_repo", "")?;
    let source_ref = opt_str(cx, obj, "source_ref", "")?;
    let source_sha = opt_str(cx, obj, "source_sha", "")?;
    let entry = |o: &Map<String, Value>, label: &str| -> Result<DocEntry> {
        let at = format!("{label}: ");
        Ok(DocEntry {
            path: req_str(cx, o, "path", &at)?.to_string(),
            sha256: req_str(cx, o, "sha256", &at)?.to_string(),
            version: opt_str(cx, o, "version", &at)?,
        })
    };
    // Every target and every binary entry is checked, whatever the arch: arcbox-boot's serde
    // types reject a manifest with any malformed entry, and so does this walk (the typed path
    // above accepts exactly what arcbox-boot accepts).
    let mut targets = std::collections::BTreeMap::new();
    for (key, t) in req_obj(cx, obj, "targets", "")? {
        let t = t
            .as_object()
            .ok_or_else(|| cx.err(format!("targets.{key}: must be an object")))?;
        let at = format!("targets.{key}: ");
        let kernel_cmdline = req_str(cx, t, "kernel_cmdline", &at)?.to_string();
        let kernel = entry(
            req_obj(cx, t, ARCBOX_KERNEL, &at)?,
            &format!("targets.{key}.kernel"),
        )?;
        let rootfs = entry(
            req_obj(cx, t, ARCBOX_ROOTFS, &at)?,
            &format!("targets.{key}.rootfs"),
        )?;
        targets.insert(
            key.clone(),
            DocTarget {
                kernel,
                rootfs,
                kernel_cmdline,
            },
        );
    }
    let mut binaries = Vec::new();
    match obj.get("binaries") {
        None => {}
        Some(Value::Array(list)) => {
            for (i, bin) in list.iter().enumerate() {
                let b = bin
                    .as_object()
                    .ok_or_else(|| cx.err(format!("binaries[{i}]: must be an object")))?;
                let at = format!("binaries[{i}]: ");
                let name = req_str(cx, b, "name", &at)?.to_string();
                let version = req_str(cx, b, "version", &at)?.to_string();
                let install_dir = opt_str(cx, b, "install_dir", &at)?;
                let mut bin_targets = std::collections::BTreeMap::new();
                for (key, e) in req_obj(cx, b, "targets", &at)? {
                    let label = format!("binaries[{i}].targets.{key}");
                    let e = e
                        .as_object()
                        .ok_or_else(|| cx.err(format!("{label}: must be an object")))?;
                    bin_targets.insert(key.clone(), entry(e, &label)?);
                }
                binaries.push(DocBinary {
                    name,
                    version,
                    targets: bin_targets,
                    install_dir,
                });
            }
        }
        Some(_) => return Err(cx.err("field \"binaries\": must be an array")),
    }
    build_arcbox(
        cx,
        Doc {
            schema_version,
            asset_version,
            built_at,
            source_repo,
            source_ref,
            source_sha,
            targets,
            binaries,
        },
        opts,
    )
}

/// The checks that do not depend on how the text was read, and the mapping onto assets.
fn build_arcbox(cx: &Ctx, mut doc: Doc, opts: &ParseOptions) -> Result<Manifest> {
    let version = doc.asset_version;
    if version.is_empty() {
        return Err(cx.err("field \"asset_version\": must not be empty"));
    }
    let schema_version = doc.schema_version;
    let major = version
        .split('.')
        .next()
        .and_then(|m| m.parse::<u64>().ok());
    if major.is_some_and(|m| m != u64::from(schema_version)) {
        return Err(cx.err(format!(
            "field \"schema_version\": {schema_version} does not match the major of asset_version {version:?}"
        )));
    }
    let arch = opts.arch.clone().unwrap_or_else(|| host_arch().to_string());
    let base_url = opts.base_url.clone();
    let base = match &base_url {
        Some(b) => Some(parse_base(b).map_err(|why| cx.err(format!("--base-url: {why}")))?),
        None => None,
    };
    let Some(target) = doc.targets.remove(&arch) else {
        let known: Vec<&str> = doc.targets.keys().map(String::as_str).collect();
        return Err(cx.err(format!(
            "field \"targets\": no entry for arch {arch:?} (the manifest has: {})",
            known.join(", ")
        )));
    };
    let mut assets = Vec::with_capacity(2 + doc.binaries.len());
    // Kernel and rootfs default to `cached`: the full stamp (ctime included) sees every write
    // a guest can make through the share, and the state lives outside it (see SECURITY.md).
    // They are placed read-only.
    for (name, entry) in [(ARCBOX_KERNEL, &target.kernel), (ARCBOX_ROOTFS, &target.rootfs)] {
        assets.push(arcbox_entry(
            cx,
            &format!("targets.{arch}.{name}"),
            name,
            &arcbox_layout_path(&version, name, None),
            entry,
            base.as_ref(),
            Policy::Cached,
            Some(0o444),
        )?);
    }
    let mut binaries = Vec::with_capacity(doc.binaries.len());
    for (i, b) in doc.binaries.into_iter().enumerate() {
        validate_name(&b.name).map_err(|why| cx.asset_err(&b.name, "name", why))?;
        let install_dir = b.install_dir.map(|d| d.trim_end_matches('/').to_string());
        // A binary not built for this architecture is not part of this set, as in
        // arcbox-boot (FEX is arm64-only).
        let Some(entry) = b.targets.get(&arch) else {
            continue;
        };
        assets.push(arcbox_entry(
            cx,
            &format!("binaries[{i}].targets.{arch}"),
            &b.name,
            &arcbox_layout_path(&version, &b.name, install_dir.as_deref()),
            entry,
            base.as_ref(),
            Policy::Cached,
            Some(0o755),
        )?);
        binaries.push(ArcboxBinary {
            name: b.name,
            version: b.version,
            install_dir,
        });
    }
    let manifest = Manifest {
        version: version.clone(),
        base_url,
        assets,
        arcbox: Some(ArcboxMeta {
            schema_version,
            asset_version: version,
            built_at: doc.built_at,
            source_repo: doc.source_repo,
            source_ref: doc.source_ref,
            source_sha: doc.source_sha,
            arch,
            kernel_cmdline: target.kernel_cmdline,
            kernel_version: target.kernel.version,
            rootfs_version: target.rootfs.version,
            binaries,
        }),
    };
    check_unique(cx, &manifest)?;
    Ok(manifest)
}

#[allow(clippy::too_many_arguments)]
fn arcbox_entry(
    cx: &Ctx,
    label: &str,
    name: &str,
    path: &str,
    entry: &DocEntry,
    base: Option<&reqwest::Url>,
    verify: Policy,
    mode: Option<u32>,
) -> Result<Asset> {
    let src = entry.path.as_str();
    let sha256 = Sha256Digest::from_hex(&entry.sha256)
        .map_err(|why| cx.asset_err(name, &format!("{label}.sha256"), why))?;
    validate_path(path).map_err(|why| cx.asset_err(name, "install_dir", why))?;
    let urls = match base {
        // A release path (`bin/k3s/v1.36.2-k3s1/x86_64/k3s`) appended to the base folder is
        // exactly what `Url::join` returns, without parsing the result again.
        Some(b) if b.path().ends_with('/') && b.query().is_none() && is_plain_path(src) => {
            vec![format!("{}{src}", b.as_str())]
        }
        Some(_) => vec![
            resolve_url(src, base)
                .map_err(|why| cx.asset_err(name, &format!("{label}.path"), why))?,
        ],
        // Without a base URL only absolute sources can be used; otherwise verify in place.
        None => resolve_url(src, None).map(|u| vec![u]).unwrap_or_default(),
    };
    Ok(Asset {
        name: name.to_string(),
        path: path.to_string(),
        sha256,
        // arcbox-boot manifests carry no sizes.
        size: None,
        urls,
        verify,
        mode,
        index: None,
    })
}

/// A relative path that `Url::join` appends unchanged to a folder URL: `/`-separated
/// components of unreserved characters, none empty, `.` or `..`.
fn is_plain_path(s: &str) -> bool {
    !s.is_empty()
        && s.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+' | b'~')
                })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../tests/fixtures/arcbox/manifest-0.6.0.json");

    /// The typed fast path and the `Value` walk give the same manifest.
    #[test]
    fn both_arcbox_readers_agree() {
        let mut edited: Value = serde_json::from_str(SAMPLE).unwrap();
        edited["future"] = serde_json::json!([1, 2]);
        edited["binaries"][0]["sbom"] = serde_json::json!({"spdx": true});
        edited["targets"]["x86_64"]["kernel"]["size"] = serde_json::json!(123);
        edited["source_ref"] = Value::Null;
        for text in [SAMPLE.to_string(), edited.to_string()] {
            for arch in ["x86_64", "arm64"] {
                let opts = ParseOptions {
                    arch: Some(arch.into()),
                    base_url: Some("https://boot.arcboxcdn.com".into()),
                };
                let cx = Ctx { origin: "sample" };
                let fast = parse_arcbox_fast(&cx, &text, &opts)
                    .expect("well-formed")
                    .unwrap();
                let value: Value = serde_json::from_str(&text).unwrap();
                let walked = parse_arcbox(&cx, value.as_object().unwrap(), &opts).unwrap();
                assert_eq!(fast, walked, "{arch}");
                assert!(!fast.assets.is_empty());
            }
        }
    }

    /// The plain-path shortcut gives what `Url::join` gives.
    #[test]
    fn plain_paths_join_as_url_join_does() {
        let base = reqwest::Url::parse("https://boot.arcboxcdn.com/").unwrap();
        for p in [
            "asset/v0.6.0/x86_64/kernel",
            "bin/k3s/v1.36.2-k3s1/x86_64/k3s",
            "bin/mkfs.ext4/1.47.3/x86_64/mkfs.ext4",
            "bin/a+b/1~2/x/y_z",
        ] {
            assert!(is_plain_path(p), "{p}");
            assert_eq!(format!("{}{p}", base.as_str()), base.join(p).unwrap().as_str());
        }
        for p in ["../x", "a//b", "./a", "a b", "a?b", "a#b", "a%2fb", "http://x/y", ""] {
            assert!(!is_plain_path(p), "{p}");
        }
    }
}
