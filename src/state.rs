//! Names in the state dir that more than one layer needs (the ledger writes the ROOT marker
//! with its first write handle; the store checks it at open).

use std::path::Path;

/// The file in the state dir naming the ROOT it belongs to (its canonical path).
pub(crate) const ROOT_MARKER: &str = "root";

/// Writes `STATE/root` (the canonical ROOT) when it is missing: once, with the first write
/// handle. A failure (read-only) only means the next writer tries again.
pub(crate) fn record_root(state: &Path, root: &Path) {
    let marker = state.join(ROOT_MARKER);
    if std::fs::symlink_metadata(&marker).is_ok() {
        return;
    }
    let Ok(canon) = std::fs::canonicalize(root) else {
        return;
    };
    let tmp = state.join(format!("{ROOT_MARKER}.{}.tmp", std::process::id()));
    let text = format!("{}\n", canon.display());
    if std::fs::write(&tmp, text).is_ok() {
        // Never replaces one written meanwhile by another process: link, not rename.
        let _ = std::fs::hard_link(&tmp, &marker);
    }
    let _ = std::fs::remove_file(&tmp);
}
