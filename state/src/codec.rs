//! Persistent encoding: one format-version byte, then postcard.
//!
//! Every byte string this crate writes to disk or sends in a snapshot starts with
//! [`FORMAT_VERSION`]. `decode` dispatches on that byte, so a newer node keeps reading logs and
//! snapshots written by older ones: when the format changes, the old version's types stay here
//! (or next to the type) with a migration into the new ones, and `state/tests/format.rs` keeps
//! bytes written by every earlier version as fixtures.
//!
//! Versions:
//! - 1: the replicated-state milestone.
//! - 2: `Command::Admit` / `Response::Replayed` (new trailing variants: v1 commands and log
//!   entries decode unchanged) and snapshots that carry the one-time proof set (a v1 snapshot
//!   is migrated by [`Persisted`] with an empty set). `State`'s own encoding is unchanged: the
//!   proof set lives in a storage table of its own.
//! - 3: `Command::RegisterThresholdKey` (a new trailing variant) and `State::threshold_groups`
//!   (a new field: a v1/v2 `State` decodes through `StateV2` with no groups).
//! - 4: `Command::Configure` / `Response::Configured` (a configuration change and its audit
//!   record in one entry) and `Command::AdmitWithEvidence` (an admission a threshold key will
//!   sign, with the caller evidence its share holders re-check): new trailing variants, so v3
//!   bytes decode unchanged. The evidence lives in a `#[serde(skip)]` state field, so `State`'s
//!   own encoding is unchanged.
//! - 5: `Command::AdmitOnce` / `Command::Finish` and `Response::InProgress` / `Concluded` /
//!   `Superseded` (exactly-once signing: new trailing variants, v4 bytes decode unchanged);
//!   the proof set becomes a claim set (binding, pending attempt or committed outcome) kept in
//!   the `claims` table, and snapshots carry claims — a v2–v4 snapshot's bare proofs become
//!   `Used` claims (`SnapshotPayload::decode_v4`), as do the old `proofs` table's rows.
//! - 6: the audit log's Merkle tree (`log_tree`): `Command::CutCheckpoint` / `SignCheckpoint`
//!   and their responses (new trailing variants: v5 bytes decode unchanged), the tree's head
//!   and checkpoint kept under a key of their own, and snapshots that carry them — a v1–v5
//!   snapshot (or state machine) has none, and storage rebuilds the tree from its records.
//!
//! - 7: `Command::Sign` / `Response::Granted` (a signing in one entry, ADR 0028): new trailing
//!   variants, so v6 bytes decode unchanged.
//!
//! Snapshots are no longer one codec value: since format 6 they are files with a container of
//! their own (`storage/snapshot/`: magic, a codec-encoded header, length-prefixed records);
//! a format 1–6 snapshot blob still decodes here and is rewritten as such a file.

use serde::Serialize;
use serde::de::DeserializeOwned;

pub const FORMAT_VERSION: u8 = 7;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty record")]
    Empty,
    #[error("format version {0} is newer than this node understands ({FORMAT_VERSION})")]
    UnsupportedVersion(u8),
    #[error("postcard: {0}")]
    Postcard(#[from] postcard::Error),
}

/// A type this crate persists. Types whose encoding did not change keep the default
/// `decode_v1`; a changed type decodes its old shape and migrates.
pub trait Persisted: Serialize + DeserializeOwned {
    fn decode_v1(bytes: &[u8]) -> Result<Self, postcard::Error> {
        Self::decode_v2(bytes)
    }
    fn decode_v2(bytes: &[u8]) -> Result<Self, postcard::Error> {
        Self::decode_v4(bytes)
    }
    /// Formats 3 and 4.
    fn decode_v4(bytes: &[u8]) -> Result<Self, postcard::Error> {
        Self::decode_v5(bytes)
    }
    fn decode_v5(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![FORMAT_VERSION];
    out.extend_from_slice(&postcard::to_allocvec(value)?);
    Ok(out)
}

pub fn decode<T: Persisted>(bytes: &[u8]) -> Result<T, CodecError> {
    match bytes.split_first() {
        None => Err(CodecError::Empty),
        Some((1, rest)) => Ok(T::decode_v1(rest)?),
        Some((2, rest)) => Ok(T::decode_v2(rest)?),
        Some((3 | 4, rest)) => Ok(T::decode_v4(rest)?),
        Some((5, rest)) => Ok(T::decode_v5(rest)?),
        Some((6 | 7, rest)) => Ok(postcard::from_bytes(rest)?),
        Some((version, _)) => Err(CodecError::UnsupportedVersion(*version)),
    }
}

impl Persisted for crate::Command {}
impl Persisted for Vec<crate::Command> {}
impl Persisted for Vec<Vec<u8>> {}
impl<T: Persisted> Persisted for Option<T> {
    fn decode_v1(bytes: &[u8]) -> Result<Self, postcard::Error> {
        match bytes.split_first() {
            Some((0, _)) => Ok(None),
            Some((1, rest)) => T::decode_v1(rest).map(Some),
            _ => postcard::from_bytes(bytes),
        }
    }
    fn decode_v2(bytes: &[u8]) -> Result<Self, postcard::Error> {
        match bytes.split_first() {
            Some((0, _)) => Ok(None),
            Some((1, rest)) => T::decode_v2(rest).map(Some),
            _ => postcard::from_bytes(bytes),
        }
    }
    fn decode_v4(bytes: &[u8]) -> Result<Self, postcard::Error> {
        match bytes.split_first() {
            Some((0, _)) => Ok(None),
            Some((1, rest)) => T::decode_v4(rest).map(Some),
            _ => postcard::from_bytes(bytes),
        }
    }
    fn decode_v5(bytes: &[u8]) -> Result<Self, postcard::Error> {
        match bytes.split_first() {
            Some((0, _)) => Ok(None),
            Some((1, rest)) => T::decode_v5(rest).map(Some),
            _ => postcard::from_bytes(bytes),
        }
    }
}
impl Persisted for crate::machine::Claim {}
impl Persisted for crate::log_tree::LogTree {}
impl Persisted for Vec<(String, crate::machine::Claim)> {}
impl Persisted for crate::raft_types::Entry {}
impl Persisted for crate::raft_types::LogId {}
impl Persisted for crate::raft_types::Vote {}

impl Persisted for crate::State {
    fn decode_v2(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes::<crate::machine::StateV2>(bytes).map(Into::into)
    }
}
