//! systemd services as workloads. systemd adopts a running process as a service's main
//! process only when the service itself started it, so a restore runs *as* the
//! service's start: a runtime drop-in makes it `Type=forking` with our restore command
//! as `ExecStart=` and a `PIDFile=` naming the restored PID. CRIU restores into the
//! cgroup it runs in, which is then the unit's own.
//!
//! While a service is being dumped and after it is stopped, another drop-in holds its
//! `Restart=` policy, so systemd does not start a fresh instance beside the images.

use std::fs;
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::{cmd, Error};

const DROPIN_ROOT: &str = "/run/systemd/system";
const HOLD: &str = "50-upgraded-hold.conf";
const RESTORE: &str = "50-upgraded-restore.conf";
/// Where the restore command leaves the restored main PID for systemd.
pub const PID_DIR: &str = "/run/upgraded/restore";

fn dropin(unit: &str, name: &str) -> PathBuf {
    Path::new(DROPIN_ROOT).join(format!("{unit}.d")).join(name)
}

fn write_dropin(unit: &str, name: &str, text: &str) -> Result<(), Error> {
    let path = dropin(unit, name);
    let dir = path.parent().expect("drop-in has a directory");
    fs::create_dir_all(dir).map_err(|source| Error::Io {
        action: "creating drop-in directory",
        path: dir.to_owned(),
        source,
    })?;
    fs::write(&path, text).map_err(|source| Error::Io {
        action: "writing drop-in",
        path: path.clone(),
        source,
    })?;
    daemon_reload()
}

fn remove_dropin(unit: &str, name: &str) -> Result<(), Error> {
    let path = dropin(unit, name);
    match fs::remove_file(&path) {
        Ok(()) => daemon_reload(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Io {
            action: "removing drop-in",
            path,
            source,
        }),
    }
}

fn daemon_reload() -> Result<(), Error> {
    cmd::run("systemctl", ["daemon-reload"]).map(|_| ())
}

/// Keeps systemd from restarting `unit` while it is dumped and stopped.
pub fn hold(unit: &str) -> Result<(), Error> {
    write_dropin(
        unit,
        HOLD,
        "# Written by upgraded while the service is checkpointed; removed afterwards.\n\
         [Service]\nRestart=no\n",
    )
}

/// Undoes [`hold`]; logs instead of failing, because the workload's fate is decided.
pub fn release(unit: &str) {
    if let Err(e) = remove_dropin(unit, HOLD) {
        warn!(unit, error = %e, "could not remove the hold drop-in; remove it by hand and run systemctl daemon-reload");
    }
}

/// After the dumped processes were killed: clear the unit's failed state.
pub fn settle_stopped(unit: &str) {
    if let Err(e) = cmd::run("systemctl", ["reset-failed", "--", unit]) {
        warn!(unit, error = %e, "could not reset the unit's failed state");
    }
}

/// Starts `unit` with `restore_cmd` as its start command, so the restored tree becomes
/// the service's main process. Returns the main PID systemd then reports.
pub fn start_restored(unit: &str, restore_cmd: &[String], pid_file: &Path) -> Result<u32, Error> {
    let exec = restore_cmd
        .iter()
        .map(|a| quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    let text = format!(
        "# Written by upgraded to restore the service from its images; removed afterwards.\n\
         [Service]\n\
         Type=forking\n\
         PIDFile={}\n\
         ExecStartPre=\n\
         ExecStartPost=\n\
         ExecStart=\n\
         # '+': CRIU needs full privileges whatever the service's User= and sandboxing.\n\
         ExecStart=+{exec}\n\
         Restart=no\n",
        pid_file.display()
    );
    write_dropin(unit, RESTORE, &text)?;
    let started = cmd::run("systemctl", ["start", "--", unit]);
    // The running service keeps its main PID when the drop-in goes.
    let removed = remove_dropin(unit, RESTORE);
    started?;
    removed?;
    let out = cmd::run(
        "systemctl",
        ["show", "--property=MainPID", "--value", "--", unit],
    )?;
    out.trim()
        .parse::<u32>()
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| Error::UnexpectedOutput {
            command: format!("systemctl show --property=MainPID {unit}"),
            output: format!("{:?}", out.trim()),
            problem: "the service has no main PID after the restore".to_owned(),
        })
}

/// systemd's quoting for ExecStart= words.
fn quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:=@+,".contains(c))
    {
        word.to_owned()
    } else {
        format!("\"{}\"", word.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_words_are_quoted_when_needed() {
        assert_eq!(quote("/usr/bin/upgradectl"), "/usr/bin/upgradectl");
        assert_eq!(quote("a b"), "\"a b\"");
        assert_eq!(quote("x\"y"), "\"x\\\"y\"");
        assert_eq!(quote(""), "\"\"");
    }

    #[test]
    fn dropins_live_under_run() {
        assert_eq!(
            dropin("foo.service", HOLD),
            Path::new("/run/systemd/system/foo.service.d/50-upgraded-hold.conf")
        );
    }
}
