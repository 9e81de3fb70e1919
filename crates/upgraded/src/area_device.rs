//! Disk and pmem areas (`area.kind = "disk"` or `"pmem"`, docs/area.md): a configured
//! block device made into the mounted file system that holds the area.
//!
//! - [`inspect`] checks the device before anything is read from it or written to it:
//!   `area.device` leads to a block device under /dev (a `/dev/disk/by-*` link is
//!   followed); it is not mounted anywhere but on [`MOUNT_POINT`] (so never the root or
//!   boot file system), not swap, not held by device-mapper or RAID, not a whole disk
//!   with partitions, not read-only, not in RAM (zram, RAM disks). A pmem area must be
//!   a pmem namespace of the nd bus, and with `area.memmap` its physical range (sysfs)
//!   must be that range exactly, and the running kernel must have reserved it as
//!   legacy persistent memory (/proc/iomem): upgraded never writes to another device.
//! - [`contents`] tells what the device holds: the area's file system (ext2/3/4 with the
//!   label [`LABEL`], read from the superblock), nothing (blkid finds no signature at
//!   all), or something else, named.
//! - [`open`] mounts the area's file system on [`MOUNT_POINT`] (ext4, `nosuid,nodev,
//!   noexec`; `dax=always` on a pmem device whose queue supports DAX) unless it is
//!   mounted there already. It **never formats**: the boot side after a kexec must not
//!   destroy the images it is about to restore. Every command and the boot side come
//!   here through `local::open_area`.
//! - [`prepare`] with `allow_format` formats a device that holds nothing
//!   (`mkfs.ext4 -q -L upgraded-area -m 0`, plus `-b 4096 -E nodiscard` for pmem), then
//!   mounts it; a device that holds anything else is refused with what was found and
//!   how to proceed. Its callers: `upgradectl area init`, and the daemon at start-up
//!   when the area holds no file system, hence no state, hence no upgrade is waiting.
//!
//! Nothing unmounts the area: /run is a tmpfs, so the mount point does not outlive the
//! boot, and systemd unmounts the file system cleanly on the way to a kexec, reboot or
//! power-off, after the daemon has stopped.
//!
//! This lives in upgraded, not in the dumper: the dumper knows an area as a directory,
//! while which device holds it, the `memmap=` reservation on the kernel command line
//! and whether formatting is allowed are decisions of the configuration, the kernel
//! command line and the upgrade's state, which are upgraded's.
//!
//! Every path of /dev, /sys and /proc is read below a [`Host`]'s root, so that the
//! tests run against a fake tree. Programs (blkid, mkfs.ext4) run through
//! [`dumper::cmd`]; the mount is mount(2), in [`sys`].

mod sys;
#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use tracing::{info, warn};

use crate::config::{AreaKind, AreaLocation, Memmap, Settings};

/// Where a disk or pmem area is mounted. Under /run, a tmpfs: nothing of it survives a
/// reboot, so a stale mount point or lock is never found.
pub const MOUNT_POINT: &str = "/run/upgraded/area";
/// The label of the area's file system; a device labelled otherwise is not used.
pub const LABEL: &str = "upgraded-area";
/// The sysfs names of block devices that live in RAM and are emptied by a kexec.
const IN_MEMORY_PREFIXES: [&str; 2] = ["zram", "ram"];
/// How /proc/iomem names RAM reserved by `memmap=<size>!<offset>`.
const IOMEM_LEGACY_PMEM: &str = "Persistent Memory (legacy)";

/// The system as seen from here: where /dev, /sys and /proc are, where the area is
/// mounted, and how a device node is told to be a block device (stat(2)).
pub struct Host {
    root: PathBuf,
    mount_point: PathBuf,
    block_dev: BlockDevProbe,
}

/// The device number of the block device at a path, `None` when it is none.
pub type BlockDevProbe = Box<dyn Fn(&Path) -> io::Result<Option<DevNum>> + Send + Sync>;

impl Host {
    /// This machine: /, [`MOUNT_POINT`] and stat(2).
    pub fn system() -> Host {
        Host {
            root: PathBuf::from("/"),
            mount_point: PathBuf::from(MOUNT_POINT),
            block_dev: Box::new(stat_block_dev),
        }
    }

    /// A host whose /dev, /sys and /proc are below `root` and whose area is mounted on
    /// `mount_point` (a real directory: the mount is real), with `block_dev` in place
    /// of stat(2).
    pub fn new(root: PathBuf, mount_point: PathBuf, block_dev: BlockDevProbe) -> Host {
        Host {
            root,
            mount_point,
            block_dev,
        }
    }

    pub fn mount_point(&self) -> &Path {
        &self.mount_point
    }

    /// `abs`, an absolute path of the system, below the root.
    fn path(&self, abs: impl AsRef<Path>) -> PathBuf {
        let abs = abs.as_ref();
        self.root.join(abs.strip_prefix("/").unwrap_or(abs))
    }

    /// A path below the root as the system names it, if it is below the root.
    fn system_path(&self, path: &Path) -> Option<PathBuf> {
        let root = fs::canonicalize(&self.root).unwrap_or_else(|_| self.root.clone());
        path.strip_prefix(&root)
            .ok()
            .map(|rest| Path::new("/").join(rest))
    }

    fn read(&self, abs: impl AsRef<Path>) -> io::Result<String> {
        fs::read_to_string(self.path(abs))
    }
}

fn stat_block_dev(path: &Path) -> io::Result<Option<DevNum>> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = fs::metadata(path)?;
    if !meta.file_type().is_block_device() {
        return Ok(None);
    }
    let rdev = meta.rdev();
    Ok(Some(DevNum {
        major: nix::sys::stat::major(rdev),
        minor: nix::sys::stat::minor(rdev),
    }))
}

/// A device number, `major:minor` as sysfs and mountinfo write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DevNum {
    pub major: u64,
    pub minor: u64,
}

