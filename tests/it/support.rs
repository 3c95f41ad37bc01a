//! What every test module shares: the simulator and a gateway on 127.0.0.1:0 ([`Harness`]),
//! a small HTTP client ([`TestClient`]) and its responses ([`Resp`], with the gateway-error
//! assertion), the count route's query builders and the seed's spellings ([`query`]), a
//! Prometheus exposition reader ([`metrics`]), raw TCP exchanges ([`raw`]) and a private
//! `redis-server` per test ([`redis_server`]).

pub mod metrics;
pub mod query;
pub mod raw;
pub mod redis_server;
pub mod replicas;

pub use metrics::Metrics;
pub use query::*;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use zoho_crm_simulator::{RunningSimulator, SimConfig, SimHandle, SimRoute, Simulator};
use zoho_gateway::clock::{Clock, ManualClock};
use zoho_gateway::config::RawConfig;
use zoho_gateway::{App, Running};

/// The demo client key used by every harness gateway.
pub const KEY: &str = "test-client-key";
/// A second tenant's key.
pub const KEY_B: &str = "test-client-key-b";

/// A simulator and a gateway pointed at it.
pub struct Harness {
    pub sim: RunningSimulator,
    pub gw: Running,
    pub client: TestClient,
    /// The gateway's freshness clock, moved only by the test.
    pub clock: Arc<ManualClock>,
}

impl Harness {
    /// Starts both with default settings.
    pub async fn start() -> Self {
        Self::start_with(SimConfig::default(), "").await
    }

    /// Starts both; `extra_toml` is appended to the gateway config.
    pub async fn start_with(sim_config: SimConfig, extra_toml: &str) -> Self {
        Self::start_configured(sim_config, |url| gateway_config(url, extra_toml)).await
    }

    /// Starts both with keys added inside `[server]` and `[tenants.a]` (see [`Extra`]).
    pub async fn start_with_extra(sim_config: SimConfig, extra: Extra<'_>) -> Self {
        Self::start_configured(sim_config, |url| gateway_config_with(url, extra)).await
    }

    /// Starts the simulator, then a gateway with the config `config(simulator URL)` and a
    /// manual freshness clock.
    pub async fn start_configured(
        sim_config: SimConfig,
        config: impl FnOnce(&str) -> zoho_gateway::config::GatewayConfig,
    ) -> Self {
        let sim = Simulator::spawn(sim_config)
            .await
            .expect("simulator starts");
        let (clock, handle) = Clock::manual();
        let gw = App::spawn_with_clock(config(&sim.base_url()), clock)
            .await
            .expect("gateway starts");
        Harness {
            sim,
            gw,
            client: TestClient::new(),
            clock: handle,
        }
    }

    /// Starts both; the gateway serves the route table of the shipped `config/gateway.toml`
    /// (Zoho's hot reads, [`shipped_routes`]) with the harness tenants and keys.
    pub async fn start_shipped() -> Self {
        Self::start_shipped_with("").await
    }

    /// [`Harness::start_shipped`] with `extra_toml` appended to the gateway config.
    pub async fn start_shipped_with(extra_toml: &str) -> Self {
        Self::start_configured(SimConfig::default(), |url| {
            let extra = Extra {
                rest: extra_toml,
                ..Extra::default()
            };
            let mut raw =
                RawConfig::from_toml_str(&gateway_toml(url, extra)).expect("test config parses");
            raw.routes.cached = shipped_routes();
            raw.validate().expect("shipped route table validates")
        })
        .await
    }

    /// Moves the gateway's freshness clock forward.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// GET through the gateway with the tenant-A key and extra headers.
    pub async fn get_with(&self, path_and_query: &str, headers: &[(&str, &str)]) -> Resp {
        let auth = format!("Zoho-oauthtoken {KEY}");
        let mut all = vec![("authorization", auth.as_str())];
        all.extend_from_slice(headers);
        self.client.get(&self.url(path_and_query), &all).await
    }

    pub fn sim(&self) -> SimHandle {
        self.sim.handle()
    }

    /// How many count-route calls the simulator has answered: the proof of caching and
    /// coalescing.
    pub fn calls(&self) -> u64 {
        count_calls(&self.sim.handle())
    }

