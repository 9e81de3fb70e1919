//! Versions of kernels, CRIU and glibc, and how they order.
//!
//! One ordering serves all three, because all three reach us in Debian's shapes:
//! kernel releases (`6.1.0-47-amd64`, `6.12.111+deb12-amd64`), upstream versions
//! (`3.17.1`, `2.36`) and package versions (`3.17.1-2+deb12u2`, `2.36-9+deb12u8`).
//! The comparison is dpkg's (runs of digits compare as numbers, other characters
//! compare with `~` lowest, then the end of the string, then letters, then the rest),
//! plus one rule for kernels: `-rcN` is a release candidate and sorts before the
//! release it leads to (`6.16-rc1` < `6.16`), as `~rcN` would for dpkg.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use super::error::{shown, KernelError};

/// Longest accepted version. `uname -r` is at most 64 bytes (`__NEW_UTS_LEN`), and the
/// package versions we compare are far shorter.
pub const MAX_VERSION_LEN: usize = 64;

/// A kernel release or program version, checked to be made of the characters real
/// ones use and to start with a digit. Ordered as described in the module docs.
#[derive(Debug, Clone)]
pub struct Version(String);

impl Version {
    /// Checks `text` and wraps it.
    pub fn parse(text: &str) -> Result<Version, KernelError> {
        match version_problem(text) {
            None => Ok(Version(text.to_owned())),
            Some(reason) => Err(KernelError::InvalidVersion {
                version: shown(text),
                reason,
            }),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why `text` is not a version, or `None` when it is one.
pub(crate) fn version_problem(text: &str) -> Option<String> {
    if text.is_empty() || text.len() > MAX_VERSION_LEN {
        return Some(format!("must be 1 to {MAX_VERSION_LEN} characters long"));
    }
    if !text.starts_with(|c: char| c.is_ascii_digit()) {
        return Some("must start with a digit".into());
    }
    if let Some(c) = text
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '~')))
    {
        let hint = if c == ':' {
            " (leave out a package epoch such as \"1:\")"
        } else {
            ""
        };
        return Some(format!(
            "contains '{}'; only letters, digits and . _ - + ~ are allowed{hint}",
            c.escape_debug()
        ));
    }
    None
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Version {
    type Err = KernelError;
    fn from_str(s: &str) -> Result<Version, KernelError> {
        Version::parse(s)
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Version) -> Ordering {
        // Spellings that compare equal (`6.01` and `6.1`) are told apart by their text,
        // so that the order agrees with `Eq`.
        compare_versions(&self.0, &other.0).then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Version) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Version) -> bool {
        self.0 == other.0
    }
}

impl Eq for Version {}

/// Compares two version strings the way [`Version`] orders them; strings that are not
/// valid versions still get a total order.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let a = normalize_rc(a);
    let b = normalize_rc(b);
    verrevcmp(a.as_bytes(), b.as_bytes())
}

