//! Errors of the configuration loader. Each one names the file, and the line and column
//! where one is known, says what is wrong and gives a hint on what to change.

use super::settings::{AreaKind, SuspendCompression, WorkloadKind};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// A line and column in a file, both counted from 1; the column counts characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` of `text`. Scans from the start: configuration
    /// files are small, and this only runs for values that end up in an error.
    pub fn of_offset(text: &str, offset: usize) -> Position {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
        Position {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

/// The positions of many byte offsets of one text, each found in logarithmic time.
/// [`Position::of_offset`] scans from the start, so locating every value of a file
/// that way took time quadratic in its size: a 900 KB file of 16000 workloads took
/// 25 s to load.
pub(crate) struct PositionIndex<'a> {
    text: &'a str,
    /// The byte offset where each line starts; the first is 0.
    line_starts: Vec<usize>,
    /// How many characters the text has before each block of [`Self::BLOCK`] bytes.
    chars_before_block: Vec<usize>,
}

impl<'a> PositionIndex<'a> {
    const BLOCK: usize = 256;

    pub(crate) fn new(text: &'a str) -> PositionIndex<'a> {
        let bytes = text.as_bytes();
        let newlines = bytes.iter().enumerate().filter(|(_, &b)| b == b'\n');
        let line_starts = std::iter::once(0)
            .chain(newlines.map(|(newline, _)| newline + 1))
            .collect();
        let mut chars_before_block = Vec::with_capacity(bytes.len() / Self::BLOCK + 1);
        let mut chars = 0;
        chars_before_block.push(0);
        for block in bytes.chunks(Self::BLOCK) {
            chars += char_count(block);
            chars_before_block.push(chars);
        }
        PositionIndex {
            text,
            line_starts,
            chars_before_block,
        }
    }

    /// The same as [`Position::of_offset`] for this text.
    pub(crate) fn position(&self, offset: usize) -> Position {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        // Lines that start at or before the offset; the first always does.
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let line_start = self.line_starts[line - 1];
        Position {
            line,
            column: self.chars_before(offset) - self.chars_before(line_start) + 1,
        }
    }

    /// The number of characters before byte `offset`, a character boundary.
    fn chars_before(&self, offset: usize) -> usize {
        let block = offset / Self::BLOCK;
        let rest = &self.text.as_bytes()[block * Self::BLOCK..offset];
        self.chars_before_block[block] + char_count(rest)
    }
}

/// The characters that start in `bytes`, a slice of UTF-8: all bytes but the
/// continuation bytes `10xxxxxx`.
fn char_count(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b & 0xc0 != 0x80).count()
}

/// Where something was configured: `path:line:column`, or only the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub path: PathBuf,
    pub position: Option<Position>,
}

impl Location {
    /// A whole file, when no better position is known.
    pub fn file(path: &Path) -> Location {
        Location {
            path: path.to_path_buf(),
            position: None,
        }
    }

    /// Byte `offset` of `text`, the contents of `path`.
    pub fn at_offset(path: &Path, text: &str, offset: usize) -> Location {
        Location {
            path: path.to_path_buf(),
            position: Some(Position::of_offset(text, offset)),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(Position { line, column }) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        Ok(())
    }
}

/// Why the configuration could not be loaded. Displayed as
/// `path[:line:column]: message` followed by an indented `hint:` line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A configuration file exists but could not be read.
    Read { path: PathBuf, err: io::Error },
    /// A drop-in directory exists but could not be listed.
    ReadDir { path: PathBuf, err: io::Error },
    /// A configuration file over [`MAX_CONFIG_SIZE`](super::MAX_CONFIG_SIZE) bytes,
    /// refused unread.
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    /// Not TOML, or not this schema: bad syntax, an unknown key, a wrong type, an
    /// unknown `kind`. `message` is the TOML parser's.
    Parse {
        at: Location,
        message: String,
        hint: String,
    },
    /// The merged configuration breaks a rule; `at` is where the offending value was set.
    /// Boxed: `Invalid` is large, and every `Result` of the loader carries this type.
    Invalid { at: Location, problem: Box<Invalid> },
}

impl ConfigError {
    pub(crate) fn invalid(at: Location, problem: Invalid) -> ConfigError {
        ConfigError::Invalid {
            at,
            problem: Box::new(problem),
        }
    }

    /// The file, and where known the line and column, of the problem.
    pub fn location(&self) -> Location {
        match self {
            ConfigError::Read { path, .. }
            | ConfigError::ReadDir { path, .. }
            | ConfigError::TooLarge { path, .. } => Location::file(path),
            ConfigError::Parse { at, .. } | ConfigError::Invalid { at, .. } => at.clone(),
        }
    }

