//! Safe paths under ROOT, and atomic placement of verified files.
//!
//! Every asset path is checked beneath ROOT before anything is read or written through it:
//! a parent directory that is a symlink must resolve inside ROOT, and the asset path itself is
//! never followed (`O_NOFOLLOW`). A verified file reaches its path only by `rename` from a file
//! on the same filesystem that nobody else could write: fsync the file, rename, fsync the dir.

use crate::digest::Sha256Digest;
use crate::error::{Error, IoContext, Result};
use crate::stamp::Stamp;
use sha2::{Digest as _, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};



/// Checks every parent of `rel` under `root`: a symlinked parent must stay inside ROOT.
/// Returns the absolute asset path (not followed).
pub fn resolve(root: &Path, rel: &str, name: &str) -> Result<PathBuf> {
    refuse_unsafe(root, rel, name)?;
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

/// Placement checks the path itself, whatever validated it before: a path with `..`, `.`, an
/// empty or absolute component never reaches a file operation.
fn refuse_unsafe(root: &Path, rel: &str, name: &str) -> Result<()> {
    crate::asset_path::validate_path(rel)
        .map_err(|why| unsafe_path(name, &root.join(rel), why.to_string()))
}

/// Removes a placement's temp file (`.bootvault-<pid>-<random>.tmp`, a name no asset may
/// have) in the directory `dir` under `root` (`""` for ROOT itself): the parents are walked
/// with `O_NOFOLLOW` and the name is unlinked relative to its directory's descriptor, so a
/// parent swapped for a symlink cannot redirect the removal outside ROOT. A missing file or
/// parent is not an error.
pub fn unlink_temp(root: &Path, dir: &str, temp: &str) -> Result<()> {
    if !dir.is_empty() {
        refuse_unsafe(root, dir, temp)?;
    }
    let single = !temp.contains('/') && temp.starts_with(".bootvault-") && temp.ends_with(".tmp");
    if !single {
        return Err(unsafe_path(temp, &root.join(dir).join(temp), "not a temp name"));
    }
    let rel = if dir.is_empty() {
        temp.to_string()
    } else {
        format!("{dir}/{temp}")
    };
    unlink_checked(root, &rel)
}

fn unlink_checked(root: &Path, rel: &str) -> Result<()> {
    use rustix::fs::{AtFlags, Mode, OFlags, openat, unlinkat};
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    let mut fd: OwnedFd = rustix::fs::open(root, dir_flags, Mode::empty())
        .map_err(|e| Error::io(root, "open ROOT", e.into()))?;
    let mut comps: Vec<&str> = rel.split('/').collect();
    let file_name = comps.pop().unwrap_or_default();
    for comp in comps {
        fd = match openat(&fd, comp, dir_flags, Mode::empty()) {
            Ok(next) => next,
            Err(rustix::io::Errno::NOENT) => return Ok(()),
            Err(e) => return Err(Error::io(root.join(rel), "open directory", e.into())),
        };
    }
    match unlinkat(&fd, file_name, AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(Error::io(root.join(rel), "remove", e.into())),
    }
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
    let (digest, bytes) = crate::digest::hash_file(&file, progress).at(path, "read")?;
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

/// Whether the directory opened as `fd` is the one at `target` (same device and inode): a
/// portable check that a symlink did not change between resolving and opening it.
// `st_dev`/`st_ino` are not u64 on every platform (macOS: i32 and u64).
#[allow(clippy::unnecessary_cast)]
fn same_dir(fd: &OwnedFd, target: &Path) -> bool {
    let Ok(opened) = rustix::fs::fstat(fd) else {
        return false;
    };
    std::fs::metadata(target)
        .is_ok_and(|m| m.dev() == opened.st_dev as u64 && m.ino() == opened.st_ino as u64)
}

/// Walks `rel` from ROOT one component at a time with `O_NOFOLLOW | O_DIRECTORY`, creating
/// missing directories. A symlinked component is followed only when it resolves inside ROOT,
/// and the directory then opened is checked to be inside ROOT.
pub fn open_parent(root: &Path, rel: &str, name: &str) -> Result<Parent> {
    refuse_unsafe(root, rel, name)?;
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
                if !same_dir(&opened, &target) {
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
    match copy_verified(file, src, parent, dest, mode, expected, name, &mut |_| {})? {
        CopyOutcome::Placed { stamp, bytes, .. } => {
            let _ = std::fs::remove_file(src);
            Ok((stamp, bytes))
        }
        CopyOutcome::Mismatch { actual, .. } => Err(Error::Mismatch {
            name: name.into(),
            path: dest.into(),
            expected: *expected,
            actual,
        }),
    }
}

/// What a hash-checked copy onto a fresh inode came to.
pub(crate) enum CopyOutcome {
    /// The bytes matched and the fresh inode is placed: its stamp, the bytes hashed, and how
    /// it got its bytes.
    Placed {
        stamp: Stamp,
        bytes: u64,
        fresh: Fresh,
    },
    /// The bytes hashed to `actual` (`bytes` read); nothing was placed.
    Mismatch { actual: Sha256Digest, bytes: u64 },
}

/// Copies the whole content of `src` (an open file: an existing asset to adopt, or a donor
/// with the same digest) onto a fresh inode, hashing on the way, and places that copy at the
/// asset `rel` when the digest matches. Where the platform has anonymous files the copy is
/// made beside the asset and stays invisible until placed; elsewhere it is written in
/// the state dir's `tmp/` (so a kill leaves nothing in ROOT) and placed as a download is.
/// Where the filesystem has reflinks the fresh inode shares `src`'s blocks instead (no bytes
/// written, and a write to `src` afterwards is copy-on-write, so it never reaches the copy),
/// and the copy is what is hashed. Returns the placed stamp, the bytes hashed and how the
/// fresh inode got its bytes, or, on a mismatch, the digest found (nothing is placed).
#[allow(clippy::too_many_arguments)]
pub(crate) fn copy_into_place(
    src: &File,
    root: &Path,
    rel: &str,
    state: &crate::state::StateDir,
    mode: u32,
    expected: &Sha256Digest,
    name: &str,
    progress: &mut dyn FnMut(u64),
) -> Result<CopyOutcome> {
    let dest = root.join(rel);
    let parent = open_parent(root, rel, name)?;
    if crate::sys::anonymous_file(&parent.fd).is_some() {
        return copy_verified(src, &dest, &parent, &dest, mode, expected, name, progress);
    }
    drop(parent);
    let tmp_dir = state.tmp();
    std::fs::create_dir_all(&tmp_dir).at(&tmp_dir, "create tmp dir")?;
    let tmp = state.tmp_file(
        &crate::state::file_key(rel),
        crate::state::TmpKind::Copy,
    );
    let mut out = crate::fsutil::open_regular(
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true),
        &tmp,
    )
    .at(&tmp, "create copy")?;
    let (digest, copied) = match copy_hashing(src, &dest, &mut out, &tmp, progress) {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if &digest != expected {
        let _ = std::fs::remove_file(&tmp);
        return Ok(CopyOutcome::Mismatch {
            actual: digest,
            bytes: copied,
        });
    }
    let bytes = out.metadata().at(&tmp, "fstat")?.len();
    let placed = place(&tmp, &out, root, rel, mode, expected, name);
    if placed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    let (stamp, _) = placed?;
    let no_reflink = "no anonymous file to clone into".to_string();
    Ok(CopyOutcome::Placed {
        stamp,
        bytes,
        fresh: Fresh::Copied { no_reflink },
    })
}

/// Copies all of `file` (from its start) to `out`, hashing on the way; returns the digest
/// and the bytes copied.
fn copy_hashing(
    file: &File,
    src: &Path,
    out: &mut File,
    dest: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<(Sha256Digest, u64)> {
    let mut reader = file.try_clone().at(src, "dup")?;
    std::io::Seek::rewind(&mut reader).at(src, "rewind")?;
    crate::digest::advise_sequential(&reader);
    crate::digest::with_buf(|buf| {
        let mut hasher = Sha256::new();
        let mut copied = 0u64;
        loop {
            let n = reader.read(buf).at(src, "read")?;
            if n == 0 {
                return Ok((Sha256Digest::from_hasher(hasher), copied));
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).at(dest, "write copy")?;
            copied += n as u64;
            progress(copied);
        }
    })
}

/// How a fresh inode got its bytes (for the event's reason and `debug why`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fresh {
    /// A reflink (`FICLONE`): no bytes written.
    Reflinked,
    /// Copied byte by byte; why no reflink.
    Copied {
        /// Why the filesystem gave no reflink.
        no_reflink: String,
    },
}

#[allow(clippy::too_many_arguments)]
fn copy_verified(
    file: &File,
    src: &Path,
    parent: &Parent,
    dest: &Path,
    mode: u32,
    expected: &Sha256Digest,
    name: &str,
    progress: &mut dyn FnMut(u64),
) -> Result<CopyOutcome> {
    let (mut out, tmp_name) = anonymous_or_named(parent, dest)?;
    let discard = |tmp: &Option<String>| {
        if let Some(t) = tmp {
            let _ = rustix::fs::unlinkat(&parent.fd, t.as_str(), rustix::fs::AtFlags::empty());
        }
    };
    // The clone is hashed, not `file`: what is verified is the inode that gets placed.
    let (fresh, hashed) = match crate::sys::reflink(file, &out) {
        Ok(()) => (
            Fresh::Reflinked,
            crate::digest::hash_file(&out, progress).at(dest, "read clone"),
        ),
        Err(no_reflink) => (
            Fresh::Copied { no_reflink },
            copy_hashing(file, src, &mut out, dest, progress),
        ),
    };
    let (digest, copied) = match hashed {
        Ok(done) => done,
        Err(e) => {
            discard(&tmp_name);
            return Err(e);
        }
    };
    if &digest != expected {
        discard(&tmp_name);
        return Ok(CopyOutcome::Mismatch {
            actual: digest,
            bytes: copied,
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
    Ok(CopyOutcome::Placed {
        stamp: after,
        bytes: copied,
        fresh,
    })
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
    match crate::sys::anonymous_file(&parent.fd) {
        Some(file) => Ok((file, None)),
        None => {
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
    crate::sys::link_anonymous(file, &parent.fd, &t)
        .map_err(|e| Error::io(dest, "link anonymous file", e))?;
    Ok(t)
}


/// `.bootvault-<pid>-<16 hex>.tmp`, exactly the temp name of a placement, of a process that
/// is gone.
pub(crate) fn is_dead_temp(rel: &str) -> bool {
    let base = rel.rsplit('/').next().unwrap_or(rel);
    base.strip_prefix(".bootvault-")
        .and_then(|r| r.strip_suffix(".tmp"))
        .and_then(|r| r.split_once('-'))
        .is_some_and(|(pid, random)| {
            !pid.is_empty()
                && pid.bytes().all(|b| b.is_ascii_digit())
                && random.len() == 16
                && random.bytes().all(|b| b.is_ascii_hexdigit())
                && !crate::fsutil::pid_alive(pid)
        })
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
        use crate::fsutil::effective_mode;
        assert_eq!(effective_mode(None), 0o444);
        assert_eq!(effective_mode(Some(0o666)), 0o644);
        assert_eq!(effective_mode(Some(0o777)), 0o755);
        assert_eq!(effective_mode(Some(0o755)), 0o755);
    }
}
