//! Durable Raft storage on redb (openraft 0.9 storage-v2).
//!
//! Two files, as DESIGN.md §3 asks: `raft-log.redb` (log entries, vote, committed id, purge
//! point) and `state-machine.redb` (the applied `State`, the audit records, the current
//! snapshot). Every value is written with [`crate::codec`] (format byte + postcard).
//!
//! Durability: the Raft log is the durable record. `append`, `truncate`, `purge` and
//! `save_vote` commit with `Durability::Immediate` (fsynced before `commit` returns), and
//! `append` reports a batch flushed to openraft only after that, so an entry is never
//! acknowledged before it is on disk. The state machine commits once per `apply` batch —
//! applied index, new audit records and state move together atomically — but without an fsync
//! (`Durability::None`), as does `save_committed`: after a crash redb reverts to its last durable
//! commit and openraft re-applies the committed log entries after it. Snapshot build and install
//! commit with `Durability::Immediate`, which also makes every earlier state-machine commit
//! durable, so the log is never purged past what the state machine has durably applied.
//! Blocking redb work runs on `spawn_blocking`, off the async workers.
//!
//! This module and `cluster`'s network module are the only places that touch openraft's storage
//! and network APIs (they change in 0.10).

#![allow(clippy::result_large_err)] // openraft's StorageError is the storage traits' own error type.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Cursor;
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
const SNAPSHOT: &str = "snapshot";
/// The replicated `LogTree` (frontier, cut head, checkpoint), in `SM_META`.
const LOG_TREE: &str = "log_tree";

