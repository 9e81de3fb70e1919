//! The state file: the released fixture, hand-built bad headers, hostile bodies, and
//! the store's atomic, durable writes.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::{json, Value};
use upgraded::state::{
    BootDecision, Event, KernelRelease, Outcome, Phase, StateStore, StoreError, Timestamp,
    TransitionError, UpgradeId, UpgradeState, FORMAT_VERSION, MAX_STATE_SIZE, STATE_FILE,
};

const FIXTURE_V1_0: &str = include_str!("fixtures/state/state-v1.0.json");
const FIXTURE_PATH: &str = "tests/fixtures/state/state-v1.0.json";
const TEST_PATH: &str = "/test/state.json";

fn t(secs: u64, millis: u32) -> Timestamp {
    Timestamp::new(1_763_978_400 + secs, millis * 1_000_000).unwrap()
}

fn release(s: &str) -> KernelRelease {
    KernelRelease::new(s).unwrap()
}

fn plan() -> Event {
    Event::Plan {
        id: UpgradeId::new("20251124T100000Z").unwrap(),
        from: release("6.1.0-40-amd64"),
        to: release("6.1.0-41-amd64"),
        known_good: release("6.1.0-40-amd64"),
    }
}

fn drive(mut state: UpgradeState, events: Vec<(Event, Timestamp)>) -> UpgradeState {
    for (event, now) in events {
        state = state.transition_at(event, now).unwrap();
    }
    state
}

/// The upgrade the fixture records, built through the public API: a health failure
/// after the kexec, rolled back.
fn fixture_state() -> UpgradeState {
    let state = drive(
        UpgradeState::idle(),
        vec![
            (plan(), t(0, 0)),
            (Event::PreDumpDone, t(4, 250)),
            (Event::Freeze, t(4, 300)),
            (Event::DumpStarted, t(4, 420)),
            (Event::DumpDone, t(5, 920)),
            (
                Event::Committed {
                    generation: "20251124T100004Z-6.1.0-40-amd64".parse().unwrap(),
                },
                t(6, 220),
            ),
            (Event::KexecLoaded, t(6, 670)),
            (Event::KexecStarted, t(6, 800)),
        ],
    );
    let mut state = state;
    assert_eq!(state.count_boot_attempt(2), BootDecision::Proceed);
    let mut state = drive(
        state,
        vec![
            (
                Event::BootedNewKernel {
                    release: release("6.1.0-41-amd64"),
                },
                t(10, 0),
            ),
            (Event::RestoreStarted, t(10, 100)),
            (Event::RestoreDone, t(11, 200)),
            (
                Event::HealthFailed {
                    why: "web: curl -fsS http://localhost/ exited with status 22".into(),
                },
                t(21, 200),
            ),
        ],
    );
    assert_eq!(state.count_boot_attempt(2), BootDecision::Proceed);
    drive(state, vec![(Event::RollbackDone, t(30, 450))])
}

fn fixture() -> UpgradeState {
    UpgradeState::from_bytes(FIXTURE_V1_0.as_bytes(), Path::new(FIXTURE_PATH)).unwrap()
}

fn fixture_body() -> Value {
    let envelope: Value = serde_json::from_str(FIXTURE_V1_0).unwrap();
    envelope["body"].clone()
}

/// A state file around `body`, with a correct checksum unless one is given.
fn envelope(magic: &str, major: u32, minor: u32, body: &Value, checksum: Option<&str>) -> Vec<u8> {
    let body = serde_json::to_string(body).unwrap();
    let sum = blake3::hash(body.as_bytes()).to_hex();
    format!(
        r#"{{"magic":"{magic}","format":{{"major":{major},"minor":{minor}}},"checksum":"{}","body":{body}}}"#,
        checksum.unwrap_or(sum.as_str())
    )
    .into_bytes()
}

fn load(bytes: &[u8]) -> Result<UpgradeState, StoreError> {
    UpgradeState::from_bytes(bytes, Path::new(TEST_PATH))
}

fn assert_names_path(err: &StoreError, path: &str) {
    let msg = err.to_string();
    assert!(msg.contains(path), "{msg}");
}

