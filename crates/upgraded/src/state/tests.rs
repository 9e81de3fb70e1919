//! The state machine's logic: the whole transition table, the guards, the timestamps,
//! crash recovery in every phase, boot counting and the report's arithmetic.

use super::store::BOOT_NOTE_FILE;
use super::*;

const FROM: &str = "6.1.0-40-amd64";
const TO: &str = "6.1.0-41-amd64";
const GENERATION: &str = "20251124T100000Z-6.1.0-40-amd64";

/// `secs` seconds and `millis` milliseconds after a fixed epoch offset.
fn at(secs: u64, millis: u32) -> Timestamp {
    Timestamp::new(1_763_978_400 + secs, millis * 1_000_000).unwrap()
}

fn release(s: &str) -> KernelRelease {
    KernelRelease::new(s).unwrap()
}

fn plan() -> Event {
    Event::Plan {
        id: UpgradeId::new("u1").unwrap(),
        from: release(FROM),
        to: release(TO),
        known_good: release(FROM),
    }
}

fn committed() -> Event {
    Event::Committed {
        generation: GENERATION.parse().unwrap(),
    }
}

fn booted(r: &str) -> Event {
    Event::BootedNewKernel {
        release: release(r),
    }
}

/// An event of `kind` with plausible data.
fn sample(kind: EventKind) -> Event {
    match kind {
        EventKind::Plan => plan(),
        EventKind::PreDumpDone => Event::PreDumpDone,
        EventKind::Freeze => Event::Freeze,
        EventKind::DumpStarted => Event::DumpStarted,
        EventKind::DumpDone => Event::DumpDone,
        EventKind::Committed => committed(),
        EventKind::KexecLoaded => Event::KexecLoaded,
        EventKind::KexecStarted => Event::KexecStarted,
        EventKind::BootedNewKernel => booted(TO),
        EventKind::RestoreStarted => Event::RestoreStarted,
        EventKind::RestoreDone => Event::RestoreDone,
        EventKind::HealthPassed => Event::HealthPassed,
        EventKind::HealthFailed => Event::HealthFailed {
            why: "web: HTTP 502".into(),
        },
        EventKind::BootAttemptsExceeded => Event::BootAttemptsExceeded,
        EventKind::RollbackStarted => Event::RollbackStarted {
            why: "restore of web failed".into(),
        },
        EventKind::RollbackDone => Event::RollbackDone,
        EventKind::Fail => Event::Fail {
            why: "criu dump failed".into(),
        },
        EventKind::Abort => Event::Abort,
    }
}

/// Applies `events` one second apart, starting at second `start`.
fn drive(mut state: UpgradeState, start: u64, events: Vec<Event>) -> UpgradeState {
    for (i, event) in events.into_iter().enumerate() {
        let kind = event.kind();
        let phase = state.phase();
        state = state
            .transition_at(event, at(start + i as u64, 0))
            .unwrap_or_else(|e| panic!("{kind} in {phase}: {e}"));
    }
    state
}

/// The events from Idle to `phase` along the usual paths.
fn path_to(phase: Phase) -> Vec<Event> {
    use Event as E;
    let mut to_health = vec![
        plan(),
        E::PreDumpDone,
        E::Freeze,
        E::DumpStarted,
        E::DumpDone,
        committed(),
        E::KexecLoaded,
        E::KexecStarted,
        booted(TO),
        E::RestoreStarted,
        E::RestoreDone,
    ];
    let len = match phase {
        Phase::Idle => 0,
        Phase::Planned => 1,
        Phase::PreDumped => 2,
        Phase::Frozen => 3,
        Phase::Dumped => 5,
        Phase::Committed => 6,
        Phase::KexecLoaded => 7,
        Phase::Booting => 8,
        Phase::Restoring => 10,
        Phase::HealthCheck => 11,
        Phase::Blessed => {
            to_health.push(E::HealthPassed);
            12
        }
        Phase::RollingBack => {
            to_health.push(sample(EventKind::HealthFailed));
            12
        }
        Phase::RolledBack => {
            to_health.push(sample(EventKind::HealthFailed));
            to_health.push(E::RollbackDone);
            13
        }
        Phase::Failed => return vec![plan(), sample(EventKind::Fail)],
    };
    to_health.truncate(len);
    to_health
}

