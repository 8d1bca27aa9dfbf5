//! Snapshots: they bound replay, let covered segments go, and are never skipped silently.

use strata_core::record::Record;
use strata_core::Lsn;

use super::{
    append_synced, apply, fill, recover, run, set, small_config, state_from_entries, xor_byte,
    State,
};
use super::{empty_snapshot, PARTITION};
use crate::{encode_snapshot, scan_segments, snapshot_file_name, WalError};

fn state_of(records: &[Record]) -> State {
    let mut state = State::new();
    for record in records {
        apply(&mut state, record);
    }
    state
}

fn recovery_loads_the_snapshot_and_replays_only_later_records() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config();
    let (history, snapshot_lsn) = run(async {
        let mut wal = recover(dir.path(), &config).unwrap().wal;
        let placed = fill(&mut wal, 70, 2).await;
        let mut history: Vec<Record> = placed.iter().flat_map(|p| p.records.clone()).collect();
        let segments_before = scan_segments(dir.path()).unwrap().len();
        let state = state_of(&history);
        let snapshot_lsn = wal.last_lsn();
        let entries = state.iter().map(|(k, (v, e))| (k.as_slice(), v.as_slice(), *e));
        let summary =
            wal.write_snapshot(snapshot_lsn, encode_snapshot(PARTITION, entries)).await.unwrap();
        assert_eq!(summary.lsn, snapshot_lsn);
        assert_eq!(summary.entries, state.len() as u64);
        assert!(summary.segments_deleted > 0);
        assert_eq!(wal.bytes_since_snapshot(), 0);
        let segments_after = scan_segments(dir.path()).unwrap();
        assert_eq!(segments_after.len(), segments_before - summary.segments_deleted);
        assert_eq!(segments_after.len(), 1, "only the active segment is left");
        for index in 0..30 {
            let records = vec![set(index, 300), Record::Delete { key: b"key-10".to_vec() }];
            history.extend(append_synced(&mut wal, records).await.records);
        }
        assert!(wal.bytes_since_snapshot() > 0);
        (history, snapshot_lsn)
    });
    assert!(dir.path().join(snapshot_file_name(snapshot_lsn)).exists());
    run(async {
        let recovered = recover(dir.path(), &config).unwrap();
        assert_eq!(recovered.summary.snapshot_lsn, snapshot_lsn);
        let snapshot_records = usize::try_from(snapshot_lsn.0).unwrap();
        assert_eq!(state_from_entries(&recovered.entries), state_of(&history[..snapshot_records]));
        assert_eq!(recovered.records.len(), history.len() - snapshot_records);
        assert_eq!(recovered.records[0].0, snapshot_lsn.next());
        let mut state = state_from_entries(&recovered.entries);
        recovered.records.iter().for_each(|(_, record)| apply(&mut state, record));
        assert_eq!(state, state_of(&history));
        assert_eq!(recovered.wal.snapshot_lsn(), snapshot_lsn);
    });
}

fn a_snapshot_in_the_middle_of_a_frame_replays_the_rest_of_it() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let mut wal = recover(dir.path(), &small_config()).unwrap().wal;
        fill(&mut wal, 5, 4).await;
        // LSN 18 is the second record of the last frame (17..=20).
        let entries: Vec<(&[u8], &[u8], u64)> = vec![(b"k", b"v", 0)];
        wal.write_snapshot(Lsn(18), encode_snapshot(PARTITION, entries)).await.unwrap();
    });
    run(async {
        let recovered = recover(dir.path(), &small_config()).unwrap();
        assert_eq!(recovered.entries, vec![(b"k".to_vec(), b"v".to_vec(), 0)]);
        let lsns: Vec<Lsn> = recovered.records.iter().map(|(lsn, _)| *lsn).collect();
        assert_eq!(lsns, vec![Lsn(19), Lsn(20)]);
        assert_eq!(recovered.summary.frames_replayed, 1);
    });
}

fn a_newer_snapshot_replaces_the_older_one() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let mut wal = recover(dir.path(), &small_config()).unwrap().wal;
        fill(&mut wal, 5, 1).await;
        wal.write_snapshot(Lsn(3), empty_snapshot()).await.unwrap();
        wal.write_snapshot(Lsn(5), empty_snapshot()).await.unwrap();
    });
    assert!(!dir.path().join(snapshot_file_name(Lsn(3))).exists());
    assert!(dir.path().join(snapshot_file_name(Lsn(5))).exists());
}

