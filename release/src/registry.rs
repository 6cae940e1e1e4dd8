//! The registry client: one repository, manifests read bounded, anonymous token auth; discovery
//! and publishing are in [`discover`] and [`publish`].

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::{Client, Reference};
use serde_json::Value;

use crate::*;

mod discover;
mod publish;

/// A repository in a registry, for publishing and discovering release signatures.
pub struct Registry {
    client: Client,
    /// Manifests are fetched with this client, read as a stream and cut off at
    /// `max_manifest_bytes` (the OCI client reads a manifest whole before anyone can look at
    /// its size).
    http: reqwest::Client,
    config: RegistryConfig,
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
}
