//! The Raft log store.

use super::*;

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
