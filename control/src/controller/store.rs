//! The controller's Raft log and its small records on disk, in `<data_dir>/controller/`:
//! openraft keeps the vote, the committed log id and the log entries here through
//! [`LogStore`] (its `RaftLogStorage`), and its replication tasks read them through
//! [`LogReader`]. Every entry is also kept in memory, so reads never touch the disk: the files
//! exist so that a restart finds the same vote and log again.
//!
//! All integers on disk are little-endian. Checksums are CRC32C (Castagnoli, the `crc32c`
//! crate). Payloads are JSON (`serde_json`) of openraft's own serde forms.
//!
//! # Value files: `vote`, `committed`, `purged` (and the state machine's `snapshot`)
//!
//! ```text
//! offset  bytes  field
//!      0      8  magic, the ASCII bytes "STRCTVAL"
//!      8      4  format version, u32, 1
//!     12      4  payload length in bytes, u32, at most VALUE_BYTES_MAX (64 MiB)
//!     16      4  CRC32C of the payload, u32
//!     20      n  payload: JSON of the value
//! ```
//!
//! `vote` holds openraft's `Vote` (`{"leader_id":{"term":T,"node_id":N},"committed":B}`),
//! `committed` an optional `LogId` (`{"leader_id":{"term":T,"node_id":N},"index":I}` or
//! `null`), `purged` the `LogId` of the last entry removed from the front of the log. A missing
//! file means "no value yet".
//!
//! A value file is replaced whole, never edited: the new bytes go to `<name>.tmp`, which is
//! fsynced, renamed over `<name>`, and the directory is fsynced. A crash leaves the old file or
//! the new one (POSIX rename is atomic), plus perhaps a `.tmp` that the next open removes. So a
//! value file is never torn, and any mismatch in it (magic, version, length, checksum, JSON) is
//! damage: [`StoreError::Damaged`].
//!
//! # The log: `log`
//!
//! ```text
//! file header
//!      0      8  magic, the ASCII bytes "STRCTLOG"
//!      8      4  format version, u32, 1
//! then one record per entry, in index order, each:
//!      0      4  payload length in bytes, u32, 1 to RECORD_BYTES_MAX (16 MiB)
//!      4      4  CRC32C of the payload, u32
//!      8      n  payload: JSON of openraft's `Entry`:
//!                {"log_id":{"leader_id":{"term":T,"node_id":N},"index":I},
//!                 "payload": "Blank" | {"Normal": <strata_core::controller::Command>}
//!                            | {"Membership": {"configs": [[voter ids], ...],
//!                                              "nodes": {"<id>": <ControllerNode>}}}}
//! ```
//!
//! Indexes of consecutive records follow each other (`index + 1`); the first record may have
//! any index above the purged one.
//!
//! How each change reaches the disk, and what a crash can leave:
//! - `append` writes its records at the end of the file in one `write`, then `fdatasync`s, and
//!   only then tells openraft they are durable. A crash before the sync returns can leave a torn
//!   tail: part of the last records, or zeros where the file grew but the data did not land.
//! - `truncate_after` and `purge` write the remaining entries as a whole new `log` the same way
//!   as a value file (`log.tmp`, fsync, rename, directory fsync): a crash leaves the old log or
//!   the new one. The log file itself is created that way too, so it always has its header.
//! - `purge` first replaces `purged`, then the log. A crash between the two leaves entries at or
//!   below the purged index in `log`; open drops them and rewrites the log without them, as
//!   the purge would have.
//! - A failed write or sync is sticky: the store refuses every later write until the node
//!   restarts and recovers from what is on disk (the kernel may have dropped the dirty pages,
//!   so a retry could report success for data that is gone).
//!
//! On open, the log is read back whole. A torn tail is cut off (the file is truncated to the
//! end of the last good record and fsynced) with a warning: the bytes after the last good
//! record are all zeros, or too few for a record header, or the last record runs past the end
//! of the file, or the last record fails its checksum and ends exactly at the end of the file.
//! Anything else is [`StoreError::Damaged`] and the node refuses to start: a bad file header,
//! a record that fails its checksum with more bytes after it, a record whose checksum holds
//! but whose payload is not an entry (JSON), a record that claims no bytes or more than
//! 16 MiB, an index that does not follow the one before, or a log that starts past the entry
//! after the purged one. Cutting there would silently lose entries that Raft may already count
//! as committed on this voter.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::type_config::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::OptionalSend;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Types;

