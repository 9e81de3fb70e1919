//! Podman containers as workloads. Podman owns a container's runtime state (conmon,
//! the OCI runtime, its storage), so it is checkpointed and restored through
//! `podman container checkpoint/restore`, which drive CRIU themselves; the export
//! archive lives in the area like any other image file and is checksummed with it.
//!
//! The OCI runtime must support checkpointing: Debian's runc does, bookworm's crun is
//! built without CRIU. Run such containers with `--runtime runc`.

use std::path::Path;

use tracing::warn;

use crate::manifest::WorkloadName;
use crate::{cmd, Error};

/// The export archive's name in the workload's image directory.
pub const EXPORT: &str = "container-checkpoint.tar";

/// Checkpoints `container` into `dir/EXPORT`; stops it unless `leave_running`.
pub fn checkpoint(
    container: &str,
    dir: &Path,
    leave_running: bool,
    tcp_established: bool,
) -> Result<(), Error> {
    let export = dir.join(EXPORT);
    let mut args = vec![
        "container".to_owned(),
        "checkpoint".to_owned(),
        format!("--export={}", export.display()),
    ];
    if leave_running {
        args.push("--leave-running".into());
    }
    if tcp_established {
        args.push("--tcp-established".into());
    }
    args.push("--".into());
    args.push(container.to_owned());
    cmd::run("podman", &args).map(|_| ())
}

/// Why container `workload` cannot be pre-dumped. Podman drives CRIU itself, so the
/// pre-dump directories and links of the area's layout are not ours to make; podman's
/// own pre-checkpoints (`--pre-checkpoint`, `--with-previous`, `--import-previous`) are
/// a separate archive per iteration that upgraded does not drive.
pub fn pre_dump_unsupported(workload: &WorkloadName) -> Error {
    Error::WorkloadUnsupported {
        workload: workload.clone(),
        reason: "podman containers cannot be pre-dumped by upgraded".into(),
        hint: "checkpoint it without pre-dumps (pre_dump = 0, or no --pre-dump), or \
               separately from the workloads that are pre-dumped"
            .into(),
    }
}

/// Restores `container` from `dir/EXPORT`; returns the PID of its init process.
///
/// A stopped container of the same name (the one that was checkpointed) is renamed
/// aside first and removed only once the restore worked, so a failed restore leaves
/// it as it was.
pub fn restore(container: &str, dir: &Path, tcp_established: bool) -> Result<u32, Error> {
    let export = dir.join(EXPORT);
    let aside = format!("{container}-upgraded-aside");
    let exists = cmd::output_any("podman", ["container", "exists", "--", container])
        .map(|(_, out)| out.status.success())?;
    if exists {
        cmd::run("podman", ["rename", "--", container, &aside])?;
    }
    let mut args = vec![
        "container".to_owned(),
        "restore".to_owned(),
        format!("--import={}", export.display()),
        format!("--name={container}"),
    ];
    if tcp_established {
        args.push("--tcp-established".into());
    }
    if let Err(e) = cmd::run("podman", &args) {
        if exists {
            if let Err(re) = cmd::run("podman", ["rename", "--", &aside, container]) {
                warn!(container, error = %re, "could not rename the old container back from {aside}");
            }
        }
        return Err(e);
    }
    if exists {
        if let Err(e) = cmd::run("podman", ["rm", "--", &aside]) {
            warn!(container, error = %e, "restored; the old container {aside} could not be removed");
        }
    }
    let out = cmd::run(
        "podman",
        [
            "container",
            "inspect",
            "--format",
            "{{.State.Pid}}",
            "--",
            container,
        ],
    )?;
    cmd::parse_pid(
        &out,
        format!("podman container inspect {container}"),
        "the restored container has no PID",
    )
}
