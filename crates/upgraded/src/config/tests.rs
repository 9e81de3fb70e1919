//! Loader tests: in-memory documents for parsing, merging and validation; temporary
//! directories for discovery.

use super::*;
use std::os::unix::fs::symlink;

const MAIN: &str = "/etc/upgraded/upgraded.toml";
const DROPIN: &str = "/etc/upgraded/config.d/50-local.toml";
const EXAMPLE: &str = include_str!("../../upgraded.toml.example");

fn load_one(text: &str) -> Result<Settings, ConfigError> {
    load_documents([(Path::new(MAIN), text)])
}

fn load_two(main: &str, dropin: &str) -> Result<Settings, ConfigError> {
    load_documents([(Path::new(MAIN), main), (Path::new(DROPIN), dropin)])
}

#[track_caller]
fn ok(text: &str) -> Settings {
    load_one(text).unwrap_or_else(|err| panic!("{err}\n--- in:\n{text}"))
}

#[track_caller]
fn fails(text: &str) -> ConfigError {
    match load_one(text) {
        Ok(settings) => panic!("accepted:\n{text}\n--- as {settings:#?}"),
        Err(err) => err,
    }
}

/// A validation error's location and problem; panics on any other error.
#[track_caller]
fn invalid(text: &str) -> (Location, Invalid) {
    match fails(text) {
        ConfigError::Invalid { at, problem } => (at, *problem),
        other => panic!("expected a validation error, got: {other}"),
    }
}

/// A parse error's location, message and hint; panics on any other error.
#[track_caller]
fn parse_failure(text: &str) -> (Location, String, String) {
    match fails(text) {
        ConfigError::Parse { at, message, hint } => (at, message, hint),
        other => panic!("expected a parse error, got: {other}"),
    }
}

fn at(path: &str, line: usize, column: usize) -> Location {
    Location {
        path: PathBuf::from(path),
        position: Some(Position { line, column }),
    }
}

fn workload(name: &str, selector: Selector) -> Workload {
    Workload {
        name: name.to_string(),
        selector,
        check: None,
        tcp_established: false,
        pre_dump: PreDumps::None,
        leave_running: false,
    }
}

fn names(settings: &Settings) -> Vec<&str> {
    settings.workloads.iter().map(|w| w.name.as_str()).collect()
}

// ---- defaults and the example file ----

#[test]
fn no_files_give_the_documented_defaults() {
    let settings = load_documents([]).unwrap();
    assert_eq!(settings, Settings::default());
    assert_eq!(
        settings.area.location,
        AreaLocation::Directory {
            path: PathBuf::from("/var/lib/upgraded")
        }
    );
    assert_eq!(settings.area.min_free_margin_percent, 20);
    assert_eq!(settings.kernel.known_good, KnownGood::Current);
    assert!(settings.kernel.extra_cmdline.is_empty());
    assert_eq!(settings.health.timeout_secs, 300);
    assert_eq!(settings.health.settle_secs, 10);
    assert_eq!(
        settings.health.scripts_dir,
        PathBuf::from("/etc/upgraded/health.d")
    );
    assert_eq!(
        settings.health.timeout(),
        std::time::Duration::from_secs(300)
    );
    assert_eq!(settings.boot.max_attempts, 2);
    assert_eq!(settings.retention.keep, 3);
    assert!(!settings.suspend.encrypt);
    assert_eq!(
        settings.suspend.key_file,
        PathBuf::from("/etc/upgraded/suspend.key")
    );
    assert!(settings.workloads.is_empty());
}

#[test]
fn empty_and_comment_only_files_change_nothing() {
    assert_eq!(ok(""), Settings::default());
    assert_eq!(ok("# nothing\n\n[area]\n[health]\n"), Settings::default());
}

#[test]
fn example_file_as_shipped_gives_the_defaults() {
    assert_eq!(ok(EXAMPLE), Settings::default());
}

#[test]
fn example_file_documents_every_key() {
    let keys = [
        "kind",
        "path",
        "device",
        "memmap",
        "min_free_margin_percent",
        "known_good",
        "extra_cmdline",
        "timeout_secs",
        "settle_secs",
        "scripts_dir",
        "max_attempts",
        "keep",
        "encrypt",
        "key_file",
        "name",
        "pid",
        "unit",
        "session",
        "socket",
        "screen",
        "container",
        "machine",
        "check",
        "tcp_established",
        "pre_dump",
        "leave_running",
    ];
    for key in keys {
        assert!(
            EXAMPLE.contains(&format!("{key} =")),
            "upgraded.toml.example does not show `{key} = ...`"
        );
    }
    for kind in WorkloadKind::ALL {
        assert!(
            EXAMPLE.contains(kind.selector_example()),
            "upgraded.toml.example does not show {kind}"
        );
    }
}

#[test]
fn example_defaults_and_workloads_are_valid_when_uncommented() {
    // Uncomment `#key = value` lines, keeping the first of alternatives (`device`
    // appears twice) and leaving out keys that need another kind of area.
    let mut seen = std::collections::HashSet::new();
    let mut text = String::new();
    for line in EXAMPLE.lines() {
        let uncommented = match line.strip_prefix('#') {
            // Settings are commented out as `#key = ...`; prose is `# text`.
            Some(rest)
                if rest.starts_with("[[") || rest.starts_with(|c: char| c.is_ascii_lowercase()) =>
            {
                rest
            }
            _ => line,
        };
        let key = uncommented
            .split(" = ")
            .next()
            .unwrap_or_default()
            .to_string();
        if uncommented.starts_with("[[") {
            seen.retain(|k: &String| !k.starts_with("w:"));
        }
        let in_workload = text.contains("[[workload]]");
        let unique_key = if in_workload {
            format!("w:{key}")
        } else {
            key.clone()
        };
        if uncommented != line
            && (matches!(key.as_str(), "device" | "memmap") || !seen.insert(unique_key))
        {
            continue;
        }
        text.push_str(uncommented);
        text.push('\n');
    }
    let settings = ok(&text);
    assert_eq!(
        Settings {
            workloads: vec![],
            ..settings.clone()
        },
        Settings::default()
    );
    assert_eq!(names(&settings), ["web", "shells"]);
    let web = &settings.workloads[0];
    assert_eq!(
        web.selector,
        Selector::Service {
            unit: "nginx.service".into()
        }
    );
    assert!(web.tcp_established);
    assert_eq!(web.pre_dump, PreDumps::Fixed(1));
}

// ---- a full configuration ----

