//! The CRIU engine: our own small client for `criu swrk` (CRIU's RPC over a
//! SOCK_SEQPACKET socket), using the rpc.proto types that `rust-criu` generates.
//!
//! rust-criu's own client returns neither the restored PID nor offers pre-dump, both of
//! which we need, so the request loop lives here (about what libcriu does).
//! Directories are passed by file descriptor, as CRIU's RPC expects.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::sys::socket::{
    recv, recvmsg, send, socketpair, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag,
    SockType,
};
use nix::sys::stat::Mode;
use protobuf::{Enum, EnumOrUnknown, Message, MessageField};
use rust_criu::rust_criu_protobuf::rpc;

use crate::{cmd, Error};

/// The oldest CRIU we drive: bookworm's. Older ones lack the time-namespace restore
/// that keeps monotonic clocks continuous across a kexec (see FACTS).
pub const MIN_VERSION: CriuVersion = CriuVersion {
    major: 3,
    minor: 17,
    sublevel: 0,
};

/// How many lines of CRIU's log go into an error.
const LOG_TAIL_LINES: usize = 15;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct CriuVersion {
    pub major: u32,
    pub minor: u32,
    pub sublevel: u32,
}

impl std::fmt::Display for CriuVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)?;
        if self.sublevel != 0 {
            write!(f, ".{}", self.sublevel)?;
        }
        Ok(())
    }
}

/// Options of a dump or pre-dump. Every choice is recorded in the manifest.
#[derive(Debug, Clone, Default)]
pub struct DumpOptions {
    /// Root of the process tree.
    pub pid: u32,
    /// Keep the tree running after the dump (a snapshot).
    pub leave_running: bool,
    /// Dump established TCP connections (the tree's network is locked meanwhile).
    pub tcp_established: bool,
    /// The tree's session or process group leader lies outside it (a shell job).
    pub shell_job: bool,
    /// Unix sockets whose peer is outside the tree (journald, D-Bus) are dumped as
    /// external: after restore they are disconnected, which their owners handle.
    pub ext_unix_sk: bool,
    /// Dump file locks held by the tree.
    pub file_locks: bool,
    /// Let CRIU freeze and thaw this cgroup (absolute path in the cgroup2 mount) instead
    /// of stopping tasks one by one with ptrace.
    pub freeze_cgroup: Option<PathBuf>,
    /// Images of the previous pre-dump, relative to the images directory: CRIU links
    /// `parent` there to this path (as given), which restore follows to read pages.
    pub parent: Option<String>,
    /// Track memory changes so a later dump writes only what changed.
    pub track_mem: bool,
    /// Resources outside the tree, in CRIU's `--external` syntax (`unix[<inode>]` for a
    /// socket whose peer stays behind, e.g. a journald stream).
    pub external: Vec<String>,
    /// The tree is a container (an nspawn machine): its root is the init of its own
    /// PID and mount namespaces. Mounts that come from outside it (bind mounts of host
    /// files) are dumped as external, with their sharing, and its console, a pty slave
    /// whose master the container manager holds, is dumped without the master.
    pub container: bool,
}

impl DumpOptions {
    /// The options as name → value, for the manifest.
    pub fn describe(&self) -> Vec<(String, String)> {
        let mut v = vec![
            ("leave_running".to_owned(), self.leave_running.to_string()),
            (
                "tcp_established".to_owned(),
                self.tcp_established.to_string(),
            ),
            ("shell_job".to_owned(), self.shell_job.to_string()),
            ("ext_unix_sk".to_owned(), self.ext_unix_sk.to_string()),
            ("file_locks".to_owned(), self.file_locks.to_string()),
        ];
        if let Some(p) = &self.parent {
            v.push(("parent".to_owned(), p.clone()));
        }
        if !self.external.is_empty() {
            v.push(("external".to_owned(), self.external.join(",")));
        }
        if self.container {
            v.push(("container".to_owned(), "true".to_owned()));
        }
        v
    }
}

