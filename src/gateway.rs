//! The shared state of one running gateway: configuration, tenants (token manager, limits,
//! breaker, credit ledger, invalidation generation), the cache, the single-flight table, the
//! upstream client, metrics, the clock and, with `[redis]`, the fleet tier ([`Fleet`]). The
//! request path over it is `proxy`; the admin API reads it.
//!
//! **Live tenant changes** ([`Gateway::reload`]): tenants live in a table of slots indexed by
//! their stable [`TenantId`], swapped as a whole. A request resolves its tenant by id each time
//! it needs it, so:
//!
//! - an **added** tenant gets the next unused id, its token manager and its refresh task;
//! - a **removed** tenant's keys stop authenticating at once (the new config has none), while
//!   its requests already past authentication finish: its slot keeps the retired tenant. Its
//!   cache entries and holds are dropped, fetches in flight do not store, its refresh task
//!   ends and its gauges leave `/metrics`. Ids are never reused, so a retired slot (a few
//!   hundred bytes and its last access token until that expires) stays until restart; after
//!   65,536 tenants ever configured a reload that adds one is refused.
//! - a **changed** tenant gets a successor in its slot, sharing what the change does not
//!   touch: the concurrency limit unless `max_concurrency` / `queue_*` changed (a new limit
//!   lets the old one's calls finish, so for a moment both count), the circuit breaker unless
//!   its settings or the host changed, the token manager unless the credentials (client id,
//!   secret, refresh token, accounts host) or the token settings changed. **New credentials
//!   get a fresh token** (a new manager that keeps the tenant's recent grant attempts, so
//!   reloads never spend more than the grant budget: [`TokenManager::with_credentials`]), and
//!   **drop the tenant's cache entries**, as does a new API host or pass-through
//!   HMAC key: the tenant may now be another Zoho user or organisation, whose answers can
//!   differ. The credit ledger, the waiter count and the invalidation generation always carry
//!   over.
//! - **unchanged** tenants keep their state object itself: no entry, token or in-flight
//!   request of theirs notices the reload.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cache::ResponseCache;
use crate::canonical::CacheKey;
use crate::clock::Clock;
use crate::coalesce::SingleFlight;
use crate::config::{GatewayConfig, TenantConfig, TenantId};
use crate::credits::CreditLedger;
use crate::error::GatewayError;
use crate::fleet::generation::Scope;
use crate::fleet::{Fleet, FleetEvent, FleetSetupError};
use crate::metrics::{Metrics, ShardedCounter, TenantMetrics};
use crate::proxy::FetchResult;
use crate::route::RouteId;
use crate::token::TokenManager;
use crate::upstream::Upstream;
use crate::upstream::breaker::CircuitBreaker;
use crate::upstream::limit::ConcurrencyLimit;

/// Runtime state of one tenant (one version of it: a reload that changes the tenant puts a
/// successor in its slot, see the module doc).
#[derive(Debug)]
pub struct Tenant {
    /// Its handle.
    pub id: TenantId,
    /// Validated configuration.
    pub config: Arc<TenantConfig>,
    /// [`TenantConfig::identity_scope`] of `config`, computed once: the tenant part of its
    /// cache keys.
    pub(crate) cache_scope: Box<str>,
    /// Its token manager.
    pub tokens: Arc<TokenManager>,
    pub(crate) metrics: TenantMetrics,
    pub(crate) limit: Arc<ConcurrencyLimit>,
    /// With a fleet tier: this replica's share of the limit (`redis.fallback_share_percent`),
    /// taken behind `limit` while Redis is unavailable, so N replicas on their own stay near
    /// Zoho's limit. While Redis is available the fleet-wide slots are taken instead.
    pub(crate) fallback_limit: Option<Arc<ConcurrencyLimit>>,
    pub(crate) breaker: Arc<CircuitBreaker>,
    /// Credits spent in the rolling 24 h and Zoho's last report of what remains.
    pub(crate) credits: Arc<CreditLedger>,
    /// Requests of this tenant waiting for a flight (bounded by `max_waiters`).
    pub(crate) waiting: Arc<AtomicUsize>,
    /// Bumped by every invalidation of all this tenant's entries (of some routes, or all); a
    /// fetch that started under an older generation does not store its answer (it may predate
    /// the change).
    generation: Arc<AtomicU64>,
    /// The same per invalidation group, striped: a write to group `g` bumps stripe
    /// `g % GROUP_STRIPES`, so fetches of other groups (bar a shared stripe) still store.
    group_generations: Arc<[AtomicU64; GROUP_STRIPES]>,
    /// Ends the token manager's refresh-ahead task (the tenant removed, its manager replaced,
    /// or shutdown).
    stop: CancellationToken,
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

