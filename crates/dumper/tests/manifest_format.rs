//! The manifest format: the released fixture, hand-built bad headers and hostile bodies.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use dumper::manifest::{
    Checksum, GenerationState, Manifest, WorkloadKind, WorkloadState, FORMAT_VERSION,
    MAX_MANIFEST_SIZE,
};
use dumper::Error;
use serde_json::{json, Value};

const FIXTURE_V1_0: &str = include_str!("fixtures/manifest-v1.0.json");
const FIXTURE_PATH: &str = "tests/fixtures/manifest-v1.0.json";
/// Format 1.1: the tmux workload was pre-dumped twice.
const FIXTURE_V1_1: &str = include_str!("fixtures/manifest-v1.1.json");

fn fixture() -> Manifest {
    Manifest::from_bytes(FIXTURE_V1_0.as_bytes(), Path::new(FIXTURE_PATH)).unwrap()
}

fn fixture_v1_1() -> Manifest {
    let path = Path::new("tests/fixtures/manifest-v1.1.json");
    Manifest::from_bytes(FIXTURE_V1_1.as_bytes(), path).unwrap()
}

/// The fixture's body as a JSON value, to be changed and wrapped again.
fn fixture_body() -> Value {
    let envelope: Value = serde_json::from_str(FIXTURE_V1_0).unwrap();
    envelope["body"].clone()
}

/// A manifest file around `body`, with a correct checksum unless one is given.
fn envelope(magic: &str, major: u32, minor: u32, body: &Value, checksum: Option<&str>) -> Vec<u8> {
    let body = serde_json::to_string(body).unwrap();
    let sum = Checksum::of_bytes(body.as_bytes());
    format!(
        r#"{{"magic":"{magic}","format":{{"major":{major},"minor":{minor}}},"checksum":"{}","body":{body}}}"#,
        checksum.unwrap_or(sum.as_str())
    )
    .into_bytes()
}

fn load(bytes: &[u8]) -> Result<Manifest, Error> {
    Manifest::from_bytes(bytes, Path::new("/test/manifest.json"))
}

fn sample() -> Manifest {
    let mut m = fixture();
    m.state = GenerationState::Pending;
    m
}

#[test]
fn fixture_v1_0_parses_and_validates() {
    let m = fixture();
    assert_eq!(m.generation.as_str(), "20251124T100000Z-6.1.0-40-amd64");
    assert_eq!(m.state, GenerationState::Committed);
    assert_eq!(m.created_rfc3339(), "2025-11-24T10:00:00Z");
    assert_eq!(m.source.kernel_release, "6.1.0-40-amd64");
    assert_eq!(m.source.criu_version, "3.17.1");
    assert_eq!(m.source.cpu["vendor_id"], "GenuineIntel");
    assert!(m.kernel_features.iter().any(|f| f == "mem_dirty_track"));
    assert_eq!(m.workloads.len(), 2);
    let tmux = &m.workloads[0];
    assert_eq!(tmux.name.as_str(), "tmux:main");
    assert_eq!(tmux.kind, WorkloadKind::Tmux);
    assert_eq!(tmux.state, WorkloadState::Committed);
    assert_eq!(tmux.root_pid, 1234);
    let pg = &m.workloads[1];
    assert_eq!(pg.kind, WorkloadKind::Service);
    assert_eq!(pg.unit.as_deref(), Some("postgresql@15-main.service"));
    assert!(pg.images.iter().any(|i| i.name.as_str() == "pages-1.img"));
    m.validate().unwrap();
}

