//! The cgroup v2 file system: where it is mounted, which processes a cgroup holds, and
//! its freezer. A workload is frozen before it is dumped so that it does not change
//! under CRIU's feet, and every failure thaws it again: a failed upgrade must leave
//! every workload running.
//!
//! The mount point is read from /proc/self/mountinfo rather than assumed: a systemd
//! system mounts the unified hierarchy at /sys/fs/cgroup, hybrid and non-systemd
//! systems elsewhere (e.g. /sys/fs/cgroup/unified).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};

/// How often `cgroup.events` is read while waiting for a freeze. The kernel freezes a
/// small cgroup within a millisecond or two; 10 ms keeps the wait short without
/// spinning.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Where the cgroup2 file system is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup2Mount {
    mount_point: PathBuf,
    /// The cgroup that the mount shows at its mount point: "/" unless a sub-tree was
    /// mounted (or bind-mounted, as in some containers).
    root: String,
}

impl Cgroup2Mount {
    /// The first cgroup2 mount of /proc/self/mountinfo.
    pub fn discover() -> Result<Cgroup2Mount> {
        let path = Path::new("/proc/self/mountinfo");
        let text = fs::read_to_string(path).at("reading", path)?;
        Self::from_mountinfo(&text).ok_or(Error::Cgroup2NotMounted)
    }

    /// The first cgroup2 mount of a mountinfo text (see proc(5)).
    pub fn from_mountinfo(text: &str) -> Option<Cgroup2Mount> {
        text.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            // ID PARENT MAJ:MIN ROOT MOUNT-POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE ...
            let sep = fields.iter().skip(6).position(|f| *f == "-")? + 6;
            if *fields.get(sep + 1)? != "cgroup2" {
                return None;
            }
            Some(Cgroup2Mount {
                mount_point: PathBuf::from(unescape_mountinfo(fields.get(4)?)),
                root: unescape_mountinfo(fields.get(3)?),
            })
        })
    }

    /// A mount at `mount_point` showing the whole hierarchy, for tests and for callers
    /// that know better.
    pub fn at(mount_point: impl Into<PathBuf>) -> Cgroup2Mount {
        Cgroup2Mount {
            mount_point: mount_point.into(),
            root: "/".into(),
        }
    }

    pub fn mount_point(&self) -> &Path {
        &self.mount_point
    }

    /// The directory of `cgroup`, a path below the hierarchy's root such as
    /// `/system.slice/foo.service` (as in /proc/PID/cgroup). Paths that would leave
    /// the mount (`..`) or are not absolute are refused.
    pub fn dir_of(&self, cgroup: &str) -> Result<PathBuf> {
        check_cgroup_path(cgroup)?;
        let rel = if self.root == "/" {
            Some(cgroup)
        } else if cgroup == self.root {
            Some("/")
        } else {
            cgroup
                .strip_prefix(self.root.as_str())
                .filter(|rest| rest.starts_with('/'))
        };
        let Some(rel) = rel else {
            return Err(Error::CgroupPath {
                cgroup: cgroup.to_owned(),
                reason: format!(
                    "is outside the part of the hierarchy mounted at {} ({})",
                    self.mount_point.display(),
                    self.root
                ),
            });
        };
        Ok(self.mount_point.join(rel.trim_start_matches('/')))
    }

    /// Moves process `pid` into `cgroup` (a write of its cgroup.procs).
    pub fn move_into(&self, cgroup: &str, pid: u32) -> Result<()> {
        let procs = self.dir_of(cgroup)?.join("cgroup.procs");
        fs::write(&procs, format!("{pid}\n")).map_err(|source| Error::Io {
            action: "moving a process into",
            path: procs,
            source,
        })
    }

    /// The PIDs of the processes in `cgroup` and every cgroup below it, sorted.
    pub fn procs_recursive(&self, cgroup: &str) -> Result<Vec<u32>> {
        let dir = self.dir_of(cgroup)?;
        if !dir.is_dir() {
            return Err(Error::CgroupPath {
                cgroup: cgroup.to_owned(),
                reason: format!("does not exist ({} is not a directory)", dir.display()),
            });
        }
        let mut pids = Vec::new();
        collect_procs(&dir, &mut pids)?;
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }
}

