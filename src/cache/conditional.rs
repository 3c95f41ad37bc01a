//! Validators of stored answers and the client's conditional requests (RFC 9110 §13).
//!
//! - Every stored answer carries an `ETag` and a `Last-Modified` ([`Validators`]): Zoho's own
//!   when it sends them (kept and replayed as received), otherwise derived by the gateway: a
//!   strong `ETag` from the body's SHA-256 (same body, same tag, on every replica) and a
//!   `Last-Modified` of when the answer was received (wall clock, whole seconds).
//! - A client's `If-None-Match` or `If-Modified-Since` ([`Conditions`]) against an entry the
//!   gateway serves is answered `304 Not Modified` by the gateway; conditional headers are never
//!   forwarded (a miss is fetched unconditionally) and never part of the cache key.
//! - `If-None-Match` takes precedence: when present, `If-Modified-Since` is ignored (§13.2.2).
//!   It uses the weak comparison (§8.8.3.2: `W/"x"` matches `"x"`); `*` matches any stored entry.
//! - `If-Modified-Since` takes an HTTP-date (IMF-fixdate, RFC 850 or asctime, §5.6.7) or the
//!   ISO-8601 / RFC 3339 form Zoho's SDKs send (`2026-12-03T08:05:00+00:00`, any offset);
//!   anything else, or more than one value, is ignored (§13.1.3). The entry is not modified when
//!   its `Last-Modified` is at or before that instant. Derived `Last-Modified` values have
//!   one-second resolution: an answer replaced within the same second as the client's date is
//!   indistinguishable by date (the `ETag` tells them apart).

use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, header};
use sha2::{Digest, Sha256};

/// An entry's validators, as replayed in `ETag` / `Last-Modified`: both texts in one exact-size
/// buffer (`ETag`'s length as u32 little-endian ‖ `ETag` ‖ `Last-Modified`), 16 bytes in the
/// entry and one allocation. The `Last-Modified` instant is parsed from its text when a client
/// sends `If-Modified-Since` (it parsed when stored, so it parses again).
#[derive(Clone, PartialEq, Eq)]
pub struct Validators {
    text: Box<[u8]>,
}

impl Validators {
    /// Zoho's `ETag` and `Last-Modified` from `headers` when present and well-formed, else a
    /// strong `ETag` from `body`'s SHA-256 (first 16 bytes, hex) and `received` (whole seconds).
    pub fn new(headers: &HeaderMap, body: &[u8], received: SystemTime) -> Self {
        let mut derived_tag = [0u8; 34];
        let etag = match headers
            .get(header::ETAG)
            .filter(|v| parse_tag(v.as_bytes()).is_some())
        {
            Some(v) => v.as_bytes(),
            None => {
                let digest = Sha256::digest(body);
                derived_tag[0] = b'"';
                derived_tag[33] = b'"';
                // 16 bytes are 32 hex digits: cannot fail.
                let _ = hex::encode_to_slice(&digest[..16], &mut derived_tag[1..33]);
                &derived_tag[..]
            }
        };
        let zoho = headers.get(header::LAST_MODIFIED).filter(|v| {
            v.to_str()
                .is_ok_and(|s| httpdate::parse_http_date(s).is_ok())
        });
        let derived_date;
        let last_modified = match zoho {
            Some(v) => v.as_bytes(),
            None => {
                derived_date = httpdate::fmt_http_date(received);
                derived_date.as_bytes()
            }
        };
        let etag_len = u32::try_from(etag.len()).unwrap_or(u32::MAX);
        let etag = &etag[..etag_len as usize];
        let mut text = Vec::with_capacity(4 + etag.len() + last_modified.len());
        text.extend_from_slice(&etag_len.to_le_bytes());
        text.extend_from_slice(etag);
        text.extend_from_slice(last_modified);
        Validators {
            text: text.into_boxed_slice(),
        }
    }

    /// The `ETag` value: the entity-tag, with quotes (and `W/` when Zoho sent a weak one).
    pub fn etag(&self) -> &[u8] {
        let (len, rest) = self.split();
        &rest[..len]
    }

    /// The `Last-Modified` value: an HTTP-date.
    pub fn last_modified(&self) -> &[u8] {
        let (len, rest) = self.split();
        &rest[len..]
    }

    fn split(&self) -> (usize, &[u8]) {
        let (len, rest) = self.text.split_at(4);
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        (len.min(rest.len()), rest)
    }

