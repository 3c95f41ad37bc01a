//! Request → canonical query → cache key: the cache key contract.
//!
//! A key that merges two different questions serves a wrong answer; a key that splits one question
//! into many wastes Zoho credits. This module owns both directions of that risk. The gateway calls
//! [`canonicalize`] and then [`cache_key`] on every request, cache hits included.
//!
//! # What can change Zoho's answer, and how each enters the key
//!
//! | request property | enters the key as | notes |
//! |---|---|---|
//! | tenant (org, data centre, token owner) | [`KeyScope::tenant`] bytes | the tenant's identity scope (its configured name and a one-way fingerprint of its API host and credentials, [`crate::config::TenantConfig::identity_scope`]) pins one Zoho org, data centre and token owner; new credentials or a new host (a live reload) never meet the old identity's entries. A client `X-CRM-ORG` header selects another org: the gateway must fold it into `tenant` or bypass the cache. |
//! | credential identity | [`KeyScope::credential`] (presence byte + 32 bytes) | a digest of the caller's credential when answers may differ per user (user-scoped tokens); `None` when the tenant's own token is used for everybody. Never the raw token: tokens rotate hourly. |
//! | HTTP method | [`KeyScope::method`] bytes, byte-exact | the route's method: a `HEAD` is keyed as the `GET` it is answered from (RFC 9111 §4). |
//! | API version (`v7` in `/crm/v7/...`) | [`KeyScope::version`] bytes, byte-exact | v7 and v8 may answer differently. |
//! | route (path after the version) | [`KeyScope::route`] bytes, byte-exact | the gateway passes the concrete path, ids included, after decoding percent-encoded unreserved characters (RFC 3986 §6.2.2.2, [`crate::route::decode_unreserved`]: `Lead%73` is `Leads`). |
//! | `filters` | the typed canonical tree (below), or an "absent" tag | |
//! | `page` | `u32`, default `1` filled in | omitting it equals `page=1`. |
//! | `per_page` | `u32`, default `200` filled in | omitting it equals `per_page=200`. |
//! | every other query parameter | (decoded name, decoded value or "no `=`") pairs, sorted by name, repeated values in request order | kept byte-exact: `a` and `a=` differ, `Page` is not `page`. |
//! | filter mode ([`FilterMode`]) | one tag byte | semantic and strict keys never collide. |
//! | `X-EXTERNAL` header | [`KeyScope::external`] (presence byte + length-prefixed bytes), byte-exact | Zoho's external-id lookups: it changes which record an id in the path names. Forwarded upstream as received; more than one is a local 400. |
//!
//! # Headers
//!
//! The rule: a request header enters the key exactly when the gateway forwards it upstream on
//! a cached route and it can change Zoho's answer. The gateway builds every upstream request's
//! headers itself, so a header it does not forward cannot change what is stored.
//!
//! | header | forwarded | in the key | why |
//! |---|---|---|---|
//! | `Authorization`, `X-Gateway-Key` | the tenant's token (or a pass-through client's own) | as tenant / [`KeyScope::credential`] | the token rotates hourly; its owner is what matters. |
//! | `X-EXTERNAL` | yes | yes ([`KeyScope::external`]) | selects the external-id field an id is read by. |
//! | `X-CRM-ORG` | no | no | the tenant pins one org; a client cannot select another through the gateway. |
//! | `X-ZOHO-SDK`, `User-Agent` | no (the gateway sends its own `User-Agent`) | no | per-host SDK metadata; Zoho's JSON does not depend on it. |
//! | `Accept`, `Accept-Encoding`, `Accept-Language` | no (`Accept: application/json`, identity coding) | no | the stored body is identity-coded JSON, the same for every client. |
//! | `If-None-Match`, `If-Modified-Since` | no (misses fetch unconditionally) | no | evaluated by the gateway against the stored entry's validator: `304` or the entry (RFC 9110 §13). |
//! | `Cache-Control`, `Pragma` | no | no | client directives (`no-cache`, `no-store`) act on the lookup, per route policy. |
//! | `X-Request-Id`, `X-Forwarded-For`, tracing headers | the gateway's own | no | correlation only. |
//! | `Cookie` and any other header | no | no | not forwarded, so it cannot change the answer. |
//!
//! # Decoding, exactly once
//!
//! The raw query (the part after `?`, without it) is split on `&`; empty segments are ignored;
//! each segment is split at its first `=`. Names and values are form-decoded once: `+` is a space,
//! `%2B` a literal plus, `%26` a literal `&` that never splits parameters. Invalid
//! percent-encoding (`%zz`, a truncated `%4`) or bytes that do not decode to UTF-8 are bad input
//! ([`InvalidKind::BadEncoding`], `param = "query"`). Raw characters that RFC 3986 does not allow
//! unencoded in a query (space, `"`, `#`, `{`, `}`, `[`, `]`, `<`, `>`, `\`, `^`, `` ` ``, `|`,
//! control characters, non-ASCII) make the request [`NoCacheReason::UnencodedCharacter`]: Zoho's
//! front end may reject them, and we do not guess. A `filters`, `page` or `per_page` segment
//! without `=` counts as an empty value (so it is invalid); for other parameters `a` and `a=` stay
//! distinct.
//!
//! # `filters`
//!
//! The decoded `filters` value is parsed (bounded by [`FilterLimits`]) by a strict RFC 8259 JSON
//! parser into a typed tree:
//!
//! - criterion: `{"field":{"api_name":F},"comparator":C,"value":V}` — `F`, `C` and `V` strings;
//! - group: `{"group_operator":"and"|"or","group":[member, ...]}` (operator ASCII
//!   case-insensitive), members criteria or groups.
//!
//! Syntactic normalisation (both modes): object member order and whitespace never matter; JSON
//! string escapes are decoded (`"\u00dc"` equals `"Ü"`); the operator is lower-cased. Values stay
//! byte-exact (no case folding, trimming or Unicode normalisation).
//!
//! Semantic normalisation ([`FilterMode::Semantic`], the default) also: members of a group are
//! order-independent (sorted), duplicate members collapse, a nested group with its parent's
//! operator is flattened into it, and a group with one member equals that member. In
//! [`FilterMode::Strict`] member order and group structure are kept as sent.
//!
//! # Outcomes, in order of precedence
//!
//! 1. [`Canonical::Invalid`] for bad percent-encoding or UTF-8 in the query.
//! 2. [`Canonical::Uncacheable`] for raw unencoded characters, and for a repeated `filters`,
//!    `page` or `per_page` parameter.
//! 3. [`Canonical::Invalid`] for `page` / `per_page`: not a plain decimal number (ASCII digits only,
//!    leading zeros allowed), `page` < 1, `per_page` outside `1..=200`, or above `u32::MAX`.
//! 4. [`Canonical::Invalid`] for `filters` that break the JSON syntax or a [`FilterLimits`] bound
//!    (these stop the parse).
//! 5. [`Canonical::Uncacheable`] when the filter cannot be canonicalised with certainty (Zoho's
//!    reading is unknown, so the request is forwarded as-is): duplicate keys in a criterion, group
//!    or `field` object; a `value` that is not a JSON string (number, boolean, `null`, array,
//!    object: Zoho's docs only ever show strings); a `field` object carrying `id` (with or
//!    without `api_name`); unknown extra members in a criterion, group or `field` object; an object
//!    mixing criterion and group members; a `\u` escape that is a lone surrogate.
//! 6. [`Canonical::Invalid`] for a filter Zoho rejects with 400 `INVALID_DATA`: a shape that is
//!    neither a criterion nor a group (including a missing or wrongly typed member), an empty
//!    group, an unknown `group_operator`, a field or comparator outside
//!    [`CanonicalRules::allowed_fields`] / [`CanonicalRules::allowed_comparators`] (compared
//!    byte-exact).
//! 7. [`Canonical::Key`] otherwise.
//!
//! # `criteria` (Zoho search, `GET /crm/{v}/{module}/search`)
//!
//! [`canonicalize_criteria`] takes the `criteria` value form-decoded once (so `%5C%28` is `\(` and
//! `+` a space, as Zoho decodes it) and parses it, bounded by [`CriteriaLimits`], into a typed
//! tree. Grammar, from Zoho's search-records docs (v2–v8) and its v8 OpenAPI spec:
//!
//! ```text
//! criteria  = member *( sp join sp member )        ; one join word per level
//! member    = "(" sp criteria sp ")" | criterion   ; extra parentheses allowed
//! criterion = "(" field ":" operator ":" value ")"
//! join      = "and" | "or"
//! sp        = *" "
//! ```
//!
//! - `field` is everything up to the first `:`, `operator` up to the second, `value` the rest up
//!   to the first unescaped `)` (so a date-time value keeps its colons,
//!   `(Modified_Time:greater_equal:2023-04-19T05:58:06+05:30)`).
//! - In values, `\(`, `\)` and `\,` stand for `(`, `)` and `,` (Zoho: "when you use parentheses
//!   or comma in the value, you must escape them"). `in`, `not_in` take a list and `between`
//!   two values, separated by unescaped commas; the other operators take one value.
//! - operators: `equals`, `not_equal`, `starts_with`, `in`, `not_in`, `greater_than`,
//!   `greater_equal`, `less_than`, `less_equal`, `between` (lowercase, as documented).
//!
//! Normalisation (what shares a key): spaces between tokens (around `and`/`or` and inside
//! group parentheses; Zoho's own Deluge sample writes `((A) and (B))`); redundant parentheses
//! (`((A))` is `(A)`, and a top level `(A)and(B)` is `((A)and(B))`); members of a group are
//! order-independent (sorted) and a nested group with its parent's join word is flattened into
//! it; the values of an `in` / `not_in` list are order-independent (sorted); the escaping of a
//! value (its decoded text is what counts). None of these changes the multiset of criteria or
//! of list values: **duplicates are kept**, because Zoho documents that `equals` matches
//! differently when a search has one condition or several, so `((A)or(A))` need not mean `(A)`.
//! Field names, values (including leading and trailing spaces, and case) and the order of the
//! two `between` values are kept byte-exact. Field names are not checked against the module's
//! fields (the gateway does not know them): an unknown field is Zoho's 400 to give.
//!
//! Outcomes, in order of precedence:
//!
//! 1. [`CriteriaOutcome::Uncacheable`] ([`NoCacheReason::CriteriaTooComplex`]) when the
//!    decoded value is longer than [`CriteriaLimits::max_bytes`] (checked first) or nests
//!    deeper than [`CriteriaLimits::max_depth`] (checked while parsing; stops the parse). These
//!    are the gateway's bounds, not Zoho's, so the request is forwarded. Then uncacheable
//!    ([`NoCacheReason::CriteriaEmpty`]) for an empty or all-space value: Zoho's answer to it
//!    is undocumented. An empty value inside a criterion, `(A:equals:)`, is kept as it is.
//! 2. Uncacheable, stopping the parse, where the rest cannot be tokenised with certainty: an
//!    unescaped `(` inside a criterion ([`NoCacheReason::CriteriaUnescapedParenthesis`]), a
//!    backslash not followed by `(`, `)` or `,` ([`NoCacheReason::CriteriaUnknownEscape`]).
//! 3. [`CriteriaOutcome::Invalid`] ([`InvalidKind::CriteriaSyntax`], Zoho's 400
//!    `INVALID_QUERY` "Invalid query formed"), stopping the parse: unbalanced parentheses,
//!    `()`, a member that is not parenthesised, a criterion without two `:`, an empty field
//!    or operator, two members without a join word, a word other than `and`/`or` (any case)
//!    between members, anything after the last member.
//! 4. Uncacheable, recorded while the parse goes on (the first one is reported): an operator or
//!    join word in another case
//!    ([`NoCacheReason::CriteriaOperatorCase`]); an operator outside the list
//!    ([`NoCacheReason::CriteriaUnknownOperator`]); a field with characters outside
//!    `A-Z a-z 0-9 _ . $`, e.g. spaces ([`NoCacheReason::CriteriaUnusualField`]); `and` and `or`
//!    in one level ([`NoCacheReason::CriteriaMixedOperators`]: Zoho's precedence is
//!    undocumented); an unescaped comma in a single-valued operator's value
//!    ([`NoCacheReason::CriteriaUnescapedComma`]); `between` without exactly two values
//!    ([`NoCacheReason::CriteriaValueCount`]); tabs or newlines between tokens
//!    ([`NoCacheReason::CriteriaUnusualWhitespace`]).
//! 5. Invalid: more criteria than [`CriteriaLimits::max_criteria`] (default 15, Zoho's 400
//!    `CRITERIA_LIMIT_EXCEEDED`), then an `in` list longer than
//!    [`CriteriaLimits::max_in_values`] (default 100, Zoho's 400 `INVALID_QUERY`).
//! 6. [`CriteriaOutcome::Key`] otherwise. [`Criteria::write_key`] streams the tree as tagged,
//!    length-prefixed fields (prefix-free); [`Criteria::render`] spells it canonically
//!    (`((A:equals:x)and(B:in:a,b\,c))`), and parsing the rendering gives the same key.
//!
//! # The key
//!
//! [`cache_key`] feeds a SHA-256 hasher with a domain-separation tag and then every property above
//! as tagged, length-prefixed fields (counts before lists), so distinct inputs are distinct byte
//! streams: `a=1,2` and `a=1&a=2` cannot collide, nor can `%26` and `&`.

