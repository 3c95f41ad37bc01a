//! The CRM side of the simulated organisation: modules with their metadata (fields, layouts,
//! related lists, custom views) and live records, plus roles, profiles, the organisation and the
//! CRM users. The API's metadata and records handlers read it; record writes change it, so later
//! reads and searches see them.
//!
//! # The bundled CRM data (`simulator/src/crm.json`)
//!
//! A small deterministic organisation: three modules (`Leads` with 12 records, `Contacts` with
//! 8, `Deals` with 6), two or three layouts, related lists and custom views each, three roles,
//! three profiles and one organisation. Values cover what cache-key and criteria tests need:
//! shared prefixes (`ABC` / `ABC Inc`), commas and parentheses in values (`Burns,B`,
//! `Acme (EU)`), apostrophes, non-ASCII text, `null` fields and lookups. Shape:
//!
//! ```json
//! {"org":{..},"roles":[{"id","name","reporting_to","admin_user","share_with_peers","description"}],
//!  "profiles":[{"id","name","default","custom","description"}],
//!  "modules":[{"id","api_name","module_name","singular_label","plural_label","sequence_number",
//!              "modified_time","fields":[{"id","api_name","field_label","data_type","length",
//!              "system_mandatory","read_only","lookup_module"?}],
//!              "layouts":[{"id","name","modified_time","sections":[{"api_name","display_label",
//!              "fields":["<api_name>",..]}]}],
//!              "related_lists":[{"id","api_name","display_label","module"}],
//!              "custom_views":[{"id","name","system_name","default","criteria","sort_by",
//!              "sort_order","modified_time"}],
//!              "records":[{"id":..,"<field>":..}]}]}
//! ```
//!
//! A custom view's `criteria` uses the search grammar ([`crate::criteria`]) and selects the
//! view's records. The CRM users are the data set's users ([`crate::dataset`]); the first is
//! the administrator (profile `Administrator`, role `CEO`) and the token's `CurrentUser`
//! (**choice**: the simulator has one user per organisation behind every token).
//!
//! # Choices
//!
//! - Module API names in paths and `module=` match ASCII-case-insensitively (**choice**; the
//!   answer always spells the module as the data set does).
//! - New record ids continue after the largest id in the data set, in steps of 1000.
//! - Times are whole seconds, `+00:00`; `Modified_Time` of a written record is the wall clock.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::SystemTime;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::dataset::{Dataset, UserStatus, zoho_time};

const BUNDLED_CRM: &str = include_str!("crm.json");

/// The bundled CRM data, parsed once.
static BUNDLED: LazyLock<CrmData> =
    LazyLock::new(|| serde_json::from_str(BUNDLED_CRM).expect("bundled crm.json is valid"));

/// The CRM data file (see the module doc).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CrmData {
    pub org: Map<String, Value>,
    pub roles: Vec<Role>,
    pub profiles: Vec<Profile>,
    pub modules: Vec<Module>,
}

/// A role of the organisation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Role {
    pub id: String,
    pub name: String,
    /// Name of the role this one reports to.
    pub reporting_to: Option<String>,
    pub admin_user: bool,
    pub share_with_peers: bool,
    pub description: String,
}

/// A profile (permission set).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Profile {
    pub id: String,
    pub name: String,
    pub default: bool,
    pub custom: bool,
    pub description: String,
}

/// A module with its metadata and records.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Module {
    pub id: String,
    pub api_name: String,
    pub module_name: String,
    pub singular_label: String,
    pub plural_label: String,
    pub sequence_number: u32,
    pub modified_time: String,
    pub fields: Vec<Field>,
    pub layouts: Vec<Layout>,
    pub related_lists: Vec<RelatedList>,
    pub custom_views: Vec<CustomView>,
    /// Records in creation order; each has a string `id`.
    pub records: Vec<Map<String, Value>>,
}

