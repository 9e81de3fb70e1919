//! A snapshot of the process table, read from /proc, and the tree logic over it that
//! decides which processes make up a workload.
//!
//! The table is a snapshot: processes come and go while /proc is read, so one that
//! vanishes half-way is left out rather than failing the scan. Kernel threads are
//! kept apart (CRIU cannot dump them, and no workload contains one) so that a lookup
//! can still say "kernel thread" instead of "no such process".

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};

/// `PF_KTHREAD` in the flags field of /proc/PID/stat (include/linux/sched.h). More
/// reliable than "parent is PID 2": in a PID namespace PID 2 is an ordinary process.
const PF_KTHREAD: u64 = 0x0020_0000;

/// One process of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcEntry {
    pub pid: u32,
    /// 0 for PID 1 and processes whose parent is outside our PID namespace.
    pub ppid: u32,
    pub pgid: u32,
    pub sid: u32,
    /// The short name (`comm`, at most 15 bytes).
    pub comm: String,
    /// The arguments; empty for zombies and processes that cleared their `argv`.
    pub cmdline: Vec<String>,
    /// The state letter of /proc/PID/stat (`R`, `S`, `D`, `Z`, `T`...).
    pub state: char,
    /// Resident memory (`VmRSS`); 0 for zombies.
    pub rss_bytes: u64,
    /// The cgroup v2 path (the `0::` line of /proc/PID/cgroup), if it has one.
    pub cgroup: Option<String>,
    /// The real user id.
    pub uid: u32,
    /// A kernel thread, which [`ProcessTable`] keeps out of the process set.
    pub kernel_thread: bool,
}

impl ProcEntry {
    /// Exited, and not yet reaped by its parent.
    pub fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }

    /// The command line for people: the arguments, or `[comm]` without them.
    pub fn display_command(&self) -> String {
        if self.cmdline.is_empty() {
            format!("[{}]", self.comm)
        } else {
            self.cmdline.join(" ")
        }
    }
}

/// A snapshot of the processes of the system (kernel threads aside).
#[derive(Debug, Clone, Default)]
pub struct ProcessTable {
    procs: BTreeMap<u32, ProcEntry>,
    kernel_threads: BTreeSet<u32>,
    children: BTreeMap<u32, Vec<u32>>,
}

impl ProcessTable {
    /// Reads every process of /proc.
    pub fn scan() -> Result<ProcessTable> {
        let proc_root = Path::new("/proc");
        let mut entries = Vec::new();
        for dirent in fs::read_dir(proc_root).at("listing processes in", proc_root)? {
            let dirent = dirent.at("listing processes in", proc_root)?;
            let Some(pid) = dirent
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            match read_entry(&dirent.path(), pid) {
                Ok(entry) => entries.push(entry),
                // ENOENT or ESRCH: it exited between readdir and here.
                Err(e) if is_vanished(&e) => {}
                Err(e) => {
                    // E.g. EACCES under hidepid=: the process is invisible to us, which
                    // is what the scan reports for it.
                    tracing::debug!(pid, err = %e, "skipping unreadable process");
                }
            }
        }
        Ok(Self::from_entries(entries))
    }

    /// A table of the given processes, for tests and synthetic tables. Entries marked
    /// as kernel threads are remembered as such and kept out of the process set.
    pub fn from_entries(entries: Vec<ProcEntry>) -> ProcessTable {
        let mut table = ProcessTable::default();
        for entry in entries {
            if entry.kernel_thread {
                table.kernel_threads.insert(entry.pid);
            } else {
                table.procs.insert(entry.pid, entry);
            }
        }
        for entry in table.procs.values() {
            if entry.ppid != entry.pid {
                table
                    .children
                    .entry(entry.ppid)
                    .or_default()
                    .push(entry.pid);
            }
        }
        table
    }

    /// The process `pid`, unless it is unknown or a kernel thread.
    pub fn get(&self, pid: u32) -> Option<&ProcEntry> {
        self.procs.get(&pid)
    }

    /// Whether `pid` was a kernel thread when the table was read.
    pub fn is_kernel_thread(&self, pid: u32) -> bool {
        self.kernel_threads.contains(&pid)
    }