fn reach(phase: Phase) -> UpgradeState {
    let state = drive(UpgradeState::idle(), 0, path_to(phase));
    assert_eq!(state.phase(), phase);
    state
}

/// A state in `phase` where the guard of `event` holds.
fn ready_for(phase: Phase, event: EventKind) -> UpgradeState {
    let state = reach(phase);
    match (phase, event) {
        (Phase::Frozen, EventKind::DumpDone) => drive(state, 100, vec![Event::DumpStarted]),
        (Phase::Booting, EventKind::RestoreStarted) => drive(state, 100, vec![booted(TO)]),
        _ => state,
    }
}

fn upgrade(state: &UpgradeState) -> &Upgrade {
    state.upgrade().expect("an upgrade is recorded")
}

#[test]
fn every_pair_of_the_table_is_allowed_and_every_other_refused() {
    let mut allowed = 0;
    for &phase in Phase::ALL {
        for &kind in EventKind::ALL {
            let state = ready_for(phase, kind);
            let result = state.clone().transition_at(sample(kind), at(500, 0));
            match next_phase(phase, kind) {
                Some(to) => {
                    let next = result.unwrap_or_else(|e| panic!("{kind} in {phase}: {e}"));
                    assert_eq!(next.phase(), to, "{kind} in {phase}");
                    next.validate().unwrap();
                    allowed += 1;
                }
                None => {
                    let err = result.unwrap_err();
                    assert_eq!(
                        err,
                        TransitionError::NotAllowed {
                            state: phase,
                            event: kind
                        }
                    );
                    assert_eq!((err.state(), err.event()), (phase, kind));
                    let msg = err.to_string();
                    assert!(
                        msg.contains(&format!("event {kind} is not allowed in state {phase}")),
                        "{msg}"
                    );
                }
            }
        }
    }
    assert_eq!(allowed, TRANSITIONS.len());
}

#[test]
fn the_table_has_no_duplicates_and_terminal_phases_only_plan() {
    for (i, a) in TRANSITIONS.iter().enumerate() {
        for b in &TRANSITIONS[i + 1..] {
            assert!(
                !(a.from == b.from && a.event == b.event),
                "{} {} twice",
                a.from,
                a.event
            );
        }
    }
    for &phase in Phase::ALL {
        let events: Vec<_> = allowed_events(phase).collect();
        if phase.is_terminal() || phase == Phase::Idle {
            assert_eq!(events, [EventKind::Plan], "{phase}");
        } else {
            assert!(!events.contains(&EventKind::Plan), "{phase}");
            assert!(events.contains(&EventKind::Fail), "{phase}");
        }
    }
}

#[test]
fn not_allowed_lists_what_is() {
    let err = reach(Phase::Committed)
        .transition_at(Event::Freeze, at(9, 0))
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("allowed there: kexec-loaded, rollback-started, fail"),
        "{msg}"
    );
    assert!(msg.contains("upgradectl status"), "{msg}");
}

