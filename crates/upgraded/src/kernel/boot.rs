//! The kernels installed in a boot directory, and which one an admin means.
//!
//! A kernel is a `vmlinuz-<release>` file. Its initramfs is `initrd.img-<release>`
//! (Debian's initramfs-tools, and dracut as Debian configures it) or
//! `initramfs-<release>.img` (dracut's own naming, Fedora); its configuration is
//! `config-<release>`. Both are optional here: whether a kernel without them can be
//! used is the caller's decision.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use super::error::{shown, KernelError, Result};
use super::version::{version_problem, Version};

/// A kernel found in the boot directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledKernel {
    /// As `uname -r` will print it once booted, e.g. `6.1.0-47-amd64`.
    pub release: String,
    /// `<boot>/vmlinuz-<release>`.
    pub image: PathBuf,
    /// `<boot>/initrd.img-<release>` or `<boot>/initramfs-<release>.img`.
    pub initrd: Option<PathBuf>,
    /// `<boot>/config-<release>`.
    pub config: Option<PathBuf>,
}

impl InstalledKernel {
    /// The release as a [`Version`], for ordering.
    pub fn version(&self) -> Result<Version> {
        Version::parse(&self.release)
    }
}

const IMAGE_PREFIX: &str = "vmlinuz-";

/// Names that look like `vmlinuz-<release>` but are backups, package manager temporary
/// files or signatures, not kernels to boot.
const NOT_A_KERNEL_SUFFIXES: &[&str] = &[
    ".old",
    ".bak",
    ".dpkg-tmp",
    ".dpkg-new",
    ".dpkg-old",
    ".dpkg-bak",
    ".dpkg-dist",
    ".efi.signed",
    ".sig",
    ".hmac",
];

/// The kernels in `boot_dir`, oldest first. Files that are not kernels (backups,
/// signatures, names that are not kernel releases, directories) are skipped.
pub fn installed_kernels(boot_dir: &Path) -> Result<Vec<InstalledKernel>> {
    let read_error = |source| KernelError::ReadBootDir {
        path: boot_dir.to_path_buf(),
        source,
    };
    let mut found = Vec::new();
    for entry in fs::read_dir(boot_dir).map_err(read_error)? {
        let entry = entry.map_err(read_error)?;
        let name = entry.file_name();
        // Kernel releases are ASCII: a name that is not UTF-8 is not a kernel.
        let Some(release) = name.to_str().and_then(|n| n.strip_prefix(IMAGE_PREFIX)) else {
            continue;
        };
        if NOT_A_KERNEL_SUFFIXES.iter().any(|s| release.ends_with(s)) {
            continue;
        }
        let version = match Version::parse(release) {
            Ok(version) => version,
            Err(reason) => {
                tracing::debug!(path = ?entry.path(), %reason, "skipping: not a kernel release");
                continue;
            }
        };
        let image = entry.path();
        // Follows symlinks: a vmlinuz-<release> that links to the image is fine, one
        // that dangles is not a kernel.
        if !is_file(&image) {
            tracing::debug!(path = ?image, "skipping: not a regular file");
            continue;
        }
        found.push((version, kernel_at(boot_dir, release, image)));
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found.into_iter().map(|(_, k)| k).collect())
}

fn kernel_at(boot_dir: &Path, release: &str, image: PathBuf) -> InstalledKernel {
    let initrd = [
        format!("initrd.img-{release}"),
        format!("initramfs-{release}.img"),
    ]
    .into_iter()
    .map(|name| boot_dir.join(name))
    .find(|p| is_file(p));
    let config = Some(boot_dir.join(format!("config-{release}"))).filter(|p| is_file(p));
    InstalledKernel {
        release: release.to_owned(),
        image,
        initrd,
        config,
    }
}

fn is_file(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file())
}

/// Why `release` cannot be a kernel release, or `None`. The characters are those of
/// `uname -r` strings and of the manifest's kernel_release, and a release starts with
/// the kernel's version number.
pub(crate) fn release_problem(release: &str) -> Option<String> {
    version_problem(release)
}

/// The installed kernel that `spec` names: a release (`6.1.0-47-amd64`) or the
/// absolute path of its image in `boot_dir` (`/boot/vmlinuz-6.1.0-47-amd64`).
///
/// Specs come from the command line and the configuration, so anything that could
/// reach outside `boot_dir` is refused before the file system is looked at: relative
/// paths, `..`, NUL, whitespace and control characters.
pub fn resolve_kernel(boot_dir: &Path, spec: &str) -> Result<InstalledKernel> {
    let refuse = |reason: &str| KernelError::InvalidKernelSpec {
        spec: shown(spec),
        reason: reason.to_owned(),
    };
    if spec.is_empty() {
        return Err(refuse("it is empty"));
    }
    if spec.contains('\0') {
        return Err(refuse("it contains a NUL byte"));
    }
    if spec.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(refuse("it contains whitespace or control characters"));
    }
    if spec.contains("..") {
        return Err(refuse("it contains \"..\""));
    }
    let release = if spec.contains('/') {
        let path = Path::new(spec);
        if !path.is_absolute() {
            return Err(refuse(
                "it contains '/' but is not an absolute path; paths must start with '/'",
            ));
        }
        release_of_image_path(boot_dir, path)?
    } else {
        spec
    };
    if let Some(reason) = release_problem(release) {
        return Err(refuse(&format!(
            "{} is not a kernel release: {reason}",
            shown(release)
        )));
    }

    let kernels = installed_kernels(boot_dir)?;
    let available: Vec<String> = kernels.iter().map(|k| k.release.clone()).collect();
    kernels
        .into_iter()
        .find(|k| k.release == release)
        .ok_or_else(|| KernelError::KernelNotInstalled {
            release: release.to_owned(),
            boot_dir: boot_dir.to_path_buf(),
            available,
        })
}

