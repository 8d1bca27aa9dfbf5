//! The replica's runtime for one partition: the stream from its leader (one connection per
//! leader shard, shared by the partitions that shard owns), what arrives on it, and the
//! [`Replica`] machine's commands: acknowledgements, truncation, snapshot installs, commits.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use monoio::net::TcpStream;
use strata_core::frame::{decode_frame, read_records};
use strata_core::peer::{
    decode_in_sync_set, encode_message, split_frames, Message, MessageKind, Position, ReplicaKind,
    StreamFrom, StreamStart, Subscribe,
};
use strata_core::replication::{Member, Replica, ReplicaCommand, ReplicaEvent};
use strata_core::{Epoch, Lsn, PartitionId, ShardId};

use super::{
    protocol, read_more, take_messages, PhaseTracker, Role, StreamError, INBOUND_BYTES_MAX,
    READ_CHUNK_BYTES, RECONNECT_DELAY, SNAPSHOT_BYTES_MAX,
};
use crate::events::EventKind;
use crate::link::Link;
use crate::peer_stream::{PeerReader, PeerStream};
use crate::shard::{PartitionSlot, Shard};
use crate::tls::TlsSocket;

/// One partition following a leader, or idle.
pub(crate) struct ReplicaSide {
    pub(crate) machine: Replica,
    stream: Option<CurrentStream>,
    /// A snapshot being received, then received whole with its LSN.
    snapshot: Option<Vec<u8>>,
    snapshot_ready: Option<(Lsn, Vec<u8>)>,
    /// A truncation or snapshot install is under way: the stream's messages wait.
    busy: bool,
    /// The promotion phase waiting for this partition's answer.
    pub(crate) phase: Option<Rc<PhaseTracker>>,
}

/// The stream the partition follows: its number, connection, and its leader's epoch once
/// it started.
struct CurrentStream {
    id: u64,
    link: Rc<Link>,
    epoch: Epoch,
}

impl ReplicaSide {
    pub(crate) fn new(machine: Replica) -> ReplicaSide {
        ReplicaSide {
            machine,
            stream: None,
            snapshot: None,
            snapshot_ready: None,
            busy: false,
            phase: None,
        }
    }

    fn link_of(&self, stream: u64) -> Option<(Rc<Link>, Epoch)> {
        let current = self.stream.as_ref().filter(|current| current.id == stream)?;
        Some((Rc::clone(&current.link), current.epoch))
    }

    /// Ends the current stream (the caller tells the machine).
    pub(crate) fn end_stream(&mut self) -> Option<u64> {
        let current = self.stream.take()?;
        current.link.close();
        self.snapshot = None;
        self.snapshot_ready = None;
        Some(current.id)
    }
}

/// Where a replica shard streams from, and which attempt at following this is.
#[derive(Clone, Debug)]
pub(crate) struct FollowTarget {
    pub(crate) leader: SocketAddr,
    pub(crate) member: Member,
    pub(crate) kind: ReplicaKind,
    pub(crate) generation: u64,
}

/// Commands a replica machine gave, to carry out once the partitions are no longer borrowed.
type ReplicaCommands = Vec<(PartitionId, ReplicaCommand)>;

impl Shard {
    // ----- stepping the machine -----

    /// Feeds `event` to the partition's replica machine and carries out what it says. An
    /// error means the stream must end (the machine refused it).
    pub(crate) fn replica_step(
        self: &Rc<Self>,
        partition: PartitionId,
        event: ReplicaEvent,
    ) -> Result<(), StreamError> {
        let commands = {
            let mut partitions = self.partitions.borrow_mut();
            let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
            replica_step_in(slot, event)
        };
        self.run_replica_commands(commands)
    }

    pub(crate) fn run_replica_commands(
        self: &Rc<Self>,
        commands: ReplicaCommands,
    ) -> Result<(), StreamError> {
        let mut outcome = Ok(());
        for (partition, command) in commands {
            if let Err(error) = self.replica_command(partition, command) {
                outcome = Err(error);
            }
        }
        outcome
    }

