//! Shared syncs: the `O_DIRECT` appends of several logs made durable by one `fdatasync`.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use strata_core::Lsn;
use tempfile::TempDir;

use super::{all_records, append, filesystem_allows_direct_io, recover, run, set, small_config};
use crate::segment::flushing_device;
use crate::{DeviceSync, PartitionWal, WalConfig, WalError};

const LOGS: usize = 4;

fn shared_config() -> WalConfig {
    WalConfig { direct_io: true, shared_sync: true, ..small_config() }
}

/// Whether logs in `dir` share syncs: `O_DIRECT` works and the filesystem is ext4 or XFS.
fn sharing_possible(dir: &Path) -> bool {
    filesystem_allows_direct_io(dir) && flushing_device(dir).unwrap().is_some()
}

/// Directories for the logs of a test, or `None` where the filesystem cannot share syncs
/// (the test then has nothing to check).
fn sharing_directories() -> Option<Vec<TempDir>> {
    let dirs: Vec<TempDir> = (0..LOGS).map(|_| tempfile::tempdir().unwrap()).collect();
    sharing_possible(dirs[0].path()).then_some(dirs)
}

/// Polls `future` once.
async fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|context| Poll::Ready(Pin::new(&mut *future).poll(context))).await
}

/// Opens a log in `dir` sharing `device`'s syncs.
fn open_sharing(dir: &Path, device: &Arc<DeviceSync>) -> PartitionWal {
    let mut wal = recover(dir, &shared_config()).unwrap().wal;
    assert!(wal.shares_sync());
    assert!(wal.attach_device_sync(Arc::clone(device)));
    wal
}

/// Appends to every log and syncs it, each in a task of its own as the flushers of a shard
/// do, all at once. Returns the logs, whether each ran the `fdatasync` itself, and where
/// each append went.
async fn append_and_sync_all(
    wals: Vec<PartitionWal>,
    round: u64,
) -> (Vec<PartitionWal>, Vec<(bool, super::Placed)>) {
    let tasks: Vec<_> = wals
        .into_iter()
        .map(|mut wal| {
            monoio::spawn(async move {
                let placed = append(&mut wal, vec![set(round, 300)]).await;
                assert_eq!(wal.durable_lsn(), Lsn(round - 1), "durable only after a sync");
                let ran = wal.sync().await.unwrap();
                (wal, (ran, placed))
            })
        })
        .collect();
    let mut synced = Vec::new();
    for task in tasks {
        synced.push(task.await);
    }
    synced.into_iter().unzip()
}

#[test]
fn logs_whose_appends_completed_together_share_one_fdatasync() {
    let Some(dirs) = sharing_directories() else { return };
    let placed = run(async {
        let device = Arc::new(DeviceSync::default());
        let mut wals: Vec<PartitionWal> =
            dirs.iter().map(|dir| open_sharing(dir.path(), &device)).collect();
        let mut placed = vec![Vec::new(); LOGS];
        for round in 1..=20u64 {
            let before = device.syncs_started();
            let (synced, outcomes) = append_and_sync_all(wals, round).await;
            wals = synced;
            assert_eq!(device.syncs_started(), before + 1, "one fdatasync in round {round}");
            assert_eq!(outcomes.iter().filter(|(ran, _)| *ran).count(), 1);
            for (index, (wal, (_, frame))) in wals.iter().zip(outcomes).enumerate() {
                assert_eq!(wal.durable_lsn(), Lsn(round));
                placed[index].push(frame);
            }
        }
        placed
    });
    for (dir, placed) in dirs.iter().zip(&placed) {
        run(async {
            let recovered = recover(dir.path(), &shared_config()).unwrap();
            assert_eq!(recovered.records, all_records(placed));
        });
    }
}

#[test]
fn a_log_with_nothing_to_sync_neither_syncs_nor_waits() {
    let Some(dirs) = sharing_directories() else { return };
    run(async {
        let device = Arc::new(DeviceSync::default());
        let mut wal = open_sharing(dirs[0].path(), &device);
        assert!(!wal.sync().await.unwrap());
        append(&mut wal, vec![set(1, 10)]).await;
        assert!(wal.sync().await.unwrap());
        assert!(!wal.sync().await.unwrap());
        assert_eq!(device.syncs_started(), 1);
    });
}

