//! A kernel's build configuration (`/boot/config-<release>`), and whether the options
//! that checkpoint, restore and kexec rely on are there.
//!
//! Checking the file lets upgraded refuse a target kernel before the workloads are
//! frozen, instead of finding out after the kexec that CRIU cannot restore them.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::error::{KernelError, Result};
use super::version::{Version, VersionRange};

/// A real configuration is about 300 KB; anything far larger is not one.
pub const MAX_CONFIG_BYTES: u64 = 8 << 20;

/// The value of one option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigValue {
    /// `=y`: built into the kernel.
    Builtin,
    /// `=m`: built as a module.
    Module,
    /// `# CONFIG_X is not set`.
    NotSet,
    /// Any other value (numbers, strings with their quotes).
    Value(String),
}

impl fmt::Display for ConfigValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigValue::Builtin => f.write_str("y"),
            ConfigValue::Module => f.write_str("m"),
            ConfigValue::NotSet => f.write_str("not set"),
            ConfigValue::Value(v) => f.write_str(v),
        }
    }
}

/// A parsed kernel configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KernelConfig {
    /// By full option name, `CONFIG_` included.
    pub options: BTreeMap<String, ConfigValue>,
    /// The upstream version from the header (`# Linux/x86 6.1.170 Kernel
    /// Configuration`). Distribution releases hide it (`6.1.0-47-amd64` is 6.1.170),
    /// and the known-problem ranges are in upstream versions.
    pub version: Option<Version>,
}

impl KernelConfig {
    /// The option's value; an option missing from the file is reported as `None`
    /// (in a complete configuration that means its dependencies are not met).
    pub fn get(&self, option: &str) -> Option<&ConfigValue> {
        self.options.get(option)
    }
}

/// Parses the text of a kernel configuration. Lines that are neither an assignment
/// nor a "not set" comment are ignored, as Kconfig does; a later assignment replaces
/// an earlier one.
pub fn parse_kernel_config(text: &str) -> KernelConfig {
    let mut config = KernelConfig::default();
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim();
            if let Some(name) = comment
                .strip_suffix(" is not set")
                .filter(|n| is_option_name(n))
            {
                config.options.insert(name.to_owned(), ConfigValue::NotSet);
            } else if config.version.is_none() {
                config.version = header_version(comment);
            }
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        if !is_option_name(name) {
            continue;
        }
        let value = match value {
            "y" => ConfigValue::Builtin,
            "m" => ConfigValue::Module,
            // "=n" is not written by Kconfig, but hand-made fragments use it.
            "n" => ConfigValue::NotSet,
            other => ConfigValue::Value(other.to_owned()),
        };
        config.options.insert(name.to_owned(), value);
    }
    config
}

