//! Content-defined chunk indexes: what a delta upgrade needs to know about a file to rebuild
//! it from the chunks of other files.
//!
//! A file is cut with FastCDC (the 2020 algorithm of the `fastcdc` crate) into chunks of
//! [`MIN_CHUNK`]..=[`MAX_CHUNK`] bytes, [`AVG_CHUNK`] on average; the index lists each chunk's
//! length and SHA-256, in file order. The same bytes cut with the same sizes give the same
//! chunks wherever they sit in a file, so an index of the new file and an index of an old one
//! tell which byte runs of the new file can be copied from the old one.
//!
//! Sizes ([`params_for`]: avg 16 KiB for files over 32 MiB, down to 4 KiB under 8 MiB; min =
//! avg / 4, max = avg * 4): smaller than casync's 16/64/256 KiB because boot images change in
//! many small places (an EROFS image rewrites its inode and directory blocks besides the
//! changed files, a new release of a binary shifts code everywhere), and every changed place
//! costs about one chunk; the index of a 400 MB image is then about 0.9 MB (36 bytes a chunk).
//! The sizes are written in the index, so a store chunks its seeds with the sizes of the index
//! it is patching towards.
//!
//! The binary format (version 1, all integers little-endian), documented in DESIGN.md:
//!
//! ```text
//! magic    8 bytes  "BVCINDEX"
//! version  u16      1
//! reserved u16      0
//! min      u32      minimum chunk size
//! avg      u32      average chunk size
//! max      u32      maximum chunk size
//! block    u32      sub-block size (0: none; else a power of two, 512 B..1 MiB)
//! total    u64      file size (the sum of the chunk lengths)
//! count    u64      number of chunks
//! count x { length u32, sha256 [u8; 32], cells x sub-hash [u8; 8] }
//! ```
//!
//! `cells` is the number of cells of the file's grid of `block` bytes that the chunk overlaps
//! (0 when `block` is 0); a sub-hash is the first 8 bytes of the SHA-256 of the chunk's bytes in
//! that cell. Sub-hashes let a patch copy the unchanged cells of a changed chunk from where the
//! seed had it (a filesystem image rewrites 4 KiB blocks in place); they only choose what to
//! try: every chunk is still checked against its full SHA-256, and the file against the
//! manifest's.
//!
//! Decoding never trusts `count`: it is at most what the remaining bytes could hold, so nothing
//! is allocated from an unchecked number; every length is 1..=max, the lengths sum to `total`,
//! and no byte is left over.

use crate::digest::Sha256Digest;
use sha2::{Digest, Sha256};
use std::io::Read;

/// Minimum chunk size written by this version.
pub const MIN_CHUNK: u32 = 4 * 1024;
/// Average chunk size written by this version.
pub const AVG_CHUNK: u32 = 16 * 1024;
/// Maximum chunk size written by this version.
pub const MAX_CHUNK: u32 = 64 * 1024;
/// The smallest average chunk size, for files under 8 MiB.
pub const SMALL_AVG_CHUNK: u32 = 4 * 1024;

/// The first 8 bytes of every index.
pub const MAGIC: &[u8; 8] = b"BVCINDEX";
/// The format version this code writes and reads.
pub const VERSION: u16 = 1;
/// Bytes before the first chunk entry.
pub const HEADER_LEN: usize = 8 + 2 + 2 + 4 * 4 + 8 + 8;
/// Bytes of one chunk entry without its sub-hashes.
pub const ENTRY_LEN: usize = 4 + 32;
/// The sub-block size of the indexes `bootvault index` writes: the block of the filesystem
/// images boot sets are made of.
pub const SUB_BLOCK: u32 = 4096;
/// The largest index a store downloads or reads: 1.8 million chunks, a 30 GB file at the
/// default sizes (a bigger one is a mistake or an attack, not a boot image).
pub const MAX_INDEX_BYTES: u64 = 64 << 20;

pub use crate::error::IndexError;

/// Where a manifest says an asset's chunk index is: as trusted as the manifest (its digest is
/// part of what a signature covers), so a fetched index is used only when it hashes to `sha256`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexRef {
    /// Absolute URLs of the index, tried in order.
    pub urls: Vec<String>,
    /// SHA-256 of the index file.
    pub sha256: Sha256Digest,
}

impl IndexRef {
    /// The native manifest form.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"urls": self.urls, "sha256": self.sha256.to_hex()})
    }
}

