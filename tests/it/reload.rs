//! Live tenant changes (what SIGHUP runs, in process): under load, a tenant added, one removed
//! and one with a new refresh token, with no failed request and no lost cache entry for the
//! unchanged tenant (counted by the simulator), the removed tenant's request in flight
//! finishing, its key refused afterwards, and the changed tenant on a fresh token; an invalid
//! file is refused and counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::*;
use zoho_crm_simulator::{SimConfig, SimRefreshToken, SimRoute};
use zoho_gateway::config::{GatewayConfig, RawConfig};

const R2: &str = "1000.second.refresh-token";
const R3: &str = "1000.third.refresh-token";

/// The simulator's demo client with two more refresh tokens.
fn sim_config() -> SimConfig {
    let mut cfg = SimConfig::default();
    for token in [R2, R3] {
        cfg.clients[0].refresh_tokens.push(SimRefreshToken::new(
            token,
            &["ZohoCRM.settings.user_groups.ALL"],
        ));
    }
    cfg
}

/// `(tenant, refresh token)` pairs, each tenant with the client key `key-{tenant}`.
fn config(sim: &str, tenants: &[(&str, &str)]) -> String {
    let (id, secret, _) = SimConfig::demo_credentials();
    let mut toml = String::from(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[logging]\nfilter = \"warn\"\n",
    );
    for (name, refresh) in tenants {
        toml.push_str(&format!(
            "[tenants.{name}]\napi_base = \"{sim}\"\naccounts_url = \"{sim}\"\nclient_id = \"{id}\"\n\
             client_secret = \"{secret}\"\nrefresh_token = \"{refresh}\"\n\
             [clients.{name}]\ntenant = \"{name}\"\nkey = \"key-{name}\"\n"
        ));
    }
    toml
}

fn validated(toml: &str) -> GatewayConfig {
    RawConfig::from_toml_str(toml).unwrap().validate().unwrap()
}

/// The count question each tenant asks (distinct raw queries, so the simulator counts them
/// apart).
fn question(tenant: &str) -> String {
    let n = match tenant {
        "a" => 1,
        "b" => 2,
        "r" => 3,
        _ => 4,
    };
    starts_with("Tier", n)
}

async fn ask(h: &Harness, tenant: &str, q: &str) -> Resp {
    let key = format!("key-{tenant}");
    h.client.get(&h.url(q), &[("x-gateway-key", &key)]).await
}

#[tokio::test]
async fn tenants_added_removed_and_rekeyed_live_under_load() {
    let (_, _, r1) = SimConfig::demo_credentials();
    let before = [("a", r1.as_str()), ("b", R2), ("r", r1.as_str())];
    let mut sim_url = String::new();
    let h = Harness::start_configured(sim_config(), |url| {
        sim_url = url.to_owned();
        validated(&config(url, &before))
    })
    .await;
    let sim = h.sim();
    let calls = |q: &str| {
        sim.query_calls(
            SimRoute::AssociatedUsersCount,
            &q[q.find('?').unwrap() + 1..],
        )
    };

    // Prime: tenant a's two questions, b's one.
    let a_questions = [question("a"), starts_with("Sales", 1)];
    for q in &a_questions {
        assert_eq!(ask(&h, "a", q).await.status, 200);
    }
    assert_eq!(ask(&h, "b", &question("b")).await.status, 200);
    let a_calls: Vec<u64> = a_questions.iter().map(|q| calls(q)).collect();
    assert_eq!(a_calls, [1, 1]);

    // Load on the unchanged tenant for the whole reload.
    let h = Arc::new(h);
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|i| {
            let (h, stop, q) = (h.clone(), stop.clone(), a_questions[i % 2].clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                while !stop.load(Ordering::Relaxed) || answers.is_empty() {
                    let r = ask(&h, "a", &q).await;
                    answers.push((r.status, r.cache_status().to_owned()));
                }
                answers
            })
        })
        .collect();

    // Tenant r has a request in flight when it is removed.
    sim.set_latency(Duration::from_millis(400));
    let in_flight = {
        let h = h.clone();
        tokio::spawn(async move { ask(&h, "r", &question("r")).await })
    };
    sim.wait_for_in_flight(1).await;

    let after = [("a", r1.as_str()), ("b", R3), ("n", r1.as_str())];
    let summary =
        h.gw.reload(validated(&config(&sim_url, &after)))
            .expect("applied");
    assert_eq!(summary.added, ["n"]);
    assert_eq!(summary.removed, ["r"]);
    assert_eq!(summary.changed, ["b"]);
    assert_eq!(summary.new_identity, ["b"]);

    // The removed tenant's request finishes; then its key is unknown.
    let finished = in_flight.await.unwrap();
    assert_eq!(finished.status, 200, "{:?}", finished.body);
    ask(&h, "r", &question("r"))
        .await
        .assert_gateway_error(401, "INVALID_TOKEN", "unknown_key");
    sim.clear_faults();

    // Tenant b: its entries went with its old identity, and it asks with a token from its new
    // refresh token (the old one is revoked: a token from it would get 401, and a new grant
    // with it `invalid_code`).
    assert!(sim.revoke_refresh_token(R2));
    let b = ask(&h, "b", &question("b")).await;
    assert_eq!(b.status, 200, "{:?}", b.body);
    assert!(
        b.cache_status().contains("fwd=miss"),
        "{}",
        b.cache_status()
    );
    assert_eq!(calls(&question("b")), 2);

    // Tenant n serves and caches.
    assert_eq!(ask(&h, "n", &question("n")).await.status, 200);
    assert!(
        ask(&h, "n", &question("n"))
            .await
            .cache_status()
            .contains("hit")
    );
    assert_eq!(calls(&question("n")), 1);

    stop.store(true, Ordering::Relaxed);
    let mut served = 0;
    for task in load {
        for (status, cache_status) in task.await.unwrap() {
            assert_eq!(status, 200);
            assert!(cache_status.contains("; hit"), "{cache_status}");
            served += 1;
        }
    }
    assert!(served >= 4);
    // Tenant a's cache is intact: still one upstream call per question.
    let a_after: Vec<u64> = a_questions.iter().map(|q| calls(q)).collect();
    assert_eq!(a_after, a_calls, "after {served} requests under load");

    let m = h.metrics().await;
    assert_eq!(
        m.get(
            "zoho_gateway_config_reloads_total",
            &[("result", "applied")]
        ),
        Some(1.0)
    );
    let gauge = |tenant: &str| {
        m.get(
            "zoho_gateway_token_expiry_timestamp_seconds",
            &[("tenant", tenant)],
        )
    };
    assert!(gauge("n").is_some_and(|v| v > 0.0), "{m}");
    assert_eq!(gauge("r"), None, "a removed tenant's gauges leave: {m}");
}