/// Options of a restore; they must match those of the dump.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    pub tcp_established: bool,
    pub shell_job: bool,
    pub ext_unix_sk: bool,
    pub file_locks: bool,
    /// Descriptors (of this process, without CLOEXEC) that stand in for resources
    /// dumped as external, by CRIU key (e.g. `socket:[1234]`).
    pub inherit: Vec<(String, std::os::fd::RawFd)>,
    /// See [`DumpOptions::container`]: on restore CRIU gives the console a new pty
    /// and hands its master back ([`Restored::pts_master`]).
    pub container: bool,
    /// The directory the container's root file system is in (its mount namespace is
    /// rebuilt on top of it).
    pub root: Option<PathBuf>,
}

/// What a restore brought back.
#[derive(Debug)]
pub struct Restored {
    /// The root of the restored tree.
    pub pid: u32,
    /// A container's console: the master of the pty CRIU made for it. Someone has to
    /// hold it and read it, or the container loses its console (hangup) or blocks on it.
    pub pts_master: Option<OwnedFd>,
}

impl RestoreOptions {
    /// The restore options that go with a dump's recorded options.
    pub fn from_recorded<'a>(mut get: impl FnMut(&str) -> Option<&'a str>) -> Self {
        let mut flag = |k: &str| get(k) == Some("true");
        RestoreOptions {
            tcp_established: flag("tcp_established"),
            shell_job: flag("shell_job"),
            ext_unix_sk: flag("ext_unix_sk"),
            file_locks: flag("file_locks"),
            inherit: Vec::new(),
            container: flag("container"),
            root: None,
        }
    }
}

/// A CRIU binary we can talk to.
#[derive(Debug, Clone)]
pub struct Criu {
    path: PathBuf,
}

