//! The snapshot file container, both versions, read and written one frame at a time.
//!
//! ```text
//! version 1 (ADR 0018)                          version 2 (ADR 0027)
//! "STELLA-SNAPSHOT\x01\n"                      "STELLA-SNAPSHOT\x02\n"
//! frame: codec(Header)                          frame: codec(HeadV2)
//!   applied, state, claims, tree head, count      applied, audit tail, tree head, counts
//!                                               rows × frame: codec(SnapRow)
//!                                                 one entity or claim, as its table holds it
//! records × frame: canonical record             records × frame: canonical record
//! ```
//!
//! A frame is a u32 LE length and that many bytes. Version 2 carries the state as rows so that
//! neither building, sending nor installing a snapshot holds the state (or the claim set) as
//! one value: every step handles one row at a time. Version 1 files (from a node before ADR
//! 0027, or a legacy blob rewritten) are still read and installed.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::super::entities::RowKind;
use super::super::state_machine::Applied;
use super::super::*;
use crate::machine::AuditTail;

const MAGIC_V1: &[u8; 17] = b"STELLA-SNAPSHOT\x01\n";
const MAGIC_V2: &[u8; 17] = b"STELLA-SNAPSHOT\x02\n";
/// Bounds on what a file may declare, so a damaged (or hostile) one cannot ask for an
/// unbounded allocation.
const MAX_HEADER: u32 = 512 * 1024 * 1024;
const MAX_RECORD: u32 = 16 * 1024 * 1024;
const MAX_ROW: u32 = 16 * 1024 * 1024;

/// Version 1: everything a snapshot carries besides the records, in one value.
#[derive(Serialize, Deserialize)]
pub(in super::super) struct Header {
    pub(in super::super) applied: Applied,
    pub(in super::super) state: State,
    pub(in super::super) claims: Vec<(String, Claim)>,
    pub(in super::super) log: LogTree,
    pub(in super::super) records: u64,
}

/// Version 2: what a snapshot carries besides the rows and the records.
#[derive(Serialize, Deserialize)]
pub(in super::super) struct HeadV2 {
    pub(in super::super) applied: Applied,
    pub(in super::super) audit_tail: Option<AuditTail>,
    pub(in super::super) log: LogTree,
    pub(in super::super) rows: u64,
    pub(in super::super) records: u64,
}

/// One row of an entity table or of the claim table: its key (`plan` is the second part of a
/// ledger's key, empty otherwise) and its codec-encoded value.
#[derive(Debug, Serialize, Deserialize)]
pub(in super::super) struct SnapRow {
    pub(in super::super) kind: RowKind,
    pub(in super::super) key: String,
    pub(in super::super) plan: String,
    pub(in super::super) value: Vec<u8>,
}

impl codec::Persisted for Header {}
impl codec::Persisted for HeadV2 {}
impl codec::Persisted for SnapRow {}

/// What a file holds besides its rows and records, once its header is read.
pub(in super::super) struct Contents {
    pub(in super::super) log: LogTree,
    pub(in super::super) audit_tail: Option<AuditTail>,
    /// Version 1: the state and claims, carried inline (version 2 carries rows instead).
    pub(in super::super) inline: Option<(State, Vec<(String, Claim)>)>,
    pub(in super::super) records: u64,
}

pub(super) fn io_err(e: std::io::Error) -> StorageError {
    StorageIOError::write(&e).into()
}

pub(super) fn invalid(what: &str) -> StorageError {
    io_err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        what.to_owned(),
    ))
}

fn write_frame(out: &mut impl Write, bytes: &[u8]) -> Result<(), StorageError> {
    let len = u32::try_from(bytes.len()).map_err(|_| invalid("a frame longer than 4 GiB"))?;
    out.write_all(&len.to_le_bytes()).map_err(io_err)?;
    out.write_all(bytes).map_err(io_err)
}

fn read_frame(input: &mut impl Read, max: u32) -> Result<Vec<u8>, StorageError> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len).map_err(io_err)?;
    let len = u32::from_le_bytes(len);
    if len > max {
        return Err(invalid("a snapshot frame is larger than allowed"));
    }
    let mut bytes = vec![0u8; len as usize];
    input.read_exact(&mut bytes).map_err(io_err)?;
    Ok(bytes)
}

/// A temporary file name in `dir` no other writer uses (`*.tmp`: never a current snapshot;
/// leftovers of a crash are removed on open).
pub(super) fn temporary(dir: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{}-{n}.tmp", std::process::id()))
}

/// Where rows go while a version-2 file is written.
pub(in super::super) struct RowSink<'a> {
    out: &'a mut BufWriter<File>,
    written: u64,
}

impl RowSink<'_> {
    pub(in super::super) fn push(&mut self, row: &SnapRow) -> Result<(), StorageError> {
        write_frame(self.out, &codec::encode(row).map_err(write_err)?)?;
        self.written += 1;
        Ok(())
    }
}