#[test]
fn fixture_v1_0_loads() {
    let state = fixture();
    assert_eq!(state, fixture_state());
    assert_eq!(state.phase(), Phase::RolledBack);
    let u = state.upgrade().unwrap();
    assert_eq!(u.id.as_str(), "20251124T100000Z");
    assert_eq!(u.to_release.as_str(), "6.1.0-41-amd64");
    assert_eq!(u.known_good_release.as_str(), "6.1.0-40-amd64");
    assert_eq!((u.boot_attempts, u.rollback_boot_attempts), (1, 1));
    assert!(u.rollback_attempted);

    let r = state.report();
    assert_eq!(r.outcome, Outcome::RolledBack);
    let close = |a: Option<f64>, b: f64| {
        let a = a.expect("a length");
        assert!((a - b).abs() < 1e-9, "{a} != {b}");
    };
    close(r.stages.freeze, 0.12);
    close(r.stages.dump, 1.5);
    close(r.stages.commit, 0.3);
    close(r.stages.kexec_load, 0.45);
    close(r.stages.kernel_boot, 3.2);
    close(r.stages.restore, 1.1);
    close(r.stages.health, 10.0);
    close(r.blackout_secs, 26.15);
    let text = r.to_string();
    assert!(
        text.starts_with(
            "upgrade 20251124T100000Z: 6.1.0-40-amd64 -> 6.1.0-41-amd64\n\
             generation  20251124T100004Z-6.1.0-40-amd64\n\
             outcome     rolled-back (state rolled-back, 1 boot)\n"
        ),
        "{text}"
    );
    assert!(text.contains("blackout       26.150 s\n"), "{text}");
}

#[test]
fn the_writer_still_writes_the_fixture() {
    // Format 1.0 is released: the same state must encode to the same bytes, or the
    // format changed and needs a new version and a new fixture.
    assert_eq!(
        String::from_utf8(fixture_state().to_bytes().unwrap()).unwrap(),
        FIXTURE_V1_0
    );
}

#[test]
fn fixture_checksum_covers_the_body_bytes_as_stored() {
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
        blake3::hash(body.as_bytes()).to_hex().as_str()
    );
    // A compact body in a hand-built envelope reads the same.
    assert_eq!(
        load(&envelope("upgraded-state", 1, 0, &fixture_body(), None)).unwrap(),
        fixture()
    );
}

#[test]
fn wrong_magic_is_refused() {
    let err = load(&envelope("upgraded-manifest", 1, 0, &fixture_body(), None)).unwrap_err();
    assert!(
        matches!(&err, StoreError::BadMagic { found, .. } if found == "\"upgraded-manifest\""),
        "{err:?}"
    );
    assert_names_path(&err, TEST_PATH);
    assert!(err.to_string().contains("move the file away"), "{err}");

    let err = load(br#"{"format":{"major":1,"minor":0}}"#).unwrap_err();
    assert!(
        matches!(&err, StoreError::BadMagic { found, .. } if found == "none"),
        "{err:?}"
    );
    let err = load(br#"{"magic":["upgraded-state"]}"#).unwrap_err();
    assert!(matches!(err, StoreError::BadMagic { .. }), "{err:?}");
}

#[test]
fn another_major_is_refused() {
    for major in [0, 2] {
        let err = load(&envelope("upgraded-state", major, 0, &fixture_body(), None)).unwrap_err();
        assert!(
            matches!(err, StoreError::UnsupportedMajor { .. }),
            "{err:?}"
        );
        assert_names_path(&err, TEST_PATH);
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("format {major}.0")) && msg.contains("reads only format 1.x"),
            "{msg}"
        );
    }
    // Refused for its version before its body or checksum are looked at.
    let bytes = envelope("upgraded-state", 2, 0, &json!([1, 2]), Some("x"));
    let err = load(&bytes).unwrap_err();
    assert!(
        matches!(err, StoreError::UnsupportedMajor { .. }),
        "{err:?}"
    );
}

