//! The persistent area on a temporary directory.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use dumper::area::{Area, GENERATIONS_DIR};
use dumper::manifest::{
    Checksum, GenerationId, GenerationState, ImageFile, ImageName, Manifest, SourceSystem,
    Workload, WorkloadKind, WorkloadName, WorkloadState, MANIFEST_FILE,
};
use dumper::Error;
use tempfile::TempDir;

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

fn id(s: &str) -> GenerationId {
    GenerationId::new(s).unwrap()
}

fn wname(s: &str) -> WorkloadName {
    WorkloadName::new(s).unwrap()
}

fn new_area() -> (TempDir, Area) {
    let dir = tempfile::tempdir().unwrap();
    let area = Area::open(dir.path()).unwrap();
    (dir, area)
}

fn source() -> SourceSystem {
    SourceSystem {
        kernel_release: "6.1.0-40-amd64".into(),
        proc_version: "Linux version 6.1.0-40-amd64 #1 SMP PREEMPT_DYNAMIC Debian 6.1.153-1".into(),
        kernel_config_checksum: Some(Checksum::of_bytes(b"config")),
        criu_version: "3.17.1".into(),
        glibc_version: "2.36".into(),
        cpu: [("vendor_id".to_string(), "GenuineIntel".to_string())].into(),
    }
}

fn manifest(gen: &str, created: u64, workloads: &[&str]) -> Manifest {
    let mut m = Manifest::new(id(gen), created, source());
    m.kernel_features = vec!["mem_dirty_track".into()];
    for (i, name) in workloads.iter().enumerate() {
        let mut w = Workload::new(wname(name), WorkloadKind::Tmux, 100 + i as u32);
        w.command_line = vec!["tmux".into(), "new".into()];
        m.workloads.push(w);
    }
    m
}

/// Images of a workload: (file name, contents).
const IMAGES_A: &[(&str, &[u8])] = &[
    ("core-100.img", b"core of 100"),
    ("inventory.img", b"inventory"),
    ("pages-1.img", b"pages pages pages"),
];
const IMAGES_B: &[(&str, &[u8])] = &[("core-101.img", b"core of 101"), ("empty.img", b"")];

fn write_images(dir: &Path, images: &[(&str, &[u8])]) {
    for (name, contents) in images {
        // Written 0644 the way a careless tool would: commit makes them 0600.
        fs::write(dir.join(name), contents).unwrap();
        fs::set_permissions(dir.join(name), fs::Permissions::from_mode(0o644)).unwrap();
    }
}

/// Commits generation `gen` with workloads "tmux:a" and "tmux:b".
fn commit_sample(area: &Area, gen: &str, created: u64) -> Manifest {
    let pending = area.begin(&id(gen)).unwrap();
    write_images(&pending.workload_dir(&wname("tmux:a")).unwrap(), IMAGES_A);
    write_images(&pending.workload_dir(&wname("tmux:b")).unwrap(), IMAGES_B);
    pending
        .commit(manifest(gen, created, &["tmux:a", "tmux:b"]))
        .unwrap()
}

fn gen_dir(area: &Area, gen: &str) -> PathBuf {
    area.generation_path(&id(gen))
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn open_creates_a_private_generations_directory() {
    let dir = tempfile::tempdir().unwrap();
    Area::open(dir.path()).unwrap();
    assert_eq!(mode(&dir.path().join(GENERATIONS_DIR)), 0o700);
    // Opening again is fine, and tightens a loosened generations directory.
    fs::set_permissions(
        dir.path().join(GENERATIONS_DIR),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let area = Area::open(dir.path()).unwrap();
    assert_eq!(mode(&dir.path().join(GENERATIONS_DIR)), 0o700);
    assert_eq!(area.root(), dir.path());
    assert!(area.list().unwrap().is_empty());
}

#[test]
fn open_refuses_a_root_others_may_write() {
    for bad in [0o777, 0o770, 0o702, 0o1777] {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(bad)).unwrap();
        let err = Area::open(dir.path()).unwrap_err();
        assert!(
            matches!(&err, Error::AreaInsecureMode { mode, .. } if *mode == bad),
            "{bad:o}: {err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
        assert!(
            msg.contains(&format!("{bad:04o}")) && msg.contains("chmod 0700"),
            "{msg}"
        );
        // Nothing was created in a root that was refused.
        assert!(!dir.path().join(GENERATIONS_DIR).exists());
    }
    // Readable by others is fine for the root: the images inside are 0600.
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    Area::open(dir.path()).unwrap();
}

#[test]
fn open_refuses_a_generations_directory_others_may_write() {
    let dir = tempfile::tempdir().unwrap();
    let gens = dir.path().join(GENERATIONS_DIR);
    fs::create_dir(&gens).unwrap();
    fs::set_permissions(&gens, fs::Permissions::from_mode(0o777)).unwrap();
    let err = Area::open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::AreaInsecureMode { .. }), "{err:?}");
}