/// Writes a version-1 file (a legacy blob rewritten): `header`, then every record of `lines`.
pub(super) fn write_v1(
    dir: &Path,
    header: &Header,
    lines: impl Iterator<Item = Result<Vec<u8>, StorageError>>,
) -> Result<PathBuf, StorageError> {
    write_file(
        dir,
        MAGIC_V1,
        &codec::encode(header).map_err(write_err)?,
        0,
        |_| Ok(()),
        header.records,
        lines,
    )
}

/// Writes a version-2 file: `head`, the rows `rows` pushes (exactly `head.rows` of them), then
/// every record of `lines`, to a new temporary file in `dir`, fsynced; `publish` makes it the
/// current snapshot.
pub(in super::super) fn write_v2(
    dir: &Path,
    head: &HeadV2,
    rows: impl FnOnce(&mut RowSink<'_>) -> Result<(), StorageError>,
    lines: impl Iterator<Item = Result<Vec<u8>, StorageError>>,
) -> Result<PathBuf, StorageError> {
    write_file(
        dir,
        MAGIC_V2,
        &codec::encode(head).map_err(write_err)?,
        head.rows,
        rows,
        head.records,
        lines,
    )
}

fn write_file(
    dir: &Path,
    magic: &[u8; 17],
    header: &[u8],
    rows: u64,
    write_rows: impl FnOnce(&mut RowSink<'_>) -> Result<(), StorageError>,
    records: u64,
    lines: impl Iterator<Item = Result<Vec<u8>, StorageError>>,
) -> Result<PathBuf, StorageError> {
    std::fs::create_dir_all(dir).map_err(io_err)?;
    let tmp = temporary(dir);
    let written = (|| {
        let mut out = BufWriter::new(File::create(&tmp).map_err(io_err)?);
        out.write_all(magic).map_err(io_err)?;
        write_frame(&mut out, header)?;
        let mut sink = RowSink {
            out: &mut out,
            written: 0,
        };
        write_rows(&mut sink)?;
        if sink.written != rows {
            return Err(invalid(
                "the row count changed while the snapshot was written",
            ));
        }
        let mut written = 0u64;
        for line in lines {
            write_frame(&mut out, &line?)?;
            written += 1;
        }
        if written != records {
            return Err(invalid(
                "the record count changed while the snapshot was written",
            ));
        }
        let file = out.into_inner().map_err(|e| io_err(e.into_error()))?;
        file.sync_all().map_err(io_err)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(tmp)
}

/// A snapshot file of either version, read front to back.
pub(in super::super) struct Reader {
    input: BufReader<File>,
    pub(in super::super) contents: Contents,
    rows_left: u64,
    records_left: u64,
}

impl Reader {
    pub(in super::super) fn open(mut file: File) -> Result<Reader, StorageError> {
        file.seek(SeekFrom::Start(0)).map_err(io_err)?;
        let mut input = BufReader::new(file);
        let mut magic = [0u8; 17];
        input.read_exact(&mut magic).map_err(io_err)?;
        let frame = read_frame(&mut input, MAX_HEADER)?;
        let (contents, rows) = if &magic == MAGIC_V2 {
            let head: HeadV2 = codec::decode(&frame).map_err(read_err)?;
            let contents = Contents {
                log: head.log,
                audit_tail: head.audit_tail,
                inline: None,
                records: head.records,
            };
            (contents, head.rows)
        } else if &magic == MAGIC_V1 {
            let header: Header = codec::decode(&frame).map_err(read_err)?;
            let contents = Contents {
                log: header.log,
                audit_tail: header.state.audit_tail.clone(),
                inline: Some((header.state, header.claims)),
                records: header.records,
            };
            (contents, 0)
        } else {
            return Err(invalid("not a snapshot file"));
        };
        let records_left = contents.records;
        Ok(Reader {
            input,
            contents,
            rows_left: rows,
            records_left,
        })
    }

    /// The next row (`None` after the last one).
    pub(in super::super) fn next_row(&mut self) -> Result<Option<SnapRow>, StorageError> {
        if self.rows_left == 0 {
            return Ok(None);
        }
        self.rows_left -= 1;
        let frame = read_frame(&mut self.input, MAX_ROW)?;
        codec::decode(&frame).map(Some).map_err(read_err)
    }

    /// The next record (`None` after the last one); rows not read yet are skipped.
    pub(in super::super) fn next_record(&mut self) -> Result<Option<Vec<u8>>, StorageError> {
        while self.rows_left > 0 {
            self.rows_left -= 1;
            read_frame(&mut self.input, MAX_ROW)?;
        }
        if self.records_left == 0 {
            return Ok(None);
        }
        self.records_left -= 1;
        read_frame(&mut self.input, MAX_RECORD).map(Some)
    }
}

/// Whether `file` starts like a snapshot file of either version (else it is a legacy blob).
pub(super) fn is_streamed(file: &mut File) -> Result<bool, StorageError> {
    let mut magic = [0u8; 17];
    file.seek(SeekFrom::Start(0)).map_err(io_err)?;
    let is = match file.read_exact(&mut magic) {
        Ok(()) => &magic == MAGIC_V1 || &magic == MAGIC_V2,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => false,
        Err(e) => return Err(io_err(e)),
    };
    file.seek(SeekFrom::Start(0)).map_err(io_err)?;
    Ok(is)
}
