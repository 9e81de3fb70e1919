//! The pre-flight checks of an upgrade, run before anything is frozen: whether the
//! target kernel, this machine and the chosen workloads can go through a checkpoint,
//! a kexec and a restore.
//!
//! [`run`] is pure orchestration: what it cannot decide from its [`Input`] it asks a
//! [`Probe`] (load the kernel, dry-run CRIU, statvfs...), so that every decision here
//! is tested on any host with a fake probe. Every check yields one [`CheckResult`],
//! in a fixed order; a failed check does not stop the later ones, so the admin sees
//! every problem at once. A check that cannot run (no target kernel to load, a
//! workload that was not found) is [`Status::Skipped`] with the reason.

use std::fmt;
use std::path::{Path, PathBuf};

use dumper::area::{fs_verdict, AreaUse, FsType, FsVerdict};
use dumper::workload::Resolved;
use serde::{Deserialize, Serialize};

use crate::area_device::{Contents, Device};
use crate::config::{AreaKind, Memmap};
use crate::kernel::{
    check_checkpoint_support, kernel_version, known_problems, InstalledKernel, KernelConfig,
    KernelError, KnownBad, Need, Scope, Version,
};
use crate::kexec::{Method, KEXEC_DEFAULTS};

#[cfg(test)]
mod tests;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    /// Allowed, but the admin should know.
    Warn,
    /// The upgrade would fail or lose work: it is refused.
    Fail,
    /// The check could not run; `detail` says why.
    Skipped,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Skipped => "skipped",
        })
    }
}

/// One check: what was found and, when something is wrong, what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub status: Status,
    pub detail: String,
    pub hint: Option<String>,
}

impl CheckResult {
    fn new(name: impl Into<String>, status: Status, detail: impl Into<String>) -> CheckResult {
        CheckResult {
            name: name.into(),
            status,
            detail: detail.into(),
            hint: None,
        }
    }

    fn hint(mut self, hint: impl Into<String>) -> CheckResult {
        self.hint = Some(hint.into());
        self
    }
}

/// Every check, in the order they ran.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub checks: Vec<CheckResult>,
}

impl Report {
    /// Whether the upgrade may go ahead: no check failed (warnings and skipped
    /// checks do not stop it).
    pub fn passed(&self) -> bool {
        !self.checks.iter().any(|c| c.status == Status::Fail)
    }

    /// The failed checks with what they found, a line each after a count, for an
    /// error message; empty when none failed.
    pub fn failures(&self) -> String {
        let failed: Vec<String> = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| format!("\n- {}: {}", c.name, c.detail))
            .collect();
        if failed.is_empty() {
            return String::new();
        }
        format!(
            "{} of {} pre-flight checks failed:{}",
            failed.len(),
            self.checks.len(),
            failed.concat()
        )
    }
}

/// What a probe reports when it could not find out; shown with its source chain.
pub type ProbeError = Box<dyn std::error::Error + Send + Sync>;

/// The side-effecting parts of the checks. The daemon implements it on the real
/// system; tests fake it.
pub trait Probe {
    /// Loads `kernel` for kexec with `cmdline`, then unloads it again.
    fn test_load(&self, kernel: &InstalledKernel, cmdline: &str) -> Result<Method, ProbeError>;
    /// A dump of `workload` that leaves it running, into a scratch directory that is
    /// removed afterwards.
    fn criu_dry_run(&self, workload: &Resolved) -> Result<(), ProbeError>;
    /// The bytes available on the file system of `area_path` (statvfs: `f_bavail *
    /// f_frsize`; the root reserve is left to the rest of the system).
    fn free_bytes(&self, area_path: &Path) -> Result<u64, ProbeError>;
    /// The type of the file system of `area_path` (statfs(2)'s `f_type`).
    fn area_fs_type(&self, area_path: &Path) -> Result<FsType, ProbeError>;
    /// Whether images can be written in the area at `area_path` now
    /// ([`dumper::Area::check_writable`]: not mounted read-only, and a file can be
    /// created, written, synced and removed there); leaves nothing behind.
    fn area_writable(&self, area_path: &Path) -> Result<(), ProbeError>;
    /// CRIU's version: the distribution package's when there is one (see
    /// [`crate::kernel::known_problems`]).
    fn criu_version(&self) -> Result<Version, ProbeError>;
    /// glibc's version, the package's when there is one.
    fn glibc_version(&self) -> Result<Version, ProbeError>;
    /// `LOAD_KEXEC` of kexec-tools, as [`crate::kexec::load_kexec_setting`] reads it.
    fn load_kexec_setting(&self) -> Result<Option<bool>, ProbeError>;
    /// Whether `workload` lives in a mount namespace other than init's (containers,
    /// sandboxed services): some known problems affect only those.
    fn own_mount_namespace(&self, workload: &Resolved) -> Result<bool, ProbeError>;
}

