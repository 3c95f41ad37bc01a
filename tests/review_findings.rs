//! Regression tests for the faults a fresh-eyes review found, one per kind of fault.

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zoho_gateway::simulator::{SimConfig, SimRoute};

/// A failed refresh ahead of expiry must not throw away the still-valid token.
#[tokio::test]
async fn a_failed_refresh_ahead_keeps_the_valid_token() {
    let h = Harness::start().await;
    assert_eq!(h.get(&name_filter("starts_with", "Tier")).await.status, 200);
    let tokens = h.gw.gateway().tenants()[0].tokens.clone();
    wait_until("first grant", || tokens.generation() == 1).await;
    h.sim().set_token_endpoint_down(true);
    // Inside the refresh margin (300 s before the 3600 s expiry): the refresher tries and fails.
    let grants_before = h.sim().token_grants();
    h.advance(Duration::from_secs(3400));
    let m = || {
        let text = String::from_utf8(h.gw.gateway().metrics().render()).unwrap();
        text.contains("zoho_gateway_token_refreshes_total{outcome=\"unreachable\",tenant=\"a\"}")
    };
    wait_until("a failed refresh-ahead", m).await;
    let r = h.get(&name_filter("starts_with", "Sales")).await;
    assert_eq!(r.status, 200, "the current token still works: {:?}", r.body);
    assert_eq!(h.sim().token_grants(), grants_before);
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
    wait_until("the background refresh", || {
        h.sim().calls(SimRoute::AssociatedUsersCount) == 2
    })
    .await;
    let held = |h: &Harness| h.gw.gateway().metrics().render();
    wait_until("the hold", || {
        String::from_utf8(held(&h))
            .unwrap()
            .contains("status_class=\"4xx\",tenant=\"a\"} 1")
    })
    .await;
    for _ in 0..5 {
        let r = h.get(&url).await;
        assert_eq!(r.status, 200);
        assert!(r.cache_status().contains("stale-while-revalidate"));
    }
    assert_eq!(
        h.sim().calls(SimRoute::AssociatedUsersCount),
        2,
        "no refresh while held"
    );
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
    assert_eq!(h.sim().calls(SimRoute::AssociatedUsersCount), 1);
}

/// Clients that give up while waiting on a flight leave no waiter counted, and each is
/// recorded once (499).
#[tokio::test]
async fn disconnected_waiters_are_not_leaked_in_metrics() {
    let h = Harness::start().await;
    h.sim().set_latency(Duration::from_millis(800));
    let url = h.url(&name_filter("starts_with", "Tier1"));
    let auth = format!("Zoho-oauthtoken {KEY}");
    for _ in 0..5 {
        let _ = tokio::time::timeout(
            Duration::from_millis(100),
            h.client.get(&url, &[("authorization", &auth)]),
        )
        .await;
    }
    let text = || String::from_utf8(h.gw.gateway().metrics().render()).unwrap();
    wait_until("waiters back to zero", || {
        text().contains("zoho_gateway_coalesce_waiters 0")
    })
    .await;
    wait_until("the abandoned requests recorded", || {
        text()
            .lines()
            .filter(|l| {
                l.starts_with("zoho_gateway_requests_total") && l.contains("status_class=\"4xx\"")
            })
            .any(|l| l.ends_with(" 5"))
    })
    .await;
}

/// HTTP-level malformations: one Host header, one credential header.
#[tokio::test]
async fn malformed_requests_get_a_zoho_shaped_400() {
    let h = Harness::start().await;
    let two_keys = h
        .client
        .get(
            &h.url(&name_filter("starts_with", "Tier1")),
            &[
                ("authorization", &format!("Zoho-oauthtoken {KEY}")),
                ("authorization", "Zoho-oauthtoken wrong"),
            ],
        )
        .await;
    assert_eq!(two_keys.status, 400);
    assert_eq!(two_keys.json()["code"], "INVALID_REQUEST");

    for head in [
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ] {
        let mut s = tokio::net::TcpStream::connect(h.gw.proxy_addr())
            .await
            .unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 2048];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("HTTP/1.1 400"), "{head:?}: {text}");
        assert!(text.contains("INVALID_REQUEST"), "{text}");
    }
    assert_eq!(h.sim().total_api_calls(), 0);
}

/// Pass-through patterns: `{version}` takes only configured versions and `{id}` only ids.
#[tokio::test]
async fn pass_through_patterns_are_strict() {
    let h = Harness::start_with(
        SimConfig::default(),
        "[routes.passthrough]\nallow = [\"GET /crm/{version}/settings/user_groups\", \"GET /crm/{version}/settings/user_groups/{id}\"]",
    )
    .await;
    assert_eq!(h.get("/crm/v7/settings/user_groups").await.status, 200);
    for path in [
        "/crm/v2/settings/user_groups",
        "/crm/v7/settings/user_groups/abc",
        "/crm/v7/settings/user_groups/...",
    ] {
        let r = h.get(path).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(
            r.header("x-zoho-gateway-error"),
            Some("unknown_route"),
            "{path}"
        );
    }
    assert_eq!(h.sim().total_api_calls(), 1);
}

/// A slow pass-through upload is the client's fault: 408, not an upstream timeout.
#[tokio::test]
async fn a_slow_upload_gets_408() {
    let h = Harness::start_with_extra(
        SimConfig::default(),
        Extra {
            server: "header_read_timeout = \"300ms\"",
            tenant_a: "",
            rest: "[routes.passthrough]\nallow = [\"POST /crm/{version}/settings/user_groups\"]",
        },
    )
    .await;
    let mut s = tokio::net::TcpStream::connect(h.gw.proxy_addr())
        .await
        .unwrap();
    let head = format!(
        "POST /crm/v7/settings/user_groups HTTP/1.1\r\nHost: gw\r\nAuthorization: Zoho-oauthtoken {KEY}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"user"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("REQUEST_TIMEOUT"));
    assert_eq!(h.sim().total_api_calls(), 0);
}

/// Admin probes answer only GET/HEAD; the admin token scheme is case-insensitive.
#[tokio::test]
async fn admin_methods_and_bearer_scheme() {
    let h = Harness::start_with(SimConfig::default(), "[admin]\ntoken = \"t0ken-for-admin\"").await;
    let admin = |p: &str| format!("http://{}{p}", h.gw.admin_addr());
    let del = h
        .client
        .send("DELETE", &admin("/metrics"), &[], Bytes::new())
        .await;
    assert_eq!(del.status, 405);
    let ok = h
        .client
        .get(
            &admin("/admin/cache"),
            &[("authorization", "bearer t0ken-for-admin")],
        )
        .await;
    assert_eq!(ok.status, 200);
    // Two Authorization headers (the right one first) are refused, as on the proxy listener.
    let two = h
        .client
        .get(
            &admin("/admin/cache"),
            &[
                ("authorization", "Bearer t0ken-for-admin"),
                ("authorization", "Bearer something-else"),
            ],
        )
        .await;
    assert_eq!(two.status, 400, "{:?}", two.body);
}

/// `check-config` prints no secret: client secret, refresh token, client key, admin token.
#[test]
fn check_config_redacts_every_secret() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_zoho-gateway"))
        .args(["check-config", "--config"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("[redacted]"));
    let (_, secret, refresh) = SimConfig::demo_credentials();
    for s in [
        secret.as_str(),
        refresh.as_str(),
        "demo-gateway-key",
        "demo-admin-token",
    ] {
        assert!(!text.contains(s), "check-config printed a secret");
    }
}