#[tokio::test]
async fn an_invalid_file_is_refused_counted_and_changes_nothing() {
    let h = Harness::start().await;
    assert_eq!(h.get(&starts_with("Tier", 1)).await.status, 200);
    let dir = std::env::temp_dir().join(format!("zoho-gateway-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.toml");
    // Valid TOML, but a client of a tenant that does not exist.
    std::fs::write(
        &path,
        gateway_toml(
            &h.sim.base_url(),
            Extra {
                rest: "[clients.c]\ntenant = \"nope\"\nkey = \"k\"",
                ..Extra::default()
            },
        ),
    )
    .unwrap();
    let err = h.gw.reload_file(&path).expect_err("refused");
    assert!(
        zoho_gateway::telemetry::ErrorChain(&err)
            .to_string()
            .contains("clients.c.tenant"),
        "{err:?}"
    );
    let hit = h.get(&starts_with("Tier", 1)).await;
    assert!(hit.cache_status().contains("hit"), "{}", hit.cache_status());
    assert_eq!(h.calls(), 1);
    let m = h.metrics().await;
    assert_eq!(
        m.get(
            "zoho_gateway_config_reloads_total",
            &[("result", "invalid")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.get(
            "zoho_gateway_config_reloads_total",
            &[("result", "applied")]
        ),
        Some(0.0)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Reloads that flip a tenant between two refresh tokens never make the gateway ask Zoho for
/// more grants than the tenant's budget (10 per 10 minutes), so Zoho's throttle never locks
/// it out: new credentials keep the tenant's recent grant attempts.
#[tokio::test]
async fn flipping_credentials_by_reload_stays_within_the_grant_budget() {
    let (_, _, r1) = SimConfig::demo_credentials();
    let mut sim_url = String::new();
    let h = Harness::start_configured(sim_config(), |url| {
        sim_url = url.to_owned();
        validated(&config(url, &[("b", r1.as_str())]))
    })
    .await;
    let sim = h.sim();
    let mut refused = 0;
    for i in 0..25 {
        let token = if i % 2 == 0 { R2 } else { r1.as_str() };
        h.gw.reload(validated(&config(&sim_url, &[("b", token)])))
            .expect("applied");
        // A new identity misses its cache: the miss needs a token.
        let r = ask(&h, "b", &starts_with("Tier", i % 5 + 1)).await;
        match r.status.as_u16() {
            200 => {}
            503 => {
                r.assert_gateway_error(503, "SERVICE_UNAVAILABLE", "token_unavailable");
                assert!(
                    !String::from_utf8_lossy(&r.body).contains("throttled"),
                    "{:?}",
                    r.body
                );
                refused += 1;
            }
            other => panic!("{other}: {:?}", r.body),
        }
    }
    assert!(sim.token_grants() <= 10, "{} grants", sim.token_grants());
    assert!(refused > 0, "the budget was reached and answered locally");
    let m = h.metrics().await;
    assert_eq!(
        m.get("zoho_gateway_token_lockout", &[("tenant", "b")]),
        Some(0.0),
        "{m}"
    );
    h.shutdown().await;
}

/// `(status, Cache-Status)` TTL of a stored answer.
fn stored_ttl(r: &Resp) -> u64 {
    let cs = r.cache_status();
    assert!(cs.contains("stored"), "{cs}");
    cs.split("ttl=").nth(1).unwrap().parse().unwrap()
}

/// A reload that changes a restart-only setting is refused as a whole: the keys are named, it
/// is counted `refused`, and a live change in the same file (a TTL) is not applied either.
#[tokio::test]
async fn a_reload_changing_the_cache_bound_is_refused_whole() {
    let h = Harness::start().await;
    assert!((54..=60).contains(&stored_ttl(&h.get(&starts_with("Tier", 1)).await)));
    let new = gateway_config(
        &h.sim.base_url(),
        "[cache]\nmax_bytes = 1048576\n[routes.associated_users_count]\nttl = \"120s\"",
    );
    let err = h.gw.reload(new).expect_err("refused");
    let text = zoho_gateway::telemetry::ErrorChain(&err).to_string();
    assert!(
        matches!(&err, zoho_gateway::gateway::ReloadError::RestartRequired(keys) if keys == &["cache.max_bytes"]),
        "{text}"
    );
    assert!(
        text.starts_with("cache.max_bytes changed: only a restart"),
        "{text}"
    );
    // The old config stays: the old TTL, the old bound.
    assert!((54..=60).contains(&stored_ttl(&h.get(&starts_with("Tier", 2)).await)));
    assert_eq!(h.gw.gateway().config().cache_max_bytes, 256 * 1024 * 1024);
    let m = h.metrics().await;
    let reloads = |result| m.get("zoho_gateway_config_reloads_total", &[("result", result)]);
    assert_eq!(reloads("refused"), Some(1.0));
    assert_eq!(reloads("applied"), Some(0.0));

    // The same file without the bound change applies.
    let live = gateway_config(
        &h.sim.base_url(),
        "[routes.associated_users_count]\nttl = \"120s\"",
    );
    h.gw.reload(live).expect("applied");
    assert!((108..=120).contains(&stored_ttl(&h.get(&starts_with("Tier", 3)).await)));
}

/// Listener settings need a restart: a new address (and an upstream client setting with it) is
/// refused, every changed key named in file order, and the listener keeps serving.
#[tokio::test]
async fn a_reload_changing_a_listener_is_refused_and_names_the_keys() {
    let h = Harness::start().await;
    let toml = gateway_toml(
        &h.sim.base_url(),
        Extra {
            server: "max_connections = 5",
            rest: "[upstream]\ntimeout = \"5s\"\nmax_retries = 0",
            ..Extra::default()
        },
    )
    .replace(
        "admin_listen = \"127.0.0.1:0\"",
        "admin_listen = \"127.0.0.1:1\"",
    );
    let err = h.gw.reload(validated(&toml)).expect_err("refused");
    match &err {
        zoho_gateway::gateway::ReloadError::RestartRequired(keys) => assert_eq!(
            keys,
            &[
                "server.admin_listen",
                "server.max_connections",
                "upstream.timeout"
            ],
            "max_retries is live and not named"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(h.get(&starts_with("Tier", 1)).await.status, 200);
    let m = h.metrics().await;
    assert_eq!(
        m.get(
            "zoho_gateway_config_reloads_total",
            &[("result", "refused")]
        ),
        Some(1.0)
    );
    assert_eq!(h.gw.gateway().config().upstream.max_retries, 2);
}

/// A client's key replaced by a reload is refused at once, also for a request this gateway has
/// answered over and over (each worker thread remembers a hot request's client and key: that
/// memo must not outlive the reload), while the new key shares the same cached answer.
#[tokio::test]
async fn a_rekeyed_client_old_key_is_refused_even_for_a_hot_request() {
    let (_, _, r1) = SimConfig::demo_credentials();
    let mut sim_url = String::new();
    let h = Harness::start_configured(sim_config(), |url| {
        sim_url = url.to_owned();
        validated(&config(url, &[("a", r1.as_str())]))
    })
    .await;
    let q = question("a");
    // Enough hits for every worker thread to have answered it from its own memo.
    for i in 0..16 {
        let r = ask(&h, "a", &q).await;
        assert_eq!(r.status, 200, "{i}: {:?}", r.body);
    }
    assert_eq!(h.calls(), 1);
    let rekeyed = config(&sim_url, &[("a", r1.as_str())]).replace("\"key-a\"", "\"key-a-2\"");
    h.gw.reload(validated(&rekeyed)).expect("reload");
    for _ in 0..8 {
        let old = ask(&h, "a", &q).await;
        assert_eq!(
            old.status, 401,
            "the old key after the reload: {:?}",
            old.body
        );
        let new = h
            .client
            .get(&h.url(&q), &[("x-gateway-key", "key-a-2")])
            .await;
        assert_eq!(new.status, 200, "{:?}", new.body);
        assert!(new.cache_status().contains("hit"), "{}", new.cache_status());
    }
    assert_eq!(h.calls(), 1);
}