/// Adds the PIDs of `dir`'s `cgroup.procs` and of its sub-cgroups. A sub-cgroup removed
/// during the walk (its processes exited) counts as empty.
fn collect_procs(dir: &Path, pids: &mut Vec<u32>) -> Result<()> {
    let procs = dir.join("cgroup.procs");
    match fs::read_to_string(&procs) {
        Ok(text) => pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        // A threaded cgroup's cgroup.procs cannot be read (EOPNOTSUPP); its processes
        // are listed by its domain parent.
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EOPNOTSUPP as i32) => {}
        Err(e) => return Err(e).at("reading", &procs),
    }
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).at("listing", dir),
    };
    for entry in entries {
        let entry = entry.at("listing", dir)?;
        // cgroupfs holds only directories (sub-cgroups) and regular files.
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_procs(&entry.path(), pids)?;
        }
    }
    Ok(())
}

/// A cgroup path as found in /proc/PID/cgroup and systemd's `ControlGroup`: absolute,
/// without empty, `.` or `..` components, so that joining it to the mount point
/// cannot leave the mount.
pub(crate) fn check_cgroup_path(cgroup: &str) -> Result<()> {
    let refuse = |reason: &str| {
        Err(Error::CgroupPath {
            cgroup: cgroup.to_owned(),
            reason: reason.to_owned(),
        })
    };
    let Some(rest) = cgroup.strip_prefix('/') else {
        return refuse("is not an absolute cgroup path (it must start with '/')");
    };
    if rest.is_empty() {
        return Ok(());
    }
    if rest
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return refuse(
            "has empty, '.' or '..' components (a process in another cgroup namespace?)",
        );
    }
    Ok(())
}

