//! The replicated state as rows: one table per kind of entity, keyed by the entity's key, the
//! value its codec encoding (ADR 0027). An apply batch writes the rows `State::take_changes`
//! names and no others; opening a store reads the tables back; a file from before (the whole
//! `State` as one `sm_meta` row) is migrated once, on open.

use super::*;
use crate::command::{Approval, KeyEntry, ThresholdGroup, Toggle};
use crate::machine::StateChanges;
use crate::machine::{AuditTail, Ledger, LedgerKey, Reservation};

/// `(tenant, plan)` → `Ledger`.
pub(super) const LEDGERS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("st_ledgers");
/// Reservation id → `Reservation`.
pub(super) const RESERVATIONS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("st_reservations");
/// Key id → `KeyEntry`.
pub(super) const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("st_keys");
/// Toggle name → `Toggle`.
pub(super) const TOGGLES: TableDefinition<&str, &[u8]> = TableDefinition::new("st_toggles");
/// Approval id → `Approval`.
pub(super) const APPROVALS: TableDefinition<&str, &[u8]> = TableDefinition::new("st_approvals");
/// Key id → `ThresholdGroup`.
pub(super) const GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("st_groups");
/// The audit chain's tail, in `SM_META`.
pub(super) const AUDIT_TAIL: &str = "audit_tail";
/// The whole `State` as one row: how files before ADR 0027 kept it (migrated on open).
pub(super) const LEGACY_STATE: &str = "state";

impl codec::Persisted for Ledger {}
impl codec::Persisted for Reservation {}
impl codec::Persisted for KeyEntry {}
impl codec::Persisted for Toggle {}
impl codec::Persisted for Approval {}
impl codec::Persisted for ThresholdGroup {}
impl codec::Persisted for AuditTail {}

/// Entity rows written through one store, cumulative (what the tests and the bench read).
#[derive(Debug, Default)]
pub struct WriteCounter {
    rows: std::sync::atomic::AtomicU64,
    bytes: std::sync::atomic::AtomicU64,
}

/// Rows and bytes of entity rows written (or removed: a removal counts as a row of 0 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntityWrites {
    pub rows: u64,
    pub bytes: u64,
}

impl WriteCounter {
    pub(super) fn add(&self, rows: u64, bytes: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.rows.fetch_add(rows, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
    }

    pub(super) fn get(&self) -> EntityWrites {
        use std::sync::atomic::Ordering::Relaxed;
        EntityWrites {
            rows: self.rows.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
        }
    }
}

/// One changed row, encoded: `(key, second key part, value)`; the second part is the ledger's
/// plan (empty for the other kinds) and `None` removes the row.
pub(super) type Row = (String, String, Option<Vec<u8>>);

/// A batch's changed rows, encoded per kind, ready for the write transaction.
#[derive(Default)]
pub(super) struct EncodedChanges {
    pub(super) ledgers: Vec<Row>,
    pub(super) reservations: Vec<Row>,
    pub(super) keys: Vec<Row>,
    pub(super) toggles: Vec<Row>,
    pub(super) approvals: Vec<Row>,
    pub(super) groups: Vec<Row>,
    pub(super) audit_tail: Option<Vec<u8>>,
}

fn rows<V: Serialize>(changes: Vec<(String, Option<V>)>) -> Result<Vec<Row>, codec::CodecError> {
    changes
        .into_iter()
        .map(|(k, v)| Ok((k, String::new(), v.map(|v| codec::encode(&v)).transpose()?)))
        .collect()
}

impl EncodedChanges {
    pub(super) fn encode(
        changes: StateChanges,
        audit_tail: Option<&AuditTail>,
    ) -> Result<EncodedChanges, StorageError> {
        let ledgers = changes
            .ledgers
            .into_iter()
            .map(|(k, v)| Ok((k.tenant, k.plan, v.map(|v| codec::encode(&v)).transpose()?)))
            .collect::<Result<Vec<_>, codec::CodecError>>();
        Ok(EncodedChanges {
            ledgers: ledgers.map_err(write_err)?,
            reservations: rows(changes.reservations).map_err(write_err)?,
            keys: rows(changes.keys).map_err(write_err)?,
            toggles: rows(changes.toggles).map_err(write_err)?,
            approvals: rows(changes.approvals).map_err(write_err)?,
            groups: rows(changes.threshold_groups).map_err(write_err)?,
            audit_tail: audit_tail
                .map(codec::encode)
                .transpose()
                .map_err(write_err)?,
        })
    }

