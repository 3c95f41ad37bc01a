//! Prometheus metrics, registered once into an app-owned [`Registry`] (two gateways can run in
//! one process, as the tests do).
//!
//! Names are `zoho_gateway_<subsystem>_<name>_<unit>`; labels come only from closed sets (route
//! template, [`Outcome`], status class, configured tenant name), never from paths, filter values,
//! keys or tokens. The metrics every request records (its count and duration, the credits it
//! saved, the cache tally: [`ShardedCounter`]) are sharded per thread (`metrics/shard.rs`): the
//! hot path does an array index and a few `Relaxed` adds into cache lines no other core writes,
//! no label hashing; a scrape sums the shards.

mod shard;

pub use shard::{ShardedCounter, shard_count};

use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use shard::{CreditsSaved, RequestMetrics, SavedCredits};

use crate::cache::Outcome;
use crate::credits::CreditSnapshot;
use crate::fleet::FleetMetrics;
use crate::route::RouteKind;
use crate::upstream::ZohoThrottle;

/// The `method` label: the methods the gateway routes, everything else as `other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MethodLabel {
    /// GET.
    Get,
    /// HEAD.
    Head,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
    /// Any other method.
    Other,
}

impl MethodLabel {
    /// All variants, in label order.
    pub const ALL: [MethodLabel; 7] = [
        MethodLabel::Get,
        MethodLabel::Head,
        MethodLabel::Post,
        MethodLabel::Put,
        MethodLabel::Patch,
        MethodLabel::Delete,
        MethodLabel::Other,
    ];

    /// The label of a request method.
    pub fn of(m: &http::Method) -> Self {
        match *m {
            http::Method::GET => MethodLabel::Get,
            http::Method::HEAD => MethodLabel::Head,
            http::Method::POST => MethodLabel::Post,
            http::Method::PUT => MethodLabel::Put,
            http::Method::PATCH => MethodLabel::Patch,
            http::Method::DELETE => MethodLabel::Delete,
            _ => MethodLabel::Other,
        }
    }

    /// Stable label.
    pub fn as_str(self) -> &'static str {
        match self {
            MethodLabel::Get => "GET",
            MethodLabel::Head => "HEAD",
            MethodLabel::Post => "POST",
            MethodLabel::Put => "PUT",
            MethodLabel::Patch => "PATCH",
            MethodLabel::Delete => "DELETE",
            MethodLabel::Other => "other",
        }
    }
}

/// `1xx` … `5xx` label for a status code.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn status_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// Latency buckets, seconds: resolve sub-millisecond cache hits and multi-second Zoho calls.
const DURATION_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Per-tenant counters resolved once (see [`Metrics::tenant`]).
#[derive(Clone, Debug)]
pub struct TenantMetrics {
    /// Requests in flight to Zoho.
    pub upstream_in_flight: IntGauge,
    /// Requests waiting for an upstream slot.
    pub upstream_queue_depth: IntGauge,
    /// 1 while the circuit is open or half-open.
    pub circuit_open: IntGauge,
    /// 1 while token refreshes are locked out after Zoho's throttle.
    pub token_lockout: IntGauge,
    /// Credits saved, by reason (sharded per thread).
    saved: Arc<SavedCredits>,
    /// Zoho throttling answers by code, in [`ZohoThrottle::ALL`] order (created at 0, so the
    /// first 429 shows as an increase).
    throttled: [IntCounter; 3],
    /// Requests of normal-priority clients kept from spending the credit reserve, by what they
    /// got: `[stale answer, 429]`.
    reserve: [IntCounter; 2],
}

impl TenantMetrics {
    /// Counts one throttling answer from Zoho (429, or a throttling code).
    pub fn record_throttled(&self, code: ZohoThrottle) {
        self.throttled[code as usize].inc();
    }

    /// Counts one normal-priority request kept from spending the tenant's credit reserve:
    /// answered stale (`stale`) or refused with a 429.
    pub fn record_reserve(&self, stale: bool) {
        self.reserve[usize::from(!stale)].inc();
    }

    /// Counts the Zoho credits saved by a request with this outcome (hit, stale, held,
    /// collapsed or a local rejection): `credits`, the route's cost per call. Other outcomes
    /// spent credits and count nothing.
    pub fn record_outcome(&self, outcome: Outcome, credits: u64) {
        self.saved.add(outcome, credits);
    }
}

