//! Fetch behaviour end to end: the real `bootvault` binary (or the library where a knob is
//! needed that the CLI does not expose) against the real loopback `Origin` with injected faults.

mod common;

use bootvault::{Manifest, Outcome, Store};
use bootvault_testkit::origin::{Fault, Origin};
use common::{Env, MIB, asset_with_urls, data, origin_serving, serve_faulty, throttled};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What only these tests need of `common::Env`: their manifests.
impl Env {
    /// Writes the one manifest of a test, beside ROOT.
    fn manifest(&self, assets: Vec<Value>) -> PathBuf {
        self.write_manifest("manifest.json", "test-1", assets)
    }

    /// Writes a manifest of one asset, `name` at ROOT/`rel`, for `body` fetched from `urls`.
    fn manifest_of_one(&self, name: &str, rel: &str, body: &[u8], urls: &[String]) -> PathBuf {
        self.manifest(vec![asset_with_urls(name, rel, body, urls)])
    }
}

#[test]
fn server_errors_then_success_is_downloaded_after_retries() {
    let env = Env::new();
    let body = data(1, MIB);
    let origin = origin_serving(
        "k",
        &body,
        Fault {
            fail_first: 2,
            fail_status: 502,
            ..Fault::default()
        },
    );
    let m = env.manifest_of_one("kernel", "kernel", &body, &[origin.url("k")]);
    let out = env.prepare(&m, &["--retries", "3"]);
    out.assert_code(0);
    assert_eq!(out.outcome("kernel"), "downloaded");
    assert_eq!(origin.requests("k"), 3, "two 502s, then the 200");
    assert_eq!(env.read("kernel"), body);
    assert_eq!(env.leftovers(), Vec::<String>::new());
}

#[test]
fn too_many_requests_with_retry_after_is_honoured() {
    let env = Env::new();
    let body = data(2, 256 * 1024);
    let origin = origin_serving(
        "k",
        &body,
        Fault {
            fail_first: 1,
            fail_status: 429,
            retry_after_secs: Some(1),
            ..Fault::default()
        },
    );
    let manifest = Manifest::from_json_str(
        &json!({"version": "v", "assets": [asset_with_urls("k", "k", &body, &[origin.url("k")])]})
            .to_string(),
    )
    .unwrap();
    // A 1 ms backoff: any wait of a second or more can only come from Retry-After.
    let mut opts = bootvault::fetch::FetchOptions::default();
    opts.retries = 2;
    opts.backoff = Duration::from_millis(1);
    opts.max_backoff = Duration::from_secs(10);
    let store = Store::builder(&env.root)
        .fetch_options(opts)
        .jobs(1)
        .open()
        .unwrap();
    let t = Instant::now();
    let report = store.prepare(&manifest).unwrap();
    let took = t.elapsed();
    let a = &report.assets[0];
    assert_eq!(a.outcome(), Some(Outcome::Downloaded), "{:?}", a.error());
    assert_eq!(origin.requests("k"), 2, "one 429, then the 200");
    assert!(
        took >= Duration::from_secs(1),
        "retried after {took:?}, before the 1 s Retry-After"
    );
    assert_eq!(env.read("k"), body);
}

#[test]
fn not_found_is_not_retried_and_the_next_mirror_is_used() {
    let env = Env::new();
    let origin = Origin::start().unwrap();
    let body = data(3, 300 * 1024);
    origin.add("mirror/k", body.clone().into());
    let urls = [origin.url("gone/k"), origin.url("mirror/k")];
    let m = env.manifest_of_one("k", "boot/k", &body, &urls);
    let out = env.prepare(&m, &["--retries", "3"]);
    out.assert_code(0);
    assert_eq!(out.outcome("k"), "downloaded");
    assert_eq!(origin.requests("gone/k"), 1, "a 404 is never retried");
    assert_eq!(origin.requests("mirror/k"), 1);
    assert_eq!(env.read("boot/k"), body);
}

