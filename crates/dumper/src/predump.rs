//! How many pre-dumps a workload gets before the freeze: a fixed number, or `auto`,
//! which goes on while each pre-dump writes clearly less than the one before.
//!
//! A pre-dump copies what the workload dirtied since the previous one while it keeps
//! running, so the final dump under the freeze copies only what was dirtied during the
//! last pre-dump. With a workload dirtying memory at a steady rate, each pre-dump is
//! shorter than the one before because it copies less, until the dirty set stops
//! shrinking (the workload dirties as fast as CRIU copies) or becomes small enough
//! that the freeze hardly notices it. `auto` stops at the first of:
//! - converged: the last pre-dump wrote at most [`AUTO_CONVERGED_BYTES`];
//! - not shrinking: it wrote more than [`AUTO_SHRINK_PERCENT`] % of the one before;
//! - budget: the pre-dumps so far, plus one more as long as the last, would exceed
//!   [`AUTO_BUDGET`] (the upgrade waits for them);
//! - limit: [`AUTO_MAX`] pre-dumps.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::manifest::MAX_PRE_DUMPS;

/// At most this many pre-dumps with `auto`.
pub const AUTO_MAX: u32 = 8;
/// Below this, what the final dump adds is a few milliseconds of the freeze at disk
/// speed; another pre-dump would cost more than it saves.
pub const AUTO_CONVERGED_BYTES: u64 = 4 << 20;
/// Another pre-dump only while the last wrote at most this share of the one before.
pub const AUTO_SHRINK_PERCENT: u64 = 70;
/// Time all pre-dumps of one workload may take together.
pub const AUTO_BUDGET: Duration = Duration::from_secs(60);

/// The pre-dump policy of a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PreDumps {
    /// Exactly this many (0: none).
    #[default]
    None,
    Fixed(u32),
    /// As many as shrink the dirty set, within the limits above.
    Auto,
}

impl PreDumps {
    /// Whether any pre-dump runs.
    pub fn any(self) -> bool {
        !matches!(self, PreDumps::None | PreDumps::Fixed(0))
    }

    /// The most pre-dumps this policy can run.
    pub fn max(self) -> u32 {
        match self {
            PreDumps::None => 0,
            PreDumps::Fixed(n) => n,
            PreDumps::Auto => AUTO_MAX,
        }
    }
}

impl From<u32> for PreDumps {
    fn from(n: u32) -> PreDumps {
        if n == 0 {
            PreDumps::None
        } else {
            PreDumps::Fixed(n)
        }
    }
}

impl fmt::Display for PreDumps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PreDumps::None => f.write_str("0"),
            PreDumps::Fixed(n) => write!(f, "{n}"),
            PreDumps::Auto => f.write_str("auto"),
        }
    }
}

/// Why a policy is out of range or not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pre-dumps must be a number from 0 to {MAX_PRE_DUMPS} or \"auto\", not {0:?}")]
pub struct BadPreDumps(pub String);

impl FromStr for PreDumps {
    type Err = BadPreDumps;
    fn from_str(s: &str) -> Result<PreDumps, BadPreDumps> {
        if s == "auto" {
            return Ok(PreDumps::Auto);
        }
        match s.parse::<u32>() {
            Ok(n) if n <= MAX_PRE_DUMPS && (n == 0 || !s.starts_with('0')) => Ok(n.into()),
            _ => Err(BadPreDumps(s.to_owned())),
        }
    }
}

/// What one pre-dump wrote and how long it took.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Iteration {
    pub bytes: u64,
    pub secs: f64,
}

/// Why the pre-dumps stopped, recorded in the manifest and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// A fixed number ran.
    Count,
    Converged,
    NotShrinking,
    Budget,
    Limit,
}

