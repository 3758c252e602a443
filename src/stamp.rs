//! The stat signature of a file, and the racy-clean rule.
//!
//! A stamp is what `fstat` says about a file: size, mtime, ctime, inode, device and type.
//! ctime is the tripwire: user space cannot set it, so restoring mtime after a rewrite still
//! changes the stamp. A stamp taken in the same filesystem clock tick as the file's last change
//! is *racy*: a rewrite later in that tick would leave the stamp unchanged (git's "racy clean",
//! ccache's 2 s rule). The moment is read from the filesystem itself (the ctime of a fresh
//! anonymous file on it, as git uses its index file), which avoids clock skew.

use serde::{Deserialize, Serialize};
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// What kind of file a path holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum FileKind {
    /// A regular file: the only kind that can be trusted.
    Regular,
    /// A symbolic link (never trusted, never written through).
    Symlink,
    /// A directory.
    Directory,
    /// Anything else (fifo, socket, device).
    Other,
}

/// The stat signature of one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Stamp {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Inode change time, ns since the epoch.
    pub ctime_ns: i64,
    /// Inode number.
    pub ino: u64,
    /// Device number.
    pub dev: u64,
    /// File type.
    pub kind: FileKind,
    /// Permission bits (`st_mode & 0o7777`). Not part of what a record vouches for (a chmod
    /// moves ctime anyway); compared with the manifest mode so drift is put back.
    pub perm: u32,
}

impl Stamp {
    internal_fn! {
        /// The stamp of a regular file with these fields (the workspace's tests build ledgers
        /// by hand with it).
        #[cfg_attr(not(feature = "__internals"), allow(dead_code))]
        fn regular(size: u64, mtime_ns: i64, ctime_ns: i64, ino: u64, dev: u64, perm: u32) -> Stamp {
            Stamp {
                size,
                mtime_ns,
                ctime_ns,
                ino,
                dev,
                kind: FileKind::Regular,
                perm,
            }
        }
    }

    /// The stamp of a `stat`/`fstat`/`lstat` result.
    pub fn from_metadata(m: &Metadata) -> Stamp {
        let ft = m.file_type();
        let kind = if ft.is_file() {
            FileKind::Regular
        } else if ft.is_symlink() {
            FileKind::Symlink
        } else if ft.is_dir() {
            FileKind::Directory
        } else {
            FileKind::Other
        };
        Stamp {
            size: m.size(),
            mtime_ns: m
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(m.mtime_nsec()),
            ctime_ns: m
                .ctime()
                .saturating_mul(1_000_000_000)
                .saturating_add(m.ctime_nsec()),
            ino: m.ino(),
            dev: m.dev(),
            kind,
            perm: m.mode() & 0o7777,
        }
    }