/// An entry of the controller's log, as openraft hands it over.
type Entry = EntryOf<Types>;
/// The id of a log entry: the leader that proposed it and its index.
type LogId = LogIdOf<Types>;
/// A vote: the leader voted for (or the leader itself) and whether a quorum granted it.
type Vote = VoteOf<Types>;

/// The first bytes of the `log` file.
const LOG_MAGIC: [u8; 8] = *b"STRCTLOG";
/// The first bytes of every value file.
const VALUE_MAGIC: [u8; 8] = *b"STRCTVAL";
/// The version of both formats, written in every file header and required when reading.
const FORMAT_VERSION: u32 = 1;
/// The `log` file header: magic and version.
const LOG_HEADER_BYTES: usize = 12;
/// A log record's header: payload length and checksum.
const RECORD_HEADER_BYTES: usize = 8;
/// A value file's header: magic, version, payload length and checksum.
pub(crate) const VALUE_HEADER_BYTES: usize = 20;
/// The longest record payload written or read; a longer one on disk is damage.
pub(crate) const RECORD_BYTES_MAX: usize = 16 * 1024 * 1024;
/// The longest value file payload written or read (a snapshot is one).
pub(crate) const VALUE_BYTES_MAX: usize = 64 * 1024 * 1024;

const _: () = assert!(LOG_HEADER_BYTES == LOG_MAGIC.len() + 4);
const _: () = assert!(VALUE_HEADER_BYTES == VALUE_MAGIC.len() + 3 * 4);
const _: () = assert!(RECORD_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(VALUE_BYTES_MAX <= u32::MAX as usize);

/// The log file's name in the controller directory.
const LOG_FILE: &str = "log";
/// The vote file's name.
const VOTE_FILE: &str = "vote";
/// The committed log id file's name.
const COMMITTED_FILE: &str = "committed";
/// The last purged log id file's name.
const PURGED_FILE: &str = "purged";

/// Why the controller's files could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum StoreError {
    /// The operating system refused an operation on a file of the controller's directory.
    #[error(
        "cannot {operation} {}: {source} (check the disk, its free space and the \
         permissions of the directory)",
        .path.display()
    )]
    Io {
        /// What was being done, as a verb: "fsync", "rename into place".
        operation: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// A file holds bytes this code did not write and a crash cannot explain.
    #[error(
        "the controller file {} is damaged at byte {offset}: {reason}. The node does not start \
         on a damaged controller log, which could lose committed entries: restore the \
         directory from a backup, or move it aside so that the node joins the cluster again \
         as a new member",
        .file.display()
    )]
    Damaged {
        /// The damaged file.
        file: PathBuf,
        /// Where in it: the start of the bad record, or of the bad header field.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },
}

impl From<StoreError> for io::Error {
    /// Openraft's storage traits speak `io::Error`: keep the kind of an I/O failure, call
    /// damage invalid data, and keep the whole message.
    fn from(error: StoreError) -> io::Error {
        let kind = match &error {
            StoreError::Io { source, .. } => source.kind(),
            StoreError::Damaged { .. } => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, error.to_string())
    }
}

/// What the store and its readers share: the entries and the vote, in memory.
#[derive(Default)]
struct Contents {
    /// Every entry in the log, by index (the purged ones are gone).
    entries: BTreeMap<u64, Entry>,
    /// The last vote saved.
    vote: Option<Vote>,
}

/// The controller's Raft log on disk (see the module documentation for the files), and the
/// only writer of its files. Openraft owns it and calls it from one task at a time.
pub(crate) struct LogStore {
    /// The controller directory, `<data_dir>/controller`.
    directory: PathBuf,
    /// The `log` file, open for appending.
    log: File,
    /// The entries and the vote, shared with the readers.
    shared: Arc<Mutex<Contents>>,
    /// The last committed log id saved.
    committed: Option<LogId>,
    /// The id of the last entry removed from the front of the log.
    last_purged: Option<LogId>,
    /// Why an earlier write failed: once set, every write is refused (sticky failure).
    failure: Option<String>,
}

