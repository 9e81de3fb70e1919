//! The state file: `<dir>/state.json`, a versioned, checksummed envelope around the
//! [`UpgradeState`], the same design as the generation manifest:
//!
//! ```json
//! {
//!   "magic": "upgraded-state",
//!   "format": { "major": 1, "minor": 0 },
//!   "checksum": "<BLAKE3 of the body's bytes exactly as stored, 64 hex digits>",
//!   "body": { "phase": "booting", "upgrade": { ... } }
//! }
//! ```
//!
//! A reader refuses, in this order: a file over [`MAX_STATE_SIZE`] (unread), a wrong
//! magic, another major version, a newer minor version, a checksum mismatch, then a
//! body that does not parse strictly or does not fit its phase. The version comes
//! before the checksum because another format may checksum differently. A missing
//! file is [`Phase::Idle`](super::Phase::Idle): no upgrade was ever recorded.
//!
//! Writes are atomic (temporary file 0600, fsync, rename, fsync of the directory): the
//! state drives what happens after a crash or a kexec, so a torn file must not exist.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use dumper::manifest::FormatVersion;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::machine::{BootDecision, Event, TransitionError, UpgradeState};
use super::values::{shown, InvalidValue, Timestamp};

/// The first field of every state file.
pub const MAGIC: &str = "upgraded-state";

/// The format this code writes, and the newest it reads.
pub const FORMAT_VERSION: FormatVersion = FormatVersion { major: 1, minor: 0 };

/// The largest state file read or written. A real one is about two kilobytes; the cap
/// keeps a damaged or hostile file from exhausting memory.
pub const MAX_STATE_SIZE: u64 = 1024 * 1024;

/// The state file's name in the state directory.
pub const STATE_FILE: &str = "state.json";

/// The boot note's name in the state directory: `upgraded.generation=<id>
/// upgraded.pid_floor=<N>`, the same arguments the kexec'd kernel gets on its command
/// line, for a boot that comes without them (a reset or power cut after the kexec was
/// prepared: the boot loader starts its default kernel with its own command line).
/// `upgraded-reserve-pids.service` hands it to the initramfs hook's reader early in
/// the real root. Written when a kexec is loaded, removed when the upgrade ends.
pub const BOOT_NOTE_FILE: &str = "boot-note";

/// Where the daemon keeps its state: on the persistent disk (not /run), since the
/// state must survive the kexec and a reboot; next to the area's `generations/`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/upgraded";

const DIR_MODE: u32 = 0o700;

/// Errors of the state store. Each names the state file (or directory) and says what
/// to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A system call on `path` failed; `action` says what was being done.
    #[error("{action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "{} is not a regular file; move it away (the daemon then starts idle)",
        path.display()
    )]
    NotARegularFile { path: PathBuf },

    #[error(
        "state directory {} is not a directory; move it away or configure another one",
        path.display()
    )]
    NotADirectory { path: PathBuf },

    #[error(
        "state file {} is {size} bytes, more than the {limit} bytes a state file may have; \
         upgraded never writes such a file: move it away after checking with \
         `upgradectl status` that no upgrade is under way",
        path.display()
    )]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },

    #[error(
        "{} is not an upgraded state file (magic {found}, expected \"{expected}\"); \
         move the file away (the daemon then starts idle)",
        path.display()
    )]
    BadMagic {
        path: PathBuf,
        /// The magic found, escaped and quoted, or `none`.
        found: String,
        expected: &'static str,
    },

    #[error(
        "state file {} has format {found}, and this upgraded reads only format {}.x; \
         finish the upgrade with the upgraded release that wrote it, or move the file away",
        path.display(), supported.major
    )]
    UnsupportedMajor {
        path: PathBuf,
        found: FormatVersion,
        supported: FormatVersion,
    },

    #[error(
        "state file {} has format {found}, newer than format {supported} that this \
         upgraded knows; update upgraded, or move the file away",
        path.display()
    )]
    NewerMinor {
        path: PathBuf,
        found: FormatVersion,
        supported: FormatVersion,
    },

    #[error(
        "state file {} is damaged: its body hashes to {actual} but its header says \
         {expected}; it cannot be trusted: check the workloads and the images \
         (upgradectl images list), then move it away",
        path.display()
    )]
    Checksum {
        path: PathBuf,
        /// The checksum in the header, escaped and quoted.
        expected: String,
        actual: String,
    },

    #[error(
        "state file {} is not well-formed ({part}); it is damaged or was not written by \
         upgraded: move it away (the daemon then starts idle)",
        path.display()
    )]
    Syntax {
        path: PathBuf,
        /// `header` or `body`.
        part: &'static str,
        #[source]
        source: serde_json::Error,
    },

    #[error(
        "state file {}: {problem}; upgraded neither reads nor writes an inconsistent \
         state (if it is on disk, move it away after checking the workloads)",
        path.display()
    )]
    Invalid {
        path: PathBuf,
        problem: InvalidValue,
    },

    #[error("state file {}: the state was left unchanged", path.display())]
    Transition {
        path: PathBuf,
        #[source]
        source: TransitionError,
    },
}