#[test]
fn the_normal_path_records_every_stage() {
    let t = |secs, millis| at(secs, millis);
    let steps = vec![
        (plan(), t(0, 0)),
        (Event::PreDumpDone, t(5, 0)),
        (Event::Freeze, t(10, 0)),
        (Event::DumpStarted, t(10, 120)),
        (Event::DumpDone, t(11, 620)),
        (committed(), t(11, 920)),
        (Event::KexecLoaded, t(12, 370)),
        (Event::KexecStarted, t(12, 500)),
        (booted(TO), t(15, 700)),
        (Event::RestoreStarted, t(15, 800)),
        (Event::RestoreDone, t(16, 900)),
        (Event::HealthPassed, t(26, 900)),
    ];
    let mut state = UpgradeState::idle();
    for (event, now) in steps {
        state = state.transition_at(event, now).unwrap();
    }
    assert_eq!(state.phase(), Phase::Blessed);
    let u = upgrade(&state);
    assert_eq!(u.generation.as_ref().unwrap().as_str(), GENERATION);
    assert_eq!(u.booted_release.as_ref().unwrap().as_str(), TO);
    assert_eq!(u.planned_at, t(0, 0));
    assert!(!u.rollback_attempted);
    assert_eq!(u.last_error, None);
    let s = &u.stages;
    let span = |start, end| Span {
        start: Some(start),
        end: Some(end),
    };
    assert_eq!(s.freeze, span(t(10, 0), t(10, 120)));
    assert_eq!(s.dump, span(t(10, 120), t(11, 620)));
    assert_eq!(s.commit, span(t(11, 620), t(11, 920)));
    assert_eq!(s.kexec_load, span(t(11, 920), t(12, 370)));
    assert_eq!(s.kernel_boot, span(t(12, 500), t(15, 700)));
    assert_eq!(s.restore, span(t(15, 800), t(16, 900)));
    assert_eq!(s.health, span(t(16, 900), t(26, 900)));
    assert_eq!(u.blackout, span(t(10, 0), t(16, 900)));

    let r = state.report();
    assert_eq!(r.outcome, Outcome::Upgraded);
    assert_eq!(r.state, Phase::Blessed);
    assert_eq!(r.generation.as_ref().unwrap().as_str(), GENERATION);
    assert_eq!(r.from.as_ref().unwrap().as_str(), FROM);
    assert_eq!(r.to.as_ref().unwrap().as_str(), TO);
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
    close(r.blackout_secs, 6.9);

    let text = r.to_string();
    assert_eq!(
        text,
        "upgrade u1: 6.1.0-40-amd64 -> 6.1.0-41-amd64\n\
         generation  20251124T100000Z-6.1.0-40-amd64\n\
         outcome     upgraded (state blessed)\n\
         freeze          0.120 s\n\
         dump            1.500 s\n\
         commit          0.300 s\n\
         kexec load      0.450 s\n\
         kernel boot     3.200 s\n\
         restore         1.100 s\n\
         health         10.000 s\n\
         blackout        6.900 s\n"
    );
}

#[test]
fn freeze_may_follow_the_plan_directly() {
    let state = drive(
        UpgradeState::idle(),
        0,
        vec![plan(), Event::Freeze, Event::DumpStarted],
    );
    assert_eq!(state.phase(), Phase::Frozen);
    assert_eq!(upgrade(&state).stages.freeze.secs(), Some(1.0));
}

#[test]
fn guards_refuse_without_changing_anything() {
    fn refused(mut state: UpgradeState, event: Event) -> TransitionError {
        let before = state.clone();
        let err = state.apply(event, at(900, 0)).unwrap_err();
        assert_eq!(state, before, "a refused event changed the state");
        err
    }

    let frozen = reach(Phase::Frozen);
    let err = refused(frozen.clone(), Event::DumpDone);
    assert!(matches!(err, TransitionError::Refused { .. }), "{err:?}");
    assert!(
        err.to_string().contains("dump-started was never sent"),
        "{err}"
    );

    let dumping = drive(frozen, 50, vec![Event::DumpStarted]);
    let err = refused(dumping, Event::DumpStarted);
    assert!(err.to_string().contains("already started"), "{err}");

    let booting = reach(Phase::Booting);
    let err = refused(booting.clone(), Event::RestoreStarted);
    assert!(
        err.to_string().contains("booted-new-kernel was never sent"),
        "{err}"
    );

    let err = refused(booting, booted(FROM));
    assert_eq!(
        err,
        TransitionError::WrongKernel {
            state: Phase::Booting,
            event: EventKind::BootedNewKernel,
            expected: release(TO),
            found: release(FROM),
        }
    );
    let msg = err.to_string();
    assert!(
        msg.contains(FROM) && msg.contains(TO) && msg.contains("rollback-started"),
        "{msg}"
    );
}

