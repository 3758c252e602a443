//! What differs between platforms, in one place. Linux (`linux.rs`) uses `O_PATH`,
//! `O_TMPFILE` + `linkat` and fs-verity; every other Unix (macOS, the BSDs) uses the portable
//! POSIX calls in `portable.rs` (`openat`, `renameat`, `fstat`, `flock`; `F_FULLFSYNC` through
//! `File::sync_all` on macOS). The portable family can be selected on Linux with
//! `RUSTFLAGS="--cfg bootvault_portable"` or the internal feature `__portable`, which CI uses to
//! run the whole test suite through it.

#[cfg(all(
    target_os = "linux",
    not(any(bootvault_portable, feature = "__portable"))
))]
mod linux;
#[cfg(all(
    target_os = "linux",
    not(any(bootvault_portable, feature = "__portable"))
))]
pub(crate) use linux::*;

#[cfg(any(not(target_os = "linux"), bootvault_portable, feature = "__portable"))]
mod portable;
#[cfg(any(not(target_os = "linux"), bootvault_portable, feature = "__portable"))]
pub(crate) use portable::*;

/// The name of the platform family this build uses (for `--version` and the README).
pub const FAMILY: &str = if cfg!(all(
    target_os = "linux",
    not(any(bootvault_portable, feature = "__portable"))
)) {
    "linux"
} else {
    "portable"
};