#[test]
fn fixture_v1_1_parses_and_validates() {
    let m = fixture_v1_1();
    assert_eq!(m.generation.as_str(), "20251124T100500Z-6.1.0-40-amd64");
    let tmux = &m.workloads[0];
    assert_eq!(tmux.pre_dumps().into_iter().collect::<Vec<_>>(), [1, 2]);
    assert_eq!(tmux.options["pre_dump"], "2");
    assert_eq!(tmux.options["parent"], "pre-2");
    let bytes_of = |i| -> u64 {
        tmux.images
            .iter()
            .filter(|f| f.name.pre_dump() == Some(i))
            .map(|f| f.size)
            .sum()
    };
    assert_eq!(
        tmux.options["pre_dump_bytes"],
        format!("{},{}", bytes_of(1), bytes_of(2))
    );
    let pages = tmux
        .images
        .iter()
        .find(|i| i.name.as_str() == "pre-1/pages-1.img")
        .unwrap();
    assert_eq!(
        (pages.name.pre_dump(), pages.name.file_name()),
        (Some(1), "pages-1.img")
    );
    let links: Vec<(&str, &str)> = tmux
        .links
        .iter()
        .map(|l| (l.name.as_str(), l.target.as_str()))
        .collect();
    assert_eq!(links, [("parent", "pre-2"), ("pre-2/parent", "../pre-1")]);
    // A workload without pre-dumps is as in 1.0.
    let pg = &m.workloads[1];
    assert!(pg.links.is_empty() && pg.pre_dumps().is_empty());
    assert!(pg.images.iter().all(|i| i.name.pre_dump().is_none()));
    m.validate().unwrap();
    assert_eq!(load(&m.to_bytes().unwrap()).unwrap(), m);
}

#[test]
fn a_v1_0_manifest_is_read_as_workloads_without_pre_dumps() {
    let m = fixture();
    assert!(m.workloads.iter().all(|w| w.links.is_empty()));
    // Written again, it is format 1.1 with empty link lists.
    let bytes = String::from_utf8(m.to_bytes().unwrap()).unwrap();
    assert!(
        bytes.contains("\"minor\": 1") && bytes.contains("\"links\": []"),
        "{bytes}"
    );
    assert_eq!(load(bytes.as_bytes()).unwrap(), m);
}

#[test]
fn fixture_checksum_covers_the_body_bytes_as_stored() {
    // The rule of the format, checked on the file's text without the parser: the
    // checksum is BLAKE3 of everything from the body's '{' to its '}'.
    for fixture in [FIXTURE_V1_0, FIXTURE_V1_1] {
        let start = fixture.find("\"body\": ").unwrap() + "\"body\": ".len();
        let end = fixture
            .trim_end()
            .strip_suffix('}')
            .unwrap()
            .trim_end()
            .len();
        let body = &fixture[start..end];
        assert!(body.starts_with('{') && body.ends_with('}'));
        let header: Value = serde_json::from_str(fixture).unwrap();
        assert_eq!(
            header["checksum"].as_str().unwrap(),
            Checksum::of_bytes(body.as_bytes()).as_str()
        );
    }
}

#[test]
fn round_trip_through_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manifest.json");
    let m = sample();
    m.save(&path).unwrap();
    assert_eq!(Manifest::load(&path).unwrap(), m);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600);
    // Nothing left of the temporary file.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["manifest.json"]);

    // Saving again replaces it.
    let mut m2 = m.clone();
    m2.state = GenerationState::Restored;
    m2.save(&path).unwrap();
    assert_eq!(Manifest::load(&path).unwrap(), m2);
}

#[test]
fn round_trip_through_bytes_and_a_rebuilt_envelope() {
    let m = sample();
    assert_eq!(load(&m.to_bytes().unwrap()).unwrap(), m);
    // A compact body in a hand-built envelope reads the same: the checksum is over the
    // bytes as stored, whatever their layout.
    assert_eq!(
        load(&envelope("upgraded-manifest", 1, 0, &fixture_body(), None)).unwrap(),
        fixture()
    );
}

