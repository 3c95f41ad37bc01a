//! The simulator's data set: user groups and the users in them.
//!
//! # File shape
//!
//! ```json
//! {"groups":[{"id":"3652397000012454002","name":"Tier1","description":"…",
//!             "created_time":"2023-01-01T09:00:00+00:00"}],
//!  "users":[{"id":"3652397000000186001","full_name":"…","email":"…",
//!            "status":"active","groups":["3652397000012454002"]}]}
//! ```
//!
//! Ids are 19-digit decimal strings like Zoho's. Group order in the file is
//! creation order, which is also the order every list answer uses.
//! `modified_time` is optional on groups (defaults to `created_time`).
//!
//! # The bundled data set
//!
//! `simulator/src/dataset.json` is `generate_dataset(BUNDLED_GROUPS,
//! BUNDLED_USERS, BUNDLED_SEED)` written with [`Dataset::to_json`]. Regenerate
//! it with
//! `cargo test --lib simulator::dataset::tests::regenerate_bundled -- --ignored`;
//! the test `bundled_matches_generator` fails when the file and the generator
//! drift apart.

use std::collections::HashSet;
use std::path::Path;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// Group count of the bundled data set.
pub const BUNDLED_GROUPS: usize = 300;
/// User count of the bundled data set.
pub const BUNDLED_USERS: usize = 3000;
/// Generator seed of the bundled data set.
pub const BUNDLED_SEED: u64 = 0x5EED_2024;

const BUNDLED_JSON: &str = include_str!("dataset.json");

/// Id of the `Tier1` group from Zoho's sample response.
pub const TIER1_ID: &str = "3652397000012454002";

/// A whole data set. See the module doc for the JSON shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dataset {
    /// User groups in creation order.
    pub groups: Vec<DatasetGroup>,
    /// Users; membership is listed on the user.
    pub users: Vec<DatasetUser>,
}

/// One user group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetGroup {
    /// 19-digit decimal id.
    pub id: String,
    /// Display name (unique, byte-exact).
    pub name: String,
    /// Description; empty when unset.
    #[serde(default)]
    pub description: String,
    /// ISO-8601 creation time, Zoho style (`2023-01-01T09:00:00+00:00`).
    pub created_time: String,
    /// ISO-8601 last modification time; defaults to `created_time`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_time: Option<String>,
}

/// One CRM user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetUser {
    /// 19-digit decimal id.
    pub id: String,
    /// Display name.
    pub full_name: String,
    /// E-mail address.
    pub email: String,
    /// Whether the user is active (inactive users still count as members).
    pub status: UserStatus,
    /// Ids of the groups the user belongs to.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// A user's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    /// `active`
    Active,
    /// `inactive` (deactivated); still counted by `associated_users_count`.
    Inactive,
}

impl UserStatus {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Inactive => "inactive",
        }
    }
}

