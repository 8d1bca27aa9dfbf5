//! Truncation: the log is cut back to a frame boundary at or after the snapshot, recovers
//! there with no torn tail or damage, and appends continue right after it. Refused points
//! change nothing.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use strata_core::record::Record;
use strata_core::{Epoch, Lsn};

use super::{
    append_synced_in_epoch, empty_snapshot, read_bytes, recover, run, set, small_config,
    write_bytes, Placed, PARTITION,
};
use crate::{
    scan_segments, segment_file_name, stamp_snapshot_epoch, truncate_log, PartitionWal,
    SegmentInfo, TruncateSummary, WalError,
};

/// Frames in the logs of these tests: two records each, so frame `i` holds LSNs `2i + 1` and
/// `2i + 2`, and spread over at least three 16 KiB segments.
const FRAMES: usize = 40;

/// Appends `count` synced frames of two records, frame `index` in epoch `epoch_of(index)`.
async fn append_frames(
    wal: &mut PartitionWal,
    count: usize,
    epoch_of: impl Fn(usize) -> u64,
) -> Vec<Placed> {
    let mut placed = Vec::new();
    for index in 0..count {
        let key = index as u64 * 2;
        let value_bytes = 100 + (index % 7) * 50;
        let records = vec![set(key, value_bytes), set(key + 1, value_bytes)];
        let epoch = Epoch(epoch_of(index));
        placed.push(append_synced_in_epoch(wal, epoch, records).await);
    }
    placed
}

/// A fresh log of [`FRAMES`] frames in `dir`, frame `index` in epoch `epoch_of(index)`.
fn written_log(dir: &Path, epoch_of: impl Fn(usize) -> u64) -> (Vec<Placed>, Vec<SegmentInfo>) {
    let placed = run(async {
        let mut wal = recover(dir, &small_config()).unwrap().wal;
        append_frames(&mut wal, FRAMES, epoch_of).await
    });
    let segments = scan_segments(dir).unwrap();
    assert!(segments.len() >= 3, "{} segments", segments.len());
    (placed, segments)
}

/// The LSN at which frame `index` ends.
fn end_of_frame(index: usize) -> Lsn {
    Lsn(2 * (index as u64 + 1))
}

/// Every record of `placed`, numbered from LSN 1.
fn numbered(placed: &[Placed]) -> Vec<(Lsn, Record)> {
    let records = placed.iter().flat_map(|frame| frame.records.iter().cloned());
    (1..).map(Lsn).zip(records).collect()
}

/// Every file in `dir` and its bytes.
fn directory_contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap())
        .map(|entry| {
            (entry.file_name().to_string_lossy().into_owned(), fs::read(entry.path()).unwrap())
        })
        .collect()
}

/// The index of a frame in the middle of the first segment, followed there by at least two
/// more.
fn middle_of_first_segment(placed: &[Placed], segments: &[SegmentInfo]) -> usize {
    let in_first = placed.iter().filter(|frame| frame.path == segments[0].path).count();
    assert!(in_first >= 5, "{in_first} frames in the first segment");
    in_first / 2
}

fn write_snapshot(dir: &Path, lsn: Lsn, epoch: Epoch) {
    run(async {
        let mut wal = recover(dir, &small_config()).unwrap().wal;
        let mut image = empty_snapshot();
        stamp_snapshot_epoch(&mut image, epoch);
        wal.write_snapshot(lsn, image).await.unwrap();
    });
}

