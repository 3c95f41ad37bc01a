//! Simulator settings: OAuth clients, limits and the choices made for
//! behaviour API-NOTES.md marks \[unverified\].
//!
//! Deserializes with serde; durations use humantime (`"3600s"`, `"10m"`).
//! Every field has a default, so `{}` is a valid config.
//! `config/simulator.toml` lists every key with its default.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The demo client's `client_id`. These three values also appear in the
/// gateway's `config/demo.toml`; change them together.
const DEMO_CLIENT_ID: &str = "1000.DEMOCLIENT0000000000000000000000";
/// The demo client's secret.
const DEMO_CLIENT_SECRET: &str = "demo-client-secret";
/// The demo client's refresh token (scopes [`DEMO_SCOPES`]).
const DEMO_REFRESH_TOKEN: &str = "1000.demo.refresh-token";
/// The demo refresh token's scopes: every API the simulator serves.
pub const DEMO_SCOPES: [&str; 4] = [
    "ZohoCRM.settings.ALL",
    "ZohoCRM.modules.ALL",
    "ZohoCRM.users.ALL",
    "ZohoCRM.org.ALL",
];

/// All simulator settings.
///
/// `Debug` redacts client secrets and refresh tokens.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Address to bind. Default: `127.0.0.1:0` (an ephemeral port).
    pub listen: SocketAddr,
    /// Registered OAuth clients. Default: one demo client with one refresh
    /// token, see [`SimConfig::demo_credentials`].
    pub clients: Vec<SimClient>,
    /// Lifetime of a granted access token. Default: `3600s` \[doc\].
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// Answer token grants in the older form: `expires_in` in milliseconds plus
    /// `expires_in_sec` in seconds. Default: `false` (`expires_in` in seconds).
    pub legacy_expires_in: bool,
    /// Successful grants allowed per refresh token within
    /// [`SimConfig::token_rate_window`]; the next one is denied with
    /// `{"error":"Access Denied",..}` and starts the lockout. Default: `10` \[doc\].
    pub token_rate_limit: u32,
    /// Sliding window for [`SimConfig::token_rate_limit`]. Default: `600s`.
    #[serde(with = "humantime_serde")]
    pub token_rate_window: Duration,
    /// After the throttle trips, every grant for that refresh token is denied
    /// for this long (denied attempts do not extend it). Default: `900s`
    /// (Zoho: "roughly 15–30 minutes").
    #[serde(with = "humantime_serde")]
    pub token_throttle_lockout: Duration,
    /// HTTP status of the throttle answer. Default: `200` (Zoho also seen
    /// answering `400`).
    pub token_throttle_status: u16,
    /// Live (unexpired, unrevoked) access tokens per refresh token; a further
    /// grant silently invalidates the oldest. Default: `15` \[doc\].
    pub max_live_tokens: usize,
    /// API requests in flight at once per token owner (refresh token); above
    /// it the request gets 429 `TOO_MANY_REQUESTS`. Default: `10` (Zoho
    /// Standard edition).
    pub concurrency_limit: usize,
    /// API credits per rolling 24 hours for the whole organisation (API-NOTES.md
    /// §6: Free 5,000/day …). Each API call made with a valid token costs 1
    /// credit, charged on arrival (before faults and the handler; calls
    /// rejected by the concurrency or credit limit cost nothing). When used
    /// up: 429 `TOO_MANY_REQUESTS`. Once half is used, responses carry
    /// `X-API-CREDITS-REMAINING` (**choice**, \[unverified\]). Default: `None`
    /// (unlimited, no header).
    pub api_credit_limit: Option<u64>,
    /// `Retry-After` seconds sent with the concurrency 429. Default: `None`
    /// (no header). **Choice**: whether Zoho sends it is \[unverified\].
    pub concurrency_retry_after: Option<u32>,
    /// What a list endpoint answers when nothing is left to return.
    /// Default: [`NoMatch::NoContent`]. **Choice** (\[unverified\] for "no match").
    pub no_match: NoMatch,
    /// Whether filter comparisons are case-sensitive. Default: `true`.
    /// **Choice** (\[unverified\]).
    pub equal_case_sensitive: bool,
    /// Which value wins when a query parameter is repeated.
    /// Default: [`DuplicateParams::First`]. **Choice** (\[unverified\]).
    pub duplicate_params: DuplicateParams,
    /// Maximum number of criteria in one `filters` expression; more gives
    /// 400 `INVALID_DATA`. Default: `None` (unlimited). **Choice** (\[unverified\]).
    pub max_filter_criteria: Option<usize>,
    /// Largest request body accepted (API writes and the token endpoint);
    /// larger gives 413. Default: 1 MiB.
    pub max_body_bytes: usize,
    /// JSON data set file (shape in [`crate::dataset`]).
    /// Default: `None`, the bundled `simulator/src/dataset.json`.
    pub dataset: Option<PathBuf>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            clients: vec![SimClient::demo()],
            token_ttl: Duration::from_secs(3600),
            legacy_expires_in: false,
            token_rate_limit: 10,
            token_rate_window: Duration::from_secs(600),
            token_throttle_lockout: Duration::from_secs(900),
            token_throttle_status: 200,
            max_live_tokens: 15,
            concurrency_limit: 10,
            api_credit_limit: None,
            concurrency_retry_after: None,
            no_match: NoMatch::NoContent,
            equal_case_sensitive: true,
            duplicate_params: DuplicateParams::First,
            max_filter_criteria: None,
            max_body_bytes: 1024 * 1024,
            dataset: None,
        }
    }
}

