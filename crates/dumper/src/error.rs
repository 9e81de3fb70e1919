//! The crate's error type. Every variant names the path it is about and says what to
//! do; the underlying cause, where there is one, is the `source()` so that `{:#}`
//! prints the whole chain without repeating it.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::manifest::{FormatVersion, ValidationError, WorkloadKind, WorkloadName};

/// Errors of the `dumper` crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call on `path` failed; `action` says what was being done.
    #[error("{action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Another program could not be started.
    #[error("could not run `{command}`; is it installed?")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },

    /// Another program ran and failed.
    #[error("`{command}` failed ({status}){}", if stderr_tail.is_empty() { String::new() } else { format!(":\n{stderr_tail}") })]
    CommandFailed {
        command: String,
        status: String,
        stderr_tail: String,
    },

    // --- CRIU -----------------------------------------------------------------------
    #[error("criu is not installed (looked in /usr/sbin, /usr/bin, /sbin, /usr/local/sbin); install it: apt install criu")]
    CriuMissing,

    #[error("{} is CRIU {found}; upgraded needs {needed} or newer: upgrade the criu package", path.display())]
    CriuTooOld {
        path: PathBuf,
        found: String,
        needed: String,
    },

    #[error("talking to criu swrk failed: {what}")]
    CriuProtocol { what: String },

    #[error(
        "criu {what} failed{}{}{}",
        if message.is_empty() { String::new() } else { format!(": {message}") },
        if *errno != 0 { format!(" (errno {errno}: {})", io::Error::from_raw_os_error(*errno)) } else { String::new() },
        match log { Some(p) => format!("; the end of {}:\n{log_tail}", p.display()), None => String::new() }
    )]
    CriuFailed {
        what: &'static str,
        errno: i32,
        message: String,
        log: Option<PathBuf>,
        log_tail: String,
    },

    // --- checkpoint and restore -------------------------------------------------------
    #[error("no workload to checkpoint: name at least one")]
    NothingToCheckpoint,

    #[error(
        "workloads {} share their cgroups with other processes, so upgraded cannot freeze \
         them together; checkpoint them one at a time, or run each in its own unit \
         (systemd-run --scope ...)",
        workloads.join(", ")
    )]
    TooManySharedCgroups { workloads: Vec<String> },

    #[error(
        "{requested} pre-dump iterations were asked for, but at most {max} are supported; \
         ask for fewer (each copies only what the workload dirtied since the one before, \
         which stops shrinking after a few)"
    )]
    TooManyPreDumps { requested: u32, max: u32 },

    #[error(
        "checkpoint of workload {workload} failed{}; every workload was left running and no \
         generation was written",
        // A caller that knows the area puts an AreaFull with its path in between.
        if source.space_errno().is_some() && !matches!(**source, Error::AreaFull { .. }) {
            ": the persistent area ran out of space: free space there or move the area \
             (area.path) to a larger file system"
        } else { "" }
    )]
    DumpFailed {
        workload: String,
        #[source]
        source: Box<Error>,
    },

    #[error(
        "committing failed and workload {workload} could not be restored from {}: \
         it is NOT running; its images are kept there: restore them with \
         `criu restore -D <dir>/{workload}` after fixing: {restore}",
        pending.display()
    )]
    CommitAndRecoveryFailed {
        workload: String,
        pending: PathBuf,
        #[source]
        commit: Box<Error>,
        restore: Box<Error>,
    },

    #[error(
        "workload {workload} needs PID {pid}, which {holder:?} holds now; nothing was \
         restored: stop that process (or restore earlier in boot) and try again"
    )]
    PidTaken {
        workload: String,
        pid: u32,
        holder: String,
    },

    /// A fault the test build injected (feature `failpoints`, see `faults`).
    #[error("injected fault at {point} (FAILPOINTS)")]
    Injected { point: &'static str },

    #[error("restoring workload {workload} failed")]
    RestoreFailed {
        workload: String,
        #[source]
        source: Box<Error>,
    },

    #[error("generation {generation} has no workload named {workload}; `upgradectl images show {generation}` lists them")]
    WorkloadNotInGeneration {
        workload: String,
        generation: String,
    },

    /// A name or value given to the API was refused (the same rules as in a manifest).
    #[error("{0}")]
    InvalidName(#[from] ValidationError),

    // --- manifest -------------------------------------------------------------------
    #[error(
        "manifest {} is {size} bytes, more than the {limit} bytes a manifest may have; \
         upgraded never writes such a file: discard this generation (upgradectl images rm)",
        path.display()
    )]
    ManifestTooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },

    #[error(
        "{} is not an upgraded manifest (magic {found}, expected \"{expected}\"); \
         move the file away or discard the generation that holds it",
        path.display()
    )]
    ManifestBadMagic {
        path: PathBuf,
        /// The magic found, escaped and quoted, or `none`.
        found: String,
        expected: &'static str,
    },

    #[error(
        "manifest {} has format {found}, and this upgraded reads only format {}.x; \
         restore it with the upgraded release that wrote it, or discard the generation",
        path.display(), supported.major
    )]
    ManifestUnsupportedMajor {
        path: PathBuf,
        found: FormatVersion,
        supported: FormatVersion,
    },

    #[error(
        "manifest {} has format {found}, newer than format {supported} that this upgraded \
         knows; update upgraded to restore it, or discard the generation",
        path.display()
    )]
    ManifestNewerMinor {
        path: PathBuf,
        found: FormatVersion,
        supported: FormatVersion,
    },

    #[error(
        "manifest {} is damaged: its body hashes to {actual} but its header says {expected}; \
         the generation cannot be trusted: discard it (upgradectl images rm)",
        path.display()
    )]
    ManifestChecksum {
        path: PathBuf,
        /// The checksum in the header, escaped and quoted.
        expected: String,
        actual: String,
    },

    #[error(
        "manifest {} is not well-formed ({part}); it is damaged or was not written by \
         upgraded: discard the generation (upgradectl images rm)",
        path.display()
    )]
    ManifestSyntax {
        path: PathBuf,
        /// `header` or `body`.
        part: &'static str,
        #[source]
        source: serde_json::Error,
    },

    #[error(
        "manifest {}: {problem}; upgraded neither reads nor writes a manifest with unsafe \
         or inconsistent values (if it is on disk, discard the generation: \
         upgradectl images rm)",
        path.display()
    )]
    ManifestInvalid {
        path: PathBuf,
        problem: ValidationError,
    },

    #[error(
        "the images record {field} = {value:?}, which is refused: {problem}; nothing was \
         restored"
    )]
    RecordedOption {
        field: &'static str,
        /// At most 80 characters of it.
        value: String,
        problem: String,
    },

    #[error(
        "manifest {}: field {field} may not change once the generation is committed; \
         only states may be updated",
        path.display()
    )]
    ManifestImmutable { path: PathBuf, field: String },

    // --- area -----------------------------------------------------------------------
    #[error(
        "persistent area {} does not exist; create it, owned by the user running upgraded \
         with mode 0700 (install -d -m 0700 {}; for the default path systemd-tmpfiles \
         --create upgraded.conf does), on a file system that survives a reboot, or fix \
         area.path in the configuration (upgradectl config show)",
        path.display(), path.display()
    )]
    AreaMissing { path: PathBuf },

    #[error(
        "persistent area {} is below {}, which /etc/fstab mounts, but nothing is mounted \
         there now: images written now would land on the file system underneath and \
         vanish behind the mount at the next boot; mount it (mount {}), or remove that \
         line from /etc/fstab, or set area.path elsewhere",
        path.display(), mount_point.display(), mount_point.display()
    )]
    AreaNotMounted { path: PathBuf, mount_point: PathBuf },

    #[error(
        "persistent area {} is on a read-only mount{}; upgraded cannot write images or \
         its state there: remount it read-write (mount -o remount,rw {}), or set area.path \
         to a directory on a writable file system that survives a reboot",
        path.display(),
        match mount_point { Some(m) => format!(" ({})", m.display()), None => String::new() },
        match mount_point { Some(m) => m.display().to_string(), None => "<its mount point>".into() }
    )]
    AreaReadOnly {
        path: PathBuf,
        mount_point: Option<PathBuf>,
        /// The write that failed, when it was one (not statvfs's read-only flag).
        #[source]
        source: Option<Box<Error>>,
    },

    #[error(
        "uid {euid} owns persistent area {} but may not write there (an immutable \
         attribute, an ACL or a security module such as AppArmor or SELinux refuses it); \
         lift that (lsattr -d, getfacl and the audit log tell which), or set area.path to \
         another directory",
        path.display()
    )]
    AreaNotWritable {
        path: PathBuf,
        euid: u32,
        #[source]
        source: Box<Error>,
    },

    #[error(
        "{}the persistent area {} is full ({}{}): free space there{} or move the area \
         (area.path) to a larger file system",
        if *quota { "the disk quota is used up: " } else { "" },
        path.display(),
        match free { Some(n) => format!("{n} bytes free"), None => "free space unknown".into() },
        if *quota { " on its file system" } else { "" },
        if *quota { ", raise the quota" } else { "" }
    )]
    AreaFull {
        path: PathBuf,
        /// What statvfs said was left when the write failed.
        free: Option<u64>,
        /// EDQUOT (the quota of the user running upgraded) rather than ENOSPC.
        quota: bool,
        #[source]
        source: Box<Error>,
    },

    #[error(
        "{} is not a directory (or is a symbolic link where a directory is required); \
         move it away so that upgraded can use the persistent area",
        path.display()
    )]
    NotADirectory { path: PathBuf },

    #[error(
        "{} has mode {mode:04o}: group or others may write it, and it holds process \
         memory; run chmod 0700 {}",
        path.display(), path.display()
    )]
    AreaInsecureMode { path: PathBuf, mode: u32 },

    #[error(
        "{} is owned by uid {owner}, not by uid {euid} that runs upgraded; \
         chown it to uid {euid} or configure another area",
        path.display()
    )]
    AreaWrongOwner {
        path: PathBuf,
        owner: u32,
        euid: u32,
    },

    #[error(
        "generation {} already exists; choose another generation id, or remove it first \
         (upgradectl images rm)",
        path.display()
    )]
    GenerationExists { path: PathBuf },

    #[error(
        "{} is left over from an interrupted dump; upgraded removes such leftovers when it \
         starts, or remove it by hand",
        path.display()
    )]
    PendingExists { path: PathBuf },

    #[error(
        "generation {} does not exist; upgradectl images list shows the generations",
        path.display()
    )]
    GenerationNotFound { path: PathBuf },

    #[error(
        "{} holds generation {found}, not the generation named by its directory; \
         it was renamed or copied by hand: discard it (upgradectl images rm)",
        path.display()
    )]
    GenerationMismatch {
        path: PathBuf,
        /// The generation id in the manifest, escaped and quoted.
        found: String,
    },

    #[error(
        "manifest {} is missing; the generation is damaged: discard it \
         (upgradectl images rm)",
        path.display()
    )]
    ManifestMissing { path: PathBuf },

    #[error(
        "workload directory {} is missing; the generation is incomplete: discard it \
         (upgradectl images rm)",
        path.display()
    )]
    WorkloadDirMissing { path: PathBuf },

    #[error(
        "image file {} is missing; the generation is incomplete: discard it \
         (upgradectl images rm)",
        path.display()
    )]
    ImageMissing { path: PathBuf },

    #[error(
        "{} is not a regular file (symbolic links, directories and devices are refused \
         here); the generation was tampered with: discard it (upgradectl images rm)",
        path.display()
    )]
    NotARegularFile { path: PathBuf },

    #[error(
        "image {} is {actual} bytes, the manifest says {expected}; the image is damaged: \
         discard the generation (upgradectl images rm)",
        path.display()
    )]
    ImageSizeMismatch {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },

    #[error(
        "image {} has checksum {actual}, the manifest says {expected}; the image is \
         damaged: discard the generation (upgradectl images rm)",
        path.display()
    )]
    ImageChecksumMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },

    #[error(
        "{} should not be in a generation ({reason}); remove it, or discard the \
         generation (upgradectl images rm)",
        path.display()
    )]
    UnexpectedEntry { path: PathBuf, reason: String },

    #[error(
        "{} should be a symbolic link to {expected} but is {found}; the generation is \
         damaged or was tampered with: discard it (upgradectl images rm)",
        path.display()
    )]
    LinkMismatch {
        path: PathBuf,
        expected: String,
        /// What is there instead: "missing", "a link to \"...\"" and the like.
        found: String,
    },

    // --- sealed suspend images (seal.rs) --------------------------------------------
    #[error(
        "suspend key {} does not exist; make one with `upgradectl suspend-key generate` \
         and back it up away from this machine (sealed images cannot be resumed without \
         it), or set encrypt = false in [suspend]",
        path.display()
    )]
    KeyMissing { path: PathBuf },

    #[error(
        "suspend key {} {problem}; the key must be a regular file owned by uid {owner} \
         that nobody else may read or write: {fix}",
        path.display()
    )]
    KeyInsecure {
        path: PathBuf,
        /// What is wrong: "has mode 0644", "is a symbolic link", ...
        problem: String,
        owner: u32,
        /// The command or step that fixes it.
        fix: String,
    },

    #[error(
        "suspend key {} is not an age X25519 identity file ({problem}); \
         `upgradectl suspend-key generate --key-file FILE` writes one (so does \
         age-keygen -o FILE)",
        path.display()
    )]
    KeyInvalid { path: PathBuf, problem: String },

    #[error(
        "suspend key {} exists already, and upgraded never overwrites a key: images \
         sealed with it could not be resumed without it; move it away first (and keep \
         it as long as images sealed with it are left), or pass --key-file with another \
         path",
        path.display()
    )]
    KeyExists { path: PathBuf },

    #[error(
        "sealed images {} cannot be decrypted with the suspend key {}: they were sealed \
         with another key, or their header is damaged; put back the key they were sealed \
         with (from its backup) to resume them, or discard them (upgradectl images rm \
         {id})",
        path.display(), key.display()
    )]
    SealedWrongKey {
        path: PathBuf,
        key: PathBuf,
        /// The generation id of the file name.
        id: String,
    },

    #[error(
        "sealed images {} are encrypted, and no suspend key was given to read them; set \
         key_file in [suspend] to the key they were sealed with",
        path.display()
    )]
    SealedNeedsKey { path: PathBuf },

    #[error(
        "sealed images {} are damaged, truncated or were tampered with ({problem}); \
         nothing was restored from them and the file is kept as it is: discard it \
         (upgradectl images rm) once it is of no use",
        path.display()
    )]
    SealedDamaged { path: PathBuf, problem: String },

    #[error(
        "sealed images {} hold {entry}, which upgraded refuses ({reason}); nothing was \
         unpacked: the file was not made by upgraded's suspend, or by a newer version \
         (update upgraded), or was forged with the suspend key's public half",
        path.display()
    )]
    SealedEntryRefused {
        path: PathBuf,
        /// The entry's path in the archive, escaped and quoted.
        entry: String,
        reason: String,
    },

    #[error("generation {} cannot be sealed: {reason}", path.display())]
    SealUnsupported { path: PathBuf, reason: String },

    #[error(
        "{} has {free} bytes free, but {what} needs about {needed}; {hint}",
        path.display()
    )]
    NotEnoughRoom {
        path: PathBuf,
        what: String,
        needed: u64,
        free: u64,
        /// What to do about it.
        hint: String,
    },

    // --- workloads ------------------------------------------------------------------
    /// A workload selector of the configuration or the command line was refused.
    #[error("{kind} workload selector {selector}: {reason}")]
    InvalidTarget {
        kind: WorkloadKind,
        /// The selector, escaped and quoted.
        selector: String,
        reason: String,
    },

    #[error("workload {workload}: {what} was not found; {hint}")]
    WorkloadNotFound {
        workload: WorkloadName,
        what: String,
        hint: String,
    },

    #[error("workload {workload}: {what} is {state}; {hint}")]
    WorkloadNotRunning {
        workload: WorkloadName,
        what: String,
        state: String,
        hint: String,
    },

    #[error(
        "workload {workload}: unit {unit} has {trees} separate process trees (PIDs {roots}); \
         upgraded dumps one tree per workload: make the unit's processes descend from one \
         process, or stop the others"
    )]
    WorkloadSpansTrees {
        workload: WorkloadName,
        unit: String,
        trees: usize,
        /// The roots, as "PID (name), ...".
        roots: String,
    },

    #[error(
        "workload {workload}: the process tree of unit {unit} reaches outside its cgroup \
         {cgroup} (PIDs {outside}); CRIU would dump and stop those with the unit: end them \
         first, or leave the unit out"
    )]
    WorkloadOutsideCgroup {
        workload: WorkloadName,
        unit: String,
        cgroup: String,
        /// The processes outside, as "PID (name), ...".
        outside: String,
    },

    #[error("workload {workload}: {reason}; {hint}")]
    WorkloadUnsupported {
        workload: WorkloadName,
        reason: String,
        hint: String,
    },

    #[error(
        "workload {workload}: {what} has attached clients ({clients}), whose terminal \
         connections CRIU cannot dump; detach them first: {hint}"
    )]
    WorkloadAttached {
        workload: WorkloadName,
        what: String,
        clients: String,
        hint: String,
    },

    /// Looking a workload up failed (a program could not run, or said something
    /// unexpected); the cause is the source.
    #[error("workload {workload}: looking up {what}")]
    WorkloadLookup {
        workload: WorkloadName,
        what: String,
        #[source]
        source: Box<Error>,
    },

    #[error(
        "`{command}` printed {output}, which upgraded does not understand ({problem}); \
         this version of the program may not be supported"
    )]
    UnexpectedOutput {
        command: String,
        /// The output, escaped and quoted.
        output: String,
        problem: String,
    },

    // --- cgroups and freezer --------------------------------------------------------
    #[error(
        "no cgroup2 file system is mounted (none in /proc/self/mountinfo); upgraded needs \
         the unified cgroup hierarchy: boot with systemd.unified_cgroup_hierarchy=1, or \
         mount -t cgroup2 none /sys/fs/cgroup"
    )]
    Cgroup2NotMounted,

    #[error("cgroup {cgroup:?} {reason}")]
    CgroupPath { cgroup: String, reason: String },

    #[error(
        "cgroup {cgroup} did not freeze within {waited:?}{}; {}",
        if stuck.is_empty() { String::new() } else {
            format!(" (processes in uninterruptible sleep, which the freezer waits for: {})", stuck.join(", "))
        },
        if *thawed {
            "it was thawed again and keeps running: retry when it is idle, or raise the freeze timeout"
        } else {
            "thawing it failed too: its processes stay stopped until 0 is written to its cgroup.freeze"
        }
    )]
    FreezeTimeout {
        cgroup: String,
        waited: Duration,
        thawed: bool,
        /// The processes in state D, as "PID (name)".
        stuck: Vec<String>,
    },
}

