//! Whether a generation's images can be restored on the system that booted, and the
//! one change to the images that makes a restore possible where it otherwise is not.
//!
//! The boot side lands on whatever kernel came up (a cold boot included), possibly with
//! another CRIU or on another CPU. [`assess`] compares the manifest's source system with
//! the [`LandingSystem`] and gives each workload a [`Verdict`], so that a restore that
//! cannot work is refused with a reason before CRIU fails half-way with a worse one.
//! The table is in docs/compat.md; keep the two in step.
//!
//! [`drop_rseq`] is the only transformation: it works on a copy of the images, never on
//! the committed ones, which must stay intact for a rollback.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use dumper::manifest::{GenerationId, Manifest};

use crate::kernel::{read_kernel_config, ConfigValue, KernelConfig, Version, VersionRange};

/// CRIU's image tool (Debian's criu package ships /usr/bin/crit).
pub const CRIT: &str = "crit";

/// The first kernel with rseq(2): a source kernel from before it cannot have left
/// rseq registrations in the images.
const RSEQ_SINCE: &str = "4.18";

/// CPU flags whose absence breaks restored user-space state: the FPU/xsave layout CRIU
/// restores, and instruction sets that programs (glibc's ifuncs, JITs, crypto
/// libraries) select once at start-up and keep using.
pub const USER_STATE_FLAGS: &[&str] = &[
    "fpu", "xsave", "xsaveopt", "xsavec", "xsaves", "avx", "avx2", "avx512f", "sse", "sse2",
    "sse3", "ssse3", "sse4_1", "sse4_2", "fma", "aes", "pku",
];

/// A kernel feature the images may rely on, recorded in `manifest.kernel_features`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feature {
    pub name: &'static str,
    /// CRIU's `criu check --feature` spelling, read as the same feature.
    pub aliases: &'static [&'static str],
    /// The option that must be `y` on the landing kernel.
    pub option: &'static str,
}

impl Feature {
    const fn new(
        name: &'static str,
        aliases: &'static [&'static str],
        option: &'static str,
    ) -> Feature {
        Feature {
            name,
            aliases,
            option,
        }
    }
}

/// Every feature recorded at dump time and checked at restore time.
pub const FEATURES: &[Feature] = &[
    Feature::new("memfd", &[], "CONFIG_MEMFD_CREATE"),
    Feature::new("rseq", &[], "CONFIG_RSEQ"),
    Feature::new("time-namespace", &["timens"], "CONFIG_TIME_NS"),
    Feature::new("userfaultfd", &["uffd"], "CONFIG_USERFAULTFD"),
];

fn feature(name: &str) -> Option<&'static Feature> {
    FEATURES
        .iter()
        .find(|f| f.name == name || f.aliases.contains(&name))
}

fn builtin(cfg: &KernelConfig, option: &str) -> bool {
    cfg.get(option) == Some(&ConfigValue::Builtin)
}

fn shown_value(cfg: &KernelConfig, option: &str) -> String {
    cfg.get(option)
        .map_or("absent".to_owned(), ToString::to_string)
}

/// [`dump_features`] of the running kernel, for the manifest of a dump made now.
pub fn running_features() -> Vec<String> {
    let release = super::running_release();
    let config = read_kernel_config(Path::new(&format!("/boot/config-{release}"))).ok();
    dump_features(config.as_ref())
}

/// The features of [`FEATURES`] built into the dumping kernel, sorted and without
/// duplicates, for `manifest.kernel_features`. Nothing without a configuration.
pub fn dump_features(kernel_config: Option<&KernelConfig>) -> Vec<String> {
    let Some(cfg) = kernel_config else {
        return Vec::new();
    };
    let names: BTreeSet<&str> = FEATURES
        .iter()
        .filter(|f| builtin(cfg, f.option))
        .map(|f| f.name)
        .collect();
    names.into_iter().map(str::to_owned).collect()
}

/// The system the boot side runs on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LandingSystem {
    pub kernel_release: String,
    /// `/boot/config-<release>`; `None` when it could not be read.
    pub kernel_config: Option<KernelConfig>,
    pub criu_version: String,
    /// The first CPU's flags from /proc/cpuinfo; empty when unknown.
    pub cpu_flags: BTreeSet<String>,
    /// The first CPU's `vendor_id`, when known.
    pub cpu_vendor: Option<String>,
}

