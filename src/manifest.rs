//! The manifest: which assets a store must hold, where, with which digest, and from where.
//!
//! The native format of the contract (other formats, such as arcbox-boot's, are mapped onto
//! it by their own crates before they reach a store). Validation is done by hand over
//! a `serde_json::Value` so that every error names the asset and the field.

pub use crate::asset_path::{AssetPath, validate_path};
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use serde::Serialize;
use serde_json::{Map, Value};

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
///
/// Built by the parsers, or in code by [`Asset::new`] and its setters; it is
/// `#[non_exhaustive]`, so code outside this crate cannot build one with a struct literal. The
/// fields stay public for reading (and may be assigned):
///
/// - `path` is an [`AssetPath`]: safe by its type, whatever is assigned to it, and never
///   checked again;
/// - `name` is checked by [`Asset::new`] and by the parser; a name assigned afterwards is
///   checked again by the store, before any file operation of a prepare (see [`Manifest`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Asset {
    /// Unique name, `[A-Za-z0-9._+-]+`.
    pub name: String,
    /// Relative, `/`-separated path under ROOT.
    pub path: AssetPath,
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

impl Asset {
    /// An asset named `name` (checked with [`validate_name`]) at `path`, with digest `sha256`:
    /// no size, no URLs, [`Policy::Cached`], the default mode and no chunk index (see the
    /// setters).
    ///
    /// ```
    /// use bootvault::{Asset, AssetPath, Manifest, Policy, Sha256Digest};
    ///
    /// let kernel = Asset::new("kernel", AssetPath::new("boot/vmlinux")?, Sha256Digest::of(b"k"))?
    ///     .size(1)
    ///     .urls(vec!["https://example.com/vmlinux".into()])
    ///     .verify(Policy::Always)
    ///     .mode(0o444);
    /// let manifest = Manifest::new("v1", vec![kernel])?;
    /// assert_eq!(manifest.assets[0].path, "boot/vmlinux");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(name: impl Into<String>, path: AssetPath, sha256: Sha256Digest) -> Result<Asset> {
        let name = name.into();
        validate_name(&name).map_err(|why| in_memory(format!("asset {name}: name: {why}")))?;
        Ok(Asset {
            name,
            path,
            sha256,
            size: None,
            urls: Vec::new(),
            verify: Policy::Cached,
            mode: None,
            index: None,
        })
    }

    /// The expected size, enforced when given.
    pub fn size(mut self, size: impl Into<Option<u64>>) -> Self {
        self.size = size.into();
        self
    }

    /// The source URLs, in the order they are tried.
    pub fn urls(mut self, urls: Vec<String>) -> Self {
        self.urls = urls;
        self
    }

    /// The verification policy.
    pub fn verify(mut self, verify: Policy) -> Self {
        self.verify = verify;
        self
    }

    /// The permission bits applied when placed (group and other write bits are dropped).
    pub fn mode(mut self, mode: impl Into<Option<u32>>) -> Self {
        self.mode = mode.into();
        self
    }

    /// Where the asset's chunk index is.
    pub fn index(mut self, index: impl Into<Option<crate::chunk_index::IndexRef>>) -> Self {
        self.index = index.into();
        self
    }
}

/// A validated manifest.
///
/// Built by the parsers, or in code by [`Manifest::new`] and its setters; it is
/// `#[non_exhaustive]`, so code outside this crate cannot build one with a struct literal.
/// What holds, and how:
///
/// - every asset path is safe (no `..`, not absolute, ...): by type ([`AssetPath`]), so it
///   holds whatever is assigned to the public fields;
/// - the version is not empty, every name is valid, names and paths are unique, no asset path
///   lies inside another's: checked by [`Manifest::new`] and by the parser; since the fields
///   are public (`assets` can be pushed to, a name reassigned), every prepare checks them
///   again (the same checks as [`Manifest::new`]) before any file operation, and refuses the
///   manifest with [`Error::Manifest`](crate::Error::Manifest).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Manifest {
    /// The manifest version, recorded with every verification.
    pub version: String,
    /// The base URL relative `urls` were resolved against.
    pub base_url: Option<String>,
    /// The assets, in manifest order.
    pub assets: Vec<Asset>,
    /// The kernel command line, when the format carries one (arcbox-boot's does; the native
    /// format does not). Reported with the prepare.
    pub kernel_cmdline: Option<String>,
}

