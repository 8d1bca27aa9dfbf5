//! Tests of the WAL on real files in temporary directories, on a real monoio runtime.
//!
//! Most tests run three times: with buffered writes, with direct I/O, and with direct I/O
//! whose syncs are shared. `in_every_mode!` makes a `buffered`, a `direct` and a `shared` test
//! of each function named, and `small_config` follows the mode.

/// For each function named, a module of that name with three tests that run it: `buffered`,
/// `direct` (where [`small_config`] asks for `O_DIRECT | O_DSYNC` appends) and `shared`
/// (`O_DIRECT` appends made durable by a sync that may be shared).
macro_rules! in_every_mode {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use $crate::tests::Mode;

                #[test]
                fn buffered() {
                    $crate::tests::with_mode(Mode::Buffered, super::$name);
                }

                #[test]
                fn direct() {
                    $crate::tests::with_mode(Mode::Direct, super::$name);
                }

                #[test]
                fn shared() {
                    $crate::tests::with_mode(Mode::Shared, super::$name);
                }
            }
        )*
    };
}

mod archive;
mod damage;
mod direct;
mod epochs;
mod model;
mod poison;
mod round_trip;
mod shared_sync;
mod snapshots;
mod state_file;
mod truncate;

use std::cell::Cell;
use std::fs;
use std::future::Future;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use strata_core::frame::encode_frame;
use strata_core::record::Record;
use strata_core::{Epoch, Lsn, PartitionId};

use crate::{encode_snapshot, PartitionWal, RecoverySummary, WalConfig, WalError};

pub(crate) use crate::wal::FaultSite;

pub(crate) const PARTITION: PartitionId = PartitionId(3);

/// Runs `future` on a fresh monoio runtime, the way a shard does.
pub(crate) fn run<F: Future>(future: F) -> F::Output {
    monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .expect("monoio runtime")
        .block_on(future)
}

/// How a test's log writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Buffered,
    /// `O_DIRECT | O_DSYNC` appends.
    Direct,
    /// `O_DIRECT` appends and shared syncs.
    Shared,
}

thread_local! {
    /// The mode [`small_config`] asks for on this test's thread.
    static MODE: Cell<Mode> = const { Cell::new(Mode::Buffered) };
}

/// Runs `body` with [`small_config`] in `mode`.
pub(crate) fn with_mode(mode: Mode, body: impl FnOnce()) {
    MODE.with(|current| current.set(mode));
    body();
}

/// 16 KiB segments, in the mode the running test asked for.
pub(crate) fn small_config() -> WalConfig {
    let mode = MODE.with(Cell::get);
    WalConfig {
        segment_bytes: 16 * 1024,
        direct_io: mode != Mode::Buffered,
        shared_sync: mode == Mode::Shared,
        keep_until_archived: false,
    }
}

/// Whether files in `dir` can be opened with `O_DIRECT`.
pub(crate) fn filesystem_allows_direct_io(dir: &Path) -> bool {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(dir.join("probe"))
        .is_ok()
}

/// Whether `wal`'s appends are durable when they return (`O_DSYNC`), with no sync.
pub(crate) fn appends_are_durable(wal: &PartitionWal) -> bool {
    wal.direct_io() && !wal.shares_sync()
}

pub(crate) fn encode(first_lsn: Lsn, records: &[Record]) -> Vec<u8> {
    encode_in_epoch(Epoch(1), first_lsn, records)
}

pub(crate) fn encode_in_epoch(epoch: Epoch, first_lsn: Lsn, records: &[Record]) -> Vec<u8> {
    let mut frame = Vec::new();
    encode_frame(&mut frame, PARTITION, epoch, first_lsn, Lsn(first_lsn.0 - 1), records);
    frame
}

/// A snapshot of an empty keyspace.
pub(crate) fn empty_snapshot() -> Vec<u8> {
    encode_snapshot(PARTITION, std::iter::empty())
}

pub(crate) fn set(key: u64, value_bytes: usize) -> Record {
    let key = format!("key-{key}").into_bytes();
    let value = vec![u8::try_from(key.len()).unwrap(); value_bytes];
    Record::Set { key, value, expire_at_ms: 0 }
}

/// One snapshot entry as recovery hands it over.
pub(crate) type Entry = (Vec<u8>, Vec<u8>, u64);

/// What a recovery produced.
pub(crate) struct Recovered {
    pub wal: PartitionWal,
    pub summary: RecoverySummary,
    pub entries: Vec<Entry>,
    pub records: Vec<(Lsn, Record)>,
}

