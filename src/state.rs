//! The state dir and every name in it. [`StateDir`] alone builds and parses the paths under
//! it (the ledger, lock files, partial downloads and their checkpoints, copies, patches, the
//! chunk-index cache, the ROOT marker, the rollback marks); no other module joins a name onto
//! the state dir.
//!
//! ```text
//! STATE/
//!   ledger.redb                 the ledger (redb)
//!   ledger.redb.corrupt-<ns>    a damaged ledger, moved aside
//!   root                        the canonical ROOT this state dir belongs to
//!   accepted-manifests.json     highest signed manifest version accepted per key (rollback)
//!   accepted-manifests.lock
//!   locks/<key>.lock            one per asset path (key: 128 bits of SHA-256 of the path)
//!   locks/ledger.lock           internal: held while a damaged ledger is moved aside
//!   tmp/<key>.<pid>.part        a partial download, resumable
//!   tmp/<key>.<pid>.part.meta   its hash checkpoint
//!   tmp/<key>.<pid>.copy        a copy being made (platforms without anonymous files)
//!   tmp/<key>.<pid>.patch       a patched file being assembled
//!   tmp/<key>.<pid>.patch-seed  a killed patch kept as a seed
//!   chunks/ref-<sha256>.cidx    manifests' chunk indexes, by the digest of the index file
//!   chunks/<sha256>-<min>-<avg>-<max>.cidx   seeds' chunk indexes, by the seed's digest
//! ```

use crate::digest::Sha256Digest;
use std::path::{Path, PathBuf};

/// The name of the file naming the ROOT a state dir belongs to.
const ROOT_MARKER: &str = "root";
const LEDGER: &str = "ledger.redb";
const LOCKS: &str = "locks";
const CHUNKS: &str = "chunks";
/// The rollback marks (public as `rollback::FILE_NAME`).
pub(crate) const ROLLBACK: &str = "accepted-manifests.json";
const ROLLBACK_LOCK: &str = "accepted-manifests.lock";

/// The file-name-safe key of an asset path (first 128 bits of its SHA-256, in hex): names its
/// lock file and prefixes its temporary files in `STATE/tmp`.
pub fn file_key(path: &str) -> String {
    Sha256Digest::of(path.as_bytes()).to_hex()[..32].to_string()
}

/// What a lock protects. An asset lock is named by the hash of the asset path (`<32 hex>.lock`),
/// an internal one by a plain word, so no asset path (not even `ledger`) can share a lock file
/// with one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LockKey<'a> {
    /// Hashing and placing one asset path.
    Asset(&'a str),
    /// Moving a damaged ledger aside.
    Ledger,
}

/// The kind of a temporary file under `STATE/tmp` (its suffix).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TmpKind {
    /// `.part`: a partial download.
    Part,
    /// `.part.meta`: a partial's hash checkpoint.
    PartMeta,
    /// `.copy`: a copy being made.
    Copy,
    /// `.patch`: a patched file being assembled.
    Patch,
    /// `.patch-seed`: a killed patch, kept as a seed.
    PatchSeed,
}

impl TmpKind {
    const ALL: [TmpKind; 5] = [
        TmpKind::PartMeta,
        TmpKind::Part,
        TmpKind::Copy,
        TmpKind::PatchSeed,
        TmpKind::Patch,
    ];

    fn suffix(self) -> &'static str {
        match self {
            TmpKind::Part => "part",
            TmpKind::PartMeta => "part.meta",
            TmpKind::Copy => "copy",
            TmpKind::Patch => "patch",
            TmpKind::PatchSeed => "patch-seed",
        }
    }
}

/// A temporary file's name, parsed: `<key>.<pid>.<suffix>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TmpName<'a> {
    /// The asset path's [`file_key`].
    pub(crate) key: &'a str,
    /// The process that made it (as written; it may not parse as a number).
    pub(crate) pid: &'a str,
    pub(crate) kind: TmpKind,
}

