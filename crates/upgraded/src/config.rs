//! The configuration of `upgraded`: which files are read, how they combine, and the
//! validated [`Settings`] the rest of the program uses.
//!
//! # Files
//!
//! The main file `/etc/upgraded/upgraded.toml` is read first, then the drop-ins
//! `upgraded/config.d/*.toml` under `/usr/lib`, `/run` and `/etc`, all together in the
//! lexical order of their file names. As with systemd, a drop-in in `/etc` hides one of
//! the same name in `/run`, which hides one in `/usr/lib`; a drop-in that is a symlink
//! to `/dev/null` is masked: it hides its namesakes and adds nothing. Hidden files and
//! names not ending in `.toml` are ignored. Every file is optional: with none, the
//! built-in defaults apply.
//!
//! # Merging
//!
//! Each file is a fragment: any key may be left out, an unknown key is an error. The
//! fragments are applied over the defaults in the order above:
//! - a key set by a later file replaces the earlier value (lists too: a later
//!   `kernel.extra_cmdline` replaces the earlier list);
//! - `[[workload]]` entries append; an entry whose `name` an earlier file already
//!   defined replaces that entry whole, at its place in the list (a workload's keys
//!   only make sense together, so they are not merged one by one). A workload cannot
//!   be removed by a later file: mask or override the file that defines it. The same
//!   name twice in one file is an error;
//! - a file that changes `area.kind` drops the `path`, `device` and `memmap` that
//!   earlier files set, since those described the other kind of area.
//!
//! Validation runs once, on the merged result, so a later file can repair a value that
//! an earlier one got wrong. Errors name the file and line of the offending value.
//!
//! # Schema
//!
//! `upgraded.toml.example` at the root of this crate lists every key with its default
//! and range. In short:
//!
//! ```toml
//! [area]
//! kind = "directory"                # or "disk", "pmem"
//! path = "/var/lib/upgraded"        # directory only
//! # device = "/dev/pmem0"           # disk and pmem
//! # memmap = "512M!1G"              # pmem only: <size>[KMG]!<offset>[KMG]
//! min_free_margin_percent = 20      # 0..=100
//!
//! [kernel]
//! known_good = "current"            # or a release, e.g. "6.1.0-47-amd64"
//! extra_cmdline = []                # one argument per element, no "upgraded.*"
//!
//! [health]
//! timeout_secs = 300                # 10..=3600
//! settle_secs = 10                  # 0..=3600, at most timeout_secs
//! scripts_dir = "/etc/upgraded/health.d"
//!
//! [boot]
//! max_attempts = 2                  # 1..=10
//!
//! [retention]
//! keep = 3                          # at least 1
//!
//! [suspend]
//! encrypt = false                   # seal suspend images (docs/suspend-encryption.md)
//! compress = "none"                 # or "zstd": suspend images into one compressed file
//! key_file = "/etc/upgraded/suspend.key"   # absolute
//!
//! [[workload]]
//! name = "web"                      # unique, [A-Za-z0-9._@:-], at most 64
//! kind = "service"                  # process service scope session tmux screen podman nspawn
//! unit = "nginx.service"            # the selector for the kind: pid unit session socket
//!                                   # screen container machine
//! # check = ["curl", "-fsS", "http://localhost/"]
//! # tcp_established = false
//! # pre_dump = 0                  # 0 to 16, or "auto"
//! # leave_running = false
//! ```

mod error;
mod fragment;
mod merge;
mod settings;
mod validate;

pub mod command;

pub use error::{ConfigError, Invalid, Location, Position};
pub use settings::{
    AreaKind, AreaLocation, AreaSettings, BootSettings, HealthSettings, KernelSettings, KnownGood,
    Memmap, PreDumps, RetentionSettings, Selector, Settings, SuspendCompression, SuspendSettings,
    Workload, WorkloadKind, DEFAULT_AREA_PATH, DEFAULT_SCRIPTS_DIR, DEFAULT_SUSPEND_KEY_FILE,
    DEFAULT_TMUX_SOCKET,
};

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// The main configuration file on a running system.
pub const SYSTEM_MAIN_FILE: &str = "/etc/upgraded/upgraded.toml";
/// The drop-in directories on a running system, lowest precedence first.
pub const SYSTEM_DROPIN_DIRS: [&str; 3] = [
    "/usr/lib/upgraded/config.d",
    "/run/upgraded/config.d",
    "/etc/upgraded/config.d",
];

/// The largest configuration file read. A real one takes a few kilobytes; the cap
/// bounds the memory and time a damaged or hostile file can cost.
pub const MAX_CONFIG_SIZE: u64 = 1024 * 1024;