#[test]
fn every_key_is_read() {
    let settings = ok(r#"
[area]
kind = "pmem"
device = "/dev/pmem0"
memmap = "512M!1G"
min_free_margin_percent = 35

[kernel]
known_good = "6.1.0-47-amd64"
extra_cmdline = ["quiet", "console=ttyS0,115200"]

[health]
timeout_secs = 600
settle_secs = 30
scripts_dir = "/usr/local/lib/upgraded/health.d"

[boot]
max_attempts = 4

[retention]
keep = 7

[suspend]
encrypt = true
# "zstd" is refused with a pmem area (compression_is_for_suspends_on_disk_backed_areas)
compress = "none"
key_file = "/root/keys/upgraded-suspend.key"

[[workload]]
name = "pid"
kind = "process"
pid = 4242
check = ["/usr/bin/true"]
tcp_established = true
pre_dump = 2
leave_running = true

[[workload]]
name = "svc"
kind = "service"
unit = "nginx.service"

[[workload]]
name = "scope"
kind = "scope"
unit = "session-3.scope"

[[workload]]
name = "login"
kind = "session"
session = "c2"

[[workload]]
name = "tmux-default"
kind = "tmux"

[[workload]]
name = "tmux-work"
kind = "tmux"
socket = "work"

[[workload]]
name = "scr"
kind = "screen"
screen = "build"

[[workload]]
name = "db"
kind = "podman"
container = "postgres"

[[workload]]
name = "m"
kind = "nspawn"
machine = "debian-test"
"#);
    let expected = Settings {
        area: AreaSettings {
            location: AreaLocation::Pmem {
                device: PathBuf::from("/dev/pmem0"),
                memmap: Some(Memmap {
                    size: 512 << 20,
                    offset: 1 << 30,
                }),
            },
            min_free_margin_percent: 35,
        },
        kernel: KernelSettings {
            known_good: KnownGood::Release("6.1.0-47-amd64".into()),
            extra_cmdline: vec!["quiet".into(), "console=ttyS0,115200".into()],
        },
        health: HealthSettings {
            timeout_secs: 600,
            settle_secs: 30,
            scripts_dir: PathBuf::from("/usr/local/lib/upgraded/health.d"),
        },
        boot: BootSettings { max_attempts: 4 },
        retention: RetentionSettings { keep: 7 },
        suspend: SuspendSettings {
            encrypt: true,
            compress: SuspendCompression::None,
            key_file: PathBuf::from("/root/keys/upgraded-suspend.key"),
        },
        workloads: vec![
            Workload {
                check: Some(vec!["/usr/bin/true".into()]),
                tcp_established: true,
                pre_dump: PreDumps::Fixed(2),
                leave_running: true,
                ..workload("pid", Selector::Process { pid: 4242 })
            },
            workload(
                "svc",
                Selector::Service {
                    unit: "nginx.service".into(),
                },
            ),
            workload(
                "scope",
                Selector::Scope {
                    unit: "session-3.scope".into(),
                },
            ),
            workload(
                "login",
                Selector::Session {
                    session: "c2".into(),
                },
            ),
            workload(
                "tmux-default",
                Selector::Tmux {
                    socket: "default".into(),
                },
            ),
            workload(
                "tmux-work",
                Selector::Tmux {
                    socket: "work".into(),
                },
            ),
            workload(
                "scr",
                Selector::Screen {
                    screen: "build".into(),
                },
            ),
            workload(
                "db",
                Selector::Podman {
                    container: "postgres".into(),
                },
            ),
            workload(
                "m",
                Selector::Nspawn {
                    machine: "debian-test".into(),
                },
            ),
        ],
    };
    assert_eq!(settings, expected);
    assert_eq!(
        settings.workload("db").map(|w| w.selector.kind()),
        Some(WorkloadKind::Podman)
    );
    assert_eq!(settings.workload("nope"), None);
}

#[test]
fn disk_area_and_inline_workload_tables() {
    let settings = ok(r#"
area = { kind = "disk", device = "/dev/disk/by-id/nvme-X-part3" }
workload = [{ name = "a", kind = "process", pid = 77 }]
"#);
    assert_eq!(
        settings.area.location,
        AreaLocation::Disk {
            device: PathBuf::from("/dev/disk/by-id/nvme-X-part3")
        }
    );
    assert_eq!(settings.area.location.kind(), AreaKind::Disk);
    assert_eq!(
        settings.workloads,
        [workload("a", Selector::Process { pid: 77 })]
    );
}

#[test]
fn pmem_without_memmap_is_real_persistent_memory() {
    let settings = ok("[area]\nkind = \"pmem\"\ndevice = \"/dev/dax0.0\"\n");
    assert_eq!(
        settings.area.location,
        AreaLocation::Pmem {
            device: PathBuf::from("/dev/dax0.0"),
            memmap: None
        }
    );
}

// ---- merging ----

#[test]
fn later_files_win_key_by_key() {
    let settings = load_two(
        "[health]\ntimeout_secs = 100\nsettle_secs = 5\n[boot]\nmax_attempts = 3\n",
        "[health]\ntimeout_secs = 200\n[retention]\nkeep = 9\n",
    )
    .unwrap();
    assert_eq!(settings.health.timeout_secs, 200);
    assert_eq!(settings.health.settle_secs, 5);
    assert_eq!(settings.boot.max_attempts, 3);
    assert_eq!(settings.retention.keep, 9);
}

#[test]
fn a_later_list_replaces_the_earlier_one() {
    let settings = load_two(
        "[kernel]\nextra_cmdline = [\"quiet\", \"splash\"]\n",
        "[kernel]\nextra_cmdline = [\"console=ttyS0\"]\n",
    )
    .unwrap();
    assert_eq!(settings.kernel.extra_cmdline, ["console=ttyS0"]);
    let cleared = load_two(
        "[kernel]\nextra_cmdline = [\"quiet\"]\n",
        "[kernel]\nextra_cmdline = []\n",
    )
    .unwrap();
    assert!(cleared.kernel.extra_cmdline.is_empty());
}

#[test]
fn workloads_append_and_a_same_name_replaces_in_place() {
    let main = r#"
[[workload]]
name = "a"
kind = "process"
pid = 100
tcp_established = true

[[workload]]
name = "b"
kind = "tmux"
"#;
    let dropin = r#"
[[workload]]
name = "c"
kind = "screen"
screen = "s"

[[workload]]
name = "a"
kind = "service"
unit = "a.service"
"#;
    let settings = load_two(main, dropin).unwrap();
    assert_eq!(names(&settings), ["a", "b", "c"]);
    // Replaced whole: nothing of the first "a" (its tcp_established) survives.
    assert_eq!(
        settings.workloads[0],
        workload(
            "a",
            Selector::Service {
                unit: "a.service".into()
            }
        )
    );
}

#[test]
fn a_later_file_can_repair_an_invalid_workload() {
    let main = "[[workload]]\nname = \"a\"\nkind = \"service\"\nunit = \"a\"\n";
    let dropin = "[[workload]]\nname = \"a\"\nkind = \"service\"\nunit = \"a.service\"\n";
    assert!(load_one(main).is_err());
    assert_eq!(load_two(main, dropin).unwrap().workloads.len(), 1);
}

#[test]
fn a_later_file_can_repair_an_out_of_range_value() {
    let settings = load_two(
        "[health]\ntimeout_secs = 5\n",
        "[health]\ntimeout_secs = 60\n",
    )
    .unwrap();
    assert_eq!(settings.health.timeout_secs, 60);
}

#[test]
fn same_workload_name_twice_in_one_file_is_refused_with_both_lines() {
    let text = "[[workload]]\nname = \"a\"\nkind = \"tmux\"\n\n[[workload]]\nname = \"a\"\nkind = \"tmux\"\nsocket = \"x\"\n";
    let (location, problem) = invalid(text);
    assert_eq!(location, at(MAIN, 6, 8));
    assert_eq!(
        problem,
        Invalid::DuplicateWorkload {
            name: "a".into(),
            first: at(MAIN, 2, 8)
        }
    );
    assert!(problem.hint().contains("rename"), "{}", problem.hint());
}

#[test]
fn changing_the_area_kind_drops_the_earlier_location() {
    let directory_then_disk = load_two(
        "[area]\npath = \"/srv/upgraded\"\n",
        "[area]\nkind = \"disk\"\ndevice = \"/dev/vdb\"\n",
    )
    .unwrap();
    assert_eq!(
        directory_then_disk.area.location,
        AreaLocation::Disk {
            device: PathBuf::from("/dev/vdb")
        }
    );
    let pmem_then_directory = load_two(
        "[area]\nkind = \"pmem\"\ndevice = \"/dev/pmem0\"\nmemmap = \"1G!4G\"\nmin_free_margin_percent = 50\n",
        "[area]\nkind = \"directory\"\n",
    )
    .unwrap();
    assert_eq!(
        pmem_then_directory.area,
        AreaSettings {
            location: AreaLocation::Directory {
                path: PathBuf::from(DEFAULT_AREA_PATH)
            },
            // Not a location key: kept.
            min_free_margin_percent: 50,
        }
    );
}

#[test]
fn restating_the_same_area_kind_keeps_the_location() {
    let settings = load_two(
        "[area]\nkind = \"disk\"\ndevice = \"/dev/vdb\"\n",
        "[area]\nkind = \"disk\"\nmin_free_margin_percent = 10\n",
    )
    .unwrap();
    assert_eq!(
        settings.area.location,
        AreaLocation::Disk {
            device: PathBuf::from("/dev/vdb")
        }
    );
    // The default kind restated explicitly keeps an earlier path too.
    let directory = load_two(
        "[area]\npath = \"/srv/u\"\n",
        "[area]\nkind = \"directory\"\n",
    )
    .unwrap();
    assert_eq!(
        directory.area.location,
        AreaLocation::Directory {
            path: PathBuf::from("/srv/u")
        }
    );
}

#[test]
fn validation_errors_name_the_file_that_set_the_value() {
    let err = load_two(
        "[health]\ntimeout_secs = 100\n",
        "\n\n[health]\nsettle_secs = 200\n",
    )
    .unwrap_err();
    assert_eq!(err.location(), at(DROPIN, 4, 15));
    let err = load_two("[area]\nkind = \"disk\"\n", "[retention]\nkeep = 2\n").unwrap_err();
    assert_eq!(err.location(), at(MAIN, 2, 8), "{err}");
}

// ---- TOML errors ----

#[test]
fn syntax_errors_have_line_column_and_a_hint() {
    let (location, message, hint) = parse_failure("[area]\nkind = directory\n");
    assert_eq!(location.path, PathBuf::from(MAIN));
    assert_eq!(location.position.map(|p| p.line), Some(2));
    assert!(!message.is_empty());
    assert!(hint.contains("double quotes"), "{hint}");

    let (location, message, _) = parse_failure("[area\n");
    assert_eq!(location.position.map(|p| p.line), Some(1));
    // Multi-line parser messages are kept on one line.
    assert!(!message.contains('\n'), "{message:?}");
}

#[test]
fn unknown_keys_are_refused_with_the_valid_keys_of_their_table() {
    let cases = [
        (
            "colour = 1\n",
            1,
            "area, kernel, health, boot, retention, suspend, workload",
        ),
        (
            "[area]\nkindd = \"disk\"\n",
            2,
            "kind, path, device, memmap, min_free_margin_percent",
        ),
        ("[kernel]\ncmdline = []\n", 2, "known_good, extra_cmdline"),
        (
            "[health]\n\ntimeout = 3\n",
            3,
            "timeout_secs, settle_secs, scripts_dir",
        ),
        ("[boot]\nattempts = 3\n", 2, "max_attempts"),
        ("[retention]\nkeep = 1\nmax = 2\n", 3, "keep"),
        (
            "[suspend]\nencrypted = true\n",
            2,
            "encrypt, compress, key_file",
        ),
        (
            "[[workload]]\nname = \"a\"\nkind = \"tmux\"\ntcp = true\n",
            4,
            "name, kind, pid, unit, session, socket, screen, container, machine, check, \
             tcp_established, pre_dump, leave_running",
        ),
    ];
    for (text, line, valid) in cases {
        let (location, message, hint) = parse_failure(text);
        assert_eq!(
            location.position,
            Some(Position { line, column: 1 }),
            "{text}"
        );
        assert!(message.starts_with("unknown field"), "{message}");
        assert!(
            hint.ends_with(&format!("valid keys here are: {valid}")),
            "{hint}"
        );
    }
    let (_, _, hint) = parse_failure("[boot]\nmax_attempt = 3\n");
    assert!(hint.starts_with("did you mean `max_attempts`?"), "{hint}");
}

#[test]
fn unknown_kinds_list_the_valid_ones() {
    let (location, message, hint) = parse_failure("[area]\nkind = \"dsk\"\n");
    assert_eq!(location, at(MAIN, 2, 8));
    assert!(message.contains("unknown variant `dsk`"), "{message}");
    assert_eq!(
        hint,
        "did you mean `disk`? valid values are: \"directory\", \"disk\", \"pmem\""
    );
    let (location, _, hint) = parse_failure("[[workload]]\nname = \"vm\"\nkind = \"qemu\"\n");
    assert_eq!(location, at(MAIN, 3, 8));
    assert_eq!(
        hint,
        "valid values are: \"process\", \"service\", \"scope\", \"session\", \"tmux\", \
         \"screen\", \"podman\", \"nspawn\""
    );
}

#[test]
fn wrong_types_get_a_hint_for_the_expected_type() {
    let cases = [
        ("[health]\ntimeout_secs = \"300\"\n", "whole number"),
        ("[health]\nscripts_dir = 3\n", "double quotes"),
        (
            "[[workload]]\nname = \"a\"\nleave_running = \"yes\"\n",
            "true or false",
        ),
        ("[kernel]\nextra_cmdline = \"quiet\"\n", "list in brackets"),
        ("[workload]\nname = \"a\"\n", "[[workload]]"),
        ("area = 3\n", "[section]"),
        ("[health]\ntimeout_secs = 1.5\n", "whole number"),
    ];
    for (text, expected) in cases {
        let (location, _, hint) = parse_failure(text);
        assert!(location.position.is_some(), "{text}");
        assert!(hint.contains(expected), "{text}: {hint}");
    }
}

#[test]
fn duplicate_keys_are_a_parse_error() {
    let (location, _, hint) = parse_failure("[boot]\nmax_attempts = 2\nmax_attempts = 3\n");
    assert_eq!(location.position.map(|p| p.line), Some(3));
    assert!(hint.contains("once per table"), "{hint}");
}

// ---- validation ----

#[test]
fn numbers_out_of_range_are_refused_at_their_line() {
    let cases = [
        (
            "[area]\nmin_free_margin_percent = 101\n",
            "area.min_free_margin_percent",
            0,
            100,
        ),
        (
            "[area]\nmin_free_margin_percent = -1\n",
            "area.min_free_margin_percent",
            0,
            100,
        ),
        (
            "[health]\ntimeout_secs = 9\n",
            "health.timeout_secs",
            10,
            3600,
        ),
        (
            "[health]\ntimeout_secs = 3601\n",
            "health.timeout_secs",
            10,
            3600,
        ),
        (
            "[health]\nsettle_secs = -1\n",
            "health.settle_secs",
            0,
            3600,
        ),
        ("[boot]\nmax_attempts = 0\n", "boot.max_attempts", 1, 10),
        ("[boot]\nmax_attempts = 11\n", "boot.max_attempts", 1, 10),
        (
            "[retention]\nkeep = 0\n",
            "retention.keep",
            1,
            u32::MAX.into(),
        ),
        (
            "[retention]\nkeep = 4294967296\n",
            "retention.keep",
            1,
            u32::MAX.into(),
        ),
        (
            "[[workload]]\nname = \"a\"\nkind = \"process\"\npid = 1\n",
            "workload.pid",
            2,
            1 << 22,
        ),
        (
            "[[workload]]\nname = \"a\"\nkind = \"process\"\npid = 4194305\n",
            "workload.pid",
            2,
            1 << 22,
        ),
        (
            "[[workload]]\nname = \"a\"\nkind = \"tmux\"\npre_dump = -2\n",
            "workload.pre_dump",
            0,
            dumper::manifest::MAX_PRE_DUMPS.into(),
        ),
        (
            "[[workload]]\nname = \"a\"\nkind = \"tmux\"\npre_dump = 17\n",
            "workload.pre_dump",
            0,
            dumper::manifest::MAX_PRE_DUMPS.into(),
        ),
    ];
    for (text, key, min, max) in cases {
        let (location, problem) = invalid(text);
        let last_line = text.lines().count();
        assert_eq!(location.position.map(|p| p.line), Some(last_line), "{text}");
        match &problem {
            Invalid::OutOfRange {
                key: k,
                min: lo,
                max: hi,
                ..
            } => assert_eq!((*k, *lo, *hi), (key, min, max), "{text}"),
            other => panic!("{text}: {other:?}"),
        }
        assert!(
            problem.hint().contains(&format!("from {min} to {max}")),
            "{}",
            problem.hint()
        );
    }
    let (_, problem) = invalid("[boot]\nmax_attempts = 0\n");
    assert_eq!(
        problem.hint(),
        "set max_attempts to a value from 1 to 10, or remove it to get the default (2)"
    );
}

#[test]
fn range_limits_themselves_are_accepted() {
    let settings = ok("[area]\nmin_free_margin_percent = 0\n[health]\ntimeout_secs = 3600\nsettle_secs = 3600\n[boot]\nmax_attempts = 10\n[retention]\nkeep = 1\n");
    assert_eq!(settings.area.min_free_margin_percent, 0);
    assert_eq!(settings.health.timeout_secs, 3600);
    assert_eq!(settings.boot.max_attempts, 10);
    assert_eq!(settings.retention.keep, 1);
    assert_eq!(ok("[health]\ntimeout_secs = 10\n").health.settle_secs, 10);
}

#[test]
fn settle_time_must_fit_in_the_timeout() {
    let (location, problem) = invalid("[health]\nsettle_secs = 120\ntimeout_secs = 60\n");
    assert_eq!(location, at(MAIN, 2, 15));
    assert_eq!(
        problem,
        Invalid::SettleLongerThanTimeout {
            settle: 120,
            timeout: 60
        }
    );
    let (location, problem) = invalid("\n[health]\ntimeout_secs = 10\nsettle_secs = 11\n");
    assert_eq!(location, at(MAIN, 4, 15));
    assert!(problem.hint().contains("timeout_secs"));
}

#[test]
fn area_keys_must_fit_the_kind() {
    let (location, problem) = invalid("[area]\ndevice = \"/dev/vdb\"\n");
    assert_eq!(location, at(MAIN, 2, 10));
    assert_eq!(
        problem,
        Invalid::AreaKeyNotForKind {
            key: "device",
            kind: AreaKind::Directory
        }
    );
    assert!(problem.hint().contains("uses `path`"), "{}", problem.hint());

    let (location, problem) =
        invalid("[area]\nkind = \"disk\"\ndevice = \"/dev/vdb\"\npath = \"/srv\"\n");
    assert_eq!(location, at(MAIN, 4, 8));
    assert_eq!(
        problem,
        Invalid::AreaKeyNotForKind {
            key: "path",
            kind: AreaKind::Disk
        }
    );

    let (location, problem) =
        invalid("[area]\nkind = \"disk\"\ndevice = \"/dev/vdb\"\nmemmap = \"1G!4G\"\n");
    assert_eq!(location.position.map(|p| p.line), Some(4));
    assert_eq!(
        problem,
        Invalid::AreaKeyNotForKind {
            key: "memmap",
            kind: AreaKind::Disk
        }
    );

    let (_, problem) = invalid("[area]\nmemmap = \"1G!4G\"\n");
    assert_eq!(
        problem,
        Invalid::AreaKeyNotForKind {
            key: "memmap",
            kind: AreaKind::Directory
        }
    );
}

#[test]
fn device_areas_need_a_device() {
    for kind in [AreaKind::Disk, AreaKind::Pmem] {
        let (location, problem) = invalid(&format!("\n[area]\nkind = \"{kind}\"\n"));
        assert_eq!(location, at(MAIN, 3, 8), "{kind}");
        assert_eq!(
            problem,
            Invalid::AreaKeyMissing {
                key: "device",
                kind
            }
        );
        assert!(
            problem.hint().starts_with("add device = \""),
            "{}",
            problem.hint()
        );
    }
}

#[test]
fn area_paths_and_memmap_are_checked() {
    let cases = [
        (
            "[area]\npath = \"var/lib/upgraded\"\n",
            "area.path",
            "absolute",
        ),
        ("[area]\npath = \"/\"\n", "area.path", "root"),
        (
            "[area]\nkind = \"disk\"\ndevice = \"/var/disk.img\"\n",
            "area.device",
            "under /dev",
        ),
        (
            "[area]\nkind = \"pmem\"\ndevice = \"/dev/pmem0\"\nmemmap = \"512M\"\n",
            "area.memmap",
            "no '!'",
        ),
        (
            "[area]\nkind = \"pmem\"\ndevice = \"/dev/pmem0\"\nmemmap = \"memmap=512M!1G\"\n",
            "area.memmap",
            "argument name",
        ),
        (
            "[health]\nscripts_dir = \"health.d\"\n",
            "health.scripts_dir",
            "absolute",
        ),
        (
            "[suspend]\nkey_file = \"suspend.key\"\n",
            "suspend.key_file",
            "absolute",
        ),
        (
            "[suspend]\nencrypt = true\nkey_file = \"/etc/upgraded/../suspend.key\"\n",
            "suspend.key_file",
            "'..'",
        ),
        (
            "[suspend]\nkey_file = \"/etc/upgraded/\"\n",
            "suspend.key_file",
            "names a directory",
        ),
    ];
    for (text, key, reason_part) in cases {
        let (location, problem) = invalid(text);
        assert_eq!(
            location.position.map(|p| p.line),
            Some(text.lines().count()),
            "{text}"
        );
        match problem {
            Invalid::BadValue {
                key: k,
                reason,
                hint,
                ..
            } => {
                assert_eq!(k, key, "{text}");
                assert!(reason.contains(reason_part), "{text}: {reason}");
                assert!(!hint.is_empty());
            }
            other => panic!("{text}: {other:?}"),
        }
    }
}

#[test]
fn suspend_keys_merge_one_by_one_and_are_checked_at_their_line() {
    // A drop-in turns encryption on; the key file of the main file stays.
    let settings = load_two(
        "[suspend]\nkey_file = \"/srv/keys/suspend.key\"\n",
        "[suspend]\nencrypt = true\n",
    )
    .unwrap();
    assert_eq!(
        settings.suspend,
        SuspendSettings {
            encrypt: true,
            compress: SuspendCompression::None,
            key_file: PathBuf::from("/srv/keys/suspend.key"),
        }
    );
    // A bad key file in the drop-in is reported there, line and column.
    let err = load_two(
        "[suspend]\nencrypt = true\n",
        "# local\n[suspend]\nkey_file = \"keys/suspend.key\"\n",
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("{DROPIN}:3:12: ")) && text.contains("suspend.key_file"),
        "{text}"
    );
    // A later file repairs it.
    let settings = load_documents([
        (Path::new(MAIN), "[suspend]\nkey_file = \"relative\"\n"),
        (
            Path::new(DROPIN),
            "[suspend]\nkey_file = \"/etc/upgraded/other.key\"\n",
        ),
    ])
    .unwrap();
    assert_eq!(
        settings.suspend.key_file,
        PathBuf::from("/etc/upgraded/other.key")
    );
    // A wrong type gets the type's hint.
    let (location, message, _) = parse_failure("[suspend]\nencrypt = \"yes\"\n");
    assert_eq!(location.position.map(|p| p.line), Some(2));
    assert!(message.contains("bool"), "{message}");
}

#[test]
fn compression_is_for_suspends_on_disk_backed_areas() {
    let settings = ok("[suspend]\nencrypt = true\ncompress = \"zstd\"\n");
    assert_eq!(settings.suspend.compress, SuspendCompression::Zstd);
    assert!(settings.suspend.seals());
    assert_eq!(ok("").suspend.compress, SuspendCompression::None);
    assert!(!ok("").suspend.seals());
    assert_eq!(
        ok("[suspend]\ncompress = \"none\"\n").suspend.compress,
        SuspendCompression::None
    );
    // Compressed without encryption: a sealed file that needs no key.
    let settings = ok("[suspend]\ncompress = \"zstd\"\n");
    assert!(!settings.suspend.encrypt);
    assert!(settings.suspend.seals());
    // A pmem area is memory already: refused at its line, saying what to do, also
    // when a drop-in is what made the area pmem.
    let pmem = "[area]\nkind = \"pmem\"\ndevice = \"/dev/pmem0\"\n";
    let (location, problem) = invalid(&format!("{pmem}[suspend]\ncompress = \"zstd\"\n"));
    assert_eq!(location.position.map(|p| p.line), Some(5));
    let text = problem.to_string();
    assert!(
        text.contains("suspend.compress = \"zstd\" does not apply to an area of kind = \"pmem\""),
        "{text}"
    );
    assert!(
        problem.hint().contains("remove compress"),
        "{}",
        problem.hint()
    );
    let err = load_two("[suspend]\ncompress = \"zstd\"\n", pmem).unwrap_err();
    assert!(err.to_string().starts_with(&format!("{MAIN}:2:")), "{err}");
    ok(&format!("{pmem}[suspend]\ncompress = \"none\"\n"));
    // Another algorithm is a parse error naming the values there are.
    let (location, message, _) = parse_failure("[suspend]\ncompress = \"xz\"\n");
    assert_eq!(location.position.map(|p| p.line), Some(2));
    assert!(
        message.contains("none") && message.contains("zstd"),
        "{message}"
    );
}

#[test]
fn known_good_is_current_or_a_release() {
    assert_eq!(
        ok("[kernel]\nknown_good = \"current\"\n").kernel.known_good,
        KnownGood::Current
    );
    let (location, problem) = invalid("[kernel]\nknown_good = \"../vmlinuz\"\n");
    assert_eq!(location, at(MAIN, 2, 14));
    assert!(
        problem
            .to_string()
            .starts_with("kernel.known_good = \"../vmlinuz\" is not valid"),
        "{problem}"
    );
    assert!(problem.hint().contains("uname -r"), "{}", problem.hint());
}

#[test]
fn cmdline_errors_point_at_the_offending_element() {
    let text = "[kernel]\nextra_cmdline = [\n  \"quiet\",\n  \"upgraded.generation=7\",\n]\n";
    let (location, problem) = invalid(text);
    assert_eq!(location, at(MAIN, 4, 3));
    match problem {
        Invalid::BadValue { key, value, .. } => {
            assert_eq!(key, "kernel.extra_cmdline");
            assert_eq!(value, "\"upgraded.generation=7\"");
        }
        other => panic!("{other:?}"),
    }
    for bad in ["a b", "\"x", "--", "rd.upgraded.x=1", ""] {
        let text = format!("[kernel]\nextra_cmdline = [{}]\n", toml_string(bad));
        invalid(&text);
    }
}

fn toml_string(value: &str) -> String {
    toml::Value::String(value.to_string()).to_string()
}

#[test]
fn workloads_need_a_name_and_a_kind() {
    let (location, problem) = invalid("\n[[workload]]\nkind = \"tmux\"\n");
    assert_eq!(location, at(MAIN, 2, 1));
    assert_eq!(
        problem,
        Invalid::WorkloadKeyMissing {
            workload: None,
            key: "name",
            kind: None
        }
    );
    assert_eq!(problem.to_string(), "this [[workload]] has no `name`");

    let (location, problem) = invalid("[[workload]]\nname = \"a\"\n");
    assert_eq!(location, at(MAIN, 1, 1));
    assert_eq!(problem.to_string(), "workload \"a\" has no `kind`");
    assert!(
        problem.hint().contains("\"process\", \"service\""),
        "{}",
        problem.hint()
    );
}

#[test]
fn workload_names_are_checked() {
    for bad in ["", "a b", "../etc", "-x", "ä"] {
        let text = format!(
            "[[workload]]\nname = {}\nkind = \"tmux\"\n",
            toml_string(bad)
        );
        let (location, problem) = invalid(&text);
        assert_eq!(location, at(MAIN, 2, 8), "{bad:?}");
        assert!(
            matches!(&problem, Invalid::BadValue { key, .. } if key == "workload.name"),
            "{bad:?}: {problem:?}"
        );
    }
    let long = "n".repeat(65);
    invalid(&format!(
        "[[workload]]\nname = \"{long}\"\nkind = \"tmux\"\n"
    ));
}

#[test]
fn every_kind_needs_its_selector_except_tmux() {
    for kind in WorkloadKind::ALL {
        let text = format!("[[workload]]\nname = \"w\"\nkind = \"{kind}\"\n");
        if kind == WorkloadKind::Tmux {
            assert_eq!(
                ok(&text).workloads[0].selector,
                Selector::Tmux {
                    socket: DEFAULT_TMUX_SOCKET.into()
                }
            );
            continue;
        }
        let (location, problem) = invalid(&text);
        assert_eq!(location, at(MAIN, 1, 1), "{kind}");
        assert_eq!(
            problem,
            Invalid::WorkloadKeyMissing {
                workload: Some("w".into()),
                key: kind.selector_key(),
                kind: Some(kind)
            }
        );
        assert!(
            problem.hint().contains(kind.selector_example()),
            "{}",
            problem.hint()
        );
        // The example in the hint is itself accepted.
        ok(&format!("{text}{}\n", kind.selector_example()));
    }
}

#[test]
fn a_selector_of_another_kind_is_refused_at_its_line() {
    let text = "[[workload]]\nname = \"w\"\nkind = \"service\"\nunit = \"w.service\"\npid = 42\n";
    let (location, problem) = invalid(text);
    assert_eq!(location, at(MAIN, 5, 7));
    assert_eq!(
        problem,
        Invalid::SelectorNotForKind {
            workload: "w".into(),
            key: "pid",
            kind: WorkloadKind::Service
        }
    );
    assert!(
        problem.hint().contains("set kind to process"),
        "{}",
        problem.hint()
    );

    // Wrong key instead of the right one: still names the wrong key.
    let (_, problem) = invalid("[[workload]]\nname = \"w\"\nkind = \"podman\"\nmachine = \"m\"\n");
    assert_eq!(
        problem,
        Invalid::SelectorNotForKind {
            workload: "w".into(),
            key: "machine",
            kind: WorkloadKind::Podman
        }
    );
    let (_, problem) =
        invalid("[[workload]]\nname = \"w\"\nkind = \"process\"\nunit = \"x.scope\"\n");
    assert!(
        problem.hint().contains("service or scope"),
        "{}",
        problem.hint()
    );
}

#[test]
fn selector_values_are_checked() {
    let cases = [
        ("service", "unit = \"nginx\"", "workload.unit"),
        ("scope", "unit = \"x.service\"", "workload.unit"),
        ("session", "session = \"3 4\"", "workload.session"),
        (
            "tmux",
            "socket = \"/tmp/tmux-0/default\"",
            "workload.socket",
        ),
        ("screen", "screen = \"\"", "workload.screen"),
        ("podman", "container = \"-x\"", "workload.container"),
        ("nspawn", "machine = \".x\"", "workload.machine"),
    ];
    for (kind, line, key) in cases {
        let text = format!("[[workload]]\nname = \"w\"\nkind = \"{kind}\"\n{line}\n");
        let (location, problem) = invalid(&text);
        assert_eq!(location.position.map(|p| p.line), Some(4), "{text}");
        assert!(
            matches!(&problem, Invalid::BadValue { key: k, .. } if k == key),
            "{text}: {problem:?}"
        );
    }
}

#[test]
fn check_commands_are_checked() {
    let (location, problem) = invalid("[[workload]]\nname = \"w\"\nkind = \"tmux\"\ncheck = []\n");
    assert_eq!(location, at(MAIN, 4, 9));
    assert!(
        problem.hint().contains("check = [\"curl\""),
        "{}",
        problem.hint()
    );
}

#[test]
fn two_workloads_for_the_same_target_are_refused() {
    let text = "[[workload]]\nname = \"a\"\nkind = \"tmux\"\n\n[[workload]]\nname = \"b\"\nkind = \"tmux\"\nsocket = \"default\"\n";
    let (location, problem) = invalid(text);
    assert_eq!(location, at(MAIN, 5, 1));
    assert_eq!(
        problem,
        Invalid::SameTarget {
            name: "b".into(),
            other: "a".into(),
            other_at: at(MAIN, 1, 1),
            kind: WorkloadKind::Tmux,
            target: "default".into()
        }
    );
    // Different pids are different targets.
    ok("[[workload]]\nname = \"a\"\nkind = \"process\"\npid = 5\n[[workload]]\nname = \"b\"\nkind = \"process\"\npid = 6\n");
}

#[test]
fn errors_display_as_location_message_and_hint() {
    let err = fails("[boot]\nmax_attempts = 0\n");
    assert_eq!(
        err.to_string(),
        "/etc/upgraded/upgraded.toml:2:16: boot.max_attempts = 0 is out of range 1..=10\n  \
         hint: set max_attempts to a value from 1 to 10, or remove it to get the default (2)"
    );
    let err = fails("[boot]\nmax_attempt = 3\n");
    let text = err.to_string();
    assert!(
        text.starts_with("/etc/upgraded/upgraded.toml:2:1: unknown field `max_attempt`"),
        "{text}"
    );
    assert!(
        text.contains("\n  hint: did you mean `max_attempts`?"),
        "{text}"
    );
}

// ---- size ----

/// A file of `n` process workloads, four lines each.
fn many_workloads(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "[[workload]]\nname = \"w{i}\"\nkind = \"process\"\npid = {}\n",
                i + 2
            )
        })
        .collect()
}

