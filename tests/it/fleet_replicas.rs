//! Three gateway replicas against one simulator and one private `redis-server` (issue 12, "done
//! when"): one upstream call per cold key fleet-wide and L2 answers after L1, one token grant per
//! lifetime and none per restart, the fleet-wide concurrency limit and a dead replica's slots,
//! write-through across replicas, Redis dying and returning mid-load, and no secret in Redis.
//! Skipped with a message when `redis-server` is not installed, unless `CI_REQUIRE_REDIS=1`.

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use zoho_crm_simulator::SimConfig;

use crate::support::replicas::{Fleet3, Replica};
use crate::support::{
    KEY, SEED_CURL, count_calls, name_filter, starts_with, wait_until, with_filters,
};

/// Route lifetimes without jitter, so every replica computes the same numbers.
const ROUTE: &str = "[routes.associated_users_count]\nttl = \"60s\"\nttl_jitter_percent = 0\n";

/// Sum of a counter over the replicas.
fn total(replicas: &[Replica], name: &str, labels: &[(&str, &str)]) -> f64 {
    replicas.iter().map(|r| r.metrics().sum(name, labels)).sum()
}

#[tokio::test]
async fn cold_requests_across_replicas_make_one_call_and_l2_answers_after_l1() {
    let extra = format!("l1_ttl = \"300ms\"\n{ROUTE}");
    let Some(f) = Fleet3::start(3, SimConfig::default(), "", &extra).await else {
        return;
    };
    // The one upstream call lasts long enough for all 300 requests to arrive meanwhile.
    f.sim.handle().set_latency(Duration::from_millis(300));
    let url = with_filters(SEED_CURL);
    let wave = |n: usize| join_all((0..n).map(|i| f.replicas[i % 3].get(&f.client, &url)));
    let first = wave(300).await;
    assert!(first.iter().all(|r| r.status == 200));
    assert!(first.iter().all(|r| r.body == first[0].body));
    assert_eq!(
        count_calls(&f.sim.handle()),
        1,
        "one upstream call fleet-wide"
    );
    let flights = |result| {
        total(
            &f.replicas,
            "zoho_gateway_fleet_flights_total",
            &[("result", result)],
        )
    };
    assert_eq!(flights("owner"), 1.0);
    // The other two replicas waited for it, or found its answer in L2 straight away.
    let shared_hits = first
        .iter()
        .filter(|r| r.cache_status().contains("detail=shared"))
        .count();
    assert!(flights("waited") + shared_hits.min(2) as f64 >= 2.0);

    // After the L1 bound (300 ms) but well inside the answer's 60 s: L2 answers.
    tokio::time::sleep(Duration::from_millis(400)).await;
    f.sim.handle().set_latency(Duration::ZERO);
    let second = wave(300).await;
    assert!(
        second
            .iter()
            .all(|r| r.status == 200 && r.body == first[0].body)
    );
    assert_eq!(
        count_calls(&f.sim.handle()),
        1,
        "the second wave costs nothing"
    );
    let from_l2: Vec<_> = second
        .iter()
        .filter(|r| r.cache_status().contains("detail=shared"))
        .collect();
    assert!(from_l2.len() >= 3, "each replica read L2 again");
    // Age and TTL come from the answer's absolute times: the same on every replica.
    for r in &second {
        let age: u64 = r.header("age").unwrap().parse().unwrap();
        assert!(age <= 2, "age {age}");
        assert!(r.cache_status().contains("ttl=5"), "{}", r.cache_status());
    }
}

