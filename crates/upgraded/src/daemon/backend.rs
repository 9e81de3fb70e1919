//! The daemon behind the D-Bus interface: each method of [`api::Backend`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dumper::criu::Criu;
use dumper::workload::{self, Resolved};
use tracing::warn;

use super::upgrade::{self, Plan};
use super::Daemon;
use crate::api::{
    self, ApiError, CheckReport, GenerationInfo, KernelInfo, StatusInfo, WorkloadInfo,
};
use crate::boot::running_release;
use crate::config::Settings;
use crate::kernel::{self, InstalledKernel, Version};
use crate::kexec::{self, Method};
use crate::local;
use crate::preflight;
use crate::preflight::{Input, ProbeError, TargetKernel, WorkloadInput};
use crate::state::{Phase, StateStore, UpgradeState};
use dumper::manifest::WorkloadName;

pub struct DaemonBackend(pub Arc<Daemon>);

fn load_state(settings: &Settings) -> Result<(UpgradeState, PathBuf), ApiError> {
    let area = local::open_area(settings).map_err(|e| ApiError::failed(&e))?;
    let store = StateStore::for_area(area.root());
    let state = store
        .load()
        .map_err(|e| ApiError::Failed(format!("reading the upgrade state: {e}")))?;
    Ok((state, area.root().to_owned()))
}

/// A configured workload resolved now, or why not.
fn resolve_configured(settings: &Settings) -> Vec<WorkloadInput> {
    settings
        .workloads
        .iter()
        .map(|w| WorkloadInput {
            name: w.name.clone(),
            resolved: WorkloadName::new(w.name.as_str())
                .map_err(dumper::Error::from)
                .and_then(|name| workload::resolve(&name, &local::target_of(&w.selector))),
        })
        .collect()
}

/// The real side effects of the pre-flight.
struct RealProbe<'a> {
    area_root: &'a Path,
    tcp_established: bool,
}

impl preflight::Probe for RealProbe<'_> {
    fn test_load(&self, k: &InstalledKernel, cmdline: &str) -> Result<Method, ProbeError> {
        let method = kexec::load(&kexec::LoadRequest {
            kernel: &k.image,
            initrd: k.initrd.as_deref(),
            cmdline,
        })?;
        kexec::unload()?;
        Ok(method)
    }

    fn criu_dry_run(&self, w: &Resolved) -> Result<(), ProbeError> {
        let criu = Criu::locate()?;
        // On the area's file system (the space check and the dump see the same disk);
        // a dot name, which the area's listing ignores.
        let scratch = tempfile::Builder::new()
            .prefix(".preflight-")
            .tempdir_in(self.area_root)?;
        let bytes = dumper::checkpoint::dry_run(
            &criu,
            w,
            &dumper::checkpoint::CheckpointOptions {
                leave_running: true,
                tcp_established: self.tcp_established,
                kernel_features: Vec::new(),
                ..Default::default()
            },
            scratch.path(),
        )?;
        tracing::info!(workload = %w.name, "a trial dump took {}", human(bytes));
        Ok(())
    }

    fn free_bytes(&self, path: &Path) -> Result<u64, ProbeError> {
        let st = nix::sys::statvfs::statvfs(path)?;
        Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
    }

    fn area_fs_type(&self, path: &Path) -> Result<dumper::area::FsType, ProbeError> {
        Ok(dumper::area::FsType::of(path)?)
    }

    fn area_writable(&self, path: &Path) -> Result<(), ProbeError> {
        Ok(dumper::Area::open(path)?.check_writable()?)
    }

    fn criu_version(&self) -> Result<Version, ProbeError> {
        if let Some(v) = dpkg_version("criu") {
            return Ok(Version::parse(&v)?);
        }
        let v = Criu::locate()?.version()?;
        Ok(Version::parse(&format!(
            "{}.{}.{}",
            v.major, v.minor, v.sublevel
        ))?)
    }

    fn glibc_version(&self) -> Result<Version, ProbeError> {
        let v = dpkg_version("libc6").ok_or("dpkg does not know libc6")?;
        Ok(Version::parse(&v)?)
    }

    fn load_kexec_setting(&self) -> Result<Option<bool>, ProbeError> {
        Ok(kexec::load_kexec_setting(Path::new("/etc/default/kexec"))?)
    }

    fn own_mount_namespace(&self, w: &Resolved) -> Result<bool, ProbeError> {
        let mine = std::fs::read_link("/proc/1/ns/mnt")?;
        let theirs = std::fs::read_link(format!("/proc/{}/ns/mnt", w.root_pid))?;
        Ok(mine != theirs)
    }
}

