use std::process::ExitCode;

const USAGE: &str = "usage: upgraded [--boot-restore]\n\
    (no argument)    run the daemon (upgraded.service)\n\
    --boot-restore   the boot side after an upgrade's kexec (upgraded-restore.service)";

fn main() -> ExitCode {
    upgraded::logging::init("info");
    // Test builds only: arms the fault points named in FAILPOINTS.
    dumper::faults::setup();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => match upgraded::daemon::main() {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                tracing::error!("{err:#}");
                ExitCode::FAILURE
            }
        },
        ["--boot-restore"] => {
            // Never fails the boot: the outcome is in the state and the journal.
            let paths = upgraded::config::ConfigPaths::system();
            match upgraded::config::load(&paths) {
                Ok(loaded) => {
                    if let Err(err) = upgraded::boot::run(&loaded.settings) {
                        tracing::error!("boot side: {err:#}");
                    }
                }
                Err(err) => tracing::error!(
                    "boot side: the configuration is invalid, nothing restored: {err}"
                ),
            }
            ExitCode::SUCCESS
        }
        ["--help" | "-h"] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("upgraded: unknown arguments {args:?}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
