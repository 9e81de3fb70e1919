use std::cell::RefCell;

use dumper::manifest::WorkloadName;
use dumper::workload::Target;

use super::*;
use crate::area_device::Contents;
use crate::kernel::{parse_kernel_config, REQUIREMENTS};

const RUNNING: &str = "6.1.0-47-amd64";
const TARGET: &str = "6.1.0-50-amd64";
/// As bookworm ships them now: no known problem with 6.1 kernels.
const GOOD_CRIU: &str = "3.17.1-2+deb12u2";
const GOOD_GLIBC: &str = "2.36-9+deb12u14";

/// A configuration with every option of every need, for an upstream `version`.
fn full_config(version: &str) -> KernelConfig {
    config_without(version, &[])
}

fn config_without(version: &str, missing: &[&str]) -> KernelConfig {
    let mut text = format!("# Linux/x86 {version} Kernel Configuration\n");
    for r in REQUIREMENTS {
        for o in r.options.iter().filter(|o| !missing.contains(o)) {
            text.push_str(&format!("{o}=y\n"));
        }
    }
    parse_kernel_config(&text)
}

fn installed(release: &str) -> InstalledKernel {
    InstalledKernel {
        release: release.to_owned(),
        image: format!("/boot/vmlinuz-{release}").into(),
        initrd: Some(format!("/boot/initrd.img-{release}").into()),
        config: Some(format!("/boot/config-{release}").into()),
    }
}

fn resolved(name: &str, target: Target, rss_bytes: u64) -> WorkloadInput {
    WorkloadInput {
        name: name.to_owned(),
        resolved: Ok(Resolved {
            name: WorkloadName::new(name).unwrap(),
            kind: target.kind(),
            target,
            root_pid: 1234,
            pids: vec![1234, 1235, 1236],
            unit: None,
            cgroup: None,
            command_line: vec!["tmux".into()],
            rss_bytes,
            owns_cgroup: false,
            session_leader: true,
            uses_tty: true,
            root_dir: None,
        }),
    }
}

fn unresolved(name: &str) -> WorkloadInput {
    WorkloadInput {
        name: name.to_owned(),
        resolved: Err(dumper::Error::WorkloadNotFound {
            workload: WorkloadName::new(name).unwrap(),
            what: "service gone.service".into(),
            hint: "check the unit name".into(),
        }),
    }
}

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// An upgrade from 6.1.0-47 to 6.1.0-50 of a tmux server (100 MiB) and a podman
/// container (300 MiB) into a directory area, everything in order.
fn input() -> Input {
    Input {
        target: TargetKernel::Found(installed(TARGET)),
        running_release: RUNNING.into(),
        running_config: Some(full_config("6.1.158")),
        target_config: Some(full_config("6.1.170")),
        cmdline: Ok("root=/dev/vda1 ro upgraded.generation=g1".into()),
        needs: needs(false, AreaKind::Directory),
        workloads: vec![
            resolved(
                "web",
                Target::Tmux {
                    socket: "default".into(),
                },
                100 * MIB,
            ),
            resolved(
                "db",
                Target::Podman {
                    container: "db".into(),
                },
                300 * MIB,
            ),
        ],
        area_path: "/var/lib/upgraded".into(),
        margin_percent: 20,
        area_device: None,
        staged_suspends: Ok(vec![]),
    }
}

/// A probe whose answers are set per test, recording what it was asked.
struct Fake {
    load: Result<Method, String>,
    /// Workloads whose dry run fails.
    dump_fails: Vec<&'static str>,
    free: Result<u64, String>,
    fs: Result<FsType, String>,
    writable: Result<(), String>,
    criu: Result<&'static str, String>,
    glibc: Result<&'static str, String>,
    kexec_setting: Result<Option<bool>, String>,
    /// Workloads in a mount namespace of their own; `None` = the probe fails.
    own_mntns: Option<Vec<&'static str>>,
    calls: RefCell<Vec<String>>,
}

impl Default for Fake {
    fn default() -> Fake {
        Fake {
            load: Ok(Method::FileLoad),
            dump_fails: vec![],
            free: Ok(10 * GIB),
            fs: Ok(FsType::EXT4),
            writable: Ok(()),
            criu: Ok(GOOD_CRIU),
            glibc: Ok(GOOD_GLIBC),
            kexec_setting: Ok(None),
            own_mntns: Some(vec!["db"]),
            calls: RefCell::new(vec![]),
        }
    }
}

impl Fake {
    fn called(&self, what: &str) {
        self.calls.borrow_mut().push(what.to_owned());
    }

    fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }
}