#[test]
fn open_refuses_a_root_owned_by_someone_else() {
    let euid = nix::unistd::geteuid().as_raw();
    let dir = tempfile::tempdir().unwrap();
    let root = if euid == 0 {
        // As root: give the directory away.
        std::os::unix::fs::chown(dir.path(), Some(65534), None).unwrap();
        dir.path().to_path_buf()
    } else {
        // Unprivileged: "/" belongs to root, and is checked before anything is created.
        PathBuf::from("/")
    };
    let err = Area::open(&root).unwrap_err();
    assert!(
        matches!(&err, Error::AreaWrongOwner { euid: e, .. } if *e == euid),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&root.display().to_string()) && msg.contains("chown"),
        "{msg}"
    );
}

#[test]
fn open_refuses_a_missing_root_or_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = Area::open(dir.path().join("nope")).unwrap_err();
    assert!(matches!(err, Error::AreaMissing { .. }), "{err:?}");
    assert!(err.to_string().contains("0700"), "{err}");

    let file = dir.path().join("file");
    fs::write(&file, b"").unwrap();
    let err = Area::open(&file).unwrap_err();
    assert!(matches!(err, Error::NotADirectory { .. }), "{err:?}");

    // generations/ must be a real directory, not a link to somewhere else.
    let other = tempfile::tempdir().unwrap();
    symlink(other.path(), dir.path().join(GENERATIONS_DIR)).unwrap();
    let err = Area::open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::NotADirectory { .. }), "{err:?}");
}

#[test]
fn commit_hashes_syncs_and_publishes_a_generation() {
    let (_dir, area) = new_area();
    let pending = area.begin(&id("g1")).unwrap();
    assert_eq!(pending.id().as_str(), "g1");
    assert!(pending.path().ends_with("generations/.tmp-g1"));
    assert_eq!(mode(pending.path()), 0o700);
    // Not listed while pending.
    assert!(area.list().unwrap().is_empty());

    let wa = pending.workload_dir(&wname("tmux:a")).unwrap();
    assert_eq!(mode(&wa), 0o700);
    assert_eq!(pending.workload_dir(&wname("tmux:a")).unwrap(), wa);
    write_images(&wa, IMAGES_A);
    write_images(&pending.workload_dir(&wname("tmux:b")).unwrap(), IMAGES_B);
    let pending_path = pending.path().to_path_buf();

    let written = pending
        .commit(manifest("g1", 1_700_000_000, &["tmux:a", "tmux:b"]))
        .unwrap();
    assert!(!pending_path.exists());
    assert_eq!(area.list().unwrap(), [id("g1")]);

    assert_eq!(written.state, GenerationState::Committed);
    let a = &written.workloads[0];
    assert_eq!(a.state, WorkloadState::Committed);
    assert_eq!(a.images.len(), IMAGES_A.len());
    for (image, (name, contents)) in a.images.iter().zip(IMAGES_A) {
        assert_eq!(image.name.as_str(), *name);
        assert_eq!(image.size, contents.len() as u64);
        assert_eq!(image.checksum, Checksum::of_bytes(contents));
    }
    assert_eq!(written.workloads[1].images[1].size, 0);

    assert_eq!(area.load(&id("g1")).unwrap(), written);
    assert_eq!(area.verify(&id("g1")).unwrap(), written);

    let g = gen_dir(&area, "g1");
    assert_eq!(entries(&g), ["manifest.json", "tmux:a", "tmux:b"]);
    assert_eq!(mode(&g), 0o700);
    assert_eq!(mode(&g.join(MANIFEST_FILE)), 0o600);
    for w in ["tmux:a", "tmux:b"] {
        assert_eq!(mode(&g.join(w)), 0o700);
        for f in entries(&g.join(w)) {
            assert_eq!(mode(&g.join(w).join(&f)), 0o600, "{w}/{f}");
        }
    }
}

