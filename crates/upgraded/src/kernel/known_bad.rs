//! Combinations of kernel, CRIU and glibc versions known to break checkpoint or
//! restore, so that an upgrade into one is refused or warned about before the
//! workloads are frozen.
//!
//! Versions are compared as [`Version`] orders them. Give the kernel's *upstream*
//! version ([`super::kernel_version`] reads it from the kernel's configuration:
//! Debian's `6.1.0-47-amd64` is 6.1.170), and for CRIU and glibc the distribution
//! package version when there is one (`dpkg-query -W -f '${Version}' criu libc6`):
//! distributions backport fixes, and only the package version shows them. With a
//! bare upstream version (`criu --version`, `getconf GNU_LIBC_VERSION`), rows that
//! hinge on a backport err towards reporting a problem for CRIU and towards missing
//! one for glibc; the rows say which.
//!
//! Each range is a list of alternatives because the same change reaches several
//! stable branches at different sublevels, and a distribution's backport can close a
//! hole in the middle of a CRIU range.

use std::fmt;

use super::version::{Version, VersionRange};

/// Which workloads a known problem breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every workload.
    All,
    /// Workloads with a mount namespace of their own: containers, nspawn machines,
    /// services with mount sandboxing (PrivateTmp=, ProtectSystem=...).
    OwnMountNamespace,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::All => "all workloads",
            Scope::OwnMountNamespace => "workloads with their own mount namespace",
        })
    }
}

/// A combination known to break checkpoint or restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownBad {
    /// Upstream kernel versions affected (any of the ranges).
    pub kernel: &'static [VersionRange],
    /// CRIU versions affected (any of the ranges).
    pub criu: &'static [VersionRange],
    /// glibc versions affected (any of the ranges); `None` when glibc plays no part.
    pub glibc: Option<&'static [VersionRange]>,
    pub scope: Scope,
    /// What breaks and what to do about it.
    pub why: &'static str,
    /// Where it is tracked, `owner/repo#number`.
    pub issue: &'static str,
}

impl KnownBad {
    /// Whether this combination matches. An unknown glibc version matches a row
    /// that depends on glibc: better a warning too many than a broken restore.
    pub fn matches(&self, kernel: &Version, criu: &Version, glibc: Option<&Version>) -> bool {
        any_contains(self.kernel, kernel)
            && any_contains(self.criu, criu)
            && match (self.glibc, glibc) {
                (None, _) | (Some(_), None) => true,
                (Some(ranges), Some(glibc)) => any_contains(ranges, glibc),
            }
    }
}

impl fmt::Display for KnownBad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (affects {}; {})", self.why, self.scope, self.issue)
    }
}

fn any_contains(ranges: &[VersionRange], version: &Version) -> bool {
    ranges.iter().any(|r| r.contains(version))
}

const ANY: &[VersionRange] = &[VersionRange::ANY];

/// Kernels with the rseq system call (Linux 4.18): on older ones glibc does not
/// register restartable sequences at all.
const RSEQ_KERNELS: &[VersionRange] = &[VersionRange::since("4.18")];

