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
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use stella_signer::statement::STATEMENT_TYPE_V1;
use stella_signer::verify::{Expectations, check_expectations, verify_bundle};
use stella_signer::{
    Bundle, Envelope, FileKeySigner, IN_TOTO_PAYLOAD_TYPE, KeySigner, PublicKey, Statement, Subject,
};

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

/// Verifies every candidate against the trusted keys; trusted if one verifies over `digest`.
pub fn verify(discovery: &Discovery, digest: &str, keys: &[PublicKey]) -> Verdict {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    let signatures: Vec<SignatureReport> = discovery
        .candidates
        .iter()
        .map(|candidate| match candidate {
            Candidate::Bundle {
                manifest_digest,
                bundle,
            } => verify_release_bundle(bundle, hex, keys, manifest_digest),
            Candidate::CosignClassic {
                manifest_digest,
                payload,
                signature,
            } => verify_cosign_classic(payload, signature, digest, keys, manifest_digest),
        })
        .collect();
    Verdict {
        trusted: signatures.iter().any(|s| s.verified),
        signatures,
        problems: discovery.problems.clone(),
    }
}

fn verify_release_bundle(
    bundle: &Bundle,
    hex: &str,
    keys: &[PublicKey],
    manifest_digest: &str,
) -> SignatureReport {
    let report = |key_id: Option<String>, verified, reason: String| SignatureReport {
        kind: "sigstore-bundle".into(),
        manifest_digest: manifest_digest.to_owned(),
        key_id,
        verified,
        reason,
    };
    let expect = Expectations {
        subject_sha256: Some(hex.to_owned()),
        predicate_type: Some(RELEASE_PREDICATE.to_owned()),
    };
    let mut last = "no trusted key is configured".to_owned();
    for key in keys {
        match verify_bundle(bundle, key) {
            Ok(verified) => match check_expectations(&verified, &expect) {
                Ok(()) => return report(Some(key.key_id()), true, "verified".into()),
                // A valid signature by a trusted key over something else.
                Err(e) => return report(Some(key.key_id()), false, e.to_string()),
            },
            Err(e) => last = e.to_string(),
        }
    }
    report(None, false, format!("not signed by a trusted key ({last})"))
}

