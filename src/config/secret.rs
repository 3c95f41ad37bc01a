//! Secrets in config: [`Secret`] (never printed) and where one comes from ([`SecretSource`]:
//! literal, environment variable or file). Redaction is a property of the types: their `Debug`,
//! `Display` and `Serialize` print `[redacted]` (or the variable / file name, never a value).

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// A secret string. `Debug`, `Display` and `Serialize` print `[redacted]`; only
/// [`Secret::expose`] gives the value.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret value. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The text every secret prints as.
pub const REDACTED: &str = "[redacted]";

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

/// Where a secret comes from: a literal string, `{ env = "VAR" }` or `{ file = "path" }`
/// (the file's content, surrounding whitespace trimmed).
///
/// `Serialize` (what `check-config` prints) and `Debug` redact a literal to `[redacted]`; the
/// name of a variable or file is not secret and is shown.
#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub enum SecretSource {
    /// The value itself (fine for the demo; prefer `env` or `file` in production).
    Literal(String),
    /// Read from this environment variable at load time.
    Env {
        /// Variable name.
        env: String,
    },
    /// Read from this file at load time.
    File {
        /// Path, relative to the working directory.
        file: PathBuf,
    },
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Literal(_) => f.write_str("[redacted]"),
            SecretSource::Env { env } => write!(f, "env:{env}"),
            SecretSource::File { file } => write!(f, "file:{}", file.display()),
        }
    }
}

impl Serialize for SecretSource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let (key, value) = match self {
            SecretSource::Literal(_) => return s.serialize_str(REDACTED),
            SecretSource::Env { env } => ("env", env.clone()),
            SecretSource::File { file } => ("file", file.display().to_string()),
        };
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry(key, &value)?;
        map.end()
    }
}

impl SecretSource {
    pub(super) fn resolve(&self, key: &str) -> Result<Secret, ConfigError> {
        let value = match self {
            SecretSource::Literal(v) => v.clone(),
            SecretSource::Env { env } => std::env::var(env).map_err(|_| {
                ConfigError::invalid(key, format!("env:{env}"), "environment variable not set")
            })?,
            SecretSource::File { file } => std::fs::read_to_string(file)
                .map_err(|e| {
                    ConfigError::invalid(key, format!("file:{}", file.display()), e.to_string())
                })?
                .trim()
                .to_owned(),
        };
        if value.is_empty() {
            return Err(ConfigError::invalid(key, "[redacted]", "must not be empty"));
        }
        Ok(Secret(value))
    }
}
