//! The upgrade state machine: phases, events, the table of allowed transitions, crash
//! recovery and boot counting. Pure logic: nothing here touches the system or a file.

use std::fmt;

use dumper::manifest::GenerationId;
use serde::{Deserialize, Serialize};

use super::values::{InvalidValue, KernelRelease, Span, Timestamp, UpgradeId};

/// The longest `last_error` kept, in bytes. Errors may carry the tail of a program's
/// stderr; the state file stays small and the report readable.
pub const MAX_ERROR_LEN: usize = 4096;

macro_rules! named_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant,)*
        }

        impl $name {
            /// Every value, in the order of an upgrade.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The name used in the state file and in messages.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named_enum!(
    /// Where an upgrade is. The daemon moves to a phase *before* doing its work
    /// (write-ahead), so that a crash in the middle of the work is recovered from the
    /// phase that says the work may be half done.
    Phase {
        /// No upgrade was ever recorded.
        Idle = "idle",
        /// Planned; pre-dumps (workloads keep running) may be under way.
        Planned = "planned",
        /// Pre-dumps done; the freeze comes next.
        PreDumped = "pre-dumped",
        /// Workloads are being frozen, then dumped.
        Frozen = "frozen",
        /// Dumped; the generation is being committed.
        Dumped = "dumped",
        /// The generation is committed; the new kernel is being loaded.
        Committed = "committed",
        /// The new kernel is loaded; the kexec is next.
        KexecLoaded = "kexec-loaded",
        /// The kexec was started: the new kernel boots (handled by the boot side).
        Booting = "booting",
        /// The workloads are being restored on the new kernel.
        Restoring = "restoring",
        /// Workloads run on the new kernel; health checks decide.
        HealthCheck = "health-check",
        /// Done: the new kernel is healthy (terminal).
        Blessed = "blessed",
        /// Going back to the known-good kernel and restoring the workloads there.
        RollingBack = "rolling-back",
        /// Back on the known-good kernel with the workloads (terminal).
        RolledBack = "rolled-back",
        /// Given up; `last_error` says why (terminal).
        Failed = "failed",
    }
);

impl Phase {
    /// Blessed, RolledBack and Failed: the upgrade is over; only a new plan follows.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Blessed | Phase::RolledBack | Phase::Failed)
    }

    /// Phases only reachable through a commit (a rollback may start before one).
    fn requires_generation(self) -> bool {
        matches!(
            self,
            Phase::Committed
                | Phase::KexecLoaded
                | Phase::Booting
                | Phase::Restoring
                | Phase::HealthCheck
                | Phase::Blessed
        )
    }

    /// Phases a rollback leads to or may have led to.
    fn allows_rollback_attempted(self) -> bool {
        matches!(self, Phase::RollingBack | Phase::RolledBack | Phase::Failed)
    }
}

named_enum!(
    /// The kind of an [`Event`], without its data: what the transition table and the
    /// errors speak of.
    EventKind {
        Plan = "plan",
        PreDumpDone = "pre-dump-done",
        Freeze = "freeze",
        DumpStarted = "dump-started",
        DumpDone = "dump-done",
        Committed = "committed",
        KexecLoaded = "kexec-loaded",
        KexecStarted = "kexec-started",
        BootedNewKernel = "booted-new-kernel",
        RestoreStarted = "restore-started",
        RestoreDone = "restore-done",
        HealthPassed = "health-passed",
        HealthFailed = "health-failed",
        BootAttemptsExceeded = "boot-attempts-exceeded",
        RollbackStarted = "rollback-started",
        RollbackDone = "rollback-done",
        Fail = "fail",
        Abort = "abort",
    }
);

