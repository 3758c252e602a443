//! Warm prepare of the 20 demo runtime binaries (about 230 MB), side by side with the floor
//! (bare stats), the ceiling (re-hash everything) and arcbox-boot 0.5.2's `.verified.json`
//! cache, re-implemented here faithfully (see `legacy` below).
//!
//! Setup, outside any timing: write the set to a temp ROOT once, prepare until every asset is
//! `cached` (the first prepare hashes; a record taken in the filesystem clock tick of the write
//! is racy and is not trusted, so prepare again until the ledger vouches for all of them), and
//! run the legacy cache's cold path once so its `.verified.json` is populated.
//!
//! Every timed bootvault iteration is checked to be all-cached (the flag is computed in the
//! loop and asserted after the clock stops), so the figures are of the warm path only. The
//! legacy iterations are checked the same way (all 20 trusted, nothing re-hashed, no save).
//!
//! `cargo bench --bench warm` (about one minute once built).
//!
//! With `BOOTVAULT_BENCH_EXPORT=DIR`, the fixture also writes the same 20 files under `DIR/root`
//! and their native manifest to `DIR/manifest.json`, for whole-process timing of the CLI
//! (`bootvault prepare --dir DIR/root --manifest DIR/manifest.json`). Combine it with a filter
//! (`cargo bench --bench warm -- stat_floor`) to skip the other figures.

use bootvault::Policy;
use bootvault::digest::{HASH_BUF, hash_reader};
use bootvault::{Manifest, Store};
use bootvault_testkit::demo::{self, DemoAsset};
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Total size of the 20 binaries, as in arcbox's runtime set.
const TOTAL_BYTES: u64 = 230_000_000;

