//! Loading the next kernel with kexec, and what decides whether kexec is possible.
//!
//! [`load`] stages a kernel (and its initramfs) with kexec_file_load(2); systemd's
//! kexec.target later boots it. The system call is the one in [`sys`]; kexec-tools'
//! `kexec` is run instead, through the project's subprocess fence [`dumper::cmd`],
//! only where the file-based call cannot do the job and the older kexec_load(2) can:
//!
//! | errno of kexec_file_load | what it means | what [`load`] does |
//! |---|---|---|
//! | ENOSYS | the running kernel has no kexec_file_load (no CONFIG_KEXEC_FILE) | kexec-tools |
//! | ENOEXEC, EOPNOTSUPP | the kernel's own loader does not know this image format | kexec-tools |
//! | EPERM | no CAP_SYS_BOOT, `kernel.kexec_load_disabled`, or lockdown with an unsigned image | error |
//! | EKEYREJECTED, ENOKEY, EBADMSG, ENODATA, ENOPKG, ELIBBAD, EMSGSIZE | the kernel enforces signatures and this one does not verify | error |
//! | EBUSY, ENOMEM, EINVAL, EFBIG, ... | a real failure of this load | error |
//!
//! Falling back on a refused signature or on EPERM would not help and may do harm:
//! under lockdown kexec_load is refused outright, CAP_SYS_BOOT and
//! `kexec_load_disabled` gate both calls alike, and without lockdown an enforced
//! signature is a policy the admin chose, which kexec_load would quietly get around.
//! kexec-tools itself decides the same way (`do_kexec_file_load` in kexec/kexec.c).
//!
//! One more case goes to kexec-tools without trying: on x86-64, kexec_file_load keeps
//! 30 bytes of the command line free for a crash kernel's `elfcorehdr=` even when
//! loading a normal kernel, so it refuses lines longer than
//! [`FILE_LOAD_MAX_CMDLINE_LEN`] with EINVAL, which kexec_load takes.

mod sys;

use std::ffi::{CString, OsString};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use crate::kernel::MAX_CMDLINE_LEN;

/// Says whether a kernel is loaded for kexec: "0" or "1".
pub const KEXEC_LOADED: &str = "/sys/kernel/kexec_loaded";

/// Debian's kexec-tools settings, a shell fragment read by its kexec-load service.
pub const KEXEC_DEFAULTS: &str = "/etc/default/kexec";

/// The longest command line kexec can pass, in bytes without the NUL. x86's
/// COMMAND_LINE_SIZE is 2048 with the NUL, and the bzImage header's `cmdline_size`
/// (2047) is the most a boot loader may write; but both kexec paths compare that
/// field with the length *including* the NUL (kexec-tools' bzImage loader, the
/// kernel's kexec-bzimage64.c), so 2046 is the most that gets through, one less
/// than [`crate::kernel::MAX_CMDLINE_LEN`].
pub const MAX_KEXEC_CMDLINE_LEN: usize = MAX_CMDLINE_LEN - 1;

/// The longest command line kexec_file_load takes: on x86-64 it keeps room for
/// `elfcorehdr=0x<64-bit address> ` (30 bytes) on every load, crash kernel or not.
#[cfg(target_arch = "x86_64")]
pub const FILE_LOAD_MAX_CMDLINE_LEN: usize = MAX_KEXEC_CMDLINE_LEN - 30;
/// The longest command line kexec_file_load takes.
#[cfg(not(target_arch = "x86_64"))]
pub const FILE_LOAD_MAX_CMDLINE_LEN: usize = MAX_KEXEC_CMDLINE_LEN;

/// The most of `/etc/default/kexec` that is read: it is a few lines of settings.
const MAX_DEFAULTS_BYTES: u64 = 64 * 1024;

/// Where the lockdown mode and the kexec switch are read from to explain an EPERM.
const LOCKDOWN: &str = "/sys/kernel/security/lockdown";
const KEXEC_LOAD_DISABLED: &str = "/proc/sys/kernel/kexec_load_disabled";