#[test]
fn commit_checks_images_the_caller_listed() {
    let (_dir, area) = new_area();
    let listed = |name: &str, contents: &[u8]| ImageFile {
        name: ImageName::new(name).unwrap(),
        size: contents.len() as u64,
        checksum: Checksum::of_bytes(contents),
    };

    // Right list: committed as given.
    let pending = area.begin(&id("ok")).unwrap();
    write_images(&pending.workload_dir(&wname("w")).unwrap(), IMAGES_B);
    let mut m = manifest("ok", 1, &["w"]);
    m.workloads[0].images = IMAGES_B.iter().map(|(n, c)| listed(n, c)).collect();
    assert_eq!(
        pending.commit(m.clone()).unwrap().workloads[0].images,
        m.workloads[0].images
    );

    // Each kind of disagreement is refused and nothing is committed.
    type Case = (&'static str, fn(&mut Vec<ImageFile>), fn(&Error) -> bool);
    let cases: [Case; 4] = [
        (
            "checksum",
            |l| l[0].checksum = Checksum::of_bytes(b"other"),
            |e| matches!(e, Error::ImageChecksumMismatch { path, .. } if path.ends_with("w/core-101.img")),
        ),
        (
            "size",
            |l| l[0].size += 1,
            |e| {
                matches!(
                    e,
                    Error::ImageSizeMismatch {
                        expected: 12,
                        actual: 11,
                        ..
                    }
                )
            },
        ),
        (
            "missing",
            |l| {
                l.push(ImageFile {
                    name: ImageName::new("gone.img").unwrap(),
                    size: 0,
                    checksum: Checksum::of_bytes(b""),
                })
            },
            |e| matches!(e, Error::ImageMissing { path } if path.ends_with("w/gone.img")),
        ),
        (
            "extra",
            |l| {
                l.pop();
            },
            |e| matches!(e, Error::UnexpectedEntry { path, .. } if path.ends_with("w/empty.img")),
        ),
    ];
    for (what, change, expected) in cases {
        let gen = format!("bad-{what}");
        let pending = area.begin(&id(&gen)).unwrap();
        let pending_path = pending.path().to_path_buf();
        write_images(&pending.workload_dir(&wname("w")).unwrap(), IMAGES_B);
        let mut m = manifest(&gen, 1, &["w"]);
        m.workloads[0].images = IMAGES_B.iter().map(|(n, c)| listed(n, c)).collect();
        change(&mut m.workloads[0].images);
        let err = pending.commit(m).unwrap_err();
        assert!(expected(&err), "{what}: {err:?}");
        // The images stay where they were: they may be the only copy.
        assert!(pending_path.join("w").exists(), "{what}");
    }
    assert_eq!(area.list().unwrap(), [id("ok")]);
}

#[test]
fn commit_refuses_strays_links_and_a_foreign_manifest() {
    let (_dir, area) = new_area();

    let pending = area.begin(&id("stray")).unwrap();
    write_images(&pending.workload_dir(&wname("w")).unwrap(), IMAGES_B);
    fs::create_dir(pending.path().join("not-a-workload")).unwrap();
    let err = pending.commit(manifest("stray", 1, &["w"])).unwrap_err();
    assert!(
        matches!(&err, Error::UnexpectedEntry { path, .. } if path.ends_with("not-a-workload")),
        "{err:?}"
    );

    let pending = area.begin(&id("link")).unwrap();
    let w = pending.workload_dir(&wname("w")).unwrap();
    symlink("/etc/passwd", w.join("core-1.img")).unwrap();
    let err = pending.commit(manifest("link", 1, &["w"])).unwrap_err();
    assert!(matches!(err, Error::NotARegularFile { .. }), "{err:?}");

    let pending = area.begin(&id("subdir")).unwrap();
    let w = pending.workload_dir(&wname("w")).unwrap();
    fs::create_dir(w.join("nested")).unwrap();
    let err = pending.commit(manifest("subdir", 1, &["w"])).unwrap_err();
    assert!(matches!(err, Error::NotARegularFile { .. }), "{err:?}");

    let pending = area.begin(&id("mine")).unwrap();
    let err = pending.commit(manifest("theirs", 1, &[])).unwrap_err();
    assert!(
        matches!(&err, Error::ManifestInvalid { problem, .. } if problem.field == "generation"),
        "{err:?}"
    );

    // A workload listed with images but without a directory.
    let pending = area.begin(&id("nodir")).unwrap();
    let mut m = manifest("nodir", 1, &["w"]);
    m.workloads[0].images.push(ImageFile {
        name: ImageName::new("core-1.img").unwrap(),
        size: 0,
        checksum: Checksum::of_bytes(b""),
    });
    let err = pending.commit(m).unwrap_err();
    assert!(matches!(err, Error::WorkloadDirMissing { .. }), "{err:?}");

    assert!(area.list().unwrap().is_empty());
}

#[test]
fn a_failed_workload_without_images_commits() {
    let (_dir, area) = new_area();
    let pending = area.begin(&id("g")).unwrap();
    write_images(&pending.workload_dir(&wname("ok")).unwrap(), IMAGES_A);
    let mut m = manifest("g", 1, &["ok", "broken"]);
    m.workloads[1].state = WorkloadState::Failed;
    let m = pending.commit(m).unwrap();
    assert_eq!(m.workloads[0].state, WorkloadState::Committed);
    assert_eq!(m.workloads[1].state, WorkloadState::Failed);
    assert!(m.workloads[1].images.is_empty());
    area.verify(&id("g")).unwrap();
}

#[test]
fn begin_refuses_an_existing_or_leftover_generation() {
    let (_dir, area) = new_area();
    commit_sample(&area, "g1", 1);
    let err = area.begin(&id("g1")).unwrap_err();
    assert!(matches!(err, Error::GenerationExists { .. }), "{err:?}");

    let _pending = area.begin(&id("g2")).unwrap();
    let err = area.begin(&id("g2")).unwrap_err();
    assert!(matches!(err, Error::PendingExists { .. }), "{err:?}");
    assert!(err.to_string().contains(".tmp-g2"), "{err}");
}

#[test]
fn an_interrupted_dump_is_never_offered_and_is_cleaned_up() {
    let (_dir, area) = new_area();
    commit_sample(&area, "done", 1);
    {
        // A dump that dies before commit: the pending directory stays behind.
        let pending = area.begin(&id("interrupted")).unwrap();
        write_images(&pending.workload_dir(&wname("tmux:a")).unwrap(), IMAGES_A);
        fs::write(pending.path().join(".manifest.json.tmp"), b"{\"half").unwrap();
    }
    assert_eq!(area.list().unwrap(), [id("done")]);
    let gens = area.root().join(GENERATIONS_DIR);
    assert!(gens.join(".tmp-interrupted").exists());
    // Leftovers of an interrupted removal and of an interrupted manifest update.
    fs::create_dir(gens.join(".del-old")).unwrap();
    fs::write(gen_dir(&area, "done").join(".manifest.json.tmp"), b"x").unwrap();
    let err = area.verify(&id("done")).unwrap_err();
    assert!(matches!(err, Error::UnexpectedEntry { .. }), "{err:?}");

    let removed = area.cleanup_incomplete().unwrap();
    assert_eq!(
        removed,
        [
            gens.join(".del-old"),
            gens.join(".tmp-interrupted"),
            gens.join("done/.manifest.json.tmp"),
        ]
    );
    assert_eq!(entries(&gens), ["done"]);
    area.verify(&id("done")).unwrap();
    assert!(area.cleanup_incomplete().unwrap().is_empty());

    // The id can be used again.
    commit_sample(&area, "interrupted", 2);
}

#[test]
fn a_pending_generation_in_use_is_not_cleaned_up() {
    let (_dir, area) = new_area();
    let gens = area.root().join(GENERATIONS_DIR);
    // Another writer (here: this process, through another open file) is dumping.
    let pending = area.begin(&id("busy")).unwrap();
    write_images(&pending.workload_dir(&wname("tmux:a")).unwrap(), IMAGES_A);
    assert!(area.cleanup_incomplete().unwrap().is_empty());
    assert!(gens.join(".tmp-busy").is_dir());

    // A hold keeps it locked after the pending generation itself is gone (a commit
    // that failed, while the stopped workload is restored from its images).
    let hold = pending.hold();
    drop(pending);
    assert!(area.cleanup_incomplete().unwrap().is_empty());
    assert!(gens.join(".tmp-busy").is_dir());

    // Nobody holds it any more, as after a crash: it goes.
    drop(hold);
    assert_eq!(area.cleanup_incomplete().unwrap(), [gens.join(".tmp-busy")]);
}

#[test]
fn abandon_removes_a_pending_generation() {
    let (_dir, area) = new_area();
    let pending = area.begin(&id("g")).unwrap();
    write_images(&pending.workload_dir(&wname("w")).unwrap(), IMAGES_A);
    let path = pending.path().to_path_buf();
    pending.abandon().unwrap();
    assert!(!path.exists());
    assert!(area.list().unwrap().is_empty());
}

#[test]
fn verify_names_the_first_damaged_file() {
    let (_dir, area) = new_area();
    commit_sample(&area, "g", 1);
    let g = gen_dir(&area, "g");
    let pages = g.join("tmux:a/pages-1.img");

    // One byte changed, same size.
    let mut bytes = fs::read(&pages).unwrap();
    bytes[3] ^= 1;
    fs::write(&pages, &bytes).unwrap();
    let err = area.verify(&id("g")).unwrap_err();
    assert!(
        matches!(&err, Error::ImageChecksumMismatch { path, .. } if *path == pages),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&pages.display().to_string()) && msg.contains("discard"),
        "{msg}"
    );
    bytes[3] ^= 1;
    fs::write(&pages, &bytes).unwrap();
    area.verify(&id("g")).unwrap();

    // Truncated.
    fs::write(&pages, &bytes[..4]).unwrap();
    let err = area.verify(&id("g")).unwrap_err();
    assert!(
        matches!(&err, Error::ImageSizeMismatch { path, expected: 17, actual: 4 } if *path == pages),
        "{err:?}"
    );
    fs::write(&pages, &bytes).unwrap();

    // Replaced by a link to the same contents elsewhere.
    let elsewhere = area.root().join("copy");
    fs::write(&elsewhere, &bytes).unwrap();
    fs::remove_file(&pages).unwrap();
    symlink(&elsewhere, &pages).unwrap();
    let err = area.verify(&id("g")).unwrap_err();
    assert!(
        matches!(&err, Error::NotARegularFile { path } if *path == pages),
        "{err:?}"
    );
    fs::remove_file(&pages).unwrap();

    // Missing.
    let err = area.verify(&id("g")).unwrap_err();
    assert!(
        matches!(&err, Error::ImageMissing { path } if *path == pages),
        "{err:?}"
    );
    fs::write(&pages, &bytes).unwrap();
    area.verify(&id("g")).unwrap();

    // An extra file in a workload directory.
    let extra = g.join("tmux:b/planted.img");
    fs::write(&extra, b"").unwrap();
    let err = area.verify(&id("g")).unwrap_err();
    assert!(
        matches!(&err, Error::UnexpectedEntry { path, .. } if *path == extra),
        "{err:?}"
    );
    fs::remove_file(&extra).unwrap();

    // An extra entry next to the workloads.
    let extra = g.join("tmux:c");
    fs::create_dir(&extra).unwrap();
    let err = area.verify(&id("g")).unwrap_err();
    assert!(
        matches!(&err, Error::UnexpectedEntry { path, .. } if *path == extra),
        "{err:?}"
    );
    fs::remove_dir(&extra).unwrap();

    // A whole workload directory gone.
    fs::rename(g.join("tmux:b"), area.root().join("moved")).unwrap();
    let err = area.verify(&id("g")).unwrap_err();
    assert!(matches!(err, Error::WorkloadDirMissing { .. }), "{err:?}");
    fs::rename(area.root().join("moved"), g.join("tmux:b")).unwrap();
    area.verify(&id("g")).unwrap();
}

