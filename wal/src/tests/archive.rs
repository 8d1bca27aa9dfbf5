//! The archive's side of the WAL: sealed segments wait for the archive floor, segment images
//! are read back frame by frame, and a partition written from archived objects recovers to
//! the same records.

use std::fs;

use strata_core::Lsn;

use super::{all_records, fill, recover, run, small_config, PARTITION};
use crate::{encode_checkpoint, scan_segments, segment_extent, PartitionWriter, WalConfig};

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
        let summary = wal.write_checkpoint(lsn, encode_checkpoint(PARTITION, [])).await.unwrap();
        assert_eq!(summary.segments_deleted, 0, "nothing is archived yet");
        // The archive holds the first two segments.
        let floor = Lsn(segments[2].first_lsn.0 - 1);
        wal.set_archive_floor(floor);
        let summary = wal.write_checkpoint(lsn, encode_checkpoint(PARTITION, [])).await.unwrap();
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

in_every_mode!(
    sealed_segments_wait_for_the_archive_floor,
    a_partition_written_from_segment_images_recovers_the_same_records,
    a_damaged_segment_image_is_refused_with_its_offset,
);
