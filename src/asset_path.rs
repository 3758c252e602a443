//! [`AssetPath`]: a path under ROOT that is safe by construction, and [`validate_path`], its
//! one rule.
//!
//! Plain data at the bottom of the layering: it knows no manifest and no store.

use serde::{Deserialize, Serialize};
use std::borrow::Borrow;
use std::fmt;
use std::path::Path;

/// A relative, `/`-separated asset path under ROOT that [`validate_path`] accepts: no `..`,
/// `.` or empty component, no leading `/`, no backslash or NUL, no component starting with
/// `.bootvault-` and not inside the default state directory.
///
/// The only ways to get one are [`AssetPath::new`] (or its `TryFrom`/`FromStr` forms) and
/// deserializing, which run that check; so an [`Asset`](crate::Asset)'s path is safe by its
/// type, and nothing downstream checks it again. It derefs to `str`, and its `Debug` and
/// `Display` are those of the string.
///
/// ```
/// use bootvault::AssetPath;
///
/// let p = AssetPath::new("boot/vmlinux")?;
/// assert_eq!(p, "boot/vmlinux");
/// assert!(AssetPath::new("../etc/passwd").is_err());
/// # Ok::<(), bootvault::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct AssetPath(String);

impl AssetPath {
    /// Checks `path` with [`validate_path`]; the error is its
    /// [`Error::InvalidPath`](crate::Error::InvalidPath) (the path and what is wrong with it).
    pub fn new(path: &str) -> crate::error::Result<AssetPath> {
        validate_path(path)?;
        Ok(AssetPath(path.to_string()))
    }

    /// The path as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path as a string, consuming it.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl TryFrom<String> for AssetPath {
    type Error = crate::error::Error;
    fn try_from(path: String) -> crate::error::Result<AssetPath> {
        validate_path(&path)?;
        Ok(AssetPath(path))
    }
}

impl TryFrom<&str> for AssetPath {
    type Error = crate::error::Error;
    fn try_from(path: &str) -> crate::error::Result<AssetPath> {
        AssetPath::new(path)
    }
}

impl std::str::FromStr for AssetPath {
    type Err = crate::error::Error;
    fn from_str(path: &str) -> crate::error::Result<AssetPath> {
        AssetPath::new(path)
    }
}

impl From<AssetPath> for String {
    fn from(path: AssetPath) -> String {
        path.0
    }
}

impl std::ops::Deref for AssetPath {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for AssetPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl AsRef<Path> for AssetPath {
    fn as_ref(&self) -> &Path {
        Path::new(&self.0)
    }
}

impl AsRef<std::ffi::OsStr> for AssetPath {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_ref()
    }
}

