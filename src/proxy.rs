//! The request path. [`Gateway::handle`] is the only place where errors become responses and
//! where a request is measured and logged (once, at the end); the inner functions are the happy
//! path as named steps that may return early:
//!
//! ```text
//! normal path? ─▶ route ─┬─ count route ─▶ method ─▶ authenticate ─▶ canonicalise ─┬─ invalid ─▶ 400 INVALID_DATA (local)
//!                        │                                                          ├─ uncacheable / no-store ─▶ forward (bypass)
//!                        │                                                          └─ key ─▶ lookup ─┬─ fresh ─▶ hit
//!                        │                                                                            ├─ stale-while-revalidate ─▶ stale + background refresh
//!                        │                                                                            ├─ key on hold ─▶ stale-if-error, or the held failure
//!                        │                                                                            └─ miss / no-cache ─▶ single-flight ─▶ fetch ─▶ store
//!                        ├─ allowlisted ─▶ authenticate ─▶ forward (bypass); a successful user-group write drops the tenant's entries
//!                        └─ else ─▶ 404 INVALID_URL_PATTERN (local)
//! ```
//!
//! Single-flight semantics at the call site (see [`crate::coalesce`]): one upstream call per key
//! among concurrent misses; the fetch task re-checks the cache, calls Zoho (with one token
//! refresh + retry on 401 `INVALID_TOKEN`), stores a cacheable answer or puts the key on hold
//! after a failure, and hands the one result to every waiter; each waiter has the
//! `cache.coalesce_timeout` deadline (then 504) while the fetch goes on.

mod auth;
mod passthrough;
mod respond;
mod upcall;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use tokio::time::Instant;

use crate::cache::{CachedResponse, Freshness, Lifetimes, ResponseCache};
use crate::canonical::{self, CacheKey, Canonical, KeyScope};
use crate::clock::Clock;
use crate::coalesce::{FlightError, Role, SingleFlight};
use crate::config::{ClientKey, CountRoutePolicy, GatewayConfig, TenantConfig, key_digest};
use crate::error::{GATEWAY_ERROR_HEADER, GatewayError};
use crate::headers::{self, CacheStatus};
use crate::metrics::{Metrics, Outcome, TenantMetrics};
use crate::route::{self, RouteKind};
use crate::token::{AccessToken, TokenManager};
use crate::upstream::breaker::{CircuitBreaker, Verdict};
use crate::upstream::limit::ConcurrencyLimit;
use crate::upstream::{self, Upstream, UpstreamResponse};
use arc_swap::ArcSwap;
use auth::Authenticated;
use hmac::{Hmac, Mac};
use respond::{Recorder, error_response, fetched_response, hit_response};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use upcall::{CallCtx, Credential, is_failure, retry_after, upstream_path};

/// Response body type of the gateway.
pub type Body = Full<Bytes>;

/// What a flight hands its waiters: the upstream answer (and whether it was stored) or the
/// one error of that flight.
type FetchResult = Result<Fetched, GatewayError>;

#[derive(Clone, Debug)]
struct Fetched {
    entry: Arc<CachedResponse>,
    stored: bool,
    /// Time the flight spent on upstream calls (retries and token refresh included).
    upstream_took: Duration,
}

/// A key on hold after an upstream failure: until `until`, no new upstream attempt; the
/// failure is answered again (or a stale entry served).
#[derive(Debug)]
struct Hold {
    until: Instant,
    failure: FetchResult,
}

/// Runtime state of one tenant.
#[derive(Debug)]
pub struct Tenant {
    /// Validated configuration.
    pub config: Arc<TenantConfig>,
    /// Its token manager.
    pub tokens: Arc<TokenManager>,
    metrics: TenantMetrics,
    limit: ConcurrencyLimit,
    breaker: CircuitBreaker,
    /// Bumped by every invalidation of this tenant's entries; a fetch that started under an
    /// older generation does not store its answer (it may predate the write).
    generation: AtomicU64,
}