impl Probe for Fake {
    fn test_load(&self, kernel: &InstalledKernel, cmdline: &str) -> Result<Method, ProbeError> {
        self.called(&format!("load {} {cmdline}", kernel.release));
        self.load.clone().map_err(Into::into)
    }
    fn criu_dry_run(&self, workload: &Resolved) -> Result<(), ProbeError> {
        self.called(&format!("dump {}", workload.name));
        if self.dump_fails.contains(&workload.name.as_str()) {
            return Err("criu dump failed: Can't dump half of a pty pair".into());
        }
        Ok(())
    }
    fn free_bytes(&self, area_path: &Path) -> Result<u64, ProbeError> {
        self.called(&format!("statvfs {}", area_path.display()));
        self.free.clone().map_err(Into::into)
    }
    fn area_fs_type(&self, area_path: &Path) -> Result<FsType, ProbeError> {
        self.called(&format!("statfs {}", area_path.display()));
        self.fs.clone().map_err(Into::into)
    }
    fn area_writable(&self, area_path: &Path) -> Result<(), ProbeError> {
        self.called(&format!("write-probe {}", area_path.display()));
        self.writable.clone().map_err(Into::into)
    }
    fn criu_version(&self) -> Result<Version, ProbeError> {
        Ok(Version::parse(self.criu.clone()?)?)
    }
    fn glibc_version(&self) -> Result<Version, ProbeError> {
        Ok(Version::parse(self.glibc.clone()?)?)
    }
    fn load_kexec_setting(&self) -> Result<Option<bool>, ProbeError> {
        self.kexec_setting.clone().map_err(Into::into)
    }
    fn own_mount_namespace(&self, workload: &Resolved) -> Result<bool, ProbeError> {
        self.called(&format!("mntns {}", workload.name));
        match &self.own_mntns {
            Some(own) => Ok(own.contains(&workload.name.as_str())),
            None => Err("reading /proc/1234/ns/mnt: Permission denied".into()),
        }
    }
}

fn row<'a>(report: &'a Report, name: &str) -> &'a CheckResult {
    report
        .checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no row {name:?} in {report:#?}"))
}

fn statuses(report: &Report) -> Vec<(&str, Status)> {
    report
        .checks
        .iter()
        .map(|c| (c.name.as_str(), c.status))
        .collect()
}

// --- the whole report ----------------------------------------------------------------

#[test]
fn everything_in_order_passes_in_order() {
    let probe = Fake::default();
    let report = run(&input(), &probe);
    use Status::Pass;
    assert_eq!(
        statuses(&report),
        [
            ("kernel", Pass),
            ("kernel config", Pass),
            ("known bad", Pass),
            ("kexec-tools", Pass),
            ("area", Pass),
            ("area space", Pass),
            ("workload web", Pass),
            ("criu web", Pass),
            ("workload db", Pass),
            ("criu db", Pass),
            ("kexec load", Pass),
        ]
    );
    assert!(report.passed());
    assert_eq!(report.failures(), "");
    assert!(
        report.checks.iter().all(|c| c.hint.is_none()),
        "{report:#?}"
    );
    assert_eq!(
        probe.calls(),
        [
            "statfs /var/lib/upgraded",
            "write-probe /var/lib/upgraded",
            "statvfs /var/lib/upgraded",
            "dump web",
            "dump db",
            "load 6.1.0-50-amd64 root=/dev/vda1 ro upgraded.generation=g1",
        ],
        "no mount namespace question without a problem that depends on it"
    );
    let kernel = row(&report, "kernel");
    assert!(
        kernel.detail.contains("/boot/vmlinuz-6.1.0-50-amd64"),
        "{kernel:?}"
    );
    let load = row(&report, "kexec load");
    assert!(load.detail.contains("kexec_file_load"), "{load:?}");
    let web = row(&report, "workload web");
    assert!(
        web.detail.contains("3 processes under PID 1234, 100.0 MiB"),
        "{web:?}"
    );
}

#[test]
fn failures_do_not_stop_later_checks_and_are_summed_up() {
    let mut input = input();
    input.target_config = Some(config_without("6.1.170", &["CONFIG_TIME_NS"]));
    let probe = Fake {
        kexec_setting: Ok(Some(true)),
        load: Err("the running kernel refused to load it (EBUSY)".into()),
        ..Fake::default()
    };
    let report = run(&input, &probe);
    let failed: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(failed, ["kernel config", "kexec load"]);
    assert_eq!(row(&report, "kexec-tools").status, Status::Warn);
    assert_eq!(report.checks.len(), 11, "every check ran");
    assert!(!report.passed());
    let summary = report.failures();
    assert!(
        summary.starts_with("2 of 11 pre-flight checks failed:\n- kernel config: target kernel"),
        "{summary}"
    );
    assert!(!summary.contains("kexec-tools"), "{summary}");
    assert!(
        summary.contains("\n- kexec load: the running kernel refused"),
        "{summary}"
    );
    assert!(report
        .checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .all(|c| c.hint.is_some()));
}

#[test]
fn report_serializes_with_lowercase_statuses() {
    let report = run(&input(), &Fake::default());
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["checks"][0]["name"], "kernel");
    assert_eq!(json["checks"][0]["status"], "pass");
    assert!(json["checks"][0]["hint"].is_null());
    let back: Report = serde_json::from_value(json).unwrap();
    assert_eq!(back, report);
    for (status, text) in [
        (Status::Pass, "pass"),
        (Status::Warn, "warn"),
        (Status::Fail, "fail"),
        (Status::Skipped, "skipped"),
    ] {
        assert_eq!(status.to_string(), text);
        assert_eq!(serde_json::to_value(status).unwrap(), text);
    }
}

// --- kernel ---------------------------------------------------------------------------