impl SimConfig {
    /// The demo client's `(client_id, client_secret, refresh_token)`, the
    /// credentials of the default [`SimConfig::clients`] entry. The refresh
    /// token has scopes [`DEMO_SCOPES`] (every API the simulator serves) and an active user.
    pub fn demo_credentials() -> (String, String, String) {
        (
            DEMO_CLIENT_ID.into(),
            DEMO_CLIENT_SECRET.into(),
            DEMO_REFRESH_TOKEN.into(),
        )
    }
}

impl fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConfig")
            .field("listen", &self.listen)
            .field("clients", &self.clients)
            .field("token_ttl", &self.token_ttl)
            .field("legacy_expires_in", &self.legacy_expires_in)
            .field("token_rate_limit", &self.token_rate_limit)
            .field("token_rate_window", &self.token_rate_window)
            .field("token_throttle_lockout", &self.token_throttle_lockout)
            .field("token_throttle_status", &self.token_throttle_status)
            .field("max_live_tokens", &self.max_live_tokens)
            .field("concurrency_limit", &self.concurrency_limit)
            .field("api_credit_limit", &self.api_credit_limit)
            .field("concurrency_retry_after", &self.concurrency_retry_after)
            .field("no_match", &self.no_match)
            .field("equal_case_sensitive", &self.equal_case_sensitive)
            .field("duplicate_params", &self.duplicate_params)
            .field("max_filter_criteria", &self.max_filter_criteria)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("dataset", &self.dataset)
            .finish()
    }
}

/// One registered OAuth client (a Zoho "self client" or server app).
///
/// `Debug` prints the id only.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimClient {
    /// `client_id` as sent to `/oauth/v2/token`.
    pub client_id: String,
    /// `client_secret`; compared exactly.
    pub client_secret: String,
    /// Refresh tokens issued to this client. A refresh token belongs to
    /// exactly one client; presenting it with another client gives `invalid_code`.
    #[serde(default)]
    pub refresh_tokens: Vec<SimRefreshToken>,
}

impl SimClient {
    fn demo() -> Self {
        SimClient {
            client_id: DEMO_CLIENT_ID.into(),
            client_secret: DEMO_CLIENT_SECRET.into(),
            refresh_tokens: vec![SimRefreshToken::new(DEMO_REFRESH_TOKEN, &DEMO_SCOPES)],
        }
    }
}

impl fmt::Debug for SimClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimClient")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("refresh_tokens", &self.refresh_tokens)
            .finish()
    }
}

/// A refresh token and the user/scopes its access tokens carry.
///
/// `Debug` redacts the token.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimRefreshToken {
    /// The refresh token string.
    pub token: String,
    /// OAuth scopes, e.g. `ZohoCRM.settings.user_groups.READ`; compared
    /// ASCII-case-insensitively. Default: `["ZohoCRM.settings.user_groups.ALL"]`.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Whether the token's user is active; inactive users get 403
    /// `INACTIVE_USER` from the API (grants still succeed). Default: `true`.
    #[serde(default = "default_true")]
    pub user_active: bool,
    /// Display name of the token's user. Default: `"Demo User"`.
    #[serde(default = "default_user_name")]
    pub user_name: String,
}

