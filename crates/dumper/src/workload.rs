//! Finding workloads: from what the configuration names (a PID, a unit, a tmux
//! server...) to the process tree CRIU will dump, with what the checkpoint needs to
//! know about it (its cgroup, whether freezing that cgroup freezes exactly the tree,
//! whether it uses a terminal).
//!
//! CRIU dumps one process tree from its root, so every workload resolves to exactly
//! one tree; anything that does not (a unit with several trees, a tmux server with a
//! client attached from outside) is refused here with what to do about it, rather
//! than failing half-way through a dump.
//!
//! The outside world (other programs, the cgroup file system, open file descriptors)
//! is reached through [`Host`], so that [`resolve_with`] can be tested with a
//! synthetic process table and canned program outputs.

use std::collections::BTreeSet;
use std::fmt;

use crate::cmd;
use crate::error::{Error, Result};
use crate::freezer::{self, Cgroup2Mount};
use crate::manifest::{shown, WorkloadKind, WorkloadName};
use crate::proc::{self, ProcessTable};

mod parse;

/// PID_MAX_LIMIT on 64-bit Linux.
const PID_MAX: u32 = 4 * 1024 * 1024;

/// What a workload is, as the configuration names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// The process tree under `pid`.
    Process { pid: u32 },
    /// A systemd service (`*.service`): every process of its cgroup.
    Service { unit: String },
    /// A systemd scope (`*.scope`): every process of its cgroup.
    Scope { unit: String },
    /// A logind session (`loginctl list-sessions`), by its scope.
    Session { id: String },
    /// A tmux server: a socket name (`tmux -L`) or, starting with '/', a socket path
    /// (`tmux -S`).
    Tmux { socket: String },
    /// A GNU screen session of root: `PID.NAME`, `NAME` or `PID`.
    Screen { session: String },
    /// A podman container of root, by name or ID: the tree under its init.
    Podman { container: String },
    /// A systemd-nspawn machine (`machinectl list`), by its unit.
    Nspawn { machine: String },
}

impl Target {
    pub fn kind(&self) -> WorkloadKind {
        match self {
            Target::Process { .. } => WorkloadKind::Process,
            Target::Service { .. } => WorkloadKind::Service,
            Target::Scope { .. } => WorkloadKind::Scope,
            Target::Session { .. } => WorkloadKind::Session,
            Target::Tmux { .. } => WorkloadKind::Tmux,
            Target::Screen { .. } => WorkloadKind::Screen,
            Target::Podman { .. } => WorkloadKind::Podman,
            Target::Nspawn { .. } => WorkloadKind::Nspawn,
        }
    }

    /// The value part of the selector, as [`parse_target`] takes it.
    pub fn selector(&self) -> String {
        match self {
            Target::Process { pid } => pid.to_string(),
            Target::Service { unit } | Target::Scope { unit } => unit.clone(),
            Target::Session { id } => id.clone(),
            Target::Tmux { socket } => socket.clone(),
            Target::Screen { session } => session.clone(),
            Target::Podman { container } => container.clone(),
            Target::Nspawn { machine } => machine.clone(),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Process { pid } => write!(f, "process {pid}"),
            Target::Service { unit } => write!(f, "service {unit}"),
            Target::Scope { unit } => write!(f, "scope {unit}"),
            Target::Session { id } => write!(f, "login session {id}"),
            Target::Tmux { socket } if socket.starts_with('/') => {
                write!(f, "the tmux server at {socket}")
            }
            Target::Tmux { socket } => write!(f, "the tmux server of socket {socket}"),
            Target::Screen { session } => write!(f, "screen session {session}"),
            Target::Podman { container } => write!(f, "podman container {container}"),
            Target::Nspawn { machine } => write!(f, "nspawn machine {machine}"),
        }
    }
}