impl DevNum {
    pub fn parse(text: &str) -> Option<DevNum> {
        let (major, minor) = text.trim().split_once(':')?;
        Some(DevNum {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
        })
    }
}

impl fmt::Display for DevNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// A physical address range, `[start, start + size)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start: u64,
    pub size: u64,
}

impl Range {
    fn of(memmap: &Memmap) -> Range {
        Range {
            start: memmap.offset,
            size: memmap.size,
        }
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = self.start.saturating_add(self.size).saturating_sub(1);
        write!(
            f,
            "{} at {:#x}-{end:#x}",
            human_bytes(self.size),
            self.start
        )
    }
}

/// What the configuration asks for: a disk or pmem area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec {
    pub kind: AreaKind,
    /// `area.device`, as configured.
    pub device: PathBuf,
    /// `area.memmap` of a pmem area.
    pub memmap: Option<Memmap>,
}

impl DeviceSpec {
    /// The device of a disk or pmem area; `None` for a directory area.
    pub fn of(location: &AreaLocation) -> Option<DeviceSpec> {
        match location {
            AreaLocation::Directory { .. } => None,
            AreaLocation::Disk { device } => Some(DeviceSpec {
                kind: AreaKind::Disk,
                device: device.clone(),
                memmap: None,
            }),
            AreaLocation::Pmem { device, memmap } => Some(DeviceSpec {
                kind: AreaKind::Pmem,
                device: device.clone(),
                memmap: *memmap,
            }),
        }
    }
}

/// A device that passed [`inspect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub kind: AreaKind,
    /// `area.device`, as configured.
    pub configured: PathBuf,
    /// The device node it leads to, links resolved (`/dev/pmem0`, `/dev/sda3`).
    pub node: PathBuf,
    /// The kernel's name of the device (`pmem0`, `sda3`).
    pub name: String,
    pub devnum: DevNum,
    /// In bytes, when sysfs says.
    pub size: Option<u64>,
    /// The block queue supports DAX (`queue/dax` is 1).
    pub dax: bool,
    /// It is mounted on the host's mount point now.
    pub mounted: bool,
    /// Mounted with `dax=always` (or the old `dax`), when mounted.
    pub mounted_dax: bool,
    /// A pmem device's physical range (its namespace's, in sysfs).
    pub range: Option<Range>,
}

/// What a device holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    /// No signature at all: neither blkid nor the ext superblock reader found one.
    Empty,
    /// The area's file system: ext2/3/4 labelled [`LABEL`].
    Ours { uuid: String },
    /// Anything else, described ("a file system of type ext4 labelled \"data\"").
    Other { found: String },
}

/// What [`prepare`] did.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub device: Device,
    /// The device was formatted now.
    pub formatted: bool,
    /// It was mounted now (rather than found mounted).
    pub mounted: bool,
    /// It is mounted with `dax=always`.
    pub dax: bool,
    /// The area's root: the mount point.
    pub root: PathBuf,
}

