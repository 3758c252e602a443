//! The native manifest parser on arbitrary text. Besides "never panics": whatever it accepts
//! must round-trip through `Manifest::to_json`, as its documentation promises.
#![no_main]

use bootvault::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(manifest) = Manifest::from_json_str(text) {
        let again = Manifest::from_json_str(&manifest.to_json().to_string())
            .expect("a manifest's own JSON form parses");
        assert_eq!(again, manifest, "to_json round trip");
    }
});
