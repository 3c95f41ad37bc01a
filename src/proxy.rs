//! The request path. [`Gateway::handle`] is the only place where errors become responses and
//! where a request is measured and logged (once, at the end); the inner functions are the happy
//! path as named steps that may return early:
//!
//! ```text
//! normal path? ─▶ route ─┬─ cached route (table) ─▶ method ─▶ authenticate ─▶ canonicalise ─┬─ invalid ─▶ 400 INVALID_DATA (local)
//!                        │                                                                 ├─ uncacheable / no-store ─▶ forward (bypass)
//!                        │                                                                 └─ key ─▶ lookup ─┬─ fresh ─▶ hit
//!                        │                                                                                   ├─ stale-while-revalidate ─▶ stale + background refresh
//!                        │                                                                                   ├─ held ─▶ stale-if-error, or the held failure
//!                        │                                                                                   └─ miss / no-cache ─▶ single-flight ─▶ fetch ─▶ store
//!                        │                                                                          (with [redis], the fetch: L2 ─▶ cross-replica flight ─▶ Zoho ─▶ L1 + L2; see `shared`)
//!                        ├─ allowlisted ─▶ authenticate ─▶ forward (bypass); a successful write drops the tenant's entries of its invalidation group
//!                        └─ else ─▶ 404 INVALID_URL_PATTERN (local)
//! ```
//!
//! Every cached route takes the same path, driven by its [`RoutePolicy`] (parameter schema,
//! lifetimes, directives, credit cost, group). What the cache did is one [`CachePhase`], set on
//! the way; `Cache-Status`, the metric outcome and the access-log outcome are derived from it.
//!
//! Single-flight semantics at the call site (see [`crate::coalesce`]): one upstream call per key
//! among concurrent misses; the fetch task re-checks the cache, calls Zoho (with one token
//! refresh + retry on 401 `INVALID_TOKEN`), stores a cacheable answer or puts the key on hold
//! after a failure, and hands the one result to every waiter; each waiter has the
//! `cache.coalesce_timeout` deadline (then 504) while the fetch goes on. Waiting requests are
//! bounded (`cache.max_waiters`, the tenant's `max_waiters`; beyond: 503 with `Retry-After`).

mod auth;
mod credit;
mod hot;
mod passthrough;
mod respond;
mod shared;
mod upcall;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use tokio::time::Instant;

use crate::cache::{BypassReason, CachePhase, CachedResponse, Conditions, Lifetimes, Lookup};
use crate::canonical::{CacheKey, KeyOutcome, KeyScope};
use crate::coalesce::{FlightError, Role};
use crate::config::{ClientKey, GatewayConfig, Priority, TenantId, key_digest};
use crate::error::{Blame, GATEWAY_ERROR_HEADER, GatewayError};
use crate::fleet::Fleet;
use crate::gateway::{Tenant, jitter};
use crate::headers::{self, RequestHeads};
use crate::route::{self, PathMatch, RouteId, RouteKind, RoutePolicy};
use crate::token::AccessToken;
use crate::upstream::breaker::Verdict;
use crate::upstream::{self, UpstreamResponse};
use auth::Authenticated;
use hmac::{Hmac, Mac};
use respond::{
    Recorder, cached_response, error_response, fetched_response, front_response, held_response,
};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use upcall::{CallCtx, Credential, is_failure, retry_after, upstream_path};

pub use crate::gateway::Gateway;

/// Response body type of the gateway.
pub type Body = Full<Bytes>;

/// What a flight hands its waiters: the upstream answer (and whether it was stored) or the
/// one error of that flight.
pub(crate) type FetchResult = Result<Fetched, GatewayError>;

/// An upstream answer as a flight hands it out.
#[derive(Clone, Debug)]
pub(crate) struct Fetched {
    entry: Arc<CachedResponse>,
    stored: bool,
    /// Time the flight spent on upstream calls (retries and token refresh included).
    upstream_took: Duration,
    /// Where the answer came from.
    source: Source,
}

/// Where a flight's answer came from (decides the phase of the requests that waited for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// This replica's upstream call.
    Upstream,
    /// This replica's L1: another flight stored it since the lookup.
    Local,
    /// The fleet's L2: stored by another replica earlier.
    Shared,
    /// The fleet's L2 after another replica's call that this flight waited for.
    Replica,
}