fn dpkg_version(package: &str) -> Option<String> {
    let v = dumper::cmd::run("dpkg-query", ["-W", "-f", "${Version}", package]).ok()?;
    let v = v.trim().to_owned();
    (!v.is_empty()).then_some(v)
}

fn human(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0))
}

impl DaemonBackend {
    /// Runs every pre-flight check for `spec`; returns the report and, when it passed,
    /// the plan an upgrade job would follow.
    fn preflight(&self, spec: &str) -> Result<(CheckReport, Option<Plan>), ApiError> {
        let settings = self.0.settings();
        let area = local::open_area(&settings).map_err(|e| ApiError::failed(&e))?;
        let running = running_release();
        let current_cmdline = std::fs::read_to_string("/proc/cmdline")
            .map_err(|e| ApiError::Failed(format!("reading /proc/cmdline: {e}")))?
            .trim()
            .to_owned();
        let boot = self.0.boot_dir();
        let target = match kernel::resolve_kernel(boot, spec) {
            Ok(k) => TargetKernel::Found(k),
            Err(e) => TargetKernel::Missing(preflight::kernel_missing(spec, &e)),
        };
        let read_config = |release: &str| {
            kernel::read_kernel_config(&boot.join(format!("config-{release}"))).ok()
        };
        let target_config = match &target {
            TargetKernel::Found(k) => read_config(&k.release),
            TargetKernel::Missing(_) => None,
        };
        let memmap = settings.area.location.memmap().map(|m| m.to_string());
        // The generation id is not known yet; a well-formed stand-in of the same length
        // tests the command line's shape and size.
        let cmdline = kernel::target_cmdline(
            &current_cmdline,
            "20000101T000000Z-0000000000000000",
            None,
            &settings.kernel.extra_cmdline,
            memmap.as_deref(),
        );
        let tcp_established = settings.workloads.iter().any(|w| w.tcp_established);
        let input = Input {
            target,
            running_config: read_config(&running),
            running_release: running.clone(),
            target_config,
            cmdline,
            needs: preflight::needs(
                settings.workloads.iter().any(|w| w.pre_dump.any()),
                settings.area.location.kind(),
            ),
            workloads: resolve_configured(&settings),
            area_path: area.root().to_owned(),
            margin_percent: settings.area.min_free_margin_percent,
            area_device: crate::area_device::DeviceSpec::of(&settings.area.location).map(|spec| {
                preflight::AreaDeviceInput {
                    found: crate::area_device::facts(&crate::area_device::Host::system(), &spec)
                        .map_err(|e| format!("{:#}", anyhow::Error::from(e))),
                    kind: spec.kind,
                    device: spec.device,
                    memmap: spec.memmap,
                    running_cmdline: current_cmdline.clone(),
                }
            }),
            staged_suspends: local::staged_suspends(&local::Staging::system())
                .map_err(|e| format!("{e:#}")),
        };
        let probe = RealProbe {
            area_root: area.root(),
            tcp_established,
        };
        let report = preflight::run(&input, &probe);
        let TargetKernel::Found(target) = input.target else {
            return Ok((report, None));
        };
        if !report.passed() {
            return Ok((report, None));
        }
        let workloads = input
            .workloads
            .into_iter()
            .filter_map(|w| w.resolved.ok())
            .collect();
        Ok((
            report,
            Some(Plan {
                target,
                running,
                current_cmdline,
                workloads,
                tcp_established,
                pre_dumps: settings
                    .workloads
                    .iter()
                    .filter(|w| w.pre_dump.any())
                    .map(|w| (w.name.clone(), w.pre_dump))
                    .collect(),
            }),
        ))
    }
}

