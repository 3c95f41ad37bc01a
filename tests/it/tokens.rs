//! Tokens, tenants and client access, against the simulator's token endpoint and API.
//! Token lifetimes run on the gateway's manual clock; the simulator's own clock is real time.

use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use zoho_crm_simulator::{SimConfig, SimRoute, Simulator};
use zoho_gateway::App;
use zoho_gateway::clock::Clock;
use zoho_gateway::config::RawConfig;

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
            h.get(&starts_with("Tier", 1 + i % 200)).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().status.as_u16() / 100, 2);
    }
    // Tenant a refreshed once; tenant b's refresher may also have woken at the advance.
    let grants = h.sim().token_grants();
    assert!((3..=4).contains(&grants), "{grants} grants");
    let m = h.metrics().await;
    assert_eq!(
        m.get(
            "zoho_gateway_token_refreshes_total",
            &[("outcome", "success"), ("tenant", "a")]
        ),
        Some(2.0),
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
    miss.assert_gateway_error(503, "SERVICE_UNAVAILABLE", "token_unavailable");
    let ready = h.admin_get("/readyz", &[]).await;
    // Neither tenant can get a token, but tenant a's cached answers still serve: ready (the
    // README's rule: a usable token, cached answers, or pass-through), the failure named.
    let body = String::from_utf8_lossy(&ready.body);
    assert_eq!(ready.status, 200, "{body}");
    assert!(
        body.contains("tenant a: token failing: unreachable")
            && body.contains(
                "tenant a: token failing: unreachable; cannot get a token, next attempt in"
            )
            && body.contains("; serving cached answers"),
        "{body}"
    );
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
    assert_eq!(h.calls(), 3);
}

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
    wait_until("a failed refresh-ahead", || {
        h.metrics_now()
            .get(
                "zoho_gateway_token_refreshes_total",
                &[("outcome", "unreachable"), ("tenant", "a")],
            )
            .is_some_and(|n| n >= 1.0)
    })
    .await;
    let r = h.get(&name_filter("starts_with", "Sales")).await;
    assert_eq!(r.status, 200, "the current token still works: {:?}", r.body);
    assert_eq!(h.sim().token_grants(), grants_before);
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
    assert!(as_token(&x).await.cache_status().contains("fwd=miss"));
    assert!(as_token(&y).await.cache_status().contains("fwd=miss"));
    assert_eq!(h.calls(), 2);
    assert!(as_token(&x).await.cache_status().contains("; hit"));
    assert!(as_token(&y).await.cache_status().contains("; hit"));
    assert_eq!(h.calls(), 2);

    // A scope mismatch is relayed and cached for nobody.
    for expected_calls in [3, 4] {
        let r = as_token(&z).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.json()["code"], "OAUTH_SCOPE_MISMATCH");
        assert_eq!(h.calls(), expected_calls);
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
    assert_eq!(h.calls(), 4);
    // The gateway holds no credentials for a pass-through tenant and never asks for a token.
    let m = h.metrics().await;
    assert!(
        m.samples("zoho_gateway_token_refreshes_total")
            .all(|s| !s.has(&[("tenant", "p")])),
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

/// A fake accounts server: answers every request with the current `(status, body)` and counts
/// them.
struct FakeAccounts {
    url: String,
    answer: Arc<std::sync::Mutex<(u16, String)>>,
    calls: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeAccounts {
    async fn start(status: u16, body: &str) -> Self {
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let answer = Arc::new(std::sync::Mutex::new((status, body.to_owned())));
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (a, c) = (answer.clone(), calls.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (a, c) = (a.clone(), c.clone());
                let svc = service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                    c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let (status, body) = a.lock().unwrap().clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                                .unwrap(),
                        )
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc),
                );
            }
        });
        FakeAccounts {
            url,
            answer,
            calls,
            task,
        }
    }

    fn answer(&self, status: u16, body: &str) {
        *self.answer.lock().unwrap() = (status, body.to_owned());
    }

    fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The simulator for the API, `fake` for tenant `a`'s tokens (one tenant), a manual clock.
