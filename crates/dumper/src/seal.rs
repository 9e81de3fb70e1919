//! Sealed generations: a committed generation packed into one file, encrypted at rest
//! or compressed or both, for suspend images on the area (docs/suspend-encryption.md).
//!
//! ```text
//! <area>/sealed/<id>.age        a sealed generation, encrypted
//! <area>/sealed/<id>.tar.zst    one compressed only (`[suspend] compress = "zstd"`
//!                               with encrypt off)
//! <area>/sealed/<id>.*.tmp      one being written; [`cleanup_sealed`] removes it
//! ```
//!
//! A sealed file is an age v1 file encrypted to one X25519 recipient: a short header
//! (the file key wrapped for the recipient, and a MAC), then the payload in age's
//! STREAM construction, 64 KiB chunks each authenticated with ChaCha20-Poly1305, the
//! last one marked as last. A flipped bit anywhere, a truncated file or another key
//! is refused; the payload is read and written as a stream, so no image is ever held
//! in memory whole. The payload is a tar archive (format 1 of sealed files):
//!
//! ```text
//! manifest.json                 the first entry, exactly as it was on disk
//! <workload>/                   then, for each workload with images, its directory
//! <workload>/<image>            and its images, in the manifest's order
//! ```
//!
//! With `[suspend] compress = "zstd"` the tar archive is compressed first: the
//! payload is then one zstd frame holding that same archive. Which of the two a
//! payload is, is told by its first four bytes (zstd's magic number can not start a
//! tar archive whose first entry is `manifest.json`), so files sealed without
//! compression read as before. The budgets below count the archive's bytes after
//! decompression, so a small frame that inflates past what the manifest lists is
//! refused like an oversized archive; zstd's decoder keeps its window at 128 MiB
//! at most, whatever a frame asks for.
//!
//! A file that is compressed only, `<id>.tar.zst`, is that same zstd frame with no age
//! around it, and with zstd's own checksum of the content: nothing authenticates it,
//! which is why it is root's alone like every image, and why what it holds is checked
//! exactly as an encrypted one (the manifest's own checksum, the layout, the budgets,
//! every image against the manifest before CRIU sees it).
//!
//! The manifest comes first so that [`peek_manifest`] reads only the chunks it is in.
//! Only regular files and directories are written, every path is one the manifest
//! lists, and [`unseal`] refuses anything else by name. Generations with pre-dumps
//! (CRIU's `parent` links) are not sealed: suspend makes none. A later format that
//! changes the layout puts another first entry in front, which this version refuses
//! ("the first entry must be manifest.json").
//!
//! What sealing protects against, and what it does not, is in
//! docs/suspend-encryption.md: anyone with the key's public half can make a sealed
//! file, so it keeps images secret, it does not prove who wrote them.
//!
//! The key is an age X25519 identity in age-keygen's format ([`SealKey`]); it is read
//! only from a regular file that its owner alone may access ([`check_key_file`]).

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use age::secrecy::{ExposeSecret, SecretString};

use crate::error::{Error, IoContext, Result};
use crate::fsutil::{create_private_dir, free_bytes, remove_any, set_mode, sync_dir};
use crate::fsutil::{DIR_MODE, FILE_MODE};
use crate::manifest::{
    shown, Checksum, GenerationId, GenerationState, Manifest, MANIFEST_FILE, MAX_MANIFEST_SIZE,
};

/// The public half of a [`SealKey`], what [`seal`] encrypts to.
pub use age::x25519::Recipient;

/// The directory under the area's root that holds sealed generations.
pub const SEALED_DIR: &str = "sealed";
/// What an encrypted sealed generation's file name ends in, after the generation id.
pub const SEALED_EXT: &str = ".age";
/// What a sealed generation that is compressed only ends in, after the generation id.
pub const PACKED_EXT: &str = ".tar.zst";
/// What a sealed file being written ends in, after [`SEALED_EXT`] or [`PACKED_EXT`].
const TMP_SUFFIX: &str = ".tmp";

/// The first four bytes of a zstd frame (little-endian 0xFD2FB528).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The zstd level of compressed sealed files: zstd's own default, which packs memory
/// images well at a speed near the disk's.
pub const ZSTD_LEVEL: i32 = 3;

/// How [`seal`] packs the archive (before encrypting it, if it does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    /// The tar archive as it is (format 1 as first written).
    Plain,
    /// The tar archive in one zstd frame at [`ZSTD_LEVEL`], compressed on every CPU.
    Zstd,
}

/// The largest key file read. age-keygen writes about 190 bytes.
pub const MAX_KEY_FILE_SIZE: u64 = 64 * 1024;

/// The most bytes an age header may take. Ours is one X25519 stanza, age's random
/// "grease" stanza and the MAC: under 600 bytes. age's parser goes over the whole
/// header again for every line it reads, so the cap also bounds its time.
const MAX_HEADER_SIZE: u64 = 16 * 1024;

/// What one archive entry may add besides its data: its header, a GNU long-name
/// entry (a header and the name, which is at most 511 bytes) and the padding of its
/// data to 512 bytes, with room to spare.
const ENTRY_OVERHEAD: u64 = 4 * 1024;

/// What may follow the last entry: the end-of-archive blocks (1024 zero bytes; tar
/// readers stop at the first), with room to spare.
const ARCHIVE_END: u64 = 64 * 1024;

/// The key that seals suspend images: an age X25519 identity, read from a file in
/// age-keygen's format (comment lines, then one `AGE-SECRET-KEY-1...` line). Its
/// `Debug` shows the file and the public key, never the secret.
#[derive(Clone)]
pub struct SealKey {
    identity: age::x25519::Identity,
    path: PathBuf,
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealKey")
            .field("path", &self.path)
            .field("public_key", &self.public_key())
            .finish()
    }
}

impl SealKey {
    /// Reads the key at `path`, after [`check_key_file`] with the effective uid as the
    /// owner (root on every real system), both on the path and on the file opened.
    pub fn load(path: &Path) -> Result<SealKey> {
        let owner = nix::unistd::geteuid().as_raw();
        let meta = match fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::KeyMissing { path: path.into() })
            }
            Err(e) => return Err(e).at("reading metadata of", path),
        };
        check_key_file(path, &meta, owner)?;
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(path)
            .at("opening", path)?;
        // What was checked may have been swapped since: check what was opened.
        check_key_file(
            path,
            &file.metadata().at("reading metadata of", path)?,
            owner,
        )?;
        let mut bytes = Vec::new();
        file.take(MAX_KEY_FILE_SIZE + 1)
            .read_to_end(&mut bytes)
            .at("reading", path)?;
        let invalid = |problem: &str| Error::KeyInvalid {
            path: path.into(),
            problem: problem.into(),
        };
        let text = match String::from_utf8(bytes) {
            Ok(text) => SecretString::from(text),
            Err(e) => {
                use age::secrecy::zeroize::Zeroize;
                e.into_bytes().zeroize();
                return Err(invalid("it is not UTF-8 text"));
            }
        };
        if text.expose_secret().len() as u64 > MAX_KEY_FILE_SIZE {
            return Err(invalid("it is larger than 64 KiB"));
        }
        SealKey::parse(text.expose_secret(), path)
    }

    /// Parses the text of a key file; `path` is for messages. Blank lines and `#`
    /// comments are skipped (age-keygen writes the public key in one); exactly one
    /// other line, the secret key, must be there.
    pub fn parse(text: &str, path: &Path) -> Result<SealKey> {
        let invalid = |problem: String| Error::KeyInvalid {
            path: path.into(),
            problem,
        };
        let mut found = None;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // The line is not quoted in the message: it may be a secret.
            let identity = line.parse::<age::x25519::Identity>().map_err(|_| {
                invalid(format!(
                    "line {} is neither a # comment nor an AGE-SECRET-KEY-1... key",
                    i + 1
                ))
            })?;
            if found.is_some() {
                return Err(invalid(
                    "it holds more than one key, and upgraded seals with one: keep the one \
                     the suspend images were sealed with"
                        .into(),
                ));
            }
            found = Some(identity);
        }
        let identity =
            found.ok_or_else(|| invalid("it holds no AGE-SECRET-KEY-1... line".into()))?;
        Ok(SealKey {
            identity,
            path: path.into(),
        })
    }

    /// Writes a new key to `path` and returns it: mode 0600, owned by the caller,
    /// with the public key in a comment line as age-keygen writes it. The file is
    /// written and synced under a temporary name, then linked to `path`, which fails
    /// if anything is there already ([`Error::KeyExists`]): a key is never
    /// overwritten, and never seen half-written.
    pub fn generate(path: &Path) -> Result<SealKey> {
        if fs::symlink_metadata(path).is_ok() {
            return Err(Error::KeyExists { path: path.into() });
        }
        let (dir, name) = match (path.parent(), path.file_name()) {
            (Some(dir), Some(name)) => (
                if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                },
                name.to_string_lossy(),
            ),
            _ => {
                return Err(Error::KeyInvalid {
                    path: path.into(),
                    problem: "the path names no file".into(),
                })
            }
        };
        let identity = age::x25519::Identity::generate();
        let key = SealKey {
            identity,
            path: path.into(),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let text = SecretString::from(format!(
            "# created: {}\n# public key: {}\n{}\n",
            crate::manifest::rfc3339_utc(now),
            key.public_key(),
            key.identity.to_string().expose_secret()
        ));
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(e).at("removing stale temporary file", &tmp)
            }
            _ => {}
        }
        let written = (|| {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
                .open(&tmp)
                .at("creating", &tmp)?;
            // The umask may have taken bits away; none may be added.
            file.set_permissions(fs::Permissions::from_mode(FILE_MODE))
                .at("setting the mode of", &tmp)?;
            file.write_all(text.expose_secret().as_bytes())
                .at("writing", &tmp)?;
            file.sync_all().at("syncing", &tmp)?;
            match fs::hard_link(&tmp, path) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    Err(Error::KeyExists { path: path.into() })
                }
                other => other.at("creating", path),
            }
        })();
        let removed = match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e).at("removing", &tmp),
            _ => Ok(()),
        };
        written?;
        removed?;
        sync_dir(dir)?;
        Ok(key)
    }

    /// The file the key was read from (or written to).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The public half, which [`seal`] encrypts to.
    pub fn recipient(&self) -> Recipient {
        self.identity.to_public()
    }

    /// The public half as age writes it (`age1...`).
    pub fn public_key(&self) -> String {
        self.recipient().to_string()
    }
}

/// Refuses a key file that someone other than `owner` could read or replace: it must
/// be a regular file (a symbolic link is refused, even to a good file: whoever may
/// change the link may point it elsewhere), owned by `owner`, without any group or
/// other permission bit. `meta` is the file's own metadata (`symlink_metadata`, or
/// `File::metadata` of the file opened). The error names the file and the fix.
pub fn check_key_file(path: &Path, meta: &fs::Metadata, owner: u32) -> Result<()> {
    let refuse = |problem: String, fix: String| {
        Err(Error::KeyInsecure {
            path: path.into(),
            problem,
            owner,
            fix,
        })
    };
    let shown_path = path.display();
    if meta.file_type().is_symlink() {
        return refuse(
            "is a symbolic link".into(),
            format!("put the key file itself at {shown_path} (upgradectl never reads the key through a link)"),
        );
    }
    if !meta.is_file() {
        return refuse(
            "is not a regular file".into(),
            format!("put the key file itself at {shown_path}"),
        );
    }
    if meta.uid() != owner {
        let who = if owner == 0 {
            "root".to_owned()
        } else {
            owner.to_string()
        };
        return refuse(
            format!("is owned by uid {}", meta.uid()),
            format!("chown {who} {shown_path}, after checking that nobody else made or changed it"),
        );
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return refuse(
            format!("has mode {mode:04o}, which lets group or others at it"),
            format!(
                "chmod 0600 {shown_path}, and consider the key known to whoever could read it \
                 (make a new one for new suspends)"
            ),
        );
    }
    Ok(())
}

