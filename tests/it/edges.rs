//! Small HTTP and Zoho edges of the cached path, each proved against the simulator's call
//! counters: `HEAD` on cached routes (RFC 9110 §9.3.2, RFC 9111 §4), `405` with `Allow` for a
//! method no route allows on a known path (RFC 9110 §15.5.6), Zoho's `LIMIT_EXCEEDED` for too
//! many `fields`, credit costs that depend on a parameter (`cvid`), and percent-encoded
//! unreserved characters in the path (RFC 3986 §6.2.2.2).

use crate::support::*;
use bytes::Bytes;
use http::StatusCode;
use zoho_crm_simulator::SimRoute;

const LEADS: &str = "/crm/v8/Leads?fields=Last_Name,Email";

/// A request with the tenant-A key.
async fn send(h: &Harness, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let auth = format!("Zoho-oauthtoken {KEY}");
    let mut all = vec![("authorization", auth.as_str())];
    all.extend_from_slice(headers);
    h.client
        .send(method, &h.url(path), &all, Bytes::new())
        .await
}

#[tokio::test]
async fn head_is_answered_from_the_stored_get() {
    let h = Harness::start_shipped().await;
    let get = h.get(LEADS).await;
    assert_eq!(get.status, StatusCode::OK, "{get:?}");
    assert!(get.cache_status().contains("fwd=miss; stored"));
    assert_eq!(h.sim().calls(SimRoute::ListRecords), 1);

    // A HEAD after the GET: a hit, same status and headers, Content-Length of the GET body,
    // no body, and no upstream call.
    let head = send(&h, "HEAD", LEADS, &[]).await;
    assert_eq!(head.status, StatusCode::OK, "{head:?}");
    assert!(
        head.cache_status().contains("; hit"),
        "{}",
        head.cache_status()
    );
    assert!(head.body.is_empty());
    let get_len = get.body.len().to_string();
    assert_eq!(head.header("content-length"), Some(get_len.as_str()));
    for name in ["etag", "last-modified", "content-type"] {
        assert_eq!(head.header(name), get.header(name), "{name}");
    }
    assert!(head.header("age").is_some());
    // Conditional HEAD works like a conditional GET.
    let etag = get.header("etag").unwrap().to_owned();
    let cond = send(&h, "HEAD", LEADS, &[("if-none-match", &etag)]).await;
    assert_eq!(cond.status, StatusCode::NOT_MODIFIED);
    assert!(cond.body.is_empty());
    assert_eq!(h.sim().calls(SimRoute::ListRecords), 1);

    // A cold HEAD costs one upstream GET, stored: the GET after it is a hit.
    let cold = "/crm/v8/Contacts?fields=Last_Name";
    let head = send(&h, "HEAD", cold, &[]).await;
    assert_eq!(head.status, StatusCode::OK, "{head:?}");
    assert!(
        head.cache_status().contains("fwd=miss; stored"),
        "{}",
        head.cache_status()
    );
    assert!(head.body.is_empty());
    assert_eq!(h.sim().calls(SimRoute::ListRecords), 2);
    let get = h.get(cold).await;
    assert!(
        get.cache_status().contains("; hit"),
        "{}",
        get.cache_status()
    );
    assert_eq!(
        head.header("content-length"),
        Some(get.body.len().to_string().as_str())
    );
    assert_eq!(head.header("etag"), get.header("etag"));
    assert_eq!(h.sim().calls(SimRoute::ListRecords), 2);

    // Measured under its own method label.
    let m = h.metrics().await;
    let heads: f64 = m
        .samples("zoho_gateway_requests_total")
        .filter(|s| s.has(&[("method", "HEAD")]))
        .map(|s| s.value)
        .sum();
    assert_eq!(heads, 3.0, "{m}");
    h.shutdown().await;
}

