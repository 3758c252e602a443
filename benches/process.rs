//! The warm CLI process against the process floor, side by side in one run: an all-cached
//! `bootvault prepare` of 20 assets against `bootvault --version` (same binary: loader, clap,
//! runtime start-up). What the prepare adds is parsing the manifest, one read transaction and
//! 20 `lstat`s; anything else (a signal thread, a runtime, a client) belongs to steps that work.
//!
//! Needs the release binary: `cargo build --release -p bootvault-cli && cargo bench --bench
//! process` (or `BOOTVAULT_BIN=/path/to/bootvault`).
//!
//! Also, in process (`cargo bench --bench process -- manifest_parse`, the binary built all
//! the same): parsing the native manifest of 20 and of 10,000 assets, the typed fast path of
//! `Manifest::parse` side by side with the `Value` walk it falls back to.

use bootvault::Policy;
use bootvault_testkit::demo::{self, DemoAsset};
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn bin() -> PathBuf {
    std::env::var_os("BOOTVAULT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/bootvault")
        })
}

fn run(cmd: &mut Command) {
    let ok = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run bootvault (build it: cargo build --release -p bootvault-cli)")
        .success();
    assert!(ok, "{cmd:?} failed");
}

fn bench_process(c: &mut Criterion) {
    let root = tempfile::Builder::new()
        .prefix("bootvault-bench-process-")
        .tempdir()
        .expect("temp ROOT");
    let mfile = demo::write_small_set(root.path(), 20, 300, "process").expect("write the set");
    let bin = bin();
    let prepare = || {
        let mut c = Command::new(&bin);
        c.arg("prepare")
            .arg("--dir")
            .arg(root.path())
            .arg("--manifest")
            .arg(&mfile);
        c
    };
    // Adopt once, outside timing; from then on every prepare is all `cached`.
    run(&mut prepare());
    let mut g = c.benchmark_group("warm_process_20");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(200)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    g.bench_function("bootvault_version", |b| {
        b.iter(|| run(Command::new(&bin).arg("--version")))
    });
    g.bench_function("bootvault_prepare_all_cached", |b| {
        b.iter(|| run(&mut prepare()))
    });
    g.finish();
}

/// The native manifest text of `n` assets, as a warm prepare reads it.
fn manifest_text(n: usize) -> String {
    let set: Vec<DemoAsset> = (0..n)
        .map(|i| DemoAsset {
            name: format!("bin{i:05}"),
            path: format!("d{:03}/f{i:05}", i / 100),
            bytes: format!("{i}").into_bytes().into(),
            verify: Policy::Cached,
            mode: None,
        })
        .collect();
    demo::manifest(&set, "process", |_| None)
        .to_json()
        .to_string()
}

fn bench_parse(c: &mut Criterion) {
    use bootvault::manifest::{parse_fast, parse_slow};
    use bootvault::{Manifest, ParseOptions};
    let opts = ParseOptions::default();
    for n in [20, 10_000] {
        let text = manifest_text(n);
        let slow = parse_slow(&text, "m.json", &opts).expect("valid");
        assert_eq!(
            parse_fast(&text, &opts).as_ref(),
            Some(&slow),
            "fast path taken"
        );
        let mut g = c.benchmark_group(format!("manifest_parse_{n}"));
        g.throughput(criterion::Throughput::Elements(n as u64));
        g.bench_function("parse", |b| {
            b.iter(|| Manifest::parse(&text, "m.json", &opts).unwrap())
        });
        g.bench_function("fast_path", |b| {
            b.iter(|| parse_fast(&text, &opts).unwrap())
        });
        g.bench_function("slow_path_value_walk", |b| {
            b.iter(|| parse_slow(&text, "m.json", &opts).unwrap())
        });
        g.finish();
    }
}

criterion_group!(benches, bench_process, bench_parse);
criterion_main!(benches);