/// The target kernel, as the caller resolved it.
#[derive(Debug, Clone)]
pub enum TargetKernel {
    Found(InstalledKernel),
    /// It could not be resolved: the "kernel" row, made by [`kernel_missing`].
    Missing(CheckResult),
}

/// One configured workload and what resolving it gave.
#[derive(Debug)]
pub struct WorkloadInput {
    /// As configured (or given on the command line).
    pub name: String,
    pub resolved: Result<Resolved, dumper::Error>,
}

/// What the checks look at, gathered by the caller.
#[derive(Debug)]
pub struct Input {
    pub target: TargetKernel,
    /// `uname -r`.
    pub running_release: String,
    /// The running kernel's configuration, if found (`/boot/config-<release>`).
    pub running_config: Option<KernelConfig>,
    /// The target kernel's configuration (`/boot/config-<release>`); the checks need
    /// it when the target was found.
    pub target_config: Option<KernelConfig>,
    /// The command line the target will boot with ([`crate::kernel::target_cmdline`]).
    pub cmdline: Result<String, KernelError>,
    /// What the kernels must support; see [`needs`].
    pub needs: Vec<Need>,
    /// In the order of the configuration.
    pub workloads: Vec<WorkloadInput>,
    /// Where the images will be written.
    pub area_path: PathBuf,
    /// `area.min_free_margin_percent`.
    pub margin_percent: u8,
    /// A disk or pmem area's device, for the "area device" row; `None` for a directory
    /// area (no row).
    pub area_device: Option<AreaDeviceInput>,
    /// What sealed suspends left in their staging area in memory
    /// ([`crate::local::staged_suspends`]), which the kexec would lose; or why it could
    /// not be read. Nothing there: no row.
    pub staged_suspends: Result<Vec<StagedSuspend>, String>,
}

/// A suspend waiting in the sealing staging area, in memory (/run): a sealed suspend
/// could neither seal it nor resume the workload, or was interrupted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedSuspend {
    pub generation: String,
    /// Its directory.
    pub path: PathBuf,
    /// Its workloads not restored yet.
    pub workloads: Vec<String>,
}

/// A disk or pmem area, as the caller found it.
#[derive(Debug)]
pub struct AreaDeviceInput {
    pub kind: AreaKind,
    /// `area.device`.
    pub device: PathBuf,
    /// `area.memmap` of a pmem area.
    pub memmap: Option<Memmap>,
    /// The running kernel's command line (`/proc/cmdline`).
    pub running_cmdline: String,
    /// What checking the device gave ([`crate::area_device::facts`]): the device and
    /// what it holds, or why it is unusable.
    pub found: Result<(Device, Contents), String>,
}

/// What an upgrade needs from the kernels: checkpoint/restore and kexec always,
/// pre-dump when a workload asks for pre-dumps, the pmem drivers for a pmem area.
pub fn needs(any_pre_dump: bool, area: AreaKind) -> Vec<Need> {
    let mut needs = vec![Need::Checkpoint, Need::Kexec];
    if any_pre_dump {
        needs.push(Need::PreDump);
    }
    if area == AreaKind::Pmem {
        needs.push(Need::PmemArea);
    }
    needs
}

