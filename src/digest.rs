//! SHA-256 digests and streaming hashing through an open descriptor.
//!
//! `sha2` picks SHA-NI / ARMv8 crypto at run time. Memory stays bounded by one buffer whatever
//! the file size; the buffer size was chosen with `benches/hash.rs`.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::io::Read;

/// Read buffer for hashing: large enough to amortise syscalls, small enough for the L2 cache.
pub const HASH_BUF: usize = 256 * 1024;

/// Text that is not a SHA-256 digest ([`Sha256Digest::from_hex`]); carried by
/// [`Error::Digest`](crate::Error::Digest).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DigestError {
    /// Not 64 characters long.
    #[error("{text:?}: expected 64 hex digits, got {len} characters")]
    Length {
        /// The text.
        text: String,
        /// Its length in bytes.
        len: usize,
    },
    /// 64 characters, not all hex digits.
    #[error("{text:?}: not hex: invalid character {ch:?} at position {at}")]
    NotHex {
        /// The text.
        text: String,
        /// Byte offset of the first character that is not a hex digit.
        at: usize,
        /// That character.
        ch: char,
    },
}

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub struct Sha256Digest(pub [u8; 32]);

/// Parses 64 hex digits (either case): the check behind [`Sha256Digest::from_hex`] (which is
/// beside `Error`, since this module sits below it), with the typed kind of failure.
pub(crate) fn parse_hex(s: &str) -> Result<Sha256Digest, DigestError> {
    if s.len() != 64 {
        return Err(DigestError::Length {
            text: s.to_string(),
            len: s.len(),
        });
    }
    let mut out = [0u8; 32];
    if hex::decode_to_slice(s, &mut out).is_err() {
        let (at, ch) = s
            .char_indices()
            .find(|(_, c)| !c.is_ascii_hexdigit())
            .unwrap_or((0, '?'));
        return Err(DigestError::NotHex {
            text: s.to_string(),
            at,
            ch,
        });
    }
    Ok(Sha256Digest(out))
}

impl Sha256Digest {
    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Digest of a byte slice.
    pub fn of(bytes: &[u8]) -> Self {
        Self::from_hasher(Sha256::new_with_prefix(bytes))
    }

    pub(crate) fn from_hasher(h: Sha256) -> Self {
        let out = h.finalize();
        let mut d = [0u8; 32];
        d.copy_from_slice(&out);
        Sha256Digest(d)
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_hex())
    }
}

/// Hashes everything `reader` yields, calling `progress` with the running byte count (a
/// generic reader with its own buffer: the benches sweep buffer sizes with it).
#[cfg_attr(not(feature = "__internals"), allow(dead_code))]
pub fn hash_reader(
    mut reader: impl Read,
    buf_size: usize,
    mut progress: impl FnMut(u64),
) -> std::io::Result<(Sha256Digest, u64)> {
    let mut buf = vec![0u8; buf_size.max(4096)];
    hash_with(&mut reader, &mut buf, &mut progress)
}

/// The one read-and-hash loop: everything `reader` yields, through `buf`.
fn hash_with(
    reader: &mut impl Read,
    buf: &mut [u8],
    progress: &mut impl FnMut(u64),
) -> std::io::Result<(Sha256Digest, u64)> {
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    loop {
        let n = match reader.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
        progress(total);
    }
    Ok((Sha256Digest::from_hasher(hasher), total))
}

/// Hashes a whole file by path (the hash bench compares it with `openssl dgst`).
#[cfg_attr(not(feature = "__internals"), allow(dead_code))]
pub fn hash_path(path: &std::path::Path) -> std::io::Result<(Sha256Digest, u64)> {
    let file = std::fs::File::open(path)?;
    hash_file(&file, |_| {})
}

thread_local! {
    /// One read buffer per worker thread, reused by every hash and copy on it: a fresh
    /// `HASH_BUF` allocation is above malloc's mmap threshold, so each one was an `mmap`, a
    /// page fault per 4 KiB touched and a `munmap` (thousands of small assets paid that per
    /// file).
    static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's reusable `HASH_BUF`-sized buffer (a nested call, which never
/// happens today, gets a fresh one rather than a panic).
pub(crate) fn with_buf<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    BUF.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() != HASH_BUF {
                *buf = vec![0u8; HASH_BUF];
            }
            f(&mut buf)
        }
        Err(_) => f(&mut vec![0u8; HASH_BUF]),
    })
}

/// Tells the kernel `file` is about to be read from start to end once: it doubles the
/// readahead window, so an uncached file streams from disk while the CPU hashes. Advisory:
/// an error (a filesystem without readahead) changes nothing.
pub(crate) fn advise_sequential(file: &std::fs::File) {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    let _ = rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::Sequential);
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    let _ = file;
}

/// Hashes `file` from its current offset to its end with the thread's reusable buffer and a
/// sequential-read hint; the path every verification of a file on disk takes.
pub fn hash_file(
    file: &std::fs::File,
    mut progress: impl FnMut(u64),
) -> std::io::Result<(Sha256Digest, u64)> {
    advise_sequential(file);
    let mut reader = file;
    with_buf(|buf| hash_with(&mut reader, buf, &mut progress))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_hex_says_what_is_wrong() {
        let hex = "ab".repeat(32);
        assert_eq!(Sha256Digest::from_hex(&hex).unwrap().to_hex(), hex);
        assert_eq!(
            Sha256Digest::from_hex(&hex.to_uppercase()).unwrap().to_hex(),
            hex
        );
        let short = Sha256Digest::from_hex("abc").unwrap_err();
        assert!(
            matches!(&short, crate::Error::Digest { source }
                if *source == DigestError::Length { text: "abc".into(), len: 3 }),
            "{short:?}"
        );
        assert_eq!(short.to_string(), "\"abc\": expected 64 hex digits, got 3 characters");
        let bad = format!("{}g{}", &hex[..10], &hex[11..]);
        let err = Sha256Digest::from_hex(&bad).unwrap_err();
        assert!(
            matches!(err, crate::Error::Digest { source: DigestError::NotHex { at: 10, ch: 'g', .. } }),
            "{err:?}"
        );
        assert!(err.to_string().contains("not hex: invalid character 'g' at position 10"), "{err}");
    }

    #[test]
    fn known_vectors() {
        assert_eq!(
            Sha256Digest::of(b"").to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let (d, n) = hash_reader(&b"abc"[..], 4096, |_| {}).unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            d.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hex_parsing_accepts_upper_case_and_rejects_junk() {
        let lower = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let d = Sha256Digest::from_hex(&lower.to_uppercase()).unwrap();
        assert_eq!(d.to_hex(), lower);
        assert!(Sha256Digest::from_hex("abc").is_err());
        assert!(Sha256Digest::from_hex(&"g".repeat(64)).is_err());
    }

    #[test]
    fn chunking_does_not_change_the_digest() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let (a, _) = hash_reader(&data[..], 4096, |_| {}).unwrap();
        let (b, _) = hash_reader(&data[..], 65536, |_| {}).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, Sha256Digest::of(&data));
    }
}