/// The known-bad combinations. Sources are the issue threads named in each row, the
/// Debian changelogs of the linux-image and criu packages, and this project's own
/// measurements (FACTS.md); bounds that are inferred rather than read are marked.
pub const KNOWN_BAD: &[KnownBad] = &[
    // Kernel commit 12f147ddd6de ("do_change_type(): refuse to operate on
    // unmounted/not ours mounts") went into 6.16 and every stable branch. Debian's
    // changelogs place it in 6.1.142 and 6.12.34. The other branches' bounds are
    // inferred from the same stable batch and set a little low on purpose: a warning
    // too many beats a missed one.
    // CRIU fixed it in 4.1.1 (PR #2695); Debian backported the fix as criu
    // 3.17.1-2+deb12u2 (Debian bug #1110096), hence the hole in the CRIU range.
    KnownBad {
        kernel: &[
            VersionRange::between("5.4.293", "5.5"),
            VersionRange::between("5.10.237", "5.11"),
            VersionRange::between("5.15.184", "5.16"),
            VersionRange::between("6.1.142", "6.2"),
            VersionRange::between("6.6.92", "6.7"),
            VersionRange::between("6.12.34", "6.13"),
            // 6.15.y and, past it, mainline from 6.16 on.
            VersionRange::since("6.15.1"),
        ],
        criu: &[
            VersionRange::before("3.17.1-2+deb12u2"),
            VersionRange::between("3.17.2", "4.1.1"),
        ],
        glibc: None,
        scope: Scope::OwnMountNamespace,
        why: "a stable-kernel security fix changed who may change mount propagation, and \
              CRIU before 4.1.1 (Debian: before 3.17.1-2+deb12u2) fails to restore mount \
              namespaces (\"mnt-v2: Failed to make mount ... slave: Invalid argument\"); \
              upgrade criu",
        issue: "checkpoint-restore/criu#2694",
    },
    // glibc 2.35 registers rseq at start-up; CRIU learnt to dump and restore it in
    // 3.17 (PR #1706). Fedora backported rseq registration into some 2.34 builds
    // (criu#1695); those are not covered by this range.
    KnownBad {
        kernel: RSEQ_KERNELS,
        criu: &[VersionRange::before("3.17")],
        glibc: Some(&[VersionRange::since("2.35")]),
        scope: Scope::All,
        why: "glibc 2.35 and later register restartable sequences (rseq) in every process, \
              and CRIU before 3.17 neither dumps nor restores them: restored processes \
              crash; upgrade criu to 3.17 or later",
        issue: "checkpoint-restore/criu#1696",
    },
    // PTRACE_GET_RSEQ_CONFIGURATION arrived in Linux 5.13; without it CRIU 3.17+
    // refuses to dump a process that registered rseq.
    KnownBad {
        kernel: &[VersionRange::between("4.18", "5.13")],
        criu: &[VersionRange::since("3.17")],
        glibc: Some(&[VersionRange::since("2.35")]),
        scope: Scope::All,
        why: "the kernel lacks PTRACE_GET_RSEQ_CONFIGURATION (Linux 5.13), so CRIU refuses \
              to dump processes that use rseq, which glibc 2.35 and later does in every \
              process (\"has rseq but kernel lacks get_rseq_conf feature\"); use a 5.13 or \
              later kernel, or start the workloads with GLIBC_TUNABLES=glibc.pthread.rseq=0",
        issue: "checkpoint-restore/criu#2070",
    },
    // Debian's libc6 2.36-9+deb12u8 broke restores with CRIU that unregisters rseq the
    // glibc-specific way; CRIU's fix (PR #1937, "rseq: dynamically handle *libc with
    // rseq") is upstream in 3.18 and was backported as criu 3.17.1-2+deb12u1 (Debian
    // bug #1081683). Only a package version of libc6 can match this row: `getconf`'s
    // bare "2.36" sorts before deb12u8 and misses it.
    KnownBad {
        kernel: RSEQ_KERNELS,
        criu: &[
            VersionRange::between("3.17", "3.17.1-2+deb12u1"),
            VersionRange::between("3.17.2", "3.18"),
        ],
        glibc: Some(&[VersionRange::between("2.36-9+deb12u8", "2.37")]),
        scope: Scope::All,
        why: "Debian's libc6 2.36-9+deb12u8 and later changed rseq registration in a way \
              CRIU before 3.18 (Debian: before 3.17.1-2+deb12u1) does not handle: restored \
              processes die with SIGSEGV; upgrade criu",
        issue: "checkpoint-restore/criu#2477",
    },
    // Linux 6.13 changed the vDSO/vvar layout (criu#2532, first seen on 6.13 release
    // candidates). Measured here: bookworm's criu 3.17.1 fails at start-up on 6.18
    // ("vdso: Unexpected rt vDSO area bounds") and works on 6.12.111. The first fixed
    // release is inferred to be 4.1 (the fix came after 4.0); not confirmed.
    KnownBad {
        kernel: &[VersionRange::since("6.13-rc1")],
        criu: &[VersionRange::before("4.1")],
        glibc: None,
        scope: Scope::All,
        why: "Linux 6.13 changed the vDSO layout and older CRIU cannot even start on it \
              (\"vdso: Unexpected rt vDSO area bounds\"); upgrade criu, or stay on a 6.12 \
              kernel",
        issue: "checkpoint-restore/criu#2532",
    },
    // Reported against Fedora's 7.1 kernels with podman; a fix was merged upstream but
    // its first release is not confirmed here, so every CRIU matches until it is. The
    // cause is not known here either, so every workload is assumed affected.
    KnownBad {
        kernel: &[VersionRange::since("7.1-rc1")],
        criu: ANY,
        glibc: None,
        scope: Scope::All,
        why: "CRIU fails to dump on Linux 7.1 (\"Dumping FAILED\", error -52); before \
              upgrading to such a kernel, upgrade criu to a release with the fix and \
              check it, or stay on an older kernel",
        issue: "checkpoint-restore/criu#3002",
    },
    // Uncertain bounds: the report shows CRIU 1.7.2 restoring fine on 5.4 and crashing
    // (futex in the restorer) on 6.12. Only what the report shows is covered.
    KnownBad {
        kernel: &[VersionRange::since("6.12")],
        criu: &[VersionRange::before("2.0")],
        glibc: None,
        scope: Scope::All,
        why: "CRIU 1.x crashes restoring on Linux 6.12 (segmentation fault in the \
              restorer); upgrade criu",
        issue: "checkpoint-restore/criu#2700",
    },
];