#[tokio::test]
async fn replicas_share_one_grant_per_token_lifetime() {
    let sim = SimConfig {
        token_ttl: Duration::from_secs(4),
        ..SimConfig::default()
    };
    let Some(f) = Fleet3::start(3, sim, "refresh_margin = \"1s\"", ROUTE).await else {
        return;
    };
    let sim = f.sim.handle();
    let installed = |r: &Replica| {
        let m = r.metrics();
        m.sum(
            "zoho_gateway_token_refreshes_total",
            &[("outcome", "success")],
        ) + m.sum(
            "zoho_gateway_token_refreshes_total",
            &[("outcome", "adopted")],
        )
    };
    // First lifetime: one grant, adopted by the other two.
    wait_until("every replica holds the first token", || {
        f.replicas.iter().all(|r| installed(r) >= 1.0)
    })
    .await;
    assert_eq!(sim.token_grants(), 1);
    // Second lifetime (refresh-ahead 1 s before expiry): again one grant for all three.
    wait_until("every replica holds the second token", || {
        f.replicas.iter().all(|r| installed(r) >= 2.0)
    })
    .await;
    assert_eq!(sim.token_grants(), 2, "2 lifetimes, 3 replicas: 2 grants");
    let adopted = total(
        &f.replicas,
        "zoho_gateway_token_refreshes_total",
        &[("outcome", "adopted")],
    );
    assert_eq!(adopted, 4.0);
    for (i, r) in f.replicas.iter().enumerate() {
        let resp = r.get(&f.client, &starts_with(&format!("t{i}"), 5)).await;
        assert!(resp.status.is_success(), "{:?}", resp.body);
    }
    assert_eq!(sim.token_grants(), 2);
}

#[tokio::test]
async fn restarting_replicas_ten_times_each_spend_no_grant() {
    let Some(mut f) = Fleet3::start(3, SimConfig::default(), "", ROUTE).await else {
        return;
    };
    let sim = f.sim.handle();
    wait_until("a token", || sim.token_grants() == 1).await;
    for round in 0..10 {
        for i in 0..3 {
            let new = f.spawn().await;
            let old = std::mem::replace(&mut f.replicas[i], new);
            old.stop().await;
            let r = f.replicas[i]
                .get(&f.client, &starts_with(&format!("r{round}x{i}"), 5))
                .await;
            assert!(
                r.status.is_success(),
                "round {round} replica {i}: {:?}",
                r.body
            );
        }
    }
    // 30 starts, without the fleet 30 grants (Zoho throttles after 10): one grant in all.
    assert_eq!(sim.token_grants(), 1);
    for r in &f.replicas {
        let m = r.metrics();
        assert_eq!(m.sum("zoho_gateway_token_lockout", &[]), 0.0);
        assert_eq!(
            m.sum(
                "zoho_gateway_token_refreshes_total",
                &[("outcome", "adopted")]
            ),
            1.0
        );
    }
}

/// Sends one GET through `addr` and ignores whatever happens (a killed replica's clients).
fn fire_and_forget(addr: std::net::SocketAddr, path: String) {
    tokio::spawn(async move {
        let exchange = async {
            let mut s = tokio::net::TcpStream::connect(addr).await?;
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Zoho-oauthtoken {KEY}\r\nConnection: close\r\n\r\n"
            );
            s.write_all(req.as_bytes()).await?;
            let mut sink = Vec::new();
            s.read_to_end(&mut sink).await
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), exchange).await;
    });
}

/// Fleet slots held now by the replica whose owner id is `owner` (unexpired members).
async fn slots_of(f: &Fleet3, owner: &str) -> usize {
    let mut c = f.redis.connection().await;
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut c).await.unwrap();
    let now = secs * 1000 + micros / 1000;
    let members: Vec<(String, u64)> = redis::cmd("ZRANGE")
        .arg("zgw:sem:a")
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut c)
        .await
        .unwrap();
    members
        .iter()
        .filter(|(m, expiry)| m.starts_with(owner) && *expiry > now)
        .count()
}