/// A shared sync cancelled while its `fdatasync` is in flight leaves the device's state
/// unknown: the log that ran it and every log sharing it refuse to go on.
#[test]
fn a_cancelled_shared_sync_fails_every_log_sharing_it() {
    let Some(dirs) = sharing_directories() else { return };
    run(async {
        let device = Arc::new(DeviceSync::default());
        let mut first = open_sharing(dirs[0].path(), &device);
        let mut second = open_sharing(dirs[1].path(), &device);
        append(&mut first, vec![set(1, 10)]).await;
        append(&mut second, vec![set(1, 10)]).await;
        {
            let mut sync = Box::pin(first.sync());
            assert!(poll_once(&mut sync).await.is_pending(), "the fdatasync is in flight");
            assert_eq!(device.syncs_started(), 1);
        }
        let failed = second.sync().await.unwrap_err();
        assert!(failed.to_string().contains("cancelled"), "{failed}");
        assert_eq!(second.durable_lsn(), Lsn::ZERO);
        let refused = second.append(super::encode(Lsn(2), &[set(2, 10)])).await;
        assert!(matches!(refused, Err(WalError::Poisoned { .. })), "{refused:?}");
        let refused = first.sync().await;
        assert!(matches!(refused, Err(WalError::Poisoned { .. })), "{refused:?}");
    });
}

/// Two logs on different devices cannot share a sync: the second to attach keeps its own.
#[test]
fn a_log_on_another_device_keeps_its_own_sync() {
    let Some(dirs) = sharing_directories() else { return };
    run(async {
        let device = Arc::new(DeviceSync::default());
        assert!(device.serves(u64::MAX), "claimed for a device no file is on");
        let mut wal = recover(dirs[0].path(), &shared_config()).unwrap().wal;
        assert!(wal.shares_sync());
        assert!(!wal.attach_device_sync(Arc::clone(&device)));
        append(&mut wal, vec![set(1, 10)]).await;
        assert!(wal.sync().await.unwrap(), "its own fdatasync");
        assert_eq!(wal.durable_lsn(), Lsn(1));
        assert_eq!(device.syncs_started(), 0);
    });
}

#[test]
fn a_filesystem_that_cannot_share_syncs_keeps_o_dsync_appends() {
    let dir = tempfile::tempdir().unwrap();
    if !filesystem_allows_direct_io(dir.path()) {
        return;
    }
    let sharing = sharing_possible(dir.path());
    run(async {
        let mut wal = recover(dir.path(), &shared_config()).unwrap().wal;
        assert_eq!(wal.shares_sync(), sharing);
        append(&mut wal, vec![set(1, 10)]).await;
        let durable = if sharing { Lsn::ZERO } else { Lsn(1) };
        assert_eq!(wal.durable_lsn(), durable);
    });
}

/// The logs of two shard threads, each on its own runtime, share the node's sync: in each
/// round both append, then both sync, and one `fdatasync` on one of the two threads makes
/// both durable, the other thread's log woken across threads when it ends.
#[test]
fn logs_on_two_threads_share_one_fdatasync() {
    const ROUNDS: u64 = 20;
    let Some(dirs) = sharing_directories() else { return };
    let device = Arc::new(DeviceSync::default());
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let (done_sender, done_receiver) = std::sync::mpsc::channel();
    for dir in dirs.iter().take(2).map(|dir| dir.path().to_path_buf()) {
        let (device, barrier, done) =
            (Arc::clone(&device), Arc::clone(&barrier), done_sender.clone());
        std::thread::spawn(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run(async {
                    let mut wal = open_sharing(&dir, &device);
                    let mut ran = Vec::new();
                    let mut placed = Vec::new();
                    for round in 1..=ROUNDS {
                        barrier.wait();
                        placed.push(append(&mut wal, vec![set(round, 300)]).await);
                        barrier.wait();
                        ran.push(wal.sync().await.unwrap());
                        assert_eq!(wal.durable_lsn(), Lsn(round));
                    }
                    (ran, placed)
                })
            }));
            let _ = done.send((dir, outcome));
        });
    }
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        let waited = done_receiver.recv_timeout(std::time::Duration::from_secs(60));
        let (dir, outcome) = waited.expect("both threads end: no wake-up across threads is lost");
        outcomes.push((dir, outcome.unwrap_or_else(|panic| std::panic::resume_unwind(panic))));
    }
    assert_eq!(device.syncs_started(), ROUNDS, "one fdatasync per round for both threads");
    let (first, second) = (&outcomes[0].1 .0, &outcomes[1].1 .0);
    for (round, (first, second)) in first.iter().zip(second).enumerate() {
        assert!(first != second, "round {round}: one of the two threads ran the fdatasync");
    }
    for (dir, (_, placed)) in &outcomes {
        run(async {
            let recovered = recover(dir, &shared_config()).unwrap();
            assert_eq!(recovered.records, all_records(placed));
        });
    }
}
