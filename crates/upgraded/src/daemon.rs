//! The `upgraded` daemon: owns the D-Bus name, runs one job at a time (upgrade,
//! rollback, suspend, resume), persists the upgrade state as it goes, and recovers from
//! its own crash at start-up (thaws what it froze, drops an uncommitted generation).

mod backend;
mod recovery;
pub(crate) mod upgrade;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use anyhow::Context;
use nix::sys::signal::{SigSet, Signal};
use tracing::{error, info, warn};

use crate::api::{self, JobInfo, Signals};
use crate::config::{self, ConfigPaths, Settings};

/// Where the daemon notes the cgroups it froze, before freezing them: a crash between
/// the freeze and the thaw leaves this list for the next start to thaw. In /run: a
/// freeze does not outlive a reboot, and neither should the list.
pub const FROZEN_LIST: &str = "/run/upgraded/frozen";
/// Written just before kexec.target is started (after the state says kexec-started).
/// It lives in /run, which the kexec empties: a daemon that starts and finds it is in
/// the boot the kexec should have ended, so the kexec never happened.
pub const KEXEC_PENDING: &str = "/run/upgraded/kexec-started";

/// The `upgradectl` that services run to restore themselves (`internals restore-unit`),
/// where `make install` and the package put it.
pub const UPGRADECTL: &str = "/usr/bin/upgradectl";

/// The daemon's shared state.
pub struct Daemon {
    paths: ConfigPaths,
    boot_dir: PathBuf,
    settings: RwLock<Arc<Settings>>,
    /// The last reload's error; cleared by a good reload.
    config_error: Mutex<Option<String>>,
    job: Mutex<Option<JobInfo>>,
    next_job: AtomicU32,
    signals: OnceLock<Signals>,
}

/// Releases the job slot when a job ends, however it ends.
pub(crate) struct JobSlot {
    pub daemon: Arc<Daemon>,
    pub id: u32,
}

impl Drop for JobSlot {
    fn drop(&mut self) {
        let mut job = self.daemon.job.lock().unwrap_or_else(|e| e.into_inner());
        if job.as_ref().map(|j| j.id) == Some(self.id) {
            *job = None;
        }
    }
}

impl Daemon {
    pub fn new(paths: ConfigPaths, boot_dir: PathBuf, settings: Settings) -> Daemon {
        Daemon {
            paths,
            boot_dir,
            settings: RwLock::new(Arc::new(settings)),
            config_error: Mutex::new(None),
            job: Mutex::new(None),
            next_job: AtomicU32::new(1),
            signals: OnceLock::new(),
        }
    }

    pub fn settings(&self) -> Arc<Settings> {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn boot_dir(&self) -> &Path {
        &self.boot_dir
    }

    /// Re-reads the configuration; keeps the current one when the new one is invalid.
    pub fn reload(&self) -> Result<(), String> {
        match config::load(&self.paths) {
            Ok(loaded) => {
                *self.settings.write().unwrap_or_else(|e| e.into_inner()) =
                    Arc::new(loaded.settings);
                *self.config_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
                info!("configuration reloaded");
                Ok(())
            }
            Err(e) => {
                let msg = format!("{e}");
                error!("the configuration is invalid, keeping the last good one: {msg}");
                *self.config_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(msg.clone());
                Err(msg)
            }
        }
    }

    pub fn config_error(&self) -> Option<String> {
        self.config_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn current_job(&self) -> Option<JobInfo> {
        self.job.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Takes the one job slot, or says which job holds it.
    pub(crate) fn start_job(self: &Arc<Self>, kind: &str) -> Result<JobSlot, api::ApiError> {
        let mut job = self.job.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(j) = job.as_ref() {
            return Err(api::ApiError::Busy(format!(
                "job {} ({}) is running ({}); wait for it to finish",
                j.id, j.kind, j.step
            )));
        }
        let id = self.next_job.fetch_add(1, Ordering::Relaxed);
        *job = Some(JobInfo {
            id,
            kind: kind.to_owned(),
            step: "starting".into(),
        });
        Ok(JobSlot {
            daemon: self.clone(),
            id,
        })
    }

    /// Records and announces a job's step.
    pub(crate) fn progress(&self, job: u32, step: &str, detail: &str) {
        info!(job, step, "{detail}");
        if let Some(j) = self
            .job
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
            .filter(|j| j.id == job)
        {
            j.step = step.to_owned();
        }
        if let Some(s) = self.signals.get() {
            s.progress(job, step, detail);
        }
    }

    pub(crate) fn finished(&self, job: u32, success: bool, message: &str) {
        if success {
            info!(job, "{message}");
        } else {
            error!(job, "{message}");
        }
        if let Some(s) = self.signals.get() {
            s.finished(job, success, message);
        }
    }

    /// Waits until no job runs (for a clean stop: a job may hold frozen cgroups).
    fn wait_idle(&self) {
        let mut warned = false;
        while self.current_job().is_some() {
            if !warned {
                warn!("stopping: waiting for the running job to finish first");
                warned = true;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

/// The daemon's main: set up, recover, serve until SIGTERM.
pub fn main() -> anyhow::Result<()> {
    // Signals are taken by sigwait below; block them before any thread starts so that
    // every thread inherits the mask.
    let mut set = SigSet::empty();
    set.add(Signal::SIGHUP);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block().context("blocking signals")?;

    let paths = ConfigPaths::system();
    let loaded = config::load(&paths).context(
        "the configuration is invalid; `upgradectl config check` names the file and line",
    )?;
    let daemon = Arc::new(Daemon::new(paths, PathBuf::from("/boot"), loaded.settings));

    recovery::recover(&daemon);

    let backend: Arc<dyn api::Backend> = Arc::new(backend::DaemonBackend(daemon.clone()));
    let conn = zbus::blocking::connection::Builder::system()
        .context("connecting to the system bus")?
        .name(api::BUS_NAME)
        .context("asking for the bus name")?
        .serve_at(api::OBJECT_PATH, api::Manager::new(backend))
        .context("serving the API object")?
        .build()
        .with_context(|| {
            format!(
                "taking the bus name {} (is another upgraded running, or is the \
                 busconfig missing?)",
                api::BUS_NAME
            )
        })?;
    let _ = daemon.signals.set(Signals::new(conn.inner().clone()));

    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("serving org.upgraded.Upgraded1"),
    ]);
    info!("ready on {}", api::BUS_NAME);

    loop {
        match set.wait() {
            Ok(Signal::SIGHUP) => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
                let _ = daemon.reload();
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            }
            Ok(sig) => {
                info!("{sig}: stopping");
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
                daemon.wait_idle();
                return Ok(());
            }
            Err(e) => {
                warn!("sigwait: {e}");
            }
        }
    }
}
