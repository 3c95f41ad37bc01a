//! The request path. [`Gateway::handle`] is the only place where errors become responses and
//! where a request is measured and logged (once, at the end); [`Gateway::handle_inner`] is the
//! happy path as named steps that may return early:
//!
//! ```text
//! route ─▶ method ─▶ authenticate ─▶ canonicalise ─┬─ invalid ───────▶ 400 INVALID_DATA (local)
//!                                                  ├─ uncacheable ───▶ forward as-is (bypass)
//!                                                  └─ key ─▶ cache ─┬─ fresh ─▶ hit
//!                                                                   └─ miss ──▶ single-flight ─▶ fetch ─▶ store
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use tokio::time::Instant;

use crate::cache::{CachedResponse, ResponseCache};
use crate::canonical::{self, CacheKey, Canonical, KeyScope};
use crate::coalesce::{FlightError, Role, SingleFlight};
use crate::config::{ClientKey, GatewayConfig, TenantConfig, key_digest};
use crate::error::{GATEWAY_ERROR_HEADER, GatewayError};
use crate::headers::{self, CacheStatus};
use crate::metrics::{Metrics, Outcome, TenantMetrics};
use crate::route::{self, RouteKind};
use crate::token::{AccessToken, TokenManager};
use crate::upstream::{Upstream, UpstreamResponse};

/// Response body type of the gateway.
pub type Body = Full<Bytes>;

/// What a flight hands its waiters: the upstream answer (and whether it was stored) or the
/// one error of that flight.
type FetchResult = Result<Fetched, GatewayError>;

#[derive(Clone, Debug)]
struct Fetched {
    entry: Arc<CachedResponse>,
    stored: bool,
}

/// Runtime state of one tenant.
#[derive(Debug)]
pub struct Tenant {
    /// Validated configuration.
    pub config: Arc<TenantConfig>,
    /// Its token manager.
    pub tokens: Arc<TokenManager>,
    metrics: TenantMetrics,
}

/// Shared state of one running gateway.
#[derive(Debug)]
pub struct Gateway {
    config: Arc<GatewayConfig>,
    tenants: Vec<Tenant>,
    cache: ResponseCache,
    flights: Arc<SingleFlight<CacheKey, FetchResult>>,
    upstream: Upstream,
    metrics: Arc<Metrics>,
    draining: AtomicBool,
}

/// Per-request facts gathered along the path, for the one measurement and log line.
struct RequestCtx {
    route: RouteKind,
    outcome: Outcome,
    tenant: Option<usize>,
}

impl Gateway {
    /// Builds the gateway state (no I/O).
    pub fn new(config: Arc<GatewayConfig>, metrics: Arc<Metrics>) -> Self {
        let upstream = Upstream::new(&config.upstream);
        let tenants = config
            .tenants
            .iter()
            .map(|t| {
                let t = Arc::new(t.clone());
                Tenant {
                    tokens: Arc::new(TokenManager::new(
                        t.clone(),
                        upstream.clone(),
                        metrics.clone(),
                    )),
                    metrics: metrics.tenant(&t.name),
                    config: t,
                }
            })
            .collect();
        Gateway {
            cache: ResponseCache::new(config.cache_max_bytes),
            flights: Arc::new(SingleFlight::new()),
            config,
            tenants,
            upstream,
            metrics,
            draining: AtomicBool::new(false),
        }
    }

    /// The tenants, in config order.
    pub fn tenants(&self) -> &[Tenant] {
        &self.tenants
    }

