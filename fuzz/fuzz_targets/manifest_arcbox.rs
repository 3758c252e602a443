//! The arcbox-boot manifest parser. The first byte picks the options (architecture, base URL
//! override); the rest is the document, forced onto the arcbox-boot path by a leading
//! `schema_version` key (format detection is by fields, and a later duplicate key wins).
#![no_main]

use bootvault::{Manifest, ParseOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(body) = std::str::from_utf8(rest) else {
        return;
    };
    let opts = ParseOptions {
        arch: match selector & 3 {
            0 => None,
            1 => Some("x86_64".into()),
            2 => Some("arm64".into()),
            _ => Some("riscv64".into()),
        },
        base_url: match (selector >> 2) & 3 {
            0 => None,
            1 => Some("https://cdn.example/boot/".into()),
            2 => Some("file:///srv/boot".into()),
            _ => Some("not a url".into()),
        },
    };
    let text = match body.strip_prefix('{') {
        Some(inner) => format!("{{\"schema_version\": 0, {inner}"),
        None => body.to_string(),
    };
    if let Ok(manifest) = Manifest::parse(&text, "fuzz", &opts) {
        // The native form of what was accepted is itself a valid native manifest.
        let again = Manifest::from_json_str(&manifest.to_json().to_string())
            .expect("an arcbox-boot manifest's native form parses");
        assert_eq!(again.assets, manifest.assets, "native form round trip");
    }
});
