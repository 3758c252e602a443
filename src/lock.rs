//! Cross-process locks: one lock file per asset under `STATE/locks/`, held with `flock`.
//!
//! A lock makes hashing and placing of one asset single-flight across processes. The lock
//! file's name is derived from the asset path, so any path is safe as a file name. Warm
//! prepares take no lock at all, so they are never blocked behind a download.

use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use rustix::fs::{FlockOperation, flock};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

/// The file-name-safe key of an asset path (first 128 bits of its SHA-256, in hex): names its
/// lock file, and prefixes its partial downloads in `STATE/tmp`.
pub fn file_key(path: &str) -> String {
    Sha256Digest::of(path.as_bytes()).to_hex()[..32].to_string()
}

/// A held lock; released on drop (closing the descriptor releases the flock).
#[derive(Debug)]
pub struct FileLock {
    _file: File,
    path: PathBuf,
}

/// Creates `dir`, a directory of the state dir (`locks/`, `tmp/`), when it is missing, and
/// refuses it when it is a symlink or not a directory: lock files and partial downloads are
/// never created, nor anything removed, through a link out of the state dir (the default state
/// dir lies in ROOT, where a guest may plant one).
pub(crate) fn state_subdir(dir: &Path) -> Result<()> {
    let refuse = |why: &str| Error::io(dir, "use state dir", std::io::Error::other(why.to_string()));
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(refuse("a symlink; refusing to follow it out of the state dir"));
        }
        Ok(m) if !m.is_dir() => return Err(refuse("not a directory")),
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(dir, "inspect", e)),
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create", e))?;
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        _ => Err(refuse("replaced while it was created")),
    }
}

/// A lock of the store itself, in a namespace of its own: an asset lock is named by the hash of
/// the asset path (`<32 hex>.lock`), an internal one by a plain word, so no asset path (not even
/// `ledger`) can share a lock file with one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Internal {
    /// Held while a damaged ledger is moved aside (`locks/ledger.lock`).
    Ledger,
}

impl Internal {
    fn file_name(self) -> &'static str {
        match self {
            Internal::Ledger => "ledger.lock",
        }
    }
}

impl FileLock {
    /// Blocks until the internal lock `which` is held.
    pub fn internal(dir: &Path, which: Internal) -> Result<FileLock> {
        let (file, path) = Self::open_named(dir, which.file_name())?;
        loop {
            match flock(&file, FlockOperation::LockExclusive) {
                Ok(()) => return Ok(FileLock { _file: file, path }),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(Error::io(&path, "lock", e.into())),
            }
        }
    }

    fn open(dir: &Path, key: &str) -> Result<(File, PathBuf)> {
        Self::open_named(dir, &format!("{}.lock", file_key(key)))
    }

    fn open_named(dir: &Path, name: &str) -> Result<(File, PathBuf)> {
        state_subdir(dir)?;
        let path = dir.join(name);
        let file = crate::fsutil::open_regular(
            OpenOptions::new().create(true).truncate(false).write(true),
            &path,
        )
        .map_err(|e| Error::io(&path, "open lock file", e))?;
        Ok((file, path))
    }

    /// Blocks until the lock for `key` is held (the store itself waits with
    /// [`FileLock::exclusive_until`], which a cancel interrupts).
    #[cfg_attr(not(feature = "__internals"), allow(dead_code))]
    pub fn exclusive(dir: &Path, key: &str) -> Result<FileLock> {
        let (file, path) = Self::open(dir, key)?;
        loop {
            match flock(&file, FlockOperation::LockExclusive) {
                Ok(()) => return Ok(FileLock { _file: file, path }),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(Error::io(&path, "lock", e.into())),
            }
        }
    }

    /// Waits until the lock for `key` is held, or `stop()` says to give up (`None`): a wait
    /// on another process's lock stays interruptible (SIGINT/SIGTERM in the CLI, a host's
    /// [`crate::CancelToken`]). `flock` has no timeout, so the lock is polled, every 10 ms at
    /// first and at most every 100 ms.
    pub fn exclusive_until(
        dir: &Path,
        key: &str,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<FileLock>> {
        let (file, path) = Self::open(dir, key)?;
        let mut pause = std::time::Duration::from_millis(10);
        loop {
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(Some(FileLock { _file: file, path })),
                Err(rustix::io::Errno::WOULDBLOCK | rustix::io::Errno::INTR) => {}
                Err(e) => return Err(Error::io(&path, "lock", e.into())),
            }
            if stop() {
                return Ok(None);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(std::time::Duration::from_millis(100));
        }
    }

    /// Takes the lock for `key` if it is free; `None` when another holder has it.
    pub fn try_exclusive(dir: &Path, key: &str) -> Result<Option<FileLock>> {
        let (file, path) = Self::open(dir, key)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(FileLock { _file: file, path })),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(Error::io(&path, "lock", e.into())),
        }
    }

    /// The lock file.
    #[cfg_attr(not(feature = "__internals"), allow(dead_code))]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_the_first_drops() {
        let dir = tempfile::tempdir().unwrap();
        let a = FileLock::exclusive(dir.path(), "kernel/vmlinux").unwrap();
        assert!(
            FileLock::try_exclusive(dir.path(), "kernel/vmlinux")
                .unwrap()
                .is_none()
        );
        assert!(
            FileLock::try_exclusive(dir.path(), "other")
                .unwrap()
                .is_some()
        );
        drop(a);
        assert!(
            FileLock::try_exclusive(dir.path(), "kernel/vmlinux")
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn regression_a_lock_wait_ends_when_told_to_stop() {
        let dir = tempfile::tempdir().unwrap();
        let _held = FileLock::exclusive(dir.path(), "kernel").unwrap();
        let token = crate::CancelToken::new();
        let t = token.clone();
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(150));
            t.cancel();
        });
        let started = std::time::Instant::now();
        let got = FileLock::exclusive_until(dir.path(), "kernel", &|| token.is_cancelled());
        stopper.join().unwrap();
        assert!(got.unwrap().is_none(), "the wait gave up");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