/// What happened, as reported by the daemon or the boot side. Each event is sent at
/// the moment it names; the transition records that moment in the stage timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new upgrade from `from` to `to`; a rollback returns to `known_good`.
    Plan {
        id: UpgradeId,
        from: KernelRelease,
        to: KernelRelease,
        known_good: KernelRelease,
    },
    /// All pre-dump iterations are done (sent once; skip it without pre-dumps).
    PreDumpDone,
    /// Freezing starts: sent before the first cgroup is frozen, so that a crash while
    /// freezing is recovered by thawing. Starts the freeze stage and the blackout.
    Freeze,
    /// Every workload is frozen and the final dump starts.
    DumpStarted,
    /// The final dump is done; committing starts.
    DumpDone,
    /// The generation is committed in the area; loading the new kernel starts.
    Committed { generation: GenerationId },
    /// The new kernel is loaded (kexec_file_load succeeded).
    KexecLoaded,
    /// The kexec is being started (sent just before `systemctl kexec`).
    KexecStarted,
    /// The boot side runs on kernel `release` (sent at every boot after the kexec).
    BootedNewKernel { release: KernelRelease },
    /// The restore of the workloads starts.
    RestoreStarted,
    /// Every workload runs again; health checks start. Ends the blackout.
    RestoreDone,
    /// The health checks passed: the upgrade is done.
    HealthPassed,
    /// The health checks failed: a rollback starts.
    HealthFailed { why: String },
    /// [`UpgradeState::count_boot_attempt`] said [`BootDecision::RollBack`].
    BootAttemptsExceeded,
    /// A rollback starts for another reason (a failed restore, the wrong kernel came
    /// up, the kexec failed, an operator asked).
    RollbackStarted { why: String },
    /// The workloads run again on the known-good kernel.
    RollbackDone,
    /// Give up: an operator must look. `why` becomes the last error.
    Fail { why: String },
    /// Before the commit only: the workloads were thawed and the uncommitted generation
    /// discarded (crash recovery, see [`Recovery::ThawAndDiscard`]).
    Abort,
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Plan { .. } => EventKind::Plan,
            Event::PreDumpDone => EventKind::PreDumpDone,
            Event::Freeze => EventKind::Freeze,
            Event::DumpStarted => EventKind::DumpStarted,
            Event::DumpDone => EventKind::DumpDone,
            Event::Committed { .. } => EventKind::Committed,
            Event::KexecLoaded => EventKind::KexecLoaded,
            Event::KexecStarted => EventKind::KexecStarted,
            Event::BootedNewKernel { .. } => EventKind::BootedNewKernel,
            Event::RestoreStarted => EventKind::RestoreStarted,
            Event::RestoreDone => EventKind::RestoreDone,
            Event::HealthPassed => EventKind::HealthPassed,
            Event::HealthFailed { .. } => EventKind::HealthFailed,
            Event::BootAttemptsExceeded => EventKind::BootAttemptsExceeded,
            Event::RollbackStarted { .. } => EventKind::RollbackStarted,
            Event::RollbackDone => EventKind::RollbackDone,
            Event::Fail { .. } => EventKind::Fail,
            Event::Abort => EventKind::Abort,
        }
    }
}

/// One allowed transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: Phase,
    pub event: EventKind,
    pub to: Phase,
}

const fn t(from: Phase, event: EventKind, to: Phase) -> Transition {
    Transition { from, event, to }
}

