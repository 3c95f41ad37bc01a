//! Configuration: figment reads TOML plus `ZOHO_GATEWAY_*` environment overrides into raw serde
//! structs; [`RawConfig::validate`] turns them into a frozen, typed [`GatewayConfig`].
//!
//! Parse, validate, freeze: every validation error names the key and the bad value. Secrets
//! (client secrets, refresh tokens, gateway keys) are held in [`Secret`], whose `Debug` prints
//! `[redacted]`, and may be given literally, from an environment variable or from a file
//! ([`SecretSource`]). The commented reference with every key and default is
//! `config/gateway.toml`.

use std::collections::{BTreeMap, HashMap};

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::canonical::{CanonicalRules, FilterLimits, FilterMode, ParamSchema};
use crate::route::{
    PathMatch, PathTemplate, RouteId, RouteKind, RouteLifetimes, RoutePolicy, SplitPath,
};

mod routes;
mod zoho;
pub use routes::{PageLimitCode, RawCachedRoute, RawPageLimit, RawParam};
pub use zoho::{DataCentre, Edition, Environment};
mod redis;
mod restart;
mod secret;
mod tenant;
pub use redis::{RawRedis, RedisConfig};
pub use secret::{REDACTED, Secret, SecretSource};
use tenant::validate_tenant;
pub use tenant::{RawPassThroughTenant, RawTenant, TenantConfig, TenantId};

/// Environment variable prefix for overrides; nested keys are separated by `__`
/// (`ZOHO_GATEWAY_CACHE__MAX_BYTES=1048576`).
pub const ENV_PREFIX: &str = "ZOHO_GATEWAY_";

/// A configuration error: which key, which value, what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The sources could not be read or did not match the schema. figment's message already
    /// names the key, the value and the file, so it is the message, not a separate cause.
    #[error("config: {0}")]
    Load(Box<figment::Error>),
    /// One key has a bad value.
    #[error("config key `{key}` = {value:?}: {problem}")]
    Invalid {
        /// Dotted key path, e.g. `tenants.acme.data_centre`.
        key: String,
        /// The offending value (redacted for secrets).
        value: String,
        /// What is wrong with it.
        problem: String,
    },
}

impl From<Box<figment::Error>> for ConfigError {
    fn from(e: Box<figment::Error>) -> Self {
        ConfigError::Load(e)
    }
}

impl ConfigError {
    fn invalid(
        key: impl Into<String>,
        value: impl Into<String>,
        problem: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            value: value.into(),
            problem: problem.into(),
        }
    }
}

/// The config file as written (all keys optional; defaults from `config/gateway.toml`).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    /// `[server]`: listeners and client-facing limits.
    pub server: RawServer,
    /// `[cache]`: storage bounds and single-flight.
    pub cache: RawCache,
    /// `[upstream]`: the HTTP client to Zoho.
    pub upstream: RawUpstream,
    /// `[logging]`.
    pub logging: RawLogging,
    /// `[admin]`.
    pub admin: RawAdmin,
    /// `[routes.*]`: per-route policy.
    pub routes: RawRoutes,
    /// `[tenants.NAME]`: Zoho organisations/credentials, by name.
    pub tenants: BTreeMap<String, RawTenant>,
    /// `[clients.NAME]`: gateway client keys, by name.
    pub clients: BTreeMap<String, RawClient>,
    /// `[redis]`: the optional fleet tier (off by default).
    pub redis: RawRedis,
}

/// `[server]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawServer {
    /// Proxy listener. Default: `127.0.0.1:8080`.
    pub listen: String,
    /// Admin listener (`/metrics`, `/healthz`, `/readyz`). Default: `127.0.0.1:9090`.
    pub admin_listen: String,
    /// Total deadline of one client request. Default: `60s`.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long shutdown waits for in-flight requests. Default: `30s`.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Deadline for a client to send its request headers. Default: `10s`.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A client connection with no request in flight for this long is closed (also one that
    /// never sends a byte). Default: `60s`.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Open client connections accepted at once; further clients wait in the kernel backlog.
    /// Default: `10000`.
    pub max_connections: usize,
    /// Largest request head (request line + headers), bytes; larger: 431. At least 8192.
    /// Default: `16384`.
    pub max_header_bytes: usize,
    /// Most header fields in one HTTP/1 request head (hyper's `max_headers`); more: 431,
    /// answered by hyper itself (empty body). 1..=1000. Default: `100` (hyper's default; any
    /// other value makes hyper keep the header index on the heap, a little slower per request).
    pub max_headers: usize,
    /// Largest request target (path + query), bytes; longer: 414. Default: `8192`.
    pub max_uri_bytes: usize,
    /// Concurrent HTTP/2 streams per client connection (`SETTINGS_MAX_CONCURRENT_STREAMS`,
    /// RFC 9113 §6.5.2). Default: `100`.
    pub http2_max_concurrent_streams: u32,
    /// `[server.tls]`: TLS (and optionally mutual TLS) on the proxy listener. Default: unset
    /// (plain HTTP). See [`crate::tls`].
    pub tls: Option<crate::tls::RawTls>,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: "127.0.0.1:8080".into(),
            admin_listen: "127.0.0.1:9090".into(),
            request_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            max_uri_bytes: 8 * 1024,
            http2_max_concurrent_streams: 100,
            tls: None,
        }
    }
}

