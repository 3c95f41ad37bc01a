//! The fleet tier: many gateway replicas sharing one Zoho budget through Redis (issue 12).
//!
//! Optional (`[redis]`, off by default). Every replica pointed at the same Redis and
//! `key_prefix` shares:
//!
//! | what | module | Redis shape |
//! | --- | --- | --- |
//! | availability | this module | one command connection ([`redis::aio::ConnectionManager`]) and one pub/sub connection per replica |
//! | exclusive leases | [`lease`] | `SET key owner NX PX ttl`; release by compare-and-delete (Lua) |
//! | one access token per tenant | [`tokens`] | token sealed with AES-256-GCM ([`seal`]); grant budget as a sorted set of grant times; throttle lockout key |
//! | concurrency limit | [`semaphore`] | a sorted set of slot leases scored by expiry (Redis `TIME`), acquired/released in Lua |
//! | L2 cache | [`l2`] | one key per entry, absolute (Unix) times inside, a Redis TTL on every key |
//! | single-flight across replicas | [`flight`] | a per-key lock lease plus a completion message |
//! | invalidation | [`generation`] | a generation counter per (tenant, group) and a purge counter per tenant, bumped and broadcast in one script |
//!
//! # Availability (fails open, recovers by itself)
//! - Every operation runs under `redis.command_timeout`. Any Redis error or timeout makes that
//!   operation return [`Unavailable`] and turns the replica's view to
//!   [`Availability::Unavailable`]; while unavailable, operations return [`Unavailable`] at once
//!   without touching Redis, so callers fall back to local behaviour (local tokens with a share of
//!   the budget, local limit share, L1 only) without paying a timeout per request.
//! - The hub task ([`Fleet::run`]) owns the pub/sub connection. It declares the fleet
//!   available only after the pattern subscription is confirmed **and** a `PING` on the command
//!   connection succeeds; it tears the subscription down on any transition to unavailable and
//!   re-establishes both every `redis.retry_interval`. Each transition is logged once, counted
//!   (`zoho_gateway_redis_transitions_total`) and shown by the `zoho_gateway_redis_up` gauge and
//!   [`Fleet::readiness_detail`].
//! - Messages published while a replica was unavailable are lost to it, so each return to
//!   available is announced as [`FleetEvent::Resync`]: a subscriber must treat it as "anything
//!   may have been invalidated" (drop L1).
//!
//! # Events (no polling)
//! One `PSUBSCRIBE {prefix}ev:*` per replica carries every completion, release, token publish and
//! invalidation. Waiters register locally ([`Fleet::subscribe`]) **before** they re-check the
//! state they wait for, so an event published in between is not lost; a transition to
//! unavailable wakes every waiter (it then sees [`Unavailable`] and falls back).
//!
//! # Keys
//! All under `key_prefix`, all with a Redis TTL: `l2:{key}`, `gen:{tenant}:{group}`, `gen-all:{tenant}`,
//! `lock:{key}`, `sem:{tenant}`, `tok:{scope}`, `tok-lease:{scope}`, `grants:{scope}`,
//! `lockout:{scope}` (`{scope}`: [`TenantConfig::identity_scope`](crate::config::TenantConfig::identity_scope)) (generation counters excepted: one small integer per tenant and group).
//! No key, value or message holds an access token, refresh token or client secret in clear.
//! Single-instance Redis (or a primary behind Sentinel); Redis Cluster is not supported.

pub mod flight;
pub mod generation;
pub mod l2;
pub mod lease;
mod metrics;
pub mod seal;
pub mod semaphore;
pub mod tokens;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::config::RedisConfig;
pub use metrics::FleetMetrics;

/// Redis could not serve this operation (error, timeout, or the replica's view is "unavailable");
/// the caller falls back to local behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("redis unavailable")]
pub struct Unavailable;

/// The replica's view of Redis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Availability {
    /// Commands succeed and the event subscription is live: coordinate through Redis.
    Available,
    /// Not (yet, or no longer): every replica on its own.
    Unavailable,
}