    /// Writes the rows in `txn`; returns (rows, bytes) written.
    pub(super) fn write(&self, txn: &redb::WriteTransaction) -> Result<(u64, u64), StorageError> {
        let mut count = (0u64, 0u64);
        {
            let mut t = txn.open_table(LEDGERS).map_err(write_err)?;
            for (tenant, plan, value) in &self.ledgers {
                let key = (tenant.as_str(), plan.as_str());
                match value {
                    Some(v) => t.insert(key, v.as_slice()).map(drop),
                    None => t.remove(key).map(drop),
                }
                .map_err(write_err)?;
                count.0 += 1;
                count.1 += value.as_ref().map_or(0, |v| v.len() as u64);
            }
        }
        for (table, rows) in [
            (RESERVATIONS, &self.reservations),
            (KEYS, &self.keys),
            (TOGGLES, &self.toggles),
            (APPROVALS, &self.approvals),
            (GROUPS, &self.groups),
        ] {
            if rows.is_empty() {
                continue;
            }
            let mut t = txn.open_table(table).map_err(write_err)?;
            for (key, _, value) in rows {
                match value {
                    Some(v) => t.insert(key.as_str(), v.as_slice()).map(drop),
                    None => t.remove(key.as_str()).map(drop),
                }
                .map_err(write_err)?;
                count.0 += 1;
                count.1 += value.as_ref().map_or(0, |v| v.len() as u64);
            }
        }
        let mut meta = txn.open_table(SM_META).map_err(write_err)?;
        match &self.audit_tail {
            Some(tail) => meta.insert(AUDIT_TAIL, tail.as_slice()).map(drop),
            None => meta.remove(AUDIT_TAIL).map(drop),
        }
        .map_err(write_err)?;
        Ok(count)
    }
}

/// Creates the entity tables (a new file, or one from before them).
pub(super) fn create_tables(txn: &redb::WriteTransaction) -> Result<(), StorageError> {
    txn.open_table(LEDGERS).map_err(write_err)?;
    for table in [RESERVATIONS, KEYS, TOGGLES, APPROVALS, GROUPS] {
        txn.open_table(table).map_err(write_err)?;
    }
    Ok(())
}

fn read_table<V: codec::Persisted>(
    txn: &redb::ReadTransaction,
    def: TableDefinition<&str, &[u8]>,
) -> Result<BTreeMap<String, V>, StorageError> {
    let table = txn.open_table(def).map_err(read_err)?;
    let mut out = BTreeMap::new();
    for item in table.iter().map_err(read_err)? {
        let (k, v) = item.map_err(read_err)?;
        out.insert(
            k.value().to_owned(),
            codec::decode(v.value()).map_err(read_err)?,
        );
    }
    Ok(out)
}

/// The state the tables hold (without proofs and the log tree, which have rows of their own).
pub(super) fn read_state(db: &Database) -> Result<State, StorageError> {
    let txn = db.begin_read().map_err(read_err)?;
    let mut ledgers = BTreeMap::new();
    let table = txn.open_table(LEDGERS).map_err(read_err)?;
    for item in table.iter().map_err(read_err)? {
        let (k, v) = item.map_err(read_err)?;
        let (tenant, plan) = k.value();
        let key = LedgerKey {
            tenant: tenant.to_owned(),
            plan: plan.to_owned(),
        };
        ledgers.insert(key, codec::decode(v.value()).map_err(read_err)?);
    }
    let meta = txn.open_table(SM_META).map_err(read_err)?;
    let audit_tail = match meta.get(AUDIT_TAIL).map_err(read_err)? {
        Some(v) => Some(codec::decode(v.value()).map_err(read_err)?),
        None => None,
    };
    Ok(State {
        ledgers: ledgers.into(),
        reservations: read_table(&txn, RESERVATIONS)?.into(),
        audit_tail,
        keys: read_table(&txn, KEYS)?.into(),
        toggles: read_table(&txn, TOGGLES)?.into(),
        approvals: read_table(&txn, APPROVALS)?.into(),
        threshold_groups: read_table(&txn, GROUPS)?.into(),
        ..State::default()
    })
}

/// Replaces every entity row with `state`'s (a migrated file, a format-1 snapshot's state).
pub(super) fn write_all(txn: &redb::WriteTransaction, state: &State) -> Result<(), StorageError> {
    clear(txn)?;
    let all = StateChanges {
        ledgers: state
            .ledgers
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect(),
        reservations: all_rows(&state.reservations),
        keys: all_rows(&state.keys),
        toggles: all_rows(&state.toggles),
        approvals: all_rows(&state.approvals),
        threshold_groups: all_rows(&state.threshold_groups),
    };
    EncodedChanges::encode(all, state.audit_tail.as_ref())?.write(txn)?;
    Ok(())
}

fn all_rows<V: Clone>(map: &BTreeMap<String, V>) -> Vec<(String, Option<V>)> {
    map.iter()
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect()
}

/// Empties every entity table and the audit tail.
pub(super) fn clear(txn: &redb::WriteTransaction) -> Result<(), StorageError> {
    txn.open_table(LEDGERS)
        .map_err(write_err)?
        .retain(|_, _| false)
        .map_err(write_err)?;
    for table in [RESERVATIONS, KEYS, TOGGLES, APPROVALS, GROUPS] {
        txn.open_table(table)
            .map_err(write_err)?
            .retain(|_, _| false)
            .map_err(write_err)?;
    }
    txn.open_table(SM_META)
        .map_err(write_err)?
        .remove(AUDIT_TAIL)
        .map_err(write_err)?;
    Ok(())
}

/// A file from before the entity tables keeps the whole state in one `sm_meta` row: its
/// entities become rows and the row goes, in one transaction (run again after a crash).
pub(super) fn migrate(db: &Database) -> Result<(), StorageError> {
    let Some(state) = get_meta::<State>(db, SM_META, LEGACY_STATE)? else {
        return Ok(());
    };
    let txn = db.begin_write().map_err(write_err)?;
    write_all(&txn, &state)?;
    txn.open_table(SM_META)
        .map_err(write_err)?
        .remove(LEGACY_STATE)
        .map_err(write_err)?;
    txn.commit().map_err(write_err)
}

/// Which table a snapshot row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum RowKind {
    Ledger,
    Reservation,
    Key,
    Toggle,
    Approval,
    Group,
    Claim,
}

