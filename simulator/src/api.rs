//! The API request path: every `/crm/{v}/…` route (see `route` for the table). User groups
//! are served here; the other metadata (`settings/modules`, `fields`, `layouts`,
//! `related_lists`, `custom_views`, `roles`, `profiles`, `users`, `org`) by `api/meta.rs`,
//! records (list, get, search, create, update, delete) by `api/records.rs`.
//!
//! Steps, in order, each of which may answer early:
//!
//! 1. Count the request and mark it in flight (done by the caller / here).
//! 2. Look up the presented token; if valid, take one of its owner's
//!    `concurrency_limit` slots (none free → 429 `TOO_MANY_REQUESTS` after
//!    the fault and latency steps).
//!    The call is charged one API credit here (`api_credit_limit`; used up →
//!    429 `TOO_MANY_REQUESTS` after the fault and latency steps).
//! 3. Injected faults ([`super::SimHandle::reset_next`], `hang_next`, `fail_next`).
//! 4. Injected latency (the request keeps its slot meanwhile).
//! 5. Route: unknown path → 404 `INVALID_URL_PATTERN`; wrong method → 400
//!    `INVALID_REQUEST_METHOD` (before auth, **choice**).
//! 6. Auth: no `Authorization` header → 401 `AUTHENTICATION_FAILURE`
//!    (**choice**; Zoho is seen sending it for bad tokens too); a scheme other
//!    than `Zoho-oauthtoken` (e.g. `Bearer`) or an unknown, expired or revoked
//!    token → 401 `INVALID_TOKEN` "invalid oauth token".
//! 7. Scope: user-group reads need `ZohoCRM.settings.user_groups.READ`, `.ALL` or
//!    `ZohoCRM.settings.ALL`; writes need `ZohoCRM.settings.user_groups.ALL`,
//!    `ZohoCRM.settings.ALL` or the operation's own scope (`.CREATE`,
//!    `.UPDATE`, `.DELETE`); the other routes likewise with their own family
//!    (`ApiTarget::accepted_scopes`); otherwise 401 `OAUTH_SCOPE_MISMATCH`.
//!    Scope names compare ASCII-case-insensitively.
//! 8. Inactive user → 403 `INACTIVE_USER`.
//! 9. The route handler.
//!
//! # `associated_users_count`
//!
//! `page` (default 1, ≥ 1), `per_page` (default 200, 1..=200): decimal
//! digits only (leading zeros allowed, so `page=01` is page 1); anything else
//! → 400 `INVALID_DATA` with `details.param_name`. `filters`: see
//! [`super::filters`]; an empty `filters=` is invalid JSON → 400. Groups are
//! listed in creation order; `count` includes inactive users; `info.per_page`
//! echoes the requested page size and `info.count` is the number of items on
//! this page. Nothing to return → [`super::NoMatch`].
//!
//! # Writes
//!
//! `POST .../user_groups` with `{"user_groups":[{"name","description",
//! "sources":[{"type":"users","source":{"id":".."}}]}]}` creates groups
//! (201 when all succeed, 207 when some do, 400 when none; one result per
//! item). `PUT .../user_groups/{id}` takes exactly one item; present fields
//! replace the old ones (`sources` replaces the whole member list).
//! `DELETE .../user_groups/{id}` deletes at once. Ids that are not 1–19 digits
//! or name no group → 400 `INVALID_DATA` with `details.resource_path_index` 2.
//! Names must be non-blank strings, unique byte-exactly (else 400
//! `DUPLICATE_DATA`); a missing name on create → `MANDATORY_NOT_FOUND`.
//! Bodies over `max_body_bytes` → 413 `REQUEST_ENTITY_TOO_LARGE`.

use std::sync::Arc;
use std::time::SystemTime;

