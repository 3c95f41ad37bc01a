//! Tokens, tenants and client access, against the simulator's token endpoint and API.
//! Token lifetimes run on the gateway's manual clock; the simulator's own clock is real time.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::*;
use zoho_gateway::App;
use zoho_gateway::clock::Clock;
use zoho_gateway::config::RawConfig;
use zoho_gateway::simulator::{SimConfig, SimRoute, Simulator};

fn roomy_sim() -> SimConfig {
    SimConfig {
        concurrency_limit: 10_000,
        ..SimConfig::default()
    }
}

#[tokio::test]
async fn five_hundred_requests_at_token_expiry_cause_one_refresh() {
    let h = Arc::new(Harness::start_with(roomy_sim(), "").await);
    assert_eq!(
        h.get(&name_filter("starts_with", "Tier1")).await.status,
        200
    );
    // Tenants a and b each hold one token.
    wait_until("initial grants", || h.sim().token_grants() == 2).await;

    h.advance(Duration::from_secs(3601));
    let mut tasks = Vec::new();
    for i in 0..500 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            h.get(&format!(
                "{}&per_page={}",
                name_filter("starts_with", "Tier"),
                1 + i % 200
            ))
            .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().status.as_u16() / 100, 2);
    }
    // Tenant a refreshed once; tenant b's refresher may also have woken at the advance.
    let grants = h.sim().token_grants();
    assert!((3..=4).contains(&grants), "{grants} grants");
    let m = h.metrics().await;
    assert!(
        m.contains("zoho_gateway_token_refreshes_total{outcome=\"success\",tenant=\"a\"} 2"),
        "{m}"
    );
}