/// The "kernel" row for a target `spec` that did not resolve.
pub fn kernel_missing(spec: &str, err: &KernelError) -> CheckResult {
    let (detail, hint) = match err {
        KernelError::KernelNotInstalled { .. } => (
            chain(err),
            "install the kernel package first, or name one of the installed releases",
        ),
        KernelError::InvalidKernelSpec { .. } | KernelError::NotInBootDir { .. } => (
            chain(err),
            "name the kernel by its release, as `uname -r` would print it once booted",
        ),
        _ => (
            format!(
                "looking for kernel {}: {}",
                dumper::manifest::shown(spec),
                chain(err)
            ),
            "check that /boot is mounted and readable",
        ),
    };
    CheckResult::new(NAME_KERNEL, Status::Fail, detail).hint(hint)
}

const NAME_KERNEL: &str = "kernel";
const NAME_CONFIG: &str = "kernel config";
const NAME_KNOWN_BAD: &str = "known bad";
const NAME_KEXEC_TOOLS: &str = "kexec-tools";
const NAME_AREA_FS: &str = "area";
const NAME_AREA_DEVICE: &str = "area device";
const NAME_AREA: &str = "area space";
const NAME_STAGED: &str = "suspends in memory";
const NAME_LOAD: &str = "kexec load";

/// Runs every check, in order.
pub fn run(input: &Input, probe: &dyn Probe) -> Report {
    let mut checks = vec![
        check_kernel(input),
        check_config(input),
        check_known_bad(input, probe),
        check_kexec_tools(probe),
        check_area_fs(input, probe),
    ];
    checks.extend(check_area_device(input));
    checks.push(check_area(input, probe));
    checks.extend(check_staged(input));
    for w in &input.workloads {
        checks.extend(check_workload(w, probe));
    }
    checks.push(check_load(input, probe));
    Report { checks }
}

// --- the checks -------------------------------------------------------------------------

fn check_kernel(input: &Input) -> CheckResult {
    let k = match &input.target {
        TargetKernel::Found(k) => k,
        TargetKernel::Missing(row) => return row.clone(),
    };
    let initrd = k.initrd.as_ref().map_or("no initramfs".to_owned(), |p| {
        format!("initramfs {}", p.display())
    });
    let mut detail = format!("{}: {}, {initrd}", k.release, k.image.display());
    let mut status = Status::Pass;
    let mut hints = Vec::new();
    if k.release == input.running_release {
        status = Status::Warn;
        detail.push_str(
            "; it is the running kernel: the upgrade checkpoints, kexecs into the same \
             kernel and restores (a reboot in place)",
        );
        hints.push("to change kernels, name another installed release".to_owned());
    }
    if k.initrd.is_none() {
        // The boot side of upgraded (mounting the area, restoring early) runs there.
        status = Status::Warn;
        detail.push_str(&format!(
            "; without an initramfs (initrd.img-{r} or initramfs-{r}.img) nothing of \
             upgraded runs before the root file system is up",
            r = k.release
        ));
        hints.push(format!(
            "build one: update-initramfs -c -k {r} (or dracut --kver {r})",
            r = k.release
        ));
    }
    let row = CheckResult::new(NAME_KERNEL, status, detail);
    if hints.is_empty() {
        row
    } else {
        row.hint(hints.join("; "))
    }
}

