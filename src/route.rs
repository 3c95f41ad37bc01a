//! Which Zoho route a request is for, and the policy of each cached route.
//!
//! Cached routes are data: a [`RoutePolicy`] (method, [`PathTemplate`], parameter schema, cache
//! lifetimes, client-directive handling, credit cost, invalidation group) in the configured route
//! table, consumed by the one generic cached-route path of `proxy`. A request whose path matches
//! no cached route and no `[routes.passthrough]` rule is [`RouteKind::Unmatched`] and answered
//! locally with Zoho's 404 `INVALID_URL_PATTERN`. The upstream host never comes from the request:
//! it is always the tenant's configured `api_base`.

use std::borrow::Cow;
use std::time::Duration;

use sha2::{Digest, Sha256};

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
    /// Zoho API credits one upstream call of this route costs (weighs `credits_saved`, the
    /// credit budget and the reserve), unless a parameter of `credit_cost_when` was sent.
    pub credit_cost: u32,
    /// Credits a call costs when the query sends a parameter: (position in `schema`, cost),
    /// e.g. `cvid` → 3 on a records read (Zoho's credit table). The highest of
    /// `credit_cost` and the costs of the parameters sent applies ([`RoutePolicy::cost_of`]).
    pub credit_cost_when: Vec<(usize, u32)>,
    /// Invalidation group: a successful write to the group drops the tenant's entries of every
    /// route in it (see [`write_invalidates`]). It may name path parameters of the template,
    /// e.g. `records:{module}`: each stored entry remembers its group resolved against its own
    /// path ([`PathTemplate::resolve_group`]), so a write to `Leads` drops only `records:leads`.
    pub group: String,
}

impl RoutePolicy {
    /// Whether a request with `method` takes this route's cached path: its own method, and
    /// `HEAD` where that is `GET` (RFC 9111 §4: a `HEAD` is answered from the stored `GET`
    /// response, under the same key, and a `HEAD` miss fetches with `GET`).
    pub fn serves(&self, method: &http::Method) -> bool {
        *method == self.method
            || (self.method == http::Method::GET && *method == http::Method::HEAD)
    }

    /// Credits one upstream call costs for a query that sent `sent` (from the key memo or
    /// the canonicaliser, [`crate::canonical::ParamSchema::key_and_sent`]): the highest of
    /// `credit_cost` and the `credit_cost_when` costs of the parameters sent.
    pub fn cost_of(&self, sent: crate::canonical::SentParams) -> u32 {
        self.credit_cost_when
            .iter()
            .filter(|(param, _)| sent.contains(*param))
            .map(|(_, cost)| *cost)
            .fold(self.credit_cost, u32::max)
    }

    /// The methods this route serves, for an `Allow` header (RFC 9110 §10.2.1).
    pub fn allowed_methods(&self) -> impl Iterator<Item = &http::Method> {
        let head = (self.method == http::Method::GET).then_some(&http::Method::HEAD);
        std::iter::once(&self.method).chain(head)
    }
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
    Param(String),
    /// `**` (allowlist rules only, last segment): one or more further segments.
    Rest,
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

/// A path split into its segments once, so that a route table matches it without splitting
/// it again per template: the end offset of each of the first [`SplitPath::MAX`] segments (a
/// path with more only matches templates ending in `**`).
#[derive(Clone, Copy, Debug)]
pub struct SplitPath<'a> {
    path: &'a str,
    /// Byte offset just past segment `i` (its `/` or the end of the path).
    ends: [u16; SplitPath::MAX],
    /// Segments in the path (may exceed `MAX`).
    count: usize,
}

impl<'a> SplitPath<'a> {
    /// Segments whose bounds are kept.
    pub const MAX: usize = 24;

    /// Splits `path` (normal form: starts with `/`).
    pub fn new(path: &'a str) -> Self {
        let mut split = SplitPath {
            path,
            ends: [0; Self::MAX],
            count: 0,
        };
        if path.len() > usize::from(u16::MAX) {
            // Longer than any URI the gateway accepts: no segments, matches no template.
            return split;
        }
        for (i, b) in path.bytes().enumerate().skip(1) {
            if b == b'/' {
                split.push(i);
            }
        }
        split.push(path.len());
        split
    }

