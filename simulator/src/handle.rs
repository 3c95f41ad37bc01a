//! Shared simulator state, request counters, fault injection, and the
//! [`SimHandle`] tests and the CLI use to read and steer them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::SimConfig;
use super::crm::{CrmStore, PageTokens};
use super::oauth::{Registry, TokenStore};
use super::route::SimRoute;
use super::store::Store;

/// Everything the server shares between connections.
pub(crate) struct State {
    pub config: SimConfig,
    /// `http://127.0.0.1:PORT`, also the token grant's `api_domain`.
    pub base_url: String,
    pub registry: Registry,
    pub tokens: Mutex<TokenStore>,
    pub store: Mutex<Store>,
    /// Modules, metadata and records.
    pub crm: Mutex<CrmStore>,
    /// `page_token`s handed out by records reads.
    pub page_tokens: Mutex<PageTokens>,
    pub counters: Counters,
    pub faults: Mutex<Faults>,
    pub token_down: AtomicBool,
    /// In-flight API requests per token owner (refresh token).
    pub owners: Mutex<HashMap<Arc<str>, usize>>,
    /// Cancelled on shutdown; hung and delayed requests wait on it.
    pub cancel: CancellationToken,
    /// Notified whenever the in-flight count changes.
    pub flight_changed: Notify,
    /// Arrival times of API calls charged a credit within the last 24 h.
    pub credits: Mutex<VecDeque<Instant>>,
}

/// Window of the API credit limit (API-NOTES.md §6: rolling 24 hours).
pub(crate) const CREDIT_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Result of charging one API credit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Credit {
    /// Charged; `remaining` is set when a limit is configured.
    Charged { remaining: Option<u64> },
    /// The limit is used up; nothing was charged.
    Exhausted,
}

/// Request counters. Routes are counted on arrival, before auth.
#[derive(Default)]
pub(crate) struct Counters {
    calls: [AtomicU64; SimRoute::ALL.len()],
    query_calls: Mutex<HashMap<(SimRoute, String), u64>>,
    total_api: AtomicU64,
    in_flight: AtomicUsize,
    max_concurrent: AtomicUsize,
    pub token_grants: AtomicU64,
}

impl Counters {
    /// Counts one request on `route` with raw query `query`.
    pub(crate) fn arrive(&self, route: SimRoute, query: &str) {
        self.calls[route.index()].fetch_add(1, Ordering::Relaxed);
        if route.is_api() {
            self.total_api.fetch_add(1, Ordering::Relaxed);
        }
        *self
            .query_calls
            .lock()
            .expect("counter lock")
            .entry((route, query.to_string()))
            .or_default() += 1;
    }