#[test]
fn wrong_magic_is_refused() {
    let bytes = envelope("upgraded-manifesto", 1, 0, &fixture_body(), None);
    let err = load(&bytes).unwrap_err();
    assert!(matches!(err, Error::ManifestBadMagic { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("/test/manifest.json"), "{msg}");
    assert!(msg.contains("\"upgraded-manifesto\""), "{msg}");

    let err = load(br#"{"format":{"major":1,"minor":0}}"#).unwrap_err();
    assert!(
        matches!(&err, Error::ManifestBadMagic { found, .. } if found == "none"),
        "{err:?}"
    );

    let err = load(br#"{"magic":7}"#).unwrap_err();
    assert!(matches!(err, Error::ManifestBadMagic { .. }), "{err:?}");
}

#[test]
fn another_major_is_refused() {
    for major in [0, 2] {
        let err = load(&envelope(
            "upgraded-manifest",
            major,
            0,
            &fixture_body(),
            None,
        ))
        .unwrap_err();
        assert!(
            matches!(err, Error::ManifestUnsupportedMajor { .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&format!("format {major}.0")), "{msg}");
        assert!(msg.contains("reads only format 1.x"), "{msg}");
    }
    // Even a body this reader would not understand is refused for its version first.
    let bytes = envelope(
        "upgraded-manifest",
        2,
        0,
        &json!({"whatever": [1, 2]}),
        Some("x"),
    );
    let err = load(&bytes).unwrap_err();
    assert!(
        matches!(err, Error::ManifestUnsupportedMajor { .. }),
        "{err:?}"
    );
}

#[test]
fn a_newer_minor_is_refused() {
    let err = load(&envelope(
        "upgraded-manifest",
        FORMAT_VERSION.major,
        FORMAT_VERSION.minor + 1,
        &fixture_body(),
        None,
    ))
    .unwrap_err();
    assert!(matches!(err, Error::ManifestNewerMinor { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("format 1.2, newer than format 1.1") && msg.contains("update upgraded"),
        "{msg}"
    );
}

#[test]
fn one_changed_byte_of_the_body_is_caught() {
    let bytes = FIXTURE_V1_0.replace("\"root_pid\": 1234", "\"root_pid\": 1235");
    assert_ne!(bytes, FIXTURE_V1_0);
    let err = load(bytes.as_bytes()).unwrap_err();
    assert!(matches!(err, Error::ManifestChecksum { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("damaged") && msg.contains("discard"), "{msg}");

    // Whitespace inside the body counts too: the bytes are what is checked.
    let bytes = FIXTURE_V1_0.replacen("\"state\": \"committed\"", "\"state\":  \"committed\"", 1);
    let err = load(bytes.as_bytes()).unwrap_err();
    assert!(matches!(err, Error::ManifestChecksum { .. }), "{err:?}");

    // A checksum that is no hex at all is a mismatch, shown escaped.
    let bytes = envelope(
        "upgraded-manifest",
        1,
        0,
        &fixture_body(),
        Some("zz\\u0000"),
    );
    let err = load(&bytes).unwrap_err();
    assert!(
        matches!(&err, Error::ManifestChecksum { expected, .. } if expected == r#""zz\0""#),
        "{err:?}"
    );
}

#[test]
fn an_oversize_manifest_is_refused_unread() {
    let bytes = vec![b' '; MAX_MANIFEST_SIZE as usize + 1];
    let err = load(&bytes).unwrap_err();
    assert!(matches!(err, Error::ManifestTooLarge { .. }), "{err:?}");

    // A sparse file: refused from its size, without reading 16 MiB.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manifest.json");
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(MAX_MANIFEST_SIZE + 1).unwrap();
    let err = Manifest::load(&path).unwrap_err();
    assert!(
        matches!(&err, Error::ManifestTooLarge { size, .. } if *size == MAX_MANIFEST_SIZE + 1),
        "{err:?}"
    );
    assert!(err.to_string().contains(&path.display().to_string()));

    // Writing is capped as well.
    let mut m = sample();
    m.workloads[0].command_line = vec!["x".repeat(100 * 1024); 200];
    let err = m.to_bytes().unwrap_err();
    assert!(err.to_string().contains("limit"), "{err}");
}

/// Sets `pointer` in the fixture's body to `value` and loads the result with a correct
/// checksum: only validation can refuse it.
fn load_with(pointer: &str, value: Value) -> Result<Manifest, Error> {
    let mut body = fixture_body();
    *body
        .pointer_mut(pointer)
        .unwrap_or_else(|| panic!("{pointer}")) = value;
    load(&envelope("upgraded-manifest", 1, 0, &body, None))
}

/// [`load_with`] on the 1.1 fixture, whose workload 0 was pre-dumped twice.
fn load_v1_1_with(pointer: &str, value: Value) -> Result<Manifest, Error> {
    let file: Value = serde_json::from_str(FIXTURE_V1_1).unwrap();
    let mut body = file["body"].clone();
    *body
        .pointer_mut(pointer)
        .unwrap_or_else(|| panic!("{pointer}")) = value;
    load(&envelope("upgraded-manifest", 1, 1, &body, None))
}

/// Like [`assert_invalid`], and the reason says `why`.
fn assert_refused(result: Result<Manifest, Error>, field: &str, value: &str, why: &str) {
    let err = result.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(why), "{field} {value}: {msg}");
    assert_invalid(Err(err), field, value);
}

fn assert_invalid(result: Result<Manifest, Error>, field: &str, value: &str) {
    let err = result.unwrap_err();
    let Error::ManifestInvalid { problem, .. } = &err else {
        panic!("expected ManifestInvalid, got {err:?}");
    };
    assert_eq!(problem.field, field, "{err}");
    assert_eq!(problem.value, value, "{err}");
    let msg = err.to_string();
    assert!(msg.contains(field) && msg.contains(value), "{msg}");
    assert!(msg.contains("/test/manifest.json"), "{msg}");
}

#[test]
fn hostile_image_names_are_refused() {
    let at = "/workloads/1/images/3/name";
    let field = "workloads[1].images[3].name";
    for (name, shown) in [
        ("../../../etc/shadow", r#""../../../etc/shadow""#),
        ("/etc/shadow", r#""/etc/shadow""#),
        ("..", "\"..\""),
        (".", "\".\""),
        ("", "\"\""),
        ("pages\u{0}.img", r#""pages\0.img""#),
        ("a\nb", r#""a\nb""#),
        ("sub/dir.img", r#""sub/dir.img""#),
    ] {
        assert_invalid(load_with(at, json!(name)), field, shown);
    }
    let long = "p".repeat(256);
    let err = load_with(at, json!(long)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(field) && msg.contains("(256 bytes)"), "{msg}");
    assert!(
        msg.len() < 600,
        "the long name is cut short in the message: {msg}"
    );
}

#[test]
fn hostile_ids_and_workload_names_are_refused() {
    assert_invalid(
        load_with("/generation", json!("..")),
        "generation",
        "\"..\"",
    );
    assert_invalid(
        load_with("/generation", json!("../x")),
        "generation",
        r#""../x""#,
    );
    assert_invalid(
        load_with("/generation", json!(".tmp-x")),
        "generation",
        r#"".tmp-x""#,
    );
    assert_invalid(
        load_with("/workloads/0/name", json!("../../root")),
        "workloads[0].name",
        r#""../../root""#,
    );
    assert_invalid(
        load_with("/workloads/0/name", json!("/abs")),
        "workloads[0].name",
        r#""/abs""#,
    );
    assert_invalid(
        load_with("/workloads/0/name", json!("manifest.json")),
        "workloads[0].name",
        r#""manifest.json""#,
    );
    assert_invalid(
        load_with("/workloads/1/name", json!("tmux:main")),
        "workloads[1].name",
        r#""tmux:main""#,
    );
}

#[test]
fn hostile_paths_and_strings_are_refused() {
    assert_invalid(
        load_with("/source/kernel_release", json!("../../boot/evil")),
        "source.kernel_release",
        r#""../../boot/evil""#,
    );
    assert_invalid(
        load_with("/workloads/1/cgroup", json!("/system.slice/../../x")),
        "workloads[1].cgroup",
        r#""/system.slice/../../x""#,
    );
    assert_invalid(
        load_with("/workloads/1/cgroup", json!("system.slice")),
        "workloads[1].cgroup",
        r#""system.slice""#,
    );
    assert_invalid(
        load_with("/workloads/1/unit", json!("a b.service")),
        "workloads[1].unit",
        r#""a b.service""#,
    );
    assert_invalid(
        load_with("/source/proc_version", json!("Linux\u{1b}[2J")),
        "source.proc_version",
        r#""Linux\u{1b}[2J""#,
    );
    assert_invalid(
        load_with("/workloads/0/command_line/0", json!("tm\u{0}ux")),
        "workloads[0].command_line[0]",
        r#""tm\0ux""#,
    );
    assert_invalid(
        load_with("/workloads/0/images/0/checksum", json!("ABC")),
        "workloads[0].images[0].checksum",
        r#""ABC""#,
    );
    assert_invalid(
        load_with("/kernel_features/0", json!("mem dirty")),
        "kernel_features[0]",
        r#""mem dirty""#,
    );
}

#[test]
fn inconsistent_bodies_are_refused() {
    assert_invalid(
        load_with("/workloads/0/root_pid", json!(999)),
        "workloads[0].root_pid",
        "999",
    );
    assert_invalid(
        load_with("/workloads/0/pids/1", json!(0)),
        "workloads[0].pids[1]",
        "0",
    );
    assert_invalid(
        load_with("/workloads/0/pids/1", json!(1234)),
        "workloads[0].pids[1]",
        "1234",
    );
    assert_invalid(
        load_with("/workloads/0/images/1/name", json!("core-1234.img")),
        "workloads[0].images[1].name",
        r#""core-1234.img""#,
    );
    assert_invalid(
        load_with("/created/rfc3339", json!("2025-11-24T10:00:01Z")),
        "created.rfc3339",
        r#""2025-11-24T10:00:01Z""#,
    );
}

#[test]
fn unknown_fields_and_wrong_types_are_refused() {
    let mut body = fixture_body();
    body["surprise"] = json!(true);
    let err = load(&envelope("upgraded-manifest", 1, 0, &body, None)).unwrap_err();
    assert!(
        matches!(err, Error::ManifestSyntax { part: "body", .. }),
        "{err:?}"
    );

    let err = load_with("/workloads/0/kind", json!("vm")).unwrap_err();
    assert!(
        matches!(err, Error::ManifestSyntax { part: "body", .. }),
        "{err:?}"
    );
    let err = load_with("/workloads/0/images/0/size", json!(-1)).unwrap_err();
    assert!(
        matches!(err, Error::ManifestSyntax { part: "body", .. }),
        "{err:?}"
    );

    let mut bytes = FIXTURE_V1_0.trim_end().to_string();
    bytes.pop();
    bytes.push_str(", \"extra\": 1}");
    let err = load(bytes.as_bytes()).unwrap_err();
    assert!(
        matches!(err, Error::ManifestSyntax { part: "header", .. }),
        "{err:?}"
    );

    let array_form = br#"["upgraded-manifest",{"major":1,"minor":0},"x",{}]"#;
    for garbage in [
        &b"not json"[..],
        b"[]",
        b"",
        b"{\"magic\":\"upgraded-manifest\"}",
        array_form,
    ] {
        let err = load(garbage).unwrap_err();
        assert!(
            matches!(err, Error::ManifestSyntax { .. }),
            "{garbage:?}: {err:?}"
        );
    }
}

#[test]
fn every_state_and_kind_round_trips() {
    let mut m = sample();
    for state in [
        GenerationState::Pending,
        GenerationState::Committed,
        GenerationState::Restored,
        GenerationState::Failed,
        GenerationState::RolledBack,
    ] {
        m.state = state;
        assert_eq!(load(&m.to_bytes().unwrap()).unwrap().state, state);
    }
    let bytes = String::from_utf8(m.to_bytes().unwrap()).unwrap();
    assert!(bytes.contains("\"state\": \"rolled-back\""), "{bytes}");
    for kind in [
        WorkloadKind::Process,
        WorkloadKind::Service,
        WorkloadKind::Scope,
        WorkloadKind::Session,
        WorkloadKind::Tmux,
        WorkloadKind::Screen,
        WorkloadKind::Podman,
        WorkloadKind::Nspawn,
    ] {
        m.workloads[0].kind = kind;
        m.workloads[0].state = WorkloadState::Failed;
        let back = load(&m.to_bytes().unwrap()).unwrap();
        assert_eq!(back.workloads[0].kind, kind);
        assert_eq!(back.workloads[0].state, WorkloadState::Failed);
    }
}

#[test]
fn invalid_manifests_are_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manifest.json");
    let mut m = sample();
    m.workloads[1].root_pid = 5;
    let err = m.save(&path).unwrap_err();
    assert!(matches!(err, Error::ManifestInvalid { .. }), "{err:?}");
    assert!(err.to_string().contains("workloads[1].root_pid"), "{err}");
    assert!(!path.exists());
}

#[test]
fn hostile_pre_dump_names_are_refused() {
    // Workload 0's images[9] is "pre-1/inventory.img".
    let at = "/workloads/0/images/9/name";
    let field = "workloads[0].images[9].name";
    for (name, why) in [
        ("pre-1/../x", "in pre-1/: contains a path separator"),
        ("pre-1/..", "in pre-1/: names a directory"),
        (
            "pre-x/a",
            "only directories of a workload are the pre-dump ones",
        ),
        ("pre-0/a", "only directories"),
        ("pre-17/a", "only directories"),
        ("pre-01/a", "only directories"),
        ("a/b/c", "only directories"),
        ("pre-1/a/b", "in pre-1/: contains a path separator"),
    ] {
        assert_refused(
            load_v1_1_with(at, json!(name)),
            field,
            &format!("{name:?}"),
            why,
        );
    }

    let target = "workloads[0].links[0].target";
    for (value, why) in [
        ("/etc", "of its own workload"),
        ("../../x", "of its own workload"),
        ("../../pre-1", "of its own workload"),
        (
            "pre-3",
            "points to pre-3, which is not a pre-dump directory",
        ),
        (
            "pre-1",
            "must point to the newest pre-dump directory, pre-2",
        ),
        ("../pre-2", "without \"../\""),
    ] {
        let pointer = "/workloads/0/links/0/target";
        assert_refused(
            load_v1_1_with(pointer, json!(value)),
            target,
            &format!("{value:?}"),
            why,
        );
    }
    let target = "workloads[0].links[1].target";
    for (value, why) in [
        ("pre-1", "names a directory next to pre-2"),
        (
            "../pre-2",
            "must point to the pre-dump before pre-2, ../pre-1",
        ),
        ("../pre-5", "points to pre-5, which is not"),
    ] {
        let pointer = "/workloads/0/links/1/target";
        assert_refused(
            load_v1_1_with(pointer, json!(value)),
            target,
            &format!("{value:?}"),
            why,
        );
    }
    for (value, why) in [
        ("parent", "names two links"),
        ("pre/parent", "CRIU's parent links"),
        ("pre-2/../parent", "CRIU's parent links"),
        ("/parent", "CRIU's parent links"),
    ] {
        assert_refused(
            load_v1_1_with("/workloads/0/links/1/name", json!(value)),
            "workloads[0].links[1].name",
            &format!("{value:?}"),
            why,
        );
    }
    // pre-1 has no parent: ../pre-1 from there is no chain.
    assert_refused(
        load_v1_1_with("/workloads/0/links/1/name", json!("pre-1/parent")),
        "workloads[0].links[1].target",
        "\"../pre-1\"",
        "the first pre-dump, which has no parent",
    );
}

#[test]
fn an_incomplete_or_clashing_chain_is_refused() {
    // Without the top link the pre-dumps are unreachable; images[16] is the first of
    // pre-2.
    let only_nested = json!([{"name": "pre-2/parent", "target": "../pre-1"}]);
    assert_refused(
        load_v1_1_with("/workloads/0/links", only_nested),
        "workloads[0].images[16].name",
        "\"pre-2/inventory.img\"",
        "no \"parent\" link points to it",
    );
    let only_top = json!([{"name": "parent", "target": "pre-2"}]);
    assert_refused(
        load_v1_1_with("/workloads/0/links", only_top),
        "workloads[0].images[16].name",
        "\"pre-2/inventory.img\"",
        "pre-2, which has no \"parent\" link to ../pre-1",
    );
    // Links without pre-dump directories, on a 1.0-shaped workload.
    let dangling = json!([{"name": "parent", "target": "pre-1"}]);
    assert_refused(
        load_v1_1_with("/workloads/1/links", dangling),
        "workloads[1].links[0].target",
        "\"pre-1\"",
        "not a pre-dump directory",
    );
    // Names that clash with a link or a pre-dump directory.
    assert_refused(
        load_v1_1_with("/workloads/0/images/24/name", json!("parent")),
        "workloads[0].images[24].name",
        "\"parent\"",
        "the name of CRIU's parent links",
    );
    assert_refused(
        load_v1_1_with("/workloads/0/images/24/name", json!("pre-1")),
        "workloads[0].images[24].name",
        "\"pre-1\"",
        "also the name of a pre-dump directory",
    );
    assert_refused(
        load_v1_1_with("/workloads/0/images/22/name", json!("pre-2/parent")),
        "workloads[0].images[22].name",
        "\"pre-2/parent\"",
        "the name of CRIU's parent links",
    );
    // A link object with more than a name and a target.
    let extra = json!([
        {"name": "parent", "target": "pre-2", "mode": "0777"},
        {"name": "pre-2/parent", "target": "../pre-1"}
    ]);
    let err = load_v1_1_with("/workloads/0/links", extra).unwrap_err();
    assert!(
        matches!(err, Error::ManifestSyntax { part: "body", .. }),
        "{err:?}"
    );
}
