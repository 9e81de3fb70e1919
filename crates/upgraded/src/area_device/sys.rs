//! mount(2) of a disk or pmem area: the one mount this crate makes. nix wraps the call
//! safely; what an errno means, and what to do about it, is decided in [`super`].

use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};

/// Mounts the ext4 file system on `device` at `target`, with `data` as its options
/// (`dax=always` or none). Images are data: nothing on the area is run, and no device
/// node or set-uid bit there means anything.
pub(super) fn mount_ext4(device: &Path, target: &Path, data: Option<&str>) -> Result<(), Errno> {
    mount(
        Some(device),
        target,
        Some("ext4"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        data,
    )
}
