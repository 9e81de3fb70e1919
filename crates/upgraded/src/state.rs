//! The upgrade state machine, persisted.
//!
//! An upgrade runs across a crash of the daemon, a kexec and maybe a reboot, so where
//! it is lives in a file, not in memory: [`StateStore`] keeps one [`UpgradeState`] in
//! `<dir>/state.json` (a versioned, checksummed envelope written atomically).
//!
//! - [`UpgradeState::transition`] moves it on by an [`Event`], as the table
//!   [`TRANSITIONS`] allows, and records when each stage started and ended.
//! - [`UpgradeState::recover`] says what a restarted daemon must do ([`Recovery`]).
//! - [`UpgradeState::count_boot_attempt`] counts boots after the kexec and decides
//!   when to roll back ([`BootDecision`]); a rollback is attempted at most once.
//! - [`UpgradeState::report`] summarises the upgrade ([`UpgradeReport`]).
//!
//! The normal path:
//!
//! ```text
//! idle -plan-> planned -pre-dump-done-> pre-dumped -freeze-> frozen -dump-started->
//! frozen -dump-done-> dumped -committed-> committed -kexec-loaded-> kexec-loaded
//! -kexec-started-> booting -booted-new-kernel-> booting -restore-started-> restoring
//! -restore-done-> health-check -health-passed-> blessed
//! ```

mod machine;
mod report;
mod store;
mod values;

pub use machine::{
    allowed_events, next_phase, BootDecision, Event, EventKind, Phase, Recovery, Stages,
    Transition, TransitionError, Upgrade, UpgradeState, MAX_ERROR_LEN, TRANSITIONS,
};
pub use report::{Outcome, StageSeconds, UpgradeReport};
pub use store::{
    StateStore, StoreError, DEFAULT_STATE_DIR, FORMAT_VERSION, MAGIC, MAX_STATE_SIZE, STATE_FILE,
};
pub use values::{InvalidValue, KernelRelease, Span, Timestamp, UpgradeId};

#[cfg(test)]
mod tests;
