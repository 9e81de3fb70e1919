//! The upgrade report: what `upgradectl status` and the benchmarks show, derived from
//! the persisted state alone (so the boot side can report what the old kernel did).

use std::fmt;

use dumper::manifest::GenerationId;
use serde::{Deserialize, Serialize};

use super::machine::{Phase, UpgradeState};
use super::values::{KernelRelease, UpgradeId};

/// How an upgrade ended, or that it has not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// No upgrade was ever recorded.
    Idle,
    /// Blessed: the new kernel runs, with the workloads.
    Upgraded,
    /// Back on the known-good kernel, with the workloads.
    RolledBack,
    /// Given up; see the last error.
    Failed,
    InProgress,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Idle => "idle",
            Outcome::Upgraded => "upgraded",
            Outcome::RolledBack => "rolled-back",
            Outcome::Failed => "failed",
            Outcome::InProgress => "in-progress",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The length of each stage in seconds; `None` until the stage has both ends (or when
/// the wall clock stepped back across it).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct StageSeconds {
    pub freeze: Option<f64>,
    pub dump: Option<f64>,
    pub commit: Option<f64>,
    pub kexec_load: Option<f64>,
    pub kernel_boot: Option<f64>,
    pub restore: Option<f64>,
    pub health: Option<f64>,
}

/// A summary of one upgrade.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpgradeReport {
    pub upgrade_id: Option<UpgradeId>,
    pub state: Phase,
    pub outcome: Outcome,
    pub generation: Option<GenerationId>,
    pub from: Option<KernelRelease>,
    pub to: Option<KernelRelease>,
    pub boot_attempts: u32,
    pub stages: StageSeconds,
    /// From the first freeze to the last time every workload ran again. After a
    /// rollback that followed a restore this includes the time the workloads ran on the
    /// new kernel: it bounds the outage, it does not add up its pieces.
    pub blackout_secs: Option<f64>,
    pub last_error: Option<String>,
}

impl UpgradeState {
    /// The report of the current or last upgrade.
    pub fn report(&self) -> UpgradeReport {
        let phase = self.phase();
        let outcome = match phase {
            Phase::Idle => Outcome::Idle,
            Phase::Blessed => Outcome::Upgraded,
            Phase::RolledBack => Outcome::RolledBack,
            Phase::Failed => Outcome::Failed,
            _ => Outcome::InProgress,
        };
        let Some(u) = self.upgrade() else {
            return UpgradeReport {
                upgrade_id: None,
                state: phase,
                outcome,
                generation: None,
                from: None,
                to: None,
                boot_attempts: 0,
                stages: StageSeconds::default(),
                blackout_secs: None,
                last_error: None,
            };
        };
        let s = &u.stages;
        UpgradeReport {
            upgrade_id: Some(u.id.clone()),
            state: phase,
            outcome,
            generation: u.generation.clone(),
            from: Some(u.from_release.clone()),
            to: Some(u.to_release.clone()),
            boot_attempts: u.boot_attempts,
            stages: StageSeconds {
                freeze: s.freeze.secs(),
                dump: s.dump.secs(),
                commit: s.commit.secs(),
                kexec_load: s.kexec_load.secs(),
                kernel_boot: s.kernel_boot.secs(),
                restore: s.restore.secs(),
                health: s.health.secs(),
            },
            blackout_secs: u.blackout.secs(),
            last_error: u.last_error.clone(),
        }
    }
}

/// A short table for people:
///
/// ```text
/// upgrade u1: 6.1.0-40-amd64 -> 6.1.0-41-amd64
/// generation  20251124T100000Z-6.1.0-40-amd64
/// outcome     upgraded (state blessed, 1 boot)
/// freeze         0.120 s
/// ...
/// blackout       6.670 s
/// ```
impl fmt::Display for UpgradeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (Some(id), Some(from), Some(to)) = (&self.upgrade_id, &self.from, &self.to) else {
            return writeln!(f, "no upgrade recorded");
        };
        writeln!(f, "upgrade {id}: {from} -> {to}")?;
        match &self.generation {
            Some(g) => writeln!(f, "generation  {g}")?,
            None => writeln!(f, "generation  (not committed)")?,
        }
        let boots = match self.boot_attempts {
            1 => ", 1 boot".to_owned(),
            0 => String::new(),
            n => format!(", {n} boots"),
        };
        writeln!(
            f,
            "outcome     {} (state {}{boots})",
            self.outcome, self.state
        )?;
        let s = &self.stages;
        for (name, secs) in [
            ("freeze", s.freeze),
            ("dump", s.dump),
            ("commit", s.commit),
            ("kexec load", s.kexec_load),
            ("kernel boot", s.kernel_boot),
            ("restore", s.restore),
            ("health", s.health),
            ("blackout", self.blackout_secs),
        ] {
            match secs {
                Some(secs) => writeln!(f, "{name:<11} {secs:>9.3} s")?,
                None => writeln!(f, "{name:<11} {:>9}", "-")?,
            }
        }
        if let Some(e) = &self.last_error {
            writeln!(f, "last error  {e}")?;
        }
        Ok(())
    }
}
