//! Appends, syncs, rolls and recovery of an undamaged log.

use strata_core::record::Record;
use strata_core::Lsn;

use super::{
    all_records, append, append_synced, appends_are_durable, encode, fill, recover, run, set,
    small_config,
};
use crate::{scan_segments, SegmentHeader, WalConfig, WalError, SEGMENT_HEADER_BYTES};

fn an_empty_directory_starts_a_log_at_lsn_one() {
    let dir = tempfile::tempdir().unwrap();
    let partition_dir = dir.path().join("p3");
    run(async {
        let recovered = recover(&partition_dir, &small_config()).unwrap();
        assert_eq!(recovered.wal.last_lsn(), Lsn::ZERO);
        assert_eq!(recovered.summary.last_lsn, Lsn::ZERO);
        assert!(recovered.records.is_empty());
        drop(recovered);
        let again = recover(&partition_dir, &small_config()).unwrap();
        assert_eq!(again.summary.segments, 1);
    });
    let segments = scan_segments(&partition_dir).unwrap();
    assert_eq!(segments.len(), 1);
    assert_eq!(segments[0].first_lsn, Lsn(1));
    assert_eq!(segments[0].file_bytes, small_config().segment_bytes);
}

fn frames_survive_restarts_across_many_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config();
    let placed = run(async {
        let mut wal = recover(dir.path(), &config).unwrap().wal;
        let placed = fill(&mut wal, 120, 3).await;
        assert_eq!(wal.last_lsn(), Lsn(360));
        assert_eq!(wal.durable_lsn(), Lsn(360));
        placed
    });
    let segments = scan_segments(dir.path()).unwrap();
    assert!(segments.len() >= 4, "only {} segments", segments.len());
    for segment in &segments {
        assert_eq!(segment.file_bytes, config.segment_bytes);
        let block = super::read_bytes(&segment.path, 0, SEGMENT_HEADER_BYTES);
        assert_eq!(SegmentHeader::decode(&block).unwrap().first_lsn, segment.first_lsn);
    }
    run(async {
        let mut recovered = recover(dir.path(), &config).unwrap();
        assert_eq!(recovered.records, all_records(&placed));
        assert_eq!(recovered.summary.last_lsn, Lsn(360));
        assert_eq!(recovered.summary.records_replayed, 360);
        assert_eq!(recovered.summary.frames_replayed, 120);
        assert_eq!(recovered.summary.torn_bytes, 0);
        assert_eq!(recovered.summary.segments, segments.len());
        let wal = &mut recovered.wal;
        append_synced(wal, vec![Record::FlushAll, set(1, 10)]).await;
        drop(recovered);
        let again = recover(dir.path(), &config).unwrap();
        assert_eq!(again.summary.last_lsn, Lsn(362));
        assert_eq!(again.records[360], (Lsn(361), Record::FlushAll));
    });
}

fn a_roll_uses_the_spare_prepared_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let mut wal = recover(dir.path(), &small_config()).unwrap().wal;
        let mut saw_spare = false;
        for index in 0..60 {
            append_synced(&mut wal, vec![set(index, 500)]).await;
            saw_spare |= std::fs::read_dir(dir.path())
                .unwrap()
                .any(|entry| entry.unwrap().file_name().to_string_lossy().starts_with("spare-"));
        }
        assert!(saw_spare);
        assert!(scan_segments(dir.path()).unwrap().len() >= 3);
    });
    run(async {
        let recovered = recover(dir.path(), &small_config()).unwrap();
        assert_eq!(recovered.records.len(), 60);
    });
    let leftovers = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|entry| entry.as_ref().unwrap().file_name().to_string_lossy().ends_with(".tmp"))
        .count();
    assert_eq!(leftovers, 0, "recovery removes spare files");
}

fn several_frames_in_one_buffer_and_unsynced_frames_after_a_clean_stop() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let mut wal = recover(dir.path(), &small_config()).unwrap().wal;
        let mut buffer = encode(Lsn(1), &[set(1, 10), set(2, 10)]);
        buffer.extend_from_slice(&encode(Lsn(3), &[set(3, 10)]));
        let returned = wal.append(buffer).await.unwrap();
        assert!(returned.is_empty());
        assert_eq!(wal.last_lsn(), Lsn(3));
        // Direct I/O appends are durable when they return; buffered ones wait for a sync.
        let durable_lsn = if appends_are_durable(&wal) { Lsn(3) } else { Lsn::ZERO };
        assert_eq!(wal.durable_lsn(), durable_lsn);
        append(&mut wal, vec![set(4, 10)]).await;
    });
    run(async {
        // The process stopped without a sync; the page cache still held the frames (or, with
        // direct I/O, the disk did).
        let recovered = recover(dir.path(), &small_config()).unwrap();
        assert_eq!(recovered.summary.last_lsn, Lsn(4));
        assert_eq!(recovered.wal.durable_lsn(), Lsn(4));
    });
}

