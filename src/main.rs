//! `zoho-gateway` binary: parses the command line, loads config, starts telemetry, runs.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use zoho_crm_simulator::{SimConfig, Simulator};
use zoho_gateway::config::RawConfig;
use zoho_gateway::{App, demo, telemetry};

#[derive(Parser)]
#[command(version, about = "Caching gateway for the Zoho CRM REST API")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway from a config file (plus ZOHO_GATEWAY_* environment overrides).
    Serve {
        /// Config file (TOML).
        #[arg(long, default_value = "config/gateway.toml")]
        config: PathBuf,
    },
    /// Run the bundled Zoho CRM simulator alone.
    Simulate {
        /// Listen address. Default: the config file's `listen`, or 127.0.0.1:8100 without one.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Simulator settings (TOML, every key in config/simulator.toml). Default: built-in.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the simulator and the gateway wired together, with the embedded demo config; first
    /// send a few hot reads and print the credits saved by route.
    Demo {
        /// Do not send the start-up hot reads (metrics start from zero).
        #[arg(long)]
        no_hot_reads: bool,
    },
    /// Load and validate a config; print the effective config with secrets redacted.
    CheckConfig {
        /// Config file (TOML).
        #[arg(long, default_value = "config/gateway.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = e.source();
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn run(command: Command) -> Result<(), BoxError> {
    match command {
        Command::Serve { config } => {
            let raw = RawConfig::load(&config)?;
            telemetry::init(&raw.logging);
            raise_open_file_limit();
            let mut signals = Signals::register()?;
            let validated = raw.validate()?;
            if let Some(warning) = unusable(&validated) {
                tracing::warn!("{warning}");
            }
            let running = App::spawn(validated).await?;
            serve_until_shutdown(&running, &config, &mut signals).await;
            running.gateway().set_draining();
            tracing::info!("shutting down: draining in-flight requests");
            running.shutdown().await;
        }
        Command::Simulate { listen, config } => {
            telemetry::init(&Default::default());
            let mut signals = Signals::register()?;
            let mut sim_config = match &config {
                Some(path) if !path.exists() => {
                    return Err(format!("--config {}: file not found", path.display()).into());
                }
                Some(path) => figment::Figment::new()
                    .merge(<figment::providers::Toml as figment::providers::Format>::file(path))
                    .extract::<SimConfig>()
                    .map_err(|e| format!("--config {}: {e}", path.display()))?,
                None => SimConfig {
                    listen: ([127, 0, 0, 1], 8100).into(),
                    ..SimConfig::default()
                },
            };
            if let Some(listen) = listen {
                sim_config.listen = listen;
            }
            // The first configured client and refresh token (the demo ones by default).
            let (id, secret, refresh) = sim_config
                .clients
                .first()
                .and_then(|c| {
                    let token = c.refresh_tokens.first()?;
                    Some((
                        c.client_id.clone(),
                        c.client_secret.clone(),
                        token.token.clone(),
                    ))
                })
                .unwrap_or_else(SimConfig::demo_credentials);
            let sim = Simulator::spawn(sim_config).await?;
            println!(
                "Zoho CRM simulator on {}\n  client_id      {id}\n  client_secret  {secret}\n  refresh_token  {refresh}\n  token endpoint {}/oauth/v2/token\n  stats          {}/__simulator/stats",
                sim.base_url(),
                sim.base_url(),
                sim.base_url()
            );
            signals.shutdown().await;
            sim.shutdown().await;
        }
        Command::Demo { no_hot_reads } => {
            let raw = RawConfig::from_toml_str(demo::DEMO_CONFIG)?;
            telemetry::init(&raw.logging);
            raise_open_file_limit();
            let mut signals = Signals::register()?;
            let demo = demo::start(raw).await?;
            let savings = if no_hot_reads {
                None
            } else {
                Some(demo.exercise().await?)
            };
            println!("{}", demo.banner());
            if let Some(savings) = savings {
                println!("{}", demo.savings_report(&savings));
            }
            signals.shutdown().await;
            demo.shutdown().await;
        }
        Command::CheckConfig { config } => {
            let raw = RawConfig::load(&config)?;
            let validated = raw.validate()?;
            println!("# {}: valid", config.display());
            // Secrets serialize as `[redacted]` (their type's `Serialize`).
            println!("{}", serde_json::to_string_pretty(&raw)?);
            println!(
                "# {} tenant(s), {} client key(s)",
                validated.tenants.len(),
                validated.clients.len()
            );
            if let Some(warning) = unusable(&validated) {
                println!("# warning: {warning}");
            }
        }
    }
    Ok(())
}

/// Raises the soft open-file limit to the hard one, so `server.max_connections` fits (the gateway
/// clamps it, with a warning, to what the limit allows).
fn raise_open_file_limit() {
    if let Some(limit) = zoho_gateway::server::raise_open_file_limit() {
        tracing::info!(open_file_limit = limit, "open-file limit");
    }
}

/// The process signals, registered before the gateway starts listening, so a signal that
/// arrives early is handled instead of killing the process with the default action.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn register() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                term: signal(SignalKind::terminate())?,
                hup: signal(SignalKind::hangup())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Waits for SIGTERM or Ctrl-C.
    async fn shutdown(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = self.term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Waits for SIGTERM / Ctrl-C; on SIGHUP reloads `path` and the environment (tenants added,
/// removed or changed apply live; an invalid config is refused and the old one stays, with the
/// reason logged).
/// Why a valid config still serves nothing (no tenant, or no client key): the gateway starts
/// (tenants and keys can be added by a reload) but refuses every proxied request.
fn unusable(config: &zoho_gateway::config::GatewayConfig) -> Option<&'static str> {
    if config.tenants.is_empty() {
        Some("no tenant is configured: every proxied request is refused until one is added")
    } else if config.clients.is_empty() {
        Some("no client key is configured: every proxied request is refused (401)")
    } else {
        None
    }
}

async fn serve_until_shutdown(
    running: &zoho_gateway::Running,
    path: &std::path::Path,
    signals: &mut Signals,
) {
    #[cfg(unix)]
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = signals.term.recv() => return,
            _ = signals.hup.recv() => {
                // Logged (one line: what changed, or why nothing did) and counted by the library.
                let _ = running.reload_file(path);
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (running, path);
        signals.shutdown().await
    }
}