    /// The response cache.
    pub fn cache(&self) -> &ResponseCache {
        &self.cache
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Marks the gateway as draining (`/readyz` turns 503).
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether the gateway is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Handles one client request; never fails (errors become Zoho-shaped responses).
    pub async fn handle<B>(self: Arc<Self>, req: Request<B>) -> Response<Body> {
        let started = Instant::now();
        let request_id = headers::request_id(req.headers());
        let mut ctx = RequestCtx {
            route: RouteKind::Unmatched,
            outcome: Outcome::Rejected,
            tenant: None,
        };
        let timeout = self.config.request_timeout;
        let result = match tokio::time::timeout(timeout, self.handle_inner(&req, &mut ctx)).await {
            Ok(r) => r,
            Err(_) => Err(GatewayError::UpstreamTimeout),
        };
        let mut resp = match result {
            Ok(resp) => resp,
            Err(err) => {
                if ctx.outcome != Outcome::Rejected {
                    ctx.outcome = Outcome::Error;
                }
                error_response(&err, ctx.outcome)
            }
        };
        resp.headers_mut()
            .insert(&headers::REQUEST_ID, request_id.clone());
        let status = resp.status().as_u16();
        let took = started.elapsed();
        self.metrics
            .record_request(ctx.route, ctx.outcome, status, took);
        let tenant = ctx.tenant.map(|i| &self.tenants[i]);
        if let Some(t) = tenant {
            t.metrics.record_outcome(ctx.outcome);
        }
        tracing::info!(
            target: "zoho_gateway::access",
            request_id = request_id.to_str().unwrap_or(""),
            method = %req.method(),
            route = ctx.route.as_str(),
            status,
            outcome = ctx.outcome.as_str(),
            tenant = tenant.map_or("", |t| t.config.name.as_str()),
            duration_us = took.as_micros() as u64,
        );
        resp
    }

    async fn handle_inner<B>(
        self: &Arc<Self>,
        req: &Request<B>,
        ctx: &mut RequestCtx,
    ) -> Result<Response<Body>, GatewayError> {
        let policy = &self.config.count_route;
        let matched = route::match_path(req.uri().path(), &policy.versions)
            .ok_or(GatewayError::UnknownRoute)?;
        ctx.route = matched.kind;
        if req.method() != Method::GET {
            return Err(GatewayError::MethodNotAllowed);
        }
        let client = self.authenticate(req.headers())?;
        ctx.tenant = Some(client.tenant);
        let tenant = &self.tenants[client.tenant];
        let raw_query = req.uri().query().unwrap_or("");

        let query = match canonical::canonicalize(raw_query, &policy.rules) {
            Canonical::Invalid(bad) => {
                return Err(GatewayError::InvalidData {
                    param: bad.param,
                    message: bad.message,
                });
            }
            Canonical::Uncacheable(reason) => {
                ctx.outcome = Outcome::Bypass;
                let resp = self
                    .forward(client.tenant, req.uri().path(), raw_query)
                    .await?;
                let entry = CachedResponse::from_upstream(resp, policy.ttl, client.tenant);
                let status = CacheStatus {
                    outcome: Outcome::Bypass,
                    stored: false,
                    ttl: None,
                    detail: Some(reason.as_str()),
                };
                return Ok(entry_response(&entry, status, None));
            }
            Canonical::Key(query) => query,
        };
        let key = canonical::cache_key(
            &KeyScope {
                tenant: &tenant.config.name,
                credential: None,
                method: "GET",
                version: matched.version,
                route: matched.kind.as_str(),
            },
            &query,
        );

        let now = Instant::now();
        if let Some(entry) = self.cache.get_fresh(&key, now).await {
            ctx.outcome = Outcome::Hit;
            let status = CacheStatus {
                outcome: Outcome::Hit,
                stored: false,
                ttl: Some(entry.remaining_ttl(now)),
                detail: None,
            };
            return Ok(entry_response(&entry, status, Some(entry.age(now))));
        }

        ctx.outcome = Outcome::Miss;
        let fetch = {
            let gw = Arc::clone(self);
            let tenant_idx = client.tenant;
            let path_and_query = upstream_path(req.uri().path(), raw_query);
            move || gw.fetch_and_store(key, tenant_idx, path_and_query)
        };
        self.metrics.coalesce_waiters.inc();
        let flight = self
            .flights
            .run(key, self.config.coalesce_timeout, fetch)
            .await;
        self.metrics.coalesce_waiters.dec();
        let (fetched, role) = match flight {
            Ok(v) => v,
            Err(FlightError::Timeout) => return Err(GatewayError::WaitTimeout),
            Err(FlightError::Aborted) => return Err(GatewayError::Internal),
        };
        if role == Role::Follower {
            ctx.outcome = Outcome::Collapsed;
        }
        let fetched = fetched?;
        let now = Instant::now();
        let status = CacheStatus {
            outcome: ctx.outcome,
            stored: fetched.stored && role == Role::Leader,
            ttl: fetched.stored.then(|| fetched.entry.remaining_ttl(now)),
            detail: None,
        };
        Ok(entry_response(&fetched.entry, status, None))
    }

    /// The flight's fetch: re-check the cache (closes the race with a flight that just ended),
    /// call upstream, store a cacheable answer.
    async fn fetch_and_store(
        self: Arc<Self>,
        key: CacheKey,
        tenant: usize,
        path_and_query: String,
    ) -> FetchResult {
        if let Some(entry) = self.cache.get_fresh(&key, Instant::now()).await {
            return Ok(Fetched {
                entry,
                stored: true,
            });
        }
        let resp = self.call_upstream(tenant, &path_and_query).await?;
        let policy = &self.config.count_route;
        let ttl = match resp.status {
            StatusCode::OK => Some(policy.ttl),
            StatusCode::NO_CONTENT => Some(policy.no_content_ttl).filter(|t| !t.is_zero()),
            _ => None,
        };
        let entry = Arc::new(CachedResponse::from_upstream(
            resp,
            ttl.unwrap_or_default(),
            tenant,
        ));
        if ttl.is_some() {
            self.cache.insert(key, entry.clone()).await;
        }
        Ok(Fetched {
            entry,
            stored: ttl.is_some(),
        })
    }

    /// Forwards an uncacheable request (no single-flight: its meaning is not known for sure).
    async fn forward(
        &self,
        tenant: usize,
        path: &str,
        raw_query: &str,
    ) -> Result<UpstreamResponse, GatewayError> {
        self.call_upstream(tenant, &upstream_path(path, raw_query))
            .await
    }

    /// One logical upstream call with the tenant's token; on 401 `INVALID_TOKEN` /
    /// `AUTHENTICATION_FAILURE` the token is replaced once and the call retried once.
    async fn call_upstream(
        &self,
        tenant: usize,
        path_and_query: &str,
    ) -> Result<UpstreamResponse, GatewayError> {
        let t = &self.tenants[tenant];
        let token = t.tokens.token().await?;
        let resp = self.send_once(t, &token, path_and_query).await?;
        if resp.status == StatusCode::UNAUTHORIZED && is_token_rejection(&resp.body) {
            let token = t.tokens.replace_rejected(&token).await?;
            return self.send_once(t, &token, path_and_query).await;
        }
        Ok(resp)
    }

    async fn send_once(
        &self,
        t: &Tenant,
        token: &AccessToken,
        path_and_query: &str,
    ) -> Result<UpstreamResponse, GatewayError> {
        let mut auth = HeaderValue::try_from(format!("Zoho-oauthtoken {}", token.expose()))
            .map_err(|_| GatewayError::Internal)?;
        auth.set_sensitive(true);
        let req = Request::get(format!("{}{}", t.config.api_base, path_and_query))
            .header(header::AUTHORIZATION, auth)
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("zoho-gateway/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::new()))
            .map_err(|_| GatewayError::Internal)?;
        let started = Instant::now();
        let result = self.upstream.send(req).await;
        self.metrics.record_upstream(
            &t.config.name,
            RouteKind::AssociatedUsersCount,
            result.as_ref().ok().map(|r| r.status.as_u16()),
            started.elapsed(),
        );
        result
    }

    /// Finds the client key in `Authorization: Zoho-oauthtoken <key>` or `X-Gateway-Key`.
    fn authenticate(&self, h: &http::HeaderMap) -> Result<&ClientKey, GatewayError> {
        let presented = if let Some(v) = h.get(header::AUTHORIZATION) {
            let v = v.as_bytes();
            let scheme = b"zoho-oauthtoken ";
            if v.len() > scheme.len() && v[..scheme.len()].eq_ignore_ascii_case(scheme) {
                &v[scheme.len()..]
            } else {
                return Err(GatewayError::UnknownKey);
            }
        } else if let Some(v) = h.get(&headers::GATEWAY_KEY) {
            v.as_bytes()
        } else {
            return Err(GatewayError::MissingKey);
        };
        // Keys are looked up by SHA-256 digest: the table holds no plain keys, and timing of the
        // lookup reveals nothing about a configured key's bytes.
        self.config
            .clients
            .get(&key_digest(presented.trim_ascii()))
            .ok_or(GatewayError::UnknownKey)
    }
}

/// `path?query` for the upstream request (the client's raw query, forwarded as received).
fn upstream_path(path: &str, raw_query: &str) -> String {
    if raw_query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{raw_query}")
    }
}

/// Whether a 401 body is Zoho's expired/revoked-token answer (not `OAUTH_SCOPE_MISMATCH`).
fn is_token_rejection(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Code<'a> {
        #[serde(borrow)]
        code: Option<&'a str>,
    }
    matches!(
        serde_json::from_slice::<Code<'_>>(body)
            .ok()
            .and_then(|c| c.code),
        Some("INVALID_TOKEN" | "AUTHENTICATION_FAILURE")
    )
}

