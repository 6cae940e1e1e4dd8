//! Scanner release provenance: release signatures stored in an OCI registry next to the scanner
//! image they sign, published and discovered with `oci-client`, verified with the same offline
//! verifier the CLI uses (`stella_signer::verify`).
//!
//! A release signature is a Sigstore bundle v0.3 whose DSSE envelope signs an in-toto statement
//! with predicate type [`RELEASE_PREDICATE`] and the image's digest as its only subject. It is
//! pushed as an OCI 1.1 referrer: an image manifest with `artifactType` [`BUNDLE_MEDIA_TYPE`],
//! the bundle as its one layer and `subject` = the image manifest.
//!
//! Discovery, in order: the registry's referrers API; the referrers tag schema (an image index
//! under tag `sha256-<hex>`, which [`Registry::publish`] keeps up to date because registries
//! without the API — Debian's `docker-registry` among them — do not); the classic cosign tag
//! `sha256-<hex>.sig` (simple-signing payloads with the signature in a layer annotation).
//! "No signature found" and "the registry could not be asked" are different answers here, and
//! only a verified signature over the exact digest makes a release trusted.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use stella_signer::statement::STATEMENT_TYPE_V1;
use stella_signer::{
    Bundle, Envelope, FileKeySigner, IN_TOTO_PAYLOAD_TYPE, KeySigner, PublicKey, Statement, Subject,
};

mod registry;
mod verify;

pub use registry::Registry;
pub use verify::verify;

pub const RELEASE_PREDICATE: &str = "stella.ops/scanner-release@v1";
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
const COSIGN_SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const COSIGN_SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// The registry could not be asked (down, refused, 5xx): nothing can be concluded.
    #[error("registry unavailable: {0}")]
    Unavailable(String),
    #[error("invalid reference: {0}")]
    Reference(String),
    #[error("{0}")]
    Signing(String),
}

#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// `host[:port]/path` of the scanner image repository.
    pub repository: String,
    /// Plain HTTP (a registry on loopback in tests and dev set-ups).
    pub insecure: bool,
    /// Extra PEM CA for the registry's TLS certificate.
    pub ca_pem: Option<String>,
    /// Larger referrer manifests are not fetched.
    pub max_manifest_bytes: usize,
    /// Larger signature blobs are not fetched (and a stream is cut off past it).
    pub max_blob_bytes: usize,
    /// The longest the registry may take to answer a call (and to connect: a third of it).
    pub timeout: std::time::Duration,
}

impl RegistryConfig {
    pub fn new(repository: &str) -> RegistryConfig {
        RegistryConfig {
            repository: repository.trim_end_matches('/').to_owned(),
            insecure: false,
            ca_pem: None,
            max_manifest_bytes: 256 * 1024,
            max_blob_bytes: 1024 * 1024,
            timeout: std::time::Duration::from_secs(10),
        }
    }

    /// Whether the repository's registry is on this host (the only place plain HTTP may go).
    pub fn is_loopback(&self) -> bool {
        let host = self.repository.split('/').next().unwrap_or_default();
        let host = match host.strip_prefix('[') {
            Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
            None => host.rsplit_once(':').map_or(host, |(h, _)| h),
        };
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

/// One signature found for a digest, as fetched (not yet verified).
#[derive(Debug, Clone)]
pub enum Candidate {
    Bundle {
        manifest_digest: String,
        bundle: Box<Bundle>,
    },
    CosignClassic {
        manifest_digest: String,
        payload: Vec<u8>,
        signature: Vec<u8>,
    },
}

/// What discovery found for a digest: candidates, and entries that could not be used (with why).
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    pub candidates: Vec<Candidate>,
    pub problems: Vec<String>,
}

/// One signature's verdict, for reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignatureReport {
    /// `sigstore-bundle` or `cosign-classic`.
    pub kind: String,
    pub manifest_digest: String,
    /// The trusted key that verified it, if any.
    pub key_id: Option<String>,
    pub verified: bool,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub trusted: bool,
    pub signatures: Vec<SignatureReport>,
    /// Entries that could not be used (malformed index, oversized manifest, …).
    pub problems: Vec<String>,
}

impl Verdict {
    /// The key id of the first verified signature.
    pub fn signer(&self) -> Option<&str> {
        self.signatures
            .iter()
            .find(|s| s.verified)
            .and_then(|s| s.key_id.as_deref())
    }
}

