//! Parsers for what systemctl, loginctl, machinectl, tmux, screen and podman print.
//! Each takes the program's stdout and returns what the resolver needs, or says what
//! it could not understand.

use std::collections::BTreeMap;

/// `KEY=VALUE` lines, as `systemctl show`, `loginctl show-session` and
/// `machinectl show` print them. Values may contain '='; only the first one splits.
/// Lines without '=' (there should be none) are ignored.
pub(crate) fn properties(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim_end().to_owned()))
        .collect()
}

/// The properties of a unit that decide whether and how it can be dumped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnitInfo {
    pub load_state: String,
    pub active_state: String,
    /// The cgroup below the cgroup2 mount; empty when the unit has none.
    pub control_group: String,
    /// 0 when the unit has no main process (scopes, stopped services).
    pub main_pid: u32,
}

/// `systemctl show --property=ControlGroup,MainPID,ActiveState,LoadState UNIT`.
pub(crate) fn unit_info(text: &str) -> Result<UnitInfo, String> {
    let props = properties(text);
    let get = |key: &str| {
        props
            .get(key)
            .cloned()
            .ok_or_else(|| format!("no {key}= line"))
    };
    let main_pid = match props.get("MainPID").map(String::as_str) {
        // Scopes may leave it out; systemd prints 0 when there is no main process.
        None | Some("") => 0,
        Some(v) => v.parse().map_err(|_| format!("MainPID={v} is not a PID"))?,
    };
    Ok(UnitInfo {
        load_state: get("LoadState")?,
        active_state: get("ActiveState")?,
        control_group: props.get("ControlGroup").cloned().unwrap_or_default(),
        main_pid,
    })
}

/// A PID printed alone on a line (`tmux display-message -p '#{pid}'`).
pub(crate) fn single_pid(text: &str) -> Result<u32, String> {
    let text = text.trim();
    match text.parse::<u32>() {
        Ok(pid) if pid > 0 => Ok(pid),
        _ => Err("expected one PID".into()),
    }
}

/// A PID of a `KEY=PID` property (`Leader=1234`).
pub(crate) fn pid_property(props: &BTreeMap<String, String>, key: &str) -> Result<u32, String> {
    let value = props.get(key).ok_or_else(|| format!("no {key}= line"))?;
    match value.parse::<u32>() {
        Ok(pid) if pid > 0 => Ok(pid),
        _ => Err(format!("{key}={value} is not a PID")),
    }
}

/// A client attached to a tmux server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TmuxClient {
    pub pid: u32,
    pub session: String,
}

/// `tmux list-clients -F '#{client_pid} #{client_session}'`: one client per line.
pub(crate) fn tmux_clients(text: &str) -> Result<Vec<TmuxClient>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (pid, session) = line.split_once(' ').unwrap_or((line, ""));
            let pid = pid
                .trim()
                .parse()
                .map_err(|_| format!("client line {line:?} does not start with a PID"))?;
            Ok(TmuxClient {
                pid,
                session: session.to_owned(),
            })
        })
        .collect()
}

/// The state of a screen session as `screen -ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScreenState {
    Attached,
    Detached,
    /// The session's process is gone and its socket left over (`screen -wipe` cleans).
    Dead,
    /// Anything else screen may print, as printed.
    Other(String),
}

/// One session of `screen -ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScreenSession {
    pub pid: u32,
    pub name: String,
    pub state: ScreenState,
}

impl ScreenSession {
    /// `PID.NAME`, the full session name screen accepts everywhere.
    pub fn id(&self) -> String {
        format!("{}.{}", self.pid, self.name)
    }
}

/// `screen -ls`, e.g. (with tabs where the columns are):
///
/// ```text
/// There are screens on:
///         4242.work       (11/24/2025 10:00:00 AM)        (Detached)
///         4243.pts-0.host (Multi, attached)
/// 2 Sockets in /run/screen/S-root.
/// ```
///
/// Session lines start with a tab; the first field is `PID.NAME`, the last one in
/// parentheses is the state (older versions print no date field).
pub(crate) fn screen_sessions(text: &str) -> Result<Vec<ScreenSession>, String> {
    let mut sessions = Vec::new();
    for line in text.lines().filter(|l| l.starts_with('\t')) {
        let fields: Vec<&str> = line.split('\t').filter(|f| !f.is_empty()).collect();
        let Some((pid, name)) = fields.first().and_then(|id| id.split_once('.')) else {
            return Err(format!(
                "session line {line:?} does not start with PID.NAME"
            ));
        };
        let pid = pid
            .parse::<u32>()
            .map_err(|_| format!("session line {line:?} does not start with a PID"))?;
        let state = fields
            .iter()
            .skip(1)
            .rev()
            .find_map(|f| f.strip_prefix('(').and_then(|f| f.strip_suffix(')')))
            .unwrap_or("");
        let lower = state.to_ascii_lowercase();
        let state = if lower.contains("detached") {
            ScreenState::Detached
        } else if lower.contains("attached") {
            ScreenState::Attached
        } else if lower.contains("dead") {
            ScreenState::Dead
        } else {
            ScreenState::Other(state.to_owned())
        };
        sessions.push(ScreenSession {
            pid,
            name: name.to_owned(),
            state,
        });
    }
    Ok(sessions)
}

