//! Many small files, cold: 5,000 assets of ~6 KB (28 MiB in all) fetched into a fresh ROOT by
//! one prepare (hash as written, fsync, place, group-committed records), from
//! `file://` sources and from a C HTTP server on loopback (`busybox httpd`, when installed),
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

/// `busybox httpd` serving `dir` on a free loopback port; killed on drop.
struct Httpd {
    child: std::process::Child,
    port: u16,
}

impl Httpd {
    fn start(dir: &Path) -> Option<Httpd> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = Command::new("busybox")
            .args(["httpd", "-f", "-p", &format!("127.0.0.1:{port}"), "-h"])
            .arg(dir)
            .spawn()
            .ok()?;
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(Httpd { child, port });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Httpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bench_many(c: &mut Criterion) {
    let src = tempfile::tempdir().expect("source dir");
    let manifest = source_tree(src.path());
    let httpd = Httpd::start(src.path());
    if httpd.is_none() {
        eprintln!("busybox httpd not available: the HTTP case is skipped");
    }
    let http_manifest = httpd.as_ref().map(|h| {
        let mut m = manifest.clone();
        for a in &mut m.assets {
            a.urls = vec![format!("http://127.0.0.1:{}/{}", h.port, a.path)];
        }
        m
    });
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
    let cases = std::iter::once(("bootvault_prepare_file_5000x6KB", &manifest)).chain(
        http_manifest
            .iter()
            .map(|m| ("bootvault_prepare_httpd_5000x6KB", m)),
    );
    for (label, m) in cases {
        g.bench_function(label, |b| {
            b.iter_batched(
                fresh,
                |root| {
                    let report = Store::builder(root.path())
                        .open()
                        .expect("open")
                        .prepare(m)
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
    }
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