/// A read-only view of the log and the vote, for openraft's replication tasks. It shares the
/// store's memory, so it sees every entry as soon as `append` returns.
#[derive(Clone)]
pub(crate) struct LogReader {
    /// The store's entries and vote.
    shared: Arc<Mutex<Contents>>,
}

impl LogStore {
    /// Opens the controller's log in `directory` (creating the directory and an empty log if
    /// missing), reads everything back and cuts a torn tail off the log.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] if a file cannot be read or written; [`StoreError::Damaged`] if a
    /// file holds something other than what this store wrote or a crash could leave.
    pub(crate) fn open(directory: &Path) -> Result<LogStore, StoreError> {
        create_directory(directory)?;
        for name in [LOG_FILE, VOTE_FILE, COMMITTED_FILE, PURGED_FILE] {
            remove_leftover(directory, name)?;
        }
        let vote = read_value_file::<Vote>(directory, VOTE_FILE)?;
        let committed = read_value_file::<Option<LogId>>(directory, COMMITTED_FILE)?.flatten();
        let last_purged = read_value_file::<LogId>(directory, PURGED_FILE)?;
        let entries = recover_log(directory, last_purged.as_ref())?;
        let log = open_for_append(&directory.join(LOG_FILE))?;
        let contents = Contents { entries, vote };
        Ok(LogStore {
            directory: directory.to_path_buf(),
            log,
            shared: Arc::new(Mutex::new(contents)),
            committed,
            last_purged,
            failure: None,
        })
    }

    /// Refuses to write once a write failed (see `failure`).
    fn check_healthy(&self) -> io::Result<()> {
        match &self.failure {
            None => Ok(()),
            Some(reason) => Err(io::Error::other(format!(
                "the controller log refuses writes after an earlier failure ({reason}); \
                 restart the node to recover from what is on disk"
            ))),
        }
    }

    /// Turns the result of a write into openraft's error type, remembering a failure so that
    /// later writes are refused.
    fn remember<T>(&mut self, result: Result<T, StoreError>) -> io::Result<T> {
        result.map_err(|error| {
            self.failure = Some(error.to_string());
            io::Error::from(error)
        })
    }

    /// The index the next appended entry must have, if the log constrains it.
    fn next_index(&self, contents: &Contents) -> Option<u64> {
        match contents.entries.last_key_value() {
            Some((index, _)) => Some(index + 1),
            None => self.last_purged.as_ref().map(|purged| purged.index + 1),
        }
    }

    /// Writes `bytes` (whole records) at the end of the log and waits until they are durable.
    fn write_records(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.directory.join(LOG_FILE);
        self.log.write_all(bytes).map_err(io_error("append to", &path))?;
        self.log.sync_data().map_err(io_error("fdatasync", &path))
    }

    /// Replaces the log file with one holding exactly `entries`, atomically, and reopens it
    /// for appending.
    fn rewrite_log(&mut self, entries: &[Entry]) -> Result<(), StoreError> {
        let path = self.directory.join(LOG_FILE);
        let bytes = encode_log(entries, &path)?;
        write_atomically(&self.directory, LOG_FILE, &bytes)?;
        self.log = open_for_append(&path)?;
        Ok(())
    }

    /// Rewrites the log without the entries `removed` picks, and forgets them in memory.
    fn remove_entries(&mut self, removed: impl Fn(u64) -> bool) -> io::Result<()> {
        let Some(remaining) = self.remaining_without(&removed)? else {
            return Ok(());
        };
        let rewritten = self.rewrite_log(&remaining);
        self.remember(rewritten)?;
        lock(&self.shared)?.entries.retain(|index, _| !removed(*index));
        Ok(())
    }