/// One chunk: its length and digest (its offset is the sum of the lengths before it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Length in bytes (1..=max).
    pub len: u32,
    /// SHA-256 of the chunk's bytes.
    pub sha256: Sha256Digest,
}

/// The chunk index of one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkIndex {
    /// Minimum chunk size it was cut with.
    pub min: u32,
    /// Average chunk size it was cut with.
    pub avg: u32,
    /// Maximum chunk size it was cut with.
    pub max: u32,
    /// Sub-block size (0: no sub-hashes).
    pub block: u32,
    /// The chunks, in file order.
    pub chunks: Vec<Chunk>,
    /// The sub-hashes of every chunk's cells, in file order.
    pub blocks: Vec<[u8; 8]>,
}

/// The SHA-256 of a stream of buffers, computed on its own thread so that it overlaps the
/// caller's work (chunking and hashing each chunk; putting a patched file together): a file is
/// then read once and hashed twice in about the time of one hash.
pub struct BackgroundHash {
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    handle: Option<std::thread::JoinHandle<Sha256Digest>>,
}

impl BackgroundHash {
    /// Starts the hashing thread.
    pub fn start() -> BackgroundHash {
        // A few MiB in flight at most: the hash keeps up with the reads.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(64);
        let handle = std::thread::spawn(move || {
            let mut h = Sha256::new();
            for buf in rx {
                h.update(&buf);
            }
            Sha256Digest(h.finalize().into())
        });
        BackgroundHash {
            tx: Some(tx),
            handle: Some(handle),
        }
    }

    /// Hashes `buf` next.
    pub fn update(&mut self, buf: Vec<u8>) {
        if let Some(tx) = &self.tx
            && tx.send(buf).is_err()
        {
            // The thread is gone (it panicked): `finish` says so.
            self.tx = None;
        }
    }

    /// The digest of everything sent; `None` if the hashing thread failed.
    pub fn finish(mut self) -> Option<Sha256Digest> {
        drop(self.tx.take());
        self.handle.take()?.join().ok()
    }
}

impl Drop for BackgroundHash {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The first 8 bytes of the SHA-256 of `bytes`: a sub-hash.
pub fn sub_hash(bytes: &[u8]) -> [u8; 8] {
    let d = Sha256Digest::of(bytes);
    let mut out = [0u8; 8];
    out.copy_from_slice(&d.0[..8]);
    out
}

/// The cells `[start, end)` of the grid of `block` bytes that the chunk at `off` of `len` bytes
/// overlaps, clipped to the chunk (none when `block` is 0).
pub fn cells(off: u64, len: u32, block: u32) -> impl Iterator<Item = (u64, u64)> {
    let end = off + u64::from(len);
    let b = u64::from(block.max(1));
    let first = off / b;
    let n = if block == 0 || len == 0 {
        0
    } else {
        (end - 1) / b - first + 1
    };
    (0..n).map(move |i| {
        let cell = (first + i) * b;
        (cell.max(off), (cell + b).min(end))
    })
}

/// What chunking a file found besides its index.
#[derive(Debug)]
pub struct Chunked {
    /// The index.
    pub index: ChunkIndex,
    /// SHA-256 of the whole file (computed in the same pass).
    pub sha256: Sha256Digest,
}

impl ChunkIndex {
    /// The file size: the sum of the chunk lengths.
    pub fn total(&self) -> u64 {
        self.chunks.iter().map(|c| u64::from(c.len)).sum()
    }

    /// Whether `other` was cut with the same sizes (only then do equal bytes give equal chunks).
    pub fn same_params(&self, other: &ChunkIndex) -> bool {
        (self.min, self.avg, self.max) == (other.min, other.avg, other.max)
    }

    /// Each chunk with its offset.
    pub fn with_offsets(&self) -> impl Iterator<Item = (u64, &Chunk)> {
        self.chunks.iter().scan(0u64, |off, c| {
            let at = *off;
            *off += u64::from(c.len);
            Some((at, c))
        })
    }

    /// Each chunk with its offset and its sub-hashes.
    pub fn with_blocks(&self) -> impl Iterator<Item = (u64, &Chunk, &[[u8; 8]])> {
        let block = self.block;
        self.with_offsets().scan(0usize, move |at, (off, c)| {
            let n = cells(off, c.len, block).count();
            let hashes = self.blocks.get(*at..*at + n).unwrap_or(&[]);
            *at += n;
            Some((off, c, hashes))
        })
    }