#[test]
fn missing_size_errors_come_before_hashing() {
    // The damaged image of the first workload is the same size; the second workload
    // misses a file. The missing file is reported: listings and sizes come first.
    let (_dir, area) = new_area();
    commit_sample(&area, "g", 1);
    let g = gen_dir(&area, "g");
    fs::write(g.join("tmux:a/core-100.img"), b"CORE OF 100").unwrap();
    fs::remove_file(g.join("tmux:b/empty.img")).unwrap();
    let err = area.verify(&id("g")).unwrap_err();
    assert!(matches!(err, Error::ImageMissing { .. }), "{err:?}");
}

#[test]
fn load_refuses_damaged_or_moved_generations() {
    let (_dir, area) = new_area();
    commit_sample(&area, "g", 1);
    let g = gen_dir(&area, "g");

    // Copied under another name by hand.
    let copy = gen_dir(&area, "copy");
    fs::create_dir(&copy).unwrap();
    fs::copy(g.join(MANIFEST_FILE), copy.join(MANIFEST_FILE)).unwrap();
    let err = area.load(&id("copy")).unwrap_err();
    assert!(
        matches!(&err, Error::GenerationMismatch { found, .. } if found == "\"g\""),
        "{err:?}"
    );

    // The manifest replaced by a link.
    fs::remove_file(copy.join(MANIFEST_FILE)).unwrap();
    symlink(g.join(MANIFEST_FILE), copy.join(MANIFEST_FILE)).unwrap();
    let err = area.load(&id("copy")).unwrap_err();
    assert!(matches!(err, Error::NotARegularFile { .. }), "{err:?}");

    // No manifest.
    fs::remove_file(copy.join(MANIFEST_FILE)).unwrap();
    let err = area.load(&id("copy")).unwrap_err();
    assert!(matches!(err, Error::ManifestMissing { .. }), "{err:?}");

    let err = area.load(&id("nope")).unwrap_err();
    assert!(matches!(err, Error::GenerationNotFound { .. }), "{err:?}");

    // A damaged manifest is reported with the manifest's error.
    let text = fs::read_to_string(g.join(MANIFEST_FILE)).unwrap();
    fs::write(g.join(MANIFEST_FILE), text.replace("tmux:a", "tmux:x")).unwrap();
    let err = area.load(&id("g")).unwrap_err();
    assert!(matches!(err, Error::ManifestChecksum { .. }), "{err:?}");
}

