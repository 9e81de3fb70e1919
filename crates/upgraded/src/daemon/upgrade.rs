//! The upgrade job: plan, freeze and dump, commit, load the kernel, hand over to
//! systemd's kexec.target. Every step is recorded in the state file before it starts
//! (write-ahead), so that a crash anywhere is recovered from the state alone.

use std::cell::RefCell;

use anyhow::{anyhow, Context};
use dumper::checkpoint::{self, CheckpointOptions, Step};
use dumper::criu::Criu;
use dumper::freezer::Freezer;
use dumper::manifest::WorkloadKind;
use dumper::workload::Resolved;
use dumper::Area;
use tracing::{error, info, warn};

use super::recovery::{clear_frozen, record_frozen, restore_missing};
use super::Daemon;
use crate::config::{KnownGood, Settings};
use crate::kernel::InstalledKernel;
use crate::kexec;
use crate::state::{Event, KernelRelease, StateStore, UpgradeId};

/// What the pre-flight approved: the job runs exactly this.
pub(crate) struct Plan {
    pub target: InstalledKernel,
    pub running: String,
    /// The running kernel's command line, from /proc/cmdline.
    pub current_cmdline: String,
    pub workloads: Vec<Resolved>,
    pub tcp_established: bool,
    /// Pre-dump policies by workload name (`pre_dump` of the configuration).
    pub pre_dumps: std::collections::BTreeMap<String, dumper::predump::PreDumps>,
}

/// Runs the upgrade; on success the kexec has been started and this process is about
/// to be stopped by systemd. The error says what state the failure left.
pub(crate) fn run(
    daemon: &Daemon,
    job: u32,
    settings: &Settings,
    plan: Plan,
) -> anyhow::Result<String> {
    let area = crate::local::open_area(settings)?;
    let store = StateStore::for_area(area.root());
    let state = store.load()?;
    if !(state.phase() == crate::state::Phase::Idle || state.phase().is_terminal()) {
        return Err(anyhow!(
            "an upgrade is already under way (state {}); `upgradectl status` shows it",
            state.phase()
        ));
    }
    let from = KernelRelease::new(&plan.running)?;
    let to = KernelRelease::new(&plan.target.release)?;
    let known_good = match &settings.kernel.known_good {
        KnownGood::Current => from.clone(),
        KnownGood::Release(r) => KernelRelease::new(r)?,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let id = UpgradeId::new(format!("u{}-{}", now.as_secs(), std::process::id()))?;
    store.apply(Event::Plan {
        id,
        from: from.clone(),
        to: to.clone(),
        known_good,
    })?;
    daemon.progress(job, "planned", &format!("{from} -> {to}"));

    let criu = Criu::locate()?;
    // Note what will be frozen before freezing it (see FROZEN_LIST); a cgroup someone
    // else froze stays theirs.
    let freezer = Freezer::new()?;
    let to_freeze: Vec<String> = plan
        .workloads
        .iter()
        .filter(|w| w.owns_cgroup && w.kind != WorkloadKind::Podman)
        .filter_map(|w| w.cgroup.clone())
        .filter(|cg| !freezer.is_frozen(cg).unwrap_or(true))
        .collect();
    record_frozen(&to_freeze)?;

    let step_error: RefCell<Option<anyhow::Error>> = RefCell::new(None);
    let mut dump_started = false;
    let mut pre_dumped = false;
    let record = |event: Event| {
        if let Err(e) = store.apply(event) {
            error!("recording the upgrade state: {e}");
            step_error.borrow_mut().get_or_insert(e.into());
        }
    };
    let result = checkpoint::checkpoint(
        &area,
        &criu,
        &plan.workloads,
        &CheckpointOptions {
            leave_running: false,
            tcp_established: plan.tcp_established,
            kernel_features: crate::boot::compat::running_features(),
            pre_dump: Default::default(),
            pre_dump_by_name: plan.pre_dumps.clone(),
        },
        &mut |step| match step {
            Step::PreDumping(w, i) => {
                pre_dumped = true;
                daemon.progress(job, "pre-dumping", &format!("{w} (iteration {i})"));
            }
            Step::Freezing => {
                if pre_dumped {
                    record(Event::PreDumpDone);
                }
                record(Event::Freeze);
                daemon.progress(job, "freezing", "freezing the workloads");
            }
            Step::Dumping(w) => {
                if !dump_started {
                    dump_started = true;
                    record(Event::DumpStarted);
                }
                daemon.progress(job, "dumping", w);
            }
            Step::Committing => {
                record(Event::DumpDone);
                daemon.progress(job, "committing", "checksums and sync");
            }
            _ => {}
        },
    );
    clear_frozen();
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            // The whole chain: what CRIU or the area said is the part the admin acts on.
            // A failed dump says already that everything runs; a commit whose recovery
            // failed says what does not.
            let said = matches!(
                e,
                dumper::Error::DumpFailed { .. } | dumper::Error::CommitAndRecoveryFailed { .. }
            );
            let why = format!(
                "checkpoint failed: {:#}{}",
                anyhow::Error::from(e),
                if said {
                    ""
                } else {
                    "; every workload was left running and nothing was committed"
                }
            );
            let _ = store.apply(Event::Fail { why: why.clone() });
            return Err(anyhow!(why));
        }
    };
    if let Some(e) = step_error.into_inner() {
        warn!("the state file missed a step of this upgrade: {e:#}");
    }
    let gen = report.manifest.generation.clone();
    store.apply(Event::Committed {
        generation: gen.clone(),
    })?;
    daemon.progress(
        job,
        "committed",
        &format!("generation {gen} ({:.2} s frozen)", report.frozen_secs),
    );
    if let Err(e) = area.retain(
        settings.retention.keep.max(1) as usize,
        std::slice::from_ref(&gen),
    ) {
        warn!("retention: {e}");
    }

    // From here the images are the workloads' only copy: a failure means restoring
    // them here, on the running kernel.
    daemon.progress(job, "loading", &format!("{}", plan.target.image.display()));
    let floor = crate::boot::pid_floor_now(&report.manifest);
    if let Err(e) = store.write_boot_note(&gen, floor) {
        warn!("{e}: a cold boot before the restore will not reserve the workloads' PIDs");
    }
    let loaded = dumper::faults::point("upgrade::kexec-load")
        .map_err(anyhow::Error::from)
        .and_then(|()| load_kernel(settings, &plan.target, &gen, &plan.current_cmdline, floor));
    let method = match loaded {
        Ok(m) => m,
        Err(e) => {
            return Err(back_out(
                &area,
                &store,
                &gen,
                format!("loading the kernel failed: {e:#}"),
            ))
        }
    };
    store.apply(Event::KexecLoaded)?;
    info!("kernel loaded with {method}");

    store.apply(Event::KexecStarted)?;
    // See KEXEC_PENDING: a crash from here until the kexec is recognised as such.
    if let Err(e) = dumper::write_atomic(
        std::path::Path::new(super::KEXEC_PENDING),
        std::path::Path::new(&format!("{}.tmp", super::KEXEC_PENDING)),
        gen.as_str().as_bytes(),
    ) {
        warn!("{e}: a crash before the kexec would not be told from one after it");
    }
    daemon.progress(job, "kexec", &format!("starting kexec.target into {to}"));
    if let Err(e) = dumper::faults::point("upgrade::kexec")
        .map_err(anyhow::Error::from)
        .and_then(|()| start_kexec_target())
    {
        let _ = kexec::unload();
        let _ = std::fs::remove_file(super::KEXEC_PENDING);
        return Err(back_out(
            &area,
            &store,
            &gen,
            format!("systemd refused to start kexec.target: {e:#}"),
        ));
    }
    // Only now: a refused start is the job's failure (reported by the caller). The
    // signal leaves before systemd stops this process on the way to the kexec.
    let message = format!("generation {gen} committed; switching to {to} through kexec.target now");
    daemon.finished(job, true, &message);
    Ok(message)
}