trait IoContext<T> {
    fn at(self, action: &'static str, path: &Path) -> Result<T, StoreError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, action: &'static str, path: &Path) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Io {
            action,
            path: path.to_path_buf(),
            source,
        })
    }
}

/// The envelope as written.
#[derive(Serialize)]
struct EnvelopeOut<'a> {
    magic: &'a str,
    format: FormatVersion,
    checksum: &'a str,
    body: &'a RawValue,
}

/// The envelope as read, once magic and version are known to be ours.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeIn<'a> {
    #[allow(dead_code)] // checked by the probe
    magic: String,
    #[allow(dead_code)] // checked by the probe
    format: FormatVersion,
    checksum: String,
    #[serde(borrow)]
    body: &'a RawValue,
}

/// The first look at a file: only magic and version, whatever else it holds.
#[derive(Deserialize)]
struct Probe {
    magic: Option<serde_json::Value>,
    format: Option<serde_json::Value>,
}

impl UpgradeState {
    /// Validates and encodes the state in the current format.
    pub fn to_bytes(&self) -> Result<Vec<u8>, InvalidValue> {
        self.validate()?;
        // Strings, integers and booleans: serialising cannot fail.
        let body = serde_json::to_string_pretty(self).expect("serialising a state cannot fail");
        // Indent the body to its place in the envelope, for people reading the file.
        // serde_json escapes newlines inside strings, so every '\n' is between tokens.
        let body = body.replace('\n', "\n  ");
        let checksum = blake3::hash(body.as_bytes()).to_hex();
        let body = RawValue::from_string(body).expect("serde_json wrote valid JSON");
        let mut bytes = serde_json::to_vec_pretty(&EnvelopeOut {
            magic: MAGIC,
            format: FORMAT_VERSION,
            checksum: checksum.as_str(),
            body: &body,
        })
        .expect("serialising a state envelope cannot fail");
        bytes.push(b'\n');
        if bytes.len() as u64 > MAX_STATE_SIZE {
            // Unreachable with the length caps on every field; kept so that the writer
            // can never produce what the reader refuses.
            return Err(InvalidValue::new(
                "state",
                &format!("of {} bytes", bytes.len()),
                format!("is larger than the {MAX_STATE_SIZE}-byte limit"),
            ));
        }
        Ok(bytes)
    }

    /// Parses and validates a state file's contents; `path` is where they came from,
    /// for messages.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<UpgradeState, StoreError> {
        let path_buf = || path.to_path_buf();
        if bytes.len() as u64 > MAX_STATE_SIZE {
            return Err(StoreError::TooLarge {
                path: path_buf(),
                size: bytes.len() as u64,
                limit: MAX_STATE_SIZE,
            });
        }
        let syntax = |part, source| StoreError::Syntax {
            path: path_buf(),
            part,
            source,
        };
        // serde also reads a struct from an array; only the object form is the format.
        let not_an_object = || serde::de::Error::custom("expected a JSON object");
        if bytes.trim_ascii_start().first() != Some(&b'{') {
            return Err(syntax("header", not_an_object()));
        }
        let probe: Probe = serde_json::from_slice(bytes).map_err(|e| syntax("header", e))?;
        match &probe.magic {
            Some(serde_json::Value::String(m)) if m == MAGIC => {}
            other => {
                return Err(StoreError::BadMagic {
                    path: path_buf(),
                    found: match other {
                        None => "none".into(),
                        Some(serde_json::Value::String(m)) => shown(m),
                        Some(v) => shown(&v.to_string()),
                    },
                    expected: MAGIC,
                })
            }
        }
        let format: FormatVersion = match probe.format {
            Some(v) => serde_json::from_value(v).map_err(|e| syntax("header", e))?,
            None => return Err(syntax("header", serde::de::Error::missing_field("format"))),
        };
        if format.major != FORMAT_VERSION.major {
            return Err(StoreError::UnsupportedMajor {
                path: path_buf(),
                found: format,
                supported: FORMAT_VERSION,
            });
        }
        if format.minor > FORMAT_VERSION.minor {
            return Err(StoreError::NewerMinor {
                path: path_buf(),
                found: format,
                supported: FORMAT_VERSION,
            });
        }

