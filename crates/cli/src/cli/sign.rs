//! `bootvault sign`: a minisign signature of a manifest file (MANIFEST.minisig).

use super::{CmdResult, Failure};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct SignArgs {
    /// The manifest to sign (signed byte for byte, as published).
    #[arg(value_name = "MANIFEST")]
    pub manifest: PathBuf,
    /// The minisign secret key (minisign.key). An encrypted key's password is read from the
    /// environment variable BOOTVAULT_KEY_PASSWORD.
    #[arg(long, value_name = "FILE", env = "BOOTVAULT_SIGNING_KEY")]
    pub key: PathBuf,
    /// Where to write the signature; default MANIFEST.minisig.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

pub fn run(a: SignArgs) -> CmdResult {
    let bytes = bootvault::read_local(&a.manifest, bootvault::oci::MAX_DOCUMENT)
        .map_err(|e| Failure::usage(format!("{}: {e}", a.manifest.display())))?;
    let key = bootvault::read_local(&a.key, bootvault::sign::MAX_KEY_FILE)
        .and_then(|b| {
            String::from_utf8(b)
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not text"))
        })
        .map_err(|e| Failure::usage(format!("{}: {e}", a.key.display())))?;
    let password = std::env::var("BOOTVAULT_KEY_PASSWORD").ok();
    let origin = a.manifest.display().to_string();
    let sig = bootvault::sign::sign(&bytes, &key, password, &origin)
        .map_err(|e| Failure::usage(e.to_string()))?;
    let out = a.output.unwrap_or_else(|| {
        let mut s = a.manifest.clone().into_os_string();
        s.push(".minisig");
        PathBuf::from(s)
    });
    std::fs::write(&out, sig)?;
    if let Some(id) = bootvault::sign::signature_key_id(&std::fs::read_to_string(&out)?) {
        eprintln!(
            "bootvault: signed {origin} with key {id}: {}",
            out.display()
        );
    }
    Ok(0)
}
