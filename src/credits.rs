//! Zoho's daily API-credit budget, per tenant (API-NOTES §6; Zoho's "API limits" page).
//!
//! Zoho charges every API call credits (1 for most reads; a route's `credit_cost` says how many)
//! against an allowance per **rolling 24 hours** that depends on the edition, the user licences
//! and add-on credits ([`crate::config::Edition::credit_allowance`], or `daily_credits`).
//!
//! - **Spent** credits are counted in a bounded window of [`BUCKETS`] quarter-hour buckets
//!   ([`CreditLedger`]): a call's credits fall out of the window between 23 h 45 min and 24 h
//!   after it, so the count errs on the high side by at most one bucket. What counts as a
//!   charged call: every upstream answer except 401 (Zoho charges calls made with a valid
//!   token) and 429 (refused by Zoho's concurrency or credit limit); a call that got no answer
//!   counts nothing.
//! - **Reported**: Zoho's `X-API-CREDITS-REMAINING` header (documented in API-NOTES as appearing
//!   once half the daily credits are used, \[unverified\]; Zoho's API-limits pages do not
//!   name it), when an answer carries it, is kept for [`REPORT_TTL`]: it includes calls made
//!   outside this gateway (other integrations of the organisation), so the remaining credits
//!   the gateway acts on are the lower of the allowance less the spent credits and that report.
//! - **Reserve**: while fewer than `credit_reserve` credits remain, only clients with
//!   `priority = "high"` may spend credits ([`CreditLedger::reserve_hold`]); the time until the
//!   reserve is free again (the oldest buckets leaving the window, or the report expiring) is
//!   the `Retry-After` of the refusal.
//!
//! The ledger survives reloads of its tenant (settings change, not the credits already spent);
//! time is the gateway's [`Clock`], so tests move it by hand.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::clock::Clock;

/// Width of one bucket of the rolling window.
pub const BUCKET: Duration = Duration::from_secs(15 * 60);

/// Buckets in the window: 96 quarter-hours, Zoho's rolling 24 hours.
pub const BUCKETS: usize = 96;

/// How long a remaining-credit figure reported by Zoho counts. After that, the allowance less
/// the spent credits alone decides (and the next answer that carries the header renews it), so
/// a reserve entered on a report cannot outlast it when no call is made.
pub const REPORT_TTL: Duration = Duration::from_secs(15 * 60);

/// What the credit gauges show for one tenant at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreditSnapshot {
    /// Credits spent through this gateway in the rolling 24 h.
    pub spent: u64,
    /// The configured daily allowance, if known.
    pub allowance: Option<u64>,
    /// The remaining credits the gateway acts on: the allowance less `spent`, lowered to the
    /// last Zoho report when one is recent; `None` when neither is known.
    pub remaining: Option<u64>,
    /// The last `X-API-CREDITS-REMAINING` from Zoho, while recent.
    pub reported: Option<u64>,
}

#[derive(Debug)]
struct State {
    /// `(bucket number, credits)`; bucket `n` covers `[origin + n·BUCKET, origin + (n+1)·BUCKET)`
    /// and sits at index `n % BUCKETS`, so a slot is reused once its bucket has left the window.
    buckets: [(u64, u64); BUCKETS],
    reported: Option<(u64, Instant)>,
}

/// One tenant's spent credits over the rolling 24 h, and Zoho's last report of what remains.
/// Memory is fixed ([`BUCKETS`] pairs); every operation takes one short lock.
#[derive(Debug)]
pub struct CreditLedger {
    clock: Clock,
    origin: Instant,
    state: Mutex<State>,
}

