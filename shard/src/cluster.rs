//! What the control thread and the shards share about the cluster: the node's serving mode, the
//! data epoch, replication progress, and the messages the control thread sends to shards.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use strata_core::peer::{ReplicaKind, Subscribe};
use strata_core::replication::promotion::PartitionReport;
use strata_core::replication::{InSyncSet, Member};
use strata_core::{Epoch, Lsn, PartitionId};

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
    /// Shards tell the control thread what it must act on (a newer epoch seen).
    events: flume::Sender<NodeEvent>,
    events_receiver: Mutex<Option<flume::Receiver<NodeEvent>>>,
    /// Partitions refusing writes because too few members are in sync.
    refusing: Mutex<BTreeMap<PartitionId, bool>>,
    /// Leader under a controller: the moment ([`monotonic_ms`]) its lease ends; past it the
    /// node answers key commands with `-TRYAGAIN`, because another leader may have been
    /// elected. `u64::MAX`: no lease is needed (no controller, or not leading).
    lease_deadline: AtomicU64,
}

/// Milliseconds on the monotonic clock since the process first read it: the clock leases and
/// timeouts are measured on, the same on the control thread and every shard.
#[must_use]
pub fn monotonic_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(std::time::Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Events a shard hands to the control thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// A partition leading here learned that a member has seen `epoch`, newer than its own:
    /// another leader exists. The node steps down.
    NewerEpoch { partition: PartitionId, epoch: Epoch },
    /// A partition leading here asks the cluster's controller to record a new version of its
    /// in-sync set; it takes effect once the controller did (`InSyncRecorded`).
    RecordInSync { partition: PartitionId, set: InSyncSet },
}

/// Node events queued at most; a full queue drops the newest (the first one is enough to act).
const NODE_EVENTS_MAX: usize = 1024;

impl ClusterShared {
    #[must_use]
    pub fn new(mode: ServingMode, epoch: Epoch) -> ClusterShared {
        let (events, receiver) = flume::bounded(NODE_EVENTS_MAX);
        ClusterShared {
            events,
            events_receiver: Mutex::new(Some(receiver)),
            refusing: Mutex::new(BTreeMap::new()),
            mode: AtomicU8::new(mode.as_u8()),
            epoch: AtomicU64::new(epoch.0),
            progress: Mutex::new(BTreeMap::new()),
            in_sync_followers: AtomicUsize::new(0),
            streaming: Mutex::new(BTreeMap::new()),
            lease_deadline: AtomicU64::new(u64::MAX),
        }
    }

    /// Sets when the leader's lease ends ([`monotonic_ms`]); `u64::MAX` for no lease.
    pub fn set_lease_deadline(&self, deadline_ms: u64) {
        self.lease_deadline.store(deadline_ms, Ordering::Release);
    }