fn check_config(input: &Input) -> CheckResult {
    // Pre-dumps run on the running kernel only; the target restores, and must be able
    // to kexec again (rollback) and read the area.
    let target_needs: Vec<Need> = input
        .needs
        .iter()
        .copied()
        .filter(|n| *n != Need::PreDump)
        .collect();
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let mut status = Status::Pass;
    let mut hints = Vec::new();

    // The same kernel on both sides: one check, with every need, of whichever copy of
    // its configuration the caller found.
    let same_kernel =
        matches!(&input.target, TargetKernel::Found(k) if k.release == input.running_release);
    let target_config = if same_kernel {
        input
            .target_config
            .as_ref()
            .or(input.running_config.as_ref())
    } else {
        input.target_config.as_ref()
    };
    if !same_kernel {
        match &input.running_config {
            Some(cfg) => {
                for p in check_checkpoint_support(cfg, &input.needs) {
                    problems.push((
                        p.need,
                        format!("running kernel {}: {p}", input.running_release),
                    ));
                }
            }
            None => {
                status = Status::Warn;
                notes.push(format!(
                    "the running kernel's configuration (config-{}) was not found: only the \
                     target's was checked",
                    input.running_release
                ));
            }
        }
    }

    match &input.target {
        TargetKernel::Missing(_) => {
            status = Status::Skipped;
            notes.push(
                "the target kernel was not found, so its configuration was not checked".into(),
            );
        }
        TargetKernel::Found(k) => match target_config {
            Some(cfg) => {
                let needs = if same_kernel {
                    &input.needs
                } else {
                    &target_needs
                };
                let role = if same_kernel {
                    "kernel"
                } else {
                    "target kernel"
                };
                for p in check_checkpoint_support(cfg, needs) {
                    problems.push((p.need, format!("{role} {}: {p}", k.release)));
                }
            }
            None => {
                status = Status::Fail;
                let what = match &k.config {
                    Some(path) => format!("{} could not be read", path.display()),
                    None => format!("there is no config-{} next to its image", k.release),
                };
                notes.push(format!(
                    "the configuration of target kernel {} is missing: {what}",
                    k.release
                ));
                hints.push(format!(
                    "install the kernel's configuration as config-{} in the boot directory \
                     (distribution kernel packages ship it): upgraded refuses a kernel it \
                     cannot check",
                    k.release
                ));
            }
        },
    }

    if !problems.is_empty() {
        status = Status::Fail;
        hints.push(config_hint(problems.iter().map(|(need, _)| *need)));
    }
    let mut lines: Vec<String> = problems.into_iter().map(|(_, p)| p).collect();
    lines.extend(notes);
    let detail = if lines.is_empty() {
        let needs: Vec<String> = input.needs.iter().map(Need::to_string).collect();
        format!("every option {} needs is set", needs.join(", "))
    } else {
        lines.join("; ")
    };
    let row = CheckResult::new(NAME_CONFIG, status, detail);
    if hints.is_empty() {
        row
    } else {
        row.hint(hints.join("; "))
    }
}

/// What to do about missing options, by what they are needed for.
fn config_hint(needs: impl Iterator<Item = Need>) -> String {
    let needs: Vec<Need> = needs.collect();
    let mut hint = "use a kernel built with these options (the distribution's kernels are), \
                    or rebuild the kernel with them"
        .to_owned();
    if needs.contains(&Need::PreDump) {
        hint.push_str("; for pre-dump alone, set pre_dump = 0 on the workloads instead");
    }
    if needs.contains(&Need::PmemArea) {
        hint.push_str(
            "; for the pmem area alone, use area.kind = \"directory\" or \"disk\" instead",
        );
    }
    hint
}