fn verify_cosign_classic(
    payload: &[u8],
    signature: &[u8],
    digest: &str,
    keys: &[PublicKey],
    manifest_digest: &str,
) -> SignatureReport {
    let report = |key_id: Option<String>, verified, reason: &str| SignatureReport {
        kind: "cosign-classic".into(),
        manifest_digest: manifest_digest.to_owned(),
        key_id,
        verified,
        reason: reason.to_owned(),
    };
    let Some(key) = keys.iter().find(|k| k.verify(payload, signature)) else {
        return report(None, false, "not signed by a trusted key");
    };
    let signed_digest = serde_json::from_slice::<Value>(payload).ok().and_then(|p| {
        p.pointer("/critical/image/docker-manifest-digest")
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    if signed_digest.as_deref() != Some(digest) {
        return report(
            Some(key.key_id()),
            false,
            "the signed payload names another digest",
        );
    }
    report(Some(key.key_id()), true, "verified")
}

/// A repository in a registry, for publishing and discovering release signatures.
pub struct Registry {
    client: Client,
    /// Manifests are fetched with this client, read as a stream and cut off at
    /// `max_manifest_bytes` (the OCI client reads a manifest whole before anyone can look at
    /// its size).
    http: reqwest::Client,
    config: RegistryConfig,
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

enum Fetch {
    Found(Vec<u8>),
    Missing,
    /// Larger than `max_manifest_bytes`: not read (a problem to report, not an outage).
    Oversized,
}

/// Why a bounded GET gave no body.
enum Fetched {
    Oversized,
    Unavailable(String),
}

impl Registry {
    pub fn new(config: RegistryConfig) -> Result<Registry, ReleaseError> {
        let host = config
            .repository
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let mut client_config = ClientConfig {
            protocol: if config.insecure {
                ClientProtocol::HttpsExcept(vec![host])
            } else {
                ClientProtocol::Https
            },
            read_timeout: Some(config.timeout),
            connect_timeout: Some(config.timeout / 3),
            ..ClientConfig::default()
        };
        if let Some(pem) = &config.ca_pem {
            client_config
                .extra_root_certificates
                .push(oci_client::client::Certificate {
                    encoding: oci_client::client::CertificateEncoding::Pem,
                    data: pem.as_bytes().to_vec(),
                });
        }
        let mut http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout / 3)
            // A connection whose answer was cut off (oversized) must not be handed to the next
            // call; a discovery makes a handful of calls, so none are kept.
            .pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::limited(3));
        if let Some(pem) = &config.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| ReleaseError::Reference(format!("registry CA: {e}")))?;
            http = http.tls_certs_merge(certs);
        }
        let http = http
            .build()
            .map_err(|e| ReleaseError::Unavailable(format!("HTTP client: {e}")))?;
        Ok(Registry {
            client: Client::new(client_config),
            http,
            config,
        })
    }

    /// `scheme://host` and the repository name of the configured repository.
    fn endpoint(&self) -> (String, &str) {
        let (host, name) = self
            .config
            .repository
            .split_once('/')
            .unwrap_or((self.config.repository.as_str(), ""));
        let scheme = if self.config.insecure {
            "http"
        } else {
            "https"
        };
        (format!("{scheme}://{host}"), name)
    }

    /// GETs `url`, answering a registry's `401 Bearer` challenge with an anonymous pull token
    /// (the distribution token flow), and reads at most `max` bytes; `None` on 404.
    async fn get_bounded(
        &self,
        url: &str,
        accept: &str,
        max: usize,
    ) -> Result<Option<Vec<u8>>, Fetched> {
        let send = |token: Option<String>| {
            let mut request = self.http.get(url).header("Accept", accept);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            request.send()
        };
        let unavailable = |e: reqwest::Error| {
            // The cause (refused, reset, timed out) is in the error's sources.
            let e = e.without_url();
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            Fetched::Unavailable(text)
        };
        let mut response = send(None).await.map_err(unavailable)?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED
            && let Some(token) = self.anonymous_token(response.headers()).await
        {
            response = send(Some(token)).await.map_err(unavailable)?;
        }
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(Fetched::Unavailable(format!(
                "the registry answered {status}"
            )));
        }
        if response.content_length().is_some_and(|n| n > max as u64) {
            return Err(Fetched::Oversized);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unavailable)? {
            if body.len().saturating_add(chunk.len()) > max {
                return Err(Fetched::Oversized);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Some(body))
    }

    /// An anonymous token for a `WWW-Authenticate: Bearer realm=…,service=…,scope=…`
    /// challenge, or `None` if there is none to answer.
    async fn anonymous_token(&self, headers: &reqwest::header::HeaderMap) -> Option<String> {
        let challenge = headers
            .get(reqwest::header::WWW_AUTHENTICATE)?
            .to_str()
            .ok()?;
        let params = challenge.strip_prefix("Bearer ")?;
        let field = |name: &str| {
            params.split(',').find_map(|kv| {
                let (k, v) = kv.trim().split_once('=')?;
                (k == name).then(|| v.trim_matches('"').to_owned())
            })
        };
        let realm = field("realm")?;
        let query: Vec<(&str, String)> = [("service", field("service")), ("scope", field("scope"))]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
        let answer = self.http.get(&realm).query(&query).send().await.ok()?;
        if !answer.status().is_success() {
            return None;
        }
        let mut answer = answer;
        let mut body = Vec::new();
        while let Some(chunk) = answer.chunk().await.ok()? {
            if body.len() + chunk.len() > 64 * 1024 {
                return None;
            }
            body.extend_from_slice(&chunk);
        }
        let json: Value = serde_json::from_slice(&body).ok()?;
        json.get("token")
            .or_else(|| json.get("access_token"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    pub fn repository(&self) -> &str {
        &self.config.repository
    }

    fn reference(&self, suffix: &str) -> Result<Reference, ReleaseError> {
        let text = format!("{}{suffix}", self.config.repository);
        text.parse()
            .map_err(|e| ReleaseError::Reference(format!("{text}: {e}")))
    }

    /// A raw manifest (or index) by tag (`:tag`) or digest (`@sha256:…`), read as a stream and
    /// refused past `max_manifest_bytes`; `Missing` on 404.
    async fn manifest(&self, suffix: &str) -> Result<Fetch, ReleaseError> {
        // Validates the reference the way the OCI client would.
        self.reference(suffix)?;
        let reference = suffix.trim_start_matches([':', '@']);
        let (base, name) = self.endpoint();
        let url = format!("{base}/v2/{name}/manifests/{reference}");
        let accept = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST].join(", ");
        match self
            .get_bounded(&url, &accept, self.config.max_manifest_bytes)
            .await
        {
            Ok(Some(bytes)) => Ok(Fetch::Found(bytes)),
            Ok(None) => Ok(Fetch::Missing),
            Err(Fetched::Oversized) => Ok(Fetch::Oversized),
            Err(Fetched::Unavailable(e)) => Err(ReleaseError::Unavailable(e)),
        }
    }

    async fn blob(&self, descriptor: &DescriptorDoc) -> Result<Vec<u8>, String> {
        if descriptor.size as usize > self.config.max_blob_bytes {
            return Err(format!(
                "blob {} is {} bytes, over the {}-byte limit",
                descriptor.digest, descriptor.size, self.config.max_blob_bytes
            ));
        }
        use futures_util::TryStreamExt;
        let reference = self.reference("").map_err(|e| e.to_string())?;
        let mut stream = self
            .client
            .pull_blob_stream(&reference, descriptor.digest.as_str())
            .await
            .map_err(|e| format!("blob {}: {e}", descriptor.digest))?;
        // Read while counting: a registry that sends more than the descriptor said (or than the
        // limit) is cut off, never buffered whole.
        let mut out = Vec::new();
        while let Some(chunk) = stream
            .try_next()
            .await
            .map_err(|e| format!("blob {}: {e}", descriptor.digest))?
        {
            if out.len().saturating_add(chunk.len()) > self.config.max_blob_bytes {
                return Err(format!(
                    "blob {} is over the {}-byte limit",
                    descriptor.digest, self.config.max_blob_bytes
                ));
            }
            out.extend_from_slice(&chunk);
        }
        if out.len() > self.config.max_blob_bytes || sha256_digest(&out) != descriptor.digest {
            return Err(format!(
                "blob {} does not match its descriptor",
                descriptor.digest
            ));
        }
        Ok(out)
    }

    /// Finds every release signature stored for `digest`.
    pub async fn discover(&self, digest: &str) -> Result<Discovery, ReleaseError> {
        let hex = parse_digest(digest)?;
        let mut discovery = Discovery::default();
        // 1. The OCI 1.1 referrers API (a 404 means the registry has none: then the tag schema).
        let mut referrers: Vec<DescriptorDoc> = Vec::new();
        let subject = self.reference(&format!("@{digest}"))?;
        // The OCI client answers a registry's token challenge only when asked to: get an
        // anonymous pull token first (a registry without auth needs none) for the blobs below.
        if let Err(e) = self
            .client
            .auth(&subject, &RegistryAuth::Anonymous, RegistryOperation::Pull)
            .await
        {
            discovery
                .problems
                .push(format!("registry authentication for {digest}: {e}"));
        }
        // Read here, bounded like every manifest (the OCI client reads the answer whole, and
        // on a 404 fetches the tag-schema index whole too).
        let (base, name) = self.endpoint();
        let url = format!("{base}/v2/{name}/referrers/{digest}");
        match self
            .get_bounded(&url, OCI_INDEX, self.config.max_manifest_bytes)
            .await
        {
            Ok(Some(bytes)) => match serde_json::from_slice::<IndexDoc>(&bytes) {
                Ok(index) => referrers = index.manifests,
                Err(e) => discovery
                    .problems
                    .push(format!("malformed referrers API answer for {digest}: {e}")),
            },
            // A registry without the referrers API: the tag schema below is the answer.
            Ok(None) => {}
            Err(Fetched::Oversized) => discovery.problems.push(format!(
                "the referrers API answer for {digest} is over the {}-byte limit",
                self.config.max_manifest_bytes
            )),
            // Anything else is a problem to report (the tag schema may still find signatures).
            Err(Fetched::Unavailable(e)) => discovery
                .problems
                .push(format!("referrers API for {digest}: {e}")),
        }
        // 2. The referrers tag schema, read here directly so that errors are errors.
        if referrers.is_empty() {
            match self.manifest(&format!(":sha256-{hex}")).await? {
                Fetch::Found(bytes) => match serde_json::from_slice::<IndexDoc>(&bytes) {
                    Ok(index) => {
                        referrers = index.manifests;
                    }
                    Err(e) => discovery.problems.push(format!(
                        "malformed referrers index at tag sha256-{hex}: {e}"
                    )),
                },
                Fetch::Oversized => discovery.problems.push(format!(
                    "the referrers index at tag sha256-{hex} is over the {}-byte limit",
                    self.config.max_manifest_bytes
                )),
                Fetch::Missing => {}
            }
        }
        for descriptor in referrers {
            match self.bundle_candidate(&descriptor).await {
                Ok(Some(candidate)) => discovery.candidates.push(candidate),
                Ok(None) => {}
                Err(problem) => discovery.problems.push(problem),
            }
        }
        // 3. The classic cosign signature tag.
        let cosign = self.manifest(&format!(":sha256-{hex}.sig")).await?;
        if let Fetch::Oversized = cosign {
            discovery.problems.push(format!(
                "the cosign signature manifest of {digest} is over the {}-byte limit",
                self.config.max_manifest_bytes
            ));
        }
        if let Fetch::Found(bytes) = cosign {
            let manifest_digest = sha256_digest(&bytes);
            match serde_json::from_slice::<ManifestDoc>(&bytes) {
                Ok(manifest) => {
                    for layer in manifest.layers {
                        let Some(signature) = layer.cosign_signature() else {
                            discovery.problems.push(format!(
                                "cosign layer {} has no signature annotation",
                                layer.digest
                            ));
                            continue;
                        };
                        match self.blob(&layer).await {
                            Ok(payload) => discovery.candidates.push(Candidate::CosignClassic {
                                manifest_digest: manifest_digest.clone(),
                                payload,
                                signature,
                            }),
                            Err(problem) => discovery.problems.push(problem),
                        }
                    }
                }
                Err(e) => discovery
                    .problems
                    .push(format!("malformed cosign signature manifest: {e}")),
            }
        }
        Ok(discovery)
    }

    /// The bundle a referrer manifest carries, if it is a release-signature referrer.
    async fn bundle_candidate(
        &self,
        descriptor: &DescriptorDoc,
    ) -> Result<Option<Candidate>, String> {
        if descriptor
            .artifact_type
            .as_deref()
            .is_some_and(|t| t != BUNDLE_MEDIA_TYPE)
        {
            return Ok(None);
        }
        if descriptor.size as usize > self.config.max_manifest_bytes {
            return Err(format!(
                "referrer manifest {} is {} bytes, over the {}-byte limit",
                descriptor.digest, descriptor.size, self.config.max_manifest_bytes
            ));
        }
        let bytes = match self
            .manifest(&format!("@{}", descriptor.digest))
            .await
            .map_err(|e| e.to_string())?
        {
            Fetch::Found(bytes) => bytes,
            Fetch::Missing => return Err(format!("referrer {} is missing", descriptor.digest)),
            Fetch::Oversized => {
                return Err(format!(
                    "referrer manifest {} is over the {}-byte limit",
                    descriptor.digest, self.config.max_manifest_bytes
                ));
            }
        };
        if bytes.len() > self.config.max_manifest_bytes {
            return Err(format!(
                "referrer manifest {} is over the {}-byte limit",
                descriptor.digest, self.config.max_manifest_bytes
            ));
        }
        let manifest: ManifestDoc = serde_json::from_slice(&bytes)
            .map_err(|e| format!("malformed referrer manifest {}: {e}", descriptor.digest))?;
        let Some(layer) = manifest
            .layers
            .iter()
            .find(|l| l.media_type == BUNDLE_MEDIA_TYPE)
        else {
            return Ok(None);
        };
        let blob = self.blob(layer).await?;
        let bundle = Bundle::from_json(&blob)
            .map_err(|e| format!("referrer {}: not a Sigstore bundle: {e}", descriptor.digest))?;
        Ok(Some(Candidate::Bundle {
            manifest_digest: descriptor.digest.clone(),
            bundle: Box::new(bundle),
        }))
    }

    /// Signs `digest` (an image in this repository) with `key` and publishes the bundle as a
    /// referrer, updating the tag-schema index. Returns the referrer manifest's digest.
    pub async fn publish(&self, digest: &str, key: &FileKeySigner) -> Result<String, ReleaseError> {
        let bundle = release_bundle(&self.config.repository, digest, key)?;
        let bytes = bundle
            .to_json_pretty()
            .map_err(|e| ReleaseError::Signing(e.to_string()))?;
        self.publish_bundle_bytes(digest, &bytes).await
    }

    /// Publishes `bundle_bytes` as a release-signature referrer of `digest` (tests use this to
    /// publish bundles that should not verify).
    pub async fn publish_bundle_bytes(
        &self,
        digest: &str,
        bundle_bytes: &[u8],
    ) -> Result<String, ReleaseError> {
        let hex = parse_digest(digest)?.to_owned();
        let subject = match self.manifest(&format!("@{digest}")).await? {
            Fetch::Found(bytes) => json!({
                "mediaType": media_type_of(&bytes),
                "digest": digest,
                "size": bytes.len(),
            }),
            Fetch::Missing => {
                return Err(ReleaseError::Reference(format!(
                    "{}@{digest} is not in the registry",
                    self.config.repository
                )));
            }
            Fetch::Oversized => {
                return Err(ReleaseError::Reference(format!(
                    "the manifest of {digest} is over the {}-byte limit",
                    self.config.max_manifest_bytes
                )));
            }
        };
        let layer = self.push_blob(bundle_bytes).await?;
        let config = self.push_blob(b"{}").await?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": BUNDLE_MEDIA_TYPE,
            "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": config, "size": 2},
            "layers": [{"mediaType": BUNDLE_MEDIA_TYPE, "digest": layer, "size": bundle_bytes.len()}],
            "subject": subject,
            "annotations": {"org.opencontainers.image.created": now_rfc3339()},
        });
        let manifest_bytes =
            serde_json::to_vec(&manifest).map_err(|e| ReleaseError::Signing(e.to_string()))?;
        let manifest_digest = sha256_digest(&manifest_bytes);
        self.push_manifest(
            &format!("@{manifest_digest}"),
            &manifest_bytes,
            OCI_MANIFEST,
        )
        .await?;
        // Registries without the referrers API: keep the tag-schema index current.
        let mut entries: Vec<DescriptorDoc> = match self.manifest(&format!(":sha256-{hex}")).await?
        {
            Fetch::Found(bytes) => serde_json::from_slice::<IndexDoc>(&bytes)
                .map(|i| i.manifests)
                .unwrap_or_default(),
            Fetch::Missing => Vec::new(),
            Fetch::Oversized => {
                return Err(ReleaseError::Unavailable(format!(
                    "the tag-schema index of {digest} is over the {}-byte limit",
                    self.config.max_manifest_bytes
                )));
            }
        };
        entries.retain(|d| d.digest != manifest_digest);
        entries.push(DescriptorDoc {
            media_type: OCI_MANIFEST.into(),
            digest: manifest_digest.clone(),
            size: manifest_bytes.len() as u64,
            artifact_type: Some(BUNDLE_MEDIA_TYPE.into()),
            annotations: None,
        });
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
        let index_bytes =
            serde_json::to_vec(&index).map_err(|e| ReleaseError::Signing(e.to_string()))?;
        self.push_manifest(&format!(":sha256-{hex}"), &index_bytes, OCI_INDEX)
            .await?;
        Ok(manifest_digest)
    }

    /// Publishes a classic cosign signature (`sha256-<hex>.sig`) of `digest` by `key`.
    pub async fn publish_cosign_classic(
        &self,
        digest: &str,
        signed_digest: &str,
        key: &FileKeySigner,
    ) -> Result<String, ReleaseError> {
        let hex = parse_digest(digest)?.to_owned();
        let payload = serde_json::to_vec(&json!({
            "critical": {
                "identity": {"docker-reference": self.config.repository},
                "image": {"docker-manifest-digest": signed_digest},
                "type": "cosign container image signature"
            },
            "optional": null
        }))
        .map_err(|e| ReleaseError::Signing(e.to_string()))?;
        let signature = key
            .sign(&payload)
            .map_err(|e| ReleaseError::Signing(e.to_string()))?;
        let layer = self.push_blob(&payload).await?;
        let config = self.push_blob(b"{}").await?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": config, "size": 2},
            "layers": [{
                "mediaType": COSIGN_SIMPLE_SIGNING,
                "digest": layer,
                "size": payload.len(),
                "annotations": {COSIGN_SIGNATURE_ANNOTATION: STANDARD.encode(&signature.signature)},
            }],
        });
        let bytes =
            serde_json::to_vec(&manifest).map_err(|e| ReleaseError::Signing(e.to_string()))?;
        self.push_manifest(&format!(":sha256-{hex}.sig"), &bytes, OCI_MANIFEST)
            .await?;
        Ok(sha256_digest(&bytes))
    }

    /// Pushes a minimal image (config + one layer of `content`) and returns its digest (tests
    /// and demos need a scanner image to sign).
    pub async fn push_image(&self, tag: &str, content: &[u8]) -> Result<String, ReleaseError> {
        let layer = self.push_blob(content).await?;
        let config_bytes =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let config = self.push_blob(config_bytes).await?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_bytes.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": content.len()}],
        });
        let bytes =
            serde_json::to_vec(&manifest).map_err(|e| ReleaseError::Signing(e.to_string()))?;
        self.push_manifest(&format!(":{tag}"), &bytes, OCI_MANIFEST)
            .await?;
        Ok(sha256_digest(&bytes))
    }

    /// Stores `bytes` as a manifest under `suffix` (`:tag` or `@digest`).
    pub async fn push_manifest(
        &self,
        suffix: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<(), ReleaseError> {
        let reference = self.reference(suffix)?;
        let content_type = media_type
            .parse()
            .map_err(|_| ReleaseError::Reference(format!("media type {media_type}")))?;
        self.client
            .push_manifest_raw(&reference, bytes.to_vec(), content_type)
            .await
            .map(|_| ())
            .map_err(|e| ReleaseError::Unavailable(e.to_string()))
    }

    async fn push_blob(&self, bytes: &[u8]) -> Result<String, ReleaseError> {
        let digest = sha256_digest(bytes);
        let reference = self.reference("")?;
        self.client
            .push_blob(&reference, bytes.to_vec(), &digest)
            .await
            .map_err(|e| ReleaseError::Unavailable(e.to_string()))?;
        Ok(digest)
    }
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
