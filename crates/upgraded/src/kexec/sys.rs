//! The raw kexec_file_load(2) system call: the only unsafe code of this crate. Neither
//! nix nor libc wraps it, so it goes through `libc::syscall` with the number from
//! libc.
//!
//! Only the mechanics live here; what an errno means, and what to do about it, is
//! decided in [`super`].

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

/// Loads `kernel` (and `initrd`) as the kernel the next `kexec -e` (or systemd's
/// kexec.target) boots, with `cmdline` as its command line.
///
/// `KEXEC_FILE_NO_INITRAMFS` is set exactly when there is no initrd: the kernel
/// rejects a load that has neither an initrd fd nor that flag.
pub(super) fn kexec_file_load(
    kernel: BorrowedFd<'_>,
    initrd: Option<BorrowedFd<'_>>,
    cmdline: &CStr,
) -> Result<(), Errno> {
    let (initrd_fd, flags) = match initrd {
        Some(fd) => (fd.as_raw_fd(), 0),
        None => (-1, libc::KEXEC_FILE_NO_INITRAMFS),
    };
    raw(kernel.as_raw_fd(), initrd_fd, Some(cmdline), flags)
}

/// Unloads whatever kernel is loaded, whichever system call loaded it. Unloading
/// when nothing is loaded succeeds.
pub(super) fn kexec_file_unload() -> Result<(), Errno> {
    // The kernel ignores the fds and the command line when unloading.
    raw(-1, -1, None, libc::KEXEC_FILE_UNLOAD)
}

#[cfg(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "powerpc64",
    target_arch = "loongarch64"
))]
#[allow(unsafe_code)]
fn raw(
    kernel_fd: libc::c_int,
    initrd_fd: libc::c_int,
    cmdline: Option<&CStr>,
    flags: libc::c_int,
) -> Result<(), Errno> {
    // The length counts the trailing NUL: the kernel checks that the buffer's last
    // byte is one.
    let (cmdline_ptr, cmdline_len) = match cmdline {
        Some(c) => (c.as_ptr(), c.to_bytes_with_nul().len()),
        None => (std::ptr::null(), 0),
    };
    // SAFETY: kexec_file_load takes two fds, a length, a pointer and flags, and keeps
    // none of them past the call. The fds are borrowed from open files that outlive
    // the call (or are -1, which the kernel ignores with the flags chosen above);
    // the command line is either null with a length of 0, or a `CStr` borrowed for
    // the call whose `cmdline_len` bytes (NUL included) the kernel only reads.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            kernel_fd,
            initrd_fd,
            cmdline_len as libc::c_ulong,
            cmdline_ptr,
            flags as libc::c_ulong,
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}

/// libc has no syscall number for kexec_file_load here; the caller treats ENOSYS as
/// "use kexec-tools", as on a kernel without the call.
#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "powerpc64",
    target_arch = "loongarch64"
)))]
fn raw(
    _kernel_fd: libc::c_int,
    _initrd_fd: libc::c_int,
    _cmdline: Option<&CStr>,
    _flags: libc::c_int,
) -> Result<(), Errno> {
    Err(Errno::ENOSYS)
}