fn check_known_bad(input: &Input, probe: &dyn Probe) -> CheckResult {
    let criu = match probe.criu_version() {
        Ok(v) => v,
        Err(e) => {
            return CheckResult::new(
                NAME_KNOWN_BAD,
                Status::Skipped,
                format!("CRIU's version is unknown: {}", chain(&*e)),
            )
            .hint("install criu (apt install criu)")
        }
    };
    let mut notes = Vec::new();
    let glibc = match probe.glibc_version() {
        Ok(v) => Some(v),
        Err(e) => {
            // known_problems then reports every glibc-dependent row: a warning too many.
            notes.push(format!("glibc's version is unknown ({})", chain(&*e)));
            None
        }
    };

    // The running kernel dumps, the target restores: both matter.
    let mut kernels = vec![(
        "running",
        input.running_release.as_str(),
        input.running_config.as_ref(),
    )];
    if let TargetKernel::Found(k) = &input.target {
        if k.release != input.running_release {
            kernels.push(("target", k.release.as_str(), input.target_config.as_ref()));
        }
    }
    let mut versions = Vec::new();
    for (role, release, config) in kernels {
        match kernel_version(release, config) {
            Ok(v) => versions.push((role, release, v)),
            Err(e) => notes.push(format!("the {role} kernel's version is unknown ({e})")),
        }
    }
    if versions.is_empty() {
        return CheckResult::new(NAME_KNOWN_BAD, Status::Skipped, notes.join("; "));
    }

    // One line per problem, naming every kernel it was found on.
    let mut matched: Vec<(&KnownBad, Vec<String>)> = Vec::new();
    for (role, release, version) in &versions {
        for row in known_problems(version, &criu, glibc.as_ref()) {
            let on = format!("the {role} kernel {release} ({version})");
            match matched.iter_mut().find(|(r, _)| *r == row) {
                Some((_, kernels)) => kernels.push(on),
                None => matched.push((row, vec![on])),
            }
        }
    }
    let mut mntns: Option<Vec<(String, bool)>> = None;
    let mut affecting = Vec::new();
    let mut elsewhere = Vec::new();
    for (row, kernels) in matched {
        let affected = affected_workloads(row, input, probe, &mut mntns, &mut notes);
        if affected.is_empty() {
            elsewhere.push(row.issue);
        } else {
            affecting.push(format!(
                "on {}: {row}; chosen workloads affected: {}",
                kernels.join(" and "),
                affected.join(", ")
            ));
        }
    }

    let glibc_text = glibc
        .as_ref()
        .map_or("unknown".to_owned(), Version::to_string);
    let kernels_text: Vec<String> = versions
        .iter()
        .map(|(role, release, v)| format!("{role} {release} ({v})"))
        .collect();
    let (status, mut lines) = if affecting.is_empty() {
        let mut line = format!(
            "no known problem with kernel {}, CRIU {criu}, glibc {glibc_text}",
            kernels_text.join(" and ")
        );
        if !elsewhere.is_empty() {
            line.push_str(&format!(
                " for the chosen workloads ({} do not affect them)",
                elsewhere.join(", ")
            ));
        }
        (Status::Pass, vec![line])
    } else {
        (Status::Fail, affecting)
    };
    lines.extend(notes);
    let row = CheckResult::new(NAME_KNOWN_BAD, status, lines.join("; "));
    if status == Status::Fail {
        row.hint(
            "do what each problem says (usually: upgrade criu), or choose another target \
             kernel; the issue named has the details",
        )
    } else {
        row
    }
}

/// The configured workloads that `row` breaks. Mount namespaces are asked for once,
/// and only when a row depends on them; a workload whose namespace cannot be told is
/// counted as affected.
fn affected_workloads(
    row: &KnownBad,
    input: &Input,
    probe: &dyn Probe,
    mntns: &mut Option<Vec<(String, bool)>>,
    notes: &mut Vec<String>,
) -> Vec<String> {
    match row.scope {
        Scope::All => input.workloads.iter().map(|w| w.name.clone()).collect(),
        Scope::OwnMountNamespace => {
            let known = mntns.get_or_insert_with(|| {
                input
                    .workloads
                    .iter()
                    .filter_map(|w| w.resolved.as_ref().ok().map(|r| (w, r)))
                    .map(|(w, r)| {
                        let own = probe.own_mount_namespace(r).unwrap_or_else(|e| {
                            notes.push(format!(
                                "whether {} has its own mount namespace is unknown ({}), so it \
                                 counts as affected",
                                w.name,
                                chain(&*e)
                            ));
                            true
                        });
                        (w.name.clone(), own)
                    })
                    .collect()
            });
            known
                .iter()
                .filter(|(_, own)| *own)
                .map(|(name, _)| name.clone())
                .collect()
        }
    }
}

