//! Schema 1: the meta table and `records_v1` (path relative to ROOT → tagged record).
//! Shipped: never edit.

use redb::{TableDefinition, WriteTransaction};

pub fn up(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(TableDefinition::<&str, u64>::new("meta"))?;
    txn.open_table(TableDefinition::<&str, &[u8]>::new("records_v1"))?;
    Ok(())
}
