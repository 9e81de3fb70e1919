//! Checkpoint, restore, suspend, resume and image commands, run in-process by
//! `upgradectl` (the daemon will run the same functions behind D-Bus).

use std::io::Write;

use anyhow::{bail, Context, Result};
use dumper::area::Area;
use dumper::checkpoint::{self, CheckpointOptions};
use dumper::criu::Criu;
use dumper::manifest::{GenerationId, GenerationState, Manifest, WorkloadName};
use dumper::workload::{self, Target};
use serde_json::json;

use crate::config::{AreaLocation, Selector, Settings};

mod sealed;
pub use sealed::{
    is_lock_held, staged_suspends, Staging, SEALING_DIR, SUSPEND_LOCK, UNSEALING_DIR,
};

/// Opens the configured area.
///
/// Every command that touches the area comes here (docs/area.md), the daemon and the
/// boot side too. A disk or pmem area is checked and mounted on
/// [`crate::area_device::MOUNT_POINT`] unless it is mounted there already; it is never
/// formatted here (the boot side after a kexec must not destroy the images it is about
/// to restore): one that holds no file system is refused with
/// [`crate::area_device::DeviceError::NoFileSystem`], which `upgradectl area init` and
/// the daemon's start-up act on. Then the same checks as a directory area.
///
/// For a directory area, a path below a mount point of /etc/fstab where nothing is
/// mounted is refused before anything is created. The area directory itself is created (0700) when its parent exists; a
/// missing parent is left to [`Area::open`]'s "does not exist" (a mistyped area.path,
/// or a file system that is not there), since creating the whole path would put the
/// images on whatever file system holds its first existing ancestor. A read-only or
/// full area opens, so that its generations can still be listed and verified;
/// [`Area::begin`] refuses it before a checkpoint freezes anything.
pub fn open_area(settings: &Settings) -> Result<Area> {
    match &settings.area.location {
        AreaLocation::Directory { path } => {
            let opening = || format!("opening the area {}", path.display());
            dumper::area::check_mounted(path).with_context(opening)?;
            if !path.exists() && path.parent().is_some_and(std::path::Path::is_dir) {
                use std::os::unix::fs::DirBuilderExt;
                match std::fs::DirBuilder::new().mode(0o700).create(path) {
                    Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                        return Err(e).with_context(|| {
                            format!("creating the area directory {}", path.display())
                        })
                    }
                    _ => {}
                }
            }
            Area::open(path).with_context(opening)
        }
        AreaLocation::Disk { device } => open_device_area(crate::area_device::DeviceSpec {
            kind: crate::config::AreaKind::Disk,
            device: device.clone(),
            memmap: None,
        }),
        AreaLocation::Pmem { device, memmap } => open_device_area(crate::area_device::DeviceSpec {
            kind: crate::config::AreaKind::Pmem,
            device: device.clone(),
            memmap: *memmap,
        }),
    }
}

/// [`open_area`] of a disk or pmem area: mounted (never formatted), then opened.
fn open_device_area(spec: crate::area_device::DeviceSpec) -> Result<Area> {
    let mounted = crate::area_device::open(&crate::area_device::Host::system(), &spec)?;
    Area::open(&mounted.root).with_context(|| {
        format!(
            "opening the area {} (the {} area {})",
            mounted.root.display(),
            spec.kind,
            spec.device.display()
        )
    })
}

/// Turns a configured selector into discovery's target.
pub fn target_of(selector: &Selector) -> Target {
    match selector {
        Selector::Process { pid } => Target::Process { pid: *pid },
        Selector::Service { unit } => Target::Service { unit: unit.clone() },
        Selector::Scope { unit } => Target::Scope { unit: unit.clone() },
        Selector::Session { session } => Target::Session {
            id: session.clone(),
        },
        Selector::Tmux { socket } => Target::Tmux {
            socket: socket.clone(),
        },
        Selector::Screen { screen } => Target::Screen {
            session: screen.clone(),
        },
        Selector::Podman { container } => Target::Podman {
            container: container.clone(),
        },
        Selector::Nspawn { machine } => Target::Nspawn {
            machine: machine.clone(),
        },
    }
}

