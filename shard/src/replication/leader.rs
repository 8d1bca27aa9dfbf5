//! The leader's runtime for one partition: replica connections, the frames, snapshots and
//! catch-up reads their streams start with, their acknowledgements, and the commit point the
//! [`Leader`] machine moves.

use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use strata_core::frame::decode_frame;
use strata_core::peer::{
    decode_epoch, Message, MessageKind, Position, Recorded, StartMode, StreamStart, Subscribe,
    SNAPSHOT_CHUNK_BYTES,
};
use strata_core::replication::{
    InSyncSet, Leader, LeaderCommand, LeaderEvent, Member, StreamId, StreamPlan, Subscription,
};
use strata_core::{Epoch, Lsn, PartitionId};

use super::{protocol, read_more, refuse, take_messages, Role, StreamError};
use crate::cluster::{NodeEvent, ReplicaProgress, ServingMode};
use crate::events::EventKind;
use crate::link::Link;
use crate::peer_stream::{PeerReader, PeerStream};
use crate::shard::{PartitionSlot, RecentFrame, Shard, RECENT_FRAMES_BYTES_MAX};
use crate::tls::TlsSocket;

/// One partition's leading: the machine, and the connection of each of its streams.
pub(crate) struct LeaderSide {
    pub(crate) machine: Leader,
    links: BTreeMap<StreamId, Rc<Link>>,
    /// The newest frames cut, at most `RECENT_FRAMES_BYTES_MAX` of them, from which a replica
    /// that was briefly away catches up without reading the log files.
    recent: VecDeque<RecentFrame>,
    recent_bytes: usize,
    /// Streams that start with a snapshot, taken at the next clean point.
    awaiting_snapshot: Vec<StreamId>,
    /// Whether writes are refused, as last published for INFO.
    refusing: Option<bool>,
    /// Points this leader's log became durable at, oldest first, not yet committed: how long
    /// each then waited for the in-sync followers is measured at the commit (a measurement
    /// only; the oldest are dropped beyond `DURABLE_POINTS_MAX`).
    durable_points: VecDeque<(Lsn, Instant)>,
}

/// Durable points kept for measuring the followers' wait.
const DURABLE_POINTS_MAX: usize = 256;

impl LeaderSide {
    pub(crate) fn new(machine: Leader) -> LeaderSide {
        LeaderSide {
            machine,
            links: BTreeMap::new(),
            recent: VecDeque::new(),
            recent_bytes: 0,
            awaiting_snapshot: Vec::new(),
            refusing: None,
            durable_points: VecDeque::new(),
        }
    }

    /// The log is durable up to `lsn` from `now` on.
    pub(crate) fn durable_at(&mut self, lsn: Lsn, now: Instant) {
        if self.durable_points.back().is_some_and(|(last, _)| *last >= lsn) {
            return;
        }
        if self.durable_points.len() == DURABLE_POINTS_MAX {
            self.durable_points.pop_front();
        }
        self.durable_points.push_back((lsn, now));
    }

    /// Records in `histogram` how long each durable point up to `lsn`, committed now, waited
    /// for the followers after the leader's own sync (0: they had acknowledged first).
    fn committed(&mut self, lsn: Lsn, now: Instant, histogram: &crate::metrics::Histogram) {
        while let Some((durable, at)) = self.durable_points.front().copied() {
            if durable > lsn {
                break;
            }
            self.durable_points.pop_front();
            histogram.record(crate::metrics::micros(now.duration_since(at)), 1);
        }
    }

    /// Closes every stream's connection (the partition stops leading).
    pub(crate) fn close_all(&mut self) {
        for link in self.links.values() {
            link.close();
        }
        self.links.clear();
        self.awaiting_snapshot.clear();
    }

