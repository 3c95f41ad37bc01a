//! Metadata reads: modules, fields, layouts, related lists, custom views, roles, profiles,
//! users and the organisation (Zoho CRM v8 docs: modules-api, field-meta, layouts-meta,
//! related-list-meta, custom-view-meta, get-roles, get-profiles, get-users, get-org-data).
//!
//! | route | parameters | answer |
//! |---|---|---|
//! | `settings/modules` | `status` (comma-separated `visible`, `user_hidden`, `system_hidden`, `scheduled_for_deletion`) | `{"modules":[..]}` |
//! | `settings/modules/{api_name}` | — | `{"modules":[module]}` with `custom_view` and `per_page` |
//! | `settings/fields` | `module` (required), `type` = `all` \| `unused` | `{"fields":[..]}` |
//! | `settings/layouts[/{id}]` | `module` (required) | `{"layouts":[..]}` |
//! | `settings/related_lists` | `module` (required), `layout_id` | `{"related_lists":[..]}` |
//! | `settings/custom_views` | `module` (required), `page`, `per_page` | `{"custom_views":[..],"info":{..,"default":id}}` |
//! | `settings/roles`, `settings/profiles` | — | `{"roles":[..]}`, `{"profiles":[..]}` |
//! | `users` | `type`, `page`, `per_page`, `ids` | `{"users":[..],"info":{..}}` |
//! | `users/{id}` | — | `{"users":[user]}` |
//! | `org` | — | `{"org":[org]}` |
//!
//! Errors: a missing `module` → 400 `REQUIRED_PARAM_MISSING` (`details.param_name`); an
//! unknown one → 400 `INVALID_MODULE` (`details.param_name: "module"`; in the path,
//! `details.resource_path_index`); a bad enum value → 400 `INVALID_DATA` with
//! `details.param_name` and `supported_values`; an id naming nothing → 400 `INVALID_DATA`
//! with `details.resource_path_index`, except `users/{id}`, which answers 204 as the OAS
//! lists (**choice**). Nothing to list (`type=unused`, no users of a type) → 204.
//!
//! `If-Modified-Since` (HTTP-date or ISO-8601) on `settings/modules`: only modules modified
//! after it are listed, and none → 304 with no body; on `settings/modules/{api_name}`: 304
//! when the module was not modified after it. An unparsable date is ignored (**choice**).

use std::time::SystemTime;

use hyper::StatusCode;
use serde_json::{Value, json};

use super::super::crm::{CrmStore, Module, parse_zoho_time};
use super::super::dataset::UserStatus;
use super::super::params::Params;
use super::super::response::{ApiError, ErrorCode, Reply};
use super::{State, no_match, page_of, paging, param};

/// `status` values of `settings/modules`.
const MODULE_STATUSES: [&str; 4] = [
    "visible",
    "user_hidden",
    "system_hidden",
    "scheduled_for_deletion",
];

/// `type` values of `users` (get-users).
const USER_TYPES: [&str; 10] = [
    "AllUsers",
    "ActiveUsers",
    "DeactiveUsers",
    "ConfirmedUsers",
    "NotConfirmedUsers",
    "DeletedUsers",
    "ActiveConfirmedUsers",
    "AdminUsers",
    "ActiveConfirmedAdmins",
    "CurrentUser",
];

fn not_modified() -> Reply {
    Reply {
        status: StatusCode::NOT_MODIFIED,
        body: None,
    }
}

fn modified_after(time: &str, since: SystemTime) -> bool {
    parse_zoho_time(time).is_none_or(|t| t > since)
}

fn unsupported(name: &str, supported: &[&str]) -> ApiError {
    ApiError::invalid_data(json!({"param_name": name, "supported_values": supported}))
}

fn module_json(store: &CrmStore, m: &Module) -> Value {
    json!({
        "id": m.id,
        "api_name": m.api_name,
        "module_name": m.module_name,
        "singular_label": m.singular_label,
        "plural_label": m.plural_label,
        "actual_singular_label": m.singular_label,
        "actual_plural_label": m.plural_label,
        "api_supported": true,
        "creatable": true,
        "editable": true,
        "deletable": true,
        "viewable": true,
        "convertable": m.api_name == "Leads",
        "global_search_supported": true,
        "show_as_tab": true,
        "quick_create": true,
        "generated_type": "default",
        "status": "visible",
        "visibility": 1,
        "sequence_number": m.sequence_number,
        "modified_time": m.modified_time,
        "modified_by": null,
        "parent_module": {},
        "profiles": store.profiles.iter().map(|p| json!({"id": p.id, "name": p.name})).collect::<Vec<_>>(),
    })
}

