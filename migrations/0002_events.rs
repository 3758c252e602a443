//! Schema 2: `events_v1` ((ns, random) → tagged event), the bounded log behind `debug why`.
//! Shipped: never edit.

use redb::{TableDefinition, WriteTransaction};

pub fn up(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(TableDefinition::<(u64, u64), &[u8]>::new("events_v1"))?;
    Ok(())
}
