//! The structural cache key: tagged, length-prefixed fields streamed into SHA-256.

use sha2::{Digest, Sha256};

use super::filters::Node;
use super::{CanonicalQuery, ParamKind, ParamSpec, UnknownParams, Value};

/// Who asks and where: the request properties outside the query string that enter the key.
#[derive(Clone, Copy, Debug)]
pub struct KeyScope<'a> {
    /// The tenant's identity scope, [`crate::config::TenantConfig::identity_scope`]: its name
    /// and a fingerprint of its API host and credentials (pins one Zoho org, data centre and
    /// token owner).
    pub tenant: &'a str,
    /// A 32-byte digest of the caller's credential when answers may differ per credential;
    /// `None` when the tenant's shared token answers for everybody. Never the raw token.
    pub credential: Option<&'a [u8; 32]>,
    /// The HTTP method, e.g. `"GET"`, byte-exact.
    pub method: &'a str,
    /// The API version path segment, e.g. `"v7"`, byte-exact.
    pub version: &'a str,
    /// The concrete path after the version, ids and module names included, e.g.
    /// `"/settings/user_groups/actions/associated_users_count"` or `"/Leads/4150868000001"`,
    /// byte-exact.
    pub route: &'a str,
    /// The client's `X-EXTERNAL` header value (Zoho's external-id lookups, e.g.
    /// `Leads.External_Id`), byte-exact; `None` when absent. It changes which record an id
    /// names, so it is forwarded upstream and enters the key.
    pub external: Option<&'a [u8]>,
}

/// A SHA-256 cache key. `Display` and `Debug` show the first 8 bytes in hex; [`CacheKey::to_hex`]
/// gives all 32.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    /// All 32 bytes as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Display for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CacheKey({self})")
    }
}

/// Domain separation: bump the version whenever the encoding below changes.
const DOMAIN: &[u8] = b"zoho-gateway/cache-key/v3";
/// Domain of [`schema_fingerprint`].
const SCHEMA_DOMAIN: &[u8] = b"zoho-gateway/param-schema/v1";

// Field tags: every field is written as `tag, then its bytes`; variable-length bytes are prefixed
// with their length as u64 little-endian, lists with their count. The stream is therefore
// prefix-free: distinct canonical inputs give distinct byte streams.
const T_TENANT: u8 = 1;
const T_CREDENTIAL: u8 = 2;
const T_METHOD: u8 = 3;
const T_VERSION: u8 = 4;
const T_ROUTE: u8 = 5;
const T_SCHEMA: u8 = 6;
const T_PARAMS: u8 = 7;
const T_EXTERNAL: u8 = 8;
const T_OTHERS: u8 = 10;
const N_ABSENT: u8 = 0;
const N_PRESENT: u8 = 1;
const N_CRITERION: u8 = b'C';
const N_GROUP: u8 = b'G';
const V_INT: u8 = b'I';
const V_FILTERS: u8 = b'F';
const V_ENUM: u8 = b'E';
const V_SET: u8 = b'S';
const V_STR: u8 = b'O';
const V_CRITERIA: u8 = b'C';

struct KeyWriter(Sha256);

impl KeyWriter {
    fn byte(&mut self, b: u8) {
        self.0.update([b]);
    }
    fn bytes(&mut self, b: &[u8]) {
        self.0.update((b.len() as u64).to_le_bytes());
        self.0.update(b);
    }
    fn field(&mut self, tag: u8, b: &[u8]) {
        self.byte(tag);
        self.bytes(b);
    }
    fn count(&mut self, n: usize) {
        self.0.update((n as u64).to_le_bytes());
    }
    fn node(&mut self, node: &Node) {
        match node {
            Node::Criterion(c) => {
                self.byte(N_CRITERION);
                self.bytes(c.field().as_bytes());
                self.bytes(c.comparator().as_bytes());
                self.bytes(c.value().as_bytes());
            }
            Node::Group(op, members) => {
                self.byte(N_GROUP);
                self.bytes(op.as_str().as_bytes());
                self.count(members.len());
                for m in members {
                    self.node(m);
                }
            }
        }
    }
}

