//! The generation manifest: what a generation holds, on which system it was made, and
//! how far it got. It is a versioned on-disk format:
//!
//! ```json
//! {
//!   "magic": "upgraded-manifest",
//!   "format": { "major": 1, "minor": 0 },
//!   "checksum": "<BLAKE3 of the body's bytes exactly as stored, 64 hex digits>",
//!   "body": { "generation": "...", "state": "committed", ... }
//! }
//! ```
//!
//! A reader refuses a file over [`MAX_MANIFEST_SIZE`] unread, then a wrong magic,
//! another major version, a newer minor version than it knows and a checksum mismatch,
//! in that order: the version is checked before the checksum because another format
//! may checksum differently. The body is then parsed strictly (unknown fields are refused: within
//! one major, a newer minor is refused anyway) and validated, so that no hostile name
//! can reach a path.
//!
//! The checksum covers the body's bytes as they are in the file rather than a
//! re-serialisation, so verifying does not depend on how a serde_json version orders
//! or escapes things.
//!
//! A workload's images are the files of its directory. From format 1.1 a workload
//! that was pre-dumped also has one directory per pre-dump, `pre-1` to `pre-<N>`, and
//! CRIU's `parent` links between them, which the manifest lists too:
//!
//! ```text
//! <workload>/<file>...               the final dump; `images` lists it as "<file>"
//! <workload>/parent -> pre-N         the final dump's parent: the last pre-dump
//! <workload>/pre-<i>/<file>...       pre-dump i; listed as "pre-<i>/<file>"
//! <workload>/pre-<i>/parent -> ../pre-<i-1>   for i >= 2
//! ```
//!
//! Readers of 1.1 read 1.0 manifests as workloads without pre-dumps.
//!
//! All checksums of format 1 are BLAKE3: cryptographic, so a tampered image is caught and
//! not only a torn write, and fast enough (several GB/s, streamed) that gigabytes of
//! memory images are verified in seconds before a restore.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{Error, IoContext, Result};

mod names;
mod wire;

pub use names::shown;
pub use names::{
    pre_dump_dir, pre_dump_index, Checksum, FileName, GenerationId, ImageName, LinkName,
    LinkTarget, ValidationError, WorkloadName, MAX_PRE_DUMPS, PARENT_LINK,
};

/// The first field of every manifest.
pub const MAGIC: &str = "upgraded-manifest";

/// The format this code writes, and the newest it reads. 1.1 added pre-dump
/// directories and `parent` links (`links`, `pre-<i>/` image names).
pub const FORMAT_VERSION: FormatVersion = FormatVersion { major: 1, minor: 1 };

/// The largest manifest read or written. A real one is a few kilobytes; the cap keeps
/// a damaged or hostile file from exhausting memory.
pub const MAX_MANIFEST_SIZE: u64 = 16 * 1024 * 1024;

/// The manifest's file name in a generation directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// PID_MAX_LIMIT on 64-bit Linux: no PID is larger.
const PID_MAX: u32 = 4 * 1024 * 1024;

/// 9999-12-31T23:59:59Z, the last second RFC 3339 can write with a 4-digit year.
const MAX_UNIX_TIME: u64 = 253_402_300_799;

/// A format version: a reader refuses another major and a newer minor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormatVersion {
    pub major: u32,
    pub minor: u32,
}

impl fmt::Display for FormatVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

macro_rules! state_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant,)*
        }

        impl $name {
            /// The name used in the manifest.
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

        impl std::str::FromStr for $name {
            type Err = ();
            /// Parses the name used in the manifest.
            fn from_str(s: &str) -> std::result::Result<Self, ()> {
                match s {
                    $($text => Ok($name::$variant),)*
                    _ => Err(()),
                }
            }
        }
    };
}

state_enum!(
    /// Where a generation is in its life.
    GenerationState {
        /// Being written; never on disk under a committed name.
        Pending = "pending",
        /// Complete and verified when written: may be restored.
        Committed = "committed",
        /// Its workloads were restored.
        Restored = "restored",
        /// The restore failed.
        Failed = "failed",
        /// The upgrade was undone and the workloads went back to the old kernel.
        RolledBack = "rolled-back",
    }
);

