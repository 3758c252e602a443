//! arcbox-boot 0.8's own `AssetManager` against bootvault's arcbox adapter, in one run, on the
//! same real-format set: x86_64 kernel (15 MB), rootfs (60 MB) and the 20 runtime binaries of a
//! real release (230 MB; `vmlinux` into `kernel/`, `mkfs.ext4`/`e2fsck` into `runtime/bin/`),
//! served by the loopback origin. Default policy on both sides.
//!
//! Setup, outside any timing: arcbox-boot installs the set (prepare + prepare_binaries), then
//! bootvault's adapter takes that install over in place (`migrate`, the operator's explicit
//! trust of both `.verified.json` files and the cached manifest; the switch is checked to read
//! and download nothing). Both then run warm on the very same files, each trusting its own
//! records.
//!
//! 1. `arcbox_warm_22_assets/*`: a warm `prepare` + `prepare_binaries`, as arcbox calls them at
//!    every start: arcbox-boot (async, on a multi-thread runtime, as arcbox runs it), bootvault's
//!    adapter through the same async API, and through its blocking API; and the floor, 22 bare
//!    `lstat`s of the same files. Every bootvault iteration is checked to be all-`cached`.
//! 2. The upgrade case, printed: a new version where 3 of the 22 assets changed (rootfs, dockerd,
//!    runc), bytes the origin served to arcbox-boot vs to bootvault.
//!
//! `cargo bench -p bootvault-arcbox --bench arcbox` (about a minute once built, most of it the 300 MB setup).
//!
//! With `BOOTVAULT_BENCH_EXPORT=DIR`, the switched install is kept under `DIR` and its CDN
//! copied to `DIR/cdn`, for whole-process timing of the CLI (the command is printed):
//! `bootvault arcbox prepare --cache-dir DIR/boot --bin-dir DIR/share/bin --version 0.6.0
//! --cdn file://DIR/cdn/ --state-dir DIR/state` (warm: the CDN is never read).

use arcbox_boot::asset_manager::{
    AssetManager as UpstreamManager, AssetManagerConfig as UpstreamConfig,
};
use bootvault::Outcome;
use bootvault_arcbox::asset_manager::{AssetManager, AssetManagerConfig};
use bootvault_testkit::arcbox_set::{self, Kind, SetFile};
use bootvault_testkit::origin::Origin;
use criterion::{Criterion, criterion_group, criterion_main};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const V: &str = "0.6.0";
const NEXT: &str = "0.6.1";
const KERNEL: usize = 15_000_000;
const ROOTFS: usize = 60_000_000;
const BINARIES: u64 = 230_000_000;
const CHANGED: [&str; 3] = ["rootfs", "dockerd", "runc"];

use arcbox_set::upstream_manifest;

/// Publishes `version` on `origin` (and under `mirror`, when exporting); returns the set.
fn publish(
    origin: &Origin,
    version: &str,
    changed: &[&str],
    mirror: Option<&Path>,
) -> Vec<SetFile> {
    let files = arcbox_set::files(version, KERNEL, ROOTFS, BINARIES, changed);
    let text = serde_json::to_vec_pretty(&upstream_manifest(version, &files)).unwrap();
    let manifest_path = format!("asset/v{version}/manifest.json");
    for (path, body) in files
        .iter()
        .map(|f| (f.cdn_path.as_str(), f.bytes.clone()))
        .chain([(manifest_path.as_str(), text.into())])
    {
        origin.add(path, body.clone());
        if let Some(dir) = mirror {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, &body).unwrap();
        }
    }
    files
}

fn served(origin: &Origin, version: &str, files: &[SetFile]) -> u64 {
    files
        .iter()
        .map(|f| origin.bytes_served(&f.cdn_path))
        .sum::<u64>()
        + origin.bytes_served(&format!("asset/v{version}/manifest.json"))
}

struct Host {
    cache: PathBuf,
    bin: PathBuf,
    state: PathBuf,
}

impl Host {
    fn at(dir: &Path) -> Host {
        Host {
            cache: dir.join("boot"),
            bin: dir.join("share").join("bin"),
            state: dir.join("state"),
        }
    }
    fn upstream(&self, origin: &Origin, version: &str) -> UpstreamManager {
        UpstreamManager::new(UpstreamConfig {
            cdn_base_url: origin.base_url(),
            version: version.into(),
            arch: "x86_64".into(),
            cache_dir: self.cache.clone(),
            custom_kernel: None,
        })
        .unwrap()
    }
    fn bootvault(&self, origin: &Origin, version: &str) -> AssetManager {
        AssetManager::new(AssetManagerConfig {
            cdn_base_url: origin.base_url(),
            version: version.into(),
            arch: "x86_64".into(),
            cache_dir: self.cache.clone(),
            custom_kernel: None,
        })
        .unwrap()
        .with_state_dir(&self.state)
    }
}