#[test]
fn a_missing_target_fails_and_skips_what_needs_it() {
    let boot = tempfile::tempdir().unwrap();
    let err = crate::kernel::resolve_kernel(boot.path(), "6.9.0-1-amd64").unwrap_err();
    let mut input = input();
    input.target = TargetKernel::Missing(kernel_missing("6.9.0-1-amd64", &err));
    input.target_config = None;
    let probe = Fake::default();
    let report = run(&input, &probe);
    let kernel = row(&report, "kernel");
    assert_eq!(kernel.status, Status::Fail);
    assert!(kernel.detail.contains("6.9.0-1-amd64"), "{kernel:?}");
    assert!(kernel
        .hint
        .as_deref()
        .unwrap()
        .contains("install the kernel package"));
    assert_eq!(row(&report, "kernel config").status, Status::Skipped);
    let load = row(&report, "kexec load");
    assert_eq!(load.status, Status::Skipped);
    assert!(load.detail.contains("no target kernel"), "{load:?}");
    assert!(
        !probe.calls().iter().any(|c| c.starts_with("load")),
        "{:?}",
        probe.calls()
    );
    // The rest still ran: the running kernel and the workloads are checked.
    assert_eq!(row(&report, "known bad").status, Status::Pass);
    assert!(row(&report, "known bad")
        .detail
        .contains("running 6.1.0-47-amd64"));
    assert_eq!(row(&report, "criu db").status, Status::Pass);
}

#[test]
fn kernel_missing_hints_by_cause() {
    let boot = tempfile::tempdir().unwrap();
    let invalid = crate::kernel::resolve_kernel(boot.path(), "../../etc").unwrap_err();
    let row = kernel_missing("../../etc", &invalid);
    assert_eq!((row.name.as_str(), row.status), ("kernel", Status::Fail));
    assert!(row.hint.unwrap().contains("by its release"));
    let unreadable =
        crate::kernel::resolve_kernel(&boot.path().join("nope"), "6.1.0-50-amd64").unwrap_err();
    let row = kernel_missing("6.1.0-50-amd64", &unreadable);
    assert!(
        row.detail
            .starts_with("looking for kernel \"6.1.0-50-amd64\": reading the boot directory"),
        "{row:?}"
    );
    assert!(row.detail.contains("No such file"), "source chain: {row:?}");
}

#[test]
fn the_running_kernel_as_target_is_a_warning() {
    let mut input = input();
    input.target = TargetKernel::Found(installed(RUNNING));
    input.target_config = Some(full_config("6.1.158"));
    let report = run(&input, &Fake::default());
    let kernel = row(&report, "kernel");
    assert_eq!(kernel.status, Status::Warn);
    assert!(kernel.detail.contains("reboot in place"), "{kernel:?}");
    assert!(report.passed());
}

#[test]
fn a_target_without_initramfs_is_a_warning() {
    let mut input = input();
    let mut k = installed(TARGET);
    k.initrd = None;
    input.target = TargetKernel::Found(k);
    let kernel = row(&run(&input, &Fake::default()), "kernel").clone();
    assert_eq!(kernel.status, Status::Warn);
    assert!(kernel.detail.contains("no initramfs"), "{kernel:?}");
    assert!(kernel
        .hint
        .unwrap()
        .contains("update-initramfs -c -k 6.1.0-50-amd64"));
}

// --- kernel config ---------------------------------------------------------------------

#[test]
fn missing_options_are_listed_with_why() {
    let mut input = input();
    input.target_config = Some(config_without(
        "6.1.170",
        &["CONFIG_TIME_NS", "CONFIG_PID_NS"],
    ));
    let config = row(&run(&input, &Fake::default()), "kernel config").clone();
    assert_eq!(config.status, Status::Fail);
    assert!(
        config
            .detail
            .contains("target kernel 6.1.0-50-amd64: CONFIG_PID_NS is absent"),
        "{config:?}"
    );
    assert!(
        config.detail.contains("CONFIG_TIME_NS is absent"),
        "{config:?}"
    );
    assert!(
        config.detail.contains("time namespace"),
        "the why: {config:?}"
    );
    assert!(!config.detail.contains("running kernel"), "{config:?}");
    assert!(config.hint.unwrap().contains("rebuild the kernel"));
}

#[test]
fn the_running_kernel_is_checked_too() {
    let mut input = input();
    input.running_config = Some(config_without(
        "6.1.158",
        &["CONFIG_KEXEC_FILE", "CONFIG_KEXEC"],
    ));
    let config = row(&run(&input, &Fake::default()), "kernel config").clone();
    assert_eq!(config.status, Status::Fail);
    assert!(
        config
            .detail
            .starts_with("running kernel 6.1.0-47-amd64: CONFIG_KEXEC_FILE or CONFIG_KEXEC"),
        "{config:?}"
    );
}

#[test]
fn pre_dump_is_needed_from_the_running_kernel_only() {
    let mut input = input();
    input.needs = needs(true, AreaKind::Directory);
    input.target_config = Some(config_without("6.1.170", &["CONFIG_MEM_SOFT_DIRTY"]));
    assert_eq!(
        row(&run(&input, &Fake::default()), "kernel config").status,
        Status::Pass
    );

    input.running_config = Some(config_without("6.1.158", &["CONFIG_MEM_SOFT_DIRTY"]));
    let config = row(&run(&input, &Fake::default()), "kernel config").clone();
    assert_eq!(config.status, Status::Fail);
    assert!(
        config.detail.contains("CONFIG_MEM_SOFT_DIRTY"),
        "{config:?}"
    );
    assert!(config.hint.unwrap().contains("pre_dump = 0"));

    // Without pre-dumps, nobody asks.
    input.needs = needs(false, AreaKind::Directory);
    assert_eq!(
        row(&run(&input, &Fake::default()), "kernel config").status,
        Status::Pass
    );
}

