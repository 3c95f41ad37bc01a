//! Which simulator route a request addresses ([`SimRoute`], the counter
//! label) and what it targets ([`Target`]).
//!
//! API paths are `/crm/{version}/…` with `version` one of `v5`, `v6`, `v7`,
//! `v8` (API-NOTES.md §1):
//!
//! | path after the version | GET | POST | PUT | DELETE |
//! |---|---|---|---|---|
//! | `settings/user_groups` | list | create | | |
//! | `settings/user_groups/actions/associated_users_count` | count | | | |
//! | `settings/user_groups/{id}` | get | | update | delete |
//! | `settings/modules`, `settings/modules/{api_name}` | list, get | | | |
//! | `settings/fields`, `settings/layouts`, `settings/layouts/{id}` | list, list, get | | | |
//! | `settings/related_lists`, `settings/custom_views`, `settings/roles`, `settings/profiles` | list | | | |
//! | `users`, `users/{id}`, `org` | list, get, get | | | |
//! | `{module}` | records | create | update many | delete (`ids`) |
//! | `{module}/search` | search | | | |
//! | `{module}/{id}` | record | | update | delete |
//!
//! Any first segment other than `settings`, `users` and `org` is a module API
//! name, checked by the handler (unknown → 400 `INVALID_MODULE`). Matching is
//! exact and case-sensitive on the raw path: no trailing slash, no
//! percent-decoding (**choice**). Anything else under any prefix is 404
//! `INVALID_URL_PATTERN`; a known path with the wrong method is 400
//! `INVALID_REQUEST_METHOD` (both counted as [`SimRoute::Unknown`]).

use hyper::Method;

/// The routes the simulator counts requests by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SimRoute {
    /// `POST /oauth/v2/token` (any method is counted here).
    Token,
    /// `GET /crm/{v}/settings/user_groups/actions/associated_users_count`.
    AssociatedUsersCount,
    /// `GET /crm/{v}/settings/user_groups`.
    ListUserGroups,
    /// `GET /crm/{v}/settings/user_groups/{id}`.
    GetUserGroup,
    /// `POST /crm/{v}/settings/user_groups`.
    CreateUserGroups,
    /// `PUT /crm/{v}/settings/user_groups/{id}`.
    UpdateUserGroup,
    /// `DELETE /crm/{v}/settings/user_groups/{id}`.
    DeleteUserGroup,
    /// `GET /crm/{v}/settings/modules`.
    ListModules,
    /// `GET /crm/{v}/settings/modules/{api_name}`.
    GetModule,
    /// `GET /crm/{v}/settings/fields?module=`.
    ListFields,
    /// `GET /crm/{v}/settings/layouts?module=`.
    ListLayouts,
    /// `GET /crm/{v}/settings/layouts/{id}?module=`.
    GetLayout,
    /// `GET /crm/{v}/settings/related_lists?module=`.
    ListRelatedLists,
    /// `GET /crm/{v}/settings/custom_views?module=`.
    ListCustomViews,
    /// `GET /crm/{v}/settings/roles`.
    ListRoles,
    /// `GET /crm/{v}/settings/profiles`.
    ListProfiles,
    /// `GET /crm/{v}/users`.
    ListUsers,
    /// `GET /crm/{v}/users/{id}`.
    GetUser,
    /// `GET /crm/{v}/org`.
    GetOrg,
    /// `GET /crm/{v}/{module}`.
    ListRecords,
    /// `GET /crm/{v}/{module}/{id}`.
    GetRecord,
    /// `GET /crm/{v}/{module}/search`.
    SearchRecords,
    /// `POST /crm/{v}/{module}`.
    CreateRecords,
    /// `PUT /crm/{v}/{module}`.
    UpdateRecords,
    /// `PUT /crm/{v}/{module}/{id}`.
    UpdateRecord,
    /// `DELETE /crm/{v}/{module}?ids=`.
    DeleteRecords,
    /// `DELETE /crm/{v}/{module}/{id}`.
    DeleteRecord,
    /// Anything under `/__simulator/` (not an API call).
    Control,
    /// Any other path or method (an API call answered 404/400).
    Unknown,
}

