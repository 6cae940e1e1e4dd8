//! Persistent encoding: one format-version byte, then postcard.
//!
//! Every byte string this crate writes to disk or sends in a snapshot starts with
//! [`FORMAT_VERSION`]. `decode` dispatches on that byte, so a newer node keeps reading logs and
//! snapshots written by older ones: when the format changes, the old version's types stay here
//! with a migration into the new ones, and `state/tests/format.rs` keeps bytes written by every
//! earlier version as fixtures.

use serde::Serialize;
use serde::de::DeserializeOwned;

pub const FORMAT_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty record")]
    Empty,
    #[error("format version {0} is newer than this node understands ({FORMAT_VERSION})")]
    UnsupportedVersion(u8),
    #[error("postcard: {0}")]
    Postcard(#[from] postcard::Error),
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![FORMAT_VERSION];
    out.extend_from_slice(&postcard::to_allocvec(value)?);
    Ok(out)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match bytes.split_first() {
        None => Err(CodecError::Empty),
        Some((1, rest)) => Ok(postcard::from_bytes(rest)?),
        Some((version, _)) => Err(CodecError::UnsupportedVersion(*version)),
    }
}