/// Builds a client response from a stored (or just fetched) answer.
fn entry_response(
    entry: &CachedResponse,
    status: CacheStatus<'_>,
    age: Option<u64>,
) -> Response<Body> {
    let mut resp = Response::new(Full::new(entry.body.clone()));
    *resp.status_mut() = entry.status;
    let h = resp.headers_mut();
    for (name, value) in &entry.headers {
        h.append(name.clone(), value.clone());
    }
    if let Some(age) = age {
        h.insert(header::AGE, HeaderValue::from(age));
    }
    h.insert(&headers::CACHE_STATUS, status.value());
    resp
}

/// The Zoho-shaped response for a gateway error.
fn error_response(err: &GatewayError, outcome: Outcome) -> Response<Body> {
    let mut resp = Response::new(Full::new(err.body()));
    *resp.status_mut() = err.status();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=utf-8"),
    );
    h.insert(GATEWAY_ERROR_HEADER, err.header_value());
    h.insert(
        &headers::CACHE_STATUS,
        CacheStatus {
            outcome,
            stored: false,
            ttl: None,
            detail: Some(err.kind()),
        }
        .value(),
    );
    if matches!(err, GatewayError::MethodNotAllowed) {
        h.insert(header::ALLOW, HeaderValue::from_static("GET"));
    }
    resp
}
