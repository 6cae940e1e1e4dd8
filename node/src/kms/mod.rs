//! The AWS KMS key back-end: a non-extractable `ECC_NIST_P256` `SIGN_VERIFY` key in AWS KMS
//! signs the DSSE PAE through the official SDK (`aws-sdk-kms`) — `Sign` with `ECDSA_SHA_256`,
//! the PAE itself (`RAW`) up to 4,096 bytes, its SHA-256 (`DIGEST`) above (and for an empty
//! message, which `RAW` does not take) — and `GetPublicKey`
//! gives the SPKI, hence the key id. Credentials come from the SDK's standard chain (environment,
//! profile, web identity, ECS, instance metadata), never from the node's configuration.
//!
//! [`KeySigner::sign`] is synchronous and runs on the blocking pool; the SDK is async. The
//! client owns a small tokio runtime of its own: every call is spawned onto it and the calling
//! thread waits on a channel, bounded in time — no `block_on` in anyone's async context. Every
//! call is bounded by the configured operation timeout (all attempts and back-offs included) and
//! by what the request's deadline leaves (`backends::deadline_left`). Lives in `node`, not in
//! `signer`, because it is network code (ADR 0021). The decisions are in [`request`], pure.

pub mod request;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use aws_sdk_kms::config::Credentials;
use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::config::timeout::TimeoutConfig;
use aws_sdk_kms::config::{BehaviorVersion, Region};
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};
use stella_signer::{
    Error as SignerError, KeyDescriptor, KeySigner, KeySource, PublicKey, SignatureAlgorithm,
    SignedOperation,
};

pub use crate::config::kms::{
    DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_ATTEMPTS,
    DEFAULT_OPERATION_TIMEOUT, KmsSettings,
};
use request::MessageKind;

/// Back-off before the first retry (doubling, jittered, at most [`MAX_BACKOFF`]).
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How long the calling thread waits past a call's own bound for its answer to arrive.
const HANDOFF_GRACE: Duration = Duration::from_millis(250);
/// Longest error text kept from the SDK (problem details are capped at 512 bytes).
const MAX_ERROR_TEXT: usize = 300;

impl KmsSettings {
    /// The SDK's timeouts for one call that may take `budget` in all.
    fn timeouts(&self, budget: Duration) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout.min(budget))
            .operation_attempt_timeout(self.attempt_timeout.min(budget))
            .operation_timeout(budget)
            .build()
    }

    fn retries(&self) -> RetryConfig {
        RetryConfig::standard()
            .with_max_attempts(self.max_attempts.max(1))
            .with_initial_backoff(INITIAL_BACKOFF)
            .with_max_backoff(MAX_BACKOFF)
    }
}

/// Why a KMS call did not give what was asked.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    /// The key exists but is not one this back-end signs with (spec, usage, algorithm).
    #[error("KMS key `{key}` cannot sign here: {reason}")]
    Unsuitable { key: String, reason: String },
    /// KMS said no, and asking again will not change it (missing, disabled or foreign key, no
    /// permission, a malformed reference).
    #[error("KMS refused: {0}")]
    Refused(String),
    /// KMS did not answer in time, answered 5xx or throttled: try again later.
    #[error("KMS unavailable: {0}")]
    Unavailable(String),
    /// KMS answered something unusable (no signature, one that does not verify).
    #[error("KMS answered {0}")]
    BadAnswer(String),
}

impl KmsError {
    /// Worth retrying later (503), as opposed to an operator's mistake.
    pub fn is_transient(&self) -> bool {
        matches!(self, KmsError::Unavailable(_) | KmsError::BadAnswer(_))
    }
}

impl From<KmsError> for SignerError {
    fn from(e: KmsError) -> SignerError {
        SignerError::Signing(e.to_string())
    }
}

/// A runtime that is shut down without waiting when dropped — also inside an async context,
/// where dropping a runtime normally panics.
struct OwnedRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// The SDK client of one node (all its KMS keys share it) and the runtime it runs on.
pub struct KmsClient {
    sdk: aws_sdk_kms::Client,
    settings: KmsSettings,
    handle: tokio::runtime::Handle,
    _runtime: OwnedRuntime,
}