/// A field of a module.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Field {
    pub id: String,
    pub api_name: String,
    pub field_label: String,
    /// Zoho's `data_type`: `text`, `email`, `phone`, `picklist`, `currency`, `integer`, `date`,
    /// `datetime`, `lookup`, `ownerlookup`.
    pub data_type: String,
    pub length: u32,
    pub system_mandatory: bool,
    pub read_only: bool,
    #[serde(default)]
    pub lookup_module: Option<String>,
}

/// A layout: sections listing field API names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Layout {
    pub id: String,
    pub name: String,
    pub modified_time: String,
    pub sections: Vec<Section>,
}

/// One section of a layout.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Section {
    pub api_name: String,
    pub display_label: String,
    pub fields: Vec<String>,
}

/// A related list of a module.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RelatedList {
    pub id: String,
    pub api_name: String,
    pub display_label: String,
    /// API name of the related module.
    pub module: String,
}

/// A custom view (saved list) of a module.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CustomView {
    pub id: String,
    pub name: String,
    pub system_name: String,
    pub default: bool,
    /// Search-grammar criteria selecting the view's records; `None`: all records.
    pub criteria: Option<String>,
    pub sort_by: Option<String>,
    pub sort_order: Option<String>,
    pub modified_time: String,
}

/// A CRM user (from the data set's users).
#[derive(Debug, Clone)]
pub(crate) struct CrmUser {
    pub id: String,
    pub full_name: String,
    pub email: String,
    pub status: UserStatus,
}

/// Why a record write was refused (per item).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RecordError {
    /// A mandatory field is missing or empty: its API name.
    Mandatory(String),
    /// No record with that id in the module.
    NotFound,
    /// A field value has the wrong JSON type: its API name.
    BadValue(String),
}

/// The live CRM state.
#[derive(Debug)]
pub(crate) struct CrmStore {
    pub org: Map<String, Value>,
    pub roles: Vec<Role>,
    pub profiles: Vec<Profile>,
    pub modules: Vec<Module>,
    pub users: Vec<CrmUser>,
    next_id: u64,
}

impl CrmStore {
    /// The bundled CRM data with the data set's users.
    pub(crate) fn from_dataset(ds: &Dataset) -> CrmStore {
        let data = BUNDLED.clone();
        let max_id = data
            .modules
            .iter()
            .flat_map(|m| &m.records)
            .filter_map(|r| r.get("id")?.as_str()?.parse::<u64>().ok())
            .max()
            .unwrap_or(3_652_397_000_000_100_000);
        CrmStore {
            org: data.org,
            roles: data.roles,
            profiles: data.profiles,
            modules: data.modules,
            users: ds
                .users
                .iter()
                .map(|u| CrmUser {
                    id: u.id.clone(),
                    full_name: u.full_name.clone(),
                    email: u.email.clone(),
                    status: u.status,
                })
                .collect(),
            next_id: max_id + 1000,
        }
    }

    /// The module named `api_name` (ASCII-case-insensitive).
    pub(crate) fn module(&self, api_name: &str) -> Option<&Module> {
        self.modules
            .iter()
            .find(|m| m.api_name.eq_ignore_ascii_case(api_name))
    }

    fn module_mut(&mut self, api_name: &str) -> Option<&mut Module> {
        self.modules
            .iter_mut()
            .find(|m| m.api_name.eq_ignore_ascii_case(api_name))
    }

    /// The profile of user `index` in [`CrmStore::users`]: the first user is the administrator.
    pub(crate) fn profile_of(&self, index: usize) -> &Profile {
        let name = if index == 0 {
            "Administrator"
        } else {
            "Standard"
        };
        self.profiles
            .iter()
            .find(|p| p.name == name)
            .unwrap_or(&self.profiles[0])
    }

    /// The role of user `index`: CEO for the first, then Manager for every tenth, Sales Rep.
    pub(crate) fn role_of(&self, index: usize) -> &Role {
        let name = match index {
            0 => "CEO",
            i if i % 10 == 1 => "Manager",
            _ => "Sales Rep",
        };
        self.roles
            .iter()
            .find(|r| r.name == name)
            .unwrap_or(&self.roles[0])
    }