state_enum!(
    /// Where one workload of a generation is.
    WorkloadState {
        Pending = "pending",
        Committed = "committed",
        Restored = "restored",
        Failed = "failed",
    }
);

state_enum!(
    /// What a workload is, which decides how it is found, frozen and restored.
    WorkloadKind {
        Process = "process",
        Service = "service",
        Scope = "scope",
        Session = "session",
        Tmux = "tmux",
        Screen = "screen",
        Podman = "podman",
        Nspawn = "nspawn",
    }
);

/// A generation manifest (the body of the on-disk format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub generation: GenerationId,
    pub state: GenerationState,
    /// Creation time in seconds since the epoch; written also as RFC 3339 (UTC).
    pub created_unix: u64,
    /// The system the dump was made on.
    pub source: SourceSystem,
    /// The kernel features the dumping kernel offered that the images may rely on
    /// (names chosen by the caller; upgraded's table is docs/compat.md). The landing
    /// side compares them with the kernel it restores on.
    pub kernel_features: Vec<String>,
    pub workloads: Vec<Workload>,
}

/// The system a generation was dumped on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceSystem {
    /// `uname -r`.
    pub kernel_release: String,
    /// `/proc/version`, without the trailing newline.
    pub proc_version: String,
    /// Checksum of the kernel's config, when one was readable.
    pub kernel_config_checksum: Option<Checksum>,
    pub criu_version: String,
    pub glibc_version: String,
    /// Free-form CPU description (e.g. `vendor_id`, `model name`, `flags`).
    pub cpu: BTreeMap<String, String>,
}

/// One workload of a generation and its images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub name: WorkloadName,
    pub kind: WorkloadKind,
    pub state: WorkloadState,
    /// The PID CRIU dumped the tree from.
    pub root_pid: u32,
    /// Every PID of the tree, the root included.
    pub pids: Vec<u32>,
    /// The systemd unit, for services, scopes and containers.
    pub unit: Option<String>,
    /// The cgroup path (below the cgroup2 mount), starting with '/'.
    pub cgroup: Option<String>,
    pub command_line: Vec<String>,
    /// The dump options used (CRIU options and the like), by name.
    pub options: BTreeMap<String, String>,
    /// The image files in the workload's directory and its pre-dump directories.
    pub images: Vec<ImageFile>,
    /// CRIU's `parent` links between the dumps (empty without pre-dumps).
    pub links: Vec<ImageLink>,
}

/// One image file of a workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile {
    pub name: ImageName,
    pub size: u64,
    pub checksum: Checksum,
}

/// A symbolic link CRIU made from a dump to the images of the pre-dump before it;
/// restore follows the chain to read the pages that were not dumped again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLink {
    pub name: LinkName,
    pub target: LinkTarget,
}

/// An entry of a workload's layout that breaks a rule (see [`layout_problem`]),
/// by its index in `images` or `links`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LayoutEntry {
    Image(usize),
    LinkName(usize),
    LinkTarget(usize),
}

/// The envelope as written.
#[derive(Serialize)]
struct EnvelopeOut<'a> {
    magic: &'a str,
    format: FormatVersion,
    checksum: &'a str,
    body: &'a RawValue,
}

/// The envelope as read, once magic and version are known to be ours.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeIn<'a> {
    #[allow(dead_code)] // checked by the probe
    magic: String,
    #[allow(dead_code)] // checked by the probe
    format: FormatVersion,
    checksum: String,
    #[serde(borrow)]
    body: &'a RawValue,
}

/// The first look at a file: only magic and version, whatever else it holds.
#[derive(Deserialize)]
struct Probe {
    magic: Option<serde_json::Value>,
    format: Option<serde_json::Value>,
}

impl Manifest {
    /// A new pending manifest without workloads.
    pub fn new(generation: GenerationId, created_unix: u64, source: SourceSystem) -> Manifest {
        Manifest {
            generation,
            state: GenerationState::Pending,
            created_unix,
            source,
            kernel_features: Vec::new(),
            workloads: Vec::new(),
        }
    }

    /// The creation time as RFC 3339 in UTC, as written in the manifest.
    pub fn created_rfc3339(&self) -> String {
        rfc3339_utc(self.created_unix)
    }

