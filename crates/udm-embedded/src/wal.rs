//! The **write-ahead log**: a version's commit costs one small in-place `fdatasync` instead
//! of a synced redb commit.
//!
//! A synced redb commit writes every B-tree page the transaction changed (a version touches
//! about ten tables) and the header, then syncs: about 570 µs here, against about 50 µs for
//! the same commit unsynced (`Durability::None`) and about 120 µs for a 1–4 KiB in-place write
//! and its `fdatasync`. So the writes on the hot path —
//! [`MetaStore::commit_many`](udm_core::ports::MetaStore::commit_many) (with the staged blob
//! rows it carries: the `stage` module; a drain's *settle* is such a commit with rows and no
//! versions) and the blob puts that share the metadata file's commits — commit unsynced and
//! append a **redo record** of their *input* to `<store file>.wal`; a commit is acknowledged once its
//! record is synced (one `fdatasync` covers every record appended before it: concurrent
//! commits share it). Every other write of the store stays a synced redb commit, which also
//! makes every earlier unsynced commit durable — but for a drain's removal of the staged
//! rows it moved, unsynced and not logged: lost in a crash, it leaves copies of rows the blob
//! file holds, which reads, replay and the next drain treat as the same rows.
//!
//! Each logged commit writes its sequence number into the store (`wal_seq`) in the same
//! transaction, so after a crash the store says exactly which records it lacks: on open,
//! the records past the stored sequence are applied again, in order, by the same functions —
//! a redb file is as of its last synced commit, so they apply to exactly the state they first
//! applied to, and produce the same result (the functions read no clock and no randomness).
//! Then a synced commit, and the log starts over. A store file that never checkpointed (a new
//! one) empties the log it finds: that log belonged to a file that was deleted.
//!
//! File format 2: records `[payload length: u32 LE][CRC-32 of the rest: u32 LE][seq: u64 LE]
//! [payload]`, written in place over a file grown in zero-filled chunks (an in-place
//! `fdatasync` writes no file metadata). When the log passes [`CHECKPOINT_BYTES`], a synced
//! commit makes everything durable and the next record is written at offset 0. Reading
//! stops at the first record that is short, fails its CRC or does not follow its
//! predecessor's sequence — a torn tail, or older records past the new ones — so a record
//! counts only if it is whole. Payload: a kind byte ([`Redo`]) then its fields: kind 1 a
//! commit — the commits as JSON (as in format 1); kind 4 a commit carrying staged rows (or
//! a settle: rows and no commit) — `[rows: u32 LE]`, each row as `[key length: u32 LE][key]
//! [row length: u32 LE][row]`, then the commits as JSON; kind 3 a blob put — key, mode,
//! content type, bytes. Format 1's kind 2, a staged put of its own, is no longer written; a
//! log that still holds one fails the open with a message saying so.
//!
//! If appending or syncing a record fails, a synced redb commit makes the store durable
//! instead (the log is then not needed); if that fails too, the log refuses further writes.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use redb::{Database, Durability, ReadableDatabase, TableDefinition, WriteTransaction};
use udm_core::ports::{Commit, PutMode};
use udm_core::{Error, ErrorKind, Result};

use crate::db_err;

/// The last logged commit's sequence (one row, `s`).
pub(crate) const WAL_SEQ: TableDefinition<'static, &'static str, u64> = TableDefinition::new("wal_seq");

/// Past this many bytes of records, the next logged commit checkpoints.
pub const CHECKPOINT_BYTES: u64 = 256 << 10;
/// The file grows by this much, zero-filled and synced, ahead of the records.
const CHUNK: u64 = 256 << 10;
/// Header bytes of a record.
const HEADER: usize = 16;
/// The largest payload read back (a larger length is a torn record).
const MAX_PAYLOAD: usize = 1 << 30;

