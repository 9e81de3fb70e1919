//! Logging set-up shared by the binaries.

use tracing_subscriber::EnvFilter;

/// Logs go to stderr. Under journald (which sets `JOURNAL_STREAM`) timestamps are left
/// out because the journal adds its own.
pub fn init(default_level: &str) {
    let filter =
        EnvFilter::try_from_env("UPGRADED_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().with_ansi(false).init();
    } else {
        builder.init();
    }
}