/// Recovery after a truncation finds exactly the frames of `kept`, with no torn tail; appends
/// (of `epoch`) continue at the next LSN, across rolls, and survive another recovery.
fn recovers_and_continues(dir: &Path, kept: &[Placed], epoch: Epoch) {
    let config = small_config();
    let last_lsn = Lsn(numbered(kept).len() as u64);
    let appended = run(async {
        let mut recovered = recover(dir, &config).unwrap();
        let summary = &recovered.summary;
        assert_eq!(summary.last_lsn, last_lsn);
        assert_eq!(summary.torn_bytes, 0);
        let replayed: Vec<_> =
            numbered(kept).into_iter().filter(|(lsn, _)| *lsn > summary.snapshot_lsn).collect();
        assert_eq!(recovered.records, replayed);
        assert_eq!(recovered.wal.last_lsn(), last_lsn);
        let wal = &mut recovered.wal;
        let first = append_synced_in_epoch(wal, epoch, vec![set(1000, 10)]).await;
        assert_eq!(wal.last_lsn(), last_lsn.next());
        let mut appended = vec![first];
        appended.extend(append_frames(wal, 30, |_| epoch.0).await);
        appended
    });
    run(async {
        let recovered = recover(dir, &config).unwrap();
        let all: Vec<Placed> = kept.iter().chain(&appended).cloned().collect();
        assert_eq!(recovered.summary.last_lsn, Lsn(numbered(&all).len() as u64));
        assert_eq!(recovered.summary.torn_bytes, 0);
        let snapshot_lsn = recovered.summary.snapshot_lsn;
        let replayed: Vec<_> =
            numbered(&all).into_iter().filter(|(lsn, _)| *lsn > snapshot_lsn).collect();
        assert_eq!(recovered.records, replayed);
    });
}

fn truncating_in_the_middle_of_a_segment_zeros_the_frames_after_the_point() {
    let dir = tempfile::tempdir().unwrap();
    let (placed, segments) = written_log(dir.path(), |_| 1);
    let keep = middle_of_first_segment(&placed, &segments);
    let after = end_of_frame(keep);
    let summary = truncate_log(dir.path(), PARTITION, after).unwrap();
    let expected = TruncateSummary {
        records_discarded: 2 * FRAMES as u64 - after.0,
        frames_discarded: (FRAMES - keep - 1) as u64,
        last_lsn: after,
        last_epoch: Epoch(1),
    };
    assert_eq!(summary, expected);
    assert_eq!(scan_segments(dir.path()).unwrap(), segments[..1]);
    let cut = &placed[keep + 1];
    let last_in_first = placed.iter().rfind(|frame| frame.path == cut.path).unwrap();
    let end = last_in_first.offset + last_in_first.bytes;
    assert!(read_bytes(&cut.path, cut.offset, end - cut.offset).iter().all(|byte| *byte == 0));
    assert!(read_bytes(&cut.path, cut.offset - 8, 8).iter().any(|byte| *byte != 0));
    recovers_and_continues(dir.path(), &placed[..=keep], Epoch(1));
}

fn truncating_at_a_segment_boundary_removes_the_segments_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let (placed, segments) = written_log(dir.path(), |_| 1);
    let last_of_first = placed.iter().rposition(|frame| frame.path == segments[0].path).unwrap();
    let after = end_of_frame(last_of_first);
    assert_eq!(segments[1].first_lsn, after.next());
    let first_before = fs::read(&segments[0].path).unwrap();
    let summary = truncate_log(dir.path(), PARTITION, after).unwrap();
    assert_eq!(summary.last_lsn, after);
    assert_eq!(summary.last_epoch, Epoch(1));
    assert_eq!(summary.frames_discarded, (FRAMES - last_of_first - 1) as u64);
    assert_eq!(scan_segments(dir.path()).unwrap(), segments[..1]);
    assert_eq!(fs::read(&segments[0].path).unwrap(), first_before, "left as it was");
    recovers_and_continues(dir.path(), &placed[..=last_of_first], Epoch(1));
}

fn a_point_inside_a_frame_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    written_log(dir.path(), |_| 1);
    let before = directory_contents(dir.path());
    for after in [Lsn(1), Lsn(3), Lsn(41), Lsn(79)] {
        match truncate_log(dir.path(), PARTITION, after) {
            Err(WalError::NotAFrameBoundary { lsn }) => assert_eq!(lsn, after),
            other => panic!("expected NotAFrameBoundary at {after}, got {other:?}"),
        }
    }
    assert_eq!(directory_contents(dir.path()), before);
}

