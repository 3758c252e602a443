//! `bootvault publish`: push a manifest's assets and the manifest itself to an OCI registry.

use super::{CmdResult, Failure, ManifestArgs, finish_output, out, out_json};
use bootvault::oci::{PublishBlob, Reference};
use clap::Args;
use serde_json::json;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct PublishArgs {
    /// The manifest to publish (stored as the artifact's config blob, byte for byte).
    #[arg(long, value_name = "FILE", env = "BOOTVAULT_MANIFEST")]
    pub manifest: PathBuf,
    /// Directory holding the assets at their manifest paths (a prepared store root).
    #[arg(long, value_name = "ROOT", env = "BOOTVAULT_DIR")]
    pub dir: PathBuf,
    /// The manifest's minisign signature, stored with the artifact; default MANIFEST.minisig
    /// when that file exists.
    #[arg(long, value_name = "FILE", env = "BOOTVAULT_SIGNATURE")]
    pub signature: Option<PathBuf>,
    /// Print one JSON object on stdout.
    #[arg(long, env = "BOOTVAULT_JSON", value_parser = clap::builder::BoolishValueParser::new())]
    pub json: bool,
    /// Where to publish: oci://HOST[:PORT]/REPO:TAG.
    #[arg(value_name = "TARGET")]
    pub target: String,
    /// A minisign public key the attached signature must verify against (repeatable).
    /// Default: the config file's trusted_keys. A signature that does not verify (stale,
    /// garbage, another key) is refused: every host would refuse it.
    #[arg(
        long = "trusted-key",
        value_name = "FILE",
        env = "BOOTVAULT_TRUSTED_KEY",
        value_delimiter = ','
    )]
    pub trusted_keys: Vec<PathBuf>,
    /// Attach the signature without verifying it (to publish a deliberately bad one).
    #[arg(long, env = "BOOTVAULT_NO_VERIFY_SIGNATURE",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub no_verify_signature: bool,
    #[command(flatten)]
    pub registry: super::remote::RegistryArgs,
    #[command(flatten)]
    pub manifest_args: ManifestArgs,
}

