//! Replicated state of Stella Signer.
//!
//! For now: the audit record and its hash chain, as pure functions (no I/O, no clock reads —
//! time arrives inside the record draft). The node's local audit log persists what this crate
//! computes; the Raft state machine of the next milestone will apply the same records.

pub mod audit;

pub use audit::{AuditChainError, AuditDraft, AuditRecord, Decision, GENESIS_HASH, verify_chain};
