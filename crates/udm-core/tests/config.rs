//! Configuration: parsing, env overrides, and every kind of bad config reported with its path.

use udm_core::ErrorKind;
use udm_core::config::{BlobBackend, Config, MetaBackend, S3Client};

const GOOD: &str = r#"
[[backends]]
name = "pair-a"
meta = { kind = "mongo", uri = "mongodb://app:s3cret@127.0.0.1:27017/?authSource=admin", database = "udm", max_pool_size = 20 }
blobs = { kind = "s3", endpoint = "http://127.0.0.1:9000", region = "us-east-1", access_key_id = "AKIA", secret_access_key = "topsecret", json_bucket = "udm-json", content_bucket = "udm-content", path_style = true, client = "aws_sdk" }

[[backends]]
name = "local"
meta = { kind = "embedded", path = "/var/lib/udm/meta.redb" }
blobs = { kind = "fs", root = "/var/lib/udm/blobs" }

[routing]
key_template = "{tenant}|{db}|{collection}:{id}"

[[collections]]
db = "crm"
collection = "users"
indexed_props = [{ path = "email", required = true }, { path = "address.city" }]
base64_props = [{ path = "avatar.data", content_type = "image/png" }]
counter_rules = [{ name = "vips", on = ["CREATE", "UPDATE"], when = { "data.tier" = "vip" } }]

[dev_shadow]
enabled = true
ttl_secs = 3600
max_bytes = 65536

[hard_delete]
enabled = true

[deadlines]
connect_ms = 2000
call_ms = 10000
"#;

fn problems_of(text: &str) -> Vec<String> {
    let cfg = Config::from_toml(text).expect("parses");
    let e = cfg.validate().expect_err("invalid");
    assert_eq!(e.kind(), ErrorKind::Config);
    e.problems().iter().map(|p| p.path.clone()).collect()
}

#[test]
fn full_config_parses_and_validates() {
    let cfg = Config::from_toml(GOOD).unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.backends.len(), 2);
    assert!(matches!(&cfg.backends[0].blobs, BlobBackend::S3 { client: S3Client::AwsSdk, path_style: true, .. }));
    assert!(matches!(&cfg.backends[1].meta, MetaBackend::Embedded { .. }));
    assert_eq!(cfg.deadlines.call_ms, 10_000);
    assert_eq!(cfg.deadlines.write_budget_ms, 60_000);
    let users = cfg.collection("any-tenant", "crm", "users").unwrap();
    assert_eq!(users.metadata_map().indexed_props.len(), 2);
    assert!(cfg.collection("t", "crm", "other").is_none());
}

#[test]
fn secrets_never_print() {
    let cfg = Config::from_toml(GOOD).unwrap();
    let shown = format!("{cfg:?} {}", serde_json::to_string(&cfg).unwrap());
    for secret in ["s3cret", "topsecret", "AKIA", "authSource"] {
        assert!(!shown.contains(secret), "{secret} leaked");
    }
    assert!(shown.contains("mongodb://app:***@127.0.0.1:27017"));
    // A validation error about a bad URI does not echo it either.
    let bad = GOOD.replace("mongodb://app:s3cret@127.0.0.1:27017/?authSource=admin", "mongo://app:s3cret@h");
    let e = Config::from_toml(&bad).unwrap().validate().unwrap_err();
    assert!(!e.to_string().contains("s3cret"), "{e}");
}

#[test]
fn json_and_toml_agree() {
    let cfg = Config::from_toml(GOOD).unwrap();
    // Serialized secrets are redacted, so restore them before reparsing.
    let json = serde_json::to_string(&cfg).unwrap();
    let json = json
        .replace("mongodb://app:***@127.0.0.1:27017/", "mongodb://app:s3cret@127.0.0.1:27017/?authSource=admin")
        .replacen("\"***\"", "\"AKIA\"", 1)
        .replacen("\"***\"", "\"topsecret\"", 1);
    let again = Config::from_json(&json).unwrap();
    assert_eq!(again, cfg);
}

#[test]
fn unknown_keys_are_errors() {
    for bad in [
        GOOD.replace("[hard_delete]", "[hard_delete]\nenabeld = true"),
        GOOD.replace("database = \"udm\"", "database = \"udm\", colour = 1"),
        format!("{GOOD}\n[surprise]\nx = 1\n"),
    ] {
        let e = Config::from_toml(&bad).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.to_string().contains("unknown"), "{e}");
    }
}

