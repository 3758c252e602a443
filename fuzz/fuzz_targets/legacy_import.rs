//! The import of arcbox-boot's `.verified.json`, through the real entry point (a file on
//! disk, a ROOT holding a few files). Never panics; every imported entry is a plain relative
//! path that names a regular file inside ROOT.
#![no_main]

use bootvault::migrations::legacy;
use libfuzzer_sys::fuzz_target;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    legacy: PathBuf,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // tmpfs where there is one: the target rewrites the legacy file on every input.
        let dir = tempfile::Builder::new()
            .prefix("bootvault-fuzz-")
            .tempdir_in(if Path::new("/dev/shm").is_dir() {
                "/dev/shm"
            } else {
                "/tmp"
            })
            .expect("temp dir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("bin")).expect("root");
        // Sizes and mtimes as in the seed (tests/fixtures/verified-0.5.2.json), so that
        // mutations of it reach the import decision and not only the "changed" branch.
        for (rel, size, secs, nanos) in [
            ("kernel", 4100, 1_700_000_000, 111_111_111),
            ("rootfs.erofs", 4700, 1_700_000_001, 222_222_222),
            ("bin/runc", 3900, 1_700_000_002, 333_333_333),
        ] {
            let file = std::fs::File::create(root.join(rel)).expect("asset");
            file.set_len(size).expect("size");
            let mtime = std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos);
            file.set_modified(mtime).expect("mtime");
        }
        let legacy = root.join(legacy::FILE_NAME);
        Fixture {
            root,
            legacy,
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let fx = fixture();
    // Keys may name the fixture's files: `@ROOT@` stands for ROOT's absolute path.
    let text = String::from_utf8_lossy(data).replace("@ROOT@", &fx.root.display().to_string());
    std::fs::write(&fx.legacy, text).expect("write the legacy file");
    if let Ok((records, report)) = legacy::plan(&fx.root, &fx.legacy) {
        assert_eq!(records.len(), report.imported.len());
        for (rel, _) in &records {
            assert!(
                !rel.is_empty() && !rel.starts_with('/'),
                "{rel:?} is not relative"
            );
            assert!(
                rel.split('/')
                    .all(|c| !c.is_empty() && c != "." && c != ".."),
                "{rel:?}"
            );
            assert!(
                fx.root.join(rel).is_file(),
                "{rel:?} is not a file inside ROOT"
            );
        }
    }
});
