//! Building client responses (cache hits, flight results, held failures, gateway errors) and
//! recording each request once. Every `Cache-Status` comes from the request's [`CachePhase`].

use super::*;
use crate::cache::{Hold, Outcome, STORED_HEADERS};

/// Measures and logs a request exactly once: at the end, or — if the client went away and the
/// request's future was dropped — on drop, with status 499 (client closed request).
pub(super) struct Recorder {
    pub(super) gw: Arc<Gateway>,
    pub(super) started: Instant,
    pub(super) method: Method,
    pub(super) ctx: RequestCtx,
    pub(super) done: bool,
}

impl Recorder {
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
        let tenant = ctx.tenant.map(|id| gw.tenant(id));
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

impl Drop for Recorder {
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
        _ => entry_response(entry, cache_status),
    };
    resp.headers_mut()
        .insert(header::AGE, HeaderValue::from(entry.age(now)));
    resp
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
    let h = resp.headers_mut();
    h.insert(header::ETAG, entry.validators.etag.clone());
    h.insert(
        header::LAST_MODIFIED,
        entry.validators.last_modified.clone(),
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
    let mut resp = Response::new(Full::new(entry.body.clone()));
    *resp.status_mut() = entry.status;
    let h = resp.headers_mut();
    for (name, value) in &entry.headers {
        h.append(name.clone(), value.clone());
    }
    if entry.status == StatusCode::OK {
        h.insert(header::ETAG, entry.validators.etag.clone());
        h.insert(
            header::LAST_MODIFIED,
            entry.validators.last_modified.clone(),
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
    if matches!(err, GatewayError::MethodNotAllowed) {
        h.insert(header::ALLOW, HeaderValue::from_static("GET"));
    }
    if let Some(secs) = err.retry_after_secs() {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}
