//! Zoho's hot reads through the shipped route table (`config/gateway.toml`), in front of the
//! simulator: for every shipped route, equivalent spellings (parameter order, percent-encoding,
//! `+` vs `%20`, `fields`/`ids` order and duplicates, defaults spelled out, criteria spellings)
//! cost exactly one upstream call on that route, and the one stored answer is byte for byte
//! what the simulator answers each spelling directly (so the merged spellings mean the same);
//! requests that differ in meaning never share an entry; invalid parameters and criteria are
//! answered by the gateway, Zoho-shaped and with the code the simulator gives, at zero upstream
//! calls; requests the gateway is not certain about bypass the cache every time.

use crate::support::*;
use http::StatusCode;
use zoho_crm_simulator::dataset::TIER1_ID;
use zoho_crm_simulator::{SimConfig, SimRoute};

const V: &str = "/crm/v8";
/// The first CRM user (`CurrentUser`) and two more.
const USER0: &str = "3652397000000186001";
const USER1: &str = "3652397000000186002";
const USER2: &str = "3652397000000186003";
/// Lead records `Ava Smith` and `Ben Jones`.
const LEAD1: &str = "3652397000000010001";
const LEAD2: &str = "3652397000000010002";
/// The `Partner Leads` layout and the `Contacted Leads` custom view.
const LEAD_LAYOUT: &str = "3652397000000091056";
const CONTACTED_VIEW: &str = "3652397000000093002";
const CONTACT_LAYOUT: &str = "3652397000000091057";

/// A token of the simulator's own, for asking it directly.
async fn zoho_token(h: &Harness) -> String {
    let (id, secret, refresh) = SimConfig::demo_credentials();
    fetch_token(&h.sim.base_url(), &id, &secret, &refresh).await
}

/// The simulator answering `path` directly (with `token`): the oracle for each spelling.
async fn direct(h: &Harness, token: &str, path: &str) -> Resp {
    h.client
        .get(
            &format!("{}{path}", h.sim.base_url()),
            &[("authorization", &format!("Zoho-oauthtoken {token}"))],
        )
        .await
}

/// GETs every spelling through the gateway: the first is stored, the others are hits with the
/// same body, and `route` saw exactly one upstream call. Then each spelling, asked of the
/// simulator directly, gets that same body.
async fn one_call(h: &Harness, token: &str, route: SimRoute, spellings: &[String]) {
    let before = h.sim().calls(route);
    let first = h.get(&spellings[0]).await;
    assert!(
        first.status == StatusCode::OK || first.status == StatusCode::NO_CONTENT,
        "{}: {first:?}",
        spellings[0]
    );
    assert!(
        first.cache_status().contains("fwd=miss; stored"),
        "{}: {}",
        spellings[0],
        first.cache_status()
    );
    for s in &spellings[1..] {
        let again = h.get(s).await;
        assert!(
            again.cache_status().contains("; hit"),
            "{s} should share {}'s entry: {}",
            spellings[0],
            again.cache_status()
        );
        assert_eq!(again.body, first.body, "{s}");
    }
    assert_eq!(
        h.sim().calls(route) - before,
        1,
        "{route:?}: {spellings:?} cost more than one upstream call"
    );
    for s in spellings {
        let zoho = direct(h, token, s).await;
        assert_eq!(zoho.status, first.status, "{s}");
        assert_eq!(
            zoho.body, first.body,
            "{s}: the simulator answers this spelling differently from {}",
            spellings[0]
        );
    }
}

/// GETs each request through the gateway: every one is a miss of its own (one upstream call
/// each on `route`); none is answered from another's entry.
async fn distinct(h: &Harness, route: SimRoute, requests: &[String]) {
    let before = h.sim().calls(route);
    for r in requests {
        let resp = h.get(r).await;
        assert!(resp.status.is_success(), "{r}: {resp:?}");
        assert!(
            resp.cache_status().contains("fwd=miss"),
            "{r} must not share an entry: {}",
            resp.cache_status()
        );
    }
    assert_eq!(
        h.sim().calls(route) - before,
        requests.len() as u64,
        "{route:?}: {requests:?}"
    );
}

