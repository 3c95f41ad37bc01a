//! Cache and single-flight behaviour end to end, proven by counting the simulator's calls.
//! Freshness runs on the gateway's manual clock (see `zoho_gateway::clock`): the tests move it.

use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use zoho_crm_simulator::SimConfig;

/// Deterministic TTLs, and no upstream retries so one injected failure reaches the client.
const NO_JITTER: &str = r#"
[upstream]
max_retries = 0
[routes.associated_users_count]
ttl_jitter_percent = 0
"#;

#[tokio::test]
async fn thousand_concurrent_identical_misses_make_one_upstream_call() {
    let h = Arc::new(Harness::start_with(SimConfig::default(), NO_JITTER).await);
    h.sim().set_latency(Duration::from_millis(500));
    let url = name_filter("equal", "Tier1");
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let (h, url) = (h.clone(), url.clone());
        tasks.push(tokio::spawn(async move { h.get(&url).await }));
    }
    let mut bodies = std::collections::HashSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        bodies.insert(r.body);
    }
    assert_eq!(bodies.len(), 1);
    assert_eq!(h.calls(), 1);
}

#[tokio::test]
async fn first_client_disconnecting_cancels_nothing() {
    let h = Arc::new(Harness::start().await);
    h.sim().set_latency(Duration::from_millis(400));
    let url = name_filter("equal", "Tier2");
    let first = {
        let (h, url) = (h.clone(), url.clone());
        tokio::spawn(async move { h.get(&url).await })
    };
    wait_until("the upstream call", || h.sim().in_flight() == 1).await;
    first.abort();
    let r = h.get(&url).await;
    assert_eq!(r.status, 200);
    assert!(
        r.cache_status().contains("collapsed") || r.cache_status().contains("; hit"),
        "{}",
        r.cache_status()
    );
    assert_eq!(h.calls(), 1);
}

#[tokio::test]
async fn a_failed_fetch_is_shared_not_cached_and_held_briefly() {
    let h = Arc::new(Harness::start_with(SimConfig::default(), NO_JITTER).await);
    h.sim().set_latency(Duration::from_millis(300));
    h.sim().fail_next(1, 500);
    let url = name_filter("equal", "Tier1");
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (h, url) = (h.clone(), url.clone());
        tasks.push(tokio::spawn(async move { h.get(&url).await }));
    }
    let mut bodies = std::collections::HashSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 500);
        bodies.insert(r.body);
    }
    assert_eq!(bodies.len(), 1, "every waiter gets the one error");
    assert_eq!(h.calls(), 1);
    let body: serde_json::Value = serde_json::from_slice(bodies.iter().next().unwrap()).unwrap();
    assert_eq!(body["code"], "INTERNAL_SERVER_ERROR");

    // On hold: no new upstream attempt, the failure again with Retry-After.
    let held = h.get(&url).await;
    assert_eq!(held.status, 500);
    assert!(held.header("retry-after").is_some());
    assert!(
        held.cache_status().contains("upstream-hold"),
        "{}",
        held.cache_status()
    );
    assert_eq!(h.calls(), 1);

    // After the hold, exactly one new call, and nothing was cached from the failure.
    h.advance(Duration::from_secs(6));
    h.sim().set_latency(Duration::ZERO);
    let ok = h.get(&url).await;
    assert_eq!(ok.status, 200);
    assert!(ok.cache_status().contains("fwd=miss"));
    assert_eq!(h.calls(), 2);
}

