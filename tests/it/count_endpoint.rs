//! The count endpoint end to end through the gateway: the seed's sample, client spellings and
//! equivalence classes sharing one entry, different questions never sharing one, client keys,
//! local answers for bad requests, and the request metrics. Proven by counting the simulator's
//! upstream calls.

use std::sync::Arc;

use crate::support::*;
use zoho_crm_simulator::SimConfig;
use zoho_crm_simulator::SimRoute;

#[tokio::test]
async fn seed_sample_is_served_then_hit_from_cache() {
    let h = Harness::start().await;
    let first = h.get(&with_filters(SEED_CURL)).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let body = first.json();
    let names: Vec<&str> = body["associated_users_count"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["user_group"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2);
    assert!(
        names.contains(&"Tier1") && names.contains(&"Tier2"),
        "{names:?}"
    );
    assert!(
        first.cache_status().contains("fwd=miss"),
        "{}",
        first.cache_status()
    );
    assert!(first.cache_status().contains("stored"));
    assert_eq!(first.header("age"), None);

    let second = h.get(&with_filters(SEED_CURL)).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.body, first.body);
    assert!(
        second.cache_status().contains("; hit"),
        "{}",
        second.cache_status()
    );
    assert!(second.header("age").is_some());
    // Zoho's per-user cookie and token header are never replayed from the cache.
    assert_eq!(second.header("set-cookie"), None);
    assert_eq!(second.header("x-accesstoken-reset"), None);

    assert_eq!(h.calls(), 1);
    assert_eq!(
        h.sim().query_calls(
            SimRoute::AssociatedUsersCount,
            &format!("filters={SEED_CURL}")
        ),
        1
    );
    h.shutdown().await;
}

#[tokio::test]
async fn sdk_spellings_share_one_cache_entry() {
    let h = Harness::start().await;
    let a = h.get(&with_filters(SEED_CURL)).await;
    let b = h.get(&with_filters(SEED_PYTHON)).await;
    let c = h.get(&with_filters(SEED_NODE)).await;
    // Explicit defaults mean the same as omitting them.
    let d = h
        .get(&format!(
            "{COUNT}?page=1&per_page=200&filters={SEED_PYTHON}"
        ))
        .await;
    for r in [&b, &c, &d] {
        assert_eq!(r.status, 200);
        assert_eq!(r.body, a.body);
        assert!(r.cache_status().contains("; hit"), "{}", r.cache_status());
    }
    assert_eq!(h.calls(), 1);
    h.shutdown().await;
}

#[tokio::test]
async fn different_questions_never_share_an_entry() {
    let h = Harness::start().await;
    let tier1 = "%7B%22field%22%3A%7B%22api_name%22%3A%22name%22%7D%2C%22comparator%22%3A%22equal%22%2C%22value%22%3A%22Tier1%22%7D";
    let tier1_lower = "%7B%22field%22%3A%7B%22api_name%22%3A%22name%22%7D%2C%22comparator%22%3A%22equal%22%2C%22value%22%3A%22tier1%22%7D";
    let starts = "%7B%22field%22%3A%7B%22api_name%22%3A%22name%22%7D%2C%22comparator%22%3A%22starts_with%22%2C%22value%22%3A%22Tier1%22%7D";
    let queries = [
        with_filters(tier1),
        with_filters(tier1_lower),
        with_filters(starts),
        format!("{COUNT}?filters={tier1}&per_page=100"),
        format!("{COUNT}?per_page=5&page=2"),
        format!("{COUNT}?per_page=5"),
    ];
    let mut bodies = Vec::new();
    for q in &queries {
        let r = h.get(q).await;
        assert!(
            r.cache_status().contains("fwd=miss"),
            "{q}: {}",
            r.cache_status()
        );
        bodies.push(r.body);
    }
    assert_eq!(h.calls(), queries.len() as u64);
    // And each is answered as Zoho answers it: compare with the simulator directly.
    let direct = TestClient::new();
    let (id, secret, refresh) = SimConfig::demo_credentials();
    let token = fetch_token(&h.sim.base_url(), &id, &secret, &refresh).await;
    for (q, via_gateway) in queries.iter().zip(&bodies) {
        let r = direct
            .get(
                &format!("{}{q}", h.sim.base_url()),
                &[("authorization", &format!("Zoho-oauthtoken {token}"))],
            )
            .await;
        assert_eq!(&r.body, via_gateway, "{q}");
    }
    h.shutdown().await;
}

