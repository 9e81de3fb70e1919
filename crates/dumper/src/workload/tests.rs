//! The resolver over a synthetic process table and canned program outputs.

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use super::*;
use crate::proc::ProcEntry;

const OWN_PID: u32 = 1002;

fn p(pid: u32, ppid: u32, sid: u32, cgroup: &str) -> ProcEntry {
    ProcEntry {
        pid,
        ppid,
        pgid: pid,
        sid,
        comm: format!("p{pid}"),
        cmdline: vec![format!("/usr/bin/p{pid}"), "--flag".into()],
        state: 'S',
        rss_bytes: 1 << 20,
        cgroup: Some(cgroup.into()),
        uid: 0,
        kernel_thread: false,
    }
}

const COUNTER: &str = "/system.slice/counter.service";
const TWO: &str = "/system.slice/two.service";
const SSHD: &str = "/system.slice/ssh.service";
const SESSION: &str = "/user.slice/user-0.slice/session-3.scope";
const PODMAN: &str = "/machine.slice/libpod-abc.scope";
const MACHINE: &str = "/machine.slice/machine-deb.scope";

fn table() -> ProcessTable {
    let mut kthreadd = p(2, 0, 0, "/");
    kthreadd.kernel_thread = true;
    let mut kworker = p(3, 2, 0, "/");
    kworker.kernel_thread = true;
    let mut zombie = p(600, 601, 601, COUNTER);
    zombie.state = 'Z';
    zombie.cmdline.clear();
    zombie.rss_bytes = 0;
    ProcessTable::from_entries(vec![
        p(1, 0, 1, "/init.scope"),
        kthreadd,
        kworker,
        // counter.service: one tree.
        p(100, 1, 100, COUNTER),
        p(101, 100, 100, COUNTER),
        // two.service: two trees.
        p(200, 1, 200, TWO),
        p(201, 1, 201, TWO),
        // ssh.service, with a login session below it in another cgroup.
        p(300, 1, 300, SSHD),
        p(301, 300, 301, SESSION),
        p(302, 301, 302, SESSION),
        // A tmux server with a shell and an editor.
        p(400, 1, 400, SESSION),
        p(401, 400, 401, SESSION),
        p(402, 401, 401, SESSION),
        // Started from init without a session of its own.
        p(500, 1, 1, "/system.slice/rc-local.service"),
        zombie,
        p(601, 1, 601, "/"),
        // screen.
        p(700, 1, 700, SESSION),
        p(701, 700, 701, SESSION),
        // podman: conmon and the container.
        p(800, 1, 800, "/machine.slice/libpod-conmon-abc.scope"),
        p(801, 800, 801, PODMAN),
        p(802, 801, 801, PODMAN),
        // nspawn: the container's init and a child.
        p(900, 1, 900, MACHINE),
        p(901, 900, 901, MACHINE),
        // The resolver itself, under 1001.
        p(1001, 1, 1001, "/"),
        p(OWN_PID, 1001, 1001, "/"),
    ])
}

#[derive(Default)]
struct FakeHost {
    commands: BTreeMap<String, CommandOutput>,
    cgroups: BTreeMap<String, Vec<u32>>,
    ttys: BTreeSet<u32>,
    /// Processes born after the table was read: child -> parent.
    born_later: BTreeMap<u32, u32>,
    /// (pid, namespace type) -> namespace; every other process is in `<type>:[1]`.
    namespaces: BTreeMap<(u32, String), String>,
}

impl FakeHost {
    fn new() -> FakeHost {
        let mut h = FakeHost::default();
        h.cgroups.insert(COUNTER.into(), vec![100, 101, 600]);
        h.cgroups.insert(TWO.into(), vec![200, 201]);
        h.cgroups.insert(SSHD.into(), vec![300]);
        h.cgroups
            .insert(SESSION.into(), vec![301, 302, 400, 401, 402, 700, 701]);
        h.cgroups.insert(PODMAN.into(), vec![801, 802]);
        h.cgroups.insert(MACHINE.into(), vec![900, 901]);
        h.cgroups.insert("/".into(), (1..=1002).collect());
        h
    }

