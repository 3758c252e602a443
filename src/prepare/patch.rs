//! The patch steps of a prepare (see [`crate::delta`] for the method): turning a `fetch` into a
//! `patch` at plan time when a seed shares chunks, and running it under the asset's lock.

use super::Prepare;
use super::execute::{Done, Wrong};
use super::judge::{Expected, Verdict, judge};
use super::plan::{Action, Observed, Plan};
use crate::chunk_index::{ChunkIndex, IndexRef, MAX_INDEX_BYTES};
use crate::delta::*;
use crate::digest::Sha256Digest;
use crate::ledger::{Method, Record};
use crate::lock::FileLock;
use crate::manifest::{Asset, Manifest, Policy};
use crate::place;
use crate::report::{Outcome, Progress};
use crate::stamp::Stamp;
use crate::state::TmpKind;
use futures_util::StreamExt;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

impl Prepare<'_> {
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
        if self.ctx.opts.offline {
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
                (Action::Hash, Verdict::Stale(f)) => f == &[crate::prepare::judge::Field::Digest],
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
            out.push((self.ctx.root.join(&asset.path), r.sha256, true));
        }
        let (records, _) = self.ctx.ledger.all();
        let mut others = Vec::new();
        for (key, rec) in records {
            if key == asset.path || rec.sha256 == asset.sha256 {
                continue;
            }
            if crate::asset_path::validate_path(&key).is_err() {
                continue;
            }
            let path = self.ctx.root.join(&key);
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

    /// The manifest's index of an asset: remembered by its digest, else downloaded; used only
    /// when it hashes to the manifest's digest and decodes.
    fn target_index(&self, r: &IndexRef, cache: bool) -> Result<ChunkIndex, String> {
        let cached = self.ctx.state.chunk_index(&r.sha256);
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
                let fetcher = self.ctx.fetcher().map_err(|e| e.to_string())?;
                let client = fetcher.client();
                crate::http::block_on(async {
                    let t = resolve(fetcher.registry(), client, url, &r.sha256).await?;
                    get_capped(client, &t, None, MAX_INDEX_BYTES).await
                })
                .and_then(|r| r)
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
        let key = self
            .ctx
            .state
            .seed_index(digest, [like.min, like.avg, like.max]);
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
        let dir = self.ctx.state.chunks();
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
        let cached = self.ctx.state.chunk_index(&r.sha256);
        let Some(bytes) = read_capped(&cached).filter(|b| Sha256Digest::of(b) == r.sha256) else {
            return;
        };
        let Ok(ix) = ChunkIndex::decode(&bytes) else {
            return;
        };
        if asset.size.is_some_and(|s| s != ix.total()) {
            return;
        }
        let key = self
            .ctx
            .state
            .seed_index(&asset.sha256, [ix.min, ix.avg, ix.max]);
        self.remember(&key, &bytes);
    }

    /// Runs a `patch` step under the asset's lock; any failure downloads the whole file, with
    /// the reason in the note (report and event log).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn patch_step(
        &self,
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
            match self.try_patch(asset, path, record, live) {
                Ok(mut done) => {
                    done.lock = lock;
                    return Ok(done);
                }
                Err(why) => why,
            }
        };
        tracing::info!(
            "asset {}: patch abandoned ({why}); downloading whole",
            asset.name
        );
        let mut done = self.fetch_step(asset, path, wrong, 0, lock)?;
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
        let tmp_dir = self.ctx.state.tmp();
        std::fs::create_dir_all(&tmp_dir).map_err(|e| format!("tmp dir: {e}"))?;
        let key = crate::state::file_key(&asset.path);
        // A patch killed earlier left its file: one more seed (checked chunk by chunk).
        let adopted = adopt_killed(&self.ctx.state, &key);
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
        let out_path = self.ctx.state.tmp_file(&key, TmpKind::Patch);
        let result = self.assemble(asset, &p, &urls, &out_path);
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
            &self.ctx.root,
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
        let key = self
            .ctx
            .state
            .seed_index(&asset.sha256, [p.index.min, p.index.avg, p.index.max]);
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
            .sealed_record(
                asset,
                path,
                stamp_placed,
                &self.manifest.version,
                Method::Downloaded,
            )
            .map_err(|e| e.to_string())?;
        Ok(done)
    }

    /// Builds the new file at `out`: what no seed holds is fetched first (in parallel), then
    /// one pass copies the seed bytes and checks and hashes every chunk, and the whole file.
    fn assemble(
        &self,
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
        let fetcher = self.ctx.fetcher().map_err(|e| e.to_string())?;
        let client = fetcher.client();
        // Registry sources become blob URLs with their authorization, once per patch.
        let targets: Vec<Target> = crate::http::block_on(async {
            let mut out = Vec::new();
            for u in urls {
                match resolve(fetcher.registry(), client, u, &asset.sha256).await {
                    Ok(t) => out.push(t),
                    Err(e) => tracing::info!("asset {}: {e}", asset.name),
                }
            }
            out
        })?;
        if targets.is_empty() {
            return Err("no source could be resolved for range requests".into());
        }
        let urls = &targets[..];
        let jobs = self.ctx.opts.jobs.unwrap_or(4).max(1);
        let mut stats = Stats::default();
        // Phase 1: the missing byte runs, in parallel, written at their offsets.
        let fetched: Vec<Result<u64, String>> = crate::http::block_on(
            futures_util::stream::iter(runs.iter().map(|r| fetch_run(client, urls, r, &file)))
                .buffer_unordered(jobs)
                .collect(),
        )?;
        for r in fetched {
            stats.fetched += r?;
        }
        if self.cancel.is_cancelled() {
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
                let got = crate::http::block_on(get_capped(
                    client,
                    &urls[0],
                    Some((off, len as u64)),
                    len as u64,
                ))??;
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
            self.emit(Progress::Downloading {
                name: &asset.name,
                done: off + len as u64,
                total: Some(total),
            });
            if self.cancel.is_cancelled() {
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