    /// Whether this node holds no lease it needs: it leads under a controller and its lease
    /// ended.
    #[must_use]
    pub fn lease_expired(&self) -> bool {
        let deadline = self.lease_deadline.load(Ordering::Acquire);
        deadline != u64::MAX && monotonic_ms() > deadline
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

    /// The receiving end of the shards' events; the control thread takes it once.
    pub fn take_events(&self) -> Option<flume::Receiver<NodeEvent>> {
        self.events_receiver.lock().ok().and_then(|mut receiver| receiver.take())
    }

    pub(crate) fn notify(&self, event: NodeEvent) {
        let _ = self.events.try_send(event);
    }

    /// Leader: how many partitions refuse writes for lack of in-sync members (INFO).
    #[must_use]
    pub fn refusing_partitions(&self) -> usize {
        self.refusing.lock().map_or(0, |map| map.values().filter(|refusing| **refusing).count())
    }

    pub(crate) fn set_refusing(&self, partition: PartitionId, refusing: bool) {
        if let Ok(mut map) = self.refusing.lock() {
            map.insert(partition, refusing);
        }
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

/// How a partition leads, as the control thread configures it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderSettings {
    /// This node in in-sync sets.
    pub me: Member,
    /// `[cluster] min_insync_replicas`: members (this one included) a set must keep.
    pub min_insync: usize,
    /// A follower the leader waits for that acknowledges nothing this long leaves the set
    /// (`[cluster] heartbeat_timeout`).
    pub progress_timeout_ms: u64,
    /// The cluster's controller records every new version of a set before it takes effect
    /// (`[cluster] failover = "automatic"`).
    pub controlled: bool,
}

/// A shard's answer to a promotion phase: `Err` with the refusal of its first partition
/// that refused.
pub type PhaseReply = flume::Sender<Result<(), String>>;

/// Orders from the control thread to a shard.
#[derive(Debug)]
pub enum ControlMessage {
    /// Leader: a replica's connection for some partitions of the receiving shard, after its
    /// Subscribe message; over TLS with the session the control thread made on it.
    Attach {
        stream: std::net::TcpStream,
        tls: Option<Box<rustls::ServerConnection>>,
        subscribe: Subscribe,
    },
    /// Leader: the member `name` left, was removed or timed out: its streams close, and the
    /// in-sync sets drop it when they may.
    MemberGone { name: String },
    /// The node leaves its cluster role (admin mode): leading partitions stop leading and
    /// close their streams, replicas stop following.
    Idle,
    /// The node stands alone: every partition commits what is durable.
    Standalone,
    /// Leader: the cluster's controller recorded this version of the partition's in-sync set
    /// (the answer to `NodeEvent::RecordInSync`).
    InSyncRecorded { partition: PartitionId, leader_epoch: Epoch, isr_epoch: u64 },
    /// Leader: the cluster's controller refused that version, holding `recorded` of the same
    /// epoch already; the partition proposes the set again above it.
    InSyncRefused { partition: PartitionId, leader_epoch: Epoch, isr_epoch: u64, recorded: u64 },
    /// Replica: stream every owned partition from the leader at `leader` (its peer address),
    /// over one connection per leader shard (`leader_shards`; unknown: one per partition).
    /// `member` is this node as the leader records it in in-sync sets.
    Follow { leader: SocketAddr, member: Member, kind: ReplicaKind, leader_shards: Option<u32> },
    /// Stop following. The partitions keep what they have.
    Unfollow,
    /// Replica, before it follows: replace the log and state of a partition that holds no
    /// record with the log written in `staged` from the archive. Answers the last LSN loaded,
    /// or why it failed (a partition that holds records is left as it was; one whose install
    /// failed refuses writes until restart, as after a failed snapshot install).
    InstallArchived {
        partition: PartitionId,
        staged: std::path::PathBuf,
        reply: flume::Sender<Result<Lsn, String>>,
    },
    /// What each owned partition reports to a promotion (its fence, newest recorded set,
    /// durable LSN, failure).
    Report { reply: flume::Sender<Vec<PartitionReport>> },
    /// Promotion, phase one: every owned partition refuses anything older than `epoch` from
    /// now on (a partition that leads steps down), unless it recorded a newer in-sync set than
    /// its `basis` (what the promotion planned on; `None`: forced). Answers once the epoch is
    /// durable on every owned partition, or the first refusal.
    AcceptEpoch {
        epoch: Epoch,
        basis: BTreeMap<PartitionId, Option<(Epoch, u64)>>,
        /// Only check that every owned partition would accept, changing nothing: a node
        /// checks all its shards before any of them acts, so that a refusal leaves a leader
        /// leading.
        check_only: bool,
        reply: PhaseReply,
    },
    /// Promotion, phase two: record the new leader's first set of each owned partition.
    InstallSets { sets: BTreeMap<PartitionId, InSyncSet>, reply: PhaseReply },
    /// Lead every owned partition at `epoch` with these first sets (already installed here).
    Lead {
        epoch: Epoch,
        sets: BTreeMap<PartitionId, InSyncSet>,
        settings: LeaderSettings,
        reply: PhaseReply,
    },
    /// A member has seen `epoch`, newer than this leader's: stop leading; writes waiting for
    /// a commit fail with `-TRYAGAIN`.
    StepDown { epoch: Epoch },
}

/// The control thread's way to the shards.
#[derive(Clone)]
pub struct NodeHandle {
    pub(crate) senders: Vec<flume::Sender<ControlMessage>>,
    pub shared: Arc<ClusterShared>,
    pub partition_count: u32,
    /// What the shards measure, read at scrape time.
    pub metrics: Arc<crate::metrics::NodeMetrics>,
}

impl NodeHandle {
    /// Sends `message` to the shard owning `partition`; false if that shard is gone.
    #[must_use]
    pub fn send_to_owner(&self, partition: PartitionId, message: ControlMessage) -> bool {
        let shard = partition.shard(self.senders.len() as u32);
        self.senders[shard.0 as usize].send(message).is_ok()
    }

    /// Shards of this node.
    #[must_use]
    pub fn shard_count(&self) -> u32 {
        self.senders.len() as u32
    }

    /// Sends a copy of a message to every shard.
    pub fn broadcast(&self, message: impl Fn() -> ControlMessage) {
        for sender in &self.senders {
            let _ = sender.send(message());
        }
    }

    /// Sends a message with a reply channel to every shard and gathers the replies; a shard
    /// that is gone answers nothing.
    async fn ask_every_shard<T: Send + 'static>(
        &self,
        message: impl Fn(flume::Sender<T>) -> ControlMessage,
    ) -> Vec<T> {
        let mut receivers = Vec::with_capacity(self.senders.len());
        for sender in &self.senders {
            let (reply, receiver) = flume::bounded(1);
            if sender.send_async(message(reply)).await.is_ok() {
                receivers.push(receiver);
            }
        }
        let mut replies = Vec::with_capacity(receivers.len());
        for receiver in receivers {
            if let Ok(reply) = receiver.recv_async().await {
                replies.push(reply);
            }
        }
        replies
    }

    /// Every partition's report to a promotion, in partition order.
    pub async fn report(&self) -> Vec<PartitionReport> {
        let mut reports: Vec<PartitionReport> = self
            .ask_every_shard(|reply| ControlMessage::Report { reply })
            .await
            .into_iter()
            .flatten()
            .collect();
        reports.sort_by_key(|report| report.partition);
        reports
    }

    /// Promotion phase one on this node (see [`ControlMessage::AcceptEpoch`]).
    ///
    /// # Errors
    ///
    /// The first partition's refusal, or a shard that is gone.
    pub async fn accept_epoch(
        &self,
        epoch: Epoch,
        basis: &BTreeMap<PartitionId, Option<(Epoch, u64)>>,
    ) -> Result<(), String> {
        for check_only in [true, false] {
            let replies = self
                .ask_every_shard(|reply| ControlMessage::AcceptEpoch {
                    epoch,
                    basis: basis.clone(),
                    check_only,
                    reply,
                })
                .await;
            self.all_answered(replies)?;
        }
        Ok(())
    }

    /// Promotion phase two on this node (see [`ControlMessage::InstallSets`]).
    ///
    /// # Errors
    ///
    /// The first partition's refusal, or a shard that is gone.
    pub async fn install_sets(
        &self,
        sets: &BTreeMap<PartitionId, InSyncSet>,
    ) -> Result<(), String> {
        let replies = self
            .ask_every_shard(|reply| ControlMessage::InstallSets { sets: sets.clone(), reply })
            .await;
        self.all_answered(replies)
    }

    /// Makes every partition lead at `epoch` (see [`ControlMessage::Lead`]).
    ///
    /// # Errors
    ///
    /// The first partition's refusal, or a shard that is gone.
    pub async fn lead(
        &self,
        epoch: Epoch,
        sets: &BTreeMap<PartitionId, InSyncSet>,
        settings: &LeaderSettings,
    ) -> Result<(), String> {
        let replies = self
            .ask_every_shard(|reply| ControlMessage::Lead {
                epoch,
                sets: sets.clone(),
                settings: settings.clone(),
                reply,
            })
            .await;
        self.all_answered(replies)
    }

    fn all_answered(&self, replies: Vec<Result<(), String>>) -> Result<(), String> {
        if replies.len() < self.senders.len() {
            return Err("a shard of this node stopped".into());
        }
        replies.into_iter().collect()
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
