//! The persistent area: where generations of checkpoint images live across a kexec.
//!
//! ```text
//! <root>/generations/<id>/manifest.json        committed generations
//! <root>/generations/<id>/<workload>/<image>   one image directory per workload
//! <root>/generations/<id>/<workload>/pre-<i>/  its pre-dumps, if any, and CRIU's
//!                                              `parent` links between them
//! <root>/generations/.tmp-<id>/                a generation being written
//! <root>/generations/.del-<id>/                a generation being removed
//! ```
//!
//! A workload directory holds regular files, `pre-1` to `pre-<N>` holding regular
//! files, and the `parent` links the manifest lists (see [`crate::manifest`]); anything
//! else, a link elsewhere or with another target included, is refused. Files are never
//! opened through a symbolic link.
//!
//! A generation becomes visible by one rename of `.tmp-<id>` to `<id>`, after every
//! image, the manifest and every directory were synced: a committed generation is
//! complete on disk, and an interrupted dump is never offered for restore. Removal is
//! the same rename the other way, so a half-removed generation is never listed either.
//! Files are 0600 and directories 0700: images are process memory.
//!
//! One process (the daemon) uses an area at a time; [`Area::cleanup_incomplete`] is
//! meant for its start, before any [`Area::begin`].
//!
//! A hostile file system is told apart from a damaged area (docs/area.md): a
//! read-only one ([`Error::AreaReadOnly`]), one that refuses writes to its owner
//! ([`Error::AreaNotWritable`]) and a full one ([`Error::AreaFull`]) are refused by
//! [`Area::begin`] before a generation is started, so before anything is frozen, and
//! reported as such when they turn up later. Whether the file system outlives what the
//! images are for (a kexec, a power-off) is [`fs_verdict`]'s rule.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
pub use crate::fsutil::{check_mounted, FsType};
use crate::fsutil::{
    create_private_dir, free_bytes, mount_point_of, remove_any, set_mode, sync_dir, DIR_MODE,
    FILE_MODE,
};
use crate::manifest::{
    layout_problem, pre_dump_dir, pre_dump_index, shown, temp_path_for, Checksum, GenerationId,
    GenerationState, ImageFile, ImageLink, ImageName, LayoutEntry, LinkName, LinkTarget, Manifest,
    ValidationError, Workload, WorkloadName, WorkloadState, MANIFEST_FILE, PARENT_LINK,
};

/// The directory under the root that holds the generations.
pub const GENERATIONS_DIR: &str = "generations";
const PENDING_PREFIX: &str = ".tmp-";
const REMOVING_PREFIX: &str = ".del-";

/// An opened persistent area.
#[derive(Debug, Clone)]
pub struct Area {
    root: PathBuf,
    generations: PathBuf,
}

/// A generation being written: `<root>/generations/.tmp-<id>/`. It is listed nowhere
/// until [`commit`](PendingGeneration::commit) succeeds. Dropping it leaves the
/// directory on disk on purpose: after a failed dump or commit its images may be the
/// only copy of workloads that were already stopped. [`Area::cleanup_incomplete`] or
/// [`abandon`](PendingGeneration::abandon) removes it.
///
/// While it lives, its directory is locked (flock), and so is it while any
/// [`PendingHold`] of it lives: [`Area::cleanup_incomplete`] in another process (a CLI
/// checkpoint while the daemon's upgrade dumps, a second suspend) leaves a locked
/// pending generation alone. The kernel drops the lock when the process dies, so what
/// a crash leaves behind is cleaned up as before.
#[derive(Debug)]
#[must_use = "a pending generation is offered for restore only once committed"]
pub struct PendingGeneration {
    id: GenerationId,
    dir: PathBuf,
    final_dir: PathBuf,
    generations: PathBuf,
    root: PathBuf,
    lock: PendingHold,
}

/// Keeps a pending generation's directory locked against another process's
/// [`Area::cleanup_incomplete`], also after the [`PendingGeneration`] was consumed by a
/// commit that failed, while its images are still needed.
#[derive(Debug, Clone)]
pub struct PendingHold(#[allow(dead_code)] std::sync::Arc<nix::fcntl::Flock<fs::File>>);

/// Opens `dir` and takes its exclusive lock without waiting; `None` when another open
/// file holds it.
fn lock_dir(dir: &Path) -> Result<Option<nix::fcntl::Flock<fs::File>>> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
        .open(dir)
        .at("opening", dir)?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(locked) => Ok(Some(locked)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(io::Error::from(errno)).at("locking", dir),
    }
}

/// The manifest of a generation that passed [`Area::verify`]; only
/// [`Area::verified`] makes one.
#[derive(Debug, Clone)]
pub struct Verified(Manifest);

impl Verified {
    pub fn manifest(&self) -> &Manifest {
        &self.0
    }
}

