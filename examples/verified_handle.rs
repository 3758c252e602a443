//! A host hands the VMM a descriptor of exactly the verified inode.
//!
//! `cargo run --example verified_handle`: builds a small store, prepares it, then opens the
//! kernel through `Store::open_verified` and shows that swapping the file at the path after the
//! check does not change what the descriptor reads.

use bootvault::{Policy, Store};
use bootvault_testkit::demo::{DemoAsset, manifest, pseudo_random, write_all};
use std::io::Read;
use std::os::fd::AsRawFd;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let kernel = DemoAsset {
        name: "kernel".into(),
        path: "kernel".into(),
        bytes: pseudo_random(1, 1 << 20).into(),
        verify: Policy::Always,
        mode: None,
    };
    write_all(dir.path(), std::slice::from_ref(&kernel))?;
    let m = manifest(std::slice::from_ref(&kernel), "example", |_| None);
    let store = Store::open(dir.path())?;
    store.prepare(&m)?;

    let mut verified = store.open_verified(&m.assets[0])?;
    println!(
        "verified {} (inode {}, hashed through this descriptor: {}) as fd {}",
        verified.path.display(),
        verified.stamp.ino,
        verified.rehashed,
        verified.file.as_raw_fd()
    );
    // An attacker replaces the file at the path after the check...
    std::fs::remove_file(dir.path().join("kernel"))?;
    std::fs::write(dir.path().join("kernel"), b"evil")?;
    // ...but the descriptor still reads the verified inode.
    let mut bytes = Vec::new();
    verified.file.read_to_end(&mut bytes)?;
    assert_eq!(bytes.as_slice(), &kernel.bytes[..]);
    println!(
        "the descriptor still reads the verified {} bytes; pass it to the VMM (e.g. as /proc/self/fd/N)",
        bytes.len()
    );
    Ok(())
}
