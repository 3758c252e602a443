//! Delta upgrades side by side with casync and zsync, on real data (`cargo bench --bench delta`).
//!
//! Pairs (built once into target/delta-bench/, from packages already on the machine or fetched
//! with the ordinary clients):
//! - `erofs`: two EROFS images (`mkfs.erofs -T0 -U… --all-root`) of a copy of /usr/bin and
//!   /usr/sbin, the second with three binaries replaced by new bytes;
//! - `esbuild`: two adjacent releases of a statically linked binary from the npm registry
//!   (`@esbuild/linux-x64` 0.24.0 and 0.24.1, a static Go binary);
//! - `vmlinuz`: two adjacent Debian kernels (linux-image-6.1.0-47 and -48, from their .debs).
//!
//! Every tool fetches from one nginx on loopback (real HTTP, multi-range for zsync), and the
//! bytes are what nginx's access log says it sent (`$bytes_sent`: headers, multipart framing
//! and index files included). bootvault's store holds the old file, verified (downloaded by a
//! prepare of the old manifest), and patches the new one; its seed is chunked on demand during
//! that prepare (a first upgrade: nothing remembered). casync gets the old file as `--seed`,
//! zsync as `-i`. Needs: nginx, casync, zsync, erofs-utils, dpkg-deb, npm, apt-get.
//! `DELTA_BENCH_PAIRS=erofs,esbuild` limits the pairs; `DELTA_BENCH_RATE=20m` limits nginx to
//! that rate per connection (the "limited origin" figures).

use bootvault::{Manifest, ParseOptions, Store};
use serde_json::json;
use std::io::{BufRead, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deterministic pseudo-random bytes (xorshift).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let ft = e.file_type().unwrap();
        if ft.is_file() {
            let _ = std::fs::copy(e.path(), to.join(e.file_name()));
        }
    }
}

/// The EROFS pair: /usr/bin + /usr/sbin, then three binaries (the largest between 3 and 8 MB)
/// replaced by new bytes of a slightly different size.
fn erofs_pair(dir: &Path) -> (PathBuf, PathBuf) {
    let (old, new) = (dir.join("erofs-old.img"), dir.join("erofs-new.img"));
    if old.exists() && new.exists() {
        return (old, new);
    }
    let tree = dir.join("erofs-tree");
    let _ = std::fs::remove_dir_all(&tree);
    copy_tree(Path::new("/usr/bin"), &tree.join("bin"));
    copy_tree(Path::new("/usr/sbin"), &tree.join("sbin"));
    let mkfs = |img: &Path| {
        sh(Command::new("mkfs.erofs")
            .arg("-T0")
            .arg("-U6f1c7f0e-5d1e-4b7a-9a4e-1d2c3b4a5f60")
            .arg("--all-root")
            .arg(img)
            .arg(&tree));
    };
    mkfs(&old);
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(tree.join("bin"))
        .unwrap()
        .flatten()
        .map(|e| (e.metadata().unwrap().len(), e.path()))
        .filter(|(n, _)| (3 << 20..8 << 20).contains(n))
        .collect();
    files.sort();
    let mut changed = Vec::new();
    for (i, (n, p)) in files.iter().rev().take(3).enumerate() {
        std::fs::write(p, noise(100 + i as u64, *n as usize + 4096 * i)).unwrap();
        changed.push(format!(
            "{} ({n} bytes)",
            p.file_name().unwrap().to_string_lossy()
        ));
    }
    eprintln!("erofs: replaced {}", changed.join(", "));
    mkfs(&new);
    let _ = std::fs::remove_dir_all(&tree);
    (old, new)
}

/// Two releases of esbuild's static Linux binary, from the npm registry.
fn esbuild_pair(dir: &Path) -> (PathBuf, PathBuf) {
    let dl = dir.join("dl");
    std::fs::create_dir_all(&dl).unwrap();
    let mut out = Vec::new();
    for v in ["0.24.0", "0.24.1"] {
        let bin = dir.join(format!("esbuild-{v}"));
        if !bin.exists() {
            let tgz = dl.join(format!("esbuild-linux-x64-{v}.tgz"));
            if !tgz.exists() {
                sh(Command::new("npm")
                    .current_dir(&dl)
                    .args(["pack", &format!("@esbuild/linux-x64@{v}")]));
            }
            let x = dl.join(format!("x-{v}"));
            std::fs::create_dir_all(&x).unwrap();
            sh(Command::new("tar").arg("xzf").arg(&tgz).arg("-C").arg(&x));
            std::fs::copy(x.join("package/bin/esbuild"), &bin).unwrap();
        }
        out.push(bin);
    }
    (out[0].clone(), out[1].clone())
}

