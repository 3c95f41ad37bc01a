//! Which Zoho route a request is for, and the policy of each cached route.
//!
//! Cached routes are data: a [`RoutePolicy`] (method, [`PathTemplate`], parameter schema, cache
//! lifetimes, client-directive handling, credit cost, invalidation group) in the configured route
//! table, consumed by the one generic cached-route path of `proxy`. A request whose path matches
//! no cached route and no `[routes.passthrough]` rule is [`RouteKind::Unmatched`] and answered
//! locally with Zoho's 404 `INVALID_URL_PATTERN`. The upstream host never comes from the request:
//! it is always the tenant's configured `api_base`.

use std::time::Duration;

use crate::canonical::ParamSchema;

/// Position of a cached route in the route table (`GatewayConfig::routes`). Stable for the
/// life of the process (a reload may not change the set of routes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteId(pub u16);

impl RouteId {
    /// The table index.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// Which kind of route a request took: the `route` metric label (with the table's templates),
/// the access-log field, and the route binding of client keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// A cached route of the table.
    Cached(RouteId),
    /// A route on the `[routes.passthrough]` allowlist (forwarded, never cached).
    Passthrough,
    /// No configured route matched.
    Unmatched,
}

impl RouteKind {
    /// Position among the metric labels of a table with `cached` routes: the cached routes in
    /// table order, then `passthrough`, then `unmatched`.
    pub fn index(self, cached: usize) -> usize {
        match self {
            RouteKind::Cached(id) => id.index(),
            RouteKind::Passthrough => cached,
            RouteKind::Unmatched => cached + 1,
        }
    }
}

/// Label of [`RouteKind::Passthrough`].
pub const PASSTHROUGH_LABEL: &str = "passthrough";
/// Label of [`RouteKind::Unmatched`].
pub const UNMATCHED_LABEL: &str = "unmatched";

/// How long answers of a route are kept and served (RFC 5861 names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteLifetimes {
    /// Freshness lifetime of a 200.
    pub ttl: Duration,
    /// Freshness lifetime of a 204; zero: 204s are not stored.
    pub no_content_ttl: Duration,
    /// Each stored TTL is shortened by a random 0..=N percent (0..=50).
    pub ttl_jitter_percent: u8,
    /// After expiry, served at once while one background refresh runs.
    pub stale_while_revalidate: Duration,
    /// After expiry, served when the refresh fails.
    pub stale_if_error: Duration,
    /// Per-key hold after an upstream failure.
    pub error_hold: Duration,
    /// Cap on a hold taken from Zoho's `Retry-After`.
    pub max_error_hold: Duration,
}

/// One cached route: everything the generic cached-route path needs to know about it.
#[derive(Clone, Debug)]
pub struct RoutePolicy {
    /// Configured name, e.g. `associated_users_count`: used by client-key route binding and the
    /// admin purge (`route=NAME`).
    pub name: String,
    /// The method it caches (Zoho's reads: `GET`).
    pub method: http::Method,
    /// The path template; its text is the `route` metric label.
    pub template: PathTemplate,
    /// How each query parameter enters the cache key.
    pub schema: ParamSchema,
    /// Lifetimes of stored answers.
    pub lifetimes: RouteLifetimes,
    /// Honour a client's `Cache-Control: no-cache` (RFC 9111 §5.2.1.4).
    pub honor_no_cache: bool,
    /// Honour a client's `Cache-Control: no-store` (RFC 9111 §5.2.1.5).
    pub honor_no_store: bool,
    /// Zoho API credits one upstream call of this route costs (weighs `credits_saved`).
    pub credit_cost: u32,
    /// Invalidation group: a successful write to the group drops the tenant's entries of every
    /// route in it (see [`write_invalidates`]).
    pub group: String,
}

/// One path segment of a [`PathTemplate`].
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `{version}`: one of the configured API versions.
    Version,
    /// `{id}`: a Zoho record id, 1–32 ASCII digits.
    Id,
    /// Any other `{name}`: one segment of `[A-Za-z0-9_.-]`.
    Param,
}

/// A path pattern such as `/crm/{version}/settings/user_groups/{id}`. In templates,
/// `{version}` matches only the configured API versions, `{id}` only a Zoho record id (1–32
/// digits), and any other `{name}` (`{module}`, `{api_name}`) one segment of `[A-Za-z0-9_.-]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathTemplate {
    text: String,
    segments: Vec<Segment>,
}

