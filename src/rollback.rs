//! Rollback protection for signed manifests, after TUF's rule: a client never accepts trusted
//! metadata older than what it already accepted.
//!
//! For each source of signed manifests (a registry repository `oci://HOST/REPO`, whatever tag
//! names it, or a manifest URL) the store remembers the newest signed manifest it accepted: its
//! version and the signature time from the minisign trusted comment (`timestamp:<unix secs>`,
//! which `bootvault sign` and the minisign CLI write and the signature covers). A signed
//! manifest from that source whose signature is older, or carries no time while one is
//! remembered, is refused unless the caller allows a downgrade; an allowed downgrade becomes the
//! new mark. Manifests pinned by digest are an explicit operator choice and are not checked.
//!
//! The marks live in `STATE/accepted-manifests.json` rather than in the ledger: a new table
//! would need a schema step while other ledger steps are in flight, and the warm path stays
//! write-free (the file is written only when the mark moves). It is read as a bounded regular
//! file (no symlink followed), and replaced atomically (temp file, fsync, rename) under a
//! `flock` on `STATE/accepted-manifests.lock`. Whoever can write the state dir can reset it —
//! as they can forge the ledger (SECURITY.md).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

/// The file of marks in the state dir.
pub const FILE_NAME: &str = crate::state::ROLLBACK;
/// Largest marks file read.
const MAX_FILE: u64 = 4 * 1024 * 1024;

/// A signed manifest offered for acceptance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offered {
    /// The manifest's version.
    pub version: String,
    /// Signature time (unix seconds) from the trusted comment, when it has one.
    pub signed_at: Option<u64>,
    /// The trusted key that vouched.
    pub signed_by: String,
}

pub use crate::error::RollbackError;

/// The source a signed manifest's mark is kept for: the repository of a registry reference
/// (tag stripped: a retag cannot reset it), the URL of a manifest URL (without user info);
/// `None` for a reference pinned by digest or a local file.
pub fn key_for(spec: &str) -> Option<String> {
    if spec.starts_with("oci://") {
        let r = crate::reference::parse(spec).ok()?;
        return r.digest.is_none().then(|| r.repository_url());
    }
    if spec.starts_with("https://") || spec.starts_with("http://") {
        return Some(crate::redact::url(spec));
    }
    None
}

/// The signature time in a minisign signature's trusted comment (`timestamp:<secs>`).
pub fn signed_at(signature: &str) -> Option<u64> {
    let comment = signature
        .lines()
        .find_map(|l| l.strip_prefix("trusted comment:"))?;
    comment
        .split(['\t', ' '])
        .find_map(|f| f.trim().strip_prefix("timestamp:"))
        .and_then(|t| t.trim().parse().ok())
}

#[derive(Default, Serialize, Deserialize)]
struct Marks {
    #[serde(default)]
    accepted: BTreeMap<String, Mark>,
}

#[derive(Clone, Serialize, Deserialize)]
struct Mark {
    version: String,
    signed_at: Option<u64>,
    signed_by: String,
    accepted_at_ns: i64,
}

fn when(t: Option<u64>) -> String {
    t.map(|s| format!("at unix time {s}"))
        .unwrap_or_else(|| "without a timestamp".into())
}