/// Every metric of one gateway.
pub struct Metrics {
    registry: Registry,
    /// `route` label values, in [`RouteKind::index`] order (cached routes, then `passthrough`,
    /// `unmatched`).
    route_labels: Vec<String>,
    /// Client request counts and durations, sharded per thread.
    requests: RequestMetrics,
    upstream_requests: IntCounterVec,
    upstream_duration: HistogramVec,
    upstream_throttled: IntCounterVec,
    token_refreshes: IntCounterVec,
    token_expiry: IntGaugeVec,
    credits_saved: CreditsSaved,
    stale_served: IntCounterVec,
    upstream_in_flight: IntGaugeVec,
    upstream_queue_depth: IntGaugeVec,
    circuit_open: IntGaugeVec,
    token_lockout: IntGaugeVec,
    credits_spent: IntGaugeVec,
    credits_allowance: IntGaugeVec,
    credits_remaining: IntGaugeVec,
    credits_reported: IntGaugeVec,
    credits_reserve: IntGaugeVec,
    credit_reserve_applied: IntCounterVec,
    config_reloads: IntCounterVec,
    /// Cache evictions by cause (`expired`, `size`, `explicit`, `replaced`).
    pub cache_evictions: IntCounterVec,
    /// Entries currently in the cache (sampled on scrape).
    pub cache_entries: IntGauge,
    /// Weighted bytes currently in the cache (sampled on scrape).
    pub cache_bytes: IntGauge,
    /// Coalesced waiters currently waiting on a flight.
    pub coalesce_waiters: IntGauge,
    /// The fleet tier's metrics (Redis state, L2, cross-replica flights, fleet slots and
    /// tokens), registered only when `[redis]` is configured.
    pub fleet: Option<FleetMetrics>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Creates and registers every metric into a fresh registry; with `fleet`, the fleet
    /// tier's too ([`FleetMetrics`], so a single-node gateway exports no Redis series).
    ///
    /// `cache_capacity_bytes` is exported as a constant gauge.
    ///
    /// # Errors
    /// A [`prometheus::Error`] only on a programming error (duplicate names).
    /// `route_labels` are the `route` label values in [`RouteKind::index`] order
    /// ([`crate::config::GatewayConfig::route_labels`]).
    pub fn register(
        cache_capacity_bytes: u64,
        route_labels: Vec<String>,
        fleet: bool,
    ) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = RequestMetrics::new(route_labels.clone())?;
        let upstream_requests = IntCounterVec::new(
            Opts::new(
                "zoho_gateway_upstream_requests_total",
                "Requests sent to Zoho, by tenant, route and status class (`error` when no response).",
            ),
            &["tenant", "route", "status_class"],
        )?;
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "zoho_gateway_upstream_duration_seconds",
                "Duration of requests to Zoho, by tenant and route.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["tenant", "route"],
        )?;
        let upstream_throttled = IntCounterVec::new(
            Opts::new(
                "zoho_gateway_upstream_throttled_total",
                "Throttling answers from Zoho (429, or a throttling code), by tenant and Zoho error code (TOO_MANY_REQUESTS, LIMIT_EXCEEDED, other).",
            ),
            &["tenant", "code"],
        )?;
        let token_refreshes = IntCounterVec::new(
            Opts::new(
                "zoho_gateway_token_refreshes_total",
                "Access-token refresh attempts by tenant and outcome.",
            ),
            &["tenant", "outcome"],
        )?;
        let token_expiry = IntGaugeVec::new(
            Opts::new(
                "zoho_gateway_token_expiry_timestamp_seconds",
                "Unix time at which the tenant's current access token expires (0: none).",
            ),
            &["tenant"],
        )?;
        let credits_saved = CreditsSaved::new()?;
        let stale_served = IntCounterVec::new(
            Opts::new(
                "zoho_gateway_stale_served_total",
                "Stale cache entries served, by reason (stale-while-revalidate, stale-if-error, credit-reserve).",
            ),
            &["reason"],
        )?;
        let gauge = |name: &str, help: &str| IntGaugeVec::new(Opts::new(name, help), &["tenant"]);
        let upstream_in_flight = gauge(
            "zoho_gateway_upstream_in_flight",
            "Requests in flight to Zoho, per tenant (bounded by the tenant's concurrency limit).",
        )?;
        let upstream_queue_depth = gauge(
            "zoho_gateway_upstream_queue_depth",
            "Requests waiting for an upstream slot, per tenant.",
        )?;
        let circuit_open = gauge(
            "zoho_gateway_circuit_open",
            "1 while the tenant's circuit breaker is open or half-open.",
        )?;
        let token_lockout = gauge(
            "zoho_gateway_token_lockout",
            "1 while the tenant's token refreshes are locked out after Zoho's throttle.",
        )?;
        let credits_spent = gauge(
            "zoho_gateway_credits_spent_24h",
            "Zoho API credits spent through the gateway in the rolling 24 h (route credit_cost per charged call; 15-minute buckets), per tenant.",
        )?;
        let credits_allowance = gauge(
            "zoho_gateway_credits_allowance",
            "The tenant's configured daily Zoho API-credit allowance (daily_credits, or the edition formula); absent when unknown.",
        )?;
        let credits_remaining = gauge(
            "zoho_gateway_credits_remaining",
            "Zoho API credits left in the rolling 24 h as the gateway acts on them: allowance less spent, lowered to Zoho's recent X-API-CREDITS-REMAINING; absent when unknown.",
        )?;
        let credits_reported = gauge(
            "zoho_gateway_credits_reported_remaining",
            "Zoho's last X-API-CREDITS-REMAINING for the tenant, while recent (15 min); absent otherwise.",
        )?;
        let credits_reserve = gauge(
            "zoho_gateway_credits_reserve",
            "Credits kept for priority = \"high\" clients (credit_reserve); absent when none.",
        )?;
        let credit_reserve_applied = IntCounterVec::new(
            Opts::new(
                "zoho_gateway_credit_reserve_applied_total",
                "Requests of normal-priority clients kept from spending the credit reserve, by tenant and action (stale, refused).",
            ),
            &["tenant", "action"],
        )?;
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "zoho_gateway_config_reloads_total",
                "Configuration reloads (SIGHUP) by result: applied, invalid (the file did not load or validate), refused (valid but not applicable live).",
            ),
            &["result"],
        )?;
        for result in ["applied", "invalid", "refused"] {
            config_reloads.with_label_values(&[result]);
        }
        let cache_evictions = IntCounterVec::new(
            Opts::new(
                "zoho_gateway_cache_evictions_total",
                "Cache entries removed, by cause (expired, size, explicit, replaced).",
            ),
            &["cause"],
        )?;
        let cache_entries = IntGauge::new("zoho_gateway_cache_entries", "Entries in the cache.")?;
        let cache_bytes = IntGauge::new(
            "zoho_gateway_cache_weighted_bytes",
            "Weighted size of the cache entries (key + body + stored headers), bytes.",
        )?;
        let cache_capacity = IntGauge::new(
            "zoho_gateway_cache_capacity_bytes",
            "Configured bound on the cache's weighted size, bytes.",
        )?;
        cache_capacity.set(i64::try_from(cache_capacity_bytes).unwrap_or(i64::MAX));
        let coalesce_waiters = IntGauge::new(
            "zoho_gateway_coalesce_waiters",
            "Requests currently waiting on another request's upstream call.",
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new("zoho_gateway_build_info", "Build information; always 1."),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(upstream_requests.clone()))?;
        registry.register(Box::new(upstream_duration.clone()))?;
        registry.register(Box::new(upstream_throttled.clone()))?;
        registry.register(Box::new(token_refreshes.clone()))?;
        registry.register(Box::new(token_expiry.clone()))?;
        registry.register(Box::new(credits_saved.clone()))?;
        registry.register(Box::new(stale_served.clone()))?;
        registry.register(Box::new(upstream_in_flight.clone()))?;
        registry.register(Box::new(upstream_queue_depth.clone()))?;
        registry.register(Box::new(circuit_open.clone()))?;
        registry.register(Box::new(token_lockout.clone()))?;
        registry.register(Box::new(credits_spent.clone()))?;
        registry.register(Box::new(credits_allowance.clone()))?;
        registry.register(Box::new(credits_remaining.clone()))?;
        registry.register(Box::new(credits_reported.clone()))?;
        registry.register(Box::new(credits_reserve.clone()))?;
        registry.register(Box::new(credit_reserve_applied.clone()))?;
        registry.register(Box::new(config_reloads.clone()))?;
        registry.register(Box::new(cache_evictions.clone()))?;
        registry.register(Box::new(cache_entries.clone()))?;
        registry.register(Box::new(cache_bytes.clone()))?;
        registry.register(Box::new(cache_capacity))?;
        registry.register(Box::new(coalesce_waiters.clone()))?;
        registry.register(Box::new(build_info))?;
        let fleet = if fleet {
            Some(FleetMetrics::register(&registry)?)
        } else {
            None
        };
        Ok(Metrics {
            registry,
            route_labels,
            requests,
            upstream_requests,
            upstream_duration,
            upstream_throttled,
            token_refreshes,
            token_expiry,
            credits_saved,
            stale_served,
            upstream_in_flight,
            upstream_queue_depth,
            circuit_open,
            token_lockout,
            credits_spent,
            credits_allowance,
            credits_remaining,
            credits_reported,
            credits_reserve,
            credit_reserve_applied,
            config_reloads,
            cache_evictions,
            cache_entries,
            cache_bytes,
            coalesce_waiters,
            fleet,
        })
    }

    /// Records one finished client request (called exactly once per request): a count and a
    /// duration, added into the calling thread's shard.
    pub fn record_request(
        &self,
        method: &http::Method,
        route: RouteKind,
        outcome: Outcome,
        status: u16,
        took: Duration,
    ) {
        let route = route.index(self.route_labels.len() - 2);
        self.requests.record(
            MethodLabel::of(method),
            route,
            outcome,
            status_index(status),
            took,
        );
    }

    /// The `route` label of `route`.
    pub fn route_label(&self, route: RouteKind) -> &str {
        &self.route_labels[route.index(self.route_labels.len() - 2)]
    }

    /// Records one upstream request; `status` is `None` when no response arrived.
    pub fn record_upstream(
        &self,
        tenant: &str,
        route: RouteKind,
        status: Option<u16>,
        took: Duration,
    ) {
        let class = status.map_or("error", status_class);
        let route = self.route_label(route);
        self.upstream_requests
            .with_label_values(&[tenant, route, class])
            .inc();
        self.upstream_duration
            .with_label_values(&[tenant, route])
            .observe(took.as_secs_f64());
    }

    /// Records a token refresh attempt (`outcome`: `success` or a [`crate::error::TokenFailure`] label).
    pub fn record_token_refresh(&self, tenant: &str, outcome: &str) {
        self.token_refreshes
            .with_label_values(&[tenant, outcome])
            .inc();
    }

    /// Sets the tenant's current token expiry as Unix seconds.
    pub fn set_token_expiry(&self, tenant: &str, unix_secs: i64) {
        self.token_expiry
            .with_label_values(&[tenant])
            .set(unix_secs);
    }

    /// Pre-resolved per-tenant handles, so the hot path does not hash labels.
    pub fn tenant(&self, tenant: &str) -> TenantMetrics {
        TenantMetrics {
            upstream_in_flight: self.upstream_in_flight.with_label_values(&[tenant]),
            upstream_queue_depth: self.upstream_queue_depth.with_label_values(&[tenant]),
            circuit_open: self.circuit_open.with_label_values(&[tenant]),
            token_lockout: self.token_lockout.with_label_values(&[tenant]),
            saved: self.credits_saved.tenant(tenant),
            throttled: ZohoThrottle::ALL.map(|c| {
                self.upstream_throttled
                    .with_label_values(&[tenant, c.as_str()])
            }),
            reserve: ["stale", "refused"].map(|action| {
                self.credit_reserve_applied
                    .with_label_values(&[tenant, action])
            }),
        }
    }

    /// Sets the tenant's credit gauges (sampled at scrape: the window slides with time). A
    /// figure that is unknown has no series.
    pub fn set_credits(&self, tenant: &str, snap: CreditSnapshot, reserve: Option<u64>) {
        let set = |vec: &IntGaugeVec, v: Option<u64>| match v {
            Some(v) => vec
                .with_label_values(&[tenant])
                .set(i64::try_from(v).unwrap_or(i64::MAX)),
            None => {
                let _ = vec.remove_label_values(&[tenant]);
            }
        };
        set(&self.credits_spent, Some(snap.spent));
        set(&self.credits_allowance, snap.allowance);
        set(&self.credits_remaining, snap.remaining);
        set(&self.credits_reported, snap.reported);
        set(&self.credits_reserve, reserve);
    }

    /// Drops a removed tenant's gauges (in flight, queue, circuit, lockout, token expiry,
    /// credits), so no alert keeps firing on a tenant that is gone. Its counters stay: they
    /// stop increasing, and `rate()` over them falls to zero.
    pub fn forget_tenant(&self, tenant: &str) {
        for vec in [
            &self.upstream_in_flight,
            &self.upstream_queue_depth,
            &self.circuit_open,
            &self.token_lockout,
            &self.token_expiry,
            &self.credits_spent,
            &self.credits_allowance,
            &self.credits_remaining,
            &self.credits_reported,
            &self.credits_reserve,
        ] {
            let _ = vec.remove_label_values(&[tenant]);
        }
    }

    /// Counts one configuration reload (`result`: `applied`, `invalid`, `refused`).
    pub fn record_reload(&self, result: &str) {
        self.config_reloads.with_label_values(&[result]).inc();
    }

    /// Counts one stale entry served (`reason`: `stale-while-revalidate`, `stale-if-error` or
    /// `credit-reserve`).
    pub fn record_stale_served(&self, reason: &'static str) {
        self.stale_served.with_label_values(&[reason]).inc();
    }

    /// Renders the Prometheus text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}