const BY_NAME: [(RowKind, TableDefinition<&str, &[u8]>); 6] = [
    (RowKind::Reservation, RESERVATIONS),
    (RowKind::Key, KEYS),
    (RowKind::Toggle, TOGGLES),
    (RowKind::Approval, APPROVALS),
    (RowKind::Group, GROUPS),
    (RowKind::Claim, CLAIMS),
];

/// How many rows [`dump`] writes from `txn`.
pub(super) fn count_rows(txn: &redb::ReadTransaction) -> Result<u64, StorageError> {
    let mut n = txn
        .open_table(LEDGERS)
        .and_then(|t| Ok(t.len()?))
        .map_err(read_err)?;
    for (_, def) in BY_NAME {
        n += txn
            .open_table(def)
            .and_then(|t| Ok(t.len()?))
            .map_err(read_err)?;
    }
    n += txn
        .open_table(PROOFS)
        .and_then(|t| Ok(t.len()?))
        .map_err(read_err)?;
    Ok(n)
}

/// Every entity and claim row of `txn`, one at a time, into `sink` (a snapshot being built).
pub(super) fn dump(
    txn: &redb::ReadTransaction,
    sink: &mut snapshot::RowSink<'_>,
) -> Result<(), StorageError> {
    let table = txn.open_table(LEDGERS).map_err(read_err)?;
    for item in table.iter().map_err(read_err)? {
        let (k, v) = item.map_err(read_err)?;
        let (tenant, plan) = k.value();
        sink.push(&snapshot::SnapRow {
            kind: RowKind::Ledger,
            key: tenant.to_owned(),
            plan: plan.to_owned(),
            value: v.value().to_vec(),
        })?;
    }
    for (kind, def) in BY_NAME {
        let table = txn.open_table(def).map_err(read_err)?;
        for item in table.iter().map_err(read_err)? {
            let (k, v) = item.map_err(read_err)?;
            sink.push(&snapshot::SnapRow {
                kind,
                key: k.value().to_owned(),
                plan: String::new(),
                value: v.value().to_vec(),
            })?;
        }
    }
    // Proofs a format 2–4 node stored and not yet rewritten: sent as the claims they are.
    let table = txn.open_table(PROOFS).map_err(read_err)?;
    for item in table.iter().map_err(read_err)? {
        let (k, v) = item.map_err(read_err)?;
        sink.push(&snapshot::SnapRow {
            kind: RowKind::Claim,
            key: k.value().to_owned(),
            plan: String::new(),
            value: codec::encode(&Claim::used(v.value())).map_err(write_err)?,
        })?;
    }
    Ok(())
}