#[test]
fn a_newer_minor_is_refused() {
    let err = load(&envelope(
        "upgraded-state",
        FORMAT_VERSION.major,
        FORMAT_VERSION.minor + 1,
        &fixture_body(),
        None,
    ))
    .unwrap_err();
    assert!(matches!(err, StoreError::NewerMinor { .. }), "{err:?}");
    assert_names_path(&err, TEST_PATH);
    let msg = err.to_string();
    assert!(
        msg.contains("format 1.1") && msg.contains("update upgraded"),
        "{msg}"
    );
}

#[test]
fn a_missing_or_malformed_version_is_refused() {
    let err = load(br#"{"magic":"upgraded-state"}"#).unwrap_err();
    assert!(
        matches!(err, StoreError::Syntax { part: "header", .. }),
        "{err:?}"
    );
    let err = load(br#"{"magic":"upgraded-state","format":"1.0"}"#).unwrap_err();
    assert!(
        matches!(err, StoreError::Syntax { part: "header", .. }),
        "{err:?}"
    );
}

#[test]
fn a_changed_byte_of_the_body_is_caught() {
    let bytes = FIXTURE_V1_0.replace("\"boot_attempts\": 1", "\"boot_attempts\": 0");
    assert_ne!(bytes, FIXTURE_V1_0);
    let err = load(bytes.as_bytes()).unwrap_err();
    assert!(matches!(err, StoreError::Checksum { .. }), "{err:?}");
    assert_names_path(&err, TEST_PATH);
    assert!(err.to_string().contains("damaged"), "{err}");

    // Whitespace inside the body counts too: the bytes are what is checked.
    let bytes = FIXTURE_V1_0.replacen("\"phase\": ", "\"phase\":  ", 1);
    let err = load(bytes.as_bytes()).unwrap_err();
    assert!(matches!(err, StoreError::Checksum { .. }), "{err:?}");

    // A checksum that is no hex at all is a mismatch, shown escaped.
    let bytes = envelope("upgraded-state", 1, 0, &fixture_body(), Some("zz\\u0000"));
    let err = load(&bytes).unwrap_err();
    assert!(
        matches!(&err, StoreError::Checksum { expected, .. } if expected == r#""zz\0""#),
        "{err:?}"
    );
}

#[test]
fn an_oversize_file_is_refused_unread() {
    let bytes = vec![b' '; MAX_STATE_SIZE as usize + 1];
    let err = load(&bytes).unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { .. }), "{err:?}");

    // A sparse file: refused from its size, without reading it.
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::new(dir.path());
    let file = fs::File::create(store.path()).unwrap();
    file.set_len(MAX_STATE_SIZE + 1).unwrap();
    let err = store.load().unwrap_err();
    assert!(
        matches!(&err, StoreError::TooLarge { size, .. } if *size == MAX_STATE_SIZE + 1),
        "{err:?}"
    );
    assert_names_path(&err, &store.path().display().to_string());
}

#[test]
fn malformed_files_are_refused() {
    for (bytes, part) in [
        (&b""[..], "header"),
        (b"[\"upgraded-state\"]", "header"),
        (b"{\"magic\":\"upgraded-state\",", "header"),
    ] {
        let err = load(bytes).unwrap_err();
        assert!(
            matches!(&err, StoreError::Syntax { part: p, .. } if *p == part),
            "{err:?}"
        );
        assert_names_path(&err, TEST_PATH);
    }
    // Unknown fields, in the envelope and in the body.
    let mut bytes = envelope("upgraded-state", 1, 0, &fixture_body(), None);
    bytes.pop();
    bytes.extend_from_slice(br#","extra":1}"#);
    let err = load(&bytes).unwrap_err();
    assert!(
        matches!(err, StoreError::Syntax { part: "header", .. }),
        "{err:?}"
    );
    let mut body = fixture_body();
    body["upgrade"]["surprise"] = json!(true);
    let err = load(&envelope("upgraded-state", 1, 0, &body, None)).unwrap_err();
    assert!(
        matches!(err, StoreError::Syntax { part: "body", .. }),
        "{err:?}"
    );
    // A body that is no object.
    let err = load(&envelope("upgraded-state", 1, 0, &json!([]), None)).unwrap_err();
    assert!(
        matches!(err, StoreError::Syntax { part: "body", .. }),
        "{err:?}"
    );
    // Trailing garbage after the envelope.
    let mut bytes = FIXTURE_V1_0.as_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    assert!(load(&bytes).is_err());
}

/// Sets `pointer` in the fixture's body to `value` and loads the result with a correct
/// checksum: only parsing and validation can refuse it.
fn load_with(pointer: &str, value: Value) -> Result<UpgradeState, StoreError> {
    let mut body = fixture_body();
    *body
        .pointer_mut(pointer)
        .unwrap_or_else(|| panic!("{pointer}")) = value;
    load(&envelope("upgraded-state", 1, 0, &body, None))
}

#[test]
fn hostile_or_inconsistent_bodies_are_refused() {
    // Values that would reach paths or messages.
    for (pointer, value) in [
        ("/upgrade/to_release", json!("../../etc")),
        ("/upgrade/generation", json!("../x")),
        ("/upgrade/id", json!("a\nb")),
        ("/upgrade/planned_at/nanos", json!(1_000_000_000)),
        ("/phase", json!("sideways")),
        ("/upgrade/boot_attempts", json!(-1)),
    ] {
        let err = load_with(pointer, value).unwrap_err();
        assert!(
            matches!(err, StoreError::Syntax { part: "body", .. }),
            "{pointer}: {err:?}"
        );
    }
    // Well-formed values that do not fit the phase.
    for (pointer, value, problem) in [
        ("/upgrade/generation", Value::Null, "upgrade.generation"),
        ("/phase", json!("idle"), "upgrade"),
        (
            "/upgrade/rollback_attempted",
            json!(false),
            "upgrade.rollback_attempted",
        ),
        (
            "/upgrade/last_error",
            json!("x".repeat(5000)),
            "upgrade.last_error",
        ),
        (
            "/upgrade/stages/dump/start",
            Value::Null,
            "upgrade.stages.dump.end",
        ),
    ] {
        let mut body = fixture_body();
        if pointer == "/upgrade/generation" {
            // Post-commit phases need the generation.
            body["phase"] = json!("health-check");
            body["upgrade"]["rollback_attempted"] = json!(false);
        }
        *body.pointer_mut(pointer).unwrap() = value;
        let err = load(&envelope("upgraded-state", 1, 0, &body, None)).unwrap_err();
        assert!(
            matches!(&err, StoreError::Invalid { problem: p, .. } if p.what == problem),
            "{pointer}: {err:?}"
        );
        assert_names_path(&err, TEST_PATH);
    }
    let err = load_with("/upgrade", Value::Null).unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
}

#[test]
fn a_missing_file_is_idle() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::new(dir.path());
    assert_eq!(store.load().unwrap(), UpgradeState::idle());
    let store = StateStore::new(dir.path().join("not/yet"));
    assert_eq!(store.load().unwrap().phase(), Phase::Idle);
}

#[test]
fn round_trip_through_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("var/lib/upgraded");
    let store = StateStore::new(&state_dir);
    assert_eq!(store.path(), state_dir.join(STATE_FILE));

    let state = fixture_state();
    store.save(&state).unwrap();
    assert_eq!(store.load().unwrap(), state);
    assert_eq!(fs::read_to_string(store.path()).unwrap(), FIXTURE_V1_0);

    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(store.path()), 0o600);
    assert_eq!(mode(&state_dir), 0o700);
    let names: Vec<_> = fs::read_dir(&state_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [STATE_FILE]);

    // Saving again replaces the file; a stale temporary file is no obstacle.
    fs::write(state_dir.join(".state.json.tmp"), b"half a state").unwrap();
    let next = state.transition_at(plan(), t(100, 0)).unwrap();
    store.save(&next).unwrap();
    assert_eq!(store.load().unwrap(), next);
    assert_eq!(fs::read_dir(&state_dir).unwrap().count(), 1);
}