impl Criu {
    /// Finds `criu` in the usual places (or `$UPGRADED_CRIU`), and checks its version.
    pub fn locate() -> Result<Criu, Error> {
        let candidates: Vec<PathBuf> = match std::env::var_os("UPGRADED_CRIU") {
            Some(p) => vec![PathBuf::from(p)],
            None => [
                "/usr/sbin/criu",
                "/usr/bin/criu",
                "/sbin/criu",
                "/usr/local/sbin/criu",
            ]
            .iter()
            .map(PathBuf::from)
            .collect(),
        };
        let path = candidates
            .into_iter()
            .find(|p| p.is_file())
            .ok_or(Error::CriuMissing)?;
        let criu = Criu { path };
        let version = criu.version()?;
        if version < MIN_VERSION {
            return Err(Error::CriuTooOld {
                path: criu.path.clone(),
                found: version.to_string(),
                needed: MIN_VERSION.to_string(),
            });
        }
        Ok(criu)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A CRIU at `path`, unchecked (for tests that must not find the real one).
    #[cfg(test)]
    pub(crate) fn at(path: impl Into<PathBuf>) -> Criu {
        Criu { path: path.into() }
    }

    /// CRIU's version, as it reports it over RPC.
    pub fn version(&self) -> Result<CriuVersion, Error> {
        let (resp, _) = self.call(rpc::Criu_req_type::VERSION, None, "version", None)?;
        let v = resp.version.as_ref().ok_or_else(|| Error::CriuProtocol {
            what: "the version reply carries no version".to_owned(),
        })?;
        let num = |x: Option<i32>| x.unwrap_or(0).max(0) as u32;
        Ok(CriuVersion {
            major: num(v.major_number),
            minor: num(v.minor_number),
            sublevel: num(v.sublevel),
        })
    }

    /// `criu check`: whether this kernel has what CRIU needs.
    pub fn check(&self) -> Result<(), Error> {
        self.call(rpc::Criu_req_type::CHECK, None, "check", None)
            .map(|_| ())
    }

    /// Dumps the tree into `images` (an existing, empty, 0700 directory). CRIU's log
    /// goes to `work_dir/dump.log`.
    pub fn dump(&self, o: &DumpOptions, images: &Path, work_dir: &Path) -> Result<(), Error> {
        self.dump_request(rpc::Criu_req_type::DUMP, o, images, work_dir, "dump")
    }

    /// A pre-dump: copies memory while the tree keeps running; the final dump then
    /// writes only pages dirtied since (with `parent` pointing here). CRIU forces
    /// track_mem and a running tree for it. After its reply `criu swrk` waits for a
    /// further pre-dump or the dump in the same session; closing the socket ends it,
    /// which is how each call here uses a session of its own.
    pub fn pre_dump(&self, o: &DumpOptions, images: &Path, work_dir: &Path) -> Result<(), Error> {
        self.dump_request(
            rpc::Criu_req_type::PRE_DUMP,
            o,
            images,
            work_dir,
            "pre-dump",
        )
    }

    fn dump_request(
        &self,
        kind: rpc::Criu_req_type,
        o: &DumpOptions,
        images: &Path,
        work_dir: &Path,
        what: &'static str,
    ) -> Result<(), Error> {
        let images_fd = open_dir(images)?;
        let work_fd = open_dir(work_dir)?;
        let mut opts = base_opts(&images_fd, &work_fd, what);
        opts.set_pid(o.pid as i32);
        opts.set_leave_running(o.leave_running);
        opts.set_tcp_established(o.tcp_established);
        opts.set_shell_job(o.shell_job);
        opts.set_ext_unix_sk(o.ext_unix_sk);
        opts.set_file_locks(o.file_locks);
        opts.set_track_mem(o.track_mem);
        if let Some(cg) = &o.freeze_cgroup {
            opts.set_freeze_cgroup(cg.to_string_lossy().into_owned());
        }
        if let Some(p) = &o.parent {
            opts.set_parent_img(p.clone());
        }
        opts.external = o.external.clone();
        if o.container {
            set_container_opts(&mut opts);
        }
        self.call(kind, Some(opts), what, Some(work_dir))
            .map(|(_, _)| ())
    }

    /// Restores the tree in `images`. The restored tree lands in the cgroup of the
    /// caller; placing it is the caller's job.
    pub fn restore(
        &self,
        o: &RestoreOptions,
        images: &Path,
        work_dir: &Path,
    ) -> Result<Restored, Error> {
        let images_fd = open_dir(images)?;
        let work_fd = open_dir(work_dir)?;
        let mut opts = base_opts(&images_fd, &work_fd, "restore");
        opts.set_tcp_established(o.tcp_established);
        opts.set_shell_job(o.shell_job);
        opts.set_ext_unix_sk(o.ext_unix_sk);
        opts.set_file_locks(o.file_locks);
        opts.inherit_fd = o
            .inherit
            .iter()
            .map(|(key, fd)| {
                let mut i = rpc::Inherit_fd::new();
                i.set_key(key.clone());
                i.set_fd(*fd);
                i
            })
            .collect();
        if o.container {
            set_container_opts(&mut opts);
            if let Some(root) = &o.root {
                opts.set_root(root.to_string_lossy().into_owned());
            }
            // The console's new master comes back in an "orphan-pts-master"
            // notification, which CRIU sends only to clients that take notifications.
            opts.set_notify_scripts(true);
        }
        let (resp, pts_master) = self.call(
            rpc::Criu_req_type::RESTORE,
            Some(opts),
            "restore",
            Some(work_dir),
        )?;
        let pid = resp
            .restore
            .as_ref()
            .and_then(|r| r.pid)
            .filter(|&p| p > 0)
            .map(|p| p as u32)
            .ok_or_else(|| Error::CriuProtocol {
                what: "the restore reply carries no PID".to_owned(),
            })?;
        Ok(Restored { pid, pts_master })
    }

    /// One request to a fresh `criu swrk`, answering its notifications, until the reply;
    /// with it the pty master of an "orphan-pts-master" notification, if one came.
    fn call(
        &self,
        kind: rpc::Criu_req_type,
        opts: Option<rpc::Criu_opts>,
        what: &'static str,
        work_dir: Option<&Path>,
    ) -> Result<(rpc::Criu_resp, Option<OwnedFd>), Error> {
        // No CLOEXEC: criu swrk inherits its end (and the directory fds in opts).
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::empty(),
        )
        .map_err(|e| io_err("creating the CRIU socket pair", &self.path, e))?;
        let mut child = cmd::spawn_inheriting(
            &self.path.to_string_lossy(),
            ["swrk".to_owned(), theirs.as_raw_fd().to_string()],
        )?;
        drop(theirs);

        let mut req = rpc::Criu_req::new();
        req.type_ = Some(EnumOrUnknown::new(kind));
        if let Some(o) = opts {
            req.opts = MessageField::some(o);
        }
        let result = self.exchange(&ours, &req, kind, what, work_dir);
        // Closing our end ends criu swrk's request loop, except after a pre-dump: then
        // it waits for the next pre-dump or the final dump on the same socket and
        // takes the end of the stream for an empty request (as runc found, it has to
        // be killed). The pre-dump itself ran in a child it has already reaped, so
        // nothing is lost.
        drop(ours);
        if kind == rpc::Criu_req_type::PRE_DUMP {
            let _ = child.kill();
        }
        let _ = child.wait();
        result
    }

