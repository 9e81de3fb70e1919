//! What one configuration file may say. Every key is optional (a drop-in sets only what
//! it changes) and unknown keys are refused, so a typo fails loudly instead of being
//! ignored. Values keep their span so that validation, which runs after all files are
//! merged, can still name the line that set them.
//!
//! Integers are read as `i64` (TOML's integer type) and range-checked in `merge`, which
//! gives "timeout_secs = 5 is out of range 10..=3600" instead of serde's "expected u32".

use super::settings::{AreaKind, SuspendCompression, WorkloadKind};
use serde::Deserialize;
use toml::Spanned;

/// `pre_dump` as written: a number of pre-dumps, or a word (only "auto" is taken,
/// when merging, where the error can point at the value).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PreDumpValue {
    Count(i64),
    Word(String),
}

impl<'de> Deserialize<'de> for PreDumpValue {
    // By hand rather than untagged: serde's untagged error ("did not match any
    // variant") would not say what the key takes.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = PreDumpValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number of pre-dumps (0 to 16) or \"auto\"")
            }
            fn visit_i64<E>(self, v: i64) -> Result<PreDumpValue, E> {
                Ok(PreDumpValue::Count(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<PreDumpValue, E> {
                Ok(PreDumpValue::Count(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E>(self, v: &str) -> Result<PreDumpValue, E> {
                Ok(PreDumpValue::Word(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Fragment {
    pub area: Option<AreaFragment>,
    pub kernel: Option<KernelFragment>,
    pub health: Option<HealthFragment>,
    pub boot: Option<BootFragment>,
    pub retention: Option<RetentionFragment>,
    pub suspend: Option<SuspendFragment>,
    #[serde(default)]
    pub workload: Vec<Spanned<WorkloadFragment>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AreaFragment {
    pub kind: Option<Spanned<AreaKind>>,
    pub path: Option<Spanned<String>>,
    pub device: Option<Spanned<String>>,
    pub memmap: Option<Spanned<String>>,
    pub min_free_margin_percent: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorkloadFragment {
    pub name: Option<Spanned<String>>,
    pub kind: Option<Spanned<WorkloadKind>>,
    // Selectors: exactly the one matching `kind` may be given.
    pub pid: Option<Spanned<i64>>,
    pub unit: Option<Spanned<String>>,
    pub session: Option<Spanned<String>>,
    pub socket: Option<Spanned<String>>,
    pub screen: Option<Spanned<String>>,
    pub container: Option<Spanned<String>>,
    pub machine: Option<Spanned<String>>,
    pub check: Option<Spanned<Vec<String>>>,
    pub tcp_established: Option<Spanned<bool>>,
    pub pre_dump: Option<Spanned<PreDumpValue>>,
    pub leave_running: Option<Spanned<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KernelFragment {
    pub known_good: Option<Spanned<String>>,
    pub extra_cmdline: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HealthFragment {
    pub timeout_secs: Option<Spanned<i64>>,
    pub settle_secs: Option<Spanned<i64>>,
    pub scripts_dir: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BootFragment {
    pub max_attempts: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetentionFragment {
    pub keep: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SuspendFragment {
    pub encrypt: Option<Spanned<bool>>,
    pub compress: Option<Spanned<SuspendCompression>>,
    pub key_file: Option<Spanned<String>>,
}
