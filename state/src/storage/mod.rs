//! Durable Raft storage on redb (openraft 0.9 storage-v2).
//!
//! Two files, as DESIGN.md §3 asks: `raft-log.redb` (log entries, vote, committed id, purge
//! point) and `state-machine.redb` (the applied `State`, the audit records, where the current
//! snapshot is), with snapshot files under `snapshots/` (`snapshot/`). Every value is written with [`crate::codec`] (format byte + postcard).
//!
//! Durability: the Raft log is the durable record. `append`, `truncate`, `purge` and
//! `save_vote` commit with `Durability::Immediate` (fsynced before `commit` returns), and
//! `append` reports a batch flushed to openraft only after that, so an entry is never
//! acknowledged before it is on disk. The state machine commits once per `apply` batch —
//! applied index, new audit records and state move together atomically — but without an fsync
//! (`Durability::None`), as does `save_committed`: after a crash redb reverts to its last durable
//! commit and openraft re-applies the committed log entries after it. One apply commit a second
//! (or every 256) is fsynced all the same, because redb keeps the pages that unsynced commits
//! free on in-memory lists until a synced one (`state_machine::DurablePacer`). Snapshot build and install
//! commit with `Durability::Immediate`, which also makes every earlier state-machine commit
//! durable, so the log is never purged past what the state machine has durably applied.
//! Blocking redb work runs on `spawn_blocking`, off the async workers.
//!
//! This module and `cluster`'s network module are the only places that touch openraft's storage
//! and network APIs (they change in 0.10).

#![allow(clippy::result_large_err)] // openraft's StorageError is the storage traits' own error type.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    EntryPayload, LogState, RaftLogReader, RaftSnapshotBuilder, Snapshot, StorageIOError,
};
use redb::{
    Database, Durability, MultimapTableDefinition, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, TableDefinition,
};
use serde::{Deserialize, Serialize};

use crate::audit::AuditRecord;
use crate::codec;
use crate::command::Response;
use crate::log_tree::LogTree;
use crate::machine::{Claim, ProofChange, State};
use crate::merkle::{self, Hash, HashStore};
use crate::raft_types::{
    Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig, Vote,
};

mod entities;
mod log;
mod snapshot;
mod state_machine;
mod tables;
mod view;

pub use entities::EntityWrites;
pub use log::{LogReader, LogStore};
pub use state_machine::{SnapshotBuilder, StateMachineStore, TreeError};
use tables::*;
pub use view::StateView;

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
const LOG_META: TableDefinition<&str, &[u8]> = TableDefinition::new("log_meta");
const SM_META: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_meta");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// One-time proofs as formats 2–4 kept them: key → end of its window (ms). Read at start-up
/// (as bare `Used` claims) and emptied as they are rewritten into `CLAIMS` or expire.
const PROOFS: TableDefinition<&str, u64> = TableDefinition::new("proofs");
/// The replicated claim set (`State::proofs`, format v5): key → encoded `Claim` (its window,
/// binding, and the pending attempt or committed outcome).
const CLAIMS: TableDefinition<&str, &[u8]> = TableDefinition::new("claims");
/// The audit log's Merkle tree (format v6): `(level, index)` → the hash of that complete
/// subtree (see `merkle`). About two rows per audit record.
const MERKLE: TableDefinition<(u8, u64), &[u8]> = TableDefinition::new("merkle");
/// Look-up indexes (`crate::index`): `(kind, scope, value, seq)`, one range read per look-up.
const IDX: TableDefinition<(u8, &str, &str, u64), ()> = TableDefinition::new("idx");
/// Format-6 look-up table of bundle hashes only (replaced by `IDX`; dropped on rebuild).
const BY_BUNDLE: MultimapTableDefinition<&str, u64> = MultimapTableDefinition::new("idx_bundle");
/// The version of the derived tables (tree and indexes) in `SM_META`; files with another one
/// get them rebuilt from the records on open.
const DERIVED_VERSION_KEY: &str = "derived_version";
const DERIVED_VERSION: u64 = 2;

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";
const APPLIED: &str = "applied";
/// A snapshot stored the old way: one codec blob of meta and payload (rewritten on open).
const SNAPSHOT: &str = "snapshot";
/// Where the current snapshot file is (`snapshot::SnapshotFile`).
const SNAPSHOT_FILE: &str = "snapshot_file";
/// The replicated `LogTree` (frontier, cut head, checkpoint), in `SM_META`.
const LOG_TREE: &str = "log_tree";

/// Opens (creating when absent) both stores under `dir`.
pub fn open(dir: &Path) -> Result<(LogStore, StateMachineStore), StorageError> {
    open_with_cache(dir, None)
}

/// As [`open`], with the state machine's page cache bounded to `cache_bytes` (redb's default,
/// 1 GiB, when `None`).
pub fn open_with_cache(
    dir: &Path,
    cache_bytes: Option<usize>,
) -> Result<(LogStore, StateMachineStore), StorageError> {
    std::fs::create_dir_all(dir).map_err(|e| StorageIOError::write(&e))?;
    let log = LogStore::open(&dir.join("raft-log.redb"))?;
    let sm = StateMachineStore::open_with_cache(&dir.join("state-machine.redb"), cache_bytes)?;
    Ok((log, sm))
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read(&e).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write(&e).into()
}

fn join_err(e: tokio::task::JoinError) -> StorageError {
    StorageIOError::write(&e).into()
}

fn create(path: &Path) -> Result<Database, StorageError> {
    Database::create(path).map_err(write_err)
}

fn create_with_cache(path: &Path, cache_bytes: Option<usize>) -> Result<Database, StorageError> {
    match cache_bytes {
        None => create(path),
        Some(bytes) => Database::builder()
            .set_cache_size(bytes)
            .create(path)
            .map_err(write_err),
    }
}

pub(super) fn get_meta<T: codec::Persisted>(
    db: &Database,
    table: TableDefinition<&str, &[u8]>,
    key: &str,
) -> Result<Option<T>, StorageError> {
    let txn = db.begin_read().map_err(read_err)?;
    let table = match txn.open_table(table) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    match table.get(key).map_err(read_err)? {
        Some(v) => Ok(Some(codec::decode(v.value()).map_err(read_err)?)),
        None => Ok(None),
    }
}

pub(super) fn put_meta<T: Serialize>(
    durability: Durability,
    db: &Database,
    table: TableDefinition<&str, &[u8]>,
    key: &str,
    value: &T,
) -> Result<(), StorageError> {
    let bytes = codec::encode(value).map_err(write_err)?;
    let mut txn = db.begin_write().map_err(write_err)?;
    txn.set_durability(durability).map_err(write_err)?;
    {
        let mut t = txn.open_table(table).map_err(write_err)?;
        t.insert(key, bytes.as_slice()).map_err(write_err)?;
    }
    txn.commit().map_err(write_err)
}

/// Reads every audit record from a stopped node's state machine (`stella-signer audit verify`).
/// Fails while a running node holds the database.
pub fn read_audit_offline(dir: &Path) -> Result<Vec<AuditRecord>, StorageError> {
    let db = Database::open(dir.join("state-machine.redb")).map_err(read_err)?;
    let txn = db.begin_read().map_err(read_err)?;
    let table = match txn.open_table(AUDIT) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(read_err(e)),
    };
    let mut out = Vec::new();
    for item in table.iter().map_err(read_err)? {
        let (_, v) = item.map_err(read_err)?;
        out.push(serde_json::from_slice(v.value()).map_err(read_err)?);
    }
    Ok(out)
}
