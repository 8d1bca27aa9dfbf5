//! Replication on the shard that owns a partition.
//!
//! A replica shard opens one connection per leader shard that owns some of its partitions, and
//! subscribes to all of those partitions on it; every stream message names its partition.
//! What the partitions of a shard send in one turn (frames, commits, acknowledgements) thus
//! goes out in one write, not one per partition.
//!
//! Leader side: each replica of a partition has a [`Replica`], sharing the outbound queue of
//! its connection with the replica's other partitions. The flusher pushes every frame it cuts
//! to every replica at the moment it starts writing it locally; one reader task per connection
//! takes the acknowledgements. A write commits once it is durable here and acknowledged by
//! every in-sync follower; learners are never waited for.
//!
//! Replica side: frames are checked, applied to the keyspace (reads of them wait for the
//! leader's commit), and handed to the partition's flusher, which appends them to the local
//! WAL exactly as received and acknowledges the durable LSN upstream.

use std::cell::Cell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRentExt, OwnedReadHalf, Splitable};
use monoio::net::TcpStream;
use strata_core::frame::{decode_frame, decode_records};
use strata_core::peer::{
    decode_lsn, decode_message, encode_message, Message, MessageKind, PeerError, ReplicaKind,
    StreamFrom, StreamStart, Subscribe, SNAPSHOT_CHUNK_BYTES,
};
use strata_core::{Epoch, Lsn, PartitionId, ShardId};

use crate::cluster::{ReplicaProgress, ServingMode};
use crate::link::Link;
use crate::shard::{PartitionSlot, Shard};

/// How long a replica waits before it connects to the leader again.
const RECONNECT_DELAY: Duration = Duration::from_millis(300);
/// Received frames a replica holds before they are written, at most; reading waits beyond.
const INBOUND_BYTES_MAX: usize = 64 * 1024 * 1024;
const READ_CHUNK_BYTES: usize = 256 * 1024;
/// Largest snapshot a replica accepts.
const SNAPSHOT_BYTES_MAX: usize = 16 * 1024 * 1024 * 1024;

/// One replica of one partition, on the leader.
pub(crate) struct Replica {
    pub(crate) name: String,
    pub(crate) kind: ReplicaKind,
    /// The replica's connection, shared with its other partitions on this shard.
    pub(crate) link: Rc<Link>,
    /// Frames whose records are all at or below this LSN are in the snapshot it was sent.
    snapshot_lsn: Lsn,
    /// In sync once it acknowledged this LSN.
    join_lsn: Lsn,
    pub(crate) acked: Cell<Lsn>,
    pub(crate) in_sync: Cell<bool>,
}

impl Replica {
    /// Whether commits wait for this replica.
    fn holds_commits(&self) -> bool {
        self.kind == ReplicaKind::Follower && self.in_sync.get() && !self.link.is_closed()
    }
}

/// One partition's part of a replica's subscription.
#[derive(Clone, Debug)]
pub(crate) struct StreamRequest {
    pub(crate) name: String,
    pub(crate) kind: ReplicaKind,
    pub(crate) from: StreamFrom,
}

/// A replica's subscriptions to one partition from one position, counted while they repeat.
pub(crate) struct RecentSubscription {
    name: String,
    last_lsn: Lsn,
    last_epoch: Epoch,
    count: u32,
    since: Instant,
}

/// Subscriptions from the same position within `SUBSCRIPTION_REPEAT_WINDOW` after which the
/// replica gets a snapshot: its streams keep ending where they started, so something in the
/// tail it is sent fails every time, and a snapshot starts it afresh.
const SUBSCRIPTION_REPEAT_LIMIT: u32 = 4;
const SUBSCRIPTION_REPEAT_WINDOW: Duration = Duration::from_secs(10);
/// Replicas whose subscriptions a partition remembers.
const SUBSCRIPTIONS_REMEMBERED: usize = 32;

/// Where a replica shard streams from, and which attempt at following this is.
#[derive(Clone, Debug)]
pub(crate) struct FollowTarget {
    pub(crate) leader: SocketAddr,
    pub(crate) name: String,
    pub(crate) kind: ReplicaKind,
    pub(crate) generation: u64,
}

/// Why a replica stream ended.
#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad message from the leader: {0}")]
    Peer(#[from] PeerError),
    #[error("the leader refused the stream: {0}")]
    Refused(String),
    #[error("{0}")]
    Protocol(String),
    #[error("no longer following")]
    Stopped,
}

impl Shard {
    // ----- leader side -----