    /// All processes, by PID.
    pub fn iter(&self) -> impl Iterator<Item = &ProcEntry> {
        self.procs.values()
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    /// The direct children of `pid`, sorted.
    pub fn children(&self, pid: u32) -> Vec<u32> {
        let mut kids = self.children.get(&pid).cloned().unwrap_or_default();
        kids.sort_unstable();
        kids
    }

    /// `root` and every process below it, sorted; empty if `root` is unknown.
    pub fn descendants(&self, root: u32) -> Vec<u32> {
        if !self.procs.contains_key(&root) {
            return Vec::new();
        }
        // The visited set guards against a cycle, which a snapshot taken while PIDs
        // are reused could in principle contain.
        let mut seen = BTreeSet::from([root]);
        let mut queue = VecDeque::from([root]);
        while let Some(pid) = queue.pop_front() {
            for &kid in self.children.get(&pid).into_iter().flatten() {
                if seen.insert(kid) {
                    queue.push_back(kid);
                }
            }
        }
        seen.into_iter().collect()
    }

    /// The members of `set` whose parent is not in `set`: the roots of the trees the
    /// set is made of, sorted. PIDs unknown to the table are ignored (they exited, or
    /// started after the scan, and have no known parent).
    pub fn roots_of(&self, set: &[u32]) -> Vec<u32> {
        let members: BTreeSet<u32> = set
            .iter()
            .copied()
            .filter(|pid| self.procs.contains_key(pid))
            .collect();
        members
            .iter()
            .copied()
            .filter(|pid| {
                let ppid = self.procs[pid].ppid;
                ppid == *pid || !members.contains(&ppid)
            })
            .collect()
    }
}

/// Whether an error reading /proc/PID/... means that the process is gone.
fn is_vanished(e: &io::Error) -> bool {
    // Reads of /proc/PID files of an exiting process may also fail with ESRCH.
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(nix::errno::Errno::ESRCH as i32)
}

/// Reads one process from its /proc directory.
fn read_entry(dir: &Path, pid: u32) -> io::Result<ProcEntry> {
    let stat = fs::read_to_string(dir.join("stat"))?;
    let stat = parse_stat(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected /proc/PID/stat format",
        )
    })?;
    let kernel_thread = stat.flags & PF_KTHREAD != 0;
    let mut entry = ProcEntry {
        pid,
        ppid: stat.ppid,
        pgid: stat.pgid,
        sid: stat.sid,
        comm: stat.comm,
        cmdline: Vec::new(),
        state: stat.state,
        rss_bytes: 0,
        cgroup: None,
        uid: 0,
        kernel_thread,
    };
    if kernel_thread {
        // Nothing else is needed of a kernel thread.
        return Ok(entry);
    }
    let status = fs::read_to_string(dir.join("status"))?;
    let status = parse_status(&status);
    entry.uid = status.uid;
    entry.rss_bytes = status.rss_bytes;
    entry.cmdline = parse_cmdline(&fs::read(dir.join("cmdline"))?);
    entry.cgroup = parse_cgroup_file(&fs::read_to_string(dir.join("cgroup"))?);
    Ok(entry)
}

/// The fields of /proc/PID/stat used here.
#[derive(Debug, PartialEq, Eq)]
struct Stat {
    comm: String,
    state: char,
    ppid: u32,
    pgid: u32,
    sid: u32,
    flags: u64,
}

/// Parses /proc/PID/stat. `comm` is in parentheses and may itself contain spaces and
/// parentheses, so the fields after it are found from the *last* ')'.
fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let mut fields = text.get(close + 1..)?.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgid = fields.next()?.parse().ok()?;
    let sid = fields.next()?.parse().ok()?;
    // tty_nr, tpgid, then flags.
    let flags = fields.nth(2)?.parse().ok()?;
    Some(Stat {
        comm,
        state,
        ppid,
        pgid,
        sid,
        flags,
    })
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Status {
    uid: u32,
    rss_bytes: u64,
}