/// Per-request facts gathered along the path, for the one measurement and log line.
struct RequestCtx {
    route: RouteKind,
    /// What the cache did; the outcome, `Cache-Status` and log are derived from it.
    phase: CachePhase,
    /// Blame of the gateway error the request ended with, if any.
    error: Option<Blame>,
    tenant: Option<TenantId>,
    /// The client's claim on the tenant's credit reserve.
    priority: Priority,
    /// Credits one upstream call of the route costs (what an answer without one saves).
    credits: u32,
    peer: std::net::IpAddr,
    request_id: HeaderValue,
    /// The client's `X-EXTERNAL` (forwarded upstream; part of the cache key).
    external: Option<HeaderValue>,
    /// Time spent waiting on upstream calls for this request (its flight's, if it joined one).
    upstream_took: Option<Duration>,
    /// The end of `server.request_timeout` for this request.
    deadline: Instant,
}

impl RequestCtx {
    /// A request from `peer` not routed yet: unmatched, uncached, one credit, normal priority,
    /// bounded by `deadline`.
    fn new(peer: std::net::SocketAddr, request_id: HeaderValue, deadline: Instant) -> Self {
        RequestCtx {
            route: RouteKind::Unmatched,
            phase: CachePhase::Uncached,
            error: None,
            tenant: None,
            priority: Priority::Normal,
            credits: 1,
            peer: peer.ip(),
            request_id,
            external: None,
            upstream_took: None,
            deadline,
        }
    }

    fn call(&self, credential: Credential) -> CallCtx {
        CallCtx {
            credential,
            forwarded_for: HeaderValue::from_str(&self.peer.to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            request_id: self.request_id.clone(),
            priority: self.priority,
            cost: self.credits,
            external: self.external.clone(),
        }
    }
}

/// Client cache directives that apply (RFC 9111 §5.2.1), after route policy.
#[derive(Clone, Copy, Debug, Default)]
struct Directives {
    no_cache: bool,
    no_store: bool,
    /// `max-age=N`: no stored answer older than N seconds (§5.2.1.1; `max-age=0` asks for a
    /// fresh one, like `no-cache`).
    max_age: Option<u64>,
    /// `min-fresh=N`: only a stored answer fresh for N more seconds (§5.2.1.3).
    min_fresh: Option<u64>,
    /// `only-if-cached`: a stored answer or 504, never an upstream call (§5.2.1.7).
    only_if_cached: bool,
}

impl Directives {
    /// Whether the client refuses `entry` at `now` although it is fresh (`max-age`,
    /// `min-fresh`); then it is fetched again, as for `no-cache`.
    fn refuses(&self, entry: &CachedResponse, now: Instant) -> bool {
        self.max_age.is_some_and(|max| entry.age(now) > max)
            || self
                .min_fresh
                .is_some_and(|min| entry.remaining_ttl(now) < min)
    }
}

/// Remembers in this thread's memo of hot requests what the full path found for a plain
/// request that was answered fresh (`hot`: its probe and the generation read before the
/// config it was worked out under).
fn remember(
    hot: Option<(&hot::Probe<'_>, u64)>,
    gateway: u64,
    target: &Target<'_>,
    auth: &Authenticated<'_>,
    ctx: &RequestCtx,
) {
    if let Some((probe, generation)) = hot {
        probe.fill(
            gateway,
            generation,
            hot::Known {
                route: target.route,
                tenant: target.tenant,
                priority: auth.client.priority,
                credits: ctx.credits,
                key: target.key,
            },
        );
    }
}

/// What a miss needs besides its target: the client's directives and conditions, and the
/// expired entry that may stand in for a failure.
struct Miss<'c> {
    directives: Directives,
    stale: Option<Arc<CachedResponse>>,
    conditions: Option<&'c Conditions>,
}

/// Whose a fetched answer is: tenant, route and resolved invalidation group (its hash for the
/// local generation and cache, its name for the fleet's).
#[derive(Clone, Debug)]
struct Owner {
    tenant: TenantId,
    route: RouteId,
    group: u64,
    group_name: Arc<str>,
}

/// Where a cached-route request is going: its route, tenant, key and the raw request parts an
/// upstream call needs.
struct Target<'r> {
    route: RouteId,
    tenant: TenantId,
    key: CacheKey,
    path: &'r str,
    raw_query: &'r str,
}

/// What [`Gateway::handle`] returns: the answer itself when a hot request was answered from
/// this thread's front of the cache without waiting on anything, else the full request path
/// as one boxed future. Either way small: hyper moves a request's future into its dispatcher
/// on every request, and the full path's state machine is a few KiB.
pub type Handled = futures_util::future::Either<
    std::future::Ready<Response<Body>>,
    futures_util::future::BoxFuture<'static, Response<Body>>,
>;