impl Area {
    /// Opens the area at `root`, creating `generations/` (0700) if needed.
    ///
    /// `root` must exist, be a directory owned by the effective uid and writable by
    /// nobody else: whoever can write it can plant images that get restored.
    ///
    /// A read-only area opens (its generations can be listed and verified) as long as
    /// `generations/` exists with the right mode; [`Area::begin`] refuses it.
    pub fn open(root: impl AsRef<Path>) -> Result<Area> {
        let root = root.as_ref().to_path_buf();
        let euid = nix::unistd::geteuid().as_raw();
        // The root itself may be a symbolic link (an admin's choice of disk); what it
        // points to is what is checked.
        let meta = match fs::metadata(&root) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::AreaMissing { path: root })
            }
            Err(e) => return Err(e).at("reading metadata of", root),
        };
        check_owned_dir(&root, &meta, euid)?;

        let generations = root.join(GENERATIONS_DIR);
        let explain = |e| explain_write(&root, e, true);
        if create_private_dir(&generations).map_err(explain)? {
            sync_dir(&root).map_err(explain)?;
        } else {
            let meta =
                fs::symlink_metadata(&generations).at("reading metadata of", &generations)?;
            check_owned_dir(&generations, &meta, euid)?;
            if meta.permissions().mode() & 0o7777 != DIR_MODE {
                tracing::warn!(
                    path = ?generations,
                    mode = format_args!("{:04o}", meta.permissions().mode() & 0o7777),
                    "tightening the mode of the generations directory to 0700"
                );
                set_mode(&generations, DIR_MODE).map_err(explain)?;
            }
        }
        Ok(Area { root, generations })
    }

    /// Checks that images can be written here now: the file system is not mounted
    /// read-only (statvfs), and a 0600 file can be created in `generations/`, written,
    /// synced and removed; that also catches a read-only bind mount, a write refused
    /// to the owner (an immutable attribute, an ACL, a security module) and a full file
    /// system or quota. Errors: [`Error::AreaReadOnly`], [`Error::AreaNotWritable`],
    /// [`Error::AreaFull`]. Nothing is left behind (the probe is a `.tmp-` name, which
    /// [`Area::cleanup_incomplete`] removes should a crash leave it).
    pub fn check_writable(&self) -> Result<()> {
        let st = nix::sys::statvfs::statvfs(&self.generations)
            .map_err(io::Error::from)
            .at(
                "reading the file system status (statvfs) of",
                &self.generations,
            )?;
        if st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY) {
            return Err(Error::AreaReadOnly {
                path: self.root.clone(),
                mount_point: mount_point_of(&self.root),
                source: None,
            });
        }
        let probe = self.generations.join(format!(
            "{PENDING_PREFIX}write-probe.{}",
            std::process::id()
        ));
        let written = write_probe(&probe);
        let removed = match fs::remove_file(&probe) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e).at("removing", &probe),
            _ => Ok(()),
        };
        written
            .and(removed)
            .map_err(|e| explain_write(&self.root, e, true))
    }

    /// The type of the file system the area is on; [`fs_verdict`] says what it is good
    /// for.
    pub fn fs_type(&self) -> Result<FsType> {
        FsType::of(&self.root)
    }

    /// Says what an error of writing into this area means, when it says something
    /// about the area: out of space or quota (anywhere in it: an I/O error, CRIU's or
    /// podman's report, a failed dump) becomes [`Error::AreaFull`] with the area's path
    /// and the bytes left, a read-only file system [`Error::AreaReadOnly`]. Other
    /// errors are returned as they are. For callers that write into the area by other
    /// means (CRIU's images of a failed [`crate::checkpoint::checkpoint`]).
    pub fn explain(&self, err: Error) -> Error {
        explain_write(&self.root, err, false)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of the committed generation `id` (whether or not it exists).
    pub fn generation_path(&self, id: &GenerationId) -> PathBuf {
        self.generations.join(id.as_str())
    }

    /// Starts writing generation `id` in `generations/.tmp-<id>/` (0700), after
    /// [`check_writable`](Area::check_writable): a checkpoint begins its generation
    /// before it freezes anything, so an area that cannot take images refuses it
    /// first.
    pub fn begin(&self, id: &GenerationId) -> Result<PendingGeneration> {
        let final_dir = self.generation_path(id);
        if exists_no_follow(&final_dir)? {
            return Err(Error::GenerationExists { path: final_dir });
        }
        self.check_writable()?;
        let dir = self.generations.join(format!("{PENDING_PREFIX}{id}"));
        if !create_private_dir(&dir).map_err(|e| explain_write(&self.root, e, true))? {
            return Err(Error::PendingExists { path: dir });
        }
        let Some(locked) = lock_dir(&dir)? else {
            return Err(Error::PendingExists { path: dir });
        };
        Ok(PendingGeneration {
            id: id.clone(),
            dir,
            final_dir,
            generations: self.generations.clone(),
            root: self.root.clone(),
            lock: PendingHold(std::sync::Arc::new(locked)),
        })
    }

    /// The committed generations, sorted by id. Pending and half-removed generations
    /// are never listed; other strays (files, names that are no generation id) are
    /// skipped with a warning.
    pub fn list(&self) -> Result<Vec<GenerationId>> {
        let mut ids = Vec::new();
        for name in sorted_entries(&self.generations)? {
            let path = self.generations.join(&name);
            let Some(name) = name.to_str() else {
                tracing::warn!(?path, "skipping an entry that is not a generation");
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let Ok(id) = GenerationId::new(name) else {
                tracing::warn!(?path, "skipping an entry that is not a generation");
                continue;
            };
            let meta = fs::symlink_metadata(&path).at("reading metadata of", &path)?;
            if !meta.is_dir() {
                tracing::warn!(?path, "skipping an entry that is not a generation");
                continue;
            }
            ids.push(id);
        }
        Ok(ids)
    }

    /// The directory of committed generation `id`, which must exist (as a directory).
    fn existing_generation_dir(&self, id: &GenerationId) -> Result<PathBuf> {
        let dir = self.generation_path(id);
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => Ok(dir),
            Ok(_) => Err(Error::NotADirectory { path: dir }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(Error::GenerationNotFound { path: dir })
            }
            Err(e) => Err(e).at("reading metadata of", dir),
        }
    }

    /// Reads and validates the manifest of generation `id`.
    pub fn load(&self, id: &GenerationId) -> Result<Manifest> {
        let dir = self.existing_generation_dir(id)?;
        let path = dir.join(MANIFEST_FILE);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => return Err(Error::NotARegularFile { path }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::ManifestMissing { path })
            }
            Err(e) => return Err(e).at("reading metadata of", path),
        }
        let manifest = Manifest::load(&path)?;
        if &manifest.generation != id {
            return Err(Error::GenerationMismatch {
                path,
                found: shown(manifest.generation.as_str()),
            });
        }
        Ok(manifest)
    }

    /// [`verify`](Area::verify), keeping the proof: a restore that takes the result
    /// cannot skip the check, nor make the caller hash the images twice.
    pub fn verified(&self, id: &GenerationId) -> Result<Verified> {
        self.verify(id).map(Verified)
    }

    /// Checks generation `id` against its manifest: nothing missing, nothing extra,
    /// every image of the recorded size and checksum, every `parent` link with the
    /// recorded target. Sizes and listings are checked for every workload before any
    /// image is hashed, so the cheap errors come first; the first problem found is
    /// returned. Returns the manifest.
    pub fn verify(&self, id: &GenerationId) -> Result<Manifest> {
        let manifest = self.load(id)?;
        let dir = self.generation_path(id);

        for name in sorted_entries(&dir)? {
            let known =
                name == MANIFEST_FILE || manifest.workloads.iter().any(|w| name == w.name.as_str());
            if !known {
                return Err(Error::UnexpectedEntry {
                    path: dir.join(name),
                    reason: "neither the manifest nor a workload directory it lists".into(),
                });
            }
        }

        for workload in &manifest.workloads {
            let wdir = dir.join(workload.name.as_str());
            match fs::symlink_metadata(&wdir) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => return Err(Error::NotADirectory { path: wdir }),
                // A workload that failed before writing anything has no directory.
                Err(e) if e.kind() == io::ErrorKind::NotFound && workload.images.is_empty() => {
                    continue
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(Error::WorkloadDirMissing { path: wdir })
                }
                Err(e) => return Err(e).at("reading metadata of", wdir),
            }
            let pre_dumps = workload.pre_dumps();
            // Real directories, before anything in them is looked at: no check below
            // may follow a link out of the workload.
            for &i in &pre_dumps {
                let path = wdir.join(pre_dump_dir(i));
                match fs::symlink_metadata(&path) {
                    Ok(meta) if meta.is_dir() => {}
                    Ok(_) => return Err(Error::NotADirectory { path }),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        return Err(Error::WorkloadDirMissing { path })
                    }
                    Err(e) => return Err(e).at("reading metadata of", path),
                }
            }
            for image in &workload.images {
                let path = wdir.join(image.name.as_str());
                let meta = match fs::symlink_metadata(&path) {
                    Ok(meta) => meta,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        return Err(Error::ImageMissing { path })
                    }
                    Err(e) => return Err(e).at("reading metadata of", path),
                };
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
            }
            for link in &workload.links {
                check_link_on_disk(&wdir.join(link.name.as_str()), &link.target)?;
            }
            let listed = |rel: &str| {
                workload.images.iter().any(|i| i.name.as_str() == rel)
                    || workload.links.iter().any(|l| l.name.as_str() == rel)
            };
            for name in sorted_entries(&wdir)? {
                let known = name.to_str().is_some_and(|n| {
                    listed(n) || pre_dump_index(n).is_some_and(|i| pre_dumps.contains(&i))
                });
                if !known {
                    return Err(Error::UnexpectedEntry {
                        path: wdir.join(name),
                        reason: "not an image, link or pre-dump directory listed in the \
                                 manifest"
                            .into(),
                    });
                }
            }
            for &i in &pre_dumps {
                let dir = pre_dump_dir(i);
                let pdir = wdir.join(&dir);
                for name in sorted_entries(&pdir)? {
                    if !name.to_str().is_some_and(|n| listed(&format!("{dir}/{n}"))) {
                        return Err(Error::UnexpectedEntry {
                            path: pdir.join(name),
                            reason: "not an image or link listed in the manifest".into(),
                        });
                    }
                }
            }
        }

        for workload in &manifest.workloads {
            let wdir = dir.join(workload.name.as_str());
            for image in &workload.images {
                let path = wdir.join(image.name.as_str());
                let (checksum, size) = Checksum::of_reader(open_image(&wdir, &image.name)?, &path)?;
                // The size was right a moment ago; the file may have changed since.
                if size != image.size {
                    return Err(Error::ImageSizeMismatch {
                        path,
                        expected: image.size,
                        actual: size,
                    });
                }
                if checksum != image.checksum {
                    return Err(Error::ImageChecksumMismatch {
                        path,
                        expected: image.checksum.to_string(),
                        actual: checksum.to_string(),
                    });
                }
            }
        }
        Ok(manifest)
    }

    /// Changes the manifest of a committed generation with `change` and writes it back
    /// atomically. Only states may change: the rest describes images already on disk.
    pub fn update(
        &self,
        id: &GenerationId,
        change: impl FnOnce(&mut Manifest),
    ) -> Result<Manifest> {
        let old = self.load(id)?;
        let mut new = old.clone();
        change(&mut new);
        let path = self.generation_path(id).join(MANIFEST_FILE);
        if let Some(field) = first_change_besides_states(&old, &new) {
            return Err(Error::ManifestImmutable { path, field });
        }
        new.save(&path).map_err(|e| self.explain(e))?;
        Ok(new)
    }

    /// Removes generation `id`. It is first renamed to `.del-<id>`, so that a crash
    /// midway leaves nothing that looks like a generation.
    pub fn remove(&self, id: &GenerationId) -> Result<()> {
        self.remove_inner(id).map_err(|e| self.explain(e))
    }

    fn remove_inner(&self, id: &GenerationId) -> Result<()> {
        let dir = self.existing_generation_dir(id)?;
        let doomed = self.generations.join(format!("{REMOVING_PREFIX}{id}"));
        if exists_no_follow(&doomed)? {
            remove_any(&doomed)?;
        }
        fs::rename(&dir, &doomed).at("renaming for removal", &dir)?;
        sync_dir(&self.generations)?;
        remove_any(&doomed)?;
        sync_dir(&self.generations)
    }

    /// Removes committed generations older than the newest `keep_last`, except those in
    /// `in_use` (which do not count towards `keep_last`). Age is the manifest's creation
    /// time. A generation whose manifest cannot be read is kept and a warning logged:
    /// it may be a newer format that a newer upgraded can still restore. Returns the
    /// removed ids, oldest first.
    pub fn retain(&self, keep_last: usize, in_use: &[GenerationId]) -> Result<Vec<GenerationId>> {
        let mut dated = Vec::new();
        for id in self.list()? {
            match self.load(&id) {
                Ok(manifest) => dated.push((manifest.created_unix, id)),
                Err(err) => tracing::warn!(
                    generation = %id,
                    error = %err,
                    "keeping a generation whose manifest cannot be read"
                ),
            }
        }
        dated.sort();
        let older = dated.len().saturating_sub(keep_last);
        let mut removed = Vec::new();
        for (_, id) in dated.into_iter().take(older) {
            if in_use.contains(&id) {
                continue;
            }
            self.remove(&id)?;
            removed.push(id);
        }
        Ok(removed)
    }

    /// Removes what interrupted work left behind: pending generations (`.tmp-*`),
    /// half-removed ones (`.del-*`) and temporary manifests of interrupted updates.
    /// Returns the removed paths.
    pub fn cleanup_incomplete(&self) -> Result<Vec<PathBuf>> {
        self.cleanup_inner().map_err(|e| self.explain(e))
    }

    fn cleanup_inner(&self) -> Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        for name in sorted_entries(&self.generations)? {
            let path = self.generations.join(&name);
            let name = name.to_string_lossy();
            if name.starts_with(PENDING_PREFIX) || name.starts_with(REMOVING_PREFIX) {
                let is_real_dir = fs::symlink_metadata(&path)
                    .at("reading metadata of", &path)?
                    .is_dir();
                if name.starts_with(PENDING_PREFIX) && is_real_dir && lock_dir(&path)?.is_none() {
                    // Another process is writing it (or still needs its images).
                    tracing::info!(path = %path.display(), "a pending generation in use is left alone");
                    continue;
                }
                remove_any(&path)?;
                removed.push(path);
                continue;
            }
            let is_dir = fs::symlink_metadata(&path)
                .at("reading metadata of", &path)?
                .is_dir();
            if is_dir && !name.starts_with('.') {
                let tmp = temp_path_for(&path.join(MANIFEST_FILE));
                if exists_no_follow(&tmp)? {
                    remove_any(&tmp)?;
                    sync_dir(&path)?;
                    removed.push(tmp);
                }
            }
        }
        if !removed.is_empty() {
            sync_dir(&self.generations)?;
        }
        Ok(removed)
    }
}