/// What a logged commit did, enough to do it again.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Redo {
    /// The staged rows a commit carried into the staged table (`stage::Pending::carry`),
    /// then `commit_many` of these commits (kind 1 without rows: the commits as JSON; kind 4
    /// with rows: the rows, then the commits as JSON; a settle carries rows and no commit).
    Commit { staged: Vec<(String, Vec<u8>)>, commits: Vec<Commit> },
    /// A blob row put to a bucket of this file (kind 3).
    Blob { key: String, mode: PutMode, content_type: Option<String>, bytes: Vec<u8> },
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl Redo {
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        match self {
            Redo::Commit { staged, commits } => {
                let mut out = vec![if staged.is_empty() { 1 } else { 4 }];
                if !staged.is_empty() {
                    out.extend_from_slice(&(staged.len() as u32).to_le_bytes());
                    for (k, row) in staged {
                        put_str(&mut out, k);
                        put_bytes(&mut out, row);
                    }
                }
                let json = serde_json::to_vec(commits)
                    .map_err(|e| Error::internal(format!("embedded store: encoding a redo record: {e}")))?;
                out.extend_from_slice(&json);
                Ok(out)
            }
            Redo::Blob { key, mode, content_type, bytes } => {
                let mut out = vec![3];
                put_str(&mut out, key);
                match mode {
                    PutMode::Create => out.push(0),
                    PutMode::Overwrite => out.push(1),
                    PutMode::IfMatch(etag) => {
                        out.push(2);
                        put_str(&mut out, etag.as_str());
                    }
                }
                match content_type {
                    Some(ct) => {
                        out.push(1);
                        put_str(&mut out, ct);
                    }
                    None => out.push(0),
                }
                out.extend_from_slice(bytes);
                Ok(out)
            }
        }
    }

    pub(crate) fn decode(raw: &[u8]) -> Result<Self> {
        let bad = || Error::internal("embedded store: a write-ahead log record does not decode");
        let (&kind, mut rest) = raw.split_first().ok_or_else(bad)?;
        let take_bytes = |rest: &mut &[u8]| -> Result<Vec<u8>> {
            let len = rest.get(..4).ok_or_else(bad)?;
            let len = u32::from_le_bytes(len.try_into().map_err(|_| bad())?) as usize;
            let b = rest.get(4..4 + len).ok_or_else(bad)?.to_vec();
            *rest = &rest[4 + len..];
            Ok(b)
        };
        let take_str = |rest: &mut &[u8]| -> Result<String> { String::from_utf8(take_bytes(rest)?).map_err(|_| bad()) };
        match kind {
            1 => serde_json::from_slice(rest)
                .map(|commits| Redo::Commit { staged: Vec::new(), commits })
                .map_err(|_| bad()),
            2 => Err(Error::internal(
                "embedded store: the write-ahead log holds a staged put of log format 1, which this version \
                 does not replay: open the store once with the version that wrote it, then with this one",
            )),
            4 => {
                let n = rest.get(..4).ok_or_else(bad)?;
                let n = u32::from_le_bytes(n.try_into().map_err(|_| bad())?) as usize;
                rest = &rest[4..];
                // Each row takes at least 8 bytes: a count past that is a damaged record.
                let mut staged = Vec::with_capacity(n.min(rest.len() / 8));
                for _ in 0..n {
                    let k = take_str(&mut rest)?;
                    staged.push((k, take_bytes(&mut rest)?));
                }
                let commits = serde_json::from_slice(rest).map_err(|_| bad())?;
                Ok(Redo::Commit { staged, commits })
            }
            3 => {
                let key = take_str(&mut rest)?;
                let (&m, r) = rest.split_first().ok_or_else(bad)?;
                rest = r;
                let mode = match m {
                    0 => PutMode::Create,
                    1 => PutMode::Overwrite,
                    2 => PutMode::IfMatch(udm_core::ports::ETag::new(take_str(&mut rest)?)),
                    _ => return Err(bad()),
                };
                let (&c, r) = rest.split_first().ok_or_else(bad)?;
                rest = r;
                let content_type = match c {
                    0 => None,
                    1 => Some(take_str(&mut rest)?),
                    _ => return Err(bad()),
                };
                Ok(Redo::Blob { key, mode, content_type, bytes: rest.to_vec() })
            }
            _ => Err(bad()),
        }
    }
}

/// Where records go.
struct Tail {
    file: File,
    /// Where the next record starts.
    offset: u64,
    /// Bytes of the file zero-filled and synced so far.
    allocated: u64,
    /// The next record's sequence.
    next: u64,
}