fn check_kexec_tools(probe: &dyn Probe) -> CheckResult {
    match probe.load_kexec_setting() {
        // A warning, not a refusal: kexec-load does nothing while a kernel is loaded, so
        // the upgrade's own kexec is safe; only a plain reboot afterwards is affected.
        Ok(Some(true)) => CheckResult::new(
            NAME_KEXEC_TOOLS,
            Status::Warn,
            format!(
                "LOAD_KEXEC=true in {KEXEC_DEFAULTS}: the upgrade's kexec is unaffected, but \
                 kexec-tools' kexec-load service turns a reboot without a loaded kernel into \
                 a kexec of /vmlinuz, past the boot loader, so a reboot meant to return to \
                 the known-good kernel starts the newest kernel instead"
            ),
        )
        .hint(format!(
            "set LOAD_KEXEC=false in {KEXEC_DEFAULTS} (or run dpkg-reconfigure kexec-tools \
             and answer no); upgraded loads the kernels itself"
        )),
        Ok(Some(false)) => CheckResult::new(
            NAME_KEXEC_TOOLS,
            Status::Pass,
            format!("LOAD_KEXEC is not true in {KEXEC_DEFAULTS}: kexec-tools leaves reboots alone"),
        ),
        Ok(None) => CheckResult::new(
            NAME_KEXEC_TOOLS,
            Status::Pass,
            format!("no {KEXEC_DEFAULTS}: kexec-tools does not load kernels at shutdown"),
        ),
        Err(e) => CheckResult::new(NAME_KEXEC_TOOLS, Status::Warn, chain(&*e)).hint(format!(
            "write LOAD_KEXEC=false on a line of its own in {KEXEC_DEFAULTS}"
        )),
    }
}

/// The area's file system: one that survives the kexec ([`fs_verdict`]), and that
/// takes writes now (not read-only, not refusing its owner, not full).
fn check_area_fs(input: &Input, probe: &dyn Probe) -> CheckResult {
    let area = input.area_path.display();
    let mut status = Status::Pass;
    let mut problems = Vec::new();
    let mut hints = Vec::new();
    let fs = match probe.area_fs_type(&input.area_path) {
        Ok(fs) => {
            match fs_verdict(fs, AreaUse::Upgrade) {
                FsVerdict::Fine => {}
                FsVerdict::Warn(why) => {
                    status = Status::Warn;
                    problems.push(why);
                    hints.push(
                        "if the images would not survive there, set area.path to a directory \
                         on a local disk file system (ext4, xfs, btrfs)",
                    );
                }
                FsVerdict::Refuse(why) => {
                    status = Status::Fail;
                    problems.push(why);
                    hints.push(
                        "set area.path to a directory on a disk file system (ext4, xfs, btrfs) \
                         that the new kernel mounts at boot",
                    );
                }
            }
            fs.to_string()
        }
        Err(e) => {
            status = Status::Fail;
            problems.push(format!("its file system type is unknown: {}", chain(&*e)));
            hints.push("check that the area exists and is mounted (area.path)");
            "unknown file system".to_owned()
        }
    };
    let writable = match probe.area_writable(&input.area_path) {
        Ok(()) => "writable",
        Err(e) => {
            status = Status::Fail;
            problems.push(chain(&*e));
            hints.push(
                "the upgrade writes its state and images there: make it writable, or set \
                 area.path to a directory on a writable disk file system",
            );
            "not writable"
        }
    };
    let mut detail = format!("{area}: {fs}, {writable}");
    for p in problems {
        detail.push_str("; ");
        detail.push_str(&p);
    }
    let row = CheckResult::new(NAME_AREA_FS, status, detail);
    if hints.is_empty() {
        row
    } else {
        row.hint(hints.join("; "))
    }
}