/// `[cache]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawCache {
    /// Bound on the weighted size of all entries (key + body + stored headers + validators + a
    /// measured per-entry overhead, [`crate::cache::ENTRY_OVERHEAD`]), bytes.
    /// Default: 268435456 (256 MiB).
    pub max_bytes: u64,
    /// How long a request that joins another's in-flight fetch waits before it gets a 504
    /// (`wait_timeout`); the request that started the fetch waits for it up to its
    /// `request_timeout` and gets the fetch's own outcome. Default: `30s`.
    #[serde(with = "humantime_serde")]
    pub coalesce_timeout: Duration,
    /// Requests waiting for an upstream answer (a flight) at once, all tenants together;
    /// beyond: 503 `SERVICE_UNAVAILABLE` with `Retry-After`. Default: `4096`.
    pub max_waiters: usize,
}

impl Default for RawCache {
    fn default() -> Self {
        RawCache {
            max_bytes: 256 * 1024 * 1024,
            coalesce_timeout: Duration::from_secs(30),
            max_waiters: 4096,
        }
    }
}

/// `[upstream]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawUpstream {
    /// TCP + TLS connect deadline. Default: `5s`.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Deadline for one upstream request, headers and body. Default: `30s`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Largest upstream body accepted, bytes. Default: 8388608 (8 MiB).
    pub max_body_bytes: usize,
    /// Idle pooled connections are closed after this. Default: `50s`.
    #[serde(with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    /// Retries of a GET answered 429 / 5xx or failing to connect, inside the one flight, with
    /// jittered exponential backoff. Default: `2`.
    pub max_retries: u32,
    /// First backoff delay (doubled per retry, full jitter). Default: `200ms`.
    #[serde(with = "humantime_serde")]
    pub retry_base_delay: Duration,
    /// Largest backoff delay. Default: `5s`.
    #[serde(with = "humantime_serde")]
    pub retry_max_delay: Duration,
    /// A `Retry-After` longer than this is not waited for: the answer goes back (and the key is
    /// held). Default: `10s`.
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
}

impl Default for RawUpstream {
    fn default() -> Self {
        RawUpstream {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            max_body_bytes: 8 * 1024 * 1024,
            pool_idle_timeout: Duration::from_secs(50),
            max_retries: 2,
            retry_base_delay: Duration::from_millis(200),
            retry_max_delay: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(10),
        }
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (default).
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// `[logging]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawLogging {
    /// `RUST_LOG`-style filter; the `RUST_LOG` variable wins when set. Default: `info`.
    pub filter: String,
    /// `human` or `json`. Default: `human`.
    pub format: LogFormat,
}

impl Default for RawLogging {
    fn default() -> Self {
        RawLogging {
            filter: "info".into(),
            format: LogFormat::Human,
        }
    }
}

/// `[routes]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawRoutes {
    /// `[routes.associated_users_count]`.
    pub associated_users_count: RawCountRoute,
    /// `[routes.passthrough]`.
    pub passthrough: RawPassthrough,
    /// `[[routes.cached]]`: further cached routes, matched in order after the count route.
    pub cached: Vec<RawCachedRoute>,
}

/// `[routes.passthrough]`: other Zoho routes, forwarded uncached with the tenant's token.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawPassthrough {
    /// Allowed `"METHOD /path/pattern"` entries; `{name}` matches one path segment of
    /// `[A-Za-z0-9_.-]` (never `.` or `..`); a last segment `**` matches one or more segments
    /// (`GET /crm/{version}/**`: the drop-in rule, see README). Everything not listed gets 404
    /// `INVALID_URL_PATTERN` from the gateway. Default: empty (nothing passes through).
    pub allow: Vec<String>,
    /// Largest request body forwarded, bytes (larger: 413). Default: 1048576.
    pub max_body_bytes: usize,
}

