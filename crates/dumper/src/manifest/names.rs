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
    /// The path of an image file in a workload directory: a [`FileName`] for the final
    /// dump's files, or `pre-<i>/<file name>` for those of pre-dump `i` (1 to
    /// [`MAX_PRE_DUMPS`]). Never more than one directory deep, never `..`, never
    /// `parent` (CRIU's name for the link to the parent images).
    ImageName,
    check_image_name
);

string_newtype!(
    /// Where CRIU put a `parent` link in a workload directory: `parent` (next to the
    /// final dump's files) or `pre-<i>/parent` (in pre-dump `i`'s directory).
    LinkName,
    check_link_name
);

string_newtype!(
    /// What a `parent` link points to, relative to the directory it is in: `pre-<j>`
    /// or `../pre-<j>`. Only these shapes exist, so no link can lead out of its
    /// workload directory.
    LinkTarget,
    check_link_target
);

string_newtype!(
    /// A BLAKE3 digest as 64 lowercase hex digits.
    Checksum,
    check_checksum
);

/// The most pre-dump iterations a workload may have. Each is a directory of images
/// that a restore reads through a chain of links; beyond a few, what a workload
/// dirties between two pre-dumps stops shrinking.
pub const MAX_PRE_DUMPS: u32 = 16;

/// The name CRIU gives the link to a dump's parent images.
pub const PARENT_LINK: &str = "parent";

/// The directory of pre-dump iteration `i` in a workload directory.
pub fn pre_dump_dir(i: u32) -> String {
    format!("pre-{i}")
}

/// The iteration `s` names if it is a pre-dump directory name (`pre-1` to
/// `pre-16`, written as [`pre_dump_dir`] writes it: no sign, no leading zero).
pub fn pre_dump_index(s: &str) -> Option<u32> {
    let digits = s.strip_prefix("pre-")?;
    if digits.is_empty()
        || digits.len() > 2
        || digits.starts_with('0')
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let i: u32 = digits.parse().ok()?;
    (1..=MAX_PRE_DUMPS).contains(&i).then_some(i)
}

impl ImageName {
    /// The pre-dump iteration whose directory holds the file; `None` for the final
    /// dump's files.
    pub fn pre_dump(&self) -> Option<u32> {
        self.0
            .split_once('/')
            .and_then(|(dir, _)| pre_dump_index(dir))
    }

    /// The file's own name, without the directory.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

impl From<FileName> for ImageName {
    fn from(name: FileName) -> ImageName {
        ImageName(name.0)
    }
}

impl LinkName {
    /// The pre-dump iteration whose directory holds the link; `None` for the top one.
    pub fn pre_dump(&self) -> Option<u32> {
        self.0
            .split_once('/')
            .and_then(|(dir, _)| pre_dump_index(dir))
    }
}

impl LinkTarget {
    /// The pre-dump iteration the link points to.
    pub fn pre_dump(&self) -> u32 {
        // Checked when made: one of the two shapes.
        pre_dump_index(self.0.strip_prefix("../").unwrap_or(&self.0)).unwrap_or(0)
    }