impl Availability {
    /// Stable label (`available` / `unavailable`) for logs, metrics and `/readyz`.
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Available => "available",
            Availability::Unavailable => "unavailable",
        }
    }
}

/// Which operation touched Redis (the `op` label of `zoho_gateway_redis_errors_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Connection probe.
    Ping,
    /// Lease acquire / release.
    Lease,
    /// Token read / publish / budget / lockout.
    Token,
    /// Concurrency slot acquire / release.
    Slot,
    /// L2 read.
    L2Get,
    /// L2 write.
    L2Put,
    /// Generation read / bump.
    Generation,
    /// Flight lock / completion.
    Flight,
    /// The event subscription.
    Events,
}

impl Op {
    /// All variants, in label order.
    pub const ALL: [Op; 9] = [
        Op::Ping,
        Op::Lease,
        Op::Token,
        Op::Slot,
        Op::L2Get,
        Op::L2Put,
        Op::Generation,
        Op::Flight,
        Op::Events,
    ];

    /// Stable label.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Ping => "ping",
            Op::Lease => "lease",
            Op::Token => "token",
            Op::Slot => "slot",
            Op::L2Get => "l2_get",
            Op::L2Put => "l2_put",
            Op::Generation => "generation",
            Op::Flight => "flight",
            Op::Events => "events",
        }
    }
}

/// A fleet-wide event delivered to [`Fleet::events`] subscribers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FleetEvent {
    /// Some replica invalidated `(tenant, group)`; its generation is now `generation`.
    Invalidated {
        /// Tenant name.
        tenant: String,
        /// Invalidation group (e.g. a route name).
        group: String,
        /// The new generation.
        generation: u64,
    },
    /// An admin purged `tenant`'s entries (of `route` only, or of every route) on some replica.
    Purged {
        /// Tenant name.
        tenant: String,
        /// Route name; `None`: every route.
        route: Option<String>,
    },
    /// The replica is back in touch with Redis after missing an unknown number of events: drop
    /// everything that an invalidation could have touched (L1).
    Resync,
}

/// The payload a waiter last saw on its channel (`None`: woken without a message, e.g. because
/// Redis became unavailable).
/// The message every local waiter gets when the event connection comes back: re-check.
const RESYNC: &[u8] = b"resync";

type Waiters = Mutex<HashMap<Box<str>, watch::Sender<Option<Bytes>>>>;

/// The highest generation seen per (tenant, group).
type Generations = Mutex<HashMap<(Box<str>, Box<str>), u64>>;

/// One replica's handle on the fleet tier. Cheap to share (`Arc`).
pub struct Fleet {
    cfg: RedisConfig,
    client: redis::Client,
    conn: ConnectionManager,
    owner: String,
    counter: AtomicU64,
    up: AtomicBool,
    /// Mirrors `up`, for tasks that wait for a transition.
    up_watch: watch::Sender<bool>,
    /// True once the hub's first connection attempt has ended (either way).
    settled: watch::Sender<bool>,
    waiters: Waiters,
    events: broadcast::Sender<FleetEvent>,
    generations: Generations,
    sealer: seal::Sealer,
    metrics: FleetMetrics,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("key_prefix", &self.cfg.key_prefix)
            .field("owner", &self.owner)
            .field("availability", &self.availability())
            .finish_non_exhaustive()
    }
}

