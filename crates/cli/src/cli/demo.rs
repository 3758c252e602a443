//! `bootvault demo`: cold download from a loopback origin, warm `cached`, a tamper with mtime
//! put back, the repair, and an upgrade whose rootfs is patched from the old one (delta). No
//! network: the origin runs in this process on 127.0.0.1.
//!
//! The data and the origin come from the test kit, linked only with the cargo feature `demo`
//! (a default one). Without it the subcommand still parses (same `--help`, completions and man
//! pages) but refuses to run: a packaged binary links no web server. Every `cfg` of that
//! feature is in this file, but for one on the progress bars' `restart` (the demo's alone).

use super::{CmdResult, Failure};
use clap::Args;
use std::path::PathBuf;
#[cfg(feature = "demo")]
use {
    super::progress::Bars,
    super::ui::{human_bytes, human_duration, ui},
    super::{EXIT_FAILED, finish_output, out},
    bootvault::{Outcome, Store},
    bootvault_testkit::origin::Origin,
};

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Store root to use (default: a new directory under the system's temp dir, kept and
    /// named at the end so it can be inspected with `bootvault debug`). Not BOOTVAULT_DIR:
    /// the demo tampers with a file, so it never picks up the real store by accident.
    #[arg(long, value_name = "ROOT", env = "BOOTVAULT_DEMO_DIR")]
    dir: Option<PathBuf>,
    /// State directory.
    #[arg(long, value_name = "DIR", env = "BOOTVAULT_DEMO_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Megabytes of runtime binaries to generate.
    #[arg(long, default_value_t = 230, env = "BOOTVAULT_DEMO_BINARIES_MB")]
    binaries_mb: u64,
}

/// A build without the `demo` feature: one line on stderr saying why, exit 2 (as any
/// invocation this binary cannot carry out).
#[cfg(not(feature = "demo"))]
pub fn run(a: DemoArgs) -> CmdResult {
    let DemoArgs {
        dir: _,
        state_dir: _,
        binaries_mb: _,
    } = a;
    Err(not_built())
}

/// The refusal of a build without the `demo` feature.
#[cfg(any(test, not(feature = "demo")))]
fn not_built() -> Failure {
    Failure::usage(
        "this build has no demo: it was built without the cargo feature `demo` (a packaged \
         binary links no web server); run it from the source tree with \
         `cargo run --release -- demo`",
    )
}