    /// The entries that stay when those matching `removed` go, or None if none would go.
    fn remaining_without(&self, removed: impl Fn(u64) -> bool) -> io::Result<Option<Vec<Entry>>> {
        let contents = lock(&self.shared)?;
        if !contents.entries.keys().any(|index| removed(*index)) {
            return Ok(None);
        }
        let remaining = contents.entries.iter().filter(|(index, _)| !removed(**index));
        Ok(Some(remaining.map(|(_, entry)| entry.clone()).collect()))
    }
}

impl RaftLogStorage<Types> for LogStore {
    /// Readers share the store's memory.
    type LogReader = LogReader;

    /// The last purged log id (from `purged`) and the last entry's id, or the purged one if
    /// the log is empty.
    async fn get_log_state(&mut self) -> io::Result<LogState<Types>> {
        let contents = lock(&self.shared)?;
        let last = contents.entries.last_key_value().map(|(_, entry)| entry.log_id);
        Ok(LogState {
            last_purged_log_id: self.last_purged,
            last_log_id: last.or(self.last_purged),
        })
    }

    /// A reader sharing this store's memory.
    async fn get_log_reader(&mut self) -> LogReader {
        LogReader { shared: Arc::clone(&self.shared) }
    }

    /// Replaces the `vote` file atomically: durable when this returns, as Raft requires
    /// before a vote is granted.
    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        self.check_healthy()?;
        let written = write_value_file(&self.directory, VOTE_FILE, vote);
        self.remember(written)?;
        lock(&self.shared)?.vote = Some(*vote);
        Ok(())
    }

    /// Replaces the `committed` file atomically (skipped when unchanged), so that a restart
    /// applies the committed entries again on top of the snapshot.
    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        if committed == self.committed {
            return Ok(());
        }
        self.check_healthy()?;
        let written = write_value_file(&self.directory, COMMITTED_FILE, &committed);
        self.remember(written)?;
        self.committed = committed;
        Ok(())
    }

    /// The committed log id last saved.
    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        Ok(self.committed)
    }

    /// Writes the entries' records at the end of `log`, fdatasyncs, then makes them readable
    /// and tells openraft they are durable. A failure is reported both ways and is sticky.
    async fn append<I>(&mut self, entries: I, callback: IOFlushed<Types>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.check_healthy()?;
        let entries: Vec<Entry> = entries.into_iter().collect();
        let next_index = self.next_index(&*lock(&self.shared)?);
        assert_consecutive(next_index, &entries);
        let path = self.directory.join(LOG_FILE);
        let written = encode_records(&entries, &path).and_then(|bytes| self.write_records(&bytes));
        if let Err(error) = self.remember(written) {
            callback.io_completed(Err(io::Error::new(error.kind(), error.to_string())));
            return Err(error);
        }
        let mut contents = lock(&self.shared)?;
        contents.entries.extend(entries.into_iter().map(|entry| (entry.log_id.index, entry)));
        drop(contents);
        callback.io_completed(Ok(()));
        Ok(())
    }

    /// Removes the entries after `last_log_id` (all of them for None) by rewriting `log`
    /// atomically; nothing is written if none goes.
    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        self.check_healthy()?;
        let kept_index_max = last_log_id.map(|log_id| log_id.index);
        self.remove_entries(|index| kept_index_max.is_none_or(|kept| index > kept))
    }

    /// Removes the entries up to `log_id`: first records `log_id` in `purged` (so open drops
    /// them even if the crash comes next), then rewrites `log` without them. Purging to an
    /// index at or below the last purge does nothing.
    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        if self.last_purged.is_some_and(|purged| purged.index >= log_id.index) {
            return Ok(());
        }
        self.check_healthy()?;
        let written = write_value_file(&self.directory, PURGED_FILE, &log_id);
        self.remember(written)?;
        self.last_purged = Some(log_id);
        self.remove_entries(|index| index <= log_id.index)
    }
}

impl RaftLogReader<Types> for LogReader {
    /// The entries in `range` that the log holds, from memory.
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        let contents = lock(&self.shared)?;
        Ok(entries_in(&contents.entries, &range))
    }

    /// The vote last saved.
    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        Ok(lock(&self.shared)?.vote)
    }
}

