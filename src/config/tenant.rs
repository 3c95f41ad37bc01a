//! `[tenants.NAME]`: one Zoho organisation and the OAuth client that acts for it; its validated
//! form [`TenantConfig`] and typed handle [`TenantId`].

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, DataCentre, Edition, Environment, Secret, SecretSource};

/// `[tenants.NAME]`: one Zoho organisation and the OAuth client that acts for it.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenant {
    /// Zoho data centre: `us`, `eu`, `in`, `au`, `jp`, `ca`, `sa`, `cn`. Default: `us`.
    #[serde(default)]
    pub data_centre: DataCentre,
    /// `production`, `sandbox` or `developer`. Default: `production`.
    #[serde(default)]
    pub environment: Environment,
    /// Explicit API base URL (the simulator, a test proxy); overrides the data centre's API host.
    #[serde(default)]
    pub api_base: Option<String>,
    /// Explicit accounts URL; overrides the data centre's accounts host.
    #[serde(default)]
    pub accounts_url: Option<String>,
    /// OAuth client id (not needed in pass-through mode).
    #[serde(default)]
    pub client_id: String,
    /// OAuth client secret (not needed in pass-through mode).
    #[serde(default)]
    pub client_secret: Option<SecretSource>,
    /// Long-lived refresh token (not needed in pass-through mode).
    #[serde(default)]
    pub refresh_token: Option<SecretSource>,
    /// Refresh this long before the access token expires. Default: `300s`.
    #[serde(default = "default_refresh_margin", with = "humantime_serde")]
    pub refresh_margin: Duration,
    /// Deadline of one token request. Default: `10s`.
    #[serde(default = "default_token_timeout", with = "humantime_serde")]
    pub token_timeout: Duration,
    /// Token grants allowed per `refresh_window` (Zoho allows 10 per 10 minutes). Default: `10`.
    #[serde(default = "default_refresh_budget")]
    pub refresh_budget: u32,
    /// Window of `refresh_budget`. Default: `600s`.
    #[serde(default = "default_refresh_window", with = "humantime_serde")]
    pub refresh_window: Duration,
    /// After Zoho's "Access Denied" throttle, no refresh is attempted for this long. Default: `900s`.
    #[serde(default = "default_throttle_lockout", with = "humantime_serde")]
    pub throttle_lockout: Duration,
    /// Zoho CRM edition, for the upstream concurrency limit (API-NOTES §6): `free` 5,
    /// `standard` 10, `professional` 15, `enterprise` 20, `ultimate` 25; and for the daily
    /// API-credit allowance (see [`Edition::credit_allowance`]). Default: `standard`.
    #[serde(default)]
    pub edition: Edition,
    /// The organisation's Zoho CRM user licences, for the edition's daily credit allowance.
    /// Default: unset (the allowance is unknown unless `daily_credits` is set or the edition is
    /// `free`).
    #[serde(default)]
    pub user_licenses: Option<u32>,
    /// Add-on API credits bought on top of the edition's allowance, per 24 h. Default: `0`.
    #[serde(default)]
    pub addon_credits: u64,
    /// The daily API-credit allowance (rolling 24 h) as Zoho shows it under Setup → Developer
    /// Space → APIs; overrides the edition formula. Default: unset.
    #[serde(default)]
    pub daily_credits: Option<u64>,
    /// Credits to keep for high-priority clients: while fewer than this are left of the
    /// allowance (or of what Zoho reports in `X-API-CREDITS-REMAINING`), only clients with
    /// `priority = "high"` may spend credits; others get stale answers when the cache has one,
    /// else `429 TOO_MANY_REQUESTS` (kind `credit_reserve`) with `Retry-After`. Default: unset
    /// (no reserve).
    #[serde(default)]
    pub credit_reserve: Option<u64>,
    /// Explicit upstream concurrency limit; overrides `edition`.
    #[serde(default)]
    pub max_concurrency: Option<usize>,
    /// Requests waiting for an upstream slot at most; beyond: 429. Default: `1000`.
    #[serde(default = "default_queue_limit")]
    pub queue_limit: usize,
    /// Longest wait for an upstream slot; then 429. Default: `10s`.
    #[serde(default = "default_queue_timeout", with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// Requests of this tenant waiting for an upstream answer (a flight) at once; beyond: 503
    /// `SERVICE_UNAVAILABLE` with `Retry-After`. Default: `2048`.
    #[serde(default = "default_max_waiters")]
    pub max_waiters: usize,
    /// Consecutive upstream failures that open the circuit. Default: `5`.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open circuit refuses calls before one probe. Default: `30s`.
    #[serde(default = "default_breaker_cool_down", with = "humantime_serde")]
    pub breaker_cool_down: Duration,
    /// File keeping the current access token and recent grant times across restarts (written
    /// with mode 0600). Default: unset (no file; every start spends one grant).
    #[serde(default)]
    pub token_state_file: Option<PathBuf>,
    /// Pass-through mode: clients send their own Zoho token in `Authorization:
    /// Zoho-oauthtoken …` (and identify themselves with `X-Gateway-Key`); it is forwarded, and
    /// cache entries are partitioned by HMAC-SHA256(`hmac_secret`, token). The gateway then
    /// holds no Zoho credentials for this tenant. Default: unset (gateway-managed tokens).
    #[serde(default)]
    pub pass_through: Option<RawPassThroughTenant>,
}