async fn start_with_fake_accounts(
    fake: &FakeAccounts,
) -> (
    zoho_crm_simulator::RunningSimulator,
    zoho_gateway::Running,
    Arc<zoho_gateway::clock::ManualClock>,
) {
    let sim = Simulator::spawn(roomy_sim()).await.unwrap();
    let mut cfg = gateway_config(&sim.base_url(), "");
    cfg.tenants.truncate(1);
    cfg.clients
        .retain(|_, c| c.tenant == zoho_gateway::config::TenantId(0));
    cfg.tenants[0].token_url = format!("{}/oauth/v2/token", fake.url);
    let (clock, manual) = Clock::manual();
    let gw = App::spawn_with_clock(cfg, clock).await.unwrap();
    (sim, gw, manual)
}

/// Tenant a's `zoho_gateway_token_lockout` gauge, scraped from `gw`'s admin `/metrics`.
async fn token_lockout(gw: &zoho_gateway::Running) -> Option<f64> {
    let text = String::from_utf8(admin_get(gw, "/metrics").await.body.to_vec()).unwrap();
    Metrics::parse(text).get("zoho_gateway_token_lockout", &[("tenant", "a")])
}

async fn get_count(gw: &zoho_gateway::Running, filter: &str) -> Resp {
    TestClient::new()
        .get(
            &format!("http://{}{}", gw.proxy_addr(), name_filter("equal", filter)),
            &[("authorization", &format!("Zoho-oauthtoken {KEY}"))],
        )
        .await
}

async fn admin_get(gw: &zoho_gateway::Running, path: &str) -> Resp {
    TestClient::new()
        .get(&format!("http://{}{path}", gw.admin_addr()), &[])
        .await
}

