//! End-to-end tests of the simulator over loopback HTTP.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderMap};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};

use super::*;

mod crm;

const COUNT: &str = "/crm/v7/settings/user_groups/actions/associated_users_count";
const GROUPS: &str = "/crm/v7/settings/user_groups";
/// The `filters` value of the seed's curl sample, as sent.
const SEED_QUERY: &str = "filters=%7B%22group_operator%22%3A%20%22or%22%2C%22group%22%3A%20%5B%7B%22field%22%3A%20%7B%22api_name%22%3A%20%22name%22%7D%2C%22comparator%22%3A%20%22equal%22%2C%22value%22%3A%20%22Tier1%22%7D%2C%7B%22field%22%3A%20%7B%22api_name%22%3A%20%22name%22%7D%2C%22comparator%22%3A%20%22equal%22%2C%22value%22%3A%20%22Tier2%22%7D%5D%7D";
const READ_ONLY: &str = "1000.readonly.token";
const NO_SCOPE: &str = "1000.noscope.token";
const INACTIVE: &str = "1000.inactive.token";
const OTHER_USER: &str = "1000.other.token";
/// First user id of the bundled data set (a Tier1 member).
const USER0: &str = "3652397000000186001";

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
    }

    fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_string()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

#[derive(Clone)]
struct TestClient {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl TestClient {
    fn new(sim: &RunningSimulator) -> Self {
        TestClient {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: sim.base_url(),
        }
    }

