//! A PKCS#11 (HSM) key back-end behind [`KeySigner`]: a non-extractable P-256 key on a token,
//! found by label (or generated there), used through a pool of sessions.
//!
//! Byte contract as for the file key: `sign(message)` hashes the message with SHA-256 in
//! software and has the token sign the digest with `CKM_ECDSA` (SoftHSM lacks
//! `CKM_ECDSA_SHA256`); the token's raw `r ‖ s` is returned DER-encoded, like aws-lc's.
//! One PKCS#11 context per module per process (the standard allows one `C_Initialize`).
//! Sessions are `Send` but not `Sync`: each signing takes one from the pool and returns it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use crate::Error;
use crate::digest::sha256;
use crate::key::{
    KeyDescriptor, KeySigner, KeySource, PublicKey, SignatureAlgorithm, SignedOperation,
};

/// DER of the named curve prime256v1 (CKA_EC_PARAMS).
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// SubjectPublicKeyInfo prefix for an uncompressed P-256 point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

#[derive(Clone)]
pub struct Pkcs11Config {
    /// The PKCS#11 module, e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    pub token_label: String,
    /// The user PIN: wiped from memory when dropped, never printed (`Debug` redacts it).
    pub pin: zeroize::Zeroizing<String>,
    pub key_label: String,
    /// Sessions kept open for signing; concurrent signings beyond it wait for one.
    pub max_sessions: usize,
}

impl std::fmt::Debug for Pkcs11Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Config")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("pin", &"<redacted>")
            .field("key_label", &self.key_label)
            .field("max_sessions", &self.max_sessions)
            .finish()
    }
}

pub struct Pkcs11KeySigner {
    context: Arc<Pkcs11>,
    slot: Slot,
    key: ObjectHandle,
    descriptor: KeyDescriptor,
    pool: Mutex<Vec<Session>>,
    available: std::sync::Condvar,
    opened: Mutex<usize>,
    max_sessions: usize,
}

fn err(context: &str) -> impl Fn(cryptoki::error::Error) -> Error + '_ {
    move |e| Error::Key(format!("PKCS#11 {context}: {e}"))
}

/// The process's context for `module`, initialized once.
fn context(module: &Path) -> Result<Arc<Pkcs11>, Error> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Arc<Pkcs11>>>> = OnceLock::new();
    let mut contexts = CONTEXTS
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(context) = contexts.get(module) {
        return Ok(context.clone());
    }
    let context = Pkcs11::new(module).map_err(err("loading the module"))?;
    context
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(err("C_Initialize"))?;
    let context = Arc::new(context);
    contexts.insert(module.to_owned(), context.clone());
    Ok(context)
}

impl Pkcs11KeySigner {
    /// Opens the key `key_label` on the token `token_label`; with `create`, generates it there
    /// (non-extractable, sensitive) when it does not exist yet.
    pub fn open(config: &Pkcs11Config, create: bool) -> Result<Pkcs11KeySigner, Error> {
        let (context, slot, session) = logged_in(config)?;
        let (public, private) = find_or_generate(&session, config, create, &P256)?;
        let public_key = public_key_of(&session, public)?;
        let descriptor = KeyDescriptor {
            key_id: public_key.key_id(),
            algorithm: SignatureAlgorithm::EcdsaP256Sha256,
            source: KeySource::Pkcs11,
            public_key,
        };
        Ok(Pkcs11KeySigner {
            context,
            slot,
            key: private,
            descriptor,
            pool: Mutex::new(vec![session]),
            available: std::sync::Condvar::new(),
            opened: Mutex::new(1),
            max_sessions: config.max_sessions.max(1),
        })
    }

    /// A session from the pool, a new one while under the limit, or the next one returned.
    fn take_session(&self) -> Result<Session, Error> {
        let mut pool = self
            .pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            if let Some(session) = pool.pop() {
                return Ok(session);
            }
            let mut opened = self
                .opened
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *opened < self.max_sessions {
                *opened += 1;
                drop(opened);
                drop(pool);
                // The user is logged in on the token for every session of this application.
                return self.context.open_ro_session(self.slot).map_err(|e| {
                    if let Ok(mut opened) = self.opened.lock() {
                        *opened -= 1;
                    }
                    err("opening a session")(e)
                });
            }
            drop(opened);
            let (next, timeout) = self
                .available
                .wait_timeout(pool, std::time::Duration::from_secs(10))
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            pool = next;
            if timeout.timed_out() && pool.is_empty() {
                return Err(Error::Signing(
                    "no PKCS#11 session became free within 10 s".into(),
                ));
            }
        }
    }

    fn give_back(&self, session: Session) {
        self.pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(session);
        self.available.notify_one();
    }

    /// A session that failed is closed rather than pooled (the token may be gone).
    fn discard(&self, session: Session) {
        drop(session);
        if let Ok(mut opened) = self.opened.lock() {
            *opened = opened.saturating_sub(1);
        }
        self.available.notify_one();
    }
}