#[test]
fn syntax_and_type_errors_name_a_line() {
    let e = Config::from_toml("[[backends]\n").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    let e = Config::from_toml(&GOOD.replace("call_ms = 10000", "call_ms = \"ten\"")).unwrap_err();
    assert!(e.problems()[0].path.starts_with("line "), "{e:?}");
    assert!(Config::from_json("{").is_err());
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let bad = GOOD
        .replace("mongodb://app:s3cret@127.0.0.1:27017/?authSource=admin", "postgres://x")
        .replace("database = \"udm\"", "database = \"my.db\"")
        .replace("max_pool_size = 20", "max_pool_size = 0")
        .replace("endpoint = \"http://127.0.0.1:9000\"", "endpoint = \"ftp://x\"")
        .replace("region = \"us-east-1\"", "region = \"\"")
        .replace("json_bucket = \"udm-json\"", "json_bucket = \"UDM_JSON\"")
        .replace("access_key_id = \"AKIA\", ", "")
        .replace("name = \"local\"", "name = \"pair-a\"")
        .replace("path = \"/var/lib/udm/meta.redb\"", "path = \" \"")
        .replace("{tenant}|{db}|{collection}:{id}", "{tenant}|{shard}")
        .replace("[deadlines]", "[retention]\ndays = 0\n[fallback_queue]\nretry = { base_delay_ms = 100, max_delay_ms = 60000, max_attempts = 0 }\n[deadlines]")
        .replace("call_ms = 10000", "call_ms = 0")
        .replace("collection = \"users\"", "collection = \"us/ers\"")
        .replace("path = \"email\"", "path = \"$email\"")
        .replace("\"data.tier\" = \"vip\"", "\"data.tier\" = { \"$regex\" = \"v\" }")
        .replace("ttl_secs = 3600", "ttl_secs = 0")
        .replace("max_attempts = 8", "max_attempts = 0");
    let paths = problems_of(&bad);
    for expected in [
        "backends[0].meta.uri",
        "backends[0].meta.database",
        "backends[0].meta.max_pool_size",
        "backends[0].blobs.endpoint",
        "backends[0].blobs.region",
        "backends[0].blobs.json_bucket",
        "backends[0].blobs",
        "backends[1].name",
        "backends[1].meta.path",
        "routing.key_template",
        "retention.days",
        "collections[0].collection",
        "collections[0].indexed_props[0].path",
        "collections[0].counter_rules[0].when.data.tier.$regex",
        "dev_shadow",
        "fallback_queue.retry.max_attempts",
        "deadlines",
    ] {
        assert!(paths.iter().any(|p| p == expected), "missing {expected} in {paths:?}");
    }
}

#[test]
fn backend_count_is_one_to_ten() {
    let mut cfg = Config::in_memory();
    cfg.validate().unwrap();
    let pair = cfg.backends[0].clone();
    cfg.backends = (0..11)
        .map(|i| {
            let mut p = pair.clone();
            p.name = format!("p{i}");
            p
        })
        .collect();
    assert_eq!(cfg.validate().unwrap_err().problems()[0].path, "backends");
    cfg.backends.clear();
    assert_eq!(cfg.validate().unwrap_err().problems()[0].path, "backends");
}

