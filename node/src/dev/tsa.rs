//! A dev RFC 3161 Time-Stamping Authority: `POST /tsa/api/v1/timestamp` takes an
//! `application/timestamp-query` and answers an `application/timestamp-reply`, like Sigstore's
//! timestamp authority.
//!
//! What it issues is what a real TSA issues, in strict DER: a `TimeStampResp` whose token is CMS
//! `SignedData` (v3) over a `TSTInfo`, signed with ECDSA P-256 over the signed attributes
//! (content type, signing time, message digest and the RFC 5035 `signingCertificateV2` that
//! binds the signing certificate), the TSA's chain embedded when the query asks for it. Every
//! structure is a `cms`/`x509-tsp`/`x509-cert` type encoded by `der`, whose `SET OF` values sort
//! themselves — the certificate set and the signed attributes come out in DER order, where
//! OpenSSL's TSA keeps the order they were added in. Only the two ESS structures are declared
//! here (no crate of the family has them), with `der`'s derive, not written out by hand.
//!
//! Its signing certificate has a critical extended key usage of timeStamping only (RFC 3161
//! §2.3), digitalSignature, subject and authority key identifiers and `CA:FALSE`, under a root of
//! its own. A stand-in, never a trusted TSA: used by `serve --dev` and the tests only.

use std::path::Path;
use std::sync::Arc;

use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use der::asn1::{
    GeneralizedTime, Int, ObjectIdentifier, OctetString, SetOfVec, UtcTime, Utf8StringRef,
};
use der::{Any, Decode, Encode, Sequence, Tag};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose, SigningKey,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256, Sha384, Sha512};
use x509_cert::Certificate;
use x509_cert::attr::Attribute;
use x509_cert::ext::pkix::ExtendedKeyUsage;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_tsp::{Accuracy, TimeStampReq, TimeStampResp, TspVersion, TstInfo};

use crate::Error;
use crate::clock::Clock;

/// The policy Sigstore's timestamp authority issues under by default.
const POLICY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.2");
const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");
const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const TST_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
const CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const SIGNING_TIME: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.5");
const SIGNING_CERTIFICATE_V2: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.47");
const TIME_STAMPING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.8");
const EXTENDED_KEY_USAGE_OID: [u64; 4] = [2, 5, 29, 37];

/// RFC 5035 `SigningCertificateV2 ::= SEQUENCE { certs SEQUENCE OF ESSCertIDv2, policies … OPTIONAL }`.
#[derive(Sequence)]
struct SigningCertificateV2 {
    certs: Vec<EssCertIdV2>,
}

/// `ESSCertIDv2 ::= SEQUENCE { hashAlgorithm DEFAULT id-sha256, certHash OCTET STRING,
/// issuerSerial OPTIONAL }`: SHA-256, which DER leaves out as the default, and no issuerSerial.
#[derive(Sequence)]
struct EssCertIdV2 {
    cert_hash: OctetString,
}

/// Why a query is refused, as RFC 3161 `PKIFailureInfo` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    BadAlg,
    BadRequest,
    BadDataFormat,
    UnacceptedPolicy,
    UnacceptedExtension,
}

pub struct DevTsa {
    key: KeyPair,
    /// The signing certificate first, the root last (DER).
    chain_der: Vec<Vec<u8>>,
    signer: Certificate,
    clock: Arc<dyn Clock>,
}

impl DevTsa {
    /// A fresh root and TSA certificate (the tests' stand-in).
    pub fn new(clock: Arc<dyn Clock>) -> Result<DevTsa, Error> {
        let (key_pem, chain_pem) = Self::create(clock.as_ref())?;
        Self::with_chain(&key_pem, &chain_pem, clock)
    }

    /// The TSA kept in `dir` (`tsa-key.pem`, `tsa-chain.pem`), created on first use. The
    /// root's key signs the TSA certificate once and is not kept.
    pub fn load_or_create(dir: &Path, clock: Arc<dyn Clock>) -> Result<DevTsa, Error> {
        let (key_pem, chain_pem) = super::kept_pair(
            &dir.join("tsa-key.pem"),
            &dir.join(super::TSA_CHAIN_FILE),
            || Self::create(clock.as_ref()),
        )?;
        Self::with_chain(&key_pem, &chain_pem, clock)
    }

