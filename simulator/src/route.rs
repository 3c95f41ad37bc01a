//! Which simulator route a request addresses ([`SimRoute`], the counter
//! label) and what it targets ([`Target`]).
//!
//! API paths are `/crm/{version}/settings/user_groups[...]` with `version`
//! one of `v5`, `v6`, `v7`, `v8` (API-NOTES.md §1). Matching is exact and
//! case-sensitive on the raw path: no trailing slash, no percent-decoding
//! (**choice**). Anything else under any prefix is 404
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
    /// Anything under `/__simulator/` (not an API call).
    Control,
    /// Any other path or method (an API call answered 404/400).
    Unknown,
}

impl SimRoute {
    /// Every route, in declaration order.
    pub const ALL: [SimRoute; 9] = [
        SimRoute::Token,
        SimRoute::AssociatedUsersCount,
        SimRoute::ListUserGroups,
        SimRoute::GetUserGroup,
        SimRoute::CreateUserGroups,
        SimRoute::UpdateUserGroup,
        SimRoute::DeleteUserGroup,
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

/// A known API route and its path parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ApiTarget {
    AssociatedUsersCount,
    List,
    Get(String),
    Create,
    Update(String),
    Delete(String),
}

/// OAuth operation type an API route needs (`ZohoCRM.settings.user_groups.<OP>`).
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
            ApiTarget::AssociatedUsersCount | ApiTarget::List | ApiTarget::Get(_) => {
                Operation::Read
            }
            ApiTarget::Create => Operation::Create,
            ApiTarget::Update(_) => Operation::Update,
            ApiTarget::Delete(_) => Operation::Delete,
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
            },
        }
    }
}

/// API versions sharing the user-groups paths.
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
    let [version, "settings", "user_groups", tail @ ..] = segments.as_slice() else {
        return Target::NotFound;
    };
    if !VERSIONS.contains(version) {
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
    match tail {
        [] => by_method(Some(ApiTarget::List), Some(ApiTarget::Create), None, None),
        ["actions", "associated_users_count"] => {
            by_method(Some(ApiTarget::AssociatedUsersCount), None, None, None)
        }
        [id] if !id.is_empty() => by_method(
            Some(ApiTarget::Get(id.to_string())),
            None,
            Some(ApiTarget::Update(id.to_string())),
            Some(ApiTarget::Delete(id.to_string())),
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
            "/crm/v7/settings/roles",
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
    }
}
