//! The epoch history recovery reports: where each epoch starts among the frames after the
//! snapshot, beginning with the snapshot's own epoch when it carries one. A frame that goes
//! back in epoch is damage.

use std::path::Path;

use strata_core::{Epoch, Lsn};

use super::{append_synced_in_epoch, empty_snapshot, recover, run, set, small_config, Placed};
use crate::{scan_segments, stamp_snapshot_epoch, PartitionWal, WalError};

/// Appends one synced frame of two records for each epoch in `epochs`.
async fn frames_of_epochs(wal: &mut PartitionWal, epochs: &[u64]) -> Vec<Placed> {
    let mut placed = Vec::new();
    for (index, epoch) in (0u64..).zip(epochs) {
        let records = vec![set(index * 2, 300), set(index * 2 + 1, 300)];
        placed.push(append_synced_in_epoch(wal, Epoch(*epoch), records).await);
    }
    placed
}

/// A fresh log in `dir` holding frames of `epochs`.
fn log_of_epochs(dir: &Path, epochs: &[u64]) -> Vec<Placed> {
    run(async {
        let mut wal = recover(dir, &small_config()).unwrap().wal;
        frames_of_epochs(&mut wal, epochs).await
    })
}

fn history(entries: &[(u64, u64)]) -> Vec<(Epoch, Lsn)> {
    entries.iter().map(|(epoch, lsn)| (Epoch(*epoch), Lsn(*lsn))).collect()
}

/// An empty snapshot stamped with `epoch` (none for 0).
fn snapshot_of_epoch(epoch: u64) -> Vec<u8> {
    let mut image = empty_snapshot();
    if epoch > 0 {
        stamp_snapshot_epoch(&mut image, Epoch(epoch));
    }
    image
}

fn write_snapshot(dir: &Path, lsn: Lsn, epoch: u64) {
    run(async {
        let mut wal = recover(dir, &small_config()).unwrap().wal;
        wal.write_snapshot(lsn, snapshot_of_epoch(epoch)).await.unwrap();
    });
}

fn recovered_epochs(dir: &Path) -> Vec<(Epoch, Lsn)> {
    run(async { recover(dir, &small_config()).unwrap().summary.epochs })
}

fn expect_corrupt_at(dir: &Path, placed: &Placed) {
    let outcome = run(async { recover(dir, &small_config()).map(|recovered| recovered.summary) });
    match outcome {
        Err(WalError::Corrupt { path, offset, reason }) => {
            assert_eq!(path, placed.path, "{reason}");
            assert_eq!(offset, placed.offset, "{reason}");
            assert!(reason.contains("epoch"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

fn each_change_of_epoch_starts_an_entry() {
    let dir = tempfile::tempdir().unwrap();
    log_of_epochs(dir.path(), &[1, 1, 2, 2, 5]);
    let summary = run(async { recover(dir.path(), &small_config()).unwrap().summary });
    assert_eq!(summary.epochs, history(&[(1, 1), (2, 5), (5, 9)]));
    assert_eq!(summary.last_epoch, Epoch(5));
}

fn the_history_spans_segments() {
    let dir = tempfile::tempdir().unwrap();
    let epochs: Vec<u64> = (0..40).map(|index| [1, 3, 4, 9][index / 10]).collect();
    log_of_epochs(dir.path(), &epochs);
    assert!(scan_segments(dir.path()).unwrap().len() >= 3);
    assert_eq!(recovered_epochs(dir.path()), history(&[(1, 1), (3, 21), (4, 41), (9, 61)]));
}

fn a_snapshot_starts_the_history_with_its_own_epoch() {
    let dir = tempfile::tempdir().unwrap();
    // Frames 1..=2 and 3..=4 of epoch 1, 5..=6 and 7..=8 of epoch 2, 9..=10 of epoch 5.
    log_of_epochs(dir.path(), &[1, 1, 2, 2, 5]);
    write_snapshot(dir.path(), Lsn(4), 1);
    assert_eq!(recovered_epochs(dir.path()), history(&[(1, 4), (2, 5), (5, 9)]));
    // In the middle of a frame of epoch 2, which then adds no entry.
    write_snapshot(dir.path(), Lsn(5), 2);
    assert_eq!(recovered_epochs(dir.path()), history(&[(2, 5), (5, 9)]));
    // Without a stamp, that frame gives the first entry, at its own first LSN.
    write_snapshot(dir.path(), Lsn(5), 0);
    assert_eq!(recovered_epochs(dir.path()), history(&[(2, 5), (5, 9)]));
    // Between two frames of epoch 2: the next one adds no entry.
    write_snapshot(dir.path(), Lsn(6), 2);
    assert_eq!(recovered_epochs(dir.path()), history(&[(2, 6), (5, 9)]));
    write_snapshot(dir.path(), Lsn(6), 0);
    assert_eq!(recovered_epochs(dir.path()), history(&[(2, 7), (5, 9)]));
    // At the end of the log the snapshot is all there is.
    write_snapshot(dir.path(), Lsn(10), 5);
    let summary = run(async { recover(dir.path(), &small_config()).unwrap().summary });
    assert_eq!(summary.epochs, history(&[(5, 10)]));
    assert_eq!(summary.last_epoch, Epoch(5));
    write_snapshot(dir.path(), Lsn(10), 0);
    assert_eq!(recovered_epochs(dir.path()), history(&[]));
}

fn an_empty_log_has_an_empty_history() {
    let dir = tempfile::tempdir().unwrap();
    let summary = run(async { recover(dir.path(), &small_config()).unwrap().summary });
    assert!(summary.epochs.is_empty());
    assert_eq!(summary.last_epoch, Epoch(0));
    // A snapshot at LSN 0 holds no record, whatever its stamp.
    write_snapshot(dir.path(), Lsn::ZERO, 3);
    assert!(recovered_epochs(dir.path()).is_empty());
}

fn a_frame_of_a_lower_epoch_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let placed = log_of_epochs(dir.path(), &[2, 2, 1, 3]);
    expect_corrupt_at(dir.path(), &placed[2]);
}

fn a_frame_below_the_snapshots_epoch_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let placed = log_of_epochs(dir.path(), &[1, 1]);
    write_snapshot(dir.path(), Lsn(2), 3);
    expect_corrupt_at(dir.path(), &placed[1]);
}

in_every_mode!(
    each_change_of_epoch_starts_an_entry,
    the_history_spans_segments,
    a_snapshot_starts_the_history_with_its_own_epoch,
    an_empty_log_has_an_empty_history,
    a_frame_of_a_lower_epoch_is_corruption,
    a_frame_below_the_snapshots_epoch_is_corruption,
);