impl PendingGeneration {
    /// Keeps the directory locked for as long as the returned hold lives, beyond this
    /// value (see [`PendingHold`]).
    pub fn hold(&self) -> PendingHold {
        self.lock.clone()
    }

    pub fn id(&self) -> &GenerationId {
        &self.id
    }

    /// The pending generation's directory, `generations/.tmp-<id>/`.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The image directory of workload `name` (0700), created if needed.
    pub fn workload_dir(&self, name: &WorkloadName) -> Result<PathBuf> {
        let path = self.dir.join(name.as_str());
        if !create_private_dir(&path).map_err(|e| explain_write(&self.root, e, false))? {
            let meta = fs::symlink_metadata(&path).at("reading metadata of", &path)?;
            if !meta.is_dir() {
                return Err(Error::NotADirectory { path });
            }
        }
        Ok(path)
    }

    /// Commits the generation described by `manifest`:
    ///
    /// 1. every file of every workload directory (and of its pre-dump directories) is
    ///    made 0600, hashed and fsynced, and the `parent` links are read and checked
    ///    against the layout rules; a workload whose `images` and `links` are empty
    ///    gets them filled in from its directory, otherwise the lists must match the
    ///    directory exactly (names, sizes, checksums, link targets);
    /// 2. the states become committed (the generation's, and each pending workload's);
    /// 3. the manifest is written atomically and every directory is fsynced;
    /// 4. `.tmp-<id>` is renamed to `<id>` and `generations/` fsynced.
    ///
    /// On error nothing is committed and the pending directory stays (see the type's
    /// documentation). A full file system or quota is reported as [`Error::AreaFull`]
    /// (with the area's path and the bytes left), a read-only one as
    /// [`Error::AreaReadOnly`]. Returns the manifest as written.
    pub fn commit(self, manifest: Manifest) -> Result<Manifest> {
        self.commit_inner(manifest)
            .map_err(|e| explain_write(&self.root, e, false))
    }