impl Default for RawPassthrough {
    fn default() -> Self {
        RawPassthrough {
            allow: Vec::new(),
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// `[admin]`: the admin API on the admin listener.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAdmin {
    /// Bearer token required by `/admin/*` (`Authorization: Bearer <token>`). Unset: the admin
    /// API answers 403. `/metrics`, `/healthz` and `/readyz` need no token. Default: unset.
    pub token: Option<SecretSource>,
}

/// `[routes.associated_users_count]`: policy of `GET /crm/{version}/settings/user_groups/actions/associated_users_count`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawCountRoute {
    /// Freshness lifetime of a cached 200. Default: `60s`.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Freshness lifetime of a cached 204 (no user groups / no match). Default: `15s`.
    #[serde(with = "humantime_serde")]
    pub no_content_ttl: Duration,
    /// Each stored entry's TTL is shortened by a random 0..=this percent, so entries stored
    /// together do not expire together. Default: `10`.
    pub ttl_jitter_percent: u8,
    /// After expiry, serve the stale entry at once for this long while one background refresh
    /// runs (RFC 5861 `stale-while-revalidate`). Default: `30s`.
    #[serde(with = "humantime_serde")]
    pub stale_while_revalidate: Duration,
    /// After expiry, serve the stale entry for this long when the refresh fails with 5xx, 429,
    /// a timeout or a connection error (RFC 5861 `stale-if-error`). Default: `300s`.
    #[serde(with = "humantime_serde")]
    pub stale_if_error: Duration,
    /// After an upstream failure for a key, no new upstream attempt for that key for this long
    /// (stale or the same error is served meanwhile). Default: `5s`.
    #[serde(with = "humantime_serde")]
    pub error_hold: Duration,
    /// Upper bound on a hold taken from Zoho's `Retry-After`. Default: `60s`.
    #[serde(with = "humantime_serde")]
    pub max_error_hold: Duration,
    /// Honour a client's `Cache-Control: no-cache` (force a fresh, still coalesced, upstream
    /// answer). Default: `true`.
    pub honor_no_cache: bool,
    /// Honour a client's `Cache-Control: no-store` (bypass the cache). Default: `true`.
    pub honor_no_store: bool,
    /// API versions served. Default: `["v5", "v6", "v7", "v8"]`.
    pub versions: Vec<String>,
    /// `semantic` (member order and duplicates of and/or groups do not matter) or `strict`.
    /// Default: `semantic`.
    pub filter_mode: FilterMode,
    /// Criterion fields allowed in `filters`. Default: `["name", "description"]` (the seed).
    pub allowed_fields: Vec<String>,
    /// Comparators allowed in `filters`. Default: `["equal", "starts_with"]` (the seed).
    pub allowed_comparators: Vec<String>,
    /// Bounds on the `filters` JSON (bytes, depth, criteria).
    pub filter_limits: FilterLimits,
}

impl Default for RawCountRoute {
    fn default() -> Self {
        let rules = CanonicalRules::default();
        RawCountRoute {
            ttl: Duration::from_secs(60),
            no_content_ttl: Duration::from_secs(15),
            ttl_jitter_percent: 10,
            stale_while_revalidate: Duration::from_secs(30),
            stale_if_error: Duration::from_secs(300),
            error_hold: Duration::from_secs(5),
            max_error_hold: Duration::from_secs(60),
            honor_no_cache: true,
            honor_no_store: true,
            versions: ["v5", "v6", "v7", "v8"].map(String::from).to_vec(),
            filter_mode: rules.mode,
            allowed_fields: rules.allowed_fields,
            allowed_comparators: rules.allowed_comparators,
            filter_limits: rules.limits,
        }
    }
}

/// `[clients.NAME]`: one gateway client key, bound to one tenant.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawClient {
    /// Tenant this key acts for.
    pub tenant: String,
    /// SHA-256 of the key, lowercase hex (preferred: the plain key never sits in config).
    #[serde(default)]
    pub key_sha256: Option<String>,
    /// The plain key (literal, `{ env = … }` or `{ file = … }`); hashed at load.
    #[serde(default)]
    pub key: Option<SecretSource>,
    /// Routes this key may use: `associated_users_count`, `passthrough`. Default: all.
    #[serde(default)]
    pub routes: Option<Vec<String>>,
    /// The subject DN of this client's TLS certificate, RFC 4514 (`CN=reporting,O=Acme`, as
    /// `openssl x509 -noout -subject -nameopt RFC2253` prints it). Needs
    /// `server.tls.client_ca`. Without a key the certificate alone identifies the client; with
    /// a key both are required. Default: unset.
    #[serde(default)]
    pub cert_subject: Option<String>,
    /// SHA-256 of this client's certificate's SubjectPublicKeyInfo, hex (`openssl x509 -pubkey
    /// -noout | openssl pkey -pubin -outform der | sha256sum`). Like `cert_subject`, which it
    /// excludes. Default: unset.
    #[serde(default)]
    pub cert_spki_sha256: Option<String>,
    /// `normal` or `high`: while a tenant's credits are below its `credit_reserve`, only
    /// `high` clients may spend credits. Default: `normal`.
    #[serde(default)]
    pub priority: Priority,
}