#[tokio::test]
async fn fifty_concurrent_identical_misses_make_one_upstream_call() {
    let h = Arc::new(Harness::start().await);
    // Hold Zoho's answer long enough that the requests overlap the one upstream call.
    h.sim().set_latency(std::time::Duration::from_millis(300));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            h.get(&with_filters(SEED_CURL)).await
        }));
    }
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    let mut bodies = std::collections::HashSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        bodies.insert(r.body.clone());
        let cs = r.cache_status();
        let kind = if cs.contains("collapsed") {
            "collapsed"
        } else if cs.contains("; hit") {
            "hit"
        } else {
            "miss"
        };
        *outcomes.entry(kind.to_owned()).or_default() += 1;
    }
    assert_eq!(h.calls(), 1);
    assert_eq!(bodies.len(), 1);
    assert_eq!(outcomes.get("miss"), Some(&1), "{outcomes:?}");
    let h = Arc::try_unwrap(h).ok().unwrap();
    h.shutdown().await;
}

#[tokio::test]
async fn requests_without_a_valid_key_are_refused_locally() {
    let h = Harness::start().await;
    let none = h.client.get(&h.url(&with_filters(SEED_CURL)), &[]).await;
    none.assert_gateway_error(401, "AUTHENTICATION_FAILURE", "missing_key");

    let wrong = h
        .client
        .get(
            &h.url(&with_filters(SEED_CURL)),
            &[("authorization", "Zoho-oauthtoken not-a-configured-key")],
        )
        .await;
    wrong.assert_gateway_error(401, "INVALID_TOKEN", "unknown_key");

    let bearer = h
        .client
        .get(
            &h.url(&with_filters(SEED_CURL)),
            &[("authorization", &format!("Bearer {KEY}"))],
        )
        .await;
    assert_eq!(bearer.status, 401);

    assert_eq!(h.sim().total_api_calls(), 0);
    h.shutdown().await;
}

#[tokio::test]
async fn x_gateway_key_header_works_and_tenants_are_isolated() {
    let h = Harness::start().await;
    let a = h.get(&with_filters(SEED_CURL)).await;
    assert_eq!(a.status, 200);
    let b = h
        .client
        .get(
            &h.url(&with_filters(SEED_CURL)),
            &[("x-gateway-key", KEY_B)],
        )
        .await;
    assert_eq!(b.status, 200);
    // Tenant B's first request is its own miss, not tenant A's entry.
    assert!(
        b.cache_status().contains("fwd=miss"),
        "{}",
        b.cache_status()
    );
    assert_eq!(h.calls(), 2);
    h.shutdown().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_are_answered_locally() {
    let h = Harness::start().await;
    for path in [
        "/crm/v7/settings/user_groups",
        "/crm/v7/Leads",
        "/crm/v4/settings/user_groups/actions/associated_users_count",
        "/crm/v7/settings/user_groups/actions/../actions/associated_users_count",
        "/",
    ] {
        let r = h.get(path).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.json()["code"], "INVALID_URL_PATTERN", "{path}");
    }
    assert_eq!(h.sim().total_api_calls(), 0);
    h.shutdown().await;
}