fn io_err(path: &Path, why: impl std::fmt::Display) -> RollbackError {
    RollbackError::Io {
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

fn read_marks(state: &Path) -> Result<Marks, RollbackError> {
    let path = crate::state::StateDir::new(state).rollback();
    let file = match crate::fsutil::open_regular(std::fs::OpenOptions::new().read(true), &path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Marks::default()),
        Err(e) => return Err(io_err(&path, e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_err(&path, e))?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(io_err(&path, format!("larger than {MAX_FILE} bytes")));
    }
    serde_json::from_slice(&bytes).map_err(|e| io_err(&path, format!("not a marks file: {e}")))
}

/// Refuses `offered` from `key` when it is older than the mark (unless `allow_downgrade`).
/// Reads only.
pub fn check(
    state: &Path,
    origin: &str,
    key: &str,
    offered: &Offered,
    allow_downgrade: bool,
) -> crate::error::Result<()> {
    Ok(check_marks(
        &read_marks(state)?,
        origin,
        key,
        offered,
        allow_downgrade,
    )?)
}

/// [`check`], then makes `offered` the mark of `key` when it moves the mark (newer, or an
/// allowed downgrade). Writes only then; a signature without a timestamp sets no mark.
pub fn check_and_remember(
    state: &Path,
    origin: &str,
    key: &str,
    offered: &Offered,
    allow_downgrade: bool,
) -> crate::error::Result<()> {
    check(state, origin, key, offered, allow_downgrade)?;
    let Some(at) = offered.signed_at else {
        return Ok(());
    };
    let unchanged = |m: &Marks| {
        m.accepted
            .get(key)
            .is_some_and(|x| x.signed_at == Some(at) && x.version == offered.version)
    };
    if unchanged(&read_marks(state)?) {
        return Ok(());
    }
    std::fs::create_dir_all(state).map_err(|e| io_err(state, e))?;
    let lock_path = crate::state::StateDir::new(state).rollback_lock();
    let lock = crate::fsutil::open_regular(
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true),
        &lock_path,
    )
    .map_err(|e| io_err(&lock_path, e))?;
    loop {
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive) {
            Ok(()) => break,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(io_err(&lock_path, std::io::Error::from(e)).into()),
        }
    }
    // Under the lock: another process may have moved the mark meanwhile.
    let mut marks = read_marks(state)?;
    check_marks(&marks, origin, key, offered, allow_downgrade)?;
    if unchanged(&marks) {
        return Ok(());
    }
    marks.accepted.insert(
        key.to_string(),
        Mark {
            version: offered.version.clone(),
            signed_at: Some(at),
            signed_by: offered.signed_by.clone(),
            accepted_at_ns: crate::stamp::wall_now_ns(),
        },
    );
    let path = crate::state::StateDir::new(state).rollback();
    let tmp = crate::state::StateDir::new(state).rollback_tmp();
    let write = || -> std::io::Result<()> {
        let mut f = crate::fsutil::open_regular(
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true),
            &tmp,
        )?;
        f.write_all(&serde_json::to_vec_pretty(&marks).unwrap_or_default())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(state)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(&path, e)
    })?;
    drop(lock);
    Ok(())
}

fn check_marks(
    marks: &Marks,
    origin: &str,
    key: &str,
    offered: &Offered,
    allow_downgrade: bool,
) -> Result<(), RollbackError> {
    let Some(mark) = marks.accepted.get(key) else {
        return Ok(());
    };
    let older = match (offered.signed_at, mark.signed_at) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(o), Some(m)) => o < m,
    };
    if older && !allow_downgrade {
        return Err(RollbackError::Downgrade {
            origin: crate::redact::url(origin),
            key: key.to_string(),
            offered: offered.version.clone(),
            accepted: mark.version.clone(),
            times: format!(
                "signed {}, against {}",
                when(offered.signed_at),
                when(mark.signed_at)
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_comment_times_and_keys() {
        let sig = "untrusted comment: x\nRUQ...\ntrusted comment: timestamp:1700000000\tfile:m.json\thashed\nabc\n";
        assert_eq!(signed_at(sig), Some(1_700_000_000));
        assert_eq!(
            signed_at("untrusted comment: x\nRUQ\ntrusted comment: hi\nabc"),
            None
        );
        assert_eq!(
            key_for("oci://r.example/boot/set:v2").as_deref(),
            Some("oci://r.example/boot/set")
        );
        let pin = format!("oci://r.example/boot/set@sha256:{}", "ab".repeat(32));
        assert_eq!(key_for(&pin), None);
        assert_eq!(
            key_for("https://u:p@cdn.example/m.json").as_deref(),
            Some("https://cdn.example/m.json")
        );
        assert_eq!(key_for("/etc/m.json"), None);
    }
}
