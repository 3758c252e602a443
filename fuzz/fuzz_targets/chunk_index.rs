//! Chunk indexes as downloaded from a CDN or registry (checked against the manifest digest, but
//! the decoder must hold even for a signed mistake): decoding never panics nor allocates from
//! an unchecked count, and whatever decodes re-encodes to the same bytes.
#![no_main]

use bootvault::chunk_index::{self, ChunkIndex};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = ChunkIndex::decode(data) {
        assert_eq!(index.encode(), data, "chunk index round trip");
        let sum: u64 = index.with_offsets().map(|(_, c)| u64::from(c.len)).sum();
        assert_eq!(index.total(), sum);
        // Every chunk has exactly its cells' sub-hashes.
        let cells: usize = index
            .with_offsets()
            .map(|(off, c)| chunk_index::cells(off, c.len, index.block).count())
            .sum();
        assert_eq!(cells, index.blocks.len());
    }
});
