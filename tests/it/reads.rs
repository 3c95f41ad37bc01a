//! Issue 11's request-path parts: conditional requests answered from the cache, write-through
//! invalidation per group (`records:{module}`), reads outside the table forwarded through a
//! `**` allow rule, and `X-EXTERNAL` in the key. The module routes are defined here (like
//! tests/it/routes.rs's `list_route`) over a small fake Zoho API that counts what it is asked.

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::support::*;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::Semaphore;
use zoho_crm_simulator::{SimConfig, SimRoute};
use zoho_gateway::canonical::{ParamKind, ParamSchema, ParamSpec, UnknownParams};
use zoho_gateway::config::GatewayConfig;
use zoho_gateway::route::{PathTemplate, RouteLifetimes, RoutePolicy};

/// One request the fake Zoho API received.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path_and_query: String,
    external: Option<String>,
    /// It carried `If-None-Match` or `If-Modified-Since`.
    conditional: bool,
}

/// A fake Zoho API: a `GET` answers 200 JSON naming its path, the data revision and the
/// `X-EXTERNAL` it got (with Zoho-style `ETag`/`Last-Modified` when `validators`); any other
/// method is a successful write that bumps the revision. A `GET` whose query holds `slow=1`
/// waits for a permit of `gate`.
#[derive(Clone)]
struct FakeZoho {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    revision: Arc<AtomicU64>,
    gate: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
}

