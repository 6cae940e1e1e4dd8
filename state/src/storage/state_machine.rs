//! The state machine store: apply, snapshots.

use super::*;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Applied {
    pub(super) last_applied: Option<LogId>,
    pub(super) membership: StoredMembership,
}

/// What a snapshot carried up to format 6, in one blob (read from older peers and files; new
/// snapshots are files, `snapshot/`).
#[derive(Serialize, Deserialize)]
pub(super) struct SnapshotPayload {
    pub(super) applied: Applied,
    pub(super) state: State,
    /// Canonical JSON lines of every audit record, in sequence order.
    pub(super) audit: Vec<String>,
    /// The claim set (format v5; formats 2–4 carried bare proofs), which the state's own
    /// encoding leaves out.
    pub(super) claims: Vec<(String, Claim)>,
    /// The audit log's tree head, cut and checkpoint (format v6; `None` from older snapshots,
    /// whose tree is rebuilt from `audit`).
    pub(super) log: Option<LogTree>,
}

/// A snapshot written by format v5: no log tree.
#[derive(Deserialize)]
pub(super) struct SnapshotPayloadV5 {
    applied: Applied,
    state: State,
    audit: Vec<String>,
    claims: Vec<(String, Claim)>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct StoredSnapshot {
    pub(super) meta: SnapshotMeta,
    pub(super) data: Vec<u8>,
}

/// A snapshot written by format v1: it predates one-time proofs (and threshold groups).
#[derive(Deserialize)]
pub(super) struct SnapshotPayloadV1 {
    applied: Applied,
    state: crate::machine::StateV2,
    audit: Vec<String>,
}

/// A snapshot written by format v2: its state predates threshold groups.
#[derive(Deserialize)]
pub(super) struct SnapshotPayloadV2 {
    applied: Applied,
    state: crate::machine::StateV2,
    audit: Vec<String>,
    proofs: Vec<(String, u64)>,
}

/// A snapshot written by formats 3 and 4: bare proofs instead of claims.
#[derive(Deserialize)]
pub(super) struct SnapshotPayloadV4 {
    applied: Applied,
    state: State,
    audit: Vec<String>,
    proofs: Vec<(String, u64)>,
}

pub(super) fn used_claims(proofs: Vec<(String, u64)>) -> Vec<(String, Claim)> {
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
    /// Where snapshot files live (`snapshots/` beside the database).
    dir: std::path::PathBuf,
    /// Held while a snapshot file becomes current or is read (a build finishing, an install,
    /// a sender opening the current file), so none of them removes a file another one needs.
    files: Arc<Mutex<()>>,
    applied: Applied,
    state: Arc<RwLock<State>>,
    writes: Arc<entities::WriteCounter>,
    durable: DurablePacer,
}

/// When an apply's commit is made durable (fsynced) instead of `Durability::None`.
///
/// redb cannot reuse a page of the last durable state that a non-durable commit freed: it keeps
/// such pages in in-memory lists, which every later commit works through
/// (`process_unpersisted_data_freed`), until the next durable commit. With durable commits only
/// at snapshots those lists grew for the whole interval between two snapshots. One fsynced
/// commit per second, or per `DURABLE_EVERY` commits, bounds them; it also bounds what a
/// restart re-applies from the log. Measured: docs/benchmarks.md, ADR 0031.
#[derive(Debug)]
struct DurablePacer {
    since: u32,
    last: std::time::Instant,
}

/// Non-durable state-machine commits between two durable ones, at most.
const DURABLE_EVERY: u32 = 256;
/// Time between two durable state-machine commits, at most (under load).
const DURABLE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

impl DurablePacer {
    fn new(now: std::time::Instant) -> DurablePacer {
        DurablePacer {
            since: 0,
            last: now,
        }
    }

