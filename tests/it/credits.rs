//! Zoho's daily credit budget: the gauges after known traffic equal the simulator's charged
//! calls weighted by each route's `credit_cost` and slide out of the rolling 24 h; Zoho's
//! `X-API-CREDITS-REMAINING` is kept; under `credit_reserve` a normal key is served stale or
//! refused (429 with `Retry-After`) while a `priority = "high"` key is served fresh.

use std::time::Duration;

use crate::support::*;
use zoho_crm_simulator::{SimConfig, SimRoute};
use zoho_gateway::canonical::{ParamKind, ParamSchema, ParamSpec, UnknownParams};
use zoho_gateway::route::{PathTemplate, RoutePolicy};

const HIGH_KEY: &str = "high-priority-key";
const HIGH_CLIENT: &str =
    "[clients.hi]\ntenant = \"a\"\nkey = \"high-priority-key\"\npriority = \"high\"";
const LIST: &str = "/crm/v7/settings/user_groups";

/// `GET /crm/{version}/settings/user_groups` as a cached route costing 3 credits a call.
fn list_route(count: &RoutePolicy) -> RoutePolicy {
    RoutePolicy {
        name: "user_groups".to_owned(),
        template: PathTemplate::parse("/crm/{version}/settings/user_groups").unwrap(),
        schema: ParamSchema::new(
            vec![ParamSpec::new(
                "per_page",
                ParamKind::Integer {
                    default: Some(200),
                    min: 1,
                    max: 200,
                },
            )],
            UnknownParams::Reject,
        )
        .unwrap(),
        credit_cost: 3,
        ..count.clone()
    }
}

fn credits(m: &Metrics, name: &str) -> Option<f64> {
    m.get(name, &[("tenant", "a")])
}

#[tokio::test]
async fn gauges_equal_the_charged_calls_weighted_by_route_cost() {
    let h = Harness::start_configured(SimConfig::default(), |url| {
        let mut cfg = gateway_config_with(
            url,
            Extra {
                tenant_a: "daily_credits = 1000",
                rest: "[upstream]\nmax_retries = 1\nretry_base_delay = \"1ms\"",
                ..Extra::default()
            },
        );
        let list = list_route(&cfg.routes[0]);
        cfg.routes.push(list);
        cfg
    })
    .await;
    // Count route: three questions (one asked twice more, hits), one of them first failing
    // once with a 500 (Zoho charges that attempt too) and retried.
    for n in 1..=3 {
        if n == 3 {
            h.sim().fail_next(1, 500);
        }
        assert_eq!(h.get(&starts_with("Tier", n)).await.status, 200);
    }
    for _ in 0..2 {
        assert!(
            h.get(&starts_with("Tier", 1))
                .await
                .cache_status()
                .contains("hit")
        );
    }
    // List route: two pages, one asked again (a hit).
    for q in ["?per_page=1", "?per_page=2", "?per_page=1"] {
        assert_eq!(h.get(&format!("{LIST}{q}")).await.status, 200);
    }
    // Tenant b's traffic is b's.
    let b = h
        .client
        .get(
            &h.url(&starts_with("Sales", 1)),
            &[("x-gateway-key", KEY_B)],
        )
        .await;
    assert_eq!(b.status, 200);

    let sim = h.sim();
    let count_calls = sim.calls(SimRoute::AssociatedUsersCount);
    let list_calls = sim.calls(SimRoute::ListUserGroups);
    assert_eq!((count_calls, list_calls), (5, 2), "4 + 1 retry; 2");
    assert_eq!(
        sim.credits_used(),
        count_calls + list_calls,
        "every call charged"
    );
    let a_spent = (count_calls - 1) + 3 * list_calls;

    let m = h.metrics().await;
    assert_eq!(
        credits(&m, "zoho_gateway_credits_spent_24h"),
        Some(a_spent as f64),
        "{m}"
    );
    assert_eq!(credits(&m, "zoho_gateway_credits_allowance"), Some(1000.0));
    assert_eq!(
        credits(&m, "zoho_gateway_credits_remaining"),
        Some((1000 - a_spent) as f64)
    );
    assert_eq!(
        m.get("zoho_gateway_credits_spent_24h", &[("tenant", "b")]),
        Some(1.0)
    );
    // b configures no allowance: no allowance or remaining series, no report seen.
    assert_eq!(
        m.get("zoho_gateway_credits_allowance", &[("tenant", "b")]),
        None
    );
    assert_eq!(
        m.get("zoho_gateway_credits_remaining", &[("tenant", "b")]),
        None
    );
    assert_eq!(credits(&m, "zoho_gateway_credits_reported_remaining"), None);

    // A day later the window has let them go.
    h.advance(Duration::from_secs(24 * 3600));
    let m = h.metrics().await;
    assert_eq!(credits(&m, "zoho_gateway_credits_spent_24h"), Some(0.0));
    assert_eq!(credits(&m, "zoho_gateway_credits_remaining"), Some(1000.0));
}

