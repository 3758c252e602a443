//! Schema 3: `manifests_v1` (manifest version → tagged provenance): where each manifest version
//! came from and which trusted key vouched for it. Shipped: never edit.

use redb::{TableDefinition, WriteTransaction};

pub fn up(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(TableDefinition::<&str, &[u8]>::new("manifests_v1"))?;
    Ok(())
}