#[test]
fn env_overrides_a_toml_base() {
    let env = [
        ("UDM__BACKENDS__0__BLOBS__REGION", "eu-north-1"),
        ("UDM__LIMITS__MAX_DEPTH", "50"),
        ("UDM__HARD_DELETE__ENABLED", "false"),
        ("HOME", "/root"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let cfg = Config::from_sources(Some(GOOD), env).unwrap();
    assert!(matches!(&cfg.backends[0].blobs, BlobBackend::S3 { region, .. } if region == "eu-north-1"));
    assert_eq!(cfg.limits.max_depth, 50);
    assert!(!cfg.hard_delete.enabled);
    // Overrides are validated like everything else.
    let env = [("UDM__BACKENDS__0__BLOBS__REGION".to_owned(), "".to_owned())];
    assert_eq!(Config::from_sources(Some(GOOD), env).unwrap_err().kind(), ErrorKind::Config);
    // Env alone can describe a whole config.
    let env = [
        ("UDM__BACKENDS__0__NAME", "m"),
        ("UDM__BACKENDS__0__META__KIND", "memory"),
        ("UDM__BACKENDS__0__BLOBS__KIND", "memory"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    assert_eq!(Config::from_sources(None, env).unwrap().backends[0].name, "m");
}

#[test]
fn tenant_specific_collection_config_wins() {
    let text = format!(
        "{GOOD}\n[[collections]]\ntenant = \"acme\"\ndb = \"crm\"\ncollection = \"users\"\nindexed_props = [{{ path = \"x\" }}]\n"
    );
    let cfg = Config::from_toml(&text).unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.collection("acme", "crm", "users").unwrap().indexed_props[0].path, "x");
    assert_eq!(cfg.collection("other", "crm", "users").unwrap().indexed_props[0].path, "email");
}

/// Settings of features that do not exist yet are refused, never silently ignored.
#[test]
fn settings_that_would_do_nothing_are_refused() {
    let cases = [("[counters]\nmongo_uri = \"mongodb://127.0.0.1:1\"\ndatabase = \"c\"\n", "counters")];
    for (section, path) in cases {
        let cfg = Config::from_toml(&format!("{GOOD}\n{section}")).unwrap();
        let e = cfg.validate().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{section}: {e}");
        assert_eq!(e.problems()[0].path, path, "{e:?}");
    }
    let with_backups = GOOD.replace(
        "content_bucket = \"udm-content\"",
        "content_bucket = \"udm-content\", backups_bucket = \"udm-backups\"",
    );
    let e = Config::from_toml(&with_backups).unwrap().validate().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert_eq!(e.problems()[0].path, "backends[0].blobs.backups_bucket");
    // Defaults, retention (enforced by `Admin::enforce_retention`) and the write-optimization
    // knobs that work are accepted.
    let ok = format!(
        "{GOOD}\n[write_optimization]\nskip_dev_shadow_over_bytes = 1024\n[fallback_queue]\nenabled = false\n[retention]\ndays = 90\n"
    );
    Config::from_toml(&ok).unwrap().validate().unwrap();
}

/// The fallback queue's spool path must not be empty (that it is given when the queue is on
/// is checked where the spool opens: an application may inject its queue store instead).
#[test]
fn the_fallback_queue_spool_is_checked() {
    let e = Config::from_toml(&format!("{GOOD}\n[fallback_queue]\nenabled = true\nspool = \" \"\n"))
        .unwrap()
        .validate()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert_eq!(e.problems()[0].path, "fallback_queue.spool", "{e:?}");
    let ok = format!(
        "{GOOD}\n[fallback_queue]\nenabled = true\nspool = \"/var/lib/app/udm-queue.redb\"\n\
         retry = {{ base_delay_ms = 100, max_delay_ms = 60000, max_attempts = 8 }}\n"
    );
    let cfg = Config::from_toml(&ok).unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.fallback_queue.spool.as_deref(), Some("/var/lib/app/udm-queue.redb"));
    assert_eq!(cfg.fallback_queue.retry.max_attempts, 8);
}

/// A backend kind the core does not know is carried as given (for the adapter registered for
/// it); its values never print; a built-in kind with bad fields is still a parse error.
#[test]
fn custom_backend_kinds_need_no_core_change() {
    use udm_core::config::CustomBackend;
    let text = GOOD.replace(
        r#"meta = { kind = "embedded", path = "/var/lib/udm/meta.redb" }"#,
        r#"meta = { kind = "postgres", url = "postgres://u:hunter2@db/udm", pool = 4 }"#,
    );
    let cfg = Config::from_toml(&text).unwrap();
    cfg.validate().unwrap();
    let MetaBackend::Custom(CustomBackend { kind, settings }) = &cfg.backends[1].meta else {
        panic!("custom kind expected: {:?}", cfg.backends[1].meta);
    };
    assert_eq!((kind.as_str(), settings["pool"].as_i64()), ("postgres", Some(4)));
    let shown = format!("{cfg:?} {}", serde_json::to_string(&cfg).unwrap());
    assert!(!shown.contains("hunter2"), "{shown}");
    let bad_kind = text.replace("kind = \"postgres\"", "kind = \"pg/../x\"");
    assert_eq!(Config::from_toml(&bad_kind).unwrap().validate().unwrap_err().kind(), ErrorKind::Config);
    let e = Config::from_toml(&GOOD.replace("path = \"/var/lib/udm/meta.redb\"", "pth = \"x\"")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
}

/// Blobs kept in the embedded store's file need that pair's metadata to be embedded.
#[test]
fn embedded_blobs_need_an_embedded_metadata_store() {
    let pair = |meta: &str| format!("[[backends]]\nname = \"p\"\nmeta = {meta}\nblobs = {{ kind = \"embedded\" }}\n");
    let ok = Config::from_toml(&pair(r#"{ kind = "embedded", path = "/tmp/udm.redb" }"#)).unwrap();
    ok.validate().unwrap();
    assert!(matches!(ok.backends[0].blobs, udm_core::config::BlobBackend::Embedded { path: None }));
    let bad = Config::from_toml(&pair(r#"{ kind = "memory" }"#)).unwrap().validate().unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::Config);
    assert!(bad.to_string().contains("meta.kind = \"embedded\""), "{bad}");
}