/// A sealed generation found by [`list_sealed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedFile {
    pub id: GenerationId,
    pub path: PathBuf,
    /// The size of the file.
    pub bytes: u64,
    /// `<id>.age`, which needs the key to be read; else `<id>.tar.zst`.
    pub encrypted: bool,
}

/// The path of generation `id` sealed in `dir`: `<dir>/<id>.age` if `encrypted`, else
/// `<dir>/<id>.tar.zst`.
pub fn sealed_path(dir: &Path, id: &GenerationId, encrypted: bool) -> PathBuf {
    let ext = if encrypted { SEALED_EXT } else { PACKED_EXT };
    dir.join(format!("{id}{ext}"))
}

/// The sealed files of generation `id` in `dir` that exist (as anything: a caller
/// that finds one that is not a regular file refuses it by name), encrypted first.
/// At most one in practice: [`seal`] refuses to write the second.
pub fn find_sealed(dir: &Path, id: &GenerationId) -> Vec<PathBuf> {
    [true, false]
        .into_iter()
        .map(|encrypted| sealed_path(dir, id, encrypted))
        .filter(|path| fs::symlink_metadata(path).is_ok())
        .collect()
}

/// The generation id of a sealed file's name, `<id>.age` or `<id>.tar.zst`, if it is
/// one, and whether it is the encrypted kind.
pub fn sealed_id(path: &Path) -> Option<(GenerationId, bool)> {
    let name = path.file_name()?.to_str()?;
    if let Some(id) = name.strip_suffix(SEALED_EXT) {
        return GenerationId::new(id).ok().map(|id| (id, true));
    }
    GenerationId::new(name.strip_suffix(PACKED_EXT)?)
        .ok()
        .map(|id| (id, false))
}

/// Whether the file name is one of a sealed file being written (`*.age.tmp`,
/// `*.tar.zst.tmp`).
fn is_tmp_name(name: &std::ffi::OsStr) -> bool {
    name.to_str().is_some_and(|n| {
        n.strip_suffix(TMP_SUFFIX)
            .is_some_and(|n| n.ends_with(SEALED_EXT) || n.ends_with(PACKED_EXT))
    })
}

/// The directory of sealed generations of the area at `area_root`, `<root>/sealed`:
/// created (0700) if missing when `create`, else `None` if missing. It must be a
/// directory owned by the effective uid that nobody else may write, like the
/// generations directory; one that others may read is tightened to 0700.
pub fn sealed_dir(area_root: &Path, create: bool) -> Result<Option<PathBuf>> {
    let dir = area_root.join(SEALED_DIR);
    let meta = match fs::symlink_metadata(&dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
            create_private_dir(&dir)?;
            sync_dir(area_root)?;
            return Ok(Some(dir));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).at("reading metadata of", &dir),
    };
    if !meta.is_dir() {
        return Err(Error::NotADirectory { path: dir });
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(Error::AreaWrongOwner {
            path: dir,
            owner: meta.uid(),
            euid,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(Error::AreaInsecureMode { path: dir, mode });
    }
    if mode != DIR_MODE {
        tracing::warn!(
            path = ?dir,
            mode = format_args!("{mode:04o}"),
            "tightening the mode of the sealed directory to 0700"
        );
        set_mode(&dir, DIR_MODE)?;
    }
    Ok(Some(dir))
}

/// The sealed generations in `dir`, sorted by id (so oldest first). Files being
/// written (`*.tmp`) are left out; any other entry that is not a regular file named
/// `<generation id>.age` or `<generation id>.tar.zst` is skipped with a warning.
pub fn list_sealed(dir: &Path) -> Result<Vec<SealedFile>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).at("listing", dir)? {
        let entry = entry.at("listing", dir)?;
        let path = entry.path();
        if is_tmp_name(&entry.file_name()) {
            continue;
        }
        let Some((id, encrypted)) = sealed_id(&path) else {
            tracing::warn!(
                ?path,
                "skipping an entry that is not <generation id>.age or .tar.zst"
            );
            continue;
        };
        let meta = fs::symlink_metadata(&path).at("reading metadata of", &path)?;
        if !meta.is_file() {
            tracing::warn!(
                ?path,
                "skipping a sealed generation that is not a regular file"
            );
            continue;
        }
        found.push(SealedFile {
            id,
            path,
            bytes: meta.len(),
            encrypted,
        });
    }
    found.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(found)
}

/// Removes the sealed files an interrupted [`seal`] left in `dir` (`*.age.tmp`,
/// `*.tar.zst.tmp`). Returns the removed paths.
pub fn cleanup_sealed(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for entry in fs::read_dir(dir).at("listing", dir)? {
        let entry = entry.at("listing", dir)?;
        if is_tmp_name(&entry.file_name()) {
            remove_any(&entry.path())?;
            removed.push(entry.path());
        }
    }
    if !removed.is_empty() {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// Refuses with [`Error::NotEnoughRoom`] when the file system of `dir` has fewer than
/// `needed` bytes free for `what` (statvfs, as the area's own checks; free space that
/// cannot be read is not refused). `hint` says what to do about it.
pub fn check_room(dir: &Path, needed: u64, what: &str, hint: &str) -> Result<()> {
    match free_bytes(dir) {
        Some(free) if free < needed => Err(Error::NotEnoughRoom {
            path: dir.into(),
            what: what.into(),
            needed,
            free,
            hint: hint.into(),
        }),
        _ => Ok(()),
    }
}

/// Removes the sealed file at `path` and syncs its directory.
pub fn remove_sealed(path: &Path) -> Result<()> {
    fs::remove_file(path).at("removing", path)?;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => Ok(()),
    }
}

/// Seals the committed generation in `generation_dir` (a generation directory of an
/// area, named `id`) into `out_dir/<id>.age`, encrypted to `recipient`, or without
/// one into `out_dir/<id>.tar.zst`, which must then be compressed
/// ([`Packing::Zstd`]). Returns the path written.
///
/// The archive is streamed (through age's encryptor when encrypted) into `<name>.tmp`
/// (0600), which is synced and renamed into place, and `out_dir` synced: the file is
/// complete or absent, even across a crash. On an error it leaves no file of its own
/// (one that cannot be removed then is logged, and left for the caller to remove).
/// Every image is read once, and its size and checksum are checked against the
/// manifest on the way: what is sealed is what was committed. Refused: a generation
/// that is not committed, or has pre-dumps; an `out_dir` without room for it
/// ([`Error::NotEnoughRoom`]); a sealed file of `id` of either kind already there;
/// neither encryption nor compression (the generation directory is that already).
/// The room checked for is the uncompressed size even with [`Packing::Zstd`]: what an
/// image compresses to is only known once it is written.
pub fn seal(
    generation_dir: &Path,
    id: &GenerationId,
    recipient: Option<&Recipient>,
    out_dir: &Path,
    packing: Packing,
) -> Result<PathBuf> {
    let manifest_path = generation_dir.join(MANIFEST_FILE);
    let manifest_bytes = read_manifest_file(&manifest_path)?;
    let manifest = Manifest::from_bytes(&manifest_bytes, &manifest_path)?;
    if &manifest.generation != id {
        return Err(Error::GenerationMismatch {
            path: manifest_path,
            found: shown(manifest.generation.as_str()),
        });
    }
    let unsupported = |reason: String| Error::SealUnsupported {
        path: generation_dir.into(),
        reason,
    };
    if manifest.state != GenerationState::Committed {
        return Err(unsupported(format!(
            "it is {}, and only a committed generation is sealed",
            manifest.state
        )));
    }
    if recipient.is_none() && packing == Packing::Plain {
        return Err(unsupported(
            "neither encrypted nor compressed, a sealed file would only copy the \
             generation directory"
                .into(),
        ));
    }
    let mut needed = manifest_bytes.len() as u64 + ENTRY_OVERHEAD + ARCHIVE_END;
    for w in &manifest.workloads {
        if !w.links.is_empty() || w.images.iter().any(|i| i.name.as_str().contains('/')) {
            return Err(unsupported(format!(
                "workload {} has pre-dumps, which sealed images do not hold (suspend \
                 makes none)",
                w.name
            )));
        }
        needed += ENTRY_OVERHEAD;
        for image in &w.images {
            needed = needed.saturating_add(image.size.saturating_add(ENTRY_OVERHEAD));
        }
    }
    // age adds 16 bytes to every 64 KiB chunk; zstd at most 3 to every 128 KiB block
    // it cannot compress, and a frame header.
    needed = needed.saturating_add(needed / 4096 + MAX_HEADER_SIZE);

    let out = sealed_path(out_dir, id, recipient.is_some());
    // Either kind: two sealed files of one suspend would be resumed twice.
    if let Some(path) = find_sealed(out_dir, id).into_iter().next() {
        return Err(Error::GenerationExists { path });
    }
    check_room(
        out_dir,
        needed,
        &format!("sealing generation {id}"),
        "free space there, or move the area (area.path) to a larger file system",
    )?;
    let mut tmp = out.clone().into_os_string();
    tmp.push(TMP_SUFFIX);
    let tmp = PathBuf::from(tmp);
    match fs::symlink_metadata(&tmp) {
        Ok(_) => remove_any(&tmp)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).at("reading metadata of", &tmp),
    }
    let written = write_sealed(
        generation_dir,
        &manifest_bytes,
        &manifest,
        recipient,
        packing,
        &tmp,
    );
    if let Err(e) = written {
        // Best effort: the error being returned matters more than this one.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    put_in_place(&tmp, &out, out_dir, &sync_dir)?;
    Ok(out)
}

/// Renames the complete sealed file `tmp` to `out` and syncs their directory
/// `out_dir` with `sync` ([`sync_dir`]; the tests fail it). On an error neither file
/// is left, as far as it can be removed: [`seal`]'s caller takes an error for a
/// suspend that did not happen and runs the workload again from its own copy, and a
/// sealed file left behind would still say the workload is suspended, so a later
/// resume would bring back that stale copy of the session.
fn put_in_place(
    tmp: &Path,
    out: &Path,
    out_dir: &Path,
    sync: &dyn Fn(&Path) -> Result<()>,
) -> Result<()> {
    if let Err(e) = fs::rename(tmp, out).at("renaming into place", out) {
        let _ = fs::remove_file(tmp);
        return Err(e);
    }
    let Err(e) = sync(out_dir) else {
        return Ok(());
    };
    match fs::remove_file(out) {
        // Best effort: the file is gone from the directory as the process sees it.
        Ok(()) => {
            let _ = sync(out_dir);
        }
        Err(rm) if rm.kind() == io::ErrorKind::NotFound => {}
        Err(rm) => tracing::error!(
            path = ?out,
            error = %rm,
            "removing a sealed file whose directory could not be synced; it must not be \
             resumed once the workload runs again"
        ),
    }
    Err(e)
}

/// Writes the sealed file `tmp` (which must not exist) and syncs it.
fn write_sealed(
    dir: &Path,
    manifest_bytes: &[u8],
    manifest: &Manifest,
    recipient: Option<&Recipient>,
    packing: Packing,
    tmp: &Path,
) -> Result<()> {
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(tmp)
        .at("creating", tmp)?;
    file.set_permissions(fs::Permissions::from_mode(FILE_MODE))
        .at("setting the mode of", tmp)?;
    let buffered = BufWriter::with_capacity(256 * 1024, &file);
    let writer = match recipient {
        Some(recipient) => {
            let encryptor =
                age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient))
                    .map_err(|e| Error::SealUnsupported {
                        path: dir.into(),
                        reason: format!("age refused the key: {e}"),
                    })?;
            Outer::Age(encryptor.wrap_output(buffered).at("writing", tmp)?)
        }
        None => Outer::Bare(buffered),
    };
    // Without age, nothing else would tell a damaged frame: zstd's checksum does.
    let checksum = recipient.is_none();
    let writer = match packing {
        Packing::Plain => Packed::Plain(writer),
        Packing::Zstd => Packed::Zstd(zstd_encoder(writer, checksum).at("starting zstd for", tmp)?),
    };
    let mut archive = tar::Builder::new(writer);
    let mtime = manifest.created_unix;
    let mut head = header(
        tar::EntryType::Regular,
        FILE_MODE,
        manifest_bytes.len() as u64,
        mtime,
    );
    archive
        .append_data(&mut head, MANIFEST_FILE, manifest_bytes)
        .at("writing", tmp)?;
    for w in &manifest.workloads {
        if w.images.is_empty() {
            continue;
        }
        let mut head = header(tar::EntryType::Directory, DIR_MODE, 0, mtime);
        archive
            .append_data(&mut head, w.name.as_str(), io::empty())
            .at("writing", tmp)?;
        let wdir = dir.join(w.name.as_str());
        for image in &w.images {
            let path = wdir.join(image.name.as_str());
            let file = fs::OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
                .open(&path)
                .at("opening", &path)?;
            let meta = file.metadata().at("reading metadata of", &path)?;
            if !meta.is_file() {
                return Err(Error::NotARegularFile { path });
            }
            if meta.len() != image.size {
                return Err(Error::ImageSizeMismatch {
                    path,
                    expected: image.size,
                    actual: meta.len(),
                });
            }
            let mut reader = Hashing::new(file.take(image.size));
            let mut head = header(tar::EntryType::Regular, FILE_MODE, image.size, mtime);
            let name = format!("{}/{}", w.name, image.name);
            let appended = archive.append_data(&mut head, &name, &mut reader);
            if let Some(e) = reader.failed.take() {
                return Err(e).at("reading", &path);
            }
            appended.at("writing", tmp)?;
            if reader.count != image.size {
                return Err(Error::ImageSizeMismatch {
                    path,
                    expected: image.size,
                    actual: reader.count,
                });
            }
            let checksum = Checksum::from_hash(&reader.hasher.finalize());
            if checksum != image.checksum {
                return Err(Error::ImageChecksumMismatch {
                    path,
                    expected: image.checksum.to_string(),
                    actual: checksum.to_string(),
                });
            }
        }
    }
    let writer = archive.into_inner().at("writing", tmp)?;
    let writer = writer.finish().at("writing", tmp)?;
    let buffered = writer.finish().at("writing", tmp)?;
    buffered
        .into_inner()
        .map_err(io::IntoInnerError::into_error)
        .at("writing", tmp)?;
    file.sync_all().at("syncing", tmp)
}

