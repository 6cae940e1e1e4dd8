//! Signed checkpoints of the audit log: a C2SP tlog-checkpoint body (origin, tree size, base64
//! root) in a C2SP signed note, signed with the log's Ed25519 key.
//!
//! Parsing, key ids and verification come from `signed_note` (a port of Go's
//! `golang.org/x/mod/sumdb/note`); this module adds the log key (aws-lc-rs Ed25519 from a PKCS#8
//! file, like the other file keys), the checkpoint body, and typed failures.

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;

use crate::Error;

/// The signature type byte of Ed25519 note keys.
const ED25519_TYPE: u8 = 0x01;

/// Where the log's Ed25519 private key lives.
enum Backend {
    File(Ed25519KeyPair),
    Pkcs11(crate::pkcs11::Pkcs11Ed25519),
}

/// The log's signing key and the name (origin) it signs under.
pub struct LogKey {
    origin: String,
    backend: Backend,
    public: Vec<u8>,
    key_id: u32,
}

impl std::fmt::Debug for LogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogKey")
            .field("origin", &self.origin)
            .field("key_id", &format_args!("{:08x}", self.key_id))
            .finish_non_exhaustive()
    }
}

impl LogKey {
    /// A key from PKCS#8 PEM (`openssl genpkey -algorithm ed25519`).
    pub fn from_pkcs8_pem(origin: &str, pem: &str) -> Result<LogKey, Error> {
        check_origin(origin)?;
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| Error::Key(format!("log key: {e}")))?;
        let pair = Ed25519KeyPair::from_pkcs8(der.secret_pkcs8_der())
            .or_else(|_| Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der()))
            .map_err(|e| Error::Key(format!("log key is not an Ed25519 PKCS#8 key: {e}")))?;
        let public = pair.public_key().as_ref().to_vec();
        Ok(LogKey::with(origin, Backend::File(pair), public))
    }

    /// A non-extractable key on a PKCS#11 token (`CKM_EDDSA`; generated there with `create`).
    pub fn from_pkcs11(
        origin: &str,
        config: &crate::pkcs11::Pkcs11Config,
        create: bool,
    ) -> Result<LogKey, Error> {
        check_origin(origin)?;
        let key = crate::pkcs11::Pkcs11Ed25519::open(config, create)?;
        let public = key.public_key().to_vec();
        Ok(LogKey::with(origin, Backend::Pkcs11(key), public))
    }

    fn with(origin: &str, backend: Backend, public: Vec<u8>) -> LogKey {
        LogKey {
            origin: origin.to_owned(),
            key_id: signed_note::key_id(origin, &typed_public(&public)),
            backend,
            public,
        }
    }

    /// A new key as PKCS#8 PEM.
    pub fn generate_pkcs8_pem() -> Result<String, Error> {
        let pair = Ed25519KeyPair::generate().map_err(|_| Error::Key("generating".into()))?;
        let doc = pair
            .to_pkcs8()
            .map_err(|_| Error::Key("encoding the log key".into()))?;
        Ok(crate::key::pem_encode("PRIVATE KEY", doc.as_ref()))
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The raw 32-byte Ed25519 public key.
    pub fn public_key(&self) -> &[u8] {
        &self.public
    }

    /// The public key as a note verifier key: `<origin>+<key id hex>+<base64(0x01 ‖ key)>`,
    /// what Go's `note.NewVerifier` and `stella audit` take.
    pub fn verifier_key(&self) -> String {
        format!(
            "{}+{:08x}+{}",
            self.origin,
            self.key_id,
            STANDARD.encode(typed_public(self.public_key()))
        )
    }

    /// The signed note of the checkpoint of a tree of `size` leaves with root `root`.
    pub fn sign_checkpoint(&self, size: u64, root: &[u8; 32]) -> Result<String, Error> {
        let body = checkpoint_body(&self.origin, size, root);
        let mut note = signed_note::Note::new(body.as_bytes(), &[])
            .map_err(|e| Error::Signing(format!("checkpoint note: {e}")))?;
        note.add_sigs(&[self])
            .map_err(|e| Error::Signing(format!("checkpoint note: {e}")))?;
        String::from_utf8(note.to_bytes())
            .map_err(|_| Error::Signing("checkpoint note is not UTF-8".into()))
    }
}

impl signed_note::Signer for LogKey {
    fn name(&self) -> &str {
        &self.origin
    }

    fn key_id(&self) -> u32 {
        self.key_id
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        match &self.backend {
            Backend::File(pair) => Ok(pair.sign(msg).as_ref().to_vec()),
            Backend::Pkcs11(key) => key.sign(msg).map_err(signature::Error::from_source),
        }
    }
}

fn check_origin(origin: &str) -> Result<(), Error> {
    if signed_note::is_key_name_valid(origin) {
        Ok(())
    } else {
        Err(Error::Key(format!(
            "`{origin}` is not a valid log origin (non-empty, no spaces, no `+`)"
        )))
    }
}

fn typed_public(key: &[u8]) -> Vec<u8> {
    let mut typed = Vec::with_capacity(1 + key.len());
    typed.push(ED25519_TYPE);
    typed.extend_from_slice(key);
    typed
}