    async fn try_send(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<Resp, hyper_util::client::legacy::Error> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .unwrap();
        let resp = self.client.request(req).await?;
        let (parts, body) = resp.into_parts();
        Ok(Resp {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let auth = token.map(|t| format!("Zoho-oauthtoken {t}"));
        self.try_send(
            method,
            path,
            auth.as_deref(),
            body.map(|b| b.to_string().into_bytes()),
        )
        .await
        .unwrap()
    }

    async fn get(&self, path: &str, token: &str) -> Resp {
        self.send(Method::GET, path, Some(token), None).await
    }

    async fn grant_raw(&self, form: &str) -> Resp {
        self.try_send(
            Method::POST,
            "/oauth/v2/token",
            None,
            Some(form.as_bytes().to_vec()),
        )
        .await
        .unwrap()
    }

    async fn grant(&self, refresh: &str) -> Resp {
        let (id, secret, _) = SimConfig::demo_credentials();
        self.grant_raw(&format!(
            "grant_type=refresh_token&client_id={id}&client_secret={secret}&refresh_token={refresh}"
        ))
        .await
    }

    async fn token_for(&self, refresh: &str) -> String {
        let r = self.grant(refresh).await;
        let v = r.json();
        v["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token: {v}"))
            .to_string()
    }

    async fn token(&self) -> String {
        self.token_for(&SimConfig::demo_credentials().2).await
    }
}

/// Default config plus extra refresh tokens on the demo client.
fn config() -> SimConfig {
    let mut cfg = SimConfig::default();
    let tokens = &mut cfg.clients[0].refresh_tokens;
    tokens.push(SimRefreshToken::new(
        READ_ONLY,
        &["ZohoCRM.settings.user_groups.READ"],
    ));
    tokens.push(SimRefreshToken::new(NO_SCOPE, &["ZohoCRM.users.READ"]));
    let mut inactive = SimRefreshToken::new(INACTIVE, &["ZohoCRM.settings.ALL"]);
    inactive.user_active = false;
    tokens.push(inactive);
    tokens.push(SimRefreshToken::new(OTHER_USER, &["zohocrm.settings.all"]));
    cfg
}

async fn start(cfg: SimConfig) -> (RunningSimulator, TestClient) {
    let sim = Simulator::spawn(cfg).await.unwrap();
    let client = TestClient::new(&sim);
    (sim, client)
}

fn filters(json: &Value) -> String {
    format!(
        "filters={}",
        utf8_percent_encode(&json.to_string(), NON_ALPHANUMERIC)
    )
}

fn name_equal(v: &str) -> Value {
    json!({"field":{"api_name":"name"},"comparator":"equal","value":v})
}

fn names(v: &Value) -> Vec<String> {
    v["associated_users_count"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["user_group"]["name"].as_str().unwrap().to_string())
        .collect()
}

fn count_of(v: &Value, name: &str) -> u64 {
    v["associated_users_count"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["user_group"]["name"] == name)
        .unwrap_or_else(|| panic!("{name} missing in {v}"))["count"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn seed_sample_request_returns_tier1_and_tier2() {
    let (sim, c) = start(config()).await;
    let token = c.token().await;
    let r = c.get(&format!("{COUNT}?{SEED_QUERY}"), &token).await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(names(&v), ["Tier1", "Tier2"]);
    assert_eq!(count_of(&v, "Tier1"), 4, "inactive member counted");
    assert_eq!(count_of(&v, "Tier2"), 7);
    assert_eq!(
        v["info"],
        json!({"per_page":200,"count":2,"page":1,"more_records":false})
    );

    // The seed's sample response, byte for byte.
    let r = c
        .get(
            &format!("{COUNT}?{}", filters(&name_equal("Tier1"))),
            &token,
        )
        .await;
    assert_eq!(
        std::str::from_utf8(&r.body).unwrap(),
        r#"{"associated_users_count":[{"user_group":{"name":"Tier1","id":"3652397000012454002"},"count":4}],"info":{"per_page":200,"count":1,"page":1,"more_records":false}}"#
    );
    assert_eq!(
        r.header("content-type"),
        Some("application/json;charset=utf-8")
    );
    assert_eq!(
        r.header("cache-control"),
        Some("no-store, no-cache, must-revalidate, private")
    );
    assert_eq!(r.header("pragma"), Some("no-cache"));
    assert!(r.header("date").is_some());
    let reset = r.header("x-accesstoken-reset").unwrap();
    assert!(reset.ends_with("+00:00") && reset.len() == 25, "{reset}");
    let cookie = r.header("set-cookie").unwrap().to_string();
    assert!(cookie.starts_with("crmcsr=") && cookie.contains("HttpOnly"));
    let again = c.get(&format!("{COUNT}?{SEED_QUERY}"), &token).await;
    assert_ne!(
        again.header("set-cookie").unwrap(),
        cookie,
        "fresh per response"
    );

    // Every version in the family serves the path.
    for v in ["v5", "v6", "v8"] {
        let path = COUNT.replace("v7", v);
        assert_eq!(c.get(&path, &token).await.status, StatusCode::OK, "{v}");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn paging_and_info_block() {
    let (sim, c) = start(config()).await;
    let token = c.token().await;
    let all = sim.handle().dataset_groups();
    assert_eq!(all, dataset::BUNDLED_GROUPS);

    let r = c.get(COUNT, &token).await.json();
    assert_eq!(
        r["info"],
        json!({"per_page":200,"count":200,"page":1,"more_records":true})
    );
    assert_eq!(
        names(&r)[..3],
        ["Tier1", "Tier2", "Tier10"],
        "creation order"
    );
    let r = c.get(&format!("{COUNT}?page=2"), &token).await.json();
    assert_eq!(
        r["info"],
        json!({"per_page":200,"count":all - 200,"page":2,"more_records":false})
    );
    let r = c
        .get(&format!("{COUNT}?page=2&per_page=2"), &token)
        .await
        .json();
    assert_eq!(names(&r), ["Tier10", "Tier3"]);
    assert_eq!(r["info"]["more_records"], true);

    // Page past the end, and no match: 204 with an empty body.
    for q in ["page=3".to_string(), filters(&name_equal("No such group"))] {
        let r = c.get(&format!("{COUNT}?{q}"), &token).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{q}");
        assert!(r.body.is_empty());
        assert!(r.header("content-type").is_none());
        assert!(r.header("x-accesstoken-reset").is_some());
    }

    // Repeated parameters: the first wins; trailing & and empty segments ignored.
    let r = c
        .get(&format!("{COUNT}?per_page=1&&per_page=3&"), &token)
        .await
        .json();
    assert_eq!(r["info"]["count"], 1);
    sim.shutdown().await;

    let mut cfg = config();
    cfg.no_match = NoMatch::EmptyList;
    let (sim, c) = start(cfg).await;
    let token = c.token().await;
    let r = c.get(&format!("{COUNT}?page=9"), &token).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        std::str::from_utf8(&r.body).unwrap(),
        r#"{"associated_users_count":[],"info":{"per_page":200,"count":0,"page":9,"more_records":false}}"#
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn filters_over_http() {
    let (sim, c) = start(config()).await;
    let token = c.token().await;
    let get = |q: String| {
        let c = c.clone();
        let token = token.clone();
        async move { c.get(&format!("{COUNT}?{q}"), &token).await }
    };
    let starts =
        |v: &str| json!({"field":{"api_name":"name"},"comparator":"starts_with","value":v});

    let r = get(filters(&starts("Tier1"))).await.json();
    assert_eq!(names(&r), ["Tier1", "Tier10"]);
    let r = get(filters(&starts("Sales"))).await.json();
    assert_eq!(names(&r), ["Sales", "Sales - EU", "Sales - US"]);
    let r = get(filters(&json!({"group_operator":"AND","group":[
        starts("Sales"),
        {"group_operator":"Or","group":[name_equal("Sales - EU"), name_equal("Tier1")]}
    ]})))
    .await
    .json();
    assert_eq!(names(&r), ["Sales - EU"]);
    let r = get(filters(
        &json!({"field":{"api_name":"description"},"comparator":"starts_with","value":"Sales in"}),
    ))
    .await
    .json();
    assert_eq!(names(&r), ["Sales - EU", "Sales - US"]);
    for name in [
        "Über Team",
        "日本チーム",
        "R&D",
        "x=y",
        "100% Club",
        "Ops #1",
    ] {
        let r = get(filters(&name_equal(name))).await.json();
        assert_eq!(names(&r), [name]);
    }
    // `+` decodes as a space, `%2B` as a plus.
    let plus = r#"{"field":{"api_name":"name"},"comparator":"equal","value":"A+B Group"}"#;
    let form = utf8_percent_encode(plus, NON_ALPHANUMERIC)
        .to_string()
        .replace("%20", "+");
    assert_eq!(
        names(&get(format!("filters={form}")).await.json()),
        ["A+B Group"]
    );
    let raw_plus = utf8_percent_encode(plus, NON_ALPHANUMERIC)
        .to_string()
        .replace("%2B", "+");
    assert_eq!(
        get(format!("filters={raw_plus}")).await.status,
        StatusCode::NO_CONTENT,
        "raw + is a space: \"A B Group\""
    );
    // Case-sensitive by default.
    assert_eq!(
        get(filters(&name_equal("tier1"))).await.status,
        StatusCode::NO_CONTENT
    );
    let r = get(filters(&name_equal("mixedcase group"))).await.json();
    assert_eq!(names(&r), ["mixedcase group"]);
    sim.shutdown().await;

    let mut cfg = config();
    cfg.equal_case_sensitive = false;
    let (sim, c) = start(cfg).await;
    let token = c.token().await;
    let r = c
        .get(
            &format!("{COUNT}?{}", filters(&name_equal("mixedcase group"))),
            &token,
        )
        .await
        .json();
    assert_eq!(names(&r), ["MixedCase Group", "mixedcase group"]);
    let r = c
        .get(
            &format!("{COUNT}?{}", filters(&name_equal("über team"))),
            &token,
        )
        .await
        .json();
    assert_eq!(names(&r), ["Über Team"]);
    sim.shutdown().await;
}

#[tokio::test]
async fn invalid_data_for_bad_filters_and_paging() {
    let (sim, c) = start(config()).await;
    let token = c.token().await;
    let cases = [
        ("filters=%7B".to_string(), "filters"),
        ("filters=".to_string(), "filters"),
        (
            filters(&json!({"field":{"api_name":"email"},"comparator":"equal","value":"x"})),
            "filters",
        ),
        (
            filters(&json!({"field":{"api_name":"name"},"comparator":"contains","value":"x"})),
            "filters",
        ),
        (
            filters(&json!({"field":{"api_name":"name"},"comparator":"equal","value":5})),
            "filters",
        ),
        (
            filters(&json!({"group_operator":"or","group":[]})),
            "filters",
        ),
        ("per_page=0".to_string(), "per_page"),
        ("per_page=201".to_string(), "per_page"),
        ("per_page=abc".to_string(), "per_page"),
        ("page=0".to_string(), "page"),
        ("page=-1".to_string(), "page"),
        ("page=".to_string(), "page"),
    ];
    for (q, param) in cases {
        let r = c.get(&format!("{COUNT}?{q}"), &token).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}");
        let v = r.json();
        assert_eq!(v["code"], "INVALID_DATA", "{q}");
        assert_eq!(v["status"], "error");
        assert_eq!(v["details"]["param_name"], param, "{q}");
    }
    let v = c
        .get(
            &format!(
                "{COUNT}?{}",
                filters(&json!({"group_operator":"or","group":[1]}))
            ),
            &token,
        )
        .await
        .json();
    assert_eq!(v["details"]["json_path"], "$.group[0]");
    let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, ["code", "details", "message", "status"]);
    sim.shutdown().await;
}

#[tokio::test]
async fn auth_errors() {
    let (sim, c) = start(config()).await;
    let unauth = c.send(Method::GET, COUNT, None, None).await;
    assert_eq!(unauth.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unauth.code(), "AUTHENTICATION_FAILURE");
    assert!(unauth.header("x-accesstoken-reset").is_none());

    let token = c.token().await;
    let bearer = c
        .try_send(Method::GET, COUNT, Some(&format!("Bearer {token}")), None)
        .await
        .unwrap();
    assert_eq!(bearer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(bearer.code(), "INVALID_TOKEN");

    let unknown = c.get(COUNT, "1000.nope.nope").await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.json()["message"], "invalid oauth token");

    let no_scope = c.token_for(NO_SCOPE).await;
    let r = c.get(COUNT, &no_scope).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "OAUTH_SCOPE_MISMATCH");
    assert!(r.header("x-accesstoken-reset").is_some(), "token was valid");

    let inactive = c.token_for(INACTIVE).await;
    let r = c.get(COUNT, &inactive).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.code(), "INACTIVE_USER");

    let read_only = c.token_for(READ_ONLY).await;
    assert_eq!(c.get(COUNT, &read_only).await.status, StatusCode::OK);
    let other = c.token_for(OTHER_USER).await;
    assert_eq!(
        c.get(COUNT, &other).await.status,
        StatusCode::OK,
        "settings.ALL"
    );

    sim.handle().revoke_access_tokens();
    assert_eq!(sim.handle().live_tokens(), 0);
    let r = c.get(COUNT, &token).await;
    assert_eq!(r.code(), "INVALID_TOKEN");
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_paths_are_invalid_url_pattern() {
    let (sim, c) = start(config()).await;
    let token = c.token().await;
    for path in [
        "/crm/v9/settings/user_groups/actions/associated_users_count",
        "/crm/v7/settings/user_group",
        "/crm/v7/settings/user_groups/actions/associated_users_count/",
        "/crm/v7/Leads/1/photo",
        "/",
    ] {
        let r = c.get(path, &token).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        let v = r.json();
        assert_eq!(v["code"], "INVALID_URL_PATTERN");
        assert_eq!(
            v["message"],
            "Please check if the URL trying to access is a correct one"
        );
    }
    let r = c.send(Method::POST, COUNT, Some(&token), None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "INVALID_REQUEST_METHOD");
    let h = sim.handle();
    assert_eq!(h.calls(SimRoute::Unknown), 6);
    assert_eq!(h.total_api_calls(), 6);
    sim.shutdown().await;
}

#[tokio::test]
async fn concurrency_limit_gives_429_per_user() {
    let mut cfg = config();
    cfg.concurrency_limit = 2;
    let (sim, c) = start(cfg).await;
    let h = sim.handle();
    let token = c.token().await;
    h.hang_next(2);
    let mut hung = Vec::new();
    for _ in 0..2 {
        let (c, token) = (c.clone(), token.clone());
        hung.push(tokio::spawn(async move {
            c.try_send(
                Method::GET,
                COUNT,
                Some(&format!("Zoho-oauthtoken {token}")),
                None,
            )
            .await
        }));
    }
    h.wait_for_in_flight(2).await;
    let r = c.get(COUNT, &token).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.code(), "TOO_MANY_REQUESTS");
    assert!(r.header("retry-after").is_none());
    // Another user has its own slots.
    let other = c.token_for(OTHER_USER).await;
    assert_eq!(c.get(COUNT, &other).await.status, StatusCode::OK);
    assert_eq!(h.max_concurrent(), 3, "two hung plus the rejected one");

    // Shutdown ends the hung requests without a response.
    tokio::time::timeout(Duration::from_secs(10), sim.shutdown())
        .await
        .expect("shutdown finishes with hung requests");
    for t in hung {
        assert!(t.await.unwrap().is_err());
    }
}

#[tokio::test]
async fn latency_holds_slots() {
    let mut cfg = config();
    cfg.concurrency_limit = 1;
    cfg.concurrency_retry_after = Some(3);
    let (sim, c) = start(cfg).await;
    let h = sim.handle();
    let token = c.token().await;
    h.set_latency(Duration::from_secs(3600));
    let slow = {
        let (c, token) = (c.clone(), token.clone());
        tokio::spawn(async move {
            c.try_send(
                Method::GET,
                COUNT,
                Some(&format!("Zoho-oauthtoken {token}")),
                None,
            )
            .await
        })
    };
    h.wait_for_in_flight(1).await;
    // The delayed request holds the only slot; later requests are not delayed.
    h.set_latency(Duration::ZERO);
    let r = c.get(COUNT, &token).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.header("retry-after"), Some("3"));
    assert_eq!(r.json()["details"]["concurrency_limit"], 1);
    tokio::time::timeout(Duration::from_secs(10), sim.shutdown())
        .await
        .expect("shutdown ends delayed requests");
    assert!(
        slow.await.unwrap().is_err(),
        "delayed request ended by shutdown"
    );
}

#[tokio::test]
async fn injected_failures() {
    let (sim, c) = start(config()).await;
    let h = sim.handle();
    let token = c.token().await;
    h.fail_next(1, 500);
    let r = c.get(COUNT, &token).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.code(), "INTERNAL_SERVER_ERROR");
    assert_eq!(c.get(COUNT, &token).await.status, StatusCode::OK);

