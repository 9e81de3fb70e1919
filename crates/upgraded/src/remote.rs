//! `upgradectl` commands that go through the daemon over D-Bus (status, kernels,
//! workloads, check, upgrade, rollback, suspend, resume, reload), with the proxy from
//! [`crate::api`].
//!
//! Exit codes (documented in the man page and README): 0 success, 1 failure, 2 usage
//! error, 3 refused by the pre-flight checks (nothing was changed), 4 access denied,
//! 5 the daemon is not reachable.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::api::{
    self, ApiError, CheckReport, CheckStatus, ClientProxyBlocking, GenerationInfo, KernelInfo,
    StatusInfo, WorkloadInfo,
};

/// An error with its own exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    AccessDenied(String),
    #[error("{0}")]
    Unavailable(String),
}

/// The exit code for an error chain.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<CliError>() {
            return match e {
                CliError::Refused(_) => 3,
                CliError::AccessDenied(_) => 4,
                CliError::Unavailable(_) => 5,
            };
        }
    }
    1
}

/// Maps a D-Bus error to one with an exit code and a hint.
fn call_error(what: &str, e: ApiError) -> anyhow::Error {
    match e {
        ApiError::AccessDenied(m) => CliError::AccessDenied(m).into(),
        ApiError::PreflightFailed(m) => CliError::Refused(m).into(),
        ApiError::ZBus(zbus::Error::MethodError(name, msg, _))
            if name.as_str() == "org.freedesktop.DBus.Error.AccessDenied" =>
        {
            CliError::AccessDenied(format!(
                "{what} needs root: {}; run it with sudo",
                msg.unwrap_or_default()
            ))
            .into()
        }
        ApiError::ZBus(zbus::Error::MethodError(name, msg, _))
            if name.as_str() == "org.freedesktop.DBus.Error.ServiceUnknown"
                || name.as_str() == "org.freedesktop.DBus.Error.NameHasNoOwner" =>
        {
            CliError::Unavailable(format!(
                "the upgraded daemon is not running ({}); start it with \
                 `systemctl start upgraded`",
                msg.unwrap_or_default()
            ))
            .into()
        }
        other => anyhow::anyhow!("{what}: {}", other.message()),
    }
}

/// Connects to the daemon. Calls may take minutes (a pre-flight dumps every workload
/// once), hence the long method timeout.
pub fn connect() -> anyhow::Result<ClientProxyBlocking<'static>> {
    let conn = zbus::blocking::connection::Builder::system()
        .and_then(|b| b.method_timeout(Duration::from_secs(30 * 60)).build())
        .map_err(|e| CliError::Unavailable(format!("cannot reach the system bus: {e}")))?;
    ClientProxyBlocking::new(&conn).context("making the upgraded proxy")
}

pub fn status(json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let p = connect()?;
    let text = p.status().map_err(|e| call_error("status", e))?;
    if json {
        writeln!(out, "{text}")?;
        return Ok(());
    }
    let s: StatusInfo = api::from_json("Status", &text)?;
    if let Some(banner) = banner(&s) {
        writeln!(out, "{banner}\n")?;
    }
    writeln!(out, "running kernel  {}", s.running_kernel)?;
    writeln!(out, "state           {}", s.state)?;
    writeln!(
        out,
        "known-good      {}",
        s.known_good_kernel.as_deref().unwrap_or("-")
    )?;
    writeln!(
        out,
        "generation      {}",
        s.current_generation.as_deref().unwrap_or("-")
    )?;
    if let Some(j) = &s.job {
        writeln!(out, "job             {} {} ({})", j.id, j.kind, j.step)?;
    }
    if let Some(e) = &s.config_error {
        writeln!(
            out,
            "config          INVALID, running on the last good one: {e}"
        )?;
    }
    writeln!(out)?;
    write!(out, "{}", s.report)?;
    Ok(())
}

/// What an admin must not miss: an upgrade that failed after its commit left the
/// system up without the workloads it carried, and only their images remain.
fn banner(s: &StatusInfo) -> Option<String> {
    if s.report.state != crate::state::Phase::Failed {
        return None;
    }
    let gen = s.report.generation.as_ref()?;
    Some(format!(
        "ATTENTION: the last upgrade failed; the workloads it carried are NOT running.\n\
         Their images are kept in generation {gen}: `upgradectl images verify {gen}`, then \
         `upgradectl restore --generation {gen}` brings them back on this kernel.\n\
         Why: {}",
        s.report.last_error.as_deref().unwrap_or("(not recorded)")
    ))
}

pub fn kernels(json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let p = connect()?;
    let text = p.list_kernels().map_err(|e| call_error("kernels", e))?;
    if json {
        writeln!(out, "{text}")?;
        return Ok(());
    }
    let ks: Vec<KernelInfo> = api::from_json("ListKernels", &text)?;
    for k in ks {
        let mut tags = Vec::new();
        if k.running {
            tags.push("running");
        }
        if k.known_good {
            tags.push("known-good");
        }
        if k.initrd.is_none() {
            tags.push("no initrd");
        }
        writeln!(out, "{:<24} {}", k.release, tags.join(", "))?;
    }
    Ok(())
}

