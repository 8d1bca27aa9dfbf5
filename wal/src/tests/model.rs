//! A model test: random appends, syncs and snapshots, then crashes that lose any part of the
//! unsynced tail. Recovery must give a prefix of the log that holds every synced record, and
//! the snapshot plus replay must equal the model's state at that prefix.
//!
//! With direct I/O every append is durable when it returns, so the only loss a crash can cause
//! is the write in flight: the test crashes as if the run's last append had not completed yet.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strata_core::record::Record;
use strata_core::Lsn;

use super::PARTITION;
use super::{
    appends_are_durable, apply, encode, recover, run, small_config, state_from_entries,
    write_bytes, State,
};
use crate::{encode_snapshot, DeviceSync, PartitionWal, WalConfig};

const SEEDS: u64 = 48;
const CRASHES_PER_SEED: usize = 4;
const OPERATIONS_PER_RUN_MAX: usize = 60;

/// What the test knows about the log.
struct Model {
    /// Every record appended and not lost, by LSN - 1.
    history: Vec<Record>,
    /// LSNs that end a frame: the only places where a recovered log may end.
    frame_ends: BTreeSet<u64>,
    durable_lsn: u64,
    snapshot_lsn: u64,
}

impl Model {
    fn state_at(&self, lsn: u64) -> State {
        let mut state = State::new();
        let end = usize::try_from(lsn).unwrap();
        self.history[..end].iter().for_each(|record| apply(&mut state, record));
        state
    }
}

fn random_record(rng: &mut StdRng) -> Record {
    let key = format!("k{}", rng.gen_range(0..12)).into_bytes();
    match rng.gen_range(0..10) {
        0 => Record::Delete { key },
        1 => Record::Expire { key, expire_at_ms: rng.gen_range(0..1_000) },
        2 if rng.gen_bool(0.2) => Record::FlushAll,
        _ => {
            let value = vec![rng.gen::<u8>(); rng.gen_range(0..900)];
            Record::Set { key, value, expire_at_ms: 0 }
        }
    }
}

/// The run's last operation, when it was an append: where its frame starts in the active
/// segment, and the log's last LSN before it.
struct LastAppend {
    start: u64,
    lsn_before: u64,
}

async fn run_operations(
    wal: &mut PartitionWal,
    model: &mut Model,
    rng: &mut StdRng,
) -> Option<LastAppend> {
    let mut last_append = None;
    wal.attach_device_sync(Arc::new(DeviceSync::default()));
    for _ in 0..rng.gen_range(1..OPERATIONS_PER_RUN_MAX) {
        last_append = None;
        match rng.gen_range(0..20) {
            0 if model.durable_lsn > model.snapshot_lsn => {
                let lsn = rng.gen_range(model.snapshot_lsn + 1..=model.durable_lsn);
                let state = model.state_at(lsn);
                let entries = state.iter().map(|(k, (v, e))| (k.as_slice(), v.as_slice(), *e));
                wal.write_snapshot(Lsn(lsn), encode_snapshot(PARTITION, entries)).await.unwrap();
                model.snapshot_lsn = lsn;
            }
            1..=6 => {
                wal.sync().await.unwrap();
                model.durable_lsn = model.history.len() as u64;
            }
            _ => {
                let records: Vec<Record> =
                    (0..rng.gen_range(1..5)).map(|_| random_record(rng)).collect();
                let lsn_before = model.history.len() as u64;
                let frame = encode(Lsn(lsn_before + 1), &records);
                let frame_bytes = frame.len() as u64;
                wal.append(frame).await.unwrap();
                model.history.extend(records);
                model.frame_ends.insert(model.history.len() as u64);
                if appends_are_durable(wal) {
                    assert_eq!(wal.durable_lsn(), wal.last_lsn());
                    model.durable_lsn = model.history.len() as u64;
                }
                let (_, write_offset, _) = wal.active_segment();
                let start = write_offset - frame_bytes;
                last_append = Some(LastAppend { start, lsn_before });
            }
        }
    }
    last_append
}

/// The range of the active segment a crash may damage: from the synced offset (buffered, or
/// direct appends waiting for a sync), or the last append's write if it was the last
/// operation (`O_DSYNC` direct I/O, where that write is then taken to be in flight, so not
/// durable yet).
fn crash_range(
    wal: &PartitionWal,
    last_append: Option<LastAppend>,
    model: &mut Model,
) -> (PathBuf, u64, u64) {
    let (path, write_offset, synced_offset) = wal.active_segment();
    if !appends_are_durable(wal) {
        return (path, synced_offset, write_offset);
    }
    assert_eq!(synced_offset, write_offset);
    match last_append {
        Some(append) => {
            model.durable_lsn = append.lsn_before;
            (path, append.start, write_offset)
        }
        None => (path, write_offset, write_offset),
    }
}