/// The checkpoint body: `<origin>\n<size>\n<base64 root>\n`.
pub fn checkpoint_body(origin: &str, size: u64, root: &[u8; 32]) -> String {
    format!("{origin}\n{size}\n{}\n", STANDARD.encode(root))
}

/// A checkpoint whose note signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: [u8; 32],
}

/// Why a checkpoint was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("not a verifier key: {0}")]
    BadVerifierKey(String),
    #[error("the note is malformed: {0}")]
    Malformed(String),
    #[error("the note is not signed by the log key {0}")]
    NotSigned(String),
    #[error("the checkpoint body is malformed: {0}")]
    BadBody(String),
    #[error("the checkpoint is for origin `{found}`, not `{expected}`")]
    WrongOrigin { expected: String, found: String },
}

/// Verifies `note` with the log's verifier key and parses its checkpoint body. The origin line
/// must be the key's name, as C2SP tlog-checkpoint requires.
pub fn open_checkpoint(note: &str, verifier_key: &str) -> Result<Checkpoint, CheckpointError> {
    let verifier = NoteVerifier::new(verifier_key)?;
    let parsed = signed_note::Note::from_bytes(note.as_bytes())
        .map_err(|e| CheckpointError::Malformed(e.to_string()))?;
    parsed
        .verify(&signed_note::VerifierList::new(vec![Box::new(
            verifier.clone(),
        )]))
        .map_err(|e| CheckpointError::NotSigned(format!("{} ({e})", verifier.name)))?;
    let text = std::str::from_utf8(parsed.text())
        .map_err(|_| CheckpointError::BadBody("not UTF-8".into()))?;
    let mut lines = text.split('\n');
    let origin = lines.next().unwrap_or_default().to_owned();
    if origin != verifier.name {
        return Err(CheckpointError::WrongOrigin {
            expected: verifier.name,
            found: origin,
        });
    }
    let size = lines
        .next()
        .filter(|s| canonical_decimal(s))
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| CheckpointError::BadBody("the size is not a decimal number".into()))?;
    let root: [u8; 32] = lines
        .next()
        .and_then(|r| STANDARD.decode(r).ok())
        .and_then(|r| r.try_into().ok())
        .ok_or_else(|| CheckpointError::BadBody("the root is not 32 bytes of base64".into()))?;
    Ok(Checkpoint { origin, size, root })
}

/// Digits only, no sign, no leading zero (but "0").
fn canonical_decimal(s: &str) -> bool {
    s == "0" || (!s.is_empty() && !s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit()))
}

/// An Ed25519 note verifier over aws-lc-rs.
#[derive(Clone)]
struct NoteVerifier {
    name: String,
    key_id: u32,
    key: Vec<u8>,
}

impl NoteVerifier {
    fn new(vkey: &str) -> Result<NoteVerifier, CheckpointError> {
        let bad = |why: &str| CheckpointError::BadVerifierKey(format!("{why}: `{vkey}`"));
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected name+id+key"));
        };
        if !signed_note::is_key_name_valid(name) || id.len() != 8 {
            return Err(bad("bad name or key id"));
        }
        let key_id = u32::from_str_radix(id, 16).map_err(|_| bad("bad key id"))?;
        let typed = STANDARD.decode(key).map_err(|_| bad("bad base64"))?;
        if typed.len() != 33 || typed[0] != ED25519_TYPE {
            return Err(bad("not an Ed25519 key"));
        }
        if signed_note::key_id(name, &typed) != key_id {
            return Err(bad("the key id does not match the key"));
        }
        Ok(NoteVerifier {
            name: name.to_owned(),
            key_id,
            key: typed[1..].to_vec(),
        })
    }
}

impl signed_note::Verifier for NoteVerifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn key_id(&self) -> u32 {
        self.key_id
    }

    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.key)
            .verify(msg, sig)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> LogKey {
        let pem = LogKey::generate_pkcs8_pem().expect("generate");
        LogKey::from_pkcs8_pem("stella.test/log", &pem).expect("load")
    }

    #[test]
    fn a_signed_checkpoint_opens_with_its_verifier_key_only() {
        let key = key();
        let root = [7u8; 32];
        let note = key.sign_checkpoint(42, &root).expect("sign");
        assert!(note.starts_with("stella.test/log\n42\n"));
        assert!(note.contains("\n\n— stella.test/log "));
        let opened = open_checkpoint(&note, &key.verifier_key()).expect("open");
        assert_eq!(opened.size, 42);
        assert_eq!(opened.root, root);

        let tampered = note.replacen("\n42\n", "\n43\n", 1);
        assert!(matches!(
            open_checkpoint(&tampered, &key.verifier_key()),
            Err(CheckpointError::NotSigned(_))
        ));
        let other = self::key();
        assert!(matches!(
            open_checkpoint(&note, &other.verifier_key()),
            Err(CheckpointError::NotSigned(_))
        ));
        assert!(matches!(
            open_checkpoint(&note, "stella.test/log+00000000+AAAA"),
            Err(CheckpointError::BadVerifierKey(_))
        ));
    }

    #[test]
    fn the_golden_note_key_id_follows_the_spec() {
        // The spec's example key (c2sp.org/signed-note): PeterNeumann+c74f20a3+ON... .
        let vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
        let verifier = NoteVerifier::new(vkey).expect("the spec's key parses");
        assert_eq!(verifier.key_id, 0xc74f20a3);
    }
}
