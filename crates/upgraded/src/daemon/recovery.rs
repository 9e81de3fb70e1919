//! Start-up recovery: whatever a crashed daemon left half done is finished or undone
//! before the daemon serves anything, so that no workload stays frozen.

use std::path::Path;

use anyhow::Context;
use dumper::checkpoint;
use dumper::criu::Criu;
use dumper::freezer::Freezer;
use dumper::manifest::GenerationId;
use tracing::{error, info, warn};

use super::{Daemon, FROZEN_LIST, KEXEC_PENDING};
use crate::local;
use crate::state::{Event, Recovery, StateStore};

/// Notes the cgroups about to be frozen (see [`FROZEN_LIST`]), durably enough for a
/// daemon crash (the file system outlives the process; a reboot thaws anyway).
pub(crate) fn record_frozen(cgroups: &[String]) -> anyhow::Result<()> {
    let path = Path::new(FROZEN_LIST);
    if let Some(dir) = path.parent() {
        dumper::create_private_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut text = String::new();
    for cg in cgroups {
        text.push_str(cg);
        text.push('\n');
    }
    dumper::write_atomic(path, &tmp, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

pub(crate) fn clear_frozen() {
    match std::fs::remove_file(FROZEN_LIST) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn!("removing {FROZEN_LIST}: {e}"),
    }
}

/// Thaws every cgroup in the list a crashed daemon left. Entries are checked like any
/// input: a cgroup path the freezer module refuses is skipped with a warning.
fn thaw_recorded() {
    let text = match std::fs::read_to_string(FROZEN_LIST) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            error!("reading {FROZEN_LIST}: {e}; frozen workloads must be thawed by hand");
            return;
        }
    };
    let freezer = match Freezer::new() {
        Ok(f) => f,
        Err(e) => {
            error!("cannot thaw the workloads a crashed upgraded froze: {e}");
            return;
        }
    };
    for cg in text.lines().filter(|l| !l.trim().is_empty()) {
        match freezer.thaw(cg) {
            Ok(()) => info!(cgroup = cg, "thawed after a crash"),
            Err(e) => warn!(cgroup = cg, "could not thaw: {e}"),
        }
    }
    clear_frozen();
}

/// Runs at start-up, before the bus name is taken.
pub fn recover(daemon: &Daemon) {
    thaw_recorded();
    let settings = daemon.settings();
    let area = match open_at_start(&settings) {
        Ok(a) => a,
        Err(e) => {
            warn!("no recovery possible: {e:#}");
            return;
        }
    };
    let store = StateStore::for_area(area.root());
    let state = match store.load() {
        Ok(s) => s,
        Err(e) => {
            error!("reading the upgrade state: {e}; `upgradectl status` shows it");
            return;
        }
    };
    match state.recover() {
        Recovery::Nothing => {}
        Recovery::ThawAndDiscard => {
            warn!(
                phase = %state.phase(),
                "an upgrade was interrupted before its commit: thawed the workloads, \
                 discarding the uncommitted generation"
            );
            // The dump held the services' restarts (a runtime drop-in); lift that.
            for w in &settings.workloads {
                if let crate::config::Selector::Service { unit } = &w.selector {
                    dumper::service::release(unit);
                }
            }
            match area.cleanup_incomplete() {
                Ok(removed) => {
                    for p in removed {
                        info!("removed the uncommitted {}", p.display());
                    }
                }
                Err(e) => error!("removing uncommitted generations: {e}"),
            }
            if let Err(e) = store.apply(Event::Abort) {
                error!("recording the abort: {e}");
            }
        }
        Recovery::ThawAndKeep => {
            let gen = state.upgrade().and_then(|u| u.generation.clone());
            let why = "upgraded restarted after the commit and before the kexec".to_owned();
            warn!("{why}: bringing the workloads back on this kernel");
            finish_here(&area, &store, gen, why);
        }
        Recovery::BootSide if Path::new(KEXEC_PENDING).exists() => {
            // The kexec was started in this very boot and never happened (the daemon
            // crashed before systemd took it, or systemd dropped it): the workloads
            // are stopped and their images committed. Bring them back here.
            let why = "upgraded restarted after it had started the kexec, which did not \
                       happen"
                .to_owned();
            warn!("{why}: bringing the workloads back on this kernel");
            if let Err(e) = crate::kexec::unload() {
                warn!("unloading the kernel loaded for the kexec: {e}");
            }
            let gen = state.upgrade().and_then(|u| u.generation.clone());
            finish_here(&area, &store, gen, why);
            let _ = std::fs::remove_file(KEXEC_PENDING);
        }
        Recovery::BootSide | Recovery::FinishRollback => {
            info!(
                phase = %state.phase(),
                "the upgrade continues on the boot side (upgraded-restore.service)"
            );
        }
    }
}