pub fn workloads(json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let p = connect()?;
    let text = p.list_workloads().map_err(|e| call_error("workloads", e))?;
    if json {
        writeln!(out, "{text}")?;
        return Ok(());
    }
    let ws: Vec<WorkloadInfo> = api::from_json("ListWorkloads", &text)?;
    if ws.is_empty() {
        writeln!(
            out,
            "no workloads configured ([[workload]] in /etc/upgraded/upgraded.toml)"
        )?;
    }
    for w in ws {
        match (w.resolved, w.root_pid) {
            (true, Some(pid)) => writeln!(
                out,
                "{:<16} {:<8} {:<24} PID {pid}, {} processes, {:.1} MiB",
                w.name,
                w.kind,
                w.selector,
                w.processes,
                w.rss_bytes as f64 / 1048576.0
            )?,
            _ => writeln!(
                out,
                "{:<16} {:<8} {:<24} NOT FOUND: {}",
                w.name,
                w.kind,
                w.selector,
                w.error.unwrap_or_default()
            )?,
        }
    }
    Ok(())
}

pub fn generations(json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let p = connect()?;
    let text = p
        .list_generations()
        .map_err(|e| call_error("generations", e))?;
    if json {
        writeln!(out, "{text}")?;
        return Ok(());
    }
    let gs: Vec<GenerationInfo> = api::from_json("ListGenerations", &text)?;
    for g in gs {
        writeln!(out, "{} {} {}", g.id, g.kernel, g.workloads.join(","))?;
    }
    Ok(())
}

fn print_checks(r: &CheckReport, out: &mut dyn Write) -> anyhow::Result<()> {
    for c in &r.checks {
        let mark = match c.status {
            CheckStatus::Pass => "pass",
            CheckStatus::Warn => "WARN",
            CheckStatus::Fail => "FAIL",
            CheckStatus::Skipped => "skip",
        };
        writeln!(out, "[{mark}] {:<22} {}", c.name, c.detail)?;
        if let Some(h) = &c.hint {
            if c.status != CheckStatus::Pass {
                writeln!(out, "       {:<22} hint: {h}", "")?;
            }
        }
    }
    Ok(())
}

pub fn check(kernel: &str, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let p = connect()?;
    let text = p.check(kernel).map_err(|e| call_error("check", e))?;
    let r: CheckReport = api::from_json("Check", &text)?;
    if json {
        writeln!(out, "{text}")?;
    } else {
        print_checks(&r, out)?;
    }
    if !r.passed() {
        return Err(CliError::Refused(format!(
            "the pre-flight checks for {kernel} failed; an upgrade would be refused"
        ))
        .into());
    }
    Ok(())
}

pub fn upgrade(
    kernel: &str,
    dry_run: bool,
    yes: bool,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if dry_run {
        check(kernel, json, out)?;
        if !json {
            writeln!(
                out,
                "dry run: every check passed; `upgradectl upgrade {kernel}` would \
                 checkpoint the workloads and kexec into it"
            )?;
        }
        return Ok(());
    }
    confirm(
        yes,
        &format!("checkpoint the configured workloads and kexec into {kernel}"),
    )?;
    let p = connect()?;
    // Subscribe before the call: the job may report before the reply arrives.
    let progress = p.receive_job_progress()?;
    let finished = p.receive_job_finished()?;
    let gone = daemon_exits(&p)?;
    let job = p.upgrade(kernel).map_err(|e| call_error("upgrade", e))?;
    follow_job(
        job,
        (progress, finished, gone),
        json,
        out,
        &format!("upgrade to {kernel}"),
    )
}

/// The bus name's owner changes: upgraded stopped (a crash, a restart) or came back.
/// Subscribed before a job starts, like its signals.
fn daemon_exits(
    p: &ClientProxyBlocking<'static>,
) -> anyhow::Result<zbus::blocking::fdo::NameOwnerChangedIterator> {
    let dbus = zbus::blocking::fdo::DBusProxy::new(p.inner().connection())
        .context("making the bus proxy")?;
    dbus.receive_name_owner_changed_with_args(&[(0, api::BUS_NAME)])
        .context("watching upgraded on the bus")
}

/// What ends the wait for a job.
enum JobEnd {
    Finished { success: bool, message: String },
    DaemonGone,
}

