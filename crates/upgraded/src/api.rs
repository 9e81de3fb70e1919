//! The D-Bus API of `upgraded`: names, the interface the daemon serves, the proxy
//! `upgradectl` calls, the reply types and the errors. Both sides use this one module,
//! so they cannot drift: the daemon supplies a [`Backend`], the interface here does the
//! D-Bus plumbing (access checks, encoding, running blocking work off the executor).
//!
//! Bus name `org.upgraded.Upgraded1`, object `/org/upgraded/Upgraded1`, interface
//! `org.upgraded.Upgraded1.Manager`. The `1` is the API's major version: an
//! incompatible change gets new names and the old ones stay served until dropped.
//! Replies that are records are JSON documents of the types below (`ListKernels`
//! returns a [`KernelInfo`] list, and so on); new fields may be added within a major
//! version, so readers must ignore unknown ones.
//!
//! Access: anyone may introspect, read the properties and call the read-only methods
//! (`Status`, `ListKernels`, `ListWorkloads`, `ListGenerations`); everything else needs
//! UID 0. The busconfig enforces this, and the interface checks the caller's UID again
//! with the bus (defense in depth: a wrong busconfig must not open the door).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::state::UpgradeReport;

pub const BUS_NAME: &str = "org.upgraded.Upgraded1";
pub const OBJECT_PATH: &str = "/org/upgraded/Upgraded1";
pub const INTERFACE: &str = "org.upgraded.Upgraded1.Manager";

/// Typed D-Bus errors, `org.upgraded.Upgraded1.Error.<Variant>`; the text says what
/// was wrong and what to do.
#[derive(Debug, Clone, zbus::DBusError)]
#[zbus(prefix = "org.upgraded.Upgraded1.Error")]
pub enum ApiError {
    #[zbus(error)]
    ZBus(zbus::Error),
    /// The caller is not root.
    AccessDenied(String),
    /// An argument is malformed.
    InvalidArgument(String),
    /// A kernel, workload or generation does not exist.
    NotFound(String),
    /// Another job runs, another suspend or resume (the daemon's or upgradectl's)
    /// holds the suspend lock, or the upgrade state does not allow this now.
    Busy(String),
    /// The pre-flight checks refused the upgrade; nothing was changed.
    PreflightFailed(String),
    /// The configuration is invalid; the daemon keeps the last good one.
    InvalidConfig(String),
    /// The operation failed; the message says which step and what state it left.
    Failed(String),
}

impl ApiError {
    /// The `Failed` error for an anyhow chain, with its causes.
    pub fn failed(err: &anyhow::Error) -> ApiError {
        ApiError::Failed(format!("{err:#}"))
    }

    /// The message without the D-Bus error name.
    pub fn message(&self) -> String {
        match self {
            ApiError::ZBus(e) => e.to_string(),
            ApiError::AccessDenied(m)
            | ApiError::InvalidArgument(m)
            | ApiError::NotFound(m)
            | ApiError::Busy(m)
            | ApiError::PreflightFailed(m)
            | ApiError::InvalidConfig(m)
            | ApiError::Failed(m) => m.clone(),
        }
    }
}