    /// Keeps a frame just cut among the recent ones, dropping the oldest beyond the limit.
    fn remember(&mut self, frame: RecentFrame) {
        self.recent_bytes += frame.bytes.len();
        self.recent.push_back(frame);
        while self.recent_bytes > RECENT_FRAMES_BYTES_MAX {
            let Some(oldest) = self.recent.pop_front() else { break };
            self.recent_bytes -= oldest.bytes.len();
        }
    }

    /// The recent frames after the one that ends at `after`, when one does.
    fn recent_after(&self, after: Lsn) -> Option<Vec<Rc<[u8]>>> {
        let position = self.recent.iter().position(|frame| frame.last_lsn == after)?;
        Some(self.recent.iter().skip(position + 1).map(|frame| Rc::clone(&frame.bytes)).collect())
    }
}

/// Commands a leader machine gave, to carry out once the partitions are no longer borrowed.
pub(crate) type LeaderCommands = Vec<(PartitionId, LeaderCommand)>;

impl Shard {
    // ----- stepping the machine -----

    /// Feeds `event` to the partition's leader machine, if it leads, and carries out what it
    /// says.
    pub(crate) fn leader_step(self: &Rc<Self>, partition: PartitionId, event: LeaderEvent) {
        let commands = {
            let mut partitions = self.partitions.borrow_mut();
            let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
            self.leader_step_in(slot, event)
        };
        self.run_leader_commands(commands);
    }

    /// Feeds `event` to the leader machine of `slot` (borrowed by the caller); returns the
    /// commands to carry out after the borrow ends.
    pub(crate) fn leader_step_in(
        &self,
        slot: &mut PartitionSlot,
        event: LeaderEvent,
    ) -> LeaderCommands {
        let now = self.moment();
        let partition = slot.state.id();
        let Role::Leader(side) = &mut slot.role else { return Vec::new() };
        let mut out = Vec::new();
        side.machine.step(now, event, &mut out);
        let refusing = !side.machine.accepts_writes();
        if side.refusing != Some(refusing) {
            side.refusing = Some(refusing);
            self.mesh.shared.set_refusing(partition, refusing);
        }
        out.into_iter().map(|command| (partition, command)).collect()
    }

    pub(crate) fn run_leader_commands(self: &Rc<Self>, commands: LeaderCommands) {
        for (partition, command) in commands {
            self.leader_command(partition, command);
        }
    }

    fn leader_command(self: &Rc<Self>, partition: PartitionId, command: LeaderCommand) {
        match command {
            LeaderCommand::StartStream { stream, plan, epoch, caught_up_at, in_sync } => {
                let start = StartOf { stream, epoch, caught_up_at, in_sync };
                self.start_stream(partition, plan, start);
            }
            LeaderCommand::Refuse { stream, reason } => {
                tracing::warn!(partition = partition.0, stream = stream.0, reason, "refused");
                if let Some(link) = self.leader_link(partition, stream) {
                    link.push_refusal(&reason);
                }
            }
            LeaderCommand::Close { stream, reason } => {
                tracing::warn!(partition = partition.0, stream = stream.0, reason, "stream closed");
                if let Some(link) = self.leader_link(partition, stream) {
                    link.close();
                }
            }
            LeaderCommand::Commit { lsn } => self.leader_commit(partition, lsn),
            LeaderCommand::SendInSyncSet { stream, set } => {
                if let Some(link) = self.leader_link(partition, stream) {
                    link.push(MessageKind::InSyncSet, partition, &set.encode());
                }
            }
            LeaderCommand::PersistInSyncSet { set } => {
                tracing::info!(partition = partition.0, %set, "recording a new in-sync set");
                self.persist_in_sync_set(partition, set);
            }
            LeaderCommand::RecordWithController { set } => {
                self.mesh.shared.notify(NodeEvent::RecordInSync { partition, set });
            }
            LeaderCommand::StepDown { epoch } => {
                tracing::warn!(partition = partition.0, epoch = epoch.0, "a newer epoch exists");
                self.mesh.shared.notify(NodeEvent::NewerEpoch { partition, epoch });
                self.fail_leader_waiters(partition);
            }
        }
    }

