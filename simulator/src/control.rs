//! The control surface under `/__simulator/` (not counted as API calls):
//! the HTTP twin of [`SimHandle`].
//!
//! | request | effect | answer |
//! |---|---|---|
//! | `GET /__simulator/stats` | — | 200 [`super::SimStats`] as JSON |
//! | `POST /__simulator/reset` | [`SimHandle::reset_counters`] | 200 `{"status":"ok"}` |
//! | `POST /__simulator/faults` | body below | 200 `{"status":"ok"}` |
//! | `POST /__simulator/revoke` | [`SimHandle::revoke_access_tokens`]; with body `{"refresh_token":".."}` [`SimHandle::revoke_refresh_token`] instead | 200 `{"status":"ok"}`; 404 for an unknown or already revoked refresh token |
//!
//! Faults body (every key optional): `{"latency_ms":250,
//! "fail_next":{"count":2,"status":500,"retry_after":5}, "reset_next":1,
//! "hang_next":1, "token_endpoint_down":true, "clear":true}`; `clear` runs
//! [`SimHandle::clear_faults`] first. Unknown keys or bad JSON → 400
//! `{"error":"<reason>"}`; unknown path → 404; wrong method → 405.

use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::handle::SimHandle;
use super::response::{SimResponse, plain_json};
use super::server::read_body;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultsBody {
    #[serde(default)]
    clear: bool,
    latency_ms: Option<u64>,
    fail_next: Option<FailNext>,
    reset_next: Option<u32>,
    hang_next: Option<u32>,
    token_endpoint_down: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailNext {
    count: u32,
    status: u16,
    retry_after: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    refresh_token: String,
}

fn ok() -> SimResponse {
    plain_json(StatusCode::OK, &json!({"status": "ok"}))
}

fn error(status: StatusCode, reason: &str) -> SimResponse {
    plain_json(status, &json!({ "error": reason }))
}

/// Serves one control request; `rest` is the path after `/__simulator/`.
pub(crate) async fn handle(handle: SimHandle, rest: &str, req: Request<Incoming>) -> SimResponse {
    let method = req.method().clone();
    match (rest, method) {
        ("stats", Method::GET) => plain_json(
            StatusCode::OK,
            &serde_json::to_value(handle.stats()).expect("stats serialize"),
        ),
        ("reset", Method::POST) => {
            handle.reset_counters();
            ok()
        }
        ("revoke", Method::POST) => {
            let limit = handle.state.config.max_body_bytes;
            let Ok(body) = read_body(req.into_body(), limit).await else {
                return error(StatusCode::BAD_REQUEST, "unreadable body");
            };
            if body.iter().all(u8::is_ascii_whitespace) {
                handle.revoke_access_tokens();
                return ok();
            }
            match serde_json::from_slice::<RevokeBody>(&body) {
                Ok(r) if handle.revoke_refresh_token(&r.refresh_token) => ok(),
                Ok(_) => error(StatusCode::NOT_FOUND, "unknown or revoked refresh token"),
                Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
            }
        }
        ("faults", Method::POST) => {
            let limit = handle.state.config.max_body_bytes;
            let Ok(body) = read_body(req.into_body(), limit).await else {
                return error(StatusCode::BAD_REQUEST, "unreadable body");
            };
            match serde_json::from_slice::<FaultsBody>(&body) {
                Ok(f) => {
                    apply(&handle, f);
                    ok()
                }
                Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
            }
        }
        ("stats" | "reset" | "revoke" | "faults", _) => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => error(StatusCode::NOT_FOUND, "unknown control path"),
    }
}

fn apply(handle: &SimHandle, f: FaultsBody) {
    if f.clear {
        handle.clear_faults();
    }
    if let Some(ms) = f.latency_ms {
        handle.set_latency(Duration::from_millis(ms));
    }
    if let Some(fail) = f.fail_next {
        match fail.retry_after {
            Some(secs) => handle.fail_next_with_retry_after(fail.count, fail.status, secs),
            None => handle.fail_next(fail.count, fail.status),
        }
    }
    if let Some(n) = f.reset_next {
        handle.reset_next(n);
    }
    if let Some(n) = f.hang_next {
        handle.hang_next(n);
    }
    if let Some(down) = f.token_endpoint_down {
        handle.set_token_endpoint_down(down);
    }
}
