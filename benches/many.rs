//! Many small files, cold: 5,000 assets of ~6 KB (28 MiB in all) copied from `file://` sources
//! into a fresh ROOT by one prepare (hash as written, fsync, place, group-committed records),
//! side by side with `cp -r` of the same tree followed by `sync`, in the same run.
//!
//! `cargo bench --bench many` (a fresh ROOT per iteration, created and removed outside timing;
//! every iteration is checked to have downloaded all 5,000 assets).

use bootvault::{Manifest, Outcome, Policy, Store};
use bootvault_testkit::demo::{self, DemoAsset};
use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const COUNT: usize = 5_000;
const SIZE: usize = 6_000;

fn source_tree(dir: &Path) -> Manifest {
    let set: Vec<DemoAsset> = (0..COUNT)
        .map(|i| DemoAsset {
            name: format!("f{i:05}"),
            path: format!("d{:02}/f{i:05}", i / 100),
            bytes: demo::pseudo_random(i as u64, SIZE).into(),
            verify: Policy::Cached,
            mode: None,
        })
        .collect();
    demo::write_all(dir, &set).expect("write the source tree");
    demo::manifest(&set, "many", |a| {
        Some(format!("file://{}", dir.join(&a.path).display()))
    })
}

fn sync() {
    let ok = Command::new("sync").status().expect("sync").success();
    assert!(ok, "sync failed");
}

fn bench_many(c: &mut Criterion) {
    let src = tempfile::tempdir().expect("source dir");
    let manifest = source_tree(src.path());
    let fresh = || {
        tempfile::Builder::new()
            .prefix("bootvault-bench-many-")
            .tempdir()
            .expect("temp ROOT")
    };
    let mut g = c.benchmark_group("many_small_cold");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(30))
        .throughput(Throughput::Elements(COUNT as u64));
    g.bench_function("bootvault_prepare_5000x6KB", |b| {
        b.iter_batched(
            fresh,
            |root| {
                let report = Store::builder(root.path())
                    .open()
                    .expect("open")
                    .prepare(&manifest)
                    .expect("prepare");
                assert!(
                    report
                        .assets
                        .iter()
                        .all(|a| a.outcome() == Some(Outcome::Downloaded)),
                    "not every asset was downloaded"
                );
                root
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("cp_r_then_sync_5000x6KB", |b| {
        b.iter_batched(
            fresh,
            |root| {
                let dest = root.path().join("tree");
                let ok = Command::new("cp")
                    .arg("-r")
                    .arg(src.path())
                    .arg(&dest)
                    .status()
                    .expect("cp")
                    .success();
                assert!(ok, "cp -r failed");
                sync();
                root
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_many);
criterion_main!(benches);