/// A zstd encoder at [`ZSTD_LEVEL`] with a worker per CPU: compression, not the
/// disk, is what a suspend would otherwise wait on. `checksum`: zstd's own checksum
/// of the content, for a file that age does not authenticate (the images are checked
/// against the manifest when unsealed either way).
fn zstd_encoder<W: Write>(
    inner: W,
    checksum: bool,
) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
    let mut encoder = zstd::stream::write::Encoder::new(inner, ZSTD_LEVEL)?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus > 1 {
        encoder.multithread(u32::try_from(cpus).unwrap_or(u32::MAX))?;
    }
    encoder.include_checksum(checksum)?;
    Ok(encoder)
}

/// The file's writer: the age stream, or the file itself.
enum Outer<W: Write> {
    Age(age::stream::StreamWriter<W>),
    Bare(W),
}

impl<W: Write> Outer<W> {
    /// Ends the age stream, if any, and gives back the file's writer.
    fn finish(self) -> io::Result<W> {
        match self {
            Outer::Age(w) => w.finish(),
            Outer::Bare(w) => Ok(w),
        }
    }
}

impl<W: Write> Write for Outer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Outer::Age(w) => w.write(buf),
            Outer::Bare(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Outer::Age(w) => w.flush(),
            Outer::Bare(w) => w.flush(),
        }
    }
}

/// The archive's writer: the file's writer ([`Outer`]), through zstd or not.
enum Packed<W: Write> {
    Plain(W),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Packed<W> {
    /// Ends the zstd frame, if any, and gives back the age stream.
    fn finish(self) -> io::Result<W> {
        match self {
            Packed::Plain(w) => Ok(w),
            Packed::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Packed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Packed::Plain(w) => w.write(buf),
            Packed::Zstd(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Packed::Plain(w) => w.flush(),
            Packed::Zstd(e) => e.flush(),
        }
    }
}

/// A tar header with everything but the path: owned by root, times from the manifest.
fn header(kind: tar::EntryType, mode: u32, size: u64, mtime: u64) -> tar::Header {
    let mut head = tar::Header::new_gnu();
    head.set_entry_type(kind);
    head.set_mode(mode);
    head.set_size(size);
    head.set_mtime(mtime);
    head.set_uid(0);
    head.set_gid(0);
    head
}

/// Hashes and counts what is read through it, and keeps a read error for the caller
/// (tar's error would otherwise name only the archive being written).
struct Hashing<R> {
    inner: R,
    hasher: blake3::Hasher,
    count: u64,
    failed: Option<io::Error>,
}

impl<R> Hashing<R> {
    fn new(inner: R) -> Hashing<R> {
        Hashing {
            inner,
            hasher: blake3::Hasher::new(),
            count: 0,
            failed: None,
        }
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                self.count += n as u64;
                Ok(n)
            }
            Err(e) => {
                let told = io::Error::new(e.kind(), e.to_string());
                self.failed = Some(e);
                Err(told)
            }
        }
    }
}

/// Reads the manifest of the sealed file at `sealed`, decrypting (with `key`, which an
/// encrypted file needs) and decompressing only the part it is in: for listing and
/// for finding a workload's images without unpacking them. The manifest is checked
/// as on disk (magic, version, checksum, values) and must name the generation of the
/// file name. The rest of the file is not checked: only [`unseal`] tells a file that
/// is damaged further on.
pub fn peek_manifest(sealed: &Path, key: Option<&SealKey>) -> Result<Manifest> {
    let id = id_of(sealed)?;
    let (plain, _) = open_payload(sealed, key, MAX_MANIFEST_SIZE + ENTRY_OVERHEAD)?;
    let mut archive = tar::Archive::new(plain);
    let mut entries = archive.entries().map_err(|e| read_error(sealed, e))?;
    first_manifest(sealed, &id, &mut entries).map(|(manifest, _)| manifest)
}

/// Decrypts (with `key`, which an encrypted file needs) and decompresses the sealed
/// file at `sealed` and unpacks its generation into the new directory `dest` (0700),
/// which must not exist; its parent must. Returns the manifest.
///
/// The generation is unpacked into `<parent>/.tmp-<name of dest>` and renamed to
/// `dest` once the whole file was read and authenticated (age's last chunk, and
/// zstd's checksum, are only known good at the end): on any error that directory is
/// removed, and nothing is
/// left behind. Refused, naming the entry: anything but regular files and
/// directories (links, devices, fifos...), a path that is absolute, has `.` or `..`
/// components or is not in the manifest's layout, an entry twice, a file of another
/// size than the manifest says, a file before its directory. The room it takes is
/// the manifest's image sizes, checked against the free space of `dest`'s file
/// system before anything is written ([`Error::NotEnoughRoom`]); no more than that
/// (and the archive's own overhead) is read. Files are made 0600 and directories
/// 0700 whatever the archive says. The files are not synced: the copy is meant for
/// a restore right away, from memory (/run).
pub fn unseal(sealed: &Path, key: Option<&SealKey>, dest: &Path) -> Result<Manifest> {
    let id = id_of(sealed)?;
    if fs::symlink_metadata(dest).is_ok() {
        return Err(Error::GenerationExists { path: dest.into() });
    }
    let (Some(parent), Some(name)) = (dest.parent(), dest.file_name()) else {
        return Err(Error::NotADirectory { path: dest.into() });
    };
    let tmp = parent.join(format!(".tmp-{}", name.to_string_lossy()));
    if fs::symlink_metadata(&tmp).is_ok() {
        remove_any(&tmp)?;
    }
    create_private_dir(&tmp)?;
    let result = unpack(sealed, &id, key, &tmp).and_then(|manifest| {
        fs::rename(&tmp, dest).at("renaming into place", dest)?;
        sync_dir(parent)?;
        Ok(manifest)
    });
    if result.is_err() {
        // Best effort: the error being returned matters more than this one.
        let _ = remove_any(&tmp);
    }
    result
}

/// The generation id of the sealed file's name, which must be `<id>.age` or
/// `<id>.tar.zst`.
fn id_of(sealed: &Path) -> Result<GenerationId> {
    sealed_id(sealed)
        .map(|(id, _)| id)
        .ok_or_else(|| Error::UnexpectedEntry {
            path: sealed.into(),
            reason: "a sealed generation's name is <generation id>.age or \
                     <generation id>.tar.zst"
                .into(),
        })
}

/// The files and directories of a generation, as paths in the archive.
struct Layout {
    files: BTreeMap<String, u64>,
    dirs: BTreeSet<String>,
    /// What the archive may still hold after the manifest.
    budget: u64,
    /// The sum of the image sizes.
    bytes: u64,
}

impl Layout {
    fn of(sealed: &Path, manifest: &Manifest) -> Result<Layout> {
        let mut layout = Layout {
            files: BTreeMap::new(),
            dirs: BTreeSet::new(),
            budget: ARCHIVE_END,
            bytes: 0,
        };
        for w in &manifest.workloads {
            if !w.links.is_empty() || w.images.iter().any(|i| i.name.as_str().contains('/')) {
                return Err(Error::SealedDamaged {
                    path: sealed.into(),
                    problem: format!(
                        "its manifest lists pre-dumps of workload {}, which sealed images \
                         never hold",
                        w.name
                    ),
                });
            }
            if w.images.is_empty() {
                continue;
            }
            layout.dirs.insert(w.name.to_string());
            layout.budget = layout.budget.saturating_add(ENTRY_OVERHEAD);
            for image in &w.images {
                layout
                    .files
                    .insert(format!("{}/{}", w.name, image.name), image.size);
                layout.bytes = layout.bytes.saturating_add(image.size);
                layout.budget = layout
                    .budget
                    .saturating_add(image.size.saturating_add(ENTRY_OVERHEAD));
            }
        }
        Ok(layout)
    }
}