/// Checks a selector value of the given kind (the part after `kind:` in
/// `process:1234`, `service:foo.service`, `tmux:default`...). Values are passed to
/// other programs as arguments, so besides their own rules none may start with '-'.
pub fn parse_target(kind: WorkloadKind, selector: &str) -> Result<Target> {
    let refuse = |reason: &str| {
        Err(Error::InvalidTarget {
            kind,
            selector: shown(selector),
            reason: reason.to_owned(),
        })
    };
    if selector.is_empty() {
        return refuse("is empty");
    }
    if selector.starts_with('-') {
        return refuse("must not start with '-'");
    }
    if selector.chars().any(char::is_control) {
        return refuse("contains a control character");
    }
    match kind {
        WorkloadKind::Process => match selector.parse::<u32>() {
            Ok(pid) if (1..=PID_MAX).contains(&pid) => Ok(Target::Process { pid }),
            _ => refuse("is not a PID (a number from 1 to 4194304)"),
        },
        WorkloadKind::Service | WorkloadKind::Scope => {
            let suffix = if kind == WorkloadKind::Service {
                ".service"
            } else {
                ".scope"
            };
            if !selector.ends_with(suffix) || selector.len() == suffix.len() {
                return refuse(&format!("must be a unit name ending in {suffix}"));
            }
            if !is_unit_name(selector) {
                return refuse(
                    "is not a systemd unit name (at most 255 of letters, digits and : _ . \\ @ -)",
                );
            }
            let unit = selector.to_owned();
            Ok(if kind == WorkloadKind::Service {
                Target::Service { unit }
            } else {
                Target::Scope { unit }
            })
        }
        WorkloadKind::Session => {
            if !is_simple_name(selector, 64) {
                return refuse("is not a logind session id (e.g. 3 or c1)");
            }
            Ok(Target::Session {
                id: selector.to_owned(),
            })
        }
        WorkloadKind::Tmux => {
            if selector.starts_with('/') {
                if selector.len() > 4096 || selector.split('/').any(|c| c == "..") {
                    return refuse("is not a usable socket path (too long, or with '..')");
                }
            } else if selector.contains('/') || selector.len() > 255 {
                return refuse(
                    "is neither a socket name (as for tmux -L, without '/') nor an absolute \
                     socket path",
                );
            }
            Ok(Target::Tmux {
                socket: selector.to_owned(),
            })
        }
        WorkloadKind::Screen => {
            if selector.len() > 255 || selector.contains(['/', ' ', '\t']) {
                return refuse("is not a screen session (PID.NAME, NAME or PID)");
            }
            Ok(Target::Screen {
                session: selector.to_owned(),
            })
        }
        WorkloadKind::Podman => {
            // podman's own rule for names: [a-zA-Z0-9][a-zA-Z0-9_.-]*; IDs fit it too.
            if !is_simple_name(selector, 255) {
                return refuse("is not a podman container name or ID");
            }
            Ok(Target::Podman {
                container: selector.to_owned(),
            })
        }
        WorkloadKind::Nspawn => {
            if !is_simple_name(selector, 64) {
                return refuse("is not a machine name (letters, digits, '.', '_', '-')");
            }
            Ok(Target::Nspawn {
                machine: selector.to_owned(),
            })
        }
    }
}

/// 1 to `max` of `[A-Za-z0-9_.-]`, starting with a letter or digit.
fn is_simple_name(s: &str, max: usize) -> bool {
    s.len() <= max
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The characters systemd allows in unit names (the manifest checks the same).
fn is_unit_name(s: &str) -> bool {
    s.len() <= 255
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '\\' | '@' | '-'))
}

/// A workload found on the running system: the one process tree CRIU will dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub name: WorkloadName,
    pub kind: WorkloadKind,
    /// What the workload was found by (podman containers are dumped by name).
    pub target: Target,
    /// The root of the tree.
    pub root_pid: u32,
    /// Every process of the tree, the root included, sorted.
    pub pids: Vec<u32>,
    /// The systemd unit, for services, scopes, sessions and nspawn machines.
    pub unit: Option<String>,
    /// The cgroup below the cgroup2 mount, starting with '/': the unit's, or else the
    /// root process's.
    pub cgroup: Option<String>,
    /// The root's command line (`[comm]` if it has none).
    pub command_line: Vec<String>,
    /// The sum of the processes' resident memory: an upper bound of what the dump
    /// writes for it, as shared pages count once per process here.
    pub rss_bytes: u64,
    /// Whether the processes of `cgroup` and its sub-cgroups are exactly `pids`, so
    /// that freezing the cgroup freezes this workload and nothing else.
    pub owns_cgroup: bool,
    /// Whether the root leads its session (`root_pid` is its session id). If not,
    /// CRIU needs `--shell-job` to dump it.
    pub session_leader: bool,
    /// Whether a process has a terminal open (a pty slave or master, /dev/tty*,
    /// /dev/console).
    pub uses_tty: bool,
    /// For an nspawn machine: the directory its root file system is in, where its
    /// mount namespace is rebuilt on restore.
    pub root_dir: Option<String>,
}