/// A client's claim on a tenant's credit reserve (`[clients.NAME] priority`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Spends credits only while the tenant is above its reserve.
    #[default]
    Normal,
    /// May spend the reserve.
    High,
}

/// The validated, frozen configuration.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Proxy listener address.
    pub listen: SocketAddr,
    /// Admin listener address.
    pub admin_listen: SocketAddr,
    /// Total deadline of one client request.
    pub request_timeout: Duration,
    /// Shutdown drain deadline.
    pub drain_timeout: Duration,
    /// Client header-read deadline.
    pub header_read_timeout: Duration,
    /// Idle connection timeout.
    pub idle_timeout: Duration,
    /// Connection limit.
    pub max_connections: usize,
    /// Request head limit, bytes.
    pub max_header_bytes: usize,
    /// Header fields per HTTP/1 request head.
    pub max_headers: usize,
    /// Request target limit, bytes.
    pub max_uri_bytes: usize,
    /// TLS on the proxy listener (`None`: plain HTTP).
    pub tls: Option<crate::tls::TlsSettings>,
    /// Cache bound, bytes.
    pub cache_max_bytes: u64,
    /// Coalesced waiter deadline.
    pub coalesce_timeout: Duration,
    /// Requests waiting for a flight at once, all tenants.
    pub max_waiters: usize,
    /// HTTP/2 streams per connection.
    pub http2_max_concurrent_streams: u32,
    /// Upstream client settings.
    pub upstream: RawUpstream,
    /// Logging settings.
    pub logging: RawLogging,
    /// API versions `{version}` may take in route templates and pass-through rules (`v7`, …).
    pub versions: Vec<String>,
    /// The cached routes, in match order; [`RouteId`] indexes this.
    pub routes: Vec<RoutePolicy>,
    /// Pass-through allowlist.
    pub passthrough: Vec<crate::route::AllowRule>,
    /// Pass-through request body limit, bytes.
    pub passthrough_max_body: usize,
    /// Admin API token (`None`: admin API disabled).
    pub admin_token: Option<Secret>,
    /// Tenants, in name order, each with its [`TenantConfig::id`].
    pub tenants: Vec<TenantConfig>,
    /// Client keys by SHA-256 digest of the plain key.
    pub clients: HashMap<[u8; 32], ClientKey>,
    /// Clients identified by their TLS client certificate alone (no key).
    pub client_certs: crate::tls::CertClients,
    /// The fleet tier (`None`: off, each replica on its own).
    pub redis: Option<RedisConfig>,
}

impl GatewayConfig {
    /// The cached route `id`.
    ///
    /// # Panics
    /// Never for ids handed out by [`GatewayConfig::match_route`] or client-key validation (the
    /// route set does not change on reload).
    pub fn route(&self, id: RouteId) -> &RoutePolicy {
        &self.routes[id.index()]
    }

    /// The first cached route whose template matches `path` (normal form, no query), whatever
    /// the method (the caller answers 405 for another method).
    pub fn match_route<'a>(&self, path: &'a str) -> Option<(RouteId, PathMatch<'a>)> {
        let split = SplitPath::new(path);
        self.routes.iter().enumerate().find_map(|(i, r)| {
            r.template
                .matches_split(&split, &self.versions)
                .map(|m| (RouteId(i as u16), m))
        })
    }

    /// The cached routes' ids and names, in table order.
    pub fn route_names(&self) -> impl Iterator<Item = (RouteId, &str)> {
        self.routes
            .iter()
            .enumerate()
            .map(|(i, r)| (RouteId(i as u16), r.name.as_str()))
    }

    /// Gives each tenant the id `id_of(name)` (called once per tenant) and points every
    /// client at its tenant's new id (a running gateway keeps ids stable across reloads this
    /// way). A client whose tenant is not in [`GatewayConfig::tenants`] (only possible in a
    /// config edited after validation) keeps its id.
    pub fn assign_tenant_ids(&mut self, mut id_of: impl FnMut(&str) -> TenantId) {
        let mut renumbered = HashMap::new();
        for t in &mut self.tenants {
            let new = id_of(&t.name);
            renumbered.insert(t.id, new);
            t.id = new;
        }
        let renumber = |c: &mut ClientKey| {
            c.tenant = renumbered.get(&c.tenant).copied().unwrap_or(c.tenant);
        };
        self.clients.values_mut().for_each(renumber);
        self.client_certs.clients_mut().for_each(renumber);
    }

    /// The `route` metric labels: each cached route's template, then `passthrough`, then
    /// `unmatched` (see [`RouteKind::index`]).
    pub fn route_labels(&self) -> Vec<String> {
        self.routes
            .iter()
            .map(|r| r.template.as_str().to_owned())
            .chain([
                crate::route::PASSTHROUGH_LABEL.to_owned(),
                crate::route::UNMATCHED_LABEL.to_owned(),
            ])
            .collect()
    }
}

