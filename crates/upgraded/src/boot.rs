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

pub mod compat;

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
use crate::state::{BootDecision, Event, KernelRelease, Phase, Recovery, StateStore, Upgrade};
use compat::Prepared;

/// `uname -r`.
pub fn running_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Runs the boot side once. Errors are returned for the log; the state is recorded
/// before returning whenever one could be.
pub fn run(settings: &Settings) -> anyhow::Result<()> {
    let area = match open_area(settings)? {
        Some(area) => area,
        None => return Ok(()),
    };
    let store = StateStore::for_area(area.root());
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
    // Errors end in a recorded state; only a crash makes systemd run this again in
    // the same boot (Restart=on-failure), and the marker in /run says so.
    let rerun = mark_started();
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
        if rerun {
            warn!("the boot side was restarted after a crash: restoring what is not running yet");
        }
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
    if rerun && running == u.to_release.as_str() {
        // What the crashed run restored runs on; the kexec ends it, and the known-good
        // kernel restores every workload from the same images.
        let why = format!(
            "the boot side crashed on {running} during the upgrade's {} phase (systemd \
             restarted it); going back to {} with the workloads",
            state.phase(),
            u.known_good_release
        );
        error!("{why}");
        store.apply(Event::RollbackStarted { why })?;
        return roll_back();
    }
    if decision == BootDecision::RollBack {
        store.apply(Event::BootAttemptsExceeded)?;
        return roll_back();
    }
    if running != u.to_release.as_str() {
        // A reset brought up another kernel (the boot loader's default): the new one
        // never reached us. Go back to the known-good kernel with the workloads.
        let why = format!(
            "came up on {running} instead of {}: the new kernel went down (a reset, a \
             panic, a power cut) before it was blessed",
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

    // The watchdog: whatever hangs from here on (CRIU, a check that leaves an orphan
    // holding its output open), the new kernel has health.timeout_secs to be blessed;
    // then it goes back to the known-good kernel by itself.
    let timeout = settings.health.timeout();
    let deadline = Instant::now() + timeout;
    let expired = || {
        let why = format!(
            "no blessing within {} s (health.timeout_secs): the restore or a health check \
             hangs",
            timeout.as_secs()
        );
        error!("{why}; going back to {}", u.known_good_release);
        if let Err(e) = store.apply(Event::RollbackStarted { why }) {
            error!("recording the rollback: {e}");
        }
        if let Err(e) = rollback_kexec(settings, &area, &store, &gen, &u.known_good_release) {
            error!("{e:#}");
        }
    };
    let outcome = watched(timeout, expired, |decision| {
        restore_and_bless(
            settings, &area, &store, &gen, &u, &running, deadline, decision,
        )
    });
    outcome.unwrap_or_else(|| {
        info!("the watchdog decided this boot: see the state");
        Ok(())
    })
}

/// The restore, the health checks and the verdict on the new kernel. Every verdict is
/// claimed from `decision` first: when the watchdog has claimed it, nothing more is
/// done here (None).
#[allow(clippy::too_many_arguments)]
fn restore_and_bless(
    settings: &Settings,
    area: &Area,
    store: &StateStore,
    gen: &GenerationId,
    u: &Upgrade,
    running: &str,
    deadline: Instant,
    decision: &Decision,
) -> Option<anyhow::Result<()>> {
    let result = (|| -> anyhow::Result<Option<anyhow::Result<()>>> {
        store.apply(Event::RestoreStarted)?;
        // Damaged images cannot be restored on any kernel: no rollback, which would only
        // fail the same way. The system comes up without the workloads, saying why.
        let verified = match area.verified(gen) {
            Ok(v) => v,
            Err(e) => {
                return Ok(decision.claim(|| {
                    let why = format!(
                    "the images of generation {gen} failed verification, nothing was restored: {e}"
                );
                    error!("{why}");
                    store.apply(Event::Fail { why: why.clone() })?;
                    Err(anyhow!(why))
                }))
            }
        };
        let restored = assess_generation(area, gen).and_then(|(criu, prepared)| {
            if prepared.refused.is_empty() {
                restore_all(area, &criu, &prepared, Some(&verified))
            } else {
                // The known-good kernel took these images once: go back there rather
                // than come up here without some of the workloads.
                Err(anyhow!(
                    "{running} cannot take every workload: {}",
                    refusals(&prepared.refused)
                ))
            }
        });
        let manifest = match restored {
            Ok(m) => m,
            Err(e) => {
                return Ok(decision.claim(|| {
                    let why = format!("restoring generation {gen} on {running} failed: {e:#}");
                    error!("{why}");
                    store.apply(Event::RollbackStarted { why })?;
                    rollback_kexec(settings, area, store, gen, &u.known_good_release)
                }))
            }
        };
        store.apply(Event::RestoreDone)?;
        info!("every workload of {gen} runs again on {running}; health checks next");

        let health = health_check(settings, &manifest, deadline);
        Ok(decision.claim(|| match health {
            Ok(()) => {
                dumper::faults::point("boot::bless")?;
                store.apply(Event::HealthPassed)?;
                info!("{running} is healthy: upgrade blessed");
                Ok(())
            }
            Err(why) => {
                error!("health check failed: {why}");
                store.apply(Event::HealthFailed { why: why.clone() })?;
                // The restored workloads must go down before their images are restored
                // on the known-good kernel: the kexec ends them.
                rollback_kexec(settings, area, store, gen, &u.known_good_release)
            }
        }))
    })();
    // An error recording a step is the boot's outcome too, unless the watchdog has
    // taken over meanwhile.
    result.unwrap_or_else(|e| decision.claim(|| Err(e)))
}

/// Who decides how a boot after an upgrade ends: the restore and its checks, or the
/// watchdog when they take too long. The first to claim acts; the other stands down.
#[derive(Default)]
struct Decision(std::sync::Mutex<bool>);

impl Decision {
    /// Runs `act` unless the decision was claimed already (None). The claim is held
    /// while `act` runs, so that the other side waits and then stands down.
    fn claim<T>(&self, act: impl FnOnce() -> T) -> Option<T> {
        let mut decided = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if *decided {
            return None;
        }
        *decided = true;
        Some(act())
    }
}

/// Runs `body` with a watchdog: unless `body` returns within `timeout`, `expired`
/// runs, when the decision is still free. `body` claims its verdicts from the same
/// decision; its result is None when the watchdog had claimed it.
fn watched<R>(
    timeout: Duration,
    expired: impl FnOnce() + Send,
    body: impl FnOnce(&Decision) -> Option<R>,
) -> Option<R> {
    let decision = Decision::default();
    let (done, wait) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        let d = &decision;
        s.spawn(move || {
            // Disconnected: `body` returned in time.
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(timeout) {
                d.claim(expired);
            }
        });
        let result = body(&decision);
        drop(done);
        result
    })
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
    let restored = assess_generation(area, gen).and_then(|(criu, mut prepared)| {
        // A crashed earlier run of this boot restored some already: they run on.
        let running_now: Vec<String> = area
            .load(&prepared.generation)?
            .workloads
            .iter()
            .filter(|w| runs_as_restored(w))
            .map(|w| w.name.to_string())
            .collect();
        for name in &running_now {
            info!(workload = %name, "restored before the boot side was restarted: runs on");
        }
        prepared.skip(&running_now);
        restore_all(area, &criu, &prepared, None).map(|_| prepared.refused)
    });
    match restored {
        Ok(refused) if !refused.is_empty() => {
            let why = format!(
                "rolled back to {running}, but it cannot take every workload (the others \
                 were restored): {}; their images stay in generation {gen}",
                refusals(&refused)
            );
            store.apply(Event::Fail { why: why.clone() })?;
            Err(anyhow!(why))
        }
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
        let floor = pid_floor_now(&manifest);
        if let Err(e) = store.write_boot_note(gen, floor) {
            warn!("{e}: a cold boot before the restore will not reserve the workloads' PIDs");
        }
        upgrade::load_kernel(settings, &target, gen, current.trim(), floor)?;
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

/// The area, or `None` when a disk or pmem area holds no file system in a boot that no
/// upgrade's kexec started: nothing can be waiting there (a pmem area after a cold
/// boot), and the daemon formats it when it starts. After an upgrade's kexec
/// (`upgraded.generation=` on the command line) an empty area is an error: the images
/// were lost. The device of a disk or pmem area may still be on its way (udev): it is
/// waited for, longer when an upgrade's images are expected on it. Never formats.
fn open_area(settings: &Settings) -> anyhow::Result<Option<Area>> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let after_kexec = kernel::parse_upgraded_tokens(&cmdline).generation.is_some();
    let wait = Duration::from_secs(if after_kexec { 60 } else { 5 });
    if !crate::area_device::wait_for_device(&settings.area.location, wait) {
        warn!(
            "the area's device did not appear within {} s",
            wait.as_secs()
        );
    }
    match local::open_area(settings) {
        Ok(area) => Ok(Some(area)),
        Err(e) if crate::area_device::is_no_file_system(&e) => {
            if after_kexec {
                return Err(e.context(
                    "this boot came from an upgrade's kexec, but the area holds no file \
                     system: the images and the upgrade's state are lost (a pmem area whose \
                     memmap= reservation was not kept, or a device that was wiped); nothing \
                     can be restored",
                ));
            }
            info!("no upgrade waits for this boot: {e:#}");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The boot side's start in this boot (under /run: gone at the next boot). True when
/// a run of this boot came first, i.e. this is systemd's restart after a crash.
fn mark_started() -> bool {
    const MARKER: &str = "/run/upgraded/boot-side-started";
    let path = Path::new(MARKER);
    if path.exists() {
        return true;
    }
    if let Some(dir) = path.parent() {
        let _ = dumper::create_private_dir_all(dir);
    }
    if let Err(e) = std::fs::write(path, b"") {
        warn!("writing {MARKER}: {e}; a restart after a crash will not be recognised");
    }
    false
}

/// Whether workload `w` runs now as restored from its images: its root PID is alive
/// with the command line the manifest recorded. After a kexec only our restore can
/// have made that so (the PIDs were reserved); a stranger with the same PID differs
/// in its command line, and the restore then refuses it by name.
fn runs_as_restored(w: &dumper::manifest::Workload) -> bool {
    let Ok(raw) = std::fs::read(format!("/proc/{}/cmdline", w.root_pid)) else {
        return false;
    };
    let argv: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    !w.command_line.is_empty() && argv == w.command_line
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

/// The version checks of docs/compat.md for generation `gen` on this system: what to
/// restore from (the generation, or a transformed copy) and what this system cannot
/// take.
fn assess_generation(area: &Area, gen: &GenerationId) -> anyhow::Result<(Criu, Prepared)> {
    let manifest = area.load(gen)?;
    let criu = Criu::locate()?;
    let version = criu.version()?.to_string();
    let prepared = compat::prepare(area, gen, &manifest, &version)?;
    Ok((criu, prepared))
}

/// Restores every workload of the prepared generation that this system can take.
/// After a kexec nothing of the generation runs: everything is restored. A PID that is
/// taken is an error naming its holder (the restore checks), never a skip. The images
/// are hashed once: `verified` is reused when it is the generation restored from (not
/// a transformed copy).
fn restore_all(
    area: &Area,
    criu: &Criu,
    prepared: &Prepared,
    verified: Option<&dumper::area::Verified>,
) -> anyhow::Result<Manifest> {
    let gen = &prepared.generation;
    let verified = match verified.filter(|v| &v.manifest().generation == gen) {
        Some(v) => v.clone(),
        None => area.verified(gen)?,
    };
    let mut manifest = verified.manifest().clone();
    manifest
        .workloads
        .retain(|w| !prepared.refused.iter().any(|(n, _)| n == w.name.as_str()));
    let names: Vec<String> = manifest
        .workloads
        .iter()
        .map(|w| w.name.to_string())
        .filter(|n| !prepared.running.contains(n))
        .collect();
    if names.is_empty() {
        return Ok(manifest);
    }
    let cmd = local::service_restore_cmd_for(UPGRADECTL.into(), area);
    let reports =
        checkpoint::restore_verified(area, criu, &verified, &names, Some(&cmd), &mut |_| {})
            .with_context(|| format!("restoring generation {gen}"))?;
    for r in &reports {
        info!(workload = %r.name, pid = r.pid, "restored in {:.2} s", r.restore_secs);
    }
    Ok(manifest)
}

/// "workload a: why; workload b: why".
fn refusals(refused: &[(String, String)]) -> String {
    refused
        .iter()
        .map(|(n, why)| format!("workload {n}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The built-in checks after the settle time, then the workloads' own check commands,
/// then the admin's scripts in `health.scripts_dir` (executable files, in name order;
/// exit 0 = healthy). All before `deadline`: `health.timeout_secs` after the restore
/// began.
fn health_check(settings: &Settings, manifest: &Manifest, deadline: Instant) -> Result<(), String> {
    dumper::faults::point("boot::health").map_err(|e| e.to_string())?;
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
    fn the_watchdog_stands_down_when_the_body_decides_in_time() {
        let fired = std::sync::atomic::AtomicBool::new(false);
        let got = watched(
            Duration::from_secs(3600),
            || fired.store(true, std::sync::atomic::Ordering::SeqCst),
            |d| d.claim(|| "blessed"),
        );
        assert_eq!(got, Some("blessed"));
        assert!(!fired.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[test]
    fn the_watchdog_decides_when_the_body_hangs_and_the_body_stands_down() {
        // The body "hangs" until the watchdog has acted, then tries to bless: too late.
        let (acted, wait) = std::sync::mpsc::channel();
        let got = watched(
            Duration::from_millis(10),
            move || acted.send(()).unwrap(),
            |d| {
                wait.recv().unwrap();
                d.claim(|| "blessed")
            },
        );
        assert_eq!(got, None);
    }

    #[test]
    fn a_decision_is_claimed_once() {
        let d = Decision::default();
        assert_eq!(d.claim(|| 1), Some(1));
        assert_eq!(d.claim(|| 2), None);
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

    #[test]
    fn a_workload_runs_as_restored_only_with_its_pid_and_command_line() {
        let me = std::process::id();
        let argv: Vec<String> = std::env::args().collect();
        let mut w = Workload::new(WorkloadName::new("w").unwrap(), WorkloadKind::Process, me);
        w.command_line = argv.clone();
        assert!(runs_as_restored(&w));
        // Same PID, another program: a stranger holds it.
        w.command_line = vec!["bash".into(), "-c".into(), "counter".into()];
        assert!(!runs_as_restored(&w));
        // Nothing recorded proves nothing.
        w.command_line.clear();
        assert!(!runs_as_restored(&w));
        // A PID nobody holds (above any pid_max).
        w.command_line = argv;
        w.root_pid = 4_194_305;
        assert!(!runs_as_restored(&w));
    }
}