    /// Creates a record in `module` from `fields` (only the module's writable fields are
    /// kept); returns the new record.
    pub(crate) fn create_record(
        &mut self,
        module: &str,
        fields: &Map<String, Value>,
        now: &str,
        by: &Value,
    ) -> Result<Map<String, Value>, RecordError> {
        let id = self.next_id.to_string();
        let m = self.module_mut(module).ok_or(RecordError::NotFound)?;
        let mut record = Map::new();
        record.insert("id".into(), Value::String(id));
        apply_fields(m, &mut record, fields)?;
        if let Some(f) = m.fields.iter().find(|f| {
            f.system_mandatory
                && record
                    .get(&f.api_name)
                    .is_none_or(|v| v.is_null() || v.as_str().is_some_and(|s| s.trim().is_empty()))
        }) {
            return Err(RecordError::Mandatory(f.api_name.clone()));
        }
        for key in ["Created_Time", "Modified_Time"] {
            record.insert(key.into(), Value::String(now.to_owned()));
        }
        for key in ["Created_By", "Modified_By"] {
            record.insert(key.into(), by.clone());
        }
        let owner = record_owner(&record, by);
        record.insert("Owner".into(), owner);
        fill_full_name(m, &mut record);
        m.records.push(record.clone());
        self.next_id += 1000;
        Ok(record)
    }

    /// Updates record `id` of `module` with `fields`; returns the updated record.
    pub(crate) fn update_record(
        &mut self,
        module: &str,
        id: &str,
        fields: &Map<String, Value>,
        now: &str,
        by: &Value,
    ) -> Result<Map<String, Value>, RecordError> {
        let m = self.module_mut(module).ok_or(RecordError::NotFound)?;
        let i = m
            .records
            .iter()
            .position(|r| r.get("id").and_then(Value::as_str) == Some(id))
            .ok_or(RecordError::NotFound)?;
        let mut record = m.records[i].clone();
        apply_fields(m, &mut record, fields)?;
        if let Some(f) = m.fields.iter().find(|f| {
            f.system_mandatory
                && fields
                    .get(&f.api_name)
                    .is_some_and(|v| v.is_null() || v.as_str().is_some_and(|s| s.trim().is_empty()))
        }) {
            return Err(RecordError::Mandatory(f.api_name.clone()));
        }
        record.insert("Modified_Time".into(), Value::String(now.to_owned()));
        record.insert("Modified_By".into(), by.clone());
        fill_full_name(m, &mut record);
        m.records[i] = record.clone();
        Ok(record)
    }

    /// Deletes record `id` of `module`.
    pub(crate) fn delete_record(&mut self, module: &str, id: &str) -> Result<(), RecordError> {
        let m = self.module_mut(module).ok_or(RecordError::NotFound)?;
        let i = m
            .records
            .iter()
            .position(|r| r.get("id").and_then(Value::as_str) == Some(id))
            .ok_or(RecordError::NotFound)?;
        m.records.remove(i);
        Ok(())
    }
}

/// Copies the module's writable fields present in `fields` into `record`; `Owner` may be given
/// as `{"id": ".."}`. Read-only and unknown fields are ignored (**choice**).
fn apply_fields(
    m: &Module,
    record: &mut Map<String, Value>,
    fields: &Map<String, Value>,
) -> Result<(), RecordError> {
    for f in &m.fields {
        let Some(v) = fields.get(&f.api_name) else {
            continue;
        };
        if f.read_only {
            continue;
        }
        let ok = match f.data_type.as_str() {
            "currency" | "integer" => v.is_number() || v.is_null(),
            "lookup" | "ownerlookup" => v.is_object() || v.is_null(),
            _ => v.is_string() || v.is_null(),
        };
        if !ok {
            return Err(RecordError::BadValue(f.api_name.clone()));
        }
        record.insert(f.api_name.clone(), v.clone());
    }
    Ok(())
}

