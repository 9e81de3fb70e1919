//! The validated, merged configuration. Everything here has passed the checks in
//! `merge`, so users of [`Settings`] need not re-check ranges or formats.
//!
//! `Serialize` produces the same shape as the configuration files, so the output of
//! `upgradectl config show` can be saved and loaded back as a configuration file.

pub use dumper::predump::PreDumps;
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Default directory of the checkpoint area when `area.kind = "directory"`.
pub const DEFAULT_AREA_PATH: &str = "/var/lib/upgraded";
/// Default directory of the health scripts.
pub const DEFAULT_SCRIPTS_DIR: &str = "/etc/upgraded/health.d";
/// Default key file that seals suspend images when `suspend.encrypt` is on.
pub const DEFAULT_SUSPEND_KEY_FILE: &str = "/etc/upgraded/suspend.key";
/// Default tmux socket name (what `tmux` uses without `-L`).
pub const DEFAULT_TMUX_SOCKET: &str = "default";

/// The whole configuration of `upgraded`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Settings {
    pub area: AreaSettings,
    pub kernel: KernelSettings,
    pub health: HealthSettings,
    pub boot: BootSettings,
    pub retention: RetentionSettings,
    pub suspend: SuspendSettings,
    /// Written as `[[workload]]` tables in the files, hence the singular key.
    #[serde(rename = "workload")]
    pub workloads: Vec<Workload>,
}

impl Settings {
    /// The workload called `name`, if configured.
    pub fn workload(&self, name: &str) -> Option<&Workload> {
        self.workloads.iter().find(|w| w.name == name)
    }
}

/// `[area]`: where checkpoint images are kept across the kexec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AreaSettings {
    #[serde(flatten)]
    pub location: AreaLocation,
    /// Free space required on top of the estimated image size, in percent of that
    /// estimate (0..=100).
    pub min_free_margin_percent: u8,
}

impl Default for AreaSettings {
    fn default() -> Self {
        AreaSettings {
            location: AreaLocation::Directory {
                path: PathBuf::from(DEFAULT_AREA_PATH),
            },
            min_free_margin_percent: 20,
        }
    }
}

/// The kind of storage that holds the images, with what locates it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum AreaLocation {
    /// A directory on a file system that survives the kexec.
    Directory { path: PathBuf },
    /// A whole block device (or partition) reserved for images.
    Disk { device: PathBuf },
    /// Persistent memory, real or reserved from RAM with `memmap=`.
    Pmem {
        device: PathBuf,
        #[serde(skip_serializing_if = "Option::is_none")]
        memmap: Option<Memmap>,
    },
}

impl AreaLocation {
    /// The RAM range a pmem area reserves with `memmap=`, which every kernel the
    /// images cross must be booted with too.
    pub fn memmap(&self) -> Option<&Memmap> {
        match self {
            AreaLocation::Pmem {
                memmap: Some(m), ..
            } => Some(m),
            _ => None,
        }
    }

    pub fn kind(&self) -> AreaKind {
        match self {
            AreaLocation::Directory { .. } => AreaKind::Directory,
            AreaLocation::Disk { .. } => AreaKind::Disk,
            AreaLocation::Pmem { .. } => AreaKind::Pmem,
        }
    }
}

/// Values of `area.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AreaKind {
    Directory,
    Disk,
    Pmem,
}

impl AreaKind {
    pub const ALL: [AreaKind; 3] = [AreaKind::Directory, AreaKind::Disk, AreaKind::Pmem];

    pub fn as_str(self) -> &'static str {
        match self {
            AreaKind::Directory => "directory",
            AreaKind::Disk => "disk",
            AreaKind::Pmem => "pmem",
        }
    }
}

impl fmt::Display for AreaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A RAM range reserved as persistent memory through the kernel argument
/// `memmap=<size>!<offset>`, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memmap {
    pub size: u64,
    pub offset: u64,
}

impl Memmap {
    /// The kernel command-line argument that reserves this range.
    pub fn kernel_arg(&self) -> String {
        format!("memmap={self}")
    }
}

