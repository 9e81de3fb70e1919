use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    upgraded::logging::init("warn");
    // In-process commands (checkpoint, suspend...) have fault points too (test builds).
    dumper::faults::setup();
    let cli = upgraded::cli::Cli::parse();
    match upgraded::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("upgradectl: {err:#}");
            ExitCode::from(upgraded::remote::exit_code(&err))
        }
    }
}
