//! A failed write or sync poisons the log until it is recovered again.

use std::future::Future;

use strata_core::Lsn;

use super::empty_snapshot;
use super::{
    append_synced, appends_are_durable, encode, fill, recover, run, set, small_config, FaultSite,
};
use crate::WalError;

fn expect_poisoned<T: std::fmt::Debug>(outcome: Result<T, WalError>) {
    match outcome {
        Err(WalError::Poisoned { cause }) => assert!(cause.contains("injected"), "{cause}"),
        other => panic!("expected Poisoned, got {other:?}"),
    }
}

fn a_failed_write_poisons_every_later_operation() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let mut wal = recover(dir.path(), &small_config()).unwrap().wal;
        fill(&mut wal, 3, 1).await;
        wal.fault = Some(FaultSite::Write);
        let failed = wal.append(encode(Lsn(4), &[set(4, 10)])).await;
        assert!(matches!(failed, Err(WalError::Io { op: "write", .. })), "{failed:?}");
        assert_eq!(wal.last_lsn(), Lsn(3));
        expect_poisoned(wal.append(encode(Lsn(4), &[set(4, 10)])).await);
        expect_poisoned(wal.sync().await);
        expect_poisoned(wal.write_snapshot(Lsn(3), empty_snapshot()).await);
        assert!(wal.poison_cause().unwrap().contains("injected"));
    });
    run(async {
        // A restart recovers, and the log takes writes again.
        let mut recovered = recover(dir.path(), &small_config()).unwrap();
        assert_eq!(recovered.summary.last_lsn, Lsn(3));
        append_synced(&mut recovered.wal, vec![set(4, 10)]).await;
    });
}

fn a_failed_sync_poisons_every_later_operation() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let mut wal = recover(dir.path(), &small_config()).unwrap().wal;
        fill(&mut wal, 3, 1).await;
        if appends_are_durable(&wal) {
            // The O_DSYNC write is the sync: its failure is the append's.
            wal.fault = Some(FaultSite::Sync);
            let failed = wal.append(encode(Lsn(4), &[set(4, 10)])).await;
            assert!(matches!(failed, Err(WalError::Io { op: "write", .. })), "{failed:?}");
            assert_eq!(wal.last_lsn(), Lsn(3));
        } else {
            wal.append(encode(Lsn(4), &[set(4, 10)])).await.unwrap();
            wal.fault = Some(FaultSite::Sync);
            let failed = wal.sync().await;
            assert!(matches!(failed, Err(WalError::Io { op: "sync", .. })), "{failed:?}");
        }
        assert_eq!(wal.durable_lsn(), Lsn(3));
        expect_poisoned(wal.sync().await);
        let next = wal.last_lsn().next();
        expect_poisoned(wal.append(encode(next, &[set(5, 10)])).await);
        let message = wal.sync().await.unwrap_err().to_string();
        assert!(message.contains("restart"), "{message}");
    });
}

fn a_failed_sync_during_a_roll_poisons_the_log() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let mut wal = recover(dir.path(), &small_config()).unwrap().wal;
        let mut rolled = false;
        for index in 1..200u64 {
            let frame = encode(Lsn(index), &[set(index, 700)]);
            let (path, write_offset, _) = wal.active_segment();
            if write_offset + frame.len() as u64 > small_config().segment_bytes {
                // The roll must sync the sealed segment first: that sync fails.
                wal.fault = Some(FaultSite::Sync);
                assert!(wal.append(frame).await.is_err());
                assert_eq!(wal.active_segment().0, path, "no new segment after a failed roll");
                rolled = true;
                break;
            }
            wal.append(frame).await.unwrap();
        }
        assert!(rolled);
        expect_poisoned(wal.sync().await);
    });
}

fn a_cancelled_append_poisons_the_log() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let mut wal = recover(dir.path(), &small_config()).unwrap().wal;
        {
            let future = wal.append(encode(Lsn(1), &[set(1, 10)]));
            // Poll once, then drop it while its write may be in flight.
            let mut future = std::pin::pin!(future);
            let waker = std::task::Waker::noop();
            let _ = future.as_mut().poll(&mut std::task::Context::from_waker(waker));
        }
        let outcome = wal.sync().await;
        if wal.last_lsn() == Lsn::ZERO {
            assert!(matches!(outcome, Err(WalError::Poisoned { .. })), "{outcome:?}");
        }
    });
}

in_every_mode!(
    a_failed_write_poisons_every_later_operation,
    a_failed_sync_poisons_every_later_operation,
    a_failed_sync_during_a_roll_poisons_the_log,
    a_cancelled_append_poisons_the_log,
);