/// A re-implementation of arcbox-boot 0.5.2's `src/verify_cache.rs` (PR 25) and of the way
/// `prepare_binaries` drives it: load `.verified.json` from the bin dir once per call, then per
/// binary build `dest_dir.join(name)`, look its path string up, compare the expected digest
/// string, `metadata` (following symlinks) the file and compare size + mtime (secs, nanos);
/// fall back to a full hash on a miss and `record`; `save` at the end only when dirty.
///
/// Two drivers: `prepare_sync` (plain std calls: a lower bound for this design) and
/// `prepare_tokio` (`tokio::fs` as 0.5.2 does, each call a hand-off to the blocking pool).
mod legacy {
    use bootvault::digest::{HASH_BUF, hash_reader};
    use serde::{Deserialize, Serialize};
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};

    pub const CACHE_FILE_NAME: &str = ".verified.json";

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    struct Entry {
        sha256: String,
        size: u64,
        mtime_secs: u64,
        mtime_nanos: u32,
    }

    #[derive(Debug, Default, Serialize, Deserialize)]
    struct CacheFile {
        entries: HashMap<String, Entry>,
    }

    pub struct VerifyCache {
        file: CacheFile,
        path: PathBuf,
        dirty: bool,
    }

    /// One binary of the manifest: name (file name under the bin dir) and expected digest.
    pub struct Binary {
        pub name: String,
        pub sha256: String,
    }

    /// What one call did.
    #[derive(Debug, Default, PartialEq, Eq)]
    pub struct Outcome {
        pub cached: usize,
        pub hashed: usize,
        pub saved: bool,
    }

    fn key(path: &Path) -> String {
        path.to_string_lossy().into_owned()
    }

    fn signature_of(m: &std::fs::Metadata) -> Option<(u64, u64, u32)> {
        let since_epoch = m
            .modified()
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?;
        Some((m.len(), since_epoch.as_secs(), since_epoch.subsec_nanos()))
    }

    fn sha256_file(path: &Path) -> Option<String> {
        let f = std::fs::File::open(path).ok()?;
        hash_reader(f, HASH_BUF, |_| {})
            .ok()
            .map(|(d, _)| d.to_hex())
    }

    impl VerifyCache {
        fn from_bytes(path: PathBuf, bytes: Option<Vec<u8>>) -> Self {
            let file = match bytes {
                Some(b) => serde_json::from_slice(&b).unwrap_or_default(),
                None => CacheFile::default(),
            };
            VerifyCache {
                file,
                path,
                dirty: false,
            }
        }

        fn matches(&self, path: &Path, expected: &str, sig: Option<(u64, u64, u32)>) -> bool {
            let Some(entry) = self.file.entries.get(&key(path)) else {
                return false;
            };
            if entry.sha256 != expected {
                return false;
            }
            match sig {
                Some((size, secs, nanos)) => {
                    entry.size == size && entry.mtime_secs == secs && entry.mtime_nanos == nanos
                }
                None => false,
            }
        }

        fn record_sig(&mut self, path: &Path, sha256: &str, sig: Option<(u64, u64, u32)>) {
            let Some((size, mtime_secs, mtime_nanos)) = sig else {
                return;
            };
            let entry = Entry {
                sha256: sha256.to_string(),
                size,
                mtime_secs,
                mtime_nanos,
            };
            if self.file.entries.get(&key(path)) != Some(&entry) {
                self.file.entries.insert(key(path), entry);
                self.dirty = true;
            }
        }

        fn bytes_to_save(&self) -> Option<(Vec<u8>, PathBuf)> {
            if !self.dirty {
                return None;
            }
            let bytes = serde_json::to_vec_pretty(&self.file).ok()?;
            Some((bytes, self.path.with_extension("json.tmp")))
        }
    }

    /// The warm check with std calls.
    pub fn prepare_sync(dest_dir: &Path, binaries: &[Binary]) -> Outcome {
        let path = dest_dir.join(CACHE_FILE_NAME);
        let bytes = std::fs::read(&path).ok();
        let mut cache = VerifyCache::from_bytes(path, bytes);
        let mut out = Outcome::default();
        for b in binaries {
            let dest_path = dest_dir.join(&b.name);
            let sig = std::fs::metadata(&dest_path)
                .ok()
                .and_then(|m| signature_of(&m));
            if cache.matches(&dest_path, &b.sha256, sig) {
                out.cached += 1;
                continue;
            }
            // Miss: full re-hash (0.5.2 downloads on a mismatch; here the files are right).
            out.hashed += 1;
            if sha256_file(&dest_path).as_deref() == Some(b.sha256.as_str()) {
                let sig = std::fs::metadata(&dest_path)
                    .ok()
                    .and_then(|m| signature_of(&m));
                cache.record_sig(&dest_path, &b.sha256, sig);
            }
        }
        if let Some((bytes, tmp)) = cache.bytes_to_save()
            && std::fs::write(&tmp, bytes).is_ok()
            && std::fs::rename(&tmp, &cache.path).is_ok()
        {
            cache.dirty = false;
            out.saved = true;
        }
        out
    }

    /// The warm check with `tokio::fs`, as arcbox-boot 0.5.2 runs it inside the host's runtime.
    pub async fn prepare_tokio(dest_dir: &Path, binaries: &[Binary]) -> Outcome {
        let path = dest_dir.join(CACHE_FILE_NAME);
        let bytes = tokio::fs::read(&path).await.ok();
        let mut cache = VerifyCache::from_bytes(path, bytes);
        let mut out = Outcome::default();
        for b in binaries {
            let dest_path = dest_dir.join(&b.name);
            let sig = tokio::fs::metadata(&dest_path)
                .await
                .ok()
                .and_then(|m| signature_of(&m));
            if cache.matches(&dest_path, &b.sha256, sig) {
                out.cached += 1;
                continue;
            }
            out.hashed += 1;
            let p = dest_path.clone();
            let digest = tokio::task::spawn_blocking(move || sha256_file(&p))
                .await
                .ok()
                .flatten();
            if digest.as_deref() == Some(b.sha256.as_str()) {
                let sig = tokio::fs::metadata(&dest_path)
                    .await
                    .ok()
                    .and_then(|m| signature_of(&m));
                cache.record_sig(&dest_path, &b.sha256, sig);
            }
        }
        if let Some((bytes, tmp)) = cache.bytes_to_save()
            && tokio::fs::write(&tmp, bytes).await.is_ok()
            && tokio::fs::rename(&tmp, &cache.path).await.is_ok()
        {
            cache.dirty = false;
            out.saved = true;
        }
        out
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    manifest: Manifest,
    /// Absolute paths of the 20 files.
    paths: Vec<PathBuf>,
    /// The legacy cache's bin dir and manifest view.
    bin_dir: PathBuf,
    binaries: Vec<legacy::Binary>,
}