    h.fail_next_with_retry_after(2, 429, 7);
    for _ in 0..2 {
        let r = c.get(COUNT, &token).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.code(), "TOO_MANY_REQUESTS");
        assert_eq!(r.header("retry-after"), Some("7"));
    }
    h.fail_next(1, 503);
    assert_eq!(c.get(COUNT, &token).await.code(), "SERVICE_UNAVAILABLE");

    // Reset: the connection closes without a response; the next call works.
    h.reset_next(1);
    let auth = format!("Zoho-oauthtoken {token}");
    let err = c.try_send(Method::GET, COUNT, Some(&auth), None).await;
    assert!(err.is_err(), "no response on reset");
    assert_eq!(c.get(COUNT, &token).await.status, StatusCode::OK);

    // Hang: no answer within the client's deadline; the slot frees when the
    // client gives up.
    h.hang_next(1);
    let hung = tokio::time::timeout(
        Duration::from_millis(300),
        c.try_send(Method::GET, COUNT, Some(&auth), None),
    )
    .await;
    assert!(hung.is_err(), "hung request must not answer");
    tokio::time::timeout(Duration::from_secs(5), h.wait_for_in_flight(0))
        .await
        .expect("abandoned request leaves in_flight");
    assert_eq!(c.get(COUNT, &token).await.status, StatusCode::OK);

