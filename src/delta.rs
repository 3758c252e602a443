//! Delta upgrades: rebuild an asset that must be fetched from the chunks of verified local
//! files (seeds), fetching only the missing byte runs with HTTP Range.
//!
//! **Plan.** Only when some step is `fetch`/`repair` (or `hash` of a file whose record vouches
//! for an older digest) and that asset names a chunk index in the manifest: the index is loaded
//! (state-dir cache, else downloaded and checked against the manifest's SHA-256), the seeds'
//! indexes are looked up, and the step becomes `patch` when a seed shares chunks. A warm
//! prepare never gets here, so it reads no index.
//!
//! **Seeds.** Any file the ledger vouches for. First the file at the asset's own path (the
//! previous version of an upgraded asset), then files with the same file name (the previous
//! version under another versioned path), then the others. A seed's chunk index is remembered
//! in `STATE/chunks/<sha256>-<min>-<avg>-<max>.cidx` once known; the preferred seeds are
//! chunked on demand the first time (their whole digest checked in the same pass), the others
//! are used only when their index is already remembered, so an upgrade never reads the whole
//! store. After a patch, the (now proven) index of the new file is remembered under its digest.
//!
//! **Execute.** Under the asset's lock, into `STATE/tmp/<key>.<pid>.patch`: the missing runs
//! (adjacent chunks coalesced, at most [`MAX_RUN`] bytes a request) are fetched in parallel
//! within `--jobs`, each chunk's digest checked as it arrives; then one sequential pass copies
//! the seed chunks (each chunk's digest checked as it is read: a seed that changed costs a fetch
//! of that chunk, never trust) and SHA-256s the whole file. It is placed only if that digest is
//! the manifest's. Any failure falls back to a whole download, with the reason in the report
//! and the event log. A killed patch leaves its `.patch` file; the next patch of the asset uses
//! it as one more seed (its chunks checked like any other), so the runs it had fetched are not
//! fetched again.

use crate::chunk_index::{ChunkIndex, IndexRef, MAX_INDEX_BYTES};
use crate::digest::Sha256Digest;
use crate::store::execute::{Done, Wrong};
use crate::judge::{Expected, Verdict, judge};
use crate::ledger::{Method, Record};
use crate::lock::FileLock;
use crate::manifest::{Asset, Manifest, Policy};
use crate::place;
use crate::plan::{Action, Observed, Plan};
use crate::report::{Outcome, Progress};
use crate::stamp::Stamp;
use crate::store::{Call, Store};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The longest byte run fetched in one Range request: long runs are split so that several
/// requests run in parallel and a request's buffer stays small.
pub const MAX_RUN: u64 = 8 << 20;

/// The directory of remembered chunk indexes, in the state dir.
const CHUNKS_DIR: &str = "chunks";

/// A verified local file whose chunks can be copied.
struct Seed {
    path: PathBuf,
    index: ChunkIndex,
}

/// What a patch of one asset would use and save.
struct Proposal {
    index: ChunkIndex,
    seeds: Vec<Seed>,
    reused: u64,
}

/// Whether an asset could be patched at all: an index, and an HTTP or registry source for
/// Range requests.
fn patchable(asset: &Asset) -> bool {
    asset.index.is_some() && range_urls(asset).next().is_some()
}

fn is_remote(u: &str) -> bool {
    u.starts_with("http://") || u.starts_with("https://") || u.starts_with("oci://")
}

fn range_urls(asset: &Asset) -> impl Iterator<Item = &String> {
    asset.urls.iter().filter(|u| is_remote(u))
}

/// A request target: the URL, and the `Authorization` to send with it (registries).
type Target = (String, Option<String>);

/// The HTTP target of `url` for the content `digest`: itself, or for `oci://HOST/REPO` the
/// registry's blob URL with an authorization (the blob is named by its digest).
async fn resolve(
    registry: &crate::oci::Registry,
    client: &reqwest::Client,
    url: &str,
    digest: &Sha256Digest,
) -> Result<Target, String> {
    if !url.starts_with("oci:") {
        return Ok((url.to_string(), None));
    }
    let (target, host, repo) = registry.blob_url(url, digest)?;
    let auth = registry
        .authorization(client, &host, &repo, false)
        .await
        .map_err(|e| format!("{url}: {}", e.message))?;
    Ok((target, auth))
}

