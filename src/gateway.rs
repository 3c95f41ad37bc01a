//! The shared state of one running gateway: configuration, tenants (token manager, limits,
//! breaker, invalidation generation), the cache, the single-flight table, the upstream client,
//! metrics, the clock and, with `[redis]`, the fleet tier ([`Fleet`]). The request path over it
//! is `proxy`; the admin API reads it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cache::ResponseCache;
use crate::canonical::CacheKey;
use crate::clock::Clock;
use crate::coalesce::SingleFlight;
use crate::config::{GatewayConfig, TenantConfig, TenantId};
use crate::error::GatewayError;
use crate::fleet::generation::Scope;
use crate::fleet::{Fleet, FleetEvent, FleetSetupError};
use crate::metrics::{Metrics, TenantMetrics};
use crate::proxy::FetchResult;
use crate::route::RouteId;
use crate::token::TokenManager;
use crate::upstream::Upstream;
use crate::upstream::breaker::CircuitBreaker;
use crate::upstream::limit::ConcurrencyLimit;

/// Runtime state of one tenant.
#[derive(Debug)]
pub struct Tenant {
    /// Its handle.
    pub id: TenantId,
    /// Validated configuration.
    pub config: Arc<TenantConfig>,
    /// Its token manager.
    pub tokens: Arc<TokenManager>,
    pub(crate) metrics: TenantMetrics,
    pub(crate) limit: ConcurrencyLimit,
    /// With a fleet tier: this replica's share of the limit (`redis.fallback_share_percent`),
    /// taken behind `limit` while Redis is unavailable, so N replicas on their own stay near
    /// Zoho's limit. While Redis is available the fleet-wide slots are taken instead.
    pub(crate) fallback_limit: Option<ConcurrencyLimit>,
    pub(crate) breaker: CircuitBreaker,
    /// Requests of this tenant waiting for a flight (bounded by `max_waiters`).
    pub(crate) waiting: AtomicUsize,
    /// Bumped by every invalidation of all this tenant's entries (of some routes, or all); a
    /// fetch that started under an older generation does not store its answer (it may predate
    /// the change).
    generation: AtomicU64,
    /// The same per invalidation group, striped: a write to group `g` bumps stripe
    /// `g % GROUP_STRIPES`, so fetches of other groups (bar a shared stripe) still store.
    group_generations: [AtomicU64; GROUP_STRIPES],
}

/// Stripes of per-group invalidation generations per tenant (a collision only means a fetch
/// across an unrelated write is not stored).
const GROUP_STRIPES: usize = 64;

/// A tenant's invalidation generation for one group, read before a fetch and compared before
/// storing its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Generation(u64, u64);

impl Tenant {
    /// The current invalidation generation of resolved group `group` (a
    /// [`crate::route::group_hash`]).
    pub(crate) fn generation(&self, group: u64) -> Generation {
        Generation(
            self.generation.load(Ordering::SeqCst),
            self.group_generations[group as usize % GROUP_STRIPES].load(Ordering::SeqCst),
        )
    }
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

/// Why [`Gateway::reload`] refused a new configuration (the old one stays).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReloadError {
    /// The set of tenants (names or order) differs.
    #[error("the set of tenants changed: restart to apply")]
    TenantsChanged,
    /// The set of cached routes (names or order) differs.
    #[error("the set of cached routes changed: restart to apply")]
    RoutesChanged,
}

/// Shared state of one running gateway.
#[derive(Debug)]
pub struct Gateway {
    pub(crate) config: ArcSwap<GatewayConfig>,
    pub(crate) tenants: Vec<Tenant>,
    pub(crate) cache: ResponseCache,
    pub(crate) flights: Arc<SingleFlight<CacheKey, FetchResult>>,
    pub(crate) upstream: Upstream,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) clock: Clock,
    pub(crate) tally: CacheTally,
    /// Requests waiting for a flight, all tenants (bounded by `cache.max_waiters`).
    pub(crate) waiting: AtomicUsize,
    draining: AtomicBool,
    /// Cancelled shortly before the drain deadline: requests still waiting then are answered
    /// with a 503 instead of losing their connection.
    pub(crate) stop_waiting: tokio_util::sync::CancellationToken,
    /// The fleet tier (`[redis]`), when configured.
    pub(crate) fleet: Option<Arc<Fleet>>,
}

