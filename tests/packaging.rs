//! What a packaged `bootvault` links: built with `--no-default-features` (no `demo` feature),
//! neither the test kit nor its web server (axum) is among its dependencies; the default build,
//! which `cargo run --release -- demo` uses, has both. Asked of the real cargo (`cargo tree`,
//! offline and against the lockfile: no network, about a second).

use std::collections::BTreeSet;
use std::process::Command;

/// The names of the packages in `bootvault-cli`'s normal dependency tree, built with `features`.
fn normal_dependencies(features: &[&str]) -> BTreeSet<String> {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml");
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--offline", "--locked", "--manifest-path", manifest])
        .args(["-p", "bootvault-cli", "-e", "normal", "--prefix", "none"])
        .args(["--format", "{p}"])
        .args(features)
        .output()
        .expect("run cargo tree");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo tree {features:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: BTreeSet<String> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    assert!(names.contains("bootvault"), "{stdout}");
    names
}

#[test]
fn a_build_without_the_demo_feature_links_no_test_kit_and_no_web_server() {
    let shipped = normal_dependencies(&["--no-default-features"]);
    let default = normal_dependencies(&[]);
    for name in ["bootvault-testkit", "axum"] {
        assert!(
            default.contains(name),
            "the default build (the demo) should link {name}: {default:?}"
        );
        assert!(
            !shipped.contains(name),
            "a build with --no-default-features links {name}: {shipped:?}"
        );
    }
}
