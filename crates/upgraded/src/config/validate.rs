//! Checks of single values. Each returns the parsed value or a [`Rejection`] saying why
//! and what to write instead; `merge` adds the key and the location.

use super::settings::{Memmap, WorkloadKind};
use std::path::{Path, PathBuf};

/// Why a value was refused, and what would be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub reason: String,
    pub hint: String,
}

fn reject<T>(reason: impl Into<String>, hint: impl Into<String>) -> Result<T, Rejection> {
    Err(Rejection {
        reason: reason.into(),
        hint: hint.into(),
    })
}

/// Longest workload name; names become image directory names and appear in messages.
pub(crate) const MAX_WORKLOAD_NAME: usize = 64;

/// Kernel arguments with these prefixes are written by upgraded itself to tell the new
/// kernel (and its initramfs) what to restore; a configured one would fake or hide them.
pub(crate) const RESERVED_CMDLINE_PREFIXES: [&str; 2] = ["upgraded.", "rd.upgraded."];

pub(crate) fn workload_name(name: &str) -> Result<(), Rejection> {
    const HINT: &str = "use letters, digits and . _ @ : - (at most 64 characters, not \
                        starting with . or -), e.g. name = \"web-1\"";
    if name.is_empty() {
        return reject("it is empty", HINT);
    }
    let length = name.chars().count();
    if length > MAX_WORKLOAD_NAME {
        return reject(
            format!("it is {length} characters long, the limit is {MAX_WORKLOAD_NAME}"),
            HINT,
        );
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._@:-".contains(*c)))
    {
        return reject(format!("the character {bad:?} is not allowed"), HINT);
    }
    // The name becomes a directory of the image area ("." and ".." would escape it) and
    // a command-line argument (a leading '-' would read as an option).
    if name.starts_with('.') || name.starts_with('-') {
        return reject("it starts with '.' or '-'", HINT);
    }
    Ok(())
}

/// The selector value of a string-selected workload kind.
pub(crate) fn selector(kind: WorkloadKind, value: &str) -> Result<(), Rejection> {
    let example = kind.selector_example();
    if value.is_empty() {
        return reject("it is empty", format!("give a value, e.g. {example}"));
    }
    if let Some(bad) = value.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return reject(
            format!("it contains {bad:?}"),
            format!("leave out spaces and control characters, e.g. {example}"),
        );
    }
    match kind {
        WorkloadKind::Service | WorkloadKind::Scope => unit_name(kind, value),
        WorkloadKind::Session => {
            // logind session ids are alphanumeric ("3", "c2").
            if value.chars().all(|c| c.is_ascii_alphanumeric()) {
                Ok(())
            } else {
                reject(
                    "a logind session id is made of letters and digits",
                    "give the id that `loginctl list-sessions` shows, e.g. session = \"3\"",
                )
            }
        }
        WorkloadKind::Tmux | WorkloadKind::Screen => {
            // Both name a socket file inside their socket directory.
            if value.contains('/') || value == "." || value == ".." {
                reject(
                    "it must be a plain name, not a path",
                    format!(
                        "give the name as passed to {}, e.g. {example}",
                        if kind == WorkloadKind::Tmux {
                            "`tmux -L`"
                        } else {
                            "`screen -S`"
                        }
                    ),
                )
            } else {
                Ok(())
            }
        }
        WorkloadKind::Podman => {
            // podman's own rule for names; container ids (hex) pass it too.
            let mut chars = value.chars();
            let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
            if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
                Ok(())
            } else {
                reject(
                    "a podman container name is [a-zA-Z0-9][a-zA-Z0-9_.-]*",
                    "give the name or id that `podman ps` shows, e.g. container = \"db\"",
                )
            }
        }
        WorkloadKind::Nspawn => {
            let chars_ok = value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if chars_ok && value.len() <= 64 && !value.starts_with(['.', '-']) {
                Ok(())
            } else {
                reject(
                    "a machine name is a host name: letters, digits and _ . - (at most 64, \
                     not starting with . or -)",
                    "give the name that `machinectl list` shows, e.g. machine = \"build\"",
                )
            }
        }
        // Selected by a number; checked as a range by the caller.
        WorkloadKind::Process => Ok(()),
    }
}

