//! The local audit log: append-only JSON lines under `DATA_DIR/audit/audit.log`, hash-chained
//! (see `stella_state::audit`) and fsynced before any caller is told its record exists.
//!
//! Group commit: one writer thread owns the file. It takes every append that is waiting (up to
//! `MAX_BATCH`), writes them in one `write`, calls `fdatasync` once, and only then answers each
//! caller. Throughput therefore grows with concurrency instead of being capped at one fsync per
//! signature. The mailbox is bounded; a full mailbox is an overload, answered with 503.
//!
//! Crash safety: a crash can leave a torn last line (never acknowledged, since the fsync had not
//! returned). On open, a torn tail is cut off; any other damage (a bad line followed by good
//! ones, a broken hash link) stops the node instead of silently continuing a broken chain.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use stella_state::{AuditDraft, AuditRecord, verify_chain};
use tokio::sync::{mpsc, oneshot};

use crate::Error;

const MAX_BATCH: usize = 1024;
pub const AUDIT_FILE: &str = "audit.log";

type Reply = oneshot::Sender<Result<AuditRecord, Error>>;

struct Append {
    draft: AuditDraft,
    reply: Reply,
}

/// Clonable handle to the audit writer.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Append>,
    healthy: Arc<AtomicBool>,
}

/// Records recovered when the log was opened.
#[derive(Debug)]
pub struct Recovered {
    pub records: u64,
    pub truncated_bytes: u64,
}

impl AuditLog {
    /// Opens (or creates) the log in `dir`, verifies the whole chain and starts the writer.
    pub fn open(dir: &Path, queue: usize) -> Result<(AuditLog, Recovered, JoinHandle<()>), Error> {
        std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        let path = dir.join(AUDIT_FILE);
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(Error::io(format!("opening {}", path.display())))?;
        if !existed {
            fsync_dir(dir)?;
        }
        let (records, valid_len) = read_records(&mut file, &path)?;
        let total_len = file
            .metadata()
            .map_err(Error::io("audit log metadata"))?
            .len();
        if valid_len < total_len {
            file.set_len(valid_len)
                .map_err(Error::io("truncating the torn audit tail"))?;
            file.sync_all()
                .map_err(Error::io("fsync after truncation"))?;
        }
        file.seek(SeekFrom::End(0))
            .map_err(Error::io("seeking audit log"))?;
        let tail = records.last().map(|r| (r.seq, r.hash.clone()));
        let recovered = Recovered {
            records: records.len() as u64,
            truncated_bytes: total_len - valid_len,
        };

        let (tx, rx) = mpsc::channel(queue);
        let healthy = Arc::new(AtomicBool::new(true));
        let writer = Writer {
            file,
            path,
            tail,
            healthy: healthy.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(Error::io("spawning the audit writer"))?;
        Ok((AuditLog { tx, healthy }, recovered, handle))
    }

    /// Appends a record and returns it once it is durable.
    pub async fn append(&self, draft: AuditDraft) -> Result<AuditRecord, Error> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .try_send(Append { draft, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => Error::Overloaded,
                mpsc::error::TrySendError::Closed(_) => {
                    Error::Unavailable("the audit log is closed".into())
                }
            })?;
        answer
            .await
            .map_err(|_| Error::Unavailable("the audit writer stopped".into()))?
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }
}

struct Writer {
    file: File,
    path: PathBuf,
    tail: Option<(u64, String)>,
    healthy: Arc<AtomicBool>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Append>) {
        let mut batch: Vec<Append> = Vec::with_capacity(MAX_BATCH);
        let mut buffer: Vec<u8> = Vec::with_capacity(64 * 1024);
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            self.commit(&mut batch, &mut buffer);
        }
    }

    fn commit(&mut self, batch: &mut Vec<Append>, buffer: &mut Vec<u8>) {
        if !self.healthy.load(Ordering::Acquire) {
            for append in batch.drain(..) {
                let _ = append.reply.send(Err(Error::Unavailable(
                    "the audit log failed earlier".into(),
                )));
            }
            return;
        }
        buffer.clear();
        let mut tail = self.tail.clone();
        let mut records = Vec::with_capacity(batch.len());
        for append in batch.iter() {
            let record = AuditRecord::chain(
                append.draft.clone(),
                tail.as_ref().map(|(s, h)| (*s, h.as_str())),
            );
            buffer.extend_from_slice(&record.to_canonical_line());
            buffer.push(b'\n');
            tail = Some((record.seq, record.hash.clone()));
            records.push(record);
        }
        let written = self
            .file
            .write_all(buffer)
            .and_then(|()| self.file.sync_data());
        metrics::histogram!("stella_signer_audit_batch_size").record(batch.len() as f64);
        match written {
            Ok(()) => {
                self.tail = tail;
                for (append, record) in batch.drain(..).zip(records) {
                    let _ = append.reply.send(Ok(record));
                }
            }
            Err(e) => {
                // The file may now hold part of this batch: stop writing, fail readiness, and let
                // the restart-time recovery decide what is durable.
                self.healthy.store(false, Ordering::Release);
                tracing::error!(path = %self.path.display(), error = %e, "audit log write failed; signing stops");
                for append in batch.drain(..) {
                    let _ = append.reply.send(Err(Error::Unavailable(format!(
                        "audit log write failed: {e}"
                    ))));
                }
            }
        }
    }
}