    /// Whether the commit about to be made at `now` should be durable; counts it.
    fn next(&mut self, now: std::time::Instant) -> bool {
        self.since = self.since.saturating_add(1);
        if self.since >= DURABLE_EVERY
            || now.saturating_duration_since(self.last) >= DURABLE_INTERVAL
        {
            self.since = 0;
            self.last = now;
            true
        } else {
            false
        }
    }
}

impl StateMachineStore {
    pub fn open(path: &Path) -> Result<StateMachineStore, StorageError> {
        Self::open_with_cache(path, None)
    }

    /// As [`StateMachineStore::open`], with redb's page cache bounded to `cache_bytes`.
    pub fn open_with_cache(
        path: &Path,
        cache_bytes: Option<usize>,
    ) -> Result<StateMachineStore, StorageError> {
        let db = create_with_cache(path, cache_bytes)?;
        let txn = db.begin_write().map_err(write_err)?;
        txn.open_table(SM_META).map_err(write_err)?;
        txn.open_table(AUDIT).map_err(write_err)?;
        txn.open_table(PROOFS).map_err(write_err)?;
        txn.open_table(CLAIMS).map_err(write_err)?;
        txn.open_table(MERKLE).map_err(write_err)?;
        txn.open_table(IDX).map_err(write_err)?;
        entities::create_tables(&txn)?;
        txn.commit().map_err(write_err)?;
        let applied: Applied = get_meta(&db, SM_META, APPLIED)?.unwrap_or_default();
        entities::migrate(&db)?;
        let mut state = entities::read_state(&db)?;
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
        let dir = snapshot::dir_of(path);
        snapshot::remove_leftovers(&dir);
        snapshot::migrate_legacy(&db, &dir)?;
        Ok(StateMachineStore {
            db: Arc::new(db),
            dir,
            files: Arc::new(Mutex::new(())),
            applied,
            state: Arc::new(RwLock::new(state)),
            writes: Arc::new(entities::WriteCounter::default()),
            durable: DurablePacer::new(std::time::Instant::now()),
        })
    }

    /// Entity rows written by this store's applies so far (cumulative): an apply writes the
    /// rows it changed, so the difference across one apply is what it touched.
    pub fn entity_writes(&self) -> entities::EntityWrites {
        self.writes.get()
    }

