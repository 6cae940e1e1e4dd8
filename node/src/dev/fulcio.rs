//! A Fulcio-protocol test CA: `POST /api/v2/signingCert` issues a short-lived leaf for a
//! caller's ephemeral P-256 key, after checking its OIDC identity token (signed by the dev
//! Authority) and its proof of possession (a signature over the token's `sub`).
//!
//! The leaf carries what a leaf of Sigstore's public-good Fulcio carries (checked against
//! production leaves: `docs/offline-verification.md`): empty subject; key usage
//! digitalSignature (critical); extended key usage codeSigning; subject key identifier;
//! authority key identifier (the CA's subject key identifier); the identity as a critical
//! subject alternative name; the OIDC issuer in extension 1.3.6.1.4.1.57264.1.8 as a DER
//! UTF8String and in the deprecated raw form 1.3.6.1.4.1.57264.1.1. Like Fulcio's leaves it has
//! no basic constraints extension (Fulcio's Go template leaves them out; RFC 5280 §4.2.1.9
//! makes them optional in end-entity certificates). Unlike them it has no embedded SCT: there
//! is no certificate transparency log here (verifiers run with `ctlogThreshold: 0`).
//!
//! A stand-in, never Sigstore's Fulcio: used by the test suite and by `serve --dev` only.

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use der::Encode;
use der::asn1::{OctetString, Utf8StringRef};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use serde_json::{Value, json};
use x509_cert::ext::pkix::SubjectKeyIdentifier;

use super::DevAuthority;
use crate::Error;
use crate::admission::jose;
use crate::clock::Clock;

/// The OIDC issuer extension of Fulcio leaves (v2, DER UTF8String).
pub const ISSUER_V2_OID: [u64; 9] = [1, 3, 6, 1, 4, 1, 57264, 1, 8];
/// The deprecated issuer extension (v1, the raw string), which Fulcio still writes.
pub const ISSUER_V1_OID: [u64; 9] = [1, 3, 6, 1, 4, 1, 57264, 1, 1];
const SUBJECT_KEY_IDENTIFIER_OID: [u64; 4] = [2, 5, 29, 14];
pub const IDENTITY_AUDIENCE: &str = "sigstore";

pub struct DevFulcio {
    ca: Issuer<'static, KeyPair>,
    ca_pem: String,
    authority: Arc<DevAuthority>,
    clock: Arc<dyn Clock>,
}

/// The ephemeral key as rcgen needs it to sign a certificate it does not hold the key of.
struct EphemeralKey {
    point: Vec<u8>,
}

impl rcgen::PublicKeyData for EphemeralKey {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

/// The CA's own certificate parameters. Its name is all a leaf's issuer field takes from it,
/// so a CA kept on disk (key and certificate) signs again from these after a restart.
fn ca_params() -> Result<CertificateParams, Error> {
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| Error::Key(e.to_string()))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "stella dev fulcio");
    dn.push(DnType::OrganizationName, "Stella Signer dev stand-in");
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

impl DevFulcio {
    /// A fresh CA (the test suite's stand-in).
    pub fn new(authority: Arc<DevAuthority>, clock: Arc<dyn Clock>) -> Result<DevFulcio, Error> {
        let (key_pem, ca_pem) = Self::create_ca(clock.as_ref())?;
        Self::with_ca(&key_pem, &ca_pem, authority, clock)
    }

    /// The CA kept in `dir` (`fulcio-ca-key.pem`, `fulcio-ca.pem`), created on first use: a
    /// dev node's CA outlives restarts, so its trust root and the bundles it signed stay valid.
    pub fn load_or_create(
        dir: &Path,
        authority: Arc<DevAuthority>,
        clock: Arc<dyn Clock>,
    ) -> Result<DevFulcio, Error> {
        let (key_pem, ca_pem) = super::kept_pair(
            &dir.join("fulcio-ca-key.pem"),
            &dir.join(super::FULCIO_CA_FILE),
            || Self::create_ca(clock.as_ref()),
        )?;
        Self::with_ca(&key_pem, &ca_pem, authority, clock)
    }