use hyper::body::Incoming;
use hyper::header::{self, HeaderMap};
use hyper::{Request, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::config::NoMatch;
use super::crm::parse_if_modified_since;
use super::dataset::{is_zoho_id, zoho_time};
use super::filters::{self, Filter};
use super::handle::{Credit, Fault, State};
use super::oauth::AccessGrant;
use super::params::Params;
use super::response::{
    ApiError, ErrorCode, Reply, ResponseMeta, SimResponse, api_response, envelope_value,
};
use super::route::{ApiTarget, Target};
use super::server::{BodyError, Dropped, read_body};
use super::store::{GroupPatch, GroupRec, WriteError};

mod meta;
mod records;

/// The `Authorization` header as presented.
enum Auth {
    Missing,
    WrongScheme,
    Token(String),
}

impl Auth {
    fn from_headers(headers: &HeaderMap) -> Auth {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Auth::Missing;
        };
        let Ok(value) = value.to_str() else {
            return Auth::WrongScheme;
        };
        match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("Zoho-oauthtoken") => {
                Auth::Token(token.trim().to_string())
            }
            _ => Auth::WrongScheme,
        }
    }
}

/// Serves one API request (everything but the token endpoint and control).
///
/// # Errors
///
/// [`Dropped`] when a reset or hang fault (or shutdown) ends the request
/// without a response; hyper then closes the connection.
pub(crate) async fn handle(
    state: Arc<State>,
    target: Target,
    req: Request<Incoming>,
) -> Result<SimResponse, Dropped> {
    let _flight = state.enter_flight();
    let auth = Auth::from_headers(req.headers());
    let grant = match &auth {
        Auth::Token(t) => state
            .tokens
            .lock()
            .expect("token lock")
            .lookup(t, Instant::now()),
        Auth::Missing | Auth::WrongScheme => None,
    };
    let token_expiry = grant.as_ref().map(|g| g.expires_at);
    let (slot, over_limit) = match &grant {
        Some(g) => match state.acquire_slot(&g.owner) {
            Some(slot) => (Some(slot), false),
            None => (None, true),
        },
        None => (None, false),
    };
    let credit = (grant.is_some() && !over_limit).then(|| state.charge_credit());
    let (fault, latency) = {
        let mut faults = state.faults.lock().expect("fault lock");
        (faults.take(), faults.latency)
    };
    match fault {
        Some(Fault::Reset) => return Err(Dropped),
        Some(Fault::Hang) => {
            state.cancel.cancelled().await;
            return Err(Dropped);
        }
        Some(Fault::Fail { .. }) | None => {}
    }
    if !latency.is_zero() {
        tokio::select! {
            () = tokio::time::sleep(latency) => {}
            () = state.cancel.cancelled() => return Err(Dropped),
        }
    }
    let result = match fault {
        Some(Fault::Fail {
            status,
            retry_after,
        }) => Err(injected(status, retry_after)),
        _ if over_limit => Err(too_many_requests(&state)),
        _ if credit == Some(Credit::Exhausted) => Err(credits_exhausted(&state)),
        _ => serve(&state, target, auth, grant, req).await,
    };
    drop(slot);
    let (reply, retry_after) = match result {
        Ok(reply) => (reply, None),
        Err(e) => {
            let retry_after = e.retry_after;
            (Reply::from(e), retry_after)
        }
    };
    let credits_remaining = match (credit, state.config.api_credit_limit) {
        (Some(Credit::Charged { remaining: Some(r) }), Some(limit)) if (limit - r) * 2 >= limit => {
            Some(r)
        }
        (Some(Credit::Exhausted), _) => Some(0),
        _ => None,
    };
    Ok(api_response(
        reply,
        ResponseMeta {
            token_expiry,
            retry_after,
            credits_remaining,
        },
    ))
}

fn injected(status: u16, retry_after: Option<u32>) -> ApiError {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut e = ApiError::new(status, ErrorCode::for_status(status));
    e.retry_after = retry_after;
    e
}

fn credits_exhausted(state: &State) -> ApiError {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::TooManyRequests)
        .with_message("the API credit limit for the last 24 hours is used up")
        .with_details(json!({"api_credit_limit": state.config.api_credit_limit}))
}

fn too_many_requests(state: &State) -> ApiError {
    let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::TooManyRequests)
        .with_message("the number of concurrent requests exceeded the limit")
        .with_details(json!({"concurrency_limit": state.config.concurrency_limit}));
    e.retry_after = state.config.concurrency_retry_after;
    e
}

