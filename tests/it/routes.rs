//! The generic cached-route path: a route is a policy plus a parameter schema; what the cache
//! did (its phase) decides `Cache-Status` and the metric outcome; waits are bounded; only JSON is
//! stored; holds and invalidation are per tenant.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use zoho_crm_simulator::{SimConfig, SimRoute};
use zoho_gateway::canonical::{ParamKind, ParamSchema, ParamSpec, UnknownParams};
use zoho_gateway::route::{PathTemplate, RoutePolicy};

/// A second cached route, `GET /crm/{version}/settings/user_groups` (paged), built from the
/// count route's policy: only the template, the schema and the name differ.
fn list_route(count: &RoutePolicy) -> RoutePolicy {
    let int = |name: &'static str, default, max| {
        ParamSpec::new(
            name,
            ParamKind::Integer {
                default: Some(default),
                min: 1,
                max,
            },
        )
    };
    RoutePolicy {
        name: "user_groups".to_owned(),
        template: PathTemplate::parse("/crm/{version}/settings/user_groups").unwrap(),
        schema: ParamSchema::new(
            vec![int("page", 1, u32::MAX), int("per_page", 200, 200)],
            UnknownParams::Reject,
        )
        .unwrap(),
        ..count.clone()
    }
}

#[tokio::test]
async fn a_second_cached_route_is_a_policy_and_a_schema() {
    let h = Harness::start_configured(SimConfig::default(), |url| {
        let mut cfg = gateway_config(url, "");
        let list = list_route(&cfg.routes[0]);
        cfg.routes.push(list);
        cfg
    })
    .await;
    let path = "/crm/v7/settings/user_groups";
    let first = h.get(&format!("{path}?per_page=200&page=1")).await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    assert!(first.cache_status().contains("fwd=miss; stored"));
    // Defaults filled in, parameter order irrelevant: one entry.
    for q in ["", "?page=1", "?page=01&per_page=200"] {
        let again = h.get(&format!("{path}{q}")).await;
        assert!(again.cache_status().contains("hit"), "{q}: {again:?}");
        assert_eq!(again.body, first.body);
    }
    assert_eq!(h.sim().calls(SimRoute::ListUserGroups), 1);
    // A different page is a different entry.
    let page2 = h.get(&format!("{path}?page=2&per_page=1")).await;
    assert!(page2.cache_status().contains("fwd=miss"));
    assert_eq!(h.sim().calls(SimRoute::ListUserGroups), 2);
    // The schema's rules: out of range and unknown parameters are answered locally.
    for bad in ["?per_page=201", "?page=0", "?sort=name"] {
        let r = h.get(&format!("{path}{bad}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(r.json()["code"], "INVALID_DATA");
    }
    assert_eq!(h.sim().calls(SimRoute::ListUserGroups), 2);
    // The route has its own metric label.
    let m = h.metrics().await;
    assert!(
        m.samples("zoho_gateway_requests_total").any(|s| s.has(&[
            ("route", "/crm/{version}/settings/user_groups"),
            ("outcome", "hit")
        ]) && s.value == 3.0),
        "{m}"
    );
    // The count route is untouched by the second one.
    let count = h.get(&name_filter("equal", "Tier1")).await;
    assert_eq!(count.status, StatusCode::OK);
    h.shutdown().await;
}

#[tokio::test]
async fn waiting_requests_are_bounded_per_tenant() {
    let h = Harness::start_with_extra(
        SimConfig::default(),
        Extra {
            tenant_a: "max_waiters = 3",
            ..Extra::default()
        },
    )
    .await;
    // Warm the token so the flight below is the only upstream call.
    assert!(
        h.get(&name_filter("equal", "warm"))
            .await
            .status
            .is_success()
    );
    h.sim().set_latency(Duration::from_millis(1500));
    let q = name_filter("equal", "Tier1");
    let mut waiting = Vec::new();
    for _ in 0..3 {
        let (client, url) = (h.client.clone(), h.url(&q));
        waiting.push(tokio::spawn(async move {
            client
                .get(
                    &url,
                    &[("authorization", &format!("Zoho-oauthtoken {KEY}"))],
                )
                .await
        }));
    }
    wait_until("the upstream call", || h.sim().in_flight() == 1).await;
    wait_until("three waiters", || {
        h.metrics_now().get("zoho_gateway_coalesce_waiters", &[]) == Some(3.0)
    })
    .await;
    let refused = h.get(&q).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        refused.header("x-zoho-gateway-error"),
        Some("too_many_waiters")
    );
    assert_eq!(refused.header("retry-after"), Some("1"));
    // Another tenant is not affected by tenant a's bound.
    let other = h
        .client
        .get(
            &h.url(&name_filter("equal", "Tier2")),
            &[("authorization", &format!("Zoho-oauthtoken {KEY_B}"))],
        )
        .await;
    assert!(other.status.is_success());
    for w in waiting {
        assert!(w.await.unwrap().status.is_success());
    }
    // The bound is released: the next wait is accepted again.
    h.sim().set_latency(Duration::ZERO);
    assert!(
        h.get(&name_filter("equal", "later"))
            .await
            .status
            .is_success()
    );
    h.shutdown().await;
}

/// A free loopback port with nothing listening.
async fn closed_port_url() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    url
}

