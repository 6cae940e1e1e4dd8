//! Read-only view of the applied state and the audit log (quota, toggles, approvals, audit
//! reads, proofs and look-ups).

use super::*;

/// Read-only view of the applied state for the node (quota, toggles, approvals, audit reads).
#[derive(Clone)]
pub struct StateView {
    pub(super) db: Arc<Database>,
    pub(super) state: Arc<RwLock<State>>,
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
