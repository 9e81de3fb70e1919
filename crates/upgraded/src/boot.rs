//! The boot side in the real root: `upgraded --boot-restore`, run once per boot by
//! `upgraded-restore.service` before user sessions. After an upgrade's kexec it counts
//! the boot, restores the workloads of the generation, runs the health checks and
//! blesses the new kernel; on a regression (restore error, failed health check, too
//! many boots, the wrong kernel came up) it goes back to the known-good kernel with a
//! kexec and restores the same images there. A rollback is attempted once; a failed
//! one leaves the images on disk and the state `failed`, shown by `upgradectl status`.
//!
//! Never blocks the boot for long and never fails it: every error ends in a recorded
//! state and a log line, and the unit exits 0 so the system comes up either way.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use dumper::checkpoint;
use dumper::criu::Criu;
use dumper::manifest::{GenerationId, Manifest};
use dumper::Area;
use tracing::{error, info, warn};

use crate::config::Settings;
use crate::daemon::{upgrade, UPGRADECTL};
use crate::kernel;
use crate::local;
use crate::state::{BootDecision, Event, KernelRelease, Phase, Recovery, StateStore};

/// `uname -r`.
pub fn running_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Runs the boot side once. Errors are returned for the log; the state is recorded
/// before returning whenever one could be.
pub fn run(settings: &Settings) -> anyhow::Result<()> {
    let area = local::open_area(settings)?;
    let store = StateStore::new(area.root());
    let state = store.load()?;
    let recovery = state.recover();
    if !matches!(recovery, Recovery::BootSide | Recovery::FinishRollback) {
        info!(phase = %state.phase(), "no upgrade waits for this boot");
        return Ok(());
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let args = kernel::parse_upgraded_tokens(&cmdline);
    for w in &args.warnings {
        warn!("{w}");
    }
    let running = running_release();
    let Some(u) = state.upgrade().cloned() else {
        return Ok(());
    };
    let Some(gen) = u.generation.clone() else {
        return Ok(());
    };
    let (_, decision) = store.count_boot_attempt(settings.boot.max_attempts)?;
    info!(
        phase = %state.phase(),
        running = %running,
        generation = %gen,
        "boot {} after the upgrade {} -> {}",
        u.boot_attempts + 1,
        u.from_release,
        u.to_release
    );

    let roll_back = || {
        finish_rollback(
            settings,
            &area,
            &store,
            &gen,
            &u.known_good_release,
            &running,
        )
    };
    if recovery == Recovery::FinishRollback {
        if decision == BootDecision::GiveUp {
            let why = format!(
                "the rollback to {} failed {} times; giving up: the images stay in generation \
                 {gen}",
                u.known_good_release, settings.boot.max_attempts
            );
            store.apply(Event::Fail { why: why.clone() })?;
            return Err(anyhow!(why));
        }
        return roll_back();
    }

    // After the kexec (Booting, Restoring, HealthCheck).
    if decision == BootDecision::RollBack {
        store.apply(Event::BootAttemptsExceeded)?;
        return roll_back();
    }
    if running != u.to_release.as_str() {
        // A reset brought up another kernel (the boot loader's default): the new one
        // never reached us. Go back to the known-good kernel with the workloads.
        let why = format!(
            "came up on {running} instead of {}; the new kernel did not reach the restore",
            u.to_release
        );
        warn!("{why}");
        store.apply(Event::RollbackStarted { why })?;
        return roll_back();
    }
    if args.generation.as_ref() != Some(&gen) {
        warn!(
            "the command line names {:?}, the state generation {gen}: restoring the state's",
            args.generation.as_ref().map(|g| g.to_string())
        );
    }
    store.apply(Event::BootedNewKernel {
        release: KernelRelease::new(&running)?,
    })?;

    store.apply(Event::RestoreStarted)?;
    // Damaged images cannot be restored on any kernel: no rollback, which would only
    // fail the same way. The system comes up without the workloads, saying why.
    if let Err(e) = area.verify(&gen) {
        let why = format!(
            "the images of generation {gen} failed verification, nothing was restored: {e}"
        );
        error!("{why}");
        store.apply(Event::Fail { why: why.clone() })?;
        return Err(anyhow!(why));
    }
    let manifest = match restore_all(&area, &gen) {
        Ok(m) => m,
        Err(e) => {
            let why = format!("restoring generation {gen} on {running} failed: {e:#}");
            error!("{why}");
            store.apply(Event::RollbackStarted { why })?;
            return rollback_kexec(settings, &area, &store, &gen, &u.known_good_release);
        }
    };
    store.apply(Event::RestoreDone)?;
    info!("every workload of {gen} runs again on {running}; health checks next");

    match health_check(settings, &manifest) {
        Ok(()) => {
            store.apply(Event::HealthPassed)?;
            info!("{running} is healthy: upgrade blessed");
            Ok(())
        }
        Err(why) => {
            error!("health check failed: {why}");
            store.apply(Event::HealthFailed { why: why.clone() })?;
            // The restored workloads must go down before their images are restored
            // on the known-good kernel: the kexec ends them.
            rollback_kexec(settings, &area, &store, &gen, &u.known_good_release)
        }
    }
}

/// In RollingBack: on the known-good kernel, restore; elsewhere, kexec there.
fn finish_rollback(
    settings: &Settings,
    area: &Area,
    store: &StateStore,
    gen: &GenerationId,
    known_good: &KernelRelease,
    running: &str,
) -> anyhow::Result<()> {
    if running != known_good.as_str() {
        return rollback_kexec(settings, area, store, gen, known_good);
    }
    info!("on the known-good kernel {running}: restoring generation {gen}");
    match restore_all(area, gen) {
        Ok(_) => {
            store.apply(Event::RollbackDone)?;
            info!("rolled back to {running} with the workloads");
            Ok(())
        }
        Err(e) => {
            let why = format!(
                "the rollback's restore on {running} failed: {e:#}; the images stay in \
                 generation {gen}"
            );
            store.apply(Event::Fail { why: why.clone() })?;
            Err(anyhow!(why))
        }
    }
}

/// Loads the known-good kernel with the same generation and starts kexec.target.
fn rollback_kexec(
    settings: &Settings,
    area: &Area,
    store: &StateStore,
    gen: &GenerationId,
    known_good: &KernelRelease,
) -> anyhow::Result<()> {
    if store.load()?.phase() != Phase::RollingBack {
        store.apply(Event::RollbackStarted {
            why: "going back to the known-good kernel".into(),
        })?;
    }
    let result = (|| -> anyhow::Result<()> {
        let target = kernel::resolve_kernel(Path::new("/boot"), known_good.as_str())?;
        let manifest = area.load(gen)?;
        let current = std::fs::read_to_string("/proc/cmdline")?;
        upgrade::load_kernel(
            settings,
            &target,
            gen,
            current.trim(),
            pid_floor_now(&manifest),
        )?;
        info!("rolling back: kexec into {known_good}");
        upgrade::start_kexec_target()
    })();
    if let Err(e) = result {
        let why = format!("the rollback kexec into {known_good} failed: {e:#}");
        store.apply(Event::Fail { why: why.clone() })?;
        return Err(anyhow!(why));
    }
    Ok(())
}

/// The highest PID the generation restores: the next kernel's initramfs hook starts
/// PIDs above it so that nothing booting takes one of them.
pub fn pid_floor(manifest: &Manifest) -> Option<u32> {
    manifest
        .workloads
        .iter()
        .flat_map(|w| w.pids.iter().copied().chain([w.root_pid]))
        .max()
        .map(|p| p.clamp(300, 4_194_304))
}

/// [`pid_floor`], raised to the kernel's last allocated PID now. The manifest lists
/// the trees as they were resolved; a shell forks short-lived children between that
/// and the dump, and CRIU dumps (and must restore) those too. Every PID of the dump was
/// allocated before this is read, so the last allocated PID bounds them all (the
/// manifest's maximum covers a wrap-around).
pub fn pid_floor_now(manifest: &Manifest) -> Option<u32> {
    let last = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    pid_floor(manifest).max(last.map(|p| p.clamp(300, 4_194_304)))
}

fn restore_all(area: &Area, gen: &GenerationId) -> anyhow::Result<Manifest> {
    let manifest = area.load(gen)?;
    // After a kexec nothing of the generation runs: restore every workload. A PID that
    // is taken is an error naming its holder (the restore checks), never a skip.
    let names: Vec<String> = manifest
        .workloads
        .iter()
        .map(|w| w.name.to_string())
        .collect();
    let criu = Criu::locate()?;
    let cmd = local::service_restore_cmd_for(UPGRADECTL.into(), area);
    let reports = checkpoint::restore(area, &criu, gen, &names, Some(&cmd), &mut |_| {})
        .with_context(|| format!("restoring generation {gen}"))?;
    for r in &reports {
        info!(workload = %r.name, pid = r.pid, "restored in {:.2} s", r.restore_secs);
    }
    Ok(manifest)
}

/// The built-in checks after the settle time, then the workloads' own check commands,
/// then the admin's scripts in `health.scripts_dir` (executable files, in name order;
/// exit 0 = healthy). All within `health.timeout_secs`.
fn health_check(settings: &Settings, manifest: &Manifest) -> Result<(), String> {
    let deadline = Instant::now() + settings.health.timeout();
    std::thread::sleep(settings.health.settle());
    for w in &manifest.workloads {
        if !Path::new("/proc").join(w.root_pid.to_string()).exists() {
            return Err(format!(
                "workload {} (PID {}) died after the restore",
                w.name, w.root_pid
            ));
        }
        if let Some(unit) = &w.unit {
            if unit.ends_with(".service") {
                let active = dumper::cmd::output_any("systemctl", ["is-active", "--quiet", unit])
                    .map(|(_, out)| out.status.success())
                    .unwrap_or(false);
                if !active {
                    return Err(format!("{unit} is not active after the restore"));
                }
            }
        }
        if let Some(check) = settings
            .workload(w.name.as_str())
            .and_then(|c| c.check.clone())
        {
            run_check(&format!("check of workload {}", w.name), &check, deadline)?;
        }
    }
    let dir = &settings.health.scripts_dir;
    let mut scripts: Vec<_> = match std::fs::read_dir(dir) {
        Ok(it) => it.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(format!("reading {}: {e}", dir.display())),
    };
    scripts.sort();
    for s in scripts {
        use std::os::unix::fs::PermissionsExt;
        let Ok(meta) = std::fs::metadata(&s) else {
            continue;
        };
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            continue;
        }
        let argv = vec![s.to_string_lossy().into_owned()];
        run_check(&format!("health script {}", s.display()), &argv, deadline)?;
    }
    Ok(())
}