async fn serve(
    state: &State,
    target: Target,
    auth: Auth,
    grant: Option<AccessGrant>,
    req: Request<Incoming>,
) -> Result<Reply, ApiError> {
    let api = match target {
        Target::Api(api) => api,
        Target::WrongMethod => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidRequestMethod,
            ));
        }
        Target::NotFound | Target::Token | Target::Control(_) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::InvalidUrlPattern,
            ));
        }
    };
    let grant = authenticate(&auth, grant)?;
    authorize(&grant, &api)?;
    if !grant.user_active {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::InactiveUser,
        ));
    }
    let query = Params::parse(req.uri().query().unwrap_or("").as_bytes());
    let ims = req
        .headers()
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_if_modified_since);
    match api {
        ApiTarget::Modules => meta::modules(state, &query, ims),
        ApiTarget::Module(name) => meta::module(state, &name, ims),
        ApiTarget::Fields => meta::fields(state, &query),
        ApiTarget::Layouts => meta::layouts(state, &query, None),
        ApiTarget::Layout(id) => meta::layouts(state, &query, Some(&id)),
        ApiTarget::RelatedLists => meta::related_lists(state, &query),
        ApiTarget::CustomViews => meta::custom_views(state, &query),
        ApiTarget::Roles => meta::roles(state),
        ApiTarget::Profiles => meta::profiles(state),
        ApiTarget::Users => meta::users(state, &query),
        ApiTarget::User(id) => meta::user(state, &id),
        ApiTarget::Org => meta::org(state),
        ApiTarget::Records(m) => records::list(state, &m, &query, ims),
        ApiTarget::Record(m, id) => records::get(state, &m, &id, &query, ims),
        ApiTarget::Search(m) => records::search(state, &m, &query),
        ApiTarget::CreateRecords(m) => {
            records::known_module(state, &m)?;
            let body = read_json(state, req).await?;
            records::create(state, &m, &body)
        }
        ApiTarget::UpdateRecords(m) => {
            records::known_module(state, &m)?;
            let body = read_json(state, req).await?;
            records::update(state, &m, None, &body)
        }
        ApiTarget::UpdateRecord(m, id) => {
            records::known_record(state, &m, &id)?;
            let body = read_json(state, req).await?;
            records::update(state, &m, Some(&id), &body)
        }
        ApiTarget::DeleteRecords(m) => records::delete_many(state, &m, &query),
        ApiTarget::DeleteRecord(m, id) => records::delete_one(state, &m, &id),
        ApiTarget::AssociatedUsersCount => associated_users_count(state, &query),
        ApiTarget::List => list_groups(state, &query),
        ApiTarget::Get(id) => get_group(state, &id),
        ApiTarget::Create => {
            let body = read_json(state, req).await?;
            create_groups(state, &body)
        }
        ApiTarget::Update(id) => {
            existing_id(state, &id)?;
            let body = read_json(state, req).await?;
            update_group(state, &id, &body)
        }
        ApiTarget::Delete(id) => delete_group(state, &id),
    }
}

fn authenticate(auth: &Auth, grant: Option<AccessGrant>) -> Result<AccessGrant, ApiError> {
    match (auth, grant) {
        (Auth::Token(_), Some(grant)) => Ok(grant),
        (Auth::Missing, _) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::AuthenticationFailure,
        )),
        (Auth::WrongScheme | Auth::Token(_), _) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidToken,
        )),
    }
}

fn authorize(grant: &AccessGrant, api: &ApiTarget) -> Result<(), ApiError> {
    let accepted = api.accepted_scopes();
    if grant
        .scopes
        .iter()
        .any(|s| accepted.iter().any(|a| a.eq_ignore_ascii_case(s)))
    {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::OauthScopeMismatch,
        ))
    }
}

// ---------- query parameters ----------

fn param<'a>(
    state: &State,
    q: &'a Params,
    name: &'static str,
) -> Result<Option<&'a str>, ApiError> {
    q.get(name, state.config.duplicate_params).map_err(|_| {
        ApiError::invalid_data(json!({"param_name": name, "reason": "parameter repeated"}))
    })
}

fn int_param(
    state: &State,
    q: &Params,
    name: &'static str,
    default: u32,
    max: u32,
) -> Result<u32, ApiError> {
    let Some(raw) = param(state, q, name)? else {
        return Ok(default);
    };
    let parsed = if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        raw.parse::<u32>().ok()
    } else {
        None
    };
    match parsed {
        Some(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::invalid_data(json!({
            "param_name": name,
            "expected_data_type": "integer",
            "range": {"from": 1, "to": max},
        }))),
    }
}

