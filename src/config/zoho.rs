//! Zoho's closed sets in config: data centres and environments (→ accounts and API hosts,
//! API-NOTES §5) and editions (→ the upstream concurrency limit, API-NOTES §6).
//!
//! Each is an enum read straight from config, case-insensitively, so a typo fails at load
//! with the key, the value and the accepted names (`config: unknown data centre "mars",
//! expected one of us, eu, in, au, jp, ca, sa, cn for key "tenants.acme.data_centre"`).

use serde::{Deserialize, Deserializer, Serialize};

/// Implements `Deserialize` for a closed set from its case-insensitive `parse`, with an error
/// that lists the accepted names.
macro_rules! deserialize_by_name {
    ($ty:ty, $what:literal, $expected:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                <$ty>::parse(&text).ok_or_else(|| {
                    serde::de::Error::custom(format_args!(
                        concat!("unknown ", $what, " {:?}, expected ", $expected),
                        text
                    ))
                })
            }
        }
    };
}

/// Zoho data centres (API-NOTES §5). Config: `data_centre`, default `us`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataCentre {
    /// United States: `accounts.zoho.com`, `zohoapis.com`.
    #[default]
    Us,
    /// Europe: `accounts.zoho.eu`, `zohoapis.eu`.
    Eu,
    /// India: `accounts.zoho.in`, `zohoapis.in`.
    In,
    /// Australia: `accounts.zoho.com.au`, `zohoapis.com.au`.
    Au,
    /// Japan: `accounts.zoho.jp`, `zohoapis.jp`.
    Jp,
    /// Canada: `accounts.zohocloud.ca`, `zohoapis.ca`.
    Ca,
    /// Saudi Arabia: `accounts.zoho.sa`, `zohoapis.sa`.
    Sa,
    /// China: `accounts.zoho.com.cn`, `zohoapis.com.cn`.
    Cn,
}

/// Zoho CRM environments; each has its own API host within a data centre. Config:
/// `environment`, default `production`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// `www.zohoapis.*`.
    #[default]
    Production,
    /// `sandbox.zohoapis.*`.
    Sandbox,
    /// `developer.zohoapis.*`.
    Developer,
}

/// Zoho CRM editions (API-NOTES §6): each allows a number of API calls in flight per user.
/// Config: `edition`, default `standard`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Edition {
    /// Free: 5 calls in flight.
    Free,
    /// Standard: 10.
    #[default]
    Standard,
    /// Professional: 15.
    Professional,
    /// Enterprise: 20.
    Enterprise,
    /// Ultimate: 25.
    Ultimate,
}

deserialize_by_name!(
    DataCentre,
    "data centre",
    "one of us, eu, in, au, jp, ca, sa, cn"
);
deserialize_by_name!(
    Environment,
    "environment",
    "production, sandbox or developer"
);
deserialize_by_name!(
    Edition,
    "edition",
    "free, standard, professional, enterprise or ultimate"
);

impl Edition {
    /// Parses `free`, `standard`, `professional`, `enterprise`, `ultimate` (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "free" => Edition::Free,
            "standard" => Edition::Standard,
            "professional" => Edition::Professional,
            "enterprise" => Edition::Enterprise,
            "ultimate" => Edition::Ultimate,
            _ => return None,
        })
    }

    /// Zoho's limit of concurrent API calls for this edition (API-NOTES §6).
    pub fn concurrency_limit(self) -> usize {
        match self {
            Edition::Free => 5,
            Edition::Standard => 10,
            Edition::Professional => 15,
            Edition::Enterprise => 20,
            Edition::Ultimate => 25,
        }
    }

    /// API credits per rolling 24 h for `licenses` user licences and `addon` add-on credits,
    /// after Zoho's "API limits" page (developer docs v4 and later,
    /// <https://www.zoho.com/crm/developer/docs/api/v4/api-limits.html>): Free 5,000 flat;
    /// otherwise 50,000 + licences × (Standard 250, Professional 500, Enterprise 1,000,
    /// Ultimate 2,000) + add-ons, capped at the edition's maximum (Standard 100,000,
    /// Professional 3,000,000, Enterprise 5,000,000, Ultimate none). Older pages give lower
    /// bases (5,000 / 10,000 / 15,000): where the organisation's figure differs, set
    /// `daily_credits`.
    pub fn credit_allowance(self, licenses: u32, addon: u64) -> u64 {
        let (per_licence, max) = match self {
            Edition::Free => return 5_000,
            Edition::Standard => (250, Some(100_000)),
            Edition::Professional => (500, Some(3_000_000)),
            Edition::Enterprise => (1_000, Some(5_000_000)),
            Edition::Ultimate => (2_000, None),
        };
        let allowed = 50_000u64
            .saturating_add(u64::from(licenses).saturating_mul(per_licence))
            .saturating_add(addon);
        max.map_or(allowed, |m| allowed.min(m))
    }
}

impl DataCentre {
    /// Parses `us`, `eu`, `in`, `au`, `jp`, `ca`, `sa`, `cn` (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "us" | "com" => DataCentre::Us,
            "eu" => DataCentre::Eu,
            "in" => DataCentre::In,
            "au" => DataCentre::Au,
            "jp" => DataCentre::Jp,
            "ca" => DataCentre::Ca,
            "sa" => DataCentre::Sa,
            "cn" => DataCentre::Cn,
            _ => return None,
        })
    }

    /// The domain suffix Zoho uses for this data centre's API hosts.
    fn api_suffix(self) -> &'static str {
        match self {
            DataCentre::Us => "com",
            DataCentre::Eu => "eu",
            DataCentre::In => "in",
            DataCentre::Au => "com.au",
            DataCentre::Jp => "jp",
            DataCentre::Ca => "ca",
            DataCentre::Sa => "sa",
            DataCentre::Cn => "com.cn",
        }
    }

    /// The accounts (OAuth) base URL, e.g. `https://accounts.zoho.eu`.
    pub fn accounts_url(self) -> String {
        match self {
            DataCentre::Ca => "https://accounts.zohocloud.ca".to_owned(),
            other => format!("https://accounts.zoho.{}", other.api_suffix()),
        }
    }

    /// The API base URL for an environment, e.g. `https://sandbox.zohoapis.com.au`.
    pub fn api_base(self, env: Environment) -> String {
        let host = match env {
            Environment::Production => "www",
            Environment::Sandbox => "sandbox",
            Environment::Developer => "developer",
        };
        format!("https://{host}.zohoapis.{}", self.api_suffix())
    }
}

impl Environment {
    /// Parses `production`, `sandbox`, `developer` (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "production" | "prod" => Environment::Production,
            "sandbox" => Environment::Sandbox,
            "developer" | "dev" => Environment::Developer,
            _ => return None,
        })
    }
}