impl Stop {
    pub fn as_str(self) -> &'static str {
        match self {
            Stop::Count => "count",
            Stop::Converged => "converged",
            Stop::NotShrinking => "not-shrinking",
            Stop::Budget => "budget",
            Stop::Limit => "limit",
        }
    }
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// After the pre-dumps in `done`: `None` to run another, or why to stop.
pub fn next(policy: PreDumps, done: &[Iteration]) -> Option<Stop> {
    let n = u32::try_from(done.len()).unwrap_or(u32::MAX);
    match policy {
        PreDumps::None => Some(Stop::Count),
        PreDumps::Fixed(max) => (n >= max).then_some(Stop::Count),
        PreDumps::Auto => {
            let last = done.last()?;
            if last.bytes <= AUTO_CONVERGED_BYTES {
                return Some(Stop::Converged);
            }
            if let Some(prev) = done.len().checked_sub(2).map(|i| done[i]) {
                if u128::from(last.bytes) * 100
                    > u128::from(prev.bytes) * u128::from(AUTO_SHRINK_PERCENT)
                {
                    return Some(Stop::NotShrinking);
                }
            }
            if n >= AUTO_MAX {
                return Some(Stop::Limit);
            }
            let spent: f64 = done.iter().map(|i| i.secs).sum();
            // The next copies less than the last, so the last's time bounds it.
            if spent + last.secs > AUTO_BUDGET.as_secs_f64() {
                return Some(Stop::Budget);
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn it(mib: u64, secs: f64) -> Iteration {
        Iteration {
            bytes: mib * MIB,
            secs,
        }
    }

    /// Runs `policy` against a workload whose pre-dump i writes `bytes(i)`, copying at
    /// `mib_per_s`; returns the iterations and why they stopped.
    fn simulate(
        policy: PreDumps,
        mib_per_s: f64,
        mut bytes: impl FnMut(&[Iteration]) -> u64,
    ) -> (Vec<Iteration>, Stop) {
        let mut done = Vec::new();
        loop {
            if let Some(stop) = next(policy, &done) {
                return (done, stop);
            }
            let b = bytes(&done);
            done.push(Iteration {
                bytes: b,
                secs: b as f64 / MIB as f64 / mib_per_s,
            });
            assert!(done.len() <= MAX_PRE_DUMPS as usize, "ran away: {done:?}");
        }
    }

    #[test]
    fn fixed_counts_run_exactly_and_none_runs_nothing() {
        assert_eq!(next(PreDumps::None, &[]), Some(Stop::Count));
        assert_eq!(next(PreDumps::Fixed(0), &[]), Some(Stop::Count));
        assert_eq!(next(PreDumps::Fixed(2), &[it(100, 1.0)]), None);
        assert_eq!(
            next(PreDumps::Fixed(2), &[it(100, 1.0), it(100, 1.0)]),
            Some(Stop::Count)
        );
        assert!(!PreDumps::Fixed(0).any() && !PreDumps::None.any());
        assert!(PreDumps::Fixed(1).any() && PreDumps::Auto.any());
    }

    #[test]
    fn auto_always_runs_a_first_pre_dump() {
        assert_eq!(next(PreDumps::Auto, &[]), None);
    }

    #[test]
    fn auto_follows_a_steady_dirtier_until_the_dirty_set_is_small() {
        // 1 GiB resident, 5 % dirtied per second, copied at 200 MiB/s: each pre-dump
        // writes what was dirtied during the one before.
        let (done, stop) = simulate(PreDumps::Auto, 200.0, |d| match d.last() {
            None => 1024 * MIB,
            Some(prev) => ((51.2 * prev.secs) * MIB as f64) as u64 + MIB,
        });
        assert_eq!(stop, Stop::Converged, "{done:?}");
        assert!((4..=AUTO_MAX as usize).contains(&done.len()), "{done:?}");
        assert!(done.last().unwrap().bytes <= AUTO_CONVERGED_BYTES);
    }

    #[test]
    fn auto_stops_when_the_dirty_set_no_longer_shrinks() {
        // Dirtying about as fast as CRIU copies: the second writes as much as the first.
        let (done, stop) = simulate(PreDumps::Auto, 100.0, |_| 300 * MIB);
        assert_eq!(stop, Stop::NotShrinking);
        assert_eq!(done.len(), 2);
        // 71 % of the one before is not enough shrinking; 70 % is.
        assert_eq!(
            next(PreDumps::Auto, &[it(100, 1.0), it(71, 0.7)]),
            Some(Stop::NotShrinking)
        );
        assert_eq!(next(PreDumps::Auto, &[it(100, 1.0), it(70, 0.7)]), None);
    }

    #[test]
    fn auto_keeps_to_its_time_budget() {
        // Slow copies: 40 s for the first, so a second as long would pass 60 s.
        assert_eq!(next(PreDumps::Auto, &[it(4000, 40.0)]), Some(Stop::Budget));
        assert_eq!(next(PreDumps::Auto, &[it(2000, 29.0)]), None);
        assert_eq!(
            next(PreDumps::Auto, &[it(2000, 29.0), it(1000, 15.0)]),
            None,
            "44 s spent and 15 s more fit in 60 s"
        );
        assert_eq!(
            next(
                PreDumps::Auto,
                &[it(2000, 29.0), it(1000, 16.0), it(500, 16.0)]
            ),
            Some(Stop::Budget)
        );
    }

    #[test]
    fn auto_is_capped() {
        // Halving each time from 64 GiB never converges within the cap.
        let (done, stop) = simulate(PreDumps::Auto, 1e9, |d| match d.last() {
            None => 64 << 30,
            Some(prev) => prev.bytes / 2,
        });
        assert_eq!(stop, Stop::Limit);
        assert_eq!(done.len() as u32, AUTO_MAX);
    }

    #[test]
    fn auto_stops_at_once_for_a_small_workload() {
        assert_eq!(
            next(PreDumps::Auto, &[it(3, 0.05)]),
            Some(Stop::Converged),
            "a 3 MiB workload needs no second pre-dump"
        );
    }

    #[test]
    fn policies_parse_and_print() {
        assert_eq!("auto".parse(), Ok(PreDumps::Auto));
        assert_eq!("0".parse(), Ok(PreDumps::None));
        assert_eq!("3".parse(), Ok(PreDumps::Fixed(3)));
        assert_eq!(
            format!("{}", MAX_PRE_DUMPS).parse(),
            Ok(PreDumps::Fixed(MAX_PRE_DUMPS))
        );
        for bad in ["", "-1", "17", "03", "Auto", "auto ", "1e3", "99999999999"] {
            let err = bad.parse::<PreDumps>().unwrap_err();
            assert!(err.to_string().contains("\"auto\""), "{bad:?}: {err}");
        }
        assert_eq!(PreDumps::Auto.to_string(), "auto");
        assert_eq!(PreDumps::Fixed(4).to_string(), "4");
        assert_eq!(PreDumps::from(0), PreDumps::None);
        assert_eq!(PreDumps::Auto.max(), AUTO_MAX);
    }
}