impl LandingSystem {
    /// Describes the running system. Whatever cannot be read is left unknown, which
    /// [`assess`] turns into a note rather than a refusal.
    pub fn probe(criu_version: &str) -> LandingSystem {
        let kernel_release = super::running_release();
        let config = PathBuf::from(format!("/boot/config-{kernel_release}"));
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = first_cpu(&cpuinfo);
        LandingSystem {
            kernel_config: read_kernel_config(&config).ok(),
            kernel_release,
            criu_version: criu_version.to_owned(),
            cpu_flags: cpu
                .get("flags")
                .map(|f| f.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
            cpu_vendor: cpu.get("vendor_id").cloned(),
        }
    }
}

/// The fields of the first processor in /proc/cpuinfo text.
fn first_cpu(cpuinfo: &str) -> BTreeMap<String, String> {
    cpuinfo
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// A change made to a copy of the images before restoring them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    /// Forget the threads' rseq registrations ([`drop_rseq`]).
    DropRseq,
}

impl fmt::Display for Transform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transform::DropRseq => "drop the threads' rseq registrations",
        })
    }
}

/// What to do with one workload's images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Restore,
    /// Restore a copy changed by these transforms, in order.
    Transform(Vec<Transform>),
    /// Do not restore; why, and what the admin can do.
    Refuse(String),
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Restore => f.write_str("restore"),
            Verdict::Transform(t) => {
                let t: Vec<String> = t.iter().map(ToString::to_string).collect();
                write!(f, "restore after: {}", t.join(", "))
            }
            Verdict::Refuse(why) => write!(f, "refuse: {why}"),
        }
    }
}

/// A verdict per workload (in manifest order), and what the admin should know.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assessment {
    pub workloads: Vec<(String, Verdict)>,
    pub notes: Vec<String>,
}