/// A store's state dir (by default `ROOT/.bootvault`).
#[derive(Clone, Debug)]
pub(crate) struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// The name of the directory of temporary files (opened relative to the state dir by gc).
    pub(crate) const TMP: &'static str = "tmp";

    pub(crate) fn new(path: impl Into<PathBuf>) -> StateDir {
        StateDir { path: path.into() }
    }

    /// The directory itself.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The ledger file.
    pub(crate) fn ledger(&self) -> PathBuf {
        self.path.join(LEDGER)
    }

    /// Where a damaged ledger is moved, named by the time it was found.
    pub(crate) fn corrupt_ledger(&self, at_ns: i64) -> PathBuf {
        self.path.join(format!("{LEDGER}.corrupt-{at_ns}"))
    }

    /// The file naming the ROOT this state dir belongs to.
    pub(crate) fn root_marker(&self) -> PathBuf {
        self.path.join(ROOT_MARKER)
    }

    /// This process's temporary name for a new ROOT marker.
    pub(crate) fn root_marker_tmp(&self) -> PathBuf {
        self.path
            .join(format!("{ROOT_MARKER}.{}.tmp", std::process::id()))
    }

    /// The rollback marks and the lock that serializes their updates.
    pub(crate) fn rollback(&self) -> PathBuf {
        self.path.join(ROLLBACK)
    }

    /// This process's temporary name for new rollback marks.
    pub(crate) fn rollback_tmp(&self) -> PathBuf {
        self.path
            .join(format!("{ROLLBACK}.{}.tmp", std::process::id()))
    }

    /// The lock held while the rollback marks are updated.
    pub(crate) fn rollback_lock(&self) -> PathBuf {
        self.path.join(ROLLBACK_LOCK)
    }

    /// The directory of lock files.
    pub(crate) fn locks(&self) -> PathBuf {
        self.path.join(LOCKS)
    }

    /// The lock file for `key`.
    pub(crate) fn lock(&self, key: LockKey<'_>) -> PathBuf {
        let name = match key {
            LockKey::Asset(path) => format!("{}.lock", file_key(path)),
            LockKey::Ledger => "ledger.lock".to_string(),
        };
        self.locks().join(name)
    }

    /// The directory of temporary files (partials, copies, patches).
    pub(crate) fn tmp(&self) -> PathBuf {
        self.path.join(Self::TMP)
    }

    /// This process's temporary file of `kind` for the asset path whose key is `key`.
    pub(crate) fn tmp_file(&self, key: &str, kind: TmpKind) -> PathBuf {
        self.tmp()
            .join(format!("{key}.{}.{}", std::process::id(), kind.suffix()))
    }

    /// The checkpoint beside a partial download.
    pub(crate) fn checkpoint_of(partial: &Path) -> PathBuf {
        let mut s = partial.as_os_str().to_owned();
        s.push(".meta");
        PathBuf::from(s)
    }

    /// The directory of remembered chunk indexes.
    pub(crate) fn chunks(&self) -> PathBuf {
        self.path.join(CHUNKS)
    }

    /// A manifest's chunk index, remembered by the digest of the index file.
    pub(crate) fn chunk_index(&self, index_sha256: &Sha256Digest) -> PathBuf {
        self.chunks().join(format!("ref-{index_sha256}.cidx"))
    }

    /// A seed's chunk index, remembered by the seed's digest and the chunking parameters.
    pub(crate) fn seed_index(
        &self,
        file_sha256: &Sha256Digest,
        [min, avg, max]: [u32; 3],
    ) -> PathBuf {
        self.chunks()
            .join(format!("{file_sha256}-{min}-{avg}-{max}.cidx"))
    }
}

/// Parses a name found in `STATE/tmp`; `None` for anything this store does not make.
pub(crate) fn parse_tmp(name: &str) -> Option<TmpName<'_>> {
    let (key, rest) = name.split_once('.')?;
    if key.len() != 32 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let (pid, suffix) = rest.split_once('.')?;
    let kind = TmpKind::ALL.into_iter().find(|k| k.suffix() == suffix)?;
    Some(TmpName { key, pid, kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tmp_name_made_parses_back() {
        let s = StateDir::new("/s");
        let key = file_key("boot/kernel");
        for kind in TmpKind::ALL {
            let p = s.tmp_file(&key, kind);
            let name = p.file_name().unwrap().to_str().unwrap();
            let parsed = parse_tmp(name).unwrap();
            assert_eq!(parsed.key, key);
            assert_eq!(parsed.pid, std::process::id().to_string());
            assert_eq!(parsed.kind, kind, "{name}");
        }
        let part = s.tmp_file(&key, TmpKind::Part);
        let meta = StateDir::checkpoint_of(&part);
        let name = meta.file_name().unwrap().to_str().unwrap();
        assert_eq!(parse_tmp(name).unwrap().kind, TmpKind::PartMeta);
    }

    #[test]
    fn foreign_names_in_tmp_are_not_ours() {
        for name in [
            "x.1.part",
            "notes.txt",
            "0123456789abcdef0123456789abcdef.1.exe",
            "0123456789abcdef0123456789abcdef",
            "0123456789abcdef0123456789abcdeg.1.part",
        ] {
            assert_eq!(parse_tmp(name), None, "{name}");
        }
    }

    #[test]
    fn no_asset_path_shares_the_ledger_lock() {
        let s = StateDir::new("/s");
        for path in ["ledger", "ledger.lock", "locks/ledger", ""] {
            assert_ne!(s.lock(LockKey::Asset(path)), s.lock(LockKey::Ledger));
        }
    }
}