fn paths(prefix: &str, queries: &[&str]) -> Vec<String> {
    queries.iter().map(|q| format!("{V}{prefix}{q}")).collect()
}

#[tokio::test]
async fn equivalent_metadata_reads_cost_one_upstream_call_per_route() {
    let h = Harness::start_shipped().await;
    use SimRoute::*;
    let group = format!("/settings/user_groups/{TIER1_ID}");
    let cases: Vec<(SimRoute, Vec<String>)> = vec![
        (
            ListUserGroups,
            paths(
                "/settings/user_groups",
                &[
                    "",
                    "?page=1",
                    "?per_page=200&page=01",
                    "?page=%31&per_page=200",
                ],
            ),
        ),
        (GetUserGroup, paths(&group, &["", ""])),
        (ListModules, paths("/settings/modules", &["", ""])),
        (GetModule, paths("/settings/modules/Leads", &["", ""])),
        (
            ListFields,
            paths(
                "/settings/fields",
                &["?module=Leads", "?module=%4Ceads", "?module=Lead%73"],
            ),
        ),
        (
            ListFields,
            paths(
                "/settings/fields",
                &[
                    "?module=Leads&type=all",
                    "?type=all&module=Leads",
                    "?type=%61ll&module=Leads",
                ],
            ),
        ),
        (
            ListLayouts,
            paths("/settings/layouts", &["?module=Leads", "?module=%4C%65ads"]),
        ),
        (
            GetLayout,
            paths(
                &format!("/settings/layouts/{LEAD_LAYOUT}"),
                &["?module=Leads", "?module=%4Ceads"],
            ),
        ),
        (
            ListRelatedLists,
            vec![
                format!("{V}/settings/related_lists?module=Contacts&layout_id={CONTACT_LAYOUT}"),
                format!("{V}/settings/related_lists?layout_id={CONTACT_LAYOUT}&module=Contacts"),
            ],
        ),
        (
            ListCustomViews,
            paths(
                "/settings/custom_views",
                &[
                    "?module=Leads",
                    "?per_page=200&module=Leads&page=1",
                    "?page=001&module=Leads",
                ],
            ),
        ),
        (ListRoles, paths("/settings/roles", &["", ""])),
        (ListProfiles, paths("/settings/profiles", &["", ""])),
        (
            ListUsers,
            vec![
                format!("{V}/users?type=AllUsers&ids={USER0},{USER2}"),
                format!("{V}/users?ids={USER2},{USER0},{USER2}&type=AllUsers"),
                format!("{V}/users?ids={USER2}%2C{USER0}&type=AllUsers&page=1&per_page=200"),
            ],
        ),
        (
            ListUsers,
            paths(
                "/users",
                &[
                    "?type=CurrentUser",
                    "?page=1&type=CurrentUser",
                    "?type=Current%55ser",
                ],
            ),
        ),
        (GetUser, paths(&format!("/users/{USER1}"), &["", ""])),
        (GetOrg, paths("/org", &["", ""])),
    ];
    let token = zoho_token(&h).await;
    for (route, spellings) in cases {
        one_call(&h, &token, route, &spellings).await;
    }
    h.shutdown().await;
}

