//! The admin listener: `/metrics` (Prometheus text; cache sizes and credit gauges sampled at
//! scrape), `/healthz` (alive), `/readyz` (ready to
//! serve: not draining, and at least one tenant that can serve — a usable token, cached answers
//! of it, or a pass-through tenant whose clients bring their own tokens; one failing tenant among
//! several is named in the body but does not take the replica out of rotation, since every
//! replica shares it and the others' tenants would go down with it), and the admin API behind `Authorization: Bearer <admin.token>` (the SHA-256
//! digests of the presented and configured tokens compared in constant time, so neither the
//! token's bytes nor its length leak by timing; several `Authorization` headers are refused):
//!
//! - `GET /admin/cache` → `{"entries":…,"weighted_bytes":…,"capacity_bytes":…,"hits":…,"misses":…,"hit_ratio":…}`
//! - `POST /admin/cache/purge[?tenant=NAME][&route=NAME…]` → drops all entries, or one
//!   tenant's, or those of the routes named (`route` may repeat); answers
//!   `{"purged":{"tenant":…|null,"routes":[…]|null,"entries":N}}`, `entries` being this
//!   replica's cached entries that matched when the purge ran (counted just before moka's
//!   lazy invalidation; holds, L2 and other replicas not counted).
//!
//! Without a configured `admin.token` the admin API answers 403; a wrong or missing token, 401.

use std::sync::Arc;

use bytes::Bytes;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{Secret, TenantId};
use crate::proxy::{Body, Gateway};
use crate::route::RouteId;
use crate::token::TokenHealth;

/// Handles one admin request.
pub async fn handle<B>(gw: Arc<Gateway>, req: Request<B>) -> Response<Body> {
    let path = req.uri().path();
    let probe = matches!(path, "/metrics" | "/healthz" | "/readyz");
    if probe && !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut resp = text(
            StatusCode::METHOD_NOT_ALLOWED,
            b"method not allowed\n".to_vec(),
            "text/plain",
        );
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    match path {
        "/metrics" => {
            // Settle moka's lazy accounting so the size gauges are exact at scrape time.
            gw.cache().run_pending_tasks().await;
            let m = gw.metrics();
            m.cache_entries
                .set(i64::try_from(gw.cache().entry_count()).unwrap_or(i64::MAX));
            m.cache_bytes
                .set(i64::try_from(gw.cache().weighted_size()).unwrap_or(i64::MAX));
            // The credit window slides with time: sample it now.
            for t in gw.tenants() {
                let snap = t.credits.snapshot(t.config.credit_allowance);
                m.set_credits(&t.config.name, snap, t.config.credit_reserve);
            }
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
        path if path.starts_with("/admin/") => admin_api(&gw, &req).await,
        _ => text(StatusCode::NOT_FOUND, b"not found\n".to_vec(), "text/plain"),
    }
}

async fn admin_api<B>(gw: &Gateway, req: &Request<B>) -> Response<Body> {
    let cfg = gw.config();
    let Some(expected) = cfg.admin_token.as_ref() else {
        return json(
            StatusCode::FORBIDDEN,
            json!({"error": "admin API disabled: set admin.token"}),
        );
    };
    let mut authorizations = req.headers().get_all(header::AUTHORIZATION).iter();
    let first = authorizations.next();
    if authorizations.next().is_some() {
        // Which one would count is ambiguous (proxies differ): refuse, as the proxy listener does.
        return json(
            StatusCode::BAD_REQUEST,
            json!({"error": "several Authorization headers"}),
        );
    }
    let presented = first
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then_some(token.trim())
        })
        .unwrap_or("");
    if !token_matches(presented, expected) {
        return json(
            StatusCode::UNAUTHORIZED,
            json!({"error": "missing or wrong admin token"}),
        );
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/admin/cache") => {
            gw.cache().run_pending_tasks().await;
            let hits = gw.tally().hits.get();
            let misses = gw.tally().misses.get();
            let ratio = if hits + misses == 0 {
                0.0
            } else {
                hits as f64 / (hits + misses) as f64
            };
            json(
                StatusCode::OK,
                json!({
                    "entries": gw.cache().entry_count(),
                    "weighted_bytes": gw.cache().weighted_size(),
                    "capacity_bytes": gw.config().cache_max_bytes,
                    "hits": hits,
                    "misses": misses,
                    "hit_ratio": ratio,
                }),
            )
        }
        (&Method::POST, "/admin/cache/purge") => {
            let cfg = gw.config();
            let mut tenant = None;
            let mut routes: Vec<(RouteId, String)> = Vec::new();
            for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
                match &*k {
                    "tenant" => match gw.tenant_named(&v) {
                        Some(t) => tenant = Some(t.id),
                        None => {
                            return json(
                                StatusCode::BAD_REQUEST,
                                json!({"error": "unknown tenant"}),
                            );
                        }
                    },
                    // Repeated `route=` purges each of them (duplicates once).
                    "route" => match cfg.route_names().find(|(_, name)| *name == v) {
                        Some((id, _)) if routes.iter().any(|(r, _)| *r == id) => {}
                        Some((id, name)) => routes.push((id, name.to_owned())),
                        None => {
                            let names: Vec<&str> = cfg.route_names().map(|(_, n)| n).collect();
                            return json(
                                StatusCode::BAD_REQUEST,
                                json!({"error": "unknown route", "routes": names}),
                            );
                        }
                    },
                    _ => {
                        return json(
                            StatusCode::BAD_REQUEST,
                            json!({"error": "parameters: tenant=NAME, route=NAME"}),
                        );
                    }
                }
            }
            // Here, and with a fleet tier on every replica and in L2.
            let ids: Vec<RouteId> = routes.iter().map(|(id, _)| *id).collect();
            let entries = gw
                .purge_everywhere(tenant, (!ids.is_empty()).then_some(&ids[..]))
                .await;
            let name = tenant.map(|id| gw.tenant(id).config.name.clone());
            let routes: Option<Vec<String>> =
                (!routes.is_empty()).then(|| routes.into_iter().map(|(_, n)| n).collect());
            tracing::info!(tenant = ?name, routes = ?routes, entries, "cache purged by admin");
            json(
                StatusCode::OK,
                json!({"purged": {"tenant": name, "routes": routes, "entries": entries}}),
            )
        }
        _ => json(StatusCode::NOT_FOUND, json!({"error": "not found"})),
    }
}