    /// Whether it points out of its own directory (`../pre-<j>`): the shape of a link
    /// inside a pre-dump directory.
    pub fn is_sibling(&self) -> bool {
        self.0.starts_with("../")
    }
}

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

as_path!(GenerationId, WorkloadName, FileName, ImageName, LinkName);

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

fn check_image_name(s: &str) -> Result<(), ValidationError> {
    const WHAT: &str = "image file name";
    // CRIU takes an entry of this name for the link to the parent images, whatever
    // it is, so a file of this name would derail a restore.
    if s.rsplit('/').next() == Some(PARENT_LINK) {
        return Err(ValidationError::new(
            WHAT,
            s,
            "is the name of CRIU's parent links, never of an image file",
        ));
    }
    let Some((dir, file)) = s.split_once('/') else {
        return check_file_name(s);
    };
    if pre_dump_index(dir).is_none() {
        return Err(ValidationError::new(
            WHAT,
            s,
            format!(
                "is in directory {}, but the only directories of a workload are the \
                 pre-dump ones, pre-1 to pre-{MAX_PRE_DUMPS}",
                shown(dir)
            ),
        ));
    }
    check_file_name(file)
        .map_err(|e| ValidationError::new(WHAT, s, format!("in {dir}/: {}", e.reason)))
}

fn check_link_name(s: &str) -> Result<(), ValidationError> {
    let ok = s == PARENT_LINK
        || s.split_once('/')
            .is_some_and(|(dir, file)| pre_dump_index(dir).is_some() && file == PARENT_LINK);
    if !ok {
        return Err(ValidationError::new(
            "link name",
            s,
            format!(
                "must be \"parent\" or \"pre-<i>/parent\" (i from 1 to {MAX_PRE_DUMPS}): \
                 the only links a workload directory holds are CRIU's parent links"
            ),
        ));
    }
    Ok(())
}

fn check_link_target(s: &str) -> Result<(), ValidationError> {
    if pre_dump_index(s.strip_prefix("../").unwrap_or(s)).is_none() {
        return Err(ValidationError::new(
            "link target",
            s,
            format!(
                "must be \"pre-<j>\" or \"../pre-<j>\" (j from 1 to {MAX_PRE_DUMPS}): a \
                 parent link may only point to a pre-dump directory of its own workload"
            ),
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

    /// Hashes `reader` (the file at `path`) in large chunks, each spread over every CPU:
    /// the commit and the restore's verification sit inside the blackout, and one core
    /// hashing while the others idle was most of the commit's time.
    pub(crate) fn of_reader(
        mut reader: impl std::io::Read,
        path: &Path,
    ) -> Result<(Checksum, u64)> {
        const CHUNK: usize = 4 << 20;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; CHUNK];
        loop {
            // Fill the whole chunk (short reads happen) so update_rayon gets work to split.
            let mut filled = 0;
            while filled < CHUNK {
                match reader.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e).at("reading", path),
                }
            }
            if filled == 0 {
                break;
            }
            hasher.update_rayon(&buf[..filled]);
            if filled < CHUNK {
                break;
            }
        }
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
    fn pre_dump_dirs() {
        assert_eq!(pre_dump_index("pre-1"), Some(1));
        assert_eq!(pre_dump_index(&pre_dump_dir(16)), Some(16));
        for bad in [
            "pre-0", "pre-17", "pre-01", "pre-", "pre-+1", "pre-1a", "pre1", "x-1",
        ] {
            assert_eq!(pre_dump_index(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn image_names() {
        for (ok, pre, file) in [
            ("pages-1.img", None, "pages-1.img"),
            ("pre-1/pages-1.img", Some(1), "pages-1.img"),
            ("pre-16/inventory.img", Some(16), "inventory.img"),
            ("pre-1", None, "pre-1"),
        ] {
            let name = ImageName::new(ok).unwrap();
            assert_eq!((name.pre_dump(), name.file_name()), (pre, file), "{ok:?}");
        }
        for (bad, why) in [
            ("pre-1/../x", "in pre-1/: contains a path separator"),
            ("pre-1/..", "in pre-1/: names a directory"),
            ("pre-x/a", "only directories of a workload"),
            ("pre-17/a", "only directories of a workload"),
            ("a/b/c", "only directories of a workload"),
            ("pre-1/a/b", "in pre-1/: contains a path separator"),
            ("/etc/passwd", "in directory \"\""),
            ("../x", "in directory \"..\""),
            ("pre-1/", "in pre-1/: must be 1 to 255"),
            ("parent", "CRIU's parent links"),
            ("pre-2/parent", "CRIU's parent links"),
        ] {
            let err = ImageName::new(bad).unwrap_err();
            assert!(err.to_string().contains(why), "{bad:?}: {err}");
            assert!(err.to_string().starts_with("image file name"), "{err}");
        }
        let plain: ImageName = FileName::new("core-1.img").unwrap().into();
        assert_eq!(plain.as_str(), "core-1.img");
    }

    #[test]
    fn links() {
        assert_eq!(LinkName::new("parent").unwrap().pre_dump(), None);
        assert_eq!(LinkName::new("pre-3/parent").unwrap().pre_dump(), Some(3));
        for bad in [
            "",
            "parent/",
            "pre-1/parent/x",
            "pre-0/parent",
            "x/parent",
            "pre-1/core.img",
        ] {
            let err = LinkName::new(bad).unwrap_err();
            assert!(
                err.to_string().contains("CRIU's parent links"),
                "{bad:?}: {err}"
            );
        }
        let t = LinkTarget::new("pre-2").unwrap();
        assert_eq!((t.pre_dump(), t.is_sibling()), (2, false));
        let t = LinkTarget::new("../pre-1").unwrap();
        assert_eq!((t.pre_dump(), t.is_sibling()), (1, true));
        for bad in [
            "/etc",
            "../../x",
            "../../pre-1",
            "./pre-1",
            "pre-1/",
            "..",
            "pre-0",
            "",
        ] {
            let err = LinkTarget::new(bad).unwrap_err();
            assert!(
                err.to_string().contains("of its own workload"),
                "{bad:?}: {err}"
            );
        }
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

    /// A reader that returns at most 1000 bytes a call, as pipes and some file systems do.
    struct Dribble<'a>(&'a [u8]);
    impl std::io::Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(1000);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_file_hashed_in_chunks_matches_its_one_shot_hash() {
        // Around the 4 MiB chunk: empty, below, exactly one, one and a bit, several.
        for len in [
            0,
            1,
            (4 << 20) - 1,
            4 << 20,
            (4 << 20) + 1,
            (9 << 20) + 12345,
        ] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4099) as u8).collect();
            let path = Path::new("/test/image");
            let (c, n) = Checksum::of_reader(&bytes[..], path).unwrap();
            assert_eq!(
                (c.as_str(), n),
                (Checksum::of_bytes(&bytes).as_str(), len as u64)
            );
            let (c, n) = Checksum::of_reader(Dribble(&bytes), path).unwrap();
            assert_eq!(
                (c.as_str(), n),
                (Checksum::of_bytes(&bytes).as_str(), len as u64)
            );
        }
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