impl CreditLedger {
    /// An empty ledger reading time from `clock`.
    pub fn new(clock: Clock) -> Self {
        CreditLedger {
            origin: clock.now(),
            clock,
            state: Mutex::new(State {
                buckets: [(0, 0); BUCKETS],
                reported: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bucket_of(&self, t: Instant) -> u64 {
        let since = t.saturating_duration_since(self.origin);
        (since.as_nanos() / BUCKET.as_nanos()) as u64
    }

    /// Counts `credits` spent now.
    pub fn spend(&self, credits: u64) {
        let n = self.bucket_of(self.clock.now());
        let mut st = self.lock();
        let slot = &mut st.buckets[(n % BUCKETS as u64) as usize];
        if slot.0 != n || slot.1 == 0 {
            *slot = (n, 0);
        }
        slot.1 = slot.1.saturating_add(credits);
    }

    /// Records Zoho's `X-API-CREDITS-REMAINING` as of now.
    pub fn report_remaining(&self, remaining: u64) {
        let now = self.clock.now();
        self.lock().reported = Some((remaining, now));
    }

    /// Buckets still in the window at bucket `now_n`, with their credits.
    fn live(buckets: &[(u64, u64); BUCKETS], now_n: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        buckets
            .iter()
            .copied()
            .filter(move |(n, c)| *c > 0 && *n <= now_n && now_n - n < BUCKETS as u64)
    }

    /// The gauges' view at this instant, for `allowance`.
    pub fn snapshot(&self, allowance: Option<u64>) -> CreditSnapshot {
        let now = self.clock.now();
        let now_n = self.bucket_of(now);
        let st = self.lock();
        let spent = Self::live(&st.buckets, now_n).map(|(_, c)| c).sum::<u64>();
        let reported = st
            .reported
            .filter(|(_, at)| now.saturating_duration_since(*at) < REPORT_TTL)
            .map(|(r, _)| r);
        let local = allowance.map(|a| a.saturating_sub(spent));
        let remaining = match (local, reported) {
            (Some(l), Some(r)) => Some(l.min(r)),
            (l, r) => l.or(r),
        };
        CreditSnapshot {
            spent,
            allowance,
            remaining,
            reported,
        }
    }

    /// With `reserve` credits kept for high-priority clients: `None` when the remaining
    /// credits are at least the reserve (anyone may spend), else how long until they are
    /// again (at least one second): until enough of the oldest buckets have left the window,
    /// and until the Zoho report that put the tenant under the reserve expires.
    pub fn reserve_hold(&self, allowance: Option<u64>, reserve: u64) -> Option<Duration> {
        let snap = self.snapshot(allowance);
        if snap.remaining.is_none_or(|r| r >= reserve) {
            return None;
        }
        let now = self.clock.now();
        let now_n = self.bucket_of(now);
        let st = self.lock();
        let mut wait = Duration::ZERO;
        if let Some(a) = allowance
            && a.saturating_sub(snap.spent) < reserve
        {
            // Credits that must leave the window before `allowance - spent >= reserve`.
            let mut excess = snap.spent.saturating_sub(a.saturating_sub(reserve));
            let mut live: Vec<(u64, u64)> = Self::live(&st.buckets, now_n).collect();
            live.sort_unstable();
            let mut leaves = None;
            for (n, c) in live {
                excess = excess.saturating_sub(c);
                if excess == 0 {
                    leaves = Some(n + BUCKETS as u64);
                    break;
                }
            }
            // Never freed (a reserve at or above the allowance): one bucket, then ask again.
            let leaves = leaves.unwrap_or(now_n + 1);
            let at = self.origin + BUCKET.saturating_mul(u32::try_from(leaves).unwrap_or(u32::MAX));
            wait = wait.max(at.saturating_duration_since(now));
        }
        if let Some((r, at)) = st.reported
            && r < reserve
        {
            wait = wait.max((at + REPORT_TTL).saturating_duration_since(now));
        }
        Some(wait.max(Duration::from_secs(1)))
    }
}

/// Whether an upstream answer with this status was charged credits (see the module doc).
pub fn charged(status: http::StatusCode) -> bool {
    !matches!(status.as_u16(), 401 | 429)
}

/// Zoho's `X-API-CREDITS-REMAINING`, when present and a plain non-negative integer.
pub fn reported_remaining(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(crate::headers::API_CREDITS_REMAINING)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger() -> (CreditLedger, std::sync::Arc<crate::clock::ManualClock>) {
        let (clock, hand) = Clock::manual();
        (CreditLedger::new(clock), hand)
    }

    #[test]
    fn spent_credits_leave_the_window_after_a_day() {
        let (l, hand) = ledger();
        l.spend(3);
        hand.advance(Duration::from_secs(3600));
        l.spend(2);
        assert_eq!(l.snapshot(Some(100)).spent, 5);
        assert_eq!(l.snapshot(Some(100)).remaining, Some(95));
        // The first spend's bucket leaves the window 24 h after it began.
        hand.advance(Duration::from_secs(23 * 3600 - 1));
        assert_eq!(l.snapshot(None).spent, 5);
        hand.advance(Duration::from_secs(1));
        assert_eq!(l.snapshot(None).spent, 2);
        hand.advance(Duration::from_secs(3600));
        assert_eq!(l.snapshot(None).spent, 0);
    }

    #[test]
    fn slots_are_reused_without_mixing_days() {
        let (l, hand) = ledger();
        l.spend(7);
        // Exactly one window later the same slot serves a new bucket.
        hand.advance(BUCKET * BUCKETS as u32);
        l.spend(1);
        assert_eq!(l.snapshot(None).spent, 1);
    }

    #[test]
    fn remaining_is_the_lower_of_allowance_and_report_while_the_report_is_recent() {
        let (l, hand) = ledger();
        l.spend(10);
        assert_eq!(l.snapshot(None).remaining, None);
        l.report_remaining(50);
        let s = l.snapshot(Some(100));
        assert_eq!((s.remaining, s.reported), (Some(50), Some(50)));
        assert_eq!(l.snapshot(None).remaining, Some(50));
        hand.advance(REPORT_TTL);
        let s = l.snapshot(Some(100));
        assert_eq!((s.remaining, s.reported), (Some(90), None));
    }

    #[test]
    fn the_reserve_holds_until_the_oldest_credits_leave_the_window() {
        let (l, hand) = ledger();
        l.spend(60);
        hand.advance(Duration::from_secs(3600));
        l.spend(30);
        // 100 - 90 = 10 left < 20 reserved: 10 must leave, the first bucket frees 60.
        let wait = l.reserve_hold(Some(100), 20).expect("under the reserve");
        assert_eq!(wait, Duration::from_secs(23 * 3600));
        assert_eq!(l.reserve_hold(Some(100), 10), None);
        assert_eq!(l.reserve_hold(None, 20), None, "nothing known: no reserve");
        hand.advance(wait);
        assert_eq!(l.reserve_hold(Some(100), 20), None);
    }

    #[test]
    fn a_low_report_holds_until_it_expires() {
        let (l, hand) = ledger();
        l.report_remaining(5);
        assert_eq!(l.reserve_hold(None, 10), Some(REPORT_TTL));
        hand.advance(Duration::from_secs(60));
        assert_eq!(
            l.reserve_hold(Some(1000), 10),
            Some(REPORT_TTL - Duration::from_secs(60))
        );
        hand.advance(REPORT_TTL);
        assert_eq!(l.reserve_hold(Some(1000), 10), None);
    }

    #[test]
    fn charged_statuses_and_the_header() {
        use http::StatusCode as S;
        assert!(charged(S::OK) && charged(S::NO_CONTENT) && charged(S::INTERNAL_SERVER_ERROR));
        assert!(!charged(S::UNAUTHORIZED) && !charged(S::TOO_MANY_REQUESTS));
        let mut h = http::HeaderMap::new();
        assert_eq!(reported_remaining(&h), None);
        h.insert(
            "x-api-credits-remaining",
            http::HeaderValue::from_static(" 42 "),
        );
        assert_eq!(reported_remaining(&h), Some(42));
        h.insert(
            "x-api-credits-remaining",
            http::HeaderValue::from_static("-1"),
        );
        assert_eq!(reported_remaining(&h), None);
    }
}
