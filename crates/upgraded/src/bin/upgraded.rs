use std::process::ExitCode;

fn main() -> ExitCode {
    upgraded::logging::init("info");
    // The daemon (D-Bus service, upgrade state machine) is not built yet.
    eprintln!("upgraded: the daemon is not implemented yet in this build");
    ExitCode::FAILURE
}