/// Every allowed (phase, event) pair and where it leads; any other pair is refused.
/// Some pairs also have a guard on the data, checked by [`UpgradeState::transition`].
pub const TRANSITIONS: &[Transition] = {
    use EventKind as E;
    use Phase as P;
    &[
        // A new upgrade only when none is under way.
        t(P::Idle, E::Plan, P::Planned),
        t(P::Blessed, E::Plan, P::Planned),
        t(P::RolledBack, E::Plan, P::Planned),
        t(P::Failed, E::Plan, P::Planned),
        t(P::Planned, E::PreDumpDone, P::PreDumped),
        // Without pre-dumps the freeze follows the plan directly.
        t(P::Planned, E::Freeze, P::Frozen),
        t(P::PreDumped, E::Freeze, P::Frozen),
        // Stays frozen: only splits the freeze from the dump for the report.
        t(P::Frozen, E::DumpStarted, P::Frozen),
        t(P::Frozen, E::DumpDone, P::Dumped),
        t(P::Dumped, E::Committed, P::Committed),
        t(P::Committed, E::KexecLoaded, P::KexecLoaded),
        t(P::KexecLoaded, E::KexecStarted, P::Booting),
        // Every boot after the kexec lands in Booting: a crash during the restore or
        // the health checks means the workloads are gone and the restore starts over.
        t(P::Booting, E::BootedNewKernel, P::Booting),
        t(P::Restoring, E::BootedNewKernel, P::Booting),
        t(P::HealthCheck, E::BootedNewKernel, P::Booting),
        t(P::Booting, E::RestoreStarted, P::Restoring),
        t(P::Restoring, E::RestoreDone, P::HealthCheck),
        t(P::HealthCheck, E::HealthPassed, P::Blessed),
        t(P::HealthCheck, E::HealthFailed, P::RollingBack),
        t(P::Booting, E::BootAttemptsExceeded, P::RollingBack),
        t(P::Restoring, E::BootAttemptsExceeded, P::RollingBack),
        t(P::HealthCheck, E::BootAttemptsExceeded, P::RollingBack),
        // From Committed on the images are the workloads' only copy: going back means
        // restoring them on the known-good kernel, even if the kexec never happened.
        t(P::Committed, E::RollbackStarted, P::RollingBack),
        t(P::KexecLoaded, E::RollbackStarted, P::RollingBack),
        t(P::Booting, E::RollbackStarted, P::RollingBack),
        t(P::Restoring, E::RollbackStarted, P::RollingBack),
        t(P::HealthCheck, E::RollbackStarted, P::RollingBack),
        t(P::RollingBack, E::RollbackDone, P::RolledBack),
        t(P::Planned, E::Fail, P::Failed),
        t(P::PreDumped, E::Fail, P::Failed),
        t(P::Frozen, E::Fail, P::Failed),
        t(P::Dumped, E::Fail, P::Failed),
        t(P::Committed, E::Fail, P::Failed),
        t(P::KexecLoaded, E::Fail, P::Failed),
        t(P::Booting, E::Fail, P::Failed),
        t(P::Restoring, E::Fail, P::Failed),
        t(P::HealthCheck, E::Fail, P::Failed),
        t(P::RollingBack, E::Fail, P::Failed),
        // After the commit the images must not be discarded: no abort.
        t(P::Planned, E::Abort, P::Failed),
        t(P::PreDumped, E::Abort, P::Failed),
        t(P::Frozen, E::Abort, P::Failed),
        t(P::Dumped, E::Abort, P::Failed),
    ]
};

/// Where `event` leads from `from`, if the table allows it.
pub fn next_phase(from: Phase, event: EventKind) -> Option<Phase> {
    TRANSITIONS
        .iter()
        .find(|t| t.from == from && t.event == event)
        .map(|t| t.to)
}

/// The events the table allows in `from`.
pub fn allowed_events(from: Phase) -> impl Iterator<Item = EventKind> {
    TRANSITIONS
        .iter()
        .filter(move |t| t.from == from)
        .map(|t| t.event)
}

fn allowed_list(from: Phase) -> String {
    let names: Vec<_> = allowed_events(from).map(EventKind::as_str).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// Why an event was refused. Every variant names the state and the event; a refused
/// event changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error(
        "event {event} is not allowed in state {state} (allowed there: {}); the caller \
         sent events out of order, or another process changed the state: \
         `upgradectl status` shows it",
        allowed_list(*state)
    )]
    NotAllowed { state: Phase, event: EventKind },

    #[error("event {event} is refused in state {state}: {reason}")]
    Refused {
        state: Phase,
        event: EventKind,
        reason: String,
    },

    #[error(
        "event {event} in state {state}: the running kernel is {found}, but the upgrade \
         is to {expected}; the machine came up on another kernel: start a rollback \
         (rollback-started) or give up (fail)"
    )]
    WrongKernel {
        state: Phase,
        event: EventKind,
        expected: KernelRelease,
        found: KernelRelease,
    },

    #[error(
        "event {event} in state {state} would start a second rollback; one was already \
         attempted, and another could cycle between kernels: send fail and leave the \
         rest to an operator"
    )]
    RollbackAlreadyAttempted { state: Phase, event: EventKind },
}