impl FakeZoho {
    async fn start(validators: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = FakeZoho {
            url: format!("http://{}", listener.local_addr().unwrap()),
            seen: Arc::default(),
            revision: Arc::default(),
            gate: Arc::new(Semaphore::new(0)),
            waiting: Arc::default(),
        };
        let f = fake.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let f = f.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let f = f.clone();
                        async move { Ok::<_, Infallible>(f.answer(req, validators).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        fake
    }

    async fn answer(&self, req: Request<Incoming>, validators: bool) -> Response<Full<Bytes>> {
        let header = |n: &str| req.headers().get(n).map(|v| v.to_str().unwrap().to_owned());
        let path_and_query = req.uri().path_and_query().unwrap().as_str().to_owned();
        let external = header("x-external");
        self.seen.lock().unwrap().push(Seen {
            method: req.method().to_string(),
            path_and_query: path_and_query.clone(),
            external: external.clone(),
            conditional: header("if-none-match").is_some() || header("if-modified-since").is_some(),
        });
        if req.method() != http::Method::GET {
            self.revision.fetch_add(1, Ordering::SeqCst);
            let body = r#"{"data":[{"code":"SUCCESS","status":"success"}]}"#;
            return json_response(body.into(), None);
        }
        let revision = self.revision.load(Ordering::SeqCst);
        if req.uri().query().is_some_and(|q| q.contains("slow=1")) {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            self.gate.acquire().await.unwrap().forget();
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
        let body = serde_json::json!({
            "data": [{"path": req.uri().path(), "revision": revision, "external": external}]
        });
        let validators = validators.then(|| {
            let modified = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + revision);
            (
                format!("\"zoho-{revision}\""),
                httpdate::fmt_http_date(modified),
            )
        });
        json_response(body.to_string(), validators)
    }

    /// `GET`s received whose path and query start with `prefix`.
    fn gets(&self, prefix: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.method == "GET" && s.path_and_query.starts_with(prefix))
            .count()
    }

    fn last(&self) -> Seen {
        self.seen.lock().unwrap().last().cloned().unwrap()
    }

    fn total(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

fn json_response(body: String, validators: Option<(String, String)>) -> Response<Full<Bytes>> {
    let mut r = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json;charset=utf-8");
    if let Some((etag, modified)) = validators {
        r = r.header("etag", etag).header("last-modified", modified);
    }
    r.body(Full::new(Bytes::from(body))).unwrap()
}

/// A cached route built from the count route's policy: only name, template, schema and group
/// differ.
fn route(count: &RoutePolicy, name: &str, template: &str, group: &str) -> RoutePolicy {
    let int = |name: &'static str, default, max| ParamSpec {
        name: Cow::Borrowed(name),
        kind: ParamKind::Integer {
            default: Some(default),
            min: 1,
            max,
        },
        required: false,
    };
    RoutePolicy {
        name: name.to_owned(),
        template: PathTemplate::parse(template).unwrap(),
        schema: ParamSchema::new(
            vec![int("page", 1, u32::MAX), int("per_page", 200, 200)],
            UnknownParams::Key,
        )
        .unwrap(),
        group: group.to_owned(),
        ..count.clone()
    }
}

/// Writes the tests make, forwarded uncached.
const WRITES: &str = r#"[routes.passthrough]
allow = [
  "POST /crm/{version}/{module}",
  "PUT /crm/{version}/{module}/{id}",
  "DELETE /crm/{version}/{module}/{id}",
  "PUT /crm/{version}/settings/{thing}",
]"#;

/// The harness with both tenants on `fake` and three more cached routes: records
/// (`/crm/{version}/{module}`) and record (`…/{module}/{id}`) in group `records:{module}`, and
/// `settings/modules` (TTL 2 h) in group `metadata`.
async fn start(fake: &FakeZoho) -> Harness {
    Harness::start_configured(SimConfig::default(), |url| {
        let mut cfg: GatewayConfig = gateway_config(url, WRITES);
        let count = cfg.routes[0].clone();
        cfg.routes.extend([
            RoutePolicy {
                lifetimes: RouteLifetimes {
                    ttl: Duration::from_secs(2 * 3600),
                    ..count.lifetimes.clone()
                },
                ..route(
                    &count,
                    "modules",
                    "/crm/{version}/settings/modules",
                    "metadata",
                )
            },
            route(
                &count,
                "records",
                "/crm/{version}/{module}",
                "records:{module}",
            ),
            route(
                &count,
                "record",
                "/crm/{version}/{module}/{id}",
                "records:{module}",
            ),
        ]);
        for t in &mut cfg.tenants {
            t.api_base = fake.url.clone();
        }
        cfg
    })
    .await
}

async fn get_b(h: &Harness, path: &str) -> Resp {
    let auth = format!("Zoho-oauthtoken {KEY_B}");
    h.client
        .get(&h.url(path), &[("authorization", &auth)])
        .await
}

async fn write(h: &Harness, method: &str, path: &str) -> Resp {
    let auth = format!("Zoho-oauthtoken {KEY}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let body = Bytes::from_static(br#"{"data":[{"Last_Name":"x"}]}"#);
    h.client.send(method, &h.url(path), &headers, body).await
}

fn is_hit(r: &Resp) -> bool {
    r.cache_status().starts_with("zoho-gateway; hit")
}

#[tokio::test]
async fn x_external_is_in_the_key_and_user_agent_is_not() {
    let fake = FakeZoho::start(false).await;
    let h = start(&fake).await;
    let path = "/crm/v7/Leads/4150868000001";
    let ext = ("x-external", "Leads.External_Contact_ID");
    let first = h.get_with(path, &[ext, ("user-agent", "sdk-a")]).await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    assert!(first.cache_status().contains("fwd=miss; stored"));
    assert_eq!(
        fake.last().external.as_deref(),
        Some("Leads.External_Contact_ID"),
        "forwarded upstream"
    );
    // Only User-Agent and X-ZOHO-SDK differ: the same entry.
    let other_ua = h
        .get_with(
            path,
            &[ext, ("user-agent", "sdk-b"), ("x-zoho-sdk", "python/8")],
        )
        .await;
    assert!(is_hit(&other_ua), "{other_ua:?}");
    assert_eq!(other_ua.body, first.body);
    assert_eq!(fake.gets(path), 1);
    // Only X-EXTERNAL differs: another entry, fetched without the header.
    let plain = h.get_with(path, &[("user-agent", "sdk-a")]).await;
    assert!(plain.cache_status().contains("fwd=miss"), "{plain:?}");
    assert_eq!(fake.last().external, None);
    let other_field = h.get_with(path, &[("x-external", "Leads.Other_Id")]).await;
    assert!(other_field.cache_status().contains("fwd=miss"));
    assert_eq!(fake.gets(path), 3);
    assert!(is_hit(&h.get_with(path, &[ext]).await));
    // Two X-EXTERNAL headers are ambiguous: answered locally.
    let total = fake.total();
    let two = h
        .get_with(path, &[ext, ("x-external", "Leads.Other_Id")])
        .await;
    assert_eq!(two.status, StatusCode::BAD_REQUEST);
    assert_eq!(two.json()["code"], "INVALID_REQUEST");
    assert_eq!(fake.total(), total);
    h.shutdown().await;
}

#[tokio::test]
async fn a_write_to_a_module_drops_only_that_modules_reads_of_that_tenant() {
    let fake = FakeZoho::start(false).await;
    let h = start(&fake).await;
    let (leads, lead, contacts, modules) = (
        "/crm/v7/Leads?fields=Last_Name",
        "/crm/v7/Leads/4150868000001",
        "/crm/v7/Contacts?fields=Last_Name",
        "/crm/v7/settings/modules",
    );
    for p in [leads, lead, contacts, modules] {
        assert!(h.get(p).await.cache_status().contains("stored"), "{p}");
        assert!(is_hit(&h.get(p).await), "{p}");
    }
    assert!(get_b(&h, leads).await.cache_status().contains("stored"));
    assert_eq!(fake.gets("/crm/v7/Leads"), 3);

    // Tenant a creates a lead (the module spelled in another case).
    let created = write(&h, "POST", "/crm/v7/leads").await;
    assert_eq!(created.status, StatusCode::OK, "{created:?}");
    assert!(created.cache_status().contains("detail=passthrough"));
    // a's Leads reads are fetched again, and show the new revision.
    for p in [leads, lead] {
        let r = h.get(p).await;
        assert!(r.cache_status().contains("fwd=miss; stored"), "{p}: {r:?}");
        assert_eq!(r.json()["data"][0]["revision"], 1);
    }
    assert_eq!(fake.gets("/crm/v7/Leads"), 5);
    // Other modules, metadata and the other tenant keep their entries.
    assert!(is_hit(&h.get(contacts).await));
    assert!(is_hit(&h.get(modules).await));
    let b = get_b(&h, leads).await;
    assert!(is_hit(&b), "{b:?}");
    assert_eq!(b.json()["data"][0]["revision"], 0);
    assert_eq!(fake.gets("/crm/v7/Contacts"), 1);

    // A settings write drops the metadata entries, not the records.
    assert!(
        write(&h, "PUT", "/crm/v7/settings/layouts")
            .await
            .status
            .is_success()
    );
    assert!(h.get(modules).await.cache_status().contains("fwd=miss"));
    assert!(is_hit(&h.get(contacts).await));
    assert!(is_hit(&h.get(leads).await));
    // A refused write (not allowlisted; the path is a cached route's: 405) drops nothing.
    let refused = write(&h, "PATCH", "/crm/v7/Contacts").await;
    assert_eq!(refused.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(is_hit(&h.get(contacts).await));
    h.shutdown().await;
}

#[tokio::test]
async fn a_fetch_in_flight_across_a_write_of_its_group_is_not_stored() {
    let fake = FakeZoho::start(false).await;
    let h = start(&fake).await;
    // Warm the token so the gated reads are the only upstream calls in flight.
    assert!(h.get("/crm/v7/Deals").await.status.is_success());
    let slow = |path: &'static str| {
        let (client, url) = (h.client.clone(), h.url(path));
        tokio::spawn(async move {
            let auth = format!("Zoho-oauthtoken {KEY}");
            client.get(&url, &[("authorization", &auth)]).await
        })
    };
    let leads = slow("/crm/v7/Leads?slow=1");
    let contacts = slow("/crm/v7/Contacts?slow=1");
    wait_until("two reads in flight", || {
        fake.waiting.load(Ordering::SeqCst) == 2
    })
    .await;
    assert!(
        write(&h, "DELETE", "/crm/v7/Leads/4150868000001")
            .await
            .status
            .is_success()
    );
    fake.gate.add_permits(2);
    let leads = leads.await.unwrap();
    let contacts = contacts.await.unwrap();
    assert_eq!(leads.status, StatusCode::OK);
    // The Leads answer may predate the write: relayed, not stored. Contacts is another group.
    assert_eq!(leads.cache_status(), "zoho-gateway; fwd=miss");
    assert!(contacts.cache_status().contains("stored"), "{contacts:?}");
    fake.gate.add_permits(1);
    let again = h.get("/crm/v7/Leads?slow=1").await;
    assert!(again.cache_status().contains("fwd=miss; stored"));
    assert_eq!(again.json()["data"][0]["revision"], 1);
    assert!(is_hit(&h.get("/crm/v7/Contacts?slow=1").await));
    h.shutdown().await;
}

#[tokio::test]
async fn reads_outside_the_table_are_forwarded_only_with_a_wildcard_rule() {
    let list = "/crm/v7/settings/user_groups";
    // Default: deny.
    let h = Harness::start().await;
    let r = h.get(list).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["code"], "INVALID_URL_PATTERN");
    assert_eq!(h.sim().calls(SimRoute::ListUserGroups), 0);
    h.shutdown().await;

    let h = Harness::start_with(
        SimConfig::default(),
        r#"[routes.passthrough]
allow = ["GET /crm/{version}/**"]"#,
    )
    .await;
    for n in 1..=2 {
        let r = h.get(list).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        assert_eq!(
            r.cache_status(),
            "zoho-gateway; fwd=bypass; detail=passthrough"
        );
        assert_eq!(h.sim().calls(SimRoute::ListUserGroups), n, "never cached");
    }
    // Deeper paths go through too (the simulator's own 404, not the gateway's).
    let deep = h.get("/crm/v7/Leads/4150868000001/Notes").await;
    assert_eq!(deep.status, StatusCode::NOT_FOUND);
    assert_eq!(deep.header("x-zoho-gateway-error"), None);
    assert_eq!(h.sim().calls(SimRoute::Unknown), 1);
    // Not another method, an unconfigured version, the version alone, or a traversal.
    let post = h
        .client
        .send(
            "POST",
            &h.url(list),
            &[("authorization", &format!("Zoho-oauthtoken {KEY}"))],
            Bytes::from_static(b"{}"),
        )
        .await;
    // A known path, another method: 405 naming the one allowed.
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.header("allow"), Some("GET"));
    for bad in [
        "/crm/v1/settings/user_groups",
        "/crm/v7",
        "/crm/v7/settings/%2e%2e/x",
    ] {
        let r = h.get(bad).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{bad}");
        assert!(r.header("x-zoho-gateway-error").is_some(), "{bad}");
    }
    assert_eq!(h.sim().calls(SimRoute::Unknown), 1);
    assert_eq!(h.sim().calls(SimRoute::CreateUserGroups), 0);
    // The table still comes first: the count route is cached.
    let q = name_filter("equal", "Tier1");
    assert!(h.get(&q).await.cache_status().contains("stored"));
    assert!(is_hit(&h.get(&q).await));
    h.shutdown().await;
}

/// `at` as the ISO-8601 form Zoho's SDKs send, in UTC+05:00.
fn iso(at: SystemTime) -> String {
    let secs = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    jiff::Timestamp::from_second(secs as i64)
        .unwrap()
        .display_with_offset(jiff::tz::offset(5))
        .to_string()
}

#[tokio::test]
async fn an_sdk_hourly_if_modified_since_is_answered_304_from_the_cache() {
    let fake = FakeZoho::start(false).await;
    let h = start(&fake).await;
    let modules = "/crm/v7/settings/modules";
    let first = h.get(modules).await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(first.cache_status().contains("fwd=miss; stored"));
    let etag = first.header("etag").unwrap().to_owned();
    let modified = first.header("last-modified").unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.len() == 34, "{etag}");
    assert!(httpdate::parse_http_date(&modified).is_ok(), "{modified}");