#[test]
fn a_pmem_area_needs_the_pmem_drivers() {
    let mut input = input();
    input.target_config = Some(config_without("6.1.170", &["CONFIG_BLK_DEV_PMEM"]));
    assert_eq!(
        row(&run(&input, &Fake::default()), "kernel config").status,
        Status::Pass
    );
    input.needs = needs(false, AreaKind::Pmem);
    let config = row(&run(&input, &Fake::default()), "kernel config").clone();
    assert_eq!(config.status, Status::Fail);
    assert!(config.hint.unwrap().contains("area.kind"));
}

#[test]
fn the_same_kernel_is_checked_once() {
    let mut input = input();
    input.target = TargetKernel::Found(installed(RUNNING));
    input.running_config = Some(config_without("6.1.158", &["CONFIG_TIME_NS"]));
    // The caller found the running kernel's configuration only: it is the target's.
    input.target_config = None;
    let config = row(&run(&input, &Fake::default()), "kernel config").clone();
    assert_eq!(config.status, Status::Fail);
    assert_eq!(
        config.detail.matches("CONFIG_TIME_NS").count(),
        1,
        "{config:?}"
    );
    assert!(
        config.detail.starts_with("kernel 6.1.0-47-amd64: "),
        "{config:?}"
    );
}

#[test]
fn a_target_without_configuration_fails() {
    let mut input = input();
    input.target_config = None;
    let config = row(&run(&input, &Fake::default()), "kernel config").clone();
    assert_eq!(config.status, Status::Fail);
    assert!(
        config
            .detail
            .contains("/boot/config-6.1.0-50-amd64 could not be read"),
        "{config:?}"
    );
    assert!(config.hint.unwrap().contains("config-6.1.0-50-amd64"));

    let mut k = installed(TARGET);
    k.config = None;
    input.target = TargetKernel::Found(k);
    let config = row(&run(&input, &Fake::default()), "kernel config").clone();
    assert!(
        config.detail.contains("there is no config-6.1.0-50-amd64"),
        "{config:?}"
    );
}

#[test]
fn an_unknown_running_configuration_is_a_warning() {
    let mut input = input();
    input.running_config = None;
    let config = row(&run(&input, &Fake::default()), "kernel config").clone();
    assert_eq!(config.status, Status::Warn);
    assert!(
        config.detail.contains("only the target's was checked"),
        "{config:?}"
    );
}

// --- known bad --------------------------------------------------------------------------

/// CRIU before its fix for the stable kernels' mount propagation change
/// (checkpoint-restore/criu#2694), which breaks only workloads with their own mount
/// namespace.
const MNTNS_CRIU: &str = "3.17.1-2+deb12u1";

#[test]
fn a_problem_fails_for_the_workloads_it_affects() {
    let probe = Fake {
        criu: Ok(MNTNS_CRIU),
        ..Fake::default()
    };
    let report = run(&input(), &probe);
    let bad = row(&report, "known bad");
    assert_eq!(bad.status, Status::Fail);
    assert!(
        bad.detail.contains("checkpoint-restore/criu#2694"),
        "{bad:?}"
    );
    assert!(
        bad.detail.contains("chosen workloads affected: db"),
        "{bad:?}"
    );
    assert!(!bad.detail.contains("affected: web"), "{bad:?}");
    // Found on both kernels: one line naming both.
    assert!(
        bad.detail.starts_with(
            "on the running kernel 6.1.0-47-amd64 (6.1.158) and the target kernel \
             6.1.0-50-amd64 (6.1.170): "
        ),
        "{bad:?}"
    );
    assert_eq!(bad.detail.matches("criu#2694").count(), 1, "{bad:?}");
    assert!(bad.hint.is_some());
    // Asked once per workload, however many kernels matched.
    let asked: Vec<String> = probe
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("mntns"))
        .collect();
    assert_eq!(asked, ["mntns web", "mntns db"]);
}

#[test]
fn a_problem_outside_the_workloads_passes_with_a_mention() {
    let probe = Fake {
        criu: Ok(MNTNS_CRIU),
        own_mntns: Some(vec![]),
        ..Fake::default()
    };
    let bad = row(&run(&input(), &probe), "known bad").clone();
    assert_eq!(bad.status, Status::Pass);
    assert!(
        bad.detail
            .contains("(checkpoint-restore/criu#2694 do not affect them)"),
        "{bad:?}"
    );
}

#[test]
fn an_unknown_mount_namespace_counts_as_affected() {
    let probe = Fake {
        criu: Ok(MNTNS_CRIU),
        own_mntns: None,
        ..Fake::default()
    };
    let bad = row(&run(&input(), &probe), "known bad").clone();
    assert_eq!(bad.status, Status::Fail);
    assert!(
        bad.detail.contains("chosen workloads affected: web, db"),
        "{bad:?}"
    );
    assert!(bad.detail.contains("Permission denied"), "{bad:?}");
}

#[test]
fn a_problem_of_every_workload_fails_on_the_target_alone() {
    let mut input = input();
    // Linux 6.13 changed the vDSO layout; bookworm's CRIU cannot start there.
    input.target_config = Some(full_config("6.18.2"));
    let bad = row(&run(&input, &Fake::default()), "known bad").clone();
    assert_eq!(bad.status, Status::Fail);
    assert!(
        bad.detail
            .starts_with("on the target kernel 6.1.0-50-amd64 (6.18.2): "),
        "{bad:?}"
    );
    assert!(
        bad.detail.contains("checkpoint-restore/criu#2532"),
        "{bad:?}"
    );
    assert!(!bad.detail.contains("running kernel"), "{bad:?}");
    assert!(bad.detail.contains("affected: web, db"), "{bad:?}");
}

