//! The kernel module end to end over a boot directory laid out like Debian's, with
//! real (trimmed) kernel configurations as fixtures.

use std::fs;
use std::path::Path;

use upgraded::kernel::{
    check_checkpoint_support, installed_kernels, kernel_version, known_problems,
    parse_kernel_config, parse_upgraded_tokens, read_kernel_config, resolve_kernel, target_cmdline,
    ConfigValue, KernelError, Need, Scope, Version,
};

const DEBIAN_6_1: &str = include_str!("fixtures/kernel/config-6.1.0-47-amd64.trimmed");
const DEBIAN_6_12: &str = include_str!("fixtures/kernel/config-6.12.111+deb12-amd64.trimmed");
const MICROVM_6_18: &str = include_str!("fixtures/kernel/config-6.18.44-microvm.trimmed");

const ALL_NEEDS: &[Need] = &[Need::Checkpoint, Need::PreDump, Need::Kexec, Need::PmemArea];

/// /boot as the guests of this project have it: three Debian kernels with their
/// initramfs and configuration, plus the files that are not kernels.
fn debian_boot() -> tempfile::TempDir {
    let boot = tempfile::tempdir().unwrap();
    let dir = boot.path();
    for (release, config) in [
        ("6.1.0-47-amd64", DEBIAN_6_1),
        ("6.1.0-50-amd64", DEBIAN_6_1),
        ("6.12.111+deb12-amd64", DEBIAN_6_12),
    ] {
        fs::write(dir.join(format!("vmlinuz-{release}")), b"MZ").unwrap();
        fs::write(dir.join(format!("initrd.img-{release}")), b"\x1f\x8b").unwrap();
        fs::write(dir.join(format!("config-{release}")), config).unwrap();
        fs::write(dir.join(format!("System.map-{release}")), b"").unwrap();
    }
    fs::create_dir(dir.join("grub")).unwrap();
    boot
}

#[test]
fn debian_boot_dir_lists_and_resolves() {
    let boot = debian_boot();
    let kernels = installed_kernels(boot.path()).unwrap();
    let releases: Vec<&str> = kernels.iter().map(|k| k.release.as_str()).collect();
    assert_eq!(
        releases,
        ["6.1.0-47-amd64", "6.1.0-50-amd64", "6.12.111+deb12-amd64"]
    );
    assert!(kernels
        .iter()
        .all(|k| k.initrd.is_some() && k.config.is_some()));

    let target = resolve_kernel(boot.path(), "6.12.111+deb12-amd64").unwrap();
    assert_eq!(target, kernels[2]);
    let by_path = format!("{}/vmlinuz-6.1.0-47-amd64", boot.path().display());
    assert_eq!(resolve_kernel(boot.path(), &by_path).unwrap(), kernels[0]);

    let err = resolve_kernel(boot.path(), "6.1.0-99-amd64").unwrap_err();
    assert!(matches!(err, KernelError::KernelNotInstalled { .. }));
    assert!(err
        .to_string()
        .contains("6.1.0-47-amd64, 6.1.0-50-amd64, 6.12.111+deb12-amd64"));
}

#[test]
fn debian_kernels_have_everything_upgraded_needs() {
    let boot = debian_boot();
    for kernel in installed_kernels(boot.path()).unwrap() {
        let cfg = read_kernel_config(kernel.config.as_deref().unwrap()).unwrap();
        let problems = check_checkpoint_support(&cfg, ALL_NEEDS);
        assert!(problems.is_empty(), "{}: {problems:#?}", kernel.release);
        // The pmem drivers are modules on Debian: they must go into the initramfs.
        assert_eq!(
            cfg.get("CONFIG_X86_PMEM_LEGACY"),
            Some(&ConfigValue::Module)
        );
        assert_eq!(cfg.get("CONFIG_BLK_DEV_PMEM"), Some(&ConfigValue::Module));
    }
}

#[test]
fn microvm_kernel_lacks_kexec_pmem_and_soft_dirty() {
    let cfg = parse_kernel_config(MICROVM_6_18);
    assert_eq!(cfg.version.as_ref().map(Version::as_str), Some("6.18.44"));
    // Plain checkpoint/restore is there...
    assert!(check_checkpoint_support(&cfg, &[Need::Checkpoint]).is_empty());
    // ...but nothing to leave the kernel with, track memory or keep a pmem area.
    let problems = check_checkpoint_support(&cfg, ALL_NEEDS);
    let summary: Vec<(Need, &str, &str)> = problems
        .iter()
        .map(|p| (p.need, p.option.as_str(), p.found.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (Need::PreDump, "CONFIG_MEM_SOFT_DIRTY", "not set"),
            (
                Need::Kexec,
                "CONFIG_KEXEC_FILE or CONFIG_KEXEC",
                "CONFIG_KEXEC_FILE=not set, CONFIG_KEXEC=not set"
            ),
            (Need::PmemArea, "CONFIG_X86_PMEM_LEGACY", "not set"),
        ]
    );
    for p in &problems {
        let msg = p.to_string();
        assert!(msg.contains(&p.option) && msg.contains(": "), "{msg}");
    }
}