    /// A TSA key and its chain (TSA certificate, then its root; ten years), PEM.
    fn create(clock: &dyn Clock) -> Result<(String, String), Error> {
        let e = |e: rcgen::Error| Error::Key(format!("dev TSA: {e}"));
        let now = clock.now();
        let name = |cn: &str| {
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, cn);
            dn.push(DnType::OrganizationName, "Stella Signer dev stand-in");
            dn
        };
        let root_key = KeyPair::generate().map_err(e)?;
        let mut root = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
        root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        root.distinguished_name = name("stella dev TSA root");
        root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        root.not_before = now - time::Duration::days(1);
        root.not_after = now + time::Duration::days(3650);
        let root_cert = root.self_signed(&root_key).map_err(e)?;
        let issuer = rcgen::Issuer::new(root, root_key);

        let key = KeyPair::generate().map_err(e)?;
        let mut tsa = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
        tsa.is_ca = IsCa::ExplicitNoCa;
        tsa.distinguished_name = name("stella dev TSA");
        tsa.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        tsa.use_authority_key_identifier_extension = true;
        // rcgen writes extended key usage non-critical; RFC 3161 wants it critical.
        let eku = ExtendedKeyUsage(vec![TIME_STAMPING])
            .to_der()
            .map_err(|e| Error::Key(e.to_string()))?;
        let mut eku = CustomExtension::from_oid_content(&EXTENDED_KEY_USAGE_OID, eku);
        eku.set_criticality(true);
        tsa.custom_extensions = vec![eku];
        tsa.not_before = now - time::Duration::days(1);
        tsa.not_after = now + time::Duration::days(3650);
        let tsa_cert = tsa.signed_by(&key, &issuer).map_err(e)?;
        Ok((key.serialize_pem(), tsa_cert.pem() + &root_cert.pem()))
    }

    fn with_chain(key_pem: &str, chain_pem: &str, clock: Arc<dyn Clock>) -> Result<DevTsa, Error> {
        let bad = |what: String| Error::Key(format!("dev TSA: {what}"));
        let key = KeyPair::from_pem(key_pem).map_err(|e| bad(e.to_string()))?;
        let chain_der: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .map(|c| c.map(|c| c.to_vec()))
            .collect::<Result<_, _>>()
            .map_err(|e| bad(e.to_string()))?;
        let first = chain_der
            .first()
            .ok_or_else(|| bad("an empty chain".into()))?;
        let signer = Certificate::from_der(first).map_err(|e| bad(e.to_string()))?;
        Ok(DevTsa {
            key,
            chain_der,
            signer,
            clock,
        })
    }

    /// The chain verifiers trust (TSA certificate first, root last), PEM.
    pub fn chain_pem(&self) -> String {
        self.chain_der
            .iter()
            .map(|der| crate::pipeline::pem_certificate(der))
            .collect()
    }

    /// The answer to a DER `TimeStampReq`: a granted token, or a rejection saying why (both
    /// DER `TimeStampResp`, as RFC 3161 §2.4.2 has a TSA answer either).
    pub fn respond(&self, query: &[u8]) -> Result<Vec<u8>, Error> {
        let mut serial = [0u8; 16];
        aws_lc_rs::rand::fill(&mut serial).map_err(|_| Error::Key("no randomness".into()))?;
        let answer = match decide(query) {
            Ok(request) => self.grant(&request, serial)?,
            Err(refusal) => rejection(refusal),
        };
        answer
            .to_der()
            .map_err(|e| Error::Key(format!("dev TSA: {e}")))
    }

    fn grant(
        &self,
        request: &TimeStampReq,
        serial: [u8; 16],
    ) -> Result<TimeStampResp<'static>, Error> {
        let e = |e: der::Error| Error::Key(format!("dev TSA: {e}"));
        let now = std::time::Duration::from_secs(
            u64::try_from(self.clock.now().unix_timestamp()).unwrap_or_default(),
        );
        let mut serial = serial;
        serial[0] = (serial[0] & 0x7f) | 0x40; // positive, and minimal as it stands
        let tst_info = TstInfo {
            version: TspVersion::V1,
            policy: POLICY,
            message_imprint: request.message_imprint.clone(),
            serial_number: Int::new(&serial).map_err(e)?,
            gen_time: GeneralizedTime::from_unix_duration(now).map_err(e)?,
            accuracy: Some(Accuracy {
                seconds: Some(1),
                millis: None,
                micros: None,
            }),
            ordering: false,
            nonce: request.nonce.clone(),
            tsa: None,
            extensions: None,
        }
        .to_der()
        .map_err(e)?;
        let attribute = |oid, value: Any| -> Result<Attribute, Error> {
            Ok(Attribute {
                oid,
                values: SetOfVec::try_from(vec![value]).map_err(e)?,
            })
        };
        let essential = SigningCertificateV2 {
            certs: vec![EssCertIdV2 {
                cert_hash: OctetString::new(Sha256::digest(&self.chain_der[0]).to_vec())
                    .map_err(e)?,
            }],
        };
        let signed_attrs = SetOfVec::try_from(vec![
            attribute(CONTENT_TYPE, Any::encode_from(&TST_INFO).map_err(e)?)?,
            attribute(
                SIGNING_TIME,
                Any::encode_from(&UtcTime::from_unix_duration(now).map_err(e)?).map_err(e)?,
            )?,
            attribute(
                MESSAGE_DIGEST,
                Any::encode_from(&OctetString::new(Sha256::digest(&tst_info).to_vec()).map_err(e)?)
                    .map_err(e)?,
            )?,
            attribute(
                SIGNING_CERTIFICATE_V2,
                Any::encode_from(&essential).map_err(e)?,
            )?,
        ])
        .map_err(e)?;
        // RFC 5652 §5.4: the signature covers the DER `SET OF` of the signed attributes.
        let signature = self
            .key
            .sign(&signed_attrs.to_der().map_err(e)?)
            .map_err(|e| Error::Key(format!("dev TSA: {e}")))?;
        let certificates = if request.cert_req {
            let mut set = Vec::new();
            for der in &self.chain_der {
                set.push(CertificateChoices::Certificate(
                    Certificate::from_der(der).map_err(e)?,
                ));
            }
            Some(CertificateSet(SetOfVec::try_from(set).map_err(e)?))
        } else {
            None
        };
        let algorithm = |oid| AlgorithmIdentifierOwned {
            oid,
            parameters: None,
        };
        let signed = SignedData {
            version: CmsVersion::V3,
            digest_algorithms: SetOfVec::try_from(vec![algorithm(SHA256)]).map_err(e)?,
            encap_content_info: EncapsulatedContentInfo {
                econtent_type: TST_INFO,
                econtent: Some(Any::new(Tag::OctetString, tst_info).map_err(e)?),
            },
            certificates,
            crls: None,
            signer_infos: SignerInfos(
                SetOfVec::try_from(vec![SignerInfo {
                    version: CmsVersion::V1,
                    sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                        issuer: self.signer.tbs_certificate.issuer.clone(),
                        serial_number: self.signer.tbs_certificate.serial_number.clone(),
                    }),
                    digest_alg: algorithm(SHA256),
                    signed_attrs: Some(signed_attrs),
                    signature_algorithm: algorithm(ECDSA_SHA256),
                    signature: OctetString::new(signature).map_err(e)?,
                    unsigned_attrs: None,
                }])
                .map_err(e)?,
            ),
        };
        Ok(TimeStampResp {
            status: cmpv2::status::PkiStatusInfo {
                status: cmpv2::status::PkiStatus::Accepted,
                status_string: None,
                fail_info: None,
            },
            time_stamp_token: Some(ContentInfo {
                content_type: SIGNED_DATA,
                content: Any::encode_from(&signed).map_err(e)?,
            }),
        })
    }
}