fn appends_that_do_not_continue_the_log_are_refused_without_harm() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let mut wal = recover(dir.path(), &small_config()).unwrap().wal;
        append_synced(&mut wal, vec![set(1, 10)]).await;
        let gap = wal.append(encode(Lsn(5), &[set(2, 10)])).await;
        assert!(matches!(gap, Err(WalError::Gap { expected: Lsn(2), found: Lsn(5) })));
        let mut other = Vec::new();
        let epoch = strata_core::Epoch(1);
        let other_partition = strata_core::PartitionId(4);
        strata_core::frame::encode_frame(
            &mut other,
            other_partition,
            epoch,
            Lsn(2),
            Lsn(1),
            &[set(2, 1)],
        );
        assert!(matches!(wal.append(other).await, Err(WalError::WrongPartition { .. })));
        let mut damaged = encode(Lsn(2), &[set(2, 10)]);
        damaged[70] ^= 1;
        assert!(matches!(wal.append(damaged).await, Err(WalError::InvalidFrame { offset: 0, .. })));
        let mut trailing = encode(Lsn(2), &[set(2, 10)]);
        trailing.extend_from_slice(&[0u8; 8]);
        assert!(matches!(wal.append(trailing).await, Err(WalError::InvalidFrame { .. })));
        let huge = encode(Lsn(2), &[set(2, wal.max_frame_bytes())]);
        assert!(matches!(wal.append(huge).await, Err(WalError::FrameTooLarge { .. })));
        assert!(matches!(wal.append(Vec::new()).await, Err(WalError::InvalidFrame { .. })));
        assert!(wal.poison_cause().is_none());
        append_synced(&mut wal, vec![set(2, 10)]).await;
        assert_eq!(wal.last_lsn(), Lsn(2));
    });
}

fn the_largest_frame_fits_an_empty_segment() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config();
    run(async {
        let mut wal = recover(dir.path(), &config).unwrap().wal;
        append_synced(&mut wal, vec![set(0, 100)]).await;
        let max = wal.max_frame_bytes();
        // Grow a value until the frame is the largest allowed.
        let mut value_bytes = max - 300;
        let mut frame = encode(Lsn(2), &[set(1, value_bytes)]);
        loop {
            let bigger = encode(Lsn(2), &[set(1, value_bytes + 1)]);
            if bigger.len() > max {
                break;
            }
            frame = bigger;
            value_bytes += 1;
        }
        assert!(frame.len() + 8 > max);
        assert!(frame.len() <= max);
        wal.append(frame).await.unwrap();
        wal.sync().await.unwrap();
    });
    assert_eq!(scan_segments(dir.path()).unwrap().len(), 2);
    run(async {
        assert_eq!(recover(dir.path(), &config).unwrap().summary.last_lsn, Lsn(2));
    });
}

fn a_bad_configuration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        for segment_bytes in [0, 4096, 16 * 1024 + 512, 2 * 1024 * 1024 * 1024] {
            let config = WalConfig { segment_bytes, ..small_config() };
            let outcome = recover(dir.path(), &config);
            assert!(matches!(outcome, Err(WalError::Config { .. })), "{segment_bytes}");
        }
    });
}

fn the_log_also_works_on_the_legacy_driver() {
    // monoio falls back to epoll and blocking file calls where io_uring is unavailable.
    let dir = tempfile::tempdir().unwrap();
    let runtime =
        || monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().unwrap();
    let placed = runtime().block_on(async {
        let mut wal = recover(dir.path(), &small_config()).unwrap().wal;
        fill(&mut wal, 60, 2).await
    });
    runtime().block_on(async {
        let recovered = recover(dir.path(), &small_config()).unwrap();
        assert_eq!(recovered.records, all_records(&placed));
    });
}

in_every_mode!(
    an_empty_directory_starts_a_log_at_lsn_one,
    frames_survive_restarts_across_many_rolls,
    a_roll_uses_the_spare_prepared_in_the_background,
    several_frames_in_one_buffer_and_unsynced_frames_after_a_clean_stop,
    appends_that_do_not_continue_the_log_are_refused_without_harm,
    the_largest_frame_fits_an_empty_segment,
    a_bad_configuration_is_refused,
    the_log_also_works_on_the_legacy_driver,
);
