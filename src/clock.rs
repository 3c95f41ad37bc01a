//! The time source for freshness, `Age` and hold decisions.
//!
//! Production uses tokio's clock (which `#[tokio::test(start_paused = true)]` can pause). Tests
//! that go through real sockets cannot pause tokio's clock — auto-advance would fire every
//! pending I/O timeout while a loopback response is on its way — so they use a [`ManualClock`]
//! instead, advanced explicitly, while timeouts keep running on real time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// A cheap-to-clone time source.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    manual: Option<Arc<ManualClock>>,
}

impl Clock {
    /// tokio's clock (the default).
    pub fn tokio() -> Self {
        Clock { manual: None }
    }

    /// A clock that only moves when the returned handle says so.
    pub fn manual() -> (Self, Arc<ManualClock>) {
        let m = Arc::new(ManualClock {
            base: Instant::now(),
            offset_nanos: AtomicU64::new(0),
            moved: tokio::sync::Notify::new(),
        });
        (
            Clock {
                manual: Some(m.clone()),
            },
            m,
        )
    }

    /// The current instant.
    #[inline]
    pub fn now(&self) -> Instant {
        match &self.manual {
            None => Instant::now(),
            Some(m) => m.now(),
        }
    }

    /// `read` — an instant the caller has just read from tokio's clock — for tokio's clock
    /// (saves reading it again), or the manual clock's current instant.
    #[inline]
    pub fn now_or(&self, read: Instant) -> Instant {
        match &self.manual {
            None => read,
            Some(m) => m.now(),
        }
    }

    /// Waits until this clock reads `deadline` or later: a tokio sleep, or for a manual clock,
    /// until a test advances it far enough.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn sleep_until(&self, deadline: Instant) {
        match &self.manual {
            None => tokio::time::sleep_until(deadline).await,
            Some(m) => loop {
                let moved = m.moved.notified();
                if m.now() >= deadline {
                    return;
                }
                moved.await;
            },
        }
    }
}

/// A test clock: starts at the instant it was made and moves only by [`ManualClock::advance`].
#[derive(Debug)]
pub struct ManualClock {
    base: Instant,
    offset_nanos: AtomicU64,
    moved: tokio::sync::Notify,
}

impl ManualClock {
    /// The clock's current instant.
    pub fn now(&self) -> Instant {
        self.base + Duration::from_nanos(self.offset_nanos.load(Ordering::SeqCst))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.offset_nanos.fetch_add(nanos, Ordering::SeqCst);
        self.moved.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let (clock, handle) = Clock::manual();
        let t0 = clock.now();
        assert_eq!(clock.now(), t0);
        handle.advance(Duration::from_secs(61));
        assert_eq!(clock.now() - t0, Duration::from_secs(61));
    }

    #[tokio::test]
    async fn manual_sleep_wakes_when_advanced_past_the_deadline() {
        let (clock, handle) = Clock::manual();
        let deadline = clock.now() + Duration::from_secs(10);
        let c = clock.clone();
        let sleeper = tokio::spawn(async move { c.sleep_until(deadline).await });
        tokio::task::yield_now().await;
        handle.advance(Duration::from_secs(5));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        handle.advance(Duration::from_secs(5));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("woken")
            .unwrap();
    }
}