/// Errors of [`crate::kexec`]. Each names the file and says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KexecError {
    #[error(
        "cannot load {}: the kernel command line {reason}; it is built by upgraded from \
         the current one and kernel.extra_cmdline: fix those",
        kernel.display()
    )]
    InvalidCmdline { kernel: PathBuf, reason: String },

    #[error("{what} {} is not an absolute path: kexec needs the full path, from /", path.display())]
    RelativePath { what: &'static str, path: PathBuf },

    #[error("opening {what} {} for kexec: check that it exists and is readable", path.display())]
    Open {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("the running kernel refused to load {} with kexec_file_load ({errno}): {hint}", kernel.display())]
    Refused {
        kernel: PathBuf,
        errno: Errno,
        /// What it means and what to do.
        hint: String,
    },

    #[error(
        "loading {} with kexec-tools failed ({why}): {}",
        kernel.display(),
        if matches!(**source, dumper::Error::Spawn { .. }) {
            "install kexec-tools (apt install kexec-tools), and check that it leaves \
             LOAD_KEXEC=false in /etc/default/kexec"
        } else {
            "`dmesg` may say more"
        }
    )]
    KexecTools {
        kernel: PathBuf,
        /// Why kexec_file_load was not used.
        why: String,
        #[source]
        source: Box<dumper::Error>,
    },

    #[error("unloading the kexec kernel failed ({errno}): {hint}")]
    Unload { errno: Errno, hint: String },

    #[error("unloading the kexec kernel with kexec-tools failed")]
    UnloadKexecTools {
        #[source]
        source: Box<dumper::Error>,
    },

    #[error("reading {}: does the running kernel support kexec?", path.display())]
    ReadLoaded {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{} says {content:?}, expected \"0\" or \"1\"", path.display())]
    BadLoaded { path: PathBuf, content: String },

    #[error("reading {}", path.display())]
    ReadDefaults {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "{} is larger than the {limit} bytes upgraded reads of it, so whether kexec-tools \
         loads a kernel at shutdown cannot be told: keep it to a few lines of settings",
        path.display()
    )]
    DefaultsTooLarge { path: PathBuf, limit: u64 },

    #[error(
        "{}:{line}: cannot tell whether kexec-tools loads a kernel at shutdown: {reason}; \
         write LOAD_KEXEC=false (or true) on a line of its own",
        path.display()
    )]
    UnclearDefaults {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// A kernel to load and the command line it boots with.
#[derive(Debug, Clone, Copy)]
pub struct LoadRequest<'a> {
    /// The kernel image, e.g. `/boot/vmlinuz-6.1.0-50-amd64`.
    pub kernel: &'a Path,
    /// Its initramfs, if it has one.
    pub initrd: Option<&'a Path>,
    /// The whole command line, as [`crate::kernel::target_cmdline`] builds it.
    pub cmdline: &'a str,
}

/// How the kernel was loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// kexec_file_load(2), by upgraded itself.
    FileLoad,
    /// kexec-tools' `kexec -c -l`, which uses kexec_load(2).
    KexecTools,
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::FileLoad => "kexec_file_load",
            Method::KexecTools => "kexec-tools (kexec_load)",
        })
    }
}

/// Loads the kernel of `req` for the next kexec, replacing any kernel loaded before.
/// Returns how; see the module docs for when kexec-tools is used.
pub fn load(req: &LoadRequest) -> Result<Method, KexecError> {
    let cmdline = check_cmdline(req.kernel, req.cmdline)?;
    for (what, path) in [
        ("kernel image", Some(req.kernel)),
        ("initramfs", req.initrd),
    ] {
        if let Some(path) = path.filter(|p| !p.is_absolute()) {
            // kexec-tools would read a path starting with '-' as an option.
            return Err(KexecError::RelativePath {
                what,
                path: path.to_path_buf(),
            });
        }
    }

    if req.cmdline.len() > FILE_LOAD_MAX_CMDLINE_LEN {
        let why = format!(
            "the command line is {} bytes and kexec_file_load takes at most {} on this \
             architecture",
            req.cmdline.len(),
            FILE_LOAD_MAX_CMDLINE_LEN
        );
        return load_with_kexec_tools(req, why);
    }

    let kernel = open(req.kernel, "kernel image")?;
    let initrd = req.initrd.map(|p| open(p, "initramfs")).transpose()?;
    let result = sys::kexec_file_load(kernel.as_fd(), initrd.as_ref().map(|f| f.as_fd()), &cmdline);
    // The image is in kernel memory now (or refused): the files are not needed either
    // way, and kexec-tools opens them itself.
    drop((kernel, initrd));
    match result {
        Ok(()) => Ok(Method::FileLoad),
        Err(errno) => match fallback_reason(errno) {
            Some(reason) => {
                load_with_kexec_tools(req, format!("kexec_file_load: {errno}: {reason}"))
            }
            None => Err(KexecError::Refused {
                kernel: req.kernel.to_path_buf(),
                errno,
                hint: refused_hint(
                    errno,
                    read_small(LOCKDOWN).as_deref(),
                    read_small(KEXEC_LOAD_DISABLED).as_deref(),
                ),
            }),
        },
    }
}