/// Errors of disk and pmem areas. Each names the device and says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    #[error(
        "the {kind} area's device {} does not exist; {}",
        device.display(),
        missing_hint(*kind, memmap.as_ref())
    )]
    Missing {
        kind: AreaKind,
        device: PathBuf,
        memmap: Option<Memmap>,
    },

    #[error(
        "area.device {} leads to {}, which is not under /dev; give a device node (or a \
         /dev/disk/by-* link to one) in area.device",
        device.display(), target.display()
    )]
    NotUnderDev { device: PathBuf, target: PathBuf },

    #[error(
        "{} (area.device {}) is not a block device; give a disk, a partition or a pmem \
         device in area.device",
        node.display(), device.display()
    )]
    NotABlockDevice { device: PathBuf, node: PathBuf },

    #[error(
        "block device {devnum} ({}) is not in /sys/dev/block: is sysfs mounted?",
        device.display()
    )]
    NoSysfs { device: PathBuf, devnum: DevNum },

    #[error(
        "{} ({name}) is not a persistent-memory device ({why}); a pmem area needs a pmem \
         namespace of the nd bus: give /dev/pmemN in area.device (ls /sys/bus/nd/devices \
         lists them), or use area.kind = \"disk\" for an ordinary block device",
        device.display()
    )]
    NotPmem {
        device: PathBuf,
        name: String,
        why: String,
    },

    #[error(
        "{} ({name}) is a persistent-memory device; use area.kind = \"pmem\" (with \
         area.memmap when it is RAM reserved by memmap=), so that the reservation is kept \
         on the new kernel's command line",
        device.display()
    )]
    DiskIsPmem { device: PathBuf, name: String },

    #[error(
        "{} ({name}) lives in RAM (zram or a RAM disk): a kexec empties it, and the images \
         with it; give a disk or a partition, or use a pmem area",
        device.display()
    )]
    InMemory { device: PathBuf, name: String },

    #[error(
        "the pmem device {} covers {found}, not the range of area.memmap = \"{memmap}\" \
         ({}): it is not the RAM upgraded reserves, and upgraded writes to no other \
         device; give the pmem device of that range in area.device (each \
         /sys/bus/nd/devices/namespace*/resource is a start address), or fix area.memmap",
        device.display(), Range::of(memmap)
    )]
    MemmapMismatch {
        device: PathBuf,
        memmap: Memmap,
        found: Range,
    },

    #[error(
        "cannot tell which physical range the pmem device {} covers ({why}), so it cannot \
         be matched with area.memmap = \"{memmap}\"; upgraded does not use a device it \
         cannot match",
        device.display()
    )]
    MemmapUnknown {
        device: PathBuf,
        memmap: Memmap,
        why: String,
    },

    #[error(
        "/proc/iomem has no \"{IOMEM_LEGACY_PMEM}\" range {} ({}): the running kernel did \
         not reserve area.memmap = \"{memmap}\"; boot it with memmap={memmap} on its \
         command line",
        Range::of(memmap),
        if reserved.is_empty() { "it has none".to_owned() } else { format!("it has {}", reserved.join(", ")) }
    )]
    MemmapNotReserved {
        device: PathBuf,
        memmap: Memmap,
        /// The legacy pmem ranges /proc/iomem lists.
        reserved: Vec<String>,
    },

    #[error(
        "{} ({name}) is read-only; make it writable (blockdev --setrw {}) or give another \
         device",
        device.display(), device.display()
    )]
    ReadOnly { device: PathBuf, name: String },

    #[error(
        "{} is a whole disk with partitions ({}); give the partition reserved for the area \
         in area.device, or, if nothing on the disk is needed, erase its partition table \
         first (wipefs -a {})",
        device.display(), partitions.join(", "), device.display()
    )]
    HasPartitions {
        device: PathBuf,
        partitions: Vec<String>,
    },

    #[error(
        "{} is in use by {} (device-mapper, LVM, RAID or the like); give a device that \
         nothing else uses",
        device.display(), holders.join(", ")
    )]
    Held {
        device: PathBuf,
        holders: Vec<String>,
    },

    #[error(
        "{} is in use as swap (/proc/swaps); give another device, or swapoff it and drop \
         it from /etc/fstab first",
        device.display()
    )]
    Swap { device: PathBuf },

    #[error(
        "{} is mounted on {}{}; upgraded mounts the area on {MOUNT_POINT} itself and uses \
         only a device mounted nowhere else: give another device, or, if this one is meant \
         for the area, unmount it and drop it from /etc/fstab",
        device.display(),
        mount_point.display(),
        match mount_point.to_str() {
            Some("/") => " (it is the root file system)",
            Some("/boot") | Some("/boot/efi") | Some("/efi") => " (it is the boot file system)",
            _ => "",
        }
    )]
    MountedElsewhere {
        device: PathBuf,
        mount_point: PathBuf,
    },

    #[error(
        "{} is mounted on the area's mount point {}, not the area's device {}; unmount it \
         (umount {})",
        source_name, mount_point.display(), device.display(), mount_point.display()
    )]
    MountPointBusy {
        device: PathBuf,
        mount_point: PathBuf,
        /// What is mounted there (mountinfo's source).
        source_name: String,
    },

    #[error("{}", no_file_system_text(*kind, device))]
    NoFileSystem { kind: AreaKind, device: PathBuf },

    #[error(
        "{} holds {found}, not the area's file system (ext4 labelled {LABEL}); upgraded \
         formats only a device that holds nothing: if nothing on it is needed, erase its \
         signatures (wipefs -a {}) and run `upgradectl area init`; otherwise fix \
         area.device",
        device.display(), node.display()
    )]
    Foreign {
        device: PathBuf,
        node: PathBuf,
        found: String,
    },

    #[error("telling what {} holds (blkid)", device.display())]
    Probe {
        device: PathBuf,
        #[source]
        source: Box<dumper::Error>,
    },

    #[error("formatting {} (mkfs.ext4)", device.display())]
    Format {
        device: PathBuf,
        #[source]
        source: Box<dumper::Error>,
    },

    #[error(
        "mkfs.ext4 formatted {} but its superblock does not say ext4 labelled {LABEL} \
         ({found}); something else writes to the device",
        device.display()
    )]
    FormatUnverified { device: PathBuf, found: String },

    #[error(
        "mounting {} on {} ({}): {errno}; {}",
        device.display(), mount_point.display(),
        if options.is_empty() { "ext4".to_owned() } else { format!("ext4, {options}") },
        mount_hint(*errno)
    )]
    Mount {
        device: PathBuf,
        mount_point: PathBuf,
        options: String,
        errno: Errno,
    },

    #[error("{action} {}{}", path.display(), if source.kind() == io::ErrorKind::PermissionDenied {
        " (disk and pmem areas are mounted by root: run upgradectl as root)"
    } else { "" })]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn missing_hint(kind: AreaKind, memmap: Option<&Memmap>) -> String {
    match (kind, memmap) {
        (AreaKind::Pmem, Some(m)) => format!(
            "the running kernel made no such pmem device: boot it with memmap={m} \
             (GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub and reboot) and \
             with the nd_e820 and nd_pmem drivers (modules or built in), or fix area.device \
             (ls /sys/class/block lists the block devices)"
        ),
        (AreaKind::Pmem, None) => "the running kernel made no such pmem device: check \
                                   area.device (ls /sys/bus/nd/devices lists the pmem \
                                   namespaces) and that the nd_pmem driver is loaded"
            .to_owned(),
        _ => "check area.device (ls -l /dev/disk/by-id lists the stable names) and that the \
              disk is attached"
            .to_owned(),
    }
}

fn no_file_system_text(kind: AreaKind, device: &Path) -> String {
    if kind == AreaKind::Pmem {
        format!(
            "the pmem area {} holds no upgraded file system: after a cold boot or a \
             power-off its RAM is empty; run `upgradectl area init` (the daemon does it \
             when it starts with no upgrade waiting)",
            device.display()
        )
    } else {
        format!(
            "the disk area {} holds no file system yet; run `upgradectl area init`, which \
             formats it (ext4, label {LABEL}) and mounts it on {MOUNT_POINT}",
            device.display()
        )
    }
}

fn mount_hint(errno: Errno) -> &'static str {
    match errno {
        Errno::EPERM => "mounting needs root (CAP_SYS_ADMIN): run upgradectl as root",
        Errno::ENODEV => "the kernel has no ext4 driver: modprobe ext4",
        Errno::EINVAL => {
            "the file system is damaged or not ext4 (dmesg says why): \
                          e2fsck -f the device, or erase it (wipefs -a) and run \
                          `upgradectl area init`"
        }
        Errno::EBUSY => "the device is in use or the mount point is busy",
        Errno::EROFS | Errno::EACCES => "the device is read-only",
        Errno::ENOENT | Errno::ENXIO | Errno::ENOTBLK => {
            "the device went away; check that it is still there"
        }
        _ => "dmesg may say more",
    }
}