/// Runs a check command with what remains of the deadline; a timeout is a failure.
fn run_check(what: &str, argv: &[String], deadline: Instant) -> Result<(), String> {
    let Some((program, args)) = argv.split_first() else {
        return Ok(());
    };
    info!("running {what}");
    // The fence runs it; the deadline is enforced with timeout(1), which is in
    // coreutils everywhere upgraded runs.
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(1));
    let mut full = vec![
        "--kill-after=5".to_owned(),
        format!("{}", left.as_secs()),
        program.clone(),
    ];
    full.extend(args.iter().cloned());
    match dumper::cmd::output_any("timeout", &full) {
        Ok((_, out)) if out.status.success() => Ok(()),
        Ok((line, out)) => Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            line,
            match dumper::cmd::tail(&String::from_utf8_lossy(&out.stderr), 5) {
                t if t.is_empty() => String::new(),
                t => format!(": {t}"),
            }
        )),
        Err(e) => Err(format!("{what} could not run: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dumper::manifest::{SourceSystem, Workload, WorkloadKind, WorkloadName};

    fn manifest(trees: &[(u32, &[u32])]) -> Manifest {
        let source = SourceSystem {
            kernel_release: "6.1.0-50-amd64".into(),
            proc_version: "Linux version 6.1.0-50-amd64".into(),
            kernel_config_checksum: None,
            criu_version: "3.17.1".into(),
            glibc_version: "2.36".into(),
            cpu: Default::default(),
        };
        let mut m = Manifest::new(
            GenerationId::new("20261124T000000Z-6.1.0-50-amd64").unwrap(),
            0,
            source,
        );
        for (i, (root, pids)) in trees.iter().enumerate() {
            let mut w = Workload::new(
                WorkloadName::new(format!("w{i}")).unwrap(),
                WorkloadKind::Process,
                *root,
            );
            w.pids = pids.to_vec();
            m.workloads.push(w);
        }
        m
    }

    #[test]
    fn the_pid_floor_is_the_highest_pid_restored() {
        assert_eq!(
            pid_floor(&manifest(&[(500, &[500, 9000]), (700, &[700])])),
            Some(9000)
        );
        // A root PID missing from `pids` still counts.
        assert_eq!(pid_floor(&manifest(&[(12345, &[])])), Some(12345));
        // Clamped to what the hook accepts: low PIDs reserve the kernel's own minimum.
        assert_eq!(pid_floor(&manifest(&[(42, &[42])])), Some(300));
        assert_eq!(pid_floor(&manifest(&[])), None);
    }
}
