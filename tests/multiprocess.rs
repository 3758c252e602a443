//! Many real `bootvault` processes on one store: single flight, no lost record, and warm
//! prepares that never wait behind a download.

mod common;

use bootvault_testkit::origin::Origin;
use common::{
    Env, KIB, MIB, asset, asset_with_urls, data, missing_keys, outcomes, serve_faulty, sha,
    throttled, wait,
};
use std::collections::BTreeMap;
use std::process::Child;
use std::time::{Duration, Instant};

#[test]
fn cold_prepares_in_many_processes_download_each_asset_once() {
    const PROCS: usize = 16;
    let env = Env::new();
    let origin = Origin::start().unwrap();
    let names = ["kernel", "initrd", "runc"];
    let bodies: Vec<Vec<u8>> = (0..names.len())
        .map(|i| data(i as u64 + 1, 512 * KIB))
        .collect();
    let mut assets = Vec::new();
    for (name, body) in names.iter().zip(&bodies) {
        // Slow enough (about 250 ms each) that the processes overlap on every asset.
        serve_faulty(&origin, name, body, throttled(2 * MIB));
        assets.push(asset_with_urls(
            name,
            &format!("boot/{name}"),
            body,
            &[origin.url(name)],
        ));
    }
    let manifest = env.write_manifest("m.json", "mp-1", assets);
    let children: Vec<Child> = (0..PROCS)
        .map(|_| env.spawn_prepare(&manifest, &["--retries", "2"]))
        .collect();
    let mut downloads: BTreeMap<String, usize> = BTreeMap::new();
    for child in children {
        for (name, outcome) in outcomes(&wait(child).report_ok()) {
            assert!(
                ["downloaded", "cached", "verified"].contains(&outcome.as_str()),
                "{name}: {outcome}"
            );
            if outcome == "downloaded" {
                *downloads.entry(name).or_default() += 1;
            }
        }
    }
    for (name, body) in names.iter().zip(&bodies) {
        assert_eq!(
            origin.requests(name),
            1,
            "{name} fetched once across {PROCS} processes"
        );
        assert_eq!(
            downloads.get(*name),
            Some(&1),
            "one process reports {name} downloaded"
        );
        assert_eq!(env.read(&format!("boot/{name}")), *body);
    }
    let records = env.record_digests();
    for (name, body) in names.iter().zip(&bodies) {
        assert_eq!(
            records.get(&format!("boot/{name}")),
            Some(&sha(body)),
            "record of {name} in {records:?}"
        );
    }
}

#[test]
fn regression_last_writer_wins_loses_no_record() {
    const PROCS: usize = 20;
    const PER: usize = 3;
    let env = Env::new();
    let mut expected = BTreeMap::new();
    let mut all_assets = Vec::new();
    let mut manifests = Vec::new();
    for p in 0..PROCS {
        let mut assets = Vec::new();
        for i in 0..PER {
            let name = format!("tool-{p}-{i}");
            let path = format!("bin/{name}");
            let body = data((p * PER + i) as u64 + 1000, 8 * KIB + p * 100 + i);
            env.put(&path, &body);
            expected.insert(path.clone(), sha(&body));
            // No URL: verified in place.
            assets.push(asset(&name, &path, &body));
        }
        all_assets.extend(assets.iter().cloned());
        manifests.push(env.write_manifest(&format!("m{p}.json"), &format!("v{p}"), assets));
    }
    // Files changed in the clock tick a prepare starts in are racy (re-hashed next time, as
    // git does); adopted in place, these would be. Let the tick pass.
    std::thread::sleep(std::time::Duration::from_millis(50));
    let children: Vec<Child> = manifests
        .iter()
        .map(|m| env.spawn_prepare(m, &[]))
        .collect();
    for child in children {
        for (name, outcome) in outcomes(&wait(child).report_ok()) {
            assert_eq!(outcome, "verified", "{name}");
        }
    }
    let records = env.record_digests();
    let missing = missing_keys(&expected, &records);
    assert!(
        missing.is_empty(),
        "{} of {} records lost: {missing:?}",
        missing.len(),
        expected.len()
    );
    assert_eq!(records, expected);
    // Every record is usable: one warm prepare over everything trusts it all.
    let everything = env.write_manifest("all.json", "all", all_assets);
    let before = env.records();
    let report = env.prepare(&everything, &[]).report_ok();
    let warm = outcomes(&report);
    assert_eq!(warm.len(), PROCS * PER);
    assert!(
        warm.values().all(|o| o == "cached"),
        "{report}\nEVENTS {before:?}"
    );
}

#[test]
fn warm_prepare_is_not_blocked_behind_a_download() {
    let env = Env::new();
    let origin = Origin::start().unwrap();

    // The warm manifest: two assets, fetched once and verified once, then cached.
    let kernel = data(1, 256 * KIB);
    origin.add("kernel", kernel.clone().into());
    let tool = data(2, 16 * KIB);
    env.put("bin/tool", &tool);
    let warm_manifest = env.write_manifest(
        "warm.json",
        "warm",
        vec![
            asset_with_urls("kernel", "kernel", &kernel, &[origin.url("kernel")]),
            asset("tool", "bin/tool", &tool),
        ],
    );
    let first = outcomes(&env.prepare(&warm_manifest, &[]).report_ok());
    assert_eq!(first["kernel"], "downloaded");
    assert_eq!(first["tool"], "verified");
    let second = outcomes(&env.prepare(&warm_manifest, &[]).report_ok());
    assert!(
        second.values().all(|o| o == "cached"),
        "precondition: {second:?}"
    );

    // The download: 4 MiB at 1 MiB/s, next to a small asset that this process verifies and
    // records first, so it holds the ledger open for writing while it downloads.
    let size = 4 * MIB;
    let big = data(3, size);
    serve_faulty(&origin, "rootfs", &big, throttled(MIB));
    let side = data(4, 8 * KIB);
    env.put("bin/side", &side);
    let cold_manifest = env.write_manifest(
        "cold.json",
        "cold",
        vec![
            asset_with_urls("rootfs", "rootfs.img", &big, &[origin.url("rootfs")]),
            asset("side", "bin/side", &side),
        ],
    );
    let mut downloader = env.spawn_prepare(&cold_manifest, &["--jobs", "2", "--retries", "0"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while origin.bytes_served("rootfs") < 256 * KIB as u64 {
        assert!(Instant::now() < deadline, "the download never started");
        assert!(
            downloader.try_wait().unwrap().is_none(),
            "downloader exited early"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    let warm = env.prepare(&warm_manifest, &[]);
    let served_when_warm_done = origin.bytes_served("rootfs");
    let downloader_running = downloader.try_wait().unwrap().is_none();
    let warm = outcomes(&warm.report_ok());
    assert!(warm.values().all(|o| o == "cached"), "{warm:?}");
    assert!(
        downloader_running && served_when_warm_done < size as u64,
        "the warm prepare finished only after the download ({served_when_warm_done} of {size} bytes served)"
    );

    let cold = outcomes(&wait(downloader).report_ok());
    assert_eq!(cold["rootfs"], "downloaded");
    assert_eq!(cold["side"], "verified");
    assert_eq!(env.read("rootfs.img"), big);
    assert_eq!(origin.requests("rootfs"), 1);
}