/// Whether the record vouches for the live file's content (as the digest it records). Like
/// donors: the patch checks every chunk it reads, so the record only says what is worth trying.
fn vouches(record: &Record, live: &Stamp) -> bool {
    let expected = Expected {
        sha256: record.sha256,
        size: None,
        mode: live.perm,
    };
    judge(Some(record), Some(live), &expected, Policy::Cached, None).is_trusted()
        || record.verity.is_some()
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

impl Store {
    /// Turns the steps of indexed assets that must be fetched into `patch` steps where a seed
    /// shares chunks. `cache`: remember downloaded and computed indexes in the state dir (not
    /// for a dry run, which writes nothing).
    pub(crate) fn plan_patches(
        &self,
        manifest: &Manifest,
        observed: &[Observed],
        plan: &mut Plan,
        cache: bool,
    ) {
        if self.inner.opts.offline {
            return;
        }
        for step in &mut plan.steps {
            let asset = &manifest.assets[step.index];
            let wanted = match (&step.action, &step.verdict) {
                (Action::Fetch, _) => true,
                // A file of the wrong size (not a symlink or a directory: those are replaced,
                // never read) may be the previous version.
                (Action::Repair, Verdict::WrongSize { .. }) => true,
                // The record vouches for the file as an older digest: it is the old version.
                (Action::Hash, Verdict::Stale(f)) => f == &[crate::judge::Field::Digest],
                _ => false,
            };
            if !wanted || !patchable(asset) {
                continue;
            }
            let seen = observed.get(step.index).cloned().unwrap_or_default();
            match self.propose(asset, seen.record.as_ref(), seen.live.as_ref(), cache) {
                Ok(Some(p)) => {
                    let total = p.index.total();
                    step.action = Action::Patch {
                        from: p.seeds[0].path.clone(),
                        bytes_reused: p.reused,
                    };
                    step.bytes_to_fetch = Some(total - p.reused);
                    step.bytes_to_hash = total;
                }
                Ok(None) => {}
                Err(why) => {
                    tracing::info!("asset {}: no patch: {why}", asset.name);
                    step.no_patch = Some(why);
                }
            }
        }
    }

    /// The seeds of `asset` and how many bytes they would save; `None` when none shares a chunk.
    fn propose(
        &self,
        asset: &Asset,
        record: Option<&Record>,
        live: Option<&Stamp>,
        cache: bool,
    ) -> Result<Option<Proposal>, String> {
        let Some(r) = &asset.index else {
            return Ok(None);
        };
        // No verified file to seed from (a first install): the index would buy nothing.
        let candidates = self.seed_candidates(asset, record, live);
        if candidates.is_empty() {
            return Ok(None);
        }
        let index = self.target_index(r, cache)?;
        if asset.size.is_some_and(|s| s != index.total()) {
            return Err(format!(
                "index covers {} bytes, the manifest size is {}",
                index.total(),
                asset.size.unwrap_or(0)
            ));
        }
        let mut seeds = Vec::new();
        for (path, digest, preferred) in candidates {
            let on_demand = preferred;
            if let Some(si) = self.seed_index(&path, &digest, &index, on_demand, cache) {
                seeds.push(Seed { path, index: si });
            }
        }
        let (reused, _) = reuse(&index, &seeds);
        if reused == 0 {
            return Ok(None);
        }
        // Seeds that contribute nothing are dropped, so execute opens only what it reads.
        let map = chunk_map(&seeds);
        let used: std::collections::BTreeSet<usize> = index
            .chunks
            .iter()
            .filter_map(|c| map.get(&c.sha256).map(|(s, _)| *s))
            .collect();
        let seeds = seeds
            .into_iter()
            .enumerate()
            .filter(|(i, _)| used.contains(i))
            .map(|(_, s)| s)
            .collect();
        Ok(Some(Proposal {
            index,
            seeds,
            reused,
        }))
    }

    /// Verified files that could seed `asset`, best first, with whether they are preferred
    /// (chunked on demand when their index is not remembered).
    fn seed_candidates(
        &self,
        asset: &Asset,
        record: Option<&Record>,
        live: Option<&Stamp>,
    ) -> Vec<(PathBuf, Sha256Digest, bool)> {
        let mut out = Vec::new();
        if let (Some(r), Some(l)) = (record, live)
            && r.sha256 != asset.sha256
            && vouches(r, l)
        {
            out.push((self.inner.root.join(&asset.path), r.sha256, true));
        }
        let (records, _) = self.inner.ledger.all();
        let mut others = Vec::new();
        for (key, rec) in records {
            if key == asset.path || rec.sha256 == asset.sha256 {
                continue;
            }
            if crate::manifest::validate_path(&key).is_err() {
                continue;
            }
            let path = self.inner.root.join(&key);
            let Ok(Some(l)) = Stamp::of_path(&path) else {
                continue;
            };
            if !vouches(&rec, &l) {
                continue;
            }
            let same_name = file_name(&key) == file_name(&asset.path);
            others.push((!same_name, path, rec.sha256));
        }
        others.sort();
        out.extend(others.into_iter().map(|(not_same, p, d)| (p, d, !not_same)));
        out
    }

    fn chunks_dir(&self) -> PathBuf {
        self.inner.state.join(CHUNKS_DIR)
    }

    /// The manifest's index of an asset: remembered by its digest, else downloaded; used only
    /// when it hashes to the manifest's digest and decodes.
    fn target_index(&self, r: &IndexRef, cache: bool) -> Result<ChunkIndex, String> {
        let cached = self.chunks_dir().join(format!("ref-{}.cidx", r.sha256));
        let bytes = match read_capped(&cached) {
            Some(b) if Sha256Digest::of(&b) == r.sha256 => b,
            _ => {
                let b = self.download_index(r)?;
                if cache {
                    self.remember(&cached, &b);
                }
                b
            }
        };
        ChunkIndex::decode(&bytes).map_err(|e| format!("chunk index: {e}"))
    }

    fn download_index(&self, r: &IndexRef) -> Result<Vec<u8>, String> {
        let mut why = Vec::new();
        for url in &r.urls {
            let got = if let Some(p) = url.strip_prefix("file://") {
                read_capped(Path::new(p)).ok_or_else(|| "cannot read".to_string())
            } else if is_remote(url) {
                let fetcher = self.fetcher().map_err(|e| e.to_string())?;
                let (client, rt) = fetcher.http().ok_or("fetch runtime is shut down")?;
                rt.block_on(async {
                    let t = resolve(fetcher.registry(), client, url, &r.sha256).await?;
                    get_capped(client, &t, None, MAX_INDEX_BYTES).await
                })
            } else {
                Err("only http(s), oci and file URLs can serve an index".into())
            };
            match got {
                Ok(b) if Sha256Digest::of(&b) == r.sha256 => return Ok(b),
                Ok(b) => why.push(format!(
                    "{url}: index hashes to {}, the manifest says {}",
                    Sha256Digest::of(&b),
                    r.sha256
                )),
                Err(e) => why.push(format!("{url}: {e}")),
            }
        }
        Err(why.join("; "))
    }

    /// The index of the verified file `path` (content `digest`) cut like `like`: remembered,
    /// else (when `on_demand`) cut now, its whole digest checked in the same pass.
    fn seed_index(
        &self,
        path: &Path,
        digest: &Sha256Digest,
        like: &ChunkIndex,
        on_demand: bool,
        cache: bool,
    ) -> Option<ChunkIndex> {
        let key = self.chunks_dir().join(format!(
            "{digest}-{}-{}-{}.cidx",
            like.min, like.avg, like.max
        ));
        if let Some(ix) = read_capped(&key).and_then(|b| ChunkIndex::decode(&b).ok())
            && ix.same_params(like)
        {
            return Some(ix);
        }
        if !on_demand {
            return None;
        }
        let file = place::open_nofollow(path).ok()?;
        let chunked = ChunkIndex::from_reader_with(
            std::io::BufReader::with_capacity(1 << 20, file),
            like.min,
            like.avg,
            like.max,
            // A seed is matched by whole chunks; its bytes are read directly for cells.
            0,
        )
        .ok()?;
        if chunked.sha256 != *digest {
            tracing::info!("seed {}: changed since it was verified", path.display());
            return None;
        }
        if cache {
            self.remember(&key, &chunked.index.encode());
        }
        Some(chunked.index)
    }

    /// Writes a remembered index atomically (a reader never sees half of one). Best effort:
    /// a store that cannot write its state dir just chunks again next time.
    fn remember(&self, path: &Path, bytes: &[u8]) {
        let dir = self.chunks_dir();
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
            std::io::Write::write_all(&mut tmp, bytes)?;
            tmp.persist(path).map_err(|e| e.error)?;
            Ok(())
        };
        if let Err(e) = write() {
            tracing::debug!("{}: not remembered: {e}", path.display());
        }
    }

    /// After a whole download of an indexed asset: its index, if this prepare downloaded it
    /// (it is as trusted as the manifest that names it, and every chunk read through it is
    /// checked), is remembered as the index of the new file, so the next upgrade does not chunk
    /// it.
    pub(crate) fn remember_downloaded_index(&self, asset: &Asset) {
        let Some(r) = &asset.index else { return };
        let cached = self.chunks_dir().join(format!("ref-{}.cidx", r.sha256));
        let Some(bytes) = read_capped(&cached).filter(|b| Sha256Digest::of(b) == r.sha256) else {
            return;
        };
        let Ok(ix) = ChunkIndex::decode(&bytes) else { return };
        if asset.size.is_some_and(|s| s != ix.total()) {
            return;
        }
        let key = self.chunks_dir().join(format!(
            "{}-{}-{}-{}.cidx",
            asset.sha256, ix.min, ix.avg, ix.max
        ));
        self.remember(&key, &bytes);
    }

    /// Runs a `patch` step under the asset's lock; any failure downloads the whole file, with
    /// the reason in the note (report and event log).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn patch_step(
        &self,
        call: &Call<'_>,
        asset: &Asset,
        path: &Path,
        wrong: Option<Wrong>,
        record: Option<&Record>,
        live: Option<&Stamp>,
        lock: Option<FileLock>,
    ) -> crate::error::Result<Done> {
        let why = if lock.is_none() {
            "the state dir is not writable".to_string()
        } else {
            match self.try_patch(call, asset, path, record, live) {
                Ok(mut done) => {
                    done.lock = lock;
                    return Ok(done);
                }
                Err(why) => why,
            }
        };
        tracing::info!("asset {}: patch abandoned ({why}); downloading whole", asset.name);
        let mut done = self.fetch_step(call, asset, path, wrong, 0, lock)?;
        let n = format!("patch abandoned ({why}); downloaded whole");
        done.patch_fallback = Some(why);
        done.note = Some(match done.note.take() {
            Some(prev) => format!("{prev}; {n}"),
            None => n,
        });
        Ok(done)
    }

    fn try_patch(
        &self,
        call: &Call<'_>,
        asset: &Asset,
        path: &Path,
        record: Option<&Record>,
        live: Option<&Stamp>,
    ) -> Result<Done, String> {
        let urls: Vec<String> = range_urls(asset).cloned().collect();
        if urls.is_empty() {
            return Err("no HTTP or registry source for range requests".into());
        }
        let Some(mut p) = self.propose(asset, record, live, true)? else {
            return Err("no verified local file shares a chunk with it".into());
        };
        let tmp_dir = self.inner.state.join("tmp");
        std::fs::create_dir_all(&tmp_dir).map_err(|e| format!("tmp dir: {e}"))?;
        let key = crate::lock::file_key(&asset.path);
        // A patch killed earlier left its file: one more seed (checked chunk by chunk).
        let adopted = adopt_killed(&tmp_dir, &key);
        if let Some(a) = &adopted
            && let Ok(f) = File::open(a)
            && let Ok(c) = ChunkIndex::from_reader_with(
                std::io::BufReader::with_capacity(1 << 20, f),
                p.index.min,
                p.index.avg,
                p.index.max,
                0,
            )
        {
            p.seeds.insert(
                0,
                Seed {
                    path: a.clone(),
                    index: c.index,
                },
            );
        }
        let out_path = tmp_dir.join(format!("{key}.{}.patch", std::process::id()));
        let result = self.assemble(call, asset, &p, &urls, &out_path);
        if let Some(a) = &adopted {
            let _ = std::fs::remove_file(a);
        }
        let (file, stats) = match result {
            Ok(ok) => ok,
            Err(e) => {
                let _ = std::fs::remove_file(&out_path);
                return Err(e);
            }
        };
        let mode = Expected::of(asset).mode;
        let placed = place::place(
            &out_path,
            &file,
            &self.inner.root,
            &asset.path,
            mode,
            &asset.sha256,
            &asset.name,
        );
        let (stamp_placed, rehashed) = match placed {
            Ok(ok) => ok,
            Err(e) => {
                let _ = std::fs::remove_file(&out_path);
                return Err(format!("place: {e}"));
            }
        };
        drop(file);
        // The index is proven now (every chunk and the whole file checked): the new file seeds
        // the next upgrade without being chunked.
        let key = self.chunks_dir().join(format!(
            "{}-{}-{}-{}.cidx",
            asset.sha256, p.index.min, p.index.avg, p.index.max
        ));
        self.remember(&key, &p.index.encode());
        let total = p.index.total();
        let mut done = Done::new(Outcome::Patched, total, None);
        done.bytes_hashed = total + rehashed;
        done.bytes_downloaded = stats.fetched;
        done.bytes_reused = stats.reused;
        done.note = Some(format!(
            "patched from {}: {} bytes reused, {} fetched{}",
            p.seeds
                .iter()
                .map(|s| s.path.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            stats.reused,
            stats.fetched,
            if stats.seed_misses > 0 {
                format!(
                    "; {} seed chunks had changed and were fetched",
                    stats.seed_misses
                )
            } else {
                String::new()
            }
        ));
        done.record = self
            .sealed_record(asset, path, stamp_placed, &call.manifest.version, Method::Downloaded)
            .map_err(|e| e.to_string())?;
        Ok(done)
    }

    /// Builds the new file at `out`: what no seed holds is fetched first (in parallel), then
    /// one pass copies the seed bytes and checks and hashes every chunk, and the whole file.
    fn assemble(
        &self,
        call: &Call<'_>,
        asset: &Asset,
        p: &Proposal,
        urls: &[String],
        out: &Path,
    ) -> Result<(File, Stats), String> {
        let io = |what: &str, e: std::io::Error| format!("{}: {what}: {e}", out.display());
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(out)
            .map_err(|e| io("create", e))?;
        let total = p.index.total();
        file.set_len(total).map_err(|e| io("set length", e))?;
        let seeds: Vec<File> = p
            .seeds
            .iter()
            .map(|s| {
                place::open_nofollow(&s.path).map_err(|e| format!("seed {}: {e}", s.path.display()))
            })
            .collect::<Result<_, _>>()?;
        let chunks = layout(&p.index, &p.seeds, &seeds);
        let runs = fetch_runs(&chunks);
        let fetcher = self.fetcher().map_err(|e| e.to_string())?;
        let (client, rt) = fetcher.http().ok_or("fetch runtime is shut down")?;
        // Registry sources become blob URLs with their authorization, once per patch.
        let targets: Vec<Target> = rt.block_on(async {
            let mut out = Vec::new();
            for u in urls {
                match resolve(fetcher.registry(), client, u, &asset.sha256).await {
                    Ok(t) => out.push(t),
                    Err(e) => tracing::info!("asset {}: {e}", asset.name),
                }
            }
            out
        });
        if targets.is_empty() {
            return Err("no source could be resolved for range requests".into());
        }
        let urls = &targets[..];
        let jobs = self.inner.opts.jobs.unwrap_or(4).max(1);
        let mut stats = Stats::default();
        // Phase 1: the missing byte runs, in parallel, written at their offsets.
        let fetched: Vec<Result<u64, String>> = rt.block_on(
            futures_util::stream::iter(runs.iter().map(|r| fetch_run(client, urls, r, &file)))
                .buffer_unordered(jobs)
                .collect(),
        );
        for r in fetched {
            stats.fetched += r?;
        }
        if call.cancel.is_cancelled() {
            return Err("cancelled".into());
        }
        // Phase 2, in file order: each chunk is put together (seed bytes, fetched bytes),
        // checked against its SHA-256 (a mismatch costs a fetch of the chunk, never trust),
        // written, and fed to the whole-file hash.
        let mut whole = crate::chunk_index::BackgroundHash::start();
        let mut buf = vec![0u8; p.index.max as usize];
        for pc in &chunks {
            let (off, len) = (pc.off, pc.chunk.len as usize);
            let b = &mut buf[..len];
            let mut from_seed = 0u64;
            // Fetched bytes are on disk already; seed bytes and re-fetched chunks are not.
            let mut rewrite = pc.seed.is_some();
            let mut good = match pc.seed {
                Some((s, soff)) => {
                    if seeds[s].read_exact_at(b, soff).is_err() {
                        false
                    } else {
                        for &(a, e) in &pc.fetch {
                            let at = (a - off) as usize..(e - off) as usize;
                            file.read_exact_at(&mut b[at], a)
                                .map_err(|e| io("read", e))?;
                        }
                        from_seed = len as u64 - pc.fetch.iter().map(|(a, e)| e - a).sum::<u64>();
                        Sha256Digest::of(b) == pc.chunk.sha256
                    }
                }
                None => {
                    file.read_exact_at(b, off).map_err(|e| io("read", e))?;
                    Sha256Digest::of(b) == pc.chunk.sha256
                }
            };
            if !good {
                // A seed that changed since it was verified, a sub-hash that lied, or bytes
                // the server changed: fetch the chunk itself.
                stats.seed_misses += 1;
                from_seed = 0;
                let got = rt.block_on(get_capped(
                    client,
                    &urls[0],
                    Some((off, len as u64)),
                    len as u64,
                ))?;
                stats.fetched += got.len() as u64;
                b.copy_from_slice(&got);
                rewrite = true;
                good = Sha256Digest::of(b) == pc.chunk.sha256;
            }
            if !good {
                return Err(format!(
                    "chunk at {off} from {}: digest differs from the index",
                    urls[0].0
                ));
            }
            stats.reused += from_seed;
            if rewrite {
                file.write_all_at(b, off).map_err(|e| io("write", e))?;
            }
            whole.update(b.to_vec());
            call.emit(Progress::Downloading {
                name: &asset.name,
                done: off + len as u64,
                total: Some(total),
            });
            if call.cancel.is_cancelled() {
                return Err("cancelled".into());
            }
        }
        let digest = whole.finish().ok_or("the hashing thread failed")?;
        if digest != asset.sha256 {
            return Err(format!(
                "the assembled file hashes to {digest}, not the manifest's {}",
                asset.sha256
            ));
        }
        Ok((file, stats))
    }
}