impl TransitionError {
    /// The state the event was refused in.
    pub fn state(&self) -> Phase {
        match self {
            TransitionError::NotAllowed { state, .. }
            | TransitionError::Refused { state, .. }
            | TransitionError::WrongKernel { state, .. }
            | TransitionError::RollbackAlreadyAttempted { state, .. } => *state,
        }
    }

    /// The refused event.
    pub fn event(&self) -> EventKind {
        match self {
            TransitionError::NotAllowed { event, .. }
            | TransitionError::Refused { event, .. }
            | TransitionError::WrongKernel { event, .. }
            | TransitionError::RollbackAlreadyAttempted { event, .. } => *event,
        }
    }
}

/// What a restarted daemon (or the boot side, at boot) must do, from the persisted
/// state alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Recovery {
    /// Idle or over: nothing is pending.
    Nothing,
    /// The crash came before the commit (Planned to Dumped). Before the commit no
    /// workload was killed (the dumper's rule), so: thaw every configured workload's
    /// cgroup (thawing one that is not frozen does nothing), remove pending
    /// generations (`Area::cleanup_incomplete`), then send [`Event::Abort`], which ends
    /// in Failed with a note. The commit is one rename: if the crash fell between it
    /// and the `committed` event, the area holds a committed generation this state does
    /// not name; a workload missing after the thaw is in the newest generation.
    ThawAndDiscard,
    /// The generation is committed but the kexec never happened (Committed,
    /// KexecLoaded). Workloads dumped with leave-running are still there, maybe frozen:
    /// thaw them. Workloads dumped with stop semantics were killed after the commit:
    /// restore them from the committed generation on this kernel. Record it as a
    /// rollback (rollback-started, then rollback-done), or send fail if the restore
    /// fails. Whether to thaw or to kill and restore a survivor is the caller's policy.
    ThawAndKeep,
    /// After the kexec (Booting, Restoring, HealthCheck): the boot side counts the boot
    /// ([`UpgradeState::count_boot_attempt`]), sends booted-new-kernel and restores
    /// the workloads from the committed generation.
    BootSide,
    /// A rollback was interrupted (RollingBack): finish it on the known-good kernel
    /// (restore the workloads that do not run from the committed generation, then
    /// rollback-done), after counting the boot. A second rollback is never started.
    FinishRollback,
}

/// What to do with the boot being counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootDecision {
    /// Within the budget: go on (with the restore, or with the rollback).
    Proceed,
    /// The new kernel used up its boots: send [`Event::BootAttemptsExceeded`].
    RollBack,
    /// The rollback itself used up its boots: send [`Event::Fail`]; never roll back
    /// again.
    GiveUp,
    /// Boots are not counted in this phase (nothing was changed).
    NotCounted,
}

/// The timestamps of the stages an upgrade report shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stages {
    /// From freeze to dump-started: freezing the cgroups.
    pub freeze: Span,
    /// From dump-started to dump-done: the final CRIU dump.
    pub dump: Span,
    /// From dump-done to committed: writing and verifying the generation.
    pub commit: Span,
    /// From committed to kexec-loaded: loading the new kernel.
    pub kexec_load: Span,
    /// From kexec-started to the first booted-new-kernel.
    pub kernel_boot: Span,
    /// From restore-started to restore-done (the last attempt, after a re-boot).
    pub restore: Span,
    /// From restore-done to health-passed or health-failed.
    pub health: Span,
}