#[test]
fn many_workloads_load_in_linear_time() {
    // Found with the fuzz target's harness (docs/fuzzing.md): the line and column of
    // every value were counted from the start of the file, and every workload was
    // compared with every other, so this 900 KB file took 25 s to load (release).
    let n = 16_000;
    let text = many_workloads(n);
    assert!(text.len() as u64 <= MAX_CONFIG_SIZE);
    let start = std::time::Instant::now();
    assert_eq!(ok(&text).workloads.len(), n);
    // Generous for a debug build on a busy machine: the quadratic loader took minutes.
    let elapsed = start.elapsed();
    assert!(elapsed.as_secs() < 60, "{n} workloads took {elapsed:?}");
    // Locations are still exact at the end of a large file.
    let (location, problem) = invalid(&format!(
        "{text}[[workload]]\nname = \"again\"\nkind = \"process\"\npid = 2\n"
    ));
    assert_eq!(location, at(MAIN, 4 * n + 1, 1));
    assert!(
        matches!(&problem, Invalid::SameTarget { other, other_at, .. }
            if other == "w0" && *other_at == at(MAIN, 1, 1)),
        "{problem:?}"
    );
}

#[test]
fn files_over_the_size_limit_are_refused() {
    let limit = MAX_CONFIG_SIZE as usize;
    // A comment: only the size is wrong.
    let largest = format!("#{}", "x".repeat(limit - 1));
    assert_eq!(ok(&largest), Settings::default());
    let larger = format!("{largest}x");
    match fails(&larger) {
        ConfigError::TooLarge { path, size, limit } => {
            assert_eq!(path, Path::new(MAIN));
            assert_eq!((size, limit), (MAX_CONFIG_SIZE + 1, MAX_CONFIG_SIZE));
        }
        other => panic!("expected TooLarge, got: {other}"),
    }

    let root = Root::new();
    let dropin = root.write("etc/upgraded/config.d/10-big.toml", &larger);
    let err = load(&root.paths()).unwrap_err();
    assert_eq!(err.location(), Location::file(&dropin));
    assert_eq!(
        err.message(),
        format!(
            "the file is {} bytes long, over the limit of {limit} bytes",
            limit + 1
        )
    );
    assert!(err.hint().contains("a few kilobytes"), "{err}");
}