fn a_point_below_the_snapshot_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (placed, _) = written_log(dir.path(), |_| 1);
    // LSN 41 is the first record of the frame 41..=42.
    write_snapshot(dir.path(), Lsn(41), Epoch(1));
    let before = directory_contents(dir.path());
    for after in [Lsn::ZERO, Lsn(30), Lsn(40)] {
        match truncate_log(dir.path(), PARTITION, after) {
            Err(WalError::BelowSnapshot { lsn, snapshot }) => {
                assert_eq!((lsn, snapshot), (after, Lsn(41)));
            }
            other => panic!("expected BelowSnapshot at {after}, got {other:?}"),
        }
    }
    let inside = truncate_log(dir.path(), PARTITION, Lsn(41));
    assert!(matches!(inside, Err(WalError::NotAFrameBoundary { lsn: Lsn(41) })), "{inside:?}");
    assert_eq!(directory_contents(dir.path()), before);
    let summary = truncate_log(dir.path(), PARTITION, Lsn(42)).unwrap();
    assert_eq!((summary.last_lsn, summary.last_epoch), (Lsn(42), Epoch(1)));
    recovers_and_continues(dir.path(), &placed[..21], Epoch(1));
}

/// The snapshot removed the segment whose last frame ends at its LSN: truncating there
/// leaves the snapshot alone, and its epoch is the log's last.
fn truncating_at_the_snapshot_of_removed_segments_keeps_the_snapshot_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (placed, segments) = written_log(dir.path(), |_| 2);
    let last_of_first = placed.iter().rposition(|frame| frame.path == segments[0].path).unwrap();
    let after = end_of_frame(last_of_first);
    write_snapshot(dir.path(), after, Epoch(2));
    assert!(!segments[0].path.exists(), "the snapshot covers the first segment");
    let summary = truncate_log(dir.path(), PARTITION, after).unwrap();
    let expected = TruncateSummary {
        records_discarded: 2 * FRAMES as u64 - after.0,
        frames_discarded: (FRAMES - last_of_first - 1) as u64,
        last_lsn: after,
        last_epoch: Epoch(2),
    };
    assert_eq!(summary, expected);
    assert!(scan_segments(dir.path()).unwrap().is_empty());
    let epochs = run(async { recover(dir.path(), &small_config()).unwrap().summary.epochs });
    assert_eq!(epochs, vec![(Epoch(2), after)]);
    recovers_and_continues(dir.path(), &placed[..=last_of_first], Epoch(3));
    let epochs = run(async { recover(dir.path(), &small_config()).unwrap().summary.epochs });
    assert_eq!(epochs, vec![(Epoch(2), after), (Epoch(3), after.next())]);
}

/// What a replica does with a diverged tail: cut at the end of the last epoch both logs
/// share, then continue in the new leader's epoch.
fn a_truncated_log_keeps_the_epochs_before_the_point() {
    let dir = tempfile::tempdir().unwrap();
    // LSNs 1..=20 in epoch 1, 21..=40 in epoch 2, 41..=80 in epoch 5.
    let (placed, _) = written_log(dir.path(), |index| [1, 2, 5, 5][index / 10]);
    let summary = truncate_log(dir.path(), PARTITION, Lsn(40)).unwrap();
    assert_eq!((summary.records_discarded, summary.last_epoch), (40, Epoch(2)));
    let epochs = run(async { recover(dir.path(), &small_config()).unwrap().summary.epochs });
    assert_eq!(epochs, vec![(Epoch(1), Lsn(1)), (Epoch(2), Lsn(21))]);
    recovers_and_continues(dir.path(), &placed[..20], Epoch(6));
    let epochs = run(async { recover(dir.path(), &small_config()).unwrap().summary.epochs });
    assert_eq!(epochs, vec![(Epoch(1), Lsn(1)), (Epoch(2), Lsn(21)), (Epoch(6), Lsn(41))]);
}

fn a_point_at_or_beyond_the_end_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    written_log(dir.path(), |index| 1 + index as u64 / 20);
    let before = directory_contents(dir.path());
    for after in [Lsn(80), Lsn(81), Lsn(1000)] {
        let unchanged = TruncateSummary {
            records_discarded: 0,
            frames_discarded: 0,
            last_lsn: Lsn(80),
            last_epoch: Epoch(2),
        };
        assert_eq!(truncate_log(dir.path(), PARTITION, after).unwrap(), unchanged);
    }
    assert_eq!(directory_contents(dir.path()), before);
    let empty = tempfile::tempdir().unwrap();
    run(async { recover(empty.path(), &small_config()).unwrap() });
    let summary = truncate_log(empty.path(), PARTITION, Lsn(5)).unwrap();
    assert_eq!((summary.records_discarded, summary.last_lsn), (0, Lsn::ZERO));
    assert_eq!(summary.last_epoch, Epoch(0));
}