struct Paging {
    page: u32,
    per_page: u32,
}

fn paging(state: &State, q: &Params) -> Result<Paging, ApiError> {
    Ok(Paging {
        page: int_param(state, q, "page", 1, u32::MAX)?,
        per_page: int_param(state, q, "per_page", 200, 200)?,
    })
}

fn filter_param(state: &State, q: &Params) -> Result<Option<Filter>, ApiError> {
    let Some(raw) = param(state, q, "filters")? else {
        return Ok(None);
    };
    let filter = filters::parse(raw).map_err(|e| {
        let mut details = json!({"param_name": "filters", "reason": e.to_string()});
        if let Some(path) = e.json_path() {
            details["json_path"] = json!(path);
        }
        ApiError::invalid_data(details)
    })?;
    if let Some(max) = state.config.max_filter_criteria
        && filter.criteria_count() > max
    {
        return Err(ApiError::invalid_data(json!({
            "param_name": "filters",
            "reason": "too many criteria",
            "maximum": max,
        })));
    }
    Ok(Some(filter))
}

/// `info` block of list answers.
#[derive(Serialize)]
struct Info {
    per_page: u32,
    count: usize,
    page: u32,
    more_records: bool,
}

/// The page of `items` asked for, or `None` when it is empty.
fn page_of<'a, T>(items: &'a [T], p: &Paging) -> Option<(&'a [T], Info)> {
    let start = (p.page as usize - 1).checked_mul(p.per_page as usize)?;
    if start >= items.len() {
        return None;
    }
    let end = (start + p.per_page as usize).min(items.len());
    Some((
        &items[start..end],
        Info {
            per_page: p.per_page,
            count: end - start,
            page: p.page,
            more_records: end < items.len(),
        },
    ))
}

/// The answer when a page has nothing in it: 204, or 200 with `empty()`, per `no_match`.
fn no_match<T: serde::Serialize>(state: &State, empty: impl FnOnce() -> T) -> Reply {
    match state.config.no_match {
        NoMatch::NoContent => Reply::no_content(),
        NoMatch::EmptyList => Reply::json(StatusCode::OK, &empty()),
    }
}

fn empty_info(p: &Paging) -> Info {
    Info {
        per_page: p.per_page,
        count: 0,
        page: p.page,
        more_records: false,
    }
}

fn matching<'a>(
    state: &State,
    groups: &'a [GroupRec],
    filter: Option<&Filter>,
) -> Vec<&'a GroupRec> {
    let cs = state.config.equal_case_sensitive;
    groups
        .iter()
        .filter(|g| filter.is_none_or(|f| f.matches(&g.name, &g.description, cs)))
        .collect()
}

// ---------- associated_users_count ----------

#[derive(Serialize)]
struct CountPage<'a> {
    associated_users_count: Vec<CountItem<'a>>,
    info: Info,
}

#[derive(Serialize)]
struct CountItem<'a> {
    user_group: GroupRef<'a>,
    count: usize,
}

#[derive(Serialize)]
struct GroupRef<'a> {
    name: &'a str,
    id: &'a str,
}

fn associated_users_count(state: &State, q: &Params) -> Result<Reply, ApiError> {
    let paging = paging(state, q)?;
    let filter = filter_param(state, q)?;
    let store = state.store.lock().expect("store lock");
    let matched = matching(state, store.groups(), filter.as_ref());
    let Some((items, info)) = page_of(&matched, &paging) else {
        return Ok(no_match(state, || CountPage {
            associated_users_count: Vec::new(),
            info: empty_info(&paging),
        }));
    };
    let body = CountPage {
        associated_users_count: items
            .iter()
            .map(|g| CountItem {
                user_group: GroupRef {
                    name: &g.name,
                    id: &g.id,
                },
                count: g.members.len(),
            })
            .collect(),
        info,
    };
    Ok(Reply::json(StatusCode::OK, &body))
}

// ---------- reads of groups ----------