/// The module named by `module=` (required).
fn module_param<'a>(
    state: &State,
    store: &'a CrmStore,
    q: &Params,
) -> Result<&'a Module, ApiError> {
    match param(state, q, "module")? {
        None => Err(ApiError::param_missing("module")),
        Some(name) => store.module(name).ok_or_else(|| {
            ApiError::bad_request(ErrorCode::InvalidModule, json!({"param_name": "module"}))
        }),
    }
}

/// `GET settings/modules`.
pub(super) fn modules(
    state: &State,
    q: &Params,
    since: Option<SystemTime>,
) -> Result<Reply, ApiError> {
    if let Some(raw) = param(state, q, "status")? {
        for (index, s) in raw.split(',').enumerate() {
            if !MODULE_STATUSES.contains(&s) {
                return Err(ApiError::invalid_data(json!({
                    "param_name": "status",
                    "index": index,
                    "supported_values": MODULE_STATUSES,
                })));
            }
        }
        if !raw.split(',').any(|s| s == "visible") {
            return Ok(Reply::no_content());
        }
    }
    let store = state.crm.lock().expect("crm lock");
    let listed: Vec<Value> = store
        .modules
        .iter()
        .filter(|m| since.is_none_or(|t| modified_after(&m.modified_time, t)))
        .map(|m| module_json(&store, m))
        .collect();
    if listed.is_empty() {
        return Ok(not_modified());
    }
    Ok(Reply::json(StatusCode::OK, &json!({ "modules": listed })))
}

/// `GET settings/modules/{api_name}`.
pub(super) fn module(
    state: &State,
    name: &str,
    since: Option<SystemTime>,
) -> Result<Reply, ApiError> {
    let store = state.crm.lock().expect("crm lock");
    let m = store.module(name).ok_or_else(|| {
        ApiError::bad_request(ErrorCode::InvalidModule, json!({"resource_path_index": 2}))
    })?;
    if since.is_some_and(|t| !modified_after(&m.modified_time, t)) {
        return Ok(not_modified());
    }
    let mut body = module_json(&store, m);
    let default_view = m.custom_views.iter().find(|c| c.default);
    body["custom_view"] = default_view.map_or(
        Value::Null,
        |c| json!({"id": c.id, "name": c.name, "system_name": c.system_name}),
    );
    body["per_page"] = json!(200);
    Ok(Reply::json(StatusCode::OK, &json!({ "modules": [body] })))
}

fn json_type(data_type: &str) -> &'static str {
    match data_type {
        "currency" => "double",
        "integer" => "integer",
        "lookup" | "ownerlookup" => "jsonobject",
        _ => "string",
    }
}

/// `GET settings/fields?module=`.
pub(super) fn fields(state: &State, q: &Params) -> Result<Reply, ApiError> {
    let store = state.crm.lock().expect("crm lock");
    let m = module_param(state, &store, q)?;
    match param(state, q, "type")? {
        None | Some("all") => {}
        Some("unused") => return Ok(Reply::no_content()),
        Some(_) => return Err(unsupported("type", &["all", "unused"])),
    }
    let fields: Vec<Value> = m
        .fields
        .iter()
        .map(|f| {
            let lookup = match &f.lookup_module {
                Some(target) => {
                    let id = store.module(target).map(|t| t.id.clone());
                    json!({"module": {"api_name": target, "id": id}})
                }
                None => json!({}),
            };
            json!({
                "id": f.id,
                "api_name": f.api_name,
                "field_label": f.field_label,
                "display_label": f.field_label,
                "data_type": f.data_type,
                "json_type": json_type(&f.data_type),
                "length": f.length,
                "system_mandatory": f.system_mandatory,
                "read_only": f.read_only,
                "custom_field": false,
                "visible": true,
                "lookup": lookup,
            })
        })
        .collect();
    Ok(Reply::json(StatusCode::OK, &json!({ "fields": fields })))
}