#[test]
fn an_existing_directory_keeps_its_mode() {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o750)).unwrap();
    StateStore::new(dir.path())
        .save(&UpgradeState::idle())
        .unwrap();
    let mode = fs::metadata(dir.path()).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o750);
}

#[test]
fn only_a_regular_file_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::new(dir.path());
    let elsewhere = dir.path().join("elsewhere.json");
    fs::write(&elsewhere, FIXTURE_V1_0).unwrap();
    std::os::unix::fs::symlink(&elsewhere, store.path()).unwrap();
    let err = store.load().unwrap_err();
    assert!(matches!(err, StoreError::NotARegularFile { .. }), "{err:?}");
    assert_names_path(&err, &store.path().display().to_string());

    fs::remove_file(store.path()).unwrap();
    fs::create_dir(store.path()).unwrap();
    let err = store.load().unwrap_err();
    assert!(matches!(err, StoreError::NotARegularFile { .. }), "{err:?}");

    let file = dir.path().join("file");
    fs::write(&file, b"").unwrap();
    let err = StateStore::new(&file)
        .save(&UpgradeState::idle())
        .unwrap_err();
    assert!(matches!(err, StoreError::NotADirectory { .. }), "{err:?}");
}

#[test]
fn apply_persists_and_a_refused_event_leaves_the_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::new(dir.path());
    let state = store.apply_at(plan(), t(0, 0)).unwrap();
    assert_eq!(state.phase(), Phase::Planned);
    assert_eq!(store.load().unwrap(), state);
    let before = fs::read(store.path()).unwrap();

    let err = store.apply_at(Event::KexecStarted, t(1, 0)).unwrap_err();
    assert_names_path(&err, &store.path().display().to_string());
    let StoreError::Transition { source, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        source,
        &TransitionError::NotAllowed {
            state: Phase::Planned,
            event: upgraded::state::EventKind::KexecStarted,
        }
    );
    // `{:#}` (anyhow) shows the reason through `source()`.
    let chain = format!("{:#}", anyhow::Error::new(err));
    assert!(
        chain.contains("event kexec-started is not allowed in state planned"),
        "{chain}"
    );
    assert_eq!(fs::read(store.path()).unwrap(), before);

    let state = store.apply(Event::Freeze).unwrap();
    assert_eq!(state.phase(), Phase::Frozen);
}