/// Hit/miss tallies for `GET /admin/cache`.
#[derive(Debug, Default)]
pub struct CacheTally {
    /// Requests answered from the cache (fresh or stale).
    pub hits: AtomicU64,
    /// Requests that needed an upstream answer (led or joined a flight).
    pub misses: AtomicU64,
    /// Answers stored in the cache.
    pub stores: AtomicU64,
}

/// Shared state of one running gateway.
#[derive(Debug)]
pub struct Gateway {
    config: ArcSwap<GatewayConfig>,
    tenants: Vec<Tenant>,
    cache: ResponseCache,
    holds: moka::sync::Cache<CacheKey, Arc<Hold>>,
    flights: Arc<SingleFlight<CacheKey, FetchResult>>,
    upstream: Upstream,
    metrics: Arc<Metrics>,
    clock: Clock,
    tally: CacheTally,
    draining: AtomicBool,
    /// Cancelled shortly before the drain deadline: requests still waiting then are answered
    /// with a 503 instead of losing their connection.
    stop_waiting: tokio_util::sync::CancellationToken,
}

/// Per-request facts gathered along the path, for the one measurement and log line.
struct RequestCtx {
    route: RouteKind,
    outcome: Outcome,
    tenant: Option<usize>,
    peer: std::net::IpAddr,
    request_id: HeaderValue,
    /// Time spent waiting on upstream calls for this request (its flight's, if it joined one).
    upstream_took: Option<Duration>,
    /// The end of `server.request_timeout` for this request.
    deadline: Instant,
}

impl Gateway {
    /// Runs `fut` until `deadline` (then the gateway's 504) or until the drain stops waits
    /// (then its 503).
    async fn by_deadline<T>(
        &self,
        deadline: Instant,
        fut: impl std::future::Future<Output = Result<T, GatewayError>>,
    ) -> Result<T, GatewayError> {
        tokio::select! {
            r = tokio::time::timeout_at(deadline, fut) => r.unwrap_or(Err(GatewayError::UpstreamTimeout)),
            _ = self.stop_waiting.cancelled() => Err(GatewayError::ShuttingDown),
        }
    }
}

