//! The keyless back-end: per signing, a fresh P-256 key, a proof of possession, and a
//! short-lived certificate for it from Fulcio (`POST /api/v2/signingCert`) with the node's OIDC
//! identity token; the ephemeral key signs once and is dropped. The certificate chain goes into
//! the response and the leaf into the Sigstore bundle. Retries on 5xx and transport errors only.
//! With a Time-Stamping Authority configured, every signature also gets an RFC 3161 token
//! (checked against the TSA's chain before it is used) so offline verifiers can judge the
//! ten-minute certificate at a time a third party vouches for. A reply that is not DER is
//! re-encoded to canonical DER where no signed byte changes, and refused where one would
//! (`timestamp::canonical_response`); what is embedded is what was verified.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use stella_signer::timestamp::{self, TimestampAuthority};
use stella_signer::{
    Error as SignerError, FileKeySigner, KeyDescriptor, KeySigner, KeySource, SignatureAlgorithm,
    SignedOperation,
};

use crate::Error;
use crate::http_client::{self, HttpsSource};

const ATTEMPTS: usize = 3;
/// Longest single Fulcio or TSA call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Time left for one more call: `None` once the deadline has passed.
fn time_left() -> Option<Duration> {
    match crate::backends::deadline_left() {
        None => Some(CALL_TIMEOUT),
        Some(left) => (left > Duration::from_millis(50)).then(|| left.min(CALL_TIMEOUT)),
    }
}

/// The time one more call may take: the first at once, a retry after its back-off; `None`
/// when the deadline leaves no room for it.
fn attempt_budget(attempt: usize) -> Option<Duration> {
    if attempt == 0 {
        time_left()
    } else {
        back_off(attempt)
    }
}

/// Waits before retry `attempt`, unless that would pass the deadline.
fn back_off(attempt: usize) -> Option<Duration> {
    let pause = Duration::from_millis(200 * attempt as u64);
    let left = time_left()?;
    if pause >= left {
        return None;
    }
    std::thread::sleep(pause);
    time_left()
}

/// An RFC 3161 Time-Stamping Authority and the chain its tokens must verify against.
pub struct Tsa {
    pub source: HttpsSource,
    pub authorities: Vec<TimestampAuthority>,
}

pub struct KeylessSigner {
    fulcio: HttpsSource,
    tsa: Option<Tsa>,
    identity_token_file: PathBuf,
    runtime: tokio::runtime::Handle,
    /// A stand-in: a keyless signer has no long-lived key; every operation reports its own.
    descriptor: KeyDescriptor,
}

impl KeylessSigner {
    pub fn new(
        fulcio_url: &str,
        ca_pem: Option<&str>,
        identity_token_file: PathBuf,
        tsa: Option<Tsa>,
    ) -> Result<KeylessSigner, Error> {
        let base = fulcio_url.trim_end_matches('/');
        let fulcio = HttpsSource::new(
            &format!("{base}/api/v2/signingCert"),
            ca_pem,
            Duration::from_secs(10),
        )?;
        let placeholder = FileKeySigner::generate().map_err(|e| Error::Key(e.to_string()))?;
        Ok(KeylessSigner {
            fulcio,
            tsa,
            identity_token_file,
            runtime: tokio::runtime::Handle::current(),
            descriptor: KeyDescriptor {
                key_id: "keyless".into(),
                algorithm: SignatureAlgorithm::EcdsaP256Sha256,
                source: KeySource::Keyless,
                public_key: placeholder.public_key().clone(),
            },
        })
    }

    /// One certificate for `key`, proving possession by signing the token's subject.
    fn certificate(&self, key: &FileKeySigner) -> Result<Vec<Vec<u8>>, String> {
        let token = std::fs::read_to_string(&self.identity_token_file)
            .map_err(|e| format!("reading the identity token: {e}"))?;
        let token = token.trim();
        let claims: Value = token
            .split('.')
            .nth(1)
            .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or("the identity token is not a JWT")?;
        let subject = claims["sub"]
            .as_str()
            .ok_or("the identity token has no sub")?;
        let proof = key
            .sign(subject.as_bytes())
            .map_err(|e| format!("proof of possession: {e}"))?;
        let body = json!({
            "credentials": {"oidcIdentityToken": token},
            "publicKeyRequest": {
                "publicKey": {"algorithm": "ECDSA", "content": key.public_key().to_pem()},
                "proofOfPossession": STANDARD.encode(&proof.signature),
            }
        });
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            let Some(budget) = attempt_budget(attempt) else {
                last = format!("{last} (no time left before the request's deadline)");
                break;
            };
            // The request is built inside the runtime: its timeout timer needs the reactor.
            let response = match self.runtime.block_on(async {
                self.fulcio
                    .http
                    .post(self.fulcio.url.clone())
                    .timeout(budget)
                    .json(&body)
                    .send()
                    .await
            }) {
                Ok(r) => r,
                Err(e) => {
                    last = format!("Fulcio unreachable: {e}");
                    continue;
                }
            };
            let status = response.status();
            if status.is_server_error() {
                last = format!("Fulcio answered {status}");
                continue;
            }
            let bytes = self
                .runtime
                .block_on(http_client::read_ok(response, 256 * 1024))?;
            return chain_of_fulcio_answer(&bytes);
        }
        Err(last)
    }
}