/// Where the bytes of one chunk of the new file come from.
struct Planned {
    off: u64,
    chunk: crate::chunk_index::Chunk,
    /// A seed region of the chunk's length holding it (whole, or all but `fetch`).
    seed: Option<(usize, u64)>,
    /// Byte ranges `[a, e)` of the new file to fetch for this chunk (none: all from the seed).
    fetch: Vec<(u64, u64)>,
}

/// Decides, chunk by chunk, what is copied and what is fetched. A chunk a seed holds is copied
/// whole. A chunk no seed holds is looked for where the seed had the bytes around it (right
/// after the previous chunk's seed region: a block rewritten in place in a filesystem image):
/// the cells whose sub-hash matches the seed's bytes there are copied, the others fetched.
fn layout(index: &ChunkIndex, seeds: &[Seed], files: &[File]) -> Vec<Planned> {
    let map = chunk_map(seeds);
    let sizes: Vec<u64> = seeds.iter().map(|s| s.index.total()).collect();
    let mut out = Vec::with_capacity(index.chunks.len());
    // Where the previous chunk's bytes sat in a seed, when they did.
    let mut anchor: Option<(usize, u64)> = None;
    let mut cell = Vec::new();
    for (off, c, hashes) in index.with_blocks() {
        let len = u64::from(c.len);
        if let Some(&(s, soff)) = map.get(&c.sha256) {
            out.push(Planned {
                off,
                chunk: *c,
                seed: Some((s, soff)),
                fetch: Vec::new(),
            });
            anchor = Some((s, soff + len));
            continue;
        }
        let whole = vec![(off, off + len)];
        let candidate = anchor.filter(|&(s, at)| {
            !hashes.is_empty() && index.block > 0 && at + len <= sizes[s]
        });
        let Some((s, at)) = candidate else {
            out.push(Planned {
                off,
                chunk: *c,
                seed: None,
                fetch: whole,
            });
            anchor = None;
            continue;
        };
        let mut fetch: Vec<(u64, u64)> = Vec::new();
        let ranges = crate::chunk_index::cells(off, c.len, index.block);
        for ((a, e), h) in ranges.zip(hashes) {
            cell.resize((e - a) as usize, 0);
            let same = files[s].read_exact_at(&mut cell, at + (a - off)).is_ok()
                && crate::chunk_index::sub_hash(&cell) == *h;
            if !same {
                match fetch.last_mut() {
                    Some(last) if last.1 == a => last.1 = e,
                    _ => fetch.push((a, e)),
                }
            }
        }
        let seed = (fetch != whole).then_some((s, at));
        out.push(Planned {
            off,
            chunk: *c,
            seed,
            fetch: if seed.is_some() { fetch } else { whole },
        });
        anchor = Some((s, at + len));
    }
    out
}