impl RequestCtx {
    fn call(&self, credential: Credential) -> CallCtx {
        CallCtx {
            credential,
            forwarded_for: HeaderValue::from_str(&self.peer.to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            request_id: self.request_id.clone(),
        }
    }
}

/// Client cache directives that apply (RFC 9111 §5.2.1), after route policy.
#[derive(Clone, Copy, Debug, Default)]
struct Directives {
    no_cache: bool,
    no_store: bool,
}

impl Gateway {
    /// Builds the gateway state (no I/O).
    pub fn new(config: Arc<GatewayConfig>, metrics: Arc<Metrics>, clock: Clock) -> Self {
        let upstream = Upstream::new(&config.upstream);
        let tenants = config
            .tenants
            .iter()
            .map(|t| {
                let t = Arc::new(t.clone());
                let tm = metrics.tenant(&t.name);
                Tenant {
                    limit: ConcurrencyLimit::new(
                        t.max_concurrency,
                        t.queue_limit,
                        t.queue_timeout,
                        tm.upstream_in_flight.clone(),
                        tm.upstream_queue_depth.clone(),
                    ),
                    breaker: CircuitBreaker::new(
                        t.breaker_failures,
                        t.breaker_cool_down,
                        clock.clone(),
                        tm.circuit_open.clone(),
                    ),
                    tokens: Arc::new(TokenManager::new(
                        t.clone(),
                        upstream.clone(),
                        metrics.clone(),
                        clock.clone(),
                    )),
                    metrics: tm,
                    config: t,
                    generation: AtomicU64::new(0),
                }
            })
            .collect();
        let holds = moka::sync::Cache::builder()
            .max_capacity(10_000)
            .time_to_live(
                config
                    .count_route
                    .max_error_hold
                    .max(Duration::from_secs(1)),
            )
            .build();
        Gateway {
            cache: ResponseCache::new(
                config.cache_max_bytes,
                Some(metrics.cache_evictions.clone()),
            ),
            holds,
            flights: Arc::new(SingleFlight::new()),
            config: ArcSwap::new(config),
            tenants,
            upstream,
            metrics,
            clock,
            tally: CacheTally::default(),
            draining: AtomicBool::new(false),
            stop_waiting: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// The current configuration (replaced as a whole by [`Gateway::reload`]).
    pub fn config(&self) -> Arc<GatewayConfig> {
        self.config.load_full()
    }

    /// Applies a new configuration without dropping the cache: TTLs and staleness windows,
    /// route policies (canonicalisation rules, versions, pass-through allowlist), client keys,
    /// request limits and the admin token take effect for the next request. Listeners, the cache
    /// bound, upstream client settings and the tenants' hosts, credentials and limits need a
    /// restart (a changed tenant is logged as such).
    ///
    /// # Errors
    /// A description when the tenant set differs (names or order): the old config stays.
    pub fn reload(&self, new: GatewayConfig) -> Result<(), String> {
        let old = self.config.load();
        let names =
            |c: &GatewayConfig| c.tenants.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
        if names(&old) != names(&new) {
            return Err("the set of tenants changed: restart to apply".into());
        }
        for (before, after) in old.tenants.iter().zip(&new.tenants) {
            if before != after {
                tracing::warn!(tenant = %after.name, "tenant settings changed (hosts, credentials, limits): they apply after a restart");
            }
        }
        self.config.store(Arc::new(new));
        Ok(())
    }

    /// The tenants, in config order.
    pub fn tenants(&self) -> &[Tenant] {
        &self.tenants
    }

    /// The response cache.
    pub fn cache(&self) -> &ResponseCache {
        &self.cache
    }

    /// Hit/miss tallies.
    pub fn tally(&self) -> &CacheTally {
        &self.tally
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Marks the gateway as draining (`/readyz` turns 503).
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Ends every wait still in progress with [`GatewayError::ShuttingDown`] (called by the
    /// drain just before its deadline, so those clients get an answer before the close).
    pub fn stop_waiting(&self) {
        self.stop_waiting.cancel();
    }

    /// Whether the gateway is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Drops cached entries of one tenant and/or route (`None`: all), and makes fetches already
    /// in flight for those tenants not store their answers.
    pub fn invalidate(&self, tenant: Option<usize>, route: Option<RouteKind>) {
        match tenant {
            Some(t) => {
                self.tenants[t].generation.fetch_add(1, Ordering::SeqCst);
            }
            None => {
                for t in &self.tenants {
                    t.generation.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        self.cache.invalidate_where(tenant, route);
        self.holds.invalidate_all();
    }

    /// Handles one client request; never fails (errors become Zoho-shaped responses).
    /// `peer` is the client's address (for `X-Forwarded-For`).
    pub async fn handle<B>(
        self: Arc<Self>,
        req: Request<B>,
        peer: std::net::SocketAddr,
    ) -> Response<Body>
    where
        B: http_body::Body + Send,
        B::Data: Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let request_id = headers::request_id(req.headers());
        let mut rec = Recorder {
            gw: Arc::clone(&self),
            started: Instant::now(),
            method: req.method().clone(),
            ctx: RequestCtx {
                route: RouteKind::Unmatched,
                outcome: Outcome::Rejected,
                tenant: None,
                peer: peer.ip(),
                request_id: request_id.clone(),
                upstream_took: None,
                deadline: Instant::now() + self.config.load().request_timeout,
            },
            done: false,
        };
        let cfg = self.config();
        // `request_timeout` bounds every wait of this request (flight, upstream, body) through
        // `ctx.deadline`; a cache hit waits on nothing and arms no timer.
        let result = self.handle_inner(cfg, req, &mut rec.ctx).await;
        let mut resp = match result {
            Ok(resp) => resp,
            Err(err) => {
                let ctx = &mut rec.ctx;
                if ctx.outcome != Outcome::Rejected || err.blame() != crate::error::Blame::Client {
                    ctx.outcome = Outcome::Error;
                }
                error_response(&err, ctx.outcome)
            }
        };
        resp.headers_mut().insert(&headers::REQUEST_ID, request_id);
        rec.finish(resp.status().as_u16());
        resp
    }

    async fn handle_inner<B>(
        self: &Arc<Self>,
        cfg: Arc<GatewayConfig>,
        req: Request<B>,
        ctx: &mut RequestCtx,
    ) -> Result<Response<Body>, GatewayError>
    where
        B: http_body::Body + Send,
        B::Data: Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        // RFC 9112 §3.2: an HTTP/1.1 request has exactly one Host header.
        if req.version() == http::Version::HTTP_11
            && req.headers().get_all(header::HOST).iter().count() != 1
        {
            return Err(GatewayError::InvalidRequest(
                "an HTTP/1.1 request needs exactly one Host header",
            ));
        }
        let target_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
        if target_len > cfg.max_uri_bytes {
            return Err(GatewayError::UriTooLong);
        }
        let path = req.uri().path();
        if !route::is_normal_path(path) {
            return Err(GatewayError::UnknownRoute);
        }
        if let Some(m) = route::match_path(path, &cfg.count_route.versions) {
            ctx.route = m.kind;
            if req.method() != Method::GET {
                return Err(GatewayError::MethodNotAllowed);
            }
            let auth = self.authenticate(&cfg, req.headers(), req.extensions().get(), m.kind)?;
            ctx.tenant = Some(auth.client.tenant);
            return self.count_route(&cfg, &req, m.version, &auth, ctx).await;
        }
        if cfg
            .passthrough
            .iter()
            .any(|r| r.matches(req.method(), path, &cfg.count_route.versions))
        {
            ctx.route = RouteKind::Passthrough;
            let auth = self.authenticate(
                &cfg,
                req.headers(),
                req.extensions().get(),
                RouteKind::Passthrough,
            )?;
            ctx.tenant = Some(auth.client.tenant);
            ctx.outcome = Outcome::Bypass;
            let tenant = auth.client.tenant;
            let call = ctx.call(auth.credential);
            let started = Instant::now();
            let result = self
                .by_deadline(ctx.deadline, self.passthrough(&cfg, req, tenant, call))
                .await;
            ctx.upstream_took = Some(started.elapsed());
            return result;
        }
        Err(GatewayError::UnknownRoute)
    }

    /// `GET /crm/{version}/settings/user_groups/actions/associated_users_count`.
    async fn count_route<B>(
        self: &Arc<Self>,
        cfg: &GatewayConfig,
        req: &Request<B>,
        version: &str,
        auth: &Authenticated<'_>,
        ctx: &mut RequestCtx,
    ) -> Result<Response<Body>, GatewayError> {
        let tenant_idx = auth.client.tenant;
        // The upstream call context (`ctx.call`, forwarding headers) is built only where a call
        // is made: hits never pay for it.
        let policy = &cfg.count_route;
        let tenant = &self.tenants[tenant_idx];
        let raw_query = req.uri().query().unwrap_or("");
        let directives = client_directives(req.headers(), policy);

        let query = match canonical::canonicalize(raw_query, &policy.rules) {
            Canonical::Invalid(bad) => {
                return Err(GatewayError::InvalidData {
                    param: bad.param,
                    message: bad.message,
                });
            }
            Canonical::Uncacheable(reason) => Err(reason.as_str()),
            Canonical::Key(_) if directives.no_store => Err("no-store"),
            Canonical::Key(query) => Ok(query),
        };
        let query = match query {
            Ok(query) => query,
            Err(detail) => {
                ctx.outcome = Outcome::Bypass;
                let started = Instant::now();
                let call = ctx.call(auth.credential.clone());
                let bypass = self.bypass(tenant_idx, &call, req.uri().path(), raw_query, detail);
                let result = self.by_deadline(ctx.deadline, bypass).await;
                ctx.upstream_took = Some(started.elapsed());
                return result;
            }
        };
        let key = canonical::cache_key(
            &KeyScope {
                tenant: &tenant.config.name,
                credential: auth.partition.as_ref(),
                method: "GET",
                version,
                route: RouteKind::AssociatedUsersCount.as_str(),
            },
            &query,
        );

        // Lookup: fresh → hit; just expired → serve stale and refresh in the background.
        let now = self.clock.now();
        let cached = self.cache.get(&key).await;
        if let Some(entry) = cached.as_ref().filter(|_| !directives.no_cache) {
            match entry.freshness(now) {
                Freshness::Fresh => {
                    ctx.outcome = Outcome::Hit;
                    return Ok(hit_response(entry, now, Outcome::Hit, None));
                }
                Freshness::StaleWhileRevalidate => {
                    ctx.outcome = Outcome::Stale;
                    self.metrics.record_stale_served("stale-while-revalidate");
                    // A key on hold (a recent failure, Zoho's Retry-After) is not refreshed.
                    let held = self.holds.get(&key).is_some_and(|h| h.until > now);
                    if !held {
                        let call = ctx.call(auth.credential.clone());
                        self.revalidate_in_background(key, tenant_idx, &call, req, raw_query);
                    }
                    return Ok(hit_response(
                        entry,
                        now,
                        Outcome::Stale,
                        Some("stale-while-revalidate"),
                    ));
                }
                Freshness::StaleIfError | Freshness::Expired => {}
            }
        }
        let stale = cached.filter(|e| e.usable_if_error(now));

        // A key on hold after a failure makes no upstream attempt.
        if let Some(hold) = self.holds.get(&key).filter(|h| h.until > now) {
            if let Some(entry) = &stale {
                ctx.outcome = Outcome::Stale;
                self.metrics.record_stale_served("stale-if-error");
                return Ok(hit_response(
                    entry,
                    now,
                    Outcome::Stale,
                    Some("stale-if-error"),
                ));
            }
            ctx.outcome = Outcome::Held;
            let retry_after = hold.until.saturating_duration_since(now).as_secs().max(1);
            let mut resp = match &hold.failure {
                Ok(f) => fetched_response(f, Outcome::Held, Some("upstream-hold"), now),
                Err(e) => error_response(e, Outcome::Held),
            };
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            return Ok(resp);
        }

        // Miss (or client no-cache): one upstream call per key among concurrent requests.
        ctx.outcome = Outcome::Miss;
        let recheck = !directives.no_cache;
        let call = ctx.call(auth.credential.clone());
        let fetch = self.fetcher(key, tenant_idx, &call, req.uri().path(), raw_query, recheck);
        let waiting = GaugeGuard::inc(&self.metrics.coalesce_waiters);
        let wait = cfg
            .coalesce_timeout
            .min(ctx.deadline.saturating_duration_since(Instant::now()));
        let flight = tokio::select! {
            f = self.flights.run(key, wait, fetch) => f,
            _ = self.stop_waiting.cancelled() => return Err(GatewayError::ShuttingDown),
        };
        drop(waiting);
        let (fetched, role) = match flight {
            Ok(v) => v,
            // The request's own deadline ended the wait: the request timed out.
            Err(FlightError::Timeout) if Instant::now() >= ctx.deadline => {
                return Err(GatewayError::UpstreamTimeout);
            }
            Err(FlightError::Timeout) => return Err(GatewayError::WaitTimeout),
            Err(FlightError::Aborted) => return Err(GatewayError::Internal),
        };
        if role == Role::Follower {
            ctx.outcome = Outcome::Collapsed;
        }
        if let Ok(f) = &fetched {
            ctx.upstream_took = Some(f.upstream_took);
        }
        let failed = match &fetched {
            Ok(f) => is_failure(f.entry.status),
            Err(_) => true,
        };
        if failed && let Some(entry) = &stale {
            ctx.outcome = Outcome::Stale;
            self.metrics.record_stale_served("stale-if-error");
            let now = self.clock.now();
            return Ok(hit_response(
                entry,
                now,
                Outcome::Stale,
                Some("stale-if-error"),
            ));
        }
        let fetched = fetched?;
        Ok(fetched_response(
            &fetched,
            ctx.outcome,
            None,
            self.clock.now(),
        ))
    }

    /// The fetch a flight runs for `key` (called only by the flight's leader). `recheck`: first
    /// look for a fresh entry stored since the caller's lookup (off for client `no-cache`).
    fn fetcher<'a>(
        self: &Arc<Self>,
        key: CacheKey,
        tenant: usize,
        call: &CallCtx,
        path: &'a str,
        raw_query: &'a str,
        recheck: bool,
    ) -> impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = FetchResult> + Send>> + 'a
    {
        let gw = Arc::clone(self);
        let call = call.clone();
        move || {
            let path_and_query = upstream_path(path, raw_query);
            Box::pin(gw.fetch_and_store(key, tenant, call, path_and_query, recheck))
        }
    }

    /// Starts one background refresh for `key` unless a flight for it is already running.
    fn revalidate_in_background<B>(
        self: &Arc<Self>,
        key: CacheKey,
        tenant: usize,
        call: &CallCtx,
        req: &Request<B>,
        raw_query: &str,
    ) {
        if self.flights.waiters(&key) > 0 {
            return;
        }
        let flights = self.flights.clone();
        let fetch = self.fetcher(key, tenant, call, req.uri().path(), raw_query, false)();
        let deadline = self.config().coalesce_timeout;
        tokio::spawn(async move {
            let _ = flights.run(key, deadline, move || fetch).await;
        });
    }

    /// The flight's fetch: re-check the cache (closes the race with a flight that just ended),
    /// call upstream, store a cacheable answer, or put the key on hold after a failure.
    async fn fetch_and_store(
        self: Arc<Self>,
        key: CacheKey,
        tenant: usize,
        call: CallCtx,
        path_and_query: String,
        recheck: bool,
    ) -> FetchResult {
        if recheck && let Some(entry) = self.cache.get_fresh(&key, self.clock.now()).await {
            return Ok(Fetched {
                entry,
                stored: false,
                upstream_took: Duration::ZERO,
            });
        }
        let generation = self.tenants[tenant].generation.load(Ordering::SeqCst);
        let cfg = self.config();
        let policy = &cfg.count_route;
        let started = Instant::now();
        let result = self
            .call_upstream(
                tenant,
                &call,
                RouteKind::AssociatedUsersCount,
                Method::GET,
                &path_and_query,
                None,
            )
            .await;
        let now = self.clock.now();
        let resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                self.hold(key, now, policy.error_hold, Err(e.clone()));
                return Err(e);
            }
        };
        let ttl = match resp.status {
            StatusCode::OK => Some(policy.ttl),
            StatusCode::NO_CONTENT => Some(policy.no_content_ttl).filter(|t| !t.is_zero()),
            _ => None,
        };
        let hold_for = is_failure(resp.status).then(|| {
            retry_after(&resp.headers).map_or(policy.error_hold, |d| d.min(policy.max_error_hold))
        });
        let lifetimes = Lifetimes {
            ttl: ttl.map_or(Duration::ZERO, |t| jitter(t, policy.ttl_jitter_percent)),
            stale_while_revalidate: policy.stale_while_revalidate,
            stale_if_error: policy.stale_if_error,
        };
        let entry = Arc::new(CachedResponse::from_upstream(
            resp,
            now,
            lifetimes,
            tenant,
            RouteKind::AssociatedUsersCount,
        ));
        let fetched = Fetched {
            entry,
            stored: ttl.is_some()
                && self.tenants[tenant].generation.load(Ordering::SeqCst) == generation,
            upstream_took: started.elapsed(),
        };
        if fetched.stored {
            self.cache.insert(key, fetched.entry.clone()).await;
            self.tally.stores.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(hold_for) = hold_for {
            self.hold(key, now, hold_for, Ok(fetched.clone()));
        }
        Ok(fetched)
    }

    fn hold(&self, key: CacheKey, now: Instant, for_: Duration, failure: FetchResult) {
        if !for_.is_zero() {
            self.holds.insert(
                key,
                Arc::new(Hold {
                    until: now + for_,
                    failure,
                }),
            );
        }
    }
}

/// Increments a gauge for as long as it lives (also when its future is dropped mid-way).
struct GaugeGuard(prometheus::IntGauge);

impl GaugeGuard {
    fn inc(g: &prometheus::IntGauge) -> Self {
        g.inc();
        GaugeGuard(g.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `ttl` shortened by a random 0..=`percent`% (so entries stored together expire apart).
fn jitter(ttl: Duration, percent: u8) -> Duration {
    if percent == 0 {
        return ttl;
    }
    let max_cut = ttl.as_millis() as u64 * u64::from(percent) / 100;
    ttl - Duration::from_millis(rand::random_range(0..=max_cut))
}

/// The client's `Cache-Control` directives that the route honours. `Pragma: no-cache` counts
/// only without `Cache-Control` (RFC 9111 §5.4).
fn client_directives(h: &HeaderMap, policy: &CountRoutePolicy) -> Directives {
    let mut d = Directives::default();
    let mut seen_cache_control = false;
    for v in h.get_all(header::CACHE_CONTROL) {
        seen_cache_control = true;
        for token in v.to_str().unwrap_or("").split(',') {
            let name = token.split('=').next().unwrap_or("").trim();
            if name.eq_ignore_ascii_case("no-cache") {
                d.no_cache = true;
            } else if name.eq_ignore_ascii_case("no-store") {
                d.no_store = true;
            }
        }
    }
    if !seen_cache_control
        && h.get(header::PRAGMA)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache"))
    {
        d.no_cache = true;
    }
    d.no_cache &= policy.honor_no_cache;
    d.no_store &= policy.honor_no_store;
    d
}

#[cfg(test)]
mod tests {
    use super::passthrough::copy_end_to_end_headers;
    use super::*;

    fn policy() -> CountRoutePolicy {
        crate::config::RawConfig::default()
            .validate()
            .unwrap()
            .count_route
    }

    #[test]
    fn client_directives_follow_rfc_9111() {
        let p = policy();
        let mut h = HeaderMap::new();
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=0, No-Cache"),
        );
        let d = client_directives(&h, &p);
        assert!(d.no_cache && !d.no_store);
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        assert!(client_directives(&h, &p).no_store);
        let mut h = HeaderMap::new();
        h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        assert!(client_directives(&h, &p).no_cache);
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=5"));
        assert!(!client_directives(&h, &p).no_cache);
        let mut off = p.clone();
        off.honor_no_cache = false;
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        assert!(!client_directives(&h, &off).no_cache);
    }

    #[test]
    fn jitter_stays_within_percent() {
        let ttl = Duration::from_secs(60);
        for _ in 0..1000 {
            let j = jitter(ttl, 10);
            assert!(j <= ttl && j >= Duration::from_secs(54), "{j:?}");
        }
        assert_eq!(jitter(ttl, 0), ttl);
    }

    #[test]
    fn hop_by_hop_and_per_user_headers_are_stripped() {
        let mut from = HeaderMap::new();
        from.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-private"),
        );
        from.insert("x-private", HeaderValue::from_static("1"));
        from.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        from.insert(header::SET_COOKIE, HeaderValue::from_static("crmcsr=1"));
        from.insert("x-accesstoken-reset", HeaderValue::from_static("t"));
        from.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let mut to = HeaderMap::new();
        copy_end_to_end_headers(&from, &mut to);
        let names: Vec<_> = to.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["content-type"]);
    }

    #[test]
    fn retry_after_delta_seconds_only() {
        let mut h = HeaderMap::new();
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
    }
}
