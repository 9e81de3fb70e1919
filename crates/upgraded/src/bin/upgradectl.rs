use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    upgraded::logging::init("warn");
    let cli = upgraded::cli::Cli::parse();
    match upgraded::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("upgradectl: {err:#}");
            ExitCode::from(upgraded::remote::exit_code(&err))
        }
    }
}
