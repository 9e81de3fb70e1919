//! upgraded: kernel upgrades through kexec that keep the chosen workloads running.
//!
//! The binaries (`upgraded`, `upgradectl`) are thin: they set up logging, parse
//! arguments and call into this library.

pub mod cli;
pub mod config;
pub mod kernel;
pub mod local;
pub mod logging;
pub mod state;
