//! An opened store: what every stage of a prepare and every read-only view shares (ROOT, the
//! state dir, the ledger, the options, the fetcher). [`crate::Store`] is an `Arc` of it; the
//! per-call types ([`crate::prepare::Prepare`], the views in `inspect`) borrow it.

use crate::error::{Error, Result};
use crate::fetch::{FetchOptions, Fetcher};
use crate::ledger::{Ledger, Record};
use crate::manifest::{Asset, Policy};
use crate::report::ProgressFn;
use crate::state::StateDir;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Options of a store; see [`crate::StoreBuilder`].
#[derive(Clone)]
pub(crate) struct Options {
    /// `None`: the number of cores, looked up only when there is work (it reads cgroup files).
    pub(crate) jobs: Option<usize>,
    pub(crate) offline: bool,
    pub(crate) verify: Option<Policy>,
    pub(crate) fetch: FetchOptions,
    pub(crate) progress: Option<ProgressFn>,
    /// Adopt a file only onto a fresh inode (reflink or copy), never in place under a read
    /// lease: the tests run the mmap attack through both ways.
    pub(crate) adopt_by_copy: bool,
}

/// The parts of an opened store.
pub(crate) struct Context {
    pub(crate) root: PathBuf,
    /// Where the state dir lies under ROOT (`""`: it is ROOT), if it does.
    pub(crate) state_rel: Option<String>,
    pub(crate) state: StateDir,
    pub(crate) ledger: Ledger,
    pub(crate) fetcher: OnceLock<std::result::Result<Fetcher, String>>,
    /// Whether ROOT's filesystem supports fs-verity (probed on the first placement).
    pub(crate) verity: OnceLock<bool>,
    pub(crate) opts: Options,
    pub(crate) client: Option<reqwest::Client>,
}

impl Context {
    /// ROOT.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// The state dir.
    pub(crate) fn state_dir(&self) -> &Path {
        self.state.path()
    }

    /// The ledger.
    pub(crate) fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The policy `asset` is judged by: the store's override, else its own.
    pub(crate) fn policy(&self, asset: &Asset) -> Policy {
        self.opts.verify.unwrap_or(asset.verify)
    }

    /// The ledger record of `asset`, read in its own read transaction.
    pub(crate) fn record_of(&self, asset: &Asset) -> Option<Record> {
        self.ledger
            .read_many(&[asset.path.as_str()])
            .0
            .pop()
            .flatten()
    }

    /// The one fetcher of this store (its client built on first use).
    pub(crate) fn fetcher(&self) -> Result<&Fetcher> {
        let f = self.fetcher.get_or_init(|| {
            Fetcher::new(self.opts.fetch.clone(), self.client.clone()).map_err(|e| e.to_string())
        });
        f.as_ref()
            .map_err(|why| Error::Downloader { why: why.clone() })
    }

    /// The filesystem clock, taken before any content is read: a file changed at or after this
    /// moment is racy.
    pub(crate) fn fs_clock(&self) -> i64 {
        crate::stamp::fs_now(&self.root).unwrap_or_else(|_| crate::stamp::wall_now_ns())
    }

    /// Refuses a document fetch that the options forbid (offline: only `file:`).
    pub(crate) fn document_allowed(&self, url: &str) -> Result<()> {
        if self.opts.offline && !url.starts_with("file:") {
            return Err(Error::Document {
                url: url.into(),
                attempts: vec![crate::error::FetchAttempt {
                    url: Some(url.into()),
                    reason: "offline".into(),
                }],
            });
        }
        Ok(())
    }
}