/// Locks the shared memory; a panic while it was held leaves it unusable.
fn lock(shared: &Mutex<Contents>) -> io::Result<MutexGuard<'_, Contents>> {
    shared.lock().map_err(|_| {
        io::Error::other("the controller log's memory was left inconsistent by a panic")
    })
}

/// Clones the entries whose index is in `range` (any range, even an empty or inverted one).
fn entries_in(entries: &BTreeMap<u64, Entry>, range: &impl RangeBounds<u64>) -> Vec<Entry> {
    let start = match range.start_bound() {
        Bound::Included(start) => *start,
        Bound::Excluded(start) => match start.checked_add(1) {
            Some(start) => start,
            None => return Vec::new(),
        },
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(end) => end.checked_add(1),
        Bound::Excluded(end) => Some(*end),
        Bound::Unbounded => None,
    };
    let selected = match end {
        Some(end) if end <= start => return Vec::new(),
        Some(end) => entries.range(start..end),
        None => entries.range(start..),
    };
    selected.map(|(_, entry)| entry.clone()).collect()
}

/// Checks openraft's promise that appended entries continue the log without a hole.
fn assert_consecutive(next_index: Option<u64>, entries: &[Entry]) {
    let mut expected = next_index;
    for entry in entries {
        let index = entry.log_id.index;
        if let Some(expected) = expected {
            assert!(index == expected, "appending entry {index} where entry {expected} goes");
        }
        expected = Some(index + 1);
    }
}

/// Reads the log back (creating an empty one if there is none), cuts a torn tail and
/// finishes a purge a crash interrupted.
fn recover_log(
    directory: &Path,
    last_purged: Option<&LogId>,
) -> Result<BTreeMap<u64, Entry>, StoreError> {
    let path = directory.join(LOG_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            write_atomically(directory, LOG_FILE, &encode_log(&[], &path)?)?;
            return Ok(BTreeMap::new());
        }
        Err(error) => return Err(io_error("read", &path)(error)),
    };
    let decoded = decode_log(&bytes, &path)?;
    if let Some(reason) = &decoded.torn {
        cut_torn_tail(&path, decoded.valid_bytes, reason)?;
    }
    let read = decoded.records.len();
    let kept = keep_unpurged(decoded.records, last_purged, &path)?;
    if kept.len() < read {
        finish_purge(directory, &kept)?;
    }
    Ok(kept)
}

/// Rewrites the log without the purged entries a crash left in it: later appends must
/// follow the kept entries in the file too, or the next open would see a gap.
fn finish_purge(directory: &Path, kept: &BTreeMap<u64, Entry>) -> Result<(), StoreError> {
    let path = directory.join(LOG_FILE);
    tracing::info!(file = %path.display(), "finishing a purge a crash interrupted");
    let entries: Vec<Entry> = kept.values().cloned().collect();
    write_atomically(directory, LOG_FILE, &encode_log(&entries, &path)?)
}

/// Truncates the log to its last good record and makes the new length durable.
fn cut_torn_tail(path: &Path, valid_bytes: u64, reason: &str) -> Result<(), StoreError> {
    tracing::warn!(
        file = %path.display(),
        offset = valid_bytes,
        reason,
        "the controller log ends in a torn write (a crash during an append): cutting it off"
    );
    let file = OpenOptions::new().write(true).open(path).map_err(io_error("open", path))?;
    file.set_len(valid_bytes).map_err(io_error("truncate", path))?;
    file.sync_all().map_err(io_error("fsync", path))
}

/// Drops the records at or below the purged index (left by a crash during a purge) and
/// checks that the rest starts right after it.
fn keep_unpurged(
    records: Vec<(u64, Entry)>,
    last_purged: Option<&LogId>,
    path: &Path,
) -> Result<BTreeMap<u64, Entry>, StoreError> {
    let purged_index = last_purged.map(|purged| purged.index);
    let mut kept = records
        .into_iter()
        .filter(|(_, entry)| purged_index.is_none_or(|purged| entry.log_id.index > purged));
    let Some((offset, first)) = kept.next() else {
        return Ok(BTreeMap::new());
    };
    if let Some(purged) = purged_index {
        if first.log_id.index != purged + 1 {
            let reason = format!(
                "the log starts at entry {} but only the entries up to {purged} were purged: \
                 entries are missing",
                first.log_id.index
            );
            return Err(damaged(path, offset, reason));
        }
    }
    let rest = kept.map(|(_, entry)| (entry.log_id.index, entry));
    Ok(std::iter::once((first.log_id.index, first)).chain(rest).collect())
}