/// SHA-256 over a schema's parameter names, kinds and rules and its unknown-parameter policy
/// (tagged, length-prefixed like the key). Equal schemas give equal fingerprints.
pub(super) fn schema_fingerprint(params: &[ParamSpec], unknown: UnknownParams) -> [u8; 32] {
    let mut w = KeyWriter(Sha256::new());
    w.bytes(SCHEMA_DOMAIN);
    w.count(params.len());
    for p in params {
        w.bytes(p.name.as_bytes());
        w.byte(p.kind.tag());
        match &p.kind {
            ParamKind::Integer { default, min, max } => {
                match default {
                    Some(d) => {
                        w.byte(N_PRESENT);
                        w.0.update(d.to_le_bytes());
                    }
                    None => w.byte(N_ABSENT),
                }
                w.0.update(min.to_le_bytes());
                w.0.update(max.to_le_bytes());
            }
            ParamKind::Enum { values, default } => {
                w.count(values.len());
                for v in values {
                    w.bytes(v.as_bytes());
                }
                match default {
                    Some(d) => {
                        w.byte(N_PRESENT);
                        w.bytes(d.as_bytes());
                    }
                    None => w.byte(N_ABSENT),
                }
            }
            // `over_max` is not written: no query over `max_items` has a key either way.
            ParamKind::Set { max_items, .. } => w.count(*max_items),
            ParamKind::Opaque => {}
            ParamKind::Criteria(_) => {}
            ParamKind::Filters(rules) => {
                w.bytes(rules.mode.as_str().as_bytes());
                for list in [&rules.allowed_fields, &rules.allowed_comparators] {
                    w.count(list.len());
                    for item in list {
                        w.bytes(item.as_bytes());
                    }
                }
            }
        }
    }
    w.byte(unknown as u8);
    for p in params {
        w.byte(u8::from(p.required));
    }
    w.0.finalize().into()
}

/// The cache key of a canonical query in a scope: SHA-256 over a domain tag and every
/// key-relevant property as tagged, length-prefixed fields (see the `canonical` module doc).
pub fn cache_key(scope: &KeyScope<'_>, query: &CanonicalQuery) -> CacheKey {
    let mut w = KeyWriter(Sha256::new());
    w.bytes(DOMAIN);
    w.field(T_TENANT, scope.tenant.as_bytes());
    w.byte(T_CREDENTIAL);
    match scope.credential {
        Some(c) => {
            w.byte(N_PRESENT);
            w.0.update(c);
        }
        None => w.byte(N_ABSENT),
    }
    w.field(T_METHOD, scope.method.as_bytes());
    w.field(T_VERSION, scope.version.as_bytes());
    w.field(T_ROUTE, scope.route.as_bytes());
    w.byte(T_EXTERNAL);
    match scope.external {
        Some(v) => {
            w.byte(N_PRESENT);
            w.bytes(v);
        }
        None => w.byte(N_ABSENT),
    }
    w.byte(T_SCHEMA);
    w.0.update(query.schema);
    w.byte(T_PARAMS);
    w.count(query.values.len());
    for value in &query.values {
        match value {
            Value::Absent => w.byte(N_ABSENT),
            Value::Int(n) => {
                w.byte(V_INT);
                w.0.update(n.to_le_bytes());
            }
            Value::Filters(mode, node) => {
                w.byte(V_FILTERS);
                w.bytes(mode.as_str().as_bytes());
                w.node(node);
            }
            Value::Enum(i) => {
                w.byte(V_ENUM);
                w.0.update(i.to_le_bytes());
            }
            Value::Set(items) => {
                w.byte(V_SET);
                w.count(items.len());
                for item in items {
                    w.bytes(item.as_bytes());
                }
            }
            Value::Str(v) => {
                w.byte(V_STR);
                w.bytes(v.as_bytes());
            }
            Value::Criteria(c) => {
                w.byte(V_CRITERIA);
                c.write_key(&mut |b| w.0.update(b));
            }
        }
    }
    w.byte(T_OTHERS);
    w.count(query.others.len());
    for (name, value) in &query.others {
        w.bytes(name.as_bytes());
        match value {
            Some(v) => {
                w.byte(N_PRESENT);
                w.bytes(v.as_bytes());
            }
            None => w.byte(N_ABSENT),
        }
    }
    CacheKey(w.0.finalize().into())
}