#[tokio::test]
async fn ttl_then_stale_while_revalidate_then_stale_if_error() {
    let h = Harness::start_with(SimConfig::default(), NO_JITTER).await;
    let url = name_filter("equal", "Tier1");
    let first = h.get(&url).await;
    assert_eq!(first.status, 200);
    assert!(
        first.cache_status().contains("ttl=60"),
        "{}",
        first.cache_status()
    );

    h.advance(Duration::from_secs(59));
    let hit = h.get(&url).await;
    assert!(
        hit.cache_status().contains("; hit; ttl=1"),
        "{}",
        hit.cache_status()
    );
    assert_eq!(hit.header("age"), Some("59"));
    assert_eq!(h.calls(), 1);

    // Just expired: served stale at once, one background refresh.
    h.advance(Duration::from_secs(5));
    let stale = h.get(&url).await;
    assert_eq!(stale.status, 200);
    assert_eq!(stale.body, first.body);
    assert!(
        stale
            .cache_status()
            .contains("detail=stale-while-revalidate"),
        "{}",
        stale.cache_status()
    );
    assert!(
        stale.cache_status().contains("ttl=-4"),
        "{}",
        stale.cache_status()
    );
    wait_until("the background refresh", || h.calls() == 2).await;
    // The refreshed entry is fresh again (stored at the clock's current time).
    let mut refreshed = h.get(&url).await;
    while !refreshed.cache_status().contains("; hit; ttl=60") {
        // The refresh's store lands right after its upstream call returns.
        tokio::task::yield_now().await;
        refreshed = h.get(&url).await;
        assert_eq!(h.calls(), 2);
    }
    assert_eq!(refreshed.header("age"), Some("0"));

    // Past the stale-while-revalidate window but within stale-if-error: a failed refresh
    // serves the stale entry, and the key is held (no second attempt).
    h.advance(Duration::from_secs(60 + 31));
    h.sim().fail_next(1, 503);
    let sie = h.get(&url).await;
    assert_eq!(sie.status, 200);
    assert!(
        sie.cache_status().contains("detail=stale-if-error"),
        "{}",
        sie.cache_status()
    );
    assert_eq!(h.calls(), 3);
    let again = h.get(&url).await;
    assert!(again.cache_status().contains("detail=stale-if-error"));
    assert_eq!(h.calls(), 3);

    // Past every window: a plain miss.
    h.advance(Duration::from_secs(400));
    let miss = h.get(&url).await;
    assert!(
        miss.cache_status().contains("fwd=miss; stored"),
        "{}",
        miss.cache_status()
    );
    assert_eq!(h.calls(), 4);
}

#[tokio::test]
async fn no_content_has_its_own_ttl_and_errors_are_never_cached() {
    let h = Harness::start_with(SimConfig::default(), NO_JITTER).await;
    let nothing = name_filter("equal", "NoSuchGroupAnywhere");
    let r = h.get(&nothing).await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    assert!(
        r.cache_status().contains("stored; ttl=15"),
        "{}",
        r.cache_status()
    );
    assert_eq!(h.get(&nothing).await.status, 204);
    assert_eq!(h.calls(), 1);
    h.advance(Duration::from_secs(16 + 30));
    assert!(h.get(&nothing).await.cache_status().contains("fwd=miss"));
    assert_eq!(h.calls(), 2);

    // 429 with Retry-After: relayed, not cached, the key held for Retry-After.
    let url = name_filter("equal", "Tier2");
    h.sim().fail_next_with_retry_after(1, 429, 20);
    let limited = h.get(&url).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.json()["code"], "TOO_MANY_REQUESTS");
    assert!(!limited.cache_status().contains("stored"));
    h.advance(Duration::from_secs(10));
    assert_eq!(h.get(&url).await.status, 429);
    assert_eq!(h.calls(), 3);
    h.advance(Duration::from_secs(11));
    assert_eq!(h.get(&url).await.status, 200);
    assert_eq!(h.calls(), 4);
}

#[tokio::test]
async fn client_no_cache_and_no_store() {
    let h = Harness::start().await;
    let url = name_filter("equal", "Tier1");
    h.get(&url).await;
    let forced = h.get_with(&url, &[("cache-control", "no-cache")]).await;
    assert!(
        forced.cache_status().contains("fwd=miss; stored"),
        "{}",
        forced.cache_status()
    );
    assert_eq!(h.calls(), 2);
    let bypass = h.get_with(&url, &[("cache-control", "no-store")]).await;
    assert!(
        bypass
            .cache_status()
            .contains("fwd=bypass; detail=no-store")
    );
    assert_eq!(h.calls(), 3);
    assert!(h.get(&url).await.cache_status().contains("; hit"));
    assert_eq!(h.calls(), 3);
}

