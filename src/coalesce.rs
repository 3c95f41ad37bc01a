//! Single-flight: among concurrent misses for one key, exactly one fetch.
//!
//! Semantics (written here, relied on by [`crate::proxy`]):
//! - The first caller for a key becomes the **leader**: its fetch future is spawned as a task
//!   owned by the flight, so the leader disconnecting cancels nothing and restarts nothing.
//! - Later callers for the same key while the flight runs are **followers**: they wait on the
//!   flight's `tokio::sync::Notify` (an event, no polling), each with its own deadline, and are
//!   woken in the order they joined (the leader first).
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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;

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

/// One fetch in progress and the callers waiting for it.
struct Flight<V> {
    /// Set once when the fetch task ends: `Some(value)`, or `None` if it ended without one.
    outcome: OnceLock<Option<V>>,
    /// Woken once `outcome` is set. Waiters queue in the order they joined and
    /// `notify_waiters` wakes them in that order (tokio's `watch` would wake them in eight
    /// random buckets: in a storm, early callers finished last).
    done: Notify,
    /// Callers waiting (leader included).
    waiting: AtomicUsize,
}

type Slot<V> = Arc<Flight<V>>;

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

/// Ends a flight when its fetch task ends, however it ends (value, panic, runtime shutdown):
/// publishes the outcome (`None` if none was set), wakes the waiters, then removes the flight
/// from the map. Publish first, then remove: a caller arriving in between joins a flight whose
/// value is already there.
struct Land<K: Hash + Eq, V> {
    owner: Arc<SingleFlight<K, V>>,
    flight: Slot<V>,
    key: Option<K>,
}

impl<K: Hash + Eq, V> Drop for Land<K, V> {
    fn drop(&mut self) {
        let _ = self.flight.outcome.set(None);
        self.flight.done.notify_waiters();
        if let Some(key) = self.key.take() {
            self.owner
                .flights
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        }
    }
}

/// One caller counted in [`Flight::waiting`] while it waits (counted under the map's lock,
/// so [`SingleFlight::waiters`] sees a flight's leader from the flight's start).
struct Waiting<V>(Slot<V>);

impl<V> Waiting<V> {
    fn join(flight: &Slot<V>) -> Self {
        flight.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(Arc::clone(flight))
    }
}

impl<V> Drop for Waiting<V> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
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
        self.map()
            .get(key)
            .map_or(0, |f| f.waiting.load(Ordering::Relaxed))
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
    /// Waiters are woken in the order they joined the flight (the leader first), so that in a
    /// storm the callers that have waited longest are answered first.
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
        let (waiting, role) = {
            let mut map = self.map();
            match map.get(&key) {
                Some(flight) => (Waiting::join(flight), Role::Follower),
                None => {
                    let flight = Arc::new(Flight {
                        outcome: OnceLock::new(),
                        done: Notify::new(),
                        waiting: AtomicUsize::new(0),
                    });
                    map.insert(key.clone(), Arc::clone(&flight));
                    let waiting = Waiting::join(&flight);
                    drop(map);
                    let land = Land {
                        owner: Arc::clone(self),
                        flight: Arc::clone(&flight),
                        key: Some(key),
                    };
                    let fut = fetch();
                    tokio::spawn(async move {
                        let value = fut.await;
                        let _ = land.flight.outcome.set(Some(value));
                        drop(land);
                    });
                    (waiting, Role::Leader)
                }
            }
        };
        let deadline = match role {
            Role::Leader => leader_deadline,
            Role::Follower => follower_deadline,
        };
        let flight = &waiting.0;
        // Queued now, in arrival order; a `Notified` created before the outcome is set is
        // woken by the `notify_waiters` that follows it, so checking after this misses nothing.
        let done = flight.done.notified();
        let mut done = std::pin::pin!(done);
        done.as_mut().enable();
        if flight.outcome.get().is_none() && tokio::time::timeout(deadline, done).await.is_err() {
            return Err(FlightError::Timeout);
        }
        match flight.outcome.get() {
            Some(Some(v)) => Ok((v.clone(), role)),
            Some(None) | None => Err(FlightError::Aborted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::{Barrier, watch};

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

    /// Waiters are woken in the order they joined (leader first): in a storm, the callers that
    /// have waited longest are answered first. (With `watch`, eight random buckets.)
    #[tokio::test]
    async fn waiters_are_answered_in_the_order_they_joined() {
        let sf = Arc::new(SingleFlight::<u32, u32>::new());
        let (release, gate) = watch::channel(false);
        let answered = Arc::new(Mutex::new(Vec::new()));
        let n = 64;
        let mut tasks = Vec::new();
        for i in 0..n {
            let (caller, answered, mut gate) = (sf.clone(), answered.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                let got = caller
                    .run(1, Duration::from_secs(10), || async move {
                        let _ = gate.wait_for(|open| *open).await;
                        7
                    })
                    .await;
                answered.lock().unwrap().push(i);
                got
            }));
            // Caller i joins before caller i + 1 starts.
            while sf.waiters(&1) <= i {
                tokio::task::yield_now().await;
            }
        }
        release.send_replace(true);
        for (i, t) in tasks.into_iter().enumerate() {
            let role = if i == 0 { Role::Leader } else { Role::Follower };
            assert_eq!(t.await.unwrap().unwrap(), (7, role));
        }
        assert_eq!(*answered.lock().unwrap(), (0..n).collect::<Vec<_>>());
        assert_eq!(sf.in_flight(), 0);
        assert_eq!(sf.waiters(&1), 0);
    }

    /// A waiter that gives up is no longer counted and does not stop the others' wake-up.
    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_gives_up_leaves_the_others_their_answer() {
        let sf = Arc::new(SingleFlight::<u32, u32>::new());
        let fetch = || async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            9
        };
        let leader = {
            let sf = sf.clone();
            tokio::spawn(async move { sf.run(1, Duration::from_secs(10), fetch).await })
        };
        tokio::task::yield_now().await;
        let quitter = sf.run(1, Duration::from_secs(10), || async { unreachable!() });
        let quit = tokio::time::timeout(Duration::from_secs(1), quitter).await;
        assert!(quit.is_err());
        assert_eq!(sf.waiters(&1), 1, "only the leader still waits");
        let follower = sf
            .run(1, Duration::from_secs(10), || async { unreachable!() })
            .await;
        assert_eq!(follower.unwrap(), (9, Role::Follower));
        assert_eq!(leader.await.unwrap().unwrap(), (9, Role::Leader));
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