impl DeviceError {
    /// The device holds no file system at all (see [`Contents::Empty`]).
    pub fn is_no_file_system(&self) -> bool {
        matches!(self, DeviceError::NoFileSystem { .. })
    }
}

/// Whether `err` says that a device area holds no file system at all: for the daemon's
/// start (format) and the boot side (nothing can be waiting there).
pub fn is_no_file_system(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<DeviceError>()
            .is_some_and(DeviceError::is_no_file_system)
    })
}

// --- the device -------------------------------------------------------------------------

/// Checks the configured device (see the module documentation). Reads only /dev
/// (stat), sysfs and procfs: nothing of the device itself.
pub fn inspect(host: &Host, spec: &DeviceSpec) -> Result<Device, DeviceError> {
    let configured = &spec.device;
    let (node, devnum) = resolve_node(host, spec)?;
    let sys_link = host.path(format!("/sys/dev/block/{devnum}"));
    let sysfs = fs::canonicalize(&sys_link).map_err(|_| DeviceError::NoSysfs {
        device: configured.clone(),
        devnum,
    })?;
    let name = sysfs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let attr = |file: &str| {
        fs::read_to_string(sysfs.join(file))
            .ok()
            .map(|s| s.trim().to_owned())
    };

    if IN_MEMORY_PREFIXES
        .iter()
        .any(|p| name.strip_prefix(p).is_some_and(starts_with_digit))
    {
        return Err(DeviceError::InMemory {
            device: configured.clone(),
            name,
        });
    }
    let pmem = pmem_problem(&sysfs, &name);
    let mut range = None;
    match (spec.kind, pmem) {
        (AreaKind::Pmem, Some(why)) => {
            return Err(DeviceError::NotPmem {
                device: configured.clone(),
                name,
                why,
            })
        }
        (AreaKind::Pmem, None) => {
            if let Some(memmap) = &spec.memmap {
                range = Some(check_memmap(host, configured, &sysfs, memmap)?);
            } else {
                range = namespace_range(&sysfs).ok();
            }
        }
        (_, None) => {
            return Err(DeviceError::DiskIsPmem {
                device: configured.clone(),
                name,
            })
        }
        (_, Some(_)) => {}
    }
    if attr("ro").as_deref() == Some("1") {
        return Err(DeviceError::ReadOnly {
            device: configured.clone(),
            name,
        });
    }
    let partitions = sub_partitions(&sysfs);
    if !partitions.is_empty() {
        return Err(DeviceError::HasPartitions {
            device: configured.clone(),
            partitions,
        });
    }
    let holders = dir_names(&sysfs.join("holders"));
    if !holders.is_empty() {
        return Err(DeviceError::Held {
            device: configured.clone(),
            holders,
        });
    }
    if is_swap(host, devnum) {
        return Err(DeviceError::Swap {
            device: configured.clone(),
        });
    }
    let (mounted, mounted_dax) = mount_state(host, spec, devnum)?;

    let dax = attr("queue/dax")
        .or_else(|| {
            // A partition has no queue of its own.
            fs::read_to_string(sysfs.parent()?.join("queue/dax"))
                .ok()
                .map(|s| s.trim().to_owned())
        })
        .as_deref()
        == Some("1");
    let size = attr("size")
        .and_then(|s| s.parse::<u64>().ok())
        .map(|sectors| sectors.saturating_mul(512));
    Ok(Device {
        kind: spec.kind,
        configured: configured.clone(),
        node,
        name,
        devnum,
        size,
        dax,
        mounted,
        mounted_dax,
        range,
    })
}

fn starts_with_digit(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_digit())
}

