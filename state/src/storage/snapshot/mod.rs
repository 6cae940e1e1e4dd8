//! Snapshots as files, streamed: a snapshot never holds the audit log, the state or the claim
//! set in memory as one value.
//!
//! A snapshot is a file under `snapshots/` next to `state-machine.redb` (`file`: magic, a
//! codec-encoded head, one frame per entity or claim row, one frame per audit record).
//!
//! Building one writes the rows and records straight from a redb read transaction (a
//! consistent copy taken when the builder was made) into the file; openraft sends it in chunks
//! read from the file, and the receiver writes the chunks into a file of its own. Installing
//! reads that file three times: once to check that its rows decode and its records hash to the
//! tree head it carries, then to write the records in batches, then the rows. Every record
//! batch only writes rows the node's committed log also has (a node that
//! installs a snapshot is behind it, and committed records are the same everywhere), so a
//! crash between batches leaves the node where it was, with some records already in place; the
//! applied id, entity and claim rows and tree head move in the last, fsynced transaction, which
//! redb writes through its page cache (bounded) rather than holding the rows. Snapshots
//! written before this format (one postcard blob in `sm_meta`) are read once and rewritten.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::entities;
use super::state_machine::{Applied, SnapshotPayload, StoredSnapshot};
use super::*;

mod file;

pub(super) use file::{Contents, HeadV2, Header, Reader, RowSink, SnapRow, write_v2};
use file::{invalid, io_err, is_streamed, temporary};

/// Records per write transaction while installing.
const BATCH: usize = 1024;
/// The file the receiving side of a transfer writes into.
const INCOMING: &str = "incoming.part";

/// Where the current snapshot is (`sm_meta`, key [`SNAPSHOT_FILE`]): its meta and file name.
#[derive(Serialize, Deserialize)]
pub(super) struct SnapshotFile {
    pub(super) meta: SnapshotMeta,
    pub(super) file: String,
}

impl codec::Persisted for SnapshotFile {}

pub(super) fn dir_of(db_path: &Path) -> PathBuf {
    db_path
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("snapshots")
}

fn file_name(meta: &SnapshotMeta) -> String {
    // Snapshot ids are `term-node-index` or `empty`: safe file names.
    format!("{}.snap", meta.snapshot_id)
}

/// Makes the snapshot file `tmp` (of `meta`) the current one — renamed to `<id>.snap`, the
/// directory fsynced, its place recorded — unless the current one is newer (an install finished
/// while this snapshot was being built), in which case `tmp` is dropped. Either way only the
/// current file remains. The caller holds the store's snapshot lock.
pub(super) fn publish(
    db: &Database,
    dir: &Path,
    meta: &SnapshotMeta,
    tmp: &Path,
) -> Result<(), StorageError> {
    let current = get_meta::<SnapshotFile>(db, SM_META, SNAPSHOT_FILE)?;
    if current.is_some_and(|c| c.meta.last_log_id > meta.last_log_id) {
        let _ = std::fs::remove_file(tmp);
        return Ok(());
    }
    let path = dir.join(file_name(meta));
    std::fs::rename(tmp, &path).map_err(io_err)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err)?;
    point_to(db, meta, &path)?;
    remove_other_files(dir, &path);
    Ok(())
}

/// Rewrites a legacy snapshot (one codec blob, formats 1–6) as a (temporary) snapshot file.
pub(super) fn rewrite_legacy(dir: &Path, bytes: &[u8]) -> Result<PathBuf, StorageError> {
    let payload: SnapshotPayload = codec::decode(bytes).map_err(read_err)?;
    let log = match payload.log {
        Some(log) => log,
        None => {
            let mut tree = LogTree::default();
            for line in &payload.audit {
                tree.push_record(line.as_bytes());
                tree.take_nodes();
            }
            tree
        }
    };
    let header = Header {
        applied: payload.applied,
        state: payload.state,
        claims: payload.claims,
        log,
        records: payload.audit.len() as u64,
    };
    let lines = payload.audit.into_iter().map(|l| Ok(l.into_bytes()));
    file::write_v1(dir, &header, lines)
}

/// Makes the file that a transfer's chunks are written into (an earlier, abandoned transfer's
/// file is dropped).
pub(super) fn incoming(dir: &Path) -> Result<File, StorageError> {
    std::fs::create_dir_all(dir).map_err(io_err)?;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join(INCOMING))
        .map_err(io_err)
}

