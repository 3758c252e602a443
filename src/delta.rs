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

use crate::chunk_index::{ChunkIndex, MAX_INDEX_BYTES};
use crate::digest::Sha256Digest;

use crate::manifest::Asset;
use crate::state::{StateDir, TmpKind};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The longest byte run fetched in one Range request: long runs are split so that several
/// requests run in parallel and a request's buffer stays small.
pub const MAX_RUN: u64 = 8 << 20;

/// A verified local file whose chunks can be copied.
pub(crate) struct Seed {
    pub(crate) path: PathBuf,
    pub(crate) index: ChunkIndex,
}

/// What a patch of one asset would use and save.
pub(crate) struct Proposal {
    pub(crate) index: ChunkIndex,
    pub(crate) seeds: Vec<Seed>,
    pub(crate) reused: u64,
}

/// Whether an asset could be patched at all: an index, and an HTTP or registry source for
/// Range requests.
pub(crate) fn patchable(asset: &Asset) -> bool {
    asset.index.is_some() && range_urls(asset).next().is_some()
}

pub(crate) fn is_remote(u: &str) -> bool {
    u.starts_with("http://") || u.starts_with("https://") || u.starts_with("oci://")
}

pub(crate) fn range_urls(asset: &Asset) -> impl Iterator<Item = &String> {
    asset.urls.iter().filter(|u| is_remote(u))
}

/// A request target: the URL, and the `Authorization` to send with it (registries).
pub(crate) type Target = (String, Option<String>);

/// The HTTP target of `url` for the content `digest`: itself, or for `oci://HOST/REPO` the
/// registry's blob URL with an authorization (the blob is named by its digest).
pub(crate) async fn resolve(
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

pub(crate) fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}


/// Where the bytes of one chunk of the new file come from.
pub(crate) struct Planned {
    pub(crate) off: u64,
    pub(crate) chunk: crate::chunk_index::Chunk,
    /// A seed region of the chunk's length holding it (whole, or all but `fetch`).
    pub(crate) seed: Option<(usize, u64)>,
    /// Byte ranges `[a, e)` of the new file to fetch for this chunk (none: all from the seed).
    pub(crate) fetch: Vec<(u64, u64)>,
}

/// Decides, chunk by chunk, what is copied and what is fetched. A chunk a seed holds is copied
/// whole. A chunk no seed holds is looked for where the seed had the bytes around it (right
/// after the previous chunk's seed region: a block rewritten in place in a filesystem image):
/// the cells whose sub-hash matches the seed's bytes there are copied, the others fetched.
pub(crate) fn layout(index: &ChunkIndex, seeds: &[Seed], files: &[File]) -> Vec<Planned> {
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
pub(crate) fn fetch_runs(chunks: &[Planned]) -> Vec<(u64, u64)> {
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
pub(crate) struct Stats {
    pub(crate) fetched: u64,
    pub(crate) reused: u64,
    pub(crate) seed_misses: u64,
}

/// Digest -> (seed number, offset), the first seed in preference order winning.
pub(crate) fn chunk_map(seeds: &[Seed]) -> HashMap<Sha256Digest, (usize, u64)> {
    let mut map = HashMap::new();
    for (i, s) in seeds.iter().enumerate() {
        for (off, c) in s.index.with_offsets() {
            map.entry(c.sha256).or_insert((i, off));
        }
    }
    map
}

/// Bytes of `index` the seeds hold, and bytes they do not.
pub(crate) fn reuse(index: &ChunkIndex, seeds: &[Seed]) -> (u64, u64) {
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
pub(crate) async fn fetch_run(
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
pub(crate) async fn get_capped(
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
pub(crate) fn read_capped(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let f = File::open(path).ok()?;
    let mut b = Vec::new();
    f.take(MAX_INDEX_BYTES + 1).read_to_end(&mut b).ok()?;
    (b.len() as u64 <= MAX_INDEX_BYTES).then_some(b)
}

/// Takes over the `.patch` file a killed process left for `key` (the caller holds the asset's
/// lock, so its writer is gone), under this process's name; the newest wins, others go.
pub(crate) fn adopt_killed(state: &StateDir, key: &str) -> Option<PathBuf> {
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(state.tmp())
        .ok()?
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            crate::state::parse_tmp(&n).is_some_and(|t| t.key == key && t.kind == TmpKind::Patch)
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    found.sort();
    let (_, newest) = found.pop()?;
    for (_, old) in found {
        let _ = std::fs::remove_file(old);
    }
    let ours = state.tmp_file(key, TmpKind::PatchSeed);
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
