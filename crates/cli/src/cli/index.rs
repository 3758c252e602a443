//! `bootvault index --manifest IN --dir SRC --out OUT`: writes a chunk index beside each asset
//! in SRC (`SRC/<asset path>.cidx`) and OUT = IN with each asset's `index` reference, so a
//! CDN that serves SRC serves the indexes too and a prepare can patch upgrades.

use super::{CmdResult, Failure, out_json};
use anyhow::Context;
use clap::Args;
use serde_json::Value;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct IndexArgs {
    /// The native manifest to index (read as text: its other fields are kept as they are).
    #[arg(long, value_name = "IN")]
    pub manifest: PathBuf,
    /// The directory holding the assets at their manifest paths (the CDN's layout).
    #[arg(long, value_name = "SRC")]
    pub dir: PathBuf,
    /// Where to write the manifest with the index references.
    #[arg(long, value_name = "OUT")]
    pub out: PathBuf,
}

/// The suffix of an index beside its asset.
const SUFFIX: &str = ".cidx";

/// `url` with the suffix appended to its path (before a query string or fragment); an
/// `oci://HOST/REPO` source stays as it is (the index is a blob of the same repository, named
/// by its digest: `bootvault publish` pushes it).
fn index_url(url: &str) -> String {
    if url.starts_with("oci://") {
        return url.to_string();
    }
    match url.find(['?', '#']) {
        Some(i) => format!("{}{SUFFIX}{}", &url[..i], &url[i..]),
        None => format!("{url}{SUFFIX}"),
    }
}

pub fn run(a: IndexArgs) -> CmdResult {
    let text = bootvault::read_manifest_text(&a.manifest)
        .map_err(|e| Failure::usage(format!("{}: {e}", a.manifest.display())))?;
    if serde_json::from_str::<Value>(&text)
        .is_ok_and(|doc| bootvault_arcbox::native::is_arcbox_format(&doc))
    {
        return Err(Failure::usage(
            "bootvault index: only native manifests can name chunk indexes",
        ));
    }
    // Validated first, so every path below is a safe relative path.
    let manifest = bootvault::Manifest::parse(
        &text,
        &a.manifest.display().to_string(),
        &Default::default(),
    )?;
    let mut doc: Value = serde_json::from_str(&text)
        .map_err(|e| Failure::usage(format!("{}: {e}", a.manifest.display())))?;
    let list = doc
        .get_mut("assets")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| Failure::usage("manifest: field \"assets\": required"))?;
    let mut rows = Vec::new();
    for (raw, asset) in list.iter_mut().zip(&manifest.assets) {
        let file = a.dir.join(&asset.path);
        let mut out = file.clone().into_os_string();
        out.push(SUFFIX);
        let out = PathBuf::from(out);
        let (bytes, sha) = bootvault::write_index(&file, &out)
            .with_context(|| format!("asset {}: {}", asset.name, file.display()))?;
        if sha != asset.sha256 {
            let _ = std::fs::remove_file(&out);
            return Err(anyhow::anyhow!(
                "asset {}: {} hashes to {sha}, the manifest says {}",
                asset.name,
                file.display(),
                asset.sha256
            )
            .into());
        }
        // The manifest's own spelling of the URLs (relative ones stay relative to base_url);
        // an asset without URLs gets its path, relative to base_url.
        let urls: Vec<String> = match raw.get("urls").and_then(Value::as_array) {
            Some(u) if !u.is_empty() => u.iter().filter_map(Value::as_str).map(index_url).collect(),
            _ => vec![index_url(&asset.path)],
        };
        let index_sha = bootvault::Sha256Digest::of(&bytes);
        if let Some(obj) = raw.as_object_mut() {
            obj.insert(
                "index".into(),
                serde_json::json!({"urls": urls, "sha256": index_sha.to_hex()}),
            );
        }
        rows.push(serde_json::json!({
            "name": asset.name,
            "index": out,
            "index_bytes": bytes.len(),
            "sha256": index_sha.to_hex(),
        }));
    }
    let body = serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n";
    // What is written must read back (an asset without URLs needs a base_url, say).
    bootvault::Manifest::parse(&body, &a.out.display().to_string(), &Default::default())?;
    std::fs::write(&a.out, body).with_context(|| a.out.display().to_string())?;
    super::finish_output(out_json(&serde_json::json!({ "indexed": rows })), 0)
}

#[cfg(test)]
mod tests {
    use super::index_url;

    #[test]
    fn index_urls_keep_queries() {
        assert_eq!(index_url("v2/rootfs.img"), "v2/rootfs.img.cidx");
        assert_eq!(
            index_url("https://cdn/x.img?sig=1"),
            "https://cdn/x.img.cidx?sig=1"
        );
        assert_eq!(index_url("oci://reg/boot"), "oci://reg/boot");
    }
}
