//! Everything about the kernels upgraded moves between, as pure logic over paths and
//! text: nothing here needs root, runs a program or loads a kernel.
//!
//! - [`installed_kernels`], [`resolve_kernel`]: the kernels in `/boot` and which one
//!   an admin means.
//! - [`target_cmdline`], [`parse_upgraded_tokens`]: the command line the target kernel
//!   boots with (generation and PID floor), and reading our arguments back from it
//!   after the kexec; [`pmem_reservations`]: the `memmap=` ranges a command line
//!   reserves as persistent memory.
//! - [`parse_kernel_config`], [`check_checkpoint_support`]: whether a kernel was built
//!   with what checkpoint, restore, kexec and the pmem area need.
//! - [`known_problems`]: kernel, CRIU and glibc versions known not to work together.
//! - [`Version`]: the ordering all of the above compare versions with.

mod boot;
mod cmdline;
mod error;
mod kconfig;
mod known_bad;
mod version;

pub use boot::{installed_kernels, is_missing_boot_dir, resolve_kernel, InstalledKernel};
pub use cmdline::{
    check_memmap, check_pid_floor, parse_upgraded_tokens, pmem_reservations, target_cmdline,
    CmdlineWarning, PmemReservation, UpgradedArgs, WarningKind, GENERATION_KEY, MAX_CMDLINE_LEN,
    MAX_PID_FLOOR, MAX_WARNINGS, MIN_PID_FLOOR, PID_FLOOR_KEY, PREFIX,
};
pub use error::{KernelError, Result};
pub use kconfig::{
    check_checkpoint_support, kernel_version, parse_kernel_config, read_kernel_config,
    ConfigProblem, ConfigValue, KernelConfig, Need, Requirement, Wanted, MAX_CONFIG_BYTES,
    REQUIREMENTS,
};
pub use known_bad::{known_problems, KnownBad, Scope, KNOWN_BAD};
pub use version::{compare_versions, Version, VersionRange, MAX_VERSION_LEN};
