//! Fault points for the test bed's fault matrix (issue 7). A release build has none:
//! [`point`] is an empty function unless the crate is built with the `failpoints`
//! feature, which only the VM test bed's build turns on.
//!
//! With the feature, `FAILPOINTS` in the environment arms points by name (the `fail`
//! crate's syntax, `name=action;name=action`). The actions we give meaning to are
//! `return(error)` (the step fails with [`Error::Injected`]), `return(abort)` (the
//! process dies on the spot, as a crash would) and `return(reset)` (the machine resets
//! at once through sysrq, as a power cut would). A point fires once per machine: it
//! leaves a marker in [`FIRED_DIR`], so that a restarted daemon or a rebooted system
//! under the same environment goes on instead of crashing again.

use crate::Error;

/// Markers of points that fired, one file per point (persistent, so once per machine
/// across reboots; the test removes them between cases).
pub const FIRED_DIR: &str = "/var/lib/upgraded-test-faults";

/// Fails, aborts or resets here when `FAILPOINTS` arms `name` (test builds only).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn point(_name: &'static str) -> Result<(), Error> {
    Ok(())
}

/// Fails, aborts or resets here when `FAILPOINTS` arms `name` (test builds only).
#[cfg(feature = "failpoints")]
pub fn point(name: &'static str) -> Result<(), Error> {
    fail::fail_point!(name, |arg| fire(name, arg.as_deref()));
    Ok(())
}

/// Reads `FAILPOINTS` once at the start of a process; a no-op in release builds.
pub fn setup() {
    #[cfg(feature = "failpoints")]
    {
        // The returned scenario only serialises tests; the configuration stays.
        std::mem::forget(fail::FailScenario::setup());
    }
}

#[cfg(feature = "failpoints")]
fn fire(name: &'static str, action: Option<&str>) -> Result<(), Error> {
    use std::io::Write;
    let marker = std::path::Path::new(FIRED_DIR).join(name.replace("::", "-"));
    if marker.exists() {
        return Ok(());
    }
    let _ = std::fs::create_dir_all(FIRED_DIR);
    let _ = std::fs::write(&marker, action.unwrap_or("error"));
    // The marker must be on disk before a reset or a crash.
    if let Ok(f) = std::fs::File::open(&marker) {
        let _ = f.sync_all();
    }
    if let Ok(d) = std::fs::File::open(FIRED_DIR) {
        let _ = d.sync_all();
    }
    let say = |what: &str| {
        let line = format!("upgraded: FAULT {name}: {what}\n");
        let _ = std::io::stderr().write_all(line.as_bytes());
        if let Ok(mut k) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
            let _ = k.write_all(line.as_bytes());
        }
    };
    match action {
        Some("abort") => {
            say("abort");
            std::process::abort()
        }
        Some("reset") => {
            say("reset");
            // sysrq-trigger works for root whatever kernel.sysrq says.
            let _ = std::fs::write("/proc/sysrq-trigger", "b");
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
        _ => {
            say("error");
            Err(Error::Injected { point: name })
        }
    }
}
