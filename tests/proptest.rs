//! Property tests: the manifest parser never panics and valid manifests round-trip; the
//! record codec round-trips and never panics on arbitrary bytes.

use bootvault::ledger::{Method, Record};
use bootvault::stamp::Stamp;
use bootvault::{Asset, AssetPath, Manifest, Policy, Sha256Digest};
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,15}"
}

fn component() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-][A-Za-z0-9._-]{0,10}".prop_filter("not . or ..", |c| c != "." && c != "..")
}

fn asset() -> impl Strategy<Value = Asset> {
    (
        name(),
        prop::collection::vec(component(), 1..4),
        any::<[u8; 32]>(),
        prop::option::of(0u64..1 << 40),
        prop::collection::vec("[a-z]{1,8}", 0..3),
        any::<bool>(),
        prop::option::of(0u32..0o777),
    )
        .prop_map(|(name, comps, digest, size, urls, always, mode)| {
            let path = AssetPath::new(&format!("{name}/{}", comps.join("/"))).unwrap();
            Asset::new(name, path, Sha256Digest(digest))
                .unwrap()
                .size(size)
                .urls(
                    urls.into_iter()
                        .map(|u| format!("http://127.0.0.1:8080/{u}"))
                        .collect(),
                )
                .verify(if always {
                    Policy::Always
                } else {
                    Policy::Cached
                })
                .mode(mode)
        })
}

fn manifest() -> impl Strategy<Value = Manifest> {
    ("[0-9a-z.]{1,12}", prop::collection::vec(asset(), 0..6)).prop_map(|(version, assets)| {
        // Names (and so paths, which start with the name) must be unique.
        let mut seen = std::collections::HashSet::new();
        let assets = assets
            .into_iter()
            .filter(|a| seen.insert(a.name.clone()))
            .collect();
        Manifest::new(version, assets).unwrap()
    })
}

proptest! {
    #[test]
    fn parser_never_panics_on_arbitrary_text(text in ".{0,400}") {
        let _ = Manifest::from_json_str(&text);
    }

    #[test]
    fn parser_never_panics_on_json_shaped_input(
        version in prop::option::of(".{0,10}"),
        path in ".{0,20}",
        sha in "[0-9a-fA-Fg]{0,70}",
        extra in prop::option::of("[a-z]{1,6}"),
        mode in ".{0,6}",
    ) {
        let mut asset = serde_json::json!({"name": "a", "path": path, "sha256": sha, "mode": mode});
        if let Some(k) = &extra {
            asset[k] = serde_json::json!(1);
        }
        let mut top = serde_json::json!({"assets": [asset]});
        if let Some(v) = version {
            top["version"] = serde_json::json!(v);
        }
        let _ = Manifest::from_json_str(&top.to_string());
    }

    #[test]
    fn valid_manifest_round_trips(m in manifest()) {
        let text = m.to_json().to_string();
        let back = Manifest::from_json_str(&text).expect("a generated manifest is valid");
        prop_assert_eq!(back, m);
    }

    #[test]
    fn record_codec_round_trips(
        digest in any::<[u8; 32]>(), size in any::<u64>(), mtime in any::<i64>(), ctime in any::<i64>(),
        ino in any::<u64>(), dev in any::<u64>(), version in ".{0,20}", at in any::<i64>(),
        method in 0u8..4, racy in any::<bool>(), verity in prop::option::of(any::<[u8; 32]>()),
    ) {
        let stamp = Stamp::regular(size, mtime, ctime, ino, dev, 0o444);
        let method = [Method::Hashed, Method::Downloaded, Method::LegacyImport, Method::Verity][method as usize];
        let mut r = Record::new(Sha256Digest(digest), &stamp, &version, at, method, racy);
        r.verity = verity.map(Sha256Digest);
        prop_assert_eq!(Record::decode(&r.encode()), Some(r));
    }

    #[test]
    fn record_decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = Record::decode(&bytes);
    }
}
