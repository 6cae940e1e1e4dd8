//! RFC 3161 timestamps over signatures, and the certificate checks of keyless verification.
//!
//! A keyless signature is made by a key whose certificate lives ten minutes; an offline verifier
//! can only trust it if a third party vouches that the signature existed while the certificate
//! was valid. That third party is a Time-Stamping Authority: it signs (CMS `SignedData`) a
//! `TSTInfo` holding SHA-256 of the signature bytes and the time. Sigstore bundles carry the
//! whole DER `TimeStampResp` (status and token, RFC 3161 §2.4.2) in
//! `verificationMaterial.timestampVerificationData.rfc3161Timestamps[].signedTimestamp`.
//!
//! Byte contract: the message imprint is SHA-256 over the raw DSSE signature bytes (not base64),
//! which is what Sigstore verifiers expect for DSSE bundles.
//!
//! Parsing uses the RustCrypto `x509-tsp`/`cms`/`x509-cert` types; signatures and certificate
//! paths are checked by `rustls-webpki` on aws-lc-rs. The TSA signing certificate must be the
//! first certificate of a configured authority's chain (the trust root pins it) and the token must
//! have been issued within that certificate's validity.

use cms::content_info::ContentInfo;
use cms::signed_data::SignedData;
use der::asn1::{Int, ObjectIdentifier, OctetString};
use der::oid::AssociatedOid;
use der::{Any, Decode, Encode};
use rustls_pki_types::{CertificateDer, UnixTime};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_cert::Certificate;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_tsp::{MessageImprint, TimeStampReq, TimeStampResp, TspVersion, TstInfo};

const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const TST_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
const CONTENT_TYPE_ATTR: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const MESSAGE_DIGEST_ATTR: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const RSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
/// Fulcio's OIDC issuer extension (DER UTF8String), and its legacy raw-string form.
const FULCIO_ISSUER_V2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.8");
const FULCIO_ISSUER_V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.1");
/// id-kp-codeSigning and id-kp-timeStamping, as the DER value bytes webpki expects.
const EKU_CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];

/// The largest timestamp response accepted from a TSA.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// A DER `TimeStampReq` for SHA-256 of `signature`, asking for the TSA's certificate.
pub fn request_der(signature: &[u8], nonce: &[u8; 8]) -> Result<Vec<u8>, String> {
    let request = TimeStampReq {
        version: TspVersion::V1,
        message_imprint: imprint_of(signature)?,
        req_policy: None,
        nonce: Some(positive_int(nonce)?),
        cert_req: true,
        extensions: None,
    };
    request
        .to_der()
        .map_err(|e| format!("encoding the request: {e}"))
}

/// Checks a TSA's DER `TimeStampResp`: granted, covering `signature`, echoing the request's
/// nonce. Returns the response in canonical DER ([`canonical_response`]): what a Sigstore
/// bundle carries, and what the caller must verify before embedding it.
pub fn check_response(
    response: &[u8],
    signature: &[u8],
    nonce: &[u8; 8],
) -> Result<Vec<u8>, String> {
    let canonical = canonical_response(response)?;
    let parsed = ParsedToken::parse(&token_of(&canonical)?)?;
    if parsed.imprint != Sha256::digest(signature).as_slice() {
        return Err("the token covers other bytes than the signature".into());
    }
    if parsed.nonce.as_deref() != Some(positive_int(nonce)?.as_bytes()) {
        return Err("the token does not echo the request's nonce".into());
    }
    Ok(canonical)
}

