//! `upgradectl config check|show` as a user runs them: the built binary against a
//! configuration tree in a temporary directory (the hidden `--config-root`).

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

const GOOD_MAIN: &str = r#"# upgraded test configuration
[area]
kind = "directory"
path = "/var/lib/upgraded"

[health]
timeout_secs = 120

[[workload]]
name = "web"
kind = "service"
unit = "nginx.service"
check = ["curl", "-fsS", "http://localhost/"]
"#;

const GOOD_DROPIN: &str = r#"[[workload]]
name = "shells"
kind = "tmux"
"#;

/// Line 6 has the unknown key.
const BAD_UNKNOWN_KEY: &str = r#"[[workload]]
name = "db"
kind = "podman"
container = "postgres"

tcp_establised = true
"#;

struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    fn new() -> Root {
        Root {
            dir: tempfile::tempdir().expect("creating a temporary directory"),
        }
    }

    fn write(&self, relative: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
        path
    }

    fn upgradectl(&self, args: &[&str]) -> Output {
        let output = Command::new(env!("CARGO_BIN_EXE_upgradectl"))
            .arg("--config-root")
            .arg(self.dir.path())
            .args(args)
            .env_remove("UPGRADED_LOG")
            .output()
            .expect("running upgradectl");
        eprintln!(
            "upgradectl {args:?}: {}\n--- stdout\n{}--- stderr\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8 output")
}

fn good_root() -> (Root, PathBuf, PathBuf) {
    let root = Root::new();
    let main = root.write("etc/upgraded/upgraded.toml", GOOD_MAIN);
    let dropin = root.write("usr/lib/upgraded/config.d/20-shells.toml", GOOD_DROPIN);
    (root, main, dropin)
}

#[test]
fn check_accepts_a_good_configuration_and_lists_the_files_in_order() {
    let (root, main, dropin) = good_root();
    let output = root.upgradectl(&["config", "check"]);
    assert!(output.status.success());
    let stdout = text(&output.stdout);
    let main_at = stdout
        .find(main.to_str().unwrap())
        .expect("main file listed");
    let dropin_at = stdout
        .find(dropin.to_str().unwrap())
        .expect("drop-in listed");
    assert!(main_at < dropin_at, "main file first:\n{stdout}");
    assert!(stdout.ends_with("configuration OK\n"), "{stdout}");
}

#[test]
fn check_refuses_an_unknown_key_with_file_line_and_column() {
    let (root, _, _) = good_root();
    let bad = root.write("etc/upgraded/config.d/30-db.toml", BAD_UNKNOWN_KEY);
    let output = root.upgradectl(&["config", "check"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    let expected = format!(
        "upgradectl: {}:6:1: unknown field `tcp_establised`",
        bad.display()
    );
    assert!(stderr.starts_with(&expected), "{stderr}");
    assert!(
        stderr.contains("hint: did you mean `tcp_established`?"),
        "{stderr}"
    );
    assert!(!text(&output.stdout).contains("configuration OK"));
}

#[test]
fn check_json_reports_the_error_location() {
    let (root, _, _) = good_root();
    let bad = root.write("run/upgraded/config.d/30-db.toml", BAD_UNKNOWN_KEY);
    let output = root.upgradectl(&["--json", "config", "check"]);
    assert!(!output.status.success());
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["files"].as_array().unwrap().len(), 3);
    assert_eq!(report["error"]["path"], bad.to_str().unwrap());
    assert_eq!(report["error"]["line"], 6);
    assert_eq!(report["error"]["column"], 1);
}

#[test]
fn check_refuses_an_invalid_value_at_its_line() {
    let root = Root::new();
    let main = root.write(
        "etc/upgraded/upgraded.toml",
        "[boot]\nmax_attempts = 2\n\n[health]\ntimeout_secs = 5\n",
    );
    let output = root.upgradectl(&["config", "check"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with(&format!(
            "upgradectl: {}:5:16: health.timeout_secs = 5 is out of range 10..=3600",
            main.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("hint: set timeout_secs to a value from 10 to 3600"));
}

#[test]
fn show_prints_the_merged_configuration_as_toml_and_json() {
    let (root, _, _) = good_root();
    let output = root.upgradectl(&["config", "show"]);
    assert!(output.status.success());
    let shown: toml::Table = text(&output.stdout).parse().expect("show prints TOML");
    assert_eq!(shown["health"]["timeout_secs"].as_integer(), Some(120));
    assert_eq!(shown["health"]["settle_secs"].as_integer(), Some(10));
    assert_eq!(shown["retention"]["keep"].as_integer(), Some(3));
    let workloads = shown["workload"].as_array().unwrap();
    let names: Vec<_> = workloads
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web", "shells"]);
    assert_eq!(workloads[1]["socket"].as_str(), Some("default"));

    let output = root.upgradectl(&["config", "show", "--json"]);
    assert!(output.status.success());
    let shown: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(shown["area"]["kind"], "directory");
    assert_eq!(shown["workload"][0]["unit"], "nginx.service");
}

#[test]
fn show_fails_on_a_broken_configuration() {
    let root = Root::new();
    let main = root.write("etc/upgraded/upgraded.toml", "[area]\nkind = \"tape\"\n");
    let output = root.upgradectl(&["config", "show"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with(&format!(
            "upgradectl: {}:2:8: unknown variant `tape`",
            main.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("valid values are: \"directory\", \"disk\", \"pmem\""));
}

#[test]
fn daemon_commands_without_a_daemon_exit_5_and_say_so() {
    // No upgraded runs on the build host (and usually no system bus): the D-Bus
    // commands fail with the documented exit code and a way out, never a made-up answer.
    if std::path::Path::new("/run/dbus/system_bus_socket").exists() {
        eprintln!("a system bus runs here; skipping the no-daemon case");
        return;
    }
    let root = Root::new();
    for args in [&["status"][..], &["kernels"], &["check", "6.1.0-47-amd64"]] {
        let output = root.upgradectl(args);
        assert_eq!(output.status.code(), Some(5), "{args:?}");
        let err = text(&output.stderr);
        assert!(
            err.contains("system bus") || err.contains("systemctl start upgraded"),
            "{err}"
        );
    }
}

#[test]
fn config_root_is_hidden_from_help() {
    let output = Command::new(env!("CARGO_BIN_EXE_upgradectl"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(!text(&output.stdout).contains("config-root"));
}