/// Two adjacent Debian kernels' vmlinuz, from their .debs.
fn kernel_pair(dir: &Path) -> (PathBuf, PathBuf) {
    let dl = dir.join("dl");
    std::fs::create_dir_all(&dl).unwrap();
    let mut out = Vec::new();
    for abi in ["47", "48"] {
        let img = dir.join(format!("vmlinuz-6.1.0-{abi}"));
        if !img.exists() {
            let pkg = format!("linux-image-6.1.0-{abi}-amd64");
            let deb = std::fs::read_dir(&dl)
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .find(|p| p.to_string_lossy().contains(&format!("{pkg}_")));
            let deb = match deb {
                Some(d) => d,
                None => {
                    sh(Command::new("apt-get")
                        .current_dir(&dl)
                        .args(["download", &pkg]));
                    return kernel_pair(dir);
                }
            };
            let x = dl.join(format!("x-{abi}"));
            sh(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x));
            let boot = std::fs::read_dir(x.join("boot"))
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .find(|p| {
                    p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with("vmlinuz")
                })
                .unwrap();
            std::fs::copy(boot, &img).unwrap();
            let _ = std::fs::remove_dir_all(&x);
        }
        out.push(img);
    }
    (out[0].clone(), out[1].clone())
}

/// nginx on loopback serving `www`, logging every request's bytes sent.
struct Nginx {
    child: Child,
    port: u16,
    log: PathBuf,
    offset: u64,
}

