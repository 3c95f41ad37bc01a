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
        // Closed sets (data centre, environment, edition) fail at load, naming key and value.
        for (key, value) in [
            ("data_centre", "mars"),
            ("environment", "staging"),
            ("edition", "platinum"),
        ] {
            let text = MINIMAL.replace(
                "data_centre = \"eu\"",
                &format!("data_centre = \"eu\"\n    {key} = \"{value}\"")
                    .replace("data_centre = \"eu\"\n    data_centre", "data_centre"),
            );
            assert_ne!(text, MINIMAL);
            let err = RawConfig::from_toml_str(&text).unwrap_err().to_string();
            assert!(
                err.contains(&format!("tenants.acme.{key}")) && err.contains(value),
                "{err}"
            );
        }
        let upper = MINIMAL.replace(
            "data_centre = \"eu\"",
            "data_centre = \"EU\"\n    edition = \"Enterprise\"",
        );
        let raw = RawConfig::from_toml_str(&upper).unwrap();
        assert_eq!(raw.tenants["acme"].data_centre, DataCentre::Eu);
        assert_eq!(raw.tenants["acme"].edition, Edition::Enterprise);

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
        // The route table is the file's own (Zoho's hot reads); the built-in default has only
        // the count route. The count route's and the pass-through's defaults are stated.
        assert_eq!(
            serde_json::to_value(&raw.redis).unwrap(),
            serde_json::to_value(&defaults.redis).unwrap()
        );
        assert!(cfg.redis.is_none(), "the reference config leaves Redis off");
        assert_eq!(
            serde_json::to_value(&raw.routes.associated_users_count).unwrap(),
            serde_json::to_value(&defaults.routes.associated_users_count).unwrap()
        );
        assert_eq!(
            serde_json::to_value(&raw.routes.passthrough).unwrap(),
            serde_json::to_value(&defaults.routes.passthrough).unwrap()
        );
        assert!(defaults.routes.cached.is_empty());
        assert!(cfg.routes.len() > 10);
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

/// Issue 13, item 4: a duration that would overflow clock arithmetic is refused, named.
#[test]
fn absurd_durations_are_refused_by_key() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("ACME_REFRESH", "r");
        jail.set_env(
            "ZOHO_GATEWAY_TENANTS__ACME__BREAKER_COOL_DOWN",
            "500000000years",
        );
        let err = RawConfig::from_toml_str(MINIMAL)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("tenants.acme.breaker_cool_down"), "{err}");
        jail.set_env("ZOHO_GATEWAY_TENANTS__ACME__BREAKER_COOL_DOWN", "30s");
        jail.set_env(
            "ZOHO_GATEWAY_ROUTES__ASSOCIATED_USERS_COUNT__TTL",
            "366days",
        );
        let err = RawConfig::from_toml_str(MINIMAL)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("routes.associated_users_count.ttl"), "{err}");
        Ok(())
    });
}

/// Redaction is a property of the secret types: serializing a config with every secret set
/// (what `check-config` prints) shows none of them.
#[test]
fn serialized_config_redacts_every_secret() {
    let text = r#"
        [admin]
        token = "admin-token-value-1"
        [tenants.acme]
        client_id = "1000.ABC"
        client_secret = "client-secret-value-2"
        refresh_token = "refresh-token-value-3"
        [tenants.pass]
        [tenants.pass.pass_through]
        hmac_secret = "hmac-secret-value-4-0123456789abcdef0123"
        [clients.reporting]
        tenant = "acme"
        key = "client-key-value-5"
        [clients.env]
        tenant = "acme"
        key = { env = "SOME_KEY_VARIABLE" }
    "#;
    let raw = RawConfig::from_toml_str(text).unwrap();
    let printed = serde_json::to_string_pretty(&raw).unwrap();
    for secret in [
        "admin-token-value-1",
        "client-secret-value-2",
        "refresh-token-value-3",
        "hmac-secret-value-4",
        "client-key-value-5",
    ] {
        assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
    }
    assert_eq!(printed.matches(REDACTED).count(), 5, "{printed}");
    assert!(printed.contains("SOME_KEY_VARIABLE"), "{printed}");
    assert_eq!(
        serde_json::to_string(&Secret::new("x")).unwrap(),
        "\"[redacted]\""
    );
}