/// Where the configuration is read from. Tests point this at a temporary directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigPaths {
    /// The main file, read first when it exists.
    pub main: PathBuf,
    /// Drop-in directories, lowest precedence first: of two drop-ins with the same file
    /// name, the one in the later directory is read and the other ignored.
    pub dropin_dirs: Vec<PathBuf>,
}

impl ConfigPaths {
    /// The real locations: [`SYSTEM_MAIN_FILE`] and [`SYSTEM_DROPIN_DIRS`].
    pub fn system() -> ConfigPaths {
        ConfigPaths {
            main: PathBuf::from(SYSTEM_MAIN_FILE),
            dropin_dirs: SYSTEM_DROPIN_DIRS.iter().map(PathBuf::from).collect(),
        }
    }

    /// The real locations with `root` in front, as if `root` were `/`.
    pub fn under_root(root: &Path) -> ConfigPaths {
        // Joining an absolute path would replace `root`, hence the stripped '/'.
        let rebase = |path: &str| root.join(path.trim_start_matches('/'));
        ConfigPaths {
            main: rebase(SYSTEM_MAIN_FILE),
            dropin_dirs: SYSTEM_DROPIN_DIRS.iter().map(|d| rebase(d)).collect(),
        }
    }

    /// The files to read, in the order they apply. Reads directories, not files.
    pub fn discover(&self) -> Result<Vec<SourceFile>, ConfigError> {
        let mut files = Vec::new();
        match fs::metadata(&self.main) {
            Ok(_) => files.push(SourceFile {
                path: self.main.clone(),
                role: SourceRole::Main,
                masked: is_masked(&self.main),
                overrides: Vec::new(),
            }),
            Err(err) if err.kind() == io::ErrorKind::NotFound && !is_symlink(&self.main) => {}
            Err(err) => {
                return Err(ConfigError::Read {
                    path: self.main.clone(),
                    err,
                })
            }
        }

        // Keyed by file name: a later directory's drop-in replaces an earlier one's, and
        // the map's order is the lexical order the drop-ins apply in.
        let mut dropins: BTreeMap<OsString, SourceFile> = BTreeMap::new();
        for dir in &self.dropin_dirs {
            for path in dropin_candidates(dir)? {
                let Some(name) = path.file_name().map(OsString::from) else {
                    continue;
                };
                let mut overrides = Vec::new();
                if let Some(hidden) = dropins.remove(&name) {
                    overrides = hidden.overrides;
                    overrides.push(hidden.path);
                }
                dropins.insert(
                    name,
                    SourceFile {
                        masked: is_masked(&path),
                        path,
                        role: SourceRole::DropIn,
                        overrides,
                    },
                );
            }
        }
        files.extend(dropins.into_values());
        Ok(files)
    }
}

/// One configuration file that takes part in the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub path: PathBuf,
    pub role: SourceRole,
    /// A symlink to /dev/null: not read, but still hides `overrides`.
    pub masked: bool,
    /// Drop-ins of the same name in lower-precedence directories, hidden by this one.
    pub overrides: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceRole {
    Main,
    DropIn,
}

/// The settings and the files they were read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub settings: Settings,
    /// In the order they were applied, masked ones included.
    pub sources: Vec<SourceFile>,
}

/// Reads, merges and validates the configuration found at `paths`.
pub fn load(paths: &ConfigPaths) -> Result<Loaded, ConfigError> {
    let sources = paths.discover()?;
    let settings = load_sources(&sources)?;
    Ok(Loaded { settings, sources })
}

/// Reads, merges and validates `sources` in order, skipping masked ones.
pub fn load_sources(sources: &[SourceFile]) -> Result<Settings, ConfigError> {
    let mut merged = merge::Merged::default();
    for source in sources.iter().filter(|s| !s.masked) {
        let text = read_text(&source.path)?;
        apply_document(&mut merged, &source.path, &text)?;
    }
    merged.validate()
}

/// Merges and validates documents already in memory, in order; `path` is only used in
/// error messages. For checking a file before it is installed.
pub fn load_documents<'a>(
    documents: impl IntoIterator<Item = (&'a Path, &'a str)>,
) -> Result<Settings, ConfigError> {
    let mut merged = merge::Merged::default();
    for (path, text) in documents {
        apply_document(&mut merged, path, text)?;
    }
    merged.validate()
}

fn apply_document(merged: &mut merge::Merged, path: &Path, text: &str) -> Result<(), ConfigError> {
    if text.len() as u64 > MAX_CONFIG_SIZE {
        return Err(too_large(path, text.len() as u64));
    }
    let fragment: fragment::Fragment =
        toml::from_str(text).map_err(|err| error::parse_error(path, text, &err))?;
    merged.apply(path, text, fragment)
}