    /// What is wrong, without the location.
    pub fn message(&self) -> String {
        match self {
            ConfigError::Read { err, .. } => format!("cannot read the file: {err}"),
            ConfigError::ReadDir { err, .. } => {
                format!("cannot list the drop-in directory: {err}")
            }
            ConfigError::TooLarge { size, limit, .. } => {
                format!("the file is {size} bytes long, over the limit of {limit} bytes")
            }
            ConfigError::Parse { message, .. } => message.clone(),
            ConfigError::Invalid { problem, .. } => problem.to_string(),
        }
    }

    /// What to do about it.
    pub fn hint(&self) -> String {
        match self {
            ConfigError::Read { err, .. } if err.kind() == io::ErrorKind::NotFound => {
                "the name is listed but cannot be opened, probably a dangling symlink: \
                 fix or remove it (a symlink to /dev/null masks a drop-in)"
                    .to_string()
            }
            ConfigError::Read { .. } => {
                "make the file readable by root, or remove it; upgraded reads all of \
                 its configuration files or refuses to start"
                    .to_string()
            }
            ConfigError::ReadDir { .. } => {
                "make the directory readable by root, or remove it if it holds no drop-ins"
                    .to_string()
            }
            ConfigError::TooLarge { .. } => {
                "a configuration file takes a few kilobytes: check that this is the \
                 file you meant, and split a large one into drop-ins"
                    .to_string()
            }
            ConfigError::Parse { hint, .. } => hint.clone(),
            ConfigError::Invalid { problem, .. } => problem.hint(),
        }
    }
}

// Written by hand so that every variant shares the `location: message / hint:` layout.
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}\n  hint: {}",
            self.location(),
            self.message(),
            self.hint()
        )
    }
}