/// `major.minor` of a CRIU version (`3.17.1`, `4.0`, `3.17.1-2+deb12u2`); sublevels are
/// bug-fix releases that do not change what images CRIU reads.
fn major_minor(version: &str) -> Option<(u32, u32)> {
    let (major, rest) = version.trim().split_once('.')?;
    let minor: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Applies the table of docs/compat.md. Every check runs, so that a refusal names
/// every reason at once.
pub fn assess(manifest: &Manifest, landing: &LandingSystem) -> Assessment {
    let source = &manifest.source;
    // On a rollback the landing kernel is the dumping one: there is nowhere to go back to.
    let back = if landing.kernel_release == source.kernel_release {
        String::new()
    } else {
        format!(" or roll back to kernel {}", source.kernel_release)
    };
    let mut refusals = Vec::new();
    let mut transforms = Vec::new();
    let mut notes = Vec::new();

    // CRIU reads images of its own and older versions only.
    match (
        major_minor(&source.criu_version),
        major_minor(&landing.criu_version),
    ) {
        (Some(dumped), Some(here)) if here < dumped => refusals.push(format!(
            "images written by CRIU {} cannot be read by CRIU {}; install CRIU >= {}.{}{back}",
            source.criu_version, landing.criu_version, dumped.0, dumped.1
        )),
        (Some(_), Some(_)) => {}
        _ => notes.push(format!(
            "CRIU versions {:?} (dump) and {:?} (here) could not be compared; CRIU version \
             check skipped",
            source.criu_version, landing.criu_version
        )),
    }

    // The CPU: what the restored processes already use must be there.
    let source_flags: BTreeSet<&str> = source
        .cpu
        .get("flags")
        .map(|f| f.split_whitespace().collect())
        .unwrap_or_default();
    if source_flags.is_empty() {
        notes.push(
            "the manifest records no CPU flags of the dumping machine; CPU check skipped".into(),
        );
    } else if landing.cpu_flags.is_empty() {
        notes.push("this machine's CPU flags could not be read; CPU check skipped".into());
    } else {
        let missing: Vec<&str> = USER_STATE_FLAGS
            .iter()
            .copied()
            .filter(|f| source_flags.contains(f) && !landing.cpu_flags.contains(*f))
            .collect();
        if !missing.is_empty() {
            refusals.push(format!(
                "this CPU lacks {}, which the dumping CPU had and the dumped processes may \
                 use; restore on a machine whose CPU has them{back}",
                missing.join(", ")
            ));
        }
    }
    if let (Some(was), Some(now)) = (source.cpu.get("vendor_id"), &landing.cpu_vendor) {
        if was != now {
            notes.push(format!("the CPU vendor changed from {was} to {now}"));
        }
    }

    let Some(cfg) = &landing.kernel_config else {
        notes.push(format!(
            "no readable /boot/config-{}: kernel-side checks skipped",
            landing.kernel_release
        ));
        return verdicts(manifest, refusals, transforms, notes);
    };
    let kernel = &landing.kernel_release;
    if !builtin(cfg, "CONFIG_CHECKPOINT_RESTORE") {
        refusals.push(format!(
            "kernel {kernel} has CONFIG_CHECKPOINT_RESTORE={}, without which CRIU restores \
             nothing; boot a kernel built with it{back}",
            shown_value(cfg, "CONFIG_CHECKPOINT_RESTORE")
        ));
    }
    let mut unknown = Vec::new();
    for name in &manifest.kernel_features {
        match feature(name) {
            None => unknown.push(name.as_str()),
            // rseq is transformed away below rather than refused.
            Some(f) if f.name == "rseq" => {}
            Some(f) if !builtin(cfg, f.option) => refusals.push(format!(
                "the images may rely on {name} ({}), which kernel {kernel} lacks ({}); boot a \
                 kernel with {}=y{back}",
                f.option,
                shown_value(cfg, f.option),
                f.option
            )),
            Some(_) => {}
        }
    }
    if !unknown.is_empty() {
        notes.push(format!(
            "kernel features not checked (unknown here): {}",
            unknown.join(", ")
        ));
    }
    // Before features were recorded, any kernel since 4.18 may have had rseq; assuming
    // so costs nothing, as images without rseq registrations come through unchanged.
    let source_rseq = if manifest.kernel_features.is_empty() {
        Version::parse(&source.kernel_release)
            .map_or(true, |v| VersionRange::since(RSEQ_SINCE).contains(&v))
    } else {
        manifest.kernel_features.iter().any(|f| f == "rseq")
    };
    if source_rseq && !builtin(cfg, "CONFIG_RSEQ") {
        transforms.push(Transform::DropRseq);
        notes.push(format!(
            "kernel {kernel} has no rseq: restored threads run without it, and glibc's \
             sched_getcpu() may return a stale CPU number"
        ));
    }
    verdicts(manifest, refusals, transforms, notes)
}

/// The same verdict for every workload: nothing in the table is per workload yet.
fn verdicts(
    manifest: &Manifest,
    refusals: Vec<String>,
    transforms: Vec<Transform>,
    notes: Vec<String>,
) -> Assessment {
    let verdict = if !refusals.is_empty() {
        Verdict::Refuse(refusals.join("; "))
    } else if !transforms.is_empty() {
        Verdict::Transform(transforms)
    } else {
        Verdict::Restore
    };
    Assessment {
        workloads: manifest
            .workloads
            .iter()
            .map(|w| (w.name.as_str().to_owned(), verdict.clone()))
            .collect(),
        notes,
    }
}

/// Errors of [`drop_rseq`]: the file and the step that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompatError {
    #[error("dropping rseq: {step} {}", path.display())]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "dropping rseq: the scratch directory {} is not empty; give a new or empty one",
        path.display()
    )]
    ScratchNotEmpty { path: PathBuf },

    #[error(
        "dropping rseq: {} is not a regular file; an image directory holds only files, \
         so it is not copied (the committed images are left as they are)",
        path.display()
    )]
    NotAFile { path: PathBuf },

    #[error("dropping rseq: crit {step} of {}", path.display())]
    Crit {
        step: &'static str,
        path: PathBuf,
        #[source]
        // Boxed: dumper::Error is large, and this one is rare.
        source: Box<dumper::Error>,
    },

    #[error("dropping rseq: {step} {}", path.display())]
    Json {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("dropping rseq: {} is not a core image (crit says its magic is {magic})", path.display())]
    NotACore { path: PathBuf, magic: String },
}

