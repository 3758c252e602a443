//! Property tests: the manifest parser never panics and valid manifests round-trip; its typed
//! fast path is differential-tested against the `Value` walk that defines the format; the
//! record codec round-trips and never panics on arbitrary bytes.

use bootvault::ledger::{Method, Record};
use bootvault::manifest::{parse_fast, parse_slow};
use bootvault::stamp::Stamp;
use bootvault::{Asset, AssetPath, Manifest, ParseOptions, Policy, Sha256Digest};
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

// The differential test of the native parser: manifests as JSON text, built from fragments
// that are right, wrong, or odd in each field (missing, extra and duplicated fields, wrong
// types, arrays for objects, nulls, odd numbers, escapes, unsafe paths, clashing names and
// paths, relative URLs, with and without a base URL, overridden or not). Each pool lists the
// values the parser accepts first (`good` of them), then the others; a field mostly takes a
// good value, so that whole manifests are often valid.

struct Pool {
    /// Whether the field may be left out, and how often it is.
    absent: f64,
    /// The first `good` values are valid (alone).
    good: usize,
    values: Vec<String>,
}

fn pool(absent: f64, good: &[&str], bad: &[&str]) -> Pool {
    Pool {
        absent,
        good: good.len(),
        values: good.iter().chain(bad).map(|s| s.to_string()).collect(),
    }
}

