//! The admin listener: `/metrics` (Prometheus text), `/healthz` (alive), `/readyz` (ready to
//! serve: not draining, and a token obtained or a cached answer available).

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;

use crate::proxy::{Body, Gateway};
use crate::token::TokenHealth;

/// Handles one admin request.
pub async fn handle<B>(gw: Arc<Gateway>, req: Request<B>) -> Response<Body> {
    match req.uri().path() {
        "/metrics" => {
            let m = gw.metrics();
            m.cache_entries
                .set(i64::try_from(gw.cache().entry_count()).unwrap_or(i64::MAX));
            m.cache_bytes
                .set(i64::try_from(gw.cache().weighted_size()).unwrap_or(i64::MAX));
            text(
                StatusCode::OK,
                m.render(),
                "text/plain; version=0.0.4; charset=utf-8",
            )
        }
        "/healthz" => text(StatusCode::OK, b"ok\n".to_vec(), "text/plain"),
        "/readyz" => {
            let (ready, why) = readiness(&gw);
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(status, format!("{why}\n").into_bytes(), "text/plain")
        }
        _ => text(StatusCode::NOT_FOUND, b"not found\n".to_vec(), "text/plain"),
    }
}

/// Ready when not draining and every tenant has a valid token or the cache can answer.
fn readiness(gw: &Gateway) -> (bool, String) {
    if gw.is_draining() {
        return (false, "draining".into());
    }
    let cache_has_entries = gw.cache().entry_count() > 0;
    let mut lines = Vec::new();
    let mut ready = true;
    for t in gw.tenants() {
        let health = t.tokens.health();
        let state = match health {
            TokenHealth::Valid => "token valid".to_owned(),
            TokenHealth::Missing => "no token yet".to_owned(),
            TokenHealth::Failing(why) => format!("token failing: {}", why.as_str()),
        };
        if health != TokenHealth::Valid && !cache_has_entries {
            ready = false;
        }
        lines.push(format!("tenant {}: {state}", t.config.name));
    }
    if ready {
        lines.insert(0, "ready".into());
    }
    (ready, lines.join("\n"))
}

fn text(status: StatusCode, body: Vec<u8>, content_type: &'static str) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}