impl Gateway {
    /// Handles one client request; never fails (errors become Zoho-shaped responses).
    /// `peer` is the client's address (for `X-Forwarded-For`). A plain repeated hit (see
    /// `proxy::hot`) is answered before this returns; everything else runs when the returned
    /// future is polled.
    pub fn handle<B>(self: Arc<Self>, req: Request<B>, peer: std::net::SocketAddr) -> Handled
    where
        B: http_body::Body + Send + Sync + 'static,
        B::Data: Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let request_id = headers::request_id(req.headers());
        // Read before the config: a hot-request memo slot filled under this generation was
        // worked out under this config or a newer one (see `hot`).
        let generation = self.generation.load(Ordering::Acquire);
        // One clock read per request: the start is also the deadline's base and a hit's "now".
        let started = Instant::now();
        if let Some(resp) = self.answer_hot(&req, peer, &request_id, generation, started) {
            return futures_util::future::Either::Left(std::future::ready(resp));
        }
        futures_util::future::Either::Right(Box::pin(
            self.handle_full(req, peer, request_id, generation, started),
        ))
    }

    /// A plain request this thread answered fresh before, under this `generation`, whose entry
    /// is still in this thread's front of the cache: answered and recorded here, with nothing
    /// to wait on. `None`: the full path answers it (also every [`crate::cache`] sampling
    /// turn of the front, which reads the main cache).
    fn answer_hot<B>(
        &self,
        req: &Request<B>,
        peer: std::net::SocketAddr,
        request_id: &HeaderValue,
        generation: u64,
        started: Instant,
    ) -> Option<Response<Body>> {
        let heads = RequestHeads::scan(req.headers());
        let probe = hot::Probe::of(req, &heads)?;
        let known = probe.lookup(self.cache.id(), generation)?;
        let now = self.clock.now_or(started);
        let mut resp = self
            .cache
            .serve_front(&known.key, now, |entry, body, prepared| {
                front_response(entry, body, prepared, now, None)
            })?;
        let mut rec = Recorder {
            gw: self,
            started,
            method: req.method().clone(),
            ctx: RequestCtx {
                route: RouteKind::Cached(known.route),
                phase: CachePhase::Fresh,
                tenant: Some(known.tenant),
                priority: known.priority,
                credits: known.credits,
                ..RequestCtx::new(peer, request_id.clone(), started)
            },
            done: false,
        };
        if req.method() == Method::HEAD {
            headers_only(&mut resp);
        }
        // The prepared head holds `Cache-Control` and a request-id placeholder already.
        resp.headers_mut()
            .insert(&headers::REQUEST_ID, request_id.clone());
        rec.finish(resp.status().as_u16());
        Some(resp)
    }

    /// The full request path ([`Gateway::handle`] without a hot answer).
    async fn handle_full<B>(
        self: Arc<Self>,
        req: Request<B>,
        peer: std::net::SocketAddr,
        request_id: HeaderValue,
        generation: u64,
        started: Instant,
    ) -> Response<Body>
    where
        B: http_body::Body + Send,
        B::Data: Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        // One guard (no shared reference count written), read after the generation.
        let cfg = self.config_guard();
        let mut rec = Recorder {
            gw: &self,
            started,
            method: req.method().clone(),
            ctx: RequestCtx::new(peer, request_id.clone(), started + cfg.request_timeout),
            done: false,
        };
        // `request_timeout` bounds every wait of this request (flight, upstream, body) through
        // `ctx.deadline`; a cache hit waits on nothing and arms no timer.
        let head = req.method() == Method::HEAD;
        let result = self
            .handle_inner(&cfg, generation, started, req, &mut rec.ctx)
            .await;
        let mut resp = match result {
            Ok(resp) => resp,
            Err(err) => {
                rec.ctx.error = Some(err.blame());
                error_response(&err, rec.ctx.phase)
            }
        };
        if head {
            headers_only(&mut resp);
        }
        let h = resp.headers_mut();
        h.insert(&headers::REQUEST_ID, request_id);
        // Every answer is one tenant's data for authenticated clients: no shared cache between
        // the client and the gateway may store it, and a client's own cache revalidates (cheap:
        // the gateway answers 304 from its cache). Relayed answers keep Zoho's own.
        h.entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static(headers::RESPONSE_CACHE_CONTROL));
        rec.finish(resp.status().as_u16());
        resp
    }

    /// Route → authenticate → (cached route | pass-through). `started`: when the request
    /// arrived; `generation`: the gateway's reload generation, read before `cfg`.
    async fn handle_inner<B>(
        self: &Arc<Self>,
        cfg: &GatewayConfig,
        generation: u64,
        started: Instant,
        mut req: Request<B>,
        ctx: &mut RequestCtx,
    ) -> Result<Response<Body>, GatewayError>
    where
        B: http_body::Body + Send,
        B::Data: Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let target_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
        if target_len > cfg.max_uri_bytes {
            return Err(GatewayError::UriTooLong);
        }
        // RFC 3986 §6.2.2.2: `%73` is `s`. Decoded before routing, keys and the upstream
        // call, which all read the request's path; dot segments are checked after it.
        let rewritten = match route::decode_unreserved(req.uri().path()) {
            std::borrow::Cow::Owned(decoded) => Some(decoded),
            std::borrow::Cow::Borrowed(_) => None,
        };
        let raw = rewritten.is_none();
        if let Some(decoded) = rewritten {
            *req.uri_mut() = with_path(req.uri(), decoded)?;
        }
        // Every request header the path reads, in one pass.
        let heads = RequestHeads::scan(req.headers());
        // A plain request this thread has seen under this generation: straight to this
        // thread's front of the cache (route, client and key as the full path found them).
        let probe = raw.then(|| hot::Probe::of(&req, &heads)).flatten();
        let mut fill = probe.as_ref();
        if let Some(known) = probe
            .as_ref()
            .and_then(|p| p.lookup(self.cache.id(), generation))
        {
            let now = self.clock.now_or(started);
            let local = self
                .cache
                .serve_local(&known.key, now, |entry, body, prepared| {
                    front_response(entry, body, prepared, now, None)
                });
            if let Some(resp) = local.await {
                ctx.route = RouteKind::Cached(known.route);
                ctx.tenant = Some(known.tenant);
                ctx.priority = known.priority;
                ctx.credits = known.credits;
                ctx.phase = CachePhase::Fresh;
                return Ok(resp);
            }
            // Still right, only not in this thread's front: the full path refills the front.
            fill = None;
        }
        // RFC 9112 §3.2: an HTTP/1.1 request has exactly one Host header.
        if req.version() == http::Version::HTTP_11 && heads.hosts != 1 {
            return Err(GatewayError::InvalidRequest(
                "an HTTP/1.1 request needs exactly one Host header",
            ));
        }
        let path = req.uri().path();
        if !route::is_normal_path(path) {
            return Err(GatewayError::UnknownRoute);
        }
        ctx.external = heads.external.cloned();
        if heads.externals > 1 {
            return Err(GatewayError::InvalidRequest(
                "send at most one X-EXTERNAL header",
            ));
        }
        let cached = cfg.match_route(path);
        if let Some((id, m)) = cached {
            ctx.route = RouteKind::Cached(id);
            let policy = cfg.route(id);
            ctx.credits = policy.credit_cost;
            if policy.serves(req.method()) {
                let auth = self.authenticate(cfg, &heads, req.extensions().get(), ctx.route)?;
                ctx.tenant = Some(auth.client.tenant);
                ctx.priority = auth.client.priority;
                let hot = fill.map(|probe| (probe, generation));
                return self
                    .cached_route(cfg, started, &req, &heads, id, m, &auth, hot, ctx)
                    .await;
            }
        }
        // Another method on a cached route's path (a write to `/crm/v7/Leads`) may still be
        // allowlisted.
        if cfg
            .passthrough
            .iter()
            .any(|r| r.matches(req.method(), path, &cfg.versions))
        {
            ctx.route = RouteKind::Passthrough;
            ctx.credits = 1;
            let auth =
                self.authenticate(cfg, &heads, req.extensions().get(), RouteKind::Passthrough)?;
            ctx.tenant = Some(auth.client.tenant);
            ctx.priority = auth.client.priority;
            ctx.phase = CachePhase::Bypass(BypassReason::Passthrough);
            let tenant = auth.client.tenant;
            let call = ctx.call(auth.credential);
            let started = Instant::now();
            // Boxed, like every path that calls upstream: the request's future stays as small
            // as a hit needs (hyper moves it on every request).
            let result =
                Box::pin(self.by_deadline(ctx.deadline, self.passthrough(cfg, req, tenant, call)))
                    .await;
            ctx.upstream_took = Some(started.elapsed());
            return result;
        }
        // A known path (a cached route's, or an allowlisted rule's for another method) is a
        // 405 naming what is allowed there (RFC 9110 §15.5.6); a path nothing matches, a 404.
        let cached_methods = cached
            .into_iter()
            .flat_map(|(id, _)| cfg.route(id).allowed_methods());
        let passthrough_methods = cfg
            .passthrough
            .iter()
            .filter(|r| r.matches_path(path, &cfg.versions))
            .map(|r| &r.method);
        let mut allowed = cached_methods.chain(passthrough_methods).peekable();
        if allowed.peek().is_none() {
            return Err(GatewayError::UnknownRoute);
        }
        Err(GatewayError::MethodNotAllowed {
            allow: allow_header(allowed),
        })
    }

    /// Any cached route, driven by its policy: canonicalise → key → lookup → respond.
    #[allow(clippy::too_many_arguments)] // the request's parts as the path has them at hand
    async fn cached_route<B>(
        self: &Arc<Self>,
        cfg: &GatewayConfig,
        started: Instant,
        req: &Request<B>,
        heads: &RequestHeads<'_>,
        route: RouteId,
        m: PathMatch<'_>,
        auth: &Authenticated<'_>,
        hot: Option<(&hot::Probe<'_>, u64)>,
        ctx: &mut RequestCtx,
    ) -> Result<Response<Body>, GatewayError> {
        // The upstream call context (`ctx.call`, forwarding headers) is built only where a call
        // is made: hits never pay for it.
        let policy = cfg.route(route);
        let tenant = auth.client.tenant;
        let raw_query = req.uri().query().unwrap_or("");
        let directives = if heads.directives {
            client_directives(req.headers(), policy)
        } else {
            Directives::default()
        };
        let path = req.uri().path();

        let scope = KeyScope {
            tenant: &auth.tenant.cache_scope,
            credential: auth.partition.as_ref(),
            method: policy.method.as_str(),
            version: m.version,
            route: m.rest,
            external: ctx.external.as_ref().map(HeaderValue::as_bytes),
        };
        // A hot query's key comes from the schema's memo (no decode, parse or hash), and with
        // it which parameters it sent: the call's credit cost (`credit_cost_when`).
        let (outcome, sent) = policy.schema.key_and_sent(&scope, raw_query);
        ctx.credits = policy.cost_of(sent);
        let key = match outcome {
            KeyOutcome::Invalid(bad) => {
                return Err(GatewayError::InvalidData {
                    code: bad.kind.zoho_code(),
                    param: bad.param,
                    message: bad.message,
                    limit: bad.limit,
                });
            }
            KeyOutcome::Uncacheable(reason) => Err(BypassReason::Query(reason)),
            KeyOutcome::Key(_) if directives.no_store => Err(BypassReason::NoStore),
            KeyOutcome::Key(key) => Ok(key),
        };
        let key = match key {
            Ok(key) => key,
            Err(_) if directives.only_if_cached => return Err(GatewayError::NotCached),
            Err(reason) => {
                ctx.phase = CachePhase::Bypass(reason);
                let started = Instant::now();
                let call = ctx.call(auth.credential.clone());
                let bypass = self.bypass(tenant, route, &call, path, raw_query, ctx.phase);
                let result = Box::pin(self.by_deadline(ctx.deadline, bypass)).await;
                ctx.upstream_took = Some(started.elapsed());
                return result;
            }
        };
        let target = Target {
            route,
            tenant,
            key,
            path,
            raw_query,
        };

        // The client's `If-None-Match` / `If-Modified-Since`, answered from whatever entry is
        // served (never forwarded, never in the key; RFC 9110 §13).
        let conditions = heads
            .conditional
            .then(|| Conditions::from_headers(req.headers()))
            .flatten();
        let conditions = conditions.as_ref();
        let now = self.clock.now_or(started);
        // The hot path: a fresh entry from this worker thread's own front of the cache, which
        // writes to nothing another thread writes (see `cache::local`). Only for requests that
        // would take any fresh entry.
        if !directives.no_cache && directives.max_age.is_none() && directives.min_fresh.is_none() {
            let local = self
                .cache
                .serve_local(&target.key, now, |entry, body, prepared| {
                    front_response(entry, body, prepared, now, conditions)
                });
            if let Some(resp) = local.await {
                ctx.phase = CachePhase::Fresh;
                remember(hot, self.cache.id(), &target, auth, ctx);
                return Ok(resp);
            }
        }
        let mut directives = directives;
        let lookup = match self
            .cache
            .lookup(&target.key, now, directives.no_cache)
            .await
        {
            // Too old or not fresh enough for the client's `max-age` / `min-fresh`: fetched
            // again, as for `no-cache`.
            Lookup::Fresh(entry) | Lookup::StaleWhileRevalidate { entry, .. }
                if directives.refuses(&entry, now) =>
            {
                directives.no_cache = true;
                Lookup::Miss {
                    stale: entry.usable_if_error(now).then_some(entry),
                }
            }
            lookup => lookup,
        };
        match lookup {
            Lookup::Fresh(entry) => {
                ctx.phase = CachePhase::Fresh;
                remember(hot, self.cache.id(), &target, auth, ctx);
                Ok(cached_response(&entry, now, ctx.phase, conditions))
            }
            Lookup::StaleWhileRevalidate { entry, revalidate } => {
                ctx.phase = CachePhase::StaleWhileRevalidate;
                if revalidate {
                    let call = ctx.call(auth.credential.clone());
                    self.revalidate_in_background(&target, &call);
                }
                Ok(cached_response(&entry, now, ctx.phase, conditions))
            }
            Lookup::StaleIfError(entry) => {
                ctx.phase = CachePhase::StaleIfError;
                Ok(cached_response(&entry, now, ctx.phase, conditions))
            }
            Lookup::Held(hold) => {
                ctx.phase = CachePhase::Held;
                Ok(held_response(&hold, now))
            }
            Lookup::Miss { .. } if directives.only_if_cached => Err(GatewayError::NotCached),
            Lookup::Miss { stale } => {
                let call = ctx.call(auth.credential.clone());
                let miss = Miss {
                    directives,
                    stale,
                    conditions,
                };
                Box::pin(self.miss(cfg, &target, call, miss, ctx)).await
            }
        }
    }

    /// A miss (or client `no-cache`): one upstream call per key among concurrent requests; a
    /// failure is answered with `stale` when one can stand in.
    async fn miss(
        self: &Arc<Self>,
        cfg: &GatewayConfig,
        target: &Target<'_>,
        call: CallCtx,
        miss: Miss<'_>,
        ctx: &mut RequestCtx,
    ) -> Result<Response<Body>, GatewayError> {
        let Miss {
            directives,
            stale,
            conditions,
        } = miss;
        // Under the credit reserve, a normal-priority client starts no upstream call (it may
        // still join one under way): the stale entry, or a 429.
        if let Some(answer) = self.reserve_miss(target, &call, stale.as_ref(), conditions, ctx) {
            return answer;
        }
        ctx.phase = CachePhase::Miss;
        let tenant = self.tenant(target.tenant);
        let waiting = self.wait_permit(&tenant)?;
        // Built only if this request starts the flight (a follower would throw it away).
        let fetch = || self.fetcher(target, &call, !directives.no_cache)();
        // A request that joins waits `coalesce_timeout`; the one that starts the flight waits
        // for its own fetch (bounded by the upstream timeouts) up to its request deadline, so
        // it sees the fetch's own error (an upstream timeout), never `wait_timeout`.
        let remaining = ctx.deadline.saturating_duration_since(Instant::now());
        let wait = cfg.coalesce_timeout.min(remaining);
        let flight = tokio::select! {
            f = self.flights.run_led(target.key, wait, remaining, fetch) => f,
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
        let source = fetched.as_ref().map_or(Source::Upstream, |f| f.source);
        ctx.phase = match (source, role) {
            (Source::Shared, _) => CachePhase::SharedHit,
            (Source::Replica, _) | (_, Role::Follower) => CachePhase::Collapsed,
            (Source::Upstream | Source::Local, Role::Leader) => CachePhase::Miss,
        };
        if let Ok(f) = &fetched {
            ctx.upstream_took = Some(f.upstream_took);
        }
        let failed = fetched
            .as_ref()
            .map_or(true, |f| is_failure(f.entry.status));
        if failed && let Some(entry) = &stale {
            ctx.phase = CachePhase::StaleIfError;
            return Ok(cached_response(
                entry,
                self.clock.now(),
                ctx.phase,
                conditions,
            ));
        }
        if let Ok(f) = &fetched
            && ctx.phase == CachePhase::SharedHit
        {
            return Ok(cached_response(
                &f.entry,
                self.clock.now(),
                ctx.phase,
                conditions,
            ));
        }
        // Fetched unconditionally and stored; now the client's condition is evaluated.
        Ok(fetched_response(
            &fetched?,
            ctx.phase,
            self.clock.now(),
            conditions,
        ))
    }

    /// The fetch a flight runs for `target` (called only by the flight's leader). `recheck`:
    /// first look for a fresh entry stored since the caller's lookup (off for client
    /// `no-cache`).
    fn fetcher(
        self: &Arc<Self>,
        target: &Target<'_>,
        call: &CallCtx,
        recheck: bool,
    ) -> impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = FetchResult> + Send>> + use<>
    {
        let gw = Arc::clone(self);
        let call = call.clone();
        let (key, tenant, route) = (target.key, target.tenant, target.route);
        // The entry's invalidation group, resolved against its own path (`records:{module}` →
        // `records:leads`): computed on the miss path only.
        let cfg = self.config();
        let policy = cfg.route(route);
        let group_name = policy.template.resolve_group(&policy.group, target.path);
        let owner = Owner {
            tenant,
            route,
            group: route::group_hash(&group_name),
            group_name: Arc::from(&*group_name),
        };
        let path_and_query = upstream_path(target.path, target.raw_query);
        move || Box::pin(gw.fetch_and_store(key, owner, call, path_and_query, recheck))
    }

    /// Starts one background refresh for `target` unless a flight for it is already running.
    fn revalidate_in_background(self: &Arc<Self>, target: &Target<'_>, call: &CallCtx) {
        if self.flights.waiters(&target.key) > 0 || !self.may_spend(target.tenant, call) {
            return;
        }
        let flights = self.flights.clone();
        let key = target.key;
        // `recheck` on: the stale entry is not fresh, but with a fleet tier another replica may
        // have refreshed it already (L2), or be refreshing it (cross-replica flight).
        let fetch = self.fetcher(target, call, true)();
        let deadline = self.config().coalesce_timeout;
        tokio::spawn(async move {
            let _ = flights.run(key, deadline, move || fetch).await;
        });
    }

    /// The flight's fetch: re-check the cache (closes the race with a flight that just ended);
    /// with a fleet tier, look in L2 and join the cross-replica flight ([`Gateway::fetch_shared`]);
    /// else call upstream ([`Gateway::fetch_upstream`]).
    async fn fetch_and_store(
        self: Arc<Self>,
        key: CacheKey,
        owner: Owner,
        call: CallCtx,
        path_and_query: String,
        recheck: bool,
    ) -> FetchResult {
        if recheck && let Some(entry) = self.cache.get_fresh(&key, self.clock.now()).await {
            return Ok(Fetched {
                entry,
                stored: false,
                upstream_took: Duration::ZERO,
                source: Source::Local,
            });
        }
        if let Some(fleet) = self.fleet.clone() {
            return self
                .fetch_shared(&fleet, key, &owner, &call, &path_and_query, recheck)
                .await;
        }
        self.fetch_upstream(key, &owner, &call, &path_and_query, None)
            .await
            .0
    }

    /// Calls upstream, stores a cacheable answer (in L1, and in L2 with `l2` = the fleet and the
    /// scope's Redis generation when the fetch began), or puts the key on hold after a failure.
    /// The `bool` says whether the answer reached L2.
    async fn fetch_upstream(
        &self,
        key: CacheKey,
        owner: &Owner,
        call: &CallCtx,
        path_and_query: &str,
        l2: Option<(&Fleet, u64)>,
    ) -> (FetchResult, bool) {
        let Owner {
            tenant,
            route,
            group,
            ..
        } = *owner;
        let generation = self.tenant(tenant).generation(group);
        let cfg = self.config();
        let policy = &cfg.route(route).lifetimes;
        let started = Instant::now();
        let result = self
            .call_upstream(
                tenant,
                call,
                RouteKind::Cached(route),
                Method::GET,
                path_and_query,
                None,
            )
            .await;
        let now = self.clock.now();
        let resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                let owner = (tenant, route, group);
                self.cache
                    .hold(key, now, policy.error_hold, owner, Err(e.clone()));
                return (Err(e), false);
            }
        };
        let ttl = match resp.status {
            StatusCode::OK if storable_body(&resp.headers) => Some(policy.ttl),
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
        let entry = Arc::new(
            CachedResponse::from_upstream(resp, now, lifetimes, tenant, route).with_group(group),
        );
        let t = self.tenant(tenant);
        let mut fetched = Fetched {
            entry,
            stored: ttl.is_some() && t.generation(group) == generation,
            upstream_took: started.elapsed(),
            source: Source::Upstream,
        };
        if fetched.stored {
            self.cache.insert(key, fetched.entry.clone()).await;
            // A write that completed between the check above and the insert has already run
            // its invalidation: take the answer out again.
            if t.generation(group) != generation {
                self.cache.remove(&key).await;
                fetched.stored = false;
            } else {
                self.tally.stores.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(hold_for) = hold_for {
            let owner = (tenant, route, group);
            self.cache
                .hold(key, now, hold_for, owner, Ok(fetched.entry.clone()));
        }
        let shared = match l2 {
            Some((fleet, generation)) if fetched.stored => {
                self.l2_store(fleet, &key, owner, &fetched.entry, generation)
                    .await
            }
            _ => false,
        };
        (Ok(fetched), shared)
    }
}

/// `uri` with its path replaced by `path` (the query kept).
fn with_path(uri: &http::Uri, path: String) -> Result<http::Uri, GatewayError> {
    let path_and_query = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(
        path_and_query
            .parse()
            .map_err(|_| GatewayError::UnknownRoute)?,
    );
    http::Uri::from_parts(parts).map_err(|_| GatewayError::UnknownRoute)
}

/// An `Allow` header value (RFC 9110 §10.2.1): `methods` comma-separated, each once, in the
/// order given.
fn allow_header<'m>(methods: impl Iterator<Item = &'m Method>) -> HeaderValue {
    let mut listed: Vec<&Method> = Vec::new();
    for m in methods {
        if !listed.contains(&m) {
            listed.push(m);
        }
    }
    let text = listed
        .iter()
        .map(|m| m.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    // Method names are tokens: always a valid header value.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("GET"))
}

/// The response to a `HEAD` (RFC 9110 §9.3.2): the same status and headers as the `GET`
/// answer, with `Content-Length` = the length of the body a `GET` gets, and no body. hyper's
/// HTTP/1 server would drop the body of a `HEAD` answer itself (and send the body's length),
/// but its HTTP/2 server sends it: so the gateway drops it here, for both. No copy: the
/// entry's body is shared, and only its length is read.
fn headers_only(resp: &mut Response<Body>) {
    let len = http_body::Body::size_hint(resp.body()).exact().unwrap_or(0);
    let status = resp.status();
    // 1xx, 204 and 304 answers have no content to measure (RFC 9110 §8.6).
    let has_content = !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED);
    if has_content && !resp.headers().contains_key(header::CONTENT_LENGTH) {
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    *resp.body_mut() = Full::new(Bytes::new());
}

/// Whether a 200's body may be stored: JSON (`application/json` or a `+json` type, RFC 6839)
/// and not content-coded (the gateway stores and replays bodies as received and asks Zoho for
/// no coding). An HTML maintenance page or a gzip body is relayed, never stored.
fn storable_body(h: &HeaderMap) -> bool {
    let json = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false);
    let identity = h.get_all(header::CONTENT_ENCODING).iter().all(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .all(|c| c.trim().eq_ignore_ascii_case("identity"))
        })
    });
    json && identity
}