#[tokio::test]
async fn three_token_lifetimes_make_three_refreshes() {
    let sim = Simulator::spawn(SimConfig::default()).await.unwrap();
    let (clock, manual) = Clock::manual();
    let mut cfg = gateway_config(&sim.base_url(), "");
    cfg.tenants.truncate(1);
    cfg.clients.retain(|_, c| c.tenant.index() == 0);
    let gw = App::spawn_with_clock(cfg, clock).await.unwrap();
    let handle = sim.handle();
    let tokens = gw.gateway().tenants()[0].tokens.clone();
    // The gateway has taken the grant in (not just the simulator issued it).
    wait_until("first grant", || tokens.generation() == 1).await;
    // Lifetime 3600 s, refreshed 300 s ahead: a new token every 3300 s.
    let step = 100;
    for t in (step..3 * 3300).step_by(step as usize) {
        manual.advance(Duration::from_secs(step));
        let expected = 1 + t / 3300;
        wait_until("the refresh due", || tokens.generation() == expected).await;
    }
    assert_eq!(handle.token_grants(), 3);
    manual.advance(Duration::from_secs(step));
    wait_until("the fourth lifetime", || tokens.generation() == 4).await;
    assert_eq!(handle.token_grants(), 4);
    gw.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn cache_keeps_serving_while_the_token_endpoint_is_down() {
    let h = Harness::start_with(roomy_sim(), "[routes.associated_users_count]\nttl = \"2h\"").await;
    let cached = h.get(&name_filter("starts_with", "Tier1")).await;
    assert_eq!(cached.status, 200);
    h.sim().set_token_endpoint_down(true);
    h.advance(Duration::from_secs(3601));

    let hit = h.get(&name_filter("starts_with", "Tier1")).await;
    assert!(
        hit.cache_status().contains("; hit"),
        "{}",
        hit.cache_status()
    );
    assert_eq!(hit.body, cached.body);

    let miss = h.get(&name_filter("starts_with", "Sales")).await;
    assert_eq!(miss.status, 503);
    assert_eq!(miss.json()["code"], "SERVICE_UNAVAILABLE");
    assert_eq!(miss.json()["status"], "error");
    assert_eq!(
        miss.header("x-zoho-gateway-error"),
        Some("token_unavailable")
    );
    let ready = h
        .client
        .get(&format!("http://{}/readyz", h.gw.admin_addr()), &[])
        .await;
    assert_eq!(ready.status, 200, "cached answers keep the gateway ready");
    assert!(String::from_utf8_lossy(&ready.body).contains("token failing"));
}

#[tokio::test]
async fn a_revoked_token_costs_one_refresh_and_one_retry() {
    let h = Harness::start_with(roomy_sim(), "").await;
    assert_eq!(
        h.get(&name_filter("starts_with", "Tier1")).await.status,
        200
    );
    wait_until("initial grants", || h.sim().token_grants() == 2).await;
    h.sim().revoke_access_tokens();
    let r = h.get(&name_filter("starts_with", "Tier2")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(h.sim().token_grants(), 3);
    assert_eq!(h.sim().calls(SimRoute::AssociatedUsersCount), 3);
}

#[tokio::test]
async fn twenty_restarts_with_a_state_file_make_one_grant() {
    let sim = Simulator::spawn(SimConfig::default()).await.unwrap();
    let dir = std::env::temp_dir().join(format!("zgw-state-{}", rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("tokens.json");
    let extra = format!("token_state_file = \"{}\"", state.display());
    let (id, secret, refresh) = SimConfig::demo_credentials();
    let url = sim.base_url();
    let text = format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        admin_listen = "127.0.0.1:0"
        [tenants.a]
        api_base = "{url}"
        accounts_url = "{url}"
        client_id = "{id}"
        client_secret = "{secret}"
        refresh_token = "{refresh}"
        {extra}
        [clients.a]
        tenant = "a"
        key = "{KEY}"
        "#
    );
    let client = TestClient::new();
    for _ in 0..20 {
        let cfg = RawConfig::from_toml_str(&text).unwrap().validate().unwrap();
        let gw = App::spawn(cfg).await.unwrap();
        let r = client
            .get(
                &format!(
                    "http://{}{}",
                    gw.proxy_addr(),
                    name_filter("starts_with", "Tier1")
                ),
                &[("authorization", &format!("Zoho-oauthtoken {KEY}"))],
            )
            .await;
        assert_eq!(r.status, 200);
        gw.shutdown().await;
    }
    assert_eq!(sim.handle().token_grants(), 1);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let _ = std::fs::remove_dir_all(&dir);
    sim.shutdown().await;
}

fn rand_suffix() -> String {
    format!("{}-{:?}", std::process::id(), std::thread::current().id()).replace(['(', ')'], "")
        + &format!(
            "-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        )
}

#[tokio::test]
async fn pass_through_tokens_never_share_answers() {
    let h = Harness::start_with(scoped_sim(), PASS_THROUGH).await;
    let (id, secret, refresh) = SimConfig::demo_credentials();
    let sim_url = h.sim.base_url();
    let x = fetch_token(&sim_url, &id, &secret, &refresh).await;
    let y = fetch_token(&sim_url, &id, &secret, &refresh).await;
    let z = fetch_token(&sim_url, &id, &secret, "1000.wrong.scope").await;
    let url = h.url(&name_filter("starts_with", "Tier1"));
    let as_token = |t: &str| {
        let auth = format!("Zoho-oauthtoken {t}");
        let client = h.client.clone();
        let url = url.clone();
        async move {
            client
                .get(
                    &url,
                    &[
                        ("x-gateway-key", "pass-client-key"),
                        ("authorization", &auth),
                    ],
                )
                .await
        }
    };
    let calls = || h.sim().calls(SimRoute::AssociatedUsersCount);
    assert!(as_token(&x).await.cache_status().contains("fwd=miss"));
    assert!(as_token(&y).await.cache_status().contains("fwd=miss"));
    assert_eq!(calls(), 2);
    assert!(as_token(&x).await.cache_status().contains("; hit"));
    assert!(as_token(&y).await.cache_status().contains("; hit"));
    assert_eq!(calls(), 2);

    // A scope mismatch is relayed and cached for nobody.
    for expected_calls in [3, 4] {
        let r = as_token(&z).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.json()["code"], "OAUTH_SCOPE_MISMATCH");
        assert_eq!(calls(), expected_calls);
    }
    // The gateway key alone is not a Zoho token.
    let none = h
        .client
        .get(&url, &[("x-gateway-key", "pass-client-key")])
        .await;
    assert_eq!(none.status, 401);
    assert_eq!(
        none.header("x-zoho-gateway-error"),
        Some("missing_zoho_token")
    );
    assert_eq!(calls(), 4);
    // The gateway holds no credentials for a pass-through tenant and never asks for a token.
    let m = h.metrics().await;
    assert!(
        !m.lines()
            .any(|l| l.starts_with("zoho_gateway_token_refreshes_total")
                && l.contains("tenant=\"p\"")),
        "{m}"
    );
}

#[tokio::test]
async fn keys_bound_to_routes() {
    let extra = r#"
[clients.countonly]
tenant = "a"
key = "count-only-key"
routes = ["passthrough"]
"#;
    let h = Harness::start_with(SimConfig::default(), extra).await;
    let r = h
        .client
        .get(
            &h.url(&name_filter("starts_with", "Tier1")),
            &[("x-gateway-key", "count-only-key")],
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["code"], "NO_PERMISSION");
    assert_eq!(h.sim().total_api_calls(), 0);
}

/// A failing accounts server: the failure and its hold survive restarts, so a restart loop does
/// not hammer the token endpoint (nor spend Zoho's grant budget).
#[tokio::test]
async fn failed_grants_and_holds_survive_restarts() {
    let sim = Simulator::spawn(SimConfig::default()).await.unwrap();
    sim.handle().set_token_endpoint_down(true);
    let dir = std::env::temp_dir().join(format!("zgw-hold-{}", rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("tokens.json");
    let mut cfg = gateway_config(&sim.base_url(), "");
    cfg.tenants.truncate(1);
    cfg.clients.retain(|_, c| c.tenant.index() == 0);
    cfg.tenants[0].token_state_file = Some(state.clone());
    let client = TestClient::new();
    for start in 0..5 {
        let gw = App::spawn(cfg.clone()).await.unwrap();
        if start == 0 {
            let handle = sim.handle();
            wait_until("the first grant attempt", || {
                handle.calls(SimRoute::Token) == 1
            })
            .await;
            let tokens = gw.gateway().tenants()[0].tokens.clone();
            wait_until("the failure recorded", || {
                tokens.health() != zoho_gateway::token::TokenHealth::Missing
            })
            .await;
        }
        let r = client
            .get(
                &format!(
                    "http://{}{}",
                    gw.proxy_addr(),
                    name_filter("equal", "Tier1")
                ),
                &[("authorization", &format!("Zoho-oauthtoken {KEY}"))],
            )
            .await;
        assert_eq!(r.status, 503);
        assert_eq!(r.header("x-zoho-gateway-error"), Some("token_unavailable"));
        gw.shutdown().await;
    }
    assert_eq!(
        sim.handle().calls(SimRoute::Token),
        1,
        "one attempt across five starts"
    );
    let _ = std::fs::remove_dir_all(&dir);
    sim.shutdown().await;
}