/// Returns (all cached, bytes hashed, bytes downloaded) of a blocking adapter run.
fn adapter_run(m: &AssetManager, bin: &Path) -> (bool, u64, u64) {
    let (_, mut s) = m.prepare_blocking(None).unwrap();
    s.extend(m.prepare_binaries_blocking(bin, None).unwrap());
    (
        s.len() == 22 && s.iter().all(|a| a.outcome == Outcome::Cached),
        s.iter().map(|a| a.bytes_hashed).sum(),
        s.iter().map(|a| a.bytes_downloaded).sum(),
    )
}

fn median_us(mut f: impl FnMut(), n: usize) -> f64 {
    let mut t: Vec<f64> = (0..n)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[n / 2]
}

fn bench_arcbox(c: &mut Criterion) {
    let export = std::env::var_os("BOOTVAULT_BENCH_EXPORT").map(PathBuf::from);
    let tmp = tempfile::tempdir().unwrap();
    let dir = export.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let mirror = export.as_ref().map(|d| d.join("cdn"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let origin = Origin::start().unwrap();
    let files = publish(&origin, V, &[], mirror.as_deref());
    let total: u64 = files
        .iter()
        .filter(|f| f.arch == "x86_64")
        .map(|f| f.bytes.len() as u64)
        .sum();

    // arcbox-boot installs the set, then bootvault switches that install in place.
    let host = Host::at(&dir);
    let up = host.upstream(&origin, V);
    rt.block_on(async {
        up.prepare(None).await.unwrap();
        up.prepare_binaries(&host.bin, None).await.unwrap();
    });
    let before = origin.total_requests();
    let bv = host.bootvault(&origin, V);
    let switch = Instant::now();
    bv.migrate(&host.bin).unwrap();
    let (all_cached, hashed, downloaded) = adapter_run(&bv, &host.bin);
    let switch = switch.elapsed();
    assert!(all_cached && hashed == 0 && downloaded == 0);
    assert_eq!(origin.total_requests(), before);
    eprintln!(
        "switch of arcbox-boot's install ({:.1} MB, 22 assets): all cached, {hashed} B hashed, \
         {downloaded} B downloaded, no request, {:.2} ms",
        total as f64 / 1e6,
        switch.as_secs_f64() * 1e3
    );

    let mut g = c.benchmark_group("arcbox_warm_22_assets");
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("arcbox_boot_0.8", |b| {
        b.iter(|| {
            rt.block_on(async {
                let p = up.prepare(None).await.unwrap();
                up.prepare_binaries(&host.bin, None).await.unwrap();
                p
            })
        })
    });
    let paths: Vec<PathBuf> = files
        .iter()
        .filter(|f| f.arch == "x86_64")
        .map(|f| match (f.kind, &f.install_dir) {
            (Kind::Kernel, _) => host.cache.join(V).join("kernel"),
            (Kind::Rootfs, _) => host.cache.join(V).join("rootfs.erofs"),
            (Kind::Binary, None) => host.bin.join(&f.name),
            (Kind::Binary, Some(d)) => host.bin.parent().unwrap().join(d).join(&f.name),
        })
        .collect();
    assert_eq!(paths.len(), 22);
    g.bench_function("lstat_22_floor", |b| {
        b.iter(|| {
            for p in &paths {
                std::hint::black_box(std::fs::symlink_metadata(p).unwrap());
            }
        })
    });
    g.bench_function("bootvault_async", |b| {
        b.iter(|| {
            rt.block_on(async {
                let p = bv.prepare(None).await.unwrap();
                bv.prepare_binaries(&host.bin, None).await.unwrap();
                p
            })
        })
    });
    let mut warm = true;
    g.bench_function("bootvault_blocking", |b| {
        b.iter(|| {
            let (c, h, d) = adapter_run(&bv, &host.bin);
            warm &= c && h == 0 && d == 0;
        })
    });
    g.finish();
    assert!(warm, "a timed bootvault iteration was not all cached");

    // The ratio, from interleaved medians in this same process.
    let n = 300;
    let t_up = median_us(
        || {
            rt.block_on(async {
                up.prepare(None).await.unwrap();
                up.prepare_binaries(&host.bin, None).await.unwrap();
            })
        },
        n,
    );
    let t_async = median_us(
        || {
            rt.block_on(async {
                bv.prepare(None).await.unwrap();
                bv.prepare_binaries(&host.bin, None).await.unwrap();
            })
        },
        n,
    );
    let t_block = median_us(
        || {
            adapter_run(&bv, &host.bin);
        },
        n,
    );
    let t_stat = median_us(
        || {
            for p in &paths {
                std::hint::black_box(std::fs::symlink_metadata(p).unwrap());
            }
        },
        n,
    );
    eprintln!(
        "warm prepare + prepare_binaries, median of {n}: arcbox-boot 0.8 {t_up:.1} us, \
         bootvault async {t_async:.1} us ({:.1}x faster, {:.2}x the {t_stat:.1} us of 22 lstats), \
         blocking {t_block:.1} us ({:.1}x faster)",
        t_up / t_async,
        t_async / t_stat,
        t_up / t_block
    );
    // The switch without `migrate`: nothing in the share vouches, so every file is hashed
    // once (in a state dir of its own). Last on this install: hashing may give files fresh
    // inodes, which the warm benches above would then re-hash.
    let unmigrated = AssetManager::new(AssetManagerConfig {
        cdn_base_url: origin.base_url(),
        version: V.into(),
        arch: "x86_64".into(),
        cache_dir: host.cache.clone(),
        custom_kernel: None,
    })
    .unwrap()
    .with_state_dir(dir.join("state-unmigrated"));
    let t = Instant::now();
    let (_, mut st) = unmigrated.prepare_blocking(None).unwrap();
    st.extend(
        unmigrated
            .prepare_binaries_blocking(&host.bin, None)
            .unwrap(),
    );
    let t = t.elapsed();
    let hashed: u64 = st.iter().map(|a| a.bytes_hashed).sum();
    let fetched: u64 = st.iter().map(|a| a.bytes_downloaded).sum();
    assert!(st.iter().all(|a| a.outcome == Outcome::Verified) && fetched == 0);
    eprintln!(
        "switch without migrate: every asset verified, {:.1} MB hashed, 0 B downloaded, {:.3} s",
        hashed as f64 / 1e6,
        t.as_secs_f64()
    );

    if let Some(d) = &export {
        eprintln!(
            "exported; whole process: bootvault arcbox prepare --cache-dir {0}/boot --bin-dir \
             {0}/share/bin --version {V} --arch x86_64 --cdn file://{0}/cdn/ --state-dir {0}/state",
            d.display()
        );
        return;
    }

    // The upgrade: 3 of 22 assets changed. arcbox-boot on its install, bootvault on a second
    // install of its own (made by the adapter), same origin.
    let next = publish(&origin, NEXT, &CHANGED, None);
    let changed_bytes: u64 = next
        .iter()
        .filter(|f| CHANGED.contains(&f.name.as_str()))
        .map(|f| f.bytes.len() as u64)
        .sum();
    let s0 = served(&origin, NEXT, &next);
    let up_next = host.upstream(&origin, NEXT);
    rt.block_on(async {
        up_next.prepare(None).await.unwrap();
        up_next.prepare_binaries(&host.bin, None).await.unwrap();
    });
    let up_bytes = served(&origin, NEXT, &next) - s0;

    let tmp2 = tempfile::tempdir().unwrap();
    let host2 = Host::at(tmp2.path());
    adapter_run(&host2.bootvault(&origin, V), &host2.bin);
    let s1 = served(&origin, NEXT, &next);
    let bv_next = host2.bootvault(&origin, NEXT);
    let (_, mut st) = bv_next.prepare_blocking(None).unwrap();
    st.extend(bv_next.prepare_binaries_blocking(&host2.bin, None).unwrap());
    let bv_bytes = served(&origin, NEXT, &next) - s1;
    let outcomes: Vec<String> = st
        .iter()
        .filter(|a| a.outcome != Outcome::Cached)
        .map(|a| format!("{} {}", a.name, a.outcome.as_str()))
        .collect();
    eprintln!(
        "upgrade {V} -> {NEXT}, 3 of 22 changed ({:.1} MB): arcbox-boot fetched {:.1} MB, \
         bootvault fetched {:.1} MB ({:.2}x the changed bytes); not cached: {}",
        changed_bytes as f64 / 1e6,
        up_bytes as f64 / 1e6,
        bv_bytes as f64 / 1e6,
        bv_bytes as f64 / changed_bytes as f64,
        outcomes.join(", ")
    );
}

criterion_group!(benches, bench_arcbox);
criterion_main!(benches);
