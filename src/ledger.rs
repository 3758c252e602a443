//! The verification ledger: a redb file shared by every process that uses the store.
//!
//! Tables are versioned by name (`records_v1`, `events_v1`) and a `meta` table holds the
//! schema version, which the steps in `migrations/` bump. Values are bytes with a leading
//! format tag, then bincode 2; a value that does not decode is a miss, never a panic.
//!
//! Every open uses redb's `MultiWriter` mode. Reads (the warm path) use a read-only handle and
//! one read transaction, so they never write and never fsync. Writes are short transactions
//! taken with `try_begin_write` under a deadline, after all hashing is done. A missing,
//! corrupt or newer ledger degrades to "no records": it never fails a prepare and never yields
//! trust. A corrupt one is moved aside and recreated; a newer one is left untouched.


// The schema steps of this ledger (numbered, never reordered or edited once shipped). Public
// only with `__internals` (the workspace's tests): a step is a redb transaction.
#[path = "../migrations/mod.rs"]
pub mod migrations;

use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::stamp::Stamp;
use redb::{
    Builder, ConcurrencyMode, Database, ReadOnlyDatabase, ReadTransaction, ReadableDatabase,
    ReadableTable, ReadableTableMetadata, TableDefinition, TransactionError, WriteTransaction,
};
use serde::{Deserialize, Serialize};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `meta`: key → u64 (holds `schema_version`).
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// `records_v1`: path relative to ROOT → tagged record bytes.
pub(crate) const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records_v1");
/// `events_v1`: (ns since epoch, random) → tagged event bytes.
pub(crate) const EVENTS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("events_v1");
/// Key of the schema version in `meta`.
pub(crate) const SCHEMA_KEY: &str = "schema_version";
/// Manifest version → tagged [`Provenance`] (schema 3).
pub(crate) const MANIFESTS: TableDefinition<&str, &[u8]> = TableDefinition::new("manifests_v1");
const PROVENANCE_FORMAT_V1: u8 = 1;

/// Leading tag of a record value without a verity digest.
const RECORD_FORMAT_V1: u8 = 1;
/// Leading tag of a record value with a verity digest.
const RECORD_FORMAT_V2: u8 = 2;
/// Leading tag of an event value.
const EVENT_FORMAT_V1: u8 = 1;
/// How many events the ledger keeps (oldest dropped first).
pub const EVENT_CAP: u64 = 4096;

/// How a record earned its trust.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Method {
    /// The file on disk was hashed.
    Hashed,
    /// The file was fetched and hashed in the same pass as it was written.
    Downloaded,
    /// Imported from an arcbox-boot `.verified.json` (size and mtime matched at import).
    LegacyImport,
    /// The fs-verity digest was measured.
    Verity,
    /// Copied from another verified file with the same digest, hashed on the way.
    Copied,
}

impl Method {
    /// The spelling in JSON and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Hashed => "hashed",
            Method::Downloaded => "downloaded",
            Method::LegacyImport => "legacy-import",
            Method::Verity => "verity",
            Method::Copied => "copied",
        }
    }
}

/// One verification, as stored in `records_v1`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Record {
    /// The digest the content hashed to.
    pub sha256: Sha256Digest,
    /// Stamp fields at verification time.
    pub size: u64,
    /// mtime, ns.
    pub mtime_ns: i64,
    /// ctime, ns.
    pub ctime_ns: i64,
    /// Inode.
    pub ino: u64,
    /// Device.
    pub dev: u64,
    /// The manifest version of the prepare that verified it.
    pub manifest_version: String,
    /// When it was verified (filesystem clock where known), ns.
    pub verified_at_ns: i64,
    /// How trust was earned.
    pub method: Method,
    /// Taken in the same clock tick as the file's last change: never trusted.
    pub racy: bool,
    /// The fs-verity digest, when verity was enabled on the file (method `verity`).
    pub verity: Option<Sha256Digest>,
}

/// Wire form of a record without verity (tag 1). Frozen: never change its fields.
#[derive(Serialize, Deserialize)]
struct RecordV1 {
    sha256: Sha256Digest,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
    dev: u64,
    manifest_version: String,
    verified_at_ns: i64,
    method: Method,
    racy: bool,
}

/// Wire form of a record with a verity digest (tag 2). Frozen: never change its fields.
#[derive(Serialize, Deserialize)]
struct RecordV2 {
    base: RecordV1,
    verity: Sha256Digest,
}

impl Record {
    /// A record of `stamp` hashing to `sha256`.
    pub fn new(
        sha256: Sha256Digest,
        stamp: &Stamp,
        manifest_version: &str,
        verified_at_ns: i64,
        method: Method,
        racy: bool,
    ) -> Record {
        Record {
            sha256,
            size: stamp.size,
            mtime_ns: stamp.mtime_ns,
            ctime_ns: stamp.ctime_ns,
            ino: stamp.ino,
            dev: stamp.dev,
            manifest_version: manifest_version.to_string(),
            verified_at_ns,
            method,
            racy,
            verity: None,
        }
    }

