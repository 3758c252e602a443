//! The native manifest parser refusing bad input: each case names the field at fault (and the
//! asset, where there is one) in a one-line `Error::Manifest`. Through the library, without a
//! process per case; tests/cli.rs keeps what the binary adds (exit code 2, one stderr line,
//! nothing created in ROOT).

use bootvault::{Error, Manifest, ParseOptions};
use proptest::prelude::*;
use serde_json::{Value, json};

fn sha(bytes: &[u8]) -> String {
    bootvault::Sha256Digest::of(bytes).to_hex()
}

fn good_asset(name: &str) -> Value {
    json!({"name": name, "sha256": sha(name.as_bytes())})
}

fn with(mut a: Value, key: &str, v: Value) -> Value {
    a[key] = v;
    a
}

fn native(version: &str, assets: Vec<Value>) -> Value {
    json!({"version": version, "assets": assets})
}

/// Parses `manifest` as the CLI does a `--manifest` file, and asserts a one-line
/// `Error::Manifest` naming the file and every one of `needles`.
fn assert_invalid(manifest: Value, needles: &[&str]) {
    let text = serde_json::to_string_pretty(&manifest).unwrap();
    let err = match Manifest::parse(&text, "m.json", &ParseOptions::default()) {
        Ok(m) => panic!("manifest {manifest} was accepted: {m:?}"),
        Err(e) => e,
    };
    assert!(
        matches!(err, Error::Manifest { .. }),
        "not a manifest error: {err:?}"
    );
    let message = err.to_string();
    for n in needles.iter().chain(&["m.json"]) {
        assert!(message.contains(n), "error does not name {n:?}: {message}");
    }
    assert!(!message.contains('\n'), "not one line: {message:?}");
}

/// `assert_invalid` of a manifest whose one asset, `name`, has `key` set to `value`: the error
/// names both.
fn assert_invalid_field(name: &str, key: &str, value: Value) {
    let a = with(good_asset(name), key, value);
    assert_invalid(native("v1", vec![a]), &[name, key]);
}

#[test]
fn valid_counterpart_is_accepted() {
    // The cases below differ from this manifest in one field each.
    let text = native("v1", vec![good_asset("kernel")]).to_string();
    let m = Manifest::parse(&text, "m.json", &ParseOptions::default()).unwrap();
    assert!(m.find("kernel").is_some(), "{m:?}");
}

#[test]
fn invalid_unknown_top_level_field() {
    assert_invalid(
        json!({"version": "v1", "assets": [good_asset("kernel")], "colour": "red"}),
        &["colour"],
    );
}

#[test]
fn invalid_unknown_asset_field() {
    assert_invalid_field("kernel", "verfiy", json!("always"));
}

#[test]
fn invalid_dotdot_path() {
    assert_invalid_field("kernel", "path", json!("boot/../../etc/passwd"));
}

#[test]
fn invalid_lone_dotdot_path() {
    assert_invalid_field("kernel", "path", json!(".."));
}

#[test]
fn invalid_absolute_path() {
    assert_invalid_field("kernel", "path", json!("/etc/passwd"));
}

#[test]
fn invalid_empty_path_component() {
    assert_invalid_field("kernel", "path", json!("boot//vmlinux"));
}

#[test]
fn invalid_dot_path_component() {
    assert_invalid_field("kernel", "path", json!("boot/./vmlinux"));
}

#[test]
fn invalid_trailing_slash_path() {
    assert_invalid_field("kernel", "path", json!("boot/"));
}

#[test]
fn invalid_backslash_path() {
    assert_invalid_field("kernel", "path", json!("boot\\vmlinux"));
}

#[test]
fn invalid_sha256_too_short() {
    assert_invalid_field("kernel", "sha256", json!("ab".repeat(31)));
}

#[test]
fn invalid_sha256_not_hex() {
    assert_invalid_field("kernel", "sha256", json!("zz".repeat(32)));
}

