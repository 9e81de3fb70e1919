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
        Ok(()) => {
            // Leave no empty `<unit>.d` behind (fails harmlessly if other drop-ins live there).
            if let Some(dir) = path.parent() {
                let _ = fs::remove_dir(dir);
            }
            daemon_reload()
        }
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
    cmd::parse_pid(
        &out,
        format!("systemctl show --property=MainPID {unit}"),
        "the service has no main PID after the restore",
    )
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
    fn logind_reference_fifos_are_recognised_by_path_and_fdinfo() {
        assert!(is_session_ref("/run/systemd/sessions/c1.ref"));
        assert!(is_session_ref("/run/systemd/sessions/12.ref"));
        for other in [
            "/run/systemd/sessions/c1",
            "/run/systemd/sessions/.ref",
            "/run/systemd/sessions/a/b.ref",
            "/run/systemd/users/0.ref",
            "pipe:[1234]",
        ] {
            assert!(!is_session_ref(other), "{other}");
        }
        let fdinfo = "pos:\t0\nflags:\t02000001\nmnt_id:\t1043\nino:\t77\n";
        assert_eq!(parse_mnt_id(fdinfo), Some(1043));
        assert_eq!(parse_mnt_id("pos:\t0\n"), None);
        // No such process: nothing, no error.
        assert!(session_ref_fifos(&[u32::MAX]).is_empty());
    }

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

/// journald's socket for stdout streams (StandardOutput=journal).
pub const JOURNAL_STDOUT: &str = "/run/systemd/journal/stdout";

/// The inodes of the unix stream sockets held by `pids` whose peer is journald's
/// stdout socket: a service's stdout and stderr. CRIU cannot dump half of a stream
/// connection, so they are dumped as external and given a fresh stream on restore.
pub fn journal_streams(pids: &[u32]) -> Result<Vec<u64>, Error> {
    let out = cmd::run("ss", ["-x", "-n", "-H"])?;
    let journal_peers = parse_journal_peers(&out);
    let mut found = Vec::new();
    for ino in crate::proc::open_files(pids)
        .iter()
        .filter_map(crate::proc::OpenFile::socket_inode)
    {
        if journal_peers.contains(&ino) && !found.contains(&ino) {
            found.push(ino);
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// What the tree of `pids` holds that stays behind with the system and is dumped as
/// external, in CRIU's `--external` syntax; restore hands the tree stand-ins
/// ([`crate::checkpoint`]):
/// - `unix[<inode>]`: its journald streams (a service's stdout and stderr);
/// - `file[<mnt_id>:<inode>]` (hex, as CRIU writes them): the reference FIFOs of logind
///   sessions (`/run/systemd/sessions/<id>.ref`), which pam_systemd got from logind.
///   logind opened them in its own mount namespace, which CRIU cannot see ("Can't
///   lookup mount"), and they mean nothing after a reboot or kexec anyway: the new
///   logind does not know the session.
pub fn external_resources(pids: &[u32]) -> Result<Vec<String>, Error> {
    let mut found: Vec<String> = journal_streams(pids)?
        .into_iter()
        .map(|ino| format!("unix[{ino}]"))
        .collect();
    for key in session_ref_fifos(pids) {
        if !found.contains(&key) {
            found.push(key);
        }
    }
    Ok(found)
}

/// The `file[<mnt_id>:<inode>]` keys of the logind session reference FIFOs the
/// processes `pids` hold open.
fn session_ref_fifos(pids: &[u32]) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut found = Vec::new();
    for f in crate::proc::open_files(pids) {
        if !is_session_ref(&f.target) {
            continue;
        }
        let mnt_id = f
            .fdinfo()
            .and_then(|p| fs::read_to_string(p).ok())
            .and_then(|text| parse_mnt_id(&text));
        // The inode of the FIFO itself (the link is followed).
        let ino = fs::metadata(&f.link).ok().map(|m| m.ino());
        if let (Some(mnt_id), Some(ino)) = (mnt_id, ino) {
            let key = format!("file[{mnt_id:x}:{ino:x}]");
            if !found.contains(&key) {
                found.push(key);
            }
        }
    }
    found
}

/// `/run/systemd/sessions/<id>.ref`, as /proc shows an open file's path.
fn is_session_ref(path: &str) -> bool {
    path.strip_prefix("/run/systemd/sessions/")
        .and_then(|rest| rest.strip_suffix(".ref"))
        .is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

/// The `mnt_id:` of a `/proc/<pid>/fdinfo/<fd>` text.
fn parse_mnt_id(fdinfo: &str) -> Option<u64> {
    fdinfo
        .lines()
        .find_map(|line| line.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse().ok())
}

/// From `ss -xnH`: the peer inodes of connections accepted on journald's stdout socket.
fn parse_journal_peers(ss: &str) -> Vec<u64> {
    ss.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // Netid State Recv-Q Send-Q Local-Address Port Peer-Address Port
            if f.len() >= 8 && f[4] == JOURNAL_STDOUT {
                f[7].parse().ok()
            } else {
                None
            }
        })
        .collect()
}

/// A new stdout stream to journald, as systemd opens one for a service: `identifier`
/// tags the lines, `unit` attributes them (journald honours that from root only).
/// The descriptor has no CLOEXEC, so criu swrk can inherit it.
pub fn open_journal_stream(identifier: &str, unit: &str) -> Result<std::os::fd::OwnedFd, Error> {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    use std::io::Write;
    let io = |action: &'static str, e: nix::Error| Error::Io {
        action,
        path: PathBuf::from(JOURNAL_STDOUT),
        source: e.into(),
    };
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .map_err(|e| io("creating a socket for", e))?;
    let addr = UnixAddr::new(JOURNAL_STDOUT).map_err(|e| io("addressing", e))?;
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr).map_err(|e| io("connecting to", e))?;
    // systemd's stdout stream header: identifier, unit, priority, level prefix,
    // forward to syslog, kmsg, console.
    let header = format!("{identifier}\n{unit}\n6\n1\n0\n0\n0\n");
    let mut f = fs::File::from(fd);
    f.write_all(header.as_bytes()).map_err(|source| Error::Io {
        action: "writing the stream header to",
        path: PathBuf::from(JOURNAL_STDOUT),
        source,
    })?;
    Ok(std::os::fd::OwnedFd::from(f))
}

#[cfg(test)]
mod journal_tests {
    use super::*;

    #[test]
    fn journal_peers_come_from_ss() {
        let ss = "u_str ESTAB 0 0 /run/systemd/journal/stdout 14363 * 11940\n\
                  u_str ESTAB 0 0 * 11940 * 14363\n\
                  u_str ESTAB 0 0 /run/dbus/system_bus_socket 200 * 201\n";
        assert_eq!(parse_journal_peers(ss), vec![11940]);
    }
}