/// The real uid and `VmRSS` of /proc/PID/status. `VmRSS` is absent for zombies.
fn parse_status(text: &str) -> Status {
    let mut status = Status::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Uid:") {
            status.uid = rest
                .split_ascii_whitespace()
                .next()
                .and_then(|u| u.parse().ok())
                .unwrap_or(0);
        } else if let Some(rest) = line.strip_prefix("VmRSS:") {
            // Always in kB ("VmRSS:	    1952 kB").
            status.rss_bytes = rest
                .split_ascii_whitespace()
                .next()
                .and_then(|kb| kb.parse::<u64>().ok())
                .map_or(0, |kb| kb * 1024);
        }
    }
    status
}

/// NUL-separated arguments; the last one ends with a NUL too.
fn parse_cmdline(bytes: &[u8]) -> Vec<String> {
    let bytes = bytes.strip_suffix(b"\0").unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|&b| b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

/// The cgroup v2 path: the `0::PATH` line of /proc/PID/cgroup.
pub(crate) fn parse_cgroup_file(text: &str) -> Option<String> {
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::to_owned)
}

/// An open file of a process, as /proc shows it.
pub struct OpenFile {
    /// `/proc/<pid>/fd/<n>`.
    pub link: PathBuf,
    /// Where the link points: a path, or `socket:[<inode>]`, `pipe:[<inode>]`...
    pub target: String,
}

impl OpenFile {
    /// The `socket:[<inode>]` inode, if this is a socket.
    pub fn socket_inode(&self) -> Option<u64> {
        self.target
            .strip_prefix("socket:[")
            .and_then(|r| r.strip_suffix(']'))
            .and_then(|n| n.parse().ok())
    }

    /// Its `/proc/<pid>/fdinfo/<n>`.
    pub fn fdinfo(&self) -> Option<PathBuf> {
        let fd = self.link.file_name()?;
        Some(self.link.parent()?.parent()?.join("fdinfo").join(fd))
    }
}

/// Every open file of the processes `pids`, read from /proc/<pid>/fd. A process or a
/// descriptor that vanished meanwhile is skipped.
pub fn open_files(pids: &[u32]) -> Vec<OpenFile> {
    let mut found = Vec::new();
    for pid in pids {
        let dir = Path::new("/proc").join(pid.to_string()).join("fd");
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let link = e.path();
            if let Ok(target) = fs::read_link(&link) {
                found.push(OpenFile {
                    target: target.to_string_lossy().into_owned(),
                    link,
                });
            }
        }
    }
    found
}

/// The files a process has open that are terminals: pty slaves (/dev/pts/N), pty
/// masters (/dev/ptmx, /dev/pts/ptmx), virtual consoles and serial lines (/dev/tty*)
/// and /dev/console. A process that vanished has none.
pub fn terminal_fds(pid: u32) -> Vec<String> {
    open_files(&[pid])
        .into_iter()
        .map(|f| f.target)
        .filter(|target| is_terminal_path(target))
        .collect()
}

