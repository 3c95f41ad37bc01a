//! Records: list, get, search, create, update, delete (Zoho CRM v8 docs: get-records,
//! search-records, insert-records, update-records, delete-records; the v8 OpenAPI spec for
//! error codes and `info`).
//!
//! # `GET /{module}`
//!
//! `fields` is mandatory (missing or empty → 400 `REQUIRED_PARAM_MISSING`, more than 50 → 400
//! `LIMIT_EXCEEDED`); unknown field names are ignored (**choice**); every answered record has
//! `id` plus the asked fields (`null` when unset). `ids` (at most 100, comma-separated),
//! `cvid` (a custom view of the module: its criteria select, its sort applies), `sort_by`
//! (`id`, `Created_Time`, `Modified_Time`; default `id`), `sort_order` (`asc`, `desc`; default
//! `desc`), `page` (≥ 1), `per_page` (1..=200, default 200), `page_token`. Rules, in order:
//! `page` with `page_token`, or `cvid` with `sort_by` → 400 `AMBIGUITY_DURING_PROCESSING`
//! (`details.ambiguity_due_to[].param_name`); a bad enum → 400 `INVALID_DATA` with
//! `supported_values`; `page × per_page` over 2000 without a token → 400
//! `DISCRETE_PAGINATION_LIMIT_EXCEEDED` (`details.limit` 2000); an unknown `cvid` → 400
//! `INVALID_DATA`; a token that names another listing (parameters added, altered or removed)
//! or no listing → 400 `TOKEN_BOUND_DATA_MISMATCH`. `If-Modified-Since` keeps the records
//! modified after it, and none → 304. An empty page → 204. `info`: `per_page`, `count`,
//! `page`, `more_records`, `sort_by`, `sort_order`, `next_page_token` (set while
//! `more_records`), `previous_page_token` (`null`, **choice**), `page_token_expiry`.
//! Field values in answers are JSON objects with sorted keys, so `fields` order never shows.
//!
//! # `GET /{module}/{id}`
//!
//! `{"data":[record]}` with every field, or the `fields` asked; 204 when no record has the id
//! (**choice**); a malformed id → 400 `INVALID_DATA` (`resource_path_index` 1);
//! `If-Modified-Since` not before the record's `Modified_Time` → 304.
//!
//! # `GET /{module}/search`
//!
//! One of `criteria`, `email`, `phone`, `word`, taken in that priority (the others are
//! ignored); none → 400 `EXPECTED_PARAM_MISSING` (`details.param_names`). `criteria` is read
//! by the simulator's own evaluator ([`crate::criteria`]): malformed → 400 `INVALID_QUERY`,
//! more than 15 conditions → 400 `CRITERIA_LIMIT_EXCEEDED`, a field the module lacks → 400
//! `INVALID_QUERY`. `email` matches email fields containing it, `phone` phone fields whose
//! digits contain its digits (at least 3 characters of `+`, digits, spaces, `-().`), `word`
//! text fields containing it (at least 2 characters); all ASCII-case-insensitive (**choices**).
//! `page`, `per_page` as above; `page × per_page` over 2000 → 400 `LIMIT_REACHED`. Results by
//! `id`, descending; nothing found → 204; `info`: `per_page`, `count`, `page`, `more_records`.
//!
//! # Writes
//!
//! `POST /{module}` and `PUT /{module}` take `{"data":[..]}` (1–100 items); `PUT
//! /{module}/{id}` exactly one item. Each item answers in `data[]`: `SUCCESS` with
//! `details` `{Created_Time, Modified_Time, Created_By, Modified_By, id}` ("record added",
//! "record updated") or an error (`MANDATORY_NOT_FOUND` for a missing mandatory field or
//! update `id`, `INVALID_DATA` for a wrong value type or unknown id, with `api_name` and
//! `json_path`). Status: all succeed 201 (create) / 200 (update); none 400; some 207.
//! `DELETE /{module}?ids=` (required, at most 100) and `DELETE /{module}/{id}` answer
//! "record deleted" per id, unknown ids `INVALID_DATA`. Writes act as the first CRM user.

use std::time::SystemTime;

