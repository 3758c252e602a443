//! Fleet: 8 separate stores (8 "hosts") preparing the same set at once, from one loopback
//! `docker-registry` (oci://), from the same registry through a pull-through mirror, and from
//! a plain HTTP origin. Timed: the wall time until all 8 are done, fresh ROOTs every iteration
//! (and a fresh, cold mirror for the mirror case). Printed once per case: the bytes the origin
//! served for one round (counted by a TCP proxy in front of the registry, or by the origin).
//!
//! `cargo bench --bench fleet -- --warm-up-time 1 --measurement-time 3`
//! (needs /usr/bin/docker-registry: `apt-get install -y docker-registry`)

use bootvault::FetchOptions;
use bootvault::oci::{OciOptions, PublishBlob, Reference};
use bootvault::{Manifest, Outcome, Store};
use bootvault_testkit::origin::Origin;
use bootvault_testkit::proxy::Proxy;
use bootvault_testkit::registry::{Registry, RegistryAuth};
use criterion::{Criterion, criterion_group, criterion_main};
use std::time::{Duration, Instant};

const HOSTS: usize = 8;
const ASSETS: usize = 8;
const ASSET_BYTES: usize = 2 * 1024 * 1024;

struct Set {
    manifest_json: String,
    bodies: Vec<(String, Vec<u8>)>,
}

/// The set (paths and bodies) with `url(path)` as each asset's source.
fn set_with(bodies: &[(String, Vec<u8>)], url: impl Fn(&str) -> String) -> Set {
    let assets: Vec<serde_json::Value> = bodies
        .iter()
        .map(|(path, b)| {
            serde_json::json!({
                "name": path.replace('/', "-"),
                "path": path,
                "sha256": bootvault::Sha256Digest::of(b).to_hex(),
                "size": b.len(),
                "urls": [url(path)],
            })
        })
        .collect();
    Set {
        manifest_json: serde_json::json!({"version": "fleet-bench", "assets": assets}).to_string(),
        bodies: bodies.to_vec(),
    }
}

/// All hosts prepare at once, each its own store; returns the wall time.
fn fleet_round(manifest: &Manifest, oci: &OciOptions) -> Duration {
    let roots: Vec<tempfile::TempDir> = (0..HOSTS)
        .map(|_| {
            tempfile::Builder::new()
                .prefix("bootvault-bench-fleet-")
                .tempdir()
                .expect("temp ROOT")
        })
        .collect();
    let start = Instant::now();
    std::thread::scope(|s| {
        for root in &roots {
            s.spawn(|| {
                let store = Store::builder(root.path())
                    .jobs(4)
                    .fetch_options({
                        let mut o = FetchOptions::default();
                        o.oci = oci.clone();
                        o
                    })
                    .open()
                    .expect("open");
                let report = store.prepare(manifest).expect("prepare");
                for a in &report.assets {
                    assert_eq!(a.outcome(), Some(Outcome::Downloaded), "{a:?}");
                }
            });
        }
    });
    start.elapsed()
}

fn bench_fleet(c: &mut Criterion) {
    assert!(
        Registry::available(),
        "docker-registry is not installed (apt-get install -y docker-registry)"
    );
    let bodies: Vec<(String, Vec<u8>)> = (0..ASSETS)
        .map(|i| {
            (
                format!("boot/asset{i}.img"),
                bootvault_testkit::demo::pseudo_random(500 + i as u64, ASSET_BYTES).to_vec(),
            )
        })
        .collect();
    let total = (ASSETS * ASSET_BYTES) as u64;

    // Plain HTTP origin.
    let origin = Origin::start().expect("origin");
    for (p, b) in &bodies {
        origin.add(p, b.clone().into());
    }
    let http = set_with(&bodies, |p| origin.url(p));
    let http_manifest = Manifest::from_json_str(&http.manifest_json).expect("manifest");

    // The registry, with a counting proxy in front: the proxy is "the origin" hosts pull from.
    let registry = Registry::start(RegistryAuth::Anonymous).expect("registry");
    let src = tempfile::tempdir().expect("src");
    let blobs: Vec<PublishBlob> = bodies
        .iter()
        .map(|(p, b)| {
            let file = src.path().join(p.replace('/', "-"));
            std::fs::write(&file, b).expect("write");
            PublishBlob {
                name: p.replace('/', "-"),
                path: p.clone(),
                file,
                sha256: bootvault::Sha256Digest::of(b),
                size: Some(b.len() as u64),
                mount_from: None,
            }
        })
        .collect();
    let target = Reference::parse(&format!("oci://{}/fleet/boot:bench", registry.host()))
        .expect("reference");
    bootvault::oci::publish(
        &FetchOptions::default(),
        &target,
        http.manifest_json.as_bytes(),
        "fleet-bench",
        None,
        &blobs,
        &|_, _, _| {},
    )
    .expect("publish");
    let front = Proxy::start(registry.addr()).expect("proxy");
    let oci_set = set_with(&http.bodies, |_| {
        format!("oci://{}/fleet/boot", front.host())
    });
    let oci_manifest = Manifest::from_json_str(&oci_set.manifest_json).expect("manifest");

    // One round of each outside timing, to report what the origin served.
    let before = origin_bytes(&origin, &bodies);
    let t = fleet_round(&http_manifest, &OciOptions::default());
    report("http", origin_bytes(&origin, &bodies) - before, total, t);
    let before = front.bytes_down();
    let t = fleet_round(&oci_manifest, &OciOptions::default());
    report("oci", front.bytes_down() - before, total, t);
    let mirror_opts = |m: &Registry| OciOptions {
        mirrors: vec![(front.host(), m.host())],
        ..OciOptions::default()
    };
    {
        let mirror = Registry::start_mirror(&format!("http://{}", front.host())).expect("mirror");
        let before = front.bytes_down();
        let t = fleet_round(&oci_manifest, &mirror_opts(&mirror));
        report("oci via cold mirror", front.bytes_down() - before, total, t);
        let before = front.bytes_down();
        let t = fleet_round(&oci_manifest, &mirror_opts(&mirror));
        report("oci via warm mirror", front.bytes_down() - before, total, t);
    }

    let mut g = c.benchmark_group("fleet_8_hosts");
    g.sample_size(10);
    g.bench_function("http_origin", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| fleet_round(&http_manifest, &OciOptions::default()))
                .sum()
        })
    });
    g.bench_function("oci_registry", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| fleet_round(&oci_manifest, &OciOptions::default()))
                .sum()
        })
    });
    g.bench_function("oci_cold_mirror", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    // A fresh mirror per round (started outside the timed part).
                    let mirror = Registry::start_mirror(&format!("http://{}", front.host()))
                        .expect("mirror");
                    fleet_round(&oci_manifest, &mirror_opts(&mirror))
                })
                .sum()
        })
    });
    g.finish();
}

fn origin_bytes(origin: &Origin, bodies: &[(String, Vec<u8>)]) -> u64 {
    bodies.iter().map(|(p, _)| origin.bytes_served(p)).sum()
}

fn report(case: &str, served: u64, total: u64, t: Duration) {
    eprintln!(
        "fleet {HOSTS} hosts, {case:<20}: origin served {:>6.1} MiB ({:.2}x the set of {:.0} MiB), wall {:>7.1} ms",
        served as f64 / 1048576.0,
        served as f64 / total as f64,
        total as f64 / 1048576.0,
        t.as_secs_f64() * 1e3
    );
}

criterion_group!(benches, bench_fleet);
criterion_main!(benches);