/// Why a data set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The file could not be read.
    #[error("cannot read data set file")]
    Io(#[source] std::io::Error),
    /// The text is not a data set.
    #[error("data set is not valid json")]
    Json(#[source] serde_json::Error),
    /// The data set is inconsistent (duplicate id or name, dangling group reference).
    #[error("invalid data set: {0}")]
    Invalid(String),
}

impl Dataset {
    /// The bundled default data set (`simulator/src/dataset.json`), parsed
    /// once per process and cloned.
    pub fn bundled() -> Dataset {
        static BUNDLED: LazyLock<Dataset> =
            LazyLock::new(|| Dataset::from_json(BUNDLED_JSON).expect("bundled data set is valid"));
        BUNDLED.clone()
    }

    /// Parses and validates a data set.
    ///
    /// # Errors
    ///
    /// [`DatasetError::Json`] or [`DatasetError::Invalid`].
    pub fn from_json(text: &str) -> Result<Dataset, DatasetError> {
        let ds: Dataset = serde_json::from_str(text).map_err(DatasetError::Json)?;
        ds.validate()?;
        Ok(ds)
    }

    /// Reads, parses and validates a data set file.
    ///
    /// # Errors
    ///
    /// Any [`DatasetError`].
    pub fn load(path: &Path) -> Result<Dataset, DatasetError> {
        let text = std::fs::read_to_string(path).map_err(DatasetError::Io)?;
        Dataset::from_json(&text)
    }

    /// Checks ids and names are unique and every membership names a group.
    ///
    /// # Errors
    ///
    /// [`DatasetError::Invalid`] naming the first problem.
    pub fn validate(&self) -> Result<(), DatasetError> {
        let mut ids = HashSet::new();
        let mut names = HashSet::new();
        for g in &self.groups {
            if !is_zoho_id(&g.id) {
                return Err(DatasetError::Invalid(format!("bad group id {:?}", g.id)));
            }
            if !ids.insert(g.id.as_str()) {
                return Err(DatasetError::Invalid(format!("duplicate id {}", g.id)));
            }
            if !names.insert(g.name.as_str()) {
                return Err(DatasetError::Invalid(format!(
                    "duplicate group name {:?}",
                    g.name
                )));
            }
        }
        let groups = ids.clone();
        for u in &self.users {
            if !ids.insert(u.id.as_str()) {
                return Err(DatasetError::Invalid(format!("duplicate id {}", u.id)));
            }
            if let Some(g) = u.groups.iter().find(|g| !groups.contains(g.as_str())) {
                return Err(DatasetError::Invalid(format!(
                    "user {} is in unknown group {g}",
                    u.id
                )));
            }
        }
        Ok(())
    }

    /// Writes [`Dataset::to_json`] to `path` (what the CLI's dataset
    /// generator uses).
    ///
    /// # Errors
    ///
    /// The I/O error from writing the file.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.to_json())
    }

    /// Writes the data set as JSON with one group or user per line (the
    /// format of the bundled file; stable for diffs).
    pub fn to_json(&self) -> String {
        let mut out = String::from("{\"groups\":[\n");
        push_lines(&mut out, &self.groups);
        out.push_str("],\n\"users\":[\n");
        push_lines(&mut out, &self.users);
        out.push_str("]}\n");
        out
    }
}

fn push_lines<T: Serialize>(out: &mut String, items: &[T]) {
    for (i, item) in items.iter().enumerate() {
        out.push_str(&serde_json::to_string(item).expect("data set serializes"));
        out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
    }
}

/// Whether `s` looks like a Zoho record id: 1 to 19 ASCII digits.
pub(crate) fn is_zoho_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Formats a wall-clock time Zoho style: `2023-01-01T09:00:00+00:00`.
pub(crate) fn zoho_time(t: SystemTime) -> String {
    let s = humantime::format_rfc3339_seconds(t).to_string();
    match s.strip_suffix('Z') {
        Some(base) => format!("{base}+00:00"),
        None => s,
    }
}

/// Groups every generated data set starts with, in this order:
/// `(name, description, members)`. `Tier1` has Zoho's sample id and exactly
/// four members, the fourth inactive. The names cover prefixes shared with
/// other groups, Unicode, spaces, the query-significant characters
/// `+ & = % #` and mixed case, for cache-key tests.
const FIXED_GROUPS: &[(&str, &str, usize)] = &[
    ("Tier1", "First-line support", 4),
    ("Tier2", "Second-line support", 7),
    ("Tier10", "Tier one-zero escalation", 3),
    ("Tier3", "", 5),
    ("Sales", "All sales staff", 12),
    ("Sales - EU", "Sales in Europe", 6),
    ("Sales - US", "Sales in the United States", 8),
    ("Über Team", "Unicode name (NFC)", 2),
    ("日本チーム", "Japan team", 3),
    ("Café Crew", "Accented name", 2),
    ("R&D", "Research & development", 5),
    ("A+B Group", "Name with a plus", 2),
    ("x=y", "Name with an equals sign", 1),
    ("100% Club", "Name with a percent sign", 4),
    ("Ops #1", "Name with a hash", 2),
    ("Ops  Team", "Two spaces in the name", 1),
    (" Leading Space", "Leading space in the name", 1),
    ("MixedCase Group", "Mixed case", 2),
    ("mixedcase group", "Same letters, lower case", 3),
    ("Quote \"Q\" Team", "Name with double quotes", 1),
    ("Empty Group", "A group with no members", 0),
];

