//! dumper: finds workloads, checkpoints and restores them with CRIU, and keeps their
//! images in a versioned, checksummed persistent area.
//!
//! - [`manifest`]: the generation manifest, a versioned and checksummed file format.
//! - [`area`]: the persistent area on disk, where generations are written atomically,
//!   listed, verified and removed.

pub mod area;
mod error;
mod fsutil;
pub mod manifest;

pub use error::{Error, Result};