#[tokio::test]
async fn under_the_reserve_a_normal_key_gets_stale_or_429_and_a_high_key_fresh() {
    let h = Harness::start_with_extra(
        SimConfig::default(),
        Extra {
            tenant_a: "daily_credits = 100\ncredit_reserve = 95",
            rest: HIGH_CLIENT,
            ..Extra::default()
        },
    )
    .await;
    let high = |q: String| {
        let h = &h;
        async move {
            h.client
                .get(&h.url(&q), &[("x-gateway-key", HIGH_KEY)])
                .await
        }
    };
    // Five credits spent: 95 left, the 95 reserved; a sixth would dip into them.
    for n in 1..=5 {
        assert_eq!(h.get(&starts_with("Tier", n)).await.status, 200);
    }
    assert_eq!(h.calls(), 5);
    // Hits never look at the budget.
    assert!(
        h.get(&starts_with("Tier", 1))
            .await
            .cache_status()
            .contains("hit")
    );

    // A `no-cache` request of a normal key under the reserve gets the fresh entry, with the
    // time it has left.
    let kept = h
        .get_with(&starts_with("Tier", 1), &[("cache-control", "no-cache")])
        .await;
    assert_eq!(kept.status, 200);
    let status = kept.cache_status().to_owned();
    assert!(status.contains("detail=credit-reserve"), "{status}");
    let ttl: i64 = status
        .split("ttl=")
        .nth(1)
        .and_then(|t| t.split(';').next())
        .and_then(|t| t.trim().parse().ok())
        .expect("a ttl");
    assert!(ttl > 0, "{status}");
    assert_eq!(h.calls(), 5);

    // Past the TTL and stale-while-revalidate, inside stale-if-error.
    h.advance(Duration::from_secs(120));
    let stale = h.get(&starts_with("Tier", 1)).await;
    assert_eq!(stale.status, 200);
    assert!(
        stale.cache_status().contains("detail=credit-reserve"),
        "{}",
        stale.cache_status()
    );
    // Nothing to stand in: refused, until the first credits leave the window.
    let refused = h.get(&starts_with("Sales", 1)).await;
    refused.assert_gateway_error(429, "TOO_MANY_REQUESTS", "credit_reserve");
    assert_eq!(
        refused.header("retry-after"),
        Some((24 * 3600 - 120).to_string().as_str())
    );
    assert_eq!(h.calls(), 5, "no upstream call for the normal key");

    // The high-priority key spends the reserve: fresh answers for both.
    for q in [starts_with("Tier", 1), starts_with("Sales", 1)] {
        let fresh = high(q).await;
        assert_eq!(fresh.status, 200, "{:?}", fresh.body);
        assert!(
            fresh.cache_status().contains("fwd=miss"),
            "{}",
            fresh.cache_status()
        );
    }
    assert_eq!(h.calls(), 7);
    // What the high key fetched is cached for everyone.
    assert!(
        h.get(&starts_with("Sales", 1))
            .await
            .cache_status()
            .contains("; hit")
    );

    let m = h.metrics().await;
    assert_eq!(credits(&m, "zoho_gateway_credits_spent_24h"), Some(7.0));
    assert_eq!(credits(&m, "zoho_gateway_credits_reserve"), Some(95.0));
    let applied = |action| {
        m.get(
            "zoho_gateway_credit_reserve_applied_total",
            &[("tenant", "a"), ("action", action)],
        )
    };
    // Served from the cache under the reserve: the no-cache request and the stale one.
    assert_eq!(
        (applied("stale"), applied("refused")),
        (Some(2.0), Some(1.0))
    );
}

#[tokio::test]
async fn zohos_remaining_credits_header_is_kept_and_can_start_the_reserve() {
    // The simulator sends X-API-CREDITS-REMAINING once half of its 8 credits are used.
    let sim = SimConfig {
        api_credit_limit: Some(8),
        ..SimConfig::default()
    };
    let h = Harness::start_with_extra(
        sim,
        Extra {
            tenant_a: "credit_reserve = 2",
            rest: HIGH_CLIENT,
            ..Extra::default()
        },
    )
    .await;
    for n in 1..=6 {
        assert_eq!(h.get(&starts_with("Tier", n)).await.status, 200);
    }
    let m = h.metrics().await;
    assert_eq!(
        credits(&m, "zoho_gateway_credits_reported_remaining"),
        Some(2.0),
        "{m}"
    );
    assert_eq!(credits(&m, "zoho_gateway_credits_remaining"), Some(2.0));
    assert_eq!(credits(&m, "zoho_gateway_credits_allowance"), None);

    // Zoho says 2 left, 2 are reserved: a call would dip into them, so the normal key waits
    // for the report to age out.
    let refused = h.get(&starts_with("Sales", 1)).await;
    refused.assert_gateway_error(429, "TOO_MANY_REQUESTS", "credit_reserve");
    assert_eq!(refused.header("retry-after"), Some("900"));
    let fresh = h
        .client
        .get(
            &h.url(&starts_with("Sales", 1)),
            &[("x-gateway-key", HIGH_KEY)],
        )
        .await;
    assert_eq!(fresh.status, 200);
    assert_eq!(h.calls(), 7);
    let m = h.metrics().await;
    let left = 8 - h.sim().credits_used();
    assert_eq!(
        credits(&m, "zoho_gateway_credits_reported_remaining"),
        Some(left as f64)
    );

    // Fifteen minutes on, the report no longer counts.
    h.advance(Duration::from_secs(900));
    assert_eq!(h.get(&starts_with("Sales", 2)).await.status, 200);
}
