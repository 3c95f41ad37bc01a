//! The fleet tier against a real `redis-server` (issue 12): several replicas (several `Fleet`s)
//! in one process sharing one private Redis. Skips with a message when `redis-server` is not
//! installed, unless `CI_REQUIRE_REDIS=1`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::HeaderValue;
use prometheus::Registry;
use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, DropGuard};
use zoho_gateway::cache::Lifetimes;
use zoho_gateway::canonical::CacheKey;
use zoho_gateway::config::TenantId;
use zoho_gateway::config::{GatewayConfig, RawConfig, Secret};
use zoho_gateway::error::TokenFailure;
use zoho_gateway::fleet::flight::{Completion, FleetFlightError, FleetRole};
use zoho_gateway::fleet::generation::Scope;
use zoho_gateway::fleet::l2::L2Entry;
use zoho_gateway::fleet::lease::LeaseAttempt;
use zoho_gateway::fleet::tokens::SharedRefresh;
use zoho_gateway::fleet::{Availability, Fleet, FleetEvent, Unavailable, Woken};
use zoho_gateway::route::RouteId;

use crate::support::redis_server::RedisServer;

const CLIENT_SECRET: &str = "fleet-test-client-secret-4f1c9a";
const REFRESH_TOKEN: &str = "1000.fleet-test-refresh-token.9d2e7b";
const ACCESS_TOKEN: &str = "1000.fleet-test-access-token-one.77aa01";
const ACCESS_TOKEN_2: &str = "1000.fleet-test-access-token-two.88bb02";
const SEAL_KEY: &str = "fleet-test-seal-key-0123456789abcdef";
const SCOPE: Scope<'static> = Scope {
    tenant: "acme",
    group: "associated_users_count",
};

fn config(url: &str, extra: &str) -> GatewayConfig {
    RawConfig::from_toml_str(&format!(
        r#"
        [tenants.acme]
        api_base = "http://127.0.0.1:9"
        accounts_url = "http://127.0.0.1:9"
        client_id = "fleet-test-client-id"
        client_secret = "{CLIENT_SECRET}"
        refresh_token = "{REFRESH_TOKEN}"
        refresh_budget = 2
        [redis]
        url = "{url}"
        token_encryption_key = "{SEAL_KEY}"
        connect_timeout = "1s"
        command_timeout = "300ms"
        retry_interval = "100ms"
        {extra}
        "#
    ))
    .expect("config parses")
    .validate()
    .expect("config validates")
}

/// One replica's fleet handle; its hub stops when dropped (or when `stop` is called).
struct Replica {
    fleet: Arc<Fleet>,
    hub: Option<DropGuard>,
}

impl Replica {
    async fn start(cfg: &GatewayConfig) -> Self {
        let fleet = Fleet::new(cfg.redis.clone().unwrap(), &Registry::new()).unwrap();
        let shutdown = CancellationToken::new();
        tokio::spawn(fleet.clone().run(shutdown.clone()));
        assert!(fleet.wait_available(Duration::from_secs(5)).await);
        Replica {
            fleet,
            hub: Some(shutdown.drop_guard()),
        }
    }

    /// The replica dies: its hub stops (whatever it holds in Redis stays until it lapses).
    fn stop(&mut self) {
        self.hub.take();
    }
}

impl std::ops::Deref for Replica {
    type Target = Arc<Fleet>;
    fn deref(&self) -> &Arc<Fleet> {
        &self.fleet
    }
}