fn is_terminal_path(path: &str) -> bool {
    path.starts_with("/dev/pts/")
        || path.starts_with("/dev/tty")
        || path == "/dev/ptmx"
        || path == "/dev/console"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pid: u32, ppid: u32) -> ProcEntry {
        ProcEntry {
            pid,
            ppid,
            pgid: pid,
            sid: pid,
            comm: format!("p{pid}"),
            cmdline: vec![format!("/bin/p{pid}")],
            state: 'S',
            rss_bytes: 4096,
            cgroup: Some("/".into()),
            uid: 0,
            kernel_thread: false,
        }
    }

    fn table() -> ProcessTable {
        //   1 ─┬─ 10 ─┬─ 11 ── 13
        //      │      └─ 12
        //      └─ 20
        //   2 (kthreadd) ── 3 (kernel thread)
        let mut kthreadd = entry(2, 0);
        kthreadd.kernel_thread = true;
        let mut kworker = entry(3, 2);
        kworker.kernel_thread = true;
        ProcessTable::from_entries(vec![
            entry(1, 0),
            kthreadd,
            kworker,
            entry(10, 1),
            entry(11, 10),
            entry(12, 10),
            entry(13, 11),
            entry(20, 1),
        ])
    }

    #[test]
    fn descendants_include_root_sorted() {
        let t = table();
        assert_eq!(t.descendants(10), vec![10, 11, 12, 13]);
        assert_eq!(t.descendants(13), vec![13]);
        assert_eq!(t.descendants(1), vec![1, 10, 11, 12, 13, 20]);
        assert!(t.descendants(99).is_empty());
    }

    #[test]
    fn kernel_threads_are_kept_apart() {
        let t = table();
        assert!(t.get(2).is_none() && t.get(3).is_none());
        assert!(t.is_kernel_thread(3));
        assert!(!t.is_kernel_thread(10));
        assert!(t.descendants(2).is_empty());
        assert_eq!(t.len(), 6);
    }

    #[test]
    fn roots_of_sets() {
        let t = table();
        assert_eq!(t.roots_of(&[13, 11, 12, 10]), vec![10]);
        assert_eq!(t.roots_of(&[11, 12, 13]), vec![11, 12]);
        assert_eq!(t.roots_of(&[20, 13]), vec![13, 20]);
        // Unknown PIDs are ignored.
        assert_eq!(t.roots_of(&[11, 13, 999]), vec![11]);
        assert!(t.roots_of(&[]).is_empty());
    }

    #[test]
    fn cycles_do_not_hang() {
        let t = ProcessTable::from_entries(vec![entry(5, 6), entry(6, 5), entry(7, 7)]);
        assert_eq!(t.descendants(5), vec![5, 6]);
        assert!(t.roots_of(&[5, 6]).is_empty());
        assert_eq!(t.roots_of(&[7]), vec![7]);
    }

    #[test]
    fn stat_with_awkward_comm() {
        let s = parse_stat("42 (a) b (c) S 1 42 40 0 -1 4194304 100 0 0 0").unwrap();
        assert_eq!(
            s,
            Stat {
                comm: "a) b (c".into(),
                state: 'S',
                ppid: 1,
                pgid: 42,
                sid: 40,
                flags: 4_194_304,
            }
        );
        let k = parse_stat("2 (kthreadd) S 0 0 0 0 -1 2129984 0 0").unwrap();
        assert_ne!(k.flags & PF_KTHREAD, 0);
        assert!(parse_stat("42 (x").is_none());
        assert!(parse_stat("42 (x) S one 2 3 0 -1 0").is_none());
    }

    #[test]
    fn status_fields() {
        let s = parse_status("Name:\tcat\nUid:\t1000\t0\t0\t0\nVmRSS:\t    1952 kB\n");
        assert_eq!(
            s,
            Status {
                uid: 1000,
                rss_bytes: 1952 * 1024
            }
        );
        assert_eq!(parse_status("Uid:\t5\t5\t5\t5\n").rss_bytes, 0);
    }

    #[test]
    fn cmdline_and_cgroup() {
        assert_eq!(parse_cmdline(b"sleep\x0010\x00"), vec!["sleep", "10"]);
        assert_eq!(parse_cmdline(b"a b\x00"), vec!["a b"]);
        assert!(parse_cmdline(b"").is_empty());
        assert_eq!(
            parse_cgroup_file("1:name=systemd:/x\n0::/system.slice/a.service\n").as_deref(),
            Some("/system.slice/a.service")
        );
        assert_eq!(parse_cgroup_file("4:memory:/x\n"), None);
    }

    #[test]
    fn terminal_paths() {
        for t in [
            "/dev/pts/3",
            "/dev/ptmx",
            "/dev/pts/ptmx",
            "/dev/tty1",
            "/dev/ttyS0",
        ] {
            assert!(is_terminal_path(t), "{t}");
        }
        for t in ["/dev/null", "pipe:[1]", "/tmp/tty", "socket:[5]"] {
            assert!(!is_terminal_path(t), "{t}");
        }
    }

    #[test]
    fn scan_sees_this_process() {
        let t = ProcessTable::scan().unwrap();
        let me = t.get(std::process::id()).expect("own process in the table");
        assert!(!me.cmdline.is_empty());
        assert!(me.rss_bytes > 0);
        assert_eq!(me.uid, nix::unistd::getuid().as_raw());
        // Kernel threads never reach the process set.
        assert!(t.iter().all(|p| !p.kernel_thread));
    }
}