    fn commit_inner(&self, mut manifest: Manifest) -> Result<Manifest> {
        let manifest_path = self.dir.join(MANIFEST_FILE);
        if manifest.generation != self.id {
            return Err(Error::ManifestInvalid {
                path: manifest_path,
                problem: ValidationError {
                    field: "generation".into(),
                    value: shown(manifest.generation.as_str()),
                    reason: format!("is not the pending generation's id {}", self.id),
                },
            });
        }
        // Validate before hashing gigabytes: duplicate workloads would hash twice.
        manifest
            .validate()
            .map_err(|problem| Error::ManifestInvalid {
                path: manifest_path.clone(),
                problem,
            })?;

        let temp_manifest = temp_path_for(&manifest_path);
        for name in sorted_entries(&self.dir)? {
            let path = self.dir.join(&name);
            let known = manifest.workloads.iter().any(|w| name == w.name.as_str());
            if !known && path != temp_manifest && path != manifest_path {
                return Err(Error::UnexpectedEntry {
                    path,
                    reason: "not the directory of a workload in the manifest".into(),
                });
            }
        }

        for workload in &mut manifest.workloads {
            let wdir = self.dir.join(workload.name.as_str());
            let found = seal_workload_dir(&wdir)?;
            let unlisted = workload.images.is_empty() && workload.links.is_empty();
            match found {
                None if unlisted => {}
                None => return Err(Error::WorkloadDirMissing { path: wdir }),
                Some(found) => {
                    check_layout(&wdir, &found)?;
                    if unlisted {
                        (workload.images, workload.links) = (found.images, found.links);
                    } else {
                        check_listed_images(&wdir, &workload.images, &found.images)?;
                        check_listed_links(&wdir, &workload.links, &found.links)?;
                    }
                }
            }
        }

        manifest.state = GenerationState::Committed;
        for workload in &mut manifest.workloads {
            if workload.state == WorkloadState::Pending {
                workload.state = WorkloadState::Committed;
            }
        }
        // Writes the manifest atomically and syncs the pending directory.
        manifest.save(&manifest_path)?;

        // rename(2) would replace an empty directory at the target: check first.
        if exists_no_follow(&self.final_dir)? {
            return Err(Error::GenerationExists {
                path: self.final_dir.clone(),
            });
        }
        fs::rename(&self.dir, &self.final_dir).at("committing (renaming)", &self.dir)?;
        sync_dir(&self.generations)?;
        Ok(manifest)
    }

    /// Removes the pending generation and its images.
    pub fn abandon(self) -> Result<()> {
        remove_any(&self.dir)?;
        sync_dir(&self.generations)
    }
}

/// What a workload directory holds.
struct Found {
    images: Vec<ImageFile>,
    links: Vec<ImageLink>,
}

/// Makes a workload directory durable and private and lists its images and links:
/// each file is set to 0600, hashed (streamed) and fsynced in one pass, each `parent`
/// link read, then each directory set to 0700 and fsynced, pre-dump directories
/// before the workload's. `None` if the directory does not exist.
fn seal_workload_dir(dir: &Path) -> Result<Option<Found>> {
    match fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(Error::NotADirectory { path: dir.into() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).at("reading metadata of", dir),
    }
    let mut found = Found {
        images: Vec::new(),
        links: Vec::new(),
    };
    seal_dir(dir, None, &mut found)?;
    Ok(Some(found))
}

/// Seals the workload directory `wdir` (`pre` is `None`) or its pre-dump directory
/// `pre-<pre>`, adding what it holds to `found`.
fn seal_dir(wdir: &Path, pre: Option<u32>, found: &mut Found) -> Result<()> {
    let (dir, prefix) = match pre {
        None => (wdir.to_path_buf(), String::new()),
        Some(i) => (wdir.join(pre_dump_dir(i)), format!("{}/", pre_dump_dir(i))),
    };
    let unexpected = |path: &Path, problem: ValidationError| Error::UnexpectedEntry {
        path: path.to_path_buf(),
        reason: problem.to_string(),
    };
    for name in sorted_entries(&dir)? {
        let path = dir.join(&name);
        let name = name.into_string().map_err(|raw| {
            let problem =
                ValidationError::new("image file name", &raw.to_string_lossy(), "is not UTF-8");
            unexpected(&path, problem)
        })?;
        let meta = fs::symlink_metadata(&path).at("reading metadata of", &path)?;
        let rel = format!("{prefix}{name}");
        if meta.file_type().is_symlink() && name == PARENT_LINK {
            let target = fs::read_link(&path).at("reading the link", &path)?;
            let target = target.into_os_string().into_string().map_err(|raw| {
                let problem =
                    ValidationError::new("link target", &raw.to_string_lossy(), "is not UTF-8");
                unexpected(&path, problem)
            })?;
            found.links.push(ImageLink {
                name: LinkName::new(rel).map_err(|p| unexpected(&path, p))?,
                target: LinkTarget::new(target).map_err(|p| unexpected(&path, p))?,
            });
            continue;
        }
        if let (true, None, Some(i)) = (meta.is_dir(), pre, pre_dump_index(&name)) {
            seal_dir(wdir, Some(i), found)?;
            continue;
        }
        if !meta.is_file() {
            return Err(Error::NotARegularFile { path });
        }
        let name = ImageName::new(rel).map_err(|p| unexpected(&path, p))?;
        let file = open_image(wdir, &name)?;
        file.set_permissions(fs::Permissions::from_mode(FILE_MODE))
            .at("setting the mode of", &path)?;
        let (checksum, size) = Checksum::of_reader(&file, &path)?;
        file.sync_all().at("syncing", &path)?;
        found.images.push(ImageFile {
            name,
            size,
            checksum,
        });
    }
    set_mode(&dir, DIR_MODE)?;
    sync_dir(&dir)
}

