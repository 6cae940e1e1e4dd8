//! DSSE v1: the pre-authentication encoding and the envelope.
//!
//! `PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths as ASCII
//! decimal byte counts, `body` the raw (not base64) payload. Signatures are always computed over
//! PAE bytes, never over the payload alone.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::key::KeySigner;
use crate::{Error, SignedOperation};

pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// DSSE pre-authentication encoding.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let type_len = payload_type.len().to_string();
    let payload_len = payload.len().to_string();
    let mut out = Vec::with_capacity(
        10 + type_len.len() + payload_type.len() + payload_len.len() + payload.len(),
    );
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(type_len.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_len.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

/// The payload type and payload a PAE encodes, if `bytes` is exactly one PAE (canonical decimal
/// lengths, nothing before or after): `parse_pae(&pae(t, p)) == Some((t, p))`. A threshold
/// share holder uses it to learn which statement a coordinator asks it to sign.
pub fn parse_pae(bytes: &[u8]) -> Option<(&str, &[u8])> {
    fn length(rest: &[u8]) -> Option<(usize, &[u8])> {
        let end = rest.iter().position(|b| *b == b' ')?;
        let digits = &rest[..end];
        if digits.is_empty() || (digits.len() > 1 && digits[0] == b'0') {
            return None;
        }
        let n: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
        Some((n, &rest[end + 1..]))
    }
    let rest = bytes.strip_prefix(b"DSSEv1 ")?;
    let (type_len, rest) = length(rest)?;
    if rest.len() < type_len.checked_add(1)? || rest[type_len] != b' ' {
        return None;
    }
    let payload_type = std::str::from_utf8(&rest[..type_len]).ok()?;
    let (payload_len, payload) = length(&rest[type_len + 1..])?;
    (payload.len() == payload_len).then_some((payload_type, payload))
}

/// One signature inside an envelope. `keyid` is omitted from JSON when absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeSignature {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyid: Option<String>,
    #[serde(with = "b64")]
    pub sig: Vec<u8>,
}

impl EnvelopeSignature {
    /// The envelope's entry for `op`. A keyful signature names its key; a keyless one carries
    /// no `keyid`, like its bundle: its key was ephemeral, used once, and the certificate that
    /// identifies it travels in the bundle, so an id would name nothing a verifier can look up.
    pub fn of(op: &SignedOperation) -> EnvelopeSignature {
        EnvelopeSignature {
            keyid: op
                .certificate_chain_der
                .is_empty()
                .then(|| op.key_id.clone()),
            sig: op.signature.clone(),
        }
    }
}

/// A DSSE envelope. JSON form: `payload` and `sig` are standard base64 with padding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Envelope {
    pub payload_type: String,
    #[serde(with = "b64")]
    pub payload: Vec<u8>,
    pub signatures: Vec<EnvelopeSignature>,
}

impl Envelope {
    /// Signs `payload` with every signer, in order. Returns the envelope and, per signature, the
    /// operation's verification material (public key or certificate chain).
    pub fn sign(
        payload_type: &str,
        payload: Vec<u8>,
        signers: &[&dyn KeySigner],
    ) -> Result<(Envelope, Vec<SignedOperation>), Error> {
        if signers.is_empty() {
            return Err(Error::Signing("no signer configured".into()));
        }
        let message = pae(payload_type, &payload);
        let mut signatures = Vec::with_capacity(signers.len());
        let mut operations = Vec::with_capacity(signers.len());
        for signer in signers {
            let op = signer.sign(&message)?;
            signatures.push(EnvelopeSignature::of(&op));
            operations.push(op);
        }
        let envelope = Envelope {
            payload_type: payload_type.to_owned(),
            payload,
            signatures,
        };
        Ok((envelope, operations))
    }

    pub fn pae(&self) -> Vec<u8> {
        pae(&self.payload_type, &self.payload)
    }

    pub fn from_json(bytes: &[u8]) -> Result<Envelope, Error> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::InvalidInput(format!("DSSE envelope: {e}")))
    }

    pub fn to_json_pretty(&self) -> Result<Vec<u8>, Error> {
        Ok(serde_json::to_vec_pretty(self)?)
    }
}

pub(crate) mod b64 {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        // From the DSSE protocol document: PAE("http://example.com/HelloWorld", "hello world").
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn parse_pae_reads_back_exactly_one_pae() {
        let encoded = pae(IN_TOTO_PAYLOAD_TYPE, b"{\"a\":1} x");
        assert_eq!(
            parse_pae(&encoded),
            Some((IN_TOTO_PAYLOAD_TYPE, &b"{\"a\":1} x"[..]))
        );
        assert_eq!(parse_pae(&pae("", b"")), Some(("", &b""[..])));
        let mut longer = encoded.clone();
        longer.push(b'!');
        for bad in [
            &longer[..],
            &encoded[..encoded.len() - 1],
            b"DSSEv1 01 a 1 b",
            b"DSSEv1 1 a 01 b",
            b"DSSEv1 99999999999999999999999 a 1 b",
            b"DSSEv1 1 a1 b",
            b"DSSEv2 1 a 1 b",
            b"",
        ] {
            assert_eq!(parse_pae(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn pae_counts_bytes_not_chars() {
        assert_eq!(pae("t", "é".as_bytes()), b"DSSEv1 1 t 2 \xc3\xa9".to_vec());
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
    }

    #[test]
    fn envelope_json_rejects_unknown_fields_and_bad_base64() {
        assert!(
            Envelope::from_json(br#"{"payloadType":"t","payload":"aGk=","signatures":[],"x":1}"#)
                .is_err()
        );
        assert!(
            Envelope::from_json(br#"{"payloadType":"t","payload":"!!","signatures":[]}"#).is_err()
        );
        let env = Envelope::from_json(
            br#"{"payloadType":"t","payload":"aGk=","signatures":[{"sig":"AA=="}]}"#,
        )
        .expect("valid envelope");
        assert_eq!(env.payload, b"hi");
        assert_eq!(env.signatures[0].keyid, None);
    }

    #[test]
    fn a_keyless_signature_carries_no_keyid_in_the_envelope() {
        let key = crate::FileKeySigner::generate().expect("key");
        let keyful = key.sign(b"m").expect("sign");
        let entry = serde_json::to_value(EnvelopeSignature::of(&keyful)).expect("json");
        assert_eq!(entry["keyid"], keyful.key_id.as_str());
        let mut keyless = keyful;
        keyless.certificate_chain_der = vec![b"leaf".to_vec()];
        let entry = serde_json::to_value(EnvelopeSignature::of(&keyless)).expect("json");
        assert!(entry.get("keyid").is_none(), "{entry}");
        assert_eq!(entry["sig"], STANDARD.encode(&keyless.signature));
    }
}
