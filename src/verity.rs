//! The fs-verity tier (Linux): the kernel checks every read of a verity file against a Merkle
//! tree, and `FS_IOC_MEASURE_VERITY` returns the file's verity digest in constant time.
//!
//! Used only where a probe shows the filesystem supports it (ext4 with the `verity` feature,
//! f2fs, btrfs). Elsewhere — tmpfs, xfs, ext4 without the feature, kernels without
//! `CONFIG_FS_VERITY`, macOS — every call here reports "unsupported" and the store keeps to
//! stamps and content hashes.

use crate::digest::Sha256Digest;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

/// `_IOW('f', 133, struct fsverity_enable_arg)`.
const FS_IOC_ENABLE_VERITY: libc::c_ulong = 0x4080_6685;
/// `_IOWR('f', 134, struct fsverity_digest)`.
const FS_IOC_MEASURE_VERITY: libc::c_ulong = 0xc004_6686;
const FS_VERITY_HASH_ALG_SHA256: u32 = 1;

#[repr(C)]
struct EnableArg {
    version: u32,
    hash_algorithm: u32,
    block_size: u32,
    salt_size: u32,
    salt_ptr: u64,
    sig_size: u32,
    reserved1: u32,
    sig_ptr: u64,
    reserved2: [u64; 11],
}

#[repr(C)]
struct MeasureArg {
    digest_algorithm: u16,
    digest_size: u16,
    digest: [u8; 32],
}

/// Whether a filesystem supports fs-verity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Support {
    /// Verity can be enabled on files there.
    Available,
    /// Not here; the reason, for `debug` and the logs.
    Unsupported(String),
}

/// Probes the filesystem holding `dir` by measuring a fresh non-verity file: `ENODATA` means
/// the filesystem implements verity (the file just is not a verity file).
pub fn probe(dir: &Path) -> Support {
    if !crate::sys::VERITY {
        return Support::Unsupported("fs-verity is a Linux feature".into());
    }
    let file = match tempfile::tempfile_in(dir) {
        Ok(f) => f,
        Err(e) => return Support::Unsupported(format!("cannot create a probe file: {e}")),
    };
    match measure_raw(&file) {
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Support::Available,
        Ok(_) => Support::Available,
        Err(e) => Support::Unsupported(e.to_string()),
    }
}

/// Enables verity on `file` (opened read-only, with no writer open anywhere).
pub fn enable(file: &File) -> std::io::Result<()> {
    if !crate::sys::VERITY {
        return Err(std::io::Error::from(std::io::ErrorKind::Unsupported));
    }
    let arg = EnableArg {
        version: 1,
        hash_algorithm: FS_VERITY_HASH_ALG_SHA256,
        block_size: 4096,
        salt_size: 0,
        salt_ptr: 0,
        sig_size: 0,
        reserved1: 0,
        sig_ptr: 0,
        reserved2: [0; 11],
    };
    // SAFETY: the kernel reads `arg`, a live, correctly laid out fsverity_enable_arg.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_ENABLE_VERITY as _, &arg) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn measure_raw(file: &File) -> std::io::Result<Sha256Digest> {
    if !crate::sys::VERITY {
        return Err(std::io::Error::from(std::io::ErrorKind::Unsupported));
    }
    let mut arg = MeasureArg {
        digest_algorithm: 0,
        digest_size: 32,
        digest: [0; 32],
    };
    // SAFETY: the kernel writes at most `digest_size` bytes into `arg.digest`.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_MEASURE_VERITY as _, &mut arg) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if arg.digest_algorithm as u32 != FS_VERITY_HASH_ALG_SHA256 || arg.digest_size != 32 {
        return Err(std::io::Error::other("unexpected verity digest algorithm"));
    }
    Ok(Sha256Digest(arg.digest))
}

/// The verity digest of `file`, or `None` when it is not a verity file or verity is
/// unsupported there.
pub fn measure(file: &File) -> Option<Sha256Digest> {
    measure_raw(file).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        assert_eq!(std::mem::size_of::<EnableArg>(), 128);
        // _IOW: dir 1, size 128; _IOWR: dir 3, size 4 (the header struct without the digest).
        assert_eq!(
            FS_IOC_ENABLE_VERITY,
            (1 << 30) | (128 << 16) | (0x66 << 8) | 133
        );
        assert_eq!(
            FS_IOC_MEASURE_VERITY,
            (3 << 30) | (4 << 16) | (0x66 << 8) | 134
        );
    }

    #[test]
    fn probe_and_fallback_on_this_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 8192]).unwrap();
        let file = File::open(&path).unwrap();
        match probe(dir.path()) {
            Support::Unsupported(why) => {
                // The fallback: no measurement, no verity, nothing enabled.
                assert!(!why.is_empty());
                assert_eq!(measure(&file), None);
                assert!(enable(&file).is_err());
            }
            Support::Available => {
                assert_eq!(measure(&file), None, "not a verity file yet");
                enable(&file).unwrap();
                let d = measure(&file).expect("a verity file measures");
                assert_eq!(measure(&File::open(&path).unwrap()), Some(d));
            }
        }
    }
}
