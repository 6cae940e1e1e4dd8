//! Canonical JSON (RFC 8785, JCS). Everything the signer hashes or signs is serialized here, so
//! the same statement always yields the same bytes regardless of field order or number spelling.
//! The work is done by `serde_json_canonicalizer`; `signer/tests/jcs_vectors.rs` holds it to the
//! RFC's published vectors.

use serde::Serialize;

use crate::Error;

/// Canonical bytes of any serializable value.
pub fn to_vec<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    Ok(serde_json_canonicalizer::to_vec(value)?)
}

/// Re-encodes JSON text canonically. Fails on invalid JSON.
pub fn canonicalize(json: &[u8]) -> Result<Vec<u8>, Error> {
    let value: serde_json::Value = serde_json::from_slice(json)?;
    to_vec(&value)
}
