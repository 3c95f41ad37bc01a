//! Config tests (figment::Jail for environment overrides).
#![allow(clippy::result_large_err)] // figment::Jail's closure error type
use super::*;

#[test]
fn data_centre_table_matches_api_notes() {
    // API-NOTES §5: accounts host → API host, per data centre.
    let table = [
        (
            "us",
            "https://accounts.zoho.com",
            "https://www.zohoapis.com",
        ),
        ("eu", "https://accounts.zoho.eu", "https://www.zohoapis.eu"),
        ("in", "https://accounts.zoho.in", "https://www.zohoapis.in"),
        (
            "au",
            "https://accounts.zoho.com.au",
            "https://www.zohoapis.com.au",
        ),
        ("jp", "https://accounts.zoho.jp", "https://www.zohoapis.jp"),
        (
            "ca",
            "https://accounts.zohocloud.ca",
            "https://www.zohoapis.ca",
        ),
        ("sa", "https://accounts.zoho.sa", "https://www.zohoapis.sa"),
        (
            "cn",
            "https://accounts.zoho.com.cn",
            "https://www.zohoapis.com.cn",
        ),
    ];
    for (code, accounts, api) in table {
        let dc = DataCentre::parse(code).unwrap();
        assert_eq!(dc.accounts_url(), accounts, "{code}");
        assert_eq!(dc.api_base(Environment::Production), api, "{code}");
    }
    assert_eq!(
        DataCentre::Eu.api_base(Environment::Sandbox),
        "https://sandbox.zohoapis.eu"
    );
    assert_eq!(
        DataCentre::Au.api_base(Environment::Developer),
        "https://developer.zohoapis.com.au"
    );
    assert!(DataCentre::parse("xx").is_none());
}

const MINIMAL: &str = r#"
    [tenants.acme]
    data_centre = "eu"
    client_id = "1000.ABC"
    client_secret = "s3cr3t-client"
    refresh_token = { env = "ACME_REFRESH" }

    [clients.reporting]
    tenant = "acme"
    key = "plain-client-key"
"#;

#[test]
fn env_overrides_and_secret_sources() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("ACME_REFRESH", "1000.refresh.value");
        jail.set_env("ZOHO_GATEWAY_CACHE__MAX_BYTES", "1048576");
        jail.set_env("ZOHO_GATEWAY_ROUTES__ASSOCIATED_USERS_COUNT__TTL", "5s");
        let raw = RawConfig::from_toml_str(MINIMAL).unwrap();
        let cfg = raw.validate().unwrap();
        assert_eq!(cfg.cache_max_bytes, 1_048_576);
        assert_eq!(cfg.routes[0].lifetimes.ttl, Duration::from_secs(5));
        let t = &cfg.tenants[0];
        assert_eq!(t.api_base, "https://www.zohoapis.eu");
        assert_eq!(t.token_url, "https://accounts.zoho.eu/oauth/v2/token");
        assert_eq!(t.refresh_token.expose(), "1000.refresh.value");
        assert!(cfg.clients.contains_key(&key_digest(b"plain-client-key")));
        let debug = format!("{cfg:?} {raw:?}");
        for secret in ["s3cr3t-client", "1000.refresh.value", "plain-client-key"] {
            assert!(!debug.contains(secret), "{secret} leaked in Debug");
        }
        Ok(())
    });
}

#[test]
fn errors_name_key_and_value() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("ACME_REFRESH", "x");
        let mut raw = RawConfig::from_toml_str(MINIMAL).unwrap();
        raw.tenants.get_mut("acme").unwrap().data_centre = Some("mars".into());
        let err = raw.validate().unwrap_err().to_string();
        assert!(
            err.contains("tenants.acme.data_centre") && err.contains("mars"),
            "{err}"
        );

        let mut raw = RawConfig::from_toml_str(MINIMAL).unwrap();
        raw.clients.get_mut("reporting").unwrap().tenant = "nope".into();
        let err = raw.validate().unwrap_err().to_string();
        assert!(
            err.contains("clients.reporting.tenant") && err.contains("nope"),
            "{err}"
        );

        let mut raw = RawConfig::from_toml_str(MINIMAL).unwrap();
        raw.server.listen = "localhost".into();
        let err = raw.validate().unwrap_err().to_string();
        assert!(err.contains("server.listen"), "{err}");
        Ok(())
    });
}

#[test]
fn the_reference_config_validates_with_its_defaults() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("ZOHO_CLIENT_SECRET", "s");
        jail.set_env("ZOHO_REFRESH_TOKEN", "r");
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/gateway.toml");
        let raw = RawConfig::load(&path).unwrap();
        let cfg = raw.validate().unwrap();
        // The file states the defaults: it must equal the built-in ones.
        let defaults = RawConfig::default();
        assert_eq!(
            serde_json::to_value(&raw.server).unwrap(),
            serde_json::to_value(&defaults.server).unwrap()
        );
        assert_eq!(
            serde_json::to_value(&raw.cache).unwrap(),
            serde_json::to_value(&defaults.cache).unwrap()
        );
        assert_eq!(
            serde_json::to_value(&raw.upstream).unwrap(),
            serde_json::to_value(&defaults.upstream).unwrap()
        );
        assert_eq!(
            serde_json::to_value(&raw.redis).unwrap(),
            serde_json::to_value(&defaults.redis).unwrap()
        );
        assert!(cfg.redis.is_none(), "the reference config leaves Redis off");
        assert_eq!(
            serde_json::to_value(&raw.routes).unwrap(),
            serde_json::to_value(&defaults.routes).unwrap()
        );
        assert_eq!(cfg.tenants[0].max_concurrency, 10);
        Ok(())
    });
}

#[test]
fn missing_env_secret_is_named() {
    figment::Jail::expect_with(|_jail| {
        let raw = RawConfig::from_toml_str(MINIMAL).unwrap();
        let err = raw.validate().unwrap_err().to_string();
        assert!(err.contains("tenants.acme.refresh_token"), "{err}");
        assert!(err.contains("ACME_REFRESH"), "{err}");
        Ok(())
    });
}

#[test]
fn two_tenants_cannot_share_a_token_state_file() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("ACME_REFRESH", "r");
        let text = r#"
            [tenants.one]
            client_id = "x"
            client_secret = "s"
            refresh_token = "r"
            token_state_file = "/tmp/t.json"
            [tenants.two]
            client_id = "y"
            client_secret = "s"
            refresh_token = { env = "ACME_REFRESH" }
            token_state_file = "/tmp/t.json"
        "#;
        let err = RawConfig::from_toml_str(text)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("token_state_file") && err.contains("/tmp/t.json"),
            "{err}"
        );
        Ok(())
    });
}