        let envelope: EnvelopeIn<'_> =
            serde_json::from_slice(bytes).map_err(|e| syntax("header", e))?;
        let body = envelope.body.get();
        let actual = blake3::hash(body.as_bytes()).to_hex();
        if envelope.checksum != actual.as_str() {
            return Err(StoreError::Checksum {
                path: path_buf(),
                expected: shown(&envelope.checksum),
                actual: actual.to_string(),
            });
        }
        if !body.starts_with('{') {
            return Err(syntax("body", not_an_object()));
        }
        let state: UpgradeState = serde_json::from_str(body).map_err(|e| syntax("body", e))?;
        state.validate().map_err(|problem| StoreError::Invalid {
            path: path_buf(),
            problem,
        })?;
        Ok(state)
    }
}

/// The state file in a directory. One process (the daemon, or the boot side before it
/// starts) uses it at a time.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
    path: PathBuf,
    /// A second directory that gets a copy of the boot note (see [`StateStore::for_area`]).
    note_copy: Option<PathBuf>,
}

impl StateStore {
    /// The store in `dir` (see [`DEFAULT_STATE_DIR`]). Nothing is touched until a load
    /// or a save; a save creates `dir` (0700) if it is missing.
    pub fn new(dir: impl Into<PathBuf>) -> StateStore {
        let dir = dir.into();
        let path = dir.join(STATE_FILE);
        StateStore {
            dir,
            path,
            note_copy: None,
        }
    }

    /// The store in the area's root `area_root`. When that is not [`DEFAULT_STATE_DIR`]
    /// (a disk or pmem area, mounted late by upgraded itself, or another `area.path`),
    /// the boot note is also written to [`DEFAULT_STATE_DIR`] on the root file system:
    /// `upgraded-reserve-pids.service` reads it there early in a cold boot, before
    /// anything has mounted the area, so the workloads' PIDs are reserved on every kind
    /// of area.
    pub fn for_area(area_root: &Path) -> StateStore {
        let store = StateStore::new(area_root);
        if area_root == Path::new(DEFAULT_STATE_DIR) {
            store
        } else {
            store.with_boot_note_copy(DEFAULT_STATE_DIR)
        }
    }

    /// Also writes (and removes) the boot note in `dir`.
    pub fn with_boot_note_copy(mut self, dir: impl Into<PathBuf>) -> StateStore {
        self.note_copy = Some(dir.into());
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads and validates the state; a missing file is Idle.
    pub fn load(&self) -> Result<UpgradeState, StoreError> {
        let path = self.path.as_path();
        // Not following a symbolic link: the state decides what gets killed and
        // restored, and a link could point it at a file someone else wrote.
        let meta = match fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(UpgradeState::idle()),
            Err(e) => return Err(e).at("reading metadata of", path),
        };
        if !meta.is_file() {
            return Err(StoreError::NotARegularFile {
                path: path.to_path_buf(),
            });
        }
        let too_large = |size| StoreError::TooLarge {
            path: path.to_path_buf(),
            size,
            limit: MAX_STATE_SIZE,
        };
        if meta.len() > MAX_STATE_SIZE {
            return Err(too_large(meta.len()));
        }
        let file = fs::File::open(path).at("opening", path)?;
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        // The file may have grown since the stat: read one byte past the cap to know.
        file.take(MAX_STATE_SIZE + 1)
            .read_to_end(&mut bytes)
            .at("reading", path)?;
        if bytes.len() as u64 > MAX_STATE_SIZE {
            return Err(too_large(bytes.len() as u64));
        }
        UpgradeState::from_bytes(&bytes, path)
    }