    fn leader_link(&self, partition: PartitionId, stream: StreamId) -> Option<Rc<Link>> {
        let mut partitions = self.partitions.borrow_mut();
        let slot = partitions[partition.0 as usize].as_mut()?;
        slot.role.leader().and_then(|side| side.links.get(&stream).cloned())
    }

    /// The commit point moved: answer what waited, tell the live streams.
    fn leader_commit(&self, partition: PartitionId, lsn: Lsn) {
        let mut partitions = self.partitions.borrow_mut();
        let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
        slot.state.commit(lsn);
        if let Some(marks) = &self.mesh.options.archive {
            marks.set_committed(partition, lsn);
        }
        crate::shard::release_waiters(slot);
        let Role::Leader(side) = &mut slot.role else { return };
        side.committed(lsn, Instant::now(), &self.metrics().replication_wait_us);
        let epoch = side.machine.epoch();
        for stream in side.machine.live_streams() {
            if let Some(link) = side.links.get(&stream) {
                link.push_position(MessageKind::Commit, partition, lsn, epoch);
            }
        }
    }

    /// A newer leader exists: what waits for this partition's commits fails with -TRYAGAIN.
    fn fail_leader_waiters(&self, partition: PartitionId) {
        let mut partitions = self.partitions.borrow_mut();
        let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
        crate::shard::interrupt_waiters(slot, crate::shard::stepped_down());
    }

    // ----- subscriptions -----

    /// Takes a replica's connection for the partitions it subscribes to (all on this shard)
    /// and hands each subscription to its partition's leader machine.
    pub(crate) fn attach_replica(
        self: &Rc<Self>,
        subscribe: Subscribe,
        stream: std::net::TcpStream,
        tls: Option<Box<rustls::ServerConnection>>,
    ) {
        let socket = match stream.set_nonblocking(true).and_then(|()| TcpStream::from_std(stream)) {
            Ok(socket) => socket,
            Err(error) => {
                tracing::warn!(%error, "cannot take a replica connection");
                return;
            }
        };
        let _ = socket.set_nodelay(true);
        let stream = match tls {
            Some(session) => {
                PeerStream::Tls(Box::new(TlsSocket::resume(socket, (*session).into())))
            }
            None => PeerStream::Plain(socket),
        };
        if let Some(reason) = self.subscription_refusal(&subscribe) {
            monoio::spawn(refuse(stream, reason));
            return;
        }
        let link = Link::new(stream.raw_fd(), self.mesh.options.replica_window);
        let (reader, writer) = stream.split(link.writer_signal());
        monoio::spawn(Rc::clone(&link).run_writer(writer));
        let streams: Vec<(PartitionId, StreamId)> = subscribe
            .streams
            .iter()
            .map(|from| (from.partition, StreamId(self.next_stream_number())))
            .collect();
        monoio::spawn(Rc::clone(self).read_acks(
            subscribe.name.clone(),
            streams.clone(),
            Rc::clone(&link),
            reader,
        ));
        let member = Member { name: subscribe.name.clone(), address: subscribe.address.clone() };
        for (from, (partition, stream)) in subscribe.streams.into_iter().zip(streams) {
            self.attach_stream(
                partition,
                stream,
                &link,
                subscribe_of(&member, subscribe.kind, from),
            );
        }
    }