    fn replica_command(
        self: &Rc<Self>,
        partition: PartitionId,
        command: ReplicaCommand,
    ) -> Result<(), StreamError> {
        match command {
            ReplicaCommand::Reject { stream, reason, fence } => {
                self.reject_stream(partition, stream, fence, &reason);
                return Err(StreamError::Protocol(reason));
            }
            ReplicaCommand::PersistFacts { facts } => self.persist_facts(partition, facts),
            ReplicaCommand::Truncate { after, records } => {
                self.set_busy(partition);
                monoio::spawn(Rc::clone(self).truncate(partition, after, records));
            }
            ReplicaCommand::InstallSnapshot { lsn } => {
                self.set_busy(partition);
                monoio::spawn(Rc::clone(self).install_snapshot(partition, lsn));
            }
            ReplicaCommand::Ack { stream, lsn } => {
                if let Some((link, epoch)) = self.replica_link(partition, stream) {
                    link.push_position(MessageKind::Ack, partition, lsn, epoch);
                }
            }
            ReplicaCommand::SendRecorded { stream, leader_epoch, isr_epoch } => {
                if let Some((link, _)) = self.replica_link(partition, stream) {
                    let recorded = strata_core::peer::Recorded { leader_epoch, isr_epoch };
                    link.push(MessageKind::Recorded, partition, &recorded.encode());
                }
            }
            ReplicaCommand::ReportFailure { stream, reason } => {
                tracing::error!(
                    partition = partition.0,
                    reason,
                    "the log failed; leaving the leader's stream"
                );
                if let Some((link, _)) = self.replica_link(partition, stream) {
                    link.push(MessageKind::Failed, partition, reason.as_bytes());
                    link.finish();
                }
                self.forget_stream(partition, stream);
            }
            ReplicaCommand::Commit { lsn } => {
                let mut partitions = self.partitions.borrow_mut();
                let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
                slot.state.commit(lsn);
                crate::shard::release_waiters(slot);
            }
            ReplicaCommand::CaughtUp => self.mesh.shared.set_caught_up(partition),
            ReplicaCommand::Accepted { .. } | ReplicaCommand::Installed { .. } => {
                self.phase_answer(partition, Ok(()));
            }
            ReplicaCommand::AcceptRefused { reason, .. }
            | ReplicaCommand::InstallRefused { reason, .. } => {
                self.phase_answer(partition, Err(reason));
            }
        }
        Ok(())
    }

    fn replica_link(&self, partition: PartitionId, stream: u64) -> Option<(Rc<Link>, Epoch)> {
        let mut partitions = self.partitions.borrow_mut();
        let slot = partitions[partition.0 as usize].as_mut()?;
        slot.role.replica()?.link_of(stream)
    }

    /// Ends a stream the machine refused, telling the leader the newer epoch seen, if that
    /// is why.
    fn reject_stream(
        &self,
        partition: PartitionId,
        stream: u64,
        fence: Option<Epoch>,
        reason: &str,
    ) {
        tracing::warn!(partition = partition.0, stream, reason, "leader's stream refused");
        if let Some((link, _)) = self.replica_link(partition, stream) {
            if let Some(fence) = fence {
                link.push(MessageKind::Fenced, partition, &fence.0.to_le_bytes());
            }
            link.finish();
        }
        self.forget_stream(partition, stream);
    }

    fn forget_stream(&self, partition: PartitionId, stream: u64) {
        let mut partitions = self.partitions.borrow_mut();
        let Some(side) =
            partitions[partition.0 as usize].as_mut().and_then(|slot| slot.role.replica())
        else {
            return;
        };
        if side.stream.as_ref().is_some_and(|current| current.id == stream) {
            side.stream = None;
            side.snapshot = None;
            side.snapshot_ready = None;
            self.mesh.shared.set_streaming(partition, false);
        }
    }

    fn set_busy(&self, partition: PartitionId) {
        let mut partitions = self.partitions.borrow_mut();
        if let Some(side) =
            partitions[partition.0 as usize].as_mut().and_then(|slot| slot.role.replica())
        {
            side.busy = true;
        }
    }