    /// Writes `state` atomically: a temporary file (0600) in the same directory, fsync,
    /// rename over the state file, fsync of the directory. A crash leaves the old state
    /// or the new one, never a torn one.
    pub fn save(&self, state: &UpgradeState) -> Result<(), StoreError> {
        let path = self.path.as_path();
        let bytes = state.to_bytes().map_err(|problem| StoreError::Invalid {
            path: path.to_path_buf(),
            problem,
        })?;
        self.create_dir()?;
        let tmp = self.dir.join(format!(".{STATE_FILE}.tmp"));
        dumper::write_atomic(path, &tmp, &bytes).map_err(|e| match e {
            dumper::Error::Io {
                action,
                path,
                source,
            } => StoreError::Io {
                action,
                path,
                source,
            },
            // write_atomic fails only with I/O errors; keep the message if that changes.
            other => StoreError::Io {
                action: "writing",
                path: path.to_path_buf(),
                source: io::Error::other(other.to_string()),
            },
        })
    }

    /// Loads the state, applies `event` at the current time and saves the result,
    /// which is returned. On error the file is unchanged.
    pub fn apply(&self, event: Event) -> Result<UpgradeState, StoreError> {
        self.apply_at(event, Timestamp::now())
    }

    /// [`apply`](Self::apply) with the event's time given.
    pub fn apply_at(&self, event: Event, now: Timestamp) -> Result<UpgradeState, StoreError> {
        let state =
            self.load()?
                .transition_at(event, now)
                .map_err(|source| StoreError::Transition {
                    path: self.path.clone(),
                    source,
                })?;
        self.save(&state)?;
        if state.phase().is_terminal() {
            // Nothing waits for a boot any more. A note left behind would only move
            // the PID counter up on the next cold boots; say so and go on.
            if let Err(e) = self.remove_boot_note() {
                tracing::warn!("{e}");
            }
        }
        Ok(state)
    }

    /// Writes the boot note (see [`BOOT_NOTE_FILE`]) for generation `gen`.
    pub fn write_boot_note(
        &self,
        gen: &dumper::manifest::GenerationId,
        pid_floor: Option<u32>,
    ) -> Result<(), StoreError> {
        let mut note = format!("upgraded.generation={gen}");
        if let Some(floor) = pid_floor {
            note.push_str(&format!(" upgraded.pid_floor={floor}"));
        }
        note.push('\n');
        for dir in std::iter::once(&self.dir).chain(&self.note_copy) {
            create_private_dir(dir)?;
            let path = dir.join(BOOT_NOTE_FILE);
            let tmp = dir.join(format!(".{BOOT_NOTE_FILE}.tmp"));
            dumper::write_atomic(&path, &tmp, note.as_bytes()).map_err(|e| StoreError::Io {
                action: "writing the boot note",
                path,
                source: io::Error::other(e.to_string()),
            })?;
        }
        Ok(())
    }

    /// Removes the boot note; a missing one is fine.
    pub fn remove_boot_note(&self) -> Result<(), StoreError> {
        // Both, even if the first fails: a note left behind only makes a later cold
        // boot reserve PIDs for nothing, but each one removed is one less.
        let mut result = Ok(());
        for dir in std::iter::once(&self.dir).chain(&self.note_copy) {
            let path = dir.join(BOOT_NOTE_FILE);
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound && result.is_ok() => {
                    result = Err(StoreError::Io {
                        action: "removing the boot note",
                        path,
                        source: e,
                    });
                }
                _ => {}
            }
        }
        result
    }

    /// Loads the state, counts a boot ([`UpgradeState::count_boot_attempt`]) and saves
    /// the count before returning, so that a boot that crashes is counted too.
    pub fn count_boot_attempt(
        &self,
        max_attempts: u8,
    ) -> Result<(UpgradeState, BootDecision), StoreError> {
        let mut state = self.load()?;
        let decision = state.count_boot_attempt(max_attempts);
        if decision != BootDecision::NotCounted {
            self.save(&state)?;
        }
        Ok((state, decision))
    }

    /// Creates the directory (0700) if it is missing; an existing one is left as it
    /// is (an administrator's choice). The mode is set again after creation because
    /// the umask may have taken bits away.
    fn create_dir(&self) -> Result<(), StoreError> {
        create_private_dir(&self.dir)
    }
}

/// Creates `dir` (0700) and its parents if it is missing; an existing one is fine.
fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(StoreError::NotADirectory {
                path: dir.to_path_buf(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).at("reading metadata of", dir),
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .at("creating directory", dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)).at("setting the mode of", dir)
}