use hyper::StatusCode;
use serde_json::{Map, Value, json};

use super::super::criteria::{Criteria, CriteriaError};
use super::super::crm::{CrmStore, Module, RecordError, now_zoho, parse_zoho_time};
use super::super::params::Params;
use super::super::response::{ApiError, ErrorCode, Reply, envelope_value};
use super::{State, int_param, is_zoho_id, no_match, page_of, paging, param};

const SORT_FIELDS: [&str; 3] = ["id", "Created_Time", "Modified_Time"];
const SORT_ORDERS: [&str; 2] = ["asc", "desc"];
/// Records `page`/`per_page` can reach (DISCRETE_PAGINATION_LIMIT_EXCEEDED, LIMIT_REACHED).
const PAGE_LIMIT: u64 = 2000;

fn invalid_module() -> ApiError {
    ApiError::bad_request(ErrorCode::InvalidModule, json!({"resource_path_index": 0}))
}

fn invalid_record_id() -> ApiError {
    ApiError::invalid_data(json!({"resource_path_index": 1}))
        .with_message("the id given seems to be invalid")
}

fn ambiguity(a: &str, b: &str) -> ApiError {
    ApiError::bad_request(
        ErrorCode::AmbiguityDuringProcessing,
        json!({"ambiguity_due_to": [{"param_name": a}, {"param_name": b}]}),
    )
}

fn limit_exceeded(name: &str, limit: usize) -> ApiError {
    ApiError::bad_request(
        ErrorCode::LimitExceeded,
        json!({"param_name": name, "limit": limit}),
    )
}

fn enum_param<'a>(
    state: &State,
    q: &'a Params,
    name: &'static str,
    supported: &[&'static str],
) -> Result<Option<&'a str>, ApiError> {
    match param(state, q, name)? {
        Some(v) if !supported.contains(&v) => Err(ApiError::invalid_data(
            json!({"param_name": name, "supported_values": supported}),
        )),
        v => Ok(v),
    }
}

/// Comma-separated items, trimmed, empty ones dropped.
fn list_items(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn id_list(state: &State, q: &Params) -> Result<Option<Vec<String>>, ApiError> {
    let Some(raw) = param(state, q, "ids")? else {
        return Ok(None);
    };
    let ids = list_items(raw);
    if ids.is_empty() || ids.iter().any(|id| !is_zoho_id(id)) {
        return Err(ApiError::invalid_param("ids"));
    }
    if ids.len() > 100 {
        return Err(limit_exceeded("ids", 100));
    }
    Ok(Some(ids))
}

fn record_id(r: &Map<String, Value>) -> &str {
    r.get("id").and_then(Value::as_str).unwrap_or("")
}

/// `record` with `id` and the asked fields (`null` when unset); every field when `None`.
fn project(m: &Module, r: &Map<String, Value>, fields: Option<&[String]>) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), Value::String(record_id(r).to_owned()));
    for f in &m.fields {
        if fields.is_none_or(|fs| fs.contains(&f.api_name)) {
            out.insert(
                f.api_name.clone(),
                r.get(&f.api_name).cloned().unwrap_or(Value::Null),
            );
        }
    }
    Value::Object(out)
}

fn sort_records(records: &mut [&Map<String, Value>], by: &str, desc: bool) {
    let id = |r: &Map<String, Value>| record_id(r).parse::<u64>().unwrap_or(0);
    records.sort_by(|a, b| {
        let ord = if by == "id" {
            id(a).cmp(&id(b))
        } else {
            let t = |r: &Map<String, Value>| {
                r.get(by).and_then(Value::as_str).and_then(parse_zoho_time)
            };
            t(a).cmp(&t(b)).then(id(a).cmp(&id(b)))
        };
        if desc { ord.reverse() } else { ord }
    });
}

fn modified_after(r: &Map<String, Value>, since: SystemTime) -> bool {
    r.get("Modified_Time")
        .and_then(Value::as_str)
        .and_then(parse_zoho_time)
        .is_none_or(|t| t > since)
}

fn not_modified() -> Reply {
    Reply {
        status: StatusCode::NOT_MODIFIED,
        body: None,
    }
}