    fn exchange(
        &self,
        sock: &OwnedFd,
        req: &rpc::Criu_req,
        kind: rpc::Criu_req_type,
        what: &'static str,
        work_dir: Option<&Path>,
    ) -> Result<(rpc::Criu_resp, Option<OwnedFd>), Error> {
        send_msg(sock, req, &self.path)?;
        let mut pts_master = None;
        loop {
            let (resp, fd) = recv_msg(sock, &self.path)?;
            let rtype = resp.type_.map(|t| t.value()).unwrap_or(0);
            if rtype == rpc::Criu_req_type::NOTIFY.value() {
                // Only "orphan-pts-master" carries a descriptor; any other is closed.
                if resp.notify.script() == "orphan-pts-master" {
                    pts_master = fd.or(pts_master);
                }
                // We run no action scripts: acknowledge and go on.
                let mut ack = rpc::Criu_req::new();
                ack.type_ = Some(EnumOrUnknown::new(rpc::Criu_req_type::NOTIFY));
                ack.set_notify_success(true);
                send_msg(sock, &ack, &self.path)?;
                continue;
            }
            if rtype != kind.value() {
                return Err(Error::CriuProtocol {
                    what: format!("asked for {what}, got a reply of type {rtype}"),
                });
            }
            if !resp.success() {
                let log = work_dir
                    .map(|d| d.join(format!("{what}.log")))
                    .and_then(|p| std::fs::read_to_string(&p).ok().map(|t| (p, t)));
                let (log_path, log_tail) = match log {
                    Some((p, t)) => (Some(p), cmd::tail(&t, LOG_TAIL_LINES)),
                    None => (None, String::new()),
                };
                return Err(Error::CriuFailed {
                    what,
                    errno: resp.cr_errno.unwrap_or(0),
                    message: resp.cr_errmsg.clone().unwrap_or_default(),
                    log: log_path,
                    log_tail,
                });
            }
            return Ok((resp, pts_master));
        }
    }
}

/// What a container's dump and restore need beyond a plain tree's.
fn set_container_opts(opts: &mut rpc::Criu_opts) {
    // Bind mounts from the host (nspawn's /etc/resolv.conf, /run/host/...) are dumped
    // as external, keyed by their host path, and bound again from there on restore;
    // they are slaves of shared host mounts, hence sharing and masters.
    opts.set_auto_ext_mnt(true);
    opts.set_ext_sharing(true);
    opts.set_ext_masters(true);
    // The console is a pty slave whose master the container manager holds outside.
    opts.set_orphan_pts_master(true);
    // Mounts CRIU cannot restore, left out ([`crate::nspawn::SKIPPED_MOUNTS`]).
    opts.skip_mnt = crate::nspawn::SKIPPED_MOUNTS
        .iter()
        .map(|m| (*m).to_owned())
        .collect();
}

fn base_opts(images: &OwnedFd, work: &OwnedFd, what: &str) -> rpc::Criu_opts {
    let mut opts = rpc::Criu_opts::new();
    opts.set_images_dir_fd(images.as_raw_fd());
    opts.set_work_dir_fd(work.as_raw_fd());
    opts.set_log_file(format!("{what}.log"));
    // Level 4 (debug): a failed dump is diagnosed from this log alone.
    opts.set_log_level(4);
    opts
}

fn open_dir(path: &Path) -> Result<OwnedFd, Error> {
    // No O_CLOEXEC: the descriptor is handed to criu swrk.
    open(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())
        .map_err(|e| io_err("opening directory", path, e))
}