/// The byte ranges to fetch: every chunk's, adjacent ones coalesced, at most [`MAX_RUN`] bytes
/// each.
fn fetch_runs(chunks: &[Planned]) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for &(a, e) in chunks.iter().flat_map(|c| &c.fetch) {
        match runs.last_mut() {
            Some(r) if r.1 == a && e - r.0 <= MAX_RUN => r.1 = e,
            _ => runs.push((a, e)),
        }
    }
    runs
}

#[derive(Default)]
struct Stats {
    fetched: u64,
    reused: u64,
    seed_misses: u64,
}

/// Digest -> (seed number, offset), the first seed in preference order winning.
fn chunk_map(seeds: &[Seed]) -> HashMap<Sha256Digest, (usize, u64)> {
    let mut map = HashMap::new();
    for (i, s) in seeds.iter().enumerate() {
        for (off, c) in s.index.with_offsets() {
            map.entry(c.sha256).or_insert((i, off));
        }
    }
    map
}

/// Bytes of `index` the seeds hold, and bytes they do not.
fn reuse(index: &ChunkIndex, seeds: &[Seed]) -> (u64, u64) {
    let map = chunk_map(seeds);
    index.chunks.iter().fold((0, 0), |(r, f), c| {
        if map.contains_key(&c.sha256) {
            (r + u64::from(c.len), f)
        } else {
            (r, f + u64::from(c.len))
        }
    })
}