#[derive(Serialize)]
struct GroupOut<'a> {
    id: &'a str,
    name: &'a str,
    /// `null` when the description is empty.
    description: Option<&'a str>,
    created_time: &'a str,
    modified_time: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sources_count: Option<SourcesCount>,
}

#[derive(Serialize)]
struct SourcesCount {
    users: usize,
}

impl<'a> GroupOut<'a> {
    fn new(g: &'a GroupRec, with_counts: bool) -> Self {
        GroupOut {
            id: &g.id,
            name: &g.name,
            description: (!g.description.is_empty()).then_some(g.description.as_str()),
            created_time: &g.created_time,
            modified_time: &g.modified_time,
            sources_count: with_counts.then_some(SourcesCount {
                users: g.members.len(),
            }),
        }
    }
}

#[derive(Serialize)]
struct GroupsPage<'a> {
    user_groups: Vec<GroupOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<Info>,
}

/// `GET .../user_groups`: `page`, `per_page`, `filters` as for the count
/// endpoint; `include=sources_count` adds `sources_count.users`.
fn list_groups(state: &State, q: &Params) -> Result<Reply, ApiError> {
    let paging = paging(state, q)?;
    let filter = filter_param(state, q)?;
    let with_counts =
        param(state, q, "include")?.is_some_and(|v| v.split(',').any(|s| s == "sources_count"));
    let store = state.store.lock().expect("store lock");
    let matched = matching(state, store.groups(), filter.as_ref());
    let Some((items, info)) = page_of(&matched, &paging) else {
        return Ok(no_match(state, || GroupsPage {
            user_groups: Vec::new(),
            info: Some(empty_info(&paging)),
        }));
    };
    let body = GroupsPage {
        user_groups: items
            .iter()
            .map(|g| GroupOut::new(g, with_counts))
            .collect(),
        info: Some(info),
    };
    Ok(Reply::json(StatusCode::OK, &body))
}

fn existing_id(state: &State, id: &str) -> Result<(), ApiError> {
    if is_zoho_id(id) && state.store.lock().expect("store lock").get(id).is_some() {
        Ok(())
    } else {
        Err(ApiError::invalid_id())
    }
}

/// `GET .../user_groups/{id}`: `{"user_groups":[group]}` with `sources_count`.
fn get_group(state: &State, id: &str) -> Result<Reply, ApiError> {
    if !is_zoho_id(id) {
        return Err(ApiError::invalid_id());
    }
    let store = state.store.lock().expect("store lock");
    let group = store.get(id).ok_or_else(ApiError::invalid_id)?;
    Ok(Reply::json(
        StatusCode::OK,
        &GroupsPage {
            user_groups: vec![GroupOut::new(group, true)],
            info: None,
        },
    ))
}

// ---------- writes ----------

async fn read_json(state: &State, req: Request<Incoming>) -> Result<Value, ApiError> {
    let limit = state.config.max_body_bytes;
    let body = match read_body(req.into_body(), limit).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::RequestEntityTooLarge,
            )
            .with_details(json!({"limit_bytes": limit})));
        }
        Err(BodyError::Broken) => {
            return Err(ApiError::invalid_data(json!({"reason": "incomplete body"})));
        }
    };
    serde_json::from_slice(&body).map_err(|e| {
        ApiError::invalid_data(json!({"reason": format!("body is not valid json: {e}")}))
    })
}

fn items(body: &Value) -> Result<&Vec<Value>, ApiError> {
    match body.get("user_groups") {
        Some(Value::Array(items)) if !items.is_empty() => Ok(items),
        Some(_) => Err(ApiError::invalid_data(
            json!({"api_name": "user_groups", "json_path": "$.user_groups"}),
        )),
        None => Err(
            ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::MandatoryNotFound)
                .with_details(json!({"api_name": "user_groups", "json_path": "$.user_groups"})),
        ),
    }
}