impl KeylessSigner {
    /// An RFC 3161 token over `signature`, verified against the TSA's chain. Retries on 5xx and
    /// transport errors only.
    fn timestamp(&self, tsa: &Tsa, signature: &[u8]) -> Result<Vec<u8>, String> {
        let mut nonce = [0u8; 8];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| "no randomness for the nonce")?;
        let query = timestamp::request_der(signature, &nonce)?;
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            let Some(budget) = attempt_budget(attempt) else {
                last = format!("{last} (no time left before the request's deadline)");
                break;
            };
            let sent = self.runtime.block_on(async {
                tsa.source
                    .http
                    .post(tsa.source.url.clone())
                    .timeout(budget)
                    .header("Content-Type", "application/timestamp-query")
                    .body(query.clone())
                    .send()
                    .await
            });
            let response = match sent {
                Ok(r) if r.status().is_server_error() => {
                    last = format!("the TSA answered {}", r.status());
                    continue;
                }
                Ok(r) => r,
                Err(e) => {
                    last = format!("TSA unreachable: {e}");
                    continue;
                }
            };
            let reply = self.runtime.block_on(http_client::read_ok(
                response,
                timestamp::MAX_RESPONSE_BYTES,
            ))?;
            let token = timestamp::check_response(&reply, signature, &nonce)
                .map_err(|e| format!("the TSA's reply: {e}"))?;
            timestamp::verify_timestamp(&token, signature, &tsa.authorities)
                .map_err(|e| format!("the TSA's token does not verify: {e}"))?;
            if token != reply {
                tracing::warn!(
                    tsa = %tsa.source.url,
                    "the TSA's reply was not DER (a SET OF out of order); it is embedded re-encoded"
                );
            }
            return Ok(token);
        }
        Err(last)
    }
}

impl KeySigner for KeylessSigner {
    fn descriptor(&self) -> &KeyDescriptor {
        &self.descriptor
    }

    fn sign(&self, message: &[u8]) -> Result<SignedOperation, SignerError> {
        let key = FileKeySigner::generate()?;
        let chain = self.certificate(&key).map_err(SignerError::Signing)?;
        let mut op = key.sign(message)?;
        op.certificate_chain_der = chain;
        if let Some(tsa) = &self.tsa {
            let token = self.timestamp(tsa, &op.signature);
            op.timestamps = vec![token.map_err(SignerError::Signing)?];
        }
        Ok(op)
    }
}

/// The certificate chain (DER, leaf first) in a Fulcio `/api/v2/signingCert` answer.
pub fn chain_of_fulcio_answer(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let answer: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("undecodable Fulcio answer: {e}"))?;
    let pems = answer
        .pointer("/signedCertificateEmbeddedSct/chain/certificates")
        .or_else(|| answer.pointer("/signedCertificateDetachedSct/chain/certificates"))
        .and_then(Value::as_array)
        .ok_or("the Fulcio answer has no certificate chain")?;
    let chain = pems
        .iter()
        .filter_map(Value::as_str)
        .map(|pem| {
            CertificateDer::from_pem_slice(pem.as_bytes())
                .map(|c| c.to_vec())
                .map_err(|e| format!("certificate: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if chain.is_empty() {
        return Err("the Fulcio answer has an empty chain".into());
    }
    Ok(chain)
}

/// The serial number of a DER certificate, as lowercase hex (for the audit log).
pub fn certificate_serial(der: &[u8]) -> Option<String> {
    use x509_cert::der::Decode;
    // A real DER parser: the certificate comes from Fulcio, and a hand-rolled length reader
    // overflowed on a crafted one (found by the `fulcio` fuzz target).
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    Some(hex::encode(cert.tbs_certificate.serial_number.as_bytes()))
}

/// PEM chains verifiers need for keyless signatures, published by `GET /api/v1/signer/trust`.
#[derive(Debug, Clone, Default)]
pub struct KeylessTrust {
    /// Fulcio CA chains, root last.
    pub certificate_authorities: Vec<Vec<String>>,
    /// Time-Stamping Authority chains, signing certificate first, root last.
    pub timestamp_authorities: Vec<Vec<String>>,
}