/// `GET /{module}`.
pub(super) fn list(
    state: &State,
    module: &str,
    q: &Params,
    since: Option<SystemTime>,
) -> Result<Reply, ApiError> {
    let store = state.crm.lock().expect("crm lock");
    let m = store.module(module).ok_or_else(invalid_module)?;
    let mut fields = list_items(param(state, q, "fields")?.unwrap_or(""));
    if fields.is_empty() {
        return Err(ApiError::param_missing("fields"));
    }
    if fields.len() > 50 {
        return Err(limit_exceeded("fields", 50));
    }
    let token = param(state, q, "page_token")?;
    let cvid = param(state, q, "cvid")?;
    if param(state, q, "page")?.is_some() && token.is_some() {
        return Err(ambiguity("page", "page_token"));
    }
    if cvid.is_some() && param(state, q, "sort_by")?.is_some() {
        return Err(ambiguity("cvid", "sort_by"));
    }
    let mut sort_by = enum_param(state, q, "sort_by", &SORT_FIELDS)?.unwrap_or("id");
    let mut sort_order = enum_param(state, q, "sort_order", &SORT_ORDERS)?.unwrap_or("desc");
    let per_page = int_param(state, q, "per_page", 200, 200)?;
    let page = int_param(state, q, "page", 1, u32::MAX)?;
    if token.is_none() && u64::from(page) * u64::from(per_page) > PAGE_LIMIT {
        return Err(ApiError::bad_request(
            ErrorCode::DiscretePaginationLimitExceeded,
            json!({"limit": PAGE_LIMIT}),
        ));
    }
    let ids = id_list(state, q)?;
    let view = match cvid {
        None => None,
        Some(id) => Some(
            m.custom_views
                .iter()
                .find(|c| c.id == id)
                .ok_or_else(|| ApiError::invalid_param("cvid"))?,
        ),
    };
    let view_criteria = view
        .and_then(|v| v.criteria.as_deref())
        .map(|c| Criteria::parse(c).expect("bundled view criteria parse"));
    if let Some(v) = view {
        sort_by = v.sort_by.as_deref().unwrap_or(sort_by);
        sort_order = v.sort_order.as_deref().unwrap_or(sort_order);
    }
    let mut selected: Vec<&Map<String, Value>> = m
        .records
        .iter()
        .filter(|r| {
            ids.as_ref()
                .is_none_or(|ids| ids.iter().any(|id| id == record_id(r)))
        })
        .filter(|r| view_criteria.as_ref().is_none_or(|c| c.matches(r)))
        .filter(|r| since.is_none_or(|t| modified_after(r, t)))
        .collect();
    if since.is_some() && selected.is_empty() {
        return Ok(not_modified());
    }
    sort_records(&mut selected, sort_by, sort_order == "desc");
    fields.sort();
    fields.dedup();
    let mut sorted_ids = ids.clone().unwrap_or_default();
    sorted_ids.sort();
    let bound = format!(
        "{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{sort_by}\u{1f}{sort_order}\u{1f}{per_page}\u{1f}{:?}",
        m.api_name,
        fields.join(","),
        sorted_ids.join(","),
        cvid.unwrap_or(""),
        since,
    );
    let mut tokens = state.page_tokens.lock().expect("token lock");
    let offset = match token {
        Some(t) => match tokens.resolve(t) {
            Some((b, offset)) if b == bound => offset,
            _ => {
                return Err(ApiError::bad_request(
                    ErrorCode::TokenBoundDataMismatch,
                    json!({"param_name": "page_token"}),
                ));
            }
        },
        None => (page as usize - 1) * per_page as usize,
    };
    if offset >= selected.len() {
        return Ok(no_match(state, || json!({"data": [], "info": {}})));
    }
    let end = (offset + per_page as usize).min(selected.len());
    let more = end < selected.len();
    let (next, expiry) = if more {
        let (t, e) = tokens.issue(&bound, end);
        (Some(t), Some(e))
    } else {
        (None, None)
    };
    let data: Vec<Value> = selected[offset..end]
        .iter()
        .map(|r| project(m, r, Some(&fields)))
        .collect();
    let info = json!({
        "per_page": per_page,
        "next_page_token": next,
        "count": end - offset,
        "sort_by": sort_by,
        "page": offset / per_page as usize + 1,
        "previous_page_token": null,
        "page_token_expiry": expiry,
        "sort_order": sort_order,
        "more_records": more,
    });
    Ok(Reply::json(
        StatusCode::OK,
        &json!({"data": data, "info": info}),
    ))
}