    fn to_v1(&self) -> RecordV1 {
        RecordV1 {
            sha256: self.sha256,
            size: self.size,
            mtime_ns: self.mtime_ns,
            ctime_ns: self.ctime_ns,
            ino: self.ino,
            dev: self.dev,
            manifest_version: self.manifest_version.clone(),
            verified_at_ns: self.verified_at_ns,
            method: self.method,
            racy: self.racy,
        }
    }

    fn from_v1(v: RecordV1, verity: Option<Sha256Digest>) -> Record {
        Record {
            sha256: v.sha256,
            size: v.size,
            mtime_ns: v.mtime_ns,
            ctime_ns: v.ctime_ns,
            ino: v.ino,
            dev: v.dev,
            manifest_version: v.manifest_version,
            verified_at_ns: v.verified_at_ns,
            method: v.method,
            racy: v.racy,
            verity,
        }
    }

    /// The stamp this record vouches for (type and permission bits, which a record does not
    /// hold, taken from `live`).
    pub fn stamp_for(&self, live: &Stamp) -> Stamp {
        Stamp {
            size: self.size,
            mtime_ns: self.mtime_ns,
            ctime_ns: self.ctime_ns,
            ino: self.ino,
            dev: self.dev,
            kind: live.kind,
            perm: live.perm,
        }
    }

    internal_fn! {
        /// Tag byte, then bincode: tag 1 without a verity digest, tag 2 with one, so ledgers
        /// without verity stay readable by every release.
        fn encode(&self) -> Vec<u8> {
            match self.verity {
                None => encode_tagged(RECORD_FORMAT_V1, &self.to_v1()),
                Some(verity) => encode_tagged(
                    RECORD_FORMAT_V2,
                    &RecordV2 {
                        base: self.to_v1(),
                        verity,
                    },
                ),
            }
        }
    }

    internal_fn! {
        /// Decodes a value; `None` for an unknown tag or bytes that do not decode.
        fn decode(bytes: &[u8]) -> Option<Record> {
            match *bytes.first()? {
                RECORD_FORMAT_V1 => decode_tagged::<RecordV1>(RECORD_FORMAT_V1, bytes)
                    .map(|v| Record::from_v1(v, None)),
                RECORD_FORMAT_V2 => decode_tagged::<RecordV2>(RECORD_FORMAT_V2, bytes)
                    .map(|v| Record::from_v1(v.base, Some(v.verity))),
                _ => None,
            }
        }
    }
}

/// One entry of the events table: a non-cached outcome and its reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When, ns since the epoch.
    pub at_ns: i64,
    /// Asset path relative to ROOT.
    pub path: String,
    /// Asset name.
    pub name: String,
    /// `verified`, `downloaded`, `repaired`, `failed`, `imported`, `removed`.
    pub outcome: String,
    /// Why (the verdict, or the error).
    pub reason: String,
    /// Manifest version of the prepare.
    pub manifest_version: String,
    /// Process that wrote it.
    pub pid: u32,
}

impl Event {
    internal_fn! {
        /// Tag byte, then bincode.
        fn encode(&self) -> Vec<u8> {
            encode_tagged(EVENT_FORMAT_V1, self)
        }
    }
    internal_fn! {
        /// Decodes a value; `None` when it does not decode.
        fn decode(bytes: &[u8]) -> Option<Event> {
            decode_tagged(EVENT_FORMAT_V1, bytes)
        }
    }
}

/// Where a manifest version came from and who vouched for it (the `manifests_v1` table).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// The manifest's source as given (a file path, an `https://` URL, an `oci://` reference).
    pub source: String,
    /// The ID of the trusted minisign key whose signature was checked (as the minisign CLI
    /// prints it); `None` when none was required (a local file, a digest-pinned reference).
    pub signed_by: Option<String>,
    /// The OCI manifest digest the reference resolved to (registry manifests only).
    pub oci_digest: Option<String>,
    /// When it was first recorded for this version, ns since the epoch.
    pub recorded_at_ns: i64,
}

impl Provenance {
    internal_fn! {
        /// Encodes for the ledger: a format tag, then bincode.
        fn encode(&self) -> Vec<u8> {
            encode_tagged(PROVENANCE_FORMAT_V1, self)
        }
    }
    internal_fn! {
        /// Decodes a value; `None` when it does not decode.
        fn decode(bytes: &[u8]) -> Option<Provenance> {
            decode_tagged(PROVENANCE_FORMAT_V1, bytes)
        }
    }
    /// Whether `other` says the same thing (the time aside).
    fn same_as(&self, other: &Provenance) -> bool {
        self.source == other.source
            && self.signed_by == other.signed_by
            && self.oci_digest == other.oci_digest
    }
}