/// Whether `row`'s value decodes as its kind (checked before an install writes anything).
pub(super) fn check_row(row: &snapshot::SnapRow) -> Result<(), StorageError> {
    fn ok<T: codec::Persisted>(bytes: &[u8]) -> Result<(), StorageError> {
        codec::decode::<T>(bytes).map(drop).map_err(read_err)
    }
    match row.kind {
        RowKind::Ledger => ok::<Ledger>(&row.value),
        RowKind::Reservation => ok::<Reservation>(&row.value),
        RowKind::Key => ok::<KeyEntry>(&row.value),
        RowKind::Toggle => ok::<Toggle>(&row.value),
        RowKind::Approval => ok::<Approval>(&row.value),
        RowKind::Group => ok::<ThresholdGroup>(&row.value),
        RowKind::Claim => ok::<Claim>(&row.value),
    }
}

/// Replaces every entity and claim row with the rows `next` yields (a snapshot's), in `txn`.
pub(super) fn load_rows(
    txn: &redb::WriteTransaction,
    mut next: impl FnMut() -> Result<Option<snapshot::SnapRow>, StorageError>,
) -> Result<(), StorageError> {
    clear(txn)?;
    write_claims(txn, &[])?;
    let mut ledgers = txn.open_table(LEDGERS).map_err(write_err)?;
    let mut tables = BY_NAME
        .iter()
        .map(|(kind, def)| Ok((*kind, txn.open_table(*def).map_err(write_err)?)))
        .collect::<Result<Vec<_>, StorageError>>()?;
    while let Some(row) = next()? {
        if row.kind == RowKind::Ledger {
            ledgers
                .insert((row.key.as_str(), row.plan.as_str()), row.value.as_slice())
                .map_err(write_err)?;
            continue;
        }
        let Some((_, table)) = tables.iter_mut().find(|(kind, _)| *kind == row.kind) else {
            return Err(write_err(std::io::Error::other("a row of no known table")));
        };
        table
            .insert(row.key.as_str(), row.value.as_slice())
            .map_err(write_err)?;
    }
    Ok(())
}