/// `GET /{module}/{id}`.
pub(super) fn get(
    state: &State,
    module: &str,
    id: &str,
    q: &Params,
    since: Option<SystemTime>,
) -> Result<Reply, ApiError> {
    let store = state.crm.lock().expect("crm lock");
    let m = store.module(module).ok_or_else(invalid_module)?;
    if !is_zoho_id(id) {
        return Err(invalid_record_id());
    }
    let fields = param(state, q, "fields")?.map(list_items);
    let Some(r) = m.records.iter().find(|r| record_id(r) == id) else {
        return Ok(Reply::no_content());
    };
    if since.is_some_and(|t| !modified_after(r, t)) {
        return Ok(not_modified());
    }
    let record = project(m, r, fields.as_deref().filter(|f| !f.is_empty()));
    Ok(Reply::json(StatusCode::OK, &json!({"data": [record]})))
}

fn criteria_error(e: CriteriaError) -> ApiError {
    let code = match e {
        CriteriaError::TooManyConditions => ErrorCode::CriteriaLimitExceeded,
        _ => ErrorCode::InvalidQuery,
    };
    let details = match &e {
        CriteriaError::UnknownOperator { api_name } => {
            json!({"api_name": api_name, "reason": "invalid operator found"})
        }
        CriteriaError::UnknownField { api_name } => {
            json!({"api_name": api_name, "reason": "invalid field found"})
        }
        CriteriaError::TooManyValues { api_name } => json!({"param_name": api_name}),
        CriteriaError::Malformed | CriteriaError::TooManyConditions => json!({}),
    };
    debug_assert_eq!(code.as_str(), e.code());
    ApiError::bad_request(code, details).with_message(e.to_string())
}

/// What a search looks for.
enum Search {
    Criteria(Criteria),
    Email(String),
    Phone(String),
    Word(String),
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

impl Search {
    fn matches(&self, m: &Module, r: &Map<String, Value>) -> bool {
        let text_of = |types: &[&str], f: &dyn Fn(&str) -> bool| {
            m.fields
                .iter()
                .filter(|fd| types.contains(&fd.data_type.as_str()))
                .filter_map(|fd| r.get(&fd.api_name)?.as_str())
                .any(f)
        };
        match self {
            Search::Criteria(c) => c.matches(r),
            Search::Email(e) => text_of(&["email"], &|v| v.to_ascii_lowercase().contains(e)),
            Search::Phone(p) => text_of(&["phone"], &|v| digits(v).contains(p.as_str())),
            Search::Word(w) => text_of(&["text", "email", "phone", "picklist"], &|v| {
                v.to_ascii_lowercase().contains(w)
            }),
        }
    }
}

fn search_param(state: &State, q: &Params, m: &Module) -> Result<Search, ApiError> {
    if let Some(raw) = param(state, q, "criteria")? {
        let c = Criteria::parse(raw).map_err(criteria_error)?;
        c.check_fields(&|f| f == "id" || m.fields.iter().any(|x| x.api_name == f))
            .map_err(criteria_error)?;
        return Ok(Search::Criteria(c));
    }
    if let Some(raw) = param(state, q, "email")? {
        if raw.trim().is_empty() {
            return Err(ApiError::invalid_param("email"));
        }
        return Ok(Search::Email(raw.trim().to_ascii_lowercase()));
    }
    if let Some(raw) = param(state, q, "phone")? {
        let shape_ok = raw.len() >= 3
            && raw
                .trim_start_matches('+')
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '(' | ')' | '.'));
        if !shape_ok || digits(raw).is_empty() {
            return Err(ApiError::invalid_param("phone"));
        }
        return Ok(Search::Phone(digits(raw)));
    }
    if let Some(raw) = param(state, q, "word")? {
        if raw.trim().chars().count() < 2 {
            return Err(ApiError::invalid_param("word"));
        }
        return Ok(Search::Word(raw.trim().to_ascii_lowercase()));
    }
    Err(ApiError::bad_request(
        ErrorCode::ExpectedParamMissing,
        json!({"param_names": ["criteria", "email", "phone", "word"]}),
    ))
}