    /// A first version of tenant `id`.
    fn new(id: TenantId, config: Arc<TenantConfig>, gw: &Parts<'_>) -> Self {
        let tm = gw.metrics.tenant(&config.name);
        Tenant {
            id,
            limit: Arc::new(limit(&config, &tm)),
            fallback_limit: fallback_limit(&config, gw.fleet),
            breaker: Arc::new(breaker(&config, &tm, gw.clock)),
            tokens: Arc::new(TokenManager::new(
                config.clone(),
                gw.upstream.clone(),
                gw.metrics.clone(),
                gw.clock.clone(),
                gw.fleet.cloned(),
            )),
            credits: Arc::new(CreditLedger::new(gw.clock.clone())),
            metrics: tm,
            cache_scope: config.identity_scope().into(),
            config,
            waiting: Arc::new(AtomicUsize::new(0)),
            generation: Arc::new(AtomicU64::new(0)),
            group_generations: Arc::new(std::array::from_fn(|_| AtomicU64::new(0))),
            stop: gw.background.child_token(),
        }
    }

    /// The version of this tenant for `config` (same name), and what changed.
    fn successor(&self, config: Arc<TenantConfig>, gw: &Parts<'_>) -> (Tenant, Change) {
        let (old, new) = (&*self.config, &*config);
        let credentials = old.client_id != new.client_id
            || old.client_secret != new.client_secret
            || old.refresh_token != new.refresh_token
            || old.token_url != new.token_url;
        let change = Change {
            identity: credentials
                || old.api_base != new.api_base
                || old.pass_through_hmac != new.pass_through_hmac,
            tokens: credentials
                || old.refresh_margin != new.refresh_margin
                || old.token_timeout != new.token_timeout
                || old.refresh_budget != new.refresh_budget
                || old.refresh_window != new.refresh_window
                || old.throttle_lockout != new.throttle_lockout
                || old.token_state_file != new.token_state_file,
        };
        let limit_same = (old.max_concurrency, old.queue_limit, old.queue_timeout)
            == (new.max_concurrency, new.queue_limit, new.queue_timeout);
        let breaker_same = (old.breaker_failures, old.breaker_cool_down, &old.api_base)
            == (new.breaker_failures, new.breaker_cool_down, &new.api_base);
        let tokens = if credentials {
            // New credentials get a fresh token but keep the tenant's grant budget.
            Arc::new(self.tokens.with_credentials(config.clone()))
        } else if change.tokens {
            Arc::new(self.tokens.with_settings(config.clone()))
        } else {
            self.tokens.clone()
        };
        let next = Tenant {
            id: self.id,
            limit: if limit_same {
                self.limit.clone()
            } else {
                Arc::new(limit(new, &self.metrics))
            },
            fallback_limit: if limit_same {
                self.fallback_limit.clone()
            } else {
                fallback_limit(new, gw.fleet)
            },
            breaker: if breaker_same {
                self.breaker.clone()
            } else {
                Arc::new(breaker(new, &self.metrics, gw.clock))
            },
            tokens,
            credits: self.credits.clone(),
            metrics: self.metrics.clone(),
            cache_scope: config.identity_scope().into(),
            config,
            waiting: self.waiting.clone(),
            generation: self.generation.clone(),
            group_generations: self.group_generations.clone(),
            stop: if change.tokens {
                gw.background.child_token()
            } else {
                self.stop.clone()
            },
        };
        (next, change)
    }