/// Unpacks the sealed file into the directory `dir` (new, empty).
fn unpack(sealed: &Path, id: &GenerationId, key: Option<&SealKey>, dir: &Path) -> Result<Manifest> {
    let (plain, budget) = open_payload(sealed, key, MAX_MANIFEST_SIZE + ENTRY_OVERHEAD)?;
    let mut archive = tar::Archive::new(plain);
    let mut entries = archive.entries().map_err(|e| read_error(sealed, e))?;
    let (manifest, manifest_bytes) = first_manifest(sealed, id, &mut entries)?;
    let layout = Layout::of(sealed, &manifest)?;
    check_room(
        dir.parent().unwrap_or(dir),
        layout.bytes,
        &format!("unsealing {}", sealed.display()),
        "free space there (a tmpfs such as /run grows with mount -o remount,size=<bytes>), \
         or free memory",
    )?;
    budget.set(layout.budget);
    write_entry(
        sealed,
        &mut &manifest_bytes[..],
        &dir.join(MANIFEST_FILE),
        manifest_bytes.len() as u64,
    )?;

    let refuse = |entry: &str, reason: String| Error::SealedEntryRefused {
        path: sealed.into(),
        entry: shown(entry),
        reason,
    };
    let mut seen_files = BTreeSet::new();
    let mut seen_dirs = BTreeSet::new();
    for entry in entries {
        let mut entry = entry.map_err(|e| read_error(sealed, e))?;
        let raw = entry.path_bytes().into_owned();
        let shown_raw = String::from_utf8_lossy(&raw).into_owned();
        let rel = entry_path(&raw).map_err(|reason| refuse(&shown_raw, reason.into()))?;
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            if !layout.dirs.contains(&rel) {
                return Err(refuse(
                    &rel,
                    "a directory that is not a workload of the manifest".into(),
                ));
            }
            if !seen_dirs.insert(rel.clone()) {
                return Err(refuse(&rel, "it is in the archive twice".into()));
            }
            let path = dir.join(&rel);
            if !create_private_dir(&path)? {
                return Err(refuse(&rel, "it is in the archive twice".into()));
            }
        } else if kind.is_file() {
            let Some(&size) = layout.files.get(&rel) else {
                return Err(refuse(
                    &rel,
                    "a file that the manifest does not list".into(),
                ));
            };
            if !seen_files.insert(rel.clone()) {
                return Err(refuse(&rel, "it is in the archive twice".into()));
            }
            let parent = rel.split_once('/').map(|(d, _)| d).unwrap_or_default();
            if !seen_dirs.contains(parent) {
                return Err(refuse(&rel, "it comes before its directory".into()));
            }
            if entry.size() != size {
                return Err(refuse(
                    &rel,
                    format!("it is {} bytes, and the manifest says {size}", entry.size()),
                ));
            }
            write_entry(sealed, &mut entry, &dir.join(&rel), size)?;
        } else {
            return Err(refuse(
                &rel,
                format!("{}, not a regular file or a directory", kind_name(kind)),
            ));
        }
    }
    if let Some(missing) = layout.files.keys().find(|f| !seen_files.contains(*f)) {
        return Err(Error::SealedDamaged {
            path: sealed.into(),
            problem: format!("image {missing}, which its manifest lists, is not in it"),
        });
    }
    // Only the end of the stream authenticates its last chunk (and has zstd's
    // checksum), and tells a file cut short: read up to there.
    let mut rest = archive.into_inner();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match rest.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(sealed, e)),
        };
        if buf[..n].iter().any(|&b| b != 0) {
            return Err(Error::SealedDamaged {
                path: sealed.into(),
                problem: "data follows the end of the archive".into(),
            });
        }
    }
    Ok(manifest)
}

/// Reads the first entry, which must be the manifest, and checks it. Returns it and
/// its bytes.
fn first_manifest<R: Read>(
    sealed: &Path,
    id: &GenerationId,
    entries: &mut tar::Entries<'_, R>,
) -> Result<(Manifest, Vec<u8>)> {
    let Some(entry) = entries.next() else {
        return Err(Error::SealedDamaged {
            path: sealed.into(),
            problem: "the archive in it is empty".into(),
        });
    };
    let mut entry = entry.map_err(|e| read_error(sealed, e))?;
    let raw = entry.path_bytes().into_owned();
    if raw != MANIFEST_FILE.as_bytes() || !entry.header().entry_type().is_file() {
        return Err(Error::SealedEntryRefused {
            path: sealed.into(),
            entry: shown(&String::from_utf8_lossy(&raw)),
            reason: format!(
                "the first entry must be {MANIFEST_FILE}, a regular file: this is another \
                 format, or a newer one"
            ),
        });
    }
    let path = sealed.join(MANIFEST_FILE);
    if entry.size() > MAX_MANIFEST_SIZE {
        return Err(Error::ManifestTooLarge {
            path,
            size: entry.size(),
            limit: MAX_MANIFEST_SIZE,
        });
    }
    let mut bytes = Vec::new();
    (&mut entry)
        .take(MAX_MANIFEST_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| read_error(sealed, e))?;
    let manifest = Manifest::from_bytes(&bytes, &path)?;
    if &manifest.generation != id {
        return Err(Error::SealedDamaged {
            path: sealed.into(),
            problem: format!(
                "it holds generation {}, not {id} as its name says: it was renamed by hand",
                shown(manifest.generation.as_str())
            ),
        });
    }
    Ok((manifest, bytes))
}

/// The path of an archive entry as a relative path of normal components, without a
/// trailing '/'; or why it is refused.
fn entry_path(raw: &[u8]) -> std::result::Result<String, &'static str> {
    let text = std::str::from_utf8(raw).map_err(|_| "its path is not UTF-8")?;
    if text.starts_with('/') {
        return Err("an absolute path");
    }
    let text = text.strip_suffix('/').unwrap_or(text);
    if text.is_empty() {
        return Err("an empty path");
    }
    for part in text.split('/') {
        match part {
            "" => return Err("a path with an empty component"),
            "." | ".." => return Err("a path with '.' or '..' components"),
            _ if part.contains('\0') => return Err("a path with a NUL byte"),
            _ => {}
        }
    }
    Ok(text.to_owned())
}

fn kind_name(kind: tar::EntryType) -> String {
    match kind {
        tar::EntryType::Symlink => "a symbolic link".into(),
        tar::EntryType::Link => "a hard link".into(),
        tar::EntryType::Char => "a character device".into(),
        tar::EntryType::Block => "a block device".into(),
        tar::EntryType::Fifo => "a fifo".into(),
        tar::EntryType::GNUSparse => "a sparse file".into(),
        other => format!("an entry of type {:?}", other.as_byte() as char),
    }
}

/// Writes the data of `entry` to the new file `path` (0600).
fn write_entry(sealed: &Path, entry: &mut impl Read, path: &Path, size: u64) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
        .at("creating", path)?;
    file.set_permissions(fs::Permissions::from_mode(FILE_MODE))
        .at("setting the mode of", path)?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut written = 0u64;
    loop {
        let n = match entry.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(sealed, e)),
        };
        file.write_all(&buf[..n]).at("writing", path)?;
        written += n as u64;
    }
    if written != size {
        return Err(Error::SealedDamaged {
            path: sealed.into(),
            problem: format!(
                "{} ends after {written} of its {size} bytes",
                path.display()
            ),
        });
    }
    Ok(())
}

/// The plaintext of a sealed file: decrypted and decompressed as it is read, no more
/// than a budget.
type Plaintext = Budget<Box<dyn Read>>;

/// Opens the sealed file; if it is encrypted (`<id>.age`), reads its header and
/// unwraps the file key with `key`. Returns the plaintext reader, which fails once
/// more than `budget` bytes are read from it, and the budget, which the caller may
/// change as it learns more.
fn open_payload(
    sealed: &Path,
    key: Option<&SealKey>,
    budget: u64,
) -> Result<(Plaintext, Rc<Cell<u64>>)> {
    let encrypted = sealed_id(sealed).is_some_and(|(_, encrypted)| encrypted);
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(sealed)
        .at("opening", sealed)?;
    if !file.metadata().at("reading metadata of", sealed)?.is_file() {
        return Err(Error::NotARegularFile {
            path: sealed.into(),
        });
    }
    let stream: Box<dyn Read> = if encrypted {
        let Some(key) = key else {
            return Err(Error::SealedNeedsKey {
                path: sealed.into(),
            });
        };
        decrypted(sealed, file, key)?
    } else {
        Box::new(file)
    };
    // The first bytes tell a zstd frame from a tar archive; they are read, then put
    // back in front of the rest.
    let mut stream = stream;
    let mut head = Vec::with_capacity(ZSTD_MAGIC.len());
    (&mut stream)
        .take(ZSTD_MAGIC.len() as u64)
        .read_to_end(&mut head)
        .map_err(|e| read_error(sealed, e))?;
    let zstd = head == ZSTD_MAGIC;
    if !encrypted && !zstd {
        // Only ever written compressed: anything else is not ours.
        return Err(Error::SealedDamaged {
            path: sealed.into(),
            problem: "it does not start with a zstd frame".into(),
        });
    }
    let stream = io::Cursor::new(head).chain(stream);
    let stream: Box<dyn Read> = if zstd {
        Box::new(zstd_decoder(stream).map_err(|e| read_error(sealed, e))?)
    } else {
        Box::new(stream)
    };
    let left = Rc::new(Cell::new(budget));
    Ok((
        Budget {
            inner: stream,
            left: left.clone(),
            what: "more data than its manifest lists",
        },
        left,
    ))
}

/// The decrypted stream of the age file `file` (at `sealed`), read with `key`.
fn decrypted(sealed: &Path, file: fs::File, key: &SealKey) -> Result<Box<dyn Read>> {
    let header_left = Rc::new(Cell::new(MAX_HEADER_SIZE));
    let reader = BufReader::new(Budget {
        inner: file,
        left: header_left.clone(),
        what: "an age header larger than 16 KiB",
    });
    let decryptor =
        age::Decryptor::new_buffered(reader).map_err(|e| decrypt_error(sealed, key, e))?;
    header_left.set(u64::MAX);
    let stream = decryptor
        .decrypt(std::iter::once(&key.identity as &dyn age::Identity))
        .map_err(|e| decrypt_error(sealed, key, e))?;
    Ok(Box::new(stream))
}

/// A zstd decoder of the payload that keeps its window at zstd's default limit
/// (128 MiB), whatever the frame asks for: a sealed file can be forged by anyone with
/// the public key (a compressed-only one by whoever can write the area), and its
/// frame must not decide how much memory we take.
fn zstd_decoder<R: Read>(
    inner: R,
) -> io::Result<zstd::stream::read::Decoder<'static, BufReader<R>>> {
    let mut decoder = zstd::stream::read::Decoder::new(inner)?;
    decoder.window_log_max(27)?;
    Ok(decoder)
}

fn decrypt_error(sealed: &Path, key: &SealKey, err: age::DecryptError) -> Error {
    use age::DecryptError as D;
    let damaged = |problem: &str| Error::SealedDamaged {
        path: sealed.into(),
        problem: problem.into(),
    };
    match err {
        D::NoMatchingKeys => Error::SealedWrongKey {
            path: sealed.into(),
            key: key.path.clone(),
            id: sealed_id(sealed)
                .map(|(id, _)| id.to_string())
                .unwrap_or_else(|| "<id>".into()),
        },
        D::Io(e) => read_error(sealed, e),
        D::UnknownFormat => damaged("it is not an age v1 file"),
        D::InvalidHeader => damaged("its age header is not well-formed"),
        D::InvalidMac => damaged("its age header does not match its MAC"),
        D::ExcessiveWork { .. } | D::KeyDecryptionFailed => {
            damaged("it is encrypted to a passphrase, not to a key")
        }
        D::DecryptionFailed => damaged("it does not decrypt"),
    }
}

/// An error reading the plaintext: an I/O error of the disk under the file stays
/// one; anything else (age's authentication, a truncated stream, a malformed archive,
/// too much data) means the file's content is bad.
fn read_error(sealed: &Path, err: io::Error) -> Error {
    let mut text = String::new();
    let mut os = err.raw_os_error();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = cause {
        let line = e.to_string();
        if !text.contains(&line) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&line);
        }
        if let Some(code) = e
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
        {
            os = Some(code);
        }
        cause = e.source();
    }
    match os {
        Some(code) => Error::Io {
            action: "reading",
            path: sealed.into(),
            source: io::Error::from_raw_os_error(code),
        },
        None => Error::SealedDamaged {
            path: sealed.into(),
            problem: text,
        },
    }
}

/// A reader that fails once more than `left` bytes were read through it; `left` is
/// shared so that the owner of the budget can change it while another owns the
/// reader (the tar archive owns the plaintext).
struct Budget<R> {
    inner: R,
    left: Rc<Cell<u64>>,
    /// What reading past the budget means, for the error.
    what: &'static str,
}

#[derive(Debug)]
struct OverBudget(&'static str);

impl fmt::Display for OverBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for OverBudget {}

impl<R: Read> Read for Budget<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let left = self.left.get();
        if left == 0 {
            // At the budget: fine if this is the end.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    OverBudget(self.what),
                )),
            };
        }
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let read = self.inner.read(&mut buf[..n])?;
        self.left.set(left - read as u64);
        Ok(read)
    }
}

