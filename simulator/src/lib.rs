//! An in-process simulator of the Zoho CRM endpoints the gateway fronts:
//! the OAuth refresh-token grant, the user-groups settings API (above all
//! `GET /crm/{v}/settings/user_groups/actions/associated_users_count`), the
//! metadata reads the SDKs make (modules, fields, layouts, related lists,
//! custom views, roles, profiles, users, org) and records (list, get, search
//! with its own criteria evaluator, create, update, delete).
//!
//! It is "Zoho" for tests, benches and the `demo`/`simulate` CLI: faithful to
//! `shared/zoho/API-NOTES.md`, with every behaviour the notes mark
//! \[unverified\] chosen, documented where it is implemented, and configurable
//! in [`SimConfig`] where the gateway's correctness depends on it.
//!
//! ```text
//! client ──HTTP──▶ server (accept, graceful drain)
//!                    └─ route::classify ─┬─ /oauth/v2/token      → oauth
//!                                        ├─ /__simulator/*        → control
//!                                        └─ /crm/{v5..v8}/…        → api
//!                                              count → fault → latency → route → auth
//!                                              → scope → user → handler: user groups (store,
//!                                              filters), api/meta (crm), api/records (crm,
//!                                              criteria)
//! ```
//!
//! ```no_run
//! # async fn demo() -> Result<(), zoho_crm_simulator::SimError> {
//! use zoho_crm_simulator::{SimConfig, SimRoute, Simulator};
//! let sim = Simulator::spawn(SimConfig::default()).await?;
//! let (client_id, client_secret, refresh_token) = SimConfig::demo_credentials();
//! // POST {sim.base_url()}/oauth/v2/token, then GET the API with the token …
//! assert_eq!(sim.handle().calls(SimRoute::AssociatedUsersCount), 0);
//! sim.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Module map: [`config`] settings, [`dataset`] data-set file and generator,
//! [`filters`] the `filters` evaluator, `route` paths → [`SimRoute`], `oauth`
//! token endpoint, `api` the API request path, `store` live groups,
//! `crm` modules, metadata and records, `response` envelope and headers,
//! `control` the `/__simulator/` surface,
//! `handle` counters and faults ([`SimHandle`]), `server` accept loop; [`samples`] how Zoho's
//! clients spell requests (for tests, benches and fuzz targets).

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod api;
pub mod config;
mod control;
pub mod criteria;
mod crm;
pub mod dataset;
pub mod filters;
mod handle;
mod oauth;
mod params;
mod response;
mod route;
pub mod samples;
mod server;
mod store;
#[cfg(test)]
mod tests;

pub use config::{DuplicateParams, NoMatch, SimClient, SimConfig, SimRefreshToken};
pub use dataset::{Dataset, DatasetError, generate_dataset};
pub use handle::{SimHandle, SimStats};
pub use route::SimRoute;

use crm::{CrmStore, PageTokens};
use handle::{Counters, Faults, State};
use oauth::{Registry, TokenStore};
use store::Store;

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The listen address could not be bound.
    #[error("cannot bind simulator to {addr}")]
    Bind {
        /// The address from [`SimConfig::listen`].
        addr: SocketAddr,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
    /// The data set file could not be loaded.
    #[error("cannot load simulator data set")]
    Dataset(#[from] DatasetError),
    /// The config is inconsistent (duplicate client id or refresh token,
    /// zero `max_live_tokens`, invalid `token_throttle_status`).
    #[error("invalid simulator config: {0}")]
    Config(String),
}

/// Starts simulators.
#[derive(Debug)]
pub struct Simulator;

impl Simulator {
    /// Validates `config`, loads the data set ([`SimConfig::dataset`] or the
    /// bundled one), binds [`SimConfig::listen`] and serves in a background
    /// task until [`RunningSimulator::shutdown`] (or drop).
    ///
    /// # Errors
    ///
    /// [`SimError::Config`], [`SimError::Dataset`] or [`SimError::Bind`].
    pub async fn spawn(config: SimConfig) -> Result<RunningSimulator, SimError> {
        if config.max_live_tokens == 0 {
            return Err(SimError::Config(
                "max_live_tokens must be at least 1".into(),
            ));
        }
        if hyper::StatusCode::from_u16(config.token_throttle_status).is_err() {
            return Err(SimError::Config(format!(
                "token_throttle_status {} is not an HTTP status",
                config.token_throttle_status
            )));
        }
        let registry = Registry::from_config(&config).map_err(SimError::Config)?;
        let dataset = match &config.dataset {
            Some(path) => Dataset::load(path)?,
            None => Dataset::bundled(),
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| SimError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SimError::Bind {
            addr: config.listen,
            source,
        })?;
        let cancel = CancellationToken::new();
        let state = Arc::new(State {
            base_url: format!("http://{addr}"),
            registry,
            tokens: Mutex::new(TokenStore::default()),
            store: Mutex::new(Store::from_dataset(&dataset)),
            crm: Mutex::new(CrmStore::from_dataset(&dataset)),
            page_tokens: Mutex::new(PageTokens::default()),
            counters: Counters::default(),
            faults: Mutex::new(Faults::default()),
            token_down: AtomicBool::new(false),
            owners: Mutex::new(Default::default()),
            cancel: cancel.clone(),
            flight_changed: Default::default(),
            credits: Default::default(),
            config,
        });
        let task = tokio::spawn(server::serve(listener, state.clone()));
        Ok(RunningSimulator {
            addr,
            handle: SimHandle { state },
            cancel,
            task: Some(task),
        })
    }
}

/// A simulator serving in the background. Dropping it stops the server
/// without waiting; [`RunningSimulator::shutdown`] waits.
#[derive(Debug)]
pub struct RunningSimulator {
    addr: SocketAddr,
    handle: SimHandle,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl RunningSimulator {
    /// The bound address (the real port when `listen` had port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`, no trailing slash. Also the `api_domain` the token
    /// endpoint returns.
    pub fn base_url(&self) -> String {
        self.handle.state.base_url.clone()
    }

    /// Counters and fault controls (cheap clone).
    pub fn handle(&self) -> SimHandle {
        self.handle.clone()
    }

    /// Stops accepting, ends hung and delayed requests, asks every
    /// connection to close, and returns when they have (at most
    /// 5 seconds of draining).
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningSimulator {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