// ---- serialization ----

#[test]
fn shown_configuration_loads_back_unchanged() {
    let settings = ok(r#"
[area]
kind = "pmem"
device = "/dev/pmem0"
memmap = "2048M!6G"

[kernel]
known_good = "6.1.0-47-amd64"
extra_cmdline = ["quiet"]

[[workload]]
name = "web"
kind = "service"
unit = "nginx.service"
check = ["curl", "http://localhost/"]
pre_dump = 1

[suspend]
encrypt = true
key_file = "/srv/keys/suspend.key"

[[workload]]
name = "p"
kind = "process"
pid = 999
leave_running = true
"#);
    let text = toml::to_string(&settings).unwrap();
    assert!(text.contains("memmap = \"2G!6G\""), "{text}");
    assert_eq!(ok(&text), settings, "{text}");
    assert_eq!(
        ok(&toml::to_string(&Settings::default()).unwrap()),
        Settings::default()
    );
}

#[test]
fn json_form_has_the_file_keys() {
    let settings = ok("[[workload]]\nname = \"s\"\nkind = \"screen\"\nscreen = \"x\"\n");
    let json = serde_json::to_value(&settings).unwrap();
    assert_eq!(json["area"]["kind"], "directory");
    assert_eq!(json["area"]["path"], "/var/lib/upgraded");
    assert_eq!(json["kernel"]["known_good"], "current");
    assert_eq!(json["suspend"]["encrypt"], false);
    assert_eq!(json["suspend"]["key_file"], "/etc/upgraded/suspend.key");
    assert_eq!(json["workload"][0]["kind"], "screen");
    assert_eq!(json["workload"][0]["screen"], "x");
    assert!(json["workload"][0].get("check").is_none());
}

// ---- files on disk ----

struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    fn new() -> Root {
        Root {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn paths(&self) -> ConfigPaths {
        ConfigPaths::under_root(self.dir.path())
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn write(&self, relative: &str, text: &str) -> PathBuf {
        let path = self.path(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
        path
    }

    fn discovered(&self) -> Vec<PathBuf> {
        self.paths()
            .discover()
            .unwrap()
            .into_iter()
            .map(|s| s.path)
            .collect()
    }
}

#[test]
fn system_paths_and_root_prefix() {
    let system = ConfigPaths::system();
    assert_eq!(system.main, PathBuf::from("/etc/upgraded/upgraded.toml"));
    assert_eq!(
        system.dropin_dirs,
        [
            PathBuf::from("/usr/lib/upgraded/config.d"),
            PathBuf::from("/run/upgraded/config.d"),
            PathBuf::from("/etc/upgraded/config.d"),
        ]
    );
    let rooted = ConfigPaths::under_root(Path::new("/tmp/root"));
    assert_eq!(
        rooted.main,
        PathBuf::from("/tmp/root/etc/upgraded/upgraded.toml")
    );
    assert_eq!(
        rooted.dropin_dirs[0],
        PathBuf::from("/tmp/root/usr/lib/upgraded/config.d")
    );
}

#[test]
fn nothing_on_disk_loads_the_defaults() {
    let root = Root::new();
    let loaded = load(&root.paths()).unwrap();
    assert!(loaded.sources.is_empty());
    assert_eq!(loaded.settings, Settings::default());
}

#[test]
fn main_file_first_then_dropins_by_name_across_directories() {
    let root = Root::new();
    root.write("etc/upgraded/config.d/30-c.toml", "");
    root.write("usr/lib/upgraded/config.d/10-a.toml", "");
    root.write("run/upgraded/config.d/20-b.toml", "");
    root.write("usr/lib/upgraded/config.d/40-d.toml", "");
    root.write("etc/upgraded/upgraded.toml", "");
    assert_eq!(
        root.discovered(),
        [
            root.path("etc/upgraded/upgraded.toml"),
            root.path("usr/lib/upgraded/config.d/10-a.toml"),
            root.path("run/upgraded/config.d/20-b.toml"),
            root.path("etc/upgraded/config.d/30-c.toml"),
            root.path("usr/lib/upgraded/config.d/40-d.toml"),
        ]
    );
    let sources = root.paths().discover().unwrap();
    assert_eq!(sources[0].role, SourceRole::Main);
    assert!(sources[1..].iter().all(|s| s.role == SourceRole::DropIn));
}

#[test]
fn etc_overrides_run_overrides_usr_lib() {
    let root = Root::new();
    let lib = root.write(
        "usr/lib/upgraded/config.d/10-x.toml",
        "[retention]\nkeep = 1\n",
    );
    let run = root.write("run/upgraded/config.d/10-x.toml", "[retention]\nkeep = 2\n");
    let etc = root.write(
        "etc/upgraded/config.d/10-x.toml",
        "[boot]\nmax_attempts = 5\n",
    );
    let loaded = load(&root.paths()).unwrap();
    assert_eq!(loaded.sources.len(), 1);
    assert_eq!(loaded.sources[0].path, etc);
    assert_eq!(loaded.sources[0].overrides, [lib, run.clone()]);
    // Only the /etc file is read: neither keep = 1 nor keep = 2 applies.
    assert_eq!(loaded.settings.retention.keep, 3);
    assert_eq!(loaded.settings.boot.max_attempts, 5);

    fs::remove_file(root.path("etc/upgraded/config.d/10-x.toml")).unwrap();
    let loaded = load(&root.paths()).unwrap();
    assert_eq!(loaded.sources[0].path, run);
    assert_eq!(loaded.settings.retention.keep, 2);
}

#[test]
fn a_dropin_linked_to_dev_null_is_masked() {
    let root = Root::new();
    root.write(
        "usr/lib/upgraded/config.d/10-vendor.toml",
        "[retention]\nkeep = 9\n",
    );
    fs::create_dir_all(root.path("etc/upgraded/config.d")).unwrap();
    let mask = root.path("etc/upgraded/config.d/10-vendor.toml");
    symlink("/dev/null", &mask).unwrap();
    let loaded = load(&root.paths()).unwrap();
    assert_eq!(loaded.sources.len(), 1);
    assert!(loaded.sources[0].masked);
    assert_eq!(loaded.sources[0].path, mask);
    assert_eq!(loaded.settings.retention.keep, 3);
}

#[test]
fn hidden_files_other_suffixes_and_directories_are_ignored() {
    let root = Root::new();
    root.write("etc/upgraded/config.d/.10-swap.toml", "broken");
    root.write("etc/upgraded/config.d/10-a.toml~", "broken");
    root.write("etc/upgraded/config.d/10-a.conf", "broken");
    root.write("etc/upgraded/config.d/dir.toml/inner.toml", "broken");
    let good = root.write("etc/upgraded/config.d/20-good.toml", "");
    assert_eq!(root.discovered(), [good]);
    load(&root.paths()).unwrap();
}

#[test]
fn a_dangling_dropin_symlink_is_reported() {
    let root = Root::new();
    fs::create_dir_all(root.path("etc/upgraded/config.d")).unwrap();
    let link = root.path("etc/upgraded/config.d/10-gone.toml");
    symlink("/nonexistent/upgraded-test", &link).unwrap();
    let err = load(&root.paths()).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Read { path, .. } if *path == link),
        "{err}"
    );
    assert!(err.hint().contains("dangling symlink"), "{}", err.hint());
}

#[test]
fn a_dangling_main_file_symlink_is_reported() {
    let root = Root::new();
    fs::create_dir_all(root.path("etc/upgraded")).unwrap();
    symlink(
        "/nonexistent/upgraded-test",
        root.path("etc/upgraded/upgraded.toml"),
    )
    .unwrap();
    let err = root.paths().discover().unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err}");
}

#[test]
fn a_dropin_directory_that_is_a_file_is_reported() {
    let root = Root::new();
    let not_a_dir = root.write("run/upgraded/config.d", "");
    let err = root.paths().discover().unwrap_err();
    assert!(
        matches!(&err, ConfigError::ReadDir { path, .. } if *path == not_a_dir),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("hint: make the directory readable"),
        "{err}"
    );
}

#[test]
fn errors_from_files_carry_their_path() {
    let root = Root::new();
    root.write(
        "etc/upgraded/upgraded.toml",
        "[health]\ntimeout_secs = 60\n",
    );
    let dropin = root.write(
        "run/upgraded/config.d/50-x.toml",
        "# comment\n[health]\nsettle_secs = 90\n",
    );
    let err = load(&root.paths()).unwrap_err();
    assert_eq!(
        err.location(),
        Location {
            path: dropin,
            position: Some(Position {
                line: 3,
                column: 15
            })
        }
    );
}

#[test]
fn non_utf8_files_are_reported_at_the_bad_byte() {
    let root = Root::new();
    let main = root.path("etc/upgraded/upgraded.toml");
    fs::create_dir_all(main.parent().unwrap()).unwrap();
    fs::write(&main, b"[boot]\nmax_attempts = 2 # \xff\n").unwrap();
    let err = load(&root.paths()).unwrap_err();
    assert_eq!(
        err.location(),
        Location {
            path: main,
            position: Some(Position {
                line: 2,
                column: 20
            })
        }
    );
    assert!(err.message().contains("UTF-8"), "{err}");
}

#[test]
fn pre_dump_takes_a_number_or_auto_and_nothing_else() {
    let s = ok("[[workload]]\nname = \"a\"\nkind = \"tmux\"\npre_dump = \"auto\"\n");
    assert_eq!(s.workloads[0].pre_dump, PreDumps::Auto);
    let s = ok("[[workload]]\nname = \"a\"\nkind = \"tmux\"\npre_dump = 3\n");
    assert_eq!(s.workloads[0].pre_dump, PreDumps::Fixed(3));
    let s = ok("[[workload]]\nname = \"a\"\nkind = \"tmux\"\n");
    assert_eq!(s.workloads[0].pre_dump, PreDumps::None);
    // Written back as it was written.
    let shown = toml::to_string(&ok(
        "[[workload]]\nname = \"a\"\nkind = \"tmux\"\npre_dump = \"auto\"\n",
    ))
    .unwrap();
    assert!(shown.contains("pre_dump = \"auto\""), "{shown}");
    for bad in ["\"Auto\"", "\"always\"", "\"3\"", "2.5", "true"] {
        let text = format!("[[workload]]\nname = \"a\"\nkind = \"tmux\"\npre_dump = {bad}\n");
        let err = load_one(&text).expect_err(&text).to_string();
        assert!(
            err.contains("50-local.toml") || err.contains("upgraded.toml:4"),
            "{text}: {err}"
        );
        assert!(err.contains("auto"), "{text}: {err}");
    }
}