    fn ok(mut self, command: &str, stdout: &str) -> Self {
        self.commands.insert(
            command.into(),
            CommandOutput {
                command: command.into(),
                success: true,
                status: "exit status: 0".into(),
                stdout: stdout.into(),
                stderr: String::new(),
            },
        );
        self
    }

    fn fail(mut self, command: &str, stdout: &str, stderr: &str) -> Self {
        self.commands.insert(
            command.into(),
            CommandOutput {
                command: command.into(),
                success: false,
                status: "exit status: 1".into(),
                stdout: stdout.into(),
                stderr: stderr.into(),
            },
        );
        self
    }

    fn unit(self, unit: &str, active: &str, cgroup: &str, main_pid: u32) -> Self {
        let load = if active == "not-found" {
            "not-found"
        } else {
            "loaded"
        };
        let active = if active == "not-found" {
            "inactive"
        } else {
            active
        };
        self.ok(
            &format!(
                "systemctl show --property=ControlGroup,MainPID,ActiveState,LoadState -- {unit}"
            ),
            &format!(
                "MainPID={main_pid}\nControlGroup={cgroup}\nActiveState={active}\nLoadState={load}\n"
            ),
        )
    }
}

impl Host for FakeHost {
    fn command(&self, program: &str, args: &[&str]) -> Result<CommandOutput> {
        let line = std::iter::once(program)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        self.commands
            .get(&line)
            .cloned()
            .ok_or_else(|| Error::Spawn {
                command: line,
                source: io::Error::from(io::ErrorKind::NotFound),
            })
    }

    fn cgroup_procs(&self, cgroup: &str) -> Result<Vec<u32>> {
        self.cgroups
            .get(cgroup)
            .cloned()
            .ok_or_else(|| Error::CgroupPath {
                cgroup: cgroup.into(),
                reason: "does not exist".into(),
            })
    }

    fn terminal_fds(&self, pid: u32) -> Vec<String> {
        if self.ttys.contains(&pid) {
            vec!["/dev/pts/0".into()]
        } else {
            Vec::new()
        }
    }

    fn own_pid(&self) -> u32 {
        OWN_PID
    }

    fn namespace(&self, pid: u32, ns: &str) -> Option<String> {
        Some(
            self.namespaces
                .get(&(pid, ns.to_owned()))
                .cloned()
                .unwrap_or_else(|| format!("{ns}:[1]")),
        )
    }

    fn parent_of(&self, pid: u32) -> Option<u32> {
        self.born_later
            .get(&pid)
            .copied()
            .or_else(|| table().get(pid).map(|p| p.ppid))
    }
}

fn name() -> WorkloadName {
    WorkloadName::new("w1").unwrap()
}

fn resolve_on(host: &FakeHost, target: Target) -> Result<Resolved> {
    resolve_with(&name(), &target, &table(), host)
}