#[cfg(feature = "demo")]
pub fn run(a: DemoArgs) -> CmdResult {
    let root = match &a.dir {
        Some(d) => d.clone(),
        // Kept on purpose: the closing lines name it and how to look inside.
        None => tempfile::Builder::new()
            .prefix("bootvault-demo-")
            .tempdir()?
            .keep()
            .join("store"),
    };
    std::fs::create_dir_all(&root)?;
    let set = bootvault_testkit::demo::asset_set(a.binaries_mb * 1_000_000, 14 << 20, 48 << 20);
    let origin = Origin::start()?;
    let version = "2026.11.0";
    for asset in &set {
        origin.add(&format!("v{version}/{}", asset.path), asset.bytes.clone());
    }
    let manifest = bootvault_testkit::demo::manifest(&set, version, |x| {
        Some(origin.url(&format!("v{version}/{}", x.path)))
    });
    let total: u64 = set.iter().map(|x| x.bytes.len() as u64).sum();
    let mut text = format!(
        "bootvault demo: {} assets ({}) served by a loopback origin at {}\nstore: {}\n",
        set.len(),
        human_bytes(total),
        origin.base_url(),
        root.display()
    );
    let bars = ui().progress.then(|| Bars::new(set.len() as u64, "demo"));
    let open = || {
        let mut b = Store::builder(&root);
        if let Some(s) = &a.state_dir {
            b = b.state_dir(s);
        }
        if let Some(bars) = &bars {
            b = b.progress(bars.callback());
        }
        b.open()
    };
    let mut steps: Vec<(String, bootvault::Report, bool)> = Vec::new();
    let mut step =
        |title: &str, expect: &dyn Fn(&bootvault::AssetReport) -> bool| -> Result<(), Failure> {
            if let Some(bars) = &bars {
                bars.restart(&format!("step {}", steps.len() + 1));
            }
            // A fresh Store per step, as a fresh process would open it.
            let report = open()?.prepare(&manifest)?;
            let ok = report.assets.iter().all(expect);
            steps.push((title.to_string(), report, ok));
            Ok(())
        };
    step(
        "cold: every asset fetched and hashed in the same pass",
        &|r| r.outcome() == Some(Outcome::Downloaded),
    )?;
    step(
        "warm: binaries cached from their stamps; kernel and rootfs re-hashed (verify: always)",
        &|r| {
            r.outcome()
                == Some(if r.name == "kernel" || r.name == "rootfs" {
                    Outcome::Verified
                } else {
                    Outcome::Cached
                })
        },
    )?;
    // Tamper: same size, different bytes, mtime put back: ctime still moves.
    let victim = root.join("bin/runc");
    let before = std::fs::metadata(&victim)?;
    let mut bytes = std::fs::read(&victim)?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    let mut perms = before.permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&victim, perms)?;
    std::fs::write(&victim, &bytes)?;
    filetime::set_file_mtime(
        &victim,
        filetime::FileTime::from_last_modification_time(&before),
    )?;
    let downloads_before = origin.requests(&format!("v{version}/bin/runc"));
    step(
        "tamper: bin/runc rewritten with its mtime put back, then prepared",
        &|r| {
            if r.name == "runc" {
                r.outcome() == Some(Outcome::Repaired)
            } else {
                r.outcome() != Some(Outcome::Repaired)
            }
        },
    )?;
    let refetched = origin.requests(&format!("v{version}/bin/runc")) - downloads_before;
    step("warm again", &|r| {
        r.outcome().is_some() && r.outcome() != Some(Outcome::Repaired)
    })?;
    // Upgrade: a new rootfs that differs from the old one in a few places (three rewritten
    // regions, one insertion), published with its chunk index: patched from the old rootfs.
    let (manifest2, rootfs_size) = upgraded_manifest(&origin, &manifest, &set)?;
    if let Some(bars) = &bars {
        bars.restart(&format!("step {}", steps.len() + 1));
    }
    let before = origin.bytes_served("v2026.12.0/rootfs.erofs");
    let report = open()?.prepare(&manifest2)?;
    let served = origin.bytes_served("v2026.12.0/rootfs.erofs");
    let ok = report.assets.iter().all(|r| match r.name.as_str() {
        "rootfs" => r.outcome() == Some(Outcome::Patched),
        _ => r.outcome().is_some(),
    });
    steps.push((
        "upgrade to 2026.12.0: a rootfs with a few changed regions, patched from the old one"
            .to_string(),
        report,
        ok,
    ));
    if let Some(bars) = bars {
        bars.finish();
    }
    text.push_str(&steps_table(&steps));
    text.push_str(&format!(
        "
the upgraded rootfs ({}) was rebuilt from the old one: the origin served {} of it
",
        human_bytes(rootfs_size),
        human_bytes(served - before)
    ));
    text.push_str(&format!(
        "\nthe tampered runc was detected by its ctime and re-fetched {refetched} time(s); origin served {} requests in all\n",
        origin.total_requests()
    ));
    text.push_str(&format!(
        "store kept at {}: try `bootvault debug ls --dir {}`{}\n",
        root.display(),
        root.display(),
        match &a.dir {
            Some(_) => String::new(),
            None => format!(
                ", remove it with `rm -r {}`",
                root.parent().unwrap_or(&root).display()
            ),
        }
    ));
    let failed = steps.iter().any(|(_, _, ok)| !ok);
    if failed {
        text.push_str("demo: some steps did not go as expected (see UNEXPECTED above)\n");
    }
    finish_output(out(&text), if failed { EXIT_FAILED } else { 0 })
}

