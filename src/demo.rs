//! `zoho-gateway demo`: the bundled simulator and a gateway wired together on loopback, with
//! the embedded `config/demo.toml` and the route table of the shipped `config/gateway.toml`
//! (Zoho's hot reads). [`Demo::exercise`] sends a few hot reads the way an SDK would and reports
//! the credits saved by route.

use crate::config::{ConfigError, GatewayConfig, RawConfig};
use crate::{App, Running};
use zoho_crm_simulator::{RunningSimulator, SimConfig, Simulator};

/// The embedded demo configuration (`config/demo.toml`).
pub const DEMO_CONFIG: &str = include_str!("../config/demo.toml");

/// The shipped reference configuration (`config/gateway.toml`); the demo takes its
/// `[[routes.cached]]` table (Zoho's hot reads) when `config/demo.toml` has none.
pub const SHIPPED_CONFIG: &str = include_str!("../config/gateway.toml");

/// The reads [`Demo::exercise`] sends, in order: `(what, path and query)`. Each question is
/// asked twice, the second time spelled differently (parameter order, `fields` order,
/// criteria member order), as different clients would.
pub const HOT_READS: [(&str, &str); 12] = [
    ("SDK start-up: modules", "/crm/v8/settings/modules"),
    ("again", "/crm/v8/settings/modules"),
    (
        "SDK: fields of Leads",
        "/crm/v8/settings/fields?module=Leads",
    ),
    ("again, encoded", "/crm/v8/settings/fields?module=%4Ceads"),
    (
        "SDK after a token: current user",
        "/crm/v8/users?type=CurrentUser",
    ),
    (
        "again, page spelled out",
        "/crm/v8/users?page=1&type=CurrentUser",
    ),
    (
        "dashboard: leads",
        "/crm/v8/Leads?fields=Last_Name,Email,Company",
    ),
    (
        "again, fields reordered",
        "/crm/v8/Leads?fields=Company,Last_Name,Email,Email",
    ),
    (
        "dashboard: search",
        "/crm/v8/Leads/search?criteria=((Last_Name:equals:Smith)and(Company:equals:ABC))",
    ),
    (
        "again, members swapped",
        "/crm/v8/Leads/search?criteria=(Company:equals:ABC)+and+(Last_Name:equals:Smith)",
    ),
    (
        "seed: Tier1 or Tier2 counts",
        "/crm/v7/settings/user_groups/actions/associated_users_count?filters=%7B%22group_operator%22%3A%20%22or%22%2C%22group%22%3A%20%5B%7B%22field%22%3A%20%7B%22api_name%22%3A%20%22name%22%7D%2C%22comparator%22%3A%20%22equal%22%2C%22value%22%3A%20%22Tier1%22%7D%2C%7B%22field%22%3A%20%7B%22api_name%22%3A%20%22name%22%7D%2C%22comparator%22%3A%20%22equal%22%2C%22value%22%3A%20%22Tier2%22%7D%5D%7D",
    ),
    (
        "again, Python SDK spelling",
        "/crm/v7/settings/user_groups/actions/associated_users_count?filters=%7B%22group_operator%22%3A+%22or%22%2C+%22group%22%3A+%5B%7B%22field%22%3A+%7B%22api_name%22%3A+%22name%22%7D%2C+%22comparator%22%3A+%22equal%22%2C+%22value%22%3A+%22Tier1%22%7D%2C+%7B%22field%22%3A+%7B%22api_name%22%3A+%22name%22%7D%2C+%22comparator%22%3A+%22equal%22%2C+%22value%22%3A+%22Tier2%22%7D%5D%7D",
    ),
];

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
    /// A demo request failed or timed out.
    #[error("demo request {path} failed: {reason}")]
    Request {
        /// The request's path and query.
        path: String,
        /// What went wrong.
        reason: String,
    },
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
    if raw.routes.cached.is_empty() {
        raw.routes.cached = RawConfig::from_toml_str(SHIPPED_CONFIG)?.routes.cached;
    }
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