/// A workload named on the command line: a configured workload's name, or an ad-hoc
/// `KIND:SELECTOR` such as `process:1234`, `tmux:default` or `service:foo.service`.
pub fn parse_workload_arg(settings: &Settings, arg: &str) -> Result<(WorkloadName, Target)> {
    if let Some(w) = settings.workload(arg) {
        let name = WorkloadName::new(arg).with_context(|| format!("workload name {arg:?}"))?;
        return Ok((name, target_of(&w.selector)));
    }
    let Some((kind, value)) = arg.split_once(':') else {
        bail!(
            "no workload named {arg:?} in the configuration; name a configured workload \
             (`upgradectl config show`) or give KIND:SELECTOR, e.g. process:1234, \
             tmux:default, service:foo.service"
        );
    };
    let kind: dumper::manifest::WorkloadKind = kind.parse().map_err(|_| {
        anyhow::anyhow!(
            "unknown workload kind {kind:?} in {arg:?}; kinds: process, service, scope, \
             session, tmux, screen, podman, nspawn"
        )
    })?;
    let target =
        workload::parse_target(kind, value).with_context(|| format!("workload {arg:?}"))?;
    let name = WorkloadName::new(arg).with_context(|| format!("workload name {arg:?}"))?;
    Ok((name, target))
}

pub struct CheckpointArgs<'a> {
    pub names: &'a [String],
    pub leave_running: bool,
    pub tcp_established: bool,
    /// Pre-dumps before the freeze.
    pub pre_dump: dumper::predump::PreDumps,
}

pub fn checkpoint(
    settings: &Settings,
    args: CheckpointArgs,
    json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let progress = Progress::new(json);
    let area = open_area(settings)?;
    // An interrupted dump is never offered for restore.
    area.cleanup_incomplete()
        .context("cleaning up interrupted generations")?;
    let criu = Criu::locate()?;
    let mut resolved = Vec::new();
    for arg in args.names {
        let (name, target) = parse_workload_arg(settings, arg)?;
        let tcp = settings
            .workload(arg)
            .map(|w| w.tcp_established)
            .unwrap_or(false);
        let r =
            workload::resolve(&name, &target).with_context(|| format!("finding workload {arg}"))?;
        resolved.push((r, tcp));
    }
    let tcp_established = args.tcp_established || resolved.iter().any(|(_, t)| *t);
    let resolved: Vec<_> = resolved.into_iter().map(|(r, _)| r).collect();
    let report = checkpoint::checkpoint(
        &area,
        &criu,
        &resolved,
        &CheckpointOptions {
            leave_running: args.leave_running,
            tcp_established,
            kernel_features: crate::boot::compat::running_features(),
            pre_dump: args.pre_dump,
            ..Default::default()
        },
        &mut progress.step(),
    )?;
    progress.finish();
    let gen = report.manifest.generation.to_string();
    if json {
        let w: Vec<_> = report
            .workloads
            .iter()
            .map(|w| {
                json!({"name": w.name, "dump_secs": w.dump_secs, "image_bytes": w.image_bytes,
                       "pre_dump_bytes": w.pre_dump_bytes,
                       "pre_dump_stop": w.pre_dump_stop.map(|s| s.as_str())})
            })
            .collect();
        writeln!(
            out,
            "{}",
            json!({"generation": gen, "frozen_secs": report.frozen_secs,
                   "commit_secs": report.commit_secs, "workloads": w})
        )?;
    } else {
        for w in &report.workloads {
            writeln!(
                out,
                "checkpointed {}: {} in {:.2} s{}{}",
                w.name,
                human_bytes(w.image_bytes),
                w.dump_secs,
                pre_dumps_text(&w.pre_dump_bytes),
                w.pre_dump_stop
                    .map(|s| format!(" (stopped: {s})"))
                    .unwrap_or_default()
            )?;
        }
        writeln!(
            out,
            "generation {gen} committed ({:.2} s frozen, commit {:.2} s){}",
            report.frozen_secs,
            report.commit_secs,
            if args.leave_running {
                "; workloads left running"
            } else {
                ""
            }
        )?;
    }
    Ok(())
}

