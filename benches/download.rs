//! Cold prepare of one 256 MiB asset from a loopback `Origin`: download, hash as written,
//! fsync, place atomically, settle and record. A fresh ROOT every iteration (created and
//! removed outside timing); each iteration is checked to have downloaded the asset.
//!
//! `cargo bench --bench download`

use bootvault::fetch::FetchOptions;
use bootvault::{Manifest, Outcome, Policy, Store};
use bootvault_testkit::demo::{self, DemoAsset};
use bootvault_testkit::origin::{Fault, Origin};
use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use std::time::Duration;

const ASSET_BYTES: usize = 256 * 1024 * 1024;

/// A loopback origin serving one `size`-byte rootfs, and the manifest that names it.
fn served_rootfs(size: usize, seed: u64) -> (Origin, Manifest) {
    let asset = DemoAsset {
        name: "rootfs".into(),
        path: "rootfs.erofs".into(),
        bytes: demo::pseudo_random(seed, size).into(),
        verify: Policy::Cached,
        mode: None,
    };
    let origin = Origin::start().expect("origin");
    origin.add(&asset.path, asset.bytes.clone());
    let manifest = demo::manifest(&[asset], "bench", |a| Some(origin.url(&a.path)));
    (origin, manifest)
}

/// A prepare by a store freshly opened on `root`, as a new process would do it.
fn prepare_in(root: &tempfile::TempDir, manifest: &Manifest) -> bootvault::Report {
    Store::builder(root.path())
        .open()
        .expect("open")
        .prepare(manifest)
        .expect("prepare")
}

fn bench_download(c: &mut Criterion) {
    let (_origin, manifest) = served_rootfs(ASSET_BYTES, 3);

    // Once, outside timing: the prepare downloads every byte and records the asset.
    {
        let root = tempfile::tempdir().expect("temp ROOT");
        let store = Store::builder(root.path()).open().expect("open");
        let report = store.prepare(&manifest).expect("prepare");
        let a = &report.assets[0];
        assert_eq!(a.outcome(), Some(Outcome::Downloaded), "{a:?}");
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
                assert_eq!(report.assets[0].outcome(), Some(Outcome::Downloaded));
                // The TempDir goes back to criterion, so its removal is not timed.
                (root, report)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// Resuming a 1 GiB download cut at 90% against downloading it whole, side by side. The cut
/// is made outside timing (the origin aborts the body after 90%; with no retries the prepare
/// fails and keeps its partial and SHA-256 checkpoint); the timed prepare resumes with Range.
fn bench_resume(c: &mut Criterion) {
    const SIZE: usize = 1 << 30;
    let cut = SIZE as u64 / 10 * 9;
    let (origin, manifest) = served_rootfs(SIZE, 4);
    let fresh_root = || {
        tempfile::Builder::new()
            .prefix("bootvault-bench-resume-")
            .tempdir()
            .expect("temp ROOT")
    };
    let cut_at_90 = || {
        let root = fresh_root();
        origin.set_fault(
            "rootfs.erofs",
            Fault {
                cut_after: Some(cut),
                cut_times: 1,
                ..Fault::default()
            },
        );
        let mut no_retry = FetchOptions::default();
        no_retry.retries = 0;
        let store = Store::builder(root.path())
            .fetch_options(no_retry)
            .open()
            .expect("open");
        let report = store.prepare(&manifest).expect("prepare");
        assert!(report.failed(), "the cut must fail the first prepare");
        origin.clear_fault("rootfs.erofs");
        root
    };

    let mut g = c.benchmark_group("resume_1GiB");
    g.sample_size(10);
    g.sampling_mode(SamplingMode::Flat);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(20));
    g.bench_function("full_download", |b| {
        b.iter_batched(
            fresh_root,
            |root| {
                let report = prepare_in(&root, &manifest);
                assert_eq!(report.assets[0].outcome(), Some(Outcome::Downloaded));
                (root, report)
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("resume_from_90pct", |b| {
        b.iter_batched(
            cut_at_90,
            |root| {
                let report = prepare_in(&root, &manifest);
                let a = &report.assets[0];
                assert_eq!(a.outcome(), Some(Outcome::Downloaded));
                // Only the missing tenth crosses the wire, and the prefix is not re-read.
                assert_eq!(a.bytes_downloaded, SIZE as u64 - cut, "{a:?}");
                assert_eq!(a.bytes_hashed, SIZE as u64 - cut, "{a:?}");
                (root, report)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_download, bench_resume);
criterion_main!(benches);
