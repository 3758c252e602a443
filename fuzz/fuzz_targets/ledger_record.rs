//! Record values as read back from a (possibly damaged or foreign) ledger: decoding never
//! panics, and whatever decodes re-encodes to a value that decodes to the same record.
#![no_main]

use bootvault::ledger::Record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(record) = Record::decode(data) {
        let bytes = record.encode();
        assert_eq!(Record::decode(&bytes), Some(record), "record round trip");
    }
});