mod criteria;
mod filters;
mod key;
mod memo;
mod query;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;

pub use criteria::{Criteria, CriteriaLimits};
pub use key::{CacheKey, KeyScope, cache_key};
pub use memo::{KeyMemo, SchemaMemo};

/// How far [`canonicalize`] normalises `filters`.
///
/// Deserialises from `"semantic"` or `"strict"`. Default: [`FilterMode::Semantic`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FilterMode {
    /// Syntactic normalisation plus: group members are unordered, duplicates collapse,
    /// same-operator nested groups flatten, one-member groups equal their member.
    #[default]
    Semantic,
    /// Only the syntactic normalisations (key order, whitespace, escapes, operator case); member
    /// order and grouping are kept.
    Strict,
}

impl FilterMode {
    /// Stable lowercase label: `"semantic"` or `"strict"`.
    pub fn as_str(self) -> &'static str {
        match self {
            FilterMode::Semantic => "semantic",
            FilterMode::Strict => "strict",
        }
    }
}

/// Bounds on the `filters` parameter; exceeding one is [`Canonical::Invalid`].
///
/// All fields default independently when deserialised.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct FilterLimits {
    /// Maximum length in bytes of the decoded filters JSON. Default: 16384.
    #[serde(default = "FilterLimits::default_max_bytes")]
    pub max_bytes: usize,
    /// Maximum JSON nesting depth, counting every object and array (the sample's
    /// group → array → criterion → `field` object is depth 4; 16 allows groups nested 7 deep).
    /// Parsing, normalising and hashing recurse once per level, so keep it in the hundreds at
    /// most. Default: 16.
    #[serde(default = "FilterLimits::default_max_depth")]
    pub max_depth: usize,
    /// Maximum number of criteria in the whole tree, duplicates included. Default: 256.
    #[serde(default = "FilterLimits::default_max_criteria")]
    pub max_criteria: usize,
}

