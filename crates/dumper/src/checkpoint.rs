//! Checkpoint and restore of whole generations: the order of freezing, dumping,
//! committing and killing that keeps every workload either running or safely imaged.
//!
//! Rules that hold on every path:
//! - until the generation is committed, no workload has been killed: cgroup-owning
//!   workloads are frozen by us and dumped with leave-running, then killed after the
//!   commit; at most one workload that shares its cgroup is dumped last, by a dump that
//!   stops it (CRIU resumes it if that dump fails);
//! - if the commit fails after that last dump stopped its workload, the workload is
//!   restored from the pending images at once;
//! - any error thaws everything we froze.
//!
//! With pre-dumps, each workload is first pre-dumped while it runs (CRIU tracks its
//! memory from then on), into `pre-1` to `pre-<N>` of its image directory, each linked
//! to the one before; the final dump after the freeze then writes only the pages
//! dirtied since the last pre-dump. The layout is described in [`crate::manifest`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use crate::area::{Area, PendingGeneration, Verified};
use crate::criu::{Criu, DumpOptions, RestoreOptions};
use crate::freezer::{Cgroup2Mount, Freezer};
use crate::manifest::{
    pre_dump_dir, Checksum, GenerationId, GenerationState, Manifest, SourceSystem, Workload,
    WorkloadKind, WorkloadState, MAX_PRE_DUMPS,
};
use crate::predump::{self, PreDumps};
use crate::workload::{Resolved, Target};
use crate::{cmd, faults, podman, service, sockdirs, Error};

/// How long the cgroup freezer may take to freeze a workload.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where CRIU's logs go, per generation and workload (not inside the area, whose
/// generations hold exactly the images the manifest lists).
pub const LOG_ROOT: &str = "/run/upgraded/criu";

#[derive(Debug, Clone, Default)]
pub struct CheckpointOptions {
    /// Keep the workloads running after the dump (a snapshot).
    pub leave_running: bool,
    /// Dump established TCP connections.
    pub tcp_established: bool,
    /// Recorded in the manifest's `kernel_features`: what the dumping kernel offers
    /// that the images may rely on (the caller's names; upgraded's are in
    /// docs/compat.md).
    pub kernel_features: Vec<String>,
    /// Pre-dumps before the freeze (a number up to [`MAX_PRE_DUMPS`], or adaptive:
    /// see [`crate::predump`]). Not for podman containers.
    pub pre_dump: PreDumps,
    /// Per-workload policies (by workload name), overriding `pre_dump`.
    pub pre_dump_by_name: BTreeMap<String, PreDumps>,
}

impl CheckpointOptions {
    /// The pre-dump policy of workload `name`.
    pub fn pre_dumps_of(&self, name: &str) -> PreDumps {
        self.pre_dump_by_name
            .get(name)
            .copied()
            .unwrap_or(self.pre_dump)
    }
}

/// A step of a long operation, for progress displays.
#[derive(Debug, Clone, Copy)]
pub enum Step<'a> {
    /// Pre-dump iteration `.1` (from 1) of workload `.0`, which keeps running.
    PreDumping(&'a str, u32),
    Freezing,
    Dumping(&'a str),
    Committing,
    Verifying,
    Restoring(&'a str),
}

/// What a checkpoint did, for reports and benchmarks.
#[derive(Debug, Clone)]
pub struct CheckpointReport {
    pub manifest: Manifest,
    /// Seconds from the first freeze to the end of the last dump.
    pub frozen_secs: f64,
    pub commit_secs: f64,
    pub workloads: Vec<WorkloadReport>,
}

#[derive(Debug, Clone)]
pub struct WorkloadReport {
    pub name: String,
    /// The final dump's time (the pre-dumps run before the freeze).
    pub dump_secs: f64,
    /// What the final dump wrote.
    pub image_bytes: u64,
    /// What each pre-dump wrote, in order (empty without pre-dumps).
    pub pre_dump_bytes: Vec<u64>,
    /// Why the pre-dumps stopped (see [`predump::Stop`]); `None` without pre-dumps.
    pub pre_dump_stop: Option<predump::Stop>,
}

/// A name for a new generation: the UTC time and the kernel it was made on.
pub fn new_generation_id(kernel_release: &str) -> Result<GenerationId, Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // Nanoseconds keep two checkpoints in the same second apart.
    let id = format!(
        "{}.{:09}-{}",
        crate::manifest::rfc3339_compact(now.as_secs()),
        now.subsec_nanos(),
        kernel_release
    );
    Ok(GenerationId::new(id)?)
}

/// Describes the running system for the manifest.
pub fn source_system(criu: &Criu) -> Result<SourceSystem, Error> {
    let uname = nix::sys::utsname::uname().map_err(|e| Error::Io {
        action: "reading uname",
        path: PathBuf::from("uname(2)"),
        source: e.into(),
    })?;
    let release = uname.release().to_string_lossy().into_owned();
    let proc_version = read_to_string("/proc/version")?.trim_end().to_owned();
    let config = PathBuf::from(format!("/boot/config-{release}"));
    let kernel_config_checksum = match Checksum::of_file(&config) {
        Ok((c, _)) => Some(c),
        Err(_) => None,
    };
    let glibc_version = cmd::run("getconf", ["GNU_LIBC_VERSION"])
        .map(|s| s.trim().trim_start_matches("glibc ").to_owned())
        .unwrap_or_default();
    Ok(SourceSystem {
        kernel_release: release,
        proc_version,
        kernel_config_checksum,
        criu_version: criu.version()?.to_string(),
        glibc_version,
        cpu: cpu_info(&read_to_string("/proc/cpuinfo")?),
    })
}

/// The first processor's identity from /proc/cpuinfo: what decides whether images
/// made here can run elsewhere.
fn cpu_info(text: &str) -> BTreeMap<String, String> {
    let wanted = ["vendor_id", "cpu family", "model", "model name", "flags"];
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            let k = k.trim();
            if wanted.contains(&k) {
                out.insert(k.replace(' ', "_"), v.trim().to_owned());
            }
        }
    }
    out
}