/// Undoes mountinfo's octal escapes of space, tab, newline and backslash.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if let Some(d) = bytes.get(i + 1..i + 4) {
                if d.iter().all(|b| (b'0'..=b'7').contains(b)) {
                    let value = d.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0'));
                    if let Ok(b) = u8::try_from(value) {
                        out.push(b);
                        i += 4;
                        continue;
                    }
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup v2 freezer.
#[derive(Debug, Clone)]
pub struct Freezer {
    mount: Cgroup2Mount,
}

impl Freezer {
    /// A freezer on the system's cgroup2 mount.
    pub fn new() -> Result<Freezer> {
        Ok(Freezer {
            mount: Cgroup2Mount::discover()?,
        })
    }

    /// A freezer on the given mount.
    pub fn with_mount(mount: Cgroup2Mount) -> Freezer {
        Freezer { mount }
    }

    pub fn mount(&self) -> &Cgroup2Mount {
        &self.mount
    }

    /// Freezes `cgroup` (a path below the mount, e.g. `/system.slice/foo.service`) and
    /// waits until the kernel reports it frozen. On timeout it is thawed again and an
    /// error says so. The returned guard thaws it when dropped.
    pub fn freeze(&self, cgroup: &str, timeout: Duration) -> Result<FrozenCgroup> {
        let guard = self.start_freeze(cgroup)?;
        guard.wait_frozen(Instant::now() + timeout, timeout)?;
        Ok(guard)
    }

    /// Freezes several cgroups: all are asked to freeze first, so that they freeze in
    /// parallel, then each is awaited against one deadline. On any failure those
    /// already frozen are thawed before the error is returned.
    pub fn freeze_all<S: AsRef<str>>(
        &self,
        cgroups: &[S],
        timeout: Duration,
    ) -> Result<Vec<FrozenCgroup>> {
        let deadline = Instant::now() + timeout;
        let mut guards = Vec::with_capacity(cgroups.len());
        for cgroup in cgroups {
            // On error `guards` is dropped, and each guard thaws its cgroup.
            guards.push(self.start_freeze(cgroup.as_ref())?);
        }
        for guard in &guards {
            guard.wait_frozen(deadline, timeout)?;
        }
        Ok(guards)
    }

    /// Whether the kernel reports `cgroup` frozen (by itself or by an ancestor).
    pub fn is_frozen(&self, cgroup: &str) -> Result<bool> {
        let dir = self.mount.dir_of(cgroup)?;
        read_frozen(&dir.join("cgroup.events"))
    }

    /// Thaws `cgroup` without a guard: for recovery after a crash, from the list of
    /// cgroups the crashed process had frozen. A cgroup that is gone is fine.
    pub fn thaw(&self, cgroup: &str) -> Result<()> {
        let dir = self.mount.dir_of(cgroup)?;
        FrozenCgroup {
            cgroup: cgroup.to_owned(),
            dir,
            already_frozen: false,
            thawed: false,
        }
        .thaw()
    }

    fn start_freeze(&self, cgroup: &str) -> Result<FrozenCgroup> {
        if cgroup == "/" {
            return Err(Error::CgroupPath {
                cgroup: cgroup.to_owned(),
                reason: "is the root cgroup, which has no freezer; freeze the workload's \
                         own cgroup instead"
                    .into(),
            });
        }
        let dir = self.mount.dir_of(cgroup)?;
        let freeze_file = dir.join("cgroup.freeze");
        // Someone else's freeze (an administrator, a container manager) is theirs to
        // undo: remember it, and leave the cgroup frozen when the guard goes.
        let already_frozen = match fs::read_to_string(&freeze_file) {
            Ok(v) => v.trim() == "1",
            Err(e) => return Err(e).at("reading the freezer state of cgroup", &freeze_file),
        };
        if already_frozen {
            tracing::debug!(cgroup, "cgroup was already frozen; it will be left frozen");
        } else {
            fs::write(&freeze_file, "1").at("freezing cgroup", &freeze_file)?;
            tracing::debug!(cgroup, "freezing");
        }
        Ok(FrozenCgroup {
            cgroup: cgroup.to_owned(),
            dir,
            already_frozen,
            thawed: false,
        })
    }
}

/// A cgroup frozen by [`Freezer::freeze`]; dropping it thaws the cgroup.
#[derive(Debug)]
#[must_use = "dropping the guard thaws the cgroup at once"]
pub struct FrozenCgroup {
    cgroup: String,
    dir: PathBuf,
    /// Frozen before we came: left frozen on thaw.
    already_frozen: bool,
    thawed: bool,
}

impl FrozenCgroup {
    /// The cgroup's path below the mount.
    pub fn cgroup(&self) -> &str {
        &self.cgroup
    }

    /// Whether the cgroup was frozen before [`Freezer::freeze`], in which case thawing
    /// leaves it frozen.
    pub fn was_already_frozen(&self) -> bool {
        self.already_frozen
    }

    /// Thaws the cgroup and reports whether that worked.
    pub fn thaw(mut self) -> Result<()> {
        self.thaw_now()
    }

    fn thaw_now(&mut self) -> Result<()> {
        if self.thawed {
            return Ok(());
        }
        self.thawed = true;
        if self.already_frozen {
            return Ok(());
        }
        let freeze_file = self.dir.join("cgroup.freeze");
        match fs::write(&freeze_file, "0") {
            Ok(()) => {
                tracing::debug!(cgroup = %self.cgroup, "thawed");
                Ok(())
            }
            // The cgroup is gone, and with it every process there was to thaw (e.g.
            // CRIU killed them after a dump and systemd removed the cgroup).
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).at("thawing cgroup", &freeze_file),
        }
    }

    /// Waits until cgroup.events says `frozen 1`; on timeout, thaws and fails.
    fn wait_frozen(&self, deadline: Instant, timeout: Duration) -> Result<()> {
        let events = self.dir.join("cgroup.events");
        loop {
            if read_frozen(&events)? {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                let thaw_file = self.dir.join("cgroup.freeze");
                // Thaw here rather than leave it to Drop so that the error can say
                // whether the workload is running again.
                let thawed = self.already_frozen || fs::write(&thaw_file, "0").is_ok();
                return Err(Error::FreezeTimeout {
                    cgroup: self.cgroup.clone(),
                    waited: timeout,
                    thawed,
                    stuck: stuck_processes(&self.dir),
                });
            }
            thread::sleep(POLL_INTERVAL.min(deadline - now));
        }
    }
}

