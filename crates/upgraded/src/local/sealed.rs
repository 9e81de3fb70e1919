//! Suspend and resume with the images sealed at rest (`[suspend] encrypt = true`, or
//! `compress = "zstd"`, or both; docs/suspend-encryption.md).
//!
//! A sealed suspend dumps into a staging area in memory ([`SEALING_DIR`], on /run's
//! tmpfs), commits the generation there, seals it into `<area>/sealed/<id>.age`
//! (encrypted) or `<area>/sealed/<id>.tar.zst` (compressed only) and removes the
//! staging copy: the plaintext images never reach the area's disk. If
//! sealing fails after the dump stopped the workload, the workload is restored at
//! once from the staging copy. A resume unseals into [`UNSEALING_DIR`]`/<id>`, verifies
//! and restores from there, then removes the sealed file and the copy.
//!
//! Resume looks at plain generations too (suspends made before encryption was turned
//! on, or with it off), and at committed generations left in the sealing staging area
//! by an interrupted suspend: the newest generation holding the workload wins.
//!
//! A sealed file's manifest says committed forever (it is never rewritten): the file
//! being there is the only mark of a suspend not resumed yet. So it is removed
//! whenever its workload was restored from any copy, and an error that leaves one
//! behind says to remove it (`upgradectl images rm <id>`).
//!
//! A sealed suspend and a resume hold [`SuspendLock`] from start to end, and with it
//! every cleanup of the staging and sealed directories: another's cleanup would
//! remove a generation being dumped or a file being sealed.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use dumper::area::{Area, FsType};
use dumper::checkpoint::{self, CheckpointOptions, CheckpointReport, RestoreReport};
use dumper::criu::Criu;
use dumper::manifest::{GenerationId, GenerationState, Manifest, WorkloadState};
use dumper::seal::{self, SealKey, SealedFile};
use dumper::workload;
use serde_json::json;

use super::{human_bytes, open_area, parse_workload_arg, print_restored, Progress};
use crate::config::{Settings, SuspendCompression};

/// Where a sealed suspend stages its plaintext images: an area root on /run, a tmpfs.
pub const SEALING_DIR: &str = "/run/upgraded/sealing";
/// Where a resume unseals a sealed generation: `<UNSEALING_DIR>/<id>` is an area root.
pub const UNSEALING_DIR: &str = "/run/upgraded/unsealing";
/// The lock of sealed suspends and resumes ([`SuspendLock`]).
pub const SUSPEND_LOCK: &str = "/run/upgraded/suspend.lock";

/// Where plaintext suspend images are staged while they are sealed or unsealed.
#[derive(Debug, Clone)]
pub struct Staging {
    pub sealing: PathBuf,
    pub unsealing: PathBuf,
    /// The file [`SuspendLock`] locks.
    pub lock: PathBuf,
    /// Refuse staging directories that are not in memory (tmpfs, ramfs): the
    /// plaintext would reach a disk. Only tests turn it off.
    pub memory_only: bool,
}

impl Staging {
    /// [`SEALING_DIR`] and [`UNSEALING_DIR`], in memory only, and [`SUSPEND_LOCK`].
    pub fn system() -> Staging {
        Staging {
            sealing: SEALING_DIR.into(),
            unsealing: UNSEALING_DIR.into(),
            lock: SUSPEND_LOCK.into(),
            memory_only: true,
        }
    }
}

/// Another process holds the suspend lock: the daemon answers D-Bus callers with
/// `Busy` for it, not `Failed`.
#[derive(Debug)]
pub struct LockHeld {
    pub path: PathBuf,
    /// The PID the holder wrote into the lock file, if it could be read.
    pub holder: Option<u32>,
}

impl std::fmt::Display for LockHeld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let holder = match self.holder {
            Some(pid) => format!(" held by PID {pid}"),
            None => String::new(),
        };
        write!(
            f,
            "another suspend or resume is running (lock {}{holder}); wait for it to finish \
             and try again",
            self.path.display()
        )
    }
}

impl std::error::Error for LockHeld {}

/// Whether `err` (anywhere in its chain) is a [`LockHeld`].
pub fn is_lock_held(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| cause.is::<LockHeld>())
}

/// An exclusive flock(2) on the suspend lock file, held for the whole of a sealed
/// suspend and of a resume, and so over every cleanup of the staging and sealed
/// directories. `upgradectl` runs them in its own process and the daemon's D-Bus
/// `Suspend` and `Resume` in the daemon's: without it, one's cleanup removes the
/// staging generation another is dumping (its workload is stopped, its images lost)
/// or the `.age.tmp` it is sealing. The kernel releases it when the holder ends,
/// however it ends: a stale lock file is never in the way.
#[derive(Debug)]
pub(super) struct SuspendLock {
    _locked: nix::fcntl::Flock<File>,
}

impl SuspendLock {
    /// Takes the lock of the file at `path` (created 0600, its directory 0700; a
    /// symbolic link is refused), or fails at once when someone holds it, naming the
    /// lock and the holder's PID, which each holder writes into the file.
    pub(super) fn take(path: &Path) -> Result<SuspendLock> {
        use std::os::unix::fs::{FileExt, OpenOptionsExt};
        if let Some(dir) = path.parent() {
            dumper::create_private_dir_all(dir).with_context(|| {
                format!("creating the directory of the lock {}", path.display())
            })?;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(path)
            .with_context(|| format!("opening the suspend lock {}", path.display()))?;
        if !file
            .metadata()
            .with_context(|| format!("reading metadata of {}", path.display()))?
            .is_file()
        {
            bail!(
                "the suspend lock {} is not a regular file; remove it",
                path.display()
            );
        }
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(locked) => {
                // For whoever is refused: who holds it. Not fatal, it is only shown.
                let pid = format!("{}\n", std::process::id());
                if let Err(e) = locked
                    .set_len(0)
                    .and_then(|()| locked.write_all_at(pid.as_bytes(), 0))
                {
                    tracing::warn!(error = %e, path = ?path, "writing the PID into the lock");
                }
                Ok(SuspendLock { _locked: locked })
            }
            Err((file, errno)) if errno == nix::errno::Errno::EWOULDBLOCK => {
                let mut text = String::new();
                let _ = file.take(32).read_to_string(&mut text);
                Err(LockHeld {
                    path: path.to_owned(),
                    holder: text.trim().parse::<u32>().ok(),
                }
                .into())
            }
            Err((_, errno)) => Err(std::io::Error::from(errno))
                .with_context(|| format!("locking {}", path.display())),
        }
    }
}

/// Restores workload `name` of generation `gen` of an area: CRIU in real use, a stand-in
/// in tests.
type RestoreFn<'a> = dyn FnMut(&Area, &GenerationId) -> Result<Vec<RestoreReport>> + 'a;

/// The real [`RestoreFn`]: [`checkpoint::restore`] with the images verified first,
/// services through their unit (whose start command reads the same area).
fn criu_restore<'a>(
    criu: &'a Criu,
    name: &'a str,
    progress: &'a Progress,
) -> impl FnMut(&Area, &GenerationId) -> Result<Vec<RestoreReport>> + 'a {
    move |area: &Area, gen: &GenerationId| {
        let cmd = super::service_restore_cmd(area)?;
        Ok(checkpoint::restore(
            area,
            criu,
            gen,
            &[name.to_owned()],
            Some(&cmd),
            &mut progress.step(),
        )?)
    }
}

/// Creates (0700) and opens a staging area at `dir`, refusing one that is not in
/// memory when `memory_only`.
fn open_staging(dir: &Path, memory_only: bool) -> Result<Area> {
    dumper::create_private_dir_all(dir)
        .with_context(|| format!("creating the staging directory {}", dir.display()))?;
    if memory_only {
        let fs = FsType::of(dir)?;
        if fs != FsType::TMPFS && fs != FsType::RAMFS {
            bail!(
                "{} is on {fs}, not in memory: the plaintext images staged there would reach \
                 a disk; sealed suspends need /run on a tmpfs (as systemd mounts it)",
                dir.display()
            );
        }
    }
    Area::open(dir).with_context(|| format!("opening the staging area {}", dir.display()))
}