/// Refuses a directory whose layout breaks the rules of the manifest format, naming
/// the entry: caught here, a bad link is reported as the path it is at.
fn check_layout(wdir: &Path, found: &Found) -> Result<()> {
    let Some((entry, reason)) = layout_problem(&found.images, &found.links) else {
        return Ok(());
    };
    let name = match entry {
        LayoutEntry::Image(i) => found.images[i].name.as_str(),
        LayoutEntry::LinkName(i) | LayoutEntry::LinkTarget(i) => found.links[i].name.as_str(),
    };
    let reason = match entry {
        LayoutEntry::LinkTarget(i) => format!("a link to {}: {reason}", found.links[i].target),
        _ => reason,
    };
    Err(Error::UnexpectedEntry {
        path: wdir.join(name),
        reason,
    })
}

/// Checks the links a caller listed against those found in the directory.
fn check_listed_links(dir: &Path, listed: &[ImageLink], found: &[ImageLink]) -> Result<()> {
    for link in listed {
        let actual = found.iter().find(|f| f.name == link.name);
        if actual.map(|a| &a.target) != Some(&link.target) {
            return Err(Error::LinkMismatch {
                path: dir.join(link.name.as_str()),
                expected: link.target.to_string(),
                found: match actual {
                    Some(a) => format!("a link to {}", shown(a.target.as_str())),
                    None => "missing".into(),
                },
            });
        }
    }
    if let Some(extra) = found
        .iter()
        .find(|f| !listed.iter().any(|l| l.name == f.name))
    {
        return Err(Error::UnexpectedEntry {
            path: dir.join(extra.name.as_str()),
            reason: "not a link listed in the manifest".into(),
        });
    }
    Ok(())
}

/// Checks that `path` is a symbolic link to `expected`, exactly (never following it).
fn check_link_on_disk(path: &Path, expected: &LinkTarget) -> Result<()> {
    let found = match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            let target = fs::read_link(path).at("reading the link", path)?;
            if target.as_os_str() == expected.as_str() {
                return Ok(());
            }
            format!("a link to {}", shown(&target.to_string_lossy()))
        }
        Ok(meta) if meta.is_dir() => "a directory".into(),
        Ok(_) => "not a symbolic link".into(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => "missing".into(),
        Err(e) => return Err(e).at("reading metadata of", path),
    };
    Err(Error::LinkMismatch {
        path: path.to_path_buf(),
        expected: expected.to_string(),
        found,
    })
}

/// Checks the images a caller listed against those found in the directory.
fn check_listed_images(dir: &Path, listed: &[ImageFile], found: &[ImageFile]) -> Result<()> {
    for image in listed {
        let path = dir.join(image.name.as_str());
        let Some(actual) = found.iter().find(|f| f.name == image.name) else {
            return Err(Error::ImageMissing { path });
        };
        if actual.size != image.size {
            return Err(Error::ImageSizeMismatch {
                path,
                expected: image.size,
                actual: actual.size,
            });
        }
        if actual.checksum != image.checksum {
            return Err(Error::ImageChecksumMismatch {
                path,
                expected: image.checksum.to_string(),
                actual: actual.checksum.to_string(),
            });
        }
    }
    if let Some(extra) = found
        .iter()
        .find(|f| !listed.iter().any(|l| l.name == f.name))
    {
        return Err(Error::UnexpectedEntry {
            path: dir.join(extra.name.as_str()),
            reason: "not an image listed in the manifest".into(),
        });
    }
    Ok(())
}

/// The first field that differs between `old` and `new` other than the states.
fn first_change_besides_states(old: &Manifest, new: &Manifest) -> Option<String> {
    if old.generation != new.generation {
        return Some("generation".into());
    }
    if old.created_unix != new.created_unix {
        return Some("created".into());
    }
    if old.source != new.source {
        return Some("source".into());
    }
    if old.kernel_features != new.kernel_features {
        return Some("kernel_features".into());
    }
    if old.workloads.len() != new.workloads.len() {
        return Some("workloads".into());
    }
    for (i, (o, n)) in old.workloads.iter().zip(&new.workloads).enumerate() {
        let same = Workload {
            state: o.state,
            ..n.clone()
        };
        if *o != same {
            return Some(format!("workloads[{i}] ({})", o.name));
        }
    }
    None
}

/// What a hostile file system means for the area at `root`, for an error of writing
/// into it (see [`Area::explain`]); `access` also turns a refused write (EACCES,
/// EPERM) into [`Error::AreaNotWritable`], for the writes whose refusal can mean
/// nothing else.
fn explain_write(root: &Path, err: Error, access: bool) -> Error {
    use nix::libc::{EACCES, EDQUOT, EPERM, EROFS};
    if let Some(errno) = err.space_errno() {
        let full = |source: Error| Error::AreaFull {
            path: root.to_path_buf(),
            free: free_bytes(root),
            quota: errno == EDQUOT,
            source: Box::new(source),
        };
        return match err {
            Error::AreaFull { .. } => err,
            // The failed dump stays the headline (it says every workload runs); why
            // it failed comes next.
            Error::DumpFailed { workload, source }
                if !matches!(*source, Error::AreaFull { .. }) =>
            {
                Error::DumpFailed {
                    workload,
                    source: Box::new(full(*source)),
                }
            }
            Error::DumpFailed { .. } => err,
            err => full(err),
        };
    }
    match err.os_errno() {
        Some(EROFS) => Error::AreaReadOnly {
            path: root.to_path_buf(),
            mount_point: mount_point_of(root),
            source: Some(Box::new(err)),
        },
        Some(EACCES | EPERM) if access => Error::AreaNotWritable {
            path: root.to_path_buf(),
            euid: nix::unistd::geteuid().as_raw(),
            source: Box::new(err),
        },
        _ => err,
    }
}

/// Creates `path` (0600, a stale one removed first), writes a byte to it and syncs it.
fn write_probe(path: &Path) -> Result<()> {
    use std::io::Write;
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(e).at("removing stale probe", path)
        }
        _ => {}
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .at("creating", path)?;
    file.write_all(b"\n").at("writing", path)?;
    file.sync_all().at("syncing", path)
}

/// What the images in an area are for, as far as its file system matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AreaUse {
    /// `upgradectl checkpoint`: the images are restored on this boot, or kept for as
    /// long as the user sees fit.
    Checkpoint,
    /// `upgradectl suspend`: the workload is stopped until it is resumed, perhaps
    /// after a power-off.
    Suspend,
    /// An upgrade: the images must outlive the kexec, and a cold boot after a new
    /// kernel that never came up.
    Upgrade,
}