/// What [`Demo::exercise`] measured for one cached route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSavings {
    /// The route's path template (its metric label).
    pub route: String,
    /// Client requests on the route.
    pub requests: u64,
    /// Of those, answered without an upstream call (hit, collapsed, stale, held, rejected).
    pub without_upstream: u64,
    /// `without_upstream` × the route's `credit_cost`.
    pub credits_saved: u64,
}

/// Per-route counts from the gateway's `zoho_gateway_requests_total`: `(requests, without an
/// upstream call)` by route label.
fn requests_by_route(exposition: &str) -> std::collections::BTreeMap<String, (u64, u64)> {
    let mut out = std::collections::BTreeMap::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("zoho_gateway_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
            let len = labels[start..].find('"')?;
            Some(labels[start..start + len].to_owned())
        };
        let (Some(route), Some(outcome)) = (label("route"), label("outcome")) else {
            continue;
        };
        let n = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
        let entry: &mut (u64, u64) = out.entry(route).or_default();
        entry.0 += n;
        if matches!(
            outcome.as_str(),
            "hit" | "collapsed" | "stale" | "held" | "rejected"
        ) {
            entry.1 += n;
        }
    }
    out
}

impl Demo {
    /// Sends [`HOT_READS`] through the gateway with the demo key (one at a time, 10 s each at
    /// most) and returns the credits saved by route, for the routes the reads used.
    ///
    /// # Errors
    /// [`DemoError::Request`] when a read fails, times out or is not answered 2xx.
    pub async fn exercise(&self) -> Result<Vec<RouteSavings>, DemoError> {
        use http_body_util::{BodyExt, Empty};
        use hyper_util::client::legacy::Client;
        use hyper_util::rt::TokioExecutor;
        let client: Client<_, Empty<bytes::Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let base = format!("http://{}", self.gateway.proxy_addr());
        for (_, path) in HOT_READS {
            let fail = |reason: String| DemoError::Request {
                path: path.to_owned(),
                reason,
            };
            let req = http::Request::get(format!("{base}{path}"))
                .header(
                    "authorization",
                    format!("Zoho-oauthtoken {DEMO_CLIENT_KEY}"),
                )
                .body(Empty::new())
                .map_err(|e| fail(e.to_string()))?;
            let call = async {
                let resp = client.request(req).await.map_err(|e| fail(e.to_string()))?;
                let status = resp.status();
                resp.into_body()
                    .collect()
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                Ok::<_, DemoError>(status)
            };
            let status = tokio::time::timeout(std::time::Duration::from_secs(10), call)
                .await
                .map_err(|_| fail("timed out".into()))??;
            if !status.is_success() {
                return Err(fail(format!("status {status}")));
            }
        }
        let config = self.gateway.gateway().config();
        let text = String::from_utf8_lossy(&self.gateway.gateway().metrics().render()).into_owned();
        let counts = requests_by_route(&text);
        Ok(config
            .routes
            .iter()
            .filter_map(|r| {
                let (requests, without_upstream) = *counts.get(r.template.as_str())?;
                Some(RouteSavings {
                    route: r.template.as_str().to_owned(),
                    requests,
                    without_upstream,
                    credits_saved: without_upstream * u64::from(r.credit_cost),
                })
            })
            .filter(|s| s.requests > 0)
            .collect())
    }

    /// The report of [`Demo::exercise`]: one line per route, then the total and the simulator's
    /// own count of API calls.
    pub fn savings_report(&self, savings: &[RouteSavings]) -> String {
        let mut out = format!(
            "Hot reads sent through the gateway at start-up (each question twice, spelled two ways):\n\n  {:<68} {:>8} {:>10} {:>13}\n",
            "route", "requests", "from cache", "credits saved"
        );
        for s in savings {
            out.push_str(&format!(
                "  {:<68} {:>8} {:>10} {:>13}\n",
                s.route, s.requests, s.without_upstream, s.credits_saved
            ));
        }
        let total: u64 = savings.iter().map(|s| s.credits_saved).sum();
        let requests: u64 = savings.iter().map(|s| s.requests).sum();
        out.push_str(&format!(
            "\n  {requests} requests, {total} Zoho credits saved; the simulator answered {} API calls.\n",
            self.simulator.handle().total_api_calls()
        ));
        out
    }

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