/// What the pre-dumps wrote, for the line of a checkpointed workload.
fn pre_dumps_text(bytes: &[u64]) -> String {
    if bytes.is_empty() {
        return String::new();
    }
    let each: Vec<String> = bytes.iter().map(|&b| human_bytes(b)).collect();
    format!(
        ", after {} pre-dump{}: {}",
        bytes.len(),
        if bytes.len() == 1 { "" } else { "s" },
        each.join(", ")
    )
}

/// The newest committed generation, or the one named.
fn pick_generation(area: &Area, wanted: Option<&str>) -> Result<GenerationId> {
    if let Some(g) = wanted {
        return GenerationId::new(g).with_context(|| format!("generation {g:?}"));
    }
    let mut gens = area.list()?;
    gens.sort();
    gens.pop()
        .context("the area holds no committed generation; `upgradectl checkpoint` makes one")
}

pub fn restore(
    settings: &Settings,
    generation: Option<&str>,
    names: &[String],
    json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let area = open_area(settings)?;
    let gen = pick_generation(&area, generation)?;
    let criu = Criu::locate()?;
    let progress = Progress::new(json);
    let reports = checkpoint::restore(
        &area,
        &criu,
        &gen,
        names,
        Some(&service_restore_cmd(&area)?),
        &mut progress.step(),
    )
    .with_context(|| format!("restoring generation {gen}"))?;
    print_restored(&gen, &reports, json, out)
}

/// The start command a service runs to restore itself: this very program's hidden
/// `internals restore-unit`.
fn service_restore_cmd(
    area: &Area,
) -> Result<impl Fn(&GenerationId, &str, &std::path::Path) -> Vec<String>> {
    let exe = std::env::current_exe().context("finding the path of upgradectl")?;
    Ok(service_restore_cmd_for(exe, area))
}

/// [`service_restore_cmd`] for a given `upgradectl` (the daemon is another program).
pub fn service_restore_cmd_for(
    exe: std::path::PathBuf,
    area: &Area,
) -> impl Fn(&GenerationId, &str, &std::path::Path) -> Vec<String> {
    let area = area.root().to_owned();
    move |gen: &GenerationId, name: &str, pid_file: &std::path::Path| {
        vec![
            exe.to_string_lossy().into_owned(),
            "internals".into(),
            "restore-unit".into(),
            "--area".into(),
            area.to_string_lossy().into_owned(),
            "--generation".into(),
            gen.to_string(),
            "--workload".into(),
            name.to_owned(),
            "--pid-file".into(),
            pid_file.to_string_lossy().into_owned(),
        ]
    }
}

/// Run by systemd as a service's start command (see `dumper::service`): restores the
/// workload's tree into the service's cgroup and leaves its PID for systemd.
pub fn internals_restore_unit(
    area: &std::path::Path,
    generation: &str,
    workload: &str,
    pid_file: &std::path::Path,
) -> Result<()> {
    let area = Area::open(area).with_context(|| format!("opening the area {}", area.display()))?;
    let gen =
        GenerationId::new(generation).with_context(|| format!("generation {generation:?}"))?;
    // The manifest's own checksum is checked here; the images were verified by the
    // caller that started this unit, just before.
    let manifest = area.load(&gen)?;
    let w = manifest
        .workloads
        .iter()
        .find(|w| w.name.as_str() == workload)
        .with_context(|| format!("generation {gen} has no workload {workload:?}"))?;
    let criu = Criu::locate()?;
    let pid = checkpoint::restore_tree(&area, &criu, &gen, w)?.pid;
    std::fs::write(pid_file, format!("{pid}\n"))
        .with_context(|| format!("writing {}", pid_file.display()))?;
    Ok(())
}