fn read_to_string(path: &str) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        action: "reading",
        path: path.into(),
        source,
    })
}

/// The CRIU options a workload needs, from what discovery found.
fn dump_options(w: &Resolved, o: &CheckpointOptions, leave_running: bool) -> DumpOptions {
    DumpOptions {
        pid: w.root_pid,
        leave_running,
        tcp_established: o.tcp_established,
        // A tree that is not its own session leader belongs to a shell's session:
        // CRIU must treat the session and process group as external.
        shell_job: !w.session_leader,
        // Services talk to journald and D-Bus over unix sockets whose peers stay
        // behind; they are reconnected by their owners after restore.
        ext_unix_sk: matches!(
            w.kind,
            WorkloadKind::Service | WorkloadKind::Scope | WorkloadKind::Session
        ),
        file_locks: true,
        freeze_cgroup: None,
        parent: None,
        track_mem: false,
        external: Vec::new(),
        container: w.kind == WorkloadKind::Nspawn,
    }
}

/// What the manifest records of how a workload was dumped: restore reads it back.
fn mw_options(dopts: &DumpOptions, w: &Resolved, socket_dirs: &str) -> BTreeMap<String, String> {
    let mut o: BTreeMap<String, String> = dopts.describe().into_iter().collect();
    o.insert("owns_cgroup".into(), w.owns_cgroup.to_string());
    if let Some(comm) = w.command_line.first() {
        let ident = Path::new(comm)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned());
        o.insert("identifier".into(), ident.unwrap_or_default());
    }
    if let Target::Podman { container } = &w.target {
        o.insert("podman_container".into(), container.clone());
    }
    if let Target::Nspawn { machine } = &w.target {
        o.insert("machine".into(), machine.clone());
    }
    if let Some(root) = &w.root_dir {
        o.insert("root".into(), root.clone());
    }
    if !socket_dirs.is_empty() {
        o.insert("socket_dirs".into(), socket_dirs.to_owned());
    }
    o
}

/// A final dump's result: the images directory, seconds, and the bound unix sockets'
/// directories.
type DumpOutcome = Result<(PathBuf, f64, String), Error>;

/// The options of pre-dump `i` (from 1) of `w`: those of the final dump, tracking
/// memory, with the previous pre-dump as parent (CRIU resolves the path from the new
/// images directory and links `parent` to it).
fn pre_dump_options(w: &Resolved, o: &CheckpointOptions, i: u32) -> DumpOptions {
    // A pre-dump never stops the tree, whatever leave_running says. No freeze_cgroup:
    // CRIU stops the tasks with ptrace, which ends with CRIU. Had it frozen the cgroup
    // and died, the cgroup would stay frozen, and our freeze would take it for frozen
    // by someone else and leave it so.
    let mut dopts = dump_options(w, o, true);
    dopts.track_mem = true;
    dopts.parent = (i > 1).then(|| format!("../{}", pre_dump_dir(i - 1)));
    dopts
}

/// Turns the final dump's options into those that follow `pre_dumps` pre-dumps.
fn chain_final_dump(dopts: &mut DumpOptions, pre_dumps: u32) {
    if pre_dumps > 0 {
        // Only what changed since the last pre-dump; CRIU links `parent` to it.
        dopts.track_mem = true;
        dopts.parent = Some(pre_dump_dir(pre_dumps));
    }
}

/// Records the pre-dumps in a workload's manifest options: how many, what each wrote
/// and why they stopped (for reports; restore needs none of it, it follows the links).
fn record_pre_dumps(options: &mut BTreeMap<String, String>, run: &PreDumpRun) {
    if run.bytes.is_empty() {
        return;
    }
    options.insert("pre_dump".into(), run.bytes.len().to_string());
    let each: Vec<String> = run.bytes.iter().map(u64::to_string).collect();
    options.insert("pre_dump_bytes".into(), each.join(","));
    options.insert("pre_dump_stop".into(), run.stop.to_string());
}

/// The pre-dumps one workload got.
#[derive(Debug, Clone)]
struct PreDumpRun {
    /// What each wrote, in order.
    bytes: Vec<u64>,
    stop: predump::Stop,
}

impl PreDumpRun {
    fn count(&self) -> u32 {
        u32::try_from(self.bytes.len()).unwrap_or(MAX_PRE_DUMPS)
    }
}

/// Pre-dumps `w` while it runs, as its policy says: iteration i into
/// `<images>/pre-<i>`, with `../pre-<i-1>` as its parent from the second on.
fn pre_dump(
    criu: &Criu,
    pending: &PendingGeneration,
    gen: &GenerationId,
    w: &Resolved,
    opts: &CheckpointOptions,
    progress: &mut dyn FnMut(Step),
) -> Result<PreDumpRun, Error> {
    let policy = opts.pre_dumps_of(w.name.as_str());
    let mut done: Vec<predump::Iteration> = Vec::new();
    let stop = loop {
        if let Some(stop) = predump::next(policy, &done) {
            break stop;
        }
        // CRIU's work directory, shared with the final dump: pre-dump.log next to
        // dump.log (each pre-dump's log replaces the one before, so a failed one stays).
        let logs = log_dir(gen, w.name.as_str())?;
        let i = u32::try_from(done.len()).unwrap_or(MAX_PRE_DUMPS) + 1;
        let dir = pending.workload_dir(&w.name)?.join(pre_dump_dir(i));
        crate::fsutil::create_private_dir(&dir)?;
        info!(workload = %w.name, pid = w.root_pid, iteration = i, "pre-dumping");
        progress(Step::PreDumping(w.name.as_str(), i));
        let t = Instant::now();
        criu.pre_dump(&pre_dump_options(w, opts, i), &dir, &logs)?;
        done.push(predump::Iteration {
            bytes: dir_bytes(&dir),
            secs: t.elapsed().as_secs_f64(),
        });
    };
    if !done.is_empty() {
        info!(workload = %w.name, policy = %policy, iterations = done.len(), %stop,
            bytes = ?done.iter().map(|i| i.bytes).collect::<Vec<_>>(), "pre-dumps done");
    }
    Ok(PreDumpRun {
        bytes: done.iter().map(|i| i.bytes).collect(),
        stop,
    })
}