/// After the commit, before the kexec: restore the workloads here and record a
/// rollback (or a failure, if even that fails). Returns the error to report.
fn back_out(
    area: &Area,
    store: &StateStore,
    gen: &dumper::manifest::GenerationId,
    why: String,
) -> anyhow::Error {
    error!("{why}; restoring the workloads on this kernel");
    if let Err(e) = store.apply(Event::RollbackStarted { why: why.clone() }) {
        error!("recording the rollback: {e}");
    }
    match restore_missing(area, gen) {
        Ok(()) => {
            let _ = store.apply(Event::RollbackDone);
            anyhow!("{why}; the workloads were restored on this kernel from generation {gen}")
        }
        Err(e) => {
            let _ = store.apply(Event::Fail {
                why: format!("{why}; restoring the workloads failed too: {e:#}"),
            });
            anyhow!(
                "{why}; restoring the workloads failed too: {e:#}; the images stay in \
                 generation {gen} (`upgradectl restore --generation {gen}`)"
            )
        }
    }
}

/// Loads `target` for a kexec that restores generation `gen`: our arguments replace
/// any old ones on the current command line (plus the pmem reservation and the admin's
/// extra arguments).
pub(crate) fn load_kernel(
    settings: &Settings,
    target: &InstalledKernel,
    gen: &dumper::manifest::GenerationId,
    current_cmdline: &str,
    pid_floor: Option<u32>,
) -> anyhow::Result<kexec::Method> {
    let memmap = settings.area.location.memmap().map(|m| m.to_string());
    let cmdline = crate::kernel::target_cmdline(
        current_cmdline,
        gen.as_str(),
        pid_floor,
        &settings.kernel.extra_cmdline,
        memmap.as_deref(),
    )?;
    info!("loading {} with {cmdline}", target.image.display());
    Ok(kexec::load(&kexec::LoadRequest {
        kernel: &target.image,
        initrd: target.initrd.as_deref(),
        cmdline: &cmdline,
    })?)
}

/// Asks systemd for kexec.target, as `systemctl kexec` does: services stop, file
/// systems unmount, then systemd-shutdown calls kexec. `replace-irreversibly` so that
/// nothing queued later cancels it.
pub(crate) fn start_kexec_target() -> anyhow::Result<()> {
    zbus::block_on(async {
        let conn = zbus::Connection::system().await?;
        let manager = zbus_systemd::systemd1::ManagerProxy::new(&conn).await?;
        manager
            .start_unit("kexec.target".into(), "replace-irreversibly".into())
            .await?;
        Ok::<_, zbus::Error>(())
    })
    .context("asking systemd to start kexec.target")
}