    /// The workload called `name`.
    pub fn workload(&self, name: &WorkloadName) -> Option<&Workload> {
        self.workloads.iter().find(|w| &w.name == name)
    }

    /// Reads and validates the manifest at `path`.
    pub fn load(path: &Path) -> Result<Manifest> {
        let meta = fs::metadata(path).at("reading metadata of", path)?;
        if !meta.is_file() {
            return Err(Error::NotARegularFile {
                path: path.to_path_buf(),
            });
        }
        let too_large = |size: u64| Error::ManifestTooLarge {
            path: path.to_path_buf(),
            size,
            limit: MAX_MANIFEST_SIZE,
        };
        if meta.len() > MAX_MANIFEST_SIZE {
            return Err(too_large(meta.len()));
        }
        let file = fs::File::open(path).at("opening", path)?;
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        // The file may have grown since the stat: read one byte past the cap to know.
        file.take(MAX_MANIFEST_SIZE + 1)
            .read_to_end(&mut bytes)
            .at("reading", path)?;
        if bytes.len() as u64 > MAX_MANIFEST_SIZE {
            return Err(too_large(bytes.len() as u64));
        }
        Manifest::from_bytes(&bytes, path)
    }

    /// Parses and validates a manifest; `path` is where it came from, for messages.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Manifest> {
        let path_buf = || path.to_path_buf();
        if bytes.len() as u64 > MAX_MANIFEST_SIZE {
            return Err(Error::ManifestTooLarge {
                path: path_buf(),
                size: bytes.len() as u64,
                limit: MAX_MANIFEST_SIZE,
            });
        }
        let syntax = |part, source| Error::ManifestSyntax {
            path: path_buf(),
            part,
            source,
        };

        // serde also reads a struct from an array; only the object form is the format.
        let not_an_object = || serde::de::Error::custom("expected a JSON object");
        if bytes.trim_ascii_start().first() != Some(&b'{') {
            return Err(syntax("header", not_an_object()));
        }
        let probe: Probe = serde_json::from_slice(bytes).map_err(|e| syntax("header", e))?;
        match &probe.magic {
            Some(serde_json::Value::String(m)) if m == MAGIC => {}
            other => {
                return Err(Error::ManifestBadMagic {
                    path: path_buf(),
                    found: match other {
                        None => "none".into(),
                        Some(serde_json::Value::String(m)) => shown(m),
                        Some(v) => shown(&v.to_string()),
                    },
                    expected: MAGIC,
                })
            }
        }
        let format: FormatVersion = match probe.format {
            Some(v) => serde_json::from_value(v).map_err(|e| syntax("header", e))?,
            None => return Err(syntax("header", serde::de::Error::missing_field("format"))),
        };
        if format.major != FORMAT_VERSION.major {
            return Err(Error::ManifestUnsupportedMajor {
                path: path_buf(),
                found: format,
                supported: FORMAT_VERSION,
            });
        }
        if format.minor > FORMAT_VERSION.minor {
            return Err(Error::ManifestNewerMinor {
                path: path_buf(),
                found: format,
                supported: FORMAT_VERSION,
            });
        }

        let envelope: EnvelopeIn<'_> =
            serde_json::from_slice(bytes).map_err(|e| syntax("header", e))?;
        let body = envelope.body.get();
        let actual = Checksum::of_bytes(body.as_bytes());
        if envelope.checksum != actual.as_str() {
            return Err(Error::ManifestChecksum {
                path: path_buf(),
                expected: shown(&envelope.checksum),
                actual: actual.to_string(),
            });
        }