fn parse_item(item: &Value, path: &str, require_name: bool) -> Result<GroupPatch, ApiError> {
    let Value::Object(obj) = item else {
        return Err(ApiError::invalid_data(json!({"json_path": path})));
    };
    let bad = |api_name: &str, sub: &str| {
        ApiError::invalid_data(json!({"api_name": api_name, "json_path": format!("{path}.{sub}")}))
    };
    let name = match obj.get("name") {
        None | Some(Value::Null) if require_name => {
            return Err(
                ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::MandatoryNotFound)
                    .with_details(json!({"api_name": "name", "json_path": format!("{path}.name")})),
            );
        }
        None => None,
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        Some(_) => return Err(bad("name", "name")),
    };
    let description = match obj.get("description") {
        None => None,
        Some(Value::Null) => Some(String::new()),
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(bad("description", "description")),
    };
    let members = match obj.get("sources") {
        None => None,
        Some(Value::Array(sources)) => {
            let mut members = Vec::with_capacity(sources.len());
            for (i, s) in sources.iter().enumerate() {
                let sub = format!("sources[{i}]");
                if s.get("type").and_then(Value::as_str) != Some("users") {
                    return Err(bad("sources", &sub));
                }
                match s.pointer("/source/id") {
                    Some(Value::String(id)) => members.push(id.clone()),
                    _ => return Err(bad("sources", &sub)),
                }
            }
            Some(members)
        }
        Some(_) => return Err(bad("sources", "sources")),
    };
    Ok(GroupPatch {
        name,
        description,
        members,
    })
}

fn write_error(e: WriteError, path: &str) -> ApiError {
    match e {
        WriteError::DuplicateName(id) => {
            ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::DuplicateData).with_details(
                json!({"api_name": "name", "id": id, "json_path": format!("{path}.name")}),
            )
        }
        WriteError::UnknownUser(id) => ApiError::invalid_data(
            json!({"api_name": "sources", "id": id, "json_path": format!("{path}.sources")}),
        ),
        WriteError::NotFound => ApiError::invalid_id(),
    }
}

fn success(id: &str, message: &str) -> Value {
    envelope_value("SUCCESS", &json!({"id": id}), message, "success")
}

fn now_zoho() -> String {
    zoho_time(SystemTime::now())
}

fn create_groups(state: &State, body: &Value) -> Result<Reply, ApiError> {
    let items = items(body)?;
    let now = now_zoho();
    let mut results = Vec::with_capacity(items.len());
    let mut ok = 0;
    for (i, item) in items.iter().enumerate() {
        let path = format!("$.user_groups[{i}]");
        let outcome = parse_item(item, &path, true).and_then(|patch| {
            state
                .store
                .lock()
                .expect("store lock")
                .create(patch, &now)
                .map_err(|e| write_error(e, &path))
        });
        results.push(match outcome {
            Ok(id) => {
                ok += 1;
                success(&id, "user group created")
            }
            Err(e) => e.envelope(),
        });
    }
    let status = match ok {
        0 => StatusCode::BAD_REQUEST,
        n if n == items.len() => StatusCode::CREATED,
        _ => StatusCode::MULTI_STATUS,
    };
    Ok(Reply::json(status, &json!({"user_groups": results})))
}

fn update_group(state: &State, id: &str, body: &Value) -> Result<Reply, ApiError> {
    let items = items(body)?;
    if items.len() != 1 {
        return Err(ApiError::invalid_data(
            json!({"api_name": "user_groups", "reason": "exactly one item expected"}),
        ));
    }
    let path = "$.user_groups[0]";
    let outcome = parse_item(&items[0], path, false).and_then(|patch| {
        state
            .store
            .lock()
            .expect("store lock")
            .update(id, patch, &now_zoho())
            .map_err(|e| write_error(e, path))
    });
    Ok(match outcome {
        Ok(()) => Reply::json(
            StatusCode::OK,
            &json!({"user_groups": [success(id, "user group updated")]}),
        ),
        Err(e) if e.status == StatusCode::BAD_REQUEST && e.details.get("json_path").is_some() => {
            Reply::json(
                StatusCode::BAD_REQUEST,
                &json!({"user_groups": [e.envelope()]}),
            )
        }
        Err(e) => return Err(e),
    })
}

fn delete_group(state: &State, id: &str) -> Result<Reply, ApiError> {
    if !is_zoho_id(id) {
        return Err(ApiError::invalid_id());
    }
    state
        .store
        .lock()
        .expect("store lock")
        .delete(id)
        .map_err(|e| write_error(e, "$"))?;
    Ok(Reply::json(
        StatusCode::OK,
        &json!({"user_groups": [success(id, "user group deleted")]}),
    ))
}
