//! The second stage of a prepare: running one planned step on a worker, under the asset's
//! lock. It looks again under the lock (another process may have done the work), then
//! changes the mode, hashes, copies from a donor, or fetches, and places atomically. Its
//! [`Done`] goes to the committer; nothing here opens a write transaction.

use crate::digest::Sha256Digest;
use crate::error::{Error, IoContext, Result};
use crate::ledger::{Event, Method, Record};
use crate::lock::FileLock;
use crate::manifest::Asset;
use crate::place;
use crate::prepare::Prepare;
use crate::prepare::judge::{Expected, Verdict, judge};
use crate::prepare::plan::{Action, Step};
use crate::report::{Outcome, Progress};
use crate::stamp::{self, FileKind, Stamp};
use crate::state::LockKey;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A finished step, on its way to the committer.
pub(crate) struct Done {
    pub(crate) outcome: Outcome,
    pub(crate) size: u64,
    pub(crate) bytes_hashed: u64,
    pub(crate) bytes_downloaded: u64,
    pub(crate) bytes_copied: u64,
    /// Bytes of a patch taken from seeds.
    pub(crate) bytes_reused: u64,
    /// Why a planned patch became a whole download.
    pub(crate) patch_fallback: Option<String>,
    /// The record to write; `None` when there is nothing new to remember (or the file changed
    /// right after placement and cannot be vouched for).
    pub(crate) record: Option<Record>,
    /// Held until the record is committed, so another process that takes the lock next sees it.
    pub(crate) lock: Option<FileLock>,
    /// Added to the event's reason.
    pub(crate) note: Option<String>,
}

impl Done {
    pub(crate) fn new(outcome: Outcome, size: u64, lock: Option<FileLock>) -> Done {
        Done {
            outcome,
            size,
            bytes_hashed: 0,
            bytes_downloaded: 0,
            bytes_copied: 0,
            bytes_reused: 0,
            patch_fallback: None,
            record: None,
            lock,
            note: None,
        }
    }
}

/// A file adopted (see [`Store::adopt`]).
struct Adopted {
    /// The stamp of the trusted inode at the asset path.
    stamp: Stamp,
    hashed: u64,
    /// Bytes written to make a fresh inode (0 in place or by reflink).
    copied: u64,
    record: Option<Record>,
    /// The way taken and why (the event's reason).
    how: String,
}

/// What hashing the file at an asset path came to.
enum HashOutcome {
    /// It hashed to the manifest digest.
    Done(Done),
    /// It hashed to `actual` (`bytes` read); the lock is handed back for the repair.
    Mismatch {
        actual: Sha256Digest,
        bytes: u64,
        lock: Option<FileLock>,
    },
}

/// How an adoption ended.
enum AdoptOutcome {
    Adopted(Adopted),
    /// The file hashed to `actual` (`bytes` read); nothing was recorded.
    Mismatch {
        actual: Sha256Digest,
        bytes: u64,
    },
}

/// How an adoption under a lease ended.
enum Leased {
    Proven(Adopted),
    Mismatch(Sha256Digest, u64),
    /// No proof after all (a writer showed up): copy instead.
    Lost(&'static str),
}

/// What was wrong with the file at an asset path.
pub(crate) enum Wrong {
    /// Its content hashed to another digest.
    Digest(Sha256Digest),
    /// Its size contradicts the manifest (not hashed).
    Size { expected: u64, actual: u64 },
    /// It is not a regular file.
    Kind(FileKind),
}

impl Wrong {
    fn describe(&self) -> String {
        match self {
            Wrong::Digest(d) => format!("sha256 {d}"),
            Wrong::Size { expected, actual } => format!("size {actual}, expected {expected}"),
            Wrong::Kind(kind) => format!("a {} is at the asset path", kind_name(*kind)),
        }
    }
}

/// An event for the ledger's log.
pub(crate) fn event(asset: &Asset, version: &str, outcome: &str, reason: &str) -> Event {
    Event {
        at_ns: stamp::wall_now_ns(),
        path: asset.path.to_string(),
        name: asset.name.clone(),
        outcome: outcome.into(),
        reason: reason.into(),
        manifest_version: version.into(),
        pid: std::process::id(),
    }
}

/// Whether an I/O error means "this store is read-only to us" (a read-only mount, a foreign
/// store): verification then still runs, only placement and records are skipped.
fn is_read_only(e: &Error) -> bool {
    let io = match e {
        Error::Io { source, .. } | Error::AssetIo { source, .. } => source,
        _ => return false,
    };
    matches!(
        io.raw_os_error(),
        Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM)
    )
}

