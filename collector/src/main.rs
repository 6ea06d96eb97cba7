//! `vigil-collector`: flags, config, logging, signals; everything else is in the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing::info;
use vigil_shared::logging::{LogFormat, init_logging};

/// Receives Vigil agents' data and serves it to Prometheus.
#[derive(Debug, Parser)]
#[command(name = "vigil-collector", version, long_version = vigil_build_info::LONG_VERSION)]
struct Flags {
    /// Config file (TOML). Without it, the embedded defaults are used.
    #[arg(long, env = "VIGIL_COLLECTOR_CONFIG")]
    config: Option<PathBuf>,
    /// Folder for the write-ahead log; overrides store.data_dir.
    #[arg(long, env = "VIGIL_COLLECTOR_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Check the config, print the result and exit (0 when valid, 1 when not).
    #[arg(long)]
    check_config: bool,
    /// Log format: text or json. The level comes from RUST_LOG (default info).
    #[arg(long, env = "VIGIL_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Rule files: check them, or run their unit tests (promtool's formats
    /// and exit codes: 0 when all pass, 1 when any fails).
    Rules {
        #[command(subcommand)]
        action: RulesAction,
    },
    /// Notifications.
    Notify {
        #[command(subcommand)]
        action: NotifyAction,
    },
}

#[derive(Debug, clap::Subcommand)]
enum NotifyAction {
    /// Renders a sample notification for a receiver of the routing file
    /// (notify.alertmanager_config of --config) and sends it once.
    Test {
        /// The receiver's name.
        #[arg(long)]
        receiver: String,
    },
}

#[derive(Debug, clap::Subcommand)]
enum RulesAction {
    /// Checks rule files: YAML, PromQL and templates.
    Check {
        /// Rule files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Runs rule unit-test files (`promtool test rules` format).
    Test {
        /// Unit-test files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// `rules check` / `rules test`, printing as promtool does; the exit code.
fn rules_command(action: RulesAction) -> i32 {
    use vigil_rules::{file, unittest};
    let mut failed = false;
    match action {
        RulesAction::Check { files } => {
            for path in files {
                println!("Checking {}", path.display());
                match file::load_rule_file(&path) {
                    Ok(groups) => {
                        let rules: usize = groups.iter().map(|g| g.rules.len()).sum();
                        println!("  SUCCESS: {rules} rules found\n");
                    }
                    Err(errors) => {
                        failed = true;
                        eprintln!("  FAILED:");
                        for e in errors {
                            eprintln!("{e}");
                        }
                        eprintln!();
                    }
                }
            }
        }
        RulesAction::Test { files } => {
            for path in files {
                let outcome = unittest::run_file(&path);
                print!("{}", outcome.stdout);
                eprint!("{}", outcome.stderr);
                failed |= !outcome.passed;
            }
        }
    }
    i32::from(failed)
}

fn main() -> std::process::ExitCode {
    vigil_shared::logging::exit_code(run(Flags::parse()))
}

/// Everything `main` does; an error ends the process with one clean line.
fn run(flags: Flags) -> anyhow::Result<()> {
    let command = flags.command;
    if let Some(Command::Rules { action }) = command {
        std::process::exit(rules_command(action));
    }
    if let Some(Command::Notify {
        action: NotifyAction::Test { receiver },
    }) = command
    {
        let config = vigil_collector::config::load(flags.config.as_deref())?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let (ok, lines) = runtime
            .block_on(vigil_notify::manager::send_test(
                &config.notify,
                &receiver,
                &config.rules.external_url,
            ))
            .map_err(anyhow::Error::msg)?;
        for line in lines {
            println!("{line}");
        }
        std::process::exit(i32::from(!ok));
    }
    init_logging(flags.log_format);
    let mut config = vigil_collector::config::load(flags.config.as_deref())?;
    if let Some(dir) = flags.data_dir {
        config.data_dir = dir;
    }
    if flags.check_config {
        let (groups, rules) = vigil_rules::manager::check(&config.rules)
            .map_err(|errors| anyhow::anyhow!("rule files have errors:\n{}", errors.join("\n")))?;
        println!("rules are valid: {groups} groups, {rules} rules (built-in ones included)");
        vigil_notify::manager::check(&config.notify)
            .map_err(|e| anyhow::anyhow!("notification routing has errors:\n{e}"))?;
        if let Some(f) = &config.notify.config_file {
            println!("notification routing {} is valid", f.display());
        }
        println!(
            "config {} is valid: HTTP {}, ingest {}, {} agent tokens",
            flags
                .config
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "<embedded defaults>".into()),
            config.http_listen,
            config.ingest.listen,
            config.ingest.agents.len()
        );
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let (http, ingest, bound) = vigil_collector::bind(&config).await?;
        info!(
            http = %bound.http,
            ingest = %bound.ingest,
            tls = config.ingest.tls.is_some(),
            agent_tokens = config.ingest.agents.len(),
            "collector listening: metrics at http://{}/metrics",
            bound.http
        );
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        tokio::spawn(async move {
            vigil_shared::logging::wait_for_signal().await;
            info!("shutting down");
            signal.cancel();
        });
        vigil_collector::serve(config, http, ingest, shutdown).await?;
        info!("collector stopped");
        anyhow::Ok(())
    })
}