/// A validated client key.
#[derive(Clone, Debug)]
pub struct ClientKey {
    /// Configured client name (for logs).
    pub name: String,
    /// Its tenant.
    pub tenant: TenantId,
    /// Routes allowed (`None`: all).
    pub routes: Option<Vec<RouteKind>>,
    /// SHA-256 of the key, for the constant-time confirmation after lookup (all zero for a
    /// client identified by its certificate alone).
    pub digest: [u8; 32],
    /// The TLS client certificate this client must also present (`None`: none).
    pub cert: Option<crate::tls::CertIdentity>,
    /// Its claim on the tenant's credit reserve.
    pub priority: Priority,
}

/// Last segments of the config keys that hold secrets (their [`SecretSource`]s).
const SECRET_KEYS: &[&str] = &[
    "client_secret",
    "refresh_token",
    "key",
    "token",
    "url",
    "token_encryption_key",
    "hmac_secret",
    "password",
];

/// figment's load error without secrets: a TOML syntax error's source excerpt (the lines
/// `337 | client_secret = "…" oops` and its caret line) is dropped, keeping the position and
/// the reason; a value quoted in a type or value error of a secret key (see [`SECRET_KEYS`])
/// is replaced by `[redacted]`. Every other value stays, so the error still names the key
/// and the bad value.
/// The `ZOHO_GATEWAY_*` overrides: figment's [`Env`] (prefix stripped, `__` nests, keys
/// lowercased), except how a value is typed. figment's `Env` parses every value, so
/// `…__CLIENT_SECRET=1234` became an integer and `…=true` a boolean, which a secret (a string)
/// refused. Here:
///
/// - a secret key ([`SECRET_KEYS`]: `client_secret`, `refresh_token`, `key`, …) is always the
///   variable's text, byte for byte (a secret from the environment is literal; `{ env = … }`
///   and `{ file = … }` are for the file);
/// - any other value that figment reads as a number or a boolean stays text too, and the lossy
///   extraction turns it into a number or boolean where the key wants one (so `client_id=1000`
///   or `key_prefix=123` stay strings and `max_bytes=1048576` is still a number);
/// - arrays (`[\"v7\", \"v8\"]`), tables (`{ … }`) and quoted strings (`\"1234\"`) are read as
///   figment reads them.
struct EnvOverrides(Env);

impl figment::Provider for EnvOverrides {
    fn metadata(&self) -> figment::Metadata {
        self.0.metadata()
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        use figment::value::{Dict, Value};
        fn merge(into: &mut Dict, from: Dict) {
            for (k, v) in from {
                match (into.get_mut(&k), v) {
                    (Some(Value::Dict(_, a)), Value::Dict(_, b)) => merge(a, b),
                    (_, v) => {
                        into.insert(k, v);
                    }
                }
            }
        }
        let mut dict = Dict::new();
        for (key, text) in self.0.iter() {
            let secret = key
                .as_str()
                .rsplit('.')
                .next()
                .is_some_and(|last| SECRET_KEYS.contains(&last));
            let value = match text.parse::<Value>() {
                _ if secret => Value::from(text),
                Ok(Value::Num(..) | Value::Bool(..)) => Value::from(text),
                Ok(other) => other,
                Err(never) => match never {},
            };
            if let Value::Dict(_, nested) = figment::util::nest(key.as_str(), value) {
                merge(&mut dict, nested);
            }
        }
        Ok(figment::Profile::Default.collect(dict))
    }
}