#[test]
fn a_second_rollback_is_never_started() {
    // Unreachable through the table (nothing leads from a rollback back to the boot
    // phases); the guard protects against a state that got there anyway.
    for (phase, event) in [
        (Phase::HealthCheck, sample(EventKind::HealthFailed)),
        (Phase::Booting, Event::BootAttemptsExceeded),
        (Phase::Committed, sample(EventKind::RollbackStarted)),
    ] {
        let mut state = reach(phase);
        state.upgrade.as_mut().unwrap().rollback_attempted = true;
        let kind = event.kind();
        let err = state.transition_at(event, at(700, 0)).unwrap_err();
        assert_eq!(
            err,
            TransitionError::RollbackAlreadyAttempted {
                state: phase,
                event: kind
            }
        );
        assert!(err.to_string().contains("send fail"), "{err}");
    }
    // And a rolled-back upgrade cannot roll back again: only a new plan follows.
    let err = reach(Phase::RolledBack)
        .transition_at(sample(EventKind::RollbackStarted), at(800, 0))
        .unwrap_err();
    assert!(matches!(err, TransitionError::NotAllowed { .. }), "{err:?}");
}

#[test]
fn an_inconsistent_hand_built_state_is_refused_not_panicked_on() {
    let state = UpgradeState {
        phase: Phase::Frozen,
        upgrade: None,
    };
    let err = state
        .clone()
        .transition_at(Event::DumpStarted, at(1, 0))
        .unwrap_err();
    assert!(err.to_string().contains("no upgrade is recorded"), "{err}");
    assert!(state.validate().is_err());
    let mut state = state;
    assert_eq!(state.count_boot_attempt(3), BootDecision::NotCounted);
}

#[test]
fn recovery_in_every_phase() {
    for &phase in Phase::ALL {
        let expected = match phase {
            Phase::Idle | Phase::Blessed | Phase::RolledBack | Phase::Failed => Recovery::Nothing,
            Phase::Planned | Phase::PreDumped | Phase::Frozen | Phase::Dumped => {
                Recovery::ThawAndDiscard
            }
            Phase::Committed | Phase::KexecLoaded => Recovery::ThawAndKeep,
            Phase::Booting | Phase::Restoring | Phase::HealthCheck => Recovery::BootSide,
            Phase::RollingBack => Recovery::FinishRollback,
        };
        assert_eq!(reach(phase).recover(), expected, "{phase}");
    }
}

#[test]
fn recovery_paths_are_allowed_by_the_table() {
    // ThawAndDiscard ends with an abort, which notes what was done.
    for phase in [
        Phase::Planned,
        Phase::PreDumped,
        Phase::Frozen,
        Phase::Dumped,
    ] {
        let state = reach(phase)
            .transition_at(Event::Abort, at(600, 0))
            .unwrap();
        assert_eq!(state.phase(), Phase::Failed);
        let u = upgrade(&state);
        assert!(u
            .last_error
            .as_ref()
            .unwrap()
            .contains("aborted before the commit"));
        // The workloads were thawed: the blackout ended, if it had begun.
        assert_eq!(
            u.blackout.end.is_some(),
            u.blackout.start.is_some(),
            "{phase}"
        );
        assert_eq!(state.report().outcome, Outcome::Failed);
    }
    // After the commit, nothing may discard the images.
    for phase in [Phase::Committed, Phase::KexecLoaded, Phase::Booting] {
        assert!(reach(phase)
            .transition_at(Event::Abort, at(600, 0))
            .is_err());
    }
    // ThawAndKeep is recorded as a rollback on the kernel that never changed.
    for phase in [Phase::Committed, Phase::KexecLoaded] {
        let state = drive(
            reach(phase),
            600,
            vec![
                Event::RollbackStarted {
                    why: "daemon restarted before the kexec".into(),
                },
                Event::RollbackDone,
            ],
        );
        assert_eq!(state.phase(), Phase::RolledBack);
        assert_eq!(state.report().outcome, Outcome::RolledBack);
    }
}