/// The rows of [`KNOWN_BAD`] that match, in table order. Call it once for each kernel
/// involved (the running one dumps, the target restores), with the upstream kernel
/// version; see the module docs for which CRIU and glibc versions to pass.
pub fn known_problems(
    kernel: &Version,
    criu: &Version,
    glibc: Option<&Version>,
) -> Vec<&'static KnownBad> {
    KNOWN_BAD
        .iter()
        .filter(|row| row.matches(kernel, criu, glibc))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    fn issues(kernel: &str, criu: &str, glibc: Option<&str>) -> Vec<&'static str> {
        let glibc = glibc.map(v);
        known_problems(&v(kernel), &v(criu), glibc.as_ref())
            .iter()
            .map(|k| k.issue)
            .collect()
    }

    #[test]
    fn every_bound_in_the_table_is_a_version() {
        for row in KNOWN_BAD {
            let ranges = row
                .kernel
                .iter()
                .chain(row.criu)
                .chain(row.glibc.unwrap_or_default());
            for range in ranges {
                for bound in [range.from, range.before].into_iter().flatten() {
                    assert!(Version::parse(bound).is_ok(), "{}: {bound}", row.issue);
                }
                if let (Some(from), Some(before)) = (range.from, range.before) {
                    assert!(v(from) < v(before), "{}: empty range {range}", row.issue);
                }
            }
            assert!(
                !row.kernel.is_empty() && !row.criu.is_empty(),
                "{}",
                row.issue
            );
            assert!(row.issue.starts_with("checkpoint-restore/criu#"));
            assert!(
                row.why.contains("upgrade") || row.why.contains("use "),
                "{}",
                row.why
            );
        }
    }

    #[test]
    fn bookworm_as_measured_has_no_general_problem() {
        // 6.1.0-47-amd64 is 6.1.170; criu and libc6 as bookworm ships them now.
        let found = issues("6.1.170", "3.17.1-2+deb12u2", Some("2.36-9+deb12u14"));
        assert!(found.is_empty(), "{found:?}");
        let found = issues("6.12.111", "3.17.1-2+deb12u2", Some("2.36-9+deb12u14"));
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn mount_namespace_restore_needs_the_fixed_criu() {
        let mntns = "checkpoint-restore/criu#2694";
        // Kernels with the security fix, CRIU without its fix.
        assert!(issues("6.1.170", "3.17.1", None).contains(&mntns));
        assert!(issues("6.1.142", "4.1", None).contains(&mntns));
        assert!(issues("6.12.34", "4.0", None).contains(&mntns));
        assert!(issues("6.16", "4.1", None).contains(&mntns));
        assert!(issues("6.16-rc3", "4.1", None).contains(&mntns));
        assert!(issues("6.1.170", "3.17.1-2+deb12u1", None).contains(&mntns));
        // Kernels before it.
        assert!(!issues("6.1.141", "3.17.1", None).contains(&mntns));
        assert!(!issues("6.12.33", "4.0", None).contains(&mntns));
        assert!(!issues("6.13.5", "4.0", None).contains(&mntns));
        // Fixed CRIU, upstream or Debian's backport.
        assert!(!issues("6.1.170", "4.1.1", None).contains(&mntns));
        assert!(!issues("6.1.170", "4.2", None).contains(&mntns));
        assert!(!issues("6.1.170", "3.17.1-2+deb12u2", None).contains(&mntns));
        let row = KNOWN_BAD.iter().find(|k| k.issue == mntns).unwrap();
        assert_eq!(row.scope, Scope::OwnMountNamespace);
    }

    #[test]
    fn rseq_needs_criu_3_17_with_new_glibc() {
        let rseq = "checkpoint-restore/criu#1696";
        assert!(issues("5.15.0", "3.16.1", Some("2.35")).contains(&rseq));
        assert!(issues("6.1.170", "3.16.1", Some("2.36-9+deb12u14")).contains(&rseq));
        assert!(!issues("6.1.170", "3.17", Some("2.35")).contains(&rseq));
        assert!(!issues("5.15.0", "3.16.1", Some("2.34")).contains(&rseq));
        assert!(!issues("4.14.0", "3.16.1", Some("2.35")).contains(&rseq));
        // glibc unknown: reported, since it may well be new enough.
        assert!(issues("5.15.0", "3.16.1", None).contains(&rseq));
    }

    #[test]
    fn rseq_needs_a_5_13_kernel_to_dump() {
        let no_conf = "checkpoint-restore/criu#2070";
        assert!(issues("5.10.0", "3.17.1", Some("2.36")).contains(&no_conf));
        assert!(issues("5.12.19", "4.0", Some("2.39")).contains(&no_conf));
        assert!(!issues("5.13", "3.17.1", Some("2.36")).contains(&no_conf));
        assert!(!issues("5.10.0", "3.17.1", Some("2.31")).contains(&no_conf));
    }

    #[test]
    fn debian_libc6_update_needs_the_criu_backport() {
        let deb = "checkpoint-restore/criu#2477";
        assert!(issues("6.1.112", "3.17.1-2", Some("2.36-9+deb12u8")).contains(&deb));
        assert!(issues("6.1.112", "3.17.1", Some("2.36-9+deb12u10")).contains(&deb));
        assert!(!issues("6.1.112", "3.17.1-2", Some("2.36-9+deb12u7")).contains(&deb));
        assert!(!issues("6.1.112", "3.17.1-2+deb12u1", Some("2.36-9+deb12u8")).contains(&deb));
        assert!(!issues("6.1.112", "3.18", Some("2.36-9+deb12u8")).contains(&deb));
        // getconf's bare version cannot tell: documented as a miss.
        assert!(!issues("6.1.112", "3.17.1-2", Some("2.36")).contains(&deb));
    }

    #[test]
    fn new_vdso_layout_needs_a_newer_criu() {
        let vdso = "checkpoint-restore/criu#2532";
        // As measured here: 3.17.1 fails on 6.18 and works on 6.12.111.
        assert!(issues("6.18.44", "3.17.1", None).contains(&vdso));
        assert!(!issues("6.12.111", "3.17.1", None).contains(&vdso));
        assert!(!issues("6.18.44", "4.1", None).contains(&vdso));
    }

    #[test]
    fn kernel_7_1_is_flagged_for_every_criu() {
        let k71 = "checkpoint-restore/criu#3002";
        assert!(issues("7.1", "4.2", None).contains(&k71));
        assert!(issues("7.1-rc2", "9.0", None).contains(&k71));
        assert!(!issues("7.0.3", "4.2", None).contains(&k71));
    }

    #[test]
    fn ancient_criu_on_6_12() {
        let old = "checkpoint-restore/criu#2700";
        assert!(issues("6.12.0", "1.7.2", None).contains(&old));
        assert!(!issues("5.4.0", "1.7.2", None).contains(&old));
    }

    #[test]
    fn display_names_scope_and_issue() {
        let row = &KNOWN_BAD[0];
        let s = row.to_string();
        assert!(s.contains("mount namespace"), "{s}");
        assert!(s.ends_with("checkpoint-restore/criu#2694)"), "{s}");
    }
}
