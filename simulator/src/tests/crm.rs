//! The CRM endpoints: metadata reads, records (list, get, search, writes), paging with
//! `page_token`, `If-Modified-Since`, Zoho's errors, per-route counters and scopes.

use super::*;

const LEADS: &str = "/crm/v8/Leads";

impl TestClient {
    async fn get_with(&self, path: &str, token: &str, headers: &[(&str, &str)]) -> Resp {
        let mut req = Request::builder()
            .uri(format!("{}{path}", self.base))
            .header(header::AUTHORIZATION, format!("Zoho-oauthtoken {token}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .client
            .request(req.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        let (parts, body) = resp.into_parts();
        Resp {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }
}

fn ids(v: &Value) -> Vec<String> {
    v["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data: {v}"))
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

#[track_caller]
fn assert_error(r: &Resp, status: u16, code: &str) -> Value {
    assert_eq!(r.status.as_u16(), status, "{:?}", r.body);
    let v = r.json();
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v["status"], "error", "{v}");
    v["details"].clone()
}

#[tokio::test]
async fn metadata_reads_answer_zoho_shapes() {
    let (sim, c) = start(config()).await;
    let t = c.token().await;
    let v = c.get("/crm/v8/settings/modules", &t).await.json();
    let names: Vec<&str> = v["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["api_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Leads", "Contacts", "Deals"]);
    let v = c.get("/crm/v8/settings/modules/Deals", &t).await.json();
    assert_eq!(v["modules"][0]["api_name"], "Deals");
    assert_eq!(v["modules"][0]["custom_view"]["name"], "All Deals");
    let d = assert_error(
        &c.get("/crm/v8/settings/modules/Nope", &t).await,
        400,
        "INVALID_MODULE",
    );
    assert_eq!(d["resource_path_index"], 2);

    let v = c
        .get("/crm/v8/settings/fields?module=Leads", &t)
        .await
        .json();
    let last = v["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["api_name"] == "Last_Name")
        .unwrap();
    assert_eq!(last["system_mandatory"], true);
    assert_eq!(last["json_type"], "string");
    let d = assert_error(
        &c.get("/crm/v8/settings/fields", &t).await,
        400,
        "REQUIRED_PARAM_MISSING",
    );
    assert_eq!(d["param_name"], "module");
    let d = assert_error(
        &c.get("/crm/v8/settings/fields?module=Nope", &t).await,
        400,
        "INVALID_MODULE",
    );
    assert_eq!(d["param_name"], "module");
    let d = assert_error(
        &c.get("/crm/v8/settings/fields?module=Leads&type=odd", &t)
            .await,
        400,
        "INVALID_DATA",
    );
    assert_eq!(d["param_name"], "type");
    let r = c
        .get("/crm/v8/settings/fields?module=Leads&type=unused", &t)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);

    let v = c
        .get("/crm/v8/settings/layouts?module=Leads", &t)
        .await
        .json();
    assert_eq!(v["layouts"].as_array().unwrap().len(), 2);
    let id = v["layouts"][1]["id"].as_str().unwrap().to_owned();
    let one = c
        .get(&format!("/crm/v8/settings/layouts/{id}?module=Leads"), &t)
        .await
        .json();
    assert_eq!(one["layouts"][0]["name"], "Partner Leads");
    assert_error(
        &c.get(&format!("/crm/v8/settings/layouts/{id}?module=Deals"), &t)
            .await,
        400,
        "INVALID_DATA",
    );
    let v = c
        .get("/crm/v8/settings/related_lists?module=Contacts", &t)
        .await
        .json();
    assert_eq!(v["related_lists"][1]["module"]["api_name"], "Deals");
    let v = c
        .get("/crm/v8/settings/custom_views?module=Leads&per_page=2", &t)
        .await
        .json();
    assert_eq!(v["custom_views"].as_array().unwrap().len(), 2);
    assert_eq!(v["info"]["more_records"], true);
    assert_eq!(v["info"]["default"], v["custom_views"][0]["id"]);
    let v = c.get("/crm/v8/settings/roles", &t).await.json();
    assert_eq!(v["roles"][1]["reporting_to"]["name"], "CEO");
    let v = c.get("/crm/v8/settings/profiles", &t).await.json();
    assert_eq!(v["profiles"][0]["name"], "Administrator");
    let v = c.get("/crm/v8/org", &t).await.json();
    assert_eq!(v["org"][0]["company_name"], "Zylker Simulated Ltd");

    let v = c.get("/crm/v8/users?type=CurrentUser", &t).await.json();
    assert_eq!(ids_of(&v["users"]), [USER0]);
    assert_eq!(v["users"][0]["profile"]["name"], "Administrator");
    let v = c.get("/crm/v8/users?page=2&per_page=100", &t).await.json();
    assert_eq!(v["info"]["count"], 100);
    assert_eq!(v["info"]["more_records"], true);
    let v = c
        .get("/crm/v8/users?type=DeactiveUsers&per_page=200", &t)
        .await
        .json();
    assert!(
        v["users"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["status"] == "inactive")
    );
    let v = c
        .get(
            &format!("/crm/v8/users?ids={USER0},3652397000000186003"),
            &t,
        )
        .await
        .json();
    assert_eq!(ids_of(&v["users"]), [USER0, "3652397000000186003"]);
    assert_error(
        &c.get("/crm/v8/users?type=Bots", &t).await,
        400,
        "INVALID_DATA",
    );
    let v = c.get(&format!("/crm/v8/users/{USER0}"), &t).await.json();
    assert_eq!(v["users"][0]["full_name"], "Chen Yilmaz");
    let r = c.get("/crm/v8/users/1", &t).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    sim.shutdown().await;
}

fn ids_of(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn modules_honour_if_modified_since_in_both_forms() {
    let (sim, c) = start(config()).await;
    let t = c.token().await;
    let path = "/crm/v8/settings/modules";
    // Every bundled module was last modified on 2024-01-17 at the latest.
    for later in ["Wed, 01 May 2024 00:00:00 GMT", "2024-05-01T05:30:00+05:30"] {
        let r = c.get_with(path, &t, &[("if-modified-since", later)]).await;
        assert_eq!(r.status, StatusCode::NOT_MODIFIED, "{later}");
        assert!(r.body.is_empty());
        let r = c
            .get_with(
                &format!("{path}/Leads"),
                &t,
                &[("if-modified-since", later)],
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_MODIFIED, "{later}");
    }
    // Between Leads (Jan 15) and Contacts (Jan 16): the later two are listed.
    let r = c
        .get_with(
            path,
            &t,
            &[("if-modified-since", "2024-01-15T12:00:00+00:00")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["modules"].as_array().unwrap().len(), 2);
    // An unparsable date is ignored.
    let r = c.get_with(path, &t, &[("if-modified-since", "soon")]).await;
    assert_eq!(r.json()["modules"].as_array().unwrap().len(), 3);
    assert_eq!(sim.handle().calls(SimRoute::ListModules), 4);
    assert_eq!(sim.handle().calls(SimRoute::GetModule), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn records_list_pages_sorts_and_projects() {
    let (sim, c) = start(config()).await;
    let t = c.token().await;
    let d = assert_error(&c.get(LEADS, &t).await, 400, "REQUIRED_PARAM_MISSING");
    assert_eq!(d["param_name"], "fields");
    let d = assert_error(
        &c.get("/crm/v8/Nope?fields=Last_Name", &t).await,
        400,
        "INVALID_MODULE",
    );
    assert_eq!(d["resource_path_index"], 0);

    let all = c
        .get(&format!("{LEADS}?fields=Last_Name,Email"), &t)
        .await
        .json();
    assert_eq!(all["data"].as_array().unwrap().len(), 12);
    let first = &all["data"][0];
    assert_eq!(
        first.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["Email", "Last_Name", "id"]
    );
    // Default sort: id descending.
    let got = ids(&all);
    let mut sorted = got.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(got, sorted);
    let info = &all["info"];
    assert_eq!(info["sort_by"], "id");
    assert_eq!(info["sort_order"], "desc");
    assert_eq!(info["more_records"], false);
    assert_eq!(info["next_page_token"], Value::Null);
    // Field order and duplicates do not change the answer; case-insensitive module.
    let same = c
        .get("/crm/v8/leads?fields=Email,Last_Name,Email", &t)
        .await;
    assert_eq!(
        same.body,
        c.get(&format!("{LEADS}?fields=Last_Name,Email"), &t)
            .await
            .body
    );

    // Paging: page/per_page, then page_token.
    let p1 = c
        .get(
            &format!("{LEADS}?fields=Last_Name&per_page=5&sort_order=asc"),
            &t,
        )
        .await
        .json();
    assert_eq!(p1["info"]["count"], 5);
    assert_eq!(p1["info"]["more_records"], true);
    let token = p1["info"]["next_page_token"].as_str().unwrap().to_owned();
    assert!(p1["info"]["page_token_expiry"].is_string());
    let p2 = c
        .get(
            &format!("{LEADS}?fields=Last_Name&per_page=5&sort_order=asc&page_token={token}"),
            &t,
        )
        .await
        .json();
    let by_page = c
        .get(
            &format!("{LEADS}?fields=Last_Name&per_page=5&sort_order=asc&page=2"),
            &t,
        )
        .await
        .json();
    assert_eq!(ids(&p2), ids(&by_page));
    assert_eq!(p2["info"]["page"], 2);
    // The same place gets the same token.
    let again = c
        .get(
            &format!("{LEADS}?fields=Last_Name&per_page=5&sort_order=asc"),
            &t,
        )
        .await
        .json();
    assert_eq!(
        again["info"]["next_page_token"],
        p1["info"]["next_page_token"]
    );
    // A token with altered parameters, or none we issued.
    for q in [
        format!("fields=Last_Name&per_page=6&sort_order=asc&page_token={token}"),
        "fields=Last_Name&page_token=nope".to_owned(),
    ] {
        let d = assert_error(
            &c.get(&format!("{LEADS}?{q}"), &t).await,
            400,
            "TOKEN_BOUND_DATA_MISMATCH",
        );
        assert_eq!(d["param_name"], "page_token");
    }
    let d = assert_error(
        &c.get(
            &format!("{LEADS}?fields=Last_Name&page=2&page_token={token}"),
            &t,
        )
        .await,
        400,
        "AMBIGUITY_DURING_PROCESSING",
    );
    assert_eq!(
        d["ambiguity_due_to"],
        json!([{"param_name": "page"}, {"param_name": "page_token"}])
    );
    let d = assert_error(
        &c.get(&format!("{LEADS}?fields=Last_Name&page=11"), &t)
            .await,
        400,
        "DISCRETE_PAGINATION_LIMIT_EXCEEDED",
    );
    assert_eq!(d["limit"], 2000);
    let r = c
        .get(&format!("{LEADS}?fields=Last_Name&page=10"), &t)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    for bad in [
        "sort_by=Last_Name",
        "sort_order=up",
        "per_page=201",
        "page=0",
        "ids=12x",
    ] {
        assert_error(
            &c.get(&format!("{LEADS}?fields=Last_Name&{bad}"), &t).await,
            400,
            "INVALID_DATA",
        );
    }
    // ids and cvid select; a view's criteria and sort apply; cvid with sort_by is ambiguous.
    let two = c
        .get(
            &format!("{LEADS}?fields=Last_Name&ids=3652397000000010003,3652397000000010001"),
            &t,
        )
        .await
        .json();
    assert_eq!(ids(&two), ["3652397000000010003", "3652397000000010001"]);
    let view = c
        .get(
            &format!("{LEADS}?fields=Lead_Status&cvid=3652397000000093002"),
            &t,
        )
        .await
        .json();
    assert_eq!(view["data"].as_array().unwrap().len(), 6);
    assert!(
        view["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["Lead_Status"] == "Contacted")
    );
    assert_eq!(view["info"]["sort_by"], "Modified_Time");
    assert_error(
        &c.get(&format!("{LEADS}?fields=Last_Name&cvid=1"), &t).await,
        400,
        "INVALID_DATA",
    );
    assert_error(
        &c.get(
            &format!("{LEADS}?fields=Last_Name&cvid=3652397000000093002&sort_by=id"),
            &t,
        )
        .await,
        400,
        "AMBIGUITY_DURING_PROCESSING",
    );
    // If-Modified-Since keeps later records; none → 304.
    let r = c
        .get_with(
            &format!("{LEADS}?fields=Last_Name"),
            &t,
            &[("if-modified-since", "2024-04-10T00:00:00+00:00")],
        )
        .await;
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 3);
    let r = c
        .get_with(
            &format!("{LEADS}?fields=Last_Name"),
            &t,
            &[("if-modified-since", "Sat, 01 Jun 2024 00:00:00 GMT")],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    sim.shutdown().await;
}

#[tokio::test]
async fn search_uses_the_criteria_evaluator_and_zoho_errors() {
    let (sim, c) = start(config()).await;
    let t = c.token().await;
    let search = |q: &str| format!("{LEADS}/search?{q}");
    let v = c
        .get(&search("criteria=(Last_Name:equals:Smith)"), &t)
        .await
        .json();
    assert_eq!(ids(&v), ["3652397000000010006", "3652397000000010001"]);
    assert_eq!(v["info"]["count"], 2);
    // The documented escaping of a comma in a value.
    let v = c
        .get(&search("criteria=(Last_Name:equals:Burns%5C%2CB)"), &t)
        .await
        .json();
    assert_eq!(ids(&v), ["3652397000000010003"]);
    // Spellings the gateway merges select alike here.
    let a = c
        .get(
            &search("criteria=((Company:equals:ABC)and(Lead_Source:in:Web%20Site,Trade%20Show))"),
            &t,
        )
        .await;
    let b = c
        .get(
            &search("criteria=(Lead_Source:in:Trade+Show,Web+Site)+and+(Company:equals:ABC)"),
            &t,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, b.body);
    let v = c.get(&search("email=EXAMPLE.ORG"), &t).await.json();
    assert_eq!(ids(&v), ["3652397000000010004"]);
    let v = c.get(&search("phone=555-0102"), &t).await.json();
    assert_eq!(ids(&v), ["3652397000000010002"]);
    let v = c.get(&search("word=zeta"), &t).await.json();
    assert_eq!(ids(&v), ["3652397000000010005"]);
    // criteria wins over word.
    let v = c
        .get(&search("word=zeta&criteria=(Last_Name:equals:Kim)"), &t)
        .await
        .json();
    assert_eq!(ids(&v), ["3652397000000010008"]);
    let r = c
        .get(&search("criteria=(Last_Name:equals:Nobody)"), &t)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let v = c
        .get(
            &search("criteria=(Last_Name:starts_with:S)&per_page=1&page=2"),
            &t,
        )
        .await
        .json();
    assert_eq!(
        v["info"],
        json!({"per_page": 1, "count": 1, "page": 2, "more_records": true})
    );

    let d = assert_error(&c.get(&search(""), &t).await, 400, "EXPECTED_PARAM_MISSING");
    assert_eq!(
        d["param_names"],
        json!(["criteria", "email", "phone", "word"])
    );
    for bad in [
        "criteria=(Last_Name:equals",
        "criteria=(Last_Name:like:x)",
        "criteria=(Nope:equals:x)",
    ] {
        assert_error(&c.get(&search(bad), &t).await, 400, "INVALID_QUERY");
    }
    let many = vec!["(Last_Name:equals:x)"; 16].join("or");
    assert_error(
        &c.get(&search(&format!("criteria=({many})")), &t).await,
        400,
        "CRITERIA_LIMIT_EXCEEDED",
    );
    for bad in ["word=z", "phone=ab1", "email="] {
        assert_error(&c.get(&search(bad), &t).await, 400, "INVALID_DATA");
    }
    assert_error(
        &c.get(&search("word=zeta&page=11"), &t).await,
        400,
        "LIMIT_REACHED",
    );
    assert_error(
        &c.get("/crm/v8/Nope/search?word=zeta", &t).await,
        400,
        "INVALID_MODULE",
    );
    assert_eq!(sim.handle().calls(SimRoute::SearchRecords), 20);
    sim.shutdown().await;
}

#[tokio::test]
async fn writes_change_later_reads_and_searches() {
    let (sim, c) = start(config()).await;
    let t = c.token().await;
    let find = format!("{LEADS}/search?criteria=(Last_Name:equals:Zulu)");
    assert_eq!(c.get(&find, &t).await.status, StatusCode::NO_CONTENT);
    let r = c
        .send(
            Method::POST,
            LEADS,
            Some(&t),
            Some(json!({"data": [{"Last_Name": "Zulu", "Company": "Zed"}, {"First_Name": "No"}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::MULTI_STATUS);
    let v = r.json();
    assert_eq!(v["data"][0]["code"], "SUCCESS");
    assert_eq!(v["data"][0]["message"], "record added");
    assert_eq!(v["data"][1]["code"], "MANDATORY_NOT_FOUND");
    assert_eq!(v["data"][1]["details"]["api_name"], "Last_Name");
    let id = v["data"][0]["details"]["id"].as_str().unwrap().to_owned();
    assert_eq!(ids(&c.get(&find, &t).await.json()), [id.as_str()]);
    let all = c.get(&format!("{LEADS}?fields=Last_Name"), &t).await.json();
    assert_eq!(all["data"].as_array().unwrap().len(), 13);
    assert_eq!(all["data"][0]["id"], id.as_str());

    let r = c
        .send(
            Method::PUT,
            &format!("{LEADS}/{id}"),
            Some(&t),
            Some(json!({"data": [{"Company": "Zed Corp"}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["data"][0]["message"], "record updated");
    let one = c.get(&format!("{LEADS}/{id}"), &t).await.json();
    assert_eq!(one["data"][0]["Company"], "Zed Corp");
    assert_eq!(one["data"][0]["Last_Name"], "Zulu");
    let r = c
        .send(
            Method::PUT,
            LEADS,
            Some(&t),
            Some(json!({"data": [{"id": id, "Lead_Status": "Contacted"}, {"Company": "x"}, {"id": "1", "Company": "y"}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::MULTI_STATUS);
    let v = r.json();
    assert_eq!(v["data"][1]["code"], "MANDATORY_NOT_FOUND");
    assert_eq!(v["data"][2]["code"], "INVALID_DATA");

    let r = c
        .send(
            Method::DELETE,
            &format!("{LEADS}?ids={id},1"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::MULTI_STATUS);
    assert_eq!(r.json()["data"][0]["message"], "record deleted");
    assert_eq!(c.get(&find, &t).await.status, StatusCode::NO_CONTENT);
    assert_eq!(
        c.get(&format!("{LEADS}/{id}"), &t).await.status,
        StatusCode::NO_CONTENT
    );
    let r = c
        .send(Method::DELETE, &format!("{LEADS}/{id}"), Some(&t), None)
        .await;
    assert_error(&r, 400, "INVALID_DATA");
    let r = c
        .send(
            Method::DELETE,
            "/crm/v8/Deals/3652397000000030001",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_error(
        &c.send(Method::DELETE, LEADS, Some(&t), None).await,
        400,
        "REQUIRED_PARAM_MISSING",
    );
    let h = sim.handle();
    assert_eq!(h.calls(SimRoute::CreateRecords), 1);
    assert_eq!(h.calls(SimRoute::UpdateRecord), 1);
    assert_eq!(h.calls(SimRoute::UpdateRecords), 1);
    assert_eq!(h.calls(SimRoute::DeleteRecords), 2);
    assert_eq!(h.calls(SimRoute::DeleteRecord), 2);
    assert_eq!(h.stats().calls["search_records"], 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn crm_routes_check_their_own_scopes() {
    let (sim, c) = start(config()).await;
    // READ_ONLY has user-group read only; NO_SCOPE has users read only.
    let ro = c.token_for(READ_ONLY).await;
    let users_only = c.token_for(NO_SCOPE).await;
    for path in [
        "/crm/v8/settings/modules",
        "/crm/v8/Leads?fields=Email",
        "/crm/v8/org",
    ] {
        assert_error(&c.get(path, &ro).await, 401, "OAUTH_SCOPE_MISMATCH");
    }
    assert_eq!(
        c.get("/crm/v8/users", &users_only).await.status,
        StatusCode::OK
    );
    assert_error(
        &c.send(
            Method::POST,
            LEADS,
            Some(&users_only),
            Some(json!({"data": [{}]})),
        )
        .await,
        401,
        "OAUTH_SCOPE_MISMATCH",
    );
    sim.shutdown().await;
}