    /// `Last-Modified` as seconds since the Unix epoch.
    fn modified_at(&self) -> Option<i64> {
        let text = std::str::from_utf8(self.last_modified()).ok()?;
        httpdate::parse_http_date(text).ok().map(unix_seconds)
    }

    /// Bytes they cost in an entry beyond its struct: their buffer and one allocation's
    /// overhead (header and rounding, at most 24 bytes).
    pub fn weight(&self) -> usize {
        self.text.len() + 24
    }
}

impl std::fmt::Debug for Validators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validators")
            .field("etag", &String::from_utf8_lossy(self.etag()))
            .field(
                "last_modified",
                &String::from_utf8_lossy(self.last_modified()),
            )
            .finish()
    }
}

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// The opaque part of an entity-tag (`W/"x"` or `"x"` → `x`), or `None` if malformed
/// (RFC 9110 §8.8.3: `etagc` is `!` or `#`–`~` or obs-text).
fn parse_tag(tag: &[u8]) -> Option<&[u8]> {
    let tag = tag.strip_prefix(b"W/").unwrap_or(tag);
    let inner = tag.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    inner
        .iter()
        .all(|&b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80)
        .then_some(inner)
}

/// A client's preconditions on a cached `GET`, read from its request headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Conditions {
    /// `If-None-Match`: `*` (`None`), or the listed entity-tags' opaque parts.
    IfNoneMatch(Option<Vec<Vec<u8>>>),
    /// `If-Modified-Since`, seconds since the Unix epoch.
    IfModifiedSince(i64),
}

impl Conditions {
    /// The client's conditions, `None` when it sent none that apply (the common case costs two
    /// header lookups). A malformed `If-None-Match` member is skipped; a malformed
    /// `If-Modified-Since` is ignored.
    pub fn from_headers(h: &HeaderMap) -> Option<Self> {
        let mut inm = h.get_all(header::IF_NONE_MATCH).iter().peekable();
        if inm.peek().is_some() {
            let mut tags = Vec::new();
            for v in inm {
                for member in v.as_bytes().split(|&b| b == b',') {
                    let member = member.trim_ascii();
                    if member == b"*" {
                        return Some(Conditions::IfNoneMatch(None));
                    }
                    if let Some(tag) = parse_tag(member) {
                        tags.push(tag.to_vec());
                    }
                }
            }
            return Some(Conditions::IfNoneMatch(Some(tags)));
        }
        let mut ims = h.get_all(header::IF_MODIFIED_SINCE).iter();
        let (value, None) = (ims.next()?, ims.next()) else {
            return None;
        };
        // A date later than now is invalid (RFC 7232 §3.3; RFC 9110 §13.1.3 reads it in the
        // server's clock): ignored, so a client's clock ahead of ours cannot pin its copy.
        parse_date(value.to_str().ok()?.trim())
            .filter(|since| *since <= unix_seconds(SystemTime::now()))
            .map(Conditions::IfModifiedSince)
    }

    /// Whether an entry with `validators` satisfies the client's copy: `304 Not Modified`.
    pub fn not_modified(&self, validators: &Validators) -> bool {
        match self {
            Conditions::IfNoneMatch(None) => true,
            Conditions::IfNoneMatch(Some(tags)) => parse_tag(validators.etag())
                .is_some_and(|ours| tags.iter().any(|t| t.as_slice() == ours)),
            Conditions::IfModifiedSince(since) => {
                validators.modified_at().is_some_and(|at| at <= *since)
            }
        }
    }
}