/// A path matched against a [`PathTemplate`], borrowing from the request path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathMatch<'a> {
    /// The `{version}` segment, e.g. `v7` (empty when the template has none).
    pub version: &'a str,
    /// The concrete path after the version segment, with its leading `/`, e.g.
    /// `/settings/user_groups/actions/associated_users_count` (the cache key's route).
    pub rest: &'a str,
}

impl PathTemplate {
    /// Parses a template: it must start with `/crm/` and be in normal form.
    ///
    /// # Errors
    /// A short description of what is wrong.
    pub fn parse(path: &str) -> Result<Self, String> {
        let path = path.trim();
        if !path.starts_with("/crm/") || !is_normal_path(path) {
            return Err("path must start with /crm/ and be in normal form".into());
        }
        let segments = path[1..]
            .split('/')
            .map(|seg| {
                if seg == "{version}" {
                    Segment::Version
                } else if seg == "{id}" {
                    Segment::Id
                } else if seg.starts_with('{') && seg.ends_with('}') && seg.len() > 2 {
                    Segment::Param
                } else {
                    Segment::Literal(seg.to_owned())
                }
            })
            .collect();
        Ok(PathTemplate {
            text: path.to_owned(),
            segments,
        })
    }

    /// The template as written (the `route` metric label).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Matches `path` (normal form, no query); `versions` are the values `{version}` may take.
    pub fn matches<'a>(&self, path: &'a str, versions: &[String]) -> Option<PathMatch<'a>> {
        let mut m = PathMatch {
            version: "",
            rest: "",
        };
        let mut offset = 1;
        let mut parts = path.get(1..)?.split('/');
        for seg in &self.segments {
            let part = parts.next()?;
            let ok = match seg {
                Segment::Literal(l) => l == part,
                Segment::Version => {
                    m.version = part;
                    m.rest = &path[offset + part.len()..];
                    versions.iter().any(|v| v == part)
                }
                Segment::Id => {
                    (1..=32).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_digit())
                }
                Segment::Param => {
                    !part.is_empty()
                        && part
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
                }
            };
            if !ok {
                return None;
            }
            offset += part.len() + 1;
        }
        if parts.next().is_some() {
            return None;
        }
        if m.version.is_empty() {
            m.rest = path;
        }
        Some(m)
    }
}

/// Whether a path is in normal form: starts with `/`, no empty, `.` or `..` segment, no
/// backslash, and no percent-encoded `.`, `/` or `\\` (`%2e`, `%2f`, `%5c`, any case).
/// Requests whose path is not are refused before routing, so traversal spellings never reach
/// a route or an upstream.
pub fn is_normal_path(path: &str) -> bool {
    if !path.starts_with('/') || path.contains('\\') {
        return false;
    }
    let encoded = path.contains('%');
    let lower_has = |needle: &[u8]| {
        path.as_bytes()
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
    };
    if encoded && (lower_has(b"%2e") || lower_has(b"%2f") || lower_has(b"%5c")) {
        return false;
    }
    path == "/"
        || path[1..]
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

/// One `[routes.passthrough] allow` entry: a method and a [`PathTemplate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowRule {
    /// HTTP method.
    pub method: http::Method,
    template: PathTemplate,
}

impl AllowRule {
    /// Parses `"METHOD /path/{param}/literal"`.
    ///
    /// # Errors
    /// A short description of what is wrong.
    pub fn parse(rule: &str) -> Result<Self, String> {
        let (method, path) = rule
            .trim()
            .split_once(' ')
            .ok_or("expected \"METHOD /path\"")?;
        let method: http::Method = method
            .parse()
            .map_err(|_| format!("bad method {method:?}"))?;
        if method == http::Method::CONNECT {
            return Err("CONNECT is never allowed".into());
        }
        Ok(AllowRule {
            method,
            template: PathTemplate::parse(path)?,
        })
    }

    /// Whether `method` and `path` (normal form) match this rule; `versions` are the API
    /// versions `{version}` may take.
    pub fn matches(&self, method: &http::Method, path: &str, versions: &[String]) -> bool {
        *method == self.method && self.template.matches(path, versions).is_some()
    }
}

/// Whether a successful request with this method and path changes user groups, so the tenant's
/// cached user-group answers must be dropped: `POST`/`PUT`/`PATCH`/`DELETE` under
/// `/crm/{version}/settings/user_groups`.
pub fn invalidates_user_groups(method: &http::Method, path: &str) -> bool {
    let write = matches!(
        *method,
        http::Method::POST | http::Method::PUT | http::Method::PATCH | http::Method::DELETE
    );
    write
        && path.strip_prefix("/crm/").is_some_and(|rest| {
            rest.split_once('/').is_some_and(|(_, tail)| {
                tail == "settings/user_groups" || tail.starts_with("settings/user_groups/")
            })
        })
}

