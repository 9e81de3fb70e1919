//! Errors of the kernel module. Each says what was wrong and what to do; values that
//! came from outside (a spec, a command line) are shown escaped and cut short.

use std::io;
use std::path::PathBuf;

/// Errors of [`crate::kernel`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    #[error("reading the boot directory {}", path.display())]
    ReadBootDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "kernel {spec} is not a valid kernel: {reason}; give a release as `uname -r` prints \
         it (e.g. 6.1.0-47-amd64) or the absolute path of a vmlinuz-<release> file"
    )]
    InvalidKernelSpec {
        /// The spec, escaped and quoted.
        spec: String,
        reason: String,
    },

    #[error(
        "{} is not a kernel image in {}: give a release (e.g. 6.1.0-47-amd64) or \
         {}/vmlinuz-<release>",
        path.display(), boot_dir.display(), boot_dir.display()
    )]
    NotInBootDir { path: PathBuf, boot_dir: PathBuf },

    #[error(
        "no kernel {release} in {} (no vmlinuz-{release} there); {}",
        boot_dir.display(),
        if available.is_empty() {
            "no kernel is installed there at all: install a kernel package first".to_string()
        } else {
            format!("installed: {}; pick one of these or install the kernel package", available.join(", "))
        }
    )]
    KernelNotInstalled {
        release: String,
        boot_dir: PathBuf,
        /// The releases found, oldest first.
        available: Vec<String>,
    },

    #[error("version {version}: {reason}")]
    InvalidVersion {
        /// The version, escaped and quoted.
        version: String,
        reason: String,
    },

    #[error(
        "generation id {id}: {reason}; generation ids are 1 to 64 letters, digits and . _ -, \
         not starting with '.'"
    )]
    InvalidGeneration {
        /// The id, escaped and quoted.
        id: String,
        reason: String,
    },

    #[error(
        "PID floor {value} is outside {min}..={max}: PIDs below {min} are never handed out \
         again once the PID counter wraps, and none is above PID_MAX_LIMIT ({max})"
    )]
    InvalidPidFloor { value: u32, min: u32, max: u32 },

    #[error(
        "extra kernel argument {arg}: {reason}; fix kernel.extra_cmdline in the configuration \
         (one argument per element)"
    )]
    InvalidExtraArg {
        /// The argument, escaped and quoted.
        arg: String,
        reason: String,
    },

    #[error(
        "memmap {value}: {reason}; it takes the form <size>!<offset> with K, M or G suffixes, \
         e.g. 512M!1G (fix area.memmap in the configuration)"
    )]
    InvalidMemmap {
        /// The value, escaped and quoted.
        value: String,
        reason: String,
    },

    #[error(
        "the current kernel command line cannot be carried over: {reason} (at {token}); \
         boot the current kernel with a corrected command line first"
    )]
    UnusableCmdline {
        /// The offending argument, escaped and quoted.
        token: String,
        reason: String,
    },

    #[error(
        "the new kernel command line would be {len} bytes, more than the {max} bytes the \
         kernel accepts; remove arguments from kernel.extra_cmdline or from the current \
         command line"
    )]
    CmdlineTooLong { len: usize, max: usize },

    #[error("reading the kernel configuration {}", path.display())]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "kernel configuration {} is {size} bytes, more than the {limit} bytes a kernel \
         configuration has; it is not one: check the file",
        path.display()
    )]
    ConfigTooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
}

/// `Result` with [`KernelError`].
pub type Result<T, E = KernelError> = std::result::Result<T, E>;

/// Values in messages are shown as in the manifest's: quoted, escaped, cut short.
pub(crate) use dumper::manifest::shown;

/// [`shown`] for bytes that may not be UTF-8 (a kernel argument split where the kernel
/// splits it).
pub(crate) fn shown_bytes(value: &[u8]) -> String {
    shown(&String::from_utf8_lossy(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_escapes_and_cuts() {
        assert_eq!(shown("a\"b\0"), r#""a\"b\0""#);
        let long = "x".repeat(10_000);
        let s = shown(&long);
        assert!(s.len() < 120, "{s}");
        assert!(s.ends_with("... (10000 bytes)"), "{s}");
    }

    #[test]
    fn not_installed_lists_what_is() {
        let err = KernelError::KernelNotInstalled {
            release: "6.9.0-1-amd64".into(),
            boot_dir: "/boot".into(),
            available: vec!["6.1.0-47-amd64".into(), "6.1.0-50-amd64".into()],
        };
        let msg = err.to_string();
        assert!(
            msg.contains("installed: 6.1.0-47-amd64, 6.1.0-50-amd64"),
            "{msg}"
        );
        let none = KernelError::KernelNotInstalled {
            release: "6.9.0-1-amd64".into(),
            boot_dir: "/boot".into(),
            available: vec![],
        };
        assert!(none.to_string().contains("install a kernel package"));
    }
}