#[tokio::test]
async fn equivalent_record_reads_and_searches_cost_one_upstream_call() {
    let h = Harness::start_shipped().await;
    use SimRoute::*;
    let cases: Vec<(SimRoute, Vec<String>)> = vec![
        (
            ListRecords,
            paths(
                "/Leads",
                &[
                    "?fields=Last_Name,Email",
                    "?fields=Email,Last_Name,Email",
                    "?page=1&fields=Email%2CLast_Name&per_page=200",
                ],
            ),
        ),
        (
            ListRecords,
            paths(
                "/Leads",
                &[
                    "?fields=Last_Name&sort_order=asc&sort_by=Created_Time&per_page=5",
                    "?sort_by=Created_Time&per_page=05&fields=Last_Name&sort_order=asc",
                ],
            ),
        ),
        (
            ListRecords,
            vec![
                format!(
                    "{V}/Deals?fields=Deal_Name,Stage&ids=3652397000000030001,3652397000000030002"
                ),
                format!(
                    "{V}/Deals?ids=3652397000000030002,3652397000000030001&fields=Stage,Deal_Name"
                ),
            ],
        ),
        (
            ListRecords,
            vec![
                format!("{V}/Leads?fields=Lead_Status&cvid={CONTACTED_VIEW}"),
                format!("{V}/Leads?cvid={CONTACTED_VIEW}&fields=Lead_Status,Lead_Status"),
            ],
        ),
        (
            GetRecord,
            vec![
                format!("{V}/Leads/{LEAD1}?fields=Email,Last_Name"),
                format!("{V}/Leads/{LEAD1}?fields=Last_Name,Email,Last_Name"),
            ],
        ),
        (GetRecord, paths(&format!("/Leads/{LEAD2}"), &["", ""])),
        (
            SearchRecords,
            paths(
                "/Leads/search",
                &[
                    "?criteria=((Last_Name:equals:Smith)and(Company:equals:ABC))",
                    "?criteria=(Company:equals:ABC)+and+(Last_Name:equals:Smith)",
                    "?criteria=%28%28Company%3Aequals%3AABC%29%20and%20%28Last_Name%3Aequals%3ASmith%29%29&page=1",
                    "?per_page=200&criteria=(((Company:equals:ABC))and((Last_Name:equals:Smith)))",
                ],
            ),
        ),
        (
            SearchRecords,
            paths(
                "/Leads/search",
                &[
                    "?criteria=(Lead_Source:equals:Web+Site)",
                    "?criteria=(Lead_Source:equals:Web%20Site)",
                    "?criteria=%28Lead_Source%3Aequals%3AWeb%20Site%29",
                ],
            ),
        ),
        (
            SearchRecords,
            paths(
                "/Leads/search",
                &[
                    "?criteria=(Lead_Source:in:Partner,Cold%20Call)",
                    "?criteria=(Lead_Source:in:Cold+Call,Partner)",
                ],
            ),
        ),
        (
            SearchRecords,
            paths(
                "/Leads/search",
                &[
                    "?criteria=(Last_Name:equals:Burns%5C%2CB)",
                    "?criteria=%28Last_Name%3Aequals%3ABurns%5C%2CB%29",
                ],
            ),
        ),
        (
            SearchRecords,
            paths(
                "/Contacts/search",
                &[
                    "?email=noah.smith%40example.com",
                    "?email=noah.smith@example.com&per_page=200",
                ],
            ),
        ),
        (
            SearchRecords,
            paths(
                "/Leads/search",
                &["?word=zeta+gmbh", "?word=zeta%20gmbh&page=1"],
            ),
        ),
    ];
    let token = zoho_token(&h).await;
    for (route, spellings) in cases {
        one_call(&h, &token, route, &spellings).await;
    }
    h.shutdown().await;
}