fn record_owner(record: &Map<String, Value>, by: &Value) -> Value {
    match record.get("Owner") {
        Some(Value::Object(o)) if o.contains_key("id") => Value::Object(o.clone()),
        _ => by.clone(),
    }
}

/// `Full_Name` is derived from `First_Name` and `Last_Name` where the module has it.
fn fill_full_name(m: &Module, record: &mut Map<String, Value>) {
    if !m.fields.iter().any(|f| f.api_name == "Full_Name") {
        return;
    }
    let part = |k: &str| {
        record
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let full = format!("{} {}", part("First_Name"), part("Last_Name"));
    record.insert("Full_Name".into(), Value::String(full.trim().to_owned()));
}

/// The `page_token`s handed out by records reads (`info.next_page_token`). A token names a
/// place (an offset) in one listing: the listing's bound parameters (module, `fields`, `ids`,
/// `cvid`, sort, `per_page`, `If-Modified-Since`) as one string. The same place always gets
/// the same token, so repeated reads answer byte-identically. At most [`PageTokens::MAX`]
/// places are remembered; past that all are forgotten (older tokens then answer
/// `TOKEN_BOUND_DATA_MISMATCH`). Tokens do not expire (**choice**); `page_token_expiry`
/// says one day after issue.
#[derive(Debug, Default)]
pub(crate) struct PageTokens {
    by_token: HashMap<String, (String, usize)>,
    by_place: HashMap<(String, usize), (String, String)>,
}

impl PageTokens {
    /// Places remembered at most.
    pub(crate) const MAX: usize = 10_000;

    /// The token and its expiry for `offset` in the listing `bound`.
    pub(crate) fn issue(&mut self, bound: &str, offset: usize) -> (String, String) {
        let place = (bound.to_owned(), offset);
        if let Some(t) = self.by_place.get(&place) {
            return t.clone();
        }
        if self.by_place.len() >= Self::MAX {
            self.by_place.clear();
            self.by_token.clear();
        }
        let token = hex::encode(rand::random::<[u8; 24]>());
        let expiry = zoho_time(SystemTime::now() + std::time::Duration::from_secs(24 * 3600));
        self.by_token.insert(token.clone(), place.clone());
        self.by_place.insert(place, (token.clone(), expiry.clone()));
        (token, expiry)
    }

    /// The listing and offset `token` names.
    pub(crate) fn resolve(&self, token: &str) -> Option<(&str, usize)> {
        self.by_token.get(token).map(|(b, o)| (b.as_str(), *o))
    }
}

/// The wall clock, Zoho style.
pub(crate) fn now_zoho() -> String {
    zoho_time(SystemTime::now())
}

/// Parses an `If-Modified-Since` value: an HTTP-date (RFC 9110 §5.6.7, all three historic
/// forms) or the ISO-8601 form the SDKs send (`2026-12-03T08:05:00+00:00`, `…Z`, any `±HH:MM`
/// offset). `None` when it is neither (Zoho then ignores the header, **choice**).
pub(crate) fn parse_if_modified_since(value: &str) -> Option<SystemTime> {
    let value = value.trim();
    if let Ok(t) = httpdate::parse_http_date(value) {
        return Some(t);
    }
    parse_zoho_time(value)
}

/// Parses `YYYY-MM-DDTHH:MM:SS` followed by `Z` or `±HH:MM` (fractions of a second ignored).
pub(crate) fn parse_zoho_time(value: &str) -> Option<SystemTime> {
    let (base, rest) = (value.get(..19)?, value.get(19..)?);
    let rest = match rest.strip_prefix('.') {
        Some(frac) => frac.trim_start_matches(|c: char| c.is_ascii_digit()),
        None => rest,
    };
    let utc = humantime::parse_rfc3339(&format!("{base}Z")).ok()?;
    let offset = match rest {
        "Z" | "z" => 0i64,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (h, m) = rest.get(1..)?.split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60)
        }
    };
    let shift = std::time::Duration::from_secs(offset.unsigned_abs());
    if offset >= 0 {
        utc.checked_sub(shift)
    } else {
        utc.checked_add(shift)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_crm_data_is_consistent() {
        let s = CrmStore::from_dataset(&Dataset::bundled());
        assert_eq!(
            s.modules
                .iter()
                .map(|m| (m.api_name.as_str(), m.records.len()))
                .collect::<Vec<_>>(),
            [("Leads", 12), ("Contacts", 8), ("Deals", 6)]
        );
        for m in &s.modules {
            for r in &m.records {
                assert!(r["id"].as_str().is_some_and(|id| id.len() == 19), "{r:?}");
                for k in r.keys() {
                    assert!(
                        k == "id" || m.fields.iter().any(|f| &f.api_name == k),
                        "{}: unknown field {k}",
                        m.api_name
                    );
                }
            }
            for l in &m.layouts {
                for f in l.sections.iter().flat_map(|s| &s.fields) {
                    assert!(m.fields.iter().any(|x| &x.api_name == f), "{f}");
                }
            }
            for cv in &m.custom_views {
                if let Some(c) = &cv.criteria {
                    crate::criteria::Criteria::parse(c).unwrap();
                }
            }
            assert_eq!(m.custom_views.iter().filter(|c| c.default).count(), 1);
        }
        assert!(s.module("leads").is_some());
        assert_eq!(s.users.len(), 3000);
    }

    #[test]
    fn if_modified_since_accepts_http_dates_and_iso_8601() {
        let t = humantime::parse_rfc3339("2026-12-03T08:05:00Z").unwrap();
        for v in [
            "Thu, 03 Dec 2026 08:05:00 GMT",
            "Thursday, 03-Dec-26 08:05:00 GMT",
            "Thu Dec  3 08:05:00 2026",
            "2026-12-03T08:05:00+00:00",
            "2026-12-03T08:05:00Z",
            "2026-12-03T13:35:00+05:30",
            "2026-12-03T03:05:00-05:00",
            "2026-12-03T08:05:00.000+00:00",
        ] {
            assert_eq!(parse_if_modified_since(v), Some(t), "{v}");
        }
        for bad in ["", "yesterday", "2026-12-03", "2026-12-03T08:05:00+0530"] {
            assert_eq!(parse_if_modified_since(bad), None, "{bad}");
        }
    }

    #[test]
    fn writes_change_the_records() {
        let mut s = CrmStore::from_dataset(&Dataset::bundled());
        let by = serde_json::json!({"name": "Chen Yilmaz", "id": "3652397000000186001"});
        let now = "2026-01-01T00:00:00+00:00";
        let mut fields = Map::new();
        fields.insert("First_Name".into(), "Zed".into());
        assert_eq!(
            s.create_record("Leads", &fields, now, &by),
            Err(RecordError::Mandatory("Last_Name".into()))
        );
        fields.insert("Last_Name".into(), "Zulu".into());
        fields.insert("Bogus".into(), "ignored".into());
        let r = s.create_record("leads", &fields, now, &by).unwrap();
        let id = r["id"].as_str().unwrap().to_owned();
        assert_eq!(r["Full_Name"], "Zed Zulu");
        assert!(!r.contains_key("Bogus"));
        assert_eq!(s.module("Leads").unwrap().records.len(), 13);
        let mut patch = Map::new();
        patch.insert("Company".into(), "Zulu Co".into());
        let u = s.update_record("Leads", &id, &patch, now, &by).unwrap();
        assert_eq!(u["Company"], "Zulu Co");
        assert_eq!(u["Last_Name"], "Zulu");
        s.delete_record("Leads", &id).unwrap();
        assert_eq!(s.delete_record("Leads", &id), Err(RecordError::NotFound));
    }
}