    /// Whether the gateway manages this tenant's tokens (not pass-through).
    fn managed(&self) -> bool {
        self.config.pass_through_hmac.is_none()
    }
}

fn limit(t: &TenantConfig, tm: &TenantMetrics) -> ConcurrencyLimit {
    ConcurrencyLimit::new(
        t.max_concurrency,
        t.queue_limit,
        t.queue_timeout,
        tm.upstream_in_flight.clone(),
        tm.upstream_queue_depth.clone(),
    )
}

/// This replica's share of `t`'s limit while Redis is unavailable (with a fleet tier). Its
/// gauges are unregistered: the tenant's `limit` already reports in-flight and queue.
fn fallback_limit(t: &TenantConfig, fleet: Option<&Arc<Fleet>>) -> Option<Arc<ConcurrencyLimit>> {
    let fleet = fleet?;
    let gauge = |name: &str| {
        prometheus::IntGauge::new(name, "unregistered").expect("a constant metric name is valid")
    };
    Some(Arc::new(ConcurrencyLimit::new(
        fleet.config().fallback_share(t.max_concurrency),
        t.queue_limit,
        t.queue_timeout,
        gauge("fallback_in_flight"),
        gauge("fallback_queue"),
    )))
}

fn breaker(t: &TenantConfig, tm: &TenantMetrics, clock: &Clock) -> CircuitBreaker {
    CircuitBreaker::new(
        t.breaker_failures,
        t.breaker_cool_down,
        clock.clone(),
        tm.circuit_open.clone(),
    )
}

/// What a tenant's successor does not share with its predecessor.
#[derive(Clone, Copy, Debug, Default)]
struct Change {
    /// Credentials, API host or pass-through key: the cache entries go.
    identity: bool,
    /// A new token manager (credentials or token settings): a new refresh task.
    tokens: bool,
}

/// What building tenants needs from the gateway.
struct Parts<'a> {
    upstream: &'a Upstream,
    metrics: &'a Arc<Metrics>,
    clock: &'a Clock,
    background: &'a CancellationToken,
    fleet: Option<&'a Arc<Fleet>>,
}

/// The tenants by id: live ones and retired ones (removed by a reload; kept so that requests
/// and flights already under way resolve them). Swapped as a whole.
#[derive(Debug, Default)]
struct TenantTable {
    /// Indexed by [`TenantId`]; ids are handed out in order and never reused.
    slots: Vec<Arc<Tenant>>,
    /// The live tenants' ids, in config order.
    live: Vec<TenantId>,
}

/// A tenant borrowed from the live table ([`Gateway::tenant_ref`]); derefs to the [`Tenant`].
pub(crate) struct TenantRef {
    table: arc_swap::Guard<Arc<TenantTable>>,
    index: usize,
}

impl std::ops::Deref for TenantRef {
    type Target = Tenant;

    fn deref(&self) -> &Tenant {
        &self.table.slots[self.index]
    }
}

/// Hit/miss tallies for `GET /admin/cache`. Hits and misses are counted on every request, so
/// they are sharded per thread (a read sums the shards).
#[derive(Debug, Default)]
pub struct CacheTally {
    /// Requests answered from the cache (fresh or stale).
    pub hits: ShardedCounter,
    /// Requests that needed an upstream answer (led or joined a flight).
    pub misses: ShardedCounter,
    /// Answers stored in the cache.
    pub stores: AtomicU64,
}