impl std::fmt::Debug for KmsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsClient")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl KmsClient {
    /// A client with the SDK's standard credential chain. Loading the configuration reads
    /// environment variables and profile files only (the region is given, credentials are
    /// resolved at the first call); the calling thread waits for it briefly.
    pub fn connect(settings: KmsSettings) -> Result<Arc<KmsClient>, KmsError> {
        KmsClient::build(settings, None)
    }

    /// A client with fixed credentials (tests, the benchmark against a stand-in).
    pub fn connect_with_credentials(
        settings: KmsSettings,
        credentials: Credentials,
    ) -> Result<Arc<KmsClient>, KmsError> {
        KmsClient::build(settings, Some(credentials))
    }

    fn build(
        settings: KmsSettings,
        credentials: Option<Credentials>,
    ) -> Result<Arc<KmsClient>, KmsError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kms-client")
            .enable_all()
            .build()
            .map_err(|e| KmsError::Unavailable(format!("starting the KMS client runtime: {e}")))?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .timeout_config(settings.timeouts(settings.operation_timeout))
            .retry_config(settings.retries());
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some(credentials) = credentials {
            loader = loader.credentials_provider(credentials);
        }
        let handle = runtime.handle().clone();
        let sdk_config = wait_for(&handle, Duration::from_secs(10), async move {
            Ok(loader.load().await)
        })?;
        Ok(Arc::new(KmsClient {
            sdk: aws_sdk_kms::Client::new(&sdk_config),
            settings,
            handle,
            _runtime: OwnedRuntime(Some(runtime)),
        }))
    }

    pub fn settings(&self) -> &KmsSettings {
        &self.settings
    }

    /// The time the next call may take, or why it may not start.
    fn budget(&self) -> Result<Duration, KmsError> {
        request::budget(
            self.settings.operation_timeout,
            crate::backends::deadline_left(),
        )
        .ok_or_else(|| {
            KmsError::Unavailable("the request's deadline leaves no time for a KMS call".into())
        })
    }

    /// Per-call configuration: the timeouts for `budget`.
    fn call_config(&self, budget: Duration) -> aws_sdk_kms::config::Builder {
        aws_sdk_kms::config::Builder::default().timeout_config(self.settings.timeouts(budget))
    }
}

/// Runs `call` on the client's runtime and waits (this thread, not an async one) at most
/// `budget` plus a hand-off grace for its result.
fn wait_for<T, F>(handle: &tokio::runtime::Handle, budget: Duration, call: F) -> Result<T, KmsError>
where
    T: Send + 'static,
    F: Future<Output = Result<T, KmsError>> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let result = tokio::time::timeout(budget, call)
            .await
            .unwrap_or_else(|_| {
                Err(KmsError::Unavailable(format!(
                    "no answer within {budget:?}"
                )))
            });
        let _ = tx.send(result);
    });
    rx.recv_timeout(budget + HANDOFF_GRACE).unwrap_or_else(|_| {
        Err(KmsError::Unavailable(format!(
            "no answer within {budget:?}"
        )))
    })
}

/// Sorts an SDK failure into refusal or unavailability, with a bounded text.
fn classify<E>(e: SdkError<E>) -> KmsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let text = |t: String| crate::error::clip_to(&t, MAX_ERROR_TEXT);
    match &e {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = service.err().code();
            let message = text(format!(
                "{} (HTTP {status}): {}",
                code.unwrap_or("error"),
                service.err().message().unwrap_or("no message")
            ));
            if request::transient(status, code) {
                KmsError::Unavailable(message)
            } else {
                KmsError::Refused(message)
            }
        }
        SdkError::ConstructionFailure(_) => {
            KmsError::Refused(text(DisplayErrorContext(&e).to_string()))
        }
        _ => KmsError::Unavailable(text(DisplayErrorContext(&e).to_string())),
    }
}

/// One KMS key, found by its reference (key id, key ARN, alias) and checked once.
pub struct KmsKeySigner {
    client: Arc<KmsClient>,
    key: String,
    descriptor: KeyDescriptor,
}

impl std::fmt::Debug for KmsKeySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsKeySigner")
            .field("key", &self.key)
            .field("key_id", &self.descriptor.key_id)
            .finish_non_exhaustive()
    }
}

