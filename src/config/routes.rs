//! `[[routes.cached]]`: the route table beyond the count route. Each entry is a cached Zoho read:
//! a path template, a parameter schema saying how each query parameter enters the cache key, and
//! the cache policy. Validated into a [`RoutePolicy`].

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::canonical::{
    CriteriaLimits, ParamKind, ParamSchema, ParamSpec, SetOverflow, UnknownParams,
};
use crate::route::{PathTemplate, RouteLifetimes, RoutePolicy};

/// One `[[routes.cached]]` entry.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCachedRoute {
    /// Route name: the admin purge's `route=NAME`, client keys' `routes`. Required.
    pub name: String,
    /// Path template, e.g. `/crm/{version}/settings/fields`: `{version}` matches the configured
    /// versions, `{id}` a record id (1–32 digits), other `{name}`s one segment of
    /// `[A-Za-z0-9_.-]`. Its text is the `route` metric label. Required.
    pub path: String,
    /// Freshness lifetime of a 200. Required.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Freshness lifetime of a 204 (`0s`: not stored). Default: the `ttl`.
    #[serde(default, with = "humantime_serde::option")]
    pub no_content_ttl: Option<Duration>,
    /// TTL jitter, percent (0..=50). Default: `10`.
    #[serde(default = "default_jitter")]
    pub ttl_jitter_percent: u8,
    /// Stale-while-revalidate window. Default: `30s`.
    #[serde(default = "default_swr", with = "humantime_serde")]
    pub stale_while_revalidate: Duration,
    /// Stale-if-error window. Default: `300s`.
    #[serde(default = "default_sie", with = "humantime_serde")]
    pub stale_if_error: Duration,
    /// Hold after an upstream failure. Default: `5s`.
    #[serde(default = "default_hold", with = "humantime_serde")]
    pub error_hold: Duration,
    /// Cap on a hold taken from `Retry-After`. Default: `60s`.
    #[serde(default = "default_max_hold", with = "humantime_serde")]
    pub max_error_hold: Duration,
    /// Honour client `no-cache`. Default: `true`.
    #[serde(default = "yes")]
    pub honor_no_cache: bool,
    /// Honour client `no-store`. Default: `true`.
    #[serde(default = "yes")]
    pub honor_no_store: bool,
    /// Zoho API credits one call costs (Zoho's credit table: 1 for most reads). Default: `1`.
    #[serde(default = "one")]
    pub credit_cost: u32,
    /// Credits one call costs when the query sends a parameter, by parameter name, e.g.
    /// `{ cvid = 3 }` (Zoho's credit table: a records read with a custom view costs 3). Each
    /// name must be one of `params`, each cost at least 1; when several are sent, the highest
    /// cost (and at least `credit_cost`) applies. Weighs `credits_saved`, the credit budget and
    /// the reserve. Default: none.
    #[serde(default)]
    pub credit_cost_when: BTreeMap<String, u32>,
    /// Invalidation group: writes to the group drop the tenant's entries (`user_groups`,
    /// `metadata`, `records:{module}`). Default: the route name.
    #[serde(default)]
    pub group: Option<String>,
    /// Parameters not in `params`: `key` (enter the key byte-exact), `bypass` (forward
    /// uncached) or `reject` (400 locally). Default: `bypass`.
    #[serde(default = "default_unknown")]
    pub unknown_params: UnknownParams,
    /// The parameter schema, by parameter name. Default: none.
    #[serde(default)]
    pub params: BTreeMap<String, RawParam>,
    /// Pairs of parameters Zoho refuses together, e.g. `[["page", "page_token"]]`.
    #[serde(default)]
    pub exclusive: Vec<[String; 2]>,
}

/// How one query parameter enters the key (`type = "integer" | "enum" | "set" | "string"`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RawParam {
    /// A decimal integer in `min..=max`, `default` when absent.
    Integer {
        /// Value when absent. Default: none.
        #[serde(default)]
        default: Option<u32>,
        /// Smallest accepted. Default: `1`.
        #[serde(default = "one")]
        min: u32,
        /// Largest accepted. Default: `4294967295`.
        #[serde(default = "max_u32")]
        max: u32,
        /// Zoho requires it. Default: `false`.
        #[serde(default)]
        required: bool,
    },
    /// One of `values`, byte-exact.
    Enum {
        /// Accepted values. Required.
        values: Vec<String>,
        /// Value when absent. Default: none.
        #[serde(default)]
        default: Option<String>,
        /// Zoho requires it. Default: `false`.
        #[serde(default)]
        required: bool,
    },
    /// A comma-separated set (order and duplicates do not matter).
    Set {
        /// Most items accepted. Default: `200`.
        #[serde(default = "default_max_items")]
        max_items: usize,
        /// More than `max_items` items: `bypass` (forwarded uncached; `max_items` is the
        /// gateway's bound) or `reject` (`max_items` is Zoho's documented limit: Zoho's 400
        /// `LIMIT_EXCEEDED` locally, no credit spent). Default: `bypass`.
        #[serde(default)]
        over_max_items: SetOverflow,
        /// Zoho requires it. Default: `false`.
        #[serde(default)]
        required: bool,
    },
    /// An opaque string, byte-exact.
    String {
        /// Zoho requires it. Default: `false`.
        #[serde(default)]
        required: bool,
    },
    /// Zoho search `criteria`, canonicalised (`canonical` module doc).
    Criteria {
        /// Zoho requires it. Default: `false`.
        #[serde(default)]
        required: bool,
    },
}

