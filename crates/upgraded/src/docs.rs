//! Man pages and shell completions generated from the clap definitions of `upgradectl`,
//! so that what is documented is what the binary parses. `make install` runs them
//! through `upgradectl internals gen-docs`.

use clap_complete::Shell;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Writes `NAME.1` for the command and `NAME-SUB[-SUB…].1` for every visible
/// subcommand, at every depth, into `dir` (created if missing). Hidden subcommands
/// (`internals`) get no page and are not listed. Returns the files written.
pub fn write_man_pages(cmd: clap::Command, dir: &Path) -> io::Result<Vec<PathBuf>> {
    fs::create_dir_all(dir)?;
    // No `help` subcommand page: `upgradectl help X` is `man upgradectl-X` here.
    let mut cmd = cmd.disable_help_subcommand(true);
    // Building fills in the display names ("upgradectl-images-list") used as page names.
    cmd.build();
    // Every page's footer names the program and its version, "upgradectl 0.1.0"
    // (subcommands have no version of their own).
    let source = format!(
        "{} {}",
        cmd.get_name(),
        cmd.get_version().unwrap_or_default()
    );
    let mut written = Vec::new();
    man_pages_of(cmd, &source, dir, &mut written)?;
    Ok(written)
}

fn man_pages_of(
    cmd: clap::Command,
    source: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> io::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone()).source(source.trim_end());
    let path = dir.join(man.get_filename());
    let mut file = File::create(&path)?;
    man.render(&mut file)?;
    file.flush()?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages_of(sub.clone(), source, dir, written)?;
    }
    Ok(())
}

/// Writes bash (`NAME`), zsh (`_NAME`) and fish (`NAME.fish`) completions into `dir`
/// (created if missing), named as each shell's vendor directory expects. Hidden
/// subcommands and options are not offered. Returns the files written.
pub fn write_completions(cmd: clap::Command, dir: &Path) -> io::Result<Vec<PathBuf>> {
    fs::create_dir_all(dir)?;
    let cmd = visible_only(&cmd);
    let name = cmd.get_name().to_owned();
    let mut written = Vec::new();
    for (shell, file_name) in [
        // bash-completion loads completions/NAME lazily, on the first <TAB> after NAME.
        (Shell::Bash, name.clone()),
        (Shell::Zsh, format!("_{name}")),
        (Shell::Fish, format!("{name}.fish")),
    ] {
        let path = dir.join(file_name);
        let mut file = File::create(&path)?;
        clap_complete::generate(shell, &mut cmd.clone(), name.as_str(), &mut file);
        file.flush()?;
        written.push(path);
    }
    Ok(written)
}

/// `cmd` without its hidden subcommands and options, at every depth. clap_complete's
/// generators offer hidden items on <TAB> (clap-rs/clap#1335) and `clap::Command` has
/// no way to remove one, so the tree is re-assembled from the visible parts, taken
/// from `cmd` itself so it cannot drift from the CLI. Not carried over: argument
/// groups (the CLI has none; `pruning_keeps_the_visible_surface` builds the result, so
/// clap's debug checks would catch one) and help layout. Expects an unbuilt command
/// (help and version flags not yet generated).
fn visible_only(cmd: &clap::Command) -> clap::Command {
    let mut out = clap::Command::new(leak(cmd.get_name()))
        .args(cmd.get_arguments().filter(|a| !a.is_hide_set()).cloned())
        .subcommands(
            cmd.get_subcommands()
                .filter(|s| !s.is_hide_set())
                .map(visible_only),
        )
        .visible_aliases(cmd.get_visible_aliases().map(leak))
        .subcommand_required(cmd.is_subcommand_required_set())
        .arg_required_else_help(cmd.is_arg_required_else_help_set())
        .args_conflicts_with_subcommands(cmd.is_args_conflicts_with_subcommands_set())
        .allow_external_subcommands(cmd.is_allow_external_subcommands_set())
        .disable_help_subcommand(cmd.is_disable_help_subcommand_set())
        .disable_help_flag(cmd.is_disable_help_flag_set())
        .disable_version_flag(cmd.is_disable_version_flag_set());
    if let Some(about) = cmd.get_about() {
        out = out.about(about.clone());
    }
    if let Some(long_about) = cmd.get_long_about() {
        out = out.long_about(long_about.clone());
    }
    if let Some(version) = cmd.get_version() {
        out = out.version(leak(version));
    }
    out
}