    /// `lstat` of a path; `None` when nothing is there.
    pub fn of_path(path: &Path) -> std::io::Result<Option<Stamp>> {
        match std::fs::symlink_metadata(path) {
            Ok(m) => Ok(Some(Stamp::from_metadata(&m))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `lstat` of `rel` under the directory `dir` (`fstatat` with `AT_SYMLINK_NOFOLLOW`);
    /// `None` when nothing is there or it cannot be read.
    pub fn of_path_at(dir: &impl std::os::fd::AsFd, rel: &str) -> Option<Stamp> {
        use rustix::fs::{AtFlags, FileType, statat};
        let st = statat(dir, rel, AtFlags::SYMLINK_NOFOLLOW).ok()?;
        let kind = match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => FileKind::Regular,
            FileType::Symlink => FileKind::Symlink,
            FileType::Directory => FileKind::Directory,
            _ => FileKind::Other,
        };
        Some(Stamp {
            size: st.st_size as u64,
            mtime_ns: (st.st_mtime as i64)
                .saturating_mul(1_000_000_000)
                .saturating_add(st.st_mtime_nsec as i64),
            ctime_ns: (st.st_ctime as i64)
                .saturating_mul(1_000_000_000)
                .saturating_add(st.st_ctime_nsec as i64),
            ino: st.st_ino as u64,
            dev: st.st_dev as u64,
            kind,
            perm: (st.st_mode as u32) & 0o7777,
        })
    }

    /// `fstat` of an open file.
    pub fn of_file(file: &std::fs::File) -> std::io::Result<Stamp> {
        file.metadata().map(|m| Stamp::from_metadata(&m))
    }

    /// The racy rule: a stamp is racy unless both its mtime and ctime are strictly older than
    /// `fs_now_ns`, a moment read from the same filesystem before the content was read.
    pub fn is_racy(&self, fs_now_ns: i64) -> bool {
        self.mtime_ns >= fs_now_ns || self.ctime_ns >= fs_now_ns
    }
}

/// Current time as the filesystem holding `dir` sees it: the ctime of a fresh anonymous file
/// there (`O_TMPFILE` where supported, otherwise a named temp file removed at once).
pub fn fs_now(dir: &Path) -> std::io::Result<i64> {
    let f = tempfile::tempfile_in(dir)?;
    Ok(Stamp::of_file(&f)?.ctime_ns)
}

/// Waits until the filesystem clock of `dir` has moved past `ctime_ns`, so that any later
/// change of a file with that ctime gets a different ctime. Returns the first moment seen
/// past it, or `None` if the clock did not move within `limit` (a coarse filesystem clock).
pub fn settle(dir: &Path, ctime_ns: i64, limit: Duration) -> std::io::Result<Option<i64>> {
    let start = Instant::now();
    settle_by(
        || fs_now(dir),
        || start.elapsed(),
        || std::thread::sleep(Duration::from_millis(1)),
        ctime_ns,
        limit,
    )
}

/// [`settle`] over an injected clock. The deadline is read *before* the filesystem clock, so
/// the clock is always looked at once more after the deadline passed: a thread descheduled
/// past the deadline (a loaded machine) still sees the clock that moved meanwhile, instead of
/// giving up and leaving a racy record that costs a re-hash on the next warm prepare.
fn settle_by(
    mut fs_clock: impl FnMut() -> std::io::Result<i64>,
    mut elapsed: impl FnMut() -> Duration,
    mut pause: impl FnMut(),
    ctime_ns: i64,
    limit: Duration,
) -> std::io::Result<Option<i64>> {
    loop {
        let expired = elapsed() >= limit;
        let now = fs_clock()?;
        if now > ctime_ns {
            return Ok(Some(now));
        }
        if expired {
            return Ok(None);
        }
        pause();
    }
}

/// Wall-clock time in ns since the epoch.
pub fn wall_now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(mtime: i64, ctime: i64) -> Stamp {
        Stamp {
            size: 1,
            mtime_ns: mtime,
            ctime_ns: ctime,
            ino: 1,
            dev: 1,
            kind: FileKind::Regular,
            perm: 0o444,
        }
    }

    /// The bug: `settle` read the clock, then the deadline; a thread descheduled for longer than
    /// the limit between the two gave up although the clock had long moved, so the record was
    /// racy and the next warm prepare re-hashed (seen as a flaky
    /// `multiprocess::regression_last_writer_wins_loses_no_record` under load).
    #[test]
    fn regression_a_starved_settle_looks_at_the_clock_once_more() {
        let mut clock = [100, 200].into_iter();
        // The first clock read is in the placement's tick; then the thread is starved past the
        // deadline, during which the clock moves on.
        let mut elapsed = [Duration::ZERO, Duration::from_millis(80)].into_iter();
        let got = settle_by(
            || Ok(clock.next().unwrap_or(200)),
            || elapsed.next().unwrap_or(Duration::from_millis(80)),
            || {},
            100,
            Duration::from_millis(50),
        )
        .unwrap();
        assert_eq!(got, Some(200));
    }

    #[test]
    fn a_clock_that_never_moves_gives_up_at_the_deadline() {
        let mut polls = 0;
        let mut t = Duration::ZERO;
        let got = settle_by(
            || {
                polls += 1;
                Ok(100)
            },
            || {
                t += Duration::from_millis(10);
                t
            },
            || {},
            100,
            Duration::from_millis(50),
        )
        .unwrap();
        assert_eq!(got, None);
        assert_eq!(polls, 5, "polled until the deadline, then once after it");
    }

    #[test]
    fn racy_when_either_time_is_not_strictly_older() {
        assert!(stamp(100, 50).is_racy(100));
        assert!(stamp(50, 100).is_racy(100));
        assert!(stamp(50, 150).is_racy(100));
        assert!(!stamp(99, 99).is_racy(100));
    }

    #[test]
    fn stamp_at_a_directory_equals_stamp_by_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/f"), b"abc").unwrap();
        std::os::unix::fs::symlink("f", dir.path().join("sub/l")).unwrap();
        let fd = std::fs::File::open(dir.path()).unwrap();
        for rel in ["sub/f", "sub/l", "sub"] {
            assert_eq!(
                Stamp::of_path_at(&fd, rel),
                Stamp::of_path(&dir.path().join(rel)).unwrap(),
                "{rel}"
            );
        }
        assert_eq!(Stamp::of_path_at(&fd, "missing"), None);
    }

    #[test]
    fn filesystem_clock_moves_past_a_fresh_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"x").unwrap();
        let s = Stamp::of_path(&p).unwrap().unwrap();
        assert_eq!(s.kind, FileKind::Regular);
        let after = settle(dir.path(), s.ctime_ns, Duration::from_secs(5)).unwrap();
        assert!(after.unwrap() > s.ctime_ns);
        assert!(!s.is_racy(after.unwrap()));
    }
}
