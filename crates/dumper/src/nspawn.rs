//! systemd-nspawn machines as workloads. The dump takes the tree of the machine's
//! leader (the container's init, in PID and mount namespaces of its own); the
//! container manager, systemd-nspawn, stays behind, as CRIU cannot dump a tree that
//! spans two PID namespaces. So a restored machine runs without it:
//! - its console, a pty whose master systemd-nspawn held, gets a new pty from CRIU
//!   (`orphan_pts_master`); a `systemd-cat` holds and reads the master, so what the
//!   machine writes there goes to the journal, as nspawn's read-only console did;
//! - it is put in `machine-<name>.scope` and registered with systemd-machined again,
//!   so `machinectl list`, `status`, `shell`, `poweroff` and `terminate` work on it.
//!
//! What is not supported is refused at resolve time or documented (README): machines
//! from image files, and private networks with veth links (CRIU would need the host
//! end of the link).

use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use tracing::warn;

use crate::{cmd, Error};

/// Mounts of a machine that are left out of its dump. nspawn's fake boot ID is a bind
/// mount of a deleted file in the container's /run, seen at two places; CRIU 3.17
/// re-creates the deleted file for the first and then fails on the second ("Can't
/// re-create deleted file ... File exists"). The restored machine reads the host's
/// boot ID, which is a new boot's.
pub const SKIPPED_MOUNTS: &[&str] = &["/proc/sys/kernel/random/boot_id"];

/// The scope a restored machine is put in: machined's own name for it.
pub fn scope(machine: &str) -> String {
    format!("machine-{machine}.scope")
}

/// The properties of a restored machine's scope (busctl's name, signature, value):
/// in machine.slice, like machined's own scopes, and stopped the way systemd-nspawn
/// stops a machine. A container's init ignores SIGTERM from outside its namespace, so
/// `machinectl terminate` (which stops the scope) would wait 90 s for the SIGKILL:
/// systemd as init gets SIGRTMIN+3, its request to power off, and any other init
/// SIGKILL, as nspawn does with and without --boot.
pub fn scope_properties(leader: u32) -> Vec<[String; 3]> {
    let comm = std::fs::read_to_string(format!("/proc/{leader}/comm")).unwrap_or_default();
    let signal = if comm.trim() == "systemd" {
        SIGRTMIN_PLUS_3
    } else {
        nix::sys::signal::Signal::SIGKILL as i32
    };
    vec![
        ["Slice".into(), "s".into(), "machine.slice".into()],
        ["KillSignal".into(), "i".into(), signal.to_string()],
    ]
}

/// SIGRTMIN+3 as systemd numbers it (glibc's SIGRTMIN is 34).
const SIGRTMIN_PLUS_3: i32 = 37;

/// Where the host side of a machine's mount tunnel lives (nspawn's `setup_propagate`):
/// the container's /run/host/incoming is a slave of it, so CRIU binds it again on
/// restore. systemd-nspawn removes it when it exits, and a reboot empties /run.
const PROPAGATE: &str = "/run/systemd/nspawn/propagate";

/// Makes what a machine's restore binds from the host and nspawn made: the mount
/// tunnel's directory, with nspawn's modes.
pub fn prepare_host(machine: &str) -> Result<(), Error> {
    for (dir, mode) in [
        (Path::new("/run/systemd/nspawn"), 0o755),
        (Path::new(PROPAGATE), 0o600),
        (&Path::new(PROPAGATE).join(machine), 0o600),
    ] {
        match std::fs::DirBuilder::new().mode(mode).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(Error::Io {
                    action: "creating",
                    path: dir.to_owned(),
                    source,
                })
            }
        }
    }
    Ok(())
}

/// Starts the process that holds and reads a restored machine's console master;
/// returns its PID.
pub fn hold_console(machine: &str, master: OwnedFd) -> Result<u32, Error> {
    cmd::spawn_reading(
        "systemd-cat",
        [format!("--identifier=machine-{machine}-console")],
        master,
    )
}

/// Registers the restored machine with systemd-machined: `leader` is its init, in the
/// machine's scope already (machined takes the leader's unit as the machine's).
/// A failure leaves the machine running, unregistered, with a warning.
pub fn register(machine: &str, leader: u32, root_dir: &str) {
    let leader_s = leader.to_string();
    let args = [
        "call",
        "org.freedesktop.machine1",
        "/org/freedesktop/machine1",
        "org.freedesktop.machine1.Manager",
        "RegisterMachine",
        "sayssus",
        machine,
        // No machine ID: an empty array (machined then shows none).
        "0",
        "upgraded",
        "container",
        &leader_s,
        root_dir,
    ];
    if let Err(e) = cmd::run("busctl", args) {
        warn!(machine, leader, error = %e, "restored, but could not register the machine with systemd-machined");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restored_machines_get_machineds_scope_in_machine_slice() {
        assert_eq!(scope("tiny"), "machine-tiny.scope");
        // This test's own process is no systemd: SIGKILL, as nspawn without --boot.
        let props = scope_properties(std::process::id());
        assert!(props.contains(&["Slice".into(), "s".into(), "machine.slice".into()]));
        assert!(props.contains(&["KillSignal".into(), "i".into(), "9".into()]));
    }
}