fn names() -> Pool {
    pool(
        0.01,
        &[
            r#""a""#,
            r#""b""#,
            r#""c""#,
            r#""k.1""#,
            r#""x+y""#,
            r#""\u0064""#,
            r#""e_-9""#,
        ],
        &[r#""""#, r#""a/b""#, r#""ä""#, "1", "null"],
    )
}

fn paths() -> Pool {
    pool(
        0.5,
        &[
            r#""p""#,
            r#""d/a""#,
            r#""d""#,
            r#""d/a/b""#,
            r#""q/r""#,
            r#""d\/e""#,
            "null",
            r#""x+y/\u00e9""#,
        ],
        &[
            r#""../x""#,
            r#""/abs""#,
            r#""a//b""#,
            r#""./a""#,
            r#""a/./b""#,
            r#""""#,
            "3",
            r#""a\u0000b""#,
            r#""d/""#,
            r#""a\\b""#,
            r#"".bootvault/x""#,
            "[]",
        ],
    )
}

fn shas() -> Pool {
    let hex = Sha256Digest::of(b"x").to_hex();
    let good = [
        format!("{hex:?}"),
        format!("{:?}", hex.to_uppercase()),
        format!("\"\\u00{:x}{}\"", hex.as_bytes()[0], &hex[1..]),
        format!("{:?}", Sha256Digest::of(b"y").to_hex()),
    ];
    let bad = [
        format!("{:?}", &hex[..10]),
        format!("\"g{}\"", &hex[1..]),
        "null".into(),
        "5".into(),
    ];
    let good: Vec<&str> = good.iter().map(String::as_str).collect();
    let bad: Vec<&str> = bad.iter().map(String::as_str).collect();
    pool(0.01, &good, &bad)
}

fn sizes() -> Pool {
    pool(
        0.5,
        &["0", "5", "18446744073709551615", "null", "4096"],
        &[
            "1.0",
            "-1",
            "-0",
            "1e3",
            r#""5""#,
            "18446744073709551616",
            "true",
            "0.5",
            "1E0",
            "-9223372036854775808",
            "[]",
        ],
    )
}

fn urls() -> Pool {
    pool(
        0.4,
        &[
            "[]",
            r#"["http://h/x"]"#,
            r#"["rel/x"]"#,
            r#"["rel/x", "https://h/y"]"#,
            r#"["oci://reg.example/repo"]"#,
            "null",
            r#"["file:///x"]"#,
            r#"["http:\/\/h\/esc"]"#,
            r#"["HTTP://H/Up/../a"]"#,
            r#"["?q"]"#,
            r#"["../up"]"#,
            r#"["/abs"]"#,
        ],
        &[
            r#"["oci://reg.example/repo:tag"]"#,
            r#"["ftp://x/y"]"#,
            "[1]",
            r#""http://h/x""#,
            r#"["http://h:99999/"]"#,
            "{}",
            "[null]",
            r#"["oci://"]"#,
        ],
    )
}

fn verify() -> Pool {
    pool(
        0.5,
        &[r#""cached""#, r#""always""#, r#""c\u0061ched""#, "null"],
        &[r#""Always""#, "1", r#""""#, "[]"],
    )
}

fn modes() -> Pool {
    pool(
        0.5,
        &[
            r#""0644""#,
            r#""0o755""#,
            r#""644""#,
            r#""0777""#,
            r#""0o0""#,
            "null",
            r#""0""#,
            r#""0\u0036""#,
        ],
        &[
            r#""1000""#,
            r#""""#,
            r#""0o""#,
            "420",
            r#""0x1""#,
            r#""07777""#,
            r#""+644""#,
            r#""0o1777""#,
            "0.5",
            r#""00644""#,
        ],
    )
}

fn versions() -> Pool {
    pool(
        0.01,
        &[r#""v1""#, r#""v\u0031""#, r#"" a b ""#],
        &[r#""""#, r#"" ""#, "1", "null", "{}"],
    )
}

fn bases() -> Pool {
    pool(
        0.3,
        &[
            r#""http://h/base""#,
            r#""http://h/base/""#,
            r#""file:///srv/x""#,
            "null",
            r#""https://h""#,
            r#""http://h/b?q=1""#,
        ],
        &[r#""ftp://x""#, r#""not a url""#, "5", r#""oci://r/x""#],
    )
}

const OVERRIDES: &[Option<&str>] = &[
    None,
    None,
    None,
    Some("http://o/b"),
    Some("file:///o/"),
    Some("not a url"),
];

/// One member, `"key": value`.
fn member(key: &str, value: &str) -> String {
    format!("{key:?}: {value}")
}

/// A JSON object (or, `as_array`, the array of its values: serde's sequence form of a
/// struct) of `members` (duplicates kept) in their order.
fn object(members: &[(String, String)], as_array: bool) -> String {
    if as_array {
        let values: Vec<&str> = members.iter().map(|(_, v)| v.as_str()).collect();
        format!("[{}]", values.join(", "))
    } else {
        let members: Vec<String> = members.iter().map(|(k, v)| member(k, v)).collect();
        format!("{{{}}}", members.join(", "))
    }
}

/// A generated text, and whether the fast path may leave it to the slow path although the slow
/// path accepts it (a duplicate key, whose last value the slow path keeps).
#[derive(Debug, Clone)]
struct Case {
    text: String,
    may_decline: bool,
}

/// A field's value: absent, or one of its pool, mostly a good one.
fn pick(p: &Pool, bad_percent: u32) -> impl Strategy<Value = Option<String>> + use<> {
    let good: Vec<String> = p.values[..p.good].to_vec();
    let all = p.values.clone();
    let value = prop_oneof![
        100 - bad_percent => prop::sample::select(good),
        bad_percent => prop::sample::select(all),
    ];
    prop::option::weighted(1.0 - p.absent, value)
}

/// An object of `fields`, each absent or one of its pool, then mutated: an extra field, a
/// duplicated one (possibly with another value), rotated, or in array form.
fn shaped(fields: Vec<(&'static str, Pool)>, extra: &'static str) -> impl Strategy<Value = Case> {
    let n = fields.len();
    let picks: Vec<_> = fields.iter().map(|(_, p)| pick(p, 6)).collect();
    let keys: Vec<&'static str> = fields.iter().map(|(k, _)| *k).collect();
    let pools: Vec<Vec<String>> = fields.into_iter().map(|(_, p)| p.values).collect();
    (
        picks,
        prop::option::weighted(0.03, Just(extra)),
        prop::option::weighted(0.04, (0..n, any::<prop::sample::Index>())),
        prop::option::weighted(0.02, Just(())),
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(move |(picked, extra, dup, as_array, order, rotate)| {
            let mut members: Vec<(String, String)> = keys
                .iter()
                .zip(picked)
                .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
                .collect();
            if let Some(extra) = extra {
                members.push((extra.to_string(), "1".into()));
            }
            let mut may_decline = false;
            if let Some((f, v)) = dup {
                members.push((keys[f].to_string(), v.get(&pools[f]).clone()));
                may_decline = true;
            }
            if rotate && members.len() > 1 {
                let at = order.index(members.len());
                members.rotate_left(at);
            }
            Case {
                text: object(&members, as_array.is_some()),
                may_decline,
            }
        })
}

fn index_ref() -> impl Strategy<Value = Case> {
    let mut index_urls = urls();
    index_urls.absent = 0.02;
    index_urls.good -= 1; // not "[]": an index needs a URL
    index_urls.values.remove(0);
    index_urls.values.push("[]".into());
    shaped(vec![("urls", index_urls), ("sha256", shas())], "size")
}

fn native_asset() -> impl Strategy<Value = Case> {
    prop::option::weighted(0.2, index_ref()).prop_flat_map(|index| {
        let mut fields = vec![
            ("name", names()),
            ("path", paths()),
            ("sha256", shas()),
            ("size", sizes()),
            ("urls", urls()),
            ("verify", verify()),
            ("mode", modes()),
        ];
        let mut may_decline = false;
        if let Some(ix) = index {
            fields.push(("index", pool(0.01, &[&ix.text, "null"], &["[]", "1"])));
            may_decline = ix.may_decline;
        }
        shaped(fields, "kind").prop_map(move |mut c| {
            c.may_decline |= may_decline;
            c
        })
    })
}

/// A native manifest as text, with the options to parse it with.
fn native_manifest() -> impl Strategy<Value = (Case, ParseOptions)> {
    (
        prop::collection::vec(native_asset(), 0..5),
        prop::option::weighted(0.02, prop::sample::select(&["{}", "null", r#""x""#][..])),
        0..OVERRIDES.len(),
    )
        .prop_flat_map(|(assets, not_a_list, over)| {
            let may_decline = assets.iter().any(|a| a.may_decline);
            let list = match not_a_list {
                Some(v) => v.to_string(),
                None => {
                    let texts: Vec<&str> = assets.iter().map(|a| a.text.as_str()).collect();
                    format!("[{}]", texts.join(", "))
                }
            };
            let fields = vec![
                ("version", versions()),
                ("base_url", bases()),
                ("assets", pool(0.01, &[&list], &[])),
            ];
            shaped(fields, "kernel_cmdline").prop_map(move |mut c| {
                c.may_decline |= may_decline;
                (
                    c,
                    ParseOptions::default().base_url(OVERRIDES[over].map(String::from)),
                )
            })
        })
}

/// The base URL override lets the slow path ignore a manifest `base_url` of any type; the
/// fast path may leave those to it.
fn override_hides_base_url(text: &str, opts: &ParseOptions) -> bool {
    opts.base_url.is_some()
        && serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| {
            v.get("base_url")
                .is_some_and(|b| !b.is_string() && !b.is_null())
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// The fast path accepts only what the slow path accepts, with the same manifest; it
    /// declines nothing the slow path accepts but duplicate keys and a base URL the override
    /// hides; and `Manifest::parse` returns what the slow path returns (the same manifest, or
    /// an error with the same text).
    #[test]
    fn fast_path_agrees_with_the_slow_path((case, opts) in native_manifest()) {
        let text = &case.text;
        let slow = parse_slow(text, "m.json", &opts);
        match (parse_fast(text, &opts), &slow) {
            (Some(fast), Ok(slow)) => prop_assert_eq!(&fast, slow, "{}", text),
            (Some(fast), Err(e)) => {
                prop_assert!(false, "fast path accepted {text}: {fast:?}; slow path: {e}")
            }
            (None, Ok(m)) => prop_assert!(
                case.may_decline || override_hides_base_url(text, &opts),
                "fast path declined {text}, which the slow path accepts: {m:?}"
            ),
            (None, Err(_)) => {}
        }
        match (Manifest::parse(text, "m.json", &opts), &slow) {
            (Ok(a), Ok(b)) => prop_assert_eq!(&a, b),
            (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
            (a, b) => prop_assert!(false, "parse: {a:?}, slow path: {b:?} for {text}"),
        }
    }
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

/// The generator reaches the accepting path of both parsers often enough for the differential
/// test to mean something: manifests with assets, indexes, relative URLs, modes and sizes.
#[test]
fn differential_cases_are_often_valid() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = native_manifest();
    let (mut ok, mut fast, mut with_assets, mut with_index, mut relative) = (0, 0, 0, 0, 0);
    let (mut sized, mut moded, mut escaped) = (0, 0, 0);
    let n = 4000;
    for _ in 0..n {
        let (case, opts) = strategy.new_tree(&mut runner).unwrap().current();
        if let Ok(m) = parse_slow(&case.text, "m.json", &opts) {
            ok += 1;
            fast += usize::from(parse_fast(&case.text, &opts).is_some());
            with_assets += usize::from(!m.assets.is_empty());
            with_index += usize::from(m.assets.iter().any(|a| a.index.is_some()));
            relative += usize::from(
                case.text.contains("rel/x") && m.assets.iter().any(|a| !a.urls.is_empty()),
            );
            sized += usize::from(m.assets.iter().any(|a| a.size.is_some()));
            moded += usize::from(m.assets.iter().any(|a| a.mode.is_some()));
            escaped += usize::from(case.text.contains("\\u00"));
        }
    }
    eprintln!(
        "{n} cases: {ok} valid ({fast} taken by the fast path), {with_assets} with assets, {with_index} with an index, {relative} relative URLs, {sized} sized, {moded} moded, {escaped} escaped"
    );
    assert!(ok * 4 >= n, "{ok} of {n} valid");
    assert!(with_assets * 10 >= n && with_index * 100 >= n && relative > 0 && escaped > 0);
}
