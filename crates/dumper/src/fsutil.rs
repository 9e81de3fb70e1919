//! Small file-system helpers shared by the manifest and the area: modes, private
//! directories, fsync of directories.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use crate::error::{IoContext, Result};

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