        if !body.starts_with('{') {
            return Err(syntax("body", not_an_object()));
        }
        let body: wire::Body = serde_json::from_str(body).map_err(|e| syntax("body", e))?;
        body.into_manifest()
            .map_err(|problem| Error::ManifestInvalid {
                path: path_buf(),
                problem,
            })
    }

    /// Validates and encodes the manifest in the current format.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ValidationError> {
        self.validate()?;
        // Serialising strings, integers and string maps cannot fail.
        let body = serde_json::to_string_pretty(&wire::Body::from_manifest(self))
            .expect("serialising a manifest body cannot fail");
        // Indent the body to its place in the envelope, for people reading the file.
        // serde_json escapes newlines inside strings, so every '\n' is between tokens.
        let body = body.replace('\n', "\n  ");
        let checksum = Checksum::of_bytes(body.as_bytes());
        let body = RawValue::from_string(body).expect("serde_json wrote valid JSON");
        let mut bytes = serde_json::to_vec_pretty(&EnvelopeOut {
            magic: MAGIC,
            format: FORMAT_VERSION,
            checksum: checksum.as_str(),
            body: &body,
        })
        .expect("serialising a manifest envelope cannot fail");
        bytes.push(b'\n');
        if bytes.len() as u64 > MAX_MANIFEST_SIZE {
            return Err(ValidationError {
                field: "manifest".into(),
                value: format!("of {} bytes", bytes.len()),
                reason: format!("is larger than the {MAX_MANIFEST_SIZE}-byte limit"),
            });
        }
        Ok(bytes)
    }

    /// Writes the manifest to `path` atomically: a temporary file (mode 0600) in the
    /// same directory, fsync, rename over `path`, fsync the directory. A crash leaves
    /// either the old manifest or the new one, never a torn one.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = self.to_bytes().map_err(|problem| Error::ManifestInvalid {
            path: path.to_path_buf(),
            problem,
        })?;
        crate::fsutil::write_atomic(path, &temp_path_for(path), &bytes)
    }

    /// Checks every rule a manifest must satisfy beyond what its types guarantee:
    /// free-form strings without control characters, names and paths that are safe to
    /// use, consistent PIDs, no duplicate workloads or images.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.created_unix > MAX_UNIX_TIME {
            return Err(ValidationError {
                field: "created.unix".into(),
                value: self.created_unix.to_string(),
                reason: "is after the year 9999".into(),
            });
        }
        let s = &self.source;
        check_version_string("source.kernel_release", &s.kernel_release)?;
        check_text("source.proc_version", &s.proc_version, 1024)?;
        check_version_string("source.criu_version", &s.criu_version)?;
        check_version_string("source.glibc_version", &s.glibc_version)?;
        for (key, value) in &s.cpu {
            check_token("source.cpu key", key)?;
            check_text(&format!("source.cpu.{key}"), value, 16 * 1024)?;
        }
        let mut features = BTreeSet::new();
        for (i, feature) in self.kernel_features.iter().enumerate() {
            let field = format!("kernel_features[{i}]");
            check_token(&field, feature)?;
            if !features.insert(feature) {
                return Err(ValidationError::new(field, feature, "is listed twice"));
            }
        }
        let mut names = BTreeSet::new();
        for (i, w) in self.workloads.iter().enumerate() {
            let at = format!("workloads[{i}]");
            if !names.insert(&w.name) {
                return Err(ValidationError::new(
                    format!("{at}.name"),
                    w.name.as_str(),
                    "names two workloads",
                ));
            }
            w.validate(&at)?;
        }
        Ok(())
    }
}

impl Workload {
    /// A new pending workload without PIDs other than the root, and without images.
    pub fn new(name: WorkloadName, kind: WorkloadKind, root_pid: u32) -> Workload {
        Workload {
            name,
            kind,
            state: WorkloadState::Pending,
            root_pid,
            pids: vec![root_pid],
            unit: None,
            cgroup: None,
            command_line: Vec::new(),
            options: BTreeMap::new(),
            images: Vec::new(),
            links: Vec::new(),
        }
    }

    /// The pre-dump iterations the workload has directories of, in order.
    pub fn pre_dumps(&self) -> BTreeSet<u32> {
        pre_dumps_of(&self.images, &self.links)
    }

