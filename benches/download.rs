//! Cold prepare of one 256 MiB asset from a loopback `Origin`: download, hash as written,
//! fsync, place atomically, settle and record. A fresh ROOT every iteration (created and
//! removed outside timing); each iteration is checked to have downloaded the asset.
//!
//! `cargo bench --bench download`

use bootvault::demo::{self, DemoAsset};
use bootvault::origin::Origin;
use bootvault::{Outcome, Policy, Store};
use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use std::time::Duration;

const ASSET_BYTES: usize = 256 * 1024 * 1024;

fn bench_download(c: &mut Criterion) {
    let asset = DemoAsset {
        name: "rootfs".into(),
        path: "rootfs.erofs".into(),
        bytes: demo::pseudo_random(3, ASSET_BYTES).into(),
        verify: Policy::Cached,
        mode: None,
    };
    let origin = Origin::start().expect("origin");
    origin.add(&asset.path, asset.bytes.clone());
    let set = vec![asset];
    let manifest = demo::manifest(&set, "bench", |a| Some(origin.url(&a.path)));
    drop(set);

    // Once, outside timing: the prepare downloads every byte and records the asset.
    {
        let root = tempfile::tempdir().expect("temp ROOT");
        let store = Store::builder(root.path()).open().expect("open");
        let report = store.prepare(&manifest).expect("prepare");
        let a = &report.assets[0];
        assert_eq!(a.outcome, Some(Outcome::Downloaded), "{a:?}");
        assert_eq!(a.bytes_downloaded, ASSET_BYTES as u64);
        assert!(store.prepare(&manifest).expect("prepare").all_cached());
    }

    let fresh_root = || {
        tempfile::Builder::new()
            .prefix("bootvault-bench-download-")
            .tempdir()
            .expect("temp ROOT")
    };

    let mut g = c.benchmark_group("download_256MiB");
    g.throughput(Throughput::Bytes(ASSET_BYTES as u64));
    g.sample_size(10);
    g.sampling_mode(SamplingMode::Flat);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("prepare_fresh_root", |b| {
        b.iter_batched(
            fresh_root,
            |root| {
                let store = Store::builder(root.path()).open().expect("open");
                let report = store.prepare(&manifest).expect("prepare");
                // A branch on a 100 ms operation: checked in the loop, every iteration.
                assert_eq!(report.assets[0].outcome, Some(Outcome::Downloaded));
                // The TempDir goes back to criterion, so its removal is not timed.
                (root, report)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_download);
criterion_main!(benches);