/// Installs the snapshot in `received` (a file this node received, or any snapshot file):
/// checks it, keeps a copy as `dir/<id>.snap`, writes its records, then — in one fsynced
/// transaction — its state, claims, tree head and applied id. Returns what the head carried
/// (records, rows and, from a version-1 file, the state are on disk only).
pub(super) fn install(
    db: &Database,
    dir: &Path,
    meta: &SnapshotMeta,
    mut received: File,
) -> Result<Contents, StorageError> {
    // Our own copy, in this format (a legacy blob from an older peer is rewritten).
    let tmp = if is_streamed(&mut received)? {
        std::fs::create_dir_all(dir).map_err(io_err)?;
        let tmp = temporary(dir);
        if is_incoming(dir, &received) {
            // What this node received: the file is ours already.
            received.sync_all().map_err(io_err)?;
            std::fs::rename(dir.join(INCOMING), &tmp).map_err(io_err)?;
        } else {
            let mut out = File::create(&tmp).map_err(io_err)?;
            std::io::copy(&mut received, &mut out).map_err(io_err)?;
            out.sync_all().map_err(io_err)?;
        }
        tmp
    } else {
        let mut bytes = Vec::new();
        received.read_to_end(&mut bytes).map_err(io_err)?;
        rewrite_legacy(dir, &bytes)?
    };
    drop(received);
    let _ = std::fs::remove_file(dir.join(INCOMING));
    let installed = install_file(db, &tmp, meta);
    if installed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    let header = installed?;
    let path = dir.join(file_name(meta));
    std::fs::rename(&tmp, &path).map_err(io_err)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err)?;
    point_to(db, meta, &path)?;
    remove_other_files(dir, &path);
    Ok(header)
}

/// A record's number, read without the rest of it.
#[derive(Deserialize)]
struct Numbered {
    seq: u64,
}

/// Whether `file` is this node's `incoming.part` (the same inode).
fn is_incoming(dir: &Path, file: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(dir.join(INCOMING)), file.metadata()) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

/// Checks the snapshot file at `path` and writes what it holds into the database.
fn install_file(db: &Database, path: &Path, meta: &SnapshotMeta) -> Result<Contents, StorageError> {
    // Pass 1: every row decodes as its kind; the records hash to the head the snapshot
    // carries, and are numbered 1..=n.
    let mut reader = Reader::open(File::open(path).map_err(io_err)?)?;
    while let Some(row) = reader.next_row()? {
        entities::check_row(&row)?;
    }
    let mut tree = LogTree::default();
    let mut seq = 0u64;
    while let Some(line) = reader.next_record()? {
        seq += 1;
        let record: Numbered = serde_json::from_slice(&line).map_err(read_err)?;
        if record.seq != seq {
            return Err(invalid("the snapshot's records are not numbered 1..n"));
        }
        tree.push_record(&line);
        tree.take_nodes();
    }
    if tree.frontier != reader.contents.log.frontier {
        return Err(invalid(
            "the snapshot's tree head does not match its audit records",
        ));
    }

    // Pass 2: the records, the tree's hashes and the index rows, in batches.
    let mut reader = Reader::open(File::open(path).map_err(io_err)?)?;
    let mut tree = LogTree::default();
    loop {
        let mut txn = db.begin_write().map_err(write_err)?;
        txn.set_durability(Durability::None).map_err(write_err)?;
        let mut done = false;
        {
            let mut audit = txn.open_table(AUDIT).map_err(write_err)?;
            let mut nodes = txn.open_table(MERKLE).map_err(write_err)?;
            let mut idx = txn.open_table(IDX).map_err(write_err)?;
            for _ in 0..BATCH {
                let Some(line) = reader.next_record()? else {
                    done = true;
                    break;
                };
                let record: AuditRecord = serde_json::from_slice(&line).map_err(read_err)?;
                let replaced = audit
                    .insert(record.seq, line.as_slice())
                    .map_err(write_err)?
                    .map(|old| old.value().to_vec());
                if let Some(old) = replaced.filter(|old| *old != line) {
                    // A record this node had differently (its file was damaged or edited):
                    // its index rows go with it.
                    if let Ok(old) = serde_json::from_slice::<AuditRecord>(&old) {
                        unindex_record(&mut idx, &old)?;
                    }
                }
                tree.push_record(&line);
                for (node, hash) in tree.take_nodes() {
                    nodes.insert(node, hash.as_slice()).map_err(write_err)?;
                }
                index_record(&mut idx, &record)?;
            }
        }
        txn.commit().map_err(write_err)?;
        if done {
            break;
        }
    }
    finish(db, meta, path, &reader.contents)?;
    let Reader { contents, .. } = reader;
    Ok(contents)
}

