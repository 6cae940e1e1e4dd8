//! A Fulcio-protocol test CA: `POST /api/v2/signingCert` issues a short-lived leaf for a
//! caller's ephemeral P-256 key, after checking its OIDC identity token (signed by the dev
//! Authority) and its proof of possession (a signature over the token's `sub`). The leaf has
//! the shape independent Sigstore verifiers expect: empty subject, critical SAN (the e-mail),
//! digitalSignature (critical), codeSigning, SKI/AKI, and the OIDC issuer in extension
//! 1.3.6.1.4.1.57264.1.8 as a DER UTF8String. Used by the test suite (and dev set-ups) where
//! the real Fulcio cannot run.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, CustomExtension, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use serde_json::{Value, json};

use super::DevAuthority;
use crate::Error;
use crate::admission::jose;
use crate::clock::Clock;

/// The OIDC issuer extension of Fulcio leaves (v2, DER UTF8String).
pub const ISSUER_V2_OID: [u64; 9] = [1, 3, 6, 1, 4, 1, 57264, 1, 8];
pub const IDENTITY_AUDIENCE: &str = "sigstore";

pub struct DevFulcio {
    ca: CertifiedIssuer<'static, KeyPair>,
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

fn utf8_string(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut der = vec![0x0c];
    if bytes.len() < 128 {
        der.push(bytes.len() as u8);
    } else {
        let len = bytes.len().to_be_bytes();
        let significant: Vec<u8> = len.iter().copied().skip_while(|b| *b == 0).collect();
        der.push(0x80 | significant.len() as u8);
        der.extend(significant);
    }
    der.extend_from_slice(bytes);
    der
}

impl DevFulcio {
    pub fn new(authority: Arc<DevAuthority>, clock: Arc<dyn Clock>) -> Result<DevFulcio, Error> {
        let key = KeyPair::generate().map_err(|e| Error::Key(e.to_string()))?;
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(|e| Error::Key(e.to_string()))?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "stella test fulcio");
        dn.push(DnType::OrganizationName, "Stella Signer tests");
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = clock.now();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(365);
        let ca =
            CertifiedIssuer::self_signed(params, key).map_err(|e| Error::Key(e.to_string()))?;
        Ok(DevFulcio {
            ca,
            authority,
            clock,
        })
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    pub fn ca_der(&self) -> Vec<u8> {
        self.ca.der().to_vec()
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
        let point = spki[spki.len().saturating_sub(65)..].to_vec();
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
        params.custom_extensions = vec![CustomExtension::from_oid_content(
            &ISSUER_V2_OID,
            utf8_string(&issuer),
        )];
        let now = self.clock.now();
        params.not_before = now - time::Duration::seconds(60);
        params.not_after = now + time::Duration::minutes(10);
        let mut serial = [0u8; 16];
        let _ = aws_lc_rs::rand::fill(&mut serial);
        serial[0] &= 0x7f;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let leaf = params
            .signed_by(&EphemeralKey { point }, &self.ca)
            .map_err(|e| (500, e.to_string()))?;
        Ok(
            json!({"signedCertificateEmbeddedSct": {"chain": {"certificates": [leaf.pem(), self.ca.pem()]}}}),
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
