//! Safe paths under ROOT, and atomic placement of verified files.
//!
//! Every asset path is checked beneath ROOT before anything is read or written through it:
//! a parent directory that is a symlink must resolve inside ROOT, and the asset path itself is
//! never followed (`O_NOFOLLOW`). A verified file reaches its path only by `rename` from a file
//! on the same filesystem that nobody else could write: fsync the file, rename, fsync the dir.

use crate::digest::{HASH_BUF, Sha256Digest};
use crate::error::{Error, IoContext, Result};
use crate::stamp::Stamp;
use sha2::{Digest as _, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Default permission bits of a placed file: read-only (see SECURITY.md).
pub const DEFAULT_MODE: u32 = 0o444;

/// The permission bits to apply: the manifest's, never group- or other-writable.
pub fn effective_mode(mode: Option<u32>) -> u32 {
    mode.map(|m| m & 0o755).unwrap_or(DEFAULT_MODE)
}

/// Checks every parent of `rel` under `root`: a symlinked parent must stay inside ROOT.
/// Returns the absolute asset path (not followed).
pub fn resolve(root: &Path, rel: &str, name: &str) -> Result<PathBuf> {
    let canon_root = std::fs::canonicalize(root).at(root, "resolve ROOT")?;
    let mut cur = root.to_path_buf();
    let comps: Vec<&str> = rel.split('/').collect();
    for comp in &comps[..comps.len() - 1] {
        cur.push(comp);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                symlink_target_inside(&cur, &canon_root, name)?;
            }
            Ok(m) if !m.is_dir() => {
                return Err(unsafe_path(
                    name,
                    &cur,
                    "a parent component is not a directory",
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(Error::io(&cur, "inspect parent", e)),
        }
    }
    Ok(root.join(rel))
}

/// Opens an existing asset for reading without following a symlink at its path.
pub fn open_nofollow(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

/// Result of hashing an open file between two `fstat`s.
#[derive(Debug, Clone, Copy)]
pub struct Hashed {
    /// The content digest.
    pub digest: Sha256Digest,
    /// The stamp before and after (equal, or the hash is not used).
    pub stamp: Stamp,
    /// Bytes read.
    pub bytes: u64,
}

/// Hashes the file at `path` through one descriptor, fstat'ed before and after; errors with
/// [`Error::Unstable`] when the file changed meanwhile.
pub fn hash_in_place(path: &Path, name: &str, progress: &mut dyn FnMut(u64)) -> Result<Hashed> {
    let file = open_nofollow(path).at(path, "open for hashing")?;
    let before = Stamp::of_file(&file).at(path, "fstat")?;
    let (digest, bytes) = crate::digest::hash_reader(&file, HASH_BUF, progress).at(path, "read")?;
    let after = Stamp::of_file(&file).at(path, "fstat")?;
    if before != after || bytes != after.size {
        return Err(Error::Unstable {
            name: name.into(),
            path: path.into(),
        });
    }
    Ok(Hashed {
        digest,
        stamp: after,
        bytes,
    })
}

/// The directory that holds an asset, opened beneath ROOT, and the asset's file name in it.
/// Placement renames against this descriptor, so the directory that was checked is the one
/// written: a parent swapped for a symlink after the check cannot redirect the write.
pub struct Parent {
    fd: OwnedFd,
    file_name: String,
}

fn unsafe_path(name: &str, path: &Path, why: impl Into<String>) -> Error {
    Error::UnsafePath {
        name: name.into(),
        path: path.into(),
        why: why.into(),
    }
}

/// Where the symlinked parent `link` leads; an error unless that is inside `canon_root`.
fn symlink_target_inside(link: &Path, canon_root: &Path, name: &str) -> Result<PathBuf> {
    let target = std::fs::canonicalize(link).map_err(|e| {
        unsafe_path(
            name,
            link,
            format!("symlinked parent does not resolve: {e}"),
        )
    })?;
    if !target.starts_with(canon_root) {
        return Err(unsafe_path(
            name,
            link,
            format!(
                "symlinked parent leads outside ROOT to {}",
                target.display()
            ),
        ));
    }
    Ok(target)
}

/// Where the descriptor `fd` really is (Linux `/proc/self/fd`).
fn real_path(fd: &OwnedFd) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()
}

/// Walks `rel` from ROOT one component at a time with `O_NOFOLLOW | O_DIRECTORY`, creating
/// missing directories. A symlinked component is followed only when it resolves inside ROOT,
/// and the directory then opened is checked to be inside ROOT.
pub fn open_parent(root: &Path, rel: &str, name: &str) -> Result<Parent> {
    use rustix::fs::{Mode, OFlags, mkdirat, openat};
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let canon_root = std::fs::canonicalize(root).at(root, "resolve ROOT")?;
    let mut fd: OwnedFd = rustix::fs::open(&canon_root, dir_flags, Mode::empty())
        .map_err(|e| Error::io(&canon_root, "open ROOT", e.into()))?;
    let mut comps: Vec<&str> = rel.split('/').collect();
    let file_name = comps.pop().unwrap_or_default().to_string();
    let mut here = canon_root.clone();
    for comp in comps {
        here.push(comp);
        let next = match openat(&fd, comp, dir_flags | OFlags::NOFOLLOW, Mode::empty()) {
            Ok(next) => next,
            Err(rustix::io::Errno::NOENT) => {
                match mkdirat(&fd, comp, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(Error::io(&here, "create directory", e.into())),
                }
                openat(&fd, comp, dir_flags | OFlags::NOFOLLOW, Mode::empty())
                    .map_err(|e| Error::io(&here, "open directory", e.into()))?
            }
            Err(rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => {
                let st = rustix::fs::statat(&fd, comp, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| Error::io(&here, "inspect parent", e.into()))?;
                if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Symlink
                {
                    return Err(unsafe_path(
                        name,
                        &here,
                        "a parent component is not a directory",
                    ));
                }
                let target = symlink_target_inside(&here, &canon_root, name)?;
                let opened = rustix::fs::open(&target, dir_flags, Mode::empty())
                    .map_err(|e| Error::io(&target, "open directory", e.into()))?;
                // The link may have changed between canonicalize and open: check what was opened.
                if !real_path(&opened).is_some_and(|p| p.starts_with(&canon_root)) {
                    return Err(unsafe_path(
                        name,
                        &here,
                        "symlinked parent moved outside ROOT",
                    ));
                }
                opened
            }
            Err(e) => return Err(Error::io(&here, "open directory", e.into())),
        };
        fd = next;
    }
    Ok(Parent { fd, file_name })
}

/// Places the verified file `src` (open as `file`, in the state dir) at `dest` (the asset
/// `rel` under `root`).
///
/// On the same filesystem: chmod, fsync, rename, fsync the directory. Across filesystems the
/// bytes are copied into an anonymous file (`O_TMPFILE`) beside `dest`, hashed again on the
/// way, linked under a temp name and renamed. Every name operation is relative to the parent
/// descriptor from [`open_parent`]. Returns the stamp of the placed file and bytes re-hashed.
pub fn place(
    src: &Path,
    file: &File,
    root: &Path,
    rel: &str,
    mode: u32,
    expected: &Sha256Digest,
    name: &str,
) -> Result<(Stamp, u64)> {
    let dest = root.join(rel);
    let parent = open_parent(root, rel, name)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .at(src, "chmod")?;
    file.sync_all().at(src, "fsync")?;
    let parent_dev = rustix::fs::fstat(&parent.fd)
        .map_err(|e| Error::io(&dest, "stat directory", e.into()))?
        .st_dev as u64;
    if file.metadata().at(src, "fstat")?.dev() == parent_dev {
        rustix::fs::renameat(rustix::fs::CWD, src, &parent.fd, parent.file_name.as_str())
            .map_err(|e| Error::io(&dest, "rename into place", e.into()))?;
        rustix::fs::fsync(&parent.fd).map_err(|e| Error::io(&dest, "fsync directory", e.into()))?;
        return Ok((Stamp::of_file(file).at(&dest, "fstat")?, 0));
    }
    copy_across(file, src, &parent, &dest, mode, expected, name)
}

fn copy_across(
    file: &File,
    src: &Path,
    parent: &Parent,
    dest: &Path,
    mode: u32,
    expected: &Sha256Digest,
    name: &str,
) -> Result<(Stamp, u64)> {
    let mut reader = file.try_clone().at(src, "dup")?;
    std::io::Seek::rewind(&mut reader).at(src, "rewind")?;
    let (mut out, tmp_name) = anonymous_or_named(parent, dest)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; HASH_BUF];
    let mut copied = 0u64;
    loop {
        let n = reader.read(&mut buf).at(src, "read")?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).at(dest, "write copy")?;
        copied += n as u64;
    }
    let digest = Sha256Digest::from_hasher(hasher);
    let discard = |tmp: &Option<String>| {
        if let Some(t) = tmp {
            let _ = rustix::fs::unlinkat(&parent.fd, t.as_str(), rustix::fs::AtFlags::empty());
        }
    };
    if &digest != expected {
        discard(&tmp_name);
        return Err(Error::Mismatch {
            name: name.into(),
            path: dest.into(),
            expected: expected.to_hex(),
            actual: digest.to_hex(),
        });
    }
    out.set_permissions(std::fs::Permissions::from_mode(mode))
        .at(dest, "chmod")?;
    out.sync_all().at(dest, "fsync copy")?;
    let tmp = match tmp_name {
        Some(t) => t,
        None => link_anonymous(&out, parent, dest)?,
    };
    let before = Stamp::of_file(&out).at(dest, "fstat")?;
    if let Err(e) = rustix::fs::renameat(
        &parent.fd,
        tmp.as_str(),
        &parent.fd,
        parent.file_name.as_str(),
    ) {
        discard(&Some(tmp));
        return Err(Error::io(dest, "rename into place", e.into()));
    }
    rustix::fs::fsync(&parent.fd).map_err(|e| Error::io(dest, "fsync directory", e.into()))?;
    let after = Stamp::of_file(&out).at(dest, "fstat")?;
    // Between link and rename the name was visible; a write through it shows as a size change
    // or a content change in ctime beyond the rename's own.
    if before.size != after.size || before.mtime_ns != after.mtime_ns {
        return Err(Error::Unstable {
            name: name.into(),
            path: dest.into(),
        });
    }
    let _ = std::fs::remove_file(src);
    Ok((after, copied))
}

fn temp_name() -> String {
    format!(
        ".bootvault-{}-{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    )
}

/// An `O_TMPFILE` in the parent (invisible until linked), or a named temp file where the
/// filesystem lacks it.
fn anonymous_or_named(parent: &Parent, dest: &Path) -> Result<(File, Option<String>)> {
    use rustix::fs::{Mode, OFlags, openat};
    let private = Mode::from_raw_mode(0o600);
    match openat(
        &parent.fd,
        ".",
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        private,
    ) {
        Ok(fd) => Ok((File::from(fd), None)),
        Err(_) => {
            let t = temp_name();
            let flags =
                OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let fd = openat(&parent.fd, t.as_str(), flags, private)
                .map_err(|e| Error::io(dest, "create temp file", e.into()))?;
            Ok((File::from(fd), Some(t)))
        }
    }
}

fn link_anonymous(file: &File, parent: &Parent, dest: &Path) -> Result<String> {
    let t = temp_name();
    let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
    rustix::fs::linkat(
        rustix::fs::CWD,
        proc_path.as_str(),
        &parent.fd,
        t.as_str(),
        rustix::fs::AtFlags::SYMLINK_FOLLOW,
    )
    .map_err(|e| Error::io(dest, "link anonymous file", e.into()))?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinked_parent_leaving_root_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("bin")).unwrap();
        let err = resolve(root.path(), "bin/runc", "runc").unwrap_err();
        assert!(matches!(err, Error::UnsafePath { .. }), "{err}");
        std::fs::create_dir(root.path().join("real")).unwrap();
        std::os::unix::fs::symlink(root.path().join("real"), root.path().join("inside")).unwrap();
        assert!(resolve(root.path(), "inside/x", "x").is_ok());
    }

    #[test]
    fn open_parent_creates_directories_and_refuses_escaping_symlinks() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let p = open_parent(root.path(), "a/b/c", "c").unwrap();
        assert_eq!(p.file_name, "c");
        assert!(root.path().join("a/b").is_dir());
        std::os::unix::fs::symlink(outside.path(), root.path().join("out")).unwrap();
        let err = open_parent(root.path(), "out/x/y", "y").err().unwrap();
        assert!(matches!(err, Error::UnsafePath { .. }), "{err}");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        std::os::unix::fs::symlink(root.path().join("a"), root.path().join("in")).unwrap();
        assert!(open_parent(root.path(), "in/b/z", "z").is_ok());
        std::fs::write(root.path().join("file"), b"x").unwrap();
        assert!(matches!(
            open_parent(root.path(), "file/z", "z").err().unwrap(),
            Error::UnsafePath { .. }
        ));
    }

    #[test]
    fn modes_are_never_group_or_other_writable() {
        assert_eq!(effective_mode(None), 0o444);
        assert_eq!(effective_mode(Some(0o666)), 0o644);
        assert_eq!(effective_mode(Some(0o777)), 0o755);
        assert_eq!(effective_mode(Some(0o755)), 0o755);
    }
}
