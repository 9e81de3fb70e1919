//! dumper: finds workloads, checkpoints and restores them with CRIU, and keeps their
//! images in a versioned, checksummed persistent area.
//!
//! - [`manifest`]: the generation manifest, a versioned and checksummed file format.
//! - [`area`]: the persistent area on disk, where generations are written atomically,
//!   listed, verified and removed.
//! - [`proc`]: a snapshot of the process table and the tree logic over it.
//! - [`workload`]: from a configured workload (a PID, a unit, a tmux server...) to the
//!   one process tree CRIU dumps.
//! - [`freezer`]: the cgroup2 mount and its freezer.

pub mod area;
pub mod checkpoint;
pub mod cmd;
pub mod criu;
mod error;
pub mod faults;
pub mod freezer;
mod fsutil;
pub mod manifest;
pub mod nspawn;
pub mod podman;
pub mod predump;
pub mod proc;
pub mod seal;
pub mod service;
pub mod sockdirs;
pub mod workload;

pub use area::Area;
pub use error::{Error, Result};
pub use fsutil::{create_private_dir_all, unescape_octal, write_atomic};