impl SimRefreshToken {
    /// A token for an active user named "Demo User" with the given scopes.
    pub fn new(token: &str, scopes: &[&str]) -> Self {
        SimRefreshToken {
            token: token.into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            user_active: true,
            user_name: default_user_name(),
        }
    }
}

impl fmt::Debug for SimRefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimRefreshToken")
            .field("token", &"[redacted]")
            .field("scopes", &self.scopes)
            .field("user_active", &self.user_active)
            .field("user_name", &self.user_name)
            .finish()
    }
}

fn default_scopes() -> Vec<String> {
    vec!["ZohoCRM.settings.user_groups.ALL".into()]
}

fn default_true() -> bool {
    true
}

fn default_user_name() -> String {
    "Demo User".into()
}

/// What a list endpoint (`associated_users_count`, `user_groups`) answers when
/// there is nothing to return: no groups, no match, or a page past the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoMatch {
    /// HTTP 204 with an empty body (Zoho's documented answer for "no user
    /// groups"; the OAS suggests the same for "no match").
    #[default]
    NoContent,
    /// HTTP 200 with an empty list and `info.count` 0.
    EmptyList,
}

impl NoMatch {
    /// Config/wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            NoMatch::NoContent => "no_content",
            NoMatch::EmptyList => "empty_list",
        }
    }
}

/// Which value the simulator uses when a query parameter appears more than once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DuplicateParams {
    /// The first occurrence wins (what Java servlets' `getParameter` does).
    #[default]
    First,
    /// The last occurrence wins.
    Last,
    /// 400 `INVALID_DATA` with `details.param_name`.
    Reject,
}

impl DuplicateParams {
    /// Config/wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            DuplicateParams::First => "first",
            DuplicateParams::Last => "last",
            DuplicateParams::Reject => "reject",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deserializes_with_defaults_and_humantime() {
        let cfg: SimConfig = serde_json::from_str(
            r#"{"token_ttl":"10m","no_match":"empty_list","clients":[
                {"client_id":"c","client_secret":"s","refresh_tokens":[{"token":"r"}]}]}"#,
        )
        .unwrap();
        assert_eq!(cfg.token_ttl, Duration::from_secs(600));
        assert_eq!(cfg.no_match, NoMatch::EmptyList);
        assert_eq!(cfg.token_rate_limit, 10);
        let rt = &cfg.clients[0].refresh_tokens[0];
        assert!(rt.user_active);
        assert_eq!(rt.scopes, vec!["ZohoCRM.settings.user_groups.ALL"]);
    }

    #[test]
    fn example_file_parses_and_matches_defaults() {
        let text = include_str!("../../config/simulator.toml");
        use figment::providers::{Format, Toml};
        let cfg: SimConfig = figment::Figment::from(Toml::string(text))
            .extract()
            .unwrap();
        let d = SimConfig::default();
        assert_eq!(cfg.listen, d.listen);
        assert_eq!(cfg.token_ttl, d.token_ttl);
        assert_eq!(cfg.token_rate_window, d.token_rate_window);
        assert_eq!(cfg.token_throttle_lockout, d.token_throttle_lockout);
        assert_eq!(cfg.max_body_bytes, d.max_body_bytes);
        assert_eq!(cfg.no_match, d.no_match);
        assert_eq!(cfg.duplicate_params, d.duplicate_params);
        let (id, secret, refresh) = SimConfig::demo_credentials();
        assert_eq!(cfg.clients[0].client_id, id);
        assert_eq!(cfg.clients[0].client_secret, secret);
        assert_eq!(cfg.clients[0].refresh_tokens[0].token, refresh);
        assert_eq!(cfg.clients[0].refresh_tokens[0].scopes, DEMO_SCOPES);
        assert_eq!(cfg.clients[0].refresh_tokens.len(), 2);
    }

    #[test]
    fn debug_redacts_secrets() {
        let dbg = format!("{:?}", SimConfig::default());
        let (id, secret, refresh) = SimConfig::demo_credentials();
        assert!(dbg.contains(&id));
        assert!(!dbg.contains(&secret));
        assert!(!dbg.contains(&refresh));
        assert!(dbg.contains("[redacted]"));
    }
}