/// The device node `area.device` leads to (as the system names it) and its number.
fn resolve_node(host: &Host, spec: &DeviceSpec) -> Result<(PathBuf, DevNum), DeviceError> {
    let configured = &spec.device;
    let missing = || DeviceError::Missing {
        kind: spec.kind,
        device: configured.clone(),
        memmap: spec.memmap,
    };
    let real = match fs::canonicalize(host.path(configured)) {
        Ok(real) => real,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing()),
        Err(e) => {
            return Err(DeviceError::Io {
                action: "resolving",
                path: configured.clone(),
                source: e,
            })
        }
    };
    let node = host
        .system_path(&real)
        .filter(|p| p.starts_with("/dev") && p != Path::new("/dev"))
        .ok_or_else(|| DeviceError::NotUnderDev {
            device: configured.clone(),
            target: host.system_path(&real).unwrap_or(real.clone()),
        })?;
    match (host.block_dev)(&real) {
        Ok(Some(devnum)) => Ok((node, devnum)),
        Ok(None) => Err(DeviceError::NotABlockDevice {
            device: configured.clone(),
            node,
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(missing()),
        Err(e) => Err(DeviceError::Io {
            action: "reading the metadata of",
            path: node,
            source: e,
        }),
    }
}

/// Why the block device at `sysfs` (its directory under /sys/devices) is no pmem
/// namespace, or `None` when it is one: named `pmem<N>` (`pmem<N>.<M>` for a labelled
/// namespace, an `s` suffix for BTT), below an `ndbus<N>` of the nd bus.
fn pmem_problem(sysfs: &Path, name: &str) -> Option<String> {
    let named = name.strip_prefix("pmem").is_some_and(|rest| {
        let rest = rest.strip_suffix('s').unwrap_or(rest);
        // `<N>` or `<N>.<M>`: "1." and "0.1.2" have a part that is not all digits.
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        rest.splitn(2, '.').all(all_digits)
    });
    if !named {
        return Some(format!("the kernel names it {name}, not pmemN"));
    }
    let on_nd_bus = sysfs.components().any(|c| {
        c.as_os_str()
            .to_str()
            .and_then(|c| c.strip_prefix("ndbus"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    });
    if !on_nd_bus {
        return Some(format!(
            "{} is not below an nd bus (ndbusN)",
            sysfs.display()
        ));
    }
    None
}

/// The physical range of the pmem namespace the block device at `sysfs` belongs to:
/// the `resource` (start) and `size` of the `namespace<X>.<Y>` above it, or of the
/// namespace a `pfn`/`btt`/`dax` device above it names, or else of its region.
fn namespace_range(sysfs: &Path) -> Result<Range, String> {
    let mut namespace = None;
    let mut region = None;
    for dir in sysfs.ancestors() {
        let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if namespace.is_none() {
            if name.starts_with("namespace") {
                namespace = Some(dir.to_path_buf());
            } else if ["pfn", "btt", "dax"].iter().any(|p| name.starts_with(p)) {
                if let (Ok(ns), Some(parent)) =
                    (fs::read_to_string(dir.join("namespace")), dir.parent())
                {
                    let ns = ns.trim();
                    if !ns.is_empty() && !ns.contains('/') {
                        namespace = Some(parent.join(ns));
                    }
                }
            }
        }
        if name.starts_with("region") {
            region = Some(dir.to_path_buf());
            break;
        }
    }
    let mut tried = Vec::new();
    for dir in namespace.iter().chain(region.iter()) {
        match read_range(dir) {
            Ok(range) => return Ok(range),
            Err(e) => tried.push(format!("{}: {e}", dir.display())),
        }
    }
    Err(if tried.is_empty() {
        "no pmem namespace or region above it in sysfs".to_owned()
    } else {
        tried.join("; ")
    })
}

/// `resource` and `size` of an nd device directory.
fn read_range(dir: &Path) -> Result<Range, String> {
    let read = |file: &str| -> Result<u64, String> {
        let text = fs::read_to_string(dir.join(file)).map_err(|e| format!("{file}: {e}"))?;
        parse_number(text.trim()).ok_or_else(|| format!("{file} is {:?}", text.trim()))
    };
    Ok(Range {
        start: read("resource")?,
        size: read("size")?,
    })
}

/// A number as sysfs writes them: `0x`-prefixed hex or decimal.
fn parse_number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// Requires the pmem device at `sysfs` to be exactly the RAM range of `memmap`, and
/// /proc/iomem (when it shows addresses) to list that range as legacy pmem. Returns
/// the range.
fn check_memmap(
    host: &Host,
    device: &Path,
    sysfs: &Path,
    memmap: &Memmap,
) -> Result<Range, DeviceError> {
    let wanted = Range::of(memmap);
    let found = namespace_range(sysfs).map_err(|why| DeviceError::MemmapUnknown {
        device: device.to_path_buf(),
        memmap: *memmap,
        why,
    })?;
    if found != wanted {
        return Err(DeviceError::MemmapMismatch {
            device: device.to_path_buf(),
            memmap: *memmap,
            found,
        });
    }
    // Without root, or with kptr_restrict, /proc/iomem shows zeros: nothing to tell.
    if let Ok(iomem) = host.read("/proc/iomem") {
        let entries = iomem_entries(&iomem);
        if entries.iter().any(|(r, _)| r.start != 0) {
            let legacy: Vec<Range> = entries
                .iter()
                .filter(|(_, name)| name == IOMEM_LEGACY_PMEM)
                .map(|(r, _)| *r)
                .collect();
            if !legacy.contains(&wanted) {
                return Err(DeviceError::MemmapNotReserved {
                    device: device.to_path_buf(),
                    memmap: *memmap,
                    reserved: legacy.iter().map(Range::to_string).collect(),
                });
            }
        }
    }
    Ok(found)
}

/// The ranges of /proc/iomem with their names, at every level of nesting.
fn iomem_entries(text: &str) -> Vec<(Range, String)> {
    text.lines()
        .filter_map(|line| {
            let (range, name) = line.trim().split_once(" : ")?;
            let (start, end) = range.split_once('-')?;
            let start = u64::from_str_radix(start, 16).ok()?;
            let end = u64::from_str_radix(end, 16).ok()?;
            let size = end.checked_sub(start)?.checked_add(1)?;
            Some((Range { start, size }, name.trim().to_owned()))
        })
        .collect()
}

/// The partitions of a whole disk: the directories below it that have a `partition`
/// file.
fn sub_partitions(sysfs: &Path) -> Vec<String> {
    dir_names(sysfs)
        .into_iter()
        .filter(|n| sysfs.join(n).join("partition").is_file())
        .collect()
}

fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Whether /proc/swaps lists the device (by any name that leads to it).
fn is_swap(host: &Host, devnum: DevNum) -> bool {
    let Ok(swaps) = host.read("/proc/swaps") else {
        return false;
    };
    swaps
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next())
        .map(unescape_octal)
        .any(|p| same_device(host, &p, devnum))
}

/// Whether the path `p` of the system is the block device `devnum`.
fn same_device(host: &Host, p: &str, devnum: DevNum) -> bool {
    p.starts_with("/dev/") && matches!((host.block_dev)(&host.path(p)), Ok(Some(d)) if d == devnum)
}

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MountEntry {
    devnum: Option<DevNum>,
    mount_point: PathBuf,
    fstype: String,
    source: String,
    options: String,
}

fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let mut right = right.split(' ');
            Some(MountEntry {
                devnum: DevNum::parse(left.get(2)?),
                mount_point: PathBuf::from(unescape_octal(left.get(4)?)),
                fstype: right.next()?.to_owned(),
                source: unescape_octal(right.next().unwrap_or("")),
                options: format!(
                    "{},{}",
                    left.get(5).unwrap_or(&""),
                    right.next().unwrap_or("")
                ),
            })
        })
        .collect()
}