/// Opens (creating when absent) both stores under `dir`.
pub fn open(dir: &Path) -> Result<(LogStore, StateMachineStore), StorageError> {
    std::fs::create_dir_all(dir).map_err(|e| StorageIOError::write(&e))?;
    let log = LogStore::open(&dir.join("raft-log.redb"))?;
    let sm = StateMachineStore::open(&dir.join("state-machine.redb"))?;
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

fn read_proofs(db: &Database) -> Result<crate::machine::ProofSet, StorageError> {
    let txn = db.begin_read().map_err(read_err)?;
    let legacy = txn.open_table(PROOFS).map_err(read_err)?;
    let mut entries = Vec::new();
    for item in legacy.iter().map_err(read_err)? {
        let (k, v) = item.map_err(read_err)?;
        entries.push((k.value().to_owned(), Claim::used(v.value())));
    }
    let claims = txn.open_table(CLAIMS).map_err(read_err)?;
    for item in claims.iter().map_err(read_err)? {
        let (k, v) = item.map_err(read_err)?;
        let claim: Claim = codec::decode(v.value()).map_err(read_err)?;
        entries.push((k.value().to_owned(), claim));
    }
    Ok(entries.into_iter().collect())
}

/// Replaces every claim row with `claims` (a snapshot's set).
fn write_claims(
    txn: &redb::WriteTransaction,
    claims: &[(String, Vec<u8>)],
) -> Result<(), StorageError> {
    txn.open_table(PROOFS)
        .map_err(write_err)?
        .retain(|_, _| false)
        .map_err(write_err)?;
    let mut table = txn.open_table(CLAIMS).map_err(write_err)?;
    table.retain(|_, _| false).map_err(write_err)?;
    for (key, claim) in claims {
        table
            .insert(key.as_str(), claim.as_slice())
            .map_err(write_err)?;
    }
    Ok(())
}

/// Rebuilds the Merkle table and the look-up indexes from the audit records in `txn` (a node
/// whose files predate them, or a snapshot just installed): O(n), once.
fn rebuild_derived(txn: &redb::WriteTransaction) -> Result<LogTree, StorageError> {
    let mut tree = LogTree::default();
    let mut nodes = txn.open_table(MERKLE).map_err(write_err)?;
    nodes.retain(|_, _| false).map_err(write_err)?;
    txn.delete_multimap_table(BY_BUNDLE).map_err(write_err)?;
    txn.delete_table(IDX).map_err(write_err)?;
    let mut idx = txn.open_table(IDX).map_err(write_err)?;
    let audit = txn.open_table(AUDIT).map_err(write_err)?;
    for item in audit.iter().map_err(read_err)? {
        let (_, line) = item.map_err(read_err)?;
        tree.push_record(line.value());
        for (node, hash) in tree.take_nodes() {
            nodes.insert(node, hash.as_slice()).map_err(write_err)?;
        }
        let record: AuditRecord = serde_json::from_slice(line.value()).map_err(read_err)?;
        index_record(&mut idx, &record)?;
    }
    txn.open_table(SM_META)
        .map_err(write_err)?
        .insert(
            DERIVED_VERSION_KEY,
            DERIVED_VERSION.to_be_bytes().as_slice(),
        )
        .map_err(write_err)?;
    Ok(tree)
}

/// Writes the look-up rows of `record`.
fn index_record(
    idx: &mut redb::Table<(u8, &str, &str, u64), ()>,
    record: &AuditRecord,
) -> Result<(), StorageError> {
    for (kind, scope, value) in crate::index::rows(record) {
        idx.insert((kind, scope.as_str(), value.as_str(), record.seq), ())
            .map_err(write_err)?;
    }
    Ok(())
}

fn derived_version(db: &Database) -> Result<u64, StorageError> {
    let txn = db.begin_read().map_err(read_err)?;
    let meta = txn.open_table(SM_META).map_err(read_err)?;
    Ok(meta
        .get(DERIVED_VERSION_KEY)
        .map_err(read_err)?
        .and_then(|v| v.value().try_into().ok())
        .map_or(0, u64::from_be_bytes))
}

/// Stored subtree hashes read through an open table.
struct TableHashes<'a, T: ReadableTable<(u8, u64), &'static [u8]>>(&'a T);

impl<T: ReadableTable<(u8, u64), &'static [u8]>> HashStore for TableHashes<'_, T> {
    fn get(&self, level: u8, index: u64) -> Option<Hash> {
        let value = self.0.get((level, index)).ok()??;
        value.value().try_into().ok()
    }
}

fn get_meta<T: codec::Persisted>(
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

fn put_meta<T: Serialize>(
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

// ---------------------------------------------------------------------------------------------
// Log store
//
// Appends go to one writer thread that group-commits everything queued into one fsynced redb
// transaction, then reports each batch flushed. Until then the entries sit in `pending`, where
// readers see them (openraft reads entries right after `append` returns, before they are
// flushed). Truncate and purge first wait for the writer to drain, so log mutations stay in order.

type Pending = Arc<Mutex<BTreeMap<u64, Entry>>>;

enum LogOp {
    Append(Vec<(LogId, Vec<u8>)>, LogFlushed<TypeConfig>),
    Barrier(std::sync::mpsc::Sender<()>),
}

/// The Raft log, the vote and the commit point.
pub struct LogStore {
    db: Arc<Database>,
    pending: Pending,
    writer: std::sync::mpsc::Sender<LogOp>,
    writer_thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for LogStore {
    /// Stops the writer after it has flushed what was queued, and releases the database file.
    fn drop(&mut self) {
        let (closed, _) = std::sync::mpsc::channel();
        drop(std::mem::replace(&mut self.writer, closed));
        if let Some(thread) = self.writer_thread.take() {
            let _ = thread.join();
        }
    }
}

impl LogStore {
    pub fn open(path: &Path) -> Result<LogStore, StorageError> {
        let db = create(path)?;
        let txn = db.begin_write().map_err(write_err)?;
        txn.open_table(LOGS).map_err(write_err)?;
        txn.open_table(LOG_META).map_err(write_err)?;
        txn.commit().map_err(write_err)?;
        let db = Arc::new(db);
        let pending: Pending = Arc::default();
        let (writer, ops) = std::sync::mpsc::channel();
        let (thread_db, thread_pending) = (db.clone(), pending.clone());
        let writer_thread = std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || log_writer(&thread_db, &thread_pending, &ops))
            .map_err(write_err)?;
        Ok(LogStore {
            db,
            pending,
            writer,
            writer_thread: Some(writer_thread),
        })
    }

    /// Waits until every append queued so far is on disk.
    async fn drain_writer(&self) -> Result<(), StorageError> {
        let (done, wait) = std::sync::mpsc::channel();
        self.writer
            .send(LogOp::Barrier(done))
            .map_err(|_| write_err(std::io::Error::other("the log writer stopped")))?;
        tokio::task::spawn_blocking(move || wait.recv())
            .await
            .map_err(join_err)?
            .map_err(|_| write_err(std::io::Error::other("the log writer stopped")))
    }
}

fn log_writer(db: &Database, pending: &Pending, ops: &std::sync::mpsc::Receiver<LogOp>) {
    while let Ok(first) = ops.recv() {
        let mut batch = vec![first];
        while let Ok(next) = ops.try_recv() {
            batch.push(next);
        }
        let writes: Vec<&(LogId, Vec<u8>)> = batch
            .iter()
            .filter_map(|op| match op {
                LogOp::Append(entries, _) => Some(entries.iter()),
                LogOp::Barrier(_) => None,
            })
            .flatten()
            .collect();
        let result: Result<(), redb::Error> = (|| {
            if writes.is_empty() {
                return Ok(());
            }
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(LOGS)?;
                for (log_id, bytes) in &writes {
                    table.insert(log_id.index, bytes.as_slice())?;
                }
            }
            txn.commit()?;
            Ok(())
        })();
        if result.is_ok() {
            let mut cache = pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (log_id, _) in &writes {
                // A newer entry may have replaced this index meanwhile (after a truncate).
                if cache
                    .get(&log_id.index)
                    .is_some_and(|e| e.log_id == *log_id)
                {
                    cache.remove(&log_id.index);
                }
            }
        }
        for op in batch {
            match op {
                LogOp::Append(_, callback) => {
                    let outcome = result
                        .as_ref()
                        .map(|_| ())
                        .map_err(|e| std::io::Error::other(e.to_string()));
                    callback.log_io_completed(outcome);
                }
                LogOp::Barrier(done) => {
                    let _ = done.send(());
                }
            }
        }
    }
}

/// A read handle on the log, usable concurrently with appends.
#[derive(Clone)]
pub struct LogReader {
    db: Arc<Database>,
    pending: Pending,
}

fn read_entries(
    db: &Database,
    pending: &Pending,
    start: Bound<u64>,
    end: Bound<u64>,
) -> Result<Vec<Entry>, StorageError> {
    // Snapshot the unflushed entries first: one that is flushed in between is then found in redb.
    let mut merged: BTreeMap<u64, Entry> = pending
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .range((start, end))
        .map(|(i, e)| (*i, e.clone()))
        .collect();
    let txn = db.begin_read().map_err(read_err)?;
    let table = txn.open_table(LOGS).map_err(read_err)?;
    for item in table.range::<u64>((start, end)).map_err(read_err)? {
        let (k, v) = item.map_err(read_err)?;
        if let std::collections::btree_map::Entry::Vacant(slot) = merged.entry(k.value()) {
            slot.insert(codec::decode(v.value()).map_err(read_err)?);
        }
    }
    Ok(merged.into_values().collect())
}

fn owned_bounds<RB: RangeBounds<u64>>(range: &RB) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (db, pending) = (self.db.clone(), self.pending.clone());
        let (start, end) = owned_bounds(&range);
        tokio::task::spawn_blocking(move || read_entries(&db, &pending, start, end))
            .await
            .map_err(join_err)?
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.get_log_reader().await.try_get_log_entries(range).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = get_meta(&self.db, LOG_META, LAST_PURGED)?;
        let last_pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .next_back()
            .map(|e| e.log_id);
        let last = match last_pending {
            Some(id) => Some(id),
            None => {
                let txn = self.db.begin_read().map_err(read_err)?;
                let table = txn.open_table(LOGS).map_err(read_err)?;
                match table.last().map_err(read_err)? {
                    Some((_, v)) => {
                        Some(codec::decode::<Entry>(v.value()).map_err(read_err)?.log_id)
                    }
                    None => None,
                }
            }
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            db: self.db.clone(),
            pending: self.pending.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let db = self.db.clone();
        let vote = *vote;
        tokio::task::spawn_blocking(move || {
            put_meta(Durability::Immediate, &db, LOG_META, VOTE, &vote)
        })
        .await
        .map_err(join_err)?
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        get_meta(&self.db, LOG_META, VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            put_meta(Durability::None, &db, LOG_META, COMMITTED, &committed)
        })
        .await
        .map_err(join_err)?
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(get_meta::<Option<LogId>>(&self.db, LOG_META, COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut encoded = Vec::new();
        let mut cache = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for entry in entries {
            encoded.push((entry.log_id, codec::encode(&entry).map_err(write_err)?));
            cache.insert(entry.log_id.index, entry);
        }
        drop(cache);
        self.writer
            .send(LogOp::Append(encoded, callback))
            .map_err(|_| write_err(std::io::Error::other("the log writer stopped")))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.drain_writer().await?;
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|index, _| *index < log_id.index);
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || -> Result<(), StorageError> {
            let txn = db.begin_write().map_err(write_err)?;
            {
                let mut table = txn.open_table(LOGS).map_err(write_err)?;
                table
                    .retain_in(log_id.index.., |_, _| false)
                    .map_err(write_err)?;
            }
            txn.commit().map_err(write_err)
        })
        .await
        .map_err(join_err)?
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.drain_writer().await?;
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|index, _| *index > log_id.index);
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || -> Result<(), StorageError> {
            let bytes = codec::encode(&log_id).map_err(write_err)?;
            let txn = db.begin_write().map_err(write_err)?;
            {
                let mut meta = txn.open_table(LOG_META).map_err(write_err)?;
                meta.insert(LAST_PURGED, bytes.as_slice())
                    .map_err(write_err)?;
                let mut table = txn.open_table(LOGS).map_err(write_err)?;
                table
                    .retain_in(..=log_id.index, |_, _| false)
                    .map_err(write_err)?;
            }
            txn.commit().map_err(write_err)
        })
        .await
        .map_err(join_err)?
    }
}