    fn reset(&self) {
        for c in &self.calls {
            c.store(0, Ordering::Relaxed);
        }
        self.query_calls.lock().expect("counter lock").clear();
        self.total_api.store(0, Ordering::Relaxed);
        self.token_grants.store(0, Ordering::Relaxed);
        self.max_concurrent
            .store(self.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

/// Decrements the in-flight count on drop (also when hyper drops the
/// request future because the client went away).
pub(crate) struct FlightGuard(Arc<State>);

impl Drop for FlightGuard {
    fn drop(&mut self) {
        self.0.counters.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.flight_changed.notify_waiters();
    }
}

/// Holds one of an owner's concurrency slots until dropped.
pub(crate) struct OwnerSlot {
    state: Arc<State>,
    owner: Arc<str>,
}

impl Drop for OwnerSlot {
    fn drop(&mut self) {
        let mut owners = self.state.owners.lock().expect("owner lock");
        if let Some(n) = owners.get_mut(&self.owner) {
            *n -= 1;
            if *n == 0 {
                owners.remove(&self.owner);
            }
        }
    }
}

impl State {
    /// Charges one API credit against `api_credit_limit` (rolling 24 h).
    pub(crate) fn charge_credit(&self) -> Credit {
        let now = Instant::now();
        let mut credits = self.credits.lock().expect("credit lock");
        while credits
            .front()
            .is_some_and(|t| now.duration_since(*t) >= CREDIT_WINDOW)
        {
            credits.pop_front();
        }
        match self.config.api_credit_limit {
            Some(limit) if credits.len() as u64 >= limit => Credit::Exhausted,
            limit => {
                credits.push_back(now);
                Credit::Charged {
                    remaining: limit.map(|l| l - credits.len() as u64),
                }
            }
        }
    }

    /// Marks one API request in flight until the guard drops.
    pub(crate) fn enter_flight(self: &Arc<State>) -> FlightGuard {
        let now = self.counters.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.counters
            .max_concurrent
            .fetch_max(now, Ordering::SeqCst);
        self.flight_changed.notify_waiters();
        FlightGuard(self.clone())
    }

    /// Takes a concurrency slot for `owner`, or `None` when it already has
    /// `concurrency_limit` requests in flight.
    pub(crate) fn acquire_slot(self: &Arc<State>, owner: &Arc<str>) -> Option<OwnerSlot> {
        let mut owners = self.owners.lock().expect("owner lock");
        let n = owners.entry(owner.clone()).or_default();
        if *n >= self.config.concurrency_limit {
            if *n == 0 {
                owners.remove(owner);
            }
            return None;
        }
        *n += 1;
        Some(OwnerSlot {
            state: self.clone(),
            owner: owner.clone(),
        })
    }
}

/// Pending injected faults. Precedence when several are armed: reset, hang,
/// fail.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    pub latency: Duration,
    fail: u32,
    fail_status: u16,
    fail_retry_after: Option<u32>,
    reset: u32,
    hang: u32,
}

/// The fault to apply to one API request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Close the connection without a response.
    Reset,
    /// Never answer (until shutdown).
    Hang,
    /// Answer `status` with Zoho's envelope.
    Fail {
        status: u16,
        retry_after: Option<u32>,
    },
}

impl Faults {
    /// Consumes and returns the next armed fault, if any.
    pub(crate) fn take(&mut self) -> Option<Fault> {
        if self.reset > 0 {
            self.reset -= 1;
            Some(Fault::Reset)
        } else if self.hang > 0 {
            self.hang -= 1;
            Some(Fault::Hang)
        } else if self.fail > 0 {
            self.fail -= 1;
            Some(Fault::Fail {
                status: self.fail_status,
                retry_after: self.fail_retry_after,
            })
        } else {
            None
        }
    }
}

/// Counters and fault controls of a running simulator. Cheap to clone; every
/// method is synchronous and takes at most a short lock.
#[derive(Clone)]
pub struct SimHandle {
    pub(crate) state: Arc<State>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("base_url", &self.state.base_url)
            .field("total_api_calls", &self.total_api_calls())
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

/// A snapshot of every counter (the body of `GET /__simulator/stats`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimStats {
    /// Requests per route label ([`SimRoute::as_str`]), including zeros.
    pub calls: BTreeMap<&'static str, u64>,
    /// Requests per route label and exact raw query string (`""` for none).
    pub query_calls: BTreeMap<&'static str, BTreeMap<String, u64>>,
    /// All API requests (not token endpoint, not control).
    pub total_api_calls: u64,
    /// Most API requests in flight at once since start or the last reset.
    pub max_concurrent: usize,
    /// API requests in flight now.
    pub in_flight: usize,
    /// Successful refresh-token grants.
    pub token_grants: u64,
    /// Unexpired, unrevoked access tokens.
    pub live_tokens: usize,
    /// User groups in the data set now.
    pub dataset_groups: usize,
    /// API credits charged within the last 24 hours.
    pub credits_used: u64,
}

impl SimHandle {
    /// Requests received on `route`, counted on arrival (before auth and
    /// faults), since start or the last [`SimHandle::reset_counters`].
    pub fn calls(&self, route: SimRoute) -> u64 {
        self.state.counters.calls[route.index()].load(Ordering::Relaxed)
    }