/// `sha256:<64 lowercase hex>` → the hex; anything else is refused.
pub fn parse_digest(digest: &str) -> Result<&str, ReleaseError> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| ReleaseError::Reference(format!("`{digest}` is not sha256:<hex>")))?;
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(ReleaseError::Reference(format!(
            "`{digest}` is not sha256:<64 lowercase hex>"
        )));
    }
    Ok(hex)
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexDoc {
    manifests: Vec<DescriptorDoc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescriptorDoc {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    annotations: Option<serde_json::Map<String, Value>>,
}

impl DescriptorDoc {
    /// The signature a classic cosign layer carries in its annotation, decoded.
    fn cosign_signature(&self) -> Option<Vec<u8>> {
        self.annotations
            .as_ref()
            .and_then(|a| a.get(COSIGN_SIGNATURE_ANNOTATION))
            .and_then(Value::as_str)
            .and_then(|s| STANDARD.decode(s).ok())
    }
}

#[derive(Deserialize)]
struct ManifestDoc {
    #[serde(default)]
    layers: Vec<DescriptorDoc>,
}

/// The release statement for `repository@digest`, signed into a bundle with `key`.
pub fn release_bundle(
    repository: &str,
    digest: &str,
    key: &FileKeySigner,
) -> Result<Bundle, ReleaseError> {
    let hex = parse_digest(digest)?;
    let statement = Statement {
        statement_type: STATEMENT_TYPE_V1.to_owned(),
        subject: vec![Subject::sha256(repository, hex)],
        predicate_type: RELEASE_PREDICATE.to_owned(),
        predicate: json!({"repository": repository, "releasedAt": now_rfc3339()}),
    };
    let payload = statement
        .to_canonical_bytes()
        .map_err(|e| ReleaseError::Signing(e.to_string()))?;
    let (envelope, ops) = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, payload, &[key as &dyn KeySigner])
        .map_err(|e| ReleaseError::Signing(e.to_string()))?;
    let op = ops
        .first()
        .ok_or_else(|| ReleaseError::Signing("no signature".into()))?;
    Bundle::for_signature(&envelope, 0, op).map_err(|e| ReleaseError::Signing(e.to_string()))
}

/// Fuzz entry point (`fuzz/` and the corpus test in `stella-node`): a registry's answer — an
/// OCI index or image manifest, or a blob — parsed and walked as discovery does, and whatever
/// it carries verified as a release signature against `key`. Must never panic.
pub fn fuzz_registry_document(data: &[u8], key: &PublicKey) {
    let digest = format!("sha256:{}", "a".repeat(64));
    let mut discovery = Discovery::default();
    if let Ok(index) = serde_json::from_slice::<IndexDoc>(data) {
        for descriptor in &index.manifests {
            let _ = parse_digest(&descriptor.digest);
            let _ = descriptor
                .artifact_type
                .as_deref()
                .is_some_and(|t| t != BUNDLE_MEDIA_TYPE);
        }
    }
    if let Ok(manifest) = serde_json::from_slice::<ManifestDoc>(data) {
        for layer in &manifest.layers {
            if let Some(signature) = layer.cosign_signature() {
                discovery.candidates.push(Candidate::CosignClassic {
                    manifest_digest: sha256_digest(data),
                    payload: data.to_vec(),
                    signature,
                });
            }
        }
    }
    if let Ok(bundle) = Bundle::from_json(data) {
        discovery.candidates.push(Candidate::Bundle {
            manifest_digest: sha256_digest(data),
            bundle: Box::new(bundle),
        });
    }
    discovery.candidates.push(Candidate::CosignClassic {
        manifest_digest: sha256_digest(data),
        payload: data.to_vec(),
        signature: data.to_vec(),
    });
    let _ = verify(&discovery, &digest, std::slice::from_ref(key));
    let _ = media_type_of(data);
}

fn media_type_of(manifest: &[u8]) -> String {
    serde_json::from_slice::<Value>(manifest)
        .ok()
        .and_then(|v| {
            v.get("mediaType")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| OCI_MANIFEST.to_owned())
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_registry_on_this_host_counts_as_loopback() {
        for repo in [
            "localhost:5000/stella/scanner",
            "127.0.0.1:5000/x",
            "127.1.2.3/x",
            "[::1]:5000/x",
            "LOCALHOST/x",
        ] {
            assert!(RegistryConfig::new(repo).is_loopback(), "{repo}");
        }
        for repo in [
            "registry.example:5000/x",
            "10.0.0.5:5000/x",
            "localhost.example.com/x",
            "[2001:db8::1]:5000/x",
            "127.0.0.1.nip.io/x",
        ] {
            assert!(!RegistryConfig::new(repo).is_loopback(), "{repo}");
        }
    }
}
