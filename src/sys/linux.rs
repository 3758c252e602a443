//! Linux: `O_PATH` descriptors, anonymous files (`O_TMPFILE`) linked into place, fs-verity.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

/// A descriptor of a directory good for `fstatat` relative to it (`O_PATH`: no read access
/// needed, nothing opened for I/O).
pub(crate) fn open_dir_for_stat(path: &Path) -> std::io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    Ok(rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// An anonymous file in the directory `dir` (invisible until linked), where the filesystem
/// supports `O_TMPFILE`.
pub(crate) fn anonymous_file(dir: &impl AsFd) -> Option<File> {
    use rustix::fs::{Mode, OFlags, openat};
    openat(
        dir,
        ".",
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .ok()
    .map(File::from)
}

/// Gives the anonymous `file` the name `name` in `dir`.
pub(crate) fn link_anonymous(file: &File, dir: &impl AsFd, name: &str) -> std::io::Result<()> {
    let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
    rustix::fs::linkat(
        rustix::fs::CWD,
        proc_path.as_str(),
        dir,
        name,
        rustix::fs::AtFlags::SYMLINK_FOLLOW,
    )?;
    Ok(())
}

/// Whether fs-verity can be used at all on this platform.
pub(crate) const VERITY: bool = true;

/// A read lease on an open, read-only file (`fcntl(F_SETLEASE, F_RDLCK)`). The kernel grants
/// it only while no descriptor of the inode is open for writing anywhere (a writable shared
/// mapping keeps its descriptor's write access, so it counts), and breaks it when one is
/// opened: that is the proof that nobody can change the bytes behind a hash without moving
/// the inode's times. Released on drop.
pub(crate) struct ReadLease<'a> {
    file: &'a File,
}

/// `fcntl`'s "which signal announces I/O readiness or a lease break" (not in `libc`; the
/// same value on every Linux architecture).
const F_SETSIG: libc::c_int = 10;

/// Takes a read lease on `file`; else why none could be taken, in words for `debug why`.
pub(crate) fn read_lease(file: &File) -> Result<ReadLease<'_>, String> {
    // A lease break is announced with a signal to the holder; SIGIO (the default) would end
    // the process. SIGURG is ignored unless a handler is installed, and the break is
    // detected by `F_GETLEASE` anyway (see [`ReadLease::held`]), never by the signal.
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    let fd = file.as_raw_fd();
    if unsafe { libc::fcntl(fd, F_SETSIG, libc::SIGURG) } == -1 {
        return Err(format!("F_SETSIG: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_RDLCK) } == 0 {
        return Ok(ReadLease { file });
    }
    let e = std::io::Error::last_os_error();
    Err(match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EBUSY) => {
            "the file is open for writing elsewhere (a writer or a writable mapping)".into()
        }
        Some(libc::EACCES) | Some(libc::EPERM) => "not the file's owner and no CAP_LEASE".into(),
        Some(libc::EINVAL) if !leases_enabled() => {
            "leases are disabled (/proc/sys/fs/leases-enable is 0)".into()
        }
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => {
            "the filesystem does not support leases".into()
        }
        _ => format!("F_SETLEASE: {e}"),
    })
}

fn leases_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/fs/leases-enable").map_or(true, |s| s.trim() != "0")
}

impl ReadLease<'_> {
    /// Whether the lease is still whole: a writer's `open` starts a break, after which
    /// `F_GETLEASE` reports `F_UNLCK` (the break pending or done).
    pub(crate) fn held(&self) -> bool {
        // SAFETY: fcntl on a descriptor we borrow.
        unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_GETLEASE) == libc::F_RDLCK }
    }
}

impl Drop for ReadLease<'_> {
    fn drop(&mut self) {
        // Releasing lets a writer blocked in `open` proceed at once (not after the break time).
        // SAFETY: fcntl on a descriptor we borrow.
        unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
    }
}

/// A fresh inode sharing `src`'s blocks (`FICLONE`), where the filesystem has reflinks
/// (btrfs, XFS, bcachefs): a copy that costs no bytes. Writes to `src` afterwards are
/// copy-on-write and never reach it.
pub(crate) fn reflink(src: &File, dst: &File) -> Result<(), String> {
    rustix::fs::ioctl_ficlone(dst, src).map_err(|e| match e {
        rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::INVAL | rustix::io::Errno::XDEV => {
            "the filesystem has no reflinks".to_string()
        }
        e => format!("FICLONE: {e}"),
    })
}
