//! Directories of the unix sockets a tree has bound (tmux's /tmp/tmux-0/default,
//! screen's /run/screen/S-root/...). CRIU binds them again on restore but does not
//! create their directories, and after a reboot or kexec /tmp and /run are empty: the
//! dump records each directory with its mode and owner, the restore recreates those
//! that are missing.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path};

use crate::Error;

/// A directory to recreate: `mode:uid:gid:/path`, one per entry in the manifest option.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SocketDir {
    pub path: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl SocketDir {
    fn encode(&self) -> String {
        format!("{:o}:{}:{}:{}", self.mode, self.uid, self.gid, self.path)
    }

    fn decode(s: &str) -> Option<SocketDir> {
        let mut it = s.splitn(4, ':');
        let mode = u32::from_str_radix(it.next()?, 8).ok()?;
        let uid = it.next()?.parse().ok()?;
        let gid = it.next()?.parse().ok()?;
        let path = it.next()?.to_owned();
        safe_path(&path).then_some(SocketDir {
            path,
            mode: mode & 0o7777,
            uid,
            gid,
        })
    }
}

/// Absolute, normal components only, no control characters or separators we use.
fn safe_path(p: &str) -> bool {
    p.starts_with('/')
        && p.len() < 4096
        && !p.chars().any(|c| c.is_control() || c == '\n' || c == ';')
        && Path::new(p)
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// The paths of bound unix sockets, by inode, from /proc/net/unix.
fn bound_paths(proc_net_unix: &str) -> Vec<(u64, String)> {
    proc_net_unix
        .lines()
        .skip(1)
        .filter_map(|l| {
            // Num RefCount Protocol Flags Type St Inode Path
            let f: Vec<&str> = l.split_whitespace().collect();
            let ino = f.get(6)?.parse().ok()?;
            let path = f.get(7)?;
            // '@' marks the abstract namespace: nothing on disk to recreate.
            path.starts_with('/').then(|| (ino, (*path).to_owned()))
        })
        .collect()
}

/// The directories of the unix sockets `pids` hold bound to a path, as a manifest
/// option value (empty when there are none).
pub fn record(pids: &[u32]) -> String {
    let table = fs::read_to_string("/proc/net/unix").unwrap_or_default();
    let bound = bound_paths(&table);
    let mut dirs = BTreeSet::new();
    for ino in crate::proc::open_files(pids)
        .iter()
        .filter_map(crate::proc::OpenFile::socket_inode)
    {
        for (_, path) in bound.iter().filter(|(i, _)| *i == ino) {
            let Some(dir) = Path::new(path).parent() else {
                continue;
            };
            if let Ok(meta) = fs::metadata(dir) {
                let d = SocketDir {
                    path: dir.to_string_lossy().into_owned(),
                    mode: meta.mode() & 0o7777,
                    uid: meta.uid(),
                    gid: meta.gid(),
                };
                if safe_path(&d.path) {
                    dirs.insert(d);
                }
            }
        }
    }
    dirs.iter()
        .map(SocketDir::encode)
        .collect::<Vec<_>>()
        .join(";")
}

/// Recreates the recorded directories that are missing, with their mode and owner.
/// Entries that do not parse or name unsafe paths are skipped: a manifest is data.
pub fn recreate(recorded: &str) -> Result<(), Error> {
    for d in recorded.split(';').filter_map(SocketDir::decode) {
        let path = Path::new(&d.path);
        if path.exists() {
            continue;
        }
        // Parents that are missing too get root-only 0700, like the area.
        if let Some(parent) = path.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|source| Error::Io {
                    action: "creating the socket directory",
                    path: parent.to_owned(),
                    source,
                })?;
        }
        let io = |action, source| Error::Io {
            action,
            path: path.to_owned(),
            source,
        };
        fs::DirBuilder::new()
            .mode(0o700)
            .create(path)
            .map_err(|e| io("creating the socket directory", e))?;
        nix::unistd::chown(
            path,
            Some(nix::unistd::Uid::from_raw(d.uid)),
            Some(nix::unistd::Gid::from_raw(d.gid)),
        )
        .map_err(|e| io("setting the owner of", e.into()))?;
        fs::set_permissions(path, fs::Permissions::from_mode(d.mode))
            .map_err(|e| io("setting the mode of", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_paths_skip_unnamed_and_abstract_sockets() {
        let t = "Num       RefCount Protocol Flags    Type St Inode Path\n\
                 0000: 00000002 00000000 00010000 0001 01 14834 /tmp/tmux-0/demo\n\
                 0000: 00000002 00000000 00000000 0001 03 14835\n\
                 0000: 00000002 00000000 00010000 0001 01 99 @/abstract\n";
        assert_eq!(bound_paths(t), vec![(14834, "/tmp/tmux-0/demo".to_owned())]);
    }

    #[test]
    fn entries_round_trip_and_hostile_ones_are_dropped() {
        let d = SocketDir {
            path: "/tmp/tmux-0".into(),
            mode: 0o700,
            uid: 0,
            gid: 0,
        };
        assert_eq!(SocketDir::decode(&d.encode()), Some(d));
        assert_eq!(SocketDir::decode("700:0:0:relative/dir"), None);
        assert_eq!(SocketDir::decode("700:0:0:/tmp/../etc"), None);
        assert_eq!(SocketDir::decode("700:x:0:/tmp/a"), None);
        assert_eq!(SocketDir::decode("garbage"), None);
    }

    #[test]
    fn recreate_makes_missing_dirs_with_their_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/tmux-test");
        let me = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        let rec = format!("1700:{me}:{gid}:{}", dir.display());
        recreate(&rec).unwrap();
        let meta = fs::metadata(&dir).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o1700);
        // Present already: left alone.
        recreate(&rec).unwrap();
    }
}
