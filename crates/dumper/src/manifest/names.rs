//! Validated names and checksums. Generation ids, workload names and image file names
//! become path components under the persistent area, so each is checked once, when it
//! is made, and cannot exist unchecked: the types have no other constructor, and their
//! `Deserialize` runs the same check.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result};

/// Why a value was refused: the field (a path such as `workloads[1].images[0].name`),
/// the value escaped and quoted, and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {value}: {reason}")]
pub struct ValidationError {
    pub field: String,
    pub value: String,
    pub reason: String,
}

impl ValidationError {
    pub(crate) fn new(field: impl Into<String>, value: &str, reason: impl Into<String>) -> Self {
        ValidationError {
            field: field.into(),
            value: shown(value),
            reason: reason.into(),
        }
    }

    /// The same error, reported for the field at `field` (e.g. in a manifest).
    pub(crate) fn at(mut self, field: impl Into<String>) -> Self {
        self.field = field.into();
        self
    }
}

/// A value for an error message: quoted, control characters and quotes escaped, and cut
/// short so that a hostile megabyte-long name does not become a megabyte-long message.
pub fn shown(value: &str) -> String {
    const MAX_CHARS: usize = 80;
    let mut out = String::from("\"");
    for (i, c) in value.chars().enumerate() {
        if i == MAX_CHARS {
            out.push_str(&format!("\"... ({} bytes)", value.len()));
            return out;
        }
        out.extend(c.escape_debug());
    }
    out.push('"');
    out
}

/// The rules shared by the names that become directory or file names.
struct NameRule {
    what: &'static str,
    max_len: usize,
    extra_chars: &'static [char],
    allowed: &'static str,
}

impl NameRule {
    fn check(&self, s: &str) -> Result<(), ValidationError> {
        let refuse = |reason: String| Err(ValidationError::new(self.what, s, reason));
        if s.is_empty() || s.len() > self.max_len {
            return refuse(format!("must be 1 to {} characters long", self.max_len));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || self.extra_chars.contains(c)))
        {
            return refuse(format!(
                "contains {}, but only {} are allowed",
                shown_char(c),
                self.allowed
            ));
        }
        // Also rules out "." and "..". Names starting with '.' are reserved for the
        // area's own temporary entries (`.tmp-<id>`, `.del-<id>`), which must never be
        // mistaken for a generation or a workload.
        if s.starts_with('.') {
            return refuse("must not start with '.'".into());
        }
        Ok(())
    }
}

fn shown_char(c: char) -> String {
    match c {
        '/' => "a path separator '/'".into(),
        '\0' => "a NUL byte".into(),
        c => format!("'{}'", c.escape_debug()),
    }
}

const GENERATION_RULE: NameRule = NameRule {
    what: "generation id",
    max_len: 64,
    extra_chars: &['.', '_', '-'],
    allowed: "letters, digits and . _ -",
};

// Longer than generation ids: systemd unit names (e.g. a podman container's
// `libpod-<64 hex digits>.scope`) go up to 255 bytes, which is also NAME_MAX.
const WORKLOAD_RULE: NameRule = NameRule {
    what: "workload name",
    max_len: 255,
    extra_chars: &['.', '_', '-', '@', ':'],
    allowed: "letters, digits and . _ - @ :",
};