    /// A new CA key and its self-signed certificate (ten years), both PEM.
    fn create_ca(clock: &dyn Clock) -> Result<(String, String), Error> {
        let key = KeyPair::generate().map_err(|e| Error::Key(e.to_string()))?;
        let mut params = ca_params()?;
        let now = clock.now();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(3650);
        let cert = params
            .self_signed(&key)
            .map_err(|e| Error::Key(e.to_string()))?;
        Ok((key.serialize_pem(), cert.pem()))
    }

    fn with_ca(
        key_pem: &str,
        ca_pem: &str,
        authority: Arc<DevAuthority>,
        clock: Arc<dyn Clock>,
    ) -> Result<DevFulcio, Error> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| Error::Key(format!("dev Fulcio: {e}")))?;
        Ok(DevFulcio {
            ca: Issuer::new(ca_params()?, key),
            ca_pem: ca_pem.to_owned(),
            authority,
            clock,
        })
    }

    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// The `signingCert` call; errors are (HTTP status, message).
    pub fn signing_cert(&self, request: &Value) -> Result<Value, (u16, String)> {
        let bad = |m: &str| (400u16, m.to_owned());
        let token = request
            .pointer("/credentials/oidcIdentityToken")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("credentials.oidcIdentityToken is required"))?;
        let claims = self.verify_identity(token).map_err(|m| (401, m))?;
        let subject = claims["sub"].as_str().unwrap_or_default().to_owned();
        let email = claims["email"].as_str().unwrap_or(&subject).to_owned();
        let issuer = claims["iss"].as_str().unwrap_or_default().to_owned();
        let pem = request
            .pointer("/publicKeyRequest/publicKey/content")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("publicKeyRequest.publicKey.content is required"))?;
        let public_key = stella_signer::PublicKey::from_pem(pem)
            .map_err(|e| bad(&format!("public key: {e}")))?;
        let pop = request
            .pointer("/publicKeyRequest/proofOfPossession")
            .and_then(Value::as_str)
            .and_then(|p| STANDARD.decode(p).ok())
            .ok_or_else(|| bad("publicKeyRequest.proofOfPossession is required"))?;
        if !public_key.verify(subject.as_bytes(), &pop) {
            return Err((400, "the proof of possession does not verify".into()));
        }
        let spki = public_key.spki_der();
        let key = EphemeralKey {
            point: spki[spki.len().saturating_sub(65)..].to_vec(),
        };
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(|e| (500, e.to_string()))?;
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::Rfc822Name(
            email
                .clone()
                .try_into()
                .map_err(|_| bad("the identity is not an e-mail address"))?,
        )];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        params.use_authority_key_identifier_extension = true;
        params.custom_extensions =
            leaf_extensions(&params.key_identifier(&key), &issuer).map_err(|e| (500, e))?;
        let now = self.clock.now();
        params.not_before = now - time::Duration::seconds(60);
        params.not_after = now + time::Duration::minutes(10);
        let mut serial = [0u8; 16];
        let _ = aws_lc_rs::rand::fill(&mut serial);
        serial[0] &= 0x7f;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let leaf = params
            .signed_by(&key, &self.ca)
            .map_err(|e| (500, e.to_string()))?;
        Ok(
            json!({"signedCertificateEmbeddedSct": {"chain": {"certificates": [leaf.pem(), self.ca_pem]}}}),
        )
    }

    /// The identity token's claims, if the dev Authority signed it for audience `sigstore`.
    fn verify_identity(&self, token: &str) -> Result<Value, String> {
        let header = jose::header(token).map_err(|e| e.to_string())?;
        let kid = header.kid.clone().ok_or("the identity token has no kid")?;
        let jwks = self.authority.jwks();
        let jwk: jsonwebtoken::jwk::Jwk = jwks["keys"]
            .as_array()
            .and_then(|keys| keys.iter().find(|k| k["kid"] == kid.as_str()))
            .and_then(|k| serde_json::from_value(k.clone()).ok())
            .ok_or("unknown identity token key")?;
        let claims = jose::verify(token, &header, &jwk).map_err(|e| e.to_string())?;
        let now = self.clock.now().unix_timestamp();
        let audience_ok = match &claims["aud"] {
            Value::String(a) => a == IDENTITY_AUDIENCE,
            Value::Array(all) => all.iter().any(|a| a == IDENTITY_AUDIENCE),
            _ => false,
        };
        if !audience_ok || claims["iss"] != self.authority.issuer() {
            return Err("identity token for another audience or issuer".into());
        }
        if claims["exp"].as_i64().is_none_or(|exp| exp <= now) {
            return Err("the identity token expired".into());
        }
        if claims["sub"].as_str().is_none_or(str::is_empty) {
            return Err("the identity token has no subject".into());
        }
        Ok(claims)
    }
}