#[test]
fn upstream_versions_come_from_the_configs() {
    let boot = debian_boot();
    let versions: Vec<String> = installed_kernels(boot.path())
        .unwrap()
        .iter()
        .map(|k| {
            let cfg = read_kernel_config(k.config.as_deref().unwrap()).unwrap();
            kernel_version(&k.release, Some(&cfg)).unwrap().to_string()
        })
        .collect();
    // 6.1.0-50's fixture is 6.1.0-47's configuration, hence the same version.
    assert_eq!(versions, ["6.1.170", "6.1.170", "6.12.111"]);
}

#[test]
fn known_problems_for_this_projects_kernels() {
    let v = |s: &str| Version::parse(s).unwrap();
    let k61 = kernel_version("6.1.0-47-amd64", Some(&parse_kernel_config(DEBIAN_6_1))).unwrap();
    let k612 = kernel_version(
        "6.12.111+deb12-amd64",
        Some(&parse_kernel_config(DEBIAN_6_12)),
    )
    .unwrap();
    let k618 = kernel_version("6.18.44-fc-v782", Some(&parse_kernel_config(MICROVM_6_18))).unwrap();
    let libc6 = v("2.36-9+deb12u14");

    // bookworm's packages as they are now: nothing known.
    let criu_pkg = v("3.17.1-2+deb12u2");
    for k in [&k61, &k612] {
        assert!(known_problems(k, &criu_pkg, Some(&libc6)).is_empty(), "{k}");
    }

    // With only `criu --version`'s "3.17.1", Debian's two backports (the mount fix and
    // the rseq fix) cannot be seen, so both problems are reported: the table errs
    // towards a warning too many.
    let criu_bare = v("3.17.1");
    let found: Vec<&str> = known_problems(&k61, &criu_bare, Some(&libc6))
        .iter()
        .map(|k| k.issue)
        .collect();
    assert_eq!(
        found,
        [
            "checkpoint-restore/criu#2694",
            "checkpoint-restore/criu#2477"
        ]
    );

    // The host's kernel: bookworm's CRIU cannot start there (as measured).
    let found = known_problems(&k618, &criu_pkg, Some(&libc6));
    assert!(
        found
            .iter()
            .any(|k| k.issue.ends_with("#2532") && k.scope == Scope::All),
        "{found:?}"
    );
}

#[test]
fn cmdline_round_trip_through_the_target_kernel() {
    let current = "BOOT_IMAGE=/boot/vmlinuz-6.1.0-50-amd64 root=/dev/vda1 ro console=ttyS0 \
                   memmap=512M!1G upgraded.generation=previous\n";
    let extra = vec!["nokaslr".to_string()];
    let line = target_cmdline(current, "g-0002", None, &extra, Some("512M!1G")).unwrap();
    assert_eq!(
        line,
        "root=/dev/vda1 ro console=ttyS0 upgraded.generation=g-0002 memmap=512M!1G nokaslr"
    );
    // What the initramfs reads after the kexec.
    let args = parse_upgraded_tokens(&line);
    assert_eq!(
        args.generation.map(|g| g.to_string()).as_deref(),
        Some("g-0002")
    );
    assert!(args.warnings.is_empty());
    // And the next upgrade from there replaces, never accumulates.
    let next = target_cmdline(&line, "g-0003", None, &extra, Some("512M!1G")).unwrap();
    assert_eq!(next.matches("upgraded.").count(), 1);
    assert_eq!(next.matches("memmap=").count(), 1);
    assert_eq!(next.matches("nokaslr").count(), 1);
}

#[test]
fn fixtures_are_what_they_claim() {
    for (text, version) in [
        (DEBIAN_6_1, "6.1.170"),
        (DEBIAN_6_12, "6.12.111"),
        (MICROVM_6_18, "6.18.44"),
    ] {
        let cfg = parse_kernel_config(text);
        assert_eq!(cfg.version.as_ref().map(Version::as_str), Some(version));
        assert!(cfg.options.len() > 25, "{version}: {}", cfg.options.len());
    }
    assert!(Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kernel/config-6.1.0-47-amd64.trimmed")
        .is_file());
}