/// `GET /{module}/search`.
pub(super) fn search(state: &State, module: &str, q: &Params) -> Result<Reply, ApiError> {
    let store = state.crm.lock().expect("crm lock");
    let m = store.module(module).ok_or_else(invalid_module)?;
    let search = search_param(state, q, m)?;
    let paging = paging(state, q)?;
    if u64::from(paging.page) * u64::from(paging.per_page) > PAGE_LIMIT {
        return Err(ApiError::bad_request(
            ErrorCode::LimitReached,
            json!({"limit": PAGE_LIMIT.to_string()}),
        ));
    }
    let fields = param(state, q, "fields")?
        .map(list_items)
        .filter(|f| !f.is_empty());
    let mut found: Vec<&Map<String, Value>> =
        m.records.iter().filter(|r| search.matches(m, r)).collect();
    sort_records(&mut found, "id", true);
    let Some((items, info)) = page_of(&found, &paging) else {
        return Ok(no_match(state, || json!({"data": [], "info": {}})));
    };
    let data: Vec<Value> = items
        .iter()
        .map(|r| project(m, r, fields.as_deref()))
        .collect();
    Ok(Reply::json(
        StatusCode::OK,
        &json!({"data": data, "info": info}),
    ))
}

// ---------- writes ----------

/// Refuses a write to an unknown module before its body is read.
pub(super) fn known_module(state: &State, module: &str) -> Result<(), ApiError> {
    let store = state.crm.lock().expect("crm lock");
    store.module(module).map(|_| ()).ok_or_else(invalid_module)
}

/// Refuses a write to an unknown module or record before its body is read.
pub(super) fn known_record(state: &State, module: &str, id: &str) -> Result<(), ApiError> {
    let store = state.crm.lock().expect("crm lock");
    let m = store.module(module).ok_or_else(invalid_module)?;
    if is_zoho_id(id) && m.records.iter().any(|r| record_id(r) == id) {
        Ok(())
    } else {
        Err(invalid_record_id())
    }
}

fn data_items(body: &Value) -> Result<&Vec<Value>, ApiError> {
    match body.get("data") {
        Some(Value::Array(items)) if items.len() > 100 => Err(limit_exceeded("data", 100)),
        Some(Value::Array(items)) if !items.is_empty() => Ok(items),
        Some(_) => Err(ApiError::invalid_data(
            json!({"api_name": "data", "json_path": "$.data"}),
        )),
        None => Err(
            ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::MandatoryNotFound)
                .with_details(json!({"api_name": "data", "json_path": "$.data"})),
        ),
    }
}

fn current_user(store: &CrmStore) -> Value {
    let u = &store.users[0];
    json!({"name": u.full_name, "id": u.id, "email": u.email})
}

fn record_error(e: RecordError, path: &str, id: Option<&str>) -> Value {
    let err = match e {
        RecordError::Mandatory(f) => {
            ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::MandatoryNotFound)
                .with_details(json!({"api_name": f, "json_path": format!("{path}.{f}")}))
        }
        RecordError::BadValue(f) => {
            ApiError::invalid_data(json!({"api_name": f, "json_path": format!("{path}.{f}")}))
        }
        RecordError::NotFound => ApiError::invalid_data(
            json!({"api_name": "id", "id": id, "json_path": format!("{path}.id")}),
        )
        .with_message("the id given seems to be invalid"),
    };
    err.envelope()
}

fn success(record: &Map<String, Value>, message: &str) -> Value {
    let mut details = Map::new();
    for k in [
        "Modified_Time",
        "Modified_By",
        "Created_Time",
        "id",
        "Created_By",
    ] {
        details.insert(k.into(), record.get(k).cloned().unwrap_or(Value::Null));
    }
    envelope_value("SUCCESS", &Value::Object(details), message, "success")
}