fn fixture() -> Fixture {
    let set: Vec<DemoAsset> = demo::binaries(TOTAL_BYTES);
    let total: usize = set.iter().map(|a| a.bytes.len()).sum();
    // On the same filesystem as the real target (TMPDIR, ext4 here), not tmpfs if avoidable.
    let dir = tempfile::Builder::new()
        .prefix("bootvault-bench-warm-")
        .tempdir()
        .expect("temp ROOT");
    let root = std::path::absolute(dir.path()).expect("absolute ROOT");
    demo::write_all(&root, &set).expect("write demo set");
    let manifest = demo::manifest(&set, "bench", |_| None);
    if let Some(out) = std::env::var_os("BOOTVAULT_BENCH_EXPORT") {
        let out = PathBuf::from(out);
        demo::write_all(&out.join("root"), &set).expect("export: write set");
        let json = serde_json::to_string(&manifest.to_json()).expect("export: manifest");
        std::fs::write(out.join("manifest.json"), json).expect("export: write manifest");
        eprintln!("exported the set to {}", out.display());
    }
    let paths: Vec<PathBuf> = set.iter().map(|a| root.join(&a.path)).collect();

    // Cold prepare(s) until the ledger vouches for every asset.
    let store = Store::builder(&root).open().expect("open store");
    let t = Instant::now();
    let mut rounds = 0;
    loop {
        let report = store.prepare(&manifest).expect("prepare");
        assert!(!report.failed(), "cold prepare failed: {:?}", report.assets);
        rounds += 1;
        if report.all_cached() {
            break;
        }
        assert!(rounds < 20, "store never became all-cached");
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "warm fixture: {} assets, {total} bytes under {}; all cached after {rounds} prepares ({:?})",
        set.len(),
        root.display(),
        t.elapsed()
    );

    // arcbox-boot 0.5.2 keeps its cache in the bin dir (dest_dir), keyed by absolute path.
    let bin_dir = root.join("bin");
    let binaries: Vec<legacy::Binary> = manifest
        .assets
        .iter()
        .map(|a| legacy::Binary {
            name: Path::new(&a.path)
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned(),
            sha256: a.sha256.to_hex(),
        })
        .collect();
    let cold = legacy::prepare_sync(&bin_dir, &binaries);
    assert_eq!(
        (cold.cached, cold.hashed, cold.saved),
        (0, 20, true),
        "legacy cold path"
    );
    let warm = legacy::prepare_sync(&bin_dir, &binaries);
    assert_eq!(
        warm,
        legacy::Outcome {
            cached: 20,
            hashed: 0,
            saved: false
        },
        "legacy warm path"
    );

    Fixture {
        _dir: dir,
        root,
        manifest,
        paths,
        bin_dir,
        binaries,
    }
}

/// Runs `iteration` `iters` times and returns the time spent in it; every iteration must
/// report success (all assets trusted, digests equal), or the bench fails after timing.
fn timed(iters: u64, what: &str, mut iteration: impl FnMut() -> bool) -> Duration {
    let mut spent = Duration::ZERO;
    let mut ok = true;
    for _ in 0..iters {
        let t = Instant::now();
        let good = iteration();
        spent += t.elapsed();
        ok &= good;
    }
    assert!(ok, "{what}");
    spent
}

