//! arcbox-boot 0.8's public API over bootvault stores.
//!
//! A host switches with one line in its `Cargo.toml`, and keeps its code:
//!
//! ```toml
//! arcbox-boot = { package = "bootvault-arcbox", version = "0.1" }
//! ```
//!
//! The modules are arcbox-boot's: [`asset_manager`] (`AssetManager`, `AssetManagerConfig`,
//! `PreparedAssets`), [`download`] (`PrepareProgress`, `PreparePhase`, `ProgressCallback`, and
//! `Manifest::{prepare_binaries, validate_binaries, target_for_current_arch}`), [`manifest`]
//! (the serde types), [`error`] and [`util`]. What bootvault adds: the files are verified and
//! recorded in a redb ledger outside the share (a warm boot reads no content), downloads retry
//! and resume, an upgrade copies unchanged files instead of fetching them, and nothing the
//! guest can write vouches for anything (see [`asset_manager`]).
//!
//! [`native`] maps an arcbox-format manifest onto bootvault's native form under one ROOT, for
//! `bootvault prepare`.

#![warn(missing_docs)]

pub mod asset_manager;
pub mod download;
mod engine;
pub mod error;
pub mod layout;
pub mod manifest;
pub mod native;
pub mod util;

pub use error::{Error, Result};
