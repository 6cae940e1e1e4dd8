//! The claim set's and the derived tables' rows: claims, the Merkle hashes and the look-up
//! indexes, rebuilt from the records when their layout changes.

use super::*;

pub(super) fn read_proofs(db: &Database) -> Result<crate::machine::ProofSet, StorageError> {
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
pub(super) fn write_claims(
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
pub(super) fn rebuild_derived(txn: &redb::WriteTransaction) -> Result<LogTree, StorageError> {
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
pub(super) fn index_record(
    idx: &mut redb::Table<(u8, &str, &str, u64), ()>,
    record: &AuditRecord,
) -> Result<(), StorageError> {
    for (kind, scope, value) in crate::index::rows(record) {
        idx.insert((kind, scope.as_str(), value.as_str(), record.seq), ())
            .map_err(write_err)?;
    }
    Ok(())
}

/// Removes the look-up rows of `record` (a record replaced by an installed snapshot's).
pub(super) fn unindex_record(
    idx: &mut redb::Table<(u8, &str, &str, u64), ()>,
    record: &AuditRecord,
) -> Result<(), StorageError> {
    for (kind, scope, value) in crate::index::rows(record) {
        idx.remove((kind, scope.as_str(), value.as_str(), record.seq))
            .map_err(write_err)?;
    }
    Ok(())
}

pub(super) fn derived_version(db: &Database) -> Result<u64, StorageError> {
    let txn = db.begin_read().map_err(read_err)?;
    let meta = txn.open_table(SM_META).map_err(read_err)?;
    Ok(meta
        .get(DERIVED_VERSION_KEY)
        .map_err(read_err)?
        .and_then(|v| v.value().try_into().ok())
        .map_or(0, u64::from_be_bytes))
}

/// Stored subtree hashes read through an open table.
pub(super) struct TableHashes<'a, T: ReadableTable<(u8, u64), &'static [u8]>>(pub(super) &'a T);

impl<T: ReadableTable<(u8, u64), &'static [u8]>> HashStore for TableHashes<'_, T> {
    fn get(&self, level: u8, index: u64) -> Option<Hash> {
        let value = self.0.get((level, index)).ok()??;
        value.value().try_into().ok()
    }
}