fn print_restored(
    gen: &GenerationId,
    reports: &[checkpoint::RestoreReport],
    json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    if json {
        let w: Vec<_> = reports
            .iter()
            .map(|r| json!({"name": r.name, "pid": r.pid, "restore_secs": r.restore_secs, "scope": r.scope}))
            .collect();
        writeln!(
            out,
            "{}",
            json!({"generation": gen.to_string(), "workloads": w})
        )?;
    } else {
        for r in reports {
            writeln!(
                out,
                "restored {} from {gen}: PID {} in {:.2} s{}",
                r.name,
                r.pid,
                r.restore_secs,
                r.scope
                    .as_ref()
                    .map(|s| format!(", in {s}"))
                    .unwrap_or_default()
            )?;
        }
    }
    Ok(())
}

/// Hibernate one workload: checkpoint it and stop it. With `suspend.encrypt` or
/// `suspend.compress`, the images are sealed into one file (encrypted with the suspend
/// key, compressed, or both) before they reach the area (see [`sealed`]); the JSON
/// form then also has `"sealed"`, the sealed file.
pub fn suspend(settings: &Settings, name: &str, json: bool, out: &mut dyn Write) -> Result<()> {
    if settings.suspend.seals() {
        return sealed::suspend(settings, &Staging::system(), name, json, out);
    }
    checkpoint(
        settings,
        CheckpointArgs {
            names: &[name.to_owned()],
            leave_running: false,
            tcp_established: false,
            pre_dump: dumper::predump::PreDumps::None,
        },
        json,
        out,
    )
}

/// Bring back a suspended workload from the newest generation that holds it
/// unrestored, plain or sealed (sealed ones are unsealed in memory first, with the
/// suspend key); this works after a power-off too, from a disk-backed area.
pub fn resume(settings: &Settings, name: &str, json: bool, out: &mut dyn Write) -> Result<()> {
    sealed::resume(settings, &Staging::system(), name, json, out)
}

/// `upgradectl suspend-key generate`: writes a new suspend key to `path` (never over
/// an existing file) and prints the path and the public key. `configured` is the
/// `[suspend]` table when the configuration could be read, for a hint on turning
/// encryption on.
pub fn suspend_key_generate(
    path: &std::path::Path,
    configured: Option<&crate::config::SuspendSettings>,
    json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let key = dumper::seal::SealKey::generate(path)
        .with_context(|| format!("writing a new suspend key to {}", path.display()))?;
    if json {
        writeln!(
            out,
            "{}",
            json!({"key_file": key.path(), "public_key": key.public_key()})
        )?;
        return Ok(());
    }
    writeln!(
        out,
        "wrote a new suspend key to {} (mode 0600)",
        key.path().display()
    )?;
    writeln!(out, "public key: {}", key.public_key())?;
    writeln!(
        out,
        "back it up away from this machine's disks: sealed suspend images cannot be resumed \
         without it"
    )?;
    match configured {
        Some(s) if s.key_file != path => writeln!(
            out,
            "the configuration seals with {}; set key_file = \"{}\" in [suspend] to use this \
             key",
            s.key_file.display(),
            path.display()
        )?,
        Some(s) if !s.encrypt => writeln!(
            out,
            "set encrypt = true in [suspend] to seal suspend images with it"
        )?,
        _ => {}
    }
    Ok(())
}

