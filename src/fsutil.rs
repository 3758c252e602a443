//! Small file-system helpers shared by the layers above: nothing here knows the store.

use std::fs::{File, OpenOptions};
use std::path::Path;

/// Default permission bits of a placed file: read-only (see SECURITY.md).
pub const DEFAULT_MODE: u32 = 0o444;

/// Opens a file of the state dir without following a symlink and without blocking on a fifo,
/// and refuses anything but a regular file.
pub(crate) fn open_regular(opts: &mut OpenOptions, path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let file = opts.custom_flags(flags.bits() as i32).open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(file)
}

/// The permission bits to apply: the manifest's, never group- or other-writable.
pub fn effective_mode(mode: Option<u32>) -> u32 {
    mode.map(|m| m & 0o755).unwrap_or(DEFAULT_MODE)
}

/// Whether the process `pid` (a decimal string) exists; an unparsable pid counts as alive.
pub(crate) fn pid_alive(pid: &str) -> bool {
    pid.parse::<i32>()
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .is_none_or(|p| {
            !matches!(
                rustix::process::test_kill_process(p),
                Err(rustix::io::Errno::SRCH)
            )
        })
}