#[test]
fn unresolved_workloads_are_still_in_scope_of_every_workload_problems() {
    let mut input = input();
    input.target_config = Some(full_config("6.18.2"));
    input.workloads = vec![unresolved("gone")];
    let bad = row(&run(&input, &Fake::default()), "known bad").clone();
    assert_eq!(bad.status, Status::Fail);
    assert!(bad.detail.contains("affected: gone"), "{bad:?}");
}

#[test]
fn unknown_versions() {
    let probe = Fake {
        criu: Err("criu is not installed".into()),
        ..Fake::default()
    };
    let report = run(&input(), &probe);
    let bad = row(&report, "known bad");
    assert_eq!(bad.status, Status::Skipped);
    assert!(bad.detail.contains("criu is not installed"), "{bad:?}");
    assert!(bad.hint.as_deref().unwrap().contains("apt install criu"));
    assert_eq!(report.checks.len(), 11);

    // An unknown glibc matches every row that depends on it: CRIU before 3.17 and
    // glibc's rseq registration.
    let probe = Fake {
        criu: Ok("3.16.1"),
        glibc: Err("getconf: not found".into()),
        ..Fake::default()
    };
    let bad = row(&run(&input(), &probe), "known bad").clone();
    assert_eq!(bad.status, Status::Fail);
    assert!(
        bad.detail.contains("checkpoint-restore/criu#1696"),
        "{bad:?}"
    );
    assert!(
        bad.detail
            .contains("glibc's version is unknown (getconf: not found)"),
        "{bad:?}"
    );

    let mut input = input();
    input.running_release = "not a release".into();
    input.running_config = None;
    let bad = row(&run(&input, &Fake::default()), "known bad").clone();
    assert_eq!(
        bad.status,
        Status::Pass,
        "the target is still checked: {bad:?}"
    );
    assert!(
        bad.detail
            .contains("the running kernel's version is unknown"),
        "{bad:?}"
    );
}

// --- kexec-tools -----------------------------------------------------------------------

#[test]
fn kexec_tools_loading_at_shutdown_warns() {
    for (setting, status) in [
        (Ok(Some(true)), Status::Warn),
        (Ok(Some(false)), Status::Pass),
        (Ok(None), Status::Pass),
        (
            Err("/etc/default/kexec:3: cannot tell".to_owned()),
            Status::Warn,
        ),
    ] {
        let probe = Fake {
            kexec_setting: setting.clone(),
            ..Fake::default()
        };
        let tools = row(&run(&input(), &probe), "kexec-tools").clone();
        assert_eq!(tools.status, status, "{setting:?}: {tools:?}");
        if status != Status::Pass {
            let hint = tools.hint.unwrap();
            assert!(
                hint.contains("LOAD_KEXEC=false") && hint.contains("/etc/default/kexec"),
                "{hint}"
            );
        }
    }
}

// --- area file system -------------------------------------------------------------------

#[test]
fn an_area_on_a_disk_that_takes_writes_passes() {
    let area = row(&run(&input(), &Fake::default()), "area").clone();
    assert_eq!(area.status, Status::Pass);
    assert_eq!(area.detail, "/var/lib/upgraded: ext2/3/4, writable");
    assert_eq!(area.hint, None);
}

#[test]
fn an_area_in_memory_fails_naming_the_file_system() {
    for fs in [FsType::TMPFS, FsType::RAMFS] {
        let probe = Fake {
            fs: Ok(fs),
            ..Fake::default()
        };
        let report = run(&input(), &probe);
        let area = row(&report, "area").clone();
        assert_eq!(area.status, Status::Fail, "{area:?}");
        assert!(
            area.detail.starts_with(&format!(
                "/var/lib/upgraded: {fs}, writable; the area is on {fs}, which lives in memory"
            )),
            "{area:?}"
        );
        assert!(area.hint.unwrap().contains("area.path"));
        assert!(!report.passed());
        assert!(
            report
                .failures()
                .contains(&format!("- area: /var/lib/upgraded: {fs}")),
            "{}",
            report.failures()
        );
    }
}

#[test]
fn an_area_that_may_not_survive_warns() {
    for fs in [FsType::OVERLAYFS, FsType::NFS, FsType::FUSE] {
        let probe = Fake {
            fs: Ok(fs),
            ..Fake::default()
        };
        let report = run(&input(), &probe);
        let area = row(&report, "area").clone();
        assert_eq!(area.status, Status::Warn, "{area:?}");
        assert!(
            area.detail.contains(&format!("the area is on {fs}")),
            "{area:?}"
        );
        assert!(area.hint.is_some());
        assert!(report.passed(), "a warning does not refuse the upgrade");
    }
}