    fn push(&mut self, end: usize) {
        if self.count < Self::MAX {
            self.ends[self.count] = end as u16;
        }
        self.count += 1;
    }

    /// How many segments the path has.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Offset just past segment `i` (`i < min(count, MAX)`).
    fn end(&self, i: usize) -> usize {
        usize::from(self.ends[i])
    }

    /// Segment `i` (`i < min(count, MAX)`).
    fn segment(&self, i: usize) -> &'a str {
        let start = if i == 0 { 1 } else { self.end(i - 1) + 1 };
        &self.path[start..self.end(i)]
    }
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
        if path.split('/').count() - 1 > SplitPath::MAX {
            return Err(format!("path has more than {} segments", SplitPath::MAX));
        }
        let segments = path[1..]
            .split('/')
            .map(|seg| {
                if seg == "{version}" {
                    Segment::Version
                } else if seg == "{id}" {
                    Segment::Id
                } else if seg.starts_with('{') && seg.ends_with('}') && seg.len() > 2 {
                    Segment::Param(seg[1..seg.len() - 1].to_owned())
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
        self.matches_split(&SplitPath::new(path), versions)
    }

    /// [`PathTemplate::matches`] on a path already split (one split for a whole route table).
    pub fn matches_split<'a>(
        &self,
        path: &SplitPath<'a>,
        versions: &[String],
    ) -> Option<PathMatch<'a>> {
        let rest = matches!(self.segments.last(), Some(Segment::Rest));
        let fixed = self.segments.len() - usize::from(rest);
        if fixed > SplitPath::MAX {
            return None; // refused by `parse`
        }
        // Without `**` the segment counts must be equal; with it, at least one more segment.
        if rest {
            if path.count() <= fixed {
                return None;
            }
        } else if path.count() != fixed {
            return None;
        }
        let mut m = PathMatch {
            version: "",
            rest: path.path,
        };
        for (i, seg) in self.segments[..fixed].iter().enumerate() {
            let part = path.segment(i);
            let ok = match seg {
                Segment::Literal(l) => l == part,
                Segment::Version => {
                    m.version = part;
                    m.rest = &path.path[path.end(i)..];
                    versions.iter().any(|v| v == part)
                }
                Segment::Id => {
                    (1..=32).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_digit())
                }
                Segment::Param(_) => {
                    !part.is_empty()
                        && part
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
                }
                Segment::Rest => unreachable!("`**` is only ever the last segment"),
            };
            if !ok {
                return None;
            }
        }
        Some(m)
    }

    /// Whether the template has a `{name}` parameter segment called `name` (for checking an
    /// invalidation group such as `records:{module}` against its route).
    pub fn has_param(&self, name: &str) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::Param(n) if n == name))
    }

    /// Checks an invalidation group against this template: every `{name}` it holds must be a
    /// parameter segment of the template (`records:{module}` on `/crm/{version}/{module}`).
    ///
    /// # Errors
    /// A short description naming the unknown placeholder.
    pub fn check_group(&self, group: &str) -> Result<(), String> {
        let mut rest = group;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| "unclosed `{` in group".to_owned())?;
            let name = &after[..close];
            if !self.has_param(name) {
                return Err(format!(
                    "group names {{{name}}}, which the path does not have"
                ));
            }
            rest = &after[close + 1..];
        }
        Ok(())
    }

    /// `group` with every `{name}` replaced by the segment of `path` (a path this template
    /// matches) at that parameter's position, ASCII-lowercased (Zoho's module API names are
    /// case-insensitive in paths, so `Leads` and `leads` share a group). Placeholders the template
    /// does not have stay as written. Borrowed when `group` has none.
    pub fn resolve_group<'g>(&self, group: &'g str, path: &str) -> Cow<'g, str> {
        if !group.contains('{') {
            return Cow::Borrowed(group);
        }
        let mut out = group.to_owned();
        let parts = path.get(1..).unwrap_or("").split('/');
        for (seg, part) in self.segments.iter().zip(parts) {
            if let Segment::Param(name) = seg {
                let placeholder = format!("{{{name}}}");
                if out.contains(&placeholder) {
                    out = out.replace(&placeholder, &part.to_ascii_lowercase());
                }
            }
        }
        Cow::Owned(out)
    }
}

