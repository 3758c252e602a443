//! A boot asset set in arcbox-boot's real shape, generated deterministically: an x86_64 kernel
//! and rootfs, the 20 x86_64 runtime binaries of a real release (names, versions and
//! `install_dir` values as arcbox-boot's release tools write them: `vmlinux` into `kernel`,
//! `mkfs.ext4` and `e2fsck` into `runtime/bin`) and the arm64-only `FEX`. Each file has its
//! CDN path as in a real release. The tests and benches turn it into arcbox-boot's own
//! `Manifest` type and serve it from the loopback [`crate::origin::Origin`].

use crate::demo::pseudo_random;

/// What a file is in the manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `targets.x86_64.kernel`.
    Kernel,
    /// `targets.x86_64.rootfs`.
    Rootfs,
    /// A `binaries[]` entry.
    Binary,
}

/// One file of the set.
#[derive(Clone, Debug)]
pub struct SetFile {
    /// Its role.
    pub kind: Kind,
    /// `kernel`, `rootfs` or the binary name.
    pub name: String,
    /// The entry's `version`.
    pub version: String,
    /// `install_dir` of a binary.
    pub install_dir: Option<String>,
    /// The architecture it is built for.
    pub arch: String,
    /// Its path relative to the CDN base URL.
    pub cdn_path: String,
    /// Its content.
    pub bytes: bytes::Bytes,
}

/// The binaries of a real release: (name, version, install_dir, share of the binaries' bytes).
const BINARIES: [(&str, &str, Option<&str>, u32); 20] = [
    ("dockerd", "29.6.1", None, 72),
    ("containerd", "29.6.1", None, 38),
    ("containerd-shim-runc-v2", "29.6.1", None, 12),
    ("runc", "29.6.1", None, 11),
    ("docker-init", "29.6.1", None, 1),
    ("docker-proxy", "29.6.1", None, 4),
    ("ctr", "29.6.1", None, 24),
    ("firecracker", "1.16.1", None, 3),
    ("jailer", "1.16.1", None, 2),
    ("crun", "1.21", None, 3),
    ("gvproxy", "0.8.6", None, 12),
    ("arcbox-agent", "0.6.0+g1a2b3c", None, 8),
    ("buildkitd", "0.23.2", None, 56),
    ("buildctl", "0.23.2", None, 20),
    ("nerdctl", "2.1.3", None, 30),
    ("tini", "0.19.0", None, 1),
    ("mkfs.ext4", "1.47.3", Some("runtime/bin"), 1),
    ("e2fsck", "1.47.3", Some("runtime/bin"), 1),
    ("vmlinux", "6.1.155", Some("kernel"), 30),
    ("k3s", "v1.36.2+k3s1", None, 66),
];

/// The 22 x86_64 files (kernel, rootfs, 20 binaries) plus the arm64-only `FEX`.
///
/// `binaries_total` bytes are spread over the binaries as in a real release; files named in
/// `changed` get content (and a CDN path) of their own for `version`, all others are the same
/// bytes whatever the version, as between two real releases (binaries keep their CDN path;
/// kernel and rootfs live under `asset/vVERSION/` as in a real release).
pub fn files(
    version: &str,
    kernel: usize,
    rootfs: usize,
    binaries_total: u64,
    changed: &[&str],
) -> Vec<SetFile> {
    let seed_of = |name: &str| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
        if changed.contains(&name) {
            for b in version.bytes() {
                h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
            }
        }
        h
    };
    let suffix = |name: &str| {
        if changed.contains(&name) {
            format!("-v{version}")
        } else {
            String::new()
        }
    };
    let mut out = vec![
        SetFile {
            kind: Kind::Kernel,
            name: "kernel".into(),
            version: "6.12.40".into(),
            install_dir: None,
            arch: "x86_64".into(),
            cdn_path: format!("asset/v{version}/x86_64/kernel"),
            bytes: pseudo_random(seed_of("kernel"), kernel).into(),
        },
        SetFile {
            kind: Kind::Rootfs,
            name: "rootfs".into(),
            version: version.into(),
            install_dir: None,
            arch: "x86_64".into(),
            cdn_path: format!("asset/v{version}/x86_64/rootfs.erofs"),
            bytes: pseudo_random(seed_of("rootfs"), rootfs).into(),
        },
    ];
    let weight: u64 = BINARIES.iter().map(|b| b.3 as u64).sum();
    for (name, ver, dir, w) in BINARIES {
        let len = (binaries_total * w as u64 / weight).max(1) as usize;
        out.push(SetFile {
            kind: Kind::Binary,
            name: name.into(),
            version: ver.into(),
            install_dir: dir.map(str::to_string),
            arch: "x86_64".into(),
            cdn_path: format!(
                "bin/{name}/{}{}/x86_64/{name}",
                ver.replace('+', "-"),
                suffix(name)
            ),
            bytes: pseudo_random(seed_of(name), len).into(),
        });
    }
    out.push(SetFile {
        kind: Kind::Binary,
        name: "FEX".into(),
        version: "FEX-2605".into(),
        install_dir: Some("runtime/bin".into()),
        arch: "arm64".into(),
        cdn_path: "bin/FEX/FEX-2605/arm64/FEX".into(),
        bytes: pseudo_random(seed_of("FEX"), 4096).into(),
    });
    out
}

/// The kernel command line of the test sets' x86_64 target.
pub const KERNEL_CMDLINE: &str = "console=ttyS0 root=/dev/vda ro rootfstype=erofs earlycon";

/// arcbox-boot's own `Manifest` for `files`, as its release tools write it (x86_64 target,
/// the binaries with their architectures and `install_dir`).
#[cfg(feature = "arcbox-boot")]
pub fn upstream_manifest(version: &str, files: &[SetFile]) -> arcbox_boot::manifest::Manifest {
    use arcbox_boot::manifest as up;
    let sha = |b: &[u8]| bootvault::Sha256Digest::of(b).to_hex();
    let entry = |f: &SetFile, version: Option<String>| up::FileEntry {
        path: f.cdn_path.clone(),
        sha256: sha(&f.bytes),
        version,
    };
    let kernel = files
        .iter()
        .find(|f| f.kind == Kind::Kernel)
        .expect("a kernel");
    let rootfs = files
        .iter()
        .find(|f| f.kind == Kind::Rootfs)
        .expect("a rootfs");
    let target = up::Target {
        kernel: entry(kernel, Some(kernel.version.clone())),
        // Real releases name no rootfs version.
        rootfs: entry(rootfs, None),
        kernel_cmdline: KERNEL_CMDLINE.into(),
        runtime: None,
    };
    up::Manifest {
        schema_version: up::schema_version_for(version),
        asset_version: version.into(),
        built_at: "2026-11-25T04:09:17Z".into(),
        source_repo: Some("arcboxlabs/boot-assets".into()),
        source_ref: Some(format!("refs/tags/v{version}")),
        source_sha: Some("022765a7e13c8507bff22678229fc0756df50d24".into()),
        targets: [("x86_64".to_string(), target)].into_iter().collect(),
        binaries: files
            .iter()
            .filter(|f| f.kind == Kind::Binary)
            .map(|f| up::Binary {
                name: f.name.clone(),
                version: f.version.clone(),
                targets: [(
                    f.arch.clone(),
                    up::BinaryTarget {
                        path: f.cdn_path.clone(),
                        sha256: sha(&f.bytes),
                    },
                )]
                .into_iter()
                .collect(),
                install_dir: f.install_dir.clone(),
            })
            .collect(),
    }
}
