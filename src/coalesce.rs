//! Single-flight: among concurrent misses for one key, exactly one fetch.
//!
//! Semantics (written here, relied on by [`crate::proxy`]):
//! - The first caller for a key becomes the **leader**: its fetch future is spawned as a task
//!   owned by the flight, so the leader disconnecting cancels nothing and restarts nothing.
//! - Later callers for the same key while the flight runs are **followers**: they wait on a
//!   `tokio::sync::watch` channel (an event, no polling), each with its own deadline.
//! - The one result, success or error, is handed to every waiter of that flight. The flight is
//!   removed when the fetch finishes; errors are not remembered, so the next caller starts exactly
//!   one new flight.
//! - A waiter past its deadline gets [`FlightError::Timeout`]; the fetch goes on. The leader
//!   may have its own deadline ([`SingleFlight::run_led`]): its request should see its own
//!   fetch's outcome (an upstream timeout, say), not a follower's "waited too long".
//! - If the fetch task panics, waiters get [`FlightError::Aborted`] and the flight is removed.
//! - The map is a `std::sync::Mutex<HashMap>` held only for an insert or lookup, never across
//!   an `.await`; its size is bounded by the number of distinct keys in flight.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

/// The caller's part in a flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Started the fetch.
    Leader,
    /// Joined a fetch already running.
    Follower,
}

/// Why a caller got no value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FlightError {
    /// The caller's deadline passed first (the fetch continues).
    #[error("deadline passed while waiting for the flight")]
    Timeout,
    /// The fetch task ended without a value (it panicked).
    #[error("flight aborted")]
    Aborted,
}

type Slot<V> = Arc<watch::Sender<Option<V>>>;

/// A set of in-flight fetches keyed by `K`, each producing a cloneable `V`.
pub struct SingleFlight<K, V> {
    flights: Mutex<HashMap<K, Slot<V>>>,
}

impl<K, V> std::fmt::Debug for SingleFlight<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SingleFlight").finish_non_exhaustive()
    }
}

impl<K, V> Default for SingleFlight<K, V> {
    fn default() -> Self {
        SingleFlight {
            flights: Mutex::new(HashMap::new()),
        }
    }
}

/// Removes the flight from the map when the fetch task ends, however it ends.
struct Remove<K: Hash + Eq, V> {
    owner: Arc<SingleFlight<K, V>>,
    key: Option<K>,
}

impl<K: Hash + Eq, V> Drop for Remove<K, V> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.owner
                .flights
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        }
    }
}

impl<K, V> SingleFlight<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<K, Slot<V>>> {
        self.flights.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of flights in progress.
    pub fn in_flight(&self) -> usize {
        self.map().len()
    }

    /// Callers currently waiting on the flight for `key` (leader included), 0 if none runs.
    pub fn waiters(&self, key: &K) -> usize {
        self.map().get(key).map_or(0, |tx| tx.receiver_count())
    }