impl FilterLimits {
    fn default_max_bytes() -> usize {
        16384
    }
    fn default_max_depth() -> usize {
        16
    }
    fn default_max_criteria() -> usize {
        256
    }
}

impl Default for FilterLimits {
    fn default() -> Self {
        FilterLimits {
            max_bytes: Self::default_max_bytes(),
            max_depth: Self::default_max_depth(),
            max_criteria: Self::default_max_criteria(),
        }
    }
}

/// Per-route canonicalisation rules.
///
/// Default: the `associated_users_count` endpoint's rules — semantic mode, fields `name` and
/// `description`, comparators `equal` and `starts_with`, default [`FilterLimits`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanonicalRules {
    /// Filter normalisation mode. Default: [`FilterMode::Semantic`].
    pub mode: FilterMode,
    /// Field `api_name`s allowed in criteria, compared byte-exact. Default: `name`, `description`.
    pub allowed_fields: Vec<String>,
    /// Comparators allowed in criteria, compared byte-exact. Default: `equal`, `starts_with`.
    pub allowed_comparators: Vec<String>,
    /// Size, depth and criteria bounds. Default: [`FilterLimits::default`].
    pub limits: FilterLimits,
}

impl Default for CanonicalRules {
    fn default() -> Self {
        CanonicalRules {
            mode: FilterMode::Semantic,
            allowed_fields: vec!["name".to_owned(), "description".to_owned()],
            allowed_comparators: vec!["equal".to_owned(), "starts_with".to_owned()],
            limits: FilterLimits::default(),
        }
    }
}

/// Result of canonicalising one raw query string (the part after `?`, without the `?`; `""` when
/// absent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Canonical {
    /// Canonical form found: cache under [`cache_key`] of it.
    Key(CanonicalQuery),
    /// Cannot be canonicalised with certainty: forward as-is, do not cache.
    Uncacheable(NoCacheReason),
    /// Zoho would reject it: answer 400 `INVALID_DATA` locally, no upstream call.
    Invalid(InvalidQuery),
}

/// Result of [`ParamSchema::key`]: [`Canonical`] with the query already turned into its
/// [`CacheKey`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyOutcome {
    /// The cache key of the query in its scope.
    Key(CacheKey),
    /// Cannot be canonicalised with certainty: forward as-is, do not cache.
    Uncacheable(NoCacheReason),
    /// Zoho would reject it: answer 400 `INVALID_DATA` locally, no upstream call.
    Invalid(InvalidQuery),
}