    // Token endpoint outage.
    h.set_token_endpoint_down(true);
    let r = c.grant(&SimConfig::demo_credentials().2).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    h.set_token_endpoint_down(false);
    c.token().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn token_endpoint_answers() {
    let (sim, c) = start(config()).await;
    let (id, secret, refresh) = SimConfig::demo_credentials();
    let r = c.grant(&refresh).await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    let token = v["access_token"].as_str().unwrap();
    let parts: Vec<_> = token.split('.').collect();
    assert_eq!(parts[0], "1000");
    assert!(
        parts[1..]
            .iter()
            .all(|p| p.len() == 32 && hex::decode(p).is_ok())
    );
    assert_eq!(v["api_domain"], sim.base_url());
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3600);
    assert!(v.get("expires_in_sec").is_none());

    // Parameters in the query string of the POST work too.
    let r = c
        .try_send(
            Method::POST,
            &format!(
                "/oauth/v2/token?grant_type=refresh_token&client_id={id}&client_secret={secret}&refresh_token={refresh}"
            ),
            None,
            None,
        )
        .await
        .unwrap();
    assert!(r.json()["access_token"].is_string());

    let base = format!("grant_type=refresh_token&client_id={id}&client_secret={secret}");
    for (form, error) in [
        (
            format!(
                "grant_type=refresh_token&client_id={id}&client_secret=wrong&refresh_token={refresh}"
            ),
            "invalid_client",
        ),
        (
            format!(
                "grant_type=refresh_token&client_id=1000.OTHER&client_secret={secret}&refresh_token={refresh}"
            ),
            "invalid_client",
        ),
        (format!("{base}&refresh_token=1000.revoked"), "invalid_code"),
        (base.clone(), "invalid_code"),
        (
            format!("grant_type=authorization_code&client_id={id}&client_secret={secret}&code=x"),
            "unsupported_grant_type",
        ),
    ] {
        let r = c.grant_raw(&form).await;
        assert_eq!(r.status, StatusCode::OK, "{error}");
        let v = r.json();
        assert_eq!(v, json!({ "error": error }));
    }
    assert_eq!(sim.handle().token_grants(), 2);
    assert_eq!(sim.handle().calls(SimRoute::Token), 7);
    assert_eq!(sim.handle().total_api_calls(), 0);
    sim.shutdown().await;