/// Issue 13, item 2: a 5xx, an unknown error or an empty object from the accounts server is a
/// transient failure — a 5 s hold (with `Retry-After: 5`), no lockout, `/readyz` 503 naming the
/// tenant — and the next attempt after the hold succeeds.
#[tokio::test]
async fn a_transient_accounts_error_is_a_short_hold_not_a_lockout() {
    for (status, body) in [
        (503, r#"{"message":"Service temporarily unavailable"}"#),
        (200, r#"{"error":"internal_error"}"#),
        (200, "{}"),
    ] {
        let fake = FakeAccounts::start(status, body).await;
        let (sim, gw, clock) = start_with_fake_accounts(&fake).await;
        let tokens = gw.gateway().tenants()[0].tokens.clone();
        wait_until("the first grant attempt fails", || {
            fake.calls() == 1 && tokens.health() != zoho_gateway::token::TokenHealth::Missing
        })
        .await;

        let r = get_count(&gw, "Tier1").await;
        assert_eq!(r.status, 503, "{status} {body}");
        assert_eq!(r.header("x-zoho-gateway-error"), Some("token_unavailable"));
        assert_eq!(
            r.json()["details"]["reason"],
            "unreachable",
            "{status} {body}"
        );
        assert_eq!(r.header("retry-after"), Some("5"), "{status} {body}");
        assert_eq!(token_lockout(&gw).await, Some(0.0));
        let ready = admin_get(&gw, "/readyz").await;
        assert_eq!(ready.status, 503);
        let text = String::from_utf8_lossy(&ready.body);
        assert!(
            text.contains("tenant a: token failing: unreachable; cannot get a token"),
            "{text}"
        );

        // The accounts server recovers; after the 5 s hold the refresher gets a token.
        let (id, secret, refresh) = SimConfig::demo_credentials();
        let token = fetch_token(&sim.base_url(), &id, &secret, &refresh).await;
        fake.answer(
            200,
            &format!(r#"{{"access_token":"{token}","expires_in":3600}}"#),
        );
        clock.advance(Duration::from_secs(5));
        wait_until("the grant after the hold", || fake.calls() == 2).await;
        let r = get_count(&gw, "Tier1").await;
        assert_eq!(r.status, 200, "{status} {body}: {:?}", r.body);
        assert_eq!(admin_get(&gw, "/readyz").await.status, 200);
        gw.shutdown().await;
        sim.shutdown().await;
        fake.task.abort();
    }
}

/// Consecutive transient failures back off: 5 s, then 10 s, then 20 s.
#[tokio::test]
async fn transient_token_failures_back_off() {
    let fake = FakeAccounts::start(502, "").await;
    let (sim, gw, clock) = start_with_fake_accounts(&fake).await;
    for (n, hold) in [(1, 5), (2, 10), (3, 20)] {
        wait_until("a grant attempt", || fake.calls() == n).await;
        let tokens = gw.gateway().tenants()[0].tokens.clone();
        wait_until("the failure recorded", || {
            matches!(tokens.health(), zoho_gateway::token::TokenHealth::Failing { retry_after, .. } if retry_after.as_secs() + 1 >= hold)
        })
        .await;
        let r = get_count(&gw, "Tier1").await;
        assert_eq!(r.header("retry-after"), Some(hold.to_string().as_str()));
        clock.advance(Duration::from_secs(hold));
    }
    gw.shutdown().await;
    sim.shutdown().await;
    fake.task.abort();
}

/// Issue 13, items 2 and 6: Zoho's documented throttle answer starts the lockout, and
/// `Retry-After` tells the time left of it (not a fixed 5 s).
#[tokio::test]
async fn the_throttle_locks_out_and_retry_after_tells_the_time_left() {
    let fake = FakeAccounts::start(
        200,
        r#"{"error":"Access Denied","error_description":"You have made too many requests continuously. Please try again after some time."}"#,
    )
    .await;
    let (sim, gw, clock) = start_with_fake_accounts(&fake).await;
    let tokens = gw.gateway().tenants()[0].tokens.clone();
    wait_until("the throttled attempt", || {
        fake.calls() == 1 && tokens.health() != zoho_gateway::token::TokenHealth::Missing
    })
    .await;
    let r = get_count(&gw, "Tier1").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["details"]["reason"], "throttled");
    assert_eq!(r.header("retry-after"), Some("900"));
    assert_eq!(token_lockout(&gw).await, Some(1.0));
    clock.advance(Duration::from_secs(300));
    let r = get_count(&gw, "Tier2").await;
    assert_eq!(r.header("retry-after"), Some("600"));
    let ready = admin_get(&gw, "/readyz").await;
    assert_eq!(ready.status, 503);
    assert!(
        String::from_utf8_lossy(&ready.body).contains("next attempt in 600 s"),
        "{:?}",
        ready.body
    );
    assert_eq!(fake.calls(), 1, "no attempt during the lockout");
    gw.shutdown().await;
    sim.shutdown().await;
    fake.task.abort();
}

/// Issue 13, item 4: `expires_in` = u64::MAX is a failed grant, not a panic; the refresher
/// survives and gets a token once the accounts server answers sensibly.
#[tokio::test]
async fn an_absurd_token_lifetime_is_a_failed_grant_not_a_panic() {
    let fake = FakeAccounts::start(
        200,
        r#"{"access_token":"1000.x.y","expires_in":18446744073709551615}"#,
    )
    .await;
    let (sim, gw, clock) = start_with_fake_accounts(&fake).await;
    let tokens = gw.gateway().tenants()[0].tokens.clone();
    wait_until("the first grant", || {
        fake.calls() == 1 && tokens.health() != zoho_gateway::token::TokenHealth::Missing
    })
    .await;
    let r = get_count(&gw, "Tier1").await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(r.json()["details"]["reason"], "unreachable");

    let (id, secret, refresh) = SimConfig::demo_credentials();
    let token = fetch_token(&sim.base_url(), &id, &secret, &refresh).await;
    fake.answer(
        200,
        &format!(r#"{{"access_token":"{token}","expires_in":3600}}"#),
    );
    clock.advance(Duration::from_secs(5));
    wait_until("the refresher's next grant", || fake.calls() == 2).await;
    assert_eq!(get_count(&gw, "Tier1").await.status, 200);
    gw.shutdown().await;
    sim.shutdown().await;
    fake.task.abort();
}

/// A state file with absurd times (hand-edited, corrupted) neither panics nor locks out.
#[tokio::test]
async fn absurd_times_in_the_state_file_are_not_trusted() {
    let sim = Simulator::spawn(roomy_sim()).await.unwrap();
    let dir = std::env::temp_dir().join(format!("zgw-absurd-{}", rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("tokens.json");
    let mut cfg = gateway_config(&sim.base_url(), "");
    cfg.tenants.truncate(1);
    cfg.clients
        .retain(|_, c| c.tenant == zoho_gateway::config::TenantId(0));
    cfg.tenants[0].token_state_file = Some(state.clone());
    // Write a genuine file first, then push its times to u64::MAX.
    let gw = App::spawn(cfg.clone()).await.unwrap();
    let handle = sim.handle();
    wait_until("the first grant", || handle.token_grants() == 1).await;
    let tokens = gw.gateway().tenants()[0].tokens.clone();
    wait_until("the state file", || {
        tokens.health() == zoho_gateway::token::TokenHealth::Valid && state.exists()
    })
    .await;
    gw.shutdown().await;
    let mut file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    file["expires_at_unix"] = u64::MAX.into();
    file["hold_until_unix"] = u64::MAX.into();
    file["hold_reason"] = "throttled".into();
    std::fs::write(&state, serde_json::to_vec(&file).unwrap()).unwrap();

    let gw = App::spawn(cfg).await.unwrap();
    wait_until("a fresh grant instead of the untrusted token", || {
        handle.token_grants() == 2
    })
    .await;
    assert_eq!(get_count(&gw, "Tier1").await.status, 200);
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    sim.shutdown().await;
}

/// One failing tenant among several is named by `/readyz` but does not take the replica out of
/// rotation: every replica shares that tenant, and the other tenants would go down with it.
#[tokio::test]
async fn one_failing_tenant_among_several_is_reported_not_unready() {
    let (id, secret, refresh) = SimConfig::demo_credentials();
    let h = Harness::start_configured(SimConfig::default(), |url| {
        let tenant = |name: &str, refresh: &str| {
            format!(
                "[tenants.{name}]\napi_base = \"{url}\"\naccounts_url = \"{url}\"\n\
                 client_id = \"{id}\"\nclient_secret = \"{secret}\"\nrefresh_token = \"{refresh}\"\n\
                 [clients.{name}]\ntenant = \"{name}\"\nkey = \"key-{name}\"\n"
            )
        };
        let toml = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
             [logging]\nfilter = \"warn\"\n{}{}",
            tenant("good", &refresh),
            tenant("bad", "1000.unknown-to-zoho.refresh-token"),
        );
        zoho_gateway::config::RawConfig::from_toml_str(&toml)
            .unwrap()
            .validate()
            .unwrap()
    })
    .await;
    let q = name_filter("starts_with", "Tier1");
    let good = h
        .client
        .get(&h.url(&q), &[("x-gateway-key", "key-good")])
        .await;
    assert_eq!(good.status, 200);
    let bad = h
        .client
        .get(&h.url(&q), &[("x-gateway-key", "key-bad")])
        .await;
    bad.assert_gateway_error(503, "SERVICE_UNAVAILABLE", "token_unavailable");
    let ready = h.admin_get("/readyz", &[]).await;
    let body = String::from_utf8_lossy(&ready.body).into_owned();
    assert_eq!(ready.status, 200, "{body}");
    assert!(body.contains("tenant good: token valid"), "{body}");
    assert!(body.contains("tenant bad: token failing"), "{body}");
}