    /// Joins the flight for `key`, or starts one with `fetch` (called only by the leader), and
    /// waits at most `deadline` for its value.
    ///
    /// # Errors
    /// [`FlightError::Timeout`] past `deadline`; [`FlightError::Aborted`] if the fetch panicked.
    ///
    /// # Cancel safety
    /// Dropping the returned future only stops this caller's wait; the fetch continues and still
    /// delivers to the other waiters.
    pub async fn run<F, Fut>(
        self: &Arc<Self>,
        key: K,
        deadline: Duration,
        fetch: F,
    ) -> Result<(V, Role), FlightError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        self.run_led(key, deadline, deadline, fetch).await
    }

    /// [`SingleFlight::run`] where a caller that joins waits at most `follower_deadline`, and
    /// the caller that starts the flight waits at most `leader_deadline` (its request's own
    /// deadline: the fetch it started is bounded by the upstream timeouts, and its request
    /// should get the fetch's outcome rather than a shorter wait's timeout).
    ///
    /// # Errors
    /// [`FlightError::Timeout`] past the caller's deadline; [`FlightError::Aborted`] if the
    /// fetch panicked.
    ///
    /// # Cancel safety
    /// As [`SingleFlight::run`].
    pub async fn run_led<F, Fut>(
        self: &Arc<Self>,
        key: K,
        follower_deadline: Duration,
        leader_deadline: Duration,
        fetch: F,
    ) -> Result<(V, Role), FlightError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        let (mut rx, role) = {
            let mut map = self.map();
            match map.get(&key) {
                Some(tx) => (tx.subscribe(), Role::Follower),
                None => {
                    let (tx, rx) = watch::channel(None);
                    let tx = Arc::new(tx);
                    map.insert(key.clone(), tx.clone());
                    drop(map);
                    let guard = Remove {
                        owner: Arc::clone(self),
                        key: Some(key),
                    };
                    let fut = fetch();
                    tokio::spawn(async move {
                        let value = fut.await;
                        // Publish first, then remove: a caller arriving in between joins a
                        // flight whose value is already there.
                        tx.send_replace(Some(value));
                        drop(guard);
                    });
                    (rx, Role::Leader)
                }
            }
        };
        let deadline = match role {
            Role::Leader => leader_deadline,
            Role::Follower => follower_deadline,
        };
        let waited = tokio::time::timeout(deadline, rx.wait_for(Option::is_some)).await;
        match waited {
            Err(_) => Err(FlightError::Timeout),
            Ok(Err(_)) => Err(FlightError::Aborted),
            Ok(Ok(v)) => match v.as_ref() {
                Some(v) => Ok((v.clone(), role)),
                None => Err(FlightError::Aborted),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::Barrier;

    /// The leader waits for its own fetch up to its own deadline; a follower with a shorter
    /// one times out while the fetch goes on.
    #[tokio::test(start_paused = true)]
    async fn the_leader_has_its_own_deadline() {
        let sf = Arc::new(SingleFlight::<u32, u32>::new());
        let fetch = || async {
            tokio::time::sleep(Duration::from_secs(40)).await;
            7
        };
        let leader = {
            let sf = sf.clone();
            tokio::spawn(async move {
                sf.run_led(1, Duration::from_secs(30), Duration::from_secs(60), fetch)
                    .await
            })
        };
        tokio::task::yield_now().await;
        let follower = sf
            .run_led(
                1,
                Duration::from_secs(30),
                Duration::from_secs(60),
                || async { unreachable!("one fetch") },
            )
            .await;
        assert_eq!(follower.unwrap_err(), FlightError::Timeout);
        assert_eq!(leader.await.unwrap().unwrap(), (7, Role::Leader));
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch() {
        let sf = Arc::new(SingleFlight::<u32, u32>::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let (release, gate) = watch::channel(false);
        let n = 100;
        let barrier = Arc::new(Barrier::new(n));
        let mut tasks = Vec::new();
        for _ in 0..n {
            let (sf, calls, mut gate, barrier) =
                (sf.clone(), calls.clone(), gate.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                sf.run(1, Duration::from_secs(10), || {
                    calls.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let _ = gate.wait_for(|open| *open).await;
                        42
                    }
                })
                .await
            }));
        }
        // Hold the fetch until every caller has joined the flight.
        while sf.waiters(&1) < n {
            tokio::task::yield_now().await;
        }
        release.send_replace(true);
        let mut leaders = 0;
        for t in tasks {
            let (v, role) = t.await.unwrap().unwrap();
            assert_eq!(v, 42);
            leaders += usize::from(role == Role::Leader);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(leaders, 1);
        assert_eq!(sf.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn leader_dropping_does_not_cancel_the_fetch() {
        let sf = Arc::new(SingleFlight::<u32, u32>::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let leader = sf.run(1, Duration::from_secs(10), move || {
            c.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                7
            }
        });
        // Start the leader's flight, then drop the leader mid-fetch.
        let leader = tokio::time::timeout(Duration::from_millis(10), leader).await;
        assert!(leader.is_err());
        let (v, role) = sf
            .run(1, Duration::from_secs(10), || async { unreachable!() })
            .await
            .unwrap();
        assert_eq!((v, role), (7, Role::Follower));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn waiter_deadline_and_error_not_remembered() {
        let sf = Arc::new(SingleFlight::<u32, Result<u32, &'static str>>::new());
        let slow = sf.run(1, Duration::from_millis(100), || async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Err("boom")
        });
        assert_eq!(slow.await.unwrap_err(), FlightError::Timeout);
        // The fetch goes on and its error reaches a waiter that is still there.
        let (v, _) = sf
            .run(1, Duration::from_secs(10), || async { unreachable!() })
            .await
            .unwrap();
        assert_eq!(v, Err("boom"));
        // Errors are not remembered: the next caller leads a new flight.
        let (v, role) = sf
            .run(1, Duration::from_secs(10), || async { Ok(3) })
            .await
            .unwrap();
        assert_eq!((v, role), (Ok(3), Role::Leader));
    }

    #[tokio::test]
    async fn panicking_fetch_aborts_waiters_and_clears_the_flight() {
        let sf = Arc::new(SingleFlight::<u32, u32>::new());
        let r = sf
            .run(1, Duration::from_secs(10), || async { panic!("fetch bug") })
            .await;
        assert_eq!(r.unwrap_err(), FlightError::Aborted);
        assert_eq!(sf.in_flight(), 0);
    }
}