fn is_option_name(name: &str) -> bool {
    name.strip_prefix("CONFIG_").is_some_and(|rest| {
        !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// The version in `Linux/<arch> <version> Kernel Configuration`.
fn header_version(comment: &str) -> Option<Version> {
    let rest = comment.strip_prefix("Linux/")?;
    let rest = rest.strip_suffix("Kernel Configuration")?.trim_end();
    let (_arch, version) = rest.split_once(' ')?;
    Version::parse(version.trim()).ok()
}

/// Reads and parses the configuration at `path`.
pub fn read_kernel_config(path: &Path) -> Result<KernelConfig> {
    let read_error = |source| KernelError::ReadConfig {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    // One byte more than allowed tells a file at the limit from one past it.
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        let size = std::fs::metadata(path).map_or(bytes.len() as u64, |m| m.len());
        return Err(KernelError::ConfigTooLarge {
            path: path.to_path_buf(),
            size,
            limit: MAX_CONFIG_BYTES,
        });
    }
    // Configurations are ASCII but for the compiler's name; a stray byte there must
    // not make the options unreadable.
    Ok(parse_kernel_config(&String::from_utf8_lossy(&bytes)))
}

/// The upstream version of a kernel: from its configuration's header when there is
/// one, else the release itself (right for vanilla kernels, where they are the same).
pub fn kernel_version(release: &str, config: Option<&KernelConfig>) -> Result<Version> {
    match config.and_then(|c| c.version.clone()) {
        Some(version) => Ok(version),
        None => Version::parse(release),
    }
}

// --- requirements ---------------------------------------------------------------------------

/// What the caller is about to rely on a kernel for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Need {
    /// Dumping and restoring with CRIU: both kernels need it.
    Checkpoint,
    /// Pre-dumps (`pre_dump > 0`) and memory tracking between them.
    PreDump,
    /// Loading and starting another kernel: the running one needs it to go to the
    /// target, the target needs it to come back or go further.
    Kexec,
    /// A persistent-memory area reserved with `memmap=` (area.kind = "pmem").
    PmemArea,
}

impl Need {
    pub fn as_str(self) -> &'static str {
        match self {
            Need::Checkpoint => "checkpoint/restore",
            Need::PreDump => "pre-dump",
            Need::Kexec => "kexec",
            Need::PmemArea => "the pmem area",
        }
    }
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an option must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// `=y`.
    Builtin,
    /// `=y` or `=m` (a module is loaded on demand, e.g. by CRIU's socket probing).
    BuiltinOrModule,
}

impl Wanted {
    fn accepts(self, value: Option<&ConfigValue>) -> bool {
        match self {
            Wanted::Builtin => value == Some(&ConfigValue::Builtin),
            Wanted::BuiltinOrModule => {
                matches!(value, Some(ConfigValue::Builtin | ConfigValue::Module))
            }
        }
    }
}

impl fmt::Display for Wanted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Wanted::Builtin => "y",
            Wanted::BuiltinOrModule => "y or m",
        })
    }
}

/// One requirement: any of `options` as `wanted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requirement {
    pub need: Need,
    /// Alternatives: one of them suffices.
    pub options: &'static [&'static str],
    pub wanted: Wanted,
    pub why: &'static str,
}

