//! Signed manifests: minisign signatures over the manifest bytes, as the `minisign` CLI makes
//! them (`minisign -S -m manifest.json` writes `manifest.json.minisig`).
//!
//! Verification uses `minisign-verify` (small, no dependencies); signing uses the `minisign`
//! crate, so no host needs the CLI. Only pre-hashed signatures (the CLI's default since 0.8)
//! are accepted. A key is named by its key ID, upper-case hex as the CLI prints it
//! (a little-endian u64, no leading zeros).

use base64::Engine as _;
use std::path::Path;

pub use crate::error::SignError;

/// Largest key file read (a minisign key is about 100 bytes of text).
pub const MAX_KEY_FILE: u64 = 64 * 1024;

/// A public key that may vouch for manifests.
#[derive(Clone, Debug)]
pub struct TrustedKey {
    /// The key ID as the minisign CLI prints it.
    pub id: String,
    key: minisign_verify::PublicKey,
}

/// Key ID (upper-case hex, no leading zeros) from the base64 line of a key or signature: bytes 2..10,
/// little-endian, as the minisign CLI prints it.
fn key_id(b64_line: &str) -> Option<String> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64_line.trim())
        .ok()?;
    let id: [u8; 8] = raw.get(2..10)?.try_into().ok()?;
    Some(format!("{:X}", u64::from_le_bytes(id)))
}

impl TrustedKey {
    /// Reads a `minisign.pub` file (comment line, then the base64 key), or a file holding only
    /// the base64 key.
    pub fn from_file(path: &Path) -> crate::error::Result<TrustedKey> {
        let text = crate::manifest::read_text(path, MAX_KEY_FILE).map_err(|e| SignError::Key {
            path: path.into(),
            why: e.to_string(),
        })?;
        Ok(TrustedKey::parse_text(&text).map_err(|e| match e {
            SignError::KeyText { why } => SignError::Key {
                path: path.into(),
                why,
            },
            other => other,
        })?)
    }

    /// Parses the text of a public key (with or without its comment line).
    pub fn parse(text: &str) -> crate::error::Result<TrustedKey> {
        Ok(TrustedKey::parse_text(text)?)
    }

    fn parse_text(text: &str) -> Result<TrustedKey, SignError> {
        let bad = |why: String| SignError::KeyText { why };
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
            .ok_or_else(|| bad("no key in the file".into()))?;
        let key = minisign_verify::PublicKey::from_base64(line)
            .map_err(|e| bad(format!("not a minisign public key: {e}")))?;
        let id = key_id(line).ok_or_else(|| bad("not a minisign public key".into()))?;
        Ok(TrustedKey { id, key })
    }
}

/// Whether `signature` is a well-formed minisign signature (by any key; not checked).
pub fn is_signature(signature: &str) -> bool {
    minisign_verify::Signature::decode(signature).is_ok()
}

/// The key ID a signature claims (before it is checked).
pub fn signature_key_id(signature: &str) -> Option<String> {
    key_id(signature.lines().nth(1)?)
}

/// Checks `signature` over `bytes` against the trusted keys; returns the ID of the key that
/// vouched. `origin` names the manifest in errors.
pub fn verify(
    bytes: &[u8],
    signature: &str,
    keys: &[TrustedKey],
    origin: &str,
) -> crate::error::Result<String> {
    let invalid = |why: String| SignError::Invalid {
        origin: origin.into(),
        why,
    };
    let sig = minisign_verify::Signature::decode(signature)
        .map_err(|e| invalid(format!("malformed signature: {e}")))?;
    let claimed = signature_key_id(signature).unwrap_or_else(|| "?".into());
    let key = keys.iter().find(|k| k.id == claimed).ok_or_else(|| {
        let trusted: Vec<&str> = keys.iter().map(|k| k.id.as_str()).collect();
        invalid(format!(
            "signed by key {claimed}, which is not trusted (trusted: {})",
            trusted.join(", ")
        ))
    })?;
    key.key
        .verify(bytes, &sig, false)
        .map_err(|e| invalid(format!("key {}: {e}", key.id)))?;
    Ok(key.id.clone())
}

/// Signs `bytes` with a minisign secret key (the text of `minisign.key`); an encrypted key
/// needs its password. Returns the signature file text (`.minisig`). Only with the `sign`
/// feature (the CLI's `bootvault sign`): a host that only verifies links no signing code.
#[cfg(feature = "sign")]
pub fn sign(
    bytes: &[u8],
    secret_key: &str,
    password: Option<String>,
    origin: &str,
) -> crate::error::Result<String> {
    let err = |why: String| SignError::Sign {
        origin: origin.into(),
        why,
    };
    let sk = match password {
        Some(p) => minisign::SecretKeyBox::from_string(secret_key)
            .and_then(|b| b.into_secret_key(Some(p)))
            .map_err(|e| err(format!("cannot open the secret key: {e}")))?,
        None => {
            // Decoded directly: the minisign CLI (0.11) writes the checksum of a key made with
            // `-W` (no password) as zeros, which the crate's unencrypted path rejects.
            let line = secret_key
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
                .ok_or_else(|| err("not a minisign secret key".into()))?;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(line)
                .map_err(|_| err("not a minisign secret key".into()))?;
            let sk = minisign::SecretKey::from_bytes(&raw)
                .map_err(|e| err(format!("not a minisign secret key: {e}")))?;
            if sk.is_encrypted() {
                return Err(crate::error::Error::from(err(
                    "the secret key is encrypted: give its password (BOOTVAULT_KEY_PASSWORD)"
                        .into(),
                )));
            }
            sk
        }
    };
    let name = Path::new(origin)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| origin.to_string());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let trusted = format!("timestamp:{now}\tfile:{name}\thashed");
    let sig = minisign::sign(
        None,
        &sk,
        std::io::Cursor::new(bytes),
        Some(&trusted),
        Some("signature from bootvault secret key"),
    )
    .map_err(|e| err(e.to_string()))?;
    Ok(sig.into_string())
}