/// Whether the device is mounted on the host's mount point, and with DAX; an error
/// when it is mounted anywhere else, or something else is mounted there.
fn mount_state(
    host: &Host,
    spec: &DeviceSpec,
    devnum: DevNum,
) -> Result<(bool, bool), DeviceError> {
    let text = host
        .read("/proc/self/mountinfo")
        .map_err(|e| DeviceError::Io {
            action: "reading",
            path: "/proc/self/mountinfo".into(),
            source: e,
        })?;
    let mut ours = None;
    let mut other_at_ours = None;
    for entry in parse_mountinfo(&text) {
        let this_device = entry.devnum == Some(devnum) || same_device(host, &entry.source, devnum);
        let at_ours = entry.mount_point == host.mount_point;
        match (this_device, at_ours) {
            (true, true) => ours = Some(entry),
            (true, false) => {
                return Err(DeviceError::MountedElsewhere {
                    device: spec.device.clone(),
                    mount_point: entry.mount_point,
                })
            }
            // The last mount on a point is the one seen there.
            (false, true) => {
                ours = None;
                other_at_ours = Some(entry);
            }
            (false, false) => {}
        }
    }
    if let (None, Some(other)) = (&ours, other_at_ours) {
        return Err(DeviceError::MountPointBusy {
            device: spec.device.clone(),
            mount_point: host.mount_point.clone(),
            source_name: format!("{} ({})", other.source, other.fstype),
        });
    }
    Ok(match ours {
        Some(entry) => {
            let dax = entry
                .options
                .split(',')
                .any(|o| o == "dax" || o == "dax=always");
            (true, dax)
        }
        None => (false, false),
    })
}

/// Undoes the `\040`-style escapes of mountinfo and /proc/swaps (the dumper's
/// reading of fstab and mountinfo does the same).
fn unescape_octal(field: &str) -> String {
    dumper::unescape_octal(field).to_string_lossy().into_owned()
}

// --- what it holds ----------------------------------------------------------------------

/// What an ext2/3/4 superblock says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtSuperblock {
    pub label: String,
    pub uuid: String,
}

/// The superblock is 1024 bytes at offset 1024; `s_magic` at 0x38, `s_uuid` at 0x68,
/// `s_volume_name` at 0x78.
const EXT_SUPERBLOCK_OFFSET: u64 = 1024;
const EXT_MAGIC: u16 = 0xef53;

/// Reads the ext2/3/4 superblock of `path`, if it has one. A device too small to hold
/// one has none.
pub fn read_ext_superblock(path: &Path) -> io::Result<Option<ExtSuperblock>> {
    use std::os::unix::fs::FileExt;
    let file = fs::File::open(path)?;
    let mut sb = [0u8; 1024];
    match file.read_exact_at(&mut sb, EXT_SUPERBLOCK_OFFSET) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    Ok(parse_ext_superblock(&sb))
}

fn parse_ext_superblock(sb: &[u8; 1024]) -> Option<ExtSuperblock> {
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) != EXT_MAGIC {
        return None;
    }
    let label = &sb[0x78..0x88];
    let label = &label[..label.iter().position(|&b| b == 0).unwrap_or(label.len())];
    let u = &sb[0x68..0x78];
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    Some(ExtSuperblock {
        label: String::from_utf8_lossy(label).into_owned(),
        uuid: format!(
            "{}-{}-{}-{}-{}",
            hex(&u[0..4]),
            hex(&u[4..6]),
            hex(&u[6..8]),
            hex(&u[8..10]),
            hex(&u[10..16])
        ),
    })
}

/// What the device (or image file) at `path` holds. The superblock is read first (no
/// program runs when it is the area's); otherwise `blkid -p` (low-level probing, no
/// cache) tells whether anything at all is there.
pub fn contents(path: &Path) -> Result<Contents, DeviceError> {
    let sb = read_ext_superblock(path).map_err(|e| DeviceError::Io {
        action: "reading the superblock of",
        path: path.to_path_buf(),
        source: e,
    })?;
    if let Some(sb) = &sb {
        if sb.label == LABEL {
            return Ok(Contents::Ours {
                uuid: sb.uuid.clone(),
            });
        }
    }
    let probed = blkid(path).map_err(|source| DeviceError::Probe {
        device: path.to_path_buf(),
        source: Box::new(source),
    })?;
    Ok(match (probed, sb) {
        (Probed::Nothing, None) => Contents::Empty,
        (Probed::Nothing, Some(sb)) => Contents::Other {
            found: format!("an ext2/3/4 superblock labelled {:?}", sb.label),
        },
        (Probed::Found(vars), _) => Contents::Other {
            found: describe(&vars),
        },
        (Probed::Ambivalent, _) => Contents::Other {
            found: "several signatures at once (blkid -p reports an ambivalent result; \
                    wipefs lists them)"
                .to_owned(),
        },
    })
}

/// What `blkid -p` found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Probed {
    Nothing,
    Found(Vec<(String, String)>),
    Ambivalent,
}

/// `blkid -p -o export <path>`: exit 0 with `KEY=value` lines, 2 for nothing found, 8
/// for several signatures at once.
fn blkid(path: &Path) -> Result<Probed, dumper::Error> {
    let args = [
        OsString::from("-p"),
        "-o".into(),
        "export".into(),
        path.into(),
    ];
    let (command, out) = dumper::cmd::output_any("blkid", &args)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => Ok(Probed::Found(parse_export(&String::from_utf8_lossy(
            &out.stdout,
        )))),
        // 2 is also what an unreadable device gives, with a message.
        Some(2) if stderr.trim().is_empty() => Ok(Probed::Nothing),
        Some(8) => Ok(Probed::Ambivalent),
        _ => Err(dumper::Error::CommandFailed {
            command,
            status: out.status.to_string(),
            stderr_tail: dumper::cmd::tail(&stderr, 12),
        }),
    }
}

/// `KEY=value` lines of `blkid -o export`.
fn parse_export(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.replace("\\ ", " ")))
        .collect()
}