/// Opens the area at start-up, before the state is read (the state lives in the area).
/// A disk or pmem area is mounted first. Only a pmem area reserved from RAM
/// (`memmap=`) is formatted here when it holds no file system: after a cold boot its
/// RAM is empty, every boot, and holds no state. A disk area is formatted only by
/// `upgradectl area init`: "no file system" may also be a damaged superblock or a read
/// error, and the disk may hold sealed suspends. Nor is anything formatted in a boot
/// that an upgrade's kexec started (any `upgraded.generation=` on the command line,
/// valid or not, or a command line that cannot be read): its images should be there,
/// and an admin should look first.
fn open_at_start(settings: &crate::config::Settings) -> anyhow::Result<dumper::Area> {
    match local::open_area(settings) {
        Err(e) if crate::area_device::is_no_file_system(&e) => {
            if settings.area.location.memmap().is_none() {
                return Err(e.context(
                    "a disk area (or real persistent memory) is formatted only on request: \
                     `upgradectl area init` once you know the device holds nothing to keep",
                ));
            }
            let cmdline = std::fs::read_to_string("/proc/cmdline");
            if let Some(why) = no_format_after_kexec(cmdline.as_deref().ok()) {
                return Err(e.context(why));
            }
            let prepared = crate::area_device::prepare_device_area(settings, true)?;
            if let Some(p) = prepared {
                info!(
                    device = ?p.device.configured,
                    node = ?p.device.node,
                    formatted = p.formatted,
                    dax = p.dax,
                    "the {} area held no file system, hence no upgrade state: formatted and \
                     mounted it on {}",
                    p.device.kind,
                    p.root.display()
                );
            }
            local::open_area(settings)
        }
        other => other,
    }
}

/// Why an empty area must not be formatted at start-up in a boot with command line
/// `cmdline` (`None`: it could not be read), if it must not: one started by an
/// upgrade's kexec expects its images there. Any `upgraded.generation` argument counts,
/// valid or not: this decides whether to destroy, so it fails closed.
fn no_format_after_kexec(cmdline: Option<&str>) -> Option<String> {
    let Some(cmdline) = cmdline else {
        return Some(
            "/proc/cmdline cannot be read, so this may be a boot after an upgrade's kexec; \
             not formatting the empty area; `upgradectl area init` does once you have looked"
                .into(),
        );
    };
    let named = cmdline.split_ascii_whitespace().any(|arg| {
        arg.trim_start_matches('"')
            .starts_with(crate::kernel::GENERATION_KEY)
    });
    named.then(|| {
        "this boot came from an upgrade's kexec (upgraded.generation on the command line) but \
         the area is empty: the images of the upgrade are lost (was the memmap= reservation \
         kept?); not formatting it; `upgradectl area init` does once you have looked"
            .into()
    })
}

/// After the commit, on the kernel the upgrade started from: restores what is not
/// running and records the rollback (or the failure).
fn finish_here(area: &dumper::Area, store: &StateStore, gen: Option<GenerationId>, why: String) {
    if let Err(e) = store.apply(Event::RollbackStarted { why }) {
        error!("recording the rollback: {e}");
        return;
    }
    let result = match gen {
        Some(gen) => restore_missing(area, &gen),
        None => Ok(()),
    };
    let event = match result {
        Ok(()) => Event::RollbackDone,
        Err(e) => {
            error!("restoring after the interrupted upgrade: {e:#}");
            Event::Fail {
                why: format!("restoring after the interrupted upgrade: {e:#}"),
            }
        }
    };
    if let Err(e) = store.apply(event) {
        error!("recording the rollback's end: {e}");
    }
}

/// Restores the workloads of `gen` whose processes are gone (those dumped with stop
/// semantics and killed after the commit); the others run on, already thawed.
pub(crate) fn restore_missing(area: &dumper::Area, gen: &GenerationId) -> anyhow::Result<()> {
    let manifest = area.load(gen)?;
    let missing: Vec<String> = manifest
        .workloads
        .iter()
        .filter(|w| !Path::new("/proc").join(w.root_pid.to_string()).exists())
        .map(|w| w.name.to_string())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let criu = Criu::locate()?;
    let cmd = local::service_restore_cmd_for(super::UPGRADECTL.into(), area);
    let reports = checkpoint::restore(area, &criu, gen, &missing, Some(&cmd), &mut |_| {})?;
    for r in reports {
        info!(workload = %r.name, pid = r.pid, "restored on this kernel");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_area_is_formatted_at_start_only_outside_an_upgrade_boot() {
        assert_eq!(
            no_format_after_kexec(Some("root=/dev/vda1 ro memmap=512M!1G")),
            None
        );
        assert_eq!(no_format_after_kexec(Some("")), None);
        for after in [
            "ro upgraded.generation=g1 memmap=512M!1G",
            // Invalid, duplicated or quoted: still a sign of an upgrade's kexec.
            "ro upgraded.generation=../x",
            "upgraded.generation=a upgraded.generation=b",
            "\"upgraded.generation=g1\"",
            "upgraded.generation",
        ] {
            let why = no_format_after_kexec(Some(after)).expect(after);
            assert!(why.contains("not formatting"), "{why}");
        }
        let why = no_format_after_kexec(None).unwrap();
        assert!(why.contains("cannot be read"), "{why}");
    }
}
