//! Portable POSIX (macOS, the BSDs; selectable on Linux with `--cfg bootvault_portable`):
//! no `O_PATH`, no anonymous files (a named temp file is used instead), no fs-verity.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

/// A read-only descriptor of a directory, for `fstatat` relative to it.
pub(crate) fn open_dir_for_stat(path: &Path) -> std::io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// No anonymous files here: callers fall back to a named temp file.
pub(crate) fn anonymous_file(_dir: &impl AsFd) -> Option<File> {
    None
}

/// Never called: [`anonymous_file`] never returns a file.
pub(crate) fn link_anonymous(_file: &File, _dir: &impl AsFd, _name: &str) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

/// fs-verity is a Linux feature.
pub(crate) const VERITY: bool = false;

/// No read leases here: adoption falls back to a reflink or a copy.
pub(crate) struct ReadLease<'a> {
    _file: &'a File,
}

/// Always refused on this platform family.
pub(crate) fn read_lease(_file: &File) -> Result<ReadLease<'_>, String> {
    Err("no read leases on this platform".into())
}

impl ReadLease<'_> {
    /// Never reached (no lease is ever granted).
    pub(crate) fn held(&self) -> bool {
        false
    }
}

/// No `FICLONE` here (`clonefile` clones by path, not into an open file): copy instead.
pub(crate) fn reflink(_src: &File, _dst: &File) -> Result<(), String> {
    Err("no reflink into an open file on this platform".into())
}
