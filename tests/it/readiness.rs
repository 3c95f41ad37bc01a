//! `/readyz`: a replica is ready when at least one tenant can serve — it holds a usable token,
//! or the cache holds answers of it, or it is a pass-through tenant whose clients bring their
//! own tokens (README, Metrics and Tokens). Token failures are injected on the simulator.

use crate::support::*;
use zoho_crm_simulator::SimConfig;
use zoho_gateway::config::RawConfig;

/// One managed tenant `a` on the simulator (key [`KEY`]), plus `rest`.
fn one_tenant(sim_url: &str, rest: &str) -> zoho_gateway::config::GatewayConfig {
    let (id, secret, refresh) = SimConfig::demo_credentials();
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         [logging]\nfilter = \"warn\"\n\
         [tenants.a]\napi_base = \"{sim_url}\"\naccounts_url = \"{sim_url}\"\n\
         client_id = \"{id}\"\nclient_secret = \"{secret}\"\nrefresh_token = \"{refresh}\"\n\
         [clients.a]\ntenant = \"a\"\nkey = \"{KEY}\"\n{}",
        rest.replace("{sim}", sim_url)
    );
    RawConfig::from_toml_str(&toml).unwrap().validate().unwrap()
}

/// Takes tenant `a`'s token away: the token endpoint goes down, Zoho revokes the access token,
/// and a cold request meets the 401, fails to get a new token and gets a 503.
async fn break_the_token(h: &Harness) {
    h.sim().set_token_endpoint_down(true);
    h.sim().revoke_access_tokens();
    let cold = h.get(&name_filter("equal", "Sales")).await;
    cold.assert_gateway_error(503, "SERVICE_UNAVAILABLE", "token_unavailable");
}

async fn readyz(h: &Harness) -> (u16, String) {
    let r = h.admin_get("/readyz", &[]).await;
    (
        r.status.as_u16(),
        String::from_utf8_lossy(&r.body).into_owned(),
    )
}

/// The tester's scenario: an entry is warm, then the token is lost. Cached routes still answer
/// (hits need no token), so the replica stays in rotation; the body names the failure.
#[tokio::test]
async fn ready_while_the_only_tenant_serves_cached_answers_without_a_token() {
    let h = Harness::start_configured(SimConfig::default(), |url| one_tenant(url, "")).await;
    let q = name_filter("starts_with", "Tier1");
    assert_eq!(h.get(&q).await.status, 200);
    break_the_token(&h).await;

    let hit = h.get(&q).await;
    assert_eq!(hit.status, 200);
    assert!(
        hit.cache_status().contains("; hit"),
        "{}",
        hit.cache_status()
    );
    let (status, body) = readyz(&h).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("ready\n"), "{body}");
    assert!(
        body.contains("tenant a: token failing: unreachable; cannot get a token")
            && body.contains("; serving cached answers"),
        "{body}"
    );
    assert_eq!(h.calls(), 2, "the warm-up and the cold request's 401");
}

/// The same failure with nothing cached: no tenant can serve, the replica is unready.
#[tokio::test]
async fn unready_when_no_tenant_can_serve() {
    let h = Harness::start_configured(SimConfig::default(), |url| one_tenant(url, "")).await;
    let tokens = h.gw.gateway().tenants()[0].tokens.clone();
    wait_until("the first grant", || tokens.generation() == 1).await;
    assert_eq!(readyz(&h).await.0, 200);
    break_the_token(&h).await;
    let (status, body) = readyz(&h).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("not ready: no tenant can serve\n")
            && body.contains("tenant a: token failing: unreachable")
            && !body.contains("serving cached answers"),
        "{body}"
    );
}

/// A pass-through tenant can always serve (its clients bring their own Zoho tokens), so a
/// failing managed tenant beside it does not take the replica out of rotation.
#[tokio::test]
async fn a_pass_through_tenant_keeps_the_replica_ready() {
    let h =
        Harness::start_configured(SimConfig::default(), |url| one_tenant(url, PASS_THROUGH)).await;
    break_the_token(&h).await;
    let (status, body) = readyz(&h).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("tenant a: token failing")
            && body.contains("tenant p: pass-through (clients' own tokens)"),
        "{body}"
    );
}