/// The leaf's extensions rcgen has no field for: the subject key identifier (rcgen writes one
/// only together with basic constraints, which Fulcio's leaves do not have) and the two OIDC
/// issuer extensions — encoded by `der`, not by hand.
fn leaf_extensions(key_id: &[u8], issuer: &str) -> Result<Vec<CustomExtension>, String> {
    let der_error = |e: der::Error| e.to_string();
    let ski = SubjectKeyIdentifier(OctetString::new(key_id).map_err(der_error)?)
        .to_der()
        .map_err(der_error)?;
    let issuer_v2 = Utf8StringRef::new(issuer)
        .and_then(|s| s.to_der())
        .map_err(der_error)?;
    Ok(vec![
        CustomExtension::from_oid_content(&SUBJECT_KEY_IDENTIFIER_OID, ski),
        CustomExtension::from_oid_content(&ISSUER_V1_OID, issuer.as_bytes().to_vec()),
        CustomExtension::from_oid_content(&ISSUER_V2_OID, issuer_v2),
    ])
}

#[cfg(test)]
mod tests {
    use der::Decode;
    use stella_signer::{FileKeySigner, KeySigner};
    use x509_cert::Certificate;
    use x509_cert::ext::pkix::{AuthorityKeyIdentifier, SubjectKeyIdentifier};

    use super::*;
    use crate::clock::SystemClock;

    const ISSUER: &str = "https://authority.test";
    const WHO: &str = "someone@stella.test";