fn redact_load_error(e: figment::Error) -> figment::Error {
    use figment::error::{Actual, Kind};
    let redacted = |mut e: figment::Error| {
        let secret = e
            .path
            .last()
            .is_some_and(|k| SECRET_KEYS.contains(&k.as_str()));
        e.kind = match e.kind {
            Kind::Message(m) => Kind::Message(
                m.lines()
                    .filter(|l| {
                        !l.trim_start_matches(|c: char| c.is_ascii_digit() || c == ' ')
                            .starts_with('|')
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            Kind::InvalidType(Actual::Str(_) | Actual::Bytes(_), exp) if secret => {
                Kind::InvalidType(Actual::Other(REDACTED.into()), exp)
            }
            Kind::InvalidValue(Actual::Str(_) | Actual::Bytes(_), exp) if secret => {
                Kind::InvalidValue(Actual::Other(REDACTED.into()), exp)
            }
            other => other,
        };
        e
    };
    let errors: Vec<figment::Error> = e.into_iter().map(redacted).collect();
    errors
        .into_iter()
        .rev()
        .reduce(|older, newer| older.chain(newer))
        .unwrap_or_else(|| figment::Error::from("invalid configuration".to_owned()))
}

/// SHA-256 of a plain gateway key, as stored in [`GatewayConfig::clients`].
pub fn key_digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

impl RawConfig {
    /// Loads `path` (TOML; a missing file is an error) and applies `ZOHO_GATEWAY_*` overrides.
    ///
    /// # Errors
    /// [`ConfigError::Load`] when the file cannot be read or does not match the schema.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        if !path.exists() {
            return Err(ConfigError::invalid(
                "--config",
                path.display().to_string(),
                "file not found",
            ));
        }
        Self::from_figment(Figment::new().merge(Toml::file(path)))
    }

    /// Parses TOML text (the embedded demo config) and applies `ZOHO_GATEWAY_*` overrides.
    ///
    /// # Errors
    /// [`ConfigError::Load`] when the text does not match the schema.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        Self::from_figment(Figment::new().merge(Toml::string(text)))
    }

    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        // Lossy extraction: a number or boolean written as text (as `EnvOverrides` keeps them)
        // still fills a numeric or boolean key.
        figment
            .merge(EnvOverrides(Env::prefixed(ENV_PREFIX).split("__")))
            .extract_lossy()
            .map_err(|e| ConfigError::Load(Box::new(redact_load_error(e))))
    }

    /// Validates and freezes: resolves secrets, data centres, addresses.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first bad key and its value.
    pub fn validate(&self) -> Result<GatewayConfig, ConfigError> {
        let addr = |key: &str, v: &str| -> Result<SocketAddr, ConfigError> {
            v.parse()
                .map_err(|_| ConfigError::invalid(key, v, "expected IP:PORT"))
        };
        let nonzero = |key: &str, d: Duration| -> Result<Duration, ConfigError> {
            if d.is_zero() {
                Err(ConfigError::invalid(key, "0s", "must be greater than zero"))
            } else {
                Ok(d)
            }
        };
        self.check_durations()?;
        let listen = addr("server.listen", &self.server.listen)?;
        let admin_listen = addr("server.admin_listen", &self.server.admin_listen)?;
        nonzero("server.request_timeout", self.server.request_timeout)?;
        nonzero(
            "server.header_read_timeout",
            self.server.header_read_timeout,
        )?;
        nonzero("cache.coalesce_timeout", self.cache.coalesce_timeout)?;
        nonzero("upstream.connect_timeout", self.upstream.connect_timeout)?;
        nonzero("upstream.timeout", self.upstream.timeout)?;
        if self.cache.max_bytes < 4096 {
            return Err(ConfigError::invalid(
                "cache.max_bytes",
                self.cache.max_bytes.to_string(),
                "must be at least 4096",
            ));
        }
        if self.upstream.max_body_bytes == 0 {
            return Err(ConfigError::invalid(
                "upstream.max_body_bytes",
                "0",
                "must be greater than zero",
            ));
        }

        let route = &self.routes.associated_users_count;
        nonzero("routes.associated_users_count.ttl", route.ttl)?;
        for v in &route.versions {
            let ok =
                v.len() >= 2 && v.starts_with('v') && v[1..].bytes().all(|b| b.is_ascii_digit());
            if !ok {
                return Err(ConfigError::invalid(
                    "routes.associated_users_count.versions",
                    v,
                    "expected vN",
                ));
            }
        }
        if route.ttl_jitter_percent > 50 {
            return Err(ConfigError::invalid(
                "routes.associated_users_count.ttl_jitter_percent",
                route.ttl_jitter_percent.to_string(),
                "must be 0..=50",
            ));
        }
        let count_route = RoutePolicy {
            name: "associated_users_count".to_owned(),
            method: http::Method::GET,
            template: PathTemplate::parse(crate::route::ASSOCIATED_USERS_COUNT)
                .map_err(|e| ConfigError::invalid("routes.associated_users_count", "", e))?,
            schema: ParamSchema::associated_users_count(CanonicalRules {
                mode: route.filter_mode,
                allowed_fields: route.allowed_fields.clone(),
                allowed_comparators: route.allowed_comparators.clone(),
                limits: route.filter_limits.clone(),
            }),
            lifetimes: RouteLifetimes {
                ttl: route.ttl,
                no_content_ttl: route.no_content_ttl,
                ttl_jitter_percent: route.ttl_jitter_percent,
                stale_while_revalidate: route.stale_while_revalidate,
                stale_if_error: route.stale_if_error,
                error_hold: route.error_hold,
                max_error_hold: route.max_error_hold,
            },
            honor_no_cache: route.honor_no_cache,
            honor_no_store: route.honor_no_store,
            credit_cost: 1,
            credit_cost_when: Vec::new(),
            group: "user_groups".to_owned(),
        };
        let mut routes = vec![count_route];
        for (i, raw) in self.routes.cached.iter().enumerate() {
            let policy = raw.validate(i)?;
            if routes.iter().any(|r| r.name == policy.name) {
                return Err(ConfigError::invalid(
                    format!("routes.cached[{i}].name"),
                    &policy.name,
                    "another route has this name",
                ));
            }
            routes.push(policy);
        }
        if routes.len() > usize::from(u16::MAX) {
            return Err(ConfigError::invalid("routes.cached", "", "too many routes"));
        }

        let mut passthrough = Vec::new();
        for (i, rule) in self.routes.passthrough.allow.iter().enumerate() {
            passthrough.push(crate::route::AllowRule::parse(rule).map_err(|problem| {
                ConfigError::invalid(format!("routes.passthrough.allow[{i}]"), rule, problem)
            })?);
        }
        let admin_token = match &self.admin.token {
            Some(src) => Some(src.resolve("admin.token")?),
            None => None,
        };

        let redis = self.redis.validate()?;

        if self.tenants.len() > usize::from(u16::MAX) {
            return Err(ConfigError::invalid("tenants", "", "too many tenants"));
        }
        let mut tenants = Vec::with_capacity(self.tenants.len());
        for (name, t) in &self.tenants {
            let mut tenant = validate_tenant(name, t)?;
            tenant.id = TenantId(tenants.len() as u16);
            tenants.push(tenant);
        }

        let mut state_files = std::collections::HashSet::new();
        for t in &tenants {
            if let Some(path) = &t.token_state_file
                && !state_files.insert(path.clone())
            {
                return Err(ConfigError::invalid(
                    format!("tenants.{}.token_state_file", t.name),
                    path.display().to_string(),
                    "another tenant uses the same file",
                ));
            }
        }

        let tls = match &self.server.tls {
            Some(raw) => Some(raw.load().map_err(|e| {
                ConfigError::invalid(e.key, e.path.display().to_string(), e.problem)
            })?),
            None => None,
        };
        let mutual_tls = tls.as_ref().is_some_and(|t| t.client_auth.is_some());

        let mut clients = HashMap::new();
        let mut client_certs = crate::tls::CertClients::default();
        for (name, c) in &self.clients {
            let prefix = format!("clients.{name}");
            let cert = match (&c.cert_subject, &c.cert_spki_sha256) {
                (None, None) => None,
                (Some(_), Some(_)) => {
                    return Err(ConfigError::invalid(
                        prefix,
                        "",
                        "set at most one of `cert_subject` or `cert_spki_sha256`",
                    ));
                }
                (Some(subject), None) => Some(crate::tls::CertIdentity::subject(subject).map_err(
                    |problem| {
                        ConfigError::invalid(format!("{prefix}.cert_subject"), subject, problem)
                    },
                )?),
                (None, Some(pin)) => {
                    Some(crate::tls::CertIdentity::spki(pin).map_err(|problem| {
                        ConfigError::invalid(format!("{prefix}.cert_spki_sha256"), pin, problem)
                    })?)
                }
            };
            if cert.is_some() && !mutual_tls {
                return Err(ConfigError::invalid(
                    prefix,
                    "",
                    "a client certificate identity needs `server.tls.client_ca`",
                ));
            }
            let tenant = tenants
                .iter()
                .position(|t| t.name == c.tenant)
                .ok_or_else(|| {
                    ConfigError::invalid(format!("{prefix}.tenant"), &c.tenant, "no such tenant")
                })?;
            let digest = match (&c.key_sha256, &c.key) {
                (Some(hexed), None) => {
                    let bytes = hex::decode(hexed.trim()).ok().filter(|b| b.len() == 32);
                    let bytes = bytes.ok_or_else(|| {
                        ConfigError::invalid(
                            format!("{prefix}.key_sha256"),
                            hexed,
                            "expected 64 hex digits",
                        )
                    })?;
                    let mut d = [0u8; 32];
                    d.copy_from_slice(&bytes);
                    d
                }
                (None, Some(src)) => {
                    key_digest(src.resolve(&format!("{prefix}.key"))?.expose().as_bytes())
                }
                // Identified by its certificate alone.
                (None, None) if cert.is_some() => [0u8; 32],
                _ => {
                    return Err(ConfigError::invalid(
                        prefix,
                        "",
                        "set exactly one of `key_sha256` or `key` (or only a client certificate)",
                    ));
                }
            };
            let key_less = c.key_sha256.is_none() && c.key.is_none();
            let routes = match &c.routes {
                None => None,
                Some(list) => {
                    let mut kinds = Vec::new();
                    for r in list {
                        let kind = if r == crate::route::PASSTHROUGH_LABEL {
                            RouteKind::Passthrough
                        } else {
                            let i = routes.iter().position(|p| p.name == *r).ok_or_else(|| {
                                let names: Vec<&str> = routes
                                    .iter()
                                    .map(|p| p.name.as_str())
                                    .chain([crate::route::PASSTHROUGH_LABEL])
                                    .collect();
                                ConfigError::invalid(
                                    format!("{prefix}.routes"),
                                    r,
                                    format!("expected one of {}", names.join(", ")),
                                )
                            })?;
                            RouteKind::Cached(RouteId(i as u16))
                        };
                        kinds.push(kind);
                    }
                    Some(kinds)
                }
            };
            let client = ClientKey {
                name: name.clone(),
                tenant: TenantId(tenant as u16),
                routes,
                digest,
                cert: cert.clone(),
                priority: c.priority,
            };
            if key_less {
                if let Some(id) = cert
                    && !client_certs.insert(id, client)
                {
                    return Err(ConfigError::invalid(
                        prefix,
                        "",
                        "another key-less client has the same certificate identity",
                    ));
                }
                continue;
            }
            if clients.insert(digest, client).is_some() {
                return Err(ConfigError::invalid(
                    prefix,
                    "[redacted]",
                    "the same key is configured twice",
                ));
            }
        }

        if !(1..=1000).contains(&self.server.max_headers) {
            return Err(ConfigError::invalid(
                "server.max_headers",
                self.server.max_headers.to_string(),
                "must be 1..=1000",
            ));
        }
        Ok(GatewayConfig {
            listen,
            admin_listen,
            request_timeout: self.server.request_timeout,
            drain_timeout: self.server.drain_timeout,
            header_read_timeout: self.server.header_read_timeout,
            idle_timeout: self.server.idle_timeout,
            max_connections: self.server.max_connections.max(1),
            max_header_bytes: self.server.max_header_bytes.max(8192),
            max_headers: self.server.max_headers,
            max_uri_bytes: self.server.max_uri_bytes,
            tls,
            cache_max_bytes: self.cache.max_bytes,
            coalesce_timeout: self.cache.coalesce_timeout,
            max_waiters: self.cache.max_waiters.max(1),
            http2_max_concurrent_streams: self.server.http2_max_concurrent_streams.max(1),
            upstream: self.upstream.clone(),
            logging: self.logging.clone(),
            versions: route.versions.clone(),
            routes,
            passthrough,
            passthrough_max_body: self.routes.passthrough.max_body_bytes,
            admin_token,
            tenants,
            clients,
            client_certs,
            redis,
        })
    }
}