/// [`fs_verdict`]'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsVerdict {
    Fine,
    /// Allowed; the text says what the admin should know.
    Warn(String),
    /// Refused; the text says why.
    Refuse(String),
}

/// The rule for the file system an area is on, in one place (docs/area.md): tmpfs
/// and ramfs live in memory, which a kexec or a reboot empties, so an upgrade is
/// refused there and a suspend warned about; plain checkpoints are the user's choice.
/// overlayfs keeps what is written in its upper directory, which may itself be in
/// memory (a live system), and a network or FUSE file system must be mounted again on
/// the new kernel before the restore (which runs after local-fs.target, before the
/// network is up): an upgrade is warned about, not refused. Anything else is assumed
/// to be a disk.
pub fn fs_verdict(fs: FsType, purpose: AreaUse) -> FsVerdict {
    match fs {
        FsType::TMPFS | FsType::RAMFS => match purpose {
            AreaUse::Upgrade => FsVerdict::Refuse(format!(
                "the area is on {fs}, which lives in memory: the kexec empties it, and the \
                 images with it"
            )),
            AreaUse::Suspend => FsVerdict::Warn(format!(
                "the area is on {fs}, which lives in memory: a reboot or power-off loses the \
                 suspended workload"
            )),
            AreaUse::Checkpoint => FsVerdict::Fine,
        },
        FsType::OVERLAYFS => match purpose {
            AreaUse::Checkpoint => FsVerdict::Fine,
            AreaUse::Upgrade | AreaUse::Suspend => FsVerdict::Warn(
                "the area is on overlayfs, which keeps what is written in its upper \
                 directory: if that is in memory (tmpfs, as on a live system) the images do \
                 not survive a reboot or kexec"
                    .into(),
            ),
        },
        FsType::NFS | FsType::CIFS | FsType::SMB2 | FsType::FUSE => match purpose {
            AreaUse::Upgrade => FsVerdict::Warn(format!(
                "the area is on {fs}: the new kernel must mount it again, over the network \
                 or through its FUSE daemon, before upgraded-restore.service runs (after \
                 local-fs.target, before the network is up); a local file system is safer"
            )),
            AreaUse::Checkpoint | AreaUse::Suspend => FsVerdict::Fine,
        },
        _ => FsVerdict::Fine,
    }
}

/// Requires a directory owned by `euid` that only its owner may write.
fn check_owned_dir(path: &Path, meta: &fs::Metadata, euid: u32) -> Result<()> {
    if !meta.is_dir() {
        return Err(Error::NotADirectory { path: path.into() });
    }
    if meta.uid() != euid {
        return Err(Error::AreaWrongOwner {
            path: path.into(),
            owner: meta.uid(),
            euid,
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(Error::AreaInsecureMode {
            path: path.into(),
            mode,
        });
    }
    Ok(())
}

fn exists_no_follow(path: &Path) -> Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).at("reading metadata of", path),
    }
}

/// Opens an image for reading, refusing a symbolic link even if one was swapped in
/// after the metadata check.
fn open_no_follow(path: &Path) -> Result<fs::File> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .at("opening", path)
}

/// Opens image `name` of workload directory `wdir` for reading without following a
/// symbolic link below `wdir`: a pre-dump directory is opened with O_NOFOLLOW too, and
/// the file relative to it, so a directory swapped for a link after the checks is
/// refused as well.
fn open_image(wdir: &Path, name: &ImageName) -> Result<fs::File> {
    let path = wdir.join(name.as_str());
    let Some((dir, file)) = name.as_str().split_once('/') else {
        return open_no_follow(&path);
    };
    let dir_path = wdir.join(dir);
    let dir_fd = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_DIRECTORY)
        .open(&dir_path)
        .at("opening directory", &dir_path)?;
    use nix::fcntl::OFlag;
    let fd = nix::fcntl::openat(
        &dir_fd,
        file,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(io::Error::from)
    .at("opening", &path)?;
    Ok(fs::File::from(fd))
}

