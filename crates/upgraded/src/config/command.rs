//! `upgradectl config check` and `upgradectl config show`. Output goes to a writer so
//! that tests can read it.

use super::{load, load_sources, ConfigError, ConfigPaths, SourceFile, SourceRole};
use anyhow::Context;
use serde_json::json;
use std::io::Write;

/// Lists the files in the order they apply, then validates them. Text output ends with
/// "configuration OK"; with `json`, one object `{"files": [...], "ok": bool, "error"?}`.
/// A broken configuration is also returned as the error, for the exit status.
pub fn check(paths: &ConfigPaths, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let sources = paths.discover()?;
    let result = load_sources(&sources);
    if json {
        let mut report = json!({
            "files": sources.iter().map(source_json).collect::<Vec<_>>(),
            "ok": result.is_ok(),
        });
        if let Err(err) = &result {
            report["error"] = error_json(err);
        }
        writeln!(out, "{report:#}").context("writing the report")?;
    } else {
        write_sources(out, &sources).context("writing the report")?;
        if result.is_ok() {
            writeln!(out, "configuration OK").context("writing the report")?;
        }
    }
    result?;
    Ok(())
}

/// Prints the merged, validated configuration as TOML (loadable as a configuration
/// file) or, with `json`, as JSON.
pub fn show(paths: &ConfigPaths, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let loaded = load(paths)?;
    if json {
        let text = serde_json::to_string_pretty(&loaded.settings)
            .context("serializing the configuration as JSON")?;
        writeln!(out, "{text}").context("writing the configuration")?;
    } else {
        let text =
            toml::to_string(&loaded.settings).context("serializing the configuration as TOML")?;
        // As TOML comments, so that the output can be saved as a configuration file.
        writeln!(out, "# Effective configuration of upgraded, merged from:")
            .context("writing the configuration")?;
        for source in loaded.sources.iter().filter(|s| !s.masked) {
            writeln!(out, "#   {}", source.path.display()).context("writing the configuration")?;
        }
        if loaded.sources.iter().all(|s| s.masked) {
            writeln!(out, "#   (no files: built-in defaults)")
                .context("writing the configuration")?;
        }
        write!(out, "\n{text}").context("writing the configuration")?;
    }
    Ok(())
}

fn write_sources(out: &mut dyn Write, sources: &[SourceFile]) -> std::io::Result<()> {
    if sources.is_empty() {
        return writeln!(out, "no configuration files found: built-in defaults apply");
    }
    writeln!(out, "configuration files, in the order they apply:")?;
    for source in sources {
        write!(out, "  {}", source.path.display())?;
        if source.role == SourceRole::Main {
            write!(out, " (main file)")?;
        }
        if source.masked {
            write!(out, " (masked, not read)")?;
        }
        for hidden in &source.overrides {
            write!(out, " (overrides {})", hidden.display())?;
        }
        writeln!(out)?;
    }
    Ok(())
}

fn source_json(source: &SourceFile) -> serde_json::Value {
    json!({
        "path": source.path,
        "role": match source.role {
            SourceRole::Main => "main",
            SourceRole::DropIn => "drop-in",
        },
        "masked": source.masked,
        "overrides": source.overrides,
    })
}