/// The log of one store file (see the module docs).
pub(crate) struct Wal {
    path: PathBuf,
    tail: Mutex<Tail>,
    /// The highest sequence appended, and the highest known synced.
    appended: AtomicU64,
    synced: Mutex<u64>,
    /// The file handle syncs go through.
    sync_file: File,
    /// Set when neither the log nor a synced commit could make a write durable.
    failed: AtomicBool,
    /// Records applied again when the store was opened.
    pub(crate) replayed: u64,
}

fn io(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Internal, format!("write-ahead log {}: {what}: {e}", path.display())).with_source(e)
}

fn crc(seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// The whole records of `bytes` in order: (sequence, payload).
fn records(bytes: &[u8]) -> Vec<(u64, &[u8])> {
    let mut out: Vec<(u64, &[u8])> = Vec::new();
    let mut at = 0usize;
    while let Some(h) = bytes.get(at..at + HEADER) {
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let sum = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        let seq = u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]);
        if len == 0 || len > MAX_PAYLOAD {
            break;
        }
        let Some(payload) = bytes.get(at + HEADER..at + HEADER + len) else { break };
        if crc(seq, payload) != sum || out.last().is_some_and(|(prev, _)| seq != prev + 1) {
            break;
        }
        out.push((seq, payload));
        at += HEADER + len;
    }
    out
}

/// A write transaction whose commit skips the fsync (redb's `Durability::None`: durable with
/// the next synced commit of the file, or lost in a crash before it).
pub(crate) fn unsynced(db: &Database) -> Result<WriteTransaction> {
    let mut tx = db.begin_write().map_err(db_err)?;
    tx.set_durability(Durability::None)
        .map_err(|e| Error::internal(format!("embedded store: deferring a commit's sync: {e}")))?;
    Ok(tx)
}

/// A synced commit recording `seq` as the last logged one: everything before it is durable.
fn checkpoint(db: &Database, seq: u64) -> Result<()> {
    let tx = db.begin_write().map_err(db_err)?;
    tx.open_table(WAL_SEQ).map_err(db_err)?.insert("s", seq).map_err(db_err)?;
    tx.commit().map_err(db_err)
}

