//! `[signing.kms]`: where the node's AWS KMS keys are and how long a call may take. Credentials
//! are not here: the SDK's standard chain provides them (`AWS_ACCESS_KEY_ID`/… in the
//! environment, a web-identity token, the ECS or instance role).

use std::time::Duration;

use serde::Deserialize;

/// The node's signing bound (`signing::SIGN_TIMEOUT`): no KMS call may be allowed longer.
const SIGNING_BOUND_MS: u64 = 10_000;

/// Connect timeout to the KMS endpoint (TCP + TLS).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// One attempt of one KMS call.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// One KMS call with all its attempts and back-offs: half the node's 10 s signing bound, so a
/// KMS outage answers `signing_unavailable` well before the request's own deadline.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts per call (the first and two retries), standard retry mode.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Where and how patiently the node talks to KMS (`[signing.kms]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsSettings {
    /// The AWS region of the keys (required: no region look-up over instance metadata).
    pub region: String,
    /// Another endpoint than the region's public one: a VPC endpoint, or a KMS-protocol
    /// stand-in on loopback in tests.
    pub endpoint_url: Option<String>,
    pub connect_timeout: Duration,
    pub attempt_timeout: Duration,
    pub operation_timeout: Duration,
    pub max_attempts: u32,
}

impl KmsSettings {
    /// The region's endpoint with the default bounds.
    pub fn new(region: &str) -> KmsSettings {
        KmsSettings {
            region: region.to_owned(),
            endpoint_url: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsSection {
    /// The keys' AWS region, e.g. `eu-west-1` (required: never looked up over the network).
    pub region: String,
    /// A VPC endpoint (`https://vpce-….kms.eu-west-1.vpce.amazonaws.com`) or, on loopback
    /// only, a plain-HTTP KMS-protocol stand-in (moto in tests).
    pub endpoint_url: Option<String>,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// One attempt of one call.
    #[serde(default = "default_attempt_timeout_ms")]
    pub attempt_timeout_ms: u64,
    /// One call with all its attempts and back-offs (≤ the 10 s signing bound).
    #[serde(default = "default_operation_timeout_ms")]
    pub operation_timeout_ms: u64,
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// KMS signings in progress at once on this node; more wait (then 503).
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
}

fn default_connect_timeout_ms() -> u64 {
    DEFAULT_CONNECT_TIMEOUT.as_millis() as u64
}

fn default_attempt_timeout_ms() -> u64 {
    DEFAULT_ATTEMPT_TIMEOUT.as_millis() as u64
}

fn default_operation_timeout_ms() -> u64 {
    DEFAULT_OPERATION_TIMEOUT.as_millis() as u64
}

fn default_max_attempts() -> u32 {
    DEFAULT_MAX_ATTEMPTS
}

fn default_max_concurrent() -> usize {
    crate::backends::MAX_SIGNINGS_PER_BACKEND
}

impl KmsSection {
    /// The client settings, or what is wrong with the section.
    pub fn settings(&self) -> Result<KmsSettings, String> {
        let region_ok = !self.region.is_empty()
            && self.region.len() <= 32
            && self
                .region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !region_ok {
            return Err(format!(
                "[signing.kms] region `{}` is not an AWS region name",
                crate::error::clip(&self.region)
            ));
        }
        if let Some(endpoint) = &self.endpoint_url {
            check_endpoint(endpoint)?;
        }
        let (connect, attempt, operation) = (
            self.connect_timeout_ms,
            self.attempt_timeout_ms,
            self.operation_timeout_ms,
        );
        if !(10..=attempt).contains(&connect) || attempt > operation || operation > SIGNING_BOUND_MS
        {
            return Err(format!(
                "[signing.kms] needs 10 ≤ connect_timeout_ms ≤ attempt_timeout_ms ≤ operation_timeout_ms ≤ {SIGNING_BOUND_MS} (the signing bound)"
            ));
        }
        if !(1..=10).contains(&self.max_attempts) || self.max_concurrent == 0 {
            return Err(
                "[signing.kms] max_attempts must be 1 to 10 and max_concurrent positive".into(),
            );
        }
        Ok(KmsSettings {
            region: self.region.clone(),
            endpoint_url: self.endpoint_url.clone(),
            connect_timeout: Duration::from_millis(connect),
            attempt_timeout: Duration::from_millis(attempt),
            operation_timeout: Duration::from_millis(operation),
            max_attempts: self.max_attempts,
        })
    }
}

/// HTTPS anywhere; plain HTTP only to a loopback address (a signed request in clear text
/// could be replayed by anyone on the path).
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let url = url::Url::parse(endpoint).map_err(|e| format!("[signing.kms] endpoint_url: {e}"))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!(
            "[signing.kms] endpoint_url `{}`: https, or http on loopback only",
            crate::error::clip(endpoint)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(extra: &str) -> Result<KmsSettings, String> {
        let section: KmsSection = toml::from_str(&format!("region = \"eu-west-1\"\n{extra}"))
            .map_err(|e| e.to_string())?;
        section.settings()
    }

    #[test]
    fn defaults_are_the_documented_bounds() {
        let settings = section("").expect("defaults");
        assert_eq!(settings, KmsSettings::new("eu-west-1"));
        assert_eq!(settings.connect_timeout, Duration::from_secs(1));
        assert_eq!(settings.attempt_timeout, Duration::from_secs(2));
        assert_eq!(settings.operation_timeout, Duration::from_secs(5));
        assert_eq!(settings.max_attempts, 3);
    }

    #[test]
    fn endpoints_bounds_and_regions_are_checked() {
        for ok in [
            "endpoint_url = \"https://vpce-0a.kms.eu-west-1.vpce.amazonaws.com\"",
            "endpoint_url = \"http://127.0.0.1:5000\"",
            "endpoint_url = \"http://localhost:5000\"",
            "operation_timeout_ms = 10000",
        ] {
            assert!(section(ok).is_ok(), "{ok}");
        }
        for bad in [
            "endpoint_url = \"http://kms.internal:5000\"",
            "endpoint_url = \"ftp://127.0.0.1\"",
            "endpoint_url = \"not a url\"",
            "operation_timeout_ms = 10001",
            "attempt_timeout_ms = 6000",
            "connect_timeout_ms = 0",
            "max_attempts = 0",
            "max_concurrent = 0",
            "access_key_id = \"AKIA…\"",
        ] {
            assert!(section(bad).is_err(), "{bad}");
        }
        let region: KmsSection = toml::from_str("region = \"EU West\"").expect("parses");
        assert!(region.settings().is_err());
    }
}