/// `[tenants.NAME.pass_through]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPassThroughTenant {
    /// Key of the HMAC that partitions the cache by client token (at least 32 bytes).
    pub hmac_secret: SecretSource,
}

fn default_queue_limit() -> usize {
    1000
}
fn default_max_waiters() -> usize {
    2048
}
fn default_queue_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_cool_down() -> Duration {
    Duration::from_secs(30)
}
fn default_refresh_margin() -> Duration {
    Duration::from_secs(300)
}
fn default_token_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_refresh_budget() -> u32 {
    10
}
fn default_refresh_window() -> Duration {
    Duration::from_secs(600)
}
fn default_throttle_lockout() -> Duration {
    Duration::from_secs(900)
}

/// A tenant's handle, stable for the life of the process: the request path, cache entries and
/// holds carry it instead of a name. Validation numbers the tenants in name order
/// ([`GatewayConfig::tenants`]' positions, in [`TenantConfig::id`]); a running gateway renumbers a reloaded config with
/// [`GatewayConfig::assign_tenant_ids`] so that a tenant keeps its id across reloads, a new one
/// gets the next unused id and a removed tenant's id is never handed out again.
///
/// [`GatewayConfig::tenants`]: super::GatewayConfig::tenants
/// [`GatewayConfig::assign_tenant_ids`]: super::GatewayConfig::assign_tenant_ids
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(pub u16);