#[test]
fn list_skips_strays() {
    let (_dir, area) = new_area();
    commit_sample(&area, "b", 1);
    commit_sample(&area, "a", 2);
    let gens = area.root().join(GENERATIONS_DIR);
    fs::write(gens.join("a-file"), b"").unwrap();
    fs::create_dir(gens.join("not valid")).unwrap();
    fs::create_dir(gens.join(".hidden")).unwrap();
    symlink(gen_dir(&area, "a"), gens.join("link")).unwrap();
    let _pending = area.begin(&id("c")).unwrap();
    assert_eq!(area.list().unwrap(), [id("a"), id("b")]);
}

#[test]
fn remove_deletes_a_generation() {
    let (_dir, area) = new_area();
    commit_sample(&area, "g1", 1);
    commit_sample(&area, "g2", 2);
    area.remove(&id("g1")).unwrap();
    assert_eq!(area.list().unwrap(), [id("g2")]);
    assert_eq!(entries(&area.root().join(GENERATIONS_DIR)), ["g2"]);
    let err = area.remove(&id("g1")).unwrap_err();
    assert!(matches!(err, Error::GenerationNotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("upgradectl images list"), "{err}");
}

#[test]
fn retain_keeps_the_newest_and_those_in_use() {
    let (_dir, area) = new_area();
    // Ids do not sort in age order: age is the manifest's creation time.
    commit_sample(&area, "d-oldest", 100);
    commit_sample(&area, "c-older", 200);
    commit_sample(&area, "b-newer", 300);
    commit_sample(&area, "a-newest", 400);

    let removed = area.retain(2, &[id("d-oldest")]).unwrap();
    assert_eq!(removed, [id("c-older")]);
    assert_eq!(
        area.list().unwrap(),
        [id("a-newest"), id("b-newer"), id("d-oldest")]
    );

    // Nothing to do.
    assert!(area.retain(5, &[]).unwrap().is_empty());

    let removed = area.retain(0, &[id("b-newer")]).unwrap();
    assert_eq!(removed, [id("d-oldest"), id("a-newest")]);
    assert_eq!(area.list().unwrap(), [id("b-newer")]);
}

#[test]
fn retain_keeps_a_generation_it_cannot_read() {
    let (_dir, area) = new_area();
    commit_sample(&area, "old", 1);
    commit_sample(&area, "new", 2);
    // As a newer upgraded might have written it.
    let path = gen_dir(&area, "old").join(MANIFEST_FILE);
    let text = fs::read_to_string(&path).unwrap();
    let newer = text.replace("\"minor\": 1", "\"minor\": 9");
    assert_ne!(newer, text);
    fs::write(&path, newer).unwrap();
    assert!(area.retain(0, &[]).unwrap() == [id("new")]);
    assert_eq!(area.list().unwrap(), [id("old")]);
}

#[test]
fn update_changes_states_only() {
    let (_dir, area) = new_area();
    commit_sample(&area, "g", 1);
    let updated = area
        .update(&id("g"), |m| {
            m.state = GenerationState::Restored;
            m.workloads[1].state = WorkloadState::Failed;
        })
        .unwrap();
    let loaded = area.load(&id("g")).unwrap();
    assert_eq!(loaded, updated);
    assert_eq!(loaded.state, GenerationState::Restored);
    assert_eq!(loaded.workloads[1].state, WorkloadState::Failed);
    assert_eq!(mode(&gen_dir(&area, "g").join(MANIFEST_FILE)), 0o600);
    area.verify(&id("g")).unwrap();

    let err = area
        .update(&id("g"), |m| m.workloads[0].images.clear())
        .unwrap_err();
    assert!(
        matches!(&err, Error::ManifestImmutable { field, .. } if field.starts_with("workloads[0]")),
        "{err:?}"
    );
    let err = area
        .update(&id("g"), |m| m.source.kernel_release = "6.12.0".into())
        .unwrap_err();
    assert!(matches!(err, Error::ManifestImmutable { .. }), "{err:?}");
    assert_eq!(area.load(&id("g")).unwrap(), loaded);
}

#[test]
fn large_images_are_hashed_as_streams() {
    // Bigger than any single read buffer, and not a multiple of one.
    let contents: Vec<u8> = (0..3 * 1024 * 1024 + 7)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let (_dir, area) = new_area();
    let pending = area.begin(&id("big")).unwrap();
    let w = pending.workload_dir(&wname("w")).unwrap();
    fs::write(w.join("pages-1.img"), &contents).unwrap();
    let m = pending.commit(manifest("big", 1, &["w"])).unwrap();
    assert_eq!(
        m.workloads[0].images[0].checksum,
        Checksum::of_bytes(&contents)
    );
    assert_eq!(m.workloads[0].images[0].size, contents.len() as u64);
    let (sum, size) = Checksum::of_file(&gen_dir(&area, "big").join("w/pages-1.img")).unwrap();
    assert_eq!(
        (sum, size),
        (Checksum::of_bytes(&contents), contents.len() as u64)
    );
    area.verify(&id("big")).unwrap();
}

#[test]
fn api_names_are_validated() {
    assert!(GenerationId::new("../escape").is_err());
    assert!(WorkloadName::new("a/b").is_err());
    let err: Error = GenerationId::new("..").unwrap_err().into();
    assert!(matches!(err, Error::InvalidName(_)), "{err:?}");
    assert!(err.to_string().contains("generation id"), "{err}");
}

/// The final dump of a workload pre-dumped twice, laid out as CRIU leaves it.
const FINAL: &[(&str, &[u8])] = &[
    ("core-100.img", b"core of 100"),
    ("inventory.img", b"inventory 3"),
    ("pages-1.img", b"dirtied last"),
];
const PRE_1: &[(&str, &[u8])] = &[("inventory.img", b"inventory 1"), ("pages-1.img", b"all")];
const PRE_2: &[(&str, &[u8])] = &[("inventory.img", b"inventory 2"), ("pages-1.img", b"some")];

fn write_pre_dumped(wdir: &Path) {
    write_images(wdir, FINAL);
    for (dir, images) in [("pre-1", PRE_1), ("pre-2", PRE_2)] {
        // 0755, as a careless tool would: commit makes it 0700.
        fs::create_dir(wdir.join(dir)).unwrap();
        fs::set_permissions(wdir.join(dir), fs::Permissions::from_mode(0o755)).unwrap();
        write_images(&wdir.join(dir), images);
    }
    symlink("pre-2", wdir.join("parent")).unwrap();
    symlink("../pre-1", wdir.join("pre-2/parent")).unwrap();
}

/// Commits generation `gen` with one pre-dumped workload "w".
fn commit_pre_dumped(area: &Area, gen: &str) -> Manifest {
    let pending = area.begin(&id(gen)).unwrap();
    write_pre_dumped(&pending.workload_dir(&wname("w")).unwrap());
    pending.commit(manifest(gen, 1, &["w"])).unwrap()
}

#[test]
fn commit_records_pre_dump_directories_and_links() {
    let (_dir, area) = new_area();
    let m = commit_pre_dumped(&area, "g");
    let w = &m.workloads[0];
    let names: Vec<&str> = w.images.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "core-100.img",
            "inventory.img",
            "pages-1.img",
            "pre-1/inventory.img",
            "pre-1/pages-1.img",
            "pre-2/inventory.img",
            "pre-2/pages-1.img",
        ]
    );
    let pages = &w.images[4];
    assert_eq!(pages.checksum, Checksum::of_bytes(b"all"));
    assert_eq!(pages.size, 3);
    let links: Vec<(&str, &str)> = w
        .links
        .iter()
        .map(|l| (l.name.as_str(), l.target.as_str()))
        .collect();
    assert_eq!(links, [("parent", "pre-2"), ("pre-2/parent", "../pre-1")]);
    assert_eq!(area.verify(&id("g")).unwrap(), m);
    assert_eq!(area.load(&id("g")).unwrap(), m);

    let wdir = gen_dir(&area, "g").join("w");
    assert_eq!(
        entries(&wdir),
        [
            "core-100.img",
            "inventory.img",
            "pages-1.img",
            "parent",
            "pre-1",
            "pre-2"
        ]
    );
    for dir in ["pre-1", "pre-2"] {
        assert_eq!(mode(&wdir.join(dir)), 0o700, "{dir}");
        assert_eq!(mode(&wdir.join(dir).join("pages-1.img")), 0o600, "{dir}");
    }
    // The chain a restore follows survived the rename of the generation.
    assert_eq!(
        fs::read(wdir.join("parent/parent/pages-1.img")).unwrap(),
        b"all"
    );

    area.remove(&id("g")).unwrap();
    assert!(area.list().unwrap().is_empty());
}