/// What each [`Need`] requires.
pub const REQUIREMENTS: &[Requirement] = &[
    Requirement {
        need: Need::Checkpoint,
        options: &["CONFIG_CHECKPOINT_RESTORE"],
        wanted: Wanted::Builtin,
        why: "CRIU needs the kernel's checkpoint/restore interfaces (prctl(PR_SET_MM_MAP), \
              kcmp, /proc/PID/map_files, ns_last_pid) to dump and restore anything",
    },
    Requirement {
        need: Need::Checkpoint,
        options: &["CONFIG_NAMESPACES"],
        wanted: Wanted::Builtin,
        why: "CRIU restores process trees into namespaces, and containers have their own",
    },
    Requirement {
        need: Need::Checkpoint,
        options: &["CONFIG_PID_NS"],
        wanted: Wanted::Builtin,
        why: "workloads in PID namespaces (containers, nspawn) cannot be dumped or \
              restored without it",
    },
    Requirement {
        need: Need::Checkpoint,
        options: &["CONFIG_TIME_NS"],
        wanted: Wanted::Builtin,
        why: "CLOCK_MONOTONIC restarts near zero after kexec; CRIU restores into a time \
              namespace whose offsets continue the dumped clocks, without which timers \
              and timeouts of restored processes jump",
    },
    Requirement {
        need: Need::Checkpoint,
        options: &["CONFIG_CGROUPS"],
        wanted: Wanted::Builtin,
        why: "upgraded freezes workloads with the cgroup v2 freezer (built in with cgroups \
              since Linux 5.2) and CRIU restores processes into their cgroups",
    },
    Requirement {
        need: Need::Checkpoint,
        options: &["CONFIG_UNIX_DIAG"],
        wanted: Wanted::BuiltinOrModule,
        why: "CRIU reads unix sockets through sock_diag; without it, no process with a \
              unix socket (nearly all of them) can be dumped",
    },
    Requirement {
        need: Need::Checkpoint,
        options: &["CONFIG_INET_DIAG"],
        wanted: Wanted::BuiltinOrModule,
        why: "CRIU reads TCP and UDP sockets through sock_diag; without it, processes with \
              network sockets cannot be dumped",
    },
    Requirement {
        need: Need::Checkpoint,
        options: &["CONFIG_PACKET_DIAG"],
        wanted: Wanted::BuiltinOrModule,
        why: "CRIU reads packet sockets through sock_diag (DHCP clients, tcpdump-like tools)",
    },
    Requirement {
        need: Need::Checkpoint,
        options: &["CONFIG_NETLINK_DIAG"],
        wanted: Wanted::BuiltinOrModule,
        why: "CRIU reads netlink sockets through sock_diag (udev, systemd and network \
              daemons hold them)",
    },
    Requirement {
        need: Need::PreDump,
        options: &["CONFIG_MEM_SOFT_DIRTY"],
        wanted: Wanted::Builtin,
        why: "pre-dumps find the pages written since the previous one through soft-dirty \
              bits; without it every dump copies all memory (set pre_dump = 0)",
    },
    Requirement {
        need: Need::Kexec,
        options: &["CONFIG_KEXEC_FILE", "CONFIG_KEXEC"],
        wanted: Wanted::Builtin,
        why: "kexec_file_load or kexec_load loads the next kernel; without either, \
              upgraded cannot leave this kernel without a full reboot",
    },
    Requirement {
        need: Need::PmemArea,
        options: &["CONFIG_X86_PMEM_LEGACY"],
        wanted: Wanted::BuiltinOrModule,
        why: "memmap=<size>!<offset> RAM becomes a pmem region only through the legacy \
              e820 pmem driver (module nd_e820); as a module it must be in the initramfs",
    },
    Requirement {
        need: Need::PmemArea,
        options: &["CONFIG_BLK_DEV_PMEM"],
        wanted: Wanted::BuiltinOrModule,
        why: "/dev/pmem0, which holds the images across kexec, is made by the pmem block \
              driver (module nd_pmem); as a module it must be in the initramfs",
    },
];

/// The first kernel with the cgroup v2 freezer, which upgraded freezes workloads with.
const CGROUP2_FREEZER_SINCE: &str = "5.2";

/// A requirement the configuration does not meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub need: Need,
    /// The option, or the alternatives (`CONFIG_KEXEC_FILE or CONFIG_KEXEC`).
    pub option: String,
    /// What the configuration says, e.g. `not set`, `m`, `absent`.
    pub found: String,
    /// What the option must be, e.g. `y`.
    pub wanted: String,
    pub why: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is {}, {} needs {}: {}",
            self.option, self.found, self.need, self.wanted, self.why
        )
    }
}