    fn validate(&self, at: &str) -> Result<(), ValidationError> {
        check_pid(&format!("{at}.root_pid"), self.root_pid)?;
        let mut pids = BTreeSet::new();
        for (i, &pid) in self.pids.iter().enumerate() {
            let field = format!("{at}.pids[{i}]");
            check_pid(&field, pid)?;
            if !pids.insert(pid) {
                return Err(ValidationError {
                    field,
                    value: pid.to_string(),
                    reason: "is listed twice".into(),
                });
            }
        }
        if !pids.contains(&self.root_pid) {
            return Err(ValidationError {
                field: format!("{at}.root_pid"),
                value: self.root_pid.to_string(),
                reason: "is not among the workload's pids".into(),
            });
        }
        if let Some(unit) = &self.unit {
            check_unit_name(&format!("{at}.unit"), unit)?;
        }
        if let Some(cgroup) = &self.cgroup {
            check_cgroup(&format!("{at}.cgroup"), cgroup)?;
        }
        for (i, arg) in self.command_line.iter().enumerate() {
            let field = format!("{at}.command_line[{i}]");
            // An argument may hold anything but NUL, up to MAX_ARG_STRLEN.
            if arg.contains('\0') || arg.len() > 128 * 1024 {
                return Err(ValidationError::new(
                    field,
                    arg,
                    "contains a NUL byte or is longer than 128 KiB",
                ));
            }
        }
        for (key, value) in &self.options {
            check_token(&format!("{at}.options key"), key)?;
            check_text(&format!("{at}.options.{key}"), value, 4096)?;
        }
        let mut files = BTreeSet::new();
        for (i, image) in self.images.iter().enumerate() {
            if !files.insert(&image.name) {
                return Err(ValidationError::new(
                    format!("{at}.images[{i}].name"),
                    image.name.as_str(),
                    "names two images",
                ));
            }
        }
        if let Some((entry, reason)) = layout_problem(&self.images, &self.links) {
            let (field, value) = match entry {
                LayoutEntry::Image(i) => (
                    format!("{at}.images[{i}].name"),
                    self.images[i].name.as_str(),
                ),
                LayoutEntry::LinkName(i) => {
                    (format!("{at}.links[{i}].name"), self.links[i].name.as_str())
                }
                LayoutEntry::LinkTarget(i) => (
                    format!("{at}.links[{i}].target"),
                    self.links[i].target.as_str(),
                ),
            };
            return Err(ValidationError::new(field, value, reason));
        }
        Ok(())
    }
}

/// The first entry of a workload's images and links that breaks the rules of the
/// pre-dump layout, and why. The rules keep the layout exactly what CRIU makes of a
/// chain of pre-dumps, so that a restore finds every page it needs and nothing else:
/// - names are unique, and no file has the name of a pre-dump directory;
/// - the top `parent` link points to `pre-<N>`, the newest pre-dump directory;
/// - `pre-<i>/parent` points to `../pre-<i-1>`, which exists;
/// - every pre-dump directory is in the chain: `pre-<N>` has the top link and each
///   `pre-<i>` with i >= 2 its own (so the directories are `pre-1` to `pre-<N>`).
pub(crate) fn layout_problem(
    images: &[ImageFile],
    links: &[ImageLink],
) -> Option<(LayoutEntry, String)> {
    let dirs = pre_dumps_of(images, links);
    let newest = dirs.last().copied();
    let mut link_names = BTreeSet::new();
    for (i, link) in links.iter().enumerate() {
        if !link_names.insert(link.name.as_str()) {
            return Some((LayoutEntry::LinkName(i), "names two links".into()));
        }
    }
    // No image is called "parent" (see ImageName): only a directory can clash.
    for (i, image) in images.iter().enumerate() {
        if image.name.pre_dump().is_none()
            && pre_dump_index(image.name.as_str()).is_some_and(|p| dirs.contains(&p))
        {
            return Some((
                LayoutEntry::Image(i),
                "is also the name of a pre-dump directory".into(),
            ));
        }
    }
    for (i, link) in links.iter().enumerate() {
        let j = link.target.pre_dump();
        let problem = match link.name.pre_dump() {
            None if link.target.is_sibling() => Some(
                "is the final dump's parent link, which names a directory inside the \
                 workload directory: pre-<N>, without \"../\""
                    .into(),
            ),
            Some(k) if !link.target.is_sibling() => Some(format!(
                "is the parent link of pre-{k}, which names a directory next to \
                 pre-{k}: ../pre-<j>"
            )),
            _ if !dirs.contains(&j) => Some(format!(
                "points to pre-{j}, which is not a pre-dump directory of this workload"
            )),
            None if Some(j) != newest => Some(format!(
                "must point to the newest pre-dump directory, pre-{}",
                newest.unwrap_or(j)
            )),
            Some(1) => Some("is in pre-1, the first pre-dump, which has no parent".into()),
            Some(k) if j + 1 != k => Some(format!(
                "must point to the pre-dump before pre-{k}, ../pre-{}",
                k - 1
            )),
            _ => None,
        };
        if let Some(problem) = problem {
            return Some((LayoutEntry::LinkTarget(i), problem));
        }
    }
    // A directory without its link is unreachable for a restore, and the dump
    // after it refers to its pages.
    let first_in = |dir: u32| {
        images
            .iter()
            .position(|i| i.name.pre_dump() == Some(dir))
            .map(LayoutEntry::Image)
            .or_else(|| {
                let link = links.iter().position(|l| l.name.pre_dump() == Some(dir));
                link.map(LayoutEntry::LinkName)
            })
            .expect("every listed pre-dump directory has an entry")
    };
    if let Some(n) = newest {
        if !link_names.contains(PARENT_LINK) {
            return Some((
                first_in(n),
                format!(
                    "is in pre-{n}, the newest pre-dump, but no \"parent\" link \
                     points to it from the final dump"
                ),
            ));
        }
    }
    for &k in dirs.iter().filter(|&&k| k >= 2) {
        if !link_names.contains(format!("pre-{k}/{PARENT_LINK}").as_str()) {
            return Some((
                first_in(k),
                format!(
                    "is in pre-{k}, which has no \"parent\" link to ../pre-{}",
                    k - 1
                ),
            ));
        }
    }
    None
}

