//! Event values as read back from a (possibly damaged or foreign) ledger: decoding never
//! panics, and whatever decodes re-encodes to a value that decodes to the same event.
#![no_main]

use bootvault::ledger::Event;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(event) = Event::decode(data) {
        let bytes = event.encode();
        assert_eq!(Event::decode(&bytes), Some(event), "event round trip");
    }
});
