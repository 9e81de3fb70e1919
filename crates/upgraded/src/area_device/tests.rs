//! Device checks against fake /dev, /sys and /proc trees; superblock and blkid
//! detection on image files; and, as root with loop devices, the real format and
//! mount.

use std::os::unix::fs::symlink;
use std::process::Command;

use super::*;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// A fake root with /dev, /sys and /proc. Device nodes are regular files holding
/// `major:minor`, which the fake stat reads; anything else is no block device.
struct Tree {
    dir: tempfile::TempDir,
}

/// The root file system line every fake mountinfo starts with.
const ROOT_MOUNT: &str = "27 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n";

impl Tree {
    fn new() -> Tree {
        let tree = Tree {
            dir: tempfile::tempdir().unwrap(),
        };
        for d in [
            "dev/disk/by-id",
            "sys/dev/block",
            "sys/devices",
            "proc/self",
        ] {
            fs::create_dir_all(tree.at(d)).unwrap();
        }
        tree.write("proc/self/mountinfo", ROOT_MOUNT);
        tree.write(
            "proc/swaps",
            "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n",
        );
        tree
    }

    fn at(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, text: &str) {
        let path = self.at(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    fn host(&self) -> Host {
        Host::new(
            self.dir.path().to_path_buf(),
            PathBuf::from(MOUNT_POINT),
            Box::new(|p: &Path| {
                let meta = fs::metadata(p)?;
                if !meta.is_file() {
                    return Ok(None);
                }
                Ok(DevNum::parse(&fs::read_to_string(p)?))
            }),
        )
    }

    /// A block device: its node /dev/<name>, its sysfs directory
    /// /sys/devices/<parent>/<name> (writable, no holders, `queue/dax` as given) and
    /// the /sys/dev/block link.
    fn block(&self, name: &str, devnum: &str, parent: &str, dax: bool) -> PathBuf {
        self.write(&format!("dev/{name}"), devnum);
        let sys = format!("sys/devices/{parent}/{name}");
        self.write(&format!("{sys}/ro"), "0\n");
        self.write(&format!("{sys}/size"), &format!("{}\n", 512 * MIB / 512));
        self.write(&format!("{sys}/queue/dax"), if dax { "1\n" } else { "0\n" });
        fs::create_dir_all(self.at(&format!("{sys}/holders"))).unwrap();
        symlink(
            format!("../../devices/{parent}/{name}"),
            self.at(&format!("sys/dev/block/{devnum}")),
        )
        .unwrap();
        self.at(&sys)
    }

    /// /dev/pmem0 as memmap=512M!1G makes it: a legacy (e820) io namespace of the nd
    /// bus, 512 MiB at 1 GiB, listed in /proc/iomem.
    fn legacy_pmem(&self) -> PathBuf {
        let region = "platform/e820_pmem/ndbus0/region0";
        let ns = format!("sys/devices/{region}/namespace0.0");
        self.write(&format!("{ns}/resource"), "0x40000000\n");
        self.write(&format!("{ns}/size"), &format!("{}\n", 512 * MIB));
        self.write(
            "proc/iomem",
            "00000000-00000fff : Reserved\n\
             00100000-3fffffff : System RAM\n  \
             01000000-01ffffff : Kernel code\n\
             40000000-5fffffff : Persistent Memory (legacy)\n  \
             40000000-5fffffff : namespace0.0\n\
             60000000-7ffdffff : System RAM\n",
        );
        self.block(
            "pmem0",
            "259:0",
            &format!("{region}/namespace0.0/block"),
            true,
        )
    }

    /// /dev/vdb, a virtio disk, with the stable link the test bed's guests have.
    fn virtio_disk(&self) -> PathBuf {
        let sys = self.block(
            "vdb",
            "254:16",
            "pci0000:00/0000:00:05.0/virtio2/block",
            false,
        );
        symlink("../../vdb", self.at("dev/disk/by-id/virtio-upgraded-area")).unwrap();
        sys
    }

    fn mountinfo(&self, lines: &str) {
        self.write("proc/self/mountinfo", &format!("{ROOT_MOUNT}{lines}"));
    }
}

fn pmem(memmap: Option<&str>) -> DeviceSpec {
    DeviceSpec {
        kind: AreaKind::Pmem,
        device: "/dev/pmem0".into(),
        memmap: memmap.map(parse_memmap),
    }
}

/// `<size>!<offset>` with K, M or G suffixes, as area.memmap is written.
fn parse_memmap(text: &str) -> Memmap {
    let number = |t: &str| -> u64 {
        let (digits, shift) = match t.as_bytes().last() {
            Some(b'K') => (&t[..t.len() - 1], 10),
            Some(b'M') => (&t[..t.len() - 1], 20),
            Some(b'G') => (&t[..t.len() - 1], 30),
            _ => (t, 0),
        };
        digits.parse::<u64>().unwrap() << shift
    };
    let (size, offset) = text.split_once('!').unwrap();
    Memmap {
        size: number(size),
        offset: number(offset),
    }
}

fn disk(device: &str) -> DeviceSpec {
    DeviceSpec {
        kind: AreaKind::Disk,
        device: device.into(),
        memmap: None,
    }
}

fn refused(tree: &Tree, spec: &DeviceSpec) -> DeviceError {
    match inspect(&tree.host(), spec) {
        Ok(dev) => panic!("{spec:?} was accepted: {dev:?}"),
        Err(e) => e,
    }
}

// --- pmem -------------------------------------------------------------------------------

#[test]
fn a_pmem_namespace_matching_the_memmap_is_accepted() {
    let tree = Tree::new();
    tree.legacy_pmem();
    let dev = inspect(&tree.host(), &pmem(Some("512M!1G"))).unwrap();
    assert_eq!(dev.node, Path::new("/dev/pmem0"));
    assert_eq!(dev.name, "pmem0");
    assert_eq!(
        dev.devnum,
        DevNum {
            major: 259,
            minor: 0
        }
    );
    assert_eq!(
        dev.range,
        Some(Range {
            start: GIB,
            size: 512 * MIB
        })
    );
    assert_eq!(dev.size, Some(512 * MIB));
    assert!(dev.dax);
    assert!(!dev.mounted);
    // The same, spelled in bytes, is the same range.
    inspect(&tree.host(), &pmem(Some("536870912!1073741824"))).unwrap();
}

#[test]
fn a_pmem_namespace_of_another_range_is_refused() {
    let tree = Tree::new();
    tree.legacy_pmem();
    for memmap in ["512M!2G", "256M!1G", "1G!1G"] {
        let err = refused(&tree, &pmem(Some(memmap)));
        assert!(matches!(err, DeviceError::MemmapMismatch { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("area.memmap = \"{memmap}\""))
                && text.contains("512.0 MiB at 0x40000000-0x5fffffff"),
            "{text}"
        );
        assert!(text.contains("writes to no other device"), "{text}");
    }
}

#[test]
fn a_memmap_the_running_kernel_did_not_reserve_is_refused() {
    let tree = Tree::new();
    tree.legacy_pmem();
    // sysfs says 512M at 1G, but /proc/iomem reserves another range.
    tree.write(
        "proc/iomem",
        "00100000-3fffffff : System RAM\n\
         80000000-9fffffff : Persistent Memory (legacy)\n",
    );
    let err = refused(&tree, &pmem(Some("512M!1G")));
    assert!(
        matches!(err, DeviceError::MemmapNotReserved { .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("it has 512.0 MiB at 0x80000000-0x9fffffff"),
        "{text}"
    );
    assert!(text.contains("memmap=512M!1G"), "{text}");
    // Zeroed addresses (no root, kptr_restrict) tell nothing: sysfs alone decides.
    tree.write(
        "proc/iomem",
        "00000000-00000000 : System RAM\n\
         00000000-00000000 : Persistent Memory (legacy)\n",
    );
    inspect(&tree.host(), &pmem(Some("512M!1G"))).unwrap();
}

#[test]
fn a_pmem_device_in_fsdax_mode_is_matched_through_its_namespace() {
    let tree = Tree::new();
    let region = "platform/e820_pmem/ndbus0/region0";
    tree.write(
        &format!("sys/devices/{region}/namespace0.0/resource"),
        "0x40000000",
    );
    tree.write(
        &format!("sys/devices/{region}/namespace0.0/size"),
        &(512 * MIB).to_string(),
    );
    // The pfn device's own range is smaller (its metadata comes first).
    tree.write(
        &format!("sys/devices/{region}/pfn0.1/namespace"),
        "namespace0.0\n",
    );
    tree.write(
        &format!("sys/devices/{region}/pfn0.1/resource"),
        "0x40200000",
    );
    tree.block("pmem0", "259:0", &format!("{region}/pfn0.1/block"), true);
    let dev = inspect(&tree.host(), &pmem(Some("512M!1G"))).unwrap();
    assert_eq!(dev.range.unwrap().start, GIB);
}

#[test]
fn a_pmem_device_without_a_readable_range_is_not_matched() {
    let tree = Tree::new();
    let region = "platform/e820_pmem/ndbus0/region0";
    tree.block(
        "pmem0",
        "259:0",
        &format!("{region}/namespace0.0/block"),
        true,
    );
    let err = refused(&tree, &pmem(Some("512M!1G")));
    assert!(matches!(err, DeviceError::MemmapUnknown { .. }), "{err}");
    // Without memmap (real persistent memory) there is nothing to match.
    let dev = inspect(&tree.host(), &pmem(None)).unwrap();
    assert_eq!(dev.range, None);
}

#[test]
fn a_device_that_is_not_pmem_is_refused_as_pmem() {
    let tree = Tree::new();
    tree.virtio_disk();
    let mut spec = pmem(Some("512M!1G"));
    spec.device = "/dev/vdb".into();
    let err = refused(&tree, &spec);
    assert!(matches!(err, DeviceError::NotPmem { .. }), "{err}");
    assert!(err.to_string().contains("named pmemN") || err.to_string().contains("not pmemN"));
    // Named pmem0 but not on the nd bus (a renamed or fake device).
    let tree = Tree::new();
    tree.block("pmem0", "259:0", "virtual/block", false);
    let err = refused(&tree, &pmem(None));
    assert!(err.to_string().contains("not below an nd bus"), "{err}");
}

#[test]
fn pmem_names() {
    let sys = Path::new("/sys/devices/platform/e820_pmem/ndbus0/region0/namespace0.0/block/x");
    for good in ["pmem0", "pmem12", "pmem1.2", "pmem0s", "pmem1.0s"] {
        assert_eq!(pmem_problem(sys, good), None, "{good}");
    }
    for bad in ["pmem", "pmemx", "pmem0p1", "pmem1.", "vda", "pmem0.1.2"] {
        assert!(pmem_problem(sys, bad).is_some(), "{bad}");
    }
}

#[test]
fn a_pmem_device_is_refused_as_a_disk() {
    let tree = Tree::new();
    tree.legacy_pmem();
    let err = refused(&tree, &disk("/dev/pmem0"));
    assert!(matches!(err, DeviceError::DiskIsPmem { .. }), "{err}");
    assert!(err.to_string().contains("area.kind = \"pmem\""));
}

#[test]
fn a_missing_pmem_device_says_how_to_reserve_it() {
    let tree = Tree::new();
    let err = refused(&tree, &pmem(Some("512M!1G")));
    assert!(matches!(err, DeviceError::Missing { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with("the pmem area's device /dev/pmem0 does not exist")
            && text.contains("memmap=512M!1G")
            && text.contains("nd_pmem"),
        "{text}"
    );
    let err = refused(&tree, &disk("/dev/disk/by-id/nvme-gone"));
    assert!(err.to_string().contains("ls -l /dev/disk/by-id"), "{err}");
}

// --- disks ------------------------------------------------------------------------------

#[test]
fn a_disk_is_found_through_its_stable_link() {
    let tree = Tree::new();
    tree.virtio_disk();
    let dev = inspect(&tree.host(), &disk("/dev/disk/by-id/virtio-upgraded-area")).unwrap();
    assert_eq!(dev.node, Path::new("/dev/vdb"));
    assert_eq!(dev.name, "vdb");
    assert_eq!(
        dev.configured,
        Path::new("/dev/disk/by-id/virtio-upgraded-area")
    );
    assert!(!dev.dax);
    assert_eq!(dev.range, None);
}

#[test]
fn a_link_out_of_dev_and_a_non_device_are_refused() {
    let tree = Tree::new();
    tree.write("srv/area.img", "254:16");
    symlink("../../../srv/area.img", tree.at("dev/disk/by-id/sneaky")).unwrap();
    let err = refused(&tree, &disk("/dev/disk/by-id/sneaky"));
    assert!(matches!(err, DeviceError::NotUnderDev { .. }), "{err}");
    assert!(err.to_string().contains("leads to /srv/area.img"), "{err}");

    tree.write("dev/notblock", "not a device number");
    let err = refused(&tree, &disk("/dev/notblock"));
    assert!(matches!(err, DeviceError::NotABlockDevice { .. }), "{err}");
}

#[test]
fn a_device_mounted_elsewhere_is_refused_naming_where() {
    let tree = Tree::new();
    tree.virtio_disk();
    let spec = disk("/dev/disk/by-id/virtio-upgraded-area");
    // By device number.
    tree.mountinfo("40 27 254:16 / /mnt/data rw,relatime - ext4 /dev/vdb rw\n");
    let err = refused(&tree, &spec);
    assert!(matches!(err, DeviceError::MountedElsewhere { .. }), "{err}");
    assert!(
        err.to_string().contains("is mounted on /mnt/data;"),
        "{err}"
    );
    // By source, when the device number is a virtual one (btrfs), with escapes.
    tree.mountinfo("40 27 0:45 / /mnt/with\\040space rw - btrfs /dev/vdb rw\n");
    let err = refused(&tree, &spec);
    assert!(
        err.to_string().contains("mounted on /mnt/with space"),
        "{err}"
    );
}

#[test]
fn the_root_and_boot_file_systems_are_refused_by_name() {
    let tree = Tree::new();
    tree.block(
        "sda1",
        "8:1",
        "pci0000:00/0000:00:10.0/host0/block/sda",
        false,
    );
    tree.write(
        "sys/devices/pci0000:00/0000:00:10.0/host0/block/sda/sda1/partition",
        "1",
    );
    let err = refused(&tree, &disk("/dev/sda1"));
    assert!(
        err.to_string()
            .contains("is mounted on / (it is the root file system)"),
        "{err}"
    );
    tree.block(
        "sda2",
        "8:2",
        "pci0000:00/0000:00:10.0/host0/block/sda",
        false,
    );
    tree.mountinfo("30 27 8:2 / /boot rw - ext4 /dev/sda2 rw\n");
    let err = refused(&tree, &disk("/dev/sda2"));
    assert!(
        err.to_string().contains("(it is the boot file system)"),
        "{err}"
    );
}

#[test]
fn a_device_on_the_mount_point_is_reused_and_a_stranger_there_refused() {
    let tree = Tree::new();
    tree.legacy_pmem();
    tree.mountinfo(
        "50 24 259:0 / /run/upgraded/area rw,nosuid,nodev,noexec - ext4 /dev/pmem0 rw,dax=always\n",
    );
    let dev = inspect(&tree.host(), &pmem(Some("512M!1G"))).unwrap();
    assert!(dev.mounted && dev.mounted_dax);

    tree.mountinfo("50 24 0:50 / /run/upgraded/area rw - tmpfs tmpfs rw\n");
    let err = refused(&tree, &pmem(Some("512M!1G")));
    assert!(matches!(err, DeviceError::MountPointBusy { .. }), "{err}");
    assert!(
        err.to_string().contains("tmpfs (tmpfs) is mounted on"),
        "{err}"
    );

    // Ours, then something mounted over it: the stranger is what is seen there.
    tree.mountinfo(
        "50 24 259:0 / /run/upgraded/area rw - ext4 /dev/pmem0 rw\n\
         51 50 0:50 / /run/upgraded/area rw - tmpfs tmpfs rw\n",
    );
    assert!(matches!(
        refused(&tree, &pmem(Some("512M!1G"))),
        DeviceError::MountPointBusy { .. }
    ));
}

#[test]
fn swap_is_refused() {
    let tree = Tree::new();
    tree.virtio_disk();
    tree.write(
        "proc/swaps",
        "Filename\tType\tSize\tUsed\tPriority\n\
         /swapfile                               file\t\t1048572\t\t0\t\t-2\n\
         /dev/vdb                                partition\t4194300\t\t0\t\t-3\n",
    );
    let err = refused(&tree, &disk("/dev/disk/by-id/virtio-upgraded-area"));
    assert!(matches!(err, DeviceError::Swap { .. }), "{err}");
    assert!(err.to_string().contains("swapoff"), "{err}");
}

#[test]
fn partitioned_held_read_only_and_in_memory_devices_are_refused() {
    let tree = Tree::new();
    let sys = tree.virtio_disk();
    let spec = disk("/dev/vdb");

    tree.write(
        "sys/devices/pci0000:00/0000:00:05.0/virtio2/block/vdb/vdb1/partition",
        "1",
    );
    let err = refused(&tree, &spec);
    assert!(
        err.to_string()
            .contains("whole disk with partitions (vdb1)"),
        "{err}"
    );
    fs::remove_dir_all(sys.join("vdb1")).unwrap();

    fs::create_dir(sys.join("holders/dm-0")).unwrap();
    let err = refused(&tree, &spec);
    assert!(err.to_string().contains("in use by dm-0"), "{err}");
    fs::remove_dir(sys.join("holders/dm-0")).unwrap();

    fs::write(sys.join("ro"), "1\n").unwrap();
    assert!(matches!(
        refused(&tree, &spec),
        DeviceError::ReadOnly { .. }
    ));
    fs::write(sys.join("ro"), "0\n").unwrap();
    inspect(&tree.host(), &spec).unwrap();

    tree.block("zram0", "252:0", "virtual/block", false);
    let err = refused(&tree, &disk("/dev/zram0"));
    assert!(matches!(err, DeviceError::InMemory { .. }), "{err}");
    tree.block("ram0", "1:0", "virtual/block", false);
    assert!(matches!(
        refused(&tree, &disk("/dev/ram0")),
        DeviceError::InMemory { .. }
    ));
}

// --- procfs and sysfs parsing -----------------------------------------------------------

#[test]
fn mountinfo_iomem_and_numbers_parse() {
    let entries = parse_mountinfo(
        "36 35 98:0 /mnt1 /mnt/a\\040b rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
         garbage\n",
    );
    assert_eq!(entries.len(), 1);
    assert_eq!(
        entries[0].devnum,
        Some(DevNum {
            major: 98,
            minor: 0
        })
    );
    assert_eq!(entries[0].mount_point, Path::new("/mnt/a b"));
    assert_eq!(entries[0].fstype, "ext3");
    assert_eq!(entries[0].source, "/dev/root");
    assert!(entries[0].options.contains("errors=continue"));

    let iomem = iomem_entries("40000000-5fffffff : Persistent Memory (legacy)\n  x\n");
    assert_eq!(
        iomem,
        [(
            Range {
                start: GIB,
                size: 512 * MIB
            },
            "Persistent Memory (legacy)".to_owned()
        )]
    );
    assert_eq!(parse_number("0x40000000"), Some(GIB));
    assert_eq!(parse_number("536870912"), Some(512 * MIB));
    assert_eq!(parse_number("x"), None);
    assert_eq!(DevNum::parse("259:0\n").unwrap().to_string(), "259:0");
    assert_eq!(DevNum::parse("259"), None);
}

// --- what a device holds ----------------------------------------------------------------

/// A 1 KiB ext superblock with `label`.
fn superblock(label: &str) -> [u8; 1024] {
    let mut sb = [0u8; 1024];
    sb[0x38..0x3a].copy_from_slice(&EXT_MAGIC.to_le_bytes());
    sb[0x68..0x78].copy_from_slice(&[0x12; 16]);
    sb[0x78..0x78 + label.len()].copy_from_slice(label.as_bytes());
    sb
}

#[test]
fn ext_superblocks_are_read_by_magic_and_label() {
    let sb = parse_ext_superblock(&superblock(LABEL)).unwrap();
    assert_eq!(sb.label, LABEL);
    assert_eq!(sb.uuid, "12121212-1212-1212-1212-121212121212");
    assert_eq!(
        parse_ext_superblock(&superblock("data")).unwrap().label,
        "data"
    );
    assert_eq!(parse_ext_superblock(&[0u8; 1024]), None);

    // Through a file: the superblock at 1024; a file too small has none.
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    let mut bytes = vec![0u8; 4096];
    bytes[1024..2048].copy_from_slice(&superblock(LABEL));
    fs::write(&img, &bytes).unwrap();
    assert_eq!(read_ext_superblock(&img).unwrap().unwrap().label, LABEL);
    // Ours is told without blkid.
    assert!(matches!(contents(&img).unwrap(), Contents::Ours { .. }));
    fs::write(&img, [0u8; 1500]).unwrap();
    assert_eq!(read_ext_superblock(&img).unwrap(), None);
}

/// Whether `program` runs here; tests that need it are skipped (with a note) otherwise.
fn have(program: &str) -> bool {
    let found = Command::new(program).arg("-V").output().is_ok();
    if !found {
        eprintln!("skipped: {program} is not installed");
    }
    found
}

fn image(dir: &Path, name: &str, mib: u64) -> PathBuf {
    let path = dir.join(name);
    let file = fs::File::create(&path).unwrap();
    file.set_len(mib * MIB).unwrap();
    path
}

#[test]
fn blkid_tells_empty_from_foreign_and_mkfs_makes_ours() {
    if !have("blkid") || !have("mkfs.ext4") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "area", 16);
    assert_eq!(contents(&img).unwrap(), Contents::Empty);

    // What the area's format writes is recognised as ours.
    format(&img, Path::new("/dev/fake"), AreaKind::Pmem).unwrap();
    let Contents::Ours { uuid } = contents(&img).unwrap() else {
        panic!("not ours after mkfs");
    };
    assert_eq!(uuid.len(), 36);

    // ext4 labelled otherwise, and unlabelled.
    let other = image(dir.path(), "other", 16);
    dumper::cmd::run(
        "mkfs.ext4",
        [
            OsString::from("-q"),
            "-L".into(),
            "data".into(),
            other.clone().into(),
        ],
    )
    .unwrap();
    assert_eq!(
        contents(&other).unwrap(),
        Contents::Other {
            found: "a file system of type ext4 labelled \"data\"".into()
        }
    );
    if have("mkswap") {
        let swap = image(dir.path(), "swap", 16);
        dumper::cmd::run("mkswap", [swap.as_os_str()]).unwrap();
        assert_eq!(
            contents(&swap).unwrap(),
            Contents::Other {
                found: "swap space".into()
            }
        );
    }
}

#[test]
fn blkid_findings_are_described() {
    let vars = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        describe(&vars(&[
            ("DEVNAME", "/dev/vdb"),
            ("PTUUID", "x"),
            ("PTTYPE", "gpt")
        ])),
        "a partition table of type gpt"
    );
    assert_eq!(
        describe(&vars(&[("TYPE", "crypto_LUKS"), ("USAGE", "crypto")])),
        "a signature of type crypto_LUKS (crypto)"
    );
    assert_eq!(
        describe(&vars(&[
            ("TYPE", "xfs"),
            ("USAGE", "filesystem"),
            ("LABEL", "a b")
        ])),
        "a file system of type xfs labelled \"a b\""
    );
    assert_eq!(
        parse_export("DEVNAME=/dev/vdb\nLABEL=a\\ b\nTYPE=ext4\n"),
        vars(&[("DEVNAME", "/dev/vdb"), ("LABEL", "a b"), ("TYPE", "ext4")])
    );
}

// --- the format rules -------------------------------------------------------------------

fn device(kind: AreaKind) -> Device {
    Device {
        kind,
        configured: "/dev/disk/by-id/virtio-upgraded-area".into(),
        node: "/dev/vdb".into(),
        name: "vdb".into(),
        devnum: DevNum {
            major: 254,
            minor: 16,
        },
        size: None,
        dax: false,
        mounted: false,
        mounted_dax: false,
        range: None,
    }
}

#[test]
fn only_an_empty_device_is_formatted_and_only_when_allowed() {
    let dev = device(AreaKind::Disk);
    let ours = Contents::Ours { uuid: "u".into() };
    assert!(!needs_format(&dev, &ours, true).unwrap());
    assert!(!needs_format(&dev, &ours, false).unwrap());
    assert!(needs_format(&dev, &Contents::Empty, true).unwrap());

    // open() never formats: an empty device is an error that says what to run.
    let err = needs_format(&dev, &Contents::Empty, false).unwrap_err();
    assert!(err.is_no_file_system());
    assert!(err.to_string().contains("upgradectl area init"), "{err}");
    let pmem = device(AreaKind::Pmem);
    let err = needs_format(&pmem, &Contents::Empty, false).unwrap_err();
    assert!(
        err.to_string()
            .contains("after a cold boot or a power-off its RAM is empty"),
        "{err}"
    );
    // Through anyhow's context, as the daemon and the boot side see it.
    let wrapped = anyhow::Error::from(err).context("opening the area");
    assert!(is_no_file_system(&wrapped));
    assert!(!is_no_file_system(&anyhow::anyhow!("other")));

    // Anything else is never formatted, allowed or not, and the error says what to do.
    let other = Contents::Other {
        found: "a file system of type xfs labelled \"data\"".into(),
    };
    for allow in [true, false] {
        let err = needs_format(&dev, &other, allow).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, DeviceError::Foreign { .. }), "{text}");
        assert!(
            text.starts_with(
                "/dev/disk/by-id/virtio-upgraded-area holds a file system of type xfs labelled \"data\""
            ) && text.contains("wipefs -a /dev/vdb"),
            "{text}"
        );
    }
}

#[test]
fn only_a_memmap_area_warns_about_power_off() {
    let pmem = AreaLocation::Pmem {
        device: "/dev/pmem0".into(),
        memmap: Some(parse_memmap("512M!1G")),
    };
    let text = power_off_warning(&pmem).unwrap();
    assert!(
        text.contains("memmap=512M!1G") && text.contains("power-off"),
        "{text}"
    );
    let nvdimm = AreaLocation::Pmem {
        device: "/dev/pmem0".into(),
        memmap: None,
    };
    assert_eq!(power_off_warning(&nvdimm), None);
    let disk = AreaLocation::Disk {
        device: "/dev/vdb".into(),
    };
    assert_eq!(power_off_warning(&disk), None);
}

#[test]
fn mkfs_arguments_by_kind() {
    let args = |kind| -> Vec<String> {
        mkfs_args(Path::new("/dev/x"), kind)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(
        args(AreaKind::Disk),
        ["-q", "-L", LABEL, "-m", "0", "/dev/x"]
    );
    assert_eq!(
        args(AreaKind::Pmem),
        [
            "-q",
            "-L",
            LABEL,
            "-m",
            "0",
            "-b",
            "4096",
            "-E",
            "nodiscard",
            "/dev/x"
        ]
    );
}

// --- the real thing, as root ------------------------------------------------------------

/// A loop device over a sparse file; detached (and its mount undone) when dropped.
struct Loop {
    dev: PathBuf,
    mounted: Option<PathBuf>,
}

impl Loop {
    fn attach(file: &Path) -> Option<Loop> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: loop devices need root");
            return None;
        }
        match dumper::cmd::run(
            "losetup",
            [OsString::from("--find"), "--show".into(), file.into()],
        ) {
            Ok(out) => Some(Loop {
                dev: PathBuf::from(out.trim()),
                mounted: None,
            }),
            Err(e) => {
                eprintln!("skipped: losetup failed: {e}");
                None
            }
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        if let Some(mp) = &self.mounted {
            let _ = nix::mount::umount2(mp.as_path(), nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

#[test]
fn a_loop_disk_is_formatted_once_mounted_and_reused() {
    if !have("mkfs.ext4") || !have("blkid") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = image(dir.path(), "disk.img", 64);
    let Some(mut lo) = Loop::attach(&file) else {
        return;
    };
    let mount_point = dir.path().join("run/area");
    let host = Host::new("/".into(), mount_point.clone(), Box::new(stat_block_dev));
    let spec = disk(lo.dev.to_str().unwrap());

    // Empty: open refuses, and writes nothing.
    let err = open(&host, &spec).unwrap_err();
    assert!(err.is_no_file_system(), "{err}");
    assert_eq!(contents(&lo.dev).unwrap(), Contents::Empty);

    let p = prepare(&host, &spec, true).unwrap();
    lo.mounted = Some(mount_point.clone());
    assert!(p.formatted && p.mounted && !p.dax, "{p:?}");
    assert_eq!(p.root, mount_point);
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(&mount_point).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700);
    let area = dumper::Area::open(&p.root).unwrap();
    area.check_writable().unwrap();
    assert_eq!(area.fs_type().unwrap(), dumper::area::FsType::EXT4);

    // Again: found mounted, nothing formatted, the area as it was.
    fs::write(mount_point.join("marker"), b"x").unwrap();
    let again = open(&host, &spec).unwrap();
    assert!(!again.formatted && !again.mounted);
    assert!(mount_point.join("marker").exists());

    // Mounted here, the same device given as a disk elsewhere would be refused too.
    let other_host = Host::new(
        "/".into(),
        dir.path().join("elsewhere"),
        Box::new(stat_block_dev),
    );
    let err = open(&other_host, &spec).unwrap_err();
    assert!(matches!(err, DeviceError::MountedElsewhere { .. }), "{err}");
}

#[test]
fn a_loop_disk_holding_something_else_is_left_alone() {
    if !have("mkfs.ext4") || !have("blkid") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = image(dir.path(), "data.img", 16);
    dumper::cmd::run(
        "mkfs.ext4",
        [
            OsString::from("-q"),
            "-L".into(),
            "data".into(),
            file.clone().into(),
        ],
    )
    .unwrap();
    let Some(lo) = Loop::attach(&file) else {
        return;
    };
    let host = Host::new(
        "/".into(),
        dir.path().join("area"),
        Box::new(stat_block_dev),
    );
    let spec = disk(lo.dev.to_str().unwrap());
    let before = fs::read(&file).unwrap();
    let err = prepare(&host, &spec, true).unwrap_err();
    assert!(matches!(err, DeviceError::Foreign { .. }), "{err}");
    assert!(err.to_string().contains("labelled \"data\""), "{err}");
    assert_eq!(
        fs::read(&file).unwrap(),
        before,
        "the device was written to"
    );
}