#[tokio::test]
async fn invalid_filters_are_rejected_without_an_upstream_call() {
    let h = Harness::start().await;
    for q in [
        "filters=%7Bnot-json",
        "filters=%7B%22field%22%3A%7B%22api_name%22%3A%22email%22%7D%2C%22comparator%22%3A%22equal%22%2C%22value%22%3A%22x%22%7D",
        "per_page=0",
        "per_page=201",
        "page=0",
        "page=abc",
        "filters=%zz",
    ] {
        let r = h.get(&format!("{COUNT}?{q}")).await;
        r.assert_gateway_error(400, "INVALID_DATA", "invalid_data");
    }
    assert_eq!(h.sim().total_api_calls(), 0);
    let m = h.metrics().await;
    assert_eq!(
        m.get(
            "zoho_gateway_credits_saved_total",
            &[("reason", "rejected"), ("tenant", "a")]
        ),
        Some(7.0),
        "{m}"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn metrics_count_hits_and_misses() {
    let h = Harness::start().await;
    for _ in 0..3 {
        h.get(&with_filters(SEED_CURL)).await;
    }
    let m = h.metrics().await;
    let route = "/crm/{version}/settings/user_groups/actions/associated_users_count";
    let requests = |outcome: &str| {
        m.get(
            "zoho_gateway_requests_total",
            &[
                ("method", "GET"),
                ("outcome", outcome),
                ("route", route),
                ("status_class", "2xx"),
            ],
        )
    };
    assert_eq!(requests("hit"), Some(2.0), "{m}");
    assert_eq!(requests("miss"), Some(1.0), "{m}");
    assert_eq!(
        m.get(
            "zoho_gateway_upstream_requests_total",
            &[("route", route), ("status_class", "2xx"), ("tenant", "a")]
        ),
        Some(1.0),
        "{m}"
    );
    assert!(
        m.samples("zoho_gateway_request_duration_seconds_bucket")
            .next()
            .is_some()
    );
    let health = h.admin_get("/healthz", &[]).await;
    assert_eq!(health.status, 200);
    h.shutdown().await;
}

/// Each equivalence class of `filters` spellings costs exactly one simulator call; a query the
/// gateway cannot canonicalise for certain is forwarded every time, never cached, with the
/// reason in `Cache-Status`.
#[tokio::test]
async fn equivalence_classes_cost_one_call_each_and_uncertain_queries_are_never_cached() {
    let h = Harness::start().await;
    let t1 = r#"{"field":{"api_name":"name"},"comparator":"equal","value":"Tier1"}"#;
    let t2 = r#"{"field":{"api_name":"name"},"comparator":"equal","value":"Tier2"}"#;
    let classes: Vec<Vec<String>> = vec![
        // Tier1 OR Tier2: member order, duplicates, operator case, key order, whitespace,
        // nesting of the same operator, \u escapes.
        vec![
            format!(r#"{{"group_operator":"or","group":[{t1},{t2}]}}"#),
            format!(r#"{{"group_operator":"OR","group":[{t2},{t1}]}}"#),
            format!(r#"{{"group":[{t1},{t2},{t1}],"group_operator":"Or"}}"#),
            format!(
                r#"{{"group_operator":"or","group":[{t1},{{"group_operator":"or","group":[{t2}]}}]}}"#
            ),
            format!(
                r#" {{ "group_operator" : "or" , "group" : [ {t1} , {} ] }} "#,
                t2.replace("Tier2", "Tier\\u0032")
            ),
        ],
        // Tier1 alone: a one-member group equals the bare criterion.
        vec![
            t1.to_owned(),
            format!(r#"{{"group_operator":"and","group":[{t1}]}}"#),
        ],
    ];
    let mut expected_calls = 0;
    for class in &classes {
        expected_calls += 1;
        let mut bodies = std::collections::HashSet::new();
        for spelling in class {
            let r = h.get(&filters_json(spelling)).await;
            assert_eq!(r.status, 200, "{spelling}");
            bodies.insert(r.body);
            assert_eq!(h.calls(), expected_calls, "{spelling}");
        }
        assert_eq!(bodies.len(), 1);
    }
    // Repeated `filters`: uncertain, forwarded as-is each time, never stored.
    let repeated = format!("{}&filters={}", filters_json(t1), form_encode(t2));
    for _ in 0..2 {
        let r = h.get(&repeated).await;
        assert!(
            r.cache_status().contains("fwd=bypass; detail="),
            "{}",
            r.cache_status()
        );
        expected_calls += 1;
        assert_eq!(h.calls(), expected_calls);
    }
    h.shutdown().await;
}