/// What reading the log file gave.
struct DecodedLog {
    /// The entries with the offset of their record.
    records: Vec<(u64, Entry)>,
    /// The length of the file up to the end of the last good record.
    valid_bytes: u64,
    /// Why the bytes after the last good record are a torn tail, if there are any.
    torn: Option<String>,
}

/// What is at one offset of the log.
enum Record {
    /// The end of the file.
    End,
    /// A torn tail, and why it is one.
    Torn(String),
    /// An entry, and the offset of the next record.
    Entry(Entry, usize),
}

/// Decodes a whole log file: its header, then records until the end or a torn tail.
fn decode_log(bytes: &[u8], path: &Path) -> Result<DecodedLog, StoreError> {
    check_log_header(bytes, path)?;
    let mut records: Vec<(u64, Entry)> = Vec::new();
    let mut offset = LOG_HEADER_BYTES;
    loop {
        let torn = match decode_record(bytes, offset, path)? {
            Record::End => None,
            Record::Torn(reason) => Some(reason),
            Record::Entry(entry, next) => {
                check_follows(records.last().map(|(_, previous)| previous), &entry, offset, path)?;
                records.push((offset as u64, entry));
                offset = next;
                continue;
            }
        };
        return Ok(DecodedLog { records, valid_bytes: offset as u64, torn });
    }
}

/// Checks the log file's magic and format version.
fn check_log_header(bytes: &[u8], path: &Path) -> Result<(), StoreError> {
    if bytes.len() < LOG_HEADER_BYTES {
        let reason = format!("the file is {} bytes long, shorter than its header", bytes.len());
        return Err(damaged(path, 0, reason));
    }
    if bytes[..LOG_MAGIC.len()] != LOG_MAGIC {
        return Err(damaged(path, 0, "the file does not start with the log's magic".into()));
    }
    let version = read_u32(bytes, LOG_MAGIC.len());
    if version != FORMAT_VERSION {
        let reason = format!("format version {version}, this node reads {FORMAT_VERSION}");
        return Err(damaged(path, LOG_MAGIC.len() as u64, reason));
    }
    Ok(())
}

/// Decodes the record at `offset`: an entry, the end of the file, a torn tail, or damage.
fn decode_record(bytes: &[u8], offset: usize, path: &Path) -> Result<Record, StoreError> {
    let rest = &bytes[offset..];
    if rest.is_empty() {
        return Ok(Record::End);
    }
    if rest.iter().all(|byte| *byte == 0) {
        return Ok(Record::Torn(format!("{} zero bytes after the last record", rest.len())));
    }
    if rest.len() < RECORD_HEADER_BYTES {
        return Ok(Record::Torn(format!("a record header cut at {} bytes", rest.len())));
    }
    let length = read_u32(rest, 0) as usize;
    if length == 0 || length > RECORD_BYTES_MAX {
        let reason = format!("a record claims {length} bytes (1 to {RECORD_BYTES_MAX} are valid)");
        return Err(damaged(path, offset as u64, reason));
    }
    let end = RECORD_HEADER_BYTES + length;
    if rest.len() < end {
        let written = rest.len() - RECORD_HEADER_BYTES;
        return Ok(Record::Torn(format!("a record of {length} bytes cut at {written}")));
    }
    let payload = &rest[RECORD_HEADER_BYTES..end];
    if crc32c::crc32c(payload) != read_u32(rest, 4) {
        if rest.len() == end {
            return Ok(Record::Torn("the last record fails its checksum".into()));
        }
        let reason = "a record fails its checksum and more records follow it".to_string();
        return Err(damaged(path, offset as u64, reason));
    }
    let entry: Entry = serde_json::from_slice(payload).map_err(|error| {
        damaged(path, offset as u64, format!("a record does not hold a log entry: {error}"))
    })?;
    Ok(Record::Entry(entry, offset + end))
}