#[test]
fn commit_refuses_a_bad_pre_dump_layout() {
    let (dir, area) = new_area();
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    type Change = fn(&Path, &Path);
    let cases: [(&str, Change, &str, &str); 10] = [
        (
            "absolute",
            |w, out| {
                fs::remove_file(w.join("parent")).unwrap();
                symlink(out, w.join("parent")).unwrap();
            },
            "w/parent",
            "of its own workload",
        ),
        (
            "up-and-out",
            |w, _| {
                fs::remove_file(w.join("pre-2/parent")).unwrap();
                symlink("../../x", w.join("pre-2/parent")).unwrap();
            },
            "w/pre-2/parent",
            "of its own workload",
        ),
        (
            "missing-target",
            |w, _| {
                fs::remove_file(w.join("parent")).unwrap();
                symlink("pre-3", w.join("parent")).unwrap();
            },
            "w/parent",
            "points to pre-3, which is not a pre-dump directory",
        ),
        (
            "broken-chain",
            |w, _| fs::remove_file(w.join("pre-2/parent")).unwrap(),
            "w/pre-2/inventory.img",
            "no \"parent\" link to ../pre-1",
        ),
        (
            "link-in-pre",
            |w, out| symlink(out.join("passwd"), w.join("pre-1/core.img")).unwrap(),
            "w/pre-1/core.img",
            "not a regular file",
        ),
        (
            "other-link",
            |w, _| symlink("pre-1", w.join("pre-3")).unwrap(),
            "w/pre-3",
            "not a regular file",
        ),
        (
            "nested-dir",
            |w, _| fs::create_dir(w.join("pre-1/pre-1")).unwrap(),
            "w/pre-1/pre-1",
            "not a regular file",
        ),
        (
            "odd-dir",
            |w, _| fs::create_dir(w.join("pre-01")).unwrap(),
            "w/pre-01",
            "not a regular file",
        ),
        (
            "file-named-like-a-link",
            |w, _| fs::write(w.join("pre-1/parent"), b"").unwrap(),
            "w/pre-1/parent",
            "CRIU's parent links",
        ),
        (
            "gap",
            |w, _| {
                fs::rename(w.join("pre-2"), w.join("pre-3")).unwrap();
                fs::remove_file(w.join("parent")).unwrap();
                symlink("pre-3", w.join("parent")).unwrap();
            },
            "w/pre-3/parent",
            "must point to the pre-dump before pre-3, ../pre-2",
        ),
    ];
    for (what, change, at, why) in cases {
        let pending = area.begin(&id(what)).unwrap();
        let pending_path = pending.path().to_path_buf();
        let w = pending.workload_dir(&wname("w")).unwrap();
        write_pre_dumped(&w);
        change(&w, &outside);
        let err = pending.commit(manifest(what, 1, &["w"])).unwrap_err();
        let path = match &err {
            Error::UnexpectedEntry { path, .. } | Error::NotARegularFile { path } => path,
            other => panic!("{what}: {other:?}"),
        };
        assert!(path.ends_with(at), "{what}: {err}");
        assert!(err.to_string().contains(why), "{what}: {err}");
        assert!(pending_path.join("w").exists(), "{what}");
    }
    assert!(area.list().unwrap().is_empty());
    assert!(entries(&outside).is_empty());
}