    let mut cfg = config();
    cfg.legacy_expires_in = true;
    let (sim, c) = start(cfg).await;
    let v = c.grant(&refresh).await.json();
    assert_eq!(v["expires_in"], 3_600_000);
    assert_eq!(v["expires_in_sec"], 3600);
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn token_throttle_window_slides() {
    let mut cfg = config();
    cfg.max_live_tokens = 100;
    let (sim, c) = start(cfg).await;
    let refresh = SimConfig::demo_credentials().2;
    for _ in 0..5 {
        c.token().await;
    }
    tokio::time::advance(Duration::from_secs(300)).await;
    for _ in 0..5 {
        c.token().await;
    }
    tokio::time::advance(Duration::from_secs(301)).await;
    // The first five slid out of the 600 s window: five more fit.
    for _ in 0..5 {
        c.token().await;
    }
    let r = c.grant(&refresh).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json(),
        json!({"error":"Access Denied","error_description":"You have made too many requests continuously. Please try again after some time."})
    );
    assert_eq!(sim.handle().token_grants(), 15);
    // Other refresh tokens are not affected.
    c.token_for(READ_ONLY).await;
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn token_throttle_locks_out() {
    let mut cfg = config();
    cfg.token_throttle_status = 400;
    let (sim, c) = start(cfg).await;
    let refresh = SimConfig::demo_credentials().2;
    for _ in 0..10 {
        c.token().await;
    }
    let denied = c.grant(&refresh).await;
    assert_eq!(denied.status, StatusCode::BAD_REQUEST);
    assert_eq!(denied.json()["error"], "Access Denied");
    // The window is empty again after 601 s, but the 900 s lockout holds.
    tokio::time::advance(Duration::from_secs(601)).await;
    assert!(c.grant(&refresh).await.json().get("access_token").is_none());
    tokio::time::advance(Duration::from_secs(300)).await;
    assert!(c.grant(&refresh).await.json()["access_token"].is_string());
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn sixteenth_token_invalidates_the_oldest_and_tokens_expire() {
    let mut cfg = config();
    cfg.token_rate_limit = 100;
    let (sim, c) = start(cfg).await;
    let mut tokens = Vec::new();
    for _ in 0..15 {
        tokens.push(c.token().await);
    }
    assert_eq!(sim.handle().live_tokens(), 15);
    assert_eq!(c.get(COUNT, &tokens[0]).await.status, StatusCode::OK);
    let newest = c.token().await;
    assert_eq!(sim.handle().live_tokens(), 15);
    let r = c.get(COUNT, &tokens[0]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "INVALID_TOKEN");
    assert_eq!(c.get(COUNT, &tokens[1]).await.status, StatusCode::OK);
    assert_eq!(c.get(COUNT, &newest).await.status, StatusCode::OK);

    tokio::time::advance(Duration::from_secs(3599)).await;
    assert_eq!(c.get(COUNT, &newest).await.status, StatusCode::OK);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(c.get(COUNT, &newest).await.code(), "INVALID_TOKEN");
    assert_eq!(sim.handle().live_tokens(), 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn writes_change_later_counts() {
    let (sim, c) = start(config()).await;
    let h = sim.handle();
    let token = c.token().await;
    let count_query = format!("{COUNT}?{}", filters(&name_equal("Night Shift")));
    assert_eq!(
        c.get(&count_query, &token).await.status,
        StatusCode::NO_CONTENT
    );

    let body = json!({"user_groups":[{"name":"Night Shift","description":"new",
        "sources":[{"type":"users","source":{"id":USER0}},
                   {"type":"users","source":{"id":"3652397000000186002"}}]}]});
    let read_only = c.token_for(READ_ONLY).await;
    let r = c
        .send(Method::POST, GROUPS, Some(&read_only), Some(body.clone()))
        .await;
    assert_eq!(r.code(), "OAUTH_SCOPE_MISMATCH");

    let r = c
        .send(Method::POST, GROUPS, Some(&token), Some(body.clone()))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let item = &r.json()["user_groups"][0];
    assert_eq!(item["code"], "SUCCESS");
    assert_eq!(item["message"], "user group created");
    let id = item["details"]["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 19);
    assert_eq!(h.dataset_groups(), dataset::BUNDLED_GROUPS + 1);
    let v = c.get(&count_query, &token).await.json();
    assert_eq!(count_of(&v, "Night Shift"), 2);
    // Appended last in creation order.
    let last = c.get(&format!("{COUNT}?page=2"), &token).await.json();
    assert_eq!(names(&last).last().unwrap(), "Night Shift");

    // Same name again → DUPLICATE_DATA.
    let r = c.send(Method::POST, GROUPS, Some(&token), Some(body)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["user_groups"][0]["code"], "DUPLICATE_DATA");

    // Update membership and read it back.
    let path = format!("{GROUPS}/{id}");
    let r = c
        .send(
            Method::PUT,
            &path,
            Some(&token),
            Some(json!({"user_groups":[{"sources":[{"type":"users","source":{"id":USER0}}]}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    assert_eq!(
        count_of(&c.get(&count_query, &token).await.json(), "Night Shift"),
        1
    );
    let g = c.get(&path, &token).await.json();
    assert_eq!(g["user_groups"][0]["name"], "Night Shift");
    assert_eq!(g["user_groups"][0]["sources_count"]["users"], 1);

    // Rename: the old name no longer matches.
    let r = c
        .send(
            Method::PUT,
            &path,
            Some(&token),
            Some(json!({"user_groups":[{"name":"Day Shift"}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        c.get(&count_query, &token).await.status,
        StatusCode::NO_CONTENT
    );

    let r = c.send(Method::DELETE, &path, Some(&token), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["user_groups"][0]["message"], "user group deleted");
    assert_eq!(h.dataset_groups(), dataset::BUNDLED_GROUPS);
    let r = c.get(&path, &token).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["details"]["resource_path_index"], 2);

    // Bad ids and bad bodies.
    for bad in ["abc", "12345678901234567890"] {
        let r = c.get(&format!("{GROUPS}/{bad}"), &token).await;
        assert_eq!(r.code(), "INVALID_DATA", "{bad}");
        assert_eq!(r.json()["details"]["resource_path_index"], 2);
    }
    let r = c
        .send(
            Method::POST,
            GROUPS,
            Some(&token),
            Some(json!({"user_groups":[{"description":"x"}]})),
        )
        .await;
    assert_eq!(r.json()["user_groups"][0]["code"], "MANDATORY_NOT_FOUND");
    let r = c
        .send(
            Method::POST,
            GROUPS,
            Some(&token),
            Some(json!({"user_groups":[{"name":"Z","sources":[{"type":"users","source":{"id":"1"}}]}]})),
        )
        .await;
    assert_eq!(r.json()["user_groups"][0]["code"], "INVALID_DATA");
    let big = vec![b'x'; 1024 * 1024 + 1];
    let r = c
        .try_send(
            Method::POST,
            GROUPS,
            Some(&format!("Zoho-oauthtoken {token}")),
            Some(big),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.code(), "REQUEST_ENTITY_TOO_LARGE");
    sim.shutdown().await;
}

#[tokio::test]
async fn list_user_groups() {
    let (sim, c) = start(config()).await;
    let token = c.token().await;
    let v = c
        .get(
            &format!("{GROUPS}?per_page=3&include=sources_count"),
            &token,
        )
        .await
        .json();
    let groups = v["user_groups"].as_array().unwrap();
    assert_eq!(groups.len(), 3);
    assert_eq!(groups[0]["id"], dataset::TIER1_ID);
    assert_eq!(groups[0]["sources_count"]["users"], 4);
    assert_eq!(groups[3 - 1]["name"], "Tier10");
    assert_eq!(v["info"]["more_records"], true);
    let v = c
        .get(
            &format!("{GROUPS}?{}", filters(&name_equal("Tier3"))),
            &token,
        )
        .await
        .json();
    assert_eq!(v["user_groups"][0]["description"], Value::Null);
    assert!(v["user_groups"][0].get("sources_count").is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn counters_per_route_and_raw_query() {
    let (sim, c) = start(config()).await;
    let h = sim.handle();
    let token = c.token().await;
    let compact = r#"{"field":{"api_name":"name"},"comparator":"equal","value":"Tier1"}"#;
    let pct = utf8_percent_encode(compact, NON_ALPHANUMERIC).to_string();
    let q1 = format!("filters={pct}");
    let q2 = format!("filters={pct}&");
    for q in [&q1, &q1, &q2] {
        assert_eq!(
            c.get(&format!("{COUNT}?{q}"), &token).await.status,
            StatusCode::OK
        );
    }
    c.get(COUNT, &token).await;
    c.get(GROUPS, &token).await;
    assert_eq!(h.calls(SimRoute::AssociatedUsersCount), 4);
    assert_eq!(h.query_calls(SimRoute::AssociatedUsersCount, &q1), 2);
    assert_eq!(h.query_calls(SimRoute::AssociatedUsersCount, &q2), 1);
    assert_eq!(h.query_calls(SimRoute::AssociatedUsersCount, ""), 1);
    assert_eq!(h.query_calls(SimRoute::ListUserGroups, ""), 1);
    assert_eq!(h.calls(SimRoute::Token), 1);
    assert_eq!(h.total_api_calls(), 5);
    // Counted on arrival, before auth.
    c.send(Method::GET, COUNT, None, None).await;
    assert_eq!(h.calls(SimRoute::AssociatedUsersCount), 5);

    // Concurrency high-water mark.
    assert_eq!(h.max_concurrent(), 1);
    h.hang_next(3);
    let mut hung = Vec::new();
    for _ in 0..3 {
        let (c, token) = (c.clone(), token.clone());
        hung.push(tokio::spawn(async move {
            c.try_send(
                Method::GET,
                COUNT,
                Some(&format!("Zoho-oauthtoken {token}")),
                None,
            )
            .await
        }));
    }
    h.wait_for_in_flight(3).await;
    assert_eq!(h.max_concurrent(), 3);
    h.reset_counters();
    assert_eq!(h.calls(SimRoute::AssociatedUsersCount), 0);
    assert_eq!(h.query_calls(SimRoute::AssociatedUsersCount, &q1), 0);
    assert_eq!(
        h.max_concurrent(),
        3,
        "reset keeps the current in-flight count"
    );
    sim.shutdown().await;
    for t in hung {
        assert!(t.await.unwrap().is_err());
    }
    assert_eq!(h.in_flight(), 0);
}

#[tokio::test]
async fn control_surface_over_http() {
    let (sim, c) = start(config()).await;
    let h = sim.handle();
    let token = c.token().await;
    c.get(COUNT, &token).await;
    let r = c
        .send(
            Method::POST,
            "/__simulator/faults",
            None,
            Some(json!({"fail_next":{"count":1,"status":500},"latency_ms":0})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(c.get(COUNT, &token).await.code(), "INTERNAL_SERVER_ERROR");

    let stats = c
        .send(Method::GET, "/__simulator/stats", None, None)
        .await
        .json();
    assert_eq!(stats["calls"]["associated_users_count"], 2);
    assert_eq!(stats["calls"]["token"], 1);
    assert_eq!(stats["calls"]["control"], 2);
    assert_eq!(stats["query_calls"]["associated_users_count"][""], 2);
    assert_eq!(stats["total_api_calls"], 2);
    assert_eq!(stats["token_grants"], 1);
    assert_eq!(stats["live_tokens"], 1);
    assert_eq!(stats["dataset_groups"], dataset::BUNDLED_GROUPS);

    let r = c
        .send(
            Method::POST,
            "/__simulator/faults",
            None,
            Some(json!({"bogus":1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    c.send(Method::POST, "/__simulator/revoke", None, None)
        .await;
    assert_eq!(c.get(COUNT, &token).await.code(), "INVALID_TOKEN");
    c.send(Method::POST, "/__simulator/reset", None, None).await;
    assert_eq!(h.total_api_calls(), 0);
    assert_eq!(h.calls(SimRoute::Control), 0);
    assert_eq!(
        c.send(Method::GET, "/__simulator/nope", None, None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn spawn_errors() {
    let mut cfg = config();
    cfg.dataset = Some("/nonexistent/dataset.json".into());
    assert!(matches!(
        Simulator::spawn(cfg).await,
        Err(SimError::Dataset(_))
    ));
    let mut cfg = config();
    cfg.clients.push(cfg.clients[0].clone());
    assert!(matches!(
        Simulator::spawn(cfg).await,
        Err(SimError::Config(_))
    ));
    let sim = Simulator::spawn(config()).await.unwrap();
    let mut cfg = config();
    cfg.listen = sim.addr();
    assert!(matches!(
        Simulator::spawn(cfg).await,
        Err(SimError::Bind { .. })
    ));
    sim.shutdown().await;
}

#[tokio::test]
async fn serves_h2c_with_the_same_headers() {
    let (sim, c) = start(config()).await;
    let token = c.token().await;
    let h2 = TestClient {
        client: Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http(),
        base: sim.base_url(),
    };
    let r = h2.get(&format!("{COUNT}?{SEED_QUERY}"), &token).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(names(&r.json()), ["Tier1", "Tier2"]);
    for h in ["date", "set-cookie", "cache-control", "x-accesstoken-reset"] {
        assert!(r.header(h).is_some(), "{h}");
    }
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn api_credit_limit_over_rolling_day() {
    let mut cfg = config();
    cfg.api_credit_limit = Some(4);
    let (sim, c) = start(cfg).await;
    let h = sim.handle();
    let token = c.token().await;
    // Calls without a valid token cost nothing.
    c.send(Method::GET, COUNT, None, None).await;
    let r = c.get(COUNT, &token).await;
    assert!(
        r.header("x-api-credits-remaining").is_none(),
        "under half used"
    );
    for remaining in ["2", "1", "0"] {
        let r = c.get(COUNT, &token).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("x-api-credits-remaining"), Some(remaining));
    }
    let r = c.get(COUNT, &token).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.code(), "TOO_MANY_REQUESTS");
    assert_eq!(r.header("x-api-credits-remaining"), Some("0"));
    assert_eq!(h.credits_used(), 4);
    tokio::time::advance(Duration::from_secs(24 * 3600)).await;
    assert_eq!(h.credits_used(), 0);
    let token = c.token().await;
    assert_eq!(c.get(COUNT, &token).await.status, StatusCode::OK);
    sim.shutdown().await;
}

#[tokio::test]
async fn revoking_a_refresh_token() {
    let (sim, c) = start(config()).await;
    let h = sim.handle();
    let refresh = SimConfig::demo_credentials().2;
    let token = c.token().await;
    let other = c.token_for(OTHER_USER).await;
    assert!(h.revoke_refresh_token(&refresh));
    assert!(!h.revoke_refresh_token(&refresh), "already revoked");
    assert!(!h.revoke_refresh_token("1000.unknown"));
    assert_eq!(c.get(COUNT, &token).await.code(), "INVALID_TOKEN");
    assert_eq!(
        c.grant(&refresh).await.json(),
        json!({"error":"invalid_code"})
    );
    assert_eq!(c.get(COUNT, &other).await.status, StatusCode::OK);

    // The same over the control surface.
    let r = c
        .send(
            Method::POST,
            "/__simulator/revoke",
            None,
            Some(json!({ "refresh_token": OTHER_USER })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(c.get(COUNT, &other).await.code(), "INVALID_TOKEN");
    assert_eq!(c.grant(OTHER_USER).await.json()["error"], "invalid_code");
    sim.shutdown().await;
}