/// Shows a job's progress until its `JobFinished`; fails when the job failed, or when
/// upgraded leaves the bus first (it crashed or was stopped: the job will never report).
fn follow_job(
    job: u32,
    (progress, finished, gone): (
        api::JobProgressIterator,
        api::JobFinishedIterator,
        zbus::blocking::fdo::NameOwnerChangedIterator,
    ),
    json: bool,
    out: &mut dyn Write,
    what: &str,
) -> anyhow::Result<()> {
    let bar = (!json && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let bar2 = bar.clone();
    let quiet = json;
    std::thread::spawn(move || {
        for sig in progress {
            let Ok(a) = sig.args() else { continue };
            if a.job != job {
                continue;
            }
            let line = format!("{}: {}", a.step, a.detail);
            match &bar2 {
                Some(b) => b.set_message(line),
                None if !quiet => eprintln!("{line}"),
                None => {}
            }
        }
    });
    let (tx, ends) = std::sync::mpsc::channel::<JobEnd>();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for sig in finished {
            let Ok(a) = sig.args() else { continue };
            if a.job == job {
                let _ = tx.send(JobEnd::Finished {
                    success: a.success,
                    message: a.message.to_owned(),
                });
                return;
            }
        }
    });
    std::thread::spawn(move || {
        // Any change of owner: the upgraded that runs the job is gone.
        if gone.into_iter().next().is_some() {
            let _ = tx2.send(JobEnd::DaemonGone);
        }
    });
    let end = ends.recv();
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    match end {
        Ok(JobEnd::Finished { success, message }) => {
            if json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"job": job, "success": success, "message": message})
                )?;
            } else {
                writeln!(out, "{message}")?;
            }
            if success {
                return Ok(());
            }
            bail!("{what} failed");
        }
        Ok(JobEnd::DaemonGone) => bail!(
            "upgraded stopped before job {job} ({what}) reported its end (it crashed or was \
             stopped); when it starts again it finishes or undoes what the job left: \
             `upgradectl status` shows the outcome, `journalctl -u upgraded` why"
        ),
        Err(_) => bail!(
            "lost the connection to upgraded before job {job} reported its end; \
             `upgradectl status` shows where it got"
        ),
    }
}

pub fn rollback(yes: bool, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    confirm(
        yes,
        "checkpoint the configured workloads and kexec back into the known-good kernel",
    )?;
    let p = connect()?;
    let progress = p.receive_job_progress()?;
    let finished = p.receive_job_finished()?;
    let gone = daemon_exits(&p)?;
    let job = p.rollback().map_err(|e| call_error("rollback", e))?;
    follow_job(job, (progress, finished, gone), json, out, "rollback")
}

/// Asks on a terminal; elsewhere requires --yes.
fn confirm(yes: bool, what: &str) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "this stops the running kernel ({what}); pass --yes to confirm when not on a terminal"
        );
    }
    eprint!("{what}? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if !matches!(answer.trim(), "y" | "Y" | "yes") {
        bail!("not confirmed; nothing was changed");
    }
    Ok(())
}

pub fn suspend(name: &str, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let p = connect()?;
    let gen = p.suspend(name).map_err(|e| call_error("suspend", e))?;
    if json {
        writeln!(
            out,
            "{}",
            serde_json::json!({"workload": name, "generation": gen})
        )?;
    } else {
        writeln!(out, "suspended {name} into generation {gen}")?;
    }
    Ok(())
}

pub fn resume(name: &str, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let p = connect()?;
    let pid = p.resume(name).map_err(|e| call_error("resume", e))?;
    if json {
        writeln!(out, "{}", serde_json::json!({"workload": name, "pid": pid}))?;
    } else {
        writeln!(out, "resumed {name}: PID {pid}")?;
    }
    Ok(())
}

pub fn reload(out: &mut dyn Write) -> anyhow::Result<()> {
    let p = connect()?;
    p.reload().map_err(|e| call_error("reload", e))?;
    writeln!(out, "configuration reloaded")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Outcome, Phase, StageSeconds, UpgradeReport};

    fn status(state: Phase, generation: Option<&str>) -> StatusInfo {
        StatusInfo {
            running_kernel: "6.1.0-50-amd64".into(),
            state: state.to_string(),
            known_good_kernel: None,
            current_generation: generation.map(str::to_owned),
            job: None,
            config_error: None,
            report: UpgradeReport {
                upgrade_id: None,
                state,
                outcome: Outcome::Failed,
                generation: generation.map(|g| g.parse().unwrap()),
                from: None,
                to: None,
                boot_attempts: 1,
                stages: StageSeconds::default(),
                blackout_secs: None,
                last_error: Some("the rollback's restore failed".into()),
            },
        }
    }

    #[test]
    fn a_failure_after_the_commit_is_headlined_with_the_way_back() {
        let b = banner(&status(Phase::Failed, Some("g1"))).unwrap();
        assert!(b.contains("NOT running"), "{b}");
        assert!(b.contains("upgradectl restore --generation g1"), "{b}");
        assert!(b.contains("the rollback's restore failed"), "{b}");
        // Before a commit the workloads were left running: nothing to headline.
        assert_eq!(banner(&status(Phase::Failed, None)), None);
        assert_eq!(banner(&status(Phase::Blessed, Some("g1"))), None);
    }
}
