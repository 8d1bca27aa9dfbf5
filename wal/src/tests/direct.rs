//! Direct I/O mode: durable appends, the tail-block rewrite, and the fallback to buffered
//! writes where the filesystem refuses `O_DIRECT`.

use strata_core::Lsn;

use super::{
    all_records, append, empty_snapshot, filesystem_allows_direct_io, fill, read_bytes, recover,
    run, set, small_config, with_mode, Mode,
};
use crate::segment::REFUSE_DIRECT_IO;
use crate::{scan_segments, WalConfig};

fn direct_config() -> WalConfig {
    WalConfig { direct_io: true, ..small_config() }
}

fn refuse_direct_io(refuse: bool) {
    REFUSE_DIRECT_IO.with(|flag| flag.set(refuse));
}

#[test]
fn every_append_is_durable_and_lands_back_to_back() {
    let dir = tempfile::tempdir().unwrap();
    let allowed = filesystem_allows_direct_io(dir.path());
    let placed = run(async {
        let mut wal = recover(dir.path(), &direct_config()).unwrap().wal;
        assert_eq!(wal.direct_io(), allowed);
        let mut placed = Vec::new();
        for index in 0..40u64 {
            let value_bytes = usize::try_from(index * 37 % 1500).unwrap();
            let frame = append(&mut wal, vec![set(index, value_bytes)]).await;
            if allowed {
                assert_eq!(wal.durable_lsn(), wal.last_lsn(), "durable without a sync");
            }
            placed.push(frame);
        }
        placed
    });
    assert!(placed.iter().any(|frame| frame.offset % 4096 != 0));
    for (frame, next) in placed.iter().zip(&placed[1..]) {
        if frame.path == next.path {
            assert_eq!(frame.offset + frame.bytes, next.offset);
        }
    }
    let last = placed.last().unwrap();
    let end = last.offset + last.bytes;
    let after = read_bytes(&last.path, end, end.next_multiple_of(4096) - end);
    assert!(after.iter().all(|byte| *byte == 0), "padding is zeros");
    run(async {
        let recovered = recover(dir.path(), &direct_config()).unwrap();
        assert_eq!(recovered.records, all_records(&placed));
        assert_eq!(recovered.summary.torn_bytes, 0);
    });
}

#[test]
fn an_appended_record_may_go_into_a_snapshot_without_a_sync() {
    let dir = tempfile::tempdir().unwrap();
    if !filesystem_allows_direct_io(dir.path()) {
        return;
    }
    run(async {
        let mut wal = recover(dir.path(), &direct_config()).unwrap().wal;
        append(&mut wal, vec![set(1, 1)]).await;
        assert_eq!(wal.durable_lsn(), Lsn(1));
        wal.write_snapshot(Lsn(1), empty_snapshot()).await.unwrap();
    });
}

#[test]
fn a_filesystem_without_o_direct_falls_back_to_buffered_writes() {
    let dir = tempfile::tempdir().unwrap();
    refuse_direct_io(true);
    let placed = run(async {
        let mut wal = recover(dir.path(), &direct_config()).unwrap().wal;
        assert!(!wal.direct_io());
        let mut placed = vec![append(&mut wal, vec![set(1, 10)]).await];
        assert_eq!(wal.durable_lsn(), Lsn::ZERO, "buffered: durable after a sync");
        wal.sync().await.unwrap();
        placed.extend(fill(&mut wal, 60, 2).await);
        placed
    });
    refuse_direct_io(false);
    assert!(scan_segments(dir.path()).unwrap().len() >= 3);
    run(async {
        let recovered = recover(dir.path(), &direct_config()).unwrap();
        assert_eq!(recovered.summary.last_lsn, Lsn(121));
        assert_eq!(recovered.records, all_records(&placed));
    });
}

#[test]
fn a_roll_onto_a_file_that_refuses_o_direct_falls_back() {
    let dir = tempfile::tempdir().unwrap();
    if !filesystem_allows_direct_io(dir.path()) {
        return;
    }
    let placed = run(async {
        let mut wal = recover(dir.path(), &direct_config()).unwrap().wal;
        let mut placed = fill(&mut wal, 5, 2).await;
        assert!(wal.direct_io());
        refuse_direct_io(true);
        placed.extend(fill(&mut wal, 60, 2).await);
        assert!(!wal.direct_io(), "the roll fell back");
        refuse_direct_io(false);
        placed
    });
    run(async {
        let recovered = recover(dir.path(), &direct_config()).unwrap();
        assert_eq!(recovered.records, all_records(&placed));
    });
}

/// Restarts cycle through the modes, so that direct I/O resumes at unaligned tails written by
/// buffered writes, and the other way round.
#[test]
fn restarts_may_switch_modes_at_an_unaligned_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut placed = Vec::new();
    for round in 0..8 {
        let mode =
            [Mode::Buffered, Mode::Direct, Mode::Shared][usize::try_from(round % 3).unwrap()];
        with_mode(mode, || {
            placed.extend(run(async {
                let mut recovered = recover(dir.path(), &small_config()).unwrap();
                assert_eq!(recovered.records, all_records(&placed));
                let mut frames = fill(&mut recovered.wal, 3, 1).await;
                frames.push(append(&mut recovered.wal, vec![set(round, 333)]).await);
                frames
            }));
        });
    }
    assert!(placed.iter().any(|frame| frame.offset % 4096 != 0));
    run(async {
        let recovered = recover(dir.path(), &direct_config()).unwrap();
        assert_eq!(recovered.records, all_records(&placed));
    });
}
