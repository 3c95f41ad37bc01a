//! Building client responses (cache hits, flight results, gateway errors) and recording each
//! request once.

use super::*;

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
        let took = self.started.elapsed();
        gw.metrics
            .record_request(&self.method, ctx.route, ctx.outcome, status, took);
        match ctx.outcome {
            Outcome::Hit | Outcome::Stale => gw.tally.hits.fetch_add(1, Ordering::Relaxed),
            Outcome::Miss | Outcome::Collapsed => gw.tally.misses.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        let tenant = ctx.tenant.map(|i| &gw.tenants[i]);
        if let Some(t) = tenant {
            t.metrics.record_outcome(ctx.outcome);
        }
        tracing::info!(
            target: "zoho_gateway::access",
            request_id = ctx.request_id.to_str().unwrap_or(""),
            method = %self.method,
            route = ctx.route.as_str(),
            status,
            outcome = ctx.outcome.as_str(),
            tenant = tenant.map_or("", |t| t.config.name.as_str()),
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

/// A response from a stored entry served from cache (`hit` or `stale`), with `Age`.
pub(super) fn hit_response(
    entry: &CachedResponse,
    now: Instant,
    outcome: Outcome,
    detail: Option<&str>,
) -> Response<Body> {
    let ttl = match outcome {
        Outcome::Stale => -(entry.staleness(now) as i64),
        _ => entry.remaining_ttl(now) as i64,
    };
    let mut resp = entry_response(
        entry,
        CacheStatus {
            outcome,
            stored: false,
            ttl: Some(ttl),
            detail,
        },
    );
    resp.headers_mut()
        .insert(header::AGE, HeaderValue::from(entry.age(now)));
    resp
}

/// A response from a flight's result.
pub(super) fn fetched_response(
    f: &Fetched,
    outcome: Outcome,
    detail: Option<&str>,
    now: Instant,
) -> Response<Body> {
    entry_response(
        &f.entry,
        CacheStatus {
            outcome,
            stored: f.stored && outcome == Outcome::Miss,
            ttl: f.stored.then(|| f.entry.remaining_ttl(now) as i64),
            detail,
        },
    )
}

pub(super) fn entry_response(entry: &CachedResponse, status: CacheStatus<'_>) -> Response<Body> {
    let mut resp = Response::new(Full::new(entry.body.clone()));
    *resp.status_mut() = entry.status;
    let h = resp.headers_mut();
    for (name, value) in &entry.headers {
        h.append(name.clone(), value.clone());
    }
    h.insert(&headers::CACHE_STATUS, status.value());
    resp
}

/// The Zoho-shaped response for a gateway error.
pub(super) fn error_response(err: &GatewayError, outcome: Outcome) -> Response<Body> {
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
        CacheStatus {
            outcome,
            stored: false,
            ttl: None,
            detail: Some(err.kind()),
        }
        .value(),
    );
    if matches!(err, GatewayError::MethodNotAllowed) {
        h.insert(header::ALLOW, HeaderValue::from_static("GET"));
    }
    if let Some(secs) = err.retry_after_secs() {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}