#[test]
fn a_read_only_area_fails_with_what_to_do() {
    // What dumper::Area::check_writable says about a read-only mount.
    let ro = "persistent area /var/lib/upgraded is on a read-only mount (/var/lib/upgraded); \
              upgraded cannot write images or its state there: remount it read-write (mount -o \
              remount,rw /var/lib/upgraded), or set area.path to a directory on a writable file \
              system that survives a reboot";
    let probe = Fake {
        writable: Err(ro.into()),
        ..Fake::default()
    };
    let report = run(&input(), &probe);
    let area = row(&report, "area").clone();
    assert_eq!(area.status, Status::Fail);
    assert_eq!(
        area.detail,
        format!("/var/lib/upgraded: ext2/3/4, not writable; {ro}")
    );
    assert!(area.hint.unwrap().contains("make it writable"));
    assert!(!report.passed());
    // The other checks still ran.
    assert_eq!(report.checks.len(), 11);
    assert_eq!(row(&report, "area space").status, Status::Pass);

    // Both problems at once, in one row.
    let probe = Fake {
        fs: Ok(FsType::TMPFS),
        writable: Err(ro.into()),
        ..Fake::default()
    };
    let area = row(&run(&input(), &probe), "area").clone();
    assert_eq!(area.status, Status::Fail);
    assert!(
        area.detail.contains("which lives in memory") && area.detail.contains("read-only mount"),
        "{area:?}"
    );
    let hint = area.hint.unwrap();
    assert!(
        hint.contains("disk file system") && hint.contains("make it writable"),
        "{hint}"
    );
}

#[test]
fn an_area_whose_file_system_is_unknown_fails() {
    let probe = Fake {
        fs: Err(
            "reading the file system type (statfs) of /var/lib/upgraded: No such file or directory"
                .into(),
        ),
        ..Fake::default()
    };
    let area = row(&run(&input(), &probe), "area").clone();
    assert_eq!(area.status, Status::Fail);
    assert!(
        area.detail.starts_with(
            "/var/lib/upgraded: unknown file system, writable; its file system type is unknown: \
             reading the file system type"
        ),
        "{area:?}"
    );
    assert!(area.hint.unwrap().contains("exists and is mounted"));
}

// --- area device ------------------------------------------------------------------------

fn device(kind: AreaKind, node: &str, dax: bool) -> crate::area_device::Device {
    crate::area_device::Device {
        kind,
        configured: node.into(),
        node: node.into(),
        name: node.trim_start_matches("/dev/").into(),
        devnum: crate::area_device::DevNum {
            major: 259,
            minor: 0,
        },
        size: Some(512 * MIB),
        dax,
        mounted: true,
        mounted_dax: dax,
        range: None,
    }
}

fn ours() -> Contents {
    Contents::Ours { uuid: "u".into() }
}

/// The test bed's pmem area: memmap=512M!1G, /dev/pmem0 with DAX, mounted.
fn pmem_input(running_cmdline: &str) -> Input {
    Input {
        needs: needs(false, AreaKind::Pmem),
        area_path: "/run/upgraded/area".into(),
        area_device: Some(AreaDeviceInput {
            kind: AreaKind::Pmem,
            device: "/dev/pmem0".into(),
            memmap: Some(Memmap {
                size: 512 * MIB,
                offset: GIB,
            }),
            running_cmdline: running_cmdline.into(),
            found: Ok((device(AreaKind::Pmem, "/dev/pmem0", true), ours())),
        }),
        ..input()
    }
}

#[test]
fn a_pmem_area_the_running_kernel_reserves_passes_after_the_area_row() {
    let report = run(
        &pmem_input("root=/dev/vda1 ro memmap=512M!1G"),
        &Fake::default(),
    );
    let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names[4..7], ["area", "area device", "area space"]);
    let dev = row(&report, "area device");
    assert_eq!(dev.status, Status::Pass, "{dev:?}");
    assert_eq!(
        dev.detail,
        "/dev/pmem0: /dev/pmem0, 512.0 MiB, mounted with DAX; holds the area's file system \
         (ext4, label upgraded-area); the running kernel reserves it (memmap=512M!1G), and \
         the new kernel gets the same"
    );
    assert_eq!(dev.hint, None);
    // The same range spelled another way is the same reservation.
    let report = run(
        &pmem_input("memmap=0x20000000!0x40000000"),
        &Fake::default(),
    );
    assert_eq!(row(&report, "area device").status, Status::Pass);
    assert!(report.passed());
}

#[test]
fn a_pmem_area_the_running_kernel_does_not_reserve_fails() {
    let report = run(&pmem_input("root=/dev/vda1 ro quiet"), &Fake::default());
    let dev = row(&report, "area device").clone();
    assert_eq!(dev.status, Status::Fail);
    assert!(
        dev.detail.contains(
            "the running kernel was booted with no memmap=<size>!<offset>, not \
             memmap=512M!1G: that RAM is not reserved now"
        ),
        "{dev:?}"
    );
    let hint = dev.hint.unwrap();
    assert!(
        hint.contains("memmap=512M!1G (GRUB_CMDLINE_LINUX") && hint.contains("area init"),
        "{hint}"
    );
    assert!(!report.passed());
    assert!(report.failures().contains("- area device: "));

    // Another reservation is named.
    let report = run(
        &pmem_input("memmap=1G!4G memmap=64K$0x1000"),
        &Fake::default(),
    );
    let dev = row(&report, "area device");
    assert_eq!(dev.status, Status::Fail);
    assert!(
        dev.detail
            .contains("booted with memmap=1G!4G, not memmap=512M!1G"),
        "{dev:?}"
    );
}

#[test]
fn a_pmem_area_without_memmap_needs_no_reservation() {
    let mut input = pmem_input("ro");
    input.area_device.as_mut().unwrap().memmap = None;
    let input_dev = input.area_device.as_mut().unwrap();
    input_dev.found = Ok((device(AreaKind::Pmem, "/dev/pmem0", false), ours()));
    let dev = row(&run(&input, &Fake::default()), "area device").clone();
    assert_eq!(dev.status, Status::Pass);
    assert!(dev.detail.contains(", no DAX;"), "{dev:?}");
    assert!(dev.detail.contains("real persistent memory"), "{dev:?}");
}