#[test]
fn invalid_missing_sha256() {
    assert_invalid(
        native("v1", vec![json!({"name": "kernel"})]),
        &["kernel", "sha256"],
    );
}

#[test]
fn invalid_duplicate_name() {
    let a = with(good_asset("kernel"), "path", json!("a"));
    let b = with(good_asset("kernel"), "path", json!("b"));
    assert_invalid(native("v1", vec![a, b]), &["kernel", "name"]);
}

#[test]
fn invalid_duplicate_path() {
    let a = with(good_asset("kernel"), "path", json!("boot/vmlinux"));
    let b = with(good_asset("kernel2"), "path", json!("boot/vmlinux"));
    assert_invalid(native("v1", vec![a, b]), &["kernel2", "path"]);
}

#[test]
fn invalid_mode_not_octal() {
    assert_invalid_field("runc", "mode", json!("0789"));
}

#[test]
fn invalid_mode_beyond_permission_bits() {
    assert_invalid_field("runc", "mode", json!("4755"));
}

#[test]
fn invalid_mode_as_number() {
    assert_invalid_field("runc", "mode", json!(755));
}

#[test]
fn invalid_verify_policy() {
    assert_invalid_field("kernel", "verify", json!("sometimes"));
}

#[test]
fn invalid_missing_version() {
    assert_invalid(json!({"assets": [good_asset("kernel")]}), &["version"]);
}

#[test]
fn invalid_empty_version() {
    assert_invalid(native("", vec![good_asset("kernel")]), &["version"]);
}

#[test]
fn invalid_relative_url_without_base_url() {
    assert_invalid_field("kernel", "urls", json!(["kernel/vmlinux"]));
}

#[test]
fn invalid_url_scheme() {
    assert_invalid_field("kernel", "urls", json!(["ftp://example.com/k"]));
}

#[test]
fn invalid_name_characters() {
    for bad in ["ker nel", "bin/runc", "kernel\u{e9}", "a:b", ""] {
        let needles: Vec<&str> = if bad.is_empty() {
            vec!["name"]
        } else {
            vec!["name", bad]
        };
        assert_invalid(native("v1", vec![good_asset(bad)]), &needles);
    }
}

#[test]
fn invalid_path_in_the_state_dir() {
    assert_invalid_field("ledger", "path", json!(".bootvault/ledger.redb"));
}

/// A relative path with one component made unsafe (`..`, `.`, empty, or the state dir first).
fn unsafe_path() -> impl Strategy<Value = String> {
    let component = "[A-Za-z0-9_-][A-Za-z0-9._-]{0,8}";
    (
        prop::collection::vec(component, 1..4),
        prop::sample::select(vec!["..", ".", "", ".bootvault"]),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(mut comps, bad, at)| {
            // The state dir is only reserved as the first component.
            let i = if bad == ".bootvault" {
                0
            } else {
                at.index(comps.len() + 1)
            };
            comps.insert(i, bad.to_string());
            comps.join("/")
        })
}

proptest! {
    /// Whatever the rest of the path, one unsafe component is refused, and the error names the
    /// asset and the field.
    #[test]
    fn any_path_with_an_unsafe_component_is_refused(path in unsafe_path()) {
        assert_invalid_field("kernel", "path", json!(path));
    }
}