#[tokio::test]
async fn client_max_age_min_fresh_and_only_if_cached() {
    let h = Harness::start().await;
    let url = name_filter("equal", "Tier1");
    // only-if-cached on a cold key: 504 from the gateway, no upstream call (RFC 9111 §5.2.1.7).
    let cold = h
        .get_with(&url, &[("cache-control", "only-if-cached")])
        .await;
    cold.assert_gateway_error(504, "NOT_CACHED", "not_cached");
    assert_eq!(h.calls(), 0);
    h.get(&url).await;
    assert_eq!(h.calls(), 1);
    let cached = h
        .get_with(&url, &[("cache-control", "only-if-cached")])
        .await;
    assert!(
        cached.cache_status().contains("; hit"),
        "{}",
        cached.cache_status()
    );
    h.advance(Duration::from_secs(5));
    // Younger than the client's max-age: a hit; older: fetched again (max-age=0 as no-cache).
    let young = h.get_with(&url, &[("cache-control", "max-age=60")]).await;
    assert!(
        young.cache_status().contains("; hit"),
        "{}",
        young.cache_status()
    );
    assert_eq!(h.calls(), 1);
    let old = h.get_with(&url, &[("cache-control", "max-age=2")]).await;
    assert!(
        old.cache_status().contains("fwd=miss; stored"),
        "{}",
        old.cache_status()
    );
    assert_eq!(h.calls(), 2);
    let zero = h.get_with(&url, &[("cache-control", "max-age=0")]).await;
    assert!(
        zero.cache_status().contains("fwd=miss"),
        "{}",
        zero.cache_status()
    );
    assert_eq!(h.calls(), 3);
    // Not fresh for long enough for the client's min-fresh: fetched again.
    let picky = h
        .get_with(&url, &[("cache-control", "min-fresh=100000")])
        .await;
    assert!(
        picky.cache_status().contains("fwd=miss"),
        "{}",
        picky.cache_status()
    );
    assert_eq!(h.calls(), 4);
    let easy = h.get_with(&url, &[("cache-control", "min-fresh=1")]).await;
    assert!(
        easy.cache_status().contains("; hit"),
        "{}",
        easy.cache_status()
    );
    assert_eq!(h.calls(), 4);
}

#[tokio::test]
async fn answers_are_private_to_downstream_caches() {
    let h = Harness::start().await;
    let url = name_filter("equal", "Tier1");
    let miss = h.get(&url).await;
    let hit = h.get(&url).await;
    let error = h
        .get("/crm/v7/settings/user_groups/actions/associated_users_count?filters=%7B")
        .await;
    assert_eq!(error.status, 400);
    for r in [&miss, &hit, &error] {
        assert_eq!(
            r.header("cache-control"),
            Some("private, no-cache"),
            "{}",
            r.status
        );
    }
}

const WRITES: &str = r#"
[routes.passthrough]
allow = [
  "GET /crm/{version}/settings/user_groups",
  "POST /crm/{version}/settings/user_groups",
  "PUT /crm/{version}/settings/user_groups/{id}",
  "DELETE /crm/{version}/settings/user_groups/{id}",
]
[admin]
token = "admin-test-token"
"#;