/// `podman container inspect --format '{{.State.Pid}} {{.State.Running}}'`: the
/// container's init PID (0 when stopped) and whether it runs.
pub(crate) fn podman_state(text: &str) -> Result<(u32, bool), String> {
    let mut fields = text.split_ascii_whitespace();
    let (Some(pid), Some(running), None) = (fields.next(), fields.next(), fields.next()) else {
        return Err("expected \"PID true|false\"".into());
    };
    let pid = pid.parse().map_err(|_| format!("{pid:?} is not a PID"))?;
    let running = match running {
        "true" => true,
        "false" => false,
        other => return Err(format!("{other:?} is neither true nor false")),
    };
    Ok((pid, running))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemctl_show() {
        let info = unit_info(
            "MainPID=812\nControlGroup=/system.slice/counter.service\n\
             ActiveState=active\nLoadState=loaded\n",
        )
        .unwrap();
        assert_eq!(
            info,
            UnitInfo {
                load_state: "loaded".into(),
                active_state: "active".into(),
                control_group: "/system.slice/counter.service".into(),
                main_pid: 812,
            }
        );
        // An unknown unit: systemctl exits 0 and says so in LoadState.
        let info =
            unit_info("MainPID=0\nControlGroup=\nActiveState=inactive\nLoadState=not-found\n")
                .unwrap();
        assert_eq!(info.load_state, "not-found");
        assert_eq!(info.control_group, "");
        assert_eq!(info.main_pid, 0);
        // A scope has no MainPID worth the name.
        let info = unit_info(
            "ControlGroup=/user.slice/session-3.scope\nActiveState=active\nLoadState=loaded\n",
        )
        .unwrap();
        assert_eq!(info.main_pid, 0);
        assert!(unit_info("LoadState=loaded\n").is_err());
        assert!(unit_info("MainPID=x\nActiveState=active\nLoadState=loaded\n").is_err());
    }

    #[test]
    fn properties_split_at_first_equals() {
        let p = properties("Description=a=b\n\nLeader=5\n");
        assert_eq!(p["Description"], "a=b");
        assert_eq!(pid_property(&p, "Leader"), Ok(5));
        assert!(pid_property(&p, "Missing").is_err());
        assert!(pid_property(&properties("Leader=0\n"), "Leader").is_err());
    }

    #[test]
    fn tmux_outputs() {
        assert_eq!(single_pid("14760\n"), Ok(14760));
        assert!(single_pid("").is_err());
        assert!(single_pid("12 13").is_err());
        assert_eq!(tmux_clients("").unwrap(), vec![]);
        assert_eq!(
            tmux_clients("100 main\n200 my session\n").unwrap(),
            vec![
                TmuxClient {
                    pid: 100,
                    session: "main".into()
                },
                TmuxClient {
                    pid: 200,
                    session: "my session".into()
                },
            ]
        );
        assert!(tmux_clients("x main\n").is_err());
    }

    #[test]
    fn screen_ls() {
        let out = "There are screens on:\n\
                   \t4242.work\t(11/24/2025 10:00:00 AM)\t(Detached)\n\
                   \t4243.pts-0.host\t(Multi, attached)\n\
                   \t4244.old\t(Dead ???)\n\
                   \t4245.x\t(Remote or dead)\n\
                   4 Sockets in /run/screen/S-root.\n";
        let s = screen_sessions(out).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(
            s[0],
            ScreenSession {
                pid: 4242,
                name: "work".into(),
                state: ScreenState::Detached
            }
        );
        assert_eq!(s[1].name, "pts-0.host");
        assert_eq!(s[1].id(), "4243.pts-0.host");
        assert_eq!(s[1].state, ScreenState::Attached);
        assert_eq!(s[2].state, ScreenState::Dead);
        assert_eq!(s[3].state, ScreenState::Dead);
        assert!(screen_sessions("No Sockets found in /run/screen/S-root.\n")
            .unwrap()
            .is_empty());
        assert!(screen_sessions("\tnopid\t(Detached)\n").is_err());
        assert_eq!(
            screen_sessions("\t7.a\t(Private)\n").unwrap()[0].state,
            ScreenState::Other("Private".into())
        );
    }

    #[test]
    fn podman_inspect() {
        assert_eq!(podman_state("4711 true\n"), Ok((4711, true)));
        assert_eq!(podman_state("0 false\n"), Ok((0, false)));
        assert!(podman_state("").is_err());
        assert!(podman_state("1 yes").is_err());
        assert!(podman_state("1 true\n2 true\n").is_err());
    }
}