/// Options for reading a manifest.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ParseOptions {
    /// Overrides the manifest's `base_url` (relative `urls` are resolved against it).
    pub base_url: Option<String>,
}

impl ParseOptions {
    /// Resolve relative sources against `base_url` instead of the manifest's own.
    pub fn base_url(mut self, base_url: Option<String>) -> Self {
        self.base_url = base_url;
        self
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
    /// A manifest of `assets` at `version`, checked as the parser checks one: a non-empty
    /// version, valid and unique names, unique paths, no asset path inside another's (paths
    /// are safe by their type). No base URL and no kernel command line (see the setters).
    pub fn new(version: impl Into<String>, assets: Vec<Asset>) -> Result<Manifest> {
        let manifest = Manifest {
            version: version.into(),
            base_url: None,
            assets,
            kernel_cmdline: None,
        };
        revalidate(&manifest)?;
        Ok(manifest)
    }

    /// The base URL relative `urls` were resolved against (informational: the URLs of the
    /// assets are used as they are).
    pub fn base_url(mut self, base_url: impl Into<Option<String>>) -> Self {
        self.base_url = base_url.into();
        self
    }

    /// The kernel command line, reported with the prepare.
    pub fn kernel_cmdline(mut self, kernel_cmdline: impl Into<Option<String>>) -> Self {
        self.kernel_cmdline = kernel_cmdline.into();
        self
    }

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
        // The typed fast path accepts only what the slow path accepts, with the same result;
        // anything else (an error, or an input it is unsure of) goes to the slow path, which
        // decides and words the error.
        if let Some(manifest) = parse_fast(text, opts) {
            return Ok(manifest);
        }
        parse_slow(text, origin, opts)
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
    /// `kernel_cmdline` is not part of it).
    pub fn to_json(&self) -> Value {
        let assets: Vec<Value> = self
            .assets
            .iter()
            .map(|a| {
                let mut m = Map::new();
                m.insert("name".into(), a.name.clone().into());
                m.insert("path".into(), a.path.as_str().into());
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

/// The native parser over a `serde_json::Value` tree: the definition of the format, and the
/// one that words every error (naming the asset and the field). [`Manifest::parse`] runs it
/// when [`parse_fast`] gives up.
pub fn parse_slow(text: &str, origin: &str, opts: &ParseOptions) -> Result<Manifest> {
    let cx = Ctx { origin };
    let value: Value =
        serde_json::from_str(text).map_err(|e| cx.err(format!("not valid JSON: {e}")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| cx.err("the top level must be a JSON object"))?;
    parse_native(&cx, obj, opts)
}

/// The native parser straight into typed structs (no `Value` tree, strings borrowed from the
/// text where they have no escapes): an accelerator for [`parse_slow`], never a second
/// definition of the format. It returns `Some` only for an input [`parse_slow`] accepts, and
/// then the very manifest [`parse_slow`] returns; `None` for anything else (invalid, or a
/// shape it leaves to the slow path: a duplicate key, a non-string `base_url` under an
/// override), which [`Manifest::parse`] hands to [`parse_slow`]. Every value goes through the
/// slow path's own helpers (`validate_name`, `AssetPath::new`, `Sha256Digest::from_hex`,
/// `resolve_url`, `parse_mode`, `check_unique`).
pub fn parse_fast(text: &str, opts: &ParseOptions) -> Option<Manifest> {
    let raw: fast::MapOnly<fast::RawManifest> = serde_json::from_str(text).ok()?;
    let raw = raw.0;
    if raw.version.0.trim().is_empty() {
        return None;
    }
    let base_url = match &opts.base_url {
        Some(over) => Some(over.clone()),
        None => raw.base_url.map(|b| b.0.into_owned()),
    };
    let base = match &base_url {
        Some(b) => Some(parse_base(b).ok()?),
        None => None,
    };
    let base = base.as_ref();
    let mut assets = Vec::with_capacity(raw.assets.len());
    for a in raw.assets {
        let a = a.0;
        validate_name(&a.name.0).ok()?;
        let path = AssetPath::new(a.path.as_ref().unwrap_or(&a.name).0.as_ref()).ok()?;
        let sha256 = Sha256Digest::from_hex(&a.sha256.0).ok()?;
        let urls = match a.urls {
            None => Vec::new(),
            Some(list) => list
                .iter()
                .map(|u| resolve_url(&u.0, base).ok())
                .collect::<Option<Vec<String>>>()?,
        };
        let verify = match a.verify {
            None => Policy::Cached,
            Some(s) => Policy::parse(&s.0)?,
        };
        let mode = match a.mode {
            None => None,
            Some(s) => Some(parse_mode(&s.0).ok()?),
        };
        let index = match a.index {
            None => None,
            Some(ix) => {
                let ix = ix.0;
                if ix.urls.is_empty() {
                    return None;
                }
                let urls = ix
                    .urls
                    .iter()
                    .map(|u| resolve_url(&u.0, base).ok())
                    .collect::<Option<Vec<String>>>()?;
                let sha256 = Sha256Digest::from_hex(&ix.sha256.0).ok()?;
                Some(crate::chunk_index::IndexRef { urls, sha256 })
            }
        };
        assets.push(Asset {
            name: a.name.0.into_owned(),
            path,
            sha256,
            size: a.size.map(|s| s.0),
            urls,
            verify,
            mode,
            index,
        });
    }
    let manifest = Manifest {
        version: raw.version.0.into_owned(),
        base_url,
        assets,
        kernel_cmdline: None,
    };
    check_unique(&Ctx { origin: "" }, &manifest).ok()?;
    Some(manifest)
}

/// The typed shapes of [`parse_fast`]. Their traps, each closed so that they accept no more
/// than the `Value` walk: serde derive takes a JSON array for a struct (here only maps, by
/// [`MapOnly`]); unknown fields are refused (`deny_unknown_fields`, as `check_fields` does);
/// a duplicate key is an error of the derive (the `Value` walk keeps the last one: left to
/// it); a size is a non-negative integer as `Value::as_u64` reads one ([`Size`]); `null` and
/// absence mean the same for every optional field, as in the walk.
mod fast {
    use serde::Deserialize;
    use serde::de::{self, Deserializer, MapAccess, Visitor};
    use std::borrow::Cow;
    use std::marker::PhantomData;

    /// A JSON string, borrowed from the text when it has no escapes; nothing else.
    pub(super) struct Text<'a>(pub(super) Cow<'a, str>);

    impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V<'a>(PhantomData<&'a ()>);
            impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
                type Value = Text<'a>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a string")
                }
                fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Text<'a>, E> {
                    Ok(Text(Cow::Borrowed(s)))
                }
                fn visit_str<E: de::Error>(self, s: &str) -> Result<Text<'a>, E> {
                    Ok(Text(Cow::Owned(s.to_owned())))
                }
                fn visit_string<E: de::Error>(self, s: String) -> Result<Text<'a>, E> {
                    Ok(Text(Cow::Owned(s)))
                }
            }
            d.deserialize_str(V(PhantomData))
        }
    }

    /// A size: an integer that `Value::as_u64` reads (a JSON number without fraction or
    /// exponent, from 0 to `u64::MAX`); no float (`1.0`), no string.
    pub(super) struct Size(pub(super) u64);

    impl<'de> Deserialize<'de> for Size {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Size;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a non-negative integer")
                }
                fn visit_u64<E: de::Error>(self, n: u64) -> Result<Size, E> {
                    Ok(Size(n))
                }
                fn visit_i64<E: de::Error>(self, n: i64) -> Result<Size, E> {
                    // As `Value` stores it: a non-negative i64 is a `PosInt`.
                    u64::try_from(n)
                        .map(Size)
                        .map_err(|_| E::custom("negative"))
                }
            }
            d.deserialize_u64(V)
        }
    }

    /// A struct read from a JSON object only (serde derive alone also takes an array).
    pub(super) struct MapOnly<T>(pub(super) T);

    impl<'de, T: Deserialize<'de>> Deserialize<'de> for MapOnly<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V<T>(PhantomData<T>);
            impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
                type Value = MapOnly<T>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<MapOnly<T>, A::Error> {
                    T::deserialize(de::value::MapAccessDeserializer::new(map)).map(MapOnly)
                }
            }
            d.deserialize_map(V(PhantomData))
        }
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct RawManifest<'a> {
        #[serde(borrow)]
        pub(super) version: Text<'a>,
        #[serde(borrow, default)]
        pub(super) base_url: Option<Text<'a>>,
        #[serde(borrow)]
        pub(super) assets: Vec<MapOnly<RawAsset<'a>>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct RawAsset<'a> {
        #[serde(borrow)]
        pub(super) name: Text<'a>,
        #[serde(borrow, default)]
        pub(super) path: Option<Text<'a>>,
        #[serde(borrow)]
        pub(super) sha256: Text<'a>,
        #[serde(default)]
        pub(super) size: Option<Size>,
        #[serde(borrow, default)]
        pub(super) urls: Option<Vec<Text<'a>>>,
        #[serde(borrow, default)]
        pub(super) verify: Option<Text<'a>>,
        #[serde(borrow, default)]
        pub(super) mode: Option<Text<'a>>,
        #[serde(borrow, default)]
        pub(super) index: Option<MapOnly<RawIndex<'a>>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct RawIndex<'a> {
        #[serde(borrow)]
        pub(super) urls: Vec<Text<'a>>,
        #[serde(borrow)]
        pub(super) sha256: Text<'a>,
    }
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
        kernel_cmdline: None,
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
        None | Some(Value::Null) => name.as_str(),
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(cx.asset_err(&name, "path", "must be a string")),
    };
    let path = AssetPath::new(path).map_err(|why| cx.asset_err(&name, "path", why))?;
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
    check_across(
        &m.assets,
        |_| Ok(()),
        |a, clash| match clash {
            Clash::Name => cx.asset_err(&a.name, "name", "duplicate name"),
            Clash::Path => cx.asset_err(&a.name, "path", format!("duplicate path {:?}", a.path)),
            Clash::Inside(prefix) => cx.asset_err(
                &a.name,
                "path",
                format!(
                    "{:?} lies inside the path of another asset ({prefix:?})",
                    a.path
                ),
            ),
        },
    )
}