fn read_text(path: &Path) -> Result<String, ConfigError> {
    let read_error = |err| ConfigError::Read {
        path: path.to_path_buf(),
        err,
    };
    let file = fs::File::open(path).map_err(read_error)?;
    let size = file.metadata().map_err(read_error)?.len();
    if size > MAX_CONFIG_SIZE {
        return Err(too_large(path, size));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    // The file may have grown since: read one byte past the cap to know.
    file.take(MAX_CONFIG_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_CONFIG_SIZE {
        return Err(too_large(path, bytes.len() as u64));
    }
    decode_text(path, bytes)
}

fn too_large(path: &Path, size: u64) -> ConfigError {
    ConfigError::TooLarge {
        path: path.to_path_buf(),
        size,
        limit: MAX_CONFIG_SIZE,
    }
}

/// The contents of the file at `path` as text.
fn decode_text(path: &Path, bytes: Vec<u8>) -> Result<String, ConfigError> {
    String::from_utf8(bytes).map_err(|err| {
        let offset = err.utf8_error().valid_up_to();
        let bytes = err.into_bytes();
        // The valid prefix is enough to say on which line the bad byte is.
        let valid = String::from_utf8_lossy(&bytes[..offset]);
        ConfigError::Parse {
            at: Location::at_offset(path, &valid, offset),
            message: "the file is not valid UTF-8".to_string(),
            hint: "TOML files are UTF-8: convert the file (e.g. with iconv) or remove the \
                   byte at this position"
                .to_string(),
        }
    })
}

/// The body of the fuzz target `config` (fuzz/fuzz_targets/config.rs) and of the
/// corpus replay test (tests/fuzz_corpus.rs), kept here so that the two cannot drift.
/// Not part of the API.
///
/// `data` is the contents of one or more files separated by NUL bytes (which TOML
/// cannot hold), so that merging is fuzzed too: the main file, then drop-ins. They
/// are decoded, merged and validated as [`load_sources`] does. A configuration that
/// loads must print as TOML (`upgradectl config show`) that loads back to the same
/// settings, and as JSON; an error must display. Panics only on a bug.
#[doc(hidden)]
pub fn fuzz_entry(data: &[u8]) {
    let mut paths = Vec::new();
    let mut texts = Vec::new();
    for (i, part) in data.split(|&b| b == 0).enumerate() {
        let path = match i {
            0 => PathBuf::from(SYSTEM_MAIN_FILE),
            i => Path::new(SYSTEM_DROPIN_DIRS[2]).join(format!("{i:02}-fuzz.toml")),
        };
        match decode_text(&path, part.to_vec()) {
            Ok(text) => texts.push(text),
            Err(err) => {
                let _ = err.to_string();
                return;
            }
        }
        paths.push(path);
    }
    let documents = paths
        .iter()
        .map(PathBuf::as_path)
        .zip(texts.iter().map(String::as_str));
    let settings = match load_documents(documents) {
        Ok(settings) => settings,
        Err(err) => {
            let _ = err.to_string();
            return;
        }
    };
    let shown = toml::to_string(&settings)
        .unwrap_or_else(|err| panic!("settings do not serialize as TOML: {err}"));
    let again = load_documents([(Path::new("shown"), shown.as_str())])
        .unwrap_or_else(|err| panic!("shown settings do not load: {err}\n--- shown:\n{shown}"));
    assert_eq!(
        again, settings,
        "settings changed when shown and loaded\n--- shown:\n{shown}"
    );
    serde_json::to_string(&settings)
        .unwrap_or_else(|err| panic!("settings do not serialize as JSON: {err}"));
}

/// The `*.toml` entries of a drop-in directory, or none if it does not exist.
fn dropin_candidates(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let read_dir_error = |err| ConfigError::ReadDir {
        path: dir.to_path_buf(),
        err,
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(read_dir_error(err)),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(read_dir_error)?;
        let name = entry.file_name();
        let name_bytes = name.as_encoded_bytes();
        // Editors leave hidden swap and backup files; systemd skips them too.
        if name_bytes.starts_with(b".") || !name_bytes.ends_with(b".toml") {
            continue;
        }
        let path = entry.path();
        // Directories that happen to end in .toml are not drop-ins. A dangling symlink
        // is kept, so that reading it reports it instead of silently skipping it.
        if fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        paths.push(path);
    }
    Ok(paths)
}

fn is_masked(path: &Path) -> bool {
    fs::canonicalize(path).is_ok_and(|target| target == Path::new("/dev/null"))
}

fn is_symlink(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

#[cfg(test)]
mod tests;