/// Why a request is forwarded without caching.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NoCacheReason {
    /// `filters`, `page` or `per_page` appears more than once.
    RepeatedParam,
    /// A criterion, group or `field` object has the same key twice.
    DuplicateJsonKey,
    /// A criterion `value` that is not a JSON string.
    UnsupportedValueType,
    /// A criterion `field` carries `id` (with or without `api_name`).
    UnsupportedFieldSelector,
    /// A criterion, group or `field` object has a member outside the grammar, or mixes criterion
    /// and group members.
    UnknownJsonMember,
    /// The raw query holds a character RFC 3986 does not allow unencoded.
    UnencodedCharacter,
    /// A JSON `\u` escape is an unpaired UTF-16 surrogate.
    LoneSurrogate,
    /// `criteria` is empty or only spaces.
    CriteriaEmpty,
    /// `criteria` exceeds [`CriteriaLimits::max_bytes`] or [`CriteriaLimits::max_depth`]
    /// (gateway bounds; Zoho's are unknown).
    CriteriaTooComplex,
    /// A `criteria` operator or `and`/`or` in another case than Zoho's docs (`EQUALS`, `AND`).
    CriteriaOperatorCase,
    /// A `criteria` operator outside Zoho's documented list.
    CriteriaUnknownOperator,
    /// A `criteria` field name with characters other than `A-Z a-z 0-9 _ . $` (e.g. spaces).
    CriteriaUnusualField,
    /// `and` and `or` side by side in one parenthesis level (`(A)and(B)or(C)`).
    CriteriaMixedOperators,
    /// An unescaped `(` inside a `criteria` value.
    CriteriaUnescapedParenthesis,
    /// A backslash in `criteria` not followed by `(`, `)` or `,`.
    CriteriaUnknownEscape,
    /// An unescaped `,` in the value of a single-valued `criteria` operator (`equals`, ...).
    CriteriaUnescapedComma,
    /// A `between` without exactly two comma-separated values.
    CriteriaValueCount,
    /// Whitespace other than spaces between `criteria` tokens.
    CriteriaUnusualWhitespace,
    /// A parameter the route's schema does not name, on a route that bypasses for those
    /// ([`UnknownParams::Bypass`]).
    UnknownParam,
    /// A comma-separated set with an empty item, or more items than the schema caches.
    UnsupportedSet,
}

impl NoCacheReason {
    /// Stable snake_case label for `Cache-Status: ...; detail=` and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            NoCacheReason::RepeatedParam => "repeated_param",
            NoCacheReason::DuplicateJsonKey => "duplicate_json_key",
            NoCacheReason::UnsupportedValueType => "unsupported_value_type",
            NoCacheReason::UnsupportedFieldSelector => "unsupported_field_selector",
            NoCacheReason::UnknownJsonMember => "unknown_json_member",
            NoCacheReason::UnencodedCharacter => "unencoded_character",
            NoCacheReason::LoneSurrogate => "lone_surrogate",
            NoCacheReason::CriteriaEmpty => "criteria_empty",
            NoCacheReason::CriteriaTooComplex => "criteria_too_complex",
            NoCacheReason::CriteriaOperatorCase => "criteria_operator_case",
            NoCacheReason::CriteriaUnknownOperator => "criteria_unknown_operator",
            NoCacheReason::CriteriaUnusualField => "criteria_unusual_field",
            NoCacheReason::CriteriaMixedOperators => "criteria_mixed_operators",
            NoCacheReason::CriteriaUnescapedParenthesis => "criteria_unescaped_parenthesis",
            NoCacheReason::CriteriaUnknownEscape => "criteria_unknown_escape",
            NoCacheReason::CriteriaUnescapedComma => "criteria_unescaped_comma",
            NoCacheReason::CriteriaValueCount => "criteria_value_count",
            NoCacheReason::CriteriaUnusualWhitespace => "criteria_unusual_whitespace",
            NoCacheReason::UnknownParam => "unknown_param",
            NoCacheReason::UnsupportedSet => "unsupported_set",
        }
    }
}

impl std::fmt::Display for NoCacheReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is wrong with an [`InvalidQuery`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InvalidKind {
    /// Invalid percent-encoding or UTF-8 in the query string.
    BadEncoding,
    /// `filters` is not valid JSON.
    InvalidJson,
    /// A JSON node is neither a criterion nor a group, or a member has the wrong type.
    BadShape,
    /// A group with no members.
    EmptyGroup,
    /// `group_operator` is neither `and` nor `or` (any case).
    UnknownOperator,
    /// A criterion field not in the rules.
    FieldNotAllowed,
    /// A criterion comparator not in the rules.
    ComparatorNotAllowed,
    /// `page` or `per_page` is not a plain decimal number.
    NotANumber,
    /// `page` < 1, or `per_page` outside `1..=200`.
    OutOfRange,
    /// Decoded `filters` longer than [`FilterLimits::max_bytes`].
    TooLarge,
    /// `filters` nested deeper than [`FilterLimits::max_depth`].
    TooDeep,
    /// More criteria than [`FilterLimits::max_criteria`].
    TooManyCriteria,
    /// `criteria` does not follow the `(field:operator:value)` / `and` / `or` grammar
    /// (unbalanced parentheses, a missing part, a missing or unknown joining word).
    CriteriaSyntax,
    /// More `criteria` criteria than [`CriteriaLimits::max_criteria`].
    CriteriaLimitExceeded,
    /// More values in one `in` list than [`CriteriaLimits::max_in_values`].
    TooManyValues,
    /// A parameter the route's schema does not name, on a route that rejects those
    /// ([`UnknownParams::Reject`]).
    UnknownParam,
    /// An enum parameter with a value outside its list.
    NotInEnum,
    /// A parameter Zoho requires is absent (Zoho's `REQUIRED_PARAM_MISSING`).
    RequiredParamMissing,
    /// Two parameters Zoho refuses together (e.g. `page` and `page_token`): Zoho's
    /// `AMBIGUITY_DURING_PROCESSING`.
    Conflict,
    /// A comma-separated set with more items than Zoho accepts (more than 50 `fields` or 100
    /// `ids` of a records read), on a parameter whose `max_items` is Zoho's limit
    /// ([`SetOverflow::Reject`]): Zoho's `LIMIT_EXCEEDED`.
    LimitExceeded,
}

impl InvalidKind {
    /// Zoho's error `code` for the 400 the gateway answers: `REQUIRED_PARAM_MISSING` for a
    /// missing mandatory parameter; `INVALID_QUERY` for a malformed search `criteria` or too
    /// many `in` values and `CRITERIA_LIMIT_EXCEEDED` for too many criteria (both from Zoho's
    /// v8 OpenAPI spec, `module_search.json`); `INVALID_DATA` otherwise (API-NOTES §4).
    pub fn zoho_code(self) -> &'static str {
        match self {
            InvalidKind::RequiredParamMissing => "REQUIRED_PARAM_MISSING",
            // Zoho's v8 get-records answer to `page` with `page_token` (or `cvid` with
            // `sort_by`).
            InvalidKind::Conflict => "AMBIGUITY_DURING_PROCESSING",
            InvalidKind::CriteriaSyntax | InvalidKind::TooManyValues => "INVALID_QUERY",
            InvalidKind::CriteriaLimitExceeded => "CRITERIA_LIMIT_EXCEEDED",
            // Zoho's get-records answer to more than 50 `fields` or 100 `ids` (400, `details`
            // `param_name` and `limit`; the simulator's records API, Zoho's v8 OpenAPI error
            // codes).
            InvalidKind::LimitExceeded => "LIMIT_EXCEEDED",
            InvalidKind::BadEncoding
            | InvalidKind::InvalidJson
            | InvalidKind::BadShape
            | InvalidKind::EmptyGroup
            | InvalidKind::UnknownOperator
            | InvalidKind::FieldNotAllowed
            | InvalidKind::ComparatorNotAllowed
            | InvalidKind::NotANumber
            | InvalidKind::OutOfRange
            | InvalidKind::TooLarge
            | InvalidKind::TooDeep
            | InvalidKind::TooManyCriteria
            | InvalidKind::UnknownParam
            | InvalidKind::NotInEnum => "INVALID_DATA",
        }
    }

    /// Stable snake_case label for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            InvalidKind::BadEncoding => "bad_encoding",
            InvalidKind::InvalidJson => "invalid_json",
            InvalidKind::BadShape => "bad_shape",
            InvalidKind::EmptyGroup => "empty_group",
            InvalidKind::UnknownOperator => "unknown_operator",
            InvalidKind::FieldNotAllowed => "field_not_allowed",
            InvalidKind::ComparatorNotAllowed => "comparator_not_allowed",
            InvalidKind::NotANumber => "not_a_number",
            InvalidKind::OutOfRange => "out_of_range",
            InvalidKind::TooLarge => "too_large",
            InvalidKind::TooDeep => "too_deep",
            InvalidKind::TooManyCriteria => "too_many_criteria",
            InvalidKind::CriteriaSyntax => "criteria_syntax",
            InvalidKind::CriteriaLimitExceeded => "criteria_limit_exceeded",
            InvalidKind::TooManyValues => "too_many_values",
            InvalidKind::UnknownParam => "unknown_param",
            InvalidKind::NotInEnum => "not_in_enum",
            InvalidKind::RequiredParamMissing => "required_param_missing",
            InvalidKind::Conflict => "conflict",
            InvalidKind::LimitExceeded => "limit_exceeded",
        }
    }
}