#[test]
fn boot_counting() {
    let mut state = reach(Phase::Booting);
    assert_eq!(state.count_boot_attempt(2), BootDecision::Proceed);
    assert_eq!(state.count_boot_attempt(2), BootDecision::Proceed);
    assert_eq!(state.count_boot_attempt(2), BootDecision::RollBack);
    assert_eq!(upgrade(&state).boot_attempts, 3);

    // Counted in Restoring and HealthCheck too (a crash there is a failed boot).
    for phase in [Phase::Restoring, Phase::HealthCheck] {
        let mut state = reach(phase);
        assert_eq!(state.count_boot_attempt(1), BootDecision::Proceed);
        assert_eq!(state.count_boot_attempt(1), BootDecision::RollBack);
    }

    // The decision leads to a rollback, with its own budget, then to giving up.
    let state = state
        .transition_at(Event::BootAttemptsExceeded, at(700, 0))
        .unwrap();
    assert_eq!(state.phase(), Phase::RollingBack);
    assert_eq!(
        upgrade(&state).last_error.as_deref(),
        Some("kernel 6.1.0-41-amd64 did not come up healthy in 3 boots")
    );
    let mut state = state;
    assert_eq!(state.count_boot_attempt(2), BootDecision::Proceed);
    assert_eq!(state.count_boot_attempt(2), BootDecision::Proceed);
    assert_eq!(state.count_boot_attempt(2), BootDecision::GiveUp);
    let u = upgrade(&state);
    assert_eq!((u.boot_attempts, u.rollback_boot_attempts), (3, 3));

    // Not counted before the kexec or once the upgrade is over.
    for &phase in Phase::ALL {
        if matches!(
            phase,
            Phase::Booting | Phase::Restoring | Phase::HealthCheck | Phase::RollingBack
        ) {
            continue;
        }
        let mut state = reach(phase);
        let before = state.clone();
        assert_eq!(
            state.count_boot_attempt(2),
            BootDecision::NotCounted,
            "{phase}"
        );
        assert_eq!(state, before);
    }

    // A new plan starts the count over.
    let state = drive(reach(Phase::Failed), 900, vec![plan()]);
    assert_eq!(upgrade(&state).boot_attempts, 0);
}

#[test]
fn a_reboot_during_the_restore_starts_it_over() {
    let state = drive(
        reach(Phase::HealthCheck),
        200,
        vec![booted(TO), Event::RestoreStarted],
    );
    assert_eq!(state.phase(), Phase::Restoring);
    let u = upgrade(&state);
    // The kernel boot is the first one after the kexec (second 8 of `reach`).
    assert_eq!(u.stages.kernel_boot.end, Some(at(8, 0)));
    assert_eq!(u.stages.restore.start, Some(at(201, 0)));
    assert_eq!(u.stages.restore.end, None);
    assert_eq!(u.stages.health, Span::default());
    // The workloads are down again.
    assert_eq!(u.blackout.end, None);
    assert_eq!(state.report().blackout_secs, None);
}