/// One upgrade and how far it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upgrade {
    pub id: UpgradeId,
    /// Set by the committed event.
    pub generation: Option<GenerationId>,
    pub from_release: KernelRelease,
    pub to_release: KernelRelease,
    /// The kernel a rollback returns to.
    pub known_good_release: KernelRelease,
    /// The kernel the boot side last reported.
    pub booted_release: Option<KernelRelease>,
    /// Boots counted after the kexec, for this upgrade's generation.
    pub boot_attempts: u32,
    /// Boots counted while rolling back.
    pub rollback_boot_attempts: u32,
    /// Set when a rollback starts; no second one may start.
    pub rollback_attempted: bool,
    pub planned_at: Timestamp,
    pub stages: Stages,
    /// From the first freeze to the last time every workload ran again.
    pub blackout: Span,
    pub last_error: Option<String>,
}

/// The persisted state: the phase, and the upgrade it is about (none when Idle).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeState {
    // Private outside the module: only transitions change a state.
    pub(super) phase: Phase,
    pub(super) upgrade: Option<Upgrade>,
}

impl Default for UpgradeState {
    fn default() -> Self {
        UpgradeState::idle()
    }
}

impl UpgradeState {
    /// No upgrade recorded: what a missing state file means.
    pub fn idle() -> UpgradeState {
        UpgradeState {
            phase: Phase::Idle,
            upgrade: None,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The current or last upgrade; `None` only when Idle.
    pub fn upgrade(&self) -> Option<&Upgrade> {
        self.upgrade.as_ref()
    }

    /// Applies `event` at the current wall-clock time. On error the state is dropped;
    /// keep a clone, or use [`StateStore::apply`](super::StateStore::apply), which
    /// leaves the file unchanged.
    pub fn transition(self, event: Event) -> Result<UpgradeState, TransitionError> {
        self.transition_at(event, Timestamp::now())
    }

    /// Applies `event` as having happened at `now`.
    pub fn transition_at(
        mut self,
        event: Event,
        now: Timestamp,
    ) -> Result<UpgradeState, TransitionError> {
        self.apply(event, now)?;
        Ok(self)
    }

    /// Every guard is checked before anything is changed, so that on error `self` is
    /// exactly as it was.
    pub(crate) fn apply(&mut self, event: Event, now: Timestamp) -> Result<(), TransitionError> {
        let state = self.phase;
        let kind = event.kind();
        let to =
            next_phase(state, kind).ok_or(TransitionError::NotAllowed { state, event: kind })?;
        let refused = |reason: String| TransitionError::Refused {
            state,
            event: kind,
            reason,
        };

        if let Event::Plan {
            id,
            from,
            to: to_release,
            known_good,
        } = event
        {
            self.upgrade = Some(Upgrade {
                id,
                generation: None,
                from_release: from,
                to_release,
                known_good_release: known_good,
                booted_release: None,
                boot_attempts: 0,
                rollback_boot_attempts: 0,
                rollback_attempted: false,
                planned_at: now,
                stages: Stages::default(),
                blackout: Span::default(),
                last_error: None,
            });
            self.phase = to;
            return Ok(());
        }

        // Only a state built by hand lacks the upgrade here: the table allows nothing
        // but a plan in Idle, and loaded states are validated.
        let u = self.upgrade.as_mut().ok_or_else(|| {
            refused(
                "no upgrade is recorded for this phase; the state was built inconsistently".into(),
            )
        })?;
        if to == Phase::RollingBack && u.rollback_attempted {
            return Err(TransitionError::RollbackAlreadyAttempted { state, event: kind });
        }
        let s = &mut u.stages;
        match event {
            // Handled above.
            Event::Plan { .. } => {}
            Event::PreDumpDone => {}
            Event::Freeze => {
                s.freeze.start = Some(now);
                u.blackout.start = Some(now);
            }
            Event::DumpStarted => {
                if let Some(at) = s.dump.start {
                    return Err(refused(format!(
                        "the dump already started at {at}; dump-started is sent once, \
                         when every workload is frozen"
                    )));
                }
                s.freeze.end = Some(now);
                s.dump.start = Some(now);
            }
            Event::DumpDone => {
                if s.dump.start.is_none() {
                    return Err(refused(
                        "dump-started was never sent; send it when every workload is \
                         frozen, so that the freeze and the dump are timed apart"
                            .into(),
                    ));
                }
                s.dump.end = Some(now);
                s.commit.start = Some(now);
            }
            Event::Committed { generation } => {
                s.commit.end = Some(now);
                s.kexec_load.start = Some(now);
                u.generation = Some(generation);
            }
            Event::KexecLoaded => s.kexec_load.end = Some(now),
            Event::KexecStarted => s.kernel_boot.start = Some(now),
            Event::BootedNewKernel { release } => {
                if release != u.to_release {
                    return Err(TransitionError::WrongKernel {
                        state,
                        event: kind,
                        expected: u.to_release.clone(),
                        found: release,
                    });
                }
                // The first boot after the kexec is the one the report measures.
                if s.kernel_boot.end.is_none() {
                    s.kernel_boot.end = Some(now);
                }
                // A re-boot lost the restored workloads: they are down again and the
                // restore and health checks start over.
                s.restore = Span::default();
                s.health = Span::default();
                u.blackout.end = None;
                u.booted_release = Some(release);
            }
            Event::RestoreStarted => {
                if u.booted_release.is_none() {
                    return Err(refused(
                        "booted-new-kernel was never sent; the boot side checks which \
                         kernel runs before restoring"
                            .into(),
                    ));
                }
                s.restore.start = Some(now);
            }
            Event::RestoreDone => {
                s.restore.end = Some(now);
                s.health.start = Some(now);
                u.blackout.end = Some(now);
            }
            Event::HealthPassed => s.health.end = Some(now),
            Event::HealthFailed { why } => {
                s.health.end = Some(now);
                u.last_error = Some(clip(format!("health check failed: {why}")));
                u.rollback_attempted = true;
            }
            Event::BootAttemptsExceeded => {
                u.last_error = Some(format!(
                    "kernel {} did not come up healthy in {} boots",
                    u.to_release, u.boot_attempts
                ));
                u.rollback_attempted = true;
            }
            Event::RollbackStarted { why } => {
                u.last_error = Some(clip(why));
                u.rollback_attempted = true;
            }
            // After a rollback that followed a restore, the workloads were up on the new
            // kernel and went down again: the blackout ends now, at the latest.
            Event::RollbackDone => u.blackout.end = Some(now),
            Event::Fail { why } => u.last_error = Some(clip(why)),
            Event::Abort => {
                u.last_error = Some(
                    "aborted before the commit: the workloads were thawed and the \
                     uncommitted generation discarded"
                        .into(),
                );
                if u.blackout.start.is_some() {
                    u.blackout.end = Some(now);
                }
            }
        }
        self.phase = to;
        Ok(())
    }

    /// What a restarted daemon must do; see [`Recovery`].
    pub fn recover(&self) -> Recovery {
        match self.phase {
            Phase::Idle | Phase::Blessed | Phase::RolledBack | Phase::Failed => Recovery::Nothing,
            Phase::Planned | Phase::PreDumped | Phase::Frozen | Phase::Dumped => {
                Recovery::ThawAndDiscard
            }
            Phase::Committed | Phase::KexecLoaded => Recovery::ThawAndKeep,
            Phase::Booting | Phase::Restoring | Phase::HealthCheck => Recovery::BootSide,
            Phase::RollingBack => Recovery::FinishRollback,
        }
    }

    /// Counts a boot. After the kexec (Booting, Restoring, HealthCheck) a boot of the
    /// new kernel: more than `max_attempts` of them means [`BootDecision::RollBack`].
    /// While rolling back, a boot of the rollback, which has its own budget of
    /// `max_attempts`; beyond it [`BootDecision::GiveUp`], because a rollback that keeps
    /// crashing the machine must not be retried forever. Save the state before acting
    /// on the decision, so that a crash during this boot is counted
    /// ([`StateStore::count_boot_attempt`](super::StateStore::count_boot_attempt) does).
    pub fn count_boot_attempt(&mut self, max_attempts: u8) -> BootDecision {
        let Some(u) = self.upgrade.as_mut() else {
            return BootDecision::NotCounted;
        };
        let (counter, over) = match self.phase {
            Phase::Booting | Phase::Restoring | Phase::HealthCheck => {
                (&mut u.boot_attempts, BootDecision::RollBack)
            }
            Phase::RollingBack => (&mut u.rollback_boot_attempts, BootDecision::GiveUp),
            _ => return BootDecision::NotCounted,
        };
        *counter = counter.saturating_add(1);
        if *counter > u32::from(max_attempts) {
            over
        } else {
            BootDecision::Proceed
        }
    }

    /// Checks what the types cannot: that the data fits the phase. Run on every load
    /// and save, so that no inconsistent state is acted upon.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        let phase = self.phase;
        let Some(u) = &self.upgrade else {
            if phase == Phase::Idle {
                return Ok(());
            }
            return Err(InvalidValue::new(
                "upgrade",
                "null",
                format!("is missing, but state {phase} is about an upgrade"),
            ));
        };
        if phase == Phase::Idle {
            return Err(InvalidValue::new(
                "upgrade",
                u.id.as_str(),
                "is recorded, but the state is idle",
            ));
        }
        if phase.requires_generation() && u.generation.is_none() {
            return Err(InvalidValue::new(
                "upgrade.generation",
                "null",
                format!("is missing, but state {phase} comes after the commit"),
            ));
        }
        if u.rollback_attempted && !phase.allows_rollback_attempted() {
            return Err(InvalidValue::new(
                "upgrade.rollback_attempted",
                "true",
                format!("cannot be set in state {phase}, which no rollback leads to"),
            ));
        }
        if matches!(phase, Phase::RollingBack | Phase::RolledBack) && !u.rollback_attempted {
            return Err(InvalidValue::new(
                "upgrade.rollback_attempted",
                "false",
                format!("must be set in state {phase}"),
            ));
        }
        if let Some(e) = &u.last_error {
            if e.len() > MAX_ERROR_LEN {
                return Err(InvalidValue::new(
                    "upgrade.last_error",
                    e,
                    format!("is longer than {MAX_ERROR_LEN} bytes"),
                ));
            }
        }
        let s = &u.stages;
        for (field, span) in [
            ("upgrade.stages.freeze.end", s.freeze),
            ("upgrade.stages.dump.end", s.dump),
            ("upgrade.stages.commit.end", s.commit),
            ("upgrade.stages.kexec_load.end", s.kexec_load),
            ("upgrade.stages.kernel_boot.end", s.kernel_boot),
            ("upgrade.stages.restore.end", s.restore),
            ("upgrade.stages.health.end", s.health),
            ("upgrade.blackout.end", u.blackout),
        ] {
            if let (None, Some(end)) = (span.start, span.end) {
                return Err(InvalidValue::new(
                    field,
                    &end.to_string(),
                    "is set, but the stage has no start",
                ));
            }
        }
        Ok(())
    }
}

/// Cuts `text` to at most [`MAX_ERROR_LEN`] bytes, on a character boundary, saying so.
fn clip(mut text: String) -> String {
    const MARK: &str = " [cut]";
    if text.len() <= MAX_ERROR_LEN {
        return text;
    }
    let mut end = MAX_ERROR_LEN - MARK.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(MARK);
    text
}