    fn certificate(fulcio: &DevFulcio, authority: &DevAuthority) -> Vec<Vec<u8>> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let token = authority
            .mint(&json!({"iss": ISSUER, "sub": WHO, "email": WHO, "aud": IDENTITY_AUDIENCE, "exp": now + 600}))
            .expect("token");
        let key = FileKeySigner::generate().expect("key");
        let proof = key.sign(WHO.as_bytes()).expect("proof").signature;
        let answer = fulcio
            .signing_cert(&json!({
                "credentials": {"oidcIdentityToken": token},
                "publicKeyRequest": {
                    "publicKey": {"algorithm": "ECDSA", "content": key.public_key().to_pem()},
                    "proofOfPossession": STANDARD.encode(proof),
                }
            }))
            .expect("a certificate");
        crate::keyless::chain_of_fulcio_answer(&serde_json::to_vec(&answer).expect("json"))
            .expect("chain")
    }

    /// The extensions of a DER certificate: (OID, critical, value).
    fn extensions(cert: &Certificate) -> Vec<(String, bool, Vec<u8>)> {
        cert.tbs_certificate
            .extensions
            .iter()
            .flatten()
            .map(|e| {
                (
                    e.extn_id.to_string(),
                    e.critical,
                    e.extn_value.as_bytes().to_vec(),
                )
            })
            .collect()
    }

    #[test]
    fn the_leaf_carries_what_a_fulcio_leaf_carries_in_strict_der() {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let key = FileKeySigner::generate().expect("key").to_pkcs8_pem();
        let authority = Arc::new(
            DevAuthority::new(ISSUER, &key, Vec::new(), clock.clone()).expect("authority"),
        );
        let fulcio = DevFulcio::new(authority.clone(), clock).expect("fulcio");
        let chain = certificate(&fulcio, &authority);
        assert_eq!(chain.len(), 2);
        let (leaf, ca) = (
            Certificate::from_der(&chain[0]).expect("leaf"),
            Certificate::from_der(&chain[1]).expect("ca"),
        );
        for (cert, der) in [(&leaf, &chain[0]), (&ca, &chain[1])] {
            assert_eq!(
                &cert.to_der().expect("der"),
                der,
                "re-encodes byte for byte"
            );
        }
        let mut found = extensions(&leaf);
        found.sort();
        let oids: Vec<(&str, bool)> = found.iter().map(|(o, c, _)| (o.as_str(), *c)).collect();
        // As Sigstore's Fulcio writes them (less the SCT list: no CT log here).
        assert_eq!(
            oids,
            vec![
                ("1.3.6.1.4.1.57264.1.1", false),
                ("1.3.6.1.4.1.57264.1.8", false),
                ("2.5.29.14", false), // subject key identifier
                ("2.5.29.15", true),  // key usage
                ("2.5.29.17", true),  // subject alternative name
                ("2.5.29.35", false), // authority key identifier
                ("2.5.29.37", false), // extended key usage
            ]
        );
        let value = |oid: &str| {
            found
                .iter()
                .find(|(o, _, _)| o == oid)
                .map(|(_, _, v)| v.clone())
                .expect("extension")
        };
        let ski = SubjectKeyIdentifier::from_der(&value("2.5.29.14")).expect("ski");
        assert_eq!(ski.0.as_bytes().len(), 20);
        let aki = AuthorityKeyIdentifier::from_der(&value("2.5.29.35")).expect("aki");
        let ca_ski = extensions(&ca)
            .into_iter()
            .find(|(o, _, _)| o == "2.5.29.14")
            .map(|(_, _, v)| SubjectKeyIdentifier::from_der(&v).expect("ca ski"))
            .expect("the CA's subject key identifier");
        assert_eq!(aki.key_identifier, Some(ca_ski.0), "AKI names the CA's key");
        assert_eq!(value("1.3.6.1.4.1.57264.1.1"), ISSUER.as_bytes());
        assert_eq!(
            Utf8StringRef::from_der(&value("1.3.6.1.4.1.57264.1.8"))
                .expect("utf8")
                .as_str(),
            ISSUER
        );
        assert!(leaf.tbs_certificate.subject.0.is_empty(), "empty subject");
    }

    #[test]
    fn a_kept_ca_signs_leaves_that_chain_to_the_certificate_on_disk() {
        let dir = tempfile::tempdir().expect("tmp");
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let key = FileKeySigner::generate().expect("key").to_pkcs8_pem();
        let authority = Arc::new(
            DevAuthority::new(ISSUER, &key, Vec::new(), clock.clone()).expect("authority"),
        );
        let first = DevFulcio::load_or_create(dir.path(), authority.clone(), clock.clone())
            .expect("created");
        let again =
            DevFulcio::load_or_create(dir.path(), authority.clone(), clock).expect("loaded");
        assert_eq!(
            first.ca_pem(),
            again.ca_pem(),
            "the same CA after a restart"
        );
        let chain = certificate(&again, &authority);
        let on_disk = std::fs::read_to_string(dir.path().join(super::super::FULCIO_CA_FILE))
            .expect("the CA on disk");
        assert_eq!(on_disk, first.ca_pem());
        stella_signer::timestamp::verify_leaf(
            &chain[0],
            &[vec![chain[1].clone()]],
            time::OffsetDateTime::now_utc(),
            &stella_signer::timestamp::IdentityPolicy {
                identity: WHO.into(),
                oidc_issuer: ISSUER.into(),
            },
        )
        .expect("chains to the kept CA for code signing");
    }
}