/// Why the fleet tier could not be set up (both are configuration or programming errors; a
/// Redis that is down is not one of them).
#[derive(Debug, thiserror::Error)]
pub enum FleetSetupError {
    /// The URL was refused by the client library.
    #[error("redis url refused")]
    Url(#[source] redis::RedisError),
    /// Metric registration failed.
    #[error("fleet metrics registration failed")]
    Metrics(#[from] prometheus::Error),
}

impl Fleet {
    /// Sets up the tier without connecting (connections are made by [`Fleet::run`]); starts
    /// [`Availability::Unavailable`]. Metrics go into `registry`.
    ///
    /// # Errors
    /// [`FleetSetupError`] when the URL is refused or metrics cannot register.
    pub fn new(
        cfg: RedisConfig,
        registry: &prometheus::Registry,
    ) -> Result<Arc<Self>, FleetSetupError> {
        let metrics = FleetMetrics::register(registry)?;
        Self::with_metrics(cfg, metrics)
    }

    /// [`Fleet::new`] with metrics already registered (the gateway's
    /// [`crate::metrics::Metrics::register`] does that).
    ///
    /// # Errors
    /// [`FleetSetupError::Url`] when the URL is refused.
    pub fn with_metrics(
        cfg: RedisConfig,
        metrics: FleetMetrics,
    ) -> Result<Arc<Self>, FleetSetupError> {
        let client = redis::Client::open(cfg.url.expose()).map_err(FleetSetupError::Url)?;
        let manager_cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.connect_timeout))
            .set_response_timeout(Some(cfg.command_timeout))
            .set_number_of_retries(1)
            .set_max_delay(cfg.retry_interval);
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_cfg)
            .map_err(FleetSetupError::Url)?;
        let sealer = seal::Sealer::new(&cfg.token_encryption_key);
        let (up_watch, _) = watch::channel(false);
        let (settled, _) = watch::channel(false);
        let (events, _) = broadcast::channel(1024);
        Ok(Arc::new(Fleet {
            owner: format!("{:016x}", rand::random::<u64>()),
            counter: AtomicU64::new(0),
            up: AtomicBool::new(false),
            up_watch,
            settled,
            waiters: Mutex::new(HashMap::new()),
            events,
            generations: Mutex::new(HashMap::new()),
            sealer,
            metrics,
            cfg,
            client,
            conn,
        }))
    }

    /// The validated `[redis]` settings.
    pub fn config(&self) -> &RedisConfig {
        &self.cfg
    }

    /// This replica's random id (lease owner prefix; safe to log).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// A fresh owner token for one lease: `{replica id}:{counter}`.
    fn next_owner(&self) -> String {
        format!(
            "{}:{}",
            self.owner,
            self.counter.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// The replica's current view of Redis.
    pub fn availability(&self) -> Availability {
        if self.up.load(Ordering::Acquire) {
            Availability::Available
        } else {
            Availability::Unavailable
        }
    }

    /// The `/readyz` detail: `redis: available` or `redis: unavailable (local fallback)`. Redis
    /// being unavailable never makes the replica unready (it fails open).
    pub fn readiness_detail(&self) -> &'static str {
        match self.availability() {
            Availability::Available => "redis: available",
            Availability::Unavailable => "redis: unavailable (local fallback)",
        }
    }

    /// Fleet events (invalidations, resyncs). Lagging receivers lose the oldest events; treat
    /// `RecvError::Lagged` like [`FleetEvent::Resync`].
    pub fn events(&self) -> broadcast::Receiver<FleetEvent> {
        self.events.subscribe()
    }

    /// The fleet metrics.
    pub fn metrics(&self) -> &FleetMetrics {
        &self.metrics
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut k = String::with_capacity(self.cfg.key_prefix.len() + 64);
        k.push_str(&self.cfg.key_prefix);
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                k.push(':');
            }
            k.push_str(p);
        }
        k
    }

    /// Channel of the event `suffix` (`{prefix}ev:{suffix}`).
    fn channel(&self, suffix: &str) -> String {
        format!("{}ev:{suffix}", self.cfg.key_prefix)
    }

    /// Runs one Redis operation under the command timeout. While unavailable: [`Unavailable`]
    /// at once. An error or timeout marks the replica unavailable.
    async fn op<T, F>(
        &self,
        op: Op,
        run: impl FnOnce(ConnectionManager) -> F,
    ) -> Result<T, Unavailable>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        if !self.up.load(Ordering::Acquire) {
            return Err(Unavailable);
        }
        self.op_unchecked(op, run).await
    }

    async fn op_unchecked<T, F>(
        &self,
        op: Op,
        run: impl FnOnce(ConnectionManager) -> F,
    ) -> Result<T, Unavailable>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(self.cfg.command_timeout, run(self.conn.clone())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.metrics.error(op, "error");
                self.mark_down(op, &e.to_string());
                Err(Unavailable)
            }
            Err(_) => {
                self.metrics.error(op, "timeout");
                self.mark_down(op, "timeout");
                Err(Unavailable)
            }
        }
    }

    /// Turns the view to unavailable (logged once per transition) and wakes every waiter.
    fn mark_down(&self, op: Op, cause: &str) {
        if self.up.swap(false, Ordering::AcqRel) {
            self.metrics.transition(Availability::Unavailable);
            // The cause is a client-library message: it names no key, value or credential.
            tracing::warn!(
                op = op.as_str(),
                cause,
                "redis unavailable: falling back to local coordination"
            );
            self.up_watch.send_replace(false);
        }
        self.wake_all();
    }

    fn mark_up(&self) {
        if !self.up.swap(true, Ordering::AcqRel) {
            self.metrics.transition(Availability::Available);
            tracing::info!("redis available: fleet coordination resumes");
            self.up_watch.send_replace(true);
            let _ = self.events.send(FleetEvent::Resync);
            // A completion published while the event connection was being re-established is
            // lost (Redis pub/sub keeps nothing): every local waiter re-checks now instead of
            // sitting out its deadline.
            let waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
            for tx in waiters.values() {
                tx.send_replace(Some(Bytes::from_static(RESYNC)));
            }
        }
    }

    fn wake_all(&self) {
        let waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        for tx in waiters.values() {
            tx.send_replace(None);
        }
    }

    /// Registers interest in the event channel `suffix` (see the module doc: register before
    /// re-checking). The returned [`Subscription`] wakes on the next message on that channel or
    /// when Redis becomes unavailable.
    pub fn subscribe(self: &Arc<Self>, suffix: &str) -> Subscription {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        let rx = match waiters.get(suffix) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = watch::channel(None);
                waiters.insert(suffix.into(), tx);
                rx
            }
        };
        Subscription {
            fleet: self.clone(),
            suffix: suffix.into(),
            rx: Some(rx),
        }
    }

    /// Number of channels with local waiters (bounded by the waits in progress).
    pub fn waiting_channels(&self) -> usize {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Local waiters registered on the event channel `suffix` (diagnostics and tests).
    pub fn waiters_on(&self, suffix: &str) -> usize {
        let waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        waiters.get(suffix).map_or(0, |tx| tx.receiver_count())
    }

    fn dispatch(&self, channel: &str, payload: &[u8]) {
        let Some(suffix) = channel
            .strip_prefix(self.cfg.key_prefix.as_str())
            .and_then(|c| c.strip_prefix("ev:"))
        else {
            return;
        };
        if suffix == "inval" {
            if let Some(ev) = generation::parse_message(payload) {
                if let FleetEvent::Invalidated {
                    tenant,
                    group,
                    generation,
                } = &ev
                {
                    self.observe_generation(tenant, group, *generation);
                }
                let _ = self.events.send(ev);
            }
            return;
        }
        if suffix == "purge" {
            if let Some(ev) = generation::parse_purge(payload) {
                let _ = self.events.send(ev);
            }
            return;
        }
        let waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = waiters.get(suffix) {
            tx.send_replace(Some(Bytes::copy_from_slice(payload)));
        }
    }

    /// Background task: establishes the event subscription and the availability view, keeps
    /// them, and re-establishes them after any failure, until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut up_rx = self.up_watch.subscribe();
        loop {
            let connected = tokio::select! {
                _ = shutdown.cancelled() => return,
                c = self.connect_events() => c,
            };
            if connected.is_some() {
                self.mark_up();
            }
            self.settled.send_replace(true);
            if let Some(pubsub) = connected {
                let (mut sink, mut stream) = pubsub.split();
                let mut heartbeat = tokio::time::interval(self.cfg.retry_interval);
                heartbeat.tick().await;
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        msg = stream.next() => match msg {
                            Some(msg) => self.dispatch(msg.get_channel_name(), msg.get_payload_bytes()),
                            None => {
                                self.metrics.error(Op::Events, "error");
                                self.mark_down(Op::Events, "event connection closed");
                                break;
                            }
                        },
                        _ = async { let _ = up_rx.wait_for(|up| !*up).await; } => break,
                        _ = heartbeat.tick() => {
                            let ping = tokio::time::timeout(self.cfg.command_timeout, sink.ping::<redis::Value>()).await;
                            if !matches!(ping, Ok(Ok(_))) {
                                self.metrics.error(Op::Events, "timeout");
                                self.mark_down(Op::Events, "event connection heartbeat failed");
                                break;
                            }
                        }
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.cfg.retry_interval) => {}
            }
        }
    }

    /// One attempt: pub/sub connection + pattern subscription + a `PING` on the command
    /// connection, all within the connect and command deadlines.
    async fn connect_events(&self) -> Option<redis::aio::PubSub> {
        let pattern = self.channel("*");
        let attempt = async {
            let mut ps = self.client.get_async_pubsub().await?;
            ps.psubscribe(&pattern).await?;
            Ok::<_, redis::RedisError>(ps)
        };
        let ps = match tokio::time::timeout(self.cfg.connect_timeout, attempt).await {
            Ok(Ok(ps)) => ps,
            _ => return None,
        };
        let ping = self
            .op_unchecked(Op::Ping, |mut c| async move {
                redis::cmd("PING").query_async::<String>(&mut c).await
            })
            .await;
        ping.ok().map(|_| ps)
    }

    /// Waits until the hub's first connection attempt has ended (bounded by
    /// `redis.connect_timeout` plus `redis.command_timeout`, or `deadline` if shorter), so that
    /// start-up work that should coordinate (the first token) does not race the first connection.
    /// Returns at once afterwards.
    pub async fn settled(&self, deadline: Duration) {
        let mut rx = self.settled.subscribe();
        let _ = tokio::time::timeout(deadline, rx.wait_for(|s| *s)).await;
    }

    /// Waits until the view is [`Availability::Available`] or `deadline` passes (start-up,
    /// tests). Returns whether it is available.
    pub async fn wait_available(&self, deadline: Duration) -> bool {
        let mut rx = self.up_watch.subscribe();
        tokio::time::timeout(deadline, rx.wait_for(|up| *up))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// A local registration for one event channel; see [`Fleet::subscribe`]. Dropping it
/// unregisters (the channel's entry goes when its last waiter does).
pub struct Subscription {
    fleet: Arc<Fleet>,
    suffix: Box<str>,
    rx: Option<watch::Receiver<Option<Bytes>>>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("channel", &self.suffix)
            .finish()
    }
}