/// The names in `dir`, sorted so that checks and errors come in a stable order.
fn sorted_entries(dir: &Path) -> Result<Vec<OsString>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).at("listing", dir)? {
        names.push(entry.at("listing", dir)?.file_name());
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::process::Command;

    use super::*;
    use crate::manifest::{SourceSystem, WorkloadKind};

    fn id(s: &str) -> GenerationId {
        GenerationId::new(s).unwrap()
    }

    fn wname(s: &str) -> WorkloadName {
        WorkloadName::new(s).unwrap()
    }

    fn manifest(gen: &str) -> Manifest {
        let source = SourceSystem {
            kernel_release: "6.1.0-40-amd64".into(),
            proc_version: "Linux version 6.1.0-40-amd64".into(),
            kernel_config_checksum: None,
            criu_version: "3.17.1".into(),
            glibc_version: "2.36".into(),
            cpu: Default::default(),
        };
        let mut m = Manifest::new(id(gen), 1, source);
        m.workloads
            .push(Workload::new(wname("w"), WorkloadKind::Process, 100));
        m
    }

    /// Writes the one small image of workload `w` that [`manifest`] lists.
    fn write_small_image(pending: &PendingGeneration) {
        let dir = pending.workload_dir(&wname("w")).unwrap();
        fs::write(dir.join("core-100.img"), b"core").unwrap();
    }

    /// Commits generation `gen` with one small image.
    fn commit_small(area: &Area, gen: &str) {
        let pending = area.begin(&id(gen)).unwrap();
        write_small_image(&pending);
        pending.commit(manifest(gen)).unwrap();
    }

    /// The names in `generations/` that start with a dot: pending, half-removed and
    /// probe files.
    fn dot_entries(area: &Area) -> Vec<String> {
        sorted_entries(&area.generations)
            .unwrap()
            .into_iter()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect()
    }

    fn io_error(action: &'static str, path: &str, errno: i32) -> Error {
        Error::Io {
            action,
            path: path.into(),
            source: io::Error::from_raw_os_error(errno),
        }
    }

    /// `{:#}` of an error: itself and its sources.
    fn chain(err: &Error) -> String {
        let mut text = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(e) = source {
            text.push_str(": ");
            text.push_str(&e.to_string());
            source = e.source();
        }
        text
    }

    // --- the file system rule --------------------------------------------------------

    #[test]
    fn memory_file_systems_refuse_upgrades_and_warn_suspends() {
        use AreaUse::*;
        for fs in [FsType::TMPFS, FsType::RAMFS] {
            let FsVerdict::Refuse(why) = fs_verdict(fs, Upgrade) else {
                panic!("{fs}: an upgrade must be refused");
            };
            assert!(
                why.contains(&fs.to_string()) && why.contains("kexec"),
                "{why}"
            );
            assert!(
                matches!(fs_verdict(fs, Suspend), FsVerdict::Warn(w) if w.contains("power-off")),
                "{fs}"
            );
            assert_eq!(fs_verdict(fs, Checkpoint), FsVerdict::Fine, "{fs}");
        }
        for fs in [
            FsType::OVERLAYFS,
            FsType::NFS,
            FsType::CIFS,
            FsType::SMB2,
            FsType::FUSE,
        ] {
            assert!(
                matches!(fs_verdict(fs, Upgrade), FsVerdict::Warn(_)),
                "{fs}: an upgrade is warned about"
            );
            assert_eq!(fs_verdict(fs, Checkpoint), FsVerdict::Fine, "{fs}");
        }
        assert!(matches!(
            fs_verdict(FsType::OVERLAYFS, Suspend),
            FsVerdict::Warn(_)
        ));
        for fs in [FsType::EXT4, FsType::XFS, FsType::BTRFS, FsType(0x1234)] {
            for purpose in [Checkpoint, Suspend, Upgrade] {
                assert_eq!(fs_verdict(fs, purpose), FsVerdict::Fine, "{fs} {purpose:?}");
            }
        }
    }

    // --- errors that say what the area's file system did -------------------------------

    #[test]
    fn hostile_write_errors_name_the_area_and_what_to_do() {
        let root = Path::new("/srv/area");
        let ro = explain_write(
            root,
            io_error("creating", "/srv/area/generations/x", nix::libc::EROFS),
            true,
        );
        assert!(matches!(ro, Error::AreaReadOnly { .. }), "{ro:?}");
        let text = chain(&ro);
        assert!(
            text.starts_with("persistent area /srv/area is on a read-only mount"),
            "{text}"
        );
        assert!(
            text.contains("mount -o remount,rw") && text.contains("area.path"),
            "{text}"
        );
        assert!(
            text.contains("creating /srv/area/generations/x: Read-only file system"),
            "{text}"
        );

        let denied = io_error("creating", "/srv/area/generations/x", nix::libc::EACCES);
        let text = chain(&explain_write(root, denied, true));
        assert!(
            text.contains("owns persistent area /srv/area but may not write"),
            "{text}"
        );
        let denied = io_error(
            "opening",
            "/srv/area/generations/g/w/core.img",
            nix::libc::EACCES,
        );
        assert!(
            matches!(explain_write(root, denied, false), Error::Io { .. }),
            "a refused read is not about writing"
        );

        let full = explain_write(
            root,
            io_error("writing", "/srv/area/m", nix::libc::ENOSPC),
            false,
        );
        let Error::AreaFull {
            ref path,
            quota: false,
            ..
        } = full
        else {
            panic!("{full:?}");
        };
        assert_eq!(path, root);
        let text = chain(&full);
        assert!(
            text.starts_with("the persistent area /srv/area is full (")
                && text.contains("): free space there or move the area (area.path)"),
            "{text}"
        );
        assert!(
            text.ends_with("writing /srv/area/m: No space left on device (os error 28)"),
            "{text}"
        );

        let quota = explain_write(
            root,
            io_error("writing", "/srv/area/m", nix::libc::EDQUOT),
            false,
        );
        let text = quota.to_string();
        assert!(
            text.starts_with("the disk quota is used up: the persistent area /srv/area"),
            "{text}"
        );
        assert!(text.contains("raise the quota"), "{text}");

        let other = explain_write(
            root,
            io_error("writing", "/srv/area/m", nix::libc::EIO),
            true,
        );
        assert!(matches!(other, Error::Io { .. }), "{other:?}");
    }

    #[test]
    fn a_dump_that_filled_the_area_says_so() {
        let criu = Error::CriuFailed {
            what: "dump",
            errno: 0,
            message: String::new(),
            log: Some("/run/upgraded/criu/g/w/dump.log".into()),
            log_tail: "(00.1) Error (criu/page-xfer.c:412): Unable to write pages: No space left \
                       on device\n(00.1) Dumping FAILED."
                .into(),
        };
        assert!(criu.is_out_of_space());
        let failed = Error::DumpFailed {
            workload: "w".into(),
            source: Box::new(criu),
        };
        // Without the area at hand: the headline says what happened.
        let text = failed.to_string();
        assert!(
            text.starts_with(
                "checkpoint of workload w failed: the persistent area ran out of space"
            ) && text.ends_with("every workload was left running and no generation was written"),
            "{text}"
        );
        // With it: the path and the bytes left come next in the chain, once.
        let area_root = tempfile::tempdir().unwrap();
        let area = Area::open(area_root.path()).unwrap();
        let explained = area.explain(failed);
        let Error::DumpFailed { source, .. } = &explained else {
            panic!("{explained:?}");
        };
        assert!(matches!(**source, Error::AreaFull { .. }), "{source:?}");
        let text = chain(&explained);
        assert!(
            text.starts_with("checkpoint of workload w failed; every workload was left running"),
            "{text}"
        );
        let full = format!(
            "the persistent area {} is full (",
            area_root.path().display()
        );
        assert_eq!(text.matches(&full).count(), 1, "{text}");
        assert_eq!(text.matches("ran out of space").count(), 0, "{text}");
        assert!(text.contains("bytes free): free space there"), "{text}");
        // Explaining twice changes nothing.
        assert_eq!(chain(&area.explain(explained)), text);

        let podman = Error::CommandFailed {
            command: "podman container checkpoint db".into(),
            status: "exit status: 125".into(),
            stderr_tail: "Error: write /srv/area/x/pages-1.img: disk quota exceeded".into(),
        };
        assert!(podman.is_out_of_space());
        let other = Error::CriuFailed {
            what: "dump",
            errno: 0,
            message: "Can't dump half of a pty pair".into(),
            log: None,
            log_tail: String::new(),
        };
        assert!(!other.is_out_of_space());
        let text = Error::DumpFailed {
            workload: "w".into(),
            source: Box::new(other),
        }
        .to_string();
        assert!(!text.contains("space"), "{text}");
    }

    #[test]
    fn a_writable_area_leaves_no_probe_behind() {
        let dir = tempfile::tempdir().unwrap();
        let area = Area::open(dir.path()).unwrap();
        // A probe a crash left behind is replaced, then removed.
        let stale = area.generations.join(format!(
            "{PENDING_PREFIX}write-probe.{}",
            std::process::id()
        ));
        fs::write(&stale, b"old").unwrap();
        area.check_writable().unwrap();
        assert!(dot_entries(&area).is_empty(), "{:?}", dot_entries(&area));
        commit_small(&area, "g");
        assert!(dot_entries(&area).is_empty());
        assert_ne!(area.fs_type().unwrap(), FsType(0));
    }

    // --- real hostile file systems (root only) ---------------------------------------

    /// A mount made for a test; dropping it unmounts it (lazily, so that a test that
    /// failed with a file open there still cleans up).
    struct Mount(PathBuf);

    impl Drop for Mount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }

    /// Runs `mount args... dir`; `None` (with a note) where mounting is not possible:
    /// not root, or a container that does not allow it.
    fn mount(args: &[&str], dir: &Path) -> Option<Mount> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: mounting a test file system needs root");
            return None;
        }
        let out = Command::new("mount").args(args).arg(dir).output();
        match out {
            Ok(out) if out.status.success() => Some(Mount(dir.to_path_buf())),
            Ok(out) => {
                eprintln!(
                    "skipped: mount {args:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipped: mount could not run: {e}");
                None
            }
        }
    }

    /// A 1 MiB tmpfs on a new temporary directory, mode 0700.
    fn small_tmpfs() -> Option<(tempfile::TempDir, Mount)> {
        let dir = tempfile::tempdir().unwrap();
        let m = mount(
            &["-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs"],
            dir.path(),
        )?;
        Some((dir, m))
    }

    /// Removes what [`fill`] wrote and waits until the space is back: a process
    /// another test spawns at that moment may hold a copy of the file's descriptor
    /// until it execs (CLOEXEC), and tmpfs frees the blocks only then.
    fn unfill(path: &Path, area: &Path) {
        fs::remove_file(path).unwrap();
        for _ in 0..500 {
            if crate::fsutil::free_bytes(area).is_some_and(|b| b >= 256 << 10) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!(
            "{} was removed, but its space did not come back",
            path.display()
        );
    }

    /// Writes `path` until the file system is full; returns the error.
    fn fill(path: &Path) -> io::Error {
        let mut f = fs::File::create(path).unwrap();
        let block = vec![0x5a_u8; 64 << 10];
        loop {
            if let Err(e) = f.write_all(&block).and_then(|()| f.sync_all()) {
                return e;
            }
        }
    }

    #[test]
    fn a_read_only_area_is_refused_before_a_generation_starts() {
        let Some((dir, _tmpfs)) = small_tmpfs() else {
            return;
        };
        let area = Area::open(dir.path()).unwrap();
        commit_small(&area, "before");
        // A read-only bind mount over it, as `mount -o remount,ro` of the area would be.
        let Some(_bind) = mount(&["--bind", &dir.path().to_string_lossy()], dir.path()) else {
            return;
        };
        let Some(_ro) = mount(&["-o", "remount,bind,ro"], dir.path()) else {
            return;
        };

        // Reading still works: the generations can be listed and verified.
        let area = Area::open(dir.path()).unwrap();
        assert_eq!(area.list().unwrap(), [id("before")]);
        area.verify(&id("before")).unwrap();

        let err = area.check_writable().unwrap_err();
        let Error::AreaReadOnly {
            path, mount_point, ..
        } = &err
        else {
            panic!("{err:?}");
        };
        assert_eq!(path, dir.path());
        assert_eq!(
            mount_point.as_deref(),
            Some(fs::canonicalize(dir.path()).unwrap().as_path())
        );
        let text = err.to_string();
        assert!(
            text.contains(&format!(
                "persistent area {} is on a read-only mount",
                dir.path().display()
            )),
            "{text}"
        );
        assert!(
            text.contains("mount -o remount,rw") && text.contains("area.path"),
            "{text}"
        );
        let err = area.begin(&id("after")).unwrap_err();
        assert!(matches!(err, Error::AreaReadOnly { .. }), "{err:?}");
        assert!(dot_entries(&area).is_empty());
        assert_eq!(area.list().unwrap(), [id("before")]);

        // An area opened for the first time on it cannot even make generations/.
        let sub = dir.path().join("generations").join("before");
        let err = Area::open(&sub).unwrap_err();
        assert!(
            matches!(
                err,
                Error::AreaReadOnly {
                    source: Some(_),
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            chain(&err).contains("Read-only file system"),
            "{}",
            chain(&err)
        );
    }

    #[test]
    fn a_full_area_is_reported_with_its_free_space_and_left_clean() {
        let Some((dir, _tmpfs)) = small_tmpfs() else {
            return;
        };
        let area = Area::open(dir.path()).unwrap();
        assert_eq!(area.fs_type().unwrap(), FsType::TMPFS);
        assert!(matches!(
            fs_verdict(area.fs_type().unwrap(), AreaUse::Upgrade),
            FsVerdict::Refuse(_)
        ));
        commit_small(&area, "before");
        let full_text = format!("the persistent area {} is full (", dir.path().display());

        // Images bigger than the area, as CRIU would write them: the write fails, the
        // caller explains it and abandons the generation.
        let pending = area.begin(&id("big")).unwrap();
        let image = pending
            .workload_dir(&wname("w"))
            .unwrap()
            .join("pages-1.img");
        let err = area.explain(Error::Io {
            action: "writing",
            path: image.clone(),
            source: fill(&image),
        });
        let Error::AreaFull {
            ref path,
            free: Some(free),
            quota: false,
            ..
        } = err
        else {
            panic!("{err:?}");
        };
        assert_eq!(path, dir.path());
        assert!(free < 64 << 10, "{free} bytes free in a full 1 MiB tmpfs");
        let text = err.to_string();
        assert!(
            text.starts_with(&full_text) && text.contains(&format!("({free} bytes free)")),
            "{text}"
        );
        pending.abandon().unwrap();
        assert!(dot_entries(&area).is_empty(), "{:?}", dot_entries(&area));

        // An area that is full already refuses the next generation before it starts.
        let filler = dir.path().join("filler");
        assert_eq!(fill(&filler).raw_os_error(), Some(nix::libc::ENOSPC));
        let err = area.begin(&id("next")).unwrap_err();
        assert!(matches!(err, Error::AreaFull { .. }), "{err:?}");
        assert!(err.to_string().starts_with(&full_text), "{err}");
        assert!(dot_entries(&area).is_empty(), "{:?}", dot_entries(&area));
        unfill(&filler, dir.path());

        // The images fit, the manifest does not: the commit says the area is full and
        // the pending directory stays (its images may be a stopped workload's only
        // copy) until the caller or cleanup_incomplete removes it.
        let pending = area.begin(&id("late")).unwrap();
        write_small_image(&pending);
        fill(&filler);
        let err = pending.commit(manifest("late")).unwrap_err();
        assert!(matches!(err, Error::AreaFull { .. }), "{err:?}");
        assert!(chain(&err).contains("manifest.json"), "{}", chain(&err));
        assert_eq!(area.list().unwrap(), [id("before")]);
        unfill(&filler, dir.path());
        area.cleanup_incomplete().unwrap();
        assert!(dot_entries(&area).is_empty(), "{:?}", dot_entries(&area));

        // What was committed before is intact.
        area.verify(&id("before")).unwrap();
        commit_small(&area, "after");
        assert_eq!(area.list().unwrap(), [id("after"), id("before")]);
    }
}