#[test]
fn every_mirror_failing_exits_1_and_names_each_url_with_its_reason() {
    let env = Env::new();
    let body = data(4, 100 * 1024);
    let origin = origin_serving(
        "broken/k",
        &body,
        Fault {
            fail_first: 1000,
            fail_status: 500,
            ..Fault::default()
        },
    );
    let urls = [origin.url("gone/k"), origin.url("broken/k")];
    let m = env.manifest_of_one("vmlinuz", "k", &body, &urls);
    let out = env.prepare(&m, &["--retries", "1"]);
    out.assert_code(1);
    let err = &out.stderr;
    let line = err
        .lines()
        .find(|l| l.contains(&urls[0]))
        .unwrap_or_else(|| panic!("no error line names {}: {err}", urls[0]));
    assert!(line.contains("vmlinuz"), "the asset is named: {line}");
    assert!(line.contains("404"), "the 404 is the reason: {line}");
    assert!(line.contains(&urls[1]), "the second URL is named: {line}");
    assert!(line.contains("500"), "the 500 is the reason: {line}");
    assert_eq!(out.outcome("vmlinuz"), "failed");
    assert_eq!(origin.requests("gone/k"), 1);
    assert_eq!(origin.requests("broken/k"), 2, "first try plus one retry");
    assert_eq!(env.files(), Vec::<String>::new(), "nothing placed");
    assert_eq!(env.leftovers(), Vec::<String>::new());
}

#[test]
fn body_cut_mid_way_resumes_with_range() {
    let env = Env::new();
    let size = 4 * MIB;
    let body = data(5, size);
    let origin = origin_serving(
        "rootfs",
        &body,
        Fault {
            cut_after: Some(3 * MIB as u64 / 2),
            ..Fault::default()
        },
    );
    let m = env.manifest_of_one("rootfs", "rootfs.img", &body, &[origin.url("rootfs")]);
    let out = env.prepare(&m, &["--retries", "2"]);
    out.assert_code(0);
    assert_eq!(out.outcome("rootfs"), "downloaded");
    assert_eq!(origin.requests("rootfs"), 2);
    assert!(
        origin.range_requests("rootfs") >= 1,
        "the retry asked for a range"
    );
    let served = origin.bytes_served("rootfs");
    assert!(
        served < size as u64 * 5 / 4,
        "served {served} bytes for a {size}-byte asset: the prefix was fetched again"
    );
    assert_eq!(env.read("rootfs.img"), body);
    assert_eq!(env.leftovers(), Vec::<String>::new());
}

#[test]
fn cut_mid_body_resumes_even_when_a_failing_mirror_is_tried_in_between() {
    let env = Env::new();
    let size = 4 * MIB;
    let body = data(15, size);
    // The primary cuts every one of its first three responses after 1 MiB; resuming makes
    // progress each time, restarting never gets past the first MiB.
    let origin = origin_serving(
        "primary",
        &body,
        Fault {
            cut_after: Some(MIB as u64),
            cut_times: 3,
            ..Fault::default()
        },
    );
    // The mirror is down (a transient 503 each time).
    serve_faulty(
        &origin,
        "mirror",
        &body,
        Fault {
            fail_first: 1000,
            ..Fault::default()
        },
    );
    let urls = [origin.url("primary"), origin.url("mirror")];
    let m = env.manifest_of_one("rootfs", "rootfs.img", &body, &urls);
    let out = env.prepare(&m, &["--retries", "4"]);
    out.assert_code(0);
    assert_eq!(out.outcome("rootfs"), "downloaded");
    assert_eq!(env.read("rootfs.img"), body);
    assert!(
        origin.range_requests("primary") >= 1,
        "the primary was never asked to resume"
    );
    let served = origin.bytes_served("primary");
    assert!(
        served < size as u64 * 5 / 4,
        "served {served} bytes for a {size}-byte asset: the partial was discarded when the \
         mirror was tried"
    );
}

#[test]
fn cut_primary_then_working_mirror_restarts_cleanly_from_the_mirror() {
    let env = Env::new();
    let size = 2 * MIB;
    let body = data(16, size);
    let origin = origin_serving(
        "primary",
        &body,
        Fault {
            cut_after: Some(MIB as u64),
            ..Fault::default()
        },
    );
    origin.add("mirror", body.clone().into());
    let urls = [origin.url("primary"), origin.url("mirror")];
    let m = env.manifest_of_one("rootfs", "rootfs.img", &body, &urls);
    let out = env.prepare(&m, &["--retries", "2"]);
    out.assert_code(0);
    assert_eq!(out.outcome("rootfs"), "downloaded");
    assert_eq!(origin.requests("primary"), 1);
    assert_eq!(origin.requests("mirror"), 1);
    assert_eq!(
        origin.range_requests("mirror"),
        0,
        "a partial of the primary is never resumed against the mirror"
    );
    // The primary's prefix followed by the mirror's whole body would be the wrong bytes.
    assert_eq!(env.read("rootfs.img"), body);
    assert_eq!(env.leftovers(), Vec::<String>::new());
}