impl SimRoute {
    /// Every route, in declaration order.
    pub const ALL: [SimRoute; 29] = [
        SimRoute::Token,
        SimRoute::AssociatedUsersCount,
        SimRoute::ListUserGroups,
        SimRoute::GetUserGroup,
        SimRoute::CreateUserGroups,
        SimRoute::UpdateUserGroup,
        SimRoute::DeleteUserGroup,
        SimRoute::ListModules,
        SimRoute::GetModule,
        SimRoute::ListFields,
        SimRoute::ListLayouts,
        SimRoute::GetLayout,
        SimRoute::ListRelatedLists,
        SimRoute::ListCustomViews,
        SimRoute::ListRoles,
        SimRoute::ListProfiles,
        SimRoute::ListUsers,
        SimRoute::GetUser,
        SimRoute::GetOrg,
        SimRoute::ListRecords,
        SimRoute::GetRecord,
        SimRoute::SearchRecords,
        SimRoute::CreateRecords,
        SimRoute::UpdateRecords,
        SimRoute::UpdateRecord,
        SimRoute::DeleteRecords,
        SimRoute::DeleteRecord,
        SimRoute::Control,
        SimRoute::Unknown,
    ];

    /// Stable snake_case label (used in `/__simulator/stats`).
    pub fn as_str(self) -> &'static str {
        match self {
            SimRoute::Token => "token",
            SimRoute::AssociatedUsersCount => "associated_users_count",
            SimRoute::ListUserGroups => "list_user_groups",
            SimRoute::GetUserGroup => "get_user_group",
            SimRoute::CreateUserGroups => "create_user_groups",
            SimRoute::UpdateUserGroup => "update_user_group",
            SimRoute::DeleteUserGroup => "delete_user_group",
            SimRoute::ListModules => "list_modules",
            SimRoute::GetModule => "get_module",
            SimRoute::ListFields => "list_fields",
            SimRoute::ListLayouts => "list_layouts",
            SimRoute::GetLayout => "get_layout",
            SimRoute::ListRelatedLists => "list_related_lists",
            SimRoute::ListCustomViews => "list_custom_views",
            SimRoute::ListRoles => "list_roles",
            SimRoute::ListProfiles => "list_profiles",
            SimRoute::ListUsers => "list_users",
            SimRoute::GetUser => "get_user",
            SimRoute::GetOrg => "get_org",
            SimRoute::ListRecords => "list_records",
            SimRoute::GetRecord => "get_record",
            SimRoute::SearchRecords => "search_records",
            SimRoute::CreateRecords => "create_records",
            SimRoute::UpdateRecords => "update_records",
            SimRoute::UpdateRecord => "update_record",
            SimRoute::DeleteRecords => "delete_records",
            SimRoute::DeleteRecord => "delete_record",
            SimRoute::Control => "control",
            SimRoute::Unknown => "unknown",
        }
    }

    /// Index into per-route counter arrays.
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// Whether requests on this route count as API calls (everything but
    /// the token endpoint and the control surface).
    pub fn is_api(self) -> bool {
        !matches!(self, SimRoute::Token | SimRoute::Control)
    }
}

/// What a request addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// The OAuth token endpoint.
    Token,
    /// The control surface; the path after `/__simulator/`.
    Control(String),
    /// A known API route.
    Api(ApiTarget),
    /// Unknown path: 404 `INVALID_URL_PATTERN`.
    NotFound,
    /// Known path, wrong method: 400 `INVALID_REQUEST_METHOD`.
    WrongMethod,
}

/// A known API route and its path parameters (module API names as written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ApiTarget {
    AssociatedUsersCount,
    List,
    Get(String),
    Create,
    Update(String),
    Delete(String),
    Modules,
    Module(String),
    Fields,
    Layouts,
    Layout(String),
    RelatedLists,
    CustomViews,
    Roles,
    Profiles,
    Users,
    User(String),
    Org,
    Records(String),
    Record(String, String),
    Search(String),
    CreateRecords(String),
    UpdateRecords(String),
    UpdateRecord(String, String),
    DeleteRecords(String),
    DeleteRecord(String, String),
}