#[test]
fn a_disk_area_must_hold_the_area_file_system() {
    let disk_input = |found| Input {
        area_path: "/run/upgraded/area".into(),
        area_device: Some(AreaDeviceInput {
            kind: AreaKind::Disk,
            device: "/dev/disk/by-id/virtio-upgraded-area".into(),
            memmap: None,
            running_cmdline: "ro".into(),
            found,
        }),
        ..input()
    };
    let mut vdb = device(AreaKind::Disk, "/dev/vdb", false);
    vdb.configured = "/dev/disk/by-id/virtio-upgraded-area".into();

    let dev = row(
        &run(&disk_input(Ok((vdb.clone(), ours()))), &Fake::default()),
        "area device",
    )
    .clone();
    assert_eq!(dev.status, Status::Pass);
    assert_eq!(
        dev.detail,
        "/dev/disk/by-id/virtio-upgraded-area: /dev/vdb, 512.0 MiB; holds the area's file \
         system (ext4, label upgraded-area)"
    );

    let dev = row(
        &run(
            &disk_input(Ok((vdb.clone(), Contents::Empty))),
            &Fake::default(),
        ),
        "area device",
    )
    .clone();
    assert_eq!(dev.status, Status::Fail);
    assert!(dev.detail.ends_with("holds no file system"), "{dev:?}");
    assert!(dev.hint.unwrap().contains("upgradectl area init"));

    let other = Contents::Other {
        found: "a file system of type xfs labelled \"data\"".into(),
    };
    let dev = row(
        &run(&disk_input(Ok((vdb, other))), &Fake::default()),
        "area device",
    )
    .clone();
    assert_eq!(dev.status, Status::Fail);
    assert!(
        dev.detail.contains("holds a file system of type xfs"),
        "{dev:?}"
    );
    assert!(dev.hint.unwrap().contains("wipefs -a"));

    let missing = "the disk area's device /dev/disk/by-id/virtio-upgraded-area does not exist";
    let dev = row(
        &run(&disk_input(Err(missing.into())), &Fake::default()),
        "area device",
    )
    .clone();
    assert_eq!(dev.status, Status::Fail);
    assert_eq!(dev.detail, missing);
}

#[test]
fn a_directory_area_has_no_device_row() {
    let report = run(&input(), &Fake::default());
    assert!(!report.checks.iter().any(|c| c.name == "area device"));
}

// --- suspends in memory -----------------------------------------------------------------

fn staged(generation: &str, workloads: &[&str]) -> StagedSuspend {
    StagedSuspend {
        generation: generation.into(),
        path: format!("/run/upgraded/sealing/generations/{generation}").into(),
        workloads: workloads.iter().map(|w| (*w).to_owned()).collect(),
    }
}

#[test]
fn suspends_left_in_memory_fail_naming_them_and_how_to_resume_them() {
    let mut input = input();
    input.staged_suspends = Ok(vec![staged("g3", &["web"]), staged("g4", &["notes"])]);
    let report = run(&input, &Fake::default());
    let names: Vec<&str> = statuses(&report).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names[5..8],
        ["area space", "suspends in memory", "workload web"],
        "after the area's rows"
    );
    let staged_row = row(&report, "suspends in memory");
    assert_eq!(staged_row.status, Status::Fail);
    assert!(
        staged_row.detail.starts_with(
            "generation g3 of web is in /run/upgraded/sealing/generations/g3; generation g4 \
             of notes is in /run/upgraded/sealing/generations/g4: "
        ) && staged_row
            .detail
            .contains("in memory only: the kexec would lose them"),
        "{staged_row:?}"
    );
    assert_eq!(
        staged_row.hint.as_deref(),
        Some("resume first: `upgradectl resume web`, `upgradectl resume notes`; then check again")
    );
    assert!(!report.passed());
    assert!(
        report
            .failures()
            .contains("\n- suspends in memory: generation g3 of web"),
        "{}",
        report.failures()
    );
}

#[test]
fn a_staging_area_that_cannot_be_read_warns() {
    let mut input = input();
    input.staged_suspends =
        Err("opening the staging area /run/upgraded/sealing: it is owned by uid 1000".into());
    let report = run(&input, &Fake::default());
    let staged_row = row(&report, "suspends in memory");
    assert_eq!(staged_row.status, Status::Warn);
    assert!(
        staged_row.detail.contains("owned by uid 1000")
            && staged_row.detail.contains("would be lost by the kexec"),
        "{staged_row:?}"
    );
    assert!(
        staged_row
            .hint
            .as_deref()
            .is_some_and(|h| h.contains("/run/upgraded/sealing/generations")),
        "{staged_row:?}"
    );
    assert!(report.passed());
}

#[test]
fn no_suspend_in_memory_has_no_row() {
    let report = run(&input(), &Fake::default());
    assert!(!report.checks.iter().any(|c| c.name == "suspends in memory"));
}

// --- area space -------------------------------------------------------------------------