/// Fetches one byte run with a Range request and writes it at its offset (the chunks are
/// checked when the file is put together). Tries the sources in order; a server that ignores
/// Range fails the patch (the whole download that follows is then the right thing).
async fn fetch_run(
    client: &reqwest::Client,
    urls: &[Target],
    run: &(u64, u64),
    file: &File,
) -> Result<u64, String> {
    let (start, len) = (run.0, run.1 - run.0);
    let mut why = Vec::new();
    for t in urls {
        let body = match get_capped(client, t, Some((start, len)), len).await {
            Ok(b) => b,
            Err(e) if e.contains("ignored Range") => return Err(e),
            Err(e) => {
                why.push(e);
                continue;
            }
        };
        file.write_all_at(&body, start)
            .map_err(|e| format!("write: {e}"))?;
        return Ok(len);
    }
    Err(why.join("; "))
}

/// GETs `target` (the byte range `(start, len)` when given), refusing bodies over `cap` bytes.
async fn get_capped(
    client: &reqwest::Client,
    target: &Target,
    range: Option<(u64, u64)>,
    cap: u64,
) -> Result<Vec<u8>, String> {
    let url = target.0.as_str();
    let mut rb = client.get(url);
    if let Some(a) = &target.1 {
        rb = rb.header(reqwest::header::AUTHORIZATION, a);
    }
    if let Some((start, len)) = range {
        rb = rb.header(
            reqwest::header::RANGE,
            format!("bytes={start}-{}", start + len - 1),
        );
    }
    let mut resp = rb.send().await.map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status().as_u16();
    match (status, range) {
        (206, Some((start, len))) => {
            let want = format!("bytes {start}-{}/", start + len - 1);
            let got = resp
                .headers()
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !got.starts_with(&want) {
                return Err(format!("{url}: answered range {got:?}, asked {want}"));
            }
        }
        (200, Some(_)) => {
            return Err(format!("{url}: the server ignored Range (HTTP 200)"));
        }
        (200, None) => {}
        (s, _) => return Err(format!("{url}: HTTP {s}")),
    }
    let mut body = Vec::new();
    while let Some(piece) = resp.chunk().await.map_err(|e| format!("{url}: {e}"))? {
        if body.len() as u64 + piece.len() as u64 > cap {
            return Err(format!("{url}: body longer than {cap} bytes"));
        }
        body.extend_from_slice(&piece);
    }
    if let Some((_, len)) = range
        && body.len() as u64 != len
    {
        return Err(format!("{url}: {} bytes, expected {len}", body.len()));
    }
    Ok(body)
}