/// OAuth operation type an API route needs (`ZohoCRM.<family>.<OP>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Read,
    Create,
    Update,
    Delete,
}

impl Operation {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Operation::Read => "READ",
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
        }
    }
}

impl ApiTarget {
    pub(crate) fn operation(&self) -> Operation {
        match self {
            ApiTarget::Create | ApiTarget::CreateRecords(_) => Operation::Create,
            ApiTarget::Update(_) | ApiTarget::UpdateRecords(_) | ApiTarget::UpdateRecord(..) => {
                Operation::Update
            }
            ApiTarget::Delete(_) | ApiTarget::DeleteRecords(_) | ApiTarget::DeleteRecord(..) => {
                Operation::Delete
            }
            _ => Operation::Read,
        }
    }

    /// The OAuth scopes any one of which allows this call (compared
    /// ASCII-case-insensitively): for settings `ZohoCRM.settings.ALL`,
    /// `ZohoCRM.settings.<x>.ALL` or `.<OP>`; for users and the organisation
    /// `ZohoCRM.users.ALL`/`.<OP>`, `ZohoCRM.org.ALL`/`.<OP>`; for records
    /// `ZohoCRM.modules.ALL`, `ZohoCRM.modules.<OP>`,
    /// `ZohoCRM.modules.<module>.ALL` or `.<OP>`. **Choice**: search needs no
    /// extra `ZohoSearch.securesearch.READ` (v8 lists none).
    pub(crate) fn accepted_scopes(&self) -> Vec<String> {
        let op = self.operation().as_str();
        let settings = |x: &str| {
            vec![
                "ZohoCRM.settings.ALL".to_owned(),
                format!("ZohoCRM.settings.{x}.ALL"),
                format!("ZohoCRM.settings.{x}.{op}"),
            ]
        };
        let family = |x: &str| vec![format!("ZohoCRM.{x}.ALL"), format!("ZohoCRM.{x}.{op}")];
        match self {
            ApiTarget::AssociatedUsersCount
            | ApiTarget::List
            | ApiTarget::Get(_)
            | ApiTarget::Create
            | ApiTarget::Update(_)
            | ApiTarget::Delete(_) => settings("user_groups"),
            ApiTarget::Modules | ApiTarget::Module(_) => settings("modules"),
            ApiTarget::Fields => settings("fields"),
            ApiTarget::Layouts | ApiTarget::Layout(_) => settings("layouts"),
            ApiTarget::RelatedLists => settings("related_lists"),
            ApiTarget::CustomViews => settings("custom_views"),
            ApiTarget::Roles => settings("roles"),
            ApiTarget::Profiles => settings("profiles"),
            ApiTarget::Users | ApiTarget::User(_) => family("users"),
            ApiTarget::Org => family("org"),
            ApiTarget::Records(m)
            | ApiTarget::Record(m, _)
            | ApiTarget::Search(m)
            | ApiTarget::CreateRecords(m)
            | ApiTarget::UpdateRecords(m)
            | ApiTarget::UpdateRecord(m, _)
            | ApiTarget::DeleteRecords(m)
            | ApiTarget::DeleteRecord(m, _) => {
                let mut v = family("modules");
                v.extend(family(&format!("modules.{m}")));
                v
            }
        }
    }
}

