//! The binary's promise to the boot: exit status 0 whatever happens.

use std::fs;
use std::path::Path;
use std::process::Command;

fn hook(args: &[&str], kmsg: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_upgraded-initramfs-hook"))
        .args(args)
        .args(["--kmsg", kmsg.to_str().unwrap()])
        .output()
        .unwrap();
    let log = fs::read_to_string(kmsg).unwrap_or_default();
    (out.status.code().unwrap_or(-1), log)
}

#[test]
fn exits_zero_whatever_happens() {
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p).to_str().unwrap().to_owned();
    let kmsg = dir.path().join("kmsg");
    fs::write(&kmsg, "").unwrap();
    fs::write(
        d("cmdline"),
        "ro upgraded.generation=g1 upgraded.pid_floor=5000\n",
    )
    .unwrap();
    fs::write(d("not-a-dir"), "").unwrap();

    // Nothing exists where the hook writes.
    let (code, log) = hook(
        &[
            "--cmdline",
            &d("cmdline"),
            "--proc",
            &d("nowhere"),
            "--run",
            &d("not-a-dir"),
        ],
        &kmsg,
    );
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("<4>upgraded-initramfs-hook: "), "{log}");
    assert!(log.contains("not reserved"), "{log}");

    // No command line, bad arguments.
    for args in [
        vec!["--cmdline", "/nonexistent/cmdline"],
        vec!["--bogus"],
        vec!["--cmdline"],
    ] {
        let (code, log) = hook(&args, &kmsg);
        assert_eq!(code, 0, "{args:?}: {log}");
    }

    // An ordinary boot.
    fs::write(d("plain"), "ro quiet\n").unwrap();
    let (code, log) = hook(
        &[
            "--cmdline",
            &d("plain"),
            "--proc",
            &d("nowhere"),
            "--run",
            &d("run"),
        ],
        &kmsg,
    );
    assert_eq!(code, 0);
    assert!(log.contains("nothing to do"), "{log}");
    assert!(!dir.path().join("run").exists());
}
