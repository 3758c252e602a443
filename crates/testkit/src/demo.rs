//! The built-in demo data: a kernel, a rootfs and 20 runtime binaries (about 230 MB) shaped
//! like arcbox's boot assets, generated deterministically so that no network is needed.
//! Shared by `bootvault demo`, the benches and the tests.

use bootvault::Sha256Digest;
use bootvault::{Asset, AssetPath, Manifest, Policy};

/// One generated asset.
#[derive(Clone)]
pub struct DemoAsset {
    /// Asset name.
    pub name: String,
    /// Path under ROOT.
    pub path: String,
    /// Content.
    pub bytes: bytes::Bytes,
    /// Policy.
    pub verify: Policy,
    /// Mode.
    pub mode: Option<u32>,
}

/// Runtime binaries and their share of the ~230 MB, after arcbox's runtime set.
const BINARIES: [(&str, u32); 20] = [
    ("containerd", 38),
    ("containerd-shim-runc-v2", 12),
    ("runc", 11),
    ("dockerd", 72),
    ("docker", 36),
    ("docker-proxy", 4),
    ("ctr", 24),
    ("nerdctl", 30),
    ("buildkitd", 56),
    ("buildctl", 20),
    ("crun", 3),
    ("tini", 1),
    ("slirp4netns", 2),
    ("virtiofsd", 6),
    ("cloud-hypervisor", 5),
    ("firecracker", 3),
    ("k3s", 66),
    ("kubectl", 48),
    ("helm", 50),
    ("gvproxy", 12),
];

/// Fills `len` bytes from a seeded xorshift generator (incompressible, cheap).
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The 20 runtime binaries, totalling `total_bytes` (about 230 MB for the real demo).
pub fn binaries(total_bytes: u64) -> Vec<DemoAsset> {
    let weight: u64 = BINARIES.iter().map(|(_, w)| *w as u64).sum();
    BINARIES
        .iter()
        .enumerate()
        .map(|(i, (name, w))| {
            let len = (total_bytes * *w as u64 / weight).max(1) as usize;
            DemoAsset {
                name: name.to_string(),
                path: format!("bin/{name}"),
                bytes: pseudo_random(i as u64 + 100, len).into(),
                verify: Policy::Cached,
                mode: Some(0o755),
            }
        })
        .collect()
}

/// The full demo set: kernel (`verify: always`), rootfs (`always`) and the binaries.
pub fn asset_set(binaries_total: u64, kernel: usize, rootfs: usize) -> Vec<DemoAsset> {
    let mut set = vec![
        DemoAsset {
            name: "kernel".into(),
            path: "kernel".into(),
            bytes: pseudo_random(1, kernel).into(),
            verify: Policy::Always,
            mode: None,
        },
        DemoAsset {
            name: "rootfs".into(),
            path: "rootfs.erofs".into(),
            bytes: pseudo_random(2, rootfs).into(),
            verify: Policy::Always,
            mode: None,
        },
    ];
    set.extend(binaries(binaries_total));
    set
}

/// A manifest for `set`, each asset fetched from `url_of(asset)` (or none).
pub fn manifest(
    set: &[DemoAsset],
    version: &str,
    url_of: impl Fn(&DemoAsset) -> Option<String>,
) -> Manifest {
    let assets = set.iter().map(|a| {
        let path = AssetPath::new(&a.path).expect("a demo asset's path is valid");
        Asset::new(a.name.clone(), path, Sha256Digest::of(&a.bytes))
            .expect("a demo asset's name is valid")
            .size(a.bytes.len() as u64)
            .urls(url_of(a).into_iter().collect())
            .verify(a.verify)
            .mode(a.mode)
    });
    Manifest::new(version, assets.collect()).expect("a demo set is a valid manifest")
}

/// A local store of `n` small binaries (`bin/binNN`, about 4 KiB each, `verify: cached`)
/// written under `root`, with its manifest written to `root/manifest.json`, whose path is
/// returned: the set the whole-process warm benches prepare.
pub fn write_small_set(
    root: &std::path::Path,
    n: u64,
    seed: u64,
    version: &str,
) -> std::io::Result<std::path::PathBuf> {
    let set: Vec<DemoAsset> = (0..n)
        .map(|i| DemoAsset {
            name: format!("bin{i:02}"),
            path: format!("bin/bin{i:02}"),
            bytes: pseudo_random(seed + i, 4096 + i as usize).into(),
            verify: Policy::Cached,
            mode: None,
        })
        .collect();
    write_all(root, &set)?;
    let file = root.join("manifest.json");
    std::fs::write(
        &file,
        manifest(&set, version, |_| None).to_json().to_string(),
    )?;
    Ok(file)
}

/// Writes `set` under `root` (for local, pre-populated stores).
pub fn write_all(root: &std::path::Path, set: &[DemoAsset]) -> std::io::Result<()> {
    for a in set {
        let p = root.join(&a.path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, &a.bytes)?;
    }
    Ok(())
}
