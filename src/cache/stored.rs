//! The compact forms in which a [`CachedResponse`](super::CachedResponse) keeps its times and
//! headers (issue 14: memory per cached entry). Every entry carries these, so a byte here is a
//! byte per entry; an allocation here is at least 32 bytes per entry (the allocator's header and
//! rounding). The entry's own struct is guarded in size by a test in the parent module.
//!
//! - [`CompactDuration`]: a duration in 4 bytes instead of 16, rounded down.
//! - [`StoredLifetimes`]: the three lifetimes of an entry in 12 bytes instead of 48.
//! - [`Inserted`]: when the entry entered this replica's cache, in 4 bytes instead of a 24-byte
//!   `OnceLock<Instant>`.
//! - [`StoredHeaders`]: the replayable headers; Zoho's usual values are indices into a static
//!   table (no allocation), any other value is boxed, which is rare.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::time::Instant;

use super::{Lifetimes, STORED_HEADERS};

/// Top bit of a [`CompactDuration`]: the rest counts seconds, not milliseconds.
const IN_SECONDS: u32 = 1 << 31;

/// A duration in 32 bits: whole milliseconds below 2³¹ ms (about 24.8 days), whole seconds
/// from there up to 2³¹ − 1 s (68 years; longer saturates). Configured durations are at most a
/// year ([`crate::config::MAX_DURATION`]). Always rounded **down**, so a lifetime kept in this
/// form never ends later than the one it was made from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactDuration(u32);

impl From<Duration> for CompactDuration {
    fn from(d: Duration) -> Self {
        match u32::try_from(d.as_millis()) {
            Ok(ms) if ms < IN_SECONDS => CompactDuration(ms),
            _ => CompactDuration(
                IN_SECONDS
                    | u32::try_from(d.as_secs()).map_or(IN_SECONDS - 1, |s| s.min(IN_SECONDS - 1)),
            ),
        }
    }
}

impl CompactDuration {
    /// The duration it stands for.
    pub fn get(self) -> Duration {
        if self.0 & IN_SECONDS == 0 {
            Duration::from_millis(u64::from(self.0))
        } else {
            Duration::from_secs(u64::from(self.0 & !IN_SECONDS))
        }
    }
}

/// [`Lifetimes`] as an entry keeps them: each a [`CompactDuration`] (rounded down to the
/// millisecond, so never longer than configured).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoredLifetimes {
    ttl: CompactDuration,
    stale_while_revalidate: CompactDuration,
    stale_if_error: CompactDuration,
}

impl From<Lifetimes> for StoredLifetimes {
    fn from(l: Lifetimes) -> Self {
        StoredLifetimes {
            ttl: l.ttl.into(),
            stale_while_revalidate: l.stale_while_revalidate.into(),
            stale_if_error: l.stale_if_error.into(),
        }
    }
}

impl StoredLifetimes {
    /// Freshness lifetime from `stored_at`.
    pub fn ttl(&self) -> Duration {
        self.ttl.get()
    }

    /// How long after expiry the entry may be served while a background refresh runs.
    pub fn stale_while_revalidate(&self) -> Duration {
        self.stale_while_revalidate.get()
    }

    /// How long after expiry the entry may be served when the refresh fails.
    pub fn stale_if_error(&self) -> Duration {
        self.stale_if_error.get()
    }

    /// All three as [`Lifetimes`].
    pub fn get(&self) -> Lifetimes {
        Lifetimes {
            ttl: self.ttl(),
            stale_while_revalidate: self.stale_while_revalidate(),
            stale_if_error: self.stale_if_error(),
        }
    }
}

/// When an entry entered this replica's cache, set once: a [`CompactDuration`] after the
/// entry's `stored_at` (rounded down: an `l1_ttl` counted from it ends no later than it
/// should), plus one; 0 until set.
#[derive(Debug, Default)]
pub struct Inserted(AtomicU32);

impl Inserted {
    /// Records `now` unless an instant was recorded already.
    pub fn set_once(&self, stored_at: Instant, now: Instant) {
        let after = CompactDuration::from(now.saturating_duration_since(stored_at));
        let _ = self.0.compare_exchange(
            0,
            after.0.saturating_add(1),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// The recorded instant, `None` before [`Inserted::set_once`].
    pub fn get(&self, stored_at: Instant) -> Option<Instant> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            v => Some(stored_at + CompactDuration(v - 1).get()),
        }
    }
}

/// Stored header values kept as statics: Zoho's JSON content types.
static INTERNED: [HeaderValue; 5] = [
    HeaderValue::from_static("application/json;charset=utf-8"),
    HeaderValue::from_static("application/json; charset=utf-8"),
    HeaderValue::from_static("application/json;charset=UTF-8"),
    HeaderValue::from_static("application/json; charset=UTF-8"),
    HeaderValue::from_static("application/json"),
];

/// Number of [`STORED_HEADERS`].
const N: usize = STORED_HEADERS.len();

/// The replayable headers of an entry ([`STORED_HEADERS`], at most one value each, the first
/// the upstream sent). A value equal to one of Zoho's usual ones is kept as an index into a
/// static table: no buffer per entry, and replaying it writes to no reference count. Any
/// other value is copied into a buffer of its own (hyper hands out values as slices of its
/// read buffer, which an entry must not pin) and all such values live in one box, absent in
/// the common case. 16 bytes in the entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredHeaders {
    /// Per stored name: 0 when not interned (absent, or in `other`), else 1 + its index in
    /// [`INTERNED`].
    interned: [u8; N],
    /// Values not interned, per stored name.
    other: Option<Box<[Option<HeaderValue>; N]>>,
}