/// `upgradectl status`: where the machine and its last upgrade are.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusInfo {
    pub running_kernel: String,
    /// The upgrade state machine's phase (`idle`, `committed`, `booting`, ...).
    pub state: String,
    pub known_good_kernel: Option<String>,
    /// The generation of the current or last upgrade.
    pub current_generation: Option<String>,
    /// The job running now, if any.
    pub job: Option<JobInfo>,
    /// The last configuration reload that failed: the daemon runs on the last good one.
    pub config_error: Option<String>,
    pub report: UpgradeReport,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobInfo {
    pub id: u32,
    /// `upgrade`, `rollback`, `suspend`, `resume`.
    pub kind: String,
    /// What it does now, as the last progress signal said.
    pub step: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KernelInfo {
    pub release: String,
    pub kernel: String,
    pub initrd: Option<String>,
    pub running: bool,
    pub known_good: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkloadInfo {
    pub name: String,
    pub kind: String,
    pub selector: String,
    /// Resolves now: the process tree exists and can be named.
    pub resolved: bool,
    pub root_pid: Option<u32>,
    pub processes: usize,
    pub rss_bytes: u64,
    /// Why it does not resolve.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerationInfo {
    pub id: String,
    pub kernel: String,
    pub created: u64,
    pub workloads: Vec<String>,
    pub bytes: u64,
}

pub use crate::preflight::{CheckResult, Report as CheckReport, Status as CheckStatus};

/// What the daemon does behind the interface. Methods are called off the D-Bus
/// executor (they may block for seconds); access has been checked.
pub trait Backend: Send + Sync + 'static {
    fn status(&self) -> Result<StatusInfo, ApiError>;
    fn list_kernels(&self) -> Result<Vec<KernelInfo>, ApiError>;
    fn list_workloads(&self) -> Result<Vec<WorkloadInfo>, ApiError>;
    fn list_generations(&self) -> Result<Vec<GenerationInfo>, ApiError>;
    fn check(&self, kernel: &str) -> Result<CheckReport, ApiError>;
    /// Starts an upgrade job and returns its id; progress goes out as signals.
    fn upgrade(&self, kernel: &str) -> Result<u32, ApiError>;
    fn rollback(&self) -> Result<u32, ApiError>;
    /// Checkpoints one configured workload and stops it; returns the generation.
    fn suspend(&self, name: &str) -> Result<String, ApiError>;
    /// Restores a suspended workload; returns its new root PID.
    fn resume(&self, name: &str) -> Result<u32, ApiError>;
    /// Re-reads the configuration; on error keeps the old one and says why.
    fn reload(&self) -> Result<(), ApiError>;
}

/// The object served at [`OBJECT_PATH`].
pub struct Manager {
    backend: Arc<dyn Backend>,
}

impl Manager {
    pub fn new(backend: Arc<dyn Backend>) -> Manager {
        Manager { backend }
    }

    /// Runs `f` on the blocking thread pool, with the backend.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Backend) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let backend = self.backend.clone();
        blocking::unblock(move || f(backend.as_ref())).await
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<String, ApiError> {
    serde_json::to_string(value).map_err(|e| ApiError::Failed(format!("encoding a reply: {e}")))
}

/// Refuses callers other than root. The UID comes from the bus, which has it from the
/// kernel (SO_PEERCRED), not from the message.
async fn require_root(
    conn: &zbus::Connection,
    header: &zbus::message::Header<'_>,
    what: &str,
) -> Result<(), ApiError> {
    let sender = header
        .sender()
        .ok_or_else(|| ApiError::AccessDenied("the call has no sender".into()))?;
    let dbus = zbus::fdo::DBusProxy::new(conn).await?;
    let uid = dbus
        .get_connection_unix_user(zbus::names::BusName::Unique(sender.to_owned()))
        .await
        .map_err(|e| ApiError::AccessDenied(format!("cannot tell who is calling: {e}")))?;
    if uid == 0 {
        Ok(())
    } else {
        Err(ApiError::AccessDenied(format!(
            "{what} changes the system and needs root (the caller has UID {uid}); \
             run it with sudo"
        )))
    }
}

#[zbus::interface(name = "org.upgraded.Upgraded1.Manager")]
impl Manager {
    /// The state, the known-good kernel, the running job and the last upgrade report
    /// (a [`StatusInfo`] JSON document).
    async fn status(&self) -> Result<String, ApiError> {
        let s = self.run(|b| b.status()).await?;
        to_json(&s)
    }

    /// The installed kernels ([`KernelInfo`] list, JSON).
    async fn list_kernels(&self) -> Result<String, ApiError> {
        let k = self.run(|b| b.list_kernels()).await?;
        to_json(&k)
    }

    /// The configured workloads and whether they resolve ([`WorkloadInfo`] list, JSON).
    async fn list_workloads(&self) -> Result<String, ApiError> {
        let w = self.run(|b| b.list_workloads()).await?;
        to_json(&w)
    }

    /// The committed generations in the area ([`GenerationInfo`] list, JSON).
    async fn list_generations(&self) -> Result<String, ApiError> {
        let g = self.run(|b| b.list_generations()).await?;
        to_json(&g)
    }

    /// The pre-flight checks for `kernel`, without freezing anything (root: it test-
    /// loads the kernel and dry-runs CRIU). A [`CheckReport`] JSON document.
    async fn check(
        &self,
        kernel: String,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] header: zbus::message::Header<'_>,
    ) -> Result<String, ApiError> {
        require_root(conn, &header, "Check").await?;
        let r = self.run(move |b| b.check(&kernel)).await?;
        to_json(&r)
    }

    /// Starts an upgrade to `kernel`; returns the job id. Progress: `JobProgress`,
    /// then one `JobFinished`.
    async fn upgrade(
        &self,
        kernel: String,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] header: zbus::message::Header<'_>,
    ) -> Result<u32, ApiError> {
        require_root(conn, &header, "Upgrade").await?;
        self.run(move |b| b.upgrade(&kernel)).await
    }

    /// Goes back to the known-good kernel with the workloads; returns the job id.
    async fn rollback(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] header: zbus::message::Header<'_>,
    ) -> Result<u32, ApiError> {
        require_root(conn, &header, "Rollback").await?;
        self.run(|b| b.rollback()).await
    }

    /// Checkpoints a configured workload and stops it; returns the generation id.
    async fn suspend(
        &self,
        name: String,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] header: zbus::message::Header<'_>,
    ) -> Result<String, ApiError> {
        require_root(conn, &header, "Suspend").await?;
        self.run(move |b| b.suspend(&name)).await
    }

    /// Restores a suspended workload; returns its root PID.
    async fn resume(
        &self,
        name: String,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] header: zbus::message::Header<'_>,
    ) -> Result<u32, ApiError> {
        require_root(conn, &header, "Resume").await?;
        self.run(move |b| b.resume(&name)).await
    }

    /// Re-reads the configuration (as SIGHUP does). An invalid configuration is an
    /// `InvalidConfig` error naming file and line; the daemon keeps the last good one.
    async fn reload(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] header: zbus::message::Header<'_>,
    ) -> Result<(), ApiError> {
        require_root(conn, &header, "Reload").await?;
        self.run(|b| b.reload()).await
    }

    /// The upgrade state machine's phase.
    #[zbus(property(emits_changed_signal = "false"))]
    async fn state(&self) -> zbus::fdo::Result<String> {
        let s = self.run(|b| b.status()).await.map_err(fdo_error)?;
        Ok(s.state)
    }

    /// The kernel a rollback returns to ("" when none is recorded).
    #[zbus(property(emits_changed_signal = "false"))]
    async fn known_good_kernel(&self) -> zbus::fdo::Result<String> {
        let s = self.run(|b| b.status()).await.map_err(fdo_error)?;
        Ok(s.known_good_kernel.unwrap_or_default())
    }

    /// The generation of the current or last upgrade ("" when none).
    #[zbus(property(emits_changed_signal = "false"))]
    async fn current_generation(&self) -> zbus::fdo::Result<String> {
        let s = self.run(|b| b.status()).await.map_err(fdo_error)?;
        Ok(s.current_generation.unwrap_or_default())
    }

    /// The id of the running job, 0 when none.
    #[zbus(property(emits_changed_signal = "false"))]
    async fn active_job(&self) -> zbus::fdo::Result<u32> {
        let s = self.run(|b| b.status()).await.map_err(fdo_error)?;
        Ok(s.job.map(|j| j.id).unwrap_or(0))
    }

    /// A step of job `job` started.
    #[zbus(signal)]
    pub async fn job_progress(
        emitter: &zbus::object_server::SignalEmitter<'_>,
        job: u32,
        step: &str,
        detail: &str,
    ) -> zbus::Result<()>;

    /// Job `job` ended; `message` says how (and, on failure, what state it left).
    #[zbus(signal)]
    pub async fn job_finished(
        emitter: &zbus::object_server::SignalEmitter<'_>,
        job: u32,
        success: bool,
        message: &str,
    ) -> zbus::Result<()>;
}