fn encode_tagged<T: Serialize>(tag: u8, value: &T) -> Vec<u8> {
    let mut out = vec![tag];
    // Encoding plain structs into a Vec cannot fail.
    out.extend(
        bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap_or_default(),
    );
    out
}

/// Most bytes that decoding one value may claim. A string's length prefix is read before its
/// bytes, so without a limit a damaged value claiming 2^60 bytes makes bincode allocate that
/// much and abort the process (found by fuzzing); with one, the value is just undecodable.
/// Real records and events are well under a kilobyte; the limit does not change the encoding.
const DECODE_LIMIT: usize = 16 << 20;

fn decode_tagged<T: for<'de> Deserialize<'de>>(tag: u8, bytes: &[u8]) -> Option<T> {
    let (&first, rest) = bytes.split_first()?;
    if first != tag {
        return None;
    }
    let config = bincode::config::standard().with_limit::<DECODE_LIMIT>();
    let (value, used) = bincode::serde::decode_from_slice::<T, _>(rest, config).ok()?;
    (used == rest.len()).then_some(value)
}

/// What a read of the ledger found, besides the records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LedgerState {
    /// A ledger of this schema.
    Ok,
    /// No ledger file yet.
    #[default]
    Absent,
    /// The ledger could not be read; it will be moved aside and rebuilt on the next write.
    Corrupt,
    /// A ledger written by a newer bootvault: left untouched, treated as empty.
    Newer,
    /// Another handle holds the file in an incompatible mode.
    Unavailable,
}

enum Handle {
    Closed,
    Read(Arc<ReadOnlyDatabase>),
    Write(Arc<Database>),
    Newer,
}

/// The ledger of one store.
pub struct Ledger {
    state: crate::state::StateDir,
    path: PathBuf,
    root: PathBuf,
    handle: Mutex<Handle>,
    write_deadline: Duration,
    warned: AtomicBool,
    /// A read failed on a file that opened: check the whole file when opening it to write.
    suspect: AtomicBool,
}

fn builder() -> Builder {
    let mut b = Builder::new();
    b.set_concurrency_mode(ConcurrencyMode::MultiWriter);
    // The ledger is small; the default 1 GiB cache would only cost address space.
    b.set_cache_size(4 * 1024 * 1024);
    b
}

fn redb_err(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Ledger {
        path: path.to_path_buf(),
        message: format!("{what}: {e}"),
    }
}

thread_local! {
    /// Set while redb runs on a file that may be damaged: its panics are expected, caught and
    /// reported as one warning, so the panic hook must not print them.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `catch_unwind` that keeps the panic message off stderr. redb may panic on a damaged file;
/// bootvault catches that and degrades to re-hashing, and a host's users must not read a
/// "thread panicked" block as a crash. The hook is installed once and chains to the hook that
/// was there before (the host's, or the default) for every panic outside these calls; the
/// crate docs ("The panic hook") tell hosts so, and tests/panic_hook.rs checks it.
fn catch_unwind<T>(f: AssertUnwindSafe<impl FnOnce() -> T>) -> std::thread::Result<T> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                previous(info);
            }
        }));
    });
    let was = QUIET.with(|q| q.replace(true));
    let r = std::panic::catch_unwind(f);
    QUIET.with(|q| q.set(was));
    r
}

/// Runs `f`, turning a panic inside redb (possible on a damaged file) into an error.
fn guarded<T>(path: &Path, what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => Err(redb_err(path, what, "the file is damaged")),
    }
}

enum OpenFailure {
    Corrupt(String),
    Newer,
    Other(String),
}

fn classify(path: &Path, e: redb::DatabaseError) -> OpenFailure {
    use redb::{DatabaseError as D, StorageError as S};
    match e {
        D::DatabaseAlreadyOpen | D::LockProtocolMismatch | D::TransactionInProgress => {
            OpenFailure::Other(e.to_string())
        }
        // A file cut short (UnexpectedEof) is damage, not a transient I/O problem.
        D::Storage(S::Io(io))
            if !matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            OpenFailure::Other(io.to_string())
        }
        D::Storage(S::Corrupted(msg))
            if msg.contains("file format version") && has_redb_magic(path) =>
        {
            OpenFailure::Newer
        }
        other => OpenFailure::Corrupt(other.to_string()),
    }
}

fn has_redb_magic(path: &Path) -> bool {
    use std::io::Read;
    let mut buf = [0u8; 9];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_ok()
        && buf == [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A]
}