/// An HTTP-date, or an RFC 3339 / ISO-8601 date-time with offset, as Unix seconds.
fn parse_date(s: &str) -> Option<i64> {
    if let Ok(t) = httpdate::parse_http_date(s) {
        return Some(unix_seconds(t));
    }
    s.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::time::Duration;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    const NOV_2023: u64 = 1_700_000_000; // Tue, 14 Nov 2023 22:13:20 GMT

    fn derived(body: &[u8]) -> Validators {
        Validators::new(
            &HeaderMap::new(),
            body,
            UNIX_EPOCH + Duration::from_millis(NOV_2023 * 1000 + 700),
        )
    }

    #[test]
    fn derived_validators_follow_the_body_and_the_receipt() {
        let v = derived(b"{\"a\":1}");
        assert_eq!(v, derived(b"{\"a\":1}"));
        assert_ne!(v.etag(), derived(b"{\"a\":2}").etag());
        assert_eq!(v.etag().len(), 34, "a strong tag of 32 hex digits");
        assert!(v.etag().starts_with(b"\"") && v.etag().ends_with(b"\""));
        assert_eq!(v.last_modified(), b"Tue, 14 Nov 2023 22:13:20 GMT");
        assert_eq!(v.modified_at(), Some(NOV_2023 as i64));
    }

    #[test]
    fn zoho_validators_are_kept() {
        let h = headers(&[
            ("etag", "W/\"zoho-1\""),
            ("last-modified", "Wed, 15 Nov 2023 00:00:00 GMT"),
        ]);
        let v = Validators::new(&h, b"{}", SystemTime::now());
        assert_eq!(v.etag(), b"W/\"zoho-1\"");
        assert_eq!(v.last_modified(), b"Wed, 15 Nov 2023 00:00:00 GMT");
        // A malformed ETag or Last-Modified from upstream is replaced by a derived one.
        let h = headers(&[("etag", "no-quotes"), ("last-modified", "yesterday")]);
        let v = Validators::new(&h, b"{}", UNIX_EPOCH + Duration::from_secs(NOV_2023));
        assert!(v.etag().starts_with(b"\""));
        assert_eq!(v.last_modified(), b"Tue, 14 Nov 2023 22:13:20 GMT");
    }

    #[test]
    fn if_none_match_uses_weak_comparison_and_star() {
        let v = Validators::new(&headers(&[("etag", "\"x1\"")]), b"", SystemTime::now());
        let check = |pairs: &[(&'static str, &'static str)]| {
            Conditions::from_headers(&headers(pairs)).map(|c| c.not_modified(&v))
        };
        assert_eq!(check(&[("if-none-match", "\"x1\"")]), Some(true));
        assert_eq!(check(&[("if-none-match", "W/\"x1\"")]), Some(true));
        assert_eq!(check(&[("if-none-match", "\"a\", W/\"x1\"")]), Some(true));
        assert_eq!(
            check(&[("if-none-match", "\"a\""), ("if-none-match", "\"x1\"")]),
            Some(true)
        );
        assert_eq!(check(&[("if-none-match", "*")]), Some(true));
        assert_eq!(check(&[("if-none-match", "\"x2\"")]), Some(false));
        assert_eq!(check(&[("if-none-match", "x1")]), Some(false));
        // If-None-Match wins over a matching If-Modified-Since (RFC 9110 §13.2.2).
        assert_eq!(
            check(&[
                ("if-none-match", "\"other\""),
                ("if-modified-since", "Fri, 01 Jan 2100 00:00:00 GMT")
            ]),
            Some(false)
        );
        assert_eq!(check(&[]), None);
    }

    #[test]
    fn a_future_if_modified_since_is_ignored() {
        let h = headers(&[("if-modified-since", "Thu, 01 Jan 2099 00:00:00 GMT")]);
        assert_eq!(Conditions::from_headers(&h), None);
        let h = headers(&[("if-modified-since", "2099-01-01T00:00:00+00:00")]);
        assert_eq!(Conditions::from_headers(&h), None);
    }

    #[test]
    fn if_modified_since_takes_http_dates_and_the_sdk_iso_form() {
        let v = derived(b"{}"); // modified 2023-11-14T22:13:20Z
        let check = |value: &'static str| {
            Conditions::from_headers(&headers(&[("if-modified-since", value)]))
                .map(|c| c.not_modified(&v))
        };
        assert_eq!(check("Tue, 14 Nov 2023 22:13:20 GMT"), Some(true));
        assert_eq!(check("Tue, 14 Nov 2023 22:13:19 GMT"), Some(false));
        assert_eq!(check("Tuesday, 14-Nov-23 22:13:20 GMT"), Some(true));
        assert_eq!(check("Tue Nov 14 22:13:20 2023"), Some(true));
        assert_eq!(check("2023-11-14T22:13:20+00:00"), Some(true));
        assert_eq!(check("2023-11-15T03:43:20+05:30"), Some(true));
        assert_eq!(check("2023-11-15T03:43:19+05:30"), Some(false));
        assert_eq!(check("2023-11-14T22:13:20Z"), Some(true));
        assert_eq!(check("last tuesday"), None);
        let two = headers(&[
            ("if-modified-since", "Tue, 14 Nov 2023 22:13:20 GMT"),
            ("if-modified-since", "Tue, 14 Nov 2023 22:13:20 GMT"),
        ]);
        assert_eq!(Conditions::from_headers(&two), None);
    }
}