#[tokio::test]
async fn requests_that_differ_in_meaning_never_share_an_entry() {
    let h = Harness::start_shipped().await;
    use SimRoute::*;
    distinct(
        &h,
        ListRecords,
        &paths(
            "",
            &[
                "/Leads?fields=Last_Name",
                "/Leads?fields=Last_Name,Email",
                "/Leads?fields=Last_Name&sort_order=asc",
                "/Leads?fields=Last_Name&sort_by=Modified_Time",
                "/Leads?fields=Last_Name&per_page=5",
                "/Leads?fields=Last_Name&per_page=5&page=2",
                "/Leads?fields=Last_Name&cvid=3652397000000093003",
                "/Leads?fields=Last_Name&ids=3652397000000010001",
                "/Contacts?fields=Last_Name",
            ],
        ),
    )
    .await;
    // The answers behind the meanings differ too (not only the keys).
    let asc = h
        .get(&format!("{V}/Leads?fields=Last_Name&sort_order=asc"))
        .await;
    let desc = h.get(&format!("{V}/Leads?fields=Last_Name")).await;
    assert_ne!(asc.body, desc.body);
    distinct(
        &h,
        GetRecord,
        &paths(
            "",
            &[
                "/Leads/3652397000000010001",
                "/Leads/3652397000000010002",
                "/Leads/3652397000000010001?fields=Email",
            ],
        ),
    )
    .await;
    distinct(
        &h,
        SearchRecords,
        &paths(
            "/Leads/search",
            &[
                "?criteria=((Last_Name:equals:Smith)and(Company:equals:ABC))",
                "?criteria=((Last_Name:equals:Smith)or(Company:equals:ABC))",
                "?criteria=(Last_Name:equals:Smith)",
                // Zoho's `equals` quirk: a repeated condition is not the same question.
                "?criteria=((Last_Name:equals:Smith)or(Last_Name:equals:Smith))",
                "?criteria=(Last_Name:starts_with:Smith)",
                "?criteria=(Last_Name:equals:smith)",
                "?criteria=(Lead_Source:in:Partner,Web%20Site)",
                "?criteria=(Lead_Source:in:Partner)",
                "?word=Smith",
                "?email=Smith",
                "?criteria=(Last_Name:equals:Smith)&per_page=1",
            ],
        ),
    )
    .await;
    let and = h
        .get(&format!(
            "{V}/Leads/search?criteria=((Last_Name:equals:Smith)and(Company:equals:ABC))"
        ))
        .await;
    let or = h
        .get(&format!(
            "{V}/Leads/search?criteria=((Last_Name:equals:Smith)or(Company:equals:ABC))"
        ))
        .await;
    assert_ne!(and.body, or.body);
    distinct(
        &h,
        ListFields,
        &paths(
            "/settings/fields",
            &[
                "?module=Leads",
                "?module=Contacts",
                "?module=Leads&type=all",
            ],
        ),
    )
    .await;
    distinct(
        &h,
        ListUsers,
        &paths(
            "/users",
            &[
                "?type=AllUsers",
                "?type=ActiveUsers",
                "?type=AllUsers&per_page=5",
                "?type=AllUsers&per_page=5&page=2",
                "?ids=3652397000000186001",
                "?ids=3652397000000186001,3652397000000186002",
            ],
        ),
    )
    .await;
    distinct(
        &h,
        GetModule,
        &paths("/settings/modules", &["/Leads", "/Deals"]),
    )
    .await;
    distinct(
        &h,
        ListCustomViews,
        &paths(
            "/settings/custom_views",
            &["?module=Leads", "?module=Deals", "?module=Leads&per_page=1"],
        ),
    )
    .await;
    // Another API version is another entry.
    distinct(
        &h,
        ListModules,
        &[
            "/crm/v8/settings/modules".into(),
            "/crm/v7/settings/modules".into(),
        ],
    )
    .await;
    h.shutdown().await;
}