/// The shortest spelling with the kernel's K/M/G suffixes, e.g. `512M!1G`.
impl fmt::Display for Memmap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}!{}", SizeText(self.size), SizeText(self.offset))
    }
}

impl Serialize for Memmap {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

struct SizeText(u64);

impl fmt::Display for SizeText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, char); 3] = [(1 << 30, 'G'), (1 << 20, 'M'), (1 << 10, 'K')];
        for (unit, suffix) in UNITS {
            // u64::is_multiple_of needs Rust 1.87; the workspace supports 1.80.
            #[allow(clippy::manual_is_multiple_of)]
            if self.0 != 0 && self.0 % unit == 0 {
                return write!(f, "{}{suffix}", self.0 / unit);
            }
        }
        write!(f, "{}", self.0)
    }
}

/// One `[[workload]]`: something to checkpoint before the kexec and restore after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Workload {
    pub name: String,
    #[serde(flatten)]
    pub selector: Selector,
    /// Health check command and arguments, run after the restore.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<Vec<String>>,
    /// Checkpoint established TCP connections (CRIU `--tcp-established`).
    pub tcp_established: bool,
    /// Pre-dumps before the final dump, to shorten the freeze: a number, or `auto`
    /// (as long as each copies clearly less than the one before; see
    /// `dumper::predump`).
    #[serde(serialize_with = "serialize_pre_dumps")]
    pub pre_dump: PreDumps,
    /// Keep the workload running after the dump.
    pub leave_running: bool,
}

/// `pre_dump` as it is written: a number, or "auto".
fn serialize_pre_dumps<S: Serializer>(p: &PreDumps, s: S) -> Result<S::Ok, S::Error> {
    match p {
        PreDumps::Auto => s.serialize_str("auto"),
        other => s.serialize_u32(other.max()),
    }
}

/// What a workload is and how to find it; serialized as `kind` plus one selector key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Selector {
    Process { pid: u32 },
    Service { unit: String },
    Scope { unit: String },
    Session { session: String },
    Tmux { socket: String },
    Screen { screen: String },
    Podman { container: String },
    Nspawn { machine: String },
}

impl Selector {
    pub fn kind(&self) -> WorkloadKind {
        match self {
            Selector::Process { .. } => WorkloadKind::Process,
            Selector::Service { .. } => WorkloadKind::Service,
            Selector::Scope { .. } => WorkloadKind::Scope,
            Selector::Session { .. } => WorkloadKind::Session,
            Selector::Tmux { .. } => WorkloadKind::Tmux,
            Selector::Screen { .. } => WorkloadKind::Screen,
            Selector::Podman { .. } => WorkloadKind::Podman,
            Selector::Nspawn { .. } => WorkloadKind::Nspawn,
        }
    }
}

/// Values of `workload.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    Process,
    Service,
    Scope,
    Session,
    Tmux,
    Screen,
    Podman,
    Nspawn,
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 8] = [
        WorkloadKind::Process,
        WorkloadKind::Service,
        WorkloadKind::Scope,
        WorkloadKind::Session,
        WorkloadKind::Tmux,
        WorkloadKind::Screen,
        WorkloadKind::Podman,
        WorkloadKind::Nspawn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Process => "process",
            WorkloadKind::Service => "service",
            WorkloadKind::Scope => "scope",
            WorkloadKind::Session => "session",
            WorkloadKind::Tmux => "tmux",
            WorkloadKind::Screen => "screen",
            WorkloadKind::Podman => "podman",
            WorkloadKind::Nspawn => "nspawn",
        }
    }

    /// The key that selects a workload of this kind.
    pub fn selector_key(self) -> &'static str {
        match self {
            WorkloadKind::Process => "pid",
            WorkloadKind::Service | WorkloadKind::Scope => "unit",
            WorkloadKind::Session => "session",
            WorkloadKind::Tmux => "socket",
            WorkloadKind::Screen => "screen",
            WorkloadKind::Podman => "container",
            WorkloadKind::Nspawn => "machine",
        }
    }

    /// A line that would select a workload of this kind, for hints.
    pub fn selector_example(self) -> &'static str {
        match self {
            WorkloadKind::Process => "pid = 4242",
            WorkloadKind::Service => "unit = \"nginx.service\"",
            WorkloadKind::Scope => "unit = \"session-3.scope\"",
            WorkloadKind::Session => "session = \"3\"",
            WorkloadKind::Tmux => "socket = \"default\"",
            WorkloadKind::Screen => "screen = \"work\"",
            WorkloadKind::Podman => "container = \"db\"",
            WorkloadKind::Nspawn => "machine = \"build\"",
        }
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[kernel]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct KernelSettings {
    /// The kernel to go back to when the new one fails.
    pub known_good: KnownGood,
    /// Extra kernel arguments for the new kernel, one argument per element.
    pub extra_cmdline: Vec<String>,
}