fn a_corrupt_snapshot_stops_recovery_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let mut wal = recover(dir.path(), &small_config()).unwrap().wal;
        fill(&mut wal, 10, 1).await;
        let entries: Vec<(&[u8], &[u8], u64)> = vec![(b"a", b"1", 0), (b"b", b"2", 5)];
        wal.write_snapshot(Lsn(10), encode_snapshot(PARTITION, entries)).await.unwrap();
    });
    let path = dir.path().join(snapshot_file_name(Lsn(10)));
    xor_byte(&path, 70, 0x01);
    let outcome = run(async { recover(dir.path(), &small_config()).map(|r| r.summary) });
    match outcome {
        Err(error @ WalError::Corrupt { .. }) => {
            assert!(error.to_string().contains(&path.display().to_string()), "{error}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

fn a_leftover_temporary_snapshot_is_ignored_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let mut wal = recover(dir.path(), &small_config()).unwrap().wal;
        fill(&mut wal, 3, 1).await;
    });
    let temporary = dir.path().join(format!("{}.tmp", snapshot_file_name(Lsn(3))));
    std::fs::write(&temporary, b"half a snapshot").unwrap();
    run(async {
        let recovered = recover(dir.path(), &small_config()).unwrap();
        assert_eq!(recovered.summary.snapshot_lsn, Lsn::ZERO);
        assert_eq!(recovered.records.len(), 3);
    });
    assert!(!temporary.exists());
}

/// Strata 0.2 and earlier named the same file `checkpoint-<lsn>.ckpt`. A directory written
/// by them recovers with nothing lost (the segments the snapshot covers are gone, so losing
/// the snapshot would lose their records), and the next snapshot, under the new name,
/// replaces the legacy file as it would any older one.
fn a_snapshot_under_its_legacy_name_recovers_and_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config();
    let (history, snapshot_lsn) = run(async {
        let mut wal = recover(dir.path(), &config).unwrap().wal;
        let placed = fill(&mut wal, 70, 2).await;
        let mut history: Vec<Record> = placed.iter().flat_map(|p| p.records.clone()).collect();
        let state = state_of(&history);
        let snapshot_lsn = wal.last_lsn();
        let entries = state.iter().map(|(k, (v, e))| (k.as_slice(), v.as_slice(), *e));
        let summary =
            wal.write_snapshot(snapshot_lsn, encode_snapshot(PARTITION, entries)).await.unwrap();
        assert!(summary.segments_deleted > 0, "the snapshot alone holds the first records");
        let records = vec![set(3, 200), Record::Delete { key: b"key-10".to_vec() }];
        history.extend(append_synced(&mut wal, records).await.records);
        (history, snapshot_lsn)
    });
    let legacy = dir.path().join(format!("checkpoint-{:020}.ckpt", snapshot_lsn.0));
    std::fs::rename(dir.path().join(snapshot_file_name(snapshot_lsn)), &legacy).unwrap();
    let last_lsn = run(async {
        let mut recovered = recover(dir.path(), &config).unwrap();
        assert_eq!(recovered.summary.snapshot_lsn, snapshot_lsn);
        assert_eq!(
            recovered.records.len(),
            history.len() - usize::try_from(snapshot_lsn.0).unwrap()
        );
        let mut state = state_from_entries(&recovered.entries);
        recovered.records.iter().for_each(|(_, record)| apply(&mut state, record));
        assert_eq!(state, state_of(&history), "nothing lost");
        let last_lsn = recovered.wal.last_lsn();
        let entries = state.iter().map(|(k, (v, e))| (k.as_slice(), v.as_slice(), *e));
        let image = encode_snapshot(PARTITION, entries);
        recovered.wal.write_snapshot(last_lsn, image).await.unwrap();
        last_lsn
    });
    assert!(!legacy.exists(), "the newer snapshot replaced the legacy file");
    assert!(dir.path().join(snapshot_file_name(last_lsn)).exists());
    run(async {
        let recovered = recover(dir.path(), &config).unwrap();
        assert_eq!(recovered.summary.snapshot_lsn, last_lsn);
        assert_eq!(state_from_entries(&recovered.entries), state_of(&history));
    });
}

/// Buffered mode only: with direct I/O an appended record is durable at once (see `direct`).
#[test]
#[should_panic(expected = "not yet durable")]
fn a_snapshot_of_unsynced_records_is_a_bug() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let mut wal = recover(dir.path(), &small_config()).unwrap().wal;
        super::append(&mut wal, vec![set(1, 1)]).await;
        let _ = wal.write_snapshot(Lsn(1), empty_snapshot()).await;
    });
}

in_every_mode!(
    recovery_loads_the_snapshot_and_replays_only_later_records,
    a_snapshot_in_the_middle_of_a_frame_replays_the_rest_of_it,
    a_newer_snapshot_replaces_the_older_one,
    a_corrupt_snapshot_stops_recovery_naming_it,
    a_leftover_temporary_snapshot_is_ignored_and_removed,
    a_snapshot_under_its_legacy_name_recovers_and_is_replaced,
);