#[tokio::test]
async fn the_concurrency_limit_holds_fleet_wide_and_a_dead_replicas_slots_lapse() {
    let sim = SimConfig {
        concurrency_limit: 100,
        ..SimConfig::default()
    };
    let extra = format!("slot_lease = \"1s\"\n{ROUTE}");
    let Some(mut f) = Fleet3::start(3, sim, "max_concurrency = 5", &extra).await else {
        return;
    };
    let sim = f.sim.handle();
    // Tokens first, so that the load below measures only the API calls.
    for r in &f.replicas {
        assert!(
            r.get(&f.client, starts_with("warm", 5))
                .await
                .status
                .is_success()
        );
    }
    sim.set_latency(Duration::from_millis(10));
    sim.reset_counters();
    let load = join_all((0..500).map(|i| {
        let r = &f.replicas[i % 3];
        r.get(&f.client, starts_with(&format!("d{i}"), 5))
    }))
    .await;
    assert!(load.iter().all(|r| r.status.is_success()));
    assert_eq!(count_calls(&sim), 500);
    let peak = sim.max_concurrent();
    assert!(peak <= 5, "the simulator saw {peak} calls in flight");
    assert!(peak >= 2, "the load ran concurrently ({peak})");

    // Replica C takes every slot with slow calls, then dies holding them.
    sim.set_latency(Duration::from_millis(300));
    sim.reset_counters();
    let dead = f.replicas.pop().unwrap();
    let owner = dead.fleet().owner().to_owned();
    for i in 0..5 {
        fire_and_forget(dead.proxy, starts_with(&format!("k{i}"), 5));
    }
    sim.wait_for_in_flight(5).await;
    assert_eq!(slots_of(&f, &owner).await, 5);
    dead.kill().await;
    let killed = Instant::now();
    // The survivors' calls wait for the dead replica's slots to lapse, then all go through.
    sim.set_latency(Duration::from_millis(5));
    let first = async {
        let r = f.replicas[0].get(&f.client, &starts_with("after", 5)).await;
        (r, killed.elapsed())
    };
    let rest = join_all((0..40).map(|i| {
        let r = &f.replicas[i % 2];
        r.get(&f.client, starts_with(&format!("s{i}"), 5))
    }));
    let ((first, waited), rest) = tokio::join!(first, rest);
    assert!(first.status.is_success());
    assert!(rest.iter().all(|r| r.status.is_success()));
    assert!(
        waited <= Duration::from_millis(1500),
        "slots back within their lease (1 s): took {waited:?}"
    );
    assert_eq!(slots_of(&f, &owner).await, 0);
    let peak = sim.max_concurrent();
    assert!(peak <= 5, "the simulator saw {peak} calls in flight");
}

