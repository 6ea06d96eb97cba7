//! Logging and signals for both binaries: tracing-subscriber with `RUST_LOG`
//! (default `info`) in text or JSON, and one future for SIGINT or SIGTERM.

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Ends a binary's `main`: on error, prints one line `error: …` with every
/// cause joined by `: ` to standard error and exits with 1. Never a stack
/// trace, whatever `RUST_BACKTRACE` says: a config or start-up error is the
/// operator's to fix, and a backtrace of `<unknown>` frames only hides it.
pub fn exit_code<E: std::fmt::Display>(result: Result<(), E>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` is anyhow's whole chain of causes on one line.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Installs the global subscriber, writing to standard error.
///
/// Without `RUST_LOG` the level is a plain `info` filter: building an
/// `EnvFilter` compiles its directive-parsing regular expressions, whose
/// code and tables stay resident (about a quarter of a MiB), which the
/// agent's memory budget cannot spare on every host.
pub fn init_logging(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false);
    if std::env::var_os("RUST_LOG").is_some() {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let builder = builder.with_env_filter(filter);
        match format {
            LogFormat::Text => builder.init(),
            LogFormat::Json => builder.json().flatten_event(true).init(),
        }
    } else {
        let builder = builder.with_max_level(tracing_subscriber::filter::LevelFilter::INFO);
        match format {
            LogFormat::Text => builder.init(),
            LogFormat::Json => builder.json().flatten_event(true).init(),
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
