//! The real-kernel lane as a cargo test: runs `.ci/kernel-lane` against this build's binary,
//! which boots Debian's kernel under QEMU (TCG) and checks the fs-verity tier inside the guest
//! (method `verity`, an O(1) warm check of a `verify: always` asset, writes refused with EPERM,
//! the fallback on ext4 without verity and on tmpfs, the mmap attack).
//!
//! Ignored by default: it boots a VM for about a minute and may install packages. CI runs the
//! script directly (`.ci/run`); run this with
//! `cargo test -p bootvault-cli --test kernel_lane -- --ignored`.

use std::path::Path;
use std::process::Command;

/// Every check the lane makes; each must be reported `ok`.
const SCENARIOS: &[&str] = &[
    "verity: every record has method verity",
    "verity: warm 'always' kernel is cached with 0 bytes hashed",
    "verity: append to a placed file is refused",
    "verity: ... with EPERM",
    "verity: truncate of a placed file is refused with EPERM",
    "plain (no verity): records say downloaded",
    "plain (no verity): warm 'always' kernel is re-hashed in full",
    "tmpfs (no verity): records say downloaded",
    "tmpfs (no verity): warm 'always' kernel is re-hashed in full",
    "mmap attack on plain: the writer wrote through its old mapping",
    "mmap attack on plain: the trusted file kept its content",
    "mmap attack on plain: debug verify agrees",
    "mmap attack on verity: the trusted file kept its content",
];

#[test]
#[ignore = "boots a VM under QEMU/TCG for about a minute; CI runs .ci/kernel-lane directly"]
fn fs_verity_scenarios_pass_on_a_real_kernel() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(repo.join(".ci/kernel-lane"))
        .env("BOOTVAULT_BIN", env!("CARGO_BIN_EXE_bootvault"))
        .env("KERNEL_LANE_DIR", work.path())
        .output()
        .expect("run .ci/kernel-lane");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kernel lane failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    for scenario in SCENARIOS {
        assert!(
            stdout.contains(&format!("kernel-lane: ok   {scenario}\n")),
            "scenario not reported ok: {scenario}\n{stdout}"
        );
    }
    assert!(
        !stdout.contains("FAIL") && !stderr.contains("FAIL"),
        "{stdout}\n{stderr}"
    );
}