/// Reads a generation's manifest file, without following a link, capped.
fn read_manifest_file(path: &Path) -> Result<Vec<u8>> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
        .at("opening", path)?;
    let meta = file.metadata().at("reading metadata of", path)?;
    if !meta.is_file() {
        return Err(Error::NotARegularFile { path: path.into() });
    }
    let mut bytes = Vec::new();
    file.take(MAX_MANIFEST_SIZE + 1)
        .read_to_end(&mut bytes)
        .at("reading", path)?;
    if bytes.len() as u64 > MAX_MANIFEST_SIZE {
        return Err(Error::ManifestTooLarge {
            path: path.into(),
            size: bytes.len() as u64,
            limit: MAX_MANIFEST_SIZE,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::area::Area;
    use crate::manifest::{SourceSystem, Workload, WorkloadKind, WorkloadName};

    /// The generation of the format-1 fixture and its images.
    const FIXTURE_ID: &str = "20250101T000000.000000000-6.1.0-40-amd64";
    const FIXTURE_IMAGES: &[(&str, &[u8])] = &[
        ("core-100.img", b"core of 100"),
        ("pages-1.img", b"the pages of a small process"),
    ];
    const FIXTURE_SEALED: &[u8] =
        include_bytes!("../tests/fixtures/sealed-v1/20250101T000000.000000000-6.1.0-40-amd64.age");
    const FIXTURE_KEY: &str = include_str!("../tests/fixtures/sealed-v1/suspend.key");

    /// A workload name long enough that its image paths need GNU long-name entries.
    fn long_name() -> String {
        format!("tmux:{}", "l".repeat(150))
    }

    fn id(s: &str) -> GenerationId {
        GenerationId::new(s).unwrap()
    }

    fn new_key() -> SealKey {
        SealKey {
            identity: age::x25519::Identity::generate(),
            path: "/test/suspend.key".into(),
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Commits generation `gen` in `area` with workloads and their images.
    /// Image files by name, with their bytes.
    type Images<'a> = &'a [(&'a str, &'a [u8])];

    fn commit(area: &Area, gen: &str, workloads: &[(&str, Images<'_>)]) -> Manifest {
        let source = SourceSystem {
            kernel_release: "6.1.0-40-amd64".into(),
            proc_version: "Linux version 6.1.0-40-amd64".into(),
            kernel_config_checksum: None,
            criu_version: "3.17.1".into(),
            glibc_version: "2.36".into(),
            cpu: Default::default(),
        };
        let mut manifest = Manifest::new(id(gen), 1_735_689_600, source);
        let pending = area.begin(&id(gen)).unwrap();
        for (i, (name, images)) in workloads.iter().enumerate() {
            let name = WorkloadName::new(*name).unwrap();
            let dir = pending.workload_dir(&name).unwrap();
            for (file, bytes) in *images {
                fs::write(dir.join(file), bytes).unwrap();
            }
            let pid = 100 + i as u32;
            manifest
                .workloads
                .push(Workload::new(name, WorkloadKind::Tmux, pid));
        }
        pending.commit(manifest).unwrap()
    }

    /// An area, a committed generation `gen` in it (workload `tmux:w` with two small
    /// images, and one with a long name) and its sealed file in `<area>/sealed`.
    struct Sealed {
        _dir: tempfile::TempDir,
        area: Area,
        id: GenerationId,
        path: PathBuf,
        key: SealKey,
        /// Sealed with `key`; else compressed only.
        encrypted: bool,
        /// Where unsealed copies go: an area's root.
        staging: Area,
    }

    fn sealed(images: &[(&str, &[u8])]) -> Sealed {
        sealed_packed(images, Packing::Plain)
    }

    fn sealed_packed(images: &[(&str, &[u8])], packing: Packing) -> Sealed {
        sealed_with(images, packing, true)
    }

    fn sealed_with(images: &[(&str, &[u8])], packing: Packing, encrypted: bool) -> Sealed {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("area");
        let staging = dir.path().join("staging");
        fs::create_dir(&root).unwrap();
        fs::create_dir(&staging).unwrap();
        let area = Area::open(&root).unwrap();
        let long = long_name();
        commit(
            &area,
            "g1",
            &[("tmux:w", images), (&long, &[("core-7.img", b"seven")])],
        );
        let key = new_key();
        let out = sealed_dir(&root, true).unwrap().unwrap();
        let path = seal(
            &area.generation_path(&id("g1")),
            &id("g1"),
            encrypted.then(|| key.recipient()).as_ref(),
            &out,
            packing,
        )
        .unwrap();
        Sealed {
            _dir: dir,
            area,
            id: id("g1"),
            path,
            key,
            encrypted,
            staging: Area::open(&staging).unwrap(),
        }
    }

    impl Sealed {
        /// The key the file needs.
        fn key(&self) -> Option<&SealKey> {
            self.encrypted.then_some(&self.key)
        }

        fn dest(&self) -> PathBuf {
            self.staging.generation_path(&self.id)
        }

        fn unseal(&self) -> Result<Manifest> {
            unseal(&self.path, self.key(), &self.dest())
        }

        /// Unsealing `bytes` as the sealed file is refused, and leaves nothing.
        #[track_caller]
        fn refused(&self, bytes: &[u8]) -> Error {
            fs::write(&self.path, bytes).unwrap();
            let err = self.unseal().unwrap_err();
            assert!(
                names_in(&self.staging.root().join("generations")).is_empty(),
                "left behind: {:?} after {err}",
                names_in(&self.staging.root().join("generations"))
            );
            err
        }
    }

    const SMALL: &[(&str, &[u8])] = &[("core-100.img", b"core of 100"), ("pages-1.img", b"pages")];

    // --- sealing and unsealing ----------------------------------------------------

    #[test]
    fn a_sealed_generation_unseals_to_one_that_verifies() {
        let s = sealed(SMALL);
        assert_eq!(s.path, s.area.root().join("sealed/g1.age"));
        assert_eq!(mode(&s.path), 0o600);
        assert_eq!(mode(s.path.parent().unwrap()), 0o700);
        assert_eq!(names_in(s.path.parent().unwrap()), ["g1.age"]);
        let listed = list_sealed(s.path.parent().unwrap()).unwrap();
        assert_eq!(
            listed,
            [SealedFile {
                id: s.id.clone(),
                path: s.path.clone(),
                bytes: fs::metadata(&s.path).unwrap().len(),
                encrypted: true,
            }]
        );

        let committed = s.area.load(&s.id).unwrap();
        assert_eq!(peek_manifest(&s.path, Some(&s.key)).unwrap(), committed);
        assert_eq!(s.unseal().unwrap(), committed);
        assert_eq!(s.staging.verify(&s.id).unwrap(), committed);
        let dest = s.dest();
        assert_eq!(mode(&dest), 0o700);
        for w in &committed.workloads {
            let wdir = dest.join(w.name.as_str());
            assert_eq!(mode(&wdir), 0o700);
            for image in &w.images {
                assert_eq!(mode(&wdir.join(image.name.as_str())), 0o600);
            }
        }
        assert_eq!(fs::read(dest.join("tmux:w/pages-1.img")).unwrap(), b"pages");
        assert_eq!(names_in(&s.staging.root().join("generations")), ["g1"]);

        // Neither is done twice over an existing result.
        let err = s.unseal().unwrap_err();
        assert!(matches!(err, Error::GenerationExists { .. }), "{err}");
        let err = seal(
            &s.area.generation_path(&s.id),
            &s.id,
            Some(&s.key.recipient()),
            s.path.parent().unwrap(),
            Packing::Plain,
        )
        .unwrap_err();
        assert!(matches!(err, Error::GenerationExists { .. }), "{err}");
    }

    /// The payload of the sealed file `s`, decrypted but not decompressed.
    fn payload(s: &Sealed) -> Vec<u8> {
        let file = fs::File::open(&s.path).unwrap();
        let decryptor = age::Decryptor::new(file).unwrap();
        let mut reader = decryptor
            .decrypt(std::iter::once(&s.key.identity as &dyn age::Identity))
            .unwrap();
        let mut plain = Vec::new();
        reader.read_to_end(&mut plain).unwrap();
        plain
    }

    #[test]
    fn a_compressed_sealed_generation_is_smaller_and_unseals_to_one_that_verifies() {
        // Memory images are mostly zero pages and repeated structures.
        let pages: Vec<u8> = (0..4u32 << 20)
            .map(|i| if i % 4096 < 3000 { 0 } else { (i % 251) as u8 })
            .collect();
        let images: &[(&str, &[u8])] = &[("core-100.img", b"core of 100"), ("pages-1.img", &pages)];
        let plain = sealed_packed(images, Packing::Plain);
        let packed = sealed_packed(images, Packing::Zstd);
        assert!(payload(&plain).starts_with(MANIFEST_FILE.as_bytes()));
        assert!(payload(&packed).starts_with(&ZSTD_MAGIC));
        let (plain_bytes, packed_bytes) = (
            fs::metadata(&plain.path).unwrap().len(),
            fs::metadata(&packed.path).unwrap().len(),
        );
        assert!(
            packed_bytes * 4 < plain_bytes,
            "zstd: {packed_bytes} bytes, plain: {plain_bytes}"
        );

        let committed = packed.area.load(&packed.id).unwrap();
        assert_eq!(
            peek_manifest(&packed.path, Some(&packed.key)).unwrap(),
            committed
        );
        assert_eq!(packed.unseal().unwrap(), committed);
        assert_eq!(packed.staging.verify(&packed.id).unwrap(), committed);
        assert_eq!(
            fs::read(packed.dest().join("tmux:w/pages-1.img")).unwrap(),
            pages
        );
    }

    #[test]
    fn a_compressed_only_generation_unseals_without_a_key_and_refuses_damage() {
        let pages: Vec<u8> = (0..1u32 << 20)
            .map(|i| if i % 4096 < 3000 { 0 } else { (i % 251) as u8 })
            .collect();
        let images: &[(&str, &[u8])] = &[("core-100.img", b"core of 100"), ("pages-1.img", &pages)];
        let s = sealed_with(images, Packing::Zstd, false);
        assert_eq!(s.path, s.area.root().join("sealed/g1.tar.zst"));
        assert_eq!(mode(&s.path), 0o600);
        let bytes = fs::read(&s.path).unwrap();
        assert!(bytes.starts_with(&ZSTD_MAGIC));
        assert!(bytes.len() * 4 < pages.len(), "{} bytes", bytes.len());
        let listed = list_sealed(s.path.parent().unwrap()).unwrap();
        assert_eq!(listed.len(), 1);
        assert!(!listed[0].encrypted);
        assert_eq!(listed[0].id, s.id);
        assert_eq!(
            find_sealed(s.path.parent().unwrap(), &s.id),
            vec![s.path.clone()]
        );

        let committed = s.area.load(&s.id).unwrap();
        assert_eq!(peek_manifest(&s.path, None).unwrap(), committed);
        // A key given for a file that needs none changes nothing.
        assert_eq!(peek_manifest(&s.path, Some(&s.key)).unwrap(), committed);
        assert_eq!(s.unseal().unwrap(), committed);
        assert_eq!(s.staging.verify(&s.id).unwrap(), committed);
        assert_eq!(
            fs::read(s.dest().join("tmux:w/pages-1.img")).unwrap(),
            pages
        );
        fs::remove_dir_all(s.dest()).unwrap();

        // The generation is sealed once, whichever the kind.
        let err = seal(
            &s.area.generation_path(&s.id),
            &s.id,
            Some(&s.key.recipient()),
            s.path.parent().unwrap(),
            Packing::Zstd,
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::GenerationExists { path } if *path == s.path),
            "{err}"
        );
        // Neither encrypted nor compressed: refused, nothing written.
        let err = seal(
            &s.area.generation_path(&s.id),
            &s.id,
            None,
            &s.area.root().join("other"),
            Packing::Plain,
        )
        .unwrap_err();
        assert!(matches!(err, Error::SealUnsupported { .. }), "{err}");

        // A flipped bit in zstd's checksum (the last 4 bytes) or in the middle, a
        // truncated file, a tar archive without zstd: each refused, nothing left.
        let flip = |at: usize| {
            let mut b = bytes.clone();
            b[at] ^= 0x10;
            b
        };
        for (what, damaged) in [
            ("checksum flipped", flip(bytes.len() - 2)),
            ("middle flipped", flip(bytes.len() / 2)),
            ("truncated", bytes[..bytes.len() / 2].to_vec()),
            ("cut at the end", bytes[..bytes.len() - 3].to_vec()),
        ] {
            let err = s.refused(&damaged);
            assert!(
                matches!(
                    err,
                    Error::SealedDamaged { .. } | Error::SealedEntryRefused { .. }
                ),
                "{what}: {err:?}"
            );
        }
        let mut tar = Vec::new();
        {
            let mut b = tar::Builder::new(&mut tar);
            let m = fs::read(s.area.generation_path(&s.id).join(MANIFEST_FILE)).unwrap();
            let mut head = header(tar::EntryType::Regular, FILE_MODE, m.len() as u64, 0);
            b.append_data(&mut head, MANIFEST_FILE, &m[..]).unwrap();
            b.finish().unwrap();
        }
        let err = s.refused(&tar);
        assert!(
            err.to_string().contains("does not start with a zstd frame"),
            "{err}"
        );
        fs::write(&s.path, &bytes).unwrap();
        s.unseal().unwrap();
    }

    #[test]
    fn an_encrypted_file_read_without_a_key_says_so() {
        let s = sealed(SMALL);
        let err = peek_manifest(&s.path, None).unwrap_err();
        assert!(matches!(err, Error::SealedNeedsKey { .. }), "{err}");
        let err = unseal(&s.path, None, &s.dest()).unwrap_err();
        assert!(matches!(err, Error::SealedNeedsKey { .. }), "{err}");
        assert!(names_in(&s.staging.root().join("generations")).is_empty());
    }

    #[test]
    fn no_sealed_file_is_left_when_its_directory_cannot_be_synced() {
        let dir = tempfile::tempdir().unwrap();
        let out_dir = dir.path();
        let tmp = out_dir.join("g1.age.tmp");
        let out = out_dir.join("g1.age");
        let failing = |d: &Path| -> Result<()> {
            Err(io::Error::from_raw_os_error(nix::libc::EIO)).at("syncing directory", d)
        };
        // Renamed, then the sync fails: the error, and no file that would say the
        // workload is suspended once its caller ran it again.
        fs::write(&tmp, b"sealed").unwrap();
        let err = put_in_place(&tmp, &out, out_dir, &failing).unwrap_err();
        assert!(err.to_string().starts_with("syncing directory"), "{err}");
        assert!(names_in(out_dir).is_empty(), "{:?}", names_in(out_dir));
        // The rename fails: no temporary file either.
        fs::write(&tmp, b"sealed").unwrap();
        put_in_place(&tmp, &out_dir.join("none/g1.age"), out_dir, &sync_dir).unwrap_err();
        assert!(names_in(out_dir).is_empty(), "{:?}", names_in(out_dir));
        // Everything works: the file is in place.
        fs::write(&tmp, b"sealed").unwrap();
        put_in_place(&tmp, &out, out_dir, &sync_dir).unwrap();
        assert_eq!(names_in(out_dir), ["g1.age"]);
        assert_eq!(fs::read(&out).unwrap(), b"sealed");
    }

    #[test]
    fn sealing_checks_the_images_against_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let area = Area::open(dir.path()).unwrap();
        commit(&area, "g", &[("w", SMALL)]);
        let gen = area.generation_path(&id("g"));
        let out = sealed_dir(dir.path(), true).unwrap().unwrap();
        let recipient = new_key().recipient();
        // Same size, other content: the checksum tells.
        fs::write(gen.join("w/pages-1.img"), b"PAGES").unwrap();
        let err = seal(&gen, &id("g"), Some(&recipient), &out, Packing::Plain).unwrap_err();
        assert!(matches!(err, Error::ImageChecksumMismatch { .. }), "{err}");
        fs::write(gen.join("w/pages-1.img"), b"pages, longer").unwrap();
        let err = seal(&gen, &id("g"), Some(&recipient), &out, Packing::Plain).unwrap_err();
        assert!(matches!(err, Error::ImageSizeMismatch { .. }), "{err}");
        assert!(names_in(&out).is_empty(), "{:?}", names_in(&out));
        // Another generation's directory.
        let err = seal(&gen, &id("other"), Some(&recipient), &out, Packing::Plain).unwrap_err();
        assert!(matches!(err, Error::GenerationMismatch { .. }), "{err}");
    }

    #[test]
    fn generations_with_pre_dumps_are_not_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let area = Area::open(dir.path()).unwrap();
        let pending = area.begin(&id("g")).unwrap();
        let w = pending
            .workload_dir(&WorkloadName::new("w").unwrap())
            .unwrap();
        fs::write(w.join("core-1.img"), b"core").unwrap();
        fs::create_dir(w.join("pre-1")).unwrap();
        fs::write(w.join("pre-1/pages-1.img"), b"pages").unwrap();
        symlink("pre-1", w.join("parent")).unwrap();
        let mut m = Manifest::new(id("g"), 1, commit_source());
        m.workloads.push(Workload::new(
            WorkloadName::new("w").unwrap(),
            WorkloadKind::Process,
            100,
        ));
        pending.commit(m).unwrap();
        let out = sealed_dir(dir.path(), true).unwrap().unwrap();
        let err = seal(
            &area.generation_path(&id("g")),
            &id("g"),
            Some(&new_key().recipient()),
            &out,
            Packing::Plain,
        )
        .unwrap_err();
        assert!(matches!(err, Error::SealUnsupported { .. }), "{err}");
        assert!(err.to_string().contains("pre-dumps"), "{err}");
    }

    fn commit_source() -> SourceSystem {
        SourceSystem {
            kernel_release: "6.1.0-40-amd64".into(),
            proc_version: "Linux version 6.1.0-40-amd64".into(),
            kernel_config_checksum: None,
            criu_version: "3.17.1".into(),
            glibc_version: "2.36".into(),
            cpu: Default::default(),
        }
    }

    #[test]
    fn the_manifest_is_read_without_decrypting_the_rest() {
        // A 1 MiB image: the file is 17 chunks, the manifest in the first.
        let big: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 + i / 251) as u8).collect();
        let s = sealed(&[("pages-1.img", &big)]);
        let whole = fs::read(&s.path).unwrap();
        let committed = s.area.load(&s.id).unwrap();

        // The end of the file cut off, or damaged: the manifest is still read...
        let mut cut = whole[..whole.len() / 2].to_vec();
        fs::write(&s.path, &cut).unwrap();
        assert_eq!(peek_manifest(&s.path, Some(&s.key)).unwrap(), committed);
        // ...but the file does not unseal.
        let err = s.refused(&cut);
        assert!(matches!(err, Error::SealedDamaged { .. }), "{err}");
        assert!(err.to_string().contains("truncated"), "{err}");
        cut = whole.clone();
        let last = cut.len() - 20;
        cut[last] ^= 0x01;
        fs::write(&s.path, &cut).unwrap();
        assert_eq!(peek_manifest(&s.path, Some(&s.key)).unwrap(), committed);
        let err = s.refused(&cut);
        assert!(matches!(err, Error::SealedDamaged { .. }), "{err}");

        fs::write(&s.path, &whole).unwrap();
        s.unseal().unwrap();
        s.staging.verify(&s.id).unwrap();
    }

    #[test]
    fn another_key_is_refused_naming_the_file_and_the_key() {
        let s = sealed(SMALL);
        let other = new_key();
        for err in [
            peek_manifest(&s.path, Some(&other)).unwrap_err(),
            unseal(&s.path, Some(&other), &s.dest()).unwrap_err(),
        ] {
            assert!(matches!(err, Error::SealedWrongKey { .. }), "{err}");
            let text = err.to_string();
            assert!(
                text.contains(&s.path.display().to_string())
                    && text.contains("/test/suspend.key")
                    && text.contains("upgradectl images rm g1"),
                "{text}"
            );
        }
        assert!(names_in(&s.staging.root().join("generations")).is_empty());
    }

    #[test]
    fn a_flipped_bit_anywhere_is_refused() {
        let s = sealed(SMALL);
        let whole = fs::read(&s.path).unwrap();
        // Every byte of the header (each field is parsed differently), the nonce and
        // the last chunk's tag; a sample of the rest (one authenticated chunk, where
        // every position is alike), to keep the test quick.
        let payload = whole.windows(4).position(|w| w == b"\n---").unwrap() + 64;
        let positions = (0..payload + 16)
            .chain((payload + 16..whole.len() - 32).step_by(37))
            .chain(whole.len() - 32..whole.len());
        for i in positions {
            let mut bytes = whole.clone();
            bytes[i] ^= 0x01;
            let err = s.refused(&bytes);
            assert!(
                matches!(
                    err,
                    Error::SealedDamaged { .. } | Error::SealedWrongKey { .. }
                ),
                "byte {i}: {err}"
            );
            assert!(
                err.to_string().contains(&s.path.display().to_string()),
                "byte {i}: {err}"
            );
        }
        fs::write(&s.path, &whole).unwrap();
        s.unseal().unwrap();
    }

    #[test]
    fn a_truncated_file_is_refused() {
        let s = sealed(SMALL);
        let whole = fs::read(&s.path).unwrap();
        let header = whole.windows(4).position(|w| w == b"\n---").unwrap();
        for len in [
            0,
            10,
            header,
            header + 50,
            header + 100,
            whole.len() / 2,
            whole.len() - 17,
            whole.len() - 1,
        ] {
            let err = s.refused(&whole[..len]);
            assert!(matches!(err, Error::SealedDamaged { .. }), "{len}: {err}");
            assert!(
                err.to_string().contains(&s.path.display().to_string()),
                "{err}"
            );
        }
        // Anything added at the end is refused too.
        let mut longer = whole.clone();
        longer.extend_from_slice(&whole[whole.len() - 100..]);
        let err = s.refused(&longer);
        assert!(matches!(err, Error::SealedDamaged { .. }), "{err}");
    }

    #[test]
    fn a_file_with_a_wrong_age_header_is_refused() {
        let s = sealed(SMALL);
        let whole = fs::read(&s.path).unwrap();
        let v2 = {
            let text = String::from_utf8_lossy(&whole[..20]).into_owned();
            assert_eq!(text, "age-encryption.org/v");
            let mut b = whole.clone();
            b[20] = b'2';
            b
        };
        let huge_header = {
            let mut b = b"age-encryption.org/v1\n".to_vec();
            for _ in 0..2000 {
                b.extend_from_slice(b"-> X-grease abc\nAAAAAAAA\n");
            }
            b
        };
        for (what, bytes) in [
            ("not age", b"this is not an age file\n".to_vec()),
            ("empty", Vec::new()),
            ("version 2", v2),
            ("header of 50 KB", huge_header),
        ] {
            let err = s.refused(&bytes);
            assert!(matches!(err, Error::SealedDamaged { .. }), "{what}: {err}");
            let err = peek_manifest(&s.path, Some(&s.key)).unwrap_err();
            assert!(matches!(err, Error::SealedDamaged { .. }), "{what}: {err}");
            assert!(
                err.to_string().contains(&s.path.display().to_string()),
                "{what}: {err}"
            );
        }
    }

    // --- hostile archives (which anyone with the public key can make) --------------

    /// The archive `build` writes, handed the manifest of `s`.
    fn archive_of(s: &Sealed, build: impl FnOnce(&mut tar::Builder<Vec<u8>>, &[u8])) -> Vec<u8> {
        let manifest = fs::read(s.area.generation_path(&s.id).join(MANIFEST_FILE)).unwrap();
        let mut archive = tar::Builder::new(Vec::new());
        build(&mut archive, &manifest);
        archive.into_inner().unwrap()
    }

    /// `plain` encrypted to the key of `s`, as a sealed file's payload.
    fn encrypt_to(s: &Sealed, plain: &[u8]) -> Vec<u8> {
        let recipient = s.key.recipient();
        let encryptor =
            age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                .unwrap();
        let mut out = Vec::new();
        let mut writer = encryptor.wrap_output(&mut out).unwrap();
        writer.write_all(plain).unwrap();
        writer.finish().unwrap();
        out
    }

    /// Encrypts the archive `build` writes to `key` as the sealed file of `s`.
    fn forge(s: &Sealed, build: impl FnOnce(&mut tar::Builder<Vec<u8>>, &[u8])) -> Vec<u8> {
        encrypt_to(s, &archive_of(s, build))
    }

    /// [`forge`], with the archive in a zstd frame as [`Packing::Zstd`] seals it.
    fn forge_zstd(s: &Sealed, build: impl FnOnce(&mut tar::Builder<Vec<u8>>, &[u8])) -> Vec<u8> {
        encrypt_to(s, &zstd::encode_all(&archive_of(s, build)[..], 19).unwrap())
    }

    #[test]
    fn a_compressed_archive_that_inflates_past_its_manifest_is_refused() {
        let s = sealed_packed(SMALL, Packing::Zstd);
        // The baseline: a forged compressed archive laid out as sealed unseals.
        let bytes = forge_zstd(&s, |a, m| {
            entry(a, MANIFEST_FILE, m);
            rest(a);
        });
        fs::write(&s.path, bytes).unwrap();
        s.unseal().unwrap();
        fs::remove_dir_all(s.dest()).unwrap();

        // 256 MiB of long name in a few hundred bytes of zstd: tar would read it all
        // into memory; the budget stops it.
        let bomb = vec![b'a'; 256 << 20];
        let bytes = forge_zstd(&s, |a, m| {
            entry(a, MANIFEST_FILE, m);
            entry(a, "tmux:w/", b"");
            raw_entry(a, b"././@LongLink", tar::EntryType::GNULongName, &bomb);
            entry(a, "tmux:w/pages-1.img", b"pages");
        });
        assert!(bytes.len() < 64 << 10, "{} bytes", bytes.len());
        let err = s.refused(&bytes);
        let text = err.to_string();
        assert!(text.contains("more data than its manifest lists"), "{text}");
        assert!(text.contains(&s.path.display().to_string()), "{text}");

        // A broken frame, authenticated by age (anyone with the public key can make
        // one): refused, naming the file.
        let mut plain = ZSTD_MAGIC.to_vec();
        plain.extend_from_slice(&[0xff; 64]);
        let err = s.refused(&encrypt_to(&s, &plain));
        assert!(
            err.to_string().contains(&s.path.display().to_string()),
            "{err}"
        );
    }

    /// Appends an entry whose path is `raw`, set byte by byte (the tar crate refuses
    /// to write absolute paths and `..` itself).
    fn raw_entry(
        archive: &mut tar::Builder<Vec<u8>>,
        raw: &[u8],
        kind: tar::EntryType,
        data: &[u8],
    ) {
        let mut head = header(kind, 0o644, data.len() as u64, 0);
        head.as_old_mut().name[..raw.len()].copy_from_slice(raw);
        head.set_cksum();
        archive.append(&head, data).unwrap();
    }

    fn entry(archive: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let kind = if path.ends_with('/') {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        };
        raw_entry(archive, path.as_bytes(), kind, data);
    }

    /// The images of `tmux:w` and the long-named workload, as sealed.
    fn rest(archive: &mut tar::Builder<Vec<u8>>) {
        rest_but(archive, "");
    }

    /// [`rest`] without the entry `skip`.
    fn rest_but(archive: &mut tar::Builder<Vec<u8>>, skip: &str) {
        for (path, data) in [
            ("tmux:w/", &b""[..]),
            ("tmux:w/core-100.img", b"core of 100"),
            ("tmux:w/pages-1.img", b"pages"),
        ] {
            if path != skip {
                entry(archive, path, data);
            }
        }
        let long = long_name();
        let mut head = header(tar::EntryType::Directory, 0o700, 0, 0);
        archive.append_data(&mut head, &long, io::empty()).unwrap();
        let mut head = header(tar::EntryType::Regular, 0o600, 5, 0);
        archive
            .append_data(&mut head, format!("{long}/core-7.img"), &b"seven"[..])
            .unwrap();
    }

    #[test]
    fn a_forged_archive_laid_out_as_sealed_unseals() {
        // The baseline for the hostile cases: the helpers build what seal writes.
        let s = sealed(SMALL);
        let bytes = forge(&s, |a, m| {
            entry(a, MANIFEST_FILE, m);
            rest(a);
        });
        fs::write(&s.path, bytes).unwrap();
        s.unseal().unwrap();
        s.staging.verify(&s.id).unwrap();
    }

    #[test]
    fn hostile_entries_are_refused_by_name() {
        use tar::EntryType;
        let s = sealed(SMALL);
        type Build = Box<dyn Fn(&mut tar::Builder<Vec<u8>>)>;
        let cases: Vec<(&str, &str, Build)> = vec![
            (
                "a symbolic link",
                "tmux:w/core-100.img",
                Box::new(|a| {
                    entry(a, "tmux:w/", b"");
                    let mut head = header(EntryType::Symlink, 0o777, 0, 0);
                    a.append_link(&mut head, "tmux:w/core-100.img", "/etc/shadow")
                        .unwrap();
                }),
            ),
            (
                "a hard link",
                "tmux:w/core-100.img",
                Box::new(|a| {
                    entry(a, "tmux:w/", b"");
                    let mut head = header(EntryType::Link, 0o600, 0, 0);
                    a.append_link(&mut head, "tmux:w/core-100.img", "/etc/shadow")
                        .unwrap();
                }),
            ),
            (
                "a character device",
                "tmux:w/core-100.img",
                Box::new(|a| {
                    entry(a, "tmux:w/", b"");
                    raw_entry(a, b"tmux:w/core-100.img", EntryType::Char, b"");
                }),
            ),
            (
                "a block device",
                "tmux:w/core-100.img",
                Box::new(|a| {
                    entry(a, "tmux:w/", b"");
                    raw_entry(a, b"tmux:w/core-100.img", EntryType::Block, b"");
                }),
            ),
            (
                "a fifo",
                "tmux:w/pages-1.img",
                Box::new(|a| {
                    entry(a, "tmux:w/", b"");
                    raw_entry(a, b"tmux:w/pages-1.img", EntryType::Fifo, b"");
                }),
            ),
            (
                "an absolute path",
                "/etc/cron.d/x",
                Box::new(|a| raw_entry(a, b"/etc/cron.d/x", EntryType::Regular, b"x")),
            ),
            (
                "'..' components",
                "tmux:w/../../x",
                Box::new(|a| {
                    entry(a, "tmux:w/", b"");
                    raw_entry(a, b"tmux:w/../../x", EntryType::Regular, b"x");
                }),
            ),
            (
                "does not list",
                "tmux:w/extra.img",
                Box::new(|a| {
                    entry(a, "tmux:w/", b"");
                    entry(a, "tmux:w/extra.img", b"x");
                }),
            ),
            (
                "not a workload",
                "other",
                Box::new(|a| entry(a, "other/", b"")),
            ),
            (
                "the manifest says 5",
                "tmux:w/pages-1.img",
                Box::new(|a| {
                    entry(a, "tmux:w/", b"");
                    entry(a, "tmux:w/pages-1.img", b"pages, and more");
                }),
            ),
            (
                "twice",
                "tmux:w/pages-1.img",
                Box::new(|a| {
                    entry(a, "tmux:w/", b"");
                    entry(a, "tmux:w/pages-1.img", b"pages");
                    entry(a, "tmux:w/pages-1.img", b"pages");
                }),
            ),
            (
                "before its directory",
                "tmux:w/pages-1.img",
                Box::new(|a| entry(a, "tmux:w/pages-1.img", b"pages")),
            ),
            (
                "twice",
                "tmux:w",
                Box::new(|a| {
                    entry(a, "tmux:w/", b"");
                    entry(a, "tmux:w/", b"");
                }),
            ),
            (
                "a path with '.'",
                "./tmux:w/",
                Box::new(|a| raw_entry(a, b"./tmux:w/", EntryType::Directory, b"")),
            ),
        ];
        for (reason, name, build) in cases {
            let bytes = forge(&s, |a, m| {
                entry(a, MANIFEST_FILE, m);
                build(a);
                rest(a);
            });
            let err = s.refused(&bytes);
            let text = err.to_string();
            assert!(
                matches!(err, Error::SealedEntryRefused { .. }),
                "{reason}: {text}"
            );
            assert!(
                text.contains(&format!("hold {}", shown(name))) && text.contains(reason),
                "{reason}: {text}"
            );
            assert!(text.contains(&s.path.display().to_string()), "{text}");
            // Nothing was written outside the staging area either.
            assert!(!s.staging.root().join("x").exists());
        }
    }

    #[test]
    fn archives_that_are_not_laid_out_as_sealed_are_refused() {
        let s = sealed(SMALL);
        // The manifest not first.
        let err = s.refused(&forge(&s, |a, m| {
            entry(a, "tmux:w/", b"");
            entry(a, MANIFEST_FILE, m);
        }));
        assert!(matches!(err, Error::SealedEntryRefused { .. }), "{err}");
        assert!(err.to_string().contains("first entry"), "{err}");
        // No manifest at all.
        let err = s.refused(&forge(&s, |_, _| {}));
        assert!(matches!(err, Error::SealedDamaged { .. }), "{err}");
        // A damaged manifest: its own checksum tells.
        let err = s.refused(&forge(&s, |a, m| {
            let mut m = m.to_vec();
            let at = m.windows(4).position(|w| w == b"tmux").unwrap();
            m[at] = b'T';
            entry(a, MANIFEST_FILE, &m);
            rest(a);
        }));
        assert!(matches!(err, Error::ManifestChecksum { .. }), "{err}");
        // An image missing.
        let err = s.refused(&forge(&s, |a, m| {
            entry(a, MANIFEST_FILE, m);
            rest_but(a, "tmux:w/pages-1.img");
        }));
        assert!(matches!(err, Error::SealedDamaged { .. }), "{err}");
        assert!(err.to_string().contains("pages-1.img"), "{err}");
        // Data after the end of the archive.
        let err = s.refused(&forge(&s, |a, m| {
            entry(a, MANIFEST_FILE, m);
            rest(a);
            a.finish().unwrap();
            a.get_mut().extend_from_slice(b"and then some");
        }));
        assert!(matches!(err, Error::SealedDamaged { .. }), "{err}");
        // The file renamed: its name and its manifest disagree.
        let renamed = s.path.with_file_name("g2.age");
        fs::copy(&s.path, &renamed).unwrap();
        fs::write(
            &s.path,
            forge(&s, |a, m| {
                entry(a, MANIFEST_FILE, m);
                rest(a);
            }),
        )
        .unwrap();
        fs::rename(&s.path, &renamed).unwrap();
        let err = peek_manifest(&renamed, Some(&s.key)).unwrap_err();
        assert!(
            matches!(err, Error::SealedDamaged { .. }) && err.to_string().contains("renamed"),
            "{err}"
        );
    }

    #[test]
    fn a_budget_stops_reading_past_it() {
        let left = Rc::new(Cell::new(4));
        let mut r = Budget {
            inner: &b"0123456789"[..],
            left: left.clone(),
            what: "too much",
        };
        let mut buf = [0u8; 3];
        assert_eq!(r.read(&mut buf).unwrap(), 3);
        assert_eq!(r.read(&mut buf).unwrap(), 1);
        let err = r.read(&mut buf).unwrap_err();
        assert_eq!(err.to_string(), "too much");
        left.set(100);
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"56789");
        // Exactly at the budget is the end, not an error.
        let mut r = Budget {
            inner: &b"01"[..],
            left: Rc::new(Cell::new(2)),
            what: "too much",
        };
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        assert_eq!(all, b"01");
    }

    #[test]
    fn unsealing_needs_room_for_the_images() {
        let big = vec![0x5a_u8; 200 << 10];
        let s = sealed(&[("pages-1.img", &big)]);
        // Staging on a 64 KiB tmpfs (root only, as in the area's tests).
        let root = s.staging.root();
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: mounting a test file system needs root");
            return;
        }
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs"])
            .arg(root)
            .status();
        if !mounted.is_ok_and(|st| st.success()) {
            eprintln!("skipped: mounting a tmpfs failed");
            return;
        }
        let result = Area::open(root)
            .and_then(|small| unseal(&s.path, Some(&s.key), &small.generation_path(&s.id)));
        let left = names_in(&root.join("generations"));
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(root)
            .status();
        let err = result.unwrap_err();
        let Error::NotEnoughRoom { needed, free, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(*needed, (200 << 10) + 5);
        assert!(*free < *needed, "{err}");
        assert!(err.to_string().contains("unsealing"), "{err}");
        assert!(left.is_empty(), "{left:?}");
    }

    // --- the format-1 fixture -----------------------------------------------------

    #[test]
    fn the_format_1_fixture_unseals_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("{FIXTURE_ID}.age"));
        fs::write(&path, FIXTURE_SEALED).unwrap();
        let key = SealKey::parse(FIXTURE_KEY, Path::new("suspend.key")).unwrap();
        assert!(FIXTURE_KEY.contains(&format!("# public key: {}", key.public_key())));

        let peeked = peek_manifest(&path, Some(&key)).unwrap();
        assert_eq!(peeked.generation.as_str(), FIXTURE_ID);
        assert_eq!(peeked.state, GenerationState::Committed);
        let names: Vec<&str> = peeked.workloads.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["tmux:work"]);

        let root = dir.path().join("staging");
        fs::create_dir(&root).unwrap();
        let staging = Area::open(&root).unwrap();
        let gen = id(FIXTURE_ID);
        assert_eq!(
            unseal(&path, Some(&key), &staging.generation_path(&gen)).unwrap(),
            peeked
        );
        assert_eq!(staging.verify(&gen).unwrap(), peeked);
        for (name, bytes) in FIXTURE_IMAGES {
            let file = staging.generation_path(&gen).join("tmux:work").join(name);
            assert_eq!(fs::read(file).unwrap(), *bytes);
        }
    }

    /// Writes the fixture again: `cargo test -p dumper -- --ignored write_fixture`,
    /// for a new format only (the old fixture stays, as the old format's).
    #[test]
    #[ignore]
    fn write_fixture() {
        let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sealed-v1");
        fs::create_dir_all(&out).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let area = Area::open(dir.path()).unwrap();
        commit(&area, FIXTURE_ID, &[("tmux:work", FIXTURE_IMAGES)]);
        let key_path = dir.path().join("suspend.key");
        let key = SealKey::generate(&key_path).unwrap();
        let _ = fs::remove_file(sealed_path(&out, &id(FIXTURE_ID), true));
        let sealed = seal(
            &area.generation_path(&id(FIXTURE_ID)),
            &id(FIXTURE_ID),
            Some(&key.recipient()),
            &out,
            Packing::Plain,
        )
        .unwrap();
        fs::copy(&key_path, out.join("suspend.key")).unwrap();
        eprintln!("wrote {}", sealed.display());
    }

    // --- the key ------------------------------------------------------------------

    fn key_file(dir: &Path, mode: u32) -> PathBuf {
        let path = dir.join("suspend.key");
        let _ = fs::remove_file(&path);
        fs::write(&path, FIXTURE_KEY).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn key_files_others_could_read_or_replace_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let euid = nix::unistd::geteuid().as_raw();
        let check = |path: &Path, owner: u32| {
            check_key_file(path, &fs::symlink_metadata(path).unwrap(), owner)
        };
        for good in [0o600, 0o400, 0o700] {
            let path = key_file(dir.path(), good);
            check(&path, euid).unwrap();
        }
        for bad in [0o640, 0o604, 0o660, 0o644, 0o610, 0o601, 0o666] {
            let path = key_file(dir.path(), bad);
            let err = check(&path, euid).unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, Error::KeyInsecure { .. }), "{bad:o}: {text}");
            assert!(
                text.contains(&format!("has mode {bad:04o}"))
                    && text.contains(&format!("chmod 0600 {}", path.display())),
                "{text}"
            );
        }
        // A link, even to a good key.
        let path = key_file(dir.path(), 0o600);
        let link = dir.path().join("link.key");
        symlink(&path, &link).unwrap();
        let err = check(&link, euid).unwrap_err();
        assert!(
            err.to_string().contains("is a symbolic link") && err.to_string().contains("link.key"),
            "{err}"
        );
        let err = SealKey::load(&link).unwrap_err();
        assert!(matches!(err, Error::KeyInsecure { .. }), "{err}");
        // A directory.
        let err = check(dir.path(), euid).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        // Another owner: as the check sees it, then for real when running as root.
        let err = check(&path, euid + 1).unwrap_err();
        assert!(
            err.to_string().contains(&format!("is owned by uid {euid}")),
            "{err}"
        );
        if euid == 0 {
            std::os::unix::fs::chown(&path, Some(4242), None).unwrap();
            let err = SealKey::load(&path).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("is owned by uid 4242")
                    && text.contains(&format!("chown root {}", path.display())),
                "{text}"
            );
        } else {
            eprintln!("skipped: changing a file's owner needs root");
        }
    }

    #[test]
    fn a_missing_key_says_how_to_make_one() {
        let dir = tempfile::tempdir().unwrap();
        let err = SealKey::load(&dir.path().join("none.key")).unwrap_err();
        assert!(matches!(err, Error::KeyMissing { .. }), "{err}");
        assert!(
            err.to_string().contains("upgradectl suspend-key generate"),
            "{err}"
        );
    }

    #[test]
    fn generated_keys_load_back_and_are_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("suspend.key");
        let key = SealKey::generate(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("# created: "), "{text}");
        assert_eq!(lines[1], format!("# public key: {}", key.public_key()));
        assert!(lines[1].starts_with("# public key: age1"), "{text}");
        assert!(lines[2].starts_with("AGE-SECRET-KEY-1"), "{text}");
        let loaded = SealKey::load(&path).unwrap();
        assert_eq!(loaded.public_key(), key.public_key());
        assert_eq!(loaded.path(), path);
        assert!(!format!("{loaded:?}").contains("AGE-SECRET-KEY"));

        let err = SealKey::generate(&path).unwrap_err();
        assert!(matches!(err, Error::KeyExists { .. }), "{err}");
        assert!(err.to_string().contains("move it away first"), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), text);
        // A dangling link is in the way too.
        let link = dir.path().join("link.key");
        symlink(dir.path().join("nowhere"), &link).unwrap();
        let err = SealKey::generate(&link).unwrap_err();
        assert!(matches!(err, Error::KeyExists { .. }), "{err}");
        assert!(!dir.path().join("nowhere").exists());
        assert_eq!(names_in(dir.path()), ["link.key", "suspend.key"]);

        // What one key sealed, another does not open.
        let other = SealKey::generate(&dir.path().join("other.key")).unwrap();
        assert_ne!(other.public_key(), key.public_key());
    }

    #[test]
    fn key_files_are_read_as_age_keygen_writes_them() {
        let path = Path::new("/etc/upgraded/suspend.key");
        let key = SealKey::parse(FIXTURE_KEY, path).unwrap();
        let secret = FIXTURE_KEY.lines().find(|l| l.starts_with("AGE-")).unwrap();
        // Blank lines, comments and spaces around are fine.
        let spaced = format!("\n# a comment\n\n  {secret}  \n# another\n");
        assert_eq!(
            SealKey::parse(&spaced, path).unwrap().public_key(),
            key.public_key()
        );
        let cases = [
            ("# only a comment\n".to_owned(), "no AGE-SECRET-KEY-1"),
            (format!("{secret}\n{secret}\n"), "more than one key"),
            (
                format!("# c\nAGE-SECRET-KEY-1NOTAKEY\n{secret}\n"),
                "line 2 is neither",
            ),
            ("age1notasecret\n".to_owned(), "line 1 is neither"),
        ];
        for (text, why) in cases {
            let err = SealKey::parse(&text, path).unwrap_err();
            let shown = err.to_string();
            assert!(matches!(err, Error::KeyInvalid { .. }), "{shown}");
            assert!(
                shown.contains(why) && shown.contains("/etc/upgraded/suspend.key"),
                "{shown}"
            );
            assert!(
                !shown.contains("NOTAKEY"),
                "a key line is never shown: {shown}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k");
        fs::write(&file, b"\xff\xfe").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        let err = SealKey::load(&file).unwrap_err();
        assert!(err.to_string().contains("not UTF-8"), "{err}");
    }

    // --- the sealed directory -----------------------------------------------------

    #[test]
    fn only_sealed_files_with_valid_names_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(sealed_dir(dir.path(), false).unwrap(), None);
        let sealed = sealed_dir(dir.path(), true).unwrap().unwrap();
        assert_eq!(mode(&sealed), 0o700);
        for name in [
            "g1.age",
            "g0.age",
            "bad name.age",
            ".g.age",
            "g2.age.tmp",
            "g3",
            "g4.tar.zst",
            "g5.tar.zst.tmp",
            "g6.zst",
        ] {
            fs::write(sealed.join(name), b"x").unwrap();
        }
        fs::create_dir(sealed.join("d.age")).unwrap();
        symlink(sealed.join("g1.age"), sealed.join("l.age")).unwrap();
        let listed: Vec<(String, bool)> = list_sealed(&sealed)
            .unwrap()
            .into_iter()
            .map(|f| (f.id.to_string(), f.encrypted))
            .collect();
        assert_eq!(
            listed,
            [
                ("g0".into(), true),
                ("g1".into(), true),
                ("g4".into(), false)
            ]
        );
        let mut cleaned = cleanup_sealed(&sealed).unwrap();
        cleaned.sort();
        assert_eq!(
            cleaned,
            [sealed.join("g2.age.tmp"), sealed.join("g5.tar.zst.tmp")]
        );
        assert!(!sealed.join("g2.age.tmp").exists());
        assert_eq!(sealed_id(Path::new("/x/a.b.age")), Some((id("a.b"), true)));
        assert_eq!(
            sealed_id(Path::new("/x/a.b.tar.zst")),
            Some((id("a.b"), false))
        );
        assert_eq!(sealed_id(Path::new("/x/.a.age")), None);
        assert_eq!(sealed_id(Path::new("/x/a.age.tmp")), None);
        assert_eq!(sealed_id(Path::new("/x/a.tar.zst.tmp")), None);
        assert_eq!(sealed_id(Path::new("/x/a.zst")), None);

        // Others may not write it; reading is tightened away.
        fs::set_permissions(&sealed, fs::Permissions::from_mode(0o755)).unwrap();
        sealed_dir(dir.path(), false).unwrap();
        assert_eq!(mode(&sealed), 0o700);
        fs::set_permissions(&sealed, fs::Permissions::from_mode(0o777)).unwrap();
        let err = sealed_dir(dir.path(), false).unwrap_err();
        assert!(matches!(err, Error::AreaInsecureMode { .. }), "{err}");
        remove_sealed(&sealed.join("g1.age")).unwrap();
        assert!(!sealed.join("g1.age").exists());
    }
}