#[test]
fn boot_counts_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::new(dir.path());
    // Nothing to count when idle, and nothing written.
    let (state, decision) = store.count_boot_attempt(2).unwrap();
    assert_eq!(
        (state.phase(), decision),
        (Phase::Idle, BootDecision::NotCounted)
    );
    assert!(!store.path().exists());

    let mut state = UpgradeState::idle();
    for (event, now) in [
        (plan(), t(0, 0)),
        (Event::Freeze, t(1, 0)),
        (Event::DumpStarted, t(2, 0)),
        (Event::DumpDone, t(3, 0)),
        (
            Event::Committed {
                generation: "g1".parse().unwrap(),
            },
            t(4, 0),
        ),
        (Event::KexecLoaded, t(5, 0)),
        (Event::KexecStarted, t(6, 0)),
    ] {
        state = state.transition_at(event, now).unwrap();
    }
    store.save(&state).unwrap();

    // Each call is one boot, seen by the next process that loads the file.
    for (expected, attempts) in [
        (BootDecision::Proceed, 1),
        (BootDecision::Proceed, 2),
        (BootDecision::RollBack, 3),
    ] {
        let (_, decision) = store.count_boot_attempt(2).unwrap();
        assert_eq!(decision, expected);
        assert_eq!(
            StateStore::new(dir.path())
                .load()
                .unwrap()
                .upgrade()
                .unwrap()
                .boot_attempts,
            attempts
        );
    }
    let state = store.apply(Event::BootAttemptsExceeded).unwrap();
    assert_eq!(state.phase(), Phase::RollingBack);
    assert_eq!(
        store.count_boot_attempt(1).unwrap().1,
        BootDecision::Proceed
    );
    assert_eq!(store.count_boot_attempt(1).unwrap().1, BootDecision::GiveUp);
    let state = store
        .apply(Event::Fail {
            why: "the rollback crashed the machine twice".into(),
        })
        .unwrap();
    assert_eq!(state.report().outcome, Outcome::Failed);
}