/// The manifest's own file name; no workload may be called so, as workload directories
/// sit next to it.
const RESERVED_WORKLOAD_NAMES: &[&str] = &["manifest.json"];

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident, $check:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Checks `value` and wraps it.
            pub fn new(value: impl Into<String>) -> Result<Self, ValidationError> {
                let value = value.into();
                $check(&value)?;
                Ok($name(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = ValidationError;
            fn from_str(s: &str) -> Result<Self, ValidationError> {
                $name::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValidationError;
            fn try_from(s: String) -> Result<Self, ValidationError> {
                $name::new(s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
    };
}

string_newtype!(
    /// A generation id: 1 to 64 of `[A-Za-z0-9._-]`, not starting with '.'. It names
    /// the generation's directory `<area>/generations/<id>/`.
    GenerationId,
    check_generation_id
);

string_newtype!(
    /// A workload name: 1 to 255 of `[A-Za-z0-9._-@:]`, not starting with '.', and not
    /// `manifest.json`. It names the workload's image directory in a generation.
    WorkloadName,
    check_workload_name
);

string_newtype!(
    /// The name of an image file inside a workload directory: any UTF-8 name without
    /// '/', NUL or control characters, not "." or "..", at most 255 bytes (NAME_MAX).
    FileName,
    check_file_name
);

string_newtype!(
    /// A BLAKE3 digest as 64 lowercase hex digits.
    Checksum,
    check_checksum
);

// The names that are path components can be joined to paths directly.
macro_rules! as_path {
    ($($name:ident),*) => {$(
        impl AsRef<Path> for $name {
            fn as_ref(&self) -> &Path {
                Path::new(&self.0)
            }
        }
    )*};
}

as_path!(GenerationId, WorkloadName, FileName);

fn check_generation_id(s: &str) -> Result<(), ValidationError> {
    GENERATION_RULE.check(s)
}

fn check_workload_name(s: &str) -> Result<(), ValidationError> {
    WORKLOAD_RULE.check(s)?;
    if RESERVED_WORKLOAD_NAMES.contains(&s) {
        return Err(ValidationError::new(
            WORKLOAD_RULE.what,
            s,
            "is reserved for the generation's manifest",
        ));
    }
    Ok(())
}

fn check_file_name(s: &str) -> Result<(), ValidationError> {
    let refuse = |reason: String| Err(ValidationError::new("image file name", s, reason));
    if s.is_empty() || s.len() > 255 {
        return refuse("must be 1 to 255 bytes long".into());
    }
    if s == "." || s == ".." {
        return refuse("names a directory, not a file".into());
    }
    if let Some(c) = s.chars().find(|&c| c == '/' || c.is_control()) {
        return refuse(format!(
            "contains {}; image file names are single path components",
            match c {
                '/' | '\0' => shown_char(c),
                c => format!("the control character {}", shown_char(c)),
            }
        ));
    }
    Ok(())
}

fn check_checksum(s: &str) -> Result<(), ValidationError> {
    if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(ValidationError::new(
            "checksum",
            s,
            "must be a BLAKE3 digest: 64 lowercase hex digits",
        ));
    }
    Ok(())
}

impl Checksum {
    /// The checksum of `bytes`.
    pub fn of_bytes(bytes: &[u8]) -> Checksum {
        Checksum::from_hash(&blake3::hash(bytes))
    }

    /// Hashes the file at `path` as a stream (images are gigabytes: never read whole)
    /// and returns its checksum and size.
    pub fn of_file(path: &Path) -> Result<(Checksum, u64)> {
        let file = std::fs::File::open(path).at("opening", path)?;
        Checksum::of_reader(file, path)
    }

    pub(crate) fn of_reader(reader: impl std::io::Read, path: &Path) -> Result<(Checksum, u64)> {
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(reader).at("reading", path)?;
        Ok((Checksum::from_hash(&hasher.finalize()), hasher.count()))
    }

    pub(crate) fn from_hash(hash: &blake3::Hash) -> Checksum {
        Checksum(hash.to_hex().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_ids() {
        for ok in [
            "a",
            "2025-11-24T10.00.00Z",
            "gen_1",
            &"x".repeat(64),
            "a..b",
        ] {
            GenerationId::new(ok).unwrap();
        }
        for (bad, why) in [
            ("", "1 to 64"),
            (".", "start with '.'"),
            ("..", "start with '.'"),
            (".tmp-x", "start with '.'"),
            ("a/b", "path separator"),
            ("/abs", "path separator"),
            ("a\0b", "NUL"),
            ("a b", "' '"),
            ("a@b", "'@'"),
            ("é", "'é'"),
        ] {
            let err = GenerationId::new(bad).unwrap_err();
            assert!(err.to_string().contains(why), "{bad:?}: {err}");
            assert!(err.to_string().starts_with("generation id"), "{err}");
        }
        let long = "x".repeat(65);
        assert!(GenerationId::new(long).is_err());
    }

    #[test]
    fn workload_names() {
        for ok in [
            "user@1000.service",
            "tmux:main",
            "session-3.scope",
            &"w".repeat(255),
        ] {
            WorkloadName::new(ok).unwrap();
        }
        for bad in [
            "",
            "..",
            ".hidden",
            "a/b",
            "manifest.json",
            "a\nb",
            &"w".repeat(256),
        ] {
            assert!(WorkloadName::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn file_names() {
        for ok in [
            "pages-1.img",
            "core-123.img",
            "inventory.img",
            ".x",
            "a..b",
            "ü",
        ] {
            FileName::new(ok).unwrap();
        }
        for (bad, why) in [
            ("", "1 to 255"),
            (".", "directory"),
            ("..", "directory"),
            ("../etc/passwd", "'/'"),
            ("/etc/passwd", "'/'"),
            ("a\0b", "NUL"),
            ("a\nb", "control character"),
        ] {
            let err = FileName::new(bad).unwrap_err();
            assert!(err.to_string().contains(why), "{bad:?}: {err}");
        }
        // 255 bytes of a two-byte character is 510 bytes: the limit is in bytes.
        assert!(FileName::new("ü".repeat(128)).is_err());
        assert!(FileName::new("ü".repeat(127)).is_ok());
    }

    #[test]
    fn checksums() {
        let c = Checksum::of_bytes(b"abc");
        assert_eq!(
            c.as_str(),
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
        Checksum::new(c.as_str()).unwrap();
        assert!(Checksum::new(c.as_str().to_uppercase()).is_err());
        assert!(Checksum::new("abc").is_err());
    }

    #[test]
    fn deserialize_checks() {
        let err = serde_json::from_str::<GenerationId>(r#""../x""#).unwrap_err();
        assert!(err.to_string().contains("path separator"), "{err}");
        let id: GenerationId = serde_json::from_str(r#""g1""#).unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), r#""g1""#);
    }

    #[test]
    fn shown_escapes_and_truncates() {
        assert_eq!(shown("a\0\n\"b"), r#""a\0\n\"b""#);
        let s = shown(&"x".repeat(1000));
        assert!(s.len() < 120, "{s}");
        assert!(s.ends_with("(1000 bytes)"), "{s}");
    }
}