impl Wal {
    /// Opens the log beside the store file and applies the records the store lacks with
    /// `apply` (each in its own unsynced commit), then checkpoints.
    pub(crate) fn open(
        db: &Database,
        store: &Path,
        apply: impl Fn(&WriteTransaction, Redo) -> Result<()>,
    ) -> Result<Self> {
        let mut path = store.as_os_str().to_owned();
        path.push(".wal");
        let path = PathBuf::from(path);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io(&path, "opening", e))?;
        let stored = {
            let tx = db.begin_read().map_err(db_err)?;
            match tx.open_table(WAL_SEQ) {
                Ok(t) => redb::ReadableTable::get(&t, "s").map_err(db_err)?.map(|v| v.value()),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(db_err(e)),
            }
        };
        // A store file that never checkpointed is new: a log beside it belongs to a file that
        // was deleted (its records must not apply to this one).
        let bytes = match stored {
            Some(_) => std::fs::read(&path).map_err(|e| io(&path, "reading", e))?,
            None => {
                file.set_len(0).map_err(|e| io(&path, "emptying", e))?;
                Vec::new()
            }
        };
        let stored = stored.unwrap_or(0);
        let mut last = stored;
        let mut replayed = 0;
        for (seq, payload) in records(&bytes) {
            if seq <= last {
                continue;
            }
            if seq != last + 1 {
                return Err(Error::internal(format!(
                    "write-ahead log {}: record {seq} follows {last}: records are missing",
                    path.display()
                )));
            }
            let redo = Redo::decode(payload)?;
            let tx = unsynced(db)?;
            apply(&tx, redo)?;
            tx.open_table(WAL_SEQ).map_err(db_err)?.insert("s", seq).map_err(db_err)?;
            tx.commit().map_err(db_err)?;
            last = seq;
            replayed += 1;
        }
        checkpoint(db, last)?;
        let sync_file = file.try_clone().map_err(|e| io(&path, "opening", e))?;
        let allocated = bytes.len() as u64;
        Ok(Self {
            path,
            tail: Mutex::new(Tail { file, offset: 0, allocated, next: last + 1 }),
            appended: AtomicU64::new(last),
            synced: Mutex::new(last),
            sync_file,
            failed: AtomicBool::new(false),
            replayed,
        })
    }

    /// The sequence of the last record appended (or of the checkpoint that replaced it).
    #[cfg(test)]
    pub(crate) fn last_seq(&self) -> u64 {
        self.appended.load(Ordering::Relaxed)
    }

    /// The tail, held while a logged commit runs so records go out in sequence order.
    fn lock(&self) -> Result<MutexGuard<'_, Tail>> {
        if self.failed.load(Ordering::Relaxed) {
            return Err(Error::new(
                ErrorKind::Internal,
                format!("write-ahead log {} failed; reopen the store", self.path.display()),
            ));
        }
        self.tail.lock().map_err(|_| Error::internal("write-ahead log: lock poisoned"))
    }

    /// Runs `f` in an unsynced commit that records its sequence, calls `committed` once that
    /// commit is in the file (before the record is appended or synced), then appends `redo`
    /// (as `f` left it: a commit adds the staged rows it carried) under that sequence; with
    /// `sync`, returns once the record is synced.
    pub(crate) fn commit<T>(
        &self,
        db: &Database,
        redo: &mut Redo,
        sync: bool,
        f: impl FnOnce(&WriteTransaction, &mut Redo) -> Result<T>,
        committed: impl FnOnce(&Redo),
    ) -> Result<T> {
        let mut tail = self.lock()?;
        let tx = unsynced(db)?;
        let done = f(&tx, redo).and_then(|out| Ok((out, redo.encode()?)));
        let (out, payload) = match done {
            Ok(done) => done,
            Err(e) => {
                tx.abort().map_err(db_err)?;
                return Err(e);
            }
        };
        let seq = tail.next;
        tx.open_table(WAL_SEQ).map_err(db_err)?.insert("s", seq).map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        committed(redo);
        tail.next += 1;
        if tail.offset >= CHECKPOINT_BYTES {
            // Everything so far durable in the store: the log starts over.
            self.rescue(db, &mut tail, seq)?;
            return Ok(out);
        }
        if let Err(e) = self.append(&mut tail, seq, &payload) {
            tracing::warn!(error = %e, "udm: write-ahead log append failed; syncing the store instead");
            self.rescue(db, &mut tail, seq)?;
            return Ok(out);
        }
        drop(tail);
        if sync && let Err(e) = self.sync_upto(seq) {
            tracing::warn!(error = %e, "udm: write-ahead log sync failed; syncing the store instead");
            let mut tail = self.lock()?;
            let last = tail.next - 1;
            self.rescue(db, &mut tail, last)?;
        }
        Ok(out)
    }

    /// A synced commit instead of the log; the log starts over. Fails the log if it fails.
    fn rescue(&self, db: &Database, tail: &mut Tail, seq: u64) -> Result<()> {
        match checkpoint(db, seq) {
            Ok(()) => {
                tail.offset = 0;
                self.appended.store(seq, Ordering::Relaxed);
                if let Ok(mut synced) = self.synced.lock() {
                    *synced = seq;
                }
                Ok(())
            }
            Err(e) => {
                self.failed.store(true, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    fn append(&self, tail: &mut Tail, seq: u64, payload: &[u8]) -> Result<()> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|l| (*l as usize) <= MAX_PAYLOAD)
            .ok_or_else(|| Error::internal("write-ahead log: record too large"))?;
        let mut record = Vec::with_capacity(HEADER + payload.len());
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(&crc(seq, payload).to_le_bytes());
        record.extend_from_slice(&seq.to_le_bytes());
        record.extend_from_slice(payload);
        let end = tail.offset + record.len() as u64;
        if end > tail.allocated {
            // Grow zero-filled and synced, so later in-place syncs write no file metadata.
            let grow = (end - tail.allocated).div_ceil(CHUNK) * CHUNK;
            let zeros =
                vec![0u8; usize::try_from(grow).map_err(|_| Error::internal("write-ahead log: record too large"))?];
            tail.file.write_all_at(&zeros, tail.allocated).map_err(|e| io(&self.path, "growing", e))?;
            tail.file.sync_all().map_err(|e| io(&self.path, "growing", e))?;
            tail.allocated += grow;
        }
        tail.file.write_all_at(&record, tail.offset).map_err(|e| io(&self.path, "appending", e))?;
        tail.offset = end;
        self.appended.store(seq, Ordering::Relaxed);
        Ok(())
    }

    /// Syncs the log until `seq` is durable; concurrent callers share one `fdatasync`.
    fn sync_upto(&self, seq: u64) -> Result<()> {
        let mut synced = self.synced.lock().map_err(|_| Error::internal("write-ahead log: lock poisoned"))?;
        if *synced >= seq {
            return Ok(());
        }
        let upto = self.appended.load(Ordering::Relaxed);
        self.sync_file.sync_data().map_err(|e| io(&self.path, "syncing", e))?;
        *synced = upto.max(seq);
        Ok(())
    }

    /// A synced commit of the store, then an empty log (when the store closes).
    pub(crate) fn close(&self, db: &Database) {
        if let Ok(mut tail) = self.tail.lock() {
            let last = tail.next - 1;
            if checkpoint(db, last).is_ok() {
                tail.offset = 0;
                let _ = tail.file.set_len(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redo_records_round_trip() {
        let blob = Redo::Blob {
            key: "json:t/d/c/x.json".into(),
            mode: PutMode::IfMatch(udm_core::ports::ETag::new("\"e7\"")),
            content_type: Some("application/json".into()),
            bytes: b"{\"a\":1}".to_vec(),
        };
        assert_eq!(Redo::decode(&blob.encode().unwrap()).unwrap(), blob);
        let plain = Redo::Blob { key: "k".into(), mode: PutMode::Create, content_type: None, bytes: vec![] };
        assert_eq!(Redo::decode(&plain.encode().unwrap()).unwrap(), plain);
        let staged = vec![("json:a".to_owned(), vec![1, 2, 3]), ("json:b".to_owned(), Vec::new())];
        let settle = Redo::Commit { staged: staged.clone(), commits: Vec::new() };
        assert_eq!(Redo::decode(&settle.encode().unwrap()).unwrap(), settle);
        let ctx = udm_core::RouteContext::new("t", "d", "c").unwrap();
        let k = udm_testkit::fixtures::key(&ctx, "o");
        let c = udm_testkit::fixtures::commit(
            &k,
            None,
            udm_core::Op::Create,
            udm_testkit::fixtures::ts(1),
            "r",
            &serde_json::json!({"n": 1}),
        );
        let commit = Redo::Commit { staged, commits: vec![c.clone()] };
        assert_eq!(Redo::decode(&commit.encode().unwrap()).unwrap(), commit);
        let plain = Redo::Commit { staged: Vec::new(), commits: vec![c] };
        let encoded = plain.encode().unwrap();
        assert_eq!(encoded[0], 1, "a commit carrying no rows keeps format 1's record");
        assert_eq!(Redo::decode(&encoded).unwrap(), plain);
        // Short, an unknown kind, format 1's staged put, a count of rows the record does not
        // hold, a cut row.
        for bad in [
            &[][..],
            &[9][..],
            &[2, 0][..],
            &[3, 200, 0, 0, 0][..],
            &[4, 5, 0, 0, 0, 1, 0, 0, 0][..],
            &[4, 1, 0, 0, 0, 1, 0, 0, 0, b'k', 9, 0, 0, 0][..],
        ] {
            assert!(Redo::decode(bad).is_err());
        }
    }

    fn record(seq: u64, payload: &[u8]) -> Vec<u8> {
        let mut r = (payload.len() as u32).to_le_bytes().to_vec();
        r.extend_from_slice(&crc(seq, payload).to_le_bytes());
        r.extend_from_slice(&seq.to_le_bytes());
        r.extend_from_slice(payload);
        r
    }

    #[test]
    fn reading_stops_at_a_torn_record_or_a_sequence_that_does_not_follow() {
        let mut log = [record(5, b"a"), record(6, b"bb"), record(7, b"ccc")].concat();
        assert_eq!(records(&log).len(), 3);
        // Older records past the new ones (the log started over at offset 0).
        let stale = [log.clone(), record(2, b"old")].concat();
        assert_eq!(records(&stale).len(), 3);
        // A torn last record: short, or its bytes not all written.
        let torn = &log[..log.len() - 1];
        assert_eq!(records(torn).len(), 2);
        let last = log.len() - 1;
        log[last] ^= 1;
        assert_eq!(records(&log).len(), 2);
        assert!(records(&[0u8; 64]).is_empty());
    }
}