fn io_err(step: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CompatError {
    let path = path.to_path_buf();
    move |source| CompatError::Io { step, path, source }
}

/// Copies one workload's image directory `src` into the new, empty directory `dst`
/// (0700; files 0600). Returns the copied core images.
pub fn copy_images(src: &Path, dst: &Path) -> Result<Vec<PathBuf>, CompatError> {
    copy_tree(src, dst, true)
}

/// [`copy_images`], one level: in the workload's directory, pre-dump directories
/// (`pre-<N>`) are copied too, and `parent` links (CRIU's pointer to the previous
/// pre-dump, checked by the verification that precedes this) are recreated as they
/// are. Any other link or directory is refused, never followed.
fn copy_tree(src: &Path, dst: &Path, top: bool) -> Result<Vec<PathBuf>, CompatError> {
    match fs::DirBuilder::new().mode(0o700).create(dst) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let mut entries = fs::read_dir(dst).map_err(io_err("reading", dst))?;
            if entries.next().is_some() {
                return Err(CompatError::ScratchNotEmpty {
                    path: dst.to_path_buf(),
                });
            }
            fs::set_permissions(dst, fs::Permissions::from_mode(0o700))
                .map_err(io_err("setting the mode of", dst))?;
        }
        Err(e) => return Err(io_err("creating", dst)(e)),
    }

    let is_pre = |n: &str| {
        n.strip_prefix("pre-")
            .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
    };
    let mut entries = Vec::new();
    for entry in fs::read_dir(src).map_err(io_err("reading", src))? {
        let entry = entry.map_err(io_err("reading", src))?;
        let path = entry.path();
        // symlink_metadata: a link is never followed out of the area.
        let meta = fs::symlink_metadata(&path).map_err(io_err("inspecting", &path))?;
        let name = entry.file_name();
        let ok = meta.is_file()
            || (meta.is_symlink() && name == "parent")
            || (top && meta.is_dir() && name.to_str().is_some_and(is_pre));
        if !ok {
            return Err(CompatError::NotAFile { path });
        }
        entries.push((name, meta));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));

    let mut cores = Vec::new();
    for (name, meta) in &entries {
        let (from, to) = (src.join(name), dst.join(name));
        if meta.is_dir() {
            copy_tree(&from, &to, false)?;
            continue;
        }
        if meta.is_symlink() {
            let target = fs::read_link(&from).map_err(io_err("reading the link", &from))?;
            // Only the shapes CRIU writes for a pre-dump chain: `pre-<N>` from the
            // workload's directory, `../pre-<N>` from a pre-dump directory.
            let t = target.to_string_lossy();
            let rest = if top {
                Some(&*t)
            } else {
                t.strip_prefix("../")
            };
            if !rest.is_some_and(&is_pre) {
                return Err(CompatError::NotAFile { path: from });
            }
            std::os::unix::fs::symlink(&target, &to).map_err(io_err("creating the link", &to))?;
            continue;
        }
        let mut input = fs::File::open(&from).map_err(io_err("opening", &from))?;
        let mut output = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&to)
            .map_err(io_err("creating", &to))?;
        io::copy(&mut input, &mut output).map_err(io_err("copying to", &to))?;
        let name = name.to_string_lossy();
        if top && name.starts_with("core-") && name.ends_with(".img") {
            cores.push(to);
        }
    }
    Ok(cores)
}

/// Copies the images in `src` (never changed) into the scratch directory `dst`
/// (created 0700, or an existing empty one) with files 0600, then removes the rseq
/// registrations from every `core-*.img` of the copy. Returns how many core images
/// changed. On error `dst` is incomplete and must not be restored.
pub fn drop_rseq(src: &Path, dst: &Path) -> Result<usize, CompatError> {
    let cores = copy_images(src, dst)?;
    let mut changed = 0;
    for core in cores {
        // The copy is decoded, so that no other program even reads the committed images.
        let text = dumper::cmd::run(CRIT, [Path::new("decode"), Path::new("-i"), &core]).map_err(
            |source| CompatError::Crit {
                step: "decode",
                path: core.clone(),
                source: Box::new(source),
            },
        )?;
        let mut json: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| CompatError::Json {
                step: "parsing crit's JSON of",
                path: core.clone(),
                source,
            })?;
        match json.get("magic").and_then(serde_json::Value::as_str) {
            Some("CORE") => {}
            other => {
                return Err(CompatError::NotACore {
                    path: core,
                    magic: other.unwrap_or("missing").to_owned(),
                })
            }
        }
        if !strip_rseq(&mut json) {
            continue;
        }
        // Encoded next to the copy and renamed over it: the copy is never half-written.
        let mut decoded = tempfile::Builder::new()
            .prefix(".rseq-json-")
            .tempfile_in(dst)
            .map_err(io_err("creating a temporary file in", dst))?;
        serde_json::to_writer(&mut decoded, &json).map_err(|source| CompatError::Json {
            step: "writing the edited JSON of",
            path: core.clone(),
            source,
        })?;
        let encoded = tempfile::Builder::new()
            .prefix(".rseq-img-")
            .tempfile_in(dst)
            .map_err(io_err("creating a temporary file in", dst))?;
        let args = [
            Path::new("encode"),
            Path::new("-i"),
            decoded.path(),
            Path::new("-o"),
            encoded.path(),
        ];
        dumper::cmd::run(CRIT, args).map_err(|source| CompatError::Crit {
            step: "encode",
            path: core.clone(),
            source: Box::new(source),
        })?;
        encoded
            .persist(&core)
            .map_err(|e| io_err("replacing", &core)(e.error))?;
        changed += 1;
    }
    Ok(changed)
}