fn batch_status(ok: usize, total: usize, all_ok: StatusCode) -> StatusCode {
    match ok {
        0 => StatusCode::BAD_REQUEST,
        n if n == total => all_ok,
        _ => StatusCode::MULTI_STATUS,
    }
}

/// `POST /{module}`.
pub(super) fn create(state: &State, module: &str, body: &Value) -> Result<Reply, ApiError> {
    let items = data_items(body)?;
    let now = now_zoho();
    let mut store = state.crm.lock().expect("crm lock");
    let by = current_user(&store);
    let mut ok = 0;
    let results: Vec<Value> = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let path = format!("$.data[{i}]");
            let Value::Object(fields) = item else {
                return ApiError::invalid_data(json!({"json_path": path})).envelope();
            };
            match store.create_record(module, fields, &now, &by) {
                Ok(r) => {
                    ok += 1;
                    success(&r, "record added")
                }
                Err(e) => record_error(e, &path, None),
            }
        })
        .collect();
    Ok(Reply::json(
        batch_status(ok, items.len(), StatusCode::CREATED),
        &json!({ "data": results }),
    ))
}

/// `PUT /{module}` (each item names its `id`) or `PUT /{module}/{id}` (one item).
pub(super) fn update(
    state: &State,
    module: &str,
    path_id: Option<&str>,
    body: &Value,
) -> Result<Reply, ApiError> {
    let items = data_items(body)?;
    if path_id.is_some() && items.len() != 1 {
        return Err(ApiError::invalid_data(
            json!({"api_name": "data", "reason": "exactly one item expected"}),
        ));
    }
    let now = now_zoho();
    let mut store = state.crm.lock().expect("crm lock");
    let by = current_user(&store);
    let mut ok = 0;
    let results: Vec<Value> = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let path = format!("$.data[{i}]");
            let Value::Object(fields) = item else {
                return ApiError::invalid_data(json!({"json_path": path})).envelope();
            };
            let id = match path_id {
                Some(id) => id.to_owned(),
                None => match fields.get("id").and_then(Value::as_str) {
                    Some(id) => id.to_owned(),
                    None => {
                        return ApiError::new(
                            StatusCode::BAD_REQUEST,
                            ErrorCode::MandatoryNotFound,
                        )
                        .with_details(json!({"api_name": "id", "json_path": format!("{path}.id")}))
                        .envelope();
                    }
                },
            };
            match store.update_record(module, &id, fields, &now, &by) {
                Ok(r) => {
                    ok += 1;
                    success(&r, "record updated")
                }
                Err(e) => record_error(e, &path, Some(&id)),
            }
        })
        .collect();
    Ok(Reply::json(
        batch_status(ok, items.len(), StatusCode::OK),
        &json!({ "data": results }),
    ))
}

fn deleted(id: &str) -> Value {
    envelope_value("SUCCESS", &json!({"id": id}), "record deleted", "success")
}

/// `DELETE /{module}?ids=`.
pub(super) fn delete_many(state: &State, module: &str, q: &Params) -> Result<Reply, ApiError> {
    known_module(state, module)?;
    let ids = id_list(state, q)?.ok_or_else(|| ApiError::param_missing("ids"))?;
    let mut store = state.crm.lock().expect("crm lock");
    let mut ok = 0;
    let results: Vec<Value> = ids
        .iter()
        .map(|id| match store.delete_record(module, id) {
            Ok(()) => {
                ok += 1;
                deleted(id)
            }
            Err(_) => ApiError::invalid_data(json!({"id": id}))
                .with_message("record not deleted")
                .envelope(),
        })
        .collect();
    Ok(Reply::json(
        batch_status(ok, ids.len(), StatusCode::OK),
        &json!({ "data": results }),
    ))
}

/// `DELETE /{module}/{id}`.
pub(super) fn delete_one(state: &State, module: &str, id: &str) -> Result<Reply, ApiError> {
    known_record(state, module, id)?;
    state
        .crm
        .lock()
        .expect("crm lock")
        .delete_record(module, id)
        .map_err(|_| invalid_record_id())?;
    Ok(Reply::json(
        StatusCode::OK,
        &json!({ "data": [deleted(id)] }),
    ))
}
