//! [`DeviceSync`]: one `fdatasync` shared by the logs of a node, on every shard thread, whose
//! `O_DIRECT` appends wait for it.
//!
//! On ext4 and XFS an `fdatasync` ends with a flush of the whole device's volatile write
//! cache (when the file has no metadata to commit the filesystem issues the cache flush
//! itself; otherwise its journal commit does). A cache flush makes durable every write that
//! *completed* before it was issued, whatever file the write went to. So once several
//! partitions' `O_DIRECT` appends have completed, one `fdatasync` of any one of their files
//! makes all of them durable: a node pays one device flush per round instead of one per
//! partition, whichever shard thread each partition lives on. `docs/wal-format.md` gives the
//! argument and where it holds.
//!
//! Syncs are numbered from 1. A write is tagged with the number of the next sync to start,
//! and that sync is issued only after every write with its tag has completed; a write that
//! begins once the sync has started takes the next number. So sync `n` covers every write
//! tagged `n` or less, and the logs whose writes overlapped share it rather than each paying
//! for a sync of its own. One sync runs at a time per node, on the shard thread of the log that
//! started it (its own `io_uring`, its own file); the logs of other shards waiting for it are
//! woken across threads when it ends. Two tags at most have writes in flight: the sync being
//! prepared and the next.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use monoio::fs::File;

/// The node's shared sync: one, in an `Arc`, for the logs of every shard thread. Its state
/// is held under a lock for a few counter updates at a time, never across I/O.
#[derive(Default)]
pub struct DeviceSync {
    /// The device (`st_dev`) whose cache this sync flushes: claimed by the first log to
    /// attach. A log on another device syncs its own file alone.
    device: Mutex<Option<u64>>,
    state: Mutex<SyncState>,
}

#[derive(Default)]
struct SyncState {
    /// Syncs started so far; while one runs (or waits for its writes), it is number
    /// `started`.
    started: u64,
    /// Syncs ended so far (successfully or not): `started`, or one less while a sync runs.
    completed: u64,
    /// Writes in flight by tag parity.
    writes_in_flight: [u32; 2],
    /// The first failure: every later sync fails with it, as a failed `fdatasync` leaves the
    /// device's state unknown.
    failure: Option<String>,
    /// Logs waiting for a sync to end, on any shard thread.
    waiters: Vec<Waker>,
    /// The sync waiting for its writes to complete.
    starter: Option<Waker>,
}

/// What a log waiting for its sync does next.
enum Turn {
    /// Run sync number `.0`, with its own file, once its writes completed.
    Start(u64),
    Done(Result<(), String>),
}

impl DeviceSync {
    /// Whether a log on `device` may share this sync (the first log to ask claims it).
    pub(crate) fn serves(&self, device: u64) -> bool {
        let mut claimed = self.device.lock().unwrap_or_else(PoisonError::into_inner);
        *claimed.get_or_insert(device) == device
    }

    /// Syncs started so far.
    #[must_use]
    pub fn syncs_started(&self) -> u64 {
        self.state().started
    }

    /// The state, locked. A panic while it was held (an assertion) stops the node anyway, so
    /// a poisoned lock is taken as it is.
    fn state(&self) -> MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tags a write that begins now: the number of the sync that will cover it. Pair with
    /// [`end_write`](Self::end_write) once the write completed or failed.
    pub(crate) fn begin_write(&self) -> u64 {
        let mut state = self.state();
        let tag = state.started + 1;
        state.writes_in_flight[parity(tag)] += 1;
        tag
    }

    pub(crate) fn end_write(&self, tag: u64) {
        let mut state = self.state();
        let in_flight = &mut state.writes_in_flight[parity(tag)];
        assert!(*in_flight > 0, "a write ended twice");
        *in_flight -= 1;
        let starter =
            if *in_flight == 0 && state.started == tag { state.starter.take() } else { None };
        drop(state);
        if let Some(starter) = starter {
            starter.wake();
        }
    }