/// `GET settings/layouts?module=` and `GET settings/layouts/{id}?module=`.
pub(super) fn layouts(state: &State, q: &Params, id: Option<&str>) -> Result<Reply, ApiError> {
    let store = state.crm.lock().expect("crm lock");
    let m = module_param(state, &store, q)?;
    let field_ref = |name: &String| {
        let f = m.fields.iter().find(|f| &f.api_name == name);
        json!({
            "api_name": name,
            "id": f.map(|f| f.id.as_str()),
            "field_label": f.map(|f| f.field_label.as_str()),
            "data_type": f.map(|f| f.data_type.as_str()),
        })
    };
    let listed: Vec<Value> = m
        .layouts
        .iter()
        .filter(|l| id.is_none_or(|id| l.id == id))
        .map(|l| {
            json!({
                "id": l.id,
                "name": l.name,
                "display_label": l.name,
                "status": "active",
                "visible": true,
                "modified_time": l.modified_time,
                "profiles": store.profiles.iter().map(|p| json!({"id": p.id, "name": p.name, "default": p.default})).collect::<Vec<_>>(),
                "sections": l.sections.iter().enumerate().map(|(i, s)| json!({
                    "api_name": s.api_name,
                    "name": s.api_name,
                    "display_label": s.display_label,
                    "sequence_number": i + 1,
                    "column_count": 2,
                    "fields": s.fields.iter().map(field_ref).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    if id.is_some() && listed.is_empty() {
        return Err(ApiError::invalid_id());
    }
    Ok(Reply::json(StatusCode::OK, &json!({ "layouts": listed })))
}

/// `GET settings/related_lists?module=[&layout_id=]`.
pub(super) fn related_lists(state: &State, q: &Params) -> Result<Reply, ApiError> {
    let store = state.crm.lock().expect("crm lock");
    let m = module_param(state, &store, q)?;
    if let Some(layout) = param(state, q, "layout_id")?
        && !m.layouts.iter().any(|l| l.id == layout)
    {
        return Err(ApiError::invalid_param("layout_id"));
    }
    let listed: Vec<Value> = m
        .related_lists
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let target = store.module(&r.module);
            json!({
                "id": r.id,
                "sequence_number": (i + 1).to_string(),
                "display_label": r.display_label,
                "api_name": r.api_name,
                "name": r.api_name,
                "module": {"api_name": r.module, "id": target.map(|t| t.id.as_str())},
                "href": format!("{}/{{ID}}/{}", m.api_name, r.api_name),
                "type": "default",
                "action": null,
                "visible": true,
            })
        })
        .collect();
    Ok(Reply::json(
        StatusCode::OK,
        &json!({ "related_lists": listed }),
    ))
}

/// `GET settings/custom_views?module=[&page=&per_page=]`.
pub(super) fn custom_views(state: &State, q: &Params) -> Result<Reply, ApiError> {
    let paging = paging(state, q)?;
    let store = state.crm.lock().expect("crm lock");
    let m = module_param(state, &store, q)?;
    let Some((items, info)) = page_of(&m.custom_views, &paging) else {
        return Ok(Reply::no_content());
    };
    let default = m.custom_views.iter().find(|c| c.default).map(|c| &c.id);
    let views: Vec<Value> = items
        .iter()
        .map(|c| {
            json!({
                "id": c.id,
                "name": c.name,
                "display_value": c.name,
                "system_name": c.system_name,
                "system_defined": c.criteria.is_none(),
                "category": "public_views",
                "default": c.default,
                "favorite": null,
                "offline": false,
                "modified_time": c.modified_time,
                "sort_by": c.sort_by,
                "sort_order": c.sort_order,
            })
        })
        .collect();
    let mut info = serde_json::to_value(info).expect("info serializes");
    info["default"] = json!(default);
    Ok(Reply::json(
        StatusCode::OK,
        &json!({ "custom_views": views, "info": info }),
    ))
}

/// `GET settings/roles`.
pub(super) fn roles(state: &State) -> Result<Reply, ApiError> {
    let store = state.crm.lock().expect("crm lock");
    let roles: Vec<Value> = store
        .roles
        .iter()
        .map(|r| {
            let reporting_to = r
                .reporting_to
                .as_ref()
                .and_then(|name| store.roles.iter().find(|x| &x.name == name))
                .map(|x| json!({"id": x.id, "name": x.name}));
            json!({
                "id": r.id,
                "name": r.name,
                "display_label": r.name,
                "reporting_to": reporting_to,
                "admin_user": r.admin_user,
                "share_with_peers": r.share_with_peers,
                "description": r.description,
                "forecast_manager": null,
            })
        })
        .collect();
    Ok(Reply::json(StatusCode::OK, &json!({ "roles": roles })))
}

/// `GET settings/profiles`.
pub(super) fn profiles(state: &State) -> Result<Reply, ApiError> {
    let store = state.crm.lock().expect("crm lock");
    let profiles: Vec<Value> = store
        .profiles
        .iter()
        .map(|p| {
            json!({
                "id": p.id,
                "name": p.name,
                "display_label": p.name,
                "default": p.default,
                "custom": p.custom,
                "description": p.description,
                "type": "normal_profile",
                "created_time": null,
                "modified_time": null,
            })
        })
        .collect();
    Ok(Reply::json(
        StatusCode::OK,
        &json!({ "profiles": profiles }),
    ))
}

fn user_json(store: &CrmStore, index: usize) -> Value {
    let u = &store.users[index];
    let (first, last) = u.full_name.split_once(' ').unwrap_or(("", &u.full_name));
    let role = store.role_of(index);
    let profile = store.profile_of(index);
    json!({
        "id": u.id,
        "full_name": u.full_name,
        "first_name": first,
        "last_name": last,
        "email": u.email,
        "status": u.status.as_str(),
        "confirm": true,
        "role": {"id": role.id, "name": role.name},
        "profile": {"id": profile.id, "name": profile.name},
        "time_zone": "America/New_York",
        "locale": "en_US",
    })
}

/// `GET users[?type=&page=&per_page=&ids=]`. `CurrentUser` is the first user; `AdminUsers`
/// the users with the `Administrator` profile; nobody is unconfirmed or deleted (**choices**).
pub(super) fn users(state: &State, q: &Params) -> Result<Reply, ApiError> {
    let kind = param(state, q, "type")?.unwrap_or("AllUsers");
    if !USER_TYPES.contains(&kind) {
        return Err(unsupported("type", &USER_TYPES));
    }
    let paging = paging(state, q)?;
    let ids: Option<Vec<&str>> = param(state, q, "ids")?.map(|raw| {
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    });
    if let Some(ids) = &ids
        && ids.iter().any(|id| !super::is_zoho_id(id))
    {
        return Err(ApiError::invalid_param("ids"));
    }
    let store = state.crm.lock().expect("crm lock");
    let admin = |i: usize| store.profile_of(i).name == "Administrator";
    let active = |i: usize| store.users[i].status == UserStatus::Active;
    let chosen: Vec<usize> = (0..store.users.len())
        .filter(|&i| match kind {
            "AllUsers" | "ConfirmedUsers" => true,
            "ActiveUsers" | "ActiveConfirmedUsers" => active(i),
            "DeactiveUsers" => !active(i),
            "AdminUsers" => admin(i),
            "ActiveConfirmedAdmins" => admin(i) && active(i),
            "CurrentUser" => i == 0,
            _ => false,
        })
        .filter(|&i| {
            ids.as_ref()
                .is_none_or(|ids| ids.contains(&store.users[i].id.as_str()))
        })
        .collect();
    let Some((items, info)) = page_of(&chosen, &paging) else {
        return Ok(no_match(state, || json!({"users": [], "info": {}})));
    };
    let users: Vec<Value> = items.iter().map(|&i| user_json(&store, i)).collect();
    Ok(Reply::json(
        StatusCode::OK,
        &json!({ "users": users, "info": info }),
    ))
}

/// `GET users/{id}`: 204 when no user has that id.
pub(super) fn user(state: &State, id: &str) -> Result<Reply, ApiError> {
    if !super::is_zoho_id(id) {
        return Err(ApiError::invalid_data(json!({"resource_path_index": 1}))
            .with_message("the id given seems to be invalid"));
    }
    let store = state.crm.lock().expect("crm lock");
    match store.users.iter().position(|u| u.id == id) {
        Some(i) => Ok(Reply::json(
            StatusCode::OK,
            &json!({ "users": [user_json(&store, i)] }),
        )),
        None => Ok(Reply::no_content()),
    }
}

/// `GET org`.
pub(super) fn org(state: &State) -> Result<Reply, ApiError> {
    let store = state.crm.lock().expect("crm lock");
    Ok(Reply::json(StatusCode::OK, &json!({ "org": [store.org] })))
}