/// A `TimeStampResp` in canonical DER, or why it cannot be had without breaking a signature.
///
/// DER sorts every `SET OF` (X.690 §11.6); some TSAs (OpenSSL's `ts -reply` among them) embed
/// their certificates in the order they were added, which lenient parsers — sigstore-js, ours —
/// accept and strict ones refuse. Nothing signs the order of the certificate set, and the
/// signed attributes are signed in their DER (sorted) form (RFC 5652 §5.4), so re-encoding the
/// structure is safe where the signed bytes stay as they were: the `TSTInfo` (its digest is
/// signed) must already be DER, and every embedded certificate must come out of the
/// re-encoding byte for byte (its issuer's signature covers it). Anything else is refused.
/// The caller still verifies the result: a token whose signature only held over a non-DER
/// encoding of its attributes does not verify after this, and is refused there.
pub fn canonical_response(response: &[u8]) -> Result<Vec<u8>, String> {
    let mut parsed =
        TimeStampResp::from_der(response).map_err(|e| format!("undecodable response: {e}"))?;
    if let Some(token) = parsed.time_stamp_token.as_mut() {
        if token.content_type != SIGNED_DATA {
            return Err("the token is not CMS SignedData".into());
        }
        let signed: SignedData = token
            .content
            .decode_as()
            .map_err(|e| format!("token SignedData: {e}"))?;
        let tst_info = tst_info_bytes(&signed)?;
        let strict = TstInfo::from_der(&tst_info)
            .and_then(|t| t.to_der())
            .map_err(|e| format!("TSTInfo: {e}"))?;
        if strict != tst_info {
            return Err("the token's TSTInfo is not DER, and its digest is signed: refused".into());
        }
        for choice in signed.certificates.iter().flat_map(|set| set.0.iter()) {
            let der = choice.to_der().map_err(|e| e.to_string())?;
            if !response.windows(der.len()).any(|w| w == der.as_slice()) {
                return Err(
                    "an embedded certificate is not DER, and its issuer signed it as it is: refused"
                        .into(),
                );
            }
        }
        token.content = Any::encode_from(&signed).map_err(|e| format!("re-encoding: {e}"))?;
    }
    parsed
        .to_der()
        .map_err(|e| format!("re-encoding the response: {e}"))
}

/// Whether `response` is already canonical DER (what [`canonical_response`] would return).
pub fn is_canonical(response: &[u8]) -> bool {
    canonical_response(response).is_ok_and(|c| c == response)
}

/// The DER `TSTInfo` a token's `SignedData` encapsulates (the OCTET STRING's contents).
fn tst_info_bytes(signed: &SignedData) -> Result<Vec<u8>, String> {
    if signed.encap_content_info.econtent_type != TST_INFO {
        return Err("the token does not carry a TSTInfo".into());
    }
    let content = signed
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or("the token has no content")?;
    Ok(
        OctetString::from_der(&content.to_der().map_err(|e| e.to_string())?)
            .map_err(|e| format!("TSTInfo wrapper: {e}"))?
            .into_bytes(),
    )
}

/// The token (DER `ContentInfo`) of a granted `TimeStampResp`.
fn token_of(response: &[u8]) -> Result<Vec<u8>, String> {
    let response =
        TimeStampResp::from_der(response).map_err(|e| format!("undecodable response: {e}"))?;
    let status = response.status.status as u8;
    if status > 1 {
        let text = response
            .status
            .status_string
            .as_ref()
            .map(|t| format!("{t:?}"))
            .unwrap_or_default();
        return Err(format!("the TSA refused (status {status}) {text}"));
    }
    let token = response
        .time_stamp_token
        .ok_or("the TSA granted but sent no token")?;
    token
        .to_der()
        .map_err(|e| format!("re-encoding the token: {e}"))
}

/// A timestamp token taken apart (nothing verified yet).
struct ParsedToken {
    tst_info_der: Vec<u8>,
    imprint: Vec<u8>,
    nonce: Option<Vec<u8>>,
    gen_time: OffsetDateTime,
    signed_attrs_der: Vec<u8>,
    message_digest: Vec<u8>,
    signature_algorithm: AlgorithmIdentifierOwned,
    signature: Vec<u8>,
    embedded_certificates: Vec<Vec<u8>>,
}