    /// `http://127.0.0.1:PORT{path_and_query}` on the gateway.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.gw.proxy_addr(), path_and_query)
    }

    /// GET through the gateway with the tenant-A key.
    pub async fn get(&self, path_and_query: &str) -> Resp {
        self.get_as(KEY, path_and_query).await
    }

    /// GET through the gateway with gateway key `key` (`Authorization: Zoho-oauthtoken`).
    pub async fn get_as(&self, key: &str, path_and_query: &str) -> Resp {
        self.client
            .get(
                &self.url(path_and_query),
                &[("authorization", &format!("Zoho-oauthtoken {key}"))],
            )
            .await
    }

    /// Scrapes the admin `/metrics` over HTTP.
    pub async fn metrics(&self) -> Metrics {
        let r = self
            .client
            .get(&format!("http://{}/metrics", self.gw.admin_addr()), &[])
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        Metrics::parse(String::from_utf8(r.body.to_vec()).unwrap())
    }

    /// The gateway's metrics read from its registry, without a request (for `wait_until`).
    pub fn metrics_now(&self) -> Metrics {
        Metrics::parse(String::from_utf8(self.gw.gateway().metrics().render()).unwrap())
    }

    /// `GET http://ADMIN{path}` with `headers`.
    pub async fn admin_get(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.client.get(&self.admin_url(path), headers).await
    }

    /// `http://127.0.0.1:PORT{path}` on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gw.admin_addr())
    }

    pub async fn shutdown(self) {
        self.gw.shutdown().await;
        self.sim.shutdown().await;
    }
}

/// The gateway config used by the tests: two tenants on the simulator (both using the
/// simulator's demo credentials), one key each, ports chosen by the OS.
pub fn gateway_config(sim_url: &str, extra_toml: &str) -> zoho_gateway::config::GatewayConfig {
    gateway_config_with(
        sim_url,
        Extra {
            rest: extra_toml,
            ..Extra::default()
        },
    )
}

/// Extra TOML for the harness config. TOML forbids defining a table twice, so keys of
/// `[server]` and `[tenants.a]` (which the harness config defines) go in `server` and
/// `tenant_a`; `rest` is appended at the end. `{sim}` is replaced by the simulator URL.
#[derive(Clone, Copy, Debug, Default)]
pub struct Extra<'a> {
    pub server: &'a str,
    pub tenant_a: &'a str,
    pub rest: &'a str,
}

/// [`gateway_config`] with keys added inside `[server]` and `[tenants.a]`.
pub fn gateway_config_with(sim_url: &str, extra: Extra<'_>) -> zoho_gateway::config::GatewayConfig {
    RawConfig::from_toml_str(&gateway_toml(sim_url, extra))
        .expect("test config parses")
        .validate()
        .expect("test config validates")
}

/// The text of [`gateway_config_with`]'s config (for tests that run the binary with a file).
pub fn gateway_toml(sim_url: &str, extra: Extra<'_>) -> String {
    let (id, secret, refresh) = SimConfig::demo_credentials();
    format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        admin_listen = "127.0.0.1:0"
        {server}
        [logging]
        filter = "warn"
        [tenants.a]
        api_base = "{sim_url}"
        accounts_url = "{sim_url}"
        client_id = "{id}"
        client_secret = "{secret}"
        refresh_token = "{refresh}"
        {tenant_a}
        [tenants.b]
        api_base = "{sim_url}"
        accounts_url = "{sim_url}"
        client_id = "{id}"
        client_secret = "{secret}"
        refresh_token = "{refresh}"
        [clients.a]
        tenant = "a"
        key = "{KEY}"
        [clients.b]
        tenant = "b"
        key = "{KEY_B}"
        {rest}
        "#,
        server = extra.server.replace("{sim}", sim_url),
        tenant_a = extra.tenant_a.replace("{sim}", sim_url),
        rest = extra.rest.replace("{sim}", sim_url)
    )
}