/// The release in `<boot_dir>/vmlinuz-<release>`. The comparison is by path
/// components, so `/boot/` and `/boot//vmlinuz-x` match `/boot`; symlinks are not
/// resolved, so a path through another directory is refused even if it leads here.
fn release_of_image_path<'a>(boot_dir: &Path, path: &'a Path) -> Result<&'a str> {
    let not_here = || KernelError::NotInBootDir {
        path: path.to_path_buf(),
        boot_dir: boot_dir.to_path_buf(),
    };
    let parent_matches = path
        .parent()
        .is_some_and(|parent| normal_components(parent) == normal_components(boot_dir));
    if !parent_matches {
        return Err(not_here());
    }
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix(IMAGE_PREFIX))
        .filter(|release| !release.is_empty())
        .ok_or_else(not_here)
}

fn normal_components(p: &Path) -> Vec<Component<'_>> {
    p.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

/// Whether `err` says the boot directory does not exist (for callers that treat a
/// missing `/boot` as "no kernels").
pub fn is_missing_boot_dir(err: &KernelError) -> bool {
    matches!(err, KernelError::ReadBootDir { source, .. } if source.kind() == io::ErrorKind::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    fn touch(dir: &Path, name: &str) {
        File::create(dir.join(name)).unwrap();
    }

    fn debian_boot() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for release in ["6.12.111+deb12-amd64", "6.1.0-50-amd64", "6.1.0-47-amd64"] {
            touch(dir.path(), &format!("vmlinuz-{release}"));
            touch(dir.path(), &format!("initrd.img-{release}"));
            touch(dir.path(), &format!("config-{release}"));
            touch(dir.path(), &format!("System.map-{release}"));
        }
        dir
    }

    #[test]
    fn debian_kernels_are_found_oldest_first() {
        let boot = debian_boot();
        let kernels = installed_kernels(boot.path()).unwrap();
        let releases: Vec<&str> = kernels.iter().map(|k| k.release.as_str()).collect();
        assert_eq!(
            releases,
            ["6.1.0-47-amd64", "6.1.0-50-amd64", "6.12.111+deb12-amd64"]
        );
        let k = &kernels[0];
        assert_eq!(k.image, boot.path().join("vmlinuz-6.1.0-47-amd64"));
        assert_eq!(
            k.initrd.as_deref(),
            Some(boot.path().join("initrd.img-6.1.0-47-amd64").as_path())
        );
        assert_eq!(
            k.config.as_deref(),
            Some(boot.path().join("config-6.1.0-47-amd64").as_path())
        );
    }

    #[test]
    fn dracut_naming_and_missing_parts() {
        let boot = tempfile::tempdir().unwrap();
        touch(boot.path(), "vmlinuz-6.5.6-300.fc39.x86_64");
        touch(boot.path(), "initramfs-6.5.6-300.fc39.x86_64.img");
        touch(boot.path(), "vmlinuz-6.1.0-47-amd64");
        let kernels = installed_kernels(boot.path()).unwrap();
        assert_eq!(kernels.len(), 2);
        assert_eq!(kernels[0].release, "6.1.0-47-amd64");
        assert_eq!(kernels[0].initrd, None);
        assert_eq!(kernels[0].config, None);
        assert_eq!(
            kernels[1].initrd.as_deref(),
            Some(
                boot.path()
                    .join("initramfs-6.5.6-300.fc39.x86_64.img")
                    .as_path()
            )
        );
    }

    #[test]
    fn debian_initrd_name_wins_over_dracut_name() {
        let boot = tempfile::tempdir().unwrap();
        touch(boot.path(), "vmlinuz-6.1.0-47-amd64");
        touch(boot.path(), "initrd.img-6.1.0-47-amd64");
        touch(boot.path(), "initramfs-6.1.0-47-amd64.img");
        let k = &installed_kernels(boot.path()).unwrap()[0];
        assert_eq!(
            k.initrd.as_deref(),
            Some(boot.path().join("initrd.img-6.1.0-47-amd64").as_path())
        );
    }

    #[test]
    fn things_that_are_not_kernels_are_skipped() {
        let boot = tempfile::tempdir().unwrap();
        touch(boot.path(), "vmlinuz-6.1.0-47-amd64");
        for name in [
            "vmlinuz",
            "vmlinuz.old",
            "vmlinuz-",
            "vmlinuz-6.1.0-47-amd64.dpkg-tmp",
            "vmlinuz-6.1.0-47-amd64.old",
            "vmlinuz-5.15.0-1-generic.efi.signed",
            ".vmlinuz-6.1.0-47-amd64.hmac",
            "vmlinuz-rescue",
            "vmlinuz-6.1 0",
            "initrd.img-6.1.0-50-amd64",
            "config-6.1.0-50-amd64",
        ] {
            touch(boot.path(), name);
        }
        fs::create_dir(boot.path().join("vmlinuz-6.2.0-1-amd64")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", boot.path().join("vmlinuz-6.3.0-1-amd64"))
            .unwrap();
        let kernels = installed_kernels(boot.path()).unwrap();
        let releases: Vec<&str> = kernels.iter().map(|k| k.release.as_str()).collect();
        assert_eq!(releases, ["6.1.0-47-amd64"]);
    }

    #[test]
    fn a_symlinked_image_counts() {
        let boot = tempfile::tempdir().unwrap();
        touch(boot.path(), "real-image");
        std::os::unix::fs::symlink("real-image", boot.path().join("vmlinuz-6.1.0-47-amd64"))
            .unwrap();
        assert_eq!(installed_kernels(boot.path()).unwrap().len(), 1);
    }

    #[test]
    fn a_missing_boot_dir_is_an_error_that_names_it() {
        let err = installed_kernels(Path::new("/nonexistent/boot")).unwrap_err();
        assert!(is_missing_boot_dir(&err));
        assert!(err.to_string().contains("/nonexistent/boot"), "{err}");
    }

    #[test]
    fn resolve_by_release_and_by_path() {
        let boot = debian_boot();
        let by_release = resolve_kernel(boot.path(), "6.1.0-50-amd64").unwrap();
        assert_eq!(by_release.release, "6.1.0-50-amd64");
        let path = boot.path().join("vmlinuz-6.12.111+deb12-amd64");
        let by_path = resolve_kernel(boot.path(), path.to_str().unwrap()).unwrap();
        assert_eq!(by_path.release, "6.12.111+deb12-amd64");
        assert_eq!(by_path.image, path);
        // Redundant separators and "." components are the same directory.
        let spelled = format!("{}//./vmlinuz-6.1.0-47-amd64", boot.path().display());
        assert_eq!(
            resolve_kernel(boot.path(), &spelled).unwrap().release,
            "6.1.0-47-amd64"
        );
    }

    #[test]
    fn unknown_release_lists_the_installed_ones() {
        let boot = debian_boot();
        let err = resolve_kernel(boot.path(), "6.9.0-1-amd64").unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, KernelError::KernelNotInstalled { .. }),
            "{msg}"
        );
        assert!(
            msg.contains("installed: 6.1.0-47-amd64, 6.1.0-50-amd64, 6.12.111+deb12-amd64"),
            "{msg}"
        );
        let empty = tempfile::tempdir().unwrap();
        let msg = resolve_kernel(empty.path(), "6.1.0-47-amd64")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("install a kernel package"), "{msg}");
    }

    #[test]
    fn hostile_specs_are_refused_before_looking() {
        let boot = debian_boot();
        for (spec, why) in [
            ("", "empty"),
            ("6.1.0-47-amd64\0", "NUL"),
            ("6.1.0-47-amd64 quiet", "whitespace"),
            ("6.1.0-47-amd64\n", "whitespace"),
            ("6.1.0-47\t-amd64", "whitespace"),
            ("../../etc/passwd", ".."),
            ("6.1.0-47-amd64/..", ".."),
            ("boot/vmlinuz-6.1.0-47-amd64", "not an absolute path"),
            ("./vmlinuz-6.1.0-47-amd64", "not an absolute path"),
            ("vmlinuz-6.1.0-47-amd64", "not a kernel release"),
            ("linux", "not a kernel release"),
        ] {
            let err = resolve_kernel(boot.path(), spec).unwrap_err();
            assert!(
                matches!(err, KernelError::InvalidKernelSpec { .. }),
                "{spec:?}: {err}"
            );
            assert!(err.to_string().contains(why), "{spec:?}: {err}");
        }
    }

    #[test]
    fn paths_outside_the_boot_dir_are_refused() {
        let boot = debian_boot();
        let elsewhere = tempfile::tempdir().unwrap();
        touch(elsewhere.path(), "vmlinuz-6.1.0-47-amd64");
        for spec in [
            elsewhere
                .path()
                .join("vmlinuz-6.1.0-47-amd64")
                .display()
                .to_string(),
            "/vmlinuz-6.1.0-47-amd64".to_string(),
            boot.path()
                .join("initrd.img-6.1.0-47-amd64")
                .display()
                .to_string(),
            boot.path()
                .join("sub/vmlinuz-6.1.0-47-amd64")
                .display()
                .to_string(),
            format!("{}/vmlinuz-", boot.path().display()),
        ] {
            let err = resolve_kernel(boot.path(), &spec).unwrap_err();
            assert!(
                matches!(err, KernelError::NotInBootDir { .. }),
                "{spec}: {err}"
            );
            assert!(err.to_string().contains("vmlinuz-<release>"), "{err}");
        }
    }
}