#[tokio::test]
async fn invalid_parameters_and_criteria_get_zoho_shaped_400s_at_no_upstream_call() {
    let h = Harness::start_shipped().await;
    let cases: &[(&str, &str)] = &[
        ("/Leads", "REQUIRED_PARAM_MISSING"),
        ("/Leads?sort_by=id", "REQUIRED_PARAM_MISSING"),
        (
            "/Leads?fields=Last_Name&page=2&page_token=abc",
            "AMBIGUITY_DURING_PROCESSING",
        ),
        ("/Leads?fields=Last_Name&sort_order=up", "INVALID_DATA"),
        ("/Leads?fields=Last_Name&sort_by=Last_Name", "INVALID_DATA"),
        ("/Leads?fields=Last_Name&per_page=201", "INVALID_DATA"),
        ("/Leads?fields=Last_Name&page=0", "INVALID_DATA"),
        ("/Leads/search?criteria=(Last_Name:equals", "INVALID_QUERY"),
        (
            "/Leads/search?criteria=(Last_Name:equals:x)and",
            "INVALID_QUERY",
        ),
        ("/Leads/search?criteria=Last_Name:equals:x", "INVALID_QUERY"),
        ("/Leads/search?word=zeta&per_page=0", "INVALID_DATA"),
        ("/settings/fields", "REQUIRED_PARAM_MISSING"),
        ("/settings/fields?module=Leads&type=odd", "INVALID_DATA"),
        ("/settings/layouts", "REQUIRED_PARAM_MISSING"),
        ("/settings/related_lists", "REQUIRED_PARAM_MISSING"),
        (
            "/settings/custom_views?module=Leads&per_page=201",
            "INVALID_DATA",
        ),
        ("/users?type=Bots", "INVALID_DATA"),
        ("/users?per_page=0", "INVALID_DATA"),
        ("/settings/user_groups?page=x", "INVALID_DATA"),
        // Certain in advance from the route policy (`one_of`, `page_limit`).
        ("/Leads/search", "EXPECTED_PARAM_MISSING"),
        ("/Leads/search?page=2", "EXPECTED_PARAM_MISSING"),
        (
            "/Contacts?fields=Email&page=57",
            "DISCRETE_PAGINATION_LIMIT_EXCEEDED",
        ),
        (
            "/Leads?fields=Last_Name&page=21&per_page=100",
            "DISCRETE_PAGINATION_LIMIT_EXCEEDED",
        ),
        ("/Leads/search?word=zeta&page=11", "LIMIT_REACHED"),
    ];
    let many = vec!["(Last_Name:equals:x)"; 16].join("or");
    let too_many = format!("/Leads/search?criteria=({many})");
    let mut all: Vec<(String, &str)> = cases.iter().map(|(p, c)| (format!("{V}{p}"), *c)).collect();
    all.push((format!("{V}{too_many}"), "CRITERIA_LIMIT_EXCEEDED"));
    let before = h.sim().total_api_calls();
    for (path, code) in &all {
        let r = h.get(path).await;
        r.assert_gateway_error(400, code, "invalid_data");
    }
    assert_eq!(
        h.sim().total_api_calls(),
        before,
        "a locally rejected request reached the simulator"
    );
    // Zoho (the simulator) answers each of them the same way.
    let token = zoho_token(&h).await;
    for (path, code) in &all {
        let zoho = direct(&h, &token, path).await;
        assert_eq!(zoho.status, StatusCode::BAD_REQUEST, "{path}: {zoho:?}");
        assert_eq!(zoho.json()["code"], *code, "{path}");
    }
    h.shutdown().await;
}