/// Unloads the loaded kexec kernel, if any, so that a reboot is a reboot again.
pub fn unload() -> Result<(), KexecError> {
    match sys::kexec_file_unload() {
        Ok(()) => Ok(()),
        // No kexec_file_load: whatever is loaded came through kexec_load.
        Err(Errno::ENOSYS) => {
            tracing::warn!("kexec_file_load is not available; unloading with kexec-tools");
            dumper::cmd::run("kexec", ["-c", "-u"])
                .map(drop)
                .map_err(|source| KexecError::UnloadKexecTools {
                    source: Box::new(source),
                })
        }
        Err(errno) => Err(KexecError::Unload {
            errno,
            hint: match errno {
                Errno::EPERM => "upgraded needs CAP_SYS_BOOT: run it as root".to_owned(),
                Errno::EBUSY => "another kexec load or unload is in progress: try again".to_owned(),
                _ => "`dmesg` may say more".to_owned(),
            },
        }),
    }
}

/// Whether a kernel is loaded for kexec, from [`KEXEC_LOADED`].
pub fn loaded() -> Result<bool, KexecError> {
    loaded_from(Path::new(KEXEC_LOADED))
}

/// [`loaded`], reading `path` instead of [`KEXEC_LOADED`].
pub fn loaded_from(path: &Path) -> Result<bool, KexecError> {
    let mut text = String::new();
    File::open(path)
        // A sysfs attribute is a line; anything longer is not kexec_loaded.
        .and_then(|f| f.take(64).read_to_string(&mut text))
        .map_err(|source| KexecError::ReadLoaded {
            path: path.to_path_buf(),
            source,
        })?;
    match text.trim_end_matches('\n') {
        "0" => Ok(false),
        "1" => Ok(true),
        other => Err(KexecError::BadLoaded {
            path: path.to_path_buf(),
            content: other.to_owned(),
        }),
    }
}

/// Whether Debian's kexec-tools would load a kernel of its own at shutdown, from
/// `LOAD_KEXEC` in `path` (normally [`KEXEC_DEFAULTS`]); `None` when the file does
/// not exist (kexec-tools is not installed, or not Debian's).
///
/// With `LOAD_KEXEC=true`, kexec-tools' kexec-load service turns a reboot into a
/// kexec of `/vmlinuz` whenever no kernel is loaded: a reboot meant to go back to the
/// known-good kernel through the boot loader would start the newest kernel instead.
///
/// The file is a shell fragment. The last plain assignment counts, as in the shell,
/// and only the exact value `true` loads (the service tests `"$LOAD_KEXEC" = "true"`).
/// A line that sets `LOAD_KEXEC` in a way that needs a shell to evaluate (`$VAR`,
/// backquotes, a command after it) is reported rather than guessed.
pub fn load_kexec_setting(path: &Path) -> Result<Option<bool>, KexecError> {
    let read_error = |source| KexecError::ReadDefaults {
        path: path.to_path_buf(),
        source,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_error(e)),
    };
    let mut bytes = Vec::new();
    // One byte more than allowed tells a file at the limit from one past it, whose
    // unread end could set LOAD_KEXEC.
    file.take(MAX_DEFAULTS_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_DEFAULTS_BYTES {
        return Err(KexecError::DefaultsTooLarge {
            path: path.to_path_buf(),
            limit: MAX_DEFAULTS_BYTES,
        });
    }
    parse_load_kexec(&String::from_utf8_lossy(&bytes))
        .map(Some)
        .map_err(|(line, reason)| KexecError::UnclearDefaults {
            path: path.to_path_buf(),
            line,
            reason,
        })
}

// --- pure parts -----------------------------------------------------------------------