/// Removes `rseq_entry` from the `thread_core` of every entry of a decoded core image;
/// whether anything was removed.
fn strip_rseq(json: &mut serde_json::Value) -> bool {
    let Some(entries) = json
        .get_mut("entries")
        .and_then(serde_json::Value::as_array_mut)
    else {
        return false;
    };
    let mut removed = false;
    for entry in entries {
        if let Some(thread) = entry
            .get_mut("thread_core")
            .and_then(serde_json::Value::as_object_mut)
        {
            removed |= thread.remove("rseq_entry").is_some();
        }
    }
    removed
}

/// What the boot side restores after [`prepare`]: the generation to restore from (the
/// committed one, or a transformed copy of it) and the workloads it had to leave out.
#[derive(Debug)]
pub struct Prepared {
    pub generation: GenerationId,
    /// Workloads refused on this system, with why.
    pub refused: Vec<(String, String)>,
    /// Workloads that run already (restored by a run of the boot side that crashed):
    /// not restored again, not refused either.
    pub running: Vec<String>,
}

impl Prepared {
    /// Leaves `names` out of the restore: they run already.
    pub fn skip(&mut self, names: &[String]) {
        self.running.extend(names.iter().cloned());
    }
}

/// Assesses generation `gen` against the running system and, when a workload needs a
/// transformation, writes a derived generation `<gen>.compat` holding the changed
/// copies (and the unchanged workloads, copied) with a manifest of its own, committed
/// like any other generation. The committed generation is never touched: a rollback
/// restores it as it is on the kernel it came from. Refused workloads are left out.
pub fn prepare(
    area: &dumper::Area,
    gen: &GenerationId,
    manifest: &Manifest,
    criu_version: &str,
) -> anyhow::Result<Prepared> {
    let landing = LandingSystem::probe(criu_version);
    let assessment = assess(manifest, &landing);
    for note in &assessment.notes {
        tracing::info!("compatibility: {note}");
    }
    let mut refused = Vec::new();
    let mut any_transform = false;
    for (name, verdict) in &assessment.workloads {
        tracing::info!(workload = %name, "compatibility with {}: {verdict}", landing.kernel_release);
        match verdict {
            Verdict::Refuse(why) => refused.push((name.clone(), why.clone())),
            Verdict::Transform(_) => any_transform = true,
            Verdict::Restore => {}
        }
    }
    if !any_transform {
        return Ok(Prepared {
            generation: gen.clone(),
            refused,
            running: Vec::new(),
        });
    }
    let generation = transformed_copy(area, gen, manifest, &assessment.workloads)?;
    Ok(Prepared {
        generation,
        refused,
        running: Vec::new(),
    })
}

