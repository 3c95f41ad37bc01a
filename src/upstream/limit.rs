//! Per-tenant upstream concurrency limit (Zoho's concurrency limit, API-NOTES §6: Free 5,
//! Standard 10, Professional 15, Enterprise 20, Ultimate 25 calls in flight per user and OAuth
//! app). Requests beyond the limit wait in a bounded queue with a deadline, then get the
//! gateway's 429 `TOO_MANY_REQUESTS`. Cache hits never come here.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prometheus::IntGauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::GatewayError;

/// A tenant's slots for requests in flight to Zoho.
#[derive(Debug)]
pub struct ConcurrencyLimit {
    slots: Arc<Semaphore>,
    queued: AtomicUsize,
    max_queue: usize,
    queue_timeout: Duration,
    in_flight: IntGauge,
    queue_depth: IntGauge,
}

/// A held slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    in_flight: IntGauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.in_flight.dec();
    }
}

/// A place in the queue: counted in `queued` and the gauge from `enter` (after the caller's
/// `fetch_add`) until dropped.
struct Queued<'a>(&'a ConcurrencyLimit);

impl<'a> Queued<'a> {
    fn enter(limit: &'a ConcurrencyLimit) -> Self {
        limit.queue_depth.inc();
        Queued(limit)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.queue_depth.dec();
        self.0.queued.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ConcurrencyLimit {
    /// `limit` slots; at most `max_queue` waiters, each waiting at most `queue_timeout`.
    /// The gauges report slots in use and waiters.
    pub fn new(
        limit: usize,
        max_queue: usize,
        queue_timeout: Duration,
        in_flight: IntGauge,
        queue_depth: IntGauge,
    ) -> Self {
        ConcurrencyLimit {
            slots: Arc::new(Semaphore::new(limit.max(1))),
            queued: AtomicUsize::new(0),
            max_queue,
            queue_timeout,
            in_flight,
            queue_depth,
        }
    }

    /// Takes a slot, waiting in the queue if none is free.
    ///
    /// # Errors
    /// [`GatewayError::UpstreamBusy`] when the queue is full or the wait times out.
    ///
    /// # Cancel safety
    /// Cancel-safe: a cancelled waiter leaves the queue and holds no slot.
    pub async fn acquire(&self) -> Result<Slot, GatewayError> {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if self.queued.fetch_add(1, Ordering::SeqCst) >= self.max_queue {
                    self.queued.fetch_sub(1, Ordering::SeqCst);
                    return Err(GatewayError::UpstreamBusy);
                }
                // Leaves the queue however the wait ends, cancellation included.
                let _in_queue = Queued::enter(self);
                let waited =
                    tokio::time::timeout(self.queue_timeout, self.slots.clone().acquire_owned())
                        .await;
                match waited {
                    Ok(Ok(p)) => p,
                    _ => return Err(GatewayError::UpstreamBusy),
                }
            }
        };
        self.in_flight.inc();
        Ok(Slot {
            _permit: permit,
            in_flight: self.in_flight.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(n: usize, queue: usize) -> ConcurrencyLimit {
        let g = || IntGauge::new("g", "g").unwrap();
        ConcurrencyLimit::new(n, queue, Duration::from_secs(1), g(), g())
    }

    #[tokio::test(start_paused = true)]
    async fn excess_waits_then_times_out_and_full_queue_refuses() {
        let l = limit(2, 1);
        let a = l.acquire().await.unwrap();
        let _b = l.acquire().await.unwrap();
        assert_eq!(l.in_flight.get(), 2);
        // One may queue; a second waiter is refused at once.
        let queued = l.acquire();
        tokio::pin!(queued);
        assert!(futures_util::poll!(&mut queued).is_pending());
        assert!(matches!(l.acquire().await, Err(GatewayError::UpstreamBusy)));
        drop(a);
        let c = queued.await.unwrap();
        assert_eq!(l.in_flight.get(), 2);
        // With every slot taken, a waiter times out.
        assert!(matches!(l.acquire().await, Err(GatewayError::UpstreamBusy)));
        drop(c);
        assert_eq!(l.in_flight.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_leaves_the_queue() {
        let l = limit(1, 1);
        let _held = l.acquire().await.unwrap();
        {
            let waiting = l.acquire();
            tokio::pin!(waiting);
            assert!(futures_util::poll!(&mut waiting).is_pending());
            assert_eq!(l.queue_depth.get(), 1);
        } // dropped while queued: the client went away
        assert_eq!(l.queue_depth.get(), 0);
        assert_eq!(l.queued.load(Ordering::SeqCst), 0);
        // The queue still has its one place.
        let again = l.acquire();
        tokio::pin!(again);
        assert!(futures_util::poll!(&mut again).is_pending());
    }
}