/// The request a query asks to be timestamped, or why it is refused (pure).
pub fn decide(query: &[u8]) -> Result<TimeStampReq, Refusal> {
    let request = TimeStampReq::from_der(query).map_err(|_| Refusal::BadDataFormat)?;
    if request.version != TspVersion::V1 {
        return Err(Refusal::BadRequest);
    }
    let imprint = &request.message_imprint;
    let length = match imprint.hash_algorithm.oid {
        oid if oid == SHA256 => Sha256::output_size(),
        oid if oid == SHA384 => Sha384::output_size(),
        oid if oid == SHA512 => Sha512::output_size(),
        _ => return Err(Refusal::BadAlg),
    };
    if imprint.hashed_message.as_bytes().len() != length {
        return Err(Refusal::BadDataFormat);
    }
    if request.req_policy.is_some_and(|p| p != POLICY) {
        return Err(Refusal::UnacceptedPolicy);
    }
    if request.extensions.is_some() {
        return Err(Refusal::UnacceptedExtension);
    }
    Ok(request)
}

impl Refusal {
    /// RFC 3161's name for the failure, and what it means here.
    pub fn text(self) -> &'static str {
        match self {
            Refusal::BadAlg => "badAlg: the imprint is not SHA-256, SHA-384 or SHA-512",
            Refusal::BadRequest => "badRequest: only TimeStampReq version 1 is served",
            Refusal::BadDataFormat => "badDataFormat: not a DER TimeStampReq with a whole imprint",
            Refusal::UnacceptedPolicy => {
                "unacceptedPolicy: this TSA issues under 1.3.6.1.4.1.57264.2"
            }
            Refusal::UnacceptedExtension => "unacceptedExtension: no extensions are served",
        }
    }
}

