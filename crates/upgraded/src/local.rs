//! Checkpoint, restore, suspend, resume and image commands, run in-process by
//! `upgradectl` (the daemon will run the same functions behind D-Bus).

use std::io::Write;

use anyhow::{bail, Context, Result};
use dumper::area::Area;
use dumper::checkpoint::{self, CheckpointOptions};
use dumper::criu::Criu;
use dumper::manifest::{GenerationId, GenerationState, Manifest, WorkloadName, WorkloadState};
use dumper::workload::{self, Target};
use serde_json::json;

use crate::config::{AreaLocation, Selector, Settings};

/// Opens the configured area. Only a directory area is built so far.
///
/// Every command that touches the area comes here (docs/area.md). A path below a
/// mount point of /etc/fstab where nothing is mounted is refused before anything is
/// created. The area directory itself is created (0700) when its parent exists; a
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
        other => bail!(
            "the area kind in the configuration ({}) is not supported by this build yet; \
             use kind = \"directory\" on a file system that survives the kexec",
            other.kind().as_str()
        ),
    }
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
    /// Pre-dump iterations before the freeze.
    pub pre_dump: u32,
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
                       "pre_dump_bytes": w.pre_dump_bytes})
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
                "checkpointed {}: {} in {:.2} s{}",
                w.name,
                human_bytes(w.image_bytes),
                w.dump_secs,
                pre_dumps_text(&w.pre_dump_bytes)
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
    let pid = checkpoint::restore_tree(&area, &criu, &gen, w)?;
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

/// Hibernate one workload: checkpoint it and stop it.
pub fn suspend(settings: &Settings, name: &str, json: bool, out: &mut dyn Write) -> Result<()> {
    checkpoint(
        settings,
        CheckpointArgs {
            names: &[name.to_owned()],
            leave_running: false,
            tcp_established: false,
            pre_dump: 0,
        },
        json,
        out,
    )
}

/// Bring back a suspended workload from the newest generation that holds it
/// unrestored; this works after a power-off too, from a disk-backed area.
pub fn resume(settings: &Settings, name: &str, json: bool, out: &mut dyn Write) -> Result<()> {
    let area = open_area(settings)?;
    let mut gens = area.list()?;
    gens.sort();
    let found = gens.iter().rev().find_map(|g| {
        let m = area.load(g).ok()?;
        m.workloads
            .iter()
            .any(|w| w.name.as_str() == name && w.state == WorkloadState::Committed)
            .then(|| g.clone())
    });
    let Some(gen) = found else {
        bail!("no suspended images of workload {name:?} in the area; `upgradectl images list` shows what there is");
    };
    let criu = Criu::locate()?;
    let progress = Progress::new(json);
    let reports = checkpoint::restore(
        &area,
        &criu,
        &gen,
        &[name.to_owned()],
        Some(&service_restore_cmd(&area)?),
        &mut progress.step(),
    )
    .with_context(|| format!("resuming {name} from generation {gen}"))?;
    print_restored(&gen, &reports, json, out)
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

fn human_bytes(n: u64) -> String {
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

pub fn images_list(settings: &Settings, json: bool, out: &mut dyn Write) -> Result<()> {
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
    if json {
        writeln!(out, "{}", serde_json::Value::Array(rows))?;
        return Ok(());
    }
    if rows.is_empty() {
        writeln!(out, "no generations in {}", area.root().display())?;
    }
    for r in rows {
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
            r["workloads"]
                .as_array()
                .map(|a| a
                    .iter()
                    .filter_map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join(","))
                .unwrap_or_default()
        )?;
    }
    Ok(())
}

pub fn images_show(settings: &Settings, gen: &str, json: bool, out: &mut dyn Write) -> Result<()> {
    let area = open_area(settings)?;
    let id = GenerationId::new(gen).with_context(|| format!("generation {gen:?}"))?;
    let m = area.load(&id)?;
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
        "glibc": m.source.glibc_version, "workloads": workloads,
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
    let area = open_area(settings)?;
    let id = GenerationId::new(gen).with_context(|| format!("generation {gen:?}"))?;
    area.remove(&id)?;
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