/// A spinner on stderr with the current step, when stderr is a terminal and the output
/// is not JSON; nothing otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn new(json: bool) -> Progress {
        use std::io::IsTerminal;
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        Progress { bar }
    }

    fn step(&self) -> impl FnMut(checkpoint::Step) + '_ {
        move |step| {
            if let Some(bar) = &self.bar {
                bar.set_message(match step {
                    checkpoint::Step::PreDumping(w, i) => format!("pre-dumping {w} ({i})"),
                    checkpoint::Step::Freezing => "freezing".to_owned(),
                    checkpoint::Step::Dumping(w) => format!("dumping {w}"),
                    checkpoint::Step::Committing => "committing (checksums, sync)".to_owned(),
                    checkpoint::Step::Verifying => "verifying images".to_owned(),
                    checkpoint::Step::Restoring(w) => format!("restoring {w}"),
                });
            }
        }
    }

    /// Shows a step that is not one of [`checkpoint::Step`].
    fn say(&self, what: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(what.to_owned());
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn manifest_bytes(m: &Manifest) -> u64 {
    m.workloads
        .iter()
        .flat_map(|w| w.images.iter())
        .map(|i| i.size)
        .sum()
}

fn state_str(s: GenerationState) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{s:?}").to_lowercase())
}

/// `upgradectl images list`: the generations of the area, its sealed files, and what
/// sealed suspends left in their staging area in memory (marked: a reboot loses it).
pub fn images_list(settings: &Settings, json: bool, out: &mut dyn Write) -> Result<()> {
    images_list_in(settings, &Staging::system(), json, out)
}

/// [`images_list`] with the staging area of `staging`.
fn images_list_in(
    settings: &Settings,
    staging: &Staging,
    json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let area = open_area(settings)?;
    let mut gens = area.list()?;
    gens.sort();
    let mut rows = Vec::new();
    for g in &gens {
        match area.load(g) {
            Ok(m) => rows.push(json!({
                "generation": g.to_string(),
                "state": state_str(m.state),
                "created": m.created_rfc3339(),
                "kernel": m.source.kernel_release,
                "workloads": m.workloads.iter().map(|w| w.name.to_string()).collect::<Vec<_>>(),
                "bytes": manifest_bytes(&m),
            })),
            Err(e) => rows.push(json!({"generation": g.to_string(), "error": format!("{e:#}")})),
        }
    }
    rows.extend(sealed::list_rows(settings, &area)?);
    rows.extend(sealed::staged_rows(staging));
    // Ids start with their time: sorting them puts plain, sealed and staged in one
    // order.
    rows.sort_by(|a, b| a["generation"].as_str().cmp(&b["generation"].as_str()));
    if json {
        writeln!(out, "{}", serde_json::Value::Array(rows))?;
        return Ok(());
    }
    if rows.is_empty() {
        writeln!(out, "no generations in {}", area.root().display())?;
    }
    for r in rows {
        if r.get("staged").is_some() {
            let detail = if let Some(e) = r.get("error") {
                format!("UNREADABLE: {}", e.as_str().unwrap_or(""))
            } else {
                format!(
                    "{}  {}  {}",
                    r["kernel"].as_str().unwrap_or(""),
                    human_bytes(r["bytes"].as_u64().unwrap_or(0)),
                    joined(&r["workloads"])
                )
            };
            let note = match r["state"].as_str() {
                Some("committed") => {
                    "(in memory: resume it or it is lost at the next reboot)".to_owned()
                }
                Some(state) => format!("({state}, in memory)"),
                None => "(in memory)".to_owned(),
            };
            writeln!(
                out,
                "{}  {:<10} {detail}  {note}",
                r["generation"].as_str().unwrap_or(""),
                "staged",
            )?;
            continue;
        }
        if let Some(file) = r.get("sealed") {
            let file = std::path::Path::new(file.as_str().unwrap_or(""));
            let name = file.file_name().unwrap_or_default().to_string_lossy();
            let size = human_bytes(r["file_bytes"].as_u64().unwrap_or(0));
            let detail = match (r.get("workloads"), r.get("key_error"), r.get("error")) {
                (Some(w), _, _) => format!(
                    "{}  {}  {}",
                    r["kernel"].as_str().unwrap_or(""),
                    joined(w),
                    r["state"].as_str().unwrap_or("")
                ),
                (_, Some(_), _) => "(the suspend key is needed to show its workloads)".into(),
                (_, _, Some(e)) => format!("UNREADABLE: {}", e.as_str().unwrap_or("")),
                _ => String::new(),
            };
            writeln!(
                out,
                "{}  {:<10} {name} {size}  {detail}",
                r["generation"].as_str().unwrap_or(""),
                "sealed",
            )?;
            continue;
        }
        if let Some(err) = r.get("error") {
            writeln!(
                out,
                "{}  UNREADABLE: {}",
                r["generation"].as_str().unwrap_or(""),
                err.as_str().unwrap_or("")
            )?;
            continue;
        }
        writeln!(
            out,
            "{}  {:<10} {}  {}  {}",
            r["generation"].as_str().unwrap_or(""),
            r["state"].as_str().unwrap_or(""),
            r["kernel"].as_str().unwrap_or(""),
            human_bytes(r["bytes"].as_u64().unwrap_or(0)),
            joined(&r["workloads"])
        )?;
    }
    Ok(())
}