/// A rule broken by the merged configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("{key} = {value} is out of range {min}..={max}")]
    OutOfRange {
        key: &'static str,
        value: i64,
        min: i64,
        max: i64,
        default: Option<i64>,
    },
    #[error("area.{key} does not apply to an area of kind = \"{kind}\"")]
    AreaKeyNotForKind { key: &'static str, kind: AreaKind },
    #[error("suspend.compress = \"{value}\" does not apply to an area of kind = \"pmem\"")]
    CompressOnPmem { value: SuspendCompression },
    #[error("an area of kind = \"{kind}\" needs area.{key}")]
    AreaKeyMissing { key: &'static str, kind: AreaKind },
    #[error("{} has no `{key}`", workload_label(.workload.as_deref()))]
    WorkloadKeyMissing {
        workload: Option<String>,
        key: &'static str,
        kind: Option<WorkloadKind>,
    },
    #[error("workload {workload:?}: `{key}` does not select a workload of kind = \"{kind}\"")]
    SelectorNotForKind {
        workload: String,
        key: &'static str,
        kind: WorkloadKind,
    },
    #[error("workload name {name:?} is used twice in this file (first at {first})")]
    DuplicateWorkload { name: String, first: Location },
    #[error("workloads {name:?} and {other:?} (at {other_at}) select the same {kind} {target:?}")]
    SameTarget {
        name: String,
        other: String,
        other_at: Location,
        kind: WorkloadKind,
        target: String,
    },
    #[error("health.settle_secs = {settle} is longer than health.timeout_secs = {timeout}")]
    SettleLongerThanTimeout { settle: u32, timeout: u32 },
    #[error("{key} = {value} is not valid: {reason}")]
    BadValue {
        key: String,
        value: String,
        reason: String,
        hint: String,
    },
}

fn workload_label(name: Option<&str>) -> String {
    match name {
        Some(name) => format!("workload {name:?}"),
        None => "this [[workload]]".to_string(),
    }
}

impl Invalid {
    /// What to change to fix it.
    pub fn hint(&self) -> String {
        match self {
            Invalid::OutOfRange {
                key,
                min,
                max,
                default,
                ..
            } => {
                let short = key.rsplit('.').next().unwrap_or(key);
                let mut hint = format!("set {short} to a value from {min} to {max}");
                if let Some(default) = default {
                    hint.push_str(&format!(", or remove it to get the default ({default})"));
                }
                hint
            }
            Invalid::CompressOnPmem { .. } => "a pmem area is memory: compressing images \
                into it costs CPU time and saves no disk; remove compress from [suspend] \
                (docs/suspend-encryption.md)"
                .to_string(),
            Invalid::AreaKeyNotForKind { key, kind } => format!(
                "{}; remove `{key}`, or change area.kind",
                area_keys_sentence(*kind)
            ),
            Invalid::AreaKeyMissing { key, kind } => {
                let example = match kind {
                    AreaKind::Pmem => "\"/dev/pmem0\"",
                    AreaKind::Disk | AreaKind::Directory => {
                        "\"/dev/disk/by-id/nvme-EXAMPLE-part3\" (a by-id name stays the same \
                         across boots, /dev/sdX may not)"
                    }
                };
                format!(
                    "add {key} = {example} to [area]; {}",
                    area_keys_sentence(*kind)
                )
            }
            Invalid::WorkloadKeyMissing { key, kind, .. } => match (*key, kind) {
                ("name", _) => "add name = \"...\", unique among the workloads, made of \
                     letters, digits and . _ @ : - (at most 64 characters)"
                    .to_string(),
                ("kind", _) => format!("add kind = one of {}", quoted_kinds()),
                (_, Some(kind)) => format!(
                    "a workload of kind = \"{kind}\" is selected by `{key}`: add e.g. {}",
                    kind.selector_example()
                ),
                (_, None) => format!("add `{key}`"),
            },
            Invalid::SelectorNotForKind { key, kind, .. } => {
                let wanted = kind.selector_key();
                let kinds: Vec<&str> = WorkloadKind::ALL
                    .iter()
                    .filter(|k| k.selector_key() == *key)
                    .map(|k| k.as_str())
                    .collect();
                format!(
                    "a workload of kind = \"{kind}\" is selected by `{wanted}` (e.g. {}); \
                     remove `{key}`, or set kind to {} if `{key}` is what you meant",
                    kind.selector_example(),
                    kinds.join(" or ")
                )
            }
            Invalid::DuplicateWorkload { .. } => {
                "rename one of them; to replace a workload defined in another file, \
                 give its name in a drop-in that is read later"
                    .to_string()
            }
            Invalid::SameTarget { .. } => {
                "keep one of the two workloads: the same processes cannot be checkpointed \
                 and restored twice"
                    .to_string()
            }
            Invalid::SettleLongerThanTimeout { .. } => {
                "raise health.timeout_secs or lower health.settle_secs: the health checks \
                 only start once the settle time is over, and must finish within the timeout"
                    .to_string()
            }
            Invalid::BadValue { hint, .. } => hint.clone(),
        }
    }
}

fn area_keys_sentence(kind: AreaKind) -> String {
    match kind {
        AreaKind::Directory => "a directory area uses `path` (default /var/lib/upgraded)",
        AreaKind::Disk => "a disk area uses `device`",
        AreaKind::Pmem => "a pmem area uses `device` and, for emulated pmem, `memmap`",
    }
    .to_string()
}

pub(crate) fn quoted_kinds() -> String {
    let kinds: Vec<String> = WorkloadKind::ALL
        .iter()
        .map(|k| format!("\"{k}\""))
        .collect();
    kinds.join(", ")
}

/// Turns the TOML parser's error into one that says where, in which file, and what to do.
pub(crate) fn parse_error(path: &Path, text: &str, err: &toml::de::Error) -> ConfigError {
    let at = match err.span() {
        Some(span) => Location::at_offset(path, text, span.start),
        None => Location::file(path),
    };
    // The parser's message may span lines ("invalid table header\nexpected ..."); keep
    // the whole error on one line so that it stays greppable in the journal.
    let message = err.message().trim().lines().collect::<Vec<_>>().join("; ");
    ConfigError::Parse {
        at,
        hint: toml_hint(err.message()),
        message,
    }
}

/// A hint for the TOML parser's (serde's) message. Serde's wording is stable
/// ("unknown field `x`, expected one of `a`, `b`"); the tests pin the cases used here.
fn toml_hint(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let (unknown, valid) = unknown_and_expected(rest);
        if valid.is_empty() {
            return "this table takes no keys: remove the key".to_string();
        }
        return format!(
            "{}valid keys here are: {}",
            did_you_mean(unknown, &valid),
            valid.join(", ")
        );
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        let (unknown, valid) = unknown_and_expected(rest);
        return format!(
            "{}valid values are: {}",
            did_you_mean(unknown, &valid),
            valid
                .iter()
                .map(|v| format!("\"{v}\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if message.starts_with("invalid type") || message.starts_with("invalid value") {
        let expected = message.rsplit("expected ").next().unwrap_or_default();
        return if expected.starts_with("a string") {
            "put the value in double quotes, e.g. key = \"value\"".to_string()
        } else if expected.starts_with("i64") || expected.starts_with("an integer") {
            "write a whole number without quotes: 3, not \"3\"".to_string()
        } else if expected.starts_with("a boolean") {
            "write true or false, without quotes".to_string()
        } else if expected.starts_with("a sequence") {
            "write a list in brackets, e.g. [\"a\", \"b\"]; workloads are tables written \
             [[workload]], with double brackets"
                .to_string()
        } else if expected.starts_with("struct") {
            "this key is a section: write it as a [section] header with its keys on the \
             lines below"
                .to_string()
        } else {
            format!("give a value of the expected type ({expected})")
        };
    }
    if message.starts_with("duplicate key") {
        return "a key may appear once per table: remove one of the two".to_string();
    }
    "fix the TOML syntax here: strings need double quotes, sections are written \
     [name], workloads [[workload]], lists [\"a\", \"b\"]; upgraded.toml.example shows \
     every key"
        .to_string()
}

/// Splits "`x`, expected one of `a`, `b`" into ("x", ["a", "b"]).
fn unknown_and_expected(rest: &str) -> (&str, Vec<&str>) {
    // Text between backticks sits at the odd indices of a split on backticks.
    let mut quoted = rest.split('`').skip(1).step_by(2);
    let unknown = quoted.next().unwrap_or_default();
    (unknown, quoted.collect())
}

fn did_you_mean(unknown: &str, valid: &[&str]) -> String {
    let best = valid
        .iter()
        .map(|v| (edit_distance(unknown, v), *v))
        .min_by_key(|(distance, _)| *distance);
    match best {
        // Two edits catch typos and near-misses such as `max_attempt` or `pid_`
        // without suggesting unrelated keys for short names.
        Some((distance, candidate)) if distance <= 2.min(unknown.len().max(1)) => {
            format!("did you mean `{candidate}`? ")
        }
        _ => String::new(),
    }
}

/// Levenshtein distance, on characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_counts_lines_and_characters_from_one() {
        let text = "a = 1\nbé = 2\n\nc";
        assert_eq!(
            Position::of_offset(text, 0),
            Position { line: 1, column: 1 }
        );
        assert_eq!(
            Position::of_offset(text, 6),
            Position { line: 2, column: 1 }
        );
        // 'é' is two bytes but one column.
        let after_e = text.find(" = 2").unwrap();
        assert_eq!(
            Position::of_offset(text, after_e),
            Position { line: 2, column: 3 }
        );
        assert_eq!(
            Position::of_offset(text, text.len()),
            Position { line: 4, column: 2 }
        );
        // Past the end or inside a character: clamped, never a panic.
        assert_eq!(
            Position::of_offset(text, 1000),
            Position { line: 4, column: 2 }
        );
        assert_eq!(
            Position::of_offset(text, 8),
            Position { line: 2, column: 2 }
        );
    }

    #[test]
    fn position_index_agrees_with_a_scan_from_the_start() {
        let long_line = format!("k = \"{}é\"\n", "ab€".repeat(200));
        let texts = [
            "",
            "\n",
            "a = 1\nbé = 2\n\nc",
            long_line.as_str(),
            &long_line.repeat(3),
        ];
        for text in texts {
            let index = PositionIndex::new(text);
            // Past the end and inside a character included.
            for offset in 0..text.len() + 3 {
                assert_eq!(
                    index.position(offset),
                    Position::of_offset(text, offset),
                    "offset {offset} of {text:?}"
                );
            }
        }
    }

    #[test]
    fn location_displays_as_path_line_column() {
        let at = Location::at_offset(Path::new("/etc/x.toml"), "a\nb", 2);
        assert_eq!(at.to_string(), "/etc/x.toml:2:1");
        assert_eq!(
            Location::file(Path::new("/etc/x.toml")).to_string(),
            "/etc/x.toml"
        );
    }

    #[test]
    fn edit_distance_is_levenshtein() {
        assert_eq!(edit_distance("kind", "kind"), 0);
        assert_eq!(edit_distance("knid", "kind"), 2);
        assert_eq!(edit_distance("kindd", "kind"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("timeout", "keep"), 6);
    }

    #[test]
    fn suggestions_only_for_near_misses() {
        assert_eq!(
            did_you_mean("max_attempt", &["max_attempts"]),
            "did you mean `max_attempts`? "
        );
        assert_eq!(did_you_mean("colour", &["kind", "path"]), "");
        assert_eq!(did_you_mean("x", &["kind"]), "");
    }

    #[test]
    fn expected_list_is_split_out_of_serde_messages() {
        assert_eq!(
            unknown_and_expected("`kindd`, expected one of `kind`, `path`, `device`"),
            ("kindd", vec!["kind", "path", "device"])
        );
        assert_eq!(
            unknown_and_expected("`x`, expected `keep`"),
            ("x", vec!["keep"])
        );
        assert_eq!(
            unknown_and_expected("`x`, there are no fields"),
            ("x", vec![])
        );
    }

    #[test]
    fn every_error_has_a_location_message_and_hint() {
        let err = ConfigError::Read {
            path: PathBuf::from("/etc/upgraded/upgraded.toml"),
            err: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        let text = err.to_string();
        assert!(
            text.starts_with("/etc/upgraded/upgraded.toml: cannot read the file"),
            "{text}"
        );
        assert!(text.contains("\n  hint: make the file readable"), "{text}");
    }
}
