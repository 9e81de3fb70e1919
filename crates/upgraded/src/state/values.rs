//! The values an upgrade state is made of: validated identifiers and kernel releases,
//! wall-clock timestamps and the spans between them.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Why a value was refused: what it was, the value escaped and quoted, and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value}: {reason}")]
pub struct InvalidValue {
    pub what: String,
    /// The value, escaped, quoted and cut short.
    pub value: String,
    pub reason: String,
}

impl InvalidValue {
    pub(crate) fn new(what: impl Into<String>, value: &str, reason: impl Into<String>) -> Self {
        InvalidValue {
            what: what.into(),
            value: shown(value),
            reason: reason.into(),
        }
    }
}

/// Values in messages are shown as in the manifest's: quoted, escaped, cut short.
pub(crate) use dumper::manifest::shown;

macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $check:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Checks `value` and wraps it.
            pub fn new(value: impl Into<String>) -> Result<Self, InvalidValue> {
                let value = value.into();
                $check(&value)?;
                Ok($name(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = InvalidValue;
            fn from_str(s: &str) -> Result<Self, InvalidValue> {
                $name::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidValue;
            fn try_from(s: String) -> Result<Self, InvalidValue> {
                $name::new(s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
    };
}

checked_string!(
    /// A kernel release as `uname -r` prints it: 1 to 64 of `[A-Za-z0-9._+~-]`, not
    /// starting with '.'. Releases end up in paths (`/boot/vmlinuz-<release>`,
    /// `/lib/modules/<release>`), so they are held to the characters real ones use.
    KernelRelease,
    check_kernel_release
);

checked_string!(
    /// The id of one upgrade: 1 to 64 of `[A-Za-z0-9._:-]`, not starting with '.'.
    UpgradeId,
    check_upgrade_id
);

fn check_kernel_release(s: &str) -> Result<(), InvalidValue> {
    check_chars("kernel release", s, &['.', '_', '-', '+', '~'], ". _ - + ~")
}

fn check_upgrade_id(s: &str) -> Result<(), InvalidValue> {
    check_chars("upgrade id", s, &['.', '_', '-', ':'], ". _ - :")
}

fn check_chars(what: &str, s: &str, extra: &[char], extra_text: &str) -> Result<(), InvalidValue> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c));
    if ok {
        Ok(())
    } else {
        Err(InvalidValue::new(
            what,
            s,
            format!("must be 1 to 64 letters, digits or {extra_text}, not starting with '.'"),
        ))
    }
}

/// A wall-clock instant: seconds and nanoseconds since the Unix epoch.
///
/// Wall-clock rather than monotonic time, because a span may cross the kexec (the
/// monotonic clocks restart with the new kernel). The new kernel sets its clock from
/// the RTC, so a span across the kexec is as good as the RTC and NTP make it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "TimestampWire", into = "TimestampWire")]
pub struct Timestamp {
    secs: u64,
    nanos: u32,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimestampWire {
    secs: u64,
    nanos: u32,
}

impl Timestamp {
    /// `secs` and `nanos` since the epoch; `nanos` must be below 1e9.
    pub fn new(secs: u64, nanos: u32) -> Result<Timestamp, InvalidValue> {
        if nanos >= 1_000_000_000 {
            return Err(InvalidValue::new(
                "timestamp nanos",
                &nanos.to_string(),
                "must be below 1000000000",
            ));
        }
        Ok(Timestamp { secs, nanos })
    }

    /// The current wall-clock time (the epoch if the clock is set before it).
    pub fn now() -> Timestamp {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp {
            secs: d.as_secs(),
            nanos: d.subsec_nanos(),
        }
    }

    pub fn secs(self) -> u64 {
        self.secs
    }

    pub fn nanos(self) -> u32 {
        self.nanos
    }

    /// Seconds from `earlier` to `self`, exact to the nanosecond before the conversion
    /// to f64; negative if `self` is earlier.
    pub fn secs_since(self, earlier: Timestamp) -> f64 {
        // i128 holds any difference of two (u64 s, <1e9 ns) values in nanoseconds.
        let ns = |t: Timestamp| i128::from(t.secs) * 1_000_000_000 + i128::from(t.nanos);
        (ns(self) - ns(earlier)) as f64 / 1e9
    }
}

impl TryFrom<TimestampWire> for Timestamp {
    type Error = InvalidValue;
    fn try_from(w: TimestampWire) -> Result<Self, InvalidValue> {
        Timestamp::new(w.secs, w.nanos)
    }
}

impl From<Timestamp> for TimestampWire {
    fn from(t: Timestamp) -> Self {
        TimestampWire {
            secs: t.secs,
            nanos: t.nanos,
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:09}", self.secs, self.nanos)
    }
}

/// When a stage started and ended; either is unset until it happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Span {
    pub start: Option<Timestamp>,
    pub end: Option<Timestamp>,
}

impl Span {
    /// The span's length in seconds, once it has both ends. `None` also when the end is
    /// before the start: the wall clock stepped back (an RTC in local time, an NTP
    /// correction after the kexec), and a negative length would be a lie, not a measure.
    pub fn secs(&self) -> Option<f64> {
        match (self.start, self.end) {
            (Some(start), Some(end)) if end >= start => Some(end.secs_since(start)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: u64, nanos: u32) -> Timestamp {
        Timestamp::new(secs, nanos).unwrap()
    }

    #[test]
    fn kernel_releases() {
        for ok in ["6.1.0-40-amd64", "6.12.9+bpo-amd64", "5.15.0-1~rc1", "a"] {
            KernelRelease::new(ok).unwrap();
        }
        for bad in ["", ".hidden", "6.1/../x", "6.1 0", &"9".repeat(65), "6.1\n"] {
            let err = KernelRelease::new(bad).unwrap_err();
            assert!(err.to_string().starts_with("kernel release"), "{err}");
        }
    }

    #[test]
    fn upgrade_ids() {
        UpgradeId::new("20251124T100000Z.123:x-y_z").unwrap();
        for bad in ["", ".x", "a/b", "a b", &"x".repeat(65)] {
            assert!(UpgradeId::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn timestamps_refuse_overflowing_nanos() {
        assert!(Timestamp::new(1, 999_999_999).is_ok());
        let err = Timestamp::new(1, 1_000_000_000).unwrap_err();
        assert!(err.to_string().contains("below 1000000000"), "{err}");
        let err =
            serde_json::from_str::<Timestamp>(r#"{"secs":1,"nanos":1000000000}"#).unwrap_err();
        assert!(err.to_string().contains("below"), "{err}");
        assert!(serde_json::from_str::<Timestamp>(r#"{"secs":1,"nanos":0,"x":1}"#).is_err());
    }

    #[test]
    fn timestamp_arithmetic_is_exact_across_second_boundaries() {
        assert_eq!(ts(10, 900_000_000).secs_since(ts(10, 100_000_000)), 0.8);
        assert_eq!(ts(11, 100_000_000).secs_since(ts(10, 900_000_000)), 0.2);
        assert_eq!(ts(10, 0).secs_since(ts(11, 500_000_000)), -1.5);
        // Large epoch values keep nanosecond differences before the f64 conversion.
        assert_eq!(ts(1_763_978_400, 1).secs_since(ts(1_763_978_400, 0)), 1e-9);
        assert_eq!(ts(u64::MAX, 0).secs_since(ts(u64::MAX - 2, 0)), 2.0);
    }

    #[test]
    fn span_lengths() {
        let span = |start, end| Span { start, end };
        assert_eq!(span(None, None).secs(), None);
        assert_eq!(span(Some(ts(5, 0)), None).secs(), None);
        assert_eq!(span(None, Some(ts(5, 0))).secs(), None);
        assert_eq!(
            span(Some(ts(5, 0)), Some(ts(7, 250_000_000))).secs(),
            Some(2.25)
        );
        assert_eq!(span(Some(ts(5, 0)), Some(ts(5, 0))).secs(), Some(0.0));
        // The clock stepped back: no length rather than a negative one.
        assert_eq!(span(Some(ts(5, 0)), Some(ts(4, 0))).secs(), None);
    }

    #[test]
    fn timestamp_serialises_as_secs_and_nanos() {
        let t = ts(1_763_978_400, 5);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, r#"{"secs":1763978400,"nanos":5}"#);
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
        assert_eq!(t.to_string(), "1763978400.000000005");
    }
}
