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
    /// No configured route matched.
    Unmatched,
}

impl RouteKind {
    /// All variants, in label order.
    pub const ALL: [RouteKind; 2] = [RouteKind::AssociatedUsersCount, RouteKind::Unmatched];

    /// The route template (metric label, log field, cache-key component).
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::AssociatedUsersCount => {
                "/crm/{version}/settings/user_groups/actions/associated_users_count"
            }
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
}