/// Reads CKA_EC_POINT (a DER OCTET STRING around the uncompressed point) into an SPKI key.
/// A logged-in read-write session on the token labelled `config.token_label`.
fn logged_in(config: &Pkcs11Config) -> Result<(Arc<Pkcs11>, Slot, Session), Error> {
    let context = context(&config.module)?;
    let slot = context
        .get_slots_with_initialized_token()
        .map_err(err("listing slots"))?
        .into_iter()
        .find(|slot| {
            context
                .get_token_info(*slot)
                .is_ok_and(|info| info.label() == config.token_label)
        })
        .ok_or_else(|| {
            Error::Key(format!(
                "no PKCS#11 token labelled `{}`",
                config.token_label
            ))
        })?;
    let session = context
        .open_rw_session(slot)
        .map_err(err("opening a session"))?;
    let pin = AuthPin::new(config.pin.as_str().into());
    match session.login(UserType::User, Some(&pin)) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {
        }
        Err(e) => return Err(err("login")(e)),
    }
    Ok((context, slot, session))
}

/// What kind of key pair a back-end keeps on the token.
struct KeyKind {
    name: &'static str,
    key_type: KeyType,
    generate: Mechanism<'static>,
    /// CKA_EC_PARAMS: the curve's DER OID.
    params: &'static [u8],
}

const P256: KeyKind = KeyKind {
    name: "P-256",
    key_type: KeyType::EC,
    generate: Mechanism::EccKeyPairGen,
    params: &P256_PARAMS,
};

const ED25519: KeyKind = KeyKind {
    name: "Ed25519",
    key_type: KeyType::EC_EDWARDS,
    generate: Mechanism::EccEdwardsKeyPairGen,
    params: &ED25519_PARAMS,
};

/// The (public, private) pair of `kind` labelled `config.key_label`; with `create`, generated on
/// the token (sensitive, non-extractable) when it does not exist yet.
fn find_or_generate(
    session: &Session,
    config: &Pkcs11Config,
    create: bool,
    kind: &KeyKind,
) -> Result<(ObjectHandle, ObjectHandle), Error> {
    let label = config.key_label.as_bytes().to_vec();
    let find = |class| {
        session
            .find_objects(&[
                Attribute::Class(class),
                Attribute::KeyType(kind.key_type),
                Attribute::Label(label.clone()),
            ])
            .map_err(err("finding the key"))
    };
    match (
        find(ObjectClass::PUBLIC_KEY)?.first(),
        find(ObjectClass::PRIVATE_KEY)?.first(),
    ) {
        (Some(public), Some(private)) => Ok((*public, *private)),
        _ if create => session
            .generate_key_pair(
                &kind.generate,
                &[
                    Attribute::Token(true),
                    Attribute::EcParams(kind.params.to_vec()),
                    Attribute::Label(label.clone()),
                    Attribute::Verify(true),
                ],
                &[
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Sign(true),
                    Attribute::KeyType(kind.key_type),
                    Attribute::Label(label.clone()),
                ],
            )
            .map_err(err("generating the key")),
        _ => Err(Error::Key(format!(
            "no {} key labelled `{}` on token `{}`",
            kind.name, config.key_label, config.token_label
        ))),
    }
}

/// DER of the Ed25519 curve OID 1.3.101.112 (CKA_EC_PARAMS of an Edwards key).
const ED25519_PARAMS: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];

/// A non-extractable Ed25519 key on a token (`CKM_EDDSA`), for the audit log's checkpoint notes:
/// signing is rare (a checkpoint a second at most), so one session serves it.
pub struct Pkcs11Ed25519 {
    // Keeps the module's context alive as long as the session.
    _context: Arc<Pkcs11>,
    session: Mutex<Session>,
    key: ObjectHandle,
    public: [u8; 32],
}