#[test]
fn commit_checks_links_the_caller_listed() {
    let (_dir, area) = new_area();
    let listed = commit_pre_dumped(&area, "model").workloads[0].clone();

    let pending = area.begin(&id("ok")).unwrap();
    write_pre_dumped(&pending.workload_dir(&wname("w")).unwrap());
    let mut m = manifest("ok", 1, &["w"]);
    m.workloads[0].images = listed.images.clone();
    m.workloads[0].links = listed.links.clone();
    assert_eq!(pending.commit(m).unwrap().workloads[0].links, listed.links);

    // A list that leaves a link out is refused before anything is hashed.
    let pending = area.begin(&id("unlinked")).unwrap();
    write_pre_dumped(&pending.workload_dir(&wname("w")).unwrap());
    let mut m = manifest("unlinked", 1, &["w"]);
    m.workloads[0].images = listed.images.clone();
    m.workloads[0].links = listed.links[..1].to_vec();
    let err = pending.commit(m).unwrap_err();
    assert!(
        matches!(&err, Error::ManifestInvalid { problem, .. }
            if problem.field == "workloads[0].images[5].name"
                && problem.reason.contains("no \"parent\" link")),
        "{err:?}"
    );

    // A list of the final dump alone: the pre-dumps on disk are not in it.
    let pending = area.begin(&id("final-only")).unwrap();
    write_pre_dumped(&pending.workload_dir(&wname("w")).unwrap());
    let mut m = manifest("final-only", 1, &["w"]);
    m.workloads[0].images = listed.images[..3].to_vec();
    let err = pending.commit(m).unwrap_err();
    assert!(
        matches!(&err, Error::UnexpectedEntry { path, .. } if path.ends_with("w/pre-1/inventory.img")),
        "{err:?}"
    );
    assert_eq!(area.list().unwrap(), [id("model"), id("ok")]);
}