    fn subscription_refusal(&self, subscribe: &Subscribe) -> Option<&'static str> {
        let partitions = self.partitions.borrow();
        let leads = subscribe.streams.iter().all(|from| {
            self.mesh.shard_of(from.partition) == self.id
                && from.partition.0 < self.mesh.options.partition_count
                && partitions[from.partition.0 as usize]
                    .as_ref()
                    .is_some_and(|slot| matches!(slot.role, Role::Leader(_)))
        });
        if !leads || self.mesh.shared.mode() != ServingMode::Leader {
            return Some("this node is not the leader of those partitions");
        }
        None
    }

    fn attach_stream(
        self: &Rc<Self>,
        partition: PartitionId,
        stream: StreamId,
        link: &Rc<Link>,
        subscription: Subscription,
    ) {
        let commands = {
            let mut partitions = self.partitions.borrow_mut();
            let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
            if let Role::Leader(side) = &mut slot.role {
                side.links.insert(stream, Rc::clone(link));
            }
            self.leader_step_in(slot, LeaderEvent::Subscribed { stream, subscription })
        };
        self.run_leader_commands(commands);
    }

    /// Starts a stream as the machine planned: its frames after `after` (from memory, or read
    /// back from the log files), or a snapshot at the next clean point.
    fn start_stream(self: &Rc<Self>, partition: PartitionId, plan: StreamPlan, start: StartOf) {
        match plan {
            StreamPlan::Snapshot { reason } => {
                let stream = start.stream.0;
                let what = "replica stream starts with a snapshot";
                tracing::info!(partition = partition.0, stream, %reason, "{what}");
                self.start_with_snapshot(partition, start);
            }
            StreamPlan::Tail { after } => {
                let recent = {
                    let mut partitions = self.partitions.borrow_mut();
                    let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
                    let framed = slot.framed_lsn;
                    match slot.role.leader() {
                        Some(_) if after == framed => Some(Vec::new()),
                        Some(side) => side.recent_after(after),
                        None => return,
                    }
                };
                match recent {
                    Some(frames) => self.start_tail(partition, start, after, frames),
                    None => self.read_log_for(partition, start, after),
                }
            }
        }
    }

    /// Sends the stream start and the frames a tail start needs; the stream is live then.
    fn start_tail(
        self: &Rc<Self>,
        partition: PartitionId,
        start: StartOf,
        after: Lsn,
        frames: Vec<Rc<[u8]>>,
    ) {
        let Some(link) = self.leader_link(partition, start.stream) else { return };
        // Catch-up frames, like a snapshot, do not count against the live window.
        link.allow_extra(frames.iter().map(|frame| frame.len() + 24).sum());
        let mode = StartMode::Tail { next_lsn: after.next() };
        link.push(MessageKind::StreamStart, partition, &start.encode(mode));
        for frame in &frames {
            link.push_frames(partition, start.epoch, frame);
        }
        tracing::info!(
            partition = partition.0,
            stream = start.stream.0,
            after = after.0,
            frames = frames.len(),
            "replica stream starts with the frames it lacks"
        );
        let detail = format!("after lsn {}, {} frames", after.0, frames.len());
        let events = &self.mesh.metrics.events;
        events.record(EventKind::ReplicaConnected, Some(partition), Duration::ZERO, detail);
        self.leader_step(partition, LeaderEvent::TailQueued { stream: start.stream });
        self.send_commit_point(partition, start.stream);
    }

    fn start_with_snapshot(self: &Rc<Self>, partition: PartitionId, start: StartOf) {
        let Some(link) = self.leader_link(partition, start.stream) else { return };
        link.push(MessageKind::StreamStart, partition, &start.encode(StartMode::Snapshot));
        let events = &self.mesh.metrics.events;
        events.record(EventKind::ReplicaConnected, Some(partition), Duration::ZERO, "snapshot");
        let mut partitions = self.partitions.borrow_mut();
        let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
        let Some(side) = slot.role.leader() else { return };
        side.awaiting_snapshot.push(start.stream);
        if slot.state.has_open_records() {
            // Sent by the flusher once it has framed the open records.
            self.flush_signals[partition.0 as usize].raise();
            return;
        }
        let commands = self.send_snapshots(slot);
        drop(partitions);
        self.run_leader_commands(commands);
    }

    /// Sends a snapshot to every stream waiting for one. The caller guarantees a clean point:
    /// no open records, so the keyspace is exactly the state at the last framed LSN and every
    /// later frame starts after it.
    pub(crate) fn send_snapshots(&self, slot: &mut PartitionSlot) -> LeaderCommands {
        let partition = slot.state.id();
        let Some(side) = slot.role.leader() else { return Vec::new() };
        if side.awaiting_snapshot.is_empty() {
            return Vec::new();
        }
        assert!(!slot.state.has_open_records(), "a snapshot needs a clean point");
        let lsn = slot.framed_lsn;
        let epoch = side.machine.epoch();
        let mut image = strata_wal::encode_snapshot(partition, slot.state.keyspace().iter());
        strata_wal::stamp_snapshot_epoch(&mut image, slot.last_epoch);
        strata_wal::seal_snapshot(&mut image, partition, lsn);
        let Some(side) = slot.role.leader() else { return Vec::new() };
        let mut commands = Vec::new();
        for stream in std::mem::take(&mut side.awaiting_snapshot) {
            let Some(link) = side.links.get(&stream) else { continue };
            link.allow_extra(image.len() + image.len() / SNAPSHOT_CHUNK_BYTES * 16 + 64);
            for chunk in image.chunks(SNAPSHOT_CHUNK_BYTES) {
                link.push(MessageKind::SnapshotChunk, partition, chunk);
            }
            link.push_position(MessageKind::SnapshotEnd, partition, lsn, epoch);
            link.push_position(MessageKind::Commit, partition, slot.state.commit_lsn(), epoch);
            commands.push((stream, lsn));
        }
        let sent = commands.len() as u64;
        self.mesh.counters.snapshots_sent.fetch_add(sent, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(partition = partition.0, lsn = lsn.0, bytes = image.len(), "snapshot sent");
        let events: Vec<LeaderEvent> = commands
            .into_iter()
            .map(|(stream, lsn)| LeaderEvent::SnapshotQueued { stream, lsn })
            .collect();
        let mut out = Vec::new();
        for event in events {
            out.extend(self.leader_step_in(slot, event));
        }
        out
    }

    /// Reads the frames after `after` from the partition's segment files on a thread of its
    /// own (at most half the replica window or two segments, whichever is more), then starts
    /// the stream with them, or reports them unavailable.
    fn read_log_for(self: &Rc<Self>, partition: PartitionId, start: StartOf, after: Lsn) {
        let directory = self.partition_directory(partition);
        let options = &self.mesh.options;
        let two_segments =
            usize::try_from(options.segment_bytes.saturating_mul(2)).unwrap_or(usize::MAX);
        let bytes_max = (options.replica_window / 2).max(two_segments);
        let (sender, receiver) = flume::bounded(1);
        let spawned = std::thread::Builder::new().name("log-reader".into()).spawn(move || {
            let _ =
                sender.send(strata_wal::read_log_after(&directory, partition, after, bytes_max));
        });
        if let Err(error) = spawned {
            // The receiver then reports the sender gone: the replica gets a snapshot.
            tracing::warn!(partition = partition.0, %error, "cannot start a log reader");
        }
        monoio::spawn(Rc::clone(self).resume_from_log(partition, start, after, receiver));
    }

    async fn resume_from_log(
        self: Rc<Self>,
        partition: PartitionId,
        start: StartOf,
        after: Lsn,
        receiver: flume::Receiver<Result<Option<strata_wal::LogTail>, strata_wal::WalError>>,
    ) {
        let read = receiver.recv_async().await.unwrap_or(Ok(None));
        let frames = {
            let mut partitions = self.partitions.borrow_mut();
            let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
            let Some(side) = slot.role.leader() else { return };
            match read {
                Ok(tail) => tail.and_then(|tail| frames_after_log(side, tail)),
                Err(error) => {
                    let what = "cannot read the log for a replica";
                    tracing::warn!(partition = partition.0, %error, "{what}");
                    None
                }
            }
        };
        match frames {
            Some(frames) => {
                tracing::info!(
                    partition = partition.0,
                    after = after.0,
                    "replica resumes from the local log"
                );
                self.start_tail(partition, start, after, frames);
            }
            None => {
                self.leader_step(partition, LeaderEvent::TailUnavailable { stream: start.stream })
            }
        }
    }

    fn send_commit_point(&self, partition: PartitionId, stream: StreamId) {
        let mut partitions = self.partitions.borrow_mut();
        let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
        let commit = slot.state.commit_lsn();
        let Some(side) = slot.role.leader() else { return };
        let epoch = side.machine.epoch();
        if let Some(link) = side.links.get(&stream) {
            link.push_position(MessageKind::Commit, partition, commit, epoch);
        }
    }

    // ----- frames and acknowledgements -----

    /// A frame was cut from the open batch of a leading partition: tell the machine, send it
    /// to every live stream, keep it among the recent ones.
    pub(crate) fn leader_frame_cut(
        &self,
        slot: &mut PartitionSlot,
        first: Lsn,
        last: Lsn,
        frame: &[u8],
    ) -> LeaderCommands {
        let partition = slot.state.id();
        let commands = self.leader_step_in(slot, LeaderEvent::FrameCut { first, last });
        let Some(side) = slot.role.leader() else { return commands };
        let epoch = side.machine.epoch();
        for stream in side.machine.recipients(first) {
            if let Some(link) = side.links.get(&stream) {
                link.push_frames(partition, epoch, frame);
            }
        }
        side.remember(RecentFrame { last_lsn: last, bytes: Rc::from(frame) });
        commands
    }

    /// Reads what a replica sends on its connection until it ends, then tells each partition
    /// its stream closed.
    async fn read_acks(
        self: Rc<Self>,
        name: String,
        streams: Vec<(PartitionId, StreamId)>,
        link: Rc<Link>,
        mut reader: PeerReader,
    ) {
        let mut input = Vec::with_capacity(4096);
        let outcome = loop {
            let taken = take_messages(&mut input, |message| {
                let stream = streams.iter().find(|(partition, _)| *partition == message.partition);
                let Some((partition, stream)) = stream.copied() else {
                    let partition = message.partition;
                    return Err(protocol(&format!(
                        "a message of partition {partition}, which this connection does not stream"
                    )));
                };
                self.on_replica_message(partition, stream, message)
            });
            if let Err(error) = taken {
                break error;
            }
            if link.is_closed() {
                break StreamError::Stopped;
            }
            if let Err(error) = read_more(&mut reader, &mut input).await {
                break error;
            }
        };
        link.close();
        tracing::info!(name, streams = streams.len(), reason = %outcome, "replica detached");
        let detail = format!("{name}: {outcome}");
        self.mesh.metrics.events.record(
            EventKind::ReplicaDisconnected,
            None,
            Duration::ZERO,
            detail,
        );
        for (partition, stream) in streams {
            let owned = self.partitions.borrow_mut()[partition.0 as usize]
                .as_mut()
                .and_then(|slot| slot.role.leader().map(|side| side.links.remove(&stream)))
                .is_some();
            if owned {
                self.leader_step(partition, LeaderEvent::StreamClosed { stream });
            }
        }
    }

    /// One message from a replica. A message of another epoch, or of a kind a replica does
    /// not send, ends the connection.
    fn on_replica_message(
        self: &Rc<Self>,
        partition: PartitionId,
        stream: StreamId,
        message: &Message<'_>,
    ) -> Result<bool, StreamError> {
        let epoch = self.leader_epoch(partition);
        let event = match message.kind {
            MessageKind::Ack => {
                let position = Position::decode(message)?;
                check_epoch(position.epoch, epoch)?;
                LeaderEvent::Acked { stream, lsn: position.lsn }
            }
            MessageKind::Recorded => {
                let recorded = Recorded::decode(message)?;
                LeaderEvent::InSyncSetRecorded {
                    stream,
                    leader_epoch: recorded.leader_epoch,
                    isr_epoch: recorded.isr_epoch,
                }
            }
            MessageKind::Fenced => LeaderEvent::NewerEpoch { epoch: decode_epoch(message)? },
            MessageKind::Failed => {
                let reason = String::from_utf8_lossy(message.payload).into_owned();
                LeaderEvent::ReplicaFailed { stream, reason }
            }
            other => return Err(protocol(&format!("unexpected {other:?} from a replica"))),
        };
        // The machine closes a stream that acknowledges beyond what was framed.
        self.leader_step(partition, event);
        Ok(true)
    }

    fn leader_epoch(&self, partition: PartitionId) -> Option<Epoch> {
        let mut partitions = self.partitions.borrow_mut();
        let slot = partitions[partition.0 as usize].as_mut()?;
        slot.role.leader().map(|side| side.machine.epoch())
    }

    /// Publishes every stream's progress for the control thread (ADMIN LIST NODES lag, INFO).
    pub(crate) fn publish_progress(&self) {
        let mut partitions = self.partitions.borrow_mut();
        for slot in partitions.iter_mut().flatten() {
            let partition = slot.state.id();
            let leader_lsn = slot.state.last_lsn();
            let Some(side) = slot.role.leader() else {
                self.mesh.shared.publish_progress(partition, Vec::new());
                continue;
            };
            let machine = &side.machine;
            let entries = side
                .links
                .keys()
                .filter_map(|stream| machine.stream_progress(*stream))
                .map(|(member, kind, acked_lsn)| {
                    let in_sync = machine.in_sync().contains(&member.name);
                    (member.name.clone(), ReplicaProgress { kind, acked_lsn, leader_lsn, in_sync })
                })
                .collect();
            self.mesh.shared.publish_progress(partition, entries);
        }
    }
}