/// blkid's findings in words: "a file system of type ext4 labelled \"data\"", "a
/// partition table of type gpt", "swap space".
fn describe(vars: &[(String, String)]) -> String {
    let get = |key: &str| vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let label = get("LABEL")
        .map(|l| format!(" labelled {l:?}"))
        .unwrap_or_default();
    match (get("TYPE"), get("PTTYPE")) {
        (Some("swap"), _) => format!("swap space{label}"),
        (Some(t), _) if get("USAGE") == Some("filesystem") || get("USAGE").is_none() => {
            format!("a file system of type {t}{label}")
        }
        (Some(t), _) => format!(
            "a signature of type {t} ({}){label}",
            get("USAGE").unwrap_or("")
        ),
        (None, Some(pt)) => format!("a partition table of type {pt}"),
        (None, None) => {
            let keys: Vec<&str> = vars
                .iter()
                .map(|(k, _)| k.as_str())
                .filter(|k| *k != "DEVNAME")
                .collect();
            format!("a signature blkid reports as {}", keys.join(", "))
        }
    }
}

/// Whether to format: never a device that holds anything, and an empty one only when
/// allowed.
fn needs_format(
    dev: &Device,
    contents: &Contents,
    allow_format: bool,
) -> Result<bool, DeviceError> {
    match contents {
        Contents::Ours { .. } => Ok(false),
        Contents::Empty if allow_format && !dev.mounted => Ok(true),
        Contents::Empty => Err(DeviceError::NoFileSystem {
            kind: dev.kind,
            device: dev.configured.clone(),
        }),
        Contents::Other { found } => Err(DeviceError::Foreign {
            device: dev.configured.clone(),
            node: dev.node.clone(),
            found: found.clone(),
        }),
    }
}

/// The arguments of mkfs.ext4 for the area on `node`. For pmem: 4 KiB blocks, which DAX
/// needs (mke2fs picks 1 KiB for devices under 512 MiB), and no discard, which on
/// pmem only zeroes memory.
fn mkfs_args(node: &Path, kind: AreaKind) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["-q", "-L", LABEL, "-m", "0"].map(OsString::from).to_vec();
    if kind == AreaKind::Pmem {
        args.extend(["-b", "4096", "-E", "nodiscard"].map(OsString::from));
    }
    args.push(node.into());
    args
}

fn format(path: &Path, device: &Path, kind: AreaKind) -> Result<(), DeviceError> {
    dumper::cmd::run("mkfs.ext4", mkfs_args(path, kind)).map_err(|source| DeviceError::Format {
        device: device.to_path_buf(),
        source: Box::new(source),
    })?;
    match contents(path)? {
        Contents::Ours { .. } => Ok(()),
        other => Err(DeviceError::FormatUnverified {
            device: device.to_path_buf(),
            found: format!("{other:?}"),
        }),
    }
}

// --- mounting ---------------------------------------------------------------------------

/// Mounts the area's device (see the module documentation); never formats.
pub fn open(host: &Host, spec: &DeviceSpec) -> Result<Prepared, DeviceError> {
    prepare(host, spec, false)
}

/// Makes the device the mounted area: checks it, formats it when it holds nothing and
/// `allow_format`, mounts it on the host's mount point unless it is mounted there,
/// and tightens the mode of a fresh file system's root to 0700.
pub fn prepare(
    host: &Host,
    spec: &DeviceSpec,
    allow_format: bool,
) -> Result<Prepared, DeviceError> {
    // The common case, a mounted area, takes no lock (and works for whoever may read
    // the area, root or not).
    let dev = inspect(host, spec)?;
    if dev.mounted {
        if let Ok(Some(sb)) = read_ext_superblock(&host.path(&dev.node)) {
            if sb.label == LABEL {
                return finish(host, dev, false, false);
            }
        }
    }
    let lock_path = host.mount_point.with_extension("lock");
    let _lock = lock(&lock_path)?;
    // Again under the lock: another process may have mounted or formatted it.
    let dev = inspect(host, spec)?;
    let path = host.path(&dev.node);
    let formatted = needs_format(&dev, &contents(&path)?, allow_format)?;
    if formatted {
        info!(device = ?dev.configured, node = ?dev.node, "formatting the empty {} area", dev.kind);
        format(&path, &dev.configured, dev.kind)?;
    }
    if dev.mounted {
        return finish(host, dev, formatted, false);
    }
    let dax = mount(host, &dev)?;
    let dev = Device {
        mounted: true,
        mounted_dax: dax,
        ..dev
    };
    finish(host, dev, formatted, true)
}

fn finish(
    host: &Host,
    device: Device,
    formatted: bool,
    mounted: bool,
) -> Result<Prepared, DeviceError> {
    tighten_root(&host.mount_point)?;
    Ok(Prepared {
        dax: device.mounted_dax,
        device,
        formatted,
        mounted,
        root: host.mount_point.clone(),
    })
}

/// An exclusive flock(2) on `path` (created 0600), held until dropped: one process
/// formats or mounts at a time.
fn lock(path: &Path) -> Result<nix::fcntl::Flock<fs::File>, DeviceError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io_err = |action, source| DeviceError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        dumper::create_private_dir_all(dir)
            .map_err(|e| io_err("creating the directory of", io::Error::other(e.to_string())))?;
    }
    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_err("opening the lock", e))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, errno)| io_err("locking", io::Error::from(errno)))
}

