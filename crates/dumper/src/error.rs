//! The crate's error type. Every variant names the path it is about and says what to
//! do; the underlying cause, where there is one, is the `source()` so that `{:#}`
//! prints the whole chain without repeating it.

use std::io;
use std::path::{Path, PathBuf};

use crate::manifest::{FormatVersion, ValidationError};

/// Errors of the `dumper` crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call on `path` failed; `action` says what was being done.
    #[error("{action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A name or value given to the API was refused (the same rules as in a manifest).
    #[error("{0}")]
    InvalidName(#[from] ValidationError),

    // --- manifest -------------------------------------------------------------------
    #[error(
        "manifest {} is {size} bytes, more than the {limit} bytes a manifest may have; \
         upgraded never writes such a file: discard this generation (upgradectl images rm)",
        path.display()
    )]
    ManifestTooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },

    #[error(
        "{} is not an upgraded manifest (magic {found}, expected \"{expected}\"); \
         move the file away or discard the generation that holds it",
        path.display()
    )]
    ManifestBadMagic {
        path: PathBuf,
        /// The magic found, escaped and quoted, or `none`.
        found: String,
        expected: &'static str,
    },

    #[error(
        "manifest {} has format {found}, and this upgraded reads only format {}.x; \
         restore it with the upgraded release that wrote it, or discard the generation",
        path.display(), supported.major
    )]
    ManifestUnsupportedMajor {
        path: PathBuf,
        found: FormatVersion,
        supported: FormatVersion,
    },

    #[error(
        "manifest {} has format {found}, newer than format {supported} that this upgraded \
         knows; update upgraded to restore it, or discard the generation",
        path.display()
    )]
    ManifestNewerMinor {
        path: PathBuf,
        found: FormatVersion,
        supported: FormatVersion,
    },

    #[error(
        "manifest {} is damaged: its body hashes to {actual} but its header says {expected}; \
         the generation cannot be trusted: discard it (upgradectl images rm)",
        path.display()
    )]
    ManifestChecksum {
        path: PathBuf,
        /// The checksum in the header, escaped and quoted.
        expected: String,
        actual: String,
    },

    #[error(
        "manifest {} is not well-formed ({part}); it is damaged or was not written by \
         upgraded: discard the generation (upgradectl images rm)",
        path.display()
    )]
    ManifestSyntax {
        path: PathBuf,
        /// `header` or `body`.
        part: &'static str,
        #[source]
        source: serde_json::Error,
    },

    #[error(
        "manifest {}: {problem}; upgraded neither reads nor writes a manifest with unsafe \
         or inconsistent values (if it is on disk, discard the generation: \
         upgradectl images rm)",
        path.display()
    )]
    ManifestInvalid {
        path: PathBuf,
        problem: ValidationError,
    },

    #[error(
        "manifest {}: field {field} may not change once the generation is committed; \
         only states may be updated",
        path.display()
    )]
    ManifestImmutable { path: PathBuf, field: String },

    // --- area -----------------------------------------------------------------------
    #[error(
        "persistent area {} does not exist; create it owned by the user running upgraded \
         with mode 0700 (systemd-tmpfiles --create upgraded.conf does)",
        path.display()
    )]
    AreaMissing { path: PathBuf },

    #[error(
        "{} is not a directory (or is a symbolic link where a directory is required); \
         move it away so that upgraded can use the persistent area",
        path.display()
    )]
    NotADirectory { path: PathBuf },

    #[error(
        "{} has mode {mode:04o}: group or others may write it, and it holds process \
         memory; run chmod 0700 {}",
        path.display(), path.display()
    )]
    AreaInsecureMode { path: PathBuf, mode: u32 },

    #[error(
        "{} is owned by uid {owner}, not by uid {euid} that runs upgraded; \
         chown it to uid {euid} or configure another area",
        path.display()
    )]
    AreaWrongOwner {
        path: PathBuf,
        owner: u32,
        euid: u32,
    },

    #[error(
        "generation {} already exists; choose another generation id, or remove it first \
         (upgradectl images rm)",
        path.display()
    )]
    GenerationExists { path: PathBuf },

    #[error(
        "{} is left over from an interrupted dump; upgraded removes such leftovers when it \
         starts, or remove it by hand",
        path.display()
    )]
    PendingExists { path: PathBuf },

    #[error(
        "generation {} does not exist; upgradectl images list shows the generations",
        path.display()
    )]
    GenerationNotFound { path: PathBuf },

    #[error(
        "{} holds generation {found}, not the generation named by its directory; \
         it was renamed or copied by hand: discard it (upgradectl images rm)",
        path.display()
    )]
    GenerationMismatch {
        path: PathBuf,
        /// The generation id in the manifest, escaped and quoted.
        found: String,
    },

    #[error(
        "manifest {} is missing; the generation is damaged: discard it \
         (upgradectl images rm)",
        path.display()
    )]
    ManifestMissing { path: PathBuf },

    #[error(
        "workload directory {} is missing; the generation is incomplete: discard it \
         (upgradectl images rm)",
        path.display()
    )]
    WorkloadDirMissing { path: PathBuf },

    #[error(
        "image file {} is missing; the generation is incomplete: discard it \
         (upgradectl images rm)",
        path.display()
    )]
    ImageMissing { path: PathBuf },

    #[error(
        "{} is not a regular file (symbolic links, directories and devices are refused \
         here); the generation was tampered with: discard it (upgradectl images rm)",
        path.display()
    )]
    NotARegularFile { path: PathBuf },

    #[error(
        "image {} is {actual} bytes, the manifest says {expected}; the image is damaged: \
         discard the generation (upgradectl images rm)",
        path.display()
    )]
    ImageSizeMismatch {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },

    #[error(
        "image {} has checksum {actual}, the manifest says {expected}; the image is \
         damaged: discard the generation (upgradectl images rm)",
        path.display()
    )]
    ImageChecksumMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },

    #[error(
        "{} should not be in a generation ({reason}); remove it, or discard the \
         generation (upgradectl images rm)",
        path.display()
    )]
    UnexpectedEntry { path: PathBuf, reason: String },
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds the path and the action to an `io::Error`, the only way I/O errors leave the
/// crate.
pub(crate) trait IoContext<T> {
    fn at(self, action: &'static str, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, action: &'static str, path: impl AsRef<Path>) -> Result<T> {
        // The path is copied only on error: this runs for every file hashed.
        self.map_err(|source| Error::Io {
            action,
            path: path.as_ref().to_path_buf(),
            source,
        })
    }
}