/// Compares SHA-256 digests in constant time: fixed-length inputs, so the comparison's time
/// depends neither on where the first difference is nor on the presented token's length.
fn token_matches(presented: &str, expected: &Secret) -> bool {
    let presented = Sha256::digest(presented.as_bytes());
    let expected = Sha256::digest(expected.expose().as_bytes());
    presented.ct_eq(&expected).into()
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    text(status, value.to_string().into_bytes(), "application/json")
}

/// Ready when not draining and at least one tenant can serve: it holds a usable token, or the
/// cache holds answers of it (hits and stale answers need no token), or it is a pass-through
/// tenant (its clients bring their own tokens). One failing tenant among several is named in the
/// body but does not make the replica unready: every replica shares it, and the other tenants
/// would go down with it (alert on the token metrics instead). With a fleet tier, a last line
/// says whether Redis is available (it never makes the replica unready); answers in L2 only are
/// not counted.
fn readiness(gw: &Gateway) -> (bool, String) {
    if gw.is_draining() {
        return (false, "draining".into());
    }
    let tenants = gw.tenants();
    let health: Vec<Option<TokenHealth>> = tenants
        .iter()
        .map(|t| {
            t.config
                .pass_through_hmac
                .is_none()
                .then(|| t.tokens.health())
        })
        .collect();
    // Only tenants without a usable token need the (probe-only) scan of the cache.
    let without_token: Vec<TenantId> = tenants
        .iter()
        .zip(&health)
        .filter(|(_, h)| matches!(h, Some(TokenHealth::Missing | TokenHealth::Failing { .. })))
        .map(|(t, _)| t.id)
        .collect();
    let cached = gw.cache().tenants_with_entries(&without_token);
    let mut lines = Vec::new();
    let mut serving = 0usize;
    for (t, health) in tenants.iter().zip(health) {
        let has_cache = cached.contains(&t.id);
        let (can_serve, state) = match health {
            None => (true, "pass-through (clients' own tokens)".to_owned()),
            Some(TokenHealth::Valid) => (true, "token valid".to_owned()),
            Some(TokenHealth::Missing) => (has_cache, "no token yet".to_owned()),
            Some(TokenHealth::Failing {
                reason,
                retry_after,
            }) => (
                has_cache,
                format!(
                    "token failing: {}; cannot get a token, next attempt in {} s",
                    reason.as_str(),
                    retry_after.as_secs().max(1)
                ),
            ),
        };
        serving += usize::from(can_serve);
        let cache_note = if has_cache {
            "; serving cached answers"
        } else {
            ""
        };
        lines.push(format!("tenant {}: {state}{cache_note}", t.config.name));
    }
    let ready = serving > 0;
    // Redis never makes a replica unready: it falls back to single-node behaviour.
    if let Some(fleet) = gw.fleet() {
        lines.push(fleet.readiness_detail().to_owned());
    }
    lines.insert(
        0,
        if ready {
            "ready"
        } else {
            "not ready: no tenant can serve"
        }
        .into(),
    );
    (ready, lines.join("\n"))
}

fn text(status: StatusCode, body: Vec<u8>, content_type: &'static str) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_token_must_match_exactly() {
        let expected = Secret::new("admin-token-0123456789");
        assert!(token_matches("admin-token-0123456789", &expected));
        for wrong in ["", "admin-token-012345678", "admin-token-0123456789x", "x"] {
            assert!(!token_matches(wrong, &expected), "{wrong:?}");
        }
    }
}