#[test]
fn server_ignoring_range_after_a_cut_restarts_cleanly() {
    let env = Env::new();
    let size = 2 * MIB;
    let body = data(6, size);
    let origin = origin_serving(
        "rootfs",
        &body,
        Fault {
            cut_after: Some(MIB as u64),
            ignore_range: true,
            ..Fault::default()
        },
    );
    let m = env.manifest_of_one("rootfs", "rootfs.img", &body, &[origin.url("rootfs")]);
    let out = env.prepare(&m, &["--retries", "2"]);
    out.assert_code(0);
    assert_eq!(out.outcome("rootfs"), "downloaded");
    assert_eq!(
        origin.range_requests("rootfs"),
        1,
        "the retry asked for a range"
    );
    assert_eq!(
        origin.bytes_served("rootfs"),
        (size + MIB) as u64,
        "the cut prefix, then the whole body again"
    );
    // Both tries' bytes crossed the network: the restart counts the whole body again.
    let downloaded = out.json()["assets"][0]["bytes_downloaded"]
        .as_u64()
        .unwrap();
    assert!(
        downloaded > size as u64,
        "bytes_downloaded {downloaded}: the bytes of the abandoned try are not counted"
    );
    // Appending the full 200 body to the kept prefix would give the wrong bytes here.
    assert_eq!(env.read("rootfs.img"), body);
    assert_eq!(env.leftovers(), Vec::<String>::new());
}

#[test]
fn wrong_bytes_fail_and_leave_nothing_behind() {
    let env = Env::new();
    let body = data(7, MIB);
    let origin = origin_serving(
        "k",
        &body,
        Fault {
            corrupt: true,
            ..Fault::default()
        },
    );
    let m = env.manifest_of_one("kernel", "boot/kernel", &body, &[origin.url("k")]);
    let out = env.prepare(&m, &["--retries", "2"]);
    out.assert_code(1);
    assert_eq!(out.outcome("kernel"), "failed");
    let err = &out.stderr;
    assert!(
        err.contains("kernel") && err.contains(&origin.url("k")),
        "{err}"
    );
    assert!(err.contains("sha256"), "the reason is the digest: {err}");
    assert_eq!(
        origin.requests("k"),
        1,
        "a URL serving wrong bytes is not retried"
    );
    assert!(!env.path("boot/kernel").exists());
    assert_eq!(env.files(), Vec::<String>::new(), "no stray file in ROOT");
    assert_eq!(
        env.leftovers(),
        Vec::<String>::new(),
        "a partial with the wrong digest is not kept"
    );
}

#[test]
fn body_longer_than_size_fails_and_places_nothing() {
    let env = Env::new();
    let body = data(8, 512 * 1024);
    let other = data(9, 512 * 1024);
    // Announced in Content-Length...
    let origin = origin_serving(
        "long",
        &body,
        Fault {
            extra_bytes: 4096,
            ..Fault::default()
        },
    );
    // ...and only found out while streaming (no Content-Length).
    serve_faulty(
        &origin,
        "chunked",
        &other,
        Fault {
            extra_bytes: 4096,
            omit_content_length: true,
            ..Fault::default()
        },
    );
    let m = env.manifest(vec![
        asset_with_urls("long", "long", &body, &[origin.url("long")]),
        asset_with_urls("chunked", "chunked", &other, &[origin.url("chunked")]),
    ]);
    let out = env.prepare(&m, &["--retries", "1"]);
    out.assert_code(1);
    assert_eq!(out.outcome("long"), "failed");
    assert_eq!(out.outcome("chunked"), "failed");
    let err = &out.stderr;
    for name in ["long", "chunked"] {
        let line = err
            .lines()
            .find(|l| l.contains(&origin.url(name)))
            .unwrap_or_else(|| panic!("no error line names {}: {err}", origin.url(name)));
        assert!(line.contains("size"), "the reason is the size: {line}");
        assert_eq!(
            origin.requests(name),
            1,
            "a body past the size is not retried"
        );
    }
    assert_eq!(env.files(), Vec::<String>::new(), "nothing placed");
    assert_eq!(env.leftovers(), Vec::<String>::new());
}