/// The requirements of `needs` that `cfg` does not meet, in table order.
pub fn check_checkpoint_support(cfg: &KernelConfig, needs: &[Need]) -> Vec<ConfigProblem> {
    let mut problems: Vec<ConfigProblem> = REQUIREMENTS
        .iter()
        .filter(|r| needs.contains(&r.need))
        .filter(|r| !r.options.iter().any(|o| r.wanted.accepts(cfg.get(o))))
        .map(|r| ConfigProblem {
            need: r.need,
            option: r.options.join(" or "),
            found: r
                .options
                .iter()
                .map(|o| {
                    let value = cfg.get(o).map_or("absent".to_string(), |v| v.to_string());
                    if r.options.len() == 1 {
                        value
                    } else {
                        format!("{o}={value}")
                    }
                })
                .collect::<Vec<_>>()
                .join(", "),
            wanted: r.wanted.to_string(),
            why: r.why.to_owned(),
        })
        .collect();

    // CONFIG_CGROUPS alone is not enough on kernels older than the cgroup v2 freezer.
    if needs.contains(&Need::Checkpoint) {
        if let Some(version) = &cfg.version {
            if VersionRange::before(CGROUP2_FREEZER_SINCE).contains(version) {
                problems.push(ConfigProblem {
                    need: Need::Checkpoint,
                    option: "Linux version".into(),
                    found: version.to_string(),
                    wanted: format!(">= {CGROUP2_FREEZER_SINCE}"),
                    why: "the cgroup v2 freezer, which upgraded freezes workloads with, \
                          arrived in Linux 5.2"
                        .into(),
                });
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[Need] = &[Need::Checkpoint, Need::PreDump, Need::Kexec, Need::PmemArea];

    #[test]
    fn parses_values_comments_and_header() {
        let cfg = parse_kernel_config(
            "#\n# Automatically generated file; DO NOT EDIT.\n\
             # Linux/x86 6.1.170 Kernel Configuration\n#\n\
             CONFIG_CC_VERSION_TEXT=\"gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0\"\n\
             CONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_D=0x1000\n\
             CONFIG_E=\"\"\nCONFIG_F=n\n\n\
             # comment mentioning CONFIG_G is not set here either\n\
             NOT_CONFIG=y\nCONFIG_=y\nCONFIG_BAD-NAME=y\nCONFIG_A=m\r\n",
        );
        assert_eq!(cfg.version.as_ref().map(Version::as_str), Some("6.1.170"));
        assert_eq!(
            cfg.get("CONFIG_A"),
            Some(&ConfigValue::Module),
            "later wins"
        );
        assert_eq!(cfg.get("CONFIG_B"), Some(&ConfigValue::Module));
        assert_eq!(cfg.get("CONFIG_C"), Some(&ConfigValue::NotSet));
        assert_eq!(
            cfg.get("CONFIG_D"),
            Some(&ConfigValue::Value("0x1000".into()))
        );
        assert_eq!(
            cfg.get("CONFIG_E"),
            Some(&ConfigValue::Value("\"\"".into()))
        );
        assert_eq!(cfg.get("CONFIG_F"), Some(&ConfigValue::NotSet));
        assert_eq!(cfg.get("CONFIG_G"), None);
        assert_eq!(cfg.get("CONFIG_"), None);
        assert_eq!(cfg.get("CONFIG_BAD-NAME"), None);
        assert!(cfg.get("NOT_CONFIG").is_none());
        assert!(matches!(
            cfg.get("CONFIG_CC_VERSION_TEXT"),
            Some(ConfigValue::Value(v)) if v.contains("gcc-12")
        ));
    }

    #[test]
    fn header_versions_of_other_architectures() {
        for (header, version) in [
            (
                "# Linux/x86 6.12.111 Kernel Configuration",
                Some("6.12.111"),
            ),
            (
                "# Linux/arm64 6.1.0-rc3 Kernel Configuration",
                Some("6.1.0-rc3"),
            ),
            ("# Linux/x86_64 4.19.0 Kernel Configuration", Some("4.19.0")),
            ("# Linux/x86 Kernel Configuration", None),
            ("# Linux kernel 6.1", None),
        ] {
            let cfg = parse_kernel_config(header);
            assert_eq!(
                cfg.version.as_ref().map(Version::as_str),
                version,
                "{header}"
            );
        }
    }

    #[test]
    fn empty_config_misses_everything() {
        let problems = check_checkpoint_support(&KernelConfig::default(), ALL);
        assert_eq!(problems.len(), REQUIREMENTS.len());
        assert!(problems.iter().all(|p| p.found.contains("absent")));
        let kexec = problems.iter().find(|p| p.need == Need::Kexec).unwrap();
        assert_eq!(kexec.option, "CONFIG_KEXEC_FILE or CONFIG_KEXEC");
        assert_eq!(kexec.found, "CONFIG_KEXEC_FILE=absent, CONFIG_KEXEC=absent");
    }

    #[test]
    fn only_the_asked_needs_are_checked() {
        let cfg = KernelConfig::default();
        let problems = check_checkpoint_support(&cfg, &[Need::PreDump]);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].option, "CONFIG_MEM_SOFT_DIRTY");
        assert!(check_checkpoint_support(&cfg, &[]).is_empty());
    }

    #[test]
    fn modules_count_only_where_allowed() {
        let mut text = String::new();
        for r in REQUIREMENTS {
            for o in r.options {
                text.push_str(&format!("{o}=m\n"));
            }
        }
        let problems = check_checkpoint_support(&parse_kernel_config(&text), ALL);
        let options: Vec<&str> = problems.iter().map(|p| p.option.as_str()).collect();
        assert_eq!(
            options,
            [
                "CONFIG_CHECKPOINT_RESTORE",
                "CONFIG_NAMESPACES",
                "CONFIG_PID_NS",
                "CONFIG_TIME_NS",
                "CONFIG_CGROUPS",
                "CONFIG_MEM_SOFT_DIRTY",
                "CONFIG_KEXEC_FILE or CONFIG_KEXEC",
            ]
        );
        assert!(problems.iter().all(|p| p.wanted == "y"));
    }

    #[test]
    fn one_kexec_interface_is_enough() {
        for text in [
            "CONFIG_KEXEC=y\n",
            "CONFIG_KEXEC_FILE=y\n# CONFIG_KEXEC is not set\n",
        ] {
            let problems = check_checkpoint_support(&parse_kernel_config(text), &[Need::Kexec]);
            assert!(problems.is_empty(), "{text}: {problems:?}");
        }
    }

    #[test]
    fn problems_say_what_and_why() {
        let cfg = parse_kernel_config("# CONFIG_TIME_NS is not set\n");
        let problems = check_checkpoint_support(&cfg, &[Need::Checkpoint]);
        let time_ns = problems
            .iter()
            .find(|p| p.option == "CONFIG_TIME_NS")
            .unwrap();
        let msg = time_ns.to_string();
        assert!(
            msg.starts_with("CONFIG_TIME_NS is not set, checkpoint/restore needs y: "),
            "{msg}"
        );
        assert!(msg.contains("time namespace"), "{msg}");
    }

    #[test]
    fn old_kernels_lack_the_cgroup2_freezer() {
        let cfg =
            parse_kernel_config("# Linux/x86 4.19.0 Kernel Configuration\nCONFIG_CGROUPS=y\n");
        let problems = check_checkpoint_support(&cfg, &[Need::Checkpoint]);
        assert!(
            problems
                .iter()
                .any(|p| p.option == "Linux version" && p.found == "4.19.0"),
            "{problems:?}"
        );
        let new = parse_kernel_config("# Linux/x86 5.2.0 Kernel Configuration\nCONFIG_CGROUPS=y\n");
        assert!(!check_checkpoint_support(&new, &[Need::Checkpoint])
            .iter()
            .any(|p| p.option == "Linux version"));
    }

    #[test]
    fn kernel_version_prefers_the_header() {
        let cfg = parse_kernel_config("# Linux/x86 6.1.170 Kernel Configuration\n");
        assert_eq!(
            kernel_version("6.1.0-47-amd64", Some(&cfg))
                .unwrap()
                .as_str(),
            "6.1.170"
        );
        assert_eq!(
            kernel_version("6.1.0-47-amd64", None).unwrap().as_str(),
            "6.1.0-47-amd64"
        );
        assert!(kernel_version("garbage", Some(&KernelConfig::default())).is_err());
    }

    #[test]
    fn reading_is_capped_and_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config-6.1.0-47-amd64");
        std::fs::write(&path, "CONFIG_KEXEC=y\n\u{0}\u{ff}garbage\n").unwrap();
        assert_eq!(
            read_kernel_config(&path).unwrap().get("CONFIG_KEXEC"),
            Some(&ConfigValue::Builtin)
        );
        let big = dir.path().join("big");
        let f = File::create(&big).unwrap();
        f.set_len(MAX_CONFIG_BYTES + 1).unwrap();
        let err = read_kernel_config(&big).unwrap_err();
        assert!(matches!(err, KernelError::ConfigTooLarge { .. }), "{err}");
        let err = read_kernel_config(&dir.path().join("missing")).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