pub(crate) fn recover(dir: &Path, config: &WalConfig) -> Result<Recovered, WalError> {
    let mut entries = Vec::new();
    let mut records = Vec::new();
    let (wal, summary) = PartitionWal::recover(
        dir,
        PARTITION,
        config,
        |key, value, expire_at_ms| entries.push((key.to_vec(), value.to_vec(), expire_at_ms)),
        |lsn, record| records.push((lsn, record.to_record())),
    )?;
    Ok(Recovered { wal, summary, entries, records })
}

/// Where a frame was written.
#[derive(Clone, Debug)]
pub(crate) struct Placed {
    pub path: PathBuf,
    pub offset: u64,
    pub bytes: u64,
    pub records: Vec<Record>,
}

/// Appends `records` as one frame at the tail and syncs it.
pub(crate) async fn append_synced(wal: &mut PartitionWal, records: Vec<Record>) -> Placed {
    let placed = append(wal, records).await;
    wal.sync().await.unwrap();
    placed
}

pub(crate) async fn append(wal: &mut PartitionWal, records: Vec<Record>) -> Placed {
    append_in_epoch(wal, Epoch(1), records).await
}

/// Appends `records` as one frame of `epoch` at the tail and syncs it.
pub(crate) async fn append_synced_in_epoch(
    wal: &mut PartitionWal,
    epoch: Epoch,
    records: Vec<Record>,
) -> Placed {
    let placed = append_in_epoch(wal, epoch, records).await;
    wal.sync().await.unwrap();
    placed
}

pub(crate) async fn append_in_epoch(
    wal: &mut PartitionWal,
    epoch: Epoch,
    records: Vec<Record>,
) -> Placed {
    let frame = encode_in_epoch(epoch, wal.last_lsn().next(), &records);
    let bytes = frame.len() as u64;
    wal.append(frame).await.unwrap();
    let (path, write_offset, _) = wal.active_segment();
    Placed { path, offset: write_offset - bytes, bytes, records }
}

/// Writes `frames` frames of `records_per_frame` records each, synced one by one.
pub(crate) async fn fill(
    wal: &mut PartitionWal,
    frames: usize,
    records_per_frame: u64,
) -> Vec<Placed> {
    let mut placed = Vec::new();
    for index in 0..frames as u64 {
        let records = (0..records_per_frame)
            .map(|r| set(index * 10 + r, 100 + usize::try_from(index % 7).unwrap() * 50))
            .collect();
        placed.push(append_synced(wal, records).await);
    }
    placed
}

pub(crate) fn all_records(placed: &[Placed]) -> Vec<(Lsn, Record)> {
    placed
        .iter()
        .flat_map(|p| p.records.iter().cloned())
        .enumerate()
        .map(|(i, r)| (Lsn(i as u64 + 1), r))
        .collect()
}

pub(crate) fn xor_byte(path: &Path, offset: u64, mask: u8) {
    let file = fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    file.write_all_at(&[byte[0] ^ mask], offset).unwrap();
}

pub(crate) fn write_bytes(path: &Path, offset: u64, bytes: &[u8]) {
    let file = fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, offset).unwrap();
}

pub(crate) fn read_bytes(path: &Path, offset: u64, length: u64) -> Vec<u8> {
    let file = fs::File::open(path).unwrap();
    let mut bytes = vec![0u8; usize::try_from(length).unwrap()];
    file.read_exact_at(&mut bytes, offset).unwrap();
    bytes
}

/// A keyspace as the records describe it: key → (value, `expire_at_ms`).
pub(crate) type State = std::collections::BTreeMap<Vec<u8>, (Vec<u8>, u64)>;

pub(crate) fn apply(state: &mut State, record: &Record) {
    match record {
        Record::Set { key, value, expire_at_ms } => {
            state.insert(key.clone(), (value.clone(), *expire_at_ms));
        }
        Record::Delete { key } => {
            state.remove(key);
        }
        Record::Expire { key, expire_at_ms } => {
            if let Some(entry) = state.get_mut(key) {
                entry.1 = *expire_at_ms;
            }
        }
        Record::FlushAll => state.clear(),
    }
}

pub(crate) fn state_from_entries(entries: &[Entry]) -> State {
    entries.iter().map(|(key, value, expire)| (key.clone(), (value.clone(), *expire))).collect()
}