#[test]
fn a_health_failure_rolls_back_once_and_reports_it() {
    let state = reach(Phase::HealthCheck);
    let state = state
        .transition_at(
            Event::HealthFailed {
                why: "web: HTTP 502".into(),
            },
            at(40, 0),
        )
        .unwrap();
    assert_eq!(state.phase(), Phase::RollingBack);
    let u = upgrade(&state);
    assert!(u.rollback_attempted);
    assert_eq!(u.stages.health.end, Some(at(40, 0)));
    assert_eq!(
        u.last_error.as_deref(),
        Some("health check failed: web: HTTP 502")
    );
    assert_eq!(state.report().outcome, Outcome::InProgress);

    let state = state
        .transition_at(Event::RollbackDone, at(70, 500))
        .unwrap();
    let r = state.report();
    assert_eq!(r.outcome, Outcome::RolledBack);
    // From the freeze (second 2 of `reach`) to the end of the rollback.
    assert_eq!(r.blackout_secs, Some(68.5));
    let text = r.to_string();
    assert!(
        text.contains("outcome     rolled-back (state rolled-back)"),
        "{text}"
    );
    assert!(
        text.contains("last error  health check failed: web: HTTP 502"),
        "{text}"
    );
}

#[test]
fn a_new_plan_forgets_the_last_upgrade() {
    let old = reach(Phase::RolledBack);
    let state = old
        .transition_at(
            Event::Plan {
                id: UpgradeId::new("u2").unwrap(),
                from: release(FROM),
                to: release("6.1.0-42-amd64"),
                known_good: release(FROM),
            },
            at(1000, 0),
        )
        .unwrap();
    let u = upgrade(&state);
    assert_eq!(u.id.as_str(), "u2");
    assert_eq!(u.generation, None);
    assert!(!u.rollback_attempted);
    assert_eq!(u.last_error, None);
    assert_eq!(u.stages, Stages::default());
    assert_eq!(u.blackout, Span::default());
    assert_eq!(u.planned_at, at(1000, 0));
}

#[test]
fn reports_in_progress_and_idle() {
    let r = UpgradeState::idle().report();
    assert_eq!(r.outcome, Outcome::Idle);
    assert_eq!(r.to_string(), "no upgrade recorded\n");

    let state = reach(Phase::Dumped);
    let r = state.report();
    assert_eq!(r.outcome, Outcome::InProgress);
    assert_eq!(r.generation, None);
    assert_eq!(r.stages.freeze, Some(1.0));
    assert_eq!(r.stages.dump, Some(1.0));
    // Started, not finished: no length yet.
    assert_eq!(r.stages.commit, None);
    assert_eq!(r.blackout_secs, None);
    let text = r.to_string();
    assert!(text.contains("generation  (not committed)"), "{text}");
    assert!(text.contains("commit              -\n"), "{text}");
    assert!(
        text.contains("outcome     in-progress (state dumped)"),
        "{text}"
    );

    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["outcome"], "in-progress");
    assert_eq!(json["state"], "dumped");
    assert_eq!(json["stages"]["freeze"], 1.0);
    assert!(json["stages"]["commit"].is_null());
}

#[test]
fn the_kernel_boot_is_unknown_when_the_clock_stepped_back() {
    let state = reach(Phase::KexecLoaded);
    let state = drive(state, 100, vec![Event::KexecStarted]);
    // The new kernel's clock (from an RTC in local time, say) is an hour behind.
    let state = state.transition_at(booted(TO), at(0, 0)).unwrap();
    assert_eq!(state.report().stages.kernel_boot, None);
    assert!(state.report().to_string().contains("kernel boot         -"));
}

#[test]
fn long_errors_are_cut_on_a_character_boundary() {
    let why = "é".repeat(MAX_ERROR_LEN);
    let state = reach(Phase::Planned)
        .transition_at(Event::Fail { why }, at(5, 0))
        .unwrap();
    let e = upgrade(&state).last_error.as_ref().unwrap();
    assert!(e.len() <= MAX_ERROR_LEN, "{}", e.len());
    assert!(e.ends_with("é [cut]"), "{}", &e[e.len() - 20..]);
    state.validate().unwrap();

    let short = reach(Phase::Planned)
        .transition_at(
            Event::Fail {
                why: "x".repeat(MAX_ERROR_LEN),
            },
            at(5, 0),
        )
        .unwrap();
    assert_eq!(
        upgrade(&short).last_error.as_ref().unwrap().len(),
        MAX_ERROR_LEN
    );
}

