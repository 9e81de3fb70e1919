//! Workload resolution and the cgroup freezer against real processes of this machine.
//!
//! Children are spawned with std::process::Command (the library runs programs only
//! through `dumper::cmd`; a test needs the child handles). Tests that need root and a
//! writable cgroup2 mount print a note and pass when they cannot run.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use dumper::freezer::{Cgroup2Mount, Freezer};
use dumper::manifest::{WorkloadKind, WorkloadName};
use dumper::proc::ProcessTable;
use dumper::workload::{parse_target, resolve, Target};
use dumper::Error;

/// A child that is killed with its descendants and reaped when the test ends, however
/// it ends.
struct Reaped(Child);

impl Reaped {
    fn spawn(program: &str, args: &[&str]) -> Reaped {
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {program}: {e}"));
        Reaped(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        // The grandchildren first: once the child is gone they would be re-parented
        // and out of reach of `descendants`.
        if let Ok(table) = ProcessTable::scan() {
            for pid in table.descendants(self.pid()).into_iter().rev() {
                if pid != self.pid() {
                    let pid = nix::unistd::Pid::from_raw(pid as i32);
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                }
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `cond` for up to 10 s (the machine may be busy).
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `pid` runs `comm` (after the exec) and has `n` processes in its tree,
/// its descendants all running `sleep`.
fn wait_for_tree(pid: u32, comm: &str, n: usize) -> ProcessTable {
    let mut table = ProcessTable::scan().unwrap();
    wait_for(&format!("{pid} to run {comm} with {n} processes"), || {
        table = ProcessTable::scan().unwrap();
        let tree = table.descendants(pid);
        table.get(pid).is_some_and(|p| p.comm == comm)
            && tree.len() == n
            && tree
                .iter()
                .filter(|&&p| p != pid)
                .all(|&p| table.get(p).is_some_and(|e| e.comm == "sleep"))
    });
    table
}

fn wname(s: &str) -> WorkloadName {
    WorkloadName::new(s).unwrap()
}

#[test]
fn a_process_tree_by_pid() {
    // `setsid` (not a process-group leader here) execs in place: the child leads a
    // session of its own, as a dumpable workload should.
    let child = Reaped::spawn("setsid", &["sh", "-c", "sleep 60 & sleep 61 & wait"]);
    let table = wait_for_tree(child.pid(), "sh", 3);
    let r = resolve(&wname("tree"), &Target::Process { pid: child.pid() }).unwrap();
    assert_eq!(r.kind, WorkloadKind::Process);
    assert_eq!(r.root_pid, child.pid());
    assert_eq!(r.pids, table.descendants(child.pid()));
    assert_eq!(r.pids.len(), 3);
    assert_eq!(r.command_line, ["sh", "-c", "sleep 60 & sleep 61 & wait"]);
    assert!(r.session_leader);
    assert!(!r.uses_tty, "stdio is /dev/null");
    assert!(r.rss_bytes > 0);
    assert!(r.unit.is_none());
    assert_eq!(r.cgroup, table.get(child.pid()).unwrap().cgroup);
    let sleeps = r.pids.iter().filter(|&&p| p != child.pid());
    for &pid in sleeps {
        assert_eq!(table.get(pid).unwrap().comm, "sleep");
        assert_eq!(table.get(pid).unwrap().ppid, child.pid());
    }
}

#[test]
fn a_child_inside_a_session_is_not_a_session_leader() {
    // The session is made here: the test binary itself may run in PID 1's session
    // (CI does), which resolve refuses for a different reason.
    let leader = Reaped::spawn("setsid", &["sh", "-c", "sleep 60 & wait"]);
    let table = wait_for_tree(leader.pid(), "sh", 2);
    let sleep = *table
        .descendants(leader.pid())
        .iter()
        .find(|&&p| p != leader.pid())
        .unwrap();
    let r = resolve(&wname("plain"), &Target::Process { pid: sleep }).unwrap();
    assert_eq!(r.pids, vec![sleep]);
    assert!(!r.session_leader);
}

#[test]
fn missing_zombie_and_own_processes_are_refused() {
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    let err = resolve(&wname("gone"), &Target::Process { pid: gone_pid }).unwrap_err();
    assert!(matches!(err, Error::WorkloadNotFound { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("process {gone_pid}")),
        "{err}"
    );

    // Exited, not yet waited for: a zombie until `Reaped` reaps it.
    let zombie = Reaped::spawn("true", &[]);
    wait_for("a zombie", || {
        ProcessTable::scan()
            .unwrap()
            .get(zombie.pid())
            .is_some_and(|p| p.is_zombie())
    });
    let err = resolve(&wname("z"), &Target::Process { pid: zombie.pid() }).unwrap_err();
    assert!(err.to_string().contains("zombie"), "{err}");

    let me = std::process::id();
    let err = resolve(&wname("me"), &Target::Process { pid: me }).unwrap_err();
    let msg = err.to_string();
    // This test binary is either in PID 1's session (then that is the refusal) or
    // not, and then the tree holds the resolver itself.
    assert!(
        msg.contains("upgraded itself") || msg.contains("session of PID 1"),
        "{msg}"
    );

    let err = resolve(&wname("init"), &Target::Process { pid: 1 }).unwrap_err();
    assert!(
        err.to_string().contains("PID 1 is the init process"),
        "{err}"
    );
    // PID 2 is kthreadd when the test runs in the initial PID namespace.
    let table = ProcessTable::scan().unwrap();
    if table.is_kernel_thread(2) {
        let err = resolve(&wname("k"), &Target::Process { pid: 2 }).unwrap_err();
        assert!(err.to_string().contains("kernel thread"), "{err}");
    }
}

/// Counter for unique names among tests running in parallel.
static SEQ: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

#[test]
fn a_detached_tmux_server() {
    if dumper::cmd::run("tmux", ["-V"]).is_err() {
        eprintln!("note: tmux is not installed; skipping the tmux test");
        return;
    }
    // A socket path (tmux -S) in a temporary directory, so that nothing is left in
    // /tmp/tmux-UID.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock").to_str().unwrap().to_owned();
    struct KillServer(String);
    impl Drop for KillServer {
        fn drop(&mut self) {
            let _ = dumper::cmd::run("tmux", ["-S", &self.0, "kill-server"]);
        }
    }
    let target = parse_target(WorkloadKind::Tmux, &socket).unwrap();
    let err = resolve(&wname("t"), &target).unwrap_err();
    assert!(matches!(err, Error::WorkloadNotFound { .. }), "{err}");

    dumper::cmd::run(
        "tmux",
        [
            "-S",
            &socket,
            "new-session",
            "-d",
            "-s",
            "main",
            "sleep 300",
        ],
    )
    .unwrap();
    let _kill = KillServer(socket.clone());
    let r = resolve(&wname("t"), &target).unwrap();
    assert_eq!(r.kind, WorkloadKind::Tmux);
    let table = ProcessTable::scan().unwrap();
    let server = table.get(r.root_pid).unwrap();
    assert!(server.comm.starts_with("tmux"), "{server:?}");
    assert!(r.pids.len() >= 2, "server and pane: {:?}", r.pids);
    assert!(r
        .pids
        .iter()
        .any(|&p| table.get(p).is_some_and(|e| e.comm == "sleep")));
    // The server holds the pty master, the pane its slave.
    assert!(r.uses_tty);
    // tmux daemonises with setsid().
    assert!(r.session_leader);
}

/// A fresh cgroup below the cgroup2 mount, removed when the test ends.
struct TestCgroup {
    rel: String,
    dir: PathBuf,
}

impl TestCgroup {
    /// None (with a note) when this host does not let us create one.
    fn create() -> Option<(Cgroup2Mount, TestCgroup)> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("note: not root; skipping the cgroup freezer test");
            return None;
        }
        let mount = match Cgroup2Mount::discover() {
            Ok(m) => m,
            Err(e) => {
                eprintln!("note: {e}; skipping the cgroup freezer test");
                return None;
            }
        };
        // Next to our own cgroup, so that it lies inside the part of the hierarchy
        // that this process may use.
        let own = fs::read_to_string("/proc/self/cgroup").unwrap();
        let own = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap_or("/")
            .trim_end_matches('/')
            .to_owned();
        let rel = format!("{own}/{}", unique("upgraded-test"));
        let dir = mount.dir_of(&rel).unwrap();
        if let Err(e) = fs::create_dir(&dir) {
            eprintln!(
                "note: cannot create {} ({e}); skipping the cgroup freezer test",
                dir.display()
            );
            return None;
        }
        Some((mount, TestCgroup { rel, dir }))
    }

    fn enter(&self, pid: u32) {
        fs::write(self.dir.join("cgroup.procs"), pid.to_string()).unwrap();
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Kill whatever is left (cgroup.kill, Linux 5.14+), thaw in case an assertion
        // failed while frozen, then wait for the processes to leave (rmdir fails
        // while the cgroup is populated).
        let _ = fs::write(self.dir.join("cgroup.kill"), "1");
        let _ = fs::write(self.dir.join("cgroup.freeze"), "0");
        let deadline = Instant::now() + Duration::from_secs(10);
        while fs::read_to_string(self.dir.join("cgroup.events"))
            .is_ok_and(|e| e.contains("populated 1"))
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(10));
        }
        if let Err(e) = fs::remove_dir(&self.dir) {
            eprintln!("could not remove {}: {e}", self.dir.display());
        }
    }
}

/// User CPU time of `pid` in clock ticks.
fn utime(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 1..];
    // Fields after comm: state(0) ... utime is field 14 overall, index 11 here.
    after
        .split_ascii_whitespace()
        .nth(11)
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn freezing_a_real_cgroup() {
    let Some((mount, cg)) = TestCgroup::create() else {
        return;
    };
    // Declared after the cgroup so that it is killed before the cgroup is removed.
    let busy = Reaped::spawn("sh", &["-c", "while :; do :; done"]);
    cg.enter(busy.pid());
    let freezer = Freezer::with_mount(mount.clone());
    assert!(!freezer.is_frozen(&cg.rel).unwrap());

    let frozen = freezer.freeze(&cg.rel, Duration::from_secs(5)).unwrap();
    assert_eq!(frozen.cgroup(), cg.rel);
    assert!(freezer.is_frozen(&cg.rel).unwrap());
    let events = fs::read_to_string(cg.dir.join("cgroup.events")).unwrap();
    assert!(events.contains("frozen 1"), "{events}");
    // A busy loop gets no CPU time while frozen.
    let before = utime(busy.pid());
    thread::sleep(Duration::from_millis(300));
    assert_eq!(utime(busy.pid()), before, "the busy loop ran while frozen");

    frozen.thaw().unwrap();
    assert!(!freezer.is_frozen(&cg.rel).unwrap());
    let before = utime(busy.pid());
    wait_for("the busy loop to run again", || utime(busy.pid()) > before);

    // Dropping the guard thaws too.
    {
        let _guard = freezer.freeze(&cg.rel, Duration::from_secs(5)).unwrap();
        assert!(freezer.is_frozen(&cg.rel).unwrap());
    }
    assert!(!freezer.is_frozen(&cg.rel).unwrap());

    // A failure part-way through freeze_all leaves nothing frozen.
    let missing = format!("{}-missing", cg.rel);
    let err = freezer
        .freeze_all(&[cg.rel.as_str(), missing.as_str()], Duration::from_secs(5))
        .unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    assert!(!freezer.is_frozen(&cg.rel).unwrap());

    let all = freezer
        .freeze_all(&[cg.rel.as_str()], Duration::from_secs(5))
        .unwrap();
    assert!(freezer.is_frozen(&cg.rel).unwrap());
    drop(all);
    assert!(!freezer.is_frozen(&cg.rel).unwrap());
    drop(busy);
}

#[test]
fn a_tree_alone_in_its_cgroup_owns_it() {
    let Some((mount, cg)) = TestCgroup::create() else {
        return;
    };
    let child = Reaped::spawn("setsid", &["sh", "-c", "sleep 60 & wait"]);
    let table = wait_for_tree(child.pid(), "sh", 2);
    for pid in table.descendants(child.pid()) {
        cg.enter(pid);
    }
    assert_eq!(
        mount.procs_recursive(&cg.rel).unwrap(),
        table.descendants(child.pid())
    );
    let r = resolve(&wname("owned"), &Target::Process { pid: child.pid() }).unwrap();
    assert_eq!(r.cgroup.as_deref(), Some(cg.rel.as_str()));
    assert!(r.owns_cgroup, "{r:?}");
    drop(child);
}
