//! Tests of the WAL on real files in temporary directories, on a real monoio runtime.
//!
//! Most tests run twice, with buffered writes and with direct I/O: `in_both_modes!` makes a
//! `buffered` and a `direct` test of each function named, and `small_config` follows the mode.

/// For each function named, a module of that name with two tests that run it: `buffered` and
/// `direct` (where [`small_config`] asks for `O_DIRECT | O_DSYNC` appends).
macro_rules! in_both_modes {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn buffered() {
                    $crate::tests::with_direct_io(false, super::$name);
                }

                #[test]
                fn direct() {
                    $crate::tests::with_direct_io(true, super::$name);
                }
            }
        )*
    };
}

mod archive;
mod checkpoints;
mod damage;
mod direct;
mod model;
mod poison;
mod round_trip;

use std::cell::Cell;
use std::fs;
use std::future::Future;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use strata_core::frame::encode_frame;
use strata_core::record::Record;
use strata_core::{Epoch, Lsn, PartitionId};

use crate::{encode_checkpoint, PartitionWal, RecoverySummary, WalConfig, WalError};

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

thread_local! {
    /// Whether [`small_config`] asks for direct I/O on this test's thread.
    static DIRECT_IO: Cell<bool> = const { Cell::new(false) };
}

/// Runs `body` with [`small_config`] in buffered (`false`) or direct I/O (`true`) mode.
pub(crate) fn with_direct_io(direct_io: bool, body: impl FnOnce()) {
    DIRECT_IO.with(|mode| mode.set(direct_io));
    body();
}

/// 16 KiB segments, in the mode the running test asked for.
pub(crate) fn small_config() -> WalConfig {
    WalConfig {
        segment_bytes: 16 * 1024,
        direct_io: DIRECT_IO.with(Cell::get),
        keep_until_archived: false,
    }
}

pub(crate) fn encode(first_lsn: Lsn, records: &[Record]) -> Vec<u8> {
    let mut frame = Vec::new();
    encode_frame(&mut frame, PARTITION, Epoch(1), first_lsn, Lsn(first_lsn.0 - 1), records);
    frame
}

/// A checkpoint of an empty keyspace.
pub(crate) fn empty_checkpoint() -> Vec<u8> {
    encode_checkpoint(PARTITION, std::iter::empty())
}

pub(crate) fn set(key: u64, value_bytes: usize) -> Record {
    let key = format!("key-{key}").into_bytes();
    let value = vec![u8::try_from(key.len()).unwrap(); value_bytes];
    Record::Set { key, value, expire_at_ms: 0 }
}

/// One checkpoint entry as recovery hands it over.
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
        |lsn, record| records.push((lsn, record)),
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
    let frame = encode(wal.last_lsn().next(), &records);
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
