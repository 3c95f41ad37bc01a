//! Zoho data centres and environments → accounts and API hosts (API-NOTES §5).

use serde::Serialize;

/// Zoho data centres (API-NOTES §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataCentre {
    /// United States: `accounts.zoho.com`, `zohoapis.com`.
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

/// Zoho CRM environments; each has its own API host within a data centre.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// `www.zohoapis.*`.
    Production,
    /// `sandbox.zohoapis.*`.
    Sandbox,
    /// `developer.zohoapis.*`.
    Developer,
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
