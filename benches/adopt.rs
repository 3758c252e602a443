//! Adopting files bootvault did not place (the first prepare of an existing install: correct
//! files, no ledger record), side by side with the bare hash of the same bytes, in one run:
//!
//! - `adopt_512MiB`: one 512 MiB file. `lease` is the default way on Linux (a read lease proves
//!   no writer holds the file, so it is hashed in place); `copy` forces the fresh-inode copy
//!   that applies where no lease or reflink does; `bare_hash` is `digest::hash_path`.
//! - `adopt_4x128MiB`: four 128 MiB files with `--jobs 1` and `--jobs 2`.
//!
//! The files stay in the page cache; before each iteration the state dir is removed (outside
//! timing), so every prepare starts with no record. Each iteration checks the outcome.
//!
//! `cargo bench --bench adopt`

use bootvault::digest::hash_path;
use bootvault::{Manifest, Outcome, Policy, Store};
use bootvault_testkit::demo::{self, DemoAsset};
use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

const MIB: usize = 1024 * 1024;

fn install(root: &Path, sizes: &[usize]) -> Manifest {
    let set: Vec<DemoAsset> = sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| DemoAsset {
            name: format!("a{i}"),
            path: format!("a{i}"),
            bytes: demo::pseudo_random(100 + i as u64, size).into(),
            verify: Policy::Cached,
            mode: None,
        })
        .collect();
    demo::write_all(root, &set).expect("write the install");
    for a in &set {
        std::fs::File::open(root.join(&a.path))
            .and_then(|f| f.sync_all())
            .expect("fsync");
    }
    demo::manifest(&set, "adopt", |_| None)
}

fn forget(root: &Path) {
    let state = root.join(".bootvault");
    if state.exists() {
        std::fs::remove_dir_all(&state).expect("remove state dir");
    }
}

fn prepare(root: &Path, m: &Manifest, jobs: usize, by_copy: bool) {
    let report = Store::builder(root)
        .jobs(jobs)
        .adopt_by_copy(by_copy)
        .open()
        .expect("open")
        .prepare(m)
        .expect("prepare");
    assert!(
        report
            .assets
            .iter()
            .all(|a| a.outcome() == Some(Outcome::Verified)),
        "not every asset was adopted: {report:?}"
    );
}

fn bench_adopt(c: &mut Criterion) {
    let root = tempfile::Builder::new()
        .prefix("bootvault-bench-adopt-")
        .tempdir()
        .expect("temp ROOT");
    let m = install(root.path(), &[512 * MIB]);
    let file = root.path().join("a0");
    let mut g = c.benchmark_group("adopt_512MiB");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Bytes(512 * MIB as u64));
    g.bench_function("bare_hash", |b| {
        b.iter(|| black_box(hash_path(&file).expect("hash")))
    });
    for (label, by_copy) in [("lease", false), ("copy", true)] {
        g.bench_function(label, |b| {
            b.iter_batched(
                || forget(root.path()),
                |()| prepare(root.path(), &m, 1, by_copy),
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
    drop(root);

    let root = tempfile::Builder::new()
        .prefix("bootvault-bench-adopt4-")
        .tempdir()
        .expect("temp ROOT");
    let m = install(root.path(), &[128 * MIB; 4]);
    let mut g = c.benchmark_group("adopt_4x128MiB");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Bytes(512 * MIB as u64));
    for jobs in [1, 2] {
        g.bench_function(format!("jobs_{jobs}"), |b| {
            b.iter_batched(
                || forget(root.path()),
                |()| prepare(root.path(), &m, jobs, false),
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench_adopt);
criterion_main!(benches);