impl StoredHeaders {
    /// The stored headers among `headers` (the first value of each).
    pub fn from_map(headers: &HeaderMap) -> Self {
        Self::collect(|name| headers.get(name))
    }

    /// The stored headers among `pairs` (the first value of each).
    pub fn from_pairs(pairs: &[(HeaderName, HeaderValue)]) -> Self {
        Self::collect(|name| pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v))
    }

    fn collect<'a>(get: impl Fn(&HeaderName) -> Option<&'a HeaderValue>) -> Self {
        let mut stored = StoredHeaders::default();
        for (i, name) in STORED_HEADERS.iter().enumerate() {
            let Some(v) = get(name) else { continue };
            match INTERNED.iter().position(|s| s.as_bytes() == v.as_bytes()) {
                Some(at) => stored.interned[i] = at as u8 + 1,
                None => {
                    // `from_bytes` copies (`clone` would share hyper's read buffer).
                    let owned = HeaderValue::from_bytes(v.as_bytes()).unwrap_or_else(|_| v.clone());
                    stored.other.get_or_insert_with(Default::default)[i] = Some(owned);
                }
            }
        }
        stored
    }

    /// The headers to replay, in [`STORED_HEADERS`] order; values are clones (free for
    /// interned ones).
    pub fn iter(&self) -> impl Iterator<Item = (&'static HeaderName, HeaderValue)> + '_ {
        STORED_HEADERS.iter().enumerate().filter_map(|(i, name)| {
            let value = match self.interned[i] {
                0 => self.other.as_ref()?[i].clone()?,
                at => INTERNED[usize::from(at - 1)].clone(),
            };
            Some((name, value))
        })
    }

    /// How many headers are stored.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether no header is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The headers as (name, value) pairs.
    pub fn to_vec(&self) -> Vec<(HeaderName, HeaderValue)> {
        self.iter().map(|(n, v)| (n.clone(), v)).collect()
    }

    /// Bytes they cost beyond the entry's own struct: the names and values (an upper bound for
    /// interned ones, which cost nothing), and for values not interned their box and one
    /// allocation's overhead each (header and rounding, 32 bytes).
    pub fn weight(&self) -> usize {
        let text: usize = self.iter().map(|(n, v)| n.as_str().len() + v.len()).sum();
        let boxed = self.other.as_ref().map_or(0, |other| {
            let values = other.iter().flatten().count();
            std::mem::size_of::<[Option<HeaderValue>; N]>() + 32 * (1 + values)
        });
        text + boxed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    #[test]
    fn compact_durations_round_down_and_cover_a_year() {
        for (d, back) in [
            (Duration::ZERO, Duration::ZERO),
            (Duration::from_millis(1500), Duration::from_millis(1500)),
            (Duration::from_micros(2_999), Duration::from_millis(2)),
            (
                Duration::from_millis(u64::from(IN_SECONDS) - 1),
                Duration::from_millis(u64::from(IN_SECONDS) - 1),
            ),
            (
                // 2 147 485.647 s: whole seconds from here.
                Duration::from_millis(u64::from(IN_SECONDS) + 1_999),
                Duration::from_secs(2_147_485),
            ),
            (crate::config::MAX_DURATION, crate::config::MAX_DURATION),
            (
                Duration::MAX,
                Duration::from_secs(u64::from(IN_SECONDS) - 1),
            ),
        ] {
            assert_eq!(CompactDuration::from(d).get(), back, "{d:?}");
            assert!(back <= d);
        }
    }

    #[test]
    fn inserted_is_set_once_and_never_later() {
        let stored_at = Instant::now();
        let i = Inserted::default();
        assert_eq!(i.get(stored_at), None);
        let at = stored_at + Duration::from_micros(5_500);
        i.set_once(stored_at, at);
        i.set_once(stored_at, at + Duration::from_secs(9));
        assert_eq!(i.get(stored_at), Some(stored_at + Duration::from_millis(5)));
        // Before `stored_at` (cannot happen): counted as `stored_at`, still set.
        let j = Inserted::default();
        j.set_once(stored_at + Duration::from_secs(1), stored_at);
        assert_eq!(j.get(stored_at), Some(stored_at));
    }

    #[test]
    fn headers_intern_usual_values_and_copy_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::SET_COOKIE, HeaderValue::from_static("a=b"));
        let s = StoredHeaders::from_map(&h);
        assert!(s.other.is_none(), "no box for an interned value");
        assert_eq!(
            s.to_vec(),
            [(header::CONTENT_TYPE, h[header::CONTENT_TYPE].clone())]
        );
        h.insert(header::CONTENT_LANGUAGE, HeaderValue::from_static("de"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let s = StoredHeaders::from_map(&h);
        let pairs = s.to_vec();
        assert_eq!(
            pairs,
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("text/plain")),
                (header::CONTENT_LANGUAGE, HeaderValue::from_static("de")),
            ]
        );
        assert_eq!(StoredHeaders::from_pairs(&pairs), s);
        assert_eq!(s.len(), 2);
        assert!(StoredHeaders::default().is_empty());
    }
}