/// `cmdline` as the system call takes it, or why it cannot be passed.
fn check_cmdline(kernel: &Path, cmdline: &str) -> Result<CString, KexecError> {
    let invalid = |reason: String| KexecError::InvalidCmdline {
        kernel: kernel.to_path_buf(),
        reason,
    };
    if cmdline.len() > MAX_KEXEC_CMDLINE_LEN {
        return Err(invalid(format!(
            "is {} bytes, more than the {MAX_KEXEC_CMDLINE_LEN} that kexec can pass",
            cmdline.len()
        )));
    }
    // A line break means the line did not come from target_cmdline (/proc/cmdline
    // ends in one): the new kernel's /proc/cmdline would carry it.
    if let Some(at) = cmdline.find(['\n', '\r']) {
        return Err(invalid(format!("contains a line break at byte {at}")));
    }
    CString::new(cmdline).map_err(|e| {
        invalid(format!(
            "contains a NUL byte at byte {}, which would cut it short",
            e.nul_position()
        ))
    })
}

/// Why kexec-tools can do what kexec_file_load refused with `errno`, or `None` when
/// the refusal stands (see the module docs).
fn fallback_reason(errno: Errno) -> Option<&'static str> {
    match errno {
        Errno::ENOSYS => Some("the running kernel was built without it (CONFIG_KEXEC_FILE)"),
        Errno::ENOEXEC => Some("the running kernel's loader does not recognise the image"),
        Errno::EOPNOTSUPP => Some("the running kernel's loader does not support the image type"),
        _ => None,
    }
}

/// The signature verification errors of kexec_file_load (verify_pefile_signature,
/// the PKCS#7 parser, the keyring lookup).
const SIGNATURE_ERRNOS: &[Errno] = &[
    Errno::EKEYREJECTED,
    Errno::ENOKEY,
    Errno::EBADMSG,
    Errno::ENODATA,
    Errno::ENOPKG,
    Errno::ELIBBAD,
    Errno::EMSGSIZE,
];

/// What a refusal means and what to do. `lockdown` and `load_disabled` are the
/// contents of [`LOCKDOWN`] and [`KEXEC_LOAD_DISABLED`], when readable: EPERM has
/// three causes and only they tell them apart.
fn refused_hint(errno: Errno, lockdown: Option<&str>, load_disabled: Option<&str>) -> String {
    if SIGNATURE_ERRNOS.contains(&errno) {
        return "the running kernel enforces signatures on kexec images and did not accept \
                this one's: use a kernel signed with a key the running kernel trusts (the \
                distribution's kernels are); upgraded does not get around the check with \
                kexec_load"
            .to_owned();
    }
    match errno {
        Errno::EPERM => {
            // "none [integrity] confidentiality": the bracketed word is the mode.
            let mode = lockdown.and_then(|l| {
                let start = l.find('[')? + 1;
                let len = l[start..].find(']')?;
                Some(&l[start..start + len])
            });
            if let Some(mode) = mode.filter(|m| *m != "none") {
                format!(
                    "the running kernel is locked down ({mode}) and loads only kernels \
                     signed with a key it trusts; use a signed kernel (the distribution's \
                     are). kexec_load is refused under lockdown, so kexec-tools cannot help"
                )
            } else if load_disabled.map(str::trim) == Some("1") {
                "kernel.kexec_load_disabled is 1: kexec stays disabled until the next boot \
                 (the setting cannot be undone); reboot, and do not set it where upgraded is \
                 used"
                    .to_owned()
            } else {
                "loading a kernel needs CAP_SYS_BOOT: run upgraded as root, outside a sandbox \
                 that drops the capability"
                    .to_owned()
            }
        }
        Errno::EBUSY => {
            "another kexec load or unload is in progress: try again when it is done".to_owned()
        }
        Errno::ENOMEM => "not enough memory to stage the kernel and its initramfs: free memory \
                          and try again"
            .to_owned(),
        Errno::EFBIG => "the kernel image or the initramfs is too large to load".to_owned(),
        Errno::EINVAL => "the kernel did not accept the image or the command line: check that \
                          it is a bootable kernel image for this architecture; `dmesg` says why"
            .to_owned(),
        _ => "`dmesg` may say more".to_owned(),
    }
}