/// The invalidation group a successful write with this method and path belongs to, if any:
/// `POST`/`PUT`/`PATCH`/`DELETE` under `/crm/{version}/settings/user_groups` is
/// `"user_groups"`. Every cached route of that group loses the tenant's entries.
pub fn write_invalidates(method: &http::Method, path: &str) -> Option<&'static str> {
    invalidates_user_groups(method, path).then_some("user_groups")
}

/// The `associated_users_count` route's path template.
pub const ASSOCIATED_USERS_COUNT: &str =
    "/crm/{version}/settings/user_groups/actions/associated_users_count";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_exact_count_path() {
        let versions: Vec<String> = ["v7", "v8"].map(String::from).to_vec();
        let t = PathTemplate::parse(ASSOCIATED_USERS_COUNT).unwrap();
        let match_path = |p| t.matches(p, &versions);
        let m = match_path("/crm/v7/settings/user_groups/actions/associated_users_count").unwrap();
        assert_eq!(m.version, "v7");
        assert_eq!(
            m.rest,
            "/settings/user_groups/actions/associated_users_count"
        );
        for bad in [
            "/crm/v6/settings/user_groups/actions/associated_users_count",
            "/crm/v7/settings/user_groups/actions/associated_users_count/",
            "/crm/v7//settings/user_groups/actions/associated_users_count",
            "/crm/v7/settings/user_groups/actions/../actions/associated_users_count",
            "/crm/v7/settings/user_groups",
            "/crm/v7",
            "/",
        ] {
            assert_eq!(match_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn traversal_spellings_are_not_normal() {
        for bad in [
            "/crm/v7/../v7/x",
            "/crm/v7/./x",
            "/crm//v7",
            "/crm/v7/%2e%2e/x",
            "/crm/v7/%2E%2e/x",
            "/crm/v7%2fsettings",
            "/crm/v7/a\\b",
            "crm/v7",
            "/crm/v7/",
        ] {
            assert!(!is_normal_path(bad), "{bad}");
        }
        assert!(is_normal_path("/crm/v7/settings/user_groups"));
        assert!(is_normal_path("/"));
    }

    #[test]
    fn allow_rules_match_methods_and_segments() {
        let v: Vec<String> = vec!["v7".into()];
        let r = AllowRule::parse("PUT /crm/{version}/settings/user_groups/{id}").unwrap();
        assert!(r.matches(&http::Method::PUT, "/crm/v7/settings/user_groups/123", &v));
        assert!(!r.matches(&http::Method::PUT, "/crm/v2/settings/user_groups/123", &v));
        assert!(!r.matches(&http::Method::PUT, "/crm/v7/settings/user_groups/12a", &v));
        assert!(!r.matches(&http::Method::PUT, "/crm/v7/settings/user_groups/...", &v));
        assert!(!r.matches(&http::Method::GET, "/crm/v7/settings/user_groups/123", &v));
        assert!(!r.matches(&http::Method::PUT, "/crm/v7/settings/user_groups", &v));
        assert!(!r.matches(&http::Method::PUT, "/crm/v7/settings/user_groups/1/x", &v));
        let any = AllowRule::parse("GET /crm/{version}/settings/{thing}").unwrap();
        assert!(any.matches(&http::Method::GET, "/crm/v7/settings/a_b-c.d", &v));
        assert!(!any.matches(&http::Method::GET, "/crm/v7/settings/a%20b", &v));
        assert!(AllowRule::parse("CONNECT /crm/x").is_err());
        assert!(AllowRule::parse("GET /other").is_err());
        assert!(AllowRule::parse("GET").is_err());
        assert!(invalidates_user_groups(
            &http::Method::DELETE,
            "/crm/v7/settings/user_groups/1"
        ));
        assert!(invalidates_user_groups(
            &http::Method::POST,
            "/crm/v7/settings/user_groups"
        ));
        assert!(!invalidates_user_groups(
            &http::Method::GET,
            "/crm/v7/settings/user_groups"
        ));
        assert!(!invalidates_user_groups(
            &http::Method::POST,
            "/crm/v7/settings/user_groupsx"
        ));
    }
}