#[test]
fn shipped_route_table_validates_and_routes_in_order() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/gateway.toml"))
        .unwrap();
    figment::Jail::expect_with(|jail| {
        jail.set_env("ZOHO_CLIENT_SECRET", "s");
        jail.set_env("ZOHO_REFRESH_TOKEN", "r");
        let cfg = RawConfig::from_toml_str(&text).unwrap().validate().unwrap();
        let route = |path: &str| {
            cfg.match_route(path)
                .map(|(id, m)| (cfg.route(id).name.as_str(), m.rest.to_owned()))
        };
        let cases = [
            (
                "/crm/v8/settings/user_groups/actions/associated_users_count",
                "associated_users_count",
            ),
            ("/crm/v8/settings/user_groups", "user_groups"),
            ("/crm/v8/settings/user_groups/123", "user_group"),
            ("/crm/v8/settings/modules", "modules"),
            ("/crm/v8/settings/modules/Leads", "module"),
            ("/crm/v8/settings/fields", "fields"),
            ("/crm/v8/settings/layouts/42", "layout"),
            ("/crm/v8/users", "users"),
            ("/crm/v8/users/42", "user"),
            ("/crm/v8/org", "org"),
            ("/crm/v8/Leads", "records"),
            ("/crm/v8/Leads/search", "search"),
            ("/crm/v8/Leads/4150868000001", "record"),
        ];
        for (path, name) in cases {
            let (got, rest) = route(path).unwrap_or_else(|| panic!("{path}: no route"));
            assert_eq!(got, name, "{path}");
            assert_eq!(rest, &path["/crm/v8".len()..]);
        }
        assert_eq!(route("/crm/v8/Leads/abc"), None);
        assert_eq!(route("/crm/v9/org"), None);
        let records = cfg.routes.iter().find(|r| r.name == "records").unwrap();
        assert_eq!(records.group, "records:{module}");
        // `credit_cost_when = { cvid = 3 }`: 3 with cvid, the route's 1 without.
        let cvid = records
            .schema
            .params()
            .iter()
            .position(|p| p.name == "cvid")
            .unwrap();
        assert_eq!(records.credit_cost_when, [(cvid, 3)]);
        assert_eq!(records.lifetimes.ttl, Duration::from_secs(30));
        Ok(())
    });
}

#[test]
fn bad_route_entries_name_their_key() {
    for (entry, key) in [
        (
            "name = \"x\"\npath = \"/other\"\nttl = \"1s\"",
            "routes.cached[0].path",
        ),
        (
            "name = \"x\"\npath = \"/crm/{version}/x\"\nttl = \"0s\"",
            "routes.cached[0].ttl",
        ),
        (
            "name = \"passthrough\"\npath = \"/crm/{version}/x\"\nttl = \"1s\"",
            "routes.cached[0].name",
        ),
        (
            "name = \"x\"\npath = \"/crm/{version}/x\"\nttl = \"1s\"\nexclusive = [[\"a\", \"b\"]]",
            "routes.cached[0].exclusive",
        ),
        (
            "name = \"associated_users_count\"\npath = \"/crm/{version}/x\"\nttl = \"1s\"",
            "routes.cached[0].name",
        ),
        (
            "name = \"x\"\npath = \"/crm/{version}/x\"\nttl = \"1s\"\ncredit_cost_when = { cvid = 3 }",
            "routes.cached[0].credit_cost_when.cvid",
        ),
        (
            "name = \"x\"\npath = \"/crm/{version}/x\"\nttl = \"1s\"\nparams.cvid = { type = \"string\" }\ncredit_cost_when = { cvid = 0 }",
            "routes.cached[0].credit_cost_when.cvid",
        ),
    ] {
        let raw = RawConfig::from_toml_str(&format!("[[routes.cached]]\n{entry}\n")).unwrap();
        let err = raw.validate().unwrap_err().to_string();
        assert!(err.contains(key), "{entry}: {err}");
    }
    let unknown = RawConfig::from_toml_str(
        "[[routes.cached]]\nname = \"x\"\npath = \"/crm/{version}/x\"\nttl = \"1s\"\nparams.a = { type = \"float\" }\n",
    );
    assert!(unknown.is_err());
}