/// Loses part of the bytes not yet durable (from `durable_end` to `write_offset`) the way a
/// power cut may: a prefix of them reaches the disk, the next few bytes are garbage, the rest
/// never arrives.
fn crash(path: &Path, durable_end: u64, write_offset: u64, rng: &mut StdRng) {
    if durable_end == write_offset || rng.gen_bool(0.2) {
        return;
    }
    assert!(durable_end <= write_offset, "{durable_end} > {write_offset} in {}", path.display());
    let kept = rng.gen_range(durable_end..=write_offset);
    let lost = usize::try_from(write_offset - kept).unwrap();
    write_bytes(path, kept, &vec![0u8; lost]);
    if rng.gen_bool(0.5) {
        let garbage: Vec<u8> = (0..rng.gen_range(0..=lost.min(96))).map(|_| rng.gen()).collect();
        write_bytes(path, kept, &garbage);
    }
}

/// How often the rare outcomes happened, so that the test proves it reached them.
#[derive(Default)]
struct Coverage {
    torn_tails: u64,
    records_lost: u64,
    snapshots_loaded: u64,
}

/// Recovers and checks the result against the model, which it then cuts to what survived.
fn recover_and_check(
    dir: &Path,
    config: &WalConfig,
    model: &mut Model,
    seed: u64,
    coverage: &mut Coverage,
) -> PartitionWal {
    let recovered = recover(dir, config).unwrap_or_else(|error| panic!("seed {seed}: {error}"));
    let last = recovered.summary.last_lsn.0;
    assert!(
        last >= model.durable_lsn,
        "seed {seed}: lost synced records: {last} < {}",
        model.durable_lsn
    );
    assert!(last <= model.history.len() as u64, "seed {seed}: invented records");
    assert!(last == 0 || model.frame_ends.contains(&last), "seed {seed}: ends inside a frame");
    assert_eq!(recovered.summary.snapshot_lsn.0, model.snapshot_lsn, "seed {seed}");
    let lsns: Vec<u64> = recovered.records.iter().map(|(lsn, _)| lsn.0).collect();
    let expected: Vec<u64> = (model.snapshot_lsn + 1..=last).collect();
    assert_eq!(lsns, expected, "seed {seed}: replay is not the records after the snapshot");
    let mut state = state_from_entries(&recovered.entries);
    recovered.records.iter().for_each(|(_, record)| apply(&mut state, record));
    assert_eq!(state, model.state_at(last), "seed {seed}: recovered state differs");
    coverage.torn_tails += u64::from(recovered.summary.torn_bytes > 0);
    coverage.records_lost += model.history.len() as u64 - last;
    coverage.snapshots_loaded += u64::from(model.snapshot_lsn > 0);
    model.history.truncate(usize::try_from(last).unwrap());
    model.frame_ends.retain(|end| *end <= last);
    model.durable_lsn = last;
    recovered.wal
}

fn recovery_keeps_every_synced_record_through_random_crashes() {
    let config = WalConfig { segment_bytes: 12 * 1024, ..small_config() };
    let mut coverage = Coverage::default();
    for seed in 0..SEEDS {
        let mut rng = StdRng::seed_from_u64(seed);
        let dir = tempfile::tempdir().unwrap();
        let mut model = Model {
            history: Vec::new(),
            frame_ends: BTreeSet::new(),
            durable_lsn: 0,
            snapshot_lsn: 0,
        };
        for _ in 0..CRASHES_PER_SEED {
            let (path, durable_end, write_offset) = run(async {
                let mut wal =
                    recover_and_check(dir.path(), &config, &mut model, seed, &mut coverage);
                let last_append = run_operations(&mut wal, &mut model, &mut rng).await;
                crash_range(&wal, last_append, &mut model)
            });
            crash(&path, durable_end, write_offset, &mut rng);
        }
        run(async {
            recover_and_check(dir.path(), &config, &mut model, seed, &mut coverage);
        });
    }
    assert!(coverage.torn_tails > 10, "{} torn tails", coverage.torn_tails);
    assert!(coverage.records_lost > 10, "{} records lost", coverage.records_lost);
    assert!(coverage.snapshots_loaded > 10, "{} snapshots", coverage.snapshots_loaded);
}

in_every_mode!(recovery_keeps_every_synced_record_through_random_crashes,);
