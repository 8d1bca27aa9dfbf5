//! What the control thread and the shards share about the cluster: the node's serving mode, the
//! data epoch, replication progress, and the messages the control thread sends to shards.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use strata_core::peer::{ReplicaKind, Subscribe};
use strata_core::{Epoch, Lsn, PartitionId};

use crate::shard::ShardMessage;

/// What the node's shards do with client commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServingMode {
    /// No role yet: key commands are refused with `-LOADING`.
    Admin,
    /// Alone: reads and writes, nothing replicated.
    Standalone,
    /// Reads and writes; writes are streamed to replicas and wait for in-sync followers.
    Leader,
    /// Follower or learner: reads of committed data; writes refused with `-READONLY`.
    Replica,
}

impl ServingMode {
    fn from_u8(value: u8) -> ServingMode {
        match value {
            0 => ServingMode::Admin,
            1 => ServingMode::Standalone,
            2 => ServingMode::Leader,
            _ => ServingMode::Replica,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            ServingMode::Admin => 0,
            ServingMode::Standalone => 1,
            ServingMode::Leader => 2,
            ServingMode::Replica => 3,
        }
    }
}

/// One replica stream as the leader sees it, published about once a second.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaProgress {
    pub kind: ReplicaKind,
    /// Highest LSN the replica acknowledged as durable.
    pub acked_lsn: Lsn,
    /// The leader's last LSN of the partition at the same moment.
    pub leader_lsn: Lsn,
    /// Whether writes wait for this replica (a follower that has caught up).
    pub in_sync: bool,
}

/// State shared by the control thread and every shard.
pub struct ClusterShared {
    mode: AtomicU8,
    epoch: AtomicU64,
    /// (replica name, partition) → progress, written by the leader's shards.
    progress: Mutex<BTreeMap<(String, PartitionId), ReplicaProgress>>,
    /// Followers in sync on every partition they stream, counted from `progress` whenever it
    /// changes: WAITAOF reads it for every batch.
    in_sync_followers: AtomicUsize,
    /// Replica: the partitions whose stream from the leader is established, each with whether
    /// it has caught up (holds durably what the leader had framed when the stream started).
    streaming: Mutex<BTreeMap<PartitionId, bool>>,
}

impl ClusterShared {
    #[must_use]
    pub fn new(mode: ServingMode, epoch: Epoch) -> ClusterShared {
        ClusterShared {
            mode: AtomicU8::new(mode.as_u8()),
            epoch: AtomicU64::new(epoch.0),
            progress: Mutex::new(BTreeMap::new()),
            in_sync_followers: AtomicUsize::new(0),
            streaming: Mutex::new(BTreeMap::new()),
        }
    }

    #[must_use]
    pub fn mode(&self) -> ServingMode {
        ServingMode::from_u8(self.mode.load(Ordering::Acquire))
    }

    pub fn set_mode(&self, mode: ServingMode) {
        self.mode.store(mode.as_u8(), Ordering::Release);
    }

    /// The data epoch: stamped on every frame this node writes as leader; the highest one seen
    /// on frames from a leader otherwise.
    #[must_use]
    pub fn epoch(&self) -> Epoch {
        Epoch(self.epoch.load(Ordering::Acquire))
    }

    /// Raises the epoch to `epoch` if it is higher.
    pub fn observe_epoch(&self, epoch: Epoch) {
        self.epoch.fetch_max(epoch.0, Ordering::AcqRel);
    }

    /// Replication progress per (replica, partition), as last published by the shards.
    #[must_use]
    pub fn progress(&self) -> BTreeMap<(String, PartitionId), ReplicaProgress> {
        self.progress.lock().map(|map| map.clone()).unwrap_or_default()
    }

    /// Leader: followers in sync on every partition they stream (as last published).
    #[must_use]
    pub fn in_sync_followers(&self) -> usize {
        self.in_sync_followers.load(Ordering::Acquire)
    }

    /// Replica: how many partitions stream from the leader (caught up or catching up live).
    #[must_use]
    pub fn streaming_partitions(&self) -> usize {
        self.streaming.lock().map_or(0, |set| set.len())
    }

    /// Replica: how many streaming partitions have caught up with the leader.
    #[must_use]
    pub fn caught_up_partitions(&self) -> usize {
        self.streaming.lock().map_or(0, |map| map.values().filter(|caught_up| **caught_up).count())
    }

    /// Records that `partition`'s stream started (not caught up yet) or ended.
    pub(crate) fn set_streaming(&self, partition: PartitionId, streaming: bool) {
        if let Ok(mut map) = self.streaming.lock() {
            if streaming {
                map.insert(partition, false);
            } else {
                map.remove(&partition);
            }
        }
    }

