//! Cross-process locks: one lock file per asset under `STATE/locks/`, held with `flock`.
//!
//! A lock makes hashing and placing of one asset single-flight across processes. The lock
//! file's name is derived from the asset path, so any path is safe as a file name. Warm
//! prepares take no lock at all, so they are never blocked behind a download.

use crate::error::{Error, Result};
use crate::state::{LockKey, StateDir};
use rustix::fs::{FlockOperation, flock};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

/// The file-name-safe key of an asset path (the state dir names every file; this re-export is
/// for the workspace's tests).
#[cfg(feature = "__internals")]
pub use crate::state::file_key;

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

impl FileLock {
    fn open(state: &StateDir, key: LockKey<'_>) -> Result<(File, PathBuf)> {
        state_subdir(&state.locks())?;
        let path = state.lock(key);
        let file = crate::fsutil::open_regular(
            OpenOptions::new().create(true).truncate(false).write(true),
            &path,
        )
        .map_err(|e| Error::io(&path, "open lock file", e))?;
        Ok((file, path))
    }

    /// Blocks until the lock for `key` is held (the store itself waits with
    /// [`FileLock::exclusive_until`], which a cancel interrupts).
    pub(crate) fn exclusive(state: &StateDir, key: LockKey<'_>) -> Result<FileLock> {
        let (file, path) = Self::open(state, key)?;
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
    pub(crate) fn exclusive_until(
        state: &StateDir,
        key: LockKey<'_>,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<FileLock>> {
        let (file, path) = Self::open(state, key)?;
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
    pub(crate) fn try_exclusive(state: &StateDir, key: LockKey<'_>) -> Result<Option<FileLock>> {
        let (file, path) = Self::open(state, key)?;
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
        let dir = StateDir::new(dir.path());
        let a = FileLock::exclusive(&dir, LockKey::Asset("kernel/vmlinux")).unwrap();
        assert!(
            FileLock::try_exclusive(&dir, LockKey::Asset("kernel/vmlinux"))
                .unwrap()
                .is_none()
        );
        assert!(
            FileLock::try_exclusive(&dir, LockKey::Asset("other"))
                .unwrap()
                .is_some()
        );
        drop(a);
        assert!(
            FileLock::try_exclusive(&dir, LockKey::Asset("kernel/vmlinux"))
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn regression_a_lock_wait_ends_when_told_to_stop() {
        let dir = tempfile::tempdir().unwrap();
        let dir = StateDir::new(dir.path());
        let _held = FileLock::exclusive(&dir, LockKey::Asset("kernel")).unwrap();
        let token = crate::CancelToken::new();
        let t = token.clone();
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(150));
            t.cancel();
        });
        let started = std::time::Instant::now();
        let got = FileLock::exclusive_until(&dir, LockKey::Asset("kernel"), &|| token.is_cancelled());
        stopper.join().unwrap();
        assert!(got.unwrap().is_none(), "the wait gave up");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