/// A disk or pmem area: the device passed [`crate::area_device::inspect`] and holds the
/// area's file system; for a pmem area reserved with `memmap=`, the running kernel was
/// booted with the same reservation. Without it the range is not reserved now: there
/// is no pmem device there, or writing to it would overwrite memory the kernel uses.
/// (The target kernel gets the reservation on its command line from upgraded, and its
/// drivers are in the "kernel config" row.)
fn check_area_device(input: &Input) -> Option<CheckResult> {
    let d = input.area_device.as_ref()?;
    let mut status = Status::Pass;
    let mut parts = Vec::new();
    let mut hints = Vec::new();
    match &d.found {
        Err(e) => {
            status = Status::Fail;
            parts.push(e.clone());
        }
        Ok((dev, contents)) => {
            let mut what = format!("{}: {}", d.device.display(), dev.node.display());
            if let Some(size) = dev.size {
                what.push_str(&format!(", {}", human_bytes(size)));
            }
            if d.kind == AreaKind::Pmem {
                what.push_str(match (dev.mounted_dax, dev.dax) {
                    (true, _) => ", mounted with DAX",
                    (false, true) => ", supports DAX but is mounted without it",
                    (false, false) => ", no DAX",
                });
            }
            parts.push(what);
            match contents {
                Contents::Ours { .. } => parts.push(format!(
                    "holds the area's file system (ext4, label {})",
                    crate::area_device::LABEL
                )),
                Contents::Empty => {
                    status = Status::Fail;
                    parts.push("holds no file system".into());
                    hints.push("run `upgradectl area init`".to_owned());
                }
                Contents::Other { found } => {
                    status = Status::Fail;
                    parts.push(format!("holds {found}, not the area's file system"));
                    hints.push(
                        "if nothing on the device is needed, erase it (wipefs -a) and run \
                         `upgradectl area init`; otherwise fix area.device"
                            .to_owned(),
                    );
                }
            }
        }
    }
    if d.kind == AreaKind::Pmem {
        match &d.memmap {
            None => parts.push(
                "no area.memmap: real persistent memory, nothing to reserve on the command \
                 line"
                    .into(),
            ),
            Some(m) => {
                let reserved = crate::kernel::pmem_reservations(&d.running_cmdline);
                if reserved
                    .iter()
                    .any(|r| r.size == m.size && r.offset == m.offset)
                {
                    parts.push(format!(
                        "the running kernel reserves it (memmap={m}), and the new kernel gets \
                         the same"
                    ));
                } else {
                    status = Status::Fail;
                    let now = if reserved.is_empty() {
                        "no memmap=<size>!<offset>".to_owned()
                    } else {
                        let texts: Vec<String> = reserved
                            .iter()
                            .map(|r| format!("memmap={}", r.text))
                            .collect();
                        texts.join(" ")
                    };
                    parts.push(format!(
                        "the running kernel was booted with {now}, not memmap={m}: that RAM \
                         is not reserved now, so there is no pmem device on it or writing \
                         images there would overwrite memory in use"
                    ));
                    hints.push(format!(
                        "boot the running kernel with memmap={m} (GRUB_CMDLINE_LINUX in \
                         /etc/default/grub, update-grub, reboot), then run `upgradectl area \
                         init`; upgraded puts it on the new kernel's command line itself"
                    ));
                }
            }
        }
    }
    let row = CheckResult::new(NAME_AREA_DEVICE, status, parts.join("; "));
    Some(if hints.is_empty() {
        row
    } else {
        row.hint(hints.join("; "))
    })
}

fn check_area(input: &Input, probe: &dyn Probe) -> CheckResult {
    let resolved: Vec<&Resolved> = input
        .workloads
        .iter()
        .filter_map(|w| w.resolved.as_ref().ok())
        .collect();
    let estimate = resolved
        .iter()
        .fold(0u64, |sum, r| sum.saturating_add(r.rss_bytes));
    let required = with_margin(estimate, input.margin_percent);
    let area = input.area_path.display();
    let free = match probe.free_bytes(&input.area_path) {
        Ok(free) => free,
        Err(e) => {
            // The images could not be written there either.
            return CheckResult::new(
                NAME_AREA,
                Status::Fail,
                format!("the free space of {area} is unknown: {}", chain(&*e)),
            )
            .hint("check that the area exists and is mounted (area.path or area.device)");
        }
    };
    let mut detail = format!(
        "{} free on {area}; the images need about {} ({} resident in {} workloads, plus {}%)",
        human_bytes(free),
        human_bytes(required),
        human_bytes(estimate),
        resolved.len(),
        input.margin_percent
    );
    let unresolved = input.workloads.len() - resolved.len();
    if unresolved > 0 {
        detail.push_str(&if unresolved == 1 {
            "; 1 workload that was not found is not counted".to_owned()
        } else {
            format!("; {unresolved} workloads that were not found are not counted")
        });
    }
    if free >= required {
        CheckResult::new(NAME_AREA, Status::Pass, detail)
    } else {
        CheckResult::new(NAME_AREA, Status::Fail, detail).hint(format!(
            "free {} on {area}, move the area to a larger file system, checkpoint fewer \
             workloads, or lower area.min_free_margin_percent",
            human_bytes(required - free)
        ))
    }
}