/// A rejection. The reason travels as the status string, not as `failInfo`: `cmpv2` 0.2
/// declares its `PKIFailureInfo` flags with bit positions where `flagset` wants masks, so the
/// bits it would encode name other failures (badAlg encodes as no bit at all).
fn rejection(refusal: Refusal) -> TimeStampResp<'static> {
    TimeStampResp {
        status: cmpv2::status::PkiStatusInfo {
            status: cmpv2::status::PkiStatus::Rejection,
            status_string: Utf8StringRef::new(refusal.text()).ok().map(|t| vec![t]),
            fail_info: None,
        },
        time_stamp_token: None,
    }
}

#[cfg(test)]
mod tests {
    use stella_signer::timestamp::{
        TimestampAuthority, canonical_response, check_response, is_canonical, request_der,
        verify_timestamp,
    };

    use super::*;
    use crate::clock::SystemClock;

    const NONCE: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

    fn tsa() -> DevTsa {
        DevTsa::new(Arc::new(SystemClock)).expect("dev TSA")
    }

    fn authority(tsa: &DevTsa) -> Vec<TimestampAuthority> {
        vec![TimestampAuthority {
            chain_der: tsa.chain_der.clone(),
        }]
    }

    #[test]
    fn a_granted_token_is_strict_der_with_sorted_sets_and_verifies() {
        let tsa = tsa();
        let reply = tsa
            .respond(&request_der(b"sig", &NONCE).expect("query"))
            .expect("reply");
        assert!(is_canonical(&reply), "decodes and re-encodes byte for byte");
        assert_eq!(
            check_response(&reply, b"sig", &NONCE).expect("granted"),
            reply
        );
        verify_timestamp(&reply, b"sig", &authority(&tsa)).expect("verifies");
        assert!(verify_timestamp(&reply, b"other", &authority(&tsa)).is_err());

        let signed: SignedData = TimeStampResp::from_der(&reply)
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
        assert_eq!(certs.len(), 2, "the chain, as the query asked for it");
        assert!(certs[0] < certs[1], "in DER order");
        let info = signed.signer_infos.0.iter().next().expect("signer");
        let attrs: Vec<Vec<u8>> = info
            .signed_attrs
            .iter()
            .flat_map(|a| a.iter())
            .map(|a| a.to_der().expect("der"))
            .collect();
        assert_eq!(attrs.len(), 4);
        assert!(attrs.windows(2).all(|w| w[0] < w[1]), "in DER order");
    }