/// What a stream start says besides its mode.
#[derive(Clone, Debug)]
pub(crate) struct StartOf {
    stream: StreamId,
    epoch: Epoch,
    caught_up_at: Lsn,
    in_sync: InSyncSet,
}

impl StartOf {
    fn encode(&self, mode: StartMode) -> Vec<u8> {
        StreamStart {
            mode,
            epoch: self.epoch,
            caught_up_at: self.caught_up_at,
            in_sync: self.in_sync.clone(),
        }
        .encode()
    }
}

fn subscribe_of(
    member: &Member,
    kind: strata_core::peer::ReplicaKind,
    from: strata_core::peer::StreamFrom,
) -> Subscription {
    Subscription {
        member: member.clone(),
        kind,
        last_lsn: from.last_lsn,
        last_epoch: from.last_epoch,
        history: from.history,
        floor: from.floor,
        fence: from.fence,
    }
}

fn check_epoch(sent: Epoch, own: Option<Epoch>) -> Result<(), StreamError> {
    match own {
        Some(own) if own == sent => Ok(()),
        Some(own) => {
            Err(protocol(&format!("a message of epoch {sent} on a stream of epoch {own}")))
        }
        None => Err(StreamError::Stopped),
    }
}

/// The frames after `tail` (read back from the segment files), then the recent ones after it;
/// `None` when the two do not meet (the replica then gets a snapshot).
fn frames_after_log(side: &LeaderSide, tail: strata_wal::LogTail) -> Option<Vec<Rc<[u8]>>> {
    let last = tail.last_lsn;
    let mut frames: Vec<Rc<[u8]>> = tail.frames.into_iter().map(Rc::from).collect();
    // A frame that fails to decode ends what was read: the rest comes from memory or not.
    frames.retain(|frame| decode_frame(frame).is_ok());
    if last < side.machine.framed() {
        frames.extend(side.recent_after(last)?);
    }
    Some(frames)
}
