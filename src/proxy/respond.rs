//! Building client responses (cache hits, flight results, held failures, gateway errors) and
//! recording each request once. Every `Cache-Status` comes from the request's [`CachePhase`].

use super::*;
use crate::cache::{Hold, Outcome, Prepared, STORED_HEADERS};

/// Measures and logs a request exactly once: at the end, or — if the client went away and the
/// request's future was dropped — on drop, with status 499 (client closed request).
pub(super) struct Recorder<'g> {
    pub(super) gw: &'g Gateway,
    pub(super) started: Instant,
    pub(super) method: Method,
    pub(super) ctx: RequestCtx,
    pub(super) done: bool,
}

impl Recorder<'_> {
    pub(super) fn finish(&mut self, status: u16) {
        self.done = true;
        let gw = &self.gw;
        let ctx = &self.ctx;
        let outcome = ctx.phase.outcome(ctx.error);
        let took = self.started.elapsed();
        gw.metrics
            .record_request(&self.method, ctx.route, outcome, status, took);
        match ctx.phase {
            CachePhase::StaleWhileRevalidate => {
                gw.metrics.record_stale_served("stale-while-revalidate");
            }
            CachePhase::StaleIfError => gw.metrics.record_stale_served("stale-if-error"),
            CachePhase::StaleCreditReserve => gw.metrics.record_stale_served("credit-reserve"),
            _ => {}
        }
        match outcome {
            Outcome::Hit | Outcome::Stale => gw.tally.hits.inc(),
            Outcome::Miss | Outcome::Collapsed => gw.tally.misses.inc(),
            _ => {}
        }
        let tenant = ctx.tenant.map(|id| gw.tenant_ref(id));
        if let Some(t) = &tenant {
            t.metrics.record_outcome(outcome, u64::from(ctx.credits));
        }
        tracing::info!(
            target: "zoho_gateway::access",
            request_id = ctx.request_id.to_str().unwrap_or(""),
            method = %self.method,
            route = gw.metrics.route_label(ctx.route),
            status,
            outcome = outcome.as_str(),
            tenant = tenant.as_ref().map_or("", |t| t.config.name.as_str()),
            duration_us = took.as_micros() as u64,
            upstream_us = ctx.upstream_took.map(|d| d.as_micros() as u64),
        );
    }
}

impl Drop for Recorder<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.finish(CLIENT_CLOSED_REQUEST);
        }
    }
}

/// Status recorded for a request whose client went away first (nginx's 499).
pub(super) const CLIENT_CLOSED_REQUEST: u16 = 499;

/// A stored entry served from the cache (fresh, stale-while-revalidate or stale-if-error),
/// with `Age` (RFC 9111 §5.1) and the remaining (or, stale, negative) `ttl`; `304 Not
/// Modified` when the client's `conditions` hold for it.
pub(super) fn cached_response(
    entry: &CachedResponse,
    now: Instant,
    phase: CachePhase,
    conditions: Option<&Conditions>,
) -> Response<Body> {
    cached_response_with(entry, &entry.body, now, phase, conditions)
}

/// [`cached_response`] with `body` standing for the entry's body (the per-thread front's own
/// copy of it).
pub(super) fn cached_response_with(
    entry: &CachedResponse,
    body: &Bytes,
    now: Instant,
    phase: CachePhase,
    conditions: Option<&Conditions>,
) -> Response<Body> {
    // By the entry's own state: a fresh entry served in another phase (a `no-cache` request
    // answered from the cache under the credit reserve) still has time left.
    let ttl = if entry.is_fresh(now) {
        entry.remaining_ttl(now) as i64
    } else {
        -(entry.staleness(now) as i64)
    };
    let cache_status = phase.cache_status(false, Some(ttl), None);
    let mut resp = match conditions {
        Some(c) if not_modified(entry, c) => not_modified_response(entry, cache_status),
        _ => entry_response_with(entry, body, cache_status),
    };
    resp.headers_mut()
        .insert(header::AGE, seconds_value(entry.age(now)));
    resp
}

