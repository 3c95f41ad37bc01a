//! # zoho-gateway
//!
//! A caching gateway for the Zoho CRM REST API. Internal services point their Zoho base URL at
//! it; it answers repeated count queries from a cache, coalesces concurrent identical misses into
//! one Zoho call, and manages the OAuth access tokens itself.
//!
//! ```text
//!  client ──▶ server (listener, drain)
//!               │
//!               ▼
//!             proxy::Gateway::handle ── route ── authenticate (client key → tenant)
//!               │
//!               ▼
//!             canonical (query → canonical form → CacheKey) ── invalid → 400 INVALID_DATA, no upstream
//!               │
//!               ▼
//!             cache (moka, bytes-bounded) ── fresh → hit (Cache-Status: hit, Age)
//!               │ miss
//!               ▼
//!             coalesce (single-flight, task-owned fetch)
//!               │
//!               ▼ with [redis]: fleet L2 (Redis) ── fresh → hit (detail=shared); else cross-replica flight
//!               │
//!               ▼
//!             token (per-tenant refresh-token grant) ──▶ upstream (pooled hyper client) ──▶ Zoho
//! ```
//!
//! [`App::spawn`] starts one gateway (proxy and admin listeners) from a validated
//! [`config::GatewayConfig`]; tests, benches and the `demo` command all start it that way.
//! The bundled Zoho CRM simulator is its own crate, [`zoho_crm_simulator`] (`simulator/`): it
//! imports nothing from the gateway, so it stays an independent oracle for the tests.
#![forbid(unsafe_code)]

pub mod admin;
pub mod cache;
pub mod canonical;
pub mod clock;
pub mod coalesce;
pub mod config;
pub mod credits;
pub mod demo;
pub mod error;
pub mod fleet;
pub mod gateway;
pub mod headers;
pub mod metrics;
pub mod proxy;
pub mod route;
pub mod server;
pub mod telemetry;
pub mod tls;
pub mod token;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::GatewayConfig;
use crate::metrics::Metrics;
use crate::proxy::Gateway;
use crate::server::ListenerSettings;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not bind.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Metric registration failed (a bug).
    #[error("metrics registration failed")]
    Metrics(#[from] prometheus::Error),
    /// The fleet tier (`[redis]`) could not be set up (a Redis that is down is not this: the
    /// gateway starts and falls back to single-node behaviour).
    #[error("fleet tier setup failed")]
    Fleet(#[from] crate::fleet::FleetSetupError),
}

/// Entry point of the library: starts gateways.
#[derive(Debug)]
pub struct App;

/// A running gateway.
#[derive(Debug)]
pub struct Running {
    proxy_addr: SocketAddr,
    admin_addr: SocketAddr,
    gateway: Arc<Gateway>,
    /// The proxy listener's TLS, whose certificate [`Running::reload`] swaps.
    tls: Option<tls::Acceptor>,
    proxy_shutdown: CancellationToken,
    proxy: JoinHandle<()>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl App {
    /// Binds the proxy and admin listeners (port 0 picks a free port), starts the token
    /// refreshers and the cache maintenance, and serves until [`Running::shutdown`].
    ///
    /// # Errors
    /// [`StartError::Bind`] when a listener cannot bind; [`StartError::Fleet`] when the
    /// `[redis]` tier cannot be set up.
    pub async fn spawn(config: GatewayConfig) -> Result<Running, StartError> {
        Self::spawn_with_clock(config, Clock::tokio()).await
    }

    /// [`App::spawn`] with a given clock for freshness decisions (tests use
    /// [`Clock::manual`]).
    ///
    /// # Errors
    /// [`StartError::Bind`] when a listener cannot bind.
    pub async fn spawn_with_clock(
        config: GatewayConfig,
        clock: Clock,
    ) -> Result<Running, StartError> {
        let config = Arc::new(config);
        let metrics = Arc::new(Metrics::register(
            config.cache_max_bytes,
            config.route_labels(),
            config.redis.is_some(),
        )?);
        let gateway = Arc::new(Gateway::new(config.clone(), metrics, clock)?);
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })
        };
        let proxy_listener = bind(config.listen).await?;
        let admin_listener = bind(config.admin_listen).await?;
        let proxy_addr = proxy_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                addr: config.listen,
                source,
            })?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                addr: config.admin_listen,
                source,
            })?;
        let shutdown = CancellationToken::new();
        let settings = ListenerSettings {
            header_read_timeout: config.header_read_timeout,
            idle_timeout: config.idle_timeout,
            drain_timeout: config.drain_timeout,
            max_connections: max_connections(&config),
            max_header_bytes: config.max_header_bytes,
            max_headers: config.max_headers,
            http2_max_concurrent_streams: config.http2_max_concurrent_streams,
        };
        let mut tasks = Vec::new();
        // The proxy drains first, with its own token; the admin listener (and `/readyz`, which
        // says "draining") stays up until the proxy is done.
        let proxy_shutdown = CancellationToken::new();
        let gw = gateway.clone();
        let tls = config.tls.as_ref().map(tls::Acceptor::new);
        let proxy = tokio::spawn(server::serve_with_tls(
            proxy_listener,
            tls.clone(),
            move |req, peer| gw.clone().handle(req, peer),
            settings,
            proxy_shutdown.clone(),
        ));
        let gw = gateway.clone();
        tasks.push(tokio::spawn(server::serve(
            admin_listener,
            move |req, _peer| admin::handle(gw.clone(), req),
            ListenerSettings {
                max_connections: server::ADMIN_MAX_CONNECTIONS,
                ..settings
            },
            shutdown.clone(),
        )));
        gateway.start_tenant_tasks();
        // The fleet tier (with `[redis]`): Redis connection, events, L1 invalidation. It stops
        // with the other background tasks, after the proxy has drained.
        if gateway.fleet().is_some() {
            tasks.push(tokio::spawn(
                gateway.clone().run_fleet(shutdown.child_token()),
            ));
        }
        tasks.push(tokio::spawn(
            gateway
                .cache()
                .clone()
                .run_maintenance(Duration::from_secs(1), shutdown.child_token()),
        ));
        tracing::info!(%proxy_addr, %admin_addr, tls = tls.is_some(), tenants = gateway.tenants().len(), "gateway listening");
        Ok(Running {
            proxy_addr,
            admin_addr,
            gateway,
            tls,
            proxy_shutdown,
            proxy,
            shutdown,
            tasks,
        })
    }
}