/// Loads the suspend key of the configuration, saying why it is needed.
fn load_key(settings: &Settings) -> Result<SealKey> {
    SealKey::load(&settings.suspend.key_file).context("loading the key that seals suspend images")
}

/// `upgradectl suspend NAME` with `suspend.encrypt` on or `suspend.compress` set.
pub(super) fn suspend(
    settings: &Settings,
    staging: &Staging,
    name: &str,
    json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    // Everything that can be refused is refused before anything is frozen.
    let key = match settings.suspend.encrypt {
        true => Some(load_key(settings).context("suspend.encrypt is on; nothing was stopped")?),
        false => None,
    };
    let lock = SuspendLock::take(&staging.lock).context("nothing was stopped")?;
    let area = open_area(settings)?;
    area.cleanup_incomplete()
        .context("cleaning up interrupted generations")?;
    area.check_writable()?;
    let sealed_dir = seal::sealed_dir(area.root(), true)?.context("the sealed directory")?;
    let stage = open_staging(&staging.sealing, staging.memory_only)?;
    tidy_staging(&lock, &stage, &sealed_dir)?;

    let (wname, target) = parse_workload_arg(settings, name)?;
    let resolved =
        workload::resolve(&wname, &target).with_context(|| format!("finding workload {name}"))?;
    let needed = with_margin(resolved.rss_bytes, settings.area.min_free_margin_percent);
    let what = format!(
        "the images of {name} ({} resident, plus {}%)",
        human_bytes(resolved.rss_bytes),
        settings.area.min_free_margin_percent
    );
    seal::check_room(
        &staging.sealing,
        needed,
        &what,
        "the plaintext is staged in memory there before it is sealed: free memory, or \
         enlarge /run (mount -o remount,size=<bytes> /run); nothing was stopped",
    )?;
    seal::check_room(
        &sealed_dir,
        needed,
        &what,
        "free space there or move the area (area.path); nothing was stopped",
    )?;

    let criu = Criu::locate()?;
    let progress = Progress::new(json);
    let report = checkpoint::checkpoint(
        &stage,
        &criu,
        &[resolved],
        &CheckpointOptions {
            leave_running: false,
            kernel_features: crate::boot::compat::running_features(),
            ..Default::default()
        },
        &mut progress.step(),
    )
    .with_context(|| {
        format!(
            "dumping {name} into the staging area {} (in memory)",
            staging.sealing.display()
        )
    })?;
    let gen = report.manifest.generation.clone();
    progress.say("sealing the images");
    let packing = match settings.suspend.compress {
        SuspendCompression::None => seal::Packing::Plain,
        SuspendCompression::Zstd => seal::Packing::Zstd,
    };
    let sealed = seal_or_resume(
        &area,
        &stage,
        &gen,
        &Sealing {
            key: key.as_ref(),
            packing,
        },
        &sealed_dir,
        name,
        &mut criu_restore(&criu, name, &progress),
    )?;
    progress.finish();
    print_suspended(&report, &sealed, json, out)
}

/// Removes what an interrupted suspend left, under the lock: half-written sealed
/// files, and in the staging area pending generations, committed ones whose sealed
/// file is complete and restored ones. A committed generation without a sealed file
/// is kept: it may be a stopped workload's only copy, and resume finds it there.
fn tidy_staging(_held: &SuspendLock, stage: &Area, sealed_dir: &Path) -> Result<()> {
    seal::cleanup_sealed(sealed_dir).context("cleaning up interrupted seals")?;
    stage
        .cleanup_incomplete()
        .context("cleaning up the staging area")?;
    for gen in stage.list()? {
        let restored = stage
            .load(&gen)
            .is_ok_and(|m| m.state == GenerationState::Restored);
        if restored || !seal::find_sealed(sealed_dir, &gen).is_empty() {
            stage.remove(&gen)?;
        } else {
            tracing::warn!(
                generation = %gen,
                path = ?stage.generation_path(&gen),
                "an interrupted suspend left images in the staging area; \
                 `upgradectl resume` brings them back until the next reboot"
            );
        }
    }
    Ok(())
}

/// What a suspend seals with: the key if it encrypts, and whether the archive is
/// compressed.
struct Sealing<'a> {
    key: Option<&'a SealKey>,
    packing: seal::Packing,
}

/// Seals the committed staging generation `gen` into `sealed_dir` and removes the
/// staging copy. If sealing fails, the workload (stopped by the dump) is restored at
/// once from the staging copy with `restore`, and the error says so.
fn seal_or_resume(
    area: &Area,
    stage: &Area,
    gen: &GenerationId,
    sealing: &Sealing<'_>,
    sealed_dir: &Path,
    name: &str,
    restore: &mut RestoreFn<'_>,
) -> Result<PathBuf> {
    let recipient = sealing.key.map(SealKey::recipient);
    seal_or_resume_with(
        area,
        stage,
        gen,
        sealed_dir,
        name,
        &mut || {
            seal::seal(
                &stage.generation_path(gen),
                gen,
                recipient.as_ref(),
                sealed_dir,
                sealing.packing,
            )
        },
        restore,
    )
}

/// [`seal_or_resume`] with the seal itself a parameter (the tests fail it in ways
/// the real one only fails on a broken disk).
fn seal_or_resume_with(
    area: &Area,
    stage: &Area,
    gen: &GenerationId,
    sealed_dir: &Path,
    name: &str,
    seal: &mut dyn FnMut() -> dumper::Result<PathBuf>,
    restore: &mut RestoreFn<'_>,
) -> Result<PathBuf> {
    let sealed = dumper::faults::point("suspend::seal")
        .and_then(|()| seal())
        .map_err(|e| area.explain(e));
    let err = match sealed {
        Ok(path) => {
            if let Err(e) = stage.remove(gen) {
                // The sealed file is complete; the next suspend removes the copy.
                tracing::warn!(error = %e, "removing the staging copy of generation {gen}");
            }
            return Ok(path);
        }
        Err(e) => e,
    };
    // A file that was in the way before the seal is not this suspend's; any other
    // sealed file of `gen` is one the failed seal could not remove.
    let leftover = match &err {
        dumper::Error::GenerationExists { .. } => Vec::new(),
        _ => seal::find_sealed(sealed_dir, gen),
    };
    match restore(stage, gen) {
        Ok(_) => {
            if let Err(e) = stage.remove(gen) {
                tracing::warn!(error = %e, "removing the staging copy of generation {gen}");
            }
            let resumed = format!(
                "sealing the images of {name} failed, so {name} was resumed from the copy in \
                 memory and keeps running"
            );
            let forgotten = leftover
                .iter()
                .try_for_each(|path| forget_sealed(path, gen, name));
            Err(match forgotten {
                Ok(()) => anyhow::Error::new(err)
                    .context(format!("{resumed}; nothing was written to the area")),
                Err(e) => e.context(format!(
                    "{resumed} (the seal failed: {:#})",
                    anyhow::Error::new(err)
                )),
            })
        }
        // A sealed file left stays: the workload is not running, and if it is
        // complete it is one more copy (a resume from the staging copy removes it).
        Err(restore_err) => Err(anyhow::Error::new(err).context(format!(
            "sealing the images of {name} failed, and resuming it from the copy in memory \
             failed too ({restore_err:#}): {name} is NOT running; its images are in {} on \
             /run, in memory: they are LOST at the next reboot or kexec unless {name} is \
             resumed before (upgrades refuse to start while they are there): fix the cause \
             and run `upgradectl resume {name}`",
            stage.generation_path(gen).display()
        ))),
    }
}