fn fdo_error(e: ApiError) -> zbus::fdo::Error {
    zbus::fdo::Error::Failed(e.message())
}

/// Emits the job signals from any thread (jobs run on threads of their own).
#[derive(Clone)]
pub struct Signals {
    conn: zbus::Connection,
}

impl Signals {
    pub fn new(conn: zbus::Connection) -> Signals {
        Signals { conn }
    }

    pub fn progress(&self, job: u32, step: &str, detail: &str) {
        self.emit("JobProgress", &(job, step, detail));
    }

    pub fn finished(&self, job: u32, success: bool, message: &str) {
        self.emit("JobFinished", &(job, success, message));
    }

    /// A lost signal only costs a client its progress display: logged, not fatal.
    fn emit<B>(&self, member: &str, body: &B)
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        let r =
            zbus::block_on(
                self.conn
                    .emit_signal(None::<()>, OBJECT_PATH, INTERFACE, member, body),
            );
        if let Err(e) = r {
            tracing::warn!("sending {member}: {e}");
        }
    }
}

/// The client side, for `upgradectl` (blocking) and tests.
#[zbus::proxy(
    interface = "org.upgraded.Upgraded1.Manager",
    default_service = "org.upgraded.Upgraded1",
    default_path = "/org/upgraded/Upgraded1"
)]
pub trait Client {
    fn status(&self) -> Result<String, ApiError>;
    fn list_kernels(&self) -> Result<String, ApiError>;
    fn list_workloads(&self) -> Result<String, ApiError>;
    fn list_generations(&self) -> Result<String, ApiError>;
    fn check(&self, kernel: &str) -> Result<String, ApiError>;
    fn upgrade(&self, kernel: &str) -> Result<u32, ApiError>;
    fn rollback(&self) -> Result<u32, ApiError>;
    fn suspend(&self, name: &str) -> Result<String, ApiError>;
    fn resume(&self, name: &str) -> Result<u32, ApiError>;
    fn reload(&self) -> Result<(), ApiError>;

    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn known_good_kernel(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn current_generation(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn active_job(&self) -> zbus::Result<u32>;

    #[zbus(signal)]
    fn job_progress(&self, job: u32, step: String, detail: String) -> zbus::Result<()>;
    #[zbus(signal)]
    fn job_finished(&self, job: u32, success: bool, message: String) -> zbus::Result<()>;
}

/// Decodes a JSON reply.
pub fn from_json<T: serde::de::DeserializeOwned>(what: &str, json: &str) -> anyhow::Result<T> {
    serde_json::from_str(json).map_err(|e| {
        anyhow::anyhow!(
            "the daemon's reply to {what} is not what this upgradectl understands ({e}); \
             are upgradectl and upgraded from the same version?"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::object_server::Interface;

    /// The proxy's methods and signals are the interface's: compare the names in the
    /// served introspection with the ones the client calls.
    #[test]
    fn client_and_interface_agree() {
        let mut xml = String::new();
        Manager::introspect_to_writer(
            &Manager {
                backend: Arc::new(Nothing),
            },
            &mut xml,
            0,
        );
        for member in [
            "Status",
            "ListKernels",
            "ListWorkloads",
            "ListGenerations",
            "Check",
            "Upgrade",
            "Rollback",
            "Suspend",
            "Resume",
            "Reload",
            "JobProgress",
            "JobFinished",
            "State",
            "KnownGoodKernel",
            "CurrentGeneration",
            "ActiveJob",
        ] {
            assert!(
                xml.contains(&format!("name=\"{member}\"")),
                "{member} missing from\n{xml}"
            );
        }
        assert_eq!(
            <Manager as Interface>::name().as_str(),
            INTERFACE,
            "interface name"
        );
        // The header and connection arguments are the daemon's, not the caller's.
        assert!(!xml.contains("name=\"header\""), "{xml}");
    }

    struct Nothing;
    impl Backend for Nothing {
        fn status(&self) -> Result<StatusInfo, ApiError> {
            Err(ApiError::Failed("test".into()))
        }
        fn list_kernels(&self) -> Result<Vec<KernelInfo>, ApiError> {
            Ok(vec![])
        }
        fn list_workloads(&self) -> Result<Vec<WorkloadInfo>, ApiError> {
            Ok(vec![])
        }
        fn list_generations(&self) -> Result<Vec<GenerationInfo>, ApiError> {
            Ok(vec![])
        }
        fn check(&self, _: &str) -> Result<CheckReport, ApiError> {
            Err(ApiError::Failed("test".into()))
        }
        fn upgrade(&self, _: &str) -> Result<u32, ApiError> {
            Ok(1)
        }
        fn rollback(&self) -> Result<u32, ApiError> {
            Ok(1)
        }
        fn suspend(&self, _: &str) -> Result<String, ApiError> {
            Ok(String::new())
        }
        fn resume(&self, _: &str) -> Result<u32, ApiError> {
            Ok(1)
        }
        fn reload(&self) -> Result<(), ApiError> {
            Ok(())
        }
    }

    #[test]
    fn errors_have_versioned_names() {
        use zbus::DBusError;
        let e = ApiError::AccessDenied("x".into());
        assert_eq!(
            e.name().as_str(),
            "org.upgraded.Upgraded1.Error.AccessDenied"
        );
        assert_eq!(e.message(), "x");
    }
}