fn bench_warm(c: &mut Criterion) {
    let fx = fixture();
    let expected: Vec<_> = fx.manifest.assets.iter().map(|a| a.sha256).collect();

    let mut g = c.benchmark_group("warm_prepare_20_assets_230MB");
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(3));

    g.bench_function("stat_floor", |b| {
        b.iter(|| {
            for p in &fx.paths {
                black_box(std::fs::symlink_metadata(black_box(p)).expect("stat"));
            }
        })
    });

    // About 150 ms an iteration: few, flat samples.
    g.sample_size(10);
    g.sampling_mode(SamplingMode::Flat);
    g.measurement_time(Duration::from_secs(4));
    g.bench_function("full_rehash", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                "full_rehash: a digest did not match the manifest",
                || {
                    let digests: Vec<_> = fx
                        .paths
                        .iter()
                        .map(|p| {
                            let f = std::fs::File::open(p).expect("open");
                            hash_reader(f, HASH_BUF, |_| {}).expect("hash").0
                        })
                        .collect();
                    digests == expected
                },
            )
        })
    });
    g.sample_size(100);
    g.sampling_mode(SamplingMode::Auto);
    g.measurement_time(Duration::from_secs(3));

    g.bench_function("json_cache_0_5_2", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                "json_cache_0_5_2: an iteration was not all-cached",
                || {
                    let out = legacy::prepare_sync(&fx.bin_dir, &fx.binaries);
                    out.cached == 20 && out.hashed == 0 && !out.saved
                },
            )
        })
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    // About 0.4 ms an iteration: a little more time for 100 samples.
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("json_cache_0_5_2_tokio", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                "json_cache_0_5_2_tokio: an iteration was not all-cached",
                || {
                    let out = rt.block_on(legacy::prepare_tokio(&fx.bin_dir, &fx.binaries));
                    out.cached == 20 && out.hashed == 0 && !out.saved
                },
            )
        })
    });
    drop(rt);
    g.measurement_time(Duration::from_secs(3));

    g.bench_function("bootvault_open_per_call", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                "bootvault_open_per_call: an iteration was not all-cached",
                || {
                    let store = Store::builder(&fx.root).open().expect("open");
                    let report = store.prepare(&fx.manifest).expect("prepare");
                    let cached = report.all_cached();
                    drop(report);
                    drop(store);
                    cached
                },
            )
        })
    });

    let store = Store::builder(&fx.root).open().expect("open");
    g.bench_function("bootvault_long_lived", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                "bootvault_long_lived: an iteration was not all-cached",
                || {
                    let report = store.prepare(&fx.manifest).expect("prepare");
                    let cached = report.all_cached();
                    drop(report);
                    cached
                },
            )
        })
    });
    g.finish();
}

/// The trust tiers of SECURITY.md on the same warm 20-asset set, side by side: `cached`
/// (stamp), `always` (content hash of every asset), and the verity tier as it runs where the
/// filesystem has no fs-verity (this machine): the stamp check plus, per asset, the open and
/// `FS_IOC_MEASURE_VERITY` that a verity record would add, which fails here, so trust falls
/// back to the stamp.
fn bench_tiers(c: &mut Criterion) {
    use bootvault::verity::{Support, measure, probe};
    let fx = fixture();
    let mut g = c.benchmark_group("tiers_20_assets_230MB");
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(3));
    let cached = Store::builder(&fx.root).open().expect("open");
    assert!(cached.prepare(&fx.manifest).expect("prepare").all_cached());
    g.bench_function("cached", |b| {
        b.iter(|| {
            let report = cached.prepare(&fx.manifest).expect("prepare");
            assert!(report.all_cached());
            report
        })
    });
    let always = Store::builder(&fx.root)
        .verify(Some(Policy::Always))
        .open()
        .expect("open");
    g.sample_size(10);
    g.bench_function("always", |b| {
        b.iter(|| {
            let report = always.prepare(&fx.manifest).expect("prepare");
            assert!(
                report
                    .assets
                    .iter()
                    .all(|a| a.outcome() == Some(bootvault::Outcome::Verified))
            );
            report
        })
    });
    let available = probe(&fx.root) == Support::Available;
    eprintln!(
        "fs-verity on this filesystem: {}",
        if available {
            "available"
        } else {
            "unavailable (fallback measured)"
        }
    );
    g.sample_size(100);
    g.bench_function("verity_fallback", |b| {
        b.iter(|| {
            let report = cached.prepare(&fx.manifest).expect("prepare");
            let measured = fx
                .paths
                .iter()
                .filter_map(|p| std::fs::File::open(p).ok())
                .filter(|f| measure(f).is_some())
                .count();
            assert!(report.all_cached());
            assert_eq!(measured > 0, available);
            report
        })
    });
    g.finish();
}

criterion_group!(benches, bench_warm, bench_tiers);
criterion_main!(benches);