/// Which kernel a rollback returns to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum KnownGood {
    /// The kernel that was running when the upgrade started.
    #[default]
    Current,
    /// A fixed kernel release, as `uname -r` prints it.
    Release(String),
}

/// Written back as the string it was configured with: `"current"` or the release.
impl Serialize for KnownGood {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            KnownGood::Current => serializer.serialize_str("current"),
            KnownGood::Release(release) => serializer.serialize_str(release),
        }
    }
}

/// `[health]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthSettings {
    /// How long the new kernel has to prove healthy before a rollback (10..=3600).
    pub timeout_secs: u32,
    /// Wait after the restore before the first health check.
    pub settle_secs: u32,
    /// Directory of executable health scripts run after every upgrade.
    pub scripts_dir: PathBuf,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            timeout_secs: 300,
            settle_secs: 10,
            scripts_dir: PathBuf::from(DEFAULT_SCRIPTS_DIR),
        }
    }
}

impl HealthSettings {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.into())
    }

    pub fn settle(&self) -> Duration {
        Duration::from_secs(self.settle_secs.into())
    }
}

/// `[boot]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootSettings {
    /// Boots of the new kernel to try before falling back to the known-good one (1..=10).
    pub max_attempts: u8,
}

impl Default for BootSettings {
    fn default() -> Self {
        BootSettings { max_attempts: 2 }
    }
}

/// `[retention]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetentionSettings {
    /// Committed image generations to keep (at least 1).
    pub keep: u32,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings { keep: 3 }
    }
}

/// Values of `suspend.compress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SuspendCompression {
    None,
    Zstd,
}

impl SuspendCompression {
    pub fn as_str(self) -> &'static str {
        match self {
            SuspendCompression::None => "none",
            SuspendCompression::Zstd => "zstd",
        }
    }
}

impl std::fmt::Display for SuspendCompression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[suspend]`: how `upgradectl suspend` keeps its images (docs/suspend-encryption.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SuspendSettings {
    /// Seal suspend images with `key_file` (age, X25519) before they reach the area.
    pub encrypt: bool,
    /// Compress suspend images (zstd) into one sealed file, before they are
    /// encrypted when `encrypt` is on. Meant for disk-backed areas (suspend to disk);
    /// refused with a pmem area, which is memory already. Upgrades never compress:
    /// their images are in the blackout.
    pub compress: SuspendCompression,
    /// The age identity that seals and unseals them; absolute. Read whenever sealed
    /// images are resumed or listed, even with `encrypt` off.
    pub key_file: PathBuf,
}

impl SuspendSettings {
    /// Whether a suspend seals its images into one file (encrypted, compressed or
    /// both) rather than leaving a generation directory.
    pub fn seals(&self) -> bool {
        self.encrypt || self.compress != SuspendCompression::None
    }
}

impl Default for SuspendSettings {
    fn default() -> Self {
        SuspendSettings {
            encrypt: false,
            compress: SuspendCompression::None,
            key_file: PathBuf::from(DEFAULT_SUSPEND_KEY_FILE),
        }
    }
}
