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