impl Target {
    /// The counter label for this target.
    pub(crate) fn route(&self) -> SimRoute {
        match self {
            Target::Token => SimRoute::Token,
            Target::Control(_) => SimRoute::Control,
            Target::NotFound | Target::WrongMethod => SimRoute::Unknown,
            Target::Api(api) => match api {
                ApiTarget::AssociatedUsersCount => SimRoute::AssociatedUsersCount,
                ApiTarget::List => SimRoute::ListUserGroups,
                ApiTarget::Get(_) => SimRoute::GetUserGroup,
                ApiTarget::Create => SimRoute::CreateUserGroups,
                ApiTarget::Update(_) => SimRoute::UpdateUserGroup,
                ApiTarget::Delete(_) => SimRoute::DeleteUserGroup,
                ApiTarget::Modules => SimRoute::ListModules,
                ApiTarget::Module(_) => SimRoute::GetModule,
                ApiTarget::Fields => SimRoute::ListFields,
                ApiTarget::Layouts => SimRoute::ListLayouts,
                ApiTarget::Layout(_) => SimRoute::GetLayout,
                ApiTarget::RelatedLists => SimRoute::ListRelatedLists,
                ApiTarget::CustomViews => SimRoute::ListCustomViews,
                ApiTarget::Roles => SimRoute::ListRoles,
                ApiTarget::Profiles => SimRoute::ListProfiles,
                ApiTarget::Users => SimRoute::ListUsers,
                ApiTarget::User(_) => SimRoute::GetUser,
                ApiTarget::Org => SimRoute::GetOrg,
                ApiTarget::Records(_) => SimRoute::ListRecords,
                ApiTarget::Record(..) => SimRoute::GetRecord,
                ApiTarget::Search(_) => SimRoute::SearchRecords,
                ApiTarget::CreateRecords(_) => SimRoute::CreateRecords,
                ApiTarget::UpdateRecords(_) => SimRoute::UpdateRecords,
                ApiTarget::UpdateRecord(..) => SimRoute::UpdateRecord,
                ApiTarget::DeleteRecords(_) => SimRoute::DeleteRecords,
                ApiTarget::DeleteRecord(..) => SimRoute::DeleteRecord,
            },
        }
    }
}

/// API versions the simulator serves.
const VERSIONS: [&str; 4] = ["v5", "v6", "v7", "v8"];