/// Reads and verifies every record. Returns them and the byte length of the valid prefix.
fn read_records(file: &mut File, path: &Path) -> Result<(Vec<AuditRecord>, u64), Error> {
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(Error::io(format!("reading {}", path.display())))?;
    let mut records: Vec<AuditRecord> = Vec::new();
    let mut offset = 0usize;
    let mut valid_len = 0usize;
    while offset < bytes.len() {
        let Some(newline) = bytes[offset..].iter().position(|&b| b == b'\n') else {
            break; // torn final line: never acknowledged
        };
        let line = &bytes[offset..offset + newline];
        match serde_json::from_slice::<AuditRecord>(line) {
            Ok(record) => records.push(record),
            Err(e) => {
                let rest_has_records = bytes[offset + newline + 1..]
                    .split(|&b| b == b'\n')
                    .any(|l| serde_json::from_slice::<AuditRecord>(l).is_ok());
                if rest_has_records {
                    return Err(Error::AuditCorrupt(format!(
                        "{}: unreadable record at byte {offset} followed by valid records: {e}",
                        path.display()
                    )));
                }
                break; // damaged tail of the last, unacknowledged batch
            }
        }
        offset += newline + 1;
        valid_len = offset;
    }
    verify_chain(&records, None)
        .map_err(|e| Error::AuditCorrupt(format!("{}: {e}", path.display())))?;
    Ok((records, valid_len as u64))
}

/// Reads and verifies a log without opening it for writing (for `stella-signer audit verify`).
pub fn read_log(dir: &Path) -> Result<Vec<AuditRecord>, Error> {
    let path = dir.join(AUDIT_FILE);
    let mut file = File::open(&path).map_err(Error::io(format!("opening {}", path.display())))?;
    Ok(read_records(&mut file, &path)?.0)
}

pub(crate) fn fsync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io(format!("fsync of directory {}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use stella_state::Decision;

    fn draft(i: usize) -> AuditDraft {
        AuditDraft {
            time: "2026-11-28T10:00:00Z".into(),
            request_id: format!("req-{i}"),
            tenant: "t".into(),
            caller_subject: "c".into(),
            issuer: "dev".into(),
            subject_digests: vec![],
            predicate_type: "stella.ops/sbom@v1".into(),
            key_id: "k".into(),
            key_source: "file".into(),
            signing_mode: "keyful".into(),
            poe_state: "not_required".into(),
            decision: Decision::Signed,
            reason: "signed".into(),
            bundle_sha256: None,
            statement_sha256: None,
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn concurrent_appends_are_chained_durable_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tmp");
        let rt = runtime();
        let (log, recovered, writer) = AuditLog::open(dir.path(), 64).expect("open");
        assert_eq!(recovered.records, 0);
        let ids = rt.block_on(async {
            let mut tasks = Vec::new();
            for i in 0..200 {
                let log = log.clone();
                tasks.push(tokio::spawn(async move {
                    loop {
                        match log.append(draft(i)).await {
                            Ok(r) => return r.seq,
                            Err(Error::Overloaded) => tokio::task::yield_now().await,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }));
            }
            let mut ids = Vec::new();
            for t in tasks {
                ids.push(t.await.expect("task"));
            }
            ids
        });
        drop(log);
        writer.join().expect("writer");
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (1..=200).collect::<Vec<u64>>());
        assert_eq!(read_log(dir.path()).expect("read").len(), 200);

        let (log, recovered, writer) = AuditLog::open(dir.path(), 64).expect("reopen");
        assert_eq!(recovered.records, 200);
        let next = rt.block_on(log.append(draft(999))).expect("append");
        assert_eq!(next.seq, 201);
        drop(log);
        writer.join().expect("writer");
    }

    #[test]
    fn a_torn_tail_is_cut_and_mid_file_damage_stops_the_node() {
        let dir = tempfile::tempdir().expect("tmp");
        let rt = runtime();
        let (log, _, writer) = AuditLog::open(dir.path(), 8).expect("open");
        for i in 0..3 {
            rt.block_on(log.append(draft(i))).expect("append");
        }
        drop(log);
        writer.join().expect("writer");
        let path = dir.path().join(AUDIT_FILE);
        let good = std::fs::read(&path).expect("read");

        // A half-written line at the end, as a crash mid-write leaves it.
        let mut torn = good.clone();
        torn.extend_from_slice(br#"{"seq":4,"auditId":"aud-00"#);
        std::fs::write(&path, &torn).expect("write");
        let (log, recovered, writer) = AuditLog::open(dir.path(), 8).expect("open torn");
        assert_eq!((recovered.records, recovered.truncated_bytes), (3, 26));
        assert_eq!(rt.block_on(log.append(draft(4))).expect("append").seq, 4);
        drop(log);
        writer.join().expect("writer");

        // An edited record in the middle: refuse to start.
        let text = String::from_utf8(std::fs::read(&path).expect("read")).expect("utf8");
        std::fs::write(
            &path,
            text.replacen("\"tenant\":\"t\"", "\"tenant\":\"x\"", 1),
        )
        .expect("write");
        assert!(matches!(
            AuditLog::open(dir.path(), 8),
            Err(Error::AuditCorrupt(_))
        ));
    }
}