// ---------------------------------------------------------------------------------------------
// State machine

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Applied {
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

/// What a snapshot carries: everything the state machine holds, audit records included.
#[derive(Serialize, Deserialize)]
struct SnapshotPayload {
    applied: Applied,
    state: State,
    /// Canonical JSON lines of every audit record, in sequence order.
    audit: Vec<String>,
    /// The claim set (format v5; formats 2–4 carried bare proofs), which the state's own
    /// encoding leaves out.
    claims: Vec<(String, Claim)>,
    /// The audit log's tree head, cut and checkpoint (format v6; `None` from older snapshots,
    /// whose tree is rebuilt from `audit`).
    log: Option<LogTree>,
}

/// A snapshot written by format v5: no log tree.
#[derive(Deserialize)]
struct SnapshotPayloadV5 {
    applied: Applied,
    state: State,
    audit: Vec<String>,
    claims: Vec<(String, Claim)>,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// A snapshot written by format v1: it predates one-time proofs (and threshold groups).
#[derive(Deserialize)]
struct SnapshotPayloadV1 {
    applied: Applied,
    state: crate::machine::StateV2,
    audit: Vec<String>,
}

/// A snapshot written by format v2: its state predates threshold groups.
#[derive(Deserialize)]
struct SnapshotPayloadV2 {
    applied: Applied,
    state: crate::machine::StateV2,
    audit: Vec<String>,
    proofs: Vec<(String, u64)>,
}

/// A snapshot written by formats 3 and 4: bare proofs instead of claims.
#[derive(Deserialize)]
struct SnapshotPayloadV4 {
    applied: Applied,
    state: State,
    audit: Vec<String>,
    proofs: Vec<(String, u64)>,
}

fn used_claims(proofs: Vec<(String, u64)>) -> Vec<(String, Claim)> {
    proofs
        .into_iter()
        .map(|(k, e)| (k, Claim::used(e)))
        .collect()
}

impl codec::Persisted for Applied {}
impl codec::Persisted for StoredSnapshot {}
impl codec::Persisted for SnapshotPayload {
    fn decode_v1(bytes: &[u8]) -> Result<Self, postcard::Error> {
        let v1: SnapshotPayloadV1 = postcard::from_bytes(bytes)?;
        Ok(SnapshotPayload {
            applied: v1.applied,
            state: v1.state.into(),
            audit: v1.audit,
            claims: Vec::new(),
            log: None,
        })
    }
    fn decode_v2(bytes: &[u8]) -> Result<Self, postcard::Error> {
        let v2: SnapshotPayloadV2 = postcard::from_bytes(bytes)?;
        Ok(SnapshotPayload {
            applied: v2.applied,
            state: v2.state.into(),
            audit: v2.audit,
            claims: used_claims(v2.proofs),
            log: None,
        })
    }
    fn decode_v4(bytes: &[u8]) -> Result<Self, postcard::Error> {
        let v4: SnapshotPayloadV4 = postcard::from_bytes(bytes)?;
        Ok(SnapshotPayload {
            applied: v4.applied,
            state: v4.state,
            audit: v4.audit,
            claims: used_claims(v4.proofs),
            log: None,
        })
    }
    fn decode_v5(bytes: &[u8]) -> Result<Self, postcard::Error> {
        let v5: SnapshotPayloadV5 = postcard::from_bytes(bytes)?;
        Ok(SnapshotPayload {
            applied: v5.applied,
            state: v5.state,
            audit: v5.audit,
            claims: v5.claims,
            log: None,
        })
    }
}

/// Read-only view of the applied state for the node (quota, toggles, approvals, audit reads).
#[derive(Clone)]
pub struct StateView {
    db: Arc<Database>,
    state: Arc<RwLock<State>>,
}

impl StateView {
    /// Runs `f` on the current applied state.
    pub fn with_state<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        match self.state.read() {
            Ok(guard) => f(&guard),
            Err(poisoned) => f(&poisoned.into_inner()),
        }
    }

    /// Makes every state-machine commit so far durable (one empty fsynced commit). Called on
    /// clean shutdown, so a stopped node's files hold everything it applied.
    pub fn flush_durable(&self) -> Result<(), StorageError> {
        let mut txn = self.db.begin_write().map_err(write_err)?;
        txn.set_durability(Durability::Immediate)
            .map_err(write_err)?;
        txn.commit().map_err(write_err)
    }

    /// The audit record with sequence number `seq`, if committed here.
    pub fn audit_record(&self, seq: u64) -> Result<Option<AuditRecord>, StorageError> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(AUDIT).map_err(read_err)?;
        match table.get(seq).map_err(read_err)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(read_err)?)),
            None => Ok(None),
        }
    }

    /// Sequence numbers of the records that name bundle hash `hash` (an index look-up).
    pub fn seqs_by_bundle(&self, hash: &str) -> Result<Vec<u64>, StorageError> {
        let lookup = crate::index::Lookup::exact(crate::index::Kind::Bundle, "", hash);
        Ok(self
            .lookup(&lookup, 16)?
            .into_iter()
            .map(|(_, seq)| seq)
            .collect())
    }

    /// At most `limit` index rows of `lookup`, as `(value, seq)` in order: one range read.
    pub fn lookup(
        &self,
        lookup: &crate::index::Lookup,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, StorageError> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(IDX).map_err(read_err)?;
        let kind = lookup.kind as u8;
        let (start_value, start_seq) = lookup.start();
        if start_value > lookup.hi {
            return Ok(Vec::new());
        }
        let start = (kind, lookup.scope.as_str(), start_value.as_str(), start_seq);
        let end = (kind, lookup.scope.as_str(), lookup.hi.as_str(), u64::MAX);
        let mut out = Vec::new();
        for item in table.range(start..=end).map_err(read_err)?.take(limit) {
            let (key, _) = item.map_err(read_err)?;
            let (_, _, value, seq) = key.value();
            out.push((value.to_owned(), seq));
        }
        Ok(out)
    }

    /// The audit log's tree as this node has applied it (head, cut, checkpoint).
    pub fn log_tree(&self) -> LogTree {
        self.with_state(|s| s.log.clone())
    }

    /// The root of the first `size` records (`size` ≤ the applied tree size).
    pub fn tree_root(&self, size: u64) -> Result<Hash, TreeError> {
        self.with_tree(
            |hashes| merkle::root(hashes, size).map_err(TreeError::from),
            size,
        )
    }

    /// The inclusion proof of leaf `index` (record `index + 1`) in the tree of `size` records.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, TreeError> {
        self.with_tree(
            |hashes| merkle::inclusion_proof(hashes, index, size).map_err(TreeError::from),
            size,
        )
    }

    /// The consistency proof between the trees of `old` and `new` records.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, TreeError> {
        self.with_tree(
            |hashes| merkle::consistency_proof(hashes, old, new).map_err(TreeError::from),
            new,
        )
    }

    fn with_tree<T>(
        &self,
        f: impl FnOnce(&dyn HashStore) -> Result<T, TreeError>,
        size: u64,
    ) -> Result<T, TreeError> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| TreeError::Storage(e.to_string()))?;
        let table = txn
            .open_table(MERKLE)
            .map_err(|e| TreeError::Storage(e.to_string()))?;
        let applied = self.with_state(|s| s.log.frontier.size());
        if size > applied {
            return Err(TreeError::Beyond { size, applied });
        }
        f(&TableHashes(&table))
    }

    /// Audit records with `seq > after`, at most `limit`, in order.
    pub fn audit_after(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, StorageError> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(AUDIT).map_err(read_err)?;
        let mut out = Vec::new();
        for item in table
            .range(after.saturating_add(1)..)
            .map_err(read_err)?
            .take(limit)
        {
            let (_, v) = item.map_err(read_err)?;
            out.push(serde_json::from_slice(v.value()).map_err(read_err)?);
        }
        Ok(out)
    }
}