/// A query Zoho would reject; the gateway answers 400 with [`InvalidKind::zoho_code`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {param}: {message}")]
pub struct InvalidQuery {
    /// The offending parameter: a schema parameter's name (`"filters"`, `"page"`,
    /// `"per_page"`, …) or `"query"` (the query string as a whole).
    pub param: Cow<'static, str>,
    /// Short message safe to show the client; never echoes client input.
    pub message: String,
    /// Machine-readable kind.
    pub kind: InvalidKind,
    /// The limit the parameter went over ([`InvalidKind::LimitExceeded`]: Zoho's
    /// `details.limit`); `None` for other kinds.
    pub limit: Option<u32>,
}

impl InvalidQuery {
    fn new(
        param: impl Into<Cow<'static, str>>,
        kind: InvalidKind,
        message: impl Into<String>,
    ) -> Self {
        InvalidQuery {
            param: param.into(),
            message: message.into(),
            kind,
            limit: None,
        }
    }
}

/// How one query parameter of a route's [`ParamSchema`] enters the cache key.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParamKind {
    /// A plain decimal integer (ASCII digits only, leading zeros allowed) in `min..=max`; when
    /// absent, `default` is filled in (so omitting it equals sending the default), or the
    /// parameter stays absent when `default` is `None`. Outside the range or not a number:
    /// [`Canonical::Invalid`] ([`InvalidKind::NotANumber`], [`InvalidKind::OutOfRange`]).
    Integer {
        /// Value used when the parameter is absent.
        default: Option<u32>,
        /// Smallest accepted value.
        min: u32,
        /// Largest accepted value.
        max: u32,
    },
    /// URL-encoded JSON `filters` (see the `filters` section), under these rules.
    Filters(CanonicalRules),
    /// One of `values`, byte-exact (Zoho's enums are lower-case words: `asc`/`desc`,
    /// `AllUsers`/`ActiveUsers`/…); absent = `default`. Another value: [`Canonical::Invalid`]
    /// ([`InvalidKind::NotInEnum`]).
    Enum {
        /// The accepted values.
        values: Vec<Cow<'static, str>>,
        /// Value used when absent (`None`: stays absent).
        default: Option<Cow<'static, str>>,
    },
    /// A comma-separated set (`fields`, `ids`): Zoho's answer does not depend on the order or
    /// repetition of the items, so items are sorted and deduplicated; each stays byte-exact (no
    /// trimming, no case folding). More than `max_items` items (counting repeats, not items
    /// that are empty or all spaces, as Zoho counts): as `over_max` says, checked first. Then
    /// an empty value or an empty item: [`NoCacheReason::UnsupportedSet`] (Zoho's reading is
    /// not documented).
    Set {
        /// Most items accepted.
        max_items: usize,
        /// What more than `max_items` items mean.
        over_max: SetOverflow,
    },
    /// An opaque string (`page_token`, `cvid`, `email`): byte-exact after decoding.
    Opaque,
    /// Zoho search `criteria` (see the `criteria` section), under these limits.
    Criteria(CriteriaLimits),
}

impl ParamKind {
    fn tag(&self) -> u8 {
        match self {
            ParamKind::Integer { .. } => b'I',
            ParamKind::Filters(_) => b'F',
            ParamKind::Enum { .. } => b'E',
            ParamKind::Set { .. } => b'S',
            ParamKind::Opaque => b'O',
            ParamKind::Criteria(_) => b'C',
        }
    }
}

