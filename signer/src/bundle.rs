//! Sigstore bundle v0.3 for one DSSE signature.
//!
//! Producer rules (DESIGN.md §4), all enforced by construction here: the bundle's envelope holds
//! exactly one signature with no `keyid`; camelCase; standard base64; `tlogEntries: []` present;
//! keyful bundles carry `publicKey.hint`, keyless ones `certificate` = the leaf only.
//! `bundleSha256` is SHA-256 over the RFC 8785 canonical bytes of the bundle, so it does not depend
//! on how the JSON was pretty-printed on the way.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::digest::sha256_hex;
use crate::dsse::{Envelope, EnvelopeSignature};
use crate::key::SignedOperation;
use crate::{Error, canonical};

pub const BUNDLE_MEDIA_TYPE_V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Bundle {
    pub media_type: String,
    pub verification_material: VerificationMaterial,
    pub dsse_envelope: Envelope,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VerificationMaterial {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<PublicKeyIdentifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<X509Certificate>,
    /// Always present in our output; entries from other producers are carried, not interpreted.
    pub tlog_entries: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_verification_data: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKeyIdentifier {
    pub hint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct X509Certificate {
    #[serde(with = "crate::dsse::b64")]
    pub raw_bytes: Vec<u8>,
}

impl Bundle {
    /// The bundle for signature `index` of `envelope`, produced by `operation`.
    pub fn for_signature(
        envelope: &Envelope,
        index: usize,
        operation: &SignedOperation,
    ) -> Result<Bundle, Error> {
        let Some(signature) = envelope.signatures.get(index) else {
            return Err(Error::InvalidInput(format!(
                "envelope has no signature #{index}"
            )));
        };
        let timestamps = (!operation.timestamps.is_empty()).then(|| {
            let tokens: Vec<Value> = operation
                .timestamps
                .iter()
                .map(|t| serde_json::json!({"signedTimestamp": STANDARD.encode(t)}))
                .collect();
            serde_json::json!({"rfc3161Timestamps": tokens})
        });
        let material = match operation.certificate_chain_der.first() {
            Some(leaf) => VerificationMaterial {
                public_key: None,
                certificate: Some(X509Certificate {
                    raw_bytes: leaf.clone(),
                }),
                tlog_entries: Vec::new(),
                timestamp_verification_data: timestamps,
            },
            None => VerificationMaterial {
                public_key: Some(PublicKeyIdentifier {
                    hint: operation.public_key.hint(),
                }),
                certificate: None,
                tlog_entries: Vec::new(),
                timestamp_verification_data: timestamps,
            },
        };
        Ok(Bundle {
            media_type: BUNDLE_MEDIA_TYPE_V03.to_owned(),
            verification_material: material,
            dsse_envelope: Envelope {
                payload_type: envelope.payload_type.clone(),
                payload: envelope.payload.clone(),
                signatures: vec![EnvelopeSignature {
                    keyid: None,
                    sig: signature.sig.clone(),
                }],
            },
        })
    }

    pub fn canonical_bytes(&self) -> Result<Vec<u8>, Error> {
        canonical::to_vec(self)
    }

    /// Lowercase hex SHA-256 of the canonical bundle bytes.
    pub fn sha256(&self) -> Result<String, Error> {
        Ok(sha256_hex(&self.canonical_bytes()?))
    }

    pub fn from_json(bytes: &[u8]) -> Result<Bundle, Error> {
        let bundle: Bundle = serde_json::from_slice(bytes)
            .map_err(|e| Error::InvalidInput(format!("Sigstore bundle: {e}")))?;
        Ok(bundle)
    }

    pub fn to_json_pretty(&self) -> Result<Vec<u8>, Error> {
        Ok(serde_json::to_vec_pretty(self)?)
    }

    pub fn hint(&self) -> Option<&str> {
        self.verification_material
            .public_key
            .as_ref()
            .map(|p| p.hint.as_str())
    }

    /// The RFC 3161 timestamps (DER `TimeStampResp`) the bundle carries; undecodable entries are skipped.
    pub fn rfc3161_timestamps(&self) -> Vec<Vec<u8>> {
        self.verification_material
            .timestamp_verification_data
            .as_ref()
            .and_then(|t| t["rfc3161Timestamps"].as_array())
            .into_iter()
            .flatten()
            .filter_map(|t| t["signedTimestamp"].as_str())
            .filter_map(|b| STANDARD.decode(b).ok())
            .collect()
    }

    pub fn leaf_certificate_b64(&self) -> Option<String> {
        self.verification_material
            .certificate
            .as_ref()
            .map(|c| STANDARD.encode(&c.raw_bytes))
    }
}