impl TenantId {
    /// The id as an index (the gateway's tenant slots).
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// A validated tenant.
#[derive(Clone, Debug, PartialEq)]
pub struct TenantConfig {
    /// Its handle: its position in name order after validation, the running gateway's id after
    /// [`GatewayConfig::assign_tenant_ids`](super::GatewayConfig::assign_tenant_ids).
    pub id: TenantId,
    /// Configured name (a metric label and part of the cache key).
    pub name: String,
    /// API base URL without trailing slash, e.g. `https://www.zohoapis.com`.
    pub api_base: String,
    /// Token endpoint, e.g. `https://accounts.zoho.com/oauth/v2/token`.
    pub token_url: String,
    /// OAuth client id.
    pub client_id: String,
    /// OAuth client secret.
    pub client_secret: Secret,
    /// Refresh token.
    pub refresh_token: Secret,
    /// Refresh-ahead margin.
    pub refresh_margin: Duration,
    /// Token request deadline.
    pub token_timeout: Duration,
    /// Grants per window.
    pub refresh_budget: u32,
    /// Budget window.
    pub refresh_window: Duration,
    /// Lockout after Zoho's throttle.
    pub throttle_lockout: Duration,
    /// Upstream concurrency limit.
    pub max_concurrency: usize,
    /// The Zoho CRM edition.
    pub edition: Edition,
    /// Daily API-credit allowance (rolling 24 h): `daily_credits`, else the edition's formula
    /// when the licences are known or the edition is Free; `None`: unknown.
    pub credit_allowance: Option<u64>,
    /// Credits kept for high-priority clients (`None`: no reserve).
    pub credit_reserve: Option<u64>,
    /// Queue bound for upstream slots.
    pub queue_limit: usize,
    /// Queue wait deadline.
    pub queue_timeout: Duration,
    /// Requests waiting for a flight at once.
    pub max_waiters: usize,
    /// Failures that open the circuit.
    pub breaker_failures: u32,
    /// Open-circuit cool-down.
    pub breaker_cool_down: Duration,
    /// Token state file.
    pub token_state_file: Option<PathBuf>,
    /// Pass-through mode: the HMAC key partitioning the cache by client token.
    pub pass_through_hmac: Option<Secret>,
}

impl TenantConfig {
    /// `{name}/{16 hex digits}`: the tenant's name and a one-way fingerprint (the first 8 bytes
    /// of SHA-256 over length-prefixed fields) of the Zoho identity it acts as: API host, token
    /// URL, client id, refresh token and pass-through key. It scopes the tenant's cache keys and
    /// its tokens in Redis, so a tenant whose credentials or host change (a live reload, a
    /// rotated secret) never meets the old identity's answers, token, grant budget or lockout.
    /// Holds no secret: the fingerprint cannot be reversed.
    pub fn identity_scope(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let hmac = self.pass_through_hmac.as_ref().map_or("", Secret::expose);
        for part in [
            self.api_base.as_str(),
            self.token_url.as_str(),
            self.client_id.as_str(),
            self.refresh_token.expose(),
            hmac,
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        format!("{}/{}", self.name, hex::encode(&h.finalize()[..8]))
    }
}

pub(super) fn validate_tenant(name: &str, t: &RawTenant) -> Result<TenantConfig, ConfigError> {
    let prefix = format!("tenants.{name}");
    let valid_name = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid_name {
        return Err(ConfigError::invalid(
            &prefix,
            name,
            "tenant names are 1-64 of [A-Za-z0-9_-]",
        ));
    }
    let (dc, env) = (t.data_centre, t.environment);
    let url = |key: &str, v: &str| -> Result<String, ConfigError> {
        let trimmed = v.trim_end_matches('/');
        let uri: http::Uri = trimmed
            .parse()
            .map_err(|_| ConfigError::invalid(format!("{prefix}.{key}"), v, "not a URL"))?;
        let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
        if !scheme_ok || uri.host().is_none() || uri.query().is_some() {
            return Err(ConfigError::invalid(
                format!("{prefix}.{key}"),
                v,
                "expected http(s)://host[:port][/path]",
            ));
        }
        Ok(trimmed.to_owned())
    };
    let api_base = url(
        "api_base",
        t.api_base.as_deref().unwrap_or(&dc.api_base(env)),
    )?;
    let accounts = url(
        "accounts_url",
        t.accounts_url.as_deref().unwrap_or(&dc.accounts_url()),
    )?;
    let edition = t.edition;
    let max_concurrency = t.max_concurrency.unwrap_or(t.edition.concurrency_limit());
    let credit_allowance = match (t.daily_credits, t.user_licenses, edition) {
        (Some(0), _, _) => {
            return Err(ConfigError::invalid(
                format!("{prefix}.daily_credits"),
                "0",
                "must be at least 1",
            ));
        }
        (Some(daily), _, _) => Some(daily),
        (None, Some(licenses), _) => Some(edition.credit_allowance(licenses, t.addon_credits)),
        (None, None, Edition::Free) => Some(edition.credit_allowance(0, t.addon_credits)),
        (None, None, _) => None,
    };
    if let (Some(reserve), Some(allowance)) = (t.credit_reserve, credit_allowance)
        && reserve >= allowance
    {
        return Err(ConfigError::invalid(
            format!("{prefix}.credit_reserve"),
            reserve.to_string(),
            format!("must be below the daily allowance ({allowance})"),
        ));
    }
    if max_concurrency == 0 {
        return Err(ConfigError::invalid(
            format!("{prefix}.max_concurrency"),
            "0",
            "must be at least 1",
        ));
    }
    let pass_through_hmac = match &t.pass_through {
        Some(p) => {
            let key = format!("{prefix}.pass_through.hmac_secret");
            let secret = p.hmac_secret.resolve(&key)?;
            if secret.expose().len() < 32 {
                return Err(ConfigError::invalid(
                    key,
                    "[redacted]",
                    "must be at least 32 bytes",
                ));
            }
            Some(secret)
        }
        None => None,
    };
    let managed = pass_through_hmac.is_none();
    if managed && t.client_id.trim().is_empty() {
        return Err(ConfigError::invalid(
            format!("{prefix}.client_id"),
            "",
            "must not be empty (or configure pass_through)",
        ));
    }
    let secret = |key: &str, src: &Option<SecretSource>| -> Result<Secret, ConfigError> {
        match (src, managed) {
            (Some(src), _) => src.resolve(&format!("{prefix}.{key}")),
            (None, false) => Ok(Secret::default()),
            (None, true) => Err(ConfigError::invalid(
                format!("{prefix}.{key}"),
                "",
                "missing (or configure pass_through)",
            )),
        }
    };
    if t.refresh_budget == 0 {
        return Err(ConfigError::invalid(
            format!("{prefix}.refresh_budget"),
            "0",
            "must be at least 1",
        ));
    }
    Ok(TenantConfig {
        id: TenantId(0),
        name: name.to_owned(),
        api_base,
        token_url: format!("{accounts}/oauth/v2/token"),
        client_id: t.client_id.clone(),
        client_secret: secret("client_secret", &t.client_secret)?,
        refresh_token: secret("refresh_token", &t.refresh_token)?,
        refresh_margin: t.refresh_margin,
        token_timeout: t.token_timeout,
        refresh_budget: t.refresh_budget,
        refresh_window: t.refresh_window,
        throttle_lockout: t.throttle_lockout,
        max_concurrency,
        edition,
        credit_allowance,
        credit_reserve: t.credit_reserve.filter(|r| *r > 0),
        queue_limit: t.queue_limit,
        queue_timeout: t.queue_timeout,
        max_waiters: t.max_waiters.max(1),
        breaker_failures: t.breaker_failures,
        breaker_cool_down: t.breaker_cool_down,
        token_state_file: t.token_state_file.clone(),
        pass_through_hmac,
    })
}
