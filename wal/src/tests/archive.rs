//! The archive's side of the WAL: sealed segments wait for the archive floor, segment images
//! are read back frame by frame, and a partition written from archived objects recovers to
//! the same records.

use std::fs;

use strata_core::{Epoch, Lsn};

use super::{
    all_records, append_synced_in_epoch, fill, recover, run, set, small_config, Placed, PARTITION,
};
use crate::{
    encode_snapshot, read_log_after, scan_segments, segment_extent, stamp_snapshot_epoch,
    PartitionWriter, WalConfig,
};

fn archived_config() -> WalConfig {
    WalConfig { keep_until_archived: true, ..small_config() }
}

fn sealed_segments_wait_for_the_archive_floor() {
    let dir = tempfile::tempdir().unwrap();
    let config = archived_config();
    run(async {
        let mut wal = recover(dir.path(), &config).unwrap().wal;
        fill(&mut wal, 60, 2).await;
        let segments = scan_segments(dir.path()).unwrap();
        assert!(segments.len() >= 4, "{} segments", segments.len());
        let lsn = wal.last_lsn();
        let summary = wal.write_snapshot(lsn, encode_snapshot(PARTITION, [])).await.unwrap();
        assert_eq!(summary.segments_deleted, 0, "nothing is archived yet");
        // The archive holds the first two segments.
        let floor = Lsn(segments[2].first_lsn.0 - 1);
        wal.set_archive_floor(floor);
        let summary = wal.write_snapshot(lsn, encode_snapshot(PARTITION, [])).await.unwrap();
        assert_eq!(summary.segments_deleted, 2);
        assert_eq!(scan_segments(dir.path()).unwrap()[0].first_lsn, segments[2].first_lsn);
    });
    // Recovery keeps the covered segments that still wait, and replays none of them.
    run(async {
        let recovered = recover(dir.path(), &config).unwrap();
        assert!(recovered.records.is_empty());
        let on_disk = scan_segments(dir.path()).unwrap().len();
        assert_eq!(recovered.wal.sealed_segments(), on_disk - 1);
    });
}

fn a_partition_written_from_segment_images_recovers_the_same_records() {
    let source = tempfile::tempdir().unwrap();
    let config = small_config();
    let placed = run(async {
        let mut wal = recover(source.path(), &config).unwrap().wal;
        fill(&mut wal, 40, 3).await
    });
    let target = tempfile::tempdir().unwrap();
    let mut writer = PartitionWriter::new(target.path(), PARTITION, 32 * 1024).unwrap();
    let segments = scan_segments(source.path()).unwrap();
    for (index, segment) in segments.iter().enumerate() {
        let bytes = fs::read(&segment.path).unwrap();
        let extent = segment_extent(&bytes, PARTITION).unwrap();
        assert_eq!(extent.first_lsn, segment.first_lsn);
        let trimmed = &bytes[..usize::try_from(extent.end_offset).unwrap()];
        writer.append_segment("object", trimmed).unwrap();
        // Feeding a segment again (an overlapping archive) adds nothing.
        if index == 0 {
            assert_eq!(writer.append_segment("object", trimmed).unwrap(), 0);
        }
    }
    let last = writer.finish().unwrap();
    assert_eq!(last.0, all_records(&placed).len() as u64);
    run(async {
        let recovered = recover(target.path(), &config).unwrap();
        assert_eq!(recovered.records, all_records(&placed));
    });
}

fn a_damaged_segment_image_is_refused_with_its_offset() {
    let source = tempfile::tempdir().unwrap();
    let config = small_config();
    run(async {
        let mut wal = recover(source.path(), &config).unwrap().wal;
        fill(&mut wal, 5, 2).await;
    });
    let segment = &scan_segments(source.path()).unwrap()[0];
    let mut bytes = fs::read(&segment.path).unwrap();
    bytes[4096 + 70] ^= 0x01;
    let (offset, _) = segment_extent(&bytes, PARTITION).unwrap_err();
    assert!(offset >= 4096, "offset {offset}");
    let target = tempfile::tempdir().unwrap();
    let mut writer = PartitionWriter::new(target.path(), PARTITION, 32 * 1024).unwrap();
    let error = writer.append_segment("p3/seg/x", &bytes).unwrap_err().to_string();
    assert!(error.contains("p3/seg/x"), "{error}");
}

/// A log of 40 frames of two records, frame `index` in epoch `index / 4 + 1`, and where the
/// first segment's last frame is.
fn log_of_rising_epochs(dir: &std::path::Path) -> (Vec<Placed>, usize) {
    let placed = run(async {
        let mut wal = recover(dir, &small_config()).unwrap().wal;
        let mut placed = Vec::new();
        for index in 0..40u64 {
            let records = vec![set(index * 2, 300), set(index * 2 + 1, 300)];
            let epoch = Epoch(index / 4 + 1);
            placed.push(append_synced_in_epoch(&mut wal, epoch, records).await);
        }
        placed
    });
    let first = &scan_segments(dir).unwrap()[0];
    let last_of_first = placed.iter().rposition(|frame| frame.path == first.path).unwrap();
    (placed, last_of_first)
}

fn reading_after_the_last_frame_of_a_segment_knows_that_frames_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let (placed, last_of_first) = log_of_rising_epochs(dir.path());
    let after = Lsn(2 * (last_of_first as u64 + 1));
    assert_eq!(scan_segments(dir.path()).unwrap()[1].first_lsn, after.next());
    let tail = read_log_after(dir.path(), PARTITION, after, usize::MAX).unwrap().unwrap();
    let epoch = Epoch(last_of_first as u64 / 4 + 1);
    assert_eq!(tail.epoch_at_start, Some(epoch));
    assert_eq!(tail.frames.len(), placed.len() - last_of_first - 1);
    let first = strata_core::frame::decode_frame(&tail.frames[0]).unwrap();
    assert_eq!(first.first_lsn, after.next());
    assert_eq!((tail.last_lsn, tail.last_epoch), (Lsn(80), Epoch(10)));
    // From the start of the log there is no frame before.
    let tail = read_log_after(dir.path(), PARTITION, Lsn::ZERO, usize::MAX).unwrap().unwrap();
    assert_eq!((tail.epoch_at_start, tail.frames.len()), (None, placed.len()));
    // Once a snapshot removed that segment, the frames are there and the epoch is not.
    run(async {
        let mut wal = recover(dir.path(), &small_config()).unwrap().wal;
        let mut image = encode_snapshot(PARTITION, []);
        stamp_snapshot_epoch(&mut image, epoch);
        wal.write_snapshot(after, image).await.unwrap();
    });
    assert_eq!(scan_segments(dir.path()).unwrap()[0].first_lsn, after.next());
    let tail = read_log_after(dir.path(), PARTITION, after, usize::MAX).unwrap().unwrap();
    assert_eq!(tail.epoch_at_start, None);
    assert_eq!(tail.frames.len(), placed.len() - last_of_first - 1);
}

in_every_mode!(
    reading_after_the_last_frame_of_a_segment_knows_that_frames_epoch,
    sealed_segments_wait_for_the_archive_floor,
    a_partition_written_from_segment_images_recovers_the_same_records,
    a_damaged_segment_image_is_refused_with_its_offset,
);