    /// Cuts a file of `size` bytes with the sizes [`params_for`] picks for it, with sub-hashes
    /// of [`SUB_BLOCK`] cells (what `bootvault index` publishes).
    pub fn from_reader_sized(reader: impl Read, size: u64) -> std::io::Result<Chunked> {
        let (min, avg, max) = params_for(size);
        Self::from_reader_with(reader, min, avg, max, SUB_BLOCK)
    }

    /// Cuts what `reader` yields with the given sizes (those of an index being patched
    /// towards), hashing the whole stream as well. Sizes out of FastCDC's range are refused.
    pub fn from_reader_with(
        reader: impl Read,
        min: u32,
        avg: u32,
        max: u32,
        block: u32,
    ) -> std::io::Result<Chunked> {
        use fastcdc::v2020 as cdc;
        if !valid_params(min, avg, max) || !valid_block(block) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "chunk sizes out of range",
            ));
        }
        let mut whole = BackgroundHash::start();
        let mut chunks = Vec::new();
        let mut blocks = Vec::new();
        for item in cdc::StreamCDC::new(reader, min, avg, max) {
            let data = item.map_err(|e| match e {
                cdc::Error::IoError(io) => io,
                other => std::io::Error::other(other.to_string()),
            })?;
            for (a, b) in cells(data.offset, data.length as u32, block) {
                let (a, b) = ((a - data.offset) as usize, (b - data.offset) as usize);
                blocks.push(sub_hash(&data.data[a..b]));
            }
            chunks.push(Chunk {
                // StreamCDC never yields more than `max` (a u32) bytes.
                len: data.length as u32,
                sha256: Sha256Digest::of(&data.data),
            });
            whole.update(data.data);
        }
        Ok(Chunked {
            index: ChunkIndex {
                min,
                avg,
                max,
                block,
                chunks,
                blocks,
            },
            sha256: whole
                .finish()
                .ok_or_else(|| std::io::Error::other("the hashing thread failed"))?,
        })
    }

    /// The binary form (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.chunks.len() * ENTRY_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&self.min.to_le_bytes());
        out.extend_from_slice(&self.avg.to_le_bytes());
        out.extend_from_slice(&self.max.to_le_bytes());
        out.extend_from_slice(&self.block.to_le_bytes());
        out.extend_from_slice(&self.total().to_le_bytes());
        out.extend_from_slice(&(self.chunks.len() as u64).to_le_bytes());
        for (_, c, hashes) in self.with_blocks() {
            out.extend_from_slice(&c.len.to_le_bytes());
            out.extend_from_slice(&c.sha256.0);
            for h in hashes {
                out.extend_from_slice(h);
            }
        }
        out
    }

    /// Parses the binary form, checking every bound before allocating (see the module docs).
    pub fn decode(bytes: &[u8]) -> crate::error::Result<ChunkIndex> {
        Ok(ChunkIndex::parse(bytes)?)
    }

    /// [`ChunkIndex::decode`], with the typed kind of failure.
    fn parse(bytes: &[u8]) -> Result<ChunkIndex, IndexError> {
        if bytes.len() < HEADER_LEN {
            return Err(IndexError::Truncated {
                len: bytes.len(),
                needs: HEADER_LEN,
            });
        }
        let (head, body) = bytes.split_at(HEADER_LEN);
        if &head[..8] != MAGIC {
            return Err(IndexError::Magic);
        }
        let u16_at = |i: usize| u16::from_le_bytes([head[i], head[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes(head[i..i + 4].try_into().unwrap_or([0; 4]));
        let u64_at = |i: usize| u64::from_le_bytes(head[i..i + 8].try_into().unwrap_or([0; 8]));
        let version = u16_at(8);
        if version != VERSION {
            return Err(IndexError::Version {
                found: version,
                reads: VERSION,
            });
        }
        if u16_at(10) != 0 {
            return Err(IndexError::Header("reserved field is not zero"));
        }
        let (min, avg, max) = (u32_at(12), u32_at(16), u32_at(20));
        if !valid_params(min, avg, max) {
            return Err(IndexError::Header("chunk sizes out of range"));
        }
        let block = u32_at(24);
        if !valid_block(block) {
            return Err(IndexError::Header("sub-block size out of range"));
        }
        let total = u64_at(28);
        let count = u64_at(36);
        // Never allocate from the count unchecked: it is at most what the body can hold.
        if count > (body.len() / ENTRY_LEN) as u64 {
            return Err(IndexError::Header("chunk count does not match the length"));
        }
        let mut chunks = Vec::with_capacity(count as usize);
        let mut blocks = Vec::new();
        let mut sum = 0u64;
        let mut rest = body;
        for i in 0..count {
            let Some((e, tail)) = rest.split_at_checked(ENTRY_LEN) else {
                return Err(IndexError::Entry {
                    index: i,
                    why: "truncated",
                });
            };
            rest = tail;
            let i = i as usize;
            let len = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
            if len == 0 || len > max {
                return Err(IndexError::Entry {
                    index: i as u64,
                    why: "length is 0 or above the maximum chunk size",
                });
            }
            let off = sum;
            sum = sum.checked_add(u64::from(len)).ok_or(IndexError::Entry {
                index: i as u64,
                why: "lengths overflow",
            })?;
            let mut d = [0u8; 32];
            d.copy_from_slice(&e[4..]);
            chunks.push(Chunk {
                len,
                sha256: Sha256Digest(d),
            });
            // At most len / block + 2 cells, so this cannot overflow.
            let n = cells(off, len, block).count();
            let Some((hashes, tail)) = rest.split_at_checked(n * 8) else {
                return Err(IndexError::Entry {
                    index: i as u64,
                    why: "sub-hashes truncated",
                });
            };
            rest = tail;
            blocks.extend(hashes.chunks_exact(8).map(|h| {
                let mut a = [0u8; 8];
                a.copy_from_slice(h);
                a
            }));
        }
        if !rest.is_empty() {
            return Err(IndexError::Header("bytes after the last chunk"));
        }
        if sum != total {
            return Err(IndexError::Header("chunk lengths do not sum to the total"));
        }
        Ok(ChunkIndex {
            min,
            avg,
            max,
            block,
            chunks,
            blocks,
        })
    }
}

/// The chunk sizes for a file of `size` bytes: the average is about size / 2048, a power of two
/// between [`SMALL_AVG_CHUNK`] and [`AVG_CHUNK`]; min = avg / 4, max = avg * 4.
pub fn params_for(size: u64) -> (u32, u32, u32) {
    let want = (size / 2048).clamp(u64::from(SMALL_AVG_CHUNK), u64::from(AVG_CHUNK));
    // The largest power of two not above `want` (both bounds are powers of two).
    let avg = 1u32 << (63 - want.leading_zeros());
    // The same ratios as the largest sizes.
    (
        avg / (AVG_CHUNK / MIN_CHUNK),
        avg,
        avg * (MAX_CHUNK / AVG_CHUNK),
    )
}

/// Sub-block sizes an index may use: none (0), or a power of two from 512 B to 1 MiB.
pub fn valid_block(block: u32) -> bool {
    block == 0 || (block.is_power_of_two() && (512..=1 << 20).contains(&block))
}

/// The sizes FastCDC 2020 accepts (it panics outside them), ordered min <= avg <= max.
pub fn valid_params(min: u32, avg: u32, max: u32) -> bool {
    use fastcdc::v2020 as cdc;
    (cdc::MINIMUM_MIN..=cdc::MINIMUM_MAX).contains(&min)
        && (cdc::AVERAGE_MIN..=cdc::AVERAGE_MAX).contains(&avg)
        && (cdc::MAXIMUM_MIN..=cdc::MAXIMUM_MAX).contains(&max)
        && min <= avg
        && avg <= max
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn chunks_cover_the_file_and_hash_it() {
        let data = sample(300_000, 7);
        let c = ChunkIndex::from_reader_with(&data[..], MIN_CHUNK, AVG_CHUNK, MAX_CHUNK, SUB_BLOCK).unwrap();
        assert_eq!(c.index.total(), data.len() as u64);
        assert_eq!(c.sha256, Sha256Digest::of(&data));
        for (off, ch) in c.index.with_offsets() {
            let s = &data[off as usize..off as usize + ch.len as usize];
            assert_eq!(Sha256Digest::of(s), ch.sha256);
        }
        assert!(c.index.chunks.iter().all(|ch| ch.len <= MAX_CHUNK));
        // One sub-hash per 4 KiB cell of the file's grid, split where a chunk ends.
        for (off, ch, hashes) in c.index.with_blocks() {
            let cells: Vec<_> = cells(off, ch.len, SUB_BLOCK).collect();
            assert_eq!(cells.len(), hashes.len());
            for ((a, e), h) in cells.iter().zip(hashes) {
                assert_eq!(sub_hash(&data[*a as usize..*e as usize]), *h);
                assert!(a / 4096 == (e - 1) / 4096);
            }
        }
    }

    #[test]
    fn an_insertion_keeps_most_chunks() {
        let old = sample(1 << 20, 9);
        let mut new = old.clone();
        new.splice(400_000..400_000, sample(1000, 3));
        let a = ChunkIndex::from_reader_with(&old[..], MIN_CHUNK, AVG_CHUNK, MAX_CHUNK, SUB_BLOCK).unwrap().index;
        let b = ChunkIndex::from_reader_with(&new[..], MIN_CHUNK, AVG_CHUNK, MAX_CHUNK, SUB_BLOCK).unwrap().index;
        let have: std::collections::HashSet<_> = a.chunks.iter().map(|c| c.sha256).collect();
        let reused: u64 = b
            .chunks
            .iter()
            .filter(|c| have.contains(&c.sha256))
            .map(|c| u64::from(c.len))
            .sum();
        // Only the chunks around the insertion differ.
        assert!(reused > new.len() as u64 - 4 * u64::from(MAX_CHUNK), "{reused}");
    }

    #[test]
    fn decode_refuses_lies() {
        let idx = ChunkIndex::from_reader_with(&sample(100_000, 1)[..], MIN_CHUNK, AVG_CHUNK, MAX_CHUNK, SUB_BLOCK).unwrap().index;
        let good = idx.encode();
        assert_eq!(ChunkIndex::decode(&good).unwrap(), idx);
        assert_eq!(
            ChunkIndex::parse(&good[..10]),
            Err(IndexError::Truncated { len: 10, needs: HEADER_LEN })
        );
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(ChunkIndex::parse(&bad), Err(IndexError::Magic));
        let mut bad = good.clone();
        bad[36..44].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(ChunkIndex::parse(&bad), Err(IndexError::Header(_))));
        let mut bad = good.clone();
        bad[28] ^= 1;
        assert!(matches!(ChunkIndex::parse(&bad), Err(IndexError::Header(_))));
        let mut bad = good.clone();
        bad[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&0u32.to_le_bytes());
        assert!(matches!(ChunkIndex::parse(&bad), Err(IndexError::Entry { index: 0, .. })));
    }

    #[test]
    fn the_committed_fuzz_seeds_decode_and_round_trip() {
        for seed in [
            &include_bytes!("../fuzz/seeds/chunk_index/two-chunks")[..],
            &include_bytes!("../fuzz/seeds/chunk_index/no-sub-blocks")[..],
            &include_bytes!("../fuzz/seeds/chunk_index/empty")[..],
        ] {
            let idx = ChunkIndex::decode(seed).unwrap();
            assert_eq!(idx.encode(), seed);
        }
    }

    #[test]
    fn sizes_follow_the_file_size() {
        assert_eq!(params_for(0), (1024, 4096, 16384));
        assert_eq!(params_for(10 << 20), (1024, 4096, 16384));
        assert_eq!(params_for(20 << 20), (2048, 8192, 32768));
        assert_eq!(params_for(400 << 20), (MIN_CHUNK, AVG_CHUNK, MAX_CHUNK));
        let (min, avg, max) = params_for(u64::MAX);
        assert!(valid_params(min, avg, max));
    }

    proptest! {
        #[test]
        fn round_trip(
            lens in proptest::collection::vec(1u32..=MAX_CHUNK, 0..50),
            seed in any::<u8>(),
            block in prop_oneof![Just(0u32), Just(512u32), Just(SUB_BLOCK)],
        ) {
            let chunks: Vec<Chunk> = lens.iter().enumerate().map(|(i, &len)| Chunk {
                len,
                sha256: Sha256Digest([seed.wrapping_add(i as u8); 32]),
            }).collect();
            let mut off = 0u64;
            let mut blocks = Vec::new();
            for c in &chunks {
                for (j, _) in cells(off, c.len, block).enumerate() {
                    blocks.push([seed ^ j as u8; 8]);
                }
                off += u64::from(c.len);
            }
            let idx = ChunkIndex { min: MIN_CHUNK, avg: AVG_CHUNK, max: MAX_CHUNK, block, chunks, blocks };
            prop_assert_eq!(ChunkIndex::decode(&idx.encode()).unwrap(), idx);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(idx) = ChunkIndex::decode(&bytes) {
                prop_assert_eq!(idx.encode(), bytes);
            }
        }
    }
}