impl Prepare<'_> {
    /// The asset's lock: single flight across processes. `None` when the state dir cannot be
    /// written (a read-only mount, another user's store): the step then runs read-only.
    fn lock(&self, asset: &Asset) -> Result<Option<FileLock>> {
        // ROOT on a read-only mount is a read-only store: verify, write nothing.
        if rustix::fs::statvfs(&self.ctx.root)
            .is_ok_and(|st| st.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY))
        {
            tracing::debug!(
                "asset {}: ROOT is read-only; verifying read-only",
                asset.name
            );
            return Ok(None);
        }
        let (state, key) = (&self.ctx.state, LockKey::Asset(&asset.path));
        match FileLock::try_exclusive(state, key) {
            Ok(Some(l)) => Ok(Some(l)),
            Ok(None) => {
                self.emit(Progress::Waiting { name: &asset.name });
                tracing::info!("asset {}: waiting for another process", asset.name);
                // Interruptible: a cancel (SIGINT/SIGTERM in the CLI) ends the wait.
                match FileLock::exclusive_until(state, key, &|| self.cancel.is_cancelled())? {
                    Some(l) => Ok(Some(l)),
                    None => Err(Error::Cancelled {
                        name: asset.name.clone(),
                    }),
                }
            }
            Err(e) if is_read_only(&e) => {
                tracing::debug!("asset {}: no lock ({e}); verifying read-only", asset.name);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Runs one step (anything but `cached`) under the asset's lock.
    pub(crate) fn run_step(&self, asset: &Asset, step: &Step) -> Result<Done> {
        let lock = self.lock(asset)?;
        let root = &self.ctx.root;
        let path = place::resolve(root, &asset.path, &asset.name)?;
        let expected = Expected::of(asset);
        let policy = step.policy;
        // Look again under the lock: another process may have verified or placed it.
        let live = Stamp::of_path(&path).at(&path, "stat")?;
        let record = self.ctx.record_of(asset);
        let verity = live_verity(&path, record.as_ref(), live.as_ref());
        let verdict = judge(
            record.as_ref(),
            live.as_ref(),
            &expected,
            policy,
            verity.as_ref(),
        );
        if verdict.is_trusted() {
            return Ok(Done::new(
                Outcome::Cached,
                live.map(|l| l.size).unwrap_or(0),
                lock,
            ));
        }
        if let (Verdict::Mode { .. }, Some(rec), Some(live)) = (&verdict, &record, &live) {
            return self.chmod(asset, &path, rec, live, lock);
        }
        if let Action::Patch { .. } = &step.action {
            // Still to be fetched under the lock (absent, the wrong size, or recorded as an
            // older digest): patch it; anything else is handled as any step.
            let wrong = match &verdict {
                Verdict::Missing => Some(None),
                Verdict::WrongSize { expected, actual } => Some(Some(Wrong::Size {
                    expected: *expected,
                    actual: *actual,
                })),
                Verdict::Stale(f) if f == &[crate::prepare::judge::Field::Digest] => {
                    record.as_ref().map(|r| Some(Wrong::Digest(r.sha256)))
                }
                _ => None,
            };
            if let Some(wrong) = wrong {
                return self.patch_step(asset, &path, wrong, record.as_ref(), live.as_ref(), lock);
            }
        }
        let mut wrong: Option<Wrong> = None;
        match live.map(|l| l.kind) {
            Some(FileKind::Regular) => {
                if let Verdict::WrongSize { expected, actual } = verdict {
                    wrong = Some(Wrong::Size { expected, actual });
                } else {
                    match self.hash(asset, &path, &verdict, record.as_ref(), lock)? {
                        HashOutcome::Done(done) => return Ok(done),
                        HashOutcome::Mismatch {
                            actual,
                            bytes,
                            lock: lock_back,
                        } => {
                            return self.fetch_step(
                                asset,
                                &path,
                                Some(Wrong::Digest(actual)),
                                bytes,
                                lock_back,
                            );
                        }
                    }
                }
            }
            Some(kind) => wrong = Some(Wrong::Kind(kind)),
            None => {
                if let Action::Link { from } = &step.action {
                    match self.link(asset, from) {
                        Ok(mut done) => {
                            done.lock = lock;
                            return Ok(done);
                        }
                        Err(e) => {
                            tracing::info!(
                                "asset {}: copy from {} failed ({e}); downloading",
                                asset.name,
                                from.display()
                            );
                        }
                    }
                }
            }
        }
        self.fetch_step(asset, &path, wrong, 0, lock)
    }

    /// Puts drifted permission bits back through the file's own descriptor, then re-stamps
    /// the record (the chmod moves ctime) once the filesystem clock has passed it.
    fn chmod(
        &self,
        asset: &Asset,
        path: &Path,
        rec: &Record,
        live: &Stamp,
        lock: Option<FileLock>,
    ) -> Result<Done> {
        use std::os::unix::fs::PermissionsExt;
        let file = place::open_nofollow(path).at(path, "open")?;
        let before = Stamp::of_file(&file).at(path, "fstat")?;
        if before != *live {
            // Changed since the look: hash it as any stale file.
            return Err(Error::Unstable {
                name: asset.name.clone(),
                path: path.into(),
            });
        }
        let mode = Expected::of(asset).mode;
        if lock.is_none() {
            // Read-only store: the content is vouched for; the mode stays as it is.
            return Ok(Done::new(Outcome::Cached, live.size, lock));
        }
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .at(path, "chmod")?;
        let after = Stamp::of_file(&file).at(path, "fstat")?;
        let dir = path.parent().unwrap_or(&self.ctx.root);
        let settled = stamp::settle(dir, after.ctime_ns, Duration::from_millis(50))
            .ok()
            .flatten();
        let now = Stamp::of_file(&file).at(path, "fstat")?;
        let mut done = Done::new(Outcome::Cached, live.size, lock);
        done.note = Some(format!(
            "mode put back from {:04o} to {mode:04o}",
            live.perm
        ));
        if now == after {
            let mut r = Record::new(
                rec.sha256,
                &now,
                &self.manifest.version,
                settled.unwrap_or_else(stamp::wall_now_ns),
                rec.method,
                settled.is_none(),
            );
            r.verity = rec.verity;
            done.record = Some(r);
        }
        Ok(done)
    }

    /// Hashes the file at `path`. A file whose record vouches for its inode (`verify: always`)
    /// is hashed in place; any other file is adopted (see [`Store::adopt`]): in place only
    /// where a read lease proves no writer exists, else onto a fresh inode nobody else holds
    /// open or mapped. On a mismatch returns the digest (and bytes hashed) so the caller
    /// repairs it.
    fn hash(
        &self,
        asset: &Asset,
        path: &Path,
        verdict: &Verdict,
        record: Option<&Record>,
        lock: Option<FileLock>,
    ) -> Result<HashOutcome> {
        let version = &self.manifest.version;
        let in_place = *verdict == Verdict::Always || lock.is_none();
        if !in_place {
            match self.adopt(asset, path) {
                Ok(AdoptOutcome::Adopted(adopted)) => {
                    let mut done = Done::new(Outcome::Verified, adopted.stamp.size, lock);
                    done.bytes_hashed = adopted.hashed;
                    done.bytes_copied = adopted.copied;
                    done.record = adopted.record;
                    done.note = Some(adopted.how);
                    return Ok(HashOutcome::Done(done));
                }
                Ok(AdoptOutcome::Mismatch { actual, bytes }) => {
                    return Ok(HashOutcome::Mismatch {
                        actual,
                        bytes,
                        lock,
                    });
                }
                Err(e) if is_read_only(&e) => {
                    tracing::debug!(
                        "asset {}: cannot place a copy ({e}); hashing in place",
                        asset.name
                    );
                }
                Err(e) => return Err(e),
            }
        }
        let (hashed, at, racy, bytes) = self.hash_settled(asset, path)?;
        if hashed.digest != asset.sha256 {
            return Ok(HashOutcome::Mismatch {
                actual: hashed.digest,
                bytes,
                lock,
            });
        }
        let mut done = Done::new(Outcome::Verified, hashed.stamp.size, lock);
        done.bytes_hashed = bytes;
        let unchanged = record.is_some_and(|r| {
            r.sha256 == hashed.digest && !r.racy && r.stamp_for(&hashed.stamp) == hashed.stamp
        });
        if done.lock.is_none() || unchanged {
            // `verify: always` on an unchanged file: nothing new to remember, so no write
            // transaction and no fsync on every boot. Read-only store: nothing can be written.
            return Ok(HashOutcome::Done(done));
        }
        done.record = Some(Record::new(
            hashed.digest,
            &hashed.stamp,
            version,
            at,
            Method::Hashed,
            racy,
        ));
        Ok(HashOutcome::Done(done))
    }

    /// Adopts the file at `path`, which bootvault did not place. A writable shared mapping
    /// taken before verification could change its bytes afterwards without moving its times,
    /// so the hash is trusted only on an inode no writer can hold:
    /// 1. the file itself, under a read lease (Linux), which the kernel grants only while no
    ///    descriptor or mapping of it is open for writing, and breaks when one is opened; the
    ///    lease is held until the record is made, so a writer cannot slip in before it;
    /// 2. else a reflink of it (a fresh inode sharing its blocks), hashed and placed;
    /// 3. else a byte copy onto a fresh inode, hashed on the way and placed.
    ///
    /// [`AdoptOutcome::Mismatch`] on a mismatch. The way taken, and why the cheaper ones did not
    /// apply, is in [`Adopted::how`] (the event's reason, so `debug why` shows it).
    fn adopt(&self, asset: &Asset, path: &Path) -> Result<AdoptOutcome> {
        let src = place::open_nofollow(path).at(path, "open")?;
        let no_lease = if self.ctx.opts.adopt_by_copy {
            "leases not used for this store".to_string()
        } else {
            match crate::sys::read_lease(&src) {
                Ok(lease) => match self.adopt_leased(asset, path, &src, &lease)? {
                    Leased::Proven(adopted) => return Ok(AdoptOutcome::Adopted(adopted)),
                    Leased::Mismatch(actual, bytes) => {
                        return Ok(AdoptOutcome::Mismatch { actual, bytes });
                    }
                    Leased::Lost(why) => why.to_string(),
                },
                Err(why) => why,
            }
        };
        tracing::debug!("asset {}: not adopted in place: {no_lease}", asset.name);
        let (placed, bytes, fresh) = match self.copy_onto_fresh_inode(asset, &src)? {
            place::CopyOutcome::Placed {
                stamp,
                bytes,
                fresh,
            } => (stamp, bytes, fresh),
            place::CopyOutcome::Mismatch { actual, bytes } => {
                return Ok(AdoptOutcome::Mismatch { actual, bytes });
            }
        };
        drop(src);
        let (how, copied) = match fresh {
            place::Fresh::Reflinked => (
                format!("adopted by reflink onto a fresh inode (no read lease: {no_lease})"),
                0,
            ),
            place::Fresh::Copied { no_reflink } => (
                format!(
                    "adopted by copy onto a fresh inode (no read lease: {no_lease}; no reflink: \
                     {no_reflink})"
                ),
                bytes,
            ),
        };
        // The fresh inode is bootvault's: seal it as a download is sealed.
        let version = &self.manifest.version;
        let record = self.sealed_record(asset, path, placed, version, Method::Hashed)?;
        Ok(AdoptOutcome::Adopted(Adopted {
            stamp: placed,
            hashed: bytes,
            copied,
            record,
            how,
        }))
    }

    /// Hashes `src` (open read-only at `path`) under `lease`, puts its mode right and makes its
    /// record while the lease still holds. Any sign of a writer (the lease broken, the stamp
    /// moved) makes the proof fail: the caller then copies.
    fn adopt_leased(
        &self,
        asset: &Asset,
        path: &Path,
        src: &std::fs::File,
        lease: &crate::sys::ReadLease<'_>,
    ) -> Result<Leased> {
        use std::os::unix::fs::PermissionsExt;
        let before = Stamp::of_file(src).at(path, "fstat")?;
        let mut progress = verifying(self, asset);
        let (digest, bytes) = crate::digest::hash_file(src, &mut progress).at(path, "read")?;
        let after = Stamp::of_file(src).at(path, "fstat")?;
        if !lease.held() {
            return Ok(Leased::Lost("a writer opened the file during the hash"));
        }
        if before != after || bytes != after.size {
            return Ok(Leased::Lost("the file changed during the hash"));
        }
        if digest != asset.sha256 {
            return Ok(Leased::Mismatch(digest, bytes));
        }
        let mode = Expected::of(asset).mode;
        if after.perm != mode {
            // A failed chmod (another user's file) leaves the mode for the next look to put
            // back; the content is vouched for either way.
            if let Err(e) = src.set_permissions(std::fs::Permissions::from_mode(mode)) {
                tracing::debug!("asset {}: mode not set on adoption: {e}", asset.name);
            }
        }
        let stamp = Stamp::of_file(src).at(path, "fstat")?;
        let version = &self.manifest.version;
        let record = self.sealed_record(asset, path, stamp, version, Method::Hashed)?;
        if !lease.held() {
            return Ok(Leased::Lost(
                "a writer opened the file before it was recorded",
            ));
        }
        Ok(Leased::Proven(Adopted {
            stamp,
            hashed: bytes,
            copied: 0,
            record,
            how: "adopted in place: a read lease proved no writer held it".into(),
        }))
    }

    /// Copies `src` onto a fresh inode at the asset's path, hashing on the way, with the
    /// manifest mode (see [`place::copy_into_place`]).
    fn copy_onto_fresh_inode(
        &self,
        asset: &Asset,
        src: &std::fs::File,
    ) -> Result<place::CopyOutcome> {
        let mut progress = verifying(self, asset);
        place::copy_into_place(
            src,
            &self.ctx.root,
            &asset.path,
            &self.ctx.state,
            Expected::of(asset).mode,
            &asset.sha256,
            &asset.name,
            &mut progress,
        )
    }

    /// Hashes in place; a racy result is hashed once more after the filesystem clock has
    /// moved on, so the record it leaves is clean. Returns (hash, verified_at, racy, bytes).
    fn hash_settled(&self, asset: &Asset, path: &Path) -> Result<(place::Hashed, i64, bool, u64)> {
        let mut progress = verifying(self, asset);
        let first = place::hash_in_place(path, &asset.name, &mut progress)?;
        let mut bytes = first.bytes;
        if !first.stamp.is_racy(self.probe) || first.digest != asset.sha256 {
            return Ok((first, self.probe, false, bytes));
        }
        let dir = path.parent().unwrap_or(&self.ctx.root);
        let Some(now) = stamp::settle(
            dir,
            first.stamp.ctime_ns.max(first.stamp.mtime_ns),
            Duration::from_millis(50),
        )
        .ok()
        .flatten() else {
            return Ok((first, self.probe, true, bytes));
        };
        let second = place::hash_in_place(path, &asset.name, &mut progress)?;
        bytes += second.bytes;
        let racy = second.stamp.is_racy(now);
        Ok((second, now, racy, bytes))
    }

    /// Copies a verified donor with the same digest into place, hashing on the way.
    fn link(&self, asset: &Asset, from: &Path) -> Result<Done> {
        let src = place::open_nofollow(from).at(from, "open donor")?;
        let path = self.ctx.root.join(&asset.path);
        match self.copy_onto_fresh_inode(asset, &src)? {
            place::CopyOutcome::Placed {
                stamp: placed,
                bytes: copied,
                fresh,
            } => {
                let mut done = Done::new(Outcome::Linked, placed.size, None);
                done.bytes_hashed = copied;
                let how = if fresh == place::Fresh::Reflinked {
                    "reflinked"
                } else {
                    done.bytes_copied = copied;
                    "copied"
                };
                done.note = Some(format!("{how} from {}", from.display()));
                done.record = self.sealed_record(
                    asset,
                    &path,
                    placed,
                    &self.manifest.version,
                    Method::Copied,
                )?;
                Ok(done)
            }
            place::CopyOutcome::Mismatch { actual, .. } => Err(Error::Mismatch {
                name: asset.name.clone(),
                path: from.into(),
                expected: asset.sha256,
                actual,
            }),
        }
    }

    /// Downloads a good copy (the file is absent, or `wrong`) and places it.
    pub(crate) fn fetch_step(
        &self,
        asset: &Asset,
        path: &Path,
        wrong: Option<Wrong>,
        hashed: u64,
        lock: Option<FileLock>,
    ) -> Result<Done> {
        // Offline, only local (`file://`) sources may be used.
        let usable: Vec<String> = asset
            .urls
            .iter()
            .filter(|u| !self.ctx.opts.offline || u.starts_with("file:"))
            .cloned()
            .collect();
        if usable.is_empty() {
            let why = if asset.urls.is_empty() {
                "no URL to fetch from"
            } else {
                "offline"
            };
            return Err(self.unusable(asset, path, wrong, why));
        }
        if lock.is_none() {
            return Err(self.unusable(
                asset,
                path,
                wrong,
                "the store is read-only (a read-only mount, or a state dir that is not \
                 writable), so nothing can be downloaded",
            ));
        }
        let outcome = if wrong.is_some() {
            Outcome::Repaired
        } else {
            Outcome::Downloaded
        };
        let mut done = self.fetch_and_place(asset, &usable, path)?;
        self.remember_downloaded_index(asset);
        done.outcome = outcome;
        done.bytes_hashed += hashed;
        done.lock = lock;
        if let Some(w) = &wrong {
            done.note = Some(format!("file was wrong ({})", w.describe()));
        }
        if done.record.is_none() {
            let n = "changed right after placement, not recorded";
            done.note = Some(match done.note.take() {
                Some(prev) => format!("{prev}; {n}"),
                None => n.into(),
            });
        }
        Ok(done)
    }

    /// The error for an asset that is absent or wrong and cannot be fetched.
    fn unusable(&self, asset: &Asset, path: &Path, wrong: Option<Wrong>, why: &str) -> Error {
        let path: PathBuf = path.into();
        match wrong {
            None => Error::Missing {
                name: asset.name.clone(),
                path,
                why: why.into(),
            },
            Some(Wrong::Kind(kind)) => Error::UnsafePath {
                name: asset.name.clone(),
                path,
                why: format!(
                    "a {} is at the asset path; never trusted ({why})",
                    kind_name(kind)
                ),
            },
            Some(Wrong::Digest(actual)) => Error::Mismatch {
                name: asset.name.clone(),
                path,
                expected: asset.sha256,
                actual,
            },
            // Not hashed yet (the size alone proved it wrong): hash it, so the error says
            // what is there; a file that cannot be read is reported by its size.
            Some(Wrong::Size { expected, actual }) => {
                match place::hash_in_place(&path, &asset.name, &mut |_| {}) {
                    Ok(h) => Error::Mismatch {
                        name: asset.name.clone(),
                        path,
                        expected: asset.sha256,
                        actual: h.digest,
                    },
                    Err(_) => Error::SizeMismatch {
                        name: asset.name.clone(),
                        path,
                        expected,
                        actual,
                    },
                }
            }
        }
    }

    fn fetch_and_place(&self, asset: &Asset, urls: &[String], path: &Path) -> Result<Done> {
        let key = crate::state::file_key(&asset.path);
        let name = asset.name.as_str();
        let progress =
            |done: u64, total: Option<u64>| self.emit(Progress::Downloading { name, done, total });
        let req = crate::fetch::Request {
            name,
            urls,
            size: asset.size,
            sha256: asset.sha256,
            state: &self.ctx.state,
            key: &key,
            progress: &progress,
            cancel: &self.cancel,
        };
        let fetched = self.ctx.fetcher()?.fetch(&req)?;
        let mut hashed = fetched.size - fetched.bytes_resumed;
        let mode = Expected::of(asset).mode;
        let placed = place::place(
            &fetched.path,
            &fetched.file,
            &self.ctx.root,
            &asset.path,
            mode,
            &asset.sha256,
            name,
        );
        if placed.is_err() {
            let _ = std::fs::remove_file(&fetched.path);
        }
        let (stamp_placed, rehashed) = placed?;
        hashed += rehashed;
        // The verity tier (this needs no writer open, so the download's handle is closed first).
        drop(fetched.file);
        let mut done = Done::new(Outcome::Downloaded, fetched.size, None);
        done.bytes_hashed = hashed;
        done.bytes_downloaded = fetched.bytes_downloaded;
        done.record = self.sealed_record(
            asset,
            path,
            stamp_placed,
            &self.manifest.version,
            Method::Downloaded,
        )?;
        Ok(done)
    }

    /// Enables fs-verity on a file bootvault just placed, where the filesystem supports it:
    /// from then on the kernel checks every read and the warm check is one measurement.
    /// Returns the stamp after sealing (enabling moves ctime) and the verity digest.
    fn seal(&self, path: &Path, placed: Stamp) -> Result<(Stamp, Option<Sha256Digest>)> {
        let available = *self.ctx.verity.get_or_init(|| {
            crate::verity::probe(&self.ctx.root) == crate::verity::Support::Available
        });
        let verity = if available { enable_verity(path) } else { None };
        let stamp = match verity {
            Some(_) => Stamp::of_path(path).at(path, "stat")?.unwrap_or(placed),
            None => placed,
        };
        Ok((stamp, verity))
    }

    /// Seals a file bootvault just placed (see [`Store::seal`]) and returns its record: the
    /// method is `verity` when the seal took, else `method`.
    pub(crate) fn sealed_record(
        &self,
        asset: &Asset,
        path: &Path,
        placed: Stamp,
        version: &str,
        method: Method,
    ) -> Result<Option<Record>> {
        let (placed, verity) = self.seal(path, placed)?;
        let method = if verity.is_some() {
            Method::Verity
        } else {
            method
        };
        Ok(self.settled_record(asset, path, &placed, version, method, verity))
    }

    /// The record of a file bootvault just placed: wait for the filesystem clock to pass the
    /// placement, then check the inode is unchanged, so the record is not racy. `None` when
    /// it changed meanwhile.
    fn settled_record(
        &self,
        asset: &Asset,
        path: &Path,
        placed: &Stamp,
        version: &str,
        method: Method,
        verity: Option<Sha256Digest>,
    ) -> Option<Record> {
        let dir = path.parent().unwrap_or(&self.ctx.root);
        let settled = stamp::settle(
            dir,
            placed.ctime_ns.max(placed.mtime_ns),
            Duration::from_millis(50),
        )
        .ok()
        .flatten();
        let now = Stamp::of_path(path).ok().flatten();
        let rec = match (settled, now) {
            (Some(at), Some(s)) if s == *placed => {
                Some(Record::new(asset.sha256, &s, version, at, method, false))
            }
            (None, Some(s)) if s == *placed => Some(Record::new(
                asset.sha256,
                &s,
                version,
                stamp::wall_now_ns(),
                method,
                true,
            )),
            _ => None,
        };
        rec.map(|r| Record { verity, ..r })
    }
}

/// The `Verifying` progress of `asset`, for a hash or a copy.
fn verifying<'a>(call: &'a Prepare<'_>, asset: &'a Asset) -> impl FnMut(u64) + 'a {
    let total = asset.size.unwrap_or(0);
    move |done: u64| {
        call.emit(Progress::Verifying {
            name: &asset.name,
            done,
            total: total.max(done),
        })
    }
}

/// The live fs-verity measurement of the file at `path`, taken only when its record holds a
/// verity digest to compare with (an ioctl otherwise wasted on the warm path).
pub(crate) fn live_verity(
    path: &Path,
    record: Option<&Record>,
    live: Option<&Stamp>,
) -> Option<Sha256Digest> {
    match (record, live) {
        (Some(r), Some(l)) if r.verity.is_some() && l.kind == FileKind::Regular => {
            place::open_nofollow(path)
                .ok()
                .and_then(|f| crate::verity::measure(&f))
        }
        _ => None,
    }
}

/// Enables fs-verity on a placed file and returns its verity digest.
fn enable_verity(path: &Path) -> Option<Sha256Digest> {
    let file = place::open_nofollow(path).ok()?;
    if let Err(e) = crate::verity::enable(&file) {
        tracing::debug!("{}: fs-verity not enabled: {e}", path.display());
        return None;
    }
    crate::verity::measure(&file)
}

fn kind_name(kind: FileKind) -> &'static str {
    match kind {
        FileKind::Regular => "regular file",
        FileKind::Symlink => "symlink",
        FileKind::Directory => "directory",
        FileKind::Other => "special file (fifo, socket or device)",
    }
}