/// Why an asset cannot sit beside the others.
enum Clash<'a> {
    /// Another asset has its name.
    Name,
    /// Another asset has its path.
    Path,
    /// Another asset's path is this parent directory of its path.
    Inside(&'a str),
}

/// The checks across assets, shared by the parser and [`revalidate`] (each words its errors):
/// in manifest order, `each` on the asset and then its name and path unique; then no asset
/// path inside another's.
fn check_across<'a>(
    assets: &'a [Asset],
    mut each: impl FnMut(&'a Asset) -> Result<()>,
    clash: impl Fn(&'a Asset, Clash<'a>) -> Error,
) -> Result<()> {
    // Sized up front: growing a set re-hashes every member so far (a third of the cost at
    // 10,000 assets).
    let mut names = std::collections::HashSet::with_capacity(assets.len());
    let mut paths = std::collections::HashSet::with_capacity(assets.len());
    for a in assets {
        each(a)?;
        if !names.insert(a.name.as_str()) {
            return Err(clash(a, Clash::Name));
        }
        if !paths.insert(a.path.as_str()) {
            return Err(clash(a, Clash::Path));
        }
    }
    for a in assets {
        // Every proper prefix ending before a '/' is a parent directory of the asset.
        for (i, _) in a.path.match_indices('/') {
            let prefix = &a.path[..i];
            if paths.contains(prefix) {
                return Err(clash(a, Clash::Inside(prefix)));
            }
        }
    }
    Ok(())
}