/// A restored tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredTree {
    /// Its root.
    pub pid: u32,
    /// Processes started to serve it (an nspawn machine's console reader), which
    /// belong in its unit with it.
    pub helpers: Vec<u32>,
    /// For an nspawn machine: its name and root directory, as validated from the
    /// manifest before the restore.
    pub machine: Option<(String, PathBuf)>,
}

/// Restores the tree in `images` with the options it was dumped with.
fn restore_images(
    criu: &Criu,
    images: &Path,
    logs: &Path,
    options: &BTreeMap<String, String>,
    unit: Option<&str>,
) -> Result<RestoredTree, Error> {
    let mut ropts = RestoreOptions::from_recorded(|k| options.get(k).map(String::as_str));
    if let Some(container) = options.get("podman_container") {
        return podman::restore(container, images, ropts.tcp_established).map(|pid| RestoredTree {
            pid,
            helpers: Vec::new(),
            machine: None,
        });
    }
    let machine = match options.get("machine") {
        Some(m) => Some(recorded_machine(m)?),
        None => None,
    };
    if ropts.container {
        ropts.root = Some(recorded_root(options.get("root").map(String::as_str))?);
    }
    if let Some(m) = &machine {
        crate::nspawn::prepare_host(m)?;
    }
    // A reboot or kexec emptied /tmp and /run, where tmux and screen keep their sockets.
    if let Some(dirs) = options.get("socket_dirs") {
        sockdirs::recreate(dirs)?;
    }
    // Stand-ins for what was dumped as external (service::external_resources), kept
    // open until CRIU, which inherits them, is done: fresh journald streams, and
    // /dev/null for logind's session FIFOs (held, never written; the logind of this
    // boot does not know the session).
    let mut streams: Vec<std::os::fd::OwnedFd> = Vec::new();
    let ident = options
        .get("identifier")
        .map(String::as_str)
        .unwrap_or("restored");
    for ext in options
        .get("external")
        .map(String::as_str)
        .unwrap_or("")
        .split(',')
    {
        let stand_in =
            if let Some(ino) = ext.strip_prefix("unix[").and_then(|r| r.strip_suffix(']')) {
                let stream = service::open_journal_stream(ident, unit.unwrap_or(""))?;
                (format!("socket:[{ino}]"), stream)
            } else if ext.starts_with("file[") && ext.ends_with(']') {
                // Without O_CLOEXEC, like the journald streams: criu swrk must inherit
                // it. (std opens everything close-on-exec; CRIU then took the fd
                // number for one of its own files and closed it: "Unable to open
                // memfd.img: Bad file descriptor".)
                let null = nix::fcntl::open(
                    "/dev/null",
                    nix::fcntl::OFlag::O_WRONLY,
                    nix::sys::stat::Mode::empty(),
                )
                .map_err(|e| Error::Io {
                    action: "opening",
                    path: "/dev/null".into(),
                    source: e.into(),
                })?;
                // CRIU cuts the first character of an external file's recorded name on
                // restore (it takes names as absolute paths made relative): the key it
                // looks up is "ile[...]" (CRIU issue #186).
                (ext[1..].to_owned(), null)
            } else {
                continue;
            };
        ropts
            .inherit
            .push((stand_in.0, std::os::fd::AsRawFd::as_raw_fd(&stand_in.1)));
        streams.push(stand_in.1);
    }
    let restored = criu.restore(&ropts, images, logs)?;
    let mut helpers = Vec::new();
    if let Some(master) = restored.pts_master {
        let name = machine.as_deref().unwrap_or("restored");
        match crate::nspawn::hold_console(name, master) {
            Ok(pid) => helpers.push(pid),
            // The master is closed with the error: the container sees its console
            // hang up, but runs.
            Err(e) => {
                warn!(machine = name, error = %e, "restored, but nothing reads the machine's console")
            }
        }
    }
    Ok(RestoredTree {
        pid: restored.pid,
        helpers,
        machine: machine.zip(ropts.root),
    })
}

/// A machine name read back from a manifest: it names a scope and goes to machined.
fn recorded_machine(name: &str) -> Result<String, Error> {
    match crate::workload::parse_target(WorkloadKind::Nspawn, name)? {
        Target::Nspawn { machine } => Ok(machine),
        _ => unreachable!("parse_target keeps the kind"),
    }
}

/// A container's root directory read back from a manifest: CRIU builds the restored
/// mount namespace on it, so it has to be an absolute, plain path to a directory.
fn recorded_root(root: Option<&str>) -> Result<PathBuf, Error> {
    let bad = |why: &str| Error::RecordedOption {
        field: "root",
        value: root.unwrap_or("").chars().take(80).collect(),
        problem: why.to_owned(),
    };
    let root = root.ok_or_else(|| bad("a container's images need its root directory"))?;
    let path = Path::new(root);
    if !path.is_absolute()
        || root.len() > 4096
        || root.contains('\0')
        || root.split('/').any(|c| c == "." || c == "..")
    {
        return Err(bad("not an absolute path without '.' or '..'"));
    }
    if !path.is_dir() {
        return Err(bad(
            "no such directory: the machine's files must be where they were",
        ));
    }
    Ok(path.to_owned())
}