/// Classifies a request by method and raw path.
pub(crate) fn classify(method: &Method, path: &str) -> Target {
    if path == "/oauth/v2/token" {
        return Target::Token;
    }
    if let Some(rest) = path.strip_prefix("/__simulator/") {
        return Target::Control(rest.to_string());
    }
    let Some(rest) = path.strip_prefix("/crm/") else {
        return Target::NotFound;
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let [version, tail @ ..] = segments.as_slice() else {
        return Target::NotFound;
    };
    if !VERSIONS.contains(version) || tail.iter().any(|s| s.is_empty()) {
        return Target::NotFound;
    }
    let by_method = |get: Option<ApiTarget>, post: Option<ApiTarget>, put, delete| {
        let chosen = match *method {
            Method::GET => get,
            Method::POST => post,
            Method::PUT => put,
            Method::DELETE => delete,
            _ => None,
        };
        chosen.map_or(Target::WrongMethod, Target::Api)
    };
    let get = |t: ApiTarget| by_method(Some(t), None, None, None);
    let s = |x: &str| x.to_string();
    match tail {
        ["settings", "user_groups"] => {
            by_method(Some(ApiTarget::List), Some(ApiTarget::Create), None, None)
        }
        [
            "settings",
            "user_groups",
            "actions",
            "associated_users_count",
        ] => get(ApiTarget::AssociatedUsersCount),
        ["settings", "user_groups", id] => by_method(
            Some(ApiTarget::Get(s(id))),
            None,
            Some(ApiTarget::Update(s(id))),
            Some(ApiTarget::Delete(s(id))),
        ),
        ["settings", "modules"] => get(ApiTarget::Modules),
        ["settings", "modules", name] => get(ApiTarget::Module(s(name))),
        ["settings", "fields"] => get(ApiTarget::Fields),
        ["settings", "layouts"] => get(ApiTarget::Layouts),
        ["settings", "layouts", id] => get(ApiTarget::Layout(s(id))),
        ["settings", "related_lists"] => get(ApiTarget::RelatedLists),
        ["settings", "custom_views"] => get(ApiTarget::CustomViews),
        ["settings", "roles"] => get(ApiTarget::Roles),
        ["settings", "profiles"] => get(ApiTarget::Profiles),
        ["settings", ..] => Target::NotFound,
        ["users"] => get(ApiTarget::Users),
        ["users", id] => get(ApiTarget::User(s(id))),
        ["org"] => get(ApiTarget::Org),
        ["users" | "org", ..] => Target::NotFound,
        [module] => by_method(
            Some(ApiTarget::Records(s(module))),
            Some(ApiTarget::CreateRecords(s(module))),
            Some(ApiTarget::UpdateRecords(s(module))),
            Some(ApiTarget::DeleteRecords(s(module))),
        ),
        [module, "search"] => get(ApiTarget::Search(s(module))),
        [_, "actions" | "upsert" | "deleted"] => Target::NotFound,
        [module, id] => by_method(
            Some(ApiTarget::Record(s(module), s(id))),
            None,
            Some(ApiTarget::UpdateRecord(s(module), s(id))),
            Some(ApiTarget::DeleteRecord(s(module), s(id))),
        ),
        _ => Target::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_paths() {
        let p = "/crm/v7/settings/user_groups/actions/associated_users_count";
        assert_eq!(
            classify(&Method::GET, p),
            Target::Api(ApiTarget::AssociatedUsersCount)
        );
        assert_eq!(classify(&Method::POST, p), Target::WrongMethod);
        for v in ["v5", "v6", "v8"] {
            let p = format!("/crm/{v}/settings/user_groups");
            assert_eq!(classify(&Method::GET, &p), Target::Api(ApiTarget::List));
            assert_eq!(classify(&Method::POST, &p), Target::Api(ApiTarget::Create));
        }
        for bad in [
            "/crm/v4/settings/user_groups",
            "/crm/v9/settings/user_groups",
            "/crm/v7/settings/user_groups/",
            "/crm/v7/settings/user_groups/1/x",
            "/crm/v7/settings/territories",
            "/crm/v7/Leads/1/photo",
            "/crm/v7/org/photo",
            "/crm/v7",
            "/crm/v7/",
            "/",
        ] {
            assert_eq!(classify(&Method::GET, bad), Target::NotFound, "{bad}");
        }
        assert_eq!(
            classify(&Method::DELETE, "/crm/v7/settings/user_groups/12"),
            Target::Api(ApiTarget::Delete("12".into()))
        );
        assert_eq!(classify(&Method::GET, "/oauth/v2/token"), Target::Token);
        assert_eq!(
            classify(&Method::GET, "/__simulator/stats"),
            Target::Control("stats".into())
        );
        assert_eq!(Target::NotFound.route().as_str(), "unknown");
        let api = |m: Method, p: &str| match classify(&m, p) {
            Target::Api(a) => a,
            other => panic!("{p}: {other:?}"),
        };
        assert_eq!(
            api(Method::GET, "/crm/v8/settings/modules"),
            ApiTarget::Modules
        );
        assert_eq!(
            api(Method::GET, "/crm/v8/settings/modules/Leads"),
            ApiTarget::Module("Leads".into())
        );
        assert_eq!(api(Method::GET, "/crm/v8/org"), ApiTarget::Org);
        assert_eq!(
            api(Method::GET, "/crm/v8/users/42"),
            ApiTarget::User("42".into())
        );
        assert_eq!(
            api(Method::GET, "/crm/v8/Leads"),
            ApiTarget::Records("Leads".into())
        );
        assert_eq!(
            api(Method::GET, "/crm/v8/Leads/search"),
            ApiTarget::Search("Leads".into())
        );
        assert_eq!(
            api(Method::DELETE, "/crm/v8/Deals/7"),
            ApiTarget::DeleteRecord("Deals".into(), "7".into())
        );
        assert_eq!(
            classify(&Method::POST, "/crm/v8/settings/roles"),
            Target::WrongMethod
        );
        assert!(
            ApiTarget::Records("Leads".into())
                .accepted_scopes()
                .contains(&"ZohoCRM.modules.Leads.READ".to_owned())
        );
        for r in SimRoute::ALL {
            assert_eq!(SimRoute::ALL[r.index()], r);
        }
    }
}