fn unit_name(kind: WorkloadKind, unit: &str) -> Result<(), Rejection> {
    let suffix = if kind == WorkloadKind::Service {
        ".service"
    } else {
        ".scope"
    };
    let example = kind.selector_example();
    let Some(prefix) = unit.strip_suffix(suffix) else {
        return reject(
            format!("a {kind} workload needs a unit name ending in {suffix}"),
            format!("write the full unit name, e.g. {example}"),
        );
    };
    let chars_ok = unit
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c));
    if prefix.is_empty() || !chars_ok || unit.len() > 255 {
        return reject(
            "it is not a valid systemd unit name",
            format!("give the name that `systemctl status` shows, e.g. {example}"),
        );
    }
    // A template has no processes to checkpoint; only its instances run.
    if prefix.ends_with('@') {
        return reject(
            "it names a template, not a running instance",
            format!("name an instance, e.g. unit = \"{prefix}1{suffix}\""),
        );
    }
    Ok(())
}

/// The `check` command: program and arguments, passed to exec without a shell.
pub(crate) fn check_command(argv: &[String]) -> Result<(), Rejection> {
    const HINT: &str = "give the program and its arguments as a list, e.g. \
                        check = [\"curl\", \"-fsS\", \"http://localhost/health\"], or \
                        remove `check`";
    match argv.first() {
        None => reject("the list is empty", HINT),
        Some(program) if program.trim().is_empty() => reject("the program is empty", HINT),
        // exec cannot pass a NUL byte, which TOML can write as \u0000.
        _ if argv.iter().any(|arg| arg.contains('\0')) => {
            reject("an argument contains a NUL character", HINT)
        }
        _ => Ok(()),
    }
}

/// `area.memmap`: `<size>[KMG]!<offset>[KMG]` as in the kernel's `memmap=` argument.
pub(crate) fn memmap(value: &str) -> Result<Memmap, Rejection> {
    const HINT: &str = "write <size>!<offset> with K, M or G suffixes, e.g. memmap = \
                        \"512M!1G\" reserves 512 MiB at 1 GiB as persistent memory";
    if value.starts_with("memmap=") {
        return reject(
            "it includes the argument name",
            "give only the value, e.g. memmap = \"512M!1G\"; upgraded adds `memmap=`",
        );
    }
    let Some((size, offset)) = value.split_once('!') else {
        return reject(
            "there is no '!' between size and offset ('!' marks persistent memory)",
            HINT,
        );
    };
    let (Some(size), Some(offset)) = (parse_size(size), parse_size(offset)) else {
        return reject(
            "size and offset must be whole numbers with an optional K, M or G suffix",
            HINT,
        );
    };
    if size == 0 {
        return reject("the size is zero", HINT);
    }
    if offset.checked_add(size).is_none() {
        return reject("the range ends beyond the 64-bit address space", HINT);
    }
    Ok(Memmap { size, offset })
}

/// A size the way the kernel's memparse() reads it, decimal only.
fn parse_size(text: &str) -> Option<u64> {
    let (digits, shift) = match text.as_bytes().last()? {
        b'K' | b'k' => (&text[..text.len() - 1], 10),
        b'M' | b'm' => (&text[..text.len() - 1], 20),
        b'G' | b'g' => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// One element of `kernel.extra_cmdline`.
pub(crate) fn cmdline_token(token: &str) -> Result<(), Rejection> {
    if token.is_empty() {
        return reject("it is empty", "remove the empty element");
    }
    if let Some(bad) = token.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return reject(
            format!("it contains {bad:?}, which would split or end the argument"),
            "give one kernel argument per list element, e.g. extra_cmdline = \
             [\"quiet\", \"console=ttyS0,115200\"]",
        );
    }
    // A quote would make the kernel read everything up to the next quote, including
    // the arguments upgraded appends, as one argument.
    if token.contains('"') {
        return reject(
            "it contains a double quote, which changes how the kernel splits the rest \
             of the command line",
            "remove the quote: each element is passed as one argument already",
        );
    }
    // "--" hands the arguments after it to init, away from the kernel and initramfs.
    if token == "--" {
        return reject(
            "`--` would pass the arguments after it, upgraded's own included, to init",
            "remove it; init arguments are not supported here",
        );
    }
    if let Some(prefix) = RESERVED_CMDLINE_PREFIXES
        .iter()
        .find(|p| token.starts_with(*p))
    {
        return reject(
            format!("arguments starting with {prefix:?} are set by upgraded itself"),
            "remove it: upgraded writes these arguments when it starts the new kernel",
        );
    }
    Ok(())
}

/// `kernel.known_good` when it is not "current": a release as `uname -r` prints it.
pub(crate) fn kernel_release(release: &str) -> Result<(), Rejection> {
    const HINT: &str = "give \"current\" (the kernel running when the upgrade starts) or \
                        a release as `uname -r` prints it, e.g. known_good = \
                        \"6.1.0-47-amd64\"";
    if release.is_empty() {
        return reject("it is empty", HINT);
    }
    // The utsname release field holds at most 64 bytes.
    if release.len() > 64 {
        return reject("a kernel release is at most 64 bytes long", HINT);
    }
    // Releases name files and directories: /boot/vmlinuz-<release>, /lib/modules/<release>.
    if release.contains('/') || release == "." || release == ".." {
        return reject("a kernel release cannot be a path", HINT);
    }
    if release.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return reject("it contains whitespace or control characters", HINT);
    }
    Ok(())
}