/// A JSON list of strings as `a,b,c` (empty for anything else).
fn joined(list: &serde_json::Value) -> String {
    list.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

pub fn images_show(settings: &Settings, gen: &str, json: bool, out: &mut dyn Write) -> Result<()> {
    let area = open_area(settings)?;
    let id = GenerationId::new(gen).with_context(|| format!("generation {gen:?}"))?;
    // A sealed generation's manifest is read with the suspend key.
    let sealed_file = if area.generation_path(&id).exists() {
        None
    } else {
        sealed::sealed_file(&area, &id)?
    };
    let m = match &sealed_file {
        Some(path) => sealed::peek(settings, path)?,
        None => area.load(&id)?,
    };
    let workloads: Vec<_> = m
        .workloads
        .iter()
        .map(|w| {
            json!({
                "name": w.name.to_string(), "kind": w.kind.to_string(),
                "state": serde_json::to_value(w.state).unwrap_or_default(),
                "root_pid": w.root_pid, "pids": w.pids, "unit": w.unit, "cgroup": w.cgroup,
                "command_line": w.command_line, "options": w.options,
                "images": w.images.len(),
                "bytes": w.images.iter().map(|i| i.size).sum::<u64>(),
            })
        })
        .collect();
    let v = json!({
        "generation": id.to_string(), "state": state_str(m.state), "created": m.created_rfc3339(),
        "kernel": m.source.kernel_release, "criu": m.source.criu_version,
        "glibc": m.source.glibc_version, "workloads": workloads, "sealed": sealed_file,
    });
    if json {
        writeln!(out, "{v}")?;
    } else {
        writeln!(
            out,
            "generation {id}: {} (created {})",
            v["state"].as_str().unwrap_or(""),
            v["created"].as_str().unwrap_or("")
        )?;
        writeln!(
            out,
            "  made on kernel {} with CRIU {}, glibc {}",
            m.source.kernel_release, m.source.criu_version, m.source.glibc_version
        )?;
        if let Some(path) = &sealed_file {
            writeln!(out, "  sealed in {}", path.display())?;
        }
        for w in &m.workloads {
            writeln!(
                out,
                "  {} ({}): {:?}, PID {} ({} processes), {} in {} files{}",
                w.name,
                w.kind,
                w.state,
                w.root_pid,
                w.pids.len(),
                human_bytes(w.images.iter().map(|i| i.size).sum()),
                w.images.len(),
                w.unit
                    .as_ref()
                    .map(|u| format!(", unit {u}"))
                    .unwrap_or_default()
            )?;
        }
    }
    Ok(())
}

/// `upgradectl internals drop-rseq --generation GEN`: the boot side's rseq transform
/// on every workload of a verified generation, into `<GEN>.compat`.
pub fn internals_drop_rseq(settings: &Settings, gen: &str, out: &mut dyn Write) -> Result<()> {
    use crate::boot::compat::{transformed_copy, Transform, Verdict};
    let area = open_area(settings)?;
    let id = GenerationId::new(gen).with_context(|| format!("generation {gen:?}"))?;
    let m = area
        .verify(&id)
        .with_context(|| format!("generation {id} failed verification"))?;
    let verdicts: Vec<(String, Verdict)> = m
        .workloads
        .iter()
        .map(|w| {
            (
                w.name.to_string(),
                Verdict::Transform(vec![Transform::DropRseq]),
            )
        })
        .collect();
    let derived = transformed_copy(&area, &id, &m, &verdicts)?;
    writeln!(out, "{derived}")?;
    Ok(())
}

pub fn images_verify(
    settings: &Settings,
    gen: &str,
    json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let area = open_area(settings)?;
    let id = GenerationId::new(gen).with_context(|| format!("generation {gen:?}"))?;
    if !area.generation_path(&id).exists() {
        if let Some(path) = sealed::sealed_file(&area, &id)? {
            bail!(
                "generation {id} is sealed in {}: it is verified when it is resumed (unsealed \
                 in memory, every image against its manifest); `upgradectl images show {id}` \
                 reads its manifest with the suspend key",
                path.display()
            );
        }
    }
    let m = area.verify(&id).with_context(|| {
        format!("generation {id} failed verification; it is kept as it is for inspection")
    })?;
    let files: usize = m.workloads.iter().map(|w| w.images.len()).sum();
    if json {
        writeln!(
            out,
            "{}",
            json!({"generation": id.to_string(), "ok": true, "files": files, "bytes": manifest_bytes(&m)})
        )?;
    } else {
        writeln!(
            out,
            "generation {id}: {files} files, {} verified OK",
            human_bytes(manifest_bytes(&m))
        )?;
    }
    Ok(())
}

pub fn images_rm(settings: &Settings, gen: &str, json: bool, out: &mut dyn Write) -> Result<()> {
    images_rm_in(settings, &Staging::system(), gen, json, out)
}

/// [`images_rm`] with the suspend lock of `staging`: held while removing, so that no
/// resume is unsealing or restoring the generation meanwhile, nor a suspend sealing
/// it; when another holds it, nothing is removed and the error says who.
fn images_rm_in(
    settings: &Settings,
    staging: &Staging,
    gen: &str,
    json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let area = open_area(settings)?;
    let id = GenerationId::new(gen).with_context(|| format!("generation {gen:?}"))?;
    let _held = sealed::SuspendLock::take(&staging.lock)
        .with_context(|| format!("removing generation {id}: nothing was removed"))?;
    let sealed = sealed::sealed_files(&area, &id)?;
    for path in &sealed {
        dumper::seal::remove_sealed(path)?;
    }
    // With a sealed file, a plain generation of the same id too, which only a crash
    // leaves.
    if sealed.is_empty() || area.generation_path(&id).exists() {
        area.remove(&id)?;
    }
    if json {
        writeln!(
            out,
            "{}",
            json!({"generation": id.to_string(), "removed": true})
        )?;
    } else {
        writeln!(out, "removed generation {id}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_scales() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(541 << 20), "541.0 MiB");
    }

    #[test]
    fn pre_dumps_are_listed_per_iteration() {
        assert_eq!(pre_dumps_text(&[]), "");
        assert_eq!(pre_dumps_text(&[2048]), ", after 1 pre-dump: 2.0 KiB");
        assert_eq!(
            pre_dumps_text(&[541 << 20, 512]),
            ", after 2 pre-dumps: 541.0 MiB, 512 B"
        );
    }

    #[test]
    fn ad_hoc_workloads_need_a_kind() {
        let s = Settings::default();
        let err = parse_workload_arg(&s, "no-such-workload")
            .unwrap_err()
            .to_string();
        assert!(err.contains("KIND:SELECTOR"), "{err}");
        let err = parse_workload_arg(&s, "blender:1").unwrap_err().to_string();
        assert!(err.contains("unknown workload kind"), "{err}");
    }
}