#[test]
fn throttled_but_flowing_download_outlives_the_idle_timeout() {
    let env = Env::new();
    let size = 2 * MIB;
    let body = data(10, size);
    let origin = origin_serving("slow", &body, throttled(MIB));
    let m = env.manifest_of_one("slow", "slow", &body, &[origin.url("slow")]);
    let t = Instant::now();
    let out = env.prepare(&m, &["--retries", "0", "--idle-timeout", "1"]);
    let took = t.elapsed();
    out.assert_code(0);
    assert_eq!(out.outcome("slow"), "downloaded");
    assert!(
        took > Duration::from_millis(1500),
        "the download took {took:?}: it should outlast the 1 s idle timeout"
    );
    assert_eq!(origin.requests("slow"), 1, "never timed out, never retried");
    assert_eq!(env.read("slow"), body);
}

#[test]
fn stall_longer_than_the_idle_timeout_is_retried_and_resumed() {
    let env = Env::new();
    let size = MIB;
    let body = data(11, size);
    // Every response stalls for 6 s after 512 KiB of its own body; the resumed request gets
    // the remaining 512 KiB before it would stall, so it completes.
    let origin = origin_serving(
        "stall",
        &body,
        Fault {
            stall: Some((512 * 1024, Duration::from_secs(6))),
            ..Fault::default()
        },
    );
    let m = env.manifest_of_one("stall", "stall", &body, &[origin.url("stall")]);
    let out = env.prepare(&m, &["--retries", "2", "--idle-timeout", "1"]);
    out.assert_code(0);
    assert_eq!(out.outcome("stall"), "downloaded");
    assert_eq!(origin.requests("stall"), 2, "the stalled try was abandoned");
    assert_eq!(origin.range_requests("stall"), 1, "and resumed");
    let served = origin.bytes_served("stall");
    assert!(
        served < size as u64 * 5 / 4,
        "served {served} bytes for {size}"
    );
    assert_eq!(env.read("stall"), body);
}

#[test]
fn offline_with_a_missing_asset_never_contacts_the_origin() {
    let env = Env::new();
    let origin = Origin::start().unwrap();
    let body = data(12, 64 * 1024);
    let initrd = data(17, 64 * 1024);
    origin.add("k", body.clone().into());
    origin.add("i", initrd.clone().into());
    let m = env.manifest(vec![
        asset_with_urls("kernel", "kernel", &body, &[origin.url("k")]),
        asset_with_urls("initrd", "initrd", &initrd, &[origin.url("i")]),
    ]);
    // The initrd is present but wrong: offline, it can be neither trusted nor repaired.
    let wrong = data(18, initrd.len());
    std::fs::write(env.path("initrd"), &wrong).unwrap();
    let out = env.prepare(&m, &["--offline"]);
    out.assert_code(1);
    assert_eq!(out.outcome("kernel"), "failed");
    assert_eq!(out.outcome("initrd"), "failed");
    let err = &out.stderr;
    let line = err
        .lines()
        .find(|l| l.contains("kernel"))
        .unwrap_or_else(|| panic!("no error names the kernel: {err}"));
    assert!(line.contains("offline"), "{line}");
    assert!(err.contains("initrd"), "{err}");
    assert_eq!(origin.total_requests(), 0);
    assert_eq!(env.files(), vec!["initrd".to_string()]);
    assert_eq!(env.read("initrd"), wrong, "left as it was");
}

#[test]
fn wrong_local_files_are_repaired_by_download() {
    let env = Env::new();
    let origin = Origin::start().unwrap();
    let same_size = data(13, 256 * 1024);
    let other_size = data(14, 256 * 1024);
    origin.add("a", same_size.clone().into());
    origin.add("b", other_size.clone().into());
    let m = env.manifest(vec![
        asset_with_urls("a", "a", &same_size, &[origin.url("a")]),
        asset_with_urls("b", "bin/b", &other_size, &[origin.url("b")]),
    ]);
    std::fs::write(env.path("a"), data(99, same_size.len())).unwrap();
    std::fs::create_dir(env.path("bin")).unwrap();
    std::fs::write(env.path("bin/b"), b"short and wrong").unwrap();
    let out = env.prepare(&m, &[]);
    out.assert_code(0);
    assert_eq!(out.outcome("a"), "repaired");
    assert_eq!(out.outcome("b"), "repaired");
    assert_eq!(env.read("a"), same_size);
    assert_eq!(env.read("bin/b"), other_size);
    assert_eq!(origin.requests("a"), 1);
    assert_eq!(origin.requests("b"), 1);
    // The repair is remembered: the next prepare trusts both without reading or fetching.
    let again = env.prepare(&m, &[]);
    again.assert_code(0);
    assert_eq!(again.outcome("a"), "cached");
    assert_eq!(again.outcome("b"), "cached");
    assert_eq!(origin.total_requests(), 2);
}