impl ParsedToken {
    fn parse(token: &[u8]) -> Result<ParsedToken, String> {
        let info = ContentInfo::from_der(token).map_err(|e| format!("token: {e}"))?;
        if info.content_type != SIGNED_DATA {
            return Err("the token is not CMS SignedData".into());
        }
        let signed: SignedData = info
            .content
            .decode_as()
            .map_err(|e| format!("token SignedData: {e}"))?;
        let tst_info_der = tst_info_bytes(&signed)?;
        let tst = TstInfo::from_der(&tst_info_der).map_err(|e| format!("TSTInfo: {e}"))?;
        if tst.message_imprint.hash_algorithm.oid != SHA256 {
            return Err("the token's imprint is not SHA-256".into());
        }
        let gen_time = OffsetDateTime::from(tst.gen_time.to_system_time());
        let mut signers = signed.signer_infos.0.iter();
        let signer = match (signers.next(), signers.next()) {
            (Some(s), None) => s,
            _ => return Err("the token must have exactly one signer".into()),
        };
        let attrs = signer
            .signed_attrs
            .as_ref()
            .ok_or("the token's signer has no signed attributes")?;
        let mut message_digest = None;
        let mut content_type_ok = false;
        for attr in attrs.iter() {
            let value = attr.values.iter().next();
            if attr.oid == CONTENT_TYPE_ATTR {
                content_type_ok = value
                    .and_then(|v| v.decode_as::<ObjectIdentifier>().ok())
                    .is_some_and(|oid| oid == TST_INFO);
            } else if attr.oid == MESSAGE_DIGEST_ATTR {
                message_digest = value
                    .and_then(|v| v.decode_as::<OctetString>().ok())
                    .map(OctetString::into_bytes);
            }
        }
        if !content_type_ok {
            return Err("the token's signed content type is not TSTInfo".into());
        }
        let embedded_certificates = signed
            .certificates
            .iter()
            .flat_map(|set| set.0.iter())
            .filter_map(|choice| match choice {
                cms::cert::CertificateChoices::Certificate(c) => c.to_der().ok(),
                _ => None,
            })
            .collect();
        Ok(ParsedToken {
            imprint: tst.message_imprint.hashed_message.as_bytes().to_vec(),
            nonce: tst.nonce.as_ref().map(|n| n.as_bytes().to_vec()),
            tst_info_der,
            gen_time,
            signed_attrs_der: attrs.to_der().map_err(|e| e.to_string())?,
            message_digest: message_digest.ok_or("the token has no message digest")?,
            signature_algorithm: signer.signature_algorithm.clone(),
            signature: signer.signature.as_bytes().to_vec(),
            embedded_certificates,
        })
    }
}

/// One Time-Stamping Authority a verifier trusts: its certificate chain, signing certificate
/// first. (Sigstore trusted roots list them under `timestampAuthorities`.)
#[derive(Debug, Clone)]
pub struct TimestampAuthority {
    pub chain_der: Vec<Vec<u8>>,
}

/// Checks a DER `TimeStampResp` as a timestamp over `signature` issued by one of
/// `authorities`; returns the time it vouches for.
pub fn verify_timestamp(
    response: &[u8],
    signature: &[u8],
    authorities: &[TimestampAuthority],
) -> Result<OffsetDateTime, String> {
    let parsed = ParsedToken::parse(&token_of(response)?)?;
    if parsed.imprint != Sha256::digest(signature).as_slice() {
        return Err("the timestamp covers other bytes than the signature".into());
    }
    if parsed.message_digest != Sha256::digest(&parsed.tst_info_der).as_slice() {
        return Err("the timestamp's signed digest does not match its content".into());
    }
    let algorithm = signature_algorithm(&parsed.signature_algorithm)?;
    let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(parsed.gen_time.unix_timestamp()).map_err(|_| "time before 1970")?,
    ));
    for authority in authorities {
        let Some((signing, rest)) = authority.chain_der.split_first() else {
            continue;
        };
        let signing_der = CertificateDer::from(signing.as_slice());
        let Ok(cert) = webpki::EndEntityCert::try_from(&signing_der) else {
            continue;
        };
        if cert
            .verify_signature(algorithm, &parsed.signed_attrs_der, &parsed.signature)
            .is_err()
        {
            continue;
        }
        // The pinned signing certificate must still chain to the authority's root at genTime.
        if let Some((root, intermediates)) = rest.split_last() {
            let root = CertificateDer::from(root.as_slice());
            let anchor =
                webpki::anchor_from_trusted_cert(&root).map_err(|e| format!("TSA root: {e}"))?;
            let intermediates: Vec<CertificateDer> = intermediates
                .iter()
                .map(|c| CertificateDer::from(c.as_slice()))
                .collect();
            cert.verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &[anchor],
                &intermediates,
                at,
                webpki::KeyUsage::required(EKU_TIME_STAMPING),
                None,
                None,
            )
            .map_err(|e| format!("TSA certificate at {}: {e}", parsed.gen_time))?;
        } else {
            check_validity(signing, parsed.gen_time)?;
        }
        return Ok(parsed.gen_time);
    }
    let hint = if parsed.embedded_certificates.is_empty() {
        ""
    } else {
        " (the token names a certificate that no trusted authority holds)"
    };
    Err(format!(
        "no trusted timestamp authority signed this timestamp{hint}"
    ))
}

const EKU_TIME_STAMPING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x08];