/// The pre-dump iterations that images and links are in, in order.
fn pre_dumps_of(images: &[ImageFile], links: &[ImageLink]) -> BTreeSet<u32> {
    images
        .iter()
        .filter_map(|i| i.name.pre_dump())
        .chain(links.iter().filter_map(|l| l.name.pre_dump()))
        .collect()
}

/// Where `save` writes before renaming: hidden, in the same directory (rename is only
/// atomic within a file system).
pub(crate) fn temp_path_for(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

fn check_pid(field: &str, pid: u32) -> Result<(), ValidationError> {
    if pid == 0 || pid > PID_MAX {
        return Err(ValidationError {
            field: field.into(),
            value: pid.to_string(),
            reason: format!("is not a PID (1 to {PID_MAX})"),
        });
    }
    Ok(())
}

/// Free-form text for people: no control characters (no NUL, no newline, no terminal
/// escapes), bounded.
fn check_text(field: &str, s: &str, max_len: usize) -> Result<(), ValidationError> {
    if s.len() > max_len {
        return Err(ValidationError::new(
            field,
            s,
            format!("is longer than {max_len} bytes"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(ValidationError::new(
            field,
            s,
            "contains a control character",
        ));
    }
    Ok(())
}

/// A key or feature name: 1 to 64 of `[A-Za-z0-9._-]`.
fn check_token(field: &str, s: &str) -> Result<(), ValidationError> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        return Err(ValidationError::new(
            field,
            s,
            "must be 1 to 64 letters, digits, '.', '_' or '-'",
        ));
    }
    Ok(())
}

/// A kernel release or a program version. Kernel releases end up in paths
/// (`/boot/vmlinuz-<release>`, `/lib/modules/<release>`), so they are held to the
/// characters real ones use.
fn check_version_string(field: &str, s: &str) -> Result<(), ValidationError> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '~'));
    if !ok {
        return Err(ValidationError::new(
            field,
            s,
            "must be 1 to 64 letters, digits, '.', '_', '-', '+' or '~', not starting with '.'",
        ));
    }
    Ok(())
}

/// A systemd unit name (unit names are at most 255 bytes, of these characters).
fn check_unit_name(field: &str, s: &str) -> Result<(), ValidationError> {
    let ok = !s.is_empty()
        && s.len() <= 255
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '\\' | '@' | '-'));
    if !ok {
        return Err(ValidationError::new(
            field,
            s,
            "is not a systemd unit name (1 to 255 of letters, digits and : _ . \\ @ -)",
        ));
    }
    Ok(())
}