impl Gateway {
    /// Builds the gateway state (no I/O; with `[redis]`, the fleet tier connects when
    /// [`Gateway::run_fleet`] runs). `metrics` must have been registered with the fleet's
    /// metrics when `[redis]` is configured.
    ///
    /// # Errors
    /// [`FleetSetupError`] when the Redis URL is refused or the fleet metrics are missing.
    pub fn new(
        config: Arc<GatewayConfig>,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Result<Self, FleetSetupError> {
        let upstream = Upstream::new(&config.upstream);
        let fleet = match (&config.redis, &metrics.fleet) {
            (Some(redis), Some(fm)) => Some(Fleet::with_metrics(redis.clone(), fm.clone())?),
            (Some(_), None) => {
                return Err(FleetSetupError::Metrics(prometheus::Error::Msg(
                    "fleet metrics not registered".into(),
                )));
            }
            (None, _) => None,
        };
        let tenants = config
            .tenants
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let t = Arc::new(t.clone());
                let tm = metrics.tenant(&t.name);
                Ok(Tenant {
                    id: TenantId(i as u16),
                    limit: ConcurrencyLimit::new(
                        t.max_concurrency,
                        t.queue_limit,
                        t.queue_timeout,
                        tm.upstream_in_flight.clone(),
                        tm.upstream_queue_depth.clone(),
                    ),
                    fallback_limit: match &config.redis {
                        // Unregistered gauges: `limit` already reports in-flight and queue.
                        Some(r) => Some(ConcurrencyLimit::new(
                            r.fallback_share(t.max_concurrency),
                            t.queue_limit,
                            t.queue_timeout,
                            prometheus::IntGauge::new("fallback_in_flight", "unregistered")?,
                            prometheus::IntGauge::new("fallback_queue", "unregistered")?,
                        )),
                        None => None,
                    },
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
                        fleet.clone(),
                    )),
                    metrics: tm,
                    config: t,
                    waiting: AtomicUsize::new(0),
                    generation: AtomicU64::new(0),
                    group_generations: std::array::from_fn(|_| AtomicU64::new(0)),
                })
            })
            .collect::<Result<Vec<_>, FleetSetupError>>()?;
        Ok(Gateway {
            cache: ResponseCache::with_keep(
                config.cache_max_bytes,
                Some(metrics.cache_evictions.clone()),
                config.redis.as_ref().and_then(|r| r.l1_ttl),
            ),
            flights: Arc::new(SingleFlight::new()),
            config: ArcSwap::new(config),
            tenants,
            upstream,
            metrics,
            clock,
            tally: CacheTally::default(),
            waiting: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            stop_waiting: tokio_util::sync::CancellationToken::new(),
            fleet,
        })
    }

    /// The fleet tier, when `[redis]` is configured.
    pub fn fleet(&self) -> Option<&Arc<Fleet>> {
        self.fleet.as_ref()
    }

    /// Background task (with a fleet tier; returns at once without): keeps the Redis
    /// connection and event subscription ([`Fleet::run`]) and applies fleet events to this
    /// replica's L1 until `shutdown`. Another replica's write drops the matching local entries
    /// and holds, its admin purge the purged ones (neither is broadcast again); a resync, or
    /// events lost to a lagging receiver, drop everything (an invalidation may have been missed
    /// while Redis was out of reach).
    pub async fn run_fleet(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(fleet) = self.fleet.clone() else {
            return;
        };
        let mut events = fleet.events();
        let hub = tokio::spawn(fleet.run(shutdown.clone()));
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => break,
                e = events.recv() => e,
            };
            match event {
                Ok(FleetEvent::Invalidated { tenant, group, .. }) => {
                    if let Some(t) = self.tenant_named(&tenant) {
                        self.invalidate_group(t.id, &group);
                    }
                }
                Ok(FleetEvent::Purged { tenant, route }) => {
                    let Some(t) = self.tenant_named(&tenant) else {
                        continue;
                    };
                    let cfg = self.config();
                    match route {
                        None => self.invalidate(Some(t.id), None),
                        Some(name) => {
                            if let Some((id, _)) = cfg.route_names().find(|(_, n)| *n == name) {
                                self.invalidate(Some(t.id), Some(&[id]));
                            }
                        }
                    }
                }
                Ok(FleetEvent::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.invalidate(None, None);
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
        let _ = hub.await;
    }

    /// [`Gateway::invalidate_group`] here, and with a fleet tier on every replica and in L2: the
    /// (tenant, group) generation is bumped in Redis and broadcast (bounded by
    /// `redis.command_timeout`; with Redis unavailable, the other replicas drop their L1 when
    /// they next resync).
    pub async fn invalidate_group_everywhere(&self, tenant: TenantId, group: &str) {
        self.invalidate_group(tenant, group);
        if let Some(fleet) = &self.fleet {
            let scope = Scope {
                tenant: &self.tenant(tenant).config.name,
                group,
            };
            let _ = fleet.invalidate(scope).await;
        }
    }

    /// [`Gateway::invalidate`] here, and with a fleet tier on every replica and in L2 (an
    /// admin purge; see [`Fleet::purge`]).
    pub async fn purge_everywhere(&self, tenant: Option<TenantId>, route: Option<RouteId>) {
        self.invalidate(tenant, route.as_ref().map(std::slice::from_ref));
        let Some(fleet) = &self.fleet else {
            return;
        };
        let cfg = self.config();
        let route_name = route.and_then(|r| cfg.route_names().find(|(id, _)| *id == r));
        for t in self
            .tenants
            .iter()
            .filter(|t| tenant.is_none_or(|id| id == t.id))
        {
            let _ = fleet
                .purge(&t.config.name, route_name.map(|(_, n)| n))
                .await;
        }
    }

    /// The current configuration (replaced as a whole by [`Gateway::reload`]).
    pub fn config(&self) -> Arc<GatewayConfig> {
        self.config.load_full()
    }

    /// Applies a new configuration without dropping the cache: TTLs and staleness windows,
    /// route policies (parameter schemas, versions, pass-through allowlist), client keys,
    /// request limits and the admin token take effect for the next request. Listeners, the cache
    /// bound, upstream client settings and the tenants' hosts, credentials and limits need a
    /// restart (a changed tenant is logged as such).
    ///
    /// # Errors
    /// [`ReloadError`] when the set of tenants or of cached routes differs: the old config stays.
    pub fn reload(&self, new: GatewayConfig) -> Result<(), ReloadError> {
        let old = self.config.load();
        let tenants =
            |c: &GatewayConfig| c.tenants.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
        if tenants(&old) != tenants(&new) {
            return Err(ReloadError::TenantsChanged);
        }
        let routes =
            |c: &GatewayConfig| c.routes.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
        if routes(&old) != routes(&new) {
            return Err(ReloadError::RoutesChanged);
        }
        for (before, after) in old.tenants.iter().zip(&new.tenants) {
            if before != after {
                tracing::warn!(tenant = %after.name, "tenant settings changed (hosts, credentials, limits): they apply after a restart");
            }
        }
        self.config.store(Arc::new(new));
        Ok(())
    }

    /// The tenants, in config order ([`TenantId`] indexes this).
    pub fn tenants(&self) -> &[Tenant] {
        &self.tenants
    }

    /// The tenant `id`.
    ///
    /// # Panics
    /// Never for ids from the config (the tenant set does not change on reload).
    pub fn tenant(&self, id: TenantId) -> &Tenant {
        &self.tenants[id.index()]
    }

    /// The tenant named `name`.
    pub fn tenant_named(&self, name: &str) -> Option<&Tenant> {
        self.tenants.iter().find(|t| t.config.name == name)
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

    /// Drops cached entries and holds of one tenant (`None`: all) and of the given routes
    /// (`None`: all), and makes fetches already in flight for those tenants not store their
    /// answers.
    pub fn invalidate(&self, tenant: Option<TenantId>, routes: Option<&[RouteId]>) {
        match tenant {
            Some(t) => {
                self.tenant(t).generation.fetch_add(1, Ordering::SeqCst);
            }
            None => {
                for t in &self.tenants {
                    t.generation.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        self.cache.invalidate_where(tenant, routes);
    }

    /// Drops one tenant's entries and holds of resolved invalidation `group` (e.g.
    /// `records:leads`, after a successful write to it through the gateway), and makes that
    /// tenant's fetches of the group already in flight not store their answers.
    pub fn invalidate_group(&self, tenant: TenantId, group: &str) {
        let hash = crate::route::group_hash(group);
        self.tenant(tenant).group_generations[hash as usize % GROUP_STRIPES]
            .fetch_add(1, Ordering::SeqCst);
        self.cache.invalidate_group(tenant, hash);
    }

    /// Runs `fut` until `deadline` (then the gateway's 504) or until the drain stops waits
    /// (then its 503).
    pub(crate) async fn by_deadline<T>(
        &self,
        deadline: Instant,
        fut: impl std::future::Future<Output = Result<T, GatewayError>>,
    ) -> Result<T, GatewayError> {
        tokio::select! {
            r = tokio::time::timeout_at(deadline, fut) => r.unwrap_or(Err(GatewayError::UpstreamTimeout)),
            _ = self.stop_waiting.cancelled() => Err(GatewayError::ShuttingDown),
        }
    }

    /// Registers one more request waiting for a flight of `tenant`, within the gateway's and
    /// the tenant's `max_waiters`; the permit counts it until dropped.
    ///
    /// # Errors
    /// [`GatewayError::TooManyWaiters`] when either bound is reached.
    pub(crate) fn wait_permit<'a>(
        &'a self,
        tenant: &'a Tenant,
    ) -> Result<WaitPermit<'a>, GatewayError> {
        let cfg = self.config.load();
        let global = Counted::acquire(&self.waiting, cfg.max_waiters)?;
        let own = Counted::acquire(&tenant.waiting, tenant.config.max_waiters)?;
        self.metrics.coalesce_waiters.inc();
        Ok(WaitPermit {
            _global: global,
            _own: own,
            gauge: &self.metrics.coalesce_waiters,
        })
    }
}

/// One slot of a counter bounded by a maximum, released on drop.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn acquire(counter: &'a AtomicUsize, max: usize) -> Result<Self, GatewayError> {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map(|_| Counted(counter))
            .map_err(|_| GatewayError::TooManyWaiters)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request counted as waiting for a flight (also when its future is dropped mid-way).
pub(crate) struct WaitPermit<'a> {
    _global: Counted<'a>,
    _own: Counted<'a>,
    gauge: &'a prometheus::IntGauge,
}

impl Drop for WaitPermit<'_> {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// `ttl` shortened by a random 0..=`percent`% (so entries stored together expire apart).
pub(crate) fn jitter(ttl: Duration, percent: u8) -> Duration {
    if percent == 0 {
        return ttl;
    }
    let max_cut = ttl.as_millis() as u64 * u64::from(percent.min(100)) / 100;
    ttl.saturating_sub(Duration::from_millis(rand::random_range(0..=max_cut)))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn counted_slots_are_bounded_and_released() {
        let n = AtomicUsize::new(0);
        let a = Counted::acquire(&n, 2).unwrap();
        let _b = Counted::acquire(&n, 2).unwrap();
        assert!(matches!(
            Counted::acquire(&n, 2),
            Err(GatewayError::TooManyWaiters)
        ));
        drop(a);
        assert!(Counted::acquire(&n, 2).is_ok());
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }
}