/// A resolved invalidation group as cache entries and holds remember it: the first 8 bytes of
/// SHA-256 over a domain tag and the group name (entries stay small; a collision only drops
/// more entries than needed).
pub fn group_hash(group: &str) -> u64 {
    let digest = Sha256::new()
        .chain_update(b"zoho-gateway/invalidation-group/v1\0")
        .chain_update(group.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// `path` with every percent-encoded *unreserved* character decoded (RFC 3986 §6.2.2.2:
/// `%41`–`%5A`, `%61`–`%7A`, `%30`–`%39`, `%2D`, `%2E`, `%5F`, `%7E`, hex digits in either case,
/// become `A`–`Z`, `a`–`z`, `0`–`9`, `-`, `.`, `_`, `~`), so `/crm/v8/Lead%73` and
/// `/crm/v8/Leads` are one path. Nothing else is decoded: `%2F`, `%5C`, `%25`, `%20`, … and
/// malformed escapes stay exactly as sent. Borrowed (no allocation) when there is nothing to
/// decode, which is every path without `%`. Dot segments are for the caller to check *after*
/// this (`%2E%2E` decodes to `..`; [`is_normal_path`]).
pub fn decode_unreserved(path: &str) -> Cow<'_, str> {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let unreserved_at = |bytes: &[u8], i: usize| -> Option<u8> {
        let (hi, lo) = (hex(*bytes.get(i + 1)?)?, hex(*bytes.get(i + 2)?)?);
        let c = hi << 4 | lo;
        (c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')).then_some(c)
    };
    if !path.contains('%') {
        return Cow::Borrowed(path);
    }
    let bytes = path.as_bytes();
    let Some(first) =
        (0..bytes.len()).find(|&i| bytes[i] == b'%' && unreserved_at(bytes, i).is_some())
    else {
        return Cow::Borrowed(path);
    };
    let mut out = String::with_capacity(path.len());
    out.push_str(&path[..first]);
    let mut i = first;
    while i < bytes.len() {
        match (bytes[i] == b'%')
            .then(|| unreserved_at(bytes, i))
            .flatten()
        {
            Some(c) => {
                out.push(char::from(c));
                i += 3;
            }
            None => {
                // Copy up to the next `%` unchanged (keeps multi-byte characters whole).
                let next = path[i + 1..].find('%').map_or(bytes.len(), |n| i + 1 + n);
                out.push_str(&path[i..next]);
                i = next;
            }
        }
    }
    Cow::Owned(out)
}

/// Whether a path is in normal form: starts with `/`, no empty, `.` or `..` segment, no
/// backslash, and no percent-encoded `.`, `/` or `\\` (`%2e`, `%2f`, `%5c`, any case).
/// Requests whose path is not are refused before routing, so traversal spellings never reach
/// a route or an upstream.
pub fn is_normal_path(path: &str) -> bool {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return false;
    }
    if b.len() == 1 {
        return true;
    }
    // One pass (this runs on every request): each segment is checked at its end.
    let mut start = 1;
    for i in 1..=b.len() {
        match b.get(i) {
            None | Some(b'/') => {
                if matches!(&b[start..i], b"" | b"." | b"..") {
                    return false;
                }
                start = i + 1;
            }
            Some(b'\\') => return false,
            Some(b'%') => {
                let escape = b.get(i + 1..i + 3).unwrap_or(b"");
                if [b"2e", b"2f", b"5c"]
                    .iter()
                    .any(|e| escape.eq_ignore_ascii_case(*e))
                {
                    return false;
                }
            }
            Some(_) => {}
        }
    }
    true
}