/// An absolute, normalized directory path other than `/`.
pub(crate) fn directory(value: &str, example: &str) -> Result<PathBuf, Rejection> {
    let hint = format!("give an absolute path without '..', e.g. {example}");
    let path = Path::new(value);
    if !path.is_absolute() {
        return reject("it is not an absolute path", hint);
    }
    // On the text: Path::components() silently drops inner "." components.
    if value.split('/').any(|part| part == "." || part == "..") {
        return reject("it contains '.' or '..' components", hint);
    }
    // upgraded creates, prunes and removes entries here: never at the root.
    if path.parent().is_none() {
        return reject("it is the root directory", hint);
    }
    if value.contains('\0') {
        return reject("it contains a NUL character", hint);
    }
    Ok(path.to_path_buf())
}

/// An absolute, normalized path of a file: as [`directory`], and not ending in '/'.
pub(crate) fn file(value: &str, example: &str) -> Result<PathBuf, Rejection> {
    let path = directory(value, example)?;
    if value.ends_with('/') {
        return reject(
            "it ends in '/', so it names a directory",
            format!("give the path of the file, e.g. {example}"),
        );
    }
    Ok(path)
}

/// A device node under /dev for a disk or pmem area.
pub(crate) fn device(value: &str, example: &str) -> Result<PathBuf, Rejection> {
    let hint = format!(
        "give the device node, e.g. {example}; a /dev/disk/by-id/ name stays the \
         same across boots"
    );
    let path = directory(value, example).map_err(|r| Rejection {
        reason: r.reason,
        hint: hint.clone(),
    })?;
    if !path.starts_with("/dev") || path == Path::new("/dev") {
        return reject("it is not a device node under /dev", hint);
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_names() {
        for good in ["web", "web-1", "a.b_c@d:e", "X", &"a".repeat(64), "0"] {
            assert_eq!(workload_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "with space",
            "slash/y",
            "é",
            ".hidden",
            "..",
            "-flag",
            &"a".repeat(65),
        ] {
            let rejection = workload_name(bad).unwrap_err();
            assert!(rejection.hint.contains("letters, digits"), "{bad}");
        }
        assert!(workload_name("a/b").unwrap_err().reason.contains("'/'"));
        assert!(workload_name(&"a".repeat(65))
            .unwrap_err()
            .reason
            .contains("65 characters"));
    }

    #[test]
    fn unit_names() {
        use WorkloadKind::{Scope, Service};
        assert_eq!(selector(Service, "nginx.service"), Ok(()));
        assert_eq!(selector(Service, "getty@tty1.service"), Ok(()));
        assert_eq!(selector(Service, "dev-disk-by\\x2did.service"), Ok(()));
        assert_eq!(selector(Scope, "session-3.scope"), Ok(()));
        let missing_suffix = selector(Service, "nginx").unwrap_err();
        assert!(
            missing_suffix.reason.contains(".service"),
            "{missing_suffix:?}"
        );
        assert!(selector(Scope, "nginx.service").is_err());
        assert!(selector(Service, ".service").is_err());
        assert!(selector(Service, "a/b.service").is_err());
        let template = selector(Service, "getty@.service").unwrap_err();
        assert!(template.hint.contains("getty@1.service"), "{template:?}");
    }

    #[test]
    fn other_selectors() {
        use WorkloadKind::*;
        assert_eq!(selector(Session, "3"), Ok(()));
        assert_eq!(selector(Session, "c2"), Ok(()));
        assert!(selector(Session, "3-a").is_err());
        assert_eq!(selector(Tmux, "default"), Ok(()));
        assert!(selector(Tmux, "/tmp/tmux-0/default").is_err());
        assert!(selector(Tmux, "..").is_err());
        assert_eq!(selector(Screen, "1234.pts-0.host"), Ok(()));
        assert!(selector(Screen, "a/b").is_err());
        assert_eq!(selector(Podman, "db"), Ok(()));
        assert_eq!(selector(Podman, "3f2a9c1b"), Ok(()));
        assert!(selector(Podman, "-db").is_err());
        assert!(selector(Podman, "db:latest").is_err());
        assert_eq!(selector(Nspawn, "build-01"), Ok(()));
        assert!(selector(Nspawn, ".build").is_err());
        assert!(selector(Nspawn, &"m".repeat(65)).is_err());
        for kind in WorkloadKind::ALL {
            assert!(selector(kind, "").is_err() || kind == Process, "{kind}");
            assert!(selector(kind, "a b").is_err() || kind == Process, "{kind}");
        }
    }

    #[test]
    fn check_commands() {
        let argv = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(check_command(&argv(&["/bin/true"])), Ok(()));
        assert_eq!(check_command(&argv(&["curl", "-fsS", "http://x/"])), Ok(()));
        assert!(check_command(&argv(&[])).is_err());
        assert!(check_command(&argv(&[" "])).is_err());
        assert!(check_command(&argv(&["a", "b\0c"])).is_err());
    }

    #[test]
    fn memmap_values() {
        let gib = 1u64 << 30;
        assert_eq!(
            memmap("512M!1G"),
            Ok(Memmap {
                size: 512 << 20,
                offset: gib
            })
        );
        assert_eq!(
            memmap("4g!12g"),
            Ok(Memmap {
                size: 4 * gib,
                offset: 12 * gib
            })
        );
        assert_eq!(
            memmap("65536!0"),
            Ok(Memmap {
                size: 65536,
                offset: 0
            })
        );
        assert_eq!(memmap("64K!1M").unwrap().to_string(), "64K!1M");
        assert_eq!(memmap("1024M!2048M").unwrap().to_string(), "1G!2G");
        for bad in [
            "",
            "512M",
            "512M@1G",
            "!1G",
            "512M!",
            "0!1G",
            "512X!1G",
            "1.5G!1G",
            "0x10!0",
            "-1M!1G",
            "512M!1G!2G",
            "99999999999999999999!0",
            "17179869184G!0",
            "16777216T!0",
        ] {
            assert!(memmap(bad).is_err(), "{bad:?} accepted");
        }
        let prefixed = memmap("memmap=512M!1G").unwrap_err();
        assert!(prefixed.hint.contains("only the value"), "{prefixed:?}");
        assert!(memmap("1G!18446744073709551615").is_err());
    }

    #[test]
    fn cmdline_tokens() {
        for good in ["quiet", "console=ttyS0,115200", "mitigations=off", "a.b=c"] {
            assert_eq!(cmdline_token(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "two words",
            "tab\there",
            "new\nline",
            "bell\u{7}",
            "init=\"/bin/sh",
            "--",
            "upgraded.generation=3",
            "rd.upgraded.restore=1",
        ] {
            assert!(cmdline_token(bad).is_err(), "{bad:?} accepted");
        }
        let reserved = cmdline_token("upgraded.x=1").unwrap_err();
        assert!(reserved.reason.contains("upgraded."), "{reserved:?}");
    }

    #[test]
    fn kernel_releases() {
        assert_eq!(kernel_release("6.1.0-47-amd64"), Ok(()));
        assert_eq!(kernel_release("6.12.9+rpt-rpi-v8"), Ok(()));
        for bad in ["", "../../etc", "a b", "..", &"6".repeat(65)] {
            assert!(kernel_release(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn directories_and_devices() {
        assert_eq!(
            directory("/var/lib/upgraded", "/x"),
            Ok(PathBuf::from("/var/lib/upgraded"))
        );
        for bad in ["relative", "/", "/var/../etc", "/var/./lib", "//", ""] {
            assert!(directory(bad, "/x").is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            file("/etc/upgraded/suspend.key", "/x"),
            Ok(PathBuf::from("/etc/upgraded/suspend.key"))
        );
        for bad in [
            "suspend.key",
            "/",
            "/etc/upgraded/",
            "/etc/../x",
            "/etc/./x",
        ] {
            assert!(file(bad, "/x").is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            device("/dev/pmem0", "/dev/pmem0"),
            Ok(PathBuf::from("/dev/pmem0"))
        );
        assert!(device("/dev/disk/by-id/nvme-x-part3", "x").is_ok());
        for bad in ["/dev", "/devices/x", "/var/img", "pmem0", "/dev/../etc/x"] {
            let rejection = device(bad, "/dev/pmem0").unwrap_err();
            assert!(
                rejection.hint.contains("/dev/pmem0"),
                "{bad:?}: {rejection:?}"
            );
        }
    }
}