/// Why a tree read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    #[error("tree size {size} is beyond this node's log ({applied} records)")]
    Beyond { size: u64, applied: u64 },
    #[error(transparent)]
    Merkle(#[from] merkle::MerkleError),
    #[error("reading the tree: {0}")]
    Storage(String),
}

pub struct StateMachineStore {
    db: Arc<Database>,
    applied: Applied,
    state: Arc<RwLock<State>>,
}

impl StateMachineStore {
    pub fn open(path: &Path) -> Result<StateMachineStore, StorageError> {
        let db = create(path)?;
        let txn = db.begin_write().map_err(write_err)?;
        txn.open_table(SM_META).map_err(write_err)?;
        txn.open_table(AUDIT).map_err(write_err)?;
        txn.open_table(PROOFS).map_err(write_err)?;
        txn.open_table(CLAIMS).map_err(write_err)?;
        txn.open_table(MERKLE).map_err(write_err)?;
        txn.open_table(IDX).map_err(write_err)?;
        txn.commit().map_err(write_err)?;
        let applied: Applied = get_meta(&db, SM_META, APPLIED)?.unwrap_or_default();
        let mut state: State = get_meta(&db, SM_META, "state")?.unwrap_or_default();
        state.proofs = read_proofs(&db)?;
        let stored = get_meta::<LogTree>(&db, SM_META, LOG_TREE)?;
        state.log = match stored {
            Some(tree) if derived_version(&db)? == DERIVED_VERSION => tree,
            stored => {
                // Files from before the tree or these indexes: build them from the records,
                // once (a checkpoint already signed stays).
                let txn = db.begin_write().map_err(write_err)?;
                let mut tree = rebuild_derived(&txn)?;
                if let Some(stored) = stored {
                    if stored.frontier != tree.frontier {
                        return Err(write_err(std::io::Error::other(
                            "the stored tree head does not match the audit records",
                        )));
                    }
                    tree = stored;
                }
                {
                    let bytes = codec::encode(&tree).map_err(write_err)?;
                    let mut meta = txn.open_table(SM_META).map_err(write_err)?;
                    meta.insert(LOG_TREE, bytes.as_slice()).map_err(write_err)?;
                }
                txn.commit().map_err(write_err)?;
                tree
            }
        };
        Ok(StateMachineStore {
            db: Arc::new(db),
            applied,
            state: Arc::new(RwLock::new(state)),
        })
    }

