//! Recovery from damage: torn tails are cut, anything else stops with file and offset.

use std::path::Path;

use strata_core::Lsn;

use super::{
    all_records, append_synced, fill, read_bytes, recover, run, set, small_config, write_bytes,
    xor_byte, Placed,
};
use crate::{scan_segments, WalError};

/// Writes `frames` synced frames into a fresh log and returns where they went.
fn written_log(dir: &Path, frames: usize) -> Vec<Placed> {
    run(async {
        let mut wal = recover(dir, &small_config()).unwrap().wal;
        fill(&mut wal, frames, 2).await
    })
}

fn expect_corrupt(dir: &Path, path: &Path, offset: u64) {
    let outcome = run(async { recover(dir, &small_config()).map(|recovered| recovered.summary) });
    match outcome {
        Err(WalError::Corrupt { path: found_path, offset: found_offset, reason }) => {
            assert_eq!(found_path, path, "{reason}");
            assert_eq!(found_offset, offset, "{reason}");
            let message = WalError::Corrupt { path: found_path, offset, reason }.to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(message.contains(&format!("offset {offset}")), "{message}");
        }
        other => panic!("expected Corrupt at {} offset {offset}, got {other:?}", path.display()),
    }
}

/// Damages the last frame with `damage`, recovers, and checks that exactly that frame is gone
/// and the log continues after it.
fn torn_tail_is_cut(damage: impl FnOnce(&Placed)) {
    let dir = tempfile::tempdir().unwrap();
    let placed = written_log(dir.path(), 40);
    let last = placed.last().unwrap().clone();
    damage(&last);
    let kept = &placed[..placed.len() - 1];
    run(async {
        let mut recovered = recover(dir.path(), &small_config()).unwrap();
        assert_eq!(recovered.records, all_records(kept));
        assert!(recovered.summary.torn_bytes > 0);
        assert!(recovered.summary.torn_bytes <= last.bytes);
        assert_eq!(recovered.wal.last_lsn(), Lsn(2 * kept.len() as u64));
        assert!(read_bytes(&last.path, last.offset, last.bytes).iter().all(|byte| *byte == 0));
        append_synced(&mut recovered.wal, vec![set(99, 10)]).await;
    });
    run(async {
        let recovered = recover(dir.path(), &small_config()).unwrap();
        assert_eq!(recovered.summary.torn_bytes, 0);
        assert_eq!(recovered.summary.last_lsn, Lsn(2 * kept.len() as u64 + 1));
    });
}

fn a_garbled_last_frame_is_a_torn_tail() {
    torn_tail_is_cut(|last| xor_byte(&last.path, last.offset + last.bytes / 2, 0x5a));
}

fn a_half_written_last_frame_is_a_torn_tail() {
    torn_tail_is_cut(|last| {
        let half = last.bytes / 2;
        write_bytes(
            &last.path,
            last.offset + half,
            &vec![0u8; usize::try_from(last.bytes - half).unwrap()],
        );
    });
}

fn a_last_frame_whose_header_never_reached_the_disk_is_a_torn_tail() {
    torn_tail_is_cut(|last| write_bytes(&last.path, last.offset, &[0u8; 64]));
}

fn garbage_after_the_last_frame_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let placed = written_log(dir.path(), 10);
    let last = placed.last().unwrap();
    write_bytes(&last.path, last.offset + last.bytes + 40, b"partial sector");
    run(async {
        let recovered = recover(dir.path(), &small_config()).unwrap();
        assert_eq!(recovered.records, all_records(&placed));
        assert_eq!(recovered.summary.torn_bytes, 40 + 14);
    });
}

fn a_flipped_byte_in_an_older_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let placed = written_log(dir.path(), 80);
    let segments = scan_segments(dir.path()).unwrap();
    assert!(segments.len() >= 3);
    let in_first: Vec<&Placed> = placed.iter().filter(|p| p.path == segments[0].path).collect();
    assert!(in_first.len() >= 3);
    let middle = in_first[in_first.len() / 2];
    xor_byte(&middle.path, middle.offset + middle.bytes - 9, 0x01);
    expect_corrupt(dir.path(), &middle.path, middle.offset);
}

fn a_damaged_last_frame_of_an_older_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let placed = written_log(dir.path(), 80);
    let segments = scan_segments(dir.path()).unwrap();
    let last_of_second = placed.iter().rfind(|p| p.path == segments[1].path).unwrap();
    xor_byte(&last_of_second.path, last_of_second.offset + 70, 0x80);
    expect_corrupt(dir.path(), &last_of_second.path, last_of_second.offset);
}

fn a_flipped_byte_before_the_last_frame_of_the_newest_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let placed = written_log(dir.path(), 80);
    let newest = scan_segments(dir.path()).unwrap().last().unwrap().path.clone();
    let in_newest: Vec<&Placed> = placed.iter().filter(|p| p.path == newest).collect();
    assert!(in_newest.len() >= 2, "the newest segment holds {} frames", in_newest.len());
    let victim = in_newest[in_newest.len() - 2];
    xor_byte(&victim.path, victim.offset + 20, 0x04);
    expect_corrupt(dir.path(), &victim.path, victim.offset);
}

fn zeros_followed_by_a_valid_frame_are_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let placed = written_log(dir.path(), 80);
    let newest = scan_segments(dir.path()).unwrap().last().unwrap().path.clone();
    let in_newest: Vec<&Placed> = placed.iter().filter(|p| p.path == newest).collect();
    let victim = in_newest[0];
    write_bytes(&victim.path, victim.offset, &vec![0u8; usize::try_from(victim.bytes).unwrap()]);
    expect_corrupt(dir.path(), &victim.path, victim.offset);
}

fn a_damaged_segment_header_is_corruption_even_in_the_newest_segment() {
    let dir = tempfile::tempdir().unwrap();
    written_log(dir.path(), 80);
    let newest = scan_segments(dir.path()).unwrap().last().unwrap().path.clone();
    xor_byte(&newest, 17, 0x02);
    expect_corrupt(dir.path(), &newest, 0);
}

fn a_missing_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    written_log(dir.path(), 80);
    let segments = scan_segments(dir.path()).unwrap();
    std::fs::remove_file(&segments[1].path).unwrap();
    expect_corrupt(dir.path(), &segments[2].path, 0);
    std::fs::remove_file(&segments[0].path).unwrap();
    expect_corrupt(dir.path(), &segments[2].path, 0);
}

fn a_shortened_segment_file_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    written_log(dir.path(), 10);
    let newest = scan_segments(dir.path()).unwrap().last().unwrap().path.clone();
    let file = std::fs::OpenOptions::new().write(true).open(&newest).unwrap();
    file.set_len(small_config().segment_bytes - 4096).unwrap();
    expect_corrupt(dir.path(), &newest, 0);
}

in_every_mode!(
    a_garbled_last_frame_is_a_torn_tail,
    a_half_written_last_frame_is_a_torn_tail,
    a_last_frame_whose_header_never_reached_the_disk_is_a_torn_tail,
    garbage_after_the_last_frame_is_a_torn_tail,
    a_flipped_byte_in_an_older_segment_is_corruption,
    a_damaged_last_frame_of_an_older_segment_is_corruption,
    a_flipped_byte_before_the_last_frame_of_the_newest_segment_is_corruption,
    zeros_followed_by_a_valid_frame_are_corruption,
    a_damaged_segment_header_is_corruption_even_in_the_newest_segment,
    a_missing_segment_is_corruption,
    a_shortened_segment_file_is_corruption,
);
