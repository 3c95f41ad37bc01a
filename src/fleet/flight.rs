//! Cross-replica single-flight: among concurrent misses for one key across the fleet, one
//! upstream call.
//!
//! Semantics (the vocabulary and guarantees of [`crate::coalesce`], extended across replicas):
//! - **Local first**: [`Fleet::fleet_flight`] is called from inside the local flight's fetch
//!   ([`crate::coalesce::SingleFlight::run`]), so each replica asks Redis at most once per key at a
//!   time; its followers wait locally as before.
//! - **One owner**: the replica whose `SET lock:{key} NX PX flight_lock_ttl` succeeds is the
//!   owner; it runs the fetch (which stores the answer into L2 itself), then — in one script —
//!   releases the lock by compare-and-delete and publishes `done:{key}` with
//!   [`Completion::Stored`] or [`Completion::Failed`].
//! - **No lost wake-up**: a replica that loses the lock has registered for `done:{key}`
//!   *before* it re-checks L2 ([`super::Fleet::subscribe`]); a completion published at any point
//!   after its lock attempt wakes it. It then reads the answer from L2.
//! - **Double-checked**: a replica that wins the lock re-checks L2 before fetching, so a lock
//!   that came free because an owner just finished does not cause a second call.
//! - **Never polling**: a waiter sleeps until the completion event, the lock's lapse (the `PTTL`
//!   returned by the failed lock attempt) or its deadline — each wake-up has a cause.
//! - **Owner death**: its lock lapses after `flight_lock_ttl`; the waiters wake then, and exactly
//!   one of them wins the next `SET NX` and takes over ([`FleetRole::TookOver`]); the others wait
//!   for it.
//! - **Errors are shared, not cached**: an owner whose fetch failed publishes `Failed`; its
//!   waiters get [`FleetFlightError::OwnerFailed`] (the caller answers as for a failed local
//!   flight); the next miss starts a new flight.
//! - **Deadline**: a waiter past `deadline` gets [`FleetFlightError::Timeout`]; the owner's fetch
//!   goes on.
//! - **Degrade**: any Redis trouble gives [`FleetFlightError::Unavailable`]; the caller fetches
//!   itself (the local flight still coalesces its own replica).
//! - **Cancellation**: an owner dropped mid-fetch releases its lock and publishes `Failed` in the
//!   background, so waiters do not wait for the lapse.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::lease::{Lease, LeaseAttempt};
use super::{Fleet, Unavailable, Woken};
use crate::canonical::CacheKey;

const STORED: &[u8] = b"stored";
const FAILED: &[u8] = b"failed";

/// What the owner's fetch did, told to the waiters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// The answer is in L2: waiters read it there.
    Stored,
    /// No answer for the waiters (upstream error, or not storable).
    Failed,
}

/// The caller's part in a fleet flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FleetRole {
    /// Won the lock and fetched.
    Owner,
    /// Got the answer from L2 after another replica's fetch.
    Waiter,
    /// The owner's lock lapsed (it died); this replica fetched instead.
    TookOver,
}

/// Why a fleet flight gave no value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FleetFlightError {
    /// Redis could not coordinate: fetch locally.
    #[error("redis unavailable")]
    Unavailable,
    /// The deadline passed while another replica fetched.
    #[error("deadline passed while waiting for another replica")]
    Timeout,
    /// The owning replica's fetch failed.
    #[error("the owning replica's fetch failed")]
    OwnerFailed,
}

impl From<Unavailable> for FleetFlightError {
    fn from(_: Unavailable) -> Self {
        FleetFlightError::Unavailable
    }
}

impl FleetFlightError {
    /// Stable label (also the `result` label of `zoho_gateway_fleet_flights_total`).
    pub fn as_str(self) -> &'static str {
        match self {
            FleetFlightError::Unavailable => "unavailable",
            FleetFlightError::Timeout => "timeout",
            FleetFlightError::OwnerFailed => "owner_failed",
        }
    }
}

impl FleetRole {
    /// Stable label (also the `result` label of `zoho_gateway_fleet_flights_total`).
    pub fn as_str(self) -> &'static str {
        match self {
            FleetRole::Owner => "owner",
            FleetRole::Waiter => "waited",
            FleetRole::TookOver => "took_over",
        }
    }
}

/// Releases the lock with a `Failed` completion if the owner is dropped mid-fetch.
struct Owned<'a> {
    fleet: &'a Arc<Fleet>,
    lease: Option<Lease>,
    suffix: &'a str,
}

impl Drop for Owned<'_> {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            lease
                .release_in_background(self.fleet, Some((self.suffix.to_owned(), FAILED.to_vec())));
        }
    }
}