    /// Requests received on `route` whose raw query string (as sent, without
    /// `?`; `""` when absent) is exactly `raw_query`.
    pub fn query_calls(&self, route: SimRoute, raw_query: &str) -> u64 {
        self.state
            .counters
            .query_calls
            .lock()
            .expect("counter lock")
            .get(&(route, raw_query.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// All API requests (every route but [`SimRoute::Token`] and [`SimRoute::Control`]).
    pub fn total_api_calls(&self) -> u64 {
        self.state.counters.total_api.load(Ordering::Relaxed)
    }

    /// Most API requests in flight at once, since start or the last reset
    /// (a reset starts it from the current in-flight count).
    pub fn max_concurrent(&self) -> usize {
        self.state.counters.max_concurrent.load(Ordering::SeqCst)
    }

    /// API requests in flight now (arrived, not yet answered or abandoned).
    pub fn in_flight(&self) -> usize {
        self.state.counters.in_flight.load(Ordering::SeqCst)
    }

    /// Waits until exactly `n` API requests are in flight (an event, not a
    /// poll: woken on every change).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; it only observes.
    pub async fn wait_for_in_flight(&self, n: usize) {
        loop {
            let notified = self.state.flight_changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight() == n {
                return;
            }
            notified.await;
        }
    }

    /// Successful refresh-token grants.
    pub fn token_grants(&self) -> u64 {
        self.state.counters.token_grants.load(Ordering::Relaxed)
    }

    /// Zeroes every counter, including credits used (not tokens, faults or data).
    pub fn reset_counters(&self) {
        self.state.counters.reset();
        self.state.credits.lock().expect("credit lock").clear();
    }

    /// Delay added before every API response (not the token endpoint).
    /// Default: zero. The request holds its concurrency slot while delayed.
    pub fn set_latency(&self, d: Duration) {
        self.state.faults.lock().expect("fault lock").latency = d;
    }

    /// The next `n` API requests answer `status` with Zoho's envelope and the
    /// code for that status (500 `INTERNAL_SERVER_ERROR`, 429
    /// `TOO_MANY_REQUESTS`, 503 `SERVICE_UNAVAILABLE`, 401 `INVALID_TOKEN`,
    /// other 5xx `INTERNAL_SERVER_ERROR`, other 4xx `INVALID_DATA`). A status
    /// outside 100..=999 is treated as 500. Replaces any pending `fail_next`.
    pub fn fail_next(&self, n: u32, status: u16) {
        self.arm_fail(n, status, None);
    }

    /// Like [`SimHandle::fail_next`], with `Retry-After: <retry_after_secs>`.
    pub fn fail_next_with_retry_after(&self, n: u32, status: u16, retry_after_secs: u32) {
        self.arm_fail(n, status, Some(retry_after_secs));
    }

    fn arm_fail(&self, n: u32, status: u16, retry_after: Option<u32>) {
        let mut f = self.state.faults.lock().expect("fault lock");
        f.fail = n;
        f.fail_status = status;
        f.fail_retry_after = retry_after;
    }

    /// The next `n` API requests get their connection closed without any
    /// response.
    pub fn reset_next(&self, n: u32) {
        self.state.faults.lock().expect("fault lock").reset = n;
    }

    /// The next `n` API requests are never answered; they end (connection
    /// closed) at shutdown. They hold their concurrency slots meanwhile.
    pub fn hang_next(&self, n: u32) {
        self.state.faults.lock().expect("fault lock").hang = n;
    }

    /// Clears latency and every pending fault; brings the token endpoint back up.
    pub fn clear_faults(&self) {
        *self.state.faults.lock().expect("fault lock") = Faults::default();
        self.set_token_endpoint_down(false);
    }

    /// While `down`, the token endpoint answers 503 with an HTML body.
    pub fn set_token_endpoint_down(&self, down: bool) {
        self.state.token_down.store(down, Ordering::Relaxed);
    }

    /// Revokes one configured refresh token: later grants with it answer
    /// `invalid_code` and its access tokens get 401 `INVALID_TOKEN`. Returns
    /// `false` when the token is unknown or already revoked.
    pub fn revoke_refresh_token(&self, refresh_token: &str) -> bool {
        self.state
            .tokens
            .lock()
            .expect("token lock")
            .revoke_refresh(&self.state.registry, refresh_token)
    }

    /// API credits charged within the last 24 hours (one per API call made
    /// with a valid token; see `SimConfig::api_credit_limit`).
    pub fn credits_used(&self) -> u64 {
        let now = Instant::now();
        self.state
            .credits
            .lock()
            .expect("credit lock")
            .iter()
            .filter(|t| now.duration_since(**t) < CREDIT_WINDOW)
            .count() as u64
    }

    /// Invalidates every access token issued so far (later API calls with
    /// them get 401 `INVALID_TOKEN`). Refresh tokens keep working.
    pub fn revoke_access_tokens(&self) {
        self.state.tokens.lock().expect("token lock").revoke_all();
    }

    /// Unexpired, unrevoked access tokens across all refresh tokens.
    pub fn live_tokens(&self) -> usize {
        self.state
            .tokens
            .lock()
            .expect("token lock")
            .live(Instant::now())
    }

    /// User groups in the data set now (writes change it).
    pub fn dataset_groups(&self) -> usize {
        self.state.store.lock().expect("store lock").groups().len()
    }

    /// A snapshot of every counter.
    pub fn stats(&self) -> SimStats {
        let mut query_calls: BTreeMap<&'static str, BTreeMap<String, u64>> = BTreeMap::new();
        for ((route, q), n) in self
            .state
            .counters
            .query_calls
            .lock()
            .expect("counter lock")
            .iter()
        {
            query_calls
                .entry(route.as_str())
                .or_default()
                .insert(q.clone(), *n);
        }
        SimStats {
            calls: SimRoute::ALL
                .iter()
                .map(|r| (r.as_str(), self.calls(*r)))
                .collect(),
            query_calls,
            total_api_calls: self.total_api_calls(),
            max_concurrent: self.max_concurrent(),
            in_flight: self.in_flight(),
            token_grants: self.token_grants(),
            live_tokens: self.live_tokens(),
            dataset_groups: self.dataset_groups(),
            credits_used: self.credits_used(),
        }
    }
}