impl KmsKeySigner {
    /// Reads the key's public key from KMS and refuses any key but an `ECC_NIST_P256`
    /// `SIGN_VERIFY` key with `ECDSA_SHA_256`. Blocks (one `GetPublicKey` call).
    pub fn open(client: Arc<KmsClient>, key: &str) -> Result<KmsKeySigner, KmsError> {
        if !request::valid_key_ref(key) {
            return Err(KmsError::Refused(format!(
                "`{}` is not a KMS key reference (key id, key ARN or alias)",
                crate::error::clip(key)
            )));
        }
        let budget = client.budget()?;
        let (sdk, config, key_ref) = (
            client.sdk.clone(),
            client.call_config(budget),
            key.to_owned(),
        );
        let out = wait_for(&client.handle, budget, async move {
            sdk.get_public_key()
                .key_id(key_ref)
                .customize()
                .config_override(config)
                .send()
                .await
                .map_err(classify)
        })?;
        // moto answers only the older `CustomerMasterKeySpec` (the same value, per the API).
        #[allow(deprecated)]
        let legacy_spec = out.customer_master_key_spec().map(|s| s.as_str());
        let facts = request::KeyFacts {
            key_spec: out.key_spec().map(|s| s.as_str()).or(legacy_spec),
            key_usage: out.key_usage().map(|u| u.as_str()),
            signing_algorithms: out
                .signing_algorithms()
                .iter()
                .map(|a| a.as_str())
                .collect(),
        };
        let unsuitable = |reason: String| KmsError::Unsuitable {
            key: crate::error::clip(key),
            reason,
        };
        request::check_key(&facts).map_err(unsuitable)?;
        let der = out
            .public_key()
            .ok_or_else(|| KmsError::BadAnswer("no public key".into()))?;
        let public_key = PublicKey::from_spki_der(der.as_ref())
            .map_err(|e| KmsError::BadAnswer(format!("a public key that is not P-256: {e}")))?;
        if public_key.algorithm() != SignatureAlgorithm::EcdsaP256Sha256 {
            return Err(unsuitable("its public key is not a P-256 key".into()));
        }
        Ok(KmsKeySigner {
            client,
            key: key.to_owned(),
            descriptor: KeyDescriptor {
                key_id: public_key.key_id(),
                algorithm: SignatureAlgorithm::EcdsaP256Sha256,
                source: KeySource::Kms,
                public_key,
            },
        })
    }

    /// The reference the key was opened by.
    pub fn key_ref(&self) -> &str {
        &self.key
    }

    fn sign_pae(&self, pae: &[u8]) -> Result<Vec<u8>, KmsError> {
        let message = request::message_for(pae);
        let budget = self.client.budget()?;
        let message_type = match message.kind {
            MessageKind::Raw => MessageType::Raw,
            MessageKind::Digest => MessageType::Digest,
        };
        let (sdk, config, key) = (
            self.client.sdk.clone(),
            self.client.call_config(budget),
            self.key.clone(),
        );
        let out = wait_for(&self.client.handle, budget, async move {
            sdk.sign()
                .key_id(key)
                .message(Blob::new(message.bytes))
                .message_type(message_type)
                .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
                .customize()
                .config_override(config)
                .send()
                .await
                .map_err(classify)
        })?;
        if let Some(algorithm) = out.signing_algorithm()
            && *algorithm != SigningAlgorithmSpec::EcdsaSha256
        {
            return Err(KmsError::BadAnswer(format!(
                "a signature made with {}",
                algorithm.as_str()
            )));
        }
        let signature = out
            .signature()
            .map(|s| s.as_ref().to_vec())
            .ok_or_else(|| KmsError::BadAnswer("no signature".into()))?;
        // KMS's DER ECDSA signature is already the byte contract; one that does not verify
        // under the key's public key (another key, a stand-in that hashed twice) never leaves.
        if !self.descriptor.public_key.verify(pae, &signature) {
            return Err(KmsError::BadAnswer(
                "a signature that does not verify under the key's public key".into(),
            ));
        }
        Ok(signature)
    }
}

impl KeySigner for KmsKeySigner {
    fn descriptor(&self) -> &KeyDescriptor {
        &self.descriptor
    }

    fn sign(&self, message: &[u8]) -> Result<SignedOperation, SignerError> {
        let signature = self.sign_pae(message)?;
        Ok(SignedOperation {
            key_id: self.descriptor.key_id.clone(),
            algorithm: self.descriptor.algorithm,
            signature,
            public_key: self.descriptor.public_key.clone(),
            certificate_chain_der: Vec::new(),
            timestamps: Vec::new(),
            remarks: Vec::new(),
        })
    }
}
