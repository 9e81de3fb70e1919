//! Small file-system helpers shared by the manifest and the area: modes, private
//! directories, fsync of directories; free space, file system types and mount points
//! of the area.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// Images are process memory: only the owner may read them.
pub(crate) const FILE_MODE: u32 = 0o600;
pub(crate) const DIR_MODE: u32 = 0o700;

/// Creates the directory `path` with mode 0700. The mode is set again after creation
/// because the umask may have taken bits away (0700 under umask 0277 would be 0500).
/// Returns `Ok(false)` if it already existed.
pub(crate) fn create_private_dir(path: &Path) -> Result<bool> {
    match fs::DirBuilder::new().mode(DIR_MODE).create(path) {
        Ok(()) => {
            set_mode(path, DIR_MODE)?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e).at("creating directory", path),
    }
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).at("setting the mode of", path)
}

/// fsync on a directory makes the entries created, renamed or removed in it durable;
/// without it a rename can be lost in a crash even after the file itself was synced.
pub(crate) fn sync_dir(path: &Path) -> Result<()> {
    fs::File::open(path)
        .and_then(|dir| dir.sync_all())
        .at("syncing directory", path)
}

/// Removes `path`, a directory tree or a file, without following symbolic links.
pub(crate) fn remove_any(path: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(path).at("reading metadata of", path)?;
    if meta.is_dir() {
        fs::remove_dir_all(path).at("removing directory", path)
    } else {
        fs::remove_file(path).at("removing", path)
    }
}

/// `mkdir -p` where every directory created is 0700 (log and work directories hold
/// details of process memory too).
pub fn create_private_dir_all(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        create_private_dir_all(parent)?;
    }
    create_private_dir(path).map(|_| ())
}

/// Writes `bytes` to `path` atomically: a new 0600 file at `tmp` (a stale one is
/// removed first), fsync, rename over `path`, fsync the directory. A reader sees the
/// old content or the new, never a mix, even across a crash.
pub fn write_atomic(path: &Path, tmp: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    // A leftover of an interrupted save holds nothing of value.
    match fs::remove_file(tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(e).at("removing stale temporary file", tmp)
        }
        _ => {}
    }
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(tmp)
            .at("creating", tmp)?;
        file.write_all(bytes).at("writing", tmp)?;
        file.sync_all().at("syncing", tmp)?;
        fs::rename(tmp, path).at("renaming into place", path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        // Best effort: the error being returned matters more than this one.
        let _ = fs::remove_file(tmp);
    }
    result
}

/// The bytes an unprivileged writer may still use on the file system of `path`
/// (statvfs: `f_bavail * f_frsize`), or `None` if statvfs fails.
pub(crate) fn free_bytes(path: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    Some((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

/// A file system type: statfs(2)'s `f_type`, the magic number of the file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FsType(pub u32);

impl FsType {
    pub const TMPFS: FsType = FsType(0x0102_1994);
    pub const RAMFS: FsType = FsType(0x8584_58f6);
    pub const OVERLAYFS: FsType = FsType(0x794c_7630);
    pub const NFS: FsType = FsType(0x6969);
    pub const CIFS: FsType = FsType(0xff53_4d42);
    pub const SMB2: FsType = FsType(0xfe53_4d42);
    /// FUSE, virtiofs included.
    pub const FUSE: FsType = FsType(0x6573_5546);
    /// ext2, ext3 and ext4 share it.
    pub const EXT4: FsType = FsType(0xef53);
    pub const XFS: FsType = FsType(0x5846_5342);
    pub const BTRFS: FsType = FsType(0x9123_683e);

    /// The type of the file system `path` is on.
    pub fn of(path: &Path) -> Result<FsType> {
        let st = nix::sys::statfs::statfs(path)
            .map_err(io::Error::from)
            .at("reading the file system type (statfs) of", path)?;
        // f_type is a signed word on some ABIs; the magic numbers are 32 bits.
        Ok(FsType(st.filesystem_type().0 as u32))
    }

    /// The common name of a known type.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            FsType::TMPFS => "tmpfs",
            FsType::RAMFS => "ramfs",
            FsType::OVERLAYFS => "overlayfs",
            FsType::NFS => "nfs",
            FsType::CIFS => "cifs",
            FsType::SMB2 => "smb2",
            FsType::FUSE => "fuse",
            FsType::EXT4 => "ext2/3/4",
            FsType::XFS => "xfs",
            FsType::BTRFS => "btrfs",
            FsType(0xf2f5_2010) => "f2fs",
            FsType(0x2fc1_2fc1) => "zfs",
            FsType(0x4d44) => "vfat",
            FsType(0x7371_7368) => "squashfs",
            FsType(0x9660) => "iso9660",
            FsType(0x0102_1997) => "9p",
            _ => return None,
        })
    }
}

impl std::fmt::Display for FsType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "file system type {:#x}", self.0),
        }
    }
}

/// The mount point `path` is under (the longest one of /proc/self/mountinfo that
/// holds it, symbolic links resolved), if it can be told.
pub(crate) fn mount_point_of(path: &Path) -> Option<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let path = resolve_existing(path);
    longest_prefix(&path, &mountinfo_points(&mountinfo)).cloned()
}