/// Checks that `entry` (read at `offset`) comes right after `previous` in the log.
fn check_follows(
    previous: Option<&Entry>,
    entry: &Entry,
    offset: usize,
    path: &Path,
) -> Result<(), StoreError> {
    let Some(previous) = previous else {
        return Ok(());
    };
    let (before, index) = (previous.log_id.index, entry.log_id.index);
    if before.checked_add(1) == Some(index) {
        return Ok(());
    }
    let reason = format!("entry {index} follows entry {before}, not entry {}", before + 1);
    Err(damaged(path, offset as u64, reason))
}

/// The bytes of a whole log file holding `entries`.
fn encode_log(entries: &[Entry], path: &Path) -> Result<Vec<u8>, StoreError> {
    let mut bytes = Vec::with_capacity(LOG_HEADER_BYTES);
    bytes.extend_from_slice(&LOG_MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend(encode_records(entries, path)?);
    Ok(bytes)
}

/// The records of `entries`, one after the other.
fn encode_records(entries: &[Entry], path: &Path) -> Result<Vec<u8>, StoreError> {
    let mut bytes = Vec::new();
    for entry in entries {
        let payload = serde_json::to_vec(entry).map_err(|error| encoding_error(path, error))?;
        let length = checked_length(payload.len(), RECORD_BYTES_MAX, path)?;
        bytes.extend_from_slice(&length.to_le_bytes());
        bytes.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        assert!(bytes.len() >= RECORD_HEADER_BYTES + payload.len());
    }
    Ok(bytes)
}

/// Replaces the value file `name` in `directory` with `value`, atomically (see the module
/// documentation).
///
/// # Errors
///
/// [`StoreError::Io`] if the value cannot be encoded or the file written.
pub(crate) fn write_value_file<T: Serialize>(
    directory: &Path,
    name: &str,
    value: &T,
) -> Result<(), StoreError> {
    let path = directory.join(name);
    let payload = serde_json::to_vec(value).map_err(|error| encoding_error(&path, error))?;
    let length = checked_length(payload.len(), VALUE_BYTES_MAX, &path)?;
    let mut bytes = Vec::with_capacity(VALUE_HEADER_BYTES + payload.len());
    bytes.extend_from_slice(&VALUE_MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&length.to_le_bytes());
    bytes.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    write_atomically(directory, name, &bytes)
}

/// Reads the value file `name` in `directory`: None if there is none.
///
/// # Errors
///
/// [`StoreError::Io`] if it cannot be read, [`StoreError::Damaged`] if it is not a value file
/// of this format holding a `T`.
pub(crate) fn read_value_file<T: DeserializeOwned>(
    directory: &Path,
    name: &str,
) -> Result<Option<T>, StoreError> {
    let path = directory.join(name);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error("read", &path)(error)),
    };
    let payload = check_value(&bytes, &path)?;
    serde_json::from_slice(payload).map(Some).map_err(|error| {
        let reason = format!("the payload does not hold the expected value: {error}");
        damaged(&path, VALUE_HEADER_BYTES as u64, reason)
    })
}

/// Checks a value file's header and checksum, and returns its payload.
fn check_value<'a>(bytes: &'a [u8], path: &Path) -> Result<&'a [u8], StoreError> {
    if bytes.len() < VALUE_HEADER_BYTES {
        let reason = format!("the file is {} bytes long, shorter than its header", bytes.len());
        return Err(damaged(path, 0, reason));
    }
    if bytes[..VALUE_MAGIC.len()] != VALUE_MAGIC {
        return Err(damaged(path, 0, "the file does not start with a value file's magic".into()));
    }
    let version = read_u32(bytes, 8);
    if version != FORMAT_VERSION {
        let reason = format!("format version {version}, this node reads {FORMAT_VERSION}");
        return Err(damaged(path, 8, reason));
    }
    let payload = &bytes[VALUE_HEADER_BYTES..];
    let length = read_u32(bytes, 12) as usize;
    if length != payload.len() || length > VALUE_BYTES_MAX {
        let held = payload.len();
        let reason = format!("the header gives {length} bytes of payload, the file holds {held}");
        return Err(damaged(path, 12, reason));
    }
    if crc32c::crc32c(payload) != read_u32(bytes, 16) {
        return Err(damaged(path, 16, "the payload fails its checksum".into()));
    }
    Ok(payload)
}