/// Mounts `dev` on the host's mount point (created 0700); returns whether with DAX.
fn mount(host: &Host, dev: &Device) -> Result<bool, DeviceError> {
    let mp = &host.mount_point;
    dumper::create_private_dir_all(mp).map_err(|e| DeviceError::Io {
        action: "creating the mount point",
        path: mp.clone(),
        source: io::Error::other(e.to_string()),
    })?;
    let node = host.path(&dev.node);
    let failed = |options: &str, errno| DeviceError::Mount {
        device: dev.configured.clone(),
        mount_point: mp.clone(),
        options: options.to_owned(),
        errno,
    };
    let want_dax = dev.kind == AreaKind::Pmem && dev.dax;
    if want_dax {
        match sys::mount_ext4(&node, mp, Some("dax=always")) {
            Ok(()) => {
                info!(device = ?dev.configured, mount_point = ?mp, "mounted the pmem area with dax=always");
                return Ok(true);
            }
            Err(Errno::EINVAL) => warn!(
                device = ?dev.configured,
                "the kernel refused dax=always for the pmem area; mounting it without DAX \
                 (through the page cache)"
            ),
            Err(errno) => return Err(failed("dax=always", errno)),
        }
    }
    sys::mount_ext4(&node, mp, None).map_err(|errno| failed("", errno))?;
    if dev.kind == AreaKind::Pmem && !want_dax {
        info!(device = ?dev.configured, mount_point = ?mp,
              "mounted the pmem area without DAX: its block queue does not support DAX");
    } else {
        info!(device = ?dev.configured, mount_point = ?mp, "mounted the {} area", dev.kind);
    }
    Ok(false)
}

/// A fresh ext4 root is 0755: make it 0700 like a directory area, when we own it
/// (otherwise `Area::open` says whose it is).
fn tighten_root(root: &Path) -> Result<(), DeviceError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = fs::metadata(root).map_err(|e| DeviceError::Io {
        action: "reading the metadata of",
        path: root.to_path_buf(),
        source: e,
    })?;
    let mode = meta.mode() & 0o7777;
    if meta.uid() == nix::unistd::geteuid().as_raw() && mode != 0o700 {
        info!(path = ?root, mode = format_args!("{mode:04o}"), "setting the mode of the area's root to 0700");
        fs::set_permissions(root, fs::Permissions::from_mode(0o700)).map_err(|e| {
            DeviceError::Io {
                action: "setting the mode of",
                path: root.to_path_buf(),
                source: e,
            }
        })?;
    }
    Ok(())
}

// --- for callers --------------------------------------------------------------------------

/// [`prepare`] of the configured area on this machine; `None` for a directory area.
pub fn prepare_device_area(
    settings: &Settings,
    allow_format: bool,
) -> Result<Option<Prepared>, DeviceError> {
    DeviceSpec::of(&settings.area.location)
        .map(|spec| prepare(&Host::system(), &spec, allow_format))
        .transpose()
}

/// The device and what it holds, for the pre-flight's "area device" row.
pub fn facts(host: &Host, spec: &DeviceSpec) -> Result<(Device, Contents), DeviceError> {
    let dev = inspect(host, spec)?;
    let contents = contents(&host.path(&dev.node))?;
    Ok((dev, contents))
}

/// What a suspend into this area should warn about: a pmem area reserved from RAM
/// with `memmap=` keeps its images across a kexec but not across a power-off or a
/// cold boot. `None` for the other areas (and real persistent memory).
pub fn power_off_warning(location: &AreaLocation) -> Option<String> {
    let memmap = location.memmap()?;
    Some(format!(
        "the area is RAM reserved with memmap={memmap}: it survives a kexec, but a \
         power-off or a cold boot empties it, and a workload suspended there is lost; \
         use a disk area for suspends that must outlive a power-off"
    ))
}

/// Waits up to `timeout` for the device node of a disk or pmem area to appear (udev
/// may still be creating it early in boot); returns whether it is there. A directory
/// area returns at once.
pub fn wait_for_device(location: &AreaLocation, timeout: Duration) -> bool {
    let Some(spec) = DeviceSpec::of(location) else {
        return true;
    };
    let start = Instant::now();
    let mut told = false;
    loop {
        if spec.device.exists() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        if !told {
            info!(device = ?spec.device, "waiting up to {} s for the area's device", timeout.as_secs());
            told = true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `upgradectl area init`: formats a disk or pmem area that holds nothing, mounts it and
/// says what it did; for a directory area, opens (and creates) it.
pub fn init_command(settings: &Settings, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let Some(p) = prepare_device_area(settings, true)? else {
        let area = crate::local::open_area(settings)?;
        if json {
            writeln!(
                out,
                "{}",
                serde_json::json!({"kind": "directory", "root": area.root()})
            )?;
        } else {
            writeln!(
                out,
                "directory area {}: nothing to format or mount",
                area.root().display()
            )?;
        }
        return Ok(());
    };
    // The same checks as every command that opens it (mode, owner, generations/).
    let area = crate::local::open_area(settings)?;
    let dev = &p.device;
    if json {
        writeln!(
            out,
            "{}",
            serde_json::json!({
                "kind": dev.kind.as_str(), "device": dev.configured, "node": dev.node,
                "size": dev.size, "formatted": p.formatted, "mounted": p.mounted,
                "dax": p.dax, "root": area.root(),
            })
        )?;
        return Ok(());
    }
    let size = dev
        .size
        .map(|s| format!(", {}", human_bytes(s)))
        .unwrap_or_default();
    let what = if dev.configured == dev.node {
        format!("{}{size}", dev.node.display())
    } else {
        format!(
            "{} ({}{size})",
            dev.configured.display(),
            dev.node.display()
        )
    };
    if p.formatted {
        writeln!(out, "formatted {what} as ext4, label {LABEL}")?;
    } else {
        writeln!(
            out,
            "{what} already holds the area's file system (label {LABEL})"
        )?;
    }
    let dax = if p.dax {
        "with dax=always"
    } else if dev.kind == AreaKind::Pmem {
        "without DAX (the device does not support it)"
    } else {
        "ext4"
    };
    if p.mounted {
        writeln!(out, "mounted it on {} ({dax})", p.root.display())?;
    } else {
        writeln!(out, "it is mounted on {} ({dax})", p.root.display())?;
    }
    writeln!(out, "the {} area is ready", dev.kind)?;
    Ok(())
}

fn human_bytes(n: u64) -> String {
    crate::local::human_bytes(n)
}