async fn replicas(cfg: &GatewayConfig, n: usize) -> Vec<Replica> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Replica::start(cfg).await);
    }
    out
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn entry(body: &'static str, generation: u64) -> L2Entry {
    L2Entry {
        status: 200,
        headers: vec![(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body: Bytes::from_static(body.as_bytes()),
        stored_at_unix_ms: unix_ms(),
        upstream_age: 0,
        lifetimes: Lifetimes {
            ttl: Duration::from_secs(60),
            stale_while_revalidate: Duration::from_secs(5),
            stale_if_error: Duration::from_secs(30),
        },
        generation,
    }
}

#[tokio::test]
async fn lease_is_exclusive_lapses_and_release_is_compare_and_delete() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let cfg = config(&redis.url(), "");
    let r = replicas(&cfg, 2).await;
    let ttl = Duration::from_millis(300);
    let LeaseAttempt::Acquired(first) = r[0].try_lease("test-lease", ttl).await.unwrap() else {
        panic!("first acquisition refused");
    };
    let LeaseAttempt::Held(left) = r[1].try_lease("test-lease", ttl).await.unwrap() else {
        panic!("the lease was not exclusive");
    };
    assert!(left > Duration::ZERO && left <= ttl, "{left:?}");
    // The holder never releases (it is stuck): the lease lapses after its TTL.
    tokio::time::sleep(left + Duration::from_millis(50)).await;
    let LeaseAttempt::Acquired(second) = r[1]
        .try_lease("test-lease", Duration::from_secs(30))
        .await
        .unwrap()
    else {
        panic!("a lapsed lease was not taken over");
    };
    // The late first holder's release must not delete its successor's lease.
    assert!(!r[0].release(first, None).await.unwrap());
    assert!(matches!(
        r[0].try_lease("test-lease", ttl).await.unwrap(),
        LeaseAttempt::Held(_)
    ));
    assert!(r[1].release(second, None).await.unwrap());
    assert!(matches!(
        r[0].try_lease("test-lease", ttl).await.unwrap(),
        LeaseAttempt::Acquired(_)
    ));
}

#[tokio::test]
async fn semaphore_never_exceeds_its_limit_and_a_dead_holders_slots_lapse() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let cfg = config(&redis.url(), r#"slot_lease = "1s""#);
    let mut r = replicas(&cfg, 4).await;
    let (in_use, max) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut tasks = Vec::new();
    for i in 0..60 {
        let (fleet, in_use, max) = (r[i % 3].fleet.clone(), in_use.clone(), max.clone());
        tasks.push(tokio::spawn(async move {
            let slot = fleet
                .acquire_slot("acme", 5, Duration::from_secs(20))
                .await
                .expect("a slot within the deadline");
            let n = in_use.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(n, Ordering::SeqCst);
            // The "upstream call".
            tokio::time::sleep(Duration::from_millis(3)).await;
            in_use.fetch_sub(1, Ordering::SeqCst);
            slot.release().await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let max = max.load(Ordering::SeqCst);
    assert!((1..=5).contains(&max), "{max} slots held at once");
    assert_eq!(r[0].slots_in_use("acme").await.unwrap(), 0);
    let waited: u64 = (0..3)
        .map(|i| r[i].metrics().slots.with_label_values(&["waited"]).get())
        .sum();
    assert!(waited > 0, "60 callers on 5 slots never waited");

    // Replica 3 takes every slot and dies holding them.
    for _ in 0..5 {
        let slot = r[3]
            .acquire_slot("acme", 5, Duration::from_secs(1))
            .await
            .unwrap();
        std::mem::forget(slot);
    }
    r[3].stop();
    assert_eq!(r[0].slots_in_use("acme").await.unwrap(), 5);
    // Within one lease (1 s) plus margin, its slots come back.
    let slot = r[0]
        .acquire_slot("acme", 5, Duration::from_secs(3))
        .await
        .expect("the dead replica's slots lapse within their lease");
    slot.release().await;
    assert_eq!(r[0].slots_in_use("acme").await.unwrap(), 0);
}

#[tokio::test]
async fn l2_round_trip_keeps_absolute_times_and_generations_refuse_old_answers() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let cfg = config(&redis.url(), "");
    let r = replicas(&cfg, 2).await;
    let key = CacheKey([9; 32]);
    let look = r[0].l2_get(&key, SCOPE).await.unwrap();
    assert!(look.entry.is_none());
    assert_eq!(look.generation, 0);
    // An answer that arrived 10 s ago (with Age: 2 from upstream).
    let now = unix_ms();
    let mut e = entry(r#"{"n":1}"#, look.generation);
    e.stored_at_unix_ms = now - 10_000;
    e.upstream_age = 2;
    assert!(r[0].l2_put(&key, SCOPE, &e, now).await.unwrap());
    let got = r[1].l2_get(&key, SCOPE).await.unwrap().entry.unwrap();
    assert_eq!(got, e);
    let local = tokio::time::Instant::now();
    let cached = got.to_cached(local, unix_ms(), TenantId(0), RouteId(0));
    assert!(
        (12..=13).contains(&cached.age(local)),
        "{}",
        cached.age(local)
    );
    assert!((49..=50).contains(&cached.remaining_ttl(local)));
    // The Redis TTL ends with the last stale window: 60 + 30 s after arrival.
    let mut conn = redis.connection().await;
    let pttl: i64 = redis::cmd("PTTL")
        .arg(format!("zgw:l2:{}", hex::encode(key.0)))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((70_000..=80_000).contains(&pttl), "{pttl}");

    // A write through replica 1: the entry is gone for everyone, and a fetch that began before
    // the write cannot store its (possibly older) answer.
    assert_eq!(r[1].invalidate(SCOPE).await.unwrap(), 1);
    let look = r[0].l2_get(&key, SCOPE).await.unwrap();
    assert!(look.entry.is_none());
    assert_eq!(look.generation, 1);
    assert!(!r[0].l2_put(&key, SCOPE, &e, unix_ms()).await.unwrap());
    let fresh = entry(r#"{"n":2}"#, 1);
    assert!(r[0].l2_put(&key, SCOPE, &fresh, unix_ms()).await.unwrap());
    assert_eq!(
        r[1].l2_get(&key, SCOPE).await.unwrap().entry.unwrap().body,
        fresh.body
    );
    // Another scope is untouched by that write.
    let other = Scope {
        tenant: "other",
        group: "associated_users_count",
    };
    assert_eq!(r[0].generation(other).await.unwrap(), 0);
}

/// `n` fleet flights for one key from each replica: the owner's fetch is held until every other
/// caller has failed to take the lock and re-checked L2 (so they all wait on the completion).
#[tokio::test]
async fn coalesced_waiters_across_replicas_are_woken_by_the_completion() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    // A lock far longer than the deadline: a waiter can only succeed through the completion.
    let cfg = config(&redis.url(), r#"flight_lock_ttl = "60s""#);
    let r = replicas(&cfg, 3).await;
    let key = CacheKey([3; 32]);
    let total = 30;
    let (calls, checks) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let checked = Arc::new(Notify::new());
    let mut tasks = Vec::new();
    for i in 0..total {
        let fleet = r[i % 3].fleet.clone();
        let (calls, checks, checked) = (calls.clone(), checks.clone(), checked.clone());
        tasks.push(tokio::spawn(async move {
            let (f, checks_seen, checked_seen) = (fleet.clone(), checks.clone(), checked.clone());
            let check = move || {
                let (f, checks, checked) = (f.clone(), checks.clone(), checked.clone());
                async move {
                    let found = f.l2_get(&key, SCOPE).await?.entry.map(|e| e.body);
                    checks.fetch_add(1, Ordering::SeqCst);
                    checked.notify_waiters();
                    Ok::<_, Unavailable>(found)
                }
            };
            let (f, checked) = (fleet.clone(), checked_seen);
            let fetch = move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                // Every other caller has checked L2 after losing the lock (plus our own check).
                while checks_seen.load(Ordering::SeqCst) < total {
                    let wait = checked.notified();
                    if checks_seen.load(Ordering::SeqCst) >= total {
                        break;
                    }
                    wait.await;
                }
                let e = entry(r#"{"shared":true}"#, 0);
                f.l2_put(&key, SCOPE, &e, unix_ms()).await.unwrap();
                (e.body, Completion::Stored)
            };
            fleet
                .fleet_flight(&key, Duration::from_secs(10), check, fetch)
                .await
        }));
    }
    let mut roles = Vec::new();
    for t in tasks {
        let (body, role) = t.await.unwrap().expect("every caller gets the answer");
        assert_eq!(body, Bytes::from_static(br#"{"shared":true}"#));
        roles.push(role);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one upstream call");
    assert_eq!(roles.iter().filter(|r| **r == FleetRole::Owner).count(), 1);
    assert_eq!(
        roles.iter().filter(|r| **r == FleetRole::Waiter).count(),
        total - 1
    );
    for replica in &r {
        assert_eq!(replica.waiting_channels(), 0, "registrations cleaned up");
    }
}

#[tokio::test]
async fn a_dead_owners_lock_lapses_and_one_waiter_takes_over() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let cfg = config(&redis.url(), "");
    let mut r = replicas(&cfg, 3).await;
    let key = CacheKey([5; 32]);
    // Replica 0 owns the flight, then dies without completing it.
    let LeaseAttempt::Acquired(lock) = r[0]
        .try_lease(
            &format!("lock:{}", hex::encode(key.0)),
            Duration::from_millis(400),
        )
        .await
        .unwrap()
    else {
        panic!("lock refused");
    };
    std::mem::forget(lock);
    r[0].stop();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..10 {
        let fleet = r[1 + i % 2].fleet.clone();
        let calls = calls.clone();
        tasks.push(tokio::spawn(async move {
            let f = fleet.clone();
            let check = move || {
                let f = f.clone();
                async move { Ok(f.l2_get(&key, SCOPE).await?.entry.map(|e| e.body)) }
            };
            let f = fleet.clone();
            let fetch = move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let e = entry("{}", 0);
                f.l2_put(&key, SCOPE, &e, unix_ms()).await.unwrap();
                (e.body, Completion::Stored)
            };
            fleet
                .fleet_flight(&key, Duration::from_secs(5), check, fetch)
                .await
        }));
    }
    let mut roles = Vec::new();
    for t in tasks {
        roles.push(t.await.unwrap().expect("answer after take-over").1);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        roles.iter().filter(|r| **r == FleetRole::TookOver).count(),
        1,
        "{roles:?}"
    );
    assert_eq!(roles.iter().filter(|r| **r == FleetRole::Waiter).count(), 9);
}

#[tokio::test]
async fn an_owners_failure_is_shared_with_its_waiters_not_retried() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let cfg = config(&redis.url(), "");
    let r = replicas(&cfg, 2).await;
    let key = CacheKey([6; 32]);
    let waiter_checked = Arc::new(Notify::new());
    let owner = {
        let (fleet, gate) = (r[0].fleet.clone(), waiter_checked.clone());
        let gate_armed = gate.notified_owned();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            fleet
                .fleet_flight(
                    &key,
                    Duration::from_secs(5),
                    || async { Ok(None::<Bytes>) },
                    || async move {
                        let _ = started_tx.send(());
                        gate_armed.await;
                        (Bytes::new(), Completion::Failed)
                    },
                )
                .await
        });
        started_rx.await.unwrap();
        task
    };
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let waiter = r[1]
        .fleet_flight(
            &key,
            Duration::from_secs(5),
            move || {
                // Called after losing the lock: let the owner finish now.
                waiter_checked.notify_one();
                async { Ok(None::<Bytes>) }
            },
            move || async move {
                c.fetch_add(1, Ordering::SeqCst);
                (Bytes::new(), Completion::Failed)
            },
        )
        .await;
    assert_eq!(waiter.unwrap_err(), FleetFlightError::OwnerFailed);
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the waiter made no call");
    assert_eq!(owner.await.unwrap().unwrap().1, FleetRole::Owner);
}

#[tokio::test]
async fn invalidation_reaches_every_replica_with_its_generation() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let cfg = config(&redis.url(), "");
    let r = replicas(&cfg, 3).await;
    let mut events: Vec<_> = r.iter().map(|x| x.events()).collect();
    assert_eq!(r[0].invalidate(SCOPE).await.unwrap(), 1);
    assert_eq!(r[2].invalidate(SCOPE).await.unwrap(), 2);
    for (i, rx) in events.iter_mut().enumerate() {
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let ev = tokio::time::timeout(Duration::from_secs(1), rx.recv())
                .await
                .expect("broadcast within 1 s")
                .unwrap();
            if let FleetEvent::Invalidated {
                tenant,
                group,
                generation,
            } = ev
            {
                assert_eq!((tenant.as_str(), group.as_str()), ("acme", SCOPE.group));
                seen.push(generation);
            }
        }
        assert_eq!(seen, [1, 2], "replica {i}");
        assert_eq!(r[i].local_generation(SCOPE), 2);
    }
}

#[tokio::test]
async fn redis_killed_mid_wait_degrades_at_once_and_coordination_resumes() {
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let cfg = config(&redis.url(), "");
    let r = replicas(&cfg, 2).await;
    let key = CacheKey([7; 32]);
    // Replica 1 owns a long flight; replica 0 waits on it.
    let LeaseAttempt::Acquired(_lock) = r[1]
        .try_lease(
            &format!("lock:{}", hex::encode(key.0)),
            Duration::from_secs(60),
        )
        .await
        .unwrap()
    else {
        panic!("lock refused");
    };
    let checked = Arc::new(Notify::new());
    let armed = checked.clone().notified_owned();
    let fleet = r[0].fleet.clone();
    let waiter = tokio::spawn(async move {
        fleet
            .fleet_flight(
                &key,
                Duration::from_secs(30),
                move || {
                    checked.notify_one();
                    async { Ok(None::<Bytes>) }
                },
                || async { (Bytes::new(), Completion::Failed) },
            )
            .await
    });
    armed.await;
    let mut resync = r[0].events();
    redis.kill().await;
    // The waiter is woken by the loss of Redis, long before its 30 s deadline or the 60 s lock.
    let result = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken promptly")
        .unwrap();
    assert_eq!(result.unwrap_err(), FleetFlightError::Unavailable);
    assert_eq!(r[0].availability(), Availability::Unavailable);
    // While unavailable, operations answer at once without touching Redis.
    assert_eq!(r[0].l2_get(&key, SCOPE).await.unwrap_err(), Unavailable);
    assert!(matches!(
        r[0].acquire_slot("acme", 5, Duration::from_secs(5)).await,
        Err(zoho_gateway::fleet::semaphore::SlotError::Unavailable)
    ));
    let readiness = r[0].readiness_detail();
    assert_eq!(readiness, "redis: unavailable (local fallback)");
    assert_eq!(r[0].metrics().up.get(), 0);

    // A wait that starts while Redis is out: a completion published while the event
    // connection is being re-established would be lost, so the return wakes it to re-check.
    let mut probe = r[0].subscribe("done:probe");
    redis.restart().await;
    assert!(r[0].wait_available(Duration::from_secs(10)).await);
    assert!(r[1].wait_available(Duration::from_secs(10)).await);
    assert_eq!(
        probe
            .wait_until(tokio::time::Instant::now() + Duration::from_secs(5))
            .await,
        Woken::Message(Bytes::from_static(b"resync"))
    );
    drop(probe);
    let ev = tokio::time::timeout(Duration::from_secs(1), resync.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev, FleetEvent::Resync);
    // Coordination resumes: a broadcast from one replica reaches the other.
    let mut events = r[1].events();
    assert_eq!(r[0].invalidate(SCOPE).await.unwrap(), 1);
    let ev = tokio::time::timeout(Duration::from_secs(1), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(ev, FleetEvent::Invalidated { generation: 1, .. }));
    assert_eq!(r[0].metrics().up.get(), 1);
    assert_eq!(
        r[0].metrics()
            .transitions
            .with_label_values(&["unavailable"])
            .get(),
        1,
        "one transition logged and counted"
    );
}

#[tokio::test]
async fn one_grant_per_token_lifetime_for_the_fleet_and_no_secret_in_redis() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let cfg = config(&redis.url(), "");
    let tenant = cfg.tenants[0].clone();
    assert_eq!(tenant.refresh_budget, 2);
    let r = replicas(&cfg, 3).await;
    let grants = Arc::new(AtomicUsize::new(0));

    // Runs 15 concurrent refreshes (5 per replica) replacing `replacing`; returns the ids got.
    let wave = |replacing: Option<u64>, value: &'static str| {
        let mut tasks = Vec::new();
        for i in 0..15 {
            let (fleet, tenant, grants) = (r[i % 3].fleet.clone(), tenant.clone(), grants.clone());
            tasks.push(tokio::spawn(async move {
                fleet
                    .refresh_shared(
                        &tenant,
                        replacing,
                        Duration::from_secs(60),
                        Duration::from_secs(5),
                        || async move {
                            grants.fetch_add(1, Ordering::SeqCst);
                            // Zoho's accounts server takes a moment.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Ok((Secret::new(value), Duration::from_secs(3600)))
                        },
                    )
                    .await
                    .unwrap()
            }));
        }
        tasks
    };
    let mut ids = Vec::new();
    let mut granted = 0;
    for t in wave(None, ACCESS_TOKEN) {
        let t = match t.await.unwrap() {
            SharedRefresh::Granted(t) => {
                granted += 1;
                t
            }
            SharedRefresh::Adopted(t) => t,
            other => panic!("{other:?}"),
        };
        assert_eq!(t.value.expose(), ACCESS_TOKEN);
        ids.push(t.id);
    }
    assert_eq!(granted, 1);
    assert_eq!(grants.load(Ordering::SeqCst), 1, "one grant for the fleet");
    ids.dedup();
    assert_eq!(ids.len(), 1, "every replica uses the same token");

    // The token nears expiry (or Zoho rejected it): the second lifetime costs one more grant.
    let mut second = Vec::new();
    for t in wave(Some(ids[0]), ACCESS_TOKEN_2) {
        match t.await.unwrap() {
            SharedRefresh::Granted(t) | SharedRefresh::Adopted(t) => second.push(t.id),
            other => panic!("{other:?}"),
        }
    }
    second.dedup();
    assert_eq!(second.len(), 1);
    assert_ne!(second[0], ids[0]);
    assert_eq!(grants.load(Ordering::SeqCst), 2);

    // The fleet budget (2 per window) is spent: nobody calls Zoho again.
    let refused = r[1]
        .refresh_shared(
            &tenant,
            Some(second[0]),
            Duration::from_secs(60),
            Duration::from_secs(5),
            || async { unreachable!("budget spent") },
        )
        .await
        .unwrap();
    let SharedRefresh::Refused(TokenFailure::BudgetExhausted, retry) = refused else {
        panic!("{refused:?}");
    };
    assert!(retry > Duration::from_secs(590) && retry <= Duration::from_secs(600));

    // The same tenant with a new refresh token (a live reload, a rotated secret) adopts
    // nothing of the old credentials' token or budget: its first refresh is its own grant.
    let mut rotated = tenant.clone();
    rotated.refresh_token = Secret::new("1000.rotated-refresh-token");
    assert_ne!(rotated.identity_scope(), tenant.identity_scope());
    let fresh = r[2]
        .refresh_shared(
            &rotated,
            None,
            Duration::from_secs(60),
            Duration::from_secs(5),
            || async {
                Ok((
                    Secret::new("rotated-access-token"),
                    Duration::from_secs(3600),
                ))
            },
        )
        .await
        .unwrap();
    let SharedRefresh::Granted(fresh) = fresh else {
        panic!("{fresh:?}");
    };
    assert_eq!(fresh.value.expose(), "rotated-access-token");

    // Zoho's throttle locks the whole fleet out.
    let mut beta = tenant.clone();
    beta.name = "beta".into();
    let failed = r[0]
        .refresh_shared(
            &beta,
            None,
            Duration::from_secs(60),
            Duration::from_secs(5),
            || async { Err(TokenFailure::Throttled) },
        )
        .await
        .unwrap();
    assert!(matches!(
        failed,
        SharedRefresh::Failed(TokenFailure::Throttled)
    ));
    let refused = r[2]
        .refresh_shared(
            &beta,
            None,
            Duration::from_secs(60),
            Duration::from_secs(5),
            || async { unreachable!("locked out") },
        )
        .await
        .unwrap();
    assert!(matches!(
        refused,
        SharedRefresh::Refused(TokenFailure::Throttled, d) if d > Duration::from_secs(800)
    ));
    assert_eq!(
        r[1].lockout(&beta.identity_scope())
            .await
            .unwrap()
            .map(|(why, _)| why),
        Some(TokenFailure::Throttled)
    );

    // Put an L2 entry there too, then read every key and value in Redis.
    let e = entry("{}", 0);
    r[0].l2_put(&CacheKey([1; 32]), SCOPE, &e, unix_ms())
        .await
        .unwrap();
    let mut conn = redis.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let published = format!("zgw:tok:{}", tenant.identity_scope());
    assert!(keys.contains(&published), "{keys:?}");
    let mut contents = Vec::new();
    for k in &keys {
        contents.extend_from_slice(k.as_bytes());
        let kind: String = redis::cmd("TYPE")
            .arg(k)
            .query_async(&mut conn)
            .await
            .unwrap();
        match kind.as_str() {
            "string" => {
                let v: Vec<u8> = redis::cmd("GET")
                    .arg(k)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                contents.extend_from_slice(&v);
            }
            "zset" => {
                let v: Vec<Vec<u8>> = redis::cmd("ZRANGE")
                    .arg(k)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                v.iter().for_each(|m| contents.extend_from_slice(m));
            }
            other => panic!("unexpected key type {other} for {k}"),
        }
        let ttl: i64 = redis::cmd("PTTL")
            .arg(k)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0, "{k} has no TTL");
    }
    for secret in [
        ACCESS_TOKEN,
        ACCESS_TOKEN_2,
        REFRESH_TOKEN,
        CLIENT_SECRET,
        SEAL_KEY,
    ] {
        assert!(
            !contents
                .windows(secret.len())
                .any(|w| w == secret.as_bytes()),
            "a secret is in Redis in clear"
        );
    }
}