/// One named parameter of a [`ParamSchema`]. Names are matched byte-exact after decoding, as
/// Zoho matches them (`Page` is not `page`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    /// The decoded parameter name, e.g. `"per_page"`.
    pub name: Cow<'static, str>,
    /// How its value enters the key.
    pub kind: ParamKind,
    /// Zoho requires it (e.g. `fields` of a records read): absent (and no default) is
    /// [`Canonical::Invalid`] ([`InvalidKind::RequiredParamMissing`], Zoho's
    /// `REQUIRED_PARAM_MISSING`).
    pub required: bool,
}

impl ParamSpec {
    /// An optional parameter.
    pub fn new(name: impl Into<Cow<'static, str>>, kind: ParamKind) -> Self {
        ParamSpec {
            name: name.into(),
            kind,
            required: false,
        }
    }
}

/// Which of a schema's parameters a request sent (bit `i` = the schema's parameter `i`;
/// defaults filled in do not count). A pure function of the raw query, so the key memo keeps it
/// with the key: whatever depends on it (a route's credit cost, `credit_cost_when`) is known on
/// a hit without parsing the query again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SentParams(u16);

impl SentParams {
    /// Whether the schema's parameter at position `i` was sent.
    pub fn contains(self, i: usize) -> bool {
        i < MAX_SCHEMA_PARAMS && self.0 & (1 << i) != 0
    }

    fn from_flags(sent: &[bool; MAX_SCHEMA_PARAMS]) -> Self {
        SentParams(
            sent.iter()
                .enumerate()
                .filter(|(_, s)| **s)
                .fold(0, |bits, (i, _)| bits | 1 << i),
        )
    }
}

// One bit per schema parameter.
const _: () = assert!(MAX_SCHEMA_PARAMS <= 16);

/// What a set parameter ([`ParamKind::Set`]) with more than `max_items` items means.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SetOverflow {
    /// `max_items` is the gateway's bound, not Zoho's: the request is forwarded uncached
    /// ([`NoCacheReason::UnsupportedSet`]) and Zoho answers. Default.
    #[default]
    Bypass,
    /// `max_items` is Zoho's documented limit (50 `fields`, 100 `ids` of a records read):
    /// answered locally with Zoho's 400 `LIMIT_EXCEEDED` ([`InvalidKind::LimitExceeded`]), no
    /// credit spent.
    Reject,
}

/// What a route does with query parameters its schema does not name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownParams {
    /// They enter the key byte-exact (decoded name, decoded value or "no `=`"), sorted by name,
    /// repeated values in request order. Default (the count route's behaviour).
    #[default]
    Key,
    /// The request is forwarded uncached ([`NoCacheReason::UnknownParam`]).
    Bypass,
    /// The request is answered locally with 400 ([`InvalidKind::UnknownParam`]).
    Reject,
}

/// The most parameters one schema may name (keeps canonicalisation allocation-free per
/// parameter slot).
pub const MAX_SCHEMA_PARAMS: usize = 16;

/// A route's parameter schema: which query parameters it knows, how each enters the cache key,
/// and what happens to the others. Built once (config validation), used for every request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSchema {
    params: Vec<ParamSpec>,
    /// Pairs of parameters Zoho refuses together (`page` and `page_token`).
    exclusive: Vec<(usize, usize)>,
    /// The parameter names, shared with every [`CanonicalQuery`] (for its accessors).
    names: Arc<[Cow<'static, str>]>,
    unknown: UnknownParams,
    /// SHA-256 over the names and kinds: enters every key, so a schema change (a reload) never
    /// lets an old entry answer a query read under different rules.
    fingerprint: [u8; 32],
    /// Hot raw queries → their keys under this schema ([`ParamSchema::key`]); empty in every
    /// clone and every new schema, so it never outlives the rules it memoises.
    memo: SchemaMemo,
}

/// Why a [`ParamSchema`] could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// More than [`MAX_SCHEMA_PARAMS`] parameters.
    #[error("at most {MAX_SCHEMA_PARAMS} parameters per route")]
    TooManyParams,
    /// The same name twice.
    #[error("parameter {0:?} is listed twice")]
    DuplicateName(String),
    /// An integer whose range is empty or whose default lies outside it, or an enum whose
    /// default is not one of its values.
    #[error("parameter {0:?}: empty range or default outside it")]
    BadRange(String),
    /// An exclusive pair names a parameter the schema does not have.
    #[error("parameter {0:?} is not in the schema")]
    UnknownName(String),
}

impl ParamSchema {
    /// A schema from its parameters.
    ///
    /// # Errors
    /// [`SchemaError`] for more than [`MAX_SCHEMA_PARAMS`] parameters, a repeated name, or an
    /// integer range that is empty or excludes its default.
    pub fn new(params: Vec<ParamSpec>, unknown: UnknownParams) -> Result<Self, SchemaError> {
        if params.len() > MAX_SCHEMA_PARAMS {
            return Err(SchemaError::TooManyParams);
        }
        for (i, p) in params.iter().enumerate() {
            if params[..i].iter().any(|q| q.name == p.name) {
                return Err(SchemaError::DuplicateName(p.name.to_string()));
            }
            let bad = match &p.kind {
                ParamKind::Integer { default, min, max } => {
                    min > max || default.is_some_and(|d| d < *min || d > *max)
                }
                ParamKind::Enum { values, default } => {
                    values.is_empty() || default.as_ref().is_some_and(|d| !values.contains(d))
                }
                ParamKind::Set { max_items, .. } => *max_items == 0,
                ParamKind::Filters(_) | ParamKind::Opaque | ParamKind::Criteria(_) => false,
            };
            if bad {
                return Err(SchemaError::BadRange(p.name.to_string()));
            }
        }
        let fingerprint = key::schema_fingerprint(&params, unknown);
        Ok(ParamSchema {
            names: params.iter().map(|p| p.name.clone()).collect(),
            params,
            exclusive: Vec::new(),
            unknown,
            fingerprint,
            memo: SchemaMemo::default(),
        })
    }