    pub fn view(&self) -> StateView {
        StateView {
            db: self.db.clone(),
            state: self.state.clone(),
        }
    }

    fn state_snapshot(&self) -> State {
        self.view().with_state(Clone::clone)
    }

    fn all_audit_lines(&self) -> Result<Vec<String>, StorageError> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(AUDIT).map_err(read_err)?;
        let mut out = Vec::new();
        for item in table.iter().map_err(read_err)? {
            let (_, v) = item.map_err(read_err)?;
            out.push(String::from_utf8_lossy(v.value()).into_owned());
        }
        Ok(out)
    }
}

/// Builds snapshots from a consistent copy of the state machine.
pub struct SnapshotBuilder {
    db: Arc<Database>,
    payload: Result<Vec<u8>, String>,
    applied: Applied,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let data = self.payload.clone().map_err(|e| {
            StorageError::from(StorageIOError::read_state_machine(&std::io::Error::other(
                e,
            )))
        })?;
        let last = self.applied.last_applied;
        let snapshot_id = match last {
            Some(id) => format!(
                "{}-{}-{}",
                id.leader_id.term, id.leader_id.node_id, id.index
            ),
            None => "empty".to_owned(),
        };
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: self.applied.membership.clone(),
            snapshot_id,
        };
        let stored = codec::encode(&StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        })
        .map_err(write_err)?;
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || -> Result<(), StorageError> {
            let txn = db.begin_write().map_err(write_err)?;
            {
                let mut t = txn.open_table(SM_META).map_err(write_err)?;
                t.insert(SNAPSHOT, stored.as_slice()).map_err(write_err)?;
            }
            txn.commit().map_err(write_err)
        })
        .await
        .map_err(join_err)??;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.applied.last_applied, self.applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut responses = Vec::new();
        let mut emitted = Vec::new();
        let state_bytes;
        let proof_changes;
        let tree_nodes;
        let tree_bytes;
        {
            let mut state = self
                .state
                .write()
                .map_err(|_| write_err(std::io::Error::other("state lock poisoned")))?;
            for entry in entries {
                self.applied.last_applied = Some(entry.log_id);
                state.term = entry.log_id.leader_id.term;
                let response = match entry.payload {
                    EntryPayload::Blank => Response::Applied,
                    EntryPayload::Normal(command) => state.apply(&command, &mut emitted),
                    EntryPayload::Membership(m) => {
                        self.applied.membership = StoredMembership::new(Some(entry.log_id), m);
                        Response::Applied
                    }
                };
                responses.push(response);
            }
            // The term describes the entry being applied, not the state.
            state.term = 0;
            state_bytes = codec::encode(&*state).map_err(write_err)?;
            proof_changes = state.proofs.take_changes();
            tree_nodes = state.log.take_nodes();
            tree_bytes = codec::encode(&state.log).map_err(write_err)?;
        }
        let applied_bytes = codec::encode(&self.applied).map_err(write_err)?;
        let claim_rows = proof_changes
            .into_iter()
            .map(|change| match change {
                ProofChange::Claimed { key, claim } => {
                    codec::encode(&claim).map(|bytes| (key, Some(bytes)))
                }
                ProofChange::Forgotten { key } => Ok((key, None)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(write_err)?;
        let records: Vec<(u64, Vec<u8>)> = emitted
            .iter()
            .map(|r| (r.seq, r.to_canonical_line()))
            .collect();
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || -> Result<(), StorageError> {
            let mut txn = db.begin_write().map_err(write_err)?;
            // Not fsynced: see the module documentation.
            txn.set_durability(Durability::None).map_err(write_err)?;
            {
                let mut audit = txn.open_table(AUDIT).map_err(write_err)?;
                for (seq, line) in &records {
                    audit.insert(*seq, line.as_slice()).map_err(write_err)?;
                }
                let mut nodes = txn.open_table(MERKLE).map_err(write_err)?;
                for (node, hash) in &tree_nodes {
                    nodes.insert(*node, hash.as_slice()).map_err(write_err)?;
                }
                let mut idx = txn.open_table(IDX).map_err(write_err)?;
                for record in &emitted {
                    index_record(&mut idx, record)?;
                }
                let mut legacy = txn.open_table(PROOFS).map_err(write_err)?;
                let mut claims = txn.open_table(CLAIMS).map_err(write_err)?;
                let migrating = legacy.len().map_err(write_err)? > 0;
                for (key, claim) in &claim_rows {
                    match claim {
                        Some(bytes) => {
                            claims
                                .insert(key.as_str(), bytes.as_slice())
                                .map_err(write_err)?;
                        }
                        None => {
                            claims.remove(key.as_str()).map_err(write_err)?;
                        }
                    }
                    if migrating {
                        legacy.remove(key.as_str()).map_err(write_err)?;
                    }
                }
                let mut meta = txn.open_table(SM_META).map_err(write_err)?;
                meta.insert("state", state_bytes.as_slice())
                    .map_err(write_err)?;
                meta.insert(LOG_TREE, tree_bytes.as_slice())
                    .map_err(write_err)?;
                meta.insert(APPLIED, applied_bytes.as_slice())
                    .map_err(write_err)?;
            }
            txn.commit().map_err(write_err)
        })
        .await
        .map_err(join_err)??;
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        let payload = self
            .all_audit_lines()
            .map_err(|e| e.to_string())
            .and_then(|audit| {
                let state = self.state_snapshot();
                let claims = state
                    .proofs
                    .claims()
                    .map(|(k, c)| (k.to_owned(), c.clone()))
                    .collect();
                let log = Some(state.log.clone());
                codec::encode(&SnapshotPayload {
                    applied: self.applied.clone(),
                    state,
                    audit,
                    claims,
                    log,
                })
                .map_err(|e| e.to_string())
            });
        SnapshotBuilder {
            db: self.db.clone(),
            payload,
            applied: self.applied.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let payload: SnapshotPayload = codec::decode(&data).map_err(|e| {
            StorageError::from(StorageIOError::read_snapshot(Some(meta.signature()), &e))
        })?;
        let applied = Applied {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        let state_bytes = codec::encode(&payload.state).map_err(write_err)?;
        let applied_bytes = codec::encode(&applied).map_err(write_err)?;
        let stored = codec::encode(&StoredSnapshot {
            meta: meta.clone(),
            data,
        })
        .map_err(write_err)?;
        let db = self.db.clone();
        let audit = payload.audit;
        let claims = payload.claims;
        let carried = payload.log;
        let claim_rows = claims
            .iter()
            .map(|(k, c)| codec::encode(c).map(|bytes| (k.clone(), bytes)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(write_err)?;
        let log = tokio::task::spawn_blocking(move || -> Result<LogTree, StorageError> {
            let txn = db.begin_write().map_err(write_err)?;
            let log;
            {
                write_claims(&txn, &claim_rows)?;
                let mut table = txn.open_table(AUDIT).map_err(write_err)?;
                table.retain(|_, _| false).map_err(write_err)?;
                for line in &audit {
                    let record: AuditRecord = serde_json::from_str(line).map_err(write_err)?;
                    table
                        .insert(record.seq, line.as_bytes())
                        .map_err(write_err)?;
                }
                let mut meta_table = txn.open_table(SM_META).map_err(write_err)?;
                meta_table
                    .insert("state", state_bytes.as_slice())
                    .map_err(write_err)?;
                meta_table
                    .insert(APPLIED, applied_bytes.as_slice())
                    .map_err(write_err)?;
                meta_table
                    .insert(SNAPSHOT, stored.as_slice())
                    .map_err(write_err)?;
                drop(table);
                drop(meta_table);
                // The tree is derived from the records; a snapshot whose head disagrees with
                // its own records is refused rather than served.
                let mut rebuilt = rebuild_derived(&txn)?;
                if let Some(carried) = carried {
                    if carried.frontier != rebuilt.frontier {
                        return Err(write_err(std::io::Error::other(
                            "the snapshot's tree head does not match its audit records",
                        )));
                    }
                    rebuilt = carried;
                }
                let tree_bytes = codec::encode(&rebuilt).map_err(write_err)?;
                txn.open_table(SM_META)
                    .map_err(write_err)?
                    .insert(LOG_TREE, tree_bytes.as_slice())
                    .map_err(write_err)?;
                log = rebuilt;
            }
            txn.commit().map_err(write_err)?;
            Ok(log)
        })
        .await
        .map_err(join_err)??;
        self.applied = applied;
        let mut state = self
            .state
            .write()
            .map_err(|_| write_err(std::io::Error::other("state lock poisoned")))?;
        *state = payload.state;
        state.proofs = claims.into_iter().collect();
        state.log = log;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let stored: Option<StoredSnapshot> = get_meta(&self.db, SM_META, SNAPSHOT)?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
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