/// Removes the sealed file `path` of generation `gen`, once workload `name` was
/// restored from it or from another copy of the same images. Its manifest says
/// committed forever, so while the file is there a resume would bring `name` back
/// from it again: a stale copy of the session, without what it did since. The error
/// (also logged) says so, and how to remove it. A file that is not there is fine.
fn forget_sealed(path: &Path, gen: &GenerationId, name: &str) -> Result<()> {
    if std::fs::symlink_metadata(path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
        return Ok(());
    }
    seal::remove_sealed(path).map_err(|e| {
        tracing::error!(
            error = %e,
            path = ?path,
            "{name} runs again, but its sealed images were not removed: run \
             `upgradectl images rm {gen}` now"
        );
        anyhow::Error::new(e).context(format!(
            "{name} runs again, but its sealed images {} could NOT be removed: run \
             `upgradectl images rm {gen}` NOW: they still say {name} is suspended, and \
             resuming {name} from them again would bring back a stale copy of the session",
            path.display()
        ))
    })
}

fn print_suspended(
    report: &CheckpointReport,
    sealed: &Path,
    json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let gen = report.manifest.generation.to_string();
    let bytes = std::fs::metadata(sealed).map(|m| m.len()).unwrap_or(0);
    if json {
        let w: Vec<_> = report
            .workloads
            .iter()
            .map(|w| {
                json!({"name": w.name, "dump_secs": w.dump_secs, "image_bytes": w.image_bytes,
                       "pre_dump_bytes": w.pre_dump_bytes})
            })
            .collect();
        writeln!(
            out,
            "{}",
            json!({"generation": gen, "frozen_secs": report.frozen_secs,
                   "commit_secs": report.commit_secs, "workloads": w,
                   "sealed": sealed, "sealed_bytes": bytes})
        )?;
    } else {
        for w in &report.workloads {
            writeln!(
                out,
                "checkpointed {}: {} in {:.2} s",
                w.name,
                human_bytes(w.image_bytes),
                w.dump_secs
            )?;
        }
        writeln!(
            out,
            "generation {gen} committed ({:.2} s frozen, commit {:.2} s)",
            report.frozen_secs, report.commit_secs
        )?;
        writeln!(
            out,
            "sealed into {} ({}); the plaintext copy in memory was removed",
            sealed.display(),
            human_bytes(bytes)
        )?;
    }
    Ok(())
}

/// `estimate` plus `margin` percent of it, rounded up.
fn with_margin(estimate: u64, margin: u8) -> u64 {
    let total = u128::from(estimate) * (100 + u128::from(margin));
    u64::try_from(total.div_ceil(100)).unwrap_or(u64::MAX)
}

/// Where the images to resume a workload from are.
#[derive(Debug)]
enum Found {
    /// A generation of the area.
    Plain(GenerationId),
    /// A generation an interrupted suspend left in the sealing staging area.
    Staged(Area, GenerationId),
    /// A sealed generation, whose manifest was read with `key` (none for a file that
    /// is compressed only).
    Sealed {
        file: SealedFile,
        key: Option<SealKey>,
    },
}

/// Whether `m` holds workload `name` suspended (committed, not restored since).
fn holds(m: &Manifest, name: &str) -> bool {
    m.workloads
        .iter()
        .any(|w| w.name.as_str() == name && w.state == WorkloadState::Committed)
}

/// The newest generation of `area` holding `name` suspended.
fn newest_holding(area: &Area, name: &str) -> Result<Option<GenerationId>> {
    let mut gens = area.list()?;
    gens.sort();
    Ok(gens
        .into_iter()
        .rev()
        .find(|g| area.load(g).is_ok_and(|m| holds(&m, name))))
}