/// The output of a program, whatever its exit status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandOutput {
    /// The command line, for messages.
    pub command: String,
    pub success: bool,
    /// The exit status as text (`exit status: 1`).
    pub status: String,
    pub stdout: String,
    pub stderr: String,
}

/// The outside world as the resolver sees it; [`LiveHost`] is the real one.
pub trait Host {
    /// Runs `program args...` and returns its output; an error only if it could not
    /// be started.
    fn command(&self, program: &str, args: &[&str]) -> Result<CommandOutput>;
    /// The PIDs in `cgroup` and below it.
    fn cgroup_procs(&self, cgroup: &str) -> Result<Vec<u32>>;
    /// The terminals `pid` has open (see [`proc::terminal_fds`]).
    fn terminal_fds(&self, pid: u32) -> Vec<String>;
    /// The PID of the process resolving: it must not be part of a workload.
    fn own_pid(&self) -> u32;
    /// Which namespace of type `ns` (`net`, `user`...) `pid` is in, as its
    /// /proc/<pid>/ns link reads (`net:[4026531840]`); None if it cannot be read.
    fn namespace(&self, pid: u32, ns: &str) -> Option<String> {
        std::fs::read_link(format!("/proc/{pid}/ns/{ns}"))
            .ok()
            .map(|l| l.to_string_lossy().into_owned())
    }
    /// The parent of `pid` now, or None once it is gone. For processes born after the
    /// table was read (a shell's short-lived children).
    fn parent_of(&self, pid: u32) -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may hold spaces and parentheses: the fields follow the last ')'.
        let rest = &stat[stat.rfind(')')? + 1..];
        rest.split_whitespace().nth(1)?.parse().ok()
    }
}

/// The running system: programs through [`cmd`], cgroups through the cgroup2 mount
/// found in /proc/self/mountinfo.
#[derive(Debug, Clone)]
pub struct LiveHost {
    mount: Option<Cgroup2Mount>,
}

impl LiveHost {
    /// Finds the cgroup2 mount. Without one, process workloads still resolve (without
    /// a cgroup to freeze) and unit workloads fail with [`Error::Cgroup2NotMounted`].
    pub fn new() -> LiveHost {
        let mount = match Cgroup2Mount::discover() {
            Ok(mount) => Some(mount),
            Err(err) => {
                tracing::debug!(err = %err, "no cgroup2 mount");
                None
            }
        };
        LiveHost { mount }
    }

    pub fn with_mount(mount: Cgroup2Mount) -> LiveHost {
        LiveHost { mount: Some(mount) }
    }
}

impl Default for LiveHost {
    fn default() -> Self {
        LiveHost::new()
    }
}