    // An hour later the SDK asks again with the time of its last fetch, ISO-8601 with offset.
    h.advance(Duration::from_secs(3600));
    let since = iso(SystemTime::now());
    assert!(since.ends_with("+05:00"), "{since}");
    let r = h.get_with(modules, &[("if-modified-since", &since)]).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED, "{r:?}");
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(r.header("last-modified"), Some(modified.as_str()));
    assert!(is_hit(&r), "{r:?}");
    assert_eq!(r.header("age"), Some("3600"));
    // The HTTP-date form, echoing Last-Modified.
    let r = h
        .get_with(modules, &[("if-modified-since", &modified)])
        .await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert_eq!(fake.gets(modules), 1, "no upstream call for either");
    // An older date: the whole answer, from the cache.
    let old = h
        .get_with(
            modules,
            &[("if-modified-since", "2020-01-01T00:00:00+00:00")],
        )
        .await;
    assert_eq!(old.status, StatusCode::OK);
    assert!(is_hit(&old));
    assert_eq!(old.body, first.body);
    // A 304 from the cache counts as a hit.
    let m = h.metrics().await;
    assert_eq!(
        m.sum(
            "zoho_gateway_requests_total",
            &[
                ("route", "/crm/{version}/settings/modules"),
                ("outcome", "hit"),
                ("status_class", "3xx"),
            ],
        ),
        2.0,
        "{}",
        m.text()
    );
    // On a miss the gateway fetches unconditionally, stores, then answers the condition (`*`:
    // a date would race the second the answer arrives in).
    let other = "/crm/v7/settings/modules?status=visible";
    let r = h.get_with(other, &[("if-none-match", "*")]).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert!(r.cache_status().contains("fwd=miss; stored"), "{r:?}");
    assert!(!fake.last().conditional, "conditions are never forwarded");
    assert_eq!(h.get(other).await.status, StatusCode::OK);
    assert_eq!(fake.gets("/crm/v7/settings/modules"), 2);
    h.shutdown().await;
}