/// Why [`Gateway::reload`] refused a new configuration (the old one stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file did not load or validate.
    #[error("invalid configuration")]
    Invalid(#[source] crate::config::ConfigError),
    /// The set of cached routes (names or order) differs.
    #[error("the set of cached routes changed: restart to apply")]
    RoutesChanged,
    /// Settings that only a restart applies differ (their keys, in file order; see
    /// [`GatewayConfig::restart_only_changes`]). Nothing of the new file is applied.
    #[error("{} changed: only a restart applies that, so nothing was applied (restart, or put the old value back)", .0.join(", "))]
    RestartRequired(Vec<&'static str>),
    /// Every [`TenantId`] has been handed out (65,536 tenants over the process's life).
    #[error("no tenant id left for a new tenant: restart to apply")]
    TooManyTenants,
}

impl ReloadError {
    /// The `result` label of `zoho_gateway_config_reloads_total`.
    pub fn result(&self) -> &'static str {
        match self {
            ReloadError::Invalid(_) => "invalid",
            ReloadError::RoutesChanged
            | ReloadError::RestartRequired(_)
            | ReloadError::TooManyTenants => "refused",
        }
    }
}

/// What a reload changed, by tenant name (for the log line).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Tenants new in this config.
    pub added: Vec<String>,
    /// Tenants no longer configured.
    pub removed: Vec<String>,
    /// Tenants whose settings changed.
    pub changed: Vec<String>,
    /// Of `changed`, those whose credentials, API host or pass-through key changed (their
    /// cache entries were dropped).
    pub new_identity: Vec<String>,
}

/// Shared state of one running gateway.
#[derive(Debug)]
pub struct Gateway {
    pub(crate) config: ArcSwap<GatewayConfig>,
    tenants: ArcSwap<TenantTable>,
    /// Reloads one at a time.
    reload_lock: std::sync::Mutex<()>,
    /// Parent of every tenant's `stop`: cancelled at shutdown.
    background: CancellationToken,
    /// The tenants' refresh-ahead tasks.
    tasks: TaskTracker,
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
    /// Bumped after every reload has stored its config and tenants: what the per-thread memo
    /// of hot requests (`proxy::hot`) was filled under.
    pub(crate) generation: AtomicU64,
}