/// The client's `Cache-Control` directives that the route honours. `Pragma: no-cache` counts
/// only without `Cache-Control` (RFC 9111 §5.4).
fn client_directives(h: &HeaderMap, policy: &RoutePolicy) -> Directives {
    let mut d = Directives::default();
    let mut seen_cache_control = false;
    for v in h.get_all(header::CACHE_CONTROL) {
        seen_cache_control = true;
        for token in v.to_str().unwrap_or("").split(',') {
            let (name, arg) = token.split_once('=').unwrap_or((token, ""));
            let name = name.trim();
            // delta-seconds (RFC 9111 §1.2.2), optionally quoted; an invalid one is ignored.
            let seconds = || arg.trim().trim_matches('"').parse::<u64>().ok();
            if name.eq_ignore_ascii_case("no-cache") {
                d.no_cache = true;
            } else if name.eq_ignore_ascii_case("no-store") {
                d.no_store = true;
            } else if name.eq_ignore_ascii_case("max-age") {
                d.max_age = seconds().or(d.max_age);
            } else if name.eq_ignore_ascii_case("min-fresh") {
                d.min_fresh = seconds().or(d.min_fresh);
            } else if name.eq_ignore_ascii_case("only-if-cached") {
                d.only_if_cached = true;
            }
        }
    }
    if !seen_cache_control
        && h.get(header::PRAGMA)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache"))
    {
        d.no_cache = true;
    }
    // `max-age=0`: no stored answer of any age (ages are whole seconds, so one stored within
    // the second would pass a literal reading): fetched again, as Squid and Varnish do.
    d.no_cache |= d.max_age == Some(0);
    d.no_cache &= policy.honor_no_cache;
    d.no_store &= policy.honor_no_store;
    // `max-age` and `min-fresh` ask for a newer answer, as `no-cache` does.
    if !policy.honor_no_cache {
        d.max_age = None;
        d.min_fresh = None;
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::copy_end_to_end_headers;

    fn policy() -> RoutePolicy {
        crate::config::RawConfig::default()
            .validate()
            .unwrap()
            .routes
            .remove(0)
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
    fn only_identity_coded_json_is_storable() {
        let with = |ct: &'static str, ce: Option<&'static str>| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            if let Some(ce) = ce {
                h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(ce));
            }
            storable_body(&h)
        };
        assert!(with("application/json;charset=utf-8", None));
        assert!(with("Application/JSON", Some("identity")));
        assert!(with("application/problem+json", None));
        assert!(!with("text/html; charset=utf-8", None));
        assert!(!with("application/json", Some("gzip")));
        assert!(!storable_body(&HeaderMap::new()));
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

    /// hyper moves a request's future into its dispatcher on every request: what
    /// [`Gateway::handle`] returns is the answer or a box, never the full path's state machine
    /// (a few KiB; moving it was ≈ 4 % of the gateway's CPU under load, as `memmove` under
    /// hyper's `recv_msg`).
    #[test]
    fn the_request_future_stays_small() {
        fn size_of_future<F, Fut>(_: &F) -> usize
        where
            F: Fn(Arc<Gateway>, Request<http_body_util::Empty<Bytes>>, std::net::SocketAddr) -> Fut,
        {
            std::mem::size_of::<Fut>()
        }
        let handle = |gw: Arc<Gateway>, req, peer| gw.handle(req, peer);
        let size = size_of_future(&handle);
        assert!(size <= 256, "Gateway::handle's future is {size} bytes");
    }
}