#[tokio::test]
async fn a_write_invalidates_its_tenant_only() {
    let h = Harness::start_with(SimConfig::default(), WRITES).await;
    let url = with_filters(SEED_CURL);
    let a = h.get(&url).await;
    // Hits before the write: the first takes a per-thread copy, the next are answered from it.
    for _ in 0..3 {
        assert!(h.get(&url).await.cache_status().contains("; hit"));
    }
    let b_key = [("x-gateway-key", KEY_B)];
    let b = h.client.get(&h.url(&url), &b_key).await;
    assert_eq!(
        a.json()["associated_users_count"].as_array().unwrap().len(),
        2
    );
    assert_eq!(h.calls(), 2);

    let tier2 = a.group_id("Tier2");
    let deleted = h
        .client
        .send(
            "DELETE",
            &h.url(&format!("/crm/v7/settings/user_groups/{tier2}")),
            &[("authorization", &format!("Zoho-oauthtoken {KEY}"))],
            Bytes::new(),
        )
        .await;
    assert!(
        deleted.status.is_success(),
        "{:?} {:?}",
        deleted.status,
        deleted.body
    );
    assert_eq!(deleted.header("set-cookie"), None);

    // Tenant A: fresh answer without Tier2. Tenant B: still its cached answer.
    let a2 = h.get(&url).await;
    assert!(
        a2.cache_status().contains("fwd=miss"),
        "{}",
        a2.cache_status()
    );
    assert_eq!(
        a2.json()["associated_users_count"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let b2 = h.client.get(&h.url(&url), &b_key).await;
    assert!(b2.cache_status().contains("; hit"));
    assert_eq!(b2.body, b.body);
    assert_eq!(h.calls(), 3);
}

#[tokio::test]
async fn admin_purge_needs_the_token() {
    let h = Harness::start_with(SimConfig::default(), WRITES).await;
    let url = name_filter("equal", "Tier1");
    h.get(&url).await;
    let admin = |path: &str| h.admin_url(path);
    let denied = h
        .client
        .send("POST", &admin("/admin/cache/purge"), &[], Bytes::new())
        .await;
    assert_eq!(denied.status, 401);
    let wrong = h
        .client
        .send(
            "POST",
            &admin("/admin/cache/purge"),
            &[("authorization", "Bearer nope")],
            Bytes::new(),
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert!(h.get(&url).await.cache_status().contains("; hit"));

    let auth = [("authorization", "Bearer admin-test-token")];
    let stats = h.admin_get("/admin/cache", &auth).await;
    assert_eq!(stats.status, 200);
    assert_eq!(stats.json()["hits"], 1);
    assert_eq!(stats.json()["misses"], 1);
    let purged = h
        .client
        .send(
            "POST",
            &admin("/admin/cache/purge?tenant=a"),
            &auth,
            Bytes::new(),
        )
        .await;
    assert_eq!(purged.status, 200, "{:?}", purged.body);
    assert!(h.get(&url).await.cache_status().contains("fwd=miss"));
    assert_eq!(h.calls(), 2);
    let bad = h
        .client
        .send(
            "POST",
            &admin("/admin/cache/purge?tenant=zzz"),
            &auth,
            Bytes::new(),
        )
        .await;
    assert_eq!(bad.status, 400);
}

/// `?route=users&route=org` purges both routes (it purged only `org`), and the answer says how
/// many cached entries matched.
#[tokio::test]
async fn admin_purge_takes_repeated_routes_and_counts_the_entries() {
    let h = Harness::start_shipped_with("[admin]\ntoken = \"admin-test-token\"").await;
    let reads = [
        "/crm/v8/users?type=AllUsers",
        "/crm/v8/users?type=ActiveUsers",
        "/crm/v8/org",
        "/crm/v8/settings/modules",
    ];
    for r in reads {
        assert_eq!(h.get(r).await.status, 200, "{r}");
    }
    let calls = h.sim().total_api_calls();
    let purge = |q: &'static str| {
        let h = &h;
        async move {
            h.client
                .send(
                    "POST",
                    &h.admin_url(&format!("/admin/cache/purge{q}")),
                    &[("authorization", "Bearer admin-test-token")],
                    Bytes::new(),
                )
                .await
        }
    };
    let r = purge("?route=users&route=org&route=users").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.json(),
        serde_json::json!({"purged": {"tenant": null, "routes": ["users", "org"], "entries": 3}})
    );
    // users and org are misses again, modules still a hit.
    for r in &reads[..3] {
        assert!(h.get(r).await.cache_status().contains("fwd=miss"), "{r}");
    }
    assert!(h.get(reads[3]).await.cache_status().contains("; hit"));
    assert_eq!(h.sim().total_api_calls(), calls + 3);
    // Everything of tenant a: the four entries.
    let r = purge("?tenant=a").await;
    assert_eq!(r.json()["purged"]["entries"], 4, "{:?}", r.body);
    assert_eq!(r.json()["purged"]["routes"], serde_json::Value::Null);
    let r = purge("?route=nope").await;
    assert_eq!(r.status, 400);
}

/// While a key is on hold (Zoho said Retry-After), stale-while-revalidate starts no refresh.
#[tokio::test]
async fn stale_while_revalidate_respects_the_hold() {
    let h = Harness::start_with(
        SimConfig::default(),
        "[upstream]\nmax_retries = 0\n[routes.associated_users_count]\nttl_jitter_percent = 0\nstale_while_revalidate = \"120s\"",
    )
    .await;
    let url = name_filter("starts_with", "Tier2");
    assert_eq!(h.get(&url).await.status, 200);
    h.advance(Duration::from_secs(61));
    h.sim().fail_next_with_retry_after(5, 429, 30);
    // The first stale hit starts one background refresh, which gets the 429 and holds the key.
    assert!(
        h.get(&url)
            .await
            .cache_status()
            .contains("stale-while-revalidate")
    );
    wait_until("the background refresh", || h.calls() == 2).await;
    wait_until("the hold", || {
        h.metrics_now().sum(
            "zoho_gateway_upstream_requests_total",
            &[("status_class", "4xx"), ("tenant", "a")],
        ) == 1.0
    })
    .await;
    for _ in 0..5 {
        let r = h.get(&url).await;
        assert_eq!(r.status, 200);
        assert!(r.cache_status().contains("stale-while-revalidate"));
    }
    assert_eq!(h.calls(), 2, "no refresh while held");
}

/// A held answer says it was not forwarded, and Zoho's Retry-After reaches the first client.
#[tokio::test]
async fn held_answers_are_not_marked_as_forwarded() {
    let h = Harness::start_with(SimConfig::default(), "[upstream]\nmax_retries = 0").await;
    let url = name_filter("starts_with", "Sales");
    h.sim().fail_next_with_retry_after(1, 429, 30);
    let first = h.get(&url).await;
    assert_eq!(first.status, 429);
    assert_eq!(first.header("retry-after"), Some("30"));
    let held = h.get(&url).await;
    assert_eq!(held.status, 429);
    assert!(
        !held.cache_status().contains("fwd="),
        "{}",
        held.cache_status()
    );
    assert!(held.cache_status().contains("detail=upstream-hold"));
    assert_eq!(h.calls(), 1);
}

/// Admin probes answer only GET/HEAD; the admin token scheme is case-insensitive.
#[tokio::test]
async fn admin_methods_and_bearer_scheme() {
    let h = Harness::start_with(SimConfig::default(), "[admin]\ntoken = \"t0ken-for-admin\"").await;
    let del = h
        .client
        .send("DELETE", &h.admin_url("/metrics"), &[], Bytes::new())
        .await;
    assert_eq!(del.status, 405);
    let ok = h
        .admin_get(
            "/admin/cache",
            &[("authorization", "bearer t0ken-for-admin")],
        )
        .await;
    assert_eq!(ok.status, 200);
    // Two Authorization headers (the right one first) are refused, as on the proxy listener.
    let two = h
        .admin_get(
            "/admin/cache",
            &[
                ("authorization", "Bearer t0ken-for-admin"),
                ("authorization", "Bearer something-else"),
            ],
        )
        .await;
    assert_eq!(two.status, 400, "{:?}", two.body);
}

/// A hit answered from a worker thread's front of the cache (a hot request: the thread's memo
/// of route, client and key, then its own copy of the entry and a prepared response head) is
/// the same answer as the hit the main cache gave: status, every header but the request id,
/// and body. `Gateway::handle` on the test's single thread: the second request fills the
/// thread's front, the third and fourth are answered from it.
#[tokio::test]
async fn a_hit_from_the_threads_front_is_the_answer_the_cache_gave() {
    let h = Harness::start_with(SimConfig::default(), NO_JITTER).await;
    let gw = h.gw.gateway().clone();
    let q = starts_with("Tier", 1);
    let peer: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut answers = Vec::new();
    for _ in 0..4 {
        let req = http::Request::get(q.as_str())
            .header("host", "gw")
            .header("x-gateway-key", KEY)
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let resp = gw.clone().handle(req, peer).await;
        let (parts, body) = resp.into_parts();
        let body = http_body_util::BodyExt::collect(body)
            .await
            .unwrap()
            .to_bytes();
        let mut head: Vec<(String, String)> = parts
            .headers
            .iter()
            .filter(|(n, _)| n.as_str() != "x-request-id")
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        head.sort();
        answers.push((parts.status, head, body));
    }
    assert_eq!(h.calls(), 1);
    let (status, head, body) = &answers[1];
    assert!(
        head.iter()
            .any(|(n, v)| n == "cache-status" && v.contains("hit")),
        "{head:?}"
    );
    assert!(head.iter().any(|(n, _)| n == "etag"), "{head:?}");
    for front in &answers[2..] {
        assert_eq!((&front.0, &front.1, &front.2), (status, head, body));
    }
}