    // ----- following -----

    /// Starts streaming every owned partition from `leader`: one connection per leader shard
    /// owning some of them (`leader_shards`, from the leader's answer to registration;
    /// unknown: one connection per partition).
    pub(crate) fn follow(
        self: &Rc<Self>,
        leader: SocketAddr,
        member: Member,
        kind: ReplicaKind,
        leader_shards: Option<u32>,
    ) {
        self.unfollow();
        let generation = self.follow_generation.get() + 1;
        self.follow_generation.set(generation);
        let owned = self.owned_partitions();
        for partition in &owned {
            self.become_replica(*partition);
        }
        let target = FollowTarget { leader, member, kind, generation };
        for group in stream_groups(&owned, leader_shards) {
            monoio::spawn(Rc::clone(self).follow_group(group, target.clone()));
        }
    }

    /// Stops following: every stream ends; the partitions keep what they have.
    pub(crate) fn unfollow(self: &Rc<Self>) {
        self.follow_generation.set(self.follow_generation.get() + 1);
        for partition in self.owned_partitions() {
            let ended = {
                let mut partitions = self.partitions.borrow_mut();
                let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
                slot.role.replica().and_then(ReplicaSide::end_stream)
            };
            self.mesh.shared.set_streaming(partition, false);
            if let Some(stream) = ended {
                let _ = self.replica_step(partition, ReplicaEvent::StreamClosed { stream });
            }
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

    /// Connects to the leader's peer port: over TLS when `[security] peer_tls` is on, its
    /// certificate verified against the cluster's CA for the leader's address.
    async fn connect_to(&self, leader: SocketAddr) -> Result<PeerStream, StreamError> {
        let socket = TcpStream::connect(leader).await?;
        let _ = socket.set_nodelay(true);
        let Some(tls) = &self.mesh.options.peer_tls else {
            return Ok(PeerStream::Plain(socket));
        };
        let config = std::sync::Arc::clone(&tls.client);
        let tls = TlsSocket::connect(socket, config, &leader.ip().to_string()).await?;
        Ok(PeerStream::Tls(Box::new(tls)))
    }

    async fn stream_group(
        self: &Rc<Self>,
        group: &[PartitionId],
        target: &FollowTarget,
    ) -> Result<(), StreamError> {
        let streams = self.subscriptions_of(group, target).await?;
        let mut stream = self.connect_to(target.leader).await?;
        let secret = self.mesh.options.cluster_secret.clone();
        super::handshake::prove(&mut stream, secret).await?;
        if self.follow_generation.get() != target.generation {
            return Err(StreamError::Stopped);
        }
        let link = Link::new(stream.raw_fd(), self.mesh.options.replica_window);
        let opened = self.open_streams(&streams, &link);
        let events = &self.mesh.metrics.events;
        let detail = format!("{} ({} partitions)", target.leader, opened.len());
        events.record(EventKind::LeaderConnected, None, Duration::ZERO, detail);
        let subscribe = Subscribe {
            kind: target.kind,
            name: target.member.name.clone(),
            address: target.member.address.clone(),
            streams,
        };
        let (mut reader, mut writer) = stream.split(link.writer_signal());
        let mut hello = Vec::new();
        encode_message(&mut hello, MessageKind::Subscribe, &subscribe.encode());
        let (result, _) = writer.write_all(hello).await;
        monoio::spawn(Rc::clone(&link).run_writer(writer));
        let outcome = match result {
            Ok(_) => self.receive_stream(&opened, target, &link, &mut reader).await,
            Err(error) => Err(StreamError::Io(error)),
        };
        link.close();
        let detail = match &outcome {
            Ok(()) => target.leader.to_string(),
            Err(error) => format!("{}: {error}", target.leader),
        };
        events.record(EventKind::LeaderDisconnected, None, Duration::ZERO, detail);
        for (partition, stream) in opened {
            let ended = {
                let mut partitions = self.partitions.borrow_mut();
                let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
                slot.role.replica().is_some_and(|side| {
                    let ours = side.stream.as_ref().is_some_and(|current| current.id == stream);
                    if ours {
                        side.end_stream();
                    }
                    ours
                })
            };
            if ended {
                self.mesh.shared.set_streaming(partition, false);
                let _ = self.replica_step(partition, ReplicaEvent::StreamClosed { stream });
            }
        }
        outcome
    }

    /// Where each partition of `group` subscribes from: the durable end of its log. Waits
    /// (briefly) while applied frames are still being written; leaves out a partition whose
    /// log failed.
    async fn subscriptions_of(
        &self,
        group: &[PartitionId],
        target: &FollowTarget,
    ) -> Result<Vec<StreamFrom>, StreamError> {
        loop {
            if self.follow_generation.get() != target.generation {
                return Err(StreamError::Stopped);
            }
            let mut streams = Vec::with_capacity(group.len());
            let mut waiting = false;
            {
                let mut partitions = self.partitions.borrow_mut();
                for partition in group {
                    let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
                    let Some(side) = slot.role.replica() else { continue };
                    if side.machine.failure().is_some() {
                        continue;
                    }
                    match side.machine.subscription() {
                        Some(from) => streams.push(StreamFrom {
                            partition: *partition,
                            last_lsn: from.last_lsn,
                            last_epoch: from.last_epoch,
                            floor: from.floor,
                            fence: from.fence,
                            history: from.history,
                        }),
                        None => waiting = true,
                    }
                }
            }
            if !waiting {
                if streams.is_empty() {
                    return Err(protocol(
                        "no partition of the group can follow (their logs failed)",
                    ));
                }
                return Ok(streams);
            }
            monoio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Gives each partition its stream number on `link`.
    fn open_streams(
        self: &Rc<Self>,
        streams: &[StreamFrom],
        link: &Rc<Link>,
    ) -> Vec<(PartitionId, u64)> {
        let mut opened = Vec::with_capacity(streams.len());
        for from in streams {
            let stream = self.next_stream_number();
            {
                let mut partitions = self.partitions.borrow_mut();
                let slot = partitions[from.partition.0 as usize].as_mut().expect("owned partition");
                if let Some(side) = slot.role.replica() {
                    side.end_stream();
                    side.stream =
                        Some(CurrentStream { id: stream, link: Rc::clone(link), epoch: Epoch(0) });
                }
            }
            let _ = self.replica_step(from.partition, ReplicaEvent::StreamOpened { stream });
            opened.push((from.partition, stream));
        }
        opened
    }

    async fn receive_stream(
        self: &Rc<Self>,
        opened: &[(PartitionId, u64)],
        target: &FollowTarget,
        link: &Rc<Link>,
        reader: &mut PeerReader,
    ) -> Result<(), StreamError> {
        let mut input = Vec::with_capacity(READ_CHUNK_BYTES);
        loop {
            let mut stopped = false;
            take_messages(&mut input, |message| {
                if message.kind == MessageKind::Refused {
                    let reason = String::from_utf8_lossy(message.payload).into_owned();
                    return Err(StreamError::Refused(reason));
                }
                let stream = opened.iter().find(|(partition, _)| *partition == message.partition);
                let Some((partition, stream)) =
                    stream.copied().filter(|_| message.kind.is_stream())
                else {
                    let (kind, partition) = (message.kind, message.partition);
                    return Err(protocol(&format!(
                        "unexpected {kind:?} for partition {partition}"
                    )));
                };
                let go_on = self.on_leader_message(partition, stream, message)?;
                stopped |= !go_on;
                Ok(go_on)
            })?;
            if self.follow_generation.get() != target.generation {
                return Err(StreamError::Stopped);
            }
            if link.is_closed() {
                return Err(protocol("the connection to the leader closed"));
            }
            self.wait_until_settled(opened).await;
            if stopped {
                // Messages after the one that had to wait may already be in `input`.
                continue;
            }
            self.wait_for_room(opened).await;
            read_more(reader, &mut input).await?;
        }
    }

    /// Waits while a partition of the connection cuts its log back, installs a snapshot or
    /// records a newer epoch: later messages of its stream depend on it.
    async fn wait_until_settled(&self, opened: &[(PartitionId, u64)]) {
        while self.any_busy(opened) {
            monoio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn any_busy(&self, opened: &[(PartitionId, u64)]) -> bool {
        let mut partitions = self.partitions.borrow_mut();
        opened.iter().any(|(partition, stream)| {
            let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
            slot.role
                .replica()
                .is_some_and(|side| side.busy || side.machine.waiting_for_disk(*stream))
        })
    }

    /// Waits while a partition of the connection holds more received frames than it may
    /// before writing them.
    async fn wait_for_room(&self, opened: &[(PartitionId, u64)]) {
        loop {
            let full = {
                let partitions = self.partitions.borrow();
                opened.iter().any(|(partition, _)| {
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

    /// One message of a partition's stream. `Ok(false)` stops the walk: the partition must
    /// finish something with its disk before it reads on.
    fn on_leader_message(
        self: &Rc<Self>,
        partition: PartitionId,
        stream: u64,
        message: &Message<'_>,
    ) -> Result<bool, StreamError> {
        let payload = message.payload;
        match message.kind {
            MessageKind::StreamStart => {
                self.on_stream_start(partition, stream, StreamStart::decode(payload)?)?
            }
            MessageKind::Frames => {
                let (epoch, frames) = split_frames(message)?;
                self.check_stream_epoch(partition, stream, epoch)?;
                self.receive_frames(partition, stream, frames)?;
            }
            MessageKind::Commit => {
                let position = Position::decode(message)?;
                self.check_stream_epoch(partition, stream, position.epoch)?;
                let event = ReplicaEvent::LeaderCommit { stream, lsn: position.lsn };
                self.replica_step(partition, event)?;
            }
            MessageKind::SnapshotChunk => {
                self.receive_snapshot_chunk(partition, stream, payload)?
            }
            MessageKind::SnapshotEnd => {
                let position = Position::decode(message)?;
                self.check_stream_epoch(partition, stream, position.epoch)?;
                self.snapshot_received(partition, stream, position.lsn)?;
            }
            MessageKind::InSyncSet => {
                let set = decode_in_sync_set(message)?;
                self.replica_step(partition, ReplicaEvent::InSyncSetOffered { stream, set })?;
            }
            other => return Err(protocol(&format!("unexpected {other:?} from the leader"))),
        }
        Ok(!self.any_busy(&[(partition, stream)]))
    }

    fn on_stream_start(
        self: &Rc<Self>,
        partition: PartitionId,
        stream: u64,
        start: StreamStart,
    ) -> Result<(), StreamError> {
        {
            let mut partitions = self.partitions.borrow_mut();
            let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
            let Some(side) = slot.role.replica() else { return Err(StreamError::Stopped) };
            match side.stream.as_mut().filter(|current| current.id == stream) {
                Some(current) if current.epoch == Epoch(0) => current.epoch = start.epoch,
                Some(_) => return Err(protocol("a second stream start")),
                None => return Err(StreamError::Stopped),
            }
            if start.mode == strata_core::peer::StartMode::Snapshot {
                side.snapshot = Some(Vec::new());
            }
        }
        self.mesh.shared.set_streaming(partition, true);
        let event = ReplicaEvent::StreamStarted {
            stream,
            epoch: start.epoch,
            mode: start.mode,
            caught_up_at: start.caught_up_at,
            in_sync: Some(start.in_sync),
        };
        self.replica_step(partition, event)
    }

    fn check_stream_epoch(
        &self,
        partition: PartitionId,
        stream: u64,
        epoch: Epoch,
    ) -> Result<(), StreamError> {
        match self.replica_link(partition, stream) {
            Some((_, own)) if own == epoch => Ok(()),
            Some((_, own)) => {
                Err(protocol(&format!("a message of epoch {epoch} on a stream of epoch {own}")))
            }
            None => Err(StreamError::Stopped),
        }
    }

    /// Checks and applies each frame (see [`apply_frame`](Self::apply_frame)), then queues the
    /// frames it applied for the local WAL, in runs of at most what one WAL append takes: a
    /// single copy of their bytes. The frames applied before one that is refused are queued
    /// too: the keyspace and the machine have them.
    fn receive_frames(
        self: &Rc<Self>,
        partition: PartitionId,
        stream: u64,
        bytes: &[u8],
    ) -> Result<(), StreamError> {
        let run_bytes_max =
            usize::try_from(strata_wal::frame_bytes_max(self.mesh.options.segment_bytes))
                .unwrap_or(usize::MAX);
        let mut run_start = 0;
        let mut offset = 0;
        let mut outcome = Ok(());
        while offset < bytes.len() {
            let frame_bytes = match self.apply_frame(partition, stream, &bytes[offset..]) {
                Ok(frame_bytes) => frame_bytes,
                Err(error) => {
                    outcome = Err(error);
                    break;
                }
            };
            if offset > run_start && offset + frame_bytes - run_start > run_bytes_max {
                self.queue_inbound(partition, &bytes[run_start..offset]);
                run_start = offset;
            }
            offset += frame_bytes;
        }
        if offset > run_start {
            self.queue_inbound(partition, &bytes[run_start..offset]);
            self.flush_signals[partition.0 as usize].raise();
        }
        outcome
    }

    /// Checks the frame at the start of `bytes` (checksum, partition, its records with
    /// bytecheck, then the machine's epoch and continuity checks) and applies its records to
    /// the keyspace where they lie, without decoding them into owned records first. Returns
    /// the frame's length.
    fn apply_frame(
        self: &Rc<Self>,
        partition: PartitionId,
        stream: u64,
        bytes: &[u8],
    ) -> Result<usize, StreamError> {
        let header = decode_frame(bytes).map_err(|error| protocol(&format!("frame: {error}")))?;
        let frame = &bytes[..header.frame_bytes()];
        if header.partition != partition {
            return Err(protocol("a frame of another partition"));
        }
        let records =
            read_records(frame, &header).map_err(|error| protocol(&format!("frame: {error}")))?;
        let event = ReplicaEvent::Frame {
            stream,
            epoch: header.epoch,
            first: header.first_lsn,
            last: header.last_lsn,
        };
        self.replica_step(partition, event)?;
        let mut partitions = self.partitions.borrow_mut();
        let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
        for (lsn, record) in (header.first_lsn.0..).map(Lsn).zip(records.iter()) {
            slot.state.apply_replicated(lsn, record);
        }
        assert_eq!(slot.state.last_lsn(), header.last_lsn, "every record of the frame applied");
        slot.last_epoch = header.epoch;
        Ok(frame.len())
    }

    /// Queues received frames, already applied, for the local WAL.
    fn queue_inbound(&self, partition: PartitionId, frames: &[u8]) {
        assert!(!frames.is_empty());
        let mut partitions = self.partitions.borrow_mut();
        let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
        slot.inbound_bytes += frames.len();
        slot.inbound.push_back(frames.to_vec());
    }

    fn receive_snapshot_chunk(
        &self,
        partition: PartitionId,
        stream: u64,
        chunk: &[u8],
    ) -> Result<(), StreamError> {
        let mut partitions = self.partitions.borrow_mut();
        let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
        let side = slot.role.replica().ok_or(StreamError::Stopped)?;
        if side.stream.as_ref().is_none_or(|current| current.id != stream) {
            return Err(StreamError::Stopped);
        }
        let image =
            side.snapshot.as_mut().ok_or_else(|| protocol("snapshot chunk out of place"))?;
        if image.len() + chunk.len() > SNAPSHOT_BYTES_MAX {
            return Err(protocol("snapshot larger than the limit"));
        }
        image.extend_from_slice(chunk);
        Ok(())
    }

    fn snapshot_received(
        self: &Rc<Self>,
        partition: PartitionId,
        stream: u64,
        lsn: Lsn,
    ) -> Result<(), StreamError> {
        {
            let mut partitions = self.partitions.borrow_mut();
            let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
            let side = slot.role.replica().ok_or(StreamError::Stopped)?;
            let image =
                side.snapshot.take().ok_or_else(|| protocol("snapshot end out of place"))?;
            side.snapshot_ready = Some((lsn, image));
        }
        self.replica_step(partition, ReplicaEvent::SnapshotReceived { stream, lsn })
    }

    // ----- changing the log -----

    /// Cuts the log back to `after` (where it agrees with the leader's), then recovers it.
    async fn truncate(self: Rc<Self>, partition: PartitionId, after: Lsn, records: u64) {
        self.close_log_for_replacement(partition).await;
        let directory = self.partition_directory(partition);
        let outcome = strata_wal::truncate_log(&directory, partition, after).and_then(|summary| {
            self.open_partition(partition, Lsn::ZERO).map(|opened| (summary, opened))
        });
        let (summary, (mut state, wal, recovered)) = match outcome {
            Ok(done) => done,
            Err(error) => {
                return self.replacement_failed(
                    partition,
                    format!("cannot cut the log back to LSN {after}: {error}"),
                )
            }
        };
        let mut partitions = self.partitions.borrow_mut();
        let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
        let commit = slot.role.replica().map_or(Lsn::ZERO, |side| side.machine.commit()).min(after);
        if slot.state.commit_lsn() > after {
            tracing::error!(
                partition = partition.0,
                commit = slot.state.commit_lsn().0,
                after = after.0,
                "cutting back committed records: the leader was promoted by force"
            );
        }
        state.recovered_as_replica(after, commit);
        install_state(slot, state, wal, after, recovered.last_epoch.max(summary.last_epoch));
        self.mesh
            .counters
            .records_discarded
            .fetch_add(records, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(
            partition = partition.0,
            after = after.0,
            records,
            "log cut back to where it agrees with the leader's"
        );
        let epoch = summary.last_epoch;
        drop(partitions);
        self.settle_replacement(partition, ReplicaEvent::Truncated { lsn: after, epoch });
    }

    /// Replaces the partition's log and state with the leader's snapshot, once the flusher has
    /// returned the WAL.
    async fn install_snapshot(self: Rc<Self>, partition: PartitionId, lsn: Lsn) {
        let image = {
            let mut partitions = self.partitions.borrow_mut();
            let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
            slot.role.replica().and_then(|side| side.snapshot_ready.take())
        };
        let Some((_, image)) = image.filter(|(ready, _)| *ready == lsn) else {
            return self.replacement_failed(partition, "no snapshot to install".into());
        };
        self.close_log_for_replacement(partition).await;
        let directory = self.partition_directory(partition);
        let discarded = self.partitions.borrow()[partition.0 as usize]
            .as_ref()
            .map_or(0, |slot| slot.state.last_lsn().0);
        let opened = strata_wal::install_snapshot(&directory, partition, lsn, &image)
            .and_then(|_| self.open_partition(partition, lsn));
        let (mut state, wal, summary) = match opened {
            Ok(opened) => opened,
            Err(error) => {
                return self.replacement_failed(
                    partition,
                    format!("cannot install the leader's snapshot: {error}"),
                )
            }
        };
        state.recovered_as_replica(lsn, Lsn::ZERO);
        let mut partitions = self.partitions.borrow_mut();
        let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
        install_state(slot, state, wal, lsn, summary.last_epoch);
        slot.floor = lsn;
        let keys = slot.state.keyspace().len();
        self.mesh.counters.snapshots_installed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(
            partition = partition.0,
            lsn = lsn.0,
            keys,
            records_replaced = discarded,
            "the whole log replaced by the leader's snapshot"
        );
        let epoch = summary.last_epoch;
        drop(partitions);
        self.settle_replacement(partition, ReplicaEvent::SnapshotInstalled { lsn, epoch });
    }

    fn settle_replacement(self: &Rc<Self>, partition: PartitionId, event: ReplicaEvent) {
        if let Some(side) = self.partitions.borrow_mut()[partition.0 as usize]
            .as_mut()
            .and_then(|slot| slot.role.replica())
        {
            side.busy = false;
        }
        let _ = self.replica_step(partition, event);
    }

    /// Truncation or install failed: the partition refuses writes until restart, and its log
    /// is reported failed to the leader.
    fn replacement_failed(self: &Rc<Self>, partition: PartitionId, reason: String) {
        tracing::error!(partition = partition.0, %reason, "cannot replace the log");
        {
            let mut partitions = self.partitions.borrow_mut();
            let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
            slot.state.fail(reason.clone());
            crate::shard::fail_waiters(slot);
            if let Some(side) = slot.role.replica() {
                side.busy = false;
            }
        }
        let _ = self.replica_step(partition, ReplicaEvent::WalFailed { reason });
    }

    /// Replaces a partition's log and state with a log loaded from the archive (see
    /// [`ControlMessage::InstallArchived`](crate::ControlMessage::InstallArchived)), before
    /// the node follows: archived records are all committed.
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
        let holds = self.partitions.borrow()[partition.0 as usize]
            .as_ref()
            .map_or(Lsn::ZERO, |slot| slot.state.last_lsn());
        if holds > Lsn::ZERO {
            let reason = format!("partition {partition} holds records through {holds}; kept");
            let _ = reply.send(Err(reason));
            return;
        }
        self.become_replica(partition);
        self.close_log_for_replacement(partition).await;
        let directory = self.partition_directory(partition);
        let opened = strata_wal::install_log(&directory, &staged)
            .and_then(|()| self.open_partition(partition, Lsn::ZERO));
        let (state, wal, summary) = match opened {
            Ok(opened) => opened,
            Err(error) => {
                let reason = format!("cannot install the archived log: {error}");
                self.replacement_failed(partition, reason.clone());
                let _ = reply.send(Err(reason));
                return;
            }
        };
        let last_lsn = wal.last_lsn();
        let mut partitions = self.partitions.borrow_mut();
        let slot = partitions[partition.0 as usize].as_mut().expect("owned partition");
        install_state(slot, state, wal, last_lsn, summary.last_epoch);
        slot.floor = summary.snapshot_lsn;
        let history = strata_core::replication::EpochHistory::from_entries(summary.epochs)
            .unwrap_or_default();
        let start = super::replica_start(slot, slot.state.commit_lsn(), history);
        slot.role = Role::Replica(Box::new(ReplicaSide::new(Replica::new(
            partition,
            start,
            strata_core::replication::mutations::Mutations::in_force(),
        ))));
        tracing::info!(
            partition = partition.0,
            lsn = last_lsn.0,
            keys = slot.state.keyspace().len(),
            "archived log installed"
        );
        let _ = reply.send(Ok(last_lsn));
    }

    /// Waits until the flusher has returned the partition's WAL, then closes it and drops the
    /// frames queued for it: the partition's files are about to be replaced.
    pub(crate) async fn close_log_for_replacement(&self, partition: PartitionId) {
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
    }
}

/// Feeds `event` to the replica machine of `slot`; returns the commands to carry out.
pub(crate) fn replica_step_in(slot: &mut PartitionSlot, event: ReplicaEvent) -> ReplicaCommands {
    let partition = slot.state.id();
    let Role::Replica(side) = &mut slot.role else { return Vec::new() };
    let mut out = Vec::new();
    side.machine.step(event, &mut out);
    out.into_iter().map(|command| (partition, command)).collect()
}

/// Puts a recovered state and log in place of the replaced ones; answers that waited on the
/// old state fail (they may have read a log that is gone).
fn install_state(
    slot: &mut PartitionSlot,
    state: strata_core::partition::Partition,
    wal: strata_wal::PartitionWal,
    lsn: Lsn,
    epoch: Epoch,
) {
    slot.state = state;
    slot.wal = Some(wal);
    slot.durable_lsn = lsn;
    slot.synced_lsn = lsn;
    slot.framed_lsn = lsn;
    slot.last_epoch = epoch;
    crate::shard::fail_waiters_resynchronized(slot);
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