impl Drop for FrozenCgroup {
    fn drop(&mut self) {
        if let Err(err) = self.thaw_now() {
            tracing::warn!(
                cgroup = %self.cgroup,
                err = %err,
                "could not thaw cgroup; its processes stay stopped until \
                 `echo 0 > cgroup.freeze` is written"
            );
        }
    }
}

/// Reads `frozen` from a cgroup.events file.
fn read_frozen(events: &Path) -> Result<bool> {
    let text = fs::read_to_string(events).at("reading the freezer state of", events)?;
    Ok(parse_events_frozen(&text))
}

fn parse_events_frozen(text: &str) -> bool {
    text.lines().any(|l| l.trim() == "frozen 1")
}

/// The processes of a cgroup that may keep it from freezing: those in uninterruptible
/// sleep (state D, e.g. waiting on a network file system or a FUSE daemon), listed as
/// "PID (comm)". Best effort, for the error message.
fn stuck_processes(dir: &Path) -> Vec<String> {
    let mut pids = Vec::new();
    if collect_procs(dir, &mut pids).is_err() {
        return Vec::new();
    }
    pids.into_iter()
        .filter_map(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let close = stat.rfind(')')?;
            let state = stat[close + 1..].split_ascii_whitespace().next()?;
            let comm = &stat[stat.find('(')? + 1..close];
            (state == "D").then(|| format!("{pid} ({comm})"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    const SYSTEMD: &str = "\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
25 20 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
90 25 0:24 / /mnt/other rw shared:4 - cgroup2 cgroup2 rw
";

    #[test]
    fn mountinfo_first_cgroup2() {
        let m = Cgroup2Mount::from_mountinfo(HYBRID).unwrap();
        assert_eq!(m.mount_point(), Path::new("/sys/fs/cgroup/unified"));
        let m = Cgroup2Mount::from_mountinfo(SYSTEMD).unwrap();
        assert_eq!(m, Cgroup2Mount::at("/sys/fs/cgroup"));
        assert!(Cgroup2Mount::from_mountinfo("22 1 0:21 / /proc rw - proc proc rw\n").is_none());
        assert!(Cgroup2Mount::from_mountinfo("").is_none());
    }

    #[test]
    fn mountinfo_escapes_and_sub_tree_mounts() {
        let m = Cgroup2Mount::from_mountinfo(
            "50 1 0:24 /machine.slice /my\\040cgroups rw - cgroup2 none rw\n",
        )
        .unwrap();
        assert_eq!(m.mount_point(), Path::new("/my cgroups"));
        assert_eq!(
            m.dir_of("/machine.slice/a.scope").unwrap(),
            Path::new("/my cgroups/a.scope")
        );
        assert_eq!(
            m.dir_of("/machine.slice").unwrap(),
            Path::new("/my cgroups/")
        );
        let err = m.dir_of("/machine.slicex/a").unwrap_err().to_string();
        assert!(err.contains("outside the part of the hierarchy"), "{err}");
        assert_eq!(unescape_mountinfo("a\\134b\\011"), "a\\b\t");
        assert_eq!(unescape_mountinfo("trailing\\04"), "trailing\\04");
    }

    #[test]
    fn cgroup_paths_stay_in_the_mount() {
        let m = Cgroup2Mount::at("/sys/fs/cgroup");
        assert_eq!(
            m.dir_of("/system.slice/foo.service").unwrap(),
            Path::new("/sys/fs/cgroup/system.slice/foo.service")
        );
        assert_eq!(m.dir_of("/").unwrap(), Path::new("/sys/fs/cgroup"));
        for bad in ["", "system.slice", "/a/../..", "/../x", "/a//b", "/a/"] {
            assert!(m.dir_of(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn events_parsing() {
        assert!(parse_events_frozen("populated 1\nfrozen 1\n"));
        assert!(!parse_events_frozen("populated 1\nfrozen 0\n"));
        assert!(!parse_events_frozen(""));
    }

    #[test]
    fn procs_recursive_on_a_fake_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::create_dir_all(root.join("a/c")).unwrap();
        fs::write(root.join("a/cgroup.procs"), "10\n").unwrap();
        fs::write(root.join("a/b/cgroup.procs"), "12\n11\n").unwrap();
        fs::write(root.join("a/c/cgroup.procs"), "").unwrap();
        let m = Cgroup2Mount::at(root);
        assert_eq!(m.procs_recursive("/a").unwrap(), vec![10, 11, 12]);
        assert_eq!(m.procs_recursive("/a/b").unwrap(), vec![11, 12]);
        let err = m.procs_recursive("/missing").unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
    }

    #[test]
    fn freeze_timeout_thaws_and_reports() {
        // A fake cgroup whose events never say frozen: the freezer must give up, write
        // 0 back, and say so.
        let dir = tempfile::tempdir().unwrap();
        let cg = dir.path().join("w");
        fs::create_dir(&cg).unwrap();
        fs::write(cg.join("cgroup.freeze"), "0").unwrap();
        fs::write(cg.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
        fs::write(cg.join("cgroup.procs"), "").unwrap();
        let f = Freezer::with_mount(Cgroup2Mount::at(dir.path()));
        let err = f.freeze("/w", Duration::from_millis(30)).unwrap_err();
        assert!(
            matches!(err, Error::FreezeTimeout { thawed: true, .. }),
            "{err}"
        );
        assert_eq!(fs::read_to_string(cg.join("cgroup.freeze")).unwrap(), "0");
        let msg = err.to_string();
        assert!(msg.contains("/w") && msg.contains("thawed"), "{msg}");
    }

    #[test]
    fn guard_thaws_on_drop_and_respects_earlier_freezes() {
        let dir = tempfile::tempdir().unwrap();
        for (name, state) in [("mine", "0"), ("theirs", "1")] {
            let cg = dir.path().join(name);
            fs::create_dir(&cg).unwrap();
            fs::write(cg.join("cgroup.freeze"), state).unwrap();
            // A fake kernel that has frozen already.
            fs::write(cg.join("cgroup.events"), "populated 1\nfrozen 1\n").unwrap();
        }
        let f = Freezer::with_mount(Cgroup2Mount::at(dir.path()));
        let read = |n: &str| fs::read_to_string(dir.path().join(n).join("cgroup.freeze")).unwrap();
        {
            let g = f.freeze("/mine", Duration::from_secs(1)).unwrap();
            assert!(!g.was_already_frozen());
            assert_eq!(read("mine"), "1");
        }
        assert_eq!(read("mine"), "0");
        let g = f.freeze("/theirs", Duration::from_secs(1)).unwrap();
        assert!(g.was_already_frozen());
        g.thaw().unwrap();
        assert_eq!(read("theirs"), "1");
    }

    #[test]
    fn freeze_all_thaws_the_others_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let cg = dir.path().join("ok");
        fs::create_dir(&cg).unwrap();
        fs::write(cg.join("cgroup.freeze"), "0").unwrap();
        fs::write(cg.join("cgroup.events"), "frozen 1\n").unwrap();
        let f = Freezer::with_mount(Cgroup2Mount::at(dir.path()));
        let err = f
            .freeze_all(&["/ok", "/missing"], Duration::from_secs(1))
            .unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        assert_eq!(fs::read_to_string(cg.join("cgroup.freeze")).unwrap(), "0");
        assert!(f.freeze("/", Duration::from_secs(1)).is_err());
    }
}