impl Borrow<str> for AssetPath {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AssetPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The string's `Debug` (`"a/b"`), so that messages quoting a path read as before.
impl fmt::Debug for AssetPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl Serialize for AssetPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl PartialEq<str> for AssetPath {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for AssetPath {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for AssetPath {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl PartialEq<AssetPath> for str {
    fn eq(&self, other: &AssetPath) -> bool {
        self == other.0
    }
}

impl PartialEq<AssetPath> for &str {
    fn eq(&self, other: &AssetPath) -> bool {
        *self == other.0
    }
}

impl PartialEq<AssetPath> for String {
    fn eq(&self, other: &AssetPath) -> bool {
        *self == other.0
    }
}

/// Checks an asset path: relative, `/`-separated, no `..`, `.` or empty component, no
/// backslash or NUL, and not inside the default state directory. [`AssetPath::new`] is this
/// check, keeping the path.
pub fn validate_path(path: &str) -> crate::error::Result<()> {
    let why = |why: String| {
        Err(crate::error::Error::InvalidPath {
            path: path.to_string(),
            why,
        })
    };
    if path.is_empty() {
        return why("must not be empty".into());
    }
    if path.starts_with('/') {
        return why("must be relative (no leading '/')".into());
    }
    if path.contains('\\') {
        return why("backslash is not allowed; use '/'".into());
    }
    if path.contains('\0') {
        return why("NUL is not allowed".into());
    }
    for comp in path.split('/') {
        match comp {
            "" => return why("empty component".into()),
            "." => return why("'.' component".into()),
            ".." => return why("'..' component".into()),
            _ => {}
        }
    }
    if let Some(comp) = path.split('/').find(|c| c.starts_with(".bootvault-")) {
        return why(format!(
            "{comp:?}: names starting with .bootvault- are bootvault's temp files"
        ));
    }
    if path.split('/').next() == Some(crate::STATE_DIR_NAME) {
        return why(format!(
            "{} is reserved for bootvault's state",
            crate::STATE_DIR_NAME
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The same verdict and the same message as [`validate_path`], for every input.
    fn agrees(s: &str) {
        match (AssetPath::new(s), validate_path(s)) {
            (Ok(p), Ok(())) => {
                assert_eq!(p.as_str(), s);
                assert_eq!(p.to_string(), s);
                assert_eq!(format!("{p:?}"), format!("{s:?}"));
                let json = serde_json::to_string(&p).unwrap();
                assert_eq!(json, serde_json::to_string(s).unwrap());
                assert_eq!(serde_json::from_str::<AssetPath>(&json).unwrap(), p);
            }
            (Err(a), Err(b)) => {
                let (a, b) = (a.to_string(), b.to_string());
                assert_eq!(a, b, "{s:?}");
                let json = serde_json::to_string(s).unwrap();
                let err = serde_json::from_str::<AssetPath>(&json).unwrap_err();
                assert!(err.to_string().contains(&b), "{s:?}: {err}");
            }
            (a, b) => panic!("{s:?}: AssetPath::new {a:?}, validate_path {b:?}"),
        }
        assert_eq!(
            AssetPath::try_from(s.to_string()).ok(),
            AssetPath::new(s).ok()
        );
        assert_eq!(s.parse::<AssetPath>().ok(), AssetPath::new(s).ok());
    }

    #[test]
    fn nasty_paths_are_refused_as_validate_path_refuses_them() {
        let long = "a/".repeat(5000) + "b";
        let refused = [
            "",
            "/",
            "/abs",
            "..",
            "../x",
            "a/../b",
            "a/..",
            ".",
            "./a",
            "a/./b",
            "a//b",
            "a/",
            "/a/",
            "a\\b",
            "..\\x",
            "a\0b",
            ".bootvault",
            ".bootvault/ledger.redb",
            "x/.bootvault-1-2.tmp",
            ".bootvault-x",
        ];
        for s in refused {
            assert!(AssetPath::new(s).is_err(), "{s:?}");
            agrees(s);
        }
        let accepted = [
            "a",
            "a/b",
            "...",
            "..a",
            "a..",
            ".hidden",
            "x/.bootvault",
            ".bootvaultx",
            "sp ace/ü",
            long.as_str(),
        ];
        for s in accepted {
            assert!(AssetPath::new(s).is_ok(), "{s:?}");
            agrees(s);
        }
    }

    #[test]
    fn compares_hashes_and_borrows_as_its_string() {
        let p = AssetPath::new("a/b").unwrap();
        let owned = String::from("a/b");
        assert_eq!(p, "a/b");
        assert_eq!("a/b", p);
        assert_eq!(p, owned);
        assert_eq!(owned, p);
        assert_eq!(p, *"a/b");
        let set: std::collections::HashSet<AssetPath> = [p.clone()].into();
        assert!(set.contains("a/b"));
        let as_path: &Path = p.as_ref();
        assert_eq!(as_path, Path::new("a/b"));
        assert_eq!(p.len(), 3);
        assert_eq!(String::from(p), "a/b");
    }

    proptest! {
        #[test]
        fn accepts_exactly_what_validate_path_accepts(s in ".{0,40}") {
            agrees(&s);
        }

        #[test]
        fn agrees_on_path_shaped_strings(
            comps in prop::collection::vec(
                prop_oneof![
                    Just(String::new()),
                    Just(".".to_string()),
                    Just("..".to_string()),
                    Just(".bootvault".to_string()),
                    Just(".bootvault-1.tmp".to_string()),
                    "[a-z.\\\\\0 ]{1,6}",
                ],
                0..6,
            ),
            lead in any::<bool>(),
        ) {
            let s = format!("{}{}", if lead { "/" } else { "" }, comps.join("/"));
            agrees(&s);
        }
    }
}