/// `server.max_connections`, clamped (with a warning) so that client connections, the admin
/// listener's, one upstream connection per concurrency slot and token request of every tenant,
/// and [`server::FD_BASE_RESERVE`] fit under the open-file limit in force.
fn max_connections(config: &GatewayConfig) -> usize {
    let configured = config.max_connections;
    let Some(limit) = server::open_file_limit() else {
        return configured;
    };
    let upstream: u64 = config
        .tenants
        .iter()
        .map(|t| t.max_concurrency as u64 + 1)
        .sum();
    let reserved = server::FD_BASE_RESERVE + server::ADMIN_MAX_CONNECTIONS as u64 + upstream;
    let fit = server::fit_connections(configured, limit, reserved);
    if fit < configured {
        tracing::warn!(
            configured,
            max_connections = fit,
            open_file_limit = limit,
            reserved,
            "server.max_connections clamped to fit the open-file limit (raise `ulimit -n`)"
        );
    }
    fit
}

impl Running {
    /// Address of the proxy listener.
    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy_addr
    }

    /// Address of the admin listener.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Applies a new configuration without dropping the cache (see [`Gateway::reload`]: tenants
    /// added, removed and changed live), and the new `[server.tls]` certificate, key and client
    /// CA: new connections handshake with them, open connections finish with what they
    /// negotiated. A config that changes a restart-only setting (listeners, switching TLS on or
    /// off, `cache.max_bytes`, the upstream client, logging, `[redis]`) is refused whole, the
    /// keys named. Logs one line (what
    /// changed, or why nothing did) and counts `zoho_gateway_config_reloads_total{result}`.
    ///
    /// # Errors
    /// Why the new configuration was refused; the old one stays in force.
    pub fn reload(
        &self,
        config: GatewayConfig,
    ) -> Result<gateway::ReloadSummary, gateway::ReloadError> {
        self.apply(Ok(config))
    }

    /// Loads `path` (plus `ZOHO_GATEWAY_*` environment overrides, as at start-up), validates
    /// it and applies it as [`Running::reload`] does (what SIGHUP runs). An invalid file is
    /// refused, logged and counted (`result="invalid"`); the old configuration stays.
    ///
    /// # Errors
    /// Why the new configuration was refused.
    pub fn reload_file(
        &self,
        path: &std::path::Path,
    ) -> Result<gateway::ReloadSummary, gateway::ReloadError> {
        self.apply(config::RawConfig::load(path).and_then(|raw| raw.validate()))
    }

    fn apply(
        &self,
        config: Result<GatewayConfig, config::ConfigError>,
    ) -> Result<gateway::ReloadSummary, gateway::ReloadError> {
        let result = config
            .map_err(gateway::ReloadError::Invalid)
            .and_then(|config| {
                let tls = config.tls.clone();
                let summary = self.gateway.reload(config)?;
                // Switching TLS on or off is refused above (restart-only).
                if let (Some(acceptor), Some(settings)) = (&self.tls, &tls) {
                    acceptor.replace(settings);
                }
                Ok(summary)
            });
        let metrics = self.gateway.metrics();
        match &result {
            Ok(s) => {
                metrics.record_reload("applied");
                tracing::info!(
                    added = ?s.added,
                    removed = ?s.removed,
                    changed = ?s.changed,
                    new_identity = ?s.new_identity,
                    "configuration reloaded"
                );
            }
            Err(e) => {
                metrics.record_reload(e.result());
                tracing::error!(
                    error = %telemetry::ErrorChain(e),
                    "reload refused; keeping the current configuration"
                );
            }
        }
        result
    }

    /// The shared gateway state (metrics, cache, tenants).
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// Drains: `/readyz` turns 503, listeners stop accepting, in-flight requests finish within
    /// the drain deadline, background tasks stop. Returns when all of that is done.
    pub async fn shutdown(self) {
        self.gateway.set_draining();
        self.proxy_shutdown.cancel();
        // Just before the drain deadline, requests still waiting get a 503 (shutting down), so
        // their clients get an answer before the connections close.
        let drain = self.gateway.config().drain_timeout;
        let margin = (drain / 10).min(std::time::Duration::from_secs(1));
        let gateway = self.gateway.clone();
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(drain.saturating_sub(margin)).await;
            gateway.stop_waiting();
        });
        let _ = self.proxy.await;
        stopper.abort();
        self.shutdown.cancel();
        self.gateway.stop_tenant_tasks().await;
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