fn signature_algorithm(
    id: &AlgorithmIdentifierOwned,
) -> Result<&'static dyn rustls_pki_types::SignatureVerificationAlgorithm, String> {
    match id.oid {
        oid if oid == ECDSA_SHA256 => Ok(webpki::aws_lc_rs::ECDSA_P256_SHA256),
        oid if oid == ECDSA_SHA384 => Ok(webpki::aws_lc_rs::ECDSA_P384_SHA384),
        oid if oid == RSA_SHA256 => Ok(webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256),
        oid => Err(format!("unsupported timestamp signature algorithm {oid}")),
    }
}

fn check_validity(der: &[u8], at: OffsetDateTime) -> Result<(), String> {
    let cert = Certificate::from_der(der).map_err(|e| format!("certificate: {e}"))?;
    let validity = &cert.tbs_certificate.validity;
    let from = OffsetDateTime::from(validity.not_before.to_system_time());
    let until = OffsetDateTime::from(validity.not_after.to_system_time());
    if at < from || at > until {
        return Err(format!(
            "certificate not valid at {at} (valid {from} to {until})"
        ));
    }
    Ok(())
}

/// Who a keyless certificate must name.
#[derive(Debug, Clone)]
pub struct IdentityPolicy {
    /// An email or URI subject alternative name, compared exactly.
    pub identity: String,
    /// The OIDC issuer in Fulcio's issuer extension, compared exactly.
    pub oidc_issuer: String,
}

/// Checks a keyless leaf at `at`: it chains to one of `authorities` (each a chain, root last)
/// for code signing, and names `policy`'s identity and issuer. Returns its public key (SPKI DER).
pub fn verify_leaf(
    leaf: &[u8],
    authorities: &[Vec<Vec<u8>>],
    at: OffsetDateTime,
    policy: &IdentityPolicy,
) -> Result<Vec<u8>, String> {
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(at.unix_timestamp()).map_err(|_| "time before 1970")?,
    ));
    let leaf_der = CertificateDer::from(leaf);
    let end_entity =
        webpki::EndEntityCert::try_from(&leaf_der).map_err(|e| format!("leaf: {e}"))?;
    let mut last = String::from("no certificate authority in the trusted root");
    let mut chained = false;
    for chain in authorities {
        let Some((root, intermediates)) = chain.split_last() else {
            continue;
        };
        let root = CertificateDer::from(root.as_slice());
        let Ok(anchor) = webpki::anchor_from_trusted_cert(&root) else {
            continue;
        };
        let intermediates: Vec<CertificateDer> = intermediates
            .iter()
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        match end_entity.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[anchor],
            &intermediates,
            time,
            webpki::KeyUsage::required(EKU_CODE_SIGNING),
            None,
            None,
        ) {
            Ok(_) => {
                chained = true;
                break;
            }
            Err(e) => last = format!("the certificate does not chain to a trusted CA at {at}: {e}"),
        }
    }
    if !chained {
        return Err(last);
    }
    let cert = Certificate::from_der(leaf).map_err(|e| format!("leaf: {e}"))?;
    let mut identities = Vec::new();
    let mut issuer = None;
    for ext in cert.tbs_certificate.extensions.iter().flatten() {
        if ext.extn_id == SubjectAltName::OID {
            let san = SubjectAltName::from_der(ext.extn_value.as_bytes())
                .map_err(|e| format!("SAN: {e}"))?;
            for name in san.0 {
                match name {
                    GeneralName::Rfc822Name(n) => identities.push(n.to_string()),
                    GeneralName::UniformResourceIdentifier(n) => identities.push(n.to_string()),
                    _ => {}
                }
            }
        } else if ext.extn_id == FULCIO_ISSUER_V2 {
            issuer = der::asn1::Utf8StringRef::from_der(ext.extn_value.as_bytes())
                .ok()
                .map(|s| s.as_str().to_owned());
        } else if ext.extn_id == FULCIO_ISSUER_V1 && issuer.is_none() {
            issuer = std::str::from_utf8(ext.extn_value.as_bytes())
                .ok()
                .map(str::to_owned);
        }
    }
    if !identities.contains(&policy.identity) {
        return Err(format!(
            "the certificate names {identities:?}, not {}",
            policy.identity
        ));
    }
    match issuer {
        Some(i) if i == policy.oidc_issuer => {}
        Some(i) => {
            return Err(format!(
                "the certificate's OIDC issuer is {i}, not {}",
                policy.oidc_issuer
            ));
        }
        None => return Err("the certificate has no OIDC issuer extension".into()),
    }
    cert.tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| format!("leaf key: {e}"))
}