fn io_err(action: &'static str, path: &Path, e: nix::Error) -> Error {
    Error::Io {
        action,
        path: path.to_owned(),
        source: std::io::Error::from(e),
    }
}

fn send_msg(sock: &OwnedFd, req: &rpc::Criu_req, criu: &Path) -> Result<(), Error> {
    let bytes = req.write_to_bytes().map_err(|e| Error::CriuProtocol {
        what: format!("encoding a request: {e}"),
    })?;
    send(sock.as_raw_fd(), &bytes, MsgFlags::empty())
        .map_err(|e| io_err("sending a request to criu swrk", criu, e))?;
    Ok(())
}

/// Takes ownership of a descriptor that arrived in an SCM_RIGHTS message.
#[allow(unsafe_code)]
fn adopt_received(raw: std::os::fd::RawFd) -> OwnedFd {
    // SAFETY: recvmsg just installed `raw` in this process for us; nothing else
    // knows or owns it.
    unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) }
}

/// One message, and the descriptor passed along with it, if any (SCM_RIGHTS).
fn recv_msg(sock: &OwnedFd, criu: &Path) -> Result<(rpc::Criu_resp, Option<OwnedFd>), Error> {
    // Learn the datagram's size first, then read it whole.
    let mut probe = [0u8; 0];
    let len = recv(
        sock.as_raw_fd(),
        &mut probe,
        MsgFlags::MSG_PEEK | MsgFlags::MSG_TRUNC,
    )
    .map_err(|e| io_err("reading a reply from criu swrk", criu, e))?;
    if len == 0 {
        return Err(Error::CriuProtocol {
            what: format!(
                "{} swrk closed the connection without a reply (it crashed or was killed)",
                criu.display()
            ),
        });
    }
    let mut buf = vec![0u8; len];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let (n, fd) = {
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| io_err("reading a reply from criu swrk", criu, e))?;
        let mut fd = None;
        for c in msg
            .cmsgs()
            .map_err(|e| io_err("reading a reply from criu swrk", criu, e))?
        {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for raw in fds {
                    fd.get_or_insert(adopt_received(raw));
                }
            }
        }
        (msg.bytes, fd)
    };
    let resp = rpc::Criu_resp::parse_from_bytes(&buf[..n]).map_err(|e| Error::CriuProtocol {
        what: format!("decoding a reply: {e}"),
    })?;
    Ok((resp, fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_and_print() {
        let v = |major, minor, sublevel| CriuVersion {
            major,
            minor,
            sublevel,
        };
        assert!(v(3, 16, 1) < MIN_VERSION);
        assert!(v(3, 17, 1) >= MIN_VERSION);
        assert!(v(4, 0, 0) > MIN_VERSION);
        assert_eq!(v(3, 17, 1).to_string(), "3.17.1");
        assert_eq!(v(4, 1, 0).to_string(), "4.1");
    }

    #[test]
    fn restore_options_follow_the_recorded_dump_options() {
        let dump = DumpOptions {
            pid: 10,
            tcp_established: true,
            shell_job: true,
            ..Default::default()
        };
        let recorded: std::collections::BTreeMap<String, String> =
            dump.describe().into_iter().collect();
        let r = RestoreOptions::from_recorded(|k| recorded.get(k).map(String::as_str));
        assert!(r.tcp_established && r.shell_job);
        assert!(!r.ext_unix_sk && !r.file_locks && !r.container);
        assert!(!recorded.contains_key("container"));

        let dump = DumpOptions {
            container: true,
            ..Default::default()
        };
        let recorded: std::collections::BTreeMap<String, String> =
            dump.describe().into_iter().collect();
        let r = RestoreOptions::from_recorded(|k| recorded.get(k).map(String::as_str));
        assert!(r.container);
        // The root comes from the manifest's own, validated field (checkpoint.rs).
        assert_eq!(r.root, None);
    }

    #[test]
    fn a_missing_criu_binary_is_reported() {
        let criu = Criu {
            path: PathBuf::from("/nonexistent/criu"),
        };
        let err = criu.version().unwrap_err();
        assert!(err.to_string().contains("/nonexistent/criu"), "{err}");
    }
}