    pub fn view(&self) -> StateView {
        StateView {
            db: self.db.clone(),
            state: self.state.clone(),
        }
    }
}

/// Builds a snapshot file from a consistent copy of the state machine: the state as applied
/// when the builder was made, and a read transaction of the same moment for the records.
pub struct SnapshotBuilder {
    db: Arc<Database>,
    dir: std::path::PathBuf,
    files: Arc<Mutex<()>>,
    copy: Option<(snapshot::HeadV2, redb::ReadTransaction)>,
    failed: Option<String>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (header, txn) = self.copy.take().ok_or_else(|| {
            let why = self
                .failed
                .clone()
                .unwrap_or_else(|| "built already".into());
            StorageError::from(StorageIOError::read_state_machine(&std::io::Error::other(
                why,
            )))
        })?;
        let last = header.applied.last_applied;
        let snapshot_id = match last {
            Some(id) => format!(
                "{}-{}-{}",
                id.leader_id.term, id.leader_id.node_id, id.index
            ),
            None => "empty".to_owned(),
        };
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: header.applied.membership.clone(),
            snapshot_id,
        };
        let (db, dir, at) = (self.db.clone(), self.dir.clone(), meta.clone());
        let files = self.files.clone();
        let file = tokio::task::spawn_blocking(move || -> Result<std::fs::File, StorageError> {
            let table = txn.open_table(AUDIT).map_err(read_err)?;
            let lines = table
                .iter()
                .map_err(read_err)?
                .map(|item| item.map(|(_, v)| v.value().to_vec()).map_err(read_err));
            let rows = |sink: &mut snapshot::RowSink<'_>| entities::dump(&txn, sink);
            let tmp = snapshot::write_v2(&dir, &header, rows, lines)?;
            // Opened before it is published: openraft gets the snapshot it asked for even if
            // a newer one (installed meanwhile) wins and this file is removed.
            let file = std::fs::File::open(&tmp).map_err(write_err)?;
            let _files = files
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            snapshot::publish(&db, &dir, &at, &tmp)?;
            Ok(file)
        })
        .await
        .map_err(join_err)??;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
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
        let changes;
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
            let changed = state.take_changes();
            changes = entities::EncodedChanges::encode(changed, state.audit_tail.as_ref())?;
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
        let (db, writes) = (self.db.clone(), self.writes.clone());
        let durability = if self.durable.next(std::time::Instant::now()) {
            Durability::Immediate
        } else {
            Durability::None
        };
        tokio::task::spawn_blocking(move || -> Result<(), StorageError> {
            let mut txn = db.begin_write().map_err(write_err)?;
            // Mostly not fsynced (see the module documentation); durable now and then, which
            // lets redb reuse the pages earlier commits freed (`DurablePacer`).
            txn.set_durability(durability).map_err(write_err)?;
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
                let (rows, bytes) = changes.write(&txn)?;
                writes.add(rows, bytes);
                let mut meta = txn.open_table(SM_META).map_err(write_err)?;
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
        // The rows and records come from a read transaction taken now (every apply so far has
        // committed); only the tail and the tree head are copied from memory.
        let (audit_tail, log) = self
            .view()
            .with_state(|s| (s.audit_tail.clone(), s.log.clone()));
        let copy = self
            .db
            .begin_read()
            .map_err(|e| e.to_string())
            .and_then(|txn| {
                let records = txn
                    .open_table(AUDIT)
                    .and_then(|t| Ok(t.len()?))
                    .map_err(|e| e.to_string())?;
                let rows = entities::count_rows(&txn).map_err(|e| e.to_string())?;
                let header = snapshot::HeadV2 {
                    applied: self.applied.clone(),
                    audit_tail,
                    log,
                    rows,
                    records,
                };
                Ok((header, txn))
            });
        let (copy, failed) = match copy {
            Ok(copy) => (Some(copy), None),
            Err(e) => (None, Some(e)),
        };
        SnapshotBuilder {
            db: self.db.clone(),
            dir: self.dir.clone(),
            files: self.files.clone(),
            copy,
            failed,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let file = snapshot::incoming(&self.dir)?;
        Ok(Box::new(tokio::fs::File::from_std(file)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let received = snapshot.into_std().await;
        let (db, dir, at) = (self.db.clone(), self.dir.clone(), meta.clone());
        let files = self.files.clone();
        let installed = tokio::task::spawn_blocking(move || {
            let _files = files
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let contents = snapshot::install(&db, &dir, &at, received)?;
            // The installed rows are the state now: read back one table at a time.
            let mut installed = entities::read_state(&db)?;
            installed.proofs = read_proofs(&db)?;
            installed.log = contents.log;
            Ok::<_, StorageError>(installed)
        })
        .await
        .map_err(join_err)??;
        self.applied = Applied {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        let mut state = self
            .state
            .write()
            .map_err(|_| write_err(std::io::Error::other("state lock poisoned")))?;
        *state = installed;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let (db, dir, files) = (self.db.clone(), self.dir.clone(), self.files.clone());
        let current = tokio::task::spawn_blocking(move || {
            let _files = files
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            snapshot::current(&db, &dir)
        })
        .await
        .map_err(join_err)??;
        Ok(current.map(|(meta, file)| Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        }))
    }
}

#[cfg(test)]
mod pacer_tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_durable_commit_comes_every_durable_every_commits_or_after_the_interval() {
        let t0 = Instant::now();
        let mut pacer = DurablePacer::new(t0);
        let kinds: Vec<bool> = (0..DURABLE_EVERY * 2).map(|_| pacer.next(t0)).collect();
        assert_eq!(kinds.iter().filter(|d| **d).count(), 2);
        assert!(kinds[DURABLE_EVERY as usize - 1] && kinds[DURABLE_EVERY as usize * 2 - 1]);
        // A quiet node: the first commit a second later is durable, the next one not.
        assert!(pacer.next(t0 + DURABLE_INTERVAL));
        assert!(!pacer.next(t0 + DURABLE_INTERVAL + Duration::from_millis(1)));
    }
}
