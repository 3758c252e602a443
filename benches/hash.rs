//! SHA-256 throughput of `digest::hash_reader` over a 256 MiB file (in the page cache) at
//! several read buffer sizes; `HASH_BUF` (256 KiB) was chosen from this.
//!
//! `in_memory` hashes the same bytes from memory: the ceiling, with no read syscalls at all.
//!
//! With `BOOTVAULT_BENCH_FILE=/path/to/file` set, also times `digest::hash_path` on that file
//! (`hash_path/hash_512MiB`), for comparison with `openssl dgst -sha256` on the same file.
//!
//! `cargo bench --bench hash`

use bootvault::digest::{HASH_BUF, Sha256Digest, hash_path, hash_reader};
use bootvault_testkit::demo::pseudo_random;
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use std::hint::black_box;
use std::io::Write;
use std::time::Duration;

const FILE_BYTES: usize = 256 * 1024 * 1024;
const KIB: usize = 1024;
const BUFFERS: [usize; 4] = [64 * KIB, 256 * KIB, 1024 * KIB, 4096 * KIB];

fn label(buf: usize) -> String {
    if buf >= 1024 * KIB {
        format!("{}MiB", buf / (1024 * KIB))
    } else {
        format!("{}KiB", buf / KIB)
    }
}

fn bench_buffers(c: &mut Criterion) {
    let data = pseudo_random(7, FILE_BYTES);
    let expected = Sha256Digest::of(&data);
    let mut file = tempfile::Builder::new()
        .prefix("bootvault-bench-hash-")
        .tempfile()
        .expect("temp file");
    file.write_all(&data).expect("write");
    file.flush().expect("flush");
    let path = file.path().to_path_buf();
    // Once, outside timing: every buffer size gives the right digest (and warms the cache).
    for buf in BUFFERS {
        let f = std::fs::File::open(&path).expect("open");
        let (d, n) = hash_reader(f, buf, |_| {}).expect("hash");
        assert_eq!((d, n), (expected, FILE_BYTES as u64), "buffer {buf}");
    }

    let mut g = c.benchmark_group("hash_256MiB_file");
    g.throughput(Throughput::Bytes(FILE_BYTES as u64));
    g.sample_size(10);
    g.sampling_mode(SamplingMode::Flat);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(5));
    for buf in BUFFERS {
        let id = if buf == HASH_BUF {
            format!("{}_HASH_BUF", label(buf))
        } else {
            label(buf)
        };
        g.bench_with_input(BenchmarkId::new("hash_reader", id), &buf, |b, &buf| {
            b.iter(|| {
                let f = std::fs::File::open(&path).expect("open");
                black_box(hash_reader(f, buf, |_| {}).expect("hash"))
            })
        });
    }
    g.bench_function("in_memory", |b| {
        b.iter(|| black_box(Sha256Digest::of(black_box(&data))))
    });
    g.finish();
    drop(data);

    if let Some(p) = std::env::var_os("BOOTVAULT_BENCH_FILE") {
        let p = std::path::PathBuf::from(p);
        let len = std::fs::metadata(&p)
            .expect("BOOTVAULT_BENCH_FILE: stat")
            .len();
        let mut g = c.benchmark_group("hash_path");
        g.throughput(Throughput::Bytes(len));
        g.sample_size(10);
        g.sampling_mode(SamplingMode::Flat);
        g.warm_up_time(Duration::from_secs(1));
        g.measurement_time(Duration::from_secs(7));
        g.bench_function("hash_512MiB", |b| {
            b.iter(|| black_box(hash_path(&p).expect("hash_path")))
        });
        g.finish();
    }
}

criterion_group!(benches, bench_buffers);
criterion_main!(benches);