fn imprint_of(bytes: &[u8]) -> Result<MessageImprint, String> {
    Ok(MessageImprint {
        hash_algorithm: x509_cert::spki::AlgorithmIdentifier {
            oid: SHA256,
            parameters: Some(Any::null()),
        },
        hashed_message: OctetString::new(Sha256::digest(bytes).to_vec())
            .map_err(|e| e.to_string())?,
    })
}

fn positive_int(bytes: &[u8]) -> Result<Int, String> {
    // A leading zero keeps the INTEGER positive whatever the first random byte is.
    let mut value = vec![0u8];
    value.extend_from_slice(bytes);
    let trimmed = match value.iter().position(|b| *b != 0) {
        Some(i) if value[i] & 0x80 != 0 => &value[i - 1..],
        Some(i) => &value[i..],
        None => &value[..1],
    };
    Int::new(trimmed).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply of OpenSSL's `ts -reply` (the fuzz seed): its two certificates in the order
    /// they were added, a `SET OF` strict DER forbids. It timestamps `signature-bytes`.
    const OPENSSL_REPLY: &[u8] = include_bytes!("../../fuzz/seeds/tsa/openssl-granted.tsr");
    const OPENSSL_CHAIN: &str = include_str!("../../fuzz/seeds/tsa/chain.pem");

    fn openssl_authority() -> Vec<TimestampAuthority> {
        use rustls_pki_types::pem::PemObject;
        let chain_der = CertificateDer::pem_slice_iter(OPENSSL_CHAIN.as_bytes())
            .map(|c| c.expect("certificate").to_vec())
            .collect();
        vec![TimestampAuthority { chain_der }]
    }

    #[test]
    fn an_unsorted_certificate_set_is_re_encoded_to_canonical_der_that_still_verifies() {
        assert!(!is_canonical(OPENSSL_REPLY), "the seed is not DER");
        let canonical = canonical_response(OPENSSL_REPLY).expect("re-encodable");
        assert_ne!(canonical, OPENSSL_REPLY);
        assert_eq!(canonical.len(), OPENSSL_REPLY.len(), "only the order moved");
        assert!(is_canonical(&canonical));
        assert_eq!(canonical_response(&canonical).expect("again"), canonical);
        // The same certificates, now sorted by their encodings.
        let signed: SignedData = TimeStampResp::from_der(&canonical)
            .expect("response")
            .time_stamp_token
            .expect("token")
            .content
            .decode_as()
            .expect("signed data");
        let certs: Vec<Vec<u8>> = signed
            .certificates
            .iter()
            .flat_map(|s| s.0.iter())
            .map(|c| c.to_der().expect("der"))
            .collect();
        assert_eq!(certs.len(), 2);
        assert!(certs[0] < certs[1], "DER order");
        let at = verify_timestamp(&canonical, b"signature-bytes", &openssl_authority());
        assert!(at.is_ok(), "{at:?}");
        assert!(
            verify_timestamp(&canonical, b"other bytes", &openssl_authority()).is_err(),
            "still bound to the signature"
        );
    }

    #[test]
    fn a_tst_info_that_is_not_der_is_refused_not_re_encoded() {
        let mut response = TimeStampResp::from_der(OPENSSL_REPLY).expect("response");
        let token = response.time_stamp_token.as_mut().expect("token");
        let mut signed: SignedData = token.content.decode_as().expect("signed data");
        let tst = tst_info_bytes(&signed).expect("tst info");
        // The same TSTInfo with its length in one more byte than DER allows.
        let longer = match tst[1] {
            n if n < 0x80 => [&[0x30, 0x81, n][..], &tst[2..]].concat(),
            0x81 => [&[0x30, 0x82, 0x00, tst[2]][..], &tst[3..]].concat(),
            other => panic!("unexpected length byte {other:#x}"),
        };
        signed.encap_content_info.econtent =
            Some(Any::new(der::Tag::OctetString, longer).expect("octets"));
        token.content = Any::encode_from(&signed).expect("signed data");
        let crafted = response.to_der().expect("der");
        let refused = canonical_response(&crafted).expect_err("refused");
        assert!(refused.contains("TSTInfo"), "{refused}");
        assert!(
            check_response(&crafted, b"signature-bytes", &[7; 8]).is_err(),
            "and so never embedded"
        );
    }
}