/// clap takes owned names only with its `string` feature, which this workspace does
/// not enable; a command tree has a few dozen short names and is pruned once per
/// `gen-docs` run, so leaking them costs nothing that matters.
fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::CommandFactory;

    fn file_names(paths: &[PathBuf]) -> Vec<String> {
        paths
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn man_pages_cover_the_visible_commands() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("man1");
        let written = write_man_pages(Cli::command(), &out).unwrap();
        let names = file_names(&written);
        for expected in [
            "upgradectl.1",
            "upgradectl-status.1",
            "upgradectl-rollback.1",
            "upgradectl-upgrade.1",
            "upgradectl-images.1",
            "upgradectl-images-verify.1",
            "upgradectl-config-check.1",
            "upgradectl-suspend-key-generate.1",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} in {names:?}"
            );
            assert!(out.join(expected).is_file(), "{expected}");
        }

        let main = fs::read_to_string(out.join("upgradectl.1")).unwrap();
        assert!(main.starts_with(".ie"), "not roff: {main:.80}");
        assert!(main.contains("upgradectl"));
        assert!(main.contains("rollback"));
        assert!(
            main.contains("known\\-good kernel"),
            "about text of rollback"
        );

        let upgrade = fs::read_to_string(out.join("upgradectl-upgrade.1")).unwrap();
        assert!(upgrade.contains("dry\\-run"), "{upgrade}");
        let version = env!("CARGO_PKG_VERSION");
        assert!(
            upgrade.contains(&format!("\"upgradectl {version}\"")),
            "{upgrade:.200}"
        );
    }

    #[test]
    fn hidden_commands_and_options_are_not_documented() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_man_pages(Cli::command(), dir.path()).unwrap();
        let names = file_names(&written);
        assert!(
            !names
                .iter()
                .any(|n| n.contains("internals") || n.contains("help")),
            "{names:?}"
        );
        for path in &written {
            let page = fs::read_to_string(path).unwrap();
            for hidden in ["internals", "restore\\-unit", "gen\\-docs", "config\\-root"] {
                assert!(!page.contains(hidden), "{hidden} in {}", path.display());
            }
        }
    }

    #[test]
    fn completions_name_the_subcommands() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_completions(Cli::command(), dir.path()).unwrap();
        assert_eq!(
            file_names(&written),
            ["upgradectl", "_upgradectl", "upgradectl.fish"]
        );
        for path in &written {
            let script = fs::read_to_string(path).unwrap();
            for sub in [
                "status",
                "rollback",
                "checkpoint",
                "suspend",
                "images",
                "verify",
            ] {
                assert!(script.contains(sub), "{sub} in {}", path.display());
            }
        }
        for path in &written {
            let script = fs::read_to_string(path).unwrap();
            for hidden in ["internals", "restore-unit", "gen-docs", "config-root"] {
                assert!(!script.contains(hidden), "{hidden} in {}", path.display());
            }
        }
        let bash = fs::read_to_string(dir.path().join("upgradectl")).unwrap();
        assert!(bash.contains("complete -F _upgradectl"), "{bash:.200}");
        let fish = fs::read_to_string(dir.path().join("upgradectl.fish")).unwrap();
        assert!(fish.contains("complete -c upgradectl"), "{fish:.200}");
    }

    /// Every visible subcommand and option, at every depth, survives the pruning with
    /// its help text; only hidden ones go.
    #[test]
    fn pruning_keeps_the_visible_surface() {
        fn surface(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
            for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                out.push(format!("{path} arg {} {help}", arg.get_id()));
            }
            for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
                let about = sub.get_about().map(|h| h.to_string()).unwrap_or_default();
                out.push(format!("{path} sub {} {about}", sub.get_name()));
                surface(sub, &format!("{path} {}", sub.get_name()), out);
            }
        }
        let mut original = Cli::command();
        original.build();
        let mut pruned = visible_only(&Cli::command());
        pruned.build();
        let (mut want, mut got) = (Vec::new(), Vec::new());
        surface(&original, "upgradectl", &mut want);
        surface(&pruned, "upgradectl", &mut got);
        assert_eq!(got, want);
        assert!(pruned.find_subcommand("internals").is_none());
        assert!(pruned.get_arguments().all(|a| a.get_id() != "config_root"));
    }
}