/// A fresh entry answered from this thread's front of the cache (`prepared`: its slot's
/// response head, built on the slot's first answer). Same response as [`cached_response_with`]
/// in [`CachePhase::Fresh`]; per answer, one clone of the prepared head with the `Cache-Status`
/// and `Age` values of the current second (written once per second and slot) instead of a
/// header map built and every stored header hashed again. The head already holds
/// `Cache-Control` and an `X-Request-Id` placeholder, so [`Gateway::handle`]'s inserts replace
/// values without growing the map.
pub(super) fn front_response(
    entry: &CachedResponse,
    body: &Bytes,
    prepared: &mut Prepared,
    now: Instant,
    conditions: Option<&Conditions>,
) -> Response<Body> {
    if conditions.is_some() || !entry.is_fresh(now) {
        return cached_response_with(entry, body, now, CachePhase::Fresh, conditions);
    }
    let (ttl, age) = (entry.remaining_ttl(now), entry.age(now));
    let (status_value, age_value) = match &prepared.stamp {
        Some((t, a, s, v)) if *t == ttl && *a == age => (s.clone(), v.clone()),
        _ => {
            let s = CachePhase::Fresh.cache_status(false, Some(ttl as i64), None);
            let v = seconds_value(age);
            prepared.stamp = Some((ttl, age, s.clone(), v.clone()));
            (s, v)
        }
    };
    let head = prepared.head.get_or_insert_with(|| {
        // Placeholders first, so a clone finds them in order without hashing.
        let mut head = response_headers(entry.headers.len());
        head.insert(&headers::CACHE_STATUS, HeaderValue::from_static(""));
        head.insert(header::AGE, HeaderValue::from_static(""));
        let full = entry_response_with(entry, body, HeaderValue::from_static(""));
        for (name, value) in full.headers() {
            if name != headers::CACHE_STATUS {
                head.append(name.clone(), value.clone());
            }
        }
        head.entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static(headers::RESPONSE_CACHE_CONTROL));
        head.insert(&headers::REQUEST_ID, HeaderValue::from_static(""));
        head
    });
    let mut h = head.clone();
    let mut values = h.iter_mut();
    match (values.next(), values.next()) {
        (Some((n1, v1)), Some((n2, v2))) if n1 == headers::CACHE_STATUS && n2 == header::AGE => {
            *v1 = status_value;
            *v2 = age_value;
        }
        _ => {
            h.insert(&headers::CACHE_STATUS, status_value);
            h.insert(header::AGE, age_value);
        }
    }
    let mut resp = Response::new(Full::new(body.clone()));
    *resp.status_mut() = entry.status;
    *resp.headers_mut() = h;
    resp
}

/// A whole number of seconds as a header value (`Age`, `Retry-After`), cut from the per-thread
/// header arena.
fn seconds_value(secs: u64) -> HeaderValue {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = secs;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    headers::arena_value(&[&digits[at..]])
}

/// Headers a response built here may carry: the entry's stored ones plus `ETag`,
/// `Last-Modified`, `Cache-Status`, `Age`, `Cache-Control`, `X-Request-Id` (sized once, so
/// the map never grows while the response is built).
fn response_headers(stored: usize) -> HeaderMap {
    HeaderMap::with_capacity(stored + 6)
}

/// An entry's validator for a response: copied into the per-thread header arena rather than
/// shared, so that serving a hot entry does not write to a reference count every worker uses.
fn validator(v: &[u8]) -> HeaderValue {
    headers::arena_value(&[v])
}

/// A flight's answer (`phase`: miss or collapsed); `stored` is said by the leader only; `304
/// Not Modified` when the client's `conditions` hold for it.
pub(super) fn fetched_response(
    f: &Fetched,
    phase: CachePhase,
    now: Instant,
    conditions: Option<&Conditions>,
) -> Response<Body> {
    let status = phase.cache_status(
        f.stored && phase == CachePhase::Miss,
        f.stored.then(|| f.entry.remaining_ttl(now) as i64),
        None,
    );
    match conditions {
        Some(c) if not_modified(&f.entry, c) => not_modified_response(&f.entry, status),
        _ => entry_response(&f.entry, status),
    }
}

