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

fn fixture() -> Manifest {
    Manifest::from_bytes(FIXTURE_V1_0.as_bytes(), Path::new(FIXTURE_PATH)).unwrap()
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
fn fixture_checksum_covers_the_body_bytes_as_stored() {
    // The rule of the format, checked on the file's text without the parser: the
    // checksum is BLAKE3 of everything from the body's '{' to its '}'.
    let start = FIXTURE_V1_0.find("\"body\": ").unwrap() + "\"body\": ".len();
    let end = FIXTURE_V1_0
        .trim_end()
        .strip_suffix('}')
        .unwrap()
        .trim_end()
        .len();
    let body = &FIXTURE_V1_0[start..end];
    assert!(body.starts_with('{') && body.ends_with('}'));
    let header: Value = serde_json::from_str(FIXTURE_V1_0).unwrap();
    assert_eq!(
        header["checksum"].as_str().unwrap(),
        Checksum::of_bytes(body.as_bytes()).as_str()
    );
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
        msg.contains("format 1.1") && msg.contains("update upgraded"),
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