fn default_jitter() -> u8 {
    10
}
fn default_swr() -> Duration {
    Duration::from_secs(30)
}
fn default_sie() -> Duration {
    Duration::from_secs(300)
}
fn default_hold() -> Duration {
    Duration::from_secs(5)
}
fn default_max_hold() -> Duration {
    Duration::from_secs(60)
}
fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}
fn max_u32() -> u32 {
    u32::MAX
}
fn default_max_items() -> usize {
    200
}
fn default_unknown() -> UnknownParams {
    UnknownParams::Bypass
}

impl RawCachedRoute {
    /// Validates entry `i` of the table.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key (`routes.cached[i].…`) and the problem.
    pub fn validate(&self, i: usize) -> Result<RoutePolicy, ConfigError> {
        let key = |k: &str| format!("routes.cached[{i}].{k}");
        let valid_name = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid_name || self.name == crate::route::PASSTHROUGH_LABEL {
            return Err(ConfigError::invalid(
                key("name"),
                &self.name,
                "expected 1-64 of [A-Za-z0-9_-], not \"passthrough\"",
            ));
        }
        let template = PathTemplate::parse(&self.path)
            .map_err(|e| ConfigError::invalid(key("path"), &self.path, e))?;
        if self.ttl.is_zero() {
            return Err(ConfigError::invalid(
                key("ttl"),
                "0s",
                "must be greater than zero",
            ));
        }
        if self.ttl_jitter_percent > 50 {
            return Err(ConfigError::invalid(
                key("ttl_jitter_percent"),
                self.ttl_jitter_percent.to_string(),
                "must be 0..=50",
            ));
        }
        if self.credit_cost == 0 {
            return Err(ConfigError::invalid(
                key("credit_cost"),
                "0",
                "must be at least 1",
            ));
        }
        let params = self
            .params
            .iter()
            .map(|(name, p)| {
                let (kind, required) = match p {
                    RawParam::Integer {
                        default,
                        min,
                        max,
                        required,
                    } => (
                        ParamKind::Integer {
                            default: *default,
                            min: *min,
                            max: *max,
                        },
                        *required,
                    ),
                    RawParam::Enum {
                        values,
                        default,
                        required,
                    } => (
                        ParamKind::Enum {
                            values: values.iter().cloned().map(Cow::Owned).collect(),
                            default: default.clone().map(Cow::Owned),
                        },
                        *required,
                    ),
                    RawParam::Set {
                        max_items,
                        over_max_items,
                        required,
                    } => (
                        ParamKind::Set {
                            max_items: *max_items,
                            over_max: *over_max_items,
                        },
                        *required,
                    ),
                    RawParam::String { required } => (ParamKind::Opaque, *required),
                    RawParam::Criteria { required } => {
                        (ParamKind::Criteria(CriteriaLimits::default()), *required)
                    }
                };
                ParamSpec {
                    name: Cow::Owned(name.clone()),
                    kind,
                    required,
                }
            })
            .collect();
        let mut schema = ParamSchema::new(params, self.unknown_params)
            .map_err(|e| ConfigError::invalid(key("params"), "", e.to_string()))?;
        for [a, b] in &self.exclusive {
            schema = schema
                .with_exclusive(a, b)
                .map_err(|e| ConfigError::invalid(key("exclusive"), a, e.to_string()))?;
        }
        let mut credit_cost_when = Vec::new();
        for (name, &cost) in &self.credit_cost_when {
            let at = || key(&format!("credit_cost_when.{name}"));
            let Some(param) = schema.params().iter().position(|p| p.name == *name) else {
                return Err(ConfigError::invalid(
                    at(),
                    name,
                    "not a parameter of this route's params",
                ));
            };
            if cost == 0 {
                return Err(ConfigError::invalid(at(), "0", "must be at least 1"));
            }
            credit_cost_when.push((param, cost));
        }
        let group = self.group.clone().unwrap_or_else(|| self.name.clone());
        template
            .check_group(&group)
            .map_err(|problem| ConfigError::invalid(key("group"), &group, problem))?;
        Ok(RoutePolicy {
            name: self.name.clone(),
            method: http::Method::GET,
            template,
            schema,
            lifetimes: RouteLifetimes {
                ttl: self.ttl,
                no_content_ttl: self.no_content_ttl.unwrap_or(self.ttl),
                ttl_jitter_percent: self.ttl_jitter_percent,
                stale_while_revalidate: self.stale_while_revalidate,
                stale_if_error: self.stale_if_error,
                error_hold: self.error_hold,
                max_error_hold: self.max_error_hold,
            },
            honor_no_cache: self.honor_no_cache,
            honor_no_store: self.honor_no_store,
            credit_cost: self.credit_cost,
            credit_cost_when,
            group,
        })
    }
}