/// Refuses an area below a mount point of /etc/fstab where nothing is mounted now (a
/// `nofail` disk that did not come up, say): images written there would land on the
/// file system underneath, and vanish behind the mount at the next boot. Mount points
/// systemd knows from elsewhere (.mount units) are not looked at; without /etc/fstab
/// or /proc/self/mountinfo there is nothing to tell, and nothing is refused.
pub fn check_mounted(path: &Path) -> Result<()> {
    let (Ok(fstab), Ok(mountinfo)) = (
        fs::read_to_string("/etc/fstab"),
        fs::read_to_string("/proc/self/mountinfo"),
    ) else {
        return Ok(());
    };
    let fstab = fstab_points(&fstab);
    let mounted = mountinfo_points(&mountinfo);
    // Both the path as configured and where its symbolic links lead.
    for p in [path.to_path_buf(), resolve_existing(path)] {
        if let Some(mount_point) = unmounted_fstab_point(&p, &fstab, &mounted) {
            return Err(Error::AreaNotMounted {
                path: path.to_path_buf(),
                mount_point,
            });
        }
    }
    Ok(())
}

/// The mount point of /etc/fstab that `path` is below and that nothing is mounted on,
/// unless something mounted deeper holds `path` anyway.
fn unmounted_fstab_point(path: &Path, fstab: &[PathBuf], mounted: &[PathBuf]) -> Option<PathBuf> {
    let wanted = longest_prefix(path, fstab)?;
    if mounted.contains(wanted) {
        return None;
    }
    let deeper = longest_prefix(path, mounted).is_some_and(|m| m.starts_with(wanted));
    (!deeper).then(|| wanted.clone())
}

fn longest_prefix<'a>(path: &Path, points: &'a [PathBuf]) -> Option<&'a PathBuf> {
    points
        .iter()
        .filter(|p| path.starts_with(p))
        .max_by_key(|p| p.components().count())
}

/// `path` with the symbolic links of its longest existing ancestor resolved, the rest
/// appended as it is.
fn resolve_existing(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut base = path;
    loop {
        if let Ok(real) = fs::canonicalize(base) {
            return rest.iter().rev().fold(real, |p, c| p.join(c));
        }
        match (base.parent(), base.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                base = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// The mount points of /proc/self/mountinfo (the fifth field).
fn mountinfo_points(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_octal)
        .collect()
}

/// The mount points of /etc/fstab (the second field), absolute ones only: swap and
/// `none` have none.
fn fstab_points(text: &str) -> Vec<PathBuf> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_whitespace().nth(1))
        .map(unescape_octal)
        .filter(|p| p.is_absolute())
        .collect()
}

/// Undoes the `\040`-style escapes of fstab and mountinfo (space, tab, newline,
/// backslash).
pub fn unescape_octal(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal.and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok()) {
            Some(b) => {
                out.push(b);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(ps: &[&str]) -> Vec<PathBuf> {
        ps.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn fstab_and_mountinfo_are_parsed_with_their_escapes() {
        let fstab = "# <file system> <mount point> <type>\n\
                     UUID=1 / ext4 errors=remount-ro 0 1\n\
                     \n\
                     \tLABEL=area  /var/lib/upgraded ext4 defaults,nofail 0 2\n\
                     /dev/sdb2 none swap sw 0 0\n\
                     /dev/sdc1 /mnt/with\\040space ext4 defaults 0 2\n";
        assert_eq!(
            fstab_points(fstab),
            paths(&["/", "/var/lib/upgraded", "/mnt/with space"])
        );
        let mountinfo = "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
                         27 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n\
                         40 27 8:33 / /mnt/with\\040space rw - ext4 /dev/sdc1 rw\n";
        assert_eq!(
            mountinfo_points(mountinfo),
            paths(&["/proc", "/", "/mnt/with space"])
        );
        assert_eq!(unescape_octal(r"a\134b\0"), PathBuf::from(r"a\b\0"));
    }

    #[test]
    fn an_area_below_an_unmounted_fstab_mount_point_is_found() {
        let fstab = paths(&["/", "/var/lib/upgraded", "/data"]);
        let mounted = paths(&["/", "/proc", "/var/lib/upgraded"]);
        let unmounted = |p: &str| unmounted_fstab_point(Path::new(p), &fstab, &mounted);
        assert_eq!(unmounted("/var/lib/upgraded"), None);
        assert_eq!(unmounted("/var/lib/upgraded/sub"), None);
        assert_eq!(unmounted("/srv/area"), None, "only / holds it");
        assert_eq!(unmounted("/data"), Some("/data".into()));
        assert_eq!(unmounted("/data/upgraded"), Some("/data".into()));
        assert_eq!(unmounted("/database"), None, "a prefix by components only");
        // Something mounted deeper than the fstab entry holds the area anyway.
        let mounted = paths(&["/", "/data/upgraded"]);
        assert_eq!(
            unmounted_fstab_point(Path::new("/data/upgraded/x"), &fstab, &mounted),
            None
        );
        assert_eq!(
            unmounted_fstab_point(Path::new("/data/other"), &fstab, &mounted),
            Some("/data".into())
        );
        // No fstab entry holds it: nothing to tell.
        assert_eq!(unmounted_fstab_point(Path::new("/x"), &[], &mounted), None);
    }

    #[test]
    fn resolving_keeps_the_missing_rest() {
        let dir = tempfile::tempdir().unwrap();
        let real = fs::canonicalize(dir.path()).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        assert_eq!(
            resolve_existing(&dir.path().join("link/not/there")),
            real.join("not/there")
        );
    }

    #[test]
    fn file_system_types_have_names() {
        assert_eq!(FsType::TMPFS.to_string(), "tmpfs");
        assert_eq!(
            FsType(0x1234_5678).to_string(),
            "file system type 0x12345678"
        );
        let dir = tempfile::tempdir().unwrap();
        FsType::of(dir.path()).unwrap();
        let err = FsType::of(&dir.path().join("missing")).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