/// A cgroup path: it is joined to the cgroup mount to move restored processes, so it is
/// absolute, normal (no "." or ".." components, no empty ones) and printable.
fn check_cgroup(field: &str, s: &str) -> Result<(), ValidationError> {
    let refuse = |reason| Err(ValidationError::new(field, s, reason));
    if s.len() > 4096 {
        return refuse("is longer than 4096 bytes");
    }
    let Some(rest) = s.strip_prefix('/') else {
        return refuse("must start with '/'");
    };
    if rest.is_empty() {
        return Ok(());
    }
    for component in rest.split('/') {
        if component.is_empty() || component == "." || component == ".." {
            return refuse("must not have empty, '.' or '..' components");
        }
        if component.chars().any(char::is_control) {
            return refuse("contains a control character");
        }
    }
    Ok(())
}

/// The body of the fuzz target `manifest` (fuzz/fuzz_targets/manifest.rs) and of the
/// corpus replay test (tests/fuzz_corpus.rs), kept here so that the two cannot drift.
/// Not part of the API.
///
/// Parses `data` as a manifest file. Random bytes almost never carry the right checksum,
/// so when `data` is an envelope with a body it is parsed a second time with the
/// checksum recomputed over the body as found: that lets a fuzzer reach the body's
/// parser and validation. Whatever parses must encode again and decode to the same
/// manifest. Panics only on a bug.
#[doc(hidden)]
pub fn fuzz_entry(data: &[u8]) {
    fuzz_check(data);
    if let Some(fixed) = fuzz_fix_checksum(data) {
        fuzz_check(&fixed);
    }
}

fn fuzz_check(data: &[u8]) {
    let path = Path::new("/fuzz/manifest.json");
    let manifest = match Manifest::from_bytes(data, path) {
        Ok(manifest) => manifest,
        Err(err) => {
            // The message quotes hostile values: formatting it must not panic.
            let _ = err.to_string();
            return;
        }
    };
    let bytes = match manifest.to_bytes() {
        Ok(bytes) => bytes,
        // Pretty-printing makes a large manifest larger: near the cap it may not fit.
        Err(err) if err.field == "manifest" => return,
        Err(err) => panic!("a manifest that loaded does not encode: {err}"),
    };
    let again = Manifest::from_bytes(&bytes, path)
        .unwrap_or_else(|err| panic!("an encoded manifest does not load: {err}"));
    assert_eq!(
        again, manifest,
        "a manifest changed when encoded and loaded"
    );
}

/// `data` with the checksum field replaced by the checksum of its body, when `data`
/// is a JSON object with a body.
fn fuzz_fix_checksum(data: &[u8]) -> Option<Vec<u8>> {
    #[derive(Deserialize, Serialize)]
    struct Envelope<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        magic: Option<serde_json::Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        format: Option<serde_json::Value>,
        #[serde(default, skip_deserializing)]
        checksum: String,
        #[serde(borrow)]
        body: &'a RawValue,
    }
    let mut envelope: Envelope<'_> = serde_json::from_slice(data).ok()?;
    envelope.checksum = Checksum::of_bytes(envelope.body.get().as_bytes()).to_string();
    serde_json::to_vec(&envelope).ok()
}

/// `unix` as RFC 3339 in UTC, e.g. `2025-11-24T10:00:00Z`. Written by hand: the
/// conversion is a few lines (Howard Hinnant's `civil_from_days`) and a date crate would
/// be the only use of one in this crate.
/// `rfc3339_utc` without '-' and ':' (`20251124T100000Z`), for names.
pub(crate) fn rfc3339_compact(unix: u64) -> String {
    rfc3339_utc(unix).replace(['-', ':'], "")
}

pub(crate) fn rfc3339_utc(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Days since 0000-03-01, so that the leap day is the last day of a year.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = era * 400 + yoe + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_763_978_400), "2025-11-24T10:00:00Z");
        assert_eq!(rfc3339_utc(MAX_UNIX_TIME), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn temp_path() {
        assert_eq!(
            temp_path_for(Path::new("/a/manifest.json")),
            Path::new("/a/.manifest.json.tmp")
        );
    }

    #[test]
    fn cgroups() {
        for ok in [
            "/",
            "/system.slice/foo.service",
            "/user.slice/user-1000.slice",
        ] {
            check_cgroup("c", ok).unwrap();
        }
        for bad in ["", "rel", "/a/../b", "/a//b", "/a/", "/./a", "/a\nb"] {
            assert!(check_cgroup("c", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn format_version_display() {
        assert_eq!(FORMAT_VERSION.to_string(), "1.1");
    }
}