fn error_json(err: &ConfigError) -> serde_json::Value {
    let at = err.location();
    json!({
        "path": at.path,
        "line": at.position.map(|p| p.line),
        "column": at.position.map(|p| p.column),
        "message": err.message(),
        "hint": err.hint(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::Path;

    fn root_with(files: &[(&str, &str)]) -> (tempfile::TempDir, ConfigPaths) {
        let dir = tempfile::tempdir().unwrap();
        for (relative, text) in files {
            let path = dir.path().join(relative);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        let paths = ConfigPaths::under_root(dir.path());
        (dir, paths)
    }

    fn run(
        command: fn(&ConfigPaths, bool, &mut dyn Write) -> anyhow::Result<()>,
        paths: &ConfigPaths,
        json: bool,
    ) -> (anyhow::Result<()>, String) {
        let mut out = Vec::new();
        let result = command(paths, json, &mut out);
        (result, String::from_utf8(out).unwrap())
    }

    #[test]
    fn check_lists_files_in_order_and_says_ok() {
        let (dir, paths) = root_with(&[
            ("etc/upgraded/upgraded.toml", "[boot]\nmax_attempts = 3\n"),
            ("usr/lib/upgraded/config.d/10-a.toml", ""),
            ("etc/upgraded/config.d/10-a.toml", ""),
            ("run/upgraded/config.d/05-b.toml", ""),
        ]);
        let (result, out) = run(check, &paths, false);
        result.unwrap();
        let root = dir.path().display();
        assert_eq!(
            out,
            format!(
                "configuration files, in the order they apply:\n  \
                 {root}/etc/upgraded/upgraded.toml (main file)\n  \
                 {root}/run/upgraded/config.d/05-b.toml\n  \
                 {root}/etc/upgraded/config.d/10-a.toml (overrides \
                 {root}/usr/lib/upgraded/config.d/10-a.toml)\n\
                 configuration OK\n"
            )
        );
    }

    #[test]
    fn check_without_files_says_defaults_apply() {
        let (_dir, paths) = root_with(&[]);
        let (result, out) = run(check, &paths, false);
        result.unwrap();
        assert_eq!(
            out,
            "no configuration files found: built-in defaults apply\nconfiguration OK\n"
        );
    }

    #[test]
    fn check_fails_with_the_location_of_the_error() {
        let (dir, paths) =
            root_with(&[("etc/upgraded/upgraded.toml", "[boot]\nmax_attempts = 0\n")]);
        let (result, out) = run(check, &paths, false);
        let err = format!("{:#}", result.unwrap_err());
        let main = dir.path().join("etc/upgraded/upgraded.toml");
        assert!(
            err.starts_with(&format!("{}:2:16: ", main.display())),
            "{err}"
        );
        assert!(out.contains(&main.display().to_string()), "{out}");
        assert!(!out.contains("configuration OK"), "{out}");
    }

    #[test]
    fn check_json_reports_files_and_error() {
        let (dir, paths) =
            root_with(&[("etc/upgraded/config.d/10-x.toml", "[area]\n\nsize = 3\n")]);
        let (result, out) = run(check, &paths, true);
        assert!(result.is_err());
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        let dropin = dir.path().join("etc/upgraded/config.d/10-x.toml");
        assert_eq!(report["ok"], false);
        assert_eq!(report["files"][0]["path"], dropin.to_str().unwrap());
        assert_eq!(report["files"][0]["role"], "drop-in");
        assert_eq!(report["error"]["path"], dropin.to_str().unwrap());
        assert_eq!(report["error"]["line"], 3);
        assert_eq!(report["error"]["column"], 1);
        assert!(report["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("min_free_margin_percent"));

        let (_dir, paths) = root_with(&[]);
        let (result, out) = run(check, &paths, true);
        result.unwrap();
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(report, json!({"files": [], "ok": true}));
    }

    #[test]
    fn show_prints_loadable_toml_with_its_sources() {
        let (dir, paths) = root_with(&[(
            "etc/upgraded/upgraded.toml",
            "[[workload]]\nname = \"db\"\nkind = \"podman\"\ncontainer = \"pg\"\n",
        )]);
        let (result, out) = run(show, &paths, false);
        result.unwrap();
        let main = dir.path().join("etc/upgraded/upgraded.toml");
        assert!(
            out.starts_with(&format!(
                "# Effective configuration of upgraded, merged from:\n#   {}\n\n",
                main.display()
            )),
            "{out}"
        );
        let settings = crate::config::load_documents([(Path::new("shown"), out.as_str())]).unwrap();
        assert_eq!(settings, load(&paths).unwrap().settings);
        assert_eq!(settings.workloads[0].name, "db");
    }

    #[test]
    fn show_json_and_show_refuses_a_broken_configuration() {
        let (_dir, paths) = root_with(&[]);
        let (result, out) = run(show, &paths, true);
        result.unwrap();
        let value: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(value["retention"]["keep"], 3);
        assert_eq!(value["workload"], json!([]));

        let (_dir, paths) = root_with(&[("etc/upgraded/upgraded.toml", "[area\n")]);
        let (result, out) = run(show, &paths, false);
        assert!(result.is_err());
        assert!(out.is_empty(), "{out}");
    }
}