impl api::Backend for DaemonBackend {
    fn status(&self) -> Result<StatusInfo, ApiError> {
        let settings = self.0.settings();
        let (state, _) = load_state(&settings)?;
        let u = state.upgrade();
        Ok(StatusInfo {
            running_kernel: running_release(),
            state: state.phase().to_string(),
            known_good_kernel: u.map(|u| u.known_good_release.to_string()),
            current_generation: u.and_then(|u| u.generation.as_ref().map(|g| g.to_string())),
            job: self.0.current_job(),
            config_error: self.0.config_error(),
            report: state.report(),
        })
    }

    fn list_kernels(&self) -> Result<Vec<KernelInfo>, ApiError> {
        let running = running_release();
        let known_good = load_state(&self.0.settings())
            .ok()
            .and_then(|(s, _)| s.upgrade().map(|u| u.known_good_release.to_string()));
        let kernels = kernel::installed_kernels(self.0.boot_dir())
            .map_err(|e| ApiError::Failed(e.to_string()))?;
        Ok(kernels
            .into_iter()
            .map(|k| KernelInfo {
                running: k.release == running,
                known_good: known_good.as_deref() == Some(k.release.as_str()),
                kernel: k.image.display().to_string(),
                initrd: k.initrd.as_ref().map(|p| p.display().to_string()),
                release: k.release,
            })
            .collect())
    }

    fn list_workloads(&self) -> Result<Vec<WorkloadInfo>, ApiError> {
        let settings = self.0.settings();
        let resolved: Vec<_> = resolve_configured(&settings)
            .into_iter()
            .map(|w| (w.name, w.resolved.map_err(|e| e.to_string())))
            .collect();
        Ok(settings
            .workloads
            .iter()
            .zip(resolved)
            .map(|(w, (_, r))| {
                let kind = w.selector.kind().as_str().to_owned();
                let selector = serde_json::to_value(&w.selector)
                    .ok()
                    .and_then(|v| {
                        v.as_object().and_then(|o| {
                            o.iter()
                                .find(|(k, _)| k.as_str() != "kind")
                                .map(|(_, v)| v.to_string().trim_matches('"').to_owned())
                        })
                    })
                    .unwrap_or_default();
                match r {
                    Ok(r) => WorkloadInfo {
                        name: w.name.clone(),
                        kind,
                        selector,
                        resolved: true,
                        root_pid: Some(r.root_pid),
                        processes: r.pids.len(),
                        rss_bytes: r.rss_bytes,
                        error: None,
                    },
                    Err(e) => WorkloadInfo {
                        name: w.name.clone(),
                        kind,
                        selector,
                        resolved: false,
                        root_pid: None,
                        processes: 0,
                        rss_bytes: 0,
                        error: Some(e),
                    },
                }
            })
            .collect())
    }

    fn list_generations(&self) -> Result<Vec<GenerationInfo>, ApiError> {
        let settings = self.0.settings();
        let area = local::open_area(&settings).map_err(|e| ApiError::failed(&e))?;
        let mut ids = area.list().map_err(|e| ApiError::Failed(e.to_string()))?;
        ids.sort();
        Ok(ids
            .into_iter()
            .filter_map(|id| match area.load(&id) {
                Ok(m) => Some(GenerationInfo {
                    id: id.to_string(),
                    kernel: m.source.kernel_release.clone(),
                    created: m.created_unix,
                    workloads: m.workloads.iter().map(|w| w.name.to_string()).collect(),
                    bytes: m
                        .workloads
                        .iter()
                        .flat_map(|w| w.images.iter())
                        .map(|i| i.size)
                        .sum(),
                }),
                Err(e) => {
                    warn!("generation {id}: {e}");
                    None
                }
            })
            .collect())
    }