/// A response read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
    pub fn cache_status(&self) -> &str {
        self.header("cache-status").unwrap_or("")
    }

    /// The id of the group named `name` in a count answer (`associated_users_count[]`).
    #[track_caller]
    pub fn group_id(&self, name: &str) -> String {
        let body = self.json();
        body["associated_users_count"]
            .as_array()
            .unwrap_or_else(|| panic!("not a count answer: {body}"))
            .iter()
            .find(|g| g["user_group"]["name"] == name)
            .unwrap_or_else(|| panic!("no group {name}: {body}"))["user_group"]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// An error the gateway made itself: `status`, Zoho's envelope (`code`, `status: "error"`,
    /// `message`), `details.gateway: true`, `details.kind` and the `X-Zoho-Gateway-Error` marker
    /// both equal to `kind`.
    #[track_caller]
    pub fn assert_gateway_error(&self, status: u16, code: &str, kind: &str) {
        assert_eq!(self.status, status, "{:?}", self.body);
        let body = self.json();
        assert_eq!(body["code"], code, "{body}");
        assert_eq!(body["status"], "error", "{body}");
        assert_eq!(body["details"]["gateway"], true, "{body}");
        assert_eq!(body["details"]["kind"], kind, "{body}");
        assert!(body["message"].is_string(), "{body}");
        assert_eq!(self.header("x-zoho-gateway-error"), Some(kind), "{body}");
    }
}

/// The `[[routes.cached]]` table of the shipped `config/gateway.toml`.
pub fn shipped_routes() -> Vec<zoho_gateway::config::RawCachedRoute> {
    RawConfig::from_toml_str(include_str!("../../config/gateway.toml"))
        .expect("config/gateway.toml parses")
        .routes
        .cached
}

/// How many count-route calls `sim` has answered.
pub fn count_calls(sim: &SimHandle) -> u64 {
    sim.calls(SimRoute::AssociatedUsersCount)
}

/// A plain HTTP/1.1 client for loopback tests, every call bounded by a 10 s deadline.
#[derive(Clone)]
pub struct TestClient {
    inner: Client<HttpConnector, Full<Bytes>>,
}

impl TestClient {
    pub fn new() -> Self {
        TestClient {
            inner: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(64)
                .build_http(),
        }
    }

    pub async fn get(&self, url: &str, headers: &[(&str, &str)]) -> Resp {
        self.send("GET", url, headers, Bytes::new()).await
    }

    pub async fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Resp {
        let mut req = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body)).unwrap();
        let call = async {
            let resp = self.inner.request(req).await.expect("request succeeds");
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.expect("body").to_bytes();
            Resp {
                status: parts.status,
                headers: parts.headers,
                body,
            }
        };
        tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .expect("response within 10 s")
    }
}

/// A fresh access token straight from the simulator's token endpoint (refresh-token grant).
pub async fn fetch_token(sim_url: &str, client_id: &str, secret: &str, refresh: &str) -> String {
    let form = format!(
        "grant_type=refresh_token&client_id={client_id}&client_secret={secret}&refresh_token={refresh}"
    );
    let r = TestClient::new()
        .send(
            "POST",
            &format!("{sim_url}/oauth/v2/token"),
            &[("content-type", "application/x-www-form-urlencoded")],
            Bytes::from(form),
        )
        .await;
    r.json()["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access_token: {:?}", r.body))
        .to_owned()
}

/// Waits (bounded, 10 s) for a condition on the simulator that offers no event to await.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A pass-through tenant `p` on the simulator, with client key `pass-client-key`.
pub const PASS_THROUGH: &str = r#"
[tenants.p]
api_base = "{sim}"
accounts_url = "{sim}"
[tenants.p.pass_through]
hmac_secret = "pass-through-hmac-secret-0123456789abcdef"
[clients.p]
tenant = "p"
key = "pass-client-key"
"#;

/// The default simulator plus a refresh token whose scope does not cover user groups.
pub fn scoped_sim() -> SimConfig {
    let mut cfg = SimConfig::default();
    cfg.clients[0]
        .refresh_tokens
        .push(zoho_crm_simulator::SimRefreshToken::new(
            "1000.wrong.scope",
            &["ZohoCRM.users.READ"],
        ));
    cfg
}
