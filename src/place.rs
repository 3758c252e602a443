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
                let target = std::fs::canonicalize(&cur).map_err(|e| Error::UnsafePath {
                    name: name.into(),
                    path: cur.clone(),
                    why: format!("symlinked parent does not resolve: {e}"),
                })?;
                if !target.starts_with(&canon_root) {
                    return Err(Error::UnsafePath {
                        name: name.into(),
                        path: cur.clone(),
                        why: format!(
                            "symlinked parent leads outside ROOT to {}",
                            target.display()
                        ),
                    });
                }
            }
            Ok(m) if !m.is_dir() => {
                return Err(Error::UnsafePath {
                    name: name.into(),
                    path: cur.clone(),
                    why: "a parent component is not a directory".into(),
                });
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

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .at(dir, "fsync directory")
}

/// Places the verified file `src` (open as `file`, in the state dir) at `dest`.
///
/// On the same filesystem: chmod, fsync, rename, fsync the directory. Across filesystems the
/// bytes are copied into an anonymous file (`O_TMPFILE`) beside `dest`, hashed again on the
/// way, linked under a temp name and renamed. Returns the stamp of the placed file.
pub fn place(
    src: &Path,
    file: &File,
    dest: &Path,
    mode: u32,
    expected: &Sha256Digest,
    name: &str,
) -> Result<(Stamp, u64)> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).at(parent, "create directory")?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .at(src, "chmod")?;
    file.sync_all().at(src, "fsync")?;
    let same_fs = file.metadata().at(src, "fstat")?.dev()
        == std::fs::metadata(parent).at(parent, "stat")?.dev();
    if same_fs {
        std::fs::rename(src, dest).at(dest, "rename into place")?;
        fsync_dir(parent)?;
        return Ok((Stamp::of_file(file).at(dest, "fstat")?, 0));
    }
    copy_across(file, src, parent, dest, mode, expected, name)
}

fn copy_across(
    file: &File,
    src: &Path,
    parent: &Path,
    dest: &Path,
    mode: u32,
    expected: &Sha256Digest,
    name: &str,
) -> Result<(Stamp, u64)> {
    let mut reader = file.try_clone().at(src, "dup")?;
    std::io::Seek::rewind(&mut reader).at(src, "rewind")?;
    let (mut out, tmp_name) = anonymous_or_named(parent)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; HASH_BUF];
    let mut copied = 0u64;
    loop {
        let n = reader.read(&mut buf).at(src, "read")?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).at(parent, "write copy")?;
        copied += n as u64;
    }
    let digest = Sha256Digest::from_hasher(hasher);
    if &digest != expected {
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
    let tmp_path = match tmp_name {
        Some(p) => p,
        None => link_anonymous(&out, parent)?,
    };
    let before = Stamp::of_file(&out).at(&tmp_path, "fstat")?;
    if let Err(e) = std::fs::rename(&tmp_path, dest) {
        let _ = std::fs::remove_file(&tmp_path);
        return Err(Error::io(dest, "rename into place", e));
    }
    fsync_dir(parent)?;
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

fn temp_name(parent: &Path) -> PathBuf {
    parent.join(format!(
        ".bootvault-{}-{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ))
}

/// An `O_TMPFILE` in `parent` (invisible until linked), or a named temp file where the
/// filesystem lacks it.
fn anonymous_or_named(parent: &Path) -> Result<(File, Option<PathBuf>)> {
    use rustix::fs::{Mode, OFlags};
    match rustix::fs::open(
        parent,
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    ) {
        Ok(fd) => Ok((File::from(fd), None)),
        Err(_) => {
            let p = temp_name(parent);
            let f = OpenOptions::new()
                .write(true)
                .read(true)
                .create_new(true)
                .mode(0o600)
                .open(&p)
                .at(&p, "create temp file")?;
            Ok((f, Some(p)))
        }
    }
}

fn link_anonymous(file: &File, parent: &Path) -> Result<PathBuf> {
    use std::os::fd::AsRawFd;
    let p = temp_name(parent);
    let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
    rustix::fs::linkat(
        rustix::fs::CWD,
        proc_path.as_str(),
        rustix::fs::CWD,
        &p,
        rustix::fs::AtFlags::SYMLINK_FOLLOW,
    )
    .map_err(|e| Error::io(&p, "link anonymous file", e.into()))?;
    Ok(p)
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
    fn modes_are_never_group_or_other_writable() {
        assert_eq!(effective_mode(None), 0o444);
        assert_eq!(effective_mode(Some(0o666)), 0o644);
        assert_eq!(effective_mode(Some(0o777)), 0o755);
        assert_eq!(effective_mode(Some(0o755)), 0o755);
    }
}
