//! The arcbox-boot manifest reader of `bootvault prepare` (the arcbox crate's `to_native`).
//! The first byte picks the options (architecture, base URL); the rest is the document.
#![no_main]

use bootvault::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let arch = match selector & 3 {
        0 => None,
        1 => Some("x86_64"),
        2 => Some("arm64"),
        _ => Some("riscv64"),
    };
    let base = match (selector >> 2) & 3 {
        0 => None,
        1 => Some("https://cdn.example/boot/"),
        2 => Some("file:///srv/boot"),
        _ => Some("not a url"),
    };
    if let Ok(manifest) = bootvault_arcbox::native::to_native(text, "fuzz", arch, base) {
        // The native form of what was accepted is itself a valid native manifest.
        let again = Manifest::from_json_str(&manifest.to_json().to_string())
            .expect("an arcbox-boot manifest's native form parses");
        assert_eq!(again.assets, manifest.assets, "native form round trip");
    }
});