#[tokio::test]
async fn a_write_through_one_replica_reaches_the_others_within_a_second() {
    let Some(f) = Fleet3::start(3, SimConfig::default(), "", ROUTE).await else {
        return;
    };
    let url = with_filters(SEED_CURL);
    let before: Vec<_> = join_all(f.replicas.iter().map(|r| r.get(&f.client, &url))).await;
    let groups =
        |r: &crate::support::Resp| r.json()["associated_users_count"].as_array().unwrap().len();
    assert!(before.iter().all(|r| r.status == 200 && groups(r) == 2));
    assert_eq!(count_calls(&f.sim.handle()), 1);

    let tier2 = before[0].group_id("Tier2");
    let deleted = f
        .client
        .send(
            "DELETE",
            &f.replicas[0].url(&format!("/crm/v7/settings/user_groups/{tier2}")),
            &[("authorization", &format!("Zoho-oauthtoken {KEY}"))],
            Bytes::new(),
        )
        .await;
    assert!(deleted.status.is_success(), "{:?}", deleted.body);
    let written = Instant::now();
    for r in &f.replicas[1..] {
        loop {
            let resp = r.get(&f.client, &url).await;
            assert_eq!(resp.status, 200);
            if groups(&resp) == 1 {
                break;
            }
            assert!(
                written.elapsed() < Duration::from_secs(1),
                "replica still serves the answer from before the write"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert!(written.elapsed() < Duration::from_secs(1));
    let a = f.replicas[0].get(&f.client, &url).await;
    assert_eq!(groups(&a), 1);
    // One more upstream call fleet-wide for the new answer, however the replicas met it.
    assert_eq!(count_calls(&f.sim.handle()), 2);
}

#[tokio::test]
async fn redis_dying_mid_load_costs_no_client_error_and_coordination_resumes() {
    let Some(mut f) = Fleet3::start(3, SimConfig::default(), "", ROUTE).await else {
        return;
    };
    let sim = f.sim.handle();
    wait_until("a token", || sim.token_grants() == 1).await;
    let (replicas, client) = (&f.replicas, &f.client);
    let load =
        move |tag: &'static str, n: usize| {
            join_all((0..n).map(move |i| {
                replicas[i % 3].get(client, starts_with(&format!("{tag}{}", i % 20), 5))
            }))
        };
    let redis = &mut f.redis;
    let (during, _) = tokio::join!(load("m", 300), async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        redis.kill().await;
    });
    assert!(
        during.iter().all(|r| r.status.is_success()),
        "no client error"
    );
    for r in &f.replicas {
        assert_eq!(r.fleet().availability().as_str(), "unavailable");
        let ready = f
            .client
            .get(&format!("http://{}/readyz", r.admin), &[])
            .await;
        assert_eq!(ready.status, 200);
        let text = String::from_utf8_lossy(&ready.body).into_owned();
        assert!(
            text.contains("redis: unavailable (local fallback)"),
            "{text}"
        );
    }
    // On their own: still answers, L1 only.
    let alone = load("o", 60).await;
    assert!(alone.iter().all(|r| r.status.is_success()));

    f.redis.restart().await;
    for r in &f.replicas {
        assert!(r.fleet().wait_available(Duration::from_secs(5)).await);
    }
    // Coordination is back: one call for a cold key across the fleet ...
    sim.set_latency(Duration::from_millis(200));
    let before = count_calls(&sim);
    let url = name_filter("equal", "Tier1");
    let wave = join_all((0..60).map(|i| f.replicas[i % 3].get(&f.client, &url))).await;
    assert!(wave.iter().all(|r| r.status.is_success()));
    assert_eq!(count_calls(&sim), before + 1);
    // ... and one grant for the fleet when Zoho drops the token.
    sim.set_latency(Duration::ZERO);
    let grants = sim.token_grants();
    sim.revoke_access_tokens();
    let after =
        join_all((0..3).map(|i| f.replicas[i].get(&f.client, starts_with(&format!("z{i}"), 5))))
            .await;
    assert!(
        after.iter().all(|r| r.status.is_success()),
        "{:?}",
        after[0].body
    );
    assert_eq!(sim.token_grants(), grants + 1);
    let transitions = total(
        &f.replicas,
        "zoho_gateway_redis_transitions_total",
        &[("to", "unavailable")],
    );
    assert_eq!(transitions, 3.0, "one transition per replica");
    f.replicas.clear();
}

#[tokio::test]
async fn redis_holds_no_access_token_refresh_token_or_client_secret() {
    let Some(f) = Fleet3::start(3, SimConfig::default(), "", ROUTE).await else {
        return;
    };
    for (i, r) in f.replicas.iter().enumerate() {
        assert_eq!(r.get(&f.client, &with_filters(SEED_CURL)).await.status, 200);
        assert!(
            r.get(&f.client, starts_with(&format!("s{i}"), 5))
                .await
                .status
                .is_success()
        );
    }
    let token = f.replicas[0]
        .gateway
        .tenant_named("a")
        .unwrap()
        .tokens
        .token()
        .await
        .unwrap();
    let (_, secret, refresh) = SimConfig::demo_credentials();
    let secrets = [token.expose().to_owned(), secret, refresh];
    let mut c = f.redis.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut c)
        .await
        .unwrap();
    // Tenant `a`'s token lives under its name and a one-way fingerprint of its credentials.
    assert!(keys.iter().any(|k| k.starts_with("zgw:tok:a/")), "{keys:?}");
    assert!(keys.iter().any(|k| k.starts_with("zgw:l2:")), "{keys:?}");
    for key in &keys {
        let kind: String = redis::cmd("TYPE")
            .arg(key)
            .query_async(&mut c)
            .await
            .unwrap();
        let mut bytes = key.as_bytes().to_vec();
        match kind.as_str() {
            "string" => {
                let v: Vec<u8> = redis::cmd("GET")
                    .arg(key)
                    .query_async(&mut c)
                    .await
                    .unwrap();
                bytes.extend(v);
            }
            "zset" => {
                let v: Vec<Vec<u8>> = redis::cmd("ZRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut c)
                    .await
                    .unwrap();
                bytes.extend(v.concat());
            }
            other => panic!("unexpected {other} key {key}"),
        }
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut c)
            .await
            .unwrap();
        assert!(ttl > 0, "{key} has no TTL");
        for s in &secrets {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                "a secret in clear under {key}"
            );
        }
    }
}

