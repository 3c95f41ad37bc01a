//! Which Zoho route a request is for, from its path.
//!
//! Only the exact path shapes below are recognised; everything else is [`RouteKind::Unmatched`]
//! and answered locally with Zoho's 404 `INVALID_URL_PATTERN`. The upstream host never comes
//! from the request: it is always the tenant's configured `api_base`.

/// Route templates: the `route` metric label and part of the cache key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// `GET /crm/{version}/settings/user_groups/actions/associated_users_count`.
    AssociatedUsersCount,
    /// A route on the `[routes.passthrough]` allowlist (forwarded, never cached).
    Passthrough,
    /// No configured route matched.
    Unmatched,
}

impl RouteKind {
    /// All variants, in label order.
    pub const ALL: [RouteKind; 3] = [
        RouteKind::AssociatedUsersCount,
        RouteKind::Passthrough,
        RouteKind::Unmatched,
    ];

    /// The route template (metric label, log field, cache-key component).
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::AssociatedUsersCount => {
                "/crm/{version}/settings/user_groups/actions/associated_users_count"
            }
            RouteKind::Passthrough => "passthrough",
            RouteKind::Unmatched => "unmatched",
        }
    }

    /// Position in [`RouteKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A matched route with its path parameters (borrowed from the request path).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Matched<'a> {
    /// Which route.
    pub kind: RouteKind,
    /// The `{version}` segment, e.g. `v7`.
    pub version: &'a str,
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

/// One `[routes.passthrough] allow` entry: a method and a path pattern. In patterns,
/// `{version}` matches only the configured API versions, `{id}` only a Zoho record id (1–32
/// digits), and any other `{name}` one segment of `[A-Za-z0-9_.-]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowRule {
    /// HTTP method.
    pub method: http::Method,
    segments: Vec<Segment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Version,
    Id,
    Param,
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
        Ok(AllowRule { method, segments })
    }

    /// Whether `method` and `path` (normal form) match this rule; `versions` are the API
    /// versions `{version}` may take.
    pub fn matches(&self, method: &http::Method, path: &str, versions: &[String]) -> bool {
        if method != self.method {
            return false;
        }
        let mut parts = path[1..].split('/');
        for seg in &self.segments {
            let Some(part) = parts.next() else {
                return false;
            };
            let ok = match seg {
                Segment::Literal(l) => l == part,
                Segment::Version => versions.iter().any(|v| v == part),
                Segment::Id => {
                    (1..=32).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_digit())
                }
                Segment::Param => part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')),
            };
            if !ok {
                return false;
            }
        }
        parts.next().is_none()
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

const COUNT_SUFFIX: &str = "/settings/user_groups/actions/associated_users_count";

/// Matches a request path (no query) against the known routes. `versions` are the allowed
/// `{version}` values; a path with another version does not match.
pub fn match_path<'a>(path: &'a str, versions: &[String]) -> Option<Matched<'a>> {
    let rest = path.strip_prefix("/crm/")?;
    let (version, tail) = rest.split_at(rest.find('/')?);
    if tail == COUNT_SUFFIX && versions.iter().any(|v| v == version) {
        return Some(Matched {
            kind: RouteKind::AssociatedUsersCount,
            version,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_exact_count_path() {
        let versions: Vec<String> = ["v7", "v8"].map(String::from).to_vec();
        let m = match_path(
            "/crm/v7/settings/user_groups/actions/associated_users_count",
            &versions,
        )
        .unwrap();
        assert_eq!(m.kind, RouteKind::AssociatedUsersCount);
        assert_eq!(m.version, "v7");
        for bad in [
            "/crm/v6/settings/user_groups/actions/associated_users_count",
            "/crm/v7/settings/user_groups/actions/associated_users_count/",
            "/crm/v7//settings/user_groups/actions/associated_users_count",
            "/crm/v7/settings/user_groups/actions/../actions/associated_users_count",
            "/crm/v7/settings/user_groups",
            "/crm/v7",
            "/",
        ] {
            assert_eq!(match_path(bad, &versions), None, "{bad}");
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