/// Longest duration any key accepts. Durations are added to clock readings (`Instant + ttl`,
/// `now + lockout`); humantime parses up to ~584 billion years, which would overflow them.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

impl RawConfig {
    /// Refuses any duration beyond [`MAX_DURATION`], naming its key.
    fn check_durations(&self) -> Result<(), ConfigError> {
        let (s, c, u) = (&self.server, &self.cache, &self.upstream);
        let r = &self.routes.associated_users_count;
        let mut all = vec![
            ("server.request_timeout".to_owned(), s.request_timeout),
            ("server.drain_timeout".to_owned(), s.drain_timeout),
            (
                "server.header_read_timeout".to_owned(),
                s.header_read_timeout,
            ),
            ("server.idle_timeout".to_owned(), s.idle_timeout),
            ("cache.coalesce_timeout".to_owned(), c.coalesce_timeout),
            ("upstream.connect_timeout".to_owned(), u.connect_timeout),
            ("upstream.timeout".to_owned(), u.timeout),
            ("upstream.pool_idle_timeout".to_owned(), u.pool_idle_timeout),
            ("upstream.retry_base_delay".to_owned(), u.retry_base_delay),
            ("upstream.retry_max_delay".to_owned(), u.retry_max_delay),
            ("upstream.max_retry_after".to_owned(), u.max_retry_after),
        ];
        let route = "routes.associated_users_count";
        for (key, d) in [
            ("ttl", r.ttl),
            ("no_content_ttl", r.no_content_ttl),
            ("stale_while_revalidate", r.stale_while_revalidate),
            ("stale_if_error", r.stale_if_error),
            ("error_hold", r.error_hold),
            ("max_error_hold", r.max_error_hold),
        ] {
            all.push((format!("{route}.{key}"), d));
        }
        for (name, t) in &self.tenants {
            for (key, d) in [
                ("refresh_margin", t.refresh_margin),
                ("token_timeout", t.token_timeout),
                ("refresh_window", t.refresh_window),
                ("throttle_lockout", t.throttle_lockout),
                ("queue_timeout", t.queue_timeout),
                ("breaker_cool_down", t.breaker_cool_down),
            ] {
                all.push((format!("tenants.{name}.{key}"), d));
            }
        }
        match all.into_iter().find(|(_, d)| *d > MAX_DURATION) {
            Some((key, d)) => Err(ConfigError::invalid(
                key,
                humantime::format_duration(d).to_string(),
                "must be at most 365 days",
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
