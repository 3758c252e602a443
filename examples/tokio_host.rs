//! A tokio host: one `Store` shared by tasks, a prepare per VM launch with its own progress,
//! and a launch the user abandons (its future is dropped) without blocking the runtime.
//!
//! `cargo run --example tokio_host`: serves a small set from a loopback origin, prepares it
//! from two tasks at once, then starts a slow download and drops it after 300 ms; the next
//! prepare resumes the partial instead of starting over.

use bootvault::{Outcome, PrepareOptions, Progress, ProgressFn, Store};
use bootvault_testkit::demo::{DemoAsset, manifest, pseudo_random};
use bootvault_testkit::origin::{Fault, Origin};
use std::sync::Arc;
use std::time::Duration;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let origin = Origin::start()?;
    let set: Vec<DemoAsset> = (0..4)
        .map(|i| DemoAsset {
            name: format!("bin{i}"),
            path: format!("bin/bin{i}"),
            bytes: pseudo_random(i, 256 << 10).into(),
            verify: bootvault::Policy::Cached,
            mode: Some(0o555),
        })
        .collect();
    for a in &set {
        origin.add(&a.path, a.bytes.clone());
    }
    let m = manifest(&set, "2026.11.0", |a| Some(origin.url(&a.path)));
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path())?;

    // Two launches at once share one store; each asset is downloaded once.
    let (a, b) = tokio::join!(
        store.prepare_async(&m, PrepareOptions::new()),
        store.prepare_async(&m, PrepareOptions::new())
    );
    for report in [a?, b?] {
        let outcomes: Vec<Outcome> = report.assets.iter().filter_map(|x| x.outcome()).collect();
        println!("launch: {outcomes:?}");
    }

    // A slow rootfs; the user quits after 300 ms: dropping the future cancels the prepare.
    let rootfs = DemoAsset {
        name: "rootfs".into(),
        path: "rootfs.erofs".into(),
        bytes: pseudo_random(9, 4 << 20).into(),
        verify: bootvault::Policy::Cached,
        mode: None,
    };
    origin.add(&rootfs.path, rootfs.bytes.clone());
    origin.set_fault(
        &rootfs.path,
        Fault {
            bytes_per_sec: Some(2 << 20),
            ..Fault::default()
        },
    );
    let m2 = manifest(std::slice::from_ref(&rootfs), "2026.11.1", |a| {
        Some(origin.url(&a.path))
    });
    let progress: ProgressFn = Arc::new(|p: &Progress<'_>| {
        if let Progress::Downloading { name, done, total } = p {
            eprint!("\r{name}: {done} of {total:?} bytes   ");
        }
    });
    let abandoned = tokio::time::timeout(
        Duration::from_millis(300),
        store.prepare_async(&m2, PrepareOptions::new().progress(progress)),
    )
    .await;
    eprintln!();
    println!("abandoned: {}", abandoned.is_err());
    origin.clear_fault(&rootfs.path);
    let resumed = store.prepare_async(&m2, PrepareOptions::new()).await?;
    let r = &resumed.assets[0];
    println!(
        "resumed: {:?}, {} of {} bytes downloaded this time",
        r.outcome(),
        r.bytes_downloaded,
        rootfs.bytes.len()
    );
    Ok(())
}