/// The last transaction of an install: rows beyond the snapshot (none, unless the node was
/// ahead of it) go, and the entity and claim rows (read from the file at `path` once more, one
/// at a time), tree head and applied id are written, fsynced (the snapshot's place follows,
/// once its file has its final name).
fn finish(
    db: &Database,
    meta: &SnapshotMeta,
    path: &Path,
    header: &Contents,
) -> Result<(), StorageError> {
    let txn = db.begin_write().map_err(write_err)?;
    {
        let n = header.records;
        let mut audit = txn.open_table(AUDIT).map_err(write_err)?;
        let beyond = audit
            .last()
            .map_err(read_err)?
            .is_some_and(|(last, _)| last.value() > n);
        if beyond {
            audit.retain(|seq, _| seq <= n).map_err(write_err)?;
            txn.open_table(MERKLE)
                .map_err(write_err)?
                .retain(|(level, index), _| {
                    index
                        .checked_add(1)
                        .and_then(|end| end.checked_shl(u32::from(level)))
                        .is_some_and(|end| end <= n)
                })
                .map_err(write_err)?;
            txn.open_table(IDX)
                .map_err(write_err)?
                .retain(|(_, _, _, seq), _| seq <= n)
                .map_err(write_err)?;
        }
        drop(audit);
        match &header.inline {
            Some((state, claims)) => {
                let claims = claims
                    .iter()
                    .map(|(k, c)| codec::encode(c).map(|bytes| (k.clone(), bytes)))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(write_err)?;
                write_claims(&txn, &claims)?;
                entities::write_all(&txn, state)?;
            }
            None => {
                let mut rows = Reader::open(File::open(path).map_err(io_err)?)?;
                entities::load_rows(&txn, || rows.next_row())?;
                let tail = header.audit_tail.as_ref().map(encode).transpose()?;
                let mut meta_table = txn.open_table(SM_META).map_err(write_err)?;
                match tail {
                    Some(tail) => meta_table.insert(entities::AUDIT_TAIL, tail.as_slice()),
                    None => meta_table.remove(entities::AUDIT_TAIL),
                }
                .map_err(write_err)?;
            }
        }
        let mut meta_table = txn.open_table(SM_META).map_err(write_err)?;
        meta_table
            .remove(entities::LEGACY_STATE)
            .map_err(write_err)?;
        meta_table
            .insert(APPLIED, encode(&header_applied(meta))?.as_slice())
            .map_err(write_err)?;
        meta_table
            .insert(LOG_TREE, encode(&header.log)?.as_slice())
            .map_err(write_err)?;
        meta_table
            .insert(
                DERIVED_VERSION_KEY,
                DERIVED_VERSION.to_be_bytes().as_slice(),
            )
            .map_err(write_err)?;
        meta_table.remove(SNAPSHOT).map_err(write_err)?;
    }
    txn.commit().map_err(write_err)
}

/// The applied id a snapshot stands for: its own meta (not whatever its header says).
fn header_applied(meta: &SnapshotMeta) -> Applied {
    Applied {
        last_applied: meta.last_log_id,
        membership: meta.last_membership.clone(),
    }
}

/// Records where the current snapshot is, fsynced (after [`write_file`]), and drops the
/// legacy blob if there was one.
pub(super) fn point_to(
    db: &Database,
    meta: &SnapshotMeta,
    path: &Path,
) -> Result<(), StorageError> {
    let pointer = SnapshotFile {
        meta: meta.clone(),
        file: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let bytes = codec::encode(&pointer).map_err(write_err)?;
    let txn = db.begin_write().map_err(write_err)?;
    {
        let mut t = txn.open_table(SM_META).map_err(write_err)?;
        t.insert(SNAPSHOT_FILE, bytes.as_slice())
            .map_err(write_err)?;
        t.remove(SNAPSHOT).map_err(write_err)?;
    }
    txn.commit().map_err(write_err)
}

/// Deletes every snapshot file in `dir` but `keep` (readers holding one open keep reading it).
pub(super) fn remove_other_files(dir: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path != keep && path.extension().is_some_and(|e| e == "snap") {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The current snapshot's meta and an open handle on its file, if there is one.
pub(super) fn current(
    db: &Database,
    dir: &Path,
) -> Result<Option<(SnapshotMeta, File)>, StorageError> {
    let Some(pointer) = get_meta::<SnapshotFile>(db, SM_META, SNAPSHOT_FILE)? else {
        return Ok(None);
    };
    let file = File::open(dir.join(&pointer.file)).map_err(io_err)?;
    Ok(Some((pointer.meta, file)))
}

/// A snapshot still stored the old way (one blob in `sm_meta`) is rewritten as a file, once.
pub(super) fn migrate_legacy(db: &Database, dir: &Path) -> Result<(), StorageError> {
    let Some(stored) = get_meta::<StoredSnapshot>(db, SM_META, SNAPSHOT)? else {
        return Ok(());
    };
    let tmp = rewrite_legacy(dir, &stored.data)?;
    publish(db, dir, &stored.meta, &tmp)
}

/// Removes what a crash left behind: temporary files and a half-received transfer.
pub(super) fn remove_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "tmp" || e == "part") {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
    codec::encode(value).map_err(write_err)
}

#[cfg(test)]
mod tests;