impl Error {
    /// Whether this error comes from a file system that ran out of space or of the
    /// writer's quota (ENOSPC, EDQUOT): an I/O error, CRIU's or podman's report of one
    /// (its errno, message or log tail), or a dump that failed of it.
    pub fn is_out_of_space(&self) -> bool {
        self.space_errno().is_some()
    }

    /// ENOSPC or EDQUOT, if that is what this error comes from (see
    /// [`is_out_of_space`](Error::is_out_of_space)).
    pub(crate) fn space_errno(&self) -> Option<i32> {
        use nix::libc::{EDQUOT, ENOSPC};
        // What strerror(3) says, as CRIU's messages and logs quote it; podman (Go)
        // writes it in lower case.
        let in_text = |text: &str| {
            let text = text.to_ascii_lowercase();
            [
                (ENOSPC, "no space left on device"),
                (EDQUOT, "disk quota exceeded"),
            ]
            .into_iter()
            .find(|(_, s)| text.contains(s))
            .map(|(errno, _)| errno)
        };
        let space = |errno: i32| [ENOSPC, EDQUOT].contains(&errno).then_some(errno);
        match self {
            Error::Io { source, .. } => source.raw_os_error().and_then(space),
            Error::CriuFailed {
                errno,
                message,
                log_tail,
                ..
            } => space(*errno)
                .or_else(|| in_text(message))
                .or_else(|| in_text(log_tail)),
            Error::CommandFailed { stderr_tail, .. } => in_text(stderr_tail),
            Error::AreaFull { quota, .. } => Some(if *quota { EDQUOT } else { ENOSPC }),
            Error::DumpFailed { source, .. } => source.space_errno(),
            _ => None,
        }
    }

    /// The `errno` of an I/O error, where this is one.
    pub(crate) fn os_errno(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds the path and the action to an `io::Error`, the only way I/O errors leave the
/// crate.
pub(crate) trait IoContext<T> {
    fn at(self, action: &'static str, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, action: &'static str, path: impl AsRef<Path>) -> Result<T> {
        // The path is copied only on error: this runs for every file hashed.
        self.map_err(|source| Error::Io {
            action,
            path: path.as_ref().to_path_buf(),
            source,
        })
    }
}