/// The typed fast path of `Manifest::parse` takes the common forms (escapes, nulls, relative
/// URLs, an index, an override), with the manifest the slow path returns; the traps of serde
/// derive (an array for an object, a duplicate key, a float size, unknown fields) it leaves to
/// the slow path, which decides: the duplicate key is accepted (the last value), the others
/// refused with the slow path's error. tests/proptest.rs holds the differential test.
#[test]
fn fast_path_takes_the_common_forms_and_leaves_the_traps_to_the_slow_path() {
    use bootvault::manifest::{parse_fast, parse_slow};
    let hex = sha(b"k");
    let common = format!(
        r#"{{"version": "v\u0031", "base_url": "http://h/base", "assets": [
            {{"name": "k", "path": "boot/k", "sha256": "{up}", "size": 4096,
              "urls": ["k", "oci://registry.example/boot/k"], "verify": "c\u0061ched",
              "mode": "0o644", "index": {{"urls": ["k.index"], "sha256": "{hex}"}}}},
            {{"name": "r", "path": null, "sha256": "{hex}", "size": null, "urls": null,
              "verify": null, "mode": null, "index": null}}]}}"#,
        up = hex.to_uppercase()
    );
    for opts in [
        ParseOptions::default(),
        ParseOptions::default().base_url(Some("file:///srv/".into())),
    ] {
        let fast = parse_fast(&common, &opts).expect("the fast path takes it");
        assert_eq!(fast, parse_slow(&common, "m.json", &opts).unwrap());
        assert_eq!(fast, Manifest::parse(&common, "m.json", &opts).unwrap());
    }
    let fast = parse_fast(&common, &ParseOptions::default()).unwrap();
    assert_eq!(fast.assets[0].urls[0], "http://h/base/k");
    assert_eq!(fast.assets[1].path, "r");

    let asset = format!(r#"{{"name": "a", "sha256": "{hex}"}}"#);
    let traps = [
        // serde's sequence form of a struct, for an asset and for the whole manifest
        (
            format!(r#"{{"version": "v1", "assets": [["a", null, "{hex}"]]}}"#),
            false,
        ),
        (format!(r#"["v1", null, [{asset}]]"#), false),
        (
            format!(
                r#"{{"version": "v1", "assets": [{{"name": "a", "sha256": "{hex}", "index": [["u"], "{hex}"]}}]}}"#
            ),
            false,
        ),
        // a duplicate key: the slow path keeps the last value
        (
            format!(r#"{{"version": "v0", "version": "v1", "assets": [{asset}]}}"#),
            true,
        ),
        (
            format!(
                r#"{{"version": "v1", "assets": [{{"name": "a", "name": "b", "sha256": "{hex}"}}]}}"#
            ),
            true,
        ),
        (
            format!(
                r#"{{"version": "v1", "assets": [{{"name": "a", "sha256": "{hex}", "size": 1.0}}]}}"#
            ),
            false,
        ),
        (
            format!(
                r#"{{"version": "v1", "assets": [{{"name": "a", "sha256": "{hex}", "size": -1}}]}}"#
            ),
            false,
        ),
        (
            format!(
                r#"{{"version": "v1", "assets": [{{"name": "a", "sha256": "{hex}", "size": "1"}}]}}"#
            ),
            false,
        ),
        (
            format!(
                r#"{{"version": "v1", "assets": [{{"name": "a", "sha256": "{hex}", "mode": 420}}]}}"#
            ),
            false,
        ),
        (
            format!(
                r#"{{"version": "v1", "assets": [{{"name": "a", "sha256": "{hex}", "kind": 1}}]}}"#
            ),
            false,
        ),
        (
            format!(r#"{{"version": "v1", "cmdline": "", "assets": [{asset}]}}"#),
            false,
        ),
        (format!(r#"{{"version": " ", "assets": [{asset}]}}"#), false),
        (
            format!(r#"{{"version": "v1", "assets": [{asset}, {asset}]}}"#),
            false,
        ),
    ];
    for (text, valid) in traps {
        let opts = ParseOptions::default();
        assert!(parse_fast(&text, &opts).is_none(), "fast path took {text}");
        let slow = parse_slow(&text, "m.json", &opts);
        assert_eq!(slow.is_ok(), valid, "{text}: {slow:?}");
        match (Manifest::parse(&text, "m.json", &opts), slow) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            (a, b) => panic!("{text}: parse {a:?}, slow path {b:?}"),
        }
    }
}