    /// Takes a replica's connection for the partitions it subscribes to (all on this shard):
    /// starts each from the replica's own log when that continues ours, otherwise from a
    /// snapshot taken at a clean point.
    pub(crate) fn attach_replica(
        self: &Rc<Self>,
        subscribe: Subscribe,
        stream: std::net::TcpStream,
    ) {
        let owned = subscribe.streams.iter().all(|from| {
            self.mesh.shard_of(from.partition) == self.id
                && from.partition.0 < self.mesh.options.partition_count
        });
        let stream = match stream.set_nonblocking(true).and_then(|()| TcpStream::from_std(stream)) {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "cannot take a replica connection");
                return;
            }
        };
        if !owned || self.mesh.shared.mode() != ServingMode::Leader {
            monoio::spawn(refuse(stream, "this node is not the leader of those partitions"));
            return;
        }
        for from in &subscribe.streams {
            self.detach_partition(from.partition, Some(&subscribe.name));
        }
        let _ = stream.set_nodelay(true);
        let link = Link::new(stream.as_raw_fd(), self.mesh.options.replica_window);
        let (reader, writer) = stream.into_split();
        monoio::spawn(Rc::clone(&link).run_writer(writer));
        let partitions = subscribe.streams.iter().map(|from| from.partition).collect();
        let name = subscribe.name.clone();
        monoio::spawn(Rc::clone(self).read_acks(name, partitions, Rc::clone(&link), reader));
        for from in subscribe.streams {
            let request =
                StreamRequest { name: subscribe.name.clone(), kind: subscribe.kind, from };
            self.attach_stream(request, &link);
        }
    }

    /// Starts one partition's stream on a replica's connection.
    fn attach_stream(self: &Rc<Self>, request: StreamRequest, link: &Rc<Link>) {
        let partition = request.from.partition;
        let mut partitions = self.partitions.borrow_mut();
        let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
        let from = request.from;
        if keeps_subscribing(&mut slot.subscriptions, &request, Instant::now()) {
            tracing::warn!(
                partition = partition.0,
                replica = request.name,
                from = from.last_lsn.0,
                "replica keeps subscribing from the same place; it gets a snapshot"
            );
            self.start_stream(slot, request, Rc::clone(link), None);
            drop(partitions);
            self.advance_commit(partition);
            return;
        }
        let continues = from.last_lsn == slot.framed_lsn
            && (from.last_epoch == slot.last_epoch || slot.framed_lsn == Lsn::ZERO);
        let missing = if continues {
            Some(Vec::new())
        } else {
            recent_after(slot, from.last_lsn, from.last_epoch)
        };
        if missing.is_none() && from.last_lsn < slot.framed_lsn {
            // Further behind than the recent frames reach: what it misses may still be in the
            // log files, which a thread of its own reads so that this shard does not stall.
            slot.reading_log.push((request.name.clone(), Rc::clone(link)));
            drop(partitions);
            self.read_log_for(request, Rc::clone(link));
            return;
        }
        self.start_stream(slot, request, Rc::clone(link), missing);
        drop(partitions);
        self.advance_commit(partition);
    }

    /// Starts a replica's stream: with the frames it misses, or with a snapshot when `None`.
    fn start_stream(
        &self,
        slot: &mut PartitionSlot,
        request: StreamRequest,
        link: Rc<Link>,
        missing: Option<Vec<Rc<[u8]>>>,
    ) {
        let partition = request.from.partition;
        let epoch = self.mesh.shared.epoch();
        if let Some(frames) = missing {
            let next_lsn = request.from.last_lsn.next();
            // Catch-up frames, like a snapshot, do not count against the live window.
            link.allow_extra(frames.iter().map(|frame| frame.len() + 16).sum());
            let caught_up_at = slot.framed_lsn;
            let start = StreamStart::Tail { next_lsn, epoch, caught_up_at }.encode();
            link.push(MessageKind::StreamStart, partition, &start);
            for frame in &frames {
                link.push(MessageKind::Frames, partition, frame);
            }
            let acked = request.from.last_lsn;
            let replica = self.new_replica(&request, link, slot.framed_lsn, acked);
            Self::add_replica(slot, replica);
        } else {
            let start = StreamStart::Snapshot { epoch, caught_up_at: slot.framed_lsn }.encode();
            link.push(MessageKind::StreamStart, partition, &start);
            slot.awaiting_snapshot.push((request, link));
            if slot.state.has_open_records() {
                // Sent by the flusher once it has framed the open records.
                self.flush_signals[partition.0 as usize].raise();
            } else {
                self.send_snapshots(slot, partition);
            }
        }
    }

    /// Reads the frames after the replica's last LSN from the partition's segment files on a
    /// thread of its own (at most half the replica window or two segments, whichever is
    /// more), then starts the stream with them, or with a snapshot.
    fn read_log_for(self: &Rc<Self>, request: StreamRequest, link: Rc<Link>) {
        let partition = request.from.partition;
        let directory = self.partition_directory(partition);
        let options = &self.mesh.options;
        let two_segments =
            usize::try_from(options.segment_bytes.saturating_mul(2)).unwrap_or(usize::MAX);
        let bytes_max = (options.replica_window / 2).max(two_segments);
        let after = request.from.last_lsn;
        let (sender, receiver) = flume::bounded(1);
        let spawned = std::thread::Builder::new().name("log-reader".into()).spawn(move || {
            let _ =
                sender.send(strata_wal::read_log_after(&directory, partition, after, bytes_max));
        });
        if let Err(error) = spawned {
            // The receiver then reports the sender gone: the replica gets a snapshot.
            tracing::warn!(partition = partition.0, %error, "cannot start a log reader");
        }
        monoio::spawn(Rc::clone(self).resume_from_log(request, link, receiver));
    }

    /// Starts a stream whose missing frames were read from the log files, unless the replica
    /// was detached meanwhile or this node stopped leading.
    async fn resume_from_log(
        self: Rc<Self>,
        request: StreamRequest,
        link: Rc<Link>,
        receiver: flume::Receiver<Result<Option<strata_wal::LogTail>, strata_wal::WalError>>,
    ) {
        let read = receiver.recv_async().await.unwrap_or(Ok(None));
        let partition = request.from.partition;
        let mut partitions = self.partitions.borrow_mut();
        let Some(slot) = partitions[partition.0 as usize].as_mut() else {
            link.close();
            return;
        };
        let pending = slot.reading_log.iter().position(|(_, pending)| Rc::ptr_eq(pending, &link));
        let Some(pending) = pending else {
            // Detached while the log was read, or the partition's files were replaced.
            link.close();
            return;
        };
        slot.reading_log.swap_remove(pending);
        if link.is_closed() || self.mesh.shared.mode() != ServingMode::Leader {
            link.close();
            return;
        }
        let missing = match read {
            Ok(tail) => tail.and_then(|tail| frames_after_log(slot, &request, tail)),
            Err(error) => {
                let what = "cannot read the log for a replica";
                tracing::warn!(partition = partition.0, %error, "{what}");
                None
            }
        };
        self.start_stream(slot, request, link, missing);
        drop(partitions);
        self.advance_commit(partition);
    }

    fn new_replica(
        &self,
        request: &StreamRequest,
        link: Rc<Link>,
        from: Lsn,
        acked: Lsn,
    ) -> Rc<Replica> {
        tracing::info!(
            name = request.name,
            partition = request.from.partition.0,
            kind = ?request.kind,
            from = from.0,
            "replica attached"
        );
        Rc::new(Replica {
            name: request.name.clone(),
            kind: request.kind,
            link,
            snapshot_lsn: from,
            join_lsn: from,
            acked: Cell::new(acked),
            in_sync: Cell::new(acked >= from),
        })
    }

    fn add_replica(slot: &mut PartitionSlot, replica: Rc<Replica>) {
        replica.link.push_lsn(MessageKind::Commit, slot.state.id(), slot.state.commit_lsn());
        slot.replicas.push(replica);
    }

    /// Sends a snapshot to every replica waiting for one. The caller guarantees a clean
    /// point: no open records, so the keyspace is exactly the state at the last framed LSN and
    /// every later frame starts after it.
    pub(crate) fn send_snapshots(&self, slot: &mut PartitionSlot, partition: PartitionId) {
        if slot.awaiting_snapshot.is_empty() {
            return;
        }
        assert!(!slot.state.has_open_records(), "a snapshot needs a clean point");
        let lsn = slot.framed_lsn;
        let mut image = strata_wal::encode_checkpoint(partition, slot.state.keyspace().iter());
        strata_wal::stamp_checkpoint_epoch(&mut image, slot.last_epoch);
        strata_wal::seal_checkpoint(&mut image, partition, lsn);
        for (request, link) in std::mem::take(&mut slot.awaiting_snapshot) {
            link.allow_extra(image.len() + image.len() / SNAPSHOT_CHUNK_BYTES * 16 + 64);
            for chunk in image.chunks(SNAPSHOT_CHUNK_BYTES) {
                link.push(MessageKind::SnapshotChunk, partition, chunk);
            }
            link.push_lsn(MessageKind::SnapshotEnd, partition, lsn);
            let replica = self.new_replica(&request, link, lsn, Lsn::ZERO);
            Self::add_replica(slot, replica);
        }
        tracing::info!(partition = partition.0, lsn = lsn.0, bytes = image.len(), "snapshot sent");
    }

    /// Keeps a frame just cut among the recent ones, dropping the oldest beyond the limit.
    pub(crate) fn remember_frame(slot: &mut PartitionSlot, frame: crate::shard::RecentFrame) {
        slot.recent_bytes += frame.bytes.len();
        slot.recent.push_back(frame);
        while slot.recent_bytes > crate::shard::RECENT_FRAMES_BYTES_MAX {
            let Some(oldest) = slot.recent.pop_front() else { break };
            slot.recent_bytes -= oldest.bytes.len();
        }
    }

    /// Queues a frame the flusher just cut for every replica that does not have it yet.
    pub(crate) fn push_frame(slot: &mut PartitionSlot, first_lsn: Lsn, frame: &[u8]) {
        let partition = slot.state.id();
        for replica in &slot.replicas {
            if first_lsn > replica.snapshot_lsn {
                replica.link.push(MessageKind::Frames, partition, frame);
            }
        }
    }

    /// Reads the acknowledgements on a replica's connection until it ends, then forgets the
    /// replica on every partition the connection streamed.
    async fn read_acks(
        self: Rc<Self>,
        name: String,
        partitions: Vec<PartitionId>,
        link: Rc<Link>,
        mut reader: OwnedReadHalf<TcpStream>,
    ) {
        let mut input = Vec::with_capacity(4096);
        let outcome = loop {
            if let Err(error) =
                take_messages(&mut input, |message| self.on_ack(&link, message).map(|()| true))
            {
                break error;
            }
            if link.is_closed() {
                break StreamError::Stopped;
            }
            match read_more(&mut reader, &mut input).await {
                Ok(()) => {}
                Err(error) => break error,
            }
        };
        link.close();
        let streams = partitions.len();
        tracing::info!(name, streams, reason = %outcome, "replica detached");
        for partition in partitions {
            self.forget_closed(partition);
        }
    }

    /// Takes one acknowledgement from the replica at the other end of `link`.
    fn on_ack(&self, link: &Rc<Link>, message: &Message<'_>) -> Result<(), StreamError> {
        if message.kind != MessageKind::Ack {
            let kind = message.kind;
            return Err(StreamError::Protocol(format!("unexpected {kind:?} from a replica")));
        }
        let lsn = decode_lsn(message)?;
        let partition = message.partition;
        let replica = {
            let partitions = self.partitions.borrow();
            let slot = partitions.get(partition.0 as usize).and_then(Option::as_ref);
            let replica = slot.and_then(|slot| {
                let replica = slot.replicas.iter().find(|replica| Rc::ptr_eq(&replica.link, link));
                replica.map(|replica| (Rc::clone(replica), slot.framed_lsn))
            });
            let Some((replica, framed_lsn)) = replica else {
                return Err(protocol(&format!(
                    "an acknowledgement for partition {partition}, which this connection does \
                     not stream"
                )));
            };
            if lsn > framed_lsn {
                return Err(StreamError::Protocol(format!(
                    "acknowledged LSN {lsn} beyond the last sent {framed_lsn}"
                )));
            }
            replica
        };
        replica.acked.set(replica.acked.get().max(lsn));
        if !replica.in_sync.get() && lsn >= replica.join_lsn {
            replica.in_sync.set(true);
            tracing::info!(name = replica.name, partition = partition.0, "replica in sync");
        }
        self.advance_commit(partition);
        Ok(())
    }

    /// Closes the replica streams of `name` (or all) on every owned partition.
    pub(crate) fn detach(&self, name: Option<&str>) {
        for partition in self.owned_partitions() {
            self.detach_partition(partition, name);
        }
    }

    fn detach_partition(&self, partition: PartitionId, name: Option<&str>) {
        {
            let partitions = self.partitions.borrow();
            let slot = partitions[partition.0 as usize].as_ref().expect("owned partition");
            for replica in &slot.replicas {
                if name.is_none_or(|name| name == replica.name) {
                    replica.link.close();
                }
            }
            for (request, link) in &slot.awaiting_snapshot {
                if name.is_none_or(|name| name == request.name) {
                    link.close();
                }
            }
            for (replica, link) in &slot.reading_log {
                if name.is_none_or(|name| name == replica) {
                    link.close();
                }
            }
        }
        self.forget_closed(partition);
    }

    fn forget_closed(&self, partition: PartitionId) {
        {
            let mut partitions = self.partitions.borrow_mut();
            let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
            slot.replicas.retain(|replica| !replica.link.is_closed());
            slot.awaiting_snapshot.retain(|(_, link)| !link.is_closed());
            slot.reading_log.retain(|(_, link)| !link.is_closed());
        }
        self.advance_commit(partition);
    }

    /// Moves the partition's commit LSN as far as the rules allow and answers what waited.
    /// Leader or standalone: durable here and acknowledged by every in-sync follower. Replica:
    /// durable here and committed by the leader.
    pub(crate) fn advance_commit(&self, partition: PartitionId) {
        let mut partitions = self.partitions.borrow_mut();
        let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
        let mut candidate = slot.durable_lsn.min(slot.state.last_lsn());
        match slot.leader_commit {
            Some(leader_commit) => candidate = candidate.min(leader_commit),
            None => {
                for replica in slot.replicas.iter().filter(|replica| replica.holds_commits()) {
                    candidate = candidate.min(replica.acked.get());
                }
            }
        }
        if candidate <= slot.state.commit_lsn() {
            return;
        }
        slot.state.commit(candidate);
        if let Some(marks) = &self.mesh.options.archive {
            marks.set_committed(partition, candidate);
        }
        crate::shard::release_waiters(slot);
        for replica in &slot.replicas {
            replica.link.push_lsn(MessageKind::Commit, partition, candidate);
        }
    }

    /// Publishes every replica's progress for the control thread (ADMIN LIST NODES lag).
    pub(crate) fn publish_progress(&self) {
        let partitions = self.partitions.borrow();
        for slot in partitions.iter().flatten() {
            let leader_lsn = slot.state.last_lsn();
            let entries = slot
                .replicas
                .iter()
                .map(|replica| {
                    let progress = ReplicaProgress {
                        kind: replica.kind,
                        acked_lsn: replica.acked.get(),
                        leader_lsn,
                        in_sync: replica.in_sync.get(),
                    };
                    (replica.name.clone(), progress)
                })
                .collect();
            self.mesh.shared.publish_progress(slot.state.id(), entries);
        }
    }

    // ----- replica side -----

    /// Starts streaming every owned partition from `leader`: one connection per leader shard
    /// owning some of them (`leader_shards`, from the leader's answer to registration; unknown:
    /// one connection per partition).
    pub(crate) fn follow(
        self: &Rc<Self>,
        leader: SocketAddr,
        name: String,
        kind: ReplicaKind,
        leader_shards: Option<u32>,
    ) {
        let generation = self.follow_generation.get() + 1;
        self.follow_generation.set(generation);
        let target = FollowTarget { leader, name, kind, generation };
        let owned = self.owned_partitions();
        for partition in &owned {
            let mut partitions = self.partitions.borrow_mut();
            let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
            slot.leader_commit = Some(slot.state.commit_lsn());
            // Frames cut as leader may not be a prefix of the log the new leader sends.
            slot.recent.clear();
            slot.recent_bytes = 0;
        }
        for group in stream_groups(&owned, leader_shards) {
            monoio::spawn(Rc::clone(self).follow_group(group, target.clone()));
        }
    }

    /// Stops following: streams close; in leader mode every durable record commits.
    pub(crate) fn unfollow(&self) {
        self.follow_generation.set(self.follow_generation.get() + 1);
        for partition in self.owned_partitions() {
            {
                let mut partitions = self.partitions.borrow_mut();
                let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
                if let Some(upstream) = slot.upstream.take() {
                    upstream.close();
                }
                self.mesh.shared.set_streaming(partition, false);
                if self.mesh.shared.mode() != ServingMode::Replica {
                    slot.leader_commit = None;
                }
            }
            self.advance_commit(partition);
        }
    }

    /// Streams `group` (partitions one leader shard owns) over one connection, connecting
    /// again after it ends, until this attempt at following is over.
    async fn follow_group(self: Rc<Self>, group: Vec<PartitionId>, target: FollowTarget) {
        let mut failures = 0u32;
        while self.follow_generation.get() == target.generation {
            match self.stream_group(&group, &target).await {
                Err(StreamError::Stopped) => break,
                Err(error) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(20) {
                        let partitions = format!("{group:?}");
                        tracing::warn!(partitions, %error, failures, "replication stream ended");
                    }
                }
                Ok(()) => {}
            }
            monoio::time::sleep(RECONNECT_DELAY).await;
        }
    }

    async fn stream_group(
        &self,
        group: &[PartitionId],
        target: &FollowTarget,
    ) -> Result<(), StreamError> {
        let stream = TcpStream::connect(target.leader).await?;
        let _ = stream.set_nodelay(true);
        if self.follow_generation.get() != target.generation {
            return Err(StreamError::Stopped);
        }
        let link = Link::new(stream.as_raw_fd(), self.mesh.options.replica_window);
        let streams = group.iter().map(|partition| self.stream_from(*partition)).collect();
        let subscribe = Subscribe { kind: target.kind, name: target.name.clone(), streams };
        let (mut reader, mut writer) = stream.into_split();
        let mut hello = Vec::new();
        encode_message(&mut hello, MessageKind::Subscribe, &subscribe.encode());
        let (result, _) = writer.write_all(hello).await;
        result?;
        monoio::spawn(Rc::clone(&link).run_writer(writer));
        let outcome = self.receive_stream(group, target, &link, &mut reader).await;
        link.close();
        if self.follow_generation.get() == target.generation {
            for partition in group {
                self.mesh.shared.set_streaming(*partition, false);
            }
        }
        outcome
    }

    /// Where the partition's log ends, for a subscription; closes its earlier stream.
    fn stream_from(&self, partition: PartitionId) -> StreamFrom {
        let mut partitions = self.partitions.borrow_mut();
        let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
        if let Some(old) = slot.upstream.take() {
            old.close();
        }
        StreamFrom { partition, last_lsn: slot.state.last_lsn(), last_epoch: slot.last_epoch }
    }

    async fn receive_stream(
        &self,
        group: &[PartitionId],
        target: &FollowTarget,
        link: &Rc<Link>,
        reader: &mut OwnedReadHalf<TcpStream>,
    ) -> Result<(), StreamError> {
        let mut input = Vec::with_capacity(READ_CHUNK_BYTES);
        let mut streams: Vec<ReceiveState> =
            group.iter().map(|partition| ReceiveState::new(*partition)).collect();
        loop {
            take_messages(&mut input, |message| {
                if message.kind == MessageKind::Refused {
                    let reason = String::from_utf8_lossy(message.payload).into_owned();
                    return Err(StreamError::Refused(reason));
                }
                let partition = message.partition;
                let stream = streams
                    .iter_mut()
                    .find(|stream| stream.partition == partition && message.kind.is_stream())
                    .ok_or_else(|| {
                        let kind = message.kind;
                        protocol(&format!("unexpected {kind:?} for partition {partition}"))
                    })?;
                self.on_stream_message(stream, link, message)
            })?;
            if self.follow_generation.get() != target.generation {
                return Err(StreamError::Stopped);
            }
            if link.is_closed() {
                // The writer failed (the leader went away): connect again.
                return Err(protocol("the connection to the leader closed"));
            }
            let complete = streams.iter_mut().find_map(|stream| {
                let (lsn, image) = stream.complete.take()?;
                Some((stream.partition, stream.epoch.unwrap_or_default(), lsn, image))
            });
            if let Some((partition, epoch, lsn, image)) = complete {
                self.install(partition, epoch, lsn, &image, link).await?;
                // Messages after the snapshot's end may already be in `input`.
                continue;
            }
            self.wait_for_room(group).await;
            read_more(reader, &mut input).await?;
        }
    }

    /// Waits while a partition of `group` holds more received frames than it may before
    /// writing them.
    async fn wait_for_room(&self, group: &[PartitionId]) {
        loop {
            let full = {
                let partitions = self.partitions.borrow();
                group.iter().any(|partition| {
                    let slot = partitions[partition.0 as usize].as_ref().expect("owned partition");
                    slot.inbound_bytes > INBOUND_BYTES_MAX
                })
            };
            if !full {
                return;
            }
            monoio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Handles one message from the leader. `Ok(false)` stops the walk: a snapshot is complete
    /// and must be installed before anything after it.
    fn on_stream_message(
        &self,
        stream: &mut ReceiveState,
        link: &Rc<Link>,
        message: &Message<'_>,
    ) -> Result<bool, StreamError> {
        let (partition, payload) = (stream.partition, message.payload);
        match message.kind {
            MessageKind::StreamStart => {
                let start = StreamStart::decode(payload)?;
                self.on_stream_start(stream, start, link)?;
            }
            MessageKind::Frames => {
                if stream.epoch.is_none() {
                    return Err(protocol("frames before the start"));
                }
                if stream.snapshot.is_some() {
                    return Err(protocol("frames inside a snapshot"));
                }
                self.receive_frames(partition, payload)?;
            }
            MessageKind::Commit => {
                let lsn = decode_lsn(message)?;
                self.on_leader_commit(partition, lsn);
            }
            MessageKind::SnapshotChunk => {
                let image = stream
                    .snapshot
                    .as_mut()
                    .ok_or_else(|| protocol("snapshot chunk out of place"))?;
                if image.len() + payload.len() > SNAPSHOT_BYTES_MAX {
                    return Err(protocol("snapshot larger than the limit"));
                }
                image.extend_from_slice(payload);
            }
            MessageKind::SnapshotEnd => {
                let lsn = decode_lsn(message)?;
                let image =
                    stream.snapshot.take().ok_or_else(|| protocol("snapshot end out of place"))?;
                stream.complete = Some((lsn, image));
                return Ok(false);
            }
            other => return Err(protocol(&format!("unexpected {other:?} from the leader"))),
        }
        Ok(true)
    }

    fn on_stream_start(
        &self,
        stream: &mut ReceiveState,
        start: StreamStart,
        link: &Rc<Link>,
    ) -> Result<(), StreamError> {
        let partition = stream.partition;
        if stream.epoch.is_some() {
            return Err(protocol("a second stream start"));
        }
        match start {
            StreamStart::Tail { next_lsn, epoch, caught_up_at } => {
                let mut partitions = self.partitions.borrow_mut();
                let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
                if next_lsn != slot.state.last_lsn().next() {
                    return Err(protocol("the leader's tail does not continue this log"));
                }
                stream.epoch = Some(epoch);
                slot.catch_up_lsn = Some(caught_up_at);
                // Acknowledgements flow from now on: this log continues the leader's.
                self.start_acknowledging(slot, link);
            }
            StreamStart::Snapshot { epoch, caught_up_at } => {
                stream.epoch = Some(epoch);
                stream.snapshot = Some(Vec::new());
                // Acknowledgements wait for the installed snapshot (`install`).
                let mut partitions = self.partitions.borrow_mut();
                let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
                slot.catch_up_lsn = Some(caught_up_at);
            }
        }
        self.mesh.shared.observe_epoch(stream.epoch.unwrap_or_default());
        Ok(())
    }

    /// Checks and applies frames from the leader, and queues them for the local WAL.
    fn receive_frames(&self, partition: PartitionId, bytes: &[u8]) -> Result<(), StreamError> {
        let mut partitions = self.partitions.borrow_mut();
        let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
        let mut offset = 0;
        while offset < bytes.len() {
            let header = decode_frame(&bytes[offset..])
                .map_err(|error| protocol(&format!("frame: {error}")))?;
            let frame = &bytes[offset..offset + header.frame_bytes()];
            if header.partition != partition {
                return Err(protocol("a frame of another partition"));
            }
            // Catch-up frames may be older than the stream: an earlier leader cut them. A
            // log's epochs never go back.
            if header.epoch < slot.last_epoch {
                return Err(protocol(&format!(
                    "a frame of epoch {} after one of epoch {}",
                    header.epoch, slot.last_epoch
                )));
            }
            if header.first_lsn != slot.state.last_lsn().next() {
                return Err(protocol(&format!(
                    "frame starts at LSN {}, expected {}",
                    header.first_lsn,
                    slot.state.last_lsn().next()
                )));
            }
            let records = decode_records(frame, &header)
                .map_err(|error| protocol(&format!("frame: {error}")))?;
            for (index, record) in records.iter().enumerate() {
                slot.state.apply_replicated(Lsn(header.first_lsn.0 + index as u64), record);
            }
            slot.last_epoch = header.epoch;
            slot.inbound_bytes += frame.len();
            slot.inbound.push_back(frame.to_vec());
            offset += header.frame_bytes();
        }
        self.mesh.shared.observe_epoch(slot.last_epoch);
        self.flush_signals[partition.0 as usize].raise();
        Ok(())
    }

    /// Waits until the flusher has returned the partition's WAL, then closes it and drops the
    /// frames queued for it or remembered from it: the partition's files are about to be
    /// replaced.
    async fn close_log_for_replacement(&self, partition: PartitionId) {
        while self.partitions.borrow()[partition.0 as usize]
            .as_ref()
            .is_some_and(|slot| slot.wal.is_none())
        {
            monoio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut partitions = self.partitions.borrow_mut();
        let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
        drop(slot.wal.take());
        slot.inbound.clear();
        slot.inbound_bytes = 0;
        slot.recent.clear();
        slot.recent_bytes = 0;
    }

    /// Replaces the partition's log and state with a snapshot from the leader, once the
    /// flusher has returned the WAL; then acknowledges the snapshot's LSN.
    async fn install(
        &self,
        partition: PartitionId,
        epoch: Epoch,
        lsn: Lsn,
        image: &[u8],
        link: &Rc<Link>,
    ) -> Result<(), StreamError> {
        self.close_log_for_replacement(partition).await;
        let mut partitions = self.partitions.borrow_mut();
        let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
        let directory = self.partition_directory(partition);
        let opened = strata_wal::install_snapshot(&directory, partition, lsn, image)
            .and_then(|_| self.open_partition(partition, lsn));
        let (mut state, wal, summary) = match opened {
            Ok(opened) => opened,
            Err(error) => {
                let reason = format!("cannot install the leader's snapshot: {error}");
                tracing::error!(partition = partition.0, %reason);
                slot.state.fail(reason.clone());
                crate::shard::fail_waiters(slot);
                return Err(StreamError::Protocol(reason));
            }
        };
        let leader_commit = slot.leader_commit.unwrap_or(Lsn::ZERO);
        state.recovered_as_replica(lsn, leader_commit);
        slot.state = state;
        slot.wal = Some(wal);
        slot.durable_lsn = lsn;
        slot.synced_lsn = lsn;
        slot.framed_lsn = lsn;
        // The epoch of the leader's frame at the snapshot's LSN, stamped in the image; older
        // leaders leave it 0, and the stream's epoch is the best guess then.
        slot.last_epoch = if summary.last_epoch.0 > 0 { summary.last_epoch } else { epoch };
        crate::shard::fail_waiters_resynchronized(slot);
        self.start_acknowledging(slot, link);
        tracing::info!(
            partition = partition.0,
            lsn = lsn.0,
            keys = slot.state.keyspace().len(),
            "snapshot installed"
        );
        Ok(())
    }

    /// Replaces a partition's log and state with a log loaded from the archive (see
    /// [`ControlMessage::InstallArchived`](crate::ControlMessage::InstallArchived)).
    pub(crate) async fn install_archived(
        self: Rc<Self>,
        partition: PartitionId,
        staged: std::path::PathBuf,
        reply: flume::Sender<Result<Lsn, String>>,
    ) {
        let owned = self.mesh.shard_of(partition) == self.id
            && partition.0 < self.mesh.options.partition_count;
        if !owned {
            let _ = reply.send(Err(format!("partition {partition} is not on this shard")));
            return;
        }
        self.close_log_for_replacement(partition).await;
        let mut partitions = self.partitions.borrow_mut();
        let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
        let directory = self.partition_directory(partition);
        let opened = strata_wal::install_log(&directory, &staged)
            .and_then(|()| self.open_partition(partition, Lsn::ZERO));
        let (state, wal, summary) = match opened {
            Ok(opened) => opened,
            Err(error) => {
                let reason = format!("cannot install the archived log: {error}");
                tracing::error!(partition = partition.0, %reason);
                slot.state.fail(reason.clone());
                crate::shard::fail_waiters(slot);
                let _ = reply.send(Err(reason));
                return;
            }
        };
        let last_lsn = wal.last_lsn();
        slot.state = state;
        slot.wal = Some(wal);
        slot.durable_lsn = last_lsn;
        slot.synced_lsn = last_lsn;
        slot.framed_lsn = last_lsn;
        slot.last_epoch = summary.last_epoch;
        tracing::info!(
            partition = partition.0,
            lsn = last_lsn.0,
            keys = slot.state.keyspace().len(),
            "archived log installed"
        );
        let _ = reply.send(Ok(last_lsn));
    }

    fn on_leader_commit(&self, partition: PartitionId, lsn: Lsn) {
        {
            let mut partitions = self.partitions.borrow_mut();
            let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
            let Some(leader_commit) = slot.leader_commit.as_mut() else {
                return;
            };
            *leader_commit = (*leader_commit).max(lsn);
        }
        self.advance_commit(partition);
    }

    /// Replica: the partition's stream is established and its log continues the leader's:
    /// acknowledgements go to `link` from now on, starting with one now.
    fn start_acknowledging(&self, slot: &mut PartitionSlot, link: &Rc<Link>) {
        slot.upstream = Some(Rc::clone(link));
        self.mesh.shared.set_streaming(slot.state.id(), true);
        self.acknowledge(slot);
    }

    /// Replica: acknowledges the partition's durable LSN to the leader, and records the
    /// partition as caught up once that LSN reaches what the leader had framed when the
    /// stream started.
    pub(crate) fn acknowledge(&self, slot: &mut PartitionSlot) {
        let Some(upstream) = &slot.upstream else { return };
        upstream.push_lsn(MessageKind::Ack, slot.state.id(), slot.durable_lsn);
        if slot.catch_up_lsn.is_some_and(|lsn| slot.durable_lsn >= lsn) {
            slot.catch_up_lsn = None;
            self.mesh.shared.set_caught_up(slot.state.id());
        }
    }
}

/// The frames a replica is missing, from `tail` (read back from the local segment files) and
/// then the recent frames after it; for a replica further behind than the recent frames reach
/// (one that loaded the archive, or was away a while). `None` when the log did not hold them
/// all, or when the replica's last frame is not this log's (another epoch): the replica then
/// gets a snapshot.
fn frames_after_log(
    slot: &PartitionSlot,
    request: &StreamRequest,
    tail: strata_wal::LogTail,
) -> Option<Vec<Rc<[u8]>>> {
    let from = request.from;
    let prefix_matches = match tail.epoch_at_start {
        Some(epoch) => epoch == from.last_epoch || from.last_lsn == Lsn::ZERO,
        // The frame ending at the replica's last LSN is gone from the log: its next frame
        // must not be older than the replica's last one.
        None => tail
            .frames
            .first()
            .and_then(|frame| decode_frame(frame).ok())
            .is_some_and(|header| header.epoch >= from.last_epoch),
    };
    if !prefix_matches {
        return None;
    }
    let mut frames: Vec<Rc<[u8]>> = tail.frames.into_iter().map(Rc::from).collect();
    if tail.last_lsn < slot.framed_lsn {
        frames.extend(recent_after(slot, tail.last_lsn, tail.last_epoch)?);
    }
    tracing::info!(
        partition = from.partition.0,
        replica = request.name,
        from = from.last_lsn.0,
        frames = frames.len(),
        "replica resumes from the local log"
    );
    Some(frames)
}

/// Counts a subscription in `seen` (a partition's recent ones); true when the replica
/// subscribed from the same position `SUBSCRIPTION_REPEAT_LIMIT` times within
/// `SUBSCRIPTION_REPEAT_WINDOW` (its count then starts again).
fn keeps_subscribing(
    seen: &mut VecDeque<RecentSubscription>,
    request: &StreamRequest,
    now: Instant,
) -> bool {
    let (last_lsn, last_epoch) = (request.from.last_lsn, request.from.last_epoch);
    let fresh =
        |name: String| RecentSubscription { name, last_lsn, last_epoch, count: 0, since: now };
    let known = seen.iter().position(|subscription| subscription.name == request.name);
    let mut subscription = match known {
        Some(index) => seen.remove(index).expect("index in range"),
        None => fresh(request.name.clone()),
    };
    let same_place = subscription.last_lsn == last_lsn && subscription.last_epoch == last_epoch;
    if !same_place || now.duration_since(subscription.since) > SUBSCRIPTION_REPEAT_WINDOW {
        subscription = fresh(subscription.name);
    }
    subscription.count += 1;
    if subscription.count >= SUBSCRIPTION_REPEAT_LIMIT {
        return true;
    }
    if seen.len() == SUBSCRIPTIONS_REMEMBERED {
        seen.pop_front();
    }
    seen.push_back(subscription);
    false
}

/// The recent frames a replica is missing, when its log ends exactly where one of them ends
/// and with the same epoch (so its log is a prefix of this one); None otherwise.
fn recent_after(slot: &PartitionSlot, last_lsn: Lsn, last_epoch: Epoch) -> Option<Vec<Rc<[u8]>>> {
    let position = slot
        .recent
        .iter()
        .position(|frame| frame.last_lsn == last_lsn && frame.epoch == last_epoch)?;
    Some(slot.recent.iter().skip(position + 1).map(|frame| Rc::clone(&frame.bytes)).collect())
}

/// What one partition's stream has received so far, on a replica.
struct ReceiveState {
    partition: PartitionId,
    epoch: Option<Epoch>,
    /// A snapshot being received.
    snapshot: Option<Vec<u8>>,
    /// A snapshot received whole, with its LSN, to install before anything else.
    complete: Option<(Lsn, Vec<u8>)>,
}

impl ReceiveState {
    fn new(partition: PartitionId) -> ReceiveState {
        ReceiveState { partition, epoch: None, snapshot: None, complete: None }
    }
}

/// The partitions a replica shard streams over one connection each: those one shard of the
/// leader owns together, or each alone when the leader's shard count is unknown.
fn stream_groups(owned: &[PartitionId], leader_shards: Option<u32>) -> Vec<Vec<PartitionId>> {
    let Some(leader_shards) = leader_shards.filter(|shards| *shards > 0) else {
        return owned.iter().map(|partition| vec![*partition]).collect();
    };
    let mut groups: std::collections::BTreeMap<ShardId, Vec<PartitionId>> = Default::default();
    for partition in owned {
        groups.entry(partition.shard(leader_shards)).or_default().push(*partition);
    }
    // `owned` ascends, so each group does too, as a subscription requires.
    groups.into_values().collect()
}

fn protocol(reason: &str) -> StreamError {
    StreamError::Protocol(reason.to_string())
}

/// Hands the whole messages in `input` to `handle`, in order, then drops them from `input`.
/// A handler returning `Ok(false)` stops the walk after its message (the rest stays).
fn take_messages(
    input: &mut Vec<u8>,
    mut handle: impl FnMut(&Message<'_>) -> Result<bool, StreamError>,
) -> Result<(), StreamError> {
    let mut consumed = 0;
    let outcome = loop {
        match decode_message(&input[consumed..]) {
            Ok(Some((message, length))) => match handle(&message) {
                Ok(go_on) => {
                    consumed += length;
                    if !go_on {
                        break Ok(());
                    }
                }
                Err(error) => break Err(error),
            },
            Ok(None) => break Ok(()),
            Err(error) => break Err(StreamError::Peer(error)),
        }
    };
    input.drain(..consumed);
    outcome
}

/// Reads more bytes into `input`; end of stream is an error.
async fn read_more(
    reader: &mut OwnedReadHalf<TcpStream>,
    input: &mut Vec<u8>,
) -> Result<(), StreamError> {
    use monoio::buf::IoBufMut;
    if input.capacity() - input.len() < READ_CHUNK_BYTES / 4 {
        input.reserve(READ_CHUNK_BYTES);
    }
    let length = input.len();
    let (result, slice) = reader.read(std::mem::take(input).slice_mut(length..)).await;
    *input = slice.into_inner();
    match result {
        Ok(0) => Err(StreamError::Io(std::io::ErrorKind::UnexpectedEof.into())),
        Ok(_) => Ok(()),
        Err(error) => Err(StreamError::Io(error)),
    }
}

async fn refuse(mut stream: TcpStream, reason: &str) {
    let mut bytes = Vec::new();
    encode_message(&mut bytes, MessageKind::Refused, reason.as_bytes());
    let _ = stream.write_all(bytes).await;
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::time::{Duration, Instant};

    use strata_core::peer::{ReplicaKind, StreamFrom};
    use strata_core::{Epoch, Lsn, PartitionId};

    use super::{keeps_subscribing, StreamRequest, SUBSCRIPTIONS_REMEMBERED};

    fn request(name: &str, last_lsn: u64) -> StreamRequest {
        let from =
            StreamFrom { partition: PartitionId(0), last_lsn: Lsn(last_lsn), last_epoch: Epoch(1) };
        StreamRequest { name: name.to_string(), kind: ReplicaKind::Follower, from }
    }

    #[test]
    fn the_fourth_subscription_from_the_same_place_gets_a_snapshot() {
        let mut seen = VecDeque::new();
        let start = Instant::now();
        let answers: Vec<bool> = (0..5)
            .map(|step| {
                keeps_subscribing(
                    &mut seen,
                    &request("f1", 7),
                    start + Duration::from_millis(300 * step),
                )
            })
            .collect();
        assert_eq!(
            answers,
            [false, false, false, true, false],
            "the count starts again after a snapshot"
        );
    }

    #[test]
    fn progress_time_or_another_replica_starts_the_count_again() {
        let mut seen = VecDeque::new();
        let start = Instant::now();
        for _ in 0..3 {
            assert!(!keeps_subscribing(&mut seen, &request("f1", 7), start));
            assert!(!keeps_subscribing(&mut seen, &request("f2", 7), start), "counted per replica");
        }
        assert!(!keeps_subscribing(&mut seen, &request("f1", 8), start), "it made progress");
        let later = start + Duration::from_secs(11);
        for _ in 0..3 {
            assert!(!keeps_subscribing(&mut seen, &request("f1", 8), later));
        }
        assert!(!keeps_subscribing(&mut seen, &request("f2", 7), later), "beyond the window");
        assert!(keeps_subscribing(&mut seen, &request("f1", 8), later));
    }

    #[test]
    fn a_partition_remembers_a_bounded_number_of_replicas() {
        let mut seen = VecDeque::new();
        let now = Instant::now();
        for index in 0..SUBSCRIPTIONS_REMEMBERED * 3 {
            assert!(!keeps_subscribing(&mut seen, &request(&format!("r{index}"), 1), now));
        }
        assert_eq!(seen.len(), SUBSCRIPTIONS_REMEMBERED);
    }
}