impl Host for LiveHost {
    fn command(&self, program: &str, args: &[&str]) -> Result<CommandOutput> {
        let (command, out) = cmd::output_any(program, args)?;
        Ok(CommandOutput {
            command,
            success: out.status.success(),
            status: out.status.to_string(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    fn cgroup_procs(&self, cgroup: &str) -> Result<Vec<u32>> {
        self.mount
            .as_ref()
            .ok_or(Error::Cgroup2NotMounted)?
            .procs_recursive(cgroup)
    }

    fn terminal_fds(&self, pid: u32) -> Vec<String> {
        proc::terminal_fds(pid)
    }

    fn own_pid(&self) -> u32 {
        std::process::id()
    }
}

/// Finds the workload `target` on the running system, under the name `name`.
pub fn resolve(name: &WorkloadName, target: &Target) -> Result<Resolved> {
    let table = ProcessTable::scan()?;
    resolve_with(name, target, &table, &LiveHost::new())
}

/// [`resolve`] over a given process table and host. The table is a snapshot: a
/// checkpoint should resolve again once the workload is frozen, so that what it dumps
/// is what it checked.
pub fn resolve_with(
    name: &WorkloadName,
    target: &Target,
    table: &ProcessTable,
    host: &dyn Host,
) -> Result<Resolved> {
    let r = Resolver {
        name,
        target,
        table,
        host,
    };
    match target {
        Target::Process { pid } => {
            r.check_root(*pid)?;
            r.finish(*pid, None)
        }
        Target::Service { unit } | Target::Scope { unit } => r.unit(unit),
        Target::Session { id } => {
            let scope = r.session_scope(id)?;
            r.unit(&scope)
        }
        Target::Tmux { socket } => {
            let server = r.tmux_server(socket)?;
            r.check_root(server)?;
            r.finish(server, None)
        }
        Target::Screen { session } => {
            let pid = r.screen_session(session)?;
            r.check_root(pid)?;
            r.finish(pid, None)
        }
        Target::Podman { container } => {
            let pid = r.podman_init(container)?;
            r.check_root(pid)?;
            r.finish(pid, None)
        }
        Target::Nspawn { machine } => {
            // The machine is the tree of its leader, the container's init: the
            // container manager (systemd-nspawn) stays outside, as CRIU cannot dump a
            // tree that spans two PID namespaces. Its cgroup is the leader's (nspawn's
            // `payload`), not the unit's, which holds the manager too.
            let m = r.machine(machine)?;
            r.check_root(m.leader)?;
            r.check_machine_namespaces(machine, m.leader)?;
            let mut resolved = r.finish(m.leader, None)?;
            resolved.unit = Some(m.unit);
            resolved.root_dir = Some(m.root_dir);
            Ok(resolved)
        }
    }
}

/// An nspawn machine as machined knows it.
struct Machine {
    leader: u32,
    unit: String,
    root_dir: String,
}

/// The cgroup of a unit workload, with the processes read from it.
struct UnitCgroup {
    path: String,
    procs: Vec<u32>,
}

struct Resolver<'a> {
    name: &'a WorkloadName,
    target: &'a Target,
    table: &'a ProcessTable,
    host: &'a dyn Host,
}

impl Resolver<'_> {
    fn workload(&self) -> WorkloadName {
        self.name.clone()
    }

    fn not_found(&self, what: impl Into<String>, hint: impl Into<String>) -> Error {
        Error::WorkloadNotFound {
            workload: self.workload(),
            what: what.into(),
            hint: hint.into(),
        }
    }

    fn not_running(
        &self,
        what: impl Into<String>,
        state: impl Into<String>,
        hint: impl Into<String>,
    ) -> Error {
        Error::WorkloadNotRunning {
            workload: self.workload(),
            what: what.into(),
            state: state.into(),
            hint: hint.into(),
        }
    }

    fn unsupported(&self, reason: impl Into<String>, hint: impl Into<String>) -> Error {
        Error::WorkloadUnsupported {
            workload: self.workload(),
            reason: reason.into(),
            hint: hint.into(),
        }
    }

    /// An error met while looking the target up, with the workload in front.
    fn lookup_failed(&self, source: Error) -> Error {
        Error::WorkloadLookup {
            workload: self.workload(),
            what: self.target.to_string(),
            source: Box::new(source),
        }
    }

    /// Runs a lookup program; a start failure names the workload.
    fn run(&self, program: &str, args: &[&str]) -> Result<CommandOutput> {
        self.host
            .command(program, args)
            .map_err(|e| self.lookup_failed(e))
    }

    /// The error for a program that failed in a way not understood more precisely.
    fn command_failed(&self, out: &CommandOutput) -> Error {
        self.lookup_failed(Error::CommandFailed {
            command: out.command.clone(),
            status: out.status.clone(),
            stderr_tail: cmd::tail(&out.stderr, 12),
        })
    }

    fn unexpected(&self, out: &CommandOutput, problem: String) -> Error {
        self.lookup_failed(Error::UnexpectedOutput {
            command: out.command.clone(),
            output: shown(out.stdout.trim_end()),
            problem,
        })
    }

    /// "12 (sh), 15 (sleep)": PIDs for messages, with their names, at most ten.
    fn describe(&self, pids: &[u32]) -> String {
        const MAX: usize = 10;
        let mut parts: Vec<String> = pids
            .iter()
            .take(MAX)
            .map(|&pid| match self.table.get(pid) {
                Some(p) => format!("{pid} ({})", p.comm),
                None => pid.to_string(),
            })
            .collect();
        if pids.len() > MAX {
            parts.push(format!("and {} more", pids.len() - MAX));
        }
        parts.join(", ")
    }

    /// Checks that `pid` can be the root of a dumped tree.
    fn check_root(&self, pid: u32) -> Result<()> {
        if self.table.is_kernel_thread(pid) {
            return Err(self.unsupported(
                format!("PID {pid} is a kernel thread"),
                "kernel threads cannot be checkpointed: name a user-space process",
            ));
        }
        let Some(p) = self.table.get(pid) else {
            return Err(match self.target {
                Target::Process { .. } => self.not_found(
                    format!("process {pid}"),
                    "check the PID (ps -p PID) or the workload's selector",
                ),
                _ => self.not_found(
                    format!("process {pid} of {}", self.target),
                    "it exited while being looked up; try again once it runs",
                ),
            });
        };
        if pid == 1 {
            return Err(self.unsupported(
                "PID 1 is the init process",
                "init cannot be checkpointed: name one of its children, or a service",
            ));
        }
        if p.is_zombie() {
            return Err(self.not_running(
                format!("process {pid} ({})", p.comm),
                format!(
                    "a zombie (it exited; its parent {} has not reaped it)",
                    p.ppid
                ),
                "there is nothing left to checkpoint: remove the workload, or restart the \
                 program",
            ));
        }
        Ok(())
    }

    /// Everything about the tree under `root`, after the checks that apply to every
    /// kind of workload. `unit` is the unit and cgroup of unit workloads.
    fn finish(&self, root: u32, unit: Option<(String, UnitCgroup)>) -> Result<Resolved> {
        let pids = self.table.descendants(root);
        let root_entry = self
            .table
            .get(root)
            .expect("check_root verified that the root is in the table");

        let own = self.host.own_pid();
        if pids.contains(&own) {
            return Err(self.unsupported(
                format!(
                    "the process tree of {} contains upgraded itself (PID {own})",
                    self.target
                ),
                "run upgraded outside of the workload, e.g. as its systemd service",
            ));
        }

        // CRIU cannot dump a process whose session leader is outside the dump and
        // outside its PID namespace, which PID 1's session always is.
        if let Some(init) = self.table.get(1) {
            if !pids.contains(&1) {
                let in_init_session: Vec<u32> = pids
                    .iter()
                    .copied()
                    .filter(|&pid| self.table.get(pid).is_some_and(|p| p.sid == init.sid))
                    .collect();
                if !in_init_session.is_empty() {
                    return Err(self.unsupported(
                        format!(
                            "PIDs {} are in the session of PID 1 (session {}), which CRIU \
                             cannot dump",
                            self.describe(&in_init_session),
                            init.sid
                        ),
                        "start the program in a session of its own, under `setsid`, or as \
                         a service (systemd-run --unit=NAME COMMAND)",
                    ));
                }
            }
        }

        let (unit, cgroup, cgroup_procs) = match unit {
            Some((unit, cg)) => (Some(unit), Some(cg.path), Some(cg.procs)),
            None => {
                // A path from another cgroup namespace ("/../..") is no use here.
                let cgroup = root_entry
                    .cgroup
                    .clone()
                    .filter(|c| freezer::check_cgroup_path(c).is_ok());
                let procs = cgroup
                    .as_deref()
                    .and_then(|c| match self.host.cgroup_procs(c) {
                        Ok(procs) => Some(procs),
                        Err(err) => {
                            tracing::debug!(cgroup = c, err = %err, "cannot list the cgroup");
                            None
                        }
                    });
                (None, cgroup, procs)
            }
        };
        // The cgroup holds the tree and nothing else. The two lists are read at
        // different moments: a process forked in between (a shell's `sleep`) is in the
        // cgroup but not in the table, and one that exited is in the table only.
        let owns_cgroup = cgroup_procs.is_some_and(|procs| {
            let procs: BTreeSet<u32> = procs.into_iter().collect();
            let tree: BTreeSet<u32> = pids.iter().copied().collect();
            let descends = |mut pid: u32| {
                for _ in 0..64 {
                    match self.host.parent_of(pid) {
                        Some(p) if p == root => return true,
                        Some(p) if p > 1 => pid = p,
                        _ => return false,
                    }
                }
                false
            };
            let gone = |pid: u32| self.host.parent_of(pid).is_none();
            procs.iter().all(|&p| tree.contains(&p) || descends(p))
                && tree.iter().all(|&p| procs.contains(&p) || gone(p))
        });

        let rss_bytes = pids
            .iter()
            .filter_map(|&pid| self.table.get(pid))
            .map(|p| p.rss_bytes)
            .sum();
        let uses_tty = pids
            .iter()
            .any(|&pid| !self.host.terminal_fds(pid).is_empty());
        let command_line = if root_entry.cmdline.is_empty() {
            vec![format!("[{}]", root_entry.comm)]
        } else {
            root_entry.cmdline.clone()
        };

        Ok(Resolved {
            name: self.workload(),
            kind: self.target.kind(),
            target: self.target.clone(),
            root_pid: root,
            session_leader: root_entry.sid == root,
            pids,
            unit,
            cgroup,
            command_line,
            rss_bytes,
            owns_cgroup,
            uses_tty,
            root_dir: None,
        })
    }

    /// A service or scope (also a session's scope and a machine's unit): the one tree
    /// its cgroup holds.
    fn unit(&self, unit: &str) -> Result<Resolved> {
        let out = self.run(
            "systemctl",
            &[
                "show",
                "--property=ControlGroup,MainPID,ActiveState,LoadState",
                "--",
                unit,
            ],
        )?;
        if !out.success {
            return Err(self.command_failed(&out));
        }
        let info = parse::unit_info(&out.stdout).map_err(|p| self.unexpected(&out, p))?;
        let what = format!("unit {unit}");
        match info.load_state.as_str() {
            "loaded" => {}
            "not-found" => {
                return Err(self.not_found(
                    what,
                    format!("check the name: systemctl list-units --all '{unit}'"),
                ))
            }
            "masked" => {
                return Err(self.not_running(
                    what,
                    "masked",
                    format!("unmask and start it first (systemctl unmask --now {unit})"),
                ))
            }
            other => {
                return Err(self.not_found(
                    format!("{what} (LoadState={other})"),
                    format!("systemctl status {unit} says why it did not load"),
                ))
            }
        }
        if !matches!(info.active_state.as_str(), "active" | "reloading") {
            return Err(self.not_running(
                what,
                info.active_state.clone(),
                format!("start it first (systemctl start {unit}), or leave it out"),
            ));
        }
        if info.control_group.is_empty() {
            return Err(self.not_running(
                what,
                "without a control group",
                "only units with processes (services, scopes) can be checkpointed",
            ));
        }
        let cgroup = info.control_group;
        let procs = self
            .host
            .cgroup_procs(&cgroup)
            .map_err(|e| self.lookup_failed(e))?;
        let known: Vec<u32> = procs
            .iter()
            .copied()
            .filter(|&pid| self.table.get(pid).is_some())
            .collect();
        if known.is_empty() {
            return Err(self.not_running(
                what,
                "active but has no processes",
                "there is nothing to checkpoint (e.g. a oneshot service with \
                 RemainAfterExit=yes): leave it out",
            ));
        }
        let roots = self.table.roots_of(&known);
        let &[root] = roots.as_slice() else {
            return Err(Error::WorkloadSpansTrees {
                workload: self.workload(),
                unit: unit.to_owned(),
                trees: roots.len(),
                roots: self.describe(&roots),
            });
        };
        self.check_root(root)?;
        if info.main_pid != 0 && info.main_pid != root {
            tracing::debug!(
                unit,
                main_pid = info.main_pid,
                root,
                "the unit's main process is not the root of its tree"
            );
        }
        // CRIU dumps the whole tree under the root: children that moved to another
        // cgroup (e.g. an sshd session's processes, in their session scope) would be
        // dumped and stopped along with the unit.
        let in_cgroup: BTreeSet<u32> = procs.iter().copied().collect();
        let mut outside: Vec<u32> = self
            .table
            .descendants(root)
            .into_iter()
            .filter(|pid| !in_cgroup.contains(pid))
            .collect();
        if !outside.is_empty() {
            // The table and the cgroup were read at different moments: a child forked in
            // between (a shell's `sleep`) is in the table only. Look again.
            let again: BTreeSet<u32> = self
                .host
                .cgroup_procs(&cgroup)
                .map_err(|e| self.lookup_failed(e))?
                .into_iter()
                .collect();
            outside.retain(|&pid| !again.contains(&pid) && self.host.parent_of(pid).is_some());
        }
        if !outside.is_empty() {
            return Err(Error::WorkloadOutsideCgroup {
                workload: self.workload(),
                unit: unit.to_owned(),
                cgroup,
                outside: self.describe(&outside),
            });
        }
        self.finish(
            root,
            Some((
                unit.to_owned(),
                UnitCgroup {
                    path: cgroup,
                    procs,
                },
            )),
        )
    }

    /// The scope of a logind session.
    fn session_scope(&self, id: &str) -> Result<String> {
        let out = self.run(
            "loginctl",
            // One --property each: loginctl (252) takes no comma lists, and a list
            // matches no property at all.
            &[
                "show-session",
                "--property=Leader",
                "--property=Scope",
                "--property=State",
                "--",
                id,
            ],
        )?;
        if !out.success {
            if mentions(&out.stderr, &["not known", "no session"]) {
                return Err(self.not_found(
                    format!("login session {id}"),
                    "loginctl list-sessions lists the sessions",
                ));
            }
            return Err(self.command_failed(&out));
        }
        let props = parse::properties(&out.stdout);
        match props.get("Scope").map(String::as_str) {
            Some(scope) if !scope.is_empty() => Ok(scope.to_owned()),
            _ => Err(self.not_running(
                format!("login session {id}"),
                format!(
                    "{} without a scope",
                    props.get("State").map_or("", String::as_str)
                ),
                "it is ending or has no processes: leave it out",
            )),
        }
    }

    /// Refuses machines in namespaces that CRIU (3.17) cannot dump with nspawn's mounts,
    /// before anything is frozen; tests/vm/pending/nspawn-variants shows the failures.
    fn check_machine_namespaces(&self, machine: &str, leader: u32) -> Result<()> {
        let own = self.host.own_pid();
        let differs = |ns: &str| match (
            self.host.namespace(leader, ns),
            self.host.namespace(own, ns),
        ) {
            (Some(a), Some(b)) => a != b,
            _ => false,
        };
        if differs("net") {
            return Err(self.unsupported(
                format!(
                    "machine {machine} has a network namespace of its own (--private-network, \
                     --network-veth, --network-bridge...): CRIU cannot dump the sysfs nspawn \
                     mounts for it (\"./sys/kernel doesn't have a proper root mount\")"
                ),
                "run the machine with the host's network (no --private-network or \
                 --network-* options, PrivateNetwork=no in its .nspawn file)",
            ));
        }
        if differs("user") {
            return Err(self.unsupported(
                format!(
                    "machine {machine} runs in a user namespace of its own (-U, \
                     --private-users): CRIU cannot dump its /run (\"Can't dump tmpfs \
                     content\")"
                ),
                "run the machine without a private user namespace (--private-users=no, \
                 PrivateUsers=no in its .nspawn file)",
            ));
        }
        Ok(())
    }

    /// The leader PID, unit and root directory of an nspawn machine.
    fn machine(&self, machine: &str) -> Result<Machine> {
        let out = self.run(
            "machinectl",
            &[
                "show",
                "--property=Leader",
                "--property=Unit",
                "--property=RootDirectory",
                "--property=Class",
                "--",
                machine,
            ],
        )?;
        if !out.success {
            if mentions(&out.stderr, &["no machine", "not known"]) {
                return Err(self.not_found(
                    format!("machine {machine}"),
                    "machinectl list lists the running machines",
                ));
            }
            return Err(self.command_failed(&out));
        }
        let props = parse::properties(&out.stdout);
        let leader = parse::pid_property(&props, "Leader").map_err(|p| self.unexpected(&out, p))?;
        let get = |k: &str| props.get(k).map(String::as_str).unwrap_or("");
        if get("Class") != "container" {
            return Err(self.unsupported(
                format!("machine {machine} is of class {:?}", get("Class")),
                "only containers (systemd-nspawn) are checkpointed; a virtual machine is \
                 suspended by its hypervisor",
            ));
        }
        let unit = get("Unit");
        if unit.is_empty() {
            return Err(self.unexpected(&out, "no Unit= value".into()));
        }
        let root_dir = get("RootDirectory");
        if !root_dir.starts_with('/') || root_dir.contains("/../") || root_dir.ends_with("/..") {
            return Err(self.unsupported(
                format!("machine {machine} has no usable root directory ({root_dir:?})"),
                "machines started from an image file (systemd-nspawn --image=) are not \
                 supported: start it from a directory (--directory=)",
            ));
        }
        Ok(Machine {
            leader,
            unit: unit.to_owned(),
            root_dir: root_dir.to_owned(),
        })
    }

    /// The PID of a tmux server without attached clients.
    fn tmux_server(&self, socket: &str) -> Result<u32> {
        let (flag, flag_text) = if socket.starts_with('/') {
            ("-S", format!("-S {socket}"))
        } else {
            ("-L", format!("-L {socket}"))
        };
        let out = self.run("tmux", &[flag, socket, "display-message", "-p", "#{pid}"])?;
        if !out.success {
            if mentions(&out.stderr, &["no server running", "error connecting to"]) {
                return Err(self.not_found(
                    self.target.to_string(),
                    format!(
                        "no server runs there (tmux {flag_text} ls); another user's server \
                         is named by its socket path, e.g. tmux:/tmp/tmux-1000/default"
                    ),
                ));
            }
            return Err(self.command_failed(&out));
        }
        let pid = parse::single_pid(&out.stdout).map_err(|p| self.unexpected(&out, p))?;

        // A client attached from outside the tree holds the other end of a unix
        // socket, which CRIU cannot dump; one inside would not survive the restore.
        let out = self.run(
            "tmux",
            &[
                flag,
                socket,
                "list-clients",
                "-F",
                "#{client_pid} #{client_session}",
            ],
        )?;
        if !out.success {
            return Err(self.command_failed(&out));
        }
        let clients = parse::tmux_clients(&out.stdout).map_err(|p| self.unexpected(&out, p))?;
        if !clients.is_empty() {
            let sessions: BTreeSet<&str> = clients.iter().map(|c| c.session.as_str()).collect();
            let hint = sessions
                .iter()
                .map(|s| format!("tmux {flag_text} detach-client -s {}", shell_quote(s)))
                .collect::<Vec<_>>()
                .join("; ");
            let pids: Vec<u32> = clients.iter().map(|c| c.pid).collect();
            return Err(Error::WorkloadAttached {
                workload: self.workload(),
                what: self.target.to_string(),
                clients: format!("PIDs {}", self.describe(&pids)),
                hint: format!("{hint} (users reattach after the upgrade)"),
            });
        }
        Ok(pid)
    }

    /// The PID of a detached screen session.
    fn screen_session(&self, selector: &str) -> Result<u32> {
        // `screen -ls` exits non-zero even when it lists sessions: read its output.
        let out = self.run("screen", &["-ls"])?;
        let sessions = parse::screen_sessions(&out.stdout).map_err(|p| self.unexpected(&out, p))?;
        if sessions.is_empty() && !out.success && !mentions(&out.stdout, &["no sockets found"]) {
            return Err(self.command_failed(&out));
        }
        let matching: Vec<&parse::ScreenSession> = sessions
            .iter()
            .filter(|s| s.id() == selector || s.name == selector || s.pid.to_string() == selector)
            .collect();
        let session = match matching.as_slice() {
            [one] => *one,
            [] => {
                let known = sessions
                    .iter()
                    .map(parse::ScreenSession::id)
                    .collect::<Vec<_>>();
                return Err(self.not_found(
                    format!("screen session {selector}"),
                    if known.is_empty() {
                        "root has no screen sessions (screen -ls)".to_owned()
                    } else {
                        format!("root's sessions are: {}", known.join(", "))
                    },
                ));
            }
            several => {
                return Err(self.unsupported(
                    format!(
                        "several screen sessions match {selector} ({})",
                        several
                            .iter()
                            .map(|s| s.id())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    "name one of them as PID.NAME",
                ))
            }
        };
        match &session.state {
            parse::ScreenState::Detached => {}
            parse::ScreenState::Attached => {
                return Err(Error::WorkloadAttached {
                    workload: self.workload(),
                    what: format!("screen session {}", session.id()),
                    clients: "it is attached".into(),
                    hint: format!(
                        "screen -d {} (users reattach after the upgrade)",
                        session.id()
                    ),
                })
            }
            parse::ScreenState::Dead => {
                return Err(self.not_running(
                    format!("screen session {}", session.id()),
                    "dead",
                    "its process is gone: screen -wipe removes the leftover socket",
                ))
            }
            parse::ScreenState::Other(state) => {
                tracing::debug!(session = %session.id(), state, "unknown screen state");
            }
        }
        Ok(session.pid)
    }

    /// The init PID of a running podman container.
    fn podman_init(&self, container: &str) -> Result<u32> {
        let out = self.run(
            "podman",
            &[
                "container",
                "inspect",
                "--format",
                "{{.State.Pid}} {{.State.Running}}",
                "--",
                container,
            ],
        )?;
        if !out.success {
            if mentions(&out.stderr, &["no such container", "no such object"]) {
                return Err(self.not_found(
                    format!("podman container {container}"),
                    "podman ps -a lists root's containers (rootless containers of other \
                     users are not supported)",
                ));
            }
            return Err(self.command_failed(&out));
        }
        let (pid, running) =
            parse::podman_state(&out.stdout).map_err(|p| self.unexpected(&out, p))?;
        if !running || pid == 0 {
            return Err(self.not_running(
                format!("podman container {container}"),
                "stopped",
                format!("start it first (podman start {container}), or leave it out"),
            ));
        }
        Ok(pid)
    }
}

/// Whether `text` contains one of `needles` (lowercase), ignoring case.
fn mentions(text: &str, needles: &[&str]) -> bool {
    let text = text.to_ascii_lowercase();
    needles.iter().any(|n| text.contains(n))
}

/// `s` quoted for a shell command in a message, when it needs it.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/' | ':' | '@'))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests;