/// The whole error chain, as `{:#}` of anyhow prints it.
fn chain(err: &Error) -> String {
    let mut msg = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

fn expect_err(host: &FakeHost, target: Target, needles: &[&str]) -> Error {
    let err = resolve_on(host, target).unwrap_err();
    let msg = chain(&err);
    assert!(msg.starts_with("workload w1: "), "{msg}");
    for n in needles {
        assert!(msg.contains(n), "{n:?} not in {msg:?}");
    }
    err
}

#[test]
fn process_tree() {
    let host = FakeHost::new();
    let r = resolve_on(&host, Target::Process { pid: 100 }).unwrap();
    assert_eq!(
        r,
        Resolved {
            name: name(),
            kind: WorkloadKind::Process,
            target: Target::Process { pid: 100 },
            root_pid: 100,
            pids: vec![100, 101],
            unit: None,
            cgroup: Some(COUNTER.into()),
            command_line: vec!["/usr/bin/p100".into(), "--flag".into()],
            rss_bytes: 2 << 20,
            // The cgroup also lists the zombie 600.
            owns_cgroup: false,
            session_leader: true,
            uses_tty: false,
            root_dir: None,
        }
    );
    let r = resolve_on(&host, Target::Process { pid: 801 }).unwrap();
    assert!(r.owns_cgroup);
    let r = resolve_on(&host, Target::Process { pid: 101 }).unwrap();
    assert_eq!(r.pids, vec![101]);
    assert!(!r.session_leader && !r.owns_cgroup);
}

#[test]
fn process_refusals() {
    let host = FakeHost::new();
    let e = expect_err(
        &host,
        Target::Process { pid: 9999 },
        &["process 9999", "ps -p"],
    );
    assert!(matches!(e, Error::WorkloadNotFound { .. }));
    expect_err(
        &host,
        Target::Process { pid: 1 },
        &["PID 1 is the init process"],
    );
    expect_err(
        &host,
        Target::Process { pid: 3 },
        &["PID 3 is a kernel thread"],
    );
    let e = expect_err(
        &host,
        Target::Process { pid: 600 },
        &["zombie", "parent 601"],
    );
    assert!(matches!(e, Error::WorkloadNotRunning { .. }));
    expect_err(
        &host,
        Target::Process { pid: 500 },
        &["500 (p500)", "session of PID 1", "setsid", "systemd-run"],
    );
    expect_err(
        &host,
        Target::Process { pid: 1001 },
        &["contains upgraded itself (PID 1002)"],
    );
}

#[test]
fn service_with_one_tree() {
    let mut host = FakeHost::new().unit("counter.service", "active", COUNTER, 100);
    host.cgroups.insert(COUNTER.into(), vec![100, 101]);
    host.ttys.insert(101);
    let r = resolve_on(
        &host,
        Target::Service {
            unit: "counter.service".into(),
        },
    )
    .unwrap();
    assert_eq!(r.kind, WorkloadKind::Service);
    assert_eq!(r.root_pid, 100);
    assert_eq!(r.pids, vec![100, 101]);
    assert_eq!(r.unit.as_deref(), Some("counter.service"));
    assert_eq!(r.cgroup.as_deref(), Some(COUNTER));
    assert!(r.owns_cgroup && r.session_leader && r.uses_tty);
}

#[test]
fn service_refusals() {
    let host = FakeHost::new()
        .unit("two.service", "active", TWO, 200)
        .unit("gone.service", "not-found", "", 0)
        .unit("idle.service", "inactive", "", 0)
        .unit("ssh.service", "active", SSHD, 300)
        .ok(
            "systemctl show --property=ControlGroup,MainPID,ActiveState,LoadState -- odd.service",
            "garbage\n",
        );
    let svc = |u: &str| Target::Service { unit: u.into() };
    let e = expect_err(
        &host,
        svc("two.service"),
        &[
            "unit two.service has 2 separate process trees (PIDs 200 (p200), 201 (p201))",
            "one tree per workload",
        ],
    );
    assert!(matches!(e, Error::WorkloadSpansTrees { trees: 2, .. }));
    expect_err(
        &host,
        svc("gone.service"),
        &["unit gone.service was not found", "systemctl list-units"],
    );
    expect_err(
        &host,
        svc("idle.service"),
        &[
            "unit idle.service is inactive",
            "systemctl start idle.service",
        ],
    );
    expect_err(
        &host,
        svc("ssh.service"),
        &["reaches outside its cgroup", "301 (p301), 302 (p302)"],
    );
    let e = expect_err(
        &host,
        svc("odd.service"),
        &[
            "looking up service odd.service",
            "\"garbage\"",
            "no LoadState= line",
        ],
    );
    assert!(matches!(e, Error::WorkloadLookup { .. }));
    // systemctl missing (or not a systemd system): the spawn error, under the workload.
    expect_err(
        &host,
        svc("other.service"),
        &[
            "looking up service other.service",
            "could not run `systemctl",
        ],
    );
}

#[test]
fn scope_with_a_zombie_root_is_refused() {
    let mut host = FakeHost::new().unit("z.scope", "active", "/z.scope", 0);
    host.cgroups.insert("/z.scope".into(), vec![600]);
    expect_err(
        &host,
        Target::Scope {
            unit: "z.scope".into(),
        },
        &["zombie"],
    );
    let mut host = FakeHost::new().unit("empty.scope", "active", "/e.scope", 0);
    host.cgroups.insert("/e.scope".into(), vec![]);
    expect_err(
        &host,
        Target::Scope {
            unit: "empty.scope".into(),
        },
        &["has no processes"],
    );
}

#[test]
fn session_by_its_scope() {
    let mut host = FakeHost::new()
        .ok(
            "loginctl show-session --property=Leader --property=Scope --property=State -- 3",
            "Leader=301\nScope=session-3.scope\nState=active\n",
        )
        .unit("session-3.scope", "active", "/s3", 0)
        .fail(
            "loginctl show-session --property=Leader --property=Scope --property=State -- 9",
            "",
            "Failed to get session path: Session '9' not known\n",
        );
    host.cgroups.insert("/s3".into(), vec![301, 302]);
    let r = resolve_on(&host, Target::Session { id: "3".into() }).unwrap();
    assert_eq!(r.kind, WorkloadKind::Session);
    assert_eq!(r.unit.as_deref(), Some("session-3.scope"));
    assert_eq!((r.root_pid, r.pids.clone()), (301, vec![301, 302]));
    assert!(r.owns_cgroup);
    expect_err(
        &host,
        Target::Session { id: "9".into() },
        &["login session 9 was not found", "loginctl list-sessions"],
    );
}

const TMUX_PID: &str = "tmux -L default display-message -p #{pid}";
const TMUX_CLIENTS: &str = "tmux -L default list-clients -F #{client_pid} #{client_session}";

#[test]
fn tmux_server() {
    let mut host = FakeHost::new().ok(TMUX_PID, "400\n").ok(TMUX_CLIENTS, "");
    host.ttys.insert(401);
    let r = resolve_on(
        &host,
        Target::Tmux {
            socket: "default".into(),
        },
    )
    .unwrap();
    assert_eq!(r.kind, WorkloadKind::Tmux);
    assert_eq!(r.pids, vec![400, 401, 402]);
    assert!(r.uses_tty && r.session_leader && !r.owns_cgroup && r.unit.is_none());
    assert_eq!(r.cgroup.as_deref(), Some(SESSION));

    // A socket path goes to -S.
    let host = FakeHost::new()
        .ok(
            "tmux -S /tmp/tmux-1000/default display-message -p #{pid}",
            "400\n",
        )
        .ok(
            "tmux -S /tmp/tmux-1000/default list-clients -F #{client_pid} #{client_session}",
            "",
        );
    let socket = "/tmp/tmux-1000/default".to_owned();
    assert_eq!(
        resolve_on(&host, Target::Tmux { socket }).unwrap().root_pid,
        400
    );
}

#[test]
fn tmux_refusals() {
    let tmux = || Target::Tmux {
        socket: "default".into(),
    };
    let host = FakeHost::new()
        .ok(TMUX_PID, "400\n")
        .ok(TMUX_CLIENTS, "5000 main\n5001 my work\n5002 main\n");
    let e = expect_err(
        &host,
        tmux(),
        &[
            "has attached clients (PIDs 5000, 5001, 5002)",
            "detach them first",
            "tmux -L default detach-client -s main; tmux -L default detach-client -s 'my work'",
        ],
    );
    assert!(matches!(e, Error::WorkloadAttached { .. }));
    let host = FakeHost::new().fail(TMUX_PID, "", "no server running on /tmp/tmux-0/default\n");
    expect_err(
        &host,
        tmux(),
        &[
            "tmux server of socket default was not found",
            "tmux -L default ls",
        ],
    );
    let host = FakeHost::new().fail(
        TMUX_PID,
        "",
        "error connecting to /tmp/tmux-0/default (No such file or directory)\n",
    );
    expect_err(&host, tmux(), &["was not found"]);
    let host = FakeHost::new().fail(TMUX_PID, "", "something else\n");
    expect_err(
        &host,
        tmux(),
        &["failed (exit status: 1)", "something else"],
    );
    // A server PID that is gone by the time of the scan.
    let host = FakeHost::new().ok(TMUX_PID, "4444\n").ok(TMUX_CLIENTS, "");
    expect_err(
        &host,
        tmux(),
        &["process 4444 of the tmux server", "exited"],
    );
}

const SCREEN_LS: &str = "There are screens on:\n\
    \t700.work\t(11/24/2025 10:00:00 AM)\t(Detached)\n\
    \t701.busy\t(Attached)\n\
    \t702.dup\t(Detached)\n\
    \t703.dup\t(Detached)\n\
    \t704.old\t(Dead ???)\n\
    5 Sockets in /run/screen/S-root.\n";

#[test]
fn screen_sessions() {
    // screen -ls exits 1 even with sessions.
    let host = FakeHost::new().fail("screen -ls", SCREEN_LS, "");
    let scr = |s: &str| Target::Screen { session: s.into() };
    for selector in ["work", "700.work", "700"] {
        let r = resolve_on(&host, scr(selector)).unwrap();
        assert_eq!((r.root_pid, r.pids), (700, vec![700, 701]), "{selector}");
    }
    expect_err(
        &host,
        scr("busy"),
        &[
            "screen session 701.busy has attached clients",
            "screen -d 701.busy",
        ],
    );
    expect_err(
        &host,
        scr("dup"),
        &[
            "several screen sessions match dup (702.dup, 703.dup)",
            "PID.NAME",
        ],
    );
    expect_err(&host, scr("old"), &["704.old is dead", "screen -wipe"]);
    expect_err(
        &host,
        scr("nope"),
        &["screen session nope was not found", "700.work, 701.busy"],
    );
    let host = FakeHost::new().fail(
        "screen -ls",
        "No Sockets found in /run/screen/S-root.\n",
        "",
    );
    expect_err(&host, scr("work"), &["root has no screen sessions"]);
    let host = FakeHost::new().fail("screen -ls", "", "Cannot make directory '/run/screen'\n");
    expect_err(
        &host,
        scr("work"),
        &["screen -ls` failed", "Cannot make directory"],
    );
}

const PODMAN_INSPECT: &str =
    "podman container inspect --format {{.State.Pid}} {{.State.Running}} -- web";

#[test]
fn podman_container() {
    let host = FakeHost::new().ok(PODMAN_INSPECT, "801 true\n");
    let web = || Target::Podman {
        container: "web".into(),
    };
    let r = resolve_on(&host, web()).unwrap();
    assert_eq!((r.root_pid, r.pids.clone()), (801, vec![801, 802]));
    assert_eq!(r.kind, WorkloadKind::Podman);
    assert!(r.unit.is_none());
    assert_eq!(r.cgroup.as_deref(), Some(PODMAN));
    assert!(r.owns_cgroup);

    let host = FakeHost::new().ok(PODMAN_INSPECT, "0 false\n");
    expect_err(
        &host,
        web(),
        &["podman container web is stopped", "podman start web"],
    );
    let host = FakeHost::new().fail(PODMAN_INSPECT, "", "Error: no such container web\n");
    expect_err(
        &host,
        web(),
        &["podman container web was not found", "podman ps -a"],
    );
}

#[test]
fn nspawn_machine() {
    const SHOW: &str = "machinectl show --property=Leader --property=Unit \
                        --property=RootDirectory --property=Class --";
    let host = FakeHost::new()
        .ok(
            &format!("{SHOW} deb"),
            "Leader=900\nUnit=machine-deb.scope\nRootDirectory=/var/lib/machines/deb\nClass=container\n",
        )
        .ok(
            &format!("{SHOW} vm"),
            "Leader=900\nUnit=machine-vm.scope\nRootDirectory=\nClass=vm\n",
        )
        .ok(
            &format!("{SHOW} img"),
            "Leader=900\nUnit=machine-img.scope\nRootDirectory=\nClass=container\n",
        )
        .fail(
            &format!("{SHOW} nope"),
            "",
            "Could not get path to machine: No machine 'nope' known\n",
        );
    let nspawn = |m: &str| Target::Nspawn { machine: m.into() };
    let r = resolve_on(&host, nspawn("deb")).unwrap();
    assert_eq!(r.kind, WorkloadKind::Nspawn);
    // The container's tree and cgroup; the unit is the machine's, for systemd.
    assert_eq!(r.unit.as_deref(), Some("machine-deb.scope"));
    assert_eq!((r.root_pid, r.pids.clone()), (900, vec![900, 901]));
    assert_eq!(r.cgroup.as_deref(), Some(MACHINE));
    assert_eq!(r.root_dir.as_deref(), Some("/var/lib/machines/deb"));
    expect_err(
        &host,
        nspawn("nope"),
        &["machine nope was not found", "machinectl list"],
    );
    expect_err(&host, nspawn("vm"), &["class \"vm\"", "hypervisor"]);
    // Namespaces CRIU cannot dump with nspawn's mounts are refused up front.
    for (ns, says) in [
        ("net", ["network namespace of its own", "host's network"]),
        ("user", ["user namespace of its own", "--private-users=no"]),
    ] {
        let mut host = FakeHost::new().ok(
            &format!("{SHOW} deb"),
            "Leader=900\nUnit=machine-deb.scope\nRootDirectory=/var/lib/machines/deb\nClass=container\n",
        );
        host.namespaces
            .insert((900, ns.to_owned()), format!("{ns}:[2]"));
        expect_err(&host, nspawn("deb"), &says);
    }
    expect_err(
        &host,
        nspawn("img"),
        &["no usable root directory", "--directory="],
    );
}

#[test]
fn targets_from_selectors() {
    use WorkloadKind as K;
    let ok = |k, s: &str| parse_target(k, s).unwrap();
    assert_eq!(ok(K::Process, "1234"), Target::Process { pid: 1234 });
    assert_eq!(
        ok(K::Service, "foo@bar.service"),
        Target::Service {
            unit: "foo@bar.service".into()
        }
    );
    assert_eq!(
        ok(K::Scope, "session-3.scope"),
        Target::Scope {
            unit: "session-3.scope".into()
        }
    );
    assert_eq!(ok(K::Session, "c1"), Target::Session { id: "c1".into() });
    assert_eq!(
        ok(K::Tmux, "default"),
        Target::Tmux {
            socket: "default".into()
        }
    );
    assert_eq!(
        ok(K::Tmux, "/tmp/tmux-1000/default"),
        Target::Tmux {
            socket: "/tmp/tmux-1000/default".into()
        }
    );
    assert_eq!(
        ok(K::Screen, "1234.work"),
        Target::Screen {
            session: "1234.work".into()
        }
    );
    assert_eq!(
        ok(K::Podman, "web-1"),
        Target::Podman {
            container: "web-1".into()
        }
    );
    assert_eq!(
        ok(K::Nspawn, "deb"),
        Target::Nspawn {
            machine: "deb".into()
        }
    );
    for (k, s) in [
        (K::Process, "0"),
        (K::Process, "abc"),
        (K::Process, "99999999"),
        (K::Service, "foo"),
        (K::Service, "foo.scope"),
        (K::Service, ".service"),
        (K::Service, "-x.service"),
        (K::Service, "a b.service"),
        (K::Scope, "foo.service"),
        (K::Session, "3 4"),
        (K::Tmux, "a/b"),
        (K::Tmux, "/tmp/../x"),
        (K::Tmux, ""),
        (K::Screen, "a b"),
        (K::Podman, "-rm"),
        (K::Podman, "_x"),
        (K::Nspawn, "a/b"),
        (K::Nspawn, "a\nb"),
    ] {
        let err = parse_target(k, s).unwrap_err();
        assert!(
            matches!(err, Error::InvalidTarget { .. }),
            "{k} {s:?}: {err}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("{k} workload selector")),
            "{err}"
        );
    }
    // Round trip through selector().
    for t in [
        Target::Process { pid: 7 },
        Target::Tmux { socket: "x".into() },
    ] {
        assert_eq!(parse_target(t.kind(), &t.selector()).unwrap(), t);
    }
}

#[test]
fn quoting_for_hints() {
    assert_eq!(shell_quote("main"), "main");
    assert_eq!(shell_quote("my work"), "'my work'");
    assert_eq!(shell_quote("it's"), r"'it'\''s'");
    assert_eq!(shell_quote(""), "''");
}

#[test]
fn a_child_born_between_the_two_reads_still_owns_the_cgroup() {
    // 602 was forked by 101 after the table was read; the cgroup lists it.
    let mut host = FakeHost::new();
    host.cgroups.insert(COUNTER.into(), vec![100, 101, 602]);
    host.born_later.insert(602, 101);
    let r = resolve_on(&host, Target::Process { pid: 100 }).unwrap();
    assert!(r.owns_cgroup, "{r:?}");
    // A stranger in the cgroup (its parent is outside the tree) means sharing.
    host.born_later.insert(602, 1);
    let r = resolve_on(&host, Target::Process { pid: 100 }).unwrap();
    assert!(!r.owns_cgroup);
}
