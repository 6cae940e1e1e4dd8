//! Signing core of Stella Signer.
//!
//! Everything here is deterministic byte work plus the key back-ends: DSSE pre-authentication
//! encoding, canonical JSON (RFC 8785), in-toto Statement v1, Sigstore bundle v0.3 and offline
//! verification. There is no network code in this crate and no knowledge of the cluster: the node
//! hands it a request and a [`KeySigner`], and gets bytes back.

pub mod bundle;
pub mod canonical;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod digest;
pub mod dsse;
mod error;
pub mod key;
pub mod note;
pub mod pkcs11;
pub mod statement;
pub mod threshold;
pub mod timestamp;
pub mod verify;

pub use bundle::{BUNDLE_MEDIA_TYPE_V03, Bundle};
pub use dsse::{Envelope, EnvelopeSignature, IN_TOTO_PAYLOAD_TYPE, pae, parse_pae};
pub use error::Error;
pub use key::{
    FileKeySigner, KeyDescriptor, KeySigner, KeySource, PublicKey, SignatureAlgorithm,
    SignedOperation,
};
pub use statement::{PredicateType, Statement, Subject};
pub use verify::{Verified, VerifyFailure};
