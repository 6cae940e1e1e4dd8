//! Replicated state of Stella Signer.
//!
//! - [`command`]: the `Command` enum replicated through Raft and the `Response` it yields.
//! - [`machine`]: `State` and its pure, deterministic `apply` (no I/O, no clock, no signing).
//! - [`audit`]: audit records and their hash chain.
//! - [`codec`]: the versioned persistent encoding (format byte + postcard).
//! - [`storage`]: durable openraft storage (log store + state machine) on redb.

pub mod audit;
pub mod codec;
pub mod command;
pub mod index;
pub mod log_tree;
pub mod machine;
/// The audit log's Merkle tree hashing and proofs (the `stella-tlog` crate).
pub use stella_tlog as merkle;
pub mod raft_types;
pub mod storage;
pub mod tracked;

pub use audit::{AuditChainError, AuditDraft, AuditRecord, Decision, GENESIS_HASH, verify_chain};
pub use command::{Command, Response};
pub use machine::State;