/// Largest manifest (or legacy cache file) read: far above any real set, far below a
/// `/dev/zero` read that never ends.
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// Reads a manifest file as [`Manifest::from_file`] does (a regular file of at most 16 MiB),
/// for a front end that parses other formats too.
pub fn read_manifest_text(path: &std::path::Path) -> std::io::Result<String> {
    read_text(path, MAX_MANIFEST_BYTES)
}

/// Reads a small text file: refused unless it is a regular file (a fifo would block, a device
/// never ends) of at most `cap` bytes.
pub(crate) fn read_text(path: &std::path::Path, cap: u64) -> std::io::Result<String> {
    String::from_utf8(read_local(path, cap)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// Reads a small local input (a manifest, key, signature, config or auth file) of at most
/// `cap` bytes. Only a regular file: a device (`/dev/zero`) or a fifo is refused without
/// reading, and the open itself never blocks on a fifo (`O_NONBLOCK`). A symlink the user
/// named is followed: these are the operator's own paths.
pub fn read_local(path: &std::path::Path, cap: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
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
    // Sized from the fstat: one read for the whole file, not a doubling series from 32 bytes
    // (`Take` hides the size hint). The file may still grow: the cap is checked again below.
    let mut out = Vec::with_capacity(meta.len() as usize + 1);
    f.take(cap + 1).read_to_end(&mut out)?;
    if out.len() as u64 > cap {
        return Err(std::io::Error::other(format!(
            "larger than the {cap} byte limit"
        )));
    }
    Ok(out)
}

fn in_memory(message: String) -> Error {
    Error::Manifest {
        origin: "<in memory>".into(),
        message,
    }
}

/// Checks a manifest that may have been built or changed in code (its fields are public):
/// a non-empty version, every name valid, names and paths unique, no asset path inside
/// another's (paths are safe by their type, [`AssetPath`]). [`Manifest::new`] runs it, and
/// the store runs it before every prepare.
pub fn revalidate(manifest: &Manifest) -> Result<()> {
    if manifest.version.is_empty() {
        return Err(in_memory("version: must not be empty".into()));
    }
    check_across(
        &manifest.assets,
        |a| {
            validate_name(&a.name)
                .map_err(|why| in_memory(format!("asset {}: name: {why}", a.name)))
        },
        |a, clash| {
            in_memory(match clash {
                Clash::Name => format!("asset {}: name: duplicate", a.name),
                Clash::Path => format!("asset {}: path: duplicate {:?}", a.name, a.path),
                Clash::Inside(prefix) => format!(
                    "asset {}: path: {:?} lies inside another asset's path {prefix:?}",
                    a.name, a.path
                ),
            })
        },
    )
}

/// Checks an asset name: `[A-Za-z0-9._+-]+`.
pub fn validate_name(name: &str) -> Result<()> {
    let why = |why: String| {
        Err(Error::InvalidName {
            name: name.to_string(),
            why,
        })
    };
    if name.is_empty() {
        return why("must not be empty".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-')))
    {
        return why(format!("character {c:?} is not allowed (use [A-Za-z0-9._+-])"));
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
            "oci" => match crate::reference::parse(s) {
                Ok(r) if r.tag.is_none() && r.digest.is_none() => Ok(r.repository_url()),
                Ok(_) => Err(format!(
                    "{s:?}: an oci:// source names a repository, without tag or digest"
                )),
                Err(why) => Err(crate::reference::describe_error(s, &why)),
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