#[tokio::test]
async fn if_none_match_weak_strong_star_and_a_changed_entry() {
    let fake = FakeZoho::start(false).await;
    let h = start(&fake).await;
    let leads = "/crm/v7/Leads?fields=Last_Name";
    let first = h.get(leads).await;
    let etag = first.header("etag").unwrap().to_owned();
    let weak = format!("W/{etag}");
    let listed = format!("\"nope\", {etag}");
    for inm in [etag.as_str(), &weak, &listed, "*"] {
        let r = h.get_with(leads, &[("if-none-match", inm)]).await;
        assert_eq!(r.status, StatusCode::NOT_MODIFIED, "{inm}");
        assert!(is_hit(&r));
    }
    let r = h.get_with(leads, &[("if-none-match", "\"nope\"")]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, first.body);
    // If-None-Match wins over an If-Modified-Since that would match (RFC 9110 §13.2.2).
    let r = h
        .get_with(
            leads,
            &[
                ("if-none-match", "\"nope\""),
                ("if-modified-since", "Fri, 01 Jan 2100 00:00:00 GMT"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(fake.gets(leads), 1);
    // After a write the entry is refetched and changed: the old tag gets the new answer.
    assert!(write(&h, "POST", "/crm/v7/Leads").await.status.is_success());
    let changed = h.get_with(leads, &[("if-none-match", &etag)]).await;
    assert_eq!(changed.status, StatusCode::OK, "{changed:?}");
    assert_eq!(changed.json()["data"][0]["revision"], 1);
    let new_tag = changed.header("etag").unwrap();
    assert_ne!(new_tag, etag);
    let r = h.get_with(leads, &[("if-none-match", new_tag)]).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert_eq!(fake.gets(leads), 2);
    h.shutdown().await;
}

#[tokio::test]
async fn zohos_own_validators_are_stored_and_replayed() {
    let fake = FakeZoho::start(true).await;
    let h = start(&fake).await;
    let contacts = "/crm/v7/Contacts";
    let first = h.get(contacts).await;
    assert_eq!(first.header("etag"), Some("\"zoho-0\""));
    let modified = first.header("last-modified").unwrap().to_owned();
    assert_eq!(modified, "Tue, 14 Nov 2023 22:13:20 GMT");
    let r = h
        .get_with(contacts, &[("if-modified-since", &modified)])
        .await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert_eq!(r.header("etag"), Some("\"zoho-0\""));
    let r = h
        .get_with(
            contacts,
            &[("if-modified-since", "2023-11-14T22:13:20+00:00")],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert_eq!(fake.gets(contacts), 1);
    // A write changes Zoho's Last-Modified: the same date now gets the new answer.
    assert!(
        write(&h, "PUT", "/crm/v7/Contacts/4150868000001")
            .await
            .status
            .is_success()
    );
    let r = h
        .get_with(contacts, &[("if-modified-since", &modified)])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.header("etag"), Some("\"zoho-1\""));
    assert_eq!(
        r.header("last-modified"),
        Some("Tue, 14 Nov 2023 22:13:21 GMT")
    );
    assert_eq!(fake.gets(contacts), 2);
    h.shutdown().await;
}
