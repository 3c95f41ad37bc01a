//! `zoho-gateway demo`: the bundled simulator and a gateway wired together on loopback, with
//! the embedded `config/demo.toml`.

use crate::config::{ConfigError, GatewayConfig, RawConfig};
use crate::{App, Running};
use zoho_crm_simulator::{RunningSimulator, SimConfig, Simulator};

/// The embedded demo configuration (`config/demo.toml`).
pub const DEMO_CONFIG: &str = include_str!("../config/demo.toml");

/// The demo's gateway client key (`[clients.demo]` in `config/demo.toml`).
pub const DEMO_CLIENT_KEY: &str = "demo-gateway-key";

/// The seed's sample `filters` (Tier1 OR Tier2), percent-encoded exactly as in Zoho's docs
/// ([`zoho_crm_simulator::samples::SEED_CURL`]).
pub const SEED_FILTERS: &str = zoho_crm_simulator::samples::SEED_CURL;

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The embedded or overridden config is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The simulator could not start.
    #[error("simulator: {0}")]
    Simulator(String),
    /// The gateway could not start.
    #[error(transparent)]
    Start(#[from] crate::StartError),
}

/// A running demo.
pub struct Demo {
    /// The simulator (Zoho stand-in).
    pub simulator: RunningSimulator,
    /// The gateway.
    pub gateway: Running,
}

/// The demo's gateway config with the simulator's address filled in. `raw` is the parsed
/// demo config (with any `ZOHO_GATEWAY_*` overrides already applied).
///
/// # Errors
/// [`ConfigError`] when the result does not validate.
pub fn demo_config(mut raw: RawConfig, simulator_url: &str) -> Result<GatewayConfig, ConfigError> {
    for tenant in raw.tenants.values_mut() {
        tenant.api_base = Some(simulator_url.to_owned());
        tenant.accounts_url = Some(simulator_url.to_owned());
    }
    raw.validate()
}

/// Starts the simulator (default settings, free port) and the gateway from `raw`.
///
/// # Errors
/// [`DemoError`] when either cannot start.
pub async fn start(raw: RawConfig) -> Result<Demo, DemoError> {
    let simulator = Simulator::spawn(SimConfig::default())
        .await
        .map_err(|e| DemoError::Simulator(e.to_string()))?;
    let config = demo_config(raw, &simulator.base_url())?;
    let gateway = App::spawn(config).await?;
    Ok(Demo { simulator, gateway })
}

impl std::fmt::Debug for Demo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Demo")
            .field("simulator", &self.simulator.base_url())
            .field("gateway", &self.gateway)
            .finish()
    }
}

impl Demo {
    /// The human-readable banner: URLs, the client key, ready-to-paste curl commands.
    pub fn banner(&self) -> String {
        let gw = self.gateway.proxy_addr();
        let admin = self.gateway.admin_addr();
        let sim = self.simulator.base_url();
        let scheme = if self.gateway.gateway().config().tls.is_some() {
            "https"
        } else {
            "http"
        };
        let url = format!(
            "{scheme}://{gw}/crm/v7/settings/user_groups/actions/associated_users_count?filters={SEED_FILTERS}"
        );
        format!(
            "zoho-gateway demo is running (Ctrl-C to stop)\n\
             \n  gateway     {scheme}://{gw}\
             \n  admin       http://{admin}/metrics  /healthz  /readyz\
             \n  simulator   {sim}   (stats: {sim}/__simulator/stats)\
             \n  client key  {DEMO_CLIENT_KEY}\
             \n\nThe seed's sample request (Tier1 OR Tier2) through the gateway; run it twice and watch Cache-Status:\
             \n\n  curl -i \"{url}\" \\\n    -H \"Authorization: Zoho-oauthtoken {DEMO_CLIENT_KEY}\"\
             \n\nThe same filter spelled by the Python SDK (shares the cache entry):\
             \n\n  curl -i \"{scheme}://{gw}/crm/v7/settings/user_groups/actions/associated_users_count?filters=%7B%22group_operator%22%3A+%22or%22%2C+%22group%22%3A+%5B%7B%22field%22%3A+%7B%22api_name%22%3A+%22name%22%7D%2C+%22comparator%22%3A+%22equal%22%2C+%22value%22%3A+%22Tier1%22%7D%2C+%7B%22field%22%3A+%7B%22api_name%22%3A+%22name%22%7D%2C+%22comparator%22%3A+%22equal%22%2C+%22value%22%3A+%22Tier2%22%7D%5D%7D\" \\\n    -H \"Authorization: Zoho-oauthtoken {DEMO_CLIENT_KEY}\"\
             \n\nAll groups, first page of 5:\
             \n\n  curl -s \"{scheme}://{gw}/crm/v7/settings/user_groups/actions/associated_users_count?per_page=5\" -H \"X-Gateway-Key: {DEMO_CLIENT_KEY}\"\
             \n\nUpstream calls the simulator has seen:\
             \n\n  curl -s {sim}/__simulator/stats\
             \n\nMetrics:\
             \n\n  curl -s http://{admin}/metrics | grep zoho_gateway_requests_total\n"
        )
    }

    /// Stops the gateway (drained) and then the simulator.
    pub async fn shutdown(self) {
        self.gateway.shutdown().await;
        self.simulator.shutdown().await;
    }
}
