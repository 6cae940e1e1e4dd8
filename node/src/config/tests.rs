use super::*;

const MINIMAL: &str = r#"
listen = "127.0.0.1:8443"
data_dir = "/var/lib/stella-signer"
[tls]
cert = "/etc/stella/tls/server.pem"
key = "/etc/stella/tls/server.key"
[signing]
key_file = "/etc/stella/keys/signing.pem"
[admission]
issuer = "https://authority.example"
jwks_url = "https://authority.example/jwks.json"
[entitlement]
introspection_url = "https://licensing.example/introspect"
client_id = "stella-signer"
client_secret_file = "/etc/stella/licensing-secret"
bypass_plan = "team"
[[plans]]
name = "team"
signatures_per_window = 1000
window_seconds = 3600
max_concurrent = 8
max_artifact_bytes = 1048576
"#;

#[test]
fn a_minimal_config_parses_with_defaults() {
    let config = Config::from_toml(MINIMAL).expect("valid");
    assert_eq!(config.limits.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    assert!(!config.dev);
}

#[test]
fn tls_is_required_unless_disabled_explicitly() {
    let no_tls = MINIMAL.replace("cert = \"/etc/stella/tls/server.pem\"\n", "");
    assert!(matches!(Config::from_toml(&no_tls), Err(Error::Config(_))));
    let disabled = MINIMAL.replace("[tls]\n", "[tls]\ndisabled = true\n");
    assert!(Config::from_toml(&disabled).is_ok());
    for wide in ["0.0.0.0:8443", "10.1.2.3:8443", "[::]:8443"] {
        let exposed = disabled.replace("127.0.0.1:8443", wide);
        assert!(
            matches!(Config::from_toml(&exposed), Err(Error::Config(e)) if e.contains("loopback")),
            "{wide}"
        );
    }
    let loopback = disabled.replace("127.0.0.1:8443", "127.0.0.3:8443");
    assert!(
        Config::from_toml(&loopback).is_ok(),
        "all of 127/8 is loopback"
    );
}

#[test]
fn plain_http_to_a_registry_only_on_loopback() {
    let with = |repository: &str| {
        format!(
            "{MINIMAL}\n[provenance]\nrepository = \"{repository}\"\ninsecure_registry = true\ntrusted_keys = [\"/k.pem\"]\n"
        )
    };
    assert!(Config::from_toml(&with("127.0.0.1:5000/stella/scanner")).is_ok());
    assert!(Config::from_toml(&with("localhost:5000/stella/scanner")).is_ok());
    assert!(matches!(
        Config::from_toml(&with("registry.example:5000/stella/scanner")),
        Err(Error::Config(e)) if e.contains("loopback")
    ));
}

#[test]
fn unknown_keys_missing_sections_and_dangling_plans_are_rejected() {
    assert!(Config::from_toml(&format!("{MINIMAL}\nfoo = 1\n")).is_err());
    let no_entitlement = MINIMAL.replace("[entitlement]", "[entitlement_x]");
    assert!(Config::from_toml(&no_entitlement).is_err());
    let both_jwks = MINIMAL.replace(
        "jwks_url = ",
        "jwks_file = \"/etc/stella/jwks.json\"\njwks_url = ",
    );
    assert!(Config::from_toml(&both_jwks).is_err());
    let dangling = MINIMAL.replace("bypass_plan = \"team\"", "bypass_plan = \"gold\"");
    assert!(Config::from_toml(&dangling).is_err());
}