impl Nginx {
    fn start(www: &Path, dir: &Path, rate: Option<&str>) -> Nginx {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let prefix = dir.join("nginx");
        std::fs::create_dir_all(prefix.join("logs")).unwrap();
        let log = prefix.join("logs/bytes.log");
        let _ = std::fs::remove_file(&log);
        let rate = rate.map(|r| format!("limit_rate {r};")).unwrap_or_default();
        let conf = format!(
            "daemon off; master_process off; worker_processes 1; pid {p}/nginx.pid;
             error_log {p}/logs/error.log;
             events {{ worker_connections 256; }}
             http {{
               log_format b '$bytes_sent $status $request';
               access_log {log} b;
               client_body_temp_path {p}; proxy_temp_path {p}; fastcgi_temp_path {p};
               uwsgi_temp_path {p}; scgi_temp_path {p};
               sendfile on; keepalive_requests 100000;
               server {{ listen 127.0.0.1:{port}; root {www}; {rate} }}
             }}",
            p = prefix.display(),
            log = log.display(),
            www = www.display(),
        );
        let conf_path = prefix.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf_path)
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx {
            child,
            port,
            log,
            offset: 0,
        }
    }

    fn url(&self, rel: &str) -> String {
        format!("http://127.0.0.1:{}/{rel}", self.port)
    }

    /// Bytes sent (and requests) since the last call. nginx writes a line when a request ends.
    fn take(&mut self) -> (u64, u64) {
        std::thread::sleep(Duration::from_millis(100));
        let mut f = std::fs::File::open(&self.log).unwrap();
        f.seek(SeekFrom::Start(self.offset)).unwrap();
        let (mut bytes, mut reqs) = (0, 0);
        for line in std::io::BufReader::new(&f).lines().map_while(Result::ok) {
            self.offset += line.len() as u64 + 1;
            bytes += line
                .split(' ')
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            reqs += 1;
        }
        (bytes, reqs)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Row {
    tool: &'static str,
    bytes: u64,
    requests: u64,
    secs: f64,
}

fn same(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

fn bench_pair(name: &str, old: &Path, new: &Path, dir: &Path, rate: Option<&str>) -> Vec<Row> {
    let www = dir.join("www");
    let pd = www.join(name);
    let _ = std::fs::remove_dir_all(&pd);
    std::fs::create_dir_all(&pd).unwrap();
    std::fs::copy(old, pd.join("old")).unwrap();
    std::fs::copy(new, pd.join("new")).unwrap();
    let work = dir.join(format!("work-{name}"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let mut ng = Nginx::start(&www, dir, rate);
    let mut rows = Vec::new();

    // bootvault: the chunk index beside the new file, the manifests, a store holding old.
    let (index, sha_new) = bootvault::write_index(new, &pd.join("new.cidx")).unwrap();
    let sha_old = bootvault::Sha256Digest::of(&std::fs::read(old).unwrap());
    let base = ng.url(name);
    let manifest = |version: &str, file: &str, sha: &bootvault::Sha256Digest, len: u64, ix| {
        let mut a = json!({"name": "img", "path": "img", "sha256": sha.to_hex(), "size": len,
                           "urls": [format!("{base}/{file}")]});
        if ix {
            a["index"] = json!({"urls": [format!("{base}/{file}.cidx")],
                                "sha256": bootvault::Sha256Digest::of(&index).to_hex()});
        }
        Manifest::parse(
            &json!({"version": version, "assets": [a]}).to_string(),
            version,
            &ParseOptions::default(),
        )
        .unwrap()
    };
    let len = |p: &Path| std::fs::metadata(p).unwrap().len();
    let m1 = manifest("1", "old", &sha_old, len(old), false);
    let m2 = manifest("2", "new", &sha_new, len(new), true);
    let root = work.join("store");
    let store = Store::open(&root).unwrap();
    store.prepare(&m1).unwrap();
    ng.take();
    let t = Instant::now();
    let report = store.prepare(&m2).unwrap();
    let secs = t.elapsed().as_secs_f64();
    let a = &report.assets[0];
    assert!(a.result.is_ok(), "{:?}", a.result);
    eprintln!(
        "{name}: bootvault outcome {:?}, {} bytes reused",
        a.outcome(),
        a.bytes_reused
    );
    assert!(same(&root.join("img"), new));
    let (bytes, requests) = ng.take();
    rows.push(Row {
        tool: "bootvault",
        bytes,
        requests,
        secs,
    });

    // casync: chunk store and index on the origin, the old file as seed.
    sh(Command::new("casync")
        .arg("make")
        .arg(format!("--store={}", pd.join("castr").display()))
        .arg(pd.join("new.caibx"))
        .arg(new));
    ng.take();
    let out = work.join("casync.out");
    let t = Instant::now();
    sh(Command::new("casync")
        .arg("extract")
        .arg(format!("--seed={}", old.display()))
        .arg(format!("--store={}", ng.url(&format!("{name}/castr"))))
        .arg(ng.url(&format!("{name}/new.caibx")))
        .arg(&out));
    let secs = t.elapsed().as_secs_f64();
    assert!(same(&out, new));
    let (bytes, requests) = ng.take();
    rows.push(Row {
        tool: "casync",
        bytes,
        requests,
        secs,
    });

    // zsync: the control file on the origin, the old file as input.
    sh(Command::new("zsyncmake")
        .current_dir(&pd)
        .arg("-u")
        .arg(ng.url(&format!("{name}/new")))
        .arg("-o")
        .arg(pd.join("new.zsync"))
        .arg(pd.join("new")));
    ng.take();
    let out = work.join("zsync.out");
    let t = Instant::now();
    sh(Command::new("zsync")
        .current_dir(&work)
        .arg("-q")
        .arg("-i")
        .arg(old)
        .arg("-o")
        .arg(&out)
        .arg(ng.url(&format!("{name}/new.zsync"))));
    let secs = t.elapsed().as_secs_f64();
    assert!(same(&out, new));
    let (bytes, requests) = ng.take();
    rows.push(Row {
        tool: "zsync",
        bytes,
        requests,
        secs,
    });

    // A plain download, as bootvault does without an index.
    let root = work.join("store-plain");
    let store = Store::open(&root).unwrap();
    let m2_plain = manifest("2", "new", &sha_new, len(new), false);
    let t = Instant::now();
    store.prepare(&m2_plain).unwrap();
    let secs = t.elapsed().as_secs_f64();
    let (bytes, requests) = ng.take();
    rows.push(Row {
        tool: "download",
        bytes,
        requests,
        secs,
    });
    let _ = std::fs::remove_dir_all(&work);
    rows
}

fn main() {
    // `cargo bench` passes --bench; nothing else is taken.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/delta-bench");
    std::fs::create_dir_all(&dir).unwrap();
    let pairs = std::env::var("DELTA_BENCH_PAIRS").unwrap_or("erofs,esbuild,vmlinuz".into());
    let rate = std::env::var("DELTA_BENCH_RATE").ok();
    let mut results = Vec::new();
    println!(
        "{:<8} {:>12} {:<10} {:>13} {:>6} {:>9} {:>8}",
        "pair", "new size", "tool", "bytes fetched", "reqs", "% of new", "wall s"
    );
    for pair in pairs.split(',') {
        let (old, new) = match pair {
            "erofs" => erofs_pair(&dir),
            "esbuild" => esbuild_pair(&dir),
            "vmlinuz" => kernel_pair(&dir),
            other => panic!("unknown pair {other}"),
        };
        let size = std::fs::metadata(&new).unwrap().len();
        for r in bench_pair(pair, &old, &new, &dir, rate.as_deref()) {
            println!(
                "{:<8} {:>12} {:<10} {:>13} {:>6} {:>8.2}% {:>8.2}",
                pair,
                size,
                r.tool,
                r.bytes,
                r.requests,
                100.0 * r.bytes as f64 / size as f64,
                r.secs
            );
            results.push(json!({"pair": pair, "new_size": size, "tool": r.tool,
                "bytes": r.bytes, "requests": r.requests, "secs": r.secs}));
        }
    }
    let out = dir.join("results.json");
    std::fs::write(&out, serde_json::to_string_pretty(&results).unwrap()).unwrap();
    println!("results: {}", out.display());
}