    /// Declares that `a` and `b` may not be sent together (Zoho refuses `page` with
    /// `page_token`): both present is [`Canonical::Invalid`] ([`InvalidKind::Conflict`]).
    ///
    /// # Errors
    /// [`SchemaError::UnknownName`] when either is not a parameter of the schema.
    pub fn with_exclusive(mut self, a: &str, b: &str) -> Result<Self, SchemaError> {
        let pos = |n: &str| {
            self.params
                .iter()
                .position(|p| p.name == n)
                .ok_or_else(|| SchemaError::UnknownName(n.to_owned()))
        };
        let pair = (pos(a)?, pos(b)?);
        self.exclusive.push(pair);
        self.fingerprint = key::schema_fingerprint(&self.params, self.unknown);
        self.memo = SchemaMemo::default();
        Ok(self)
    }

    /// The `associated_users_count` endpoint's schema (seed spec): `filters` under `rules`,
    /// `page` (≥ 1, default 1), `per_page` (1–200, default 200); other parameters enter the key
    /// byte-exact.
    pub fn associated_users_count(rules: CanonicalRules) -> Self {
        let params = vec![
            ParamSpec::new("filters", ParamKind::Filters(rules)),
            ParamSpec::new(
                "page",
                ParamKind::Integer {
                    default: Some(1),
                    min: 1,
                    max: u32::MAX,
                },
            ),
            ParamSpec::new(
                "per_page",
                ParamKind::Integer {
                    default: Some(200),
                    min: 1,
                    max: 200,
                },
            ),
        ];
        // Three distinct names with valid ranges: cannot fail.
        Self::new(params, UnknownParams::Key).unwrap_or_else(|_| unreachable!())
    }

    /// The named parameters, in schema order.
    pub fn params(&self) -> &[ParamSpec] {
        &self.params
    }

    /// What happens to parameters the schema does not name.
    pub fn unknown(&self) -> UnknownParams {
        self.unknown
    }

    /// Canonicalises one raw query string (the part after `?`, without the `?`; `""` when
    /// absent) under this schema.
    ///
    /// Never panics and never allocates more than a small multiple of the input. See the module
    /// doc for the outcomes and their precedence.
    pub fn canonicalize(&self, raw_query: &str) -> Canonical {
        match canonicalize_inner(raw_query, self) {
            Ok(q) => Canonical::Key(q),
            Err(Reject::Uncacheable(r)) => Canonical::Uncacheable(r),
            Err(Reject::Invalid(i)) => Canonical::Invalid(i),
        }
    }

    /// [`ParamSchema::canonicalize`] then [`cache_key`] in `scope`, through a bounded memo of
    /// hot queries: a raw query seen before in an equal scope gets its key back without being
    /// decoded, parsed or hashed again (see [`KeyMemo`]; safe because the key is a pure
    /// function of the scope, the raw bytes and this schema, and the memo belongs to this
    /// schema alone). Only keys are memoised; uncacheable and invalid queries are worked out
    /// every time. Same outcomes as `canonicalize`.
    pub fn key(&self, scope: &KeyScope<'_>, raw_query: &str) -> KeyOutcome {
        self.key_and_sent(scope, raw_query).0
    }

    /// [`ParamSchema::key`], and which of the schema's parameters the query sent: memoised with
    /// the key (a hot query's comes back without decoding); for an uncacheable or invalid
    /// query, found by decoding the parameter names only.
    pub fn key_and_sent(&self, scope: &KeyScope<'_>, raw_query: &str) -> (KeyOutcome, SentParams) {
        if let Some((key, sent)) = self.memo.get().get(scope, raw_query) {
            return (KeyOutcome::Key(key), sent);
        }
        match self.canonicalize(raw_query) {
            Canonical::Key(q) => {
                let key = cache_key(scope, &q);
                self.memo.get().insert(scope, raw_query, key, q.sent);
                (KeyOutcome::Key(key), q.sent)
            }
            Canonical::Uncacheable(r) => (KeyOutcome::Uncacheable(r), query::sent(raw_query, self)),
            Canonical::Invalid(i) => (KeyOutcome::Invalid(i), query::sent(raw_query, self)),
        }
    }
}

/// One schema parameter's canonical value.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Value {
    /// Not sent and no default.
    Absent,
    Int(u32),
    Filters(FilterMode, filters::Node),
    /// Index into the enum's values.
    Enum(u16),
    /// Sorted, deduplicated items.
    Set(Vec<Box<str>>),
    Str(Box<str>),
    Criteria(Criteria),
}

/// The canonical form of one query under a [`ParamSchema`]: every schema parameter's value (in
/// schema order, defaults filled in) and the other parameters.
///
/// Only [`cache_key`] looks inside; two queries with equal canonical forms get equal keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanonicalQuery {
    schema: [u8; 32],
    /// Schema parameter names, for the accessors (shared with the schema).
    names: Arc<[Cow<'static, str>]>,
    values: Vec<Value>,
    /// Other parameters: decoded name, decoded value (`None` when the segment had no `=`);
    /// stably sorted by name.
    others: Vec<(Box<str>, Option<Box<str>>)>,
    /// Which schema parameters the query sent (not part of the key: it follows from `values`
    /// and the raw query, and only weighs credits).
    sent: SentParams,
}

impl CanonicalQuery {
    /// Which of the schema's parameters the query sent.
    pub fn sent(&self) -> SentParams {
        self.sent
    }

    fn value(&self, name: &str) -> Option<&Value> {
        let i = self.names.iter().position(|n| n == name)?;
        self.values.get(i)
    }