/// The next release: the same set, but a rootfs with three regions rewritten and 4 KB inserted,
/// served with its chunk index (written by the library's `write_index`, as `bootvault index`).
#[cfg(feature = "demo")]
fn upgraded_manifest(
    origin: &Origin,
    manifest: &bootvault::Manifest,
    set: &[bootvault_testkit::demo::DemoAsset],
) -> Result<(bootvault::Manifest, u64), Failure> {
    let version = "2026.12.0";
    let old = &set
        .iter()
        .find(|x| x.name == "rootfs")
        .ok_or_else(|| Failure::usage("demo set without rootfs"))?
        .bytes;
    let mut new = old.to_vec();
    for (i, at) in [new.len() / 5, new.len() / 2, new.len() * 4 / 5]
        .iter()
        .enumerate()
    {
        let fresh = bootvault_testkit::demo::pseudo_random(900 + i as u64, 256 << 10);
        new[*at..*at + fresh.len()].copy_from_slice(&fresh);
    }
    let at = new.len() / 3;
    new.splice(at..at, bootvault_testkit::demo::pseudo_random(999, 4096));
    let dir = tempfile::tempdir()?;
    let (file, cidx) = (dir.path().join("rootfs"), dir.path().join("rootfs.cidx"));
    std::fs::write(&file, &new)?;
    let (index, sha) = bootvault::write_index(&file, &cidx)?;
    let path = format!("v{version}/rootfs.erofs");
    origin.add(&path, new.clone().into());
    origin.add(&format!("{path}.cidx"), index.clone().into());
    let mut m = manifest.clone();
    m.version = version.into();
    for a in &mut m.assets {
        if a.name == "rootfs" {
            a.sha256 = sha;
            a.size = Some(new.len() as u64);
            a.urls = vec![origin.url(&path)];
            a.index = Some(bootvault::IndexRef {
                urls: vec![origin.url(&format!("{path}.cidx"))],
                sha256: bootvault::Sha256Digest::of(&index),
            });
        }
    }
    Ok((m, new.len() as u64))
}

/// One block per step: its title and totals, then one labelled row per asset (outcome, bytes
/// hashed, bytes downloaded, time spent on it).
#[cfg(feature = "demo")]
fn steps_table(steps: &[(String, bootvault::Report, bool)]) -> String {
    let mut s = String::new();
    for (i, (title, report, ok)) in steps.iter().enumerate() {
        let hashed: u64 = report.assets.iter().map(|a| a.bytes_hashed).sum();
        let down: u64 = report.assets.iter().map(|a| a.bytes_downloaded).sum();
        s.push_str(&format!(
            "\nstep {}: {title}\n  {} in all, {} hashed, {} downloaded{}\n",
            i + 1,
            human_duration(report.elapsed),
            human_bytes(hashed),
            human_bytes(down),
            if *ok { "" } else { "  (UNEXPECTED outcome)" }
        ));
        let w = report
            .assets
            .iter()
            .map(|a| a.name.len())
            .max()
            .unwrap_or(0)
            .max(5);
        s.push_str(&format!(
            "  {:<w$} {:<11} {:>11} {:>11} {:>10}\n",
            "ASSET", "OUTCOME", "HASHED", "DOWNLOADED", "TIME"
        ));
        for a in &report.assets {
            let bytes = |n: u64| {
                if n == 0 {
                    "-".to_string()
                } else {
                    human_bytes(n)
                }
            };
            s.push_str(&format!(
                "  {:<w$} {:<11} {:>11} {:>11} {:>10}\n",
                a.name,
                a.outcome().map(|o| o.as_str()).unwrap_or("FAILED"),
                bytes(a.bytes_hashed),
                bytes(a.bytes_downloaded),
                human_duration(a.elapsed),
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::EXIT_USAGE;

    #[test]
    fn a_build_without_the_feature_refuses_with_the_reason_and_exit_2() {
        let f = not_built();
        assert_eq!(f.code, EXIT_USAGE);
        assert!(
            f.message.contains("without the cargo feature `demo`"),
            "{}",
            f.message
        );
        assert!(
            f.message.contains("`cargo run --release -- demo`"),
            "{}",
            f.message
        );
        assert!(!f.message.contains('\n'), "one line: {}", f.message);
    }

    /// In a build without the feature, `run` is that refusal (`cargo test -p bootvault-cli
    /// --no-default-features --bins`).
    #[cfg(not(feature = "demo"))]
    #[test]
    fn run_without_the_feature_is_the_refusal() {
        let args = DemoArgs {
            dir: None,
            state_dir: None,
            binaries_mb: 4,
        };
        let f = run(args).expect_err("no demo in this build");
        assert_eq!((f.code, f.message), (EXIT_USAGE, not_built().message));
    }
}