/// Zoho's API-limits page: 50,000 + licences × per-licence rate + add-ons, capped per edition;
/// Free is 5,000 flat.
#[test]
fn edition_credit_allowances_follow_zohos_table() {
    assert_eq!(Edition::Free.credit_allowance(100, 0), 5_000);
    assert_eq!(Edition::Standard.credit_allowance(10, 0), 52_500);
    assert_eq!(
        Edition::Standard.credit_allowance(1_000, 0),
        100_000,
        "capped"
    );
    assert_eq!(Edition::Professional.credit_allowance(10, 1_000), 56_000);
    assert_eq!(Edition::Enterprise.credit_allowance(100, 0), 150_000);
    assert_eq!(Edition::Enterprise.credit_allowance(10_000, 0), 5_000_000);
    assert_eq!(Edition::Ultimate.credit_allowance(10_000, 0), 20_050_000);
    let concurrency = [Edition::Free, Edition::Ultimate].map(Edition::concurrency_limit);
    assert_eq!(concurrency, [5, 25]);
}

#[test]
fn credit_settings_and_client_priority() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("ACME_REFRESH", "r");
        let load = |extra: &str| {
            RawConfig::from_toml_str(&MINIMAL.replace(
                "[clients.reporting]",
                &format!("{extra}\n[clients.reporting]"),
            ))
            .unwrap()
            .validate()
        };
        let t = |cfg: &GatewayConfig| cfg.tenants[0].clone();
        // Unknown without licences (a guess could start the reserve early).
        assert_eq!(t(&load("").unwrap()).credit_allowance, None);
        let cfg =
            load("edition = \"professional\"\nuser_licenses = 10\ncredit_reserve = 5000").unwrap();
        assert_eq!(t(&cfg).credit_allowance, Some(55_000));
        assert_eq!(t(&cfg).credit_reserve, Some(5_000));
        assert_eq!(t(&cfg).max_concurrency, 15);
        assert_eq!(
            t(&load("edition = \"free\"").unwrap()).credit_allowance,
            Some(5_000)
        );
        assert_eq!(
            t(&load("user_licenses = 10\ndaily_credits = 777").unwrap()).credit_allowance,
            Some(777),
            "an explicit figure wins"
        );
        let err = load("daily_credits = 100\ncredit_reserve = 100")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tenants.acme.credit_reserve"), "{err}");
        let err = load("daily_credits = 0").unwrap_err().to_string();
        assert!(err.contains("tenants.acme.daily_credits"), "{err}");

        let client = |text: &str| {
            RawConfig::from_toml_str(&format!("{MINIMAL}\n{text}")).and_then(|raw| raw.validate())
        };
        let cfg = client("priority = \"high\"").unwrap();
        assert!(cfg.clients.values().all(|c| c.priority == Priority::High));
        let cfg = client("").unwrap();
        assert!(cfg.clients.values().all(|c| c.priority == Priority::Normal));
        let err = client("priority = \"urgent\"").unwrap_err().to_string();
        assert!(err.contains("priority") && err.contains("urgent"), "{err}");
        Ok(())
    });
}

#[test]
fn tenant_ids_can_be_reassigned_with_their_clients() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("ACME_REFRESH", "r");
        let text = MINIMAL.replace(
            "[clients.reporting]",
            "[tenants.beta]\nclient_id = \"y\"\nclient_secret = \"s\"\nrefresh_token = \"r\"\n\
             [clients.b]\ntenant = \"beta\"\nkey = \"beta-key\"\n[clients.reporting]",
        );
        let mut cfg = RawConfig::from_toml_str(&text).unwrap().validate().unwrap();
        let ids = |cfg: &GatewayConfig| cfg.tenants.iter().map(|t| t.id).collect::<Vec<_>>();
        assert_eq!(ids(&cfg), [TenantId(0), TenantId(1)]);
        cfg.assign_tenant_ids(|name| {
            if name == "acme" {
                TenantId(7)
            } else {
                TenantId(3)
            }
        });
        assert_eq!(ids(&cfg), [TenantId(7), TenantId(3)]);
        let of = |key: &str| cfg.clients[&key_digest(key.as_bytes())].tenant;
        assert_eq!(
            (of("plain-client-key"), of("beta-key")),
            (TenantId(7), TenantId(3))
        );
        Ok(())
    });
}

#[test]
fn a_toml_syntax_error_names_the_line_but_never_prints_it() {
    // A typo on a secret's line: the TOML parser quotes the line in its message.
    let text = MINIMAL.replace(
        "client_secret = \"s3cr3t-client\"",
        "client_secret = \"s3cr3t-client\" oops",
    );
    assert_ne!(text, MINIMAL);
    let err = RawConfig::from_toml_str(&text).unwrap_err().to_string();
    assert!(!err.contains("s3cr3t-client"), "{err}");
    assert!(err.contains("line 5"), "{err}");
}
