//! The `upgradectl` command line, kept in the library so that man pages and shell
//! completions can be generated from the same definitions.

use crate::config::{self, ConfigPaths, Settings};
use crate::local;
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "upgradectl",
    version,
    about = "Switch kernels with kexec while chosen sessions and containers keep running",
    long_about = None
)]
pub struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// Read the configuration under DIR as if it were `/` (for tests).
    #[arg(long, global = true, hide = true, value_name = "DIR")]
    pub config_root: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the upgrade state, the known-good kernel and the last upgrade report.
    Status,
    /// List the installed kernels that can be switched to.
    Kernels,
    /// List the configured workloads and whether they resolve.
    Workloads,
    /// Run the pre-flight checks for KERNEL without changing anything.
    Check {
        /// Kernel release (e.g. 6.1.0-47-amd64) or path to a kernel image.
        kernel: String,
    },
    /// Checkpoint the workloads and kexec into KERNEL.
    Upgrade {
        kernel: String,
        /// Run every check and print the plan, but freeze nothing.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Go back to the known-good kernel of the last upgrade, with the workloads.
    Rollback {
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Checkpoint workloads into a new generation.
    Checkpoint {
        #[arg(required = true)]
        names: Vec<String>,
        /// Keep the workloads running after the dump (a snapshot).
        #[arg(long)]
        leave_running: bool,
        /// Pre-dumps before the final dump: a number from 0 to 16, or "auto" (as long
        /// as each copies clearly less than the one before, at most 8, within 60 s).
        /// Memory is copied while the workloads run, so the freeze lasts only for what
        /// changed since.
        #[arg(long, default_value = "0", value_name = "N|auto")]
        pre_dump: dumper::predump::PreDumps,
        /// Dump established TCP connections (they carry on after restore).
        #[arg(long)]
        tcp_established: bool,
    },
    /// Restore workloads from a generation (the newest committed one by default).
    Restore {
        #[arg(long)]
        generation: Option<String>,
        names: Vec<String>,
    },
    /// Checkpoint a workload and stop it (hibernate one session).
    Suspend { name: String },
    /// Bring back a suspended workload, also after a power-off.
    Resume { name: String },
    /// Make the key that seals suspend images at rest ([suspend] encrypt = true).
    #[command(subcommand)]
    SuspendKey(SuspendKeyCommand),
    /// Inspect the images in the persistent area.
    #[command(subcommand)]
    Images(ImagesCommand),
    /// Prepare the persistent area (a disk or pmem area: format and mount it).
    #[command(subcommand)]
    Area(AreaCommand),
    /// Validate or show the merged configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Entry points for units and the initramfs; not for people.
    #[command(subcommand, hide = true)]
    Internals(InternalsCommand),
}

#[derive(Debug, Subcommand)]
pub enum InternalsCommand {
    /// Restore one service workload as the service's start command.
    RestoreUnit {
        #[arg(long)]
        area: PathBuf,
        #[arg(long)]
        generation: String,
        #[arg(long)]
        workload: String,
        #[arg(long)]
        pid_file: PathBuf,
    },
    /// Write `<GENERATION>.compat`: the generation with rseq registrations dropped
    /// from every workload's images, as the boot side does for a kernel without rseq
    /// (docs/compat.md). For tests and inspection; the committed images stay as they
    /// are.
    DropRseq {
        #[arg(long)]
        generation: String,
    },
    /// Write the man pages and shell completions (`make install` runs it).
    GenDocs {
        /// Directory for upgradectl.1 and upgradectl-*.1.
        #[arg(long)]
        man: PathBuf,
        /// Directory for the bash, zsh and fish completions.
        #[arg(long)]
        completions: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// List the committed generations in the area.
    List,
    /// Show a generation's manifest: where it was made and its workloads.
    Show { generation: String },
    /// Re-hash every image file of a generation against its manifest.
    Verify { generation: String },
    /// Remove a generation and its images.
    Rm { generation: String },
}

#[derive(Debug, Subcommand)]
pub enum AreaCommand {
    /// Make the configured area ready, as root: a disk or pmem device that holds no
    /// file system is formatted (ext4, label upgraded-area) and mounted on
    /// /run/upgraded/area; one that holds the area's file system is only mounted; one
    /// that holds anything else is refused. A directory area is created if missing.
    Init,
}

#[derive(Debug, Subcommand)]
pub enum SuspendKeyCommand {
    /// Write a new key (an age X25519 identity, mode 0600, in age-keygen's format) and
    /// print its public key. An existing file is never overwritten: images sealed with
    /// a key cannot be resumed without it. Back the key up away from this machine.
    Generate {
        /// Where to write it [default: key_file of [suspend] in the configuration,
        /// /etc/upgraded/suspend.key unless set].
        #[arg(long, value_name = "PATH")]
        key_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// List the configuration files in the order they apply and validate them.
    Check,
    /// Print the merged configuration, defaults included, as TOML (or JSON with --json).
    Show,
}

impl Command {
    /// The subcommand's name as typed, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Status => "status",
            Command::Kernels => "kernels",
            Command::Workloads => "workloads",
            Command::Check { .. } => "check",
            Command::Upgrade { .. } => "upgrade",
            Command::Rollback { .. } => "rollback",
            Command::Checkpoint { .. } => "checkpoint",
            Command::Restore { .. } => "restore",
            Command::Suspend { .. } => "suspend",
            Command::Resume { .. } => "resume",
            Command::SuspendKey(_) => "suspend-key",
            Command::Images(_) => "images",
            Command::Area(_) => "area",
            Command::Config(_) => "config",
            Command::Internals(_) => "internals",
        }
    }
}

fn config_paths(cli: &Cli) -> ConfigPaths {
    match &cli.config_root {
        Some(root) => ConfigPaths::under_root(root),
        None => ConfigPaths::system(),
    }
}

/// The merged configuration; commands that act need it valid.
fn settings(cli: &Cli) -> anyhow::Result<Settings> {
    Ok(config::load(&config_paths(cli))
        .context("loading the configuration (`upgradectl config check` shows the details)")?
        .settings)
}

/// Runs one `upgradectl` command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Config(command) => {
            let paths = match &cli.config_root {
                Some(root) => ConfigPaths::under_root(root),
                None => ConfigPaths::system(),
            };
            let mut stdout = std::io::stdout().lock();
            match command {
                ConfigCommand::Check => config::command::check(&paths, cli.json, &mut stdout),
                ConfigCommand::Show => config::command::show(&paths, cli.json, &mut stdout),
            }
        }
        Command::Checkpoint {
            names,
            leave_running,
            pre_dump,
            tcp_established,
        } => local::checkpoint(
            &settings(&cli)?,
            local::CheckpointArgs {
                names,
                leave_running: *leave_running,
                tcp_established: *tcp_established,
                pre_dump: *pre_dump,
            },
            cli.json,
            &mut std::io::stdout().lock(),
        ),
        Command::Restore { generation, names } => local::restore(
            &settings(&cli)?,
            generation.as_deref(),
            names,
            cli.json,
            &mut std::io::stdout().lock(),
        ),
        Command::Suspend { name } => local::suspend(
            &settings(&cli)?,
            name,
            cli.json,
            &mut std::io::stdout().lock(),
        ),
        Command::Resume { name } => local::resume(
            &settings(&cli)?,
            name,
            cli.json,
            &mut std::io::stdout().lock(),
        ),
        Command::SuspendKey(SuspendKeyCommand::Generate { key_file }) => {
            // With --key-file the configuration is only read for a hint.
            let (path, configured) = match key_file {
                Some(path) => (
                    path.clone(),
                    config::load(&config_paths(&cli))
                        .ok()
                        .map(|l| l.settings.suspend),
                ),
                None => {
                    let suspend = settings(&cli)?.suspend;
                    (suspend.key_file.clone(), Some(suspend))
                }
            };
            local::suspend_key_generate(
                &path,
                configured.as_ref(),
                cli.json,
                &mut std::io::stdout().lock(),
            )
        }
        Command::Images(ic) => {
            let s = settings(&cli)?;
            let out = &mut std::io::stdout().lock();
            match ic {
                ImagesCommand::List => local::images_list(&s, cli.json, out),
                ImagesCommand::Show { generation } => {
                    local::images_show(&s, generation, cli.json, out)
                }
                ImagesCommand::Verify { generation } => {
                    local::images_verify(&s, generation, cli.json, out)
                }
                ImagesCommand::Rm { generation } => local::images_rm(&s, generation, cli.json, out),
            }
        }
        Command::Area(AreaCommand::Init) => crate::area_device::init_command(
            &settings(&cli)?,
            cli.json,
            &mut std::io::stdout().lock(),
        ),
        Command::Internals(InternalsCommand::RestoreUnit {
            area,
            generation,
            workload,
            pid_file,
        }) => local::internals_restore_unit(area, generation, workload, pid_file),
        Command::Internals(InternalsCommand::DropRseq { generation }) => {
            local::internals_drop_rseq(&settings(&cli)?, generation, &mut std::io::stdout().lock())
        }
        Command::Internals(InternalsCommand::GenDocs { man, completions }) => {
            use clap::CommandFactory;
            crate::docs::write_man_pages(Cli::command(), man)
                .with_context(|| format!("writing man pages into {}", man.display()))?;
            crate::docs::write_completions(Cli::command(), completions)
                .with_context(|| format!("writing completions into {}", completions.display()))?;
            Ok(())
        }
        Command::Status => crate::remote::status(cli.json, &mut std::io::stdout().lock()),
        Command::Kernels => crate::remote::kernels(cli.json, &mut std::io::stdout().lock()),
        Command::Workloads => crate::remote::workloads(cli.json, &mut std::io::stdout().lock()),
        Command::Check { kernel } => {
            crate::remote::check(kernel, cli.json, &mut std::io::stdout().lock())
        }
        Command::Upgrade {
            kernel,
            dry_run,
            yes,
        } => crate::remote::upgrade(
            kernel,
            *dry_run,
            *yes,
            cli.json,
            &mut std::io::stdout().lock(),
        ),
        Command::Rollback { yes } => {
            crate::remote::rollback(*yes, cli.json, &mut std::io::stdout().lock())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn pre_dump_is_bounded() {
        let cli = Cli::parse_from(["upgradectl", "checkpoint", "--pre-dump", "16", "tmux:a"]);
        assert!(matches!(
            cli.command,
            Command::Checkpoint {
                pre_dump: dumper::predump::PreDumps::Fixed(16),
                ..
            }
        ));
        let cli = Cli::parse_from(["upgradectl", "checkpoint", "--pre-dump", "auto", "tmux:a"]);
        assert!(matches!(
            cli.command,
            Command::Checkpoint {
                pre_dump: dumper::predump::PreDumps::Auto,
                ..
            }
        ));
        let err = Cli::try_parse_from(["upgradectl", "checkpoint", "--pre-dump", "17", "tmux:a"])
            .unwrap_err();
        assert!(err.to_string().contains("0 to 16"), "{err}");
    }

    #[test]
    fn area_init_parses() {
        let cli = Cli::parse_from(["upgradectl", "area", "init", "--json"]);
        assert!(matches!(cli.command, Command::Area(AreaCommand::Init)));
        assert!(cli.json);
        assert_eq!(cli.command.name(), "area");
    }

    #[test]
    fn suspend_key_generate_takes_a_key_file() {
        let cli = Cli::parse_from(["upgradectl", "suspend-key", "generate"]);
        assert!(matches!(
            cli.command,
            Command::SuspendKey(SuspendKeyCommand::Generate { key_file: None })
        ));
        assert_eq!(cli.command.name(), "suspend-key");
        let cli = Cli::parse_from([
            "upgradectl",
            "suspend-key",
            "generate",
            "--key-file",
            "/root/k",
        ]);
        let Command::SuspendKey(SuspendKeyCommand::Generate { key_file }) = cli.command else {
            panic!("{:?}", cli.command);
        };
        assert_eq!(key_file, Some(PathBuf::from("/root/k")));
    }

    #[test]
    fn config_root_is_global() {
        let cli = Cli::parse_from(["upgradectl", "config", "check", "--config-root", "/tmp/r"]);
        assert_eq!(cli.config_root, Some(PathBuf::from("/tmp/r")));
        assert!(matches!(cli.command, Command::Config(ConfigCommand::Check)));
    }
}