#[tokio::test]
async fn a_failing_bypass_still_says_bypass() {
    let dead = closed_port_url().await;
    let h = Harness::start_configured(SimConfig::default(), |url| {
        let mut cfg = gateway_config(
            url,
            r#"[routes.passthrough]
allow = ["GET /crm/{version}/settings/user_groups"]"#,
        );
        cfg.tenants[0].api_base = dead.clone();
        cfg
    })
    .await;
    let r = h
        .get_with(&name_filter("equal", "x"), &[("cache-control", "no-store")])
        .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        r.cache_status(),
        "zoho-gateway; fwd=bypass; detail=upstream_connect"
    );
    let r = h.get("/crm/v7/settings/user_groups").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        r.cache_status(),
        "zoho-gateway; fwd=bypass; detail=upstream_connect"
    );
    let m = h.metrics().await;
    let bypass_5xx = m
        .samples("zoho_gateway_requests_total")
        .filter(|s| s.has(&[("outcome", "bypass"), ("status_class", "5xx")]))
        .count();
    assert_eq!(bypass_5xx, 2, "{m}");
    h.shutdown().await;
}

/// A fake Zoho API answering every request with `status`, `content_type`, optional
/// `Content-Encoding` and `body`, counting the requests.
async fn fake_api(
    content_type: &'static str,
    encoding: Option<&'static str>,
    body: &'static [u8],
) -> (String, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let calls = Arc::new(AtomicU64::new(0));
    let counter = calls.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let mut resp = Response::builder()
                        .status(StatusCode::OK)
                        .header("content-type", content_type);
                    if let Some(e) = encoding {
                        resp = resp.header("content-encoding", e);
                    }
                    let resp = resp.body(Full::new(Bytes::from_static(body))).unwrap();
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (url, calls)
}

#[tokio::test]
async fn only_identity_coded_json_answers_are_stored() {
    for (ct, enc, body) in [
        (
            "text/html; charset=utf-8",
            None,
            &b"<html>maintenance</html>"[..],
        ),
        ("application/json", Some("gzip"), &b"\x1f\x8b\x08\x00"[..]),
    ] {
        let (api, calls) = fake_api(ct, enc, body).await;
        let h = Harness::start_configured(SimConfig::default(), |url| {
            let mut cfg = gateway_config(url, "");
            cfg.tenants[0].api_base = api.clone();
            cfg
        })
        .await;
        let q = name_filter("equal", "Tier1");
        for _ in 0..2 {
            let r = h.get(&q).await;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.cache_status(), "zoho-gateway; fwd=miss", "{ct}");
            assert_eq!(r.body.as_ref(), body);
            assert_eq!(r.header("content-type"), Some(ct));
            assert_eq!(r.header("content-encoding"), enc, "relayed as received");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2, "{ct} {enc:?} never stored");
        h.shutdown().await;
    }
}

#[tokio::test]
async fn a_write_drops_only_its_own_tenants_holds() {
    let h = Harness::start_with(
        SimConfig::default(),
        r#"[upstream]
max_retries = 0
[routes.passthrough]
allow = ["DELETE /crm/{version}/settings/user_groups/{id}"]"#,
    )
    .await;
    let q = name_filter("equal", "Tier1");
    let get_b = |q: String| {
        let h = &h;
        async move { h.get_as(KEY_B, &q).await }
    };
    // Warm both tenants' tokens, then make both keys fail once: both are held.
    let seed = h.get(&with_filters(SEED_CURL)).await;
    let tier2 = seed.group_id("Tier2");
    assert!(
        get_b(name_filter("equal", "warm"))
            .await
            .status
            .is_success()
    );
    h.sim().fail_next(2, 500);
    assert_eq!(h.get(&q).await.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        get_b(q.clone()).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let calls = h.calls();
    assert!(h.get(&q).await.cache_status().contains("upstream-hold"));
    assert!(
        get_b(q.clone())
            .await
            .cache_status()
            .contains("upstream-hold")
    );
    assert_eq!(h.calls(), calls);
    // Tenant a writes: its hold is dropped, tenant b's stays.
    let deleted = h
        .client
        .send(
            "DELETE",
            &h.url(&format!("/crm/v7/settings/user_groups/{tier2}")),
            &[("authorization", &format!("Zoho-oauthtoken {KEY}"))],
            Bytes::new(),
        )
        .await;
    assert!(deleted.status.is_success(), "{deleted:?}");
    assert!(h.get(&q).await.cache_status().contains("fwd=miss"));
    assert_eq!(h.calls(), calls + 1);
    assert!(
        get_b(q.clone())
            .await
            .cache_status()
            .contains("upstream-hold")
    );
    assert_eq!(h.calls(), calls + 1);
    h.shutdown().await;
}