    /// Records that `partition`'s stream caught up with the leader.
    pub(crate) fn set_caught_up(&self, partition: PartitionId) {
        if let Ok(mut map) = self.streaming.lock() {
            if let Some(caught_up) = map.get_mut(&partition) {
                *caught_up = true;
            }
        }
    }

    pub(crate) fn publish_progress(
        &self,
        partition: PartitionId,
        entries: Vec<(String, ReplicaProgress)>,
    ) {
        if let Ok(mut map) = self.progress.lock() {
            map.retain(|(_, owner), _| *owner != partition);
            for (name, progress) in entries {
                map.insert((name, partition), progress);
            }
            self.in_sync_followers.store(count_in_sync_followers(&map), Ordering::Release);
        }
    }
}

/// Followers in sync on every partition they stream.
fn count_in_sync_followers(map: &BTreeMap<(String, PartitionId), ReplicaProgress>) -> usize {
    let mut names: BTreeMap<&str, bool> = BTreeMap::new();
    for ((name, _), progress) in map {
        if progress.kind == ReplicaKind::Follower {
            let entry = names.entry(name.as_str()).or_insert(true);
            *entry &= progress.in_sync;
        }
    }
    names.values().filter(|in_sync| **in_sync).count()
}

/// Orders from the control thread to a shard.
#[derive(Debug)]
pub enum ControlMessage {
    /// Leader: a replica's connection for some partitions of the receiving shard, after its
    /// Subscribe message.
    Attach { stream: std::net::TcpStream, subscribe: Subscribe },
    /// Leader: close the replica streams of the node `name`, or of every node.
    Detach { name: Option<String> },
    /// Replica: stream every owned partition from the leader at `leader` (its peer address),
    /// over one connection per leader shard (`leader_shards`; unknown: one per partition).
    Follow { leader: SocketAddr, name: String, kind: ReplicaKind, leader_shards: Option<u32> },
    /// Stop following. The partitions keep what they have; in leader mode everything durable
    /// commits.
    Unfollow,
    /// Replica, before it follows: replace one partition's log and state with the log written
    /// in `staged` from the archive. Answers the last LSN loaded, or why it failed (the
    /// partition then refuses writes until restart, as after a failed snapshot install).
    InstallArchived {
        partition: PartitionId,
        staged: std::path::PathBuf,
        reply: flume::Sender<Result<Lsn, String>>,
    },
}

/// The control thread's way to the shards.
#[derive(Clone)]
pub struct NodeHandle {
    pub(crate) senders: Vec<flume::Sender<ShardMessage>>,
    pub shared: Arc<ClusterShared>,
    pub partition_count: u32,
}

impl NodeHandle {
    /// Sends `message` to the shard owning `partition`; false if that shard is gone.
    #[must_use]
    pub fn send_to_owner(&self, partition: PartitionId, message: ControlMessage) -> bool {
        let shard = partition.shard(self.senders.len() as u32);
        self.senders[shard.0 as usize].send(ShardMessage::Control(message)).is_ok()
    }

    /// Shards of this node.
    #[must_use]
    pub fn shard_count(&self) -> u32 {
        self.senders.len() as u32
    }

    /// Sends a copy of a message to every shard.
    pub fn broadcast(&self, message: impl Fn() -> ControlMessage) {
        for sender in &self.senders {
            let _ = sender.send(ShardMessage::Control(message()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ClusterShared, ServingMode};
    use strata_core::{Epoch, PartitionId};

    #[test]
    fn a_partition_catches_up_only_while_it_streams() {
        let shared = ClusterShared::new(ServingMode::Replica, Epoch(1));
        shared.set_caught_up(PartitionId(0));
        assert_eq!(shared.caught_up_partitions(), 0, "not streaming: nothing to catch up");
        shared.set_streaming(PartitionId(0), true);
        shared.set_streaming(PartitionId(1), true);
        assert_eq!((shared.streaming_partitions(), shared.caught_up_partitions()), (2, 0));
        shared.set_caught_up(PartitionId(1));
        assert_eq!((shared.streaming_partitions(), shared.caught_up_partitions()), (2, 1));
        shared.set_streaming(PartitionId(1), false);
        assert_eq!((shared.streaming_partitions(), shared.caught_up_partitions()), (1, 0));
        shared.set_streaming(PartitionId(1), true);
        assert_eq!(shared.caught_up_partitions(), 0, "a new stream catches up again");
    }
}