/// A manifest of one asset without a `size` (arcbox-boot manifests have none).
fn unsized_manifest(name: &str, body: &[u8], url: String) -> Manifest {
    let mut a = asset_with_urls(name, name, body, &[url]);
    a.as_object_mut().unwrap().remove("size");
    Manifest::from_json_str(&json!({"version": "t", "assets": [a]}).to_string()).unwrap()
}

/// Issue: `file:///dev/zero` as the source of an asset without a size wrote a partial until
/// the disk was full. A source that is not a regular file is refused before a byte is read.
#[test]
fn regression_a_device_as_a_file_source_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let m = unsized_manifest("zero", b"anything", "file:///dev/zero".into());
    let report = Store::open(root.path()).unwrap().prepare(&m).unwrap();
    let err = report.assets[0].error().expect("refused").to_string();
    assert!(
        err.contains("asset zero") && err.contains("not a regular file"),
        "{err}"
    );
    let tmp = root.path().join(".bootvault/tmp");
    let left: u64 = std::fs::read_dir(&tmp)
        .map(|d| d.flatten().map(|e| e.metadata().unwrap().len()).sum())
        .unwrap_or(0);
    assert_eq!(left, 0, "bytes of /dev/zero were kept");
}

/// Issue: an origin whose body never ends (or lies in Content-Length) for an asset without a
/// size wrote without bound. The body is refused at the announced length, or cut off at
/// `max_size` when no length is announced, and the partial is removed.
#[test]
fn regression_an_unsized_asset_is_bounded_by_max_size() {
    let body = data(30, 3 * MIB);
    for chunked in [false, true] {
        let origin = origin_serving(
            "big",
            &body,
            Fault {
                omit_content_length: chunked,
                ..Fault::default()
            },
        );
        let root = tempfile::tempdir().unwrap();
        let m = unsized_manifest("big", &body, origin.url("big"));
        let store = Store::builder(root.path())
            .fetch_options({
                let mut o = bootvault::FetchOptions::default();
                o.max_size = MIB as u64;
                o.retries = 0;
                o
            })
            .open()
            .unwrap();
        let report = store.prepare(&m).unwrap();
        let err = report.assets[0].error().expect("cut off").to_string();
        assert!(
            err.contains("asset big") && err.contains("byte limit"),
            "{err}"
        );
        assert!(!root.path().join("big").exists());
        let kept: u64 = std::fs::read_dir(root.path().join(".bootvault/tmp"))
            .map(|d| d.flatten().map(|e| e.metadata().unwrap().len()).sum())
            .unwrap_or(0);
        assert_eq!(kept, 0, "chunked={chunked}: {kept} bytes of partial kept");
    }
}

/// A download that would leave less than the reserve free fails before it starts, naming the
/// asset, and leaves no partial.
#[test]
fn a_download_larger_than_the_free_space_fails_up_front() {
    let body = data(31, MIB);
    let origin = origin_serving("img", &body, Fault::default());
    let root = tempfile::tempdir().unwrap();
    let m = unsized_manifest("img", &body, origin.url("img"));
    let store = Store::builder(root.path())
        .fetch_options({
            let mut o = bootvault::FetchOptions::default();
            o.min_free_bytes = u64::MAX / 4;
            o.retries = 0;
            o
        })
        .open()
        .unwrap();
    let report = store.prepare(&m).unwrap();
    let err = report.assets[0].error().expect("no space").to_string();
    assert!(err.starts_with("asset img:"), "{err}");
    assert!(err.contains("free"), "{err}");
    let parts: Vec<_> = std::fs::read_dir(root.path().join(".bootvault/tmp"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(parts.is_empty(), "{parts:?}");
}