/// Whether a `200` entry satisfies the client's conditions (other answers are never `304`).
fn not_modified(entry: &CachedResponse, conditions: &Conditions) -> bool {
    entry.status == StatusCode::OK && conditions.not_modified(&entry.validators)
}

/// `304 Not Modified` for `entry` (RFC 9110 §15.4.5): no body; its validators and
/// `Cache-Status`.
fn not_modified_response(entry: &CachedResponse, cache_status: HeaderValue) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::NOT_MODIFIED;
    *resp.headers_mut() = response_headers(0);
    let h = resp.headers_mut();
    h.insert(header::ETAG, validator(entry.validators.etag()));
    h.insert(
        header::LAST_MODIFIED,
        validator(entry.validators.last_modified()),
    );
    h.insert(&headers::CACHE_STATUS, cache_status);
    resp
}

/// The held failure of a key on hold, with `Retry-After` = the hold's remaining time.
pub(super) fn held_response(hold: &Hold, now: Instant) -> Response<Body> {
    let mut resp = match &hold.answer {
        Ok(entry) => entry_response(entry, CachePhase::Held.cache_status(false, None, None)),
        Err(e) => error_response(e, CachePhase::Held),
    };
    let retry_after = hold.until.saturating_duration_since(now).as_secs().max(1);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    resp
}

/// A response replaying `entry` with the given `Cache-Status`.
pub(super) fn entry_response(entry: &CachedResponse, cache_status: HeaderValue) -> Response<Body> {
    entry_response_with(entry, &entry.body, cache_status)
}

/// [`entry_response`] with `body` standing for the entry's body.
fn entry_response_with(
    entry: &CachedResponse,
    body: &Bytes,
    cache_status: HeaderValue,
) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.clone()));
    *resp.status_mut() = entry.status;
    *resp.headers_mut() = response_headers(entry.headers.len());
    let h = resp.headers_mut();
    // Stored values are interned when common (`Content-Type`), so cloning them is free.
    for (name, value) in entry.headers.iter() {
        h.append(name.clone(), value);
    }
    if entry.status == StatusCode::OK {
        h.insert(header::ETAG, validator(entry.validators.etag()));
        h.insert(
            header::LAST_MODIFIED,
            validator(entry.validators.last_modified()),
        );
    }
    h.insert(&headers::CACHE_STATUS, cache_status);
    resp
}

/// An upstream answer relayed without the cache (bypass): the replayable headers only.
pub(super) fn forwarded_response(resp: UpstreamResponse, phase: CachePhase) -> Response<Body> {
    let mut out = Response::new(Full::new(resp.body));
    *out.status_mut() = resp.status;
    let h = out.headers_mut();
    for name in STORED_HEADERS {
        if let Some(v) = resp.headers.get(name) {
            h.insert(name.clone(), v.clone());
        }
    }
    h.insert(
        &headers::CACHE_STATUS,
        phase.cache_status(false, None, None),
    );
    out
}

/// The Zoho-shaped response for a gateway error, in the request's `phase`.
pub(super) fn error_response(err: &GatewayError, phase: CachePhase) -> Response<Body> {
    let mut resp = Response::new(Full::new(err.body()));
    *resp.status_mut() = err.status();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=utf-8"),
    );
    h.insert(GATEWAY_ERROR_HEADER, err.header_value());
    h.insert(
        &headers::CACHE_STATUS,
        phase.cache_status(false, None, Some(err.kind())),
    );
    if let GatewayError::MethodNotAllowed { allow } = err {
        h.insert(header::ALLOW, allow.clone());
    }
    if let Some(secs) = err.retry_after_secs() {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}
