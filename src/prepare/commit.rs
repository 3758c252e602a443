//! The third stage of a prepare: one committer per prepare writes finished results to the
//! ledger in short batched write transactions (a group commit: whatever finished while the
//! previous batch was being written goes into the next one), then releases the assets' locks.
//! A write is never held across a download or a hash: the workers only hand results over.

use crate::ledger::Ledger;
use crate::ledger::{Event, Provenance, Record};
use crate::lock::FileLock;
use std::sync::mpsc;

/// Most results in one write transaction.
const BATCH: usize = 256;

struct Item {
    key: String,
    record: Option<Record>,
    event: Event,
    /// Released when the item is dropped, after its batch is committed.
    _lock: Option<FileLock>,
}

/// The committer of one prepare.
pub(crate) struct Committer<'scope> {
    ledger: &'scope Ledger,
    tx: Option<mpsc::Sender<Item>>,
    thread: Option<std::thread::ScopedJoinHandle<'scope, ()>>,
}

impl<'scope> Committer<'scope> {
    /// Starts the committer thread in `scope`, writing to `ledger`. `provenance` (manifest version, where it came
    /// from and who vouched) goes into the first batch, so it lands with the first records of
    /// that version.
    pub(crate) fn start<'env>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        ledger: &'env Ledger,
        provenance: Option<(String, Provenance)>,
    ) -> Committer<'scope>
    where
        'env: 'scope,
    {
        let (tx, rx) = mpsc::channel::<Item>();
        let mut provenance = provenance;
        let thread = std::thread::Builder::new()
            .name("bootvault-commit".into())
            .spawn_scoped(scope, move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while batch.len() < BATCH {
                        match rx.try_recv() {
                            Ok(item) => batch.push(item),
                            Err(_) => break,
                        }
                    }
                    write(ledger, batch, provenance.take());
                }
            })
            .ok();
        Committer {
            ledger,
            tx: Some(tx),
            thread,
        }
    }

    /// Hands over a finished asset: its record (if any), its event, and its lock (released
    /// once the record is committed).
    pub(crate) fn send(
        &self,
        key: &str,
        record: Option<Record>,
        event: Event,
        lock: Option<FileLock>,
    ) {
        let item = Item {
            key: key.to_string(),
            record,
            event,
            _lock: lock,
        };
        match (&self.tx, &self.thread) {
            (Some(tx), Some(_)) => {
                if let Err(mpsc::SendError(item)) = tx.send(item) {
                    write(self.ledger, vec![item], None);
                }
            }
            // No thread could be started: write inline.
            _ => write(self.ledger, vec![item], None),
        }
    }

    /// Waits until every handed-over result is written.
    pub(crate) fn finish(mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn write(ledger: &Ledger, batch: Vec<Item>, provenance: Option<(String, Provenance)>) {
    let records: Vec<(&str, &Record)> = batch
        .iter()
        .filter_map(|i| i.record.as_ref().map(|r| (i.key.as_str(), r)))
        .collect();
    let events: Vec<&Event> = batch.iter().map(|i| &i.event).collect();
    let provenance = provenance.as_ref().map(|(v, p)| (v.as_str(), p));
    if let Err(e) = ledger.put_many(&records, &events, provenance) {
        // The assets are verified all the same; only the memory of it is lost.
        let names: Vec<&str> = batch
            .iter()
            .filter(|i| i.record.is_some())
            .map(|i| i.event.name.as_str())
            .collect();
        if !names.is_empty() {
            tracing::warn!("assets {}: not recorded: {e}", names.join(", "));
        }
    }
    // Locks are released only now, after the commit.
    drop(batch);
}