/// Suspends waiting in the sealing staging area: in memory only, so the kexec (or any
/// reboot) would lose them. They are resumed first. No row when there are none.
fn check_staged(input: &Input) -> Option<CheckResult> {
    match &input.staged_suspends {
        Ok(staged) if staged.is_empty() => None,
        Ok(staged) => {
            let found: Vec<String> = staged
                .iter()
                .map(|s| {
                    format!(
                        "generation {} of {} is in {}",
                        s.generation,
                        s.workloads.join(", "),
                        s.path.display()
                    )
                })
                .collect();
            let resumes: Vec<String> = staged
                .iter()
                .flat_map(|s| &s.workloads)
                .map(|w| format!("`upgradectl resume {w}`"))
                .collect();
            Some(
                CheckResult::new(
                    NAME_STAGED,
                    Status::Fail,
                    format!(
                        "{}: the images of a sealed suspend that could not be sealed or \
                         resumed, in memory only: the kexec would lose them",
                        found.join("; ")
                    ),
                )
                .hint(format!(
                    "resume first: {}; then check again",
                    resumes.join(", ")
                )),
            )
        }
        Err(e) => Some(
            CheckResult::new(
                NAME_STAGED,
                Status::Warn,
                format!(
                    "the staging area of sealed suspends could not be read ({e}): images a \
                     failed sealed suspend left there, in memory, would be lost by the kexec"
                ),
            )
            .hint(format!(
                "look in {}/generations and resume what is there with `upgradectl resume NAME`",
                crate::local::SEALING_DIR
            )),
        ),
    }
}

/// `estimate` plus `margin` percent of it, rounded up.
fn with_margin(estimate: u64, margin: u8) -> u64 {
    let total = u128::from(estimate) * (100 + u128::from(margin));
    u64::try_from(total.div_ceil(100)).unwrap_or(u64::MAX)
}

fn check_workload(w: &WorkloadInput, probe: &dyn Probe) -> [CheckResult; 2] {
    let found = format!("workload {}", w.name);
    let criu = format!("criu {}", w.name);
    match &w.resolved {
        Err(e) => [
            CheckResult::new(found, Status::Fail, chain(e)),
            CheckResult::new(
                criu,
                Status::Skipped,
                format!("workload {} was not found", w.name),
            ),
        ],
        Ok(r) => [
            CheckResult::new(
                found,
                Status::Pass,
                format!(
                    "{}: {} processes under PID {}, {} resident",
                    r.target,
                    r.pids.len(),
                    r.root_pid,
                    human_bytes(r.rss_bytes)
                ),
            ),
            match probe.criu_dry_run(r) {
                Ok(()) => CheckResult::new(
                    criu,
                    Status::Pass,
                    "CRIU dumped it, leaving it running, into a scratch directory",
                ),
                Err(e) => CheckResult::new(
                    criu,
                    Status::Fail,
                    format!("a dump that leaves it running failed: {}", chain(&*e)),
                )
                .hint(
                    "the upgrade would fail at the same point with the workload frozen; fix \
                     what CRIU says (its log is named above) and check again",
                ),
            },
        ],
    }
}

fn check_load(input: &Input, probe: &dyn Probe) -> CheckResult {
    let TargetKernel::Found(k) = &input.target else {
        return CheckResult::new(NAME_LOAD, Status::Skipped, "no target kernel to load");
    };
    let cmdline = match &input.cmdline {
        Ok(c) => c,
        Err(e) => {
            return CheckResult::new(
                NAME_LOAD,
                Status::Fail,
                format!("the target's command line cannot be built: {}", chain(e)),
            )
        }
    };
    match probe.test_load(k, cmdline) {
        Ok(method) => CheckResult::new(
            NAME_LOAD,
            Status::Pass,
            format!("{} loaded with {method}, and unloaded", k.image.display()),
        ),
        Err(e) => CheckResult::new(NAME_LOAD, Status::Fail, chain(&*e)).hint(
            "the upgrade would fail at this step after the checkpoint; fix what the error says",
        ),
    }
}

// --- formatting -------------------------------------------------------------------------

/// `err` and its sources, as `{:#}` shows an anyhow chain.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}
