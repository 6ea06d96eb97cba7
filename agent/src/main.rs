//! `vigil-agent`: flags, config, logging, signals; everything else is in the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use vigil_shared::logging::{LogFormat, init_logging};

/// Samples this host every second and ships it to a Vigil collector.
#[derive(Debug, Parser)]
#[command(name = "vigil-agent", version, long_version = vigil_build_info::LONG_VERSION)]
struct Flags {
    /// Config file (TOML). Without it, the embedded defaults are used.
    #[arg(long, env = "VIGIL_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// Check the config, print the result and exit (0 when valid, 1 when not).
    #[arg(long)]
    check_config: bool,
    /// Folder for the spool; overrides `data_dir` in the config.
    #[arg(long, env = "VIGIL_AGENT_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Log format: text or json. The level comes from RUST_LOG (default info).
    #[arg(long, env = "VIGIL_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

fn main() -> std::process::ExitCode {
    vigil_agent::memory::one_arena();
    vigil_shared::logging::exit_code(run(Flags::parse()))
}

/// Everything `main` does; an error ends the process with one clean line.
fn run(flags: Flags) -> anyhow::Result<()> {
    init_logging(flags.log_format);
    let mut config = vigil_agent::config::load(flags.config.as_deref())?;
    if let Some(dir) = flags.data_dir {
        config.data_dir = dir;
    }
    if flags.check_config {
        println!(
            "config {} is valid: instance {:?}, collector {}",
            flags
                .config
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "<embedded defaults>".into()),
            config.instance,
            config
                .collectors
                .iter()
                .map(|c| c.endpoint.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return Ok(());
    }
    // One thread is plenty: sampling takes microseconds and the network waits are async.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        tokio::spawn(async move {
            vigil_shared::logging::wait_for_signal().await;
            signal.cancel();
        });
        vigil_agent::run(config, shutdown).await
    })?;
    Ok(())
}