impl Pkcs11Ed25519 {
    /// The key labelled `config.key_label` (generated on the token when absent and `create`).
    pub fn open(config: &Pkcs11Config, create: bool) -> Result<Pkcs11Ed25519, Error> {
        let (context, _slot, session) = logged_in(config)?;
        let (public, private) = find_or_generate(&session, config, create, &ED25519)?;
        let point = session
            .get_attributes(public, &[AttributeType::EcPoint])
            .map_err(err("reading the public key"))?
            .into_iter()
            .find_map(|a| match a {
                Attribute::EcPoint(p) => Some(p),
                _ => None,
            })
            .ok_or_else(|| Error::Key("the token returned no EC point".into()))?;
        // CKA_EC_POINT is the DER OCTET STRING of the 32-byte key (some tokens give it raw).
        let raw = match point.as_slice() {
            [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest,
            raw if raw.len() == 32 => raw,
            _ => return Err(Error::Key("the token's key is not an Ed25519 key".into())),
        };
        let mut public_key = [0u8; 32];
        public_key.copy_from_slice(raw);
        Ok(Pkcs11Ed25519 {
            _context: context,
            session: Mutex::new(session),
            key: private,
            public: public_key,
        })
    }

    pub fn public_key(&self) -> &[u8; 32] {
        &self.public
    }

    /// A pure Ed25519 signature over `message`.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        let session = self
            .session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        session
            .sign(
                &Mechanism::Eddsa(cryptoki::mechanism::eddsa::EddsaParams::new(
                    cryptoki::mechanism::eddsa::EddsaSignatureScheme::Pure,
                )),
                self.key,
                message,
            )
            .map_err(err("signing"))
    }
}

fn public_key_of(session: &Session, public: ObjectHandle) -> Result<PublicKey, Error> {
    let attributes = session
        .get_attributes(public, &[AttributeType::EcPoint])
        .map_err(err("reading the public key"))?;
    let point = attributes
        .into_iter()
        .find_map(|a| match a {
            Attribute::EcPoint(p) => Some(p),
            _ => None,
        })
        .ok_or_else(|| Error::Key("the token returned no EC point".into()))?;
    let point = match point.as_slice() {
        [0x04, 0x41, rest @ ..] if rest.len() == 65 => rest.to_vec(),
        raw if raw.len() == 65 && raw[0] == 0x04 => raw.to_vec(),
        _ => {
            return Err(Error::Key(
                "the token's EC point is not an uncompressed P-256 point".into(),
            ));
        }
    };
    let mut spki = P256_SPKI_PREFIX.to_vec();
    spki.extend_from_slice(&point);
    PublicKey::from_spki_der(&spki)
}

/// DER `SEQUENCE { INTEGER r, INTEGER s }` from the raw 64-byte `r ‖ s`.
pub fn raw_to_der(raw: &[u8]) -> Result<Vec<u8>, Error> {
    if raw.len() != 64 {
        return Err(Error::Signing(format!(
            "expected a 64-byte r||s signature, got {} bytes",
            raw.len()
        )));
    }
    let integer = |bytes: &[u8]| {
        let start = bytes
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(bytes.len() - 1);
        let trimmed = &bytes[start..];
        let mut out = vec![0x02];
        if trimmed[0] & 0x80 != 0 {
            out.push((trimmed.len() + 1) as u8);
            out.push(0);
        } else {
            out.push(trimmed.len() as u8);
        }
        out.extend_from_slice(trimmed);
        out
    };
    let (r, s) = raw.split_at(32);
    let body = [integer(r), integer(s)].concat();
    let mut der = vec![0x30, body.len() as u8];
    der.extend(body);
    Ok(der)
}

impl KeySigner for Pkcs11KeySigner {
    fn descriptor(&self) -> &KeyDescriptor {
        &self.descriptor
    }

    fn sign(&self, message: &[u8]) -> Result<SignedOperation, Error> {
        let digest = sha256(message);
        let session = self.take_session()?;
        let raw = match session.sign(&Mechanism::Ecdsa, self.key, &digest) {
            Ok(raw) => {
                self.give_back(session);
                raw
            }
            Err(e) => {
                self.discard(session);
                return Err(Error::Signing(format!("PKCS#11 C_Sign: {e}")));
            }
        };
        Ok(SignedOperation {
            key_id: self.descriptor.key_id.clone(),
            algorithm: self.descriptor.algorithm,
            signature: raw_to_der(&raw)?,
            public_key: self.descriptor.public_key.clone(),
            certificate_chain_der: Vec::new(),
            timestamps: Vec::new(),
            remarks: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_signatures_become_der_integers_with_sign_padding() {
        let mut raw = [0u8; 64];
        raw[0] = 0x80; // r needs a leading zero
        raw[63] = 0x01; // s is tiny
        let der = raw_to_der(&raw).expect("der");
        assert_eq!(der[0], 0x30);
        assert_eq!(&der[2..5], &[0x02, 33, 0x00]);
        assert_eq!(&der[der.len() - 3..], &[0x02, 1, 0x01]);
        assert!(raw_to_der(&[0u8; 63]).is_err());
    }
}