#[test]
fn validation_ties_the_data_to_the_phase() {
    let check = |state: &UpgradeState, field: &str| {
        let err = state.validate().unwrap_err();
        assert_eq!(err.what, field, "{err}");
    };
    let mut s = reach(Phase::Booting);
    s.upgrade.as_mut().unwrap().generation = None;
    check(&s, "upgrade.generation");

    let mut s = reach(Phase::Frozen);
    s.phase = Phase::Idle;
    check(&s, "upgrade");

    let mut s = reach(Phase::Blessed);
    s.upgrade.as_mut().unwrap().rollback_attempted = true;
    check(&s, "upgrade.rollback_attempted");

    let mut s = reach(Phase::RolledBack);
    s.upgrade.as_mut().unwrap().rollback_attempted = false;
    check(&s, "upgrade.rollback_attempted");

    let mut s = reach(Phase::Planned);
    s.upgrade.as_mut().unwrap().last_error = Some("x".repeat(MAX_ERROR_LEN + 1));
    check(&s, "upgrade.last_error");

    let mut s = reach(Phase::Planned);
    s.upgrade.as_mut().unwrap().stages.dump.end = Some(at(1, 0));
    check(&s, "upgrade.stages.dump.end");

    let mut s = reach(Phase::Planned);
    s.upgrade.as_mut().unwrap().blackout.end = Some(at(1, 0));
    check(&s, "upgrade.blackout.end");

    // Every phase reached through the table is valid.
    for &phase in Phase::ALL {
        reach(phase).validate().unwrap();
    }
}

#[test]
fn an_inconsistent_state_is_never_written() {
    let mut s = reach(Phase::Blessed);
    s.upgrade.as_mut().unwrap().generation = None;
    let err = s.to_bytes().unwrap_err();
    assert_eq!(err.what, "upgrade.generation");

    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::new(dir.path());
    let err = store.save(&s).unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    assert!(!store.path().exists());
}

#[test]
fn the_boot_note_is_copied_where_a_cold_boot_reads_it_and_removed_from_both() {
    let dir = tempfile::tempdir().unwrap();
    let area = dir.path().join("area");
    let root_fs = dir.path().join("var/lib/upgraded");
    let store = StateStore::new(&area).with_boot_note_copy(&root_fs);
    let gen = dumper::manifest::GenerationId::new("g1").unwrap();
    store.write_boot_note(&gen, Some(31000)).unwrap();
    for d in [&area, &root_fs] {
        let note = std::fs::read_to_string(d.join(BOOT_NOTE_FILE)).unwrap();
        assert_eq!(note, "upgraded.generation=g1 upgraded.pid_floor=31000\n");
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(d).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o700, "{}", d.display());
    }
    // An upgrade that ends removes both notes.
    let mut events = path_to(Phase::Blessed);
    let last = events.pop().unwrap();
    store
        .save(&drive(UpgradeState::default(), 1, events))
        .unwrap();
    store.apply_at(last, at(100, 0)).unwrap();
    assert!(!area.join(BOOT_NOTE_FILE).exists());
    assert!(!root_fs.join(BOOT_NOTE_FILE).exists());

    // The default directory area needs no copy.
    let default = StateStore::for_area(std::path::Path::new(DEFAULT_STATE_DIR));
    assert_eq!(format!("{default:?}").matches("note_copy: None").count(), 1);
    let other = StateStore::for_area(std::path::Path::new("/run/upgraded/area"));
    assert!(format!("{other:?}").contains(DEFAULT_STATE_DIR));
}
