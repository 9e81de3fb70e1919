//! The persistent area: where generations of checkpoint images live across a kexec.
//!
//! ```text
//! <root>/generations/<id>/manifest.json        committed generations
//! <root>/generations/<id>/<workload>/<image>   one flat image directory per workload
//! <root>/generations/.tmp-<id>/                a generation being written
//! <root>/generations/.del-<id>/                a generation being removed
//! ```
//!
//! A generation becomes visible by one rename of `.tmp-<id>` to `<id>`, after every
//! image, the manifest and every directory were synced: a committed generation is
//! complete on disk, and an interrupted dump is never offered for restore. Removal is
//! the same rename the other way, so a half-removed generation is never listed either.
//! Files are 0600 and directories 0700: images are process memory.
//!
//! One process (the daemon) uses an area at a time; [`Area::cleanup_incomplete`] is
//! meant for its start, before any [`Area::begin`].

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::fsutil::{create_private_dir, remove_any, set_mode, sync_dir, DIR_MODE, FILE_MODE};
use crate::manifest::{
    shown, temp_path_for, Checksum, FileName, GenerationId, GenerationState, ImageFile, Manifest,
    ValidationError, Workload, WorkloadName, WorkloadState, MANIFEST_FILE,
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
#[derive(Debug)]
#[must_use = "a pending generation is offered for restore only once committed"]
pub struct PendingGeneration {
    id: GenerationId,
    dir: PathBuf,
    final_dir: PathBuf,
    generations: PathBuf,
}

impl Area {
    /// Opens the area at `root`, creating `generations/` (0700) if needed.
    ///
    /// `root` must exist, be a directory owned by the effective uid and writable by
    /// nobody else: whoever can write it can plant images that get restored.
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
        if create_private_dir(&generations)? {
            sync_dir(&root)?;
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
                set_mode(&generations, DIR_MODE)?;
            }
        }
        Ok(Area { root, generations })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of the committed generation `id` (whether or not it exists).
    pub fn generation_path(&self, id: &GenerationId) -> PathBuf {
        self.generations.join(id.as_str())
    }

    /// Starts writing generation `id` in `generations/.tmp-<id>/` (0700).
    pub fn begin(&self, id: &GenerationId) -> Result<PendingGeneration> {
        let final_dir = self.generation_path(id);
        if exists_no_follow(&final_dir)? {
            return Err(Error::GenerationExists { path: final_dir });
        }
        let dir = self.generations.join(format!("{PENDING_PREFIX}{id}"));
        if !create_private_dir(&dir)? {
            return Err(Error::PendingExists { path: dir });
        }
        Ok(PendingGeneration {
            id: id.clone(),
            dir,
            final_dir,
            generations: self.generations.clone(),
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

    /// Checks generation `id` against its manifest: nothing missing, nothing extra,
    /// every image of the recorded size and checksum. Sizes and listings are checked for
    /// every workload before any image is hashed, so the cheap errors come first; the
    /// first problem found is returned. Returns the manifest.
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
            for name in sorted_entries(&wdir)? {
                if !workload.images.iter().any(|i| name == i.name.as_str()) {
                    return Err(Error::UnexpectedEntry {
                        path: wdir.join(name),
                        reason: "not an image listed in the manifest".into(),
                    });
                }
            }
        }

        for workload in &manifest.workloads {
            let wdir = dir.join(workload.name.as_str());
            for image in &workload.images {
                let path = wdir.join(image.name.as_str());
                let (checksum, size) = Checksum::of_reader(open_no_follow(&path)?, &path)?;
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
        new.save(&path)?;
        Ok(new)
    }

    /// Removes generation `id`. It is first renamed to `.del-<id>`, so that a crash
    /// midway leaves nothing that looks like a generation.
    pub fn remove(&self, id: &GenerationId) -> Result<()> {
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
        let mut removed = Vec::new();
        for name in sorted_entries(&self.generations)? {
            let path = self.generations.join(&name);
            let name = name.to_string_lossy();
            if name.starts_with(PENDING_PREFIX) || name.starts_with(REMOVING_PREFIX) {
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
        if !create_private_dir(&path)? {
            let meta = fs::symlink_metadata(&path).at("reading metadata of", &path)?;
            if !meta.is_dir() {
                return Err(Error::NotADirectory { path });
            }
        }
        Ok(path)
    }

    /// Commits the generation described by `manifest`:
    ///
    /// 1. every file of every workload directory is made 0600, hashed and fsynced; a
    ///    workload whose `images` is empty gets them filled in from its directory, a
    ///    non-empty list must match the directory exactly (names, sizes, checksums);
    /// 2. the states become committed (the generation's, and each pending workload's);
    /// 3. the manifest is written atomically and every directory is fsynced;
    /// 4. `.tmp-<id>` is renamed to `<id>` and `generations/` fsynced.
    ///
    /// On error nothing is committed and the pending directory stays (see the type's
    /// documentation). Returns the manifest as written.
    pub fn commit(self, mut manifest: Manifest) -> Result<Manifest> {
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
            match found {
                None if workload.images.is_empty() => {}
                None => return Err(Error::WorkloadDirMissing { path: wdir }),
                Some(found) if workload.images.is_empty() => workload.images = found,
                Some(found) => check_listed_images(&wdir, &workload.images, &found)?,
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
                path: self.final_dir,
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

/// Makes a workload directory durable and private and lists its images: each file is
/// set to 0600, hashed (streamed) and fsynced in one pass, then the directory is set
/// to 0700 and fsynced. `None` if the directory does not exist.
fn seal_workload_dir(dir: &Path) -> Result<Option<Vec<ImageFile>>> {
    match fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(Error::NotADirectory { path: dir.into() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).at("reading metadata of", dir),
    }
    let mut images = Vec::new();
    for name in sorted_entries(dir)? {
        let path = dir.join(&name);
        let name = name
            .into_string()
            .map_err(|raw| {
                ValidationError::new("image file name", &raw.to_string_lossy(), "is not UTF-8")
            })
            .and_then(FileName::new)
            .map_err(|problem| Error::UnexpectedEntry {
                path: path.clone(),
                reason: problem.to_string(),
            })?;
        let meta = fs::symlink_metadata(&path).at("reading metadata of", &path)?;
        if !meta.is_file() {
            return Err(Error::NotARegularFile { path });
        }
        let file = open_no_follow(&path)?;
        file.set_permissions(fs::Permissions::from_mode(FILE_MODE))
            .at("setting the mode of", &path)?;
        let (checksum, size) = Checksum::of_reader(&file, &path)?;
        file.sync_all().at("syncing", &path)?;
        images.push(ImageFile {
            name,
            size,
            checksum,
        });
    }
    set_mode(dir, DIR_MODE)?;
    sync_dir(dir)?;
    Ok(Some(images))
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

/// The names in `dir`, sorted so that checks and errors come in a stable order.
fn sorted_entries(dir: &Path) -> Result<Vec<OsString>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).at("listing", dir)? {
        names.push(entry.at("listing", dir)?.file_name());
    }
    names.sort();
    Ok(names)
}