    #[test]
    fn a_reply_with_its_certificates_out_of_order_is_re_encoded_before_it_is_embedded() {
        let tsa = tsa();
        let reply = tsa
            .respond(&request_der(b"sig", &NONCE).expect("query"))
            .expect("reply");
        // What OpenSSL's TSA sends: the same bytes with the certificate set out of DER order.
        let (mut a, mut b) = (tsa.chain_der[0].clone(), tsa.chain_der[1].clone());
        if a > b {
            std::mem::swap(&mut a, &mut b);
        }
        let sorted = [a.clone(), b.clone()].concat();
        let at = reply
            .windows(sorted.len())
            .position(|w| w == sorted.as_slice())
            .expect("the certificate set");
        let unsorted = [&reply[..at], &b, &a, &reply[at + sorted.len()..]].concat();
        assert_ne!(unsorted, reply);
        assert!(!is_canonical(&unsorted), "a SET OF out of order is not DER");

        let embedded = check_response(&unsorted, b"sig", &NONCE).expect("re-encoded");
        assert_eq!(embedded, reply, "canonical DER again, byte for byte");
        assert_eq!(canonical_response(&unsorted).expect("canonical"), reply);
        verify_timestamp(&embedded, b"sig", &authority(&tsa)).expect("and it verifies");
    }

    #[test]
    fn queries_it_cannot_serve_get_a_rejection() {
        let tsa = tsa();
        let status_of = |query: &[u8]| {
            let reply = tsa.respond(query).expect("reply");
            let parsed = TimeStampResp::from_der(&reply).expect("a TimeStampResp");
            assert!(parsed.time_stamp_token.is_none());
            assert!(is_canonical(&reply));
            let text = parsed
                .status
                .status_string
                .iter()
                .flatten()
                .map(|t| t.as_str().to_owned())
                .collect::<String>();
            (parsed.status.status, text)
        };
        let rejected = cmpv2::status::PkiStatus::Rejection;
        let (status, text) = status_of(b"not DER");
        assert_eq!(
            (status, text.starts_with("badDataFormat")),
            (rejected, true)
        );
        let mut request =
            TimeStampReq::from_der(&request_der(b"sig", &NONCE).expect("query")).expect("req");
        request.message_imprint.hash_algorithm.oid = ObjectIdentifier::new_unwrap("1.3.14.3.2.26"); // SHA-1
        let query = request.to_der().expect("der");
        let (status, text) = status_of(&query);
        assert_eq!((status, text.starts_with("badAlg")), (rejected, true));
        assert_eq!(decide(&query).err(), Some(Refusal::BadAlg));
        let refused = check_response(&tsa.respond(&query).expect("reply"), b"sig", &NONCE);
        assert!(
            refused.is_err_and(|e| e.contains("badAlg")),
            "the reason reaches the node"
        );
    }

    #[test]
    fn the_signing_certificate_is_a_time_stamping_certificate() {
        let tsa = tsa();
        let cert = &tsa.signer.tbs_certificate;
        let critical_eku = cert
            .extensions
            .iter()
            .flatten()
            .find(|e| e.extn_id == ObjectIdentifier::new_unwrap("2.5.29.37"))
            .expect("extended key usage");
        assert!(critical_eku.critical);
        let eku = ExtendedKeyUsage::from_der(critical_eku.extn_value.as_bytes()).expect("eku");
        assert_eq!(eku.0, vec![TIME_STAMPING], "timeStamping only");
        for der in &tsa.chain_der {
            let strict = Certificate::from_der(der).and_then(|c| c.to_der());
            assert_eq!(strict.as_ref(), Ok(der), "strict DER");
        }
    }
}