/// Finds the newest suspend of `name`: plain, staged or sealed. A sealed file newer
/// than the newest other one that cannot be read (no key, another key, damage) is an
/// error naming it: it may hold a newer suspend, which must not be skipped silently.
fn find(settings: &Settings, area: &Area, staging: &Staging, name: &str) -> Result<Option<Found>> {
    let mut best = newest_holding(area, name)?.map(Found::Plain);
    let mut staged_ids = Vec::new();
    if staging.sealing.is_dir() {
        match Area::open(&staging.sealing) {
            Ok(stage) => {
                staged_ids = stage.list()?;
                if let Some(gen) = newest_holding(&stage, name)? {
                    // Option::is_none_or needs Rust 1.82; the workspace supports 1.80.
                    let newest = match &best {
                        Some(b) => id_of(b) <= &gen,
                        None => true,
                    };
                    if newest {
                        best = Some(Found::Staged(stage, gen));
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "skipping the sealing staging area"),
        }
    }
    let Some(dir) = seal::sealed_dir(area.root(), false)? else {
        return Ok(best);
    };
    let files = seal::list_sealed(&dir)?;
    let mut key: Option<SealKey> = None;
    for file in files.into_iter().rev() {
        if best.as_ref().is_some_and(|b| id_of(b) >= &file.id) {
            break;
        }
        if staged_ids.contains(&file.id) {
            // The same generation as a staged copy, which is preferred.
            continue;
        }
        let unreadable = |why: &str| {
            format!(
                "the sealed images {} {why}, and they may hold a newer suspend of {name} than \
                 any other; fix that, or discard them (upgradectl images rm {})",
                file.path.display(),
                file.id
            )
        };
        let k = match (&key, file.encrypted) {
            (_, false) => None,
            (Some(k), true) => Some(k),
            (None, true) => Some(
                &*key.insert(match SealKey::load(&settings.suspend.key_file) {
                    Ok(k) => k,
                    // A new key would not help: the one they were sealed with is needed.
                    Err(dumper::Error::KeyMissing { path }) => bail!(
                        "{}: the suspend key {} does not exist; put back the key they were sealed \
                     with (from its backup)",
                        unreadable("cannot be read"),
                        path.display()
                    ),
                    Err(e) => {
                        return Err(anyhow::Error::new(e).context(unreadable("cannot be read")))
                    }
                }),
            ),
        };
        let manifest = seal::peek_manifest(&file.path, k).with_context(|| match k {
            Some(_) => unreadable("cannot be read with the suspend key"),
            None => unreadable("cannot be read"),
        })?;
        if holds(&manifest, name) {
            best = Some(Found::Sealed {
                file,
                key: k.cloned(),
            });
            break;
        }
    }
    Ok(best)
}

fn id_of(found: &Found) -> &GenerationId {
    match found {
        Found::Plain(g) | Found::Staged(_, g) => g,
        Found::Sealed { file, .. } => &file.id,
    }
}

/// `upgradectl resume NAME`: from the newest generation holding it, plain or sealed.
pub(super) fn resume(
    settings: &Settings,
    staging: &Staging,
    name: &str,
    json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let _held = SuspendLock::take(&staging.lock)?;
    let area = open_area(settings)?;
    let Some(found) = find(settings, &area, staging, name)? else {
        bail!(
            "no suspended images of workload {name:?} in the area; `upgradectl images list` \
             shows what there is"
        );
    };
    let criu = Criu::locate()?;
    let progress = Progress::new(json);
    let resumed = resume_found(
        &area,
        found,
        staging,
        name,
        &mut criu_restore(&criu, name, &progress),
        &progress,
        json,
        out,
    );
    progress.finish();
    resumed
}

/// Restores `name` from what [`find`] found with `restore`, prints what was restored,
/// and removes the images resumed: the sealed file whenever the restore succeeded,
/// and a staging or unsealed copy. The sealed file of a generation resumed from its
/// staging copy goes too. A sealed file that cannot be removed after a restore is an
/// error (printed after what was restored), since resuming it again would bring back
/// a stale session.
#[allow(clippy::too_many_arguments)]
fn resume_found(
    area: &Area,
    found: Found,
    staging: &Staging,
    name: &str,
    restore: &mut RestoreFn<'_>,
    progress: &Progress,
    json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    match found {
        Found::Plain(gen) => {
            let reports = restore(area, &gen)
                .with_context(|| format!("resuming {name} from generation {gen}"))?;
            print_restored(&gen, &reports, json, out)
        }
        Found::Staged(stage, gen) => {
            let reports = restore(&stage, &gen).with_context(|| {
                format!(
                    "resuming {name} from generation {gen}, which an interrupted suspend left \
                     in {}",
                    stage.root().display()
                )
            })?;
            // A seal that completed before the interruption holds the same images.
            let forgotten = seal::find_sealed(&area.root().join(seal::SEALED_DIR), &gen)
                .iter()
                .try_for_each(|sealed| forget_sealed(sealed, &gen, name));
            if let Err(e) = stage.remove(&gen) {
                tracing::warn!(error = %e, "removing the staging copy of generation {gen}");
            }
            print_restored(&gen, &reports, json, out)?;
            forgotten
        }
        Found::Sealed { file, key } => {
            progress.say("unsealing the images");
            let (reports, forgotten) = resume_sealed(&file, key.as_ref(), staging, name, restore)?;
            progress.finish();
            print_resumed(&file, &reports, forgotten.is_ok(), json, out)?;
            forgotten
        }
    }
}

/// Unseals `file` into `<staging.unsealing>/<id>`, restores `name` from there with
/// `restore`, then removes the copy and, when the restore succeeded, the sealed file
/// ([`forget_sealed`]: its result is the second of the pair). A sealed suspend holds
/// one workload. On failure the copy is removed and the sealed file kept.
fn resume_sealed(
    file: &SealedFile,
    key: Option<&SealKey>,
    staging: &Staging,
    name: &str,
    restore: &mut RestoreFn<'_>,
) -> Result<(Vec<RestoreReport>, Result<()>)> {
    let root = staging.unsealing.join(file.id.as_str());
    let kept = || {
        format!(
            "resuming {name} from the sealed images {}, which are kept",
            file.path.display()
        )
    };
    dumper::create_private_dir_all(&staging.unsealing).with_context(|| {
        format!(
            "creating the staging directory {}",
            staging.unsealing.display()
        )
    })?;
    if root.exists() {
        // What an interrupted resume left.
        std::fs::remove_dir_all(&root)
            .with_context(|| format!("removing the stale copy {}", root.display()))?;
    }
    let stage = open_staging(&root, staging.memory_only).with_context(kept)?;
    let result = seal::unseal(&file.path, key, &stage.generation_path(&file.id))
        .map_err(anyhow::Error::new)
        .and_then(|_| restore(&stage, &file.id));
    if let Err(e) = std::fs::remove_dir_all(&root) {
        tracing::warn!(error = %e, path = ?root, "removing the unsealed copy");
    }
    let reports = result.with_context(kept)?;
    Ok((reports, forget_sealed(&file.path, &file.id, name)))
}

fn print_resumed(
    file: &SealedFile,
    reports: &[RestoreReport],
    removed: bool,
    json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    if json {
        let w: Vec<_> = reports
            .iter()
            .map(|r| json!({"name": r.name, "pid": r.pid, "restore_secs": r.restore_secs, "scope": r.scope}))
            .collect();
        writeln!(
            out,
            "{}",
            json!({"generation": file.id.to_string(), "workloads": w, "sealed": file.path,
                   "sealed_removed": removed})
        )?;
        return Ok(());
    }
    print_restored(&file.id, reports, json, out)?;
    if removed {
        writeln!(
            out,
            "unsealed from {}, which was removed",
            file.path.display()
        )?;
    } else {
        writeln!(
            out,
            "unsealed from {}, which could NOT be removed (see the error)",
            file.path.display()
        )?;
    }
    Ok(())
}

/// What `images list` shows of the sealed generations of `area`: the file and its
/// size always; the manifest's details when it can be read (with the key, for an
/// encrypted one).
pub(super) fn list_rows(settings: &Settings, area: &Area) -> Result<Vec<serde_json::Value>> {
    let Some(dir) = seal::sealed_dir(area.root(), false)? else {
        return Ok(Vec::new());
    };
    let files = seal::list_sealed(&dir)?;
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let key = files
        .iter()
        .any(|f| f.encrypted)
        .then(|| SealKey::load(&settings.suspend.key_file));
    let mut rows = Vec::new();
    for file in files {
        let mut row = json!({
            "generation": file.id.to_string(),
            "sealed": file.path,
            "file_bytes": file.bytes,
            "encrypted": file.encrypted,
        });
        let key = match (&key, file.encrypted) {
            (Some(key), true) => key.as_ref().map(Some),
            _ => Ok(None),
        };
        match key {
            Ok(key) => match seal::peek_manifest(&file.path, key) {
                Ok(m) => {
                    row["state"] = json!(super::state_str(m.state));
                    row["created"] = json!(m.created_rfc3339());
                    row["kernel"] = json!(m.source.kernel_release);
                    row["workloads"] = json!(m
                        .workloads
                        .iter()
                        .map(|w| w.name.to_string())
                        .collect::<Vec<_>>());
                    row["bytes"] = json!(super::manifest_bytes(&m));
                }
                Err(e) => row["error"] = json!(format!("{e:#}")),
            },
            Err(e) => row["key_error"] = json!(format!("{e:#}")),
        }
        rows.push(row);
    }
    Ok(rows)
}

/// A generation in the sealing staging area, in memory: what a sealed suspend left
/// there when it was interrupted, or when it could neither seal nor resume it.
#[derive(Debug)]
pub struct Staged {
    pub id: GenerationId,
    /// Its directory.
    pub path: PathBuf,
    /// Its manifest, or why it cannot be read.
    pub manifest: Result<Manifest, String>,
}

/// The generations of the sealing staging area at `dir`, sorted by id; none when it
/// does not exist.
pub fn staged_generations(dir: &Path) -> Result<Vec<Staged>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let stage =
        Area::open(dir).with_context(|| format!("opening the staging area {}", dir.display()))?;
    let mut ids = stage.list()?;
    ids.sort();
    Ok(ids
        .into_iter()
        .map(|id| Staged {
            path: stage.generation_path(&id),
            manifest: stage
                .load(&id)
                .map_err(|e| format!("{:#}", anyhow::Error::new(e))),
            id,
        })
        .collect())
}

/// The suspends waiting in the sealing staging area of `staging`, for the pre-flight:
/// the generations there that hold a workload not restored yet. A kexec or a reboot
/// loses them.
pub fn staged_suspends(staging: &Staging) -> Result<Vec<crate::preflight::StagedSuspend>> {
    Ok(staged_generations(&staging.sealing)?
        .into_iter()
        .filter_map(|s| {
            let m = s.manifest.ok()?;
            let workloads: Vec<String> = m
                .workloads
                .iter()
                .filter(|w| w.state == WorkloadState::Committed)
                .map(|w| w.name.to_string())
                .collect();
            (!workloads.is_empty()).then(|| crate::preflight::StagedSuspend {
                generation: s.id.to_string(),
                path: s.path,
                workloads,
            })
        })
        .collect())
}

/// What `images list` shows of the sealing staging area of `staging`: each
/// generation there, with `"staged"` (its directory) and `"in_memory": true`. One
/// that cannot be opened is skipped with a warning, as resume does.
pub(super) fn staged_rows(staging: &Staging) -> Vec<serde_json::Value> {
    let staged = match staged_generations(&staging.sealing) {
        Ok(staged) => staged,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "skipping the sealing staging area");
            return Vec::new();
        }
    };
    staged
        .into_iter()
        .map(|s| {
            let mut row = json!({
                "generation": s.id.to_string(),
                "staged": s.path,
                "in_memory": true,
            });
            match s.manifest {
                Ok(m) => {
                    row["state"] = json!(super::state_str(m.state));
                    row["created"] = json!(m.created_rfc3339());
                    row["kernel"] = json!(m.source.kernel_release);
                    row["workloads"] = json!(m
                        .workloads
                        .iter()
                        .map(|w| w.name.to_string())
                        .collect::<Vec<_>>());
                    row["bytes"] = json!(super::manifest_bytes(&m));
                }
                Err(e) => row["error"] = json!(e),
            }
            row
        })
        .collect()
}