/// One `[routes.passthrough] allow` entry: a method and a [`PathTemplate`], whose last segment
/// may be `**`: one or more further segments of any content, e.g. `GET /crm/{version}/**` (the
/// "drop-in" rule: every read an SDK makes is forwarded, uncached). The path is in normal form
/// before matching (no `.`/`..`/encoded separators), and the host is always the tenant's.
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
        let mut template = PathTemplate::parse(path)?;
        if let Some(last) = template.segments.last_mut()
            && *last == Segment::Literal("**".to_owned())
        {
            *last = Segment::Rest;
        }
        if template
            .segments
            .iter()
            .any(|s| matches!(s, Segment::Literal(l) if l.contains('*')))
        {
            return Err("`**` may only be the last segment".into());
        }
        Ok(AllowRule { method, template })
    }

    /// Whether `method` and `path` (normal form) match this rule; `versions` are the API
    /// versions `{version}` may take.
    pub fn matches(&self, method: &http::Method, path: &str, versions: &[String]) -> bool {
        *method == self.method && self.matches_path(path, versions)
    }

    /// Whether `path` (normal form) matches this rule's template, whatever the method (for
    /// the `Allow` header of a 405).
    pub fn matches_path(&self, path: &str, versions: &[String]) -> bool {
        self.template.matches(path, versions).is_some()
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

/// The invalidation group a successful write with this method and path belongs to, if any
/// (`POST`/`PUT`/`PATCH`/`DELETE` under `/crm/{version}/`):
///
/// - `…/settings/user_groups[/…]`: `user_groups` (the user-group routes and the count route);
/// - any other `…/settings/…`, and `…/org[/…]`: `metadata` (modules, fields, layouts, org, …);
/// - `…/users[/…]`: `users`;
/// - `…/{module}[/…]`: `records:{module}`, the module ASCII-lowercased (records, record and
///   search reads of that module, whose route group is `records:{module}`).
///
/// Every cached entry of the tenant in that group is dropped.
pub fn write_invalidates<'p>(method: &http::Method, path: &'p str) -> Option<Cow<'p, str>> {
    let write = matches!(
        *method,
        http::Method::POST | http::Method::PUT | http::Method::PATCH | http::Method::DELETE
    );
    if !write {
        return None;
    }
    let (_version, tail) = path.strip_prefix("/crm/")?.split_once('/')?;
    if invalidates_user_groups(method, path) {
        return Some(Cow::Borrowed("user_groups"));
    }
    let (first, _) = tail.split_once('/').unwrap_or((tail, ""));
    if first.is_empty() {
        return None;
    }
    match first {
        "settings" | "org" => return Some(Cow::Borrowed("metadata")),
        "users" => return Some(Cow::Borrowed("users")),
        _ => {}
    }
    Some(Cow::Owned(format!(
        "records:{}",
        first.to_ascii_lowercase()
    )))
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
    fn only_unreserved_characters_are_decoded() {
        for (raw, decoded) in [
            ("/crm/v8/Lead%73", "/crm/v8/Leads"),
            (
                "/crm/v8/settings/user%5Fgroups",
                "/crm/v8/settings/user_groups",
            ),
            (
                "/crm/v8/settings/user%5fgroups",
                "/crm/v8/settings/user_groups",
            ),
            ("/crm/%76%38/%4C%65ads", "/crm/v8/Leads"),
            ("/crm/v8/a%2Db%2ec%7E", "/crm/v8/a-b.c~"),
            ("/crm/v8/%2E%2E/x", "/crm/v8/../x"),
            // Not unreserved, or not an escape: kept exactly.
            ("/crm/v8/a%2Fb%2fc%5Cd", "/crm/v8/a%2Fb%2fc%5Cd"),
            ("/crm/v8/a%20b%25c%zz%4", "/crm/v8/a%20b%25c%zz%4"),
            ("/crm/v8/a%2541", "/crm/v8/a%2541"),
            ("/crm/v8/é%41", "/crm/v8/éA"),
        ] {
            assert_eq!(decode_unreserved(raw), decoded, "{raw}");
        }
        for plain in ["/crm/v8/Leads", "/crm/v8/a%2Fb", "/crm/v8/%", "/crm/v8/%4"] {
            assert!(
                matches!(decode_unreserved(plain), Cow::Borrowed(_)),
                "{plain}"
            );
        }
        // Dot segments are checked after decoding.
        assert!(!is_normal_path(&decode_unreserved("/crm/v8/%2e%2E/org")));
        assert!(!is_normal_path(&decode_unreserved("/crm/v8/%2E/org")));
        assert!(!is_normal_path(&decode_unreserved("/crm/v8%2Forg")));
        assert!(is_normal_path(&decode_unreserved("/crm/v8/Lead%73")));
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

    #[test]
    fn a_double_star_matches_one_or_more_trailing_segments() {
        let v: Vec<String> = vec!["v7".into()];
        let r = AllowRule::parse("GET /crm/{version}/**").unwrap();
        for ok in [
            "/crm/v7/x",
            "/crm/v7/Leads/1/Notes",
            "/crm/v7/settings/modules",
        ] {
            assert!(r.matches(&http::Method::GET, ok, &v), "{ok}");
        }
        assert!(!r.matches(&http::Method::GET, "/crm/v7", &v));
        assert!(!r.matches(&http::Method::GET, "/crm/v6/x", &v));
        assert!(!r.matches(&http::Method::POST, "/crm/v7/x", &v));
        assert!(AllowRule::parse("GET /crm/**/x").is_err());
        assert!(AllowRule::parse("GET /crm/{version}/a*").is_err());
        // A cached route's template never treats `**` as a wildcard.
        let t = PathTemplate::parse("/crm/{version}/**").unwrap();
        assert!(t.matches("/crm/v7/x", &v).is_none());
        // More segments than a split keeps bounds for: only `**` rules can match.
        let deep = format!("/crm/v7{}", "/x".repeat(SplitPath::MAX + 3));
        assert!(r.matches(&http::Method::GET, &deep, &v));
        assert!(PathTemplate::parse(&deep).is_err());
        let m = PathTemplate::parse("/crm/{version}/x/{id}")
            .unwrap()
            .matches("/crm/v7/x/42", &v)
            .unwrap();
        assert_eq!((m.version, m.rest), ("v7", "/x/42"));
    }

    #[test]
    fn writes_name_their_invalidation_group() {
        let g = |m: http::Method, p| write_invalidates(&m, p).map(|g| g.into_owned());
        use http::Method as M;
        assert_eq!(
            g(M::POST, "/crm/v7/Leads").as_deref(),
            Some("records:leads")
        );
        assert_eq!(
            g(M::PUT, "/crm/v8/leads/1/actions/x").as_deref(),
            Some("records:leads")
        );
        assert_eq!(
            g(M::DELETE, "/crm/v7/settings/user_groups/1").as_deref(),
            Some("user_groups")
        );
        assert_eq!(
            g(M::PATCH, "/crm/v7/settings/fields").as_deref(),
            Some("metadata")
        );
        assert_eq!(g(M::PUT, "/crm/v7/users/1").as_deref(), Some("users"));
        assert_eq!(g(M::POST, "/crm/v8/org/photo").as_deref(), Some("metadata"));
        assert_eq!(g(M::GET, "/crm/v7/Leads"), None);
        assert_eq!(g(M::POST, "/crm/v7"), None);
        assert_eq!(g(M::POST, "/other/v7/Leads"), None);
    }

    #[test]
    fn groups_resolve_against_the_entry_path() {
        let v: Vec<String> = vec!["v7".into()];
        let t = PathTemplate::parse("/crm/{version}/{module}/{id}").unwrap();
        assert!(t.matches("/crm/v7/Leads/12", &v).is_some());
        assert!(t.has_param("module") && !t.has_param("id"));
        assert!(t.check_group("records:{module}").is_ok());
        assert!(t.check_group("metadata").is_ok());
        assert!(t.check_group("records:{modul}").is_err());
        assert!(t.check_group("records:{module").is_err());
        assert_eq!(
            t.resolve_group("records:{module}", "/crm/v7/Leads/12"),
            "records:leads"
        );
        assert!(matches!(
            t.resolve_group("metadata", "/crm/v7/Leads/12"),
            Cow::Borrowed("metadata")
        ));
        assert_eq!(
            t.resolve_group("records:{other}", "/crm/v7/Leads/12"),
            "records:{other}"
        );
        assert_eq!(
            group_hash("records:leads"),
            group_hash(&t.resolve_group("records:{module}", "/crm/v7/LEADS/1"))
        );
        assert_ne!(group_hash("records:leads"), group_hash("records:contacts"));
    }
}