fn truncating_to_zero_empties_the_log() {
    let dir = tempfile::tempdir().unwrap();
    written_log(dir.path(), |_| 1);
    let summary = truncate_log(dir.path(), PARTITION, Lsn::ZERO).unwrap();
    let expected = TruncateSummary {
        records_discarded: 2 * FRAMES as u64,
        frames_discarded: FRAMES as u64,
        last_lsn: Lsn::ZERO,
        last_epoch: Epoch(0),
    };
    assert_eq!(summary, expected);
    assert!(scan_segments(dir.path()).unwrap().is_empty());
    recovers_and_continues(dir.path(), &[], Epoch(1));
}

/// A spare that a crash left after its header was written, and a first segment still being
/// created, hold a valid header and frames under `*.tmp` names: truncation leaves them to
/// recovery, which removes them.
fn spare_and_temporary_segment_files_are_left_to_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let (placed, segments) = written_log(dir.path(), |_| 1);
    let spare = dir.path().join("spare-4242.tmp");
    fs::copy(&segments.last().unwrap().path, &spare).unwrap();
    let creating = dir.path().join(format!("{}.tmp", segment_file_name(Lsn(81))));
    fs::copy(&segments[1].path, &creating).unwrap();
    let spare_bytes = fs::read(&spare).unwrap();
    let keep = middle_of_first_segment(&placed, &segments);
    let summary = truncate_log(dir.path(), PARTITION, end_of_frame(keep)).unwrap();
    assert_eq!(summary.frames_discarded, (FRAMES - keep - 1) as u64);
    assert_eq!(fs::read(&spare).unwrap(), spare_bytes);
    assert!(creating.exists());
    recovers_and_continues(dir.path(), &placed[..=keep], Epoch(1));
    assert!(!spare.exists());
    assert!(!creating.exists());
}

/// A crash part way through leaves the newer segments gone and the cut segment's frames
/// zeroed from the last one back, the newest zeroing torn: recovery cuts that as a torn tail,
/// and truncating again finishes the work.
fn a_truncation_interrupted_by_a_crash_recovers_and_can_be_finished() {
    let dir = tempfile::tempdir().unwrap();
    let (placed, segments) = written_log(dir.path(), |_| 1);
    let keep = middle_of_first_segment(&placed, &segments);
    let last_of_first = placed.iter().rposition(|frame| frame.path == segments[0].path).unwrap();
    assert!(last_of_first >= keep + 3);
    for segment in segments[1..].iter().rev() {
        fs::remove_file(&segment.path).unwrap();
    }
    let zeroed = &placed[last_of_first];
    write_bytes(&zeroed.path, zeroed.offset, &vec![0; usize::try_from(zeroed.bytes).unwrap()]);
    let torn = &placed[last_of_first - 1];
    let half = torn.bytes / 2;
    let zeros = vec![0; usize::try_from(torn.bytes - half).unwrap()];
    write_bytes(&torn.path, torn.offset + half, &zeros);
    let summary = run(async { recover(dir.path(), &small_config()).unwrap().summary });
    assert!(summary.torn_bytes > 0);
    assert_eq!(summary.last_lsn, end_of_frame(last_of_first - 2));
    let summary = truncate_log(dir.path(), PARTITION, end_of_frame(keep)).unwrap();
    assert_eq!(summary.frames_discarded, (last_of_first - 2 - keep) as u64);
    recovers_and_continues(dir.path(), &placed[..=keep], Epoch(1));
}

in_every_mode!(
    truncating_in_the_middle_of_a_segment_zeros_the_frames_after_the_point,
    truncating_at_a_segment_boundary_removes_the_segments_after_it,
    a_point_inside_a_frame_is_refused_and_changes_nothing,
    a_point_below_the_snapshot_is_refused_and_changes_nothing,
    truncating_at_the_snapshot_of_removed_segments_keeps_the_snapshot_alone,
    a_truncated_log_keeps_the_epochs_before_the_point,
    a_point_at_or_beyond_the_end_changes_nothing,
    truncating_to_zero_empties_the_log,
    spare_and_temporary_segment_files_are_left_to_recovery,
    a_truncation_interrupted_by_a_crash_recovers_and_can_be_finished,
);