/// Writes generation `<gen>.compat`: every workload of `gen` whose verdict is not a
/// refusal, transformed as its verdict says (a workload without a verdict is copied as
/// it is), committed with a manifest of its own. An earlier copy is replaced. Used by
/// [`prepare`], and by `upgradectl internals transform` to exercise a transform on a
/// system that does not need it.
pub fn transformed_copy(
    area: &dumper::Area,
    gen: &GenerationId,
    manifest: &Manifest,
    verdicts: &[(String, Verdict)],
) -> anyhow::Result<GenerationId> {
    use anyhow::Context;
    let verdict = |name: &str| verdicts.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let derived = GenerationId::new(format!("{gen}.compat"))
        .with_context(|| format!("naming the transformed copy of generation {gen}"))?;
    // A copy left by an earlier boot is rebuilt: this boot's kernel decides.
    if area.list()?.contains(&derived) {
        area.remove(&derived)?;
    }
    let pending = area.begin(&derived)?;
    let built = (|| -> anyhow::Result<Manifest> {
        let mut m = manifest.clone();
        m.generation = derived.clone();
        m.workloads
            .retain(|w| !matches!(verdict(w.name.as_str()), Some(Verdict::Refuse(_))));
        for w in &mut m.workloads {
            let src = area.generation_path(gen).join(w.name.as_str());
            let dst = pending.path().join(w.name.as_str());
            let transforms = match verdict(w.name.as_str()) {
                Some(Verdict::Transform(t)) => t.clone(),
                _ => Vec::new(),
            };
            let changed = if transforms.contains(&Transform::DropRseq) {
                drop_rseq(&src, &dst)?
            } else {
                copy_images(&src, &dst)?;
                0
            };
            tracing::info!(workload = %w.name, "transformed copy: {changed} core images changed");
            w.images.clear(); // the commit hashes the new files
            w.options.insert("transformed_from".into(), gen.to_string());
            let names: Vec<String> = transforms.iter().map(ToString::to_string).collect();
            w.options.insert("transforms".into(), names.join(","));
        }
        Ok(m)
    })();
    let m = match built {
        Ok(m) => m,
        Err(e) => {
            let _ = pending.abandon();
            return Err(e.context(format!("transforming generation {gen}")));
        }
    };
    pending.commit(m)?;
    Ok(derived)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::parse_kernel_config;
    use dumper::manifest::{GenerationId, SourceSystem, Workload, WorkloadKind, WorkloadName};
    use serde_json::json;

    const FLAGS: &str = "fpu sse sse2 ht avx avx2 aes hypervisor";

    fn manifest(release: &str, criu: &str, features: &[&str]) -> Manifest {
        let cpu = [("vendor_id", "GenuineIntel"), ("flags", FLAGS)]
            .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let source = SourceSystem {
            kernel_release: release.into(),
            criu_version: criu.into(),
            cpu: cpu.into_iter().collect(),
            ..Default::default()
        };
        let mut m = Manifest::new(GenerationId::new("g1").unwrap(), 0, source);
        m.kernel_features = features.iter().map(|f| f.to_string()).collect();
        for name in ["tmux", "web"] {
            let w = Workload::new(WorkloadName::new(name).unwrap(), WorkloadKind::Process, 100);
            m.workloads.push(w);
        }
        m
    }

    fn landing(criu: &str, config: Option<&str>) -> LandingSystem {
        LandingSystem {
            kernel_release: "6.12.1-amd64".into(),
            kernel_config: config.map(parse_kernel_config),
            criu_version: criu.into(),
            cpu_flags: FLAGS.split(' ').map(str::to_owned).collect(),
            cpu_vendor: Some("GenuineIntel".into()),
        }
    }

    const FULL: &str = "CONFIG_CHECKPOINT_RESTORE=y\nCONFIG_RSEQ=y\nCONFIG_TIME_NS=y\n\
                        CONFIG_MEMFD_CREATE=y\nCONFIG_USERFAULTFD=y\n";

    /// The one verdict every workload got (the table has no per-workload rows yet).
    fn verdict(a: &Assessment) -> &Verdict {
        assert_eq!(a.workloads.len(), 2);
        assert_eq!(a.workloads[0].1, a.workloads[1].1);
        &a.workloads[0].1
    }

    fn refusal(a: &Assessment) -> &str {
        match verdict(a) {
            Verdict::Refuse(why) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn same_system_restores_without_notes() {
        let a = assess(
            &manifest("6.1.0-50-amd64", "3.17.1", &[]),
            &landing("3.17.1", Some(FULL)),
        );
        assert_eq!(a.workloads[0].0, "tmux");
        assert_eq!(verdict(&a), &Verdict::Restore);
        assert!(a.notes.is_empty(), "{:?}", a.notes);
    }

    #[test]
    fn only_an_older_criu_major_minor_is_refused() {
        let m = manifest("6.1.0-50-amd64", "3.19.0", &[]);
        let why = refusal(&assess(&m, &landing("3.17.1-2+deb12u2", Some(FULL)))).to_owned();
        assert!(
            why.contains("written by CRIU 3.19.0 cannot be read by CRIU 3.17.1"),
            "{why}"
        );
        assert!(
            why.contains("install CRIU >= 3.19 or roll back to kernel 6.1.0-50"),
            "{why}"
        );
        for newer in ["3.19", "3.19.5", "4.0"] {
            assert_eq!(
                verdict(&assess(&m, &landing(newer, Some(FULL)))),
                &Verdict::Restore
            );
        }
        let a = assess(&m, &landing("git-abc", Some(FULL)));
        assert_eq!(verdict(&a), &Verdict::Restore);
        assert!(
            a.notes[0].contains("could not be compared"),
            "{:?}",
            a.notes
        );
        assert_eq!(major_minor("3.17.1-2+deb12u2"), Some((3, 17)));
        assert_eq!(major_minor("4"), None);
    }

    #[test]
    fn missing_cpu_flags_that_matter_are_refused() {
        let m = manifest("6.1.0-50-amd64", "3.17.1", &[]);
        let mut l = landing("3.17.1", Some(FULL));
        // Flags that do not carry user-space state may come and go.
        l.cpu_flags.remove("hypervisor");
        l.cpu_flags.insert("avx512f".into());
        assert_eq!(verdict(&assess(&m, &l)), &Verdict::Restore);
        l.cpu_flags.remove("avx2");
        l.cpu_flags.remove("aes");
        let why = refusal(&assess(&m, &l)).to_owned();
        assert!(why.contains("this CPU lacks avx2, aes,"), "{why}");

        l.cpu_vendor = Some("AuthenticAMD".into());
        l.cpu_flags.clear();
        let a = assess(&m, &l);
        assert_eq!(verdict(&a), &Verdict::Restore);
        assert!(a.notes.iter().any(|n| n.contains("could not be read")));
        assert!(a.notes.iter().any(|n| n.contains("to AuthenticAMD")));

        let mut old = m.clone();
        old.source.cpu.clear();
        let a = assess(&old, &landing("3.17.1", Some(FULL)));
        assert!(a.notes[0].contains("records no CPU flags"), "{:?}", a.notes);
    }

    #[test]
    fn a_landing_kernel_without_rseq_gets_the_images_transformed() {
        let no_rseq =
            "CONFIG_CHECKPOINT_RESTORE=y\nCONFIG_MEMFD_CREATE=y\n# CONFIG_RSEQ is not set\n";
        let l = landing("3.17.1", Some(no_rseq));
        let drop = Verdict::Transform(vec![Transform::DropRseq]);
        // Recorded, or assumed for a kernel since 4.18 when nothing was recorded.
        for m in [
            manifest("4.9.0-1-amd64", "3.17.1", &["rseq"]),
            manifest("6.1.0-50-amd64", "3.17.1", &[]),
            manifest("not a release", "3.17.1", &[]),
        ] {
            let a = assess(&m, &l);
            assert_eq!(verdict(&a), &drop, "{}", m.source.kernel_release);
            assert!(a.notes[0].contains("sched_getcpu()"), "{:?}", a.notes);
        }
        for m in [
            manifest("4.17.0", "3.17.1", &[]),
            manifest("6.1.0-50-amd64", "3.17.1", &["memfd"]),
        ] {
            assert_eq!(verdict(&assess(&m, &l)), &Verdict::Restore);
        }
        // A refusal wins over a transform.
        let v = verdict(&assess(&manifest("6.1", "3.19", &[]), &l)).clone();
        assert!(matches!(v, Verdict::Refuse(_)), "{v:?}");
        assert_eq!(
            drop.to_string(),
            "restore after: drop the threads' rseq registrations"
        );
    }

    #[test]
    fn kernel_side_refusals_name_the_option() {
        let m = manifest("6.1.0-50-amd64", "3.17.1", &[]);
        let no_cr = "# CONFIG_CHECKPOINT_RESTORE is not set\nCONFIG_RSEQ=y\n";
        let why = refusal(&assess(&m, &landing("3.17.1", Some(no_cr)))).to_owned();
        assert!(why.contains("CONFIG_CHECKPOINT_RESTORE=not set"), "{why}");

        let m = manifest(
            "6.1.0-50-amd64",
            "3.17.1",
            &["memfd", "timens", "mem_dirty_track"],
        );
        let cfg = "CONFIG_CHECKPOINT_RESTORE=y\nCONFIG_RSEQ=y\nCONFIG_MEMFD_CREATE=y\n";
        let a = assess(&m, &landing("3.17.1", Some(cfg)));
        let why = refusal(&a);
        assert!(
            why.contains(
                "rely on timens (CONFIG_TIME_NS), which kernel 6.12.1-amd64 lacks (absent)"
            ),
            "{why}"
        );
        assert!(!why.contains("memfd"), "{why}");
        assert!(
            a.notes[0].contains("not checked (unknown here): mem_dirty_track"),
            "{:?}",
            a.notes
        );
    }

    #[test]
    fn an_unknown_landing_config_skips_the_kernel_checks() {
        let m = manifest("6.1.0-50-amd64", "3.17.1", &["rseq", "userfaultfd"]);
        let a = assess(&m, &landing("3.17.1", None));
        assert_eq!(verdict(&a), &Verdict::Restore);
        assert!(a.notes[0].contains("/boot/config-6.12.1-amd64: kernel-side checks skipped"));
    }

    #[test]
    fn dump_features_are_the_builtin_ones_sorted() {
        let cfg = parse_kernel_config("CONFIG_USERFAULTFD=y\nCONFIG_RSEQ=y\nCONFIG_TIME_NS=m\n");
        assert_eq!(dump_features(Some(&cfg)), ["rseq", "userfaultfd"]);
        assert!(dump_features(None).is_empty());
        assert_eq!(
            dump_features(Some(&parse_kernel_config(FULL))).len(),
            FEATURES.len()
        );
        // What dump_features writes must pass the manifest's check and read back here.
        for f in FEATURES {
            assert!(f.option.starts_with("CONFIG_"));
            assert_eq!(feature(f.name), Some(f));
            assert!(f
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-'));
        }
    }

    #[test]
    fn the_first_cpu_is_read() {
        let text = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse\n\n\
                    processor\t: 1\nvendor_id\t: Other\nflags\t\t: fpu\n";
        let cpu = first_cpu(text);
        assert_eq!(cpu["vendor_id"], "GenuineIntel");
        assert_eq!(cpu["flags"], "fpu sse");
    }

    #[test]
    fn rseq_entries_are_stripped_from_every_thread() {
        let mut core = json!({
            "magic": "CORE",
            "entries": [
                {"mtype": "X86_64", "thread_core": {"futex_rla": 0, "rseq_entry": {
                    "rseq_abi_pointer": "0x7f0000001000", "rseq_abi_size": 32,
                    "signature": 1392848979}}},
                {"mtype": "X86_64", "thread_core": {"futex_rla": 0}},
                {"mtype": "X86_64"}
            ]
        });
        assert!(strip_rseq(&mut core));
        assert_eq!(core["entries"][0]["thread_core"], json!({"futex_rla": 0}));
        assert_eq!(core["entries"][1]["thread_core"], json!({"futex_rla": 0}));
        assert!(!strip_rseq(&mut core), "nothing left to remove");
        assert!(!strip_rseq(&mut json!({"magic": "CORE"})));
        assert!(!strip_rseq(&mut json!([1, 2])));
    }

    #[test]
    fn images_without_cores_are_copied_privately_and_the_source_is_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("pages-1.img"), b"pages").unwrap();
        fs::write(src.join("inventory.img"), b"inv").unwrap();
        fs::set_permissions(src.join("inventory.img"), fs::Permissions::from_mode(0o644)).unwrap();
        let dst = tmp.path().join("dst");
        assert_eq!(drop_rseq(&src, &dst).unwrap(), 0);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dst), 0o700);
        assert_eq!(mode(&dst.join("inventory.img")), 0o600);
        assert_eq!(fs::read(dst.join("pages-1.img")).unwrap(), b"pages");
        assert_eq!(mode(&src.join("inventory.img")), 0o644);

        let err = drop_rseq(&src, &dst).unwrap_err();
        assert!(matches!(err, CompatError::ScratchNotEmpty { .. }), "{err}");
        // A pre-dump chain is copied as it is; a link anywhere else is refused.
        fs::create_dir(src.join("pre-1")).unwrap();
        fs::write(src.join("pre-1/pages-1.img"), b"old pages").unwrap();
        std::os::unix::fs::symlink("pre-1", src.join("parent")).unwrap();
        let dst2 = tmp.path().join("dst2");
        copy_images(&src, &dst2).unwrap();
        assert_eq!(
            fs::read_link(dst2.join("parent")).unwrap(),
            Path::new("pre-1")
        );
        assert_eq!(
            fs::read(dst2.join("pre-1/pages-1.img")).unwrap(),
            b"old pages"
        );
        fs::remove_file(src.join("parent")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.join("parent")).unwrap();
        let err = drop_rseq(&src, &tmp.path().join("dst3")).unwrap_err();
        assert!(
            err.to_string().contains("parent is not a regular file"),
            "{err}"
        );
    }
}