/// How a [`Subscription::wait_until`] ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Woken {
    /// A message arrived on the channel (its payload).
    Message(Bytes),
    /// Redis became unavailable: stop waiting and fall back.
    Unavailable,
    /// The deadline passed first.
    Deadline,
}

impl Subscription {
    /// Waits for the next message since registration (or since the previous wake-up), Redis
    /// becoming unavailable, or `deadline`.
    ///
    /// # Cancel safety
    /// Cancel-safe: a message that arrives meanwhile is seen by the next call.
    pub async fn wait_until(&mut self, deadline: tokio::time::Instant) -> Woken {
        if self.fleet.availability() == Availability::Unavailable {
            return Woken::Unavailable;
        }
        let Some(rx) = self.rx.as_mut() else {
            return Woken::Unavailable;
        };
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Err(_) => Woken::Deadline,
            Ok(Err(_)) => Woken::Unavailable,
            Ok(Ok(())) => match rx.borrow_and_update().clone() {
                Some(payload) if self.fleet.availability() == Availability::Available => {
                    Woken::Message(payload)
                }
                _ => Woken::Unavailable,
            },
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        drop(self.rx.take());
        let mut waiters = self.fleet.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if waiters
            .get(&self.suffix)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            waiters.remove(&self.suffix);
        }
    }
}