    /// Returns once sync number `tag` (or a later one) has ended: every write with that tag
    /// or an earlier one is then durable. Without a tag, waits for a sync that starts after
    /// this call. `file` is the caller's, used if it runs the sync. `Ok(true)` when this
    /// call ran the `fdatasync`, `Ok(false)` when another's covered it.
    pub(crate) async fn sync(&self, tag: Option<u64>, file: &File) -> Result<bool, String> {
        let target = tag.unwrap_or_else(|| self.state().started + 1);
        let number = match std::future::poll_fn(|context| self.poll_turn(target, context)).await {
            Turn::Start(number) => number,
            Turn::Done(outcome) => return outcome.map(|()| false),
        };
        let running = Running { sync: self, number, ended: false };
        std::future::poll_fn(|context| self.poll_writes_done(number, context)).await;
        let outcome = file.sync_data().await.map_err(|error| format!("fdatasync: {error}"));
        running.end(outcome).map(|()| true)
    }

    fn poll_turn(&self, target: u64, context: &mut Context<'_>) -> Poll<Turn> {
        let mut state = self.state();
        if let Some(failure) = &state.failure {
            return Poll::Ready(Turn::Done(Err(failure.clone())));
        }
        if state.completed >= target {
            return Poll::Ready(Turn::Done(Ok(())));
        }
        if state.completed == state.started {
            // Nothing runs, so every started sync has ended: the next one is the target.
            assert_eq!(state.started + 1, target);
            assert_eq!(state.writes_in_flight[parity(target + 1)], 0);
            state.started = target;
            return Poll::Ready(Turn::Start(target));
        }
        state.waiters.push(context.waker().clone());
        Poll::Pending
    }

    /// Ready once every write tagged `number` has completed. Writes that begin meanwhile
    /// take the next tag, so this wait is bounded by one write.
    fn poll_writes_done(&self, number: u64, context: &mut Context<'_>) -> Poll<()> {
        let mut state = self.state();
        if state.writes_in_flight[parity(number)] == 0 {
            return Poll::Ready(());
        }
        state.starter = Some(context.waker().clone());
        Poll::Pending
    }
}

fn parity(tag: u64) -> usize {
    usize::from(tag % 2 == 1)
}

/// The sync in flight. Ends it when dropped, too: a cancelled sync counts as failed, since
/// its outcome is unknown.
struct Running<'a> {
    sync: &'a DeviceSync,
    number: u64,
    ended: bool,
}

impl Running<'_> {
    fn end(mut self, outcome: Result<(), String>) -> Result<(), String> {
        self.finish(outcome.as_ref().err().cloned());
        self.ended = true;
        outcome
    }

    fn finish(&self, failure: Option<String>) {
        let mut state = self.sync.state();
        assert_eq!(state.started, self.number);
        assert_eq!(state.completed + 1, self.number, "a sync ended twice");
        state.completed = self.number;
        state.starter = None;
        if state.failure.is_none() {
            state.failure = failure;
        }
        let waiters = std::mem::take(&mut state.waiters);
        drop(state);
        for waker in waiters {
            waker.wake();
        }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.finish(Some("a shared fdatasync was cancelled while in flight".to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DeviceSync;

    #[test]
    fn the_first_log_claims_the_device() {
        let sync = DeviceSync::default();
        assert!(sync.serves(7));
        assert!(sync.serves(7));
        assert!(!sync.serves(8), "a log on another device syncs alone");
    }

    #[test]
    fn a_write_begun_before_a_sync_starts_is_tagged_with_it() {
        let sync = DeviceSync::default();
        assert_eq!(sync.begin_write(), 1);
        assert_eq!(sync.begin_write(), 1);
        sync.end_write(1);
        sync.end_write(1);
        assert_eq!(sync.state().writes_in_flight, [0, 0]);
    }
}