/// `kexec -c -l` arguments for `req`: `-c` makes kexec-tools use kexec_load, as the
/// file-based call is what just failed.
fn kexec_tools_args(req: &LoadRequest) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["-c".into(), "-l".into(), req.kernel.into()];
    if let Some(initrd) = req.initrd {
        let mut arg = OsString::from("--initrd=");
        arg.push(initrd);
        args.push(arg);
    }
    args.push(format!("--command-line={}", req.cmdline).into());
    args
}

/// The value `LOAD_KEXEC` ends up with in the shell fragment `text`, as "loads a
/// kernel": `Err((line, reason))` when that cannot be told without a shell.
fn parse_load_kexec(text: &str) -> Result<bool, (usize, String)> {
    const NAME: &str = "LOAD_KEXEC";
    let mut value = None;
    // Split at '\n' only: the shell keeps a '\r' before it as part of the value.
    for (index, line) in text.split('\n').enumerate() {
        let number = index + 1;
        let line = line.trim_start_matches([' ', '\t']);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let statement = line
            .strip_prefix("export")
            .filter(|rest| rest.starts_with([' ', '\t']))
            .map_or(line, |rest| rest.trim_start_matches([' ', '\t']));
        let Some(word) = statement
            .strip_prefix(NAME)
            .and_then(|rest| rest.strip_prefix('='))
        else {
            if mentions(line, NAME) {
                return Err((
                    number,
                    format!("{NAME} appears in a statement that is not a plain assignment"),
                ));
            }
            continue;
        };
        let (word, rest) = shell_word(word).map_err(|reason| (number, reason))?;
        let rest = rest.trim_start_matches([' ', '\t']);
        let rest = rest
            .strip_prefix(';')
            .map_or(rest, |r| r.trim_start_matches([' ', '\t']));
        if !(rest.is_empty() || rest.starts_with('#')) {
            // `LOAD_KEXEC=true cmd` sets it for `cmd` only; anything else is a shell's job.
            return Err((
                number,
                "more follows the assignment on the same line".to_owned(),
            ));
        }
        value = Some(word);
    }
    Ok(value.as_deref() == Some("true"))
}

/// Whether `line` has `name` as a whole word (`LOAD_KEXEC_OLD` is another variable).
fn mentions(line: &str, name: &str) -> bool {
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    line.match_indices(name).any(|(at, _)| {
        !line[..at].ends_with(is_name_char) && !line[at + name.len()..].starts_with(is_name_char)
    })
}

/// The first shell word of `s` with its quotes removed, and what follows it; an error
/// if its value depends on expansion or it is not closed on this line.
fn shell_word(s: &str) -> Result<(String, &str), String> {
    let expansion = || "its value needs shell expansion ($ or `)".to_owned();
    let mut word = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            ' ' | '\t' | ';' | '&' | '|' | '<' | '>' | '(' | ')' => return Ok((word, &s[i..])),
            '$' | '`' => return Err(expansion()),
            '\'' => loop {
                match chars.next() {
                    Some((_, '\'')) => break,
                    Some((_, c)) => word.push(c),
                    None => return Err("a single quote is not closed on this line".to_owned()),
                }
            },
            '"' => loop {
                match chars.next() {
                    Some((_, '"')) => break,
                    Some((_, '$' | '`')) => return Err(expansion()),
                    Some((_, '\\')) => match chars.next() {
                        Some((_, c @ ('$' | '`' | '"' | '\\'))) => word.push(c),
                        Some((_, c)) => {
                            word.push('\\');
                            word.push(c);
                        }
                        None => return Err("a double quote is not closed on this line".to_owned()),
                    },
                    Some((_, c)) => word.push(c),
                    None => return Err("a double quote is not closed on this line".to_owned()),
                }
            },
            '\\' => match chars.next() {
                Some((_, c)) => word.push(c),
                None => return Err("the line is continued on the next one".to_owned()),
            },
            c => word.push(c),
        }
    }
    Ok((word, ""))
}