/// Minimum users a generated data set has (enough for the fixed groups).
const MIN_USERS: usize = 40;

/// Creates a deterministic data set: the fixed groups above (always present,
/// so `groups` is raised to their count if smaller) followed by generated
/// groups, and `users` users (at least 40). The same arguments give the same
/// data set on every platform and crate version (own splitmix64 PRNG).
///
/// Ids: group `i` is `3652397000012454002 + i*1000`; user `j` is
/// `3652397000000186001 + j`. Roughly 8% of users are inactive; each
/// generated group gets 0–40 random members.
pub fn generate_dataset(groups: usize, users: usize, seed: u64) -> Dataset {
    let mut rng = SplitMix64(seed);
    let n_groups = groups.max(FIXED_GROUPS.len());
    let n_users = users.max(MIN_USERS);
    let base_time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_672_563_600); // 2023-01-01T09:00Z
    const ADJ: &[&str] = &[
        "Alpha", "Bravo", "Coastal", "Delta", "Eastern", "Field", "Global", "Harbor", "Inner",
        "Jade", "Key", "Lunar", "Metro", "North", "Onyx", "Prime", "Quartz", "Regional",
        "Southern", "Tech", "Urban", "Vector", "Western", "Zenith",
    ];
    const NOUN: &[&str] = &[
        "Accounts",
        "Billing",
        "Channel",
        "Dispatch",
        "Escalations",
        "Field Ops",
        "Growth",
        "Helpdesk",
        "Inside Sales",
        "Key Accounts",
        "Logistics",
        "Marketing",
        "Onboarding",
        "Partners",
        "Quality",
        "Renewals",
        "Support",
        "Training",
    ];
    let mut out_groups = Vec::with_capacity(n_groups);
    for i in 0..n_groups {
        let (name, description) = match FIXED_GROUPS.get(i) {
            Some((n, d, _)) => (n.to_string(), d.to_string()),
            None => {
                let adj = ADJ[rng.below(ADJ.len())];
                let noun = NOUN[rng.below(NOUN.len())];
                let name = format!("{adj} {noun} {i:03}");
                let description = if rng.below(5) == 0 {
                    String::new()
                } else {
                    format!("{noun} team, {adj} region")
                };
                (name, description)
            }
        };
        let created = base_time + Duration::from_secs(i as u64 * 3 * 3600 + rng.below(3600) as u64);
        out_groups.push(DatasetGroup {
            id: (3_652_397_000_012_454_002u64 + i as u64 * 1000).to_string(),
            name,
            description,
            created_time: zoho_time(created),
            modified_time: None,
        });
    }
    const FIRST: &[&str] = &[
        "Ada", "Bela", "Chen", "Dario", "Elif", "Femi", "Greta", "Hiro", "Ines", "Jonas", "Kavya",
        "Lior", "Mona", "Nuno", "Olga", "Pavel", "Rosa", "Sami", "Tariq", "Uma", "Vera", "Wen",
        "Yusuf", "Zoë",
    ];
    const LAST: &[&str] = &[
        "Abara", "Berg", "Costa", "Dubois", "Eze", "Fischer", "García", "Haddad", "Ito", "Jensen",
        "Kowalski", "Lopez", "Müller", "Nakamura", "Okafor", "Patel", "Rossi", "Singh", "Tanaka",
        "Ulloa", "Varga", "Weber", "Yilmaz", "Zhang",
    ];
    let mut out_users: Vec<DatasetUser> = (0..n_users)
        .map(|j| {
            let first = FIRST[rng.below(FIRST.len())];
            let last = LAST[rng.below(LAST.len())];
            DatasetUser {
                id: (3_652_397_000_000_186_001u64 + j as u64).to_string(),
                full_name: format!("{first} {last}"),
                email: format!("user{j:05}@example.com"),
                status: if rng.below(100) < 8 {
                    UserStatus::Inactive
                } else {
                    UserStatus::Active
                },
                groups: Vec::new(),
            }
        })
        .collect();
    // Fixed memberships: consecutive users, so Tier1 is users 0..4.
    let mut next_user = 0;
    for (gi, (_, _, members)) in FIXED_GROUPS.iter().enumerate() {
        for k in 0..*members {
            let u = &mut out_users[next_user % n_users];
            u.groups.push(out_groups[gi].id.clone());
            if gi == 0 {
                u.status = if k == 3 {
                    UserStatus::Inactive
                } else {
                    UserStatus::Active
                };
            }
            next_user += 1;
        }
    }
    // Random memberships for generated groups, never touching Tier1's users.
    let reserved = FIXED_GROUPS[0].2;
    for group in out_groups.iter().skip(FIXED_GROUPS.len()) {
        let members = rng.below(41);
        let mut chosen = HashSet::new();
        for _ in 0..members {
            chosen.insert(reserved + rng.below(n_users - reserved));
        }
        let mut chosen: Vec<_> = chosen.into_iter().collect();
        chosen.sort_unstable();
        for u in chosen {
            out_users[u].groups.push(group.id.clone());
        }
    }
    Dataset {
        groups: out_groups,
        users: out_users,
    }
}

