//! The native manifest parser on arbitrary text. Besides "never panics": whatever it accepts
//! must round-trip through `Manifest::to_json`, as its documentation promises; and its typed
//! fast path is an accelerator only: it accepts nothing the `Value` walk (the slow path, which
//! defines the format) refuses, returns the very manifest the slow path does, and
//! `Manifest::parse` returns what the slow path returns (the same manifest, or the same error).
#![no_main]

use bootvault::manifest::{parse_fast, parse_slow};
use bootvault::{Manifest, ParseOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Without a base URL override, with one, and with one that is not a URL.
    for over in [None, Some("http://o/b"), Some("not a url")] {
        let opts = ParseOptions::default().base_url(over.map(String::from));
        let slow = parse_slow(text, "<fuzz>", &opts);
        if let Some(fast) = parse_fast(text, &opts) {
            match &slow {
                Ok(m) => assert_eq!(&fast, m, "fast and slow paths differ on {text:?}"),
                Err(e) => panic!("fast path accepted {text:?}, slow path refused: {e}"),
            }
        }
        match (Manifest::parse(text, "<fuzz>", &opts), &slow) {
            (Ok(a), Ok(b)) => assert_eq!(&a, b),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            (a, b) => panic!("parse: {a:?}, slow path: {b:?}"),
        }
    }
    if let Ok(manifest) = Manifest::from_json_str(text) {
        let again = Manifest::from_json_str(&manifest.to_json().to_string())
            .expect("a manifest's own JSON form parses");
        assert_eq!(again, manifest, "to_json round trip");
    }
});
