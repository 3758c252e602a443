//! SHA-256 throughput of `digest::hash_reader` over a 256 MiB file (in the page cache) at
//! several read buffer sizes; `HASH_BUF` (256 KiB) was chosen from this.
//!
//! `in_memory` hashes the same bytes from memory: the ceiling, with no read syscalls at all.
//!
//! `vs_openssl`: `digest::hash_path` (what `debug verify` and an adoption run per file) side by
//! side with the whole process `openssl dgst -sha256` on the same 512 MiB file, in the same run,
//! on the file in the page cache (`cached`) and dropped from it before every iteration
//! (`uncached`: `posix_fadvise(DONTNEED)` outside timing, so both read from disk). The
//! OpenSSL figure includes its process start (about 1 ms of 250+).
//!
//! With `BOOTVAULT_BENCH_FILE=/path/to/file` set, `vs_openssl` uses that file instead.
//!
//! `cargo bench --bench hash` (`cargo bench --bench hash -- vs_openssl` for the comparison)

use bootvault::digest::{HASH_BUF, Sha256Digest, hash_path, hash_reader};
use bootvault_testkit::demo::pseudo_random;
use criterion::{
    BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
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

    bench_vs_openssl(c);
}

/// Evicts `path` from the page cache (its pages are clean: written and synced before).
fn drop_cache(path: &std::path::Path) {
    let f = std::fs::File::open(path).expect("open");
    rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).expect("fadvise");
}

fn openssl(path: &std::path::Path) {
    let out = std::process::Command::new("openssl")
        .args(["dgst", "-sha256"])
        .arg(path)
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "openssl failed");
    black_box(out.stdout);
}

fn bench_vs_openssl(c: &mut Criterion) {
    const BIG: usize = 512 * 1024 * 1024;
    let owned;
    let path = match std::env::var_os("BOOTVAULT_BENCH_FILE") {
        Some(p) => std::path::PathBuf::from(p),
        None => {
            let mut f = tempfile::Builder::new()
                .prefix("bootvault-bench-hash512-")
                .tempfile()
                .expect("temp file");
            f.write_all(&pseudo_random(512, BIG)).expect("write");
            f.as_file().sync_all().expect("fsync");
            owned = f;
            owned.path().to_path_buf()
        }
    };
    let len = std::fs::metadata(&path).expect("stat").len();
    assert_eq!(hash_path(&path).expect("hash").1, len);
    for cached in [true, false] {
        let mut g = c.benchmark_group(if cached {
            "vs_openssl_cached"
        } else {
            "vs_openssl_uncached"
        });
        g.throughput(Throughput::Bytes(len));
        g.sample_size(10);
        g.sampling_mode(SamplingMode::Flat);
        g.warm_up_time(Duration::from_secs(1));
        g.measurement_time(Duration::from_secs(if cached { 8 } else { 20 }));
        let setup = || {
            if !cached {
                drop_cache(&path)
            }
        };
        g.bench_function("bootvault_hash_path", |b| {
            b.iter_batched(
                setup,
                |()| black_box(hash_path(&path).expect("hash_path")),
                BatchSize::PerIteration,
            )
        });
        g.bench_function("openssl_dgst_sha256", |b| {
            b.iter_batched(setup, |()| openssl(&path), BatchSize::PerIteration)
        });
        g.finish();
    }
}

criterion_group!(benches, bench_buffers);
criterion_main!(benches);