/// splitmix64: tiny, stable across versions, good enough for test data.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(ds: &Dataset, id: &str) -> Vec<UserStatus> {
        ds.users
            .iter()
            .filter(|u| u.groups.iter().any(|g| g == id))
            .map(|u| u.status)
            .collect()
    }

    #[test]
    fn generator_is_deterministic_and_valid() {
        let a = generate_dataset(50, 200, 7);
        let b = generate_dataset(50, 200, 7);
        assert_eq!(a, b);
        assert_ne!(a, generate_dataset(50, 200, 8));
        a.validate().unwrap();
        assert_eq!(a.groups.len(), 50);
        assert_eq!(a.users.len(), 200);
        let small = generate_dataset(0, 0, 1);
        assert_eq!(small.groups.len(), FIXED_GROUPS.len());
        small.validate().unwrap();
    }

    #[test]
    fn bundled_has_the_groups_tests_need() {
        let ds = Dataset::bundled();
        assert_eq!(ds.groups.len(), BUNDLED_GROUPS);
        assert_eq!(ds.users.len(), BUNDLED_USERS);
        let tier1 = ds.groups.iter().find(|g| g.name == "Tier1").unwrap();
        assert_eq!(tier1.id, TIER1_ID);
        let m = members(&ds, TIER1_ID);
        assert_eq!(m.len(), 4);
        assert_eq!(m.iter().filter(|s| **s == UserStatus::Inactive).count(), 1);
        for name in [
            "Tier2",
            "Tier10",
            "Sales - EU",
            "Sales - US",
            "Über Team",
            "R&D",
            "A+B Group",
            "x=y",
            "100% Club",
        ] {
            assert!(ds.groups.iter().any(|g| g.name == name), "{name}");
        }
    }

    #[test]
    fn bundled_matches_generator() {
        let generated = generate_dataset(BUNDLED_GROUPS, BUNDLED_USERS, BUNDLED_SEED).to_json();
        assert!(generated.len() < 1_500_000, "{} bytes", generated.len());
        assert!(
            generated == BUNDLED_JSON,
            "simulator/src/dataset.json is stale; regenerate it (see module doc)"
        );
    }

    #[test]
    #[ignore = "writes simulator/src/dataset.json"]
    fn regenerate_bundled() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/dataset.json");
        generate_dataset(BUNDLED_GROUPS, BUNDLED_USERS, BUNDLED_SEED)
            .save(&path)
            .unwrap();
    }

    #[test]
    fn saved_file_loads_back() {
        let ds = generate_dataset(30, 60, 3);
        let path = std::env::temp_dir().join(format!("sim-dataset-{}.json", std::process::id()));
        ds.save(&path).unwrap();
        let loaded = Dataset::load(&path);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(loaded.unwrap(), ds);
    }

    #[test]
    fn rejects_inconsistent_data() {
        let mut ds = generate_dataset(0, 0, 1);
        ds.users[0].groups.push("1".into());
        assert!(matches!(ds.validate(), Err(DatasetError::Invalid(_))));
        let mut ds = generate_dataset(0, 0, 1);
        ds.groups[1].name = "Tier1".into();
        assert!(matches!(ds.validate(), Err(DatasetError::Invalid(_))));
    }
}
