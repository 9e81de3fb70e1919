use std::process::ExitCode;

fn main() -> ExitCode {
    upgraded::logging::init("info");
    match upgraded::daemon::main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}