/// `-rcN` becomes `~rcN`, so that a release candidate sorts before its release.
fn normalize_rc(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut rest = v;
    while let Some(at) = rest.find("-rc") {
        let after = &rest[at + 3..];
        out.push_str(&rest[..at]);
        if after.starts_with(|c: char| c.is_ascii_digit()) {
            out.push_str("~rc");
        } else {
            out.push_str("-rc");
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// dpkg's `verrevcmp` (lib/dpkg/version.c), with numbers compared as digit strings so
/// that no length of digits can overflow.
fn verrevcmp(mut a: &[u8], mut b: &[u8]) -> Ordering {
    while !a.is_empty() || !b.is_empty() {
        // The non-digit prefix, character by character.
        loop {
            let ca = a.first().copied().filter(|c| !c.is_ascii_digit());
            let cb = b.first().copied().filter(|c| !c.is_ascii_digit());
            if ca.is_none() && cb.is_none() {
                break;
            }
            let ord = char_order(ca).cmp(&char_order(cb));
            if ord != Ordering::Equal {
                return ord;
            }
            a = &a[1..];
            b = &b[1..];
        }
        // Then the digit run, as a number.
        let (da, ra) = split_digits(a);
        let (db, rb) = split_digits(b);
        let ord = compare_numbers(da, db);
        if ord != Ordering::Equal {
            return ord;
        }
        a = ra;
        b = rb;
    }
    Ordering::Equal
}

/// dpkg's `order()`: `~` before the end of the string, which is before letters, which
/// are before everything else. `None` is the end of the string (or a digit run).
fn char_order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

fn split_digits(s: &[u8]) -> (&[u8], &[u8]) {
    let n = s.iter().take_while(|c| c.is_ascii_digit()).count();
    s.split_at(n)
}

fn compare_numbers(a: &[u8], b: &[u8]) -> Ordering {
    let strip = |s: &[u8]| -> usize { s.iter().take_while(|&&c| c == b'0').count() };
    let a = &a[strip(a)..];
    let b = &b[strip(b)..];
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// A half-open range of versions, `[from, before)`; a missing bound is open. Bounds
/// are text so that ranges can live in `const` tables; every bound in the tables is
/// checked by a test to be a valid [`Version`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionRange {
    /// The first version in the range.
    pub from: Option<&'static str>,
    /// The first version after the range.
    pub before: Option<&'static str>,
}

impl VersionRange {
    /// Every version.
    pub const ANY: VersionRange = VersionRange {
        from: None,
        before: None,
    };

    /// `from` and everything after it.
    pub const fn since(from: &'static str) -> VersionRange {
        VersionRange {
            from: Some(from),
            before: None,
        }
    }

    /// Everything before `before`.
    pub const fn before(before: &'static str) -> VersionRange {
        VersionRange {
            from: None,
            before: Some(before),
        }
    }

    /// `[from, before)`.
    pub const fn between(from: &'static str, before: &'static str) -> VersionRange {
        VersionRange {
            from: Some(from),
            before: Some(before),
        }
    }

    pub fn contains(&self, version: &Version) -> bool {
        let v = version.as_str();
        // A match rather than `Option::is_none_or`, which needs Rust 1.82 (the
        // workspace supports 1.80).
        let from_ok = match self.from {
            Some(from) => compare_versions(v, from) != Ordering::Less,
            None => true,
        };
        let before_ok = match self.before {
            Some(before) => compare_versions(v, before) == Ordering::Less,
            None => true,
        };
        from_ok && before_ok
    }
}

impl fmt::Display for VersionRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.from, self.before) {
            (None, None) => f.write_str("any version"),
            (Some(from), None) => write!(f, ">= {from}"),
            (None, Some(before)) => write!(f, "< {before}"),
            (Some(from), Some(before)) => write!(f, ">= {from}, < {before}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn debian_kernel_releases_order() {
        let mut releases = [
            v("6.12.111+deb12-amd64"),
            v("6.1.0-50-amd64"),
            v("6.1.0-47-amd64"),
            v("6.1.0-9-amd64"),
            v("5.10.0-32-amd64"),
        ];
        releases.sort();
        let sorted: Vec<&str> = releases.iter().map(Version::as_str).collect();
        assert_eq!(
            sorted,
            [
                "5.10.0-32-amd64",
                "6.1.0-9-amd64",
                "6.1.0-47-amd64",
                "6.1.0-50-amd64",
                "6.12.111+deb12-amd64",
            ]
        );
        assert!(v("6.1.0-47-amd64") < v("6.1.0-50-amd64"));
        assert!(v("6.1.0-50-amd64") < v("6.12.111+deb12-amd64"));
    }

    #[test]
    fn numbers_compare_as_numbers_not_text() {
        assert!(v("6.9") < v("6.10"));
        assert!(v("6.2.16") < v("6.12.1"));
        assert!(v("5.19.17") < v("6.0"));
        assert!(v("2.36") < v("2.100"));
    }

    #[test]
    fn other_distributions_order_too() {
        // Fedora and Ubuntu spellings.
        assert!(v("6.5.6-300.fc39.x86_64") < v("6.5.12-300.fc39.x86_64"));
        assert!(v("6.8.0-31-generic") < v("6.8.0-100-generic"));
        assert!(v("5.15.0-1-generic") < v("6.8.0-1-generic"));
    }

    #[test]
    fn release_candidates_sort_before_their_release() {
        assert!(v("6.16-rc1") < v("6.16-rc2"));
        assert!(v("6.16-rc7") < v("6.16"));
        assert!(v("6.16.0-rc3") < v("6.16.0"));
        assert!(v("6.15.11") < v("6.16-rc1"));
        // "-rc" not followed by a digit is not a release candidate.
        assert!(v("6.16") < v("6.16-rcfoo"));
    }

    #[test]
    fn package_versions_order_like_dpkg() {
        // A package revision sorts after the bare upstream version it packages.
        assert!(v("3.17.1") < v("3.17.1-2"));
        assert!(v("3.17.1-2") < v("3.17.1-2+deb12u1"));
        assert!(v("3.17.1-2+deb12u1") < v("3.17.1-2+deb12u2"));
        assert!(v("3.17.1-2+deb12u2") < v("3.17.2"));
        assert!(v("2.36") < v("2.36-9+deb12u8"));
        assert!(v("2.36-9+deb12u7") < v("2.36-9+deb12u8"));
        assert!(v("2.36-9+deb12u8") < v("2.36-9+deb12u14"));
        assert!(v("2.36-9+deb12u14") < v("2.37"));
        // Tilde sorts before everything, even the end.
        assert!(v("1.14.10-1~deb12u1") < v("1.14.10-1"));
    }

    #[test]
    fn order_is_total_and_agrees_with_eq() {
        assert_eq!(compare_versions("6.01", "6.1"), Ordering::Equal);
        assert_ne!(v("6.01"), v("6.1"));
        assert_ne!(v("6.01").cmp(&v("6.1")), Ordering::Equal);
        assert_eq!(v("6.1.0").cmp(&v("6.1.0")), Ordering::Equal);
    }

    #[test]
    fn huge_numbers_do_not_overflow() {
        let big = format!("1{}", "0".repeat(40));
        let bigger = format!("2{}", "0".repeat(40));
        assert_eq!(compare_versions(&big, &bigger), Ordering::Less);
        assert_eq!(compare_versions(&bigger, "99"), Ordering::Greater);
    }

    #[test]
    fn invalid_versions_are_refused_with_a_reason() {
        for (bad, why) in [
            ("", "1 to 64"),
            ("linux-6.1", "start with a digit"),
            ("6.1/../x", "contains '/'"),
            ("6.1 0", "contains ' '"),
            ("6.1\0", "contains '\\0'"),
            ("1:2.36-9", "epoch"),
        ] {
            let err = Version::parse(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        assert!(Version::parse(&"6".repeat(65)).is_err());
        assert!(Version::parse(&"6".repeat(64)).is_ok());
    }

    #[test]
    fn ranges_are_half_open() {
        let r = VersionRange::between("4.1", "4.1.1");
        assert!(!r.contains(&v("4.0.9")));
        assert!(r.contains(&v("4.1")));
        assert!(r.contains(&v("4.1.0")));
        assert!(!r.contains(&v("4.1.1")));
        assert!(VersionRange::ANY.contains(&v("0")));
        assert!(VersionRange::since("5.13").contains(&v("5.13")));
        assert!(!VersionRange::before("5.13").contains(&v("5.13")));
        assert_eq!(r.to_string(), ">= 4.1, < 4.1.1");
        assert_eq!(VersionRange::ANY.to_string(), "any version");
    }
}