impl Fleet {
    /// Joins or leads the fleet-wide flight for `key` (see the module doc). `check` re-reads L2
    /// (`Ok(None)` on a miss); `fetch` is called at most once, only by the owner, and must store
    /// its answer into L2 before returning [`Completion::Stored`]. Waits at most `deadline`.
    ///
    /// # Errors
    /// [`FleetFlightError`]: `Unavailable` (fetch locally), `Timeout`, `OwnerFailed`.
    ///
    /// # Cancel safety
    /// A dropped waiter just stops waiting; a dropped owner releases its lock with `Failed`.
    pub async fn fleet_flight<V, C, CF, F, FF>(
        self: &Arc<Self>,
        key: &CacheKey,
        deadline: Duration,
        mut check: C,
        fetch: F,
    ) -> Result<(V, FleetRole), FleetFlightError>
    where
        C: FnMut() -> CF,
        CF: Future<Output = Result<Option<V>, Unavailable>>,
        F: FnOnce() -> FF,
        FF: Future<Output = (V, Completion)>,
    {
        let result = self
            .fleet_flight_inner(key, deadline, &mut check, fetch)
            .await;
        let label = match &result {
            Ok((_, role)) => role.as_str(),
            Err(e) => e.as_str(),
        };
        self.metrics.flights.with_label_values(&[label]).inc();
        result
    }

    async fn fleet_flight_inner<V, C, CF, F, FF>(
        self: &Arc<Self>,
        key: &CacheKey,
        deadline: Duration,
        check: &mut C,
        fetch: F,
    ) -> Result<(V, FleetRole), FleetFlightError>
    where
        C: FnMut() -> CF,
        CF: Future<Output = Result<Option<V>, Unavailable>>,
        F: FnOnce() -> FF,
        FF: Future<Output = (V, Completion)>,
    {
        let until = Instant::now() + deadline;
        let hex = hex::encode(key.0);
        let suffix = format!("done:{hex}");
        let lock = format!("lock:{hex}");
        // Registered before the lock attempt and every re-check: no completion goes unseen.
        let mut events = self.subscribe(&suffix);
        let mut lapsed = false;
        let lease = loop {
            let left = match self.try_lease(&lock, self.cfg.flight_lock_ttl).await? {
                LeaseAttempt::Acquired(lease) => break lease,
                LeaseAttempt::Held(left) => left,
            };
            if let Some(v) = check().await? {
                return Ok((v, FleetRole::Waiter));
            }
            let lapse = Instant::now() + left + Duration::from_millis(5);
            match events.wait_until(until.min(lapse)).await {
                Woken::Message(payload) => {
                    if let Some(v) = check().await? {
                        return Ok((v, FleetRole::Waiter));
                    }
                    if payload.as_ref() == FAILED {
                        return Err(FleetFlightError::OwnerFailed);
                    }
                    // Stored but already gone (superseded by a write): go round; one of the
                    // waiters takes the lock.
                }
                Woken::Deadline if Instant::now() >= until => {
                    return Err(FleetFlightError::Timeout);
                }
                Woken::Deadline => lapsed = true,
                Woken::Unavailable => return Err(FleetFlightError::Unavailable),
            }
        };
        let mut owned = Owned {
            fleet: self,
            lease: Some(lease),
            suffix: &suffix,
        };
        // The lock may have come free because an owner just finished: its answer is in L2.
        if let Some(v) = check().await? {
            if let Some(lease) = owned.lease.take() {
                let _ = self.release(lease, Some((&suffix, STORED))).await;
            }
            return Ok((v, FleetRole::Waiter));
        }
        let (value, completion) = fetch().await;
        if let Some(lease) = owned.lease.take() {
            let payload = match completion {
                Completion::Stored => STORED,
                Completion::Failed => FAILED,
            };
            // If this fails (Redis slow or just back), the waiters would sit out their whole
            // deadline for a completion that never comes: retry once Redis is available again,
            // within the lock's life (compare-and-delete keeps a retry from freeing another
            // owner's lock). Past that, the lock lapses and waiters take over: still bounded.
            if self
                .release(lease.clone(), Some((&suffix, payload)))
                .await
                .is_err()
            {
                let (fleet, suffix, ttl) = (self.clone(), suffix.clone(), self.cfg.flight_lock_ttl);
                tokio::spawn(async move {
                    if fleet.wait_available(ttl).await {
                        let _ = fleet.release(lease, Some((&suffix, payload))).await;
                    }
                });
            }
        }
        let role = if lapsed {
            FleetRole::TookOver
        } else {
            FleetRole::Owner
        };
        Ok((value, role))
    }
}