impl Gateway {
    /// Builds the gateway state (no I/O; [`Gateway::start_tenant_tasks`] starts the token
    /// refreshers; with `[redis]`, the fleet tier connects when [`Gateway::run_fleet`] runs).
    /// `config` is fresh from validation (its tenant ids are their positions). `metrics` must
    /// have been registered with the fleet's metrics when `[redis]` is configured.
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
        let background = CancellationToken::new();
        let parts = Parts {
            upstream: &upstream,
            metrics: &metrics,
            clock: &clock,
            background: &background,
            fleet: fleet.as_ref(),
        };
        // Fresh from validation a tenant's id is its position; slots are indexed by position
        // here whatever the config says, so a table is always consistent.
        let slots: Vec<Arc<Tenant>> = config
            .tenants
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let id = TenantId(i as u16);
                Arc::new(Tenant::new(
                    id,
                    Arc::new(TenantConfig { id, ..t.clone() }),
                    &parts,
                ))
            })
            .collect();
        let table = TenantTable {
            live: slots.iter().map(|t| t.id).collect(),
            slots,
        };
        Ok(Gateway {
            cache: ResponseCache::with_keep(
                config.cache_max_bytes,
                Some(metrics.cache_evictions.clone()),
                config.redis.as_ref().and_then(|r| r.l1_ttl),
            ),
            flights: Arc::new(SingleFlight::new()),
            config: ArcSwap::new(config),
            tenants: ArcSwap::from_pointee(table),
            reload_lock: std::sync::Mutex::new(()),
            background,
            tasks: TaskTracker::new(),
            upstream,
            metrics,
            clock,
            tally: CacheTally::default(),
            waiting: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            stop_waiting: tokio_util::sync::CancellationToken::new(),
            fleet,
            generation: AtomicU64::new(0),
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
            let name = self.tenant(tenant).config.name.clone();
            let scope = Scope {
                tenant: &name,
                group,
            };
            let _ = fleet.invalidate(scope).await;
        }
    }

    /// [`Gateway::invalidate`] here, and with a fleet tier on every replica and in L2 (an
    /// admin purge; see [`Fleet::purge`]), for one tenant (`None`: all) and some routes
    /// (`None`: all). Returns how many of this replica's cached entries matched just before
    /// they were dropped ([`ResponseCache::count_where`]; holds, L2 and other replicas not
    /// counted).
    pub async fn purge_everywhere(
        &self,
        tenant: Option<TenantId>,
        routes: Option<&[RouteId]>,
    ) -> u64 {
        let matched = self.cache.count_where(tenant, routes);
        self.invalidate(tenant, routes);
        let Some(fleet) = &self.fleet else {
            return matched;
        };
        let cfg = self.config();
        let names: Option<Vec<&str>> = routes.map(|routes| {
            cfg.route_names()
                .filter(|(id, _)| routes.contains(id))
                .map(|(_, n)| n)
                .collect()
        });
        for t in self
            .tenants()
            .iter()
            .filter(|t| tenant.is_none_or(|id| id == t.id))
        {
            match &names {
                None => {
                    let _ = fleet.purge(&t.config.name, None).await;
                }
                Some(names) => {
                    for name in names {
                        let _ = fleet.purge(&t.config.name, Some(name)).await;
                    }
                }
            }
        }
        matched
    }

    /// Starts the refresh-ahead task of every live tenant with gateway-managed tokens (call
    /// once, inside the runtime).
    pub fn start_tenant_tasks(&self) {
        for t in self.tenants() {
            self.start_refresher(&t);
        }
    }

    fn start_refresher(&self, t: &Tenant) {
        // Pass-through tenants use their clients' tokens: nothing to refresh.
        if t.managed() {
            self.tasks
                .spawn(t.tokens.clone().run_refresh_ahead(t.stop.clone()));
        }
    }

    /// Stops the tenants' background tasks and waits for them (a refresh under way finishes
    /// within its `token_timeout`, see [`TokenManager::run_refresh_ahead`]).
    pub async fn stop_tenant_tasks(&self) {
        self.background.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// The current configuration (replaced as a whole by [`Gateway::reload`]).
    pub fn config(&self) -> Arc<GatewayConfig> {
        self.config.load_full()
    }

    /// The current configuration as a short-lived guard: no reference count is touched (a
    /// shared counter every worker would write on every request), so this is what the request
    /// path loads once per request. Hold it for one request at most.
    pub(crate) fn config_guard(&self) -> arc_swap::Guard<Arc<GatewayConfig>> {
        self.config.load()
    }

    /// Applies a new configuration without dropping the cache: TTLs and staleness windows,
    /// route policies (parameter schemas, versions, pass-through allowlist), client keys,
    /// request limits, the admin token, and tenants added, removed or changed (see the module
    /// doc for what each keeps) take effect for the next request. Listeners, the cache bound,
    /// the upstream client, logging and `[redis]` need a restart: a new config that changes
    /// any of them is refused as a whole ([`GatewayConfig::restart_only_changes`]).
    ///
    /// # Errors
    /// [`ReloadError`] when a restart-only setting or the set of cached routes differs, or no
    /// tenant id is left: the old config stays.
    pub fn reload(&self, mut new: GatewayConfig) -> Result<ReloadSummary, ReloadError> {
        let _one_at_a_time = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.config.load_full();
        let restart = old.restart_only_changes(&new);
        if !restart.is_empty() {
            return Err(ReloadError::RestartRequired(restart));
        }
        let routes =
            |c: &GatewayConfig| c.routes.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
        if routes(&old) != routes(&new) {
            return Err(ReloadError::RoutesChanged);
        }
        let table = self.tenants.load_full();
        let live: HashMap<&str, TenantId> = table
            .live
            .iter()
            .map(|id| (table.slots[id.index()].config.name.as_str(), *id))
            .collect();
        let added = new
            .tenants
            .iter()
            .filter(|t| !live.contains_key(t.name.as_str()))
            .count();
        if table.slots.len() + added > usize::from(u16::MAX) + 1 {
            return Err(ReloadError::TooManyTenants);
        }
        let mut next = table.slots.len();
        new.assign_tenant_ids(|name| {
            live.get(name).copied().unwrap_or_else(|| {
                next += 1;
                TenantId((next - 1) as u16)
            })
        });

        let parts = Parts {
            upstream: &self.upstream,
            metrics: &self.metrics,
            clock: &self.clock,
            background: &self.background,
            fleet: self.fleet.as_ref(),
        };
        let mut slots = table.slots.clone();
        let mut summary = ReloadSummary::default();
        let mut start = Vec::new();
        let mut replaced = Vec::new();
        for t in &new.tenants {
            let id = t.id;
            let Some(current) = slots.get(id.index()) else {
                let fresh = Arc::new(Tenant::new(id, Arc::new(t.clone()), &parts));
                summary.added.push(t.name.clone());
                start.push(fresh.clone());
                slots.push(fresh);
                continue;
            };
            if *current.config == *t {
                continue;
            }
            let (next, change) = current.successor(Arc::new(t.clone()), &parts);
            let next = Arc::new(next);
            summary.changed.push(t.name.clone());
            if change.identity {
                summary.new_identity.push(t.name.clone());
            }
            if change.tokens {
                replaced.push(current.clone());
                start.push(next.clone());
            }
            slots[id.index()] = next;
        }
        let removed: Vec<Arc<Tenant>> = table
            .live
            .iter()
            .filter(|id| !new.tenants.iter().any(|t| t.id == **id))
            .map(|id| table.slots[id.index()].clone())
            .collect();
        summary.removed = removed.iter().map(|t| t.config.name.clone()).collect();

        // The table first: every id the new config's clients name must resolve.
        self.tenants.store(Arc::new(TenantTable {
            slots,
            live: new.tenants.iter().map(|t| t.id).collect(),
        }));
        self.config.store(Arc::new(new));
        self.generation.fetch_add(1, Ordering::Release);

        for t in &removed {
            t.stop.cancel();
            self.invalidate(Some(t.id), None);
            self.metrics.forget_tenant(&t.config.name);
        }
        for t in &replaced {
            t.stop.cancel();
        }
        for name in &summary.new_identity {
            if let Some(t) = self.tenant_named(name) {
                self.invalidate(Some(t.id), None);
            }
        }
        for t in &start {
            self.start_refresher(t);
        }
        Ok(summary)
    }

    /// The live tenants, in config order.
    pub fn tenants(&self) -> Vec<Arc<Tenant>> {
        let table = self.tenants.load();
        table
            .live
            .iter()
            .map(|id| table.slots[id.index()].clone())
            .collect()
    }

    /// The tenant `id`: live, or retired by a reload (its requests and flights under way
    /// still resolve it).
    ///
    /// # Panics
    /// Never for ids from this gateway's config (ids are handed out by the table, and its
    /// slots are never removed).
    pub fn tenant(&self, id: TenantId) -> Arc<Tenant> {
        self.tenants.load().slots[id.index()].clone()
    }

    /// [`Gateway::tenant`] as a short-lived guard, for the request path: no reference count is
    /// touched (see [`Gateway::config_guard`]). Hold it for one request at most.
    pub(crate) fn tenant_ref(&self, id: TenantId) -> TenantRef {
        TenantRef {
            table: self.tenants.load(),
            index: id.index(),
        }
    }

    /// The live tenant named `name`.
    pub fn tenant_named(&self, name: &str) -> Option<Arc<Tenant>> {
        self.tenants().into_iter().find(|t| t.config.name == name)
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
                for t in self.tenants() {
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
