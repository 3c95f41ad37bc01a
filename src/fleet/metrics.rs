//! Fleet metrics, registered into the app's registry (labels from closed sets only: operation,
//! cause, result, configured tenant name).

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use super::{Availability, Op};

/// Counters and gauges of the fleet tier.
#[derive(Clone, Debug)]
pub struct FleetMetrics {
    /// `zoho_gateway_redis_up`: 1 while this replica coordinates through Redis.
    pub up: IntGauge,
    /// `zoho_gateway_redis_transitions_total{to}`: availability changes.
    pub transitions: IntCounterVec,
    /// `zoho_gateway_redis_errors_total{op,cause}`: operations that failed (`error`, `timeout`).
    pub errors: IntCounterVec,
    /// `zoho_gateway_fleet_l2_lookups_total{result}`: `hit`, `miss`, `superseded` (entry of an
    /// older generation).
    pub l2_lookups: IntCounterVec,
    /// `zoho_gateway_fleet_l2_stores_total{result}`: `stored`, `superseded` (a write happened
    /// since the fetch began: not stored).
    pub l2_stores: IntCounterVec,
    /// `zoho_gateway_fleet_flights_total{result}`: `owner`, `waited` (answer from another
    /// replica's call), `took_over` (owner died), `owner_failed`, `timeout`, `unavailable`.
    pub flights: IntCounterVec,
    /// `zoho_gateway_fleet_slots_total{result}`: `acquired`, `waited`, `timeout`, `unavailable`.
    pub slots: IntCounterVec,
    /// `zoho_gateway_fleet_token_total{tenant,result}`: `adopted` (another replica's token),
    /// `granted` (this replica's grant), `refused` (fleet budget or lockout), `failed`.
    pub tokens: IntCounterVec,
    /// `zoho_gateway_fleet_token_lease_holder{tenant}`: 1 while this replica holds the tenant's
    /// refresh lease.
    pub token_lease_holder: IntGaugeVec,
}

impl FleetMetrics {
    /// Creates and registers every fleet metric.
    ///
    /// # Errors
    /// A registration conflict (a bug: registered twice into one registry).
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let up = IntGauge::new(
            "zoho_gateway_redis_up",
            "1 while this replica coordinates through Redis, 0 while it falls back to local behaviour",
        )?;
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels)
        };
        let transitions = counter(
            "zoho_gateway_redis_transitions_total",
            "Changes of this replica's view of Redis, by new state",
            &["to"],
        )?;
        let errors = counter(
            "zoho_gateway_redis_errors_total",
            "Redis operations that failed or timed out",
            &["op", "cause"],
        )?;
        let l2_lookups = counter(
            "zoho_gateway_fleet_l2_lookups_total",
            "L2 (Redis) cache lookups after an L1 miss, by result",
            &["result"],
        )?;
        let l2_stores = counter(
            "zoho_gateway_fleet_l2_stores_total",
            "L2 (Redis) cache stores, by result",
            &["result"],
        )?;
        let flights = counter(
            "zoho_gateway_fleet_flights_total",
            "Cross-replica single-flight outcomes",
            &["result"],
        )?;
        let slots = counter(
            "zoho_gateway_fleet_slots_total",
            "Fleet-wide concurrency slot acquisitions, by result",
            &["result"],
        )?;
        let tokens = counter(
            "zoho_gateway_fleet_token_total",
            "Fleet token refresh outcomes, by tenant and result",
            &["tenant", "result"],
        )?;
        let token_lease_holder = IntGaugeVec::new(
            Opts::new(
                "zoho_gateway_fleet_token_lease_holder",
                "1 while this replica holds the tenant's token-refresh lease",
            ),
            &["tenant"],
        )?;
        registry.register(Box::new(up.clone()))?;
        registry.register(Box::new(transitions.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(l2_lookups.clone()))?;
        registry.register(Box::new(l2_stores.clone()))?;
        registry.register(Box::new(flights.clone()))?;
        registry.register(Box::new(slots.clone()))?;
        registry.register(Box::new(tokens.clone()))?;
        registry.register(Box::new(token_lease_holder.clone()))?;
        // Series that alerts and dashboards rely on exist from the start.
        for to in [Availability::Available, Availability::Unavailable] {
            transitions.with_label_values(&[to.as_str()]);
        }
        for op in Op::ALL {
            for cause in ["error", "timeout"] {
                errors.with_label_values(&[op.as_str(), cause]);
            }
        }
        Ok(FleetMetrics {
            up,
            transitions,
            errors,
            l2_lookups,
            l2_stores,
            flights,
            slots,
            tokens,
            token_lease_holder,
        })
    }

    pub(super) fn error(&self, op: Op, cause: &'static str) {
        self.errors.with_label_values(&[op.as_str(), cause]).inc();
    }

    pub(super) fn transition(&self, to: Availability) {
        self.up.set(i64::from(to == Availability::Available));
        self.transitions.with_label_values(&[to.as_str()]).inc();
    }
}