/// The tester's two repeats: errors certain from the route policy cost no credit however
/// often they are sent, carry Zoho's details (`param_names`, `limit`), and the edges stay
/// Zoho's: the 2000th record by page number, and any page with `page_token`, go upstream.
#[tokio::test]
async fn errors_certain_from_the_route_policy_never_reach_zoho() {
    let h = Harness::start_shipped().await;
    let token = zoho_token(&h).await;
    let before = h.sim().total_api_calls();
    for _ in 0..3 {
        let r = h.get(&format!("{V}/Contacts?fields=Email&page=57")).await;
        r.assert_gateway_error(400, "DISCRETE_PAGINATION_LIMIT_EXCEEDED", "invalid_data");
        assert_eq!(r.json()["details"]["limit"], 2000);
        assert_eq!(
            r.json()["message"],
            "You can only get the first 2000 records without using page_token param"
        );
        let r = h.get(&format!("{V}/Leads/search")).await;
        r.assert_gateway_error(400, "EXPECTED_PARAM_MISSING", "invalid_data");
        assert_eq!(
            r.json()["details"]["param_names"],
            serde_json::json!(["criteria", "email", "phone", "word"])
        );
    }
    assert_eq!(h.sim().total_api_calls(), before, "0 upstream calls");
    // Zoho's own details for the same two requests.
    let zoho = direct(&h, &token, &format!("{V}/Contacts?fields=Email&page=57")).await;
    assert_eq!(zoho.json()["details"]["limit"], 2000);
    let zoho = direct(&h, &token, &format!("{V}/Leads/search")).await;
    assert_eq!(
        zoho.json()["details"]["param_names"],
        serde_json::json!(["criteria", "email", "phone", "word"])
    );
    // Up to the limit, and past it with a page token, Zoho answers.
    for path in [
        "/Contacts?fields=Email&page=10",
        "/Contacts?fields=Email&page=20&per_page=100",
        "/Leads/search?word=zeta&page=10",
    ] {
        let r = h.get(&format!("{V}{path}")).await;
        assert!(
            r.header("x-zoho-gateway-error").is_none(),
            "{path}: {:?}",
            r.body
        );
    }
    let r = h
        .get(&format!(
            "{V}/Contacts?fields=Email&page_token=abc&per_page=200"
        ))
        .await;
    assert!(r.header("x-zoho-gateway-error").is_none(), "{:?}", r.body);
    assert_eq!(
        r.json()["code"],
        "TOKEN_BOUND_DATA_MISMATCH",
        "Zoho's answer"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn requests_the_gateway_is_not_sure_about_bypass_the_cache_every_time() {
    let h = Harness::start_shipped().await;
    for (route, path) in [
        // Operator case: Zoho's handling is not documented, so never merged, never stored.
        (
            SimRoute::SearchRecords,
            "/Leads/search?criteria=(Last_Name:EQUALS:Smith)",
        ),
        // A parameter the route's schema does not name.
        (
            SimRoute::ListRecords,
            "/Leads?fields=Last_Name&converted=both",
        ),
        (SimRoute::ListModules, "/settings/modules?status=visible"),
    ] {
        let before = h.sim().calls(route);
        for _ in 0..2 {
            let r = h.get(&format!("{V}{path}")).await;
            assert_eq!(r.status, StatusCode::OK, "{path}: {r:?}");
            assert!(
                r.cache_status().contains("fwd=bypass"),
                "{path}: {}",
                r.cache_status()
            );
        }
        assert_eq!(h.sim().calls(route) - before, 2, "{path}");
    }
    h.shutdown().await;
}

/// Record writes forwarded through the gateway (they drop the tenant's `records:{module}`).
const WRITES: &str = r#"[routes.passthrough]
allow = [
  "POST /crm/{version}/{module}",
  "PUT /crm/{version}/{module}/{id}",
  "DELETE /crm/{version}/{module}/{id}",
]"#;

fn is_hit(r: &Resp) -> bool {
    r.cache_status().contains("; hit")
}

#[tokio::test]
async fn a_write_to_one_module_refreshes_its_reads_and_leaves_the_rest_cached() {
    let h = Harness::start_shipped_with(WRITES).await;
    let leads = format!("{V}/Leads?fields=Last_Name,Company");
    let lead = format!("{V}/Leads/{LEAD1}");
    let search = format!("{V}/Leads/search?criteria=(Company:equals:Zulu%20Co)");
    let contacts = format!("{V}/Contacts?fields=Last_Name");
    let get_b = |path: String| {
        let h = &h;
        async move { h.get_as(KEY_B, &path).await }
    };
    for p in [&leads, &lead, &search, &contacts] {
        assert!(h.get(p).await.status.is_success(), "{p}");
        assert!(is_hit(&h.get(p).await), "{p}");
    }
    let b_before = get_b(leads.clone()).await;
    assert!(is_hit(&get_b(leads.clone()).await));
    assert_eq!(h.get(&search).await.status, StatusCode::NO_CONTENT);

    let created = h
        .client
        .send(
            "POST",
            &h.url(&format!("{V}/Leads")),
            &[
                ("authorization", &format!("Zoho-oauthtoken {KEY}")),
                ("content-type", "application/json"),
            ],
            bytes::Bytes::from(r#"{"data":[{"Last_Name":"Zulu","Company":"Zulu Co"}]}"#),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let id = created.json()["data"][0]["details"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(h.sim().calls(SimRoute::CreateRecords), 1);

    // Module A's reads are fetched again and show the write.
    let before = h.sim().total_api_calls();
    let fresh = h.get(&leads).await;
    assert!(fresh.cache_status().contains("fwd=miss"), "{fresh:?}");
    assert_eq!(fresh.json()["data"][0]["id"], id.as_str());
    let found = h.get(&search).await;
    assert_eq!(found.status, StatusCode::OK, "{found:?}");
    assert_eq!(found.json()["data"][0]["id"], id.as_str());
    assert!(h.get(&lead).await.cache_status().contains("fwd=miss"));
    assert_eq!(h.sim().total_api_calls() - before, 3);
    // Module B's entry and the other tenant's are still hits.
    assert!(is_hit(&h.get(&contacts).await));
    let b_after = get_b(leads.clone()).await;
    assert!(is_hit(&b_after));
    assert_eq!(b_after.body, b_before.body);
    assert_eq!(h.sim().total_api_calls() - before, 3);

    // An update through the gateway is seen by the next read of the record.
    let updated = h
        .client
        .send(
            "PUT",
            &h.url(&format!("{V}/Leads/{id}")),
            &[("authorization", &format!("Zoho-oauthtoken {KEY}"))],
            bytes::Bytes::from(r#"{"data":[{"Company":"Zulu Holdings"}]}"#),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{updated:?}");
    let r = h.get(&format!("{V}/Leads/{id}")).await;
    assert_eq!(r.json()["data"][0]["Company"], "Zulu Holdings");
    h.shutdown().await;
}

#[tokio::test]
async fn an_sdk_hourly_modules_read_with_if_modified_since_is_a_304_from_the_cache() {
    let h = Harness::start_shipped().await;
    let modules = format!("{V}/settings/modules");
    let first = h.get(&modules).await;
    assert!(first.cache_status().contains("fwd=miss; stored"));
    // Ten minutes later the SDK asks with the time of its last fetch: ISO-8601 as the SDKs
    // send it, then the HTTP-date the gateway gave as Last-Modified.
    let fetched = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let iso = fetched.replace('Z', "+00:00");
    let last_modified = first.header("last-modified").unwrap().to_owned();
    h.advance(std::time::Duration::from_secs(600));
    for since in [iso.as_str(), last_modified.as_str()] {
        let r = h.get_with(&modules, &[("if-modified-since", since)]).await;
        assert_eq!(r.status, StatusCode::NOT_MODIFIED, "{since}: {r:?}");
        assert!(is_hit(&r));
    }
    assert_eq!(h.sim().calls(SimRoute::ListModules), 1);
    // The simulator itself answers that SDK request 304 too (nothing changed since 2024).
    let token = zoho_token(&h).await;
    let zoho = h
        .client
        .get(
            &format!("{}{modules}", h.sim.base_url()),
            &[
                ("authorization", &format!("Zoho-oauthtoken {token}")),
                ("if-modified-since", iso.as_str()),
            ],
        )
        .await;
    assert_eq!(zoho.status, StatusCode::NOT_MODIFIED);
    h.shutdown().await;
}