/// Reads a remembered index or a local index file, refusing anything over the index cap.
fn read_capped(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let f = File::open(path).ok()?;
    let mut b = Vec::new();
    f.take(MAX_INDEX_BYTES + 1).read_to_end(&mut b).ok()?;
    (b.len() as u64 <= MAX_INDEX_BYTES).then_some(b)
}

/// Takes over the `.patch` file a killed process left for `key` (the caller holds the asset's
/// lock, so its writer is gone), under this process's name; the newest wins, others go.
fn adopt_killed(tmp_dir: &Path, key: &str) -> Option<PathBuf> {
    let prefix = format!("{key}.");
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(tmp_dir)
        .ok()?
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with(&prefix) && n.ends_with(".patch")
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    found.sort();
    let (_, newest) = found.pop()?;
    for (_, old) in found {
        let _ = std::fs::remove_file(old);
    }
    let ours = tmp_dir.join(format!("{key}.{}.patch-seed", std::process::id()));
    std::fs::rename(&newest, &ours).ok()?;
    Some(ours)
}

/// Chunks `file` and writes its index to `out` (the `bootvault index` step): returns the
/// index bytes and the file's SHA-256, computed in the same pass.
pub fn write_index(file: &Path, out: &Path) -> std::io::Result<(Vec<u8>, Sha256Digest)> {
    let f = File::open(file)?;
    let size = f.metadata()?.len();
    let chunked =
        ChunkIndex::from_reader_sized(std::io::BufReader::with_capacity(1 << 20, f), size)?;
    let bytes = chunked.index.encode();
    let dir = out.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, &bytes)?;
    // Published beside the asset: readable like it (a temp file is created 0600).
    use std::os::unix::fs::PermissionsExt;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.persist(out).map_err(|e| e.error)?;
    Ok((bytes, chunked.sha256))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk_index::Chunk;

    fn planned(off: u64, fetch: Vec<(u64, u64)>) -> Planned {
        Planned {
            off,
            chunk: Chunk {
                len: 10,
                sha256: Sha256Digest([0; 32]),
            },
            seed: None,
            fetch,
        }
    }

    #[test]
    fn runs_coalesce_adjacent_ranges_only() {
        let chunks = [
            planned(0, vec![(0, 10)]),
            planned(10, vec![(10, 20)]),
            planned(20, vec![]),
            planned(30, vec![(30, 34), (36, 40)]),
            planned(40, vec![(40, 50)]),
        ];
        assert_eq!(fetch_runs(&chunks), vec![(0, 20), (30, 34), (36, 50)]);
    }

    #[test]
    fn a_block_rewritten_in_place_fetches_only_its_cells() {
        let dir = tempfile::tempdir().unwrap();
        let old: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut new = old.clone();
        new[81_920..81_930].fill(0xEE); // inside the 4 KiB cell at 80 KiB
        let (min, avg, max) = (1024, 4096, 16384);
        let oi = ChunkIndex::from_reader_with(&old[..], min, avg, max, 0).unwrap().index;
        let ni = ChunkIndex::from_reader_with(&new[..], min, avg, max, 4096).unwrap().index;
        let path = dir.path().join("old");
        std::fs::write(&path, &old).unwrap();
        let seeds = [Seed { path: path.clone(), index: oi }];
        let files = [File::open(&path).unwrap()];
        let plan = layout(&ni, &seeds, &files);
        let fetched: Vec<(u64, u64)> = fetch_runs(&plan);
        assert_eq!(fetched, vec![(81_920, 86_016)], "one cell");
    }
}
