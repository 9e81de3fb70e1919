//! The one place that runs other programs (systemctl, tmux, podman, criu's CLI...).
//! A failure carries the command line and the tail of its stderr, so errors say what
//! the other program said.

use std::ffi::OsStr;
use std::process::{Command, Output, Stdio};

use crate::Error;

/// How much of a failed command's stderr goes into the error.
const STDERR_TAIL_LINES: usize = 12;

/// Runs `program args...` to completion with no stdin; returns its stdout on exit 0.
pub fn run<I, S>(program: &str, args: I) -> Result<String, Error>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = output(program, args)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Like [`run`], but returns the whole [`Output`] whatever the exit status, for callers
/// that read meaning into a non-zero exit.
pub fn output_any<I, S>(program: &str, args: I) -> Result<(String, Output), Error>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let line = command_line(program, &args);
    let out = Command::new(program)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            command: line.clone(),
            source,
        })?;
    Ok((line, out))
}

/// Starts `program args...` in the background with no stdin; its stdout and stderr go
/// to ours. File descriptors opened without CLOEXEC are inherited: that is how
/// `criu swrk` receives its socket and directories.
pub fn spawn_inheriting<I, S>(program: &str, args: I) -> Result<std::process::Child, Error>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    Command::new(program)
        .args(&args)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|source| Error::Spawn {
            command: command_line(program, &args),
            source,
        })
}

/// Starts `program args...` in the background reading `stdin`, its stdout and stderr
/// to /dev/null; returns its PID. A thread reaps it when it ends, so a long-running
/// caller (the daemon) keeps no zombie.
pub fn spawn_reading<I, S>(
    program: &str,
    args: I,
    stdin: std::os::fd::OwnedFd,
) -> Result<u32, Error>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let mut child = Command::new(program)
        .args(&args)
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| Error::Spawn {
            command: command_line(program, &args),
            source,
        })?;
    let pid = child.id();
    std::thread::spawn(move || child.wait());
    Ok(pid)
}

fn output<I, S>(program: &str, args: I) -> Result<Output, Error>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let (line, out) = output_any(program, args)?;
    if !out.status.success() {
        return Err(Error::CommandFailed {
            command: line,
            status: out.status.to_string(),
            stderr_tail: tail(&String::from_utf8_lossy(&out.stderr), STDERR_TAIL_LINES),
        });
    }
    Ok(out)
}

fn command_line(program: &str, args: &[std::ffi::OsString]) -> String {
    std::iter::once(program.to_owned())
        .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A PID printed by `command` (e.g. `systemctl show --value -p MainPID`): a positive
/// number, or an error saying what was expected.
pub fn parse_pid(out: &str, command: String, problem: &str) -> Result<u32, Error> {
    out.trim()
        .parse::<u32>()
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| Error::UnexpectedOutput {
            command,
            output: format!("{:?}", out.trim()),
            problem: problem.to_owned(),
        })
}

/// The last `n` non-empty lines of `text`, joined by newlines.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_returns_stdout() {
        assert_eq!(run("sh", ["-c", "echo hi"]).unwrap(), "hi\n");
    }

    #[test]
    fn failure_names_command_and_stderr_tail() {
        let err = run("sh", ["-c", "echo one >&2; echo two >&2; exit 3"]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("sh -c"), "{msg}");
        assert!(msg.contains("exit status: 3"), "{msg}");
        assert!(msg.contains("one\ntwo"), "{msg}");
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let err = run("/nonexistent/program", ["x"]).unwrap_err();
        assert!(matches!(err, Error::Spawn { .. }), "{err}");
    }

    #[test]
    fn pids_parse_or_say_why_not() {
        assert_eq!(parse_pid(" 42\n", "x".into(), "p").unwrap(), 42);
        assert!(parse_pid("0", "x".into(), "no main PID")
            .unwrap_err()
            .to_string()
            .contains("no main PID"));
        assert!(parse_pid("", "x".into(), "p").is_err());
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\n\nb\nc\n", 2), "b\nc");
    }
}
