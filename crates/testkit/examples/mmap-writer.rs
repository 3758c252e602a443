//! `mmap-writer FILE READY GO`: the mmap attack on stamps, as a process of its own, for the
//! real-kernel lane (`.ci/kernel-lane`), where a verification and the attack must happen in
//! separate processes around a `bootvault prepare`.
//!
//! Maps FILE shared and writable and dirties its first page with the byte already there (a
//! page fault: the kernel moves the inode's mtime and ctime, so the next prepare re-verifies
//! it), creates READY, and waits for GO to exist. Then it flips the first byte through the same
//! mapping: the page is already writable, so there is no new fault and that inode's stamp does
//! not move. A store that kept trusting that inode would call the changed file `cached`.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [file, ready, go] = args.as_slice() else {
        eprintln!("usage: mmap-writer FILE READY GO");
        return ExitCode::from(2);
    };
    match attack(Path::new(file), Path::new(ready), Path::new(go)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mmap-writer: attacking {file}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn attack(file: &Path, ready: &Path, go: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)?;
    let len = f.metadata()?.len() as usize;
    if len == 0 {
        return Err(std::io::Error::other("empty file: nothing to map"));
    }
    // SAFETY: a fresh shared mapping of `len` bytes of an open file; it is only touched within
    // those bounds and unmapped before returning.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    if map == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    let first = map as *mut u8;
    // SAFETY: offset 0 is within the mapping (len > 0). Volatile: the stores must happen.
    unsafe { first.write_volatile(first.read_volatile()) };
    std::fs::write(ready, b"")
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", ready.display())))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !go.exists() {
        if Instant::now() > deadline {
            // SAFETY: unmapping exactly what was mapped above.
            unsafe { libc::munmap(map, len) };
            return Err(std::io::Error::other("timed out waiting for the go file"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: as above.
    unsafe { first.write_volatile(first.read_volatile() ^ 0xff) };
    // SAFETY: unmapping exactly what was mapped above.
    if unsafe { libc::munmap(map, len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