/// Writes `bytes` as the file `name` in `directory` so that a crash leaves either the old
/// file or the new one: a temporary file, fsynced, renamed over it, directory fsynced.
///
/// # Errors
///
/// [`StoreError::Io`] naming the file and the step that failed.
pub(crate) fn write_atomically(
    directory: &Path,
    name: &str,
    bytes: &[u8],
) -> Result<(), StoreError> {
    let target = directory.join(name);
    let temporary = temporary_path(directory, name);
    let mut file = File::create(&temporary).map_err(io_error("create", &temporary))?;
    file.write_all(bytes).map_err(io_error("write", &temporary))?;
    file.sync_all().map_err(io_error("fsync", &temporary))?;
    drop(file);
    fs::rename(&temporary, &target).map_err(io_error("rename into place", &target))?;
    sync_directory(directory)
}

/// Removes the temporary file a crash during [`write_atomically`] of `name` may have left.
///
/// # Errors
///
/// [`StoreError::Io`] if it exists and cannot be removed.
pub(crate) fn remove_leftover(directory: &Path, name: &str) -> Result<(), StoreError> {
    let temporary = temporary_path(directory, name);
    match fs::remove_file(&temporary) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(io_error("remove", &temporary)(error)),
    }
}

/// Creates the controller directory if it is missing.
///
/// # Errors
///
/// [`StoreError::Io`] if it cannot be created.
pub(crate) fn create_directory(directory: &Path) -> Result<(), StoreError> {
    fs::create_dir_all(directory).map_err(io_error("create the directory", directory))
}

/// Makes a directory's entries (a created or renamed file) durable.
fn sync_directory(directory: &Path) -> Result<(), StoreError> {
    let handle = File::open(directory).map_err(io_error("open the directory", directory))?;
    handle.sync_all().map_err(io_error("fsync the directory", directory))
}

/// Opens the log file for appending records at its end.
fn open_for_append(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new().append(true).open(path).map_err(io_error("open", path))
}

/// The temporary file an atomic write of `name` goes through.
fn temporary_path(directory: &Path, name: &str) -> PathBuf {
    directory.join(format!("{name}.tmp"))
}

/// A payload length as written in a header, refused above `maximum`.
fn checked_length(length: usize, maximum: usize, path: &Path) -> Result<u32, StoreError> {
    match u32::try_from(length) {
        Ok(written) if length <= maximum => Ok(written),
        _ => {
            let reason = format!("a payload of {length} bytes, above the {maximum} allowed");
            let source = io::Error::new(io::ErrorKind::InvalidInput, reason);
            Err(StoreError::Io { operation: "write", path: path.to_path_buf(), source })
        }
    }
}

/// The u32 at `offset` of `bytes`; the caller checked that it is there.
fn read_u32(bytes: &[u8], offset: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_le_bytes(word)
}

/// Makes an I/O failure of `operation` on `path` a [`StoreError::Io`].
fn io_error<'a>(
    operation: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io { operation, path: path.to_path_buf(), source }
}

/// A value that JSON could not encode (a bug in a type's serde form, never the disk).
fn encoding_error(path: &Path, error: serde_json::Error) -> StoreError {
    let source = io::Error::new(io::ErrorKind::InvalidInput, error);
    StoreError::Io { operation: "encode a value for", path: path.to_path_buf(), source }
}

/// A [`StoreError::Damaged`] of `path` at `offset`.
fn damaged(path: &Path, offset: u64, reason: String) -> StoreError {
    StoreError::Damaged { file: path.to_path_buf(), offset, reason }
}

#[cfg(test)]
mod tests;