    /// The integer parameter `name` (its default when absent); `None` when the schema has no
    /// such integer or it is absent without default.
    pub fn int(&self, name: &str) -> Option<u32> {
        match self.value(name)? {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }

    /// The page number, `1` when absent (schemas with a `page` integer). Always ≥ 1.
    pub fn page(&self) -> u32 {
        self.int("page").unwrap_or(1)
    }

    /// Records per page, `200` when absent (schemas with a `per_page` integer).
    pub fn per_page(&self) -> u32 {
        self.int("per_page").unwrap_or(200)
    }

    /// The mode the `filters` parameter was canonicalised in (the default when absent).
    pub fn mode(&self) -> FilterMode {
        self.values
            .iter()
            .find_map(|v| match v {
                Value::Filters(m, _) => Some(*m),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// The canonical filter tree rendered as compact JSON with sorted keys (`None` when the query
    /// has no `filters`). Canonicalising `filters=<this, encoded>` gives the same key again.
    pub fn canonical_filters_json(&self) -> Option<String> {
        self.values.iter().find_map(|v| match v {
            Value::Filters(_, n) => Some(filters::render(n)),
            _ => None,
        })
    }
}

/// Canonicalises `raw_query` under the `associated_users_count` schema with `rules`
/// ([`ParamSchema::associated_users_count`]). A convenience for tests, benches and fuzzing: it
/// builds the schema on every call; the gateway keeps one per route and calls
/// [`ParamSchema::canonicalize`].
pub fn canonicalize(raw_query: &str, rules: &CanonicalRules) -> Canonical {
    ParamSchema::associated_users_count(rules.clone()).canonicalize(raw_query)
}

/// Result of canonicalising one decoded `criteria` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CriteriaOutcome {
    /// Canonical form found: it enters the key through [`Criteria::write_key`].
    Key(Criteria),
    /// Cannot be canonicalised with certainty: forward as-is, do not cache.
    Uncacheable(NoCacheReason),
    /// Zoho would reject it: answer 400 with [`InvalidKind::zoho_code`] locally.
    Invalid(InvalidQuery),
}

/// Canonicalises one `criteria` value, already form-decoded once (see the module doc,
/// "`criteria`", for the grammar, the normalisations and the outcomes).
///
/// Never panics; work and memory are linear in the input, which is bounded by
/// [`CriteriaLimits::max_bytes`].
pub fn canonicalize_criteria(decoded: &str, limits: &CriteriaLimits) -> CriteriaOutcome {
    match criteria::parse(decoded, limits) {
        Ok(c) => CriteriaOutcome::Key(c),
        Err(Reject::Uncacheable(r)) => CriteriaOutcome::Uncacheable(r),
        Err(Reject::Invalid(i)) => CriteriaOutcome::Invalid(i),
    }
}

/// Why [`canonicalize_inner`] gave up.
#[derive(Debug)]
enum Reject {
    Uncacheable(NoCacheReason),
    Invalid(InvalidQuery),
}

fn canonicalize_inner(raw_query: &str, schema: &ParamSchema) -> Result<CanonicalQuery, Reject> {
    let mut parts = query::split(raw_query, schema)?;
    // Which parameters the client sent (defaults do not count for exclusive pairs).
    let sent: [bool; MAX_SCHEMA_PARAMS] = std::array::from_fn(|i| parts.known[i].is_some());
    let mut values = vec![Value::Absent; schema.params.len()];
    // Precedence (module doc): scalar parameters are checked before the structured ones.
    for (i, spec) in schema.params.iter().enumerate() {
        values[i] = match &spec.kind {
            ParamKind::Integer { default, min, max } => match parts.known[i].take() {
                Some(v) => Value::Int(query::parse_int(&spec.name, &v, *min, *max)?),
                None => default.map_or(Value::Absent, Value::Int),
            },
            ParamKind::Enum { values, default } => {
                match parts.known[i].take().or_else(|| default.clone()) {
                    None => Value::Absent,
                    Some(v) => match values.iter().position(|x| *x == v) {
                        Some(at) => Value::Enum(at as u16),
                        None => {
                            return Err(Reject::Invalid(InvalidQuery::new(
                                spec.name.clone(),
                                InvalidKind::NotInEnum,
                                format!("{} must be one of {}", spec.name, values.join(", ")),
                            )));
                        }
                    },
                }
            }
            ParamKind::Set {
                max_items,
                over_max,
            } => match parts.known[i].take() {
                None => Value::Absent,
                Some(v) => {
                    if *over_max == SetOverflow::Reject {
                        let counted = v.split(',').filter(|i| !i.trim().is_empty()).count();
                        if counted > *max_items {
                            return Err(Reject::Invalid(InvalidQuery {
                                limit: u32::try_from(*max_items).ok(),
                                ..InvalidQuery::new(
                                    spec.name.clone(),
                                    InvalidKind::LimitExceeded,
                                    format!("at most {max_items} items in {}", spec.name),
                                )
                            }));
                        }
                    }
                    let mut items: Vec<Box<str>> = Vec::new();
                    for item in v.split(',') {
                        if item.is_empty() || items.len() == *max_items {
                            return Err(Reject::Uncacheable(NoCacheReason::UnsupportedSet));
                        }
                        items.push(item.into());
                    }
                    items.sort_unstable();
                    items.dedup();
                    Value::Set(items)
                }
            },
            ParamKind::Opaque => match parts.known[i].take() {
                None => Value::Absent,
                Some(v) => Value::Str(v.into()),
            },
            ParamKind::Filters(_) | ParamKind::Criteria(_) => continue,
        };
    }
    for (i, spec) in schema.params.iter().enumerate() {
        if let ParamKind::Filters(rules) = &spec.kind
            && let Some(f) = parts.known[i].take()
        {
            values[i] = Value::Filters(rules.mode, filters::parse(&f, rules)?);
        }
        if let ParamKind::Criteria(limits) = &spec.kind
            && let Some(c) = parts.known[i].take()
        {
            values[i] = Value::Criteria(criteria::parse(&c, limits)?);
        }
    }
    for (spec, value) in schema.params.iter().zip(&values) {
        if spec.required && *value == Value::Absent {
            return Err(Reject::Invalid(InvalidQuery::new(
                spec.name.clone(),
                InvalidKind::RequiredParamMissing,
                format!("required parameter {} is missing", spec.name),
            )));
        }
    }
    for &(a, b) in &schema.exclusive {
        if sent[a] && sent[b] {
            return Err(Reject::Invalid(InvalidQuery::new(
                schema.params[b].name.clone(),
                InvalidKind::Conflict,
                format!(
                    "{} and {} cannot be used together",
                    schema.params[a].name, schema.params[b].name
                ),
            )));
        }
    }
    Ok(CanonicalQuery {
        schema: schema.fingerprint,
        names: schema.names.clone(),
        values,
        others: parts.others,
        sent: SentParams::from_flags(&sent),
    })
}