    fn check(&self, kernel: &str) -> Result<CheckReport, ApiError> {
        let _slot = self.0.start_job("check")?;
        Ok(self.preflight(kernel)?.0)
    }

    fn upgrade(&self, spec: &str) -> Result<u32, ApiError> {
        let slot = self.0.start_job("upgrade")?;
        let settings = self.0.settings();
        let (state, _) = load_state(&settings)?;
        if !(state.phase() == Phase::Idle || state.phase().is_terminal()) {
            return Err(ApiError::Busy(format!(
                "an upgrade is under way (state {}); `upgradectl status` shows it",
                state.phase()
            )));
        }
        self.0.progress(slot.id, "pre-flight", spec);
        let (report, plan) = self.preflight(spec)?;
        let Some(plan) = plan else {
            return Err(ApiError::PreflightFailed(format!(
                "the pre-flight checks refused the upgrade to {spec}; nothing was frozen or \
                 written:\n{}",
                report.failures()
            )));
        };
        // The workloads are resolved: the matrix's first fault point.
        dumper::faults::point("upgrade::resolve").map_err(|e| ApiError::failed(&e.into()))?;
        let id = slot.id;
        std::thread::Builder::new()
            .name(format!("job-{id}"))
            .spawn(move || {
                let daemon = slot.daemon.clone();
                match upgrade::run(&daemon, id, &settings, plan) {
                    Ok(_) => {}
                    Err(e) => daemon.finished(id, false, &format!("{e:#}")),
                }
                drop(slot);
            })
            .map_err(|e| ApiError::Failed(format!("starting the upgrade job: {e}")))?;
        Ok(id)
    }

    /// Back to the known-good kernel of the last upgrade, with the workloads: an
    /// upgrade whose target is that kernel (same checks, same checkpoint and kexec).
    fn rollback(&self) -> Result<u32, ApiError> {
        let (state, _) = load_state(&self.0.settings())?;
        let Some(u) = state.upgrade() else {
            return Err(ApiError::NotFound(
                "no upgrade is recorded, so there is no known-good kernel to go back to".into(),
            ));
        };
        if !state.phase().is_terminal() {
            return Err(ApiError::Busy(format!(
                "the upgrade is still under way (state {}); the boot side rolls back by \
                 itself when the new kernel fails its checks",
                state.phase()
            )));
        }
        let known_good = u.known_good_release.to_string();
        if known_good == running_release() {
            return Err(ApiError::InvalidArgument(format!(
                "the known-good kernel {known_good} is the one running; nothing to roll back"
            )));
        }
        self.upgrade(&known_good)
    }

    fn suspend(&self, name: &str) -> Result<String, ApiError> {
        let _slot = self.0.start_job("suspend")?;
        let settings = self.0.settings();
        if settings.workload(name).is_none() {
            return Err(ApiError::NotFound(format!(
                "no workload {name:?} is configured; `upgradectl workloads` lists them"
            )));
        }
        let mut out = Vec::new();
        local::suspend(&settings, name, true, &mut out).map_err(|e| suspend_error(&e))?;
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or_default();
        Ok(v["generation"].as_str().unwrap_or_default().to_owned())
    }

    fn resume(&self, name: &str) -> Result<u32, ApiError> {
        let _slot = self.0.start_job("resume")?;
        let settings = self.0.settings();
        let mut out = Vec::new();
        local::resume(&settings, name, true, &mut out).map_err(|e| suspend_error(&e))?;
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or_default();
        Ok(v["workloads"][0]["pid"].as_u64().unwrap_or_default() as u32)
    }

    fn reload(&self) -> Result<(), ApiError> {
        self.0.reload().map_err(ApiError::InvalidConfig)
    }
}

/// A suspend's or resume's error for D-Bus: `Busy` while another holds the suspend
/// lock (the caller may try again), `Failed` otherwise.
fn suspend_error(err: &anyhow::Error) -> ApiError {
    if local::is_lock_held(err) {
        ApiError::Busy(format!("{err:#}"))
    } else {
        ApiError::failed(err)
    }
}