#[test]
fn verify_checks_pre_dump_directories_and_links() {
    let (dir, area) = new_area();
    commit_pre_dumped(&area, "g");
    let w = gen_dir(&area, "g").join("w");
    let verify = || area.verify(&id("g"));

    // A link retargeted, replaced by a file, removed.
    fs::remove_file(w.join("parent")).unwrap();
    symlink("pre-1", w.join("parent")).unwrap();
    let err = verify().unwrap_err();
    assert!(
        matches!(&err, Error::LinkMismatch { path, expected, found }
            if *path == w.join("parent") && expected == "pre-2" && found.contains("\"pre-1\"")),
        "{err:?}"
    );
    fs::remove_file(w.join("parent")).unwrap();
    fs::write(w.join("parent"), b"").unwrap();
    let err = verify().unwrap_err();
    assert!(
        matches!(&err, Error::LinkMismatch { found, .. } if found == "not a symbolic link"),
        "{err:?}"
    );
    fs::remove_file(w.join("parent")).unwrap();
    let err = verify().unwrap_err();
    assert!(
        matches!(&err, Error::LinkMismatch { found, .. } if found == "missing"),
        "{err:?}"
    );
    symlink("pre-2", w.join("parent")).unwrap();
    verify().unwrap();

    // A damaged page of a pre-dump.
    let pages = w.join("pre-1/pages-1.img");
    fs::write(&pages, b"ALL").unwrap();
    let err = verify().unwrap_err();
    assert!(
        matches!(&err, Error::ImageChecksumMismatch { path, .. } if *path == pages),
        "{err:?}"
    );
    fs::write(&pages, b"all").unwrap();

    // Extra entries: a file in a pre-dump, a link, a pre-dump directory.
    for (extra, make) in [
        (
            "pre-2/planted.img",
            (|p: &Path| fs::write(p, b"").unwrap()) as fn(&Path),
        ),
        ("pre-1/parent", |p: &Path| symlink("../pre-2", p).unwrap()),
        ("pre-3", |p: &Path| fs::create_dir(p).unwrap()),
    ] {
        make(&w.join(extra));
        let err = verify().unwrap_err();
        assert!(
            matches!(&err, Error::UnexpectedEntry { path, .. } if *path == w.join(extra)),
            "{extra}: {err:?}"
        );
        fs::remove_dir(w.join(extra))
            .or_else(|_| fs::remove_file(w.join(extra)))
            .unwrap();
    }
    verify().unwrap();

    // A pre-dump directory swapped for a link to a copy of it: never followed.
    let copy = dir.path().join("copy");
    fs::rename(w.join("pre-1"), &copy).unwrap();
    symlink(&copy, w.join("pre-1")).unwrap();
    let err = verify().unwrap_err();
    assert!(
        matches!(&err, Error::NotADirectory { path } if *path == w.join("pre-1")),
        "{err:?}"
    );
    fs::remove_file(w.join("pre-1")).unwrap();
    let err = verify().unwrap_err();
    assert!(
        matches!(&err, Error::WorkloadDirMissing { path } if *path == w.join("pre-1")),
        "{err:?}"
    );
    fs::rename(&copy, w.join("pre-1")).unwrap();
    verify().unwrap();
}