#[test]
fn the_area_must_hold_the_estimate_plus_the_margin() {
    // 400 MiB resident + 20% = 480 MiB.
    for (free, status) in [(480 * MIB, Status::Pass), (480 * MIB - 1, Status::Fail)] {
        let probe = Fake {
            free: Ok(free),
            ..Fake::default()
        };
        let area = row(&run(&input(), &probe), "area space").clone();
        assert_eq!(area.status, status, "{free}: {area:?}");
        assert!(
            area.detail.contains("the images need about 480.0 MiB"),
            "{area:?}"
        );
        assert!(
            area.detail
                .contains("400.0 MiB resident in 2 workloads, plus 20%"),
            "{area:?}"
        );
    }
    let probe = Fake {
        free: Ok(100 * MIB),
        ..Fake::default()
    };
    let area = row(&run(&input(), &probe), "area space").clone();
    assert!(
        area.detail
            .starts_with("100.0 MiB free on /var/lib/upgraded"),
        "{area:?}"
    );
    assert!(area
        .hint
        .unwrap()
        .starts_with("free 380.0 MiB on /var/lib/upgraded"));
}

#[test]
fn the_area_counts_only_found_workloads() {
    let mut input = input();
    input.workloads.push(unresolved("gone"));
    input.margin_percent = 0;
    let area = row(&run(&input, &Fake::default()), "area space").clone();
    assert!(
        area.detail
            .contains("400.0 MiB resident in 2 workloads, plus 0%"),
        "{area:?}"
    );
    assert!(
        area.detail
            .contains("1 workload that was not found is not counted"),
        "{area:?}"
    );
}

#[test]
fn an_unreadable_area_fails() {
    let probe = Fake {
        free: Err("statvfs /var/lib/upgraded: No such file or directory".into()),
        ..Fake::default()
    };
    let area = row(&run(&input(), &probe), "area space").clone();
    assert_eq!(area.status, Status::Fail);
    assert!(area.detail.contains("No such file"), "{area:?}");
}

#[test]
fn margins_round_up_and_do_not_overflow() {
    assert_eq!(with_margin(0, 100), 0);
    assert_eq!(with_margin(100, 20), 120);
    assert_eq!(with_margin(101, 10), 112);
    assert_eq!(with_margin(u64::MAX, 100), u64::MAX);
    assert_eq!(human_bytes(512), "512 B");
    assert_eq!(human_bytes(1536), "1.5 KiB");
    assert_eq!(human_bytes(3 * GIB / 2), "1.5 GiB");
}

// --- workloads --------------------------------------------------------------------------

#[test]
fn an_unresolved_workload_fails_and_skips_its_dump() {
    let mut input = input();
    input.workloads.insert(1, unresolved("gone"));
    let probe = Fake::default();
    let report = run(&input, &probe);
    let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names[6..],
        [
            "workload web",
            "criu web",
            "workload gone",
            "criu gone",
            "workload db",
            "criu db",
            "kexec load"
        ]
    );
    let gone = row(&report, "workload gone");
    assert_eq!(gone.status, Status::Fail);
    assert!(
        gone.detail
            .contains("workload gone: service gone.service was not found"),
        "{gone:?}"
    );
    let dump = row(&report, "criu gone");
    assert_eq!(dump.status, Status::Skipped);
    assert!(dump.detail.contains("gone was not found"), "{dump:?}");
    assert!(!probe.calls().contains(&"dump gone".to_owned()));
    assert_eq!(row(&report, "criu db").status, Status::Pass);
}

#[test]
fn a_failed_dry_run_fails_its_row_only() {
    let probe = Fake {
        dump_fails: vec!["web"],
        ..Fake::default()
    };
    let report = run(&input(), &probe);
    let web = row(&report, "criu web");
    assert_eq!(web.status, Status::Fail);
    assert!(web.detail.contains("half of a pty pair"), "{web:?}");
    assert!(web.hint.is_some());
    assert_eq!(row(&report, "criu db").status, Status::Pass);
    assert_eq!(row(&report, "workload web").status, Status::Pass);
}

// --- kexec load -------------------------------------------------------------------------

#[test]
fn the_test_load_reports_its_method_or_error() {
    let probe = Fake {
        load: Ok(Method::KexecTools),
        ..Fake::default()
    };
    let load = row(&run(&input(), &probe), "kexec load").clone();
    assert_eq!(load.status, Status::Pass);
    assert!(load.detail.contains("kexec-tools"), "{load:?}");

    let probe = Fake {
        load: Err("the running kernel refused to load /boot/vmlinuz-6.1.0-50-amd64".into()),
        ..Fake::default()
    };
    let load = row(&run(&input(), &probe), "kexec load").clone();
    assert_eq!(load.status, Status::Fail);
    assert!(
        load.detail
            .contains("refused to load /boot/vmlinuz-6.1.0-50-amd64"),
        "{load:?}"
    );
}

#[test]
fn a_command_line_that_cannot_be_built_fails_without_loading() {
    let mut input = input();
    input.cmdline = Err(KernelError::CmdlineTooLong {
        len: 3000,
        max: 2047,
    });
    let probe = Fake::default();
    let load = row(&run(&input, &probe), "kexec load").clone();
    assert_eq!(load.status, Status::Fail);
    assert!(load.detail.contains("3000 bytes"), "{load:?}");
    assert!(!probe.calls().iter().any(|c| c.starts_with("load")));
}

// --- needs ------------------------------------------------------------------------------

#[test]
fn needs_follow_the_configuration() {
    assert_eq!(
        needs(false, AreaKind::Directory),
        [Need::Checkpoint, Need::Kexec]
    );
    assert_eq!(
        needs(false, AreaKind::Disk),
        [Need::Checkpoint, Need::Kexec]
    );
    assert_eq!(
        needs(true, AreaKind::Pmem),
        [Need::Checkpoint, Need::Kexec, Need::PreDump, Need::PmemArea]
    );
}