fn schema_version(txn: &ReadTransaction) -> std::result::Result<u64, redb::Error> {
    match txn.open_table(META) {
        Ok(t) => Ok(t.get(SCHEMA_KEY)?.map(|v| v.value()).unwrap_or(0)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// Every entry of a `&str → tagged value` table that decodes, in key order (a missing table is
/// empty; a value that does not decode is skipped, never trusted).
fn decode_all<T>(
    txn: &ReadTransaction,
    table: TableDefinition<&str, &[u8]>,
    decode: fn(&[u8]) -> Option<T>,
) -> std::result::Result<Vec<(String, T)>, redb::Error> {
    let table = match txn.open_table(table) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for item in table.iter()? {
        let (k, v) = item?;
        if let Some(value) = decode(v.value()) {
            out.push((k.value().to_string(), value));
        }
    }
    Ok(out)
}

/// Writes `STATE/root` (the canonical ROOT) when it is missing: once, with the first write
/// handle. A failure (read-only) only means the next writer tries again.
fn record_root(state: &crate::state::StateDir, root: &Path) {
    let marker = state.root_marker();
    if std::fs::symlink_metadata(&marker).is_ok() {
        return;
    }
    let Ok(canon) = std::fs::canonicalize(root) else {
        return;
    };
    let tmp = state.root_marker_tmp();
    let text = format!("{}\n", canon.display());
    if std::fs::write(&tmp, text).is_ok() {
        // Never replaces one written meanwhile by another process: link, not rename.
        let _ = std::fs::hard_link(&tmp, &marker);
    }
    let _ = std::fs::remove_file(&tmp);
}

impl Ledger {
    /// The ledger of the state dir `state` (its `ledger.redb`) for the store rooted at `root`;
    /// nothing is opened yet.
    pub fn new(state: PathBuf, root: PathBuf) -> Ledger {
        let state = crate::state::StateDir::new(state);
        Ledger {
            path: state.ledger(),
            state,
            root,
            handle: Mutex::new(Handle::Closed),
            write_deadline: Duration::from_secs(10),
            warned: AtomicBool::new(false),
            suspect: AtomicBool::new(false),
        }
    }

    /// The ledger file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets how long a write waits for other writers before it gives up (the verification
    /// still counts; only the record is not kept).
    pub fn set_write_deadline(&mut self, d: Duration) {
        self.write_deadline = d;
    }

    fn warn_once(&self, msg: &str) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!("{msg}");
        }
    }

    /// Reads the records of `keys` in one read transaction. Never writes, never fails: any
    /// problem yields no records and says why in the state.
    pub fn read_many(&self, keys: &[&str]) -> (Vec<Option<Record>>, LedgerState) {
        let none = || vec![None; keys.len()];
        let reader = match self.reader() {
            Ok(Some(r)) => r,
            Ok(None) => return (none(), LedgerState::Absent),
            Err(state) => return (none(), state),
        };
        let result = guarded(&self.path, "read", || {
            let txn = reader
                .begin_read()
                .map_err(|e| redb_err(&self.path, "begin read", e))?;
            let version = schema_version(&txn).map_err(|e| redb_err(&self.path, "meta", e))?;
            if version > migrations::CURRENT {
                return Ok(None);
            }
            let table = match txn.open_table(RECORDS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Some(none())),
                Err(e) => return Err(redb_err(&self.path, "open records", e)),
            };
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                let value = table
                    .get(*key)
                    .map_err(|e| redb_err(&self.path, "get", e))?;
                out.push(value.and_then(|v| Record::decode(v.value())));
            }
            Ok(Some(out))
        });
        match result {
            Ok(Some(records)) => (records, LedgerState::Ok),
            Ok(None) => {
                self.warn_once(&format!(
                    "ledger {} was written by a newer bootvault; leaving it untouched and re-hashing",
                    self.path.display()
                ));
                // Never open it to write: even a read-write open rewrites its header.
                *self.handle.lock().unwrap_or_else(|p| p.into_inner()) = Handle::Newer;
                (none(), LedgerState::Newer)
            }
            Err(e) => {
                self.warn_once(&format!("{e}; re-hashing"));
                self.suspect.store(true, Ordering::Relaxed);
                self.reset_reader();
                (none(), LedgerState::Corrupt)
            }
        }
    }

    fn reset_reader(&self) {
        let mut h = self.handle.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*h, Handle::Read(_)) {
            *h = Handle::Closed;
        }
    }

    /// A handle to read from: the write handle when this process has one, else a read-only
    /// one (opened once and kept). `Ok(None)` when there is no ledger file.
    fn reader(
        &self,
    ) -> std::result::Result<Option<Arc<dyn ReadableDatabase + Send + Sync>>, LedgerState> {
        let mut h = self.handle.lock().unwrap_or_else(|p| p.into_inner());
        match &*h {
            Handle::Read(db) => return Ok(Some(db.clone())),
            Handle::Write(db) => return Ok(Some(db.clone())),
            Handle::Newer => return Err(LedgerState::Newer),
            Handle::Closed => {}
        }
        match std::fs::symlink_metadata(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Ok(m) if !m.is_file() => {
                // A fifo would block the open forever; a device or symlink is not ours.
                self.warn_once(&format!(
                    "ledger {} is not a regular file; re-hashing",
                    self.path.display()
                ));
                return Err(LedgerState::Unavailable);
            }
            _ => {}
        }
        let opened = catch_unwind(AssertUnwindSafe(|| builder().open_read_only(&self.path)));
        match opened {
            Ok(Ok(db)) => {
                let db = Arc::new(db);
                *h = Handle::Read(db.clone());
                Ok(Some(db))
            }
            // A process died holding a write handle: the file needs repair, which only a
            // read-write open does. Repair once rather than re-hash everything; the prepare
            // after a crash is not a warm one.
            Ok(Err(redb::DatabaseError::RepairAborted)) => {
                drop(h);
                tracing::info!(
                    "ledger {}: repairing after a crashed writer",
                    self.path.display()
                );
                match self.open_writer() {
                    Ok(Some(db)) => Ok(Some(db)),
                    Ok(None) => Err(LedgerState::Newer),
                    Err(e) => {
                        self.warn_once(&format!("{e}; re-hashing"));
                        Err(LedgerState::Unavailable)
                    }
                }
            }
            Ok(Err(e)) => match classify(&self.path, e) {
                OpenFailure::Newer => {
                    *h = Handle::Newer;
                    Err(LedgerState::Newer)
                }
                OpenFailure::Corrupt(msg) => {
                    self.suspect.store(true, Ordering::Relaxed);
                    self.warn_once(&format!(
                        "ledger {}: {msg}; re-hashing",
                        self.path.display()
                    ));
                    Err(LedgerState::Corrupt)
                }
                // e.g. a crashed writer left it needing repair: the next write repairs it.
                OpenFailure::Other(msg) => {
                    tracing::debug!("ledger {}: read-only open: {msg}", self.path.display());
                    Err(LedgerState::Unavailable)
                }
            },
            Err(_) => Err(LedgerState::Corrupt),
        }
    }

    /// The write handle, opening (and creating, migrating, or rebuilding) the ledger as needed.
    /// `Ok(None)` when the ledger is newer than this binary and must not be touched.
    fn writer(&self) -> Result<Option<Arc<Database>>> {
        // A read-write open rewrites the header, so look at the schema read-only first: a
        // newer ledger must stay byte-identical (this also covers `gc` and `migrate`).
        let first_open = matches!(
            *self.handle.lock().unwrap_or_else(|p| p.into_inner()),
            Handle::Closed | Handle::Read(_)
        );
        if first_open && self.path.exists() && self.read_many(&[]).1 == LedgerState::Newer {
            return Ok(None);
        }
        self.open_writer()
    }

    /// The write handle, without the read-only look at the schema first.
    fn open_writer(&self) -> Result<Option<Arc<Database>>> {
        let mut h = self.handle.lock().unwrap_or_else(|p| p.into_inner());
        match &*h {
            Handle::Write(db) => return Ok(Some(db.clone())),
            Handle::Newer => return Ok(None),
            Handle::Read(_) | Handle::Closed => {}
        }
        // Drop a read-only handle first: one process should hold one handle per file.
        *h = Handle::Closed;
        let dir = self.state.path();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create state dir", e))?;
        record_root(&self.state, &self.root);
        let db = match self.open_rw()? {
            Some(db) => db,
            None => {
                *h = Handle::Newer;
                self.warn_once(&format!(
                    "ledger {} was written by a newer bootvault; leaving it untouched",
                    self.path.display()
                ));
                return Ok(None);
            }
        };
        let db = Arc::new(db);
        match self.migrate(&db)? {
            true => {
                *h = Handle::Write(db.clone());
                Ok(Some(db))
            }
            false => {
                *h = Handle::Newer;
                Ok(None)
            }
        }
    }

    fn open_rw(&self) -> Result<Option<Database>> {
        if let Ok(m) = std::fs::symlink_metadata(&self.path)
            && !m.is_file()
        {
            return Err(redb_err(&self.path, "open", "not a regular file"));
        }
        // After a damaged read, verify every page: a plain open trusts the file and then panics.
        let check = self.suspect.load(Ordering::Relaxed);
        let attempt = || {
            catch_unwind(AssertUnwindSafe(|| {
                builder()
                    .set_check_integrity_on_open(check)
                    .create(&self.path)
            }))
        };
        match attempt() {
            Ok(Ok(db)) => return Ok(Some(db)),
            Ok(Err(e)) => match classify(&self.path, e) {
                OpenFailure::Newer => return Ok(None),
                OpenFailure::Other(msg) => return Err(redb_err(&self.path, "open", msg)),
                OpenFailure::Corrupt(_) => {}
            },
            Err(_) => {}
        }
        // Corrupt: move it aside under the ledger lock (re-checking under the lock, so two
        // processes never both move a file and lose the other's fresh ledger).
        let _guard = crate::lock::FileLock::exclusive(&self.state, crate::state::LockKey::Ledger)?;
        match attempt() {
            Ok(Ok(db)) => return Ok(Some(db)),
            Ok(Err(e)) => match classify(&self.path, e) {
                OpenFailure::Newer => return Ok(None),
                OpenFailure::Other(msg) => return Err(redb_err(&self.path, "open", msg)),
                // One warning line per process for a damaged ledger: the read that found it
                // may have said so already.
                OpenFailure::Corrupt(msg) => self.warn_once(&format!(
                    "ledger {} is corrupt ({msg}); moving it aside and rebuilding",
                    self.path.display()
                )),
            },
            Err(_) => self.warn_once(&format!(
                "ledger {} is corrupt; moving it aside and rebuilding",
                self.path.display()
            )),
        }
        let aside = self.state.corrupt_ledger(crate::stamp::wall_now_ns());
        std::fs::rename(&self.path, &aside)
            .map_err(|e| Error::io(&self.path, "move corrupt ledger aside", e))?;
        match attempt() {
            Ok(Ok(db)) => Ok(Some(db)),
            Ok(Err(e)) => Err(redb_err(&self.path, "recreate", e)),
            Err(_) => Err(redb_err(&self.path, "recreate", "the new file is damaged")),
        }
    }

    /// Brings the schema up to date. `false` when the ledger is newer than this binary.
    fn migrate(&self, db: &Database) -> Result<bool> {
        let version = {
            let txn = db
                .begin_read()
                .map_err(|e| redb_err(&self.path, "begin read", e))?;
            schema_version(&txn).map_err(|e| redb_err(&self.path, "meta", e))?
        };
        if version == migrations::CURRENT {
            return Ok(true);
        }
        if version > migrations::CURRENT {
            return Ok(false);
        }
        // A fresh ledger starts empty: nothing inside ROOT (a `.verified.json` the guest could
        // have written) is imported on its own; importing is an explicit operator act.
        self.write_with(db, move |txn| {
            // Another process may have migrated since the read above.
            let now = {
                let meta = txn.open_table(META)?;
                meta.get(SCHEMA_KEY)?.map(|v| v.value()).unwrap_or(0)
            };
            if now > migrations::CURRENT {
                return Ok(false);
            }
            migrations::apply(txn, now)?;
            Ok(true)
        })
    }

    fn write_with<R>(
        &self,
        db: &Database,
        f: impl FnOnce(&WriteTransaction) -> std::result::Result<R, redb::Error>,
    ) -> Result<R> {
        let start = Instant::now();
        let mut pause = Duration::from_micros(200);
        let txn = loop {
            match db.try_begin_write() {
                Ok(txn) => break txn,
                Err(TransactionError::WouldBlock) if start.elapsed() < self.write_deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
                Err(TransactionError::WouldBlock) => {
                    return Err(redb_err(
                        &self.path,
                        "write",
                        format!(
                            "another writer held the ledger for over {:?}",
                            self.write_deadline
                        ),
                    ));
                }
                Err(e) => return Err(redb_err(&self.path, "begin write", e)),
            }
        };
        let value = f(&txn).map_err(|e| redb_err(&self.path, "write", e))?;
        txn.commit()
            .map_err(|e| redb_err(&self.path, "commit", e))?;
        Ok(value)
    }

    /// Runs `f` in one short write transaction. `Ok(false)` when the ledger is newer than this
    /// binary and was left untouched.
    pub fn write(
        &self,
        f: impl FnOnce(&WriteTransaction) -> std::result::Result<(), redb::Error>,
    ) -> Result<bool> {
        let path = self.path.clone();
        guarded(&path, "write", || {
            let Some(db) = self.writer()? else {
                return Ok(false);
            };
            self.write_with(&db, f)?;
            Ok(true)
        })
    }

    /// Stores a record (and its event) for `key`.
    #[cfg_attr(not(feature = "__internals"), allow(dead_code))]
    pub fn put(&self, key: &str, record: &Record, event: Option<&Event>) -> Result<bool> {
        let bytes = record.encode();
        self.write(|txn| {
            txn.open_table(RECORDS)?.insert(key, bytes.as_slice())?;
            if let Some(ev) = event {
                append_event(txn, ev)?;
            }
            Ok(())
        })
    }

    /// Stores several records and events in one short write transaction (a group commit).
    /// Writes nothing when both are empty.
    pub fn put_many(
        &self,
        records: &[(&str, &Record)],
        events: &[&Event],
        provenance: Option<(&str, &Provenance)>,
    ) -> Result<bool> {
        if records.is_empty() && events.is_empty() && provenance.is_none() {
            return Ok(true);
        }
        let encoded: Vec<(&str, Vec<u8>)> =
            records.iter().map(|(k, r)| (*k, r.encode())).collect();
        self.write(|txn| {
            {
                let mut t = txn.open_table(RECORDS)?;
                for (k, bytes) in &encoded {
                    t.insert(*k, bytes.as_slice())?;
                }
            }
            if let Some((version, p)) = provenance {
                let mut t = txn.open_table(MANIFESTS)?;
                // First recorded wins its time; a different source or signer replaces it.
                let known = t
                    .get(version)?
                    .and_then(|v| Provenance::decode(v.value()))
                    .is_some_and(|old| old.same_as(p));
                if !known {
                    t.insert(version, p.encode().as_slice())?;
                }
            }
            for ev in events {
                append_event(txn, ev)?;
            }
            Ok(())
        })
    }

    /// Imports an arcbox-boot `.verified.json` (see `migrations::legacy`).
    pub fn import_legacy(&self, legacy: &Path) -> Result<migrations::legacy::ImportReport> {
        let (records, report) = migrations::legacy::plan(&self.root, legacy)?;
        let written = self.write(|txn| {
            let mut t = txn.open_table(RECORDS)?;
            for (rel, r) in &records {
                t.insert(rel.as_str(), r.encode().as_slice())?;
            }
            Ok(())
        })?;
        if !written {
            return Err(redb_err(
                &self.path,
                "import",
                "the ledger was written by a newer bootvault; left untouched",
            ));
        }
        Ok(report)
    }

    /// Removes the records of `keys`; returns how many existed.
    pub fn remove(&self, keys: &[String]) -> Result<usize> {
        let mut removed = 0;
        self.write(|txn| {
            let mut t = txn.open_table(RECORDS)?;
            for k in keys {
                if t.remove(k.as_str())?.is_some() {
                    removed += 1;
                }
            }
            Ok(())
        })?;
        Ok(removed)
    }

    /// Every record (for `debug ls` and `gc`), sorted by path.
    pub fn all(&self) -> (Vec<(String, Record)>, LedgerState) {
        self.scan(|txn| decode_all(txn, RECORDS, Record::decode))
    }

    /// Every manifest version's provenance, sorted by version.
    pub fn manifests(&self) -> Vec<(String, Provenance)> {
        self.scan(|txn| decode_all(txn, MANIFESTS, Provenance::decode))
            .0
    }

    /// Recent events, newest first, optionally for one path.
    pub fn events(&self, path: Option<&str>, limit: usize) -> Vec<Event> {
        let (events, _) = self.scan(|txn| {
            let table = match txn.open_table(EVENTS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            let mut out = Vec::new();
            for item in table.iter()?.rev() {
                let (_, v) = item?;
                if let Some(ev) = Event::decode(v.value())
                    && path.is_none_or(|p| ev.path == p)
                {
                    out.push(ev);
                    if out.len() >= limit {
                        break;
                    }
                }
            }
            Ok(out)
        });
        events
    }

    /// The path of the asset last recorded under the name `name`, from the newest event that
    /// names it (records are keyed by path; events carry the name), so `debug why NAME` works
    /// without the manifest.
    pub fn path_of_name(&self, name: &str) -> Option<String> {
        let (found, _) = self.scan(|txn| {
            let table = match txn.open_table(EVENTS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            for item in table.iter()?.rev() {
                let (_, v) = item?;
                if let Some(ev) = Event::decode(v.value())
                    && ev.name == name
                {
                    return Ok(vec![ev.path]);
                }
            }
            Ok(Vec::new())
        });
        found.into_iter().next()
    }

    /// The schema version on disk (0 when absent or unreadable).
    pub fn schema_version(&self) -> u64 {
        let (v, _) = self.scan(|txn| Ok(vec![schema_version(txn)?]));
        v.first().copied().unwrap_or(0)
    }

    fn scan<T>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> std::result::Result<Vec<T>, redb::Error>,
    ) -> (Vec<T>, LedgerState) {
        let reader = match self.reader() {
            Ok(Some(r)) => r,
            Ok(None) => return (Vec::new(), LedgerState::Absent),
            Err(state) => return (Vec::new(), state),
        };
        let r = guarded(&self.path, "read", || {
            let txn = reader
                .begin_read()
                .map_err(|e| redb_err(&self.path, "begin read", e))?;
            f(&txn).map_err(|e| redb_err(&self.path, "read", e))
        });
        match r {
            Ok(v) => (v, LedgerState::Ok),
            Err(e) => {
                self.warn_once(&e.to_string());
                (Vec::new(), LedgerState::Corrupt)
            }
        }
    }
}