/// The sealed files of generation `id` in `area` (one, but for a hand-made second).
pub(super) fn sealed_files(area: &Area, id: &GenerationId) -> Result<Vec<PathBuf>> {
    let Some(dir) = seal::sealed_dir(area.root(), false)? else {
        return Ok(Vec::new());
    };
    Ok(seal::find_sealed(&dir, id))
}

/// The sealed file of generation `id` in `area`, if there is one.
pub(super) fn sealed_file(area: &Area, id: &GenerationId) -> Result<Option<PathBuf>> {
    Ok(sealed_files(area, id)?.into_iter().next())
}

/// The manifest of the sealed file `path`, read with the configured key if it is
/// encrypted.
pub(super) fn peek(settings: &Settings, path: &Path) -> Result<Manifest> {
    let encrypted = seal::sealed_id(path).is_some_and(|(_, encrypted)| encrypted);
    let key = if encrypted {
        Some(load_key(settings)?)
    } else {
        None
    };
    Ok(seal::peek_manifest(path, key.as_ref())?)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::fs;

    use super::*;
    use crate::config::{AreaLocation, AreaSettings, SuspendSettings};
    use dumper::manifest::{SourceSystem, Workload, WorkloadKind, WorkloadName};

    /// An area, a key file and staging directories in one temporary directory.
    struct Bed {
        dir: tempfile::TempDir,
        settings: Settings,
        staging: Staging,
    }

    impl Bed {
        fn new() -> Bed {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir(dir.path().join("area")).unwrap();
            let settings = Settings {
                area: AreaSettings {
                    location: AreaLocation::Directory {
                        path: dir.path().join("area"),
                    },
                    ..Default::default()
                },
                suspend: SuspendSettings {
                    encrypt: true,
                    key_file: dir.path().join("suspend.key"),
                    ..Default::default()
                },
                ..Default::default()
            };
            let staging = Staging {
                sealing: dir.path().join("run/sealing"),
                unsealing: dir.path().join("run/unsealing"),
                lock: dir.path().join("run/suspend.lock"),
                memory_only: false,
            };
            Bed {
                dir,
                settings,
                staging,
            }
        }

        fn area(&self) -> Area {
            open_area(&self.settings).unwrap()
        }

        fn key(&self) -> SealKey {
            match SealKey::load(&self.settings.suspend.key_file) {
                Ok(key) => key,
                Err(_) => SealKey::generate(&self.settings.suspend.key_file).unwrap(),
            }
        }

        fn sealed_dir(&self) -> PathBuf {
            seal::sealed_dir(self.area().root(), true).unwrap().unwrap()
        }

        /// Seals a generation `gen` holding `workload` into the area.
        fn seal(&self, gen: &str, workload: &str) -> PathBuf {
            let scratch = self.dir.path().join(format!("scratch-{gen}"));
            fs::create_dir(&scratch).unwrap();
            let area = Area::open(&scratch).unwrap();
            commit(&area, gen, workload);
            let path = seal::seal(
                &area.generation_path(&id(gen)),
                &id(gen),
                Some(&self.key().recipient()),
                &self.sealed_dir(),
                seal::Packing::Plain,
            )
            .unwrap();
            fs::remove_dir_all(scratch).unwrap();
            path
        }

        fn stage(&self) -> Area {
            open_staging(&self.staging.sealing, false).unwrap()
        }
    }

    fn id(s: &str) -> GenerationId {
        GenerationId::new(s).unwrap()
    }

    /// Commits generation `gen` holding `workload` (one small image) in `area`.
    fn commit(area: &Area, gen: &str, workload: &str) {
        let source = SourceSystem {
            kernel_release: "6.1.0-40-amd64".into(),
            proc_version: "Linux version 6.1.0-40-amd64".into(),
            kernel_config_checksum: None,
            criu_version: "3.17.1".into(),
            glibc_version: "2.36".into(),
            cpu: Default::default(),
        };
        let mut m = Manifest::new(id(gen), 1_735_689_600, source);
        let name = WorkloadName::new(workload).unwrap();
        let pending = area.begin(&id(gen)).unwrap();
        let dir = pending.workload_dir(&name).unwrap();
        fs::write(dir.join("core-100.img"), format!("core of {workload}")).unwrap();
        m.workloads
            .push(Workload::new(name, WorkloadKind::Process, 100));
        pending.commit(m).unwrap();
    }

    /// A restore that checks the images and marks the generation restored, as
    /// checkpoint::restore does after CRIU; records what it was called on.
    fn fake_restore<'a>(
        calls: &'a RefCell<Vec<(PathBuf, String)>>,
        fail: bool,
    ) -> impl FnMut(&Area, &GenerationId) -> Result<Vec<RestoreReport>> + 'a {
        move |area: &Area, gen: &GenerationId| {
            calls
                .borrow_mut()
                .push((area.root().to_owned(), gen.to_string()));
            area.verify(gen)?;
            if fail {
                bail!("CRIU said no");
            }
            area.update(gen, |m| {
                m.state = GenerationState::Restored;
                for w in &mut m.workloads {
                    w.state = WorkloadState::Restored;
                }
            })?;
            Ok(vec![RestoreReport {
                name: "w".into(),
                pid: 4242,
                restore_secs: 0.5,
                scope: None,
            }])
        }
    }

    /// [`seal_or_resume`] of staging generation `gen` of `bed` into its sealed
    /// directory as workload `w`, with `key` (or none) and `packing`, restoring with
    /// [`fake_restore`] (failing when `fail`) into `calls`.
    fn seal_staged(
        bed: &Bed,
        gen: &str,
        key: Option<&SealKey>,
        packing: seal::Packing,
        calls: &RefCell<Vec<(PathBuf, String)>>,
        fail: bool,
    ) -> Result<PathBuf> {
        seal_or_resume(
            &bed.area(),
            &bed.stage(),
            &id(gen),
            &Sealing { key, packing },
            &bed.sealed_dir(),
            "w",
            &mut fake_restore(calls, fail),
        )
    }

    #[test]
    fn a_sealed_suspend_without_a_key_stops_nothing_and_says_how_to_make_one() {
        let bed = Bed::new();
        let mut out = Vec::new();
        let err =
            suspend(&bed.settings, &bed.staging, "process:4242", false, &mut out).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.starts_with("suspend.encrypt is on; nothing was stopped")
                && text.contains("upgradectl suspend-key generate")
                && text.contains(&bed.settings.suspend.key_file.display().to_string()),
            "{text}"
        );
        assert!(!bed.staging.sealing.exists());
        assert!(out.is_empty());
        // A key others may read is refused the same way.
        bed.key();
        let key_file = &bed.settings.suspend.key_file;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(key_file, fs::Permissions::from_mode(0o644)).unwrap();
        let err =
            suspend(&bed.settings, &bed.staging, "process:4242", false, &mut out).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains(&format!("chmod 0600 {}", key_file.display())),
            "{text}"
        );
    }

    #[test]
    fn a_sealed_generation_replaces_its_staging_copy() {
        let bed = Bed::new();
        let stage = bed.stage();
        commit(&stage, "g1", "w");
        let calls = RefCell::new(Vec::new());
        let path = seal_staged(
            &bed,
            "g1",
            Some(&bed.key()),
            seal::Packing::Zstd,
            &calls,
            false,
        )
        .unwrap();
        assert_eq!(path, bed.sealed_dir().join("g1.age"));
        assert!(stage.list().unwrap().is_empty());
        assert!(calls.borrow().is_empty(), "nothing restored");
        let m = seal::peek_manifest(&path, Some(&bed.key())).unwrap();
        assert!(holds(&m, "w"));
    }

    #[test]
    fn a_compressed_only_suspend_is_found_listed_and_resumed_without_a_key() {
        let bed = Bed::new();
        let stage = bed.stage();
        commit(&stage, "g1", "w");
        let calls = RefCell::new(Vec::new());
        let path = seal_staged(&bed, "g1", None, seal::Packing::Zstd, &calls, false).unwrap();
        assert_eq!(path, bed.sealed_dir().join("g1.tar.zst"));
        assert!(stage.list().unwrap().is_empty());
        // No key file anywhere: none is needed to find, list, show or resume it.
        assert!(!bed.settings.suspend.key_file.exists());
        let rows = list_rows(&bed.settings, &bed.area()).unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0]["encrypted"], false);
        assert_eq!(rows[0]["workloads"], json!(["w"]));
        assert!(rows[0].get("key_error").is_none(), "{rows:?}");
        assert_eq!(
            sealed_file(&bed.area(), &id("g1")).unwrap(),
            Some(path.clone())
        );
        assert!(holds(&peek(&bed.settings, &path).unwrap(), "w"));
        let Some(Found::Sealed { file, key }) =
            find(&bed.settings, &bed.area(), &bed.staging, "w").unwrap()
        else {
            panic!("not found sealed");
        };
        assert!(key.is_none() && !file.encrypted);
        let (reports, removed) = resume_sealed(
            &file,
            key.as_ref(),
            &bed.staging,
            "w",
            &mut fake_restore(&calls, false),
        )
        .unwrap();
        removed.unwrap();
        assert_eq!(reports[0].pid, 4242);
        assert!(!path.exists(), "the sealed file is removed once resumed");
    }

    #[test]
    fn a_failed_seal_resumes_the_workload_from_the_staging_copy() {
        let bed = Bed::new();
        let stage = bed.stage();
        commit(&stage, "g1", "w");
        // Something in the way of the sealed file.
        fs::create_dir(bed.sealed_dir().join("g1.age")).unwrap();
        let calls = RefCell::new(Vec::new());
        let err = seal_staged(
            &bed,
            "g1",
            Some(&bed.key()),
            seal::Packing::Plain,
            &calls,
            false,
        )
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.starts_with(
                "sealing the images of w failed, so w was resumed from the copy in memory and \
                 keeps running"
            ) && text.contains("g1.age"),
            "{text}"
        );
        assert_eq!(
            *calls.borrow(),
            [(bed.staging.sealing.clone(), "g1".to_owned())]
        );
        assert!(stage.list().unwrap().is_empty());

        // The restore fails too: the copy stays, and the error says where.
        commit(&stage, "g2", "w");
        fs::create_dir(bed.sealed_dir().join("g2.age")).unwrap();
        let calls = RefCell::new(Vec::new());
        let err = seal_staged(
            &bed,
            "g2",
            Some(&bed.key()),
            seal::Packing::Plain,
            &calls,
            true,
        )
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("w is NOT running")
                && text.contains("CRIU said no")
                && text.contains(&stage.generation_path(&id("g2")).display().to_string())
                && text.contains("upgradectl resume w"),
            "{text}"
        );
        assert_eq!(stage.list().unwrap(), [id("g2")]);
        // ...and resume finds it there.
        let found = find(&bed.settings, &bed.area(), &bed.staging, "w").unwrap();
        assert!(
            matches!(found, Some(Found::Staged(_, ref g)) if g == &id("g2")),
            "{found:?}"
        );
    }

    #[test]
    fn resume_takes_the_newest_of_plain_staged_and_sealed() {
        let bed = Bed::new();
        let area = bed.area();
        let found = |bed: &Bed| find(&bed.settings, &bed.area(), &bed.staging, "w").unwrap();
        assert!(found(&bed).is_none());
        commit(&area, "g1", "w");
        assert!(matches!(found(&bed), Some(Found::Plain(g)) if g == id("g1")));
        // An older sealed one is not even read.
        bed.seal("g0", "w");
        fs::rename(&bed.settings.suspend.key_file, bed.dir.path().join("away")).unwrap();
        assert!(matches!(found(&bed), Some(Found::Plain(g)) if g == id("g1")));
        fs::rename(bed.dir.path().join("away"), &bed.settings.suspend.key_file).unwrap();
        // A newer sealed one wins; one of another workload is looked at and passed by.
        bed.seal("g3", "w");
        bed.seal("g4", "other");
        assert!(matches!(found(&bed), Some(Found::Sealed { ref file, .. }) if file.id == id("g3")));
        // A staged copy of the same generation is preferred to unsealing it.
        commit(&bed.stage(), "g3", "w");
        assert!(matches!(found(&bed), Some(Found::Staged(_, g)) if g == id("g3")));
    }

    #[test]
    fn a_sealed_suspend_that_cannot_be_read_is_not_skipped_silently() {
        let bed = Bed::new();
        commit(&bed.area(), "g1", "w");
        let sealed = bed.seal("g2", "w");
        // No key.
        fs::remove_file(&bed.settings.suspend.key_file).unwrap();
        let err = find(&bed.settings, &bed.area(), &bed.staging, "w").unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains(&format!(
                "the sealed images {} cannot be read",
                sealed.display()
            )) && text.contains("may hold a newer suspend of w")
                && text.contains("does not exist; put back the key they were sealed with")
                && !text.contains("suspend-key generate")
                && text.contains("upgradectl images rm g2"),
            "{text}"
        );
        // Another key.
        bed.key();
        let err = find(&bed.settings, &bed.area(), &bed.staging, "w").unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("cannot be read with the suspend key")
                && text.contains("sealed with another key"),
            "{text}"
        );
        let mut out = Vec::new();
        let err = resume(&bed.settings, &bed.staging, "w", false, &mut out).unwrap_err();
        assert!(format!("{err:#}").contains("another key"), "{err:#}");
    }

    #[test]
    fn a_sealed_suspend_is_unsealed_restored_and_removed() {
        let bed = Bed::new();
        let path = bed.seal("g1", "w");
        let Some(Found::Sealed { file, key }) =
            find(&bed.settings, &bed.area(), &bed.staging, "w").unwrap()
        else {
            panic!("not found sealed");
        };
        // A failed restore keeps the sealed file and removes the copy.
        let calls = RefCell::new(Vec::new());
        let err = resume_sealed(
            &file,
            key.as_ref(),
            &bed.staging,
            "w",
            &mut fake_restore(&calls, true),
        )
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.starts_with(&format!(
                "resuming w from the sealed images {}, which are kept",
                path.display()
            )) && text.ends_with("CRIU said no"),
            "{text}"
        );
        assert!(path.is_file());
        let root = bed.staging.unsealing.join("g1");
        assert_eq!(*calls.borrow(), [(root.clone(), "g1".to_owned())]);
        assert!(!root.exists());
        // A stale copy of an interrupted resume is replaced.
        fs::create_dir_all(root.join("junk")).unwrap();
        let calls = RefCell::new(Vec::new());
        let (reports, removed) = resume_sealed(
            &file,
            key.as_ref(),
            &bed.staging,
            "w",
            &mut fake_restore(&calls, false),
        )
        .unwrap();
        removed.unwrap();
        assert_eq!(reports[0].pid, 4242);
        assert!(!path.exists(), "the sealed file is removed once resumed");
        assert!(!root.exists());
        assert_eq!(
            fs::read_dir(&bed.staging.unsealing).unwrap().count(),
            0,
            "nothing left in memory"
        );
        let mut out = Vec::new();
        print_resumed(&file, &reports, true, true, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["workloads"][0]["pid"], 4242);
        assert_eq!(v["sealed"], path.display().to_string());
        assert_eq!(v["sealed_removed"], true);
    }

    #[test]
    fn images_list_shows_sealed_generations_with_or_without_the_key() {
        let bed = Bed::new();
        commit(&bed.area(), "g1", "plain");
        bed.seal("g2", "w");
        let list = |json: bool| {
            let mut out = Vec::new();
            super::super::images_list_in(&bed.settings, &bed.staging, json, &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        let text = list(false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("g1  committed"), "{text}");
        assert!(
            lines[1].starts_with("g2  sealed     g2.age ")
                && lines[1].ends_with("6.1.0-40-amd64  w  committed"),
            "{text}"
        );
        let rows: serde_json::Value = serde_json::from_str(&list(true)).unwrap();
        assert_eq!(rows[1]["generation"], "g2");
        assert!(rows[1]["sealed"]
            .as_str()
            .unwrap()
            .ends_with("/sealed/g2.age"));
        assert_eq!(rows[1]["workloads"][0], "w");
        // show reads the manifest with the key; verify says when that happens.
        let mut out = Vec::new();
        super::super::images_show(&bed.settings, "g2", false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("generation g2: committed") && text.contains("  sealed in "),
            "{text}"
        );
        let err =
            super::super::images_verify(&bed.settings, "g2", false, &mut Vec::new()).unwrap_err();
        assert!(format!("{err:#}").contains("is sealed in"), "{err:#}");

        fs::remove_file(&bed.settings.suspend.key_file).unwrap();
        let text = list(false);
        assert!(
            text.lines()
                .nth(1)
                .unwrap()
                .ends_with("(the suspend key is needed to show its workloads)"),
            "{text}"
        );
        let rows: serde_json::Value = serde_json::from_str(&list(true)).unwrap();
        assert!(rows[1]["key_error"]
            .as_str()
            .unwrap()
            .contains("does not exist"));

        // rm waits for no suspend or resume: it refuses while one holds the lock...
        let held = SuspendLock::take(&bed.staging.lock).unwrap();
        let mut out = Vec::new();
        let err = super::super::images_rm_in(&bed.settings, &bed.staging, "g2", false, &mut out)
            .unwrap_err();
        assert!(is_lock_held(&err), "{err:#}");
        let text = format!("{err:#}");
        assert!(
            text.starts_with("removing generation g2: nothing was removed")
                && text.contains("another suspend or resume is running"),
            "{text}"
        );
        assert!(bed.sealed_dir().join("g2.age").exists());
        drop(held);
        // ...and then removes a sealed one as it does a plain one.
        super::super::images_rm_in(&bed.settings, &bed.staging, "g2", false, &mut out).unwrap();
        assert!(!bed.sealed_dir().join("g2.age").exists());
    }

    /// A seal that wrote `<gen>.age` into `dir` and then failed, as a failed sync of
    /// the directory would; with `stuck`, what it left is a directory, which no
    /// remove_file removes.
    fn failed_seal<'a>(
        dir: &'a Path,
        gen: &'a str,
        stuck: bool,
    ) -> impl FnMut() -> dumper::Result<PathBuf> + 'a {
        move || {
            let path = dir.join(format!("{gen}.age"));
            if stuck {
                fs::create_dir_all(path.join("in-the-way")).unwrap();
            } else {
                fs::write(&path, b"sealed").unwrap();
            }
            Err(dumper::Error::Io {
                action: "syncing directory",
                path: dir.to_owned(),
                source: std::io::Error::from_raw_os_error(nix::libc::EIO),
            })
        }
    }

    fn report() -> RestoreReport {
        RestoreReport {
            name: "w".into(),
            pid: 4242,
            restore_secs: 0.5,
            scope: None,
        }
    }

    #[test]
    fn a_failed_seal_leaves_no_sealed_file_once_the_workload_runs_again() {
        let bed = Bed::new();
        let stage = bed.stage();
        let dir = bed.sealed_dir();
        commit(&stage, "g1", "w");
        let calls = RefCell::new(Vec::new());
        let err = seal_or_resume_with(
            &bed.area(),
            &stage,
            &id("g1"),
            &dir,
            "w",
            &mut failed_seal(&dir, "g1", false),
            &mut fake_restore(&calls, false),
        )
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.starts_with(
                "sealing the images of w failed, so w was resumed from the copy in memory and \
                 keeps running; nothing was written to the area"
            ) && text.contains("syncing directory"),
            "{text}"
        );
        assert_eq!(calls.borrow().len(), 1);
        assert!(!dir.join("g1.age").exists());
        assert!(stage.list().unwrap().is_empty());

        // The file cannot be removed: the error says so, and how to remove it.
        commit(&stage, "g2", "w");
        let err = seal_or_resume_with(
            &bed.area(),
            &stage,
            &id("g2"),
            &dir,
            "w",
            &mut failed_seal(&dir, "g2", true),
            &mut fake_restore(&calls, false),
        )
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.starts_with("sealing the images of w failed, so w was resumed")
                && text.contains("syncing directory")
                && text.contains(&format!(
                    "w runs again, but its sealed images {} could NOT be removed: run \
                     `upgradectl images rm g2` NOW",
                    dir.join("g2.age").display()
                ))
                && text.contains("stale copy of the session"),
            "{text}"
        );

        // The restore fails too: the file stays with the staging copy (the workload is
        // not running), and the error says where the images are and what loses them.
        commit(&stage, "g3", "w");
        let err = seal_or_resume_with(
            &bed.area(),
            &stage,
            &id("g3"),
            &dir,
            "w",
            &mut failed_seal(&dir, "g3", false),
            &mut fake_restore(&calls, true),
        )
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("w is NOT running")
                && text.contains(&format!(
                    "its images are in {} on /run, in memory: they are LOST at the next \
                     reboot or kexec unless w is resumed before",
                    stage.generation_path(&id("g3")).display()
                ))
                && text.contains("upgradectl resume w"),
            "{text}"
        );
        assert!(dir.join("g3.age").is_file());
        assert_eq!(stage.list().unwrap(), [id("g3")]);
        // A resume takes the staging copy, and the file goes with it.
        let found = find(&bed.settings, &bed.area(), &bed.staging, "w")
            .unwrap()
            .unwrap();
        assert!(
            matches!(found, Found::Staged(_, ref g) if g == &id("g3")),
            "{found:?}"
        );
        let mut out = Vec::new();
        resume_found(
            &bed.area(),
            found,
            &bed.staging,
            "w",
            &mut fake_restore(&calls, false),
            &Progress::new(true),
            false,
            &mut out,
        )
        .unwrap();
        assert!(!dir.join("g3.age").exists());
        assert!(stage.list().unwrap().is_empty());
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("restored w from g3: PID 4242"), "{text}");
    }

    #[test]
    fn a_resumed_sealed_file_is_removed_or_the_error_says_to() {
        let bed = Bed::new();
        let path = bed.seal("g1", "w");
        // A restore that succeeds without marking the unsealed copy restored: the
        // file goes all the same, its manifest would say committed forever.
        let found = find(&bed.settings, &bed.area(), &bed.staging, "w").unwrap();
        let mut restore = |_: &Area, _: &GenerationId| Ok(vec![report()]);
        let mut out = Vec::new();
        resume_found(
            &bed.area(),
            found.unwrap(),
            &bed.staging,
            "w",
            &mut restore,
            &Progress::new(true),
            true,
            &mut out,
        )
        .unwrap();
        assert!(!path.exists());
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["sealed_removed"], true);

        // The file cannot be removed: what was restored, then the error that says to.
        let path = bed.seal("g2", "w");
        let found = find(&bed.settings, &bed.area(), &bed.staging, "w").unwrap();
        let mut restore = |_: &Area, _: &GenerationId| {
            fs::remove_file(&path).unwrap();
            fs::create_dir_all(path.join("in-the-way")).unwrap();
            Ok(vec![report()])
        };
        let mut out = Vec::new();
        let err = resume_found(
            &bed.area(),
            found.unwrap(),
            &bed.staging,
            "w",
            &mut restore,
            &Progress::new(false),
            false,
            &mut out,
        )
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.starts_with(&format!(
                "w runs again, but its sealed images {} could NOT be removed: run \
                 `upgradectl images rm g2` NOW",
                path.display()
            )) && text.contains("stale copy of the session"),
            "{text}"
        );
        let printed = String::from_utf8(out).unwrap();
        assert!(
            printed.starts_with("restored w from g2: PID 4242")
                && printed.contains("which could NOT be removed"),
            "{printed}"
        );
        fs::remove_dir_all(&path).unwrap();

        // The same after a resume from a staging copy whose seal had completed.
        commit(&bed.stage(), "g3", "w");
        let stuck = bed.sealed_dir().join("g3.age");
        fs::create_dir_all(stuck.join("in-the-way")).unwrap();
        let found = find(&bed.settings, &bed.area(), &bed.staging, "w").unwrap();
        let calls = RefCell::new(Vec::new());
        let mut out = Vec::new();
        let err = resume_found(
            &bed.area(),
            found.unwrap(),
            &bed.staging,
            "w",
            &mut fake_restore(&calls, false),
            &Progress::new(false),
            false,
            &mut out,
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("run `upgradectl images rm g3` NOW"),
            "{err:#}"
        );
        assert!(String::from_utf8(out)
            .unwrap()
            .starts_with("restored w from g3"));
        assert!(bed.stage().list().unwrap().is_empty());
    }

    #[test]
    fn a_second_suspend_or_resume_is_refused_while_one_runs() {
        use std::os::unix::fs::PermissionsExt;
        let bed = Bed::new();
        bed.key();
        let lock = &bed.staging.lock;
        let held = SuspendLock::take(lock).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(lock), 0o600);
        assert_eq!(mode(lock.parent().unwrap()), 0o700);
        let busy = format!(
            "another suspend or resume is running (lock {} held by PID {})",
            lock.display(),
            std::process::id()
        );
        let err = SuspendLock::take(lock).unwrap_err();
        assert!(format!("{err:#}").starts_with(&busy), "{err:#}");

        // What another suspend is writing is left alone: a generation being dumped
        // into the staging area, a file being sealed.
        let stage = bed.stage();
        let dumping = stage.root().join("generations/.tmp-g9");
        fs::create_dir(&dumping).unwrap();
        let sealing = bed.sealed_dir().join("g8.age.tmp");
        fs::write(&sealing, b"half").unwrap();
        let mut out = Vec::new();
        let err =
            suspend(&bed.settings, &bed.staging, "process:4242", false, &mut out).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.starts_with("nothing was stopped") && text.contains(&busy),
            "{text}"
        );
        let err = resume(&bed.settings, &bed.staging, "w", false, &mut out).unwrap_err();
        assert!(format!("{err:#}").starts_with(&busy), "{err:#}");
        assert!(dumping.is_dir() && sealing.is_file());
        assert!(out.is_empty());

        // Released when its holder ends.
        drop(held);
        let again = SuspendLock::take(lock).unwrap();
        drop(again);
        // A link where the lock should be is refused.
        fs::remove_file(lock).unwrap();
        std::os::unix::fs::symlink(bed.dir.path().join("elsewhere"), lock).unwrap();
        let err = SuspendLock::take(lock).unwrap_err();
        assert!(
            format!("{err:#}").starts_with("opening the suspend lock"),
            "{err:#}"
        );
        assert!(!bed.dir.path().join("elsewhere").exists());
    }

    #[test]
    fn tidying_the_staging_area_keeps_only_copies_that_are_nowhere_else() {
        let bed = Bed::new();
        let stage = bed.stage();
        let dir = bed.sealed_dir();
        commit(&stage, "g1", "w");
        commit(&stage, "g2", "w");
        bed.seal("g2", "w");
        commit(&stage, "g3", "w");
        stage
            .update(&id("g3"), |m| {
                m.state = GenerationState::Restored;
                for w in &mut m.workloads {
                    w.state = WorkloadState::Restored;
                }
            })
            .unwrap();
        fs::create_dir(stage.root().join("generations/.tmp-g5")).unwrap();
        fs::write(dir.join("g4.age.tmp"), b"half").unwrap();
        let held = SuspendLock::take(&bed.staging.lock).unwrap();
        tidy_staging(&held, &stage, &dir).unwrap();
        assert_eq!(stage.list().unwrap(), [id("g1")]);
        assert!(!stage.root().join("generations/.tmp-g5").exists());
        assert!(!dir.join("g4.age.tmp").exists());
        assert!(dir.join("g2.age").is_file());
    }

    #[test]
    fn images_list_and_the_pre_flight_show_what_waits_in_memory() {
        let bed = Bed::new();
        commit(&bed.area(), "g1", "plain");
        let stage = bed.stage();
        commit(&stage, "g2", "w");
        let list = |json: bool| {
            let mut out = Vec::new();
            super::super::images_list_in(&bed.settings, &bed.staging, json, &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        let text = list(false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[1].starts_with("g2  staged     6.1.0-40-amd64  ")
                && lines[1]
                    .ends_with("  w  (in memory: resume it or it is lost at the next reboot)"),
            "{text}"
        );
        let rows: serde_json::Value = serde_json::from_str(&list(true)).unwrap();
        assert_eq!(rows[1]["generation"], "g2");
        assert_eq!(
            rows[1]["staged"],
            stage.generation_path(&id("g2")).display().to_string()
        );
        assert_eq!(rows[1]["in_memory"], true);
        assert_eq!(rows[1]["state"], "committed");
        assert_eq!(
            staged_suspends(&bed.staging).unwrap(),
            [crate::preflight::StagedSuspend {
                generation: "g2".into(),
                path: stage.generation_path(&id("g2")),
                workloads: vec!["w".into()],
            }]
        );

        // Restored (its removal failed): listed as such, and no suspend any more.
        stage
            .update(&id("g2"), |m| {
                m.state = GenerationState::Restored;
                for w in &mut m.workloads {
                    w.state = WorkloadState::Restored;
                }
            })
            .unwrap();
        assert!(staged_suspends(&bed.staging).unwrap().is_empty());
        let text = list(false);
        assert!(text.ends_with("  w  (restored, in memory)\n"), "{text}");

        // No staging area: nothing, and nothing created.
        let none = Staging {
            sealing: bed.dir.path().join("none"),
            ..bed.staging.clone()
        };
        assert!(staged_suspends(&none).unwrap().is_empty());
        assert!(!none.sealing.exists());
    }

    #[test]
    fn a_generated_key_is_printed_and_never_replaced() {
        let bed = Bed::new();
        let path = &bed.settings.suspend.key_file;
        let configured = SuspendSettings {
            encrypt: false,
            key_file: path.clone(),
            ..Default::default()
        };
        let mut out = Vec::new();
        super::super::suspend_key_generate(path, Some(&configured), false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let key = SealKey::load(path).unwrap();
        assert!(
            text.contains(&format!("wrote a new suspend key to {}", path.display()))
                && text.contains(&format!("public key: {}", key.public_key()))
                && text.contains("set encrypt = true"),
            "{text}"
        );
        let mut out = Vec::new();
        let err = super::super::suspend_key_generate(path, None, true, &mut out).unwrap_err();
        assert!(format!("{err:#}").contains("exists already"), "{err:#}");
        assert_eq!(SealKey::load(path).unwrap().public_key(), key.public_key());
    }

    #[test]
    fn staging_outside_memory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let stage = dir.path().join("sealing");
        let on = FsType::of(dir.path()).unwrap();
        let result = open_staging(&stage, true);
        if on == FsType::TMPFS || on == FsType::RAMFS {
            result.unwrap();
        } else {
            let text = format!("{:#}", result.unwrap_err());
            assert!(text.contains("not in memory"), "{text}");
        }
        // Created 0700 either way.
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&stage).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn the_margin_rounds_up() {
        assert_eq!(with_margin(100, 20), 120);
        assert_eq!(with_margin(101, 20), 122);
        assert_eq!(with_margin(u64::MAX, 100), u64::MAX);
    }
}