pub fn run(a: PublishArgs) -> CmdResult {
    let target = Reference::parse(&a.target).map_err(|e| Failure::usage(e.to_string()))?;
    if target.tag.is_none() || target.digest.is_some() {
        return Err(Failure::usage(format!(
            "{}: publish needs a tag and no digest (oci://HOST/REPO:TAG)",
            a.target
        )));
    }
    let bytes = bootvault::read_local(&a.manifest, bootvault::oci::MAX_DOCUMENT)
        .map_err(|e| Failure::usage(format!("{}: {e}", a.manifest.display())))?;
    let manifest = a.manifest_args.load(&a.manifest)?;
    let sig_path = a.signature.clone().or_else(|| {
        let mut s = a.manifest.clone().into_os_string();
        s.push(".minisig");
        let p = PathBuf::from(s);
        p.exists().then_some(p)
    });
    let signature = match &sig_path {
        Some(p) => Some(
            bootvault::read_local(p, bootvault::oci::MAX_DOCUMENT)
                .and_then(|b| {
                    String::from_utf8(b).map_err(|_| {
                        std::io::Error::new(std::io::ErrorKind::InvalidData, "not text")
                    })
                })
                .map_err(|e| Failure::usage(format!("{}: {e}", p.display())))?,
        ),
        None => None,
    };
    if let (Some(sig), Some(p)) = (&signature, &sig_path) {
        check_signature(&a, &bytes, sig, p)?;
    }
    let mut blobs: Vec<PublishBlob> = manifest
        .assets
        .iter()
        .map(|asset| PublishBlob {
            name: asset.name.clone(),
            path: asset.path.to_string(),
            file: a.dir.join(&asset.path),
            sha256: asset.sha256,
            size: asset.size,
            // An asset already served by another repository of the same registry is mounted.
            mount_from: asset
                .urls
                .iter()
                .find_map(|u| {
                    Reference::parse(u).ok().filter(|r| {
                        r.registry == target.registry && r.repository != target.repository
                    })
                })
                .map(|r| r.repository),
        })
        .collect();
    // Chunk indexes (`bootvault index` wrote them beside the assets) are blobs of the same
    // artifact, so an `oci://` index reference resolves in the asset's repository.
    for asset in &manifest.assets {
        if let Some(ix) = &asset.index {
            let file = a.dir.join(format!("{}.cidx", asset.path));
            let size = std::fs::metadata(&file)
                .map_err(|e| {
                    Failure::usage(format!(
                        "asset {}: index {}: {e}",
                        asset.name,
                        file.display()
                    ))
                })?
                .len();
            blobs.push(PublishBlob {
                name: format!("{}.cidx", asset.name),
                path: format!("{}.cidx", asset.path),
                file,
                sha256: ix.sha256,
                size: Some(size),
                mount_from: None,
            });
        }
    }
    let mut opts = bootvault::FetchOptions::default();
    opts.oci = a.registry.options()?;
    let total: u64 = blobs
        .iter()
        .map(|b| std::fs::metadata(&b.file).map(|m| m.len()).unwrap_or(0))
        .sum();
    let bar = super::ui().progress.then(|| {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix:>10} {msg:<16} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b.set_prefix("publish");
        b
    });
    // Per-asset progress folded into one bar: remember what each asset reported last.
    let done = std::sync::Mutex::new(std::collections::HashMap::<String, u64>::new());
    let progress = |name: &str, sent: u64, _len: u64| {
        if let Some(bar) = &bar {
            let mut d = done.lock().unwrap_or_else(|e| e.into_inner());
            let prev = d.insert(name.to_string(), sent).unwrap_or(0);
            bar.inc(sent.saturating_sub(prev));
            bar.set_message(name.to_string());
        }
    };
    let report = bootvault::oci::publish(
        &opts,
        &target,
        &bytes,
        &manifest.version,
        signature.as_deref(),
        &blobs,
        &progress,
    )
    .map_err(|e| Failure {
        code: super::exit_code(&e),
        message: e.to_string(),
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let pinned = format!(
        "{}@sha256:{}",
        target.repository_url(),
        report.digest.to_hex()
    );
    let printed = if a.json {
        out_json(&json!({
            "target": a.target,
            "digest": format!("sha256:{}", report.digest.to_hex()),
            "pinned": pinned,
            "uploaded": report.uploaded,
            "skipped": report.skipped,
            "mounted": report.mounted,
            "bytes_uploaded": report.bytes_uploaded,
            "signed": signature.is_some(),
        }))
    } else {
        out(&format!(
            "published {} ({} uploaded, {} already there, {} mounted, {} bytes{})\npinned: {pinned}",
            a.target,
            report.uploaded.len(),
            report.skipped.len(),
            report.mounted.len(),
            report.bytes_uploaded,
            if signature.is_some() { ", signed" } else { "" },
        ))
    };
    finish_output(printed, 0)
}

/// The signature to attach must be one a host will accept: it decodes, and it verifies over
/// these manifest bytes with a trusted key (`--trusted-key` or the config's `trusted_keys`).
/// Without a key to check it against it is refused too, unless `--no-verify-signature`.
fn check_signature(
    a: &PublishArgs,
    bytes: &[u8],
    sig: &str,
    path: &std::path::Path,
) -> Result<(), Failure> {
    let named = |why: String| {
        Failure::usage(format!(
            "signature {} for {}: {why}; not published",
            path.display(),
            a.manifest.display()
        ))
    };
    if !bootvault::sign::is_signature(sig) {
        return Err(named("not a minisign signature".into()));
    }
    if a.no_verify_signature {
        return Ok(());
    }
    let trust = super::remote::TrustArgs {
        trusted_keys: a.trusted_keys.clone(),
        allow_downgrade: false,
    };
    let keys = trust.keys()?;
    if keys.is_empty() {
        return Err(named(
            "no --trusted-key (or config trusted_keys) to verify it against; pass the public \
             key, or --no-verify-signature to attach it unchecked"
                .into(),
        ));
    }
    let origin = a.manifest.display().to_string();
    bootvault::sign::verify(bytes, sig, &keys, &origin)
        .map(|_| ())
        .map_err(|e| named(e.to_string()))
}
