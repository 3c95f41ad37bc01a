//! A circuit breaker per tenant: after `threshold` consecutive failed upstream calls (5xx,
//! connection errors, timeouts; one verdict per client call, its retries included: the caller
//! reports its last attempt's outcome once) it opens for `cool_down`: calls fail fast (the cache serves
//! stale where it can). Then one probe is let through (half-open); its success closes the
//! circuit, its failure opens it again. A 429 is Zoho pacing us, not failing: it counts neither
//! way. Time comes from the gateway [`Clock`].

use std::sync::Mutex;
use std::time::Duration;

use prometheus::IntGauge;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::error::GatewayError;

/// What an upstream attempt came to, for the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Zoho answered (2xx–4xx other than 429).
    Success,
    /// 5xx, connection error or timeout.
    Failure,
    /// Counts neither way (429).
    Neutral,
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probe_started: Instant },
}

/// Per-tenant circuit breaker.
#[derive(Debug)]
pub struct CircuitBreaker {
    state: Mutex<State>,
    threshold: u32,
    cool_down: Duration,
    clock: Clock,
    open_gauge: IntGauge,
}

impl CircuitBreaker {
    /// Opens after `threshold` consecutive failures, for `cool_down`. `open_gauge` is 1 while
    /// open or half-open.
    pub fn new(threshold: u32, cool_down: Duration, clock: Clock, open_gauge: IntGauge) -> Self {
        CircuitBreaker {
            state: Mutex::new(State::Closed { failures: 0 }),
            threshold: threshold.max(1),
            cool_down,
            clock,
            open_gauge,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// May a call go upstream now?
    ///
    /// # Errors
    /// [`GatewayError::CircuitOpen`] while open (with the cool-down left), or while a half-open
    /// probe is out (with 1 s: the probe's answer decides soon).
    pub fn allow(&self) -> Result<(), GatewayError> {
        let now = self.clock.now();
        let mut st = self.lock();
        match *st {
            State::Closed { .. } => Ok(()),
            State::Open { until } if now < until => Err(GatewayError::CircuitOpen {
                retry_after: until - now,
            }),
            State::Open { .. } => {
                *st = State::HalfOpen { probe_started: now };
                Ok(())
            }
            // A probe that never reported (its caller was cancelled) is replaced after a cool-down.
            State::HalfOpen { probe_started } if now >= probe_started + self.cool_down => {
                *st = State::HalfOpen { probe_started: now };
                Ok(())
            }
            State::HalfOpen { .. } => Err(GatewayError::CircuitOpen {
                retry_after: Duration::from_secs(1),
            }),
        }
    }

    /// Reports an attempt's outcome.
    pub fn record(&self, verdict: Verdict) {
        let now = self.clock.now();
        let mut st = self.lock();
        let next = match (&*st, verdict) {
            (_, Verdict::Neutral) => return,
            (_, Verdict::Success) => State::Closed { failures: 0 },
            (State::Closed { failures }, Verdict::Failure) if failures + 1 < self.threshold => {
                State::Closed {
                    failures: failures + 1,
                }
            }
            (_, Verdict::Failure) => State::Open {
                until: now.checked_add(self.cool_down).unwrap_or(now),
            },
        };
        let opened = !matches!(next, State::Closed { .. });
        if opened && matches!(*st, State::Closed { .. }) {
            tracing::warn!(
                cool_down_s = self.cool_down.as_secs(),
                "circuit opened after consecutive upstream failures"
            );
        }
        *st = next;
        self.open_gauge.set(i64::from(opened));
    }

    /// Whether calls are currently refused or probing.
    pub fn is_open(&self) -> bool {
        !matches!(*self.lock(), State::Closed { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_probes_after_cool_down() {
        let (clock, manual) = Clock::manual();
        let b = CircuitBreaker::new(
            3,
            Duration::from_secs(30),
            clock,
            IntGauge::new("g", "g").unwrap(),
        );
        for _ in 0..2 {
            b.allow().unwrap();
            b.record(Verdict::Failure);
        }
        b.record(Verdict::Neutral);
        assert!(!b.is_open());
        b.record(Verdict::Failure);
        assert!(b.is_open());
        assert_eq!(b.open_gauge.get(), 1);
        assert!(matches!(
            b.allow(),
            Err(GatewayError::CircuitOpen { retry_after }) if retry_after == Duration::from_secs(30)
        ));
        manual.advance(Duration::from_secs(12));
        assert_eq!(
            b.allow().unwrap_err().retry_after_secs(),
            Some(18),
            "Retry-After is the cool-down left"
        );
        manual.advance(Duration::from_secs(18));
        b.allow().unwrap(); // the probe
        assert!(b.allow().is_err(), "one probe at a time");
        b.record(Verdict::Failure);
        assert!(b.allow().is_err(), "failed probe reopens");
        manual.advance(Duration::from_secs(30));
        b.allow().unwrap();
        b.record(Verdict::Success);
        assert!(!b.is_open());
        assert_eq!(b.open_gauge.get(), 0);
        b.allow().unwrap();
    }
}