/// Opens `path` read-only; std opens with O_CLOEXEC, so kexec-tools and other
/// children started meanwhile do not inherit the image.
fn open(path: &Path, what: &'static str) -> Result<File, KexecError> {
    File::open(path).map_err(|source| KexecError::Open {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// A small kernel-provided file, for explaining an error; `None` if it cannot be read.
fn read_small(path: &str) -> Option<String> {
    let mut text = String::new();
    File::open(path)
        .and_then(|f| f.take(4096).read_to_string(&mut text))
        .ok()?;
    Some(text)
}

fn load_with_kexec_tools(req: &LoadRequest, why: String) -> Result<Method, KexecError> {
    tracing::warn!(
        kernel = ?req.kernel,
        reason = %why,
        "loading the kernel with kexec-tools (kexec_load) instead of kexec_file_load"
    );
    dumper::cmd::run("kexec", kexec_tools_args(req)).map_err(|source| KexecError::KexecTools {
        kernel: req.kernel.to_path_buf(),
        why,
        source: Box::new(source),
    })?;
    Ok(Method::KexecTools)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KERNEL: &str = "/boot/vmlinuz-6.1.0-50-amd64";

    fn cmdline_error(cmdline: &str) -> String {
        match check_cmdline(Path::new(KERNEL), cmdline) {
            Err(e @ KexecError::InvalidCmdline { .. }) => e.to_string(),
            other => panic!("{cmdline:?}: {other:?}"),
        }
    }

    #[test]
    fn cmdline_passes_with_its_nul() {
        let c = check_cmdline(
            Path::new(KERNEL),
            "root=/dev/vda1 ro upgraded.generation=g1",
        )
        .unwrap();
        assert_eq!(c.as_bytes_with_nul().last(), Some(&0));
        assert_eq!(c.as_bytes().len(), 40);
        assert!(check_cmdline(Path::new(KERNEL), "").is_ok());
    }

    #[test]
    fn cmdline_length_limit_is_kexecs() {
        let longest = "x".repeat(MAX_KEXEC_CMDLINE_LEN);
        assert!(check_cmdline(Path::new(KERNEL), &longest).is_ok());
        let msg = cmdline_error(&format!("{longest}y"));
        assert!(msg.contains("2047 bytes, more than the 2046"), "{msg}");
        assert!(msg.contains(KERNEL), "{msg}");
        assert!(msg.contains("kernel.extra_cmdline"), "{msg}");
    }

    #[test]
    fn cmdline_refuses_nul_and_line_breaks() {
        assert!(cmdline_error("ro\0quiet").contains("NUL byte at byte 2"));
        assert!(cmdline_error("ro quiet\n").contains("line break at byte 8"));
        assert!(cmdline_error("ro\rquiet").contains("line break at byte 2"));
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn file_load_limit_keeps_room_for_elfcorehdr() {
        // 2047 - NUL - strlen("elfcorehdr=0x<16 hex digits> ") rounded as the kernel does.
        assert_eq!(FILE_LOAD_MAX_CMDLINE_LEN, 2016);
    }

    #[test]
    fn only_impossible_paths_fall_back() {
        for errno in [Errno::ENOSYS, Errno::ENOEXEC, Errno::EOPNOTSUPP] {
            assert!(fallback_reason(errno).is_some(), "{errno}");
        }
        for errno in SIGNATURE_ERRNOS.iter().copied().chain([
            Errno::EPERM,
            Errno::EBUSY,
            Errno::ENOMEM,
            Errno::EINVAL,
            Errno::EFBIG,
            Errno::EBADF,
        ]) {
            assert!(fallback_reason(errno).is_none(), "{errno}");
        }
    }

    #[test]
    fn eperm_hint_tells_the_causes_apart() {
        let locked = refused_hint(
            Errno::EPERM,
            Some("none [integrity] confidentiality\n"),
            Some("0\n"),
        );
        assert!(locked.contains("locked down (integrity)"), "{locked}");
        let disabled = refused_hint(
            Errno::EPERM,
            Some("[none] integrity confidentiality\n"),
            Some("1\n"),
        );
        assert!(disabled.contains("kexec_load_disabled is 1"), "{disabled}");
        let plain = refused_hint(Errno::EPERM, None, None);
        assert!(plain.contains("CAP_SYS_BOOT"), "{plain}");
        let garbled = refused_hint(Errno::EPERM, Some("[integrity"), Some("0"));
        assert!(garbled.contains("CAP_SYS_BOOT"), "{garbled}");
    }

    #[test]
    fn refusals_name_file_errno_and_remedy() {
        let sig = refused_hint(Errno::EKEYREJECTED, None, None);
        assert!(sig.contains("signed with a key"), "{sig}");
        let err = KexecError::Refused {
            kernel: KERNEL.into(),
            errno: Errno::EBUSY,
            hint: refused_hint(Errno::EBUSY, None, None),
        };
        let msg = err.to_string();
        assert!(msg.contains(KERNEL), "{msg}");
        assert!(msg.contains("EBUSY"), "{msg}");
        assert!(msg.contains("try again"), "{msg}");
    }

    #[test]
    fn kexec_tools_arguments() {
        let req = LoadRequest {
            kernel: Path::new(KERNEL),
            initrd: Some(Path::new("/boot/initrd.img-6.1.0-50-amd64")),
            cmdline: "root=/dev/vda1 foo=\"a b\" ro",
        };
        assert_eq!(
            kexec_tools_args(&req),
            [
                "-c",
                "-l",
                KERNEL,
                "--initrd=/boot/initrd.img-6.1.0-50-amd64",
                "--command-line=root=/dev/vda1 foo=\"a b\" ro",
            ]
        );
        let bare = LoadRequest {
            initrd: None,
            ..req
        };
        assert!(!kexec_tools_args(&bare)
            .iter()
            .any(|a| a.to_string_lossy().starts_with("--initrd")));
    }

    #[test]
    fn relative_paths_are_refused_before_anything_runs() {
        for (kernel, initrd) in [("vmlinuz", None), (KERNEL, Some("-initrd"))] {
            let err = load(&LoadRequest {
                kernel: Path::new(kernel),
                initrd: initrd.map(Path::new),
                cmdline: "ro",
            })
            .unwrap_err();
            assert!(matches!(err, KexecError::RelativePath { .. }), "{err}");
        }
    }

    #[test]
    fn a_missing_image_is_named() {
        let err = load(&LoadRequest {
            kernel: Path::new("/nonexistent/vmlinuz-6.1.0-50-amd64"),
            initrd: None,
            cmdline: "ro",
        })
        .unwrap_err();
        assert!(matches!(err, KexecError::Open { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("/nonexistent/vmlinuz-6.1.0-50-amd64"),
            "{err}"
        );
    }

    #[test]
    fn methods_display() {
        assert_eq!(Method::FileLoad.to_string(), "kexec_file_load");
        assert_eq!(Method::KexecTools.to_string(), "kexec-tools (kexec_load)");
    }

    // --- /sys/kernel/kexec_loaded -----------------------------------------------------

    #[test]
    fn loaded_reads_zero_and_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kexec_loaded");
        std::fs::write(&path, "0\n").unwrap();
        assert!(!loaded_from(&path).unwrap());
        std::fs::write(&path, "1\n").unwrap();
        assert!(loaded_from(&path).unwrap());
        std::fs::write(&path, "1").unwrap();
        assert!(loaded_from(&path).unwrap());
    }

    #[test]
    fn loaded_refuses_anything_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kexec_loaded");
        for bad in ["", "2\n", "1 \n", "true\n", &"1".repeat(100)] {
            std::fs::write(&path, bad).unwrap();
            let err = loaded_from(&path).unwrap_err();
            assert!(
                matches!(err, KexecError::BadLoaded { .. }),
                "{bad:?}: {err}"
            );
        }
        let err = loaded_from(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(err, KexecError::ReadLoaded { .. }), "{err}");
        assert!(err.to_string().contains("missing"), "{err}");
    }

    // --- /etc/default/kexec -----------------------------------------------------------

    /// The file as Debian bookworm's kexec-tools installs it, with LOAD_KEXEC as asked.
    fn debian_defaults(load: &str) -> String {
        format!(
            "# Defaults for kexec initscript\n\
             # sourced by /etc/init.d/kexec and /etc/init.d/kexec-load\n\n\
             # Load a kexec kernel (true/false)\n\
             LOAD_KEXEC={load}\n\n\
             # Kernel and initrd image\n\
             KERNEL_IMAGE=\"/vmlinuz\"\n\
             INITRD=\"/initrd.img\"\n\n\
             # If empty, use current /proc/cmdline\n\
             APPEND=\"\"\n\n\
             # Load the default kernel from grub config (true/false)\n\
             USE_GRUB_CONFIG=false\n"
        )
    }

    fn parsed(text: &str) -> bool {
        parse_load_kexec(text).unwrap_or_else(|e| panic!("{text:?}: {e:?}"))
    }

    #[test]
    fn debian_defaults_parse() {
        assert!(parsed(&debian_defaults("true")));
        assert!(!parsed(&debian_defaults("false")));
    }

    #[test]
    fn quoting_and_comments() {
        for (text, loads) in [
            ("LOAD_KEXEC=\"true\"\n", true),
            ("LOAD_KEXEC='true'\n", true),
            ("LOAD_KEXEC=tr\"u\"'e'\n", true),
            ("LOAD_KEXEC=\\true\n", true),
            ("  export LOAD_KEXEC=true # set by debconf\n", true),
            ("LOAD_KEXEC=true;\n", true),
            ("LOAD_KEXEC=true ; # x\n", true),
            ("\tLOAD_KEXEC=true\r\n", false),
            ("# LOAD_KEXEC=true\n", false),
            ("#LOAD_KEXEC=true\nLOAD_KEXEC=false\n", false),
            ("LOAD_KEXEC=true\nLOAD_KEXEC=false\n", false),
            ("LOAD_KEXEC=false\nLOAD_KEXEC=true\n", true),
            ("LOAD_KEXEC=\"true \"\n", false),
            ("LOAD_KEXEC=True\n", false),
            ("LOAD_KEXEC=yes\n", false),
            ("LOAD_KEXEC=\n", false),
            ("LOAD_KEXEC=#true\n", false),
            ("LOAD_KEXEC_OLD=true\n", false),
            ("", false),
            ("KERNEL_IMAGE=\"/vmlinuz\"\n", false),
        ] {
            assert_eq!(parsed(text), loads, "{text:?}");
        }
    }

    #[test]
    fn what_needs_a_shell_is_reported_with_its_line() {
        for (text, line, why) in [
            ("LOAD_KEXEC=$DEFAULT\n", 1, "expansion"),
            ("A=1\nLOAD_KEXEC=\"$(cat /x)\"\n", 2, "expansion"),
            ("LOAD_KEXEC=`echo true`\n", 1, "expansion"),
            ("LOAD_KEXEC='true\n", 1, "single quote"),
            ("LOAD_KEXEC=\"true\n", 1, "double quote"),
            ("LOAD_KEXEC=tru\\\ne\n", 1, "continued"),
            ("LOAD_KEXEC=true reboot\n", 1, "more follows"),
            ("LOAD_KEXEC=false && LOAD_KEXEC=true\n", 1, "more follows"),
            (
                "\n\n[ -x /sbin/kexec ] && LOAD_KEXEC=true\n",
                3,
                "not a plain assignment",
            ),
            ("readonly LOAD_KEXEC=true\n", 1, "not a plain assignment"),
        ] {
            let (at, reason) = parse_load_kexec(text).unwrap_err();
            assert_eq!(at, line, "{text:?}");
            assert!(reason.contains(why), "{text:?}: {reason}");
        }
    }

    #[test]
    fn defaults_file_missing_unreadable_or_unclear() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_kexec_setting(&dir.path().join("kexec")).unwrap(), None);
        let path = dir.path().join("kexec");
        std::fs::write(&path, debian_defaults("true")).unwrap();
        assert_eq!(load_kexec_setting(&path).unwrap(), Some(true));
        std::fs::write(&path, debian_defaults("\"false\"")).unwrap();
        assert_eq!(load_kexec_setting(&path).unwrap(), Some(false));
        std::fs::write(&path, "LOAD_KEXEC=$X\n").unwrap();
        let msg = load_kexec_setting(&path).unwrap_err().to_string();
        assert!(msg.contains(&format!("{}:1:", path.display())), "{msg}");
        assert!(msg.contains("LOAD_KEXEC=false"), "{msg}");
        std::fs::write(&path, format!("{}LOAD_KEXEC=true\n", "#\n".repeat(40_000))).unwrap();
        let err = load_kexec_setting(&path).unwrap_err();
        assert!(
            err.to_string().contains("larger than the 65536 bytes"),
            "{err}"
        );
        // A directory cannot be read as a file: an error naming it, not "absent".
        let err = load_kexec_setting(dir.path()).unwrap_err();
        assert!(matches!(err, KexecError::ReadDefaults { .. }), "{err}");
    }
}