fn log_dir(gen: &GenerationId, name: &str) -> Result<PathBuf, Error> {
    let dir = Path::new(LOG_ROOT).join(gen.as_str()).join(name);
    crate::fsutil::create_private_dir_all(&dir)?;
    Ok(dir)
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|it| {
            it.filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Checkpoints `workloads` into a new generation of `area`.
pub fn checkpoint(
    area: &Area,
    criu: &Criu,
    workloads: &[Resolved],
    opts: &CheckpointOptions,
    progress: &mut dyn FnMut(Step),
) -> Result<CheckpointReport, Error> {
    // A full or read-only area is named as such, whoever wrote (we or CRIU).
    checkpoint_into(area, criu, workloads, opts, progress).map_err(|e| area.explain(e))
}

fn checkpoint_into(
    area: &Area,
    criu: &Criu,
    workloads: &[Resolved],
    opts: &CheckpointOptions,
    progress: &mut dyn FnMut(Step),
) -> Result<CheckpointReport, Error> {
    if workloads.is_empty() {
        return Err(Error::NothingToCheckpoint);
    }
    for w in workloads {
        let policy = opts.pre_dumps_of(w.name.as_str());
        if policy.max() > MAX_PRE_DUMPS {
            return Err(Error::TooManyPreDumps {
                requested: policy.max(),
                max: MAX_PRE_DUMPS,
            });
        }
        if policy.any() && matches!(w.target, Target::Podman { .. }) {
            return Err(podman::pre_dump_unsupported(&w.name));
        }
    }
    // Workloads we cannot freeze ourselves are dumped last, by a dump that stops them:
    // those sharing their cgroup, and podman containers (podman freezes them itself).
    let frozen_by_us = |w: &Resolved| w.owns_cgroup && w.kind != WorkloadKind::Podman;
    let sharing: Vec<&Resolved> = workloads.iter().filter(|w| !frozen_by_us(w)).collect();
    if !opts.leave_running && sharing.len() > 1 {
        return Err(Error::TooManySharedCgroups {
            workloads: sharing.iter().map(|w| w.name.to_string()).collect(),
        });
    }
    let source = source_system(criu)?;
    let gen = new_generation_id(&source.kernel_release)?;
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut manifest = Manifest::new(gen.clone(), created, source);
    manifest.kernel_features = opts.kernel_features.clone();

    // Cgroup-owning workloads first (frozen, dumped leave-running), the one that shares
    // its cgroup last.
    let mut order: Vec<&Resolved> = workloads.iter().filter(|w| frozen_by_us(w)).collect();
    order.extend(sharing.iter().copied());

    // Services must not be restarted by systemd once their processes are gone.
    let services: Vec<&str> = if opts.leave_running {
        Vec::new()
    } else {
        order
            .iter()
            .filter(|w| {
                w.kind == WorkloadKind::Service
                    // A machine run as a service (systemd-nspawn@NAME.service).
                    || (w.kind == WorkloadKind::Nspawn
                        && w.unit.as_deref().is_some_and(|u| u.ends_with(".service")))
            })
            .filter_map(|w| w.unit.as_deref())
            .collect()
    };
    for (i, unit) in services.iter().enumerate() {
        if let Err(e) = service::hold(unit) {
            services[..i].iter().for_each(|u| service::release(u));
            return Err(e);
        }
    }
    let release_all = || services.iter().for_each(|u| service::release(u));

    let pending = match area.begin(&gen) {
        Ok(p) => p,
        Err(e) => {
            release_all();
            return Err(e);
        }
    };

    // Pre-dumps while everything runs, so that the freeze lasts only for the pages
    // dirtied since. A pre-dump never stops its tree: on error all still run.
    let mut pre_dumps = Vec::with_capacity(order.len());
    for w in &order {
        let done = pre_dump(criu, &pending, &gen, w, opts, progress)
            .and_then(|run| faults::point("checkpoint::pre-dump").map(|()| run));
        match done {
            Ok(run) => pre_dumps.push(run),
            Err(e) => {
                abandon(pending);
                release_all();
                return Err(Error::DumpFailed {
                    workload: w.name.to_string(),
                    source: Box::new(e),
                });
            }
        }
    }

    let t_freeze = Instant::now();
    progress(Step::Freezing);
    let cgroups: Vec<String> = order
        .iter()
        .filter_map(|w| frozen_by_us(w).then(|| w.cgroup.clone()).flatten())
        .collect();
    let freeze = || -> Result<_, Error> {
        if cgroups.is_empty() {
            return Ok((Vec::new(), None));
        }
        let freezer = Freezer::new()?;
        let frozen = freezer.freeze_all(&cgroups, FREEZE_TIMEOUT)?;
        // A failure from here on drops `frozen`, which thaws.
        faults::point("checkpoint::freeze")?;
        Ok((frozen, Some(Cgroup2Mount::discover()?)))
    };
    let (frozen, mount) = match freeze() {
        Ok(f) => f,
        Err(e) => {
            abandon(pending);
            release_all();
            return Err(e);
        }
    };

    // One workload's final dump into the pending generation: its images, seconds and
    // the directories of its bound unix sockets.
    let dump_one = |w: &Resolved, dopts: &mut DumpOptions, leave_running: bool| {
        let images = pending.workload_dir(&w.name)?;
        let logs = log_dir(&gen, w.name.as_str())?;
        if frozen_by_us(w) {
            // Frozen already: CRIU sees the freezer state and leaves it as it was.
            if let (Some(cg), Some(mount)) = (&w.cgroup, &mount) {
                dopts.freeze_cgroup = Some(mount.dir_of(cg)?);
            }
        }
        // journald streams (a service's stdout/stderr) and logind's session FIFOs are
        // external: restore hands the tree stand-ins.
        dopts.external = service::external_resources(&w.pids)?;
        // Read while the tree still exists: a stopping dump ends it.
        let socket_dirs = sockdirs::record(&w.pids);
        let t = Instant::now();
        info!(workload = %w.name, pid = w.root_pid, "dumping");
        if let Target::Podman { container } = &w.target {
            podman::checkpoint(container, &images, leave_running, opts.tcp_established)?;
        } else {
            criu.dump(dopts, &images, &logs)?;
        }
        Ok::<_, Error>((images, t.elapsed().as_secs_f64(), socket_dirs))
    };
    let final_options = |w: &Resolved, leave_running: bool| {
        let mut dopts = dump_options(w, opts, leave_running);
        let done = order.iter().position(|o| o.name == w.name);
        chain_final_dump(&mut dopts, done.map_or(0, |i| pre_dumps[i].count()));
        dopts
    };

    // The workloads frozen by us are dumped side by side, each by its own CRIU (they
    // are independent trees in cgroups of their own): the freeze lasts about as long
    // as the largest dump, not the sum. At most as many at once as there are CPUs.
    // Then, one at a time, those a dump must stop (they share a cgroup, or podman).
    let parallel: Vec<usize> = (0..order.len())
        .filter(|&i| frozen_by_us(order[i]))
        .collect();
    let at_once = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    let mut outcomes: Vec<Option<(DumpOptions, DumpOutcome)>> =
        (0..order.len()).map(|_| None).collect();
    for batch in parallel.chunks(at_once) {
        for &i in batch {
            progress(Step::Dumping(order[i].name.as_str()));
        }
        let done: Vec<_> = std::thread::scope(|scope| {
            let running: Vec<_> = batch
                .iter()
                .map(|&i| {
                    let dump_one = &dump_one;
                    let w = order[i];
                    let mut dopts = final_options(w, true);
                    scope.spawn(move || {
                        let r = dump_one(w, &mut dopts, true);
                        (i, dopts, r)
                    })
                })
                .collect();
            running
                .into_iter()
                .map(|h| h.join().expect("a dump thread panicked"))
                .collect()
        });
        for (i, dopts, r) in done {
            outcomes[i] = Some((dopts, r));
        }
    }
    if !parallel.is_empty() {
        // Some workloads are dumped, maybe others are not yet: the mid-dump fault.
        if let Err(e) = faults::point("checkpoint::dump") {
            drop(frozen);
            abandon(pending);
            release_all();
            return Err(Error::DumpFailed {
                workload: order[parallel[0]].name.to_string(),
                source: Box::new(e),
            });
        }
    }

    let mut reports = Vec::new();
    let mut stopped_by_dump: Option<(&Resolved, PathBuf, BTreeMap<String, String>)> = None;
    for (i, (w, pre_dump_run)) in order.iter().zip(&pre_dumps).enumerate() {
        // Only a workload we could not freeze is dumped by a dump that stops it.
        let leave_running = opts.leave_running || frozen_by_us(w);
        let (dopts, result) = match outcomes[i].take() {
            Some(done) => done,
            None => {
                let mut dopts = final_options(w, leave_running);
                progress(Step::Dumping(w.name.as_str()));
                let r = dump_one(w, &mut dopts, leave_running);
                (dopts, r)
            }
        };
        match result {
            Ok((images, secs, socket_dirs)) => {
                let mut options = mw_options(&dopts, w, &socket_dirs);
                record_pre_dumps(&mut options, pre_dump_run);
                reports.push(WorkloadReport {
                    name: w.name.to_string(),
                    dump_secs: secs,
                    image_bytes: dir_bytes(&images),
                    pre_dump_bytes: pre_dump_run.bytes.clone(),
                    pre_dump_stop: (!pre_dump_run.bytes.is_empty()).then_some(pre_dump_run.stop),
                });
                if !leave_running {
                    stopped_by_dump = Some((w, images, options.clone()));
                }
                let mut mw = Workload::new(w.name.clone(), w.kind, w.root_pid);
                mw.pids = w.pids.clone();
                mw.unit = w.unit.clone();
                mw.cgroup = w.cgroup.clone();
                mw.command_line = w.command_line.clone();
                mw.options = options;
                mw.state = WorkloadState::Pending;
                manifest.workloads.push(mw);
            }
            Err(e) => {
                // CRIU resumed the failed tree; thaw the others and drop the images.
                // (A stopping dump comes after every other: none has run yet.)
                drop(frozen);
                abandon(pending);
                release_all();
                return Err(Error::DumpFailed {
                    workload: w.name.to_string(),
                    source: Box::new(e),
                });
            }
        }
    }
    let frozen_secs = t_freeze.elapsed().as_secs_f64();

    let t_commit = Instant::now();
    progress(Step::Committing);
    let pending_path = pending.path().to_owned();
    // Until the stopped workload is back from them, the pending images stay locked.
    let _hold = pending.hold();
    let committed = faults::point("checkpoint::commit").and_then(|()| pending.commit(manifest));
    let manifest = match committed {
        Ok(m) => m,
        Err(e) => {
            drop(frozen);
            release_all();
            if let Some((w, images, options)) = stopped_by_dump {
                // Its only copy is in the pending images: bring it back now.
                warn!(workload = %w.name, "commit failed; restoring the stopped workload from the pending images");
                let logs = log_dir(&gen, w.name.as_str())?;
                let recovered = restore_images(criu, &images, &logs, &options, w.unit.as_deref())
                    .map(|tree| {
                        if let Some(m) = &tree.machine {
                            settle_machine(m, &tree);
                        }
                    });
                if let Err(re) = recovered {
                    return Err(Error::CommitAndRecoveryFailed {
                        workload: w.name.to_string(),
                        pending: pending_path,
                        commit: Box::new(e),
                        restore: Box::new(re),
                    });
                }
            }
            // Every workload runs again: the half-written generation goes (a commit
            // that failed in its rename may have left it; the next start would too).
            if pending_path.symlink_metadata().is_ok() {
                if let Err(re) = crate::fsutil::remove_any(&pending_path) {
                    warn!(path = %pending_path.display(), error = %re, "could not remove the uncommitted generation");
                }
            }
            return Err(e);
        }
    };
    let commit_secs = t_commit.elapsed().as_secs_f64();

    if !opts.leave_running {
        // Committed: the frozen workloads' only state that matters is in the images.
        for w in order.iter().filter(|w| frozen_by_us(w)) {
            kill_tree(w);
        }
    }
    drop(frozen);
    for unit in &services {
        wait_cgroup_empty(order.iter().find(|w| w.unit.as_deref() == Some(*unit)));
        service::settle_stopped(unit);
        service::release(unit);
    }
    Ok(CheckpointReport {
        manifest,
        frozen_secs,
        commit_secs,
        workloads: reports,
    })
}

/// The pre-flight's proof that CRIU can dump `w`: a real dump with leave-running into
/// `scratch` (which the caller creates on the area's file system, so the space check
/// and the dump see the same disk, and removes afterwards). The workload is paused
/// only while CRIU copies it; nothing is committed. Returns the bytes the images took.
pub fn dry_run(
    criu: &Criu,
    w: &Resolved,
    opts: &CheckpointOptions,
    scratch: &Path,
) -> Result<u64, Error> {
    let mut dopts = dump_options(w, opts, true);
    dopts.external = service::external_resources(&w.pids)?;
    let logs = Path::new(LOG_ROOT).join("dry-run").join(w.name.as_str());
    crate::fsutil::create_private_dir_all(&logs)?;
    if let Target::Podman { container } = &w.target {
        podman::checkpoint(container, scratch, true, opts.tcp_established)?;
    } else {
        criu.dump(&dopts, scratch, &logs)?;
    }
    Ok(dir_bytes(scratch))
}

/// Waits (briefly) until the killed processes of `w` are gone, so systemd has seen its
/// service stop before the hold on restarts is lifted.
fn wait_cgroup_empty(w: Option<&&Resolved>) {
    let Some(w) = w else { return };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if w.pids
            .iter()
            .all(|p| !Path::new("/proc").join(p.to_string()).exists())
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // systemd notices the main process's death asynchronously.
    std::thread::sleep(Duration::from_millis(300));
}

fn kill_tree(w: &Resolved) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    for &pid in &w.pids {
        // Gone already is fine: it was part of the dumped tree.
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}

fn abandon(pending: crate::area::PendingGeneration) {
    let path = pending.path().to_owned();
    if let Err(e) = pending.abandon() {
        warn!(path = %path.display(), error = %e, "could not remove the abandoned generation; `upgradectl images` cleans it up");
    }
}

/// Fails if a PID the generation needs is in use, naming it and its holder.
pub fn check_pids_free(manifest: &Manifest) -> Result<(), Error> {
    // Podman and nspawn containers are restored into PID namespaces of their own: the
    // host-side PIDs they had before need not be free.
    for w in manifest
        .workloads
        .iter()
        .filter(|w| !matches!(w.kind, WorkloadKind::Podman | WorkloadKind::Nspawn))
    {
        for &pid in &w.pids {
            let comm = Path::new("/proc").join(pid.to_string()).join("comm");
            if let Ok(holder) = std::fs::read_to_string(&comm) {
                return Err(Error::PidTaken {
                    workload: w.name.to_string(),
                    pid,
                    holder: holder.trim().to_owned(),
                });
            }
        }
    }
    Ok(())
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    pub name: String,
    pub pid: u32,
    pub restore_secs: f64,
    /// The scope systemd now shows the workload in, if it was placed in one.
    pub scope: Option<String>,
}

/// Builds the command a service runs as its start to restore workload `name` of a
/// generation, writing the restored PID to the given file (see [`service`]).
pub type ServiceRestoreCmd<'a> = &'a dyn Fn(&GenerationId, &str, &Path) -> Vec<String>;

/// Restores one workload's tree with CRIU where the caller runs. The caller has
/// verified the images.
pub fn restore_tree(
    area: &Area,
    criu: &Criu,
    gen: &GenerationId,
    w: &Workload,
) -> Result<RestoredTree, Error> {
    let images = area.generation_path(gen).join(w.name.as_str());
    let logs = log_dir(gen, w.name.as_str())?;
    restore_images(criu, &images, &logs, &w.options, w.unit.as_deref()).map_err(|e| {
        Error::RestoreFailed {
            workload: w.name.to_string(),
            source: Box::new(e),
        }
    })
}

/// Restores the named workloads (all when `names` is empty) of generation `gen`, after
/// verifying every image and checking that no PID they need is taken. Services are
/// restored through their unit with `service_restore_cmd`; without one they are
/// restored like any other tree.
pub fn restore(
    area: &Area,
    criu: &Criu,
    gen: &GenerationId,
    names: &[String],
    service_restore_cmd: Option<ServiceRestoreCmd>,
    progress: &mut dyn FnMut(Step),
) -> Result<Vec<RestoreReport>, Error> {
    progress(Step::Verifying);
    let verified = area.verified(gen)?;
    restore_verified(area, criu, &verified, names, service_restore_cmd, progress)
}

/// [`restore`] of a generation verified already.
pub fn restore_verified(
    area: &Area,
    criu: &Criu,
    verified: &Verified,
    names: &[String],
    service_restore_cmd: Option<ServiceRestoreCmd>,
    progress: &mut dyn FnMut(Step),
) -> Result<Vec<RestoreReport>, Error> {
    let manifest = verified.manifest();
    let gen = &manifest.generation;
    let selected: Vec<&Workload> = manifest
        .workloads
        .iter()
        .filter(|w| names.is_empty() || names.iter().any(|n| n == w.name.as_str()))
        .collect();
    for n in names {
        if !manifest.workloads.iter().any(|w| w.name.as_str() == n) {
            return Err(Error::WorkloadNotInGeneration {
                workload: n.clone(),
                generation: gen.to_string(),
            });
        }
    }
    let only = Manifest {
        workloads: selected.iter().map(|w| (*w).clone()).collect(),
        ..manifest.clone()
    };
    check_pids_free(&only)?;

    let mut reports = Vec::new();
    for w in selected {
        if !reports.is_empty() {
            // Between two workloads' restores: the mid-restore fault of the matrix.
            faults::point("restore::mid")?;
        }
        let t = Instant::now();
        info!(workload = %w.name, "restoring");
        progress(Step::Restoring(w.name.as_str()));
        let (pid, scope) = match (&w.kind, &w.unit, &service_restore_cmd) {
            (WorkloadKind::Service, Some(unit), Some(make_cmd)) => {
                let pid_file = Path::new(service::PID_DIR).join(format!("{unit}.pid"));
                crate::fsutil::create_private_dir_all(Path::new(service::PID_DIR))?;
                let cmd = make_cmd(gen, w.name.as_str(), &pid_file);
                let pid = service::start_restored(unit, &cmd, &pid_file).map_err(|e| {
                    Error::RestoreFailed {
                        workload: w.name.to_string(),
                        source: Box::new(e),
                    }
                })?;
                (pid, Some(unit.clone()))
            }
            _ => {
                let tree = restore_tree(area, criu, gen, w)?;
                let scope = match &tree.machine {
                    Some(m) => settle_machine(m, &tree),
                    None => place_in_scope(w, &tree),
                };
                (tree.pid, scope)
            }
        };
        let restore_secs = t.elapsed().as_secs_f64();
        area.update(gen, |m| {
            if let Some(mw) = m.workloads.iter_mut().find(|x| x.name == w.name) {
                mw.state = WorkloadState::Restored;
            }
            if m.workloads
                .iter()
                .all(|x| x.state == WorkloadState::Restored)
            {
                m.state = GenerationState::Restored;
            }
        })?;
        reports.push(RestoreReport {
            name: w.name.to_string(),
            pid,
            restore_secs,
            scope,
        });
    }
    Ok(reports)
}

/// Puts a restored machine (its tree as it is now, in its own PID namespace, and its
/// console reader) into `machine-<name>.scope` and registers it with machined again.
/// Returns the scope; a failure leaves the machine running, with a warning.
fn settle_machine((machine, root): &(String, PathBuf), tree: &RestoredTree) -> Option<String> {
    let scope = crate::nspawn::scope(machine);
    let placed = place_tree(
        &scope,
        tree,
        &format!("Container {machine} (restored by upgraded)"),
        &crate::nspawn::scope_properties(tree.pid),
    );
    if let Err(e) = &placed {
        warn!(machine, scope = %scope, error = %e, "restored, but could not place the machine in a scope");
    }
    crate::nspawn::register(machine, tree.pid, &root.to_string_lossy());
    placed.ok().map(|()| scope)
}

/// Starts transient scope `scope` with the restored `tree` in it. The scope starts with
/// the long-lived processes only (the root and its helpers): systemd fails a scope
/// whose PIDs vanish while it moves them (Result: resources), and a workload's
/// short-lived ones (a shell's `sleep`) do. The rest follow through cgroup.procs.
fn place_tree(
    scope: &str,
    tree: &RestoredTree,
    description: &str,
    extra: &[[String; 3]],
) -> Result<(), Error> {
    let mut first = vec![tree.pid];
    first.extend(&tree.helpers);
    start_scope(scope, &first, description, extra)?;
    gather_into_scope(scope, tree.pid)
}

/// Moves every process of the tree of `root` that is outside `scope`'s cgroup into it,
/// until none is left (a process forks while its parent moves).
fn gather_into_scope(scope: &str, root: u32) -> Result<(), Error> {
    // systemd makes the cgroup when its start job runs, just after the call returns.
    let mut cgroup = String::new();
    for _ in 0..50 {
        cgroup = cmd::run(
            "systemctl",
            ["show", "--property=ControlGroup", "--value", "--", scope],
        )?
        .trim()
        .to_owned();
        if !cgroup.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if cgroup.is_empty() {
        return Err(Error::CgroupPath {
            cgroup: scope.to_owned(),
            reason: "systemd made no cgroup for the scope within 5 s".into(),
        });
    }
    let mount = crate::freezer::Cgroup2Mount::discover()?;
    let inside = |c: &Option<String>| {
        c.as_deref()
            .is_some_and(|c| c == cgroup || c.starts_with(&format!("{cgroup}/")))
    };
    for _ in 0..5 {
        let table = crate::proc::ProcessTable::scan()?;
        let outside: Vec<u32> = table
            .descendants(root)
            .into_iter()
            .filter(|&p| table.get(p).is_some_and(|e| !inside(&e.cgroup)))
            .collect();
        if outside.is_empty() {
            return Ok(());
        }
        for pid in outside {
            // One that exited meanwhile is no loss.
            if let Err(e) = mount.move_into(&cgroup, pid) {
                tracing::debug!(pid, error = %e, "not moved into the machine's scope");
            }
        }
    }
    Ok(())
}

/// Puts a restored tree into a systemd scope so `systemctl status` shows it again:
/// its old scope's name when that is free, else `upgraded-<name>.scope`. A failure
/// here leaves the workload running where CRIU put it, with a warning.
fn place_in_scope(w: &Workload, tree: &RestoredTree) -> Option<String> {
    if matches!(w.kind, WorkloadKind::Service | WorkloadKind::Podman) {
        // Services are taken back by their own unit; podman puts containers in scopes
        // of its own.
        return None;
    }
    let preferred = w
        .unit
        .clone()
        .filter(|u| u.ends_with(".scope"))
        .unwrap_or_else(|| format!("upgraded-{}.scope", sanitize_unit(w.name.as_str())));
    match place_tree(
        &preferred,
        tree,
        &format!("{} (restored by upgraded)", w.name),
        &[],
    ) {
        Ok(()) => Some(preferred),
        Err(e) => {
            warn!(workload = %w.name, scope = %preferred, error = %e, "restored, but could not place it in a scope");
            None
        }
    }
}

/// Starts transient scope `scope` with the running processes `pids`.
/// `extra`: more properties, as busctl takes them (name, signature, value).
fn start_scope(
    scope: &str,
    pids: &[u32],
    description: &str,
    extra: &[[String; 3]],
) -> Result<(), Error> {
    let mut args: Vec<String> = vec![
        "call".into(),
        "org.freedesktop.systemd1".into(),
        "/org/freedesktop/systemd1".into(),
        "org.freedesktop.systemd1.Manager".into(),
        "StartTransientUnit".into(),
        "ssa(sv)a(sa(sv))".into(),
        scope.to_owned(),
        "fail".into(),
        (2 + extra.len()).to_string(),
        "PIDs".into(),
        "au".into(),
        pids.len().to_string(),
    ];
    args.extend(pids.iter().map(|p| p.to_string()));
    args.extend(["Description".into(), "s".into(), description.to_owned()]);
    args.extend(extra.iter().flatten().cloned());
    args.push("0".into());
    cmd::run("busctl", &args).map(|_| ())
}

/// A unit-name-safe form of a workload name (systemd allows [A-Za-z0-9:_.\\-]).
fn sanitize_unit(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_container_values_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        assert_eq!(recorded_root(Some(root)).unwrap(), dir.path());
        for bad in [
            None,
            Some(""),
            Some("relative/dir"),
            Some("/var/lib/machines/../../etc"),
            Some("/tmp/./x"),
            Some("/tmp/."),
            Some("/nonexistent/upgraded-test"),
        ] {
            let err = recorded_root(bad).unwrap_err().to_string();
            assert!(
                err.contains("root") && err.contains("refused"),
                "{bad:?}: {err}"
            );
        }
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        assert!(recorded_root(file.to_str()).is_err());

        assert_eq!(recorded_machine("tiny").unwrap(), "tiny");
        for bad in ["", "../x", "a/b", "-x", "a\nb", &"m".repeat(65)] {
            assert!(recorded_machine(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cpu_info_takes_the_first_processor() {
        let text = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 85\nmodel name\t: Xeon\nflags\t\t: fpu sse\n\nprocessor\t: 1\nvendor_id\t: Other\n";
        let m = cpu_info(text);
        assert_eq!(m["vendor_id"], "GenuineIntel");
        assert_eq!(m["cpu_family"], "6");
        assert_eq!(m["model_name"], "Xeon");
        assert_eq!(m["flags"], "fpu sse");
    }

    #[test]
    fn generation_ids_are_valid_and_distinct() {
        let a = new_generation_id("6.1.0-50-amd64").unwrap();
        let b = new_generation_id("6.1.0-50-amd64").unwrap();
        assert_ne!(a, b);
        assert!(a.as_str().ends_with("-6.1.0-50-amd64"), "{a}");
    }

    fn resolved(name: &str, target: Target) -> Resolved {
        Resolved {
            name: crate::manifest::WorkloadName::new(name).unwrap(),
            kind: WorkloadKind::Tmux,
            target,
            root_pid: 100,
            pids: vec![100, 101],
            unit: None,
            cgroup: Some("/a.scope".into()),
            command_line: vec!["tmux".into()],
            rss_bytes: 0,
            owns_cgroup: true,
            session_leader: true,
            uses_tty: true,
            root_dir: None,
        }
    }

    #[test]
    fn pre_dumps_chain_through_parent_links() {
        let w = resolved("tmux:a", Target::Process { pid: 100 });
        let o = CheckpointOptions {
            tcp_established: true,
            pre_dump: 3.into(),
            ..Default::default()
        };
        let first = pre_dump_options(&w, &o, 1);
        assert!(first.track_mem && first.leave_running && first.tcp_established);
        assert_eq!(first.parent, None);
        assert_eq!(first.freeze_cgroup, None);
        assert_eq!(
            pre_dump_options(&w, &o, 2).parent.as_deref(),
            Some("../pre-1")
        );
        assert_eq!(
            pre_dump_options(&w, &o, 3).parent.as_deref(),
            Some("../pre-2")
        );

        let mut last = dump_options(&w, &o, false);
        chain_final_dump(&mut last, 3);
        assert!(last.track_mem && !last.leave_running);
        assert_eq!(last.parent.as_deref(), Some("pre-3"));
        let mut plain = dump_options(&w, &o, false);
        chain_final_dump(&mut plain, 0);
        assert!(!plain.track_mem && plain.parent.is_none());

        let mut options = BTreeMap::new();
        let run = |bytes: &[u64], stop| PreDumpRun {
            bytes: bytes.to_vec(),
            stop,
        };
        record_pre_dumps(&mut options, &run(&[], predump::Stop::Count));
        assert!(options.is_empty());
        record_pre_dumps(
            &mut options,
            &run(&[8_388_608, 40_960, 4096], predump::Stop::Converged),
        );
        assert_eq!(options["pre_dump"], "3");
        assert_eq!(options["pre_dump_bytes"], "8388608,40960,4096");
        assert_eq!(options["pre_dump_stop"], "converged");
    }

    #[test]
    fn pre_dump_requests_are_refused_before_anything_runs() {
        let dir = tempfile::tempdir().unwrap();
        let area = Area::open(dir.path()).unwrap();
        // Never run: the refusals come first.
        let criu = Criu::at("/nonexistent/criu");
        let mut steps = 0;
        let mut progress = |_: Step| steps += 1;

        let tmux = resolved("tmux:a", Target::Process { pid: 100 });
        let too_many = CheckpointOptions {
            pre_dump: PreDumps::Fixed(MAX_PRE_DUMPS + 1),
            ..Default::default()
        };
        let err = checkpoint(
            &area,
            &criu,
            std::slice::from_ref(&tmux),
            &too_many,
            &mut progress,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                Error::TooManyPreDumps {
                    requested: 17,
                    max: 16
                }
            ),
            "{err:?}"
        );

        let podman = resolved(
            "podman:web",
            Target::Podman {
                container: "web".into(),
            },
        );
        let one = CheckpointOptions {
            pre_dump: 1.into(),
            ..Default::default()
        };
        let err = checkpoint(&area, &criu, &[tmux, podman], &one, &mut progress).unwrap_err();
        assert!(
            matches!(&err, Error::WorkloadUnsupported { workload, .. } if workload.as_str() == "podman:web"),
            "{err:?}"
        );
        assert!(err.to_string().contains("pre-dump"), "{err}");
        assert_eq!(steps, 0);
        assert!(std::fs::read_dir(dir.path().join("generations"))
            .unwrap()
            .next()
            .is_none());
    }

    #[test]
    fn unit_names_are_sanitized() {
        assert_eq!(sanitize_unit("tmux@main"), "tmux_main");
        assert_eq!(sanitize_unit("a:b-c.d"), "a:b-c.d");
    }
}