/// GETs `url` through `rep`, checks that `Cache-Status` contains `want`, and returns the
/// latency and the instant the answer was complete.
async fn timed(
    client: &crate::support::TestClient,
    want: &str,
    rep: &Replica,
    url: String,
) -> (Duration, Instant) {
    let started = Instant::now();
    let resp = rep.get(client, url).await;
    assert!(
        resp.cache_status().contains(want),
        "{}",
        resp.cache_status()
    );
    (started.elapsed(), Instant::now())
}

/// `p`-th percentile (0..=100) of `samples`, in microseconds.
fn percentile(samples: &mut [Duration], p: usize) -> u128 {
    samples.sort();
    let i = (samples.len() * p / 100).min(samples.len() - 1);
    samples[i].as_micros()
}

/// Figures for the report, not a check: the latency an L2 hit adds over an L1 hit, and the
/// latency a cross-replica coalesced miss adds over its owner's own miss (waiter's answer −
/// owner's answer), p50/p99 over 200 distinct keys each, client-side over loopback.
/// `CI_REQUIRE_REDIS=1 cargo test --test it fleet_replicas::figures -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "prints figures; run by hand"]
async fn figures_l2_hit_and_cross_replica_coalesced_miss() {
    let Some(f) = Fleet3::start(2, SimConfig::default(), "", ROUTE).await else {
        return;
    };
    let (a, b) = (&f.replicas[0], &f.replicas[1]);
    let sim = f.sim.handle();
    assert!(
        a.get(&f.client, starts_with("warm", 5))
            .await
            .status
            .is_success()
    );
    assert!(
        b.get(&f.client, starts_with("warm", 5))
            .await
            .status
            .is_success()
    );
    let timed = |want, rep, url| timed(&f.client, want, rep, url);
    let (mut l1, mut l2, mut owner, mut waiter, mut added) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for per_page in 1..=200 {
        let url = format!("{}&per_page={per_page}", name_filter("equal", "Tier1"));
        timed("fwd=miss", a, url.clone()).await;
        l2.push(timed("detail=shared", b, url.clone()).await.0);
        l1.push(timed("; hit; ttl", b, url).await.0);
    }
    sim.set_latency(Duration::from_millis(20));
    for per_page in 1..=200 {
        let url = format!("{}&per_page={per_page}", name_filter("equal", "Tier2"));
        let first = timed("fwd=miss", a, url.clone());
        let second = async {
            sim.wait_for_in_flight(1).await;
            timed("collapsed", b, url).await
        };
        let ((o, o_end), (w, w_end)) = tokio::join!(first, second);
        owner.push(o);
        waiter.push(w);
        added.push(w_end.saturating_duration_since(o_end));
    }
    let line = |name: &str, s: &mut Vec<Duration>| {
        println!(
            "{name:<48} p50 {:>6} µs   p99 {:>6} µs",
            percentile(s, 50),
            percentile(s, 99)
        );
    };
    println!("fleet figures (2 replicas, loopback, simulator latency 20 ms for misses):");
    line("L1 hit (replica B)", &mut l1);
    line("L2 hit (replica B, answer stored by A)", &mut l2);
    let mut l2_added: Vec<_> = l2
        .iter()
        .zip(&l1)
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();
    line("  added by L2 (L2 hit − L1 hit, same key)", &mut l2_added);
    line("owner's miss (replica A, 20 ms upstream)", &mut owner);
    line("coalesced miss on replica B (joined A's call)", &mut waiter);
    line("  added (B's answer after A's answer)", &mut added);
}