fn append_event(txn: &WriteTransaction, ev: &Event) -> std::result::Result<(), redb::Error> {
    let mut t = txn.open_table(EVENTS)?;
    let key = (ev.at_ns.max(0) as u64, rand::random::<u64>());
    t.insert(key, ev.encode().as_slice())?;
    let len = t.len()?;
    for _ in EVENT_CAP..len {
        if t.pop_first()?.is_none() {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stamp::FileKind;

    fn sample() -> Record {
        let s = Stamp {
            size: 10,
            mtime_ns: 1,
            ctime_ns: 2,
            ino: 3,
            dev: 4,
            kind: FileKind::Regular,
            perm: 0o444,
        };
        Record::new(
            Sha256Digest([1; 32]),
            &s,
            "2026.11.0",
            5,
            Method::Downloaded,
            false,
        )
    }

    #[test]
    fn record_round_trips_and_rejects_unknown_tags_and_junk() {
        let r = sample();
        let bytes = r.encode();
        assert_eq!(bytes[0], RECORD_FORMAT_V1);
        assert_eq!(Record::decode(&bytes), Some(r));
        let mut other = bytes.clone();
        other[0] = 99;
        assert_eq!(Record::decode(&other), None);
        assert_eq!(Record::decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(Record::decode(&[]), None);
        let mut longer = bytes;
        longer.push(0);
        assert_eq!(Record::decode(&longer), None);
    }

    /// `bytes` with the length prefix of the one-byte string `marker` (the byte pair
    /// `[1, marker]`) replaced by a varint claiming 2^60 bytes.
    fn with_huge_length(bytes: &[u8], marker: u8) -> Vec<u8> {
        let at = bytes
            .windows(2)
            .position(|w| w == [1, marker])
            .expect("the marker string is in the encoding");
        let mut out = bytes[..at].to_vec();
        out.push(253); // bincode varint: a u64 follows
        out.extend_from_slice(&(1u64 << 60).to_le_bytes());
        out.extend_from_slice(&bytes[at + 1..]);
        out
    }

    // Fuzzing (fuzz/ ledger_record, ledger_event) found that such a value made bincode
    // allocate the claimed length up front: the process aborted on a damaged ledger.
    #[test]
    fn fuzz_record_with_a_huge_string_length_is_undecodable_not_an_abort() {
        let r = Record {
            manifest_version: "~".into(),
            ..sample()
        };
        let bad = with_huge_length(&r.encode(), b'~');
        assert_eq!(Record::decode(&bad), None);
        let v2 = Record {
            verity: Some(Sha256Digest([9; 32])),
            ..r
        };
        assert_eq!(Record::decode(&with_huge_length(&v2.encode(), b'~')), None);
    }

    #[test]
    fn fuzz_event_with_a_huge_string_length_is_undecodable_not_an_abort() {
        let e = Event {
            at_ns: 1,
            path: "~".into(),
            name: "kernel".into(),
            outcome: "failed".into(),
            reason: "why".into(),
            manifest_version: "v".into(),
            pid: 7,
        };
        assert_eq!(Event::decode(&e.encode()), Some(e.clone()));
        assert_eq!(Event::decode(&with_huge_length(&e.encode(), b'~')), None);
    }

    #[test]
    fn verity_records_use_tag_2_and_plain_records_keep_tag_1() {
        let plain = sample();
        assert_eq!(plain.encode()[0], RECORD_FORMAT_V1);
        let with = Record {
            method: Method::Verity,
            verity: Some(Sha256Digest([9; 32])),
            ..sample()
        };
        let bytes = with.encode();
        assert_eq!(bytes[0], RECORD_FORMAT_V2);
        assert_eq!(Record::decode(&bytes), Some(with));
        // A v2 body under a v1 tag does not decode exactly: a miss, not a wrong record.
        let mut wrong = bytes.clone();
        wrong[0] = RECORD_FORMAT_V1;
        assert_eq!(Record::decode(&wrong), None);
    }

    #[test]
    fn ledger_round_trip_events_are_capped_and_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::new(dir.path().into(), dir.path().into());
        assert_eq!(l.read_many(&["a"]).1, LedgerState::Absent);
        let ev = |i: i64| Event {
            at_ns: i,
            path: "a".into(),
            name: "a".into(),
            outcome: "verified".into(),
            reason: format!("n{i}"),
            manifest_version: "v".into(),
            pid: 1,
        };
        assert!(l.put("a", &sample(), Some(&ev(1))).unwrap());
        let (recs, state) = l.read_many(&["a", "b"]);
        assert_eq!(state, LedgerState::Ok);
        assert_eq!(recs, vec![Some(sample()), None]);
        let many: Vec<_> = (2..(EVENT_CAP as i64 + 10)).map(ev).collect();
        l.put_many(&[], &many.iter().collect::<Vec<_>>(), None).unwrap();
        let events = l.events(Some("a"), usize::MAX);
        assert_eq!(events.len() as u64, EVENT_CAP);
        assert_eq!(events[0].at_ns, EVENT_CAP as i64 + 9);
        assert_eq!(l.schema_version(), migrations::CURRENT);
    }
}
