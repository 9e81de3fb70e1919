//! upgraded: kernel upgrades through kexec that keep the chosen workloads running.
//!
//! The binaries (`upgraded`, `upgradectl`) are thin: they set up logging, parse
//! arguments and call into this library.

pub mod api;
pub mod area_device;
pub mod boot;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod docs;
pub mod kernel;
pub mod kexec;
pub mod local;
pub mod logging;
pub mod preflight;
pub mod remote;
pub mod state;