/// Over HTTP/2 hyper's server does not drop a `HEAD` answer's body itself: the gateway does.
#[tokio::test]
async fn head_over_http2_has_no_body() {
    use http_body_util::{BodyExt, Full};
    let h = Harness::start_shipped().await;
    let get = h.get(LEADS).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let req = http::Request::head(h.url(LEADS))
        .header("authorization", format!("Zoho-oauthtoken {KEY}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let call = async {
        let resp = client.request(req).await.expect("h2 request");
        let (parts, body) = resp.into_parts();
        (parts, body.collect().await.expect("body").to_bytes())
    };
    let (parts, body) = tokio::time::timeout(std::time::Duration::from_secs(10), call)
        .await
        .expect("answer within 10 s");
    assert_eq!(parts.version, http::Version::HTTP_2);
    assert_eq!(parts.status, StatusCode::OK);
    assert!(body.is_empty(), "{} body bytes", body.len());
    assert_eq!(
        parts
            .headers
            .get("content-length")
            .and_then(|v| v.to_str().ok()),
        Some(get.body.len().to_string().as_str())
    );
    assert_eq!(h.sim().calls(SimRoute::ListRecords), 1);
    h.shutdown().await;
}

/// Writes allowlisted on the records paths, none on the metadata paths.
const WRITES: &str = r#"[routes.passthrough]
allow = [
  "POST /crm/{version}/{module}",
  "PUT /crm/{version}/{module}",
  "PUT /crm/{version}/{module}/{id}",
  "POST /crm/{version}/{module}/upsert",
]"#;

#[tokio::test]
async fn a_method_no_route_allows_on_a_known_path_is_405_with_allow() {
    let h = Harness::start_shipped_with(WRITES).await;
    for (method, path, allow) in [
        // A cached route's path with writes allowlisted on it.
        ("PATCH", "/crm/v8/Leads", "GET, HEAD, POST, PUT"),
        (
            "DELETE",
            "/crm/v8/Leads/3652397000000010001",
            "GET, HEAD, PUT",
        ),
        // A cached route's path with no write allowlisted.
        ("DELETE", "/crm/v8/settings/modules", "GET, HEAD"),
        ("POST", "/crm/v8/settings/roles", "GET, HEAD"),
        // A path only an allowlist rule knows (was 404).
        ("PATCH", "/crm/v8/Leads/upsert", "POST"),
        ("GET", "/crm/v8/Leads/upsert", "POST"),
    ] {
        let r = send(&h, method, path, &[]).await;
        r.assert_gateway_error(405, "INVALID_REQUEST_METHOD", "method_not_allowed");
        assert_eq!(r.header("allow"), Some(allow), "{method} {path}");
    }
    // Paths nothing matches stay 404 INVALID_URL_PATTERN, whatever the method.
    for (method, path) in [
        ("PATCH", "/crm/v8/Leads/3652397000000010001/Notes"),
        ("GET", "/crm/v8/Leads/upsert/more"),
        ("DELETE", "/crm/v1/Leads"),
    ] {
        let r = send(&h, method, path, &[]).await;
        r.assert_gateway_error(404, "INVALID_URL_PATTERN", "unknown_route");
        assert_eq!(r.header("allow"), None, "{method} {path}");
    }
    assert_eq!(h.sim().total_api_calls(), 0);
    h.shutdown().await;
}

/// More than 50 `fields` (or 100 `ids`) in a records read: Zoho's 400 `LIMIT_EXCEEDED`,
/// answered by the gateway with the code, status and details the simulator (the oracle) gives,
/// at no upstream call. A set whose `max_items` is only the gateway's bound (`users` `ids`)
/// is still forwarded.
#[tokio::test]
async fn too_many_fields_is_zohos_limit_exceeded() {
    let h = Harness::start_shipped().await;
    let (id, secret, refresh) = zoho_crm_simulator::SimConfig::demo_credentials();
    let token = fetch_token(&h.sim.base_url(), &id, &secret, &refresh).await;
    let fields: Vec<String> = (0..51).map(|i| format!("Field_{i}")).collect();
    let ids: Vec<String> = (0..101).map(|i| format!("36523970000000{i:05}")).collect();
    let cases = [
        (
            format!("/crm/v8/Leads?fields={}", fields.join(",")),
            "fields",
            50,
        ),
        (
            format!("/crm/v8/Leads?fields=Email&ids={}", ids.join(",")),
            "ids",
            100,
        ),
    ];
    let before = h.sim().total_api_calls();
    for (path, param, limit) in &cases {
        let gw = h.get(path).await;
        gw.assert_gateway_error(400, "LIMIT_EXCEEDED", "invalid_data");
        let body = gw.json();
        assert_eq!(body["details"]["param_name"], *param, "{body}");
        assert_eq!(body["details"]["limit"], *limit, "{body}");
        // The simulator answers the same request the same way.
        let zoho = h
            .client
            .get(
                &format!("{}{path}", h.sim.base_url()),
                &[("authorization", &format!("Zoho-oauthtoken {token}"))],
            )
            .await;
        assert_eq!(zoho.status, gw.status, "{param}");
        let zbody = zoho.json();
        assert_eq!(zbody["code"], body["code"], "{zbody}");
        assert_eq!(zbody["details"]["param_name"], *param, "{zbody}");
        assert_eq!(zbody["details"]["limit"], *limit, "{zbody}");
    }
    // Only the two direct calls reached the simulator.
    assert_eq!(h.sim().total_api_calls() - before, 2);
    // Exactly 50 fields is fine (and cached).
    let fifty = format!("/crm/v8/Leads?fields={}", fields[..50].join(","));
    let ok = h.get(&fifty).await;
    assert_eq!(ok.status, StatusCode::OK, "{ok:?}");
    assert!(ok.cache_status().contains("fwd=miss; stored"));
    // `users` `ids`: max_items is the gateway's bound, Zoho's answer is its own to give.
    let users = format!("/crm/v8/users?ids={}", ids.join(","));
    let r = h.get(&users).await;
    assert!(
        r.cache_status().contains("fwd=bypass"),
        "{}",
        r.cache_status()
    );
    assert_eq!(h.sim().calls(SimRoute::ListUsers), 1);
    h.shutdown().await;
}

/// The `Contacted Leads` custom view of the simulator's Leads.
const CONTACTED_VIEW: &str = "3652397000000093002";

/// A records read with `cvid` costs 3 credits (`credit_cost_when = { cvid = 3 }` in the shipped
/// table): charged 3 on a miss or a bypass, saved 3 on a hit (whether the key came from the
/// memo or from canonicalising another spelling), and weighed at 3 by the credit reserve.
#[tokio::test]
async fn a_records_read_with_cvid_weighs_three_credits() {
    let h = Harness::start_configured(zoho_crm_simulator::SimConfig::default(), |url| {
        let extra = Extra {
            tenant_a: "daily_credits = 100\ncredit_reserve = 91",
            ..Extra::default()
        };
        let mut raw = zoho_gateway::config::RawConfig::from_toml_str(&gateway_toml(url, extra))
            .expect("test config parses");
        raw.routes.cached = shipped_routes();
        raw.validate().expect("validates")
    })
    .await;
    let spent = |m: &Metrics| m.get("zoho_gateway_credits_spent_24h", &[("tenant", "a")]);
    let saved = |m: &Metrics| {
        m.get(
            "zoho_gateway_credits_saved_total",
            &[("reason", "hit"), ("tenant", "a")],
        )
    };
    let cvid = format!("/crm/v8/Leads?fields=Lead_Status&cvid={CONTACTED_VIEW}");
    let miss = h.get(&cvid).await;
    assert_eq!(miss.status, StatusCode::OK, "{miss:?}");
    assert!(miss.cache_status().contains("fwd=miss; stored"));
    assert_eq!(spent(&h.metrics().await), Some(3.0));
    // A hit (memoised key), then another spelling (canonicalised): 3 saved each.
    let calls = h.sim().calls(SimRoute::ListRecords);
    for q in [
        cvid.clone(),
        format!("/crm/v8/Leads?cvid={CONTACTED_VIEW}&fields=Lead_Status,Lead_Status"),
    ] {
        let hit = h.get(&q).await;
        assert!(
            hit.cache_status().contains("; hit"),
            "{q}: {}",
            hit.cache_status()
        );
    }
    assert_eq!(h.sim().calls(SimRoute::ListRecords), calls);
    let m = h.metrics().await;
    assert_eq!(saved(&m), Some(6.0), "{m}");
    assert_eq!(spent(&m), Some(3.0));
    // Without cvid: the route's 1.
    let plain = "/crm/v8/Leads?fields=Lead_Status";
    assert!(h.get(plain).await.cache_status().contains("fwd=miss"));
    assert!(h.get(plain).await.cache_status().contains("; hit"));
    let m = h.metrics().await;
    assert_eq!((spent(&m), saved(&m)), (Some(4.0), Some(7.0)), "{m}");
    // A bypass (a parameter the schema does not know) with cvid: charged 3.
    let bypass = h.get(&format!("{cvid}&x_unknown=1")).await;
    assert!(
        bypass.cache_status().contains("fwd=bypass"),
        "{}",
        bypass.cache_status()
    );
    assert_eq!(spent(&h.metrics().await), Some(7.0));
    // 93 left, 91 reserved: a 1-credit call may go, a 3-credit one may not.
    let refused = h
        .get(&format!("/crm/v8/Leads?fields=Email&cvid={CONTACTED_VIEW}"))
        .await;
    refused.assert_gateway_error(429, "TOO_MANY_REQUESTS", "credit_reserve");
    let ok = h.get("/crm/v8/Leads?fields=Email").await;
    assert_eq!(ok.status, StatusCode::OK, "{ok:?}");
    assert_eq!(spent(&h.metrics().await), Some(8.0));
    h.shutdown().await;
}

/// RFC 3986 §6.2.2.2: a percent-encoded unreserved character is that character, so
/// `/crm/v8/Lead%73` is `/crm/v8/Leads`: one route, one key, and the normalised path goes
/// upstream (also for a pass-through write, whose invalidation follows it). Encoded `.` segments
/// are dot segments (refused, as `..` is) and `%2F` stays an encoded slash (refused).
#[tokio::test]
async fn percent_encoded_unreserved_characters_are_the_characters() {
    let h = Harness::start_shipped_with(WRITES).await;
    let first = h.get(LEADS).await;
    assert!(first.cache_status().contains("fwd=miss; stored"));
    for spelling in [
        "/crm/v8/Lead%73?fields=Last_Name,Email",
        "/crm/v8/%4Ceads?fields=Last_Name,Email",
        "/crm/%768/Leads?fields=Last_Name,Email",
    ] {
        let r = h.get(spelling).await;
        assert!(
            r.cache_status().contains("; hit"),
            "{spelling}: {}",
            r.cache_status()
        );
        assert_eq!(r.body, first.body, "{spelling}");
    }
    let groups = h.get("/crm/v8/settings/user_groups").await;
    assert_eq!(groups.status, StatusCode::OK, "{groups:?}");
    let r = h.get("/crm/v8/settings/user%5Fgroups").await;
    assert!(r.cache_status().contains("; hit"), "{}", r.cache_status());
    assert_eq!(h.sim().calls(SimRoute::ListRecords), 1);
    assert_eq!(h.sim().calls(SimRoute::ListUserGroups), 1);

    // A cold spelling goes upstream as the normalised path (Zoho's answer for Contacts).
    let cold = h.get("/crm/v8/Contact%73?fields=Last_Name").await;
    assert_eq!(cold.status, StatusCode::OK, "{cold:?}");
    assert!(cold.cache_status().contains("fwd=miss; stored"));
    let plain = h.get("/crm/v8/Contacts?fields=Last_Name").await;
    assert!(plain.cache_status().contains("; hit"));
    assert_eq!(h.sim().calls(SimRoute::ListRecords), 2);
    assert_eq!(h.sim().calls(SimRoute::Unknown), 0);

    // A write to `Lead%73` is a write to Leads: forwarded there, and it drops Leads' reads.
    let created = h
        .client
        .send(
            "POST",
            &h.url("/crm/v8/Lead%73"),
            &[
                ("authorization", &format!("Zoho-oauthtoken {KEY}")),
                ("content-type", "application/json"),
            ],
            Bytes::from(r#"{"data":[{"Last_Name":"Zulu","Company":"Zulu Co"}]}"#),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    assert!(h.get(LEADS).await.cache_status().contains("fwd=miss"));

    // Encoded dot segments and encoded slashes are refused locally.
    let calls = h.sim().total_api_calls();
    for bad in [
        "/crm/v8/settings/%2e%2e/org",
        "/crm/v8/settings/%2E%2E/org",
        "/crm/v8/%2E/org",
        "/crm/v8/settings%2Fmodules",
        "/crm/v8/settings%2fmodules",
    ] {
        let r = h.get(bad).await;
        r.assert_gateway_error(404, "INVALID_URL_PATTERN", "unknown_route");
    }
    assert_eq!(h.sim().total_api_calls(), calls);
    h.shutdown().await;
}
